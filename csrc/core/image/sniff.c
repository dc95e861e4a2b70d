/*
 * sniff.c - format detection by magic bytes, and header probing.
 *
 * The probe is a hand-written marker/chunk walker rather than a libjpeg/libpng
 * call: it allocates nothing, never longjmps, reads only the header, and costs
 * well under a microsecond on a typical upload.  It is also the first line of
 * defence: decode() runs it before any library sees the data, so limits are
 * enforced on sizes the file merely claims.  File names and MIME types are never
 * consulted; the bytes alone decide.
 */
#include <string.h>

#include "an_internal.h"

static const char *const format_names[AN_FMT_COUNT] = {
    "unknown", "jpeg", "png", "gif", "webp", "tiff", "bmp", "heic",
    "avif", "ico", "jpeg2000", "jpegxl", "psd", "qoi", "pdf",
};

const char *
an_format_name(an_format fmt)
{
    if ((unsigned)fmt >= AN_FMT_COUNT)
        fmt = AN_FMT_UNKNOWN;
    return format_names[fmt];
}

static int
starts_with(const uint8_t *d, size_t len, const char *magic, size_t n)
{
    return len >= n && memcmp(d, magic, n) == 0;
}

an_format
an_sniff(const uint8_t *d, size_t len)
{
    if (len >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF)
        return AN_FMT_JPEG;
    if (starts_with(d, len, "\x89PNG\r\n\x1a\n", 8))
        return AN_FMT_PNG;
    if (starts_with(d, len, "GIF87a", 6) || starts_with(d, len, "GIF89a", 6))
        return AN_FMT_GIF;
    if (len >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0)
        return AN_FMT_WEBP;
    if (starts_with(d, len, "II*\0", 4) || starts_with(d, len, "MM\0*", 4))
        return AN_FMT_TIFF;
    if (starts_with(d, len, "BM", 2) && len >= 14)
        return AN_FMT_BMP;
    if (len >= 12 && memcmp(d + 4, "ftyp", 4) == 0) {
        const uint8_t *b = d + 8;
        if (memcmp(b, "avif", 4) == 0 || memcmp(b, "avis", 4) == 0)
            return AN_FMT_AVIF;
        if (memcmp(b, "heic", 4) == 0 || memcmp(b, "heix", 4) == 0 ||
            memcmp(b, "hevc", 4) == 0 || memcmp(b, "heim", 4) == 0 ||
            memcmp(b, "heis", 4) == 0 || memcmp(b, "mif1", 4) == 0 ||
            memcmp(b, "msf1", 4) == 0)
            return AN_FMT_HEIC;
        if (memcmp(b, "jp2 ", 4) == 0)
            return AN_FMT_JPEG2000;
    }
    if (starts_with(d, len, "\0\0\0\x0cjP  \r\n\x87\n", 12) ||
        starts_with(d, len, "\xff\x4f\xff\x51", 4))
        return AN_FMT_JPEG2000;
    if (starts_with(d, len, "\xff\x0a", 2) ||
        starts_with(d, len, "\0\0\0\x0cJXL \r\n\x87\n", 12))
        return AN_FMT_JPEGXL;
    if (starts_with(d, len, "\0\0\1\0", 4))
        return AN_FMT_ICO;
    if (starts_with(d, len, "8BPS", 4))
        return AN_FMT_PSD;
    if (starts_with(d, len, "qoif", 4))
        return AN_FMT_QOI;
    if (starts_with(d, len, "%PDF", 4))
        return AN_FMT_PDF;
    return AN_FMT_UNKNOWN;
}

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

/* ---- EXIF ---------------------------------------------------------------- */

int
an_exif_orientation(const uint8_t *t, size_t len)
{
    if (len < 8)
        return 1;
    int le;
    if (t[0] == 'I' && t[1] == 'I')
        le = 1;
    else if (t[0] == 'M' && t[1] == 'M')
        le = 0;
    else
        return 1;
#define RD16(p) (le ? (uint16_t)((p)[0] | ((p)[1] << 8)) : be16(p))
#define RD32(p) (le ? ((uint32_t)(p)[0] | ((uint32_t)(p)[1] << 8) | ((uint32_t)(p)[2] << 16) | \
                       ((uint32_t)(p)[3] << 24))                                            \
                    : be32(p))
    if (RD16(t + 2) != 42)
        return 1;
    uint32_t ifd = RD32(t + 4);
    if (ifd < 8 || ifd > len - 2)
        return 1;
    uint32_t count = RD16(t + ifd);
    const uint8_t *e = t + ifd + 2;
    /* Bound the walk by what the buffer holds, not by the claimed count. */
    size_t avail = (len - ifd - 2) / 12;
    if (count > avail)
        count = (uint32_t)avail;
    for (uint32_t i = 0; i < count; i++, e += 12) {
        if (RD16(e) != 0x0112)
            continue;
        uint16_t type = RD16(e + 2);
        uint32_t value;
        if (type == 3)          /* SHORT */
            value = RD16(e + 8);
        else if (type == 4)     /* LONG */
            value = RD32(e + 8);
        else
            return 1;
        return (value >= 1 && value <= 8) ? (int)value : 1;
    }
    return 1;
