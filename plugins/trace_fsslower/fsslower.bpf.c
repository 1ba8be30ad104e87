// SPDX-License-Identifier: GPL-2.0
/*
 * trace fsslower: reads, writes, opens and fsyncs of files on one file system type that took
 * at least a minimum latency.
 *
 * Inspektor Gadget times the file system's own functions (ext4_file_read_iter …) with kprobes;
 * this design needs none. It times the syscalls instead, through the stable syscalls
 * tracepoints: the enter tracepoint finds the file behind the fd in the task's file table and
 * keeps the start time, the file and its position, but only for a file of the requested type
 * (so reads of pipes and sockets cost one lookup and nothing more); the exit tracepoint
 * measures the latency and sends the event if it reaches the threshold. An open has no fd
 * before it returns, so it is checked at exit, on the fd it returned.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "fsslower.h"

#define MAX_ENTRIES 10240
#define O_PATH 010000000
#define S_IFMT 00170000
#define S_IFREG 0100000
#define S_IFDIR 0040000
#define LLONG_MAX 9223372036854775807LL

const volatile __u64 min_lat_ns = 10 * 1000 * 1000;
/* The file system type to trace, as the kernel names it (/proc/filesystems), NUL-padded;
 * target_fs_alt is a second name the same choice covers (nfs4 for nfs), or empty. */
const volatile char target_fs[FS_NAME_LEN] = "ext4";
const volatile char target_fs_alt[FS_NAME_LEN] = "";

/* What the enter tracepoint keeps for the exit one, per thread (a thread is in one syscall
 * at a time). */
struct start {
	__u64 ts;
	__u64 mntns_id;
	__s64 offset;
	struct file *file; /* NULL for an open: known at exit only */
	__u8 op;
};

/* LRU: a thread killed inside a syscall never reaches the exit tracepoint. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct start);
} starts SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(fsslower, events, event);

static __always_inline struct file *fd_file(struct task_struct *task, long fd)
{
	struct fdtable *fdt;
	struct file **fds;
	struct file *file = NULL;

	if (fd < 0)
		return NULL;
	fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || (__u64)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]))
		return NULL;
	return file;
}

static __always_inline void fs_name(struct file *file, char name[FS_NAME_LEN])
{
	const char *p = BPF_CORE_READ(file, f_inode, i_sb, s_type, name);

	if (p)
		bpf_probe_read_kernel_str(name, FS_NAME_LEN, p);
}

/* Compare with a const volatile name: its bytes are known to the verifier, not the compiler. */
static __always_inline bool name_is(const char name[FS_NAME_LEN], const volatile char *want)
{
#pragma unroll
	for (int i = 0; i < FS_NAME_LEN; i++) {
		if (name[i] != want[i])
			return false;
		if (!name[i])
			return true;
	}
	return true;
}

static __always_inline bool is_overlay(const char name[FS_NAME_LEN])
{
	return name[0] == 'o' && name[1] == 'v' && name[2] == 'e' && name[3] == 'r' &&
	       name[4] == 'l' && name[5] == 'a' && name[6] == 'y' && name[7] == '\0';
}

static __always_inline bool on_target_fs(const char name[FS_NAME_LEN])
{
	return name_is(name, target_fs) || (target_fs_alt[0] && name_is(name, target_fs_alt));
}

/*
 * Whether the file is one this gadget traces: a regular file (a directory too for fsync, as
 * the file systems' fsync serves both) on the requested file system type. A file of an
 * overlay mount (a container's root) counts by the file behind it, as the kprobes of
 * Inspektor Gadget see the call overlayfs passes down; unless overlay itself was asked for.
 */
static __always_inline bool wanted(struct file *file, __u8 op)
{
	char name[FS_NAME_LEN] = {};
	umode_t mode = BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT;
	void *priv;

	if (mode != S_IFREG && !(op == F_FSYNC && mode == S_IFDIR))
		return false;
	fs_name(file, name);
	if (on_target_fs(name))
		return true;
	if (!is_overlay(name) || mode != S_IFREG)
		return false;
	/* An overlay file's private data is its struct ovl_file (the real file before 6.9). */
	priv = BPF_CORE_READ(file, private_data);
	if (bpf_core_type_exists(struct ovl_file))
		file = BPF_CORE_READ((struct ovl_file *)priv, realfile);
	else
		file = priv;
	if (!file)
		return false;
	__builtin_memset(name, 0, sizeof(name));
	fs_name(file, name);
	return on_target_fs(name);
}

static __always_inline int enter_fd(long fd, __u8 op, bool has_offset, __s64 offset)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 mntns_id = gadget_get_mntns_id();
	struct task_struct *task;
	struct start start = {};
	struct file *file;

	if (gadget_should_discard_mntns_id(mntns_id))
		return 0;
	task = (struct task_struct *)bpf_get_current_task();
	file = fd_file(task, fd);
	if (!file || !wanted(file, op))
		return 0;
	start.mntns_id = mntns_id;
	start.file = file;
	start.op = op;
	/* Where the operation starts: the given offset of pread/pwrite, else the file position
	 * (Inspektor Gadget's kiocb->ki_pos); fsync covers the whole file, from 0. */
	if (has_offset)
		start.offset = offset;
	else if (op != F_FSYNC)
		start.offset = BPF_CORE_READ(file, f_pos);
	start.ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&starts, &tid, &start, BPF_ANY);
	return 0;
}

