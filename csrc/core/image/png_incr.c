/*
 * png_incr.c - PNG decoding as the bytes arrive, over libpng's progressive
 * reader (png_process_data with info, row and end callbacks).
 *
 * libpng keeps whatever partial chunk it needs between calls (through the core
 * allocator, like every other libpng/zlib allocation here), so each chunk is
 * handed over as it is.  The reader is configured exactly as png.c configures
 * the sequential one (same transforms, limits, skipped chunks, benign-error
 * policy), and the rows are placed as png_read_image() places them: for Adam7
 * only the pixels of each pass are combined into the output, so the final
 * image is exact and a truncated one holds exactly the passes that arrived.
 *
 * decode() sends the common 8-bit, non-interlaced PNGs through png_idat.c, and
 * so does incremental decoding (incremental.c drives the same engine); this
 * file handles the rest, which decode() reads with libpng's sequential reader:
 *  - the sequential reader takes IDAT payload in blocks of PNG_IDAT_READ_SIZE
 *    bytes and never inflates a block the input cuts short; a partial block is
 *    held back here until it is complete, so a truncated stream yields the
 *    same rows (tolerant) and the same error (strict);
 *  - after the last row, strict decode() rejects extra compressed data and a
 *    bad zlib checksum; tolerant decode() never looks past the IDAT data.
 */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <png.h>

#include "an_incr.h"
#include "an_png.h"

enum { WALK_SIG, WALK_HDR, WALK_PAYLOAD, WALK_CRC, WALK_OFF };

struct an_ipng {
    png_structp png;
    png_infop info;
    jmp_buf jmp;
    an_png_mem mem;         /* libpng's mem_ptr */
    const an_allocator *alloc;
    an_error *err;          /* the front end's record, for the decoder's life */
    int strict;
    int pedantic;
    int armed;              /* jmp is set: a warning may jump (not during creation) */
    int depth16;
    an_mode mode;
    an_limits limits;
    uint32_t w, h;
    int bps;
    an_png_layout lay;
    size_t rowbytes;        /* libpng's transformed row */
    size_t pixbytes;        /* libpng's transformed pixel */
    size_t ostride;
    uint8_t *target;        /* borrowed */
    uint8_t *rowbuf;        /* owned: non-interlaced + convert */
    uint8_t *image;         /* owned: interlaced + convert */
    uint64_t fed;
    uint32_t rows_done;     /* complete output rows */
    int last_pass;          /* Adam7: the last pass with pixels, and its last row */
    uint32_t last_row;
    int rows_complete;      /* every row has been delivered */
    int ended;              /* IEND read (strict) or nothing more needed */
    /* Hold-back for the sequential reader's IDAT blocks: a
     * walker over the chunk structure of everything fed, and the bytes of the
     * current IDAT block received so far. */
    int walk;               /* WALK_* */
    size_t need;            /* bytes left in the current part */
    uint8_t chdr[8];
    uint32_t clen;
    int cidat;
    int idat_seen, idat_over; /* the walker is in / past the IDAT sequence */
    int bad_name;           /* the first chunk after the IDATs has an invalid type */
    uint8_t *held;          /* owned: < PNG_IDAT_READ_SIZE bytes */
    size_t held_len;
};


#ifndef PNG_IDAT_READ_SIZE
#define PNG_IDAT_READ_SIZE 8192
#endif

/* Adam7: first column/row and step of each pass. */
static const uint32_t xstart[7] = {0, 4, 0, 2, 0, 1, 0};
static const uint32_t xinc[7] = {8, 8, 4, 4, 2, 2, 1};
static const uint32_t ystart[7] = {0, 0, 4, 0, 2, 0, 1};
static const uint32_t yinc[7] = {8, 8, 8, 4, 4, 2, 2};

/* Tolerant decode() stops reading here: after the IDAT data libpng's
 * sequential reader swallows and checks once the last row is in. */
static int
past_idat(const an_ipng *p)
{
    return p->walk == WALK_OFF || p->idat_over ||
           (p->idat_seen && (p->walk == WALK_HDR || !p->cidat));
}

static int
image_final(const an_ipng *p)
{
    return p->rows_complete && past_idat(p);
}

