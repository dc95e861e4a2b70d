/*
 * pixel.c - the pixel work libjpeg and libpng do not do for us.
 *
 * Conversions follow Pillow's integer formulas exactly (ITU-R 601 luma with
 * 16-bit fixed-point weights, CMYK via MULDIV255) so that amulet_native and
 * Pillow agree pixel for pixel on the same decoded samples.  All loops are plain
 * C over contiguous rows; the compiler vectorises the simple ones.
 */
#include <string.h>

#include "an_internal.h"

int
an_pixfmt_channels(an_pixfmt fmt)
{
    switch (fmt) {
    case AN_PIX_GRAY: return 1;
    case AN_PIX_GA: return 2;
    case AN_PIX_RGB: return 3;
    default: return 4;
    }
}

int
an_mode_channels(an_mode mode)
{
    return mode == AN_MODE_BGR ? 3 : (int)mode;
}

/* Pillow's L24: L = R * 299/1000 + G * 587/1000 + B * 114/1000, rounded. */
#define LUMA8(r, g, b) (uint8_t)(((r) * 19595u + (g) * 38470u + (b) * 7471u + 0x8000u) >> 16)
#define LUMA16(r, g, b) \
    (uint16_t)(((uint64_t)(r) * 19595u + (uint64_t)(g) * 38470u + (uint64_t)(b) * 7471u + 0x8000u) >> 16)
