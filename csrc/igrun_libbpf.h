/*
 * The C surface igrun uses: libbpf calls, plus the helpers in igrun_libbpf.c for what
 * cannot cross cffi cheaply (va_list logging, open options, per-record callbacks).
 *
 * This file is read twice: by the C compiler (through igrun_libbpf.c) and by cffi's cdef, which
 * understands declarations only — so no macros, no includes, no inline code here.
 */

struct bpf_object;
struct bpf_map;
struct bpf_program;
struct bpf_link;
struct igr_reader;

/* One member of a BTF struct, types resolved through typedefs and modifiers. The names point
 * into the object's BTF, whole: they are valid until the object is closed. */
struct igr_member {
    const char *name;
    unsigned int offset;     /* bytes from the start of the struct */
    unsigned int size;       /* bytes */
    unsigned int kind;       /* IGR_KIND_* below */
    unsigned int is_signed;  /* integers and enums */
    unsigned int elem_size;  /* arrays: size of one element */
    unsigned int nelems;     /* arrays: element count */
    unsigned int elem_kind;  /* arrays: IGR_KIND_* of the element */
    unsigned int is_char;    /* integers (or array elements) declared as char */
    const char *type_name;   /* the declared type name before resolution (typedef name) */
};

/* cffi cannot see #defines: these are the kinds, in this order. */
enum igr_kind {
    IGR_KIND_INT = 0,
    IGR_KIND_ARRAY = 1,
    IGR_KIND_STRUCT = 2,
    IGR_KIND_UNION = 3,
    IGR_KIND_ENUM = 4,
    IGR_KIND_PTR = 5,
    IGR_KIND_OTHER = 6
};

/* One type of an object's BTF as libbpf parsed (and checked) it, for `igrun run`, which reads
 * event structs, their typedefs and annotations through these calls instead of parsing BTF a
 * second time. Names point into the object's BTF: valid until the object is closed. */
struct igr_btf_type {
    unsigned int kind;          /* BTF_KIND_* as the kernel numbers them */
    const char *name;           /* "" when anonymous */
    unsigned int size_or_type;  /* the size (int, struct, union, enum) or the type it refers to */
    unsigned int vlen;          /* members, enumerators, params or variables */
    unsigned int kflag;
    unsigned int encoding;      /* INT: BTF_INT_SIGNED | BTF_INT_CHAR | BTF_INT_BOOL */
    unsigned int elem;          /* ARRAY: the element type */
    unsigned int nelems;        /* ARRAY: the element count */
    int component;              /* DECL_TAG: the member it tags, -1 for the type itself */
};

/* Item `index` of a struct, union, enum or datasec. */
struct igr_btf_item {
    const char *name;
    unsigned int type;          /* members, variables: their type */
    unsigned long long value;   /* members: bit offset; enumerators: value (unsigned); vars: offset */
    unsigned int bits;          /* members: bitfield width, 0 for whole members; vars: size */
};

int igr_btf_count(struct bpf_object *obj);
int igr_btf_type(struct bpf_object *obj, unsigned int id, struct igr_btf_type *out);
int igr_btf_item(struct bpf_object *obj, unsigned int id, unsigned int index,
                 struct igr_btf_item *out);
int igr_btf_next_decl_tag(struct bpf_object *obj, unsigned int start);
int igr_btf_find(struct bpf_object *obj, const char *name, unsigned int kind);
long long igr_btf_size(struct bpf_object *obj, unsigned int id);
int igr_probe_open(const char *path, unsigned int timeout_s);
int igr_kernel_has_type(const char *name, unsigned int kind);
int igr_global_value(struct bpf_object *obj, const char *name, void *out, size_t size);
int igr_global_location(struct bpf_object *obj, const char *name, size_t size, int *map_fd,
                        size_t *offset);

const char *igr_version(void);
const char *igr_libbpf_version(void);
void igr_install_print(int max_level);

