/*
 * breaker.c - the circuit breaker: a state word, a sliding window of outcomes
 * and the half-open trial permits (contract and concurrency in an_breaker.h).
 *
 * Design choice: the paths every call takes (the state check, recording into
 * a count window, taking a half-open permit) are lock-free, because a breaker
 * wraps every call to a dependency; the paths a call takes only when
 * something changes (a transition, rolling the time window to a new second)
 * take one mutex, which keeps the transitions simple to reason about: under
 * the mutex the state word is re-checked, the new period's bookkeeping is
 * reset, and only then is the new word published with a release store.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../sync/an_wait.h"
#include "an_breaker.h"

#define NS_PER_S 1000000000LL

/* Outcome bits of one count-window slot (0 = empty). */
#define SLOT_USED 1u
#define SLOT_FAIL 2u
#define SLOT_SLOW 4u

typedef struct tbucket {
    int64_t sec;
    uint64_t calls, failures, slow;
} tbucket;

/* Invariants: word = epoch << 2 | state and the epoch grows by one per
 * transition; ho_permits = (epoch & 0xffffffff) << 32 | permits taken, for the
 * current HALF_OPEN period; ho_results packs (epoch & 0xffff) << 48 | calls
 * << 32 | failures << 16 | slow of that period's trial calls.  Count window:
 * calls/failures/slow equal the sums over ring[] once concurrent records
 * finish.  Time window (under mu): t_* equal the sums over buckets[], every
 * bucket with sec <= head_sec - window being empty. */
struct an_breaker {
    an_breaker_config cfg;
    uint32_t min_calls; /* minimum_calls, capped by a count window's size */
    _Atomic uint64_t word;
    _Atomic int64_t opened_at_ns;
    _Atomic uint64_t ho_permits;
    _Atomic uint64_t ho_results;
    /* count window */
    _Atomic uint64_t next;
    _Atomic uint8_t *ring;
    _Atomic int64_t calls, failures, slow;
    /* time window and transitions */
    pthread_mutex_t mu;
    tbucket *buckets;
    int64_t head_sec;
    uint64_t t_calls, t_failures, t_slow;
    /* lifetime counters */
    _Atomic uint64_t not_permitted, total_calls, total_failures, transitions;
    an_allocator alloc;
    int has_alloc;
};

an_status
an_breaker_create(an_breaker **out, const an_breaker_config *cfg, const an_allocator *a)
{
    *out = NULL;
    if (!(cfg->failure_rate > 0 && cfg->failure_rate <= 1) ||
        !(cfg->slow_rate > 0 && cfg->slow_rate <= 1) || cfg->slow_ns < 0 || cfg->window < 1 ||
        cfg->window > AN_BRK_MAX_WINDOW || cfg->minimum_calls < 1 || cfg->wait_open_ns < 0 ||
        cfg->half_open_calls < 1 || cfg->half_open_calls > AN_BRK_MAX_HALF_OPEN)
        return AN_ERR_INVALID_ARG;
    an_breaker *b = an_calloc(a, 1, sizeof(*b));
    if (b == NULL)
        return an_nomem(a);
    if (a != NULL) {
        b->alloc = *a;
        b->has_alloc = 1;
    }
    b->cfg = *cfg;
    b->min_calls = cfg->minimum_calls;
    if (cfg->time_window)
        b->buckets = an_calloc(a, cfg->window, sizeof(tbucket));
    else {
        b->ring = an_calloc(a, cfg->window, sizeof(*b->ring));
        if (b->min_calls > cfg->window)
            b->min_calls = cfg->window;
    }
    if ((cfg->time_window ? (void *)b->buckets : (void *)b->ring) == NULL) {
        an_free(a, b);
        return an_nomem(a);
    }
    if (pthread_mutex_init(&b->mu, NULL) != 0) {
        an_free(a, cfg->time_window ? (void *)b->buckets : (void *)b->ring);
        an_free(a, b);
        return AN_ERR_NOMEM;
    }
    b->head_sec = INT64_MIN;
    atomic_init(&b->word, (uint64_t)AN_BRK_CLOSED);
    *out = b;
    return AN_OK;
}

void
an_breaker_destroy(an_breaker *b)
{
    if (b == NULL)
        return;
    an_allocator copy = b->alloc;
    const an_allocator *a = b->has_alloc ? &copy : NULL;
    pthread_mutex_destroy(&b->mu);
    an_free(a, b->cfg.time_window ? (void *)b->buckets : (void *)b->ring);
    an_free(a, b);
}

an_brk_state
an_breaker_state(const an_breaker *b)
{
    return (an_brk_state)(atomic_load_explicit(&((an_breaker *)b)->word, memory_order_acquire) & 3u);
}

/* ---- the window ------------------------------------------------------------ */

