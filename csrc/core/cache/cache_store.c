/*
 * cache_store.c - LRU list, deadline heap and accounting of the native Cache.
 *
 * The same shape as CPython's functools.lru_cache C code (a circular list with
 * a sentinel, the key lookup left to a dict), plus a binary heap of deadlines
 * so that expired entries are found in O(1) and removed in O(log n) by
 * whichever operation comes next, not only when their own key is touched.
 * A heap rather than a timer wheel: deadlines are doubles from an arbitrary
 * (injectable) clock, and a heap needs no resolution or horizon.
 */
#include <math.h>
#include <string.h>

#include "an_cache.h"

void
an_cnode_init(an_cnode *n)
{
    memset(n, 0, sizeof(*n));
    n->deadline = INFINITY;
    n->heap_index = -1;
}

void
an_store_init(an_store *s, size_t max_items, size_t max_bytes, const an_allocator *alloc)
{
    memset(s, 0, sizeof(*s));
    s->head.prev = s->head.next = &s->head;
    s->head.heap_index = -1;
    s->max_items = max_items;
    s->max_bytes = max_bytes;
    s->alloc = alloc;
}

void
an_store_release(an_store *s)
{
    an_free(s->alloc, s->heap);
    s->heap = NULL;
    s->heap_len = s->heap_cap = 0;
    s->head.prev = s->head.next = &s->head;
    s->count = s->bytes = 0;
}

/* ---- deadline heap --------------------------------------------------------- */

static void
heap_place(an_store *s, size_t i, an_heap_slot slot)
{
    s->heap[i] = slot;
    slot.node->heap_index = (ptrdiff_t)i;
}

static void
sift_up(an_store *s, size_t i, an_heap_slot slot)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!(slot.deadline < s->heap[parent].deadline))
            break;
        heap_place(s, i, s->heap[parent]);
        i = parent;
    }
    heap_place(s, i, slot);
}

static void
sift_down(an_store *s, size_t i, an_heap_slot slot)
{
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= s->heap_len)
            break;
        if (child + 1 < s->heap_len && s->heap[child + 1].deadline < s->heap[child].deadline)
            child++;
        if (!(s->heap[child].deadline < slot.deadline))
            break;
        heap_place(s, i, s->heap[child]);
        i = child;
    }
    heap_place(s, i, slot);
}

/* Places slot at the hole i, whose subtree's other slots are ordered, when
 * slot is likely the largest (the last slot, as in a removal: with one ttl,
 * deadlines grow with insertion order): moves the hole down to a leaf along
 * the smaller children (one comparison a level, not two), then sifts slot up
 * from there, usually not at all (Floyd's heapsort trick). */
static void
sift_hole(an_store *s, size_t i, an_heap_slot slot)
{
    size_t child;
    while ((child = 2 * i + 1) < s->heap_len) {
        if (child + 1 < s->heap_len && s->heap[child + 1].deadline < s->heap[child].deadline)
            child++;
        heap_place(s, i, s->heap[child]);
        i = child;
    }
    sift_up(s, i, slot);
}

/* Room for one more heap slot; the only allocation of the store. */
static an_status
heap_reserve(an_store *s)
{
    if (s->heap_len < s->heap_cap)
        return AN_OK;
    size_t cap = s->heap_cap ? s->heap_cap * 2 : 16, bytes;
    if (!an_mul_size(cap, sizeof(an_heap_slot), &bytes))
        return AN_ERR_NOMEM;
    an_heap_slot *heap = an_malloc(s->alloc, bytes);
    if (heap == NULL)
        return an_nomem(s->alloc);
    if (s->heap_len)
        memcpy(heap, s->heap, s->heap_len * sizeof(an_heap_slot));
    an_free(s->alloc, s->heap);
    s->heap = heap;
    s->heap_cap = cap;
    return AN_OK;
}

static void
heap_push(an_store *s, an_cnode *n) /* heap_reserve() succeeded before */
{
    an_heap_slot slot = {n->deadline, n};
    sift_up(s, s->heap_len++, slot);
}

