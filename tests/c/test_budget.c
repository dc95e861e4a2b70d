/*
 * test_budget.c - memory budgets, the budget-charging allocator and the
 * /proc + cgroup readers (csrc/core/memory/budget.c, meminfo.c).
 *
 * Built twice by the Makefile: under ASan+UBSan (arithmetic, refcounts,
 * allocation failures, fixture trees) and under TSan (several threads
 * charging and crediting one budget chain at once).
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "memory/an_budget.h"
#include "check.h"

#define FIX "../fixtures/cgroup/"

static void
test_arithmetic(void)
{
    current = "arithmetic";
    an_budget *b;
    an_refusal r;
    CHECK_ST(an_budget_new(&b, 1000, NULL, NULL), AN_OK);
    CHECK(an_budget_limit(b) == 1000);
    CHECK_ST(an_budget_charge(b, 600, &r), AN_OK);
    CHECK_ST(an_budget_charge(b, 400, &r), AN_OK); /* exactly the limit */
    CHECK(an_budget_in_use(b) == 1000);
    CHECK_ST(an_budget_charge(b, 1, &r), AN_ERR_MEMORY_LIMIT);
    CHECK(r.requested == 1 && r.limit == 1000 && r.in_use == 1000 && r.depth == 0);
    CHECK(an_budget_in_use(b) == 1000); /* refused: nothing charged */
    an_budget_credit(b, 600);
    CHECK(an_budget_in_use(b) == 400);
    CHECK(an_budget_peak(b) == 1000);
    CHECK_ST(an_budget_check(b, 600, &r), AN_OK);
    CHECK_ST(an_budget_check(b, 601, &r), AN_ERR_MEMORY_LIMIT);
    CHECK(an_budget_in_use(b) == 400); /* check charges nothing */
    /* overflow-sized requests are refused, not wrapped */
    CHECK_ST(an_budget_charge(b, UINT64_MAX, &r), AN_ERR_MEMORY_LIMIT);
    CHECK_ST(an_budget_charge(b, UINT64_MAX - 100, NULL), AN_ERR_MEMORY_LIMIT);
    an_refusal last;
    CHECK(an_budget_refusals(b, &last) == 3);
    CHECK(last.requested == UINT64_MAX - 100 && last.limit == 1000 && last.in_use == 400);
    an_budget_credit(b, 400);
    CHECK(an_budget_in_use(b) == 0);
    an_budget_decref(b);

    /* unlimited budgets only count */
    CHECK_ST(an_budget_new(&b, 0, NULL, NULL), AN_OK);
    CHECK_ST(an_budget_charge(b, (uint64_t)1 << 40, NULL), AN_OK);
    CHECK(an_budget_peak(b) == (uint64_t)1 << 40);
    CHECK(an_budget_refusals(b, NULL) == 0);
    an_budget_credit(b, (uint64_t)1 << 40);
    an_budget_decref(b);
}

static void
test_nesting(void)
{
    current = "nesting";
    an_budget *outer, *inner, *innermost;
    an_refusal r;
    CHECK_ST(an_budget_new(&outer, 1000, NULL, NULL), AN_OK);
    CHECK_ST(an_budget_new(&inner, 5000, outer, NULL), AN_OK); /* larger than outer */
    CHECK_ST(an_budget_new(&innermost, 0, inner, NULL), AN_OK);
    CHECK(an_budget_parent(inner) == outer);
    CHECK_ST(an_budget_charge(outer, 300, NULL), AN_OK);
    CHECK_ST(an_budget_charge(innermost, 700, NULL), AN_OK);
    CHECK(an_budget_in_use(outer) == 1000 && an_budget_in_use(inner) == 700 &&
          an_budget_in_use(innermost) == 700);
    /* the outer limit holds the inner scope: all or nothing */
    CHECK_ST(an_budget_charge(innermost, 1, &r), AN_ERR_MEMORY_LIMIT);
    CHECK(r.limit == 1000 && r.in_use == 1000 && r.depth == 2);
    CHECK(an_budget_in_use(innermost) == 700 && an_budget_in_use(inner) == 700);
    CHECK_ST(an_budget_check(innermost, 1, &r), AN_ERR_MEMORY_LIMIT);
    CHECK(r.depth == 2);
    /* an inner limit tighter than the outer one */
    an_budget *tight;
    CHECK_ST(an_budget_new(&tight, 100, NULL, NULL), AN_OK);
    an_budget *child;
    CHECK_ST(an_budget_new(&child, 50, tight, NULL), AN_OK);
    CHECK_ST(an_budget_charge(child, 60, &r), AN_ERR_MEMORY_LIMIT);
    CHECK(r.limit == 50 && r.depth == 0 && an_budget_in_use(tight) == 0);
    an_budget_decref(child);
    an_budget_decref(tight);

    /* a scope's budget outlives the scope while charged memory exists:
     * dropping the parent's own reference first must keep it alive. */
    an_budget_decref(outer);
    an_budget_decref(inner);
    an_budget_credit(innermost, 700);
    CHECK(an_budget_in_use(innermost) == 0);
    CHECK(an_budget_in_use(an_budget_parent(an_budget_parent(innermost))) == 300);
    an_budget_decref(innermost); /* frees all three (LeakSanitizer checks) */
}

