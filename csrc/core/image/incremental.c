/*
 * incremental.c - the front end of incremental decoding (an_incr.h).
 *
 * Header first, by the book: bytes are collected until the header is complete
 * (a small resumable walker finds the first JPEG SOS segment or PNG IDAT chunk
 * header), then an_decoder_open() itself runs on the collected bytes.  So the
 * checks, their order, the errors and the output geometry are decode()'s by
 * construction, not by imitation.  Two facts are settled earlier, as soon as
 * the bytes allow: the format (an unknown signature fails once 16 bytes are in)
 * and the size limits (checked when the PNG IHDR or the JPEG frame header is
 * complete), so a hostile header never waits for its body.
 *
 * The body then goes to an incremental codec (jpeg_incr.c; for PNG the IDAT
 * engine of png_idat.c that decode() itself uses, or png_incr.c for the PNGs
 * decode() leaves to libpng) that writes straight into the caller's output (or into a stage buffer when a PNG
 * box reduction or an EXIF rotation follows, as in decode.c).  If the input
 * ends before the header does, the collected bytes are simply the whole input:
 * they are decoded by an_decoder_run(), so even that corner is decode().
 */
#include <string.h>

#include "an_incr.h"
#include "an_png.h"

struct an_incr {
    an_decode_opts opts;
    an_incr_state state;
    an_error fail;          /* why the decoder is AN_INCR_FAILED */
    an_error cerr;          /* the codec's record: warnings of a tolerant decode */
    uint64_t fed;
    int eof;
    /* header phase */
    uint8_t *hdr;           /* owned: every byte fed until the codec starts */
    size_t hdr_len, hdr_cap;
    size_t scan;            /* walker: offset of the next segment / chunk */
    size_t hdr_end;         /* where the header ends (JPEG SOS segment, PNG IDAT header) */
    int walked;             /* the walker found the end of the header */
    size_t retry_at;        /* open_header() needs this many bytes before retrying */
    int early_checked;      /* the size limits were checked on the frame header */
    an_decoder *whole;      /* owned: the input ended inside the header */
    /* from AN_INCR_OUTPUT on */
    an_info info;
    an_shape shape;
    an_geometry geo;
    uint8_t *out;           /* borrowed */
    uint8_t *stage;         /* owned: codec output when a post-step follows */
    an_ijpeg *jpeg;
    an_ipng *png;
    an_idat *idat;
    an_iwebp *webp;
    int codec_done;
    int collect_all;        /* arithmetic-coded JPEG: decoded whole at the end */
};

an_incr_state
an_incr_get_state(const an_incr *d)
{
    return d->state;
}

const an_info *
an_incr_info(const an_incr *d)
{
    return &d->info;
}

void
an_incr_shape(const an_incr *d, an_shape *shape)
{
    *shape = d->shape;
}

uint64_t
an_incr_bytes_fed(const an_incr *d)
{
    return d->fed;
}

uint32_t
an_incr_rows_done(const an_incr *d)
{
    if (d->state == AN_INCR_DONE)
        return d->geo.codec_h;
    if (d->jpeg != NULL)
        return an_ijpeg_rows(d->jpeg);
    if (d->png != NULL)
        return an_ipng_rows(d->png);
    if (d->idat != NULL)
        return an_idat_rows(d->idat);
    if (d->webp != NULL)
        return an_iwebp_rows(d->webp);
    return 0;
}

uint32_t
an_incr_rows_total(const an_incr *d)
{
    return d->state >= AN_INCR_OUTPUT && d->state != AN_INCR_FAILED ? d->geo.codec_h : 0;
}

int
an_incr_has_body(const an_incr *d)
{
    return d->state == AN_INCR_OUTPUT && (d->eof || d->hdr_len > d->hdr_end);
}

const an_error *
an_incr_error(const an_incr *d)
{
    return &d->fail;
}

