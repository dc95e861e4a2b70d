/*
 * memory.c (binding) - memory budgets for NumPy (NEP 49) and the decoders,
 * the process memory limit, and the /proc + cgroup readings.
 *
 * A memory_limit() scope is one NumPy memory handler.  NumPy keeps the current
 * handler in a context variable (PyDataMem_SetHandler), so each thread and each
 * asyncio task already has its own, and asyncio.to_thread carries it along;
 * entering a scope installs a fresh "mem_handler" capsule whose ctx is the
 * scope's an_budget, leaving the scope puts the previous handler back.
 * Outside every scope NumPy's default handler is in place: no cost at all.
 *
 * NumPy stores the handler on each array it allocates and frees the data
 * through it, so an array that outlives its scope is still credited to the
 * right budget when it dies; the capsule holds a budget reference, and every
 * array holds the capsule.  Each block carries a 16-byte size header: realloc
 * gets no old size from NumPy and free's size argument is NumPy's idea of the
 * size, so the header is what makes every credit exact.
 *
 * The same NumPy context variable is the "current budget" for the native
 * decoders (an_current_budget): the output array is checked against it before
 * allocating (an_budget_precheck) and the core's working memory is charged
 * through an an_guard allocator (an_guard_begin), from worker threads too.
 */
#include <string.h>

#include "../an_py.h"
#include "../../core/memory/an_budget.h"

#define HANDLER_NAME "amulet_native.budget"
#define HDR 16 /* keeps malloc's 16-byte alignment */

/* ---- the NEP 49 handler -------------------------------------------------- */

/*
 * A small-block cache per scope, as NumPy's default handler has one: without
 * it every tiny temporary (a + 1 on a 16-element array) is a malloc and a
 * free, and an allocation-heavy loop of tiny arrays ran ~6-10% slower inside
 * a scope than outside.  Blocks under CACHE_LIMIT bytes are rounded up to a
 * 16-byte class, and up to CACHE_DEPTH freed blocks per class are kept for
 * reuse.  The accounting stays exact: a cached block is credited when it is
 * freed and charged again when it is reused, so usage.current still returns
 * to 0.  The cache relies on the GIL, like NumPy's (its default handler
 * asserts the GIL is held: NumPy allocates and frees array data only with
 * it); the free-threaded build goes straight to malloc.  The cache belongs to
 * the handler, which every array it allocated holds, so it is emptied when the
 * last of them is gone.
 */
#define CACHE_LIMIT 1024
#define CACHE_CLASSES (CACHE_LIMIT / 16)
#define CACHE_DEPTH 8

typedef struct {
    an_budget *budget; /* a reference */
#ifndef Py_GIL_DISABLED
    unsigned char count[CACHE_CLASSES];
    unsigned char *blocks[CACHE_CLASSES][CACHE_DEPTH]; /* header pointers */
#endif
} h_ctx;

/* Bytes actually allocated for a block charged `size` (header excluded): small
 * sizes are rounded up to their class so that any block of a class fits any
 * request of that class. */
static size_t
h_capacity(size_t size)
{
    if (size >= CACHE_LIMIT)
        return size;
    return size == 0 ? 16 : (size + 15) & ~(size_t)15;
}

/* The cache class of a size under CACHE_LIMIT: blocks of 16, 32, ... 1024 bytes. */
static size_t
h_class(size_t size)
{
    return h_capacity(size) / 16 - 1;
}

/* A cached block for size, or NULL. */
static unsigned char *
cache_take(h_ctx *c, size_t size)
{
#ifndef Py_GIL_DISABLED
    if (size < CACHE_LIMIT) {
        size_t k = h_class(size);
        if (c->count[k] > 0)
            return c->blocks[k][--c->count[k]];
    }
#else
    (void)c;
    (void)size;
#endif
    return NULL;
}

/* Keeps a freed block of charged size for reuse; 0 when the cache is full. */
static int
cache_put(h_ctx *c, unsigned char *p, size_t size)
{
#ifndef Py_GIL_DISABLED
    if (size < CACHE_LIMIT) {
        size_t k = h_class(size);
        if (c->count[k] < CACHE_DEPTH) {
            c->blocks[k][c->count[k]++] = p;
            return 1;
        }
    }
#else
    (void)c;
    (void)p;
    (void)size;
#endif
    return 0;
}

static void
cache_clear(h_ctx *c)
{
#ifndef Py_GIL_DISABLED
    for (size_t k = 0; k < CACHE_CLASSES; k++)
        while (c->count[k] > 0)
            free(c->blocks[k][--c->count[k]]);
#else
    (void)c;
#endif
}

