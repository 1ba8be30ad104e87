/* SPDX-License-Identifier: Apache-2.0 */
#ifndef IGRUN_TRACE_OPEN_H
#define IGRUN_TRACE_OPEN_H

#define PATH_MAX 4096
/* Bytes of a path the prefix filter compares: the most an LPM trie key holds. */
#define PREFIX_MAX 255
#define MAX_PREFIXES 64

/*
 * One open, openat or openat2. strings holds the path as the caller passed it, NUL-terminated,
 * then (with --full-path) the full path, NUL-terminated; the record is sent trimmed to them
 * (EVENT_SIZE), since most paths are short and a full record would fill the ring buffer 40
 * times faster.
 */
struct event {
	gadget_timestamp timestamp;
	struct gadget_process proc;
	__u32 fd; /* the new descriptor; 0 when the call failed */
	int err; /* errno (positive) when the call failed, else 0 */
	int flags; /* O_* flags as passed */
	__u32 mode; /* permission bits of a created file; 0 without O_CREAT or O_TMPFILE */
	__u32 path_len; /* bytes of the path in strings, NUL included */
	__u32 full_len; /* bytes of the full path after it, NUL included; 0 without --full-path */
	char strings[PATH_MAX * 2];
};

#define EVENT_SIZE(e) (__builtin_offsetof(struct event, strings) + (e)->path_len + (e)->full_len)

/* A path prefix of --prefixes, as the LPM trie wants it: length in bits, then the bytes. */
struct prefix_key {
	__u32 prefixlen;
	__u8 path[PREFIX_MAX];
};

#endif
