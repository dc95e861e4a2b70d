/*
 * arena.c (binding) - _core.Arena over csrc/core/ops/arena.c.
 *
 * A small general handle for state shared by the worker processes of a host:
 * named records of 64-byte units, atomic word operations on this process's
 * copy (or the one shared copy), combined reads over every worker, iteration
 * and reclamation of dead workers.  Word operations are a bounds check and one
 * atomic, done with the GIL held (they never block).
 *
 * Fork: every open arena is on a list walked by a pthread_atfork child
 * handler, which gives the child its own slot and remaps the slot view at the
 * same address, so objects that cached pointers (metric cells) write to the
 * child's copy from the first instruction after fork().
 */
#include "an_ops_py.h"

#include <string.h>
#include <structmember.h>

static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static an_arena_object *open_list;
static int atfork_done;

static void
fork_prepare(void)
{
    pthread_mutex_lock(&open_lock);
}

static void
fork_parent(void)
{
    pthread_mutex_unlock(&open_lock);
}

static void
fork_child(void)
{
    for (an_arena_object *o = open_list; o != NULL; o = o->next_open) {
        if (o->arena != NULL && !o->detached) {
            an_error err;
            memset(&err, 0, sizeof(err));
            (void)an_arena_after_fork(o->arena, &err); /* no slot: writes go nowhere */
        }
    }
    pthread_mutex_unlock(&open_lock);
}

static void
list_add(an_arena_object *o)
{
    pthread_mutex_lock(&open_lock);
    if (!atfork_done) {
        pthread_atfork(fork_prepare, fork_parent, fork_child);
        atfork_done = 1;
    }
    o->next_open = open_list;
    open_list = o;
    pthread_mutex_unlock(&open_lock);
}

static void
list_remove(an_arena_object *o)
{
    pthread_mutex_lock(&open_lock);
    for (an_arena_object **p = &open_list; *p != NULL; p = &(*p)->next_open) {
        if (*p == o) {
            *p = o->next_open;
            break;
        }
    }
    pthread_mutex_unlock(&open_lock);
}

static an_state *
arena_state(PyObject *self)
{
    return (an_state *)PyType_GetModuleState(Py_TYPE(self));
}

int
an_py_is_arena(an_state *st, PyObject *obj)
{
    return st->arena_type != NULL && Py_IS_TYPE(obj, (PyTypeObject *)st->arena_type);
}

an_arena *
an_py_arena(an_state *st, PyObject *obj)
{
    if (!an_py_is_arena(st, obj)) {
        PyErr_Format(PyExc_TypeError, "expected an Arena, got %.100s", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    an_arena_object *o = (an_arena_object *)obj;
    if (o->arena == NULL || o->detached) {
        an_raise_status(st, AN_ERR_ARENA_MISMATCH, "the arena is closed");
        return NULL;
    }
    return o->arena;
}

static int
as_u32(PyObject *o, const char *what, uint32_t *out)
{
    unsigned long v = PyLong_AsUnsignedLong(o);
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (v > UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s out of range", what);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static PyObject *
arena_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"path", "max_records", "max_slots", "key_size", "slot_units", NULL};
    PyObject *path = Py_None, *bytes = NULL;
    an_arena_config cfg;
    an_arena_config_init(&cfg);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$IIII:Arena", kwlist, &path,
                                     &cfg.max_records, &cfg.max_slots, &cfg.key_size,
                                     &cfg.slot_units))
        return NULL;
    an_state *st = (an_state *)PyType_GetModuleState(type);
    if (path != Py_None && !PyUnicode_FSConverter(path, &bytes))
        return NULL;
    an_arena *a = NULL;
    an_error err;
    memset(&err, 0, sizeof(err));
    an_status s;
    Py_BEGIN_ALLOW_THREADS
    s = bytes == NULL ? an_arena_open_anonymous(&a, &cfg, &err)
                      : an_arena_open(&a, PyBytes_AS_STRING(bytes), &cfg, &err);
    Py_END_ALLOW_THREADS
    Py_XDECREF(bytes);
    if (s != AN_OK)
        return an_raise(st, &err);
    an_arena_object *self = (an_arena_object *)type->tp_alloc(type, 0);
    if (self == NULL) {
        an_arena_close(a);
        return NULL;
    }
    self->arena = a;
    list_add(self);
    return (PyObject *)self;
}

