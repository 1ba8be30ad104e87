/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_ADVISE_SECCOMP_H
#define IGRUN_ADVISE_SECCOMP_H

/* Syscall numbers a bitmap has room for: every native number of x86_64 and aarch64 (both
 * end below 470 in 2026) with room to grow. A larger number is not recorded. */
#define SYSCALLS_BITS 1024
#define SYSCALLS_WORDS (SYSCALLS_BITS / 64)

/* The syscalls one mount namespace made: bit n set when syscall n was seen. */
struct syscalls {
	__u64 bits[SYSCALLS_WORDS];
};

#endif
