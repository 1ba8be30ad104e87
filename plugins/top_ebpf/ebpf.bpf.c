// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * `top ebpf`: which processes hold each BPF program. An iterator over every open file of
 * every process writes one record per file that is a BPF program, read once per interval.
 *
 * Inspektor Gadget and bpftool find those files by comparing f_op with the address of
 * bpf_prog_fops, from kallsyms; a kernel built without CONFIG_KALLSYMS_ALL lists no data
 * symbols, and its BTF holds no such variable either, so neither a typed nor a typeless ksym
 * resolves there. The file's own marks are always there: the kernel makes a program's file
 * with anon_inode_getfd("bpf-prog", ...) (a BPF_PROG_LOAD, a BPF_PROG_GET_FD_BY_ID, a
 * BPF_OBJ_GET of a pinned program), so it lives on the anonymous inode file system, whose
 * files no user can create or name, under the dentry name "bpf-prog".
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/macros.h>

#include "ebpf.h"

#define ANON_INODE_FS_MAGIC 0x09041934
#define BPF_PROG_FILE "bpf-prog"

GADGET_SNAPSHOTTER(top_ebpf, pid_iter_entry, ig_top_ebpf_it);

static __always_inline bool is_bpf_prog_file(struct file *file)
{
	char name[sizeof(BPF_PROG_FILE)];
	const unsigned char *dname;

	if (BPF_CORE_READ(file, f_inode, i_sb, s_magic) != ANON_INODE_FS_MAGIC)
		return false;
	dname = BPF_CORE_READ(file, f_path.dentry, d_name.name);
	if (bpf_probe_read_kernel_str(name, sizeof(name), dname) != sizeof(name))
		return false; /* shorter, longer or unreadable */
	for (int i = 0; i < sizeof(name); i++)
		if (name[i] != BPF_PROG_FILE[i])
			return false;
	return true;
}

SEC("iter/task_file")
int ig_top_ebpf_it(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct task_struct *task = ctx->task;
	struct pid_iter_entry e;

	if (!file || !task || !is_bpf_prog_file(file))
		return 0;

	__builtin_memset(&e, 0, sizeof(e));
	e.pid = task->tgid;
	e.id = BPF_CORE_READ((struct bpf_prog *)file->private_data, aux, id);
	bpf_probe_read_kernel_str(&e.comm, sizeof(e.comm), task->group_leader->comm);
	bpf_seq_write(ctx->meta->seq, &e, sizeof(e));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
