// SPDX-License-Identifier: GPL-2.0
/*
 * trace tcpconnect: one event per outgoing TCP connection attempt once its handshake ended,
 * with the process that called connect(), the time the handshake took and, when it failed,
 * why.
 *
 * Only the sock/inet_sock_set_state tracepoint is used, no kprobes. Its CLOSE -> SYN_SENT
 * transition runs inside connect(), in the caller's own context: that is where the process is
 * recorded, by socket address. SYN_SENT -> ESTABLISHED usually runs in softirq, where the
 * current task is whoever was interrupted: the event takes the recorded process instead, and
 * the latency is the time between the two transitions. SYN_SENT -> CLOSE is a failed connect:
 * the kernel sets sk_err before it closes the socket (ECONNREFUSED for a reset, ETIMEDOUT or
 * the last ICMP error when the SYNs ran out); a socket closed by its caller before any answer
 * has none and is reported as ECONNABORTED.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/connection.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "tcpconnect.h"

#define IPPROTO_TCP 6
#define ECONNABORTED 103

/* Report only connections whose handshake took at least this long (0: all). */
const volatile __u64 targ_min_latency_ns = 0;

/* LRU: a socket freed while in SYN_SENT without a CLOSE transition cannot leak an entry
 * forever, and a burst of connects never makes new ones fail. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64); /* struct sock * */
	__type(value, struct connect_start);
} starts SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(tcpconnect, events, event);

/* Inside connect(): the current task is the caller. */
static __always_inline void record_start(__u64 skaddr)
{
	struct connect_start start = {};

	gadget_process_populate(&start.proc);
	if (gadget_should_discard_mntns_id(start.proc.mntns_id))
		return;
	start.start_ns = bpf_ktime_get_boot_ns();
	bpf_map_update_elem(&starts, &skaddr, &start, BPF_ANY);
}

/* The handshake ended (error 0: established): report it with the recorded process, never
 * the current one. */
static __always_inline void emit(struct trace_event_raw_inet_sock_set_state *ctx,
				 const struct connect_start *start, __u16 error)
{
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 latency = now > start->start_ns ? now - start->start_ns : 0;
	struct event *e;

	if (targ_min_latency_ns && latency < targ_min_latency_ns)
		return;
	e = gadget_reserve_buf(&events, sizeof(*e));
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	gadget_connection_from_tp(&e->conn, ctx); /* the family was checked before the start */
	e->timestamp = now;
	e->latency = latency;
	e->error = error;
	e->proc = start->proc;
	gadget_submit_buf(&events, e);
}

SEC("tracepoint/sock/inet_sock_set_state")
int ig_tcpconnect_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 skaddr = (__u64)ctx->skaddr;
	int oldstate = ctx->oldstate, newstate = ctx->newstate;
	const struct connect_start *start;
	__u16 error;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	if (ctx->family != GADGET_AF_INET && ctx->family != GADGET_AF_INET6)
		return 0;

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		record_start(skaddr);
		return 0;
	}
	if (oldstate != TCP_SYN_SENT)
		return 0;

	/* SYN_SENT -> ESTABLISHED: connected; -> CLOSE: failed, the errno left in sk_err. */
	start = bpf_map_lookup_elem(&starts, &skaddr);
	if (!start)
		return 0;
	if (newstate == TCP_ESTABLISHED) {
		emit(ctx, start, 0);
	} else if (newstate == TCP_CLOSE) {
		error = BPF_CORE_READ((struct sock *)ctx->skaddr, sk_err);
		emit(ctx, start, error ? error : ECONNABORTED);
	}
	bpf_map_delete_elem(&starts, &skaddr);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
