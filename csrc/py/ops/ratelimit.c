/*
 * ratelimit.c (binding) - _core.Decision, _core.GcraStore, _core.GcraLimiter.
 *
 * A limiter decision is the hot path of every request, so it is one native
 * call that returns the Decision object directly: parse the key (str or
 * bytes), read the clock, take one shard lock of the store, build the result.
 * The GIL is NOT released around the core call: the decision takes tens of
 * nanoseconds, less than releasing and re-taking the GIL; the shard mutexes
 * (not the GIL) are what make the store thread-safe, also on free-threaded
 * builds.  The Python layer (amulet_native/ratelimit.py) validates policies and
 * gives the friendly API; other stores build the same Decision type.
 *
 * GcraSharedLimiter is the same decision over stripes of TATs in the shared
 * arena (_core.Arena), so every worker process of a host enforces one limit.
 */
#include "an_ops_py.h"

#include <math.h>
#include <stdatomic.h>
#include <structmember.h>
#include <unistd.h>

#include "../../core/ops/an_gcra.h"
#include "../../core/sync/an_wait.h"

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

/* ---- Decision ---------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *policy;
    long long remaining;
    long long limit;
    double reset_after;
    double retry_after;
    char allowed;
} decisionobject;

/* A small free list: a decision is made and dropped on every request, and
 * reusing the memory saves an allocation and a free.  With the GIL only (the
 * GIL is what protects it; free-threaded builds allocate normally).  The
 * module is single-interpreter (see module.c), so one list serves its one
 * Decision type. */
#if !defined(Py_GIL_DISABLED)
#define DECISION_FREELIST 64
static decisionobject *decision_free[DECISION_FREELIST];
static int decision_nfree;
#endif

static PyObject *
decision_make(PyTypeObject *tp, int allowed, long long remaining, double reset_after,
              double retry_after, PyObject *policy, long long limit)
{
    decisionobject *d;
#if !defined(Py_GIL_DISABLED)
    if (decision_nfree > 0 && tp->tp_basicsize == (Py_ssize_t)sizeof(decisionobject)) {
        d = decision_free[--decision_nfree];
        PyObject_Init((PyObject *)d, tp); /* refcount 1, a new reference to tp */
    } else
#endif
        d = (decisionobject *)tp->tp_alloc(tp, 0);
    if (d == NULL)
        return NULL;
    d->allowed = (char)(allowed != 0);
    d->remaining = remaining;
    d->reset_after = reset_after;
    d->retry_after = retry_after;
    d->policy = Py_NewRef(policy);
    d->limit = limit;
    return (PyObject *)d;
}

static PyObject *
decision_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"allowed", "remaining", "reset_after", "retry_after", "policy",
                             "limit", NULL};
    int allowed;
    long long remaining, limit;
    double reset_after, retry_after;
    PyObject *policy;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "pLddOL:Decision", kwlist, &allowed,
                                     &remaining, &reset_after, &retry_after, &policy, &limit))
        return NULL;
    if (remaining < 0 || limit < 0 || !(reset_after >= 0) || !(retry_after >= 0) ||
        isinf(reset_after) || isinf(retry_after)) {
        PyErr_SetString(PyExc_ValueError,
                        "Decision: remaining, limit, reset_after and retry_after must be "
                        "finite and >= 0");
        return NULL;
    }
    return decision_make(type, allowed, remaining, reset_after, retry_after, policy, limit);
}

