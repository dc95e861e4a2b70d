/*
 * locks.c (binding) - _core.LockManager over the named-lock registry
 * (csrc/core/sync/lockmgr.c).
 *
 * acquire() first tries with the GIL held (the registry mutex is only ever
 * held for a few field updates and never by a thread that waits for the GIL,
 * so this cannot deadlock); only a busy lock makes it release the GIL and
 * wait.  The wait runs in slices; between them the interrupt callback takes
 * the GIL back, runs PyErr_CheckSignals() (Ctrl-C reaches the main thread
 * within a slice) and, for waits run on behalf of an asyncio task, polls the
 * task's cancel event.  Owners are tokens: 0 means "the calling thread".
 * The Pythonic API (context managers, acquire_many, the decorator, async) is
 * amulet_native/locks.py.
 */
#include "../an_py.h"

#include "../../core/sync/an_lock.h"

#include <stdatomic.h>

static const char *const kind_names[] = {"lock", "rlock", "semaphore"};

/* ---- LockHold: one successful acquisition (one or several names) ----------- */

typedef struct {
    PyObject_HEAD
    PyObject *mgr;    /* the LockManagerObject */
    PyObject *names;  /* tuple of str, in acquisition order */
    uint64_t owner;
    atomic_int held; /* cleared by exactly one release(), even without the GIL */
} LockHoldObject;

typedef struct {
    PyObject_HEAD
    an_lockmgr *mgr;
} LockManagerObject;

static PyObject *raise_lock_error(an_state *st, an_status status, PyObject *name, double timeout,
                                  const an_lock_fail *fail);

static PyObject *
new_hold(PyObject *mgr, PyObject *names, uint64_t owner)
{
    an_state *st = (an_state *)PyType_GetModuleState(Py_TYPE(mgr));
    LockHoldObject *h = PyObject_New(LockHoldObject, (PyTypeObject *)st->lock_hold_type);
    if (h == NULL)
        return NULL;
    h->mgr = Py_NewRef(mgr);
    h->names = Py_NewRef(names);
    h->owner = owner;
    atomic_init(&h->held, 1);
    return (PyObject *)h;
}

static void
lockhold_dealloc(LockHoldObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_DECREF(self->mgr);
    Py_DECREF(self->names);
    PyObject_Free(self);
    Py_DECREF(tp);
}

static PyObject *
lockhold_release(LockHoldObject *self, PyObject *unused)
{
    (void)unused;
    an_state *st = (an_state *)PyType_GetModuleState(Py_TYPE(self->mgr));
    an_lockmgr *m = ((LockManagerObject *)self->mgr)->mgr;
    Py_ssize_t n = PyTuple_GET_SIZE(self->names);
    if (atomic_exchange(&self->held, 0) == 0) {
        PyObject *first = n > 0 ? PyTuple_GET_ITEM(self->names, 0) : Py_None;
        return raise_lock_error(st, AN_ERR_LOCK_NOT_HELD, first, 0, NULL);
    }
    PyObject *failed = NULL;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        PyObject *name = PyTuple_GET_ITEM(self->names, i);
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(name, &len);
        if (s == NULL)
            return NULL;
        if (an_lockmgr_release(m, s, (size_t)len, self->owner) != AN_OK && failed == NULL)
            failed = name;
    }
    if (failed != NULL) /* released by someone else's misuse (e.g. lm.release()) */
        return raise_lock_error(st, AN_ERR_LOCK_NOT_HELD, failed, 0, NULL);
    Py_RETURN_NONE;
}

static PyObject *
lockhold_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyObject *
lockhold_exit(LockHoldObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    PyObject *r = lockhold_release(self, NULL);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE; /* never swallows the block's exception */
}

static PyObject *
lockhold_get_names(LockHoldObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->names);
}

static PyObject *
lockhold_get_held(LockHoldObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(atomic_load(&self->held));
}

