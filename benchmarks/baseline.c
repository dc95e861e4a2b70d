/*
 * baseline.c - the raw C reference the benchmarks compare amulet_native with.
 *
 * The smallest correct program that turns JPEG/PNG bytes into an RGB buffer
 * with the same system libraries and the same settings amulet_native uses:
 * libjpeg-turbo through the libjpeg API (JCS_EXT_RGB/BGR, JDCT_ISLOW, fancy
 * upsampling, jpeg_mem_src, rows read straight into the output) and libpng
 * (png_read_row into the output, libpng's own transforms).  The output buffer
 * is malloc'd and freed on every call, as a Python decoder must allocate a new
 * array per call.  No limits, no sniffing, no EXIF: what is left between this
 * and amulet_native.decode() is the cost of the Python layer and the safety
 * checks.  Built by benchmarks/_baseline.py (gcc -O2 -shared -fPIC) and called
 * through ctypes, which releases the GIL and costs about a microsecond a call.
 *
 * Each function returns 0 on success, -1 on a libjpeg/libpng error, -2 when
 * out of memory; on success *w and *h receive the decoded size.
 */
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

/* ---- JPEG ---- */

struct bl_jpeg_err {
    struct jpeg_error_mgr mgr;
    jmp_buf jmp;
};

static void
bl_jpeg_error_exit(j_common_ptr cinfo)
{
    struct bl_jpeg_err *e = (struct bl_jpeg_err *)(void *)cinfo->err;
    longjmp(e->jmp, 1);
}

static void
bl_jpeg_silent(j_common_ptr cinfo)
{
    (void)cinfo;
}

/* Decodes every scanline into a buffer malloc'd per call (stored in *out so
 * the caller's longjmp path frees it), 16 rows per libjpeg call, as
 * amulet_native does.  Returns -1 when the buffer cannot be allocated. */
static int
read_image(struct jpeg_decompress_struct *cinfo, uint8_t *volatile *out)
{
    JSAMPROW rows[16];
    jpeg_start_decompress(cinfo);
    size_t stride = (size_t)cinfo->output_width * (size_t)cinfo->output_components;
    uint8_t *buf = malloc(stride * cinfo->output_height);
    *out = buf;
    if (buf == NULL)
        return -1;
    while (cinfo->output_scanline < cinfo->output_height) {
        JDIMENSION y = cinfo->output_scanline;
        JDIMENSION n = cinfo->output_height - y;
        if (n > 16)
            n = 16;
        for (JDIMENSION i = 0; i < n; i++)
            rows[i] = buf + (size_t)(y + i) * stride;
        jpeg_read_scanlines(cinfo, rows, n);
    }
    jpeg_finish_decompress(cinfo);
    return 0;
}

/* bgr selects JCS_EXT_BGR instead of JCS_EXT_RGB; denom is the DCT scale
 * denominator (1, 2, 4 or 8). */
int
bl_jpeg_decode(const uint8_t *data, size_t len, int bgr, int denom, int *w, int *h)
{
    struct jpeg_decompress_struct cinfo;
    struct bl_jpeg_err err;
    uint8_t *volatile out = NULL;

    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = bl_jpeg_error_exit;
    err.mgr.output_message = bl_jpeg_silent;
    if (setjmp(err.jmp)) {
        jpeg_destroy_decompress(&cinfo);
        free(out);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.out_color_space = bgr ? JCS_EXT_BGR : JCS_EXT_RGB;
    cinfo.dct_method = JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned)denom;
    if (read_image(&cinfo, &out) != 0) {
        jpeg_destroy_decompress(&cinfo);
        return -2;
    }
    *w = (int)cinfo.output_width;
    *h = (int)cinfo.output_height;
    jpeg_destroy_decompress(&cinfo);
    free(out);
    return 0;
}

/* Diagnostics for the report, not a peer: where the time of a decode goes.
 * stage 0: entropy (Huffman) decoding only, jpeg_read_coefficients();
 * stage 1: full decode with JDCT_IFAST and plain (non-fancy) upsampling, to
 * bound what the IDCT and upsampling settings are worth (different pixels). */
int
bl_jpeg_stage(const uint8_t *data, size_t len, int stage)
{
    struct jpeg_decompress_struct cinfo;
    struct bl_jpeg_err err;
    uint8_t *volatile out = NULL;

    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = bl_jpeg_error_exit;
    err.mgr.output_message = bl_jpeg_silent;
    if (setjmp(err.jmp)) {
        jpeg_destroy_decompress(&cinfo);
        free(out);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    if (stage == 0) {
        (void)jpeg_read_coefficients(&cinfo);
        jpeg_finish_decompress(&cinfo);
        jpeg_destroy_decompress(&cinfo);
        return 0;
    }
    cinfo.out_color_space = JCS_EXT_RGB;
    cinfo.dct_method = JDCT_IFAST;
    cinfo.do_fancy_upsampling = FALSE;
    if (read_image(&cinfo, &out) != 0) {
        jpeg_destroy_decompress(&cinfo);
        return -2;
    }
    jpeg_destroy_decompress(&cinfo);
    free(out);
    return 0;
}

/* ---- PNG ---- */

struct bl_png_src {
    const uint8_t *data;
    size_t len, pos;
};

static void
bl_png_read(png_structp png, png_bytep dst, size_t n)
{
    struct bl_png_src *s = png_get_io_ptr(png);
    if (n > s->len - s->pos)
        png_error(png, "truncated");
    memcpy(dst, s->data + s->pos, n);
    s->pos += n;
}

static void
bl_png_warn(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* Decodes to 8-bit RGB (or BGR): palette expanded, grey to RGB, 16-bit
 * stripped to the high byte, alpha dropped. */
int
bl_png_decode(const uint8_t *data, size_t len, int bgr, int *w, int *h)
{
    struct bl_png_src src = {data, len, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, bl_png_warn);
    png_infop info = NULL;
    uint8_t *volatile out = NULL;

    if (png == NULL)
        return -2;
    info = png_create_info_struct(png);
    if (info == NULL) {
        png_destroy_read_struct(&png, NULL, NULL);
        return -2;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(out);
        return -1;
    }
    png_set_read_fn(png, &src, bl_png_read);
    png_read_info(png, info);
    int ct = png_get_color_type(png, info);
    if (ct == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (png_get_bit_depth(png, info) == 16)
        png_set_strip_16(png);
    if (!(ct & PNG_COLOR_MASK_COLOR))
        png_set_gray_to_rgb(png);
    if (ct & PNG_COLOR_MASK_ALPHA)
        png_set_strip_alpha(png);
    if (bgr)
        png_set_bgr(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    uint32_t width = png_get_image_width(png, info);
    uint32_t height = png_get_image_height(png, info);
    size_t stride = png_get_rowbytes(png, info);
    out = malloc(stride * height);
    if (out == NULL) {
        png_destroy_read_struct(&png, &info, NULL);
        return -2;
    }
    for (int p = 0; p < passes; p++)
        for (uint32_t y = 0; y < height; y++)
            png_read_row(png, out + (size_t)y * stride, NULL);
    png_read_end(png, NULL);
    *w = (int)width;
    *h = (int)height;
    png_destroy_read_struct(&png, &info, NULL);
    free(out);
    return 0;
}

const char *
bl_libpng_version(void)
{
    return png_get_libpng_ver(NULL);
}
