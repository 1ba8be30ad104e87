/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One TCP event attributed through the socket enricher (igrun/sockets.h): the owner as
 * recorded in the owner's own context, never the task that happens to run when a timer or
 * softirq raises the event. owner_known says whether an owner was found.
 */
#ifndef IGRUN_TCP_EVENT_H
#define IGRUN_TCP_EVENT_H

#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <igrun/connection.h>
#include <igrun/mntns_filter.h>
#include <igrun/sockets.h>

struct tcp_event {
	gadget_timestamp timestamp;
	struct gadget_process proc; /* the socket's owner; zero when not known */
	struct gadget_connection conn;
	__u16 tcpflags;
	__u8 state;
	__u8 owner_known;
	__u32 reason;
	__u64 netns_id; /* network namespace of the socket (ig's netnsid); 0 without one */
};

/* Fill the owner from the enricher's map; false when the mount-ns filter rejects it. An
 * unknown owner has mount-ns id 0, which a container filter rejects too. */
static __always_inline bool tcp_event_owner(struct tcp_event *e, const struct sock *sk)
{
	const struct gadget_process *o = gadget_socket_owner(sk);

	if (o) {
		e->owner_known = 1;
		e->proc = *o;
	}
	if (sk)
		e->netns_id = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return !gadget_should_discard_mntns_id(e->proc.mntns_id);
}

/* TCP flags of a socket buffer, from the control block TCP keeps in skb->cb. */
static __always_inline __u16 tcp_skb_flags(const struct sk_buff *skb)
{
	struct tcp_skb_cb *tcb =
		(struct tcp_skb_cb *)((void *)skb + bpf_core_field_offset(struct sk_buff, cb));

	return BPF_CORE_READ(tcb, tcp_flags);
}

#endif
