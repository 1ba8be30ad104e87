// SPDX-License-Identifier: GPL-2.0
/*
 * trace unlink: one event per file or directory removed (unlink, unlinkat, rmdir), with the
 * path as passed, the directory it is relative to, the flags and the result.
 *
 * The enter tracepoints keep the arguments per thread; the exit tracepoints read the path (the
 * kernel copied it already, so its page is present and the read does not fail), add the
 * result and send the record. unlink(p) is unlinkat(AT_FDCWD, p, 0) and rmdir(p) is
 * unlinkat(AT_FDCWD, p, AT_REMOVEDIR), so all three make the same event. unlink and rmdir
 * are older syscalls that some architectures (arm64) do not have; x86_64 does.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "unlink.h"

#define AT_FDCWD -100
#define AT_REMOVEDIR 0x200

/* --failed, set by the gadget's constants() before the object loads. */
const volatile bool failed_only = false;

/* What the enter tracepoint saw, for the exit tracepoint of the same thread. */
struct args {
	const char *path;
	int dirfd;
	int flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32); /* thread id */
	__type(value, struct args);
} start SEC(".maps");

/* The event being built: too big for the 512-byte stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} heap SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(unlink, events, event);

static __always_inline int enter_unlink(int dirfd, const char *path, int flags)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct args args = {
		.path = path,
		.dirfd = dirfd,
		.flags = flags,
	};

	/* Filtered at enter: a task outside the selected containers never takes a map entry. */
	if (gadget_should_discard_mntns_id(gadget_get_mntns_id()))
		return 0;
	bpf_map_update_elem(&start, &tid, &args, BPF_ANY);
	return 0;
}

static __always_inline int exit_unlink(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 zero = 0;
	struct event *e;
	struct args *ap;
	long len;

	ap = bpf_map_lookup_elem(&start, &tid);
	if (!ap)
		return 0; /* the enter was filtered out, or happened before we attached */
	if (failed_only && ret >= 0)
		goto cleanup;
	e = bpf_map_lookup_elem(&heap, &zero);
	if (!e)
		goto cleanup;

	e->timestamp = bpf_ktime_get_boot_ns();
	gadget_process_populate(&e->proc);
	e->dirfd = ap->dirfd;
	e->flags = ap->flags;
	e->ret = ret;
	len = bpf_probe_read_user_str(e->path, sizeof(e->path), ap->path);
	if (len <= 0) {
		e->path[0] = '\0';
		len = 1;
	}
	len += __builtin_offsetof(struct event, path);
	if (len <= sizeof(*e))
		gadget_output_buf(&events, e, len);
cleanup:
	bpf_map_delete_elem(&start, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_unlinkat")
int ig_unlinkat_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_unlink((int)ctx->args[0], (const char *)ctx->args[1], (int)ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_unlinkat")
int ig_unlinkat_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_unlink(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_unlink")
int ig_unlink_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_unlink(AT_FDCWD, (const char *)ctx->args[0], 0);
}

SEC("tracepoint/syscalls/sys_exit_unlink")
int ig_unlink_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_unlink(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_rmdir")
int ig_rmdir_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_unlink(AT_FDCWD, (const char *)ctx->args[0], AT_REMOVEDIR);
}

SEC("tracepoint/syscalls/sys_exit_rmdir")
int ig_rmdir_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_unlink(ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
