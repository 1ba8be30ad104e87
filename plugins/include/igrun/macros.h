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

#endif
