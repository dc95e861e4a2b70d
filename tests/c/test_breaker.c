/*
 * test_breaker.c - the circuit breaker and the retry budget of
 * csrc/core/ops/breaker.c and retry_budget.c, run under ThreadSanitizer:
 * every transition with an injected clock, then 32 threads competing for the
 * half-open permits (exactly half_open_calls are admitted) and hammering the
 * closed path and the count window at once.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "ops/an_breaker.h"

#define S 1000000000LL

static an_breaker_config
config(void)
{
    an_breaker_config c;
    memset(&c, 0, sizeof(c));
    c.failure_rate = 0.5;
    c.slow_rate = 1.0;
    c.window = 10;
    c.minimum_calls = 4;
    c.wait_open_ns = 30 * S;
    c.half_open_calls = 3;
    return c;
}

static int
call(an_breaker *b, int64_t now, an_brk_outcome o, int64_t dur)
{
    int t;
    int64_t ticket = an_breaker_acquire(b, now, &t);
    if (ticket < 0)
        return -100;
    int r = an_breaker_record(b, ticket, o, dur, now);
    return r != AN_BRK_NONE ? r : t;
}

/* AN_BRK_NOW: an outcome recorded without a time (the binding's closed path)
 * that opens the circuit opens it now, not at time 0 (review-17). */
static void
test_record_now_sentinel(void)
{
    current = "record AN_BRK_NOW";
    an_breaker *b;
    an_breaker_config c = config();
    c.minimum_calls = 2;
    c.wait_open_ns = 3600 * S;
    CHECK_ST(an_breaker_create(&b, &c, NULL), AN_OK);
    int t;
    int64_t k = an_breaker_acquire(b, 0, &t);
    CHECK(an_breaker_record(b, k, AN_BRK_FAILURE, 0, AN_BRK_NOW) == AN_BRK_NONE);
    k = an_breaker_acquire(b, 0, &t);
    CHECK(an_breaker_record(b, k, AN_BRK_SUCCESS, 0, AN_BRK_NOW) ==
          AN_BRK_TRANSITION(AN_BRK_CLOSED, AN_BRK_OPEN));
    an_breaker_metrics m;
    an_breaker_get_metrics(b, 0, &m);
    CHECK(m.opened_at_ns > 0);
    CHECK(an_breaker_retry_after_ns(b, m.opened_at_ns) == 3600 * S);
    an_breaker_destroy(b);
}

static void
test_config(void)
{
    current = "config";
    an_breaker *b;
    an_breaker_config c = config();
    c.failure_rate = 0;
    CHECK_ST(an_breaker_create(&b, &c, NULL), AN_ERR_INVALID_ARG);
    c = config();
    c.window = 0;
    CHECK_ST(an_breaker_create(&b, &c, NULL), AN_ERR_INVALID_ARG);
    c = config();
    c.half_open_calls = 0;
    CHECK_ST(an_breaker_create(&b, &c, NULL), AN_ERR_INVALID_ARG);
    c = config();
    c.slow_rate = 1.5;
    CHECK_ST(an_breaker_create(&b, &c, NULL), AN_ERR_INVALID_ARG);
    CHECK(b == NULL);
    /* every allocation failing in turn: no leak, the budget's status */
    for (long n = 1; n <= 3; n++) {
        fault_ctx f = {n, 0, 0};
        an_allocator a = {fault_malloc, fault_free, &f, AN_ERR_MEMORY_LIMIT, NULL, NULL};
        c = config();
        an_status st = an_breaker_create(&b, &c, &a);
        CHECK(st == (n <= 2 ? AN_ERR_MEMORY_LIMIT : AN_OK));
        an_breaker_destroy(b);
        an_rbudget *r;
        f.count = 0;
        st = an_rbudget_create(&r, 0.2, 1, 10, &a);
        an_rbudget_destroy(r);
        CHECK(f.live == 0);
    }
}

