/*
 * budget.c - memory budget arithmetic and the budget-charging allocator.
 *
 * The counters are C11 atomics so that charges and credits from any thread
 * (decode workers, the thread that frees an array) need no lock.  A limited
 * budget is charged with a compare-and-swap loop rather than add-then-check:
 * two threads racing for the last bytes of a budget never both see a
 * transient overshoot, so a refusal always means the limit was really
 * reached.  A charge walks the parent chain and, if an ancestor refuses,
 * rolls back what it already charged below it (all or nothing).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "an_budget.h"

struct an_budget {
    _Atomic uint64_t in_use;
    _Atomic uint64_t peak;
    uint64_t limit;             /* 0 = unlimited; fixed at creation */
    an_budget *parent;          /* a reference, or NULL */
    atomic_long refs;
    const an_allocator *alloc;  /* what the budget itself was allocated with */
    /* the last refusal recorded by an_budget_charge */
    _Atomic uint64_t refusals;
    _Atomic uint64_t last_requested, last_limit, last_in_use;
    atomic_int last_depth;
};

an_status
an_budget_new(an_budget **out, uint64_t limit, an_budget *parent, const an_allocator *a)
{
    an_budget *b = an_calloc(a, 1, sizeof(*b));
    *out = NULL;
    if (b == NULL)
        return an_nomem(a);
    atomic_init(&b->in_use, 0);
    atomic_init(&b->peak, 0);
    atomic_init(&b->refs, 1);
    atomic_init(&b->refusals, 0);
    atomic_init(&b->last_requested, 0);
    atomic_init(&b->last_limit, 0);
    atomic_init(&b->last_in_use, 0);
    atomic_init(&b->last_depth, 0);
    b->limit = limit;
    b->alloc = a;
    if (parent != NULL) {
        an_budget_incref(parent);
        b->parent = parent;
    }
    *out = b;
    return AN_OK;
}

