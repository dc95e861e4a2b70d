/*
 * retry_budget.c - Finagle's retry budget (contract in an_breaker.h).
 *
 * Requests and retries are counted in one-second buckets over the last ttl
 * seconds.  A deposit (every call) is one atomic add on the current bucket;
 * rolling to a new second and deciding a withdrawal (a retry, which only
 * happens after a failure) take the mutex, so two threads never both spend
 * the last token.  A deposit racing a roll at a second boundary may land in
 * the neighbouring second: the budget is exact to within the calls in flight
 * at that instant, which is all a load-shedding decision needs.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "an_breaker.h"

#define NS_PER_S 1000000000LL
#define EMPTY_SEC INT64_MIN

typedef struct rb_bucket {
    _Atomic int64_t sec;
    _Atomic uint64_t requests, retries;
} rb_bucket;

struct an_rbudget {
    double ratio, min_per_second;
    uint32_t ttl;
    pthread_mutex_t mu;
    _Atomic uint64_t refused;
    rb_bucket *buckets;
    an_allocator alloc;
    int has_alloc;
};

an_status
an_rbudget_create(an_rbudget **out, double ratio, double min_per_second, uint32_t ttl_s,
                  const an_allocator *a)
{
    *out = NULL;
    if (!(ratio >= 0 && ratio <= 1000) || !(min_per_second >= 0 && isfinite(min_per_second)) ||
        ttl_s < 1 || ttl_s > AN_RBUDGET_MAX_TTL)
        return AN_ERR_INVALID_ARG;
    an_rbudget *r = an_calloc(a, 1, sizeof(*r));
    if (r == NULL)
        return an_nomem(a);
    r->buckets = an_calloc(a, ttl_s, sizeof(rb_bucket));
    if (r->buckets == NULL || pthread_mutex_init(&r->mu, NULL) != 0) {
        an_free(a, r->buckets);
        an_free(a, r);
        return AN_ERR_NOMEM;
    }
    if (a != NULL) {
        r->alloc = *a;
        r->has_alloc = 1;
    }
    r->ratio = ratio;
    r->min_per_second = min_per_second;
    r->ttl = ttl_s;
    for (uint32_t i = 0; i < ttl_s; i++)
        atomic_init(&r->buckets[i].sec, EMPTY_SEC);
    *out = r;
    return AN_OK;
}

void
an_rbudget_destroy(an_rbudget *r)
{
    if (r == NULL)
        return;
    an_allocator copy = r->alloc;
    const an_allocator *a = r->has_alloc ? &copy : NULL;
    pthread_mutex_destroy(&r->mu);
    an_free(a, r->buckets);
    an_free(a, r);
}

static int64_t
sec_of(int64_t now_ns)
{
    return now_ns >= 0 ? now_ns / NS_PER_S : -((-now_ns + NS_PER_S - 1) / NS_PER_S);
}

static rb_bucket *
bucket_of(an_rbudget *r, int64_t sec)
{
    return &r->buckets[(uint64_t)sec % r->ttl];
}

/* mu held: makes the bucket of sec current (emptying a stale one). */
static rb_bucket *
current_locked(an_rbudget *r, int64_t sec)
{
    rb_bucket *b = bucket_of(r, sec);
    if (atomic_load_explicit(&b->sec, memory_order_relaxed) != sec) {
        atomic_store_explicit(&b->requests, 0, memory_order_relaxed);
        atomic_store_explicit(&b->retries, 0, memory_order_relaxed);
        atomic_store_explicit(&b->sec, sec, memory_order_release);
    }
    return b;
}

void
an_rbudget_deposit(an_rbudget *r, int64_t now_ns)
{
    int64_t sec = sec_of(now_ns);
    rb_bucket *b = bucket_of(r, sec);
    if (atomic_load_explicit(&b->sec, memory_order_acquire) != sec) {
        pthread_mutex_lock(&r->mu);
        b = current_locked(r, sec);
        pthread_mutex_unlock(&r->mu);
    }
    atomic_fetch_add_explicit(&b->requests, 1, memory_order_relaxed);
}

/* mu held (or a snapshot is fine): sums over the buckets of the last ttl s. */
static void
sums(an_rbudget *r, int64_t sec, uint64_t *requests, uint64_t *retries)
{
    uint64_t q = 0, t = 0;
    for (uint32_t i = 0; i < r->ttl; i++) {
        int64_t s = atomic_load_explicit(&r->buckets[i].sec, memory_order_acquire);
        if (s == EMPTY_SEC || s > sec || s <= sec - (int64_t)r->ttl)
            continue;
        q += atomic_load_explicit(&r->buckets[i].requests, memory_order_relaxed);
        t += atomic_load_explicit(&r->buckets[i].retries, memory_order_relaxed);
    }
    *requests = q;
    *retries = t;
}

static double
balance_of(const an_rbudget *r, uint64_t requests, uint64_t retries)
{
    return r->ratio * (double)requests + r->min_per_second * (double)r->ttl - (double)retries;
}

int
an_rbudget_withdraw(an_rbudget *r, int64_t now_ns)
{
    int64_t sec = sec_of(now_ns);
    uint64_t q, t;
    int ok = 0;
    pthread_mutex_lock(&r->mu);
    sums(r, sec, &q, &t);
    if (balance_of(r, q, t) >= 1.0) {
        rb_bucket *b = current_locked(r, sec);
        atomic_fetch_add_explicit(&b->retries, 1, memory_order_relaxed);
        ok = 1;
    }
    pthread_mutex_unlock(&r->mu);
    if (!ok)
        atomic_fetch_add_explicit(&r->refused, 1, memory_order_relaxed);
    return ok;
}

void
an_rbudget_stats(an_rbudget *r, int64_t now_ns, uint64_t *requests, uint64_t *retries,
                 uint64_t *refused_total, double *balance)
{
    pthread_mutex_lock(&r->mu);
    sums(r, sec_of(now_ns), requests, retries);
    pthread_mutex_unlock(&r->mu);
    *refused_total = atomic_load_explicit(&r->refused, memory_order_relaxed);
    *balance = balance_of(r, *requests, *retries);
}
