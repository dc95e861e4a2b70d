/*
 * an_breaker.h - the circuit breaker state machine and its sliding window
 * (breaker.c), and the retry budget (retry_budget.c).
 *
 * The breaker follows resilience4j: CLOSED -> OPEN when, over the last
 * `window` outcomes (count window) or the last `window` seconds (time window)
 * and once at least `minimum_calls` were recorded, the failure rate or the
 * slow-call rate reaches its threshold; OPEN -> HALF_OPEN after `wait_open`;
 * in HALF_OPEN exactly `half_open_calls` trial calls are admitted and their
 * outcomes decide CLOSED (rates under the thresholds) or OPEN again.
 *
 * Concurrency: the state is one atomic word (epoch << 2 | state), so every
 * thread sees one state and a closed-circuit check is one atomic load.  The
 * count window is lock-free (a slot is claimed by fetch-add and swapped in;
 * the totals move by the difference between the new and the old outcome, so
 * they always equal the sum of the slots).  The half-open permits are one
 * atomic word tagged with the epoch of the HALF_OPEN state they belong to, so
 * exactly `half_open_calls` are handed out per half-open period whatever the
 * number of threads.  Transitions (rare) and the time window's bucket rolls
 * take a mutex.  Nothing here calls back: the caller learns of a transition
 * from the return value and runs its listeners after the call returns.
 *
 * Time is passed in by the caller (monotonic nanoseconds), so tests inject a
 * clock and the binding reads CLOCK_MONOTONIC only when it needs to.
 */
#ifndef AN_BREAKER_H
#define AN_BREAKER_H

#include <stdint.h>

#include "../an_core.h"

typedef enum an_brk_state {
    AN_BRK_CLOSED = 0,
    AN_BRK_OPEN = 1,
    AN_BRK_HALF_OPEN = 2,
    AN_BRK_FORCED_OPEN = 3, /* force_open(): stays open until reset() */
} an_brk_state;

/* A transition as returned by the calls below: AN_BRK_NONE, or
 * AN_BRK_TRANSITION(from, to) (from in bits 4-7, to in bits 0-3). */
#define AN_BRK_NONE (-1)
#define AN_BRK_TRANSITION(from, to) ((int)(((from) << 4) | (to)))

/* now_ns value meaning "read CLOCK_MONOTONIC if a transition needs the time":
 * lets a caller that skips the clock on the closed path (no slow calls, count
 * window) record an outcome without opening the circuit "at time 0". */
#define AN_BRK_NOW INT64_MIN

/* Upper bounds checked by an_breaker_create (explicit limits). */
#define AN_BRK_MAX_WINDOW 100000      /* outcomes, or seconds */
#define AN_BRK_MAX_HALF_OPEN 10000

typedef struct an_breaker_config {
    double failure_rate;      /* (0, 1]: open when failures / calls >= this */
    double slow_rate;         /* (0, 1]: open when slow / calls >= this */
    int64_t slow_ns;          /* a call lasting >= this is slow; 0 = never */
    uint32_t window;          /* outcomes (count) or seconds (time), >= 1 */
    int time_window;          /* 0 = count window, 1 = time window */
    uint32_t minimum_calls;   /* >= 1: no decision on fewer calls */
    int64_t wait_open_ns;     /* >= 0: time spent OPEN before HALF_OPEN */
    uint32_t half_open_calls; /* >= 1: trial calls admitted in HALF_OPEN */
} an_breaker_config;

typedef enum an_brk_outcome {
    AN_BRK_SUCCESS = 0,
    AN_BRK_FAILURE = 1,
} an_brk_outcome;

typedef struct an_breaker an_breaker;

typedef struct an_breaker_metrics {
    an_brk_state state;
    uint64_t calls, failures, slow;        /* in the current window */
    uint64_t not_permitted;                /* refused calls, lifetime */
    uint64_t total_calls, total_failures;  /* recorded outcomes, lifetime */
    uint64_t transitions;
    int64_t opened_at_ns;                  /* last transition to OPEN */
} an_breaker_metrics;

