/*
 * test_locks.c - the named-lock registry (csrc/core/sync/lockmgr.c) and the pool
 * slot counter (csrc/core/sync/slots.c), built with ThreadSanitizer by
 * `make -C tests/c run`.
 *
 * Contract cases first (kinds, timeouts, release by a non-owner, recursion,
 * deadlock cycles of two and three real threads, allocation failures, the
 * bounded registry), then stress: 16 threads hammer a few names and check that
 * a plain (non-atomic) read-modify-write under a lock is exact, that a
 * semaphore never admits more than its permits and that a pool never hands
 * out more slots than its capacity.  TSan reports any data race in the core.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sync/an_lock.h"
#include "check.h"

#define NAME(s) (s), strlen(s)

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* an_lockmgr_acquire of a C-string name, with no interrupt callback and no
 * waited time: the form nearly every case below uses. */
static an_status
take(an_lockmgr *m, const char *name, an_lock_kind kind, int permits, uint64_t owner,
     double timeout, an_lock_fail *fail)
{
    return an_lockmgr_acquire(m, NAME(name), kind, permits, owner, timeout, NULL, NULL, fail,
                              NULL);
}

/* ---- contract ---------------------------------------------------------------- */

static void
test_basic(void)
{
    current = "basic";
    an_lockmgr *m;
    an_lock_fail fail;
    CHECK_ST(an_lockmgr_create(&m, 0, 0, NULL), AN_OK);
    CHECK_ST(take(m, "a", AN_LOCK_MUTEX, 1, 1, -1, &fail), AN_OK);
    /* a mutex is not re-entrant: the same owner times out */
    CHECK_ST(take(m, "a", AN_LOCK_MUTEX, 1, 1, 0, &fail), AN_ERR_LOCK_TIMEOUT);
    CHECK_ST(take(m, "a", AN_LOCK_MUTEX, 1, 2, 0.02, &fail), AN_ERR_LOCK_TIMEOUT);
    /* the kind is fixed by the first use */
    CHECK_ST(take(m, "a", AN_LOCK_RLOCK, 1, 1, 0, &fail), AN_ERR_LOCK_KIND);
    CHECK(fail.kind == AN_LOCK_MUTEX && fail.permits == 1);
    CHECK_ST(an_lockmgr_release(m, NAME("a"), 2), AN_ERR_LOCK_NOT_HELD);
    CHECK_ST(an_lockmgr_release(m, NAME("nope"), 1), AN_ERR_LOCK_NOT_HELD);
    CHECK_ST(an_lockmgr_release(m, NAME("a"), 1), AN_OK);
    CHECK_ST(an_lockmgr_release(m, NAME("a"), 1), AN_ERR_LOCK_NOT_HELD);
    CHECK_ST(take(m, "a", AN_LOCK_MUTEX, 1, 0, -1, &fail), AN_ERR_INVALID_ARG);

    /* rlock recursion: held until the last release */
    for (int i = 0; i < 3; i++)
        CHECK_ST(take(m, "r", AN_LOCK_RLOCK, 1, 7, 0, &fail), AN_OK);
    CHECK_ST(take(m, "r", AN_LOCK_RLOCK, 1, 8, 0, &fail), AN_ERR_LOCK_TIMEOUT);
    an_lock_stats s;
    char buf[64];
    CHECK_ST(an_lockmgr_stat(m, NAME("r"), &s, buf, sizeof(buf)), AN_OK);
    CHECK(s.depth == 3 && s.owner == 7 && s.held == 1 && s.acquisitions == 3);
    CHECK(s.contended == 1 && s.timeouts == 1);
    CHECK(s.name_len == 1 && s.name[0] == 'r');
    for (int i = 0; i < 3; i++)
        CHECK_ST(an_lockmgr_release(m, NAME("r"), 7), AN_OK);
    CHECK_ST(an_lockmgr_release(m, NAME("r"), 7), AN_ERR_LOCK_NOT_HELD);
    CHECK_ST(take(m, "r", AN_LOCK_RLOCK, 1, 8, 0, &fail), AN_OK);
    CHECK_ST(an_lockmgr_release(m, NAME("r"), 8), AN_OK);

    /* semaphore: permits fixed, owners not tracked */
    for (int i = 0; i < 3; i++)
        CHECK_ST(take(m, "s", AN_LOCK_SEMAPHORE, 3, 1, 0, &fail), AN_OK);
    CHECK_ST(take(m, "s", AN_LOCK_SEMAPHORE, 3, 1, 0, &fail), AN_ERR_LOCK_TIMEOUT);
    CHECK_ST(take(m, "s", AN_LOCK_SEMAPHORE, 4, 1, 0, &fail), AN_ERR_LOCK_KIND);
    CHECK(fail.kind == AN_LOCK_SEMAPHORE && fail.permits == 3);
    CHECK_ST(an_lockmgr_release(m, NAME("s"), 99), AN_OK);
    CHECK_ST(an_lockmgr_release(m, NAME("s"), 98), AN_OK);
    CHECK_ST(an_lockmgr_release(m, NAME("s"), 97), AN_OK);
    CHECK_ST(an_lockmgr_release(m, NAME("s"), 97), AN_ERR_LOCK_NOT_HELD);

    /* binary names, and every name in a snapshot */
    const char bin[3] = {'x', '\0', 'y'};
    CHECK_ST(an_lockmgr_acquire(m, bin, 3, AN_LOCK_MUTEX, 1, 1, 0, NULL, NULL, &fail, NULL),
             AN_OK);
    CHECK_ST(an_lockmgr_acquire(m, bin, 1, AN_LOCK_MUTEX, 1, 2, 0, NULL, NULL, &fail, NULL),
             AN_OK);
    an_lock_stats *all;
    size_t n;
    CHECK_ST(an_lockmgr_stat_all(m, &all, &n), AN_OK);
    CHECK(n == 5 && an_lockmgr_count(m) == 5);
    int found = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].name_len == 3 && memcmp(all[i].name, bin, 3) == 0)
            found = all[i].owner == 1;
    CHECK(found);
    free(all);
    an_lockmgr_destroy(m); /* held locks are freed too */
}

