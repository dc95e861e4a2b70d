/*
 * png_idat.c - the fast path for the common PNG: 8-bit, not interlaced.
 *
 * libpng parses and validates everything up to the first IDAT (signature, IHDR,
 * PLTE, tRNS, chunk CRCs, limits); from there this file takes over the image
 * data.  Why: Debian's libpng is built without its SIMD filter code, and its
 * byte-at-a-time Paeth unfilter plus per-row transform machinery cost as much
 * as zlib's inflate itself.  Here inflate writes many rows per call, the filters
 * are undone with SSE2 where it pays (Paeth, 3 and 4 bytes per pixel), and each
 * row goes straight to the output (copy, conversion or 256-entry lookup table).
 *
 * Validation matches libpng's defaults: IDAT CRCs are checked, the zlib stream
 * is inflated with the window its header declares (so "distance too far back"
 * is an error), an invalid filter byte or a stream that ends early is corrupt
 * data, missing bytes are truncation; in strict mode the zlib checksum and the
 * chunks after the image up to IEND (lengths and CRCs) are verified as well.
 * All memory is taken from the core allocator and released before returning;
 * there is no longjmp on this path.
 */
#include <string.h>

#include <zlib.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "an_png_idat.h"

static uint32_t
be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static voidpf
z_alloc(voidpf opaque, uInt items, uInt size)
{
    return an_calloc((const an_allocator *)opaque, items, size);
}

static void
z_free(voidpf opaque, voidpf ptr)
{
    an_free((const an_allocator *)opaque, ptr);
}

/* ---- unfiltering ---- */

static inline int
paeth(int a, int b, int c)
{
    int pa = b - c, pb = a - c, pc = pa + pb;
    pa = pa < 0 ? -pa : pa;
    pb = pb < 0 ? -pb : pb;
    pc = pc < 0 ? -pc : pc;
    return (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
}

#if defined(__SSE2__)
#if defined(__GNUC__)
#define AN_INLINE static inline __attribute__((always_inline))
#else
#define AN_INLINE static inline
#endif

/* bpp is a constant at every call site.  Pixels are assembled in registers:
 * going through a 4-byte stack temporary written 3 bytes at a time defeats
 * store-to-load forwarding and costs more than the whole filter. */
AN_INLINE __m128i
load_px(const uint8_t *p, int bpp)
{
    uint32_t v;
    if (bpp == 4)
        memcpy(&v, p, 4);
    else
        v = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16);
    return _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)v), _mm_setzero_si128());
}

AN_INLINE void
store_px(uint8_t *p, __m128i v, int bpp)
{
    uint32_t x = (uint32_t)_mm_cvtsi128_si32(_mm_packus_epi16(v, v));
    if (bpp == 4) {
        memcpy(p, &x, 4);
    } else {
        p[0] = (uint8_t)x;
        p[1] = (uint8_t)(x >> 8);
        p[2] = (uint8_t)(x >> 16);
    }
}

static inline __m128i
abs16(__m128i x)
{
    return _mm_max_epi16(x, _mm_sub_epi16(_mm_setzero_si128(), x));
}

static inline __m128i
select16(__m128i mask, __m128i a, __m128i b)
{
    return _mm_or_si128(_mm_and_si128(mask, a), _mm_andnot_si128(mask, b));
}

/* Paeth for 3 or 4 bytes per pixel, one pixel per step in 16-bit lanes (the
 * scheme of libpng's own SSE2 filters). */
AN_INLINE void
paeth_sse2(uint8_t *row, const uint8_t *prev, size_t rb, int bpp)
{
    __m128i a = _mm_setzero_si128(), c = _mm_setzero_si128();
    for (size_t i = 0; i + (size_t)bpp <= rb; i += (size_t)bpp) {
        __m128i b = load_px(prev + i, bpp);
        __m128i x = load_px(row + i, bpp);
        __m128i pa = _mm_sub_epi16(b, c); /* p - a */
        __m128i pb = _mm_sub_epi16(a, c); /* p - b */
        __m128i pc = _mm_add_epi16(pa, pb);
        pa = abs16(pa);
        pb = abs16(pb);
        pc = abs16(pc);
        __m128i smallest = _mm_min_epi16(pc, _mm_min_epi16(pa, pb));
        __m128i pred = select16(_mm_cmpeq_epi16(smallest, pa), a,
                                select16(_mm_cmpeq_epi16(smallest, pb), b, c));
        x = _mm_and_si128(_mm_add_epi16(x, pred), _mm_set1_epi16(0xFF));
        store_px(row + i, x, bpp);
        a = x;
        c = b;
    }
}
#endif

