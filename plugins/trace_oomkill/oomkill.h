/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_OOMKILL_H
#define IGRUN_TRACE_OOMKILL_H

#define TASK_COMM_LEN 16

/*
 * One process killed by the OOM killer. "k" is the killed process (the victim), "t" the task
 * that triggered the kill (the one whose allocation failed), as in Inspektor Gadget.
 */
struct event {
	__u64 timestamp;
	__u64 mntns_id; /* of the triggering task */
	__u64 pages;    /* the victim's resident pages (anon + file + shmem) when it was chosen */
	__u32 kpid;
	__u32 tpid;
	__u32 tuid;
	__u32 tgid;
	char kcomm[TASK_COMM_LEN];
	char tcomm[TASK_COMM_LEN];
};

#endif