static void
test_alloc_failure(void)
{
    current = "alloc_failure";
    fault_ctx f = {1, 0, 0};
    an_allocator a = {fault_malloc, fault_free, &f, AN_ERR_NOMEM, NULL, NULL};
    an_budget *b = (an_budget *)1;
    CHECK_ST(an_budget_new(&b, 10, NULL, &a), AN_ERR_NOMEM);
    CHECK(b == NULL);
    f.fail_at = 0;
    CHECK_ST(an_budget_new(&b, 10, NULL, &a), AN_OK);
    CHECK(f.live == 1);
    an_budget_decref(b);
    CHECK(f.live == 0);
}

static void
test_guard(void)
{
    current = "guard";
    an_budget *b;
    an_guard g;
    CHECK_ST(an_budget_new(&b, 10000, NULL, NULL), AN_OK);
    an_guard_init(&g, NULL, 0);
    CHECK(an_guard_allocator(&g) == NULL); /* nothing to account: plain malloc */
    an_guard_release(&g);

    an_guard_init(&g, b, 0);
    const an_allocator *a = an_guard_allocator(&g);
    CHECK(a != NULL && an_guard_of(a) == &g);
    CHECK(an_guard_of(NULL) == NULL);
    void *p = an_malloc(a, 4000);
    void *q = an_calloc(a, 10, 300);
    CHECK(p != NULL && q != NULL);
    CHECK(an_budget_in_use(b) == 7000);
    CHECK(an_malloc(a, 3001) == NULL);
    CHECK(an_nomem(a) == AN_ERR_MEMORY_LIMIT);
    CHECK(g.refused_status == AN_ERR_MEMORY_LIMIT && g.refused_requested == 3001 &&
          g.refused_limit == 10000 && g.refused_in_use == 7000);
    CHECK(an_reserve(a, 3000) == 1);
    CHECK(an_budget_in_use(b) == 10000);
    CHECK(an_reserve(a, 1) == 0);
    an_release(a, 3000);
    an_free(a, p);
    an_free(a, q);
    CHECK(an_budget_in_use(b) == 0); /* frees credit exactly what was charged */
    CHECK(an_calloc(a, SIZE_MAX / 2, 4) == NULL); /* overflow */
    CHECK(an_malloc(a, SIZE_MAX - 4) == NULL);
    an_guard_release(&g);
    an_budget_decref(b); /* the guard held its own reference */

    /* reserve without a reserve_fn always grants */
    CHECK(an_reserve(NULL, 123) == 1);
    an_release(NULL, 123);

    /* process limit: small requests are never checked, large ones against RSS */
    an_refusal r;
    CHECK(an_process_fits(1, "", 1000, &r) == 1);
    CHECK(an_process_fits(1, "", 2u << 20, &r) == 0);
    CHECK(r.limit == 1 && r.requested == (2u << 20) && r.in_use > 0);
    CHECK(an_process_fits((uint64_t)1 << 50, "", 2u << 20, &r) == 1);
    /* a fixture RSS of 25000 pages */
    uint64_t rss;
    an_error err;
    CHECK_ST(an_read_rss(FIX "v2", &rss, &err), AN_OK);
    CHECK(rss == 25000ull * (uint64_t)sysconf(_SC_PAGESIZE));
    CHECK(an_process_fits(rss + (2u << 20), FIX "v2", 2u << 20, &r) == 1);
    CHECK(an_process_fits(rss + (2u << 20) - 1, FIX "v2", 2u << 20, &r) == 0);
    CHECK(r.in_use == rss);
    an_guard_init(&g, NULL, rss + (3u << 20));
    g.proc_root = FIX "v2";
    a = an_guard_allocator(&g);
    CHECK(a != NULL);
    p = an_malloc(a, 2u << 20);
    CHECK(p != NULL);
    CHECK(an_malloc(a, 4u << 20) == NULL);
    CHECK(g.refused_status == AN_ERR_PROCESS_MEMORY_LIMIT && g.refused_in_use == rss);
    an_free(a, p);
    an_guard_release(&g);
}

typedef struct {
    an_budget *b;
    long refused;
} worker_arg;

static void *
worker(void *arg)
{
    worker_arg *w = arg;
    for (int i = 0; i < 20000; i++) {
        uint64_t n = (uint64_t)(i % 13) + 1;
        if (an_budget_charge(w->b, n, NULL) == AN_OK)
            an_budget_credit(w->b, n);
        else
            w->refused++;
    }
    return NULL;
}

