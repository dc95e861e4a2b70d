/*
 * cached.c (binding) - the hit path of @cached: a callable with vectorcall that
 * builds the key and looks it up in a native Cache.
 *
 * Only hits are served here.  A miss (and every call when the cache is not a
 * native Cache) goes to the Python slow path given at construction,
 * miss(key, args, kwargs), which does the single-flight dance (one computation
 * per key, the other callers wait on a per-key event with the GIL released).
 * Keys follow functools: positional args, then a marker and the keyword
 * (name, value) pairs, sorted by name; with typed, the argument types follow;
 * a lone argument that is not a tuple is its own key.
 */
#include "an_cache_py.h"
#include "structmember.h"

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *func;
    PyObject *cache;
    PyObject *keyfunc;    /* NULL: the default key */
    PyObject *miss;       /* miss(key, args, kwargs) */
    PyObject *error_type; /* instances of it are cached exceptions (.exc); or NULL */
    PyObject *kwd_mark;
    int native;           /* cache is a native Cache: look up here */
    int typed;
    long long hits, misses; /* atomic */
    PyObject *dict;
    PyObject *weakreflist;
} CachedObject;

/* Sorts the keyword indices by name (insertion sort: a handful of names). */
static int
sort_kw(PyObject *const *names, Py_ssize_t n, Py_ssize_t *order)
{
    for (Py_ssize_t i = 0; i < n; i++)
        order[i] = i;
    for (Py_ssize_t i = 1; i < n; i++) {
        Py_ssize_t cur = order[i], j = i;
        while (j > 0) {
            int c = PyUnicode_Compare(names[order[j - 1]], names[cur]);
            if (c == -1 && PyErr_Occurred())
                return -1;
            if (c <= 0)
                break;
            order[j] = order[j - 1];
            j--;
        }
        order[j] = cur;
    }
    return 0;
}

/* The key of a call: new reference or NULL with an exception. */
static PyObject *
make_key(PyObject *kwd_mark, PyObject *const *args, Py_ssize_t nargs, PyObject *const *kwvalues,
         PyObject *const *kwnames, Py_ssize_t nkw, int typed)
{
    /* A lone argument is its own key (so f(1) and f(1.0) share an entry, as
     * 1 == 1.0), except a tuple, which would collide with a multi-argument key. */
    if (nkw == 0 && nargs == 1 && !typed && !PyTuple_Check(args[0]))
        return Py_NewRef(args[0]);
    Py_ssize_t size = nargs + (nkw ? 1 + 2 * nkw : 0) + (typed ? nargs + nkw : 0);
    Py_ssize_t order_buf[16], *order = order_buf;
    if (nkw > 16 && (order = PyMem_Malloc((size_t)nkw * sizeof(Py_ssize_t))) == NULL)
        return PyErr_NoMemory();
    PyObject *key = NULL;
    if (nkw && sort_kw(kwnames, nkw, order) < 0)
        goto done;
    key = PyTuple_New(size);
    if (key == NULL)
        goto done;
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(key, k++, Py_NewRef(args[i]));
    if (nkw) {
        PyTuple_SET_ITEM(key, k++, Py_NewRef(kwd_mark));
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyTuple_SET_ITEM(key, k++, Py_NewRef(kwnames[order[i]]));
            PyTuple_SET_ITEM(key, k++, Py_NewRef(kwvalues[order[i]]));
        }
    }
    if (typed) {
        for (Py_ssize_t i = 0; i < nargs; i++)
            PyTuple_SET_ITEM(key, k++, Py_NewRef((PyObject *)Py_TYPE(args[i])));
        for (Py_ssize_t i = 0; i < nkw; i++)
            PyTuple_SET_ITEM(key, k++, Py_NewRef((PyObject *)Py_TYPE(kwvalues[order[i]])));
    }
done:
    if (order != order_buf)
        PyMem_Free(order);
    return key;
}

/* make_key(args: tuple, kwargs: dict | None, typed: bool) -> key: the same key
 * as the native hit path, for the Python (async and generic) paths. */
