/*
 * gcra.c - GCRA decisions and the bounded, sharded store of TATs (an_gcra.h).
 *
 * The store is a fixed number of shards, each a chained hash table with an
 * intrusive LRU list under its own mutex.  A decision touches one shard, one
 * bucket and one entry, so it is O(1) and takes one uncontended lock; threads
 * hammering different keys rarely meet.  Capacity is split across the shards
 * up front and the bucket arrays are allocated once, so the memory held is
 * bounded by max_keys whatever the number of distinct clients: inserting into
 * a full shard first looks at the coldest few entries for one whose TATs all
 * lie in the past (forgetting it changes no future decision), and only then
 * drops the least recently used entry (counted as evicted_live).
 *
 * The hash is seeded per store, so bucket placement is not predictable from
 * the key alone; a chain is still bounded by the shard's capacity.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "an_gcra.h"

/* How many of the coldest entries a full shard inspects for a stateless one. */
#define EVICT_SCAN 16
#define NSHARDS_MAX 16

/* ---- the rule -------------------------------------------------------------- */

an_status
an_gcra_policy_init(an_gcra_policy *p, int64_t limit, int64_t period_ns, int64_t burst)
{
    if (limit <= 0 || period_ns <= 0 || burst <= 0)
        return AN_ERR_INVALID_ARG;
    int64_t t = period_ns / limit + (period_ns % limit != 0);
    /* tau = burst * T must leave room for now + tau + T within int64. */
    if (t > ((int64_t)1 << 62) / burst)
        return AN_ERR_INVALID_ARG;
    p->limit = limit;
    p->period_ns = period_ns;
    p->burst = burst;
    p->interval_ns = t;
    p->tau_ns = burst * t;
    return AN_OK;
}

void
an_gcra_eval(const an_gcra_policy *p, int64_t tat, int64_t now, int64_t cost,
             an_gcra_result *res)
{
    /* Time already booked.  It is never more than tau while the clock moves
     * forward; a TAT further ahead comes from a clock that went back (an
     * injected clock, a reboot under a persistent SharedStore file) or from a
     * foreign word, and counts as one full burst: no overflow below.  The
     * stores pull such a TAT back (repair_tat), so the lock-out lasts tau. */
    int64_t pending = 0;
    if (tat > now) {
        uint64_t ahead = (uint64_t)tat - (uint64_t)now;
        pending = ahead > (uint64_t)p->tau_ns ? p->tau_ns : (int64_t)ahead;
    }
    int64_t need = cost * p->interval_ns; /* <= tau: cost <= burst */
    res->policy = 0;
    if (pending <= p->tau_ns - need) {
        int64_t diff = pending + need;
        res->allowed = 1;
        res->remaining = (p->tau_ns - diff) / p->interval_ns;
        res->reset_after_ns = diff;
        res->retry_after_ns = 0;
        res->new_tat = now + diff;
    } else {
        res->allowed = 0;
        res->remaining = (p->tau_ns - pending) / p->interval_ns;
        res->reset_after_ns = pending;
        res->retry_after_ns = pending - (p->tau_ns - need);
        res->new_tat = tat;
    }
}

/* tat, or now + tau when tat is further ahead (see an_gcra_eval). */
static inline int64_t
repair_tat(const an_gcra_policy *p, int64_t tat, int64_t now)
{
    return tat > now && (uint64_t)tat - (uint64_t)now > (uint64_t)p->tau_ns ? now + p->tau_ns
                                                                           : tat;
}

void
an_gcra_combine(const an_gcra_result *each, int n, an_gcra_result *res)
{
    int best = 0, allowed = 1;
    for (int i = 0; i < n; i++)
        if (!each[i].allowed)
            allowed = 0;
    for (int i = 1; i < n; i++) {
        const an_gcra_result *a = &each[i], *b = &each[best];
        int better;
        if (!allowed)
            better = !a->allowed && (b->allowed || a->retry_after_ns > b->retry_after_ns);
        else
            better = a->remaining < b->remaining ||
                     (a->remaining == b->remaining && a->reset_after_ns > b->reset_after_ns);
        if (better)
            best = i;
    }
    *res = each[best];
    res->policy = best;
    res->allowed = allowed;
}

