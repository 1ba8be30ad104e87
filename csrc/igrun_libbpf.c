/*
 * Helpers behind igrun.core._libbpf: the parts of the libbpf surface that must be C.
 *
 * - libbpf logs through a printf-style callback with a va_list, which cannot cross cffi: a
 *   trampoline formats the message and hands one finished line to Python.
 * - Readers drain perf buffers (libbpf's callbacks) by copying each record into one batch
 *   buffer, and ring buffers (their own consumer) by lending Python the batch where it lies
 *   in the ring (or copying it, for records of several lengths); Python is called once per
 *   batch, never once per event.
 */
#define _GNU_SOURCE /* mremap */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/perf_event.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>

#include "igrun_libbpf.h"

#ifndef IGRUN_VERSION
#error "IGRUN_VERSION must be defined by the build"
#endif

/* ---- logging ---------------------------------------------------------------------------- */

void igr_py_log(int level, const char *msg); /* extern "Python+C", defined by cffi */
static int igr_max_level = LIBBPF_INFO;

static int igr_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
    char small[1024], *buf = small;
    va_list again;
    int n;

    if ((int)level > igr_max_level)
        return 0;
    va_copy(again, args);
    n = vsnprintf(small, sizeof(small), fmt, args);
    if (n >= (int)sizeof(small)) {
        /* A long message (a BTF dump, a long path) is formatted whole, not cut. */
        buf = malloc((size_t)n + 1);
        if (buf)
            n = vsnprintf(buf, (size_t)n + 1, fmt, again);
        else
            buf = small; /* out of memory: the first part is better than nothing */
    }
    va_end(again);
    if (n < 0) {
        if (buf != small)
            free(buf);
        return n;
    }
    if (buf == small && (size_t)n >= sizeof(small))
        n = (int)sizeof(small) - 1;
    /* libbpf lines end with a newline; the structured logger adds its own. */
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    igr_py_log((int)level, buf);
    if (buf != small)
        free(buf);
    return n;
}

void igr_install_print(int max_level)
{
    igr_max_level = max_level;
    libbpf_set_print(igr_print);
}

const char *igr_version(void) { return IGRUN_VERSION; }

const char *igr_libbpf_version(void) { return libbpf_version_string(); }

void igr_free(void *ptr) { free(ptr); }

/* ---- objects ---------------------------------------------------------------------------- */

static struct bpf_object *igr_check_open(struct bpf_object *obj, int *err)
{
    long e = libbpf_get_error(obj);

    if (e) {
        *err = (int)e;
        return NULL;
    }
    *err = 0;
    return obj;
}

struct bpf_object *igr_open_file(const char *path, char *log_buf, size_t log_size, int *err)
{
    LIBBPF_OPTS(bpf_object_open_opts, opts, .kernel_log_buf = log_buf,
                .kernel_log_size = log_size);
    return igr_check_open(bpf_object__open_file(path, &opts), err);
}

struct bpf_object *igr_open_mem(const void *data, size_t size, const char *name, char *log_buf,
                                size_t log_size, int *err)
{
    LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = name, .kernel_log_buf = log_buf,
                .kernel_log_size = log_size);
    return igr_check_open(bpf_object__open_mem(data, size, &opts), err);
}

/* Call fn for every global variable of the object's .rodata/.data/.bss until it returns
 * non-zero; returns that value, or 0. */
typedef int (*igr_global_fn)(struct bpf_map *map, const struct btf_var_secinfo *vsi,
                             const char *var_name, void *ctx);

static int igr_for_each_global(struct bpf_object *obj, igr_global_fn fn, void *ctx)
{
    struct btf *btf = bpf_object__btf(obj);
    struct bpf_map *map;

    if (!btf)
        return 0;
    bpf_object__for_each_map(map, obj) {
        const struct btf_type *sec;
        const struct btf_var_secinfo *vsi;
        int i, ret;

        if (!bpf_map__is_internal(map))
            continue;
        sec = btf__type_by_id(btf, bpf_map__btf_value_type_id(map));
        if (!sec || !btf_is_datasec(sec))
            continue;
        vsi = btf_var_secinfos(sec);
        for (i = 0; i < btf_vlen(sec); i++, vsi++) {
            const struct btf_type *var = btf__type_by_id(btf, vsi->type);
            const char *var_name = var ? btf__name_by_offset(btf, var->name_off) : NULL;

            if (var_name && (ret = fn(map, vsi, var_name, ctx)))
                return ret;
        }
    }
    return 0;
}

struct igr_set_ctx {
    const char *name;
    const void *data;
    size_t size;
};

static int igr_set_one(struct bpf_map *map, const struct btf_var_secinfo *vsi,
                       const char *var_name, void *ctx)
{
    struct igr_set_ctx *c = ctx;
    size_t map_size, end;
    char *initial;

    if (strcmp(var_name, c->name) != 0)
        return 0;
    if (vsi->size == 0 || vsi->size > INT_MAX)
        return -E2BIG; /* a size the return value cannot carry (0 means "not found") */
    if (!c->data)
        return (int)vsi->size;
    if (vsi->size != c->size)
        return -E2BIG;
    initial = (char *)bpf_map__initial_value(map, &map_size);
    if (!initial || __builtin_add_overflow((size_t)vsi->offset, c->size, &end) || end > map_size)
        return -EINVAL;
    memcpy(initial + vsi->offset, c->data, c->size);
    return 1;
}

/* Overwrite the initial value of global variable `name` (between open and load). With data
 * NULL, return the variable's size instead. */
int igr_set_global(struct bpf_object *obj, const char *name, const void *data, size_t size)
{
    struct igr_set_ctx c = { .name = name, .data = data, .size = size };
    int ret = igr_for_each_global(obj, igr_set_one, &c);

    if (ret == 0)
        return -ENOENT;
    return data && ret == 1 ? 0 : ret;
}

struct igr_names_ctx {
    char *out;
    size_t size, used, needed;
};

static int igr_add_name(struct bpf_map *map, const struct btf_var_secinfo *vsi,
                        const char *var_name, void *ctx)
{
    struct igr_names_ctx *c = ctx;
    size_t len = strlen(var_name) + 1;

    (void)map;
    (void)vsi;
    if (__builtin_add_overflow(c->needed, len, &c->needed))
        return -E2BIG;
    /* Whole names only, in order: once one does not fit, none after it is written. */
    if (c->used == c->needed - len && c->needed <= c->size) {
        memcpy(c->out + c->used, var_name, len);
        c->used += len;
    }
    return 0;
}

/* Names of all global variables, NUL-separated. Returns the bytes all of them need: when
 * that is more than out_size, only the names that fit whole were written and the caller
 * asks again with a bigger buffer (nothing is cut). */
int igr_global_names(struct bpf_object *obj, char *out, size_t out_size)
{
    struct igr_names_ctx c = { .out = out, .size = out ? out_size : 0, .used = 0, .needed = 0 };
    int err = igr_for_each_global(obj, igr_add_name, &c);

    if (err)
        return err;
    return c.needed > INT_MAX ? -E2BIG : (int)c.needed;
}

/* Typedefs and modifiers followed before BTF counts as cyclic (libbpf's own bound). */
#define IGR_MAX_RESOLVE_DEPTH 32

/* Skip typedefs and const/volatile/restrict; remember the first declared name. */
static const struct btf_type *igr_resolve(const struct btf *btf, __u32 id, __u32 *out_id)
{
    const struct btf_type *t = btf__type_by_id(btf, id);
    int hops = 0;

    while (t && (btf_is_typedef(t) || btf_is_mod(t))) {
        if (++hops > IGR_MAX_RESOLVE_DEPTH)
            return NULL; /* a cycle: damaged BTF */
        id = t->type;
        t = btf__type_by_id(btf, id);
    }
    if (out_id)
        *out_id = id;
    return t;
}

static unsigned int igr_kind_of(const struct btf_type *t)
{
    if (!t)
        return IGR_KIND_OTHER;
    if (btf_is_int(t))
        return IGR_KIND_INT;
    if (btf_is_array(t))
        return IGR_KIND_ARRAY;
    if (btf_is_struct(t))
        return IGR_KIND_STRUCT;
    if (btf_is_union(t))
        return IGR_KIND_UNION;
    if (btf_is_enum(t) || btf_is_enum64(t))
        return IGR_KIND_ENUM;
    if (btf_is_ptr(t))
        return IGR_KIND_PTR;
    return IGR_KIND_OTHER;
}

static void igr_fill_scalar(const struct btf *btf, const struct btf_type *t, unsigned int *is_signed,
                            unsigned int *is_char)
{
    if (btf_is_int(t)) {
        __u8 enc = btf_int_encoding(t);

        *is_signed = !!(enc & BTF_INT_SIGNED);
        *is_char = !!(enc & BTF_INT_CHAR);
        if (!*is_char) {
            const char *n = btf__name_by_offset(btf, t->name_off);
            *is_char = n && strstr(n, "char") != NULL;
        }
    } else if (btf_is_enum(t) || btf_is_enum64(t)) {
        *is_signed = !!btf_kflag(t);
    }
}

