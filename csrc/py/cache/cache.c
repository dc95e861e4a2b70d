/*
 * cache.c (binding) - the native Cache type: a thread-safe LRU/TTL/byte-bounded
 * mapping.
 *
 * Shape (as CPython's functools.lru_cache C code): a dict maps key -> entry;
 * each entry embeds an an_cnode of the core store (csrc/core/cache/cache_store.c),
 * which keeps the LRU list, the deadline heap and the accounting.  The store
 * holds one reference to every linked entry.
 *
 * An entry is the stable holder of one key, not of one value: a store of a key
 * that is present swaps the value inside the same entry, so the dict is never
 * updated for a key that it already maps.  An entry lives through three states:
 *   fresh  in the dict (put there by PyDict_SetDefault), not linked, no value;
 *   live   linked in the store, holding a value;
 *   dead   unlinked for good: never linked again.
 * Dict updates run the key's __hash__/__eq__ (Python code: threads switch, the
 * cache can be re-entered), so they are made safe by these rules, not by a lock:
 *   - writers get the entry with PyDict_SetDefault (CPython restarts a lookup
 *     that __eq__ mutated, so it returns the one entry the dict maps at its
 *     end), then, in the critical section, swap the value of a live entry or
 *     link a fresh one; an entry found dead makes them retry;
 *   - removal marks the entry dead in the critical section, which names one
 *     owner (the killing thread) for the entry's dict removal; only that owner
 *     deletes it, and only if the dict still maps the key to it.
 * Hence (by induction over dict updates): no one but its owner removes an
 * entry from the dict, so between the owner's check and its delete the key
 * cannot be remapped, and the delete removes that entry only; an entry that is
 * not dead is still the one the dict maps for its key; so every linked entry is
 * reachable by its key and no key has two linked entries.  A writer that finds
 * a dead entry waits (GIL released) for its owner's delete; if that delete
 * failed (a raising __eq__) the entry is an orphan that the next writer adopts.
 * A thread re-entering the cache from inside its own pending delete (a key's
 * __eq__ storing a key it is removing) gets a RuntimeError, not a hang.
 *
 * Every operation runs in three steps:
 *   1. user code, outside any critical section: sizeof(value), the timer, the
 *      dict lookup (which runs the key's __hash__/__eq__);
 *   2. the structural update under the GIL + AN_BEGIN_CRITICAL_SECTION(self):
 *      C only, no allocation that can trigger the GC, no Py_DECREF that can
 *      run a finaliser; evicted entries are killed into a C victim list;
 *   3. with the store consistent again: the dict removals of the entries killed
 *      in step 2 first, then on_evict, then dropping the references.
 * A value is read only under the section while its entry is live; once dead,
 * an entry's value belongs to its killer.  Keys must keep the hash/eq
 * contract; a key that breaks it (raises, or changes its answer) is survived
 * without a crash and with exact accounting, but may leave a dead entry in the
 * dict until a writer of that key or clear() adopts it.
 */
#include <math.h>
#include <sched.h>
#include <time.h>

#include "../../core/cache/an_cache.h"
#include "an_cache_py.h"
#include "structmember.h"

/* A pending exception, saved and restored around code that may raise. */
typedef struct {
    PyObject *type, *value, *tb;
} saved_exc;

static void
exc_save(saved_exc *x)
{
    PyErr_Fetch(&x->type, &x->value, &x->tb);
}

static void
exc_restore(saved_exc *x)
{
    PyErr_Restore(x->type, x->value, x->tb);
    x->type = x->value = x->tb = NULL;
}

static void
exc_drop(saved_exc *x)
{
    Py_CLEAR(x->type);
    Py_CLEAR(x->value);
    Py_CLEAR(x->tb);
}

static int
check_args(const char *name, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi)
{
    if (nargs >= lo && nargs <= hi)
        return 1;
    PyErr_Format(PyExc_TypeError, "%s expected %zd to %zd arguments, got %zd", name, lo, hi,
                 nargs);
    return 0;
}

/* dstate: D_ALIVE covers fresh (node.linked == 0) and live (linked == 1);
 * the other states are dead.  Invariant: linked implies D_ALIVE; a dead entry
 * is D_OWNED (owner is removing it from the dict), D_ORPHAN (that removal
 * failed: anyone may adopt it) or D_GONE (out of the dict).  dstate, owner,
 * ttl, node and a live entry's value change only under the section. */
enum { D_ALIVE = 0, D_OWNED, D_ORPHAN, D_GONE };

typedef struct {
    PyObject_HEAD
    PyObject *key;       /* immutable */
    PyObject *value;     /* NULL while fresh */
    double ttl;          /* for touch(): INFINITY = none */
    int reason;          /* why it was unlinked (an evict_reason) */
    int dstate;
    unsigned long owner; /* thread ident of the D_OWNED remover */
    an_cnode node;
} CacheEntry;

enum evict_reason {
    R_NONE = 0, /* replaced or deleted by the user: no callback */
    R_LRU,
    R_SIZE,
    R_TTL,
    R_RESIZE,
    R_TRIM,
    R_CLEAR,
    R_COUNT
};

static const char *const reason_names[R_COUNT] = {
    "", "lru", "size", "ttl", "resize", "trim", "clear",
};

/* Dead entries kept for reuse per cache: a new key then costs no allocation
 * and no GC tracking (which would also count towards a collection). */
#define SPARE_ENTRIES 16

typedef struct {
    PyObject_HEAD
    PyObject *dict;       /* key -> CacheEntry */
    an_store store;
    double default_ttl;   /* INFINITY = none */
    PyObject *sizeof_fn;  /* NULL = default (nbytes of buffers, sys.getsizeof) */
    PyObject *timer;      /* NULL = CLOCK_MONOTONIC (== time.monotonic) */
    PyObject *on_evict;   /* NULL = none */
    PyObject *getsizeof;  /* sys.getsizeof */
    PyObject *entry_type; /* the CacheEntry type */
    PyObject *module;     /* keeps st alive */
    an_state *st;
    int pickle_entries;
    /* 0 while every key ever stored is an exact str, int, float or bytes: the
     * dict's lookups then run no Python code (see discard()).  Sticky. */
    int py_keys;
    int nspare;
    CacheEntry *spare[SPARE_ENTRIES]; /* recycled entries: no key, no value */
    PyObject *weakreflist;
} CacheObject;

#define ENTRY_OF(n) ((CacheEntry *)((char *)(n) - offsetof(CacheEntry, node)))

/* Keys whose __hash__/__eq__ are C, deterministic and never raise. */
static int
c_key(PyObject *key)
{
    return PyUnicode_CheckExact(key) || PyLong_CheckExact(key) || PyFloat_CheckExact(key) ||
           PyBytes_CheckExact(key);
}

static void recycle(CacheObject *self, CacheEntry *e);

/* ---- victims: entries unlinked under the critical section ----------------- */

/* A C vector (PyMem: never triggers the GC) of entries whose store reference
 * was moved here; disposed of by finish() outside the critical section. */
typedef struct {
    CacheEntry **items;
    size_t n, cap;
    CacheEntry *inline_items[8];
} victims;

static void
victims_init(victims *v)
{
    v->items = v->inline_items;
    v->n = 0;
    v->cap = 8;
}

/* 0 when full and cannot grow: the caller stops evicting (the store stays
 * consistent, just over its bound until the next operation). */
