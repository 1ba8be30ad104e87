/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef IGRUN_TCPRTT_H
#define IGRUN_TCPRTT_H

#define MAX_SLOTS 27
#define IPV6_LEN 16

/* One histogram per key: the local or remote address with --byladdr / --byraddr, else one
 * for every connection (ipversion 0). */
struct hist_key {
	__u8 addr[IPV6_LEN];
	__u32 ipversion;
};

struct hist {
	__u64 latency;	/* the sum of the RTTs counted, for the average */
	__u64 cnt;
	__u32 slots[MAX_SLOTS];
};

#endif
