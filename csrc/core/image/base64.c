/*
 * base64.c - table-driven base64 decoder and encoder (see an_base64.h for the
 * accepted syntax).
 *
 * Decoding is one pass over the input with two gears.  The fast gear runs at a
 * quad boundary and takes 16 (then 4) characters at a time through a 256-entry
 * table; one OR of the looked-up values tells whether all of them were data
 * characters, and the 12 (3) bytes are stored at once.  Anything else - a
 * newline, padding, an invalid byte, the first alphabet-specific character -
 * drops to the slow gear, which handles one character with full error
 * reporting and returns to the fast gear at the next quad boundary.  Lines of
 * wrapped base64 therefore cost one failed block per line, not a slow decode.
 *
 * The alphabet is settled by table switching, so it costs nothing per
 * character: the starting table marks '+', '/', '-' and '_' as "undecided";
 * the first one met selects the standard or the URL-safe table, in which the
 * other pair is invalid.
 *
 * The output size is bounded from the input length before decoding (3 bytes
 * per 4 characters after the prefix, trailing whitespace and padding), so the
 * caller can enforce max_bytes and allocate once; the fast gear only uses its
 * 2-byte store slack while that much room is left.
 *
 * On CPUs with SSSE3 or AVX2 the fast gear first hands whole blocks of 16/32
 * characters to the vector kernels of base64_simd.c, which take a block only
 * when all its characters are data characters of the current table, so the
 * slow gear stays the one place where errors, padding and the alphabet are
 * decided.  Encoding likewise runs the kernels over whole 3-byte groups first.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "an_base64.h"
#include "an_base64_simd.h"

/* Table values: 0..63 are data; the rest are classes for the slow gear. */
enum { B_INVALID = 0x80, B_SPACE = 0x81, B_PAD = 0x82, B_STD = 0x83, B_URL = 0x84 };

/* Table contents as constant expressions, so the tables are const data with
 * no initialisation (t: 0 undecided, 1 standard, 2 URL-safe). */
#define B64_ALNUM(c)                                                                      \
    ((c) >= 'A' && (c) <= 'Z'   ? (c) - 'A'                                               \
     : (c) >= 'a' && (c) <= 'z' ? (c) - 'a' + 26                                          \
     : (c) >= '0' && (c) <= '9' ? (c) - '0' + 52                                          \
                                : -1)