static PyMethodDef lockhold_methods[] = {
    {"release", (PyCFunction)lockhold_release, METH_NOARGS,
     "release(): release every name, in reverse order (LockReleaseError the second time)."},
    {"__enter__", (PyCFunction)lockhold_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))lockhold_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef lockhold_getset[] = {
    {"names", (getter)lockhold_get_names, NULL, "the names held, in acquisition order", NULL},
    {"held", (getter)lockhold_get_held, NULL, "False once released", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot lockhold_slots[] = {
    {Py_tp_dealloc, lockhold_dealloc},
    {Py_tp_methods, lockhold_methods},
    {Py_tp_getset, lockhold_getset},
    {Py_tp_doc, "One acquisition of named locks; releases on __exit__ or release()."},
    {0, NULL},
};

static PyType_Spec lockhold_spec = {
    .name = "amulet_native._core.LockHold",
    .basicsize = sizeof(LockHoldObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = lockhold_slots,
};

static PyObject *
decode_name(const char *s, size_t len)
{
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)len, "replace");
}

static PyObject *
raise_lock_error(an_state *st, an_status status, PyObject *name, double timeout,
                 const an_lock_fail *fail)
{
    PyObject *ctx = NULL, *cycle = NULL, *v = NULL;
    if ((ctx = PyDict_New()) == NULL || PyDict_SetItemString(ctx, "name", name) < 0)
        goto error;
    switch (status) {
    case AN_ERR_LOCK_TIMEOUT:
        if (timeout < 0)
            v = Py_NewRef(Py_None);
        else
            v = PyFloat_FromDouble(timeout);
        if (v == NULL || PyDict_SetItemString(ctx, "timeout", v) < 0)
            goto error;
        an_raise_ctx(st, status, ctx, "timed out waiting for lock %R", name);
        break;
    case AN_ERR_LOCK_DEADLOCK:
        if ((cycle = PyList_New(0)) == NULL)
            goto error;
        for (int i = 0; i < fail->n; i++) {
            PyObject *n = decode_name(fail->name[i], fail->name_len[i]);
            PyObject *edge = n == NULL ? NULL
                                       : Py_BuildValue("(KN)", (unsigned long long)fail->waiter[i],
                                                       n);
            if (edge == NULL || PyList_Append(cycle, edge) < 0) {
                Py_XDECREF(edge);
                goto error;
            }
            Py_DECREF(edge);
        }
        if (PyDict_SetItemString(ctx, "cycle", cycle) < 0)
            goto error;
        if (fail->truncated && PyDict_SetItemString(ctx, "truncated", Py_True) < 0)
            goto error;
        an_raise_ctx(st, status, ctx,
                     "waiting for lock %R would deadlock (a wait-for cycle of %d locks%s)", name,
                     fail->n, fail->truncated ? ", truncated" : "");
        break;
    case AN_ERR_LOCK_KIND:
        v = Py_BuildValue("{s:s,s:i,s:s}", "kind", kind_names[fail->kind], "permits",
                          fail->permits, "field", "kind");
        if (v == NULL || PyDict_Update(ctx, v) < 0)
            goto error;
        an_raise_ctx(st, status, ctx, "lock %R already exists as a %s with %d permit(s)", name,
                     kind_names[fail->kind], fail->permits);
        break;
    case AN_ERR_LOCK_NOT_HELD:
        an_raise_ctx(st, status, ctx, "lock %R is not held by this owner", name);
        break;
    default:
        an_raise_status(st, status, "lock %s failed", "acquire");
        break;
    }
error:
    Py_XDECREF(ctx);
    Py_XDECREF(cycle);
    Py_XDECREF(v);
    return NULL;
}

/* ---- LockManager ---------------------------------------------------------------- */

static an_state *
lm_state(PyObject *self)
{
    return (an_state *)PyType_GetModuleState(Py_TYPE(self));
}

static PyObject *
lockmanager_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"detect_deadlocks", "max_names", NULL};
    int detect = 0;
    Py_ssize_t max_names = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|pn:LockManager", kwlist, &detect,
                                     &max_names))
        return NULL;
    if (max_names < 0) {
        PyErr_SetString(PyExc_ValueError, "max_names must be >= 0");
        return NULL;
    }
    LockManagerObject *self = (LockManagerObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    an_status st = an_lockmgr_create(&self->mgr, detect, (size_t)max_names, NULL);
    if (st != AN_OK) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void
lockmanager_dealloc(LockManagerObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    an_lockmgr_destroy(self->mgr);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
get_name(PyObject *name, const char **s, Py_ssize_t *len)
{
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "lock name must be str, not %.100s",
                     Py_TYPE(name)->tp_name);
        return -1;
    }
    *s = PyUnicode_AsUTF8AndSize(name, len);
    return *s == NULL ? -1 : 0;
}

