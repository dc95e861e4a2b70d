/*
 * decode.c - the decoder front end: sniff, limits, scale choice, dispatch to
 * the codec, then the post-steps neither library does (PNG box scaling, EXIF
 * orientation).
 *
 * Limits are checked twice on purpose: first on the sizes the header claims
 * (an_probe, before any library touches the data), then in the codec on the
 * sizes libjpeg/libpng parsed.  Either way the check happens before the output
 * exists, so a 1 KB file claiming 100000x100000 pixels costs microseconds.
 */
#include <string.h>

#include "an_incr.h"
#include "an_internal.h"

struct an_decoder {
    an_decode_opts opts;
    an_info info;
    an_jpeg *jpeg;
    an_png *png;
    an_webp *webp;
    an_gif *gif;
    an_heif *heif;
    int denom;
    uint32_t codec_w, codec_h;  /* what the codec writes */
    an_shape shape;             /* what the caller gets */
    int orientation;            /* applied after decoding; 1 = none */
    int png_scale;              /* PNG: box-reduce by denom after decoding */
    an_error header_warning;    /* problems tolerated while parsing the header */
};

void
an_decode_opts_init(an_decode_opts *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->mode = AN_MODE_RGB;
    opts->scale_denom = 1;
    opts->orient = 1;
    opts->strict = 1;
    opts->limits = an_default_limits();
}

const an_info *
an_decoder_info(const an_decoder *dec)
{
    return &dec->info;
}

void
an_decoder_shape(const an_decoder *dec, an_shape *shape)
{
    *shape = dec->shape;
}

const an_allocator *
an_decoder_allocator(const an_decoder *dec)
{
    return dec->opts.alloc;
}

void
an_decoder_geometry(const an_decoder *dec, an_geometry *g)
{
    g->denom = dec->denom;
    g->codec_w = dec->codec_w;
    g->codec_h = dec->codec_h;
    g->png_scale = dec->png_scale;
    g->orientation = dec->orientation;
}

void
an_decoder_close(an_decoder *dec)
{
    if (dec == NULL)
        return;
    an_jpeg_close(dec->jpeg);
    an_png_close(dec->png);
    an_webp_close(dec->webp);
    an_gif_close(dec->gif);
    an_heif_close(dec->heif);
    an_free(dec->opts.alloc, dec);
}

/* Largest denominator in {8,4,2,1} whose output still covers max_w x max_h. */
static int
choose_denom(uint32_t w, uint32_t h, uint32_t max_w, uint32_t max_h)
{
    for (int d = 8; d > 1; d /= 2)
        if (an_scaled_dim(w, d) >= max_w && an_scaled_dim(h, d) >= max_h)
            return d;
    return 1;
}

static an_status
check_opts(const an_decode_opts *o, an_error *err)
{
    if (o->mode < AN_MODE_L || o->mode > AN_MODE_BGR) {
        an_error_set(err, AN_ERR_INVALID_ARG, "invalid mode %d", (int)o->mode);
        return err->status;
    }
    if (o->scale_denom != 0 && o->scale_denom != 1 && o->scale_denom != 2 &&
        o->scale_denom != 4 && o->scale_denom != 8) {
        an_error_set(err, AN_ERR_INVALID_ARG, "scale must be 1, 1/2, 1/4 or 1/8");
        return err->status;
    }
    return AN_OK;
}

