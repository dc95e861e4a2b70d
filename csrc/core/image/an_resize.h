/*
 * an_resize.h - separable image resampling (area and bilinear), Python-free.
 *
 * The source is described by a strided view, so callers can hand in any NumPy
 * layout (non-contiguous, negative strides, a crop) without copying it; the
 * destination is always a new C-contiguous height x width x channels buffer of
 * the same sample type.  Channels are filtered independently (no alpha
 * premultiplication).
 */
#ifndef AN_RESIZE_H
#define AN_RESIZE_H

#include <stddef.h>
#include <stdint.h>

#include "../an_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum an_resize_method {
    /* Exact fractional-coverage box filter (OpenCV INTER_AREA, and Pillow's BOX
     * / reduce() bit for bit at integer factors).  When enlarging an axis every
     * output pixel covers less than one input pixel, so this degrades
     * gracefully into "pixel mixing": nearest neighbour with the boundary
     * pixels blended by coverage (what INTER_AREA does when upscaling). */
    AN_RESIZE_AREA = 1,
    /* Pillow's BILINEAR: a triangle filter whose support grows with the
     * downscale factor (antialiased), same coefficients and the same 8-bit
     * fixed-point arithmetic as Pillow's Resample.c. */
    AN_RESIZE_BILINEAR = 2
} an_resize_method;

/* A read-only strided image.  Invariants: width, height >= 1; channels 1..4;
 * bytes_per_sample 1 (uint8) or 2 (uint16, native byte order); the sample
 * (y, x, c) lives at data + y*row_stride + x*col_stride + c*chan_stride and
 * every such address is readable.  Strides are in bytes and may be negative or
 * unaligned. */
typedef struct an_view {
    const uint8_t *data;
    uint32_t width, height;
    int channels;
    int bytes_per_sample;
    ptrdiff_t row_stride, col_stride, chan_stride;
} an_view;

/* Resamples src to dst_w x dst_h into dst, a C-contiguous buffer of
 * dst_h * dst_w * src->channels samples of src's type that must not overlap
 * src.  Equal sizes give an exact copy.  Returns AN_OK, AN_ERR_ARRAY for a
 * view breaking the invariants above, AN_ERR_INVALID_ARG for a zero output
 * size or an unknown method, or the allocator's failure status (scratch
 * buffers of about dst_w * src->height samples plus the filter tables come
 * from alloc; NULL = malloc).  Thread-safe: no global state; dst content is
 * unspecified on error. */
an_status an_resize(const an_view *src, uint8_t *dst, uint32_t dst_w, uint32_t dst_h,
                    an_resize_method method, const an_allocator *alloc, an_error *err);

#ifdef __cplusplus
}
#endif
#endif /* AN_RESIZE_H */
