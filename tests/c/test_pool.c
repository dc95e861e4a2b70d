/*
 * test_pool.c - stress test of the native worker pool (csrc/core/sync/pool.c),
 * built with ThreadSanitizer by `make -C tests/c run`.
 *
 * Several caller threads run many batches of different sizes and helper limits
 * on one shared pool at once; every index of every batch must run exactly once
 * and be finished when an_pool_run() returns.  Pools are also grown, used with
 * no workers, and destroyed right after busy periods.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "sync/an_pool.h"

static int n_pass, n_fail;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond) {                                                                  \
            n_pass++;                                                                \
        } else {                                                                     \
            n_fail++;                                                                \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
        }                                                                            \
    } while (0)

typedef struct {
    atomic_int *hits;
    atomic_long *work;
} batch_arg;

static void
touch(void *arg, size_t i)
{
    batch_arg *b = arg;
    atomic_fetch_add(&b->hits[i], 1);
    /* a little uneven work so batches interleave */
    long x = 0;
    for (size_t k = 0; k < (i % 7) * 200; k++)
        x += (long)k;
    atomic_fetch_add(b->work, x);
}

typedef struct {
    an_pool *pool;
    unsigned seed;
    int bad;        /* indices not run exactly once; written by this caller only */
} caller_arg;

static void *
caller(void *arg)
{
    caller_arg *c = arg;
    atomic_long work = 0;
    for (int round = 0; round < 300; round++) {
        size_t n = (size_t)(rand_r(&c->seed) % 65);
        int helpers = rand_r(&c->seed) % 5;
        atomic_int *hits = calloc(n ? n : 1, sizeof(*hits));
        batch_arg b = {hits, &work};
        an_pool_run(c->pool, touch, &b, n, helpers);
        for (size_t i = 0; i < n; i++)
            if (atomic_load(&hits[i]) != 1)
                c->bad++;
        free(hits);
    }
    return NULL;
}

static void
stress(int workers, int callers)
{
    an_pool *pool = NULL;
    CHECK(an_pool_create(&pool, workers) == AN_OK && pool != NULL);
    CHECK(an_pool_size(pool) == workers);
    pthread_t t[8];
    caller_arg args[8];
    for (int i = 0; i < callers; i++) {
        args[i].pool = pool;
        args[i].seed = (unsigned)(1234 + i * 77 + workers);
        args[i].bad = 0;
        CHECK(pthread_create(&t[i], NULL, caller, &args[i]) == 0);
    }
    for (int i = 0; i < callers; i++) {
        pthread_join(t[i], NULL);
        CHECK(args[i].bad == 0);
    }
    an_pool_destroy(pool);
}

int
main(void)
{
    stress(0, 1);
    stress(1, 1);
    stress(3, 4);
    stress(2, 8);

    /* growth keeps working batches correct */
    an_pool *pool = NULL;
    CHECK(an_pool_create(&pool, 1) == AN_OK);
    CHECK(an_pool_grow(pool, 4) == AN_OK && an_pool_size(pool) == 4);
    CHECK(an_pool_grow(pool, 2) == AN_OK && an_pool_size(pool) == 4);
    caller_arg c = {pool, 99, 0};
    caller(&c);
    CHECK(c.bad == 0);
    an_pool_destroy(pool);

    CHECK(an_available_cpus() >= 1);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
