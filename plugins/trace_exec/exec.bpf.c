// SPDX-License-Identifier: GPL-2.0
/*
 * trace exec: one event per execve/execveat, with its arguments and return value.
 *
 * The enter tracepoint records who is exec'ing and reads the arguments from user memory (they
 * are gone once the new program runs); the exit tracepoint adds the result and the new comm and
 * sends the record, trimmed to the arguments it holds.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "exec.h"

const volatile bool ignore_failed = false;
const volatile __u32 targ_uid = INVALID_UID;

static const struct event empty_event = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct event);
} execs SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(exec, events, event);

static __always_inline int enter_exec(const char *filename, const char *const *argv)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 uid_gid = bpf_get_current_uid_gid();
	__u64 mntns_id = gadget_get_mntns_id();
	struct task_struct *task;
	struct event *event;
	const char *argp;
	char last;
	int ret, i;

	if (gadget_should_discard_mntns_id(mntns_id))
		return 0;
	if (targ_uid != INVALID_UID && targ_uid != (__u32)uid_gid)
		return 0;
	/* A full table (or a second exec in flight in the same process) loses this exec: say so. */
	if (bpf_map_update_elem(&execs, &pid, &empty_event, BPF_NOEXIST)) {
		gadget_count_lost();
		return 0;
	}
	event = bpf_map_lookup_elem(&execs, &pid);
	if (!event)
		return 0;

	task = (struct task_struct *)bpf_get_current_task();
	event->timestamp = bpf_ktime_get_boot_ns();
	gadget_process_populate(&event->proc); /* comm is the new program's: set at exit */
	if (bpf_core_field_exists(task->loginuid))
		event->loginuid = BPF_CORE_READ(task, loginuid.val);
	else
		event->loginuid = INVALID_UID;
	if (bpf_core_field_exists(task->sessionid))
		event->sessionid = BPF_CORE_READ(task, sessionid);

	/* args[0] is the path as given to exec (as Inspektor Gadget does), then argv[1..]. */
	ret = bpf_probe_read_user_str(event->args, ARGSIZE, filename);
	if (ret < 0) {
		/* Unreadable (a user page not faulted in yet): keep the arguments anyway. */
		event->args[0] = '\0';
		ret = 1;
	}
	if (ret == ARGSIZE && !bpf_probe_read_user(&last, 1, filename + ARGSIZE - 1) && last)
		event->args_truncated = 1;
	event->args_size = ret;
	event->args_count = 1;

#pragma unroll
	for (i = 1; i < TOTAL_MAX_ARGS; i++) {
		if (bpf_probe_read_user(&argp, sizeof(argp), &argv[i]) || !argp)
			return 0;
		if (event->args_size > LAST_ARG)
			return 0;
		ret = bpf_probe_read_user_str(&event->args[event->args_size], ARGSIZE, argp);
		if (ret < 0)
			return 0;
		if (ret == ARGSIZE && !bpf_probe_read_user(&last, 1, argp + ARGSIZE - 1) && last)
			event->args_truncated = 1;
		event->args_count++;
		event->args_size += ret;
	}
	/* One more non-NULL pointer means arguments were left out. */
	if (!bpf_probe_read_user(&argp, sizeof(argp), &argv[TOTAL_MAX_ARGS]) && argp)
		event->args_truncated = 1;
	return 0;
}

#define OVERLAYFS_MAGIC 0x794c7630

/* Whether the program now running comes from the upper (writable) layer of an overlay, as a
 * file a container wrote itself does. The overlay's inode type is private to the kernel: its
 * upper dentry pointer follows the embedded struct inode, which is all this relies on. */
static __always_inline __u8 upper_layer(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct inode *inode = BPF_CORE_READ(task, mm, exe_file, f_inode);
	struct dentry *upper = NULL;

	if (!inode || BPF_CORE_READ(inode, i_sb, s_magic) != OVERLAYFS_MAGIC)
		return 0;
	bpf_probe_read_kernel(&upper, sizeof(upper), (void *)inode + bpf_core_type_size(struct inode));
	return upper != NULL;
}

static __always_inline int exit_exec(long ret)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct event *event = bpf_map_lookup_elem(&execs, &pid);
	__u64 len;

	if (!event)
		return 0;
	if (ignore_failed && ret < 0)
		goto cleanup;
	event->retval = ret;
	if (ret == 0)
		event->upper_layer = upper_layer();
	bpf_get_current_comm(&event->proc.comm, sizeof(event->proc.comm));
	len = EVENT_SIZE(event);
	if (len <= sizeof(*event))
		gadget_output_buf(&events, event, len);
cleanup:
	bpf_map_delete_elem(&execs, &pid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int ig_execve_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_exec((const char *)ctx->args[0], (const char *const *)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_execve")
int ig_execve_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_exec(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int ig_execveat_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_exec((const char *)ctx->args[1], (const char *const *)ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int ig_execveat_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_exec(ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