/* Frees everything but the struct (the state survives for the error). */
static void
release(an_incr *d)
{
    const an_allocator *a = d->opts.alloc;
    an_ijpeg_close(d->jpeg);
    an_ipng_close(d->png);
    an_idat_free(d->idat);
    an_iwebp_close(d->webp);
    an_decoder_close(d->whole);
    an_free(a, d->hdr);
    an_free(a, d->stage);
    d->jpeg = NULL;
    d->png = NULL;
    d->idat = NULL;
    d->webp = NULL;
    d->whole = NULL;
    d->hdr = d->stage = NULL;
    d->out = NULL;
    d->hdr_len = d->hdr_cap = 0;
}

void
an_incr_close(an_incr *d)
{
    if (d == NULL)
        return;
    release(d);
    an_free(d->opts.alloc, d);
}

/* Records err as the decoder's failure and frees its resources. */
static an_status
fail(an_incr *d, an_error *err)
{
    if (err->status == AN_OK)
        an_error_set(err, AN_ERR_CORRUPT, "incremental decoding failed");
    release(d);
    d->fail = *err;
    d->state = AN_INCR_FAILED;
    return err->status;
}

an_status
an_incr_new(an_incr **out, const an_decode_opts *opts, an_error *err)
{
    *out = NULL;
    memset(err, 0, sizeof(*err));
    if (opts->mode < AN_MODE_L || opts->mode > AN_MODE_BGR) {
        an_error_set(err, AN_ERR_INVALID_ARG, "invalid mode %d", (int)opts->mode);
        return err->status;
    }
    if (opts->scale_denom != 0 && opts->scale_denom != 1 && opts->scale_denom != 2 &&
        opts->scale_denom != 4 && opts->scale_denom != 8) {
        an_error_set(err, AN_ERR_INVALID_ARG, "scale must be 1, 1/2, 1/4 or 1/8");
        return err->status;
    }
    an_incr *d = an_calloc(opts->alloc, 1, sizeof(*d));
    if (d == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the incremental decoder");
        return err->status;
    }
    d->opts = *opts;
    d->state = AN_INCR_HEADER;
    *out = d;
    return AN_OK;
}

/* ---- header phase ---------------------------------------------------------- */

static uint16_t
be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t
be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
static const uint8_t jpeg_sig[3] = {0xFF, 0xD8, 0xFF};

/* The limits that only need the frame header, as soon as it is complete: the
 * probe of the bytes so far (header errors are decided by the bytes before
 * them), then the expected format and the size limits. */
static an_status
early_check(an_incr *d, size_t len, an_error *err)
{
    an_info info;
    d->early_checked = 1;
    if (an_probe(d->hdr, len, &info, err) != AN_OK)
        return err->status;
    if (d->opts.expect != AN_FMT_UNKNOWN && info.format != d->opts.expect) {
        an_error_set(err, AN_ERR_WRONG_FORMAT, "expected %s data, got %s",
                     an_format_name(d->opts.expect), an_format_name(info.format));
        return err->status;
    }
    return an_check_dims(&d->opts.limits, info.width, info.height, err);
}

/* 1 when the FF run at p reaches the end of the bytes (the marker is unknown). */
static int
q_is_open(const uint8_t *b, size_t p, size_t len)
{
    while (p < len && b[p] == 0xFF)
        p++;
    return p >= len;
}

/* Walks the JPEG markers from d->scan as an_probe does.  Sets *complete when
 * the header is in: the whole first SOS segment (what jpeg_read_header reads),
 * EOI, or bytes an_probe stops at. */