PyObject *
an_py_make_key(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[0]) || (args[1] != Py_None && !PyDict_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "make_key(args: tuple, kwargs: dict | None, typed)");
        return NULL;
    }
    int typed = PyObject_IsTrue(args[2]);
    if (typed < 0)
        return NULL;
    PyObject *mark = PyObject_GetAttrString(module, "_KWD_MARK");
    if (mark == NULL)
        return NULL;
    Py_ssize_t nkw = args[1] == Py_None ? 0 : PyDict_GET_SIZE(args[1]);
    PyObject **names = NULL, **values = NULL, *key = NULL;
    if (nkw) {
        names = PyMem_Malloc((size_t)nkw * 2 * sizeof(PyObject *));
        if (names == NULL) {
            Py_DECREF(mark);
            return PyErr_NoMemory();
        }
        values = names + nkw;
        Py_ssize_t pos = 0, i = 0;
        PyObject *k, *v;
        while (i < nkw && PyDict_Next(args[1], &pos, &k, &v)) {
            if (!PyUnicode_Check(k)) {
                PyErr_SetString(PyExc_TypeError, "keywords must be strings");
                goto done;
            }
            names[i] = k;
            values[i] = v;
            i++;
        }
        nkw = i;
    }
    key = make_key(mark, &PyTuple_GET_ITEM(args[0], 0), PyTuple_GET_SIZE(args[0]), values, names,
                   nkw, typed);
done:
    PyMem_Free(names);
    Py_DECREF(mark);
    return key;
}

/* Raises the exception kept in a cached-exception wrapper. */
static PyObject *
raise_cached(PyObject *wrapper)
{
    PyObject *exc = PyObject_GetAttrString(wrapper, "exc");
    if (exc == NULL)
        return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *
cached_vectorcall(CachedObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *key, *value, *targs = NULL, *kwargs = NULL;

    if (self->keyfunc != NULL)
        key = PyObject_Vectorcall(self->keyfunc, args, (size_t)nargs, kwnames);
    else
        key = make_key(self->kwd_mark, args, nargs, args + nargs,
                       nkw ? &PyTuple_GET_ITEM(kwnames, 0) : NULL, nkw, self->typed);
    if (key == NULL)
        return NULL;
    if (self->native) {
        value = an_cache_lookup(self->cache, key);
        if (value != NULL) {
            __atomic_fetch_add(&self->hits, 1, __ATOMIC_RELAXED);
            Py_DECREF(key);
            if (self->error_type != NULL && Py_IS_TYPE(value, (PyTypeObject *)self->error_type)) {
                raise_cached(value);
                Py_DECREF(value);
                return NULL;
            }
            return value;
        }
        if (PyErr_Occurred()) {
            Py_DECREF(key);
            return NULL;
        }
        __atomic_fetch_add(&self->misses, 1, __ATOMIC_RELAXED);
    }
    /* the slow path, in Python */
    value = NULL;
    targs = PyTuple_New(nargs);
    if (targs == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(targs, i, Py_NewRef(args[i]));
    if (nkw) {
        kwargs = PyDict_New();
        if (kwargs == NULL)
            goto done;
        for (Py_ssize_t i = 0; i < nkw; i++)
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
                goto done;
    }
    value = PyObject_CallFunctionObjArgs(self->miss, key, targs, kwargs ? kwargs : Py_None, NULL);
done:
    Py_DECREF(key);
    Py_XDECREF(targs);
    Py_XDECREF(kwargs);
    return value;
}

static PyObject *cached_vectorcall_checked(CachedObject *self, PyObject *const *args,
                                           size_t nargsf, PyObject *kwnames);

static PyObject *
cached_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *func, *cache, *keyfunc, *miss, *error_type;
    int native, typed;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "CachedFunction takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOppOOO:CachedFunction", &func, &cache, &native, &typed,
                          &keyfunc, &miss, &error_type))
        return NULL;
    if (!PyCallable_Check(func) || !PyCallable_Check(miss) ||
        (keyfunc != Py_None && !PyCallable_Check(keyfunc)) ||
        (error_type != Py_None && !PyType_Check(error_type))) {
        PyErr_SetString(PyExc_TypeError, "CachedFunction: func, miss (and key) must be callable");
        return NULL;
    }
    if (native && !an_cache_check(cache)) {
        PyErr_SetString(PyExc_TypeError, "CachedFunction: native=True needs a native Cache");
        return NULL;
    }
    PyObject *module = PyType_GetModule(type);
    if (module == NULL)
        return NULL;
    PyObject *mark = PyObject_GetAttrString(module, "_KWD_MARK");
    if (mark == NULL)
        return NULL;
    CachedObject *self = (CachedObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(mark);
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)cached_vectorcall_checked;
    self->func = Py_NewRef(func);
    self->cache = Py_NewRef(cache);
    self->keyfunc = keyfunc == Py_None ? NULL : Py_NewRef(keyfunc);
    self->miss = Py_NewRef(miss);
    self->error_type = error_type == Py_None ? NULL : Py_NewRef(error_type);
    self->kwd_mark = mark;
    self->native = native;
    self->typed = typed;
    return (PyObject *)self;
}

