// SPDX-License-Identifier: GPL-2.0
/*
 * trace mount: one event per mount, umount2, fsopen, fsmount and move_mount call, with its
 * arguments, return value and latency.
 *
 * The enter tracepoints keep the arguments by thread (pointers only: nothing is copied yet);
 * the exit tracepoints read the strings and send the record. Strings are read at exit because
 * by then the kernel has copied them itself, so their pages are present and the non-faulting
 * reads of BPF succeed even for a string the process had never touched before the call.
 *
 * fsmount and move_mount take file descriptors instead of names. For them the filesystem type
 * and the source (the device name of the mount) are read from the mount the descriptor refers
 * to: the new one fsmount returns, or the detached one move_mount attaches (F_EMPTY_PATH).
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "mount.h"

#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004

/* What an enter tracepoint saw, until the exit of the same thread. */
struct arg {
	__u64 ts;
	__u64 mntns_id;
	__u64 flags;
	const char *src;
	const char *dst;
	const char *fs;
	const char *data;
	__s32 fd;
	__u32 op;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct arg);
} args SEC(".maps");

/* An event is far larger than the 512 bytes of BPF stack: it is built here. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} heap SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(mount, events, event);

static __always_inline int probe_entry(enum op op, const char *src, const char *dst,
				       const char *fs, const char *data, __u64 flags, int fd)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 mntns_id = gadget_get_mntns_id();
	struct arg arg = {};

	if (gadget_should_discard_mntns_id(mntns_id))
		return 0;

	arg.ts = bpf_ktime_get_boot_ns();
	arg.mntns_id = mntns_id;
	arg.flags = flags;
	arg.src = src;
	arg.dst = dst;
	arg.fs = fs;
	arg.data = data;
	arg.fd = fd;
	arg.op = op;
	bpf_map_update_elem(&args, &tid, &arg, BPF_ANY);
	return 0;
}

/* The open file behind descriptor `fd` of the current process, or NULL. */
static __always_inline struct file *fd_file(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;

	if (!fdt || fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]))
		return NULL;
	return file;
}

/*
 * Append one NUL-terminated string to event->strings at `off` (an unreadable or absent one
 * becomes the empty string) and return the offset after it. `max` is a constant; the bound
 * check keeps every write inside the array for the verifier.
 */
static __always_inline __u32 append_str(struct event *event, __u32 off, const void *ptr,
					__u32 max, bool kernel)
{
	long n = -1;

	if (off > STRINGS_LEN - max)
		return off;
	if (ptr)
		n = kernel ? bpf_probe_read_kernel_str(&event->strings[off], max, ptr)
			   : bpf_probe_read_user_str(&event->strings[off], max, ptr);
	if (n <= 0) {
		event->strings[off] = '\0';
		n = 1;
	}
	return off + (__u32)n;
}

