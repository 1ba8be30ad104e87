// SPDX-License-Identifier: GPL-2.0
/* burst through a ring buffer: each event is reserved in the ring and copied in place. */
#include "burst.h"

GADGET_RINGBUF(events);

static __always_inline void output_event(void *ctx, struct burst_event *event)
{
	struct burst_event *rec = gadget_reserve_buf(&events, sizeof(*rec));

	if (!rec)
		return;
	*rec = *event;
	gadget_submit_buf(&events, rec);
}
