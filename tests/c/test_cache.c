/*
 * test_cache.c - unit tests of the cache store (csrc/core/cache/cache_store.c): LRU
 * order, bounds and victims, the deadline heap against a brute-force scan,
 * accounting, and the heap's allocation failure (fault_ctx).  Built with
 * ASan+UBSan; LeakSanitizer checks that the heap is released.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cache/an_cache.h"
#include "check.h"

#define N 500

static an_cnode nodes[N];

static size_t
index_of(const an_cnode *n)
{
    return (size_t)(n - nodes);
}

static void
test_lru_order(void)
{
    current = "lru order";
    an_store s;
    an_store_init(&s, 3, 0, NULL);
    for (int i = 0; i < 4; i++) {
        an_cnode_init(&nodes[i]);
        CHECK_ST(an_store_link(&s, &nodes[i], 10, INFINITY), AN_OK);
    }
    CHECK(s.count == 4 && s.bytes == 40);
    int by_bytes = -1;
    an_cnode *v = an_store_victim(&s, &by_bytes);
    CHECK(v == &nodes[0] && by_bytes == 0);
    an_store_touch(&s, &nodes[0]); /* 0 becomes MRU: 1 is now the LRU */
    v = an_store_victim(&s, &by_bytes);
    CHECK(v == &nodes[1]);
    an_store_unlink(&s, v);
    CHECK(an_store_victim(&s, &by_bytes) == NULL);
    CHECK(an_store_lru(&s) == &nodes[2] && an_store_mru(&s) == &nodes[0]);
    CHECK(s.count == 3 && s.bytes == 30 && !nodes[1].linked);
    /* linking twice is refused */
    CHECK_ST(an_store_link(&s, &nodes[0], 1, INFINITY), AN_ERR_INVALID_ARG);
    an_store_unlink(&s, &nodes[1]); /* unlinking an unlinked node is a no-op */
    CHECK(s.count == 3);
    an_store_release(&s);
}

static void
test_byte_bound(void)
{
    current = "byte bound";
    an_store s;
    an_store_init(&s, 0, 100, NULL);
    CHECK(an_store_fits(&s, 100) && !an_store_fits(&s, 101));
    for (int i = 0; i < 3; i++) {
        an_cnode_init(&nodes[i]);
        CHECK_ST(an_store_link(&s, &nodes[i], 40, INFINITY), AN_OK);
    }
    int by_bytes = 0;
    CHECK(an_store_victim(&s, &by_bytes) == &nodes[0] && by_bytes == 1);
    an_store_unlink(&s, &nodes[0]);
    CHECK(an_store_victim(&s, &by_bytes) == NULL && s.bytes == 80);
    an_store_release(&s);
}

/* The heap agrees with a brute-force minimum under random inserts, deadline
 * changes and removals. */
static void
test_deadline_heap(void)
{
    current = "deadline heap";
    an_store s;
    an_store_init(&s, 0, 0, NULL);
    srand(7);
    for (int i = 0; i < N; i++) {
        an_cnode_init(&nodes[i]);
        double dl = (rand() % 4 == 0) ? INFINITY : (double)(rand() % 1000);
        CHECK_ST(an_store_link(&s, &nodes[i], 1, dl), AN_OK);
    }
    for (int round = 0; round < 2000; round++) {
        size_t i = (size_t)rand() % N;
        int op = rand() % 3;
        if (op == 0 && nodes[i].linked) {
            an_store_unlink(&s, &nodes[i]);
        } else if (op == 1 && !nodes[i].linked) {
            CHECK_ST(an_store_link(&s, &nodes[i], 1, (double)(rand() % 1000)), AN_OK);
        } else if (nodes[i].linked) {
            double dl = (rand() % 5 == 0) ? INFINITY : (double)(rand() % 1000);
            CHECK_ST(an_store_set_deadline(&s, &nodes[i], dl), AN_OK);
        }
        double best = INFINITY;
        size_t linked = 0, in_heap = 0;
        for (int j = 0; j < N; j++) {
            if (!nodes[j].linked)
                continue;
            linked++;
            if (!isinf(nodes[j].deadline)) {
                in_heap++;
                if (nodes[j].deadline < best)
                    best = nodes[j].deadline;
            }
        }
        CHECK(s.count == linked && s.heap_len == in_heap && s.bytes == linked);
        if (an_store_next_deadline(&s) != best) {
            CHECK(0 && "heap minimum differs from the brute-force minimum");
            break;
        }
    }
    /* expiry pops in deadline order */
    double last = -INFINITY;
    an_cnode *n;
    size_t popped = 0;
    while ((n = an_store_expired(&s, 1e9)) != NULL) {
        CHECK(n->deadline >= last);
        last = n->deadline;
        an_store_unlink(&s, n);
        popped++;
    }
    CHECK(s.heap_len == 0 && popped > 0);
    CHECK(an_store_expired(&s, 1e9) == NULL && isinf(an_store_next_deadline(&s)));
    /* the never-expiring nodes remain */
    CHECK(s.count > 0);
    while ((n = an_store_lru(&s)) != NULL) {
        CHECK(isinf(n->deadline));
        an_store_unlink(&s, n);
    }
    CHECK(s.count == 0 && s.bytes == 0);
    an_store_release(&s);
}