static void
arena_dealloc(an_arena_object *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    list_remove(self);
    if (self->arena != NULL)
        an_arena_close(self->arena);
    self->arena = NULL;
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
arena_traverse(an_arena_object *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

/* key: str (UTF-8) or bytes-like; view released by the caller. */
static int
get_key(PyObject *key, Py_buffer *view)
{
    if (PyUnicode_Check(key)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(key, &n);
        if (s == NULL)
            return -1;
        return PyBuffer_FillInfo(view, key, (void *)s, n, 1, PyBUF_SIMPLE);
    }
    return PyObject_GetBuffer(key, view, PyBUF_SIMPLE);
}

static const char *const fold_names[] = {"shared", "add", "max", "min", "latest"};

static int
parse_fold(PyObject *o, int drop, uint32_t *fold)
{
    for (uint32_t i = 0; i < 5; i++) {
        if (PyUnicode_CompareWithASCIIString(o, fold_names[i]) == 0) {
            if (drop && i == AN_FOLD_SHARED) {
                PyErr_SetString(PyExc_ValueError, "a shared record cannot drop dead workers");
                return -1;
            }
            *fold = i | (drop ? AN_FOLD_DROP : 0u);
            return 0;
        }
    }
    PyErr_SetString(PyExc_ValueError,
                    "fold must be 'shared', 'add', 'max', 'min' or 'latest'");
    return -1;
}

static PyObject *
arena_record(an_arena_object *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"key", "units", "fold", "drop", NULL};
    PyObject *key, *fold_obj = NULL;
    unsigned int units = 1;
    int drop = 0;
    uint32_t fold = AN_FOLD_ADD;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|IU$p:record", kwlist, &key, &units,
                                     &fold_obj, &drop))
        return NULL;
    an_state *st = arena_state((PyObject *)self);
    an_arena *a = an_py_arena(st, (PyObject *)self);
    if (a == NULL || (fold_obj != NULL && parse_fold(fold_obj, drop, &fold) < 0))
        return NULL;
    if (fold_obj == NULL && drop)
        fold |= AN_FOLD_DROP;
    Py_buffer view;
    if (get_key(key, &view) < 0)
        return NULL;
    an_arena_rec rec;
    an_error err;
    memset(&err, 0, sizeof(err));
    an_status s = an_arena_record(a, view.buf, (size_t)view.len, units, fold, &rec, &err);
    PyBuffer_Release(&view);
    if (s != AN_OK)
        return an_raise(st, &err);
    return PyLong_FromUnsignedLong(rec.id);
}

static PyObject *
arena_find(an_arena_object *self, PyObject *key)
{
    an_state *st = arena_state((PyObject *)self);
    an_arena *a = an_py_arena(st, (PyObject *)self);
    if (a == NULL)
        return NULL;
    Py_buffer view;
    if (get_key(key, &view) < 0)
        return NULL;
    an_arena_rec rec;
    an_status s = an_arena_find(a, view.buf, (size_t)view.len, &rec);
    PyBuffer_Release(&view);
    if (s != AN_OK)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(rec.id);
}

