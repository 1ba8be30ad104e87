/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_TCP_H
#define IGRUN_TRACE_TCP_H

enum tcp_operation {
	TCP_OP_CONNECT = 1,
	TCP_OP_ACCEPT = 2,
	TCP_OP_CLOSE = 3,
};

/* One connect, accept or close, and the socket's owner, recorded where the owner itself runs
 * (connect, accept). */
struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc;
	struct gadget_connection conn;
	__u16 error;
	__u8 operation;
};

#endif
