// SPDX-License-Identifier: GPL-2.0
/*
 * A bare object for `igrun run` that declares its own gadget_lost_events with a 32-byte value
 * instead of igrun/buffer.h's u64: the kernel would copy 32 bytes per CPU into a reader that
 * counts 8, so igrun must refuse it before reading it.
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

#include <igrun/macros.h>

struct wide_counter {
	__u64 n[4];
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

GADGET_TRACER(badlost, events, event);

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_badlost(void *ctx)
{
	struct event e = { .pid = bpf_get_current_pid_tgid() >> 32 };
	__u32 zero = 0;

	if (bpf_ringbuf_output(&events, &e, sizeof(e), 0)) {
		struct wide_counter *lost = bpf_map_lookup_elem(&gadget_lost_events, &zero);

		if (lost)
			__sync_fetch_and_add(&lost->n[0], 1);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