static int
stop_after_two(void *ctx)
{
    int *calls = ctx;
    return ++*calls >= 2;
}

static void
test_interrupt(void)
{
    current = "interrupt";
    an_lockmgr *m;
    an_lock_fail fail;
    CHECK_ST(an_lockmgr_create(&m, 0, 0, NULL), AN_OK);
    CHECK_ST(take(m, "a", AN_LOCK_MUTEX, 1, 1, -1, &fail), AN_OK);
    int calls = 0;
    double waited;
    CHECK_ST(an_lockmgr_acquire(m, NAME("a"), AN_LOCK_MUTEX, 1, 2, -1, stop_after_two, &calls,
                                &fail, &waited),
             AN_ERR_CANCELLED);
    CHECK(calls == 2 && waited > 0);
    an_lock_stats s;
    char buf[8];
    CHECK_ST(an_lockmgr_stat(m, NAME("a"), &s, buf, sizeof(buf)), AN_OK);
    CHECK(s.waiters == 0 && s.owner == 1 && s.contended == 1 && s.wait_max > 0);
    an_lockmgr_destroy(m);

    an_slots *sl;
    CHECK_ST(an_slots_create(&sl, 1, NULL), AN_OK);
    CHECK_ST(an_slots_acquire(sl, 0, NULL, NULL), AN_OK);
    calls = 0;
    CHECK_ST(an_slots_acquire(sl, -1, stop_after_two, &calls), AN_ERR_CANCELLED);
    CHECK_ST(an_slots_acquire(sl, 0.02, NULL, NULL), AN_ERR_POOL_TIMEOUT);
    CHECK_ST(an_slots_release(sl), AN_OK);
    CHECK_ST(an_slots_release(sl), AN_ERR_INVALID_ARG);
    an_slots_stats ss;
    an_slots_get_stats(sl, &ss);
    CHECK(ss.used == 0 && ss.waits == 2 && ss.timeouts == 1 && ss.waiters == 0);
    an_slots_destroy(sl);
}

/* A thread that takes `first`, then blocks on `second`. */
typedef struct {
    an_lockmgr *m;
    const char *first, *second;
    uint64_t owner;
    an_status result;
} cycle_arg;

static void *
cycle_thread(void *p)
{
    cycle_arg *a = p;
    an_lock_fail fail;
    take(a->m, a->first, AN_LOCK_MUTEX, 1, a->owner, -1, &fail);
    a->result = take(a->m, a->second, AN_LOCK_MUTEX, 1, a->owner, 5.0, &fail);
    if (a->result == AN_OK)
        an_lockmgr_release(a->m, NAME(a->second), a->owner);
    an_lockmgr_release(a->m, NAME(a->first), a->owner);
    return NULL;
}

static int
waiting_on(an_lockmgr *m, const char *name)
{
    an_lock_stats s;
    char buf[16];
    return an_lockmgr_stat(m, NAME(name), &s, buf, sizeof(buf)) == AN_OK && s.waiters > 0;
}

