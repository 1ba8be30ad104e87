/* SPDX-License-Identifier: Apache-2.0 */
/*
 * top block-io: the key and value of one row (Inspektor Gadget's info_t and val_t). igrun
 * reads both layouts from the object's BTF; the schema names their members.
 */
#ifndef IGRUN_TOP_BLOCK_IO_H
#define IGRUN_TOP_BLOCK_IO_H

#define TASK_COMM_LEN 16

/* A process's I/O on one disk in one direction. The whole struct is the hash key: it is
 * zeroed before it is filled, so padding never splits a row. */
struct block_key {
	gadget_mntns_id mntns_id;
	__u32 pid;
	__u32 write; /* 1 for REQ_OP_WRITE, 0 for anything else (as ig) */
	__u32 major;
	__u32 minor;
	char comm[TASK_COMM_LEN];
};

struct block_stats {
	__u64 bytes; /* the requests' sizes when issued */
	__u64 us;    /* issue to completion, summed */
	__u32 ops;   /* requests completed */
};

#endif
