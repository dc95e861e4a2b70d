/*
 * incremental.c (binding) - _core.IncrementalDecoder over the core's an_incr.
 *
 * Each feed() exports the chunk (PyBUF_SIMPLE, so a bytearray cannot change
 * under the codec), runs the core with the GIL released when the chunk is big
 * enough for that to pay, and, the moment the header is complete, allocates
 * the output array with the GIL held and hands it to the core.  Nothing of the
 * chunk is referenced after feed() returns: the core keeps its own tail.
 *
 * One thread at a time: feed/finish/close take an atomic busy flag and raise
 * ValidationError(decoder.busy) when another thread holds it, rather than let
 * two threads drive one libjpeg/libpng state.  After an error, finish() or
 * close(), the native state is freed at once and every further call raises
 * ValidationError(decoder.state).
 *
 * Python signature (the friendly one is amulet_native.IncrementalDecoder):
 *   _core.IncrementalDecoder(mode, depth16, scale_denom, max_w, max_h, orient,
 *                            strict, expect_format, limits)
 *   .feed(data) -> None ; .finish() -> ndarray ; .close() -> None
 *   .info -> probe tuple or None ; .bytes_fed ; .rows_done ; .rows_total ; .state
 */
#include <stdatomic.h>

#include "../an_py.h"
#include "../../core/image/an_incr.h"

/* Chunks below this are decoded without releasing the GIL: the switch would
 * cost more than the work. */
#define AN_INCR_NOGIL_BYTES 8192

typedef struct {
    PyObject_HEAD
    an_incr *dec;           /* NULL once finished, failed or closed */
    PyObject *out;          /* the output array, from the header on */
    atomic_int busy;
    int strict;
    const char *ended;      /* why dec is NULL: "finished", "closed", "failed" */
    an_error fail;          /* the error that ended it, for later calls */
    PyObject *info;         /* probe tuple once the header is in */
    /* Progress, copied from the core after each call (a getter never touches
     * the core, which may be working in another thread). */
    _Atomic uint64_t bytes_fed;
    _Atomic uint32_t rows_done, rows_total;
} IncrObject;

static an_state *
incr_state(IncrObject *self)
{
    return (an_state *)PyType_GetModuleState(Py_TYPE(self));
}

static void
incr_sync(IncrObject *self)
{
    if (self->dec == NULL)
        return;
    atomic_store_explicit(&self->bytes_fed, an_incr_bytes_fed(self->dec), memory_order_relaxed);
    atomic_store_explicit(&self->rows_done, an_incr_rows_done(self->dec), memory_order_relaxed);
    atomic_store_explicit(&self->rows_total, an_incr_rows_total(self->dec), memory_order_relaxed);
}

/* Frees the native state; records why. */
static void
incr_release(IncrObject *self, const char *why)
{
    if (self->dec != NULL) {
        incr_sync(self);
        an_incr_close(self->dec);
        self->dec = NULL;
    }
    Py_CLEAR(self->out);
    if (self->ended == NULL)
        self->ended = why;
}

static PyObject *
incr_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    an_state *st = PyType_GetModuleState(type);
    an_decode_opts opts;
    an_error err;
    if ((kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) || PyTuple_GET_SIZE(args) != 9) {
        PyErr_SetString(PyExc_TypeError, "IncrementalDecoder() takes 9 positional arguments");
        return NULL;
    }
    if (an_parse_decode_opts(&PyTuple_GET_ITEM(args, 0), &opts) < 0)
        return NULL;
    IncrObject *self = (IncrObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    atomic_init(&self->busy, 0);
    atomic_init(&self->bytes_fed, 0);
    atomic_init(&self->rows_done, 0);
    atomic_init(&self->rows_total, 0);
    self->strict = opts.strict;
    if (an_incr_new(&self->dec, &opts, &err) != AN_OK) {
        Py_DECREF(self);
        return an_raise(st, &err);
    }
    return (PyObject *)self;
}