static an_status
walk_jpeg(an_incr *d, int *complete, an_error *err)
{
    const uint8_t *b = d->hdr;
    const size_t len = d->hdr_len;
    if (d->scan == 0)
        d->scan = 2;
    for (;;) {
        size_t p = d->scan;
        if (p >= len)
            return AN_OK;
        if (b[p] != 0xFF) {
            if (!d->early_checked)
                break; /* no frame yet: an_probe fails here */
            /* After the frame, libjpeg skips garbage up to the next marker (FF
             * then neither 00 nor FF), warning about it. */
            while (p < len) {
                if (b[p] != 0xFF) {
                    p++;
                    continue;
                }
                size_t q = p;
                while (q < len && b[q] == 0xFF)
                    q++;
                if (q >= len)
                    break;
                if (b[q] != 0)
                    break;
                p = q + 1;
            }
            d->scan = p;
            if (p >= len || q_is_open(b, p, len))
                return AN_OK;
        }
        while (p < len && b[p] == 0xFF)
            p++;
        if (p >= len)
            return AN_OK;
        int m = b[p++];
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
            d->scan = p;
            continue;
        }
        if (m == 0xD9)
            break;
        if (len - p < 2)
            return AN_OK;
        size_t seglen = be16(b + p);
        if (seglen < 2)
            break;
        if (len - p < seglen)
            return AN_OK;
        if (m == 0xDA) {
            d->hdr_end = p + seglen;
            break;
        }
        if (!d->early_checked && m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC &&
            early_check(d, p + seglen, err) != AN_OK)
            return err->status;
        d->scan = p + seglen;
    }
    *complete = 1;
    if (d->hdr_end == 0)
        d->hdr_end = len; /* stopped early: an_decoder_open() will judge it */
    return AN_OK;
}

/* Walks the PNG chunks: complete at the first IDAT or IEND chunk header (where
 * png_read_info stops), or at a chunk length an_probe gives up on. */
static an_status
walk_png(an_incr *d, int *complete, an_error *err)
{
    const uint8_t *b = d->hdr;
    const size_t len = d->hdr_len;
    if (d->scan == 0)
        d->scan = 8;
    if (!d->early_checked && len >= 8 + 8 + 13 + 4 && early_check(d, len, err) != AN_OK)
        return err->status;
    for (;;) {
        size_t p = d->scan;
        if (len - p < 8)
            return AN_OK;
        uint32_t clen = be32(b + p);
        if (memcmp(b + p + 4, "IDAT", 4) == 0 || memcmp(b + p + 4, "IEND", 4) == 0 ||
            clen > 0x7FFFFFFFu) {
            d->hdr_end = p + 8;
            break;
        }
        if (len - p - 8 < (size_t)clen + 4)
            return AN_OK;
        d->scan = p + 12 + clen;
    }
    *complete = 1;
    return AN_OK;
}

/* The header is complete (or the input ended): decode()'s own first phase.
 * The walker mirrors an_probe, not every detail of libjpeg/libpng: when the
 * library still finds the header cut short, more bytes are awaited (retrying
 * once the buffer has doubled, so hostile input stays linear). */
static an_status
open_header(an_incr *d, an_error *err)
{
    an_decoder *dec;
    if (an_decoder_open(&dec, d->hdr, d->hdr_len, &d->opts, err) != AN_OK) {
        if (err->status != AN_ERR_TRUNCATED || d->eof)
            return err->status;
        d->retry_at = d->hdr_len * 2;
        memset(err, 0, sizeof(*err));
        return AN_OK;
    }
    d->info = *an_decoder_info(dec);
    an_decoder_shape(dec, &d->shape);
    an_decoder_geometry(dec, &d->geo);
    if (d->eof)
        d->whole = dec; /* the collected bytes are the whole input */
    else
        an_decoder_close(dec);
    /* libjpeg's arithmetic decoder cannot suspend: such files (rare) are
     * collected and decoded at the end, after the same header checks. */
    d->collect_all = d->info.format == AN_FMT_JPEG &&
                     (d->info.jpeg_sof == 0xC9 || d->info.jpeg_sof == 0xCA);
    memset(err, 0, sizeof(*err)); /* its warnings come again from the codec */
    d->state = AN_INCR_OUTPUT;
    return AN_OK;
}

