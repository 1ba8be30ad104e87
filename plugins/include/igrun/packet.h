/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Packet gadgets: one socket filter, attached to a raw packet socket in each selected network
 * namespace (igrun.plugins._packet.PacketTracer), reads every packet that enters or leaves the
 * namespace, with its Ethernet header first. This header parses the IPv4/IPv6 and TCP/UDP
 * headers of such a packet, and names the process that owns the packet's local socket.
 *
 * A packet socket's copy of a packet has no socket (skb->sk is NULL, the cookie 0), so the
 * owner is looked up by (network namespace, protocol, local port) in gadget_packet_owners.
 * That map is filled, in the owner's favour, by programs of the same object that the gadget
 * attaches to the cgroup v2 root (GADGET_PACKET_OWNER_PROGRAMS):
 *   - cgroup_skb/egress: every packet a local socket sends passes there before it reaches the
 *     packet sockets; the owner comes from the socket enricher's gadget_sockets (by the
 *     socket's cookie, recorded in the owner's own context), so a query's own packet already
 *     finds its owner, and the response, which arrives on the same port, finds it too;
 *   - cgroup/post_bind4, post_bind6: a server that binds after the start is known before its
 *     first packet arrives;
 *   - an iter/task_file pass at start: every socket that is already open.
 * The map is an LRU: a port a socket no longer uses is forgotten when room is needed, and the
 * next socket to send from it takes it over.
 */
#ifndef IGRUN_PACKET_H
#define IGRUN_PACKET_H

#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <igrun/connection.h>
#include <igrun/process.h>
#include <igrun/sockets.h>

#define GADGET_ETH_HLEN 14
#define GADGET_ETH_P_IP 0x0800
#define GADGET_ETH_P_IPV6 0x86DD
#define GADGET_PACKET_HOST 0
#define GADGET_PACKET_OUTGOING 4
#define GADGET_IPPROTO_TCP 6
#define GADGET_IPPROTO_UDP 17
#define GADGET_PACKET_OWNERS 65536

extern void *bpf_cast_to_kern_ctx(void *) __ksym;

struct gadget_packet_owner_key {
	__u32 netns;
	__u16 port; /* host order */
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GADGET_PACKET_OWNERS);
	__type(key, struct gadget_packet_owner_key);
	__type(value, struct gadget_process);
} gadget_packet_owners SEC(".maps");

/* A packet's headers, as gadget_packet_parse() found them. */
struct gadget_packet {
	struct gadget_connection conn; /* source and destination as the packet has them */
	__u32 netns;                   /* network namespace of the device it passes */
	__u32 payload;                 /* offset of the TCP or UDP payload */
	__u32 len;                     /* the packet's length */
	__u8 proto;                    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pkt_type;                 /* PACKET_HOST, PACKET_OUTGOING ... */
};

/* The network namespace of the device a packet passes (the namespace the socket is in). */
static __always_inline __u32 gadget_packet_netns(struct __sk_buff *skb)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	struct net_device *dev = kskb->dev;

	return dev ? dev->nd_net.net->ns.inum : 0;
}

/* Parse Ethernet, IPv4 or IPv6 (no extension headers), and TCP or UDP. False for anything
 * else, a fragment after the first, or a packet too short for its headers. A global function:
 * the verifier checks it once, not once for every path of its caller. */
__attribute__((noinline)) bool gadget_packet_parse(struct __sk_buff *skb, struct gadget_packet *p)
{
	__u32 l4;
	__u8 b;

	if (!p)
		return false;
	p->len = skb->len;
	p->pkt_type = skb->pkt_type;
	if (skb->protocol == bpf_htons(GADGET_ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, GADGET_ETH_HLEN, &ip, sizeof(ip)))
			return false;
		if (ip.ihl < 5 || (bpf_ntohs(ip.frag_off) & 0x1fff))
			return false;
		p->conn.ipversion = 4;
		__builtin_memcpy(p->conn.saddr, &ip.saddr, 4);
		__builtin_memcpy(p->conn.daddr, &ip.daddr, 4);
		p->proto = ip.protocol;
		l4 = GADGET_ETH_HLEN + ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(GADGET_ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, GADGET_ETH_HLEN, &ip6, sizeof(ip6)))
			return false;
		p->conn.ipversion = 6;
		__builtin_memcpy(p->conn.saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->conn.daddr, &ip6.daddr, 16);
		p->proto = ip6.nexthdr;
		l4 = GADGET_ETH_HLEN + sizeof(ip6);
	} else {
		return false;
	}
	if (p->proto == GADGET_IPPROTO_UDP) {
		struct udphdr udp;

		if (bpf_skb_load_bytes(skb, l4, &udp, sizeof(udp)))
			return false;
		p->conn.sport = bpf_ntohs(udp.source);
		p->conn.dport = bpf_ntohs(udp.dest);
		p->payload = l4 + sizeof(udp);
	} else if (p->proto == GADGET_IPPROTO_TCP) {
		struct tcphdr tcp;

		if (bpf_skb_load_bytes(skb, l4, &tcp, sizeof(tcp)))
			return false;
		p->conn.sport = bpf_ntohs(tcp.source);
		p->conn.dport = bpf_ntohs(tcp.dest);
		if (bpf_skb_load_bytes(skb, l4 + 12, &b, 1))
			return false;
		p->payload = l4 + (b >> 4) * 4;
	} else {
		return false;
	}
	p->netns = gadget_packet_netns(skb);
	return true;
}

/* The process that owns the packet's local socket (the source port of an outgoing packet,
 * the destination port of any other), or NULL when none is known. */