static int
victims_reserve(victims *v)
{
    if (v->n < v->cap)
        return 1;
    size_t cap = v->cap * 2;
    CacheEntry **items = PyMem_Malloc(cap * sizeof(*items));
    if (items == NULL)
        return 0;
    memcpy(items, v->items, v->n * sizeof(*items));
    if (v->items != v->inline_items)
        PyMem_Free(v->items);
    v->items = items;
    v->cap = cap;
    return 1;
}

/* Kills e (linked) and moves the store's reference to v.  Only called after
 * victims_reserve() returned 1. */
/* Under the section: unlinks e (linked) and marks it dead, its dict removal
 * owned by the calling thread, which must call discard() next. */
static void
kill(CacheObject *self, CacheEntry *e)
{
    an_store_unlink(&self->store, &e->node);
    e->dstate = D_OWNED;
    e->owner = PyThread_get_thread_ident();
}

static void
evict_to(CacheObject *self, victims *v, CacheEntry *e, int reason)
{
    kill(self, e);
    e->reason = reason;
    v->items[v->n++] = e;
    if (reason == R_TTL)
        self->store.expirations++;
    else if (reason == R_LRU || reason == R_SIZE)
        self->store.evictions++;
}

/* Moves every entry expired at now to v (step 2).  Returns 1 when it stopped
 * early because v could not grow. */
static int
purge_expired(CacheObject *self, victims *v, double now)
{
    an_cnode *n;
    while ((n = an_store_expired(&self->store, now)) != NULL) {
        if (!victims_reserve(v))
            return 1;
        evict_to(self, v, ENTRY_OF(n), R_TTL);
    }
    return 0;
}

/* Evicts LRU entries while the store is over its bounds, never `keep`. */
static void
evict_over_bounds(CacheObject *self, victims *v, CacheEntry *keep, int resize)
{
    an_cnode *n;
    int by_bytes;
    while ((n = an_store_victim(&self->store, &by_bytes)) != NULL && ENTRY_OF(n) != keep &&
           victims_reserve(v))
        evict_to(self, v, ENTRY_OF(n), resize ? R_RESIZE : (by_bytes ? R_SIZE : R_LRU));
}

/* Removes e (dead, D_OWNED by this thread) from the dict if the dict still
 * maps its key to it: safe because no one else removes e (see the header).
 * Leaves e D_GONE, or D_ORPHAN when the key's __hash__/__eq__ raised.  Keeps
 * any pending exception. */
static void
discard(CacheObject *self, CacheEntry *e)
{
    saved_exc x = {NULL, NULL, NULL};
    int ok = 1, pending = PyErr_Occurred() != NULL;
    if (pending)
        exc_save(&x);
    if (self->dict != NULL && !self->py_keys) {
        /* Only C keys were ever stored: this lookup runs no Python code, so
         * nothing can change the dict before the delete, and (header) the
         * dict maps e->key to e.  A KeyError (not there) cannot happen; if it
         * did, e would be out of the dict anyway. */
        if (PyDict_DelItem(self->dict, e->key) < 0)
            PyErr_Clear();
    } else if (self->dict != NULL) {
        PyObject *cur = PyDict_GetItemWithError(self->dict, e->key);
        if (cur == (PyObject *)e)
            ok = PyDict_DelItem(self->dict, e->key) == 0;
        else if (cur == NULL && PyErr_Occurred())
            ok = 0;
        PyErr_Clear();
    }
    AN_BEGIN_CRITICAL_SECTION(self);
    e->dstate = ok ? D_GONE : D_ORPHAN;
    e->owner = 0;
    AN_END_CRITICAL_SECTION();
    if (pending)
        exc_restore(&x);
}

/* A writer found e dead: lets its removal from the dict finish.  Adopts (and
 * removes) an orphan; otherwise yields to the owner with the GIL released.
 * Returns -1 with an exception when the owner is this very thread (the cache
 * re-entered from a key's __eq__ during that removal: waiting would hang) or
 * a signal handler raised. */
static int
await_removal(CacheObject *self, CacheEntry *e, int spins)
{
    unsigned long me = PyThread_get_thread_ident(), owner;
    int state;
    AN_BEGIN_CRITICAL_SECTION(self);
    state = e->dstate;
    owner = e->owner;
    if (state == D_ORPHAN) {
        e->dstate = D_OWNED;
        e->owner = me;
    }
    AN_END_CRITICAL_SECTION();
    if (state == D_ORPHAN) {
        discard(self, e);
        return 0;
    }
    if (state != D_OWNED)
        return 0;
    if (owner == me) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Cache re-entered for a key while that key is being removed (from "
                        "the key's own __eq__/__hash__ or a finalizer it triggered)");
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    if (spins < 64) {
        sched_yield();
    } else {
        struct timespec ts = {0, 50000}; /* the owner is slow (its __eq__ blocks) */
        nanosleep(&ts, NULL);
    }
    Py_END_ALLOW_THREADS
    return PyErr_CheckSignals();
}

/* Turns the current exception into a CacheCallbackWarning.  Returns -1 when
 * the warning itself raised (warnings configured as errors). */
static int
report_callback_error(const char *what)
{
    saved_exc x;
    exc_save(&x);
    PyErr_NormalizeException(&x.type, &x.value, &x.tb);
    PyObject *errors = PyImport_ImportModule("amulet_native.errors");
    PyObject *cat = errors ? PyObject_GetAttrString(errors, "CacheCallbackWarning") : NULL;
    Py_XDECREF(errors);
    int r = -1;
    if (cat != NULL && x.value != NULL)
        r = PyErr_WarnFormat(cat, 1, "Cache %s raised %.100s: %S", what,
                             Py_TYPE(x.value)->tp_name, x.value);
    Py_XDECREF(cat);
    exc_drop(&x);
    return r;
}

/* Step 3: dict removals (first: a callback may store the same keys), then
 * on_evict, then dropping the values and the references.  Returns -1 with an
 * exception set only when a callback's warning was turned into an error; all
 * victims are disposed of either way. */
static int
finish(CacheObject *self, victims *v)
{
    saved_exc saved = {NULL, NULL, NULL};
    int rc = 0;
    if (v->n == 0)
        return 0;
    for (size_t i = 0; i < v->n; i++)
        discard(self, v->items[i]);
    if (PyErr_Occurred())
        exc_save(&saved);
    for (size_t i = 0; i < v->n && self->on_evict != NULL; i++) {
        CacheEntry *e = v->items[i];
        if (e->reason != R_NONE && self->on_evict != NULL) {
            PyObject *reason = PyUnicode_FromString(reason_names[e->reason]);
            PyObject *r = reason ? PyObject_CallFunctionObjArgs(self->on_evict, e->key,
                                                                e->value, reason, NULL)
                                 : NULL;
            Py_XDECREF(reason);
            if (r == NULL) {
                if (report_callback_error("on_evict callback") < 0 && rc == 0 &&
                    saved.type == NULL) {
                    rc = -1;
                    exc_save(&saved);
                }
                PyErr_Clear();
            } else {
                Py_DECREF(r);
            }
        }
    }
    for (size_t i = 0; i < v->n; i++) {
        CacheEntry *e = v->items[i];
        Py_CLEAR(e->value); /* dead: the value is ours alone */
        recycle(self, e);
    }
    if (v->items != v->inline_items)
        PyMem_Free(v->items);
    victims_init(v);
    if (saved.type != NULL)
        exc_restore(&saved);
    return rc;
}

/* ---- time and size ---------------------------------------------------------- */