static void
test_concurrent(void)
{
    current = "concurrent";
    an_budget *outer, *inner;
    CHECK_ST(an_budget_new(&outer, 40, NULL, NULL), AN_OK);
    CHECK_ST(an_budget_new(&inner, 0, outer, NULL), AN_OK);
    pthread_t t[4];
    worker_arg w[4];
    for (int i = 0; i < 4; i++) {
        w[i].b = (i % 2) ? inner : outer;
        w[i].refused = 0;
        CHECK(pthread_create(&t[i], NULL, worker, &w[i]) == 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(an_budget_in_use(outer) == 0 && an_budget_in_use(inner) == 0);
    CHECK(an_budget_peak(outer) <= 40); /* the limit was never passed */
    an_budget_decref(inner);
    an_budget_decref(outer);
}

static void
test_cgroup_values(void)
{
    current = "cgroup_values";
    uint64_t v;
    CHECK(an_parse_cgroup_value("max\n", &v) && v == UINT64_MAX);
    CHECK(an_parse_cgroup_value("536870912\n", &v) && v == 536870912u);
    CHECK(an_parse_cgroup_value("9223372036854771712\n", &v) && v == UINT64_MAX);
    CHECK(an_parse_cgroup_value("0", &v) && v == 0);
    CHECK(!an_parse_cgroup_value("", &v));
    CHECK(!an_parse_cgroup_value("-1\n", &v));
    CHECK(!an_parse_cgroup_value("12 34\n", &v));
    CHECK(!an_parse_cgroup_value("lots\n", &v));
    CHECK(!an_parse_cgroup_value("99999999999999999999999\n", &v)); /* > 2^64 */
    CHECK(!an_parse_cgroup_value("maxx", &v));
}

static void
test_proc_and_cgroup(void)
{
    current = "proc_and_cgroup";
    an_procmem m;
    an_error err;
    an_cgroup cg;
    CHECK_ST(an_read_procmem("", &m, &err), AN_OK);
    CHECK(m.rss > 0 && m.peak_rss >= m.rss / 2 && m.total > m.available && m.available > 0);
    CHECK_ST(an_read_procmem(FIX "v2", &m, &err), AN_OK);
    CHECK(m.rss == 100000u * 1024 && m.peak_rss == 123456u * 1024 && m.total == 8000000ull * 1024 &&
          m.available == 6000000ull * 1024);
    CHECK_ST(an_read_procmem(FIX "bad_proc", &m, &err), AN_ERR_SYSTEM);
    CHECK(strstr(err.detail, "malformed") != NULL);
    CHECK_ST(an_read_procmem(FIX "does-not-exist", &m, &err), AN_ERR_SYSTEM);
    uint64_t rss;
    CHECK_ST(an_read_rss(FIX "bad_proc", &rss, &err), AN_ERR_SYSTEM);

    an_read_cgroup(FIX "v2", &cg);
    CHECK(cg.version == 2 && cg.known && cg.limit == 536870912u && cg.usage == 104857600u);
    CHECK(strcmp(cg.path, "/sys/fs/cgroup/user.slice/app.scope") == 0);
    an_read_cgroup(FIX "v2_max", &cg);
    CHECK(cg.version == 2 && cg.known && cg.limit == UINT64_MAX && cg.usage == 52428800u);
    an_read_cgroup(FIX "v1", &cg);
    CHECK(cg.version == 1 && cg.known && cg.limit == 268435456u && cg.usage == 134217728u);
    CHECK(strcmp(cg.path, "/sys/fs/cgroup/memory") == 0);
    an_read_cgroup(FIX "v1_unlimited", &cg);
    CHECK(cg.version == 1 && cg.known && cg.limit == UINT64_MAX);
    an_read_cgroup(FIX "malformed", &cg);
    CHECK(cg.version == 2 && !cg.known && strstr(cg.problem, "malformed") != NULL);
    an_read_cgroup(FIX "fallback", &cg);
    CHECK(cg.version == 2 && cg.known && cg.limit == 1073741824u && cg.usage == 10485760u);
    an_read_cgroup(FIX "none", &cg);
    CHECK(cg.version == 0 && !cg.known);
    an_read_cgroup(FIX "does-not-exist", &cg);
    CHECK(cg.version == 0 && !cg.known);
    an_read_cgroup("", &cg); /* the real system: whatever it is, no crash */
    CHECK(cg.version >= 0 && cg.version <= 2);
}

int
main(void)
{
    test_arithmetic();
    test_nesting();
    test_alloc_failure();
    test_guard();
    test_concurrent();
    test_cgroup_values();
    test_proc_and_cgroup();
    printf("test_budget: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
