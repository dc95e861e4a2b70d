/*
 * an_arena.h - a shared-memory arena of named fixed-size records, for state
 * that all worker processes of one host share (metrics, rate limits, breakers,
 * retry budgets).
 *
 * The arena is one file mapped MAP_SHARED by every process.  It holds
 *
 *   a header        magic, version, the geometry and a checksum over it;
 *   a slot table    one 64-bit owner word per worker slot: state, pid and the
 *                   process start time (from /proc/<pid>/stat), so a reused
 *                   pid never passes for the dead worker;
 *   a directory     open-addressing table of named records (key, size in
 *                   64-byte units, fold operation, checksum);
 *   slot regions    slot 0 is the aggregate (and the home of shared records);
 *                   slots 1.. are one per live worker.  A per-slot record has
 *                   one copy in every slot region at the same offset, so each
 *                   worker writes only its own cache lines.
 *
 * Everything is lock-free: records are claimed and published by CAS, words are
 * updated by atomics, and the only multi-step operation -- folding a dead
 * worker's slot into the aggregate -- is a lease that anyone can take over
 * from a dead holder, made idempotent by a one-record journal.  Readers use a
 * sequence counter around folds and never block writers.  Nothing here grows:
 * a full directory or data region refuses new records and counts the refusal.
 *
 * Records are permanent (never deleted): use them for bounded key sets, or
 * allocate one multi-unit record and hash keys into it.
 */
#ifndef AN_ARENA_H
#define AN_ARENA_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../an_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AN_ARENA_UNIT 64u            /* bytes per data unit (one cache line) */
#define AN_ARENA_WORDS_PER_UNIT 8u
#define AN_ARENA_MAX_RECORD_UNITS 1024u /* 64 KiB per record copy */

/* How a dead worker's copy of a per-slot record is folded into the aggregate
 * and how copies combine when read.  Values are 64-bit words, interpreted as
 * doubles by ADD/MAX/MIN/LATEST. */
typedef enum an_fold {
    AN_FOLD_SHARED = 0, /* one copy only (slot 0), updated by everyone; no folding */
    AN_FOLD_ADD = 1,    /* every word is a double; copies add up */
    AN_FOLD_MAX = 2,    /* word 0 value, word 1 "was set" marker (!= 0) */
    AN_FOLD_MIN = 3,
    AN_FOLD_LATEST = 4, /* word 0 value, word 1 timestamp (double); newest wins */
    AN_FOLD_OP_MASK = 7,
    AN_FOLD_DROP = 8    /* flag: dead workers' copies are discarded, not folded */
} an_fold;

typedef struct an_arena_config {
    uint32_t max_records; /* directory entries */
    uint32_t max_slots;   /* including the aggregate slot 0; 2..1024 */
    uint32_t key_size;    /* longest key in bytes; 8..4096 */
    uint32_t slot_units;  /* 64-byte units per slot region (multiple of 64) */
} an_arena_config;

/* Defaults: 4096 records, 64 slots, 512-byte keys, 16384 units (1 MiB) per slot. */
void an_arena_config_init(an_arena_config *cfg);

typedef struct an_arena an_arena;

typedef struct an_arena_rec {
    uint32_t id;       /* directory index: stable for the arena's lifetime */
    uint32_t units;
    uint32_t fold;     /* an_fold */
    uint32_t key_len;
    const char *key;   /* points into the mapping; not NUL-terminated */
} an_arena_rec;

typedef struct an_arena_stats {
    uint64_t file_size;
    uint32_t records, max_records;
    uint32_t units_used, slot_units;
    uint32_t live_slots, max_slots;
    uint64_t overflow;     /* records refused because the arena was full */
    uint64_t folds;        /* dead slots folded since creation */
    uint64_t corrupt;      /* directory entries found with a bad checksum */
    uint32_t my_slot;
} an_arena_stats;

/* Opens path, creating it with cfg when missing (cfg NULL = defaults) -- the
 * creation is atomic (built under a temporary name, then linked), so
 * concurrent starters agree on one file.  An existing file keeps its own
 * geometry.  Claims a worker slot for this process (after folding dead ones).
 * Fails with AN_ERR_ARENA_CORRUPT (not an arena, wrong version, bad checksum,
 * truncated), AN_ERR_ARENA_FULL (no free slot), AN_ERR_IO (err->actual =
 * errno), AN_ERR_NOMEM.  On success *out must be closed with an_arena_close. */
an_status an_arena_open(an_arena **out, const char *path, const an_arena_config *cfg,
                        an_error *err);
/* Opens a private anonymous arena (no file, one process), same API. */
an_status an_arena_open_anonymous(an_arena **out, const an_arena_config *cfg, an_error *err);
/* Unmaps and releases this process's slot (its per-slot values are folded into
 * the aggregate, as if the worker had died). */
void an_arena_close(an_arena *a);
/* Gives up the slot without folding it: for a process about to exit that
 * wants the next scrape to fold it, or for tests that simulate a death. */
void an_arena_abandon(an_arena *a);

/* After fork(): the child claims its own slot and remaps its slot view so that
 * every pointer from an_arena_local() now addresses the child's copy.  Call in
 * the child before any write. */
