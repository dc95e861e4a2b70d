/*
 * png.c - PNG decoding over libpng 1.6.
 *
 * libpng's own transforms do all the layout work (palette and tRNS expansion,
 * low-bit-depth unpacking, 16->8 by taking the high byte as Pillow does,
 * gray->RGB, filler alpha, BGR, byte swapping); only colour->grey is done by us
 * (pixel.c) because libpng's rgb_to_gray uses other weights and may apply gamma.
 * No gamma or background transform is ever requested, so samples come out as
 * stored, as Pillow returns them.
 *
 * Like jpeg.c, all state that must survive libpng's longjmp lives in struct
 * an_png and an_png_close() is the only cleanup path.  libpng allocates through
 * the core allocator; warnings are recorded, never printed; ancillary chunks we
 * do not use (text, ICC, ...) are skipped unread and all chunk sizes are capped.
 */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <png.h>

#include "an_png.h"

struct an_png {
    png_structp png;
    png_infop info;
    jmp_buf jmp;
    an_png_mem mem;         /* libpng's mem_ptr */
    const an_allocator *alloc;
    const uint8_t *data;
    size_t len, pos;
    an_error *err;
    int strict;
    int pedantic;
    int armed;              /* jmp is set: a warning may jump (not during creation) */
    an_mode mode;
    uint32_t w, h;
    int bps;                /* bytes per output sample */
    an_png_layout lay;
    size_t rowbytes;        /* libpng's transformed row size */
    uint8_t *rowbuf;        /* owned */
    uint8_t *image;         /* owned: interlaced + convert */
    png_bytep *rowptrs;     /* owned: interlaced */
    uint32_t rows_done;
    int fast;               /* image data goes through png_idat.c */
    an_idat_job job;
};

/* Chunks whose content we never use; libpng skips them without decompressing. */
static const png_byte skipped_chunks[] = {
    'i', 'C', 'C', 'P', '\0', 't', 'E', 'X', 't', '\0', 'z', 'T', 'X', 't', '\0',
    'i', 'T', 'X', 't', '\0', 's', 'P', 'L', 'T', '\0', 'h', 'I', 'S', 'T', '\0',
    'p', 'C', 'A', 'L', '\0', 's', 'C', 'A', 'L', '\0', 's', 'T', 'E', 'R', '\0',
    't', 'I', 'M', 'E', '\0', 'p', 'H', 'Y', 's', '\0', 'o', 'F', 'F', 's', '\0',
    'e', 'X', 'I', 'f', '\0', /* read by an_probe (orientation), wherever it is */
};

static void
on_error(png_structp png, png_const_charp msg)
{
    an_png *p = png_get_error_ptr(png);
    if (p->err->status == AN_OK)
        an_error_set(p->err, p->mem.nomem ? an_nomem(p->alloc) : AN_ERR_CORRUPT, "%s", msg);
    longjmp(p->jmp, 1);
}

int
an_png_lossless_warning(const char *msg)
{
    for (int i = 0; i < 4; i++)
        if (!((msg[i] >= 'a' && msg[i] <= 'z') || (msg[i] >= 'A' && msg[i] <= 'Z')))
            return 0;
    /* "xxxx: ..." from png_chunk_warning/benign_error; "tRNS chunk has
     * out-of-range samples for bit_depth" is png_set_tRNS's plain warning. */
    return msg[0] >= 'a' && msg[0] <= 'z' &&
           (msg[4] == ':' || strncmp(msg + 4, " chunk ", 7) == 0);
}

static void
on_warning(png_structp png, png_const_charp msg)
{
    an_png *p = png_get_error_ptr(png);
    /* Policy (an_core.h): in strict mode only an ancillary chunk's problem is
     * a warning, and not even that when pedantic. */
    if (p->armed && !p->mem.nomem && p->strict &&
        (p->pedantic || !an_png_lossless_warning(msg))) {
        if (p->err->status == AN_OK)
            an_error_set(p->err, AN_ERR_CORRUPT, "%s", msg);
        longjmp(p->jmp, 1);
    }
    if (!p->err->warned) {
        p->err->warned = 1;
        snprintf(p->err->detail, sizeof(p->err->detail), "%s", msg);
    }
}

