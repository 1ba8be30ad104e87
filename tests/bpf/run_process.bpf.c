// SPDX-License-Identifier: GPL-2.0
/*
 * A bare object whose event embeds igrun's shared members (igrun/process.h,
 * igrun/connection.h): `igrun run` must show them as the built-in gadgets do (pid, tid, comm,
 * uid, gid, ppid, mntns; ip, src, dst), not as proc.pid. Every getppid() of target_pid sends
 * one event with a fixed connection, so a test knows each value in advance. The syscall
 * members (igrun/display.h) show by name: the number the tracepoint reports for getppid,
 * and a fixed one.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/connection.h>
#include <igrun/display.h>
#include <igrun/macros.h>
#include <igrun/process.h>

const volatile __u32 target_pid = 0;
GADGET_PARAM(target_pid);

struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc;
	struct gadget_process parent; /* a second one keeps its dotted names: parent.pid */
	struct gadget_connection conn;
	gadget_syscall syscall_raw; /* shown as syscall: "getppid" */
	gadget_syscall other;       /* shown as other, its number as other_raw */
	__u32 marker;
};

/* The context of a syscalls/sys_enter_* tracepoint: the common header, then the number. */
struct igrt_sys_enter {
	__u64 common;
	int nr;
};

GADGET_RINGBUF(events);
GADGET_TRACER(process, events, event);

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_process(struct igrt_sys_enter *ctx)
{
	struct event *e;
	__u64 mntns_id = gadget_get_mntns_id();

	if ((bpf_get_current_pid_tgid() >> 32) != target_pid ||
	    gadget_should_discard_mntns_id(mntns_id))
		return 0;
	e = gadget_reserve_buf(&events, sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->timestamp = bpf_ktime_get_boot_ns();
	gadget_process_populate(&e->proc);
	gadget_process_from_task(&e->parent,
				 BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), real_parent));
	e->conn.ipversion = 4;
	e->conn.saddr[0] = 127;
	e->conn.saddr[3] = 1;
	e->conn.daddr[0] = 10;
	e->conn.daddr[3] = 2;
	e->conn.sport = 1234;
	e->conn.dport = 443;
	e->syscall_raw = ctx->nr;
	e->other = 0xfffff; /* no call has it: shown as the number */
	e->marker = 0x1ee7;
	gadget_submit_buf(&events, e);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
