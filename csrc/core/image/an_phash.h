/*
 * an_phash.h - perceptual image fingerprints, Python-free.
 *
 * Two fingerprints for near-duplicate search over a gallery of images:
 *
 *   an_phash()       the 64-bit DCT hash of imagehash.phash: grey, 32x32,
 *                    2-D DCT-II, the 8x8 lowest frequencies, one bit per
 *                    coefficient above their median.  Compare with Hamming
 *                    distance; re-encoding and resizing move a few bits.
 *   an_descriptor()  AN_DESC_LEN float32 values, L2 norm 1: a soft 4x4x4 RGB
 *                    colour histogram, the magnitude spectrum of a 32-bin
 *                    gradient orientation histogram (invariant to rotation)
 *                    and a 4x4 grid of mean colours (layout).  Compare by dot
 *                    product (cosine similarity).
 *
 * Both read the source through a strided an_view (so crops, flips and
 * rot90 views of a NumPy array cost no copy), reduce it with an_resize, and
 * need only small fixed scratch buffers from alloc.
 */
#ifndef AN_PHASH_H
#define AN_PHASH_H

#include <stdint.h>

#include "../an_core.h"
#include "an_resize.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AN_DESC_COLOUR 64 /* 4x4x4 RGB bins */
#define AN_DESC_ORIENT 16 /* |DFT| of the 32-bin orientation histogram, k = 0..15 */
#define AN_DESC_LAYOUT 48 /* 4x4 cells x RGB, global mean removed */
#define AN_DESC_LEN (AN_DESC_COLOUR + AN_DESC_ORIENT + AN_DESC_LAYOUT)

/* The 64-bit pHash of src into *out: bit 63 is the DCT coefficient (0, 0), then
 * row-major down to bit 0 for (7, 7), the bit order of imagehash's hex string.
 * Grey is ITU-R 601 luma (Pillow's "L"); one- and two-channel views use their
 * first channel; alpha is ignored; uint16 samples are scaled to 8 bits.
 * Returns AN_OK, AN_ERR_ARRAY for a view breaking an_view's invariants, or the
 * allocator's failure status.  Thread-safe. */
an_status an_phash(const an_view *src, uint64_t *out, const an_allocator *alloc, an_error *err);

/* The descriptor of src into out[AN_DESC_LEN] (unit L2 norm; a flat image has
 * zero orientation and layout blocks).  Same inputs and statuses as an_phash. */
an_status an_descriptor(const an_view *src, float *out, const an_allocator *alloc,
                        an_error *err);

/* Number of differing bits of a and b. */
int an_hamming64(uint64_t a, uint64_t b);

#ifdef __cplusplus
}
#endif
#endif /* AN_PHASH_H */
