/*
 * test_sync.c - the thread-safe structures' core (csrc/core/sync/sync.c) under
 * ThreadSanitizer, built and run by `make -C tests/c run`.
 *
 *  - counters: many threads add, subtract and CAS on one an_counter; the total
 *    is exact and updates that would overflow are refused without a change;
 *  - an_cond: a bounded producer/consumer queue (an_ring under a mutex, the
 *    binding's wait protocol: check, prepare, unlock, wait in short slices)
 *    moves every item exactly once, including with slices short enough that
 *    notifications land between two waits;
 *  - an_ring: FIFO/LIFO order across growth and wrap-around, and allocation
 *    failure leaves the ring unchanged.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sync/an_sync.h"
#include "sync/an_lock.h" /* both waiting layers share an_wait.h: they must compose in one unit */
#include "check.h"

/* ---- counters --------------------------------------------------------------------- */

enum { CT_THREADS = 8, CT_ITERS = 20000 };

static an_counter shared_counter;

static void *
counter_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < CT_ITERS; i++) {
        an_counter_add(&shared_counter, 3, NULL, NULL);
        an_counter_sub(&shared_counter, 1, NULL, NULL);
        int64_t cur;
        do {
            cur = an_counter_load(&shared_counter);
        } while (!an_counter_cas(&shared_counter, cur, cur - 1));
    }
    return NULL;
}

static void
test_counters(void)
{
    current = "counters";
    an_counter c;
    int64_t old = 0, new = 0;
    an_counter_init(&c, INT64_MAX - 1);
    CHECK(an_counter_add(&c, 1, &old, &new) == 1 && old == INT64_MAX - 1 && new == INT64_MAX);
    CHECK(an_counter_add(&c, 1, &old, &new) == 0 && an_counter_load(&c) == INT64_MAX);
    an_counter_store(&c, INT64_MIN);
    CHECK(an_counter_sub(&c, 1, NULL, NULL) == 0 && an_counter_load(&c) == INT64_MIN);
    CHECK(an_counter_add(&c, -1, NULL, NULL) == 0);
    an_counter_store(&c, 0);
    CHECK(an_counter_sub(&c, INT64_MIN, NULL, NULL) == 0 && an_counter_load(&c) == 0);
    CHECK(an_counter_exchange(&c, 5) == 0 && an_counter_load(&c) == 5);
    CHECK(an_counter_cas(&c, 4, 9) == 0 && an_counter_cas(&c, 5, 9) == 1);
    CHECK(an_counter_load(&c) == 9);

    an_counter_init(&shared_counter, 0);
    pthread_t t[CT_THREADS];
    for (int i = 0; i < CT_THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, counter_worker, NULL) == 0);
    for (int i = 0; i < CT_THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK(an_counter_load(&shared_counter) == (int64_t)CT_THREADS * CT_ITERS);
}

/* ---- a bounded queue on an_cond + an_ring, as the binding uses them ------------------ */

enum { PRODUCERS = 4, CONSUMERS = 4, PER_PRODUCER = 5000, CAPACITY = 8 };

typedef struct {
    pthread_mutex_t mu; /* stands in for the GIL / critical section */
    an_ring ring;
    an_cond not_empty, not_full;
    int64_t slice_ns;
    int producers_left;
    atomic_int *seen;
} bqueue;

/* Registers under mu, waits outside it, like an_py_wait(). */
static void
wait_on(bqueue *q, an_cond *c)
{
    uint64_t seq = an_cond_prepare(c);
    pthread_mutex_unlock(&q->mu);
    an_cond_wait(c, seq, q->slice_ns);
    an_cond_finish(c);
    pthread_mutex_lock(&q->mu);
}

static void *
producer(void *arg)
{
    bqueue *q = arg;
    static atomic_int next_id;
    for (int i = 0; i < PER_PRODUCER; i++) {
        intptr_t id = atomic_fetch_add(&next_id, 1) + 1;
        pthread_mutex_lock(&q->mu);
        while (q->ring.count >= CAPACITY)
            wait_on(q, &q->not_full);
        an_status s = an_ring_push(&q->ring, NULL, (void *)id);
        pthread_mutex_unlock(&q->mu);
        if (s != AN_OK)
            abort();
        an_cond_notify(&q->not_empty);
    }
    pthread_mutex_lock(&q->mu);
    q->producers_left--;
    pthread_mutex_unlock(&q->mu);
    an_cond_notify_all(&q->not_empty);
    return NULL;
}

static void *
consumer(void *arg)
{
    bqueue *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (q->ring.count == 0 && q->producers_left > 0)
            wait_on(q, &q->not_empty);
        if (q->ring.count == 0) {
            pthread_mutex_unlock(&q->mu);
            return NULL;
        }
        intptr_t id = (intptr_t)an_ring_pop_front(&q->ring);
        pthread_mutex_unlock(&q->mu);
        an_cond_notify(&q->not_full);
        atomic_fetch_add(&q->seen[id - 1], 1);
    }
}

