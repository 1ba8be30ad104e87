/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_EXEC_H
#define IGRUN_TRACE_EXEC_H

#define ARGSIZE 128
#define TOTAL_MAX_ARGS 20
#define FULL_MAX_ARGS_ARR (TOTAL_MAX_ARGS * ARGSIZE)
#define LAST_ARG (FULL_MAX_ARGS_ARR - ARGSIZE)
#define INVALID_UID ((__u32)-1)
#define PATH_MAX 4096

/* One exec. The record is sent trimmed to the used part of args (EVENT_SIZE); with --cwd,
 * whole, the working directory last. */
struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc;
	__u32 loginuid;
	__u32 sessionid;
	int retval;
	int args_count;
	__u32 args_size;
	__u8 args_truncated;
	__u8 upper_layer; /* the new program's file is in an overlay's upper layer */
	char args[FULL_MAX_ARGS_ARR];
	char cwd[PATH_MAX]; /* with --cwd: the working directory of the process that exec'd */
};

/* What an exec in flight keeps between its enter and exit tracepoints: the event up to cwd
 * (read at exit, into per-CPU room, only with --cwd). */
#define EVENT_HEAD_SIZE (__builtin_offsetof(struct event, cwd))
#define EVENT_SIZE(e) (__builtin_offsetof(struct event, args) + (e)->args_size)

#endif
