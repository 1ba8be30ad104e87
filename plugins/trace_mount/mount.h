/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_MOUNT_H
#define IGRUN_TRACE_MOUNT_H

#define FS_NAME_LEN 64
#define PATH_LEN 4096
#define DATA_LEN 512
/* src, dst and data, each NUL-terminated, one after the other. */
#define STRINGS_LEN (PATH_LEN + PATH_LEN + DATA_LEN)

/* The call an event is about; igrun names them in this order. */
enum op {
	OP_MOUNT,
	OP_UMOUNT,
	OP_FSOPEN,
	OP_FSMOUNT,
	OP_MOVE_MOUNT,
};

/*
 * One mount-related syscall. The record is sent trimmed to the used part of strings
 * (EVENT_SIZE): paths are rarely long, and a full record would fill the ring buffer 30 times
 * faster when a container starts and mounts its dozens of filesystems.
 */
struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc;
	__u64 latency;
	/* mount: MS_*; umount: MNT_*; fsopen: FSOPEN_*; move_mount: MOVE_MOUNT_*;
	 * fsmount: FSMOUNT_* in the low 32 bits and MOUNT_ATTR_* in the high 32 bits. */
	__u64 flags;
	int ret;
	__u32 op;
	__u32 strings_size;
	char fs[FS_NAME_LEN];
	char strings[STRINGS_LEN];
};

#define EVENT_SIZE(e) (__builtin_offsetof(struct event, strings) + (e)->strings_size)

#endif
