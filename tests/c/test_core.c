/*
 * test_core.c - unit tests of the Python-free core (csrc/core), built with
 * -fsanitize=address,undefined so every out-of-bounds read, overflow and leak
 * (LeakSanitizer runs at exit) fails the run.
 *
 * Test images are encoded here by libjpeg/libpng (testimg.h), so the suite
 * needs nothing beyond gcc and the -dev packages.  Inputs handed to the core
 * are always copied into a malloc block of exactly their length, so ASan
 * catches a read one byte past the end.
 *
 * Fault injection: a counting allocator fails the Nth allocation, for every N
 * until the decode succeeds; each failure must come back as AN_ERR_NOMEM (or
 * the allocator's fail status) with every core-owned block freed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "an_core.h"
#include "check.h"
#include "testimg.h"

/* An exact-size heap copy, so reading past len trips ASan. */
static uint8_t *
dup_exact(const void *src, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    if (p == NULL)
        abort();
    if (len)
        memcpy(p, src, len);
    return p;
}

static an_status
probe_bytes(const void *data, size_t len, an_info *info, an_error *err)
{
    uint8_t *copy = dup_exact(data, len);
    an_status st = an_probe(copy, len, info, err);
    free(copy);
    return st;
}

static an_status
decode_bytes(const void *data, size_t len, const an_decode_opts *opts, uint8_t **out,
             an_shape *shape, an_error *err)
{
    uint8_t *copy = dup_exact(data, len);
    an_status st = an_decode(copy, len, opts, out, shape, err);
    free(copy);
    return st;
}

static int
is_known_failure(an_status st)
{
    return st == AN_ERR_TRUNCATED || st == AN_ERR_CORRUPT || st == AN_ERR_HEADER ||
           st == AN_ERR_UNKNOWN_FORMAT || st == AN_ERR_EMPTY || st == AN_ERR_UNSUPPORTED;
}

/* ---- image builders ---------------------------------------------------- */

static uint8_t *
make_jpeg(uint32_t w, uint32_t h, int comp, int progressive, int orientation, size_t *len)
{
    static uint8_t pix[256 * 256 * 4];
    uint8_t app1[6 + 32] = {'E', 'x', 'i', 'f', 0, 0};
    ti_jpeg_params p;
    ti_jpeg_defaults(&p);
    p.components = comp;
    p.progressive = progressive;
    p.quality = 95;
    p.h_samp = p.v_samp = 1;
    if (orientation) {
        p.app1 = app1;
        p.app1_len = 6 + ti_exif_tiff(app1 + 6, orientation);
    }
    ti_pattern(pix, w, h, comp, 1, 7);
    return ti_jpeg(pix, w, h, &p, len);
}

static uint8_t *
make_png(const uint8_t *pix, uint32_t w, uint32_t h, int ct, int bd, int interlace,
         int orientation, size_t *len)
{
    uint8_t tiff[32];
    ti_png_params p;
    ti_png_defaults(&p);
    p.color_type = ct;
    p.bit_depth = bd;
    p.interlace = interlace;
    if (orientation) {
        p.exif = tiff;
        p.exif_len = ti_exif_tiff(tiff, orientation);
    }
    return ti_png(pix, w, h, &p, len);
}

/* A hand-made JPEG header: SOI, SOF (marker sof) of w x h x comps, precision. */
static size_t
jpeg_header(uint8_t *b, int sof, unsigned w, unsigned h, int comps, int precision)
{
    size_t n = 0;
    b[n++] = 0xFF; b[n++] = 0xD8;
    b[n++] = 0xFF; b[n++] = (uint8_t)sof;
    unsigned seglen = 8 + 3u * (unsigned)comps;
    b[n++] = (uint8_t)(seglen >> 8); b[n++] = (uint8_t)seglen;
    b[n++] = (uint8_t)precision;
    b[n++] = (uint8_t)(h >> 8); b[n++] = (uint8_t)h;
    b[n++] = (uint8_t)(w >> 8); b[n++] = (uint8_t)w;
    b[n++] = (uint8_t)comps;
    for (int c = 0; c < comps; c++) {
        b[n++] = (uint8_t)(c + 1); b[n++] = 0x11; b[n++] = 0;
    }
    b[n++] = 0xFF; b[n++] = 0xD9;
    return n;
}

