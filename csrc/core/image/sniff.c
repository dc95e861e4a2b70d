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
#include <stdarg.h>
#include <stdio.h>
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

/* ---- EXIF and XMP orientation ------------------------------------------- */

/* Records the first tolerated header problem (the decoder reports it as a
 * warning, or refuses it when pedantic). */
static void
probe_warn(an_error *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void
probe_warn(an_error *err, const char *fmt, ...)
{
    if (err->warned)
        return;
    err->warned = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
    va_end(ap);
}

/* The orientation tag of a TIFF stream: 1..8, 0 when the stream is valid but
 * has no orientation tag, -1 when it is malformed (bad header, IFD out of
 * range), -2 when the tag is there but means no rotation (a value out of
 * range or not an integer).  The integer types Pillow reads as integers
 * (SHORT, LONG, SBYTE, SSHORT, SLONG) are read; BYTE comes out of Pillow as
 * bytes, so it rotates nothing there either. */
static int
exif_orientation(const uint8_t *t, size_t len)
{
    /* One or two "Exif\0\0" prefixes are skipped, as Pillow's Exif.load
     * does (JPEG's APP1 has one; some writers put it in a PNG eXIf chunk, or
     * twice in APP1). */
    for (int k = 0; k < 2 && len >= 6 && memcmp(t, "Exif\0\0", 6) == 0; k++) {
        t += 6;
        len -= 6;
    }
    if (len < 8)
        return -1;
    int le;
    if (t[0] == 'I' && t[1] == 'I')
        le = 1;
    else if (t[0] == 'M' && t[1] == 'M')
        le = 0;
    else
        return -1;
#define RD16(p) (le ? (uint16_t)((p)[0] | ((p)[1] << 8)) : be16(p))
#define RD32(p) (le ? ((uint32_t)(p)[0] | ((uint32_t)(p)[1] << 8) | ((uint32_t)(p)[2] << 16) | \
                       ((uint32_t)(p)[3] << 24))                                            \
                    : be32(p))
    if (RD16(t + 2) != 42)
        return -1;
    uint32_t ifd = RD32(t + 4);
    if (ifd < 8 || ifd > len - 2)
        return -1;
    uint32_t count = RD16(t + ifd);
    const uint8_t *e = t + ifd + 2;
    /* Bound the walk by what the buffer holds, not by the claimed count. */
    size_t avail = (len - ifd - 2) / 12;
    if (count > avail)
        return -1;
    for (uint32_t i = 0; i < count; i++, e += 12) {
        if (RD16(e) != 0x0112)
            continue;
        uint16_t type = RD16(e + 2);
        int64_t value;
        switch (type) {
        case 3: value = RD16(e + 8); break;               /* SHORT */
        case 4: value = RD32(e + 8); break;               /* LONG */
        case 6: value = (int8_t)e[8]; break;              /* SBYTE */
        case 8: value = (int16_t)RD16(e + 8); break;      /* SSHORT */
        case 9: value = (int32_t)RD32(e + 8); break;      /* SLONG */
        default: return -2;
        }
        return (value >= 1 && value <= 8) ? (int)value : -2;
    }
    return 0;
#undef RD16
#undef RD32
}

int
an_exif_orientation(const uint8_t *tiff, size_t len)
{
    int o = exif_orientation(tiff, len);
    return o > 0 ? o : 1;
}

/* XMP's tiff:Orientation, found as Pillow's getexif() finds it: the first
 * 'tiff:Orientation="D' or 'tiff:Orientation>D' (D a digit); 0 without one.
 * Values outside 1..8 mean no rotation, as in Pillow's exif_transpose. */
static int
xmp_orientation(const uint8_t *x, size_t len)
{
    static const char key[] = "tiff:Orientation";
    const size_t k = sizeof(key) - 1;
    for (size_t i = 0; i + k + 1 < len; i++) {
        if (x[i] != 't' || memcmp(x + i, key, k) != 0)
            continue;
        const uint8_t *p = x + i + k;
        size_t left = len - i - k;
        if (left >= 3 && p[0] == '=' && p[1] == '"' && p[2] >= '0' && p[2] <= '9')
            return p[2] - '0';
        if (left >= 2 && p[0] == '>' && p[1] >= '0' && p[1] <= '9')
            return p[1] - '0';
    }
    return 0;
}

/* Orientation sources of one file, combined as Pillow does: an EXIF
 * orientation tag wins, even one meaning no rotation (then reported);
 * otherwise XMP's; a malformed EXIF block is reported (its orientation
 * ignored). */
typedef struct orient_src {
    int exif;               /* exif_orientation() of the first EXIF block; 0 none */
    int have_exif;
    int xmp;                /* xmp_orientation() of the first XMP packet */
    int have_xmp;
} orient_src;

static void
orient_finish(const orient_src *o, an_info *info, an_error *err)
{
    if (o->have_exif && o->exif == -2)
        probe_warn(err, "invalid EXIF orientation: no rotation");
    else if (o->have_exif && o->exif < 0)
        probe_warn(err, "malformed EXIF block: orientation ignored");
    if (o->have_exif && o->exif > 0)
        info->orientation = o->exif;
    else if (o->have_exif && o->exif == -2)
        info->orientation = 1; /* the tag shadows XMP's, as in Pillow's getexif() */
    else if (o->have_xmp && o->xmp >= 1 && o->xmp <= 8)
        info->orientation = o->xmp;
}

/* ---- JPEG ---------------------------------------------------------------- */

