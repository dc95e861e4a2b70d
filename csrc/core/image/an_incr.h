/*
 * an_incr.h - incremental decoding: JPEG/PNG pixels as the bytes arrive.
 *
 * The caller feeds chunks of any size; the decoder buffers only the header
 * (the bytes before the first JPEG SOS / PNG IDAT), runs exactly the checks of
 * an_decoder_open() on it as soon as it is complete (limits, format, geometry),
 * then asks the caller for the output buffer and decodes every later chunk
 * straight into it: libjpeg through a suspending data source, 8-bit
 * non-interlaced PNGs through decode()'s own IDAT engine (png_idat.c), other
 * PNGs through libpng's progressive reader.  Between feeds only the bytes the codec could not
 * consume yet (a JPEG MCU or marker segment; libpng keeps its own) are kept.
 *
 *     an_incr_new()          options as for an_decoder_open()
 *     an_incr_feed()         any number of times; when the state becomes
 *                            AN_INCR_OUTPUT, the header is in:
 *     an_incr_info/shape()   ... then allocate shape.nbytes (zeroed unless
 *     an_incr_set_output()       strict) and hand it over
 *     an_incr_finish()       end of input: completes the image (strict: a
 *                            truncated stream is an error; tolerant: the part
 *                            that arrived, with err->warned set).  May stop in
 *                            AN_INCR_OUTPUT when the header itself only ends
 *                            at the end of input: set the output, call again.
 *     an_incr_close()        always
 *
 * The result is bit-identical to an_decode() of the concatenated input with
 * the same options.  After any error the decoder is AN_INCR_FAILED and every
 * further call fails with the same error.  Not thread-safe: one caller at a
 * time (the binding enforces it).
 */
#ifndef AN_INCR_H
#define AN_INCR_H

#include "../an_core.h"

typedef enum an_incr_state {
    AN_INCR_HEADER = 0, /* collecting the header */
    AN_INCR_OUTPUT,     /* header parsed: an_incr_set_output() is due */
    AN_INCR_BODY,       /* decoding into the output */
    AN_INCR_DONE,       /* finished: the output holds the image */
    AN_INCR_FAILED      /* an error happened; see an_incr_error() */
} an_incr_state;

typedef struct an_incr an_incr;

/* Checks the options and creates a decoder (owned by *out, to be closed).
 * opts->alloc must outlive the decoder. */
an_status an_incr_new(an_incr **out, const an_decode_opts *opts, an_error *err);

/* Consumes all len bytes.  Fails on limits (max_bytes on the running total,
 * the header's size limits), format errors as soon as they are certain, and
 * corrupt data (strict mode).  Feeding in AN_INCR_OUTPUT or after finishing
 * fails with AN_ERR_INVALID_ARG and leaves the decoder as it was (in
 * AN_INCR_OUTPUT, set the output first); every other failure moves it to
 * AN_INCR_FAILED. */
an_status an_incr_feed(an_incr *d, const uint8_t *data, size_t len, an_error *err);

/* The output buffer: an_incr_shape()'s nbytes, C-contiguous, zero-filled when
 * the decoder is tolerant (strict=0).  Borrowed until an_incr_close().  Decodes
 * the bytes buffered so far. */
an_status an_incr_set_output(an_incr *d, uint8_t *out, an_error *err);

/* End of input (see the file comment).  Returns AN_OK with the state DONE, or
 * with the state OUTPUT (then set the output and call again). */
an_status an_incr_finish(an_incr *d, an_error *err);

an_incr_state an_incr_get_state(const an_incr *d);
/* Valid from AN_INCR_OUTPUT on. */
const an_info *an_incr_info(const an_incr *d);
void an_incr_shape(const an_incr *d, an_shape *shape);
/* Bytes fed so far, and rows of the codec's output completed (progress). */
uint64_t an_incr_bytes_fed(const an_incr *d);
uint32_t an_incr_rows_done(const an_incr *d);
uint32_t an_incr_rows_total(const an_incr *d);
/* In AN_INCR_OUTPUT: 1 when bytes after the header are waiting (the output is
 * needed now), 0 when exactly the header was fed (the caller may wait for the
 * body before allocating). */
