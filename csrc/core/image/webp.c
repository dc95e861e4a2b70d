/*
 * webp.c - WebP decoding through libwebp: lossy (VP8), lossless (VP8L), alpha
 * (ALPH), and animations (ANMF frames, composed by WebPAnimDecoder).
 *
 * The probe needs no library state: WebPGetFeatures reads the RIFF/VP8X
 * header, and a walk over the RIFF chunks (sizes only, no payload parsing)
 * counts the animation frames and finds the EXIF orientation.  So the size,
 * frame and frame= checks all run before libwebp allocates anything.
 *
 * Still images decode straight into the caller's buffer (libwebp's "external
 * memory" output) when the mode is one libwebp writes (RGB, RGBA, BGR); grey
 * modes go through one RGB(A) buffer and pixel.c's Pillow-exact conversion.
 * libwebp allocates its own working memory with malloc; an estimate of it
 * (the whole ARGB image for lossless, the canvases of an animation) is charged
 * to the allocator's budget with an_reserve() for the duration of the call.
 * Tolerant decoding (strict=0) uses the incremental decoder so a truncated
 * file yields its decoded rows.  libwebp prints nothing.
 */
#include <stdio.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

#include "an_incr.h"
#include "an_internal.h"

/* As AN_GIF_WORK_FACTOR: reaching a frame may compose at most this many times
 * max_pixels canvas pixels. */
#define AN_ANIM_WORK_FACTOR 8u

struct an_webp {
    const uint8_t *data;
    size_t len;
    an_decode_opts opts;
    an_info info;
    int lossless;
    int animated;       /* VP8X animation flag: only WebPAnimDecoder reads it */
    uint8_t *tmp;       /* grey modes: the RGB(A) image before conversion */
    size_t reserved;    /* bytes charged with an_reserve() */
};

static uint32_t
le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Walks the RIFF chunks after the 12-byte header: counts ANMF frames and reads
 * the EXIF orientation.  Stops quietly at the end of the data or a chunk that
 * runs past it (the decoder reports the damage).  Sets *lossless for a simple
 * VP8L file or a VP8X file whose image chunk is VP8L. */
static void
walk_chunks(const uint8_t *d, size_t len, uint32_t *frames, int *orientation, int *lossless)
{
    size_t end = len, pos = 12;
    uint64_t riff_end = (uint64_t)le32(d + 4) + 8;
    if (riff_end < end)
        end = (size_t)riff_end;
    while (pos <= end && end - pos >= 8) {
        const uint8_t *c = d + pos;
        size_t size = le32(c + 4), avail = end - pos - 8;
        if (memcmp(c, "ANMF", 4) == 0) {
            (*frames)++;
        } else if (memcmp(c, "EXIF", 4) == 0) {
            const uint8_t *t = c + 8;
            size_t n = size < avail ? size : avail;
            if (n >= 6 && memcmp(t, "Exif\0\0", 6) == 0) {
                t += 6;
                n -= 6;
            }
            *orientation = an_exif_orientation(t, n);
        } else if (memcmp(c, "VP8L", 4) == 0) {
            *lossless = 1;
        }
        size_t padded = size + (size & 1);
        if (padded > avail)
            break;
        pos += 8 + padded;
    }
}

static an_status
map_status(VP8StatusCode s, const char *what, an_error *err)
{
    switch (s) {
    case VP8_STATUS_OK:
        return AN_OK;
    case VP8_STATUS_NOT_ENOUGH_DATA:
    case VP8_STATUS_SUSPENDED:
        an_error_set(err, AN_ERR_TRUNCATED, "WebP %s is truncated", what);
        break;
    case VP8_STATUS_OUT_OF_MEMORY:
        an_error_set(err, AN_ERR_NOMEM, "libwebp ran out of memory");
        break;
    case VP8_STATUS_UNSUPPORTED_FEATURE:
        an_error_set(err, AN_ERR_UNSUPPORTED, "unsupported WebP feature");
        break;
    case VP8_STATUS_INVALID_PARAM:
    case VP8_STATUS_BITSTREAM_ERROR:
    case VP8_STATUS_USER_ABORT:
    default:
        an_error_set(err, what[0] == 'h' ? AN_ERR_HEADER : AN_ERR_CORRUPT,
                     "invalid WebP %s (libwebp status %d)", what, (int)s);
        break;
    }
    return err->status;
}

