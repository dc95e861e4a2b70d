/*
 * stream.c (binding) - MappedFile: a read-only, closeable buffer over a file map.
 *
 * The object hands its pages out through the buffer protocol, read-only and
 * without a copy, so decode(), probe(), hashlib, memoryview and
 * numpy.frombuffer all read the file in place.  Writable exports are refused
 * (BufferError), and the pages are mapped PROT_READ, so nothing can write
 * through it.
 *
 * close() is safe while views exist: from then on new exports, len() and
 * advise() raise ValidationError("input.closed"), and the pages are unmapped
 * when the last view is released.  A view therefore never points at unmapped
 * memory, unlike mmap.mmap, whose close() raises BufferError while exported.
 *
 * Also resize_bytearray(): read_limited() reads an upload straight into a
 * bytearray; bytearray(n) and extend() would first write n zero bytes (touching
 * every page) that the read then overwrites.  PyByteArray_Resize leaves the new
 * bytes uninitialised, and growing a large block is a realloc (mremap on Linux),
 * not a copy.
 *
 * Python signatures (the friendly entry points are in amulet_native.stream):
 *   _core.MappedFile(fd)   maps the regular file open on fd; fd may be closed after
 *   _core.resize_bytearray(buf, size)   new bytes are uninitialised
 */
#include "../an_py.h"

#include "../../core/memory/an_map.h"

/* Invariants: while !closed, map is mapped.  Once closed, map is released as
 * soon as exports == 0 (at close() or at the last PyBuffer_Release). */
typedef struct {
    PyObject_HEAD
    an_mapping map;
    size_t size;          /* the mapped length; still reported after close */
    Py_ssize_t exports;   /* live buffer exports, plus advise() calls in flight */
    int closed;
} mappedobject;

static an_state *
mapped_state(PyObject *self)
{
    return an_get_state(PyType_GetModule(Py_TYPE(self)));
}

static PyObject *
raise_closed(PyObject *self)
{
    return an_raise_status(mapped_state(self), AN_ERR_CLOSED, "I/O operation on a closed MappedFile");
}

/* an_error from the map functions -> OSError for errno failures, else the table. */
static PyObject *
raise_map_error(an_state *st, const an_error *err)
{
    if (err->status == AN_ERR_IO) {
        errno = (int)err->actual;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return an_raise(st, err);
}

/* Drops one export; unmaps when it was the last one after close(). */
static void
mapped_unref(mappedobject *self)
{
    AN_BEGIN_CRITICAL_SECTION(self);
    if (--self->exports == 0 && self->closed)
        an_map_release(&self->map);
    AN_END_CRITICAL_SECTION();
}

static PyObject *
mapped_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", NULL};
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i:MappedFile", kwlist, &fd))
        return NULL;
    an_state *st = an_get_state(PyType_GetModule(type));
    an_mapping map;
    an_error err;
    memset(&err, 0, sizeof(err));
    an_status s;
    Py_BEGIN_ALLOW_THREADS
    s = an_map_fd(fd, &map, &err);
    Py_END_ALLOW_THREADS
    if (s != AN_OK)
        return raise_map_error(st, &err);
    if (map.size > (size_t)PY_SSIZE_T_MAX) {
        an_map_release(&map);
        return an_raise_status(st, AN_ERR_NOMEM, "file too large to map");
    }
    mappedobject *self = (mappedobject *)PyType_GenericAlloc(type, 0);
    if (self == NULL) {
        an_map_release(&map);
        return NULL;
    }
    self->map = map;
    self->size = map.size;
    self->exports = 0;
    self->closed = 0;
    return (PyObject *)self;
}

static void
mapped_dealloc(PyObject *op)
{
    mappedobject *self = (mappedobject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    /* Every export holds a reference, so none is alive here. */
    an_map_release(&self->map);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static int
mapped_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    mappedobject *self = (mappedobject *)op;
    int rc = 1;
    AN_BEGIN_CRITICAL_SECTION(self);
    if (!self->closed) {
        rc = PyBuffer_FillInfo(view, op, (void *)self->map.data, (Py_ssize_t)self->map.size, 1,
                               flags);
        if (rc == 0)
            self->exports++;
    }
    AN_END_CRITICAL_SECTION();
    if (rc == 1) {
        view->obj = NULL;
        raise_closed(op);
        return -1;
    }
    return rc;
}

static void
mapped_releasebuffer(PyObject *op, Py_buffer *view)
{
    (void)view;
    mapped_unref((mappedobject *)op);
}

static PyObject *
mapped_close(PyObject *op, PyObject *unused)
{
    (void)unused;
    mappedobject *self = (mappedobject *)op;
    AN_BEGIN_CRITICAL_SECTION(self);
    self->closed = 1;
    if (self->exports == 0)
        an_map_release(&self->map);
    AN_END_CRITICAL_SECTION();
    Py_RETURN_NONE;
}

static PyObject *
mapped_enter(PyObject *op, PyObject *unused)
{
    (void)unused;
    if (((mappedobject *)op)->closed)
        return raise_closed(op);
    return Py_NewRef(op);
}

static PyObject *
mapped_exit(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    PyObject *r = mapped_close(op, NULL);
    Py_XDECREF(r);
    if (r == NULL)
        return NULL;
    Py_RETURN_FALSE;
}

/* advise(advice, offset, length): see an_map_advise.  The map is pinned (an
 * export) while the GIL is released, so a concurrent close() cannot unmap it. */
static PyObject *
mapped_advise(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    mappedobject *self = (mappedobject *)op;
    an_state *st = mapped_state(op);
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "advise() takes exactly 3 arguments");
        return NULL;
    }
    int advice;
    if (an_as_int(args[0], &advice) < 0)
        return NULL;
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t length = PyLong_AsSsize_t(args[2]);
    if (length == -1 && PyErr_Occurred())
        return NULL;
    if (offset < 0 || length < 0 || advice < 0 || advice >= AN_ADVISE_COUNT)
        return an_raise_status(st, AN_ERR_INVALID_ARG,
                               "advise() needs a known advice and offset, length >= 0");
    int closed;
    AN_BEGIN_CRITICAL_SECTION(self);
    closed = self->closed;
    if (!closed)
        self->exports++;
    AN_END_CRITICAL_SECTION();
    if (closed)
        return raise_closed(op);
    an_error err;
    memset(&err, 0, sizeof(err));
    an_status s;
    Py_BEGIN_ALLOW_THREADS
    s = an_map_advise(&self->map, (size_t)offset, (size_t)length, (an_advice)advice, &err);
    Py_END_ALLOW_THREADS
    mapped_unref(self);
    if (s != AN_OK)
        return raise_map_error(st, &err);
    Py_RETURN_NONE;
}

