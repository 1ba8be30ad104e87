// SPDX-License-Identifier: GPL-2.0
/*
 * trace network: one event per new flow of each process, without kprobes and without a packet
 * socket per network namespace. Every hook runs in the task that owns the socket, so the
 * process columns are always the owner's:
 *
 *   cgroup/connect4|6   outgoing TCP connections and connected UDP sockets (egress)
 *   cgroup/sendmsg4|6   datagrams of unconnected UDP sockets (egress, or a server's reply)
 *   cgroup/recvmsg4|6   datagrams received with their source address (ingress, or a reply)
 *   accept/accept4 exit TCP connections a process accepts (ingress)
 *
 * The cgroup programs are attached with links at the cgroup v2 root, so they see every
 * socket of the host and of its containers. A flow is (process, direction, protocol, peer
 * address, service port): the first sight of it inserts it in the LRU hash `flows` and sends
 * an event; later packets of it, and replies to it, send nothing.
 *
 * At connect and sendmsg the local port may not be chosen yet (it is at the end of the
 * syscall): the event waits in `pending`, keyed by thread, and leaves at the syscall's exit
 * with the socket's local address and port.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/connection.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "network.h"

#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define S_IFMT 00170000
#define S_IFSOCK 0140000

struct pending {
	__u64 sk; /* the struct sock, read at the syscall's exit */
	struct event event;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, __u8);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct pending);
} pending SEC(".maps");

/* A pending record is too big for the stack next to a key: built here instead. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pending);
} scratch SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(network, events, event);

static const __u8 seen = 1;

static __always_inline bool filtered(void)
{
	return gadget_should_discard_mntns_id(gadget_get_mntns_id());
}

static __always_inline struct pending *fresh(void)
{
	__u32 zero = 0;
	struct pending *p = bpf_map_lookup_elem(&scratch, &zero);

	if (p)
		__builtin_memset(p, 0, sizeof(*p));
	return p;
}

static __always_inline void flow_key_of(struct flow_key *k, const struct event *e)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->pid = e->proc.pid;
	k->port = e->port;
	k->proto = e->proto;
	k->pkt_type = e->pkt_type;
	k->version = e->conn.ipversion;
	__builtin_memcpy(k->remote, e->conn.daddr, 16);
}

/* Whether the flow of `e` is new (and now recorded). A lookup first: most packets belong
 * to a known flow, and an LRU update takes a free node even when the key exists. */
static __always_inline bool new_flow(const struct event *e)
{
	struct flow_key k;

	flow_key_of(&k, e);
	if (bpf_map_lookup_elem(&flows, &k))
		return false;
	return bpf_map_update_elem(&flows, &k, &seen, BPF_NOEXIST) == 0;
}

/* Whether `e` answers a flow seen the other way: a datagram back from a peer the process
 * sent to (on that peer's port), or a reply to a peer that sent to the process's port. */
static __always_inline bool answers(const struct event *e, __u16 local_port)
{
	struct flow_key k;

	flow_key_of(&k, e);
	if (e->pkt_type == NET_INGRESS) {
		k.pkt_type = NET_EGRESS;
		k.port = e->conn.dport;
	} else {
		k.pkt_type = NET_INGRESS;
		k.port = local_port;
	}
	return bpf_map_lookup_elem(&flows, &k) != NULL;
}

/* The peer of a sock_addr hook: its address (IPv4-mapped IPv6 as IPv4) and port. */
static __always_inline void peer4(struct event *e, struct bpf_sock_addr *ctx)
{
	__u32 ip = ctx->user_ip4;

	e->conn.ipversion = 4;
	__builtin_memcpy(e->conn.daddr, &ip, 4);
	e->conn.dport = bpf_ntohs(ctx->user_port);
}

static __always_inline void peer6(struct event *e, struct bpf_sock_addr *ctx)
{
	__u32 a = ctx->user_ip6[0], b = ctx->user_ip6[1], c = ctx->user_ip6[2],
	      d = ctx->user_ip6[3];

	if (a == 0 && b == 0 && c == bpf_htonl(0xffff)) {
		e->conn.ipversion = 4;
		__builtin_memcpy(e->conn.daddr, &d, 4);
	} else {
		e->conn.ipversion = 6;
		__builtin_memcpy(e->conn.daddr, &a, 4);
		__builtin_memcpy(e->conn.daddr + 4, &b, 4);
		__builtin_memcpy(e->conn.daddr + 8, &c, 4);
		__builtin_memcpy(e->conn.daddr + 12, &d, 4);
	}
	e->conn.dport = bpf_ntohs(ctx->user_port);
}

/* The local address of a socket; an IPv4 flow on an IPv6 socket takes the mapped part. */
static __always_inline void local_of(struct event *e, struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family == GADGET_AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)e->conn.saddr, sk, __sk_common.skc_rcv_saddr);
	} else if (e->conn.ipversion == 4) {
		BPF_CORE_READ_INTO((__u32 *)e->conn.saddr, sk,
				   __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[3]);
	} else {
		BPF_CORE_READ_INTO(&e->conn.saddr, sk,
				   __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
	}
	e->conn.sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->netns_id = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

static __always_inline void send_event(struct event *e)
{
	gadget_output_buf(&events, e, sizeof(*e));
}

/* An event to finish at the syscall's exit; a record the same thread left unfinished (a
 * syscall whose exit this object does not hook) leaves first, without its local port. */
static __always_inline void hold(struct pending *p)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *old = bpf_map_lookup_elem(&pending, &id);

	if (old) {
		local_of(&old->event, (struct sock *)old->sk);
		send_event(&old->event);
	}
	bpf_map_update_elem(&pending, &id, p, BPF_ANY);
}

