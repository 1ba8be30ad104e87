// SPDX-License-Identifier: GPL-2.0
/*
 * trace dns: every DNS query and response that enters or leaves a selected network namespace,
 * over UDP (any port, as ig) or TCP (port 53, after the 2-byte length prefix), IPv4 or IPv6,
 * with the process that owns the socket (igrun/packet.h).
 *
 * Everything is parsed here with bounded loops and bounds-checked loads: the question name is
 * copied raw (its labels are joined in user space), and the addresses of up to
 * DNS_MAX_ADDRS A/AAAA answers are taken from the first DNS_MAX_RRS answer records, whose
 * names may be compressed or not. A message that does not parse is skipped.
 *
 * The latency of a response is the time since its query left the same namespace: the query's
 * time is kept in `queries`, keyed by namespace, protocol, id, addresses and ports, and taken
 * out by the response (an LRU map: a query that gets no response is forgotten in time).
 */
#include <vmlinux.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/packet.h>

#define DNS_NAME_LEN 256
#define DNS_MAX_LABELS 128
#define DNS_MAX_ADDRS 8
#define DNS_MAX_RRS 16
#define DNS_MAX_RR_LABELS 32
#define DNS_HDR_LEN 12
#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28
#define DNS_CLASS_IN 1
#define DNS_PORT 53

const volatile __u64 dns_timeout_ns = 10000000000ULL;

static __always_inline char hex_digit(__u16 v)
{
	v &= 0xf;
	return v < 10 ? '0' + v : 'a' + v - 10;
}

struct dns_event {
	gadget_timestamp timestamp;
	struct gadget_process proc; /* the socket's owner; zero when not known */
	__u64 netns;
	__u64 latency_ns;
	struct gadget_connection conn;
	__u8 proto;
	__u8 qr;
	__u8 pkt_type;
	__u8 rcode;
	__u8 owner_known;
	__u16 id;
	__u16 qtype;
	__u16 ancount;
	__u16 anaddrcount;
	char id_text[6]; /* the id in hex, as ig writes it: written as it is, never per event */
	__u8 name[DNS_NAME_LEN];      /* the question's labels, NUL-padded */
	__u8 anaddr[DNS_MAX_ADDRS][16]; /* IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d) */
};

struct query_key {
	__u32 netns;
	__u16 id;
	__u16 client_port;
	__u16 server_port;
	__u8 proto;
	__u8 pad;
	__u8 client[16];
	__u8 server[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct query_key);
	__type(value, __u64);
} queries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dns_event);
} scratch SEC(".maps");

GADGET_RINGBUF(events);
GADGET_TRACER(dns, events, dns_event);

GADGET_PACKET_OWNER_PROGRAMS

static __always_inline int load_u8(struct __sk_buff *skb, __u32 off, __u8 *v)
{
	return bpf_skb_load_bytes(skb, off, v, 1);
}

/* The offset just past the name at `off` (labels, a compression pointer, or labels ending in
 * one), or 0 when it runs out of the packet or has too many labels. Global functions like
 * this one are verified once, whatever their callers' paths. */
__attribute__((noinline)) __u32 skip_name(struct __sk_buff *skb, __u32 off)
{
	__u8 len;

	for (int i = 0; i < DNS_MAX_RR_LABELS; i++) {
		if (load_u8(skb, off, &len))
			return 0;
		if (len == 0)
			return off + 1;
		if ((len & 0xc0) == 0xc0)
			return off + 2;
		if (len & 0xc0)
			return 0;
		off += len + 1;
	}
	return 0;
}

/* The answer record at `off`: its address goes to e->anaddr[n] when it is an A or AAAA
 * record of class IN. Returns the next record's offset, plus 1 << 32 when an address was
 * taken, or -1 (stop) for a record that runs out of the packet. */
__attribute__((noinline)) __s64 one_answer(struct __sk_buff *skb, __u32 off, struct dns_event *e,
					   __u32 n)
{
	struct {
		__u16 type;
		__u16 class;
		__u32 ttl;
		__u16 rdlength;
	} __attribute__((packed)) rr;
	__u8 *addr;

	if (!e)
		return -1;
	off = skip_name(skb, off);
	if (!off || bpf_skb_load_bytes(skb, off, &rr, sizeof(rr)))
		return -1;
	off += sizeof(rr);
	rr.type = bpf_ntohs(rr.type);
	rr.rdlength = bpf_ntohs(rr.rdlength);
	addr = e->anaddr[n & (DNS_MAX_ADDRS - 1)];
	if (bpf_ntohs(rr.class) != DNS_CLASS_IN)
		return off + rr.rdlength;
	if (rr.type == DNS_TYPE_A && rr.rdlength == 4) {
		__builtin_memset(addr, 0, 10);
		addr[10] = 0xff;
		addr[11] = 0xff;
		if (bpf_skb_load_bytes(skb, off, addr + 12, 4))
			return -1;
		return (1ULL << 32) | (off + 4);
	}
	if (rr.type == DNS_TYPE_AAAA && rr.rdlength == 16) {
		if (bpf_skb_load_bytes(skb, off, addr, 16))
			return -1;
		return (1ULL << 32) | (off + 16);
	}
	return off + rr.rdlength;
}

/* The addresses of the A and AAAA answers among the first DNS_MAX_RRS records from `off`. */
static __always_inline __u16 load_addresses(struct __sk_buff *skb, __u32 off, __u16 ancount,
					    struct dns_event *e)
{
	__u32 n = 0;
	__s64 next;

