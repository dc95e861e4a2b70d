/*
 * test_incr.c - C unit tests of the incremental decoder (an_incr.h) under
 * ASan/UBSan: fed in chunks of 1, 7, 1000 bytes or whole, the output must be
 * byte-identical to an_decode() with the same options; truncated streams must
 * end like an_decode() of the prefix (same status, same pixels when tolerant);
 * every allocation failing in turn must give the allocator's status and leave
 * no block behind; misuse must be refused without damage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

#include "image/an_incr.h"
#include "check.h"
#include "testimg.h"

/* Allocates the output as the binding would (zeroed when tolerant). */
static an_status
give_output(an_incr *d, const an_decode_opts *o, uint8_t **out, an_shape *shape, an_error *err)
{
    an_incr_shape(d, shape);
    *out = an_malloc(o->alloc, shape->nbytes);
    if (*out == NULL) {
        an_error_set(err, an_nomem(o->alloc), "no output");
        return err->status;
    }
    memset(*out, 0, shape->nbytes);
    return an_incr_set_output(d, *out, err);
}

/* Decodes data fed in pieces of chunk bytes (0 = whole). */
static an_status
incr_decode(const uint8_t *data, size_t len, const an_decode_opts *o, size_t chunk, uint8_t **out,
            an_shape *shape, an_error *err)
{
    an_incr *d;
    *out = NULL;
    if (an_incr_new(&d, o, err) != AN_OK)
        return err->status;
    an_status st = AN_OK;
    size_t step = chunk ? chunk : (len ? len : 1);
    for (size_t i = 0; i < len && st == AN_OK; i += step) {
        size_t n = len - i < step ? len - i : step;
        st = an_incr_feed(d, data + i, n, err);
        if (st == AN_OK && an_incr_get_state(d) == AN_INCR_OUTPUT)
            st = give_output(d, o, out, shape, err);
    }
    if (st == AN_OK)
        st = an_incr_finish(d, err);
    if (st == AN_OK && an_incr_get_state(d) == AN_INCR_OUTPUT) {
        st = give_output(d, o, out, shape, err);
        if (st == AN_OK)
            st = an_incr_finish(d, err);
    }
    if (st == AN_OK)
        CHECK(an_incr_get_state(d) == AN_INCR_DONE && an_incr_bytes_fed(d) == len);
    else
        CHECK(an_incr_get_state(d) == AN_INCR_FAILED || *out == NULL);
    an_incr_close(d);
    if (st != AN_OK) {
        an_free(o->alloc, *out);
        *out = NULL;
    }
    return st;
}

/* Incremental == one-shot, for every chunk size given. */
static void
same_as_decode(const char *name, const uint8_t *data, size_t len, const an_decode_opts *o)
{
    static const size_t sizes[] = {1, 7, 1000, 0};
    current = name;
    an_error e1, e2;
    an_shape s1, s2;
    uint8_t *ref = NULL, *got = NULL;
    an_status want = an_decode(data, len, o, &ref, &s1, &e1);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        an_status st = incr_decode(data, len, o, sizes[k], &got, &s2, &e2);
        CHECK_ST(st, want);
        if (st == AN_OK && want == AN_OK) {
            CHECK(s1.nbytes == s2.nbytes && s1.width == s2.width && s1.height == s2.height);
            CHECK(memcmp(ref, got, s1.nbytes) == 0);
            CHECK(e1.warned == e2.warned);
        }
        an_free(o->alloc, got);
    }
    free(ref);
}

static uint8_t *
jpeg_of(uint32_t w, uint32_t h, int comps, int progressive, int arith, int orientation,
        size_t *len)
{
    static uint8_t pix[64 * 48 * 4];
    uint8_t app1[64];
    ti_jpeg_params p;
    ti_jpeg_defaults(&p);
    p.components = comps;
    p.progressive = progressive;
    p.arith = arith;
    p.adobe = comps == 4;
    if (orientation) {
        memcpy(app1, "Exif\0\0", 6);
        p.app1_len = 6 + ti_exif_tiff(app1 + 6, orientation);
        p.app1 = app1;
    }
    ti_pattern(pix, w, h, comps, 1, w + h);
    return ti_jpeg(pix, w, h, &p, len);
}

