/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_NETWORK_H
#define IGRUN_TRACE_NETWORK_H

/* Directions, as the packet types Inspektor Gadget reports (linux/if_packet.h). */
#define NET_INGRESS 0 /* PACKET_HOST */
#define NET_EGRESS 4  /* PACKET_OUTGOING */

/* The first sight of one flow of one process. */
struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc;
	struct gadget_connection conn; /* saddr/sport local, daddr/dport remote */
	__u64 netns_id;
	__u16 port;    /* the service port: remote for egress, local for ingress */
	__u8 proto;    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pkt_type; /* NET_INGRESS or NET_EGRESS */
};

/* What makes a flow "the same" for a process: direction, protocol, peer and service port.
 * The client's ephemeral port is left out, so repeated connections to one service are one
 * flow, and so are the datagrams of a request and its reply. */
struct flow_key {
	__u32 pid;
	__u16 port;
	__u8 proto;
	__u8 pkt_type;
	__u8 remote[16];
	__u8 version;
	__u8 pad[3];
};

#endif