/* WebP, GIF, HEIC, AVIF.  The format and the size limits are settled as soon
 * as the header allows (HEIF: the format only; libheif needs the whole file to
 * find its boxes).  A still WebP then decodes as the bytes arrive
 * (WebPIDecoder); the others are collected here and decoded at the end by
 * decode() itself, since composing a GIF or animated WebP frame, or finding a
 * HEIF's image data, needs the whole file. */
static an_status
other_progress(an_incr *d, an_format f, an_error *err)
{
    if (d->opts.expect != AN_FMT_UNKNOWN && f != d->opts.expect) {
        err->format = f;
        an_error_set(err, AN_ERR_WRONG_FORMAT, "expected %s data, got %s",
                     an_format_name(d->opts.expect), an_format_name(f));
        return err->status;
    }
    if (d->early_checked || f == AN_FMT_HEIC || f == AN_FMT_AVIF)
        return AN_OK;
    an_info info;
    if (an_probe(d->hdr, d->hdr_len, &info, err) != AN_OK) {
        if (err->status != AN_ERR_TRUNCATED)
            return err->status;
        memset(err, 0, sizeof(*err));
        return AN_OK; /* the header is not complete yet */
    }
    d->early_checked = 1;
    if (an_check_dims(&d->opts.limits, info.width, info.height, err) != AN_OK)
        return err->status;
    const uint8_t *b = d->hdr;
    int animated = d->hdr_len >= 21 && memcmp(b + 12, "VP8X", 4) == 0 && (b[20] & 0x02);
    if (f == AN_FMT_WEBP && !animated) {
        d->walked = 1;
        return open_header(d, err);
    }
    return AN_OK;
}

static an_status
header_progress(an_incr *d, an_error *err)
{
    const uint8_t *b = d->hdr;
    size_t n = d->hdr_len;
    int complete = 0;
    if (d->walked)
        return n >= d->retry_at ? open_header(d, err) : AN_OK;
    int maybe_jpeg = memcmp(b, jpeg_sig, n < 3 ? n : 3) == 0;
    int maybe_png = memcmp(b, png_sig, n < 8 ? n : 8) == 0;
    if (!maybe_jpeg && !maybe_png) {
        /* Not JPEG or PNG: with 16 bytes the probe can name what it is. */
        if (n < 16)
            return AN_OK;
        an_format f = an_sniff(b, n);
        if (f == AN_FMT_WEBP || f == AN_FMT_GIF || f == AN_FMT_HEIC || f == AN_FMT_AVIF)
            return other_progress(d, f, err);
        if (an_probe(b, n, &d->info, err) != AN_OK)
            return err->status;
        return AN_OK;
    }
    if (n >= 3 && maybe_jpeg) {
        if (walk_jpeg(d, &complete, err) != AN_OK)
            return err->status;
    } else if (n >= 8 && maybe_png) {
        if (walk_png(d, &complete, err) != AN_OK)
            return err->status;
    }
    if (!complete)
        return AN_OK;
    d->walked = 1;
    return open_header(d, err);
}

static an_status
collect(an_incr *d, const uint8_t *data, size_t len, an_error *err)
{
    const an_allocator *a = d->opts.alloc;
    if (len > d->hdr_cap - d->hdr_len) {
        size_t cap = d->hdr_cap ? d->hdr_cap : 4096;
        while (cap - d->hdr_len < len) {
            if (cap > SIZE_MAX / 2) {
                cap = d->hdr_len + len;
                break;
            }
            cap *= 2;
        }
        uint8_t *nb = an_malloc(a, cap);
        if (nb == NULL) {
            an_error_set(err, an_nomem(a), "cannot allocate %zu bytes for the image header", cap);
            return err->status;
        }
        if (d->hdr_len)
            memcpy(nb, d->hdr, d->hdr_len);
        an_free(a, d->hdr);
        d->hdr = nb;
        d->hdr_cap = cap;
    }
    memcpy(d->hdr + d->hdr_len, data, len);
    d->hdr_len += len;
    return AN_OK;
}

