// SPDX-License-Identifier: GPL-2.0
/*
 * snapshot process: one record per process (per thread with --threads), from a task iterator.
 *
 * The iterator visits every task of the host once; a task outside the selected containers'
 * mount namespaces is skipped here (igrun/mntns_filter.h), so `-c NAME` costs nothing per
 * host process in user space. Each record is written whole with bpf_seq_write: user space
 * reads the seq file into one buffer and takes it as an array of struct process_entry.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

const volatile bool show_threads = false;

struct process_entry {
	struct gadget_process proc; /* pid is the tgid, tid the thread, ppid the parent's tgid */
};

GADGET_SNAPSHOTTER(processes, process_entry, ig_snap_proc);

SEC("iter/task")
int ig_snap_proc(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct process_entry entry = {};

	if (!task)
		return 0;
	if (!show_threads && task->tgid != task->pid)
		return 0;
	gadget_process_from_task(&entry.proc, task);
	if (gadget_should_discard_mntns_id(entry.proc.mntns_id))
		return 0;
	bpf_seq_write(ctx->meta->seq, &entry, sizeof(entry));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
