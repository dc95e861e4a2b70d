/*
 * mapfile.c - read-only memory maps of regular files (see an_map.h).
 *
 * Plain POSIX: fstat to learn the size and refuse what cannot be mapped safely
 * (pipes, sockets and devices have no stable size; an empty file cannot be
 * mapped at all), mmap(PROT_READ, MAP_SHARED), madvise for the access pattern.
 * Nothing here allocates heap memory.
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE 1
#endif

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "an_map.h"

static an_status
os_error(an_error *err, const char *call, int e)
{
    err->actual = (uint64_t)e;
    an_error_set(err, e == ENOMEM ? AN_ERR_NOMEM : AN_ERR_IO, "%s: %s", call, strerror(e));
    return err->status;
}

an_status
an_map_fd(int fd, an_mapping *m, an_error *err)
{
    struct stat st;
    m->data = NULL;
    m->size = 0;
    if (fstat(fd, &st) != 0)
        return os_error(err, "fstat", errno);
    if (!S_ISREG(st.st_mode)) {
        an_error_set(err, AN_ERR_INPUT_TYPE, "only regular files can be mapped");
        return err->status;
    }
    if (st.st_size <= 0) {
        an_error_set(err, AN_ERR_EMPTY, "the file is empty");
        return err->status;
    }
    if ((uintmax_t)st.st_size > (uintmax_t)SIZE_MAX)
        return os_error(err, "mmap", ENOMEM);
    size_t size = (size_t)st.st_size;
    void *p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return os_error(err, "mmap", errno);
    m->data = p;
    m->size = size;
    return AN_OK;
}

an_status
an_map_advise(const an_mapping *m, size_t offset, size_t len, an_advice advice, an_error *err)
{
    if ((unsigned)advice >= AN_ADVISE_COUNT || m->data == NULL || offset > m->size) {
        an_error_set(err, AN_ERR_INVALID_ARG, "invalid advice, or offset past the end of the map");
        return err->status;
    }
    if (len > m->size - offset)
        len = m->size - offset;
    if (len == 0)
        return AN_OK;
#if defined(MADV_NORMAL) && defined(MADV_DONTNEED)
    static const int codes[AN_ADVISE_COUNT] = {
        [AN_ADVISE_NORMAL] = MADV_NORMAL,       [AN_ADVISE_SEQUENTIAL] = MADV_SEQUENTIAL,
        [AN_ADVISE_RANDOM] = MADV_RANDOM,       [AN_ADVISE_WILLNEED] = MADV_WILLNEED,
        [AN_ADVISE_DONTNEED] = MADV_DONTNEED,
    };
    long page = sysconf(_SC_PAGESIZE);
    size_t mask = page > 0 ? (size_t)page - 1 : 4095;
    size_t start = offset & ~mask; /* mmap returns page-aligned addresses */
    if (madvise((void *)(m->data + start), len + (offset - start), codes[advice]) != 0)
        return os_error(err, "madvise", errno);
#endif
    return AN_OK;
}

void
an_map_release(an_mapping *m)
{
    if (m->data != NULL)
        munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}
