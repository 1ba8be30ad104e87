/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_TCP_H
#define IGRUN_TRACE_TCP_H

#define TASK_COMM_LEN 16

enum tcp_operation {
	TCP_OP_CONNECT = 1,
	TCP_OP_ACCEPT = 2,
	TCP_OP_CLOSE = 3,
};

/* Who owns a socket: recorded where the owner itself runs (connect, accept). */
struct owner {
	__u64 mntns_id;
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 gid;
	char comm[TASK_COMM_LEN];
};

/* One connect, accept or close. Addresses: IPv4 in the first 4 bytes; ports in host order. */
struct event {
	__u64 timestamp;
	__u64 mntns_id;
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 error;
	__u8 ipversion;
	__u8 operation;
	char comm[TASK_COMM_LEN];
};

#endif