an_status
an_webp_probe(const uint8_t *d, size_t len, an_info *info, an_error *err)
{
    WebPBitstreamFeatures f;
    info->format = AN_FMT_WEBP;
    if (map_status(WebPGetFeatures(d, len, &f), "header", err) != AN_OK)
        return err->status;
    if (f.width <= 0 || f.height <= 0) {
        an_error_set(err, AN_ERR_HEADER, "WebP has zero size (%dx%d)", f.width, f.height);
        return err->status;
    }
    info->width = (uint32_t)f.width;
    info->height = (uint32_t)f.height;
    info->channels = f.has_alpha ? 4 : 3;
    info->bit_depth = 8;
    info->frames = 0;
    int lossless = f.format == 2;
    walk_chunks(d, len, &info->frames, &info->orientation, &lossless);
    if (!f.has_animation)
        info->frames = 1;
    return AN_OK;
}

void
an_webp_close(an_webp *w)
{
    if (w == NULL)
        return;
    const an_allocator *a = w->opts.alloc;
    if (w->reserved)
        an_release(a, w->reserved);
    an_free(a, w->tmp);
    an_free(a, w);
}

an_status
an_webp_open(an_webp **out, const uint8_t *data, size_t len, const an_decode_opts *opts,
             const an_info *info, an_error *err)
{
    *out = NULL;
    uint32_t frames = info->frames;
    if (frames == 0) {
        an_error_set(err, AN_ERR_HEADER, "animated WebP without frames");
        return err->status;
    }
    if (opts->limits.max_frames && frames > opts->limits.max_frames) {
        err->actual = frames;
        err->limit = opts->limits.max_frames;
        an_error_set(err, AN_ERR_LIMIT_FRAMES, "WebP has %u frames, max_frames is %u", frames,
                     opts->limits.max_frames);
        return err->status;
    }
    if (opts->frame >= frames) {
        err->actual = opts->frame;
        err->limit = frames;
        an_error_set(err, AN_ERR_FRAME_RANGE, "frame %u requested, the WebP has %u", opts->frame,
                     frames);
        return err->status;
    }
    /* Reaching frame k composes k + 1 frames, each of which may clear or blend
     * the whole canvas: bounded like a GIF's work (gif.c). */
    uint64_t work = ((uint64_t)opts->frame + 1) * info->width * info->height;
    uint64_t max_work = opts->limits.max_pixels * (uint64_t)AN_ANIM_WORK_FACTOR;
    if (opts->limits.max_pixels && opts->frame > 0 && work > max_work) {
        err->actual = work;
        err->limit = max_work;
        an_error_set(err, AN_ERR_LIMIT_FRAMES,
                     "decoding WebP frame %u composes %llu canvas pixels, more than %u x "
                     "max_pixels", opts->frame, (unsigned long long)work, AN_ANIM_WORK_FACTOR);
        return err->status;
    }
    an_webp *w = an_calloc(opts->alloc, 1, sizeof(*w));
    if (w == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the WebP decoder");
        return err->status;
    }
    w->data = data;
    w->len = len;
    w->opts = *opts;
    w->info = *info;
    uint32_t dummy_frames = 0;
    int orientation = 1;
    walk_chunks(data, len, &dummy_frames, &orientation, &w->lossless);
    WebPBitstreamFeatures f;
    if (WebPGetFeatures(data, len, &f) == VP8_STATUS_OK) {
        w->animated = f.has_animation;
        w->lossless |= f.format == 2;
    }
    *out = w;
    return AN_OK;
}

/* What libwebp itself allocates while decoding, charged to the budget: the
 * ARGB image plus a few rows (lossless), the YUV row cache and alpha plane
 * (lossy), both canvases (animation).  An estimate; it errs high. */
