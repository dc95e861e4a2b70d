/*
 * an_gcra.h - the generic cell rate algorithm (GCRA) and a bounded keyed store
 * of theoretical arrival times.
 *
 * A policy "limit per period, with a burst" is enforced by one number per key:
 * the theoretical arrival time (TAT).  With the emission interval
 * T = ceil(period / limit) and the tolerance tau = burst * T, a request of
 * cost c at time now is admitted when
 *
 *     new_tat = max(tat, now) + c * T      and      new_tat - now <= tau
 *
 * and then TAT becomes new_tat.  Everything a client is told (remaining,
 * reset_after, retry_after) is derived from that one TAT, so the numbers agree
 * with each other and are never negative.  T is rounded up, so rounding can
 * only admit less than the stated rate, never more.
 *
 * The store maps (namespace, key bytes) to the TATs of a limiter's policies.
 * It is sharded (one mutex per shard), so it is safe from any thread without
 * the GIL, and bounded: at most max_keys entries; when a shard is full, a key
 * whose every TAT lies in the past (it carries no state: a fresh key behaves
 * the same) is evicted first, otherwise the least recently used one.  All
 * times are int64 nanoseconds on a clock chosen by the caller (monotonic).
 */
#ifndef AN_GCRA_H
#define AN_GCRA_H

#include <stddef.h>
#include <stdint.h>

#include "../an_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most policies one limiter may combine (a burst, a quota, ...). */
#define AN_GCRA_MAX_POLICIES 8
/* Longest key in bytes. */
#define AN_GCRA_MAX_KEY 1024

/* One policy, precomputed.  Invariant: interval_ns >= 1, burst >= 1,
 * tau_ns == burst * interval_ns (no overflow: checked by an_gcra_policy_init). */
typedef struct an_gcra_policy {
    int64_t limit;          /* requests (or cost units) per period */
    int64_t period_ns;
    int64_t burst;          /* most cost units admitted at once */
    int64_t interval_ns;    /* T = ceil(period / limit) */
    int64_t tau_ns;         /* burst * T */
} an_gcra_policy;

/* Fills p.  Fails with AN_ERR_INVALID_ARG when limit, period or burst is not
 * positive, or when burst * T does not fit in 63 bits. */
an_status an_gcra_policy_init(an_gcra_policy *p, int64_t limit, int64_t period_ns, int64_t burst);

/* The outcome for one policy, or (from an_gcra_apply) the deciding one. */
typedef struct an_gcra_result {
    int allowed;
    int policy;             /* index of the deciding policy */
    int64_t remaining;      /* cost units still admissible now (after this request) */
    int64_t reset_after_ns; /* until the policy is back to its full burst */
    int64_t retry_after_ns; /* 0 when allowed; else until this cost would fit */
    int64_t new_tat;        /* the TAT after this request (unchanged when refused) */
} an_gcra_result;

/* The pure rule: the decision for a request of cost (0 <= cost <= burst) at
 * now (0 <= now <= 2^62), given the key's tat (0 or any time in the past =
 * fresh).  A tat more than tau ahead of now (the clock went back, or a foreign
 * value) counts as exactly tau ahead; the stores (HIT mode) then record it
 * as now + tau, so the lock-out lasts at most tau.  Never fails. */
void an_gcra_eval(const an_gcra_policy *p, int64_t tat, int64_t now, int64_t cost,
                  an_gcra_result *res);

/* The deciding result among n per-policy results: when any refuses, the refusal
 * with the longest retry_after; otherwise the least remaining (ties: the
 * longest reset_after).  Sets res->allowed to the conjunction. */
void an_gcra_combine(const an_gcra_result *each, int n, an_gcra_result *res);

typedef enum an_gcra_mode {
    AN_GCRA_HIT = 0,        /* admit and record when every policy allows */
    AN_GCRA_PEEK = 1        /* the same decision, recording nothing */
} an_gcra_mode;