/* The second of now_ns, rounded down (C division truncates towards zero, so
 * an injected clock below 0 would make -0.5 s and 0.5 s one second), and the
 * bucket of a second (a non-negative remainder, whatever the sign). */
static int64_t
sec_of(int64_t now_ns)
{
    int64_t s = now_ns / NS_PER_S;
    return (now_ns % NS_PER_S < 0) ? s - 1 : s;
}

static tbucket *
bucket_of(an_breaker *b, int64_t sec)
{
    int64_t w = (int64_t)b->cfg.window;
    int64_t i = sec % w;
    return &b->buckets[i < 0 ? i + w : i];
}

/* Time window, mu held: drop the buckets that left the window at sec. */
static void
roll_locked(an_breaker *b, int64_t sec)
{
    uint32_t w = b->cfg.window;
    if (b->head_sec != INT64_MIN && sec <= b->head_sec)
        return; /* same second (or an injected clock went back: keep the window) */
    int64_t n = b->head_sec == INT64_MIN ? (int64_t)w : sec - b->head_sec;
    if (n > (int64_t)w)
        n = w;
    for (int64_t k = 1; k <= n; k++) {
        tbucket *t = bucket_of(b, sec - n + k);
        b->t_calls -= t->calls;
        b->t_failures -= t->failures;
        b->t_slow -= t->slow;
        memset(t, 0, sizeof(*t));
        t->sec = sec - n + k;
    }
    b->head_sec = sec;
}

/* Entering CLOSED: forget every outcome (mu held). */
static void
clear_window_locked(an_breaker *b)
{
    if (b->cfg.time_window) {
        memset(b->buckets, 0, (size_t)b->cfg.window * sizeof(tbucket));
        b->t_calls = b->t_failures = b->t_slow = 0;
        b->head_sec = INT64_MIN;
        return;
    }
    for (uint32_t i = 0; i < b->cfg.window; i++) {
        uint8_t old = atomic_exchange_explicit(&b->ring[i], 0, memory_order_relaxed);
        if (old & SLOT_USED)
            atomic_fetch_sub_explicit(&b->calls, 1, memory_order_relaxed);
        if (old & SLOT_FAIL)
            atomic_fetch_sub_explicit(&b->failures, 1, memory_order_relaxed);
        if (old & SLOT_SLOW)
            atomic_fetch_sub_explicit(&b->slow, 1, memory_order_relaxed);
    }
}

/* Does (calls, failures, slow) reach a threshold? */
static int
over_threshold(const an_breaker *b, uint64_t calls, uint64_t failures, uint64_t slow)
{
    if (calls == 0)
        return 0;
    if ((double)failures >= b->cfg.failure_rate * (double)calls)
        return 1;
    return b->cfg.slow_ns > 0 && (double)slow >= b->cfg.slow_rate * (double)calls;
}

/* ---- transitions --------------------------------------------------------- */

/* mu held.  Moves from the current word (if it still equals expect, or
 * unconditionally when expect is UINT64_MAX) to state `to`. */
static int
transition_locked(an_breaker *b, uint64_t expect, an_brk_state to, int64_t now_ns)
{
    uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
    if (expect != UINT64_MAX && w != expect)
        return AN_BRK_NONE;
    an_brk_state from = (an_brk_state)(w & 3u);
    if (expect == UINT64_MAX && from == to)
        return AN_BRK_NONE;
    uint64_t epoch = (w >> 2) + 1;
    if (now_ns == AN_BRK_NOW)
        now_ns = an_monotonic_ns();
    if (to == AN_BRK_OPEN || to == AN_BRK_FORCED_OPEN)
        atomic_store_explicit(&b->opened_at_ns, now_ns, memory_order_relaxed);
    if (to == AN_BRK_CLOSED)
        clear_window_locked(b);
    if (to == AN_BRK_HALF_OPEN) {
        atomic_store_explicit(&b->ho_permits, (epoch & 0xffffffffu) << 32, memory_order_relaxed);
        atomic_store_explicit(&b->ho_results, (epoch & 0xffffu) << 48, memory_order_relaxed);
    }
    atomic_store_explicit(&b->word, epoch << 2 | (uint64_t)to, memory_order_release);
    atomic_fetch_add_explicit(&b->transitions, 1, memory_order_relaxed);
    return AN_BRK_TRANSITION(from, to);
}

static int
transition_if(an_breaker *b, uint64_t expect, an_brk_state to, int64_t now_ns)
{
    pthread_mutex_lock(&b->mu);
    int t = transition_locked(b, expect, to, now_ns);
    pthread_mutex_unlock(&b->mu);
    return t;
}

int
an_breaker_transition(an_breaker *b, an_brk_state to, int64_t now_ns)
{
    return transition_if(b, UINT64_MAX, to, now_ns);
}

