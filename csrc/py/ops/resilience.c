/*
 * resilience.c (binding) - _core.Breaker, _core.BreakerCall, _core.RetryCall
 * and _core.RetryBudget: the native parts of amulet_native/resilience.py.
 *
 * The decorated call is what pays here.  RetryCall and BreakerCall are
 * vectorcall wrappers: on the success path they call the wrapped function
 * once and return, touching no Python code of the library (a breaker adds one
 * atomic load and one lock-free window update).  Everything else - the retry
 * loop with its waits, budget and notes, classifying an exception as
 * recorded or ignored, raising CircuitOpenError, running listeners - is
 * handed to Python callables given at construction, after the core call has
 * returned, so no C lock is ever held while Python code runs.
 */
#include "../an_py.h"

#include <stdatomic.h>
#include <structmember.h>

#include "../../core/ops/an_breaker.h"
#include "../../core/sync/an_wait.h"

/* ---- helpers ------------------------------------------------------------- */

/* now_ns argument: None = CLOCK_MONOTONIC, else an int of nanoseconds. */
static int
now_arg(PyObject *o, int64_t *out)
{
    if (o == Py_None) {
        *out = an_monotonic_ns();
        return 0;
    }
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)v;
    return 0;
}

static PyObject *
vcall_as_tuple(PyObject *const *args, size_t nargsf, PyObject *kwnames, PyObject **kwargs)
{
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    PyObject *tuple = PyTuple_New(n);
    if (tuple == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    *kwargs = NULL;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        *kwargs = PyDict_New();
        if (*kwargs == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++)
            if (PyDict_SetItem(*kwargs, PyTuple_GET_ITEM(kwnames, i), args[n + i]) < 0) {
                Py_DECREF(tuple);
                Py_CLEAR(*kwargs);
                return NULL;
            }
    }
    return tuple;
}

/* The raised exception, normalised, with its traceback attached; the error
 * indicator is cleared.  NULL only if nothing was raised (then SystemError). */
static PyObject *
fetch_exception(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (t == NULL) {
        PyErr_SetString(PyExc_SystemError, "wrapped call failed without an exception");
        return NULL;
    }
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(v, tb);
        Py_DECREF(tb);
    }
    Py_DECREF(t);
    return v;
}

/* ---- Breaker ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    an_breaker *b;
    int need_time; /* slow calls or a time window: every call reads the clock */
} BreakerObject;

static PyObject *
breaker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"failure_rate", "slow_rate", "slow_ns", "window", "time_window",
                             "minimum_calls", "wait_open_ns", "half_open_calls", NULL};
    an_breaker_config c;
    memset(&c, 0, sizeof(c));
    long long slow_ns, wait_ns;
    unsigned int window, min_calls, ho;
    int time_window;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ddLIpILI:Breaker", kwlist, &c.failure_rate,
                                     &c.slow_rate, &slow_ns, &window, &time_window, &min_calls,
                                     &wait_ns, &ho))
        return NULL;
    c.slow_ns = slow_ns;
    c.window = window;
    c.time_window = time_window;
    c.minimum_calls = min_calls;
    c.wait_open_ns = wait_ns;
    c.half_open_calls = ho;
    BreakerObject *self = (BreakerObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    an_status s = an_breaker_create(&self->b, &c, NULL);
    if (s != AN_OK) {
        Py_DECREF(self);
        if (s == AN_ERR_INVALID_ARG)
            PyErr_SetString(PyExc_ValueError, "invalid breaker configuration");
        else
            PyErr_NoMemory();
        return NULL;
    }
    self->need_time = c.slow_ns > 0 || c.time_window;
    return (PyObject *)self;
}

static void
breaker_dealloc(BreakerObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    an_breaker_destroy(self->b);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* acquire(now_ns) -> (ticket, transition): ticket -1 = refused */
static PyObject *
breaker_acquire(BreakerObject *self, PyObject *now)
{
    int64_t t;
    if (now_arg(now, &t) < 0)
        return NULL;
    int tr;
    int64_t ticket = an_breaker_acquire(self->b, t, &tr);
    return Py_BuildValue("(Li)", (long long)ticket, tr);
}

/* record(ticket, failed, duration_ns, now_ns) -> transition */
static PyObject *
breaker_record(BreakerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "record() takes 4 arguments");
        return NULL;
    }
    long long ticket = PyLong_AsLongLong(args[0]);
    int failed = PyObject_IsTrue(args[1]);
    long long dur = PyLong_AsLongLong(args[2]);
    int64_t now;
    if (PyErr_Occurred() || failed < 0 || now_arg(args[3], &now) < 0)
        return NULL;
    int tr = an_breaker_record(self->b, ticket, failed ? AN_BRK_FAILURE : AN_BRK_SUCCESS, dur, now);
    return PyLong_FromLong(tr);
}

