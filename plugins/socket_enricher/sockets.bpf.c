// SPDX-License-Identifier: GPL-2.0
/*
 * The socket enricher: keeps gadget_sockets (socket cookie -> owning process) without
 * kprobes. cgroup sock hooks attached at the cgroup2 root run in the owner's context for
 * every socket created, connected, bound or sent from afterwards; at start, iterators give the
 * TCP and UDP sockets a cookie and then, over every task's files, record the owners of the
 * sockets that already exist; sock_release forgets.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/mntns_filter.h>
#include <igrun/sockets.h>

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define AF_INET 2
#define AF_INET6 10

static __always_inline void record(__u64 cookie)
{
	struct gadget_process owner = {};

	if (!cookie)
		return;
	gadget_process_populate(&owner);
	bpf_map_update_elem(&gadget_sockets, &cookie, &owner, BPF_ANY);
}

SEC("cgroup/sock_create")
int ig_sock_create(struct bpf_sock *ctx)
{
	record(bpf_get_socket_cookie(ctx));
	return 1;
}

/* Forget both keys a socket may have (see igrun/sockets.h); ctx is the struct sock itself. */
SEC("cgroup/sock_release")
int ig_sock_release(struct bpf_sock *ctx)
{
	__u64 key = bpf_get_socket_cookie(ctx);

	bpf_map_delete_elem(&gadget_sockets, &key);
	key = (__u64)ctx;
	bpf_map_delete_elem(&gadget_sockets, &key);
	return 1;
}

/* The last task to connect, bind or send on a socket owns it (it may have been passed on). */
SEC("cgroup/connect4")
int ig_connect4(struct bpf_sock_addr *ctx)
{
	record(bpf_get_socket_cookie(ctx));
	return 1;
}

SEC("cgroup/connect6")
int ig_connect6(struct bpf_sock_addr *ctx)
{
	record(bpf_get_socket_cookie(ctx));
	return 1;
}

SEC("cgroup/post_bind4")
int ig_post_bind4(struct bpf_sock *ctx)
{
	record(bpf_get_socket_cookie(ctx));
	return 1;
}

SEC("cgroup/post_bind6")
int ig_post_bind6(struct bpf_sock *ctx)
{
	record(bpf_get_socket_cookie(ctx));
	return 1;
}

SEC("cgroup/sendmsg4")
int ig_sendmsg4(struct bpf_sock_addr *ctx)
{
	record(bpf_get_socket_cookie(ctx));
	return 1;
}

SEC("cgroup/sendmsg6")
int ig_sendmsg6(struct bpf_sock_addr *ctx)
{
	record(bpf_get_socket_cookie(ctx));
	return 1;
}

/*
 * At start, first: give every TCP and UDP socket in igrun's network namespace a cookie. These
 * iterators hold trusted pointers, so the kernel lets them ask; they cannot tell the owner.
 */
SEC("iter/tcp")
int ig_cookie_tcp(struct bpf_iter__tcp *ctx)
{
	if (ctx->sk_common)
		bpf_get_socket_cookie(ctx->sk_common);
	return 0;
}

SEC("iter/udp")
int ig_cookie_udp(struct bpf_iter__udp *ctx)
{
	if (ctx->udp_sk)
		bpf_get_socket_cookie(ctx->udp_sk);
	return 0;
}

/*
 * Then: every IPv4/IPv6 socket some task holds open, with the task as its owner, keyed by its
 * cookie or, when it has none (a socket in another network namespace that nobody asked a
 * cookie of), by its address: this program may not ask for a cookie, since the socket it
 * reaches from the file is not a trusted pointer.
 */
SEC("iter/task_file")
int ig_existing_sockets(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct gadget_process owner = {};
	struct socket *sock;
	struct sock *sk;
	__u16 family;
	__u64 key;

	if (!task || !file)
		return 0;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	key = gadget_socket_key(sk);
	if (bpf_map_lookup_elem(&gadget_sockets, &key))
		return 0; /* first holder found wins: usually the process that made it */
	gadget_process_from_task(&owner, task);
	bpf_map_update_elem(&gadget_sockets, &key, &owner, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