/* ---- the store ------------------------------------------------------------- */

/* One key.  tat[] holds ntat TATs followed by keylen key bytes.
 * Invariant: expires == max(tat[0..ntat)). */
typedef struct gentry {
    struct gentry *hnext;
    struct gentry *prev, *next; /* LRU: head is the most recently used */
    uint64_t hash;
    int64_t expires;
    uint32_t ns;
    uint16_t keylen;
    uint16_t ntat;
    int64_t tat[];
} gentry;

/* Invariant: count <= cap; every entry is in exactly one bucket chain and in
 * the LRU list; bytes counts the entries' allocations. */
typedef struct shard {
    pthread_mutex_t mu;
    gentry **buckets;
    size_t mask;
    gentry *head, *tail;
    size_t count, cap, bytes;
    uint64_t evicted_expired, evicted_live;
    char pad[64];               /* keeps hot shards off each other's cache lines */
} shard;

struct an_gcra_store {
    const an_allocator *alloc;
    uint64_t seed;
    size_t max_keys;
    int nshards;
    int locks_ready;
    _Atomic uint32_t next_ns;
    shard shards[];
};

static inline uint64_t
mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static inline uint64_t
rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t
key_hash(uint64_t seed, uint32_t ns, const uint8_t *key, size_t len)
{
    uint64_t h = seed ^ ((uint64_t)ns << 32) ^ (uint64_t)len;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, key + i, 8);
        h = rotl(h ^ w, 29) * 0x9E3779B97F4A7C15ULL;
    }
    if (i < len) {
        uint64_t w = 0;
        memcpy(&w, key + i, len - i);
        h = rotl(h ^ w, 29) * 0x9E3779B97F4A7C15ULL;
    }
    return mix64(h);
}

static inline const uint8_t *
entry_key(const gentry *e)
{
    return (const uint8_t *)&e->tat[e->ntat];
}

static inline size_t
entry_size(int ntat, size_t keylen)
{
    return sizeof(gentry) + (size_t)ntat * sizeof(int64_t) + keylen;
}

static size_t
pow2_at_least(size_t n)
{
    size_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

an_status
an_gcra_store_new(an_gcra_store **out, size_t max_keys, const an_allocator *alloc)
{
    *out = NULL;
    if (max_keys == 0 || max_keys > ((size_t)1 << 32))
        return AN_ERR_INVALID_ARG;
    int nshards = max_keys >= 1024 ? NSHARDS_MAX : 1;
    size_t size = sizeof(an_gcra_store) + (size_t)nshards * sizeof(shard);
    an_gcra_store *s = an_calloc(alloc, 1, size);
    if (s == NULL)
        return an_nomem(alloc);
    s->alloc = alloc;
    s->max_keys = max_keys;
    s->nshards = nshards;
    atomic_init(&s->next_ns, 1);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s->seed = mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)(uintptr_t)s);
    an_status st = AN_OK;
    for (int i = 0; i < nshards; i++) {
        shard *sh = &s->shards[i];
        sh->cap = max_keys / (size_t)nshards + ((size_t)i < max_keys % (size_t)nshards);
        size_t nb = pow2_at_least(sh->cap < 8 ? 8 : sh->cap);
        sh->buckets = an_calloc(alloc, nb, sizeof(gentry *));
        if (sh->buckets == NULL) {
            st = an_nomem(alloc);
            break;
        }
        sh->mask = nb - 1;
    }
    if (st == AN_OK) {
        for (int i = 0; i < nshards; i++) {
            if (pthread_mutex_init(&s->shards[i].mu, NULL) != 0) {
                for (int j = 0; j < i; j++)
                    pthread_mutex_destroy(&s->shards[j].mu);
                st = AN_ERR_THREADS;
                break;
            }
        }
        s->locks_ready = st == AN_OK;
    }
    if (st != AN_OK) {
        an_gcra_store_free(s);
        return st;
    }
    *out = s;
    return AN_OK;
}