/* Describe the members of `struct name` so Python can build a decoder from the object's own
 * BTF: the C struct stays the single description of an event's layout. With `out` NULL,
 * return the member count only (to size `out`); a struct with more than `max` members is
 * -E2BIG. Names point into the object's BTF (whole, never cut): valid until it is closed. A
 * member that does not lie within the struct is -EINVAL. */
int igr_struct_members(struct bpf_object *obj, const char *name, struct igr_member *out, int max,
                       unsigned int *struct_size)
{
    struct btf *btf = bpf_object__btf(obj);
    const struct btf_type *st;
    const struct btf_member *m;
    int id, i, n;

    if (!btf)
        return -ENOENT;
    id = btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT);
    if (id < 0)
        return id;
    st = btf__type_by_id(btf, id);
    if (!st)
        return -ENOENT;
    *struct_size = st->size;
    n = btf_vlen(st);
    if (!out)
        return n;
    if (n > max)
        return -E2BIG;
    m = btf_members(st);
    for (i = 0; i < n; i++, m++) {
        struct igr_member *o = &out[i];
        const struct btf_type *decl = btf__type_by_id(btf, m->type);
        const struct btf_type *t = igr_resolve(btf, m->type, NULL);
        const char *mname = btf__name_by_offset(btf, m->name_off);
        __s64 sz;

        memset(o, 0, sizeof(*o));
        o->name = mname ? mname : "";
        o->type_name = "";
        if (decl && decl->name_off) {
            const char *tname = btf__name_by_offset(btf, decl->name_off);

            o->type_name = tname ? tname : "";
        }
        if (btf_member_bitfield_size(st, i))
            return -EOPNOTSUPP; /* bitfields do not map onto a numpy dtype */
        o->offset = btf_member_bit_offset(st, i) / 8;
        sz = btf__resolve_size(btf, m->type);
        if (sz < 0)
            return (int)sz;
        if ((__u64)o->offset + (__u64)sz > st->size)
            return -EINVAL;
        o->size = (unsigned int)sz;
        o->kind = igr_kind_of(t);
        if (o->kind == IGR_KIND_ARRAY) {
            const struct btf_array *arr = btf_array(t);
            const struct btf_type *et = igr_resolve(btf, arr->type, NULL);
            __s64 esz = btf__resolve_size(btf, arr->type);

            o->nelems = arr->nelems;
            o->elem_size = esz < 0 ? 0 : (unsigned int)esz;
            o->elem_kind = igr_kind_of(et);
            if (et)
                igr_fill_scalar(btf, et, &o->is_signed, &o->is_char);
        } else if (t) {
            igr_fill_scalar(btf, t, &o->is_signed, &o->is_char);
        }
    }
    return n;
}

/* ---- BTF, as libbpf parsed it --------------------------------------------------------------
 *
 * libbpf checked the object's BTF when it opened it (header, record sizes, type ids, string
 * offsets). These calls still check every id, index and size they are given: a caller's
 * mistake or a damaged object is an error code, never a read out of bounds. Nothing here
 * follows a chain of types (that is the caller's, with its own bound), except
 * btf__resolve_size, which libbpf bounds itself. */

static const struct btf *igr_btf_of(struct bpf_object *obj, unsigned int id,
                                    const struct btf_type **t)
{
    const struct btf *btf = bpf_object__btf(obj);

    if (!btf)
        return NULL;
    if (id >= btf__type_cnt(btf))
        return NULL;
    *t = btf__type_by_id(btf, id);
    return *t ? btf : NULL;
}

static const char *igr_btf_name(const struct btf *btf, __u32 offset)
{
    const char *name = btf__name_by_offset(btf, offset);

    return name ? name : "";
}

/* The number of types, void (id 0) included; -ENOENT without BTF. */
int igr_btf_count(struct bpf_object *obj)
{
    const struct btf *btf = bpf_object__btf(obj);
    __u32 n;

    if (!btf)
        return -ENOENT;
    n = btf__type_cnt(btf);
    return n > INT_MAX ? -E2BIG : (int)n;
}

int igr_btf_type(struct bpf_object *obj, unsigned int id, struct igr_btf_type *out)
{
    const struct btf_type *t = NULL;
    const struct btf *btf = igr_btf_of(obj, id, &t);

    if (!btf)
        return -ENOENT;
    memset(out, 0, sizeof(*out));
    out->kind = btf_kind(t);
    out->name = igr_btf_name(btf, t->name_off);
    out->size_or_type = t->size; /* a union with t->type */
    out->vlen = btf_vlen(t);
    out->kflag = btf_kflag(t);
    out->component = -1;
    if (btf_is_int(t)) {
        out->encoding = btf_int_encoding(t);
    } else if (btf_is_array(t)) {
        out->elem = btf_array(t)->type;
        out->nelems = btf_array(t)->nelems;
    } else if (btf_is_decl_tag(t)) {
        out->component = btf_decl_tag(t)->component_idx;
    }
    return 0;
}

int igr_btf_item(struct bpf_object *obj, unsigned int id, unsigned int index,
                 struct igr_btf_item *out)
{
    const struct btf_type *t = NULL;
    const struct btf *btf = igr_btf_of(obj, id, &t);

    if (!btf)
        return -ENOENT;
    if (index >= btf_vlen(t))
        return -ERANGE;
    memset(out, 0, sizeof(*out));
    if (btf_is_composite(t)) {
        const struct btf_member *m = btf_members(t) + index;

        out->name = igr_btf_name(btf, m->name_off);
        out->type = m->type;
        out->value = btf_member_bit_offset(t, index);
        out->bits = btf_member_bitfield_size(t, index);
    } else if (btf_is_enum(t)) {
        const struct btf_enum *e = btf_enum(t) + index;

        out->name = igr_btf_name(btf, e->name_off);
        out->value = (__u32)e->val;
    } else if (btf_is_enum64(t)) {
        const struct btf_enum64 *e = btf_enum64(t) + index;

        out->name = igr_btf_name(btf, e->name_off);
        out->value = btf_enum64_value(e);
    } else if (btf_is_datasec(t)) {
        const struct btf_var_secinfo *v = btf_var_secinfos(t) + index;

        out->name = "";
        out->type = v->type;
        out->value = v->offset;
        out->bits = v->size;
    } else {
        return -EINVAL;
    }
    return 0;
}

/* The id of the first declaration tag at or after type `start`, 0 when there is none (or a
 * negative error): annotations are found without a call per type. */
int igr_btf_next_decl_tag(struct bpf_object *obj, unsigned int start)
{
    const struct btf *btf = bpf_object__btf(obj);
    __u32 id, n;

    if (!btf)
        return -ENOENT;
    n = btf__type_cnt(btf);
    if (n > INT_MAX)
        return -E2BIG;
    for (id = start ? start : 1; id < n; id++) {
        const struct btf_type *t = btf__type_by_id(btf, id);

        if (t && btf_is_decl_tag(t))
            return (int)id;
    }
    return 0;
}

/* The id of the type named `name` of kind `kind`, or a negative error. */
int igr_btf_find(struct bpf_object *obj, const char *name, unsigned int kind)
{
    const struct btf *btf = bpf_object__btf(obj);

    if (!btf)
        return -ENOENT;
    return btf__find_by_name_kind(btf, name, kind);
}

/* The size of type `id` in bytes, typedefs and arrays resolved (libbpf bounds the chain). */
long long igr_btf_size(struct bpf_object *obj, unsigned int id)
{
    const struct btf_type *t = NULL;
    const struct btf *btf = igr_btf_of(obj, id, &t);

    if (!btf)
        return -ENOENT;
    return btf__resolve_size(btf, id);
}

/* Open the object at `path` in a child process and close it again: 0 when libbpf opens it,
 * -EINVAL when it refuses it (the caller's own open then says why), -EFAULT when libbpf
 * crashed on it (damaged BTF can crash libbpf 1.1's map parsing) and -ETIMEDOUT when it did
 * not finish in `timeout_s`. An object given by a user is tried so before this process opens
 * it. The child calls libbpf only (its logging to Python is switched off first) and leaves
 * with _exit. */
#define IGR_PROBE_REFUSED 100 /* the child's exit code when libbpf refused the object */

int igr_probe_open(const char *path, unsigned int timeout_s)
{
    int status = 0;
    pid_t pid = fork();

    if (pid < 0)
        return -errno;
    if (pid == 0) {
        struct bpf_object *obj;
        long e;

        libbpf_set_print(NULL);
        alarm(timeout_s);
        obj = bpf_object__open_file(path, NULL);
        e = libbpf_get_error(obj);
        if (!e)
            bpf_object__close(obj);
        _exit(e ? IGR_PROBE_REFUSED : 0);
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
        return -ETIMEDOUT;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == IGR_PROBE_REFUSED)
        return -EINVAL;
    /* Killed by a signal, or ended by a crash handler (a sanitizer's) with its own code. */
    return -EFAULT;
}

/* Whether the running kernel's BTF has a type `name` of `kind` (BTF_KIND_*): 1 or 0, or a
 * negative error when the kernel has no BTF. The kernel's BTF is read once (a few MB) and
 * kept; the lock makes the first read safe from several threads (cffi calls run without the
 * GIL). */