static size_t
working_set(const an_webp *w)
{
    size_t px = (size_t)w->info.width * w->info.height;
    size_t rows = (size_t)w->info.width * 4 * 64;
    if (w->animated)
        return px * 4 * 3 + rows;
    if (w->lossless)
        return px * 4 + rows;
    return px + rows; /* alpha plane (when present) and the row caches */
}

static WEBP_CSP_MODE
csp_for(an_mode mode, int has_alpha)
{
    switch (mode) {
    case AN_MODE_RGB: return MODE_RGB;
    case AN_MODE_BGR: return MODE_BGR;
    case AN_MODE_RGBA: return MODE_RGBA;
    case AN_MODE_LA: return MODE_RGBA;
    case AN_MODE_L: default: return has_alpha ? MODE_RGBA : MODE_RGB;
    }
}

/* Decodes a still image into buf (stride bytes per row, colourspace csp). */
static an_status
decode_still(an_webp *w, WEBP_CSP_MODE csp, uint8_t *buf, size_t stride, an_error *err)
{
    WebPDecoderConfig config;
    if (!WebPInitDecoderConfig(&config)) {
        an_error_set(err, AN_ERR_CORRUPT, "libwebp version mismatch");
        return err->status;
    }
    config.output.colorspace = csp;
    config.output.is_external_memory = 1;
    config.output.u.RGBA.rgba = buf;
    config.output.u.RGBA.stride = (int)stride;
    config.output.u.RGBA.size = stride * w->info.height;
    if (w->opts.strict) {
        VP8StatusCode s = WebPDecode(w->data, w->len, &config);
        WebPFreeDecBuffer(&config.output);
        /* "Not enough data" with every byte of the RIFF here: the container
         * lacks its image (a VP8X lying about animation), nothing to wait for. */
        if (s == VP8_STATUS_NOT_ENOUGH_DATA && w->len >= (uint64_t)le32(w->data + 4) + 8) {
            an_error_set(err, AN_ERR_CORRUPT, "WebP container holds no complete image");
            return err->status;
        }
        return map_status(s, "data", err);
    }
    /* Tolerant: the incremental decoder keeps the rows decoded before the
     * damage (the rest of buf is zero, as the caller provides it). */
    WebPIDecoder *idec = WebPINewDecoder(&config.output);
    if (idec == NULL) {
        an_error_set(err, AN_ERR_NOMEM, "cannot create the WebP decoder");
        return err->status;
    }
    VP8StatusCode s = WebPIUpdate(idec, w->data, w->len);
    int last_y = 0;
    if (s != VP8_STATUS_OK)
        WebPIDecGetRGB(idec, &last_y, NULL, NULL, NULL);
    WebPIDelete(idec);
    WebPFreeDecBuffer(&config.output);
    uint64_t riff_end = (uint64_t)le32(w->data + 4) + 8;
    if (s == VP8_STATUS_OK && w->len < riff_end) {
        err->warned = 1;
        an_error_set(err, AN_OK, "WebP data ends %llu bytes early, after the image",
                     (unsigned long long)(riff_end - w->len));
        return AN_OK;
    }
    if (s == VP8_STATUS_OK)
        return AN_OK;
    if (last_y <= 0)
        return map_status(s == VP8_STATUS_SUSPENDED ? VP8_STATUS_NOT_ENOUGH_DATA : s, "data", err);
    err->warned = 1;
    an_error_set(err, AN_OK, "WebP data ends or is damaged after row %d of %u", last_y,
                 w->info.height);
    return AN_OK;
}