png_voidp
an_png_malloc(png_structp png, png_alloc_size_t size)
{
    an_png_mem *m = png_get_mem_ptr(png);
    void *ptr = an_malloc(m->alloc, size);
    if (ptr == NULL)
        m->nomem = 1; /* png_malloc() and zlib then fail with png_error() */
    return ptr;
}

void
an_png_free(png_structp png, png_voidp ptr)
{
    an_png_mem *m = png_get_mem_ptr(png);
    an_free(m->alloc, ptr);
}

void
an_png_setup_reader(png_structp png, const an_decode_opts *opts)
{
    png_set_user_limits(png, opts->limits.max_width ? opts->limits.max_width : 0x7FFFFFFF,
                        opts->limits.max_height ? opts->limits.max_height : 0x7FFFFFFF);
    png_set_chunk_cache_max(png, 1000);
    png_set_chunk_malloc_max(png, 8u << 20);
    /* Inflate with a 32 KiB window whatever the zlib header declares, as
     * Pillow does and png_idat.c does: a smaller declared window is checked by
     * zlib only where a distance leaves the current call's output, so honouring
     * it makes the result depend on how IDAT chunks are cut. */
    png_set_option(png, PNG_MAXIMUM_INFLATE_WINDOW, PNG_OPTION_ON);
    /* Pedantic: libpng's "benign" errors (an invalid eXIf or tRNS, surplus
     * image data, ...) are errors like any other; the default policy and
     * tolerant mode keep them as warnings (an_png_warning decides). */
    if (opts->strict && opts->pedantic)
        png_set_benign_errors(png, 0);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, skipped_chunks,
                                (int)(sizeof(skipped_chunks) / 5));
}

static void
on_read(png_structp png, png_bytep out, size_t n)
{
    an_png *p = png_get_io_ptr(png);
    if (n > p->len - p->pos) {
        if (p->err->status == AN_OK)
            an_error_set(p->err, AN_ERR_TRUNCATED, "PNG data is truncated at byte %zu", p->len);
        png_error(png, "truncated");
    }
    memcpy(out, p->data + p->pos, n);
    p->pos += n;
}

void
an_png_close(an_png *p)
{
    if (p == NULL)
        return;
    if (p->png != NULL)
        png_destroy_read_struct(&p->png, p->info ? &p->info : NULL, NULL);
    an_free(p->alloc, p->rowbuf);
    an_free(p->alloc, p->image);
    an_free(p->alloc, p->rowptrs);
    an_free(p->alloc, p);
}

void
an_png_configure(png_structp png, png_infop info, an_mode mode, int depth16, an_png_layout *lay)
{
    int ct = png_get_color_type(png, info);
    int bd = png_get_bit_depth(png, info);
    int trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
    int color = (ct & PNG_COLOR_MASK_COLOR) != 0;
    int want_alpha = mode == AN_MODE_RGBA || mode == AN_MODE_LA;
    int alpha = (ct & PNG_COLOR_MASK_ALPHA) != 0;

    if (ct == PNG_COLOR_TYPE_PALETTE) {
        png_set_palette_to_rgb(png); /* also expands tRNS to alpha */
        alpha = alpha || trns;
    } else if (bd < 8) {
        png_set_expand_gray_1_2_4_to_8(png);
    }
    if (trns && ct != PNG_COLOR_TYPE_PALETTE && want_alpha) {
        png_set_tRNS_to_alpha(png);
        alpha = 1;
    }
    if (bd == 16 && !depth16)
        png_set_strip_16(png); /* high byte, as Pillow does */
    else if (bd < 16 && depth16) {
        png_set_expand_16(png); /* implies png_set_expand(): tRNS becomes alpha */
        alpha = alpha || trns;
    }
    if (alpha && !want_alpha)
        png_set_strip_alpha(png);
    if (!alpha && want_alpha)
        png_set_add_alpha(png, 0xFFFF, PNG_FILLER_AFTER);
    lay->convert = color && (mode == AN_MODE_L || mode == AN_MODE_LA);
    if (!color && mode != AN_MODE_L && mode != AN_MODE_LA)
        png_set_gray_to_rgb(png);
    if (mode == AN_MODE_BGR)
        png_set_bgr(png);
    if (depth16) {
        const uint16_t one = 1;
        if (*(const uint8_t *)&one == 1)
            png_set_swap(png); /* PNG is big-endian; NumPy wants native order */
    }
    lay->interlaced = png_set_interlace_handling(png) > 1;
    lay->pixfmt = want_alpha ? AN_PIX_RGBA : AN_PIX_RGB;
    lay->channels = lay->convert ? (want_alpha ? 4 : 3) : an_mode_channels(mode);
}

