/*
 * resize.c - separable resampling: exact area averaging and Pillow's bilinear.
 *
 * Design, after Pillow's libImaging/Resample.c: the 2-D filter is two 1-D
 * passes.  For each axis a table gives, per output pixel, the first input
 * index, the number of taps and fixed-point weights (computed once, in
 * doubles, then rounded to integers), so the inner loops are integer
 * multiply-adds with no per-pixel floating point.  The horizontal pass runs
 * first over only the input rows the vertical pass will read, into an
 * intermediate of the source's sample type; the vertical pass accumulates
 * whole rows (sequential memory, vectorisable) instead of walking columns.
 * An axis whose size does not change is not filtered at all, so equal sizes
 * copy exactly and a pure vertical resize reads the source directly.
 *
 * uint8 uses Pillow's arithmetic exactly (22 fractional bits, 32-bit sums,
 * rounding of the intermediate to 8 bits), so bilinear output matches
 * Image.resize(BILINEAR) and area output matches Image.resize(BOX) at integer
 * factors.  uint16 uses 30 fractional bits with 64-bit sums, and its weights
 * are corrected to sum to exactly one so flat areas stay flat at any factor.
 *
 * Sources are strided views: rows that are packed pixel after pixel are read
 * in place; anything else (column/channel strides, negative strides,
 * unaligned uint16) is gathered one row at a time into a scratch row.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif
#include <math.h>
#include <string.h>

#include "an_resize.h"

#if defined(__GNUC__)
#define AN_INLINE static inline __attribute__((always_inline))
#else
#define AN_INLINE static inline
#endif

#define PREC8 22
#define PREC16 30

/* Per-axis filter table.  Invariant: for every output index i,
 * first[i] + count[i] <= the input size and 1 <= count[i] <= ksize; the
 * weights of i are k[i*ksize .. i*ksize+count[i]-1]. */
typedef struct axis {
    uint32_t in, out;
    uint32_t ksize;
    uint32_t *first;
    uint32_t *count;
    int32_t *k;
} axis;

static void
axis_free(const an_allocator *a, axis *ax)
{
    an_free(a, ax->first);
    an_free(a, ax->count);
    an_free(a, ax->k);
    ax->first = ax->count = NULL;
    ax->k = NULL;
}