/* Pillow's MULDIV255: a * b / 255, rounded. */
static inline unsigned
muldiv255(unsigned a, unsigned b)
{
    unsigned t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

#if defined(__GNUC__)
#define AN_INLINE static inline __attribute__((always_inline))
#else
#define AN_INLINE static inline
#endif

AN_INLINE void
write_px8(an_mode dst, uint8_t *d, unsigned r, unsigned g, unsigned b, unsigned a)
{
    switch (dst) {
    case AN_MODE_L: d[0] = LUMA8(r, g, b); break;
    case AN_MODE_LA: d[0] = LUMA8(r, g, b); d[1] = (uint8_t)a; break;
    case AN_MODE_RGB: d[0] = (uint8_t)r; d[1] = (uint8_t)g; d[2] = (uint8_t)b; break;
    case AN_MODE_BGR: d[0] = (uint8_t)b; d[1] = (uint8_t)g; d[2] = (uint8_t)r; break;
    case AN_MODE_RGBA:
        d[0] = (uint8_t)r; d[1] = (uint8_t)g; d[2] = (uint8_t)b; d[3] = (uint8_t)a;
        break;
    }
}

/* Inlined once per output mode (see an_convert_row8), so that dst and dc are
 * constants and write_px8's switch disappears from the pixel loops. */
AN_INLINE void
convert8(an_pixfmt src, an_mode dst, const uint8_t *s, uint8_t *d, size_t n)
{
    const int dc = an_mode_channels(dst);
    size_t i;
    switch (src) {
    case AN_PIX_GRAY:
        if (dst == AN_MODE_LA) {
            for (i = 0; i < n; i++) {
                d[2 * i] = s[i];
                d[2 * i + 1] = 255;
            }
            return;
        }
        for (i = 0; i < n; i++, d += dc)
            write_px8(dst, d, s[i], s[i], s[i], 255);
        return;
    case AN_PIX_GA:
        for (i = 0; i < n; i++, s += 2, d += dc)
            write_px8(dst, d, s[0], s[0], s[0], s[1]);
        return;
    case AN_PIX_RGB:
        if (dst == AN_MODE_L) {
            for (i = 0; i < n; i++, s += 3)
                d[i] = LUMA8(s[0], s[1], s[2]);
            return;
        }
        for (i = 0; i < n; i++, s += 3, d += dc)
            write_px8(dst, d, s[0], s[1], s[2], 255);
        return;
    case AN_PIX_RGBA:
        for (i = 0; i < n; i++, s += 4, d += dc)
            write_px8(dst, d, s[0], s[1], s[2], s[3]);
        return;
    case AN_PIX_CMYK:
    case AN_PIX_CMYK_INV: {
        const unsigned inv = (src == AN_PIX_CMYK_INV) ? 255u : 0u;
        for (i = 0; i < n; i++, s += 4, d += dc) {
            unsigned c = s[0] ^ inv, m = s[1] ^ inv, y = s[2] ^ inv, k = s[3] ^ inv;
            unsigned nk = 255u - k;
            write_px8(dst, d, nk - muldiv255(c, nk), nk - muldiv255(m, nk),
                      nk - muldiv255(y, nk), 255);
        }
        return;
    }
    }
}

void
an_convert_row8(an_pixfmt src, an_mode dst, const uint8_t *s, uint8_t *d, size_t n)
{
    switch (dst) {
    case AN_MODE_L: convert8(src, AN_MODE_L, s, d, n); break;
    case AN_MODE_LA: convert8(src, AN_MODE_LA, s, d, n); break;
    case AN_MODE_RGB: convert8(src, AN_MODE_RGB, s, d, n); break;
    case AN_MODE_BGR: convert8(src, AN_MODE_BGR, s, d, n); break;
    case AN_MODE_RGBA: convert8(src, AN_MODE_RGBA, s, d, n); break;
    }
}

void
an_convert_row16(an_pixfmt src, an_mode dst, const uint16_t *s, uint16_t *d, size_t n)
{
    const int dc = an_mode_channels(dst);
    const int sc = an_pixfmt_channels(src);
    for (size_t i = 0; i < n; i++, s += sc, d += dc) {
        unsigned r, g, b, a = 65535u;
        if (src == AN_PIX_GRAY || src == AN_PIX_GA) {
            r = g = b = s[0];
            if (src == AN_PIX_GA)
                a = s[1];
        } else {
            r = s[0]; g = s[1]; b = s[2];
            if (src == AN_PIX_RGBA)
                a = s[3];
        }
        switch (dst) {
        case AN_MODE_L: d[0] = LUMA16(r, g, b); break;
        case AN_MODE_LA: d[0] = LUMA16(r, g, b); d[1] = (uint16_t)a; break;
        case AN_MODE_RGB: d[0] = (uint16_t)r; d[1] = (uint16_t)g; d[2] = (uint16_t)b; break;
        case AN_MODE_BGR: d[0] = (uint16_t)b; d[1] = (uint16_t)g; d[2] = (uint16_t)r; break;
        case AN_MODE_RGBA:
            d[0] = (uint16_t)r; d[1] = (uint16_t)g; d[2] = (uint16_t)b; d[3] = (uint16_t)a;
            break;
        }
    }
}

uint32_t
an_scaled_dim(uint32_t v, int denom)
{
    return (uint32_t)(((uint64_t)v + (uint64_t)denom - 1) / (uint64_t)denom);
}

void
an_box_reduce(const uint8_t *src, uint32_t w, uint32_t h, int ch, int bps, int denom,
              uint8_t *dst)
{
    const uint32_t ow = an_scaled_dim(w, denom), oh = an_scaled_dim(h, denom);
    const size_t sstride = (size_t)w * ch * bps;
    uint64_t acc[4];
    for (uint32_t oy = 0; oy < oh; oy++) {
        uint32_t y0 = oy * (uint32_t)denom, y1 = y0 + (uint32_t)denom;
        if (y1 > h)
            y1 = h;
        for (uint32_t ox = 0; ox < ow; ox++) {
            uint32_t x0 = ox * (uint32_t)denom, x1 = x0 + (uint32_t)denom;
            if (x1 > w)
                x1 = w;
            memset(acc, 0, sizeof(acc));
            for (uint32_t y = y0; y < y1; y++) {
                const uint8_t *row = src + (size_t)y * sstride;
                for (uint32_t x = x0; x < x1; x++)
                    for (int c = 0; c < ch; c++) {
                        size_t idx = (size_t)x * ch + c;
                        acc[c] += bps == 1 ? row[idx] : ((const uint16_t *)(const void *)row)[idx];
                    }
            }
            uint64_t count = (uint64_t)(y1 - y0) * (x1 - x0);
            for (int c = 0; c < ch; c++) {
                uint64_t v = (acc[c] + count / 2) / count;
                size_t idx = ((size_t)oy * ow + ox) * ch + c;
                if (bps == 1)
                    dst[idx] = (uint8_t)v;
                else
                    ((uint16_t *)(void *)dst)[idx] = (uint16_t)v;
            }
        }
    }
}

void
an_orient(const uint8_t *src, uint32_t w, uint32_t h, size_t pix, int orientation,
          uint8_t *dst)
{
    /* For source pixel (x, y) the destination is (x0 + x*dxx + y*dxy,
     * y0 + x*dyx + y*dyy) in an image dw pixels wide. */
    const int64_t W = w, H = h;
    int64_t dw = W, x0 = 0, y0 = 0, dxx = 1, dxy = 0, dyx = 0, dyy = 1;
    switch (orientation) {
    case 2: x0 = W - 1; dxx = -1; break;                              /* mirror */
    case 3: x0 = W - 1; y0 = H - 1; dxx = -1; dyy = -1; break;        /* 180 */
    case 4: y0 = H - 1; dyy = -1; break;                              /* flip */
    case 5: dw = H; dxx = 0; dxy = 1; dyx = 1; dyy = 0; break;        /* transpose */
    case 6: dw = H; x0 = H - 1; dxx = 0; dxy = -1; dyx = 1; dyy = 0; break; /* 90 cw */
    case 7: dw = H; x0 = H - 1; y0 = W - 1; dxx = 0; dxy = -1; dyx = -1; dyy = 0; break;
    case 8: dw = H; y0 = W - 1; dxx = 0; dxy = 1; dyx = -1; dyy = 0; break; /* 90 ccw */
    default:
        memcpy(dst, src, (size_t)w * h * pix);
        return;
    }
    /* Destination offset (in pixels) of source (x, y): base + x*step_x + y*step_y. */
    const int64_t step_x = dyx * dw + dxx, step_y = dyy * dw + dxy;
    const int64_t base = y0 * dw + x0;
    for (int64_t y = 0; y < H; y++) {
        const uint8_t *s = src + (size_t)y * (size_t)w * pix;
        int64_t off = base + y * step_y;
        switch (pix) {
        case 1:
            for (int64_t x = 0; x < W; x++, off += step_x)
                dst[off] = s[x];
            break;
        case 3:
            for (int64_t x = 0; x < W; x++, off += step_x, s += 3)
                memcpy(dst + off * 3, s, 3);
            break;
        case 4:
            for (int64_t x = 0; x < W; x++, off += step_x, s += 4)
                memcpy(dst + off * 4, s, 4);
            break;
        default:
            for (int64_t x = 0; x < W; x++, off += step_x, s += pix)
                memcpy(dst + off * (int64_t)pix, s, pix);
            break;
        }
    }
}
