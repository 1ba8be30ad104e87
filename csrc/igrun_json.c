/*
 * The JSON lines writer behind `-o json`: one call formats a whole batch, so the cost per
 * event is a few dozen nanoseconds of C instead of building and dumping a dict per event.
 *
 * Strings are written as UTF-8 (as Python's json.dumps(..., ensure_ascii=False) and Go's
 * encoding/json do); bytes that are not valid UTF-8 become U+FFFD, one per maximal invalid
 * subsequence, exactly like Python's bytes.decode("utf-8", "replace").
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "igrun_format.h"
#include "igrun_json.h"

static const char igr_hex[] = "0123456789abcdef";

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid; *skip is then the
 * length of the maximal invalid subsequence to replace with one U+FFFD. */
static unsigned int igr_utf8_len(const unsigned char *s, size_t left, unsigned int *skip)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    unsigned int need, i;

    if (c >= 0xc2 && c <= 0xdf)
        need = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        *skip = 1;
        return 0;
    }
    for (i = 1; i < need; i++) {
        if (i >= left || s[i] < lo || s[i] > hi) {
            *skip = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    return need;
}

static char *igr_put_cstr(char *p, const unsigned char *s, size_t max)
{
    size_t len = strnlen((const char *)s, max), i = 0;

    *p++ = '"';
    while (i < len) {
        unsigned char c = s[i];

        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *p++ = (char)c;
            i++;
        } else if (c < 0x80) {
            *p++ = '\\';
            switch (c) {
            case '"': *p++ = '"'; break;
            case '\\': *p++ = '\\'; break;
            case '\n': *p++ = 'n'; break;
            case '\r': *p++ = 'r'; break;
            case '\t': *p++ = 't'; break;
            case '\b': *p++ = 'b'; break;
            case '\f': *p++ = 'f'; break;
            default:
                memcpy(p, "u00", 3);
                p += 3;
                *p++ = igr_hex[c >> 4];
                *p++ = igr_hex[c & 0xf];
            }
            i++;
        } else {
            unsigned int skip = 0, n = igr_utf8_len(s + i, len - i, &skip);

            if (n) {
                memcpy(p, s + i, n);
                p += n;
                i += n;
            } else {
                memcpy(p, "\xef\xbf\xbd", 3);
                p += 3;
                i += skip;
            }
        }
    }
    *p++ = '"';
    return p;
}

/* Besides its key and value, a column writes its closes, its open and at most two commas
 * (before its open, and before its key).
 * Per value at most: 20 digits and a sign, "false", or 6 bytes per input byte plus quotes;
 * IGR_TOO_BIG for a description the writer cannot follow (an unknown kind, an integer size
 * it cannot load, no prefix, a TEXT table that is not one). */
static uint64_t igr_value_bound(const struct igr_json_col *c)
{
    if ((!c->prefix && c->prefix_len) || (!c->open && c->open_len) || c->closes > 64)
        return IGR_TOO_BIG;
    switch (c->kind) {
    case IGR_JSON_INT:
    case IGR_JSON_UINT:
    case IGR_JSON_BOOL:
        return igr_int_size_ok(c->size) ? 21 : IGR_TOO_BIG;
    case IGR_JSON_WALL_TIME:
        return c->size == 8 ? 21 : IGR_TOO_BIG;
    case IGR_JSON_CSTR:
        return igr_add(igr_mul(6, c->size), 2);
    case IGR_JSON_TEXT: /* size is the number of distinct texts */
        return igr_longest_text(c->texts, c->offsets, c->size);
    default:
        return IGR_TOO_BIG;
    }
}

/* Whether Go's `omitempty` leaves this value out: 0, false, "" (a C string starting with
 * NUL), or a TEXT Python encoded as zero bytes. Wall times are never empty. */
static int igr_json_empty(const struct igr_json_col *c, const char *v, long long k)
{
    switch (c->kind) {
    case IGR_JSON_INT:
    case IGR_JSON_UINT:
    case IGR_JSON_BOOL:
        return igr_load_u(v, c->size) == 0;
    case IGR_JSON_CSTR:
        return c->size == 0 || v[0] == '\0';
    case IGR_JSON_TEXT:
        return c->offsets[k + 1] == c->offsets[k];
    default:
        return 0;
    }
}

