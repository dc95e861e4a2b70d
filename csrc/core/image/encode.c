/*
 * encode.c - JPEG (libjpeg-turbo) and PNG (own writer over libdeflate)
 * encoding of strided views.
 *
 * Both encoders take rows straight from the caller's memory when a row's
 * pixels are packed (whatever the row stride, negative included) and gather
 * only the rows that are not.  JPEG leaves channel order (BGR) to libjpeg's
 * JCS_EXT_* input colour spaces; the PNG writer swaps BGR and 16-bit byte
 * order itself on its row copy (see the PNG section for its design).
 *
 * The output goes to an an_outbuf chunk chain (a libjpeg destination manager;
 * the PNG writer appends its chunks), so growing never copies encoded bytes.
 *
 * As in jpeg.c, everything that must be released after libjpeg's longjmp is
 * reachable from the context struct, and one close function frees it on every
 * path; nothing is ever printed.
 */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include "an_encode.h"

/* ---- output buffer ---- */

struct an_chunk {
    an_chunk *next;
    size_t len, cap;
    uint8_t data[];
};

#define OUTBUF_MIN_CHUNK ((size_t)4 << 10)
#define OUTBUF_MAX_FIRST ((size_t)16 << 20)

void
an_outbuf_init(an_outbuf *b, const an_allocator *alloc, size_t first_cap)
{
    memset(b, 0, sizeof(*b));
    b->alloc = alloc;
    if (first_cap != 0 && first_cap < OUTBUF_MIN_CHUNK)
        first_cap = OUTBUF_MIN_CHUNK;
    if (first_cap > OUTBUF_MAX_FIRST)
        first_cap = OUTBUF_MAX_FIRST;
    b->first_cap = first_cap;
}

/* Sets the first chunk's size from an encoder's estimate of the output, unless
 * the caller chose one (the result is clamped to [4 KiB, 16 MiB]). */
static void
outbuf_estimate(an_outbuf *b, size_t estimate)
{
    if (b->first_cap != 0 || b->head != NULL)
        return;
    b->first_cap = estimate < OUTBUF_MIN_CHUNK   ? OUTBUF_MIN_CHUNK
                   : estimate > OUTBUF_MAX_FIRST ? OUTBUF_MAX_FIRST
                                                 : estimate;
}

/* Appends an empty chunk as large as everything written so far (so the total
 * capacity doubles) and at least first_cap.  Returns NULL when out of memory. */
static an_chunk *
outbuf_grow(an_outbuf *b)
{
    size_t cap = b->first_cap ? b->first_cap : OUTBUF_MIN_CHUNK;
    if (b->size > cap)
        cap = b->size;
    if (cap > SIZE_MAX - sizeof(an_chunk))
        return NULL;
    an_chunk *c = an_malloc(b->alloc, sizeof(an_chunk) + cap);
    if (c == NULL)
        return NULL;
    c->next = NULL;
    c->len = 0;
    c->cap = cap;
    if (b->tail != NULL)
        b->tail->next = c;
    else
        b->head = c;
    b->tail = c;
    return c;
}

/* Appends n bytes; returns 0 when out of memory (what was written stays). */
static int
outbuf_write(an_outbuf *b, const uint8_t *p, size_t n)
{
    while (n > 0) {
        an_chunk *c = b->tail;
        if (c == NULL || c->len == c->cap) {
            if ((c = outbuf_grow(b)) == NULL)
                return 0;
        }
        size_t k = c->cap - c->len;
        if (k > n)
            k = n;
        memcpy(c->data + c->len, p, k);
        c->len += k;
        b->size += k;
        p += k;
        n -= k;
    }
    return 1;
}

void
an_outbuf_copy(const an_outbuf *b, uint8_t *dst)
{
    for (const an_chunk *c = b->head; c != NULL; c = c->next) {
        memcpy(dst, c->data, c->len);
        dst += c->len;
    }
}

void
an_outbuf_free(an_outbuf *b)
{
    an_chunk *c = b->head;
    while (c != NULL) {
        an_chunk *next = c->next;
        an_free(b->alloc, c);
        c = next;
    }
    b->head = b->tail = NULL;
    b->size = 0;
}

/* ---- rows ---- */

/* Row y of the view: its first sample (strides may be negative). */
static const uint8_t *
view_row(const an_image_view *v, uint32_t y)
{
    return v->data + (ptrdiff_t)y * v->row_stride;
}