int an_incr_has_body(const an_incr *d);
/* The error that moved the decoder to AN_INCR_FAILED. */
const an_error *an_incr_error(const an_incr *d);
void an_incr_close(an_incr *d);

/* ---- internal: the geometry an_decoder_open() chose (decode.c) ---------- */

typedef struct an_geometry {
    int denom;                  /* DCT (JPEG) or box (PNG) scale denominator */
    uint32_t codec_w, codec_h;  /* what the codec writes */
    int png_scale;              /* PNG: box-reduce by denom after decoding */
    int orientation;            /* applied after decoding; 1 = none */
} an_geometry;

void an_decoder_geometry(const an_decoder *dec, an_geometry *g);

/* The buffer the codec writes into when a post-step follows (*stage NULL when
 * none does: the codec writes the output itself); zeroed unless strict. */
an_status an_stage_alloc(const an_geometry *g, const an_shape *shape, const an_decode_opts *opts,
                         uint8_t **stage, an_error *err);

/* decode()'s post-steps from stage into out: box reduction (PNG scale), then
 * EXIF orientation.  Nothing to do when stage is NULL. */
an_status an_post_steps(const an_geometry *g, const an_shape *shape, const an_allocator *a,
                        const uint8_t *stage, uint8_t *out, an_error *err);

/* ---- internal: the two incremental codecs ------------------------------- */

/* Each decodes into target (codec_w x codec_h pixels of the requested mode),
 * fed with an_i*_feed(); an_i*_finish() handles the end of input exactly as
 * the one-shot codec does at the end of its buffer.  *done is set once the
 * codec needs no more bytes.  (PNGs that decode() sends through png_idat.c
 * are fed to that same engine, an_png.h, instead of an_ipng.) */
typedef struct an_ijpeg an_ijpeg;
an_status an_ijpeg_open(an_ijpeg **out, const an_decode_opts *opts, const an_geometry *g,
                        uint8_t *target, an_error *err);
an_status an_ijpeg_feed(an_ijpeg *j, const uint8_t *data, size_t len, int *done, an_error *err);
an_status an_ijpeg_finish(an_ijpeg *j, an_error *err);
uint32_t an_ijpeg_rows(const an_ijpeg *j);
void an_ijpeg_close(an_ijpeg *j);

typedef struct an_ipng an_ipng;
an_status an_ipng_open(an_ipng **out, const an_decode_opts *opts, const an_geometry *g,
                       uint8_t *target, an_error *err);
an_status an_ipng_feed(an_ipng *p, const uint8_t *data, size_t len, int *done, an_error *err);
an_status an_ipng_finish(an_ipng *p, an_error *err);
uint32_t an_ipng_rows(const an_ipng *p);
void an_ipng_close(an_ipng *p);

/* Still WebP images (webp.c): WebPIDecoder writing width x height pixels of
 * opts->mode into target.  Animated WebP, GIF and HEIF are not decoded
 * incrementally: incremental.c collects them and decodes at the end, after
 * the same early header checks. */
typedef struct an_iwebp an_iwebp;
an_status an_iwebp_open(an_iwebp **out, const an_decode_opts *opts, const an_info *info,
                        uint32_t width, uint32_t height, uint8_t *target, an_error *err);
an_status an_iwebp_feed(an_iwebp *w, const uint8_t *data, size_t len, int *done, an_error *err);
an_status an_iwebp_finish(an_iwebp *w, an_error *err);
uint32_t an_iwebp_rows(const an_iwebp *w);
void an_iwebp_close(an_iwebp *w);

#endif /* AN_INCR_H */