/* ---- body ------------------------------------------------------------------ */

static an_status
codec_feed(an_incr *d, const uint8_t *data, size_t len, an_error *err)
{
    an_status st;
    if (d->jpeg != NULL) {
        st = an_ijpeg_feed(d->jpeg, data, len, &d->codec_done, &d->cerr);
    } else if (d->png != NULL) {
        st = an_ipng_feed(d->png, data, len, &d->codec_done, &d->cerr);
    } else if (d->webp != NULL) {
        st = an_iwebp_feed(d->webp, data, len, &d->codec_done, &d->cerr);
    } else {
        st = an_idat_feed(d->idat, data, len, &d->cerr);
        d->codec_done = an_idat_done(d->idat);
    }
    if (st != AN_OK)
        *err = d->cerr;
    return st;
}

/* PNG: decode()'s own set-up on the collected header picks the engine, so the
 * choice is decode()'s: png_idat.c's for the images it sends there (*skip is
 * then where their IDAT payload starts), libpng's progressive reader else. */
static an_status
open_png(an_incr *d, uint8_t *target, size_t *skip)
{
    an_png *p;
    an_status st = an_png_open(&p, d->hdr, d->hdr_len, &d->opts, &d->info, &d->cerr);
    if (st != AN_OK)
        return st;
    const an_idat_job *job = an_png_idat_job(p);
    if (job != NULL) {
        *skip = job->pos;
        st = an_idat_new(&d->idat, job, target, &d->cerr);
    } else {
        st = an_ipng_open(&d->png, &d->opts, &d->geo, target, &d->cerr);
    }
    an_png_close(p);
    return st;
}

an_status
an_incr_feed(an_incr *d, const uint8_t *data, size_t len, an_error *err)
{
    memset(err, 0, sizeof(*err));
    if (d->state == AN_INCR_FAILED) {
        *err = d->fail;
        return err->status;
    }
    if (d->state == AN_INCR_OUTPUT || d->state == AN_INCR_DONE || d->eof) {
        an_error_set(err, AN_ERR_INVALID_ARG, d->state == AN_INCR_OUTPUT
                                                  ? "the output must be set before feeding more"
                                                  : "the input has already ended");
        return err->status;
    }
    d->fed += len;
    const uint64_t max = d->opts.limits.max_bytes;
    if (max && d->fed > max) {
        err->actual = d->fed;
        err->limit = max;
        err->format = d->info.format;
        an_error_set(err, AN_ERR_LIMIT_BYTES, "input of %llu bytes exceeds max_bytes %llu",
                     (unsigned long long)d->fed, (unsigned long long)max);
        return fail(d, err);
    }
    if (len == 0)
        return AN_OK;
    if (d->state == AN_INCR_HEADER) {
        if (collect(d, data, len, err) != AN_OK || header_progress(d, err) != AN_OK)
            return fail(d, err);
        return AN_OK;
    }
    if (d->collect_all && d->whole == NULL)
        return collect(d, data, len, err) != AN_OK ? fail(d, err) : AN_OK;
    if (d->whole != NULL || d->codec_done)
        return AN_OK; /* after the image: ignored, as decode() ignores it */
    if (codec_feed(d, data, len, err) != AN_OK)
        return fail(d, err);
    return AN_OK;
}

