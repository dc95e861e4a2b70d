/*
 * batch.c (binding) - decode_many(): many images on the native worker pool.
 *
 * Three steps, so that NumPy arrays are only ever created with the GIL held:
 *   1. with the GIL: export every input buffer (no copies);
 *      without it: parse every header and check every limit (microseconds);
 *   2. with the GIL: allocate every output array;
 *   3. without it: decode all images on the pool (the calling thread helps).
 * Each slot keeps its own an_error; afterwards the results are either arrays
 * or exception objects (errors="return"), or the first failure is raised once
 * everything has been released (errors="raise").  The pool is created on first
 * use, grows to the largest thread count asked for, and is abandoned (not
 * touched) in a child after fork().
 */
#include <unistd.h>

#include "../an_py.h"

typedef struct {
    Py_buffer view;
    int have_view;
    an_decoder *dec;
    an_error err;
    an_status status;
    uint8_t *out;
} job_t;

/* The pending exception as an object (the Python 3.11 spelling of
 * PyErr_GetRaisedException). */
static PyObject *
take_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

static void
run_job(void *arg, size_t i)
{
    job_t *j = &((job_t *)arg)[i];
    if (j->dec == NULL)
        return;
    j->status = an_decoder_run(j->dec, j->out, &j->err);
    an_decoder_close(j->dec);
    j->dec = NULL;
}

/* The module's pool with at least `helpers` workers, or NULL with an exception. */
static an_pool *
get_pool(an_state *st, int helpers)
{
    an_status s = AN_OK;
    pthread_mutex_lock(&st->pool_lock);
    if (st->pool != NULL && an_pool_owner(st->pool) != getpid())
        st->pool = NULL; /* inherited through fork(): its threads do not exist here */
    if (st->pool == NULL)
        s = an_pool_create(&st->pool, helpers);
    else if (an_pool_size(st->pool) < helpers)
        s = an_pool_grow(st->pool, helpers);
    an_pool *pool = st->pool;
    pthread_mutex_unlock(&st->pool_lock);
    if (s != AN_OK && pool == NULL) {
        an_raise_status(st, s, "cannot start %d decoder threads", helpers);
        return NULL;
    }
    return pool; /* a pool that could not grow still works, with fewer threads */
}

void
an_batch_free(an_state *st)
{
    if (!st->pool_lock_ready)
        return;
    if (st->pool != NULL && an_pool_owner(st->pool) == getpid())
        an_pool_destroy(st->pool); /* waits for batches still in flight */
    st->pool = NULL;
    pthread_mutex_destroy(&st->pool_lock);
    st->pool_lock_ready = 0;
}

PyObject *
an_py_available_cpus(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromLong(an_available_cpus());
}

/* _core.decode_many(items, mode, depth16, scale_denom, max_w, max_h, orient,
 *                   strict, expect_format, limits, threads, return_errors) */
