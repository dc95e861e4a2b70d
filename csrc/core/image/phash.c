/*
 * phash.c - the perceptual fingerprints of an_phash.h.
 *
 * Both fingerprints start the same way: an_resize (Pillow's antialiased
 * bilinear) brings the strided source down to a small square, and the samples
 * become float RGB in [0, 255].  Doing the reduction before the grey
 * conversion (imagehash converts first) changes a sample by a rounding step at
 * most, and it lets one code path serve grey, grey+alpha, RGB and RGBA, 8 and
 * 16 bits.  Everything after the reduction works on at most 64x64 pixels, so
 * the cost of a fingerprint is the cost of reading the source once.
 */
#include "an_phash.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PHASH_SIDE 32 /* imagehash: hash_size 8 x highfreq_factor 4 */
#define PHASH_LOW 8
#define DESC_SIDE 64
#define ORIENT_BINS 32

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* Reduces src to side x side float RGB (row-major, 3 floats a pixel) in rgb. */
static an_status
reduce_rgb(const an_view *src, uint32_t side, float *rgb, const an_allocator *alloc,
           an_error *err)
{
    const size_t n = (size_t)side * side;
    const size_t bytes = n * (size_t)src->channels * (size_t)src->bytes_per_sample;
    uint8_t *small = an_malloc(alloc, bytes);
    if (small == NULL) {
        an_error_set(err, an_nomem(alloc), "cannot allocate %zu bytes of scratch", bytes);
        return err->status;
    }
    an_status s = an_resize(src, small, side, side, AN_RESIZE_BILINEAR, alloc, err);
    if (s == AN_OK) {
        const int ch = src->channels;
        for (size_t i = 0; i < n; i++) {
            float v[3];
            for (int c = 0; c < 3; c++) {
                const int sc = ch >= 3 ? c : 0; /* grey (+alpha): the first channel */
                const size_t at = i * (size_t)ch + (size_t)sc;
                if (src->bytes_per_sample == 2) {
                    uint16_t w;
                    memcpy(&w, small + 2 * at, 2);
                    v[c] = (float)w / 257.0f;
                } else {
                    v[c] = (float)small[at];
                }
            }
            memcpy(rgb + 3 * i, v, sizeof(v));
        }
    }
    an_free(alloc, small);
    return s;
}

static float
luma(const float *px)
{
    return 0.299f * px[0] + 0.587f * px[1] + 0.114f * px[2];
}

static int
cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

an_status
an_phash(const an_view *src, uint64_t *out, const an_allocator *alloc, an_error *err)
{
    float rgb[PHASH_SIDE * PHASH_SIDE * 3];
    double grey[PHASH_SIDE][PHASH_SIDE], cosk[PHASH_LOW][PHASH_SIDE];
    double tmp[PHASH_LOW][PHASH_SIDE], dct[PHASH_LOW * PHASH_LOW], sorted[PHASH_LOW * PHASH_LOW];

    an_status s = reduce_rgb(src, PHASH_SIDE, rgb, alloc, err);
    if (s != AN_OK)
        return s;
    for (int y = 0; y < PHASH_SIDE; y++)
        for (int x = 0; x < PHASH_SIDE; x++)
            grey[y][x] = luma(rgb + 3 * (y * PHASH_SIDE + x));
    /* DCT-II basis (scipy's unnormalised type 2 up to a factor 2, which the
     * median comparison ignores), only the 8 lowest frequencies. */
    for (int k = 0; k < PHASH_LOW; k++)
        for (int n = 0; n < PHASH_SIDE; n++)
            cosk[k][n] = cos(M_PI * k * (2 * n + 1) / (2.0 * PHASH_SIDE));
    for (int k = 0; k < PHASH_LOW; k++) /* along the columns (axis 0) */
        for (int x = 0; x < PHASH_SIDE; x++) {
            double acc = 0;
            for (int y = 0; y < PHASH_SIDE; y++)
                acc += cosk[k][y] * grey[y][x];
            tmp[k][x] = acc;
        }
    for (int k = 0; k < PHASH_LOW; k++) /* then along the rows (axis 1) */
        for (int l = 0; l < PHASH_LOW; l++) {
            double acc = 0;
            for (int x = 0; x < PHASH_SIDE; x++)
                acc += cosk[l][x] * tmp[k][x];
            dct[k * PHASH_LOW + l] = acc;
        }
    memcpy(sorted, dct, sizeof(dct));
    qsort(sorted, PHASH_LOW * PHASH_LOW, sizeof(double), cmp_double);
    const double median = (sorted[31] + sorted[32]) / 2.0; /* numpy.median of 64 */
    uint64_t h = 0;
    for (int i = 0; i < PHASH_LOW * PHASH_LOW; i++)
        h = (h << 1) | (dct[i] > median ? 1u : 0u);
    *out = h;
    return AN_OK;
}

/* Adds weight w split linearly between the two bins around t (bin centres at
 * integers), clamped to [0, nbins - 1]. */
static void
soft_bin(float t, int nbins, int *i0, float *f)
{
    int i = (int)floorf(t);
    float frac = t - (float)i;
    if (i < 0) {
        i = 0;
        frac = 0;
    } else if (i >= nbins - 1) {
        i = nbins - 1;
        frac = 0;
    }
    *i0 = i;
    *f = frac;
}