static void
decision_dealloc(decisionobject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_CLEAR(self->policy);
#if !defined(Py_GIL_DISABLED)
    if (decision_nfree < DECISION_FREELIST) {
        decision_free[decision_nfree++] = self;
        Py_DECREF(tp);
        return;
    }
#endif
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
decision_repr(decisionobject *self)
{
    PyObject *ra = PyFloat_FromDouble(self->reset_after);
    PyObject *rt = PyFloat_FromDouble(self->retry_after);
    PyObject *r = NULL;
    if (ra != NULL && rt != NULL)
        r = PyUnicode_FromFormat(
            "Decision(allowed=%s, remaining=%lld, reset_after=%R, retry_after=%R, policy=%R, "
            "limit=%lld)",
            self->allowed ? "True" : "False", self->remaining, ra, rt, self->policy,
            self->limit);
    Py_XDECREF(ra);
    Py_XDECREF(rt);
    return r;
}

static PyObject *
decision_tuple(decisionobject *self)
{
    return Py_BuildValue("(OLddOL)", self->allowed ? Py_True : Py_False, self->remaining,
                         self->reset_after, self->retry_after, self->policy, self->limit);
}

static PyObject *
decision_reduce(decisionobject *self, PyObject *unused)
{
    (void)unused;
    PyObject *t = decision_tuple(self);
    if (t == NULL)
        return NULL;
    PyObject *r = Py_BuildValue("(ON)", (PyObject *)Py_TYPE(self), t);
    return r;
}

static PyObject *
decision_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *ta = decision_tuple((decisionobject *)a);
    PyObject *tb = ta == NULL ? NULL : decision_tuple((decisionobject *)b);
    PyObject *r = tb == NULL ? NULL : PyObject_RichCompare(ta, tb, op);
    Py_XDECREF(ta);
    Py_XDECREF(tb);
    return r;
}

static PyObject *
decision_allowed(decisionobject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->allowed);
}

static int
decision_nb_bool(decisionobject *self)
{
    return self->allowed;
}

