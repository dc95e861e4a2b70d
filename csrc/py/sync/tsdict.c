/*
 * tsdict.c (binding) - ThreadSafeDict: a MutableMapping over a private dict
 * whose compound operations are atomic.
 *
 * Design: the entries live in a plain dict that only this object touches.
 * Each operation runs inside the object's critical section (the GIL on regular
 * builds), as atomic as the dict operation itself.  No C mutex is ever held
 * while Python code runs, so keys with Python __hash__/__eq__, user factories
 * and update functions can run freely; the one exclusive step, the commit of
 * update_with/compare_and_swap, is an atomic owner flag whose waiters release
 * the GIL and stay interruptible, and user functions (fn, factories) always
 * run outside it.  The compound operations are built so that no user call
 * happens while a decision is pending:
 *
 *  - get_or_create(key, factory) is single-flight per key.  The first caller
 *    registers a "flight" for the key (PyDict_SetDefault on a side dict, so
 *    exactly one caller wins even when key comparisons are Python code), runs
 *    the factory outside any critical section, stores the result, then wakes
 *    the other callers, which wait on the flight's an_cond with the GIL
 *    released.  A factory exception is handed to every waiter; the key stays
 *    absent.
 *  - update_with(key, fn, default) and compare_and_swap(key, expected, new)
 *    are compare-and-retry loops: read the current value, call fn (or
 *    compare with ==) outside the critical section, then store only if the
 *    key still holds the very object that was read (an identity check, no
 *    Python call); otherwise start again.  fn may therefore run more than once
 *    under contention and must not mutate the value in place.  The check and
 *    the store are two dict operations; a key whose __hash__/__eq__ is Python
 *    code can let the interpreter switch threads between them, so commits take
 *    a per-dict commit step (commit_enter: one committer at a time, the others
 *    wait with the GIL released) and are atomic with respect to each other for
 *    every key.  A plain d[key] = v racing a commit on such a key may land
 *    between the commit's check and store (and be overwritten), as with any
 *    dict; keys hashed and compared in C (str, int, bytes, tuples of them)
 *    have no such window at all.
 *
 * Iteration, keys(), values() and items() work on a snapshot copy, so a
 * concurrent writer can never make them fail with "changed size during
 * iteration".  Statistics are relaxed atomic counters.
 */
#include "an_sync_py.h"

#include <stdatomic.h>

typedef struct {
    PyObject_HEAD
    PyObject *dict;    /* the entries */
    PyObject *flights; /* key -> capsule of an_flight: get_or_create in progress */
    _Atomic uint64_t reads, writes, misses, retries;
    /* The commit step of update_with/compare_and_swap: the thread id that is
     * between its identity check and its store (0: none), and where the other
     * committers wait (GIL released) for it. */
    _Atomic unsigned long committer;
    an_cond commit_cond;
    int commit_ready;
} tsdictobject;

#define BUMP(self, field, n) atomic_fetch_add_explicit(&(self)->field, (n), memory_order_relaxed)

/* One get_or_create() in progress.  done, value and the exception are written
 * once by the owner inside the dict's critical section, read by waiters there. */
typedef struct an_flight {
    an_cond cond;
    int done;
    unsigned long owner; /* thread running the factory */
    PyObject *value;     /* result on success */
    an_saved_exc exc;    /* the factory's exception on failure */
} an_flight;

static const char FLIGHT[] = "amulet_native.flight";

static void
flight_free(PyObject *capsule)
{
    an_flight *f = PyCapsule_GetPointer(capsule, FLIGHT);
    if (f == NULL)
        return;
    an_cond_destroy(&f->cond);
    Py_XDECREF(f->value);
    an_exc_clear(&f->exc);
    PyMem_Free(f);
}

static PyObject *
flight_new(void)
{
    an_flight *f = PyMem_Calloc(1, sizeof(*f));
    if (f == NULL)
        return PyErr_NoMemory();
    if (an_cond_init(&f->cond) != AN_OK) {
        PyMem_Free(f);
        PyErr_SetString(PyExc_RuntimeError, "cannot create a condition variable");
        return NULL;
    }
    f->owner = PyThread_get_thread_ident();
    PyObject *cap = PyCapsule_New(f, FLIGHT, flight_free);
    if (cap == NULL) {
        an_cond_destroy(&f->cond);
        PyMem_Free(f);
    }
    return cap;
}

