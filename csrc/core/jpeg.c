/*
 * jpeg.c - JPEG decoding over the libjpeg API of libjpeg-turbo.
 *
 * libjpeg reports fatal errors by longjmp.  Everything that must survive the
 * jump lives in struct an_jpeg (never in a local), and an_jpeg_close() is the
 * single cleanup path whether or not a jump happened, so a malformed file can
 * never leak (the failure mode of pytorch/vision #9383).  Nothing is printed:
 * output_message is silenced and emit_message turns corrupt-data warnings into
 * errors in strict mode, or records the first one otherwise.
 *
 * Untrusted-input guards beyond the header limits checked in decode.c:
 *  - a progress monitor aborts progressive files with more than max_jpeg_scans
 *    scans (libjpeg-turbo #284: thousands of tiny scans burn minutes of CPU);
 *  - the source manager never reads past the buffer and reports truncation;
 *  - libjpeg's own memory manager is capped at what the pixel limit allows.
 */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "an_internal.h"

struct an_jpeg {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_source_mgr src;
    struct jpeg_progress_mgr progress;
    jmp_buf jmp;
    const an_allocator *alloc;
    const uint8_t *data;
    size_t len;
    an_error *err;          /* where error_exit/emit_message report */
    int created;
    int strict;
    int truncated;
    uint32_t max_scans;
    an_mode mode;
    an_pixfmt pixfmt;       /* what libjpeg delivers when a conversion follows */
    int direct;             /* libjpeg delivers the final mode itself */
    uint8_t *rowbuf;        /* conversion rows, owned */
    uint32_t out_w, out_h;
    size_t reserved;        /* libjpeg's own buffers, charged via an_reserve */
};

static const JOCTET fake_eoi[2] = {0xFF, JPEG_EOI};

static an_jpeg *
from_cinfo(j_common_ptr cinfo)
{
    return (an_jpeg *)(void *)((char *)cinfo - offsetof(an_jpeg, cinfo));
}

/* ---- error manager ---- */

static void
jpeg_fail(an_jpeg *j, an_status status)
{
    char buf[JMSG_LENGTH_MAX];
    (*j->cinfo.err->format_message)((j_common_ptr)&j->cinfo, buf);
    if (j->err->status == AN_OK)
        an_error_set(j->err, status, "%s", buf);
    longjmp(j->jmp, 1);
}

static void
on_error_exit(j_common_ptr cinfo)
{
    an_jpeg *j = from_cinfo(cinfo);
    an_status st;
    switch (cinfo->err->msg_code) {
    case JERR_BAD_PRECISION:
    case JERR_NOT_COMPILED:
    case JERR_SOF_UNSUPPORTED:
        st = AN_ERR_UNSUPPORTED;
        break;
    case JERR_OUT_OF_MEMORY:
    case JERR_NO_BACKING_STORE:
        st = AN_ERR_NOMEM;
        break;
    default:
        st = j->truncated ? AN_ERR_TRUNCATED : AN_ERR_CORRUPT;
        break;
    }
    jpeg_fail(j, st);
}

static void
on_output_message(j_common_ptr cinfo)
{
    (void)cinfo; /* never print */
}

static void
on_emit_message(j_common_ptr cinfo, int level)
{
    if (level >= 0)
        return; /* trace messages */
    an_jpeg *j = from_cinfo(cinfo);
    int code = cinfo->err->msg_code;
    if (code == JWRN_JFIF_MAJOR || code == JWRN_BOGUS_ICC || code == JWRN_ADOBE_XFORM)
        return; /* metadata oddities that do not affect the pixels */
    cinfo->err->num_warnings++;
    an_status st = (code == JWRN_JPEG_EOF || j->truncated) ? AN_ERR_TRUNCATED : AN_ERR_CORRUPT;
    if (j->strict)
        jpeg_fail(j, st);
    if (!j->err->warned) {
        char buf[JMSG_LENGTH_MAX];
        (*cinfo->err->format_message)(cinfo, buf);
        j->err->warned = 1;
        snprintf(j->err->detail, sizeof(j->err->detail), "%s", buf);
    }
}

static void
on_progress(j_common_ptr cinfo)
{
    an_jpeg *j = from_cinfo(cinfo);
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (j->max_scans && d->input_scan_number > (int)j->max_scans) {
        j->err->actual = (uint64_t)d->input_scan_number;
        j->err->limit = j->max_scans;
        an_error_set(j->err, AN_ERR_LIMIT_SCANS, "progressive JPEG has more than %u scans",
                     j->max_scans);
        longjmp(j->jmp, 1);
    }
}

/* ---- source manager over a memory buffer ---- */

static void
src_init(j_decompress_ptr cinfo)
{
    (void)cinfo;
}

