/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Filtering by mount namespace, the Inspektor Gadget convention: when user space sets
 * gadget_filter_by_mntns, only events of tasks whose mount-ns id is a key of
 * gadget_mntns_filter_map are kept. igrun shares one such map across the gadgets of a run and
 * keeps it in sync with the selected containers.
 */
#ifndef IGRUN_MNTNS_FILTER_H
#define IGRUN_MNTNS_FILTER_H

#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#define GADGET_MAX_CONTAINERS 1024

const volatile bool gadget_filter_by_mntns = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GADGET_MAX_CONTAINERS);
	__type(key, __u64);
	__type(value, __u32);
} gadget_mntns_filter_map SEC(".maps");

static __always_inline __u64 gadget_get_mntns_id(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
}

static __always_inline bool gadget_should_discard_mntns_id(__u64 mntns_id)
{
	return gadget_filter_by_mntns &&
	       !bpf_map_lookup_elem(&gadget_mntns_filter_map, &mntns_id);
}

#endif