void
an_png_convert_row(const an_png_layout *lay, an_mode mode, int bps, uint32_t w,
                   const uint8_t *s, uint8_t *d)
{
    if (bps == 1)
        an_convert_row8(lay->pixfmt, mode, s, d, w);
    else
        an_convert_row16(lay->pixfmt, mode, (const uint16_t *)(const void *)s,
                         (uint16_t *)(void *)d, w);
}

static uint32_t
be32(const uint8_t *b)
{
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

/* Builds the fast-path job when the image is 8-bit, not interlaced, and its rows
 * map to the output by a copy, a conversion or a lookup table (palette, grey).
 * Returns 0 to leave the image to libpng's transforms. */
static int
setup_fast(an_png *p)
{
    png_structp png = p->png;
    png_infop info = p->info;
    int ct = png_get_color_type(png, info);
    int want_alpha = p->mode == AN_MODE_RGBA || p->mode == AN_MODE_LA;
    int trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
    an_idat_job *j = &p->job;

    if (png_get_bit_depth(png, info) != 8 || p->bps != 1 ||
        png_get_interlace_type(png, info) != PNG_INTERLACE_NONE)
        return 0;
    /* png_read_info() stops right after the header of the first IDAT. */
    if (p->pos < 16 || memcmp(p->data + p->pos - 4, "IDAT", 4) != 0)
        return 0;
    j->src_channels = png_get_channels(png, info);
    j->out_channels = an_mode_channels(p->mode);
    j->mode = p->mode;
    if (ct == PNG_COLOR_TYPE_PALETTE || ct == PNG_COLOR_TYPE_GRAY) {
        uint8_t rgba[256 * 4], packed[256 * 4];
        memset(rgba, 0, sizeof(rgba));
        for (int i = 0; i < 256; i++)
            rgba[4 * i + 3] = 255;
        if (ct == PNG_COLOR_TYPE_PALETTE) {
            png_colorp pal = NULL;
            int npal = 0;
            png_bytep alpha = NULL;
            int nalpha = 0;
            png_color_16p key = NULL;
            png_get_PLTE(png, info, &pal, &npal);
            if (trns && want_alpha)
                png_get_tRNS(png, info, &alpha, &nalpha, &key);
            for (int i = 0; i < npal && i < 256; i++) {
                rgba[4 * i] = pal[i].red;
                rgba[4 * i + 1] = pal[i].green;
                rgba[4 * i + 2] = pal[i].blue;
            }
            for (int i = 0; alpha != NULL && i < nalpha && i < 256; i++)
                rgba[4 * i + 3] = alpha[i];
        } else {
            png_color_16p key = NULL;
            if (trns && want_alpha)
                png_get_tRNS(png, info, NULL, NULL, &key);
            for (int i = 0; i < 256; i++) {
                rgba[4 * i] = rgba[4 * i + 1] = rgba[4 * i + 2] = (uint8_t)i;
                if (key != NULL && key->gray == i)
                    rgba[4 * i + 3] = 0;
            }
        }
        an_convert_row8(AN_PIX_RGBA, p->mode, rgba, packed, 256);
        for (int i = 0; i < 256; i++)
            memcpy(j->lut + 4 * i, packed + i * j->out_channels, (size_t)j->out_channels);
        j->emit = (ct == PNG_COLOR_TYPE_GRAY && p->mode == AN_MODE_L) ? AN_IDAT_COPY : AN_IDAT_LUT;
    } else {
        if (trns && want_alpha)
            return 0; /* RGB colour key: libpng's tRNS expansion */
        j->pixfmt = ct == PNG_COLOR_TYPE_GRAY_ALPHA ? AN_PIX_GA
                    : ct == PNG_COLOR_TYPE_RGB      ? AN_PIX_RGB
                                                    : AN_PIX_RGBA;
        int same = (j->pixfmt == AN_PIX_GA && p->mode == AN_MODE_LA) ||
                   (j->pixfmt == AN_PIX_RGB && p->mode == AN_MODE_RGB) ||
                   (j->pixfmt == AN_PIX_RGBA && p->mode == AN_MODE_RGBA);
        j->emit = same ? AN_IDAT_COPY : AN_IDAT_CONVERT;
    }
    j->pos = p->pos;
    j->first_len = be32(p->data + p->pos - 8);
    j->width = p->w;
    j->height = p->h;
    j->strict = p->strict;
    j->pedantic = p->strict && p->pedantic;
    j->alloc = p->alloc;
    return 1;
}

an_status
an_png_open(an_png **out, const uint8_t *data, size_t len, const an_decode_opts *opts,
            const an_info *info, an_error *err)
{
    (void)info;
    *out = NULL;
    an_png *p = an_calloc(opts->alloc, 1, sizeof(*p));
    if (p == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the PNG decoder");
        return err->status;
    }
    p->alloc = opts->alloc;
    p->data = data;
    p->len = len;
    p->err = err;
    p->strict = opts->strict;
    p->pedantic = opts->pedantic;
    p->mode = opts->mode;
    p->bps = opts->depth16 ? 2 : 1;
    p->mem.alloc = opts->alloc;
    p->png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, p, on_error, on_warning, &p->mem,
                                      an_png_malloc, an_png_free);
    if (p->png == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the libpng reader");
        an_png_close(p);
        return err->status;
    }
    if (setjmp(p->jmp)) {
        an_png_close(p);
        return err->status;
    }
    p->armed = 1;
    p->info = png_create_info_struct(p->png);
    if (p->info == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the libpng info struct");
        an_png_close(p);
        return err->status;
    }
    png_set_read_fn(p->png, p, on_read);
    an_png_setup_reader(p->png, opts);
    png_read_info(p->png, p->info);
    p->w = png_get_image_width(p->png, p->info);
    p->h = png_get_image_height(p->png, p->info);
    if (an_check_dims(&opts->limits, p->w, p->h, err) != AN_OK) {
        an_png_close(p);
        return err->status;
    }
    if ((p->fast = setup_fast(p)) != 0) {
        *out = p;
        return AN_OK;
    }
    an_png_configure(p->png, p->info, p->mode, opts->depth16, &p->lay);
    png_read_update_info(p->png, p->info);
    p->rowbytes = png_get_rowbytes(p->png, p->info);
    if (png_get_channels(p->png, p->info) != p->lay.channels ||
        p->rowbytes != (size_t)p->w * (size_t)p->lay.channels * (size_t)p->bps) {
        an_error_set(err, AN_ERR_UNSUPPORTED, "unexpected libpng row layout");
        an_png_close(p);
        return err->status;
    }
    *out = p;
    return AN_OK;
}

