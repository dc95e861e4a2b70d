/*
 * gif.c - GIF decoding through giflib: one frame, composed on the canvas with
 * its palette, transparency and the disposal of the frames before it.
 *
 * GIFs are a classic decompression bomb: a few kilobytes of LZW can claim a
 * 65535 x 65535 frame, or thousands of full-canvas frames.  So everything that
 * costs memory or time is bounded from the bytes' own structure before giflib
 * decodes a pixel: the probe walks the blocks (sizes only, no LZW) to count the
 * frames, and open() walks them again up to the requested frame, checking each
 * frame rectangle against the size limits and summing the work those frames
 * will cost (each frame's LZW output plus one canvas: disposal may copy the
 * whole canvas); that sum may not exceed AN_GIF_WORK_FACTOR x max_pixels.  Frames are read with DGifGetLine into one
 * row buffer of ours (never DGifSlurp, which keeps every frame in memory), so
 * giflib's own allocations are its small per-frame records.
 *
 * Composition follows Pillow's GifImagePlugin, the oracle of the tests: the
 * canvas starts as the colour of index 0 (or the transparent index, with alpha
 * 0) of the first frame's palette; pixels of the transparent index keep what is
 * below them (in frame 0 they take the palette colour with alpha 0); disposal
 * 2 fills the frame's rectangle with the transparent colour (alpha 0) when the
 * frame has one and with the background colour otherwise; disposal 3 restores
 * the canvas from before the frame.  Frame rectangles are clipped to the canvas.
 */
#include <stdio.h>
#include <string.h>

#include <gif_lib.h>

#include "an_internal.h"

/* Decoding frame k reads the LZW data of frames 0..k: their total pixel count
 * may not exceed this many times max_pixels (with max_pixels 0: no bound). */
#define AN_GIF_WORK_FACTOR 8u

struct an_gif {
    const uint8_t *data;
    size_t len, pos;        /* giflib's read cursor */
    an_decode_opts opts;
    an_info info;
    GifFileType *gif;
    uint8_t *canvas;        /* width x height pixels of px bytes */
    int px;                 /* 4 (RGBA composition), or the output's pixel size
                             * when the canvas is the output (direct) */
    int direct;             /* frame 0 (nothing to compose) or RGBA output:
                             * drawn straight into the caller's buffer */
    uint8_t *saved;         /* disposal 3: the canvas before the frame */
    uint8_t *line;          /* one frame row of palette indices */
    int tolerated;          /* strict=0: the frame's data was damaged */
};

static uint16_t
le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* Skips the data sub-blocks at *pos; 0 when they run past the end. */
static int
skip_subblocks(const uint8_t *d, size_t len, size_t *pos)
{
    size_t p = *pos;
    for (;;) {
        if (p >= len)
            return 0;
        size_t n = d[p];
        if (n == 0) {
            *pos = p + 1;
            return 1;
        }
        if (len - p - 1 < n)
            return 0;
        p += 1 + n;
    }
}

/* The structure walk: counts frames, and for frames 0..stop (UINT32_MAX: all)
 * calls check() on the rectangle.  Returns AN_OK, or the first check's error.
 * *truncated is set when the bytes end before the trailer. */
typedef an_status (*rect_fn)(void *ctx, uint32_t index, uint32_t w, uint32_t h, an_error *err);