#undef RD16
#undef RD32
}

/* ---- JPEG ---------------------------------------------------------------- */

static an_status
probe_jpeg(const uint8_t *d, size_t len, an_info *info, an_error *err)
{
    size_t pos = 2;
    int have_sof = 0, have_exif = 0;

    info->adobe_transform = -1;
    for (;;) {
        if (pos >= len)
            goto truncated;
        if (d[pos] != 0xFF) {
            /* Garbage between segments: libjpeg tolerates it with a warning, so the
             * header is still meaningful once we have the frame. */
            if (have_sof)
                return AN_OK;
            an_error_set(err, AN_ERR_HEADER, "expected a JPEG marker at offset %zu", pos);
            return err->status;
        }
        while (pos < len && d[pos] == 0xFF)
            pos++;
        if (pos >= len)
            goto truncated;
        int m = d[pos++];
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7))
            continue; /* markers without a length */
        if (m == 0xD9 || m == 0xDA) {
            if (have_sof)
                return AN_OK;
            an_error_set(err, AN_ERR_HEADER, "no frame header (SOF) before %s",
                         m == 0xD9 ? "EOI" : "SOS");
            return err->status;
        }
        if (len - pos < 2)
            goto truncated;
        size_t seglen = be16(d + pos);
        if (seglen < 2) {
            an_error_set(err, AN_ERR_HEADER, "JPEG segment length %zu < 2", seglen);
            return err->status;
        }
        const uint8_t *seg = d + pos + 2;
        size_t n = seglen - 2;
        int complete = (len - pos >= seglen);
        int is_sof = (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC);
        if (is_sof) {
            if (!complete || n < 6)
                goto truncated;
            if (have_sof) {
                an_error_set(err, AN_ERR_HEADER, "more than one frame header");
                return err->status;
            }
            have_sof = 1;
            info->format = AN_FMT_JPEG;
            info->jpeg_sof = m;
            info->bit_depth = seg[0];
            info->height = be16(seg + 1);
            info->width = be16(seg + 3);
            info->channels = seg[5];
            info->progressive = (m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE);
            if (m == 0xC3 || m == 0xC7 || m == 0xCB || m == 0xCF) {
                an_error_set(err, AN_ERR_UNSUPPORTED, "lossless JPEG (SOF 0x%02X)", m);
                return err->status;
            }
            if (m == 0xC5 || m == 0xC6 || m == 0xCD || m == 0xCE) {
                an_error_set(err, AN_ERR_UNSUPPORTED, "hierarchical JPEG (SOF 0x%02X)", m);
                return err->status;
            }
            if (info->bit_depth != 8) {
                an_error_set(err, AN_ERR_UNSUPPORTED, "%d-bit JPEG (only 8-bit is supported)",
                             info->bit_depth);
                return err->status;
            }
            if (info->channels != 1 && info->channels != 3 && info->channels != 4) {
                an_error_set(err, AN_ERR_UNSUPPORTED, "JPEG with %d components",
                             info->channels);
                return err->status;
            }
            if (info->width == 0 || info->height == 0) {
                an_error_set(err, AN_ERR_HEADER, "JPEG frame has zero size (%ux%u)",
                             info->width, info->height);
                return err->status;
            }
            if (n < 6 + 3u * (unsigned)info->channels) {
                an_error_set(err, AN_ERR_HEADER, "JPEG frame header too short");
                return err->status;
            }
        } else if (m == 0xE1 && !have_exif && complete && n >= 6 &&
                   memcmp(seg, "Exif\0\0", 6) == 0) {
            have_exif = 1;
            info->orientation = an_exif_orientation(seg + 6, n - 6);
        } else if (m == 0xEE && complete && n >= 12 && memcmp(seg, "Adobe", 5) == 0) {
            info->adobe_transform = seg[11];
        }
        if (!complete)
            goto truncated;
        pos += seglen;
    }
truncated:
    if (have_sof)
        return AN_OK; /* the frame is known; the decoder will report the truncation */
    an_error_set(err, AN_ERR_TRUNCATED, "JPEG header is truncated");
    return err->status;
}

