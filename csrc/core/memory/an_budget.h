/*
 * an_budget.h - memory budgets (budget.c) and process memory readings (meminfo.c).
 *
 * A budget is a byte counter with an optional limit and an optional parent.
 * Charging n bytes charges the budget and every ancestor, all or nothing: if
 * any of them would pass its limit, nothing is charged and the refusal (which
 * limit, how much was in use) is recorded on the budget that was charged.
 * That is how nested memory_limit() scopes "only tighten": an inner scope with
 * a larger limit than its outer scope has left is held by the outer one.
 *
 * Every counter is atomic, so charges and credits may come from any thread
 * (decode_many's workers charge the caller's budget; NumPy frees an array
 * wherever its last reference dies).  Budgets are reference counted: a memory
 * handler, an allocator or a child holds a reference, so a budget outlives its
 * scope for as long as memory charged to it can still be credited back.
 */
#ifndef AN_BUDGET_H
#define AN_BUDGET_H

#include <stddef.h>
#include <stdint.h>

#include "../an_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct an_budget an_budget;

/* The numbers of a refused charge. */
typedef struct an_refusal {
    uint64_t requested;     /* bytes asked for */
    uint64_t limit;         /* the limit that refused (this budget's or an ancestor's) */
    uint64_t in_use;        /* bytes charged to that budget at the time */
    int depth;              /* 0 = this budget, 1 = its parent, ... */
} an_refusal;

/* Creates a budget with limit bytes (0 = unlimited) under parent (NULL = top
 * level; the child takes a reference to it).  The result has one reference.
 * Returns AN_ERR_NOMEM (allocation through a) or AN_OK. */
an_status an_budget_new(an_budget **out, uint64_t limit, an_budget *parent,
                        const an_allocator *a);
void an_budget_incref(an_budget *b);
/* Drops a reference; the last one frees the budget and drops its parent. */
void an_budget_decref(an_budget *b);

/* Charges n bytes to b and its ancestors, or nothing.  Returns AN_OK or
 * AN_ERR_MEMORY_LIMIT (then *r, if not NULL, says why, and b records it as its
 * last refusal). */
an_status an_budget_charge(an_budget *b, uint64_t n, an_refusal *r);
/* Returns n bytes charged earlier to b and its ancestors. */
void an_budget_credit(an_budget *b, uint64_t n);
/* Whether a charge of n would succeed now, without charging (a precheck before
 * allocating a decode output).  Fills *r on refusal; records nothing. */
an_status an_budget_check(const an_budget *b, uint64_t n, an_refusal *r);

uint64_t an_budget_in_use(const an_budget *b);
uint64_t an_budget_peak(const an_budget *b);
uint64_t an_budget_limit(const an_budget *b);
const an_budget *an_budget_parent(const an_budget *b);
/* Number of refused charges; with a nonzero count *last gets the most recent
 * (its fields are read one by one: exact unless refusals race each other). */
uint64_t an_budget_refusals(const an_budget *b, an_refusal *last);

/* ---- an allocator that charges a budget and guards the process limit ----
 *
 * The core's allocations (decoder state, libpng/zlib working memory, staging
 * buffers) go through an an_allocator; an_guard is the one that charges a
 * budget (with a 16-byte size header, so frees credit exactly) and refuses
 * requests of at least AN_GUARD_THRESHOLD bytes that would lift the resident
 * set size past process_limit.  reserve/release charge memory that a library
 * allocates by itself (libjpeg's coefficient buffers). */

#define AN_GUARD_THRESHOLD ((uint64_t)1 << 20)

typedef struct an_guard {
    an_allocator alloc;     /* ctx points back to the guard */
    an_budget *budget;      /* a reference, or NULL */
    uint64_t process_limit; /* bytes of RSS; 0 = none */
    const char *proc_root;  /* where /proc is ("" = the real one); tests override */
    /* the last refusal (atomic: worker threads write it) */
    uint64_t refused_requested, refused_limit, refused_in_use;
    int refused_status;     /* AN_OK, AN_ERR_MEMORY_LIMIT or AN_ERR_PROCESS_MEMORY_LIMIT */
} an_guard;

/* Sets up g over budget (a new reference is taken; may be NULL) and
 * process_limit (0 = none).  g must not move while the allocator is in use. */
void an_guard_init(an_guard *g, an_budget *budget, uint64_t process_limit);
/* The allocator to hand to the core, or NULL when g accounts for nothing (then
 * the core uses plain malloc: no overhead outside a scope). */
const an_allocator *an_guard_allocator(an_guard *g);
/* Drops the budget reference.  Every block must have been freed before. */
void an_guard_release(an_guard *g);
/* The guard behind an allocator, or NULL when a is not an an_guard's. */
an_guard *an_guard_of(const an_allocator *a);
/* Whether n more bytes fit under process_limit given the current RSS
 * (requests under AN_GUARD_THRESHOLD always do).  On refusal *r gets the
 * numbers (in_use = RSS). */
int an_process_fits(uint64_t process_limit, const char *proc_root, uint64_t n, an_refusal *r);

/* ---- /proc and cgroup readings (meminfo.c) --------------------------------
 *
 * Every reader takes root: the directory standing for "/" ("" or "/" for the
 * real system), so tests can point it at fixture trees.  They return AN_OK,
 * AN_ERR_SYSTEM (file missing or unreadable; err->detail names it) or
 * AN_ERR_SYSTEM with "malformed" in the detail. */

typedef struct an_procmem {
    uint64_t rss;           /* VmRSS */
    uint64_t peak_rss;      /* VmHWM */
    uint64_t total;         /* MemTotal */
    uint64_t available;     /* MemAvailable */
} an_procmem;

an_status an_read_procmem(const char *root, an_procmem *out, an_error *err);
/* Resident set size from <root>/proc/self/statm (cheaper than status). */
an_status an_read_rss(const char *root, uint64_t *rss, an_error *err);

typedef struct an_cgroup {
    int version;            /* 0 = no memory cgroup found, 1 or 2 */
    int known;              /* the limit and usage below were read and parsed */
    uint64_t limit;         /* bytes; UINT64_MAX = unlimited ("max", v1 sentinel) */
    uint64_t usage;         /* memory.current / memory.usage_in_bytes */
    char path[512];         /* the directory the numbers come from */
    char problem[200];      /* why known is 0 when version != 0; "" otherwise */
    int have_inactive;      /* inactive_file below was read from memory.stat */
    uint64_t inactive_file; /* reclaimable page cache (v2 inactive_file, v1
                               total_inactive_file); usage - this = working set */
} an_cgroup;

/* Finds the process's memory cgroup (via <root>/proc/self/cgroup and
 * <root>/proc/self/mountinfo, else the usual <root>/sys/fs/cgroup paths) and
 * reads its limit and usage.  For v2 the limit is the smallest memory.max on
 * the way up to the mount's root.  Never fails: malformed or missing files
 * give known = 0 with a reason in problem. */
void an_read_cgroup(const char *root, an_cgroup *out);

/* Parses a cgroup limit value: "max", a v1 sentinel (>= 2^62) -> UINT64_MAX.
 * Returns 0 for anything that is not a single non-negative integer. */
int an_parse_cgroup_value(const char *text, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif /* AN_BUDGET_H */
