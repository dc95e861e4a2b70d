/*
 * jpeg_incr.c - JPEG decoding as the bytes arrive, over libjpeg's suspending
 * data source.
 *
 * fill_input_buffer returns FALSE while the input has not ended: libjpeg then
 * backs up to the start of the unit it was reading (a marker segment or an
 * MCU) and returns JPEG_SUSPENDED / FALSE / 0 rows, and the same call is
 * repeated on the next feed.  What it had not consumed (from that unit's start)
 * is the only input kept between feeds ("tail").  A new chunk is read in place
 * whenever the tail is empty; otherwise the tail is extended with just enough
 * of the chunk for libjpeg to get past it, and reading switches back to the
 * chunk itself.  At the end of input the source behaves exactly as jpeg.c's
 * (a warning and a fake EOI), so truncated and tolerant decodes match decode().
 *
 * Everything but the source is jpeg.c's own code (an_jpeg.h): the error
 * manager, the scan limit, the colour and scaling choice, the row loop.
 */
#include <string.h>

#include "an_incr.h"
#include "an_jpeg.h"

typedef enum { PH_HEADER, PH_START, PH_ROWS, PH_FINISH, PH_DONE } phase;

struct an_ijpeg {
    an_jpeg_base b;         /* first: libjpeg's callbacks find it from cinfo */
    struct jpeg_source_mgr src;
    int eof;                /* no more input: the source fakes EOI like jpeg.c */
    phase ph;
    uint8_t *target;        /* borrowed: out_h rows of out_w pixels */
    uint8_t *tail;          /* owned: unconsumed input kept between feeds */
    size_t tail_len, tail_cap;
    size_t skip;            /* bytes libjpeg skipped past the end of the input */
};

#define MIN_EXTEND 4096

static an_ijpeg *
from_cinfo(j_common_ptr cinfo)
{
    return (an_ijpeg *)(void *)((char *)cinfo - offsetof(an_ijpeg, b.cinfo));
}

/* ---- the suspending source ---- */

static boolean
src_fill(j_decompress_ptr cinfo)
{
    an_ijpeg *j = from_cinfo((j_common_ptr)cinfo);
    if (!j->eof)
        return FALSE; /* suspend: libjpeg backs up and is called again later */
    an_jpeg_base_eof(cinfo);
    return TRUE;
}

static void
src_skip(j_decompress_ptr cinfo, long n)
{
    an_ijpeg *j = from_cinfo((j_common_ptr)cinfo);
    struct jpeg_source_mgr *src = cinfo->src;
    if (n <= 0)
        return;
    if (!j->eof && (size_t)n > src->bytes_in_buffer) {
        /* Skipping is committed by libjpeg: drop the rest as it arrives. */
        j->skip = (size_t)n - src->bytes_in_buffer;
        src->next_input_byte += src->bytes_in_buffer;
        src->bytes_in_buffer = 0;
        return;
    }
    an_jpeg_base_skip(cinfo, n); /* all there, or the input has ended */
}

/* ---- public ---- */

void
an_ijpeg_close(an_ijpeg *j)
{
    if (j == NULL)
        return;
    an_jpeg_base_close(&j->b);
    an_free(j->b.alloc, j->tail);
    an_free(j->b.alloc, j);
}

uint32_t
an_ijpeg_rows(const an_ijpeg *j)
{
    return j->ph >= PH_ROWS ? (uint32_t)j->b.cinfo.output_scanline : 0;
}

an_status
an_ijpeg_open(an_ijpeg **out, const an_decode_opts *opts, const an_geometry *g, uint8_t *target,
              an_error *err)
{
    *out = NULL;
    an_ijpeg *j = an_calloc(opts->alloc, 1, sizeof(*j));
    if (j == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the JPEG decoder");
        return err->status;
    }
    an_jpeg_base_init(&j->b, opts, g->denom, err);
    j->b.out_w = g->codec_w; /* from the header phase; checked again below */
    j->b.out_h = g->codec_h;
    j->target = target;
    j->ph = PH_HEADER;
    if (setjmp(j->b.jmp)) {
        an_ijpeg_close(j);
        return err->status;
    }
    j->src.fill_input_buffer = src_fill;
    j->src.skip_input_data = src_skip;
    an_jpeg_base_create(&j->b, &j->src);
    *out = j;
    return AN_OK;
}

static void
geometry_error(an_ijpeg *j)
{
    an_error_set(j->b.err, AN_ERR_CORRUPT, "libjpeg changed the output geometry");
    longjmp(j->b.jmp, 1);
}

