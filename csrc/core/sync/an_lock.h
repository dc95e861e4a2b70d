/*
 * an_lock.h - named locks (lockmgr.c) and a slot counter for object pools
 * (slots.c): the blocking primitives behind LockManager and ObjectPool.
 *
 * Both are plain pthread code: one mutex plus condition variables, no Python.
 * Waits are timed and run in short slices (AN_WAIT_SLICE_MS); between slices,
 * with no core mutex held, the caller's an_interrupt_fn runs, so the binding
 * can take the GIL, deliver signals (Ctrl-C) or notice a cancellation and stop
 * the wait.  Owners are opaque non-zero 64-bit tokens chosen by the caller (a
 * thread id, or a token per asyncio task): the core never asks which thread
 * it runs on, so a wait may run on a helper thread on behalf of a task.
 */
#ifndef AN_LOCK_H
#define AN_LOCK_H

#include <stddef.h>
#include <stdint.h>

#include "../an_core.h"
#include "an_wait.h" /* AN_WAIT_SLICE_MS */

#ifdef __cplusplus
extern "C" {
#endif

/* Called between wait slices with no core lock held; return non-zero to stop
 * waiting (the wait then returns AN_ERR_CANCELLED). */
typedef int (*an_interrupt_fn)(void *ctx);

/* ---- named locks ----------------------------------------------------------- */

typedef enum an_lock_kind {
    AN_LOCK_MUTEX = 0,      /* one holder, not re-entrant */
    AN_LOCK_RLOCK = 1,      /* one owner, re-entrant (counted) */
    AN_LOCK_SEMAPHORE = 2,  /* up to `permits` holders, owners not tracked */
} an_lock_kind;

typedef struct an_lockmgr an_lockmgr;

/* Longest wait-for cycle reported in full (longer ones are truncated). */
#define AN_LOCK_CYCLE_MAX 16
#define AN_LOCK_NAME_MAX 128 /* bytes of each name kept in a cycle report */

/* Why an acquisition failed, beyond its status. */
typedef struct an_lock_fail {
    /* AN_ERR_LOCK_KIND: the kind and permits the name was created with */
    an_lock_kind kind;
    int permits;
    /* AN_ERR_LOCK_DEADLOCK: waiter[i] waits for name[i], which is held by
     * waiter[i + 1] (by waiter[0] for the last one).  n <= AN_LOCK_CYCLE_MAX. */
    int n;
    int truncated;
    uint64_t waiter[AN_LOCK_CYCLE_MAX];
    char name[AN_LOCK_CYCLE_MAX][AN_LOCK_NAME_MAX];
    size_t name_len[AN_LOCK_CYCLE_MAX];
} an_lock_fail;

/* One name's state and contention counters (a snapshot). */
typedef struct an_lock_stats {
    const char *name;        /* not NUL-terminated; see name_len */
    size_t name_len;
    an_lock_kind kind;
    int permits;             /* 1 for lock and rlock */
    int held;                /* permits in use (lock/rlock: 0 or 1) */
    uint64_t owner;          /* lock/rlock holder token, 0 when free */
    uint64_t depth;          /* rlock recursion depth */
    int waiters;
    uint64_t acquisitions;   /* successful acquisitions (re-entries included) */
    uint64_t contended;      /* acquisitions that had to wait (or failed at once) */
    uint64_t timeouts;
    uint64_t deadlocks;      /* waits refused because they would close a cycle */
    double wait_total;       /* seconds spent waiting, all waits */
    double wait_max;
} an_lock_stats;

/* Creates a registry.  detect_deadlocks: refuse a wait on a lock/rlock that
 * would close a cycle in the wait-for graph (AN_ERR_LOCK_DEADLOCK).
 * max_names: when a new name would make the registry hold more than this many
 * names, names that are free and have no waiter are dropped first (their
 * counters are lost); 0 = never drop.  a may be NULL (malloc). */
an_status an_lockmgr_create(an_lockmgr **out, int detect_deadlocks, size_t max_names,
                            const an_allocator *a);
/* Frees the registry.  No thread may be using it. */
void an_lockmgr_destroy(an_lockmgr *m);

/* Acquires `name` for `owner` (non-zero).  The first use of a name fixes its
 * kind and permits (permits must be >= 1; it is 1 for lock/rlock); a later use
 * with another kind or permits fails with AN_ERR_LOCK_KIND (fail->kind/permits
 * say what it is).  timeout < 0 waits forever, 0 only tries.  Returns AN_OK,
 * AN_ERR_LOCK_TIMEOUT, AN_ERR_LOCK_DEADLOCK (fail says the cycle),
 * AN_ERR_CANCELLED (interrupt returned non-zero), AN_ERR_INVALID_ARG or
 * AN_ERR_NOMEM.  *waited (if not NULL) receives the seconds spent waiting. */
an_status an_lockmgr_acquire(an_lockmgr *m, const char *name, size_t len, an_lock_kind kind,
                             int permits, uint64_t owner, double timeout, an_interrupt_fn intr,
                             void *ctx, an_lock_fail *fail, double *waited);

/* An attempt that does not wait and, when the lock is busy, returns
 * AN_ERR_LOCK_TIMEOUT without counting it as contention: the fast path of a
 * caller that will then wait with an_lockmgr_acquire (which counts). */
an_status an_lockmgr_try_acquire(an_lockmgr *m, const char *name, size_t len,
                                 an_lock_kind kind, int permits, uint64_t owner,
                                 an_lock_fail *fail);

/* Releases one hold of `name`.  Lock/rlock: only by their owner (one level of
 * an rlock's recursion); semaphore: by anyone holding a permit.  Returns
 * AN_ERR_LOCK_NOT_HELD when the name is unknown, free, or held by another. */
an_status an_lockmgr_release(an_lockmgr *m, const char *name, size_t len, uint64_t owner);

/* Snapshot of one name; AN_ERR_INVALID_ARG when unknown.  out->name points
 * into buf (bufsize bytes; the name is cut to fit). */
an_status an_lockmgr_stat(an_lockmgr *m, const char *name, size_t len, an_lock_stats *out,
                          char *buf, size_t bufsize);

/* Snapshot of every name: *out is one block (free it with an_free(a, *out))
 * holding *n records whose names point inside the block. */
an_status an_lockmgr_stat_all(an_lockmgr *m, an_lock_stats **out, size_t *n);

/* Number of names currently registered. */
size_t an_lockmgr_count(an_lockmgr *m);

/* ---- slots: a counting semaphore for object pools ------------------------- */

typedef struct an_slots an_slots;

typedef struct an_slots_stats {
    int64_t capacity, used;
    int waiters;
    int closed;
    uint64_t waits;          /* acquisitions that had to wait */
    uint64_t timeouts;
} an_slots_stats;

an_status an_slots_create(an_slots **out, int64_t capacity, const an_allocator *a);
void an_slots_destroy(an_slots *s);
/* Takes one slot.  timeout < 0 waits forever, 0 only tries.  Returns AN_OK,
 * AN_ERR_POOL_TIMEOUT, AN_ERR_POOL_CLOSED (now or while waiting) or
 * AN_ERR_CANCELLED. */
an_status an_slots_acquire(an_slots *s, double timeout, an_interrupt_fn intr, void *ctx);
/* Takes a free slot without waiting and without counting a busy pool as a
 * timeout: AN_OK, AN_ERR_POOL_TIMEOUT (none free) or AN_ERR_POOL_CLOSED. */
an_status an_slots_try_acquire(an_slots *s);
/* Gives one slot back (also after close); AN_ERR_INVALID_ARG if none is taken. */
an_status an_slots_release(an_slots *s);
/* Refuses further acquisitions and wakes every waiter (they get POOL_CLOSED). */
void an_slots_close(an_slots *s);
void an_slots_get_stats(an_slots *s, an_slots_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* AN_LOCK_H */