static void
run_bqueue(int64_t slice_ns)
{
    bqueue q;
    memset(&q, 0, sizeof(q));
    pthread_mutex_init(&q.mu, NULL);
    CHECK_ST(an_cond_init(&q.not_empty), AN_OK);
    CHECK_ST(an_cond_init(&q.not_full), AN_OK);
    q.slice_ns = slice_ns;
    q.producers_left = PRODUCERS;
    int total = PRODUCERS * PER_PRODUCER;
    q.seen = calloc((size_t)total * 2, sizeof(*q.seen)); /* ids of both runs */
    pthread_t t[PRODUCERS + CONSUMERS];
    for (int i = 0; i < CONSUMERS; i++)
        CHECK(pthread_create(&t[i], NULL, consumer, &q) == 0);
    for (int i = 0; i < PRODUCERS; i++)
        CHECK(pthread_create(&t[CONSUMERS + i], NULL, producer, &q) == 0);
    for (int i = 0; i < PRODUCERS + CONSUMERS; i++)
        pthread_join(t[i], NULL);
    int once = 0, other = 0;
    for (int i = 0; i < total * 2; i++) {
        int n = atomic_load(&q.seen[i]);
        once += n == 1;
        other += n > 1;
    }
    CHECK(once == total && other == 0);
    CHECK(q.ring.count == 0);
    CHECK(an_cond_waiters(&q.not_empty) == 0 && an_cond_waiters(&q.not_full) == 0);
    free(q.seen);
    an_ring_free(&q.ring, NULL);
    an_cond_destroy(&q.not_empty);
    an_cond_destroy(&q.not_full);
    pthread_mutex_destroy(&q.mu);
}

static void
test_cond_queue(void)
{
    current = "cond queue, 50 ms slices";
    run_bqueue(50000000);
    current = "cond queue, 20 us slices";
    run_bqueue(20000);
}

static void
test_cond_timeout(void)
{
    current = "cond timeout";
    an_cond c;
    CHECK_ST(an_cond_init(&c), AN_OK);
    uint64_t seq = an_cond_prepare(&c);
    int64_t t0 = an_monotonic_ns();
    CHECK(an_cond_wait(&c, seq, 20000000) == 0);
    CHECK(an_monotonic_ns() - t0 >= 20000000);
    an_cond_notify(&c); /* a notification before the wait is not lost */
    CHECK(an_cond_wait(&c, seq, 1000000000) == 1);
    an_cond_finish(&c);
    CHECK(an_cond_waiters(&c) == 0);
    an_cond_destroy(&c);
}

/* ---- ring ---------------------------------------------------------------------------- */

static void
test_ring(void)
{
    current = "ring";
    an_ring r;
    memset(&r, 0, sizeof(r));
    CHECK(an_ring_pop_front(&r) == NULL && an_ring_pop_back(&r) == NULL);
    intptr_t next_in = 1, next_out = 1;
    for (int round = 0; round < 50; round++) { /* wrap around while growing */
        for (int i = 0; i < 7 + round; i++)
            CHECK_ST(an_ring_push(&r, NULL, (void *)next_in++), AN_OK);
        for (int i = 0; i < 5 + round; i++)
            CHECK((intptr_t)an_ring_pop_front(&r) == next_out++);
    }
    CHECK(r.count == (size_t)(next_in - next_out));
    CHECK((intptr_t)an_ring_get(&r, 0) == next_out);
    CHECK((intptr_t)an_ring_pop_back(&r) == next_in - 1);
    an_ring_set(&r, 0, (void *)(intptr_t)-1);
    CHECK((intptr_t)an_ring_pop_front(&r) == -1);

    /* allocation failure while growing leaves the ring as it was */
    fault_ctx f = {0, 0, 0};
    an_allocator a = {fault_malloc, fault_free, &f, AN_OK, NULL, NULL};
    an_ring g;
    memset(&g, 0, sizeof(g));
    for (intptr_t i = 1; i <= 16; i++)
        CHECK_ST(an_ring_push(&g, &a, (void *)i), AN_OK);
    f.fail_at = f.count + 1;
    CHECK_ST(an_ring_push(&g, &a, (void *)17), AN_ERR_NOMEM);
    CHECK(g.count == 16 && (intptr_t)an_ring_get(&g, 15) == 16);
    an_allocator budget = {fault_malloc, fault_free, &f, AN_ERR_MEMORY_LIMIT, NULL, NULL};
    f.fail_at = f.count + 1;
    CHECK_ST(an_ring_push(&g, &budget, (void *)17), AN_ERR_MEMORY_LIMIT);
    CHECK_ST(an_ring_push(&g, &a, (void *)17), AN_OK);
    CHECK(g.count == 17 && (intptr_t)an_ring_pop_back(&g) == 17);
    an_ring_free(&g, &a);
    CHECK(f.live == 0);

    /* a burst grows the ring; draining it gives the memory back, in order */
    an_ring s;
    memset(&s, 0, sizeof(s));
    for (intptr_t i = 1; i <= 20000; i++)
        CHECK_ST(an_ring_push(&s, &a, (void *)i), AN_OK);
    size_t peak = s.cap;
    intptr_t expect = 1;
    int in_order = 1;
    while (s.count > 0) {
        in_order &= (intptr_t)an_ring_pop_front(&s) == expect++;
        if (s.count == 2048) { /* due to shrink (cap 16384); a failure keeps the storage */
            size_t cap = s.cap;
            f.fail_at = f.count + 1;
            an_ring_shrink(&s, &a);
            CHECK(s.cap == cap && cap == 16384 && f.count == f.fail_at);
        }
        an_ring_shrink(&s, &a);
    }
    CHECK(in_order && expect == 20001);
    CHECK(peak >= 20000 && s.cap <= AN_RING_MIN_SHRINK);
    an_ring_free(&s, &a);
    CHECK(f.live == 0);
    an_ring_free(&r, NULL);
}

int
main(void)
{
    test_counters();
    test_ring();
    test_cond_timeout();
    test_cond_queue();
    printf("test_sync: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
