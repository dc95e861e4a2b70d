/*
 * queue.c (binding) - ThreadSafeQueue: a drop-in queue.Queue (fifo, lifo or
 * priority) with close(), statistics and asyncio support.
 *
 * Design: the items live in an an_ring of object pointers guarded by the
 * object's critical section (the GIL on regular builds); C is used only to
 * block.  Priority items are ordered with Python's `<`, which is a call into
 * Python and may let another thread run, so it must never happen under a C
 * mutex.  The heap operations therefore compare first and modify last: they
 * find the final position with comparisons only (holding references to the
 * items compared), then check that no other operation changed the storage
 * meanwhile (the `mods` counter) and move the pointers without any further
 * Python call; when the storage did change they start again.  A raising `<`
 * leaves the queue exactly as it was.
 *
 * Blocking put/get/join register on an an_cond (not_full, not_empty,
 * all_done) while the queue is still locked, then wait with the GIL released
 * in slices of AN_WAIT_SLICE_NS, running signal handlers between slices, so
 * Ctrl-C interrupts a blocked get() promptly.  Notifications cost one atomic
 * load when nobody waits, which keeps an uncontended put+get close to
 * queue.SimpleQueue.
 *
 * asyncio: amulet_native.sync implements aput/aget on top of two primitives
 * here, _put_or_register and _get_or_register, which try the operation and, if
 * they cannot complete it, register a wake-up callback in the same atomic step.
 * Each put (get) calls one registered getter (putter) callback; close() calls
 * them all.  Items move only inside these synchronous calls, so a cancelled
 * aget never loses an item and a cancelled aput never inserts twice.
 * ajoin uses _join_or_register: the task_done() that brings the unfinished
 * count to zero calls every registered join callback.
 */
#include "an_sync_py.h"

#include <math.h>
#include <structmember.h>

enum { KIND_FIFO, KIND_LIFO, KIND_PRIORITY };
static const char *const kind_names[] = {"fifo", "lifo", "priority"};

/* Outcomes of one attempt under the critical section. */
enum { R_ERROR = -1, R_NO = 0, R_DONE = 1, R_WAIT = 2, R_CLOSED = 3, R_RETRY = 4 };

/* Invariants (under the critical section): ring.count <= maxsize when
 * maxsize > 0 (put refuses, never overfills); for KIND_PRIORITY the ring is a
 * binary min-heap by `<` with head 0; mods changes with every change of the
 * ring; the callback lists hold only callables. */
typedef struct {
    PyObject_HEAD
    an_ring ring;
    int kind;
    Py_ssize_t maxsize;          /* <= 0: unbounded */
    int closed;
    uint64_t mods;
    Py_ssize_t unfinished;       /* items put and not yet task_done() */
    an_cond not_empty, not_full, all_done;
    int conds;                   /* how many of the three are initialised */
    PyObject *getters, *putters; /* async wake-up callbacks (lists) */
    PyObject *joiners;           /* ajoin wake-up callbacks, all called when unfinished hits 0 */
    uint64_t puts, gets;
    Py_ssize_t high_water;
    int64_t wait_ns;
    an_state *st;
} queueobject;

/* ---- storage ------------------------------------------------------------------ */

static int
store_nomem(void)
{
    PyErr_NoMemory();
    return R_ERROR;
}

/* Compares a < b holding references to both; R_RETRY if the storage changed. */
static int
less(queueobject *q, uint64_t mods, PyObject *a, PyObject *b)
{
    Py_INCREF(a);
    Py_INCREF(b);
    int lt = PyObject_RichCompareBool(a, b, Py_LT);
    Py_DECREF(a);
    Py_DECREF(b);
    if (lt < 0)
        return R_ERROR;
    return q->mods != mods ? R_RETRY : lt;
}

static int
heap_push(queueobject *q, PyObject *item)
{
    uint64_t mods = q->mods;
    size_t pos = q->ring.count;
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        int lt = less(q, mods, item, an_ring_get(&q->ring, parent));
        if (lt != 0 && lt != 1)
            return lt;
        if (!lt)
            break;
        pos = parent;
    }
    if (an_ring_push(&q->ring, NULL, item) != AN_OK)
        return store_nomem();
    for (size_t j = q->ring.count - 1; j > pos; j = (j - 1) / 2)
        an_ring_set(&q->ring, j, an_ring_get(&q->ring, (j - 1) / 2));
    an_ring_set(&q->ring, pos, Py_NewRef(item));
    return R_DONE;
}

