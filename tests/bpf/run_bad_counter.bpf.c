// SPDX-License-Identifier: GPL-2.0
/*
 * A bare object that declares its own gadget_lost_events, with a 64-byte value: one per CPU
 * would not fit the reader's buffer of one __u64 per CPU, so igrun must refuse it.
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

#include <igrun/macros.h>

struct wide_counter {
	__u64 slots[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct wide_counter);
} gadget_lost_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct event {
	__u32 pid;
};

GADGET_TRACER(badcounter, events, event);

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_bad_counter(void *ctx)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