static PyObject *
breaker_release(BreakerObject *self, PyObject *ticket)
{
    long long t = PyLong_AsLongLong(ticket);
    if (t == -1 && PyErr_Occurred())
        return NULL;
    an_breaker_release(self->b, t);
    Py_RETURN_NONE;
}

/* transition(to, now_ns, from_state) -> transition; from_state -1 = any */
static PyObject *
breaker_transition(BreakerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "transition() takes 3 arguments");
        return NULL;
    }
    long to = PyLong_AsLong(args[0]);
    long from = PyLong_AsLong(args[2]);
    int64_t now;
    if (PyErr_Occurred() || now_arg(args[1], &now) < 0)
        return NULL;
    if (to < 0 || to > 3 || from < -1 || from > 3) {
        PyErr_SetString(PyExc_ValueError, "state out of range");
        return NULL;
    }
    int tr = from < 0 ? an_breaker_transition(self->b, (an_brk_state)to, now)
                      : an_breaker_transition_from(self->b, (an_brk_state)from,
                                                   (an_brk_state)to, now);
    return PyLong_FromLong(tr);
}

static PyObject *
breaker_set_opened_at(BreakerObject *self, PyObject *ns)
{
    long long v = PyLong_AsLongLong(ns);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    an_breaker_set_opened_at(self->b, v);
    Py_RETURN_NONE;
}

static PyObject *
breaker_retry_after_ns(BreakerObject *self, PyObject *now)
{
    int64_t t;
    if (now_arg(now, &t) < 0)
        return NULL;
    return PyLong_FromLongLong(an_breaker_retry_after_ns(self->b, t));
}

/* metrics(now_ns) -> (state, calls, failures, slow, not_permitted,
 *                     total_calls, total_failures, transitions, opened_at_ns) */
static PyObject *
breaker_metrics(BreakerObject *self, PyObject *now)
{
    int64_t t;
    if (now_arg(now, &t) < 0)
        return NULL;
    an_breaker_metrics m;
    an_breaker_get_metrics(self->b, t, &m);
    return Py_BuildValue("(iKKKKKKKL)", (int)m.state, (unsigned long long)m.calls,
                         (unsigned long long)m.failures, (unsigned long long)m.slow,
                         (unsigned long long)m.not_permitted, (unsigned long long)m.total_calls,
                         (unsigned long long)m.total_failures, (unsigned long long)m.transitions,
                         (long long)m.opened_at_ns);
}

static PyObject *
breaker_get_state(BreakerObject *self, void *unused)
{
    (void)unused;
    return PyLong_FromLong((long)an_breaker_state(self->b));
}

