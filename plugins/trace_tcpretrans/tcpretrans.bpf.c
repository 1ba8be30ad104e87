// SPDX-License-Identifier: GPL-2.0
/*
 * trace tcpretrans: every TCP retransmission, from tcp/tcp_retransmit_skb. The tracepoint
 * fires from the retransmit timer as often as from the owner, so the process comes from the
 * socket enricher, by the socket's cookie.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/tcp_event.h>

GADGET_RINGBUF(events);
GADGET_TRACER(tcpretrans, events, tcp_event);

SEC("tracepoint/tcp/tcp_retransmit_skb")
int ig_tcpretrans(struct trace_event_raw_tcp_retransmit_skb *ctx)
{
	const struct sock *sk = ctx->skaddr;
	struct tcp_event *e;

	if (ctx->family != GADGET_AF_INET && ctx->family != GADGET_AF_INET6)
		return 0;
	e = gadget_reserve_buf(&events, sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	if (!tcp_event_owner(e, sk)) {
		bpf_ringbuf_discard(e, 0);
		return 0;
	}
	e->timestamp = bpf_ktime_get_boot_ns();
	gadget_connection_from_tp(&e->conn, ctx);
	e->state = ctx->state;
	e->tcpflags = tcp_skb_flags(ctx->skbaddr);
	gadget_submit_buf(&events, e);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