/* The word (id, word) of this process's copy, bounds-checked. */
static uint64_t *
word_at(an_arena_object *self, PyObject *id_obj, PyObject *word_obj, uint32_t slot, int any_slot)
{
    an_state *st = arena_state((PyObject *)self);
    an_arena *a = an_py_arena(st, (PyObject *)self);
    uint32_t id, word = 0, cursor;
    if (a == NULL || as_u32(id_obj, "record id", &id) < 0 ||
        (word_obj != NULL && as_u32(word_obj, "word", &word) < 0))
        return NULL;
    an_arena_rec rec;
    cursor = id;
    if (!an_arena_next(a, &cursor, &rec) || rec.id != id) {
        an_raise_status(st, AN_ERR_ARENA_MISMATCH, "no arena record %u", id);
        return NULL;
    }
    if (word >= rec.units * AN_ARENA_WORDS_PER_UNIT) {
        PyErr_Format(PyExc_IndexError, "word %u outside record %u (%u words)", word, id,
                     rec.units * AN_ARENA_WORDS_PER_UNIT);
        return NULL;
    }
    if (any_slot)
        return an_arena_slot_words(a, id, slot) + word;
    return an_arena_local(a, id) + word;
}

static PyObject *
arena_load(an_arena_object *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "load(id, word=0)");
    uint64_t *w = word_at(self, args[0], nargs > 1 ? args[1] : NULL, 0, 0);
    return w == NULL ? NULL : PyLong_FromLongLong((long long)an_aw_load(w));
}

static PyObject *
arena_store(an_arena_object *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "store(id, word, value)");
    long long v = PyLong_AsLongLong(args[2]);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    uint64_t *w = word_at(self, args[0], args[1], 0, 0);
    if (w == NULL)
        return NULL;
    an_aw_store(w, (uint64_t)v);
    Py_RETURN_NONE;
}

static PyObject *
arena_add(an_arena_object *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "add(id, word, delta)");
    long long v = PyLong_AsLongLong(args[2]);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    uint64_t *w = word_at(self, args[0], args[1], 0, 0);
    if (w == NULL)
        return NULL;
    return PyLong_FromLongLong((long long)an_aw_add(w, (uint64_t)v));
}

static PyObject *
arena_cas(an_arena_object *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4)
        return PyErr_Format(PyExc_TypeError, "cas(id, word, expected, new)");
    long long e = PyLong_AsLongLong(args[2]);
    if (e == -1 && PyErr_Occurred())
        return NULL;
    long long n = PyLong_AsLongLong(args[3]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    uint64_t *w = word_at(self, args[0], args[1], 0, 0);
    if (w == NULL)
        return NULL;
    uint64_t expected = (uint64_t)e;
    return PyBool_FromLong(an_aw_cas(w, &expected, (uint64_t)n));
}

static PyObject *
arena_load_f64(an_arena_object *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "load_f64(id, word=0)");
    uint64_t *w = word_at(self, args[0], nargs > 1 ? args[1] : NULL, 0, 0);
    return w == NULL ? NULL : PyFloat_FromDouble(an_aw_load_f64(w));
}

static PyObject *
arena_store_f64(an_arena_object *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "store_f64(id, word, value)");
    double v = PyFloat_AsDouble(args[2]);
    if (v == -1.0 && PyErr_Occurred())
        return NULL;
    uint64_t *w = word_at(self, args[0], args[1], 0, 0);
    if (w == NULL)
        return NULL;
    an_aw_store_f64(w, v);
    Py_RETURN_NONE;
}

static PyObject *
arena_add_f64(an_arena_object *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "add_f64(id, word, delta)");
    double v = PyFloat_AsDouble(args[2]);
    if (v == -1.0 && PyErr_Occurred())
        return NULL;
    uint64_t *w = word_at(self, args[0], args[1], 0, 0);
    if (w == NULL)
        return NULL;
    return PyFloat_FromDouble(an_aw_add_f64(w, v));
}

