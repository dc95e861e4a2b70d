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
 *
 * The key's hash is computed once per call, as functools does: a key holding
 * anything but built-in scalars (whose hashes are cached or trivial) is wrapped
 * in a _HashedKey, which keeps the hash it computed at construction and
 * compares equal to (and hashes as) the key it wraps.  Every later dict
 * operation on it - the lookup, the single-flight table, the store, an
 * eviction - reuses that hash instead of calling the user's __hash__ again.
 */
#include "an_cache_py.h"
#include "structmember.h"

/* ---- _HashedKey: a key with its hash computed once ------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *key;  /* the wrapped key (immutable) */
    Py_hash_t hash; /* hash(key), computed at construction */
} HashedKeyObject;

/* Keys whose hash costs nothing worth saving: built-in scalars (str caches its
 * hash), types (identity hash), None, the keyword marker, frozensets (cached
 * hash) and exact tuples of these. */
static int
cheap_hash(PyObject *o, PyObject *kwd_mark, int depth)
{
    if (PyUnicode_CheckExact(o) || PyLong_CheckExact(o) || PyFloat_CheckExact(o) ||
        PyBytes_CheckExact(o) || PyBool_Check(o) || o == Py_None || o == kwd_mark ||
        PyType_CheckExact(o) || PyFrozenSet_CheckExact(o))
        return 1;
    if (!PyTuple_CheckExact(o) || depth > 3)
        return 0;
    for (Py_ssize_t i = 0, n = PyTuple_GET_SIZE(o); i < n; i++)
        if (!cheap_hash(PyTuple_GET_ITEM(o, i), kwd_mark, depth + 1))
            return 0;
    return 1;
}

/* Wraps key (a new reference, stolen) in a _HashedKey unless its hash is
 * cheap; computes the hash (TypeError for an unhashable key).  Returns a new
 * reference or NULL. */
static PyObject *
hashed(PyTypeObject *type, PyObject *key, PyObject *kwd_mark)
{
    if (key == NULL || cheap_hash(key, kwd_mark, 0))
        return key;
    Py_hash_t h = PyObject_Hash(key);
    if (h == -1) {
        Py_DECREF(key);
        return NULL;
    }
    HashedKeyObject *hk = (HashedKeyObject *)type->tp_alloc(type, 0);
    if (hk == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    hk->key = key;
    hk->hash = h;
    return (PyObject *)hk;
}

static PyObject *
hashedkey_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *key;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || !PyArg_ParseTuple(args, "O:_HashedKey", &key))
        return NULL;
    Py_hash_t h = PyObject_Hash(key);
    if (h == -1)
        return NULL;
    HashedKeyObject *hk = (HashedKeyObject *)type->tp_alloc(type, 0);
    if (hk == NULL)
        return NULL;
    hk->key = Py_NewRef(key);
    hk->hash = h;
    return (PyObject *)hk;
}

static Py_hash_t
hashedkey_hash(HashedKeyObject *self)
{
    return self->hash;
}

/* Equal to what the wrapped key is equal to: another _HashedKey compares its
 * wrapped key (after the hashes), anything else is compared with ours.  a is
 * always a _HashedKey (CPython calls the slot of the operand that has it). */
static PyObject *
hashedkey_richcompare(PyObject *a, PyObject *b, int op)
{
    if (op != Py_EQ && op != Py_NE)
        Py_RETURN_NOTIMPLEMENTED;
    HashedKeyObject *ha = (HashedKeyObject *)a;
    PyObject *kb = b;
    if (Py_IS_TYPE(b, Py_TYPE(a))) {
        HashedKeyObject *hb = (HashedKeyObject *)b;
        if (ha->hash != hb->hash)
            return PyBool_FromLong(op == Py_NE);
        kb = hb->key;
    }
    if (ha->key == kb) /* identity implies equality, as in dict lookups */
        return PyBool_FromLong(op == Py_EQ);
    return PyObject_RichCompare(ha->key, kb, op);
}

static PyObject *
hashedkey_repr(HashedKeyObject *self)
{
    return PyUnicode_FromFormat("_HashedKey(%R)", self->key);
}

static PyObject *
hashedkey_reduce(HashedKeyObject *self, PyObject *unused)
{
    return Py_BuildValue("O(O)", (PyObject *)Py_TYPE(self), self->key);
}