static int
heap_pop(queueobject *q, PyObject **out)
{
    uint64_t mods = q->mods;
    size_t m = q->ring.count - 1, pos = 0, path[64], depth = 0;
    PyObject *last = an_ring_get(&q->ring, m);
    for (;;) {
        size_t child = 2 * pos + 1;
        if (child >= m)
            break;
        if (child + 1 < m) {
            int lt = less(q, mods, an_ring_get(&q->ring, child + 1), an_ring_get(&q->ring, child));
            if (lt != 0 && lt != 1)
                return lt;
            child += (size_t)lt;
        }
        int lt = less(q, mods, an_ring_get(&q->ring, child), last);
        if (lt != 0 && lt != 1)
            return lt;
        if (!lt)
            break;
        path[depth++] = child;
        pos = child;
    }
    /* Commit: no Python code from here on. */
    *out = an_ring_get(&q->ring, 0);
    an_ring_pop_back(&q->ring);
    if (m > 0) {
        size_t hole = 0;
        for (size_t i = 0; i < depth; i++) {
            an_ring_set(&q->ring, hole, an_ring_get(&q->ring, path[i]));
            hole = path[i];
        }
        an_ring_set(&q->ring, hole, last);
    }
    return R_DONE;
}

/* One put attempt, under the critical section. */
static int
try_put(queueobject *q, PyObject *item)
{
    int r;
    if (q->closed)
        return R_CLOSED;
    if (q->maxsize > 0 && (Py_ssize_t)q->ring.count >= q->maxsize)
        return R_NO;
    if (q->kind == KIND_PRIORITY) {
        r = heap_push(q, item);
        if (r != R_DONE)
            return r;
    } else {
        if (an_ring_push(&q->ring, NULL, item) != AN_OK)
            return store_nomem();
        Py_INCREF(item);
    }
    q->mods++;
    q->puts++;
    q->unfinished++;
    if ((Py_ssize_t)q->ring.count > q->high_water)
        q->high_water = (Py_ssize_t)q->ring.count;
    return R_DONE;
}

/* One get attempt, under the critical section; *out is a new reference. */
static int
try_get(queueobject *q, PyObject **out)
{
    if (q->ring.count == 0)
        return q->closed ? R_CLOSED : R_NO;
    if (q->kind == KIND_PRIORITY) {
        int r = heap_pop(q, out);
        if (r != R_DONE)
            return r;
    } else {
        *out = q->kind == KIND_FIFO ? an_ring_pop_front(&q->ring) : an_ring_pop_back(&q->ring);
    }
    an_ring_shrink(&q->ring, NULL);
    q->mods++;
    q->gets++;
    return R_DONE;
}

/* ---- wake-ups --------------------------------------------------------------------- */

/* Pops the first callback of list (a new reference), or NULL. */
static PyObject *
pop_callback(PyObject *list)
{
    if (PyList_GET_SIZE(list) == 0)
        return NULL;
    PyObject *cb = Py_NewRef(PyList_GET_ITEM(list, 0));
    if (PyList_SetSlice(list, 0, 1, NULL) < 0) {
        PyErr_Clear();
        Py_DECREF(cb);
        return NULL;
    }
    return cb;
}

/* Runs (and releases) an async wake-up callback.  The operation that triggered
 * it has already happened, so a failure cannot be reported to the caller. */
static void
call_callback(PyObject *cb)
{
    if (cb == NULL)
        return;
    an_saved_exc pending;
    an_exc_take(&pending); /* close() may run several callbacks after an error */
    PyObject *r = PyObject_CallNoArgs(cb);
    if (r == NULL)
        PyErr_WriteUnraisable(cb);
    Py_XDECREF(r);
    Py_DECREF(cb);
    an_exc_raise(&pending);
}

/* After a put: one thread waiter and one async getter. */
static void
after_put(queueobject *q, PyObject *cb)
{
    an_cond_notify(&q->not_empty);
    call_callback(cb);
}

static void
after_get(queueobject *q, PyObject *cb)
{
    an_cond_notify(&q->not_full);
    call_callback(cb);
}

static void
add_wait(queueobject *q, int64_t waited)
{
    if (waited == 0)
        return;
    AN_BEGIN_CRITICAL_SECTION(q);
    q->wait_ns += waited;
    AN_END_CRITICAL_SECTION();
}

/* ---- argument helpers ------------------------------------------------------------- */

