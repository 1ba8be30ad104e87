// SPDX-License-Identifier: GPL-2.0
/* A valid object that declares no GADGET_TRACER nor GADGET_SNAPSHOTTER: nothing to run. */
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

__u64 calls = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_undeclared(void *ctx)
{
	__sync_fetch_and_add(&calls, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