static int
clock_now(CacheObject *self, double *now)
{
    if (self->timer == NULL) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        *now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        return 0;
    }
    PyObject *r = PyObject_CallNoArgs(self->timer);
    if (r == NULL)
        return -1;
    *now = PyFloat_AsDouble(r);
    Py_DECREF(r);
    if (*now == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(*now)) {
        PyErr_SetString(PyExc_ValueError, "Cache timer returned NaN");
        return -1;
    }
    return 0;
}

/* The time, read only when some entry can expire (an idle heap costs nothing). */
static int
now_if_needed(CacheObject *self, double *now)
{
    *now = -INFINITY;
    if (self->store.heap_len == 0)
        return 0;
    return clock_now(self, now);
}

static int
value_size(CacheObject *self, PyObject *value, size_t *out)
{
    PyObject *r;
    if (self->sizeof_fn == NULL) {
        /* What sys.getsizeof returns, without the call, for the commonest
         * values (ASCII str, float); checked against getsizeof in the tests. */
        if (PyUnicode_CheckExact(value) && PyUnicode_IS_COMPACT_ASCII(value)) {
            *out = sizeof(PyASCIIObject) + (size_t)PyUnicode_GET_LENGTH(value) + 1;
            return 0;
        }
        if (PyFloat_CheckExact(value)) {
            *out = (size_t)Py_TYPE(value)->tp_basicsize;
            return 0;
        }
        if (PyObject_CheckBuffer(value)) {
            Py_buffer view;
            if (PyObject_GetBuffer(value, &view, PyBUF_RECORDS_RO) == 0) {
                *out = (size_t)view.len;
                PyBuffer_Release(&view);
                return 0;
            }
            PyErr_Clear(); /* e.g. an object-dtype array: fall back to getsizeof */
        }
        r = PyObject_CallOneArg(self->getsizeof, value);
    } else {
        r = PyObject_CallOneArg(self->sizeof_fn, value);
    }
    if (r == NULL)
        return -1;
    if (!PyLong_Check(r)) {
        PyErr_Format(PyExc_TypeError, "sizeof() must return an int, not %.100s",
                     Py_TYPE(r)->tp_name);
        Py_DECREF(r);
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "sizeof() returned a negative size");
        return -1;
    }
    *out = (size_t)n;
    return 0;
}

/* ---- argument helpers ------------------------------------------------------- */

static PyObject *
raise_invalid(CacheObject *self, const char *field, const char *fmt, PyObject *obj)
{
    PyObject *msg = PyUnicode_FromFormat(fmt, obj);
    if (msg == NULL)
        return NULL;
    PyObject *kw = Py_BuildValue("{s:s,s:{s:s}}", "code", "value.invalid", "context", "field",
                                 field);
    PyObject *args = kw ? PyTuple_Pack(1, msg) : NULL;
    PyObject *exc = args ? PyObject_Call(self->st->exc[AN_ERR_INVALID_ARG], args, kw) : NULL;
    if (exc != NULL)
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_XDECREF(exc);
    Py_XDECREF(args);
    Py_XDECREF(kw);
    Py_DECREF(msg);
    return NULL;
}

/* ttl: None -> INFINITY; a real number > 0 (inf allowed). */
static int
parse_ttl(CacheObject *self, PyObject *o, double *out)
{
    if (o == NULL || o == Py_None) {
        *out = INFINITY;
        return 0;
    }
    if (PyBool_Check(o) || !(PyFloat_Check(o) || PyLong_Check(o))) {
        raise_invalid(self, "ttl", "ttl must be a number of seconds or None, got %R", o);
        return -1;
    }
    double t = PyFloat_AsDouble(o);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (!(t > 0)) {
        raise_invalid(self, "ttl", "ttl must be > 0 seconds, got %R", o);
        return -1;
    }
    *out = t;
    return 0;
}

/* bound: None -> 0 (unbounded); an int >= 1. */
static int
parse_bound(CacheObject *self, const char *field, PyObject *o, size_t *out)
{
    if (o == NULL || o == Py_None) {
        *out = 0;
        return 0;
    }
    if (PyBool_Check(o) || !PyLong_Check(o)) {
        PyObject *f = PyUnicode_FromFormat("%s must be an int >= 1 or None, got %%R", field);
        if (f != NULL) {
            raise_invalid(self, field, PyUnicode_AsUTF8(f), o);
            Py_DECREF(f);
        }
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(o);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n < 1) {
        PyObject *f = PyUnicode_FromFormat("%s must be >= 1 or None, got %%R", field);
        if (f != NULL) {
            raise_invalid(self, field, PyUnicode_AsUTF8(f), o);
            Py_DECREF(f);
        }
        return -1;
    }
    *out = (size_t)n;
    return 0;
}

static PyObject *
raise_too_large(CacheObject *self, size_t size)
{
    PyObject *kw = Py_BuildValue("{s:s,s:{s:s,s:n,s:n}}", "code", "cache.too_large", "context",
                                 "field", "value", "actual", (Py_ssize_t)size, "limit",
                                 (Py_ssize_t)self->store.max_bytes);
    PyObject *msg = PyUnicode_FromFormat("value of %zu bytes exceeds the cache's max_bytes %zu",
                                         size, self->store.max_bytes);
    PyObject *args = (kw && msg) ? PyTuple_Pack(1, msg) : NULL;
    PyObject *exc = args ? PyObject_Call(self->st->exc[AN_ERR_CACHE_TOO_LARGE], args, kw) : NULL;
    if (exc != NULL)
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_XDECREF(exc);
    Py_XDECREF(args);
    Py_XDECREF(msg);
    Py_XDECREF(kw);
    return NULL;
}

/* ---- CacheEntry ------------------------------------------------------------- */

static int
entry_traverse(CacheEntry *e, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(e));
    Py_VISIT(e->key);
    Py_VISIT(e->value);
    return 0;
}

/* No tp_clear: the GC breaks cycles through the Cache (cache_clear_refs), so an
 * entry's key and value are never NULL while it lives. */
static void
entry_dealloc(CacheEntry *e)
{
    PyTypeObject *tp = Py_TYPE(e);
    PyObject_GC_UnTrack(e);
    Py_XDECREF(e->key);
    Py_XDECREF(e->value);
    tp->tp_free((PyObject *)e);
    Py_DECREF(tp);
}

static PyType_Slot entry_slots[] = {
    {Py_tp_traverse, entry_traverse},
    {Py_tp_dealloc, entry_dealloc},
    {Py_tp_doc, "An entry of amulet_native.Cache (internal)."},
    {0, NULL},
};

static PyType_Spec entry_spec = {
    .name = "amulet_native._core._CacheEntry",
    .basicsize = sizeof(CacheEntry),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = entry_slots,
};

/* Drops a reference to e (not linked).  The last one keeps e as a spare
 * (when there is room) instead of freeing it: nothing else can reach it, so
 * its key and value are ours to drop (which may run finalizers). */
static void
recycle(CacheObject *self, CacheEntry *e)
{
#ifndef Py_GIL_DISABLED
    if (Py_REFCNT(e) == 1 && self->nspare < SPARE_ENTRIES) {
        Py_CLEAR(e->value);
        Py_CLEAR(e->key);
        if (self->nspare < SPARE_ENTRIES) { /* a finalizer may have filled it */
            self->spare[self->nspare++] = e;
            return;
        }
    }
#endif
    Py_DECREF(e);
}

