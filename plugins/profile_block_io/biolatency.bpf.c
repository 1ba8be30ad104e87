// SPDX-License-Identifier: GPL-2.0
/*
 * profile block-io: the latency of block I/O requests (issue to completion) as a log2
 * histogram, after Wenbo Zhang's biolatency (libbpf-tools) as Inspektor Gadget runs it.
 *
 * The block tracepoints carry the request itself (raw tracepoints: no kprobe): block_rq_insert
 * and block_rq_issue note when a request starts, block_rq_complete adds the time since then to
 * one bucket. A request that was issued before the programs attached has no start and is not
 * counted. Without --queued a request is timed from its issue (an insert's time is replaced);
 * with it, from its insert into a scheduler's queue when the device has one.
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include <igrun/macros.h>
#include <igrun/top.h>

#include "biolatency.h"

#define MAX_ENTRIES 10240

const volatile bool targ_per_disk = false;
const volatile bool targ_queued = false;
const volatile bool targ_ms = false;
const volatile bool filter_dev = false;
const volatile __u32 targ_dev = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct request *);
	__type(value, __u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct hist_key);
	__type(value, struct hist);
} hists SEC(".maps");

GADGET_TOPPER(block_io, hists, hist_key, hist);

static const struct hist zero;

static __always_inline __u32 request_dev(struct request *rq)
{
	struct gendisk *disk = BPF_CORE_READ(rq, q, disk);

	if (!disk)
		return 0;
	return MKDEV(BPF_CORE_READ(disk, major), BPF_CORE_READ(disk, first_minor));
}

static __always_inline __u64 log2_u64(__u64 v)
{
	__u64 r = 0;

	/* floor(log2(v)), 0 for 0 and 1: bucket i holds [2^i, 2^(i+1)) */
	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r;
}

static __always_inline int trace_rq_start(struct request *rq, bool issue)
{
	__u64 ts;

	if (issue && targ_queued && BPF_CORE_READ(rq, q, elevator))
		return 0;
	if (filter_dev && request_dev(rq) != targ_dev)
		return 0;
	ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&start, &rq, &ts, BPF_ANY);
	return 0;
}

SEC("raw_tp/block_rq_insert")
int ig_profio_ins(__u64 *ctx)
{
	return trace_rq_start((struct request *)ctx[0], false);
}

SEC("raw_tp/block_rq_issue")
int ig_profio_iss(__u64 *ctx)
{
	return trace_rq_start((struct request *)ctx[0], true);
}

SEC("raw_tp/block_rq_complete")
int ig_profio_done(__u64 *ctx)
{
	struct request *rq = (struct request *)ctx[0];
	struct hist_key key = {};
	struct hist *histp;
	__u64 *tsp, slot;
	__s64 delta;

	tsp = bpf_map_lookup_elem(&start, &rq);
	if (!tsp)
		return 0;
	delta = (__s64)(bpf_ktime_get_ns() - *tsp);
	if (delta < 0)
		goto cleanup;
	if (targ_per_disk)
		key.dev = request_dev(rq);
	histp = gadget_stats_entry(&hists, &key, &zero);
	if (!histp)
		goto cleanup;
	delta /= targ_ms ? 1000000U : 1000U;
	slot = log2_u64(delta);
	if (slot >= MAX_SLOTS)
		slot = MAX_SLOTS - 1;
	__sync_fetch_and_add(&histp->slots[slot], 1);
cleanup:
	bpf_map_delete_elem(&start, &rq);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