static void
colour_histogram(const float *rgb, float *hist)
{
    memset(hist, 0, AN_DESC_COLOUR * sizeof(float));
    for (int i = 0; i < DESC_SIDE * DESC_SIDE; i++) {
        int b[3];
        float f[3];
        for (int c = 0; c < 3; c++)
            soft_bin(rgb[3 * i + c] / 64.0f - 0.5f, 4, &b[c], &f[c]);
        for (int corner = 0; corner < 8; corner++) {
            float w = 1.0f;
            int idx = 0;
            for (int c = 0; c < 3; c++) {
                const int up = (corner >> c) & 1;
                w *= up ? f[c] : 1.0f - f[c];
                idx = idx * 4 + (b[c] + up < 4 ? b[c] + up : 3);
            }
            hist[idx] += w;
        }
    }
}

/* The magnitude spectrum of the Sobel gradient orientation histogram: a
 * rotation of the image shifts the histogram circularly, which leaves |DFT|
 * unchanged (and so does a mirror, which reverses it). */
static void
orientation_spectrum(const float *grey, float *spec)
{
    double hist[ORIENT_BINS] = {0};
    for (int y = 1; y < DESC_SIDE - 1; y++)
        for (int x = 1; x < DESC_SIDE - 1; x++) {
#define G(dy, dx) ((double)grey[(y + (dy)) * DESC_SIDE + x + (dx)])
            const double gx = G(-1, 1) + 2 * G(0, 1) + G(1, 1) - G(-1, -1) - 2 * G(0, -1) -
                              G(1, -1);
            const double gy = G(1, -1) + 2 * G(1, 0) + G(1, 1) - G(-1, -1) - 2 * G(-1, 0) -
                              G(-1, 1);
#undef G
            const double m = sqrt(gx * gx + gy * gy);
            if (m == 0)
                continue;
            double t = (atan2(gy, gx) + M_PI) / (2 * M_PI) * ORIENT_BINS - 0.5;
            const double fl = floor(t);
            const double frac = t - fl;
            const int i = ((int)fl % ORIENT_BINS + ORIENT_BINS) % ORIENT_BINS;
            hist[i] += m * (1 - frac);
            hist[(i + 1) % ORIENT_BINS] += m * frac;
        }
    for (int k = 0; k < AN_DESC_ORIENT; k++) {
        double re = 0, im = 0;
        for (int j = 0; j < ORIENT_BINS; j++) {
            const double a = 2 * M_PI * j * k / ORIENT_BINS;
            re += hist[j] * cos(a);
            im -= hist[j] * sin(a);
        }
        spec[k] = (float)sqrt(re * re + im * im);
    }
}

static void
layout_grid(const float *rgb, float *grid)
{
    const int cell = DESC_SIDE / 4;
    double mean[3] = {0, 0, 0};
    memset(grid, 0, AN_DESC_LAYOUT * sizeof(float));
    for (int y = 0; y < DESC_SIDE; y++)
        for (int x = 0; x < DESC_SIDE; x++)
            for (int c = 0; c < 3; c++) {
                const float v = rgb[3 * (y * DESC_SIDE + x) + c];
                grid[3 * ((y / cell) * 4 + x / cell) + c] += v / (float)(cell * cell);
                mean[c] += v / (DESC_SIDE * DESC_SIDE);
            }
    for (int i = 0; i < 16; i++)
        for (int c = 0; c < 3; c++)
            grid[3 * i + c] -= (float)mean[c];
}

/* Scales v[0..n) to L2 norm sqrt(weight); returns weight, or 0 for a zero block. */
static double
normalise_block(float *v, int n, double weight)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)v[i] * v[i];
    if (ss <= 1e-12) {
        memset(v, 0, (size_t)n * sizeof(float));
        return 0;
    }
    const double k = sqrt(weight / ss);
    for (int i = 0; i < n; i++)
        v[i] = (float)(v[i] * k);
    return weight;
}

an_status
an_descriptor(const an_view *src, float *out, const an_allocator *alloc, an_error *err)
{
    const size_t n = (size_t)DESC_SIDE * DESC_SIDE;
    float *rgb = an_malloc(alloc, n * 4 * sizeof(float));
    if (rgb == NULL) {
        an_error_set(err, an_nomem(alloc), "cannot allocate the descriptor's scratch");
        return err->status;
    }
    float *grey = rgb + 3 * n;
    an_status s = reduce_rgb(src, DESC_SIDE, rgb, alloc, err);
    if (s == AN_OK) {
        for (size_t i = 0; i < n; i++)
            grey[i] = luma(rgb + 3 * i);
        colour_histogram(rgb, out);
        orientation_spectrum(grey, out + AN_DESC_COLOUR);
        layout_grid(rgb, out + AN_DESC_COLOUR + AN_DESC_ORIENT);
        double total = normalise_block(out, AN_DESC_COLOUR, 0.5);
        total += normalise_block(out + AN_DESC_COLOUR, AN_DESC_ORIENT, 0.2);
        total += normalise_block(out + AN_DESC_COLOUR + AN_DESC_ORIENT, AN_DESC_LAYOUT, 0.3);
        const float k = (float)(1.0 / sqrt(total)); /* total > 0: the colour block never is 0 */
        for (int i = 0; i < AN_DESC_LEN; i++)
            out[i] *= k;
    }
    an_free(alloc, rgb);
    return s;
}

int
an_hamming64(uint64_t a, uint64_t b)
{
    uint64_t x = a ^ b;
    int n = 0;
    while (x) {
        x &= x - 1;
        n++;
    }
    return n;
}
