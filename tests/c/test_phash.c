/*
 * test_phash.c - the perceptual fingerprints of csrc/core/image/phash.c under
 * ASan+UBSan: bit order, invariance to strides and sample depth, the
 * descriptor's norm and blocks, failed allocations, bad views.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "image/an_phash.h"

#define W 96
#define H 64

static uint8_t img[H][W][3];

static void
make_image(void)
{
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            /* irregular on purpose: a symmetric pattern puts many DCT
             * coefficients at the median, where rounding flips bits */
            img[y][x][0] = (uint8_t)(x * 255 / W);
            img[y][x][1] = (uint8_t)(((x * x + 3 * x * y) / 7) % 256);
            img[y][x][2] = (uint8_t)((x - 30) * (x - 30) + (y - 20) * (y - 20) < 300 ? 230 : 40);
        }
}

static an_view
view_of(const uint8_t *data, uint32_t w, uint32_t h, int ch, ptrdiff_t row, ptrdiff_t col)
{
    an_view v = {data, w, h, ch, 1, row, col, 1};
    return v;
}

int
main(void)
{
    an_error err;
    uint64_t h = 0, h2 = 0;
    float d[AN_DESC_LEN], d2[AN_DESC_LEN];
    make_image();
    an_view v = view_of(&img[0][0][0], W, H, 3, W * 3, 3);

    current = "hash basics";
    CHECK_ST(an_phash(&v, &h, NULL, &err), AN_OK);
    CHECK(h != 0 && h != UINT64_MAX);
    CHECK(an_hamming64(h, h) == 0);
    CHECK(an_hamming64(0, UINT64_MAX) == 64);
    CHECK(an_hamming64(0xF0, 0x0F) == 8);
    /* The DC coefficient of a positive image is above the median: bit 63. */
    CHECK((h >> 63) == 1);
    /* Exactly 32 coefficients are above the median of 64 distinct values. */
    CHECK(an_hamming64(h, 0) == 32);

    current = "hash of a flipped-twice (negative stride) view equals the original";
    an_view flipped = view_of(&img[H - 1][0][0], W, H, 3, -(ptrdiff_t)(W * 3), 3);
    CHECK_ST(an_phash(&flipped, &h2, NULL, &err), AN_OK);
    CHECK(an_hamming64(h, h2) > 0); /* a vertical flip is a different picture */
    static uint8_t copy[H][W][3];
    for (int y = 0; y < H; y++)
        memcpy(copy[y], img[H - 1 - y], sizeof(copy[y]));
    an_view back = view_of(&copy[H - 1][0][0], W, H, 3, -(ptrdiff_t)(W * 3), 3);
    CHECK_ST(an_phash(&back, &h2, NULL, &err), AN_OK);
    CHECK(h2 == h);

    current = "16-bit samples hash like their 8-bit values (within rounding)";
    static uint16_t wide[H][W][3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++)
                wide[y][x][c] = (uint16_t)(img[y][x][c] * 257);
    an_view v16 = {(const uint8_t *)wide, W, H, 3, 2, W * 6, 6, 2};
    CHECK_ST(an_phash(&v16, &h2, NULL, &err), AN_OK);
    CHECK(an_hamming64(h2, h) <= 2); /* the 16-bit filter rounds differently */

    current = "descriptor";
    CHECK_ST(an_descriptor(&v, d, NULL, &err), AN_OK);
    double norm = 0;
    for (int i = 0; i < AN_DESC_LEN; i++)
        norm += (double)d[i] * d[i];
    CHECK(fabs(norm - 1.0) < 1e-5);
    CHECK_ST(an_descriptor(&v16, d2, NULL, &err), AN_OK);
    float worst = 0;
    for (int i = 0; i < AN_DESC_LEN; i++)
        worst = fmaxf(worst, fabsf(d[i] - d2[i]));
    CHECK(worst < 1e-2f);

    current = "a flat image has no orientation or layout";
    static uint8_t flat[8][8];
    memset(flat, 77, sizeof(flat));
    an_view vf = view_of(&flat[0][0], 8, 8, 1, 8, 1);
    CHECK_ST(an_descriptor(&vf, d, NULL, &err), AN_OK);
    int zeros = 1;
    for (int i = AN_DESC_COLOUR; i < AN_DESC_LEN; i++)
        zeros &= d[i] == 0.0f;
    CHECK(zeros);
    CHECK_ST(an_phash(&vf, &h2, NULL, &err), AN_OK);

    current = "failed allocations are reported, nothing leaks";
    for (long at = 1; at <= 6; at++) {
        fault_ctx f = {at, 0, 0};
        an_allocator a = {fault_malloc, fault_free, &f, AN_ERR_MEMORY_LIMIT, NULL, NULL};
        an_status s1 = an_phash(&v, &h2, &a, &err);
        CHECK(s1 == AN_OK || s1 == AN_ERR_MEMORY_LIMIT);
        CHECK(s1 != AN_OK || h2 == h);
        CHECK(f.live == 0);
        f.count = 0;
        an_status s2 = an_descriptor(&v, d, &a, &err);
        CHECK(s2 == AN_OK || s2 == AN_ERR_MEMORY_LIMIT);
        CHECK(f.live == 0);
    }
    fault_ctx first = {1, 0, 0};
    an_allocator fa = {fault_malloc, fault_free, &first, AN_ERR_MEMORY_LIMIT, NULL, NULL};
    CHECK_ST(an_descriptor(&v, d, &fa, &err), AN_ERR_MEMORY_LIMIT);

    current = "bad views";
    an_view bad = v;
    bad.channels = 5;
    CHECK_ST(an_phash(&bad, &h2, NULL, &err), AN_ERR_ARRAY);
    bad = v;
    bad.width = 0;
    CHECK(an_descriptor(&bad, d, NULL, &err) != AN_OK);

    printf("test_phash: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
