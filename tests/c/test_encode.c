/*
 * test_encode.c - unit tests of csrc/core/image/encode.c under ASan+UBSan (LeakSanitizer
 * checks at exit that libjpeg's and libpng's own blocks were released too).
 *
 * Round trips go through the core's own decoder: PNG must come back exactly,
 * JPEG close (PSNR).  Strided views (pixel stride > pixel size, negative row
 * stride, reversed channels) must give the bytes of the packed image.
 *
 * Fault injection: a counting allocator fails the Nth allocation for every N
 * until the encode succeeds, with a 4 KiB first output chunk so that the
 * failures also land inside libjpeg's destination manager and libpng's write
 * callback (a longjmp out of the codec).  Each failure must report the
 * allocator's fail_status and leave no block of ours allocated once the caller
 * frees the output buffer.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "an_core.h"
#include "check.h"
#include "image/an_encode.h"

/* A w x h x ch image: smooth ramps (never wrapping) plus a little texture. */
static uint8_t *
make_pixels(uint32_t w, uint32_t h, int ch)
{
    uint8_t *p = malloc((size_t)w * h * (size_t)ch);
    if (p == NULL)
        abort();
    uint32_t seed = 12345;
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) {
                seed = seed * 1103515245u + 12345u;
                p[((size_t)y * w + x) * (size_t)ch + (size_t)c] =
                    (uint8_t)(x * 150 / w + y * 50 / h + (uint32_t)c * 15 + ((seed >> 16) & 7));
            }
    return p;
}

static an_image_view
packed_view(const uint8_t *p, uint32_t w, uint32_t h, int ch)
{
    an_image_view v;
    memset(&v, 0, sizeof(v));
    v.data = p;
    v.width = w;
    v.height = h;
    v.channels = ch;
    v.bytes_per_sample = 1;
    v.row_stride = (ptrdiff_t)w * ch;
    v.pixel_stride = ch;
    v.sample_stride = 1;
    return v;
}

/* Encodes to a malloc'd buffer (NULL on failure, err says why). */
static uint8_t *
encode(int jpeg, const an_image_view *v, const void *opts, const an_allocator *a, size_t first,
       size_t *len, an_error *err)
{
    an_outbuf out;
    an_outbuf_init(&out, a, first);
    memset(err, 0, sizeof(*err));
    an_status st = jpeg ? an_encode_jpeg(v, opts, &out, err) : an_encode_png(v, opts, &out, err);
    uint8_t *data = NULL;
    if (st == AN_OK) {
        data = malloc(out.size ? out.size : 1);
        if (data == NULL)
            abort();
        an_outbuf_copy(&out, data);
        *len = out.size;
    }
    an_outbuf_free(&out);
    CHECK(out.head == NULL && out.size == 0);
    return data;
}

static uint8_t *
decode(const uint8_t *data, size_t len, an_mode mode, an_shape *shape)
{
    an_decode_opts opts;
    an_decode_opts_init(&opts);
    opts.mode = mode;
    uint8_t *out = NULL;
    an_error err;
    memset(&err, 0, sizeof(err));
    an_status st = an_decode(data, len, &opts, &out, shape, &err);
    CHECK_ST(st, AN_OK);
    return st == AN_OK ? out : NULL;
}

static double
psnr(const uint8_t *a, const uint8_t *b, size_t n)
{
    double se = 0;
    for (size_t i = 0; i < n; i++)
        se += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return se == 0 ? 99.0 : 10.0 * log10(255.0 * 255.0 * (double)n / se);
}

static void
test_png_round_trip(void)
{
    static const an_mode modes[5] = {0, AN_MODE_L, AN_MODE_LA, AN_MODE_RGB, AN_MODE_RGBA};
    an_png_enc_opts opts;
    an_png_enc_opts_init(&opts);
    for (int ch = 1; ch <= 4; ch++) {
        current = "png round trip";
        uint8_t *px = make_pixels(67, 41, ch);
        an_image_view v = packed_view(px, 67, 41, ch);
        an_error err;
        size_t len = 0;
        uint8_t *png = encode(0, &v, &opts, NULL, 0, &len, &err);
        CHECK(png != NULL);
        an_shape shape;
        uint8_t *back = png ? decode(png, len, modes[ch], &shape) : NULL;
        CHECK(back != NULL && shape.nbytes == (size_t)67 * 41 * ch &&
              memcmp(back, px, shape.nbytes) == 0);
        free(back);
        free(png);
        free(px);
    }
}