int
an_breaker_transition_from(an_breaker *b, an_brk_state from, an_brk_state to, int64_t now_ns)
{
    pthread_mutex_lock(&b->mu);
    int t = AN_BRK_NONE;
    uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
    if ((an_brk_state)(w & 3u) == from)
        t = transition_locked(b, w, to, now_ns);
    pthread_mutex_unlock(&b->mu);
    return t;
}

void
an_breaker_set_opened_at(an_breaker *b, int64_t opened_at_ns)
{
    atomic_store_explicit(&b->opened_at_ns, opened_at_ns, memory_order_relaxed);
}

/* ---- calls ------------------------------------------------------------------ */

int64_t
an_breaker_acquire(an_breaker *b, int64_t now_ns, int *transition)
{
    *transition = AN_BRK_NONE;
    for (;;) {
        uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
        switch ((an_brk_state)(w & 3u)) {
        case AN_BRK_CLOSED:
            return (int64_t)w;
        case AN_BRK_OPEN: {
            int64_t opened = atomic_load_explicit(&b->opened_at_ns, memory_order_relaxed);
            if (now_ns - opened < b->cfg.wait_open_ns)
                goto refuse;
            int t = transition_if(b, w, AN_BRK_HALF_OPEN, now_ns);
            if (t != AN_BRK_NONE)
                *transition = t;
            continue; /* compete for a trial permit in the new period */
        }
        case AN_BRK_HALF_OPEN: {
            uint64_t tag = (w >> 2) & 0xffffffffu;
            uint64_t p = atomic_load_explicit(&b->ho_permits, memory_order_relaxed);
            for (;;) {
                if ((p >> 32) != tag)
                    break; /* the period ended meanwhile: look at the state again */
                if ((p & 0xffffffffu) >= b->cfg.half_open_calls)
                    goto refuse;
                if (atomic_compare_exchange_weak_explicit(&b->ho_permits, &p, p + 1,
                                                          memory_order_acq_rel,
                                                          memory_order_relaxed))
                    return (int64_t)w;
            }
            continue;
        }
        case AN_BRK_FORCED_OPEN:
            goto refuse;
        }
    }
refuse:
    atomic_fetch_add_explicit(&b->not_permitted, 1, memory_order_relaxed);
    return -1;
}

void
an_breaker_release(an_breaker *b, int64_t ticket)
{
    uint64_t w = (uint64_t)ticket;
    if ((w & 3u) != AN_BRK_HALF_OPEN)
        return;
    uint64_t tag = (w >> 2) & 0xffffffffu;
    uint64_t p = atomic_load_explicit(&b->ho_permits, memory_order_relaxed);
    while ((p >> 32) == tag && (p & 0xffffffffu) > 0) {
        if (atomic_compare_exchange_weak_explicit(&b->ho_permits, &p, p - 1,
                                                  memory_order_acq_rel, memory_order_relaxed))
            return;
    }
}

static int
record_half_open(an_breaker *b, uint64_t w, int fail, int slow, int64_t now_ns)
{
    uint64_t tag = (w >> 2) & 0xffffu;
    uint64_t r = atomic_load_explicit(&b->ho_results, memory_order_relaxed);
    uint64_t calls, failures, slows;
    for (;;) {
        if ((r >> 48) != tag)
            return AN_BRK_NONE; /* another period */
        calls = ((r >> 32) & 0xffffu) + 1;
        failures = ((r >> 16) & 0xffffu) + (uint64_t)fail;
        slows = (r & 0xffffu) + (uint64_t)slow;
        if (calls > 0xffffu)
            return AN_BRK_NONE;
        uint64_t n = tag << 48 | calls << 32 | failures << 16 | slows;
        if (atomic_compare_exchange_weak_explicit(&b->ho_results, &r, n, memory_order_acq_rel,
                                                  memory_order_relaxed))
            break;
    }
    if (calls != b->cfg.half_open_calls)
        return AN_BRK_NONE; /* only the call completing the trial decides */
    an_brk_state to = over_threshold(b, calls, failures, slows) ? AN_BRK_OPEN : AN_BRK_CLOSED;
    return transition_if(b, w, to, now_ns);
}