an_status an_arena_after_fork(an_arena *a, an_error *err);

/* Finds the record named key or creates it with units and fold.  An existing
 * record with another size or fold fails with AN_ERR_ARENA_MISMATCH; a full
 * arena fails with AN_ERR_ARENA_FULL (and counts an overflow); keys longer
 * than key_size fail with AN_ERR_INVALID_ARG.  New records are zero. */
an_status an_arena_record(an_arena *a, const void *key, size_t key_len, uint32_t units,
                          uint32_t fold, an_arena_rec *rec, an_error *err);
/* Looks a record up without creating it: AN_OK, or AN_ERR_ARENA_MISMATCH when absent. */
an_status an_arena_find(an_arena *a, const void *key, size_t key_len, an_arena_rec *rec);

/* The words of this process's copy of record id (slot 0 for shared records). */
uint64_t *an_arena_local(an_arena *a, uint32_t id);
/* The words of slot's copy (read-only use: another process owns it). */
const uint64_t *an_arena_copy(an_arena *a, uint32_t id, uint32_t slot);

/* Iteration: fills *rec with the first published record whose id >= *cursor
 * and sets *cursor past it; returns 0 when there is none. */
int an_arena_next(an_arena *a, uint32_t *cursor, an_arena_rec *rec);

/* Combines every slot's copy of the first nwords words of record id according
 * to its fold operation into out (doubles; shared records: the raw words as
 * doubles is meaningless, use an_arena_copy(a, id, 0)).  Consistent with
 * respect to folds (retries around them); never blocks writers.  For MAX/MIN/
 * LATEST out[1] is 1 when any copy was set, else 0 (out[0] = 0). */
an_status an_arena_read(an_arena *a, uint32_t id, double *out, uint32_t nwords);

/* Folds every dead worker's slot into the aggregate and frees the slot.
 * Returns the number of slots folded (or -1 on a corrupt arena). */
int an_arena_reclaim(an_arena *a);

/* Validates the header and every directory entry's checksum. */
an_status an_arena_check(an_arena *a, an_error *err);
void an_arena_stats_get(an_arena *a, an_arena_stats *st);
uint32_t an_arena_my_slot(const an_arena *a);
/* Marks an additional refusal (e.g. a caller-level limit) in the overflow count. */
void an_arena_count_overflow(an_arena *a);

/* For tests (PID-reuse and death simulation): claims a free slot for a made-up
 * owner (pid, start time in clock ticks) and returns its index, or 0 when no
 * slot is free.  Its copies are reachable with an_arena_slot_words(). */
uint32_t an_arena_forge_slot(an_arena *a, pid_t pid, uint64_t start_time);
uint64_t *an_arena_slot_words(an_arena *a, uint32_t id, uint32_t slot);

/* ---- atomic word operations (all sequentially consistent) ---------------- */
static inline uint64_t
an_aw_load(const uint64_t *w)
{
    return __atomic_load_n(w, __ATOMIC_SEQ_CST);
}
static inline void
an_aw_store(uint64_t *w, uint64_t v)
{
    __atomic_store_n(w, v, __ATOMIC_SEQ_CST);
}
static inline uint64_t
an_aw_add(uint64_t *w, uint64_t d)
{
    return __atomic_add_fetch(w, d, __ATOMIC_SEQ_CST);
}
static inline int
an_aw_cas(uint64_t *w, uint64_t *expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(w, expected, desired, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
}
static inline double
an_aw_bits_to_f64(uint64_t b)
{
    union {
        uint64_t u;
        double d;
    } x;
    x.u = b;
    return x.d;
}
static inline uint64_t
an_aw_f64_to_bits(double d)
{
    union {
        uint64_t u;
        double d;
    } x;
    x.d = d;
    return x.u;
}
static inline double
an_aw_load_f64(const uint64_t *w)
{
    return an_aw_bits_to_f64(an_aw_load(w));
}
static inline void
an_aw_store_f64(uint64_t *w, double v)
{
    an_aw_store(w, an_aw_f64_to_bits(v));
}
/* Adds d to the double stored in *w; returns the new value. */
static inline double
an_aw_add_f64(uint64_t *w, double d)
{
    uint64_t old = __atomic_load_n(w, __ATOMIC_RELAXED);
    double nv;
    do {
        nv = an_aw_bits_to_f64(old) + d;
    } while (!__atomic_compare_exchange_n(w, &old, an_aw_f64_to_bits(nv), 1, __ATOMIC_SEQ_CST,
                                          __ATOMIC_RELAXED));
    return nv;
}
/* Stores max(*w, v) (or min) atomically. */
static inline void
an_aw_max_f64(uint64_t *w, double v)
{
    uint64_t old = __atomic_load_n(w, __ATOMIC_RELAXED);
    while (an_aw_bits_to_f64(old) < v &&
           !__atomic_compare_exchange_n(w, &old, an_aw_f64_to_bits(v), 1, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED)) {
    }
}

/* /proc/<pid>/stat start time in clock ticks; 0 when the process does not
 * exist or is a zombie. */
uint64_t an_proc_start_time(pid_t pid);

#ifdef __cplusplus
}
#endif
#endif /* AN_ARENA_H */
