/*
 * an_map.h - read-only memory maps of regular files (mapfile.c).
 *
 * A mapping lets the decoder and the hash functions read a large upload that
 * was spooled to disk without copying it into the heap: the pages are file
 * backed, so the kernel can drop and re-read them instead of swapping.  The
 * map does not keep the file descriptor: the caller may close it right after
 * an_map_fd().
 *
 * Risk the caller must know: if another process truncates the file while it
 * is mapped, touching a page past the new end raises SIGBUS.  Map only files
 * this process controls (its own spooled uploads), not files others write.
 */
#ifndef AN_MAP_H
#define AN_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "../an_core.h"

/* Invariant: data == NULL exactly when size == 0 (not mapped, or released). */
typedef struct an_mapping {
    const uint8_t *data;
    size_t size;
} an_mapping;

typedef enum an_advice {
    AN_ADVISE_NORMAL = 0,
    AN_ADVISE_SEQUENTIAL,   /* read ahead aggressively, drop pages behind */
    AN_ADVISE_RANDOM,
    AN_ADVISE_WILLNEED,     /* start reading the range in now */
    AN_ADVISE_DONTNEED,     /* drop the range from this process's resident set */
    AN_ADVISE_COUNT
} an_advice;

/* Maps the whole regular file open on fd read-only (shared, so the page cache
 * is used directly).  Fails with INPUT_TYPE (not a regular file), EMPTY (zero
 * bytes; mmap cannot map nothing), NOMEM (address space exhausted) or IO
 * (err->actual is the errno of fstat/mmap).  On failure *m is zeroed. */
an_status an_map_fd(int fd, an_mapping *m, an_error *err);

/* Advises the kernel about [offset, offset + len) of the map (len is clipped
 * to the end; the start is rounded down to a page).  DONTNEED never loses
 * data on a read-only file map: a later access reads the page in again.
 * Returns AN_OK, INVALID_ARG (bad advice or offset past the end) or IO.
 * Where the platform has no madvise this is a successful no-op. */
an_status an_map_advise(const an_mapping *m, size_t offset, size_t len, an_advice advice,
                        an_error *err);

/* Unmaps; *m is zeroed.  Safe to call twice. */
void an_map_release(an_mapping *m);

#endif /* AN_MAP_H */