static PyObject *
arena_read(an_arena_object *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2)
        return PyErr_Format(PyExc_TypeError, "read(id, nwords=None)");
    an_state *st = arena_state((PyObject *)self);
    an_arena *a = an_py_arena(st, (PyObject *)self);
    uint32_t id, nwords = AN_ARENA_MAX_RECORD_UNITS * AN_ARENA_WORDS_PER_UNIT, cursor;
    if (a == NULL || as_u32(args[0], "record id", &id) < 0 ||
        (nargs > 1 && args[1] != Py_None && as_u32(args[1], "nwords", &nwords) < 0))
        return NULL;
    an_arena_rec rec;
    cursor = id;
    if (!an_arena_next(a, &cursor, &rec) || rec.id != id)
        return an_raise_status(st, AN_ERR_ARENA_MISMATCH, "no arena record %u", id);
    if (nwords > rec.units * AN_ARENA_WORDS_PER_UNIT)
        nwords = rec.units * AN_ARENA_WORDS_PER_UNIT;
    double *out = (double *)PyMem_Malloc(sizeof(double) * (nwords ? nwords : 1));
    if (out == NULL)
        return PyErr_NoMemory();
    an_status s;
    Py_BEGIN_ALLOW_THREADS
    s = an_arena_read(a, id, out, nwords);
    Py_END_ALLOW_THREADS
    PyObject *list = NULL;
    if (s != AN_OK) {
        an_raise_status(st, s, "cannot read arena record %u", id);
        goto done;
    }
    if ((list = PyList_New(nwords)) == NULL)
        goto done;
    for (uint32_t k = 0; k < nwords; k++) {
        PyObject *f = PyFloat_FromDouble(out[k]);
        if (f == NULL) {
            Py_CLEAR(list);
            goto done;
        }
        PyList_SET_ITEM(list, k, f);
    }
done:
    PyMem_Free(out);
    return list;
}

