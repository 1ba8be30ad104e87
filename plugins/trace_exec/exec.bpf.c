// SPDX-License-Identifier: GPL-2.0
/*
 * trace exec: one event per execve/execveat, with its arguments and return value.
 *
 * The enter tracepoint records who is exec'ing and reads the arguments from user memory (they
 * are gone once the new program runs); the exit tracepoint adds the result and the new comm and
 * sends the record, trimmed to the arguments it holds.
 *
 * With --cwd the exit tracepoint also writes the working directory, walking its dentries up
 * to the task's root (crossing mounts) in a bounded loop, as trace open's --full-path does
 * for a relative path's directory: no kprobes, no bpf_d_path. exec does not change the
 * working directory, so it is the one the process had when it called exec.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "exec.h"

#define NAME_MAX 255
/* Enough steps for the shortest components ("a/") to fill PATH_MAX: only room limits a name. */
#define MAX_PATH_DEPTH (PATH_MAX / 2)

const volatile bool ignore_failed = false;
const volatile __u32 targ_uid = INVALID_UID;
const volatile bool get_cwd = false;

static const struct event empty_event = {};

/* The execs in flight, by pid: each event without its cwd (EVENT_HEAD_SIZE). Sizes, not BTF
 * types: the kernel takes a map's BTF only with both a key and a value type. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, EVENT_HEAD_SIZE);
} execs SEC(".maps");

/* Room too big for the stack, for --cwd: the whole event, and the directory's name being
 * written backwards to end at path[PATH_MAX - 1] (the second half only gives the verifier
 * room for a name's copy that starts anywhere in the first). */
struct scratch {
	struct event event;
	char path[PATH_MAX * 2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} heap SEC(".maps");

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

/* Where the walk up the working directory's dentries is; bpf_loop carries it from one step
 * to the next. */
struct walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	__u32 pos;
	bool done; /* reached the root: the name is whole */
};

static long walk_step(__u32 index, struct walk *w)
{
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;
	struct mount *mnt_parent;
	struct dentry *parent;
	const unsigned char *name;
	struct scratch *s;
	__u32 zero = 0;
	__u32 pos = w->pos;
	__u32 len;

	if (dentry == w->root_dentry && vfsmnt == w->root_mnt) {
		w->done = true;
		return 1;
	}
	if (dentry == BPF_CORE_READ(vfsmnt, mnt_root)) {
		/* Top of a mount: go on from where it is mounted. */
		mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (mnt_parent == mnt) {
			w->done = true; /* the root of the mount tree */
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		w->vfsmnt = __builtin_preserve_access_index(&mnt_parent->mnt);
		return 0;
	}
	parent = BPF_CORE_READ(dentry, d_parent);
	if (parent == dentry) {
		w->done = true; /* the root of a tree no mount holds */
		return 1;
	}
	len = BPF_CORE_READ(dentry, d_name.len);
	name = BPF_CORE_READ(dentry, d_name.name);
	if (len > NAME_MAX || pos < len + 1)
		return 1; /* no room: getcwd would fail with ENAMETOOLONG too */
	s = bpf_map_lookup_elem(&heap, &zero);
	if (!s)
		return 1;
	pos -= len;
	bpf_probe_read_kernel(&s->path[pos & (PATH_MAX - 1)], len & NAME_MAX, name);
	pos -= 1;
	s->path[pos & (PATH_MAX - 1)] = '/';
	w->pos = pos;
	w->dentry = parent;
	return 0;
}

/* The working directory of the current task into s->event.cwd, as getcwd says it (seen from
 * the task's root, so a process in a container or a chroot has its own); left empty when it
 * is longer than PATH_MAX. */
static __always_inline void read_cwd(struct scratch *s)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct path pwd = BPF_CORE_READ(task, fs, pwd);
	struct path root = BPF_CORE_READ(task, fs, root);
	struct walk w = {
		.dentry = pwd.dentry,
		.vfsmnt = pwd.mnt,
		.mnt = container_of(pwd.mnt, struct mount, mnt),
		.root_dentry = root.dentry,
		.root_mnt = root.mnt,
		.pos = PATH_MAX - 1,
	};

	s->event.cwd[0] = '\0';
	s->path[PATH_MAX - 1] = '\0';
	bpf_loop(MAX_PATH_DEPTH, walk_step, &w, 0);
	if (!w.done)
		return;
	if (w.pos == PATH_MAX - 1) { /* the root itself */
		w.pos -= 1;
		s->path[w.pos & (PATH_MAX - 1)] = '/';
	}
	bpf_probe_read_kernel_str(s->event.cwd, PATH_MAX, &s->path[w.pos & (PATH_MAX - 1)]);
}

static __always_inline int exit_exec(long ret)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct event *event = bpf_map_lookup_elem(&execs, &pid);
	struct scratch *s;
	__u32 zero = 0;
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
	if (len > EVENT_HEAD_SIZE)
		goto cleanup;
	if (!get_cwd) {
		gadget_output_buf(&events, event, len);
		goto cleanup;
	}
	s = bpf_map_lookup_elem(&heap, &zero);
	if (!s)
		goto cleanup;
	/* The part of the event in use, then the directory: the record is sent whole. */
	if (len > 0 && bpf_probe_read_kernel(&s->event, len, event))
		goto cleanup;
	read_cwd(s);
	gadget_output_buf(&events, &s->event, sizeof(s->event));
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
