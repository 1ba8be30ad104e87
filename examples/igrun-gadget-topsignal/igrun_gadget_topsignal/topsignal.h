/* SPDX-License-Identifier: GPL-2.0 */
#ifndef TOPSIGNAL_H
#define TOPSIGNAL_H

#include <igrun/process.h>

/* One row per sender process, target process and signal in an interval. */
struct signal_key {
	struct gadget_process proc; /* the sender; tid is left 0: rows are per process */
	__u32 tpid;                 /* the target process */
	__s32 sig;
};

struct signal_counts {
	__u64 count; /* signals generated this interval */
};

#endif
