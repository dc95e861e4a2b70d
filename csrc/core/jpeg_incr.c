/*
 * jpeg_incr.c - JPEG decoding as the bytes arrive, over libjpeg's suspending
 * data source.
 *
 * fill_input_buffer returns FALSE while the input has not ended: libjpeg then
 * backs up to the start of the unit it was reading (a marker segment or an
 * MCU) and returns JPEG_SUSPENDED / FALSE / 0 rows, and the same call is
 * repeated on the next feed.  What it had not consumed (from that unit's start)
 * is the only input kept between feeds ("tail").  A new chunk is read in place
 * whenever the tail is empty; otherwise the tail is extended with just enough
 * of the chunk for libjpeg to get past it, and reading switches back to the
 * chunk itself.  At the end of input the source behaves exactly as jpeg.c's
 * (a warning and a fake EOI), so truncated and tolerant decodes match decode().
 *
 * Error handling mirrors jpeg.c: state that must survive libjpeg's longjmp is
 * in struct an_ijpeg, an_ijpeg_close() is the one cleanup path, nothing is ever
 * printed, warnings are errors in strict mode, and the scan limit is enforced
 * by the progress monitor.
 */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "an_incr.h"
#include "an_internal.h"

typedef enum { PH_HEADER, PH_START, PH_ROWS, PH_FINISH, PH_DONE } phase;

struct an_ijpeg {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_source_mgr src;
    struct jpeg_progress_mgr progress;
    jmp_buf jmp;
    const an_allocator *alloc;
    an_error *err;          /* the front end's record, for the decoder's life */
    int created;
    int strict;
    int truncated;
    int eof;                /* no more input: the source fakes EOI like jpeg.c */
    phase ph;
    uint32_t max_scans;
    an_limits limits;
    an_mode mode;
    an_pixfmt pixfmt;
    int direct;
    int denom;
    uint32_t out_w, out_h;  /* expected from the header phase */
    uint8_t *target;        /* borrowed: out_h rows of out_w pixels */
    uint8_t *rowbuf;        /* owned: conversion rows */
    uint8_t *tail;          /* owned: unconsumed input kept between feeds */
    size_t tail_len, tail_cap;
    size_t skip;            /* bytes libjpeg skipped past the end of the input */
};

static const JOCTET fake_eoi[2] = {0xFF, JPEG_EOI};

#define ROWS_PER_CALL 16
#define MIN_EXTEND 4096

static an_ijpeg *
from_cinfo(j_common_ptr cinfo)
{
    return (an_ijpeg *)(void *)((char *)cinfo - offsetof(an_ijpeg, cinfo));
}

/* ---- error manager (as jpeg.c) ---- */

static void
jpeg_fail(an_ijpeg *j, an_status status)
{
    char buf[JMSG_LENGTH_MAX];
    (*j->cinfo.err->format_message)((j_common_ptr)&j->cinfo, buf);
    if (j->err->status == AN_OK)
        an_error_set(j->err, status, "%s", buf);
    longjmp(j->jmp, 1);
}

static void
on_error_exit(j_common_ptr cinfo)
{
    an_ijpeg *j = from_cinfo(cinfo);
    an_status st;
    switch (cinfo->err->msg_code) {
    case JERR_BAD_PRECISION:
    case JERR_NOT_COMPILED:
    case JERR_SOF_UNSUPPORTED:
        st = AN_ERR_UNSUPPORTED;
        break;
    case JERR_OUT_OF_MEMORY:
    case JERR_NO_BACKING_STORE:
        st = AN_ERR_NOMEM;
        break;
    default:
        st = j->truncated ? AN_ERR_TRUNCATED : AN_ERR_CORRUPT;
        break;
    }
    jpeg_fail(j, st);
}

static void
on_output_message(j_common_ptr cinfo)
{
    (void)cinfo;
}

static void
on_emit_message(j_common_ptr cinfo, int level)
{
    if (level >= 0)
        return;
    an_ijpeg *j = from_cinfo(cinfo);
    int code = cinfo->err->msg_code;
    if (code == JWRN_JFIF_MAJOR || code == JWRN_BOGUS_ICC || code == JWRN_ADOBE_XFORM)
        return;
    cinfo->err->num_warnings++;
    an_status st = (code == JWRN_JPEG_EOF || j->truncated) ? AN_ERR_TRUNCATED : AN_ERR_CORRUPT;
    if (j->strict)
        jpeg_fail(j, st);
    if (!j->err->warned) {
        char buf[JMSG_LENGTH_MAX];
        (*cinfo->err->format_message)(cinfo, buf);
        j->err->warned = 1;
        snprintf(j->err->detail, sizeof(j->err->detail), "%s", buf);
    }
}

