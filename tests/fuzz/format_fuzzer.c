/*
 * format_fuzzer.c - libFuzzer target for one of the WebP, GIF and HEIF/AVIF
 * decoders, chosen at compile time (-DFUZZ_FORMAT=AN_FMT_WEBP, AN_FMT_GIF or
 * AN_FMT_HEIC), so each format gets its own binary, corpus and statistics.
 *
 * The input's magic bytes are forced to the format (a copy is patched), so no
 * run is wasted on inputs the sniffer would send elsewhere.  Options come from
 * the last byte (mode, strictness, orientation, frame 0..3, 16-bit output for
 * HEIF, a box scale), limits are tight so time goes to parsing rather than to
 * decoding the large blank images tiny files may claim.  Each input runs
 * through the probe, the two-phase decoder, and the incremental decoder fed in
 * chunks; in strict mode the incremental result must equal an_decode()'s
 * (same status, same pixels).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "an_core.h"
#include "image/an_incr.h"

#ifndef FUZZ_FORMAT
#define FUZZ_FORMAT AN_FMT_WEBP
#endif

static void
check(int ok)
{
    if (!ok)
        abort();
}

static void
force_magic(uint8_t *d, size_t n)
{
    switch (FUZZ_FORMAT) {
    case AN_FMT_WEBP:
        if (n >= 12) {
            memcpy(d, "RIFF", 4);
            memcpy(d + 8, "WEBP", 4);
        }
        break;
    case AN_FMT_GIF:
        if (n >= 6)
            memcpy(d, "GIF89a", 6);
        break;
    default:
        if (n >= 12 && memcmp(d + 4, "ftyp", 4) != 0) {
            memcpy(d + 4, "ftyp", 4);
            memcpy(d + 8, (d[3] & 1) ? "avif" : "heic", 4);
        }
        break;
    }
}

/* Incremental decoding in chunks of 1..64 bytes; returns the status and, on
 * success, the image in *out (malloc'ed). */
static an_status
run_incremental(const uint8_t *d, size_t n, const an_decode_opts *opts, uint8_t **out,
                an_shape *shape)
{
    an_incr *inc;
    an_error err;
    *out = NULL;
    if (an_incr_new(&inc, opts, &err) != AN_OK)
        return err.status;
    an_status st = AN_OK;
    size_t pos = 0, chunk = 1 + (n % 64);
    while (pos < n && st == AN_OK) {
        size_t take = n - pos < chunk ? n - pos : chunk;
        if (an_incr_get_state(inc) == AN_INCR_OUTPUT) {
            an_incr_shape(inc, shape);
            *out = calloc(1, shape->nbytes ? shape->nbytes : 1);
            check(*out != NULL);
            st = an_incr_set_output(inc, *out, &err);
            continue;
        }
        st = an_incr_feed(inc, d + pos, take, &err);
        pos += take;
    }
    for (int round = 0; st == AN_OK && round < 2; round++) {
        if (an_incr_get_state(inc) == AN_INCR_OUTPUT) {
            an_incr_shape(inc, shape);
            *out = calloc(1, shape->nbytes ? shape->nbytes : 1);
            check(*out != NULL);
            st = an_incr_set_output(inc, *out, &err);
            if (st != AN_OK)
                break;
        }
        if (an_incr_get_state(inc) == AN_INCR_DONE)
            break;
        st = an_incr_finish(inc, &err);
    }
    if (st == AN_OK)
        check(an_incr_get_state(inc) == AN_INCR_DONE);
    an_incr_close(inc);
    if (st != AN_OK) {
        free(*out);
        *out = NULL;
    }
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *d = malloc(size ? size : 1);
    check(d != NULL);
    memcpy(d, data, size);
    force_magic(d, size);

    an_info info;
    an_error err;
    an_status pst = an_probe(d, size, &info, &err);
    check((unsigned)pst < AN_STATUS_COUNT);

    uint8_t o = size ? d[size - 1] : 0;
    an_decode_opts opts;
    an_decode_opts_init(&opts);
    opts.limits.max_pixels = 1u << 20;
    opts.limits.max_width = 1u << 12;
    opts.limits.max_height = 1u << 12;
    opts.limits.max_frames = 64;
    opts.mode = (an_mode)(1 + o % 5);
    opts.strict = (o >> 3) & 1;
    opts.orient = (o >> 4) & 1;
    opts.frame = FUZZ_FORMAT == AN_FMT_HEIC ? 0 : (o >> 5) & 3;
    opts.depth16 = FUZZ_FORMAT == AN_FMT_HEIC && (o >> 7);
    opts.scale_denom = (o & 0x80) && FUZZ_FORMAT != AN_FMT_HEIC ? 2 : 1;

    an_decoder *dec = NULL;
    an_status st = an_decoder_open(&dec, d, size, &opts, &err);
    check((unsigned)st < AN_STATUS_COUNT);
    if (pst != AN_OK)
        check(st != AN_OK);
    if (st == AN_OK) {
        an_shape shape;
        an_decoder_shape(dec, &shape);
        check(shape.channels == an_mode_channels(opts.mode));
        uint8_t *out = calloc(1, shape.nbytes ? shape.nbytes : 1);
        check(out != NULL);
        st = an_decoder_run(dec, out, &err);
        check((unsigned)st < AN_STATUS_COUNT);
        free(out);
        an_decoder_close(dec);
    } else {
        check(dec == NULL);
    }

    /* Strict: incremental and one-shot agree on the status and the pixels. */
    opts.strict = 1;
    uint8_t *one = NULL, *inc = NULL;
    an_shape s1, s2;
    an_status a = an_decode(d, size, &opts, &one, &s1, &err);
    an_status b = run_incremental(d, size, &opts, &inc, &s2);
    check((unsigned)a < AN_STATUS_COUNT && (unsigned)b < AN_STATUS_COUNT);
    if (a == AN_OK && b == AN_OK)
        check(s1.nbytes == s2.nbytes && memcmp(one, inc, s1.nbytes) == 0);
    else if (a == AN_OK || b == AN_OK)
        check(!"incremental and one-shot decoding disagree");
    free(one);
    free(inc);
    free(d);
    return 0;
}