static __always_inline int probe_exit(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct vfsmount *mnt = NULL;
	const char *devname = NULL;
	struct file *file = NULL;
	struct event *event;
	struct arg *arg;
	__u32 zero = 0;
	__u32 off = 0;
	__u64 len;

	arg = bpf_map_lookup_elem(&args, &tid);
	if (!arg)
		return 0;
	event = bpf_map_lookup_elem(&heap, &zero);
	if (!event)
		goto cleanup;

	event->timestamp = arg->ts;
	event->latency = bpf_ktime_get_boot_ns() - arg->ts;
	gadget_process_populate(&event->proc);
	event->proc.mntns_id = arg->mntns_id; /* before the call: the one the filter saw */
	event->flags = arg->flags;
	event->ret = ret;
	event->op = arg->op;
	__builtin_memset(event->fs, 0, sizeof(event->fs));

	off = append_str(event, off, arg->src, PATH_LEN, false);

	/* The mount a descriptor stands for: fsmount's new one, or the one move_mount moves. */
	if (arg->op == OP_FSMOUNT && ret >= 0)
		file = fd_file(ret);
	else if (arg->op == OP_MOVE_MOUNT && (arg->flags & MOVE_MOUNT_F_EMPTY_PATH) && off == 1)
		file = fd_file(arg->fd);
	if (file)
		mnt = BPF_CORE_READ(file, f_path.mnt);
	if (mnt) {
		struct mount *m = (void *)mnt - bpf_core_field_offset(struct mount, mnt);

		bpf_probe_read_kernel_str(event->fs, sizeof(event->fs),
					  BPF_CORE_READ(mnt, mnt_sb, s_type, name));
		devname = BPF_CORE_READ(m, mnt_devname);
		off = append_str(event, 0, devname, PATH_LEN, true);
	} else if (arg->fs) {
		bpf_probe_read_user_str(event->fs, sizeof(event->fs), arg->fs);
	}

	off = append_str(event, off, arg->dst, PATH_LEN, false);
	off = append_str(event, off, arg->data, DATA_LEN, false);
	event->strings_size = off;

	len = EVENT_SIZE(event);
	if (len <= sizeof(*event))
		gadget_output_buf(&events, event, len);
cleanup:
	bpf_map_delete_elem(&args, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_mount")
int ig_mount_e(struct trace_event_raw_sys_enter *ctx)
{
	return probe_entry(OP_MOUNT, (const char *)ctx->args[0], (const char *)ctx->args[1],
			   (const char *)ctx->args[2], (const char *)ctx->args[4],
			   (__u64)ctx->args[3], -1);
}

SEC("tracepoint/syscalls/sys_exit_mount")
int ig_mount_x(struct trace_event_raw_sys_exit *ctx)
{
	return probe_exit(ctx->ret);
}

/* umount2(target, flags); the syscall is named umount in the kernel. */
SEC("tracepoint/syscalls/sys_enter_umount")
int ig_umount_e(struct trace_event_raw_sys_enter *ctx)
{
	return probe_entry(OP_UMOUNT, NULL, (const char *)ctx->args[0], NULL, NULL,
			   (__u64)ctx->args[1], -1);
}

SEC("tracepoint/syscalls/sys_exit_umount")
int ig_umount_x(struct trace_event_raw_sys_exit *ctx)
{
	return probe_exit(ctx->ret);
}

/* fsopen(fs_name, flags) */
SEC("tracepoint/syscalls/sys_enter_fsopen")
int ig_fsopen_e(struct trace_event_raw_sys_enter *ctx)
{
	return probe_entry(OP_FSOPEN, NULL, NULL, (const char *)ctx->args[0], NULL,
			   (__u32)ctx->args[1], -1);
}

SEC("tracepoint/syscalls/sys_exit_fsopen")
int ig_fsopen_x(struct trace_event_raw_sys_exit *ctx)
{
	return probe_exit(ctx->ret);
}

/* fsmount(fs_fd, flags, attr_flags): both flag words in one, attr_flags high. */
SEC("tracepoint/syscalls/sys_enter_fsmount")
int ig_fsmount_e(struct trace_event_raw_sys_enter *ctx)
{
	__u64 flags = (__u32)ctx->args[1] | ((__u64)(__u32)ctx->args[2] << 32);

	return probe_entry(OP_FSMOUNT, NULL, NULL, NULL, NULL, flags, (int)ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_exit_fsmount")
int ig_fsmount_x(struct trace_event_raw_sys_exit *ctx)
{
	return probe_exit(ctx->ret);
}

/* move_mount(from_dfd, from_pathname, to_dfd, to_pathname, flags) */
SEC("tracepoint/syscalls/sys_enter_move_mount")
int ig_move_mount_e(struct trace_event_raw_sys_enter *ctx)
{
	return probe_entry(OP_MOVE_MOUNT, (const char *)ctx->args[1], (const char *)ctx->args[3],
			   NULL, NULL, (__u32)ctx->args[4], (int)ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_exit_move_mount")
int ig_move_mount_x(struct trace_event_raw_sys_exit *ctx)
{
	return probe_exit(ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
