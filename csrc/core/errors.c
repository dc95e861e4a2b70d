/*
 * errors.c - the one error table and the small utilities every file needs.
 *
 * The table is the contract with users: the string codes are stable API (they
 * end up in logs, metrics and HTTP error bodies), and the class names bind each
 * status to one exception in amulet_native.errors.  The binding builds its
 * status -> class map from this table at import, so adding a status here is the
 * only change needed to raise a new kind of error.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "an_core.h"

static const an_error_entry error_table[AN_STATUS_COUNT] = {
    {AN_OK, "ok", "AmuletError", "no error"},
    {AN_ERR_NOMEM, "memory.alloc", "MemoryLimitError", "out of memory"},
    {AN_ERR_INVALID_ARG, "value.invalid", "ValidationError", "invalid argument"},
    {AN_ERR_EMPTY, "input.empty", "ValidationError", "input is empty"},
    {AN_ERR_UNKNOWN_FORMAT, "format.unsupported", "UnsupportedFormatError",
     "not a JPEG or PNG image"},
    {AN_ERR_UNSUPPORTED, "format.unsupported_variant", "UnsupportedFormatError",
     "unsupported image variant"},
    {AN_ERR_WRONG_FORMAT, "format.mismatch", "UnsupportedFormatError",
     "image is not in the expected format"},
    {AN_ERR_LIMIT_BYTES, "limits.bytes", "ImageTooLargeError", "input exceeds max_bytes"},
    {AN_ERR_LIMIT_PIXELS, "limits.pixels", "ImageTooLargeError", "image exceeds max_pixels"},
    {AN_ERR_LIMIT_WIDTH, "limits.width", "ImageTooLargeError", "image exceeds max_width"},
    {AN_ERR_LIMIT_HEIGHT, "limits.height", "ImageTooLargeError", "image exceeds max_height"},
    {AN_ERR_LIMIT_SCANS, "limits.jpeg_scans", "ImageTooLargeError",
     "progressive JPEG exceeds max_jpeg_scans"},
    {AN_ERR_HEADER, "decode.header", "DecodeError", "invalid image header"},
    {AN_ERR_TRUNCATED, "decode.truncated", "DecodeError", "image data is truncated"},
    {AN_ERR_CORRUPT, "decode.corrupt", "DecodeError", "image data is corrupt"},
    {AN_ERR_MEMORY_LIMIT, "memory.limit", "MemoryLimitError", "memory limit exceeded"},
    {AN_ERR_OUT_MISMATCH, "value.out", "ValidationError",
     "out= array does not match the decoded image"},
    {AN_ERR_INPUT_TYPE, "input.type", "ValidationError",
     "input must be a contiguous bytes-like object"},
    {AN_ERR_BASE64, "input.base64", "ValidationError", "malformed base64 data"},
    {AN_ERR_ENCODE, "encode.failed", "ProcessingError", "image encoding failed"},
    {AN_ERR_ARRAY, "value.array", "ValidationError",
     "array has an unsupported shape, dtype or layout"},
    {AN_ERR_THREADS, "runtime.threads", "ProcessingError", "cannot start worker threads"},
    {AN_ERR_PROCESS_MEMORY_LIMIT, "memory.process_limit", "MemoryLimitError",
     "process memory limit exceeded"},
    {AN_ERR_SYSTEM, "system.meminfo", "ProcessingError", "cannot read memory information"},
    {AN_ERR_CLOSED, "input.closed", "ValidationError", "the object is closed"},
    {AN_ERR_IO, "io.error", "ProcessingError", "an operating system call failed"},
    {AN_ERR_CACHE_TOO_LARGE, "cache.too_large", "ValidationError",
     "value is larger than the cache's max_bytes"},
    {AN_ERR_REENTRANT, "cache.reentrant", "ReentrantCallError",
     "re-entrant call of a cached function for the key it is computing"},
    {AN_ERR_CANCELLED, "wait.cancelled", "AmuletError", "the wait was cancelled"},
    {AN_ERR_LOCK_TIMEOUT, "lock.timeout", "LockTimeoutError", "timed out waiting for the lock"},
    {AN_ERR_LOCK_DEADLOCK, "lock.deadlock", "DeadlockError",
     "waiting for the lock would deadlock"},
    {AN_ERR_LOCK_KIND, "lock.kind", "ValidationError",
     "the lock name already exists with another kind or permit count"},
    {AN_ERR_LOCK_NOT_HELD, "lock.not_held", "LockReleaseError",
     "release of a lock that is not held by the caller"},
    {AN_ERR_POOL_TIMEOUT, "pool.timeout", "PoolTimeoutError",
     "timed out waiting for a pooled object"},
    {AN_ERR_POOL_CLOSED, "pool.closed", "PoolClosedError", "the pool is closed"},
    {AN_ERR_QUEUE_CLOSED, "queue.closed", "QueueClosed", "the queue is closed"},
    {AN_ERR_DECODER_STATE, "decoder.state", "ValidationError",
     "the incremental decoder has finished, failed or been closed"},
    {AN_ERR_DECODER_BUSY, "decoder.busy", "ValidationError",
     "the incremental decoder is in use by another thread"},
    {AN_ERR_ARENA_CORRUPT, "arena.corrupt", "ArenaError",
     "the shared arena file is corrupt or not an arena"},
    {AN_ERR_ARENA_FULL, "arena.full", "ArenaFullError", "the shared arena is full"},
    {AN_ERR_ARENA_MISMATCH, "arena.mismatch", "ArenaError",
     "the arena record is absent or has another size or fold operation"},
    {AN_ERR_RATELIMIT_KEY, "ratelimit.key", "ValidationError",
     "a rate limit key must be str or bytes of at most 1024 bytes"},
    {AN_ERR_RATELIMIT_COST, "ratelimit.cost", "ValidationError",
     "the cost must be an int between 0 and the smallest burst of the policies"},
};

const an_error_entry *
an_error_lookup(an_status status)
{
    if ((unsigned)status >= AN_STATUS_COUNT)
        status = AN_ERR_CORRUPT;
    return &error_table[status];
}

void
an_error_set(an_error *err, an_status status, const char *fmt, ...)
{
    err->status = status;
    if (fmt == NULL) {
        err->detail[0] = '\0';
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
    va_end(ap);
}

void *
an_malloc(const an_allocator *a, size_t size)
{
    if (size == 0)
        size = 1;
    if (a != NULL && a->malloc_fn != NULL)
        return a->malloc_fn(a->ctx, size);
    return malloc(size);
}

an_status
an_nomem(const an_allocator *a)
{
    return (a != NULL && a->fail_status != AN_OK) ? a->fail_status : AN_ERR_NOMEM;
}

void *
an_calloc(const an_allocator *a, size_t n, size_t size)
{
    size_t total;
    if (!an_mul_size(n, size, &total))
        return NULL;
    void *p = an_malloc(a, total);
    if (p != NULL)
        memset(p, 0, total);
    return p;
}

void
an_free(const an_allocator *a, void *ptr)
{
    if (ptr == NULL)
        return;
    if (a != NULL && a->free_fn != NULL)
        a->free_fn(a->ctx, ptr);
    else
        free(ptr);
}

int
an_reserve(const an_allocator *a, size_t size)
{
    return (a == NULL || a->reserve_fn == NULL) ? 1 : a->reserve_fn(a->ctx, size);
}

void
an_release(const an_allocator *a, size_t size)
{
    if (a != NULL && a->release_fn != NULL)
        a->release_fn(a->ctx, size);
}

int
an_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

int
an_mul4_size(size_t a, size_t b, size_t c, size_t d, size_t *out)
{
    size_t ab, abc;
    return an_mul_size(a, b, &ab) && an_mul_size(ab, c, &abc) && an_mul_size(abc, d, out);
}

an_limits
an_default_limits(void)
{
    an_limits lim = {64u << 20, 100000000u, 32768u, 32768u, 256u};
    return lim;
}

an_status
an_check_dims(const an_limits *lim, uint64_t w, uint64_t h, an_error *err)
{
    if (w == 0 || h == 0) {
        an_error_set(err, AN_ERR_HEADER, "image has zero size (%llux%llu)",
                     (unsigned long long)w, (unsigned long long)h);
        return err->status;
    }
    if (lim->max_width && w > lim->max_width) {
        err->actual = w;
        err->limit = lim->max_width;
        an_error_set(err, AN_ERR_LIMIT_WIDTH, "width %llu exceeds max_width %u",
                     (unsigned long long)w, lim->max_width);
        return err->status;
    }
    if (lim->max_height && h > lim->max_height) {
        err->actual = h;
        err->limit = lim->max_height;
        an_error_set(err, AN_ERR_LIMIT_HEIGHT, "height %llu exceeds max_height %u",
                     (unsigned long long)h, lim->max_height);
        return err->status;
    }
    /* w and h are < 2^32 each, so the product fits in 64 bits. */
    if (lim->max_pixels && w * h > lim->max_pixels) {
        err->actual = w * h;
        err->limit = lim->max_pixels;
        an_error_set(err, AN_ERR_LIMIT_PIXELS, "%llux%llu = %llu pixels exceeds max_pixels %llu",
                     (unsigned long long)w, (unsigned long long)h,
                     (unsigned long long)(w * h), (unsigned long long)lim->max_pixels);
        return err->status;
    }
    return AN_OK;
}