static int
cached_traverse(CachedObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->func);
    Py_VISIT(self->cache);
    Py_VISIT(self->keyfunc);
    Py_VISIT(self->miss);
    Py_VISIT(self->error_type);
    Py_VISIT(self->kwd_mark);
    Py_VISIT(self->dict);
    return 0;
}

static int
cached_clear(CachedObject *self)
{
    Py_CLEAR(self->func);
    Py_CLEAR(self->cache);
    Py_CLEAR(self->keyfunc);
    Py_CLEAR(self->miss);
    Py_CLEAR(self->error_type);
    Py_CLEAR(self->kwd_mark);
    Py_CLEAR(self->dict);
    self->native = 0;
    return 0;
}

static void
cached_dealloc(CachedObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    cached_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
cached_call_cleared(void)
{
    PyErr_SetString(PyExc_RuntimeError, "this cached function was cleared by the garbage collector");
    return NULL;
}

static PyObject *
cached_vectorcall_checked(CachedObject *self, PyObject *const *args, size_t nargsf,
                          PyObject *kwnames)
{
    if (self->miss == NULL)
        return cached_call_cleared();
    return cached_vectorcall(self, args, nargsf, kwnames);
}

static PyObject *
cached_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyObject *
cached_record(CachedObject *self, PyObject *hit)
{
    int h = PyObject_IsTrue(hit);
    if (h < 0)
        return NULL;
    __atomic_fetch_add(h ? &self->hits : &self->misses, 1, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

static PyObject *
cached_reset(CachedObject *self, PyObject *unused)
{
    __atomic_store_n(&self->hits, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&self->misses, 0, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

static PyObject *
cached_get_hits(CachedObject *self, void *c)
{
    return PyLong_FromLongLong(__atomic_load_n(&self->hits, __ATOMIC_RELAXED));
}

static PyObject *
cached_get_misses(CachedObject *self, void *c)
{
    return PyLong_FromLongLong(__atomic_load_n(&self->misses, __ATOMIC_RELAXED));
}

static PyObject *
cached_get_cache(CachedObject *self, void *c)
{
    return Py_NewRef(self->cache ? self->cache : Py_None);
}

static PyObject *
cached_get_func(CachedObject *self, void *c)
{
    return Py_NewRef(self->func ? self->func : Py_None);
}

static PyObject *
cached_repr(CachedObject *self)
{
    return PyUnicode_FromFormat("<cached %R>", self->func ? self->func : Py_None);
}

static PyGetSetDef cached_getset[] = {
    {"hits", (getter)cached_get_hits, NULL, "calls answered from the cache", NULL},
    {"misses", (getter)cached_get_misses, NULL, "calls that missed the cache", NULL},
    {"cache", (getter)cached_get_cache, NULL, "the cache object", NULL},
    {"__func__", (getter)cached_get_func, NULL, "the wrapped function", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef cached_methods[] = {
    {"_record", (PyCFunction)cached_record, METH_O, "_record(hit): count a hit or a miss"},
    {"_reset", (PyCFunction)cached_reset, METH_NOARGS, "_reset(): zero the counters"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef cached_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(CachedObject, vectorcall), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(CachedObject, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(CachedObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot cached_slots[] = {
    {Py_tp_new, cached_new},
    {Py_tp_dealloc, cached_dealloc},
    {Py_tp_traverse, cached_traverse},
    {Py_tp_clear, cached_clear},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, cached_descr_get},
    {Py_tp_repr, cached_repr},
    {Py_tp_getset, cached_getset},
    {Py_tp_methods, cached_methods},
    {Py_tp_members, cached_members},
    {Py_tp_doc, "A function wrapped by amulet_native.cached (native hit path)."},
    {0, NULL},
};

static PyType_Spec cached_spec = {
    .name = "amulet_native._core.CachedFunction",
    .basicsize = sizeof(CachedObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_METHOD_DESCRIPTOR | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = cached_slots,
};

int
an_cached_exec(PyObject *m, an_state *st)
{
    (void)st;
    PyObject *mark = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (mark == NULL)
        return -1;
    int r = PyModule_AddObjectRef(m, "_KWD_MARK", mark);
    Py_DECREF(mark);
    if (r < 0)
        return -1;
    PyObject *type = PyType_FromModuleAndSpec(m, &cached_spec, NULL);
    if (type == NULL)
        return -1;
    r = PyModule_AddObjectRef(m, "CachedFunction", type);
    Py_DECREF(type);
    return r;
}
