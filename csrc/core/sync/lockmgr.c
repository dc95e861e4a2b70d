/*
 * lockmgr.c - a registry of named locks (lock, rlock, semaphore) with
 * contention counters and optional deadlock detection.
 *
 * Design: one registry mutex guards the hash table, every lock's state and the
 * list of current waits; each lock has its own condition variable so a release
 * wakes only that lock's waiters (pthread_cond_signal: one waiter per freed
 * permit; a waiter that leaves without taking a permit passes the wake-up on).
 * A single mutex keeps the wait-for graph consistent: deadlock detection walks
 * owner -> the lock it waits for -> that lock's owner ... under the same mutex
 * that changes owners, so a cycle is seen by exactly the waiter that closes it.
 * Hold times are short (a few field updates), so one mutex costs little next
 * to the Python call around it.
 *
 * Invariants (under mu): held <= permits; lock/rlock: held is 0 or 1, owner
 * != 0 iff held, depth >= 1 iff held (rlock; lock keeps depth = held); an
 * entry with held > 0 or waiters > 0 is never freed; every waiting thread has
 * exactly one wait record in m->waits naming its entry.
 */
#include <stdlib.h>
#include <string.h>

#include "an_lock.h"
#include "an_wait.h"

typedef struct lock_entry {
    struct lock_entry *next; /* hash chain */
    uint64_t hash;
    an_lock_kind kind;
    int permits;
    int held;
    int waiters;
    uint64_t owner;
    uint64_t depth;
    uint64_t acquisitions, contended, timeouts, deadlocks;
    double wait_total, wait_max;
    pthread_cond_t cv;
    size_t len;
    char name[]; /* len bytes, not NUL-terminated */
} lock_entry;

/* A thread's pending wait, on its stack while it waits. */
typedef struct wait_rec {
    uint64_t owner;
    lock_entry *entry;
    struct wait_rec *next;
} wait_rec;

struct an_lockmgr {
    pthread_mutex_t mu;
    lock_entry **buckets;
    size_t nbuckets;   /* a power of two */
    size_t count;
    size_t max_names;  /* 0 = unbounded */
    int detect;
    wait_rec *waits;
    an_allocator alloc;
    int has_alloc;
};

static const an_allocator *
alloc_of(const an_lockmgr *m)
{
    return m->has_alloc ? &m->alloc : NULL;
}

static uint64_t
hash_name(const char *name, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)name[i];
        h *= 1099511628211ULL;
    }
    return h;
}

an_status
an_lockmgr_create(an_lockmgr **out, int detect_deadlocks, size_t max_names,
                  const an_allocator *a)
{
    *out = NULL;
    an_lockmgr *m = an_calloc(a, 1, sizeof(*m));
    if (m == NULL)
        return an_nomem(a);
    if (a != NULL) {
        m->alloc = *a;
        m->has_alloc = 1;
    }
    m->nbuckets = 16;
    m->buckets = an_calloc(a, m->nbuckets, sizeof(*m->buckets));
    if (m->buckets == NULL) {
        an_free(a, m);
        return an_nomem(a);
    }
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        an_free(a, m->buckets);
        an_free(a, m);
        return AN_ERR_NOMEM;
    }
    m->detect = detect_deadlocks != 0;
    m->max_names = max_names;
    *out = m;
    return AN_OK;
}

static void
free_entry(an_lockmgr *m, lock_entry *e)
{
    pthread_cond_destroy(&e->cv);
    an_free(alloc_of(m), e);
}

void
an_lockmgr_destroy(an_lockmgr *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        lock_entry *e = m->buckets[i];
        while (e != NULL) {
            lock_entry *next = e->next;
            free_entry(m, e);
            e = next;
        }
    }
    pthread_mutex_destroy(&m->mu);
    const an_allocator *a = alloc_of(m);
    an_allocator copy = m->alloc;
    an_free(a, m->buckets);
    an_free(m->has_alloc ? &copy : NULL, m);
}