static an_status
walk(const uint8_t *d, size_t len, uint32_t *frames, int *first_transparent, int *truncated,
     rect_fn check, void *ctx, uint32_t stop, an_error *err)
{
    size_t pos = 13;
    int pending_transparent = 0;
    *frames = 0;
    *truncated = 0;
    if (d[10] & 0x80)
        pos += 3u * (2u << (d[10] & 7));
    for (;;) {
        if (pos >= len) {
            *truncated = 1;
            return AN_OK;
        }
        uint8_t b = d[pos];
        if (b == 0x3B)
            return AN_OK;
        if (b == 0x21) {
            if (len - pos < 2) {
                *truncated = 1;
                return AN_OK;
            }
            if (d[pos + 1] == 0xF9 && len - pos >= 4 && d[pos + 2] >= 4)
                pending_transparent = d[pos + 3] & 1;
            pos += 2;
            if (!skip_subblocks(d, len, &pos)) {
                *truncated = 1;
                return AN_OK;
            }
            continue;
        }
        if (b != 0x2C)
            return AN_OK; /* garbage: giflib reports it when decoding gets here */
        if (len - pos < 10) {
            *truncated = 1;
            return AN_OK;
        }
        uint32_t fw = le16(d + pos + 5), fh = le16(d + pos + 7);
        uint8_t packed = d[pos + 9];
        if (*frames == 0)
            *first_transparent = pending_transparent;
        pending_transparent = 0;
        if (check != NULL && *frames <= stop && check(ctx, *frames, fw, fh, err) != AN_OK)
            return err->status;
        (*frames)++;
        pos += 10;
        if (packed & 0x80)
            pos += 3u * (2u << (packed & 7));
        pos += 1; /* LZW minimum code size */
        if (pos > len || !skip_subblocks(d, len, &pos)) {
            *truncated = 1;
            return AN_OK;
        }
    }
}

an_status
an_gif_probe(const uint8_t *d, size_t len, an_info *info, an_error *err)
{
    int first_transparent = 0, truncated;
    info->format = AN_FMT_GIF;
    if (len < 13) {
        an_error_set(err, AN_ERR_TRUNCATED, "GIF header is truncated");
        return err->status;
    }
    info->width = le16(d + 6);
    info->height = le16(d + 8);
    if (info->width == 0 || info->height == 0) {
        an_error_set(err, AN_ERR_HEADER, "GIF canvas has zero size (%ux%u)", info->width,
                     info->height);
        return err->status;
    }
    walk(d, len, &info->frames, &first_transparent, &truncated, NULL, NULL, 0, err);
    info->channels = first_transparent ? 4 : 3;
    info->bit_depth = 8;
    return AN_OK;
}

/* ---- decoding -------------------------------------------------------------- */

typedef struct work_ctx {
    const an_limits *lim;
    uint64_t canvas;    /* canvas pixels: each frame may touch all of them */
    uint64_t work;
} work_ctx;

static an_status
check_rect(void *ctx, uint32_t index, uint32_t w, uint32_t h, an_error *err)
{
    work_ctx *c = ctx;
    /* A frame costs its LZW output plus up to a canvas of copying (disposal
     * 3 saves and restores the whole canvas), even when its rectangle is
     * tiny: 4096 one-pixel frames on a 100-megapixel canvas are a bomb too. */
    c->work += c->canvas;
    if (w != 0 && h != 0 && an_check_dims(c->lim, w, h, err) != AN_OK) {
        size_t n = strlen(err->detail);
        if (n + 24 < sizeof(err->detail))
            snprintf(err->detail + n, sizeof(err->detail) - n, " (frame %u)", index);
        return err->status;
    }
    c->work += (uint64_t)w * h;
    uint64_t max = c->lim->max_pixels * (uint64_t)AN_GIF_WORK_FACTOR;
    if (c->lim->max_pixels && c->work > max) {
        err->actual = c->work;
        err->limit = max;
        an_error_set(err, AN_ERR_LIMIT_FRAMES,
                     "decoding GIF frame %u needs %llu pixels of LZW output, more than %u x "
                     "max_pixels",
                     index, (unsigned long long)c->work, AN_GIF_WORK_FACTOR);
        return err->status;
    }
    return AN_OK;
}

void
an_gif_close(an_gif *g)
{
    if (g == NULL)
        return;
    const an_allocator *a = g->opts.alloc;
    if (g->gif != NULL) {
        int e;
        DGifCloseFile(g->gif, &e);
    }
    an_free(a, g->canvas);
    an_free(a, g->saved);
    an_free(a, g->line);
    an_free(a, g);
}