	for (int i = 0; i < DNS_MAX_RRS; i++) {
		if (i >= ancount || n >= DNS_MAX_ADDRS)
			break;
		next = one_answer(skb, off, e, n);
		if (next < 0)
			break;
		off = (__u32)next;
		n += next >> 32 ? 1 : 0;
	}
	return n;
}

/* The length of the question name at `off` (its bytes up to and including the root label),
 * or 0 when it is not a well-formed uncompressed name of less than DNS_NAME_LEN bytes. */
__attribute__((noinline)) __u32 name_length(struct __sk_buff *skb, __u32 off)
{
	__u32 pos = 0;
	__u8 len;

	for (int i = 0; i < DNS_MAX_LABELS; i++) {
		if (pos >= DNS_NAME_LEN - 1 || load_u8(skb, off + pos, &len))
			return 0;
		if (len == 0)
			return pos + 1;
		if (len & 0xc0)
			return 0;
		pos += len + 1;
	}
	return 0;
}

__attribute__((noinline)) int latency(struct dns_event *e, const struct gadget_packet *p)
{
	struct query_key key = {};
	bool query_out, response_in;
	__u64 *sent;

	if (!e || !p)
		return 0;
	key.netns = p->netns;
	key.id = e->id;
	key.proto = p->proto;
	query_out = !e->qr && p->pkt_type == GADGET_PACKET_OUTGOING;
	response_in = e->qr && p->pkt_type == GADGET_PACKET_HOST;
	if (!query_out && !response_in)
		return 0;
	if (query_out) {
		key.client_port = p->conn.sport;
		key.server_port = p->conn.dport;
		__builtin_memcpy(key.client, p->conn.saddr, 16);
		__builtin_memcpy(key.server, p->conn.daddr, 16);
		bpf_map_update_elem(&queries, &key, &e->timestamp, BPF_ANY);
		return 0;
	}
	key.client_port = p->conn.dport;
	key.server_port = p->conn.sport;
	__builtin_memcpy(key.client, p->conn.daddr, 16);
	__builtin_memcpy(key.server, p->conn.saddr, 16);
	sent = bpf_map_lookup_elem(&queries, &key);
	if (!sent)
		return 0;
	if (*sent < e->timestamp && e->timestamp - *sent <= dns_timeout_ns)
		e->latency_ns = e->timestamp - *sent;
	bpf_map_delete_elem(&queries, &key);
	return 0;
}

SEC("socket")
int ig_trace_dns(struct __sk_buff *skb)
{
	struct gadget_packet p = {};
	const struct gadget_process *owner;
	struct dns_event *e;
	__u32 zero = 0, off, namelen;
	__u16 hdr[6];
	__u16 flags;

	if (!gadget_packet_parse(skb, &p))
		return 0;
	off = p.payload;
	if (p.proto == GADGET_IPPROTO_TCP) {
		/* DNS over TCP: a segment that starts a message (its length first) */
		if (p.conn.sport != DNS_PORT && p.conn.dport != DNS_PORT)
			return 0;
		off += 2;
	}
	if (bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)))
		return 0;
	flags = bpf_ntohs(hdr[1]);
	if (bpf_ntohs(hdr[2]) != 1) /* one question, as ig */
		return 0;
	if (!(flags & 0x8000) && (hdr[3] || hdr[4])) /* a query with answers is no query */
		return 0;
	e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	off += DNS_HDR_LEN;
	if (off >= p.len)
		return 0;
	namelen = name_length(skb, off);
	if (!namelen || namelen > DNS_NAME_LEN - 1)
		return 0;
	__builtin_memset(e->name, 0, sizeof(e->name));
	/* Keep the bounds the verifier needs ([1, 255]) where the compiler would lose them. */
	asm volatile("%0 &= 0xff\n\tif %0 != 0 goto +1\n\t%0 = 1" : "+r"(namelen));
	if (bpf_skb_load_bytes(skb, off, e->name, namelen))
		return 0;
	off += namelen;
	if (bpf_skb_load_bytes(skb, off, &e->qtype, 2))
		return 0;
	e->qtype = bpf_ntohs(e->qtype);
	e->timestamp = bpf_ktime_get_boot_ns();
	e->netns = p.netns;
	e->conn = p.conn;
	e->proto = p.proto;
	e->pkt_type = p.pkt_type;
	e->id = bpf_ntohs(hdr[0]);
	e->id_text[0] = hex_digit(e->id >> 12);
	e->id_text[1] = hex_digit(e->id >> 8);
	e->id_text[2] = hex_digit(e->id >> 4);
	e->id_text[3] = hex_digit(e->id);
	e->id_text[4] = 0;
	e->qr = flags >> 15;
	e->rcode = e->qr ? flags & 0xf : 0;
	e->ancount = bpf_ntohs(hdr[3]);
	e->latency_ns = 0;
	owner = gadget_packet_owner(&p);
	if (owner) {
		e->proc = *owner;
		e->owner_known = 1;
	} else {
		__builtin_memset(&e->proc, 0, sizeof(e->proc));
		e->owner_known = 0;
	}
	__builtin_memset(e->anaddr, 0, sizeof(e->anaddr));
	e->anaddrcount = e->qr ? load_addresses(skb, off + 4, e->ancount, e) : 0;
	latency(e, &p);
	gadget_output_buf(&events, e, sizeof(*e));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
