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
#include <igrun/mntns_filter.h>

#include "tcp.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define ECONNABORTED 103

const volatile bool connect_only = false;
const volatile bool accept_only = false;
const volatile bool failure_only = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* struct sock * */
	__type(value, struct owner);
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

static __always_inline void current_owner(struct owner *o, __u64 mntns_id)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	o->mntns_id = mntns_id;
	o->pid = id >> 32;
	o->tid = (__u32)id;
	o->uid = (__u32)uid_gid;
	o->gid = uid_gid >> 32;
	bpf_get_current_comm(&o->comm, sizeof(o->comm));
}

/* Addresses and ports straight from the socket (host-order local port, network-order peer).
 * BPF_CORE_READ_INTO reads sizeof(*dst) bytes: its destination is a pointer to the whole
 * array (16 bytes), never the array itself, which decays to a pointer to its first byte. */
static __always_inline bool fill_from_sock(struct event *e, struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family == AF_INET) {
		e->ipversion = 4;
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	} else if (family == AF_INET6) {
		_Static_assert(sizeof(e->saddr) == sizeof(struct in6_addr), "a whole IPv6 address");
		e->ipversion = 6;
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		return false;
	}
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	return true;
}

/* Addresses as the tracepoint saw them (a failed connect has already cleared the socket's);
 * read, not dereferenced: the verifier allows only fixed offsets into the context. */
static __always_inline bool fill_from_ctx(struct event *e,
					  struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->family == AF_INET) {
		e->ipversion = 4;
		bpf_probe_read_kernel(e->saddr, 4, ctx->saddr);
		bpf_probe_read_kernel(e->daddr, 4, ctx->daddr);
	} else if (ctx->family == AF_INET6) {
		e->ipversion = 6;
		bpf_probe_read_kernel(e->saddr, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(e->daddr, 16, ctx->daddr_v6);
	} else {
		return false;
	}
	e->sport = ctx->sport;
	e->dport = ctx->dport;
	return true;
}

/* Send one event, its endpoints from the tracepoint when there is one, else from the socket. */
static __always_inline void emit(struct trace_event_raw_inet_sock_set_state *ctx, struct sock *sk,
				 const struct owner *o, __u8 op, __u16 error)
{
	struct event *e = gadget_reserve_buf(&events, sizeof(*e));
	bool ok;

	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	ok = ctx ? fill_from_ctx(e, ctx) : fill_from_sock(e, sk);
	if (!ok) {
		bpf_ringbuf_discard(e, 0);
		return;
	}
	e->timestamp = bpf_ktime_get_boot_ns();
	e->operation = op;
	e->error = error;
	e->mntns_id = o->mntns_id;
	e->pid = o->pid;
	e->tid = o->tid;
	e->uid = o->uid;
	e->gid = o->gid;
	__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
	gadget_submit_buf(&events, e);
}

SEC("tracepoint/sock/inet_sock_set_state")
int ig_tcp_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 skaddr = (__u64)ctx->skaddr;
	struct sock *sk = (struct sock *)ctx->skaddr;
	int oldstate = ctx->oldstate, newstate = ctx->newstate;
	struct owner owner = {}, *o;
	__u8 one = 1;
	__u16 error;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		/* Inside connect(): the current task is the owner. */
		__u64 mntns_id = gadget_get_mntns_id();

		if (gadget_should_discard_mntns_id(mntns_id))
			return 0;
		current_owner(&owner, mntns_id);
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
	__u64 mntns_id = gadget_get_mntns_id();
	struct owner owner = {};
	struct sock *sk;
	__u64 skaddr;

	if (ret < 0 || connect_only || failure_only)
		return 0;
	if (gadget_should_discard_mntns_id(mntns_id))
		return 0;
	sk = sock_of_fd(ret);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	current_owner(&owner, mntns_id);
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
