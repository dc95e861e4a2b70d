/*
 * an_py.h - shared declarations of the CPython binding (csrc/py/).
 *
 * The binding is deliberately thin: parse arguments, check them, allocate
 * results with the GIL held, run the core with the GIL released, and turn an
 * an_error into exactly one Python exception.  Per-module state holds the
 * exception classes (looked up by name from the core's error table at import),
 * so there are no mutable C globals and the module can be loaded in several
 * interpreters.
 */
#ifndef AN_PY_H
#define AN_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* One place configures the NumPy C API for every binding file. */
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define NPY_TARGET_VERSION NPY_1_24_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL amulet_native_ARRAY_API
#ifndef AN_PY_MODULE_C
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "../core/an_core.h"

#include <pthread.h>

#include "../core/an_pool.h"

/* Per-object critical sections.  On free-threaded builds (3.13t+) this is
 * CPython's per-object lock; with the GIL it compiles to a plain block, and the
 * GIL is what serialises.  Either way the section is suspended whenever the
 * thread blocks or calls back into Python code that releases the GIL, so it
 * protects C-level invariants only: never rely on it to serialise a user call. */
#if defined(Py_GIL_DISABLED) && PY_VERSION_HEX >= 0x030D0000
#define AN_BEGIN_CRITICAL_SECTION(op) Py_BEGIN_CRITICAL_SECTION(op)
#define AN_END_CRITICAL_SECTION() Py_END_CRITICAL_SECTION()
#else
#define AN_BEGIN_CRITICAL_SECTION(op) {
#define AN_END_CRITICAL_SECTION() }
#endif

typedef struct {
    PyObject *exc[AN_STATUS_COUNT]; /* class raised for each status */
    PyObject *warning;              /* AmuletWarning */
    an_pool *pool;                  /* decode_many workers, created on first use */
    pthread_mutex_t pool_lock;      /* guards pool creation and growth */
    int pool_lock_ready;
} an_state;

an_state *an_get_state(PyObject *module);

/* Raise the exception for err (its class from the table, .code, .context).
 * Always returns NULL. */
PyObject *an_raise(an_state *st, const an_error *err);
/* Raise for status with a formatted message and no extra context. */
PyObject *an_raise_status(an_state *st, an_status status, const char *fmt, ...);

/* batch.c */
PyObject *an_py_decode_many(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *an_py_available_cpus(PyObject *module, PyObject *unused);
void an_batch_free(an_state *st);

/* encode.c */
PyObject *an_py_encode_jpeg(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *an_py_encode_png(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* resize.c */
PyObject *an_py_resize(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* image.c */
PyObject *an_py_probe(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *an_py_decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* Shared decode plumbing (image.c), for every binding that decodes images:
 * export obj as a contiguous byte buffer or raise ValidationError(input.type); */
int an_get_input(an_state *st, PyObject *obj, Py_buffer *view);
/* an int argument within int32 range (OverflowError otherwise); */
int an_as_int(PyObject *o, int *out);
/* parse the 9 decode options (mode, depth16, scale_denom, max_w, max_h,
 * orient, strict, expect_format, limits) starting at args[0]; */
int an_parse_decode_opts(PyObject *const *args, an_decode_opts *opts);
/* allocate the output array for shape (zeroed unless strict), raising
 * MemoryLimitError when NumPy cannot; */
PyArrayObject *an_new_output(an_state *st, const an_shape *shape, int strict);
/* emit the AmuletWarning of a tolerant decode, if err says there was damage. */
int an_warn_decoded(an_state *st, const an_error *err, int stacklevel);
/* Second phase of a decode on an opened decoder: the output array (out=
 * checked against the shape and, unless in is NULL, against overlapping in; or
 * a new array) allocated with the GIL held, an_decoder_run with the GIL
 * released, then the tolerant-decode warning.  Always closes dec.  Returns a
 * new reference, or NULL with an exception set. */
PyObject *an_decode_into_array(an_state *st, an_decoder *dec, PyObject *out, const Py_buffer *in,
                               int strict, int stacklevel);

/* b64.c */
PyObject *an_py_b64decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *an_py_b64encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *an_py_decode_base64(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* incremental.c: registers _core.IncrementalDecoder. */
int an_incremental_exec(PyObject *m, an_state *st);

#endif /* AN_PY_H */