int igr_kernel_has_type(const char *name, unsigned int kind)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static struct btf *vmlinux;
    static int load_err;
    int ret;

    pthread_mutex_lock(&lock);
    if (!vmlinux && !load_err) {
        struct btf *btf = btf__load_vmlinux_btf();
        long e = libbpf_get_error(btf);

        if (e)
            load_err = (int)e;
        else
            vmlinux = btf;
    }
    if (vmlinux)
        ret = btf__find_by_name_kind(vmlinux, name, kind) >= 0;
    else
        ret = load_err < 0 ? load_err : -ENOENT;
    pthread_mutex_unlock(&lock);
    return ret;
}

struct igr_get_ctx {
    const char *name;
    void *out;
    size_t size;
};

static int igr_get_one(struct bpf_map *map, const struct btf_var_secinfo *vsi,
                       const char *var_name, void *ctx)
{
    struct igr_get_ctx *c = ctx;
    size_t map_size, end;
    const char *initial;

    if (strcmp(var_name, c->name) != 0)
        return 0;
    if (vsi->size != c->size)
        return -E2BIG;
    initial = bpf_map__initial_value(map, &map_size);
    if (!initial || __builtin_add_overflow((size_t)vsi->offset, c->size, &end) || end > map_size)
        return -EINVAL;
    memcpy(c->out, initial + vsi->offset, c->size);
    return 1;
}

/* Copy the initial value of global variable `name` (exactly `size` bytes, its size) before
 * load: the value the object was compiled with, as libbpf will load it. */
int igr_global_value(struct bpf_object *obj, const char *name, void *out, size_t size)
{
    struct igr_get_ctx c = { .name = name, .out = out, .size = size };
    int ret = igr_for_each_global(obj, igr_get_one, &c);

    if (ret == 0)
        return -ENOENT;
    return ret == 1 ? 0 : ret;
}

struct igr_where_ctx {
    const char *name;
    size_t size;
    int map_fd;
    size_t offset;
};

static int igr_where_one(struct bpf_map *map, const struct btf_var_secinfo *vsi,
                         const char *var_name, void *ctx)
{
    struct igr_where_ctx *c = ctx;

    if (strcmp(var_name, c->name) != 0)
        return 0;
    if (vsi->size != c->size)
        return -E2BIG;
    c->map_fd = bpf_map__fd(map);
    c->offset = vsi->offset;
    return c->map_fd < 0 ? -EBADF : 1;
}

/* Where a loaded object's global variable `name` (exactly `size` bytes) lives: its
 * section's map and its offset in the map's one value. -ENOENT: no such variable. */
int igr_global_location(struct bpf_object *obj, const char *name, size_t size, int *map_fd,
                        size_t *offset)
{
    struct igr_where_ctx c = { .name = name, .size = size };
    int ret = igr_for_each_global(obj, igr_where_one, &c);

    if (ret == 0)
        return -ENOENT;
    if (ret < 0)
        return ret;
    *map_fd = c.map_fd;
    *offset = c.offset;
    return 0;
}

unsigned int igr_map_type(const struct bpf_map *map) { return (unsigned int)bpf_map__type(map); }

unsigned int igr_prog_type(const struct bpf_program *prog)
{
    return (unsigned int)bpf_program__type(prog);
}

/* ---- attaching -------------------------------------------------------------------------- */

static struct bpf_link *igr_check_link(struct bpf_link *link, int *err)
{
    long e = libbpf_get_error(link);

    if (e) {
        *err = (int)e;
        return NULL;
    }
    *err = 0;
    return link;
}

struct bpf_link *igr_attach(struct bpf_program *prog, int *err)
{
    return igr_check_link(bpf_program__attach(prog), err);
}

struct bpf_link *igr_attach_uprobe(struct bpf_program *prog, _Bool retprobe, int pid,
                                   const char *binary, const char *func, size_t offset, int *err)
{
    LIBBPF_OPTS(bpf_uprobe_opts, opts, .retprobe = retprobe, .func_name = func);
    return igr_check_link(bpf_program__attach_uprobe_opts(prog, pid, binary, offset, &opts), err);
}

struct bpf_link *igr_attach_iter(struct bpf_program *prog, int *err)
{
    return igr_check_link(bpf_program__attach_iter(prog, NULL), err);
}

struct bpf_link *igr_attach_cgroup(struct bpf_program *prog, int cgroup_fd, int *err)
{
    return igr_check_link(bpf_program__attach_cgroup(prog, cgroup_fd), err);
}

/* Look up `count` keys of `key_size` bytes each (one C loop, no Python per key) into `values`
 * (`value_size` bytes each); found[i] is 1 when key i was there (its value written), else 0.
 * For maps with no batch lookup, e.g. a stack-trace map read by the ids another map holds. */
int igr_map_lookup_many(int fd, const void *keys, size_t keys_size, size_t key_size, void *values,
                        size_t values_size, size_t value_size, unsigned char *found, size_t count)
{
    unsigned long long map_key, map_value;
    size_t need_keys, need_values, i;
    int err;

    if (!keys || !values || !found || key_size == 0 || value_size == 0)
        return -EINVAL;
    err = igr_map_elem_sizes(fd, &map_key, &map_value);
    if (err)
        return err;
    if (map_key != key_size || map_value != value_size)
        return -EINVAL;
    if (__builtin_mul_overflow(count, key_size, &need_keys) ||
        __builtin_mul_overflow(count, value_size, &need_values) || need_keys > keys_size ||
        need_values > values_size)
        return -ENOSPC;
    for (i = 0; i < count; i++) {
        err = bpf_map_lookup_elem(fd, (const char *)keys + i * key_size,
                                  (char *)values + i * value_size);
        if (err == -ENOENT) {
            found[i] = 0;
            continue;
        }
        if (err)
            return err;
        found[i] = 1;
    }
    return 0;
}

/* Sample `cpu`'s software CPU clock `freq` times a second (frequency mode: the kernel adjusts
 * the period) and run `prog` on each sample. Software events need no PMU, so this works in VMs.
 * The returned link owns the perf event: destroying it detaches the program and closes it. */