static __always_inline const struct gadget_process *
gadget_packet_owner(const struct gadget_packet *p)
{
	struct gadget_packet_owner_key key = {
		.netns = p->netns,
		.proto = p->proto,
		.port = p->pkt_type == GADGET_PACKET_OUTGOING ? p->conn.sport : p->conn.dport,
	};

	return bpf_map_lookup_elem(&gadget_packet_owners, &key);
}

static __always_inline void gadget_packet_remember(__u32 netns, __u8 proto, __u16 port,
						   const struct gadget_process *owner)
{
	struct gadget_packet_owner_key key = { .netns = netns, .proto = proto, .port = port };
	const struct gadget_process *known;

	if (!port || (proto != GADGET_IPPROTO_TCP && proto != GADGET_IPPROTO_UDP))
		return;
	/* Most packets come from the owner already recorded: no write for them. */
	known = bpf_map_lookup_elem(&gadget_packet_owners, &key);
	if (known && known->tid == owner->tid && known->mntns_id == owner->mntns_id &&
	    *(const __u64 *)known->comm == *(const __u64 *)owner->comm &&
	    *(const __u64 *)(known->comm + 8) == *(const __u64 *)(owner->comm + 8))
		return;
	bpf_map_update_elem(&gadget_packet_owners, &key, owner, BPF_ANY);
}

static __always_inline __u32 gadget_current_netns(void)
{
	struct task_struct *task = bpf_get_current_task_btf();

	return task->nsproxy->net_ns->ns.inum;
}

/*
 * The programs that keep gadget_packet_owners, for a packet gadget's object to declare once.
 * They never refuse anything (return 1).
 */
#define GADGET_PACKET_OWNER_PROGRAMS                                                            \
	SEC("cgroup_skb/egress")                                                               \
	int ig_packet_owner_egress(struct __sk_buff *skb)                                      \
	{                                                                                      \
		struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);                              \
		const struct gadget_process *owner;                                            \
		struct sock *sk = kskb->sk;                                                    \
		__u64 cookie;                                                                  \
                                                                                               \
		if (!sk)                                                                       \
			return 1;                                                              \
		cookie = bpf_get_socket_cookie(skb);                                           \
		owner = bpf_map_lookup_elem(&gadget_sockets, &cookie);                         \
		if (!owner) { /* found at start without a cookie: keyed by its address */     \
			cookie = (__u64)sk;                                                    \
			owner = bpf_map_lookup_elem(&gadget_sockets, &cookie);                 \
		}                                                                              \
		if (owner)                                                                     \
			gadget_packet_remember(sk->__sk_common.skc_net.net->ns.inum,           \
					       sk->sk_protocol, sk->__sk_common.skc_num,       \
					       owner);                                         \
		return 1;                                                                      \
	}                                                                                      \
                                                                                               \
	static __always_inline void gadget_packet_bound(struct bpf_sock *ctx)                  \
	{                                                                                      \
		struct gadget_process owner = {};                                              \
                                                                                               \
		gadget_process_populate(&owner);                                               \
		gadget_packet_remember(gadget_current_netns(), ctx->protocol, ctx->src_port,   \
				       &owner);                                                \
	}                                                                                      \
                                                                                               \
	SEC("cgroup/post_bind4")                                                               \
	int ig_packet_owner_bind4(struct bpf_sock *ctx)                                        \
	{                                                                                      \
		gadget_packet_bound(ctx);                                                      \
		return 1;                                                                      \
	}                                                                                      \
                                                                                               \
	SEC("cgroup/post_bind6")                                                               \
	int ig_packet_owner_bind6(struct bpf_sock *ctx)                                        \
	{                                                                                      \
		gadget_packet_bound(ctx);                                                      \
		return 1;                                                                      \
	}                                                                                      \
                                                                                               \
	SEC("iter/task_file")                                                                  \
	int ig_packet_owner_existing(struct bpf_iter__task_file *ctx)                          \
	{                                                                                      \
		struct task_struct *task = ctx->task;                                          \
		struct gadget_packet_owner_key key = {};                                       \
		struct gadget_process owner = {};                                              \
		struct file *file = ctx->file;                                                 \
		struct socket *sock;                                                           \
		struct sock *sk;                                                               \
		__u16 family;                                                                  \
                                                                                               \
		if (!task || !file)                                                            \
			return 0;                                                              \
		if ((BPF_CORE_READ(file, f_inode, i_mode) & 00170000) != 0140000)              \
			return 0;                                                              \
		sock = bpf_sock_from_file(file);                                               \
		if (!sock)                                                                     \
			return 0;                                                              \
		sk = BPF_CORE_READ(sock, sk);                                                  \
		if (!sk)                                                                       \
			return 0;                                                              \
		family = BPF_CORE_READ(sk, __sk_common.skc_family);                            \
		if (family != GADGET_AF_INET && family != GADGET_AF_INET6)                     \
			return 0;                                                              \
		key.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);               \
		key.proto = BPF_CORE_READ(sk, sk_protocol);                                    \
		key.port = BPF_CORE_READ(sk, __sk_common.skc_num);                             \
		if (!key.port || bpf_map_lookup_elem(&gadget_packet_owners, &key))             \
			return 0; /* the first holder found wins: usually its maker */         \
		gadget_process_from_task(&owner, task);                                        \
		bpf_map_update_elem(&gadget_packet_owners, &key, &owner, BPF_NOEXIST);         \
		return 0;                                                                      \
	}

#endif