/* Decodes frame opts.frame of an animation into an RGBA canvas copy at buf. */
static an_status
decode_frame(an_webp *w, uint8_t *rgba, an_error *err)
{
    WebPAnimDecoderOptions o;
    WebPData wd = {w->data, w->len};
    if (!WebPAnimDecoderOptionsInit(&o)) {
        an_error_set(err, AN_ERR_CORRUPT, "libwebp version mismatch");
        return err->status;
    }
    o.color_mode = MODE_RGBA;
    o.use_threads = 0;
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&wd, &o);
    if (dec == NULL) {
        an_error_set(err, AN_ERR_CORRUPT, "invalid animated WebP (demuxing failed)");
        return err->status;
    }
    WebPAnimInfo ai;
    an_status st = AN_OK;
    if (!WebPAnimDecoderGetInfo(dec, &ai) || ai.canvas_width != w->info.width ||
        ai.canvas_height != w->info.height) {
        an_error_set(err, AN_ERR_HEADER, "animated WebP canvas does not match its header");
        st = err->status;
        goto done;
    }
    uint8_t *frame = NULL;
    int ts;
    for (uint32_t i = 0; i <= w->opts.frame; i++) {
        if (!WebPAnimDecoderHasMoreFrames(dec) || !WebPAnimDecoderGetNext(dec, &frame, &ts)) {
            an_error_set(err, AN_ERR_CORRUPT, "animated WebP frame %u cannot be decoded", i);
            st = err->status;
            goto done;
        }
    }
    memcpy(rgba, frame, (size_t)w->info.width * w->info.height * 4);
done:
    WebPAnimDecoderDelete(dec);
    return st;
}

an_status
an_webp_run(an_webp *w, uint8_t *out, an_error *err)
{
    const an_allocator *a = w->opts.alloc;
    const an_mode mode = w->opts.mode;
    const size_t width = w->info.width, height = w->info.height;
    const int animated = w->animated;
    size_t need = working_set(w);
    if (!an_reserve(a, need)) {
        an_error_set(err, an_nomem(a), "cannot reserve %zu bytes for libwebp", need);
        return err->status;
    }
    w->reserved = need;

    int direct = !animated && mode != AN_MODE_L && mode != AN_MODE_LA;
    an_pixfmt src = AN_PIX_RGBA;
    an_status st;
    if (direct) {
        st = decode_still(w, csp_for(mode, 0), out, width * (size_t)an_mode_channels(mode), err);
    } else {
        WEBP_CSP_MODE csp = animated ? MODE_RGBA : csp_for(mode, w->info.channels == 4);
        int ch = csp == MODE_RGBA ? 4 : 3;
        size_t n;
        if (!an_mul4_size(width, height, (size_t)ch, 1, &n)) {
            an_error_set(err, AN_ERR_LIMIT_PIXELS, "image size overflows");
            return err->status;
        }
        w->tmp = w->opts.strict ? an_malloc(a, n) : an_calloc(a, 1, n);
        if (w->tmp == NULL) {
            an_error_set(err, an_nomem(a), "cannot allocate %zu bytes", n);
            return err->status;
        }
        src = ch == 4 ? AN_PIX_RGBA : AN_PIX_RGB;
        st = animated ? decode_frame(w, w->tmp, err)
                      : decode_still(w, csp, w->tmp, width * (size_t)ch, err);
        if (st == AN_OK) {
            const size_t oc = (size_t)an_mode_channels(mode);
            for (size_t y = 0; y < height; y++)
                an_convert_row8(src, mode, w->tmp + y * width * (size_t)ch, out + y * width * oc,
                                width);
        }
        an_free(a, w->tmp);
        w->tmp = NULL;
    }
    an_release(a, w->reserved);
    w->reserved = 0;
    return st;
}

