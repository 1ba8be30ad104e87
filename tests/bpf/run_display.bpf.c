// SPDX-License-Identifier: GPL-2.0
/*
 * A bare object that says in C how its members show (igrun/display.h): an errno, a file
 * mode, flag bits, a duration, a signal, a uid (and a user and group by name), a long path with a wide column and a hidden
 * member. Every getppid() of target_pid sends one event per program that is loaded, with
 * fixed values, so a test knows each one in advance. One program attaches to a tracepoint
 * no kernel has: `igrun run` must skip it. The ring buffers are declared by hand, without
 * igrun's lost counter, and there are two tracers: the run must be told which to read.
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

#include <igrun/display.h>
#include <igrun/macros.h>

const volatile __u32 target_pid = 0;
GADGET_PARAM(target_pid);

/* A struct-valued constant: set whole (as bytes) by a BpfTracer's constants(). */
struct igrt_config {
	__u32 uid;
	__u32 pad;
	__u64 secret;
};
const volatile struct igrt_config igrt_config = { .uid = 1234, .secret = 42 };

enum igrt_access {
	IGRT_NONE = 0,
	IGRT_READ = 1,
	IGRT_WRITE = 2,
	IGRT_EXEC = 4,
};

struct event {
	__u32 pid;
	__u32 which; /* 1: igrt_display_a, 2: igrt_display_b */
	gadget_errno error_raw;
	gadget_file_mode mode;
	enum igrt_access access GADGET_FLAGS GADGET_WIDTH(24);
	gadget_duration took;
	gadget_signal sig;
	char path[64] GADGET_WIDTH(40);
	__u64 secret GADGET_HIDDEN;
	gadget_uid uid;
	gadget_uid user_raw; /* root: shown as user, its name */
	gadget_gid group_raw;
};

struct small {
	__u32 pid;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096 * 4);
} others SEC(".maps");

GADGET_TRACER(display, events, event);
GADGET_TRACER(other, others, small);

static const char long_path[] = "/tmp/igrun-display/a-path-longer-than-16";

static int send(__u32 which)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct event *e;

	if (pid != target_pid)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = pid;
	e->which = which;
	e->error_raw = -2; /* -ENOENT, as a syscall returns it */
	e->mode = 0640;
	e->access = IGRT_READ | IGRT_EXEC | 8; /* 8: a bit no enumerator names */
	e->took = 1500000;
	e->sig = 9;
	e->uid = igrt_config.uid;
	__builtin_memcpy(e->path, long_path, sizeof(long_path));
	e->secret = igrt_config.secret;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_display_a(void *ctx)
{
	return send(1);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_display_b(void *ctx)
{
	return send(2);
}

SEC("tracepoint/syscalls/sys_enter_igrun_no_such_call")
int igrt_display_missing(void *ctx)
{
	return send(3);
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int igrt_display_other(void *ctx)
{
	struct small *s = bpf_ringbuf_reserve(&others, sizeof(*s), 0);

	if (!s)
		return 0;
	s->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_ringbuf_submit(s, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