PyObject *
an_py_decode_many(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = an_get_state(module);
    an_decode_opts opts;
    PyObject *seq = NULL, *result = NULL, *first_exc = NULL;
    job_t *jobs = NULL;
    PyArrayObject **arrays = NULL;
    Py_ssize_t n = 0, i;
    int threads, return_errors;

    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "decode_many() takes 12 positional arguments");
        return NULL;
    }
    if (an_parse_decode_opts(args + 1, &opts) < 0)
        return NULL;
    /* The workers charge the caller's memory_limit() scope through the guard. */
    an_guard guard;
    if (an_guard_begin(st, &guard) < 0)
        return NULL;
    opts.alloc = an_guard_allocator(&guard);
    long nthreads = PyLong_AsLong(args[10]);
    if (nthreads == -1 && PyErr_Occurred())
        goto done;
    if ((return_errors = PyObject_IsTrue(args[11])) < 0)
        goto done;
    if (nthreads < 1 || nthreads > 1024) {
        an_raise_status(st, AN_ERR_INVALID_ARG, "threads must be in [1, 1024], got %ld", nthreads);
        goto done;
    }
    threads = (int)nthreads;
    if ((seq = PySequence_Fast(args[0], "items must be a sequence")) == NULL)
        goto done;
    n = PySequence_Fast_GET_SIZE(seq);
    if ((result = PyList_New(n)) == NULL)
        goto done;
    if (n == 0)
        goto done;
    jobs = PyMem_Calloc((size_t)n, sizeof(*jobs));
    arrays = PyMem_Calloc((size_t)n, sizeof(*arrays));
    if (jobs == NULL || arrays == NULL) {
        PyErr_NoMemory();
        goto fail;
    }

    /* 1. Export the inputs; parse the headers without the GIL. */
    for (i = 0; i < n; i++) {
        job_t *j = &jobs[i];
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (PyObject_GetBuffer(item, &j->view, PyBUF_SIMPLE) == 0) {
            j->have_view = 1;
        } else {
            PyErr_Clear();
            j->status = AN_ERR_INPUT_TYPE;
            j->err.status = AN_ERR_INPUT_TYPE;
            snprintf(j->err.detail, sizeof(j->err.detail),
                     "item %zd: expected a contiguous bytes-like object, got %.100s", i,
                     Py_TYPE(item)->tp_name);
        }
    }
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < n; i++)
        if (jobs[i].have_view)
            jobs[i].status = an_decoder_open(&jobs[i].dec, jobs[i].view.buf,
                                             (size_t)jobs[i].view.len, &opts, &jobs[i].err);
    Py_END_ALLOW_THREADS

    /* 2. Output arrays, with the GIL. */
    for (i = 0; i < n; i++) {
        job_t *j = &jobs[i];
        if (j->dec == NULL)
            continue;
        an_shape shape;
        an_decoder_shape(j->dec, &shape);
        /* Each output is checked against the budget as the ones before it
         * are charged, so a batch fails item by item, not all at once. */
        if (an_budget_precheck(st, shape.nbytes) == 0)
            arrays[i] = an_new_output(st, &shape, opts.strict);
        if (arrays[i] == NULL) {
            /* Record it in the slot like any other failure. */
            PyObject *exc = take_exception();
            an_decoder_close(j->dec);
            j->dec = NULL;
            j->status = AN_ERR_NOMEM;
            if (PyList_SetItem(result, i, exc) < 0) /* steals exc */
                goto fail;
            continue;
        }
        j->out = (uint8_t *)PyArray_BYTES(arrays[i]);
    }

    /* 3. Decode on the pool. */
    int helpers = threads - 1;
    if (helpers > (int)n - 1)
        helpers = (int)n - 1;
    an_pool *pool = NULL;
    if (helpers > 0 && (pool = get_pool(st, helpers)) == NULL)
        goto fail;
    Py_BEGIN_ALLOW_THREADS
    if (pool != NULL)
        an_pool_run(pool, run_job, jobs, (size_t)n, helpers);
    else
        for (i = 0; i < n; i++)
            run_job(jobs, (size_t)i);
    Py_END_ALLOW_THREADS

    /* Results, in order. */
    for (i = 0; i < n; i++) {
        job_t *j = &jobs[i];
        if (j->have_view) {
            PyBuffer_Release(&j->view);
            j->have_view = 0;
        }
        if (PyList_GET_ITEM(result, i) != NULL)
            continue; /* allocation failure recorded in step 2 */
        if (j->status == AN_OK) {
            PyList_SET_ITEM(result, i, (PyObject *)arrays[i]);
            arrays[i] = NULL;
            if (an_warn_decoded(st, &j->err, 3) < 0)
                goto fail;
            continue;
        }
        j->err.status = j->status;
        an_raise_guarded(st, &j->err, opts.alloc);
        PyObject *exc = take_exception();
        if (exc == NULL)
            goto fail;
        PyList_SET_ITEM(result, i, exc);
    }
    if (!return_errors) {
        for (i = 0; i < n; i++) {
            PyObject *x = PyList_GET_ITEM(result, i);
            if (PyExceptionInstance_Check(x)) {
                first_exc = Py_NewRef(x);
                break;
            }
        }
        if (first_exc != NULL) {
            Py_CLEAR(result);
            PyErr_SetObject((PyObject *)Py_TYPE(first_exc), first_exc);
            Py_DECREF(first_exc);
        }
    }
    goto done;

fail:
    Py_CLEAR(result);
done:
    for (i = 0; jobs != NULL && i < n; i++) {
        an_decoder_close(jobs[i].dec);
        if (jobs[i].have_view)
            PyBuffer_Release(&jobs[i].view);
    }
    for (i = 0; arrays != NULL && i < n; i++)
        Py_XDECREF(arrays[i]);
    PyMem_Free(jobs);
    PyMem_Free(arrays);
    Py_XDECREF(seq);
    an_guard_release(&guard);
    return result;
}