static PyMemberDef decision_members[] = {
    {"remaining", T_LONGLONG, offsetof(decisionobject, remaining), READONLY,
     "Cost units still admissible now (after this request when it was admitted)."},
    {"reset_after", T_DOUBLE, offsetof(decisionobject, reset_after), READONLY,
     "Seconds until the deciding policy is back to its full burst (>= 0)."},
    {"retry_after", T_DOUBLE, offsetof(decisionobject, retry_after), READONLY,
     "0 when admitted; else seconds until this cost would be admitted (> 0)."},
    {"policy", T_OBJECT, offsetof(decisionobject, policy), READONLY,
     "The deciding (most restrictive) Policy."},
    {"limit", T_LONGLONG, offsetof(decisionobject, limit), READONLY,
     "The deciding policy's limit (requests or cost units per period)."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef decision_getset[] = {
    {"allowed", (getter)decision_allowed, NULL, "True when the request was admitted.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef decision_methods[] = {
    {"__reduce__", (PyCFunction)decision_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(decision_doc,
"Decision(allowed, remaining, reset_after, retry_after, policy, limit)\n"
"--\n\n"
"The outcome of one rate-limit check, all fields derived from one theoretical\n"
"arrival time, so they agree and are never negative.  Truthy when allowed.");

static PyType_Slot decision_slots[] = {
    {Py_tp_new, decision_new},
    {Py_tp_dealloc, decision_dealloc},
    {Py_tp_repr, decision_repr},
    {Py_tp_richcompare, decision_richcompare},
    {Py_tp_members, decision_members},
    {Py_tp_getset, decision_getset},
    {Py_tp_methods, decision_methods},
    {Py_nb_bool, decision_nb_bool},
    {Py_tp_doc, (void *)decision_doc},
    {0, NULL},
};

static PyType_Spec decision_spec = {
    .name = "amulet_native.ratelimit.Decision",
    .basicsize = sizeof(decisionobject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = decision_slots,
};

/* ---- GcraStore --------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    an_gcra_store *store;
} storeobject;

static an_state *
state_of(PyObject *self)
{
    PyObject *m = PyType_GetModule(Py_TYPE(self));
    return m == NULL ? NULL : an_get_state(m);
}

static PyObject *
raise_status(PyObject *self, an_status status, const char *field, const char *fmt, ...)
{
    an_state *st = state_of(self);
    if (st == NULL)
        return NULL;
    PyObject *ctx = Py_BuildValue("{s:s}", "field", field);
    if (ctx == NULL)
        return NULL;
    char buf[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    an_raise_ctx(st, status, ctx, "%s", buf);
    Py_DECREF(ctx);
    return NULL;
}

static PyObject *
store_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"max_keys", NULL};
    long long max_keys = 100000;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|L:GcraStore", kwlist, &max_keys))
        return NULL;
    storeobject *self = (storeobject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (max_keys < 1 || max_keys > (1LL << 32)) {
        raise_status((PyObject *)self, AN_ERR_INVALID_ARG, "max_keys",
                     "max_keys must be between 1 and 2**32, got %lld", max_keys);
        Py_DECREF(self);
        return NULL;
    }
    an_status s = an_gcra_store_new(&self->store, (size_t)max_keys, NULL);
    if (s != AN_OK) {
        raise_status((PyObject *)self, s, "max_keys", "cannot create a store of %lld keys",
                     max_keys);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
store_dealloc(storeobject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    an_gcra_store_free(self->store);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
store_stats(storeobject *self, PyObject *unused)
{
    (void)unused;
    an_gcra_stats s;
    an_gcra_store_stats(self->store, &s);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K}", "keys", (unsigned long long)s.keys,
                         "max_keys", (unsigned long long)s.max_keys, "evicted_expired",
                         (unsigned long long)s.evicted_expired, "evicted_live",
                         (unsigned long long)s.evicted_live, "bytes",
                         (unsigned long long)s.bytes);
}

static Py_ssize_t
store_len(storeobject *self)
{
    an_gcra_stats s;
    an_gcra_store_stats(self->store, &s);
    return (Py_ssize_t)s.keys;
}

static PyObject *
store_clear(storeobject *self, PyObject *unused)
{
    (void)unused;
    an_gcra_clear(self->store);
    Py_RETURN_NONE;
}

static PyObject *
store_purge(storeobject *self, PyObject *unused)
{
    (void)unused;
    size_t n;
    Py_BEGIN_ALLOW_THREADS
    n = an_gcra_purge(self->store, an_monotonic_ns());
    Py_END_ALLOW_THREADS
    return PyLong_FromSize_t(n);
}

static PyMethodDef store_methods[] = {
    {"stats", (PyCFunction)store_stats, METH_NOARGS,
     "stats() -> dict: keys, max_keys, evicted_expired, evicted_live, bytes."},
    {"clear", (PyCFunction)store_clear, METH_NOARGS, "clear(): forget every key."},
    {"purge", (PyCFunction)store_purge, METH_NOARGS,
     "purge() -> int: drop the keys without state (every TAT in the past, on the "
     "monotonic clock); for limiters with an injected clock use the limiter's purge."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot store_slots[] = {
    {Py_tp_new, store_new},
    {Py_tp_dealloc, store_dealloc},
    {Py_tp_methods, store_methods},
    {Py_sq_length, store_len},
    {Py_tp_doc, "GcraStore(max_keys=100000): the native, bounded, thread-safe TAT store."},
    {0, NULL},
};

static PyType_Spec store_spec = {
    .name = "amulet_native._core.GcraStore",
    .basicsize = sizeof(storeobject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = store_slots,
};

/* ---- GcraLimiter ------------------------------------------------------------- */

/* What GcraLimiter and GcraSharedLimiter both hold, first in each: the owner
 * of the TATs (a GcraStore or an Arena, kept until dealloc so a decision in
 * flight never loses it), the policies, their clock and the Decision type. */
#define GCRA_LIMITER_HEAD                                                            \
    PyObject_HEAD                                                                    \
    PyObject *owner;            /* GcraStore or Arena */                             \
    PyObject *policies;         /* tuple of Policy objects, one per pol[] */         \
    PyObject *clock;            /* None: CLOCK_MONOTONIC; else () -> float seconds */ \
    PyTypeObject *dtype;        /* Decision */                                       \
    int npol;                                                                        \
    int64_t max_cost;           /* the smallest burst */                             \
    an_gcra_policy pol[AN_GCRA_MAX_POLICIES];

typedef struct {
    GCRA_LIMITER_HEAD
} gcraobject;

typedef struct {
    GCRA_LIMITER_HEAD
    uint32_t ns;
} limiterobject;

#define LIMITER_STORE(self) (((storeobject *)(self)->owner)->store)

/* Fills the common part of a new limiter: takes over dtype's reference, takes
 * new ones to owner, policies and clock, and parses params, a tuple of
 * (limit, period_ns, burst), one per policy.  -1 with the error set; the
 * caller then releases self. */
static int
gcra_init(gcraobject *self, PyObject *dtype, PyObject *owner, PyObject *policies,
          PyObject *clock, PyObject *params)
{
    Py_ssize_t n = PyTuple_GET_SIZE(params);
    self->dtype = (PyTypeObject *)dtype;
    self->owner = Py_NewRef(owner);
    self->policies = Py_NewRef(policies);
    self->clock = Py_NewRef(clock);
    self->npol = (int)n;
    self->max_cost = INT64_MAX;
    for (Py_ssize_t i = 0; i < n; i++) {
        long long limit, period_ns, burst;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(params, i), "LLL", &limit, &period_ns, &burst))
            return -1;
        if (an_gcra_policy_init(&self->pol[i], limit, period_ns, burst) != AN_OK) {
            raise_status((PyObject *)self, AN_ERR_INVALID_ARG, "policy",
                         "invalid policy: limit=%lld period_ns=%lld burst=%lld", limit,
                         period_ns, burst);
            return -1;
        }
        if (burst < self->max_cost)
            self->max_cost = burst;
    }
    return 0;
}

static int
gcra_traverse(gcraobject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->owner);
    Py_VISIT(self->policies);
    Py_VISIT(self->clock);
    Py_VISIT(self->dtype);
    return 0;
}

static int
gcra_clear(gcraobject *self)
{
    Py_CLEAR(self->policies);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->dtype);
    return 0;
}

/* The owner stays until dealloc: a decision in flight never loses it. */
static void
gcra_dealloc(gcraobject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    gcra_clear(self);
    Py_CLEAR(self->owner);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* The Decision of a limiter's result. */
static PyObject *
gcra_decision(gcraobject *self, const an_gcra_result *res)
{
    return decision_make(self->dtype, res->allowed, res->remaining,
                         (double)res->reset_after_ns * 1e-9, (double)res->retry_after_ns * 1e-9,
                         PyTuple_GET_ITEM(self->policies, res->policy),
                         self->pol[res->policy].limit);
}

static PyObject *
limiter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"store", "policies", "params", "clock", NULL};
    PyObject *store, *policies, *params, *clock = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!O!|O:GcraLimiter", kwlist, &store,
                                     &PyTuple_Type, &policies, &PyTuple_Type, &params, &clock))
        return NULL;
    PyObject *m = PyType_GetModule(type);
    if (m == NULL)
        return NULL;
    PyObject *store_type = PyObject_GetAttrString(m, "GcraStore");
    PyObject *dtype = store_type == NULL ? NULL : PyObject_GetAttrString(m, "Decision");
    if (dtype == NULL) {
        Py_XDECREF(store_type);
        return NULL;
    }
    int is_store = PyObject_TypeCheck(store, (PyTypeObject *)store_type);
    Py_DECREF(store_type);
    Py_ssize_t n = PyTuple_GET_SIZE(params);
    if (!is_store || n < 1 || n > AN_GCRA_MAX_POLICIES || PyTuple_GET_SIZE(policies) != n ||
        (clock != Py_None && !PyCallable_Check(clock))) {
        Py_DECREF(dtype);
        PyErr_SetString(PyExc_TypeError,
                        "GcraLimiter(store: GcraStore, policies: tuple, params: tuple of "
                        "(limit, period_ns, burst), 1..8 of them, clock=None or callable)");
        return NULL;
    }
    limiterobject *self = (limiterobject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(dtype);
        return NULL;
    }
    if (gcra_init((gcraobject *)self, dtype, store, policies, clock, params) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->ns = an_gcra_store_namespace(LIMITER_STORE(self));
    return (PyObject *)self;
}

