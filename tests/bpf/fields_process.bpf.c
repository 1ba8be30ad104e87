// SPDX-License-Identifier: GPL-2.0
/*
 * The shared event members for tests/test_fields.py: one event per getppid() of target_pid,
 * its process filled by gadget_process_populate() and its connection set to known values,
 * so that every field the Python groups describe has an exact expected value.
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/connection.h>
#include <igrun/macros.h>
#include <igrun/process.h>

const volatile __u32 target_pid = 0;

struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc;
	struct gadget_connection conn;
	__u32 marker;
};

GADGET_RINGBUF(events);
GADGET_TRACER(fields, events, event);

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_fields(void *ctx)
{
	struct event *e;

	if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
		return 0;
	e = gadget_reserve_buf(&events, sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->timestamp = bpf_ktime_get_boot_ns();
	gadget_process_populate(&e->proc);
	e->conn.ipversion = 4;
	e->conn.saddr[0] = 127;
	e->conn.saddr[3] = 1;
	e->conn.daddr[0] = 10;
	e->conn.daddr[3] = 2;
	e->conn.sport = 1234;
	e->conn.dport = 443;
	e->marker = 0x1ee7;
	gadget_submit_buf(&events, e);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
