/*
 * an_cache.h - the key-independent machinery of the native Cache (cache_store.c).
 *
 * The binding maps keys to entries with a Python dict (keys have Python
 * __hash__/__eq__, which only the interpreter can run); everything else lives
 * here, in plain C: an intrusive doubly linked LRU list, a binary min-heap of
 * deadlines (TTL), and the item/byte accounting against the bounds.  Nodes are
 * embedded in the caller's entry objects, so linking and unlinking never
 * allocate; only the deadline heap grows (through the store's allocator), and
 * that is the one operation that can fail.
 *
 * Nothing here calls back into the caller: every function runs in O(1) or
 * O(log n) and leaves the store consistent.  Eviction is two-phase: the store
 * names a victim (an_store_victim / an_store_expired), the caller unlinks it
 * and disposes of its entry (dict removal, user callbacks) afterwards.
 */
#ifndef AN_CACHE_H
#define AN_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "../an_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One cached item's bookkeeping, embedded in the caller's entry.
 * Invariant: linked == 1 exactly while the node is in the store's LRU list;
 * heap_index >= 0 exactly while it is in the deadline heap (deadline finite). */
typedef struct an_cnode {
    struct an_cnode *prev, *next; /* LRU list: head = least recently used */
    size_t bytes;                 /* charged size of the value */
    double deadline;              /* absolute expiry time; INFINITY = never */
    ptrdiff_t heap_index;         /* position in the deadline heap, -1 if none */
    int linked;
} an_cnode;

/* A deadline heap slot: the deadline is copied next to its node so that
 * sifting compares without dereferencing the (scattered) nodes. */
typedef struct an_heap_slot {
    double deadline;
    an_cnode *node;
} an_heap_slot;

/* Bounds of 0 mean unbounded.
 * Invariants: count == number of linked nodes; bytes == sum of their bytes;
 * heap holds exactly the linked nodes with a finite deadline. */
typedef struct an_store {
    an_cnode head;                /* sentinel: head.next = LRU, head.prev = MRU */
    size_t count;
    size_t bytes;
    size_t max_items;
    size_t max_bytes;
    an_heap_slot *heap;           /* min-heap on deadline */
    size_t heap_len, heap_cap;
    const an_allocator *alloc;    /* NULL = malloc */
    /* statistics, updated by the caller through the helpers below */
    uint64_t hits, misses, evictions, expirations;
} an_store;

/* Initialises an empty store with the given bounds (0 = unbounded). */
void an_store_init(an_store *s, size_t max_items, size_t max_bytes, const an_allocator *alloc);
/* Frees the heap.  The nodes belong to the caller; the store forgets them. */
void an_store_release(an_store *s);

/* Prepares a fresh node (unlinked, no deadline). */
void an_cnode_init(an_cnode *n);

/* Links n (not linked) as most recently used, charged bytes, expiring at
 * deadline (INFINITY = never).  Fails with AN_ERR_NOMEM (or the allocator's
 * status) only when the deadline heap cannot grow; then n stays unlinked and
 * the store unchanged.  Never evicts: ask an_store_victim afterwards. */
an_status an_store_link(an_store *s, an_cnode *n, size_t bytes, double deadline);
/* Removes a linked node from the list, the heap and the accounting. */
void an_store_unlink(an_store *s, an_cnode *n);
/* Makes a linked node the most recently used. */
void an_store_touch(an_store *s, an_cnode *n);
/* Changes the deadline of a linked node (INFINITY removes it from the heap).
 * Can fail like an_store_link (growing the heap); then nothing changes. */
an_status an_store_set_deadline(an_store *s, an_cnode *n, double deadline);

/* Recharges a linked node in place (a new value under the same key): bytes
 * and deadline replaced, made most recently used.  Fails like
 * an_store_set_deadline (AN_ERR_INVALID_ARG when not linked); then nothing
 * changes.  Never evicts: ask an_store_victim afterwards. */
an_status an_store_update(an_store *s, an_cnode *n, size_t bytes, double deadline);

/* The least recently used node, or NULL when empty. */
an_cnode *an_store_lru(const an_store *s);
/* The most recently used node, or NULL when empty. */
an_cnode *an_store_mru(const an_store *s);
/* The linked node with the earliest deadline if that deadline is <= now, else NULL. */
an_cnode *an_store_expired(const an_store *s, double now);
/* Earliest deadline of any node (INFINITY when none). */
double an_store_next_deadline(const an_store *s);
/* The LRU node if the store is over a bound, else NULL.  *reason_bytes is set
 * to 1 when the byte bound (not the item bound) is what is exceeded. */
an_cnode *an_store_victim(const an_store *s, int *reason_bytes);
/* Would a value of this size fit at all (bytes <= max_bytes, or unbounded)? */
int an_store_fits(const an_store *s, size_t bytes);

#ifdef __cplusplus
}
#endif
#endif /* AN_CACHE_H */
