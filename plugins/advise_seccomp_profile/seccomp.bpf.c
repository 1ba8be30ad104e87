// SPDX-License-Identifier: GPL-2.0
/*
 * advise seccomp-profile: the set of syscalls each mount namespace makes, one bit per
 * syscall number, from the raw tracepoint sys_enter (no kprobe).
 *
 * runc: the container's first process is runc's own init process ("runc:[2:INIT]") for a
 * while, in the container's mount namespace; it mounts, pivots the root, and so on, before it
 * loads the container's seccomp filter and execs the container's program. Only what it calls
 * once the filter is in place needs allowing, so, as Inspektor Gadget does, a runc process is
 * recorded only from its prctl(PR_GET_PDEATHSIG) on (runc 1.x's init calls it after the root
 * is set up, just before the filter), leaving out seccomp() and prctl(PR_SET_NO_NEW_PRIVS),
 * which come before the filter. The mark is per process and cleared at its execve, so a
 * runc init that reuses a pid starts unmarked.
 *
 * 32-bit (x86 compat) callers are left out: their numbers are another table.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include <igrun/mntns_filter.h>

#include "seccomp.h"

#if defined(__TARGET_ARCH_x86)
#define NR_PRCTL 157
#define NR_SECCOMP 317
#define NR_EXECVE 59
#define NR_EXECVEAT 322
#define TS_COMPAT 0x0002
#elif defined(__TARGET_ARCH_arm64)
#define NR_PRCTL 167
#define NR_SECCOMP 277
#define NR_EXECVE 221
#define NR_EXECVEAT 281
#else
#error "advise seccomp-profile knows the syscall numbers of x86_64 and arm64 only"
#endif

#define PR_GET_PDEATHSIG 2
#define PR_SET_NO_NEW_PRIVS 38

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GADGET_MAX_CONTAINERS);
	__type(key, __u64); /* mount namespace id */
	__type(value, struct syscalls);
} syscalls_per_mntns SEC(".maps");

/* runc processes (by pid) past their prctl(PR_GET_PDEATHSIG): recorded from then on. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} runc_recording SEC(".maps");

/* A blank bitmap to insert from (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct syscalls);
} blank SEC(".maps");

struct syscalls _syscalls = {}; /* keeps the struct in BTF for user space */

static __always_inline bool is_runc(void)
{
	char comm[5];

	bpf_get_current_comm(comm, sizeof(comm));
	return comm[0] == 'r' && comm[1] == 'u' && comm[2] == 'n' && comm[3] == 'c';
}

SEC("raw_tracepoint/sys_enter")
int ig_seccomp_e(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = ctx->args[1];

#if defined(__TARGET_ARCH_x86)
	if (BPF_CORE_READ(task, thread_info.status) & TS_COMPAT)
		return 0;
#endif
	if (id >= SYSCALLS_BITS)
		return 0;

	if (is_runc()) {
		__u32 pid = bpf_get_current_pid_tgid() >> 32;
		struct pt_regs *regs = (struct pt_regs *)ctx->args[0];

		if (!bpf_map_lookup_elem(&runc_recording, &pid)) {
			if (id == NR_PRCTL && PT_REGS_PARM1_CORE_SYSCALL(regs) == PR_GET_PDEATHSIG) {
				__u8 one = 1;
				bpf_map_update_elem(&runc_recording, &pid, &one, BPF_ANY);
			}
			return 0;
		}
		if (id == NR_SECCOMP ||
		    (id == NR_PRCTL && PT_REGS_PARM1_CORE_SYSCALL(regs) == PR_SET_NO_NEW_PRIVS))
			return 0;
		if (id == NR_EXECVE || id == NR_EXECVEAT)
			bpf_map_delete_elem(&runc_recording, &pid);
	}

	__u64 mntns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	if (mntns == 0 || gadget_should_discard_mntns_id(mntns))
		return 0;

	struct syscalls *seen = bpf_map_lookup_elem(&syscalls_per_mntns, &mntns);
	if (!seen) {
		__u32 zero = 0;
		struct syscalls *empty = bpf_map_lookup_elem(&blank, &zero);

		if (!empty)
			return 0;
		bpf_map_update_elem(&syscalls_per_mntns, &mntns, empty, BPF_NOEXIST);
		seen = bpf_map_lookup_elem(&syscalls_per_mntns, &mntns);
		if (!seen)
			return 0;
	}
	__u64 bit = 1ULL << (id & 63);
	__u64 *word = &seen->bits[(id >> 6) & (SYSCALLS_WORDS - 1)];

	if (!(*word & bit))
		__sync_fetch_and_or(word, bit);
	return 0;
}

char _license[] SEC("license") = "GPL";