static void
test_count_window(void)
{
    current = "count window";
    an_breaker *b;
    an_breaker_config c = config();
    CHECK_ST(an_breaker_create(&b, &c, NULL), AN_OK);
    /* below minimum_calls nothing happens, even at 100% failures */
    for (int i = 0; i < 3; i++)
        CHECK(call(b, 0, AN_BRK_FAILURE, 0) == AN_BRK_NONE);
    CHECK(an_breaker_state(b) == AN_BRK_CLOSED);
    /* the 4th call reaches minimum_calls: 4/4 failed -> OPEN */
    CHECK(call(b, 0, AN_BRK_FAILURE, 0) == AN_BRK_TRANSITION(AN_BRK_CLOSED, AN_BRK_OPEN));
    CHECK(an_breaker_state(b) == AN_BRK_OPEN);
    CHECK(an_breaker_retry_after_ns(b, 10 * S) == 20 * S);
    /* refused while open */
    CHECK(call(b, 29 * S, AN_BRK_SUCCESS, 0) == -100);
    an_breaker_metrics m;
    an_breaker_get_metrics(b, 29 * S, &m);
    CHECK(m.not_permitted == 1 && m.state == AN_BRK_OPEN);
    /* after wait_open: HALF_OPEN, 3 trial permits exactly */
    int t;
    int64_t k1 = an_breaker_acquire(b, 30 * S, &t);
    CHECK(k1 >= 0 && t == AN_BRK_TRANSITION(AN_BRK_OPEN, AN_BRK_HALF_OPEN));
    int64_t k2 = an_breaker_acquire(b, 30 * S, &t);
    int64_t k3 = an_breaker_acquire(b, 30 * S, &t);
    CHECK(k2 >= 0 && k3 >= 0);
    CHECK(an_breaker_acquire(b, 30 * S, &t) < 0);
    /* a released permit (ignored error) lets one more in */
    an_breaker_release(b, k3);
    k3 = an_breaker_acquire(b, 30 * S, &t);
    CHECK(k3 >= 0);
    CHECK(an_breaker_record(b, k1, AN_BRK_SUCCESS, 0, 30 * S) == AN_BRK_NONE);
    CHECK(an_breaker_record(b, k2, AN_BRK_FAILURE, 0, 30 * S) == AN_BRK_NONE);
    /* 1 of 3 failed (33% < 50%) -> CLOSED, with a fresh window */
    CHECK(an_breaker_record(b, k3, AN_BRK_SUCCESS, 0, 30 * S) ==
          AN_BRK_TRANSITION(AN_BRK_HALF_OPEN, AN_BRK_CLOSED));
    an_breaker_get_metrics(b, 30 * S, &m);
    CHECK(m.state == AN_BRK_CLOSED && m.calls == 0 && m.failures == 0);
    /* 2 failures 2 successes: 50% >= 50% -> OPEN on the 4th */
    CHECK(call(b, 31 * S, AN_BRK_SUCCESS, 0) == AN_BRK_NONE);
    CHECK(call(b, 31 * S, AN_BRK_FAILURE, 0) == AN_BRK_NONE);
    CHECK(call(b, 31 * S, AN_BRK_SUCCESS, 0) == AN_BRK_NONE);
    CHECK(call(b, 31 * S, AN_BRK_FAILURE, 0) == AN_BRK_TRANSITION(AN_BRK_CLOSED, AN_BRK_OPEN));
    /* half-open trial failing -> OPEN again, open time restarted */
    k1 = an_breaker_acquire(b, 61 * S, &t);
    k2 = an_breaker_acquire(b, 61 * S, &t);
    k3 = an_breaker_acquire(b, 61 * S, &t);
    an_breaker_record(b, k1, AN_BRK_FAILURE, 0, 61 * S);
    an_breaker_record(b, k2, AN_BRK_FAILURE, 0, 61 * S);
    CHECK(an_breaker_record(b, k3, AN_BRK_SUCCESS, 0, 61 * S) ==
          AN_BRK_TRANSITION(AN_BRK_HALF_OPEN, AN_BRK_OPEN));
    CHECK(an_breaker_retry_after_ns(b, 61 * S) == 30 * S);
    /* a stale ticket (admitted before the transition) does not count */
    CHECK(an_breaker_record(b, k1, AN_BRK_FAILURE, 0, 62 * S) == AN_BRK_NONE);
    /* forced open never half-opens; reset closes */
    CHECK(an_breaker_transition(b, AN_BRK_FORCED_OPEN, 62 * S) ==
          AN_BRK_TRANSITION(AN_BRK_OPEN, AN_BRK_FORCED_OPEN));
    CHECK(an_breaker_acquire(b, 1000 * S, &t) < 0);
    CHECK(an_breaker_transition(b, AN_BRK_CLOSED, 1000 * S) ==
          AN_BRK_TRANSITION(AN_BRK_FORCED_OPEN, AN_BRK_CLOSED));
    CHECK(an_breaker_transition(b, AN_BRK_CLOSED, 1000 * S) == AN_BRK_NONE);
    /* the ring slides: 10 successes push the old failures out */
    CHECK(call(b, 1001 * S, AN_BRK_FAILURE, 0) == AN_BRK_NONE);
    for (int i = 0; i < 10; i++)
        CHECK(call(b, 1001 * S, AN_BRK_SUCCESS, 0) == AN_BRK_NONE);
    an_breaker_get_metrics(b, 1001 * S, &m);
    CHECK(m.calls == 10 && m.failures == 0);
    an_breaker_destroy(b);
}