/* Undo one filter in place; prev is the previous reconstructed row (zeros for
 * the first).  Returns 0 for an invalid filter type. */
static int
unfilter(int type, uint8_t *row, const uint8_t *prev, size_t rb, int bpp)
{
    size_t i;
    switch (type) {
    case 0:
        return 1;
    case 1:
        for (i = (size_t)bpp; i < rb; i++)
            row[i] = (uint8_t)(row[i] + row[i - (size_t)bpp]);
        return 1;
    case 2:
        for (i = 0; i < rb; i++)
            row[i] = (uint8_t)(row[i] + prev[i]);
        return 1;
    case 3:
        for (i = 0; i < (size_t)bpp && i < rb; i++)
            row[i] = (uint8_t)(row[i] + (prev[i] >> 1));
        for (; i < rb; i++)
            row[i] = (uint8_t)(row[i] + ((row[i - (size_t)bpp] + prev[i]) >> 1));
        return 1;
    case 4:
#if defined(__SSE2__)
        if (bpp == 3) {
            paeth_sse2(row, prev, rb, 3);
            return 1;
        }
        if (bpp == 4) {
            paeth_sse2(row, prev, rb, 4);
            return 1;
        }
#endif
        for (i = 0; i < (size_t)bpp && i < rb; i++)
            row[i] = (uint8_t)(row[i] + prev[i]);
        for (; i < rb; i++)
            row[i] = (uint8_t)(row[i] + paeth(row[i - (size_t)bpp], prev[i], prev[i - (size_t)bpp]));
        return 1;
    default:
        return 0;
    }
}

/* Palette / grey expansion; constant-size copies so no memcpy call per pixel. */
static void
emit_lut(const uint8_t *lut, const uint8_t *s, uint8_t *o, uint32_t w, int oc)
{
    uint32_t x;
    switch (oc) {
    case 1:
        for (x = 0; x < w; x++)
            o[x] = lut[(size_t)s[x] * 4];
        break;
    case 2:
        for (x = 0; x < w; x++, o += 2)
            memcpy(o, lut + (size_t)s[x] * 4, 2);
        break;
    case 3:
        for (x = 0; x < w; x++, o += 3)
            memcpy(o, lut + (size_t)s[x] * 4, 3);
        break;
    default:
        for (x = 0; x < w; x++, o += 4)
            memcpy(o, lut + (size_t)s[x] * 4, 4);
        break;
    }
}

/* ---- chunk reader over the IDAT sequence ---- */

typedef struct {
    const uint8_t *data;
    size_t len, pos;
    uint32_t left;          /* payload bytes left in the current chunk */
    uLong crc;              /* running CRC of the current chunk */
    int ended;              /* a non-IDAT chunk follows: no more image data */
} idat_reader;

static an_status
chunk_crc_check(idat_reader *r, an_error *err)
{
    if (r->len - r->pos < 4) {
        an_error_set(err, AN_ERR_TRUNCATED, "PNG data is truncated at byte %zu", r->len);
        return err->status;
    }
    if (be32(r->data + r->pos) != (uint32_t)r->crc) {
        an_error_set(err, AN_ERR_CORRUPT, "PNG chunk CRC mismatch at byte %zu", r->pos);
        return err->status;
    }
    r->pos += 4;
    return AN_OK;
}

/* Starts the next chunk; sets ended when it is not an IDAT (pos stays at it). */
static an_status
next_chunk(idat_reader *r, an_error *err)
{
    if (r->len - r->pos < 8) {
        an_error_set(err, AN_ERR_TRUNCATED, "PNG data is truncated at byte %zu", r->len);
        return err->status;
    }
    uint32_t n = be32(r->data + r->pos);
    if (n > 0x7FFFFFFFu) {
        an_error_set(err, AN_ERR_CORRUPT, "PNG chunk length %u is invalid", n);
        return err->status;
    }
    if (memcmp(r->data + r->pos + 4, "IDAT", 4) != 0) {
        r->ended = 1;
        return AN_OK;
    }
    r->crc = crc32(crc32(0L, Z_NULL, 0), r->data + r->pos + 4, 4);
    r->left = n;
    r->pos += 8;
    return AN_OK;
}