static int
hashedkey_traverse(HashedKeyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->key);
    return 0;
}

static int
hashedkey_clear(HashedKeyObject *self)
{
    Py_CLEAR(self->key);
    return 0;
}

static void
hashedkey_dealloc(HashedKeyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    hashedkey_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMemberDef hashedkey_members[] = {
    {"key", T_OBJECT, offsetof(HashedKeyObject, key), READONLY, "the wrapped key"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef hashedkey_methods[] = {
    {"__reduce__", (PyCFunction)hashedkey_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot hashedkey_slots[] = {
    {Py_tp_new, hashedkey_new},
    {Py_tp_dealloc, hashedkey_dealloc},
    {Py_tp_traverse, hashedkey_traverse},
    {Py_tp_clear, hashedkey_clear},
    {Py_tp_hash, hashedkey_hash},
    {Py_tp_richcompare, hashedkey_richcompare},
    {Py_tp_repr, hashedkey_repr},
    {Py_tp_members, hashedkey_members},
    {Py_tp_methods, hashedkey_methods},
    {Py_tp_doc, "_HashedKey(key): key with its hash computed once (the @cached key of a "
                "call whose arguments hash in Python)."},
    {0, NULL},
};

static PyType_Spec hashedkey_spec = {
    .name = "amulet_native._core._HashedKey",
    .basicsize = sizeof(HashedKeyObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = hashedkey_slots,
};

/* ---- CachedFunction ---------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *func;
    PyObject *cache;
    PyObject *keyfunc;    /* NULL: the default key */
    PyObject *miss;       /* miss(key, args, kwargs) */
    PyObject *error_type; /* instances of it are cached exceptions (.exc); or NULL */
    PyObject *kwd_mark;
    PyTypeObject *hkey_type; /* _HashedKey */
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
    PyObject *hk_type = PyObject_GetAttrString(module, "_HashedKey");
    if (hk_type == NULL) {
        Py_DECREF(mark);
        return NULL;
    }
    Py_ssize_t nkw = args[1] == Py_None ? 0 : PyDict_GET_SIZE(args[1]);
    PyObject **names = NULL, **values = NULL, *key = NULL;
    if (nkw) {
        names = PyMem_Malloc((size_t)nkw * 2 * sizeof(PyObject *));
        if (names == NULL) {
            Py_DECREF(mark);
            Py_DECREF(hk_type);
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
    key = hashed((PyTypeObject *)hk_type, key, mark);
done:
    PyMem_Free(names);
    Py_DECREF(mark);
    Py_DECREF(hk_type);
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
    key = hashed(self->hkey_type, key, self->kwd_mark);
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
    PyObject *hk_type = PyObject_GetAttrString(module, "_HashedKey");
    if (hk_type == NULL) {
        Py_DECREF(mark);
        return NULL;
    }
    CachedObject *self = (CachedObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(mark);
        Py_DECREF(hk_type);
        return NULL;
    }
    self->hkey_type = (PyTypeObject *)hk_type;
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
    Py_VISIT(self->hkey_type);
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
    Py_CLEAR(self->hkey_type);
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
    if (self->miss == NULL || self->hkey_type == NULL)
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

/* Pickled by reference, as functools' lru_cache wrapper: the module-level
 * name (__module__ + __qualname__, set by functools.update_wrapper) that
 * holds this very object.  Pickle refuses when that name is not it. */
static PyObject *
cached_reduce(CachedObject *self, PyObject *unused)
{
    return PyObject_GetAttrString((PyObject *)self, "__qualname__");
}

/* copy.copy and copy.deepcopy return the cached function itself (as for
 * functions and lru_cache wrappers): a copy would split one cache in two. */
static PyObject *
cached_copy(CachedObject *self, PyObject *unused)
{
    return Py_NewRef(self);
}

static PyMethodDef cached_methods[] = {
    {"__reduce__", (PyCFunction)cached_reduce, METH_NOARGS, NULL},
    {"__copy__", (PyCFunction)cached_copy, METH_NOARGS, NULL},
    {"__deepcopy__", (PyCFunction)cached_copy, METH_O, NULL},
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
    if (r < 0 || an_add_type(m, &hashedkey_spec, "_HashedKey") < 0)
        return -1;
    return an_add_type(m, &cached_spec, "CachedFunction");
}