static __always_inline int egress(struct bpf_sock_addr *ctx, bool v6, bool is_send)
{
	struct bpf_sock *sk = ctx->sk;
	struct pending *p;
	__u8 proto;

	if (!sk)
		return 1;
	proto = ctx->protocol;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 1;
	if (filtered())
		return 1;
	p = fresh();
	if (!p)
		return 1;
	if (v6)
		peer6(&p->event, ctx);
	else
		peer4(&p->event, ctx);
	p->event.proto = proto;
	p->event.pkt_type = NET_EGRESS;
	p->event.port = p->event.conn.dport;
	p->event.proc.pid = bpf_get_current_pid_tgid() >> 32; /* the rest once the flow is new */
	if (is_send && answers(&p->event, sk->src_port))
		return 1;
	if (!new_flow(&p->event))
		return 1;
	gadget_process_populate(&p->event.proc);
	p->event.timestamp = bpf_ktime_get_boot_ns();
	p->sk = (__u64)sk;
	hold(p);
	return 1;
}

SEC("cgroup/connect4")
int ig_net_connect4(struct bpf_sock_addr *ctx)
{
	return egress(ctx, false, false);
}

SEC("cgroup/connect6")
int ig_net_connect6(struct bpf_sock_addr *ctx)
{
	return egress(ctx, true, false);
}

SEC("cgroup/sendmsg4")
int ig_net_sendmsg4(struct bpf_sock_addr *ctx)
{
	return egress(ctx, false, true);
}

SEC("cgroup/sendmsg6")
int ig_net_sendmsg6(struct bpf_sock_addr *ctx)
{
	return egress(ctx, true, true);
}

/* A datagram received: the local socket is known, the peer is the datagram's source. */
static __always_inline int received(struct bpf_sock_addr *ctx, bool v6)
{
	struct bpf_sock *sk = ctx->sk;
	struct pending *p;

	if (!sk || ctx->protocol != IPPROTO_UDP)
		return 1;
	if (filtered())
		return 1;
	p = fresh();
	if (!p)
		return 1;
	if (v6)
		peer6(&p->event, ctx);
	else
		peer4(&p->event, ctx);
	p->event.proto = IPPROTO_UDP;
	p->event.pkt_type = NET_INGRESS;
	p->event.port = sk->src_port;
	p->event.proc.pid = bpf_get_current_pid_tgid() >> 32;
	if (answers(&p->event, 0))
		return 1;
	if (!new_flow(&p->event))
		return 1;
	gadget_process_populate(&p->event.proc);
	p->event.timestamp = bpf_ktime_get_boot_ns();
	/* Read back from the map: the verifier lets a plain number, not the bpf_sock, be read
	 * through as a struct sock. */
	p->sk = (__u64)sk;
	local_of(&p->event, (struct sock *)*(volatile __u64 *)&p->sk);
	send_event(&p->event);
	return 1;
}

SEC("cgroup/recvmsg4")
int ig_net_recvmsg4(struct bpf_sock_addr *ctx)
{
	return received(ctx, false);
}

SEC("cgroup/recvmsg6")
int ig_net_recvmsg6(struct bpf_sock_addr *ctx)
{
	return received(ctx, true);
}

/* The end of connect() or of a send: the local port is now chosen. */
static __always_inline int finish(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&pending, &id);

	if (!p)
		return 0;
	local_of(&p->event, (struct sock *)p->sk);
	send_event(&p->event);
	bpf_map_delete_elem(&pending, &id);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int ig_net_connect_x(void *ctx)
{
	return finish();
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int ig_net_sendto_x(void *ctx)
{
	return finish();
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int ig_net_sendmsg_x(void *ctx)
{
	return finish();
}

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int ig_net_sendmmsg_x(void *ctx)
{
	return finish();
}

/* The struct sock behind a file descriptor of the current task, or NULL if it is no socket. */
static __always_inline struct sock *sock_of_fd(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;
	struct socket *socket;

	if (!fdt || fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	socket = BPF_CORE_READ(file, private_data);
	return socket ? BPF_CORE_READ(socket, sk) : NULL;
}

/* A TCP connection accepted: the new socket has both ends. */
static __always_inline int accepted(struct trace_event_raw_sys_exit *ctx)
{
	struct pending *p;
	struct sock *sk;
	__u16 family;

	if (ctx->ret < 0 || filtered())
		return 0;
	sk = sock_of_fd((int)ctx->ret);
	if (!sk || BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	p = fresh();
	if (!p)
		return 0;
	if (family == GADGET_AF_INET) {
		p->event.conn.ipversion = 4;
		BPF_CORE_READ_INTO((__u32 *)p->event.conn.daddr, sk, __sk_common.skc_daddr);
	} else if (family == GADGET_AF_INET6) {
		__u32 *a = (__u32 *)p->event.conn.daddr;

		BPF_CORE_READ_INTO(&p->event.conn.daddr, sk,
				   __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		if (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff)) {
			p->event.conn.ipversion = 4;
			a[0] = a[3];
			a[1] = a[2] = a[3] = 0;
		} else {
			p->event.conn.ipversion = 6;
		}
	} else {
		return 0;
	}
	p->event.conn.dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	p->event.proto = IPPROTO_TCP;
	p->event.pkt_type = NET_INGRESS;
	local_of(&p->event, sk);
	p->event.port = p->event.conn.sport;
	p->event.proc.pid = bpf_get_current_pid_tgid() >> 32;
	if (!new_flow(&p->event))
		return 0;
	gadget_process_populate(&p->event.proc);
	p->event.timestamp = bpf_ktime_get_boot_ns();
	send_event(&p->event);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int ig_net_accept4_x(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int ig_net_accept_x(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx);
}

char LICENSE[] SEC("license") = "GPL";
