/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Interval gadgets (top): the BPF side adds to one entry per key of a hash map, and igrun
 * drains the whole map once per interval (lookup and delete in batches), so every interval
 * starts again from zero. A key that finds the map full is counted in gadget_lost_events and
 * reported as lost: a row missing from a top list is never silent.
 *
 * GADGET_TOPPER(name, map, key_struct, value_struct) (igrun/macros.h) keeps both structs in the
 * object's BTF, where igrun reads the row layout: the key's members, then the value's.
 */
#ifndef IGRUN_TOP_H
#define IGRUN_TOP_H

#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include <igrun/buffer.h>

#ifndef EEXIST
#define EEXIST 17
#endif

/*
 * The value of `key` in `map`, made from `zero` (a zeroed value) when the key is new this
 * interval; NULL, counted as a lost event, when the map has no room. Add to the value's
 * counters with __sync_fetch_and_add: several CPUs may hold the same entry.
 */
static __always_inline void *gadget_stats_entry(void *map, const void *key, const void *zero)
{
	void *value = bpf_map_lookup_elem(map, key);
	long err;

	if (value)
		return value;
	err = bpf_map_update_elem(map, key, zero, BPF_NOEXIST);
	if (err && err != -EEXIST) {
		gadget_count_lost();
		return NULL;
	}
	return bpf_map_lookup_elem(map, key);
}

#endif
