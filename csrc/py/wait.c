/*
 * wait.c (binding) - the interrupt callback of every wait run with the GIL
 * released (named locks, pool slots, queues).
 *
 * The core waits in slices (csrc/core/sync/an_wait.h); between slices this
 * callback takes the GIL back, runs PyErr_CheckSignals() so Ctrl-C reaches the
 * main thread within a slice, and, for waits run on behalf of an asyncio task,
 * polls the task's cancel event.  It lives here, beside the binding's other
 * shared helpers, so the domain files depend only on an_py.h.
 */
#include "an_py.h"

int
an_wait_interrupt(void *arg)
{
    an_wait_ctx *c = arg;
    PyEval_RestoreThread(c->ts);
    int stop = 0;
    if (PyErr_CheckSignals() < 0) {
        c->error = 1;
        stop = 1;
    } else if (c->cancel != NULL && c->cancel != Py_None) {
        PyObject *r = PyObject_CallMethod(c->cancel, "is_set", NULL);
        int set = r == NULL ? -1 : PyObject_IsTrue(r);
        Py_XDECREF(r);
        if (set < 0) {
            c->error = 1;
            stop = 1;
        } else if (set) {
            stop = 1;
        }
    }
    c->ts = PyEval_SaveThread();
    return stop;
}
