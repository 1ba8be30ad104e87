// SPDX-License-Identifier: GPL-2.0
/*
 * profile cpu: sampled stacks. User space opens a software CPU-clock perf event on every
 * online CPU (frequency mode, ig's 49 Hz by default) and attaches this program to each: it
 * runs on the CPU that was interrupted, in the context of the task that was running there.
 * Each sample adds one to the count of its (process, user stack, kernel stack); the stacks
 * themselves are kept once each in a stack-trace map. Nothing crosses to user space until the
 * run ends, when both maps are read once.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/top.h>

#include "profile.h"

#define STACK_NOT_COLLECTED 0x7fffffff

const volatile bool kernel_stacks_only = false;
const volatile bool user_stacks_only = false;

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384); /* --stack-storage-size */
	__type(key, __u32);
	__uint(value_size, MAX_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct profile_key);
	__type(value, __u64);
} counts SEC(".maps");

const struct profile_key *unused_profile_key __attribute__((unused));

SEC("perf_event")
int ig_prof_cpu(struct bpf_perf_event_data *ctx)
{
	static const __u64 zero;
	struct profile_key key = {};
	__u64 id = bpf_get_current_pid_tgid();
	__u64 mntns_id;
	__u64 *count;

	if ((__u32)id == 0) /* the idle task: no process to blame */
		return 0;
	mntns_id = gadget_get_mntns_id();
	if (gadget_should_discard_mntns_id(mntns_id))
		return 0;

	key.mntns_id = mntns_id;
	key.pid = id >> 32;
	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	key.kern_stack_id = user_stacks_only ? STACK_NOT_COLLECTED
					     : bpf_get_stackid(ctx, &stacks, 0);
	key.user_stack_id = kernel_stacks_only ? STACK_NOT_COLLECTED
					       : bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);

	count = gadget_stats_entry(&counts, &key, &zero);
	if (count)
		__sync_fetch_and_add(count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
