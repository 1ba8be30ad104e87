/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The two endpoints of a TCP or UDP connection, declared once. An event struct embeds it as
 * a member, usually named `conn`; igrun.core.events.fields.connection_fields(member="conn") shows it
 * as `ip`, `src` and `dst` (with `src.addr`, `src.port` ... for filters and JSON), the way
 * every network gadget shows its endpoints.
 */
#ifndef IGRUN_CONNECTION_H
#define IGRUN_CONNECTION_H

#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define GADGET_AF_INET 2
#define GADGET_AF_INET6 10

struct gadget_connection {
	__u8 saddr[16]; /* IPv4 in the first 4 bytes, network order */
	__u8 daddr[16];
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 ipversion; /* 4 or 6 */
};

/* Addresses and ports straight from the socket (host-order local port, network-order peer);
 * false for a socket that is neither IPv4 nor IPv6. BPF_CORE_READ_INTO reads sizeof(*dst)
 * bytes: its destination is a pointer to the whole array, never the array itself. */
static __always_inline bool gadget_connection_from_sock(struct gadget_connection *c,
							const struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family == GADGET_AF_INET) {
		c->ipversion = 4;
		BPF_CORE_READ_INTO((__u32 *)c->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)c->daddr, sk, __sk_common.skc_daddr);
	} else if (family == GADGET_AF_INET6) {
		c->ipversion = 6;
		BPF_CORE_READ_INTO(&c->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&c->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		return false;
	}
	c->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	c->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	return true;
}

/*
 * The endpoints a TCP tracepoint carries (sock/inet_sock_set_state, tcp/tcp_retransmit_skb
 * ...: family, saddr, daddr, saddr_v6, daddr_v6, and ports in host order), whatever the
 * socket says now (a failed connect has cleared its addresses). The arrays are read, not
 * dereferenced: the verifier allows only fixed-size loads from the context. A macro, as each
 * tracepoint has its own context type; it evaluates to false for another family.
 */
#define gadget_connection_from_tp(c, ctx)                                                      \
	({                                                                                     \
		bool __ok = true;                                                              \
		if ((ctx)->family == GADGET_AF_INET) {                                         \
			(c)->ipversion = 4;                                                    \
			bpf_probe_read_kernel((c)->saddr, 4, (ctx)->saddr);                    \
			bpf_probe_read_kernel((c)->daddr, 4, (ctx)->daddr);                    \
		} else if ((ctx)->family == GADGET_AF_INET6) {                                 \
			(c)->ipversion = 6;                                                    \
			bpf_probe_read_kernel((c)->saddr, 16, (ctx)->saddr_v6);                \
			bpf_probe_read_kernel((c)->daddr, 16, (ctx)->daddr_v6);                \
		} else {                                                                       \
			__ok = false;                                                          \
		}                                                                              \
		(c)->sport = (ctx)->sport;                                                     \
		(c)->dport = (ctx)->dport;                                                     \
		__ok;                                                                          \
	})

#endif