an_status
an_decoder_open(an_decoder **out, const uint8_t *data, size_t len, const an_decode_opts *opts,
                an_error *err)
{
    *out = NULL;
    memset(err, 0, sizeof(*err));
    if (check_opts(opts, err) != AN_OK)
        return err->status;
    if (opts->limits.max_bytes && len > opts->limits.max_bytes) {
        err->actual = len;
        err->limit = opts->limits.max_bytes;
        an_error_set(err, AN_ERR_LIMIT_BYTES, "input of %zu bytes exceeds max_bytes %llu", len,
                     (unsigned long long)opts->limits.max_bytes);
        return err->status;
    }
    an_info info;
    if (an_probe(data, len, &info, err) != AN_OK)
        return err->status;
    if (err->warned && opts->strict && opts->pedantic) {
        /* A header problem that loses no pixel (junk between JPEG markers, a
         * malformed EXIF block): refused only by the pedantic policy. */
        char detail[sizeof(err->detail)];
        memcpy(detail, err->detail, sizeof(detail));
        err->warned = 0;
        an_error_set(err, AN_ERR_CORRUPT, "%s", detail);
        return err->status;
    }
    if (opts->expect != AN_FMT_UNKNOWN && info.format != opts->expect) {
        an_error_set(err, AN_ERR_WRONG_FORMAT, "expected %s data, got %s",
                     an_format_name(opts->expect), an_format_name(info.format));
        return err->status;
    }
    if (an_check_dims(&opts->limits, info.width, info.height, err) != AN_OK)
        return err->status;
    int heif = info.format == AN_FMT_HEIC || info.format == AN_FMT_AVIF;
    if (opts->depth16 && info.format != AN_FMT_PNG && !heif) {
        an_error_set(err, AN_ERR_INVALID_ARG,
                     "dtype uint16 is only available for PNG, HEIC and AVIF");
        return err->status;
    }
    if (opts->frame > 0 && info.format != AN_FMT_GIF && info.format != AN_FMT_WEBP && !heif) {
        err->actual = opts->frame;
        err->limit = 1;
        an_error_set(err, AN_ERR_FRAME_RANGE, "frame %u requested, %s images have one frame",
                     opts->frame, an_format_name(info.format));
        return err->status;
    }

    an_decoder *dec = an_calloc(opts->alloc, 1, sizeof(*dec));
    if (dec == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the decoder");
        return err->status;
    }
    dec->opts = *opts;
    dec->info = info;
    dec->orientation = opts->orient ? info.orientation : 1;
    int swap = dec->orientation >= 5;
    dec->denom = opts->scale_denom;
    if (dec->denom == 0)
        dec->denom = (opts->max_w || opts->max_h)
                         ? choose_denom(info.width, info.height, swap ? opts->max_h : opts->max_w,
                                        swap ? opts->max_w : opts->max_h)
                         : 1;

    an_status st;
    if (info.format == AN_FMT_JPEG) {
        st = an_jpeg_open(&dec->jpeg, data, len, opts, &info, dec->denom, err);
        if (st == AN_OK)
            an_jpeg_dims(dec->jpeg, &dec->codec_w, &dec->codec_h);
    } else {
        dec->codec_w = info.width;
        dec->codec_h = info.height;
        dec->png_scale = dec->denom > 1; /* box reduction after decoding */
        if (info.format == AN_FMT_PNG) {
            st = an_png_open(&dec->png, data, len, opts, &info, err);
        } else if (info.format == AN_FMT_WEBP) {
            st = an_webp_open(&dec->webp, data, len, opts, &info, err);
        } else if (info.format == AN_FMT_GIF) {
            st = an_gif_open(&dec->gif, data, len, opts, &info, err);
        } else {
            /* libheif applies irot/imir itself; orient=0 keeps the stored size. */
            dec->orientation = 1;
            swap = 0;
            st = an_heif_open(&dec->heif, data, len, opts, &info, err);
            if (st == AN_OK)
                an_heif_dims(dec->heif, &dec->codec_w, &dec->codec_h);
        }
    }
    if (st != AN_OK) {
        an_decoder_close(dec);
        return st;
    }
    uint32_t w = dec->codec_w, h = dec->codec_h;
    if (dec->png_scale) {
        w = an_scaled_dim(w, dec->denom);
        h = an_scaled_dim(h, dec->denom);
    }
    dec->shape.width = swap ? h : w;
    dec->shape.height = swap ? w : h;
    dec->shape.channels = an_mode_channels(opts->mode);
    dec->shape.bytes_per_sample = opts->depth16 ? 2 : 1;
    if (!an_mul4_size(w, h, (size_t)dec->shape.channels, (size_t)dec->shape.bytes_per_sample,
                      &dec->shape.nbytes)) {
        an_error_set(err, AN_ERR_LIMIT_PIXELS, "output size overflows");
        an_decoder_close(dec);
        return err->status;
    }
    if (err->warned)
        dec->header_warning = *err;
    *out = dec;
    return AN_OK;
}