/* block/timeout -> *block and an absolute monotonic deadline (-1 = none). */
static int
parse_block_timeout(queueobject *q, PyObject *block_o, PyObject *timeout_o, int *block,
                    int64_t *deadline)
{
    *block = 1;
    *deadline = -1;
    if (block_o != NULL && (*block = PyObject_IsTrue(block_o)) < 0)
        return -1;
    if (timeout_o == NULL || timeout_o == Py_None || !*block)
        return 0;
    double t = PyFloat_AsDouble(timeout_o);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (!(t >= 0.0)) {
        an_raise_status(q->st, AN_ERR_INVALID_ARG, "'timeout' must be a non-negative number");
        return -1;
    }
    if (t < 1e9) /* beyond ~31 years: no deadline */
        *deadline = an_monotonic_ns() + (int64_t)(t * 1e9);
    return 0;
}

static PyObject *
raise_closed(queueobject *q)
{
    return an_raise_status(q->st, AN_ERR_QUEUE_CLOSED, "the queue is closed");
}

/* ---- put / get -------------------------------------------------------------------- */

/* put/get: whether a full/empty attempt may wait (blocking, deadline not passed). */
static int
may_wait(int block, int64_t deadline)
{
    return block && (deadline < 0 || an_monotonic_ns() < deadline);
}

/* put/get: waits (GIL released) on cond, prepared at seq, for the other side.
 * On an interruption or error it passes on a wake-up it may have taken and
 * books the time waited; returns -1 with the exception set. */
static int
wait_turn(queueobject *q, an_cond *cond, uint64_t seq, int64_t deadline, int64_t *waited)
{
    if (an_py_wait(cond, seq, deadline, waited) >= 0)
        return 0;
    an_cond_notify(cond);
    add_wait(q, *waited);
    return -1;
}

static PyObject *
put_impl(queueobject *q, PyObject *item, int block, int64_t deadline)
{
    int64_t waited = 0;
    for (;;) {
        int r;
        uint64_t seq = 0;
        PyObject *cb = NULL;
        AN_BEGIN_CRITICAL_SECTION(q);
        r = try_put(q, item);
        if (r == R_DONE)
            cb = pop_callback(q->getters);
        else if (r == R_NO && may_wait(block, deadline)) {
            seq = an_cond_prepare(&q->not_full);
            r = R_WAIT;
        }
        AN_END_CRITICAL_SECTION();
        if (r == R_WAIT) {
            if (wait_turn(q, &q->not_full, seq, deadline, &waited) < 0)
                return NULL;
            continue;
        }
        if (r == R_RETRY)
            continue;
        add_wait(q, waited);
        switch (r) {
        case R_DONE:
            after_put(q, cb);
            Py_RETURN_NONE;
        case R_NO:
            PyErr_SetNone(q->st->queue_full);
            return NULL;
        case R_CLOSED:
            return raise_closed(q);
        default:
            return NULL;
        }
    }
}

static PyObject *
get_impl(queueobject *q, int block, int64_t deadline)
{
    int64_t waited = 0;
    for (;;) {
        int r;
        uint64_t seq = 0;
        PyObject *cb = NULL, *item = NULL;
        AN_BEGIN_CRITICAL_SECTION(q);
        r = try_get(q, &item);
        if (r == R_DONE)
            cb = pop_callback(q->putters);
        else if (r == R_NO && may_wait(block, deadline)) {
            seq = an_cond_prepare(&q->not_empty);
            r = R_WAIT;
        }
        AN_END_CRITICAL_SECTION();
        if (r == R_WAIT) {
            if (wait_turn(q, &q->not_empty, seq, deadline, &waited) < 0)
                return NULL;
            continue;
        }
        if (r == R_RETRY)
            continue;
        add_wait(q, waited);
        switch (r) {
        case R_DONE:
            after_get(q, cb);
            return item;
        case R_NO:
            PyErr_SetNone(q->st->queue_empty);
            return NULL;
        case R_CLOSED:
            return raise_closed(q);
        default:
            return NULL;
        }
    }
}

static PyObject *
queue_put(queueobject *q, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"item", "block", "timeout"};
    PyObject *o[3];
    int block;
    int64_t deadline;
    if (nargs == 1 && kwnames == NULL)
        return put_impl(q, args[0], 1, -1);
    if (an_sync_args("put", args, nargs, kwnames, names, 3, 3, 1, o) < 0 ||
        parse_block_timeout(q, o[1], o[2], &block, &deadline) < 0)
        return NULL;
    return put_impl(q, o[0], block, deadline);
}

static PyObject *
queue_put_nowait(queueobject *q, PyObject *item)
{
    return put_impl(q, item, 0, -1);
}