static void
on_progress(j_common_ptr cinfo)
{
    an_ijpeg *j = from_cinfo(cinfo);
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (j->max_scans && d->input_scan_number > (int)j->max_scans) {
        j->err->actual = (uint64_t)d->input_scan_number;
        j->err->limit = j->max_scans;
        an_error_set(j->err, AN_ERR_LIMIT_SCANS, "progressive JPEG has more than %u scans",
                     j->max_scans);
        longjmp(j->jmp, 1);
    }
}

/* ---- the suspending source ---- */

static void
src_init(j_decompress_ptr cinfo)
{
    (void)cinfo;
}

static boolean
src_fill(j_decompress_ptr cinfo)
{
    an_ijpeg *j = from_cinfo((j_common_ptr)cinfo);
    if (!j->eof)
        return FALSE; /* suspend: libjpeg backs up and is called again later */
    j->truncated = 1;
    WARNMS(cinfo, JWRN_JPEG_EOF);
    cinfo->src->next_input_byte = fake_eoi;
    cinfo->src->bytes_in_buffer = 2;
    return TRUE;
}

static void
src_skip(j_decompress_ptr cinfo, long n)
{
    an_ijpeg *j = from_cinfo((j_common_ptr)cinfo);
    struct jpeg_source_mgr *src = cinfo->src;
    if (n <= 0)
        return;
    if (!j->eof && (size_t)n > src->bytes_in_buffer) {
        /* Skipping is committed by libjpeg: drop the rest as it arrives. */
        j->skip = (size_t)n - src->bytes_in_buffer;
        src->next_input_byte += src->bytes_in_buffer;
        src->bytes_in_buffer = 0;
        return;
    }
    while ((size_t)n > src->bytes_in_buffer) {
        n -= (long)src->bytes_in_buffer;
        (void)src_fill(cinfo);
    }
    src->next_input_byte += n;
    src->bytes_in_buffer -= (size_t)n;
}

static void
src_term(j_decompress_ptr cinfo)
{
    (void)cinfo;
}

/* ---- public ---- */

void
an_ijpeg_close(an_ijpeg *j)
{
    if (j == NULL)
        return;
    if (j->created)
        jpeg_destroy_decompress(&j->cinfo);
    an_free(j->alloc, j->rowbuf);
    an_free(j->alloc, j->tail);
    an_free(j->alloc, j);
}

uint32_t
an_ijpeg_rows(const an_ijpeg *j)
{
    return j->ph >= PH_ROWS ? (uint32_t)j->cinfo.output_scanline : 0;
}

an_status
an_ijpeg_open(an_ijpeg **out, const an_decode_opts *opts, const an_geometry *g, uint8_t *target,
              an_error *err)
{
    *out = NULL;
    an_ijpeg *j = an_calloc(opts->alloc, 1, sizeof(*j));
    if (j == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the JPEG decoder");
        return err->status;
    }
    j->alloc = opts->alloc;
    j->err = err;
    j->strict = opts->strict;
    j->mode = opts->mode;
    j->limits = opts->limits;
    j->max_scans = opts->limits.max_jpeg_scans;
    j->denom = g->denom;
    j->out_w = g->codec_w;
    j->out_h = g->codec_h;
    j->target = target;
    j->ph = PH_HEADER;

    j->cinfo.err = jpeg_std_error(&j->jerr);
    j->jerr.error_exit = on_error_exit;
    j->jerr.output_message = on_output_message;
    j->jerr.emit_message = on_emit_message;
    if (setjmp(j->jmp)) {
        an_ijpeg_close(j);
        return err->status;
    }
    jpeg_create_decompress(&j->cinfo);
    j->created = 1;
    if (opts->limits.max_pixels)
        j->cinfo.mem->max_memory_to_use = (long)(opts->limits.max_pixels * 8u + (64u << 20));
    j->src.init_source = src_init;
    j->src.fill_input_buffer = src_fill;
    j->src.skip_input_data = src_skip;
    j->src.resync_to_restart = jpeg_resync_to_restart;
    j->src.term_source = src_term;
    j->cinfo.src = &j->src;
    j->progress.progress_monitor = on_progress;
    j->cinfo.progress = &j->progress;
    *out = j;
    return AN_OK;
}

