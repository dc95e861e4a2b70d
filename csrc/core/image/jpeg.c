/*
 * jpeg.c - JPEG decoding over the libjpeg API of libjpeg-turbo.
 *
 * libjpeg reports fatal errors by longjmp.  Everything that must survive the
 * jump lives in struct an_jpeg (never in a local), and an_jpeg_close() is the
 * single cleanup path whether or not a jump happened, so a malformed file can
 * never leak (the failure mode of pytorch/vision #9383).  Nothing is printed:
 * output_message is silenced and emit_message applies the damage policy
 * (an_core.h): warnings that lose data are errors in strict mode, warnings
 * that lose no pixel (extraneous bytes between markers) only in pedantic
 * mode; otherwise the first one is recorded.
 *
 * The libjpeg set-up, error manager and row loop are shared with the
 * incremental decoder (an_jpeg.h, the an_jpeg_base_* functions below).
 *
 * Untrusted-input guards beyond the header limits checked in decode.c:
 *  - a progress monitor aborts progressive files with more than max_jpeg_scans
 *    scans (libjpeg-turbo #284: thousands of tiny scans burn minutes of CPU);
 *  - the source manager never reads past the buffer and reports truncation;
 *  - libjpeg's own memory manager is capped at what the pixel limit allows.
 */
#include <string.h>

#include <jerror.h>

#include "an_jpeg.h"

struct an_jpeg {
    an_jpeg_base b;         /* first: libjpeg's callbacks find it from cinfo */
    struct jpeg_source_mgr src;
    const uint8_t *data;
    size_t len;
    size_t reserved;        /* libjpeg's own buffers, charged via an_reserve */
};

static const JOCTET fake_eoi[2] = {0xFF, JPEG_EOI};

static an_jpeg_base *
base_of(j_common_ptr cinfo)
{
    return (an_jpeg_base *)(void *)((char *)cinfo - offsetof(an_jpeg_base, cinfo));
}

/* ---- error manager ---- */

static void
jpeg_fail(an_jpeg_base *j, an_status status)
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
    an_jpeg_base *j = base_of(cinfo);
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
    an_jpeg_base *j = base_of(cinfo);
    int code = cinfo->err->msg_code;
    if (code == JWRN_JFIF_MAJOR || code == JWRN_BOGUS_ICC || code == JWRN_ADOBE_XFORM)
        return; /* metadata oddities that do not affect the pixels */
    cinfo->err->num_warnings++;
    an_status st = (code == JWRN_JPEG_EOF || j->truncated) ? AN_ERR_TRUNCATED : AN_ERR_CORRUPT;
    /* Bytes between header markers are skipped without losing a pixel (the
     * "extraneous bytes before marker" of padded or badly cut segments).
     * Once the scans are read, bytes left before a marker mean the entropy
     * decoder lost step with its data (how libjpeg-turbo usually notices
     * corrupt entropy data), and every other warning means libjpeg filled
     * in data it did not have. */
    int lossless = code == JWRN_EXTRANEOUS_DATA && !j->in_scans;
    if (j->strict && (j->pedantic || !lossless))
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
    an_jpeg_base *j = base_of(cinfo);
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (j->max_scans && d->input_scan_number > (int)j->max_scans) {
        j->err->actual = (uint64_t)d->input_scan_number;
        j->err->limit = j->max_scans;
        an_error_set(j->err, AN_ERR_LIMIT_SCANS, "progressive JPEG has more than %u scans",
                     j->max_scans);
        longjmp(j->jmp, 1);
    }
}

/* ---- the shared set-up (an_jpeg.h) ---- */

static void
src_noop(j_decompress_ptr cinfo)
{
    (void)cinfo;
}

void
an_jpeg_base_init(an_jpeg_base *b, const an_decode_opts *opts, int denom, an_error *err)
{
    b->alloc = opts->alloc;
    b->err = err;
    b->strict = opts->strict;
    b->pedantic = opts->pedantic;
    b->mode = opts->mode;
    b->limits = opts->limits;
    b->max_scans = opts->limits.max_jpeg_scans;
    b->denom = denom;
    b->cinfo.err = jpeg_std_error(&b->jerr);
    b->jerr.error_exit = on_error_exit;
    b->jerr.output_message = on_output_message;
    b->jerr.emit_message = on_emit_message;
}

void
an_jpeg_base_create(an_jpeg_base *b, struct jpeg_source_mgr *src)
{
    jpeg_create_decompress(&b->cinfo);
    b->created = 1;
    /* libjpeg's own pools (coefficient buffers of progressive files) may not
     * outgrow what the pixel limit admits: 2 bytes per coefficient, 4 comps. */
    if (b->limits.max_pixels)
        b->cinfo.mem->max_memory_to_use = (long)(b->limits.max_pixels * 8u + (64u << 20));
    src->init_source = src_noop;
    src->resync_to_restart = jpeg_resync_to_restart;
    src->term_source = src_noop;
    b->cinfo.src = src;
    b->progress.progress_monitor = on_progress;
    b->cinfo.progress = &b->progress;
}

/* Chooses libjpeg's output colour space for mode, or a raw space plus a
 * conversion.  Returns 1 when libjpeg can deliver the mode directly. */
static int
choose_color(an_jpeg_base *j)
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

void
an_jpeg_base_header(an_jpeg_base *b)
{
    struct jpeg_decompress_struct *c = &b->cinfo;
    if (an_check_dims(&b->limits, c->image_width, c->image_height, b->err) != AN_OK)
        longjmp(b->jmp, 1);
    b->in_scans = 1;
    b->direct = choose_color(b);
    c->scale_num = 1;
    c->scale_denom = (unsigned)b->denom;
    c->dct_method = JDCT_ISLOW;
    c->do_fancy_upsampling = TRUE;
    jpeg_calc_output_dimensions(c);
    b->out_w = c->output_width;
    b->out_h = c->output_height;
}