/* Creates a CLOSED breaker.  AN_ERR_INVALID_ARG for a config outside the
 * documented ranges, an_nomem(a) when allocating fails. */
an_status an_breaker_create(an_breaker **out, const an_breaker_config *cfg,
                            const an_allocator *a);
void an_breaker_destroy(an_breaker *b);

/* May one call go ahead at now_ns?  Returns a ticket >= 0 (yes: the state
 * word the call was admitted under) or -1 (no: refused and counted as not
 * permitted).  *transition receives AN_BRK_NONE or the OPEN -> HALF_OPEN
 * transition this call made.  A permitted call must be finished by exactly
 * one an_breaker_record() or an_breaker_release() with its ticket. */
int64_t an_breaker_acquire(an_breaker *b, int64_t now_ns, int *transition);

/* Records the outcome of a permitted call that lasted duration_ns (slow when
 * >= slow_ns).  The outcome enters the window (or the half-open trial) only
 * when the breaker is still in the state period the ticket was issued in: a
 * call admitted before a transition never counts after it.  Returns
 * AN_BRK_NONE or the transition it caused.  now_ns may be AN_BRK_NOW when the
 * breaker has neither slow calls nor a time window. */
int an_breaker_record(an_breaker *b, int64_t ticket, an_brk_outcome outcome, int64_t duration_ns,
                      int64_t now_ns);

/* Finishes a permitted call without an outcome (an ignored exception, a
 * cancellation): a half-open trial permit is handed back. */
void an_breaker_release(an_breaker *b, int64_t ticket);

/* The current state (one atomic load). */
an_brk_state an_breaker_state(const an_breaker *b);

/* Nanoseconds until an OPEN breaker lets a trial call through (0 when not
 * OPEN or already due; INT64_MAX when FORCED_OPEN). */
int64_t an_breaker_retry_after_ns(const an_breaker *b, int64_t now_ns);

/* Moves to `to` (any state) at now_ns, clearing the window; used by
 * force_open()/reset() and by a shared store that saw another process move.
 * Returns AN_BRK_NONE when already there. */
int an_breaker_transition(an_breaker *b, an_brk_state to, int64_t now_ns);

/* Same, but only if the state is still `from` (compare-and-set). */
int an_breaker_transition_from(an_breaker *b, an_brk_state from, an_brk_state to,
                               int64_t now_ns);

/* Sets the OPEN start time (a shared store's open time, so every process
 * leaves OPEN together). */
void an_breaker_set_opened_at(an_breaker *b, int64_t opened_at_ns);

void an_breaker_get_metrics(an_breaker *b, int64_t now_ns, an_breaker_metrics *out);

/* ---- retry budget ----------------------------------------------------------
 *
 * Finagle's RetryBudget: every request deposits, every retry withdraws, and
 * a retry is allowed while the retries of the last `ttl` seconds stay below
 * ratio x requests of the same period + min_per_second x ttl.  The counts live
 * in one-second buckets; the current bucket is updated with atomics, rolling
 * to a new second takes a mutex. */

typedef struct an_rbudget an_rbudget;

#define AN_RBUDGET_MAX_TTL 3600

/* ratio in [0, 1000], min_per_second >= 0, ttl_s in [1, AN_RBUDGET_MAX_TTL]. */
an_status an_rbudget_create(an_rbudget **out, double ratio, double min_per_second, uint32_t ttl_s,
                            const an_allocator *a);
void an_rbudget_destroy(an_rbudget *r);
/* Counts one request at now_ns. */
void an_rbudget_deposit(an_rbudget *r, int64_t now_ns);
/* Takes one retry if the budget allows it: 1 = allowed (and counted), 0 = spent
 * (counted as refused). */
int an_rbudget_withdraw(an_rbudget *r, int64_t now_ns);
/* Requests, retries and refusals over the last ttl seconds / refused lifetime. */
void an_rbudget_stats(an_rbudget *r, int64_t now_ns, uint64_t *requests, uint64_t *retries,
                      uint64_t *refused_total, double *balance);

#endif /* AN_BREAKER_H */