an_status
an_gif_open(an_gif **out, const uint8_t *data, size_t len, const an_decode_opts *opts,
            const an_info *info, an_error *err)
{
    *out = NULL;
    uint32_t frames;
    int ft, truncated;
    work_ctx wc = {&opts->limits, (uint64_t)info->width * info->height, 0};
    if (walk(data, len, &frames, &ft, &truncated, check_rect, &wc, opts->frame, err) != AN_OK)
        return err->status;
    if (opts->limits.max_frames && frames > opts->limits.max_frames) {
        err->actual = frames;
        err->limit = opts->limits.max_frames;
        an_error_set(err, AN_ERR_LIMIT_FRAMES, "GIF has %u frames, max_frames is %u", frames,
                     opts->limits.max_frames);
        return err->status;
    }
    if (frames == 0) {
        an_error_set(err, truncated ? AN_ERR_TRUNCATED : AN_ERR_HEADER, "GIF has no frames");
        return err->status;
    }
    if (opts->frame >= frames) {
        err->actual = opts->frame;
        err->limit = frames;
        an_error_set(err, truncated ? AN_ERR_TRUNCATED : AN_ERR_FRAME_RANGE,
                     "frame %u requested, the GIF has %u%s", opts->frame, frames,
                     truncated ? " before it is cut short" : "");
        return err->status;
    }
    if (truncated && opts->strict && opts->pedantic) {
        /* The frame is whole, the file is not (strict=True: any problem). */
        an_error_set(err, AN_ERR_TRUNCATED, "GIF ends before its trailer");
        return err->status;
    }
    an_gif *g = an_calloc(opts->alloc, 1, sizeof(*g));
    if (g == NULL) {
        an_error_set(err, an_nomem(opts->alloc), "cannot allocate the GIF decoder");
        return err->status;
    }
    g->data = data;
    g->len = len;
    g->opts = *opts;
    g->info = *info;
    *out = g;
    return AN_OK;
}

static int
read_mem(GifFileType *gif, GifByteType *buf, int n)
{
    an_gif *g = gif->UserData;
    size_t avail = g->len - g->pos;
    size_t take = n < 0 ? 0 : (size_t)n;
    if (take > avail)
        take = avail;
    memcpy(buf, g->data + g->pos, take);
    g->pos += take;
    return (int)take;
}

static an_status
gif_error(an_gif *g, int code, an_error *err)
{
    const char *msg = GifErrorString(code);
    an_status st;
    switch (code) {
    case D_GIF_ERR_READ_FAILED:
    case D_GIF_ERR_EOF_TOO_SOON:
        st = AN_ERR_TRUNCATED;
        break;
    case D_GIF_ERR_NOT_ENOUGH_MEM:
        st = AN_ERR_NOMEM;
        break;
    case D_GIF_ERR_NOT_GIF_FILE:
    case D_GIF_ERR_NO_SCRN_DSCR:
        st = AN_ERR_HEADER;
        break;
    default:
        st = AN_ERR_CORRUPT;
        break;
    }
    if (st == AN_ERR_TRUNCATED && g->pos < g->len)
        st = AN_ERR_CORRUPT;
    an_error_set(err, st, "GIF: %s", msg != NULL ? msg : "decoding failed");
    return st;
}

/* One RGBA colour in the canvas's pixel format. */
static void
canvas_pixel(const an_gif *g, const uint8_t rgba[4], uint8_t out[4])
{
    if (g->px == 4 && (!g->direct || g->opts.mode == AN_MODE_RGBA))
        memcpy(out, rgba, 4);
    else
        an_convert_row8(AN_PIX_RGBA, g->opts.mode, rgba, out, 1);
}

static void
fill_rect(an_gif *g, uint32_t x0, uint32_t y0, uint32_t x1, uint32_t y1, const uint8_t rgba[4])
{
    const size_t px = (size_t)g->px, cw = g->info.width;
    uint8_t v[4];
    canvas_pixel(g, rgba, v);
    for (uint32_t y = y0; y < y1; y++) {
        uint8_t *p = g->canvas + ((size_t)y * cw + x0) * px;
        for (uint32_t x = x0; x < x1; x++, p += px)
            memcpy(p, v, px);
    }
}

