/*
 * errors.c (binding) - an_error -> Python exception.
 *
 * The exception classes are defined in amulet_native/errors.py (pure Python, so
 * they pickle and subclass like any other exception); the core's error table
 * names the class for each status.  The context dict carries what a handler
 * needs to act without parsing the message: the format, the offending value and
 * the limit, the codec's own words.
 */
#include <stdarg.h>

#include "an_py.h"

static const char *const limit_names[] = {
    [AN_ERR_LIMIT_BYTES] = "max_bytes",
    [AN_ERR_LIMIT_PIXELS] = "max_pixels",
    [AN_ERR_LIMIT_WIDTH] = "max_width",
    [AN_ERR_LIMIT_HEIGHT] = "max_height",
    [AN_ERR_LIMIT_SCANS] = "max_jpeg_scans",
    [AN_ERR_LIMIT_FRAMES] = "max_frames",
};

static int
set_str(PyObject *d, const char *key, const char *value)
{
    PyObject *v = PyUnicode_DecodeUTF8(value, (Py_ssize_t)strlen(value), "replace");
    if (v == NULL)
        return -1;
    int r = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return r;
}

static int
set_u64(PyObject *d, const char *key, uint64_t value)
{
    PyObject *v = PyLong_FromUnsignedLongLong(value);
    if (v == NULL)
        return -1;
    int r = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return r;
}

static int
fill_context(PyObject *ctx, const an_error *err)
{
    an_status s = err->status;
    if (err->format != AN_FMT_UNKNOWN || s == AN_ERR_UNKNOWN_FORMAT)
        if (set_str(ctx, "format", an_format_name((an_format)err->format)) < 0)
            return -1;
    if (err->detail[0] && set_str(ctx, "detail", err->detail) < 0)
        return -1;
    if ((s >= AN_ERR_LIMIT_BYTES && s <= AN_ERR_LIMIT_SCANS) || s == AN_ERR_LIMIT_FRAMES) {
        if (set_str(ctx, "limit_name", limit_names[s]) < 0 || set_u64(ctx, "actual", err->actual) < 0 ||
            set_u64(ctx, "limit", err->limit) < 0)
            return -1;
    }
    if (s == AN_ERR_HEADER || s == AN_ERR_TRUNCATED || s == AN_ERR_CORRUPT)
        if (set_str(ctx, "stage", "decode") < 0)
            return -1;
    if (s == AN_ERR_INPUT_TYPE || s == AN_ERR_EMPTY)
        if (set_str(ctx, "field", "data") < 0)
            return -1;
    if (s == AN_ERR_OUT_MISMATCH)
        if (set_str(ctx, "field", "out") < 0)
            return -1;
    if (s == AN_ERR_BASE64)
        if (set_str(ctx, "field", "data") < 0 || set_u64(ctx, "offset", err->actual) < 0)
            return -1;
    if (s == AN_ERR_ENCODE)
        if (set_str(ctx, "stage", "encode") < 0)
            return -1;
    if (s == AN_ERR_ARRAY)
        if (set_str(ctx, "field", "arr") < 0)
            return -1;
    return 0;
}

PyObject *
an_raise(an_state *st, const an_error *err)
{
    const an_error_entry *e = an_error_lookup(err->status);
    PyObject *ctx = NULL, *msg = NULL, *args = NULL, *kwargs = NULL, *exc = NULL;

    if ((ctx = PyDict_New()) == NULL || fill_context(ctx, err) < 0)
        goto error;
    msg = PyUnicode_DecodeUTF8(err->detail[0] ? err->detail : e->message,
                               (Py_ssize_t)strlen(err->detail[0] ? err->detail : e->message),
                               "replace");
    if (msg == NULL || (args = PyTuple_Pack(1, msg)) == NULL)
        goto error;
    kwargs = Py_BuildValue("{s:s,s:O}", "code", e->code, "context", ctx);
    if (kwargs == NULL)
        goto error;
    exc = PyObject_Call(st->exc[err->status], args, kwargs);
    if (exc == NULL)
        goto error;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
error:
    Py_XDECREF(ctx);
    Py_XDECREF(msg);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_XDECREF(exc);
    return NULL;
}

PyObject *
an_raise_status(an_state *st, an_status status, const char *fmt, ...)
{
    an_error err;
    memset(&err, 0, sizeof(err));
    err.status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.detail, sizeof(err.detail), fmt, ap);
    va_end(ap);
    return an_raise(st, &err);
}

/* Shared by every domain file of the binding (declared in an_py.h). */
PyObject *
an_raise_ctx(an_state *st, an_status status, PyObject *context, const char *fmt, ...)
{
    const an_error_entry *e = an_error_lookup(status);
    PyObject *msg, *args = NULL, *kwargs = NULL, *exc = NULL;
    va_list ap;
    va_start(ap, fmt);
    msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (msg == NULL)
        return NULL;
    args = PyTuple_Pack(1, msg);
    Py_DECREF(msg);
    if (args == NULL)
        goto error;
    kwargs = Py_BuildValue("{s:s,s:O}", "code", e->code, "context",
                           context != NULL ? context : Py_None);
    if (kwargs == NULL)
        goto error;
    exc = PyObject_Call(st->exc[status], args, kwargs);
    if (exc == NULL)
        goto error;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
error:
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_XDECREF(exc);
    return NULL;
}