static boolean
src_fill(j_decompress_ptr cinfo)
{
    an_jpeg *j = from_cinfo((j_common_ptr)cinfo);
    j->truncated = 1;
    WARNMS(cinfo, JWRN_JPEG_EOF);
    cinfo->src->next_input_byte = fake_eoi;
    cinfo->src->bytes_in_buffer = 2;
    return TRUE;
}

static void
src_skip(j_decompress_ptr cinfo, long n)
{
    struct jpeg_source_mgr *src = cinfo->src;
    if (n <= 0)
        return;
    while ((size_t)n > src->bytes_in_buffer) {
        n -= (long)src->bytes_in_buffer;
        (void)src_fill(cinfo);
    }
    src->next_input_byte += n;
    src->bytes_in_buffer -= (size_t)n;
}

static void
src_term(j_decompress_ptr cinfo)
{
    (void)cinfo;
}

/* ---- public ---- */

void
an_jpeg_close(an_jpeg *j)
{
    if (j == NULL)
        return;
    if (j->created)
        jpeg_destroy_decompress(&j->cinfo);
    if (j->reserved)
        an_release(j->alloc, j->reserved);
    an_free(j->alloc, j->rowbuf);
    an_free(j->alloc, j);
}

/* Chooses libjpeg's output colour space for mode, or a raw space plus a
 * conversion.  Returns 1 when libjpeg can deliver the mode directly. */
static int
choose_color(an_jpeg *j)
{
    struct jpeg_decompress_struct *c = &j->cinfo;
    if (c->jpeg_color_space == JCS_CMYK || c->jpeg_color_space == JCS_YCCK) {
        c->out_color_space = JCS_CMYK;
        /* Adobe writes inverted CMYK; libjpeg leaves the samples as stored. */
        j->pixfmt = c->saw_Adobe_marker ? AN_PIX_CMYK_INV : AN_PIX_CMYK;
        return 0;
    }
    if (c->num_components != 1 && c->num_components != 3) {
        an_error_set(j->err, AN_ERR_UNSUPPORTED, "JPEG colour space %d",
                     (int)c->jpeg_color_space);
        longjmp(j->jmp, 1);
    }
    switch (j->mode) {
    case AN_MODE_L: c->out_color_space = JCS_GRAYSCALE; return 1;
    case AN_MODE_LA: c->out_color_space = JCS_GRAYSCALE; j->pixfmt = AN_PIX_GRAY; return 0;
    case AN_MODE_RGB: c->out_color_space = JCS_EXT_RGB; return 1;
    case AN_MODE_BGR: c->out_color_space = JCS_EXT_BGR; return 1;
    case AN_MODE_RGBA: c->out_color_space = JCS_EXT_RGBA; return 1;
    }
    return 1;
}

an_status
an_jpeg_open(an_jpeg **out, const uint8_t *data, size_t len, const an_decode_opts *opts,
             const an_info *info, int denom, an_error *err)
{
    (void)info;
    *out = NULL;
    an_jpeg *j = an_calloc(opts->alloc, 1, sizeof(*j));
    if (j == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the JPEG decoder");
        return err->status;
    }
    j->alloc = opts->alloc;
    j->data = data;
    j->len = len;
    j->err = err;
    j->strict = opts->strict;
    j->mode = opts->mode;
    j->max_scans = opts->limits.max_jpeg_scans;

    j->cinfo.err = jpeg_std_error(&j->jerr);
    j->jerr.error_exit = on_error_exit;
    j->jerr.output_message = on_output_message;
    j->jerr.emit_message = on_emit_message;
    if (setjmp(j->jmp)) {
        an_jpeg_close(j);
        return err->status;
    }
    jpeg_create_decompress(&j->cinfo);
    j->created = 1;
    /* libjpeg's own pools (coefficient buffers of progressive files) may not
     * outgrow what the pixel limit admits: 2 bytes per coefficient, 4 comps. */
    if (opts->limits.max_pixels)
        j->cinfo.mem->max_memory_to_use = (long)(opts->limits.max_pixels * 8u + (64u << 20));

    j->src.init_source = src_init;
    j->src.fill_input_buffer = src_fill;
    j->src.skip_input_data = src_skip;
    j->src.resync_to_restart = jpeg_resync_to_restart;
    j->src.term_source = src_term;
    j->src.next_input_byte = data;
    j->src.bytes_in_buffer = len;
    j->cinfo.src = &j->src;
    j->progress.progress_monitor = on_progress;
    j->cinfo.progress = &j->progress;

    if (jpeg_read_header(&j->cinfo, TRUE) != JPEG_HEADER_OK) {
        an_error_set(err, AN_ERR_HEADER, "JPEG has no image (tables only)");
        an_jpeg_close(j);
        return err->status;
    }
    if (an_check_dims(&opts->limits, j->cinfo.image_width, j->cinfo.image_height, err) != AN_OK) {
        an_jpeg_close(j);
        return err->status;
    }
    j->direct = choose_color(j);
    j->cinfo.scale_num = 1;
    j->cinfo.scale_denom = (unsigned)denom;
    j->cinfo.dct_method = JDCT_ISLOW;
    j->cinfo.do_fancy_upsampling = TRUE;
    jpeg_calc_output_dimensions(&j->cinfo);
    j->out_w = j->cinfo.output_width;
    j->out_h = j->cinfo.output_height;
    *out = j;
    return AN_OK;
}