int
an_breaker_record(an_breaker *b, int64_t ticket, an_brk_outcome outcome, int64_t duration_ns,
                  int64_t now_ns)
{
    int fail = outcome == AN_BRK_FAILURE;
    int slow = b->cfg.slow_ns > 0 && duration_ns >= b->cfg.slow_ns;
    atomic_fetch_add_explicit(&b->total_calls, 1, memory_order_relaxed);
    if (fail)
        atomic_fetch_add_explicit(&b->total_failures, 1, memory_order_relaxed);
    uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
    if (ticket < 0 || (uint64_t)ticket != w)
        return AN_BRK_NONE; /* admitted in an earlier period */
    if ((w & 3u) == AN_BRK_HALF_OPEN)
        return record_half_open(b, w, fail, slow, now_ns);
    if ((w & 3u) != AN_BRK_CLOSED)
        return AN_BRK_NONE;

    uint64_t calls, failures, slows;
    if (b->cfg.time_window) {
        pthread_mutex_lock(&b->mu);
        int64_t sec = sec_of(now_ns);
        roll_locked(b, sec);
        tbucket *t = bucket_of(b, b->head_sec);
        t->calls++;
        t->failures += (uint64_t)fail;
        t->slow += (uint64_t)slow;
        b->t_calls++;
        b->t_failures += (uint64_t)fail;
        b->t_slow += (uint64_t)slow;
        calls = b->t_calls;
        failures = b->t_failures;
        slows = b->t_slow;
        int t_out = AN_BRK_NONE;
        if (calls >= b->min_calls && over_threshold(b, calls, failures, slows))
            t_out = transition_locked(b, w, AN_BRK_OPEN, now_ns);
        pthread_mutex_unlock(&b->mu);
        return t_out;
    }
    uint8_t v = (uint8_t)(SLOT_USED | (fail ? SLOT_FAIL : 0) | (slow ? SLOT_SLOW : 0));
    uint64_t i = atomic_fetch_add_explicit(&b->next, 1, memory_order_relaxed);
    uint8_t old = atomic_exchange_explicit(&b->ring[i % b->cfg.window], v, memory_order_relaxed);
    calls = (uint64_t)atomic_load_explicit(&b->calls, memory_order_relaxed);
    if (!(old & SLOT_USED))
        calls = (uint64_t)atomic_fetch_add_explicit(&b->calls, 1, memory_order_relaxed) + 1;
    failures = (uint64_t)atomic_load_explicit(&b->failures, memory_order_relaxed);
    if ((old & SLOT_FAIL) != (v & SLOT_FAIL))
        failures = (uint64_t)atomic_fetch_add_explicit(&b->failures, fail ? 1 : -1,
                                                       memory_order_relaxed) +
                   (uint64_t)(fail ? 1 : -1);
    slows = (uint64_t)atomic_load_explicit(&b->slow, memory_order_relaxed);
    if ((old & SLOT_SLOW) != (v & SLOT_SLOW))
        slows = (uint64_t)atomic_fetch_add_explicit(&b->slow, slow ? 1 : -1, memory_order_relaxed) +
                (uint64_t)(slow ? 1 : -1);
    if (calls < b->min_calls || !over_threshold(b, calls, failures, slows))
        return AN_BRK_NONE;
    return transition_if(b, w, AN_BRK_OPEN, now_ns);
}

int64_t
an_breaker_retry_after_ns(const an_breaker *b, int64_t now_ns)
{
    an_breaker *m = (an_breaker *)b;
    an_brk_state s = an_breaker_state(b);
    if (s == AN_BRK_FORCED_OPEN)
        return INT64_MAX;
    if (s != AN_BRK_OPEN)
        return 0;
    int64_t left = atomic_load_explicit(&m->opened_at_ns, memory_order_relaxed) +
                   b->cfg.wait_open_ns - now_ns;
    return left > 0 ? left : 0;
}

void
an_breaker_get_metrics(an_breaker *b, int64_t now_ns, an_breaker_metrics *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
    out->state = (an_brk_state)(w & 3u);
    if (out->state == AN_BRK_HALF_OPEN) {
        uint64_t r = atomic_load_explicit(&b->ho_results, memory_order_relaxed);
        out->calls = (r >> 32) & 0xffffu;
        out->failures = (r >> 16) & 0xffffu;
        out->slow = r & 0xffffu;
    } else if (b->cfg.time_window) {
        pthread_mutex_lock(&b->mu);
        roll_locked(b, sec_of(now_ns));
        out->calls = b->t_calls;
        out->failures = b->t_failures;
        out->slow = b->t_slow;
        pthread_mutex_unlock(&b->mu);
    } else {
        int64_t c = atomic_load_explicit(&b->calls, memory_order_relaxed);
        int64_t f = atomic_load_explicit(&b->failures, memory_order_relaxed);
        int64_t s = atomic_load_explicit(&b->slow, memory_order_relaxed);
        out->calls = c > 0 ? (uint64_t)c : 0;
        out->failures = f > 0 ? (uint64_t)f : 0;
        out->slow = s > 0 ? (uint64_t)s : 0;
    }
    out->not_permitted = atomic_load_explicit(&b->not_permitted, memory_order_relaxed);
    out->total_calls = atomic_load_explicit(&b->total_calls, memory_order_relaxed);
    out->total_failures = atomic_load_explicit(&b->total_failures, memory_order_relaxed);
    out->transitions = atomic_load_explicit(&b->transitions, memory_order_relaxed);
    out->opened_at_ns = atomic_load_explicit(&b->opened_at_ns, memory_order_relaxed);
}