static void tsdict_dealloc(PyObject *self);

/* o is a ThreadSafeDict (or an instance of a subclass). */
static int
is_tsdict(PyObject *o)
{
    for (PyTypeObject *t = Py_TYPE(o); t != NULL; t = t->tp_base)
        if (t->tp_dealloc == tsdict_dealloc)
            return 1;
    return 0;
}

static void
set_key_error(PyObject *key)
{
    PyObject *tup = PyTuple_Pack(1, key);
    if (tup != NULL) {
        PyErr_SetObject(PyExc_KeyError, tup);
        Py_DECREF(tup);
    }
}

/* New reference to d[key], NULL without an exception when absent. */
static PyObject *
lookup(tsdictobject *self, PyObject *key)
{
    PyObject *v;
    AN_BEGIN_CRITICAL_SECTION(self);
    v = PyDict_GetItemWithError(self->dict, key);
    Py_XINCREF(v);
    AN_END_CRITICAL_SECTION();
    return v;
}

static PyObject *
snapshot(tsdictobject *self)
{
    PyObject *copy;
    AN_BEGIN_CRITICAL_SECTION(self);
    copy = PyDict_Copy(self->dict);
    AN_END_CRITICAL_SECTION();
    return copy;
}

/* Merges arg (mapping or iterable of pairs; may be NULL) and kwargs into self.
 * The source is read into a private dict first (that may call Python code),
 * then merged in one step. */
static int
merge(tsdictobject *self, PyObject *arg, PyObject *kwargs)
{
    PyObject *tmp = NULL;
    int r = -1;
    if (arg != NULL && is_tsdict(arg))
        tmp = snapshot((tsdictobject *)arg);
    else
        tmp = PyDict_New();
    if (tmp == NULL)
        return -1;
    if (arg != NULL && !is_tsdict(arg)) {
        int has_keys = PyDict_Check(arg) || PyObject_HasAttrString(arg, "keys");
        if ((has_keys ? PyDict_Merge(tmp, arg, 1) : PyDict_MergeFromSeq2(tmp, arg, 1)) < 0)
            goto done;
    }
    if (kwargs != NULL && PyDict_Merge(tmp, kwargs, 1) < 0)
        goto done;
    AN_BEGIN_CRITICAL_SECTION(self);
    r = PyDict_Update(self->dict, tmp);
    AN_END_CRITICAL_SECTION();
    if (r == 0)
        BUMP(self, writes, (uint64_t)PyDict_Size(tmp));
done:
    Py_DECREF(tmp);
    return r;
}

/* ---- type slots ---------------------------------------------------------------- */

static PyObject *
tsdict_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    tsdictobject *self = (tsdictobject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->dict = PyDict_New();
    self->flights = PyDict_New();
    if (self->dict == NULL || self->flights == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    if (an_cond_init(&self->commit_cond) != AN_OK) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_RuntimeError, "cannot create a condition variable");
        return NULL;
    }
    self->commit_ready = 1;
    return (PyObject *)self;
}

static int
tsdict_init(tsdictobject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *arg = NULL;
    if (!PyArg_UnpackTuple(args, "ThreadSafeDict", 0, 1, &arg))
        return -1;
    if (arg == NULL && (kwargs == NULL || PyDict_Size(kwargs) == 0))
        return 0;
    return merge(self, arg, kwargs);
}

static int
tsdict_traverse(tsdictobject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dict);
    Py_VISIT(self->flights);
    return 0;
}

static int
tsdict_clear_refs(tsdictobject *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->flights);
    return 0;
}

static void
tsdict_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    tsdict_clear_refs((tsdictobject *)self);
    if (((tsdictobject *)self)->commit_ready)
        an_cond_destroy(&((tsdictobject *)self)->commit_cond);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static Py_ssize_t
tsdict_len(tsdictobject *self)
{
    return PyDict_Size(self->dict);
}

static PyObject *
tsdict_subscript(tsdictobject *self, PyObject *key)
{
    BUMP(self, reads, 1);
    PyObject *v = lookup(self, key);
    if (v == NULL && !PyErr_Occurred()) {
        BUMP(self, misses, 1);
        set_key_error(key);
    }
    return v;
}