static void
shard_clear(const an_allocator *alloc, shard *sh)
{
    gentry *e = sh->head;
    while (e != NULL) {
        gentry *next = e->next;
        an_free(alloc, e);
        e = next;
    }
    if (sh->buckets != NULL)
        memset(sh->buckets, 0, (sh->mask + 1) * sizeof(gentry *));
    sh->head = sh->tail = NULL;
    sh->count = 0;
    sh->bytes = 0;
}

void
an_gcra_store_free(an_gcra_store *s)
{
    if (s == NULL)
        return;
    for (int i = 0; i < s->nshards; i++) {
        shard *sh = &s->shards[i];
        shard_clear(s->alloc, sh);
        an_free(s->alloc, sh->buckets);
        if (s->locks_ready)
            pthread_mutex_destroy(&sh->mu);
    }
    an_free(s->alloc, s);
}

uint32_t
an_gcra_store_namespace(an_gcra_store *s)
{
    uint32_t ns = atomic_fetch_add(&s->next_ns, 1);
    return ns == 0 ? atomic_fetch_add(&s->next_ns, 1) : ns;
}

static inline shard *
shard_for(an_gcra_store *s, uint64_t h)
{
    return &s->shards[s->nshards == 1 ? 0 : (int)(h >> 60)];
}

static inline gentry *
find(shard *sh, uint64_t h, uint32_t ns, const void *key, size_t keylen)
{
    for (gentry *e = sh->buckets[h & sh->mask]; e != NULL; e = e->hnext)
        if (e->hash == h && e->ns == ns && e->keylen == keylen &&
            memcmp(entry_key(e), key, keylen) == 0)
            return e;
    return NULL;
}

static inline void
lru_unlink(shard *sh, gentry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        sh->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        sh->tail = e->prev;
}

static inline void
lru_push_front(shard *sh, gentry *e)
{
    e->prev = NULL;
    e->next = sh->head;
    if (sh->head != NULL)
        sh->head->prev = e;
    sh->head = e;
    if (sh->tail == NULL)
        sh->tail = e;
}