/* True when a row's samples are packed, so the codec can read it in place. */
static int
view_rows_packed(const an_image_view *v)
{
    ptrdiff_t bps = v->bytes_per_sample;
    return v->pixel_stride == (ptrdiff_t)v->channels * bps &&
           (v->channels == 1 || v->sample_stride == bps);
}

/* Gathers n pixels of CH one-byte samples; CH is a constant at each use, so
 * the inner loop unrolls (a strided view costs little more than a packed one). */
#define GATHER8(CH)                                                                      \
    for (uint32_t x = 0; x < n; x++, s += ps, d += (CH))                                 \
        for (int c = 0; c < (CH); c++)                                                   \
            d[c] = s[c * cs]

/* Copies row y into dst as packed samples (same channel order and bytes). */
static void
gather_row(const an_image_view *v, uint32_t y, uint8_t *dst)
{
    const uint8_t *s = view_row(v, y);
    uint8_t *d = dst;
    const uint32_t n = v->width;
    const ptrdiff_t ps = v->pixel_stride, cs = v->sample_stride;
    if (v->bytes_per_sample == 1) {
        switch (v->channels) {
        case 1: GATHER8(1); break;
        case 2: GATHER8(2); break;
        case 3: GATHER8(3); break;
        default: GATHER8(4); break;
        }
        return;
    }
    for (uint32_t x = 0; x < n; x++, s += ps)
        for (int c = 0; c < v->channels; c++, d += 2)
            memcpy(d, s + c * cs, 2);
}

#undef GATHER8

/* ---- JPEG ---- */

void
an_jpeg_enc_opts_init(an_jpeg_enc_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->quality = 85;
    opts->subsampling = AN_SUB_420;
}

#define JPEG_ROWS 16

typedef struct jenc {
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_destination_mgr dest;
    jmp_buf jmp;
    const an_allocator *alloc;
    an_outbuf *out;
    an_error *err;
    int created;
    int nomem;              /* the output buffer could not grow */
    uint8_t *rowbuf;        /* JPEG_ROWS gathered rows, owned */
} jenc;

static jenc *
jenc_from(j_common_ptr cinfo)
{
    return (jenc *)(void *)((char *)cinfo - offsetof(jenc, cinfo));
}

static void
jenc_close(jenc *e)
{
    if (e == NULL)
        return;
    if (e->created)
        jpeg_destroy_compress(&e->cinfo);
    an_free(e->alloc, e->rowbuf);
    an_free(e->alloc, e);
}

static void
jenc_error_exit(j_common_ptr cinfo)
{
    jenc *e = jenc_from(cinfo);
    char buf[JMSG_LENGTH_MAX];
    an_status st = AN_ERR_ENCODE;
    if (e->nomem)
        st = an_nomem(e->alloc);
    else if (cinfo->err->msg_code == JERR_OUT_OF_MEMORY)
        st = AN_ERR_NOMEM;
    (*cinfo->err->format_message)(cinfo, buf);
    if (e->err->status == AN_OK)
        an_error_set(e->err, st, "libjpeg: %s", buf);
    longjmp(e->jmp, 1);
}

static void
jenc_silent(j_common_ptr cinfo)
{
    (void)cinfo; /* never print */
}

static void
jenc_emit(j_common_ptr cinfo, int level)
{
    (void)cinfo; /* the compressor's warnings concern no input we could fix */
    (void)level;
}

/* Destination manager: libjpeg fills the tail chunk's free space. */
static void
jenc_hand_chunk(jenc *e)
{
    an_chunk *c = e->out->tail;
    if (c == NULL || c->len == c->cap) {
        if ((c = outbuf_grow(e->out)) == NULL) {
            e->nomem = 1;
            ERREXIT(&e->cinfo, JERR_OUT_OF_MEMORY);
        }
    }
    e->dest.next_output_byte = c->data + c->len;
    e->dest.free_in_buffer = c->cap - c->len;
}

static void
dest_init(j_compress_ptr cinfo)
{
    jenc_hand_chunk(jenc_from((j_common_ptr)cinfo));
}

