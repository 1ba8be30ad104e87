/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_SIGNAL_H
#define IGRUN_TRACE_SIGNAL_H

#define TASK_COMM_LEN 16

/* One signal sent: by the kernel or a process (signal/signal_generate), or asked for with
 * kill(), tkill() or tgkill() (then ret is what the syscall returned, even when it failed and
 * no signal was generated). */
struct event {
	__u64 timestamp;
	__u64 mntns_id;
	__u32 pid; /* sender */
	__s32 tpid; /* target: the task the signal went to, else the syscall's pid argument */
	__u32 uid;
	__u32 gid;
	__s32 sig;
	__s32 ret;
	char comm[TASK_COMM_LEN]; /* sender */
};

#endif