/* The key's bytes (borrowed from key, or from *tmp, which the caller
 * releases), or -1 with ValidationError.  A str is UTF-8 with surrogatepass,
 * as the Python layer (and so the Redis store) encodes it: a lone surrogate
 * is a key, not a UnicodeEncodeError. */
static int
key_bytes(PyObject *self, PyObject *key, const char **data, Py_ssize_t *len, PyObject **tmp)
{
    *tmp = NULL;
    if (PyUnicode_Check(key)) {
        *data = PyUnicode_AsUTF8AndSize(key, len);
        if (*data == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
                return -1;
            PyErr_Clear();
            *tmp = PyUnicode_AsEncodedString(key, "utf-8", "surrogatepass");
            if (*tmp == NULL)
                return -1;
            *data = PyBytes_AS_STRING(*tmp);
            *len = PyBytes_GET_SIZE(*tmp);
        }
    } else if (PyBytes_Check(key)) {
        *data = PyBytes_AS_STRING(key);
        *len = PyBytes_GET_SIZE(key);
    } else {
        raise_status((PyObject *)self, AN_ERR_RATELIMIT_KEY, "key",
                     "a rate limit key must be str or bytes, not %.100s", Py_TYPE(key)->tp_name);
        return -1;
    }
    if (*len > AN_GCRA_MAX_KEY) {
        raise_status((PyObject *)self, AN_ERR_RATELIMIT_KEY, "key",
                     "a rate limit key is at most %d bytes, got %zd", AN_GCRA_MAX_KEY, *len);
        Py_CLEAR(*tmp);
        return -1;
    }
    return 0;
}

