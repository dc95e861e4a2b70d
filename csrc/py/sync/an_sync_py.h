/*
 * an_sync_py.h - private declarations of the thread-safe structure bindings
 * (sync.c: helpers and AtomicCounter; tsdict.c: ThreadSafeDict; queue.c:
 * ThreadSafeQueue).
 */
#ifndef AN_SYNC_PY_H
#define AN_SYNC_PY_H

#include "../an_py.h"

#include "../../core/sync/an_sync.h"

/* Waits one slice on c after an_cond_prepare(c) returned seq (which it
 * balances with an_cond_finish): the GIL is released until c is notified, the
 * slice ends, or the monotonic deadline (ns; -1 = none) passes.  Adds the time
 * spent to *waited_ns (may be NULL).  Returns 1 when the caller should check
 * its condition again, 0 when the deadline passed without a notification, -1
 * with an exception set when a signal handler raised. */
int an_py_wait(an_cond *c, uint64_t seq, int64_t deadline, int64_t *waited_ns);

/* The module state behind an instance of one of our types (or a subclass). */
an_state *an_sync_state(PyTypeObject *tp);

/* Parses up to n arguments of a METH_FASTCALL | METH_KEYWORDS method into
 * out[] (borrowed; NULL when not given): at most max_pos positionally, any by
 * name, the first `required` mandatory.  Returns -1 with TypeError set. */
int an_sync_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                 const char *const *names, int n, int max_pos, int required, PyObject **out);

/* An int argument within int64 (OverflowError outside, TypeError for a
 * non-integer). */
int an_sync_as_i64(PyObject *o, int64_t *out);

/* The exception being raised, taken out of the thread state (3.12+ keeps
 * only the normalised value; older versions the type/value/traceback trio). */
typedef struct an_saved_exc {
    PyObject *type, *value, *tb;
} an_saved_exc;

/* Takes the current exception (if any) into *e, clearing it. */
static inline void
an_exc_take(an_saved_exc *e)
{
#if PY_VERSION_HEX >= 0x030C0000
    e->type = e->tb = NULL;
    e->value = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&e->type, &e->value, &e->tb);
    PyErr_NormalizeException(&e->type, &e->value, &e->tb);
    if (e->value != NULL && e->tb != NULL)
        PyException_SetTraceback(e->value, e->tb);
#endif
}

/* Raises *e again; the caller keeps its references (it may raise it again). */
static inline void
an_exc_raise_copy(const an_saved_exc *e)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(Py_XNewRef(e->value));
#else
    PyErr_Restore(Py_XNewRef(e->type), Py_XNewRef(e->value), Py_XNewRef(e->tb));
#endif
}

/* Raises *e again, handing over its references. */
static inline void
an_exc_raise(an_saved_exc *e)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(e->value);
#else
    PyErr_Restore(e->type, e->value, e->tb);
#endif
    e->type = e->value = e->tb = NULL;
}

static inline void
an_exc_clear(an_saved_exc *e)
{
    Py_CLEAR(e->type);
    Py_CLEAR(e->value);
    Py_CLEAR(e->tb);
}

/* Type specs, created by an_sync_exec(). */
extern PyType_Spec an_counter_spec;
extern PyType_Spec an_tsdict_spec;
extern PyType_Spec an_queue_spec;

#endif /* AN_SYNC_PY_H */