/* The main thread (owner 100) holds L0; thread i (owner 100 + i) holds Li and
 * waits for L(i+1), the last one for L0.  Threads start from the end of the
 * chain so each finds its second lock already held.  Then the main thread
 * closes the cycle by waiting for L1. */
static void
check_cycle(int k)
{
    static const char *names[] = {"L0", "L1", "L2", "L3"};
    an_lockmgr *m;
    an_lock_fail fail;
    CHECK_ST(an_lockmgr_create(&m, 1, 0, NULL), AN_OK);
    CHECK_ST(take(m, "L0", AN_LOCK_MUTEX, 1, 100, -1, &fail), AN_OK);
    cycle_arg args[4];
    pthread_t th[4];
    for (int i = k - 1; i >= 1; i--) {
        args[i] = (cycle_arg){m, names[i], names[(i + 1) % k], 100 + (uint64_t)i, AN_OK};
        pthread_create(&th[i], NULL, cycle_thread, &args[i]);
        while (!waiting_on(m, names[(i + 1) % k]))
            sleep_ms(1);
    }
    CHECK_ST(take(m, "L1", AN_LOCK_MUTEX, 1, 100, 5.0, &fail), AN_ERR_LOCK_DEADLOCK);
    CHECK(fail.n == k);
    CHECK(fail.waiter[0] == 100 && fail.name_len[0] == 2 && memcmp(fail.name[0], "L1", 2) == 0);
    for (int i = 1; i < k; i++)
        CHECK(fail.waiter[i] == 100 + (uint64_t)i &&
              memcmp(fail.name[i], names[(i + 1) % k], 2) == 0);
    /* no cycle once L0 is free: the chain drains */
    CHECK_ST(an_lockmgr_release(m, NAME("L0"), 100), AN_OK);
    for (int i = 1; i < k; i++) {
        pthread_join(th[i], NULL);
        CHECK_ST(args[i].result, AN_OK);
    }
    char buf[8];
    an_lock_stats s;
    CHECK_ST(an_lockmgr_stat(m, NAME("L1"), &s, buf, sizeof(buf)), AN_OK);
    CHECK(s.deadlocks == 1);
    an_lockmgr_destroy(m);
}

static void
test_deadlock(void)
{
    current = "deadlock";
    check_cycle(2);
    check_cycle(3);
    check_cycle(4);

    /* self-deadlock on a mutex, but not on an rlock or a semaphore */
    an_lockmgr *m;
    an_lock_fail fail;
    CHECK_ST(an_lockmgr_create(&m, 1, 0, NULL), AN_OK);
    CHECK_ST(take(m, "a", AN_LOCK_MUTEX, 1, 1, -1, &fail), AN_OK);
    CHECK_ST(take(m, "a", AN_LOCK_MUTEX, 1, 1, -1, &fail), AN_ERR_LOCK_DEADLOCK);
    CHECK(fail.n == 1 && fail.waiter[0] == 1);
    /* a plain wait on a held lock (no cycle) times out */
    CHECK_ST(take(m, "a", AN_LOCK_MUTEX, 1, 2, 0.01, &fail), AN_ERR_LOCK_TIMEOUT);
    CHECK_ST(take(m, "s", AN_LOCK_SEMAPHORE, 1, 1, 0, &fail), AN_OK);
    CHECK_ST(take(m, "s", AN_LOCK_SEMAPHORE, 1, 1, 0.01, &fail), AN_ERR_LOCK_TIMEOUT);
    an_lockmgr_destroy(m);
}

static void
test_alloc_failures(void)
{
    current = "alloc failures";
    for (long k = 1; k <= 6; k++) {
        fault_ctx f = {k, 0, 0};
        an_allocator a = {fault_malloc, fault_free, &f, AN_ERR_MEMORY_LIMIT, NULL, NULL};
        an_lockmgr *m = NULL;
        an_status st = an_lockmgr_create(&m, 1, 0, &a);
        if (st == AN_OK) {
            an_lock_fail fail;
            an_status s1 = take(m, "x", AN_LOCK_MUTEX, 1, 1, 0, &fail);
            CHECK(s1 == AN_OK || s1 == AN_ERR_MEMORY_LIMIT);
            if (s1 == AN_OK)
                CHECK_ST(an_lockmgr_release(m, NAME("x"), 1), AN_OK);
            an_lock_stats *all;
            size_t n;
            an_status s2 = an_lockmgr_stat_all(m, &all, &n);
            CHECK(s2 == AN_OK || s2 == AN_ERR_MEMORY_LIMIT);
            if (s2 == AN_OK)
                an_free(&a, all);
            an_lockmgr_destroy(m);
        } else {
            CHECK(st == AN_ERR_MEMORY_LIMIT && m == NULL);
        }
        CHECK(f.live == 0);
        an_slots *s = NULL;
        f = (fault_ctx){1, 0, 0};
        CHECK_ST(an_slots_create(&s, 2, &a), AN_ERR_MEMORY_LIMIT);
        CHECK(s == NULL && f.live == 0);
    }
    an_slots *s = NULL;
    CHECK_ST(an_slots_create(&s, 0, NULL), AN_ERR_INVALID_ARG);
}