static void
on_error(png_structp png, png_const_charp msg)
{
    an_ipng *p = png_get_error_ptr(png);
    /* Tolerant decoding never looks past the image data: no error there. */
    if (p->err->status == AN_OK && (p->strict || !image_final(p) || p->mem.nomem))
        an_error_set(p->err, p->mem.nomem ? an_nomem(p->alloc) : AN_ERR_CORRUPT, "%s", msg);
    longjmp(p->jmp, 1);
}

static void
on_warning(png_structp png, png_const_charp msg)
{
    an_ipng *p = png_get_error_ptr(png);
    /* The policy of png.c's reader (an_core.h). */
    if (p->armed && !p->mem.nomem && p->strict && (p->pedantic || !an_png_lossless_warning(msg)) &&
        !p->rows_complete) {
        if (p->err->status == AN_OK)
            an_error_set(p->err, AN_ERR_CORRUPT, "%s", msg);
        longjmp(p->jmp, 1);
    }
    if (p->rows_complete) {
        /* After the image, strict decode() rejects a bad or missing zlib end
         * and surplus image data; nothing else counts. */
        if (p->strict && (strncmp(msg, "Truncated compressed data", 25) == 0 ||
                          strncmp(msg, "Extra compressed data", 21) == 0)) {
            an_error_set(p->err, AN_ERR_CORRUPT, "%s", msg);
            longjmp(p->jmp, 1);
        }
        if (!p->strict && past_idat(p))
            return;
    }
    if (!p->err->warned) {
        p->err->warned = 1;
        snprintf(p->err->detail, sizeof(p->err->detail), "%s", msg);
    }
}

static void
fail_now(an_ipng *p, an_status st, const char *msg)
{
    an_error_set(p->err, st, "%s", msg);
    longjmp(p->jmp, 1);
}

static void
on_info(png_structp png, png_infop info)
{
    an_ipng *p = png_get_progressive_ptr(png);
    uint32_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if (an_check_dims(&p->limits, w, h, p->err) != AN_OK)
        longjmp(p->jmp, 1);
    if (w != p->w || h != p->h)
        fail_now(p, AN_ERR_CORRUPT, "libpng changed the image size");
    an_png_configure(png, info, p->mode, p->depth16, &p->lay);
    int ch = p->lay.channels;
    png_read_update_info(png, info);
    p->rowbytes = png_get_rowbytes(png, info);
    if (png_get_channels(png, info) != ch ||
        p->rowbytes != (size_t)p->w * (size_t)ch * (size_t)p->bps)
        fail_now(p, AN_ERR_UNSUPPORTED, "unexpected libpng row layout");
    p->pixbytes = (size_t)ch * (size_t)p->bps;
    if (p->lay.convert && !p->lay.interlaced && (p->rowbuf = an_malloc(p->alloc, p->rowbytes)) == NULL)
        fail_now(p, an_nomem(p->alloc), "cannot allocate PNG row buffer");
    if (p->lay.convert && p->lay.interlaced) {
        size_t total;
        if (!an_mul_size(p->rowbytes, p->h, &total) ||
            (p->image = an_calloc(p->alloc, 1, total)) == NULL)
            fail_now(p, an_nomem(p->alloc), "cannot allocate PNG deinterlace buffer");
    }
    if (p->lay.interlaced) {
        p->last_pass = 0;
        for (int k = 6; k >= 0; k--)
            if (p->w > xstart[k] && p->h > ystart[k]) {
                p->last_pass = k;
                break;
            }
        int k = p->last_pass;
        p->last_row = ystart[k] + (p->h - 1 - ystart[k]) / yinc[k] * yinc[k];
    }
}

static void
convert_row(const an_ipng *p, const uint8_t *s, uint8_t *d)
{
    an_png_convert_row(&p->lay, p->mode, p->bps, p->w, s, d);
}