static int
get_owner(PyObject *o, uint64_t *owner)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *owner = v != 0 ? (uint64_t)v : (uint64_t)PyThread_get_thread_ident();
    return 0;
}

/* The (name, kind, permits, owner) arguments of acquire and try_acquire. */
static int
parse_lock_args(PyObject *const *args, const char **name, Py_ssize_t *len, an_lock_kind *kind,
                int *permits, uint64_t *owner)
{
    if (get_name(args[0], name, len) < 0)
        return -1;
    long k = PyLong_AsLong(args[1]);
    long p = PyLong_AsLong(args[2]);
    if ((k == -1 || p == -1) && PyErr_Occurred())
        return -1;
    if (k < AN_LOCK_MUTEX || k > AN_LOCK_SEMAPHORE || p < 1 || p > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "invalid lock kind or permits");
        return -1;
    }
    *kind = (an_lock_kind)k;
    *permits = (int)p;
    return get_owner(args[3], owner);
}

/* Takes the lock at once when it is free, else waits with the GIL released
 * until timeout (< 0: forever), until cancel (an Event, or NULL) is set, or
 * until a signal handler raises: AN_ERR_CANCELLED, *raised = 1 for the latter. */
static an_status
acquire_or_wait(LockManagerObject *self, const char *name, Py_ssize_t len, an_lock_kind kind,
                int permits, uint64_t owner, double timeout, PyObject *cancel,
                an_lock_fail *fail, int *raised)
{
    *raised = 0;
    an_status s = an_lockmgr_try_acquire(self->mgr, name, (size_t)len, kind, permits, owner,
                                         fail);
    if (s != AN_ERR_LOCK_TIMEOUT)
        return s;
    an_wait_ctx c = {NULL, cancel, 0};
    c.ts = PyEval_SaveThread();
    s = an_lockmgr_acquire(self->mgr, name, (size_t)len, kind, permits, owner, timeout,
                           an_wait_interrupt, &c, fail, NULL);
    PyEval_RestoreThread(c.ts);
    *raised = c.error;
    return s;
}

/* acquire(name, kind, permits, owner, timeout, cancel) -> bool
 * True: acquired; False: cancel was set while waiting.  timeout < 0: forever. */
static PyObject *
lockmanager_acquire(LockManagerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = lm_state((PyObject *)self);
    const char *name;
    Py_ssize_t len;
    an_lock_kind kind;
    int permits;
    uint64_t owner;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "acquire() takes 6 arguments");
        return NULL;
    }
    if (parse_lock_args(args, &name, &len, &kind, &permits, &owner) < 0)
        return NULL;
    double timeout = PyFloat_AsDouble(args[4]);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    if (isnan(timeout)) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return NULL;
    }
    an_lock_fail fail;
    int raised;
    an_status s = acquire_or_wait(self, name, len, kind, permits, owner, timeout, args[5], &fail,
                                  &raised);
    if (s == AN_OK)
        Py_RETURN_TRUE;
    if (s == AN_ERR_CANCELLED) {
        if (raised)
            return NULL;
        Py_RETURN_FALSE;
    }
    if (s == AN_ERR_NOMEM)
        return PyErr_NoMemory();
    return raise_lock_error(st, s, args[0], timeout, &fail);
}

static int
bad_arg(an_state *st, const char *field, const char *msg)
{
    PyObject *ctx = Py_BuildValue("{s:s}", "field", field);
    if (ctx != NULL) {
        an_raise_ctx(st, AN_ERR_INVALID_ARG, ctx, "%s", msg);
        Py_DECREF(ctx);
    }
    return -1;
}

/* hold(name, kind="lock", permits=1, timeout=None) -> LockHold: the fast path
 * of LockManager.acquire for the calling thread, arguments checked here. */
