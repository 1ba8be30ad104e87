/* SPDX-License-Identifier: GPL-2.0 */
/*
 * burst: a synthetic load for measuring how fast events can be drained. Each getppid() of the
 * target process emits events_per_trigger events, numbered from one global sequence so that a
 * consumer can tell how many it missed.
 *
 * burst_ring.bpf.c and burst_perf.bpf.c differ only in the `events` map and in output_event(),
 * which they define after including this file.
 */
#ifndef BENCH_BURST_H
#define BENCH_BURST_H

#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>

#define TASK_COMM_LEN 16
/* Bounds the time one getppid() spends in the program. */
#define MAX_EVENTS_PER_TRIGGER (1 << 16)

/* 56 bytes with no padding holes, so every byte sent is data. */
struct burst_event {
	__u64 seq;
	__u64 timestamp;
	__u64 mntns_id;
	__u32 pid;
	__u32 tid;
	__u32 cpu;
	__u32 index;
	char comm[TASK_COMM_LEN];
};

const volatile __u32 target_tgid = 0;
const volatile __u32 events_per_trigger = 1;

__u64 next_seq = 0;

GADGET_TRACER(burst, events, burst_event);

/* One trigger's state: what its events share is filled once, not once per event. */
struct burst {
	void *ctx; /* the tracepoint's, which perf output needs */
	struct burst_event event;
};

/* Send one event; a failure is counted in gadget_lost_events. */
static __always_inline void output_event(void *ctx, struct burst_event *event);

static long emit_one(__u32 index, struct burst *b)
{
	/* Taken before the output, so that a failed one leaves a gap consumers can see. */
	b->event.seq = __sync_fetch_and_add(&next_seq, 1);
	b->event.timestamp = bpf_ktime_get_boot_ns();
	b->event.index = index;
	output_event(b->ctx, &b->event);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int burst_getppid(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_struct *task;
	struct burst b = { .ctx = ctx };
	__u32 count = events_per_trigger;

	if (id >> 32 != target_tgid)
		return 0;
	task = (struct task_struct *)bpf_get_current_task();
	b.event.mntns_id = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	b.event.pid = id >> 32;
	b.event.tid = (__u32)id;
	b.event.cpu = bpf_get_smp_processor_id();
	bpf_get_current_comm(&b.event.comm, sizeof(b.event.comm));
	if (count > MAX_EVENTS_PER_TRIGGER)
		count = MAX_EVENTS_PER_TRIGGER;
	bpf_loop(count, emit_one, &b, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";

#endif
