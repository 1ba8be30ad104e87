// SPDX-License-Identifier: GPL-2.0
/*
 * trace tcpdrop: TCP segments the kernel dropped, with the reason, from skb/kfree_skb. The
 * addresses and flags come from the dropped packet's own headers; the owner from the socket
 * enricher when the packet belongs to a socket (egress, or after the socket lookup on
 * ingress). A drop before any socket was found has no owner, and the event says so.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/tcp_event.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6

GADGET_RINGBUF(events);
GADGET_TRACER(tcpdrop, events, tcp_event);

/* Addresses, ports and flags from the packet; false when it is not a readable TCP segment. */
/* proto: the tracepoint's, in host byte order */
static __always_inline bool read_segment(struct tcp_event *e, struct sk_buff *skb, __u16 proto)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 network = BPF_CORE_READ(skb, network_header);
	__u16 transport;
	struct tcphdr tcp;
	__u8 flags;

	if (proto == ETH_P_IP) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + network) || ip.protocol != IPPROTO_TCP)
			return false;
		e->conn.ipversion = 4;
		__builtin_memcpy(e->conn.saddr, &ip.saddr, 4);
		__builtin_memcpy(e->conn.daddr, &ip.daddr, 4);
		transport = network + ip.ihl * 4;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + network) ||
		    ip6.nexthdr != IPPROTO_TCP)
			return false;
		e->conn.ipversion = 6;
		__builtin_memcpy(e->conn.saddr, &ip6.saddr, 16);
		__builtin_memcpy(e->conn.daddr, &ip6.daddr, 16);
		transport = network + sizeof(ip6);
	} else {
		return false;
	}
	if (bpf_probe_read_kernel(&tcp, sizeof(tcp), head + transport))
		return false;
	e->conn.sport = bpf_ntohs(tcp.source);
	e->conn.dport = bpf_ntohs(tcp.dest);
	if (bpf_probe_read_kernel(&flags, 1, head + transport + 13)) /* the flags byte */
		return false;
	e->tcpflags = flags;
	return true;
}

SEC("tracepoint/skb/kfree_skb")
int ig_tcpdrop(struct trace_event_raw_kfree_skb *ctx)
{
	struct sk_buff *skb = ctx->skbaddr;
	struct sock *sk;
	struct tcp_event *e;

	if (ctx->protocol != ETH_P_IP && ctx->protocol != ETH_P_IPV6)
		return 0;
	e = gadget_reserve_buf(&events, sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	if (!read_segment(e, skb, ctx->protocol))
		goto discard;
	sk = BPF_CORE_READ(skb, sk);
	if (!sk)
		sk = ctx->rx_sk;
	if (!tcp_event_owner(e, sk))
		goto discard;
	if (sk)
		e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	e->timestamp = bpf_ktime_get_boot_ns();
	e->reason = ctx->reason;
	gadget_submit_buf(&events, e);
	return 0;
discard:
	bpf_ringbuf_discard(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
