/*
 * test_gcra.c - the GCRA rule and the bounded TAT store (csrc/core/ops/gcra.c),
 * built twice by `make -C tests/c run`: under ASan+UBSan (test_gcra) and under
 * ThreadSanitizer (test_gcra_tsan).
 *
 *  - the rule: a burst is admitted exactly, then one unit per interval; the
 *    numbers of a refusal (retry_after, remaining, reset_after) agree and are
 *    never negative; cost weights; T rounds up (never admits more);
 *  - several policies: admitted only when all admit, nothing recorded otherwise,
 *    the deciding policy is the most restrictive one;
 *  - the store: bounded under a flood of distinct keys, stateless keys evicted
 *    before live ones, every allocation failure reported and nothing leaked
 *    (fault injection), purge/forget/clear;
 *  - threads: 16 threads hammering one key admit exactly the burst;
 *  - shared stripes (SharedStore): the same decisions as the store, live keys
 *    replaced only when a stripe is full (and reported), a lock left by a dead
 *    process taken over, threads on one stripe admit exactly the burst.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ops/an_gcra.h"
#include "check.h"

#define SEC 1000000000LL

static void
test_rule(void)
{
    current = "rule";
    an_gcra_policy p;
    CHECK_ST(an_gcra_policy_init(&p, 10, SEC, 5), AN_OK);
    CHECK(p.interval_ns == SEC / 10 && p.tau_ns == 5 * (SEC / 10));
    CHECK_ST(an_gcra_policy_init(&p, 0, SEC, 5), AN_ERR_INVALID_ARG);
    CHECK_ST(an_gcra_policy_init(&p, 1, -1, 5), AN_ERR_INVALID_ARG);
    CHECK_ST(an_gcra_policy_init(&p, 1, SEC, 0), AN_ERR_INVALID_ARG);
    CHECK_ST(an_gcra_policy_init(&p, 1, INT64_MAX, 2), AN_ERR_INVALID_ARG);
    /* 7 per second: T rounds up, so 7 arrivals never take less than a second */
    CHECK_ST(an_gcra_policy_init(&p, 7, SEC, 7), AN_OK);
    CHECK(p.interval_ns * 7 >= SEC);

    an_gcra_policy_init(&p, 10, SEC, 5);
    an_gcra_result r;
    int64_t tat = 0, now = 1000 * SEC;
    int admitted = 0;
    for (int i = 0; i < 8; i++) {
        an_gcra_eval(&p, tat, now, 1, &r);
        CHECK(r.remaining >= 0 && r.reset_after_ns >= 0 && r.retry_after_ns >= 0);
        if (r.allowed) {
            admitted++;
            tat = r.new_tat;
            CHECK(r.remaining == 5 - admitted);
            CHECK(r.retry_after_ns == 0);
        } else {
            CHECK(r.new_tat == tat);
            CHECK(r.remaining == 0);
            CHECK(r.retry_after_ns == p.interval_ns); /* the next unit frees in T */
        }
    }
    CHECK(admitted == 5);
    /* after exactly retry_after, the same request is admitted */
    an_gcra_eval(&p, tat, now, 1, &r);
    int64_t wait = r.retry_after_ns;
    an_gcra_eval(&p, tat, now + wait - 1, 1, &r);
    CHECK(!r.allowed);
    an_gcra_eval(&p, tat, now + wait, 1, &r);
    CHECK(r.allowed && r.remaining == 0);
    /* a cost of 3 needs 3 free units */
    an_gcra_eval(&p, tat, now + 2 * p.interval_ns, 3, &r);
    CHECK(!r.allowed && r.remaining == 2 && r.retry_after_ns == p.interval_ns);
    /* cost 0 reads the state: always allowed, nothing booked */
    an_gcra_eval(&p, tat, now, 0, &r);
    CHECK(r.allowed && r.remaining == 0 && r.new_tat == tat);
    /* a TAT long past is a fresh key */
    an_gcra_eval(&p, tat, now + 100 * SEC, 1, &r);
    CHECK(r.allowed && r.remaining == 4 && r.reset_after_ns == p.interval_ns);
}