/* The walk follows libjpeg's own marker reader (jdmarker.c), so that a file
 * libjpeg decodes is never refused here: bytes between segments are skipped up
 * to the next marker (libjpeg's "extraneous bytes before marker", reported as
 * a warning), and an APPn or COM segment whose length field is below 2 skips
 * nothing, as libjpeg's skip_variable does.  Only the frame header (SOF) must
 * be found and valid before the first scan. */
static an_status
probe_jpeg(const uint8_t *d, size_t len, an_info *info, an_error *err)
{
    size_t pos = 2;
    int have_sof = 0;
    orient_src o = {0, 0, 0, 0};
    static const char xmp_id[] = "http://ns.adobe.com/xap/1.0/";

    info->adobe_transform = -1;
    for (;;) {
        /* next_marker(): discard up to 0xFF, skip fill bytes, FF00 is data. */
        size_t junk = 0;
        int m;
        for (;;) {
            while (pos < len && d[pos] != 0xFF) {
                pos++;
                junk++;
            }
            while (pos < len && d[pos] == 0xFF)
                pos++;
            if (pos >= len)
                goto truncated;
            m = d[pos++];
            if (m != 0)
                break;
            junk += 2;
        }
        if (junk > 0)
            probe_warn(err, "Corrupt JPEG data: %zu extraneous bytes before marker 0x%02x", junk, m);
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7))
            continue; /* markers without a length */
        if (m == 0xD9 || m == 0xDA) {
            if (have_sof)
                break;
            an_error_set(err, AN_ERR_HEADER, "no frame header (SOF) before %s",
                         m == 0xD9 ? "EOI" : "SOS");
            return err->status;
        }
        if (len - pos < 2)
            goto truncated;
        size_t seglen = be16(d + pos);
        if (seglen < 2) {
            if ((m >= 0xE0 && m <= 0xEF) || m == 0xFE) {
                probe_warn(err, "JPEG %s segment has an invalid length %zu",
                           m == 0xFE ? "COM" : "APPn", seglen);
                pos += 2;
                continue;
            }
            an_error_set(err, AN_ERR_HEADER, "JPEG segment length %zu < 2", seglen);
            return err->status;
        }
        const uint8_t *seg = d + pos + 2;
        size_t n = seglen - 2;
        int complete = (len - pos >= seglen);
        size_t avail = complete ? n : len - pos - 2; /* segment bytes present */
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
        } else if (m == 0xE1 && !o.have_exif && avail >= 6 && memcmp(seg, "Exif\0\0", 6) == 0) {
            /* A segment cut short by the end of the file still tells what it holds. */
            o.have_exif = 1;
            o.exif = exif_orientation(seg, avail); /* from its "Exif\0\0" */
        } else if (m == 0xE1 && !o.have_xmp && complete && n >= sizeof(xmp_id) &&
                   memcmp(seg, xmp_id, sizeof(xmp_id)) == 0) {
            o.have_xmp = 1;
            o.xmp = xmp_orientation(seg + sizeof(xmp_id), n - sizeof(xmp_id));
        } else if (m == 0xEE && complete && n >= 12 && memcmp(seg, "Adobe", 5) == 0) {
            info->adobe_transform = seg[11];
        }
        if (!complete)
            goto truncated;
        pos += seglen;
    }
    orient_finish(&o, info, err);
    return AN_OK;
truncated:
    if (have_sof) {
        orient_finish(&o, info, err);
        return AN_OK; /* the frame is known; the decoder will report the truncation */
    }
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

    /* Walk the chunk headers for tRNS (before IDAT) and the orientation
     * sources: eXIf and an XMP packet (iTXt/tEXt "XML:com.adobe.xmp"), which
     * may follow the image data, as Pillow finds them.  Payloads are skipped,
     * so this costs one step per chunk; damage stops the walk quietly (the
     * decoder reports it properly). */
    static const char xmp_key[] = "XML:com.adobe.xmp"; /* with its NUL */
    orient_src o = {0, 0, 0, 0};
    int seen_idat = 0;
    size_t pos = 8 + 8 + 13 + 4;
    while (len - pos >= 8) {
        uint32_t clen = be32(d + pos);
        const uint8_t *type = d + pos + 4;
        if (memcmp(type, "IEND", 4) == 0)
            break;
        if (clen > 0x7FFFFFFFu || clen > len - pos - 8)
            break;
        const uint8_t *c = d + pos + 8;
        if (memcmp(type, "IDAT", 4) == 0) {
            seen_idat = 1;
        } else if (memcmp(type, "tRNS", 4) == 0 && ct != 4 && ct != 6 && !seen_idat) {
            info->png_has_trns = 1;
            info->channels = (ct == 0) ? 2 : 4;
        } else if (memcmp(type, "eXIf", 4) == 0 && !o.have_exif) {
            o.have_exif = 1;
            o.exif = exif_orientation(c, clen);
        } else if (!o.have_xmp && clen > sizeof(xmp_key) && memcmp(c, xmp_key, sizeof(xmp_key)) == 0) {
            /* tEXt: key NUL text; iTXt: key NUL flag method lang NUL tkey NUL
             * text (compressed iTXt is left alone). */
            size_t t = sizeof(xmp_key), end = clen;
            if (memcmp(type, "iTXt", 4) == 0) {
                if (clen < t + 2 || c[t] != 0)
                    t = end;
                else
                    t += 2;
                for (int nul = 0; nul < 2 && t < end; t++)
                    nul += c[t] == 0;
            } else if (memcmp(type, "tEXt", 4) != 0) {
                t = end;
            }
            if (t < end) {
                o.have_xmp = 1;
                o.xmp = xmp_orientation(c + t, end - t);
            }
        }
        if (len - pos - 8 - clen < 4)
            break;
        pos += 8 + (size_t)clen + 4;
    }
    orient_finish(&o, info, err);
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