static void
convert_rows(const an_png *p, const uint8_t *src, size_t sstride, uint8_t *out, size_t ostride)
{
    for (uint32_t y = 0; y < p->h; y++)
        an_png_convert_row(&p->lay, p->mode, p->bps, p->w, src + (size_t)y * sstride,
                           out + (size_t)y * ostride);
}

const an_idat_job *
an_png_idat_job(const an_png *p)
{
    return p->fast ? &p->job : NULL;
}

an_status
an_png_run(an_png *p, uint8_t *out, an_error *err)
{
    const size_t ostride = (size_t)p->w * (size_t)an_mode_channels(p->mode) * (size_t)p->bps;
    p->err = err;
    if (p->fast) {
        /* The whole rest of the file, then its end: png_idat.c's engine, with
         * igzip first (the whole stream is here), zlib again if igzip failed
         * (the incremental decoder keeps the job's zlib inflater). */
        an_idat_job job = p->job;
        job.fast = 1;
        job.data = p->data + p->job.pos;
        job.data_len = p->len - p->job.pos;
        for (;;) {
            an_idat *s;
            an_error saved = *err;
            an_status st = an_idat_new(&s, &job, out, err);
            if (st == AN_OK && (st = an_idat_feed(s, p->data + job.pos, p->len - job.pos,
                                                   err)) == AN_OK)
                st = an_idat_end(s, err);
            int retry = s != NULL && an_idat_retry(s);
            an_idat_free(s);
            if (!retry || !job.fast)
                return st;
            *err = saved;
            job.fast = 0;
            if (!p->strict)
                memset(out, 0, (size_t)p->h * ostride);
        }
    }
    if (setjmp(p->jmp)) {
        /* Running out of memory is not damage: never a partial result. */
        if (p->strict || err->status == an_nomem(p->alloc))
            return err->status;
        /* Tolerant mode: keep what was decoded, zero the rest, report it.
         * Interlaced targets were zeroed before the first pass. */
        if (!p->lay.interlaced)
            memset(out + (size_t)p->rows_done * ostride, 0,
                   (size_t)(p->h - p->rows_done) * ostride);
        else if (p->lay.convert)
            convert_rows(p, p->image, p->rowbytes, out, ostride);
        err->warned = 1;
        err->status = AN_OK;
        return AN_OK;
    }
    if (!p->lay.interlaced) {
        if (p->lay.convert && (p->rowbuf = an_malloc(p->alloc, p->rowbytes)) == NULL) {
            an_error_set(err, an_nomem(p->alloc), "cannot allocate PNG row buffer");
            return err->status;
        }
        for (uint32_t y = 0; y < p->h; y++) {
            uint8_t *dst = out + (size_t)y * ostride;
            png_read_row(p->png, p->lay.convert ? p->rowbuf : dst, NULL);
            if (p->lay.convert)
                an_png_convert_row(&p->lay, p->mode, p->bps, p->w, p->rowbuf, dst);
            p->rows_done = y + 1;
        }
    } else {
        uint8_t *target = out;
        size_t tstride = ostride;
        if (p->lay.convert) {
            size_t total;
            if (!an_mul_size(p->rowbytes, p->h, &total) ||
                (p->image = an_calloc(p->alloc, 1, total)) == NULL) {
                an_error_set(err, an_nomem(p->alloc), "cannot allocate PNG deinterlace buffer");
                return err->status;
            }
            target = p->image;
            tstride = p->rowbytes;
        }
        p->rowptrs = an_malloc(p->alloc, (size_t)p->h * sizeof(png_bytep));
        if (p->rowptrs == NULL) {
            an_error_set(err, an_nomem(p->alloc), "cannot allocate PNG row pointers");
            return err->status;
        }
        for (uint32_t y = 0; y < p->h; y++)
            p->rowptrs[y] = target + (size_t)y * tstride;
        /* Rows are complete only after the last pass: in tolerant mode a failure
         * keeps whatever the passes reached. */
        p->rows_done = 1;
        png_read_image(p->png, p->rowptrs);
        if (p->lay.convert)
            convert_rows(p, p->image, p->rowbytes, out, ostride);
    }
    if (p->strict)
        png_read_end(p->png, NULL); /* to IEND: a damaged tail is an error */
    return AN_OK;
}

const char *
an_libpng_version(void)
{
    return png_get_libpng_ver(NULL);
}