static uint8_t *
png_of(uint32_t w, uint32_t h, int ct, int depth, int interlace, int trns, size_t *len)
{
    static uint8_t pix[64 * 48 * 8];
    int ch = ct == PNG_COLOR_TYPE_RGB ? 3 : ct == PNG_COLOR_TYPE_RGB_ALPHA ? 4
             : ct == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
    ti_png_params p;
    ti_png_defaults(&p);
    p.color_type = ct;
    p.bit_depth = depth;
    p.interlace = interlace;
    p.trns = trns;
    ti_pattern(pix, w, h, ch, depth == 16 ? 2 : 1, w * h);
    return ti_png(pix, w, h, &p, len);
}

typedef struct sample {
    const char *name;
    uint8_t *data;
    size_t len;
} sample;

static sample samples[10];
static int n_samples;

static void
make_samples(void)
{
    sample *s = samples;
    s->name = "jpeg baseline";
    s->data = jpeg_of(37, 23, 3, 0, 0, 0, &s->len), s++;
    s->name = "jpeg progressive exif6";
    s->data = jpeg_of(37, 23, 3, 1, 0, 6, &s->len), s++;
    s->name = "jpeg arithmetic";
    s->data = jpeg_of(29, 19, 3, 0, 1, 0, &s->len), s++;
    s->name = "jpeg cmyk";
    s->data = jpeg_of(21, 13, 4, 0, 0, 0, &s->len), s++;
    s->name = "png rgb";
    s->data = png_of(37, 23, PNG_COLOR_TYPE_RGB, 8, 0, 0, &s->len), s++;
    s->name = "png rgb interlaced";
    s->data = png_of(37, 23, PNG_COLOR_TYPE_RGB, 8, 1, 0, &s->len), s++;
    s->name = "png gray16";
    s->data = png_of(19, 17, PNG_COLOR_TYPE_GRAY, 16, 0, 1, &s->len), s++;
    s->name = "png palette4 trns interlaced";
    s->data = png_of(23, 11, PNG_COLOR_TYPE_PALETTE, 4, 1, 1, &s->len), s++;
    s->name = "png rgba";
    s->data = png_of(13, 9, PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, 0, &s->len), s++;
    n_samples = (int)(s - samples);
}

static void
test_equal(void)
{
    static const an_mode modes[] = {AN_MODE_RGB, AN_MODE_L, AN_MODE_LA, AN_MODE_RGBA,
                                    AN_MODE_BGR};
    for (int i = 0; i < n_samples; i++)
        for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
            an_decode_opts o;
            an_decode_opts_init(&o);
            o.mode = modes[m];
            o.scale_denom = (int)(m % 3 == 1 ? 2 : 1);
            o.strict = m != 3;
            o.depth16 = samples[i].data[0] == 0x89 && m == 4;
            same_as_decode(samples[i].name, samples[i].data, samples[i].len, &o);
        }
}

static void
test_truncation(void)
{
    for (int i = 0; i < n_samples; i++)
        for (size_t cut = 0; cut < samples[i].len; cut += 1 + samples[i].len / 23) {
            an_decode_opts o;
            an_decode_opts_init(&o);
            o.strict = (int)(cut & 1);
            o.mode = AN_MODE_RGBA;
            same_as_decode(samples[i].name, samples[i].data, cut, &o);
        }
}

