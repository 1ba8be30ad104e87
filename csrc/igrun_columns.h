/*
 * The columns output for a whole batch at once: Python describes each column once per batch
 * (integers and booleans are read and fitted here; anything else comes as ready-made cells,
 * one per distinct value, already fitted to the column), C writes every row. Read by the C
 * compiler and by cffi's cdef: no macros, no includes here.
 */

/* How a cell of a number column is fitted to its width (igr_cell_col.fit). */
enum igr_fit {
    IGR_FIT_NONE = 0,  /* as it is: the last column, when left-aligned */
    IGR_FIT_LEFT = 1,  /* padded on the right */
    IGR_FIT_RIGHT = 2  /* padded on the left */
};

/* What a number too wide for its cell loses (igr_cell_col.cut): "…" marks the cut. */
enum igr_cut {
    IGR_CUT_PLAIN = 0,  /* cut at the end, no mark */
    IGR_CUT_END = 1,
    IGR_CUT_START = 2,
    IGR_CUT_MIDDLE = 3
};

struct igr_cell_col {
    unsigned int kind;         /* enum igr_json_kind: INT, UINT, BOOL or TEXT */
    const char *values;        /* the first row's value, or NULL: `offset` bytes into each record */
    unsigned long long offset; /* with values NULL: where the value sits in a record */
    long long stride;          /* bytes from one row's value to the next (not for in-record) */
    unsigned int size;         /* bytes of one value (INT, UINT, BOOL); TEXT: how many texts */
    const char *texts;         /* TEXT: the cells, fitted, back to back */
    const unsigned long long *offsets; /* TEXT: where each cell starts, and the end */
    unsigned int width;        /* INT, UINT, BOOL: the cell's width in characters */
    unsigned int fit;          /* enum igr_fit */
    unsigned int cut;          /* enum igr_cut */
};

/* The most bytes igr_column_lines can write for `nrows` rows, or 2^64 - 1 as igr_json_bound. */
unsigned long long igr_column_bound(const struct igr_cell_col *cols, unsigned int ncols,
                                    unsigned int lead_len, unsigned long long nrows);

/* Write `nrows` lines: `lead` (e.g. a gadget tag), then the cells joined by one space with the
 * line's trailing whitespace dropped (never the lead's), then "\n". Returns the bytes written,
 * or -1 when `cap` is too small, a column cannot be written, a TEXT index is out of range, or
 * an in-record column has no records; the caller guarantees what igr_json_lines says. */
long long igr_column_lines(const struct igr_cell_col *cols, unsigned int ncols,
                           const char *records, long long record_stride, const char *lead,
                           unsigned int lead_len, unsigned long long nrows, char *out,
                           unsigned long long cap);
