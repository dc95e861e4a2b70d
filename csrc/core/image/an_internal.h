/*
 * an_internal.h - interfaces shared by the core's translation units only.
 *
 * decode.c drives two codecs (jpeg.c, png.c) that both deliver rows already in
 * the requested mode (channel order, alpha, depth), and the pixel helpers in
 * pixel.c that do what the libraries cannot: CMYK and colour-to-grey conversion,
 * box reduction for PNG scaling, and EXIF re-orientation.
 */
#ifndef AN_INTERNAL_H
#define AN_INTERNAL_H

#include "../an_core.h"

/* Sample layouts a codec can produce before the final per-row conversion. */
typedef enum an_pixfmt {
    AN_PIX_GRAY,
    AN_PIX_GA,
    AN_PIX_RGB,
    AN_PIX_RGBA,
    AN_PIX_CMYK,        /* plain CMYK, 0 = no ink */
    AN_PIX_CMYK_INV     /* Adobe-style inverted CMYK (what Photoshop writes) */
} an_pixfmt;

int an_pixfmt_channels(an_pixfmt fmt);

/* Convert n pixels from src to the layout of mode (never RGB->RGB: callers
 * decode straight into the output when no conversion is needed).  Colour to
 * grey uses the ITU-R 601 weights with Pillow's rounding; CMYK to RGB uses
 * Pillow's formula, so results match Pillow's convert() bit for bit. */
void an_convert_row8(an_pixfmt src, an_mode dst, const uint8_t *s, uint8_t *d, size_t n);
void an_convert_row16(an_pixfmt src, an_mode dst, const uint16_t *s, uint16_t *d, size_t n);

/* ceil(v / denom): the output size of libjpeg's DCT scaling, used for PNG too. */
uint32_t an_scaled_dim(uint32_t v, int denom);

/* Area-average a w x h image of pixel size ch*bps by denom into
 * an_scaled_dim(w) x an_scaled_dim(h); edge blocks average what they cover. */
void an_box_reduce(const uint8_t *src, uint32_t w, uint32_t h, int ch, int bps,
                   int denom, uint8_t *dst);

/* Apply EXIF orientation 2..8 to a w x h image of pix-byte pixels into dst
 * (dst is h x w for orientations 5..8). */
void an_orient(const uint8_t *src, uint32_t w, uint32_t h, size_t pix,
               int orientation, uint8_t *dst);

/* ---- codecs ---- */

typedef struct an_jpeg an_jpeg;
an_status an_jpeg_open(an_jpeg **out, const uint8_t *data, size_t len,
                       const an_decode_opts *opts, const an_info *info, int denom,
                       an_error *err);
void an_jpeg_dims(const an_jpeg *j, uint32_t *w, uint32_t *h);
an_status an_jpeg_run(an_jpeg *j, uint8_t *out, an_error *err);
void an_jpeg_close(an_jpeg *j);

typedef struct an_png an_png;
an_status an_png_open(an_png **out, const uint8_t *data, size_t len,
                      const an_decode_opts *opts, const an_info *info, an_error *err);
an_status an_png_run(an_png *p, uint8_t *out, an_error *err);
void an_png_close(an_png *p);

/* WebP, GIF, HEIF/AVIF (webp.c, gif.c, heif.c).  Each probe reads the header
 * (and, for animations, walks the chunks to count frames) without decoding
 * and allocates nothing; each open checks the format's own limits (frames,
 * frame=) before any pixel memory exists; each run writes codec_w x codec_h
 * pixels of the requested mode (uint16 samples with depth16, HEIF only). */
an_status an_webp_probe(const uint8_t *data, size_t len, an_info *info, an_error *err);
typedef struct an_webp an_webp;
an_status an_webp_open(an_webp **out, const uint8_t *data, size_t len,
                       const an_decode_opts *opts, const an_info *info, an_error *err);
an_status an_webp_run(an_webp *w, uint8_t *out, an_error *err);
void an_webp_close(an_webp *w);

an_status an_gif_probe(const uint8_t *data, size_t len, an_info *info, an_error *err);
typedef struct an_gif an_gif;
an_status an_gif_open(an_gif **out, const uint8_t *data, size_t len,
                      const an_decode_opts *opts, const an_info *info, an_error *err);
an_status an_gif_run(an_gif *g, uint8_t *out, an_error *err);
void an_gif_close(an_gif *g);

an_status an_heif_probe(const uint8_t *data, size_t len, an_info *info, an_error *err);
typedef struct an_heif an_heif;
an_status an_heif_open(an_heif **out, const uint8_t *data, size_t len,
                       const an_decode_opts *opts, const an_info *info, an_error *err);
/* The decoded size: the oriented size, or the stored one with orient off. */
void an_heif_dims(const an_heif *h, uint32_t *w, uint32_t *hgt);
an_status an_heif_run(an_heif *h, uint8_t *out, an_error *err);
void an_heif_close(an_heif *h);
/* 1 when libheif is built in and has a decoder for fmt (HEIC or AVIF). */
int an_heif_available(an_format fmt);

/* Shared by both codecs: limits that only depend on the stored size. */
an_status an_check_dims(const an_limits *lim, uint64_t w, uint64_t h, an_error *err);

#endif /* AN_INTERNAL_H */
