/*
 * sync.c (binding) - AtomicCounter, the helpers shared by the thread-safe
 * structures, and an_sync_exec() which registers the three types.
 *
 * AtomicCounter is a heap type over an an_counter: every operation is one
 * lock-free CAS loop in the core, so it needs neither the GIL nor a critical
 * section, and an update that would leave int64 raises OverflowError instead of
 * wrapping.  The types are exported as they are (not subclassed in Python) so
 * that CPython's call specialisations, which require the exact type, apply.
 */
#include "an_sync_py.h"

#include <structmember.h>

/* ---- shared helpers ---------------------------------------------------------- */

int
an_py_wait(an_cond *c, uint64_t seq, int64_t deadline, int64_t *waited_ns)
{
    int64_t start = an_monotonic_ns(), slice = AN_WAIT_SLICE_NS, end;
    int notified;
    if (deadline >= 0 && deadline - start < slice)
        slice = deadline - start;
    Py_BEGIN_ALLOW_THREADS
    notified = an_cond_wait(c, seq, slice);
    Py_END_ALLOW_THREADS
    an_cond_finish(c);
    end = an_monotonic_ns();
    if (waited_ns != NULL)
        *waited_ns += end - start;
    if (PyErr_CheckSignals() < 0)
        return -1;
    if (!notified && deadline >= 0 && end >= deadline)
        return 0;
    return 1;
}

an_state *
an_sync_state(PyTypeObject *tp)
{
    /* Python subclasses have no module; the first heap type with one is ours. */
    for (; tp != NULL; tp = tp->tp_base) {
        if (tp->tp_flags & Py_TPFLAGS_HEAPTYPE) {
            PyObject *m = ((PyHeapTypeObject *)tp)->ht_module;
            if (m != NULL)
                return an_get_state(m);
        }
    }
    return NULL;
}

int
an_sync_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
             const char *const *names, int n, int max_pos, int required, PyObject **out)
{
    for (int i = 0; i < n; i++)
        out[i] = NULL;
    if (nargs > max_pos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d positional argument%s (%zd given)",
                     fname, max_pos, max_pos == 1 ? "" : "s", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int found = -1;
        for (int i = 0; i < n && found < 0; i++)
            if (PyUnicode_CompareWithASCIIString(name, names[i]) == 0)
                found = i;
        if (found < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname,
                         name);
            return -1;
        }
        if (out[found] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                         names[found]);
            return -1;
        }
        out[found] = args[nargs + k];
    }
    for (int i = 0; i < required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

int
an_sync_as_i64(PyObject *o, int64_t *out)
{
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "expected an int, got %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow != 0) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in a signed 64-bit integer");
        return -1;
    }
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)v;
    return 0;
}

/* ---- AtomicCounter --------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    an_counter c;
} counterobject;

static PyObject *
counter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"initial", NULL};
    PyObject *initial = NULL;
    int64_t v = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:AtomicCounter", kwlist, &initial))
        return NULL;
    if (initial != NULL && an_sync_as_i64(initial, &v) < 0)
        return NULL;
    counterobject *self = (counterobject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    an_counter_init(&self->c, v);
    return (PyObject *)self;
}

static void
counter_dealloc(counterobject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
overflow(const char *op, int64_t cur, int64_t n)
{
    PyErr_Format(PyExc_OverflowError,
                 "AtomicCounter overflow: %lld %s %lld does not fit in a signed 64-bit integer",
                 (long long)cur, op, (long long)n);
    return NULL;
}

/* n from an optional/required single argument named "n". */
static int
parse_n(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
        int required, int64_t *n)
{
    static const char *const names[] = {"n"};
    PyObject *o;
    *n = 1;
    if (nargs == 1 && kwnames == NULL)
        o = args[0];
    else if (an_sync_args(fname, args, nargs, kwnames, names, 1, 1, required, &o) < 0)
        return -1;
    return o == NULL ? 0 : an_sync_as_i64(o, n);
}

/* add (sub = 0) or subtract n; returns the new (want_new) or old value. */
static PyObject *
counter_update(counterobject *self, const char *fname, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames, int required, int sub, int want_new)
{
    int64_t n, old, new;
    if (parse_n(fname, args, nargs, kwnames, required, &n) < 0)
        return NULL;
    int ok = sub ? an_counter_sub(&self->c, n, &old, &new) : an_counter_add(&self->c, n, &old, &new);
    if (!ok)
        return overflow(sub ? "-" : "+", an_counter_load(&self->c), n);
    return PyLong_FromLongLong(want_new ? new : old);
}

static PyObject *
counter_increment(counterobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return counter_update(self, "increment", args, nargs, kw, 0, 0, 1);
}

static PyObject *
counter_decrement(counterobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return counter_update(self, "decrement", args, nargs, kw, 0, 1, 1);
}

static PyObject *
counter_add_and_get(counterobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return counter_update(self, "add_and_get", args, nargs, kw, 1, 0, 1);
}

static PyObject *
counter_get_and_add(counterobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    return counter_update(self, "get_and_add", args, nargs, kw, 1, 0, 0);
}

static PyObject *
counter_get(counterobject *self, PyObject *unused)
{
    return PyLong_FromLongLong(an_counter_load(&self->c));
}

