/*
 * an_wait.h - the one waiting primitive of the blocking structures: the
 * monotonic clock, the wait slice, and condition variables that time out on
 * CLOCK_MONOTONIC (so a wall-clock jump never stretches or cuts a wait).
 *
 * Every blocking wait in amulet_native (named locks and pool slots in
 * lockmgr.c/slots.c, the an_cond notifications of sync.c behind
 * ThreadSafeQueue and ThreadSafeDict.get_or_create) is built from these
 * helpers and waits at most AN_WAIT_SLICE_MS at a time, so the binding can
 * take the GIL between slices and deliver Ctrl-C promptly.
 */
#ifndef AN_WAIT_H
#define AN_WAIT_H

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Length of one wait slice: the worst-case delay before an interrupt is seen. */
#define AN_WAIT_SLICE_MS 50
#define AN_WAIT_SLICE_NS ((int64_t)AN_WAIT_SLICE_MS * 1000000)

/* CLOCK_MONOTONIC in nanoseconds. */
static inline int64_t
an_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CLOCK_MONOTONIC in seconds. */
static inline double
an_now(void)
{
    return (double)an_monotonic_ns() * 1e-9;
}

/* Initialises a condition variable whose timed waits use CLOCK_MONOTONIC.
 * Returns 0, or -1 when it cannot be made. */
static inline int
an_condvar_init(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    int r = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (r == 0)
        r = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return r == 0 ? 0 : -1;
}

/* Waits on cv (mu held) until signalled or until the monotonic time
 * `until_ns`.  Returns 0 when signalled (or woken spuriously), ETIMEDOUT when
 * the time passed. */
static inline int
an_condvar_wait_until_ns(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t until_ns)
{
    if (until_ns < 0)
        until_ns = 0;
    struct timespec ts = {(time_t)(until_ns / 1000000000), (long)(until_ns % 1000000000)};
    return pthread_cond_timedwait(cv, mu, &ts);
}

/* The same with the time in seconds (callers bound it with an_slice_end). */
static inline void
an_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, double until)
{
    int64_t ns = until >= 9.0e9 ? (int64_t)9.0e18 : (int64_t)(until * 1e9);
    (void)an_condvar_wait_until_ns(cv, mu, ns);
}

/* The deadline of a wait of `timeout` seconds starting at now (< 0: none). */
static inline double
an_deadline(double now, double timeout)
{
    if (timeout < 0 || isnan(timeout) || timeout > 1e9)
        return INFINITY;
    return now + timeout;
}

/* The end of the next wait slice. */
static inline double
an_slice_end(double now, double deadline)
{
    double end = now + AN_WAIT_SLICE_MS / 1000.0;
    return end < deadline ? end : deadline;
}

#endif /* AN_WAIT_H */