static PyObject *
queue_get(queueobject *q, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    PyObject *o[2];
    int block;
    int64_t deadline;
    if (nargs == 0 && kwnames == NULL)
        return get_impl(q, 1, -1);
    if (an_sync_args("get", args, nargs, kwnames, names, 2, 2, 0, o) < 0 ||
        parse_block_timeout(q, o[0], o[1], &block, &deadline) < 0)
        return NULL;
    return get_impl(q, block, deadline);
}

static PyObject *
queue_get_nowait(queueobject *q, PyObject *unused)
{
    return get_impl(q, 0, -1);
}

/* ---- asyncio primitives ------------------------------------------------------------ */

static int
check_callable(PyObject *cb)
{
    if (PyCallable_Check(cb))
        return 0;
    PyErr_SetString(PyExc_TypeError, "callback must be callable");
    return -1;
}

/* _put_or_register(item, callback) -> bool: True when stored; False when the
 * queue is full, in which case callback was registered in the same step. */
static PyObject *
queue_put_or_register(queueobject *q, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_put_or_register(item, callback)");
        return NULL;
    }
    if (check_callable(args[1]) < 0)
        return NULL;
    for (;;) {
        int r;
        PyObject *cb = NULL;
        AN_BEGIN_CRITICAL_SECTION(q);
        r = try_put(q, args[0]);
        if (r == R_DONE)
            cb = pop_callback(q->getters);
        else if (r == R_NO && PyList_Append(q->putters, args[1]) < 0)
            r = R_ERROR;
        AN_END_CRITICAL_SECTION();
        switch (r) {
        case R_RETRY:
            continue;
        case R_DONE:
            after_put(q, cb);
            Py_RETURN_TRUE;
        case R_NO:
            Py_RETURN_FALSE;
        case R_CLOSED:
            return raise_closed(q);
        default:
            return NULL;
        }
    }
}

/* _get_or_register(callback, sentinel): an item, or sentinel when the queue is
 * empty, in which case callback was registered in the same step. */
static PyObject *
queue_get_or_register(queueobject *q, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_get_or_register(callback, sentinel)");
        return NULL;
    }
    if (check_callable(args[0]) < 0)
        return NULL;
    for (;;) {
        int r;
        PyObject *cb = NULL, *item = NULL;
        AN_BEGIN_CRITICAL_SECTION(q);
        r = try_get(q, &item);
        if (r == R_DONE)
            cb = pop_callback(q->putters);
        else if (r == R_NO && PyList_Append(q->getters, args[0]) < 0)
            r = R_ERROR;
        AN_END_CRITICAL_SECTION();
        switch (r) {
        case R_RETRY:
            continue;
        case R_DONE:
            after_get(q, cb);
            return item;
        case R_NO:
            return Py_NewRef(args[1]);
        case R_CLOSED:
            return raise_closed(q);
        default:
            return NULL;
        }
    }
}

/* _unregister(callback, putter) -> bool: False if the callback was already
 * called (or never registered). */
static PyObject *
queue_unregister(queueobject *q, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_unregister(callback, putter)");
        return NULL;
    }
    int putter = PyObject_IsTrue(args[1]), found = 0;
    if (putter < 0)
        return NULL;
    AN_BEGIN_CRITICAL_SECTION(q);
    PyObject *list = putter ? q->putters : q->getters;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        if (PyList_GET_ITEM(list, i) == args[0]) {
            found = PyList_SetSlice(list, i, i + 1, NULL) == 0 ? 1 : -1;
            break;
        }
    }
    AN_END_CRITICAL_SECTION();
    if (found < 0)
        return NULL;
    return PyBool_FromLong(found);
}

/* _wake(putter): hands a wake-up that a cancelled or timed-out waiter consumed
 * to the next waiter of the same side, if the queue can serve it. */
static PyObject *
queue_wake(queueobject *q, PyObject *arg)
{
    int putter = PyObject_IsTrue(arg);
    PyObject *cb = NULL;
    if (putter < 0)
        return NULL;
    AN_BEGIN_CRITICAL_SECTION(q);
    if (putter && (q->closed || q->maxsize <= 0 || (Py_ssize_t)q->ring.count < q->maxsize))
        cb = pop_callback(q->putters);
    else if (!putter && (q->closed || q->ring.count > 0))
        cb = pop_callback(q->getters);
    AN_END_CRITICAL_SECTION();
    if (putter)
        an_cond_notify(&q->not_full);
    else
        an_cond_notify(&q->not_empty);
    call_callback(cb);
    Py_RETURN_NONE;
}

/* ---- close, tasks, introspection ----------------------------------------------------- */

