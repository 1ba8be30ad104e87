// SPDX-License-Identifier: GPL-2.0
/*
 * trace open: one event per open, openat and openat2, with its flags, mode, path and result.
 *
 * The enter tracepoints keep the arguments per thread; the exit tracepoints read the path
 * (by then the kernel has copied it, so its page is present and the read does not fail), add
 * the result, apply --failed and --prefixes, and send the record trimmed to the strings it
 * holds.
 *
 * --full-path is built here, without kprobes or bpf_d_path: a relative path is joined to the
 * directory it is relative to (the task's working directory, or the directory of openat's
 * dirfd), whose name comes from walking its dentries up to the task's root, crossing mounts,
 * in a bounded loop. ".." and symbolic links are kept as written: the kernel resolves them,
 * and resolving them again here could only guess.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "open.h"

#define AT_FDCWD -100
#define O_CREAT 0100
#define __O_TMPFILE 020000000
#define S_IALLUGO 07777
#define NAME_MAX 255
/* Enough steps for the shortest components ("a/") to fill PATH_MAX: only room limits a name. */
#define MAX_PATH_DEPTH (PATH_MAX / 2)
#define CHAR_BIT 8

const volatile bool targ_failed = false;
const volatile bool get_full_path = false;
const volatile __u32 prefixes_nr = 0;

/* What the enter tracepoint saw, for the exit tracepoint of the same thread. */
struct args {
	const char *fname;
	const struct open_how *how; /* openat2: flags and mode are read from it at exit */
	__s64 flags;
	__u64 mode;
	int dfd;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32); /* thread id */
	__type(value, struct args);
} start SEC(".maps");

/* The --prefixes, filled by igrun after load; with prefixes_nr == 0 it is not consulted. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_PREFIXES);
	__type(key, struct prefix_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} prefixes SEC(".maps");

/* Room too big for the 512-byte stack: the event being built, the full path being joined
 * (the directory written backwards to end at PATH_MAX, the relative path right after it) and
 * the prefix filter's key. */
struct scratch {
	struct event event;
	char path[PATH_MAX * 2];
	struct prefix_key key;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} heap SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(open, events, event);

static __always_inline int enter_open(int dfd, const char *fname, __s64 flags, __u64 mode,
				      const struct open_how *how)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct args args = {
		.fname = fname,
		.how = how,
		.flags = flags,
		.mode = mode,
		.dfd = dfd,
	};

	if (gadget_should_discard_mntns_id(gadget_get_mntns_id()))
		return 0;
	bpf_map_update_elem(&start, &tid, &args, BPF_ANY);
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

/* Where the walk up a directory's dentries is; bpf_loop carries it from one step to the next
 * (one verified step instead of MAX_PATH_DEPTH unrolled ones, whose branches the verifier
 * could not explore in time). */
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

/*
 * Write the name of directory base, then "/", so that they end at path[PATH_MAX] (where the
 * relative path goes); return where the name starts, or -1 when it does not fit. Stops at the
 * task's root, as d_path does, so a process in a container or a chroot sees its own paths.
 */
static __always_inline int dir_name(struct scratch *s, struct path *base, struct path *root)
{
	struct walk w = {
		.dentry = base->dentry,
		.vfsmnt = base->mnt,
		.mnt = container_of(base->mnt, struct mount, mnt),
		.root_dentry = root->dentry,
		.root_mnt = root->mnt,
		.pos = PATH_MAX - 1,
	};

	s->path[PATH_MAX - 1] = '/';
	bpf_loop(MAX_PATH_DEPTH, walk_step, &w, 0);
	if (!w.done)
		return -1;
	return w.pos & (PATH_MAX - 1);
}

/* Write the full path of path (the NUL-terminated string at e->strings) at e->strings[off];
 * return its size with the NUL. */