/* Unlinks e from its bucket and the LRU list and frees it. */
static void
remove_entry(const an_allocator *alloc, shard *sh, gentry *e)
{
    gentry **pp = &sh->buckets[e->hash & sh->mask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(sh, e);
    sh->count--;
    sh->bytes -= entry_size(e->ntat, e->keylen);
    an_free(alloc, e);
}

/* Makes room for one entry in a full shard. */
static void
evict_one(const an_allocator *alloc, shard *sh, int64_t now)
{
    gentry *e = sh->tail;
    for (int i = 0; e != NULL && i < EVICT_SCAN; i++, e = e->prev) {
        if (e->expires <= now) {
            sh->evicted_expired++;
            remove_entry(alloc, sh, e);
            return;
        }
    }
    sh->evicted_live++;
    remove_entry(alloc, sh, sh->tail);
}

an_status
an_gcra_apply(an_gcra_store *s, uint32_t ns, const void *key, size_t keylen,
              const an_gcra_policy *pol, int npol, int64_t cost, int64_t now,
              an_gcra_mode mode, an_gcra_result *res)
{
    if (npol < 1 || npol > AN_GCRA_MAX_POLICIES || keylen > AN_GCRA_MAX_KEY || cost < 0)
        return AN_ERR_INVALID_ARG;
    for (int i = 0; i < npol; i++)
        if (cost > pol[i].burst)
            return AN_ERR_INVALID_ARG;
    uint64_t h = key_hash(s->seed, ns, key, keylen);
    shard *sh = shard_for(s, h);
    an_gcra_result each[AN_GCRA_MAX_POLICIES];
    an_status st = AN_OK;

    pthread_mutex_lock(&sh->mu);
    gentry *e = find(sh, h, ns, key, keylen);
    if (e != NULL && e->ntat != npol) {
        remove_entry(s->alloc, sh, e); /* another policy set under this namespace */
        e = NULL;
    }
    for (int i = 0; i < npol; i++)
        an_gcra_eval(&pol[i], e != NULL ? e->tat[i] : 0, now, cost, &each[i]);
    an_gcra_combine(each, npol, res);
    if (mode == AN_GCRA_HIT && e != NULL && !(res->allowed && cost > 0)) {
        int64_t expires = 0;
        for (int i = 0; i < npol; i++) {
            e->tat[i] = repair_tat(&pol[i], e->tat[i], now);
            if (e->tat[i] > expires)
                expires = e->tat[i];
        }
        e->expires = expires;
    }
    if (mode == AN_GCRA_HIT && res->allowed && cost > 0) {
        if (e == NULL) {
            if (sh->count >= sh->cap)
                evict_one(s->alloc, sh, now);
            size_t size = entry_size(npol, keylen);
            e = an_malloc(s->alloc, size);
            if (e == NULL) {
                st = an_nomem(s->alloc);
                goto done;
            }
            e->hash = h;
            e->ns = ns;
            e->keylen = (uint16_t)keylen;
            e->ntat = (uint16_t)npol;
            memcpy((uint8_t *)&e->tat[npol], key, keylen);
            gentry **b = &sh->buckets[h & sh->mask];
            e->hnext = *b;
            *b = e;
            lru_push_front(sh, e);
            sh->count++;
            sh->bytes += size;
        } else if (sh->head != e) {
            lru_unlink(sh, e);
            lru_push_front(sh, e);
        }
        int64_t expires = 0;
        for (int i = 0; i < npol; i++) {
            e->tat[i] = each[i].new_tat;
            if (each[i].new_tat > expires)
                expires = each[i].new_tat;
        }
        e->expires = expires;
    }
done:
    pthread_mutex_unlock(&sh->mu);
    return st;
}

int
an_gcra_forget(an_gcra_store *s, uint32_t ns, const void *key, size_t keylen)
{
    if (keylen > AN_GCRA_MAX_KEY)
        return 0;
    uint64_t h = key_hash(s->seed, ns, key, keylen);
    shard *sh = shard_for(s, h);
    pthread_mutex_lock(&sh->mu);
    gentry *e = find(sh, h, ns, key, keylen);
    if (e != NULL)
        remove_entry(s->alloc, sh, e);
    pthread_mutex_unlock(&sh->mu);
    return e != NULL;
}

size_t
an_gcra_purge(an_gcra_store *s, int64_t now)
{
    size_t n = 0;
    for (int i = 0; i < s->nshards; i++) {
        shard *sh = &s->shards[i];
        pthread_mutex_lock(&sh->mu);
        gentry *e = sh->tail;
        while (e != NULL) {
            gentry *prev = e->prev;
            if (e->expires <= now) {
                remove_entry(s->alloc, sh, e);
                n++;
            }
            e = prev;
        }
        pthread_mutex_unlock(&sh->mu);
    }
    return n;
}

void
an_gcra_clear(an_gcra_store *s)
{
    for (int i = 0; i < s->nshards; i++) {
        pthread_mutex_lock(&s->shards[i].mu);
        shard_clear(s->alloc, &s->shards[i]);
        pthread_mutex_unlock(&s->shards[i].mu);
    }
}

void
an_gcra_store_stats(an_gcra_store *s, an_gcra_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->max_keys = s->max_keys;
    out->bytes = sizeof(an_gcra_store) + (uint64_t)s->nshards * sizeof(shard);
    for (int i = 0; i < s->nshards; i++) {
        shard *sh = &s->shards[i];
        pthread_mutex_lock(&sh->mu);
        out->keys += sh->count;
        out->evicted_expired += sh->evicted_expired;
        out->evicted_live += sh->evicted_live;
        out->bytes += sh->bytes + (sh->mask + 1) * sizeof(gentry *);
        pthread_mutex_unlock(&sh->mu);
    }
}

/* ---- stripes in shared memory ------------------------------------------------ */

uint64_t
an_gcra_hash(uint64_t seed, const void *key, size_t len)
{
    return key_hash(seed, 0, key, len);
}

static inline uint64_t
wload(const uint64_t *w)
{
    return __atomic_load_n(w, __ATOMIC_RELAXED);
}

static inline void
wstore(uint64_t *w, uint64_t v)
{
    __atomic_store_n(w, v, __ATOMIC_RELAXED);
}

/* Spins for the stripe lock; takes it over from a holder that no longer exists. */
static void
stripe_lock(uint64_t *lock, uint64_t me)
{
    for (unsigned spins = 0;; spins++) {
        uint64_t expected = 0;
        if (__atomic_compare_exchange_n(lock, &expected, me, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            return;
        if (spins < 100)
            continue;
        if (spins % 1000 == 999 && expected != me && kill((pid_t)expected, 0) != 0 &&
            errno == ESRCH) {
            /* the holder died inside the critical section: take its lock over */
            if (__atomic_compare_exchange_n(lock, &expected, me, 0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return;
        }
        sched_yield();
    }
}

static void
stripe_unlock(uint64_t *lock)
{
    __atomic_store_n(lock, 0, __ATOMIC_RELEASE);
}

static inline uint64_t *
stripe_entry(uint64_t *stripe, int npol, int i)
{
    return stripe + 1 + (size_t)i * (1 + (size_t)npol);
}

an_status
an_gcra_stripe_apply(uint64_t *stripe, uint64_t me, uint64_t tag, const an_gcra_policy *pol,
                     int npol, int64_t cost, int64_t now, an_gcra_mode mode, an_gcra_result *res,
                     int *evicted)
{
    *evicted = 0;
    if (npol < 1 || npol > AN_GCRA_MAX_POLICIES || cost < 0 || me == 0)
        return AN_ERR_INVALID_ARG;
    for (int i = 0; i < npol; i++)
        if (cost > pol[i].burst)
            return AN_ERR_INVALID_ARG;
    if (tag == 0)
        tag = 1;
    an_gcra_result each[AN_GCRA_MAX_POLICIES];
    stripe_lock(&stripe[0], me);
    uint64_t *e = NULL;
    for (int i = 0; i < AN_GCRA_STRIPE_KEYS && e == NULL; i++)
        if (wload(stripe_entry(stripe, npol, i)) == tag)
            e = stripe_entry(stripe, npol, i);
    for (int i = 0; i < npol; i++)
        an_gcra_eval(&pol[i], e != NULL ? (int64_t)wload(&e[1 + i]) : 0, now, cost, &each[i]);
    an_gcra_combine(each, npol, res);
    if (mode == AN_GCRA_HIT && e != NULL && !(res->allowed && cost > 0))
        for (int i = 0; i < npol; i++)
            wstore(&e[1 + i], (uint64_t)repair_tat(&pol[i], (int64_t)wload(&e[1 + i]), now));
    if (mode == AN_GCRA_HIT && res->allowed && cost > 0) {
        if (e == NULL) {
            /* an empty entry, else one without state, else the one ending first */
            int64_t best_end = INT64_MAX;
            for (int i = 0; i < AN_GCRA_STRIPE_KEYS; i++) {
                uint64_t *c = stripe_entry(stripe, npol, i);
                if (wload(c) == 0) {
                    e = c;
                    best_end = INT64_MIN;
                    break;
                }
                int64_t end = 0;
                for (int j = 0; j < npol; j++)
                    if ((int64_t)wload(&c[1 + j]) > end)
                        end = (int64_t)wload(&c[1 + j]);
                if (end < best_end) {
                    best_end = end;
                    e = c;
                }
            }
            *evicted = best_end != INT64_MIN && best_end > now;
            wstore(&e[0], tag);
        }
        for (int i = 0; i < npol; i++)
            wstore(&e[1 + i], (uint64_t)each[i].new_tat);
    }
    stripe_unlock(&stripe[0]);
    return AN_OK;
}

int
an_gcra_stripe_forget(uint64_t *stripe, uint64_t me, uint64_t tag, int npol)
{
    int found = 0;
    if (tag == 0)
        tag = 1;
    stripe_lock(&stripe[0], me);
    for (int i = 0; i < AN_GCRA_STRIPE_KEYS; i++) {
        uint64_t *e = stripe_entry(stripe, npol, i);
        if (wload(e) == tag) {
            for (int j = 0; j <= npol; j++)
                wstore(&e[j], 0);
            found = 1;
        }
    }
    stripe_unlock(&stripe[0]);
    return found;
}