static boolean
dest_empty(j_compress_ptr cinfo)
{
    /* libjpeg's contract: the whole buffer handed out is full. */
    jenc *e = jenc_from((j_common_ptr)cinfo);
    an_chunk *c = e->out->tail;
    e->out->size += c->cap - c->len;
    c->len = c->cap;
    jenc_hand_chunk(e);
    return TRUE;
}

static void
dest_term(j_compress_ptr cinfo)
{
    jenc *e = jenc_from((j_common_ptr)cinfo);
    an_chunk *c = e->out->tail;
    size_t used = (c->cap - c->len) - e->dest.free_in_buffer;
    c->len += used;
    e->out->size += used;
}

static const int sampling_factors[AN_SUB_COUNT][2] = {
    [AN_SUB_444] = {1, 1}, [AN_SUB_422] = {2, 1}, [AN_SUB_420] = {2, 2},
    [AN_SUB_440] = {1, 2}, [AN_SUB_411] = {4, 1},
};

static an_status
check_view(const an_image_view *v, uint32_t max_dim, const char *fmt, an_error *err)
{
    if (v->width == 0 || v->height == 0) {
        an_error_set(err, AN_ERR_ARRAY, "cannot encode an empty image (height %u, width %u)",
                     v->height, v->width);
        return err->status;
    }
    if (v->width > max_dim || v->height > max_dim) {
        err->actual = v->width > v->height ? v->width : v->height;
        err->limit = max_dim;
        an_error_set(err, AN_ERR_ARRAY,
                     "%s cannot store an image of height %u and width %u (at most %u pixels "
                     "a side)",
                     fmt, v->height, v->width, max_dim);
        return err->status;
    }
    if (v->channels < 1 || v->channels > 4) {
        an_error_set(err, AN_ERR_ARRAY, "cannot encode %d channels (1 to 4)", v->channels);
        return err->status;
    }
    return AN_OK;
}

