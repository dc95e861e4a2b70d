/*
 * decode_fuzzer.c - libFuzzer target for the C decode core.
 *
 * Each input is probed, then decoded through the two-phase API and through the
 * one-shot an_decode() with options derived from the input's last byte (mode,
 * scale, orientation, strictness, 16-bit output) and second-to-last byte
 * (max_size boxes, a tight scan limit).  Taking the options from the tail keeps
 * seed images valid: JPEG and PNG both ignore bytes after their end marker.
 * The EXIF parser is fed the raw input as well, since it is reachable from any
 * APP1/eXIf payload.
 *
 * Limits are tighter than the library defaults so the fuzzer spends its time
 * in parsers rather than in decoding a 100-megapixel blank image, which a
 * 100-byte file can legitimately claim.
 *
 * Invariants checked (abort() on violation, so libFuzzer records the input):
 * every status is a known value; a successful decode has the shape the probe
 * promised; a failed one-shot decode leaves *out NULL.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "an_core.h"

static void
check(int ok)
{
    if (!ok)
        abort();
}

static void
run_two_phase(const uint8_t *data, size_t size, const an_decode_opts *opts, const an_info *info)
{
    an_decoder *dec = NULL;
    an_error err;
    an_status st = an_decoder_open(&dec, data, size, opts, &err);
    check((unsigned)st < AN_STATUS_COUNT);
    if (st != AN_OK) {
        check(dec == NULL);
        return;
    }
    an_shape shape;
    an_decoder_shape(dec, &shape);
    const an_info *di = an_decoder_info(dec);
    check(di->width == info->width && di->height == info->height);
    check(shape.channels == an_mode_channels(opts->mode));
    check((size_t)shape.width * shape.height * (size_t)shape.channels *
              (size_t)shape.bytes_per_sample == shape.nbytes);
    uint8_t *out = malloc(shape.nbytes ? shape.nbytes : 1);
    if (out != NULL) {
        memset(out, 0, shape.nbytes);
        st = an_decoder_run(dec, out, &err);
        check((unsigned)st < AN_STATUS_COUNT);
        free(out);
    }
    an_decoder_close(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    an_info info;
    an_error err;
    an_status pst = an_probe(data, size, &info, &err);
    check((unsigned)pst < AN_STATUS_COUNT);
    if (pst == AN_OK)
        check(info.format > AN_FMT_UNKNOWN && info.format < AN_FMT_COUNT);
    (void)an_exif_orientation(data, size);
    if (size > 6 && memcmp(data, "Exif", 4) == 0)
        (void)an_exif_orientation(data + 6, size - 6);

    uint8_t o1 = size ? data[size - 1] : 0;
    uint8_t o2 = size > 1 ? data[size - 2] : 0;
    static const int denoms[4] = {1, 2, 4, 8};

    an_decode_opts opts;
    an_decode_opts_init(&opts);
    opts.limits.max_pixels = 1u << 22;
    opts.limits.max_width = 1u << 14;
    opts.limits.max_height = 1u << 14;
    opts.mode = (an_mode)(1 + o1 % 5);
    opts.scale_denom = denoms[(o1 >> 3) & 3];
    opts.orient = (o1 >> 5) & 1;
    opts.strict = (o1 >> 6) & 1;
    opts.depth16 = (o1 >> 7) & 1 && pst == AN_OK && info.format == AN_FMT_PNG;
    if (o2 & 1) {
        opts.scale_denom = 0;
        opts.max_w = 1u + (o2 >> 1) % 64u;
        opts.max_h = 1u + (o2 >> 3) % 64u;
    }
    if (o2 & 0x80)
        opts.limits.max_jpeg_scans = 4;
    if (pst == AN_OK)
        run_two_phase(data, size, &opts, &info);
    else {
        an_decoder *dec = NULL;
        an_status st = an_decoder_open(&dec, data, size, &opts, &err);
        check(st != AN_OK && dec == NULL); /* probe refused: decode must too */
    }

    /* The one-shot path with the complementary strictness and default scale. */
    opts.strict = !opts.strict;
    opts.scale_denom = 1;
    opts.max_w = opts.max_h = 0;
    uint8_t *out = (uint8_t *)data; /* must be overwritten */
    an_shape shape;
    an_status st = an_decode(data, size, &opts, &out, &shape, &err);
    check((unsigned)st < AN_STATUS_COUNT);
    if (st == AN_OK) {
        check(out != NULL);
        free(out);
    } else {
        check(out == NULL);
    }
    return 0;
}