static void
test_expired_boundary(void)
{
    current = "expired boundary";
    an_store s;
    an_store_init(&s, 0, 0, NULL);
    an_cnode_init(&nodes[0]);
    CHECK_ST(an_store_link(&s, &nodes[0], 5, 10.0), AN_OK);
    CHECK(an_store_expired(&s, 9.999) == NULL);
    CHECK(an_store_expired(&s, 10.0) == &nodes[0]); /* deadline reached = expired */
    CHECK_ST(an_store_set_deadline(&s, &nodes[0], INFINITY), AN_OK);
    CHECK(an_store_expired(&s, 1e300) == NULL && s.heap_len == 0);
    CHECK_ST(an_store_set_deadline(&s, &nodes[0], 3.0), AN_OK);
    CHECK(an_store_expired(&s, 3.0) == &nodes[0]);
    (void)index_of;
    an_store_release(&s);
}

/* Every allocation of the heap can fail: the store stays unchanged and usable. */
static void
test_allocation_failure(void)
{
    current = "allocation failure";
    for (long fail_at = 1; fail_at <= 4; fail_at++) {
        fault_ctx f = {fail_at, 0, 0};
        an_allocator a = {fault_malloc, fault_free, &f, AN_ERR_MEMORY_LIMIT, NULL, NULL};
        an_store s;
        an_store_init(&s, 0, 0, &a);
        int failed = 0;
        for (int i = 0; i < 100; i++) {
            an_cnode_init(&nodes[i]);
            an_status st = an_store_link(&s, &nodes[i], 1, (double)i);
            if (st != AN_OK) {
                CHECK(st == AN_ERR_MEMORY_LIMIT);
                CHECK(!nodes[i].linked);
                failed++;
                /* a node without deadline needs no heap: still fine */
                CHECK_ST(an_store_link(&s, &nodes[i], 1, INFINITY), AN_OK);
                /* and moving it into the heap later can fail or not, cleanly */
            }
        }
        CHECK(failed == 1);
        CHECK(s.count == 100 && s.bytes == 100);
        size_t expired = 0;
        an_cnode *n;
        while ((n = an_store_expired(&s, 1000.0)) != NULL) {
            an_store_unlink(&s, n);
            expired++;
        }
        CHECK(expired == 99);
        an_store_release(&s);
        CHECK(f.live == 0);
    }
    /* set_deadline failing leaves the node out of the heap */
    fault_ctx f = {1, 0, 0};
    an_allocator a = {fault_malloc, fault_free, &f, AN_OK, NULL, NULL};
    an_store s;
    an_store_init(&s, 0, 0, &a);
    an_cnode_init(&nodes[0]);
    CHECK_ST(an_store_link(&s, &nodes[0], 1, INFINITY), AN_OK);
    CHECK_ST(an_store_set_deadline(&s, &nodes[0], 5.0), AN_ERR_NOMEM);
    CHECK(s.heap_len == 0 && isinf(nodes[0].deadline));
    CHECK_ST(an_store_set_deadline(&s, &nodes[0], 5.0), AN_OK);
    CHECK(s.heap_len == 1);
    an_store_release(&s);
    CHECK(f.live == 0);
}

/* Updating a linked node recharges it in place and makes it the MRU; an
 * unlinked node or a failing heap leaves everything unchanged. */
static void
test_update(void)
{
    current = "update";
    fault_ctx f = {1, 0, 0};
    an_allocator a = {fault_malloc, fault_free, &f, AN_OK, NULL, NULL};
    an_store s;
    an_store_init(&s, 0, 0, &a);
    for (int i = 0; i < 3; i++) {
        an_cnode_init(&nodes[i]);
        CHECK_ST(an_store_link(&s, &nodes[i], 10, INFINITY), AN_OK);
    }
    an_cnode_init(&nodes[3]);
    CHECK_ST(an_store_update(&s, &nodes[3], 5, INFINITY), AN_ERR_INVALID_ARG);
    CHECK_ST(an_store_update(&s, &nodes[0], 7, 5.0), AN_ERR_NOMEM); /* heap cannot grow */
    CHECK(s.bytes == 30 && nodes[0].bytes == 10 && an_store_lru(&s) == &nodes[0]);
    CHECK_ST(an_store_update(&s, &nodes[0], 7, 5.0), AN_OK);
    CHECK(s.count == 3 && s.bytes == 27 && nodes[0].bytes == 7);
    CHECK(an_store_mru(&s) == &nodes[0] && an_store_lru(&s) == &nodes[1]);
    CHECK(an_store_expired(&s, 5.0) == &nodes[0]);
    CHECK_ST(an_store_update(&s, &nodes[0], 40, INFINITY), AN_OK);
    CHECK(s.bytes == 60 && s.heap_len == 0 && an_store_expired(&s, 100.0) == NULL);
    an_store_release(&s);
    CHECK(f.live == 0);
}

int
main(void)
{
    test_lru_order();
    test_byte_bound();
    test_deadline_heap();
    test_expired_boundary();
    test_allocation_failure();
    test_update();
    printf("test_cache: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
