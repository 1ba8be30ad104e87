/* SPDX-License-Identifier: GPL-2.0 */
#ifndef TRACELOOP_H
#define TRACELOOP_H

#define SYSCALL_ARGS 6
#define CONTENTS 3     /* arguments whose memory one record copies */
#define CONTENT_LEN 128 /* bytes of each (Inspektor Gadget's PARAM_LEN) */

/* What to copy of an argument (struct syscall_def.kind), worked out in user space from the
 * syscall's tracepoint format. */
#define COPY_NONE 0
#define COPY_STR 1        /* a NUL-terminated string, at entry (a path, a name) */
#define COPY_BUF 2        /* bytes at entry, as many as argument len_arg says (write's buf) */
#define COPY_BUF_RET 3    /* bytes at exit, as many as the call returned (read's buf) */
#define COPY_STR_RET 4    /* a string the call wrote, at exit (getcwd's buf) */

struct syscall_def {
	__u8 kind[SYSCALL_ARGS];
	__u8 len_arg[SYSCALL_ARGS];
};

/* One syscall, in one slot of a container's ring. The slot at index `ring_size` is the
 * ring's head: its seq counts the syscalls written so far. */
struct syscall_record {
	__u64 seq;  /* 1 for the container's first syscall; 0: an empty slot */
	gadget_timestamp timestamp;
	gadget_mntns_id mntns_id;
	__u64 args[SYSCALL_ARGS];
	__s64 ret;
	__u32 pid;
	__u32 tid;
	__u16 cpu;
	__u16 nr;
	__u8 exited; /* 1: sys_exit filled ret */
	__u8 content_arg[CONTENTS]; /* which argument each content is (0xff: none) */
	__u16 content_len[CONTENTS]; /* bytes copied; 0xffff: the memory could not be read */
	__u8 content_cut[CONTENTS]; /* 1: there was more than CONTENT_LEN */
	__u8 pad[3];
	char comm[16];
	char content[CONTENTS * CONTENT_LEN];
};

#endif