static void
on_row(png_structp png, png_bytep row, png_uint_32 y, int pass)
{
    an_ipng *p = png_get_progressive_ptr(png);
    if (row == NULL || y >= p->h || p->rows_complete)
        return;
    if (!p->lay.interlaced) {
        uint8_t *dst = p->target + (size_t)y * p->ostride;
        if (p->lay.convert)
            convert_row(p, row, dst);
        else
            memcpy(dst, row, p->ostride);
        p->rows_done = y + 1;
        p->rows_complete = p->rows_done == p->h;
        return;
    }
    /* libpng hands the pass row to every row of its block; only its own row
     * takes it, and only at the pass's columns (png_read_image's way). */
    if (pass < 0 || pass > 6 || y < ystart[pass] || (y - ystart[pass]) % yinc[pass] != 0)
        return;
    uint8_t *dst = p->lay.convert ? p->image + (size_t)y * p->rowbytes
                              : p->target + (size_t)y * p->ostride;
    const size_t pb = p->pixbytes;
    for (uint32_t x = xstart[pass]; x < p->w; x += xinc[pass])
        memcpy(dst + x * pb, row + x * pb, pb);
    if (pass == p->last_pass)
        p->rows_done = y + 1; /* rows are final only in the last pass */
    if (pass == p->last_pass && y == p->last_row) {
        p->rows_done = p->h;
        p->rows_complete = 1;
    }
}

static void
on_end(png_structp png, png_infop info)
{
    (void)info;
    an_ipng *p = png_get_progressive_ptr(png);
    p->ended = 1;
}

void
an_ipng_close(an_ipng *p)
{
    if (p == NULL)
        return;
    if (p->png != NULL)
        png_destroy_read_struct(&p->png, p->info ? &p->info : NULL, NULL);
    an_free(p->alloc, p->rowbuf);
    an_free(p->alloc, p->image);
    an_free(p->alloc, p->held);
    an_free(p->alloc, p);
}

uint32_t
an_ipng_rows(const an_ipng *p)
{
    return p->rows_done;
}

an_status
an_ipng_open(an_ipng **out, const an_decode_opts *opts, const an_geometry *g, uint8_t *target,
             an_error *err)
{
    *out = NULL;
    an_ipng *p = an_calloc(opts->alloc, 1, sizeof(*p));
    if (p == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the PNG decoder");
        return err->status;
    }
    p->alloc = opts->alloc;
    p->err = err;
    p->strict = opts->strict;
    p->pedantic = opts->pedantic;
    p->depth16 = opts->depth16;
    p->mode = opts->mode;
    p->limits = opts->limits;
    p->bps = opts->depth16 ? 2 : 1;
    p->w = g->codec_w;
    p->h = g->codec_h;
    p->ostride = (size_t)p->w * (size_t)an_mode_channels(p->mode) * (size_t)p->bps;
    p->target = target;
    p->walk = WALK_SIG;
    p->need = 8;
    p->mem.alloc = opts->alloc;
    p->png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, p, on_error, on_warning, &p->mem,
                                      an_png_malloc, an_png_free);
    if (p->png == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the libpng reader");
        an_ipng_close(p);
        return err->status;
    }
    if (setjmp(p->jmp)) {
        an_ipng_close(p);
        return err->status;
    }
    p->armed = 1;
    p->info = png_create_info_struct(p->png);
    if (p->info == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the libpng info struct");
        an_ipng_close(p);
        return err->status;
    }
    png_set_progressive_read_fn(p->png, p, on_info, on_row, on_end);
    an_png_setup_reader(p->png, opts);
    *out = p;
    return AN_OK;
}

/* Interlaced + grey conversion: the deinterlaced rows become output rows. */
static void
flush_image(an_ipng *p)
{
    if (p->image == NULL)
        return;
    for (uint32_t y = 0; y < p->h; y++)
        convert_row(p, p->image + (size_t)y * p->rowbytes, p->target + (size_t)y * p->ostride);
    an_free(p->alloc, p->image);
    p->image = NULL;
}

/* Tolerant decoding keeps what arrived and reports the damage as a warning.
 * Damage between the last row and the end of the IDAT data counts too: there
 * png_read_row() fails on its last row, which png.c then zeroes. */
static an_status
keep_partial(an_ipng *p)
{
    if (!image_final(p)) {
        p->err->warned = 1;
        if (p->rows_complete && !p->lay.interlaced)
            memset(p->target + (size_t)(p->h - 1) * p->ostride, 0, p->ostride);
    }
    p->err->status = AN_OK;
    p->ended = 1;
    flush_image(p);
    return AN_OK;
}

/* png_check_chunk_name(): four ASCII letters.  The progressive reader skips
 * that check for the chunk that ends the IDAT sequence; the sequential one
 * (png_read_end, strict decode()) rejects it as corrupt. */
