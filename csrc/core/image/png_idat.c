/*
 * png_idat.c - the engine for the common PNG: 8-bit, not interlaced.
 *
 * libpng parses and validates everything up to the first IDAT (signature, IHDR,
 * PLTE, tRNS, chunk CRCs, limits); from there this file takes over the image
 * data.  Why: Debian's libpng is built without its SIMD filter code, and its
 * byte-at-a-time Paeth unfilter plus per-row transform machinery cost as much
 * as zlib's inflate itself.  Here inflate writes many rows per call, the filters
 * are undone with SSE2 where it pays (Paeth, 3 and 4 bytes per pixel), and each
 * row goes straight to the output (copy, conversion or 256-entry lookup table).
 *
 * It is a resumable state machine (an_png.h): chunk framing over the bytes fed
 * so far -> inflate -> unfilter rows.  IDAT payload goes to zlib straight from
 * the caller's buffer; only a chunk header or CRC split between two feeds is
 * copied (into hold[]).  Whole-file decode feeds the rest of the file at once,
 * incremental decode each chunk as it arrives; every decision depends only on
 * the byte stream, never on where it was cut, so both get identical results.
 * Rows are unfiltered when a batch of rows is full, and at each suspension.
 *
 * Validation: IDAT CRCs are checked; the zlib stream is inflated with a 32 KiB
 * window whatever its header declares, as Pillow and browsers do (zlib checks
 * a distance against a smaller declared window only where it leaves the
 * current inflate call's output, so honouring the claim would make the result
 * depend on where IDAT chunks or feeds are cut); an invalid filter byte or a stream that ends early is corrupt
 * data, missing bytes are truncation; in strict mode the zlib checksum and the
 * chunks after the image up to IEND (lengths and CRCs) are verified as well.
 * All memory is taken from the core allocator; there is no longjmp here.
 *
 * Two inflaters behind one interface (inf_step): zlib, and ISA-L's igzip when
 * the job asks for it (whole-file decodes; job->fast).  igzip inflates the
 * same stream ~2x faster than zlib and, unlike libdeflate, as a stream: the
 * 256 KiB batch of rows stays the only buffer (its state is 87 KB), no
 * whole-image inflate buffer is charged to the caller's budget.  igzip only
 * runs on the common case: a zlib header declaring the full 32 KiB window
 * (the same result as zlib's, which inflates any stream with 32 KiB).  On any
 * error it reports retry (an_idat_retry()) and the caller decodes again with zlib,
 * so damaged files get zlib's exact errors and tolerant-mode pixels.  CRCs go
 * through ISA-L's PCLMUL crc32 in that mode (bit-identical to zlib's).
 */
#include <stdio.h>
#include <string.h>

#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#include <zlib.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "an_png.h"

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

