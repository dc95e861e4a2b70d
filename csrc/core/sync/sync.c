/*
 * sync.c - counters, notifications and ring storage of the thread-safe
 * structures (see an_sync.h).
 *
 * Counters use compare-and-swap loops rather than fetch_add: the new value is
 * computed with __builtin_add_overflow first, so an overflowing update fails
 * cleanly and no thread ever observes a wrapped value.
 *
 * an_cond pairs the classic mutex + condition variable with a sequence number.
 * Waiters in the binding wait in short slices (to poll for Ctrl-C with the GIL
 * held in between); a notification that lands between two slices still bumps
 * the sequence, and the next slice returns at once.  The clock, the slice
 * length and the monotonic condition variable are an_wait.h's, shared with the
 * named locks and pool slots (lockmgr.c, slots.c).
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "an_sync.h"

void
an_counter_init(an_counter *c, int64_t v)
{
    atomic_init(&c->value, v);
}

int64_t
an_counter_load(an_counter *c)
{
    return atomic_load(&c->value);
}

void
an_counter_store(an_counter *c, int64_t v)
{
    atomic_store(&c->value, v);
}

int64_t
an_counter_exchange(an_counter *c, int64_t v)
{
    return atomic_exchange(&c->value, v);
}

int
an_counter_cas(an_counter *c, int64_t expected, int64_t desired)
{
    return atomic_compare_exchange_strong(&c->value, &expected, desired);
}

int
an_counter_add(an_counter *c, int64_t n, int64_t *old_out, int64_t *new_out)
{
    int64_t cur = atomic_load(&c->value), next;
    do {
        if (__builtin_add_overflow(cur, n, &next))
            return 0;
    } while (!atomic_compare_exchange_weak(&c->value, &cur, next));
    if (old_out != NULL)
        *old_out = cur;
    if (new_out != NULL)
        *new_out = next;
    return 1;
}

int
an_counter_sub(an_counter *c, int64_t n, int64_t *old_out, int64_t *new_out)
{
    int64_t cur = atomic_load(&c->value), next;
    do {
        if (__builtin_sub_overflow(cur, n, &next))
            return 0;
    } while (!atomic_compare_exchange_weak(&c->value, &cur, next));
    if (old_out != NULL)
        *old_out = cur;
    if (new_out != NULL)
        *new_out = next;
    return 1;
}

/* ---- an_cond --------------------------------------------------------------- */

an_status
an_cond_init(an_cond *c)
{
    memset(c, 0, sizeof(*c));
    if (pthread_mutex_init(&c->mu, NULL) != 0)
        return AN_ERR_THREADS;
    if (an_condvar_init(&c->cv) != 0) {
        pthread_mutex_destroy(&c->mu);
        return AN_ERR_THREADS;
    }
    atomic_init(&c->waiters, 0);
    return AN_OK;
}

void
an_cond_destroy(an_cond *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

uint64_t
an_cond_prepare(an_cond *c)
{
    pthread_mutex_lock(&c->mu);
    atomic_fetch_add(&c->waiters, 1);
    uint64_t seq = c->seq;
    pthread_mutex_unlock(&c->mu);
    return seq;
}

int
an_cond_wait(an_cond *c, uint64_t seq, int64_t timeout_ns)
{
    int64_t deadline = an_monotonic_ns() + (timeout_ns > 0 ? timeout_ns : 0);
    int notified;
    pthread_mutex_lock(&c->mu);
    while (c->seq == seq) {
        if (an_condvar_wait_until_ns(&c->cv, &c->mu, deadline) == ETIMEDOUT)
            break;
    }
    notified = c->seq != seq;
    pthread_mutex_unlock(&c->mu);
    return notified;
}

void
an_cond_finish(an_cond *c)
{
    atomic_fetch_sub(&c->waiters, 1);
}

void
an_cond_notify(an_cond *c)
{
    if (atomic_load(&c->waiters) == 0)
        return;
    pthread_mutex_lock(&c->mu);
    c->seq++;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void
an_cond_notify_all(an_cond *c)
{
    pthread_mutex_lock(&c->mu);
    c->seq++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

int
an_cond_waiters(an_cond *c)
{
    return atomic_load(&c->waiters);
}

/* ---- an_ring --------------------------------------------------------------- */

/* Moves the items to new storage of cap slots (cap >= count). */
static an_status
ring_resize(an_ring *r, const an_allocator *a, size_t cap)
{
    size_t bytes;
    if (!an_mul_size(cap, sizeof(void *), &bytes))
        return AN_ERR_NOMEM;
    void **items = an_malloc(a, bytes);
    if (items == NULL)
        return an_nomem(a);
    for (size_t i = 0; i < r->count; i++)
        items[i] = r->items[(r->head + i) & (r->cap - 1)];
    an_free(a, r->items);
    r->items = items;
    r->head = 0;
    r->cap = cap;
    return AN_OK;
}

an_status
an_ring_push(an_ring *r, const an_allocator *a, void *item)
{
    if (r->count == r->cap) {
        if (r->cap > SIZE_MAX / 2)
            return AN_ERR_NOMEM;
        an_status s = ring_resize(r, a, r->cap ? r->cap * 2 : 16);
        if (s != AN_OK)
            return s;
    }
    r->items[(r->head + r->count) & (r->cap - 1)] = item;
    r->count++;
    return AN_OK;
}

void *
an_ring_pop_front(an_ring *r)
{
    if (r->count == 0)
        return NULL;
    void *item = r->items[r->head];
    r->head = (r->head + 1) & (r->cap - 1);
    r->count--;
    return item;
}

void *
an_ring_pop_back(an_ring *r)
{
    if (r->count == 0)
        return NULL;
    r->count--;
    return r->items[(r->head + r->count) & (r->cap - 1)];
}

void *
an_ring_get(const an_ring *r, size_t i)
{
    return r->items[(r->head + i) & (r->cap - 1)];
}

void
an_ring_set(an_ring *r, size_t i, void *item)
{
    r->items[(r->head + i) & (r->cap - 1)] = item;
}

void
an_ring_shrink(an_ring *r, const an_allocator *a)
{
    if (r->cap > AN_RING_MIN_SHRINK && r->count <= r->cap / 8)
        (void)ring_resize(r, a, r->cap / 2);
}

void
an_ring_free(an_ring *r, const an_allocator *a)
{
    an_free(a, r->items);
    memset(r, 0, sizeof(*r));
}