/* ---- PNG ----------------------------------------------------------------- */

static an_status
probe_png(const uint8_t *d, size_t len, an_info *info, an_error *err)
{
    if (len < 8 + 8 + 13 + 4) {
        an_error_set(err, AN_ERR_TRUNCATED, "PNG header is truncated");
        return err->status;
    }
    const uint8_t *c = d + 8;
    if (be32(c) != 13 || memcmp(c + 4, "IHDR", 4) != 0) {
        an_error_set(err, AN_ERR_HEADER, "PNG does not start with a valid IHDR chunk");
        return err->status;
    }
    const uint8_t *h = c + 8;
    uint32_t w = be32(h), ht = be32(h + 4);
    int depth = h[8], ct = h[9], comp = h[10], filt = h[11], il = h[12];
    int ok_depth;
    switch (ct) {
    case 0: ok_depth = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16; break;
    case 3: ok_depth = depth == 1 || depth == 2 || depth == 4 || depth == 8; break;
    case 2: case 4: case 6: ok_depth = depth == 8 || depth == 16; break;
    default:
        an_error_set(err, AN_ERR_HEADER, "invalid PNG colour type %d", ct);
        return err->status;
    }
    if (!ok_depth) {
        an_error_set(err, AN_ERR_HEADER, "invalid PNG bit depth %d for colour type %d", depth, ct);
        return err->status;
    }
    if (w == 0 || ht == 0 || w > 0x7FFFFFFFu || ht > 0x7FFFFFFFu) {
        an_error_set(err, AN_ERR_HEADER, "invalid PNG size %ux%u", w, ht);
        return err->status;
    }
    if (comp != 0 || filt != 0 || il > 1) {
        an_error_set(err, AN_ERR_HEADER, "invalid PNG compression/filter/interlace method");
        return err->status;
    }
    info->format = AN_FMT_PNG;
    info->width = w;
    info->height = ht;
    info->bit_depth = depth;
    info->progressive = il;
    info->png_color_type = ct;
    static const int base_channels[7] = {1, 0, 3, 3, 2, 0, 4};
    info->channels = base_channels[ct];

    /* Walk the chunks before IDAT for tRNS and eXIf; stop quietly on damage,
     * which the decoder reports properly. */
    size_t pos = 8 + 8 + 13 + 4;
    while (len - pos >= 8) {
        uint32_t clen = be32(d + pos);
        const uint8_t *type = d + pos + 4;
        if (memcmp(type, "IDAT", 4) == 0 || memcmp(type, "IEND", 4) == 0)
            break;
        if (clen > 0x7FFFFFFFu || clen > len - pos - 8)
            break;
        if (memcmp(type, "tRNS", 4) == 0 && ct != 4 && ct != 6) {
            info->png_has_trns = 1;
            info->channels = (ct == 0) ? 2 : 4;
        } else if (memcmp(type, "eXIf", 4) == 0) {
            info->orientation = an_exif_orientation(d + pos + 8, clen);
        }
        if (len - pos - 8 - clen < 4)
            break;
        pos += 8 + (size_t)clen + 4;
    }
    return AN_OK;
}

an_status
an_probe(const uint8_t *data, size_t len, an_info *info, an_error *err)
{
    memset(info, 0, sizeof(*info));
    info->orientation = 1;
    info->frames = 1;
    info->adobe_transform = -1;
    err->status = AN_OK;
    if (len == 0) {
        an_error_set(err, AN_ERR_EMPTY, "input is empty");
        return err->status;
    }
    an_format fmt = an_sniff(data, len);
    err->format = fmt;
    if (fmt == AN_FMT_JPEG)
        return probe_jpeg(data, len, info, err);
    if (fmt == AN_FMT_PNG)
        return probe_png(data, len, info, err);
    info->format = fmt;
    if (fmt == AN_FMT_WEBP)
        return an_webp_probe(data, len, info, err);
    if (fmt == AN_FMT_GIF)
        return an_gif_probe(data, len, info, err);
    if (fmt == AN_FMT_HEIC || fmt == AN_FMT_AVIF)
        return an_heif_probe(data, len, info, err);
    if (fmt == AN_FMT_UNKNOWN)
        an_error_set(err, AN_ERR_UNKNOWN_FORMAT, "not an image format amulet_native decodes "
                     "(unknown format)");
    else
        an_error_set(err, AN_ERR_UNKNOWN_FORMAT, "%s images are not supported (JPEG, PNG, WebP, "
                     "GIF, HEIC and AVIF are)", an_format_name(fmt));
    return err->status;
}
