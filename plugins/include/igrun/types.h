/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Well-known types for event structs. `igrun run` recognises them in an event's BTF and shows
 * them the way igrun's own gadgets do: an endpoint member as an `addr:port` column (and
 * {"addr", "version", "port", "proto"} in JSON), a gadget_mntns_id as the mount namespace the
 * containers operator enriches and filters by, a gadget_timestamp as wall time.
 */
#ifndef IGRUN_TYPES_H
#define IGRUN_TYPES_H

#include <vmlinux.h>

/* An IP address: IPv4 in the first four bytes (network order), or IPv6. */
union gadget_ip_addr_t {
	__u8 v6[16];
	__u32 v4;
};

struct gadget_l3endpoint_t {
	union gadget_ip_addr_t addr_raw;
	__u8 version; /* 4 or 6 */
};

struct gadget_l4endpoint_t {
	union gadget_ip_addr_t addr_raw;
	__u16 port;  /* host byte order */
	__u16 proto; /* IPPROTO_TCP, IPPROTO_UDP, ... */
	__u8 version; /* 4 or 6 */
};

typedef __u64 gadget_mntns_id;   /* a mount namespace id (its inode number) */
typedef __u64 gadget_timestamp;  /* bpf_ktime_get_boot_ns() */

#endif
