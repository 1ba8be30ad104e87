/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_OOMKILL_H
#define IGRUN_TRACE_OOMKILL_H

/*
 * One process killed by the OOM killer. "k" is the killed process (the victim), "t" the task
 * that triggered the kill (the one whose allocation failed), as in Inspektor Gadget.
 */
struct event {
	gadget_timestamp timestamp;
	struct gadget_process trigger;
	__u64 pages; /* the victim's resident pages (anon + file + shmem) when it was chosen */
	__u32 kpid;
	char kcomm[GADGET_COMM_LEN];
};

#endif