static int
tsdict_ass_subscript(tsdictobject *self, PyObject *key, PyObject *value)
{
    int r;
    AN_BEGIN_CRITICAL_SECTION(self);
    r = value == NULL ? PyDict_DelItem(self->dict, key) : PyDict_SetItem(self->dict, key, value);
    AN_END_CRITICAL_SECTION();
    if (r == 0)
        BUMP(self, writes, 1);
    return r;
}

static int
tsdict_contains(tsdictobject *self, PyObject *key)
{
    int r;
    BUMP(self, reads, 1);
    AN_BEGIN_CRITICAL_SECTION(self);
    r = PyDict_Contains(self->dict, key);
    AN_END_CRITICAL_SECTION();
    if (r == 0)
        BUMP(self, misses, 1);
    return r;
}

static PyObject *
tsdict_iter(tsdictobject *self)
{
    PyObject *keys;
    AN_BEGIN_CRITICAL_SECTION(self);
    keys = PyDict_Keys(self->dict);
    AN_END_CRITICAL_SECTION();
    if (keys == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static PyObject *
tsdict_richcompare(tsdictobject *self, PyObject *other, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !(PyDict_Check(other) || is_tsdict(other)))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *a = snapshot(self), *b = NULL, *r = NULL;
    if (a == NULL)
        return NULL;
    b = is_tsdict(other) ? snapshot((tsdictobject *)other) : Py_NewRef(other);
    if (b != NULL)
        r = PyObject_RichCompare(a, b, op);
    Py_DECREF(a);
    Py_XDECREF(b);
    return r;
}

static PyObject *
tsdict_repr(tsdictobject *self)
{
    PyObject *name = NULL, *snap = NULL, *r = NULL;
    int rec = Py_ReprEnter((PyObject *)self);
    if (rec != 0)
        return rec > 0 ? PyUnicode_FromString("ThreadSafeDict(...)") : NULL;
    name = PyObject_GetAttrString((PyObject *)Py_TYPE(self), "__name__");
    if (name != NULL && (snap = snapshot(self)) != NULL)
        r = PyUnicode_FromFormat("%U(%R)", name, snap);
    Py_ReprLeave((PyObject *)self);
    Py_XDECREF(name);
    Py_XDECREF(snap);
    return r;
}

/* ---- methods --------------------------------------------------------------------- */

/* get/setdefault/pop(key[, default], /): 0 when nargs is 1 or 2, else -1 with
 * the TypeError dict's methods raise. */
static int
key_and_default_args(const char *fname, Py_ssize_t nargs)
{
    if (nargs >= 1 && nargs <= 2)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s expected 1 or 2 arguments, got %zd", fname, nargs);
    return -1;
}

static PyObject *
tsdict_get(tsdictobject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (key_and_default_args("get", nargs) < 0)
        return NULL;
    BUMP(self, reads, 1);
    PyObject *v = lookup(self, args[0]);
    if (v == NULL && !PyErr_Occurred()) {
        BUMP(self, misses, 1);
        v = Py_NewRef(nargs == 2 ? args[1] : Py_None);
    }
    return v;
}

static PyObject *
tsdict_setdefault(tsdictobject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (key_and_default_args("setdefault", nargs) < 0)
        return NULL;
    PyObject *dflt = nargs == 2 ? args[1] : Py_None, *v;
    Py_ssize_t before, after;
    BUMP(self, reads, 1);
    AN_BEGIN_CRITICAL_SECTION(self);
    before = PyDict_GET_SIZE(self->dict);
    v = PyDict_SetDefault(self->dict, args[0], dflt);
    Py_XINCREF(v);
    after = PyDict_GET_SIZE(self->dict);
    AN_END_CRITICAL_SECTION();
    if (v != NULL && after > before) {
        BUMP(self, misses, 1);
        BUMP(self, writes, 1);
    }
    return v;
}

static PyObject *
tsdict_pop(tsdictobject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (key_and_default_args("pop", nargs) < 0)
        return NULL;
    PyObject *v;
    BUMP(self, reads, 1);
    /* dict.pop is one lookup: two threads popping a key cannot both get it. */
    AN_BEGIN_CRITICAL_SECTION(self);
    v = PyObject_CallMethod(self->dict, "pop", "(O)", args[0]);
    AN_END_CRITICAL_SECTION();
    if (v != NULL) {
        BUMP(self, writes, 1);
        return v;
    }
    if (PyErr_ExceptionMatches(PyExc_KeyError)) {
        BUMP(self, misses, 1);
        if (nargs == 2) {
            PyErr_Clear();
            return Py_NewRef(args[1]);
        }
    }
    return NULL;
}

static PyObject *
tsdict_popitem(tsdictobject *self, PyObject *unused)
{
    PyObject *v;
    AN_BEGIN_CRITICAL_SECTION(self);
    v = PyObject_CallMethod(self->dict, "popitem", NULL);
    AN_END_CRITICAL_SECTION();
    if (v != NULL)
        BUMP(self, writes, 1);
    return v;
}

static PyObject *
tsdict_clear(tsdictobject *self, PyObject *unused)
{
    AN_BEGIN_CRITICAL_SECTION(self);
    PyDict_Clear(self->dict);
    AN_END_CRITICAL_SECTION();
    BUMP(self, writes, 1);
    Py_RETURN_NONE;
}

static PyObject *
tsdict_update(tsdictobject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *arg = NULL;
    if (!PyArg_UnpackTuple(args, "update", 0, 1, &arg))
        return NULL;
    if (merge(self, arg, kwargs) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
view_of_snapshot(tsdictobject *self, const char *method)
{
    PyObject *snap = snapshot(self);
    if (snap == NULL)
        return NULL;
    PyObject *v = PyObject_CallMethod(snap, method, NULL);
    Py_DECREF(snap);
    return v;
}

static PyObject *
tsdict_keys(tsdictobject *self, PyObject *unused)
{
    return view_of_snapshot(self, "keys");
}

static PyObject *
tsdict_values(tsdictobject *self, PyObject *unused)
{
    return view_of_snapshot(self, "values");
}

static PyObject *
tsdict_items(tsdictobject *self, PyObject *unused)
{
    return view_of_snapshot(self, "items");
}

static PyObject *
tsdict_snapshot(tsdictobject *self, PyObject *unused)
{
    return snapshot(self);
}

static PyObject *
tsdict_copy(tsdictobject *self, PyObject *unused)
{
    PyObject *snap = snapshot(self);
    if (snap == NULL)
        return NULL;
    PyObject *r = PyObject_CallOneArg((PyObject *)Py_TYPE(self), snap);
    Py_DECREF(snap);
    return r;
}

static PyObject *
tsdict_reduce(tsdictobject *self, PyObject *unused)
{
    PyObject *snap = snapshot(self);
    if (snap == NULL)
        return NULL;
    return Py_BuildValue("(O(N))", (PyObject *)Py_TYPE(self), snap);
}

/* Hands the outcome recorded in a finished flight to the caller. */
static PyObject *
flight_result(an_flight *f)
{
    if (f->value != NULL)
        return Py_NewRef(f->value);
    an_exc_raise_copy(&f->exc);
    return NULL;
}

/* Publishes the outcome of flight f and wakes its waiters: v (a new
 * reference, stored under key first when store is set) or, when v is NULL,
 * the exception being raised.  Returns the outcome to the caller too. */
static PyObject *
finish_flight(tsdictobject *self, PyObject *key, an_flight *f, PyObject *v, int store)
{
    AN_BEGIN_CRITICAL_SECTION(self);
    if (v != NULL && store && PyDict_SetItem(self->dict, key, v) < 0)
        Py_CLEAR(v);
    if (v == NULL) {
        an_exc_take(&f->exc);
    } else {
        f->value = Py_NewRef(v);
    }
    f->done = 1;
    /* Only this flight can be registered under key while it is not done; if
     * the removal fails (a raising __eq__), later callers get its outcome. */
    if (PyDict_DelItem(self->flights, key) < 0)
        PyErr_Clear();
    AN_END_CRITICAL_SECTION();
    an_cond_notify_all(&f->cond);
    if (v != NULL) {
        if (store)
            BUMP(self, writes, 1);
        return v;
    }
    return flight_result(f);
}

/* A waiter's side: sleep (GIL released) until f is done, then take its outcome. */
static PyObject *
wait_flight(tsdictobject *self, an_flight *f, uint64_t seq)
{
    int done = 0;
    while (!done) {
        if (an_py_wait(&f->cond, seq, -1, NULL) < 0)
            return NULL;
        AN_BEGIN_CRITICAL_SECTION(self);
        done = f->done;
        if (!done)
            seq = an_cond_prepare(&f->cond);
        AN_END_CRITICAL_SECTION();
    }
    return flight_result(f);
}

enum { ROLE_ERROR, ROLE_OWNER, ROLE_LATE, ROLE_DONE, ROLE_RECURSIVE, ROLE_WAITER };

static PyObject *
tsdict_get_or_create(tsdictobject *self, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    static const char *const names[] = {"key", "factory"};
    PyObject *o[2];
    if (an_sync_args("get_or_create", args, nargs, kwnames, names, 2, 2, 2, o) < 0)
        return NULL;
    PyObject *key = o[0], *factory = o[1];
    BUMP(self, reads, 1);
    PyObject *v = lookup(self, key);
    if (v != NULL || PyErr_Occurred())
        return v;
    BUMP(self, misses, 1);

    PyObject *mine = flight_new(), *cap = NULL;
    if (mine == NULL)
        return NULL;
    an_flight *f = NULL;
    int role = ROLE_ERROR;
    uint64_t seq = 0;
    AN_BEGIN_CRITICAL_SECTION(self);
    /* SetDefault is one lookup: exactly one caller registers its flight. */
    cap = PyDict_SetDefault(self->flights, key, mine);
    if (cap != NULL) {
        Py_INCREF(cap);
        f = PyCapsule_GetPointer(cap, FLIGHT);
        if (cap == mine) {
            /* A flight that finished between our first lookup and this
             * registration has stored its value: publish that one. */
            v = PyDict_GetItemWithError(self->dict, key);
            Py_XINCREF(v);
            role = (v != NULL || PyErr_Occurred()) ? ROLE_LATE : ROLE_OWNER;
        } else if (f->done) {
            role = ROLE_DONE;
        } else if (f->owner == PyThread_get_thread_ident()) {
            role = ROLE_RECURSIVE;
        } else {
            seq = an_cond_prepare(&f->cond);
            role = ROLE_WAITER;
        }
    }
    AN_END_CRITICAL_SECTION();

    switch (role) {
    case ROLE_OWNER: /* the factory runs outside any critical section */
        v = finish_flight(self, key, f, PyObject_CallNoArgs(factory), 1);
        break;
    case ROLE_LATE:
        v = finish_flight(self, key, f, v, 0);
        break;
    case ROLE_DONE:
        v = flight_result(f);
        break;
    case ROLE_RECURSIVE:
        PyErr_SetString(PyExc_RuntimeError,
                        "get_or_create(): the factory for this key called get_or_create() for "
                        "the same key (it would wait for itself)");
        v = NULL;
        break;
    case ROLE_WAITER:
        v = wait_flight(self, f, seq);
        break;
    default:
        v = NULL;
    }
    Py_XDECREF(cap);
    Py_DECREF(mine);
    return v;
}

/* Takes the commit step: commits run one at a time, so the check and the store
 * of one can never interleave with another's, even when the key's __hash__ or
 * __eq__ is Python code that lets the interpreter switch threads between them.
 * Other committers wait with the GIL released (interruptible).  A commit
 * re-entered from the same thread (a key's __eq__ calling update_with on this
 * dict) raises RuntimeError instead of waiting for itself.  Returns -1 with an
 * exception set on failure. */
static int
commit_enter(tsdictobject *self)
{
    unsigned long me = PyThread_get_thread_ident();
    for (;;) {
        unsigned long free_ = 0;
        if (atomic_compare_exchange_strong(&self->committer, &free_, me))
            return 0;
        if (free_ == me) {
            PyErr_SetString(PyExc_RuntimeError,
                            "ThreadSafeDict: update_with()/compare_and_swap() re-entered from a "
                            "key's __hash__/__eq__ during a commit on the same dict");
            return -1;
        }
        uint64_t seq = an_cond_prepare(&self->commit_cond);
        if (atomic_load(&self->committer) == 0) {
            an_cond_finish(&self->commit_cond);
            continue;
        }
        if (an_py_wait(&self->commit_cond, seq, -1, NULL) < 0)
            return -1;
    }
}

static void
commit_exit(tsdictobject *self)
{
    atomic_store(&self->committer, 0);
    an_cond_notify(&self->commit_cond);
}

/* Stores value under key if key still maps to `expected` (an identity check;
 * NULL = absent).  Returns 1 stored, 0 changed meanwhile, -1 error.  The
 * caller holds a reference to expected, so the store never runs a __del__. */
static int
commit_if_same(tsdictobject *self, PyObject *key, PyObject *expected, PyObject *value)
{
    int r;
    if (commit_enter(self) < 0)
        return -1;
    AN_BEGIN_CRITICAL_SECTION(self);
    PyObject *now = PyDict_GetItemWithError(self->dict, key);
    if (now == NULL && PyErr_Occurred())
        r = -1;
    else if (now != expected)
        r = 0;
    else
        r = PyDict_SetItem(self->dict, key, value) < 0 ? -1 : 1;
    AN_END_CRITICAL_SECTION();
    commit_exit(self);
    if (r == 1)
        BUMP(self, writes, 1);
    else if (r == 0)
        BUMP(self, retries, 1);
    return r;
}

static PyObject *
tsdict_update_with(tsdictobject *self, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    static const char *const names[] = {"key", "fn", "default"};
    PyObject *o[3];
    if (an_sync_args("update_with", args, nargs, kwnames, names, 3, 3, 2, o) < 0)
        return NULL;
    PyObject *key = o[0], *fn = o[1], *dflt = o[2] ? o[2] : Py_None;
    BUMP(self, reads, 1);
    for (;;) {
        PyObject *cur = lookup(self, key);
        if (cur == NULL && PyErr_Occurred())
            return NULL;
        PyObject *new = PyObject_CallOneArg(fn, cur != NULL ? cur : dflt);
        int r = new == NULL ? -1 : commit_if_same(self, key, cur, new);
        Py_XDECREF(cur);
        if (r == 1)
            return new;
        Py_XDECREF(new);
        if (r < 0)
            return NULL;
    }
}

static PyObject *
tsdict_compare_and_swap(tsdictobject *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames)
{
    static const char *const names[] = {"key", "expected", "new"};
    PyObject *o[3];
    if (an_sync_args("compare_and_swap", args, nargs, kwnames, names, 3, 3, 3, o) < 0)
        return NULL;
    BUMP(self, reads, 1);
    for (;;) {
        PyObject *cur = lookup(self, o[0]);
        if (cur == NULL) {
            if (PyErr_Occurred())
                return NULL;
            BUMP(self, misses, 1);
            Py_RETURN_FALSE;
        }
        int eq = PyObject_RichCompareBool(cur, o[1], Py_EQ);
        int r = eq <= 0 ? eq : commit_if_same(self, o[0], cur, o[2]);
        Py_DECREF(cur);
        if (r < 0)
            return NULL;
        if (eq == 0)
            Py_RETURN_FALSE;
        if (r == 1)
            Py_RETURN_TRUE;
    }
}

static PyObject *
tsdict_stats(tsdictobject *self, PyObject *unused)
{
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:n}", "reads",
        (unsigned long long)atomic_load_explicit(&self->reads, memory_order_relaxed), "writes",
        (unsigned long long)atomic_load_explicit(&self->writes, memory_order_relaxed), "misses",
        (unsigned long long)atomic_load_explicit(&self->misses, memory_order_relaxed), "retries",
        (unsigned long long)atomic_load_explicit(&self->retries, memory_order_relaxed), "size",
        PyDict_Size(self->dict));
}

static PyObject *
tsdict_reset_stats(tsdictobject *self, PyObject *unused)
{
    atomic_store(&self->reads, 0);
    atomic_store(&self->writes, 0);
    atomic_store(&self->misses, 0);
    atomic_store(&self->retries, 0);
    Py_RETURN_NONE;
}

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef tsdict_methods[] = {
    {"get", (PyCFunction)(void (*)(void))tsdict_get, METH_FASTCALL,
     "get(key, default=None, /): the value for key, or default."},
    {"setdefault", (PyCFunction)(void (*)(void))tsdict_setdefault, METH_FASTCALL,
     "setdefault(key, default=None, /): the value for key, inserting default if absent "
     "(atomic)."},
    {"pop", (PyCFunction)(void (*)(void))tsdict_pop, METH_FASTCALL,
     "pop(key[, default], /): remove key and return its value (atomic)."},
    {"popitem", (PyCFunction)tsdict_popitem, METH_NOARGS,
     "popitem(): remove and return the last inserted (key, value) pair."},
    {"clear", (PyCFunction)tsdict_clear, METH_NOARGS, "clear(): remove every entry."},
    {"update", (PyCFunction)(void (*)(void))tsdict_update, METH_VARARGS | METH_KEYWORDS,
     "update([other], /, **kwargs): merge other and kwargs in one atomic step."},
    {"keys", (PyCFunction)tsdict_keys, METH_NOARGS, "keys(): a view of a snapshot's keys."},
    {"values", (PyCFunction)tsdict_values, METH_NOARGS,
     "values(): a view of a snapshot's values."},
    {"items", (PyCFunction)tsdict_items, METH_NOARGS, "items(): a view of a snapshot's items."},
    {"snapshot", (PyCFunction)tsdict_snapshot, METH_NOARGS,
     "snapshot() -> dict: a consistent copy of the entries."},
    {"copy", (PyCFunction)tsdict_copy, METH_NOARGS, "copy(): a new ThreadSafeDict (shallow)."},
    {"get_or_create", (PyCFunction)(void (*)(void))tsdict_get_or_create, FASTKW,
     "get_or_create(key, factory): the value for key, creating it with factory() once per key "
     "even when many threads ask at the same time."},
    {"update_with", (PyCFunction)(void (*)(void))tsdict_update_with, FASTKW,
     "update_with(key, fn, default=None): atomically store and return fn(current value, or "
     "default when absent)."},
    {"compare_and_swap", (PyCFunction)(void (*)(void))tsdict_compare_and_swap, FASTKW,
     "compare_and_swap(key, expected, new) -> bool: store new if key's value == expected."},
    {"stats", (PyCFunction)tsdict_stats, METH_NOARGS,
     "stats() -> dict: reads, writes, misses, retries and size."},
    {"reset_stats", (PyCFunction)tsdict_reset_stats, METH_NOARGS,
     "reset_stats(): set the counters of stats() to zero."},
    {"__reduce__", (PyCFunction)tsdict_reduce, METH_NOARGS, "Pickles a snapshot."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, "See PEP 585."},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(tsdict_doc,
"ThreadSafeDict(mapping_or_iterable=(), /, **kwargs)\n"
"--\n\n"
"A dict-like MutableMapping whose operations are atomic across threads.\n\n"
"Iteration, keys(), values() and items() run over a snapshot, so writers in\n"
"other threads never break them.  get_or_create() is single-flight per key\n"
"(the factory runs once; a factory exception reaches every waiter and the\n"
"key stays absent).  update_with() and compare_and_swap() are compare-and-\n"
"retry loops (the store happens only if the key still holds the object read;\n"
"fn may run again under contention, so it must be pure).  compare_and_swap\n"
"compares with ==.  stats() counts reads, writes and misses.\n\n"
"    >>> sessions = ThreadSafeDict()\n"
"    >>> sessions.get_or_create('alice', dict)\n"
"    {}\n"
"    >>> sessions.update_with('hits', lambda n: n + 1, 0)\n"
"    1\n");

static PyType_Slot tsdict_slots[] = {
    {Py_tp_new, tsdict_new},
    {Py_tp_init, tsdict_init},
    {Py_tp_dealloc, tsdict_dealloc},
    {Py_tp_traverse, tsdict_traverse},
    {Py_tp_clear, tsdict_clear_refs},
    {Py_tp_repr, tsdict_repr},
    {Py_tp_iter, tsdict_iter},
    {Py_tp_richcompare, tsdict_richcompare},
    {Py_tp_hash, PyObject_HashNotImplemented},
    {Py_tp_methods, tsdict_methods},
    {Py_mp_length, tsdict_len},
    {Py_mp_subscript, tsdict_subscript},
    {Py_mp_ass_subscript, tsdict_ass_subscript},
    {Py_sq_contains, tsdict_contains},
    {Py_tp_doc, (void *)tsdict_doc},
    {0, NULL},
};

PyType_Spec an_tsdict_spec = {
    .name = "amulet_native.ThreadSafeDict",
    .basicsize = sizeof(tsdictobject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_MAPPING,
    .slots = tsdict_slots,
};
