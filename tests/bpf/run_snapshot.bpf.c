// SPDX-License-Identifier: GPL-2.0
/*
 * A bare snapshot object for `igrun run`: one record per process, from a task iterator. It
 * has no kernel-side container filter (no igrun/mntns_filter.h), so igrun selects containers
 * by the records' mount namespace ids in user space.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/macros.h>
#include <igrun/types.h>

struct task_record {
	gadget_mntns_id mntns_id;
	__u32 pid;
	__u32 ppid;
	char comm[16];
};

GADGET_SNAPSHOTTER(tasks, task_record, igrt_tasks);

SEC("iter/task")
int igrt_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct task_record r = {};

	if (!task || task->pid != task->tgid) /* one record per process, not per thread */
		return 0;
	r.mntns_id = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	r.pid = task->tgid;
	r.ppid = BPF_CORE_READ(task, real_parent, tgid);
	bpf_probe_read_kernel_str(r.comm, sizeof(r.comm), task->comm);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
