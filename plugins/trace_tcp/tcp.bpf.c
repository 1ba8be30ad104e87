// SPDX-License-Identifier: GPL-2.0
/*
 * trace tcp: connect, accept and close of TCP sockets, with the process that owns them.
 *
 * Without kprobes, the owner is taken where it runs itself: the CLOSE -> SYN_SENT transition
 * of sock/inet_sock_set_state happens inside connect(), and accept() returns the new socket's
 * fd to its caller. Both record the owner by socket address; later transitions (the handshake
 * completing in softirq, a close) use that record, never the task that happens to be current.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/connection.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "tcp.h"

#define IPPROTO_TCP 6
#define ECONNABORTED 103

const volatile bool connect_only = false;
const volatile bool accept_only = false;
const volatile bool failure_only = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* struct sock * */
	__type(value, struct gadget_process); /* the owner */
} owners SEC(".maps");

/* Sockets whose connect() is under way, for the SYN_SENT transitions. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} connecting SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(tcp, events, event);


/* Send one event, its endpoints from the tracepoint when there is one, else from the socket. */
static __always_inline void emit(struct trace_event_raw_inet_sock_set_state *ctx, struct sock *sk,
				 const struct gadget_process *o, __u8 op, __u16 error)
{
	struct event *e = gadget_reserve_buf(&events, sizeof(*e));
	bool ok;

	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	ok = ctx ? gadget_connection_from_tp(&e->conn, ctx) : gadget_connection_from_sock(&e->conn, sk);
	if (!ok) {
		bpf_ringbuf_discard(e, 0);
		return;
	}
	e->timestamp = bpf_ktime_get_boot_ns();
	e->operation = op;
	e->error = error;
	e->proc = *o;
	gadget_submit_buf(&events, e);
}

SEC("tracepoint/sock/inet_sock_set_state")
int ig_tcp_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 skaddr = (__u64)ctx->skaddr;
	struct sock *sk = (struct sock *)ctx->skaddr;
	int oldstate = ctx->oldstate, newstate = ctx->newstate;
	struct gadget_process owner = {}, *o;
	__u8 one = 1;
	__u16 error;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		/* Inside connect(): the current task is the owner. */
		gadget_process_populate(&owner);
		if (gadget_should_discard_mntns_id(owner.mntns_id))
			return 0;
		bpf_map_update_elem(&owners, &skaddr, &owner, BPF_ANY);
		bpf_map_update_elem(&connecting, &skaddr, &one, BPF_ANY);
		return 0;
	}

	o = bpf_map_lookup_elem(&owners, &skaddr);
	if (oldstate == TCP_SYN_SENT && bpf_map_lookup_elem(&connecting, &skaddr)) {
		bpf_map_delete_elem(&connecting, &skaddr);
		if (newstate == TCP_ESTABLISHED) {
			if (!accept_only && !failure_only && o)
				emit(ctx, sk, o, TCP_OP_CONNECT, 0);
		} else if (newstate == TCP_CLOSE) {
			/* The handshake failed: the reset or timeout left its errno in sk_err; a
			 * socket its caller closed before any answer has none. */
			error = BPF_CORE_READ(sk, sk_err);
			if (!accept_only && o)
				emit(ctx, sk, o, TCP_OP_CONNECT, error ? error : ECONNABORTED);
			bpf_map_delete_elem(&owners, &skaddr);
		}
		return 0;
	}

	/* Our side closing an open connection (close(), shutdown() or a reset). */
	if ((oldstate == TCP_ESTABLISHED || oldstate == TCP_CLOSE_WAIT) &&
	    (newstate == TCP_FIN_WAIT1 || newstate == TCP_LAST_ACK || newstate == TCP_CLOSE)) {
		if (!connect_only && !accept_only && !failure_only && o &&
		    !gadget_should_discard_mntns_id(o->mntns_id))
			emit(ctx, sk, o, TCP_OP_CLOSE, 0);
	}
	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&owners, &skaddr);
	return 0;
}

static __always_inline struct sock *sock_of_fd(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
	struct file *file = NULL;
	struct socket *socket;

	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	socket = BPF_CORE_READ(file, private_data);
	return socket ? BPF_CORE_READ(socket, sk) : NULL;
}

static __always_inline int exit_accept(long ret)
{
	struct gadget_process owner = {};
	struct sock *sk;
	__u64 skaddr;

	if (ret < 0 || connect_only || failure_only)
		return 0;
	gadget_process_populate(&owner);
	if (gadget_should_discard_mntns_id(owner.mntns_id))
		return 0;
	sk = sock_of_fd(ret);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	skaddr = (__u64)sk;
	bpf_map_update_elem(&owners, &skaddr, &owner, BPF_ANY);
	emit(NULL, sk, &owner, TCP_OP_ACCEPT, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int ig_accept4_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int ig_accept_x(struct trace_event_raw_sys_exit *ctx)
{
	return exit_accept(ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
