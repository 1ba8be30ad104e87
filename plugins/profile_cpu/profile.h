/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_PROFILE_CPU_H
#define IGRUN_PROFILE_CPU_H

#define TASK_COMM_LEN 16
/* perf's default kernel.perf_event_max_stack: deeper frames are cut, as by perf record. */
#define MAX_STACK_DEPTH 127

/* One (process, user stack, kernel stack) seen by the sampler; the value counts its samples.
 * A stack id is an index into the stacks map, or a negative errno: -EFAULT (no user stack:
 * a kernel thread), -EEXIST (two stacks hashed alike), -ENOMEM; 0x7fffffff: not collected
 * (-U / -K). */
struct profile_key {
	__u64 mntns_id;
	__u32 pid;
	__s32 user_stack_id;
	__s32 kern_stack_id;
	__u8 comm[TASK_COMM_LEN];
};

#endif
