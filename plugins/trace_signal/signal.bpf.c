// SPDX-License-Identifier: GPL-2.0
/*
 * trace signal: one event per signal sent, by whom, to whom, and whether sending it worked.
 *
 * signal/signal_generate fires for every signal the kernel generates, whoever asks: a process
 * with kill(), tkill(), tgkill(), rt_sigqueueinfo() ..., or the kernel itself (SIGCHLD,
 * SIGSEGV, SIGPIPE, timers). It fires in the sender's context, so the current task is the
 * sender, and it names the target task.
 *
 * It does not fire for a kill() that fails (no such process, not allowed, bad signal) nor for
 * signal 0, and it cannot tell what the syscall returned. So the kill, tkill and tgkill
 * syscalls are traced too: the enter side records the send per thread, a signal_generate in
 * that thread for that signal fills in the real target, and the exit side sends the record
 * with the syscall's return value. Every other generated signal is sent at once.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "signal.h"

#define EAGAIN 11
/* signal_generate's result when a real-time signal could not be queued (the sender gets
 * -EAGAIN). TRACE_SIGNAL_OVERFLOW_FAIL is in an anonymous enum, which CO-RE cannot name. */
#define SIGNAL_OVERFLOW_FAIL 3

const volatile __s32 filtered_pid = 0;
const volatile __s32 target_signal = 0;
const volatile bool failed_only = false;
const volatile bool kill_only = false;

/* A kill, tkill or tgkill in progress, keyed by thread, until the syscall returns. */
struct pending {
	struct event event;
	__u32 generated; /* signal_generate saw the syscall's signal */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u64);
	__type(value, struct pending);
} sends SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(signal, events, event);

/* The current task as the sender of `sig`; false when a filter leaves it out. */
static __always_inline bool fill_sender(struct event *e, int sig)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;

	if (gadget_should_discard_mntns_id(gadget_get_mntns_id()))
		return false;
	if (target_signal && sig != target_signal)
		return false;
	if (filtered_pid && pid != filtered_pid)
		return false;

	e->timestamp = bpf_ktime_get_boot_ns();
	gadget_process_populate(&e->proc);
	e->sig = sig;
	return true;
}

static __always_inline int enter_kill(pid_t tpid, int sig)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending p = {};

	if (!fill_sender(&p.event, sig))
		return 0;
	p.event.tpid = tpid;
	bpf_map_update_elem(&sends, &id, &p, BPF_ANY);
	return 0;
}

static __always_inline int exit_kill(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&sends, &id);

	if (!p)
		return 0;
	if (!failed_only || ret < 0) {
		p->event.ret = ret;
		gadget_output_buf(&events, &p->event, sizeof(p->event));
	}
	bpf_map_delete_elem(&sends, &id);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_kill")
int ig_sig_kill_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_kill((pid_t)ctx->args[0], (int)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_kill")
int ig_sig_kill_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_kill(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_tkill")
int ig_sig_tkill_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_kill((pid_t)ctx->args[0], (int)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_tkill")
int ig_sig_tkill_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_kill(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_tgkill")
int ig_sig_tgkill_e(struct trace_event_raw_sys_enter *ctx)
{
	return enter_kill((pid_t)ctx->args[1], (int)ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_tgkill")
int ig_sig_tgkill_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_kill(ctx->ret);
}

SEC("tracepoint/signal/signal_generate")
int ig_sig_generate(struct trace_event_raw_signal_generate *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&sends, &id);
	struct event event = {};
	int sig = ctx->sig;

	if (p && p->event.sig == sig) {
		if (!p->generated) {
			/* The syscall's own signal: the target is the task it reached (a host
			 * pid, where the argument was one of the sender's pid namespace). */
			p->generated = 1;
			p->event.tpid = ctx->pid;
			return 0;
		}
		/* One more process of a group (kill(-pgid), kill(-1)), sent now: kill() returns 0
		 * once any of them got the signal. Same time as the others: the call's. */
		if (failed_only)
			return 0;
		__builtin_memcpy(&event, &p->event, sizeof(event));
		event.tpid = ctx->pid;
		event.ret = 0;
		gadget_output_buf(&events, &event, sizeof(event));
		return 0;
	}

	if (kill_only)
		return 0;
	event.ret = ctx->result == SIGNAL_OVERFLOW_FAIL ? -EAGAIN : 0;
	if (failed_only && event.ret == 0)
		return 0;
	if (!fill_sender(&event, sig))
		return 0;
	event.tpid = ctx->pid;
	gadget_output_buf(&events, &event, sizeof(event));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