unsigned long long igr_json_bound(const struct igr_json_col *cols, unsigned int ncols,
                                  unsigned int suffix_len, unsigned long long nrows)
{
    uint64_t row = suffix_len;
    unsigned int i;

    if (!cols && ncols)
        return IGR_TOO_BIG;
    for (i = 0; i < ncols; i++)
        row = igr_add(row, igr_add(igr_add(cols[i].prefix_len, igr_value_bound(&cols[i])),
                                   (uint64_t)cols[i].open_len + cols[i].closes + 2));
    return igr_mul(row, nrows);
}

long long igr_json_lines(const struct igr_json_col *cols, unsigned int ncols, const char *records,
                         long long record_stride, const char *suffix,
                         unsigned int suffix_len, unsigned long long nrows, char *out,
                         unsigned long long cap)
{
    /* Where each column's first value is and how far apart they are: in-record columns
     * are resolved here, so a caller describes them once and passes each batch's records. */
    const char **first;
    long long *stride;
    struct timespec wall, boot;
    int64_t now, boot_to_wall;
    char *p = out;
    int comma;
    unsigned long long r, bound = igr_json_bound(cols, ncols, suffix_len, nrows);
    unsigned int i;

    if (bound == IGR_TOO_BIG || bound > cap || (!out && bound) || (!suffix && suffix_len))
        return -1;
    first = calloc(ncols ? ncols : 1, sizeof(*first)); /* calloc checks the product */
    stride = calloc(ncols ? ncols : 1, sizeof(*stride));
    if (!first || !stride)
        goto fail;
    for (i = 0; i < ncols; i++)
        if (igr_locate(cols[i].values, cols[i].offset, cols[i].stride, records, record_stride,
                       &first[i], &stride[i]))
            goto fail;
    /* One offset for the whole batch, as wall_times_from_boot_times takes it. */
    clock_gettime(CLOCK_REALTIME, &wall);
    clock_gettime(CLOCK_BOOTTIME, &boot);
    now = (int64_t)wall.tv_sec * 1000000000 + wall.tv_nsec;
    boot_to_wall = now - ((int64_t)boot.tv_sec * 1000000000 + boot.tv_nsec);
    for (r = 0; r < nrows; r++) {
        comma = 0;
        for (i = 0; i < ncols; i++) {
            const struct igr_json_col *c = &cols[i];
            const char *v = first[i] + (long long)r * stride[i];
            long long k = 0;
            unsigned int n;

            for (n = 0; n < c->closes; n++) {
                *p++ = '}';
                comma = 1;
            }
            if (c->open_len) {
                if (comma)
                    *p++ = ',';
                p = igr_put_bytes(p, c->open, c->open_len);
                comma = (c->flags & IGR_JSON_OPEN_VALUE) != 0;
            }
            if (c->kind == IGR_JSON_TEXT) {
                k = igr_text_index(v, c->size);
                if (k < 0)
                    goto fail;
            }
            if ((c->flags & IGR_JSON_OMIT_EMPTY) && igr_json_empty(c, v, k))
                continue;
            if (comma)
                *p++ = ',';
            comma = 1;
            p = igr_put_bytes(p, c->prefix, c->prefix_len);
            switch (c->kind) {
            case IGR_JSON_INT:
                p = igr_put_i64(p, igr_load_i(v, c->size));
                break;
            case IGR_JSON_UINT:
                p = igr_put_u64(p, igr_load_u(v, c->size));
                break;
            case IGR_JSON_WALL_TIME: {
                uint64_t ts = igr_load_u(v, 8);

                p = igr_put_i64(p, ts ? (int64_t)(ts + (uint64_t)boot_to_wall) : now);
                break;
            }
            case IGR_JSON_BOOL:
                if (igr_load_u(v, c->size)) {
                    memcpy(p, "true", 4);
                    p += 4;
                } else {
                    memcpy(p, "false", 5);
                    p += 5;
                }
                break;
            case IGR_JSON_CSTR:
                p = igr_put_cstr(p, (const unsigned char *)v, c->size);
                break;
            default:
                p = igr_put_bytes(p, c->texts + c->offsets[k], c->offsets[k + 1] - c->offsets[k]);
            }
        }
        p = igr_put_bytes(p, suffix, suffix_len);
    }
    free(first);
    free(stride);
    return (long long)(p - out);
fail:
    free(first);
    free(stride);
    return -1;
}
