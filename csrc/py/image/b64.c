/*
 * b64.c (binding) - base64 codec and base64 -> image decoding.
 *
 * The point of doing this natively is to never hold the payload twice as
 * Python objects: a str argument is read in place (every str whose characters
 * fit in one byte stores them as bytes, PEP 393), bytes-like arguments are
 * exported without a copy, and encoding writes straight into a new ASCII str.
 * decode_base64() decodes the text into a core-allocated block (max_bytes is
 * enforced from the text length before that allocation), runs the first
 * decoder phase on it in the same GIL-released section, then shares the second
 * phase with decode() (an_decode_into_array) and frees the block.
 *
 * Python signatures (the friendly ones are in amulet_native.b64):
 *   _core.decode_base64(data, mode, depth16, scale_denom, max_w, max_h, orient,
 *                       strict, expect_format, limits, out) -> ndarray
 *   _core.b64decode(data) -> bytes
 *   _core.b64encode(data, urlsafe, pad, prefix) -> str
 */
#include "../an_py.h"
#include "../../core/image/an_base64.h"
#include "../../core/image/an_base64_simd.h"

/* Below this many bytes the codec is faster than releasing the GIL. */
#define B64_GIL_THRESHOLD 32768

/* The base64 text of a call: a str read in place or an exported buffer. */
typedef struct b64_text {
    const uint8_t *data;
    size_t len;
    Py_buffer view;
    int has_view;
} b64_text;

static PyObject *
raise_offset(an_state *st, size_t offset, const char *fmt, ...)
{
    an_error err;
    memset(&err, 0, sizeof(err));
    err.status = AN_ERR_BASE64;
    err.actual = offset;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.detail, sizeof(err.detail), fmt, ap);
    va_end(ap);
    return an_raise(st, &err);
}

static int
text_get(an_state *st, PyObject *obj, b64_text *t)
{
    t->has_view = 0;
    if (PyUnicode_Check(obj)) {
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(obj) < 0)
            return -1;
#endif
        Py_ssize_t n = PyUnicode_GET_LENGTH(obj);
        int kind = PyUnicode_KIND(obj);
        if (kind != PyUnicode_1BYTE_KIND) {
            /* Some character is beyond U+00FF: report the first non-ASCII one. */
            const void *d = PyUnicode_DATA(obj);
            Py_ssize_t i = 0;
            while (i < n && PyUnicode_READ(kind, d, i) < 128)
                i++;
            raise_offset(st, (size_t)i,
                         "non-ASCII character U+%04X at offset %zd in base64 text",
                         (unsigned)PyUnicode_READ(kind, d, i), i);
            return -1;
        }
        /* Latin-1 characters >= 0x80 are invalid base64: the codec reports them
         * at their offset, which for a str is the character index. */
        t->data = PyUnicode_1BYTE_DATA(obj);
        t->len = (size_t)n;
        return 0;
    }
    if (an_get_input(st, obj, &t->view) < 0)
        return -1;
    t->has_view = 1;
    t->data = t->view.buf;
    t->len = (size_t)t->view.len;
    return 0;
}

static void
text_release(b64_text *t)
{
    if (t->has_view) {
        PyBuffer_Release(&t->view);
        t->has_view = 0;
    }
}

PyObject *
an_py_decode_base64(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = an_get_state(module);
    an_decode_opts opts;
    an_error err;
    an_decoder *dec = NULL;
    uint8_t *bin = NULL;
    size_t bin_len = 0;
    b64_text text;
    an_status s;

    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "decode_base64() takes 11 positional arguments");
        return NULL;
    }
    if (an_parse_decode_opts(args + 1, &opts) < 0 || text_get(st, args[0], &text) < 0)
        return NULL;
    an_guard guard; /* charges the binary copy and the decoder to the budget */
    if (an_guard_begin(st, &guard) < 0) {
        text_release(&text);
        return NULL;
    }
    opts.alloc = an_guard_allocator(&guard);
    memset(&err, 0, sizeof(err));
    Py_BEGIN_ALLOW_THREADS
    s = an_b64_decode_alloc(text.data, text.len, AN_B64_DATA_URL, opts.limits.max_bytes,
                            opts.alloc, &bin, &bin_len, &err);
    if (s == AN_OK)
        s = an_decoder_open(&dec, bin, bin_len, &opts, &err);
    Py_END_ALLOW_THREADS
    text_release(&text);
    if (s != AN_OK) {
        an_free(opts.alloc, bin);
        an_raise_guarded(st, &err, opts.alloc);
        an_guard_release(&guard);
        return NULL;
    }
    /* bin is ours, so out= cannot overlap it (in = NULL).  stacklevel 2: past
     * amulet_native.b64.decode_base64 to the user's line. */
    PyObject *res = an_decode_into_array(st, dec, args[10], NULL, opts.strict, 2);
    an_free(opts.alloc, bin);
    an_guard_release(&guard);
    return res;
}