const char *
an_libwebp_version(void)
{
    /* Written once per call with the same bytes: a benign race at worst. */
    static char buf[24];
    int v = WebPGetDecoderVersion();
    snprintf(buf, sizeof(buf), "%d.%d.%d", (v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF);
    return buf;
}

/* ---- incremental (an_incr.h): still images through WebPIDecoder ---------- */

struct an_iwebp {
    const an_allocator *alloc;
    an_mode mode;
    int strict;
    uint32_t width, height;
    WebPDecBuffer buf;      /* external memory: target, or tmp for grey modes */
    WebPIDecoder *idec;
    uint8_t *target;        /* borrowed: the caller's output (or stage) */
    uint8_t *tmp;           /* owned: RGB(A) rows for L/LA, converted at the end */
    int tmp_ch;
    int done, broken;       /* complete / libwebp refused the data (tolerant) */
    int pixels_done;        /* every row is decoded (the RIFF may still be short) */
    uint8_t *pend;          /* owned: bytes not yet handed to libwebp */
    size_t pend_len, pend_cap;
    uint64_t appended;      /* bytes handed to libwebp */
    uint64_t fed, riff_end; /* bytes so far / the RIFF size plus its header */
    size_t reserved;
};

an_status
an_iwebp_open(an_iwebp **out, const an_decode_opts *opts, const an_info *info,
              uint32_t width, uint32_t height, uint8_t *target, an_error *err)
{
    const an_allocator *a = opts->alloc;
    *out = NULL;
    an_iwebp *w = an_calloc(a, 1, sizeof(*w));
    if (w == NULL) {
        an_error_set(err, an_nomem(a), "cannot allocate the WebP decoder");
        return err->status;
    }
    w->alloc = a;
    w->mode = opts->mode;
    w->strict = opts->strict;
    w->width = width;
    w->height = height;
    w->target = target;
    /* libwebp's own rows (and the ARGB image of a lossless file), as one-shot. */
    size_t need = (size_t)width * height * 4 + (size_t)width * 4 * 64;
    if (!an_reserve(a, need)) {
        an_free(a, w);
        an_error_set(err, an_nomem(a), "cannot reserve %zu bytes for libwebp", need);
        return err->status;
    }
    w->reserved = need;
    if (!WebPInitDecBuffer(&w->buf)) {
        an_iwebp_close(w);
        an_error_set(err, AN_ERR_CORRUPT, "libwebp version mismatch");
        return err->status;
    }
    uint8_t *dst = target;
    size_t stride = (size_t)width * (size_t)an_mode_channels(opts->mode);
    WEBP_CSP_MODE csp = csp_for(opts->mode, info->channels == 4);
    if (opts->mode == AN_MODE_L || opts->mode == AN_MODE_LA) {
        w->tmp_ch = csp == MODE_RGBA ? 4 : 3;
        stride = (size_t)width * (size_t)w->tmp_ch;
        w->tmp = an_calloc(a, height, stride);
        if (w->tmp == NULL) {
            an_iwebp_close(w);
            an_error_set(err, an_nomem(a), "cannot allocate the WebP rows");
            return err->status;
        }
        dst = w->tmp;
    }
    w->buf.colorspace = csp;
    w->buf.is_external_memory = 1;
    w->buf.u.RGBA.rgba = dst;
    w->buf.u.RGBA.stride = (int)stride;
    w->buf.u.RGBA.size = stride * height;
    w->idec = WebPINewDecoder(&w->buf);
    if (w->idec == NULL) {
        an_iwebp_close(w);
        an_error_set(err, AN_ERR_NOMEM, "cannot create the WebP decoder");
        return err->status;
    }
    *out = w;
    return AN_OK;
}

/* Grey modes: the RGB(A) rows to the output, once the decoding has ended. */
static void
convert_tmp(an_iwebp *w)
{
    if (w->tmp == NULL)
        return;
    const size_t oc = (size_t)an_mode_channels(w->mode), ic = (size_t)w->tmp_ch;
    for (uint32_t y = 0; y < w->height; y++)
        an_convert_row8(ic == 4 ? AN_PIX_RGBA : AN_PIX_RGB, w->mode,
                        w->tmp + (size_t)y * w->width * ic, w->target + (size_t)y * w->width * oc,
                        w->width);
}

/* Hands the pending bytes to libwebp. */
static an_status
flush(an_iwebp *w, an_error *err)
{
    if (w->pend_len == 0 || w->pixels_done || w->broken)
        return AN_OK;
    VP8StatusCode s = WebPIAppend(w->idec, w->pend, w->pend_len);
    w->appended += w->pend_len;
    w->pend_len = 0;
    if (s == VP8_STATUS_OK) {
        w->pixels_done = 1;
        convert_tmp(w);
        return AN_OK;
    }
    if (s == VP8_STATUS_SUSPENDED)
        return AN_OK;
    if (!w->strict) {
        w->broken = 1; /* keep the rows; finish() reports it */
        return AN_OK;
    }
    return map_status(s, "data", err);
}

/* Bytes are batched before WebPIAppend: a lossless stream that runs out of
 * data mid-batch is re-decoded from the last checkpoint on the next append,
 * so tiny chunks would multiply the work.  A batch is flushed once it holds
 * AN_IWEBP_BATCH bytes and a quarter of what was appended before (so a
 * hostile 1-byte feeder costs O(log n) + n / AN_IWEBP_BATCH appends), and
 * when the container is complete. */
#define AN_IWEBP_BATCH 32768u

an_status
an_iwebp_feed(an_iwebp *w, const uint8_t *data, size_t len, int *done, an_error *err)
{
    *done = w->done;
    if (w->done || w->broken || len == 0)
        return AN_OK;
    if (w->fed == 0 && len >= 8)
        w->riff_end = (uint64_t)le32(data + 4) + 8;
    w->fed += len;
    /* As decode() (WebPDecode): the image is complete when every row is
     * decoded and the RIFF container has all its bytes. */
    if (!w->pixels_done) {
        if (len > w->pend_cap - w->pend_len) {
            size_t cap = w->pend_cap ? w->pend_cap : AN_IWEBP_BATCH;
            while (cap - w->pend_len < len)
                cap = cap > SIZE_MAX / 2 ? w->pend_len + len : cap * 2;
            uint8_t *nb = an_malloc(w->alloc, cap);
            if (nb == NULL) {
                an_error_set(err, an_nomem(w->alloc), "cannot allocate %zu bytes", cap);
                return err->status;
            }
            if (w->pend_len)
                memcpy(nb, w->pend, w->pend_len);
            an_free(w->alloc, w->pend);
            w->pend = nb;
            w->pend_cap = cap;
        }
        memcpy(w->pend + w->pend_len, data, len);
        w->pend_len += len;
        if (w->fed >= w->riff_end ||
            (w->pend_len >= AN_IWEBP_BATCH && w->pend_len >= w->appended / 4)) {
            if (flush(w, err) != AN_OK)
                return err->status;
        }
    }
    if (w->pixels_done && w->fed >= w->riff_end)
        w->done = *done = 1;
    return AN_OK;
}

uint32_t
an_iwebp_rows(const an_iwebp *w)
{
    int last_y = 0;
    if (w->pixels_done)
        return w->height;
    if (w->idec != NULL)
        WebPIDecGetRGB(w->idec, &last_y, NULL, NULL, NULL);
    return last_y > 0 ? (uint32_t)last_y : 0;
}

an_status
an_iwebp_finish(an_iwebp *w, an_error *err)
{
    if (flush(w, err) != AN_OK)
        return err->status;
    if (!w->done && w->pixels_done && w->fed >= w->riff_end)
        w->done = 1;
    if (!w->done && w->pixels_done) {
        if (w->strict) {
            an_error_set(err, AN_ERR_TRUNCATED, "WebP data is truncated");
            return err->status;
        }
        err->warned = 1;
        an_error_set(err, AN_OK, "WebP data ends %llu bytes early, after the image",
                     (unsigned long long)(w->riff_end - w->fed));
    } else if (!w->done) {
        uint32_t rows = an_iwebp_rows(w);
        if (w->strict || rows == 0) {
            an_error_set(err, w->broken ? AN_ERR_CORRUPT : AN_ERR_TRUNCATED,
                         "WebP data is %s", w->broken ? "corrupt" : "truncated");
            return err->status;
        }
        err->warned = 1;
        an_error_set(err, AN_OK, "WebP data ends or is damaged after row %u of %u", rows,
                     w->height);
        convert_tmp(w);
    }
    return AN_OK;
}

void
an_iwebp_close(an_iwebp *w)
{
    if (w == NULL)
        return;
    if (w->idec != NULL)
        WebPIDelete(w->idec);
    WebPFreeDecBuffer(&w->buf); /* external memory: frees nothing of ours */
    if (w->reserved)
        an_release(w->alloc, w->reserved);
    an_free(w->alloc, w->tmp);
    an_free(w->alloc, w->pend);
    an_free(w->alloc, w);
}