static uint32_t
crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static void
put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* Signature + IHDR (valid CRC) + IEND: a header with no pixels. */
static size_t
png_header(uint8_t *b, uint32_t w, uint32_t h, int bd, int ct, int il)
{
    memcpy(b, "\x89PNG\r\n\x1a\n", 8);
    put32(b + 8, 13);
    memcpy(b + 12, "IHDR", 4);
    put32(b + 16, w);
    put32(b + 20, h);
    b[24] = (uint8_t)bd; b[25] = (uint8_t)ct; b[26] = 0; b[27] = 0; b[28] = (uint8_t)il;
    put32(b + 29, crc32_png(b + 12, 17));
    put32(b + 33, 0);
    memcpy(b + 37, "IEND", 4);
    put32(b + 41, crc32_png(b + 37, 4));
    return 45;
}

/* ---- tests ------------------------------------------------------------- */

static void
test_sniff(void)
{
    current = "sniff";
    static const struct { const char *magic; size_t len; an_format fmt; } cases[] = {
        {"\xFF\xD8\xFF\xE0", 4, AN_FMT_JPEG},
        {"\x89PNG\r\n\x1a\n", 8, AN_FMT_PNG},
        {"GIF89a....", 10, AN_FMT_GIF},
        {"GIF87a....", 10, AN_FMT_GIF},
        {"RIFF\0\0\0\0WEBPVP8 ", 16, AN_FMT_WEBP},
        {"II*\0\x08\0\0\0", 8, AN_FMT_TIFF},
        {"MM\0*\0\0\0\x08", 8, AN_FMT_TIFF},
        {"BM\0\0\0\0\0\0\0\0\0\0\0\0", 14, AN_FMT_BMP},
        {"\0\0\0\x18" "ftypheic\0\0\0\0", 16, AN_FMT_HEIC},
        {"\0\0\0\x18" "ftypavif\0\0\0\0", 16, AN_FMT_AVIF},
        {"%PDF-1.7", 8, AN_FMT_PDF},
        {"hello, world", 12, AN_FMT_UNKNOWN},
        {"\xFF\xD8", 2, AN_FMT_UNKNOWN},
        {"\x89PNG\r\n\x1a", 7, AN_FMT_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t *d = dup_exact(cases[i].magic, cases[i].len);
        CHECK(an_sniff(d, cases[i].len) == cases[i].fmt);
        /* every prefix must be safe to sniff */
        for (size_t k = 0; k <= cases[i].len; k++) {
            uint8_t *pre = dup_exact(cases[i].magic, k);
            (void)an_sniff(pre, k);
            free(pre);
        }
        free(d);
    }
    CHECK(strcmp(an_format_name(AN_FMT_GIF), "gif") == 0);
    CHECK(strcmp(an_format_name((an_format)999), "unknown") == 0);
}

static void
test_probe_refusals(void)
{
    an_info info;
    an_error err;
    uint8_t b[128];
    size_t n;

    current = "probe empty";
    CHECK_ST(an_probe(NULL, 0, &info, &err), AN_ERR_EMPTY);

    current = "probe tiff"; /* sniffed, named, not decoded (GIF is, since the codecs) */
    CHECK_ST(probe_bytes("II*\0\x08\0\0\0\0\0\0\0\0", 13, &info, &err), AN_ERR_UNKNOWN_FORMAT);
    CHECK(err.format == AN_FMT_TIFF);
    CHECK(strstr(err.detail, "tiff") != NULL);

    current = "probe text";
    CHECK_ST(probe_bytes("just some text\n", 15, &info, &err), AN_ERR_UNKNOWN_FORMAT);
    CHECK(err.format == AN_FMT_UNKNOWN);

    current = "probe jpeg 65535x65535";
    n = jpeg_header(b, 0xC0, 65535, 65535, 3, 8);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_OK);
    CHECK(info.width == 65535 && info.height == 65535 && info.channels == 3);
    an_decode_opts opts;
    an_decode_opts_init(&opts);
    uint8_t *out = (uint8_t *)b;
    an_shape shape;
    CHECK_ST(decode_bytes(b, n, &opts, &out, &shape, &err), AN_ERR_LIMIT_WIDTH);
    CHECK(out == NULL && err.actual == 65535 && err.limit == 32768);
    opts.limits.max_width = opts.limits.max_height = 0;
    CHECK_ST(decode_bytes(b, n, &opts, &out, &shape, &err), AN_ERR_LIMIT_PIXELS);
    CHECK(err.actual == 65535ull * 65535ull);

    current = "probe jpeg zero size";
    n = jpeg_header(b, 0xC0, 0, 10, 3, 8);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_ERR_HEADER);
    n = jpeg_header(b, 0xC2, 10, 0, 1, 8);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_ERR_HEADER);

    current = "probe jpeg 12-bit / lossless / hierarchical / 2 comps";
    n = jpeg_header(b, 0xC1, 10, 10, 3, 12);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_ERR_UNSUPPORTED);
    n = jpeg_header(b, 0xC3, 10, 10, 3, 8);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_ERR_UNSUPPORTED);
    n = jpeg_header(b, 0xC5, 10, 10, 3, 8);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_ERR_UNSUPPORTED);
    n = jpeg_header(b, 0xC0, 10, 10, 2, 8);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_ERR_UNSUPPORTED);

    current = "probe jpeg bad segment length";
    /* APPn/COM with a length below 2: libjpeg skips nothing and looks for the
     * next marker (here: none before the end). */
    memcpy(b, "\xFF\xD8\xFF\xE0\x00\x01", 6);
    CHECK_ST(probe_bytes(b, 6, &info, &err), AN_ERR_TRUNCATED);
    memcpy(b, "\xFF\xD8\xFF\xDB\x00\x01", 6); /* DQT: an error as in libjpeg */
    CHECK_ST(probe_bytes(b, 6, &info, &err), AN_ERR_HEADER);
    memcpy(b, "\xFF\xD8\xFF\xE0\xFF\xFF\x00", 7); /* claims 64 KB, has 1 byte */
    CHECK_ST(probe_bytes(b, 7, &info, &err), AN_ERR_TRUNCATED);

    current = "probe jpeg truncated SOF at every length";
    n = jpeg_header(b, 0xC0, 300, 200, 3, 8);
    for (size_t k = 1; k < n - 2; k++) {
        an_status st = probe_bytes(b, k, &info, &err);
        CHECK(st == AN_ERR_TRUNCATED || st == AN_ERR_UNKNOWN_FORMAT);
    }
    CHECK_ST(probe_bytes(b, n - 2, &info, &err), AN_OK);
    CHECK(info.width == 300 && info.height == 200 && !info.progressive);

    current = "probe png 100000x100000";
    n = png_header(b, 100000, 100000, 8, 2, 0);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_OK);
    CHECK(info.width == 100000 && info.height == 100000 && info.channels == 3);
    an_decode_opts_init(&opts);
    CHECK_ST(decode_bytes(b, n, &opts, &out, &shape, &err), AN_ERR_LIMIT_WIDTH);
    opts.limits.max_width = opts.limits.max_height = 0;
    CHECK_ST(decode_bytes(b, n, &opts, &out, &shape, &err), AN_ERR_LIMIT_PIXELS);
    CHECK(out == NULL);

    current = "probe png bad IHDR";
    n = png_header(b, 0, 5, 8, 2, 0);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_ERR_HEADER);
    n = png_header(b, 0x80000000u, 5, 8, 2, 0);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_ERR_HEADER);
    n = png_header(b, 5, 5, 16, 3, 0);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_ERR_HEADER);
    n = png_header(b, 5, 5, 8, 5, 0);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_ERR_HEADER);
    n = png_header(b, 5, 5, 8, 2, 2);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_ERR_HEADER);
    n = png_header(b, 5, 5, 8, 2, 0);
    for (size_t k = 8; k < 33; k++)
        CHECK_ST(probe_bytes(b, k, &info, &err), AN_ERR_TRUNCATED);
    CHECK_ST(probe_bytes(b, n, &info, &err), AN_OK);
    /* a pixel-less PNG is a decode error, not a crash */
    an_decode_opts_init(&opts);
    an_status st = decode_bytes(b, n, &opts, &out, &shape, &err);
    CHECK(st == AN_ERR_CORRUPT || st == AN_ERR_TRUNCATED);
}

