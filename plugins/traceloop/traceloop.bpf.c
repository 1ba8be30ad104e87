// SPDX-License-Identifier: GPL-2.0
/*
 * traceloop: the last syscalls of each selected container, kept in the kernel.
 *
 * tp_btf/sys_enter (a raw tracepoint with typed arguments) writes each syscall of a traced mount namespace into the next
 * slot of that container's ring (an array of ring_size slots plus a head, found in
 * `rings` by mount-ns id), with its arguments and up to CONTENTS of the strings and buffers
 * they point to; tp_btf/sys_exit adds the return value (and the buffers a call fills,
 * such as read's) to the same slot, found again through the thread's local storage. Nothing
 * is sent to user space while the run lasts: user space reads the rings when asked.
 */
#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include <igrun/types.h>

#include "traceloop.h"

const volatile __u32 ring_size = 1;
const volatile bool filter_syscall = false;
const volatile __u32 ignore_tgid = 0; /* igrun itself, when it runs in a traced namespace */

const struct syscall_record *unused_record __attribute__((unused));

struct ring {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct syscall_record));
	__uint(max_entries, 1);
};

/* Each ring is an array of ring_size slots plus the head: BPF_F_INNER_MAP lets the arrays put
 * into `rings` have any number of entries (so the ring size is a run's choice), and a slot is
 * found by its index, without hashing, three times per syscall. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(key_size, sizeof(__u64));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1024);
	__array(values, struct ring);
} rings SEC(".maps");

/* By syscall number: arrays, whose lookups the verifier inlines (no hashing per syscall). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct syscall_def);
	__uint(max_entries, 1024);
} syscalls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u8);
	__uint(max_entries, 1024);
} syscall_filters SEC(".maps");

/* The syscall a thread is in: where its record is, for sys_exit. */
struct pending {
	__u64 seq;
	__u64 mntns_id;
	__u32 slot;
	__u16 nr;
	__u8 at_exit; /* an argument is copied at exit (read's buffer) */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pending);
} pending SEC(".maps");

/* The syscall's arguments, read straight from the registers it was called with: in a
 * tp_btf program the pt_regs pointer is typed, so these are plain loads, not helper calls. */
#if defined(__TARGET_ARCH_x86)
#define SYSCALL_ARGS_OF(regs) {regs->di, regs->si, regs->dx, regs->r10, regs->r8, regs->r9}
#elif defined(__TARGET_ARCH_arm64)
#define SYSCALL_ARGS_OF(regs)                                                                 \
	{regs->orig_x0, regs->regs[1], regs->regs[2], regs->regs[3], regs->regs[4], regs->regs[5]}
#else
#error "traceloop: unknown architecture"
#endif

/* Copy `len` bytes (at most CONTENT_LEN) of user memory into content `c` of `r`. */
static __always_inline void copy_buf(struct syscall_record *r, __u32 c, __u64 ptr, __u64 len)
{
	if (c >= CONTENTS)
		return;
	r->content_cut[c] = len > CONTENT_LEN;
	if (len > CONTENT_LEN)
		len = CONTENT_LEN;
	r->content_len[c] = len;
	if (len == 0)
		return;
	if (bpf_probe_read_user(&r->content[c * CONTENT_LEN], len & (2 * CONTENT_LEN - 1),
				(void *)ptr))
		r->content_len[c] = 0xffff;
}