static __always_inline long full_path(struct scratch *s, __u32 off, int dfd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct event *e = &s->event;
	struct path base, root;
	struct file *file;
	int pos;

	if (off > PATH_MAX)
		return 0;
	if (e->strings[0] != '/') {
		if (dfd == AT_FDCWD) {
			base = BPF_CORE_READ(task, fs, pwd);
		} else {
			file = fd_file(task, dfd);
			if (!file)
				goto as_is; /* openat fails with EBADF: nothing to join */
			base = BPF_CORE_READ(file, f_path);
		}
		root = BPF_CORE_READ(task, fs, root);
		pos = dir_name(s, &base, &root);
		if (pos < 0)
			goto as_is; /* a directory name longer than PATH_MAX: left relative */
		bpf_probe_read_kernel_str(&s->path[PATH_MAX], PATH_MAX, e->strings);
		return bpf_probe_read_kernel_str(&e->strings[off], PATH_MAX,
						 &s->path[pos & (PATH_MAX - 1)]);
	}
as_is:
	return bpf_probe_read_kernel_str(&e->strings[off], PATH_MAX, e->strings);
}

/* Whether path starts with one of --prefixes (always, when there are none). */
static __always_inline bool prefix_allowed(struct scratch *s, const char *path)
{
	if (!prefixes_nr)
		return true;
	s->key.prefixlen = PREFIX_MAX * CHAR_BIT;
	/* Bytes past the NUL do not matter: no prefix holds a NUL, so none matches past it. */
	if (bpf_probe_read_kernel(s->key.path, PREFIX_MAX, path))
		return false;
	return bpf_map_lookup_elem(&prefixes, &s->key) != NULL;
}

static __always_inline int exit_open(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct scratch *s;
	struct event *e;
	struct args *ap;
	struct open_how how;
	__u32 zero = 0;
	long len, full;
	__u32 off;

	ap = bpf_map_lookup_elem(&start, &tid);
	if (!ap)
		return 0; /* the enter was filtered out, or happened before we attached */
	if (targ_failed && ret >= 0)
		goto cleanup;
	s = bpf_map_lookup_elem(&heap, &zero);
	if (!s)
		goto cleanup;
	e = &s->event;

	e->timestamp = bpf_ktime_get_boot_ns();
	gadget_process_populate(&e->proc);
	e->fd = ret >= 0 ? ret : 0;
	e->err = ret >= 0 ? 0 : -ret;

	e->flags = ap->flags;
	e->mode = ap->mode;
	if (ap->how && !bpf_probe_read_user(&how, sizeof(how), ap->how)) {
		e->flags = how.flags;
		e->mode = how.mode;
	}
	/* As the kernel: the mode only counts when a file may be created. */
	if (e->flags & (O_CREAT | __O_TMPFILE))
		e->mode &= S_IALLUGO;
	else
		e->mode = 0;

	len = bpf_probe_read_user_str(e->strings, PATH_MAX, ap->fname);
	if (len <= 0) {
		e->strings[0] = '\0';
		len = 1;
	}
	e->path_len = len;
	e->full_len = 0;

	if (get_full_path && len <= PATH_MAX) {
		/* The full path goes right after the path: at most PATH_MAX bytes at an offset of at
		 * most PATH_MAX, inside strings[PATH_MAX * 2]. */
		off = len;
		full = full_path(s, off, ap->dfd);
		if (full <= 0) {
			e->strings[off] = '\0';
			full = 1;
		}
		e->full_len = full;
		if (!prefix_allowed(s, &e->strings[off]))
			goto cleanup;
	} else if (!prefix_allowed(s, e->strings)) {
		goto cleanup;
	}

	len = EVENT_SIZE(e);
	if (len <= sizeof(*e))
		gadget_output_buf(&events, e, len);
cleanup:
	bpf_map_delete_elem(&start, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_open")
int ig_open_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_open(AT_FDCWD, (const char *)ctx->args[0], ctx->args[1], ctx->args[2], NULL);
}

SEC("tracepoint/syscalls/sys_exit_open")
int ig_open_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_open(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int ig_openat_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_open(ctx->args[0], (const char *)ctx->args[1], ctx->args[2], ctx->args[3],
			  NULL);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int ig_openat_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_open(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int ig_openat2_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_open(ctx->args[0], (const char *)ctx->args[1], 0, 0,
			  (const struct open_how *)ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int ig_openat2_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_open(ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