static void
test_exif(void)
{
    current = "exif";
    uint8_t t[64];
    size_t n = ti_exif_tiff(t, 6);
    uint8_t *d = dup_exact(t, n);
    CHECK(an_exif_orientation(d, n) == 6);
    free(d);
    /* every truncation: in range, never reads past the end */
    for (size_t k = 0; k < n; k++) {
        d = dup_exact(t, k);
        int o = an_exif_orientation(d, k);
        CHECK(o >= 1 && o <= 8);
        CHECK(k >= 22 || o == 1); /* the value is not present before byte 20 */
        free(d);
    }
    /* little-endian, LONG type */
    static const uint8_t le[26] = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 4, 0,
                                   1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0};
    d = dup_exact(le, sizeof(le));
    CHECK(an_exif_orientation(d, sizeof(le)) == 8);
    free(d);
    /* out-of-range value, wrong type, bad magic, bad byte order, IFD offsets */
    memcpy(t, le, sizeof(le));
    t[18] = 9;
    CHECK(an_exif_orientation(t, sizeof(le)) == 1);
    t[18] = 0;
    CHECK(an_exif_orientation(t, sizeof(le)) == 1);
    memcpy(t, le, sizeof(le));
    t[12] = 7; /* UNDEFINED */
    CHECK(an_exif_orientation(t, sizeof(le)) == 1);
    memcpy(t, le, sizeof(le));
    t[2] = 43;
    CHECK(an_exif_orientation(t, sizeof(le)) == 1);
    memcpy(t, le, sizeof(le));
    t[0] = 'X';
    CHECK(an_exif_orientation(t, sizeof(le)) == 1);
    static const uint32_t offsets[] = {0, 4, 7, 24, 25, 26, 27, 0xFFFFFFF0u, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        memcpy(t, le, sizeof(le));
        t[4] = (uint8_t)offsets[i]; t[5] = (uint8_t)(offsets[i] >> 8);
        t[6] = (uint8_t)(offsets[i] >> 16); t[7] = (uint8_t)(offsets[i] >> 24);
        d = dup_exact(t, sizeof(le));
        int o = an_exif_orientation(d, sizeof(le));
        CHECK(o >= 1 && o <= 8);
        free(d);
    }
    /* an entry count far larger than the buffer */
    memcpy(t, le, sizeof(le));
    t[8] = 0xFF; t[9] = 0xFF;
    t[10] = 0; t[11] = 0; /* first entry is not Orientation: walk must stop at the end */
    d = dup_exact(t, sizeof(le));
    CHECK(an_exif_orientation(d, sizeof(le)) == 1);
    free(d);
}

