/*
 * test_formats.c - the WebP, GIF and HEIF/AVIF decoders of csrc/core under
 * ASan+UBSan (LeakSanitizer at exit): decoding, limits, truncation at every
 * byte, and fault injection on every allocation (each failure must report the
 * allocator's status and leave nothing allocated), plus a budget that refuses
 * the memory charged for the libraries' own working sets.
 *
 * Still WebPs are encoded at run time (webp_enc.c); the animated GIF/WebP and
 * the HEIC/AVIF samples are tiny files in format_seeds.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "format_seeds.h"
#include "image/an_encode_webp.h"

static uint8_t *
decode_ok(const uint8_t *d, size_t n, const an_decode_opts *opts, an_shape *shape)
{
    uint8_t *out = NULL;
    an_error err;
    an_status st = an_decode(d, n, opts, &out, shape, &err);
    if (st != AN_OK)
        fprintf(stderr, "  [%s] decode failed: %s (%s)\n", current, an_error_lookup(st)->code,
                err.detail);
    return out;
}

static uint8_t *
make_webp(uint32_t w, uint32_t h, int ch, int lossless, size_t *len)
{
    uint8_t *px = malloc((size_t)w * h * (size_t)ch);
    for (size_t i = 0; i < (size_t)w * h * (size_t)ch; i++)
        px[i] = (uint8_t)(i * 7 + (i / 13) * 3);
    an_webp_enc_opts o;
    an_webp_enc_opts_init(&o);
    o.lossless = lossless;
    uint8_t *data = NULL, *copy = NULL;
    an_error err;
    if (an_encode_webp(px, w, h, ch, 0, &o, &data, len, &err) == AN_OK) {
        copy = malloc(*len);
        memcpy(copy, data, *len);
        an_webp_free(data);
    }
    free(px);
    return copy;
}

static void
test_decode_and_round_trip(void)
{
    current = "webp lossless round trip";
    uint8_t px[6 * 5 * 4];
    for (size_t i = 0; i < sizeof(px); i++)
        px[i] = (uint8_t)(i * 37);
    an_webp_enc_opts o;
    an_webp_enc_opts_init(&o);
    o.lossless = 1;
    uint8_t *data;
    size_t len;
    an_error err;
    CHECK_ST(an_encode_webp(px, 6, 5, 4, 0, &o, &data, &len, &err), AN_OK);
    an_decode_opts opts;
    an_decode_opts_init(&opts);
    opts.mode = AN_MODE_RGBA;
    an_shape shape;
    uint8_t *out = decode_ok(data, len, &opts, &shape);
    CHECK(out != NULL && shape.width == 6 && shape.height == 5 && shape.channels == 4);
    CHECK(out != NULL && memcmp(out, px, sizeof(px)) == 0);
    free(out);
    an_webp_free(data);

    current = "animated gif frames";
    an_info info;
    CHECK_ST(an_probe(seed_gif_anim, sizeof(seed_gif_anim), &info, &err), AN_OK);
    CHECK(info.format == AN_FMT_GIF && info.frames == 3 && info.width == 16);
    opts.mode = AN_MODE_RGB;
    for (uint32_t k = 0; k < 3; k++) {
        opts.frame = k;
        out = decode_ok(seed_gif_anim, sizeof(seed_gif_anim), &opts, &shape);
        CHECK(out != NULL);
        free(out);
    }
    opts.frame = 3;
    CHECK_ST(an_decode(seed_gif_anim, sizeof(seed_gif_anim), &opts, &out, &shape, &err),
             AN_ERR_FRAME_RANGE);
    opts.frame = 0;
    opts.limits.max_frames = 2;
    CHECK_ST(an_decode(seed_gif_anim, sizeof(seed_gif_anim), &opts, &out, &shape, &err),
             AN_ERR_LIMIT_FRAMES);
    opts.limits.max_frames = 0;

    current = "animated webp";
    CHECK_ST(an_probe(seed_webp_anim, sizeof(seed_webp_anim), &info, &err), AN_OK);
    CHECK(info.format == AN_FMT_WEBP && info.frames == 2);
    opts.frame = 1;
    out = decode_ok(seed_webp_anim, sizeof(seed_webp_anim), &opts, &shape);
    CHECK(out != NULL);
    free(out);
    opts.frame = 0;

    if (an_format_available(AN_FMT_HEIC)) {
        current = "heic";
        CHECK_ST(an_probe(seed_heic, sizeof(seed_heic), &info, &err), AN_OK);
        CHECK(info.format == AN_FMT_HEIC && info.width == 24 && info.height == 16);
        out = decode_ok(seed_heic, sizeof(seed_heic), &opts, &shape);
        CHECK(out != NULL && shape.width == 24);
        free(out);
    }
    if (an_format_available(AN_FMT_AVIF)) {
        current = "avif";
        opts.mode = AN_MODE_RGBA;
        CHECK_ST(an_probe(seed_avif, sizeof(seed_avif), &info, &err), AN_OK);
        CHECK(info.format == AN_FMT_AVIF && info.channels == 4);
        out = decode_ok(seed_avif, sizeof(seed_avif), &opts, &shape);
        CHECK(out != NULL && shape.channels == 4);
        free(out);
    }
}

/* Every prefix: a known status, and in tolerant mode never a crash. */
static void
truncate_all(const char *name, const uint8_t *d, size_t n)
{
    current = name;
    an_decode_opts opts;
    an_decode_opts_init(&opts);
    for (size_t cut = 0; cut < n; cut++) {
        for (int strict = 0; strict < 2; strict++) {
            opts.strict = strict;
            uint8_t *out = (uint8_t *)d;
            an_shape shape;
            an_error err;
            an_status st = an_decode(d, cut, &opts, &out, &shape, &err);
            CHECK((unsigned)st < AN_STATUS_COUNT);
            if (st == AN_OK)
                free(out);
            else
                CHECK(out == NULL);
        }
    }
}