static void
palette_rgba(const ColorMapObject *map, int index, int alpha, uint8_t rgba[4])
{
    if (map != NULL && index >= 0 && index < map->ColorCount) {
        rgba[0] = map->Colors[index].Red;
        rgba[1] = map->Colors[index].Green;
        rgba[2] = map->Colors[index].Blue;
    } else {
        rgba[0] = rgba[1] = rgba[2] = 0;
    }
    rgba[3] = (uint8_t)alpha;
}

/* Reads the rows of the current image and draws them (clipped) on the canvas.
 * first: frame 0, whose transparent pixels take the palette colour. */
static an_status
draw_frame(an_gif *g, const ColorMapObject *map, int transparent, int first, an_error *err)
{
    GifFileType *gif = g->gif;
    const GifImageDesc *im = &gif->Image;
    const uint32_t cw = g->info.width, ch = g->info.height;
    const uint32_t fw = (uint32_t)im->Width, fh = (uint32_t)im->Height;
    const uint32_t left = (uint32_t)im->Left, top = (uint32_t)im->Top;
    static const uint32_t start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
    const size_t px = (size_t)g->px;
    uint8_t lut[256][4], rgba[4];
    for (int i = 0; i < 256; i++) {
        palette_rgba(map, i, i == transparent ? 0 : 255, rgba);
        canvas_pixel(g, rgba, lut[i]);
    }

    uint32_t row = 0, pass = 0;
    for (uint32_t n = 0; n < fh; n++) {
        uint32_t y;
        if (im->Interlace) {
            while (row >= fh) {
                pass++;
                row = start[pass];
            }
            y = row;
            row += step[pass];
        } else {
            y = n;
        }
        if (DGifGetLine(gif, g->line, (int)fw) == GIF_ERROR) {
            if (!g->opts.strict) {
                g->tolerated = 1;
                return AN_OK; /* the rows read so far stay */
            }
            return gif_error(g, gif->Error, err);
        }
        uint32_t cy = top + y;
        if (cy >= ch || left >= cw)
            continue;
        uint32_t x1 = fw < cw - left ? fw : cw - left;
        uint8_t *dst = g->canvas + ((size_t)cy * cw + left) * px;
        if (px == 3 && (first || transparent < 0)) {
            for (uint32_t x = 0; x < x1; x++, dst += 3) {
                const uint8_t *v = lut[g->line[x]];
                dst[0] = v[0];
                dst[1] = v[1];
                dst[2] = v[2];
            }
            continue;
        }
        for (uint32_t x = 0; x < x1; x++, dst += px) {
            int idx = g->line[x];
            if (idx == transparent && !first)
                continue;
            memcpy(dst, lut[idx], px);
        }
    }
    return AN_OK;
}

