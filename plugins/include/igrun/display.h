/* SPDX-License-Identifier: Apache-2.0 */
/*
 * How `igrun run` shows the members of an event struct, said in C.
 *
 * Types. A member declared with one of these typedefs is shown by what it means, as Inspektor
 * Gadget's image-based gadgets do with theirs. The member `x` (or `x_raw`) becomes two fields:
 * `x`, the text (a column and a JSON string), and `x_raw`, the number (a hidden column and a
 * JSON number), so filters and sorting can still use the number.
 *
 *   gadget_errno      an errno, either sign: "ENOENT" (empty for 0)
 *   gadget_signal     a signal number: "SIGKILL"
 *   gadget_file_mode  a file mode: octal, "0640" (with the file type bits if set: "0100644")
 *   gadget_duration   nanoseconds: "1.5ms", "2s", "350ns"
 *   gadget_syscall    a syscall number: its name on the machine igrun runs on, "openat"
 *                     (igrun ships the tables of x86_64 and aarch64; elsewhere the number)
 *
 *   gadget_uid        a user: `user_raw` shows as `user`, its name on this host ("root");
 *   gadget_gid        a group: the same (`group_raw`: `group`). A member named without
 *                     `_raw` (`uid`) stays a number, right-aligned.
 *
 * gadget_timestamp and gadget_mntns_id (igrun/types.h) show as wall time and as the mount
 * namespace containers are found by.
 *
 * Annotations. Put one (or several) after a member's name:
 *
 *   enum open_flag flags GADGET_FLAGS;   the member's enum lists flag bits: "O_CREAT|O_TRUNC"
 *   char path[256] GADGET_WIDTH(48);     the column is 48 characters wide (strings and paths
 *                                        are otherwise cut at 16)
 *   __u64 cookie GADGET_HIDDEN;          not among the default columns (still in JSON, and
 *                                        shown with -o columns=+cookie)
 *
 * They are BTF declaration tags (clang 14 or later): they cost nothing at run time and the
 * kernel never sees them used.
 */
#ifndef IGRUN_DISPLAY_H
#define IGRUN_DISPLAY_H

#include <vmlinux.h>

typedef __u32 gadget_errno;
typedef __u32 gadget_signal;
typedef __u32 gadget_uid;
typedef __u32 gadget_gid;
typedef __u32 gadget_file_mode;
typedef __u64 gadget_duration;
typedef __u64 gadget_syscall;

#define GADGET_FLAGS __attribute__((btf_decl_tag("igrun:flags")))
#define GADGET_HIDDEN __attribute__((btf_decl_tag("igrun:hidden")))
#define GADGET_WIDTH(n) __attribute__((btf_decl_tag("igrun:width=" #n)))

#endif
