// SPDX-License-Identifier: GPL-2.0
/* A program the verifier must refuse: it dereferences a map value that may be NULL. */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>

struct event {
	__u32 pid;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} values SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(rejected, events, event);

SEC("tracepoint/syscalls/sys_enter_getpid")
int rejected(void *ctx)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&values, &key);

	return *value;
}

char LICENSE[] SEC("license") = "GPL";