void
an_jpeg_dims(const an_jpeg *j, uint32_t *w, uint32_t *h)
{
    *w = j->out_w;
    *h = j->out_h;
}

#define ROWS_PER_CALL 16

/* Bytes of the whole-image coefficient buffer libjpeg allocates (outside the
 * core allocator) for progressive and other multi-scan files: one JBLOCK per
 * DCT block of every component, rounded up to whole MCUs (jdcoefct.c). */
static size_t
coef_buffer_bytes(const struct jpeg_decompress_struct *c)
{
    size_t total = 0;
    for (int ci = 0; ci < c->num_components; ci++) {
        const jpeg_component_info *comp = &c->comp_info[ci];
        size_t h = (size_t)comp->h_samp_factor, v = (size_t)comp->v_samp_factor, bytes;
        size_t w_blocks = ((size_t)comp->width_in_blocks + h - 1) / h * h;
        size_t h_blocks = ((size_t)comp->height_in_blocks + v - 1) / v * v;
        if (!an_mul_size(w_blocks * h_blocks, sizeof(JBLOCK), &bytes) || bytes > SIZE_MAX - total)
            return SIZE_MAX;
        total += bytes;
    }
    return total;
}

an_status
an_jpeg_run(an_jpeg *j, uint8_t *out, an_error *err)
{
    struct jpeg_decompress_struct *c = &j->cinfo;
    const int oc = an_mode_channels(j->mode);
    const size_t stride = (size_t)j->out_w * (size_t)oc;
    j->err = err;
    if (setjmp(j->jmp)) {
        if (err->status == AN_OK)
            an_error_set(err, AN_ERR_CORRUPT, "JPEG decoding failed");
        return err->status;
    }
    if (jpeg_has_multiple_scans(c) && j->reserved == 0) {
        size_t need = coef_buffer_bytes(c);
        if (!an_reserve(j->alloc, need)) {
            an_error_set(err, an_nomem(j->alloc),
                         "cannot reserve %zu bytes for the JPEG coefficient buffer", need);
            return err->status;
        }
        j->reserved = need;
    }
    jpeg_start_decompress(c);
    if (c->output_width != j->out_w || c->output_height != j->out_h ||
        (j->direct && c->output_components != oc)) {
        an_error_set(err, AN_ERR_CORRUPT, "libjpeg changed the output geometry");
        return err->status;
    }
    JSAMPROW rows[ROWS_PER_CALL];
    size_t rawstride = 0;
    if (!j->direct) {
        rawstride = (size_t)j->out_w * (size_t)c->output_components;
        j->rowbuf = an_malloc(j->alloc, rawstride * ROWS_PER_CALL);
        if (j->rowbuf == NULL) {
            an_error_set(err, an_nomem(j->alloc), "cannot allocate JPEG row buffer");
            return err->status;
        }
    }
    while (c->output_scanline < c->output_height) {
        JDIMENSION y = c->output_scanline;
        JDIMENSION n = c->output_height - y;
        if (n > ROWS_PER_CALL)
            n = ROWS_PER_CALL;
        for (JDIMENSION i = 0; i < n; i++)
            rows[i] = j->direct ? out + (size_t)(y + i) * stride : j->rowbuf + i * rawstride;
        JDIMENSION got = jpeg_read_scanlines(c, rows, n);
        if (got == 0) {
            an_error_set(err, AN_ERR_CORRUPT, "libjpeg returned no scanlines");
            return err->status;
        }
        if (!j->direct)
            for (JDIMENSION i = 0; i < got; i++)
                an_convert_row8(j->pixfmt, j->mode, j->rowbuf + i * rawstride,
                                out + (size_t)(y + i) * stride, j->out_w);
    }
    if (j->strict)
        jpeg_finish_decompress(c); /* reads to EOI: trailing damage is an error */
    else
        jpeg_abort_decompress(c);
    return AN_OK;
}

#define AN_STR_(x) #x
#define AN_STR(x) AN_STR_(x)

const char *
an_libjpeg_version(void)
{
#ifdef LIBJPEG_TURBO_VERSION
    return AN_STR(LIBJPEG_TURBO_VERSION);
#else
    return AN_STR(JPEG_LIB_VERSION);
#endif
}