struct bpf_link *igr_attach_perf_event(struct bpf_program *prog, int cpu, unsigned long long freq,
                                       int *err)
{
    struct perf_event_attr attr;
    struct bpf_link *link;
    long e;
    int fd;

    if (!prog || !err)
        return NULL;
    if (cpu < 0 || freq == 0 || freq > (unsigned long long)INT_MAX) {
        *err = -EINVAL;
        return NULL;
    }
    memset(&attr, 0, sizeof(attr));
    attr.size = sizeof(attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    attr.freq = 1;
    attr.sample_freq = freq;
    fd = (int)syscall(__NR_perf_event_open, &attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0) {
        *err = -errno;
        return NULL;
    }
    link = bpf_program__attach_perf_event(prog, fd);
    e = libbpf_get_error(link);
    if (e) {
        close(fd); /* libbpf takes the event only when the attach succeeds */
        *err = (int)e;
        return NULL;
    }
    *err = 0;
    return link;
}

/* A program's run-time statistics: nanoseconds spent in it and times it ran, since it was
 * loaded, counted while statistics are on. */
int igr_prog_run_stats(int prog_fd, unsigned long long *run_time_ns, unsigned long long *run_cnt)
{
    struct bpf_prog_info info;
    __u32 len = sizeof(info);
    int err;

    if (!run_time_ns || !run_cnt)
        return -EINVAL;
    memset(&info, 0, sizeof(info));
    err = bpf_obj_get_info_by_fd(prog_fd, &info, &len);
    if (err)
        return err;
    *run_time_ns = info.run_time_ns;
    *run_cnt = info.run_cnt;
    return 0;
}

/* Run an iterator once and return all it wrote, in a buffer the caller frees with igr_free. */
int igr_iter_read(struct bpf_link *link, char **out, size_t *out_len)
{
    size_t cap = 1 << 16, len = 0;
    char *buf;
    int fd;

    if (!link || !out || !out_len)
        return -EINVAL;
    fd = bpf_iter_create(bpf_link__fd(link));
    if (fd < 0)
        return fd;
    buf = malloc(cap);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        ssize_t n;

        if (cap - len < 4096) {
            size_t bigger;
            char *grown;

            if (__builtin_mul_overflow(cap, 2, &bigger) || bigger > (size_t)SSIZE_MAX) {
                free(buf);
                close(fd);
                return -E2BIG;
            }
            grown = realloc(buf, bigger);
            if (!grown) {
                free(buf);
                close(fd);
                return -ENOMEM;
            }
            buf = grown;
            cap = bigger;
        }
        n = read(fd, buf + len, cap - len);
        if (n < 0) {
            int e = -errno;
            if (e == -EINTR || e == -EAGAIN)
                continue;
            free(buf);
            close(fd);
            return e;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    *out = buf;
    *out_len = len;
    return 0;
}

/* ---- maps ------------------------------------------------------------------------------- */

static bool igr_map_is_percpu(__u32 type)
{
    return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
           type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

/* The bytes one key and one value of map `fd` take in a user buffer: a per-CPU value is one
 * value rounded up to 8 bytes for every possible CPU, as the kernel copies it. */
int igr_map_elem_sizes(int fd, unsigned long long *key_size, unsigned long long *value_len)
{
    struct bpf_map_info info;
    __u32 len = sizeof(info);
    unsigned long long v;
    int err, ncpus;

    memset(&info, 0, sizeof(info));
    err = bpf_obj_get_info_by_fd(fd, &info, &len);
    if (err)
        return err;
    v = info.value_size;
    if (igr_map_is_percpu(info.type)) {
        ncpus = libbpf_num_possible_cpus();
        if (ncpus <= 0)
            return ncpus ? ncpus : -EINVAL;
        v = (v + 7) / 8 * 8;
        if (__builtin_mul_overflow(v, (unsigned long long)ncpus, &v))
            return -E2BIG;
    }
    *key_size = info.key_size;
    *value_len = v;
    return 0;
}

/* One batch lookup, after checking that each buffer holds what the kernel may write to it:
 * `*count` keys and values, and a batch token (a hash map's is 4 bytes, an array's a key). */
int igr_map_lookup_batch(int fd, void *in_batch, void *out_batch, size_t token_size, void *keys,
                         size_t keys_size, void *values, size_t values_size, unsigned int *count)
{
    unsigned long long key_size, value_len, need;
    int err;

    if (!count || !out_batch || !keys || !values)
        return -EINVAL;
    err = igr_map_elem_sizes(fd, &key_size, &value_len);
    if (err)
        return err;
    if (token_size < 4 || token_size < key_size)
        return -ENOSPC;
    if (__builtin_mul_overflow(key_size, (unsigned long long)*count, &need) || need > keys_size)
        return -ENOSPC;
    if (__builtin_mul_overflow(value_len, (unsigned long long)*count, &need) ||
        need > values_size)
        return -ENOSPC;
    return bpf_map_lookup_batch(fd, in_batch, out_batch, keys, values, count, NULL);
}

/* Every entry of a hash map, copied into `keys` and `values` (room for `capacity` of each) with
 * as few syscalls as the kernel allows: batches of the whole remaining room, so a map that fits
 * takes one call (and one more that says the end is reached). With `delete`, each entry copied is
 * deleted in the same call (bpf_map_lookup_and_delete_batch), so an interval's counts start
 * again from zero without a window in which an update could be counted twice. `*count` is the
 * number of entries copied; `*calls` the syscalls made. Entries past `capacity` stay in the map. */
int igr_map_drain(int fd, int delete, void *keys, size_t keys_size, void *values,
                  size_t values_size, unsigned int capacity, unsigned int *count,
                  unsigned int *calls)
{
    unsigned long long key_size, value_len, need;
    unsigned int done = 0, n;
    __u32 token_in = 0, token_out = 0;
    int err, first = 1;

    if (!count || !calls || !keys || !values)
        return -EINVAL;
    *count = 0;
    *calls = 0;
    err = igr_map_elem_sizes(fd, &key_size, &value_len);
    if (err)
        return err;
    if (key_size == 0 || value_len == 0)
        return -EINVAL;
    if (__builtin_mul_overflow(key_size, (unsigned long long)capacity, &need) || need > keys_size)
        return -ENOSPC;
    if (__builtin_mul_overflow(value_len, (unsigned long long)capacity, &need) ||
        need > values_size)
        return -ENOSPC;
    while (done < capacity) {
        n = capacity - done;
        if (delete)
            err = bpf_map_lookup_and_delete_batch(
                fd, first ? NULL : &token_in, &token_out, (char *)keys + done * key_size,
                (char *)values + done * value_len, &n, NULL);
        else
            err = bpf_map_lookup_batch(fd, first ? NULL : &token_in, &token_out,
                                       (char *)keys + done * key_size,
                                       (char *)values + done * value_len, &n, NULL);
        (*calls)++;
        if (err && err != -ENOENT)
            break;
        if (n > capacity - done) /* never, by the kernel's contract: do not trust it */
            return -EOVERFLOW;
        done += n;
        if (err == -ENOENT) {
            err = 0;
            break;
        }
        token_in = token_out;
        first = 0;
    }
    *count = done;
    return err;
}

int igr_map_create(unsigned int type, const char *name, unsigned int key_size,
                   unsigned int value_size, unsigned int max_entries, unsigned int flags)
{
    LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = flags);

    if (name && strnlen(name, BPF_OBJ_NAME_LEN) >= BPF_OBJ_NAME_LEN)
        return -ENAMETOOLONG; /* the kernel would refuse it; never cut it here */
    return bpf_map_create((enum bpf_map_type)type, name, key_size, value_size, max_entries,
                          &opts);
}

int igr_map_info(int fd, unsigned int *type, unsigned int *id, unsigned int *key_size,
                 unsigned int *value_size, unsigned int *max_entries, char *name, size_t name_size)
{
    struct bpf_map_info info;
    __u32 len = sizeof(info);
    int err;

    memset(&info, 0, sizeof(info));
    err = bpf_obj_get_info_by_fd(fd, &info, &len);
    if (err)
        return err;
    *type = info.type;
    *id = info.id;
    *key_size = info.key_size;
    *value_size = info.value_size;
    *max_entries = info.max_entries;
    if (!name || strnlen(info.name, sizeof(info.name)) >= name_size)
        return -ENAMETOOLONG; /* the whole name or nothing */
    snprintf(name, name_size, "%.*s", (int)sizeof(info.name), info.name);
    return 0;
}

int igr_has_ktime_get_boot_ns(void)
{
    return libbpf_probe_bpf_helper(BPF_PROG_TYPE_TRACEPOINT, BPF_FUNC_ktime_get_boot_ns, NULL);
}

/* ---- the programs in the kernel (top ebpf) ---------------------------------------------- */

#define IGR_FDINFO_MAX 4096
#define IGR_INFO_TRIES 4

/* The value of a whole `memlock:` line in `buf` (NUL-terminated): 0, -EAGAIN when the line
 * is not there whole yet, -EINVAL when it holds no number. */
static int igr_parse_memlock(const char *buf, unsigned long long *out)
{
    const char *line;
    char *end;

    for (line = buf; line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, "memlock:", 8) != 0)
            continue;
        if (!strchr(line, '\n'))
            return -EAGAIN;
        errno = 0;
        *out = strtoull(line + 8, &end, 10);
        if (errno || end == line + 8)
            return -EINVAL;
        return 0;
    }
    return -EAGAIN;
}

/* The `memlock:` line of a map fd's /proc/self/fdinfo: the bytes the kernel charges the map
 * for, where Inspektor Gadget's top ebpf reads a map's memory. One read, as a rule: reading
 * stops once the line is whole. */
static int igr_fdinfo_memlock(int fd, unsigned long long *out)
{
    char path[64], buf[IGR_FDINFO_MAX + 1];
    size_t len = 0;
    int file, err = -ENODATA;

    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    file = open(path, O_RDONLY | O_CLOEXEC);
    if (file < 0)
        return -errno;
    while (len < IGR_FDINFO_MAX) {
        ssize_t n = read(file, buf + len, IGR_FDINFO_MAX - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = -errno;
            break;
        }
        if (n == 0) {
            err = -ENODATA; /* the end, and no memlock line */
            break;
        }
        len += (size_t)n;
        buf[len] = '\0';
        err = igr_parse_memlock(buf, out);
        if (err != -EAGAIN)
            break;
    }
    close(file);
    return err == -EAGAIN ? -ENODATA : err;
}

/* Whether a map's memlock can change after it is made: since Linux 6.4 it is the map's
 * memory use (map_mem_usage), which follows the element count for hash maps that allocate
 * per element (BPF_F_NO_PREALLOC), LPM tries, device hash maps and sock hash maps. Other
 * kinds are sized once, at creation; a kind this list does not know is read every time. */
static bool igr_memlock_varies(__u32 type, __u32 flags)
{
    switch (type) {
    case BPF_MAP_TYPE_HASH:
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_HASH_OF_MAPS:
        return flags & BPF_F_NO_PREALLOC;
    case BPF_MAP_TYPE_ARRAY:
    case BPF_MAP_TYPE_PROG_ARRAY:
    case BPF_MAP_TYPE_PERF_EVENT_ARRAY:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_STACK_TRACE:
    case BPF_MAP_TYPE_CGROUP_ARRAY:
    case BPF_MAP_TYPE_LRU_HASH:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_ARRAY_OF_MAPS:
    case BPF_MAP_TYPE_DEVMAP:
    case BPF_MAP_TYPE_SOCKMAP:
    case BPF_MAP_TYPE_CPUMAP:
    case BPF_MAP_TYPE_XSKMAP:
    case BPF_MAP_TYPE_CGROUP_STORAGE:
    case BPF_MAP_TYPE_REUSEPORT_SOCKARRAY:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
    case BPF_MAP_TYPE_QUEUE:
    case BPF_MAP_TYPE_STACK:
    case BPF_MAP_TYPE_SK_STORAGE:
    case BPF_MAP_TYPE_STRUCT_OPS:
    case BPF_MAP_TYPE_RINGBUF:
    case BPF_MAP_TYPE_INODE_STORAGE:
    case BPF_MAP_TYPE_TASK_STORAGE:
    case BPF_MAP_TYPE_BLOOM_FILTER:
    case BPF_MAP_TYPE_USER_RINGBUF:
        return false;
    default:
        return true;
    }
}