static __always_inline void copy_str(struct syscall_record *r, __u32 c, __u64 ptr)
{
	long n;

	if (c >= CONTENTS)
		return;
	n = bpf_probe_read_user_str(&r->content[c * CONTENT_LEN], CONTENT_LEN, (void *)ptr);
	if (n <= 0) {
		r->content_len[c] = 0xffff;
		return;
	}
	r->content_len[c] = n - 1;
	r->content_cut[c] = n == CONTENT_LEN;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(ig_traceloop_e, struct pt_regs *regs, long id)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 nr = id;
	__u64 mntns_id = task->nsproxy->mnt_ns->ns.inum;
	struct syscall_record *head, *r;
	struct syscall_def *def;
	struct pending *p;
	__u32 key, slot, c = 0;
	__u8 at_exit = 0;
	__u64 seq, pid_tgid;
	void *ring;
	int i;

	ring = bpf_map_lookup_elem(&rings, &mntns_id);
	if (!ring)
		return 0;
	if (filter_syscall) {
		__u8 *wanted = bpf_map_lookup_elem(&syscall_filters, &nr);

		if (!wanted || !*wanted)
			return 0;
	}
	pid_tgid = bpf_get_current_pid_tgid();
	if (pid_tgid >> 32 == ignore_tgid)
		return 0;
	key = ring_size;
	head = bpf_map_lookup_elem(ring, &key);
	if (!head)
		return 0;
	seq = __sync_fetch_and_add(&head->seq, 1) + 1;
	slot = (seq - 1) % ring_size;
	r = bpf_map_lookup_elem(ring, &slot);
	if (!r)
		return 0;

	r->seq = 0; /* while it is being written */
	r->timestamp = bpf_ktime_get_boot_ns();
	r->mntns_id = mntns_id;
	r->pid = pid_tgid >> 32;
	r->tid = (__u32)pid_tgid;
	r->cpu = bpf_get_smp_processor_id();
	r->nr = nr;
	r->ret = 0;
	r->exited = 0;
	/* task->comm with two loads (the typed task pointer allows them), not a helper call */
	__builtin_memcpy(r->comm, task->comm, sizeof(r->comm));
#pragma unroll
	for (i = 0; i < CONTENTS; i++) {
		r->content_arg[i] = 0xff;
		r->content_len[i] = 0;
		r->content_cut[i] = 0;
	}
	{
		__u64 args[SYSCALL_ARGS] = SYSCALL_ARGS_OF(regs);

		__builtin_memcpy(r->args, args, sizeof(args));
	}

	def = bpf_map_lookup_elem(&syscalls, &nr);
	if (def && def->kind[0] | def->kind[1] | def->kind[2] | def->kind[3] | def->kind[4] | def->kind[5]) {
#pragma unroll
		for (i = 0; i < SYSCALL_ARGS; i++) {
			__u8 kind = def->kind[i];

			if (kind == COPY_NONE || c >= CONTENTS)
				continue;
			r->content_arg[c] = i;
			if (kind == COPY_BUF_RET || kind == COPY_STR_RET)
				at_exit = 1;
			if (kind == COPY_STR) {
				copy_str(r, c, r->args[i]);
			} else if (kind == COPY_BUF) {
				__u8 len_arg = def->len_arg[i];

				if (len_arg < SYSCALL_ARGS)
					copy_buf(r, c, r->args[i], r->args[len_arg]);
			}
			c++;
		}
	}

	p = bpf_task_storage_get(&pending, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (p) {
		p->seq = seq;
		p->mntns_id = mntns_id;
		p->slot = slot;
		p->nr = nr;
		p->at_exit = at_exit;
	}
	r->seq = seq;
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(ig_traceloop_x, struct pt_regs *regs, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct syscall_record *r;
	struct syscall_def *def;
	struct pending *p;
	__u64 seq;
	__u32 nr;
	void *ring;
	int c;

	p = bpf_task_storage_get(&pending, task, 0, 0);
	if (!p || !p->seq)
		return 0;
	seq = p->seq;
	p->seq = 0;
	ring = bpf_map_lookup_elem(&rings, &p->mntns_id);
	if (!ring)
		return 0;
	r = bpf_map_lookup_elem(ring, &p->slot);
	if (!r || r->seq != seq)
		return 0; /* overwritten meanwhile */
	r->ret = ret;
	r->exited = 1;
	if (!p->at_exit)
		return 0;
	nr = p->nr;
	def = bpf_map_lookup_elem(&syscalls, &nr);
	if (!def)
		return 0;
#pragma unroll
	for (c = 0; c < CONTENTS; c++) {
		__u8 i = r->content_arg[c];
		__u8 kind;

		if (i >= SYSCALL_ARGS)
			continue;
		kind = def->kind[i];
		if (kind == COPY_BUF_RET)
			copy_buf(r, c, r->args[i], ret > 0 ? ret : 0);
		else if (kind == COPY_STR_RET && ret >= 0)
			copy_str(r, c, r->args[i]);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