static void
test_slow_and_time_window(void)
{
    current = "slow calls, time window";
    an_breaker *b;
    an_breaker_config c = config();
    c.time_window = 1;
    c.window = 5; /* seconds */
    c.slow_ns = S / 2;
    c.slow_rate = 0.75;
    CHECK_ST(an_breaker_create(&b, &c, NULL), AN_OK);
    /* failures spread over time leave the window */
    CHECK(call(b, 100 * S, AN_BRK_FAILURE, 0) == AN_BRK_NONE);
    CHECK(call(b, 101 * S, AN_BRK_FAILURE, 0) == AN_BRK_NONE);
    CHECK(call(b, 102 * S, AN_BRK_FAILURE, 0) == AN_BRK_NONE);
    an_breaker_metrics m;
    an_breaker_get_metrics(b, 106 * S, &m);
    CHECK(m.calls == 1 && m.failures == 1); /* 100 and 101 rolled out */
    CHECK(call(b, 106 * S, AN_BRK_SUCCESS, 0) == AN_BRK_NONE);
    CHECK(call(b, 106 * S, AN_BRK_SUCCESS, 0) == AN_BRK_NONE); /* 1/3 failed */
    CHECK(an_breaker_state(b) == AN_BRK_CLOSED);
    /* slow successes: 3 slow of 4 >= 75% -> OPEN */
    an_breaker_transition(b, AN_BRK_CLOSED, 200 * S);
    CHECK(call(b, 200 * S, AN_BRK_SUCCESS, S) == AN_BRK_NONE);
    CHECK(call(b, 200 * S, AN_BRK_SUCCESS, 0) == AN_BRK_NONE);
    CHECK(call(b, 200 * S, AN_BRK_SUCCESS, S) == AN_BRK_NONE);
    CHECK(call(b, 200 * S, AN_BRK_SUCCESS, S) == AN_BRK_TRANSITION(AN_BRK_CLOSED, AN_BRK_OPEN));
    an_breaker_destroy(b);
}

/* ---- concurrency ----------------------------------------------------------- */

#define THREADS 32

typedef struct {
    an_breaker *b;
    atomic_int *admitted;
    atomic_int *go;
    int64_t now;
    int record;
} hammer_arg;

static void *
half_open_worker(void *p)
{
    hammer_arg *a = p;
    while (!atomic_load(a->go))
        sched_yield();
    for (int i = 0; i < 200; i++) {
        int t;
        int64_t k = an_breaker_acquire(a->b, a->now, &t);
        if (k >= 0)
            atomic_fetch_add(a->admitted, 1);
    }
    return NULL;
}

static void *
closed_worker(void *p)
{
    hammer_arg *a = p;
    while (!atomic_load(a->go))
        sched_yield();
    for (int i = 0; i < 5000; i++) {
        int t;
        int64_t k = an_breaker_acquire(a->b, a->now, &t);
        if (k >= 0) {
            atomic_fetch_add(a->admitted, 1);
            an_breaker_record(a->b, k, (i % 7 == 0) ? AN_BRK_FAILURE : AN_BRK_SUCCESS, 0, a->now);
        }
    }
    return NULL;
}

static void
run_threads(void *(*fn)(void *), hammer_arg *a)
{
    pthread_t th[THREADS];
    atomic_store(a->go, 0);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, fn, a);
    atomic_store(a->go, 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
}

