// SPDX-License-Identifier: GPL-2.0
/*
 * snapshot socket: one record per TCP and UDP socket of a network namespace, from the tcp and
 * udp iterators.
 *
 * An iterator of these kinds walks the sockets of the network namespace its reader was in
 * when it created the seq file: user space reads it once from a thread inside each selected
 * container's namespace (and the host's, with --host). Each record carries its socket's
 * namespace id, so rows name their container without user space tagging them.
 *
 * As /proc/net/tcp: a socket in TIME_WAIT is a struct inet_timewait_sock (its state is
 * tw_substate, it has no inode), one in NEW_SYN_RECV a request socket (shown as SYN_RECV,
 * inode 0); every other is a full socket. All three start with struct sock_common, which
 * holds the addresses and ports.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/connection.h>
#include <igrun/macros.h>

#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3
#define TCP_TIME_WAIT 6
#define TCP_NEW_SYN_RECV 12

struct socket_entry {
	__u64 netns_id;
	__u64 inode;
	struct gadget_connection conn;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 state; /* the kernel's TCP state (a UDP socket is ESTABLISHED or CLOSE) */
};

GADGET_SNAPSHOTTER(tcp, socket_entry, ig_snap_tcp);
GADGET_SNAPSHOTTER(udp, socket_entry, ig_snap_udp);

/* The inode number of a full socket's file, 0 when it has none (sock_i_ino). */
static __always_inline __u64 socket_inode(const struct sock *sk)
{
	struct socket *sock = BPF_CORE_READ(sk, sk_socket);
	struct socket_alloc *alloc;

	if (!sock)
		return 0;
	alloc = (void *)sock - bpf_core_field_offset(struct socket_alloc, socket);
	return BPF_CORE_READ(alloc, vfs_inode.i_ino);
}

static __always_inline int write_entry(struct seq_file *seq, struct sock_common *skc,
				       __u8 proto)
{
	struct socket_entry entry = {};
	const struct sock *sk = (const struct sock *)skc;
	__u8 state = BPF_CORE_READ(skc, skc_state);

	if (!gadget_connection_from_sock(&entry.conn, sk))
		return 0; /* neither IPv4 nor IPv6 */
	entry.netns_id = BPF_CORE_READ(skc, skc_net.net, ns.inum);
	entry.proto = proto;
	if (state == TCP_TIME_WAIT) {
		entry.state = BPF_CORE_READ((struct inet_timewait_sock *)skc, tw_substate);
	} else if (state == TCP_NEW_SYN_RECV) {
		entry.state = TCP_SYN_RECV;
	} else {
		entry.state = state;
		entry.inode = socket_inode(sk);
	}
	bpf_seq_write(seq, &entry, sizeof(entry));
	return 0;
}

SEC("iter/tcp")
int ig_snap_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;

	if (!skc)
		return 0;
	return write_entry(ctx->meta->seq, skc, IPPROTO_TCP);
}

SEC("iter/udp")
int ig_snap_udp(struct bpf_iter__udp *ctx)
{
	struct udp_sock *udp = ctx->udp_sk;

	if (!udp)
		return 0;
	return write_entry(ctx->meta->seq, (struct sock_common *)udp, IPPROTO_UDP);
}

char LICENSE[] SEC("license") = "GPL";
