// SPDX-License-Identifier: GPL-2.0
/*
 * A bare object for `igrun run`: no Python describes it. Every getppid() of target_pid sends
 * one event with a running count, the caller's pid, comm and mount namespace, and an L4
 * endpoint made from the count (IPv4 127.0.0.1 for odd counts, IPv6 ::1 for even ones, port
 * port_base + count), so that every value a test reads back is known in advance.
 */
#include <vmlinux.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/types.h>

const volatile __u32 target_pid = 0;
const volatile __s32 port_base = 4000;
const volatile bool odd_only = false;

GADGET_PARAM(target_pid);
GADGET_PARAM(port_base);
GADGET_PARAM(odd_only);

__u64 calls = 0;

struct event {
	gadget_timestamp timestamp;
	gadget_mntns_id mntns_id;
	__u32 pid;
	__s32 delta; /* minus the count: a signed member */
	__u64 count;
	bool odd;
	char comm[16];
	struct gadget_l4endpoint_t endpoint;
};

GADGET_RINGBUF(events);
GADGET_TRACER(getppid, events, event);

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_getppid(void *ctx)
{
	__u64 mntns_id = gadget_get_mntns_id();
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct event *e;
	__u64 n;

	if (pid != target_pid || gadget_should_discard_mntns_id(mntns_id))
		return 0;
	n = __sync_fetch_and_add(&calls, 1) + 1;
	if (odd_only && !(n & 1))
		return 0;
	e = gadget_reserve_buf(&events, sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->timestamp = bpf_ktime_get_boot_ns();
	e->mntns_id = mntns_id;
	e->pid = pid;
	e->delta = -(__s32)n;
	e->count = n;
	e->odd = n & 1;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (n & 1) {
		e->endpoint.addr_raw.v4 = bpf_htonl(0x7f000001);
		e->endpoint.version = 4;
	} else {
		e->endpoint.addr_raw.v6[15] = 1;
		e->endpoint.version = 6;
	}
	e->endpoint.port = port_base + n;
	e->endpoint.proto = 6; /* TCP */
	gadget_submit_buf(&events, e);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
