/*
 * an_png_idat.h - the fast IDAT decoder (png_idat.c), used by png.c for 8-bit,
 * non-interlaced images after libpng has validated everything before IDAT.
 */
#ifndef AN_PNG_IDAT_H
#define AN_PNG_IDAT_H

#include "an_internal.h"

typedef enum {
    AN_IDAT_COPY,       /* row layout is already the output layout */
    AN_IDAT_CONVERT,    /* an_convert_row8(pixfmt -> mode) */
    AN_IDAT_LUT         /* 1-byte samples index lut (4 bytes per entry) */
} an_idat_emit;

typedef struct an_idat_job {
    const uint8_t *data;
    size_t len;
    size_t pos;             /* first byte of the first IDAT payload */
    uint32_t first_len;     /* payload length of the first IDAT */
    uint32_t width, height;
    int src_channels;       /* bytes per pixel in the file (1..4) */
    int out_channels;
    an_idat_emit emit;
    an_pixfmt pixfmt;       /* AN_IDAT_CONVERT */
    an_mode mode;
    const uint8_t *lut;     /* AN_IDAT_LUT: 256 entries of out_channels bytes, stride 4 */
    int strict;
    const an_allocator *alloc;
} an_idat_job;

/* Decodes the image data into out (height rows of width*out_channels bytes).
 * *rows_done tells how many rows are complete, also on failure. */
an_status an_png_idat_decode(const an_idat_job *job, uint8_t *out, uint32_t *rows_done,
                             an_error *err);

#endif
