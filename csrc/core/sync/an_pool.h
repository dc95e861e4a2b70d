/*
 * an_pool.h - a small fixed pool of native worker threads (pool.c).
 *
 * Used by decode_many(): the calling thread releases the GIL and the batch runs
 * on the pool's pthreads, which never touch Python.  The pool is "parallel for"
 * shaped: an_pool_run() runs fn(arg, i) for every i of a batch and returns when
 * all are done.  Several batches (from several Python threads) may be in flight
 * at once; the caller always works on its own batch too, so a batch finishes
 * even if every worker is busy elsewhere (or gone, as after fork()).
 */
#ifndef AN_POOL_H
#define AN_POOL_H

#include <stddef.h>
#include <sys/types.h>

#include "../an_core.h"

typedef struct an_pool an_pool;
typedef void (*an_pool_fn)(void *arg, size_t index);

/* Creates a pool with nthreads workers (0 is allowed: callers do all the work).
 * Returns AN_ERR_NOMEM or AN_ERR_THREADS on failure, *out = NULL. */
an_status an_pool_create(an_pool **out, int nthreads);

/* Adds workers until the pool has at least nthreads (no-op if it has). */
an_status an_pool_grow(an_pool *pool, int nthreads);

/* Number of workers. */
int an_pool_size(an_pool *pool);

/* The process that created the pool: after fork() a child must not use it
 * (its workers do not exist there and its mutex may be held). */
pid_t an_pool_owner(const an_pool *pool);

/* Runs fn(arg, i) for i in [0, n) on the calling thread and at most
 * max_helpers pool workers; returns when all n calls have returned.  fn must
 * not call back into the pool. */
void an_pool_run(an_pool *pool, an_pool_fn fn, void *arg, size_t n, int max_helpers);

/* Lets in-flight batches finish, stops and joins the workers, frees the pool. */
void an_pool_destroy(an_pool *pool);

/* CPUs this process may use: its affinity mask, further limited by a cgroup
 * CPU quota (v2 cpu.max or v1 cfs_quota_us/cfs_period_us).  At least 1. */
int an_available_cpus(void);

#endif /* AN_POOL_H */