static void
test_combine(void)
{
    current = "combine";
    an_gcra_store *s = NULL;
    CHECK_ST(an_gcra_store_new(&s, 16, NULL), AN_OK);
    an_gcra_policy pol[2];
    an_gcra_policy_init(&pol[0], 10, SEC, 10); /* a burst of 10 */
    an_gcra_policy_init(&pol[1], 3, 60 * SEC, 3); /* a quota of 3 a minute */
    uint32_t ns = an_gcra_store_namespace(s);
    an_gcra_result r;
    int64_t now = 5 * SEC;
    for (int i = 0; i < 3; i++) {
        CHECK_ST(an_gcra_apply(s, ns, "k", 1, pol, 2, 1, now, AN_GCRA_HIT, &r), AN_OK);
        CHECK(r.allowed && r.policy == 1 && r.remaining == 2 - i);
    }
    CHECK_ST(an_gcra_apply(s, ns, "k", 1, pol, 2, 1, now, AN_GCRA_HIT, &r), AN_OK);
    CHECK(!r.allowed && r.policy == 1 && r.retry_after_ns == 20 * SEC);
    /* the refusal recorded nothing: the burst policy still has 7 */
    CHECK_ST(an_gcra_apply(s, ns, "k", 1, pol, 2, 0, now, AN_GCRA_PEEK, &r), AN_OK);
    CHECK(r.allowed && r.remaining == 0 && r.policy == 1);
    /* a cost above a burst is refused as an argument error */
    CHECK_ST(an_gcra_apply(s, ns, "k", 1, pol, 2, 4, now, AN_GCRA_HIT, &r), AN_ERR_INVALID_ARG);
    CHECK_ST(an_gcra_apply(s, ns, "k", 1, pol, 0, 1, now, AN_GCRA_HIT, &r), AN_ERR_INVALID_ARG);
    /* namespaces are separate */
    uint32_t ns2 = an_gcra_store_namespace(s);
    CHECK(ns2 != ns);
    CHECK_ST(an_gcra_apply(s, ns2, "k", 1, pol, 2, 1, now, AN_GCRA_HIT, &r), AN_OK);
    CHECK(r.allowed && r.remaining == 2);
    CHECK(an_gcra_forget(s, ns, "k", 1) == 1);
    CHECK(an_gcra_forget(s, ns, "k", 1) == 0);
    an_gcra_store_free(s);
}

static void
test_bounded(void)
{
    current = "bounded";
    an_gcra_store *s = NULL;
    CHECK_ST(an_gcra_store_new(&s, 2000, NULL), AN_OK);
    an_gcra_policy p;
    an_gcra_policy_init(&p, 100, 100 * SEC, 100); /* T = 1 s */
    uint32_t ns = an_gcra_store_namespace(s);
    an_gcra_result r;
    char key[32];
    for (int i = 0; i < 200000; i++) {
        int n = snprintf(key, sizeof key, "client-%d", i);
        CHECK_ST(an_gcra_apply(s, ns, key, (size_t)n, &p, 1, 1, SEC, AN_GCRA_HIT, &r), AN_OK);
    }
    an_gcra_stats st;
    an_gcra_store_stats(s, &st);
    CHECK(st.keys <= 2000 && st.keys >= 1900);
    CHECK(st.evicted_live + st.evicted_expired == 200000 - st.keys);
    /* everything expires after 2 s: purge removes it all */
    CHECK(an_gcra_purge(s, 3 * SEC) == st.keys);
    an_gcra_store_stats(s, &st);
    CHECK(st.keys == 0);
    an_gcra_store_free(s);

    /* stateless keys go before live ones (one shard of 4) */
    CHECK_ST(an_gcra_store_new(&s, 4, NULL), AN_OK);
    ns = an_gcra_store_namespace(s);
    an_gcra_apply(s, ns, "live", 4, &p, 1, 100, 0, AN_GCRA_HIT, &r); /* TAT 100 s, coldest */
    an_gcra_apply(s, ns, "e1", 2, &p, 1, 1, 0, AN_GCRA_HIT, &r);     /* TAT 1 s */
    an_gcra_apply(s, ns, "e2", 2, &p, 1, 1, 0, AN_GCRA_HIT, &r);
    an_gcra_apply(s, ns, "e3", 2, &p, 1, 1, 0, AN_GCRA_HIT, &r);
    an_gcra_apply(s, ns, "new", 3, &p, 1, 1, 50 * SEC, AN_GCRA_HIT, &r);
    an_gcra_store_stats(s, &st);
    CHECK(st.keys == 4 && st.evicted_expired == 1 && st.evicted_live == 0);
    an_gcra_apply(s, ns, "live", 4, &p, 1, 0, 50 * SEC, AN_GCRA_PEEK, &r);
    CHECK(r.remaining == 50); /* its state survived */
    an_gcra_clear(s);
    an_gcra_store_stats(s, &st);
    CHECK(st.keys == 0);
    an_gcra_store_free(s);
}