/* jpeg.c's choice of libjpeg output colour space for the mode. */
static int
choose_color(an_ijpeg *j)
{
    struct jpeg_decompress_struct *c = &j->cinfo;
    if (c->jpeg_color_space == JCS_CMYK || c->jpeg_color_space == JCS_YCCK) {
        c->out_color_space = JCS_CMYK;
        j->pixfmt = c->saw_Adobe_marker ? AN_PIX_CMYK_INV : AN_PIX_CMYK;
        return 0;
    }
    if (c->num_components != 1 && c->num_components != 3) {
        an_error_set(j->err, AN_ERR_UNSUPPORTED, "JPEG colour space %d",
                     (int)c->jpeg_color_space);
        longjmp(j->jmp, 1);
    }
    switch (j->mode) {
    case AN_MODE_L: c->out_color_space = JCS_GRAYSCALE; return 1;
    case AN_MODE_LA: c->out_color_space = JCS_GRAYSCALE; j->pixfmt = AN_PIX_GRAY; return 0;
    case AN_MODE_RGB: c->out_color_space = JCS_EXT_RGB; return 1;
    case AN_MODE_BGR: c->out_color_space = JCS_EXT_BGR; return 1;
    case AN_MODE_RGBA: c->out_color_space = JCS_EXT_RGBA; return 1;
    }
    return 1;
}

static void
geometry_error(an_ijpeg *j)
{
    an_error_set(j->err, AN_ERR_CORRUPT, "libjpeg changed the output geometry");
    longjmp(j->jmp, 1);
}

/* Runs libjpeg as far as the buffered input allows.  Called under setjmp. */
static void
advance(an_ijpeg *j)
{
    struct jpeg_decompress_struct *c = &j->cinfo;
    const int oc = an_mode_channels(j->mode);
    const size_t stride = (size_t)j->out_w * (size_t)oc;
    if (j->ph == PH_HEADER) {
        int r = jpeg_read_header(c, TRUE);
        if (r == JPEG_SUSPENDED)
            return;
        if (r != JPEG_HEADER_OK) {
            an_error_set(j->err, AN_ERR_HEADER, "JPEG has no image (tables only)");
            longjmp(j->jmp, 1);
        }
        if (an_check_dims(&j->limits, c->image_width, c->image_height, j->err) != AN_OK)
            longjmp(j->jmp, 1);
        j->direct = choose_color(j);
        c->scale_num = 1;
        c->scale_denom = (unsigned)j->denom;
        c->dct_method = JDCT_ISLOW;
        c->do_fancy_upsampling = TRUE;
        jpeg_calc_output_dimensions(c);
        if (c->output_width != j->out_w || c->output_height != j->out_h)
            geometry_error(j);
        j->ph = PH_START;
    }
    if (j->ph == PH_START) {
        if (!jpeg_start_decompress(c))
            return;
        if (c->output_width != j->out_w || c->output_height != j->out_h ||
            (j->direct && c->output_components != oc))
            geometry_error(j);
        if (!j->direct) {
            size_t raw = (size_t)j->out_w * (size_t)c->output_components;
            j->rowbuf = an_malloc(j->alloc, raw * ROWS_PER_CALL);
            if (j->rowbuf == NULL) {
                an_error_set(j->err, an_nomem(j->alloc), "cannot allocate JPEG row buffer");
                longjmp(j->jmp, 1);
            }
        }
        j->ph = PH_ROWS;
    }
    if (j->ph == PH_ROWS) {
        JSAMPROW rows[ROWS_PER_CALL];
        const size_t rawstride = (size_t)j->out_w * (size_t)c->output_components;
        while (c->output_scanline < c->output_height) {
            JDIMENSION y = c->output_scanline;
            JDIMENSION n = c->output_height - y;
            if (n > ROWS_PER_CALL)
                n = ROWS_PER_CALL;
            for (JDIMENSION i = 0; i < n; i++)
                rows[i] = j->direct ? j->target + (size_t)(y + i) * stride
                                    : j->rowbuf + i * rawstride;
            JDIMENSION got = jpeg_read_scanlines(c, rows, n);
            if (got == 0) {
                if (!j->eof)
                    return; /* suspended */
                an_error_set(j->err, AN_ERR_CORRUPT, "libjpeg returned no scanlines");
                longjmp(j->jmp, 1);
            }
            if (!j->direct)
                for (JDIMENSION i = 0; i < got; i++)
                    an_convert_row8(j->pixfmt, j->mode, j->rowbuf + i * rawstride,
                                    j->target + (size_t)(y + i) * stride, j->out_w);
        }
        j->ph = PH_FINISH;
    }
    if (j->ph == PH_FINISH) {
        if (j->strict) {
            if (!jpeg_finish_decompress(c)) /* to EOI: trailing damage is an error */
                return;
        } else {
            jpeg_abort_decompress(c);
        }
        j->ph = PH_DONE;
    }
}