/* Hands the next run of IDAT payload to zlib. */
static an_status
feed(idat_reader *r, z_stream *zs, an_error *err)
{
    while (r->left == 0) {
        if (chunk_crc_check(r, err) != AN_OK || next_chunk(r, err) != AN_OK)
            return err->status;
        if (r->ended) {
            an_error_set(err, AN_ERR_CORRUPT, "PNG image data ends early (not enough image data)");
            return err->status;
        }
    }
    size_t avail = r->len - r->pos;
    if (avail == 0) {
        an_error_set(err, AN_ERR_TRUNCATED, "PNG data is truncated at byte %zu", r->len);
        return err->status;
    }
    uInt give = (uInt)(r->left < avail ? r->left : avail);
    r->crc = crc32(r->crc, r->data + r->pos, give);
    zs->next_in = (Bytef *)(uintptr_t)(r->data + r->pos);
    zs->avail_in = give;
    r->pos += give;
    r->left -= give;
    return AN_OK;
}

/* Strict mode: the zlib stream must end (checksum verified) and the chunks after
 * the image must be intact up to IEND. */
static an_status
finish(idat_reader *r, z_stream *zs, int zret, an_error *err)
{
    uint8_t scratch[64];
    while (zret != Z_STREAM_END) {
        if (zs->avail_in == 0 && feed(r, zs, err) != AN_OK)
            return err->status;
        zs->next_out = scratch;
        zs->avail_out = sizeof(scratch);
        zret = inflate(zs, Z_NO_FLUSH);
        if (zret != Z_OK && zret != Z_STREAM_END) {
            an_error_set(err, AN_ERR_CORRUPT, "PNG zlib stream: %s", zs->msg ? zs->msg : "error");
            return err->status;
        }
        /* Extra compressed data after the image is tolerated, as libpng does. */
    }
    /* Rest of the IDAT sequence (payload after the stream end is ignored). */
    for (;;) {
        if (r->left > 0) {
            if (r->len - r->pos < r->left) {
                an_error_set(err, AN_ERR_TRUNCATED, "PNG data is truncated at byte %zu", r->len);
                return err->status;
            }
            r->crc = crc32(r->crc, r->data + r->pos, r->left);
            r->pos += r->left;
            r->left = 0;
        }
        if (chunk_crc_check(r, err) != AN_OK || next_chunk(r, err) != AN_OK)
            return err->status;
        if (r->ended)
            break;
    }
    /* Trailing chunks up to IEND. */
    for (;;) {
        if (r->len - r->pos < 12) {
            an_error_set(err, AN_ERR_TRUNCATED, "PNG data is truncated at byte %zu (no IEND)",
                         r->len);
            return err->status;
        }
        uint32_t n = be32(r->data + r->pos);
        const uint8_t *type = r->data + r->pos + 4;
        if (n > 0x7FFFFFFFu || (size_t)n > r->len - r->pos - 12) {
            an_error_set(err, n > 0x7FFFFFFFu ? AN_ERR_CORRUPT : AN_ERR_TRUNCATED,
                         "PNG chunk after the image is truncated or invalid");
            return err->status;
        }
        if (memcmp(type, "IDAT", 4) == 0) {
            an_error_set(err, AN_ERR_CORRUPT, "PNG has IDAT chunks after other chunks");
            return err->status;
        }
        r->crc = crc32(crc32(0L, Z_NULL, 0), type, 4 + n);
        r->pos += 8 + (size_t)n;
        if (chunk_crc_check(r, err) != AN_OK) {
            /* Ancillary chunks with a bad CRC are dropped by libpng; critical
             * ones are errors. */
            if (err->status == AN_ERR_CORRUPT && (type[0] & 0x20)) {
                err->status = AN_OK;
                r->pos += 4;
                continue;
            }
            return err->status;
        }
        if (memcmp(type, "IEND", 4) == 0)
            return AN_OK;
    }
}

