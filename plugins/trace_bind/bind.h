/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_BIND_H
#define IGRUN_TRACE_BIND_H

#define IFNAMSIZ 16

/* Bits of event.opts, in Inspektor Gadget's (and bcc bindsnoop's) order. */
#define OPT_FREEBIND (1 << 0)
#define OPT_TRANSPARENT (1 << 1)
#define OPT_BIND_ADDRESS_NO_PORT (1 << 2)
#define OPT_REUSEADDR (1 << 3)
#define OPT_REUSEPORT (1 << 4)

/* One bind() of an AF_INET or AF_INET6 socket. */
struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc;
	__u32 bound_dev_if;
	int ret;
	__u16 port;
	__u16 proto;
	__u8 opts;
	__u8 ipversion;
	__u8 addr[16];
	char ifname[IFNAMSIZ];
};

#endif