/* Keeps src's unconsumed bytes as the tail (they may live in the tail itself). */
static int
keep_tail(an_ijpeg *j)
{
    const uint8_t *p = j->src.next_input_byte;
    size_t n = j->src.bytes_in_buffer;
    if (j->ph == PH_DONE)
        n = 0;
    if (n > j->tail_cap) {
        uint8_t *nb = an_malloc(j->alloc, n);
        if (nb == NULL)
            return 0;
        memcpy(nb, p, n);
        an_free(j->alloc, j->tail);
        j->tail = nb;
        j->tail_cap = n;
    } else if (n > 0) {
        memmove(j->tail, p, n);
    }
    j->tail_len = n;
    j->src.next_input_byte = j->tail;
    j->src.bytes_in_buffer = n;
    return 1;
}

/* Appends data to the tail. */
static int
extend_tail(an_ijpeg *j, const uint8_t *data, size_t n)
{
    if (n > j->tail_cap - j->tail_len) {
        size_t cap = j->tail_len + n;
        cap = cap < SIZE_MAX / 2 ? cap * 2 : cap;
        uint8_t *nb = an_malloc(j->alloc, cap);
        if (nb == NULL)
            return 0;
        memcpy(nb, j->tail, j->tail_len);
        an_free(j->alloc, j->tail);
        j->tail = nb;
        j->tail_cap = cap;
    }
    memcpy(j->tail + j->tail_len, data, n);
    j->tail_len += n;
    return 1;
}

static void
nomem_tail(an_ijpeg *j)
{
    an_error_set(j->err, an_nomem(j->alloc), "cannot allocate the JPEG input buffer");
    longjmp(j->jmp, 1);
}

an_status
an_ijpeg_feed(an_ijpeg *j, const uint8_t *data, size_t len, int *done, an_error *err)
{
    (void)err; /* j->err is the record for the decoder's life */
    volatile size_t pos = 0;
    if (setjmp(j->jmp))
        return j->err->status != AN_OK ? j->err->status : AN_ERR_CORRUPT;
    while (j->ph != PH_DONE) {
        if (j->skip > 0) {
            size_t drop = j->skip < len - pos ? j->skip : len - pos;
            pos += drop;
            j->skip -= drop;
        }
        if (pos == len)
            break;
        if (j->tail_len == 0) {
            /* Read the chunk in place; keep what libjpeg could not use yet. */
            j->src.next_input_byte = data + pos;
            j->src.bytes_in_buffer = len - pos;
            pos = len;
            advance(j);
            if (!keep_tail(j))
                nomem_tail(j);
            break;
        }
        /* Extend the tail until libjpeg gets past its old end. */
        size_t old = j->tail_len;
        size_t take = old > MIN_EXTEND ? old : MIN_EXTEND;
        if (take > len - pos)
            take = len - pos;
        if (!extend_tail(j, data + pos, take))
            nomem_tail(j);
        pos += take;
        j->src.next_input_byte = j->tail;
        j->src.bytes_in_buffer = j->tail_len;
        advance(j);
        size_t used = j->tail_len - j->src.bytes_in_buffer;
        if (j->ph != PH_DONE && used >= old && j->skip == 0) {
            /* The rest is in the chunk: continue there, without copying. */
            pos -= j->src.bytes_in_buffer;
            j->tail_len = 0;
        } else if (!keep_tail(j)) {
            nomem_tail(j);
        }
    }
    if (j->ph == PH_DONE) {
        j->tail_len = 0;
        *done = 1;
    }
    return AN_OK;
}

an_status
an_ijpeg_finish(an_ijpeg *j, an_error *err)
{
    (void)err;
    if (setjmp(j->jmp))
        return j->err->status != AN_OK ? j->err->status : AN_ERR_CORRUPT;
    j->eof = 1;
    j->src.next_input_byte = j->tail;
    j->src.bytes_in_buffer = j->tail_len;
    if (j->skip > 0) {
        /* libjpeg skipped past the end: what jpeg.c's source does then. */
        long n = (long)j->skip;
        j->skip = 0;
        j->src.bytes_in_buffer = 0;
        src_skip(&j->cinfo, n);
    }
    advance(j);
    if (j->ph != PH_DONE) {
        an_error_set(j->err, AN_ERR_CORRUPT, "JPEG decoding did not complete");
        return j->err->status;
    }
    return AN_OK;
}
