// SPDX-License-Identifier: GPL-2.0
/*
 * A socket filter for one network namespace: it sees every TCP SYN to `port` that enters the
 * namespace and sends its addresses, tagged with `netns` (the namespace's inode, set per
 * copy: one copy of this object is loaded for each container the gadget is attached to).
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define PACKET_HOST 0
#define TCP_SYN 0x02
#define TCP_ACK 0x10

const volatile __u64 netns = 0;
const volatile __u16 port = 0;

struct event {
	__u64 netns;
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u32 ifindex;
};

GADGET_RINGBUF(events);
GADGET_TRACER(netnssyn, events, event);

SEC("socket")
int syn_filter(struct __sk_buff *skb)
{
	struct event *e;
	__u8 vhl, proto, flags;
	__u16 ports[2];
	__u32 addrs[2];
	__u32 ihl;

	if (skb->pkt_type != PACKET_HOST || skb->protocol != bpf_htons(ETH_P_IP))
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &vhl, 1) || bpf_skb_load_bytes(skb, ETH_HLEN + 9, &proto, 1))
		return 0;
	if (proto != IPPROTO_TCP)
		return 0;
	ihl = (vhl & 0xf) * 4;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + 12, addrs, sizeof(addrs)) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + ihl, ports, sizeof(ports)) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + ihl + 13, &flags, 1))
		return 0;
	if (bpf_ntohs(ports[1]) != port || (flags & (TCP_SYN | TCP_ACK)) != TCP_SYN)
		return 0;
	e = gadget_reserve_buf(&events, sizeof(*e));
	if (!e)
		return 0;
	e->netns = netns;
	e->saddr = addrs[0];
	e->daddr = addrs[1];
	e->sport = bpf_ntohs(ports[0]);
	e->dport = bpf_ntohs(ports[1]);
	e->ifindex = skb->ifindex;
	gadget_submit_buf(&events, e);
	return 0; /* nothing is queued on the gadget's own socket */
}

char LICENSE[] SEC("license") = "GPL";
