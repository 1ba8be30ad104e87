/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef IGRUN_BIOLATENCY_H
#define IGRUN_BIOLATENCY_H

#define MAX_SLOTS 27

#define MINORBITS 20
#define MKDEV(ma, mi) (((ma) << MINORBITS) | (mi))

/* One histogram per key: every I/O in one (dev 0) unless --per-disk. */
struct hist_key {
	__u32 dev;
};

struct hist {
	__u32 slots[MAX_SLOTS];
};

#endif
