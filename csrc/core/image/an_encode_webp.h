/*
 * an_encode_webp.h - WebP encoding (webp_enc.c).
 */
#ifndef AN_ENCODE_WEBP_H
#define AN_ENCODE_WEBP_H

#include "../an_core.h"

typedef struct an_webp_enc_opts {
    float quality;  /* 0..100: lossy quality, or lossless effort */
    int lossless;
    int method;     /* 0 (fast) .. 6 (small) */
} an_webp_enc_opts;

void an_webp_enc_opts_init(an_webp_enc_opts *opts); /* 80, lossy, method 4 */

/* Encodes a C-contiguous width x height image of channels (3 or 4) 8-bit
 * samples, R G B (A) or with bgr B G R (A).  On success *out holds *out_len
 * bytes owned by the caller (free with an_webp_free).  Fails with AN_ERR_ARRAY
 * (channels, size), AN_ERR_INVALID_ARG (options), AN_ERR_ENCODE or
 * AN_ERR_NOMEM. */
an_status an_encode_webp(const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                         int bgr, const an_webp_enc_opts *opts, uint8_t **out, size_t *out_len,
                         an_error *err);
void an_webp_free(uint8_t *data);

#endif /* AN_ENCODE_WEBP_H */
