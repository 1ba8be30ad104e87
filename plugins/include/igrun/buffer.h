/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Event output that never loses silently: every record that cannot be written bumps
 * gadget_lost_events (one counter per CPU), which igrun reads and reports as "lost N events".
 */
#ifndef IGRUN_BUFFER_H
#define IGRUN_BUFFER_H

#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gadget_lost_events SEC(".maps");

/* A ring buffer for events; igrun sizes it at load time (flag or per gadget). */
#define GADGET_RINGBUF(name)                                                                \
	struct {                                                                            \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                                         \
		__uint(max_entries, 256 * 1024);                                            \
	} name SEC(".maps")

static __always_inline void gadget_count_lost(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&gadget_lost_events, &zero);

	if (lost)
		__sync_fetch_and_add(lost, 1);
}

/*
 * Wakeups. The reader sleeps until the ring buffer holds more than an eighth of its size
 * that it has not looked at yet (or its poll times out, within 100 ms): a record that leaves
 * more than that waiting wakes it (BPF_RB_FORCE_WAKEUP), any other record does not
 * (BPF_RB_NO_WAKEUP). The kernel's default, a wakeup whenever the reader had caught up, costs
 * one wakeup per event at moderate rates; no wakeup at all would let a sleeping reader's
 * buffer overflow. With the watermark, a busy buffer wakes its reader while seven eighths of
 * it are still free.
 *
 * igrun reads a batch in place, in the ring buffer, and gives its space back only once the
 * batch has been through the operators; meanwhile it waits for more records to join the
 * batch. It writes where its look ended in gadget_ring_seen, and the watermark counts from
 * there: the records it already holds would otherwise wake it at every new record. A reader
 * that never writes it (0, or behind the consumer position) gets the plain watermark.
 */
#define GADGET_WAKEUP_FRACTION 8

__u64 gadget_ring_seen SEC(".bss");

static __always_inline __u64 gadget_wakeup_flags(void *map, __u64 adding)
{
	__u64 prod = bpf_ringbuf_query(map, BPF_RB_PROD_POS);
	__u64 from = bpf_ringbuf_query(map, BPF_RB_CONS_POS);
	__u64 seen = gadget_ring_seen;

	if (seen > from && seen <= prod)
		from = seen;
	return prod - from + adding >
			       bpf_ringbuf_query(map, BPF_RB_RING_SIZE) / GADGET_WAKEUP_FRACTION ?
		       BPF_RB_FORCE_WAKEUP :
		       BPF_RB_NO_WAKEUP;
}

/* Reserve a record of `size` bytes, counting a failure as a lost event. */
static __always_inline void *gadget_reserve_buf(void *map, __u64 size)
{
	void *rec = bpf_ringbuf_reserve(map, size, 0);

	if (!rec)
		gadget_count_lost();
	return rec;
}

/* Submit a record from gadget_reserve_buf, waking the reader only past the watermark (the
 * reserved record already counts in the buffer's data). Use it instead of bpf_ringbuf_submit. */
static __always_inline void gadget_submit_buf(void *map, void *rec)
{
	bpf_ringbuf_submit(rec, gadget_wakeup_flags(map, 0));
}

/* Copy `size` bytes to the ring buffer, counting a failure as a lost event; wakeups as for
 * gadget_submit_buf. */
static __always_inline long gadget_output_buf(void *map, void *data, __u64 size)
{
	long err = bpf_ringbuf_output(map, data, size, gadget_wakeup_flags(map, size));

	if (err)
		gadget_count_lost();
	return err;
}

/* Send `size` bytes through a perf event array, counting a failure as a lost event. User
 * space then reads this counter instead of perf's lost records (which would count twice).
 * Perf buffers have their watermark on the reader's side (perf_event_attr.wakeup_watermark). */
static __always_inline long gadget_perf_output(void *ctx, void *map, void *data, __u64 size)
{
	long err = bpf_perf_event_output(ctx, map, BPF_F_CURRENT_CPU, data, size);

	if (err)
		gadget_count_lost();
	return err;
}

#endif