struct bpf_object *igr_open_file(const char *path, char *log_buf, size_t log_size, int *err);
struct bpf_object *igr_open_mem(const void *data, size_t size, const char *name, char *log_buf,
                                size_t log_size, int *err);
int igr_set_global(struct bpf_object *obj, const char *name, const void *data, size_t size);
int igr_struct_members(struct bpf_object *obj, const char *name, struct igr_member *out, int max,
                       unsigned int *struct_size);
int igr_global_names(struct bpf_object *obj, char *out, size_t out_size);

int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
const char *bpf_object__name(const struct bpf_object *obj);

struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);
const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__fd(const struct bpf_map *map);
unsigned int igr_map_type(const struct bpf_map *map);
unsigned int bpf_map__key_size(const struct bpf_map *map);
unsigned int bpf_map__value_size(const struct bpf_map *map);
unsigned int bpf_map__max_entries(const struct bpf_map *map);
_Bool bpf_map__is_internal(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, unsigned int max_entries);
int bpf_map__reuse_fd(struct bpf_map *map, int fd);
int bpf_map__pin(struct bpf_map *map, const char *path);
int bpf_map__unpin(struct bpf_map *map, const char *path);

struct bpf_program *bpf_object__next_program(const struct bpf_object *obj, struct bpf_program *prog);
struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj, const char *name);
const char *bpf_program__name(const struct bpf_program *prog);
const char *bpf_program__section_name(const struct bpf_program *prog);
int bpf_program__fd(const struct bpf_program *prog);
int bpf_program__set_autoload(struct bpf_program *prog, _Bool autoload);
_Bool bpf_program__autoload(const struct bpf_program *prog);
unsigned int igr_prog_type(const struct bpf_program *prog);
int bpf_program__pin(struct bpf_program *prog, const char *path);
int bpf_program__unpin(struct bpf_program *prog, const char *path);

struct bpf_link *igr_attach(struct bpf_program *prog, int *err);
struct bpf_link *igr_attach_uprobe(struct bpf_program *prog, _Bool retprobe, int pid,
                                   const char *binary, const char *func, size_t offset, int *err);
struct bpf_link *igr_attach_iter(struct bpf_program *prog, int *err);
struct bpf_link *igr_attach_cgroup(struct bpf_program *prog, int cgroup_fd, int *err);
struct bpf_link *igr_attach_perf_event(struct bpf_program *prog, int cpu, unsigned long long freq,
                                       int *err);
int igr_map_lookup_many(int fd, const void *keys, size_t keys_size, size_t key_size, void *values,
                        size_t values_size, size_t value_size, unsigned char *found, size_t count);
int igr_prog_run_stats(int prog_fd, unsigned long long *run_time_ns, unsigned long long *run_cnt);
int igr_iter_read(struct bpf_link *link, char **out, size_t *out_len);
int bpf_link__destroy(struct bpf_link *link);
int bpf_link__fd(const struct bpf_link *link);
int bpf_link__pin(struct bpf_link *link, const char *path);
int bpf_link__unpin(struct bpf_link *link);
void igr_free(void *ptr);

int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_update_elem(int fd, const void *key, const void *value, unsigned long long flags);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int igr_map_elem_sizes(int fd, unsigned long long *key_size, unsigned long long *value_len);
int igr_map_lookup_batch(int fd, void *in_batch, void *out_batch, size_t token_size, void *keys,
                         size_t keys_size, void *values, size_t values_size, unsigned int *count);
int igr_map_drain(int fd, int delete, void *keys, size_t keys_size, void *values,
                  size_t values_size, unsigned int capacity, unsigned int *count,
                  unsigned int *calls);
int igr_map_info(int fd, unsigned int *type, unsigned int *id, unsigned int *key_size,
                 unsigned int *value_size, unsigned int *max_entries, char *name, size_t name_size);
int igr_map_create(unsigned int type, const char *name, unsigned int key_size,
                   unsigned int value_size, unsigned int max_entries, unsigned int flags);