static void *
h_malloc(void *ctx, size_t size)
{
    h_ctx *c = ctx;
    if (size > SIZE_MAX - HDR - 15 || an_budget_charge(c->budget, size, NULL) != AN_OK)
        return NULL;
    unsigned char *p = cache_take(c, size);
    if (p == NULL && (p = malloc(h_capacity(size) + HDR)) == NULL) {
        an_budget_credit(c->budget, size);
        return NULL;
    }
    memcpy(p, &size, sizeof(size));
    return p + HDR;
}

static void *
h_calloc(void *ctx, size_t nelem, size_t elsize)
{
    h_ctx *c = ctx;
    size_t size;
    if (!an_mul_size(nelem, elsize, &size) || size > SIZE_MAX - HDR - 15 ||
        an_budget_charge(c->budget, size, NULL) != AN_OK)
        return NULL;
    unsigned char *p = cache_take(c, size);
    if (p != NULL)
        memset(p + HDR, 0, size);
    else if ((p = calloc(1, h_capacity(size) + HDR)) == NULL) {
        an_budget_credit(c->budget, size);
        return NULL;
    }
    memcpy(p, &size, sizeof(size));
    return p + HDR;
}

static void
h_free(void *ctx, void *ptr, size_t size_hint)
{
    h_ctx *c = ctx;
    (void)size_hint; /* the header knows what was charged */
    if (ptr == NULL)
        return;
    size_t size;
    unsigned char *p = (unsigned char *)ptr - HDR;
    memcpy(&size, p, sizeof(size));
    if (!cache_put(c, p, size))
        free(p);
    an_budget_credit(c->budget, size);
}

static void *
h_realloc(void *ctx, void *ptr, size_t new_size)
{
    h_ctx *c = ctx;
    if (ptr == NULL)
        return h_malloc(ctx, new_size);
    if (new_size > SIZE_MAX - HDR - 15)
        return NULL;
    size_t old;
    unsigned char *p = (unsigned char *)ptr - HDR;
    memcpy(&old, p, sizeof(old));
    /* Growth is charged before it happens; shrinking is credited after. */
    if (new_size > old && an_budget_charge(c->budget, new_size - old, NULL) != AN_OK)
        return NULL;
    unsigned char *q = realloc(p, h_capacity(new_size) + HDR);
    if (q == NULL) {
        if (new_size > old)
            an_budget_credit(c->budget, new_size - old);
        return NULL; /* the old block is untouched and still charged */
    }
    memcpy(q, &new_size, sizeof(new_size));
    if (new_size < old)
        an_budget_credit(c->budget, old - new_size);
    return q + HDR;
}

static void
capsule_destroy(PyObject *cap)
{
    PyDataMem_Handler *h = PyCapsule_GetPointer(cap, "mem_handler");
    if (h == NULL) {
        PyErr_Clear();
        return;
    }
    h_ctx *c = h->allocator.ctx;
    cache_clear(c);
    an_budget_decref(c->budget);
    PyMem_RawFree(c);
    PyMem_RawFree(h);
}

/* A new handler capsule over b (takes its own reference to b). */
static PyObject *
new_handler(an_budget *b)
{
    PyDataMem_Handler *h = PyMem_RawCalloc(1, sizeof(*h));
    h_ctx *c = PyMem_RawCalloc(1, sizeof(*c));
    if (h == NULL || c == NULL) {
        PyMem_RawFree(h);
        PyMem_RawFree(c);
        return PyErr_NoMemory();
    }
    snprintf(h->name, sizeof(h->name), "%s", HANDLER_NAME);
    h->version = 1;
    c->budget = b;
    h->allocator.ctx = c;
    h->allocator.malloc = h_malloc;
    h->allocator.calloc = h_calloc;
    h->allocator.realloc = h_realloc;
    h->allocator.free = h_free;
    an_budget_incref(b);
    PyObject *cap = PyCapsule_New(h, "mem_handler", capsule_destroy);
    if (cap == NULL) {
        an_budget_decref(b);
        PyMem_RawFree(c);
        PyMem_RawFree(h);
    }
    return cap;
}

/* The budget of a handler capsule if it is one of ours (borrowed), else NULL. */
static an_budget *
handler_budget(PyObject *cap)
{
    if (cap == NULL || !PyCapsule_IsValid(cap, "mem_handler"))
        return NULL;
    PyDataMem_Handler *h = PyCapsule_GetPointer(cap, "mem_handler");
    return (h != NULL && h->allocator.malloc == h_malloc) ? ((h_ctx *)h->allocator.ctx)->budget
                                                          : NULL;
}

