// SPDX-License-Identifier: GPL-2.0
/*
 * profile tcprtt: the distribution of TCP round-trip times as a log2 histogram, after
 * libbpf-tools' tcprtt as Inspektor Gadget runs it.
 *
 * Inspektor Gadget reads the smoothed RTT of the socket in a kprobe on tcp_rcv_established.
 * The tcp/tcp_probe tracepoint sits at the top of that same function, with the same socket:
 * this program reads the same srtt_us there (a raw tracepoint, no kprobe), so every segment an
 * established connection receives counts once, as in Inspektor Gadget.
 */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include <igrun/macros.h>
#include <igrun/top.h>

#include "tcprtt.h"

#define AF_INET 2
#define AF_INET6 10
#define MAX_ENTRIES 10240

const volatile bool targ_laddr_hist = false;
const volatile bool targ_raddr_hist = false;
const volatile __u16 targ_sport = 0;	/* host byte order, as skc_num */
const volatile __u16 targ_dport = 0;	/* network byte order, as skc_dport */
const volatile __u32 targ_saddr = 0;
const volatile __u32 targ_daddr = 0;
const volatile __u8 targ_saddr_v6[IPV6_LEN] = {};
const volatile __u8 targ_daddr_v6[IPV6_LEN] = {};
const volatile bool targ_ms = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct hist_key);
	__type(value, struct hist);
} hists SEC(".maps");

GADGET_TOPPER(tcprtt, hists, hist_key, hist);

static const struct hist zero;

static __always_inline bool ipv6_is_not_zero(const volatile __u8 addr[IPV6_LEN])
{
	for (int i = 0; i < IPV6_LEN; i++)
		if (addr[i])
			return true;
	return false;
}

static __always_inline bool ipv6_differs(const volatile __u8 a[IPV6_LEN], const __u8 b[IPV6_LEN])
{
	for (int i = 0; i < IPV6_LEN; i++)
		if (a[i] != b[i])
			return true;
	return false;
}

static __always_inline __u64 log2_u64(__u64 v)
{
	__u64 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r;
}

SEC("raw_tp/tcp_probe")
int ig_tcprtt(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	struct hist_key key = {};
	__u8 saddr6[IPV6_LEN], daddr6[IPV6_LEN];
	struct hist *histp;
	__u16 family;
	__u32 srtt;
	__u64 slot;

	if (targ_sport && targ_sport != BPF_CORE_READ(sk, __sk_common.skc_num))
		return 0;
	if (targ_dport && targ_dport != BPF_CORE_READ(sk, __sk_common.skc_dport))
		return 0;

	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	switch (family) {
	case AF_INET:
		if (ipv6_is_not_zero(targ_saddr_v6) || ipv6_is_not_zero(targ_daddr_v6))
			return 0;
		if (targ_saddr && targ_saddr != BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr))
			return 0;
		if (targ_daddr && targ_daddr != BPF_CORE_READ(sk, __sk_common.skc_daddr))
			return 0;
		if (targ_laddr_hist) {
			__u32 a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
			__builtin_memcpy(key.addr, &a, 4);
		} else if (targ_raddr_hist) {
			__u32 a = BPF_CORE_READ(sk, __sk_common.skc_daddr);
			__builtin_memcpy(key.addr, &a, 4);
		}
		if (targ_laddr_hist || targ_raddr_hist)
			key.ipversion = 4;
		break;
	case AF_INET6:
		if (targ_saddr || targ_daddr)
			return 0;
		BPF_CORE_READ_INTO(&saddr6, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&daddr6, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		if (ipv6_is_not_zero(targ_saddr_v6) && ipv6_differs(targ_saddr_v6, saddr6))
			return 0;
		if (ipv6_is_not_zero(targ_daddr_v6) && ipv6_differs(targ_daddr_v6, daddr6))
			return 0;
		if (targ_laddr_hist)
			__builtin_memcpy(key.addr, saddr6, IPV6_LEN);
		else if (targ_raddr_hist)
			__builtin_memcpy(key.addr, daddr6, IPV6_LEN);
		if (targ_laddr_hist || targ_raddr_hist)
			key.ipversion = 6;
		break;
	default:
		return 0;
	}

	histp = gadget_stats_entry(&hists, &key, &zero);
	if (!histp)
		return 0;
	srtt = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	if (targ_ms)
		srtt /= 1000U;
	slot = log2_u64(srtt);
	if (slot >= MAX_SLOTS)
		slot = MAX_SLOTS - 1;
	__sync_fetch_and_add(&histp->slots[slot], 1);
	__sync_fetch_and_add(&histp->latency, srtt);
	__sync_fetch_and_add(&histp->cnt, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
