// SPDX-License-Identifier: GPL-2.0
/*
 * top tcp: bytes sent and received per process and TCP connection, summed in a hash map that
 * igrun drains once per interval.
 *
 * Inspektor Gadget hooks tcp_sendmsg and tcp_cleanup_rbuf with kprobes. This uses the
 * sock/sock_send_length and sock/sock_recv_length tracepoints instead: the socket layer
 * raises them at the end of every sendmsg/recvmsg, in the task that called it, with the
 * socket, its family and protocol, and the byte count (or a negative errno). The current
 * task is then the process that moved the bytes, as with the kprobes.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/connection.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>
#include <igrun/top.h>

#include "tcptop.h"

#define IPPROTO_TCP 6
#define MSG_PEEK 2

const volatile __u32 target_pid = 0;   /* 0: every process */
const volatile int target_family = -1; /* -1: both; else AF_INET or AF_INET6 */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct tcptop_key);
	__type(value, struct tcptop_value);
} stats SEC(".maps");

GADGET_TOPPER(tcp, stats, tcptop_key, tcptop_value);

static __always_inline void count(struct trace_event_raw_sock_msg_length *ctx, bool receiving)
{
	struct sock *sk = (struct sock *)ctx->sk;
	struct tcptop_value zero = {}, *v;
	struct tcptop_key key;
	__u64 mntns_id;
	__u32 pid;

	if (ctx->protocol != IPPROTO_TCP || ctx->ret <= 0 || !sk)
		return;
	if (ctx->family != GADGET_AF_INET && ctx->family != GADGET_AF_INET6)
		return;
	if (target_family != -1 && ctx->family != target_family)
		return;
	pid = bpf_get_current_pid_tgid() >> 32;
	if (target_pid && pid != target_pid)
		return;
	mntns_id = gadget_get_mntns_id();
	if (gadget_should_discard_mntns_id(mntns_id))
		return;

	__builtin_memset(&key, 0, sizeof(key)); /* padding included: it is part of the key */
	key.proc.mntns_id = mntns_id;
	key.proc.pid = pid;
	bpf_get_current_comm(key.proc.comm, sizeof(key.proc.comm));
	if (!gadget_connection_from_sock(&key.conn, sk))
		return;

	v = gadget_stats_entry(&stats, &key, &zero);
	if (!v)
		return;
	if (receiving)
		__sync_fetch_and_add(&v->received, ctx->ret);
	else
		__sync_fetch_and_add(&v->sent, ctx->ret);
}

SEC("tracepoint/sock/sock_send_length")
int ig_toptcp_send(struct trace_event_raw_sock_msg_length *ctx)
{
	count(ctx, false);
	return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int ig_toptcp_recv(struct trace_event_raw_sock_msg_length *ctx)
{
	if (ctx->flags & MSG_PEEK) /* peeked bytes stay queued: counted when read */
		return 0;
	count(ctx, true);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
