/*
 * test_mapfile.c - the read-only file map of the core (mapfile.c): content,
 * advice, release, and every refusal (bad fd, directory, pipe, empty file,
 * bad advice).  Built with ASan+UBSan like test_core.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "memory/an_map.h"
#include "check.h"

/* A temporary file holding n bytes (i * 31 + 7); returns an fd open for reading. */
static int
temp_file(size_t n)
{
    char path[] = "/tmp/an_test_mapXXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    unlink(path);
    unsigned char buf[4096];
    for (size_t done = 0; done < n;) {
        size_t k = n - done < sizeof(buf) ? n - done : sizeof(buf);
        for (size_t i = 0; i < k; i++)
            buf[i] = (unsigned char)((done + i) * 31 + 7);
        if (write(fd, buf, k) != (ssize_t)k) {
            close(fd);
            return -1;
        }
        done += k;
    }
    return fd;
}

static void
test_map_content(void)
{
    current = "map content";
    size_t n = 3 * 4096 + 123; /* not a multiple of the page size */
    int fd = temp_file(n);
    CHECK(fd >= 0);
    an_mapping m;
    an_error err;
    memset(&err, 0, sizeof(err));
    CHECK_ST(an_map_fd(fd, &m, &err), AN_OK);
    close(fd); /* the map outlives the descriptor */
    CHECK(m.size == n && m.data != NULL);
    int same = 1;
    for (size_t i = 0; i < n; i++)
        same &= m.data[i] == (unsigned char)(i * 31 + 7);
    CHECK(same);

    current = "map advice";
    CHECK_ST(an_map_advise(&m, 0, m.size, AN_ADVISE_SEQUENTIAL, &err), AN_OK);
    CHECK_ST(an_map_advise(&m, 5000, 1, AN_ADVISE_WILLNEED, &err), AN_OK); /* unaligned */
    CHECK_ST(an_map_advise(&m, 100, 1 << 30, AN_ADVISE_DONTNEED, &err), AN_OK); /* clipped */
    CHECK_ST(an_map_advise(&m, m.size, 10, AN_ADVISE_NORMAL, &err), AN_OK);     /* empty */
    /* DONTNEED on a file map loses nothing: the pages are read in again. */
    same = 1;
    for (size_t i = 0; i < n; i++)
        same &= m.data[i] == (unsigned char)(i * 31 + 7);
    CHECK(same);
    CHECK_ST(an_map_advise(&m, m.size + 1, 1, AN_ADVISE_NORMAL, &err), AN_ERR_INVALID_ARG);
    CHECK_ST(an_map_advise(&m, 0, 1, AN_ADVISE_COUNT, &err), AN_ERR_INVALID_ARG);
    CHECK_ST(an_map_advise(&m, 0, 1, (an_advice)-1, &err), AN_ERR_INVALID_ARG);

    current = "map release";
    an_map_release(&m);
    CHECK(m.data == NULL && m.size == 0);
    an_map_release(&m); /* twice is harmless */
    CHECK_ST(an_map_advise(&m, 0, 1, AN_ADVISE_NORMAL, &err), AN_ERR_INVALID_ARG);
}

static void
test_map_refusals(void)
{
    an_mapping m;
    an_error err;
    memset(&err, 0, sizeof(err));

    current = "map bad fd";
    CHECK_ST(an_map_fd(-1, &m, &err), AN_ERR_IO);
    CHECK(err.actual == EBADF && m.data == NULL && m.size == 0);
    CHECK(strstr(err.detail, "fstat") != NULL);

    current = "map empty file";
    int fd = temp_file(0);
    CHECK(fd >= 0);
    CHECK_ST(an_map_fd(fd, &m, &err), AN_ERR_EMPTY);
    CHECK(m.data == NULL);
    close(fd);

    current = "map directory";
    fd = open("/tmp", O_RDONLY);
    CHECK(fd >= 0);
    CHECK_ST(an_map_fd(fd, &m, &err), AN_ERR_INPUT_TYPE);
    close(fd);

    current = "map pipe";
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK_ST(an_map_fd(p[0], &m, &err), AN_ERR_INPUT_TYPE);
    close(p[0]);
    close(p[1]);

    current = "map write-only fd";
    char path[] = "/tmp/an_test_mapXXXXXX";
    fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, "abc", 3) == 3);
    close(fd);
    fd = open(path, O_WRONLY);
    unlink(path);
    CHECK(fd >= 0);
    CHECK_ST(an_map_fd(fd, &m, &err), AN_ERR_IO); /* mmap: EACCES */
    CHECK(err.actual == EACCES && m.data == NULL);
    close(fd);
}

int
main(void)
{
    (void)fault_malloc; /* check.h's fault allocator: the map allocates nothing */
    (void)fault_free;
    test_map_content();
    test_map_refusals();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