/* Decodes data with opts; returns the pixels (caller frees) or NULL. */
static uint8_t *
decode_ok(const uint8_t *data, size_t len, const an_decode_opts *opts, an_shape *shape)
{
    uint8_t *out = NULL;
    an_error err;
    an_status st = decode_bytes(data, len, opts, &out, shape, &err);
    if (st != AN_OK) {
        fprintf(stderr, "  [%s] decode failed: %s (%s)\n", current, an_error_lookup(st)->code,
                err.detail);
        return NULL;
    }
    return out;
}

static void
test_png_decode(void)
{
    static uint8_t pix[40 * 30 * 8];
    an_decode_opts opts;
    an_shape shape;
    size_t len;
    const uint32_t w = 37, h = 23;

    /* RGB 8-bit, plain and interlaced: exact round trip, every mode. */
    ti_pattern(pix, w, h, 3, 1, 3);
    for (int il = 0; il < 2; il++) {
        current = il ? "png rgb8 interlaced" : "png rgb8";
        uint8_t *png = make_png(pix, w, h, PNG_COLOR_TYPE_RGB, 8, il, 0, &len);
        an_decode_opts_init(&opts);
        uint8_t *o = decode_ok(png, len, &opts, &shape);
        CHECK(o != NULL && shape.width == w && shape.height == h && shape.channels == 3);
        CHECK(o != NULL && memcmp(o, pix, (size_t)w * h * 3) == 0);
        free(o);
        opts.mode = AN_MODE_BGR;
        o = decode_ok(png, len, &opts, &shape);
        CHECK(o != NULL && o[0] == pix[2] && o[2] == pix[0] && o[3 * 5 + 1] == pix[3 * 5 + 1]);
        free(o);
        opts.mode = AN_MODE_RGBA;
        o = decode_ok(png, len, &opts, &shape);
        CHECK(o != NULL && shape.channels == 4 && o[3] == 255 && o[4] == pix[3]);
        free(o);
        opts.mode = AN_MODE_L;
        o = decode_ok(png, len, &opts, &shape);
        unsigned l0 = (pix[0] * 19595u + pix[1] * 38470u + pix[2] * 7471u + 0x8000u) >> 16;
        CHECK(o != NULL && shape.channels == 1 && o[0] == l0);
        free(o);
        opts.mode = AN_MODE_LA;
        o = decode_ok(png, len, &opts, &shape);
        CHECK(o != NULL && shape.channels == 2 && o[0] == l0 && o[1] == 255);
        free(o);
        /* scaling: box-reduced sizes are ceil(w / d) */
        for (int d = 2; d <= 8; d *= 2) {
            an_decode_opts_init(&opts);
            opts.scale_denom = d;
            o = decode_ok(png, len, &opts, &shape);
            CHECK(o != NULL && shape.width == (w + (uint32_t)d - 1) / (uint32_t)d &&
                  shape.height == (h + (uint32_t)d - 1) / (uint32_t)d);
            free(o);
        }
        free(png);
    }

    /* 16-bit gray: high byte by default, native-endian samples with depth16. */
    current = "png gray16";
    ti_pattern(pix, w, h, 1, 2, 5);
    uint8_t *png = make_png(pix, w, h, PNG_COLOR_TYPE_GRAY, 16, 0, 0, &len);
    an_decode_opts_init(&opts);
    opts.mode = AN_MODE_L;
    uint8_t *o = decode_ok(png, len, &opts, &shape);
    CHECK(o != NULL && o[0] == pix[0] && o[7] == pix[14]);
    free(o);
    opts.depth16 = 1;
    o = decode_ok(png, len, &opts, &shape);
    uint16_t s0 = o ? ((const uint16_t *)(const void *)o)[3] : 0;
    CHECK(o != NULL && shape.bytes_per_sample == 2 && s0 == (uint16_t)(pix[6] << 8 | pix[7]));
    free(o);
    free(png);

    /* Palette 4-bit: expansion through PLTE. */
    current = "png palette4";
    for (size_t i = 0; i < (size_t)w * h; i++)
        pix[i] = (uint8_t)(i % 16);
    png = make_png(pix, w, h, PNG_COLOR_TYPE_PALETTE, 4, 1, 0, &len);
    an_decode_opts_init(&opts);
    o = decode_ok(png, len, &opts, &shape);
    CHECK(o != NULL && o[0] == 0 && o[1] == 255 && o[3 * 5] == 5 * 37 && o[3 * 5 + 1] == 250);
    free(o);
    free(png);

    /* EXIF orientation 6 (90 cw): the output is transposed and rotated. */
    current = "png exif orientation 6";
    ti_pattern(pix, w, h, 3, 1, 9);
    png = make_png(pix, w, h, PNG_COLOR_TYPE_RGB, 8, 0, 6, &len);
    an_info info;
    an_error err;
    CHECK_ST(probe_bytes(png, len, &info, &err), AN_OK);
    CHECK(info.orientation == 6);
    an_decode_opts_init(&opts);
    o = decode_ok(png, len, &opts, &shape);
    CHECK(o != NULL && shape.width == h && shape.height == w);
    /* source (x=0, y=0) goes to the top-right corner */
    CHECK(o != NULL && memcmp(o + (size_t)(h - 1) * 3, pix, 3) == 0);
    free(o);
    opts.orient = 0;
    o = decode_ok(png, len, &opts, &shape);
    CHECK(o != NULL && shape.width == w && memcmp(o, pix, (size_t)w * h * 3) == 0);
    free(o);
    free(png);
}

