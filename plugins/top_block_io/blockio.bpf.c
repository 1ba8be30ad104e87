// SPDX-License-Identifier: GPL-2.0
/*
 * top block-io: I/O count, bytes and time per process, disk and direction, summed in a hash
 * map that igrun drains once per interval.
 *
 * Inspektor Gadget hooks blk_account_io_start, blk_mq_start_request and blk_account_io_done
 * with kprobes. The block layer has tracepoints at those places, and tp_btf programs get
 * their `struct request *` as a typed pointer, so no kprobe is needed:
 *
 *  - block_io_start (blk_account_io_start, Linux 6.5+, when a bio becomes a request: in the
 *    task that submits it) records who submitted the request: pid, comm, mount namespace.
 *    The mount-ns filter applies here, where the current task is the submitter.
 *  - block_rq_issue (blk_mq_start_request, when the driver takes it: often from a worker or
 *    another task, so nobody is read from the current task) records the time and the
 *    request's size, merges included.
 *  - block_rq_complete (blk_update_request) adds the request to its row once the call that
 *    completes its last bytes comes; a request completed in parts counts once. (block_io_done
 *    fires only for requests the queue accounts: with iostats off and no scheduler, none.)
 *  - block_rq_merge (a request merged into another is freed without completing) forgets it.
 *
 * Per-request state lives in LRU maps keyed by the request's address: a request that never
 * completes (an error path that frees it) cannot fill them. A row that does not fit in the
 * stats map is counted in gadget_lost_events (igrun/top.h), which igrun reports as lost.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/top.h>
#include <igrun/types.h>

#include "blockio.h"

#define REQ_OP_BITS 8
#define REQ_OP_MASK ((1 << REQ_OP_BITS) - 1)
#define MAX_REQUESTS 10240

/* Who submitted a request (at block_io_start). */
struct who {
	gadget_mntns_id mntns_id;
	__u32 pid;
	char comm[TASK_COMM_LEN];
};

/* When a request was issued, and its size then (at block_rq_issue). */
struct issued {
	__u64 ts;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_REQUESTS);
	__type(key, struct request *);
	__type(value, struct who);
} whobyreq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_REQUESTS);
	__type(key, struct request *);
	__type(value, struct issued);
} start SEC(".maps");

/* The rows of the current interval, which igrun drains at its end. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct block_key);
	__type(value, struct block_stats);
} stats SEC(".maps");

GADGET_TOPPER(block_io, stats, block_key, block_stats);

/* Older kernels keep the disk in the request (rq_disk), newer ones in its queue only. */
struct request___with_rq_disk {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

static __always_inline struct gendisk *request_disk(struct request *rq)
{
	struct request___with_rq_disk *old = (void *)rq;

	if (bpf_core_field_exists(old->rq_disk))
		return BPF_CORE_READ(old, rq_disk);
	return BPF_CORE_READ(rq, q, disk);
}

SEC("tp_btf/block_io_start")
int BPF_PROG(ig_topio_start, struct request *rq)
{
	__u64 mntns_id = gadget_get_mntns_id();
	struct who who = {};

	if (gadget_should_discard_mntns_id(mntns_id)) {
		/* A request of this address that was freed unseen must not lend it its submitter. */
		bpf_map_delete_elem(&whobyreq, &rq);
		return 0;
	}
	who.mntns_id = mntns_id;
	who.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(who.comm, sizeof(who.comm));
	bpf_map_update_elem(&whobyreq, &rq, &who, BPF_ANY);
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(ig_topio_req, struct request *rq)
{
	struct issued issued;

	/* With the filter on, only requests a selected submitter made (the issuing task is
	 * not necessarily the submitter); without it, every request, as ig. */
	if (gadget_filter_by_mntns && !bpf_map_lookup_elem(&whobyreq, &rq))
		return 0;
	issued.ts = bpf_ktime_get_ns();
	issued.bytes = BPF_CORE_READ(rq, __data_len);
	bpf_map_update_elem(&start, &rq, &issued, BPF_ANY);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(ig_topio_done, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	struct block_stats *row, zero = {};
	struct block_key key = {};
	struct issued *issued;
	struct gendisk *disk;
	struct who *who;
	__u64 delta_us;

	/* Not yet the call that completes the request: its remaining bytes are still more. */
	if (nr_bytes < BPF_CORE_READ(rq, __data_len))
		return 0;
	issued = bpf_map_lookup_elem(&start, &rq);
	if (!issued)
		return 0; /* issued before the gadget started, or filtered out */
	delta_us = (bpf_ktime_get_ns() - issued->ts) / 1000;

	disk = request_disk(rq);
	key.major = BPF_CORE_READ(disk, major);
	key.minor = BPF_CORE_READ(disk, first_minor);
	key.write = (BPF_CORE_READ(rq, cmd_flags) & REQ_OP_MASK) == REQ_OP_WRITE;
	who = bpf_map_lookup_elem(&whobyreq, &rq);
	if (who) {
		key.mntns_id = who->mntns_id;
		key.pid = who->pid;
		__builtin_memcpy(key.comm, who->comm, sizeof(key.comm));
	}

	row = gadget_stats_entry(&stats, &key, &zero); /* NULL: the map is full, counted lost */
	if (row) {
		__sync_fetch_and_add(&row->bytes, issued->bytes);
		__sync_fetch_and_add(&row->us, delta_us);
		__sync_fetch_and_add(&row->ops, 1);
	}
	bpf_map_delete_elem(&start, &rq);
	bpf_map_delete_elem(&whobyreq, &rq);
	return 0;
}

SEC("tp_btf/block_rq_merge")
int BPF_PROG(ig_topio_merge, struct request *rq)
{
	bpf_map_delete_elem(&start, &rq);
	bpf_map_delete_elem(&whobyreq, &rq);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
