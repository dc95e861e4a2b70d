/*
 * encode.c (binding) - encode_jpeg() and encode_png().
 *
 * The array is described to the core as a strided view (no copy, whatever the
 * layout); the array object stays referenced by the call's arguments, so its
 * memory outlives the encode, which runs with the GIL released.  The core
 * writes into a chunk chain; the only copy of the encoded stream is the one
 * into the final bytes object.
 *
 * Python signatures (the friendly ones are in amulet_native.encode):
 *   _core.encode_jpeg(arr, quality, subsampling, progressive, optimize, bgr,
 *                     drop_alpha) -> bytes     (subsampling: an_subsampling)
 *   _core.encode_png(arr, compression, bgr) -> bytes
 */
#include "../an_py.h"
#include "../../core/image/an_encode.h"

/* Describes arr as a view; raises ValidationError (value.array) when it is
 * not an (H, W) or (H, W, 1..4) array of uint8 (or uint16 with allow16). */
static int
array_view(an_state *st, PyObject *obj, int allow16, int bgr, an_image_view *v)
{
    if (!PyArray_Check(obj)) {
        an_raise_status(st, AN_ERR_ARRAY, "expected a numpy.ndarray, got %.100s",
                        Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    const int nd = PyArray_NDIM(a);
    const npy_intp *dims = PyArray_DIMS(a);
    const npy_intp *strides = PyArray_STRIDES(a);
    const char *dtypes = allow16 ? "uint8 or uint16" : "uint8";

    if (nd != 2 && !(nd == 3 && dims[2] >= 1 && dims[2] <= 4)) {
        char shape[96] = "(";
        size_t used = 1;
        for (int i = 0; i < nd && used < sizeof(shape) - 24; i++)
            used += (size_t)snprintf(shape + used, sizeof(shape) - used, "%s%" NPY_INTP_FMT,
                                     i ? ", " : "", dims[i]);
        snprintf(shape + used, sizeof(shape) - used, "%s", nd == 1 ? ",)" : ")");
        an_raise_status(st, AN_ERR_ARRAY,
                        "array must have shape (H, W) or (H, W, C) with C in 1..4, got %s",
                        shape);
        return -1;
    }
    int type = PyArray_TYPE(a);
    if (type != NPY_UINT8 && !(allow16 && type == NPY_UINT16)) {
        an_raise_status(st, AN_ERR_ARRAY, "array dtype must be %s, got %.100s", dtypes,
                        PyArray_DESCR(a)->typeobj->tp_name);
        return -1;
    }
    if (dims[0] > (npy_intp)UINT32_MAX || dims[1] > (npy_intp)UINT32_MAX) {
        an_raise_status(st, AN_ERR_ARRAY, "array is too large to encode (%" NPY_INTP_FMT
                        " x %" NPY_INTP_FMT ")", dims[0], dims[1]);
        return -1;
    }
    memset(v, 0, sizeof(*v));
    v->data = (const uint8_t *)PyArray_BYTES(a);
    v->height = (uint32_t)dims[0];
    v->width = (uint32_t)dims[1];
    v->channels = nd == 2 ? 1 : (int)dims[2];
    v->bytes_per_sample = type == NPY_UINT16 ? 2 : 1;
#if NPY_BYTE_ORDER == NPY_BIG_ENDIAN
    v->big_endian = PyArray_ISNOTSWAPPED(a);
#else
    v->big_endian = !PyArray_ISNOTSWAPPED(a);
#endif
    v->bgr = bgr;
    v->row_stride = (ptrdiff_t)strides[0];
    v->pixel_stride = (ptrdiff_t)strides[1];
    v->sample_stride = nd == 3 ? (ptrdiff_t)strides[2] : 0;
    return 0;
}

/* Moves the encoded stream into a new bytes object and frees the chunks. */
static PyObject *
take_bytes(an_state *st, an_outbuf *out)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)out->size);
    if (b == NULL) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
            PyErr_Clear();
            an_raise_status(st, AN_ERR_NOMEM, "cannot allocate the %zu-byte result",
                            out->size);
        }
    } else {
        an_outbuf_copy(out, (uint8_t *)PyBytes_AS_STRING(b));
    }
    an_outbuf_free(out);
    return b;
}

PyObject *
an_py_encode_jpeg(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = an_get_state(module);
    an_jpeg_enc_opts opts;
    an_image_view view;
    an_outbuf out;
    an_error err;
    int sub, bgr;
    an_status s;

    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "encode_jpeg() takes 7 positional arguments");
        return NULL;
    }
    an_jpeg_enc_opts_init(&opts);
    if (an_as_int(args[1], &opts.quality) < 0 || an_as_int(args[2], &sub) < 0 ||
        (opts.progressive = PyObject_IsTrue(args[3])) < 0 ||
        (opts.optimize = PyObject_IsTrue(args[4])) < 0 || (bgr = PyObject_IsTrue(args[5])) < 0 ||
        (opts.drop_alpha = PyObject_IsTrue(args[6])) < 0)
        return NULL;
    if (sub < 0 || sub >= AN_SUB_COUNT) {
        PyErr_SetString(PyExc_ValueError, "invalid subsampling code");
        return NULL;
    }
    opts.subsampling = (an_subsampling)sub;
    if (array_view(st, args[0], 0, bgr, &view) < 0)
        return NULL;
    memset(&err, 0, sizeof(err));
    an_outbuf_init(&out, NULL, 0);
    Py_BEGIN_ALLOW_THREADS
    s = an_encode_jpeg(&view, &opts, &out, &err);
    Py_END_ALLOW_THREADS
    if (s != AN_OK) {
        an_outbuf_free(&out);
        return an_raise(st, &err);
    }
    return take_bytes(st, &out);
}

PyObject *
an_py_encode_png(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = an_get_state(module);
    an_png_enc_opts opts;
    an_image_view view;
    an_outbuf out;
    an_error err;
    int bgr;
    an_status s;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "encode_png() takes 3 positional arguments");
        return NULL;
    }
    an_png_enc_opts_init(&opts);
    if (an_as_int(args[1], &opts.compression) < 0 || (bgr = PyObject_IsTrue(args[2])) < 0)
        return NULL;
    if (array_view(st, args[0], 1, bgr, &view) < 0)
        return NULL;
    /* The writer's working memory (the whole filtered image and the whole
     * deflated stream) and the output chunks are charged to the budget. */
    an_guard guard;
    if (an_guard_begin(st, &guard) < 0)
        return NULL;
    opts.alloc = an_guard_allocator(&guard);
    memset(&err, 0, sizeof(err));
    an_outbuf_init(&out, opts.alloc, 0);
    Py_BEGIN_ALLOW_THREADS
    s = an_encode_png(&view, &opts, &out, &err);
    Py_END_ALLOW_THREADS
    if (s != AN_OK) {
        an_outbuf_free(&out);
        an_raise_guarded(st, &err, opts.alloc);
        an_guard_release(&guard);
        return NULL;
    }
    PyObject *res = take_bytes(st, &out); /* frees the chunks */
    an_guard_release(&guard);
    return res;
}
