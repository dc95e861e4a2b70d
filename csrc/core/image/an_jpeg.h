/*
 * an_jpeg.h - libjpeg set-up shared by jpeg.c (whole-file decode) and
 * jpeg_incr.c (incremental decode), implemented in jpeg.c.
 *
 * Both paths differ only in their data source (a memory buffer vs a
 * suspending one); everything else is this one copy: the error manager that
 * never prints and turns warnings into errors in strict mode, the scan-limit
 * progress monitor, the colour-space and scaling choice, the geometry checks
 * and the row loop with its colour conversion.
 */
#ifndef AN_JPEG_H
#define AN_JPEG_H

#include <setjmp.h>
#include <stdio.h>

#include <jpeglib.h>

#include "an_internal.h"

/* The first member of both decoders' structs; libjpeg's callbacks find it from
 * cinfo (its first member).  State that must survive a longjmp lives here. */
typedef struct an_jpeg_base {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_progress_mgr progress;
    jmp_buf jmp;
    const an_allocator *alloc;
    an_error *err;          /* where errors and warnings are recorded */
    int created;
    int strict;
    int pedantic;           /* strict: warnings that lose no pixels are errors too */
    int in_scans;           /* the header is parsed: now reading entropy-coded data */
    int truncated;          /* the source ran out: errors are truncation */
    uint32_t max_scans;
    an_limits limits;
    an_mode mode;
    an_pixfmt pixfmt;       /* what libjpeg delivers when a conversion follows */
    int direct;             /* libjpeg delivers the final mode itself */
    int denom;
    uint32_t out_w, out_h;
    uint8_t *rowbuf;        /* owned: conversion rows */
} an_jpeg_base;

/* Fills b from opts (no libjpeg call that can fail). */
void an_jpeg_base_init(an_jpeg_base *b, const an_decode_opts *opts, int denom, an_error *err);

/* Creates the decompressor with src as its source (the caller has set
 * src->fill_input_buffer and skip_input_data).  Call under setjmp(b->jmp). */
void an_jpeg_base_create(an_jpeg_base *b, struct jpeg_source_mgr *src);

/* After jpeg_read_header(): size limits, output colour space, DCT scaling and
 * the output size (b->out_w/out_h).  Longjmps on failure. */
void an_jpeg_base_header(an_jpeg_base *b);

/* After jpeg_start_decompress(): checks the geometry against out_w/out_h and
 * allocates the conversion rows.  Longjmps on failure. */
void an_jpeg_base_started(an_jpeg_base *b);

/* Reads rows into out (out_h rows of out_w pixels of the mode) from where
 * libjpeg is; 1 when all rows are in, 0 when libjpeg returned no row
 * (suspended, or an error for a source that cannot suspend). */
int an_jpeg_base_rows(an_jpeg_base *b, uint8_t *out);

/* The source has no more bytes: warn (truncation) and feed a fake EOI. */
void an_jpeg_base_eof(j_decompress_ptr cinfo);

/* skip_input_data of a source whose bytes are all there: skipping past the
 * end is truncation (an_jpeg_base_eof). */
void an_jpeg_base_skip(j_decompress_ptr cinfo, long n);

/* Frees what the base owns (not b itself). */
void an_jpeg_base_close(an_jpeg_base *b);

#endif /* AN_JPEG_H */
