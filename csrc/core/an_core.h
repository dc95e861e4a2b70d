/*
 * an_core.h - the Python-free core of amulet_native.
 *
 * Everything in csrc/core/ is plain C99 over libjpeg-turbo and libpng.  It never
 * includes the interpreter's headers so that the C tests, the sanitizer builds and the fuzzers can
 * drive exactly the code the extension runs.  Every fallible call returns an
 * an_status and fills an an_error; the binding maps the status to one Python
 * exception class through the single table in errors.c.
 *
 * Decoding untrusted data is split in two phases so that the caller can check the
 * output size (and allocate the output, e.g. as a NumPy array) between them:
 *
 *     an_decoder_open()   sniff, parse the header, enforce every limit
 *     an_decoder_shape()  the exact output geometry
 *     an_decoder_run()    decode into a caller-provided, C-contiguous buffer
 *     an_decoder_close()  always, whatever happened before
 */
#ifndef AN_CORE_H
#define AN_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes.  Append only: the stable string codes live in errors.c. */
typedef enum an_status {
    AN_OK = 0,
    AN_ERR_NOMEM,           /* an allocation failed */
    AN_ERR_INVALID_ARG,     /* caller passed an impossible option */
    AN_ERR_EMPTY,           /* zero-length input */
    AN_ERR_UNKNOWN_FORMAT,  /* magic bytes are not JPEG or PNG */
    AN_ERR_UNSUPPORTED,     /* JPEG/PNG, but a variant we refuse (12-bit, lossless) */
    AN_ERR_WRONG_FORMAT,    /* decode_png() got a JPEG, or the reverse */
    AN_ERR_LIMIT_BYTES,
    AN_ERR_LIMIT_PIXELS,
    AN_ERR_LIMIT_WIDTH,
    AN_ERR_LIMIT_HEIGHT,
    AN_ERR_LIMIT_SCANS,
    AN_ERR_HEADER,          /* header present but invalid (zero size, bad IHDR) */
    AN_ERR_TRUNCATED,       /* input ends before the image does */
    AN_ERR_CORRUPT,         /* the codec found corrupt data */
    AN_ERR_MEMORY_LIMIT,    /* an allocation was refused by a memory budget */
    AN_ERR_OUT_MISMATCH,    /* out= array has the wrong shape/dtype/layout */
    AN_ERR_INPUT_TYPE,      /* input is not a contiguous byte buffer */
    AN_ERR_BASE64,          /* malformed base64; err->actual is the offset */
    AN_ERR_ENCODE,          /* libjpeg/libpng failed while encoding */
    AN_ERR_ARRAY,           /* an array argument has an unsupported shape/dtype */
    AN_ERR_THREADS,         /* worker threads could not be started */
    AN_ERR_PROCESS_MEMORY_LIMIT, /* the process memory limit refused an allocation */
    AN_ERR_SYSTEM,          /* /proc or cgroup files missing, unreadable or malformed */
    AN_ERR_CLOSED,          /* the object (e.g. a mapped file) was closed */
    AN_ERR_IO,              /* an operating system call failed; err->actual is errno */
    AN_ERR_CACHE_TOO_LARGE, /* a value bigger than the cache's max_bytes */
    AN_ERR_REENTRANT,       /* a cached function called itself for the same key */
    /* locks and pools (an_lock.h) */
    AN_ERR_CANCELLED,       /* a wait was stopped by its interrupt callback */
    AN_ERR_LOCK_TIMEOUT,
    AN_ERR_LOCK_DEADLOCK,   /* the wait would close a wait-for cycle */
    AN_ERR_LOCK_KIND,       /* name already exists with another kind/permits */
    AN_ERR_LOCK_NOT_HELD,   /* release of a lock the owner does not hold */
    AN_ERR_POOL_TIMEOUT,
    AN_ERR_POOL_CLOSED,
    AN_ERR_QUEUE_CLOSED,    /* put on a closed queue, or get on a closed empty one */
    AN_ERR_DECODER_STATE,   /* IncrementalDecoder used after finish/close/error */
    AN_ERR_DECODER_BUSY,    /* IncrementalDecoder used by two threads at once */
    /* the shared arena (ops/an_arena.h) */
    AN_ERR_ARENA_CORRUPT,   /* not an arena, wrong version, bad checksum, truncated */
    AN_ERR_ARENA_FULL,      /* no free record, data unit or worker slot left */
    AN_ERR_ARENA_MISMATCH,  /* record absent, or present with another size/fold */
    /* rate limits (ops/an_gcra.h) */
    AN_ERR_RATELIMIT_KEY,   /* a limiter key that is not str/bytes, or too long */
    AN_ERR_RATELIMIT_COST,  /* a cost < 0, or larger than a policy's burst */
    AN_STATUS_COUNT
} an_status;