an_budget *
an_current_budget(void)
{
    PyObject *cap = PyDataMem_GetHandler();
    if (cap == NULL)
        return NULL;
    an_budget *b = handler_budget(cap);
    if (b != NULL)
        an_budget_incref(b);
    Py_DECREF(cap);
    return b;
}

/* ---- raising ------------------------------------------------------------- */

static int
raise_refusal(an_state *st, an_status status, const an_refusal *r, const char *what)
{
    PyObject *ctx = NULL, *msg = NULL, *args = NULL, *kwargs = NULL, *exc = NULL;
    const char *kind = status == AN_ERR_PROCESS_MEMORY_LIMIT ? "process" : "budget";
    ctx = Py_BuildValue("{s:K,s:K,s:K,s:s}", "requested", (unsigned long long)r->requested,
                        "limit", (unsigned long long)r->limit, "in_use",
                        (unsigned long long)r->in_use, "limit_kind", kind);
    if (ctx == NULL)
        goto done;
    if (status == AN_ERR_PROCESS_MEMORY_LIMIT)
        msg = PyUnicode_FromFormat("%s: %llu bytes would pass the process memory limit of %llu "
                                   "bytes (resident: %llu)",
                                   what, (unsigned long long)r->requested,
                                   (unsigned long long)r->limit, (unsigned long long)r->in_use);
    else
        msg = PyUnicode_FromFormat("%s: %llu bytes would pass the memory budget of %llu bytes "
                                   "(in use: %llu)",
                                   what, (unsigned long long)r->requested,
                                   (unsigned long long)r->limit, (unsigned long long)r->in_use);
    if (msg == NULL || (args = PyTuple_Pack(1, msg)) == NULL)
        goto done;
    kwargs = Py_BuildValue("{s:s,s:O}", "code", an_error_lookup(status)->code, "context", ctx);
    if (kwargs == NULL)
        goto done;
    exc = PyObject_Call(st->exc[status], args, kwargs);
    if (exc != NULL)
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
done:
    Py_XDECREF(ctx);
    Py_XDECREF(msg);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_XDECREF(exc);
    return -1;
}

static uint64_t
process_limit(an_state *st)
{
    return __atomic_load_n(&st->process_limit, __ATOMIC_RELAXED);
}

int
an_budget_precheck(an_state *st, size_t bytes)
{
    an_refusal r;
    uint64_t plimit = process_limit(st);
    if (plimit != 0 && !an_process_fits(plimit, "", bytes, &r))
        return raise_refusal(st, AN_ERR_PROCESS_MEMORY_LIMIT, &r, "cannot allocate the output");
    an_budget *b = an_current_budget();
    if (b == NULL)
        return PyErr_Occurred() ? -1 : 0;
    an_status s = an_budget_check(b, bytes, &r);
    an_budget_decref(b);
    if (s != AN_OK)
        return raise_refusal(st, AN_ERR_MEMORY_LIMIT, &r, "cannot allocate the output");
    return 0;
}

int
an_guard_begin(an_state *st, an_guard *g)
{
    an_budget *b = an_current_budget();
    if (b == NULL && PyErr_Occurred())
        return -1;
    an_guard_init(g, b, process_limit(st));
    if (b != NULL)
        an_budget_decref(b); /* the guard holds its own reference */
    return 0;
}

PyObject *
an_raise_guarded(an_state *st, const an_error *err, const an_allocator *alloc)
{
    an_guard *g = an_guard_of(alloc);
    int refused = g != NULL ? __atomic_load_n(&g->refused_status, __ATOMIC_ACQUIRE) : AN_OK;
    if (refused != AN_OK &&
        (err->status == AN_ERR_MEMORY_LIMIT || err->status == AN_ERR_PROCESS_MEMORY_LIMIT)) {
        an_refusal r = {__atomic_load_n(&g->refused_requested, __ATOMIC_RELAXED),
                        __atomic_load_n(&g->refused_limit, __ATOMIC_RELAXED),
                        __atomic_load_n(&g->refused_in_use, __ATOMIC_RELAXED), 0};
        raise_refusal(st, (an_status)refused, &r,
                      err->detail[0] ? err->detail : "cannot allocate decoder memory");
        return NULL;
    }
    return an_raise(st, err);
}