/* A fresh entry for key (no value yet: a writer fills it under the section). */
static CacheEntry *
entry_new(CacheObject *self, PyObject *key)
{
    CacheEntry *e;
    if (self->nspare > 0) {
        e = self->spare[--self->nspare];
    } else {
        PyTypeObject *tp = (PyTypeObject *)self->entry_type;
        e = PyObject_GC_New(CacheEntry, tp);
        if (e == NULL)
            return NULL;
        Py_INCREF(tp);
        e->value = NULL;
        PyObject_GC_Track(e);
    }
    e->key = Py_NewRef(key);
    e->ttl = INFINITY;
    e->reason = R_NONE;
    e->dstate = D_ALIVE;
    e->owner = 0;
    an_cnode_init(&e->node);
    return e;
}

/* The entry the dict maps key to (new reference; it may be fresh, live or
 * dead: check under the section), NULL without an exception when absent, NULL
 * with one when the key's __hash__/__eq__ failed. */
static CacheEntry *
find_entry(CacheObject *self, PyObject *key)
{
    PyObject *e = PyDict_GetItemWithError(self->dict, key);
    if (e == NULL)
        return NULL;
    Py_INCREF(e);
    return (CacheEntry *)e;
}

/* ---- Cache: construction and GC ------------------------------------------- */

static PyObject *
cache_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyTypeObject *base = type;
    while (base->tp_base != NULL && base->tp_base != &PyBaseObject_Type)
        base = base->tp_base;
    PyObject *module = PyType_GetModule(base);
    if (module == NULL)
        return NULL;
    CacheObject *self = (CacheObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->module = Py_NewRef(module);
    self->st = an_get_state(module);
    an_store_init(&self->store, 0, 0, NULL);
    self->default_ttl = INFINITY;
    self->dict = PyDict_New();
#ifdef Py_GIL_DISABLED
    self->py_keys = 1; /* other threads' lookups run concurrently: always check */
#endif
    self->entry_type = PyObject_GetAttrString(module, "_CacheEntry");
    PyObject *sys = PyImport_ImportModule("sys");
    self->getsizeof = sys ? PyObject_GetAttrString(sys, "getsizeof") : NULL;
    Py_XDECREF(sys);
    if (self->dict == NULL || self->entry_type == NULL || self->getsizeof == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Unlinks every entry into v (reason given).  Returns 1 when it stopped
 * early because v could not grow (entries are left: call again after finish). */
static int
unlink_all(CacheObject *self, victims *v, int reason)
{
    an_cnode *n;
    while ((n = an_store_lru(&self->store)) != NULL) {
        if (!victims_reserve(v))
            return 1;
        evict_to(self, v, ENTRY_OF(n), reason);
    }
    return 0;
}

static int
cache_init(CacheObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_items", "max_bytes", "ttl", "sizeof", "timer", "on_evict",
                             NULL};
    PyObject *max_items = Py_None, *max_bytes = Py_None, *ttl = Py_None;
    PyObject *sizeof_fn = Py_None, *timer = Py_None, *on_evict = Py_None;
    size_t mi, mb;
    double t;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOO$OOO:Cache", kwlist, &max_items,
                                     &max_bytes, &ttl, &sizeof_fn, &timer, &on_evict))
        return -1;
    if (parse_bound(self, "max_items", max_items, &mi) < 0 ||
        parse_bound(self, "max_bytes", max_bytes, &mb) < 0 || parse_ttl(self, ttl, &t) < 0)
        return -1;
    PyObject *fns[3] = {sizeof_fn, timer, on_evict};
    const char *names[3] = {"sizeof", "timer", "on_evict"};
    for (int i = 0; i < 3; i++)
        if (fns[i] != Py_None && !PyCallable_Check(fns[i])) {
            raise_invalid(self, names[i], "expected a callable or None, got %R", fns[i]);
            return -1;
        }
    if (self->store.count != 0) {
        PyErr_SetString(PyExc_RuntimeError, "Cache.__init__ called on a non-empty cache");
        return -1;
    }
    self->store.max_items = mi;
    self->store.max_bytes = mb;
    self->default_ttl = t;
    Py_XSETREF(self->sizeof_fn, sizeof_fn == Py_None ? NULL : Py_NewRef(sizeof_fn));
    Py_XSETREF(self->timer, timer == Py_None ? NULL : Py_NewRef(timer));
    Py_XSETREF(self->on_evict, on_evict == Py_None ? NULL : Py_NewRef(on_evict));
    return 0;
}

static int
cache_traverse(CacheObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dict);
    Py_VISIT(self->sizeof_fn);
    Py_VISIT(self->timer);
    Py_VISIT(self->on_evict);
    Py_VISIT(self->getsizeof);
    Py_VISIT(self->entry_type);
    Py_VISIT(self->module);
    /* the store's own reference to each linked entry */
    for (an_cnode *n = self->store.head.next; n != &self->store.head; n = n->next)
        Py_VISIT((PyObject *)ENTRY_OF(n));
    for (int i = 0; i < self->nspare; i++)
        Py_VISIT((PyObject *)self->spare[i]);
    return 0;
}

/* Drops every entry without callbacks (GC and dealloc). */
static void
drop_entries(CacheObject *self)
{
    an_cnode *n;
    CacheEntry *batch[64];
    for (;;) {
        size_t k = 0;
        AN_BEGIN_CRITICAL_SECTION(self);
        while (k < 64 && (n = an_store_lru(&self->store)) != NULL) {
            an_store_unlink(&self->store, n);
            batch[k++] = ENTRY_OF(n);
        }
        AN_END_CRITICAL_SECTION();
        if (k == 0)
            break;
        for (size_t i = 0; i < k; i++)
            Py_DECREF(batch[i]);
    }
}

static int
cache_clear_refs(CacheObject *self)
{
    drop_entries(self);
    while (self->nspare > 0) /* spares hold nothing: no finalizer runs */
        Py_DECREF(self->spare[--self->nspare]);
    Py_CLEAR(self->dict);
    Py_CLEAR(self->sizeof_fn);
    Py_CLEAR(self->timer);
    Py_CLEAR(self->on_evict);
    return 0;
}

static void
cache_dealloc(CacheObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    cache_clear_refs(self);
    an_store_release(&self->store);
    Py_CLEAR(self->getsizeof);
    Py_CLEAR(self->entry_type);
    Py_CLEAR(self->module);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* A cache whose dict was cleared by the GC refuses further use. */
static int
check_alive(CacheObject *self)
{
    if (self->dict == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the Cache was cleared by the garbage collector");
        return -1;
    }
    return 0;
}

/* ---- lookups ------------------------------------------------------------------ */

/* Shared by get, __getitem__ and the @cached hit path.  Returns a new
 * reference, NULL (no exception) on a miss, NULL with an exception on error. */
static PyObject *
lookup(CacheObject *self, PyObject *key, int count)
{
    double now;
    victims v;
    PyObject *value = NULL;
    if (check_alive(self) < 0 || now_if_needed(self, &now) < 0)
        return NULL;
    CacheEntry *e = find_entry(self, key);
    if (e == NULL && PyErr_Occurred())
        return NULL;
    victims_init(&v);
    AN_BEGIN_CRITICAL_SECTION(self);
    purge_expired(self, &v, now);
    if (e != NULL && e->node.linked) {
        an_store_touch(&self->store, &e->node);
        value = Py_NewRef(e->value);
        if (count)
            self->store.hits++;
    } else if (count) {
        self->store.misses++;
    }
    AN_END_CRITICAL_SECTION();
    int rc = finish(self, &v);
    Py_XDECREF(e); /* after finish: dropping it may run a finalizer */
    if (rc < 0) {
        Py_XDECREF(value);
        return NULL;
    }
    return value;
}

int
an_cache_check(PyObject *obj)
{
    PyTypeObject *t = Py_TYPE(obj);
    while (t != NULL && t->tp_base != &PyBaseObject_Type)
        t = t->tp_base;
    return t != NULL && t->tp_new == cache_new;
}

PyObject *
an_cache_lookup(PyObject *cache, PyObject *key)
{
    return lookup((CacheObject *)cache, key, 1);
}

static PyObject *
cache_subscript(CacheObject *self, PyObject *key)
{
    PyObject *v = lookup(self, key, 1);
    if (v == NULL && !PyErr_Occurred())
        PyErr_SetObject(PyExc_KeyError, key);
    return v;
}

static PyObject *
cache_get(CacheObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_args("get", nargs, 1, 2))
        return NULL;
    PyObject *v = lookup(self, args[0], 1);
    if (v == NULL && !PyErr_Occurred())
        return Py_NewRef(nargs > 1 ? args[1] : Py_None);
    return v;
}