/* Runs libjpeg as far as the buffered input allows.  Called under setjmp. */
static void
advance(an_ijpeg *j)
{
    struct jpeg_decompress_struct *c = &j->b.cinfo;
    if (j->ph == PH_HEADER) {
        uint32_t w = j->b.out_w, h = j->b.out_h;
        int r = jpeg_read_header(c, TRUE);
        if (r == JPEG_SUSPENDED)
            return;
        if (r != JPEG_HEADER_OK) {
            an_error_set(j->b.err, AN_ERR_HEADER, "JPEG has no image (tables only)");
            longjmp(j->b.jmp, 1);
        }
        an_jpeg_base_header(&j->b);
        if (j->b.out_w != w || j->b.out_h != h)
            geometry_error(j);
        j->ph = PH_START;
    }
    if (j->ph == PH_START) {
        if (!jpeg_start_decompress(c))
            return;
        an_jpeg_base_started(&j->b);
        j->ph = PH_ROWS;
    }
    if (j->ph == PH_ROWS) {
        if (!an_jpeg_base_rows(&j->b, j->target)) {
            if (!j->eof)
                return; /* suspended */
            an_error_set(j->b.err, AN_ERR_CORRUPT, "libjpeg returned no scanlines");
            longjmp(j->b.jmp, 1);
        }
        j->ph = PH_FINISH;
    }
    if (j->ph == PH_FINISH) {
        if (j->b.strict) {
            if (!jpeg_finish_decompress(c)) /* to EOI: trailing damage is an error */
                return;
        } else {
            jpeg_abort_decompress(c);
        }
        j->ph = PH_DONE;
    }
}

/* Keeps src's unconsumed bytes as the tail (they may live in the tail itself). */
static int
keep_tail(an_ijpeg *j)
{
    const uint8_t *p = j->src.next_input_byte;
    size_t n = j->src.bytes_in_buffer;
    if (j->ph == PH_DONE)
        n = 0;
    if (n > j->tail_cap) {
        uint8_t *nb = an_malloc(j->b.alloc, n);
        if (nb == NULL)
            return 0;
        memcpy(nb, p, n);
        an_free(j->b.alloc, j->tail);
        j->tail = nb;
        j->tail_cap = n;
    } else if (n > 0) {
        memmove(j->tail, p, n);
    }
    j->tail_len = n;
    j->src.next_input_byte = j->tail;
    j->src.bytes_in_buffer = n;
    return 1;
}

/* Appends data to the tail. */
static int
extend_tail(an_ijpeg *j, const uint8_t *data, size_t n)
{
    if (n > j->tail_cap - j->tail_len) {
        size_t cap = j->tail_len + n;
        cap = cap < SIZE_MAX / 2 ? cap * 2 : cap;
        uint8_t *nb = an_malloc(j->b.alloc, cap);
        if (nb == NULL)
            return 0;
        memcpy(nb, j->tail, j->tail_len);
        an_free(j->b.alloc, j->tail);
        j->tail = nb;
        j->tail_cap = cap;
    }
    memcpy(j->tail + j->tail_len, data, n);
    j->tail_len += n;
    return 1;
}

static void
nomem_tail(an_ijpeg *j)
{
    an_error_set(j->b.err, an_nomem(j->b.alloc), "cannot allocate the JPEG input buffer");
    longjmp(j->b.jmp, 1);
}

an_status
an_ijpeg_feed(an_ijpeg *j, const uint8_t *data, size_t len, int *done, an_error *err)
{
    (void)err; /* j->b.err is the record for the decoder's life */
    volatile size_t pos = 0;
    if (setjmp(j->b.jmp))
        return j->b.err->status != AN_OK ? j->b.err->status : AN_ERR_CORRUPT;
    while (j->ph != PH_DONE) {
        if (j->skip > 0) {
            size_t drop = j->skip < len - pos ? j->skip : len - pos;
            pos += drop;
            j->skip -= drop;
        }
        if (pos == len)
            break;
        if (j->tail_len == 0) {
            /* Read the chunk in place; keep what libjpeg could not use yet. */
            j->src.next_input_byte = data + pos;
            j->src.bytes_in_buffer = len - pos;
            pos = len;
            advance(j);
            if (!keep_tail(j))
                nomem_tail(j);
            break;
        }
        /* Extend the tail until libjpeg gets past its old end. */
        size_t old = j->tail_len;
        size_t take = old > MIN_EXTEND ? old : MIN_EXTEND;
        if (take > len - pos)
            take = len - pos;
        if (!extend_tail(j, data + pos, take))
            nomem_tail(j);
        pos += take;
        j->src.next_input_byte = j->tail;
        j->src.bytes_in_buffer = j->tail_len;
        advance(j);
        size_t used = j->tail_len - j->src.bytes_in_buffer;
        if (j->ph != PH_DONE && used >= old && j->skip == 0) {
            /* The rest is in the chunk: continue there, without copying. */
            pos -= j->src.bytes_in_buffer;
            j->tail_len = 0;
        } else if (!keep_tail(j)) {
            nomem_tail(j);
        }
    }
    if (j->ph == PH_DONE) {
        j->tail_len = 0;
        *done = 1;
    }
    return AN_OK;
}

an_status
an_ijpeg_finish(an_ijpeg *j, an_error *err)
{
    (void)err;
    if (setjmp(j->b.jmp))
        return j->b.err->status != AN_OK ? j->b.err->status : AN_ERR_CORRUPT;
    j->eof = 1;
    j->src.next_input_byte = j->tail;
    j->src.bytes_in_buffer = j->tail_len;
    if (j->skip > 0) {
        /* libjpeg skipped past the end: what jpeg.c's source does then. */
        long n = (long)j->skip;
        j->skip = 0;
        j->src.bytes_in_buffer = 0;
        src_skip(&j->b.cinfo, n);
    }
    advance(j);
    if (j->ph != PH_DONE) {
        an_error_set(j->b.err, AN_ERR_CORRUPT, "JPEG decoding did not complete");
        return j->b.err->status;
    }
    return AN_OK;
}