static PyMethodDef breaker_methods[] = {
    {"acquire", (PyCFunction)breaker_acquire, METH_O, "acquire(now_ns) -> (ticket, transition)"},
    {"record", (PyCFunction)(void (*)(void))breaker_record, METH_FASTCALL,
     "record(ticket, failed, duration_ns, now_ns) -> transition"},
    {"release", (PyCFunction)breaker_release, METH_O, "release(ticket)"},
    {"transition", (PyCFunction)(void (*)(void))breaker_transition, METH_FASTCALL,
     "transition(to, now_ns, from_state) -> transition"},
    {"set_opened_at", (PyCFunction)breaker_set_opened_at, METH_O, "set_opened_at(ns)"},
    {"retry_after_ns", (PyCFunction)breaker_retry_after_ns, METH_O, "retry_after_ns(now_ns) -> int"},
    {"metrics", (PyCFunction)breaker_metrics, METH_O, "metrics(now_ns) -> tuple"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef breaker_getset[] = {
    {"state", (getter)breaker_get_state, NULL, "0 closed, 1 open, 2 half-open, 3 forced open", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot breaker_slots[] = {
    {Py_tp_new, breaker_new},
    {Py_tp_dealloc, breaker_dealloc},
    {Py_tp_methods, breaker_methods},
    {Py_tp_getset, breaker_getset},
    {Py_tp_doc, "Breaker(...): the native state machine of resilience.CircuitBreaker."},
    {0, NULL},
};

static PyType_Spec breaker_spec = {
    .name = "amulet_native._core.Breaker",
    .basicsize = sizeof(BreakerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = breaker_slots,
};

/* The module's Breaker / RetryBudget type, found from one of its other types
 * (borrowed; the module holds it). */
static PyTypeObject *
module_type(PyTypeObject *from, const char *name)
{
    PyObject *m = PyType_GetModule(from);
    if (m == NULL)
        return NULL;
    PyObject *t = PyObject_GetAttrString(m, name);
    if (t == NULL)
        return NULL;
    Py_DECREF(t); /* the module keeps it alive */
    return (PyTypeObject *)t;
}

static PyTypeObject *
breaker_type_of(PyTypeObject *from)
{
    return module_type(from, "Breaker");
}

static PyTypeObject *
budget_type_of(PyTypeObject *from)
{
    return module_type(from, "RetryBudget");
}

/* ---- the vectorcall wrappers (shared shape) ------------------------------ */

/* Both wrappers carry a __dict__ (functools.update_wrapper writes __name__,
 * __doc__, __wrapped__ there) and bind as methods. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;
    PyObject *fn;
    /* BreakerCall */
    BreakerObject *breaker;
    PyObject *on_transition, *on_reject, *on_error;
    /* RetryCall */
    PyObject *engine;
    PyObject *budget;
    /* calls through the wrapper: atomic on free-threaded builds; with the GIL
     * a plain increment (the GIL orders it), which keeps a lock-prefixed
     * instruction off the success path */
#ifdef Py_GIL_DISABLED
    _Atomic uint64_t calls;
#else
    uint64_t calls;
#endif
} WrapObject;

static int
wrap_traverse(WrapObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dict);
    Py_VISIT(self->fn);
    Py_VISIT(self->breaker);
    Py_VISIT(self->on_transition);
    Py_VISIT(self->on_reject);
    Py_VISIT(self->on_error);
    Py_VISIT(self->engine);
    Py_VISIT(self->budget);
    return 0;
}

static int
wrap_clear(WrapObject *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->fn);
    Py_CLEAR(self->breaker);
    Py_CLEAR(self->on_transition);
    Py_CLEAR(self->on_reject);
    Py_CLEAR(self->on_error);
    Py_CLEAR(self->engine);
    Py_CLEAR(self->budget);
    return 0;
}

static void
wrap_dealloc(WrapObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    wrap_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
wrap_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    (void)type;
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyObject *
wrap_get_calls(WrapObject *self, void *unused)
{
    (void)unused;
#ifdef Py_GIL_DISABLED
    return PyLong_FromUnsignedLongLong(atomic_load_explicit(&self->calls, memory_order_relaxed));
#else
    return PyLong_FromUnsignedLongLong(self->calls);
#endif
}

static PyMemberDef wrap_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(WrapObject, vectorcall), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(WrapObject, dict), READONLY, NULL},
    {"__fn__", T_OBJECT, offsetof(WrapObject, fn), READONLY, "the wrapped callable"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef wrap_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"calls", (getter)wrap_get_calls, NULL, "calls made through this wrapper", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---- BreakerCall --------------------------------------------------------- */

/* Calls a notification callback with one int; its errors are the callback's
 * business (the Python side catches and warns), but a failure here must not
 * lose an exception already set, so the caller's exception is kept. */
static int
notify(PyObject *cb, int value)
{
    PyObject *v = PyLong_FromLong(value);
    if (v == NULL)
        return -1;
    PyObject *r = PyObject_CallOneArg(cb, v);
    Py_DECREF(v);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *
breakercall_vectorcall(WrapObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    an_breaker *b = self->breaker->b;
    int need_time = self->breaker->need_time;
    int64_t start = 0;
    if (need_time || an_breaker_state(b) != AN_BRK_CLOSED)
        start = an_monotonic_ns();
    int tr;
    int64_t ticket = an_breaker_acquire(b, start, &tr);
    if (tr != AN_BRK_NONE && notify(self->on_transition, tr) < 0) {
        if (ticket >= 0)
            an_breaker_release(b, ticket);
        return NULL;
    }
    if (ticket < 0)
        return PyObject_CallNoArgs(self->on_reject); /* raises CircuitOpenError */
    PyObject *r = PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    int64_t end = need_time ? an_monotonic_ns() : 0;
    if (r != NULL) {
        /* without the clock read, a transition this success causes (the
         * last half-open trial, or minimum_calls reached) reads it itself */
        tr = an_breaker_record(b, ticket, AN_BRK_SUCCESS, end - start, need_time ? end : AN_BRK_NOW);
        if (tr != AN_BRK_NONE && notify(self->on_transition, tr) < 0)
            Py_CLEAR(r);
        return r;
    }
    /* on_error(ticket, exc, duration_ns): classifies, records or releases,
     * runs the listeners, and re-raises exc. */
    PyObject *exc = fetch_exception();
    if (exc == NULL)
        return NULL;
    PyObject *res = PyObject_CallFunction(self->on_error, "LOL", (long long)ticket, exc,
                                          (long long)(end - start));
    if (res != NULL) { /* on_error must raise; re-raise the original if it did not */
        Py_DECREF(res);
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    }
    Py_DECREF(exc);
    return NULL;
}

/* BreakerCall(breaker, fn, on_transition, on_reject, on_error) */
static PyObject *
breakercall_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *br, *fn, *on_t, *on_r, *on_e;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        PyErr_SetString(PyExc_TypeError, "BreakerCall() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOOOO:BreakerCall", &br, &fn, &on_t, &on_r, &on_e))
        return NULL;
    PyTypeObject *bt = breaker_type_of(type);
    if (bt == NULL)
        return NULL;
    if (!PyObject_TypeCheck(br, bt)) {
        PyErr_SetString(PyExc_TypeError, "BreakerCall() needs a _core.Breaker");
        return NULL;
    }
    WrapObject *self = (WrapObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = (vectorcallfunc)breakercall_vectorcall;
    self->breaker = (BreakerObject *)Py_NewRef(br);
    self->fn = Py_NewRef(fn);
    self->on_transition = Py_NewRef(on_t);
    self->on_reject = Py_NewRef(on_r);
    self->on_error = Py_NewRef(on_e);
    return (PyObject *)self;
}

static PyType_Slot breakercall_slots[] = {
    {Py_tp_new, breakercall_new},
    {Py_tp_dealloc, wrap_dealloc},
    {Py_tp_traverse, wrap_traverse},
    {Py_tp_clear, wrap_clear},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, wrap_descr_get},
    {Py_tp_members, wrap_members},
    {Py_tp_getset, wrap_getset},
    {Py_tp_doc, "A function guarded by a native circuit breaker (CircuitBreaker.__call__)."},
    {0, NULL},
};

static PyType_Spec breakercall_spec = {
    .name = "amulet_native._core.BreakerCall",
    .basicsize = sizeof(WrapObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = breakercall_slots,
};

/* ---- RetryBudget --------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    an_rbudget *r;
} BudgetObject;

static PyObject *
budget_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ratio", "min_per_second", "ttl", NULL};
    double ratio, minps;
    unsigned int ttl;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ddI:RetryBudget", kwlist, &ratio, &minps, &ttl))
        return NULL;
    BudgetObject *self = (BudgetObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    an_status s = an_rbudget_create(&self->r, ratio, minps, ttl, NULL);
    if (s != AN_OK) {
        Py_DECREF(self);
        if (s == AN_ERR_INVALID_ARG)
            PyErr_SetString(PyExc_ValueError, "invalid retry budget");
        else
            PyErr_NoMemory();
        return NULL;
    }
    return (PyObject *)self;
}

static void
budget_dealloc(BudgetObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    an_rbudget_destroy(self->r);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
budget_deposit(BudgetObject *self, PyObject *now)
{
    int64_t t;
    if (now_arg(now, &t) < 0)
        return NULL;
    an_rbudget_deposit(self->r, t);
    Py_RETURN_NONE;
}

static PyObject *
budget_withdraw(BudgetObject *self, PyObject *now)
{
    int64_t t;
    if (now_arg(now, &t) < 0)
        return NULL;
    return PyBool_FromLong(an_rbudget_withdraw(self->r, t));
}

/* stats(now_ns) -> (requests, retries, refused_total, balance) */
static PyObject *
budget_stats(BudgetObject *self, PyObject *now)
{
    int64_t t;
    if (now_arg(now, &t) < 0)
        return NULL;
    uint64_t q, r, refused;
    double bal;
    an_rbudget_stats(self->r, t, &q, &r, &refused, &bal);
    return Py_BuildValue("(KKKd)", (unsigned long long)q, (unsigned long long)r,
                         (unsigned long long)refused, bal);
}

static PyMethodDef budget_methods[] = {
    {"deposit", (PyCFunction)budget_deposit, METH_O, "deposit(now_ns): count one request"},
    {"withdraw", (PyCFunction)budget_withdraw, METH_O, "withdraw(now_ns) -> bool: take a retry"},
    {"stats", (PyCFunction)budget_stats, METH_O,
     "stats(now_ns) -> (requests, retries, refused_total, balance)"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot budget_slots[] = {
    {Py_tp_new, budget_new},
    {Py_tp_dealloc, budget_dealloc},
    {Py_tp_methods, budget_methods},
    {Py_tp_doc, "RetryBudget(ratio, min_per_second, ttl): the native retry budget."},
    {0, NULL},
};

static PyType_Spec budget_spec = {
    .name = "amulet_native._core.RetryBudget",
    .basicsize = sizeof(BudgetObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = budget_slots,
};

/* ---- RetryCall ----------------------------------------------------------- */

static PyObject *
retrycall_vectorcall(WrapObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
#ifdef Py_GIL_DISABLED
    atomic_fetch_add_explicit(&self->calls, 1, memory_order_relaxed);
#else
    self->calls++;
#endif
    if (self->budget != NULL)
        an_rbudget_deposit(((BudgetObject *)self->budget)->r, an_monotonic_ns());
    PyObject *r = PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    if (r != NULL)
        return r;
    /* KeyboardInterrupt, SystemExit, CancelledError: never retried. */
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL;
    PyObject *exc = fetch_exception();
    if (exc == NULL)
        return NULL;
    PyObject *kwargs = NULL;
    PyObject *pargs = vcall_as_tuple(args, nargsf, kwnames, &kwargs);
    if (pargs == NULL) {
        Py_DECREF(exc);
        return NULL;
    }
    /* engine(first_exception, args, kwargs): retries, or raises. */
    r = PyObject_CallFunctionObjArgs(self->engine, exc, pargs, kwargs ? kwargs : Py_None, NULL);
    Py_DECREF(exc);
    Py_DECREF(pargs);
    Py_XDECREF(kwargs);
    return r;
}

/* RetryCall(fn, engine, budget=None) */
static PyObject *
retrycall_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fn", "engine", "budget", NULL};
    PyObject *fn, *engine, *budget = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O:RetryCall", kwlist, &fn, &engine, &budget))
        return NULL;
    PyTypeObject *bt = budget_type_of(type);
    if (bt == NULL)
        return NULL;
    if (budget != Py_None && !PyObject_TypeCheck(budget, bt)) {
        PyErr_SetString(PyExc_TypeError, "budget must be a _core.RetryBudget or None");
        return NULL;
    }
    WrapObject *self = (WrapObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = (vectorcallfunc)retrycall_vectorcall;
    self->fn = Py_NewRef(fn);
    self->engine = Py_NewRef(engine);
    self->budget = budget == Py_None ? NULL : Py_NewRef(budget);
    return (PyObject *)self;
}

static PyType_Slot retrycall_slots[] = {
    {Py_tp_new, retrycall_new},
    {Py_tp_dealloc, wrap_dealloc},
    {Py_tp_traverse, wrap_traverse},
    {Py_tp_clear, wrap_clear},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, wrap_descr_get},
    {Py_tp_members, wrap_members},
    {Py_tp_getset, wrap_getset},
    {Py_tp_doc, "A function retried by resilience.retry: one native call on success."},
    {0, NULL},
};

static PyType_Spec retrycall_spec = {
    .name = "amulet_native._core.RetryCall",
    .basicsize = sizeof(WrapObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = retrycall_slots,
};

/* ---- registration -------------------------------------------------------- */

int
an_resilience_exec(PyObject *m, an_state *st)
{
    (void)st;
    if (an_add_type(m, &breaker_spec, "Breaker") < 0 ||
        an_add_type(m, &breakercall_spec, "BreakerCall") < 0 ||
        an_add_type(m, &budget_spec, "RetryBudget") < 0 ||
        an_add_type(m, &retrycall_spec, "RetryCall") < 0)
        return -1;
    return 0;
}
