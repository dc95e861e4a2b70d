/*
 * image.c (binding) - probe() and decode().
 *
 * decode() follows the two-phase core API: the header is parsed with the GIL
 * released, the output array is allocated with the GIL held (so NumPy's
 * allocator and any memory handler see it), then the whole decode runs with the
 * GIL released.  The input stays exported (PyBUF_SIMPLE) for the duration, so
 * a bytearray cannot be resized under the decoder and no copy is ever made.
 *
 * Python signature (the friendly one is amulet_native.image.decode):
 *   _core.decode(data, mode, depth16, scale_denom, max_w, max_h, orient, strict,
 *                expect_format, limits, out) -> ndarray
 *   _core.probe(data) -> (format, width, height, channels, bit_depth,
 *                         progressive, orientation)
 */
#include "../an_py.h"

int
an_get_input(an_state *st, PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) == 0)
        return 0;
    if (PyErr_ExceptionMatches(st->exc[AN_OK]))
        return -1; /* the exporter's own typed error, e.g. a closed MappedFile */
    PyErr_Clear();
    an_raise_status(st, AN_ERR_INPUT_TYPE,
                    "expected a contiguous bytes-like object (bytes, bytearray, memoryview, "
                    "mmap, uint8 ndarray), got %.100s",
                    Py_TYPE(obj)->tp_name);
    return -1;
}

PyObject *
an_py_probe(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = an_get_state(module);
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "probe() takes exactly one argument");
        return NULL;
    }
    Py_buffer view;
    if (an_get_input(st, args[0], &view) < 0)
        return NULL;
    an_info info;
    an_error err;
    memset(&err, 0, sizeof(err));
    an_status s = an_probe(view.buf, (size_t)view.len, &info, &err);
    PyBuffer_Release(&view);
    if (s != AN_OK)
        return an_raise(st, &err);
    return Py_BuildValue("(sIIiiNi)", an_format_name(info.format), info.width, info.height,
                         info.channels, info.bit_depth, PyBool_FromLong(info.progressive),
                         info.orientation);
}

static int
as_u64(PyObject *o, uint64_t *out)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

static int
as_u32(PyObject *o, uint32_t *out)
{
    uint64_t v;
    if (as_u64(o, &v) < 0)
        return -1;
    if (v > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in 32 bits");
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int
parse_limits(PyObject *t, an_limits *lim)
{
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 5) {
        PyErr_SetString(PyExc_TypeError, "limits must be a 5-tuple");
        return -1;
    }
    return (as_u64(PyTuple_GET_ITEM(t, 0), &lim->max_bytes) < 0 ||
            as_u64(PyTuple_GET_ITEM(t, 1), &lim->max_pixels) < 0 ||
            as_u32(PyTuple_GET_ITEM(t, 2), &lim->max_width) < 0 ||
            as_u32(PyTuple_GET_ITEM(t, 3), &lim->max_height) < 0 ||
            as_u32(PyTuple_GET_ITEM(t, 4), &lim->max_jpeg_scans) < 0)
               ? -1
               : 0;
}

int
an_as_int(PyObject *o, int *out)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < INT32_MIN || v > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "integer option out of range");
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Checks that out can receive the image; returns a new reference or NULL. */
static PyArrayObject *
check_out(an_state *st, PyObject *out, const an_shape *shape, const Py_buffer *in)
{
    if (!PyArray_Check(out)) {
        an_raise_status(st, AN_ERR_OUT_MISMATCH, "out must be a numpy.ndarray, got %.100s",
                        Py_TYPE(out)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)out;
    int nd = shape->channels == 1 ? 2 : 3;
    int type = shape->bytes_per_sample == 2 ? NPY_UINT16 : NPY_UINT8;
    npy_intp *dims = PyArray_DIMS(a);
    if (PyArray_NDIM(a) != nd || dims[0] != (npy_intp)shape->height ||
        dims[1] != (npy_intp)shape->width || (nd == 3 && dims[2] != shape->channels)) {
        if (nd == 2)
            an_raise_status(st, AN_ERR_OUT_MISMATCH, "out must have shape (%u, %u)",
                            shape->height, shape->width);
        else
            an_raise_status(st, AN_ERR_OUT_MISMATCH, "out must have shape (%u, %u, %d)",
                            shape->height, shape->width, shape->channels);
        return NULL;
    }
    if (PyArray_TYPE(a) != type || !PyArray_ISNOTSWAPPED(a)) {
        an_raise_status(st, AN_ERR_OUT_MISMATCH, "out must have dtype %s",
                        type == NPY_UINT16 ? "uint16" : "uint8");
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a) || !PyArray_ISWRITEABLE(a)) {
        an_raise_status(st, AN_ERR_OUT_MISMATCH,
                        "out must be C-contiguous, aligned and writeable");
        return NULL;
    }
    const char *ob = PyArray_BYTES(a), *ib = in != NULL ? in->buf : NULL;
    if (ib != NULL && ob < ib + in->len && ib < ob + shape->nbytes) {
        an_raise_status(st, AN_ERR_OUT_MISMATCH, "out must not overlap the input data");
        return NULL;
    }
    Py_INCREF(out);
    return a;
}