/* Every map in the kernel, ascending by id, with its memlock and whether that can change: a
 * map freed while we look is left out. `known_*` is the previous call's table (ascending ids,
 * none for a first call): a map in it whose memlock cannot change costs no syscall but its
 * id's, the others an fd and a read of its fdinfo (and its info, if new). -ENOSPC when there
 * are more than `cap` (`*count` is then `cap`: ask again with more room). */
int igr_map_memlocks(unsigned int *ids, unsigned long long *memlock, unsigned char *varies,
                     size_t cap, size_t *count, const unsigned int *known_ids,
                     const unsigned long long *known_memlock, const unsigned char *known_varies,
                     size_t nknown)
{
    __u32 id = 0;
    size_t n = 0, k = 0;
    int err, fd;

    if (!count || (cap && (!ids || !memlock || !varies)) ||
        (nknown && (!known_ids || !known_memlock || !known_varies)))
        return -EINVAL;
    for (;;) {
        bool known;

        err = bpf_map_get_next_id(id, &id);
        if (err)
            break;
        if (n == cap) {
            *count = n;
            return -ENOSPC;
        }
        while (k < nknown && known_ids[k] < id) /* both ascend: one pass */
            k++;
        known = k < nknown && known_ids[k] == id;
        if (known && !known_varies[k]) {
            ids[n] = id;
            memlock[n] = known_memlock[k];
            varies[n++] = 0;
            continue;
        }
        fd = bpf_map_get_fd_by_id(id);
        if (fd < 0) {
            if (fd == -ENOENT)
                continue;
            *count = n;
            return fd;
        }
        if (known) {
            varies[n] = 1;
        } else {
            struct bpf_map_info info;
            __u32 len = sizeof(info);

            memset(&info, 0, sizeof(info));
            err = bpf_obj_get_info_by_fd(fd, &info, &len);
            if (err) {
                close(fd);
                *count = n;
                return err;
            }
            varies[n] = igr_memlock_varies(info.type, info.map_flags);
        }
        err = igr_fdinfo_memlock(fd, &memlock[n]);
        close(fd);
        if (err) {
            *count = n;
            return err;
        }
        ids[n++] = id;
    }
    *count = n;
    return err == -ENOENT ? 0 : err;
}

static int igr_cmp_u32(const void *a, const void *b)
{
    __u32 x = *(const __u32 *)a, y = *(const __u32 *)b;
    return x < y ? -1 : x > y;
}

/* One program's row, from its fd. `map_ids` (ascending) and `map_memlock` are the table of
 * igr_map_memlocks; a map missing from it (created since) counts 0 bytes. */
int igr_prog_stat_of(int fd, struct igr_prog_stat *out, const unsigned int *map_ids,
                     const unsigned long long *map_memlock, size_t nmaps)
{
    __u32 stack_ids[64], *ids = stack_ids, room = 64, len, i;
    struct bpf_prog_info info;
    unsigned long long memory = 0;
    int err = 0, tries;

    if (!out || (nmaps && (!map_ids || !map_memlock)))
        return -EINVAL;
    /* A program's maps can grow (BPF_PROG_BIND_MAP) between two calls: ask again, bigger. */
    for (tries = 0; tries < IGR_INFO_TRIES; tries++) {
        memset(&info, 0, sizeof(info));
        info.nr_map_ids = room;
        info.map_ids = (__u64)(unsigned long)ids;
        len = sizeof(info);
        err = bpf_obj_get_info_by_fd(fd, &info, &len);
        if (err || info.nr_map_ids <= room)
            break;
        if (ids != stack_ids)
            free(ids);
        room = info.nr_map_ids;
        ids = calloc(room, sizeof(*ids));
        if (!ids)
            return -ENOMEM;
    }
    if (!err && info.nr_map_ids > room)
        err = -EAGAIN;
    if (!err) {
        for (i = 0; i < info.nr_map_ids; i++) {
            const unsigned int *at =
                nmaps ? bsearch(&ids[i], map_ids, nmaps, sizeof(*map_ids), igr_cmp_u32) : NULL;
            if (at)
                memory += map_memlock[at - map_ids];
        }
        memset(out, 0, sizeof(*out));
        out->id = info.id;
        out->type = info.type;
        out->run_time_ns = info.run_time_ns;
        out->run_cnt = info.run_cnt;
        out->map_memory = memory;
        out->map_count = info.nr_map_ids;
        _Static_assert(sizeof(out->name) == sizeof(info.name), "name sizes");
        _Static_assert(sizeof(out->tag) == sizeof(info.tag), "tag sizes");
        memcpy(out->name, info.name, sizeof(out->name));
        out->name[sizeof(out->name) - 1] = '\0';
        memcpy(out->tag, info.tag, sizeof(out->tag));
    }
    if (ids != stack_ids)
        free(ids);
    return err;
}

/* Every program in the kernel, ascending by id: three syscalls each (next id, fd by id,
 * info), one more if it uses over 64 maps. A program unloaded while we look is left out.
 * -ENOSPC when there are more than `cap` (`*count` is then `cap`: ask again with more room). */
int igr_prog_stats(struct igr_prog_stat *out, size_t cap, size_t *count,
                   const unsigned int *map_ids, const unsigned long long *map_memlock,
                   size_t nmaps)
{
    __u32 id = 0;
    size_t n = 0;
    int err, fd;

    if (!count || (cap && !out))
        return -EINVAL;
    for (;;) {
        err = bpf_prog_get_next_id(id, &id);
        if (err)
            break;
        fd = bpf_prog_get_fd_by_id(id);
        if (fd < 0) {
            if (fd == -ENOENT)
                continue;
            *count = n;
            return fd;
        }
        if (n == cap) {
            close(fd);
            *count = n;
            return -ENOSPC;
        }
        err = igr_prog_stat_of(fd, &out[n], map_ids, map_memlock, nmaps);
        close(fd);
        if (err) {
            *count = n;
            return err;
        }
        n++;
    }
    *count = n;
    return err == -ENOENT ? 0 : err;
}

/* Turns on the kernel's run time and run count of every program (BPF_ENABLE_STATS): they
 * stay on while the returned fd is open, and closing it undoes this call only (the kernel
 * counts its users; the sysctl's own setting is kept). */
int igr_enable_run_time_stats(void) { return bpf_enable_stats(BPF_STATS_RUN_TIME); }

/* BPF_PROG_TEST_RUN: runs program `fd` `repeat` times on `data` (a packet, for socket and
 * tc programs); its return value and mean run time (ns) come back. */
int igr_prog_test_run(int fd, const void *data, size_t size, unsigned int repeat,
                      unsigned int *retval, unsigned int *duration)
{
    LIBBPF_OPTS(bpf_test_run_opts, opts);
    int err;

    if (!retval || !duration || (size && !data))
        return -EINVAL;
    if (size > UINT32_MAX)
        return -E2BIG;
    opts.data_in = data;
    opts.data_size_in = (__u32)size;
    opts.repeat = repeat;
    err = bpf_prog_test_run_opts(fd, &opts);
    if (err)
        return err;
    *retval = opts.retval;
    *duration = opts.duration;
    return 0;
}

/* ---- batch readers ---------------------------------------------------------------------- */

/* Stops a ring-buffer drain once the batch is full; the next record stays in the ring. */
#define IGR_BATCH_FULL 0x1000 /* internal: a copied batch is full */

/* A ring buffer as the kernel maps it: the consumer position (ours to write), then the
 * producer position and the data, mapped twice in a row so that no record wraps. */
struct igr_ring {
    unsigned long *consumer_pos;
    const unsigned long *producer_pos;
    const char *data;
    size_t mask;
    size_t page_size, data_map_size;
    int map_fd;             /* the map's, not owned: the map outlives the reader */
};

/* Mappings left where a kept lent batch was (igr_reader_keep_lent): at most this many. */
#define IGR_MAX_KEPT 8

struct igr_reader {
    struct igr_ring *ring;
    struct perf_buffer *perf;
    int epoll_fd;           /* ring buffers: the map, edge-triggered (see igr_reader_poll) */
    char *data;             /* count slots of slot_size bytes: own, or the caller's */
    unsigned int *sizes;    /* each record's real length (before cut or padding) */
    size_t slot_size;
    size_t cap;             /* slots in data */
    size_t sizes_cap;       /* entries in sizes */
    char *own;              /* the reader's own slots (data unless the caller lent some) */
    size_t own_cap;
    size_t max_records;     /* a ring drain stops here; perf drains cannot stop, they grow */
    size_t count;
    size_t taken;           /* ring bytes (headers and padding included) of this poll's batch */
    size_t touched;         /* slots of touched_in written at least once: beyond a slot's
                             * last record's size (sizes[]) it holds zeros; past, garbage */
    const char *touched_in;
    unsigned long long lost;
    unsigned long long fill_peak; /* the most ring bytes waiting at one drain, since asked */
    bool oom;
    int lost_fd;            /* the BPF side's per-CPU drop counter, or -1: perf's lost records */
    __u64 *lost_values;     /* one 8-byte slot per possible CPU */
    int ncpus;
    /* Lending (igr_reader_lend): a batch left in the ring buffer, read there by the caller. */
    unsigned long lend_start; /* ring position of the batch's first record */
    unsigned long lend_end;   /* the position after the last record walked into the batch */
    bool lending;             /* a batch is out: its space is given back by give_back */
    bool uneven;              /* the walk stopped at a record that is not one full slot */
    volatile __u64 *seen;     /* the object's gadget_ring_seen (igrun/buffer.h), or NULL */
    void *seen_map;           /* its section, mapped (igr_reader_watch_seen) */
    size_t seen_map_size;
    void *kept[IGR_MAX_KEPT]; /* private copies left where kept batches were lent */
    size_t nkept;
};