/* zlib's crc32() semantics; ISA-L's PCLMUL version when fast is set. */
static uLong
crc_update(int fast, uLong crc, const uint8_t *p, size_t n)
{
    if (fast)
        return crc32_gzip_refl((uint32_t)crc, p, (uint64_t)n);
    while (n > 0) {
        uInt k = n > 0x40000000u ? 0x40000000u : (uInt)n;
        crc = crc32(crc, p, k);
        p += k;
        n -= k;
    }
    return crc;
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
 * scheme of libpng's own SSE2 filters); src and dst may be the same row. */
AN_INLINE void
paeth_sse2(const uint8_t *src, uint8_t *dst, const uint8_t *prev, size_t rb, int bpp)
{
    __m128i a = _mm_setzero_si128(), c = _mm_setzero_si128();
    for (size_t i = 0; i + (size_t)bpp <= rb; i += (size_t)bpp) {
        __m128i b = load_px(prev + i, bpp);
        __m128i x = load_px(src + i, bpp);
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
        store_px(dst + i, x, bpp);
        a = x;
        c = b;
    }
}
#endif

/* Undo one filter from src into dst (the same row for in-place); prev is the
 * previous reconstructed row (zeros for the first).  Returns 0 for an invalid
 * filter type. */
static int
unfilter(int type, const uint8_t *src, uint8_t *dst, const uint8_t *prev, size_t rb, int bpp)
{
    size_t i;
    switch (type) {
    case 0:
        if (dst != src)
            memcpy(dst, src, rb);
        return 1;
    case 1:
        for (i = 0; i < (size_t)bpp && i < rb; i++)
            dst[i] = src[i];
        for (; i < rb; i++)
            dst[i] = (uint8_t)(src[i] + dst[i - (size_t)bpp]);
        return 1;
    case 2:
        for (i = 0; i < rb; i++)
            dst[i] = (uint8_t)(src[i] + prev[i]);
        return 1;
    case 3:
        for (i = 0; i < (size_t)bpp && i < rb; i++)
            dst[i] = (uint8_t)(src[i] + (prev[i] >> 1));
        for (; i < rb; i++)
            dst[i] = (uint8_t)(src[i] + ((dst[i - (size_t)bpp] + prev[i]) >> 1));
        return 1;
    case 4:
#if defined(__SSE2__)
        if (bpp == 3) {
            paeth_sse2(src, dst, prev, rb, 3);
            return 1;
        }
        if (bpp == 4) {
            paeth_sse2(src, dst, prev, rb, 4);
            return 1;
        }
#endif
        for (i = 0; i < (size_t)bpp && i < rb; i++)
            dst[i] = (uint8_t)(src[i] + prev[i]);
        for (; i < rb; i++)
            dst[i] = (uint8_t)(src[i] + paeth(dst[i - (size_t)bpp], prev[i], prev[i - (size_t)bpp]));
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

/* ---- the state machine ---- */

typedef enum { R_PAYLOAD, R_CRC, R_HDR } rstate;          /* IDAT sequence framing */
typedef enum { P_ROWS, P_ZEND, P_IDAT_REST, P_TRAIL, P_DONE } phase;
enum { GO = 0, WAIT, FAIL };                               /* step results */

struct an_idat {
    an_idat_job job;
    uint8_t *out;
    size_t rb, fstride, ostride;
    uint8_t *buf;           /* owned: a batch of filtered rows */
    uint8_t *prev;          /* owned: the last row of the previous batch */
    size_t batch;           /* rows per batch */
    z_stream zs;            /* zlib's state, or just the in/out cursors for igzip */
    struct inflate_state *isal; /* owned: job.fast */
    int zinit, zret;
    int retry;              /* igzip failed: decode again with zlib */
    phase ph;
    /* input of the current call */
    const uint8_t *in;
    size_t in_len, in_pos;
    uint64_t in_base;       /* file offset of in[0] */
    int eof;
    /* chunk framing */
    rstate rs;
    uint32_t left;          /* payload bytes of the current chunk not read yet */
    uLong crc;              /* running CRC of the current chunk */
    uint8_t hold[8];        /* chunk header or CRC being collected */
    size_t hold_n;
    /* rows: the batch holds rows bstart .. bstart+bn-1, bdone of them emitted */
    uint32_t bstart, bn, bdone;
    uint32_t rows;          /* output rows complete */
    /* P_TRAIL: the chunk after the image data being checked */
    uint8_t ttype[4];
    uint32_t tlen;
    uint64_t tseen;         /* bytes of it after its header */
    int thave;              /* its header is in */
};

static uint64_t
at(const an_idat *s)
{
    return s->in_base + s->in_pos;
}

static int
fail_set(an_error *err, an_status st, const char *msg)
{
    an_error_set(err, st, "%s", msg);
    return FAIL;
}

/* Collects bytes into hold until it has want; 1 when it has. */
static int
fill_hold(an_idat *s, size_t want)
{
    size_t take = want - s->hold_n, avail = s->in_len - s->in_pos;
    if (take > avail)
        take = avail;
    memcpy(s->hold + s->hold_n, s->in + s->in_pos, take);
    s->hold_n += take;
    s->in_pos += take;
    return s->hold_n == want;
}

/* All input is used up: wait for more, or at the end, truncation. */
static int
need_bytes(an_idat *s, an_error *err)
{
    if (!s->eof)
        return WAIT;
    an_error_set(err, AN_ERR_TRUNCATED, "PNG data is truncated at byte %llu",
                 (unsigned long long)at(s));
    return FAIL;
}

/* The CRC of the chunk just read (hold[0..4)). */
static int
check_crc(an_idat *s, an_error *err)
{
    if (be32(s->hold) != (uint32_t)s->crc) {
        an_error_set(err, AN_ERR_CORRUPT, "PNG chunk CRC mismatch at byte %llu",
                     (unsigned long long)(at(s) - 4));
        return FAIL;
    }
    return GO;
}

/* A chunk header is in hold: GO for the next IDAT, or FAIL; a chunk of another
 * type ends the sequence (*ended; hold keeps its header). */
static int
next_header(an_idat *s, int *ended, an_error *err)
{
    uint32_t n = be32(s->hold);
    if (n > 0x7FFFFFFFu) {
        an_error_set(err, AN_ERR_CORRUPT, "PNG chunk length %u is invalid", n);
        return FAIL;
    }
    if (memcmp(s->hold + 4, "IDAT", 4) != 0) {
        *ended = 1;
        return GO;
    }
    s->crc = crc32(crc32(0L, Z_NULL, 0), s->hold + 4, 4);
    s->left = n;
    s->rs = R_PAYLOAD;
    return GO;
}

/* Moves the framing past the end of the current chunk's payload: CRC, then the
 * next header.  *ended when the next chunk is not an IDAT. */
static int
next_chunk(an_idat *s, int *ended, an_error *err)
{
    if (s->rs == R_PAYLOAD) {
        s->rs = R_CRC;
        s->hold_n = 0;
    }
    if (s->rs == R_CRC) {
        if (!fill_hold(s, 4))
            return need_bytes(s, err);
        if (check_crc(s, err) != GO)
            return FAIL;
        s->rs = R_HDR;
        s->hold_n = 0;
    }
    if (!fill_hold(s, 8))
        return need_bytes(s, err);
    return next_header(s, ended, err);
}

/* Hands the next run of IDAT payload to zlib. */
static int
give_input(an_idat *s, an_error *err)
{
    while (s->rs != R_PAYLOAD || s->left == 0) {
        int ended = 0, r = next_chunk(s, &ended, err);
        if (r != GO)
            return r;
        if (ended)
            return fail_set(err, AN_ERR_CORRUPT,
                            "PNG image data ends early (not enough image data)");
    }
    size_t avail = s->in_len - s->in_pos;
    if (avail == 0)
        return need_bytes(s, err);
    uInt give = (uInt)(s->left < avail ? s->left : avail);
    s->crc = crc_update(s->job.fast, s->crc, s->in + s->in_pos, give);
    s->zs.next_in = (Bytef *)(uintptr_t)(s->in + s->in_pos);
    s->zs.avail_in = give;
    s->in_pos += give;
    s->left -= give;
    return GO;
}

/* One inflate call on s->zs's cursors with the job's inflater; zlib's return
 * codes.  An igzip error sets s->retry and reads as Z_DATA_ERROR. */
static int
inf_step(an_idat *s)
{
    if (s->isal == NULL)
        return inflate(&s->zs, Z_NO_FLUSH);
    struct inflate_state *st = s->isal;
    st->next_in = (uint8_t *)(uintptr_t)s->zs.next_in;
    st->avail_in = s->zs.avail_in;
    st->next_out = s->zs.next_out;
    st->avail_out = s->zs.avail_out;
    int r = isal_inflate(st);
    s->zs.next_in = st->next_in;
    s->zs.avail_in = st->avail_in;
    s->zs.next_out = st->next_out;
    s->zs.avail_out = st->avail_out;
    if (r < 0) {
        s->retry = 1;
        s->zs.msg = (char *)"igzip error";
        return Z_DATA_ERROR;
    }
    return st->block_state == ISAL_BLOCK_FINISH ? Z_STREAM_END : Z_OK;
}

/* Unfilters and emits the batch's rows up to row index upto (exclusive). */
static int
emit_rows(an_idat *s, uint32_t upto, an_error *err)
{
    const an_idat_job *job = &s->job;
    const int bpp = job->src_channels;
    for (uint32_t i = s->bdone; i < upto; i++) {
        uint8_t *f = s->buf + (size_t)i * s->fstride;
        uint32_t y = s->bstart + i;
        uint8_t *o = s->out + (size_t)y * s->ostride;
        if (job->emit == AN_IDAT_COPY) {
            /* Straight into the output: the previous row is there too. */
            const uint8_t *up = y == 0 ? s->prev : o - s->ostride;
            if (!unfilter(f[0], f + 1, o, up, s->rb, bpp))
                goto bad_filter;
            s->bdone = i + 1;
            s->rows = y + 1;
            continue;
        }
        const uint8_t *up = i == 0 ? s->prev : f - s->fstride + 1;
        if (!unfilter(f[0], f + 1, f + 1, up, s->rb, bpp))
            goto bad_filter;
        switch (job->emit) {
        case AN_IDAT_COPY:
            break;
        case AN_IDAT_CONVERT:
            an_convert_row8(job->pixfmt, job->mode, f + 1, o, job->width);
            break;
        case AN_IDAT_LUT:
            emit_lut(job->lut, f + 1, o, job->width, job->out_channels);
            break;
        }
        s->bdone = i + 1;
        s->rows = y + 1;
    }
    return GO;

bad_filter:
    an_error_set(err, AN_ERR_CORRUPT, "PNG row %u has invalid filter type %d",
                 s->bstart + s->bdone, s->buf[(size_t)s->bdone * s->fstride]);
    return FAIL;
}

/* The rows complete in the batch, emitted before returning r (on damage the
 * rows before it are kept; an invalid filter among them takes precedence). */
static int
flush_rows(an_idat *s, int r, an_error *err)
{
    uint32_t complete = (uint32_t)((size_t)(s->zs.next_out - s->buf) / s->fstride);
    if (emit_rows(s, complete, err) != GO)
        return FAIL;
    return r;
}

static void
start_batch(an_idat *s)
{
    uint32_t n = s->job.height - s->bstart;
    s->bn = n > s->batch ? (uint32_t)s->batch : n;
    s->bdone = 0;
    s->zs.next_out = s->buf;
    s->zs.avail_out = (uInt)((size_t)s->bn * s->fstride);
}

/* Inflates and emits rows until the image is complete or input runs out. */
static int
step_rows(an_idat *s, an_error *err)
{
    for (;;) {
        if (s->zs.avail_out == 0) {
            if (emit_rows(s, s->bn, err) != GO)
                return FAIL;
            if (s->job.emit != AN_IDAT_COPY) /* COPY reads the output's last row */
                memcpy(s->prev, s->buf + (size_t)(s->bn - 1) * s->fstride + 1, s->rb);
            s->bstart += s->bn;
            if (s->bstart == s->job.height)
                return GO;
            start_batch(s);
        }
        if (s->zs.avail_in == 0) {
            int r = give_input(s, err);
            if (r != GO)
                return flush_rows(s, r, err);
        }
        s->zret = inf_step(s);
        if (s->zret == Z_STREAM_END && s->zs.avail_out > 0)
            return flush_rows(s, fail_set(err, AN_ERR_CORRUPT,
                                          "PNG image data ends early (not enough image data)"),
                              err);
        if (s->zret != Z_OK && s->zret != Z_STREAM_END &&
            !(s->zret == Z_BUF_ERROR && s->zs.avail_in == 0)) {
            an_error_set(err, s->zret == Z_MEM_ERROR ? an_nomem(s->job.alloc) : AN_ERR_CORRUPT,
                         "PNG zlib stream: %s", s->zs.msg ? s->zs.msg : "invalid data");
            return flush_rows(s, FAIL, err);
        }
    }
}

/* Strict mode, after the last row: the zlib stream must end (checksum
 * verified); extra compressed data after the image is tolerated, as libpng does. */
static int
step_zend(an_idat *s, an_error *err)
{
    uint8_t scratch[64];
    while (s->zret != Z_STREAM_END) {
        if (s->zs.avail_in == 0) {
            int r = give_input(s, err);
            if (r != GO)
                return r;
        }
        s->zs.next_out = scratch;
        s->zs.avail_out = sizeof(scratch);
        s->zret = inf_step(s);
        if (s->zret != Z_OK && s->zret != Z_STREAM_END) {
            an_error_set(err, AN_ERR_CORRUPT, "PNG zlib stream: %s",
                         s->zs.msg ? s->zs.msg : "error");
            return FAIL;
        }
    }
    return GO;
}

/* Strict mode: the rest of the IDAT sequence (payload after the stream end is
 * ignored, CRCs are not). */
static int
step_idat_rest(an_idat *s, an_error *err)
{
    for (;;) {
        if (s->rs == R_PAYLOAD && s->left > 0) {
            size_t avail = s->in_len - s->in_pos;
            uInt n = (uInt)(s->left < avail ? s->left : avail);
            s->crc = crc_update(s->job.fast, s->crc, s->in + s->in_pos, n);
            s->in_pos += n;
            s->left -= n;
            if (s->left > 0)
                return need_bytes(s, err);
        }
        int ended = 0, r = next_chunk(s, &ended, err);
        if (r != GO)
            return r;
        if (ended)
            return GO;
    }
}

/* Strict mode: the chunks after the image up to IEND, one at a time.  An
 * error is only decided once the whole chunk (at least 12 bytes) is in, so a
 * stream cut anywhere in it is truncation, as when the file ends there. */
static int
step_trail(an_idat *s, an_error *err)
{
    for (;;) {
        if (!s->thave) {
            if (!fill_hold(s, 8)) {
                if (!s->eof)
                    return WAIT;
                an_error_set(err, AN_ERR_TRUNCATED,
                             "PNG data is truncated at byte %llu (no IEND)",
                             (unsigned long long)at(s));
                return FAIL;
            }
            s->thave = 1;
            s->tlen = be32(s->hold);
            memcpy(s->ttype, s->hold + 4, 4);
            s->tseen = 0;
            s->crc = crc32(crc32(0L, Z_NULL, 0), s->ttype, 4);
            s->hold_n = 0;
        }
        /* Payload (CRC'd), then the 4 CRC bytes into hold. */
        uint64_t total = s->tlen > 0x7FFFFFFFu ? 4 : (uint64_t)s->tlen + 4;
        while (s->tseen < total) {
            size_t avail = s->in_len - s->in_pos;
            if (avail == 0) {
                if (!s->eof)
                    return WAIT;
                an_error_set(err, AN_ERR_TRUNCATED,
                             s->tseen < 4 ? "PNG data is truncated at byte %llu (no IEND)"
                                          : "PNG data is truncated at byte %llu",
                             (unsigned long long)at(s));
                return FAIL;
            }
            if (s->tseen < total - 4 && s->tlen <= 0x7FFFFFFFu) {
                uint64_t n = total - 4 - s->tseen;
                if (n > avail)
                    n = avail;
                s->crc = crc_update(s->job.fast, s->crc, s->in + s->in_pos, (size_t)n);
                s->in_pos += n;
                s->tseen += n;
            } else {
                size_t before = s->hold_n;
                fill_hold(s, 4);
                s->tseen += s->hold_n - before;
            }
        }
        if (s->tlen > 0x7FFFFFFFu)
            return fail_set(err, AN_ERR_CORRUPT, "PNG chunk after the image is truncated or invalid");
        if (memcmp(s->ttype, "IDAT", 4) == 0)
            return fail_set(err, AN_ERR_CORRUPT, "PNG has IDAT chunks after other chunks");
        s->thave = 0;
        s->hold_n = 0;
        if (be32(s->hold) != (uint32_t)s->crc) {
            /* An ancillary chunk with a bad CRC is skipped with a warning (no
             * pixel depends on it) unless the policy is pedantic; a critical
             * one is an error. */
            if ((s->ttype[0] & 0x20) && !s->job.pedantic) {
                if (!err->warned) {
                    err->warned = 1;
                    snprintf(err->detail, sizeof(err->detail),
                             "ancillary chunk %.4s with a bad CRC skipped (byte %llu)",
                             (const char *)s->ttype, (unsigned long long)(at(s) - 4));
                }
                continue;
            }
            an_error_set(err, AN_ERR_CORRUPT, "PNG chunk CRC mismatch at byte %llu",
                         (unsigned long long)(at(s) - 4));
            return FAIL;
        }
        if (memcmp(s->ttype, "IEND", 4) == 0)
            return GO;
    }
}

/* Runs the machine over s->in; the call's status. */
static an_status
pump(an_idat *s, an_error *err)
{
    int r = GO;
    while (r == GO && s->ph != P_DONE) {
        switch (s->ph) {
        case P_ROWS:
            if ((r = step_rows(s, err)) == GO)
                s->ph = s->job.strict ? P_ZEND : P_DONE;
            break;
        case P_ZEND:
            if ((r = step_zend(s, err)) == GO)
                s->ph = P_IDAT_REST;
            break;
        case P_IDAT_REST:
            if ((r = step_idat_rest(s, err)) == GO) {
                /* hold has the header of the first chunk after the image */
                memcpy(s->ttype, s->hold + 4, 4);
                s->tlen = be32(s->hold);
                s->thave = 1;
                s->tseen = 0;
                s->crc = crc32(crc32(0L, Z_NULL, 0), s->ttype, 4);
                s->hold_n = 0;
                s->ph = P_TRAIL;
            }
            break;
        case P_TRAIL:
            if ((r = step_trail(s, err)) == GO)
                s->ph = P_DONE;
            break;
        case P_DONE:
            break;
        }
    }
    s->in = NULL;
    s->in_len = s->in_pos = 0;
    if (r != FAIL)
        return AN_OK;
    s->ph = P_DONE;
    /* Any failure of the igzip path is decided again by zlib: igzip buffers
     * input and output internally, so "its input ran out where the IDAT
     * sequence ended" is not "the stream ended" (data after the last row). */
    if (s->isal != NULL && err->status != an_nomem(s->job.alloc))
        s->retry = 1;
    if (s->retry)
        return err->status; /* the caller starts again with zlib */
    /* Tolerant mode keeps what damaged data yields, even no complete row.
     * Running out of memory is not damage: never a partial result. */
    if (s->job.strict || (err->status != AN_ERR_TRUNCATED && err->status != AN_ERR_CORRUPT))
        return err->status;
    memset(s->out + (size_t)s->rows * s->ostride, 0,
           (size_t)(s->job.height - s->rows) * s->ostride);
    err->warned = 1;
    err->status = AN_OK;
    return AN_OK;
}

an_status
an_idat_feed(an_idat *s, const uint8_t *data, size_t len, an_error *err)
{
    uint64_t base = s->in_base;
    if (s->ph == P_DONE)
        return AN_OK;
    s->in = data;
    s->in_len = len;
    s->in_pos = 0;
    an_status st = pump(s, err);
    s->in_base = base + len;
    return st;
}

an_status
an_idat_end(an_idat *s, an_error *err)
{
    static const uint8_t none[1] = {0}; /* zlib's crc32() resets on a NULL buffer */
    s->eof = 1;
    return an_idat_feed(s, none, 0, err);
}

int
an_idat_done(const an_idat *s)
{
    return s->ph == P_DONE;
}

int
an_idat_retry(const an_idat *s)
{
    return s->retry;
}

uint32_t
an_idat_rows(const an_idat *s)
{
    return s->rows;
}

void
an_idat_free(an_idat *s)
{
    if (s == NULL)
        return;
    const an_allocator *a = s->job.alloc;
    if (s->zinit)
        inflateEnd(&s->zs);
    an_free(a, s->isal);
    an_free(a, s->buf);
    an_free(a, s->prev);
    an_free(a, s);
}

an_status
an_idat_new(an_idat **out, const an_idat_job *job, uint8_t *pixels, an_error *err)
{
    const an_allocator *a = job->alloc;
    *out = NULL;
    an_idat *s = an_calloc(a, 1, sizeof(*s));
    if (s == NULL) {
        an_error_set(err, an_nomem(a), "cannot allocate the PNG decoder");
        return err->status;
    }
    s->job = *job;
    s->out = pixels;
    s->rb = (size_t)job->width * (size_t)job->src_channels;
    s->fstride = s->rb + 1;
    s->ostride = (size_t)job->width * (size_t)job->out_channels;
    s->in_base = job->pos;
    s->rs = R_PAYLOAD;
    s->left = job->first_len;
    s->crc = crc32(crc32(0L, Z_NULL, 0), (const Bytef *)"IDAT", 4);
    s->zret = Z_OK;
    /* Inflate about 256 KiB of rows per call: zlib's fast loop wants room. */
    s->batch = (256u << 10) / s->fstride;
    if (s->batch < 1)
        s->batch = 1;
    if (s->batch > job->height)
        s->batch = job->height;
    size_t bufsize;
    if (!an_mul_size(s->batch, s->fstride, &bufsize) || (s->buf = an_malloc(a, bufsize)) == NULL ||
        (s->prev = an_calloc(a, 1, s->rb)) == NULL) {
        an_error_set(err, an_nomem(a), "cannot allocate PNG row buffers");
        an_idat_free(s);
        return err->status;
    }
    if (job->fast) {
        /* igzip only for a valid zlib header declaring a 32 KiB window and
         * no preset dictionary (igzip ignores FDICT, zlib refuses it): CMF
         * 0x78 (deflate, window 2^15), FLG bit 5 clear, FCHECK valid. */
        if (job->first_len >= 2 && job->data_len >= 2 && job->data[0] == 0x78 &&
            (job->data[1] & 0x20) == 0 && (0x7800u | job->data[1]) % 31 == 0 &&
            (s->isal = an_malloc(a, sizeof(*s->isal))) != NULL) {
            isal_inflate_init(s->isal);
            s->isal->crc_flag = ISAL_ZLIB;
        }
        if (s->isal == NULL)
            s->job.fast = 0; /* zlib; also when the allocator refused */
        if (s->isal != NULL) {
            start_batch(s);
            *out = s;
            return AN_OK;
        }
    }
    s->zs.zalloc = z_alloc;
    s->zs.zfree = z_free;
    s->zs.opaque = (voidpf)(uintptr_t)a;
    if (inflateInit2(&s->zs, 15) != Z_OK) { /* 32 KiB; any header window <= 32 KiB is accepted */
        an_error_set(err, an_nomem(a), "cannot initialise zlib");
        an_idat_free(s);
        return err->status;
    }
    s->zinit = 1;
    start_batch(s);
    *out = s;
    return AN_OK;
}