typedef struct an_gcra_store an_gcra_store;

typedef struct an_gcra_stats {
    uint64_t keys;          /* entries now */
    uint64_t max_keys;
    uint64_t evicted_expired; /* evictions of keys without state */
    uint64_t evicted_live;    /* LRU evictions of keys with a future TAT */
    uint64_t bytes;         /* bytes held by entries and tables */
} an_gcra_stats;

/* Creates a store of at most max_keys (>= 1) entries; alloc may be NULL.
 * Fails with AN_ERR_INVALID_ARG, AN_ERR_THREADS (mutex) or an_nomem(alloc). */
an_status an_gcra_store_new(an_gcra_store **out, size_t max_keys, const an_allocator *alloc);
/* Frees the store and every entry; NULL is a no-op. */
void an_gcra_store_free(an_gcra_store *s);
/* A namespace id unique within this store (one per limiter), never 0. */
uint32_t an_gcra_store_namespace(an_gcra_store *s);

/* Decides a request of cost for key under the npol policies (1..MAX), all at
 * one instant: the request is admitted only if every policy admits it, and only
 * then (mode HIT) are the TATs recorded.  res is the deciding policy's result.
 * Thread-safe.  Fails with AN_ERR_INVALID_ARG (npol, key length, cost < 0) or
 * an_nomem() when a new entry cannot be allocated. */
an_status an_gcra_apply(an_gcra_store *s, uint32_t ns, const void *key, size_t keylen,
                        const an_gcra_policy *pol, int npol, int64_t cost, int64_t now,
                        an_gcra_mode mode, an_gcra_result *res);

/* Forgets key in namespace ns; returns 1 when it was present. */
int an_gcra_forget(an_gcra_store *s, uint32_t ns, const void *key, size_t keylen);
/* Removes every entry whose TATs are all <= now; returns how many. */
size_t an_gcra_purge(an_gcra_store *s, int64_t now);
/* Removes every entry. */
void an_gcra_clear(an_gcra_store *s);
void an_gcra_store_stats(an_gcra_store *s, an_gcra_stats *out);

/* ---- stripes in shared memory (SharedStore) ----------------------------------
 *
 * For TATs shared by the processes of a host, a table lives in words of a
 * shared mapping (the arena): a fixed number of stripes, each
 *
 *     [lock][tag, tat[npol]] x AN_GCRA_STRIPE_KEYS
 *
 * where tag is a nonzero 64-bit hash of the key (0 = empty).  The lock word is
 * 0 or the holder's pid; a waiter that spins too long checks whether the holder
 * still exists and takes the lock over from a dead one, so a worker killed in
 * the critical section (a few dozen instructions) cannot wedge the others.  A
 * key lives only in its stripe: when all its entries hold live keys, the one
 * whose state ends first is replaced (counted by the caller). */
#define AN_GCRA_STRIPE_KEYS 8

/* Words of one stripe for npol policies. */
static inline size_t
an_gcra_stripe_words(int npol)
{
    return 1 + (size_t)AN_GCRA_STRIPE_KEYS * (1 + (size_t)npol);
}

/* Decides for tag in stripe exactly as an_gcra_apply does in a store.  me is
 * the caller's pid (nonzero).  *evicted is set to 1 when a key with state was
 * replaced.  Fails with AN_ERR_INVALID_ARG like an_gcra_apply. */
an_status an_gcra_stripe_apply(uint64_t *stripe, uint64_t me, uint64_t tag,
                               const an_gcra_policy *pol, int npol, int64_t cost, int64_t now,
                               an_gcra_mode mode, an_gcra_result *res, int *evicted);
/* Forgets tag in stripe; returns 1 when it was present. */
int an_gcra_stripe_forget(uint64_t *stripe, uint64_t me, uint64_t tag, int npol);
/* The 64-bit hash the shared tables use (seeded; stable across processes). */
uint64_t an_gcra_hash(uint64_t seed, const void *key, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* AN_GCRA_H */
