// SPDX-License-Identifier: GPL-2.0
/* burst through a perf event array: one buffer per CPU, written from the stack. */
#include "burst.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

static __always_inline void output_event(void *ctx, struct burst_event *event)
{
	gadget_perf_output(ctx, &events, event, sizeof(*event));
}
