// SPDX-License-Identifier: GPL-2.0
/*
 * trace oomkill: one event per process the OOM killer kills.
 *
 * The oom/mark_victim tracepoint fires once per victim (the kernel marks a task only once), in
 * the context of the task whose allocation could not be served: that task is the trigger, and
 * the tracepoint's record describes the victim. Older kernels record only the victim's
 * pid; its comm and memory are then left empty (CO-RE drops the reads of missing fields).
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/buffer.h>
#include <igrun/macros.h>
#include <igrun/mntns_filter.h>
#include <igrun/process.h>

#include "oomkill.h"

/* log2 of the page size; the tracepoint reports memory in kB. Set by igrun at load. */
const volatile __u32 page_shift = 12;

GADGET_RINGBUF(events);
GADGET_TRACER(oomkill, events, event);

SEC("tracepoint/oom/mark_victim")
int ig_oom_kill(struct trace_event_raw_mark_victim *ctx)
{
	struct event *event;
	__u64 kb = 0;
	__u32 loc;

	if (gadget_should_discard_mntns_id(gadget_get_mntns_id()))
		return 0;
	event = gadget_reserve_buf(&events, sizeof(*event));
	if (!event)
		return 0;

	event->timestamp = bpf_ktime_get_boot_ns();
	gadget_process_populate(&event->trigger);

	/* task->pid: the thread group leader, unless it had exited and a thread was chosen. */
	event->kpid = ctx->pid;
	event->kcomm[0] = '\0';
	if (bpf_core_field_exists(ctx->__data_loc_comm)) {
		/* __data_loc: the low 16 bits are the string's offset in the record. */
		loc = BPF_CORE_READ(ctx, __data_loc_comm);
		bpf_probe_read_kernel_str(&event->kcomm, sizeof(event->kcomm),
					  (void *)ctx + (loc & 0xffff));
	}
	if (bpf_core_field_exists(ctx->anon_rss))
		kb = BPF_CORE_READ(ctx, anon_rss) + BPF_CORE_READ(ctx, file_rss) +
		     BPF_CORE_READ(ctx, shmem_rss);
	event->pages = kb >> (page_shift - 10);

	gadget_submit_buf(&events, event);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