static void
test_bounded_registry(void)
{
    current = "bounded registry";
    an_lockmgr *m;
    an_lock_fail fail;
    CHECK_ST(an_lockmgr_create(&m, 0, 8, NULL), AN_OK);
    CHECK_ST(take(m, "kept", AN_LOCK_MUTEX, 1, 1, 0, &fail), AN_OK);
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "n%d", i);
        CHECK_ST(take(m, name, AN_LOCK_MUTEX, 1, 2, 0, &fail), AN_OK);
        CHECK_ST(an_lockmgr_release(m, NAME(name), 2), AN_OK);
        CHECK(an_lockmgr_count(m) <= 8);
    }
    /* the held name survived every sweep */
    CHECK_ST(an_lockmgr_release(m, NAME("kept"), 1), AN_OK);
    an_lockmgr_destroy(m);

    CHECK_ST(an_lockmgr_create(&m, 0, 0, NULL), AN_OK);
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "n%d", i);
        take(m, name, AN_LOCK_MUTEX, 1, 2, 0, &fail);
    }
    CHECK(an_lockmgr_count(m) == 5000);
    an_lockmgr_destroy(m);
}

/* ---- stress ------------------------------------------------------------------ */

#define THREADS 16
#define ROUNDS 3000

typedef struct {
    an_lockmgr *m;
    an_slots *slots;
    int id;
    long *counter;           /* plain long, protected by lock "ctr" only */
    int *in_sem;             /* protected by lock "guard" */
    int *max_in_sem;
    int *in_pool, *max_in_pool;
    pthread_mutex_t *pool_mu; /* guards in_pool / max_in_pool (test bookkeeping) */
    long timeouts;
} stress_arg;

static void *
stress_thread(void *p)
{
    stress_arg *a = p;
    an_lock_fail fail;
    uint64_t me = 1000 + (uint64_t)a->id;
    unsigned seed = (unsigned)a->id;
    for (int r = 0; r < ROUNDS; r++) {
        /* mutual exclusion: a non-atomic read-modify-write stays exact */
        if (take(a->m, "ctr", AN_LOCK_MUTEX, 1, me, -1, &fail) != AN_OK) abort();
        long v = *a->counter;
        if (r % 64 == 0)
            sched_yield();
        *a->counter = v + 1;
        an_lockmgr_release(a->m, NAME("ctr"), me);

        /* rlock recursion across threads */
        int depth = 1 + rand_r(&seed) % 3;
        for (int d = 0; d < depth; d++)
            take(a->m, "re", AN_LOCK_RLOCK, 1, me, -1, &fail);
        for (int d = 0; d < depth; d++)
            if (an_lockmgr_release(a->m, NAME("re"), me) != AN_OK)
                abort();

        /* a semaphore of 3 never admits a 4th */
        an_status st = take(a->m, "sem", AN_LOCK_SEMAPHORE, 3, me, (r % 5 == 0) ? 0.0 : -1, &fail);
        if (st == AN_OK) {
            take(a->m, "guard", AN_LOCK_MUTEX, 1, me, -1, &fail);
            int now = ++*a->in_sem;
            if (now > *a->max_in_sem)
                *a->max_in_sem = now;
            an_lockmgr_release(a->m, NAME("guard"), me);
            sched_yield();
            take(a->m, "guard", AN_LOCK_MUTEX, 1, me, -1, &fail);
            --*a->in_sem;
            an_lockmgr_release(a->m, NAME("guard"), me);
            an_lockmgr_release(a->m, NAME("sem"), me);
        } else if (st == AN_ERR_LOCK_TIMEOUT) {
            a->timeouts++;
        } else {
            abort();
        }

        /* pool slots: capacity 2, short timeouts */
        st = an_slots_acquire(a->slots, (r % 3 == 0) ? 0.0 : 1.0, NULL, NULL);
        if (st == AN_OK) {
            pthread_mutex_lock(a->pool_mu);
            int now = ++*a->in_pool;
            if (now > *a->max_in_pool)
                *a->max_in_pool = now;
            pthread_mutex_unlock(a->pool_mu);
            sched_yield();
            pthread_mutex_lock(a->pool_mu);
            --*a->in_pool;
            pthread_mutex_unlock(a->pool_mu);
            if (an_slots_release(a->slots) != AN_OK)
                abort();
        } else if (st != AN_ERR_POOL_TIMEOUT) {
            abort();
        }
        /* churn of short-lived names, dropped by the bounded registry */
        char name[16];
        snprintf(name, sizeof(name), "t%d-%d", a->id, r % 50);
        if (take(a->m, name, AN_LOCK_MUTEX, 1, me, -1, &fail) == AN_OK)
            an_lockmgr_release(a->m, NAME(name), me);
    }
    return NULL;
}

