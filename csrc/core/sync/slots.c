/*
 * slots.c - the counting semaphore behind ObjectPool: "may I hold one more
 * pooled object?".  The pool's objects themselves (and the user's factory,
 * health check and close callback) stay in Python; only the waiting is here,
 * so a borrower blocked on a full pool waits with the GIL released.
 *
 * Invariants (under mu): 0 <= used <= capacity; once closed, no acquisition
 * succeeds, but releases still return slots.
 */
#include <stdlib.h>
#include <string.h>

#include "an_lock.h"
#include "an_wait.h"

struct an_slots {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t capacity, used;
    int waiters;
    int closed;
    uint64_t waits, timeouts;
    an_allocator alloc;
    int has_alloc;
};

an_status
an_slots_create(an_slots **out, int64_t capacity, const an_allocator *a)
{
    *out = NULL;
    if (capacity < 1)
        return AN_ERR_INVALID_ARG;
    an_slots *s = an_calloc(a, 1, sizeof(*s));
    if (s == NULL)
        return an_nomem(a);
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        an_free(a, s);
        return AN_ERR_NOMEM;
    }
    if (an_condvar_init(&s->cv) != 0) {
        pthread_mutex_destroy(&s->mu);
        an_free(a, s);
        return AN_ERR_NOMEM;
    }
    if (a != NULL) {
        s->alloc = *a;
        s->has_alloc = 1;
    }
    s->capacity = capacity;
    *out = s;
    return AN_OK;
}

void
an_slots_destroy(an_slots *s)
{
    if (s == NULL)
        return;
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    an_allocator copy = s->alloc;
    an_free(s->has_alloc ? &copy : NULL, s);
}

an_status
an_slots_acquire(an_slots *s, double timeout, an_interrupt_fn intr, void *ctx)
{
    an_status st = AN_OK;
    pthread_mutex_lock(&s->mu);
    if (s->closed) {
        st = AN_ERR_POOL_CLOSED;
        goto out;
    }
    if (s->used < s->capacity) {
        s->used++;
        goto out;
    }
    if (timeout == 0) {
        s->timeouts++;
        st = AN_ERR_POOL_TIMEOUT;
        goto out;
    }
    s->waits++;
    s->waiters++;
    double now = an_now();
    double deadline = an_deadline(now, timeout);
    double next_check = now + AN_WAIT_SLICE_MS / 1000.0;
    for (;;) {
        an_cond_wait_until(&s->cv, &s->mu, an_slice_end(now, deadline));
        if (s->closed) {
            st = AN_ERR_POOL_CLOSED;
            break;
        }
        if (s->used < s->capacity) {
            s->used++;
            st = AN_OK;
            break;
        }
        now = an_now();
        if (now >= deadline) {
            s->timeouts++;
            st = AN_ERR_POOL_TIMEOUT;
            break;
        }
        if (intr != NULL && now >= next_check) {
            pthread_mutex_unlock(&s->mu);
            int stop = intr(ctx);
            pthread_mutex_lock(&s->mu);
            now = an_now();
            next_check = now + AN_WAIT_SLICE_MS / 1000.0;
            if (stop) {
                st = AN_ERR_CANCELLED;
                break;
            }
        }
    }
    s->waiters--;
    /* A waiter leaving without a slot passes on a wake-up it may have taken. */
    if (st != AN_OK && s->waiters > 0 && s->used < s->capacity)
        pthread_cond_signal(&s->cv);
out:
    pthread_mutex_unlock(&s->mu);
    return st;
}

an_status
an_slots_try_acquire(an_slots *s)
{
    an_status st = AN_OK;
    pthread_mutex_lock(&s->mu);
    if (s->closed)
        st = AN_ERR_POOL_CLOSED;
    else if (s->used < s->capacity)
        s->used++;
    else
        st = AN_ERR_POOL_TIMEOUT;
    pthread_mutex_unlock(&s->mu);
    return st;
}

an_status
an_slots_release(an_slots *s)
{
    an_status st = AN_OK;
    pthread_mutex_lock(&s->mu);
    if (s->used == 0)
        st = AN_ERR_INVALID_ARG;
    else {
        s->used--;
        if (s->waiters > 0)
            pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

void
an_slots_close(an_slots *s)
{
    pthread_mutex_lock(&s->mu);
    s->closed = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void
an_slots_get_stats(an_slots *s, an_slots_stats *out)
{
    pthread_mutex_lock(&s->mu);
    out->capacity = s->capacity;
    out->used = s->used;
    out->waiters = s->waiters;
    out->closed = s->closed;
    out->waits = s->waits;
    out->timeouts = s->timeouts;
    pthread_mutex_unlock(&s->mu);
}
