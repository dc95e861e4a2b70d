/*
 * an_sync.h - lock-free counters, a notification primitive and a ring buffer
 * for the thread-safe structures (sync.c).
 *
 * The structures themselves (AtomicCounter, ThreadSafeDict, ThreadSafeQueue)
 * live in the binding; this core holds what needs no interpreter:
 *
 *   an_counter  a signed 64-bit integer updated by compare-and-swap loops, so
 *               an update that would overflow is refused instead of wrapping;
 *   an_cond     "wait until notified" for threads that have released the GIL:
 *               a mutex, a condition variable on CLOCK_MONOTONIC and a
 *               sequence number, so a notification sent while a waiter is
 *               between two timed slices is never lost;
 *   an_ring     a growable ring of pointers (queue storage), allocated through
 *               an_allocator.
 */
#ifndef AN_SYNC_H
#define AN_SYNC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "../an_core.h"
#include "an_wait.h" /* the clock, the slice and the monotonic condvar */

/* ---- an_counter ------------------------------------------------------------ */

typedef struct an_counter {
    _Atomic int64_t value;
} an_counter;

void an_counter_init(an_counter *c, int64_t v);
int64_t an_counter_load(an_counter *c);
void an_counter_store(an_counter *c, int64_t v);
/* Stores v and returns the previous value. */
int64_t an_counter_exchange(an_counter *c, int64_t v);
/* Stores desired if the value equals expected; returns 1 if it did. */
int an_counter_cas(an_counter *c, int64_t expected, int64_t desired);
/* Adds (or, for an_counter_sub, subtracts) n atomically.  Returns 1 and fills
 * *old_out / *new_out (either may be NULL); returns 0 and leaves the counter
 * unchanged when the result would not fit in int64_t. */
int an_counter_add(an_counter *c, int64_t n, int64_t *old_out, int64_t *new_out);
int an_counter_sub(an_counter *c, int64_t n, int64_t *old_out, int64_t *new_out);

/* ---- an_cond --------------------------------------------------------------- */

/* Invariant: seq only grows, under mu.  waiters counts the threads between
 * an_cond_prepare() and an_cond_finish(); notifiers skip the mutex when it is
 * zero, which is what keeps an uncontended put/get free of system calls. */
typedef struct an_cond {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t seq;
    atomic_int waiters;
} an_cond;

/* Returns AN_OK, or AN_ERR_THREADS when the mutex or condvar cannot be made. */
an_status an_cond_init(an_cond *c);
void an_cond_destroy(an_cond *c);
/* Registers the caller as a waiter and returns the sequence to wait on.  Call
 * it after finding the awaited condition false, while whatever protects that
 * condition is still held, so that a notification after the check bumps the
 * sequence the caller waits on. */
uint64_t an_cond_prepare(an_cond *c);
/* Blocks until the sequence differs from seq or timeout_ns (>= 0) has passed on
 * the monotonic clock.  Returns 1 when notified, 0 on timeout.  Never touches
 * the interpreter: call it with the GIL released. */
int an_cond_wait(an_cond *c, uint64_t seq, int64_t timeout_ns);
/* Unregisters a waiter registered by an_cond_prepare(). */
void an_cond_finish(an_cond *c);
/* Wakes one (notify) or every (notify_all) registered waiter. */
void an_cond_notify(an_cond *c);
void an_cond_notify_all(an_cond *c);
/* Number of registered waiters (a hint: it may change right after). */
int an_cond_waiters(an_cond *c);

/* ---- an_ring --------------------------------------------------------------- */

/* Invariant: count <= cap; the items are items[(head + i) % cap] for
 * i < count; cap is 0 (nothing allocated) or a power of two. */
typedef struct an_ring {
    void **items;
    size_t head, count, cap;
} an_ring;

/* Appends item; AN_ERR_NOMEM (ring unchanged) when growing fails. */
an_status an_ring_push(an_ring *r, const an_allocator *a, void *item);
/* Remove and return the first / last item; NULL when empty. */
void *an_ring_pop_front(an_ring *r);
void *an_ring_pop_back(an_ring *r);
/* The i-th item from the front (i < count). */
void *an_ring_get(const an_ring *r, size_t i);
void an_ring_set(an_ring *r, size_t i, void *item);
/* Halves the storage when at most an eighth of it is in use and it is larger
 * than AN_RING_MIN_SHRINK slots, so a queue that once held a burst gives the
 * memory back.  Amortised O(1); a failed allocation just keeps the storage. */
#define AN_RING_MIN_SHRINK 1024
void an_ring_shrink(an_ring *r, const an_allocator *a);
/* Frees the storage (not the items). */
void an_ring_free(an_ring *r, const an_allocator *a);

#endif /* AN_SYNC_H */