static void
test_fault(void)
{
    for (int i = 0; i < n_samples; i++)
        for (int strict = 0; strict <= 1; strict++) {
            current = samples[i].name;
            fault_ctx f;
            an_allocator a = {fault_malloc, fault_free, &f, AN_ERR_MEMORY_LIMIT, NULL, NULL};
            an_decode_opts o;
            an_decode_opts_init(&o);
            o.strict = strict;
            o.mode = i % 2 ? AN_MODE_L : AN_MODE_RGB;
            uint8_t *ref, *got;
            an_shape s1, s2;
            an_error err;
            CHECK_ST(an_decode(samples[i].data, samples[i].len, &o, &ref, &s1, &err), AN_OK);
            o.alloc = &a;
            int failures = 0;
            for (long n = 1; n < 10000; n++) {
                memset(&f, 0, sizeof(f));
                f.fail_at = n;
                an_status st = incr_decode(samples[i].data, samples[i].len, &o, 64, &got, &s2,
                                           &err);
                if (st == AN_OK) {
                    CHECK(s2.nbytes == s1.nbytes && memcmp(got, ref, s1.nbytes) == 0);
                    an_free(&a, got);
                } else {
                    failures++;
                    CHECK_ST(st, AN_ERR_MEMORY_LIMIT);
                }
                CHECK(f.live == 0);
                if (st == AN_OK && f.count < n)
                    break;
            }
            CHECK(failures > 0);
            free(ref);
        }
}

static void
test_misuse(void)
{
    current = "misuse";
    an_decode_opts o;
    an_decode_opts_init(&o);
    an_incr *d;
    an_error err;
    uint8_t buf[16];
    const sample *s = &samples[0];
    CHECK_ST(an_incr_new(&d, &o, &err), AN_OK);
    CHECK_ST(an_incr_set_output(d, buf, &err), AN_ERR_INVALID_ARG); /* no header yet */
    CHECK_ST(an_incr_feed(d, s->data, 10, &err), AN_OK);
    CHECK(an_incr_get_state(d) == AN_INCR_HEADER);
    CHECK_ST(an_incr_feed(d, s->data + 10, s->len - 10, &err), AN_OK);
    CHECK(an_incr_get_state(d) == AN_INCR_OUTPUT);
    CHECK(an_incr_info(d)->width == 37 && an_incr_info(d)->height == 23);
    CHECK_ST(an_incr_feed(d, s->data, 1, &err), AN_ERR_INVALID_ARG); /* output first */
    CHECK_ST(an_incr_finish(d, &err), AN_ERR_INVALID_ARG);
    CHECK(an_incr_get_state(d) == AN_INCR_OUTPUT); /* refusals change nothing */
    an_incr_close(d);

    /* After a failure every call replays it. */
    CHECK_ST(an_incr_new(&d, &o, &err), AN_OK);
    CHECK_ST(an_incr_feed(d, (const uint8_t *)"II*\0" "0123456789abcde", 19, &err), /* TIFF */
             AN_ERR_UNKNOWN_FORMAT);
    CHECK(an_incr_get_state(d) == AN_INCR_FAILED);
    CHECK_ST(an_incr_feed(d, s->data, s->len, &err), AN_ERR_UNKNOWN_FORMAT);
    CHECK_ST(an_incr_finish(d, &err), AN_ERR_UNKNOWN_FORMAT);
    an_incr_close(d);

    /* Limits at the header: a PNG claiming 100000 x 100000 fails on its IHDR. */
    static const uint8_t ihdr[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13,
                                     'I', 'H', 'D', 'R', 0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0,
                                     8, 2, 0, 0, 0, 0, 0, 0, 0};
    CHECK_ST(an_incr_new(&d, &o, &err), AN_OK);
    CHECK_ST(an_incr_feed(d, ihdr, sizeof(ihdr), &err), AN_ERR_LIMIT_WIDTH);
    an_incr_close(d);

    o.mode = (an_mode)9;
    CHECK_ST(an_incr_new(&d, &o, &err), AN_ERR_INVALID_ARG);
    CHECK(d == NULL);
    an_incr_close(NULL);
}

int
main(void)
{
    make_samples();
    test_equal();
    test_truncation();
    test_fault();
    test_misuse();
    for (int i = 0; i < n_samples; i++)
        free(samples[i].data);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