int bpf_obj_get(const char *pathname);
int bpf_obj_pin(int fd, const char *pathname);
int libbpf_num_possible_cpus(void);
int igr_has_ktime_get_boot_ns(void);

/* The programs loaded in the kernel, for `top ebpf`. One row per program: what
 * BPF_OBJ_GET_INFO_BY_FD tells of it, and the memory of the maps it uses (their fdinfo
 * `memlock`, summed from the table igr_map_memlocks fills). 64 bytes, no holes. */
struct igr_prog_stat {
    unsigned int id;
    unsigned int type;              /* enum bpf_prog_type */
    unsigned long long run_time_ns; /* since load, while stats were on */
    unsigned long long run_cnt;
    unsigned long long map_memory;  /* bytes: the maps' memlock; maps not in the table count 0 */
    unsigned int map_count;
    char name[16];                  /* NUL-terminated, as the kernel keeps it */
    unsigned char tag[8];
    unsigned int reserved;
};

int igr_map_memlocks(unsigned int *ids, unsigned long long *memlock, unsigned char *varies,
                     size_t cap, size_t *count, const unsigned int *known_ids,
                     const unsigned long long *known_memlock, const unsigned char *known_varies,
                     size_t nknown);
int igr_prog_stat_of(int fd, struct igr_prog_stat *out, const unsigned int *map_ids,
                     const unsigned long long *map_memlock, size_t nmaps);
int igr_prog_stats(struct igr_prog_stat *out, size_t cap, size_t *count,
                   const unsigned int *map_ids, const unsigned long long *map_memlock,
                   size_t nmaps);
int igr_enable_run_time_stats(void);
int igr_prog_test_run(int fd, const void *data, size_t size, unsigned int repeat,
                      unsigned int *retval, unsigned int *duration);

/*
 * Batch readers. A poll copies every available record into one buffer of fixed-size slots
 * (records longer than a slot are cut, shorter ones zero-padded) and returns the record count:
 * Python then decodes the whole batch at once.
 */
struct igr_reader *igr_ring_new(int map_fd, size_t slot_size, size_t max_records, int *err);
struct igr_reader *igr_perf_new(int map_fd, size_t page_cnt, unsigned int wakeup_bytes,
                                size_t slot_size, size_t max_records, int *err);
int igr_reader_poll(struct igr_reader *r, int timeout_ms);
/* A ring reader's poll straight into the caller's memory (room for `slots` records); fresh:
 * nothing is known of what it holds, else it is the previous poll's, untouched since. */
int igr_reader_poll_into(struct igr_reader *r, int timeout_ms, void *dest, size_t slots,
                         _Bool fresh);
/* Lending: a ring reader's batch read in place, with no copy (see igrun_libbpf.c). */
#define IGR_UNEVEN 4097
int igr_reader_lend(struct igr_reader *r, int timeout_ms, size_t *offset, size_t *stride);
void igr_reader_give_back(struct igr_reader *r);
const void *igr_reader_ring_memory(struct igr_reader *r, size_t *size);
void *igr_reader_keep_lent(struct igr_reader *r);
int igr_reader_drop_kept(struct igr_reader *r, const void *addr);
int igr_reader_watch_seen(struct igr_reader *r, int map_fd, size_t offset);
void *igr_reader_data(struct igr_reader *r);
unsigned int *igr_reader_sizes(struct igr_reader *r);
/* Count losses in the BPF side's per-CPU counter (a per-CPU array of one __u64; any other
 * map is refused with -EINVAL) instead of perf's lost records; the map must outlive the
 * reader. */
int igr_reader_count_lost_in(struct igr_reader *r, int map_fd);
/* Events lost so far, in total. */
unsigned long long igr_reader_fill_peak(struct igr_reader *r);
unsigned long long igr_reader_lost(struct igr_reader *r);
void igr_reader_free(struct igr_reader *r);
