/*
 * The columns writer behind `-o columns`: the table a user reads, written a batch at a time.
 * Numbers are formatted and fitted here; every other cell arrives ready (Python formats and
 * fits each distinct value once), so a row costs a few copies. The result is what
 * operators/output.py's reference formatting gives, byte for byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "igrun_format.h"
#include "igrun_json.h"
#include "igrun_columns.h"

static const char igr_ellipsis[] = "\xe2\x80\xa6"; /* "…": one character, three bytes */

/* A number's text (ASCII, so characters are bytes) fitted to `w` as output.py's _fit does. */
static char *igr_fit(char *p, const char *text, unsigned int len, const struct igr_cell_col *c)
{
    unsigned int w = c->width, pad, head;

    if (c->fit == IGR_FIT_NONE)
        return igr_put_bytes(p, text, len);
    if (len > w && c->cut != IGR_CUT_PLAIN && w > 1) {
        if (c->cut == IGR_CUT_END) {
            p = igr_put_bytes(p, text, w - 1);
            return igr_put_bytes(p, igr_ellipsis, 3);
        }
        if (c->cut == IGR_CUT_START) {
            p = igr_put_bytes(p, igr_ellipsis, 3);
            return igr_put_bytes(p, text + len - (w - 1), w - 1);
        }
        head = (w - 1) / 2;
        p = igr_put_bytes(p, text, head);
        p = igr_put_bytes(p, igr_ellipsis, 3);
        return igr_put_bytes(p, text + len - (w - 1 - head), w - 1 - head);
    }
    if (len > w)
        len = w;
    pad = w - len;
    if (c->fit == IGR_FIT_RIGHT) {
        memset(p, ' ', pad);
        p += pad;
    }
    p = igr_put_bytes(p, text, len);
    if (c->fit == IGR_FIT_LEFT) {
        memset(p, ' ', pad);
        p += pad;
    }
    return p;
}

/* Length of the whitespace that ends [start, end), as Python's str.rstrip() sees it: ASCII
 * whitespace and the Unicode spaces, in UTF-8. */
static size_t igr_trailing_space(const char *start, const char *end)
{
    static const char *const wide[] = {
        "\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\xa8", "\xe2\x80\xa9", "\xe2\x80\xaf",
        "\xe2\x81\x9f", "\xe3\x80\x80",
    };
    const char *p = end;
    size_t i;

    while (p > start) {
        unsigned char c = (unsigned char)p[-1];

        if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) {
            p--;
            continue;
        }
        if (c < 0x80)
            break;
        if (p - start >= 3 && (unsigned char)p[-3] == 0xe2 && (unsigned char)p[-2] == 0x80 &&
            c >= 0x80 && c <= 0x8a) { /* U+2000 to U+200A */
            p -= 3;
            continue;
        }
        for (i = 0; i < sizeof(wide) / sizeof(wide[0]); i++) {
            size_t n = strlen(wide[i]);

            if ((size_t)(p - start) >= n && memcmp(p - n, wide[i], n) == 0) {
                p -= n;
                break;
            }
        }
        if (i == sizeof(wide) / sizeof(wide[0]))
            break;
    }
    return (size_t)(end - p);
}

/* IGR_TOO_BIG for a description the writer cannot follow (see igr_value_bound in
 * igrun_json.c). */
static uint64_t igr_cell_bound(const struct igr_cell_col *c)
{
    uint64_t w = (uint64_t)c->width + 2; /* "…" is 3 bytes for 1 character */

    if (c->kind == IGR_JSON_TEXT)
        return igr_longest_text(c->texts, c->offsets, c->size);
    if (c->kind > IGR_JSON_BOOL || !igr_int_size_ok(c->size))
        return IGR_TOO_BIG;
    return (w > 21 ? w : 21) + 8; /* 8: room for a fixed-size copy's overlap */
}

unsigned long long igr_column_bound(const struct igr_cell_col *cols, unsigned int ncols,
                                    unsigned int lead_len, unsigned long long nrows)
{
    uint64_t row = (uint64_t)lead_len + 1;
    unsigned int i;

    if (!cols && ncols)
        return IGR_TOO_BIG;
    for (i = 0; i < ncols; i++)
        row = igr_add(row, igr_add(igr_cell_bound(&cols[i]), 1));
    return igr_mul(row, nrows);
}

long long igr_column_lines(const struct igr_cell_col *cols, unsigned int ncols,
                           const char *records, long long record_stride, const char *lead,
                           unsigned int lead_len, unsigned long long nrows, char *out,
                           unsigned long long cap)
{
    const char **first;
    long long *stride;
    char *p = out, *cells;
    char text[24];
    unsigned long long r, bound = igr_column_bound(cols, ncols, lead_len, nrows);
    unsigned int i;

    if (bound == IGR_TOO_BIG || bound > cap || (!out && bound) || (!lead && lead_len))
        return -1;
    first = calloc(ncols ? ncols : 1, sizeof(*first)); /* calloc checks the product */
    stride = calloc(ncols ? ncols : 1, sizeof(*stride));
    if (!first || !stride)
        goto fail;
    for (i = 0; i < ncols; i++)
        if (igr_locate(cols[i].values, cols[i].offset, cols[i].stride, records, record_stride,
                       &first[i], &stride[i]))
            goto fail;
    for (r = 0; r < nrows; r++) {
        p = igr_put_bytes(p, lead, lead_len);
        cells = p;
        for (i = 0; i < ncols; i++) {
            const struct igr_cell_col *c = &cols[i];
            const char *v = first[i] + (long long)r * stride[i];
            char *end = text;

            if (i)
                *p++ = ' ';
            switch (c->kind) {
            case IGR_JSON_INT:
                end = igr_put_i64(text, igr_load_i(v, c->size));
                p = igr_fit(p, text, (unsigned int)(end - text), c);
                break;
            case IGR_JSON_UINT:
                end = igr_put_u64(text, igr_load_u(v, c->size));
                p = igr_fit(p, text, (unsigned int)(end - text), c);
                break;
            case IGR_JSON_BOOL:
                if (igr_load_u(v, c->size))
                    p = igr_fit(p, "true", 4, c);
                else
                    p = igr_fit(p, "false", 5, c);
                break;
            default: {
                long long k = igr_text_index(v, c->size);

                if (k < 0)
                    goto fail;
                p = igr_put_bytes(p, c->texts + c->offsets[k],
                                  c->offsets[k + 1] - c->offsets[k]);
            }
            }
        }
        p -= igr_trailing_space(cells, p);
        *p++ = '\n';
    }
    free(first);
    free(stride);
    return (long long)(p - out);
fail:
    free(first);
    free(stride);
    return -1;
}
