// SPDX-License-Identifier: GPL-2.0
/* A tracer whose event has bitfields: no numpy layout fits it, so igrun cannot decode it. */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>

struct packed_event {
	__u32 pid;
	__u32 kind : 3;
	__u32 flags : 29;
};

GADGET_RINGBUF(events);
GADGET_TRACER(packed, events, packed_event);

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_bitfield(void *ctx)
{
	struct packed_event *e = gadget_reserve_buf(&events, sizeof(*e));

	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->kind = 1;
	e->flags = 0;
	gadget_submit_buf(&events, e);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