static int
valid_name(const uint8_t *t)
{
    for (int i = 0; i < 4; i++)
        if (!((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z')))
            return 0;
    return 1;
}

/* Advances the chunk walker over n new bytes; returns how many bytes at the end
 * of the input belong to an IDAT block that is not complete yet. */
static size_t
walk_chunks(an_ipng *p, const uint8_t *d, size_t n)
{
    size_t i = 0;
    while (i < n && p->walk != WALK_OFF) {
        size_t take = n - i < p->need ? n - i : p->need;
        if (p->walk == WALK_HDR)
            memcpy(p->chdr + 8 - p->need, d + i, take);
        i += take;
        p->need -= take;
        if (p->need > 0)
            break;
        switch (p->walk) {
        case WALK_SIG:
        case WALK_CRC:
            p->walk = WALK_HDR;
            p->need = 8;
            break;
        case WALK_HDR:
            p->clen = ((uint32_t)p->chdr[0] << 24) | ((uint32_t)p->chdr[1] << 16) |
                      ((uint32_t)p->chdr[2] << 8) | p->chdr[3];
            p->cidat = memcmp(p->chdr + 4, "IDAT", 4) == 0;
            if (!p->idat_over && p->idat_seen && !p->cidat)
                p->bad_name = !valid_name(p->chdr + 4);
            p->idat_over = p->idat_over || (p->idat_seen && !p->cidat);
            p->idat_seen = p->idat_seen || p->cidat;
            p->walk = p->clen > 0x7FFFFFFFu ? WALK_OFF : WALK_PAYLOAD;
            p->need = p->clen;
            if (p->clen == 0 && p->walk == WALK_PAYLOAD) {
                p->walk = WALK_CRC;
                p->need = 4;
            }
            break;
        case WALK_PAYLOAD:
            p->walk = WALK_CRC;
            p->need = 4;
            break;
        }
    }
    if (p->walk != WALK_PAYLOAD || !p->cidat)
        return 0;
    return (size_t)(p->clen - p->need) % PNG_IDAT_READ_SIZE;
}

static void
process(an_ipng *p, const uint8_t *data, size_t len)
{
    if (len > 0 && !p->ended && (p->strict || !image_final(p)))
        png_process_data(p->png, p->info, (png_bytep)(uintptr_t)data, len);
}

an_status
an_ipng_feed(an_ipng *p, const uint8_t *data, size_t len, int *done, an_error *err)
{
    (void)err;
    if (setjmp(p->jmp)) {
        /* Running out of memory is not damage: never a partial result. */
        if (p->strict || p->err->status == an_nomem(p->alloc))
            return p->err->status != AN_OK ? p->err->status : AN_ERR_CORRUPT;
        *done = 1;
        return keep_partial(p);
    }
    p->fed += len;
    if (p->walk == WALK_OFF && p->held_len == 0) {
        process(p, data, len);
    } else {
        /* Give libpng everything but the incomplete IDAT block at the end. */
        size_t keep = walk_chunks(p, data, len);
        size_t give = p->held_len + len - keep;
        size_t from_held = give < p->held_len ? give : p->held_len;
        if (p->held == NULL && (p->held = an_malloc(p->alloc, PNG_IDAT_READ_SIZE)) == NULL) {
            an_error_set(p->err, an_nomem(p->alloc), "cannot allocate the PNG input buffer");
            return p->err->status;
        }
        process(p, p->held, from_held);
        process(p, data, give - from_held);
        memmove(p->held, p->held + from_held, p->held_len - from_held);
        memcpy(p->held + (p->held_len - from_held), data + (give - from_held),
               len - (give - from_held));
        p->held_len = keep;
        if (p->bad_name && p->strict)
            fail_now(p, AN_ERR_CORRUPT, "invalid chunk type after the image data");
    }
    if (p->ended || (!p->strict && image_final(p))) {
        flush_image(p);
        p->ended = 1;
        *done = 1;
    }
    return AN_OK;
}

an_status
an_ipng_finish(an_ipng *p, an_error *err)
{
    (void)err;
    if (p->ended)
        return AN_OK;
    an_error_set(p->err, AN_ERR_TRUNCATED, "PNG data is truncated at byte %llu%s",
                 (unsigned long long)p->fed, p->rows_complete ? " (no IEND)" : "");
    if (p->strict)
        return p->err->status;
    return keep_partial(p);
}