/* Moves every callback out of list into a new list (NULL on failure). */
static PyObject *
take_all(PyObject *list)
{
    PyObject *taken = PyList_GetSlice(list, 0, PyList_GET_SIZE(list));
    if (taken != NULL && PyList_SetSlice(list, 0, PyList_GET_SIZE(list), NULL) < 0)
        Py_CLEAR(taken);
    return taken;
}

static PyObject *
queue_close(queueobject *q, PyObject *unused)
{
    PyObject *lists[2];
    AN_BEGIN_CRITICAL_SECTION(q);
    q->closed = 1;
    lists[0] = take_all(q->getters);
    lists[1] = take_all(q->putters);
    AN_END_CRITICAL_SECTION();
    an_cond_notify_all(&q->not_empty);
    an_cond_notify_all(&q->not_full);
    for (int k = 0; k < 2; k++) {
        if (lists[k] == NULL)
            continue;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lists[k]); i++)
            call_callback(Py_NewRef(PyList_GET_ITEM(lists[k], i)));
        Py_DECREF(lists[k]);
    }
    if (lists[0] == NULL || lists[1] == NULL)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
queue_task_done(queueobject *q, PyObject *unused)
{
    int r;
    PyObject *joiners = NULL;
    AN_BEGIN_CRITICAL_SECTION(q);
    if (q->unfinished <= 0)
        r = -1;
    else
        r = --q->unfinished == 0;
    if (r > 0 && PyList_GET_SIZE(q->joiners) > 0 && (joiners = take_all(q->joiners)) == NULL)
        r = -2;
    AN_END_CRITICAL_SECTION();
    if (r == -1) {
        PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
        return NULL;
    }
    if (r != 0)
        an_cond_notify_all(&q->all_done);
    if (r == -2)
        return NULL;
    if (joiners != NULL) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(joiners); i++)
            call_callback(Py_NewRef(PyList_GET_ITEM(joiners, i)));
        Py_DECREF(joiners);
    }
    Py_RETURN_NONE;
}

static PyObject *
queue_join(queueobject *q, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *o[1];
    int block;
    int64_t deadline;
    if (an_sync_args("join", args, nargs, kwnames, names, 1, 1, 0, o) < 0 ||
        parse_block_timeout(q, NULL, o[0], &block, &deadline) < 0)
        return NULL;
    for (;;) {
        int finished;
        uint64_t seq = 0;
        AN_BEGIN_CRITICAL_SECTION(q);
        finished = q->unfinished == 0;
        if (!finished && (deadline < 0 || an_monotonic_ns() < deadline))
            seq = an_cond_prepare(&q->all_done);
        else if (!finished)
            finished = -1;
        AN_END_CRITICAL_SECTION();
        if (finished)
            return PyBool_FromLong(finished > 0);
        int w = an_py_wait(&q->all_done, seq, deadline, NULL);
        if (w < 0) {
            an_cond_notify_all(&q->all_done);
            return NULL;
        }
    }
}

/* _join_or_register(callback) -> bool: True when no task is unfinished; False
 * otherwise, in which case callback was registered in the same step (the
 * task_done() that finishes the last task calls it). */
static PyObject *
queue_join_or_register(queueobject *q, PyObject *cb)
{
    int r;
    if (check_callable(cb) < 0)
        return NULL;
    AN_BEGIN_CRITICAL_SECTION(q);
    r = q->unfinished == 0;
    if (!r && PyList_Append(q->joiners, cb) < 0)
        r = -1;
    AN_END_CRITICAL_SECTION();
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

/* _unregister_join(callback) -> bool: False if it was already called. */
static PyObject *
queue_unregister_join(queueobject *q, PyObject *cb)
{
    int found = 0;
    AN_BEGIN_CRITICAL_SECTION(q);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(q->joiners); i++) {
        if (PyList_GET_ITEM(q->joiners, i) == cb) {
            found = PyList_SetSlice(q->joiners, i, i + 1, NULL) == 0 ? 1 : -1;
            break;
        }
    }
    AN_END_CRITICAL_SECTION();
    if (found < 0)
        return NULL;
    return PyBool_FromLong(found);
}

static PyObject *
queue_qsize(queueobject *q, PyObject *unused)
{
    Py_ssize_t n;
    AN_BEGIN_CRITICAL_SECTION(q);
    n = (Py_ssize_t)q->ring.count;
    AN_END_CRITICAL_SECTION();
    return PyLong_FromSsize_t(n);
}

static PyObject *
queue_empty(queueobject *q, PyObject *unused)
{
    int empty;
    AN_BEGIN_CRITICAL_SECTION(q);
    empty = q->ring.count == 0;
    AN_END_CRITICAL_SECTION();
    return PyBool_FromLong(empty);
}

