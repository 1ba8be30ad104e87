/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_AUDIT_SECCOMP_H
#define IGRUN_AUDIT_SECCOMP_H

/* What the kernel side remembers of a process, by its pid (the kernel's tgid), for the
 * audit records that name it. */
struct seen {
	__u64 mntns_id;
	__u64 when; /* boot-time ns of the last update */
	__u32 tid;  /* the thread SIGSYS was forced on (sigsys map); the last to exit (exited) */
	__u32 pad;
};

/* A SIGSYS that a seccomp filter forced on a thread (trap, or a kill that dumps core). */
struct sigsys_event {
	__u64 timestamp; /* boot-time ns */
	__u64 mntns_id;
	__u32 pid;
	__u32 tid;
	char comm[16];
	__u32 syscall;
	__s32 data; /* si_errno: the filter's SECCOMP_RET_DATA */
	__u32 arch; /* AUDIT_ARCH_* of the call */
	__u32 pad;
};

#endif
