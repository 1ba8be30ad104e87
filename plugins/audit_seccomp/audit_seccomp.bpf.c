// SPDX-License-Identifier: GPL-2.0
/*
 * audit seccomp, kernel side: the mount namespace (and thread) of the processes that audit
 * records name, kept where user space can still find them after the process is gone.
 *
 * The events themselves come from the kernel's audit stream (AUDIT_SECCOMP records, read in
 * user space): a record names the process by pid only, and arrives after the fact, when a
 * killed or short-lived process may have left /proc already. So:
 * - signal/signal_generate (raw tracepoint: it reads the siginfo) with SIGSYS and si_code
 *   SYS_SECCOMP (a seccomp filter's trap, or a kill that dumps core): the thread it is
 *   forced on and its mount namespace, kept by pid, and sent as an event (with the syscall
 *   from the siginfo): the kernel logs a trap only for a filter loaded with the log flag,
 *   so this is how the others are seen;
 * - sched/sched_process_exit: the mount namespace of every process as it exits (its
 *   namespaces are still in place then), with when.
 * Both maps are keyed by pid and LRU: old entries go by themselves.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/mntns_filter.h>

#include "audit_seccomp.h"

#define SIGSYS 31
#define SYS_SECCOMP 1

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct seen);
} exited SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct seen);
} sigsys SEC(".maps");

GADGET_RINGBUF(events);

struct seen _seen = {}; /* keeps the structs in BTF for user space */
struct sigsys_event _sigsys_event = {};

static __always_inline int remember(void *map)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 pid = pid_tgid >> 32;
	struct seen s = {
		.mntns_id = gadget_get_mntns_id(),
		.when = bpf_ktime_get_boot_ns(),
		.tid = (__u32)pid_tgid,
	};

	if (s.mntns_id == 0)
		return 0;
	bpf_map_update_elem(map, &pid, &s, BPF_ANY);
	return 0;
}

SEC("raw_tracepoint/signal_generate")
int ig_audit_sigsys(struct bpf_raw_tracepoint_args *ctx)
{
	struct kernel_siginfo *info = (struct kernel_siginfo *)ctx->args[1];
	struct task_struct *task = (struct task_struct *)ctx->args[2];
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	/* force_sig_seccomp() runs in the offending thread: current is the target. */
	if ((int)ctx->args[0] != SIGSYS || (unsigned long)info <= 1)
		return 0;
	if (BPF_CORE_READ(info, si_code) != SYS_SECCOMP)
		return 0;
	if (BPF_CORE_READ(task, pid) != (__u32)pid_tgid)
		return 0;
	remember(&sigsys);

	__u64 mntns = gadget_get_mntns_id();
	if (gadget_should_discard_mntns_id(mntns))
		return 0;
	struct sigsys_event *e = gadget_reserve_buf(&events, sizeof(*e));
	if (!e)
		return 0;
	e->timestamp = bpf_ktime_get_boot_ns();
	e->mntns_id = mntns;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->syscall = BPF_CORE_READ(info, _sifields._sigsys._syscall);
	e->data = BPF_CORE_READ(info, si_errno);
	e->arch = BPF_CORE_READ(info, _sifields._sigsys._arch);
	e->pad = 0;
	/* Rare: wake the reader for each one. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int ig_audit_exit(void *ctx)
{
	return remember(&exited);
}

char _license[] SEC("license") = "GPL";