static PyObject *
cache_peek(CacheObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_args("peek", nargs, 1, 2))
        return NULL;
    double now;
    victims v;
    PyObject *value = NULL;
    if (check_alive(self) < 0 || now_if_needed(self, &now) < 0)
        return NULL;
    CacheEntry *e = find_entry(self, args[0]);
    if (e == NULL && PyErr_Occurred())
        return NULL;
    victims_init(&v);
    AN_BEGIN_CRITICAL_SECTION(self);
    purge_expired(self, &v, now);
    if (e != NULL && e->node.linked)
        value = Py_NewRef(e->value);
    AN_END_CRITICAL_SECTION();
    int rc = finish(self, &v);
    Py_XDECREF(e);
    if (rc < 0) {
        Py_XDECREF(value);
        return NULL;
    }
    return value ? value : Py_NewRef(nargs > 1 ? args[1] : Py_None);
}

static int
cache_contains(CacheObject *self, PyObject *key)
{
    double now;
    victims v;
    int found;
    if (check_alive(self) < 0 || now_if_needed(self, &now) < 0)
        return -1;
    CacheEntry *e = find_entry(self, key);
    if (e == NULL && PyErr_Occurred())
        return -1;
    victims_init(&v);
    AN_BEGIN_CRITICAL_SECTION(self);
    purge_expired(self, &v, now);
    found = e != NULL && e->node.linked;
    AN_END_CRITICAL_SECTION();
    int rc = finish(self, &v);
    Py_XDECREF(e);
    return rc < 0 ? -1 : found;
}

/* ---- insertion ------------------------------------------------------------------ */

/* Stores value under key (ttl: INFINITY = never expires).  With current !=
 * NULL it is setdefault: a live value is kept and returned in *current (a new
 * reference), else value is stored and returned there.  Returns 0 or -1. */
static int
store_item(CacheObject *self, PyObject *key, PyObject *value, double ttl, PyObject **current)
{
    size_t size;
    double now = -INFINITY;
    victims v;
    an_status s = AN_OK;
    CacheEntry *fresh = NULL, *e = NULL;
    PyObject *old_value = NULL;
    int rc = -1, killed = 0;
    if (check_alive(self) < 0)
        return -1;
    victims_init(&v);
    if (!c_key(key)) {
        self->py_keys = 1; /* before the key can enter the dict */
        e = find_entry(self, key); /* unhashable: TypeError before any work */
        if (e == NULL && PyErr_Occurred())
            return -1;
    } /* else SetDefault below finds it, as cheaply, and cannot fail */
    if (value_size(self, value, &size) < 0)
        goto done;
    if (!an_store_fits(&self->store, size)) {
        raise_too_large(self, size);
        goto done;
    }
    if ((self->store.heap_len > 0 || !isinf(ttl)) && clock_now(self, &now) < 0)
        goto done;
    for (int spins = 0;; spins++) {
        if (e == NULL) {
            /* An allocation may run the GC (finalizers: Python code), and
             * SetDefault runs __eq__: the entry it returns is checked below. */
            if (fresh == NULL && (fresh = entry_new(self, key)) == NULL)
                goto done;
            PyObject *cur = PyDict_SetDefault(self->dict, key, (PyObject *)fresh);
            if (cur == NULL)
                goto done;
            e = (CacheEntry *)Py_NewRef(cur);
        }
        int dead = 0;
        double deadline = isinf(ttl) ? INFINITY : now + ttl;
        AN_BEGIN_CRITICAL_SECTION(self);
        purge_expired(self, &v, now);
        if (e->dstate != D_ALIVE) {
            dead = 1;
        } else if (e->node.linked) {
            if (current != NULL) {
                *current = Py_NewRef(e->value);
                an_store_touch(&self->store, &e->node);
                self->store.hits++;
            } else if ((s = an_store_update(&self->store, &e->node, size, deadline)) == AN_OK) {
                old_value = e->value;
                e->value = Py_NewRef(value);
                e->ttl = ttl;
                evict_over_bounds(self, &v, e, 0);
            }
        } else {
            s = an_store_link(&self->store, &e->node, size, deadline);
            if (s == AN_OK) {
                Py_INCREF(e); /* the store's reference */
                e->value = Py_NewRef(value);
                e->ttl = ttl;
                if (current != NULL) {
                    *current = Py_NewRef(value);
                    self->store.misses++;
                }
                evict_over_bounds(self, &v, e, 0);
            } else {
                kill(self, e); /* fresh, and we cannot link it: nobody may */
                killed = 1;
            }
        }
        AN_END_CRITICAL_SECTION();
        if (!dead)
            break;
        if (finish(self, &v) < 0 || await_removal(self, e, spins) < 0)
            goto done;
        if (e == fresh) /* ours, inserted, then killed: never reusable */
            Py_CLEAR(fresh);
        Py_CLEAR(e);
    }
    if (killed)
        discard(self, e);
    rc = 0;
    if (s != AN_OK) {
        an_raise_status(self->st, s, "cannot grow the cache's deadline heap");
        rc = -1;
    }
done:
    if (finish(self, &v) < 0)
        rc = -1;
    /* Only now: dropping these may run finalizers (Python code). */
    Py_XDECREF(old_value);
    if (fresh != NULL)
        recycle(self, fresh); /* unused, or killed and out of the dict */
    Py_XDECREF(e);
    return rc;
}

/* Removes key; *out (if not NULL) receives the value.  Returns 1 if removed,
 * 0 if absent, -1 on error. */
static int
remove_item(CacheObject *self, PyObject *key, PyObject **out)
{
    double now;
    victims v;
    int removed = 0;
    PyObject *value = NULL;
    if (check_alive(self) < 0 || now_if_needed(self, &now) < 0)
        return -1;
    CacheEntry *e = find_entry(self, key);
    if (e == NULL && PyErr_Occurred())
        return -1;
    victims_init(&v);
    AN_BEGIN_CRITICAL_SECTION(self);
    purge_expired(self, &v, now);
    if (e != NULL && e->node.linked) { /* fresh or dead: absent */
        kill(self, e);
        removed = 1;
    }
    AN_END_CRITICAL_SECTION();
    if (removed) {
        discard(self, e);
        value = e->value; /* dead: ours alone */
        e->value = NULL;
        Py_DECREF(e); /* the store's reference */
    }
    int rc = finish(self, &v);
    if (e != NULL)
        recycle(self, e);
    if (rc < 0) {
        Py_XDECREF(value);
        return -1;
    }
    if (out != NULL)
        *out = value;
    else
        Py_XDECREF(value);
    return removed;
}