static void
test_faults(void)
{
    current = "faults";
    an_gcra_policy p;
    an_gcra_policy_init(&p, 10, SEC, 10);
    for (long fail = 1; fail <= 40; fail++) {
        fault_ctx f = {fail, 0, 0};
        an_allocator a = {fault_malloc, fault_free, &f, AN_OK, NULL, NULL};
        an_gcra_store *s = NULL;
        an_status st = an_gcra_store_new(&s, 5000, &a);
        if (st == AN_OK) {
            uint32_t ns = an_gcra_store_namespace(s);
            an_gcra_result r;
            char key[16];
            for (int i = 0; i < 30; i++) {
                int n = snprintf(key, sizeof key, "k%d", i);
                an_status as = an_gcra_apply(s, ns, key, (size_t)n, &p, 1, 1, SEC, AN_GCRA_HIT, &r);
                CHECK(as == AN_OK || as == AN_ERR_NOMEM);
            }
            an_gcra_store_free(s);
        } else {
            CHECK(st == AN_ERR_NOMEM && s == NULL);
        }
        CHECK(f.live == 0);
    }
}

/* ---- threads ------------------------------------------------------------------- */

enum { N_THREADS = 16, N_TRIES = 400, BURST = 1000 };

static an_gcra_store *shared_store;
static an_gcra_policy shared_policy;
static uint32_t shared_ns;

static void *
hammer(void *arg)
{
    long admitted = 0;
    char key[16];
    for (int i = 0; i < N_TRIES; i++) {
        an_gcra_result r;
        an_gcra_apply(shared_store, shared_ns, "one", 3, &shared_policy, 1, 1, SEC, AN_GCRA_HIT, &r);
        admitted += r.allowed;
        /* other keys in other shards at the same time */
        int n = snprintf(key, sizeof key, "t%ld-%d", (long)(intptr_t)arg, i % 50);
        an_gcra_apply(shared_store, shared_ns, key, (size_t)n, &shared_policy, 1, 1, SEC,
                      AN_GCRA_HIT, &r);
    }
    return (void *)admitted;
}

static void
test_threads(void)
{
    current = "threads";
    CHECK_ST(an_gcra_store_new(&shared_store, 100000, NULL), AN_OK);
    an_gcra_policy_init(&shared_policy, BURST, 86400 * SEC, BURST);
    shared_ns = an_gcra_store_namespace(shared_store);
    pthread_t th[N_THREADS];
    for (long i = 0; i < N_THREADS; i++)
        pthread_create(&th[i], NULL, hammer, (void *)i);
    long total = 0;
    for (int i = 0; i < N_THREADS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        total += (long)ret;
    }
    CHECK(total == BURST);
    an_gcra_stats st;
    an_gcra_store_stats(shared_store, &st);
    CHECK(st.keys == 1 + N_THREADS * 50);
    an_gcra_store_free(shared_store);
}