static PyObject *
queue_full(queueobject *q, PyObject *unused)
{
    int full;
    AN_BEGIN_CRITICAL_SECTION(q);
    full = q->maxsize > 0 && (Py_ssize_t)q->ring.count >= q->maxsize;
    AN_END_CRITICAL_SECTION();
    return PyBool_FromLong(full);
}

static PyObject *
queue_stats(queueobject *q, PyObject *unused)
{
    PyObject *r;
    AN_BEGIN_CRITICAL_SECTION(q);
    r = Py_BuildValue("{s:K,s:K,s:n,s:d,s:n,s:n}", "puts", (unsigned long long)q->puts, "gets",
                      (unsigned long long)q->gets, "high_water", q->high_water, "wait_time",
                      (double)q->wait_ns / 1e9, "size", (Py_ssize_t)q->ring.count, "waiting",
                      (Py_ssize_t)(an_cond_waiters(&q->not_empty) +
                                   an_cond_waiters(&q->not_full) +
                                   an_cond_waiters(&q->all_done) +
                                   PyList_GET_SIZE(q->getters) + PyList_GET_SIZE(q->putters) +
                                   PyList_GET_SIZE(q->joiners)));
    AN_END_CRITICAL_SECTION();
    return r;
}

static PyObject *
queue_reduce(queueobject *q, PyObject *unused)
{
    PyErr_SetString(PyExc_TypeError, "cannot pickle 'ThreadSafeQueue' object");
    return NULL;
}

static PyObject *
queue_get_kind(queueobject *q, void *closure)
{
    return PyUnicode_FromString(kind_names[q->kind]);
}

static PyObject *
queue_get_closed(queueobject *q, void *closure)
{
    return PyBool_FromLong(q->closed);
}

static PyObject *
queue_get_unfinished(queueobject *q, void *closure)
{
    Py_ssize_t n;
    AN_BEGIN_CRITICAL_SECTION(q);
    n = q->unfinished;
    AN_END_CRITICAL_SECTION();
    return PyLong_FromSsize_t(n);
}

/* aput/aget live in amulet_native.sync (coroutines); these forward to them. */
static PyObject *
forward_async(const char *name, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *modname = PyUnicode_FromString("amulet_native.sync"), *mod, *fn, *r;
    if (modname == NULL)
        return NULL;
    mod = PyImport_GetModule(modname);
    if (mod == NULL && !PyErr_Occurred())
        mod = PyImport_Import(modname);
    Py_DECREF(modname);
    if (mod == NULL)
        return NULL;
    fn = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    if (fn == NULL)
        return NULL;
    r = PyObject_Vectorcall(fn, args, (size_t)nargs, kwnames);
    Py_DECREF(fn);
    return r;
}

/* Methods receive self separately; rebuild (self, *args) for the forwarder. */
static PyObject *
forward_method(queueobject *q, const char *name, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[8], **all = small;
    if (total + 1 > 8 && (all = PyMem_New(PyObject *, total + 1)) == NULL)
        return PyErr_NoMemory();
    all[0] = (PyObject *)q;
    for (Py_ssize_t i = 0; i < total; i++)
        all[i + 1] = args[i];
    PyObject *r = forward_async(name, all, nargs + 1, kwnames);
    if (all != small)
        PyMem_Free(all);
    return r;
}

static PyObject *
queue_aput(queueobject *q, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return forward_method(q, "_aput", args, nargs, kwnames);
}

static PyObject *
queue_aget(queueobject *q, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return forward_method(q, "_aget", args, nargs, kwnames);
}

static PyObject *
queue_ajoin(queueobject *q, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return forward_method(q, "_ajoin", args, nargs, kwnames);
}

/* ---- type slots ---------------------------------------------------------------------- */

