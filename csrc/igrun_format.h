/*
 * Writing numbers and short byte runs into an output buffer, shared by the JSON lines and
 * the columns writers. Integers go in blocks of digits with 32-bit arithmetic; the caller
 * guarantees room (21 bytes per integer).
 */
#ifndef IGRUN_FORMAT_H
#define IGRUN_FORMAT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* "00" to "99": integers are written two digits at a time. */
static const char igr_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Exactly 8 digits, leading zeros included. */
static inline char *igr_put_8(char *p, uint32_t v)
{
    uint32_t hi = v / 10000, lo = v % 10000;

    memcpy(p, igr_pairs + (hi / 100) * 2, 2);
    memcpy(p + 2, igr_pairs + (hi % 100) * 2, 2);
    memcpy(p + 4, igr_pairs + (lo / 100) * 2, 2);
    memcpy(p + 6, igr_pairs + (lo % 100) * 2, 2);
    return p + 8;
}

/* Below 10^4, no leading zeros. */
static inline char *igr_put_small(char *p, uint32_t v)
{
    if (v < 10) {
        *p = (char)('0' + v);
        return p + 1;
    }
    if (v < 100) {
        memcpy(p, igr_pairs + v * 2, 2);
        return p + 2;
    }
    if (v < 1000) {
        *p = (char)('0' + v / 100);
        memcpy(p + 1, igr_pairs + (v % 100) * 2, 2);
        return p + 3;
    }
    memcpy(p, igr_pairs + (v / 100) * 2, 2);
    memcpy(p + 2, igr_pairs + (v % 100) * 2, 2);
    return p + 4;
}

/* Below 10^8, no leading zeros. */
static inline char *igr_put_u32(char *p, uint32_t v)
{
    uint32_t lo;

    if (v < 10000)
        return igr_put_small(p, v);
    p = igr_put_small(p, v / 10000);
    lo = v % 10000;
    memcpy(p, igr_pairs + (lo / 100) * 2, 2);
    memcpy(p + 2, igr_pairs + (lo % 100) * 2, 2);
    return p + 4;
}

/* Blocks of 8 digits in 32-bit arithmetic: short dependency chains, no digit count. */
static inline char *igr_put_u64(char *p, uint64_t v)
{
    if (v < 100000000ULL)
        return igr_put_u32(p, (uint32_t)v);
    if (v < 10000000000000000ULL) {
        p = igr_put_u32(p, (uint32_t)(v / 100000000ULL));
        return igr_put_8(p, (uint32_t)(v % 100000000ULL));
    }
    p = igr_put_u32(p, (uint32_t)(v / 10000000000000000ULL));
    p = igr_put_8(p, (uint32_t)(v / 100000000ULL % 100000000ULL));
    return igr_put_8(p, (uint32_t)(v % 100000000ULL));
}

static inline char *igr_put_i64(char *p, int64_t v)
{
    if (v < 0) {
        *p++ = '-';
        return igr_put_u64(p, (uint64_t)0 - (uint64_t)v);
    }
    return igr_put_u64(p, (uint64_t)v);
}

/* memcpy for the short prefixes and texts of a row: inline for up to 32 bytes (overlapping
 * fixed-size moves, never reading past the source), the library call beyond. */
static inline char *igr_put_bytes(char *p, const char *src, size_t n)
{
    if (n >= 8 && n <= 16) {
        memcpy(p, src, 8);
        memcpy(p + n - 8, src + n - 8, 8);
    } else if (n > 16 && n <= 32) {
        memcpy(p, src, 16);
        memcpy(p + n - 16, src + n - 16, 16);
    } else if (n >= 4 && n < 8) {
        memcpy(p, src, 4);
        memcpy(p + n - 4, src + n - 4, 4);
    } else if (n < 4) {
        size_t i;

        for (i = 0; i < n; i++)
            p[i] = src[i];
    } else {
        memcpy(p, src, n);
    }
    return p + n;
}

static inline uint64_t igr_load_u(const char *v, unsigned int size)
{
    switch (size) {
    case 1: return *(const uint8_t *)v;
    case 2: { uint16_t x; memcpy(&x, v, 2); return x; }
    case 4: { uint32_t x; memcpy(&x, v, 4); return x; }
    default: { uint64_t x; memcpy(&x, v, 8); return x; }
    }
}

static inline int64_t igr_load_i(const char *v, unsigned int size)
{
    switch (size) {
    case 1: return *(const int8_t *)v;
    case 2: { int16_t x; memcpy(&x, v, 2); return x; }
    case 4: { int32_t x; memcpy(&x, v, 4); return x; }
    default: { int64_t x; memcpy(&x, v, 8); return x; }
    }
}

/* What a writer's size computation gives when the description is inconsistent or the size
 * does not fit in 64 bits: no buffer is that big, so the write that follows refuses. */
#define IGR_TOO_BIG UINT64_MAX

/* The longest of `count` texts whose bounds are offsets[0..count] (count + 1 of them, as the
 * caller promises), or IGR_TOO_BIG when there is no table or its offsets go backwards (a
 * length would wrap around). */
static inline uint64_t igr_longest_text(const char *texts, const unsigned long long *offsets,
                                        unsigned int count)
{
    uint64_t longest = 0;
    unsigned int i;

    if (!offsets || (!texts && count && offsets[count] != offsets[0]))
        return IGR_TOO_BIG;
    for (i = 0; i < count; i++) {
        if (offsets[i + 1] < offsets[i])
            return IGR_TOO_BIG;
        if (offsets[i + 1] - offsets[i] > longest)
            longest = offsets[i + 1] - offsets[i];
    }
    return longest;
}

/* Whether an integer of `size` bytes is one igr_load_u and igr_load_i read whole. */
static inline int igr_int_size_ok(unsigned int size)
{
    return size == 1 || size == 2 || size == 4 || size == 8;
}

/* a + b and a * b, or IGR_TOO_BIG when either is already that or the result overflows. */
static inline uint64_t igr_add(uint64_t a, uint64_t b)
{
    uint64_t r;

    return a == IGR_TOO_BIG || b == IGR_TOO_BIG || __builtin_add_overflow(a, b, &r) ? IGR_TOO_BIG
                                                                                    : r;
}

static inline uint64_t igr_mul(uint64_t a, uint64_t b)
{
    uint64_t r;

    return a == IGR_TOO_BIG || b == IGR_TOO_BIG || __builtin_mul_overflow(a, b, &r) ? IGR_TOO_BIG
                                                                                    : r;
}

/* A row's position in a table of `count` texts, from its int32 code: a negative code counts
 * from the end, as numpy indexing does. -1 when out of range. */
static inline long long igr_text_index(const char *v, unsigned int count)
{
    int32_t k;

    memcpy(&k, v, 4);
    if (k < 0)
        k += (int32_t)count;
    return k < 0 || (unsigned int)k >= count ? -1 : k;
}

/* Where a column's first value is and how far apart its values are: where `values` points,
 * or `offset` bytes into each record (values NULL). Non-zero when there are no records. */
static inline int igr_locate(const char *values, unsigned long long offset, long long stride,
                             const char *records, long long record_stride, const char **first,
                             long long *step)
{
    if (values) {
        *first = values;
        *step = stride;
        return 0;
    }
    if (!records)
        return -1;
    *first = records + offset;
    *step = record_stride;
    return 0;
}

#endif /* IGRUN_FORMAT_H */