static int igr_sizes_room(struct igr_reader *r, size_t n)
{
    unsigned int *sizes;

    if (n <= r->sizes_cap)
        return 0;
    sizes = realloc(r->sizes, n * sizeof(*sizes));
    if (!sizes)
        return -ENOMEM;
    r->sizes = sizes;
    r->sizes_cap = n;
    return 0;
}

/* Room for one more record in the reader's own slots (lent slots are never outgrown: a
 * ring drain stops at max_records, which is at most their count). */
static int igr_reserve(struct igr_reader *r)
{
    size_t cap;
    char *data;

    if (r->count < r->cap)
        return 0;
    if (r->data != r->own)
        return -ENOMEM;
    cap = r->cap ? r->cap * 2 : 1024;
    if (cap > SIZE_MAX / r->slot_size || igr_sizes_room(r, cap))
        return -ENOMEM;
    data = realloc(r->own, cap * r->slot_size);
    if (!data)
        return -ENOMEM;
    if (r->touched_in == r->own)
        r->touched_in = data; /* realloc keeps what the slots held */
    r->data = r->own = data;
    r->cap = r->own_cap = cap;
    return 0;
}

static inline int igr_copy(struct igr_reader *r, const void *rec, size_t len)
{
    char *slot;
    size_t n = len < r->slot_size ? len : r->slot_size;

    if (r->count >= r->cap && igr_reserve(r)) {
        r->oom = true;
        r->lost++;
        return -ENOMEM;
    }
    slot = r->data + r->count * r->slot_size;
    memcpy(slot, rec, n);
    if (r->count >= r->touched) {
        memset(slot + n, 0, r->slot_size - n);
        r->touched = r->count + 1;
    } else if (r->sizes[r->count] > n) {
        /* Only what the slot's previous record wrote past this one is not zero yet: a gadget
         * whose struct ends in 8 KiB of string room sends a hundred bytes, not 8 KiB. */
        size_t old = r->sizes[r->count] < r->slot_size ? r->sizes[r->count] : r->slot_size;

        memset(slot + n, 0, old - n);
    }
    r->sizes[r->count] = (unsigned int)len;
    r->count++;
    return 0;
}

struct igr_perf_sample_rec {
    struct perf_event_header header;
    __u32 size;
    char data[];
};

struct igr_perf_lost_rec {
    struct perf_event_header header;
    __u64 id;
    __u64 lost;
};

static enum bpf_perf_event_ret igr_perf_event(void *ctx, int cpu, struct perf_event_header *ev)
{
    struct igr_reader *r = ctx;

    (void)cpu;
    if (ev->type == PERF_RECORD_SAMPLE) {
        struct igr_perf_sample_rec *s = (void *)ev;
        igr_copy(r, s->data, s->size);
    } else if (ev->type == PERF_RECORD_LOST) {
        r->lost += ((struct igr_perf_lost_rec *)ev)->lost;
    }
    return LIBBPF_PERF_EVENT_CONT;
}

static struct igr_reader *igr_reader_alloc(size_t slot_size, size_t max_records)
{
    struct igr_reader *r = calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    r->slot_size = slot_size ? slot_size : 1;
    r->lost_fd = -1;
    r->epoll_fd = -1;
    r->max_records = max_records ? max_records : 65536;
    if (igr_reserve(r)) {
        igr_reader_free(r);
        return NULL;
    }
    return r;
}

static void igr_ring_unmap(struct igr_ring *ring)
{
    if (!ring)
        return;
    if (ring->consumer_pos && ring->consumer_pos != MAP_FAILED)
        munmap(ring->consumer_pos, ring->page_size);
    if (ring->producer_pos && ring->producer_pos != MAP_FAILED)
        munmap((void *)ring->producer_pos, ring->data_map_size);
    free(ring);
}

static struct igr_ring *igr_ring_map(int map_fd, int *err)
{
    struct bpf_map_info info;
    __u32 info_len = sizeof(info);
    struct igr_ring *ring;
    void *mem;

    memset(&info, 0, sizeof(info));
    if (bpf_obj_get_info_by_fd(map_fd, &info, &info_len)) {
        *err = -errno;
        return NULL;
    }
    if (info.type != BPF_MAP_TYPE_RINGBUF || !info.max_entries ||
        (info.max_entries & (info.max_entries - 1))) {
        *err = -EINVAL;
        return NULL;
    }
    ring = calloc(1, sizeof(*ring));
    if (!ring) {
        *err = -ENOMEM;
        return NULL;
    }
    ring->page_size = (size_t)sysconf(_SC_PAGESIZE);
    ring->mask = info.max_entries - 1;
    ring->map_fd = map_fd;
    ring->data_map_size = ring->page_size + 2 * (size_t)info.max_entries;
    mem = mmap(NULL, ring->page_size, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
    ring->consumer_pos = mem;
    if (mem == MAP_FAILED) {
        *err = -errno;
        igr_ring_unmap(ring);
        return NULL;
    }
    mem = mmap(NULL, ring->data_map_size, PROT_READ, MAP_SHARED, map_fd,
               (off_t)ring->page_size);
    ring->producer_pos = mem;
    if (mem == MAP_FAILED) {
        *err = -errno;
        igr_ring_unmap(ring);
        return NULL;
    }
    ring->data = (const char *)mem + ring->page_size;
    return ring;
}

/* Records between two consumer position updates in a drain: the kernel reads that position
 * at every reservation from another CPU, so writing it after every record (as libbpf does)
 * costs a cache line transfer per record; the space is given back in steps instead. */
#define IGR_RELEASE_EVERY 256

/*
 * Copy every committed record into the batch, in order, until the ring is empty, a record
 * is still being written (busy), or the batch is full (the record is left in the ring).
 * The protocol is the kernel's (kernel/bpf/ringbuf.c): an 8-byte header whose length carries
 * a busy and a discard bit, records 8-byte aligned.
 */
static int igr_ring_consume(struct igr_reader *r)
{
    struct igr_ring *ring = r->ring;
    unsigned long cons = __atomic_load_n(ring->consumer_pos, __ATOMIC_ACQUIRE), prod;
    size_t step;
    unsigned int since = 0;
    int err = 0;
    bool more;

    do {
        more = false;
        prod = __atomic_load_n(ring->producer_pos, __ATOMIC_ACQUIRE);
        if (prod > cons && prod - cons > r->fill_peak)
            r->fill_peak = prod - cons;
        while (cons < prod) {
            const __u32 *hdr = (const __u32 *)(ring->data + (cons & ring->mask));
            __u32 len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
            __u32 size = len & ~(__u32)(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);

            if (len & BPF_RINGBUF_BUSY_BIT)
                goto out;
            if (!(len & BPF_RINGBUF_DISCARD_BIT)) {
                if (r->count >= r->max_records) {
                    err = -IGR_BATCH_FULL;
                    goto out;
                }
                if (igr_copy(r, (const char *)hdr + BPF_RINGBUF_HDR_SZ, size))
                    err = -ENOMEM; /* counted as lost; the record is passed */
            }
            more = true;
            step = ((size_t)size + BPF_RINGBUF_HDR_SZ + 7) & ~(size_t)7;
            cons += step;
            r->taken += step;
            if (err)
                goto out;
            if (++since == IGR_RELEASE_EVERY) {
                __atomic_store_n(ring->consumer_pos, cons, __ATOMIC_RELEASE);
                since = 0;
            }
        }
    } while (more);
out:
    __atomic_store_n(ring->consumer_pos, cons, __ATOMIC_RELEASE);
    return err;
}

struct igr_reader *igr_ring_new(int map_fd, size_t slot_size, size_t max_records, int *err)
{
    struct igr_reader *r = igr_reader_alloc(slot_size, max_records);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLET };

    if (!r) {
        *err = -ENOMEM;
        return NULL;
    }
    r->ring = igr_ring_map(map_fd, err);
    if (!r->ring) {
        igr_reader_free(r);
        return NULL;
    }
    /* Edge-triggered: a level-triggered epoll (libbpf's) reports a woken map ready at every
     * wait while any record is there, and a reader that returns to Python between waits
     * would never sleep again. This way only a new wakeup of the map (a record past the
     * watermark, see igrun/buffer.h) ends a wait early. */
    r->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (r->epoll_fd < 0 || epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, map_fd, &ev)) {
        *err = -errno;
        igr_reader_free(r);
        return NULL;
    }
    *err = 0;
    return r;
}