static double
triangle(double x)
{
    if (x < 0.0)
        x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Converts the normalised weights w[0..n-1] of one output pixel to fixed
 * point.  8-bit: Pillow's rounding, bit for bit.  16-bit: rounded, then the
 * residual goes to the largest weight so that the sum is exactly one. */
static void
fix_weights(const double *w, uint32_t n, int prec, int32_t *k)
{
    const double one = (double)((int64_t)1 << prec);
    if (prec == PREC8) {
        for (uint32_t x = 0; x < n; x++)
            k[x] = (int32_t)(w[x] < 0 ? -0.5 + w[x] * one : 0.5 + w[x] * one);
        return;
    }
    int64_t sum = 0;
    uint32_t big = 0;
    for (uint32_t x = 0; x < n; x++) {
        k[x] = (int32_t)llround(w[x] * one);
        sum += k[x];
        if (k[x] > k[big])
            big = x;
    }
    k[big] += (int32_t)(((int64_t)1 << prec) - sum);
}

/* Builds the table mapping in -> out samples along one axis. */
static an_status
axis_init(axis *ax, uint32_t in, uint32_t out, an_resize_method method, int prec,
          const an_allocator *a, an_error *err)
{
    double *w = NULL;
    size_t nk;
    uint64_t ks;
    const double scale = (double)in / (double)out;
    const double filterscale = scale > 1.0 ? scale : 1.0;
    const double support = 1.0 * filterscale; /* the triangle's support is 1 */

    memset(ax, 0, sizeof(*ax));
    ax->in = in;
    ax->out = out;
    if (method == AN_RESIZE_AREA)
        ks = ((uint64_t)in + out - 1) / out + 1;
    else
        ks = (uint64_t)ceil(support) * 2 + 1;
    if (ks > in)
        ks = in; /* no output pixel can read more than the whole axis */
    ax->ksize = (uint32_t)ks;
    if (!an_mul_size(out, ax->ksize, &nk) || !an_mul_size(nk, sizeof(int32_t), &nk)) {
        an_error_set(err, AN_ERR_INVALID_ARG, "resize filter table size overflows");
        return AN_ERR_INVALID_ARG;
    }
    ax->first = an_malloc(a, (size_t)out * sizeof(uint32_t));
    ax->count = an_malloc(a, (size_t)out * sizeof(uint32_t));
    ax->k = an_malloc(a, nk);
    w = an_malloc(a, (size_t)ax->ksize * sizeof(double));
    if (ax->first == NULL || ax->count == NULL || ax->k == NULL || w == NULL) {
        an_free(a, w);
        axis_free(a, ax);
        an_error_set(err, an_nomem(a), "cannot allocate the resize filter tables");
        return err->status;
    }

    for (uint32_t i = 0; i < out; i++) {
        uint64_t lo, hi;
        if (method == AN_RESIZE_AREA) {
            /* In units of 1/(in*out) of the axis: input pixel x spans
             * [x*out, (x+1)*out), output pixel i spans [i*in, (i+1)*in); the
             * overlaps are exact integers and sum to in. */
            const uint64_t a0 = (uint64_t)i * in, a1 = a0 + in;
            lo = a0 / out;
            hi = (a1 + out - 1) / out;
            if (hi > in)
                hi = in;
            for (uint64_t x = lo; x < hi; x++) {
                uint64_t s0 = x * out, s1 = s0 + out;
                uint64_t o = (s1 < a1 ? s1 : a1) - (s0 > a0 ? s0 : a0);
                w[x - lo] = (double)o / (double)in;
            }
        } else {
            /* Pillow's precompute_coeffs(): pixel centres, support scaled by
             * the downscale factor, weights normalised to sum to one. */
            const double center = ((double)i + 0.5) * scale, ss = 1.0 / filterscale;
            double lo_d = center - support + 0.5, hi_d = center + support + 0.5, ww = 0.0;
            lo = lo_d < 0.0 ? 0 : (uint64_t)lo_d;
            hi = hi_d > (double)in ? in : (uint64_t)hi_d;
            if (lo >= in)
                lo = in - 1;
            if (hi <= lo)
                hi = lo + 1;
            for (uint64_t x = lo; x < hi; x++) {
                w[x - lo] = triangle(((double)x - center + 0.5) * ss);
                ww += w[x - lo];
            }
            if (ww != 0.0)
                for (uint64_t x = lo; x < hi; x++)
                    w[x - lo] /= ww;
        }
        if (hi - lo > ax->ksize)
            hi = lo + ax->ksize; /* cannot happen; keeps the invariant provable */
        ax->first[i] = (uint32_t)lo;
        ax->count[i] = (uint32_t)(hi - lo);
        fix_weights(w, ax->count[i], prec, ax->k + (size_t)i * ax->ksize);
    }
    an_free(a, w);
    return AN_OK;
}

/* ---- reading strided source rows -------------------------------------- */

/* Yields row y of a view as a packed row of width*channels samples: a pointer
 * into the source when it is laid out that way, else a gathered copy in
 * scratch (valid until the next call). */
typedef struct rows {
    const an_view *v;
    int packed;
    uint8_t *scratch;
} rows;

static int
view_is_packed(const an_view *v)
{
    const ptrdiff_t bps = v->bytes_per_sample;
    return v->col_stride == bps * v->channels && (v->channels == 1 || v->chan_stride == bps) &&
           ((uintptr_t)v->data % (uintptr_t)bps) == 0 && v->row_stride % bps == 0;
}

static const uint8_t *
rows_get(const rows *r, uint32_t y)
{
    const an_view *v = r->v;
    const uint8_t *p = v->data + (ptrdiff_t)y * v->row_stride;
    if (r->packed)
        return p;
    const int C = v->channels;
    if (v->bytes_per_sample == 1) {
        uint8_t *d = r->scratch;
        for (uint32_t x = 0; x < v->width; x++, p += v->col_stride)
            for (int c = 0; c < C; c++)
                *d++ = p[c * v->chan_stride];
    } else {
        uint8_t *d = r->scratch;
        for (uint32_t x = 0; x < v->width; x++, p += v->col_stride)
            for (int c = 0; c < C; c++, d += 2)
                memcpy(d, p + c * v->chan_stride, 2);
    }
    return r->scratch;
}

/* ---- the two passes, once per sample type ------------------------------- */

AN_INLINE uint8_t
clip8(int32_t v)
{
    v >>= PREC8;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

AN_INLINE uint16_t
clip16(int64_t v)
{
    v >>= PREC16;
    return (uint16_t)(v < 0 ? 0 : v > 65535 ? 65535 : v);
}

/* One horizontally filtered row with a compile-time channel count C. */
#define DEFINE_HROW(NAME, T, ACC, PREC, CLIP)                                              \
    AN_INLINE void NAME##_c(const T *in, T *out, const axis *ax, const int C)              \
    {                                                                                      \
        for (uint32_t i = 0; i < ax->out; i++) {                                           \
            const int32_t *k = ax->k + (size_t)i * ax->ksize;                              \
            const T *p = in + (size_t)ax->first[i] * C;                                    \
            const uint32_t n = ax->count[i];                                               \
            ACC s0 = (ACC)1 << (PREC - 1), s1 = s0, s2 = s0, s3 = s0;                      \
            for (uint32_t x = 0; x < n; x++, p += C) {                                     \
                s0 += (ACC)p[0] * k[x];                                                    \
                if (C > 1)                                                                 \
                    s1 += (ACC)p[1] * k[x];                                                \
                if (C > 2)                                                                 \
                    s2 += (ACC)p[2] * k[x];                                                \
                if (C > 3)                                                                 \
                    s3 += (ACC)p[3] * k[x];                                                \
            }                                                                              \
            out[0] = CLIP(s0);                                                             \
            if (C > 1)                                                                     \
                out[1] = CLIP(s1);                                                         \
            if (C > 2)                                                                     \
                out[2] = CLIP(s2);                                                         \
            if (C > 3)                                                                     \
                out[3] = CLIP(s3);                                                         \
            out += C;                                                                      \
        }                                                                                  \
    }                                                                                      \
    static void NAME(const T *in, T *out, const axis *ax, int C)                           \
    {                                                                                      \
        switch (C) {                                                                       \
        case 1: NAME##_c(in, out, ax, 1); break;                                           \
        case 2: NAME##_c(in, out, ax, 2); break;                                           \
        case 3: NAME##_c(in, out, ax, 3); break;                                           \
        default: NAME##_c(in, out, ax, 4); break;                                          \
        }                                                                                  \
    }

DEFINE_HROW(hrow8, uint8_t, int32_t, PREC8, clip8)
DEFINE_HROW(hrow16, uint16_t, int64_t, PREC16, clip16)

/* Output row i of the vertical pass: acc holds n samples of accumulator. */
#define DEFINE_VROW(NAME, T, ACC, PREC, CLIP)                                              \
    static void NAME(const rows *src, const axis *ax, uint32_t i, uint32_t row0, size_t n, \
                     ACC *acc, T *out)                                                     \
    {                                                                                      \
        const int32_t *k = ax->k + (size_t)i * ax->ksize;                                  \
        const ACC half = (ACC)1 << (PREC - 1);                                             \
        for (size_t j = 0; j < n; j++)                                                     \
            acc[j] = half;                                                                 \
        for (uint32_t y = 0; y < ax->count[i]; y++) {                                      \
            const T *r = (const T *)(const void *)rows_get(src, ax->first[i] + y - row0);  \
            const ACC w = k[y];                                                            \
            for (size_t j = 0; j < n; j++)                                                 \
                acc[j] += (ACC)r[j] * w;                                                   \
        }                                                                                  \
        for (size_t j = 0; j < n; j++)                                                     \
            out[j] = CLIP(acc[j]);                                                         \
    }

DEFINE_VROW(vrow8, uint8_t, int32_t, PREC8, clip8)
DEFINE_VROW(vrow16, uint16_t, int64_t, PREC16, clip16)

/* ---- area at integer factors ------------------------------------------- */

/* Exact round(s / n) by multiplication (Granlund & Montgomery): with
 * l = ceil(log2 n), N bits enough for s + n/2 and m = floor(2^(N+l) / n) + 1,
 * floor(x * m / 2^(N+l)) == floor(x / n) for every x < 2^N; x*m < 2^64 for
 * n <= 2^15 and N <= 16 + l. */
typedef struct divider {
    uint64_t m;
    int shift;
    uint32_t half;
} divider;

static divider
divider_init(uint32_t n, int sample_bits)
{
    int l = 0;
    while (((uint64_t)1 << l) < n)
        l++;
    divider d;
    d.shift = sample_bits + 2 * l;
    d.m = (((uint64_t)1 << d.shift) / n) + 1;
    d.half = n / 2;
    return d;
}

/* One output row of a kx-by-ky block average: rs holds the column sums of
 * the ky input rows (width * C of them). */
#define DEFINE_BLOCKROW(NAME, T)                                                           \
    AN_INLINE void NAME##_c(const uint32_t *rs, T *out, uint32_t out_w, uint32_t kx,       \
                            const divider *d, const int C)                                 \
    {                                                                                      \
        for (uint32_t i = 0; i < out_w; i++, rs += (size_t)kx * C, out += C)               \
            for (int c = 0; c < C; c++) {                                                  \
                uint64_t s = d->half;                                                      \
                for (uint32_t x = 0; x < kx; x++)                                          \
                    s += rs[(size_t)x * C + c];                                            \
                out[c] = (T)((s * d->m) >> d->shift);                                      \
            }                                                                              \
    }                                                                                      \
    static void NAME(const uint32_t *rs, T *out, uint32_t out_w, uint32_t kx,              \
                     const divider *d, int C)                                              \
    {                                                                                      \
        /* 2x2 (the common halving) gets its own unrolled copy. */                       \
        switch (C * 8 + (kx == 2)) {                                                       \
        case 8: NAME##_c(rs, out, out_w, kx, d, 1); break;                                 \
        case 9: NAME##_c(rs, out, out_w, 2, d, 1); break;                                  \
        case 16: NAME##_c(rs, out, out_w, kx, d, 2); break;                                \
        case 17: NAME##_c(rs, out, out_w, 2, d, 2); break;                                 \
        case 24: NAME##_c(rs, out, out_w, kx, d, 3); break;                                \
        case 25: NAME##_c(rs, out, out_w, 2, d, 3); break;                                 \
        case 33: NAME##_c(rs, out, out_w, 2, d, 4); break;                                 \
        default: NAME##_c(rs, out, out_w, kx, d, 4); break;                                \
        }                                                                                  \
    }

DEFINE_BLOCKROW(blockrow8, uint8_t)
DEFINE_BLOCKROW(blockrow16, uint16_t)

/* Area resize when both factors are integers: one pass, one rounding (the
 * exact rounded block mean, like Pillow's reduce()).  rs: width*C sums. */
static void
area_blocks(const rows *in, uint32_t dst_w, uint32_t dst_h, uint32_t *rs, uint8_t *dst)
{
    const an_view *v = in->v;
    const int C = v->channels, wide = v->bytes_per_sample == 2;
    const uint32_t kx = v->width / dst_w, ky = v->height / dst_h;
    const size_t n = (size_t)v->width * C, out_n = (size_t)dst_w * C;
    const divider d = divider_init(kx * ky, wide ? 16 : 8);
    for (uint32_t oy = 0; oy < dst_h; oy++) {
        memset(rs, 0, n * sizeof(uint32_t));
        for (uint32_t r = 0; r < ky; r++) {
            const uint8_t *row = rows_get(in, oy * ky + r);
            if (wide) {
                const uint16_t *p = (const uint16_t *)(const void *)row;
                for (size_t j = 0; j < n; j++)
                    rs[j] += p[j];
            } else {
                for (size_t j = 0; j < n; j++)
                    rs[j] += row[j];
            }
        }
        if (wide)
            blockrow16(rs, (uint16_t *)(void *)dst + (size_t)oy * out_n, dst_w, kx, &d, C);
        else
            blockrow8(rs, dst + (size_t)oy * out_n, dst_w, kx, &d, C);
    }
}

/* ---- driver -------------------------------------------------------------- */

static an_status
check_view(const an_view *v, an_error *err)
{
    if (v->data == NULL || v->width == 0 || v->height == 0) {
        an_error_set(err, AN_ERR_ARRAY, "cannot resize an empty array");
        return AN_ERR_ARRAY;
    }
    if (v->channels < 1 || v->channels > 4) {
        an_error_set(err, AN_ERR_ARRAY, "expected 1 to 4 channels, got %d", v->channels);
        return AN_ERR_ARRAY;
    }
    if (v->bytes_per_sample != 1 && v->bytes_per_sample != 2) {
        an_error_set(err, AN_ERR_ARRAY, "expected 1- or 2-byte samples");
        return AN_ERR_ARRAY;
    }
    return AN_OK;
}

an_status
an_resize(const an_view *src, uint8_t *dst, uint32_t dst_w, uint32_t dst_h,
          an_resize_method method, const an_allocator *alloc, an_error *err)
{
    const int C = src->channels, bps = src->bytes_per_sample, wide = bps == 2;
    const int prec = wide ? PREC16 : PREC8;
    const size_t acc_size = wide ? sizeof(int64_t) : sizeof(int32_t);
    axis hx, vy;
    rows in = {src, 0, NULL}, mid = {NULL, 1, NULL};
    an_view midv;
    uint8_t *tmp = NULL;
    void *acc = NULL;
    size_t in_row, out_row, out_n, sz;
    an_status st;

    memset(&hx, 0, sizeof(hx));
    memset(&vy, 0, sizeof(vy));
    err->status = AN_OK;
    err->detail[0] = '\0';
    if ((st = check_view(src, err)) != AN_OK)
        return st;
    if (dst_w == 0 || dst_h == 0) {
        an_error_set(err, AN_ERR_INVALID_ARG, "output size must be at least 1x1, got %ux%u",
                     dst_w, dst_h);
        return AN_ERR_INVALID_ARG;
    }
    if (method != AN_RESIZE_AREA && method != AN_RESIZE_BILINEAR) {
        an_error_set(err, AN_ERR_INVALID_ARG, "unknown resize method %d", (int)method);
        return AN_ERR_INVALID_ARG;
    }
    if (!an_mul4_size(src->width, (size_t)C, (size_t)bps, 1, &in_row) ||
        !an_mul4_size(dst_w, (size_t)C, (size_t)bps, 1, &out_row) ||
        !an_mul_size(dst_w, (size_t)C, &out_n) || !an_mul_size(out_row, dst_h, &sz)) {
        an_error_set(err, AN_ERR_INVALID_ARG, "resize size overflows");
        return AN_ERR_INVALID_ARG;
    }

    const int need_h = dst_w != src->width, need_v = dst_h != src->height;
    in.packed = view_is_packed(src);
    if (!in.packed && (in.scratch = an_malloc(alloc, in_row)) == NULL)
        goto nomem;

    /* Whole-number factors of at most 2^15 pixels per block: fused path. */
    if (method == AN_RESIZE_AREA && (need_h || need_v) && src->width % dst_w == 0 &&
        src->height % dst_h == 0 &&
        (uint64_t)(src->width / dst_w) * (src->height / dst_h) <= 32768) {
        if (!an_mul_size(in_row / (size_t)bps, sizeof(uint32_t), &sz) ||
            (acc = an_malloc(alloc, sz)) == NULL)
            goto nomem;
        area_blocks(&in, dst_w, dst_h, acc, dst);
        st = AN_OK;
        goto done;
    }

    if (need_h && (st = axis_init(&hx, src->width, dst_w, method, prec, alloc, err)) != AN_OK)
        goto done;
    if (need_v && (st = axis_init(&vy, src->height, dst_h, method, prec, alloc, err)) != AN_OK)
        goto done;
    if (need_v && (acc = an_malloc(alloc, out_n * acc_size)) == NULL)
        goto nomem;

    if (!need_h && !need_v) {
        for (uint32_t y = 0; y < dst_h; y++)
            memcpy(dst + (size_t)y * out_row, rows_get(&in, y), out_row);
    } else if (!need_v) {
        for (uint32_t y = 0; y < dst_h; y++) {
            const void *r = rows_get(&in, y);
            void *o = dst + (size_t)y * out_row;
            if (wide)
                hrow16(r, o, &hx, C);
            else
                hrow8(r, o, &hx, C);
        }
    } else {
        /* The vertical pass reads either the source itself or the rows
         * [row0, row1) of the horizontally filtered intermediate. */
        const rows *vsrc = &in;
        uint32_t row0 = 0;
        if (need_h) {
            uint32_t row1 = vy.first[dst_h - 1] + vy.count[dst_h - 1];
            row0 = vy.first[0];
            if (!an_mul_size(out_row, row1 - row0, &sz)) {
                an_error_set(err, AN_ERR_INVALID_ARG, "resize size overflows");
                st = AN_ERR_INVALID_ARG;
                goto done;
            }
            if ((tmp = an_malloc(alloc, sz)) == NULL)
                goto nomem;
            for (uint32_t y = row0; y < row1; y++) {
                const void *r = rows_get(&in, y);
                void *o = tmp + (size_t)(y - row0) * out_row;
                if (wide)
                    hrow16(r, o, &hx, C);
                else
                    hrow8(r, o, &hx, C);
            }
            midv = (an_view){tmp, dst_w, row1 - row0, C, bps, (ptrdiff_t)out_row,
                             (ptrdiff_t)C * bps, bps};
            mid.v = &midv;
            vsrc = &mid;
        }
        for (uint32_t i = 0; i < dst_h; i++) {
            void *o = dst + (size_t)i * out_row;
            if (wide)
                vrow16(vsrc, &vy, i, row0, out_n, acc, o);
            else
                vrow8(vsrc, &vy, i, row0, out_n, acc, o);
        }
    }
    st = AN_OK;
    goto done;

nomem:
    st = an_nomem(alloc);
    an_error_set(err, st, "cannot allocate resize buffers");
done:
    an_free(alloc, tmp);
    an_free(alloc, acc);
    an_free(alloc, in.scratch);
    axis_free(alloc, &hx);
    axis_free(alloc, &vy);
    return st;
}