static PyObject *
arena_records(an_arena_object *self, PyObject *unused)
{
    (void)unused;
    an_state *st = arena_state((PyObject *)self);
    an_arena *a = an_py_arena(st, (PyObject *)self);
    if (a == NULL)
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    uint32_t cursor = 0;
    an_arena_rec rec;
    while (an_arena_next(a, &cursor, &rec)) {
        PyObject *row = Py_BuildValue("(y#IIsO)", rec.key, (Py_ssize_t)rec.key_len, rec.id,
                                      rec.units, fold_names[rec.fold & AN_FOLD_OP_MASK],
                                      (rec.fold & AN_FOLD_DROP) ? Py_True : Py_False);
        if (row == NULL || PyList_Append(list, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(row);
    }
    return list;
}

static PyObject *
arena_reclaim(an_arena_object *self, PyObject *unused)
{
    (void)unused;
    an_arena *a = an_py_arena(arena_state((PyObject *)self), (PyObject *)self);
    if (a == NULL)
        return NULL;
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = an_arena_reclaim(a);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(n);
}

static PyObject *
arena_check(an_arena_object *self, PyObject *unused)
{
    (void)unused;
    an_state *st = arena_state((PyObject *)self);
    an_arena *a = an_py_arena(st, (PyObject *)self);
    if (a == NULL)
        return NULL;
    an_error err;
    memset(&err, 0, sizeof(err));
    if (an_arena_check(a, &err) != AN_OK)
        return an_raise(st, &err);
    Py_RETURN_NONE;
}

static PyObject *
arena_stats(an_arena_object *self, PyObject *unused)
{
    (void)unused;
    an_arena *a = an_py_arena(arena_state((PyObject *)self), (PyObject *)self);
    if (a == NULL)
        return NULL;
    an_arena_stats s;
    an_arena_stats_get(a, &s);
    return Py_BuildValue("{s:K,s:I,s:I,s:I,s:I,s:I,s:I,s:K,s:K,s:K,s:I}", "file_size",
                         (unsigned long long)s.file_size, "records", s.records, "max_records",
                         s.max_records, "units_used", s.units_used, "slot_units", s.slot_units,
                         "live_slots", s.live_slots, "max_slots", s.max_slots, "overflow",
                         (unsigned long long)s.overflow, "folds", (unsigned long long)s.folds,
                         "corrupt", (unsigned long long)s.corrupt, "slot", s.my_slot);
}

static PyObject *
arena_count_overflow(an_arena_object *self, PyObject *unused)
{
    (void)unused;
    an_arena *a = an_py_arena(arena_state((PyObject *)self), (PyObject *)self);
    if (a == NULL)
        return NULL;
    an_arena_count_overflow(a);
    Py_RETURN_NONE;
}

static PyObject *
arena_close(an_arena_object *self, PyObject *unused)
{
    (void)unused;
    /* Give up the slot (folded into the aggregate) but keep the mapping:
     * metric cells may still point into it; their writes now go nowhere. */
    if (self->arena != NULL && !self->detached) {
        an_arena *a = self->arena;
        Py_BEGIN_ALLOW_THREADS
        an_arena_abandon(a);
        an_arena_reclaim(a);
        Py_END_ALLOW_THREADS
        self->detached = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *
arena_abandon(an_arena_object *self, PyObject *unused)
{
    (void)unused;
    if (self->arena != NULL && !self->detached) {
        an_arena_abandon(self->arena);
        self->detached = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *
arena_forge_slot(an_arena_object *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "_forge_slot(pid, start_time)");
    an_arena *a = an_py_arena(arena_state((PyObject *)self), (PyObject *)self);
    long pid = PyLong_AsLong(args[0]);
    unsigned long long start = PyLong_AsUnsignedLongLong(args[1]);
    if (a == NULL || PyErr_Occurred())
        return NULL;
    return PyLong_FromUnsignedLong(an_arena_forge_slot(a, (pid_t)pid, start));
}

static PyObject *
arena_slot_add_f64(an_arena_object *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4)
        return PyErr_Format(PyExc_TypeError, "_slot_add_f64(id, slot, word, delta)");
    uint32_t slot;
    double v = PyFloat_AsDouble(args[3]);
    if ((v == -1.0 && PyErr_Occurred()) || as_u32(args[1], "slot", &slot) < 0)
        return NULL;
    an_arena *a = an_py_arena(arena_state((PyObject *)self), (PyObject *)self);
    if (a == NULL)
        return NULL;
    an_arena_stats s;
    an_arena_stats_get(a, &s);
    if (slot >= s.max_slots)
        return PyErr_Format(PyExc_IndexError, "slot %u out of range", slot);
    uint64_t *w = word_at(self, args[0], args[2], slot, 1);
    if (w == NULL)
        return NULL;
    return PyFloat_FromDouble(an_aw_add_f64(w, v));
}

static PyObject *
arena_proc_start_time(PyObject *cls, PyObject *pid)
{
    (void)cls;
    long p = PyLong_AsLong(pid);
    if (p == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromUnsignedLongLong(an_proc_start_time((pid_t)p));
}

static PyObject *
arena_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyObject *
arena_exit(an_arena_object *self, PyObject *args)
{
    (void)args;
    return arena_close(self, NULL);
}

static PyObject *
arena_get_slot(an_arena_object *self, void *closure)
{
    (void)closure;
    if (self->arena == NULL || self->detached)
        return PyLong_FromLong(0);
    return PyLong_FromUnsignedLong(an_arena_my_slot(self->arena));
}

static PyObject *
arena_get_closed(an_arena_object *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->arena == NULL || self->detached);
}

static PyMethodDef arena_methods[] = {
    {"record", (PyCFunction)(void (*)(void))arena_record, METH_VARARGS | METH_KEYWORDS,
     "record(key, units=1, fold='add', *, drop=False) -> int: find or create a record."},
    {"find", (PyCFunction)arena_find, METH_O, "find(key) -> int | None"},
    {"load", (PyCFunction)(void (*)(void))arena_load, METH_FASTCALL,
     "load(id, word=0) -> int: this process's copy (the shared copy for shared records)."},
    {"store", (PyCFunction)(void (*)(void))arena_store, METH_FASTCALL, "store(id, word, value)"},
    {"add", (PyCFunction)(void (*)(void))arena_add, METH_FASTCALL,
     "add(id, word, delta) -> int: atomic 64-bit add (wrapping), the new value."},
    {"cas", (PyCFunction)(void (*)(void))arena_cas, METH_FASTCALL,
     "cas(id, word, expected, new) -> bool"},
    {"load_f64", (PyCFunction)(void (*)(void))arena_load_f64, METH_FASTCALL,
     "load_f64(id, word=0) -> float"},
    {"store_f64", (PyCFunction)(void (*)(void))arena_store_f64, METH_FASTCALL,
     "store_f64(id, word, value)"},
    {"add_f64", (PyCFunction)(void (*)(void))arena_add_f64, METH_FASTCALL,
     "add_f64(id, word, delta) -> float: the new value."},
    {"read", (PyCFunction)(void (*)(void))arena_read, METH_FASTCALL,
     "read(id, nwords=None) -> list[float]: every worker's copy combined by the fold."},
    {"records", (PyCFunction)arena_records, METH_NOARGS,
     "records() -> [(key: bytes, id, units, fold, drop)]"},
    {"reclaim", (PyCFunction)arena_reclaim, METH_NOARGS,
     "reclaim() -> int: fold dead workers' slots into the aggregate."},
    {"check", (PyCFunction)arena_check, METH_NOARGS,
     "check(): raise ArenaError when the header or a directory entry is corrupt."},
    {"stats", (PyCFunction)arena_stats, METH_NOARGS, "stats() -> dict"},
    {"count_overflow", (PyCFunction)arena_count_overflow, METH_NOARGS,
     "count_overflow(): count one refusal made by a caller-level limit."},
    {"close", (PyCFunction)arena_close, METH_NOARGS,
     "close(): give up this process's slot (its values are folded)."},
    {"abandon", (PyCFunction)arena_abandon, METH_NOARGS,
     "abandon(): give up the slot without folding it (simulates a crash)."},
    {"_forge_slot", (PyCFunction)(void (*)(void))arena_forge_slot, METH_FASTCALL,
     "_forge_slot(pid, start_time) -> slot (tests: PID reuse)."},
    {"_slot_add_f64", (PyCFunction)(void (*)(void))arena_slot_add_f64, METH_FASTCALL,
     "_slot_add_f64(id, slot, word, delta) (tests)."},
    {"proc_start_time", (PyCFunction)arena_proc_start_time, METH_O | METH_STATIC,
     "proc_start_time(pid) -> int: /proc start time in ticks (0 = gone or zombie)."},
    {"__enter__", arena_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)arena_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef arena_getset[] = {
    {"slot", (getter)arena_get_slot, NULL, "this process's worker slot (0 = none)", NULL},
    {"closed", (getter)arena_get_closed, NULL, "True after close()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef arena_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(an_arena_object, weakrefs), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static const char arena_doc[] =
    "Arena(path=None, *, max_records=4096, max_slots=64, key_size=512, slot_units=16384)\n\n"
    "A shared-memory arena of named records for the worker processes of a host.\n"
    "path None = a private anonymous arena (shared with forked children).";

static PyType_Slot arena_slots[] = {
    {Py_tp_new, arena_new},
    {Py_tp_dealloc, arena_dealloc},
    {Py_tp_traverse, arena_traverse},
    {Py_tp_methods, arena_methods},
    {Py_tp_getset, arena_getset},
    {Py_tp_members, arena_members},
    {Py_tp_doc, (void *)arena_doc},
    {0, NULL},
};

static PyType_Spec arena_spec = {
    .name = "amulet_native._core.Arena",
    .basicsize = sizeof(an_arena_object),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = arena_slots,
};

int
an_arena_exec(PyObject *m, an_state *st)
{
    st->arena_type = PyType_FromModuleAndSpec(m, &arena_spec, NULL);
    if (st->arena_type == NULL)
        return -1;
    return PyModule_AddObjectRef(m, "Arena", st->arena_type);
}
