/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TCPTOP_H
#define IGRUN_TCPTOP_H

#include <igrun/connection.h>
#include <igrun/process.h>

/* One row of top tcp: a process on one connection. Only mntns_id, pid and comm of the
 * process are set (a process, not a thread, as in Inspektor Gadget); the rest stays 0 so
 * that the key of one process and connection is always the same bytes. */
struct tcptop_key {
	struct gadget_process proc;
	struct gadget_connection conn;
};

struct tcptop_value {
	__u64 sent;     /* bytes */
	__u64 received; /* bytes */
};

#endif
