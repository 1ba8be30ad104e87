// SPDX-License-Identifier: GPL-2.0
/*
 * The interval benchmark's load: each getppid() of the benchmark's trigger process adds
 * `keys_per_call` distinct keys to the stats map (one bpf_loop), the shape of `top file`'s rows
 * (process, file id, name; counts and bytes). igrun drains the map every interval.
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

#include <igrun/macros.h>
#include <igrun/top.h>

const volatile __u32 trigger_tgid = 0;
const volatile __u32 keys_per_call = 100000;

struct topkey {
	__u32 pid;
	__u32 tid;
	__u64 inode;
	char comm[16];
	char name[64];
};

struct topvalue {
	__u64 reads;
	__u64 writes;
	__u64 rbytes;
	__u64 wbytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct topkey);
	__type(value, struct topvalue);
} stats SEC(".maps");

GADGET_TOPPER(topkeys, stats, topkey, topvalue);

__u64 round_base = 0;

static long add_key(__u32 i, void *ctx)
{
	static const struct topvalue zero;
	struct topkey key = {};
	struct topvalue *value;

	key.pid = trigger_tgid;
	key.inode = round_base + i;
	__builtin_memcpy(key.comm, "topbench", 9);
	__builtin_memcpy(key.name, "file", 5);
	value = gadget_stats_entry(&stats, &key, &zero);
	if (value) {
		__sync_fetch_and_add(&value->writes, 1);
		__sync_fetch_and_add(&value->wbytes, 4096);
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int ig_topkeys(void *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != trigger_tgid)
		return 0;
	bpf_loop(keys_per_call, add_key, NULL, 0);
	round_base += keys_per_call;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
