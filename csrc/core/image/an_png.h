/*
 * an_png.h - PNG internals shared by png.c (whole-file decode), png_idat.c
 * (the IDAT engine) and png_incr.c (incremental decode).
 *
 * The IDAT engine decodes the image data of 8-bit, non-interlaced PNGs after
 * libpng has validated everything before the first IDAT.  It is a resumable
 * state machine over the bytes that follow the first IDAT chunk header: the
 * whole-file decoder feeds it the rest of the file at once, the incremental
 * decoder feeds it each chunk as it arrives, and both get the same pixels, the
 * same errors and the same tolerated damage, because it is the same code.
 */
#ifndef AN_PNG_H
#define AN_PNG_H

#include <png.h>

#include "an_internal.h"

/* ---- the IDAT engine (png_idat.c) ---- */

typedef enum {
    AN_IDAT_COPY,       /* row layout is already the output layout */
    AN_IDAT_CONVERT,    /* an_convert_row8(pixfmt -> mode) */
    AN_IDAT_LUT         /* 1-byte samples index lut (4 bytes per entry) */
} an_idat_emit;

typedef struct an_idat_job {
    size_t pos;             /* file offset of the first IDAT payload byte */
    uint32_t first_len;     /* payload length of the first IDAT */
    uint32_t width, height;
    int src_channels;       /* bytes per pixel in the file (1..4) */
    int out_channels;
    an_idat_emit emit;
    an_pixfmt pixfmt;       /* AN_IDAT_CONVERT */
    an_mode mode;
    uint8_t lut[256 * 4];   /* AN_IDAT_LUT: 256 entries of out_channels bytes, stride 4 */
    int strict;
    int pedantic;           /* strict: an ancillary chunk's bad CRC is an error too */
    /* Whole-file decode: inflate with ISA-L's igzip (see png_idat.c) when the
     * zlib header allows; data points at the first IDAT payload byte. */
    int fast;
    const uint8_t *data;
    size_t data_len;        /* bytes readable at data */
    const an_allocator *alloc;
} an_idat_job;

typedef struct an_idat an_idat;

/* Creates the engine writing into out (height rows of width*out_channels
 * bytes; zero-filled by the caller in tolerant mode).  The job is copied. */
an_status an_idat_new(an_idat **s, const an_idat_job *job, uint8_t *out, an_error *err);

/* Consumes the next len bytes of the file (the first call starts at job->pos).
 * Fails on damage in strict mode; in tolerant mode damage ends the image (the
 * rows that arrived are kept, the rest stays zero, err->warned is set) and the
 * call returns AN_OK.  After the engine is done, further bytes are ignored. */
an_status an_idat_feed(an_idat *s, const uint8_t *data, size_t len, an_error *err);

/* End of input: what is still missing is truncation (handled as in feed). */
an_status an_idat_end(an_idat *s, an_error *err);

/* 1 once no more input is needed (the image, and in strict mode IEND, is in). */
int an_idat_done(const an_idat *s);
/* 1 when the igzip inflater failed: the caller must decode again (with
 * job.fast = 0, the output zeroed again in tolerant mode) to get zlib's exact
 * error or tolerated pixels.  The status returned was not final. */
int an_idat_retry(const an_idat *s);
/* Output rows complete so far. */
uint32_t an_idat_rows(const an_idat *s);
void an_idat_free(an_idat *s);

/* ---- libpng set-up shared by png.c and png_incr.c (png.c) ---- */

/* The allocator hook both readers give libpng as its mem_ptr. */
typedef struct an_png_mem {
    const an_allocator *alloc;
    int nomem;              /* a libpng/zlib allocation failed: errors are NOMEM */
} an_png_mem;

png_voidp an_png_malloc(png_structp png, png_alloc_size_t size);
void an_png_free(png_structp png, png_voidp ptr);

/* Limits, chunk caps, skipped chunks and the benign-error policy of opts. */
void an_png_setup_reader(png_structp png, const an_decode_opts *opts);

/* 1 when a libpng warning (or benign error) concerns an ancillary chunk
 * ("tRNS: invalid", "eXIf: ...", "zTXt: CRC error", "tRNS chunk has
 * out-of-range samples ..."): no pixel is lost, so the default policy only
 * warns. */
int an_png_lossless_warning(const char *msg);

/* What an_png_configure() asked libpng for. */
typedef struct an_png_layout {
    int channels;           /* of the rows libpng delivers */
    int convert;            /* colour source, grey mode: convert from pixfmt */
    an_pixfmt pixfmt;
    int interlaced;
} an_png_layout;

/* Requests the libpng transforms for mode/depth16 (call after the info is
 * read, before png_read_update_info). */
void an_png_configure(png_structp png, png_infop info, an_mode mode, int depth16,
                      an_png_layout *lay);

/* One row of lay->pixfmt samples (bps bytes each) converted to mode. */
void an_png_convert_row(const an_png_layout *lay, an_mode mode, int bps, uint32_t w,
                        const uint8_t *s, uint8_t *d);

/* The IDAT job of an opened whole-file decoder, or NULL when libpng's own
 * transforms decode the image (16-bit, interlaced, low depth, RGB colour key). */
const an_idat_job *an_png_idat_job(const an_png *p);

#endif /* AN_PNG_H */
