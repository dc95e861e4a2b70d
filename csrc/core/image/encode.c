/*
 * encode.c - JPEG (libjpeg-turbo) and PNG (libpng) encoding of strided views.
 *
 * Both encoders take rows straight from the caller's memory when a row's
 * pixels are packed (whatever the row stride, negative included) and gather
 * only the rows that are not; channel order (BGR), dropped alpha and 16-bit
 * byte order are left to the libraries (JCS_EXT_* input colour spaces,
 * png_set_bgr, png_set_swap), which apply them on their own working copies.
 *
 * The output goes to an an_outbuf chunk chain through a libjpeg destination
 * manager / png_set_write_fn, so growing never copies encoded bytes.
 *
 * As in jpeg.c and png.c, everything that must be released after libjpeg's or
 * libpng's longjmp is reachable from the context struct, and one close function
 * frees it on every path; nothing is ever printed.
 */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <zlib.h>

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

typedef struct penc {
    png_structp png;
    png_infop info;
    jmp_buf jmp;
    const an_allocator *alloc;
    an_outbuf *out;
    an_error *err;
    int nomem;              /* an allocation (ours, libpng's or zlib's) failed */
    uint8_t *rowbuf;        /* one gathered row, owned */
} penc;

static void
penc_close(penc *p)
{
    if (p == NULL)
        return;
    if (p->png != NULL)
        png_destroy_write_struct(&p->png, p->info ? &p->info : NULL);
    an_free(p->alloc, p->rowbuf);
    an_free(p->alloc, p);
}

static void
penc_error(png_structp png, png_const_charp msg)
{
    penc *p = png_get_error_ptr(png);
    if (p->err->status == AN_OK)
        an_error_set(p->err, p->nomem ? an_nomem(p->alloc) : AN_ERR_ENCODE, "libpng: %s", msg);
    longjmp(p->jmp, 1);
}

static void
penc_warning(png_structp png, png_const_charp msg)
{
    (void)png; /* never print; the writer's warnings concern nothing we pass */
    (void)msg;
}

static png_voidp
penc_malloc(png_structp png, png_alloc_size_t size)
{
    penc *p = png_get_mem_ptr(png);
    void *ptr = an_malloc(p->alloc, size);
    if (ptr == NULL)
        p->nomem = 1;
    return ptr;
}

static void
penc_free(png_structp png, png_voidp ptr)
{
    penc *p = png_get_mem_ptr(png);
    an_free(p->alloc, ptr);
}

static void
penc_write(png_structp png, png_bytep data, size_t n)
{
    penc *p = png_get_io_ptr(png);
    if (!outbuf_write(p->out, data, n)) {
        p->nomem = 1;
        png_error(png, "cannot grow the output buffer");
    }
}

static void
penc_flush(png_structp png)
{
    (void)png;
}

static const int png_color_types[5] = {
    0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
    PNG_COLOR_TYPE_RGB_ALPHA,
};

an_status
an_encode_png(const an_image_view *img, const an_png_enc_opts *opts, an_outbuf *out,
              an_error *err)
{
    const an_image_view *v = img;
    size_t rowbytes;

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
    if (!an_mul4_size(v->width, (size_t)v->channels, (size_t)v->bytes_per_sample, 1, &rowbytes)) {
        an_error_set(err, AN_ERR_ARRAY, "PNG row size overflows");
        return err->status;
    }
    const int packed = view_rows_packed(v);

    penc *p = an_calloc(opts->alloc, 1, sizeof(*p));
    if (p == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the PNG encoder");
        return err->status;
    }
    p->alloc = opts->alloc;
    p->out = out;
    p->err = err;
    {
        size_t raw = rowbytes > SIZE_MAX / v->height ? SIZE_MAX : rowbytes * v->height;
        /* Stored (level 0) output is slightly larger than the raw rows. */
        outbuf_estimate(out, opts->compression != 0     ? raw / 2
                             : raw > OUTBUF_MAX_FIRST ? raw
                                                      : raw / 64 * 65 + 1024);
    }
    if (!packed) {
        p->rowbuf = an_malloc(p->alloc, rowbytes);
        if (p->rowbuf == NULL) {
            an_error_set(err, an_nomem(p->alloc), "cannot allocate the PNG row buffer");
            penc_close(p);
            return err->status;
        }
    }
    p->png = png_create_write_struct_2(PNG_LIBPNG_VER_STRING, p, penc_error, penc_warning, p,
                                       penc_malloc, penc_free);
    if (p->png == NULL) {
        an_error_set(err, an_nomem(p->alloc), "cannot allocate the libpng writer");
        penc_close(p);
        return err->status;
    }
    if (setjmp(p->jmp)) {
        penc_close(p);
        return err->status;
    }
    p->info = png_create_info_struct(p->png);
    if (p->info == NULL) {
        an_error_set(err, an_nomem(p->alloc), "cannot allocate the libpng info struct");
        penc_close(p);
        return err->status;
    }
    png_set_write_fn(p->png, p, penc_write, penc_flush);
    /* libpng's default user limit (1,000,000 px a side) guards readers. */
    png_set_user_limits(p->png, AN_PNG_MAX_DIM, AN_PNG_MAX_DIM);
    png_set_compression_level(p->png, opts->compression);
    /* libpng defaults to Z_FILTERED for filtered rows; zlib's default strategy
     * is ~18% faster and ~4% smaller on photos (benchmarks/png_strategy.py),
     * and is what Pillow and OpenCV use. */
    png_set_compression_strategy(p->png, Z_DEFAULT_STRATEGY);
    if (opts->compression == 0)
        png_set_filter(p->png, PNG_FILTER_TYPE_BASE, PNG_FILTER_NONE); /* nothing to gain */
    png_set_IHDR(p->png, p->info, v->width, v->height, v->bytes_per_sample * 8,
                 png_color_types[v->channels], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_BASE,
                 PNG_FILTER_TYPE_BASE);
    png_write_info(p->png, p->info);
    if (v->bgr && v->channels >= 3)
        png_set_bgr(p->png);
    if (v->bytes_per_sample == 2 && !v->big_endian)
        png_set_swap(p->png); /* PNG stores the most significant byte first */
    for (uint32_t y = 0; y < v->height; y++) {
        if (packed) {
            png_write_row(p->png, view_row(v, y)); /* libpng transforms a copy */
        } else {
            gather_row(v, y, p->rowbuf);
            png_write_row(p->png, p->rowbuf);
        }
    }
    png_write_end(p->png, NULL);
    penc_close(p);
    return AN_OK;
}