#define ROWS_PER_CALL 16

void
an_jpeg_base_started(an_jpeg_base *b)
{
    struct jpeg_decompress_struct *c = &b->cinfo;
    if (c->output_width != b->out_w || c->output_height != b->out_h ||
        (b->direct && c->output_components != an_mode_channels(b->mode))) {
        an_error_set(b->err, AN_ERR_CORRUPT, "libjpeg changed the output geometry");
        longjmp(b->jmp, 1);
    }
    if (!b->direct && b->rowbuf == NULL) {
        size_t raw = (size_t)b->out_w * (size_t)c->output_components;
        b->rowbuf = an_malloc(b->alloc, raw * ROWS_PER_CALL);
        if (b->rowbuf == NULL) {
            an_error_set(b->err, an_nomem(b->alloc), "cannot allocate JPEG row buffer");
            longjmp(b->jmp, 1);
        }
    }
}

int
an_jpeg_base_rows(an_jpeg_base *b, uint8_t *out)
{
    struct jpeg_decompress_struct *c = &b->cinfo;
    const size_t stride = (size_t)b->out_w * (size_t)an_mode_channels(b->mode);
    const size_t rawstride = (size_t)b->out_w * (size_t)c->output_components;
    JSAMPROW rows[ROWS_PER_CALL];
    while (c->output_scanline < c->output_height) {
        JDIMENSION y = c->output_scanline;
        JDIMENSION n = c->output_height - y;
        if (n > ROWS_PER_CALL)
            n = ROWS_PER_CALL;
        for (JDIMENSION i = 0; i < n; i++)
            rows[i] = b->direct ? out + (size_t)(y + i) * stride : b->rowbuf + i * rawstride;
        JDIMENSION got = jpeg_read_scanlines(c, rows, n);
        if (got == 0)
            return 0;
        if (!b->direct)
            for (JDIMENSION i = 0; i < got; i++)
                an_convert_row8(b->pixfmt, b->mode, b->rowbuf + i * rawstride,
                                out + (size_t)(y + i) * stride, b->out_w);
    }
    return 1;
}

void
an_jpeg_base_eof(j_decompress_ptr cinfo)
{
    base_of((j_common_ptr)cinfo)->truncated = 1;
    WARNMS(cinfo, JWRN_JPEG_EOF);
    cinfo->src->next_input_byte = fake_eoi;
    cinfo->src->bytes_in_buffer = 2;
}

void
an_jpeg_base_close(an_jpeg_base *b)
{
    if (b->created)
        jpeg_destroy_decompress(&b->cinfo);
    an_free(b->alloc, b->rowbuf);
    b->rowbuf = NULL;
    b->created = 0;
}

/* ---- source manager over a memory buffer ---- */

static boolean
src_fill(j_decompress_ptr cinfo)
{
    an_jpeg_base_eof(cinfo);
    return TRUE;
}

void
an_jpeg_base_skip(j_decompress_ptr cinfo, long n)
{
    struct jpeg_source_mgr *src = cinfo->src;
    if (n <= 0)
        return;
    while ((size_t)n > src->bytes_in_buffer) {
        n -= (long)src->bytes_in_buffer;
        an_jpeg_base_eof(cinfo);
    }
    src->next_input_byte += n;
    src->bytes_in_buffer -= (size_t)n;
}

/* ---- public ---- */

void
an_jpeg_close(an_jpeg *j)
{
    if (j == NULL)
        return;
    an_jpeg_base_close(&j->b);
    if (j->reserved)
        an_release(j->b.alloc, j->reserved);
    an_free(j->b.alloc, j);
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
    j->data = data;
    j->len = len;
    an_jpeg_base_init(&j->b, opts, denom, err);
    if (setjmp(j->b.jmp)) {
        an_jpeg_close(j);
        return err->status;
    }
    j->src.fill_input_buffer = src_fill;
    j->src.skip_input_data = an_jpeg_base_skip;
    j->src.next_input_byte = data;
    j->src.bytes_in_buffer = len;
    an_jpeg_base_create(&j->b, &j->src);
    if (jpeg_read_header(&j->b.cinfo, TRUE) != JPEG_HEADER_OK) {
        an_error_set(err, AN_ERR_HEADER, "JPEG has no image (tables only)");
        an_jpeg_close(j);
        return err->status;
    }
    an_jpeg_base_header(&j->b);
    *out = j;
    return AN_OK;
}

void
an_jpeg_dims(const an_jpeg *j, uint32_t *w, uint32_t *h)
{
    *w = j->b.out_w;
    *h = j->b.out_h;
}

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
    struct jpeg_decompress_struct *c = &j->b.cinfo;
    j->b.err = err;
    if (setjmp(j->b.jmp)) {
        if (err->status == AN_OK)
            an_error_set(err, AN_ERR_CORRUPT, "JPEG decoding failed");
        return err->status;
    }
    if (jpeg_has_multiple_scans(c) && j->reserved == 0) {
        size_t need = coef_buffer_bytes(c);
        if (!an_reserve(j->b.alloc, need)) {
            an_error_set(err, an_nomem(j->b.alloc),
                         "cannot reserve %zu bytes for the JPEG coefficient buffer", need);
            return err->status;
        }
        j->reserved = need;
    }
    jpeg_start_decompress(c);
    an_jpeg_base_started(&j->b);
    if (!an_jpeg_base_rows(&j->b, out)) {
        an_error_set(err, AN_ERR_CORRUPT, "libjpeg returned no scanlines");
        return err->status;
    }
    if (j->b.strict)
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
