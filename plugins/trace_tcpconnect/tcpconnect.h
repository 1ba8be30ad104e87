/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_TCPCONNECT_H
#define IGRUN_TRACE_TCPCONNECT_H

/* The process inside connect(), kept by socket until the handshake ends. */
struct connect_start {
	__u64 start_ns; /* bpf_ktime_get_boot_ns() when the SYN went out */
	struct gadget_process proc;
};

/* One outgoing connection attempt whose handshake ended. */
struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc; /* the caller of connect() */
	__u64 latency; /* ns from SYN sent to ESTABLISHED or to the failure */
	struct gadget_connection conn;
	__u16 error; /* errno of a failed connect; 0 when established */
};

#endif
