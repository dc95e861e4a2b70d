/*
 * webp_enc.c - WebP encoding of a contiguous RGB(A)/BGR(A) image through
 * libwebp's advanced API (WebPConfig: quality, lossless, method).
 *
 * Lossless output is exact: the colour under fully transparent pixels is kept
 * (libwebp's `exact`), so decoding gives back the array bit for bit.  libwebp
 * allocates the picture and the encoded stream itself (malloc); the stream is
 * handed to the caller, who frees it with an_webp_free().
 */
#include <string.h>

#include <webp/encode.h>

#include "an_encode_webp.h"

void
an_webp_enc_opts_init(an_webp_enc_opts *o)
{
    o->quality = 80.0f;
    o->lossless = 0;
    o->method = 4;
}

an_status
an_encode_webp(const uint8_t *pixels, uint32_t width, uint32_t height, int channels, int bgr,
               const an_webp_enc_opts *opts, uint8_t **out, size_t *out_len, an_error *err)
{
    *out = NULL;
    *out_len = 0;
    if ((channels != 3 && channels != 4) || width == 0 || height == 0 ||
        width > WEBP_MAX_DIMENSION || height > WEBP_MAX_DIMENSION) {
        an_error_set(err, AN_ERR_ARRAY, "WebP needs 3 or 4 channels and sides of 1..%d pixels",
                     WEBP_MAX_DIMENSION);
        return err->status;
    }
    if (!(opts->quality >= 0.0f && opts->quality <= 100.0f) || opts->method < 0 ||
        opts->method > 6) {
        an_error_set(err, AN_ERR_INVALID_ARG, "quality must be in 0..100 and method in 0..6");
        return err->status;
    }
    WebPConfig config;
    WebPPicture pic;
    WebPMemoryWriter writer;
    if (!WebPConfigInit(&config) || !WebPPictureInit(&pic)) {
        an_error_set(err, AN_ERR_ENCODE, "libwebp version mismatch");
        return err->status;
    }
    config.quality = opts->quality;
    config.method = opts->method;
    config.lossless = opts->lossless ? 1 : 0;
    config.exact = opts->lossless ? 1 : 0;
    if (!WebPValidateConfig(&config)) {
        an_error_set(err, AN_ERR_INVALID_ARG, "invalid WebP encoder settings");
        return err->status;
    }
    pic.use_argb = config.lossless;
    pic.width = (int)width;
    pic.height = (int)height;
    const int stride = (int)width * channels;
    int ok = channels == 4 ? (bgr ? WebPPictureImportBGRA(&pic, pixels, stride)
                                  : WebPPictureImportRGBA(&pic, pixels, stride))
                           : (bgr ? WebPPictureImportBGR(&pic, pixels, stride)
                                  : WebPPictureImportRGB(&pic, pixels, stride));
    if (!ok) {
        WebPPictureFree(&pic);
        an_error_set(err, AN_ERR_NOMEM, "cannot allocate the WebP picture");
        return err->status;
    }
    WebPMemoryWriterInit(&writer);
    pic.writer = WebPMemoryWrite;
    pic.custom_ptr = &writer;
    ok = WebPEncode(&config, &pic);
    int code = pic.error_code;
    WebPPictureFree(&pic);
    if (!ok) {
        WebPMemoryWriterClear(&writer);
        an_error_set(err, code == VP8_ENC_ERROR_OUT_OF_MEMORY ? AN_ERR_NOMEM : AN_ERR_ENCODE,
                     "libwebp failed to encode (error %d)", code);
        return err->status;
    }
    *out = writer.mem;
    *out_len = writer.size;
    return AN_OK;
}

void
an_webp_free(uint8_t *data)
{
    WebPFree(data);
}
