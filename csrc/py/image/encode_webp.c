/*
 * encode_webp.c (binding) - encode_webp().
 *
 *   _core.encode_webp(arr, quality, lossless, method, bgr) -> bytes
 *
 * arr must be a C-contiguous uint8 (H, W, 3|4) array (amulet_native.encode
 * makes grey and strided arrays so); it stays referenced by the call's
 * arguments while libwebp reads it with the GIL released.
 */
#include "../an_py.h"
#include "../../core/image/an_encode_webp.h"

PyObject *
an_py_encode_webp(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = an_get_state(module);
    an_webp_enc_opts opts;
    an_error err;
    uint8_t *data = NULL;
    size_t len = 0;
    int lossless, bgr;
    an_status s;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "encode_webp() takes 5 positional arguments");
        return NULL;
    }
    an_webp_enc_opts_init(&opts);
    double q = PyFloat_AsDouble(args[1]);
    if ((q == -1.0 && PyErr_Occurred()) || (lossless = PyObject_IsTrue(args[2])) < 0 ||
        an_as_int(args[3], &opts.method) < 0 || (bgr = PyObject_IsTrue(args[4])) < 0)
        return NULL;
    opts.quality = (float)q;
    opts.lossless = lossless;
    if (!PyArray_Check(args[0])) {
        return an_raise_status(st, AN_ERR_ARRAY, "expected a numpy.ndarray, got %.100s",
                               Py_TYPE(args[0])->tp_name);
    }
    PyArrayObject *a = (PyArrayObject *)args[0];
    if (PyArray_NDIM(a) != 3 || PyArray_TYPE(a) != NPY_UINT8 || !PyArray_IS_C_CONTIGUOUS(a) ||
        (PyArray_DIMS(a)[2] != 3 && PyArray_DIMS(a)[2] != 4) ||
        PyArray_DIMS(a)[0] > (npy_intp)UINT32_MAX || PyArray_DIMS(a)[1] > (npy_intp)UINT32_MAX)
        return an_raise_status(st, AN_ERR_ARRAY,
                               "encode_webp needs a C-contiguous uint8 (H, W, 3|4) array");
    const uint8_t *px = (const uint8_t *)PyArray_BYTES(a);
    uint32_t h = (uint32_t)PyArray_DIMS(a)[0], w = (uint32_t)PyArray_DIMS(a)[1];
    int ch = (int)PyArray_DIMS(a)[2];
    memset(&err, 0, sizeof(err));
    Py_BEGIN_ALLOW_THREADS
    s = an_encode_webp(px, w, h, ch, bgr, &opts, &data, &len, &err);
    Py_END_ALLOW_THREADS
    if (s != AN_OK)
        return an_raise(st, &err);
    PyObject *b = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
    an_webp_free(data);
    if (b == NULL && PyErr_ExceptionMatches(PyExc_MemoryError)) {
        PyErr_Clear();
        an_raise_status(st, AN_ERR_NOMEM, "cannot allocate the %zu-byte result", len);
    }
    return b;
}