static void
test_half_open_race(void)
{
    current = "half-open admission, 32 threads";
    for (int round = 0; round < 20; round++) {
        an_breaker *b;
        an_breaker_config c = config();
        c.half_open_calls = 5;
        c.wait_open_ns = 0;
        CHECK_ST(an_breaker_create(&b, &c, NULL), AN_OK);
        an_breaker_transition(b, AN_BRK_OPEN, 0);
        atomic_int admitted = 0, go = 0;
        hammer_arg a = {b, &admitted, &go, 1, 0};
        run_threads(half_open_worker, &a);
        CHECK(atomic_load(&admitted) == 5);
        CHECK(an_breaker_state(b) == AN_BRK_HALF_OPEN);
        an_breaker_destroy(b);
    }
}

static void
test_closed_hammer(void)
{
    current = "closed path, 32 threads";
    an_breaker *b;
    an_breaker_config c = config();
    c.window = 100;
    c.minimum_calls = 100;
    CHECK_ST(an_breaker_create(&b, &c, NULL), AN_OK);
    atomic_int admitted = 0, go = 0;
    hammer_arg a = {b, &admitted, &go, 1, 1};
    run_threads(closed_worker, &a);
    an_breaker_metrics m;
    an_breaker_get_metrics(b, 1, &m);
    /* 1 in 7 fails: never reaches 50%, so every call was admitted and the
     * window holds exactly its size */
    CHECK(m.state == AN_BRK_CLOSED);
    CHECK(atomic_load(&admitted) == THREADS * 5000);
    CHECK(m.calls == 100 && m.failures < 50);
    CHECK(m.total_calls == (uint64_t)THREADS * 5000);
    an_breaker_destroy(b);
}

/* ---- retry budget ------------------------------------------------------------ */

typedef struct {
    an_rbudget *r;
    atomic_int *allowed;
} budget_arg;

static void *
budget_worker(void *p)
{
    budget_arg *a = p;
    for (int i = 0; i < 1000; i++) {
        an_rbudget_deposit(a->r, 5 * S);
        if (an_rbudget_withdraw(a->r, 5 * S))
            atomic_fetch_add(a->allowed, 1);
    }
    return NULL;
}

static void
test_budget(void)
{
    current = "retry budget";
    an_rbudget *r;
    CHECK_ST(an_rbudget_create(&r, -1, 0, 10, NULL), AN_ERR_INVALID_ARG);
    CHECK_ST(an_rbudget_create(&r, 0.2, 0, 0, NULL), AN_ERR_INVALID_ARG);
    CHECK_ST(an_rbudget_create(&r, 0.2, 1, 10, NULL), AN_OK);
    /* floor: min_per_second x ttl = 10 retries without any request */
    int ok = 0;
    for (int i = 0; i < 20; i++)
        ok += an_rbudget_withdraw(r, 0);
    CHECK(ok == 10);
    /* 100 requests allow 20 more */
    for (int i = 0; i < 100; i++)
        an_rbudget_deposit(r, S);
    ok = 0;
    for (int i = 0; i < 50; i++)
        ok += an_rbudget_withdraw(r, S);
    CHECK(ok == 20);
    /* after ttl everything has expired: the floor again */
    ok = 0;
    for (int i = 0; i < 50; i++)
        ok += an_rbudget_withdraw(r, 20 * S);
    CHECK(ok == 10);
    uint64_t q, t, refused;
    double bal;
    an_rbudget_stats(r, 20 * S, &q, &t, &refused, &bal);
    CHECK(q == 0 && t == 10 && refused == 10 + 30 + 40);
    an_rbudget_destroy(r);

    /* 32 threads: each deposits then tries to retry; ratio 0.2, no floor */
    CHECK_ST(an_rbudget_create(&r, 0.2, 0, 10, NULL), AN_OK);
    atomic_int allowed = 0;
    budget_arg a = {r, &allowed};
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, budget_worker, &a);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    CHECK(atomic_load(&allowed) <= THREADS * 1000 / 5);
    CHECK(atomic_load(&allowed) >= THREADS * 1000 / 5 - THREADS);
    an_rbudget_destroy(r);
}

int
main(void)
{
    test_config();
    test_record_now_sentinel();
    test_count_window();
    test_slow_and_time_window();
    test_half_open_race();
    test_closed_hammer();
    test_budget();
    printf("test_breaker: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