/* The current time in ns from the injected clock or CLOCK_MONOTONIC. */
static int
clock_now(PyObject *self, PyObject *clock, int64_t *now)
{
    if (clock == Py_None) {
        *now = an_monotonic_ns();
        return 0;
    }
    PyObject *r = PyObject_CallNoArgs(clock);
    if (r == NULL)
        return -1;
    double t = PyFloat_AsDouble(r);
    Py_DECREF(r);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (!isfinite(t) || t < 0 || t > 4.0e9) {
        raise_status((PyObject *)self, AN_ERR_INVALID_ARG, "clock",
                     "the clock must return finite seconds in [0, 4e9]");
        return -1;
    }
    *now = (int64_t)llround(t * 1e9);
    return 0;
}

/* (key, cost=1) of check/peek; a lone positional key is the fast path. */
static int
parse_key_cost(PyObject *self, int64_t max_cost, const char *fname, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames, PyObject **key, int64_t *cost)
{
    PyObject *c = NULL;
    *cost = 1;
    if (nargs == 1 && kwnames == NULL) {
        *key = args[0];
        return 0;
    }
    *key = NULL;
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 2 positional arguments", fname);
        return -1;
    }
    if (nargs >= 1)
        *key = args[0];
    if (nargs == 2)
        c = args[1];
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        PyObject **slot;
        if (PyUnicode_CompareWithASCIIString(name, "key") == 0)
            slot = key;
        else if (PyUnicode_CompareWithASCIIString(name, "cost") == 0)
            slot = &c;
        else {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname,
                         name);
            return -1;
        }
        if (*slot != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%U'", fname,
                         name);
            return -1;
        }
        *slot = args[nargs + k];
    }
    if (*key == NULL) {
        PyErr_Format(PyExc_TypeError, "%s() missing required argument 'key'", fname);
        return -1;
    }
    *cost = 1;
    if (c == NULL)
        return 0;
    if (!PyLong_Check(c) || PyBool_Check(c)) {
        raise_status((PyObject *)self, AN_ERR_RATELIMIT_COST, "cost",
                     "the cost must be an int, not %.100s", Py_TYPE(c)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(c, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow != 0 || v < 0 || v > max_cost) {
        raise_status(self, AN_ERR_RATELIMIT_COST, "cost",
                     "the cost must be between 0 and %lld (the smallest burst)",
                     (long long)max_cost);
        return -1;
    }
    *cost = v;
    return 0;
}

static PyObject *
limiter_decide(limiterobject *self, const char *fname, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames, an_gcra_mode mode)
{
    PyObject *key;
    int64_t cost = 1, now;
    const char *data;
    Py_ssize_t len;
    an_gcra_result res;
    if (parse_key_cost((PyObject *)self, self->max_cost, fname, args, nargs, kwnames, &key,
                       &cost) < 0)
        return NULL;
    PyObject *tmp;
    if (key_bytes((PyObject *)self, key, &data, &len, &tmp) < 0)
        return NULL;
    if (clock_now((PyObject *)self, self->clock, &now) < 0) {
        Py_XDECREF(tmp);
        return NULL;
    }
    an_status s = an_gcra_apply(LIMITER_STORE(self), self->ns, data, (size_t)len, self->pol,
                                self->npol, cost, now, mode, &res);
    Py_XDECREF(tmp);
    if (s != AN_OK)
        return raise_status((PyObject *)self, s, "key", "rate limit store: %s",
                            an_error_lookup(s)->message);
    return gcra_decision((gcraobject *)self, &res);
}

static PyObject *
limiter_check(limiterobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return limiter_decide(self, "check", args, nargs, kwnames, AN_GCRA_HIT);
}

static PyObject *
limiter_peek(limiterobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return limiter_decide(self, "peek", args, nargs, kwnames, AN_GCRA_PEEK);
}

static PyObject *
limiter_forget(limiterobject *self, PyObject *key)
{
    const char *data;
    Py_ssize_t len;
    PyObject *tmp;
    if (key_bytes((PyObject *)self, key, &data, &len, &tmp) < 0)
        return NULL;
    int found = an_gcra_forget(LIMITER_STORE(self), self->ns, data, (size_t)len);
    Py_XDECREF(tmp);
    return PyBool_FromLong(found);
}

static PyObject *
limiter_purge(limiterobject *self, PyObject *unused)
{
    (void)unused;
    int64_t now;
    if (clock_now((PyObject *)self, self->clock, &now) < 0)
        return NULL;
    return PyLong_FromSize_t(an_gcra_purge(LIMITER_STORE(self), now));
}

static PyMethodDef limiter_methods[] = {
    {"check", (PyCFunction)(void (*)(void))limiter_check, FASTKW,
     "check(key, cost=1) -> Decision: admit and record the request when every policy allows."},
    {"peek", (PyCFunction)(void (*)(void))limiter_peek, FASTKW,
     "peek(key, cost=1) -> Decision: the decision check() would make, recording nothing."},
    {"forget", (PyCFunction)limiter_forget, METH_O, "forget(key) -> bool: drop key's state."},
    {"purge", (PyCFunction)limiter_purge, METH_NOARGS,
     "purge() -> int: drop every key without state at this limiter's clock's now."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot limiter_slots[] = {
    {Py_tp_new, limiter_new},
    {Py_tp_dealloc, gcra_dealloc},
    {Py_tp_traverse, gcra_traverse},
    {Py_tp_clear, gcra_clear},
    {Py_tp_methods, limiter_methods},
    {Py_tp_doc, "GcraLimiter(store, policies, params, clock=None): the native decision path."},
    {0, NULL},
};

static PyType_Spec limiter_spec = {
    .name = "amulet_native._core.GcraLimiter",
    .basicsize = sizeof(limiterobject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = limiter_slots,
};

/* ---- GcraSharedLimiter --------------------------------------------------------- */

#define SHARED_REC_UNITS 1024u /* the largest arena record: 8192 words */

typedef struct {
    GCRA_LIMITER_HEAD           /* owner: the _core.Arena holding the table */
    uint64_t seed;
    uint64_t *counters;         /* shared: [seed, evicted_live] */
    uint64_t **recs;            /* nrec record word arrays */
    uint32_t nrec;
    size_t stripe_words, stripes_per_rec, nstripes;
} sharedobject;

/* The pid written into stripe locks; refreshed in a forked child. */
static _Atomic uint64_t my_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;

static void
refresh_pid(void)
{
    atomic_store(&my_pid, (uint64_t)getpid());
}

static void
pid_init(void)
{
    refresh_pid();
    pthread_atfork(NULL, NULL, refresh_pid);
}

static int
arena_rec(an_state *st, an_arena *a, const char *name, uint32_t units, uint64_t **words)
{
    an_arena_rec rec;
    an_error err;
    memset(&err, 0, sizeof(err));
    an_status s = an_arena_record(a, name, strlen(name), units, AN_FOLD_SHARED, &rec, &err);
    if (s != AN_OK) {
        an_raise(st, &err);
        return -1;
    }
    *words = an_arena_local(a, rec.id);
    return 0;
}

static PyObject *
shared_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"arena", "name", "policies", "params", "max_keys", "clock", NULL};
    PyObject *arena, *policies, *params, *clock = Py_None;
    const char *name;
    long long max_keys;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OsO!O!L|O:GcraSharedLimiter", kwlist, &arena,
                                     &name, &PyTuple_Type, &policies, &PyTuple_Type, &params,
                                     &max_keys, &clock))
        return NULL;
    an_state *st = (an_state *)PyType_GetModuleState(type);
    an_arena *a = an_py_arena(st, arena);
    if (a == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(params);
    if (n < 1 || n > AN_GCRA_MAX_POLICIES || PyTuple_GET_SIZE(policies) != n ||
        (clock != Py_None && !PyCallable_Check(clock)) || max_keys < 1 ||
        max_keys > (1LL << 32) || strlen(name) > 200) {
        PyErr_SetString(PyExc_TypeError,
                        "GcraSharedLimiter(arena, name, policies, params, max_keys, clock=None)");
        return NULL;
    }
    PyObject *m = PyType_GetModule(type);
    PyObject *dtype = m == NULL ? NULL : PyObject_GetAttrString(m, "Decision");
    if (dtype == NULL)
        return NULL;
    sharedobject *self = (sharedobject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(dtype);
        return NULL;
    }
    if (gcra_init((gcraobject *)self, dtype, arena, policies, clock, params) < 0)
        goto error;
    pthread_once(&pid_once, pid_init);
    /* the seed and the eviction counter, shared by every table of the arena */
    if (arena_rec(st, a, "gcra:seed", 1, &self->counters) < 0)
        goto error;
    uint64_t zero = 0, seed = 0;
    while (seed == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid() ^
               (uint64_t)(uintptr_t)self;
    }
    if (!an_aw_cas(&self->counters[0], &zero, seed))
        seed = zero; /* another process set it first */
    self->seed = seed;
    self->stripe_words = an_gcra_stripe_words(self->npol);
    self->stripes_per_rec = (size_t)SHARED_REC_UNITS * AN_ARENA_WORDS_PER_UNIT / self->stripe_words;
    self->nstripes = ((size_t)max_keys + AN_GCRA_STRIPE_KEYS - 1) / AN_GCRA_STRIPE_KEYS;
    self->nrec = (uint32_t)((self->nstripes + self->stripes_per_rec - 1) / self->stripes_per_rec);
    self->recs = PyMem_Calloc(self->nrec, sizeof(uint64_t *));
    if (self->recs == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    for (uint32_t r = 0; r < self->nrec; r++) {
        char rname[256];
        snprintf(rname, sizeof(rname), "gcra:%s:%u", name, r);
        uint32_t units = SHARED_REC_UNITS;
        if (r == self->nrec - 1) {
            size_t left = self->nstripes - (size_t)r * self->stripes_per_rec;
            size_t words = left * self->stripe_words;
            units = (uint32_t)((words + AN_ARENA_WORDS_PER_UNIT - 1) / AN_ARENA_WORDS_PER_UNIT);
        }
        if (arena_rec(st, a, rname, units, &self->recs[r]) < 0)
            goto error;
    }
    return (PyObject *)self;
error:
    Py_DECREF(self);
    return NULL;
}

static void
shared_dealloc(sharedobject *self)
{
    PyMem_Free(self->recs);
    self->recs = NULL;
    gcra_dealloc((gcraobject *)self);
}

/* The stripe of key, after checking the arena is still open. */
static uint64_t *
shared_stripe(sharedobject *self, const char *data, Py_ssize_t len, uint64_t *tag)
{
    an_state *st = (an_state *)PyType_GetModuleState(Py_TYPE(self));
    if (an_py_arena(st, self->owner) == NULL)
        return NULL;
    uint64_t h = an_gcra_hash(self->seed, data, (size_t)len);
    size_t idx = (size_t)(h % self->nstripes);
    *tag = h;
    return self->recs[idx / self->stripes_per_rec] +
           (idx % self->stripes_per_rec) * self->stripe_words;
}

static PyObject *
shared_decide(sharedobject *self, const char *fname, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames, an_gcra_mode mode)
{
    PyObject *key;
    int64_t cost = 1, now;
    const char *data;
    Py_ssize_t len;
    uint64_t tag;
    an_gcra_result res;
    int evicted;
    if (parse_key_cost((PyObject *)self, self->max_cost, fname, args, nargs, kwnames, &key,
                       &cost) < 0)
        return NULL;
    PyObject *tmp;
    if (key_bytes((PyObject *)self, key, &data, &len, &tmp) < 0)
        return NULL;
    uint64_t *stripe = NULL;
    if (clock_now((PyObject *)self, self->clock, &now) == 0)
        stripe = shared_stripe(self, data, len, &tag);
    Py_XDECREF(tmp); /* only the hash (tag, stripe) is used from here on */
    if (stripe == NULL)
        return NULL;
    an_status s = an_gcra_stripe_apply(stripe, atomic_load(&my_pid), tag, self->pol, self->npol,
                                       cost, now, mode, &res, &evicted);
    if (s != AN_OK)
        return raise_status((PyObject *)self, s, "cost", "rate limit store: %s",
                            an_error_lookup(s)->message);
    if (evicted)
        an_aw_add(&self->counters[1], 1);
    return gcra_decision((gcraobject *)self, &res);
}

static PyObject *
shared_check(sharedobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return shared_decide(self, "check", args, nargs, kwnames, AN_GCRA_HIT);
}

static PyObject *
shared_peek(sharedobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return shared_decide(self, "peek", args, nargs, kwnames, AN_GCRA_PEEK);
}

static PyObject *
shared_forget(sharedobject *self, PyObject *key)
{
    const char *data;
    Py_ssize_t len;
    uint64_t tag;
    PyObject *tmp;
    if (key_bytes((PyObject *)self, key, &data, &len, &tmp) < 0)
        return NULL;
    uint64_t *stripe = shared_stripe(self, data, len, &tag);
    Py_XDECREF(tmp);
    if (stripe == NULL)
        return NULL;
    return PyBool_FromLong(an_gcra_stripe_forget(stripe, atomic_load(&my_pid), tag, self->npol));
}

static PyObject *
shared_stats(sharedobject *self, PyObject *unused)
{
    (void)unused;
    return Py_BuildValue("{s:K,s:K,s:K}", "evicted_live",
                         (unsigned long long)an_aw_load(&self->counters[1]), "stripes",
                         (unsigned long long)self->nstripes, "max_keys",
                         (unsigned long long)self->nstripes * AN_GCRA_STRIPE_KEYS);
}

static PyMethodDef shared_methods[] = {
    {"check", (PyCFunction)(void (*)(void))shared_check, FASTKW,
     "check(key, cost=1) -> Decision: admit and record when every policy allows."},
    {"peek", (PyCFunction)(void (*)(void))shared_peek, FASTKW,
     "peek(key, cost=1) -> Decision: the decision check() would make, recording nothing."},
    {"forget", (PyCFunction)shared_forget, METH_O, "forget(key) -> bool: drop key's state."},
    {"stats", (PyCFunction)shared_stats, METH_NOARGS,
     "stats() -> dict: evicted_live (arena-wide), stripes, max_keys."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot shared_slots[] = {
    {Py_tp_new, shared_new},
    {Py_tp_dealloc, shared_dealloc},
    {Py_tp_traverse, gcra_traverse},
    {Py_tp_clear, gcra_clear},
    {Py_tp_methods, shared_methods},
    {Py_tp_doc, "GcraSharedLimiter(arena, name, policies, params, max_keys, clock=None): "
                "GCRA decisions over TATs in the shared arena."},
    {0, NULL},
};

static PyType_Spec shared_spec = {
    .name = "amulet_native._core.GcraSharedLimiter",
    .basicsize = sizeof(sharedobject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = shared_slots,
};

/* ---- registration -------------------------------------------------------------- */

int
an_ratelimit_exec(PyObject *m, an_state *st)
{
    (void)st;
    if (an_add_type(m, &decision_spec, "Decision") < 0 || an_add_type(m, &store_spec, "GcraStore") < 0 ||
        an_add_type(m, &limiter_spec, "GcraLimiter") < 0 ||
        an_add_type(m, &shared_spec, "GcraSharedLimiter") < 0)
        return -1;
    return 0;
}