/* ---- the Budget type ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    an_budget *budget;
} budget_object;

static PyObject *
budget_wrap(an_state *st, an_budget *b)
{
    budget_object *o = PyObject_New(budget_object, st->budget_type);
    if (o == NULL)
        return NULL;
    an_budget_incref(b);
    o->budget = b;
    return (PyObject *)o;
}

static void
budget_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    an_budget_decref(((budget_object *)self)->budget);
    PyObject_Free(self);
    Py_DECREF(tp);
}

static PyObject *
budget_get_in_use(PyObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(an_budget_in_use(((budget_object *)self)->budget));
}

static PyObject *
budget_get_peak(PyObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(an_budget_peak(((budget_object *)self)->budget));
}

static PyObject *
budget_get_limit(PyObject *self, void *closure)
{
    (void)closure;
    uint64_t l = an_budget_limit(((budget_object *)self)->budget);
    return l == 0 ? Py_NewRef(Py_None) : PyLong_FromUnsignedLongLong(l);
}

static PyObject *
budget_get_refusals(PyObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(an_budget_refusals(((budget_object *)self)->budget, NULL));
}

static PyObject *
budget_get_last_refusal(PyObject *self, void *closure)
{
    (void)closure;
    an_refusal r;
    if (an_budget_refusals(((budget_object *)self)->budget, &r) == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(KKKi)", (unsigned long long)r.requested, (unsigned long long)r.limit,
                         (unsigned long long)r.in_use, r.depth);
}

static PyObject *
budget_get_depth(PyObject *self, void *closure)
{
    (void)closure;
    long depth = 0;
    for (const an_budget *p = an_budget_parent(((budget_object *)self)->budget); p != NULL;
         p = an_budget_parent(p))
        depth++;
    return PyLong_FromLong(depth);
}

static PyGetSetDef budget_getset[] = {
    {"in_use", budget_get_in_use, NULL, "bytes charged now (nested scopes included)", NULL},
    {"peak", budget_get_peak, NULL, "largest in_use seen", NULL},
    {"limit", budget_get_limit, NULL, "this budget's own limit in bytes, or None", NULL},
    {"refusals", budget_get_refusals, NULL, "number of refused allocations", NULL},
    {"last_refusal", budget_get_last_refusal, NULL,
     "(requested, limit, in_use, depth) of the last refusal, or None", NULL},
    {"depth", budget_get_depth, NULL, "number of enclosing budgets", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot budget_slots[] = {
    {Py_tp_dealloc, budget_dealloc},
    {Py_tp_getset, budget_getset},
    {Py_tp_doc, "A memory budget (see amulet_native.memory_limit)."},
    {0, NULL},
};

static PyType_Spec budget_spec = {
    .name = "amulet_native._core.Budget",
    .basicsize = sizeof(budget_object),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = budget_slots,
};

/* ---- module functions ----------------------------------------------------- */