static void
fault_inject(const char *name, const uint8_t *d, size_t n, an_mode mode, uint32_t frame)
{
    current = name;
    fault_ctx f;
    an_allocator a = {fault_malloc, fault_free, &f, AN_ERR_MEMORY_LIMIT, NULL, NULL};
    an_decode_opts opts;
    an_decode_opts_init(&opts);
    opts.mode = mode;
    opts.frame = frame;
    an_shape ref_shape, shape;
    uint8_t *ref = decode_ok(d, n, &opts, &ref_shape);
    CHECK(ref != NULL);
    if (ref == NULL)
        return;
    opts.alloc = &a;
    int failures = 0;
    for (long k = 1; k < 1000; k++) {
        memset(&f, 0, sizeof(f));
        f.fail_at = k;
        an_error err;
        uint8_t *out = NULL;
        an_status st = an_decode(d, n, &opts, &out, &shape, &err);
        if (st == AN_OK) {
            CHECK(shape.nbytes == ref_shape.nbytes && memcmp(out, ref, shape.nbytes) == 0);
            an_free(&a, out);
            CHECK(f.live == 0);
            if (f.count < k)
                break;
            continue;
        }
        failures++;
        CHECK_ST(st, AN_ERR_MEMORY_LIMIT);
        CHECK(out == NULL);
        CHECK(f.live == 0);
    }
    CHECK(failures > 0);
    free(ref);
}

static int
refuse_reserve(void *ctx, size_t size)
{
    (void)ctx;
    return size < 1000;
}

static void
release_nothing(void *ctx, size_t size)
{
    (void)ctx;
    (void)size;
}

/* The libraries' own working sets are charged: a budget that refuses them
 * stops the decode with the budget's status. */
static void
test_reserve_refused(const uint8_t *webp, size_t webp_len)
{
    current = "reserve refused";
    fault_ctx f;
    memset(&f, 0, sizeof(f));
    an_allocator a = {fault_malloc, fault_free, &f, AN_ERR_MEMORY_LIMIT, refuse_reserve,
                      release_nothing};
    an_decode_opts opts;
    an_decode_opts_init(&opts);
    opts.alloc = &a;
    uint8_t *out;
    an_shape shape;
    an_error err;
    CHECK_ST(an_decode(webp, webp_len, &opts, &out, &shape, &err), AN_ERR_MEMORY_LIMIT);
    CHECK(f.live == 0);
    if (an_format_available(AN_FMT_HEIC)) {
        CHECK_ST(an_decode(seed_heic, sizeof(seed_heic), &opts, &out, &shape, &err),
                 AN_ERR_MEMORY_LIMIT);
        CHECK(f.live == 0);
    }
}

int
main(void)
{
    size_t lossy_len, lossless_len;
    uint8_t *lossy = make_webp(37, 23, 3, 0, &lossy_len);
    uint8_t *lossless = make_webp(31, 17, 4, 1, &lossless_len);
    current = "encode";
    CHECK(lossy != NULL && lossless != NULL);
    if (lossy == NULL || lossless == NULL)
        return 1;

    test_decode_and_round_trip();
    truncate_all("truncate webp lossy", lossy, lossy_len);
    truncate_all("truncate webp lossless", lossless, lossless_len);
    truncate_all("truncate webp anim", seed_webp_anim, sizeof(seed_webp_anim));
    truncate_all("truncate gif anim", seed_gif_anim, sizeof(seed_gif_anim));
    truncate_all("truncate gif interlaced", seed_gif_interlaced, sizeof(seed_gif_interlaced));
    if (an_format_available(AN_FMT_HEIC))
        truncate_all("truncate heic", seed_heic, sizeof(seed_heic));
    if (an_format_available(AN_FMT_AVIF))
        truncate_all("truncate avif", seed_avif, sizeof(seed_avif));

    fault_inject("fault webp lossy L", lossy, lossy_len, AN_MODE_L, 0);
    fault_inject("fault webp lossless RGBA", lossless, lossless_len, AN_MODE_RGBA, 0);
    fault_inject("fault webp anim frame 1", seed_webp_anim, sizeof(seed_webp_anim), AN_MODE_RGB,
                 1);
    fault_inject("fault gif frame 2", seed_gif_anim, sizeof(seed_gif_anim), AN_MODE_RGB, 2);
    fault_inject("fault gif RGBA", seed_gif_anim, sizeof(seed_gif_anim), AN_MODE_RGBA, 0);
    if (an_format_available(AN_FMT_HEIC))
        fault_inject("fault heic LA", seed_heic, sizeof(seed_heic), AN_MODE_LA, 0);
    test_reserve_refused(lossless, lossless_len);

    free(lossy);
    free(lossless);
    printf("test_formats: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