static PyObject *
lockmanager_hold(LockManagerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = lm_state((PyObject *)self);
    const char *name;
    Py_ssize_t len;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "hold() takes 4 arguments");
        return NULL;
    }
    if (get_name(args[0], &name, &len) < 0)
        return NULL;
    an_lock_kind kind;
    if (!PyUnicode_Check(args[1])) {
        bad_arg(st, "kind", "kind must be 'lock', 'rlock' or 'semaphore'");
        return NULL;
    }
    if (PyUnicode_CompareWithASCIIString(args[1], "lock") == 0)
        kind = AN_LOCK_MUTEX;
    else if (PyUnicode_CompareWithASCIIString(args[1], "rlock") == 0)
        kind = AN_LOCK_RLOCK;
    else if (PyUnicode_CompareWithASCIIString(args[1], "semaphore") == 0)
        kind = AN_LOCK_SEMAPHORE;
    else {
        bad_arg(st, "kind", "kind must be 'lock', 'rlock' or 'semaphore'");
        return NULL;
    }
    long permits = -1;
    if (PyLong_CheckExact(args[2]))
        permits = PyLong_AsLong(args[2]);
    if (permits == -1 && PyErr_Occurred())
        PyErr_Clear();
    if (permits < 1 || permits > INT_MAX) {
        bad_arg(st, "permits", "permits must be an int >= 1");
        return NULL;
    }
    if (kind != AN_LOCK_SEMAPHORE && permits != 1) {
        bad_arg(st, "permits", "permits applies to semaphores only");
        return NULL;
    }
    double timeout = -1.0;
    if (args[3] != Py_None) {
        timeout = PyFloat_AsDouble(args[3]);
        if (timeout == -1.0 && PyErr_Occurred())
            return NULL;
        if (!(timeout >= 0.0)) {
            bad_arg(st, "timeout", "timeout must be None or >= 0");
            return NULL;
        }
    }
    uint64_t owner = (uint64_t)PyThread_get_thread_ident();
    an_lock_fail fail;
    int raised;
    an_status s = acquire_or_wait(self, name, len, kind, (int)permits, owner, timeout, NULL, &fail,
                                  &raised);
    if (s == AN_ERR_CANCELLED)
        return NULL; /* a signal handler raised */
    if (s != AN_OK) {
        if (s == AN_ERR_NOMEM)
            return PyErr_NoMemory();
        return raise_lock_error(st, s, args[0], timeout, &fail);
    }
    PyObject *names = PyTuple_Pack(1, args[0]);
    PyObject *h = names == NULL ? NULL : new_hold((PyObject *)self, names, owner);
    Py_XDECREF(names);
    if (h == NULL)
        an_lockmgr_release(self->mgr, name, (size_t)len, owner);
    return h;
}

/* adopt(names: tuple[str, ...], owner) -> LockHold for names already acquired
 * by owner (acquire_many, acquire_async). */
static PyObject *
lockmanager_adopt(LockManagerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t owner;
    if (nargs != 2 || !PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "adopt(names: tuple, owner)");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args[0]); i++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(args[0], i))) {
            PyErr_SetString(PyExc_TypeError, "lock names must be str");
            return NULL;
        }
    if (get_owner(args[1], &owner) < 0)
        return NULL;
    return new_hold((PyObject *)self, args[0], owner);
}

/* try_acquire(name, kind, permits, owner) -> bool: never waits, and a busy
 * lock does not count as contention (the async fast path). */
static PyObject *
lockmanager_try_acquire(LockManagerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    const char *name;
    Py_ssize_t len;
    an_lock_kind kind;
    int permits;
    uint64_t owner;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "try_acquire() takes 4 arguments");
        return NULL;
    }
    if (parse_lock_args(args, &name, &len, &kind, &permits, &owner) < 0)
        return NULL;
    an_lock_fail fail;
    an_status s = an_lockmgr_try_acquire(self->mgr, name, (size_t)len, kind, permits, owner,
                                         &fail);
    if (s == AN_OK)
        Py_RETURN_TRUE;
    if (s == AN_ERR_LOCK_TIMEOUT)
        Py_RETURN_FALSE;
    if (s == AN_ERR_NOMEM)
        return PyErr_NoMemory();
    return raise_lock_error(lm_state((PyObject *)self), s, args[0], 0, &fail);
}

/* release(name, owner) */
static PyObject *
lockmanager_release(LockManagerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    const char *name;
    Py_ssize_t len;
    uint64_t owner;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "release() takes 2 arguments");
        return NULL;
    }
    if (get_name(args[0], &name, &len) < 0 || get_owner(args[1], &owner) < 0)
        return NULL;
    an_status s = an_lockmgr_release(self->mgr, name, (size_t)len, owner);
    if (s != AN_OK)
        return raise_lock_error(lm_state((PyObject *)self), s, args[0], 0, NULL);
    Py_RETURN_NONE;
}

