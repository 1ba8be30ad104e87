/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_TCPCONNECT_H
#define IGRUN_TRACE_TCPCONNECT_H

#define TASK_COMM_LEN 16

/* The process inside connect(), kept by socket until the handshake ends. */
struct connect_start {
	__u64 start_ns; /* bpf_ktime_get_boot_ns() when the SYN went out */
	__u64 mntns_id;
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 gid;
	char comm[TASK_COMM_LEN];
};

/* One outgoing connection attempt whose handshake ended. Addresses: IPv4 in the first 4
 * bytes; ports in host byte order. */
struct event {
	__u64 timestamp;
	__u64 mntns_id;
	__u64 latency; /* ns from SYN sent to ESTABLISHED or to the failure */
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 error; /* errno of a failed connect; 0 when established */
	__u8 ipversion;
	char comm[TASK_COMM_LEN];
};

#endif
