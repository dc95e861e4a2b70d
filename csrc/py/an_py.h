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

#include "../core/sync/an_pool.h"

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
    PyTypeObject *budget_type;      /* memory.c: _core.Budget */
    uint64_t process_limit;         /* memory.c: bytes of RSS, 0 = none (atomic access) */
    PyObject *lock_hold_type;       /* locks.c: _core.LockHold */
    PyObject *queue_empty;          /* queue.Empty (ThreadSafeQueue, sync) */
    PyObject *queue_full;           /* queue.Full */
    /* ops (metrics branch): the shared arena and the metric types */
    PyObject *arena_type;           /* ops/arena.c: _core.Arena */
    PyObject *metric_types[4];      /* ops/metrics.c: counter, gauge, histogram, summary */
} an_state;

an_state *an_get_state(PyObject *module);

/* Raise the exception for err (its class from the table, .code, .context).
 * Always returns NULL. */
PyObject *an_raise(an_state *st, const an_error *err);
/* Raise for status with a formatted message and no extra context. */
PyObject *an_raise_status(an_state *st, an_status status, const char *fmt, ...);
/* module.c: create the heap type of spec for module m and add it as m.name;
 * 0, or -1 with the error set. */
int an_add_type(PyObject *m, PyType_Spec *spec, const char *name);

/* batch.c */
PyObject *an_py_decode_many(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *an_py_available_cpus(PyObject *module, PyObject *unused);
void an_batch_free(an_state *st);

/* encode.c */
PyObject *an_py_encode_jpeg(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *an_py_encode_png(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* codecs.c, encode_webp.c: the WebP/GIF/HEIF entry points (issue 15) */
int an_codecs_exec(PyObject *module, an_state *st);
PyObject *an_py_encode_webp(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

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
PyObject *an_py_base64_simd(PyObject *module, PyObject *unused); /* codecs-fast */

/* memory.c: budgets for NumPy (NEP 49 handler) and the native decoders.
 * Hook a new allocation path in three lines: an_budget_precheck() before
 * allocating an output of known size, an_guard_begin() + opts.alloc =
 * an_guard_allocator() around core calls, an_raise_guarded() for core errors. */
#include "../core/memory/an_budget.h"
/* The budget of the innermost memory_limit() scope of the current context, as
 * a new reference (an_budget_decref it), or NULL: no scope, or an error (then
 * an exception is set; check PyErr_Occurred). */
an_budget *an_current_budget(void);
/* 0 when bytes fit the current scope's budget (and, for requests of at least
 * AN_GUARD_THRESHOLD, the process memory limit); else -1 with MemoryLimitError
 * (context: requested, limit, in_use, limit_kind). Charges nothing. */
int an_budget_precheck(an_state *st, size_t bytes);
/* Sets g up to charge the current budget and guard the process limit; pass
 * an_guard_allocator(g) as the core allocator, an_guard_release(g) after. */
int an_guard_begin(an_state *st, an_guard *g);
/* an_raise(), except that a refusal by the guard behind alloc raises
 * MemoryLimitError with its numbers.  Always returns NULL. */
PyObject *an_raise_guarded(an_state *st, const an_error *err, const an_allocator *alloc);
int an_memory_exec(PyObject *m, an_state *st);
PyObject *an_py_budget_enter(PyObject *module, PyObject *arg);
PyObject *an_py_budget_exit(PyObject *module, PyObject *prev);
PyObject *an_py_current_budget(PyObject *module, PyObject *unused);
PyObject *an_py_memory_precheck(PyObject *module, PyObject *arg);
PyObject *an_py_set_process_memory_limit(PyObject *module, PyObject *arg);
PyObject *an_py_get_process_memory_limit(PyObject *module, PyObject *unused);
PyObject *an_py_read_procmem(PyObject *module, PyObject *arg);
PyObject *an_py_read_cgroup(PyObject *module, PyObject *arg);
/* stream.c: registers the MappedFile type and the ADVISE_* constants. */
int an_stream_exec(PyObject *m, an_state *st);
PyObject *an_py_resize_bytearray(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* cache.c: the Cache and CachedFunction types (and cached.c's make_key). */
int an_cache_exec(PyObject *m, an_state *st);
PyObject *an_py_make_key(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* sync/locks.c: LockManager and LockHold. */
int an_locks_exec(PyObject *m, an_state *st);
/* sync/pool.c: PoolSlots. */
int an_objpool_exec(PyObject *m, an_state *st);
/* ---- helpers shared by every domain file ---- */
/* The context of an_wait_interrupt: the saved thread state of the waiting
 * thread, an optional cancel event (anything with is_set()), and whether a
 * Python exception (a signal handler's, or is_set()'s) stopped the wait. */
typedef struct {
    PyThreadState *ts;
    PyObject *cancel;
    int error;
} an_wait_ctx;
/* wait.c: the core's an_interrupt_fn for waits run with the GIL released. */
int an_wait_interrupt(void *ctx);
/* errors.c: raise st->exc[status](message, code=..., context=context) (context may be
 * NULL; fmt is a PyUnicode_FromFormat format).  Always returns NULL. */
PyObject *an_raise_ctx(an_state *st, an_status status, PyObject *context, const char *fmt, ...);
/* sync.c: AtomicCounter, ThreadSafeDict, ThreadSafeQueue */
int an_sync_exec(PyObject *m, an_state *st);
/* incremental.c: registers _core.IncrementalDecoder. */
int an_incremental_exec(PyObject *m, an_state *st);
/* ops/resilience.c: Breaker, BreakerCall, RetryBudget, RetryCall. */
int an_resilience_exec(PyObject *m, an_state *st);

/* resize.c: an an_view over a uint8/uint16 (H, W[, C]) ndarray read through
 * its strides, or value.array raised and -1. */
struct an_view;
int an_view_from_array(an_state *st, PyObject *obj, struct an_view *v);
/* image/phash.c: perceptual_hash, image_descriptor. */
PyObject *an_py_perceptual_hash(PyObject *module, PyObject *arg);
PyObject *an_py_image_descriptor(PyObject *module, PyObject *arg);
/* ops/arena.c: _core.Arena; ops/metrics.c: the native metric cells. */
int an_arena_exec(PyObject *m, an_state *st);
int an_metrics_exec(PyObject *m, an_state *st);
/* ops/metrics.c: the decoder's counters (read at scrape time by
 * metrics.instrument_library): one decode of fmt that ended with status (or,
 * when code is not NULL, with that error code), its encoded bytes, output
 * pixels and wall time.  A few relaxed atomics; never fails. */
void an_decode_stats_record(int fmt, an_status status, const char *code, uint64_t nbytes,
                            uint64_t pixels, double seconds);
double an_decode_clock(void);
/* ops/ratelimit.c: Decision, GcraStore, GcraLimiter. */
int an_ratelimit_exec(PyObject *m, an_state *st);

#endif /* AN_PY_H */