static Py_ssize_t
mapped_length(PyObject *op)
{
    mappedobject *self = (mappedobject *)op;
    if (self->closed) {
        raise_closed(op);
        return -1;
    }
    return (Py_ssize_t)self->size;
}

static PyObject *
mapped_get_closed(PyObject *op, void *unused)
{
    (void)unused;
    return PyBool_FromLong(((mappedobject *)op)->closed);
}

static PyObject *
mapped_get_size(PyObject *op, void *unused)
{
    (void)unused;
    return PyLong_FromSize_t(((mappedobject *)op)->size);
}

static PyObject *
mapped_get_exports(PyObject *op, void *unused)
{
    (void)unused;
    Py_ssize_t n;
    AN_BEGIN_CRITICAL_SECTION(op);
    n = ((mappedobject *)op)->exports;
    AN_END_CRITICAL_SECTION();
    return PyLong_FromSsize_t(n);
}

static PyObject *
mapped_repr(PyObject *op)
{
    mappedobject *self = (mappedobject *)op;
    return PyUnicode_FromFormat("<amulet_native.MappedFile %zu bytes, %s>", self->size,
                                self->closed ? "closed" : "open");
}

PyObject *
an_py_resize_bytearray(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyByteArray_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "resize_bytearray(buf: bytearray, size: int)");
        return NULL;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must be >= 0");
        return NULL;
    }
    if (PyByteArray_Resize(args[0], size) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef mapped_methods[] = {
    {"close", mapped_close, METH_NOARGS,
     "close(): refuse new views; the pages are unmapped when the last view is released."},
    {"advise", (PyCFunction)(void (*)(void))mapped_advise, METH_FASTCALL,
     "advise(advice, offset, length): madvise() hint for a range (see amulet_native.stream)."},
    {"__enter__", mapped_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))mapped_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef mapped_getset[] = {
    {"closed", mapped_get_closed, NULL, "True after close().", NULL},
    {"size", mapped_get_size, NULL, "Length of the mapped file in bytes (also after close).",
     NULL},
    {"exports", mapped_get_exports, NULL, "Number of live buffer views of the map.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot mapped_slots[] = {
    {Py_tp_new, mapped_new},
    {Py_tp_dealloc, mapped_dealloc},
    {Py_tp_repr, mapped_repr},
    {Py_tp_methods, mapped_methods},
    {Py_tp_getset, mapped_getset},
    {Py_sq_length, mapped_length},
    {Py_bf_getbuffer, mapped_getbuffer},
    {Py_bf_releasebuffer, mapped_releasebuffer},
    {Py_tp_doc, "MappedFile(fd): read-only buffer over the regular file open on fd "
                "(see amulet_native.open_mapped)."},
    {0, NULL},
};

static PyType_Spec mapped_spec = {
    .name = "amulet_native._core.MappedFile",
    .basicsize = sizeof(mappedobject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = mapped_slots,
};

int
an_stream_exec(PyObject *m, an_state *st)
{
    (void)st;
    PyObject *type = PyType_FromModuleAndSpec(m, &mapped_spec, NULL);
    if (type == NULL)
        return -1;
    int rc = PyModule_AddType(m, (PyTypeObject *)type);
    Py_DECREF(type);
    if (rc < 0)
        return -1;
    return PyModule_AddIntConstant(m, "ADVISE_NORMAL", AN_ADVISE_NORMAL) < 0 ||
                   PyModule_AddIntConstant(m, "ADVISE_SEQUENTIAL", AN_ADVISE_SEQUENTIAL) < 0 ||
                   PyModule_AddIntConstant(m, "ADVISE_RANDOM", AN_ADVISE_RANDOM) < 0 ||
                   PyModule_AddIntConstant(m, "ADVISE_WILLNEED", AN_ADVISE_WILLNEED) < 0 ||
                   PyModule_AddIntConstant(m, "ADVISE_DONTNEED", AN_ADVISE_DONTNEED) < 0
               ? -1
               : 0;
}
