// SPDX-License-Identifier: GPL-2.0
/*
 * snapshot openfiles: one record per open file descriptor of every process, from the
 * task_file iterator (read once per snapshot by igrun's BpfSnapshot).
 *
 * The iterator visits each process's file table once (threads that share it are skipped by
 * the kernel), in the process's context-free view: the task and the file are handed over,
 * nothing is traced. Processes outside the selected containers are skipped here, with the
 * run's mount-ns filter (igrun/mntns_filter.h), and --pid keeps one process.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#define PATH_LEN 256

const volatile __u32 target_pid = 0; /* --pid: only this process; 0: every process */

struct open_file {
	struct gadget_process proc;
	__u64 inode;
	__u32 fd;
	__u32 mode;           /* the inode's type and permission bits (i_mode) */
	char path[PATH_LEN];  /* as the process sees it (d_path), cut to PATH_LEN - 1 bytes */
};

/* The record struct and the iterator that writes it: igrun reads the layout from BTF. */
GADGET_SNAPSHOTTER(openfiles, open_file, snapshot_openfiles);

SEC("iter/task_file")
int snapshot_openfiles(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct open_file rec = {};

	if (!task || !file)
		return 0;
	if (target_pid && task->tgid != target_pid)
		return 0;
	gadget_process_from_task(&rec.proc, task);
	if (gadget_should_discard_mntns_id(rec.proc.mntns_id))
		return 0;
	rec.fd = ctx->fd;
	rec.inode = BPF_CORE_READ(file, f_inode, i_ino);
	rec.mode = BPF_CORE_READ(file, f_inode, i_mode);
	bpf_d_path((struct path *)&file->f_path, rec.path, sizeof(rec.path));
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
