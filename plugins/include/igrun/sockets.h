/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which process owns a socket, for events the kernel raises outside the owner (a retransmit
 * from a timer, a drop in softirq). igrun's socket enricher fills gadget_sockets, keyed by
 * socket cookie, from cgroup sock hooks that run in the owner's own context (socket creation,
 * connect, bind, sendmsg) and, at start, from iterators over every task's open sockets. A
 * gadget that declares this map gets the enricher's at load time; gadget_socket_owner() then
 * answers for any struct sock, or returns NULL when the owner is not known.
 *
 * The map has two kinds of key. Most entries are keyed by socket cookie. The kernel gives a
 * socket its cookie lazily and a tracing program may not ask for one on a socket it reached
 * by walking kernel memory, so an IPv4/IPv6 socket opened before the enricher started that
 * still has no cookie (the start-up TCP and UDP iterators give one to the sockets in igrun's
 * network namespace) is keyed by its struct sock address instead. Cookies count up from 1 and
 * never reach kernel addresses, so the two never meet. An address is looked up only for a
 * socket without a cookie; every socket a task creates afterwards gets one at creation, and
 * releasing a socket deletes both keys, so a reused address finds no stale owner.
 */
#ifndef IGRUN_SOCKETS_H
#define IGRUN_SOCKETS_H

#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/process.h>

#define GADGET_MAX_SOCKETS 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GADGET_MAX_SOCKETS);
	__type(key, __u64); /* socket cookie */
	__type(value, struct gadget_process); /* the owner */
} gadget_sockets SEC(".maps");

/* The cookie the kernel gave the socket; 0 when nobody asked for one yet. */
static __always_inline __u64 gadget_socket_cookie(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
}

/* The socket's key in gadget_sockets: its cookie, or its address while it has none. */
static __always_inline __u64 gadget_socket_key(const struct sock *sk)
{
	__u64 cookie = gadget_socket_cookie(sk);

	return cookie ? cookie : (__u64)sk;
}

static __always_inline const struct gadget_process *gadget_socket_owner(const struct sock *sk)
{
	__u64 key;

	if (!sk)
		return NULL;
	key = gadget_socket_key(sk);
	return bpf_map_lookup_elem(&gadget_sockets, &key);
}

#endif
