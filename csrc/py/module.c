/*
 * module.c - amulet_native._core: module definition and initialisation.
 *
 * Multi-phase initialisation (PEP 489): PyInit__core only returns the
 * definition; the exec slot imports NumPy's C API and binds each status of the
 * core's error table to its class in amulet_native.errors.  The module keeps no
 * state outside its per-module state and touches no shared mutable data, so it
 * declares that it does not need the GIL on free-threaded builds.
 */
#define AN_PY_MODULE_C
#include "an_py.h"

an_state *
an_get_state(PyObject *module)
{
    return (an_state *)PyModule_GetState(module);
}

static PyObject *
py_default_limits(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    an_limits l = an_default_limits();
    return Py_BuildValue("(KKIIII)", (unsigned long long)l.max_bytes,
                         (unsigned long long)l.max_pixels, l.max_width, l.max_height,
                         l.max_jpeg_scans, l.max_frames);
}

static PyObject *
py_error_table(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (int s = 1; s < AN_STATUS_COUNT; s++) {
        const an_error_entry *e = an_error_lookup((an_status)s);
        PyObject *row = Py_BuildValue("(sss)", e->code, e->exc_class, e->message);
        if (row == NULL || PyList_Append(list, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(row);
    }
    return list;
}

int
an_add_type(PyObject *m, PyType_Spec *spec, const char *name)
{
    PyObject *t = PyType_FromModuleAndSpec(m, spec, NULL);
    if (t == NULL)
        return -1;
    int r = PyModule_AddObjectRef(m, name, t);
    Py_DECREF(t);
    return r;
}

static PyMethodDef core_methods[] = {
    {"probe", (PyCFunction)(void (*)(void))an_py_probe, METH_FASTCALL,
     "probe(data) -> tuple: read the image header only."},
    {"decode", (PyCFunction)(void (*)(void))an_py_decode, METH_FASTCALL,
     "decode(data, mode, depth16, scale_denom, max_w, max_h, orient, strict, expect, "
     "limits, out) -> ndarray"},
    {"decode_base64", (PyCFunction)(void (*)(void))an_py_decode_base64, METH_FASTCALL,
     "decode_base64(data, mode, depth16, scale_denom, max_w, max_h, orient, strict, expect, "
     "limits, out) -> ndarray"},
    {"b64decode", (PyCFunction)(void (*)(void))an_py_b64decode, METH_FASTCALL,
     "b64decode(data) -> bytes"},
    {"b64encode", (PyCFunction)(void (*)(void))an_py_b64encode, METH_FASTCALL,
     "b64encode(data, urlsafe, pad, prefix) -> str"},
    {"base64_simd", an_py_base64_simd, METH_NOARGS,
     "base64_simd() -> str: the base64 path chosen at run time (avx2, ssse3, scalar)."},
    {"decode_many", (PyCFunction)(void (*)(void))an_py_decode_many, METH_FASTCALL,
     "decode_many(items, mode, depth16, scale_denom, max_w, max_h, orient, strict, expect, "
     "limits, threads, return_errors) -> list"},
    {"available_cpus", an_py_available_cpus, METH_NOARGS,
     "available_cpus() -> int: CPUs allowed by affinity and cgroup quota."},
    {"encode_jpeg", (PyCFunction)(void (*)(void))an_py_encode_jpeg, METH_FASTCALL,
     "encode_jpeg(arr, quality, subsampling, progressive, optimize, bgr, drop_alpha) -> bytes"},
    {"encode_png", (PyCFunction)(void (*)(void))an_py_encode_png, METH_FASTCALL,
     "encode_png(arr, compression, bgr) -> bytes"},
    {"resize", (PyCFunction)(void (*)(void))an_py_resize, METH_FASTCALL,
     "resize(arr, width, height, method) -> ndarray (method 1 = area, 2 = bilinear)"},
    {"default_limits", py_default_limits, METH_NOARGS,
     "default_limits() -> (max_bytes, max_pixels, max_width, max_height, max_jpeg_scans, "
     "max_frames)"},
    {"error_table", py_error_table, METH_NOARGS,
     "error_table() -> [(code, class_name, message)]: the core's error table."},
    {"budget_enter", an_py_budget_enter, METH_O,
     "budget_enter(limit) -> (Budget, previous_handler): install a budget's NumPy handler."},
    {"budget_exit", an_py_budget_exit, METH_O,
     "budget_exit(previous_handler): put back the handler budget_enter replaced."},
    {"current_budget", an_py_current_budget, METH_NOARGS,
     "current_budget() -> Budget | None: the innermost scope of this context."},
    {"memory_precheck", an_py_memory_precheck, METH_O,
     "memory_precheck(nbytes): raise MemoryLimitError if nbytes would not fit now."},
    {"set_process_memory_limit", an_py_set_process_memory_limit, METH_O,
     "set_process_memory_limit(nbytes): 0 = none."},
    {"get_process_memory_limit", an_py_get_process_memory_limit, METH_NOARGS,
     "get_process_memory_limit() -> int (0 = none)"},
    {"read_procmem", an_py_read_procmem, METH_O,
     "read_procmem(root) -> (rss, peak_rss, total, available)"},
    {"read_cgroup", an_py_read_cgroup, METH_O,
     "read_cgroup(root) -> (version, known, limit, usage, path, problem)"},
    {"resize_bytearray", (PyCFunction)(void (*)(void))an_py_resize_bytearray, METH_FASTCALL,
     "resize_bytearray(buf, size): resize in place; new bytes are uninitialised."},
    {"make_key", (PyCFunction)(void (*)(void))an_py_make_key, METH_FASTCALL,
     "make_key(args, kwargs, typed) -> key: the @cached key of a call."},
    /* perceptual fingerprints (image/phash.c) */
    {"perceptual_hash", an_py_perceptual_hash, METH_O,
     "perceptual_hash(arr) -> int: the 64-bit DCT pHash of a uint8/uint16 array."},
    {"image_descriptor", an_py_image_descriptor, METH_O,
     "image_descriptor(arr) -> ndarray: the unit-norm float32 colour/structure descriptor."},
    {NULL, NULL, 0, NULL},
};

static int
core_exec(PyObject *module)
{
    an_state *st = an_get_state(module);
    PyObject *errors = NULL;

    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    errors = PyImport_ImportModule("amulet_native.errors");
    if (errors == NULL)
        return -1;
    for (int s = 0; s < AN_STATUS_COUNT; s++) {
        const an_error_entry *e = an_error_lookup((an_status)s);
        st->exc[s] = PyObject_GetAttrString(errors, e->exc_class);
        if (st->exc[s] == NULL)
            goto error;
    }
    st->warning = PyObject_GetAttrString(errors, "AmuletWarning");
    if (st->warning == NULL)
        goto error;
    Py_DECREF(errors);
    if (pthread_mutex_init(&st->pool_lock, NULL) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "cannot initialise the decoder pool lock");
        return -1;
    }
    st->pool_lock_ready = 1;
    if (an_memory_exec(module, st) < 0)
        return -1;
    if (an_stream_exec(module, st) < 0)
        return -1;
    if (an_cache_exec(module, st) < 0)
        return -1;
    if (an_locks_exec(module, st) < 0 || an_objpool_exec(module, st) < 0)
        return -1;
    if (an_incremental_exec(module, st) < 0)
        return -1;
    if (an_codecs_exec(module, st) < 0)
        return -1;
    if (PyModule_AddStringConstant(module, "LIBJPEG_VERSION", an_libjpeg_version()) < 0 ||
        PyModule_AddStringConstant(module, "LIBPNG_VERSION", an_libpng_version()) < 0)
        return -1;
    if (an_sync_exec(module, st) < 0)
        return -1;
    if (an_arena_exec(module, st) < 0 || an_metrics_exec(module, st) < 0 ||
        an_resilience_exec(module, st) < 0)
        return -1;
    if (an_ratelimit_exec(module, st) < 0)
        return -1;
    return 0;
error:
    Py_DECREF(errors);
    return -1;
}

static int
core_traverse(PyObject *module, visitproc visit, void *arg)
{
    an_state *st = an_get_state(module);
    for (int s = 0; s < AN_STATUS_COUNT; s++)
        Py_VISIT(st->exc[s]);
    Py_VISIT(st->warning);
    Py_VISIT(st->budget_type);
    Py_VISIT(st->lock_hold_type);
    Py_VISIT(st->queue_empty);
    Py_VISIT(st->queue_full);
    Py_VISIT(st->arena_type);
    for (int i = 0; i < 4; i++)
        Py_VISIT(st->metric_types[i]);
    return 0;
}

static int
core_clear(PyObject *module)
{
    an_state *st = an_get_state(module);
    for (int s = 0; s < AN_STATUS_COUNT; s++)
        Py_CLEAR(st->exc[s]);
    Py_CLEAR(st->warning);
    Py_CLEAR(st->budget_type);
    Py_CLEAR(st->lock_hold_type);
    Py_CLEAR(st->queue_empty);
    Py_CLEAR(st->queue_full);
    Py_CLEAR(st->arena_type);
    for (int i = 0; i < 4; i++)
        Py_CLEAR(st->metric_types[i]);
    return 0;
}

static void
core_free(void *module)
{
    an_state *st = an_get_state((PyObject *)module);
    if (st != NULL)
        an_batch_free(st); /* joins the workers after any batch in flight */
    core_clear((PyObject *)module);
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef core_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "amulet_native._core",
    .m_doc = "Native core of amulet_native (see amulet_native for the public API).",
    .m_size = sizeof(an_state),
    .m_methods = core_methods,
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&core_def);
}