static void
test_stress(int detect, size_t max_names)
{
    /* With max_names, the churn of short-lived names makes the registry drop
     * free names (their counters too) while others are in use. */
    current = detect ? "stress (deadlock detection on)" : "stress (bounded registry)";
    an_lockmgr *m;
    an_slots *slots;
    CHECK_ST(an_lockmgr_create(&m, detect, max_names, NULL), AN_OK);
    CHECK_ST(an_slots_create(&slots, 2, NULL), AN_OK);
    long counter = 0;
    int in_sem = 0, max_in_sem = 0, in_pool = 0, max_in_pool = 0;
    pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
    stress_arg args[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (stress_arg){m, slots, i, &counter, &in_sem, &max_in_sem, &in_pool,
                               &max_in_pool, &pool_mu, 0};
        pthread_create(&th[i], NULL, stress_thread, &args[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    CHECK(counter == (long)THREADS * ROUNDS);
    CHECK(max_in_sem >= 1 && max_in_sem <= 3);
    CHECK(max_in_pool >= 1 && max_in_pool <= 2);
    if (max_names == 0) {
        an_lock_stats s;
        char buf[8];
        CHECK_ST(an_lockmgr_stat(m, NAME("ctr"), &s, buf, sizeof(buf)), AN_OK);
        CHECK(s.acquisitions == (uint64_t)THREADS * ROUNDS && s.held == 0 && s.waiters == 0);
        CHECK(s.timeouts == 0 && s.deadlocks == 0);
        CHECK_ST(an_lockmgr_stat(m, NAME("sem"), &s, buf, sizeof(buf)), AN_OK);
        long timeouts = 0;
        for (int i = 0; i < THREADS; i++)
            timeouts += args[i].timeouts;
        CHECK(s.timeouts == (uint64_t)timeouts && s.held == 0);
    } else {
        CHECK(an_lockmgr_count(m) <= max_names);
    }
    an_slots_stats ss;
    an_slots_get_stats(slots, &ss);
    CHECK(ss.used == 0 && ss.waiters == 0);
    an_slots_destroy(slots);
    an_lockmgr_destroy(m);
    pthread_mutex_destroy(&pool_mu);
}

/* close() wakes every waiter of a full pool. */
static void *
slot_waiter(void *p)
{
    an_slots *s = p;
    an_status st = an_slots_acquire(s, 10.0, NULL, NULL);
    return (void *)(intptr_t)st;
}

static void
test_slots_close(void)
{
    current = "slots close";
    an_slots *s;
    CHECK_ST(an_slots_create(&s, 1, NULL), AN_OK);
    CHECK_ST(an_slots_acquire(s, 0, NULL, NULL), AN_OK);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, slot_waiter, s);
    an_slots_stats ss;
    do {
        sleep_ms(1);
        an_slots_get_stats(s, &ss);
    } while (ss.waiters < 4);
    an_slots_close(s);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        CHECK((an_status)(intptr_t)r == AN_ERR_POOL_CLOSED);
    }
    CHECK_ST(an_slots_acquire(s, 0, NULL, NULL), AN_ERR_POOL_CLOSED);
    CHECK_ST(an_slots_release(s), AN_OK); /* returns still work after close */
    an_slots_destroy(s);
}

int
main(void)
{
    test_basic();
    test_interrupt();
    test_deadlock();
    test_alloc_failures();
    test_bounded_registry();
    test_slots_close();
    test_stress(0, 64);
    test_stress(1, 0);
    printf("test_locks: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
