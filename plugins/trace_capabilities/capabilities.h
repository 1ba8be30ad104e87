/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_CAPABILITIES_H
#define IGRUN_TRACE_CAPABILITIES_H

/* How many return addresses of the kernel stack are looked at to find who asked. */
#define MAX_FRAMES 16
/* How many kernel function ranges user space can describe (see struct caller_range). */
#define MAX_CALLERS 32

/* What a kernel function means for a capability check whose stack holds it. */
enum caller_kind {
	CALLER_NONE = 0,
	CALLER_CAP_CAPABLE = 1, /* the check itself: the frames after it are its callers */
	CALLER_PASS = 2,        /* passes its caller's options on (security_capable) */
	CALLER_NOAUDIT = 3,     /* asks with CAP_OPT_NOAUDIT (ns_capable_noaudit ...) */
	CALLER_INSETID = 4,     /* asks with CAP_OPT_INSETID (ns_capable_setid) */
};

/* [start, end) of one kernel function's text, from /proc/kallsyms. */
struct caller_range {
	__u64 start;
	__u64 end;
	__u32 kind;
	__u32 pad;
};

/* One capability check (tracepoint capability/cap_capable). */
struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc;
	__u64 current_userns;
	__u64 target_userns;
	__u64 cap_effective;
	__s64 syscall; /* the syscall the task is in, -1 if none (page fault, kernel thread) */
	int cap;
	int ret;
	__u8 audit;
	__u8 insetid;
};

#endif
