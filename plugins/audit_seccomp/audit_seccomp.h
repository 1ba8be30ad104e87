/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_AUDIT_SECCOMP_H
#define IGRUN_AUDIT_SECCOMP_H

/* What the kernel side remembers of a process, by its pid (the kernel's tgid), for the
 * audit records that name it. */
struct seen {
	__u64 mntns_id;
	__u64 when; /* boot-time ns of the last update */
	__u32 tid;  /* the thread SIGSYS was forced on (sigsys map); the last to exit (exited) */
	__u32 pad;
};

#endif
