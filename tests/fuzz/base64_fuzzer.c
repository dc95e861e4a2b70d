/*
 * base64_fuzzer.c - libFuzzer target over the base64 codec (csrc/core/image/base64.c).
 *
 * Properties checked on every input (with ASan/UBSan on the exact-size heap
 * copy the harness makes, so any read past the end is caught):
 *   - decoding never writes more than an_b64_decoded_bound() bytes and either
 *     succeeds or fails with AN_ERR_BASE64 at an offset <= len;
 *   - decoding with a buffer of exactly the decoded size also succeeds;
 *   - encoding the input (both alphabets, with/without padding) and decoding
 *     it gives the input back;
 *   - every vector path this CPU has (SSSE3, AVX2) decodes and encodes exactly
 *     as the scalar codec: same status, error offset, message and bytes (the
 *     input is also tried with each prefix cut away, so the kernels see every
 *     alignment and block boundary).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I../../csrc/core \
 *     base64_fuzzer.c ../../csrc/core/image/base64.c ../../csrc/core/errors.c -o base64_fuzzer
 *   gcc -g -O1 -fsanitize=address,undefined -I../../csrc/core fuzz_main.c \
 *     base64_fuzzer.c ../../csrc/core/image/base64.c ../../csrc/core/errors.c -o base64_replay
 */
#include <stdlib.h>
#include <string.h>

#include "image/an_base64.h"
#include "image/an_base64_simd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One decode and one encode of in with the given path. */
typedef struct result {
    an_status st;
    uint64_t actual;
    char detail[200];
    size_t n;
    uint8_t *out;
    char *enc;
} result;

static void
run_path(int path, const uint8_t *in, size_t size, result *r)
{
    an_error err;
    size_t bound = 0;
    int ok;
    memset(&err, 0, sizeof(err));
    memset(r, 0, sizeof(*r));
    if (!an_b64_set_path(path))
        abort();
    r->st = an_b64_decoded_bound(in, size, AN_B64_DATA_URL, &bound, &err);
    r->out = malloc(bound ? bound : 1);
    if (r->st == AN_OK)
        r->st = an_b64_decode(in, size, AN_B64_DATA_URL, r->out, bound, &r->n, &err);
    r->actual = err.actual;
    memcpy(r->detail, err.detail, sizeof(r->detail));
    size_t elen = an_b64_encoded_len(size, 1, &ok);
    r->enc = malloc(elen + 1);
    if (an_b64_encode(in, size, r->enc, size & 1, 1) != elen)
        abort();
    r->enc[elen] = 0;
}

static void
cross_check(const uint8_t *in, size_t size)
{
    result ref, got;
    run_path(AN_B64_SCALAR, in, size, &ref);
    for (int path = AN_B64_SSSE3; path <= AN_B64_AVX2; path++) {
        if (!an_b64_set_path(path))
            break;
        run_path(path, in, size, &got);
        if (got.st != ref.st || got.actual != ref.actual || strcmp(got.detail, ref.detail) != 0 ||
            (ref.st == AN_OK && (got.n != ref.n || memcmp(got.out, ref.out, ref.n) != 0)) ||
            strcmp(got.enc, ref.enc) != 0)
            abort();
        free(got.out);
        free(got.enc);
    }
    free(ref.out);
    free(ref.enc);
}

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
    /* SIMD vs scalar, at 4 alignments of the same bytes. */
    for (size_t cut = 0; cut < 4 && cut <= size; cut++)
        cross_check(in + cut, size - cut);
    if (!an_b64_set_path(AN_B64_AVX2) && !an_b64_set_path(AN_B64_SSSE3))
        an_b64_set_path(AN_B64_SCALAR);
    free(in);
    return 0;
}
