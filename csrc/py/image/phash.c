/*
 * phash.c (binding) - perceptual_hash() and image_descriptor().
 *
 * The array is read in place through its strides (np.rot90, crops and flips
 * cost no copy); the core runs with the GIL released while this call holds a
 * reference to the input.  The friendly API (bytes in, hamming) is
 * amulet_native.perceptual.
 */
#include "../an_py.h"
#include "../../core/image/an_phash.h"

PyObject *
an_py_perceptual_hash(PyObject *module, PyObject *arg)
{
    an_state *st = an_get_state(module);
    an_view v;
    an_error err;
    uint64_t h = 0;
    an_status s;

    if (an_view_from_array(st, arg, &v) < 0)
        return NULL;
    Py_INCREF(arg);
    Py_BEGIN_ALLOW_THREADS
    s = an_phash(&v, &h, NULL, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(arg);
    if (s != AN_OK)
        return an_raise(st, &err);
    return PyLong_FromUnsignedLongLong((unsigned long long)h);
}

PyObject *
an_py_image_descriptor(PyObject *module, PyObject *arg)
{
    an_state *st = an_get_state(module);
    an_view v;
    an_error err;
    an_status s;
    npy_intp dims[1] = {AN_DESC_LEN};

    if (an_view_from_array(st, arg, &v) < 0)
        return NULL;
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT32);
    if (out == NULL)
        return NULL;
    float *dst = (float *)PyArray_DATA(out);
    Py_INCREF(arg);
    Py_BEGIN_ALLOW_THREADS
    s = an_descriptor(&v, dst, NULL, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(arg);
    if (s != AN_OK) {
        Py_DECREF(out);
        return an_raise(st, &err);
    }
    return (PyObject *)out;
}