static PyObject *
counter_value(counterobject *self, void *closure)
{
    return PyLong_FromLongLong(an_counter_load(&self->c));
}

static PyObject *
counter_set(counterobject *self, PyObject *arg)
{
    int64_t v;
    if (an_sync_as_i64(arg, &v) < 0)
        return NULL;
    an_counter_store(&self->c, v);
    Py_RETURN_NONE;
}

static PyObject *
counter_get_and_set(counterobject *self, PyObject *arg)
{
    int64_t v;
    if (an_sync_as_i64(arg, &v) < 0)
        return NULL;
    return PyLong_FromLongLong(an_counter_exchange(&self->c, v));
}

static PyObject *
counter_compare_and_set(counterobject *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames)
{
    static const char *const names[] = {"expected", "new"};
    PyObject *o[2];
    int64_t expected, desired;
    if (an_sync_args("compare_and_set", args, nargs, kwnames, names, 2, 2, 2, o) < 0 ||
        an_sync_as_i64(o[0], &expected) < 0 || an_sync_as_i64(o[1], &desired) < 0)
        return NULL;
    return PyBool_FromLong(an_counter_cas(&self->c, expected, desired));
}

static PyObject *
counter_int(counterobject *self)
{
    return PyLong_FromLongLong(an_counter_load(&self->c));
}

static PyObject *
counter_repr(counterobject *self)
{
    PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(self), "__name__");
    if (name == NULL)
        return NULL;
    PyObject *r = PyUnicode_FromFormat("%U(%lld)", name, (long long)an_counter_load(&self->c));
    Py_DECREF(name);
    return r;
}

static PyObject *
counter_reduce(counterobject *self, PyObject *unused)
{
    return Py_BuildValue("(O(L))", (PyObject *)Py_TYPE(self),
                         (long long)an_counter_load(&self->c));
}

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef counter_methods[] = {
    {"increment", (PyCFunction)(void (*)(void))counter_increment, FASTKW,
     "increment(n=1) -> int: add n atomically and return the new value."},
    {"decrement", (PyCFunction)(void (*)(void))counter_decrement, FASTKW,
     "decrement(n=1) -> int: subtract n atomically and return the new value."},
    {"add_and_get", (PyCFunction)(void (*)(void))counter_add_and_get, FASTKW,
     "add_and_get(n) -> int: add n and return the new value."},
    {"get_and_add", (PyCFunction)(void (*)(void))counter_get_and_add, FASTKW,
     "get_and_add(n) -> int: add n and return the previous value."},
    {"get", (PyCFunction)counter_get, METH_NOARGS, "get() -> int: the current value."},
    {"set", (PyCFunction)counter_set, METH_O, "set(v): store v."},
    {"get_and_set", (PyCFunction)counter_get_and_set, METH_O,
     "get_and_set(v) -> int: store v and return the previous value."},
    {"compare_and_set", (PyCFunction)(void (*)(void))counter_compare_and_set, FASTKW,
     "compare_and_set(expected, new) -> bool: store new if the value is expected."},
    {"__reduce__", (PyCFunction)counter_reduce, METH_NOARGS, "Pickles a value snapshot."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef counter_getset[] = {
    {"value", (getter)counter_value, NULL, "The current value.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(counter_doc,
"AtomicCounter(initial=0)\n"
"--\n\n"
"A lock-free signed 64-bit counter, safe to share between threads.\n\n"
"Every update is one compare-and-swap loop in C (no lock, no GIL needed); an\n"
"update whose result would leave the int64 range raises OverflowError and\n"
"leaves the counter unchanged.  int(counter) and pickling take a snapshot.\n\n"
"    >>> requests = AtomicCounter()\n"
"    >>> requests.increment()\n"
"    1\n"
"    >>> requests.compare_and_set(1, 10), requests.value\n"
"    (True, 10)\n");

static PyType_Slot counter_slots[] = {
    {Py_tp_new, counter_new},
    {Py_tp_dealloc, counter_dealloc},
    {Py_tp_repr, counter_repr},
    {Py_tp_methods, counter_methods},
    {Py_tp_getset, counter_getset},
    {Py_nb_int, counter_int},
    {Py_tp_doc, (void *)counter_doc},
    {0, NULL},
};

PyType_Spec an_counter_spec = {
    .name = "amulet_native.AtomicCounter",
    .basicsize = sizeof(counterobject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = counter_slots,
};

/* ---- registration ------------------------------------------------------------ */

int
an_sync_exec(PyObject *m, an_state *st)
{
    PyObject *queue = PyImport_ImportModule("queue");
    if (queue == NULL)
        return -1;
    st->queue_empty = PyObject_GetAttrString(queue, "Empty");
    st->queue_full = PyObject_GetAttrString(queue, "Full");
    Py_DECREF(queue);
    if (st->queue_empty == NULL || st->queue_full == NULL)
        return -1;
    if (an_add_type(m, &an_counter_spec, "AtomicCounter") < 0 ||
        an_add_type(m, &an_tsdict_spec, "ThreadSafeDict") < 0 ||
        an_add_type(m, &an_queue_spec, "ThreadSafeQueue") < 0)
        return -1;
    return 0;
}