static int
close_enough(const uint8_t *a, const uint8_t *b, size_t n, int tol)
{
    long long sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += abs((int)a[i] - (int)b[i]);
    return sum <= (long long)tol * (long long)n;
}

static void
test_jpeg_decode(void)
{
    static uint8_t pix[64 * 64 * 4];
    an_decode_opts opts;
    an_shape shape;
    size_t len;
    const uint32_t w = 45, h = 29;

    for (int prog = 0; prog < 2; prog++) {
        current = prog ? "jpeg progressive" : "jpeg baseline";
        uint8_t *jpg = make_jpeg(w, h, 3, prog, 0, &len);
        ti_pattern(pix, w, h, 3, 1, 7);
        an_decode_opts_init(&opts);
        uint8_t *o = decode_ok(jpg, len, &opts, &shape);
        CHECK(o != NULL && shape.width == w && shape.height == h && shape.channels == 3);
        CHECK(o != NULL && close_enough(o, pix, (size_t)w * h * 3, 6));
        free(o);
        for (int d = 2; d <= 8; d *= 2) {
            opts.scale_denom = d;
            o = decode_ok(jpg, len, &opts, &shape);
            CHECK(o != NULL && shape.width == (w + (uint32_t)d - 1) / (uint32_t)d &&
                  shape.height == (h + (uint32_t)d - 1) / (uint32_t)d);
            free(o);
        }
        /* max_size picks the smallest scale that still covers the box */
        an_decode_opts_init(&opts);
        opts.scale_denom = 0;
        opts.max_w = 12;
        opts.max_h = 8;
        o = decode_ok(jpg, len, &opts, &shape);
        CHECK(o != NULL && shape.width == 12 && shape.height == 8); /* denom 4 */
        free(o);
        free(jpg);
    }

    current = "jpeg gray all modes";
    uint8_t *jpg = make_jpeg(w, h, 1, 0, 0, &len);
    for (int m = AN_MODE_L; m <= AN_MODE_BGR; m++) {
        an_decode_opts_init(&opts);
        opts.mode = (an_mode)m;
        uint8_t *o = decode_ok(jpg, len, &opts, &shape);
        CHECK(o != NULL && shape.channels == an_mode_channels((an_mode)m));
        free(o);
    }
    free(jpg);

    current = "jpeg cmyk";
    jpg = make_jpeg(w, h, 4, 0, 0, &len);
    an_decode_opts_init(&opts);
    uint8_t *o = decode_ok(jpg, len, &opts, &shape);
    CHECK(o != NULL && shape.channels == 3);
    free(o);
    free(jpg);

    current = "jpeg exif orientation";
    uint8_t *ref = make_jpeg(w, h, 3, 0, 0, &len);
    an_decode_opts_init(&opts);
    uint8_t *plain = decode_ok(ref, len, &opts, &shape);
    free(ref);
    for (int orient = 2; orient <= 8; orient++) {
        jpg = make_jpeg(w, h, 3, 0, orient, &len);
        an_decode_opts_init(&opts);
        o = decode_ok(jpg, len, &opts, &shape);
        int swap = orient >= 5;
        CHECK(o != NULL && shape.width == (swap ? h : w) && shape.height == (swap ? w : h));
        /* the stored pixel (0, 0) ends up in the right corner */
        size_t corner = 0;
        switch (orient) {
        case 2: corner = (size_t)(w - 1); break;
        case 3: corner = (size_t)h * w - 1; break;
        case 4: corner = (size_t)(h - 1) * w; break;
        case 5: corner = 0; break;
        case 6: corner = (size_t)(h - 1); break;
        case 7: corner = (size_t)w * h - 1; break;
        case 8: corner = (size_t)(w - 1) * h; break;
        }
        CHECK(o != NULL && plain != NULL && memcmp(o + corner * 3, plain, 3) == 0);
        free(o);
        free(jpg);
    }
    free(plain);
}

