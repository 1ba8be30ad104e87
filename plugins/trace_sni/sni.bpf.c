// SPDX-License-Identifier: GPL-2.0
/*
 * trace sni: the server name (SNI extension) of every TLS ClientHello that enters or leaves a
 * selected network namespace, over IPv4 or IPv6, with the process that owns the socket
 * (igrun/packet.h). Every offset is read with a bounds-checked load and the extension walk is
 * bounded: a malformed hello is skipped.
 */
#include <vmlinux.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/packet.h>

#define TLS_CONTENT_TYPE_HANDSHAKE 0x16
#define TLS_HANDSHAKE_TYPE_CLIENT_HELLO 0x1
#define TLS_EXTENSION_SERVER_NAME 0x0
#define TLS_MAX_EXTENSIONS 32
#define TLS_MAX_SERVER_NAME_LEN 128
#define TLS_HANDSHAKE_TYPE_OFF 5
#define TLS_SESSION_ID_LENGTH_OFF 43 /* record 5, handshake 4, version 2, random 32 */

struct sni_event {
	gadget_timestamp timestamp;
	struct gadget_process proc; /* the socket's owner; zero when not known */
	__u64 netns;
	__u8 pkt_type;
	__u8 owner_known;
	__u8 name[TLS_MAX_SERVER_NAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sni_event);
} scratch SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(sni, events, sni_event);

GADGET_PACKET_OWNER_PROGRAMS

/* The offset of the server name extension among the extensions from `off` to `end`, or 0.
 * A global function: the verifier checks its bounded loop once. */
__attribute__((noinline)) __u32 find_server_name(struct __sk_buff *skb, __u32 off, __u32 end)
{
	__u16 ext[2]; /* type, length */

	for (int i = 0; i < TLS_MAX_EXTENSIONS; i++) {
		if (off + 4 > end || bpf_skb_load_bytes(skb, off, ext, sizeof(ext)))
			return 0;
		if (bpf_ntohs(ext[0]) == TLS_EXTENSION_SERVER_NAME)
			return off;
		off += 4 + bpf_ntohs(ext[1]);
	}
	return 0;
}

/* The length of the server name copied into `out`, or 0 for no ClientHello with one. */
static __always_inline __u32 parse_sni(struct __sk_buff *skb, __u32 off, __u8 *out)
{
	__u32 found;
	__u8 hdr[6], len8;
	__u16 len16;
	__u32 len;

	if (bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)))
		return 0;
	if (hdr[0] != TLS_CONTENT_TYPE_HANDSHAKE || hdr[1] != 3 ||
	    hdr[TLS_HANDSHAKE_TYPE_OFF] != TLS_HANDSHAKE_TYPE_CLIENT_HELLO)
		return 0;
	off += TLS_SESSION_ID_LENGTH_OFF;
	if (bpf_skb_load_bytes(skb, off, &len8, 1)) /* session id */
		return 0;
	off += 1 + len8;
	if (bpf_skb_load_bytes(skb, off, &len16, 2)) /* cipher suites */
		return 0;
	off += 2 + bpf_ntohs(len16);
	if (bpf_skb_load_bytes(skb, off, &len8, 1)) /* compression methods */
		return 0;
	off += 1 + len8;
	if (bpf_skb_load_bytes(skb, off, &len16, 2)) /* extensions */
		return 0;
	found = find_server_name(skb, off + 2, off + 2 + bpf_ntohs(len16));
	if (!found)
		return 0;
	/* type 2, length 2, list length 2, name type 1, name length 2, name */
	if (bpf_skb_load_bytes(skb, found + 7, &len16, 2))
		return 0;
	len = bpf_ntohs(len16);
	if (len == 0 || len > TLS_MAX_SERVER_NAME_LEN - 1)
		return 0;
	/* Keep the bounds the verifier needs ([1, 127]) where the compiler would lose them. */
	asm volatile("%0 &= 0x7f\n\tif %0 != 0 goto +1\n\t%0 = 1" : "+r"(len));
	if (bpf_skb_load_bytes(skb, found + 9, out, len))
		return 0;
	return len;
}

SEC("socket")
int ig_trace_sni(struct __sk_buff *skb)
{
	struct gadget_packet p = {};
	const struct gadget_process *owner;
	struct sni_event *e;
	__u32 zero = 0;

	if (!gadget_packet_parse(skb, &p) || p.proto != GADGET_IPPROTO_TCP || p.payload >= p.len)
		return 0;
	e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	__builtin_memset(e->name, 0, sizeof(e->name));
	if (!parse_sni(skb, p.payload, e->name))
		return 0;
	e->timestamp = bpf_ktime_get_boot_ns();
	e->netns = p.netns;
	e->pkt_type = p.pkt_type;
	owner = gadget_packet_owner(&p);
	if (owner) {
		e->proc = *owner;
		e->owner_known = 1;
	} else {
		__builtin_memset(&e->proc, 0, sizeof(e->proc));
		e->owner_known = 0;
	}
	gadget_output_buf(&events, e, sizeof(*e));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
