/*
 * an_wait.h - internal helpers of the blocking primitives (lockmgr.c,
 * slots.c): monotonic time in seconds and condition variables that time out
 * on CLOCK_MONOTONIC, so a wall-clock jump never stretches or cuts a wait.
 */
#ifndef AN_WAIT_H
#define AN_WAIT_H

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <time.h>

#include "an_lock.h"

static inline double
an_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int
an_cond_init(pthread_cond_t *cv)
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

/* Waits on cv until signalled or until the monotonic time `until` (seconds). */
static inline void
an_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, double until)
{
    struct timespec ts;
    double sec = floor(until);
    ts.tv_sec = (time_t)sec;
    ts.tv_nsec = (long)((until - sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    (void)pthread_cond_timedwait(cv, mu, &ts);
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
