/*
 * incr_fuzzer.c - libFuzzer target over the incremental decoder (an_incr.h).
 *
 * The first input byte picks the chunk sizes and the options; the rest is the
 * image, fed in pieces of 1..4096 bytes.  Beyond the sanitizers' checks it
 * asserts the contract that holds for every input: a strict incremental decode
 * that succeeds gives exactly the pixels of an_decode() on the same bytes, and
 * the fed-byte counter matches.
 */
#include <stdlib.h>
#include <string.h>

#include "image/an_incr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const size_t steps[8] = {1, 2, 3, 7, 64, 500, 4096, 1 << 20};
    const uint8_t ctl = data[0];
    data++;
    size--;
    an_decode_opts o;
    an_decode_opts_init(&o);
    o.mode = (an_mode)(1 + (ctl >> 3) % 5);
    o.strict = (ctl & 0x80) == 0;
    o.scale_denom = (ctl & 0x40) ? 2 : 1;
    o.limits.max_pixels = 4u << 20; /* keep the fuzzer fast */
    size_t step = steps[ctl & 7];

    an_incr *d;
    an_error err;
    uint8_t *out = NULL;
    an_shape shape;
    if (an_incr_new(&d, &o, &err) != AN_OK)
        abort();
    an_status st = AN_OK;
    for (size_t i = 0; i < size && st == AN_OK; i += step) {
        size_t n = size - i < step ? size - i : step;
        st = an_incr_feed(d, data + i, n, &err);
        if (st == AN_OK && an_incr_get_state(d) == AN_INCR_OUTPUT) {
            an_incr_shape(d, &shape);
            out = calloc(1, shape.nbytes ? shape.nbytes : 1);
            st = out ? an_incr_set_output(d, out, &err) : AN_ERR_NOMEM;
        }
    }
    if (st == AN_OK)
        st = an_incr_finish(d, &err);
    if (st == AN_OK && an_incr_get_state(d) == AN_INCR_OUTPUT) {
        an_incr_shape(d, &shape);
        out = calloc(1, shape.nbytes ? shape.nbytes : 1);
        st = out ? an_incr_set_output(d, out, &err) : AN_ERR_NOMEM;
        if (st == AN_OK)
            st = an_incr_finish(d, &err);
    }
    if (st == AN_OK && an_incr_bytes_fed(d) != size)
        abort();
    an_incr_close(d);
    if (st == AN_OK && o.strict) {
        uint8_t *ref = NULL;
        an_shape rs;
        if (an_decode(data, size, &o, &ref, &rs, &err) == AN_OK &&
            (rs.nbytes != shape.nbytes || memcmp(ref, out, rs.nbytes) != 0))
            abort();
        free(ref);
    }
    free(out);
    return 0;
}