static void
test_limits_and_args(void)
{
    an_decode_opts opts;
    an_shape shape;
    an_error err;
    uint8_t *out;
    size_t len;
    uint8_t *jpg = make_jpeg(40, 30, 3, 1, 0, &len);

    current = "limits";
    an_decode_opts_init(&opts);
    opts.limits.max_pixels = 40 * 30 - 1;
    CHECK_ST(decode_bytes(jpg, len, &opts, &out, &shape, &err), AN_ERR_LIMIT_PIXELS);
    an_decode_opts_init(&opts);
    opts.limits.max_width = 39;
    CHECK_ST(decode_bytes(jpg, len, &opts, &out, &shape, &err), AN_ERR_LIMIT_WIDTH);
    an_decode_opts_init(&opts);
    opts.limits.max_height = 29;
    CHECK_ST(decode_bytes(jpg, len, &opts, &out, &shape, &err), AN_ERR_LIMIT_HEIGHT);
    an_decode_opts_init(&opts);
    opts.limits.max_bytes = len - 1;
    CHECK_ST(decode_bytes(jpg, len, &opts, &out, &shape, &err), AN_ERR_LIMIT_BYTES);
    an_decode_opts_init(&opts);
    opts.limits.max_jpeg_scans = 2; /* jpeg_simple_progression writes 10 scans */
    CHECK_ST(decode_bytes(jpg, len, &opts, &out, &shape, &err), AN_ERR_LIMIT_SCANS);
    CHECK(out == NULL && err.limit == 2);
    opts.strict = 0;
    CHECK_ST(decode_bytes(jpg, len, &opts, &out, &shape, &err), AN_ERR_LIMIT_SCANS);
    opts.limits.max_jpeg_scans = 10;
    CHECK_ST(decode_bytes(jpg, len, &opts, &out, &shape, &err), AN_OK);
    free(out);

    current = "invalid args";
    an_decode_opts_init(&opts);
    opts.mode = (an_mode)0;
    CHECK_ST(decode_bytes(jpg, len, &opts, &out, &shape, &err), AN_ERR_INVALID_ARG);
    opts.mode = (an_mode)6;
    CHECK_ST(decode_bytes(jpg, len, &opts, &out, &shape, &err), AN_ERR_INVALID_ARG);
    an_decode_opts_init(&opts);
    opts.scale_denom = 3;
    CHECK_ST(decode_bytes(jpg, len, &opts, &out, &shape, &err), AN_ERR_INVALID_ARG);
    an_decode_opts_init(&opts);
    opts.depth16 = 1;
    CHECK_ST(decode_bytes(jpg, len, &opts, &out, &shape, &err), AN_ERR_INVALID_ARG);
    an_decode_opts_init(&opts);
    opts.expect = AN_FMT_PNG;
    CHECK_ST(decode_bytes(jpg, len, &opts, &out, &shape, &err), AN_ERR_WRONG_FORMAT);
    free(jpg);

    current = "error table";
    for (int s = 0; s < AN_STATUS_COUNT; s++) {
        const an_error_entry *e = an_error_lookup((an_status)s);
        CHECK(e->status == (an_status)s && e->code[0] && e->exc_class[0] && e->message[0]);
    }
    CHECK(an_error_lookup((an_status)12345)->status == AN_ERR_CORRUPT);
}