struct igr_reader *igr_perf_new(int map_fd, size_t page_cnt, unsigned int wakeup_bytes,
                                size_t slot_size, size_t max_records, int *err)
{
    struct igr_reader *r = igr_reader_alloc(slot_size, max_records);
    struct perf_event_attr attr;

    if (!r) {
        *err = -ENOMEM;
        return NULL;
    }
    /* The raw API lets the kernel wake the reader once `wakeup_bytes` are waiting instead of
     * once per sample (on this kind of machine per-sample wakeups cap a reader near 150k
     * events/s); the poll timeout bounds the latency of the rest. */
    memset(&attr, 0, sizeof(attr));
    attr.config = PERF_COUNT_SW_BPF_OUTPUT;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.sample_type = PERF_SAMPLE_RAW;
    attr.sample_period = 1;
    if (wakeup_bytes) {
        attr.watermark = 1;
        attr.wakeup_watermark = wakeup_bytes;
    } else {
        attr.wakeup_events = 1;
    }
    r->perf = perf_buffer__new_raw(map_fd, page_cnt, &attr, igr_perf_event, r, NULL);
    if (!r->perf) {
        *err = -errno;
        igr_reader_free(r);
        return NULL;
    }
    *err = 0;
    return r;
}

static int igr_consume(struct igr_reader *r)
{
    return r->ring ? igr_ring_consume(r) : perf_buffer__consume(r->perf);
}

/* A ring poll hands its batch to Python once it holds this share of the ring (1/N), unless the
 * batch is full or the timeout is over first: see igr_reader_poll. */
#define IGR_BATCH_SHARE 4

static long long igr_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Whether a ring poll goes on sleeping after a wakeup: its batch has room and holds less than
 * its share of the ring. */
static bool igr_wants_more(const struct igr_reader *r)
{
    return r->ring && r->count < r->max_records &&
           r->taken < (r->ring->mask + 1) / IGR_BATCH_SHARE;
}

/* Sleep until the buffer wakes the reader or timeout_ms pass. */
static int igr_wait(struct igr_reader *r, int timeout_ms)
{
    struct epoll_event ev;
    int n;

    if (!r->ring)
        /* A perf buffer reports a wakeup once (perf_poll clears it): level-triggered epoll
         * already sleeps until the next watermark. */
        return perf_buffer__poll(r->perf, timeout_ms);
    n = epoll_wait(r->epoll_fd, &ev, 1, timeout_ms);
    return n < 0 ? -errno : 0;
}

/*
 * One batch: what is in the buffer now, and, unless the batch is full, what comes until the
 * buffer wakes the reader (its watermark: an eighth of a ring buffer, see igrun/buffer.h; for
 * perf buffers the wakeup_bytes of igr_perf_new) or timeout_ms pass, whichever is first. A
 * ring poll drains the ring at each wakeup but sleeps on until its batch holds a quarter of
 * the ring (about two wakeups of a busy stream), is full, or the timeout is over: only then
 * does Python take the batch. A return to Python costs far more than a wakeup (its code and
 * data come back into caches the drain has just filled with records); what arrives while
 * Python has a batch is less than the batch whenever the reader keeps up, so a batch of a
 * quarter leaves most of the ring free for it. A slow stream thus costs one wakeup per
 * timeout, and a fast one one per watermark, with seven eighths of the buffer free at each;
 * no record waits longer than the timeout plus the time Python takes with the previous batch.
 * A wakeup that came while Python had the previous batch is cleared first: the drain that
 * follows takes what it announced. Returns the number of records in the batch (the previous
 * batch is dropped first) or a negative errno. cffi releases the GIL around this call.
 */
int igr_reader_poll(struct igr_reader *r, int timeout_ms)
{
    struct epoll_event ev;
    long long deadline = 0;
    int err;

    r->count = 0;
    r->taken = 0;
    if (r->touched_in != r->data) {
        r->touched = 0;
        r->touched_in = r->data;
    }
    if (r->ring && timeout_ms > 0)
        epoll_wait(r->epoll_fd, &ev, 1, 0);
    err = igr_consume(r);
    if (timeout_ms > 0 && r->ring)
        deadline = igr_now_ms() + timeout_ms;
    while (err >= 0 && timeout_ms > 0 && r->count < r->max_records) {
        err = igr_wait(r, timeout_ms);
        if (err >= 0 && r->count < r->max_records)
            err = igr_consume(r);
        if (err < 0 || !igr_wants_more(r))
            break;
        timeout_ms = (int)(deadline - igr_now_ms());
    }
    if (err == -IGR_BATCH_FULL)
        err = 0;
    if (err < 0 && err != -EINTR)
        return err;
    if (r->oom) {
        r->oom = false;
        return -ENOMEM;
    }
    return (int)r->count;
}

/*
 * igr_reader_poll into the caller's memory, room for `slots` records, instead of the reader's
 * own slots: a ring buffer's records are then copied once, straight into the batch Python
 * keeps. `fresh`: nothing is known of what dest holds; otherwise it is the memory of the
 * previous poll, untouched since (only what a slot's old record wrote past the new one is
 * cleared). Perf readers, whose drains cannot stop at a count, are refused (-EINVAL).
 */
int igr_reader_poll_into(struct igr_reader *r, int timeout_ms, void *dest, size_t slots,
                         _Bool fresh)
{
    size_t max_records = r->max_records;
    int n;

    if (!r->ring || !dest || !slots)
        return -EINVAL;
    if (igr_sizes_room(r, slots))
        return -ENOMEM;
    if (fresh)
        r->touched_in = NULL;
    r->data = dest;
    r->cap = slots;
    if (r->max_records > slots)
        r->max_records = slots;
    n = igr_reader_poll(r, timeout_ms);
    r->max_records = max_records;
    r->data = r->own;
    r->cap = r->own_cap;
    return n;
}

/* ---- lending: batches read in place ------------------------------------------------------ */

/* A lent batch is handed to the caller once it holds this share of the ring (1/N), unless it
 * is full or the timeout is over first. It may be larger than a copied one (igr_reader_poll's
 * quarter): its records are never copied, and the BPF side's watermark counts only what came
 * after the batch (gadget_ring_seen). Without that variable the watermark counts the batch too,
 * and every record past an eighth would wake the reader: such a batch goes at the first wakeup. */
#define IGR_LEND_SHARE 2

/* Walk the records that follow the batch: each one committed and exactly one slot long joins
 * it. Discarded records before the batch's first one are given back at once; the walk stops
 * at a busy record, the end of the data, a full batch, or a record of another length
 * (`uneven` when that is the first: the caller copies it out with igr_reader_poll). */
static void igr_ring_lend_walk(struct igr_reader *r)
{
    struct igr_ring *ring = r->ring;
    size_t step = (r->slot_size + BPF_RINGBUF_HDR_SZ + 7) & ~(size_t)7;
    unsigned long pos = r->lend_end, prod;
    bool more;

    do {
        more = false;
        prod = __atomic_load_n(ring->producer_pos, __ATOMIC_ACQUIRE);
        if (prod > r->lend_start && prod - r->lend_start > r->fill_peak)
            r->fill_peak = prod - r->lend_start;
        while (pos < prod && r->count < r->max_records) {
            const __u32 *hdr = (const __u32 *)(ring->data + (pos & ring->mask));
            __u32 len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
            __u32 size = len & ~(__u32)(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);

            if (len & BPF_RINGBUF_BUSY_BIT)
                goto out;
            if ((len & BPF_RINGBUF_DISCARD_BIT) || size != r->slot_size) {
                if (r->count)
                    goto out; /* the batch ends before it */
                if (!(len & BPF_RINGBUF_DISCARD_BIT)) {
                    r->uneven = true;
                    goto out;
                }
                pos += ((size_t)size + BPF_RINGBUF_HDR_SZ + 7) & ~(size_t)7;
                r->lend_start = pos;
                __atomic_store_n(ring->consumer_pos, pos, __ATOMIC_RELEASE);
                more = true;
                continue;
            }
            pos += step;
            r->count++;
            more = true;
        }
    } while (more && r->count < r->max_records);
out:
    r->lend_end = pos;
    r->taken = pos - r->lend_start;
    if (r->seen)
        *r->seen = pos;
}

/* Whether a lend goes on sleeping after a wakeup (see IGR_LEND_SHARE). */
static bool igr_lend_wants_more(const struct igr_reader *r)
{
    return r->seen && !r->uneven && r->count < r->max_records &&
           r->taken < (r->ring->mask + 1) / IGR_LEND_SHARE;
}

/*
 * igr_reader_poll without the copy: the batch stays in the ring buffer, whose data area is
 * mapped twice in a row, so that its records lie one after the other in memory however the
 * ring wraps. Returns the number of records (each exactly slot_size bytes, `*stride` bytes
 * apart, the first at `*offset` bytes into igr_reader_ring_memory), 0 when none came within
 * timeout_ms, -IGR_UNEVEN when the first waiting record is not one full slot (read it with
 * igr_reader_poll), or a negative errno. The records are the caller's to read until
 * igr_reader_give_back, which returns their space to the ring; their memory is read-only.
 */