#define B64_SPACE(c)                                                                      \
    ((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\v' || (c) == '\f' || (c) == '\r')
#define B64_PAIR(c, t, first, second, mine, cls)                                          \
    ((t) == 0 ? (cls) : (t) == (mine) ? ((c) == (first) ? 62 : 63) : B_INVALID)
#define B64_V(c, t)                                                                       \
    (B64_ALNUM(c) >= 0                ? B64_ALNUM(c)                                      \
     : (c) == '+' || (c) == '/'       ? B64_PAIR(c, t, '+', '/', 1, B_STD)                \
     : (c) == '-' || (c) == '_'       ? B64_PAIR(c, t, '-', '_', 2, B_URL)                \
     : (c) == '='                     ? B_PAD                                             \
     : B64_SPACE(c)                   ? B_SPACE                                           \
                                      : B_INVALID)
/* The cast keeps clang quiet about the arms not taken (e.g. 255 - '0' + 52). */
#define B64_E(c, t) (uint8_t)(B64_V(c, t))
#define B64_R4(n, t) B64_E(n, t), B64_E((n) + 1, t), B64_E((n) + 2, t), B64_E((n) + 3, t)
#define B64_R16(n, t) B64_R4(n, t), B64_R4((n) + 4, t), B64_R4((n) + 8, t), B64_R4((n) + 12, t)
#define B64_R64(n, t)                                                                     \
    B64_R16(n, t), B64_R16((n) + 16, t), B64_R16((n) + 32, t), B64_R16((n) + 48, t)
#define B64_R256(t) B64_R64(0, t), B64_R64(64, t), B64_R64(128, t), B64_R64(192, t)

static const uint8_t dec_undecided[256] = {B64_R256(0)};
static const uint8_t dec_std[256] = {B64_R256(1)};
static const uint8_t dec_url[256] = {B64_R256(2)};

static const char enc_std[65] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char enc_url[65] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int
is_space(uint8_t c)
{
    return dec_undecided[c] == B_SPACE;
}

/* Stores the low 48 bits of x big-endian at p, writing 8 bytes (2 of slack). */
static inline void
store_be48(uint8_t *p, uint64_t x)
{
    x <<= 16;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    x = __builtin_bswap64(x);
    memcpy(p, &x, 8);
#else
    for (int k = 0; k < 8; k++)
        p[k] = (uint8_t)(x >> (56 - 8 * k));
#endif
}

static inline uint64_t
load_be64(const uint8_t *p)
{
    uint64_t x;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(&x, p, 8);
    x = __builtin_bswap64(x);
#else
    x = 0;
    for (int k = 0; k < 8; k++)
        x = x << 8 | p[k];
#endif
    return x;
}

static an_status
b64_fail(an_error *err, size_t offset, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static an_status
b64_fail(an_error *err, size_t offset, const char *fmt, ...)
{
    err->status = AN_ERR_BASE64;
    err->actual = offset;
    err->limit = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
    va_end(ap);
    return AN_ERR_BASE64;
}

static an_status
bad_char(an_error *err, const uint8_t *in, size_t i, const uint8_t *table)
{
    uint8_t c = in[i];
    if ((table == dec_std && (c == '-' || c == '_')) ||
        (table == dec_url && (c == '+' || c == '/')))
        return b64_fail(err, i,
                        "base64 character '%c' at offset %zu mixes the URL-safe and the "
                        "standard alphabets",
                        c, i);
    if (c == '=')
        return b64_fail(err, i, "misplaced base64 padding '=' at offset %zu", i);
    if (c > 0x20 && c < 0x7f)
        return b64_fail(err, i, "invalid base64 character '%c' at offset %zu", c, i);
    return b64_fail(err, i, "invalid base64 byte 0x%02x at offset %zu", c, i);
}

static int
ascii_ieq(const uint8_t *p, const char *lower, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        uint8_t c = p[k];
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c + ('a' - 'A'));
        if (c != (uint8_t)lower[k])
            return 0;
    }
    return 1;
}

/* Where the base64 payload starts: after an optional data-URL prefix. */
static an_status
payload_start(const uint8_t *in, size_t len, unsigned flags, size_t *start, an_error *err)
{
    size_t i = 0;
    *start = 0;
    if (!(flags & AN_B64_DATA_URL))
        return AN_OK;
    while (i < len && is_space(in[i]))
        i++;
    /* ':' is not base64, so "data:" cannot begin a plain payload. */
    if (len - i < 5 || !ascii_ieq(in + i, "data:", 5))
        return AN_OK;
    size_t mt = i + 5;
    const uint8_t *comma = memchr(in + mt, ',', len - mt);
    if (comma == NULL)
        return b64_fail(err, len, "data URL has no ',' before the payload (offset %zu)", len);
    size_t c = (size_t)(comma - in);
    if (c - mt < 7 || !ascii_ieq(comma - 7, ";base64", 7))
        return b64_fail(err, c, "data URL is not base64 (';base64,' expected at offset %zu)", c);
    for (size_t j = mt; j < c - 7; j++)
        if (in[j] <= 0x20 || in[j] >= 0x7f)
            return b64_fail(err, j, "invalid byte 0x%02x in the data URL media type at offset %zu",
                            in[j], j);
    *start = c + 1;
    return AN_OK;
}

/* 3 bytes per 4 characters, 1 or 2 for a partial quad; cannot overflow. */
static size_t
quads_to_bytes(size_t nchars)
{
    return nchars / 4 * 3 + (nchars % 4) * 3 / 4;
}

/* The bound of a payload starting at start: trailing padding and whitespace
 * hold no data. */
static size_t
payload_bound(const uint8_t *in, size_t len, size_t start)
{
    size_t end = len;
    while (end > start && (in[end - 1] == '=' || is_space(in[end - 1])))
        end--;
    return quads_to_bytes(end - start);
}

an_status
an_b64_decoded_bound(const uint8_t *in, size_t len, unsigned flags, size_t *bound, an_error *err)
{
    size_t start;
    an_status s = payload_start(in, len, flags, &start, err);
    if (s != AN_OK)
        return s;
    *bound = payload_bound(in, len, start);
    return AN_OK;
}

an_status
an_b64_decode(const uint8_t *in, size_t len, unsigned flags, uint8_t *out, size_t cap,
              size_t *out_len, an_error *err)
{
    size_t start;
    an_status s;

    *out_len = 0;
    if ((s = payload_start(in, len, flags, &start, err)) != AN_OK)
        return s;

    const uint8_t *t = dec_undecided;
    const int path = an_b64_path();
    size_t i = start, o = 0, last = start;
    uint32_t acc = 0;
    int q = 0; /* characters in the current quad */

    for (;;) {
        if (q == 0) {
            if (path != AN_B64_SCALAR && len - i >= 16) {
                int alphabet = t == dec_std ? 1 : t == dec_url ? 2 : 0;
                size_t k = an_b64_simd_decode(path, in + i, len - i, out + o, cap - o, alphabet);
                i += k;
                o += k / 4 * 3;
            }
            /* Fast gear: only while the stores (with store_be48's 2 bytes
             * of slack) fit in cap; the slow gear checks room per quad. */
            while (len - i >= 16 && cap - o >= 14) {
                const uint8_t *p = in + i;
                uint32_t v0 = t[p[0]], v1 = t[p[1]], v2 = t[p[2]], v3 = t[p[3]];
                uint32_t v4 = t[p[4]], v5 = t[p[5]], v6 = t[p[6]], v7 = t[p[7]];
                uint32_t v8 = t[p[8]], v9 = t[p[9]], v10 = t[p[10]], v11 = t[p[11]];
                uint32_t v12 = t[p[12]], v13 = t[p[13]], v14 = t[p[14]], v15 = t[p[15]];
                if ((v0 | v1 | v2 | v3 | v4 | v5 | v6 | v7 | v8 | v9 | v10 | v11 | v12 | v13 |
                     v14 | v15) &
                    0x80)
                    break;
                uint64_t a = (uint64_t)v0 << 42 | (uint64_t)v1 << 36 | (uint64_t)v2 << 30 |
                             (uint64_t)v3 << 24 | v4 << 18 | v5 << 12 | v6 << 6 | v7;
                uint64_t b = (uint64_t)v8 << 42 | (uint64_t)v9 << 36 | (uint64_t)v10 << 30 |
                             (uint64_t)v11 << 24 | v12 << 18 | v13 << 12 | v14 << 6 | v15;
                store_be48(out + o, a);
                store_be48(out + o + 6, b);
                i += 16;
                o += 12;
            }
            while (len - i >= 4 && cap - o >= 3) {
                const uint8_t *p = in + i;
                uint32_t v0 = t[p[0]], v1 = t[p[1]], v2 = t[p[2]], v3 = t[p[3]];
                if ((v0 | v1 | v2 | v3) & 0x80)
                    break;
                uint32_t x = v0 << 18 | v1 << 12 | v2 << 6 | v3;
                out[o] = (uint8_t)(x >> 16);
                out[o + 1] = (uint8_t)(x >> 8);
                out[o + 2] = (uint8_t)x;
                i += 4;
                o += 3;
            }
        }
        if (i == len)
            break;

        /* Slow gear: one character. */
        uint8_t v = t[in[i]];
        if (v < 64) {
            acc = acc << 6 | v;
            last = i++;
            if (++q == 4) {
                if (cap - o < 3)
                    goto no_room;
                out[o] = (uint8_t)(acc >> 16);
                out[o + 1] = (uint8_t)(acc >> 8);
                out[o + 2] = (uint8_t)acc;
                o += 3;
                q = 0;
                acc = 0;
            }
        } else if (v == B_SPACE) {
            i++;
        } else if (v == B_STD) {
            t = dec_std; /* the character is decoded again with the chosen table */
        } else if (v == B_URL) {
            t = dec_url;
        } else if (v == B_PAD && q >= 2) {
            /* "xx==" or "xxx=": the rest of the padding, then only whitespace. */
            for (int need = 4 - q; need > 0; need--) {
                while (i < len && is_space(in[i]))
                    i++;
                if (i == len)
                    return b64_fail(err, len, "incomplete base64 padding at the end (offset %zu)",
                                    len);
                if (in[i] != '=')
                    return bad_char(err, in, i, t);
                i++;
            }
            while (i < len && is_space(in[i]))
                i++;
            if (i < len)
                return b64_fail(err, i, "base64 data after the padding at offset %zu", i);
            break;
        } else {
            return bad_char(err, in, i, t);
        }
    }

    if (q == 1)
        return b64_fail(err, last,
                        "base64 length is impossible: a single character at offset %zu ends the "
                        "data",
                        last);
    if (q >= 2 && cap - o < (size_t)q - 1)
        goto no_room;
    if (q == 2) {
        out[o++] = (uint8_t)(acc >> 4);
    } else if (q == 3) {
        out[o] = (uint8_t)(acc >> 10);
        out[o + 1] = (uint8_t)(acc >> 2);
        o += 2;
    }
    *out_len = o;
    return AN_OK;

no_room:
    an_error_set(err, AN_ERR_INVALID_ARG, "base64 output buffer of %zu bytes is too small", cap);
    return err->status;
}

an_status
an_b64_decode_alloc(const uint8_t *in, size_t len, unsigned flags, uint64_t max_bytes,
                    const an_allocator *alloc, uint8_t **out, size_t *out_len, an_error *err)
{
    size_t bound;
    an_status s;

    *out = NULL;
    *out_len = 0;
    if ((s = an_b64_decoded_bound(in, len, flags, &bound, err)) != AN_OK)
        return s;
    if (max_bytes && bound > max_bytes) {
        /* The quick bound counts inner whitespace: count data characters
         * exactly (no allocation) before refusing. */
        size_t start, n = 0;
        payload_start(in, len, flags, &start, err);
        for (size_t i = start; i < len; i++)
            n += in[i] != '=' && !is_space(in[i]);
        bound = quads_to_bytes(n);
        if (bound > max_bytes) {
            err->actual = bound;
            err->limit = max_bytes;
            an_error_set(err, AN_ERR_LIMIT_BYTES,
                         "base64 data decodes to %zu bytes, more than max_bytes %llu", bound,
                         (unsigned long long)max_bytes);
            return err->status;
        }
    }
    uint8_t *buf = an_malloc(alloc, bound);
    if (buf == NULL) {
        an_error_set(err, an_nomem(alloc), "cannot allocate %zu bytes for the decoded base64",
                     bound);
        return err->status;
    }
    if ((s = an_b64_decode(in, len, flags, buf, bound, out_len, err)) != AN_OK) {
        an_free(alloc, buf);
        *out_len = 0;
        return s;
    }
    *out = buf;
    return AN_OK;
}

size_t
an_b64_encoded_len(size_t n, int pad, int *ok)
{
    size_t groups = n / 3, rest = n % 3;
    *ok = 0;
    if (groups > (SIZE_MAX - 4) / 4)
        return 0;
    *ok = 1;
    if (rest == 0)
        return groups * 4;
    return groups * 4 + (pad ? 4 : rest + 1);
}

size_t
an_b64_encode(const uint8_t *in, size_t n, char *out, int urlsafe, int pad)
{
    const char *a = urlsafe ? enc_url : enc_std;
    size_t i = an_b64_simd_encode(an_b64_path(), in, n, out, urlsafe), o = i / 3 * 4;

    /* 6 bytes -> 8 characters, reading 8 bytes (2 of them again next step). */
    while (n - i >= 8) {
        uint64_t x = load_be64(in + i);
        out[o] = a[x >> 58];
        out[o + 1] = a[(x >> 52) & 63];
        out[o + 2] = a[(x >> 46) & 63];
        out[o + 3] = a[(x >> 40) & 63];
        out[o + 4] = a[(x >> 34) & 63];
        out[o + 5] = a[(x >> 28) & 63];
        out[o + 6] = a[(x >> 22) & 63];
        out[o + 7] = a[(x >> 16) & 63];
        i += 6;
        o += 8;
    }
    while (n - i >= 3) {
        uint32_t x = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o] = a[x >> 18];
        out[o + 1] = a[(x >> 12) & 63];
        out[o + 2] = a[(x >> 6) & 63];
        out[o + 3] = a[x & 63];
        i += 3;
        o += 4;
    }
    if (n - i == 1) {
        uint32_t x = (uint32_t)in[i] << 16;
        out[o++] = a[x >> 18];
        out[o++] = a[(x >> 12) & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t x = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = a[x >> 18];
        out[o++] = a[(x >> 12) & 63];
        out[o++] = a[(x >> 6) & 63];
        if (pad)
            out[o++] = '=';
    }
    return o;
}