an_status
an_encode_jpeg(const an_image_view *img, const an_jpeg_enc_opts *opts, an_outbuf *out,
               an_error *err)
{
    an_image_view v = *img;
    J_COLOR_SPACE cs;

    if (check_view(&v, AN_JPEG_MAX_DIM, "JPEG", err) != AN_OK)
        return err->status;
    if (v.bytes_per_sample != 1) {
        an_error_set(err, AN_ERR_ARRAY, "JPEG stores 8-bit samples only: pass a uint8 array");
        return err->status;
    }
    if ((v.channels == 2 || v.channels == 4) && !opts->drop_alpha) {
        an_error_set(err, AN_ERR_ARRAY,
                     "JPEG has no alpha channel: the %d-channel array needs alpha=\"drop\" "
                     "(or remove the alpha channel first)",
                     v.channels);
        return err->status;
    }
    if (opts->quality < 1 || opts->quality > 100) {
        an_error_set(err, AN_ERR_INVALID_ARG, "quality must be in 1..100, got %d", opts->quality);
        return err->status;
    }
    if ((unsigned)opts->subsampling >= AN_SUB_COUNT) {
        an_error_set(err, AN_ERR_INVALID_ARG, "invalid chroma subsampling %d",
                     (int)opts->subsampling);
        return err->status;
    }
    switch (v.channels) {
    case 2:
        v.channels = 1; /* grey + alpha: read the grey samples only */
        /* fall through */
    case 1:
        cs = JCS_GRAYSCALE;
        break;
    case 3:
        cs = v.bgr ? JCS_EXT_BGR : JCS_EXT_RGB;
        break;
    default:
        cs = v.bgr ? JCS_EXT_BGRX : JCS_EXT_RGBX; /* libjpeg skips the 4th byte */
        break;
    }
    const int packed = view_rows_packed(&v);
    const size_t rowbytes = (size_t)v.width * (size_t)v.channels;

    jenc *e = an_calloc(opts->alloc, 1, sizeof(*e));
    if (e == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the JPEG encoder");
        return err->status;
    }
    e->alloc = opts->alloc;
    e->out = out;
    e->err = err;
    /* rowbytes * height < 2^35: a typical photo needs under 1/8 of its raw size. */
    outbuf_estimate(out, (size_t)((uint64_t)rowbytes * v.height / 8));
    if (!packed) {
        e->rowbuf = an_malloc(e->alloc, rowbytes * JPEG_ROWS);
        if (e->rowbuf == NULL) {
            an_error_set(err, an_nomem(e->alloc), "cannot allocate the JPEG row buffer");
            jenc_close(e);
            return err->status;
        }
    }

    e->cinfo.err = jpeg_std_error(&e->jerr);
    e->jerr.error_exit = jenc_error_exit;
    e->jerr.output_message = jenc_silent;
    e->jerr.emit_message = jenc_emit;
    if (setjmp(e->jmp)) {
        jenc_close(e);
        return err->status;
    }
    jpeg_create_compress(&e->cinfo);
    e->created = 1;
    e->dest.init_destination = dest_init;
    e->dest.empty_output_buffer = dest_empty;
    e->dest.term_destination = dest_term;
    e->cinfo.dest = &e->dest;

    struct jpeg_compress_struct *c = &e->cinfo;
    c->image_width = v.width;
    c->image_height = v.height;
    c->input_components = cs == JCS_GRAYSCALE ? 1 : (v.channels == 3 ? 3 : 4);
    c->in_color_space = cs;
    jpeg_set_defaults(c);
    /* Baseline-compatible tables (quantisers capped at 255) so every decoder
     * accepts the file, even at very low quality. */
    jpeg_set_quality(c, opts->quality, TRUE);
    if (c->num_components == 3) {
        c->comp_info[0].h_samp_factor = sampling_factors[opts->subsampling][0];
        c->comp_info[0].v_samp_factor = sampling_factors[opts->subsampling][1];
        for (int i = 1; i < 3; i++)
            c->comp_info[i].h_samp_factor = c->comp_info[i].v_samp_factor = 1;
    }
    c->optimize_coding = opts->optimize ? TRUE : FALSE;
    if (opts->progressive)
        jpeg_simple_progression(c);
    jpeg_start_compress(c, TRUE);

    JSAMPROW rows[JPEG_ROWS];
    while (c->next_scanline < c->image_height) {
        JDIMENSION y = c->next_scanline;
        JDIMENSION n = c->image_height - y;
        if (n > JPEG_ROWS)
            n = JPEG_ROWS;
        for (JDIMENSION i = 0; i < n; i++) {
            if (packed) {
                /* libjpeg only reads input rows; the cast drops const. */
                rows[i] = (JSAMPROW)(uintptr_t)view_row(&v, y + i);
            } else {
                rows[i] = e->rowbuf + i * rowbytes;
                gather_row(&v, y + i, rows[i]);
            }
        }
        if (jpeg_write_scanlines(c, rows, n) != n) {
            an_error_set(err, AN_ERR_ENCODE, "libjpeg did not accept every scanline");
            jenc_close(e);
            return err->status;
        }
    }
    jpeg_finish_compress(c);
    jenc_close(e);
    return AN_OK;
}

/* ---- PNG ---- */

void
an_png_enc_opts_init(an_png_enc_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->compression = 6;
}

/*
 * The PNG writer.  Rows are filtered with libpng's own adaptive heuristic
 * (per row, the filter whose output has the smallest sum of |signed bytes|,
 * ties to the lower filter type), so the filter choice - and with it the
 * compressibility - is what libpng, Pillow and OpenCV produce; the five
 * candidates are computed 16 bytes at a time with SSE2 (no dependency between
 * bytes on the encode side, unlike unfiltering).  The filtered image is then
 * deflated in one call by libdeflate, which at the same level is several
 * times faster than zlib and a little smaller (it searches matches better).
 * One-shot deflate needs the whole filtered image and a bounded output buffer
 * in memory: both come from the caller's allocator (so a memory budget sees
 * them), and libdeflate's own compressor state (it allocates with malloc) is
 * charged with an_reserve().  CRCs: libdeflate's crc32 (zlib-compatible).
 */
#include <libdeflate.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Charged for libdeflate's compressor (hash tables; ~0.5 MiB at level 6-9). */
#define PNG_DEFLATE_STATE ((size_t)1 << 20)
/* IDAT payload per chunk. */
#define PNG_IDAT_MAX ((size_t)1 << 20)

static inline uint32_t
abs_sum_scalar(const uint8_t *p, size_t n)
{
    uint32_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += p[i] < 128 ? p[i] : 256u - p[i];
    return sum;
}

static inline uint8_t
paeth_pred(int a, int b, int c)
{
    int pa = b - c, pb = a - c, pc = pa + pb;
    pa = pa < 0 ? -pa : pa;
    pb = pb < 0 ? -pb : pb;
    pc = pc < 0 ? -pc : pc;
    return (uint8_t)((pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c));
}

