/*
 * pool.c (binding) - _core.PoolSlots: the slot counter of ObjectPool
 * (csrc/core/sync/slots.c).  A slot is the right to hold one pooled object; the
 * objects, the user's factory, health check and close callback all live in
 * amulet_native/pool.py and are never called from here.  A borrower blocked
 * on a full pool waits with the GIL released, in slices that deliver signals
 * and poll an optional cancel event (see an_wait_interrupt in ../wait.c).
 */
#include "../an_py.h"

#include "../../core/sync/an_lock.h"

typedef struct {
    PyObject_HEAD
    an_slots *slots;
    Py_ssize_t capacity;
} PoolSlotsObject;

static an_state *
slots_state(PyObject *self)
{
    return (an_state *)PyType_GetModuleState(Py_TYPE(self));
}

static PyObject *
poolslots_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", NULL};
    Py_ssize_t capacity;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:PoolSlots", kwlist, &capacity))
        return NULL;
    if (capacity < 1) {
        PyErr_SetString(PyExc_ValueError, "capacity must be >= 1");
        return NULL;
    }
    PoolSlotsObject *self = (PoolSlotsObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->capacity = capacity;
    if (an_slots_create(&self->slots, (int64_t)capacity, NULL) != AN_OK) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void
poolslots_dealloc(PoolSlotsObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    an_slots_destroy(self->slots);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
raise_slots(PoolSlotsObject *self, an_status s, double timeout)
{
    an_state *st = slots_state((PyObject *)self);
    if (s == AN_ERR_POOL_CLOSED)
        return an_raise_ctx(st, s, NULL, "the pool is closed");
    PyObject *ctx = Py_BuildValue("{s:d,s:n}", "timeout", timeout, "max_size", self->capacity);
    if (ctx == NULL)
        return NULL;
    an_raise_ctx(st, s, ctx, "no pooled object became free in time (max_size=%zd)",
                 self->capacity);
    Py_DECREF(ctx);
    return NULL;
}

/* acquire(timeout, cancel) -> bool: True with a slot taken, False when cancel
 * was set while waiting.  timeout < 0 waits forever. */
static PyObject *
poolslots_acquire(PoolSlotsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "acquire() takes 2 arguments");
        return NULL;
    }
    double timeout = PyFloat_AsDouble(args[0]);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    if (isnan(timeout)) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return NULL;
    }
    an_status s = an_slots_try_acquire(self->slots);
    if (s == AN_ERR_POOL_TIMEOUT) {
        an_wait_ctx c = {NULL, args[1], 0};
        c.ts = PyEval_SaveThread();
        s = an_slots_acquire(self->slots, timeout, an_wait_interrupt, &c);
        PyEval_RestoreThread(c.ts);
        if (s == AN_ERR_CANCELLED) {
            if (c.error)
                return NULL;
            Py_RETURN_FALSE;
        }
    }
    if (s == AN_OK)
        Py_RETURN_TRUE;
    return raise_slots(self, s, timeout);
}

/* try_acquire() -> bool (raises PoolClosedError once closed) */
static PyObject *
poolslots_try_acquire(PoolSlotsObject *self, PyObject *unused)
{
    (void)unused;
    an_status s = an_slots_try_acquire(self->slots);
    if (s == AN_OK)
        Py_RETURN_TRUE;
    if (s == AN_ERR_POOL_TIMEOUT)
        Py_RETURN_FALSE;
    return raise_slots(self, s, 0);
}

static PyObject *
poolslots_release(PoolSlotsObject *self, PyObject *unused)
{
    (void)unused;
    if (an_slots_release(self->slots) != AN_OK) {
        PyErr_SetString(PyExc_RuntimeError, "PoolSlots.release() without a slot taken");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
poolslots_close(PoolSlotsObject *self, PyObject *unused)
{
    (void)unused;
    an_slots_close(self->slots);
    Py_RETURN_NONE;
}

/* stats() -> (capacity, used, waiters, closed, waits, timeouts) */
static PyObject *
poolslots_stats(PoolSlotsObject *self, PyObject *unused)
{
    (void)unused;
    an_slots_stats s;
    an_slots_get_stats(self->slots, &s);
    return Py_BuildValue("(LLiOKK)", (long long)s.capacity, (long long)s.used, s.waiters,
                         s.closed ? Py_True : Py_False, (unsigned long long)s.waits,
                         (unsigned long long)s.timeouts);
}

static PyMethodDef poolslots_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))poolslots_acquire, METH_FASTCALL,
     "acquire(timeout, cancel) -> bool"},
    {"try_acquire", (PyCFunction)poolslots_try_acquire, METH_NOARGS, "try_acquire() -> bool"},
    {"release", (PyCFunction)poolslots_release, METH_NOARGS, "release()"},
    {"close", (PyCFunction)poolslots_close, METH_NOARGS, "close()"},
    {"stats", (PyCFunction)poolslots_stats, METH_NOARGS,
     "stats() -> (capacity, used, waiters, closed, waits, timeouts)"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot poolslots_slots[] = {
    {Py_tp_new, poolslots_new},
    {Py_tp_dealloc, poolslots_dealloc},
    {Py_tp_methods, poolslots_methods},
    {Py_tp_doc, "PoolSlots(capacity): the native slot counter of ObjectPool."},
    {0, NULL},
};

static PyType_Spec poolslots_spec = {
    .name = "amulet_native._core.PoolSlots",
    .basicsize = sizeof(PoolSlotsObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = poolslots_slots,
};

int
an_objpool_exec(PyObject *m, an_state *st)
{
    (void)st;
    return an_add_type(m, &poolslots_spec, "PoolSlots");
}
