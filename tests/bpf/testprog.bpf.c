// SPDX-License-Identifier: GPL-2.0
/*
 * Test program for the libbpf layer: one program per attach type and buffer kind, each
 * filtered to the test process (target_pid) so that counts are exact.
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>

#define COUNT_RAW_TP 0
#define COUNT_TP_BTF 1
#define COUNT_TRACEPOINT 2
#define COUNT_SOCKET 3
#define COUNT_UPROBE 4

const volatile __u32 target_pid = 0;
const volatile __u32 burst = 1;
const volatile bool enabled = true;
const volatile bool counted = false; /* perf drops counted by the BPF side */
const volatile long getppid_nr = 110;

__u64 seq = 0;

struct event {
	__u64 seq;
	__u32 pid;
	__u32 cpu;
	char tag[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} percpu_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(test, events, event);

static __always_inline bool is_target(void)
{
	return enabled && (bpf_get_current_pid_tgid() >> 32) == target_pid;
}

static __always_inline void count(__u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(&counts, &slot);

	if (c)
		__sync_fetch_and_add(c, 1);
}

static long emit_ring(__u32 index, void *ctx)
{
	struct event *e = gadget_reserve_buf(&events, sizeof(*e));

	if (!e)
		return 0;
	e->seq = __sync_fetch_and_add(&seq, 1);
	e->pid = target_pid;
	e->cpu = bpf_get_smp_processor_id();
	__builtin_memcpy(e->tag, "ring", 5);
	gadget_submit_buf(&events, e);
	return 0;
}

struct loop_ctx {
	void *ctx;
};

static long emit_perf(__u32 index, void *data)
{
	struct loop_ctx *lc = data;
	struct event e = {};

	e.seq = __sync_fetch_and_add(&seq, 1);
	e.pid = target_pid;
	e.cpu = bpf_get_smp_processor_id();
	__builtin_memcpy(e.tag, "perf", 5);
	if (counted)
		gadget_perf_output(lc->ctx, &perf_events, &e, sizeof(e));
	else
		bpf_perf_event_output(lc->ctx, &perf_events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	__u32 zero = 0;
	__u64 *c;

	if (!is_target())
		return 0;
	count(COUNT_TRACEPOINT);
	c = bpf_map_lookup_elem(&percpu_counts, &zero);
	if (c)
		(*c)++;
	bpf_loop(burst, emit_ring, NULL, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int on_getpgid(void *ctx)
{
	struct loop_ctx lc = { .ctx = ctx };

	if (is_target())
		bpf_loop(burst, emit_perf, &lc, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getsid")
int on_getsid(void *ctx)
{
	struct {
		__u64 seq;
		__u32 pid;
	} short_rec = { .seq = 7, .pid = target_pid };

	if (is_target())
		gadget_output_buf(&events, &short_rec, 12); /* seq and pid, no padding */
	return 0;
}

SEC("raw_tp/sys_enter")
int BPF_PROG(on_raw_sys_enter, struct pt_regs *regs, long id)
{
	if (is_target() && id == getppid_nr)
		count(COUNT_RAW_TP);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	if (enabled && parent->tgid == target_pid)
		count(COUNT_TP_BTF);
	return 0;
}

SEC("uprobe")
int on_uprobe(void *ctx)
{
	if (is_target())
		count(COUNT_UPROBE);
	return 0;
}

SEC("socket")
int count_packets(struct __sk_buff *skb)
{
	count(COUNT_SOCKET);
	return skb->len;
}

SEC("socket")
int drop_packets(struct __sk_buff *skb)
{
	return 0;
}

SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (!task || task->pid != target_pid)
		return 0;
	BPF_SEQ_PRINTF(ctx->meta->seq, "%d %s\n", task->pid, task->comm);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