static void
test_jpeg_round_trip(void)
{
    current = "jpeg round trip";
    uint8_t *px = make_pixels(120, 80, 3);
    an_image_view v = packed_view(px, 120, 80, 3);
    an_jpeg_enc_opts opts;
    an_jpeg_enc_opts_init(&opts);
    for (int sub = 0; sub < AN_SUB_COUNT; sub++) {
        opts.subsampling = (an_subsampling)sub;
        opts.progressive = sub & 1;
        opts.quality = 90;
        an_error err;
        size_t len = 0;
        uint8_t *jpg = encode(1, &v, &opts, NULL, 0, &len, &err);
        CHECK(jpg != NULL);
        an_shape shape;
        uint8_t *back = jpg ? decode(jpg, len, AN_MODE_RGB, &shape) : NULL;
        CHECK(back != NULL && shape.width == 120 && shape.height == 80);
        if (back)
            CHECK(psnr(back, px, shape.nbytes) > 30.0);
        free(back);
        free(jpg);
    }
    free(px);
}

/* Rows read in place, gathered, backwards or channel-reversed: same bytes. */
static void
test_strided_views(void)
{
    current = "strided views";
    const uint32_t w = 50, h = 30;
    uint8_t *px = make_pixels(w, h, 3);
    /* The same image stored with a gap pixel after each pixel, rows reversed,
     * channels reversed (BGR). */
    uint8_t *wide = calloc((size_t)w * h * 8, 1);
    if (wide == NULL)
        abort();
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                wide[((size_t)(h - 1 - y) * w + x) * 8 + (size_t)(2 - c)] =
                    px[((size_t)y * w + x) * 3 + (size_t)c];
    an_image_view packed = packed_view(px, w, h, 3);
    an_image_view odd;
    memset(&odd, 0, sizeof(odd));
    odd.data = wide + (size_t)(h - 1) * w * 8 + 2; /* row 0 is stored last; R at +2 */
    odd.width = w;
    odd.height = h;
    odd.channels = 3;
    odd.bytes_per_sample = 1;
    odd.row_stride = -(ptrdiff_t)w * 8;
    odd.pixel_stride = 8;
    odd.sample_stride = -1;

    an_jpeg_enc_opts jo;
    an_jpeg_enc_opts_init(&jo);
    an_png_enc_opts po;
    an_png_enc_opts_init(&po);
    for (int jpeg = 0; jpeg < 2; jpeg++) {
        an_error e1, e2;
        size_t l1 = 0, l2 = 0;
        const void *opts = jpeg ? (const void *)&jo : (const void *)&po;
        uint8_t *a = encode(jpeg, &packed, opts, NULL, 0, &l1, &e1);
        uint8_t *b = encode(jpeg, &odd, opts, NULL, 0, &l2, &e2);
        CHECK(a != NULL && b != NULL && l1 == l2 && memcmp(a, b, l1) == 0);
        free(a);
        free(b);
    }
    /* BGR in a packed buffer: libjpeg/libpng reorder, same bytes again. */
    uint8_t *bgr = malloc((size_t)w * h * 3);
    if (bgr == NULL)
        abort();
    for (size_t i = 0; i < (size_t)w * h; i++)
        for (int c = 0; c < 3; c++)
            bgr[i * 3 + (size_t)c] = px[i * 3 + (size_t)(2 - c)];
    an_image_view bv = packed_view(bgr, w, h, 3);
    bv.bgr = 1;
    for (int jpeg = 0; jpeg < 2; jpeg++) {
        an_error e1, e2;
        size_t l1 = 0, l2 = 0;
        const void *opts = jpeg ? (const void *)&jo : (const void *)&po;
        uint8_t *a = encode(jpeg, &packed, opts, NULL, 0, &l1, &e1);
        uint8_t *b = encode(jpeg, &bv, opts, NULL, 0, &l2, &e2);
        CHECK(a != NULL && b != NULL && l1 == l2 && memcmp(a, b, l1) == 0);
        free(a);
        free(b);
    }
    free(bgr);
    free(wide);
    free(px);
}