static int
cache_ass_subscript(CacheObject *self, PyObject *key, PyObject *value)
{
    if (value != NULL)
        return store_item(self, key, value, self->default_ttl, NULL);
    int r = remove_item(self, key, NULL);
    if (r == 0)
        PyErr_SetObject(PyExc_KeyError, key);
    return r > 0 ? 0 : -1;
}

static PyObject *
cache_set(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *ttl_obj = Py_None;
    double ttl;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "set(key, value, ttl=None) takes 2 or 3 arguments");
        return NULL;
    }
    if (nargs == 3)
        ttl_obj = args[2];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (nargs == 3 || !PyUnicode_Check(name) ||
            PyUnicode_CompareWithASCIIString(name, "ttl") != 0) {
            PyErr_Format(PyExc_TypeError, "set() got an unexpected keyword argument %R", name);
            return NULL;
        }
        ttl_obj = args[nargs + i];
    }
    if (ttl_obj == Py_None)
        ttl = self->default_ttl;
    else if (parse_ttl(self, ttl_obj, &ttl) < 0)
        return NULL;
    if (store_item(self, args[0], args[1], ttl, NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
cache_setdefault(CacheObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *current = NULL;
    if (!check_args("setdefault", nargs, 1, 2))
        return NULL;
    if (store_item(self, args[0], nargs > 1 ? args[1] : Py_None, self->default_ttl, &current) < 0) {
        Py_XDECREF(current);
        return NULL;
    }
    return current;
}

static PyObject *
cache_pop(CacheObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!check_args("pop", nargs, 1, 2))
        return NULL;
    PyObject *value = NULL;
    int r = remove_item(self, args[0], &value);
    if (r < 0)
        return NULL;
    if (r == 0) {
        if (nargs > 1)
            return Py_NewRef(args[1]);
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    return value;
}

static PyObject *
cache_popitem(CacheObject *self, PyObject *unused)
{
    double now;
    victims v;
    CacheEntry *e = NULL;
    if (check_alive(self) < 0 || now_if_needed(self, &now) < 0)
        return NULL;
    victims_init(&v);
    AN_BEGIN_CRITICAL_SECTION(self);
    purge_expired(self, &v, now);
    an_cnode *n = an_store_lru(&self->store);
    if (n != NULL) {
        e = ENTRY_OF(n);
        kill(self, e); /* the store's reference is now ours */
    }
    AN_END_CRITICAL_SECTION();
    PyObject *res = NULL;
    if (e != NULL) {
        discard(self, e); /* before anything that may run Python code */
        res = PyTuple_Pack(2, e->key, e->value);
    }
    int rc = finish(self, &v);
    if (e != NULL) {
        Py_CLEAR(e->value); /* dead: ours alone */
        recycle(self, e);
    }
    if (rc < 0) {
        Py_XDECREF(res);
        return NULL;
    }
    if (e == NULL)
        PyErr_SetString(PyExc_KeyError, "popitem(): cache is empty");
    return res;
}

/* Removes the orphans (dead entries whose removal from the dict failed: a
 * raising __eq__) from the dict, as a writer of their key would. */
static int
adopt_orphans(CacheObject *self)
{
    PyObject *entries = PyDict_Values(self->dict);
    if (entries == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++) {
        CacheEntry *e = (CacheEntry *)PyList_GET_ITEM(entries, i);
        int mine = 0;
        AN_BEGIN_CRITICAL_SECTION(self);
        if (e->dstate == D_ORPHAN) {
            e->dstate = D_OWNED;
            e->owner = PyThread_get_thread_ident();
            mine = 1;
        }
        AN_END_CRITICAL_SECTION();
        if (mine)
            discard(self, e);
    }
    Py_DECREF(entries);
    return 0;
}

static PyObject *
cache_clear(CacheObject *self, PyObject *unused)
{
    victims v;
    if (check_alive(self) < 0)
        return NULL;
    victims_init(&v);
    /* One pass over the entries present now: entries that on_evict (or another
     * thread) adds while the callbacks run stay, so a callback that re-inserts
     * cannot keep clear() going for ever.  More passes only when the victim
     * vector could not grow. */
    int more;
    do {
        AN_BEGIN_CRITICAL_SECTION(self);
        more = unlink_all(self, &v, R_CLEAR);
        AN_END_CRITICAL_SECTION();
        if (finish(self, &v) < 0)
            return NULL;
    } while (more);
    if ((size_t)PyDict_GET_SIZE(self->dict) > self->store.count && adopt_orphans(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static Py_ssize_t
cache_length(CacheObject *self)
{
    double now;
    victims v;
    Py_ssize_t n;
    if (check_alive(self) < 0 || now_if_needed(self, &now) < 0)
        return -1;
    victims_init(&v);
    AN_BEGIN_CRITICAL_SECTION(self);
    purge_expired(self, &v, now);
    n = (Py_ssize_t)self->store.count;
    AN_END_CRITICAL_SECTION();
    return finish(self, &v) < 0 ? -1 : n;
}

/* One entry as a snapshot saw it: a value can be swapped right after. */
typedef struct {
    PyObject *key, *value;
    double deadline;
} snap_item;

/* A snapshot, least recently used first: what 0 = keys, 1 = values,
 * 2 = (key, value), 3 = (key, value, remaining ttl or None). */
static PyObject *
snapshot(CacheObject *self, int what)
{
    double now = -INFINITY;
    victims v;
    PyObject *list = NULL;
    snap_item *items = NULL;
    size_t count = 0;
    if (check_alive(self) < 0)
        return NULL;
    if ((self->store.heap_len > 0 || what == 3) && clock_now(self, &now) < 0)
        return NULL;
    victims_init(&v);
    /* Collect under the section without allocating Python objects: */
    for (int attempt = 0; attempt < 4 && items == NULL; attempt++) {
        size_t want = self->store.count + 1;
        snap_item *buf = PyMem_Malloc(want * sizeof(*buf));
        if (buf == NULL)
            return PyErr_NoMemory();
        int ok = 0;
        AN_BEGIN_CRITICAL_SECTION(self);
        purge_expired(self, &v, now);
        if (self->store.count < want) {
            for (an_cnode *n = self->store.head.next; n != &self->store.head; n = n->next) {
                buf[count].key = Py_NewRef(ENTRY_OF(n)->key);
                buf[count].value = Py_NewRef(ENTRY_OF(n)->value);
                buf[count].deadline = n->deadline;
                count++;
            }
            ok = 1;
        }
        AN_END_CRITICAL_SECTION();
        if (ok)
            items = buf;
        else
            PyMem_Free(buf);
    }
    if (finish(self, &v) < 0 || items == NULL) {
        if (items == NULL && !PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "Cache changed size during snapshot");
        goto done;
    }
    list = PyList_New((Py_ssize_t)count);
    if (list == NULL)
        goto done;
    for (size_t i = 0; i < count; i++) {
        snap_item *e = &items[i];
        PyObject *item;
        if (what == 0)
            item = Py_NewRef(e->key);
        else if (what == 1)
            item = Py_NewRef(e->value);
        else if (what == 2)
            item = PyTuple_Pack(2, e->key, e->value);
        else if (isinf(e->deadline))
            item = Py_BuildValue("(OOO)", e->key, e->value, Py_None);
        else
            item = Py_BuildValue("(OOd)", e->key, e->value, e->deadline - now);
        if (item == NULL) {
            Py_CLEAR(list);
            goto done;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
done:
    if (items != NULL) {
        for (size_t i = 0; i < count; i++) {
            Py_DECREF(items[i].key);
            Py_DECREF(items[i].value);
        }
        PyMem_Free(items);
    }
    return list;
}

static PyObject *
cache_iter(CacheObject *self)
{
    PyObject *keys = snapshot(self, 0);
    if (keys == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static PyObject *
cache_keys_list(CacheObject *self, PyObject *unused)
{
    return snapshot(self, 0);
}

static PyObject *
cache_values_list(CacheObject *self, PyObject *unused)
{
    return snapshot(self, 1);
}

static PyObject *
cache_items_list(CacheObject *self, PyObject *unused)
{
    return snapshot(self, 2);
}

static PyObject *
cache_dump(CacheObject *self, PyObject *unused)
{
    return snapshot(self, 3);
}

/* ---- TTL and bounds management ------------------------------------------------ */

static PyObject *
cache_touch(CacheObject *self, PyObject *key)
{
    double now = -INFINITY;
    victims v;
    int found = 0;
    an_status s = AN_OK;
    if (check_alive(self) < 0)
        return NULL;
    CacheEntry *e = find_entry(self, key);
    if (e == NULL && PyErr_Occurred())
        return NULL;
    /* An entry's ttl can change until the section: one with a finite ttl
     * (or any deadline in the heap) needs the time, read before. */
    if ((self->store.heap_len > 0 || (e != NULL && !isinf(e->ttl))) && clock_now(self, &now) < 0) {
        Py_XDECREF(e);
        return NULL;
    }
    victims_init(&v);
    AN_BEGIN_CRITICAL_SECTION(self);
    purge_expired(self, &v, now);
    if (e != NULL && e->node.linked) {
        found = 1;
        an_store_touch(&self->store, &e->node);
        if (!isinf(e->ttl) && now > -INFINITY) /* else: a store raced us; it set the ttl */
            s = an_store_set_deadline(&self->store, &e->node, now + e->ttl);
    }
    AN_END_CRITICAL_SECTION();
    int rc = finish(self, &v);
    Py_XDECREF(e);
    if (rc < 0)
        return NULL;
    if (s != AN_OK)
        return an_raise_status(self->st, s, "cannot grow the cache's deadline heap");
    return PyBool_FromLong(found);
}

static PyObject *
cache_expire(CacheObject *self, PyObject *unused)
{
    double now;
    victims v;
    if (check_alive(self) < 0 || now_if_needed(self, &now) < 0)
        return NULL;
    victims_init(&v);
    size_t n = 0;
    int more;
    do { /* repeats only when the victim vector could not grow */
        AN_BEGIN_CRITICAL_SECTION(self);
        more = purge_expired(self, &v, now);
        AN_END_CRITICAL_SECTION();
        n += v.n;
        if (finish(self, &v) < 0)
            return NULL;
    } while (more);
    return PyLong_FromSize_t(n);
}

/* Evicts LRU entries (reason) until count <= items and bytes <= bytes
 * (SIZE_MAX = no bound; 0 empties the cache).  Returns the bytes freed, or (size_t)-1 with an exception. */
static size_t
evict_down_to(CacheObject *self, size_t items, size_t bytes, int reason, double now)
{
    victims v;
    size_t freed = 0;
    int more;
    victims_init(&v);
    /* Passes repeat only when the victim vector could not grow, never because
     * on_evict re-inserted entries (that would loop for ever). */
    do {
        more = 0;
        AN_BEGIN_CRITICAL_SECTION(self);
        purge_expired(self, &v, now);
        an_cnode *n;
        while ((n = an_store_lru(&self->store)) != NULL &&
               (self->store.count > items || self->store.bytes > bytes)) {
            if (!victims_reserve(&v)) {
                more = 1;
                break;
            }
            freed += n->bytes;
            evict_to(self, &v, ENTRY_OF(n), reason);
        }
        AN_END_CRITICAL_SECTION();
        if (finish(self, &v) < 0)
            return (size_t)-1;
    } while (more);
    return freed;
}

static PyObject *
cache_resize(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *mi_obj = NULL, *mb_obj = NULL;
    size_t mi = self->store.max_items, mb = self->store.max_bytes;
    double now;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs != 0) {
        PyErr_SetString(PyExc_TypeError, "resize() takes keyword arguments only");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(name, "max_items") == 0)
            mi_obj = args[i];
        else if (PyUnicode_CompareWithASCIIString(name, "max_bytes") == 0)
            mb_obj = args[i];
        else {
            PyErr_Format(PyExc_TypeError, "resize() got an unexpected keyword argument %R", name);
            return NULL;
        }
    }
    if ((mi_obj != NULL && parse_bound(self, "max_items", mi_obj, &mi) < 0) ||
        (mb_obj != NULL && parse_bound(self, "max_bytes", mb_obj, &mb) < 0))
        return NULL;
    if (check_alive(self) < 0 || now_if_needed(self, &now) < 0)
        return NULL;
    AN_BEGIN_CRITICAL_SECTION(self);
    self->store.max_items = mi;
    self->store.max_bytes = mb;
    AN_END_CRITICAL_SECTION();
    if (evict_down_to(self, mi ? mi : SIZE_MAX, mb ? mb : SIZE_MAX, R_RESIZE, now) ==
        (size_t)-1)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
cache_trim(CacheObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    size_t mi = 0, mb = 0;
    int have_mi = 0, have_mb = 0;
    double now;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs != 0) {
        PyErr_SetString(PyExc_TypeError, "trim() takes keyword arguments only");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i), *o = args[i];
        int is_items = PyUnicode_CompareWithASCIIString(name, "max_items") == 0;
        if (!is_items && PyUnicode_CompareWithASCIIString(name, "max_bytes") != 0) {
            PyErr_Format(PyExc_TypeError, "trim() got an unexpected keyword argument %R", name);
            return NULL;
        }
        if (o == Py_None)
            continue;
        if (PyBool_Check(o) || !PyLong_Check(o)) {
            raise_invalid(self, is_items ? "max_items" : "max_bytes",
                          "trim() bounds must be ints >= 0 or None, got %R", o);
            return NULL;
        }
        Py_ssize_t n = PyLong_AsSsize_t(o);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n < 0) {
            raise_invalid(self, is_items ? "max_items" : "max_bytes",
                          "trim() bounds must be ints >= 0 or None, got %R", o);
            return NULL;
        }
        if (is_items) {
            mi = (size_t)n;
            have_mi = 1;
        } else {
            mb = (size_t)n;
            have_mb = 1;
        }
    }
    if (check_alive(self) < 0 || now_if_needed(self, &now) < 0)
        return NULL;
    size_t f = evict_down_to(self, have_mi ? mi : SIZE_MAX, have_mb ? mb : SIZE_MAX, R_TRIM, now);
    if (f == (size_t)-1)
        return NULL;
    return PyLong_FromSize_t(f);
}

/* (hits, misses, evictions, expirations, items, bytes) */
static PyObject *
cache_stats(CacheObject *self, PyObject *unused)
{
    double now;
    victims v;
    unsigned long long h, m, ev, ex;
    size_t items, bytes;
    if (check_alive(self) < 0 || now_if_needed(self, &now) < 0)
        return NULL;
    victims_init(&v);
    AN_BEGIN_CRITICAL_SECTION(self);
    purge_expired(self, &v, now);
    h = self->store.hits;
    m = self->store.misses;
    ev = self->store.evictions;
    ex = self->store.expirations;
    items = self->store.count;
    bytes = self->store.bytes;
    AN_END_CRITICAL_SECTION();
    if (finish(self, &v) < 0)
        return NULL;
    return Py_BuildValue("(KKKKnn)", h, m, ev, ex, (Py_ssize_t)items, (Py_ssize_t)bytes);
}

static PyObject *
cache_reset_stats(CacheObject *self, PyObject *unused)
{
    AN_BEGIN_CRITICAL_SECTION(self);
    self->store.hits = self->store.misses = 0;
    self->store.evictions = self->store.expirations = 0;
    AN_END_CRITICAL_SECTION();
    Py_RETURN_NONE;
}

/* ---- attributes --------------------------------------------------------------- */

static PyObject *
bound_or_none(size_t v)
{
    return v ? PyLong_FromSize_t(v) : Py_NewRef(Py_None);
}

static PyObject *
cache_get_max_items(CacheObject *self, void *c)
{
    return bound_or_none(self->store.max_items);
}

static PyObject *
cache_get_max_bytes(CacheObject *self, void *c)
{
    return bound_or_none(self->store.max_bytes);
}

static PyObject *
cache_get_ttl(CacheObject *self, void *c)
{
    return isinf(self->default_ttl) ? Py_NewRef(Py_None) : PyFloat_FromDouble(self->default_ttl);
}

static PyObject *
opt(PyObject *o)
{
    return Py_NewRef(o ? o : Py_None);
}

static PyObject *
cache_get_sizeof(CacheObject *self, void *c)
{
    return opt(self->sizeof_fn);
}

static PyObject *
cache_get_timer(CacheObject *self, void *c)
{
    return opt(self->timer);
}

static PyObject *
cache_get_on_evict(CacheObject *self, void *c)
{
    return opt(self->on_evict);
}

static int
cache_set_on_evict(CacheObject *self, PyObject *value, void *c)
{
    if (value != NULL && value != Py_None && !PyCallable_Check(value)) {
        raise_invalid(self, "on_evict", "on_evict must be a callable or None, got %R", value);
        return -1;
    }
    Py_XSETREF(self->on_evict, (value == NULL || value == Py_None) ? NULL : Py_NewRef(value));
    return 0;
}

static PyObject *
cache_get_pickle_entries(CacheObject *self, void *c)
{
    return PyBool_FromLong(self->pickle_entries);
}

static int
cache_set_pickle_entries(CacheObject *self, PyObject *value, void *c)
{
    int b = value ? PyObject_IsTrue(value) : 0;
    if (b < 0)
        return -1;
    self->pickle_entries = b;
    return 0;
}

static PyGetSetDef cache_getset[] = {
    {"max_items", (getter)cache_get_max_items, NULL, "Item bound, or None.", NULL},
    {"max_bytes", (getter)cache_get_max_bytes, NULL, "Byte bound, or None.", NULL},
    {"ttl", (getter)cache_get_ttl, NULL, "Default time to live in seconds, or None.", NULL},
    {"sizeof", (getter)cache_get_sizeof, NULL, "The sizeof function, or None (default).", NULL},
    {"timer", (getter)cache_get_timer, NULL, "The timer, or None (time.monotonic).", NULL},
    {"on_evict", (getter)cache_get_on_evict, (setter)cache_set_on_evict,
     "on_evict(key, value, reason) callback, or None.", NULL},
    {"pickle_entries", (getter)cache_get_pickle_entries, (setter)cache_set_pickle_entries,
     "When true, pickling the cache includes its entries.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef cache_methods[] = {
    {"get", (PyCFunction)(void (*)(void))cache_get, METH_FASTCALL,
     "get(key, default=None): the value (marks it recently used), or default."},
    {"peek", (PyCFunction)(void (*)(void))cache_peek, METH_FASTCALL,
     "peek(key, default=None): the value without touching LRU order or stats."},
    {"set", (PyCFunction)(void (*)(void))cache_set, METH_FASTCALL | METH_KEYWORDS,
     "set(key, value, ttl=None): store, with a per-item ttl (None: the cache's)."},
    {"setdefault", (PyCFunction)(void (*)(void))cache_setdefault, METH_FASTCALL,
     "setdefault(key, default=None): the value, or store default and return it (atomic)."},
    {"pop", (PyCFunction)(void (*)(void))cache_pop, METH_FASTCALL,
     "pop(key[, default]): remove and return the value."},
    {"popitem", (PyCFunction)cache_popitem, METH_NOARGS,
     "popitem() -> (key, value): remove the least recently used item."},
    {"clear", (PyCFunction)cache_clear, METH_NOARGS,
     "clear(): remove everything (on_evict reason 'clear')."},
    {"touch", (PyCFunction)cache_touch, METH_O,
     "touch(key) -> bool: mark recently used and restart its ttl."},
    {"expire", (PyCFunction)cache_expire, METH_NOARGS,
     "expire() -> int: purge the expired entries now; returns how many."},
    {"resize", (PyCFunction)(void (*)(void))cache_resize, METH_FASTCALL | METH_KEYWORDS,
     "resize(*, max_items=..., max_bytes=...): new bounds (None = unbounded); evicts down."},
    {"trim", (PyCFunction)(void (*)(void))cache_trim, METH_FASTCALL | METH_KEYWORDS,
     "trim(*, max_items=None, max_bytes=None) -> int: evict LRU entries down to these "
     "levels without changing the bounds; returns the bytes freed."},
    {"_stats", (PyCFunction)cache_stats, METH_NOARGS,
     "_stats() -> (hits, misses, evictions, expirations, items, bytes)"},
    {"reset_stats", (PyCFunction)cache_reset_stats, METH_NOARGS, "reset_stats(): zero counters."},
    {"_keys", (PyCFunction)cache_keys_list, METH_NOARGS, "snapshot of the keys, LRU first"},
    {"_values", (PyCFunction)cache_values_list, METH_NOARGS, "snapshot of the values"},
    {"_items", (PyCFunction)cache_items_list, METH_NOARGS, "snapshot of (key, value)"},
    {"dump", (PyCFunction)cache_dump, METH_NOARGS,
     "dump() -> [(key, value, ttl_left or None)], least recently used first."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, "Cache[K, V]"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef cache_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(CacheObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot cache_slots[] = {
    {Py_tp_new, cache_new},
    {Py_tp_init, cache_init},
    {Py_tp_dealloc, cache_dealloc},
    {Py_tp_traverse, cache_traverse},
    {Py_tp_clear, cache_clear_refs},
    {Py_tp_iter, cache_iter},
    {Py_tp_methods, cache_methods},
    {Py_tp_getset, cache_getset},
    {Py_tp_members, cache_members},
    {Py_mp_subscript, cache_subscript},
    {Py_mp_ass_subscript, cache_ass_subscript},
    {Py_mp_length, cache_length},
    {Py_sq_contains, cache_contains},
    {Py_tp_doc, "The native store of amulet_native.Cache (see amulet_native.cache)."},
    {0, NULL},
};

static PyType_Spec cache_spec = {
    .name = "amulet_native._core.Cache",
    .basicsize = sizeof(CacheObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = cache_slots,
};

int
an_cache_exec(PyObject *m, an_state *st)
{
    PyObject *entry = PyType_FromModuleAndSpec(m, &entry_spec, NULL);
    if (entry == NULL)
        return -1;
    if (PyModule_AddObjectRef(m, "_CacheEntry", entry) < 0) {
        Py_DECREF(entry);
        return -1;
    }
    Py_DECREF(entry);
    PyObject *cache = PyType_FromModuleAndSpec(m, &cache_spec, NULL);
    if (cache == NULL)
        return -1;
    int r = PyModule_AddObjectRef(m, "Cache", cache);
    Py_DECREF(cache);
    if (r < 0)
        return -1;
    return an_cached_exec(m, st);
}
