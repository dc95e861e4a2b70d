/*
 * check.h - the assertion macros of the C test runners (test_core.c,
 * test_encode.c): count passes and failures, report each failure with its
 * location and the name of the running case, never abort.  Also the counting
 * allocator used for fault injection (pass it as an an_allocator).
 */
#ifndef AN_TEST_CHECK_H
#define AN_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "an_core.h"

static int n_pass, n_fail;
static const char *current; /* name of the case being run */

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (cond)                                                                        \
            n_pass++;                                                                    \
        else {                                                                           \
            n_fail++;                                                                    \
            fprintf(stderr, "FAIL %s:%d [%s]: %s\n", __FILE__, __LINE__, current, #cond); \
        }                                                                                \
    } while (0)

#define CHECK_ST(expr, want)                                                             \
    do {                                                                                 \
        an_status got_ = (expr);                                                         \
        if (got_ == (want))                                                              \
            n_pass++;                                                                    \
        else {                                                                           \
            n_fail++;                                                                    \
            fprintf(stderr, "FAIL %s:%d [%s]: %s -> %s, want %s\n", __FILE__, __LINE__,  \
                    current, #expr, an_error_lookup(got_)->code,                         \
                    an_error_lookup(want)->code);                                        \
        }                                                                                \
    } while (0)

/* Fails the fail_at-th allocation and counts the blocks still live. */
typedef struct fault_ctx {
    long fail_at;     /* 1-based index of the allocation to fail; 0 = never */
    long count;       /* allocations attempted */
    long live;        /* blocks handed out and not yet freed */
} fault_ctx;

static void *
fault_malloc(void *ctx, size_t size)
{
    fault_ctx *f = ctx;
    if (++f->count == f->fail_at)
        return NULL;
    void *p = malloc(size);
    if (p != NULL)
        f->live++;
    return p;
}

static void
fault_free(void *ctx, void *ptr)
{
    fault_ctx *f = ctx;
    f->live--;
    free(ptr);
}

#endif /* AN_TEST_CHECK_H */
