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

/* Reserve a record of `size` bytes, counting a failure as a lost event. */
static __always_inline void *gadget_reserve_buf(void *map, __u64 size)
{
	void *rec = bpf_ringbuf_reserve(map, size, 0);

	if (!rec)
		gadget_count_lost();
	return rec;
}

/* Copy `size` bytes to the ring buffer, counting a failure as a lost event. */
static __always_inline long gadget_output_buf(void *map, void *data, __u64 size)
{
	long err = bpf_ringbuf_output(map, data, size, 0);

	if (err)
		gadget_count_lost();
	return err;
}

/* Send `size` bytes through a perf event array, counting a failure as a lost event. User
 * space then reads this counter instead of perf's lost records (which would count twice). */
static __always_inline long gadget_perf_output(void *ctx, void *map, void *data, __u64 size)
{
	long err = bpf_perf_event_output(ctx, map, BPF_F_CURRENT_CPU, data, size);

	if (err)
		gadget_count_lost();
	return err;
}

#endif
