/*
 * heif.c - HEIC and AVIF decoding through libheif: the primary image, with
 * its irot/imir/clap transformations applied (orient=0 keeps the stored
 * orientation), 8-bit output or 10/12-bit samples as uint16, alpha.
 *
 * libheif parses the container (ISOBMFF boxes) without decoding: that is the
 * probe, and it gives the size, the alpha flag and the bit depth before any
 * codec runs, so the limits are checked on the header.  libheif's own limit
 * (heif_context_set_maximum_image_size_limit) is set from the caller's too,
 * so the codec refuses a stream whose coded size disagrees with the header.
 *
 * The HEVC and AV1 decoders are plugins of libheif (libde265, dav1d, aom):
 * when the one a file needs is missing at run time, decoding fails with
 * AN_ERR_CODEC_MISSING naming it, and an_format_available() says so up front.
 *
 * libheif allocates the decoded image and the codec's frames with malloc; an
 * estimate of them is charged to the allocator's budget with an_reserve() for
 * the duration of the decode, and the image is converted row by row into the
 * caller's buffer.  libheif prints nothing by default.
 *
 * Built without libheif (AN_HAVE_HEIF undefined), every entry point reports
 * AN_ERR_CODEC_MISSING and an_libheif_version() returns NULL.
 */
#include <string.h>

#include "an_internal.h"

#ifdef AN_HAVE_HEIF
#include <pthread.h>

#include <libheif/heif.h>

