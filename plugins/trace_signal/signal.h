/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_SIGNAL_H
#define IGRUN_TRACE_SIGNAL_H

/* One signal sent: by the kernel or a process (signal/signal_generate), or asked for with
 * kill(), tkill() or tgkill() (then ret is what the syscall returned, even when it failed and
 * no signal was generated). */
struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc; /* the sender */
	__s32 tpid; /* target: the task the signal went to, else the syscall's pid argument */
	__s32 sig;
	__s32 ret;
};

#endif