static void
incr_dealloc(IncrObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    an_incr_close(self->dec);
    Py_XDECREF(self->out);
    Py_XDECREF(self->info);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* Takes the busy flag and checks that the decoder is still usable. */
static int
incr_enter(IncrObject *self, const char *what)
{
    an_state *st = incr_state(self);
    if (atomic_exchange(&self->busy, 1) != 0) {
        an_raise_status(st, AN_ERR_DECODER_BUSY,
                        "IncrementalDecoder.%s(): the decoder is in use by another thread", what);
        return -1;
    }
    if (self->dec == NULL) {
        if (self->fail.status != AN_OK)
            an_raise_status(st, AN_ERR_DECODER_STATE,
                            "IncrementalDecoder.%s(): the decoder failed earlier (%s: %s)", what,
                            an_error_lookup(self->fail.status)->code,
                            self->fail.detail[0] ? self->fail.detail
                                                 : an_error_lookup(self->fail.status)->message);
        else
            an_raise_status(st, AN_ERR_DECODER_STATE, "IncrementalDecoder.%s(): the decoder is %s",
                            what, self->ended ? self->ended : "closed");
        atomic_store(&self->busy, 0);
        return -1;
    }
    return 0;
}

static void
incr_leave(IncrObject *self)
{
    incr_sync(self);
    atomic_store(&self->busy, 0);
}

/* Raises err and frees the native state: the decoder is done for. */
static PyObject *
incr_failed(IncrObject *self, const an_error *err)
{
    self->fail = *err;
    incr_release(self, "failed");
    return an_raise(incr_state(self), err);
}

/* The header is in: the info tuple, made once. */
static int
incr_info(IncrObject *self)
{
    if (self->info != NULL)
        return 0;
    const an_info *i = an_incr_info(self->dec);
    self->info = Py_BuildValue("(sIIiiNiI)", an_format_name(i->format), i->width, i->height,
                               i->channels, i->bit_depth, PyBool_FromLong(i->progressive),
                               i->orientation, i->frames);
    return self->info != NULL ? 0 : -1;
}

/* Allocates the output and hands it to the core, which decodes what it holds. */
static int
incr_output(IncrObject *self, an_error *err)
{
    an_state *st = incr_state(self);
    an_shape shape;
    an_status s;
    if (incr_info(self) < 0)
        return -1;
    an_incr_shape(self->dec, &shape);
    PyArrayObject *arr = an_new_output(st, &shape, self->strict);
    if (arr == NULL) {
        self->fail.status = AN_ERR_NOMEM;
        incr_release(self, "failed");
        return -1;
    }
    self->out = (PyObject *)arr;
    uint8_t *buf = (uint8_t *)PyArray_BYTES(arr);
    an_incr *dec = self->dec;
    Py_BEGIN_ALLOW_THREADS
    s = an_incr_set_output(dec, buf, err);
    Py_END_ALLOW_THREADS
    if (s != AN_OK) {
        incr_failed(self, err);
        return -1;
    }
    return 0;
}

static PyObject *
incr_feed(IncrObject *self, PyObject *data)
{
    an_state *st = incr_state(self);
    Py_buffer view;
    an_error err;
    an_status s;
    PyObject *res = NULL;

    if (incr_enter(self, "feed") < 0)
        return NULL;
    if (an_get_input(st, data, &view) < 0)
        goto done;
    if (an_incr_get_state(self->dec) == AN_INCR_OUTPUT && incr_output(self, &err) < 0) {
        PyBuffer_Release(&view);
        goto done;
    }
    an_incr *dec = self->dec;
    if (view.len >= AN_INCR_NOGIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        s = an_incr_feed(dec, view.buf, (size_t)view.len, &err);
        Py_END_ALLOW_THREADS
    } else {
        s = an_incr_feed(dec, view.buf, (size_t)view.len, &err);
    }
    PyBuffer_Release(&view);
    if (s != AN_OK) {
        incr_failed(self, &err);
        goto done;
    }
    /* Header complete: the output is allocated now if body bytes are waiting,
     * else on the next call (a header-only feed allocates nothing). */
    if (an_incr_get_state(self->dec) == AN_INCR_OUTPUT) {
        if (incr_info(self) < 0 || (an_incr_has_body(self->dec) && incr_output(self, &err) < 0))
            goto done;
    }
    res = Py_NewRef(Py_None);
done:
    incr_leave(self);
    return res;
}

static PyObject *
incr_finish(IncrObject *self, PyObject *unused)
{
    (void)unused;
    an_error err;
    an_status s;
    PyObject *res = NULL;

    if (incr_enter(self, "finish") < 0)
        return NULL;
    an_incr *dec = self->dec;
    if (an_incr_get_state(dec) == AN_INCR_OUTPUT && incr_output(self, &err) < 0)
        goto done;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        s = an_incr_finish(dec, &err);
        Py_END_ALLOW_THREADS
        if (s != AN_OK) {
            incr_failed(self, &err);
            goto done;
        }
        if (an_incr_get_state(dec) != AN_INCR_OUTPUT)
            break;
        if (incr_output(self, &err) < 0)
            goto done;
    }
    /* stacklevel 2: past amulet_native.IncrementalDecoder.finish. */
    if (an_warn_decoded(incr_state(self), &err, 2) < 0) {
        incr_release(self, "failed");
        goto done;
    }
    res = Py_NewRef(self->out);
    incr_release(self, "finished");
done:
    incr_leave(self);
    return res;
}