PyObject *
an_py_b64decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = an_get_state(module);
    PyObject *res = NULL, *exact;
    an_error err;
    size_t bound, n = 0;
    b64_text text;
    an_status s;

    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "b64decode() takes exactly one argument");
        return NULL;
    }
    if (text_get(st, args[0], &text) < 0)
        return NULL;
    memset(&err, 0, sizeof(err));
    if (an_b64_decoded_bound(text.data, text.len, AN_B64_DATA_URL, &bound, &err) != AN_OK) {
        an_raise(st, &err);
        goto done;
    }
    /* The bound is exact unless the text has inner whitespace; then one copy
     * trims the result (bytes cannot shrink through the public API). */
    if ((res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)bound)) == NULL)
        goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
    if (text.len >= B64_GIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        s = an_b64_decode(text.data, text.len, AN_B64_DATA_URL, out, bound, &n, &err);
        Py_END_ALLOW_THREADS
    } else {
        s = an_b64_decode(text.data, text.len, AN_B64_DATA_URL, out, bound, &n, &err);
    }
    if (s != AN_OK) {
        Py_CLEAR(res);
        an_raise(st, &err);
    } else if (n != bound) {
        exact = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)n);
        Py_SETREF(res, exact);
    }
done:
    text_release(&text);
    return res;
}

PyObject *
an_py_b64encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = an_get_state(module);
    PyObject *res = NULL;
    Py_buffer view;
    int urlsafe, pad, ok;
    const char *prefix = "";
    Py_ssize_t plen = 0;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "b64encode() takes 4 positional arguments");
        return NULL;
    }
    if ((urlsafe = PyObject_IsTrue(args[1])) < 0 || (pad = PyObject_IsTrue(args[2])) < 0)
        return NULL;
    if (args[3] != Py_None) {
        if (!PyUnicode_Check(args[3]) || (prefix = PyUnicode_AsUTF8AndSize(args[3], &plen)) == NULL ||
            (size_t)plen != (size_t)PyUnicode_GET_LENGTH(args[3])) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "prefix must be an ASCII str or None");
            return NULL;
        }
    }
    if (an_get_input(st, args[0], &view) < 0)
        return NULL;
    size_t n = an_b64_encoded_len((size_t)view.len, pad, &ok);
    if (!ok || n > (size_t)(PY_SSIZE_T_MAX - plen)) {
        PyErr_SetString(PyExc_OverflowError, "base64 text would be too long");
        goto done;
    }
    if ((res = PyUnicode_New(plen + (Py_ssize_t)n, 127)) == NULL)
        goto done;
    char *out = (char *)PyUnicode_1BYTE_DATA(res);
    memcpy(out, prefix, (size_t)plen);
    if ((size_t)view.len >= B64_GIL_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        an_b64_encode(view.buf, (size_t)view.len, out + plen, urlsafe, pad);
        Py_END_ALLOW_THREADS
    } else {
        an_b64_encode(view.buf, (size_t)view.len, out + plen, urlsafe, pad);
    }
done:
    PyBuffer_Release(&view);
    return res;
}

/* codecs-fast: the base64 path chosen at run time ("avx2", "ssse3", "scalar"). */
PyObject *
an_py_base64_simd(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyUnicode_FromString(an_b64_path_name(an_b64_path()));
}
