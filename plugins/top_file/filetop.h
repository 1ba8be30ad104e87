/* SPDX-License-Identifier: Apache-2.0 */
/* top file: what the kernel aggregates, per thread and file, and igrun drains every interval. */
#ifndef IGRUN_FILETOP_H
#define IGRUN_FILETOP_H

#include <igrun/process.h>

#define NAME_MAX 255

/* A thread and a file. The thread id stands for ig's (pid, tid) pair: it names the process
 * too. The file is its inode and its filesystem's device: inode numbers repeat across
 * filesystems. */
struct file_key {
	__u64 inode;
	__u32 dev;
	__u32 thread;
};

/* What the thread did with the file in this interval (read, write and their vector and
 * positioned variants), who it is, and the file's name and type. */
struct file_stats {
	__u64 reads;
	__u64 rbytes;  /* bytes actually read: the sum of what the calls returned */
	__u64 writes;
	__u64 wbytes;  /* bytes actually written */
	struct gadget_process proc;
	char filename[NAME_MAX + 1]; /* the last component (the dentry's name), as ig shows it */
	char file_type;              /* 'R' regular file, 'S' socket, 'O' anything else */
};

#endif