static lock_entry *
find(an_lockmgr *m, const char *name, size_t len, uint64_t h)
{
    for (lock_entry *e = m->buckets[h & (m->nbuckets - 1)]; e != NULL; e = e->next)
        if (e->hash == h && e->len == len && memcmp(e->name, name, len) == 0)
            return e;
    return NULL;
}

/* Doubles the table; on allocation failure the table just stays denser. */
static void
grow(an_lockmgr *m)
{
    size_t n = m->nbuckets * 2;
    lock_entry **b = an_calloc(alloc_of(m), n, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        lock_entry *e = m->buckets[i];
        while (e != NULL) {
            lock_entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    an_free(alloc_of(m), m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

/* Drops every free, unwaited entry (when the registry is over max_names). */
static void
sweep(an_lockmgr *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        lock_entry **pp = &m->buckets[i];
        while (*pp != NULL) {
            lock_entry *e = *pp;
            if (e->held == 0 && e->waiters == 0) {
                *pp = e->next;
                free_entry(m, e);
                m->count--;
            } else {
                pp = &e->next;
            }
        }
    }
}

/* The entry for name, created with kind/permits if new. */
static an_status
lookup(an_lockmgr *m, const char *name, size_t len, an_lock_kind kind, int permits,
       lock_entry **out, an_lock_fail *fail)
{
    uint64_t h = hash_name(name, len);
    lock_entry *e = find(m, name, len, h);
    if (e != NULL) {
        if (e->kind != kind || e->permits != permits) {
            if (fail != NULL) {
                fail->kind = e->kind;
                fail->permits = e->permits;
            }
            return AN_ERR_LOCK_KIND;
        }
        *out = e;
        return AN_OK;
    }
    if (m->max_names != 0 && m->count >= m->max_names)
        sweep(m);
    size_t size;
    if (len > SIZE_MAX - sizeof(*e))
        return AN_ERR_INVALID_ARG;
    size = sizeof(*e) + len;
    e = an_malloc(alloc_of(m), size);
    if (e == NULL)
        return an_nomem(alloc_of(m));
    memset(e, 0, sizeof(*e));
    if (an_condvar_init(&e->cv) != 0) {
        an_free(alloc_of(m), e);
        return AN_ERR_NOMEM;
    }
    e->hash = h;
    e->kind = kind;
    e->permits = permits;
    e->len = len;
    memcpy(e->name, name, len);
    if (m->count >= m->nbuckets * 2)
        grow(m);
    size_t b = h & (m->nbuckets - 1);
    e->next = m->buckets[b];
    m->buckets[b] = e;
    m->count++;
    *out = e;
    return AN_OK;
}

static int
can_take(const lock_entry *e, uint64_t owner)
{
    switch (e->kind) {
    case AN_LOCK_RLOCK:
        return e->held == 0 || e->owner == owner;
    case AN_LOCK_SEMAPHORE:
        return e->held < e->permits;
    default:
        return e->held == 0;
    }
}

static void
take(lock_entry *e, uint64_t owner)
{
    e->acquisitions++;
    if (e->kind == AN_LOCK_SEMAPHORE) {
        e->held++;
        return;
    }
    if (e->held && e->kind == AN_LOCK_RLOCK) {
        e->depth++;
        return;
    }
    e->held = 1;
    e->owner = owner;
    e->depth = 1;
}

static void
copy_name(an_lock_fail *fail, int i, const lock_entry *e)
{
    size_t n = e->len < AN_LOCK_NAME_MAX ? e->len : AN_LOCK_NAME_MAX;
    memcpy(fail->name[i], e->name, n);
    fail->name_len[i] = n;
}

/* Would `owner` waiting for e close a cycle?  Follows owner -> awaited lock ->
 * its owner; semaphores end the walk (their holders are not tracked). */
static int
closes_cycle(an_lockmgr *m, lock_entry *e, uint64_t owner, an_lock_fail *fail)
{
    int n = 0;
    uint64_t cur = owner;
    lock_entry *want = e;
    /* Each step follows a distinct waiting owner, so the walk ends within
     * (number of waits + 1) steps even if some other cycle already exists. */
    size_t limit = 1;
    for (wait_rec *w = m->waits; w != NULL; w = w->next)
        limit++;
    for (size_t step = 0; step < limit; step++) {
        if (want->kind == AN_LOCK_SEMAPHORE || want->held == 0)
            return 0;
        if (fail != NULL) {
            if (n < AN_LOCK_CYCLE_MAX) {
                fail->waiter[n] = cur;
                copy_name(fail, n, want);
                n++;
                fail->n = n;
            } else {
                fail->truncated = 1;
            }
        }
        cur = want->owner;
        if (cur == owner)
            return 1;
        wait_rec *w = m->waits;
        while (w != NULL && w->owner != cur)
            w = w->next;
        if (w == NULL)
            return 0;
        want = w->entry;
    }
    return 0;
}

/* record_busy = 0: a failed try (timeout 0) leaves the counters alone. */
static an_status
acquire_impl(an_lockmgr *m, const char *name, size_t len, an_lock_kind kind, int permits,
             uint64_t owner, double timeout, an_interrupt_fn intr, void *ctx,
             an_lock_fail *fail, double *waited, int record_busy)
{
    if (waited != NULL)
        *waited = 0.0;
    if (fail != NULL) {
        fail->n = 0;
        fail->truncated = 0;
    }
    if (owner == 0 || (kind != AN_LOCK_MUTEX && kind != AN_LOCK_RLOCK &&
                       kind != AN_LOCK_SEMAPHORE))
        return AN_ERR_INVALID_ARG;
    if (kind != AN_LOCK_SEMAPHORE)
        permits = 1;
    if (permits < 1)
        return AN_ERR_INVALID_ARG;

    pthread_mutex_lock(&m->mu);
    lock_entry *e = NULL;
    an_status st = lookup(m, name, len, kind, permits, &e, fail);
    if (st != AN_OK)
        goto out;
    if (can_take(e, owner)) {
        take(e, owner);
        goto out;
    }
    if (timeout == 0) {
        if (record_busy) {
            e->contended++;
            e->timeouts++;
        }
        st = AN_ERR_LOCK_TIMEOUT;
        goto out;
    }
    e->contended++;
    if (m->detect && closes_cycle(m, e, owner, fail)) {
        e->deadlocks++;
        st = AN_ERR_LOCK_DEADLOCK;
        goto out;
    }

    wait_rec rec = {owner, e, m->waits};
    m->waits = &rec;
    e->waiters++;
    double start = an_now(), now = start;
    double deadline = an_deadline(start, timeout);
    double next_check = start + AN_WAIT_SLICE_MS / 1000.0;
    for (;;) {
        an_cond_wait_until(&e->cv, &m->mu, an_slice_end(now, deadline));
        if (can_take(e, owner)) {
            take(e, owner);
            st = AN_OK;
            break;
        }
        now = an_now();
        if (now >= deadline) {
            e->timeouts++;
            st = AN_ERR_LOCK_TIMEOUT;
            break;
        }
        if (intr != NULL && now >= next_check) {
            /* e stays alive: waiters > 0 pins it. */
            pthread_mutex_unlock(&m->mu);
            int stop = intr(ctx);
            pthread_mutex_lock(&m->mu);
            now = an_now();
            next_check = now + AN_WAIT_SLICE_MS / 1000.0;
            if (stop) {
                st = AN_ERR_CANCELLED;
                break;
            }
            if (can_take(e, owner)) {
                take(e, owner);
                st = AN_OK;
                break;
            }
        }
    }
    wait_rec **pp = &m->waits;
    while (*pp != &rec)
        pp = &(*pp)->next;
    *pp = rec.next;
    e->waiters--;
    double w = an_now() - start;
    e->wait_total += w;
    if (w > e->wait_max)
        e->wait_max = w;
    if (waited != NULL)
        *waited = w;
    /* Leaving without a permit may have swallowed a wake-up meant for the
     * next waiter: pass it on. */
    if (st != AN_OK && e->waiters > 0 && can_take(e, 0))
        pthread_cond_signal(&e->cv);
out:
    pthread_mutex_unlock(&m->mu);
    return st;
}

an_status
an_lockmgr_acquire(an_lockmgr *m, const char *name, size_t len, an_lock_kind kind,
                   int permits, uint64_t owner, double timeout, an_interrupt_fn intr,
                   void *ctx, an_lock_fail *fail, double *waited)
{
    return acquire_impl(m, name, len, kind, permits, owner, timeout, intr, ctx, fail, waited, 1);
}

an_status
an_lockmgr_try_acquire(an_lockmgr *m, const char *name, size_t len, an_lock_kind kind,
                       int permits, uint64_t owner, an_lock_fail *fail)
{
    return acquire_impl(m, name, len, kind, permits, owner, 0.0, NULL, NULL, fail, NULL, 0);
}

an_status
an_lockmgr_release(an_lockmgr *m, const char *name, size_t len, uint64_t owner)
{
    an_status st = AN_OK;
    pthread_mutex_lock(&m->mu);
    lock_entry *e = find(m, name, len, hash_name(name, len));
    if (e == NULL || e->held == 0 || (e->kind != AN_LOCK_SEMAPHORE && e->owner != owner)) {
        st = AN_ERR_LOCK_NOT_HELD;
        goto out;
    }
    if (e->kind == AN_LOCK_SEMAPHORE) {
        e->held--;
    } else if (--e->depth == 0) {
        e->held = 0;
        e->owner = 0;
    }
    if (e->waiters > 0 && can_take(e, 0))
        pthread_cond_signal(&e->cv);
out:
    pthread_mutex_unlock(&m->mu);
    return st;
}

static void
fill_stats(const lock_entry *e, an_lock_stats *s)
{
    s->kind = e->kind;
    s->permits = e->permits;
    s->held = e->held;
    s->owner = e->owner;
    s->depth = e->kind == AN_LOCK_SEMAPHORE ? 0 : e->depth;
    s->waiters = e->waiters;
    s->acquisitions = e->acquisitions;
    s->contended = e->contended;
    s->timeouts = e->timeouts;
    s->deadlocks = e->deadlocks;
    s->wait_total = e->wait_total;
    s->wait_max = e->wait_max;
}

an_status
an_lockmgr_stat(an_lockmgr *m, const char *name, size_t len, an_lock_stats *out, char *buf,
                size_t bufsize)
{
    an_status st = AN_OK;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&m->mu);
    lock_entry *e = find(m, name, len, hash_name(name, len));
    if (e == NULL) {
        st = AN_ERR_INVALID_ARG;
    } else {
        fill_stats(e, out);
        size_t n = e->len < bufsize ? e->len : bufsize;
        memcpy(buf, e->name, n);
        out->name = buf;
        out->name_len = n;
    }
    pthread_mutex_unlock(&m->mu);
    return st;
}

an_status
an_lockmgr_stat_all(an_lockmgr *m, an_lock_stats **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    an_status st = AN_OK;
    pthread_mutex_lock(&m->mu);
    size_t names = 0, count = m->count;
    for (size_t i = 0; i < m->nbuckets; i++)
        for (lock_entry *e = m->buckets[i]; e != NULL; e = e->next)
            names += e->len;
    size_t head;
    if (!an_mul_size(count, sizeof(an_lock_stats), &head) || head > SIZE_MAX - names) {
        st = AN_ERR_NOMEM;
        goto out;
    }
    an_lock_stats *block = an_malloc(alloc_of(m), head + names);
    if (block == NULL) {
        st = an_nomem(alloc_of(m));
        goto out;
    }
    char *text = (char *)block + head;
    size_t k = 0;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (lock_entry *e = m->buckets[i]; e != NULL; e = e->next) {
            memset(&block[k], 0, sizeof(block[k]));
            fill_stats(e, &block[k]);
            memcpy(text, e->name, e->len);
            block[k].name = text;
            block[k].name_len = e->len;
            text += e->len;
            k++;
        }
    }
    *out = block;
    *n = k;
out:
    pthread_mutex_unlock(&m->mu);
    return st;
}

size_t
an_lockmgr_count(an_lockmgr *m)
{
    pthread_mutex_lock(&m->mu);
    size_t n = m->count;
    pthread_mutex_unlock(&m->mu);
    return n;
}