/* ---- stripes ----------------------------------------------------------------- */

static void
test_stripes(void)
{
    current = "stripes";
    an_gcra_policy pol[2];
    an_gcra_policy_init(&pol[0], 10, SEC, 5);
    an_gcra_policy_init(&pol[1], 3, 60 * SEC, 3);
    size_t words = an_gcra_stripe_words(2);
    uint64_t *stripe = calloc(words, sizeof(uint64_t));
    an_gcra_store *s = NULL;
    an_gcra_store_new(&s, 64, NULL);
    uint32_t ns = an_gcra_store_namespace(s);
    uint64_t me = (uint64_t)getpid();
    an_gcra_result a, b;
    int ev;
    /* the same decisions as the store, for two keys in one stripe */
    for (int i = 0; i < 12; i++) {
        int64_t now = SEC + i * (SEC / 7);
        const char *key = i % 3 ? "x" : "y";
        uint64_t tag = i % 3 ? 11 : 22;
        int64_t cost = i % 2;
        CHECK_ST(an_gcra_stripe_apply(stripe, me, tag, pol, 2, cost, now, AN_GCRA_HIT, &a, &ev), AN_OK);
        an_gcra_apply(s, ns, key, 1, pol, 2, cost, now, AN_GCRA_HIT, &b);
        CHECK(a.allowed == b.allowed && a.policy == b.policy && a.remaining == b.remaining &&
              a.reset_after_ns == b.reset_after_ns && a.retry_after_ns == b.retry_after_ns);
        CHECK(ev == 0);
    }
    CHECK(an_gcra_stripe_forget(stripe, me, 11, 2) == 1);
    CHECK(an_gcra_stripe_forget(stripe, me, 11, 2) == 0);
    an_gcra_store_free(s);
    CHECK_ST(an_gcra_stripe_apply(stripe, me, 1, pol, 2, 4, SEC, AN_GCRA_HIT, &a, &ev),
             AN_ERR_INVALID_ARG);

    /* a full stripe of live keys replaces the one ending first, and says so */
    memset(stripe, 0, words * sizeof(uint64_t));
    int evictions = 0;
    for (uint64_t t = 1; t <= AN_GCRA_STRIPE_KEYS + 3; t++) {
        an_gcra_stripe_apply(stripe, me, t * 1000, pol, 1, 1, SEC + (int64_t)t, AN_GCRA_HIT, &a, &ev);
        evictions += ev;
    }
    CHECK(evictions == 3);
    /* keys without state are replaced silently */
    an_gcra_stripe_apply(stripe, me, 99, pol, 1, 1, 100 * SEC, AN_GCRA_HIT, &a, &ev);
    CHECK(ev == 0 && a.allowed);

    /* a lock held by a process that died is taken over */
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    waitpid(child, NULL, 0);
    stripe[0] = (uint64_t)child;
    CHECK_ST(an_gcra_stripe_apply(stripe, me, 5, pol, 1, 1, SEC, AN_GCRA_HIT, &a, &ev), AN_OK);
    CHECK(stripe[0] == 0);
    free(stripe);
}

/* review-12: a TAT further ahead than tau (the clock went back: an injected
 * clock, a reboot under a persistent SharedStore file, a corrupt arena word)
 * must neither overflow nor admit: it counts as at most one full burst, and a
 * HIT repairs it so the key recovers within tau instead of after the jump. */
