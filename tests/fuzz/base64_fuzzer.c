/*
 * base64_fuzzer.c - libFuzzer target over the base64 codec (csrc/core/image/base64.c).
 *
 * Properties checked on every input (with ASan/UBSan on the exact-size heap
 * copy the harness makes, so any read past the end is caught):
 *   - decoding never writes more than an_b64_decoded_bound() bytes and either
 *     succeeds or fails with AN_ERR_BASE64 at an offset <= len;
 *   - decoding with a buffer of exactly the decoded size also succeeds;
 *   - encoding the input (both alphabets, with/without padding) and decoding
 *     it gives the input back.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I../../csrc/core \
 *     base64_fuzzer.c ../../csrc/core/image/base64.c ../../csrc/core/errors.c -o base64_fuzzer
 *   gcc -g -O1 -fsanitize=address,undefined -I../../csrc/core fuzz_main.c \
 *     base64_fuzzer.c ../../csrc/core/image/base64.c ../../csrc/core/errors.c -o base64_replay
 */
#include <stdlib.h>
#include <string.h>

#include "image/an_base64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    an_error err;
    size_t bound = 0, n = 0;
    uint8_t *in = malloc(size ? size : 1), *out = NULL, *exact = NULL;
    if (in == NULL)
        return 0;
    memcpy(in, data, size);
    memset(&err, 0, sizeof(err));
    if (an_b64_decoded_bound(in, size, AN_B64_DATA_URL, &bound, &err) == AN_OK) {
        out = malloc(bound ? bound : 1);
        an_status s = an_b64_decode(in, size, AN_B64_DATA_URL, out, bound, &n, &err);
        if (s == AN_OK) {
            if (n > bound)
                abort();
            exact = malloc(n ? n : 1);
            size_t n2 = 0;
            if (an_b64_decode(in, size, AN_B64_DATA_URL, exact, n, &n2, &err) != AN_OK ||
                n2 != n || memcmp(exact, out, n) != 0)
                abort();
        } else if (s != AN_ERR_BASE64 || err.actual > size) {
            abort();
        }
    } else if (err.status != AN_ERR_BASE64 || err.actual > size) {
        abort();
    }
    for (int mode = 0; mode < 4; mode++) {
        int ok, urlsafe = mode & 1, pad = mode >> 1;
        size_t elen = an_b64_encoded_len(size, pad, &ok);
        char *enc = malloc(elen ? elen : 1);
        uint8_t *dec = malloc(size ? size : 1);
        if (!ok || enc == NULL || dec == NULL ||
            an_b64_encode(in, size, enc, urlsafe, pad) != elen ||
            an_b64_decode((const uint8_t *)enc, elen, 0, dec, size, &n, &err) != AN_OK ||
            n != size || memcmp(dec, in, size) != 0)
            abort();
        free(enc);
        free(dec);
    }
    free(exact);
    free(out);
    free(in);
    return 0;
}
