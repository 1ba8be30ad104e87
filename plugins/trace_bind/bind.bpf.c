// SPDX-License-Identifier: GPL-2.0
/*
 * trace bind: one event per bind() of an IPv4 or IPv6 socket, with the socket options that
 * decide how the bind behaves and the interface the socket is bound to.
 *
 * Without kprobes on inet_bind/inet6_bind, the syscall tracepoints do the work: the enter side
 * finds the socket behind the fd (task->files->fdt->fd[fd]), keeps only inet sockets and reads
 * the requested address from user memory; the exit side adds the result, the port the kernel
 * really bound (an ephemeral one when 0 was asked), the options and the bound interface, and
 * sends the record.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "bind.h"

#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000
/* The length inet6_bind() requires at least (RFC 2133's sockaddr_in6, no scope id). */
#define SIN6_LEN_RFC2133 24
#define NETDEV_HASHENTRIES 256
#define MAX_DEVS_PER_BUCKET 8
#define PORT_BITMAP_SIZE (65536 / 8)

/* Bit numbers in inet_sock.inet_flags (Linux 6.6+); the enum that names them is anonymous,
 * so CO-RE cannot look them up. Older kernels keep these options as bitfields instead. */
#define INET_FLAGS_FREEBIND_BIT 11
#define INET_FLAGS_TRANSPARENT_BIT 15
#define INET_FLAGS_BIND_ADDRESS_NO_PORT_BIT 18

const volatile __s32 target_pid = 0;
const volatile bool ignore_errors = true;
const volatile bool filter_by_port = false;
/* One bit per port, set by user space from --ports: a lookup is one load, whatever the list. */
const volatile __u8 target_ports[PORT_BITMAP_SIZE] = {};

/* What the enter side found, keyed by thread, until the syscall returns. */
struct pending {
	struct sock *sk;
	struct event event;
};

static const struct pending empty_pending = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u64);
	__type(value, struct pending);
} binds SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(bind, events, event);

/* inet_sock before Linux 6.6, when these options were bitfields. */
struct inet_sock___old {
	__u8 freebind : 1;
	__u8 transparent : 1;
	__u8 bind_address_no_port : 1;
} __attribute__((preserve_access_index));

/* The struct sock behind a file descriptor of the current task, or NULL if it is no socket. */
static __always_inline struct sock *sock_of_fd(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;
	struct socket *socket;
	umode_t mode;

	if (!fdt || fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	mode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	socket = BPF_CORE_READ(file, private_data);
	return socket ? BPF_CORE_READ(socket, sk) : NULL;
}

/* The address and port asked for, read the way inet_bind()/inet6_bind() read them. */
static __always_inline void read_sockaddr(struct event *e, const void *uaddr, int addrlen)
{
	struct sockaddr_in sin = {};
	struct sockaddr_in6 sin6 = {};

	if (e->ipversion == 4) {
		if (addrlen < (int)sizeof(sin) || bpf_probe_read_user(&sin, sizeof(sin), uaddr))
			return;
		e->port = bpf_ntohs(sin.sin_port);
		__builtin_memcpy(e->addr, &sin.sin_addr.s_addr, 4);
	} else {
		if (addrlen < SIN6_LEN_RFC2133 ||
		    bpf_probe_read_user(&sin6, SIN6_LEN_RFC2133, uaddr))
			return;
		e->port = bpf_ntohs(sin6.sin6_port);
		__builtin_memcpy(e->addr, sin6.sin6_addr.in6_u.u6_addr8, 16);
	}
}

static __always_inline bool inet_flag(struct inet_sock *inet, int bit)
{
	unsigned long flags = BPF_CORE_READ(inet, inet_flags);

	return (flags >> bit) & 1;
}

/* SO_REUSEADDR, SO_REUSEPORT, IP_FREEBIND, IP_TRANSPARENT, IP_BIND_ADDRESS_NO_PORT. */
static __always_inline __u8 bind_options(struct sock *sk)
{
	struct inet_sock___old *old = (void *)sk;
	struct inet_sock *inet = (void *)sk;
	__u8 opts = 0;

	if (bpf_core_field_exists(old->freebind)) {
		if (BPF_CORE_READ_BITFIELD_PROBED(old, freebind))
			opts |= OPT_FREEBIND;
	} else if (inet_flag(inet, INET_FLAGS_FREEBIND_BIT)) {
		opts |= OPT_FREEBIND;
	}
	if (bpf_core_field_exists(old->transparent)) {
		if (BPF_CORE_READ_BITFIELD_PROBED(old, transparent))
			opts |= OPT_TRANSPARENT;
	} else if (inet_flag(inet, INET_FLAGS_TRANSPARENT_BIT)) {
		opts |= OPT_TRANSPARENT;
	}
	if (bpf_core_field_exists(old->bind_address_no_port)) {
		if (BPF_CORE_READ_BITFIELD_PROBED(old, bind_address_no_port))
			opts |= OPT_BIND_ADDRESS_NO_PORT;
	} else if (inet_flag(inet, INET_FLAGS_BIND_ADDRESS_NO_PORT_BIT)) {
		opts |= OPT_BIND_ADDRESS_NO_PORT;
	}
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, __sk_common.skc_reuse))
		opts |= OPT_REUSEADDR;
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, __sk_common.skc_reuseport))
		opts |= OPT_REUSEPORT;
	return opts;
}