void
an_budget_incref(an_budget *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void
an_budget_decref(an_budget *b)
{
    while (b != NULL) {
        if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
            return;
        an_budget *parent = b->parent;
        an_free(b->alloc, b);
        b = parent; /* the child's reference to its parent goes with it */
    }
}

static void
raise_peak(an_budget *b, uint64_t now)
{
    uint64_t p = atomic_load_explicit(&b->peak, memory_order_relaxed);
    while (now > p &&
           !atomic_compare_exchange_weak_explicit(&b->peak, &p, now, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

/* Charges one budget; 0 with *in_use_seen set when its limit refuses. */
static int
charge_one(an_budget *b, uint64_t n, uint64_t *in_use_seen)
{
    uint64_t cur, next;
    if (b->limit == 0) {
        cur = atomic_fetch_add_explicit(&b->in_use, n, memory_order_relaxed);
        if (n > UINT64_MAX - cur) { /* cannot happen with real memory; stay sane */
            atomic_fetch_sub_explicit(&b->in_use, n, memory_order_relaxed);
            *in_use_seen = cur;
            return 0;
        }
        raise_peak(b, cur + n);
        return 1;
    }
    cur = atomic_load_explicit(&b->in_use, memory_order_relaxed);
    do {
        if (n > b->limit || cur > b->limit - n) {
            *in_use_seen = cur;
            return 0;
        }
        next = cur + n;
    } while (!atomic_compare_exchange_weak_explicit(&b->in_use, &cur, next,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed));
    raise_peak(b, next);
    return 1;
}

an_status
an_budget_charge(an_budget *b, uint64_t n, an_refusal *r)
{
    uint64_t seen = 0;
    int depth = 0;
    an_budget *x;
    for (x = b; x != NULL; x = x->parent, depth++)
        if (!charge_one(x, n, &seen))
            break;
    if (x == NULL)
        return AN_OK;
    /* Roll back the budgets below the one that refused. */
    for (an_budget *y = b; y != x; y = y->parent)
        atomic_fetch_sub_explicit(&y->in_use, n, memory_order_relaxed);
    atomic_store_explicit(&b->last_requested, n, memory_order_relaxed);
    atomic_store_explicit(&b->last_limit, x->limit, memory_order_relaxed);
    atomic_store_explicit(&b->last_in_use, seen, memory_order_relaxed);
    atomic_store_explicit(&b->last_depth, depth, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->refusals, 1, memory_order_release);
    if (r != NULL) {
        r->requested = n;
        r->limit = x->limit;
        r->in_use = seen;
        r->depth = depth;
    }
    return AN_ERR_MEMORY_LIMIT;
}

void
an_budget_credit(an_budget *b, uint64_t n)
{
    for (; b != NULL; b = b->parent)
        atomic_fetch_sub_explicit(&b->in_use, n, memory_order_relaxed);
}

an_status
an_budget_check(const an_budget *b, uint64_t n, an_refusal *r)
{
    int depth = 0;
    for (; b != NULL; b = b->parent, depth++) {
        uint64_t cur = atomic_load_explicit(&b->in_use, memory_order_relaxed);
        if (b->limit != 0 && (n > b->limit || cur > b->limit - n)) {
            if (r != NULL) {
                r->requested = n;
                r->limit = b->limit;
                r->in_use = cur;
                r->depth = depth;
            }
            return AN_ERR_MEMORY_LIMIT;
        }
    }
    return AN_OK;
}

uint64_t
an_budget_in_use(const an_budget *b)
{
    return atomic_load_explicit(&b->in_use, memory_order_relaxed);
}

uint64_t
an_budget_peak(const an_budget *b)
{
    return atomic_load_explicit(&b->peak, memory_order_relaxed);
}

uint64_t
an_budget_limit(const an_budget *b)
{
    return b->limit;
}

const an_budget *
an_budget_parent(const an_budget *b)
{
    return b->parent;
}

uint64_t
an_budget_refusals(const an_budget *b, an_refusal *last)
{
    uint64_t n = atomic_load_explicit(&b->refusals, memory_order_acquire);
    if (n != 0 && last != NULL) {
        last->requested = atomic_load_explicit(&b->last_requested, memory_order_relaxed);
        last->limit = atomic_load_explicit(&b->last_limit, memory_order_relaxed);
        last->in_use = atomic_load_explicit(&b->last_in_use, memory_order_relaxed);
        last->depth = atomic_load_explicit(&b->last_depth, memory_order_relaxed);
    }
    return n;
}

/* ---- an_guard ------------------------------------------------------------ */

/* Size header in front of every block: keeps malloc's 16-byte alignment. */
#define HDR 16

static void
guard_refuse(an_guard *g, an_status status, const an_refusal *r)
{
    __atomic_store_n(&g->refused_requested, r->requested, __ATOMIC_RELAXED);
    __atomic_store_n(&g->refused_limit, r->limit, __ATOMIC_RELAXED);
    __atomic_store_n(&g->refused_in_use, r->in_use, __ATOMIC_RELAXED);
    __atomic_store_n(&g->refused_status, (int)status, __ATOMIC_RELEASE);
}

/* Charges n bytes to the budget and checks the process limit. */
static int
guard_charge(an_guard *g, size_t n)
{
    an_refusal r;
    if (g->process_limit != 0 && !an_process_fits(g->process_limit, g->proc_root, n, &r)) {
        guard_refuse(g, AN_ERR_PROCESS_MEMORY_LIMIT, &r);
        return 0;
    }
    if (g->budget != NULL && an_budget_charge(g->budget, n, &r) != AN_OK) {
        guard_refuse(g, AN_ERR_MEMORY_LIMIT, &r);
        return 0;
    }
    return 1;
}

static void
guard_uncharge(an_guard *g, size_t n)
{
    if (g->budget != NULL)
        an_budget_credit(g->budget, n);
}

static void *
guard_malloc(void *ctx, size_t size)
{
    an_guard *g = ctx;
    if (size > SIZE_MAX - HDR || !guard_charge(g, size))
        return NULL;
    unsigned char *p = malloc(size + HDR);
    if (p == NULL) {
        guard_uncharge(g, size);
        return NULL;
    }
    memcpy(p, &size, sizeof(size));
    return p + HDR;
}

static void
guard_free(void *ctx, void *ptr)
{
    size_t size;
    unsigned char *p = (unsigned char *)ptr - HDR;
    memcpy(&size, p, sizeof(size));
    free(p);
    guard_uncharge(ctx, size);
}

static int
guard_reserve(void *ctx, size_t size)
{
    return guard_charge(ctx, size);
}

static void
guard_release_fn(void *ctx, size_t size)
{
    guard_uncharge(ctx, size);
}

void
an_guard_init(an_guard *g, an_budget *budget, uint64_t process_limit)
{
    memset(g, 0, sizeof(*g));
    g->alloc.malloc_fn = guard_malloc;
    g->alloc.free_fn = guard_free;
    g->alloc.ctx = g;
    g->alloc.fail_status = AN_ERR_MEMORY_LIMIT;
    g->alloc.reserve_fn = guard_reserve;
    g->alloc.release_fn = guard_release_fn;
    g->process_limit = process_limit;
    g->proc_root = "";
    if (budget != NULL) {
        an_budget_incref(budget);
        g->budget = budget;
    }
}

const an_allocator *
an_guard_allocator(an_guard *g)
{
    return (g->budget == NULL && g->process_limit == 0) ? NULL : &g->alloc;
}

void
an_guard_release(an_guard *g)
{
    if (g->budget != NULL)
        an_budget_decref(g->budget);
    g->budget = NULL;
}

an_guard *
an_guard_of(const an_allocator *a)
{
    return (a != NULL && a->malloc_fn == guard_malloc) ? (an_guard *)a->ctx : NULL;
}

int
an_process_fits(uint64_t process_limit, const char *proc_root, uint64_t n, an_refusal *r)
{
    uint64_t rss;
    an_error err;
    if (process_limit == 0 || n < AN_GUARD_THRESHOLD)
        return 1;
    if (an_read_rss(proc_root, &rss, &err) != AN_OK)
        return 1; /* no /proc: the guard cannot see, the budget still applies */
    if (n <= process_limit && rss <= process_limit - n)
        return 1;
    if (r != NULL) {
        r->requested = n;
        r->limit = process_limit;
        r->in_use = rss;
        r->depth = 0;
    }
    return 0;
}