int igr_reader_lend(struct igr_reader *r, int timeout_ms, size_t *offset, size_t *stride)
{
    struct epoll_event ev;
    long long deadline = 0;
    size_t max_records = r->max_records, fit;
    int err = 0;

    if (!r->ring || !offset || !stride)
        return -EINVAL;
    if (r->lending)
        return -EBUSY;
    *stride = (r->slot_size + BPF_RINGBUF_HDR_SZ + 7) & ~(size_t)7;
    /* A batch is bounded by the ring alone (IGR_LEND_SHARE, and one copy of the data area,
     * so that the second one always holds its end), not by max_records: it takes no memory. */
    fit = (r->ring->mask + 1) / *stride;
    if (!fit)
        return -IGR_UNEVEN; /* no whole record fits the ring: every one is shorter */
    r->max_records = fit;
    r->count = 0;
    r->uneven = false;
    r->lend_start = r->lend_end = __atomic_load_n(r->ring->consumer_pos, __ATOMIC_ACQUIRE);
    if (timeout_ms > 0)
        epoll_wait(r->epoll_fd, &ev, 1, 0);
    igr_ring_lend_walk(r);
    if (timeout_ms > 0)
        deadline = igr_now_ms() + timeout_ms;
    while (!r->uneven && timeout_ms > 0 && r->count < r->max_records) {
        err = igr_wait(r, timeout_ms);
        if (err < 0)
            break;
        igr_ring_lend_walk(r);
        if (!igr_lend_wants_more(r))
            break;
        timeout_ms = (int)(deadline - igr_now_ms());
    }
    r->max_records = max_records;
    if (err < 0 && err != -EINTR)
        return err;
    if (!r->count)
        return r->uneven ? -IGR_UNEVEN : 0;
    r->lending = true;
    *offset = (r->lend_start & r->ring->mask) + BPF_RINGBUF_HDR_SZ;
    return (int)r->count;
}

/* Give the lent batch's space back to the ring (nothing when none is out). */
void igr_reader_give_back(struct igr_reader *r)
{
    if (!r->ring || !r->lending)
        return;
    __atomic_store_n(r->ring->consumer_pos, r->lend_end, __ATOMIC_RELEASE);
    r->lending = false;
}

/* The ring's data area, mapped twice in a row (2 × its size): what lent batches point into.
 * It moves when a lent batch is kept. */
const void *igr_reader_ring_memory(struct igr_reader *r, size_t *size)
{
    if (!r->ring)
        return NULL;
    *size = 2 * (r->ring->mask + 1);
    return r->ring->data;
}

/*
 * The lent batch is still referenced by its reader when it should be given back: leave a
 * private copy of it where it is, map the ring anew elsewhere, then give the batch back. The
 * copy is made in memory of its own first and then moved over the old mapping in one step
 * (mremap), so that a thread reading the batch meanwhile sees its records throughout. Returns
 * the address of the copy's mapping (for igr_reader_drop_kept once nothing references it), or
 * NULL with errno set; the batch is then still out.
 */
void *igr_reader_keep_lent(struct igr_reader *r)
{
    struct igr_ring *ring = r->ring;
    size_t size, first, len;
    void *old, *fresh, *copy;

    if (!ring || !r->lending) {
        errno = EINVAL;
        return NULL;
    }
    if (r->nkept == IGR_MAX_KEPT) {
        errno = ENOSPC;
        return NULL;
    }
    size = ring->data_map_size;
    old = (void *)ring->producer_pos;
    first = ring->page_size + (r->lend_start & ring->mask);
    len = r->lend_end - r->lend_start;
    fresh = mmap(NULL, size, PROT_READ, MAP_SHARED, ring->map_fd, (off_t)ring->page_size);
    if (fresh == MAP_FAILED)
        return NULL;
    copy = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED) {
        int e = errno;

        munmap(fresh, size);
        errno = e;
        return NULL;
    }
    memcpy((char *)copy + first, (const char *)old + first, len);
    if (mprotect(copy, size, PROT_READ) ||
        mremap(copy, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, old) == MAP_FAILED) {
        int e = errno;

        munmap(copy, size);
        munmap(fresh, size);
        errno = e;
        return NULL;
    }
    ring->producer_pos = fresh;
    ring->data = (const char *)fresh + ring->page_size;
    r->kept[r->nkept++] = old;
    igr_reader_give_back(r);
    return old;
}

/* Unmap the copy left by igr_reader_keep_lent at `addr` (-ENOENT: none is there). */
int igr_reader_drop_kept(struct igr_reader *r, const void *addr)
{
    size_t i;

    for (i = 0; i < r->nkept; i++) {
        if (r->kept[i] == addr) {
            munmap(r->kept[i], r->ring->data_map_size);
            r->kept[i] = r->kept[--r->nkept];
            return 0;
        }
    }
    return -ENOENT;
}

/* Publish the end of each lent batch's walk in a global variable of the BPF object, a __u64
 * at `offset` in the value of the mmapable one-entry array `map_fd` (a writable global
 * section: igr_global_location): gadget_ring_seen in igrun/buffer.h, from which the BPF side
 * counts its watermark. Batches may then grow past the watermark (IGR_LEND_SHARE). */
int igr_reader_watch_seen(struct igr_reader *r, int map_fd, size_t offset)
{
    struct bpf_map_info info;
    __u32 info_len = sizeof(info);
    size_t page, size;
    void *mem;

    if (!r->ring || r->seen_map || (offset & 7))
        return -EINVAL;
    memset(&info, 0, sizeof(info));
    if (bpf_obj_get_info_by_fd(map_fd, &info, &info_len))
        return -errno;
    if (info.type != BPF_MAP_TYPE_ARRAY || info.max_entries != 1 ||
        !(info.map_flags & BPF_F_MMAPABLE) || (info.map_flags & BPF_F_RDONLY_PROG) ||
        offset > info.value_size || info.value_size - offset < sizeof(__u64))
        return -EINVAL;
    page = r->ring->page_size;
    size = ((size_t)info.value_size + page - 1) / page * page;
    mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
    if (mem == MAP_FAILED)
        return -errno;
    r->seen_map = mem;
    r->seen_map_size = size;
    r->seen = (volatile __u64 *)((char *)mem + offset);
    return 0;
}

void *igr_reader_data(struct igr_reader *r) { return r->data; }

unsigned int *igr_reader_sizes(struct igr_reader *r) { return r->sizes; }

/* The counter must be what igrun/buffer.h declares: a per-CPU array of one __u64, which the
 * kernel copies out as one 8-byte slot per possible CPU. Anything else would not fit the
 * buffer sized here, so it is refused. */
int igr_reader_count_lost_in(struct igr_reader *r, int map_fd)
{
    struct bpf_map_info info;
    __u32 info_len = sizeof(info);
    int n = libbpf_num_possible_cpus();
    size_t slot;

    if (n <= 0)
        return n ? n : -EINVAL;
    memset(&info, 0, sizeof(info));
    if (bpf_obj_get_info_by_fd(map_fd, &info, &info_len))
        return -errno;
    if (info.type != BPF_MAP_TYPE_PERCPU_ARRAY || info.key_size != sizeof(__u32) ||
        info.value_size != sizeof(__u64) || info.max_entries < 1)
        return -EINVAL;
    slot = ((size_t)info.value_size + 7) / 8 * 8;
    free(r->lost_values);
    r->lost_values = calloc((size_t)n, slot);
    if (!r->lost_values)
        return -ENOMEM;
    r->ncpus = n;
    r->lost_fd = map_fd;
    return 0;
}

/* The most bytes a drain found waiting in the ring buffer since the last call (0 for a perf
 * buffer, whose fill libbpf does not show), then starts again from zero. */
unsigned long long igr_reader_fill_peak(struct igr_reader *r)
{
    unsigned long long peak = r->fill_peak;

    r->fill_peak = 0;
    return peak;
}

unsigned long long igr_reader_lost(struct igr_reader *r)
{
    unsigned long long total = 0;
    __u32 zero = 0;
    int i;

    if (r->lost_fd < 0)
        return r->lost;
    if (bpf_map_lookup_elem(r->lost_fd, &zero, r->lost_values))
        return r->lost; /* unreadable now: what was counted so far */
    for (i = 0; i < r->ncpus; i++)
        total += r->lost_values[i];
    r->lost = total;
    return total;
}

void igr_reader_free(struct igr_reader *r)
{
    if (!r)
        return;
    /* Copies of kept lent batches stay mapped: what references them may outlive the reader
     * (the caller drops those nothing references, igr_reader_drop_kept). */
    if (r->seen_map)
        munmap(r->seen_map, r->seen_map_size);
    igr_ring_unmap(r->ring);
    perf_buffer__free(r->perf);
    if (r->epoll_fd >= 0)
        close(r->epoll_fd);
    free(r->own);
    free(r->sizes);
    free(r->lost_values);
    free(r);
}
