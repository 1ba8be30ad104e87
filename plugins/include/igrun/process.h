/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The process an event is about, declared once (Inspektor Gadget's struct gadget_process).
 *
 * An event struct embeds it as a member, usually named `proc`, and fills it with
 * gadget_process_populate(&event->proc) in the task itself. igrun reads the struct's layout
 * from BTF like every other member: in Python the members are `proc.pid`, `proc.comm` ...,
 * which igrun.core.events.fields.process() turns into the fields `pid`, `comm` ... every gadget
 * shows the same way. A map that remembers who did something (who owns a socket, who started
 * a connect) stores the same struct, so copying it into the event is one assignment.
 *
 * The order keeps the socket enricher's records as they were (mount ns, pid, tid, uid, gid,
 * comm): ppid came later and goes last.
 */
#ifndef IGRUN_PROCESS_H
#define IGRUN_PROCESS_H

#include <vmlinux.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include <igrun/mntns_filter.h>
#include <igrun/types.h>

#define GADGET_COMM_LEN 16

struct gadget_process {
	gadget_mntns_id mntns_id;
	__u32 pid;  /* process id (the kernel's tgid) */
	__u32 tid;  /* thread id (the kernel's pid) */
	__u32 uid;  /* real user id, as seen from the initial user namespace */
	__u32 gid;  /* real group id, likewise */
	char comm[GADGET_COMM_LEN];
	__u32 ppid; /* process id of the real parent */
};

/* The current task: where the BPF program runs in the process the event is about. */
static __always_inline void gadget_process_populate(struct gadget_process *p)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	p->mntns_id = gadget_get_mntns_id();
	p->pid = pid_tgid >> 32;
	p->tid = (__u32)pid_tgid;
	p->uid = (__u32)uid_gid;
	p->gid = uid_gid >> 32;
	bpf_get_current_comm(p->comm, sizeof(p->comm));
	p->ppid = BPF_CORE_READ(task, real_parent, tgid);
}

/* Any task, e.g. one an iterator visits; the ids are read from its credentials. */
static __always_inline void gadget_process_from_task(struct gadget_process *p,
						     struct task_struct *task)
{
	p->mntns_id = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	p->pid = BPF_CORE_READ(task, tgid);
	p->tid = BPF_CORE_READ(task, pid);
	p->uid = BPF_CORE_READ(task, cred, uid.val);
	p->gid = BPF_CORE_READ(task, cred, gid.val);
	BPF_CORE_READ_STR_INTO(&p->comm, task, comm);
	p->ppid = BPF_CORE_READ(task, real_parent, tgid);
}

#endif
