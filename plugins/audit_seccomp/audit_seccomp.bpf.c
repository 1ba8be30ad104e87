// SPDX-License-Identifier: GPL-2.0
/*
 * audit seccomp, kernel side: the mount namespace (and thread) of the processes that audit
 * records name, kept where user space can still find them after the process is gone.
 *
 * The events themselves come from the kernel's audit stream (AUDIT_SECCOMP records, read in
 * user space): a record names the process by pid only, and arrives after the fact, when a
 * killed or short-lived process may have left /proc already. So:
 * - signal/signal_generate with SIGSYS and si_code SYS_SECCOMP (a seccomp filter's trap, or
 *   a kill that dumps core): the thread it is forced on, and its mount namespace;
 * - sched/sched_process_exit: the mount namespace of every process as it exits (its
 *   namespaces are still in place then), with when.
 * Both maps are keyed by pid and LRU: old entries go by themselves.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

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

struct seen _seen = {}; /* keeps the struct in BTF for user space */

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

SEC("tracepoint/signal/signal_generate")
int ig_audit_sigsys(struct trace_event_raw_signal_generate *ctx)
{
	/* force_sig_seccomp() runs in the offending thread: current is the target. */
	if (ctx->sig != SIGSYS || ctx->code != SYS_SECCOMP)
		return 0;
	if (ctx->pid != (__u32)bpf_get_current_pid_tgid())
		return 0;
	return remember(&sigsys);
}

SEC("tracepoint/sched/sched_process_exit")
int ig_audit_exit(void *ctx)
{
	return remember(&exited);
}

char _license[] SEC("license") = "GPL";