static PyObject *
stats_dict(const an_lock_stats *s)
{
    PyObject *owner = s->owner ? PyLong_FromUnsignedLongLong(s->owner) : Py_NewRef(Py_None);
    if (owner == NULL)
        return NULL;
    return Py_BuildValue("{s:s,s:i,s:i,s:N,s:K,s:i,s:K,s:K,s:K,s:K,s:d,s:d}", "kind",
                         kind_names[s->kind], "permits", s->permits, "holders", s->held,
                         "owner", owner, "depth", (unsigned long long)s->depth, "waiters",
                         s->waiters, "acquisitions", (unsigned long long)s->acquisitions,
                         "contended", (unsigned long long)s->contended, "timeouts",
                         (unsigned long long)s->timeouts, "deadlocks",
                         (unsigned long long)s->deadlocks, "wait_total", s->wait_total,
                         "wait_max", s->wait_max);
}

/* stats(name) -> dict | None */
static PyObject *
lockmanager_stats(LockManagerObject *self, PyObject *arg)
{
    const char *name;
    Py_ssize_t len;
    if (get_name(arg, &name, &len) < 0)
        return NULL;
    an_lock_stats s;
    char buf[8];
    if (an_lockmgr_stat(self->mgr, name, (size_t)len, &s, buf, sizeof(buf)) != AN_OK)
        Py_RETURN_NONE;
    return stats_dict(&s);
}

/* all_stats() -> {name: dict} */
static PyObject *
lockmanager_all_stats(LockManagerObject *self, PyObject *unused)
{
    (void)unused;
    an_lock_stats *all = NULL;
    size_t n = 0;
    if (an_lockmgr_stat_all(self->mgr, &all, &n) != AN_OK)
        return PyErr_NoMemory();
    PyObject *out = PyDict_New();
    if (out == NULL)
        goto error;
    for (size_t i = 0; i < n; i++) {
        PyObject *k = decode_name(all[i].name, all[i].name_len);
        PyObject *v = k == NULL ? NULL : stats_dict(&all[i]);
        if (v == NULL || PyDict_SetItem(out, k, v) < 0) {
            Py_XDECREF(k);
            Py_XDECREF(v);
            Py_CLEAR(out);
            goto error;
        }
        Py_DECREF(k);
        Py_DECREF(v);
    }
error:
    an_free(NULL, all);
    return out;
}

static Py_ssize_t
lockmanager_len(LockManagerObject *self)
{
    return (Py_ssize_t)an_lockmgr_count(self->mgr);
}

static PyMethodDef lockmanager_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))lockmanager_acquire, METH_FASTCALL,
     "acquire(name, kind, permits, owner, timeout, cancel) -> bool"},
    {"hold", (PyCFunction)(void (*)(void))lockmanager_hold, METH_FASTCALL,
     "hold(name, kind, permits, timeout) -> LockHold"},
    {"adopt", (PyCFunction)(void (*)(void))lockmanager_adopt, METH_FASTCALL,
     "adopt(names, owner) -> LockHold"},
    {"try_acquire", (PyCFunction)(void (*)(void))lockmanager_try_acquire, METH_FASTCALL,
     "try_acquire(name, kind, permits, owner) -> bool"},
    {"release", (PyCFunction)(void (*)(void))lockmanager_release, METH_FASTCALL,
     "release(name, owner)"},
    {"stats", (PyCFunction)lockmanager_stats, METH_O, "stats(name) -> dict | None"},
    {"all_stats", (PyCFunction)lockmanager_all_stats, METH_NOARGS, "all_stats() -> dict"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot lockmanager_slots[] = {
    {Py_tp_new, lockmanager_new},
    {Py_tp_dealloc, lockmanager_dealloc},
    {Py_tp_methods, lockmanager_methods},
    {Py_mp_length, lockmanager_len},
    {Py_tp_doc, "LockManager(detect_deadlocks=False, max_names=0): native named-lock registry "
                "(see amulet_native.locks.LockManager)."},
    {0, NULL},
};

static PyType_Spec lockmanager_spec = {
    .name = "amulet_native._core.LockManager",
    .basicsize = sizeof(LockManagerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = lockmanager_slots,
};

int
an_locks_exec(PyObject *m, an_state *st)
{
    st->lock_hold_type = PyType_FromModuleAndSpec(m, &lockhold_spec, NULL);
    if (st->lock_hold_type == NULL || PyModule_AddObjectRef(m, "LockHold", st->lock_hold_type) < 0)
        return -1;
    return an_add_type(m, &lockmanager_spec, "LockManager");
}
