/*
 * JSON lines for a whole batch at once: Python describes each column once (where its values
 * are, how they are stored), C writes every row. Read by the C compiler and by cffi's cdef: no
 * macros, no includes here.
 */

/* How one column's values are stored. */
enum igr_json_kind {
    IGR_JSON_INT = 0,   /* signed integer of `size` bytes */
    IGR_JSON_UINT = 1,  /* unsigned integer of `size` bytes */
    IGR_JSON_BOOL = 2,  /* integer of `size` bytes: true when non-zero */
    IGR_JSON_CSTR = 3,  /* char[size], NUL-terminated or full: a JSON string */
    IGR_JSON_TEXT = 4,  /* int32 index per row into `texts`: ready-made JSON values */
    IGR_JSON_WALL_TIME = 5 /* __u64 bpf_ktime_get_boot_ns, written as wall-clock ns (0: now) */
};

/* What a column's flags ask for. */
enum igr_json_flag {
    IGR_JSON_OMIT_EMPTY = 1, /* skip the key when the value is 0, false, "" or an empty TEXT */
    IGR_JSON_OPEN_VALUE = 2  /* `open` ends with a value (`{"gadget":"x"`): a comma follows */
};

/* A row is written column by column: each column first closes `closes` objects, then writes
 * `open` (the row's `{`, or a nested object's `"runtime":{`), then, unless omitted, a comma
 * when one is due, its key and its value. Commas are decided per row, so a key left out
 * leaves no stray comma. */
struct igr_json_col {
    const char *prefix;        /* the key, written before the value: `"pid":`; empty for a
                                * TEXT column whose texts hold their keys */
    unsigned int prefix_len;
    unsigned int kind;         /* enum igr_json_kind */
    const char *values;        /* the first row's value, or NULL: `offset` bytes into each record */
    unsigned long long offset; /* with values NULL: where the value sits in a record */
    long long stride;          /* bytes from one row's value to the next (not for in-record) */
    unsigned int size;         /* bytes of one value (INT, UINT, BOOL, CSTR); TEXT: how many texts */
    const char *texts;         /* TEXT: the distinct values, back to back */
    const unsigned long long *offsets; /* TEXT: where each distinct value starts, and the end */
    const char *open;          /* written before the key whether or not the value is */
    unsigned int open_len;
    unsigned int closes;       /* `}` written before `open` */
    unsigned int flags;        /* enum igr_json_flag */
};

/* The most bytes igr_json_lines can write for `nrows` rows (TEXT values at their longest), or
 * 2^64 - 1 when that overflows or a column cannot be written (unknown kind, an integer size
 * other than 1, 2, 4, 8, a TEXT table whose offsets go backwards). */
unsigned long long igr_json_bound(const struct igr_json_col *cols, unsigned int ncols,
                                  unsigned int suffix_len, unsigned long long nrows);

/* Write `nrows` rows, each the columns in order then `suffix` (e.g. "}\n"), into `out`.
 * With IGR_JSON_OMIT_EMPTY, a zero integer, false, an empty C string or a zero-length TEXT
 * (Python encodes an omitted value so) writes no key and no value, as Go's `omitempty`.
 * In-record columns read row r at `records + r * record_stride + offset`. Returns the bytes
 * written, or -1 when `cap` is too small, a column cannot be written (see igr_json_bound), a
 * TEXT index is out of range, or an in-record column has no records. The caller guarantees
 * what C cannot see: every column's values hold `nrows` rows, each TEXT table has `size` + 1
 * offsets within its texts. */
long long igr_json_lines(const struct igr_json_col *cols, unsigned int ncols, const char *records,
                         long long record_stride, const char *suffix,
                         unsigned int suffix_len, unsigned long long nrows, char *out,
                         unsigned long long cap);