/* A non-negative int (OverflowError for negatives and > 2^64-1). */
static int
as_u64_arg(PyObject *o, const char *what, uint64_t *out)
{
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, got %.100s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

/* budget_enter(limit) -> (Budget, previous_handler): limit 0 = unlimited. */
PyObject *
an_py_budget_enter(PyObject *module, PyObject *arg)
{
    an_state *st = an_get_state(module);
    uint64_t limit;
    an_budget *b = NULL;
    PyObject *prev = NULL, *cap = NULL, *old = NULL, *wrapper = NULL, *res = NULL;

    if (as_u64_arg(arg, "limit", &limit) < 0)
        return NULL;
    if ((prev = PyDataMem_GetHandler()) == NULL)
        return NULL;
    an_status s = an_budget_new(&b, limit, handler_budget(prev), NULL);
    if (s != AN_OK) {
        PyErr_NoMemory();
        goto done;
    }
    if ((cap = new_handler(b)) == NULL || (wrapper = budget_wrap(st, b)) == NULL)
        goto done;
    if ((old = PyDataMem_SetHandler(cap)) == NULL)
        goto done;
    res = PyTuple_Pack(2, wrapper, old);
    if (res == NULL) {
        /* put the previous handler back: the scope was never entered */
        PyObject *mine = PyDataMem_SetHandler(old);
        Py_XDECREF(mine);
    }
done:
    if (b != NULL)
        an_budget_decref(b);
    Py_XDECREF(prev);
    Py_XDECREF(cap);
    Py_XDECREF(old);
    Py_XDECREF(wrapper);
    return res;
}

/* budget_exit(previous_handler): restores the handler budget_enter replaced. */
PyObject *
an_py_budget_exit(PyObject *module, PyObject *prev)
{
    (void)module;
    if (!PyCapsule_IsValid(prev, "mem_handler")) {
        PyErr_SetString(PyExc_TypeError, "budget_exit() needs the handler budget_enter returned");
        return NULL;
    }
    PyObject *old = PyDataMem_SetHandler(prev);
    if (old == NULL)
        return NULL;
    Py_DECREF(old);
    Py_RETURN_NONE;
}

/* current_budget() -> Budget | None */
PyObject *
an_py_current_budget(PyObject *module, PyObject *unused)
{
    (void)unused;
    an_budget *b = an_current_budget();
    if (b == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *res = budget_wrap(an_get_state(module), b);
    an_budget_decref(b);
    return res;
}

/* memory_precheck(nbytes): raise MemoryLimitError now if nbytes would not fit. */
PyObject *
an_py_memory_precheck(PyObject *module, PyObject *arg)
{
    uint64_t n;
    if (as_u64_arg(arg, "nbytes", &n) < 0)
        return NULL;
    if (an_budget_precheck(an_get_state(module), (size_t)n) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* set_process_memory_limit(nbytes): 0 = none. */
PyObject *
an_py_set_process_memory_limit(PyObject *module, PyObject *arg)
{
    uint64_t n;
    if (as_u64_arg(arg, "limit", &n) < 0)
        return NULL;
    __atomic_store_n(&an_get_state(module)->process_limit, n, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

PyObject *
an_py_get_process_memory_limit(PyObject *module, PyObject *unused)
{
    (void)unused;
    return PyLong_FromUnsignedLongLong(process_limit(an_get_state(module)));
}

static int
root_arg(PyObject *arg, PyObject **bytes)
{
    if (!PyUnicode_FSConverter(arg, bytes))
        return -1;
    if (PyBytes_GET_SIZE(*bytes) > 400) {
        Py_CLEAR(*bytes);
        PyErr_SetString(PyExc_ValueError, "root path too long");
        return -1;
    }
    return 0;
}

/* read_procmem(root) -> (rss, peak_rss, total, available) */
PyObject *
an_py_read_procmem(PyObject *module, PyObject *arg)
{
    PyObject *root = NULL;
    an_procmem m;
    an_error err;
    an_status s;
    if (root_arg(arg, &root) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    s = an_read_procmem(PyBytes_AS_STRING(root), &m, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(root);
    if (s != AN_OK)
        return an_raise(an_get_state(module), &err);
    return Py_BuildValue("(KKKK)", (unsigned long long)m.rss, (unsigned long long)m.peak_rss,
                         (unsigned long long)m.total, (unsigned long long)m.available);
}

/* read_cgroup(root) -> (version, known, limit | None, usage, path, problem,
 *                       inactive_file | None) */
PyObject *
an_py_read_cgroup(PyObject *module, PyObject *arg)
{
    (void)module;
    PyObject *root = NULL, *limit;
    an_cgroup *cg = PyMem_RawMalloc(sizeof(*cg));
    if (cg == NULL)
        return PyErr_NoMemory();
    if (root_arg(arg, &root) < 0) {
        PyMem_RawFree(cg);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    an_read_cgroup(PyBytes_AS_STRING(root), cg);
    Py_END_ALLOW_THREADS
    Py_DECREF(root);
    limit = (cg->known && cg->limit != UINT64_MAX)
                ? PyLong_FromUnsignedLongLong(cg->limit)
                : Py_NewRef(Py_None);
    PyObject *inactive = (cg->known && cg->have_inactive)
                             ? PyLong_FromUnsignedLongLong(cg->inactive_file)
                             : Py_NewRef(Py_None);
    PyObject *res = NULL;
    if (limit == NULL || inactive == NULL) {
        Py_XDECREF(limit);
        Py_XDECREF(inactive);
    } else
        res = Py_BuildValue("(iNNKssN)", cg->version, PyBool_FromLong(cg->known), limit,
                            (unsigned long long)cg->usage, cg->path, cg->problem, inactive);
    PyMem_RawFree(cg);
    return res;
}

int
an_memory_exec(PyObject *m, an_state *st)
{
    st->budget_type = (PyTypeObject *)PyType_FromModuleAndSpec(m, &budget_spec, NULL);
    if (st->budget_type == NULL)
        return -1;
    if (PyModule_AddObjectRef(m, "Budget", (PyObject *)st->budget_type) < 0 ||
        PyModule_AddIntConstant(m, "GUARD_THRESHOLD", (long)AN_GUARD_THRESHOLD) < 0)
        return -1;
    return 0;
}