static PyObject *
queue_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"maxsize", "kind", NULL};
    PyObject *maxsize_o = NULL;
    const char *kind = "fifo";
    an_state *st = an_sync_state(type);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$s:ThreadSafeQueue", kwlist, &maxsize_o,
                                     &kind))
        return NULL;
    Py_ssize_t maxsize = 0;
    if (maxsize_o != NULL) {
        if (!PyLong_Check(maxsize_o)) {
            PyErr_Format(PyExc_TypeError, "maxsize must be an int, got %.100s",
                         Py_TYPE(maxsize_o)->tp_name);
            return NULL;
        }
        maxsize = PyLong_AsSsize_t(maxsize_o);
        if (maxsize == -1 && PyErr_Occurred())
            return NULL;
    }
    int k = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(kind, kind_names[i]) == 0)
            k = i;
    if (k < 0)
        return an_raise_status(st, AN_ERR_INVALID_ARG,
                               "kind must be 'fifo', 'lifo' or 'priority', got '%.50s'", kind);
    queueobject *q = (queueobject *)type->tp_alloc(type, 0);
    if (q == NULL)
        return NULL;
    q->st = st;
    q->kind = k;
    q->maxsize = maxsize;
    an_cond *conds[3] = {&q->not_empty, &q->not_full, &q->all_done};
    for (; q->conds < 3; q->conds++) {
        if (an_cond_init(conds[q->conds]) != AN_OK) {
            Py_DECREF(q);
            return an_raise_status(st, AN_ERR_THREADS, "cannot create a condition variable");
        }
    }
    q->getters = PyList_New(0);
    q->putters = PyList_New(0);
    q->joiners = PyList_New(0);
    if (q->getters == NULL || q->putters == NULL || q->joiners == NULL) {
        Py_DECREF(q);
        return NULL;
    }
    return (PyObject *)q;
}

static int
queue_traverse(queueobject *q, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(q));
    for (size_t i = 0; i < q->ring.count; i++)
        Py_VISIT((PyObject *)an_ring_get(&q->ring, i));
    Py_VISIT(q->getters);
    Py_VISIT(q->putters);
    Py_VISIT(q->joiners);
    return 0;
}

static int
queue_clear_refs(queueobject *q)
{
    PyObject *item;
    while ((item = an_ring_pop_back(&q->ring)) != NULL) {
        q->mods++;
        Py_DECREF(item);
    }
    Py_CLEAR(q->getters);
    Py_CLEAR(q->putters);
    Py_CLEAR(q->joiners);
    return 0;
}

static void
queue_dealloc(queueobject *q)
{
    PyTypeObject *tp = Py_TYPE(q);
    PyObject_GC_UnTrack(q);
    queue_clear_refs(q);
    an_ring_free(&q->ring, NULL);
    an_cond *conds[3] = {&q->not_empty, &q->not_full, &q->all_done};
    for (int i = 0; i < q->conds; i++)
        an_cond_destroy(conds[i]);
    tp->tp_free((PyObject *)q);
    Py_DECREF(tp);
}

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef queue_methods[] = {
    {"put", (PyCFunction)(void (*)(void))queue_put, FASTKW,
     "put(item, block=True, timeout=None): add item, waiting for a free slot if the queue is "
     "bounded and full (queue.Full when block is false or the timeout passes)."},
    {"get", (PyCFunction)(void (*)(void))queue_get, FASTKW,
     "get(block=True, timeout=None): remove and return an item, waiting if the queue is empty "
     "(queue.Empty when block is false or the timeout passes)."},
    {"put_nowait", (PyCFunction)queue_put_nowait, METH_O, "put_nowait(item): put(item, False)."},
    {"get_nowait", (PyCFunction)queue_get_nowait, METH_NOARGS, "get_nowait(): get(False)."},
    {"aput", (PyCFunction)(void (*)(void))queue_aput, FASTKW,
     "aput(item, timeout=None): coroutine; put without blocking the event loop."},
    {"aget", (PyCFunction)(void (*)(void))queue_aget, FASTKW,
     "aget(timeout=None): coroutine; get without blocking the event loop."},
    {"ajoin", (PyCFunction)(void (*)(void))queue_ajoin, FASTKW,
     "ajoin(timeout=None) -> bool: coroutine; join() without blocking the event loop."},
    {"task_done", (PyCFunction)queue_task_done, METH_NOARGS,
     "task_done(): mark one item taken by a consumer as processed."},
    {"join", (PyCFunction)(void (*)(void))queue_join, FASTKW,
     "join(timeout=None) -> bool: wait until every item put has been task_done() (False on "
     "timeout)."},
    {"close", (PyCFunction)queue_close, METH_NOARGS,
     "close(): refuse new items and wake every waiter; queued items can still be drained."},
    {"qsize", (PyCFunction)queue_qsize, METH_NOARGS, "qsize() -> int: number of items."},
    {"empty", (PyCFunction)queue_empty, METH_NOARGS, "empty() -> bool"},
    {"full", (PyCFunction)queue_full, METH_NOARGS, "full() -> bool"},
    {"stats", (PyCFunction)queue_stats, METH_NOARGS,
     "stats() -> dict: puts, gets, high_water, wait_time (seconds spent blocked, summed over "
     "waiters), size, waiting."},
    {"_put_or_register", (PyCFunction)(void (*)(void))queue_put_or_register, METH_FASTCALL,
     NULL},
    {"_get_or_register", (PyCFunction)(void (*)(void))queue_get_or_register, METH_FASTCALL,
     NULL},
    {"_unregister", (PyCFunction)(void (*)(void))queue_unregister, METH_FASTCALL, NULL},
    {"_wake", (PyCFunction)queue_wake, METH_O, NULL},
    {"_join_or_register", (PyCFunction)queue_join_or_register, METH_O, NULL},
    {"_unregister_join", (PyCFunction)queue_unregister_join, METH_O, NULL},
    {"__reduce__", (PyCFunction)queue_reduce, METH_NOARGS, NULL},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, "See PEP 585."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
queue_get_maxsize(queueobject *q, void *closure)
{
    Py_ssize_t n;
    AN_BEGIN_CRITICAL_SECTION(q);
    n = q->maxsize;
    AN_END_CRITICAL_SECTION();
    return PyLong_FromSsize_t(n);
}

/* q.maxsize = n, as queue.Queue allows: a smaller bound makes put() block (or
 * raise Full) until the queue drains below it; items already in are kept.  A
 * larger bound (or <= 0, unbounded) wakes the waiting putters it makes room
 * for, threads and asyncio tasks alike (queue.Queue needs a not_full.notify
 * for that; here the setter does it). */
static int
queue_set_maxsize(queueobject *q, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "cannot delete maxsize");
        return -1;
    }
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "maxsize must be an int, got %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(value);
    if (n == -1 && PyErr_Occurred())
        return -1;
    PyObject *woken = NULL;
    AN_BEGIN_CRITICAL_SECTION(q);
    q->maxsize = n;
    Py_ssize_t waiting = PyList_GET_SIZE(q->putters);
    Py_ssize_t room = n <= 0 ? waiting : n - (Py_ssize_t)q->ring.count;
    if (room > waiting)
        room = waiting;
    if (room > 0) {
        woken = PyList_GetSlice(q->putters, 0, room);
        if (woken != NULL && PyList_SetSlice(q->putters, 0, room, NULL) < 0)
            Py_CLEAR(woken);
    }
    AN_END_CRITICAL_SECTION();
    an_cond_notify_all(&q->not_full);
    if (woken == NULL)
        return PyErr_Occurred() ? -1 : 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(woken); i++)
        call_callback(Py_NewRef(PyList_GET_ITEM(woken, i)));
    Py_DECREF(woken);
    return 0;
}