static void
test_clock_backwards(void)
{
    current = "clock_backwards";
    an_gcra_policy p;
    /* 1 per 10 years, burst 14: tau = 14 * T just under 2^62 */
    CHECK_ST(an_gcra_policy_init(&p, 1, 315360000LL * SEC, 14), AN_OK);
    an_gcra_result r;
    int64_t t0 = 4000000000LL * SEC; /* the largest now the binding allows */
    an_gcra_eval(&p, 0, t0, 14, &r);
    CHECK(r.allowed && r.remaining == 0);
    int64_t tat = r.new_tat;
    an_gcra_eval(&p, tat, 0, 14, &r); /* the clock went back to 0 */
    CHECK(!r.allowed && r.remaining == 0 && r.reset_after_ns >= 0 && r.retry_after_ns > 0);
    CHECK(r.reset_after_ns <= p.tau_ns && r.retry_after_ns <= p.tau_ns);
    /* a foreign TAT at INT64_MAX */
    an_gcra_eval(&p, INT64_MAX, SEC, 1, &r);
    CHECK(!r.allowed && r.remaining == 0 && r.retry_after_ns > 0 && r.retry_after_ns <= p.tau_ns);

    /* in a store: after a jump back of a day, a 10/s key is usable again
     * within its burst window (1 s), not a day later */
    an_gcra_store *s = NULL;
    CHECK_ST(an_gcra_store_new(&s, 16, NULL), AN_OK);
    uint32_t ns = an_gcra_store_namespace(s);
    an_gcra_policy q;
    an_gcra_policy_init(&q, 10, SEC, 10);
    int64_t day = 86400 * SEC;
    for (int i = 0; i < 10; i++)
        an_gcra_apply(s, ns, "k", 1, &q, 1, 1, 2 * day, AN_GCRA_HIT, &r);
    CHECK_ST(an_gcra_apply(s, ns, "k", 1, &q, 1, 1, day, AN_GCRA_HIT, &r), AN_OK);
    CHECK(!r.allowed && r.retry_after_ns <= q.tau_ns);
    CHECK_ST(an_gcra_apply(s, ns, "k", 1, &q, 1, 1, day + 2 * SEC, AN_GCRA_HIT, &r), AN_OK);
    CHECK(r.allowed && r.remaining == 9);
    an_gcra_store_free(s);

    /* the same in a stripe */
    uint64_t *stripe = calloc(an_gcra_stripe_words(1), sizeof(uint64_t));
    uint64_t me = (uint64_t)getpid();
    int ev;
    for (int i = 0; i < 10; i++)
        an_gcra_stripe_apply(stripe, me, 7, &q, 1, 1, 2 * day, AN_GCRA_HIT, &r, &ev);
    an_gcra_stripe_apply(stripe, me, 7, &q, 1, 1, day, AN_GCRA_HIT, &r, &ev);
    CHECK(!r.allowed && r.retry_after_ns <= q.tau_ns);
    an_gcra_stripe_apply(stripe, me, 7, &q, 1, 1, day + 2 * SEC, AN_GCRA_HIT, &r, &ev);
    CHECK(r.allowed && r.remaining == 9);
    free(stripe);
}

static uint64_t *thread_stripe;

static void *
stripe_hammer(void *arg)
{
    (void)arg;
    long admitted = 0;
    for (int i = 0; i < N_TRIES; i++) {
        an_gcra_result r;
        int ev;
        an_gcra_stripe_apply(thread_stripe, (uint64_t)getpid(), 77, &shared_policy, 1, 1, SEC,
                             AN_GCRA_HIT, &r, &ev);
        admitted += r.allowed;
    }
    return (void *)admitted;
}

static void
test_stripe_threads(void)
{
    current = "stripe threads";
    thread_stripe = calloc(an_gcra_stripe_words(1), sizeof(uint64_t));
    an_gcra_policy_init(&shared_policy, BURST, 86400 * SEC, BURST);
    pthread_t th[N_THREADS];
    for (long i = 0; i < N_THREADS; i++)
        pthread_create(&th[i], NULL, stripe_hammer, (void *)i);
    long total = 0;
    for (int i = 0; i < N_THREADS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        total += (long)ret;
    }
    CHECK(total == BURST);
    free(thread_stripe);
}

int
main(void)
{
    test_rule();
    test_combine();
    test_bounded();
    test_faults();
    test_threads();
    test_stripes();
    test_stripe_threads();
    test_clock_backwards();
    printf("test_gcra: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