static void
heap_remove(an_store *s, an_cnode *n)
{
    size_t i = (size_t)n->heap_index;
    an_heap_slot last = s->heap[--s->heap_len];
    n->heap_index = -1;
    if (last.node == n)
        return;
    if (i > 0 && last.deadline < s->heap[(i - 1) / 2].deadline)
        sift_up(s, i, last);
    else
        sift_hole(s, i, last);
}

/* ---- list and accounting --------------------------------------------------- */

/* +INFINITY means "never expires" and keeps the node out of the heap. */
static int
has_deadline(double deadline)
{
    return !(isinf(deadline) && deadline > 0);
}

static void
list_append(an_store *s, an_cnode *n)
{
    an_cnode *mru = s->head.prev;
    n->prev = mru;
    n->next = &s->head;
    mru->next = n;
    s->head.prev = n;
}

static void
list_remove(an_cnode *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
}

an_status
an_store_link(an_store *s, an_cnode *n, size_t bytes, double deadline)
{
    if (n->linked)
        return AN_ERR_INVALID_ARG;
    if (has_deadline(deadline)) {
        an_status st = heap_reserve(s);
        if (st != AN_OK)
            return st;
    }
    n->bytes = bytes;
    n->deadline = deadline;
    n->heap_index = -1;
    n->linked = 1;
    list_append(s, n);
    s->count++;
    s->bytes += bytes;
    if (has_deadline(deadline))
        heap_push(s, n);
    return AN_OK;
}

void
an_store_unlink(an_store *s, an_cnode *n)
{
    if (!n->linked)
        return;
    list_remove(n);
    if (n->heap_index >= 0)
        heap_remove(s, n);
    n->linked = 0;
    s->count--;
    s->bytes -= n->bytes;
}

void
an_store_touch(an_store *s, an_cnode *n)
{
    if (!n->linked || s->head.prev == n)
        return;
    list_remove(n);
    list_append(s, n);
}

an_status
an_store_set_deadline(an_store *s, an_cnode *n, double deadline)
{
    if (!n->linked)
        return AN_ERR_INVALID_ARG;
    int finite = has_deadline(deadline);
    if (n->heap_index < 0) {
        if (!finite) {
            n->deadline = deadline;
            return AN_OK;
        }
        an_status st = heap_reserve(s);
        if (st != AN_OK)
            return st;
        n->deadline = deadline;
        heap_push(s, n);
        return AN_OK;
    }
    if (!finite) {
        heap_remove(s, n);
        n->deadline = deadline;
        return AN_OK;
    }
    double old = n->deadline;
    an_heap_slot slot = {deadline, n};
    n->deadline = deadline;
    if (deadline < old)
        sift_up(s, (size_t)n->heap_index, slot);
    else
        sift_down(s, (size_t)n->heap_index, slot);
    return AN_OK;
}

an_status
an_store_update(an_store *s, an_cnode *n, size_t bytes, double deadline)
{
    an_status st = an_store_set_deadline(s, n, deadline);
    if (st != AN_OK)
        return st;
    s->bytes = s->bytes - n->bytes + bytes;
    n->bytes = bytes;
    an_store_touch(s, n);
    return AN_OK;
}

an_cnode *
an_store_lru(const an_store *s)
{
    return s->count ? s->head.next : NULL;
}

an_cnode *
an_store_mru(const an_store *s)
{
    return s->count ? s->head.prev : NULL;
}

an_cnode *
an_store_expired(const an_store *s, double now)
{
    if (s->heap_len == 0 || !(s->heap[0].deadline <= now))
        return NULL;
    return s->heap[0].node;
}

double
an_store_next_deadline(const an_store *s)
{
    return s->heap_len ? s->heap[0].deadline : INFINITY;
}

an_cnode *
an_store_victim(const an_store *s, int *reason_bytes)
{
    *reason_bytes = 0;
    if (s->count == 0)
        return NULL;
    if (s->max_items && s->count > s->max_items)
        return s->head.next;
    if (s->max_bytes && s->bytes > s->max_bytes) {
        *reason_bytes = 1;
        return s->head.next;
    }
    return NULL;
}

int
an_store_fits(const an_store *s, size_t bytes)
{
    return s->max_bytes == 0 || bytes <= s->max_bytes;
}
