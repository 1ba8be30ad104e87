// SPDX-License-Identifier: GPL-2.0
/*
 * A program for `top ebpf`'s tests: a socket filter the test runs a known number of times
 * with BPF_PROG_TEST_RUN, using one map of a known size; and a map that grows.
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} topebpf_runs SEC(".maps");

/* Not used by the program: a map whose memlock grows with its elements (no preallocation),
 * to check that top ebpf reads such a map's size again each interval. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u64);
} topebpf_grows SEC(".maps");

SEC("socket")
int topebpf_probe(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u64 *runs = bpf_map_lookup_elem(&topebpf_runs, &key);

	if (runs)
		__sync_fetch_and_add(runs, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
