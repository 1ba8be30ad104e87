// SPDX-License-Identifier: GPL-2.0
/*
 * top signal: how many signals each process sent to each other process, per signal, every
 * interval.
 *
 * signal/signal_generate fires in the sender for every signal the kernel generates (kill(),
 * tgkill(), the kernel's own SIGCHLD ...). The program adds one to the row of (sender, target,
 * signal) in the `stats` hash map; igrun drains the map every interval (igrun/top.h), so each
 * interval counts from zero.
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>
#include <igrun/top.h>

#include "topsignal.h"

/* --signal, set by the gadget's constants() before the object loads; 0 counts every signal. */
const volatile __s32 only_signal = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct signal_key);
	__type(value, struct signal_counts);
} stats SEC(".maps");

GADGET_TOPPER(signals, stats, signal_key, signal_counts);

SEC("tracepoint/signal/signal_generate")
int ig_top_sig(struct trace_event_raw_signal_generate *ctx)
{
	static const struct signal_counts zero;
	struct signal_key key = {};
	struct signal_counts *counts;

	if (only_signal && ctx->sig != only_signal)
		return 0;
	gadget_process_populate(&key.proc);
	if (gadget_should_discard_mntns_id(key.proc.mntns_id))
		return 0;
	key.proc.tid = 0;
	key.tpid = ctx->pid;
	key.sig = ctx->sig;
	counts = gadget_stats_entry(&stats, &key, &zero);
	if (counts)
		__sync_fetch_and_add(&counts->count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
