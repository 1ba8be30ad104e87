// SPDX-License-Identifier: GPL-2.0
/*
 * A tracer for `igrun run` whose event has what needs flattening or leaving out: a nested
 * struct (shown as outer.inner), an L3 endpoint, an enum, a pointer, and members no column
 * fits (a union, an int array, an anonymous union). Every getppid() of target_pid sends one.
 */
#include <vmlinux.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/types.h>

const volatile __u32 target_pid = 0;
const volatile char label[8] = "abc";

GADGET_PARAM(target_pid);
GADGET_PARAM(label);

enum shade { SHADE_LIGHT = 1, SHADE_DARK = 2 };

struct inner {
	__u16 a;
	__s8 b;
	char name[8];
};

struct layout_event {
	__u32 pid;
	struct inner in;
	struct gadget_l3endpoint_t peer;
	enum shade shade;
	void *ptr;
	union {
		__u32 as_u32;
		__u8 as_bytes[4];
	} either;
	__u32 values[3];
	union {
		__u64 anon_a;
		__u64 anon_b;
	};
	char label[8];
};

GADGET_RINGBUF(events);
GADGET_TRACER(layouts, events, layout_event);

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_layouts(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct layout_event *e;

	if (pid != target_pid)
		return 0;
	e = gadget_reserve_buf(&events, sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = pid;
	e->in.a = 513;
	e->in.b = -7;
	__builtin_memcpy(e->in.name, "nested", 7);
	e->peer.addr_raw.v4 = bpf_htonl(0x0a000102); /* 10.0.1.2 */
	e->peer.version = 4;
	e->shade = SHADE_DARK;
	e->ptr = (void *)0x1234;
	e->either.as_u32 = 9;
	e->values[1] = 5;
	e->anon_a = 11;
#pragma unroll
	for (int i = 0; i < sizeof(e->label); i++)
		e->label[i] = label[i]; /* volatile reads: the value set at load time */
	gadget_submit_buf(&events, e);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
