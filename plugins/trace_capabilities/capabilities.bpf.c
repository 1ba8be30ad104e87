// SPDX-License-Identifier: GPL-2.0
/*
 * trace capabilities: one event per capability check, with its verdict and the syscall that led
 * to it.
 *
 * The capability/cap_capable tracepoint fires after the kernel decided, in the task that asked:
 * it gives the credentials, the target user namespace, the capability and the result. It does
 * not give the check's options (CAP_OPT_NOAUDIT, CAP_OPT_INSETID), which Inspektor Gadget reads
 * from cap_capable's arguments with a kprobe. Here the options are found from who asked
 * instead: the kernel functions that pass them are fixed (ns_capable_noaudit,
 * has_ns_capability_noaudit, ns_capable_setid ...), so the first caller of cap_capable on the
 * kernel stack, past security_capable, tells them. User space reads the address ranges of those
 * functions from /proc/kallsyms and hands them over in `callers`.
 *
 * The syscall number is remembered per thread at sys_enter, in task storage: it goes away with
 * the task, so it needs no cleanup at exit or exec and cannot fill up.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "capabilities.h"

const volatile bool audit_only = true; /* the param's default, as ig's */
const volatile bool unique = false;
const volatile struct caller_range callers[MAX_CALLERS] = {};

/* Inspektor Gadget's --unique: one event per capability and mount namespace (container). */
struct unique_key {
	__u64 mntns_id;
	int cap;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, struct unique_key);
	__type(value, __u8);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __s64);
} current_syscall SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(capabilities, events, event);

static __always_inline bool discard_current(void)
{
	return gadget_filter_by_mntns && gadget_should_discard_mntns_id(gadget_get_mntns_id());
}

SEC("raw_tp/sys_enter")
int ig_cap_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__s64 *nr;

	if (discard_current())
		return 0;
	nr = bpf_task_storage_get(&current_syscall, bpf_get_current_task_btf(), 0,
				  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (nr)
		*nr = ctx->args[1];
	return 0;
}

SEC("raw_tp/sys_exit")
int ig_cap_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__s64 *nr = bpf_task_storage_get(&current_syscall, bpf_get_current_task_btf(), 0, 0);

	if (nr)
		*nr = -1;
	return 0;
}

/* A global function: the verifier checks it once, on its own, instead of once per frame of
 * the stack walk below (inlined, the two loops took the kernel about a second to verify on a
 * 2-CPU machine, each start; as a function, about 60 ms). */
__noinline __u32 caller_kind(__u64 addr)
{
	int i;

	for (i = 0; i < MAX_CALLERS; i++) {
		if (!callers[i].end)
			break;
		if (addr >= callers[i].start && addr < callers[i].end)
			return callers[i].kind;
	}
	return CALLER_NONE;
}

/* The options of the check, from the first function on the stack that asked for it. */
static __always_inline void check_options(void *ctx, __u8 *audit, __u8 *insetid)
{
	__u64 stack[MAX_FRAMES];
	bool past_check = false;
	__u32 kind, frames;
	long size;
	int i;

	*audit = 1;
	*insetid = 0;
	size = bpf_get_stack(ctx, stack, sizeof(stack), 0);
	if (size <= 0)
		return;
	frames = (__u64)size >> 3;
	for (i = 0; i < MAX_FRAMES; i++) {
		if (i >= frames)
			break;
		/* A return address: the call is just before it. */
		kind = caller_kind(stack[i] - 1);
		if (!past_check) {
			past_check = kind == CALLER_CAP_CAPABLE;
			continue;
		}
		if (kind == CALLER_PASS)
			continue;
		if (kind == CALLER_NOAUDIT)
			*audit = 0;
		else if (kind == CALLER_INSETID)
			*insetid = 1;
		break;
	}
}

SEC("raw_tp/cap_capable")
int BPF_PROG(ig_cap_capable, const struct cred *cred, struct user_namespace *target_ns,
	     const struct user_namespace *capable_ns, int cap, int ret)
{
	__u64 mntns_id = gadget_get_mntns_id();
	struct task_struct *task;
	struct unique_key key = {};
	struct event *event;
	__u8 audit, insetid, one = 1;
	__s64 *nr;

	if (gadget_should_discard_mntns_id(mntns_id))
		return 0;
	task = (struct task_struct *)bpf_get_current_task();
	/* Credentials overridden (override_creds: overlayfs copy-up ...) or another task's: not
	 * this task's own check, as Inspektor Gadget reports them. */
	if (cred != BPF_CORE_READ(task, real_cred))
		return 0;
	check_options(ctx, &audit, &insetid);
	if (audit_only && !audit)
		return 0;
	if (unique) {
		key.mntns_id = mntns_id;
		key.cap = cap;
		if (bpf_map_update_elem(&seen, &key, &one, BPF_NOEXIST))
			return 0;
	}

	event = gadget_reserve_buf(&events, sizeof(*event));
	if (!event)
		return 0;
	event->timestamp = bpf_ktime_get_boot_ns();
	gadget_process_populate(&event->proc);
	event->current_userns = BPF_CORE_READ(cred, user_ns, ns.inum);
	event->target_userns = BPF_CORE_READ(target_ns, ns.inum);
	/* kernel_cap_t was two __u32 before 6.3 and is one __u64 since: 8 bytes either way. */
	event->cap_effective = 0;
	BPF_CORE_READ_INTO(&event->cap_effective, cred, cap_effective);
	nr = bpf_task_storage_get(&current_syscall, bpf_get_current_task_btf(), 0, 0);
	event->syscall = nr ? *nr : -1;
	event->cap = cap;
	event->ret = ret;
	event->audit = audit;
	event->insetid = insetid;
	gadget_submit_buf(&events, event);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