/* One row of the error table: stable code, Python class name, default text. */
typedef struct an_error_entry {
    an_status status;
    const char *code;       /* e.g. "decode.truncated"; never changes */
    const char *exc_class;  /* name in amulet_native.errors */
    const char *message;
} an_error_entry;

/* Returns the table row for status (the AN_ERR_CORRUPT row for unknown values). */
const an_error_entry *an_error_lookup(an_status status);

/* Details of one failure (or, with warned set, of one tolerated problem). */
typedef struct an_error {
    an_status status;
    int warned;             /* strict=0 only: problems were tolerated */
    int format;             /* an_format of the input, when known */
    uint64_t actual;        /* limit errors: the offending value */
    uint64_t limit;         /* limit errors: the limit */
    char detail[200];       /* codec message or format name; "" when none */
} an_error;

void an_error_set(an_error *err, an_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---- allocation: the single path for core-owned memory ------------------- */

/* A pluggable allocator so the binding can charge allocations to a memory
 * budget and tests can inject failures.  NULL means malloc/free. */
typedef struct an_allocator {
    void *(*malloc_fn)(void *ctx, size_t size); /* NULL on failure */
    void (*free_fn)(void *ctx, void *ptr);
    void *ctx;
    an_status fail_status;  /* status reported when malloc_fn fails */
    /* Optional: charge/uncharge memory a library allocates by itself (libjpeg's
     * coefficient buffers).  reserve_fn returns 0 to refuse. */
    int (*reserve_fn)(void *ctx, size_t size);
    void (*release_fn)(void *ctx, size_t size);
} an_allocator;

void *an_malloc(const an_allocator *a, size_t size);
/* The status to report when an allocation through a failed: its fail_status
 * (e.g. AN_ERR_MEMORY_LIMIT for a budget) or AN_ERR_NOMEM. */
an_status an_nomem(const an_allocator *a);
void *an_calloc(const an_allocator *a, size_t n, size_t size);
void an_free(const an_allocator *a, void *ptr);
/* Charge size bytes that are allocated elsewhere: 1 = granted (always, without
 * a reserve_fn), 0 = refused (report an_nomem(a)).  Each grant is released
 * once with the same size. */
int an_reserve(const an_allocator *a, size_t size);
void an_release(const an_allocator *a, size_t size);

/* Overflow-checked a*b (and a*b*c*d); return 0 on overflow. */
int an_mul_size(size_t a, size_t b, size_t *out);
int an_mul4_size(size_t a, size_t b, size_t c, size_t d, size_t *out);

/* ---- formats and header probing ----------------------------------------- */

typedef enum an_format {
    AN_FMT_UNKNOWN = 0,
    AN_FMT_JPEG,
    AN_FMT_PNG,
    AN_FMT_GIF,
    AN_FMT_WEBP,
    AN_FMT_TIFF,
    AN_FMT_BMP,
    AN_FMT_HEIC,
    AN_FMT_AVIF,
    AN_FMT_ICO,
    AN_FMT_JPEG2000,
    AN_FMT_JPEGXL,
    AN_FMT_PSD,
    AN_FMT_QOI,
    AN_FMT_PDF,
    AN_FMT_COUNT
} an_format;

/* Identifies the format by magic bytes only.  Never fails. */
an_format an_sniff(const uint8_t *data, size_t len);
/* Lower-case name: "jpeg", "png", "gif", ... "unknown". */
const char *an_format_name(an_format fmt);

typedef struct an_info {
    an_format format;
    uint32_t width, height;
    int channels;           /* components in the file (palette: 3, or 4 with tRNS) */
    int bit_depth;          /* sample precision (palette: index depth) */
    int progressive;        /* JPEG progressive, or PNG Adam7 interlaced */
    int orientation;        /* EXIF orientation 1..8 (1 when absent or invalid) */
    /* JPEG only */
    int jpeg_sof;           /* SOF marker (0xC0..0xCF) */
    int adobe_transform;    /* -1 without an Adobe APP14 marker */
    /* PNG only */
    int png_color_type;
    int png_has_trns;
} an_info;

/* Reads only the header (JPEG: up to the first SOS; PNG: up to the first IDAT).
 * Fails with UNKNOWN_FORMAT (err->format says which), TRUNCATED, HEADER or
 * UNSUPPORTED.  Allocates nothing. */
an_status an_probe(const uint8_t *data, size_t len, an_info *info, an_error *err);

/* EXIF orientation from a TIFF stream (the payload after "Exif\0\0" or a PNG
 * eXIf chunk); 1 when absent or malformed. */
int an_exif_orientation(const uint8_t *tiff, size_t len);

/* ---- decoding ------------------------------------------------------------ */

typedef enum an_mode {
    AN_MODE_L = 1,
    AN_MODE_LA = 2,
    AN_MODE_RGB = 3,
    AN_MODE_RGBA = 4,
    AN_MODE_BGR = 5
} an_mode;

int an_mode_channels(an_mode mode);

typedef struct an_limits {
    uint64_t max_bytes;     /* encoded input size */
    uint64_t max_pixels;    /* width * height of the stored image */
    uint32_t max_width;
    uint32_t max_height;
    uint32_t max_jpeg_scans;
} an_limits;

/* The defaults: 64 MiB, 100 megapixels, 32768 x 32768, 256 scans. */
an_limits an_default_limits(void);

typedef struct an_decode_opts {
    an_mode mode;
    int depth16;            /* PNG: keep 16-bit samples (output uint16) */
    int scale_denom;        /* 1, 2, 4 or 8 (0 = choose from max_w/max_h, or 1) */
    uint32_t max_w, max_h;  /* with scale_denom 0: smallest scale covering this box */
    int orient;             /* apply EXIF orientation */
    int strict;             /* corrupt/truncated data is an error */
    an_format expect;       /* AN_FMT_UNKNOWN = any of JPEG/PNG */
    an_limits limits;
    const an_allocator *alloc; /* NULL = malloc */
} an_decode_opts;

void an_decode_opts_init(an_decode_opts *opts);

typedef struct an_shape {
    uint32_t height, width;
    int channels;           /* 1 for L (2-D output), 2, 3 or 4 */
    int bytes_per_sample;   /* 1 or 2 */
    size_t nbytes;          /* height * width * channels * bytes_per_sample */
} an_shape;

typedef struct an_decoder an_decoder;

/* Parses the header and checks the limits.  On success *out owns a decoder that
 * must be closed; on failure *out is NULL and err says why.  data must stay
 * valid and unchanged until an_decoder_close(). */
an_status an_decoder_open(an_decoder **out, const uint8_t *data, size_t len,
                          const an_decode_opts *opts, an_error *err);
const an_info *an_decoder_info(const an_decoder *dec);
void an_decoder_shape(const an_decoder *dec, an_shape *shape);
/* Decodes into out (shape.nbytes bytes, C-contiguous).  Can be called once.
 * With strict=0 a damaged image still returns AN_OK with err->warned set and the
 * undecodable part zero-filled.  On error the content of out is unspecified. */
an_status an_decoder_run(an_decoder *dec, uint8_t *out, an_error *err);
void an_decoder_close(an_decoder *dec);
/* The allocator the decoder was opened with (opts->alloc; NULL = malloc). */
const an_allocator *an_decoder_allocator(const an_decoder *dec);

/* One-shot convenience (C tests, fuzzers): allocates *out with opts->alloc. */
an_status an_decode(const uint8_t *data, size_t len, const an_decode_opts *opts,
                    uint8_t **out, an_shape *shape, an_error *err);

/* Versions of the libraries linked in, e.g. "2.1.5" / "1.6.39". */
const char *an_libjpeg_version(void);
const char *an_libpng_version(void);

#ifdef __cplusplus
}
#endif
#endif /* AN_CORE_H */