static __always_inline int enter_open(__u64 flags)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 mntns_id = gadget_get_mntns_id();
	struct start start = {};

	/* An O_PATH fd is a handle, never opened by the file system. */
	if (flags & O_PATH)
		return 0;
	if (gadget_should_discard_mntns_id(mntns_id))
		return 0;
	start.mntns_id = mntns_id;
	start.op = F_OPEN;
	start.ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&starts, &tid, &start, BPF_ANY);
	return 0;
}

static __always_inline int exit_op(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct start *start = bpf_map_lookup_elem(&starts, &tid);
	const unsigned char *file_name;
	struct event *event;
	struct file *file;
	__u64 now, delta_ns;

	if (!start)
		return 0;
	now = bpf_ktime_get_ns();
	delta_ns = now - start->ts;
	/* A thread id reused after its thread died inside a syscall: not this thread's start. */
	if (start->ts < BPF_CORE_READ(task, start_time))
		goto cleanup;
	if (delta_ns < min_lat_ns)
		goto cleanup;
	if (start->op == F_OPEN) {
		/* A failed open left no file to tell the file system by. */
		file = ret < 0 ? NULL : fd_file(task, ret);
		if (!file || !wanted(file, F_OPEN))
			goto cleanup;
	} else {
		file = start->file;
	}

	event = gadget_reserve_buf(&events, sizeof(*event));
	if (!event)
		goto cleanup;
	event->timestamp = bpf_ktime_get_boot_ns();
	gadget_process_populate(&event->proc);
	event->proc.mntns_id = start->mntns_id; /* the one the filter saw */
	event->op = start->op;
	event->delta_us = delta_ns / 1000;
	event->offset = start->offset;
	event->ret = ret;
	if (start->op == F_FSYNC)
		event->size = LLONG_MAX; /* the range synced, as Inspektor Gadget: the whole file */
	else if (start->op == F_OPEN || ret < 0)
		event->size = 0;
	else
		event->size = ret;
	file_name = BPF_CORE_READ(file, f_path.dentry, d_name.name);
	if (!file_name || bpf_probe_read_kernel_str(event->file, sizeof(event->file), file_name) < 0)
		event->file[0] = '\0';
	event->file_truncated = BPF_CORE_READ(file, f_path.dentry, d_name.len) >= FILE_NAME_LEN;
	gadget_submit_buf(&events, event);
cleanup:
	bpf_map_delete_elem(&starts, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_read")
int ig_fssl_read_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx->args[0], F_READ, false, 0);
}

SEC("tracepoint/syscalls/sys_exit_read")
int ig_fssl_read_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_readv")
int ig_fssl_readv_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx->args[0], F_READ, false, 0);
}

SEC("tracepoint/syscalls/sys_exit_readv")
int ig_fssl_readv_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_pread64")
int ig_fssl_pread_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx->args[0], F_READ, true, ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_exit_pread64")
int ig_fssl_pread_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

/* preadv/pwritev: the offset is pos_l (64 bits wide on a 64-bit kernel). */
SEC("tracepoint/syscalls/sys_enter_preadv")
int ig_fssl_preadv_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx->args[0], F_READ, true, ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_exit_preadv")
int ig_fssl_preadv_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

/* preadv2/pwritev2: an offset of -1 means the file position, as for readv/writev. */
SEC("tracepoint/syscalls/sys_enter_preadv2")
int ig_fssl_preadv2_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx->args[0], F_READ, ctx->args[3] != -1, ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_exit_preadv2")
int ig_fssl_preadv2_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_write")
int ig_fssl_write_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx->args[0], F_WRITE, false, 0);
}

SEC("tracepoint/syscalls/sys_exit_write")
int ig_fssl_write_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int ig_fssl_writev_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx->args[0], F_WRITE, false, 0);
}

SEC("tracepoint/syscalls/sys_exit_writev")
int ig_fssl_writev_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_pwrite64")
int ig_fssl_pwrite_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx->args[0], F_WRITE, true, ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_exit_pwrite64")
int ig_fssl_pwrite_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_pwritev")
int ig_fssl_pwritev_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx->args[0], F_WRITE, true, ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_exit_pwritev")
int ig_fssl_pwritev_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_pwritev2")
int ig_fssl_pwritev2_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx->args[0], F_WRITE, ctx->args[3] != -1, ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_exit_pwritev2")
int ig_fssl_pwritev2_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int ig_fssl_open_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_open(ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int ig_fssl_open_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int ig_fssl_open2_e(struct trace_event_raw_sys_enter *ctx)
{
	struct open_how *how = (struct open_how *)ctx->args[2];
	__u64 flags = 0;

	bpf_probe_read_user(&flags, sizeof(flags), &how->flags);
	return enter_open(flags);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int ig_fssl_open2_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_fsync")
int ig_fssl_sync_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx->args[0], F_FSYNC, false, 0);
}

SEC("tracepoint/syscalls/sys_exit_fsync")
int ig_fssl_sync_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_fdatasync")
int ig_fssl_dsync_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_fd(ctx->args[0], F_FSYNC, false, 0);
}

SEC("tracepoint/syscalls/sys_exit_fdatasync")
int ig_fssl_dsync_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_op(ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
