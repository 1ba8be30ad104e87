/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GADGET_TRACER(name, map, struct) declares that `map` (a ring or perf buffer) carries events
 * of `struct`: it keeps the struct in the object's BTF, where igrun reads its layout, and
 * records the pairing under a name igrun can find without any Python.
 */
#ifndef IGRUN_MACROS_H
#define IGRUN_MACROS_H

#define GADGET_TRACER(name, map_name, event_type)                                          \
	const void *gadget_tracer_##name##___##map_name##___##event_type                      \
		__attribute__((unused));                                                      \
	const struct event_type *__gadget_tracer_type_##name __attribute__((unused))

/*
 * GADGET_SNAPSHOTTER(name, struct, program) declares that the iterator `program` writes
 * records of `struct` with bpf_seq_write(): `igrun run` reads the iterator once and shows
 * every record. Like GADGET_TRACER it keeps the struct in the object's BTF.
 */
#define GADGET_SNAPSHOTTER(name, event_type, program)                                      \
	const void *gadget_snapshotter_##name##___##event_type##___##program                  \
		__attribute__((unused));                                                      \
	const struct event_type *__gadget_snapshotter_type_##name __attribute__((unused))

/*
 * GADGET_TOPPER(name, map, key_struct, value_struct) declares that the hash map `map` holds one
 * row per key for an interval gadget (igrun/top.h): igrun drains it every interval and a row
 * is the key's members followed by the value's. It keeps both structs in the object's BTF.
 */
#define GADGET_TOPPER(name, map_name, key_type, value_type)                               \
	const void *gadget_topper_##name##___##map_name##___##key_type##___##value_type      \
		__attribute__((unused));                                                      \
	const struct key_type *__gadget_topper_key_##name __attribute__((unused));           \
	const struct value_type *__gadget_topper_value_##name __attribute__((unused))

/*
 * GADGET_PARAM(var) makes the global `var` (a `const volatile` integer, bool or char array)
 * a flag of `igrun run`: --var, typed after the variable, its initial value the default.
 */
#define GADGET_PARAM(var) const void *gadget_param_##var __attribute__((unused))

#endif