/* Filters row x (prev: the row above; both have bpp readable zero bytes in
 * front) into out[0..4] (Sub, Up, Avg, Paeth) and returns the sums of the five
 * candidates in sums[0..5) (None first). */
static void
filter_candidates(const uint8_t *x, const uint8_t *prev, size_t n, int bpp, uint8_t *out[4],
                  uint64_t sums[5])
{
    size_t i = 0;
    for (int k = 0; k < 5; k++)
        sums[k] = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128(), one = _mm_set1_epi8(1);
    __m128i s0 = zero, s1 = zero, s2 = zero, s3 = zero, s4 = zero;
#define ABS8(v) _mm_min_epu8((v), _mm_sub_epi8(zero, (v)))
    for (; i + 16 <= n; i += 16) {
        __m128i vx = _mm_loadu_si128((const __m128i *)(const void *)(x + i));
        __m128i va = _mm_loadu_si128((const __m128i *)(const void *)(x + i - bpp));
        __m128i vb = _mm_loadu_si128((const __m128i *)(const void *)(prev + i));
        __m128i vc = _mm_loadu_si128((const __m128i *)(const void *)(prev + i - bpp));
        __m128i sub = _mm_sub_epi8(vx, va);
        __m128i up = _mm_sub_epi8(vx, vb);
        __m128i avgf = _mm_sub_epi8(_mm_avg_epu8(va, vb),
                                    _mm_and_si128(_mm_xor_si128(va, vb), one));
        __m128i avg = _mm_sub_epi8(vx, avgf);
        /* Paeth in 16-bit lanes, both halves. */
        __m128i pred[2];
        for (int h = 0; h < 2; h++) {
            __m128i a = h ? _mm_unpackhi_epi8(va, zero) : _mm_unpacklo_epi8(va, zero);
            __m128i b = h ? _mm_unpackhi_epi8(vb, zero) : _mm_unpacklo_epi8(vb, zero);
            __m128i c = h ? _mm_unpackhi_epi8(vc, zero) : _mm_unpacklo_epi8(vc, zero);
            __m128i pa = _mm_sub_epi16(b, c), pb = _mm_sub_epi16(a, c);
            __m128i pc = _mm_add_epi16(pa, pb);
            pa = _mm_max_epi16(pa, _mm_sub_epi16(zero, pa));
            pb = _mm_max_epi16(pb, _mm_sub_epi16(zero, pb));
            pc = _mm_max_epi16(pc, _mm_sub_epi16(zero, pc));
            /* a when pa <= pb && pa <= pc; else b when pb <= pc; else c */
            __m128i use_a = _mm_andnot_si128(
                _mm_or_si128(_mm_cmpgt_epi16(pa, pb), _mm_cmpgt_epi16(pa, pc)),
                _mm_set1_epi16(-1));
            __m128i use_b = _mm_andnot_si128(_mm_cmpgt_epi16(pb, pc), _mm_set1_epi16(-1));
            __m128i bc = _mm_or_si128(_mm_and_si128(use_b, b), _mm_andnot_si128(use_b, c));
            pred[h] = _mm_or_si128(_mm_and_si128(use_a, a), _mm_andnot_si128(use_a, bc));
        }
        __m128i paeth = _mm_sub_epi8(vx, _mm_packus_epi16(pred[0], pred[1]));
        _mm_storeu_si128((__m128i *)(void *)(out[0] + i), sub);
        _mm_storeu_si128((__m128i *)(void *)(out[1] + i), up);
        _mm_storeu_si128((__m128i *)(void *)(out[2] + i), avg);
        _mm_storeu_si128((__m128i *)(void *)(out[3] + i), paeth);
        s0 = _mm_add_epi64(s0, _mm_sad_epu8(ABS8(vx), zero));
        s1 = _mm_add_epi64(s1, _mm_sad_epu8(ABS8(sub), zero));
        s2 = _mm_add_epi64(s2, _mm_sad_epu8(ABS8(up), zero));
        s3 = _mm_add_epi64(s3, _mm_sad_epu8(ABS8(avg), zero));
        s4 = _mm_add_epi64(s4, _mm_sad_epu8(ABS8(paeth), zero));
    }
#undef ABS8
    __m128i acc[5] = {s0, s1, s2, s3, s4};
    for (int k = 0; k < 5; k++) {
        uint64_t lanes[2];
        _mm_storeu_si128((__m128i *)(void *)lanes, acc[k]);
        sums[k] = lanes[0] + lanes[1];
    }
#endif
    for (size_t j = i; j < n; j++) {
        int a = x[(ptrdiff_t)j - bpp], b = prev[j], c = prev[(ptrdiff_t)j - bpp];
        out[0][j] = (uint8_t)(x[j] - a);
        out[1][j] = (uint8_t)(x[j] - b);
        out[2][j] = (uint8_t)(x[j] - ((a + b) >> 1));
        out[3][j] = (uint8_t)(x[j] - paeth_pred(a, b, c));
    }
    sums[0] += abs_sum_scalar(x + i, n - i);
    for (int k = 0; k < 4; k++)
        sums[k + 1] += abs_sum_scalar(out[k] + i, n - i);
}

