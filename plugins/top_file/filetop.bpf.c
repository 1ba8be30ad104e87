// SPDX-License-Identifier: GPL-2.0
/*
 * top file: reads and writes per thread and file, aggregated in the kernel.
 *
 * ig hooks vfs_read and vfs_write with kprobes; without kprobes this uses the syscall
 * tracepoints of read, write, pread64, pwrite64, readv, writev, preadv, pwritev, preadv2
 * and pwritev2. The enter tracepoint keeps the descriptor per thread; the exit tracepoint
 * takes the bytes the call actually moved from its return value (a failed call counts for
 * nothing), finds the file behind the descriptor (task->files->fdt->fd[fd]), and adds one
 * call and its bytes to the stats of (thread, file). A key the map has no room for is counted
 * in gadget_lost_events, which igrun reports as lost.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>
#include <igrun/top.h>

#include "filetop.h"

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define S_IFREG 0100000
#define S_ISREG(m) (((m) & S_IFMT) == S_IFREG)
#define S_ISSOCK(m) (((m) & S_IFMT) == S_IFSOCK)

const volatile bool regular_file_only = true;

/* The descriptor of the read or write a thread is in, from enter to exit: in the thread's
 * own storage, which needs no hashing and has room for every thread. */
struct pending {
	__s32 fd;
	bool active;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pending);
} start SEC(".maps");

/* The aggregate igrun drains every interval. Entries are allocated as keys come, not
 * preallocated: most intervals hold far fewer keys than the map has room for. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct file_key);
	__type(value, struct file_stats);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} stats SEC(".maps");

/* A new entry is built here, then copied into the map: it is too big for the stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct file_stats);
} heap SEC(".maps");

GADGET_TOPPER(file, stats, file_key, file_stats);

enum op {
	READ,
	WRITE,
};

static __always_inline int enter(int fd)
{
	struct pending *pending;

	/* The mount namespace is read only when there is a filter: this runs for every call. */
	if (gadget_filter_by_mntns && gadget_should_discard_mntns_id(gadget_get_mntns_id()))
		return 0;
	pending = bpf_task_storage_get(&start, bpf_get_current_task_btf(), 0,
				       BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!pending) {
		gadget_count_lost(); /* no memory for the thread's storage: its call is not counted */
		return 0;
	}
	pending->fd = fd;
	pending->active = true;
	return 0;
}

/* The file behind descriptor fd of task, or NULL. */
static __always_inline struct file *fd_file(struct task_struct *task, int fd)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;

	if (!fdt || fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]))
		return NULL;
	return file;
}

static __always_inline char file_type(umode_t mode)
{
	if (S_ISREG(mode))
		return 'R';
	if (S_ISSOCK(mode))
		return 'S';
	return 'O';
}

/* The stats of key, created (with who and which file) when the interval has none yet; NULL,
 * counted as lost, when the map has no room for another key. */
static __always_inline struct file_stats *stats_of(struct file_key *key, struct file *file,
						  umode_t mode)
{
	struct file_stats *value = bpf_map_lookup_elem(&stats, key);
	const unsigned char *name;
	__u32 zero = 0;

	if (value)
		return value;
	value = bpf_map_lookup_elem(&heap, &zero);
	if (!value)
		return NULL;
	value->reads = 0;
	value->rbytes = 0;
	value->writes = 0;
	value->wbytes = 0;
	gadget_process_populate(&value->proc);
	name = BPF_CORE_READ(file, f_path.dentry, d_name.name);
	if (bpf_probe_read_kernel_str(value->filename, sizeof(value->filename), name) < 0)
		value->filename[0] = '\0';
	value->file_type = file_type(mode);
	return gadget_stats_entry(&stats, key, value);
}

static __always_inline int exit_op(long ret, enum op op)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct file_stats *value;
	struct file_key key = {};
	struct pending *pending;
	struct file *file;
	umode_t mode;

	pending = bpf_task_storage_get(&start, task, 0, 0);
	if (!pending || !pending->active)
		return 0; /* filtered out at enter, or entered before the gadget attached */
	pending->active = false;
	if (ret < 0)
		return 0; /* nothing moved */

	file = fd_file(task, pending->fd);
	if (!file)
		return 0; /* closed meanwhile by another thread */
	mode = BPF_CORE_READ(file, f_inode, i_mode);
	if (regular_file_only && !S_ISREG(mode))
		return 0;

	key.inode = BPF_CORE_READ(file, f_inode, i_ino);
	key.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	key.thread = (__u32)bpf_get_current_pid_tgid();
	value = stats_of(&key, file, mode);
	if (!value)
		return 0;
	/* Only this thread updates its keys, so plain additions do not race with each other. */
	if (op == READ) {
		value->reads++;
		value->rbytes += ret;
	} else {
		value->writes++;
		value->wbytes += ret;
	}
	return 0;
}

#define FILETOP_SYSCALL(call, op)                                                          \
	SEC("tracepoint/syscalls/sys_enter_" #call)                                         \
	int ig_topfile_##call##_e(struct trace_event_raw_sys_enter *ctx)                    \
	{                                                                                   \
		return enter((int)ctx->args[0]);                                            \
	}                                                                                   \
	SEC("tracepoint/syscalls/sys_exit_" #call)                                          \
	int ig_topfile_##call##_x(struct trace_event_raw_sys_exit *ctx)                     \
	{                                                                                   \
		return exit_op(ctx->ret, op);                                               \
	}

FILETOP_SYSCALL(read, READ)
FILETOP_SYSCALL(write, WRITE)
FILETOP_SYSCALL(pread64, READ)
FILETOP_SYSCALL(pwrite64, WRITE)
FILETOP_SYSCALL(readv, READ)
FILETOP_SYSCALL(writev, WRITE)
FILETOP_SYSCALL(preadv, READ)
FILETOP_SYSCALL(pwritev, WRITE)
FILETOP_SYSCALL(preadv2, READ)
FILETOP_SYSCALL(pwritev2, WRITE)

char LICENSE[] SEC("license") = "GPL";
