/*
 * an_encode.h - JPEG and PNG encoding of in-memory pixel arrays (Python-free).
 *
 * The input is described by an an_image_view: a base pointer plus byte strides
 * for rows, pixels and channels, so any NumPy layout (slices with steps,
 * transposes, negative strides) is encoded without first making a contiguous
 * copy.  Rows whose pixels are packed are handed to the codec in place; other
 * rows are gathered one at a time into a small row buffer.
 *
 * The encoded stream is written into an an_outbuf: a chain of core-allocated
 * chunks that grows geometrically and never moves what it already holds, so
 * the only copy of the output is the final one into the caller's buffer (the
 * binding's bytes object).
 *
 * Error discipline as in jpeg.c/png.c: the codec state lives in one context
 * struct, every exit goes through one close function, nothing is printed.
 * Failures: AN_ERR_ARRAY (the view cannot be encoded in that format: channel
 * count, sample size, dimensions), AN_ERR_INVALID_ARG (an option out of range),
 * AN_ERR_ENCODE (libjpeg/libpng refused), or the allocator's nomem status.
 */
#ifndef AN_ENCODE_H
#define AN_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "../an_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest side libjpeg can write (JPEG_MAX_DIMENSION). */
#define AN_JPEG_MAX_DIM 65500u
/* Largest side PNG allows (2^31 - 1). */
#define AN_PNG_MAX_DIM 0x7FFFFFFFu

/* A read-only view of pixels.  Sample (y, x, c) is at
 *     data + y * row_stride + x * pixel_stride + c * sample_stride
 * and is bytes_per_sample bytes long (2: a uint16 stored most significant byte
 * first when big_endian is set, least significant first otherwise; callers set
 * it from the host's or the array's byte order).  Strides may be negative or
 * zero; the caller guarantees every addressed sample stays readable for the
 * whole call. */
typedef struct an_image_view {
    const uint8_t *data;
    uint32_t width, height;
    int channels;           /* 1 grey, 2 grey+alpha, 3 colour, 4 colour+alpha */
    int bytes_per_sample;   /* 1 or 2 */
    int big_endian;         /* 2-byte samples: byte order (see above) */
    int bgr;                /* 3/4 channels are stored B, G, R(, A) */
    ptrdiff_t row_stride, pixel_stride, sample_stride;
} an_image_view;

/* ---- output buffer ---- */

typedef struct an_chunk an_chunk;

/* Invariant (between encoder calls): chunks are filled in order, only the tail
 * has free space, and size is the sum of the chunks' lens.  An initialised
 * outbuf must be freed with an_outbuf_free(), whatever happened. */
typedef struct an_outbuf {
    const an_allocator *alloc;
    an_chunk *head, *tail;
    size_t size;            /* bytes written so far */
    size_t first_cap;       /* capacity of the first chunk; 0 = the encoder's estimate */
} an_outbuf;

/* Prepares an empty buffer; allocates nothing.  first_cap is a size hint for
 * the first chunk (clamped to [4 KiB, 16 MiB]; 0 lets the encoder estimate
 * from the image size); each later chunk is as large as all before it. */
void an_outbuf_init(an_outbuf *b, const an_allocator *alloc, size_t first_cap);
/* Copies all b->size bytes, in order, to dst. */
void an_outbuf_copy(const an_outbuf *b, uint8_t *dst);
/* Frees every chunk; the buffer is empty (and reusable) afterwards. */
void an_outbuf_free(an_outbuf *b);

/* ---- JPEG ---- */

typedef enum an_subsampling {
    AN_SUB_444 = 0,
    AN_SUB_422,
    AN_SUB_420,
    AN_SUB_440,
    AN_SUB_411,
    AN_SUB_COUNT
} an_subsampling;

typedef struct an_jpeg_enc_opts {
    int quality;            /* 1..100, libjpeg's scale (baseline-compatible tables) */
    an_subsampling subsampling; /* chroma sampling; ignored for grey */
    int progressive;        /* libjpeg's standard progressive script */
    int optimize;           /* optimised Huffman tables (always on when progressive) */
    int drop_alpha;         /* 2/4 channels: encode without the last channel;
                             * without it such views fail with AN_ERR_ARRAY */
    const an_allocator *alloc; /* the output chunks and row buffer; NULL = malloc */
} an_jpeg_enc_opts;

void an_jpeg_enc_opts_init(an_jpeg_enc_opts *opts); /* 85, 4:2:0, baseline */

/* Encodes img as a baseline (or progressive) 8-bit JFIF JPEG, appending to out
 * (initialised by the caller, freed by the caller on success and failure).
 * 1 channel is written as greyscale, 3 as YCbCr, 2/4 only with drop_alpha.
 * Fails with AN_ERR_ARRAY for 16-bit samples, an unsupported channel count,
 * alpha without drop_alpha, or a side of 0 or over AN_JPEG_MAX_DIM;
 * AN_ERR_INVALID_ARG for a bad option; AN_ERR_ENCODE when libjpeg fails;
 * the allocator's nomem status when memory runs out. */
an_status an_encode_jpeg(const an_image_view *img, const an_jpeg_enc_opts *opts,
                         an_outbuf *out, an_error *err);

/* ---- PNG ---- */

typedef struct an_png_enc_opts {
    int compression;        /* zlib level 0..9 (0: stored, and no row filters) */
    const an_allocator *alloc; /* output chunks, row buffer and libpng/zlib state */
} an_png_enc_opts;

void an_png_enc_opts_init(an_png_enc_opts *opts); /* level 6 */

/* Encodes img as a non-interlaced PNG of colour type grey, grey+alpha, RGB or
 * RGBA (by channel count) and bit depth 8 or 16 (by bytes_per_sample), with
 * no ancillary chunks, appending to out (see an_encode_jpeg for ownership).
 * Fails with AN_ERR_ARRAY for an unsupported layout or a side of 0 or over
 * AN_PNG_MAX_DIM, AN_ERR_INVALID_ARG for a bad level, AN_ERR_ENCODE when libpng
 * fails, the allocator's nomem status when memory runs out. */
an_status an_encode_png(const an_image_view *img, const an_png_enc_opts *opts,
                        an_outbuf *out, an_error *err);

#ifdef __cplusplus
}
#endif
#endif /* AN_ENCODE_H */