/* Row y in PNG order (RGB(A), big-endian samples) at dst; returns dst, or the
 * row in the view itself when it is already in that form. */
static const uint8_t *
png_row(const an_image_view *v, uint32_t y, int packed, uint8_t *dst, size_t rowbytes)
{
    int bgr = v->bgr && v->channels >= 3;
    int swap = v->bytes_per_sample == 2 && !v->big_endian;
    if (packed && !bgr && !swap)
        return view_row(v, y);
    if (packed)
        memcpy(dst, view_row(v, y), rowbytes);
    else
        gather_row(v, y, dst);
    const size_t bps = (size_t)v->bytes_per_sample, pix = bps * (size_t)v->channels;
    if (bgr)
        for (size_t o = 0; o < rowbytes; o += pix)
            for (size_t k = 0; k < bps; k++) {
                uint8_t t = dst[o + k];
                dst[o + k] = dst[o + 2 * bps + k];
                dst[o + 2 * bps + k] = t;
            }
    if (swap)
        for (size_t o = 0; o + 1 < rowbytes; o += 2) {
            uint8_t t = dst[o];
            dst[o] = dst[o + 1];
            dst[o + 1] = t;
        }
    return dst;
}

static void
put_be32(uint8_t *p, uint32_t x)
{
    p[0] = (uint8_t)(x >> 24);
    p[1] = (uint8_t)(x >> 16);
    p[2] = (uint8_t)(x >> 8);
    p[3] = (uint8_t)x;
}

/* Appends one chunk (length, type, data, CRC); 0 when out of memory. */
static int
write_chunk(an_outbuf *out, const char *type, const uint8_t *data, size_t n)
{
    uint8_t hdr[8], crc[4];
    put_be32(hdr, (uint32_t)n);
    memcpy(hdr + 4, type, 4);
    uint32_t c = libdeflate_crc32(0, hdr + 4, 4);
    if (n > 0) /* libdeflate_crc32() returns 0 for a NULL buffer */
        c = libdeflate_crc32(c, data, n);
    put_be32(crc, c);
    return outbuf_write(out, hdr, 8) && (n == 0 || outbuf_write(out, data, n)) &&
           outbuf_write(out, crc, 4);
}

static const int png_color_types[5] = {0, 0, 4, 2, 6};