/* Every prefix of an image, strict and tolerant: a known status or a full
 * image; never a sanitizer report. */
static void
truncate_all(const char *name, const uint8_t *data, size_t len, int min_tolerant_ok)
{
    current = name;
    int tolerant_ok = 0;
    for (size_t k = 0; k < len; k++)
        for (int strict = 0; strict < 2; strict++) {
            an_decode_opts opts;
            an_decode_opts_init(&opts);
            opts.strict = strict;
            an_shape shape;
            an_error err;
            uint8_t *out = NULL;
            an_status st = decode_bytes(data, k, &opts, &out, &shape, &err);
            if (st == AN_OK) {
                CHECK(!strict || k + 2 >= len); /* strict accepts no truncation */
                CHECK(out != NULL && shape.channels == 3);
                tolerant_ok += !strict;
                free(out);
            } else {
                CHECK(is_known_failure(st) && out == NULL);
            }
        }
    CHECK(tolerant_ok >= min_tolerant_ok);
}

static void
test_truncation(void)
{
    size_t len;
    uint8_t *jpg = make_jpeg(33, 24, 3, 0, 0, &len);
    truncate_all("truncate jpeg baseline", jpg, len, (int)len / 4);
    free(jpg);
    jpg = make_jpeg(33, 24, 3, 1, 0, &len);
    truncate_all("truncate jpeg progressive", jpg, len, (int)len / 4);
    free(jpg);
    static uint8_t pix[33 * 24 * 3];
    ti_pattern(pix, 33, 24, 3, 1, 1);
    uint8_t *png = make_png(pix, 33, 24, PNG_COLOR_TYPE_RGB, 8, 0, 0, &len);
    truncate_all("truncate png", png, len, 0);
    free(png);
    png = make_png(pix, 33, 24, PNG_COLOR_TYPE_RGB, 8, 1, 0, &len);
    truncate_all("truncate png interlaced", png, len, 0);
    free(png);
}