static PyGetSetDef queue_getset[] = {
    {"maxsize", (getter)queue_get_maxsize, (setter)queue_set_maxsize,
     "Capacity (<= 0: unbounded).  Writable, as queue.Queue.maxsize: shrinking makes "
     "put() wait (or raise Full) until the queue drains below it; growing wakes the "
     "waiting putters.",
     NULL},
    {"kind", (getter)queue_get_kind, NULL, "'fifo', 'lifo' or 'priority'.", NULL},
    {"closed", (getter)queue_get_closed, NULL, "True after close().", NULL},
    {"unfinished_tasks", (getter)queue_get_unfinished, NULL,
     "Items put and not yet marked task_done().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(queue_doc,
"ThreadSafeQueue(maxsize=0, *, kind='fifo')\n"
"--\n\n"
"A native drop-in for queue.Queue (kind='fifo'), LifoQueue ('lifo') and\n"
"PriorityQueue ('priority', ordered by <, e.g. (priority, seq, payload)).\n\n"
"Same methods and exceptions as queue.Queue (queue.Empty, queue.Full,\n"
"task_done/join), plus close() (waiters wake with QueueClosed; queued items\n"
"can still be drained), stats(), and the coroutines aput()/aget()/ajoin() for\n"
"asyncio code.  Blocking calls release the GIL and stay interruptible.\n\n"
"    >>> q = ThreadSafeQueue(maxsize=100)\n"
"    >>> q.put('job-1')\n"
"    >>> q.get(timeout=1.0)\n"
"    'job-1'\n");

static PyType_Slot queue_slots[] = {
    {Py_tp_new, queue_new},
    {Py_tp_dealloc, queue_dealloc},
    {Py_tp_traverse, queue_traverse},
    {Py_tp_clear, queue_clear_refs},
    {Py_tp_methods, queue_methods},
    {Py_tp_getset, queue_getset},
    {Py_tp_doc, (void *)queue_doc},
    {0, NULL},
};

PyType_Spec an_queue_spec = {
    .name = "amulet_native.ThreadSafeQueue",
    .basicsize = sizeof(queueobject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = queue_slots,
};
