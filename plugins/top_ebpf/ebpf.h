/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef IGRUN_TOP_EBPF_H
#define IGRUN_TOP_EBPF_H

/* One open file of one process that refers to a BPF program (Inspektor Gadget's
 * struct pid_iter_entry). */
struct pid_iter_entry {
	__u32 id;      /* the program's id */
	__u32 pid;     /* the process (thread group) holding the file */
	__u8 comm[16]; /* the process's name (its group leader's comm) */
};

#endif
