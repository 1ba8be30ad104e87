/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_FSSLOWER_H
#define IGRUN_TRACE_FSSLOWER_H

/* As Inspektor Gadget: longer names are cut to 31 bytes. */
#define FILE_NAME_LEN 32
/* Room for a file system type name (struct file_system_type.name) and its NUL. */
#define FS_NAME_LEN 32

/* The operation, in Inspektor Gadget's order (user space maps it to R, W, O, F). */
enum fs_file_op {
	F_READ,
	F_WRITE,
	F_OPEN,
	F_FSYNC,
};

/* One file operation that took at least the minimum latency. */
struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc;
	__u64 delta_us;
	__s64 offset;
	__u64 size;
	__s32 ret;
	__u8 op;
	char file[FILE_NAME_LEN];
	__u8 file_truncated; /* the name was longer than file holds */
};

#endif