an_status
an_gif_run(an_gif *g, uint8_t *out, an_error *err)
{
    const an_allocator *a = g->opts.alloc;
    const uint32_t cw = g->info.width, ch = g->info.height;
    const an_mode mode = g->opts.mode;
    int gerr = 0;
    size_t n;

    g->direct = g->opts.frame == 0 || mode == AN_MODE_RGBA;
    g->px = g->direct ? an_mode_channels(mode) : 4;
    if (!an_mul4_size(cw, ch, (size_t)g->px, 1, &n)) {
        an_error_set(err, AN_ERR_LIMIT_PIXELS, "image size overflows");
        return err->status;
    }
    g->canvas = g->direct ? out : an_malloc(a, n);
    g->line = an_malloc(a, 65536);
    if (g->canvas == NULL || g->line == NULL) {
        if (g->canvas == out)
            g->canvas = NULL;
        an_error_set(err, an_nomem(a), "cannot allocate the %zu-byte GIF canvas", n);
        return err->status;
    }
    g->pos = 0;
    g->gif = DGifOpen(g, read_mem, &gerr);
    an_status st = AN_OK;
    if (g->gif == NULL) {
        st = gif_error(g, gerr, err);
        goto done;
    }

    int transparent = -1, disposal = 0;
    uint32_t index = 0;
    for (;;) {
        GifRecordType type;
        if (DGifGetRecordType(g->gif, &type) == GIF_ERROR) {
            st = gif_error(g, g->gif->Error, err);
            goto done;
        }
        if (type == TERMINATE_RECORD_TYPE) {
            an_error_set(err, AN_ERR_CORRUPT, "GIF ends before frame %u", g->opts.frame);
            st = err->status;
            goto done;
        }
        if (type == EXTENSION_RECORD_TYPE) {
            int code;
            GifByteType *ext;
            if (DGifGetExtension(g->gif, &code, &ext) == GIF_ERROR) {
                st = gif_error(g, g->gif->Error, err);
                goto done;
            }
            if (code == GRAPHICS_EXT_FUNC_CODE && ext != NULL && ext[0] >= 4) {
                GraphicsControlBlock gcb;
                if (DGifExtensionToGCB(ext[0], ext + 1, &gcb) == GIF_OK) {
                    transparent = gcb.TransparentColor;
                    disposal = gcb.DisposalMode;
                }
            }
            while (ext != NULL)
                if (DGifGetExtensionNext(g->gif, &ext) == GIF_ERROR) {
                    st = gif_error(g, g->gif->Error, err);
                    goto done;
                }
            continue;
        }
        if (type != IMAGE_DESC_RECORD_TYPE)
            continue;
        if (DGifGetImageDesc(g->gif) == GIF_ERROR) {
            st = gif_error(g, g->gif->Error, err);
            goto done;
        }
        const GifImageDesc *im = &g->gif->Image;
        const ColorMapObject *map = im->ColorMap != NULL ? im->ColorMap : g->gif->SColorMap;
        uint32_t x0 = (uint32_t)im->Left, y0 = (uint32_t)im->Top;
        uint32_t x1 = x0 + (uint32_t)im->Width, y1 = y0 + (uint32_t)im->Height;
        x0 = x0 < cw ? x0 : cw;
        y0 = y0 < ch ? y0 : ch;
        x1 = x1 < cw ? x1 : cw;
        y1 = y1 < ch ? y1 : ch;
        if (index == 0) {
            uint8_t init[4];
            int fill = transparent >= 0 ? transparent : 0;
            palette_rgba(map, fill, transparent >= 0 ? 0 : 255, init);
            fill_rect(g, 0, 0, cw, ch, init);
        }
        int last = index == g->opts.frame;
        if (!last && disposal == DISPOSE_PREVIOUS) {
            if (g->saved == NULL && (g->saved = an_malloc(a, n)) == NULL) {
                an_error_set(err, an_nomem(a), "cannot allocate the %zu-byte GIF canvas", n);
                st = err->status;
                goto done;
            }
            memcpy(g->saved, g->canvas, n);
        }
        if (im->Width > 0 && im->Height > 0) {
            st = draw_frame(g, map, transparent, index == 0, err);
            if (st != AN_OK)
                goto done;
        }
        if (last || g->tolerated)
            break;
        if (disposal == DISPOSE_BACKGROUND) {
            uint8_t bg[4];
            if (transparent >= 0)
                palette_rgba(map, transparent, 0, bg);
            else
                palette_rgba(g->gif->SColorMap, g->gif->SBackGroundColor, 255, bg);
            fill_rect(g, x0, y0, x1, y1, bg);
        } else if (disposal == DISPOSE_PREVIOUS) {
            memcpy(g->canvas, g->saved, n);
        }
        transparent = -1;
        disposal = 0;
        index++;
    }
    if (g->tolerated) {
        err->warned = 1;
        an_error_set(err, AN_OK, "GIF frame data ends early or is damaged");
    }
    if (!g->direct) {
        const size_t oc = (size_t)an_mode_channels(mode);
        for (uint32_t y = 0; y < ch; y++)
            an_convert_row8(AN_PIX_RGBA, mode, g->canvas + (size_t)y * cw * 4,
                            out + (size_t)y * cw * oc, cw);
    }
done:
    if (g->canvas == out)
        g->canvas = NULL;
    return st;
}

const char *
an_giflib_version(void)
{
#define AN_STR2(x) #x
#define AN_STR(x) AN_STR2(x)
    return AN_STR(GIFLIB_MAJOR) "." AN_STR(GIFLIB_MINOR) "." AN_STR(GIFLIB_RELEASE);
}