an_status
an_incr_set_output(an_incr *d, uint8_t *out, an_error *err)
{
    const an_allocator *a = d->opts.alloc;
    an_status st;
    memset(err, 0, sizeof(*err));
    if (d->state != AN_INCR_OUTPUT) {
        an_error_set(err, AN_ERR_INVALID_ARG, "the decoder is not waiting for its output");
        return err->status;
    }
    d->out = out;
    d->state = AN_INCR_BODY;
    memset(&d->cerr, 0, sizeof(d->cerr));
    d->cerr.format = d->info.format;
    if (d->whole != NULL) {
        st = an_decoder_run(d->whole, out, &d->cerr);
        an_decoder_close(d->whole);
        d->whole = NULL;
        d->codec_done = 1;
        if (st != AN_OK) {
            *err = d->cerr;
            return fail(d, err);
        }
        return AN_OK;
    }
    if (d->collect_all)
        return AN_OK;
    if (an_stage_alloc(&d->geo, &d->shape, &d->opts, &d->stage, err) != AN_OK)
        return fail(d, err);
    uint8_t *target = d->stage != NULL ? d->stage : out;
    size_t skip = 0;
    if (d->info.format == AN_FMT_JPEG)
        st = an_ijpeg_open(&d->jpeg, &d->opts, &d->geo, target, &d->cerr);
    else if (d->info.format == AN_FMT_WEBP)
        st = an_iwebp_open(&d->webp, &d->opts, &d->info, d->geo.codec_w, d->geo.codec_h, target,
                           &d->cerr);
    else
        st = open_png(d, target, &skip);
    if (st != AN_OK) {
        *err = d->cerr;
        return fail(d, err);
    }
    /* The collected bytes are the codec's first input. */
    st = codec_feed(d, d->hdr + skip, d->hdr_len - skip, err);
    an_free(a, d->hdr);
    d->hdr = NULL;
    d->hdr_len = d->hdr_cap = 0;
    return st != AN_OK ? fail(d, err) : AN_OK;
}

an_status
an_incr_finish(an_incr *d, an_error *err)
{
    an_status st;
    memset(err, 0, sizeof(*err));
    switch (d->state) {
    case AN_INCR_FAILED:
        *err = d->fail;
        return err->status;
    case AN_INCR_DONE:
    case AN_INCR_OUTPUT:
        an_error_set(err, AN_ERR_INVALID_ARG, d->state == AN_INCR_DONE
                                                  ? "the decoder has already finished"
                                                  : "the output must be set before finishing");
        return err->status;
    case AN_INCR_HEADER:
        /* What arrived is all there is: decode it as a whole. */
        d->eof = 1;
        if (open_header(d, err) != AN_OK)
            return fail(d, err);
        return AN_OK;
    case AN_INCR_BODY:
        break;
    }
    d->eof = 1;
    if (d->collect_all && !d->codec_done) {
        an_decoder *dec;
        if (an_decoder_open(&dec, d->hdr, d->hdr_len, &d->opts, err) != AN_OK)
            return fail(d, err);
        st = an_decoder_run(dec, d->out, &d->cerr);
        an_decoder_close(dec);
        if (st != AN_OK) {
            *err = d->cerr;
            return fail(d, err);
        }
        d->codec_done = 1;
        an_free(d->opts.alloc, d->hdr);
        d->hdr = NULL;
        d->hdr_len = d->hdr_cap = 0;
    }
    if (!d->codec_done) {
        st = d->jpeg != NULL   ? an_ijpeg_finish(d->jpeg, &d->cerr)
             : d->png != NULL  ? an_ipng_finish(d->png, &d->cerr)
             : d->webp != NULL ? an_iwebp_finish(d->webp, &d->cerr)
                               : an_idat_end(d->idat, &d->cerr);
        if (st != AN_OK) {
            *err = d->cerr;
            return fail(d, err);
        }
    }
    if (an_post_steps(&d->geo, &d->shape, d->opts.alloc, d->stage, d->out, err) != AN_OK)
        return fail(d, err);
    *err = d->cerr;
    err->status = AN_OK;
    err->format = d->info.format;
    const an_allocator *a = d->opts.alloc;
    an_ijpeg_close(d->jpeg);
    an_ipng_close(d->png);
    an_idat_free(d->idat);
    an_iwebp_close(d->webp);
    an_free(a, d->stage);
    d->jpeg = NULL;
    d->png = NULL;
    d->idat = NULL;
    d->webp = NULL;
    d->stage = NULL;
    d->state = AN_INCR_DONE;
    return AN_OK;
}
