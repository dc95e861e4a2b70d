/*
 * resize.c (binding) - resize().
 *
 * The input array is read in place through its strides (the core gathers
 * non-packed rows itself), so slices, crops, flips and transposes cost no copy.
 * The output is allocated by NumPy with the GIL held; the filtering runs with
 * the GIL released while this call holds a reference to the input.
 *
 * Python signature (the friendly one is amulet_native.transform.resize):
 *   _core.resize(arr, width, height, method) -> ndarray
 *   method: 1 = area, 2 = bilinear (an_resize_method)
 */
#include "../an_py.h"
#include "../../core/image/an_resize.h"

/* A dtype's name for messages ("float64"); "?" if it cannot be had. */
static void
dtype_name(PyArrayObject *a, char *buf, size_t len)
{
    PyObject *s = PyObject_Str((PyObject *)PyArray_DESCR(a));
    const char *u = s != NULL ? PyUnicode_AsUTF8(s) : NULL;
    snprintf(buf, len, "%s", u != NULL ? u : "?");
    if (u == NULL)
        PyErr_Clear();
    Py_XDECREF(s);
}

/* Fills v from an ndarray, or raises value.array and returns -1 (an_py.h). */
int
an_view_from_array(an_state *st, PyObject *obj, an_view *v)
{
    if (!PyArray_Check(obj)) {
        an_raise_status(st, AN_ERR_ARRAY, "arr must be a numpy.ndarray, got %.100s",
                        Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    const int type = PyArray_TYPE(a), nd = PyArray_NDIM(a);
    const npy_intp *dims = PyArray_DIMS(a), *strides = PyArray_STRIDES(a);
    if (type != NPY_UINT8 && type != NPY_UINT16) {
        char name[64];
        dtype_name(a, name, sizeof(name));
        an_raise_status(st, AN_ERR_ARRAY, "arr must have dtype uint8 or uint16, got %s", name);
        return -1;
    }
    if (type == NPY_UINT16 && !PyArray_ISNOTSWAPPED(a)) {
        an_raise_status(st, AN_ERR_ARRAY, "arr must be in native byte order");
        return -1;
    }
    if (nd != 2 && nd != 3) {
        an_raise_status(st, AN_ERR_ARRAY, "arr must be (H, W) or (H, W, C), got %d dimensions",
                        nd);
        return -1;
    }
    const npy_intp ch = nd == 3 ? dims[2] : 1;
    if (ch < 1 || ch > 4) {
        an_raise_status(st, AN_ERR_ARRAY, "arr must have 1 to 4 channels, got %zd",
                        (Py_ssize_t)ch);
        return -1;
    }
    if (dims[0] < 1 || dims[1] < 1 || (uint64_t)dims[0] > UINT32_MAX ||
        (uint64_t)dims[1] > UINT32_MAX) {
        an_raise_status(st, AN_ERR_ARRAY, "arr must be at least 1x1 and at most 2^32-1 per "
                                          "side, got %zdx%zd",
                        (Py_ssize_t)dims[1], (Py_ssize_t)dims[0]);
        return -1;
    }
    v->data = (const uint8_t *)PyArray_BYTES(a);
    v->height = (uint32_t)dims[0];
    v->width = (uint32_t)dims[1];
    v->channels = (int)ch;
    v->bytes_per_sample = type == NPY_UINT16 ? 2 : 1;
    v->row_stride = strides[0];
    v->col_stride = strides[1];
    v->chan_stride = nd == 3 ? strides[2] : v->bytes_per_sample;
    return 0;
}

static int
as_dim(an_state *st, PyObject *o, const char *what, uint32_t *out)
{
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 1 || v > (long long)INT32_MAX) {
        an_raise_status(st, AN_ERR_INVALID_ARG, "%s must be in [1, 2^31-1], got %lld", what, v);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

PyObject *
an_py_resize(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = an_get_state(module);
    an_view v;
    an_error err;
    uint32_t w, h;
    int method;
    size_t nbytes;
    PyArrayObject *out = NULL;
    an_status s;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "resize() takes 4 positional arguments");
        return NULL;
    }
    if (an_view_from_array(st, args[0], &v) < 0 || as_dim(st, args[1], "width", &w) < 0 ||
        as_dim(st, args[2], "height", &h) < 0)
        return NULL;
    long m = PyLong_AsLong(args[3]);
    if (m == -1 && PyErr_Occurred())
        return NULL;
    if (m != AN_RESIZE_AREA && m != AN_RESIZE_BILINEAR)
        return an_raise_status(st, AN_ERR_INVALID_ARG, "unknown resize method %ld", m);
    method = (int)m;
    if (!an_mul4_size(w, h, (size_t)v.channels, (size_t)v.bytes_per_sample, &nbytes) ||
        nbytes > (size_t)PY_SSIZE_T_MAX)
        return an_raise_status(st, AN_ERR_INVALID_ARG, "output size %ux%u overflows", w, h);

    PyArrayObject *in = (PyArrayObject *)args[0];
    npy_intp dims[3] = {(npy_intp)h, (npy_intp)w, v.channels};
    out = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(in), dims, PyArray_TYPE(in));
    if (out == NULL) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
            PyErr_Clear();
            an_raise_status(st, AN_ERR_NOMEM, "cannot allocate the %zu-byte output array",
                            nbytes);
        }
        return NULL;
    }
    /* Keep the input (and so its buffer) alive while the GIL is released. */
    Py_INCREF(in);
    Py_BEGIN_ALLOW_THREADS
    s = an_resize(&v, (uint8_t *)PyArray_BYTES(out), w, h, (an_resize_method)method, NULL,
                  &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(in);
    if (s != AN_OK) {
        Py_DECREF(out);
        return an_raise(st, &err);
    }
    return (PyObject *)out;
}
