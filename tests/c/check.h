/*
 * check.h - the assertion macros of the C test runners (test_core.c,
 * test_encode.c): count passes and failures, report each failure with its
 * location and the name of the running case, never abort.
 */
#ifndef AN_TEST_CHECK_H
#define AN_TEST_CHECK_H

#include <stdio.h>

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

#endif /* AN_TEST_CHECK_H */