/* ---- fault injection ---- */

static void
fault_inject(const char *name, const uint8_t *data, size_t len, an_mode mode, int scale,
             int strict)
{
    current = name;
    fault_ctx f;
    an_allocator a = {fault_malloc, fault_free, &f, AN_ERR_MEMORY_LIMIT, NULL, NULL};
    an_decode_opts opts;
    an_decode_opts_init(&opts);
    opts.mode = mode;
    opts.scale_denom = scale;
    opts.strict = strict;
    an_shape ref_shape, shape;
    uint8_t *ref = decode_ok(data, len, &opts, &ref_shape);
    CHECK(ref != NULL);
    if (ref == NULL)
        return;
    opts.alloc = &a;
    int failures = 0;
    for (long n = 1; n < 10000; n++) {
        memset(&f, 0, sizeof(f));
        f.fail_at = n;
        an_error err;
        uint8_t *out = NULL;
        an_status st = decode_bytes(data, len, &opts, &out, &shape, &err);
        if (st == AN_OK) {
            /* Either no Nth allocation happened (done), or libpng tolerated a
             * failed optional one (e.g. the eXIf copy): the pixels must be
             * exactly those of an unhindered decode either way. */
            CHECK(shape.nbytes == ref_shape.nbytes && memcmp(out, ref, shape.nbytes) == 0);
            an_free(&a, out);
            CHECK(f.live == 0);
            if (f.count < n)
                break;
            continue;
        }
        failures++;
        if (st != AN_ERR_MEMORY_LIMIT) { /* the allocator's fail_status */
            n_fail++;
            fprintf(stderr, "FAIL [%s]: allocation %ld failed -> %s (%s)\n", name, n,
                    an_error_lookup(st)->code, err.detail);
        } else {
            n_pass++;
        }
        CHECK(out == NULL);
        if (f.live != 0) {
            n_fail++;
            fprintf(stderr, "FAIL [%s]: allocation %ld failed -> %ld blocks leaked\n", name, n,
                    f.live);
        }
    }
    CHECK(failures > 0);
    free(ref);
}

static void
test_fault_injection(void)
{
    size_t len;
    static uint8_t pix[31 * 17 * 4];
    uint8_t *jpg = make_jpeg(31, 17, 3, 0, 0, &len);
    fault_inject("fault jpeg baseline", jpg, len, AN_MODE_RGB, 1, 1);
    fault_inject("fault jpeg baseline LA", jpg, len, AN_MODE_LA, 1, 1);
    free(jpg);
    jpg = make_jpeg(31, 17, 3, 1, 6, &len);
    fault_inject("fault jpeg progressive oriented", jpg, len, AN_MODE_RGB, 2, 1);
    free(jpg);
    jpg = make_jpeg(31, 17, 4, 0, 0, &len);
    fault_inject("fault jpeg cmyk", jpg, len, AN_MODE_RGBA, 1, 0);
    free(jpg);

    ti_pattern(pix, 31, 17, 3, 1, 2);
    uint8_t *png = make_png(pix, 31, 17, PNG_COLOR_TYPE_RGB, 8, 0, 0, &len);
    fault_inject("fault png rgb", png, len, AN_MODE_RGB, 1, 1);
    fault_inject("fault png rgb -> L", png, len, AN_MODE_L, 1, 1);
    fault_inject("fault png rgb tolerant", png, len, AN_MODE_RGBA, 1, 0);
    free(png);
    png = make_png(pix, 31, 17, PNG_COLOR_TYPE_GRAY, 16, 0, 0, &len);
    fault_inject("fault png gray16 tolerant", png, len, AN_MODE_RGB, 1, 0);
    free(png);
    png = make_png(pix, 31, 17, PNG_COLOR_TYPE_RGB, 8, 1, 3, &len);
    fault_inject("fault png interlaced oriented scaled", png, len, AN_MODE_RGB, 2, 1);
    fault_inject("fault png interlaced -> LA", png, len, AN_MODE_LA, 1, 0);
    free(png);
}

int
main(void)
{
    test_sniff();
    test_probe_refusals();
    test_exif();
    test_png_decode();
    test_jpeg_decode();
    test_limits_and_args();
    test_truncation();
    test_fault_injection();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