/*
 * The name of interface `ifindex` in the socket's network namespace, as dev_get_by_index()
 * finds it: a walk of one bucket of net->dev_index_head. Read here, while the namespace
 * surely exists, rather than by user space after a short-lived process is gone.
 */
static __always_inline void interface_name(struct sock *sk, int ifindex, char *name)
{
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	struct hlist_head *heads = BPF_CORE_READ(net, dev_index_head);
	struct hlist_node *node = NULL;
	struct net_device *dev;
	int i;

	if (!heads)
		return;
	if (bpf_probe_read_kernel(&node, sizeof(node),
				  &heads[ifindex & (NETDEV_HASHENTRIES - 1)].first))
		return;
#pragma unroll
	for (i = 0; i < MAX_DEVS_PER_BUCKET; i++) {
		if (!node)
			return;
		dev = (void *)node - bpf_core_field_offset(struct net_device, index_hlist);
		if (BPF_CORE_READ(dev, ifindex) == ifindex) {
			BPF_CORE_READ_STR_INTO((char(*)[IFNAMSIZ])name, dev, name);
			return;
		}
		node = BPF_CORE_READ(node, next);
	}
}

static __always_inline bool port_wanted(__u16 port)
{
	return target_ports[port >> 3] & (1 << (port & 7));
}

SEC("tracepoint/syscalls/sys_enter_bind")
int ig_bind_e(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	struct pending *p;
	struct sock *sk;
	__u16 family;

	if (target_pid && target_pid != (__s32)pid)
		return 0;
	if (gadget_should_discard_mntns_id(gadget_get_mntns_id()))
		return 0;
	sk = sock_of_fd((int)ctx->args[0]);
	if (!sk)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (bpf_map_update_elem(&binds, &id, &empty_pending, BPF_ANY))
		return 0;
	p = bpf_map_lookup_elem(&binds, &id);
	if (!p)
		return 0;

	p->sk = sk;
	p->event.timestamp = bpf_ktime_get_boot_ns();
	gadget_process_populate(&p->event.proc);
	p->event.ipversion = family == AF_INET ? 4 : 6;
	p->event.proto = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
	read_sockaddr(&p->event, (const void *)ctx->args[1], (int)ctx->args[2]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_bind")
int ig_bind_x(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&binds, &id);
	struct event *e;
	struct sock *sk;
	int ret = ctx->ret;

	if (!p)
		return 0;
	if (ignore_errors && ret != 0)
		goto cleanup;
	sk = p->sk;
	e = &p->event;
	/* The port the socket now has: the one asked for, or the ephemeral one picked for 0. */
	if (ret == 0)
		e->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (filter_by_port && !port_wanted(e->port))
		goto cleanup;
	e->ret = ret;
	e->opts = bind_options(sk);
	e->bound_dev_if = BPF_CORE_READ(sk, __sk_common.skc_bound_dev_if);
	if (e->bound_dev_if)
		interface_name(sk, e->bound_dev_if, e->ifname);
	gadget_output_buf(&events, e, sizeof(*e));
cleanup:
	bpf_map_delete_elem(&binds, &id);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