struct an_heif {
    an_decode_opts opts;
    an_info info;
    struct heif_context *ctx;
    struct heif_image_handle *handle;
    uint32_t width, height;  /* what the decode delivers */
    int bits;                /* luma bit depth */
    size_t reserved;
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int have_aom; /* written once under init_once */

static void
init_libheif(void)
{
    heif_init(NULL); /* loads the plugins; never undone (reference counted) */
    const struct heif_decoder_descriptor *d[16];
    int n = heif_get_decoder_descriptors(heif_compression_AV1, d, 16);
    for (int i = 0; i < n; i++) {
        const char *id = heif_decoder_descriptor_get_id_name(d[i]);
        if (id != NULL && strcmp(id, "aom") == 0)
            have_aom = 1;
    }
}

static int
aom_available(void)
{
    return have_aom;
}

static enum heif_compression_format
compression_for(an_format fmt)
{
    return fmt == AN_FMT_AVIF ? heif_compression_AV1 : heif_compression_HEVC;
}

static const char *
plugin_for(an_format fmt)
{
    return fmt == AN_FMT_AVIF ? "an AV1 decoder (libheif's dav1d or aom plugin)"
                              : "an HEVC decoder (libheif's libde265 plugin)";
}

static an_status
missing_codec(an_format fmt, an_error *err)
{
    an_error_set(err, AN_ERR_CODEC_MISSING, "%s images need %s, which libheif %s does not have",
                 an_format_name(fmt), plugin_for(fmt), heif_get_version());
    return err->status;
}

static an_status
map_error(struct heif_error e, an_format fmt, an_error *err)
{
    an_status st;
    if (e.code == heif_error_Ok)
        return AN_OK;
    switch (e.code) {
    case heif_error_Memory_allocation_error:
        /* A size over libheif's security limits is a lie in the file (the
         * declared sizes were checked against ours), not a failed malloc. */
        st = e.subcode == heif_suberror_Security_limit_exceeded ? AN_ERR_CORRUPT : AN_ERR_NOMEM;
        break;
    case heif_error_Unsupported_filetype:
    case heif_error_Unsupported_feature:
        if (e.subcode == heif_suberror_Unsupported_codec)
            return missing_codec(fmt, err);
        st = AN_ERR_UNSUPPORTED;
        break;
    case heif_error_Invalid_input:
        st = e.subcode == heif_suberror_End_of_data ? AN_ERR_TRUNCATED : AN_ERR_CORRUPT;
        break;
    case heif_error_Decoder_plugin_error:
        st = AN_ERR_CORRUPT;
        break;
    default:
        st = AN_ERR_CORRUPT;
        break;
    }
    an_error_set(err, st, "%s: %s", an_format_name(fmt), e.message ? e.message : "libheif error");
    return st;
}

/* libde265 fprintf's "SPS error: ..." to stderr (and fails) for five SPS
 * sanity checks.  We make the same checks on every SPS in an hvcC box of the
 * file first and call the file corrupt, so nothing is printed.  A parse that
 * runs out of bits or meets absurd values gives up (returns 0): libde265
 * then decides. */
typedef struct {
    const uint8_t *p;
    size_t len, bit; /* RBSP bytes (emulation prevention removed) */
} sps_bits;

static int
sps_u(sps_bits *b, unsigned n, uint32_t *v)
{
    uint32_t r = 0;
    for (unsigned i = 0; i < n; i++) {
        if (b->bit >= b->len * 8)
            return 0;
        r = (r << 1) | ((b->p[b->bit >> 3] >> (7 - (b->bit & 7))) & 1u);
        b->bit++;
    }
    *v = r;
    return 1;
}

static int
sps_ue(sps_bits *b, uint32_t *v)
{
    unsigned zeros = 0;
    uint32_t bit = 0;
    for (;;) {
        if (!sps_u(b, 1, &bit))
            return 0;
        if (bit)
            break;
        if (++zeros > 20)
            return 0;
    }
    uint32_t rest = 0;
    if (!sps_u(b, zeros, &rest))
        return 0;
    *v = ((1u << zeros) - 1u) + rest;
    return 1;
}

static int
sps_skip(sps_bits *b, size_t n)
{
    if (b->bit + n > b->len * 8)
        return 0;
    b->bit += n;
    return 1;
}

/* 1 when the SPS NAL unit (header included) fails one of libde265's checks. */
static int
sps_is_bad(const uint8_t *nal, size_t n)
{
    uint8_t rbsp[256];
    size_t len = 0, zeros = 0;
    for (size_t i = 2; i < n && len < sizeof(rbsp); i++) {
        if (zeros >= 2 && nal[i] == 3) {
            zeros = 0;
            continue;
        }
        zeros = nal[i] == 0 ? zeros + 1 : 0;
        rbsp[len++] = nal[i];
    }
    sps_bits b = {rbsp, len, 0};
    uint32_t v, max_sub, chroma, w, h, depth_y, depth_c, min_cb, diff_cb, min_tb, diff_tb;
    if (!sps_u(&b, 4, &v) || !sps_u(&b, 3, &max_sub) || !sps_u(&b, 1, &v))
        return 0;
    /* profile_tier_level(1, max_sub) */
    uint32_t prof[8] = {0}, lev[8] = {0};
    if (!sps_skip(&b, 96))
        return 0;
    for (uint32_t i = 0; i < max_sub; i++)
        if (!sps_u(&b, 1, &prof[i]) || !sps_u(&b, 1, &lev[i]))
            return 0;
    if (max_sub > 0 && !sps_skip(&b, 2 * (8 - (size_t)max_sub)))
        return 0;
    for (uint32_t i = 0; i < max_sub; i++)
        if ((prof[i] && !sps_skip(&b, 88)) || (lev[i] && !sps_skip(&b, 8)))
            return 0;
    if (!sps_ue(&b, &v) || !sps_ue(&b, &chroma))
        return 0;
    if (chroma == 3 && !sps_u(&b, 1, &v))
        return 0;
    if (!sps_ue(&b, &w) || !sps_ue(&b, &h) || !sps_u(&b, 1, &v))
        return 0;
    if (v)
        for (int i = 0; i < 4; i++)
            if (!sps_ue(&b, &v))
                return 0;
    if (!sps_ue(&b, &depth_y) || !sps_ue(&b, &depth_c) || !sps_ue(&b, &v) ||
        !sps_u(&b, 1, &v))
        return 0;
    for (uint32_t i = v ? 0 : max_sub; i <= max_sub; i++)
        for (int k = 0; k < 3; k++)
            if (!sps_ue(&b, &v))
                return 0;
    if (!sps_ue(&b, &min_cb) || !sps_ue(&b, &diff_cb) || !sps_ue(&b, &min_tb) ||
        !sps_ue(&b, &diff_tb))
        return 0;
    if (min_cb > 3 || diff_cb > 3 || min_tb > 3 || diff_tb > 3)
        return 1; /* past the 64-pixel CTB and 32-pixel TB of HEVC */
    const uint32_t log2_cb = min_cb + 3, log2_ctb = log2_cb + diff_cb;
    const uint32_t log2_tb = min_tb + 2, log2_tb_max = log2_tb + diff_tb;
    if (w % (1u << log2_cb) != 0 || h % (1u << log2_cb) != 0)
        return 1;
    if (log2_tb > log2_cb || log2_tb_max > (log2_ctb < 5 ? log2_ctb : 5))
        return 1;
    return depth_y > 8 || depth_c > 8;
}

/* 1 when an hvcC box of the file carries an SPS that libde265 would print about. */
static int
hvcc_has_bad_sps(const uint8_t *d, size_t len)
{
    for (size_t at = 4; at + 4 <= len; at++) {
        const uint8_t *h = memchr(d + at, 'h', len - 3 - at);
        if (h == NULL)
            break;
        at = (size_t)(h - d);
        if (memcmp(h, "hvcC", 4) != 0)
            continue;
        size_t box = ((size_t)d[at - 4] << 24) | ((size_t)d[at - 3] << 16) |
                     ((size_t)d[at - 2] << 8) | d[at - 1];
        if (box < 8 + 23 || box - 4 > len - at)
            continue;
        const uint8_t *p = d + at + 4 + 22, *end = d + at - 4 + box;
        unsigned arrays = *p++;
        for (unsigned a = 0; a < arrays && p + 3 <= end; a++) {
            unsigned type = p[0] & 0x3f, count = ((unsigned)p[1] << 8) | p[2];
            p += 3;
            for (unsigned k = 0; k < count && p + 2 <= end; k++) {
                size_t n = ((size_t)p[0] << 8) | p[1];
                p += 2;
                if (n > (size_t)(end - p))
                    break;
                if (type == 33 && n > 2 && sps_is_bad(p, n))
                    return 1;
                p += n;
            }
        }
    }
    return 0;
}

/* Opens the container and the primary image handle (no decoding). */
static an_status
open_container(const uint8_t *d, size_t len, an_format fmt, uint32_t max_side,
               struct heif_context **ctx_out, struct heif_image_handle **handle_out, an_error *err)
{
    pthread_once(&init_once, init_libheif);
    *ctx_out = NULL;
    *handle_out = NULL;
    struct heif_context *ctx = heif_context_alloc();
    if (ctx == NULL) {
        an_error_set(err, AN_ERR_NOMEM, "cannot allocate the libheif context");
        return err->status;
    }
    if (max_side)
        heif_context_set_maximum_image_size_limit(ctx, (int)(max_side > 0x7FFFFFFF ? 0x7FFFFFFF
                                                                                : max_side));
    heif_context_set_max_decoding_threads(ctx, 0);
    /* e.message may live in the context: map it before freeing that. */
    struct heif_error e = heif_context_read_from_memory_without_copy(ctx, d, len, NULL);
    if (e.code != heif_error_Ok) {
        if (map_error(e, fmt, err) == AN_ERR_CORRUPT)
            err->status = AN_ERR_HEADER;
        heif_context_free(ctx);
        return err->status;
    }
    struct heif_image_handle *h = NULL;
    e = heif_context_get_primary_image_handle(ctx, &h);
    if (e.code != heif_error_Ok) {
        if (map_error(e, fmt, err) == AN_ERR_CORRUPT)
            err->status = AN_ERR_HEADER;
        heif_context_free(ctx);
        return err->status;
    }
    *ctx_out = ctx;
    *handle_out = h;
    return AN_OK;
}

an_status
an_heif_probe(const uint8_t *d, size_t len, an_info *info, an_error *err)
{
    struct heif_context *ctx;
    struct heif_image_handle *h;
    an_format fmt = info->format;
    if (open_container(d, len, fmt, 0, &ctx, &h, err) != AN_OK)
        return err->status;
    int w = heif_image_handle_get_width(h), hh = heif_image_handle_get_height(h);
    int bits = heif_image_handle_get_luma_bits_per_pixel(h);
    info->channels = heif_image_handle_has_alpha_channel(h) ? 4 : 3;
    heif_image_handle_release(h);
    heif_context_free(ctx);
    if (w <= 0 || hh <= 0) {
        an_error_set(err, AN_ERR_HEADER, "%s image has zero size (%dx%d)", an_format_name(fmt), w,
                     hh);
        return err->status;
    }
    info->width = (uint32_t)w;
    info->height = (uint32_t)hh;
    info->bit_depth = bits > 0 ? bits : 8;
    info->frames = 1;
    return AN_OK;
}

void
an_heif_close(an_heif *h)
{
    if (h == NULL)
        return;
    const an_allocator *a = h->opts.alloc;
    if (h->reserved)
        an_release(a, h->reserved);
    if (h->handle != NULL)
        heif_image_handle_release(h->handle);
    if (h->ctx != NULL)
        heif_context_free(h->ctx);
    an_free(a, h);
}

an_status
an_heif_open(an_heif **out, const uint8_t *data, size_t len, const an_decode_opts *opts,
             const an_info *info, an_error *err)
{
    *out = NULL;
    if (opts->frame != 0) {
        err->actual = opts->frame;
        err->limit = 1;
        an_error_set(err, AN_ERR_FRAME_RANGE, "frame %u requested, %s decodes the primary image "
                     "only", opts->frame, an_format_name(info->format));
        return err->status;
    }
    if (!heif_have_decoder_for_format(compression_for(info->format)))
        return missing_codec(info->format, err);
    an_heif *h = an_calloc(opts->alloc, 1, sizeof(*h));
    if (h == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the HEIF decoder");
        return err->status;
    }
    h->opts = *opts;
    h->info = *info;
    uint32_t side = opts->limits.max_width > opts->limits.max_height ? opts->limits.max_width
                                                                     : opts->limits.max_height;
    if (open_container(data, len, info->format, side, &h->ctx, &h->handle, err) != AN_OK) {
        an_heif_close(h);
        return err->status;
    }
    int w = opts->orient ? heif_image_handle_get_width(h->handle)
                         : heif_image_handle_get_ispe_width(h->handle);
    int hh = opts->orient ? heif_image_handle_get_height(h->handle)
                          : heif_image_handle_get_ispe_height(h->handle);
    if (w <= 0 || hh <= 0) {
        an_error_set(err, AN_ERR_HEADER, "%s image has zero size", an_format_name(info->format));
        an_heif_close(h);
        return err->status;
    }
    if (an_check_dims(&opts->limits, (uint32_t)w, (uint32_t)hh, err) != AN_OK) {
        an_heif_close(h);
        return err->status;
    }
    h->width = (uint32_t)w;
    h->height = (uint32_t)hh;
    h->bits = heif_image_handle_get_luma_bits_per_pixel(h->handle);
    if (h->bits <= 0)
        h->bits = 8;
    if (info->format == AN_FMT_HEIC && hvcc_has_bad_sps(data, len)) {
        an_error_set(err, AN_ERR_CORRUPT, "HEIC: the HEVC sequence parameter set is invalid");
        an_heif_close(h);
        return err->status;
    }
    *out = h;
    return AN_OK;
}

void
an_heif_dims(const an_heif *h, uint32_t *w, uint32_t *hgt)
{
    *w = h->width;
    *hgt = h->height;
}

an_status
an_heif_run(an_heif *h, uint8_t *out, an_error *err)
{
    const an_allocator *a = h->opts.alloc;
    const an_format fmt = h->info.format;
    const int alpha = heif_image_handle_has_alpha_channel(h->handle);
    const int wide = h->opts.depth16;
    const int ch = alpha ? 4 : 3;
    const size_t px = (size_t)h->width * h->height;
    /* The interleaved image, the codec's planes and a reference frame. */
    size_t need = px * (size_t)ch * (wide ? 2 : 1) + px * 3 * 2 * 2;
    if (!an_reserve(a, need)) {
        an_error_set(err, an_nomem(a), "cannot reserve %zu bytes for libheif", need);
        return err->status;
    }
    h->reserved = need;

    struct heif_decoding_options *o = heif_decoding_options_alloc();
    if (o == NULL) {
        an_error_set(err, AN_ERR_NOMEM, "cannot allocate libheif's decoding options");
        return err->status;
    }
    o->ignore_transformations = h->opts.orient ? 0 : 1;
    /* dav1d logs parse errors to stderr through its default logger, which
     * libheif 1.15's plugin does not replace; libaom is silent.  So AV1 goes to
     * aom when libheif has it (dav1d is the fallback). */
    if (fmt == AN_FMT_AVIF && aom_available())
        o->decoder_id = "aom";
    o->convert_hdr_to_8bit = wide ? 0 : 1;
    enum heif_chroma chroma = wide ? (alpha ? heif_chroma_interleaved_RRGGBBAA_LE
                                            : heif_chroma_interleaved_RRGGBB_LE)
                                   : (alpha ? heif_chroma_interleaved_RGBA
                                            : heif_chroma_interleaved_RGB);
    struct heif_image *img = NULL;
    struct heif_error e = heif_decode_image(h->handle, &img, heif_colorspace_RGB, chroma, o);
    heif_decoding_options_free(o);
    an_status st = AN_OK;
    if (e.code != heif_error_Ok) {
        map_error(e, fmt, err);
        if (err->status == AN_ERR_HEADER)
            err->status = AN_ERR_CORRUPT;
        st = err->status;
        goto done;
    }
    int stride = 0;
    const uint8_t *plane = heif_image_get_plane_readonly(img, heif_channel_interleaved, &stride);
    if (plane == NULL || heif_image_get_width(img, heif_channel_interleaved) != (int)h->width ||
        heif_image_get_height(img, heif_channel_interleaved) != (int)h->height ||
        stride < (int)(h->width * (uint32_t)ch * (wide ? 2u : 1u))) {
        an_error_set(err, AN_ERR_CORRUPT, "%s decoded to an unexpected size",
                     an_format_name(fmt));
        st = err->status;
        goto done;
    }
    const an_mode mode = h->opts.mode;
    const size_t oc = (size_t)an_mode_channels(mode);
    const an_pixfmt src = alpha ? AN_PIX_RGBA : AN_PIX_RGB;
    if (!wide) {
        for (uint32_t y = 0; y < h->height; y++) {
            const uint8_t *s = plane + (size_t)y * (size_t)stride;
            uint8_t *d = out + (size_t)y * h->width * oc;
            if ((mode == AN_MODE_RGB && !alpha) || (mode == AN_MODE_RGBA && alpha))
                memcpy(d, s, h->width * oc);
            else
                an_convert_row8(src, mode, s, d, h->width);
        }
    } else {
        /* Samples of h->bits bits, shifted to the top of 16 (as pillow-heif). */
        const int shift = h->bits < 16 ? 16 - h->bits : 0;
        uint16_t *row = an_malloc(a, (size_t)h->width * (size_t)ch * 2);
        if (row == NULL) {
            an_error_set(err, an_nomem(a), "cannot allocate a row");
            st = err->status;
            goto done;
        }
        for (uint32_t y = 0; y < h->height; y++) {
            const uint8_t *s = plane + (size_t)y * (size_t)stride;
            uint16_t *d = (uint16_t *)(void *)(out + (size_t)y * h->width * oc * 2);
            for (size_t i = 0; i < (size_t)h->width * (size_t)ch; i++)
                row[i] = (uint16_t)((s[2 * i] | (s[2 * i + 1] << 8)) << shift);
            if ((mode == AN_MODE_RGB && !alpha) || (mode == AN_MODE_RGBA && alpha))
                memcpy(d, row, h->width * oc * 2);
            else
                an_convert_row16(src, mode, row, d, h->width);
        }
        an_free(a, row);
    }
done:
    if (img != NULL)
        heif_image_release(img);
    an_release(a, h->reserved);
    h->reserved = 0;
    return st;
}

const char *
an_libheif_version(void)
{
    return heif_get_version();
}

int
an_heif_available(an_format fmt)
{
    pthread_once(&init_once, init_libheif);
    return heif_have_decoder_for_format(compression_for(fmt)) != 0;
}

#else /* !AN_HAVE_HEIF */

struct an_heif {
    int unused;
};

static an_status
not_built(const an_info *info, an_error *err)
{
    an_error_set(err, AN_ERR_CODEC_MISSING,
                 "%s images need libheif, which this build of amulet_native does not include",
                 an_format_name(info->format));
    return err->status;
}

an_status
an_heif_probe(const uint8_t *d, size_t len, an_info *info, an_error *err)
{
    (void)d;
    (void)len;
    return not_built(info, err);
}

an_status
an_heif_open(an_heif **out, const uint8_t *data, size_t len, const an_decode_opts *opts,
             const an_info *info, an_error *err)
{
    (void)data;
    (void)len;
    (void)opts;
    *out = NULL;
    return not_built(info, err);
}

void
an_heif_dims(const an_heif *h, uint32_t *w, uint32_t *hgt)
{
    (void)h;
    *w = *hgt = 0;
}

an_status
an_heif_run(an_heif *h, uint8_t *out, an_error *err)
{
    (void)h;
    (void)out;
    an_error_set(err, AN_ERR_CODEC_MISSING, "libheif is not included in this build");
    return err->status;
}

void
an_heif_close(an_heif *h)
{
    (void)h;
}

const char *
an_libheif_version(void)
{
    return NULL;
}

int
an_heif_available(an_format fmt)
{
    (void)fmt;
    return 0;
}

#endif /* AN_HAVE_HEIF */