static PyObject *
incr_close(IncrObject *self, PyObject *unused)
{
    (void)unused;
    if (atomic_exchange(&self->busy, 1) != 0)
        return an_raise_status(incr_state(self), AN_ERR_DECODER_BUSY,
                               "IncrementalDecoder.close(): the decoder is in use by another "
                               "thread");
    incr_release(self, "closed");
    incr_leave(self);
    Py_RETURN_NONE;
}

static PyObject *
incr_get_info(IncrObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->info != NULL ? self->info : Py_None);
}

static PyObject *
incr_get_bytes_fed(IncrObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(atomic_load_explicit(&self->bytes_fed, memory_order_relaxed));
}

static PyObject *
incr_get_rows_done(IncrObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLong(atomic_load_explicit(&self->rows_done, memory_order_relaxed));
}

static PyObject *
incr_get_rows_total(IncrObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLong(atomic_load_explicit(&self->rows_total, memory_order_relaxed));
}

static PyObject *
incr_get_state(IncrObject *self, void *closure)
{
    (void)closure;
    if (self->dec == NULL)
        return PyUnicode_FromString(self->ended ? self->ended : "closed");
    return PyUnicode_FromString(an_incr_get_state(self->dec) == AN_INCR_HEADER ? "header"
                                                                               : "body");
}

static PyMethodDef incr_methods[] = {
    {"feed", (PyCFunction)incr_feed, METH_O, "feed(data) -> None: decode the next bytes."},
    {"finish", (PyCFunction)incr_finish, METH_NOARGS,
     "finish() -> ndarray: end of input; the decoded image."},
    {"close", (PyCFunction)incr_close, METH_NOARGS, "close() -> None: free the native state."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef incr_getset[] = {
    {"info", (getter)incr_get_info, NULL, "probe tuple once the header is in, else None", NULL},
    {"bytes_fed", (getter)incr_get_bytes_fed, NULL, "bytes fed so far", NULL},
    {"rows_done", (getter)incr_get_rows_done, NULL, "decoded rows (codec output)", NULL},
    {"rows_total", (getter)incr_get_rows_total, NULL, "rows of the codec output, 0 before the header",
     NULL},
    {"state", (getter)incr_get_state, NULL,
     "'header', 'body', 'finished', 'failed' or 'closed'", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot incr_slots[] = {
    {Py_tp_new, incr_new},
    {Py_tp_dealloc, incr_dealloc},
    {Py_tp_methods, incr_methods},
    {Py_tp_getset, incr_getset},
    {Py_tp_doc, "IncrementalDecoder(mode, depth16, scale_denom, max_w, max_h, orient, strict, "
                "expect_format, limits): decode JPEG/PNG bytes as they arrive."},
    {0, NULL},
};

static PyType_Spec incr_spec = {
    .name = "amulet_native._core.IncrementalDecoder",
    .basicsize = sizeof(IncrObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = incr_slots,
};

int
an_incremental_exec(PyObject *m, an_state *st)
{
    (void)st;
    PyObject *type = PyType_FromModuleAndSpec(m, &incr_spec, NULL);
    if (type == NULL)
        return -1;
    int r = PyModule_AddType(m, (PyTypeObject *)type);
    Py_DECREF(type);
    return r;
}