static void
test_refusals(void)
{
    current = "refusals";
    uint8_t px[64 * 4] = {0};
    an_jpeg_enc_opts jo;
    an_jpeg_enc_opts_init(&jo);
    an_png_enc_opts po;
    an_png_enc_opts_init(&po);
    an_outbuf out;
    an_error err;
    an_image_view v = packed_view(px, 8, 8, 4);

    an_outbuf_init(&out, NULL, 0);
    memset(&err, 0, sizeof(err));
    CHECK_ST(an_encode_jpeg(&v, &jo, &out, &err), AN_ERR_ARRAY); /* alpha, no drop */
    CHECK(strstr(err.detail, "alpha=\"drop\"") != NULL);
    jo.drop_alpha = 1;
    CHECK_ST(an_encode_jpeg(&v, &jo, &out, &err), AN_OK);
    an_outbuf_free(&out);

    v = packed_view(px, 0, 8, 3);
    CHECK_ST(an_encode_png(&v, &po, &out, &err), AN_ERR_ARRAY);
    v = packed_view(px, 8, 8, 5);
    CHECK_ST(an_encode_png(&v, &po, &out, &err), AN_ERR_ARRAY);
    v = packed_view(px, 65501, 1, 1);
    v.pixel_stride = 0; /* never read: refused first */
    CHECK_ST(an_encode_jpeg(&v, &jo, &out, &err), AN_ERR_ARRAY);
    CHECK(err.actual == 65501 && err.limit == AN_JPEG_MAX_DIM);
    v = packed_view(px, 8, 8, 1);
    v.bytes_per_sample = 2;
    CHECK_ST(an_encode_jpeg(&v, &jo, &out, &err), AN_ERR_ARRAY);
    v.bytes_per_sample = 3;
    CHECK_ST(an_encode_png(&v, &po, &out, &err), AN_ERR_ARRAY);
    v.bytes_per_sample = 1;
    jo.quality = 0;
    CHECK_ST(an_encode_jpeg(&v, &jo, &out, &err), AN_ERR_INVALID_ARG);
    jo.quality = 85;
    jo.subsampling = AN_SUB_COUNT;
    CHECK_ST(an_encode_jpeg(&v, &jo, &out, &err), AN_ERR_INVALID_ARG);
    po.compression = 10;
    CHECK_ST(an_encode_png(&v, &po, &out, &err), AN_ERR_INVALID_ARG);
    CHECK(out.head == NULL && out.size == 0); /* refusals allocate nothing */
}

/* ---- fault injection ---- */

static void
fault_inject(const char *name, int jpeg, const an_image_view *v, const void *opts_in)
{
    current = name;
    fault_ctx f;
    an_allocator a = {fault_malloc, fault_free, &f, AN_ERR_MEMORY_LIMIT, NULL, NULL};
    an_jpeg_enc_opts jo;
    an_png_enc_opts po;
    if (jpeg)
        jo = *(const an_jpeg_enc_opts *)opts_in;
    else
        po = *(const an_png_enc_opts *)opts_in;
    const void *opts = jpeg ? (const void *)&jo : (const void *)&po;

    an_error err;
    size_t ref_len = 0;
    uint8_t *ref = encode(jpeg, v, opts, NULL, 1, &ref_len, &err);
    CHECK(ref != NULL);
    if (ref == NULL)
        return;
    if (jpeg)
        jo.alloc = &a;
    else
        po.alloc = &a;
    int failures = 0;
    for (long n = 1; n < 100000; n++) {
        memset(&f, 0, sizeof(f));
        f.fail_at = n;
        size_t len = 0;
        uint8_t *data = encode(jpeg, v, opts, &a, 1, &len, &err);
        CHECK(f.live == 0);
        if (data != NULL) {
            /* No Nth allocation happened (done), or the codec tolerated it. */
            CHECK(len == ref_len && memcmp(data, ref, len) == 0);
            free(data);
            if (f.count < n)
                break;
            continue;
        }
        failures++;
        if (err.status != AN_ERR_MEMORY_LIMIT) {
            n_fail++;
            fprintf(stderr, "FAIL [%s]: allocation %ld failed -> %s (%s)\n", name, n,
                    an_error_lookup(err.status)->code, err.detail);
        } else {
            n_pass++;
        }
    }
    CHECK(failures > 3); /* context, row buffer or codec state, several chunks */
    free(ref);
}

static void
test_fault_injection(void)
{
    /* Noise-like pixels so the output spans several 4 KiB-and-doubling chunks. */
    uint8_t *px = make_pixels(160, 120, 4);
    for (size_t i = 0; i < (size_t)160 * 120 * 4; i++)
        px[i] = (uint8_t)(px[i] * 37u + (uint8_t)(i * 2654435761u >> 13));
    an_jpeg_enc_opts jo;
    an_jpeg_enc_opts_init(&jo);
    jo.drop_alpha = 1;
    jo.quality = 95;
    an_png_enc_opts po;
    an_png_enc_opts_init(&po);

    an_image_view v = packed_view(px, 160, 120, 4);
    fault_inject("fault jpeg packed", 1, &v, &jo);
    fault_inject("fault png packed", 0, &v, &po);
    jo.progressive = 1;
    fault_inject("fault jpeg progressive", 1, &v, &jo);
    an_image_view g = packed_view(px, 80, 120, 3); /* every other pixel: gathered rows */
    g.pixel_stride = 8;
    fault_inject("fault jpeg gathered", 1, &g, &jo);
    fault_inject("fault png gathered", 0, &g, &po);
    free(px);
}

int
main(void)
{
    test_png_round_trip();
    test_jpeg_round_trip();
    test_strided_views();
    test_refusals();
    test_fault_injection();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
