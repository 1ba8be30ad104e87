/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_GADGET_UNLINK_H
#define IGRUN_GADGET_UNLINK_H

#define PATH_MAX 4096

/*
 * One unlink, unlinkat or rmdir. The record is sent trimmed to the path it holds (up to the
 * NUL): most paths are short, and whole records would fill the ring buffer 60 times faster.
 * igrun pads a short record with zeros back to the struct's size.
 */
struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc; /* who: filled by gadget_process_populate() */
	__s32 dirfd; /* AT_FDCWD (-100) for unlink and rmdir */
	__s32 flags; /* unlinkat's flags; AT_REMOVEDIR for rmdir */
	__s32 ret; /* 0, or -errno */
	char path[PATH_MAX];
};

#endif