an_status
an_encode_png(const an_image_view *img, const an_png_enc_opts *opts, an_outbuf *out,
              an_error *err)
{
    const an_image_view *v = img;
    const an_allocator *al = opts->alloc;
    size_t rowbytes, frow, total;

    if (check_view(v, AN_PNG_MAX_DIM, "PNG", err) != AN_OK)
        return err->status;
    if (v->bytes_per_sample != 1 && v->bytes_per_sample != 2) {
        an_error_set(err, AN_ERR_ARRAY, "PNG stores 8- or 16-bit samples only");
        return err->status;
    }
    if (opts->compression < 0 || opts->compression > 9) {
        an_error_set(err, AN_ERR_INVALID_ARG, "compression must be in 0..9, got %d",
                     opts->compression);
        return err->status;
    }
    if (!an_mul4_size(v->width, (size_t)v->channels, (size_t)v->bytes_per_sample, 1, &rowbytes) ||
        rowbytes > SIZE_MAX / 8 || !an_mul_size(rowbytes + 1, v->height, &total)) {
        an_error_set(err, AN_ERR_ARRAY, "PNG image size overflows");
        return err->status;
    }
    frow = rowbytes + 1;
    const int packed = view_rows_packed(v);
    const int bpp = v->channels * v->bytes_per_sample;
    const int level = opts->compression;

    /* Working memory: two padded rows, four candidate rows, the filtered
     * image, the compressed stream; all freed at done. */
    an_status st = AN_OK;
    uint8_t *rows = NULL, *filtered = NULL, *z = NULL;
    struct libdeflate_compressor *c = NULL;
    int reserved = 0;
    size_t pad = 16, zcap = 0, zlen = 0;
    size_t rowspace = rowbytes + pad;
    if ((rows = an_calloc(al, 6, rowspace)) == NULL ||
        (filtered = an_malloc(al, total)) == NULL) {
        an_error_set(err, an_nomem(al), "cannot allocate %zu bytes for the filtered PNG rows",
                     total);
        st = err->status;
        goto done;
    }
    uint8_t *cur = rows + pad, *prev = rows + rowspace + pad;
    uint8_t *cand[4];
    for (int k = 0; k < 4; k++)
        cand[k] = rows + (size_t)(2 + k) * rowspace + pad;
    for (uint32_t y = 0; y < v->height; y++) {
        const uint8_t *x = png_row(v, y, packed, cur, rowbytes);
        if (x != cur)
            memcpy(cur, x, rowbytes); /* the candidates read bpp bytes in front */
        uint8_t *f = filtered + (size_t)y * frow;
        if (level == 0) {
            f[0] = 0;
            memcpy(f + 1, cur, rowbytes);
        } else {
            uint64_t sums[5];
            filter_candidates(cur, prev, rowbytes, bpp, cand, sums);
            int best = 0;
            for (int k = 1; k < 5; k++)
                if (sums[k] < sums[best])
                    best = k;
            f[0] = (uint8_t)best;
            memcpy(f + 1, best == 0 ? cur : cand[best - 1], rowbytes);
        }
        uint8_t *t = prev;
        prev = cur;
        cur = t;
    }
    an_free(al, rows);
    rows = NULL;

    if (!an_reserve(al, PNG_DEFLATE_STATE)) {
        an_error_set(err, an_nomem(al), "cannot reserve memory for the deflate state");
        st = err->status;
        goto done;
    }
    reserved = 1;
    if ((c = libdeflate_alloc_compressor(level)) == NULL) {
        an_error_set(err, AN_ERR_NOMEM, "cannot allocate the deflate state");
        st = err->status;
        goto done;
    }
    zcap = libdeflate_zlib_compress_bound(c, total);
    if ((z = an_malloc(al, zcap)) == NULL) {
        an_error_set(err, an_nomem(al), "cannot allocate %zu bytes for the PNG stream", zcap);
        st = err->status;
        goto done;
    }
    zlen = libdeflate_zlib_compress(c, filtered, total, z, zcap);
    if (zlen == 0) {
        an_error_set(err, AN_ERR_ENCODE, "deflate failed");
        st = err->status;
        goto done;
    }
    an_free(al, filtered);
    filtered = NULL;

    outbuf_estimate(out, zlen + zlen / PNG_IDAT_MAX * 12 + 64);
    uint8_t ihdr[13];
    put_be32(ihdr, v->width);
    put_be32(ihdr + 4, v->height);
    ihdr[8] = (uint8_t)(v->bytes_per_sample * 8);
    ihdr[9] = (uint8_t)png_color_types[v->channels];
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    int ok = outbuf_write(out, (const uint8_t *)"\x89PNG\r\n\x1a\n", 8) &&
             write_chunk(out, "IHDR", ihdr, 13);
    for (size_t o = 0; ok && o < zlen; o += PNG_IDAT_MAX)
        ok = write_chunk(out, "IDAT", z + o, zlen - o < PNG_IDAT_MAX ? zlen - o : PNG_IDAT_MAX);
    if (!ok || !write_chunk(out, "IEND", NULL, 0)) {
        an_error_set(err, an_nomem(al), "cannot grow the PNG output buffer");
        st = err->status;
    }

done:
    if (c != NULL)
        libdeflate_free_compressor(c);
    if (reserved)
        an_release(al, PNG_DEFLATE_STATE);
    an_free(al, rows);
    an_free(al, filtered);
    an_free(al, z);
    return st;
}