an_status
an_stage_alloc(const an_geometry *g, const an_shape *shape, const an_decode_opts *opts,
               uint8_t **stage, an_error *err)
{
    size_t n;
    *stage = NULL;
    if (!g->png_scale && g->orientation == 1)
        return AN_OK;
    if (!an_mul4_size(g->codec_w, g->codec_h, (size_t)shape->channels,
                      (size_t)shape->bytes_per_sample, &n)) {
        an_error_set(err, AN_ERR_LIMIT_PIXELS, "image size overflows");
        return err->status;
    }
    *stage = opts->strict ? an_malloc(opts->alloc, n) : an_calloc(opts->alloc, 1, n);
    if (*stage == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate %zu bytes", n);
        return err->status;
    }
    return AN_OK;
}

an_status
an_post_steps(const an_geometry *g, const an_shape *shape, const an_allocator *a,
              const uint8_t *stage, uint8_t *out, an_error *err)
{
    const size_t pix = (size_t)shape->channels * (size_t)shape->bytes_per_sample;
    const uint8_t *src = stage;
    uint8_t *scaled = NULL;
    uint32_t w = g->codec_w, h = g->codec_h;
    if (stage == NULL)
        return AN_OK;
    if (g->png_scale) {
        uint32_t sw = an_scaled_dim(w, g->denom), sh = an_scaled_dim(h, g->denom);
        uint8_t *dst = out;
        if (g->orientation != 1) {
            scaled = an_malloc(a, (size_t)sw * sh * pix);
            if (scaled == NULL) {
                an_error_set(err, an_nomem(a), "cannot allocate the scaled image");
                return err->status;
            }
            dst = scaled;
        }
        an_box_reduce(src, w, h, shape->channels, shape->bytes_per_sample, g->denom, dst);
        src = dst;
        w = sw;
        h = sh;
    }
    if (g->orientation != 1)
        an_orient(src, w, h, pix, g->orientation, out);
    an_free(a, scaled);
    return AN_OK;
}

an_status
an_decoder_run(an_decoder *dec, uint8_t *out, an_error *err)
{
    an_geometry g;
    uint8_t *stage;
    an_status st;

    /* Start from the header phase's record so its warnings are not lost. */
    *err = dec->header_warning;
    err->status = AN_OK;
    err->format = dec->info.format;
    an_decoder_geometry(dec, &g);
    /* The codec writes straight into out unless a post-step follows. */
    if (an_stage_alloc(&g, &dec->shape, &dec->opts, &stage, err) != AN_OK)
        return err->status;
    uint8_t *target = stage != NULL ? stage : out;
    if (dec->jpeg)
        st = an_jpeg_run(dec->jpeg, target, err);
    else if (dec->png)
        st = an_png_run(dec->png, target, err);
    else if (dec->webp)
        st = an_webp_run(dec->webp, target, err);
    else if (dec->gif)
        st = an_gif_run(dec->gif, target, err);
    else
        st = an_heif_run(dec->heif, target, err);
    if (st == AN_OK)
        st = an_post_steps(&g, &dec->shape, dec->opts.alloc, stage, out, err);
    an_free(dec->opts.alloc, stage);
    return st;
}

an_status
an_decode(const uint8_t *data, size_t len, const an_decode_opts *opts, uint8_t **out,
          an_shape *shape, an_error *err)
{
    an_decoder *dec;
    *out = NULL;
    if (an_decoder_open(&dec, data, len, opts, err) != AN_OK)
        return err->status;
    an_decoder_shape(dec, shape);
    uint8_t *buf = an_malloc(opts->alloc, shape->nbytes);
    if (buf == NULL) {
        an_decoder_close(dec);
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate %zu bytes", shape->nbytes);
        return err->status;
    }
    if (!opts->strict)
        memset(buf, 0, shape->nbytes);
    an_status st = an_decoder_run(dec, buf, err);
    an_decoder_close(dec);
    if (st != AN_OK) {
        an_free(opts->alloc, buf);
        return st;
    }
    *out = buf;
    return AN_OK;
}

int
an_format_available(an_format fmt)
{
    switch (fmt) {
    case AN_FMT_JPEG:
    case AN_FMT_PNG:
    case AN_FMT_WEBP:
    case AN_FMT_GIF:
        return 1;
    case AN_FMT_HEIC:
    case AN_FMT_AVIF:
        return an_heif_available(fmt);
    default:
        return 0;
    }
}