an_status
an_png_idat_decode(const an_idat_job *job, uint8_t *out, uint32_t *rows_done, an_error *err)
{
    const size_t rb = (size_t)job->width * (size_t)job->src_channels;
    const size_t fstride = rb + 1;
    const size_t ostride = (size_t)job->width * (size_t)job->out_channels;
    const int bpp = job->src_channels;
    idat_reader r = {job->data, job->len, job->pos, job->first_len, 0, 0};
    z_stream zs;
    uint8_t *buf = NULL, *prev = NULL;
    an_status st = AN_OK;
    int zret = Z_OK, zinit = 0;

    *rows_done = 0;
    r.crc = crc32(crc32(0L, Z_NULL, 0), (const Bytef *)"IDAT", 4);
    /* Inflate about 256 KiB of rows per call: zlib's fast loop wants room. */
    size_t batch = (256u << 10) / fstride;
    if (batch < 1)
        batch = 1;
    if (batch > job->height)
        batch = job->height;
    size_t bufsize;
    if (!an_mul_size(batch, fstride, &bufsize) ||
        (buf = an_malloc(job->alloc, bufsize)) == NULL ||
        (prev = an_calloc(job->alloc, 1, rb)) == NULL) {
        an_error_set(err, an_nomem(job->alloc), "cannot allocate PNG row buffers");
        st = err->status;
        goto done;
    }
    memset(&zs, 0, sizeof(zs));
    zs.zalloc = z_alloc;
    zs.zfree = z_free;
    zs.opaque = (voidpf)(uintptr_t)job->alloc;
    if (inflateInit2(&zs, 0) != Z_OK) { /* 0: the window the stream declares */
        an_error_set(err, an_nomem(job->alloc), "cannot initialise zlib");
        st = err->status;
        goto done;
    }
    zinit = 1;

    for (uint32_t y = 0; y < job->height;) {
        size_t n = job->height - y;
        if (n > batch)
            n = batch;
        zs.next_out = buf;
        zs.avail_out = (uInt)(n * fstride);
        while (zs.avail_out > 0) {
            if (zs.avail_in == 0 && (st = feed(&r, &zs, err)) != AN_OK)
                break;
            zret = inflate(&zs, Z_NO_FLUSH);
            if (zret == Z_STREAM_END && zs.avail_out > 0) {
                an_error_set(err, AN_ERR_CORRUPT, "PNG image data ends early (not enough image data)");
                st = err->status;
                break;
            }
            if (zret != Z_OK && zret != Z_STREAM_END && !(zret == Z_BUF_ERROR && zs.avail_in == 0)) {
                an_error_set(err, zret == Z_MEM_ERROR ? an_nomem(job->alloc) : AN_ERR_CORRUPT,
                             "PNG zlib stream: %s", zs.msg ? zs.msg : "invalid data");
                st = err->status;
                break;
            }
        }
        /* On damage, still emit the complete rows of this batch (tolerant mode
         * keeps them; strict mode discards the output anyway). */
        if (st != AN_OK)
            n = (size_t)(zs.next_out - buf) / fstride;
        const uint8_t *up = prev;
        for (size_t i = 0; i < n; i++, y++) {
            uint8_t *f = buf + i * fstride;
            if (!unfilter(f[0], f + 1, up, rb, bpp)) {
                an_error_set(err, AN_ERR_CORRUPT, "PNG row %u has invalid filter type %d", y, f[0]);
                st = err->status;
                goto done;
            }
            uint8_t *o = out + (size_t)y * ostride;
            switch (job->emit) {
            case AN_IDAT_COPY:
                memcpy(o, f + 1, rb);
                break;
            case AN_IDAT_CONVERT:
                an_convert_row8(job->pixfmt, job->mode, f + 1, o, job->width);
                break;
            case AN_IDAT_LUT:
                emit_lut(job->lut, f + 1, o, job->width, job->out_channels);
                break;
            }
            up = f + 1;
            *rows_done = y + 1;
        }
        if (st != AN_OK)
            goto done;
        memcpy(prev, up, rb);
    }
    if (job->strict)
        st = finish(&r, &zs, zret, err);

done:
    if (zinit)
        inflateEnd(&zs);
    an_free(job->alloc, buf);
    an_free(job->alloc, prev);
    return st;
}