int
an_parse_decode_opts(PyObject *const *args, an_decode_opts *opts)
{
    int mode, depth16, denom, orient, strict, expect;
    an_decode_opts_init(opts);
    if (an_as_int(args[0], &mode) < 0 || (depth16 = PyObject_IsTrue(args[1])) < 0 ||
        an_as_int(args[2], &denom) < 0 || as_u32(args[3], &opts->max_w) < 0 ||
        as_u32(args[4], &opts->max_h) < 0 || (orient = PyObject_IsTrue(args[5])) < 0 ||
        (strict = PyObject_IsTrue(args[6])) < 0 || an_as_int(args[7], &expect) < 0 ||
        parse_limits(args[8], &opts->limits) < 0)
        return -1;
    if (expect < 0 || expect >= AN_FMT_COUNT) {
        PyErr_SetString(PyExc_ValueError, "invalid expected format");
        return -1;
    }
    opts->mode = (an_mode)mode;
    opts->depth16 = depth16;
    opts->scale_denom = denom;
    opts->orient = orient;
    opts->strict = strict;
    opts->expect = (an_format)expect;
    return 0;
}

PyArrayObject *
an_new_output(an_state *st, const an_shape *shape, int strict)
{
    npy_intp dims[3] = {(npy_intp)shape->height, (npy_intp)shape->width, shape->channels};
    int type = shape->bytes_per_sample == 2 ? NPY_UINT16 : NPY_UINT8;
    int nd = shape->channels == 1 ? 2 : 3;
    /* Tolerant decoding may leave parts unwritten: start from zeros. */
    PyArrayObject *arr = (PyArrayObject *)(strict ? PyArray_SimpleNew(nd, dims, type)
                                                  : PyArray_ZEROS(nd, dims, type, 0));
    if (arr == NULL && PyErr_ExceptionMatches(PyExc_MemoryError)) {
        /* NumPy's own MemoryError is untyped: report it from the table. */
        PyErr_Clear();
        an_raise_status(st, AN_ERR_NOMEM, "cannot allocate the %zu-byte output array",
                        shape->nbytes);
    }
    return arr;
}

int
an_warn_decoded(an_state *st, const an_error *err, int stacklevel)
{
    if (!err->warned)
        return 0;
    return PyErr_WarnFormat(st->warning, stacklevel, "%s image decoded with errors: %s",
                            an_format_name((an_format)err->format),
                            err->detail[0] ? err->detail : "damaged data");
}

PyObject *
an_py_decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = an_get_state(module);
    an_decode_opts opts;
    an_error err;
    an_decoder *dec = NULL;
    PyObject *res;
    Py_buffer view;
    an_status s;

    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "decode() takes 11 positional arguments");
        return NULL;
    }
    if (an_parse_decode_opts(args + 1, &opts) < 0)
        return NULL;
    if (an_get_input(st, args[0], &view) < 0)
        return NULL;
    /* The core's working memory is charged to the memory_limit() scope. */
    an_guard guard;
    if (an_guard_begin(st, &guard) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    opts.alloc = an_guard_allocator(&guard);
    double t0 = an_decode_clock();
    Py_BEGIN_ALLOW_THREADS
    s = an_decoder_open(&dec, view.buf, (size_t)view.len, &opts, &err);
    Py_END_ALLOW_THREADS
    if (s != AN_OK) {
        an_decode_stats_record(err.format, s, NULL, (uint64_t)view.len, 0, an_decode_clock() - t0);
        PyBuffer_Release(&view);
        an_raise_guarded(st, &err, opts.alloc);
        an_guard_release(&guard);
        return NULL;
    }
    /* stacklevel 3: past amulet_native.image._decode and its public caller,
     * so the warning points at the user's line. */
    res = an_decode_into_array(st, dec, args[10], &view, opts.strict, 3);
    PyBuffer_Release(&view);
    an_guard_release(&guard);
    return res;
}

PyObject *
an_decode_into_array(an_state *st, an_decoder *dec, PyObject *out, const Py_buffer *in,
                     int strict, int stacklevel)
{
    an_error err;
    an_shape shape;
    PyArrayObject *arr = NULL;
    an_status s;

    const an_allocator *alloc = an_decoder_allocator(dec);
    double t0 = an_decode_clock();
    int fmt = an_decoder_info(dec)->format;
    uint64_t nbytes = in != NULL ? (uint64_t)in->len : 0;
    an_decoder_shape(dec, &shape);
    if (out != Py_None) {
        if ((arr = check_out(st, out, &shape, in)) == NULL)
            goto error;
        if (!strict)
            memset(PyArray_BYTES(arr), 0, shape.nbytes);
    } else if (an_budget_precheck(st, shape.nbytes) < 0 ||
               (arr = an_new_output(st, &shape, strict)) == NULL) {
        goto error; /* a budget refuses before anything is allocated */
    }
    Py_BEGIN_ALLOW_THREADS
    s = an_decoder_run(dec, (uint8_t *)PyArray_BYTES(arr), &err);
    an_decoder_close(dec);
    Py_END_ALLOW_THREADS
    if (s != AN_OK) {
        an_decode_stats_record(fmt, s, NULL, nbytes, 0, an_decode_clock() - t0);
        Py_DECREF(arr);
        return an_raise_guarded(st, &err, alloc);
    }
    an_decode_stats_record(fmt, AN_OK, NULL, nbytes, (uint64_t)shape.width * shape.height,
                           an_decode_clock() - t0);
    if (an_warn_decoded(st, &err, stacklevel) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return (PyObject *)arr;

error:
    an_decode_stats_record(fmt, AN_ERR_MEMORY_LIMIT, "refused", nbytes, 0, an_decode_clock() - t0);
    an_decoder_close(dec);
    return NULL;
}
