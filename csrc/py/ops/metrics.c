/*
 * metrics.c (binding) - the native cores of the metric types:
 * _core.CounterCore, GaugeCore, HistogramCore and SummaryCore.
 *
 * amulet_native/metrics.py subclasses them (Counter, Gauge, ...) for the
 * friendly API; every hot call -- inc, dec, set, observe, and labels() on a
 * label set seen before -- is one C method: a few atomics on the cell (see
 * csrc/core/ops/an_metrics.h), or one dict lookup.  A cell is either owned
 * heap memory or this worker's copy of a record in a shared Arena (kept alive
 * by a reference), so single- and multi-process modes share the hot path.
 * Only a label set never seen before calls back into Python (_labels_slow),
 * which validates it, enforces max_series and creates the child.
 */
#include "an_ops_py.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include "../../core/ops/an_metrics.h"

enum { K_COUNTER = 0, K_GAUGE, K_HISTOGRAM, K_SUMMARY };

typedef struct {
    PyObject_HEAD
    uint64_t *cell;      /* NULL: a parent with labels, or not attached */
    uint64_t *heap;      /* owned cell memory (NULL when in an arena) */
    Py_ssize_t nwords;
    PyObject *owner;     /* the Arena the cell lives in */
    double *bounds;      /* histogram: finite upper bounds, ascending */
    Py_ssize_t nbounds;
    int kind;
    int mark_time;       /* gauge: mark writes with the wall time (mostrecent) */
    PyObject *children;  /* parent: label key -> child (str for one label, tuple) */
    Py_ssize_t nlabels;
} metricobject;

static an_state *
metric_state(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    for (; tp != NULL; tp = tp->tp_base) {
        if ((tp->tp_flags & Py_TPFLAGS_HEAPTYPE) && ((PyHeapTypeObject *)tp)->ht_module != NULL)
            return an_get_state(((PyHeapTypeObject *)tp)->ht_module);
    }
    return NULL;
}

static PyObject *
no_cell(metricobject *self)
{
    an_state *st = metric_state((PyObject *)self);
    if (self->children != NULL)
        return an_raise_ctx(st, AN_ERR_INVALID_ARG, NULL,
                            "this metric has label names: call .labels(...) first");
    return an_raise_ctx(st, AN_ERR_INVALID_ARG, NULL, "metric is not initialised");
}

/* NaN has no bucket and would make _sum NaN for good: refused. */
static PyObject *
observed_nan(metricobject *self)
{
    return an_raise_ctx(metric_state((PyObject *)self), AN_ERR_INVALID_ARG, NULL,
                        "cannot observe NaN");
}

static int
get_amount(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, double dflt, double *out)
{
    PyObject *o = nargs > 0 ? args[0] : NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "expected at most one positional argument");
        return -1;
    }
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        if (PyUnicode_CompareWithASCIIString(name, "amount") == 0 ||
            PyUnicode_CompareWithASCIIString(name, "value") == 0) {
            if (o != NULL) {
                PyErr_SetString(PyExc_TypeError, "amount given twice");
                return -1;
            }
            o = args[nargs + k];
        } else if (PyUnicode_CompareWithASCIIString(name, "exemplar") != 0) {
            PyErr_Format(PyExc_TypeError, "unexpected keyword argument '%U'", name);
            return -1;
        }
    }
    if (o == NULL) {
        *out = dflt;
        return 0;
    }
    if (PyFloat_CheckExact(o)) {
        *out = PyFloat_AS_DOUBLE(o);
        return 0;
    }
    *out = PyFloat_AsDouble(o);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* ---- lifecycle ------------------------------------------------------------ */

static int
metric_traverse(metricobject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->children);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int
metric_clear(metricobject *self)
{
    Py_CLEAR(self->children);
    /* the owner stays until dealloc: cell may point into it */
    return 0;
}

static void
metric_dealloc(metricobject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    metric_clear(self);
    self->cell = NULL;
    Py_CLEAR(self->owner);
    an_free(NULL, self->heap);
    an_free(NULL, self->bounds);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* _attach(source, nwords, bounds=None, mark_time=False): source None = heap
 * memory, or (arena, record_id).  Attaching again moves the values over (the
 * GIL is held, so no update runs meanwhile). */
static PyObject *
metric_attach(metricobject *self, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = metric_state((PyObject *)self);
    if (nargs < 2 || nargs > 4)
        return PyErr_Format(PyExc_TypeError, "_attach(source, nwords, bounds=None, mark_time=False)");
    Py_ssize_t nwords = PyLong_AsSsize_t(args[1]);
    if (nwords == -1 && PyErr_Occurred())
        return NULL;
    if (nwords < 1 || nwords > (Py_ssize_t)(AN_ARENA_MAX_RECORD_UNITS * AN_ARENA_WORDS_PER_UNIT))
        return PyErr_Format(PyExc_ValueError, "cell of %zd words", nwords);
    double *bounds = NULL;
    Py_ssize_t nb = 0;
    if (nargs > 2 && args[2] != Py_None) {
        PyObject *seq = PySequence_Fast(args[2], "bounds must be a sequence");
        if (seq == NULL)
            return NULL;
        nb = PySequence_Fast_GET_SIZE(seq);
        bounds = (double *)an_calloc(NULL, (size_t)(nb ? nb : 1), sizeof(double));
        if (bounds == NULL) {
            Py_DECREF(seq);
            return PyErr_NoMemory();
        }
        for (Py_ssize_t i = 0; i < nb; i++) {
            bounds[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
            if (bounds[i] == -1.0 && PyErr_Occurred()) {
                Py_DECREF(seq);
                an_free(NULL, bounds);
                return NULL;
            }
        }
        Py_DECREF(seq);
        if (nwords != nb + 3) {
            an_free(NULL, bounds);
            return PyErr_Format(PyExc_ValueError, "a histogram of %zd bounds needs %zd words", nb,
                                nb + 3);
        }
    }
    int mark_time = nargs > 3 ? PyObject_IsTrue(args[3]) : 0;
    if (mark_time < 0) {
        an_free(NULL, bounds);
        return NULL;
    }
    uint64_t *cell, *heap = NULL;
    PyObject *owner = NULL;
    if (args[0] == Py_None) {
        heap = (uint64_t *)an_calloc(NULL, (size_t)nwords, sizeof(uint64_t));
        if (heap == NULL) {
            an_free(NULL, bounds);
            return PyErr_NoMemory();
        }
        cell = heap;
    } else {
        PyObject *arena_obj, *id_obj;
        if (!PyArg_ParseTuple(args[0], "OO:_attach", &arena_obj, &id_obj)) {
            an_free(NULL, bounds);
            return NULL;
        }
        an_arena *a = an_py_arena(st, arena_obj);
        unsigned long id = a == NULL ? 0 : PyLong_AsUnsignedLong(id_obj);
        if (a == NULL || PyErr_Occurred()) {
            an_free(NULL, bounds);
            return NULL;
        }
        uint32_t cursor = (uint32_t)id;
        an_arena_rec rec;
        if (!an_arena_next(a, &cursor, &rec) || rec.id != id ||
            (Py_ssize_t)rec.units * (Py_ssize_t)AN_ARENA_WORDS_PER_UNIT < nwords) {
            an_free(NULL, bounds);
            return an_raise_ctx(st, AN_ERR_ARENA_MISMATCH, NULL,
                                "arena record %lu is missing or too small", id);
        }
        cell = an_arena_local(a, (uint32_t)id);
        owner = Py_NewRef(arena_obj);
    }
    if (self->cell != NULL) {
        /* move the values accumulated so far */
        Py_ssize_t n = self->nwords < nwords ? self->nwords : nwords;
        if (self->kind == K_GAUGE && n >= 2) {
            an_aw_store(&cell[0], an_aw_load(&self->cell[0]));
            an_aw_store(&cell[1], an_aw_load(&self->cell[1]));
        } else {
            for (Py_ssize_t k = 0; k < n; k++)
                an_aw_add_f64(&cell[k], an_aw_load_f64(&self->cell[k]));
        }
    }
    uint64_t *old_heap = self->heap;
    PyObject *old_owner = self->owner;
    self->cell = cell;
    self->heap = heap;
    self->owner = owner;
    self->nwords = nwords;
    if (bounds != NULL) {
        an_free(NULL, self->bounds);
        self->bounds = bounds;
        self->nbounds = nb;
    }
    self->mark_time = mark_time;
    an_free(NULL, old_heap);
    Py_XDECREF(old_owner);
    Py_RETURN_NONE;
}

/* _set_children(dict, nlabels): makes this object a parent with labels. */
static PyObject *
metric_set_children(metricobject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyDict_Check(args[0]))
        return PyErr_Format(PyExc_TypeError, "_set_children(dict, nlabels)");
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    Py_XSETREF(self->children, Py_NewRef(args[0]));
    self->nlabels = n;
    Py_RETURN_NONE;
}

static PyObject *
metric_labels(metricobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames == NULL && nargs == self->nlabels && nargs > 0 && self->children != NULL) {
        PyObject *key = NULL, *child;
        if (nargs == 1) {
            if (PyUnicode_CheckExact(args[0]))
                key = Py_NewRef(args[0]);
        } else {
            Py_ssize_t i;
            for (i = 0; i < nargs && PyUnicode_CheckExact(args[i]); i++) {
            }
            if (i == nargs) {
                key = PyTuple_New(nargs);
                if (key == NULL)
                    return NULL;
                for (i = 0; i < nargs; i++)
                    PyTuple_SET_ITEM(key, i, Py_NewRef(args[i]));
            }
        }
        if (key != NULL) {
            child = PyDict_GetItemWithError(self->children, key);
            Py_DECREF(key);
            if (child != NULL)
                return Py_NewRef(child);
            if (PyErr_Occurred())
                return NULL;
        }
    }
    PyObject *meth = PyUnicode_InternFromString("_labels_slow");
    if (meth == NULL)
        return NULL;
    /* vectorcall the method with self prepended */
    PyObject *stack[64];
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs + nkw + 1 > 64) {
        Py_DECREF(meth);
        return an_raise_ctx(metric_state((PyObject *)self), AN_ERR_INVALID_ARG, NULL,
                            "too many label values");
    }
    stack[0] = (PyObject *)self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        stack[i + 1] = args[i];
    PyObject *r = PyObject_VectorcallMethod(meth, stack, (size_t)(nargs + 1), kwnames);
    Py_DECREF(meth);
    return r;
}

/* _get() -> list[float]: the cell's words (a summary: count, sum only). */
static PyObject *
metric_get(metricobject *self, PyObject *unused)
{
    (void)unused;
    if (self->cell == NULL)
        return no_cell(self);
    Py_ssize_t n = self->kind == K_SUMMARY ? 2 : self->nwords;
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *f = PyFloat_FromDouble(an_aw_load_f64(&self->cell[k]));
        if (f == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, k, f);
    }
    return list;
}

static PyObject *
metric_value(metricobject *self, PyObject *unused)
{
    (void)unused;
    if (self->cell == NULL)
        return no_cell(self);
    return PyFloat_FromDouble(an_aw_load_f64(&self->cell[0]));
}

static PyObject *
metric_reset(metricobject *self, PyObject *unused)
{
    (void)unused;
    if (self->cell == NULL)
        return no_cell(self);
    for (Py_ssize_t k = 0; k < self->nwords; k++)
        an_aw_store(&self->cell[k], 0);
    Py_RETURN_NONE;
}

/* The amount of inc/dec (1 when not given) of a metric with a cell; -1 with
 * the error set. */
static int
step_amount(metricobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
            double *v)
{
    *v = 1.0;
    if ((nargs != 0 || kwnames != NULL) && get_amount(args, nargs, kwnames, 1.0, v) < 0)
        return -1;
    if (self->cell == NULL) {
        no_cell(self);
        return -1;
    }
    return 0;
}

/* ---- counter --------------------------------------------------------------- */

static PyObject *
counter_inc(metricobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double v;
    if (step_amount(self, args, nargs, kwnames, &v) < 0)
        return NULL;
    if (!(v >= 0.0 && v < INFINITY)) /* NaN and +Inf would poison the counter for good */
        return an_raise_ctx(metric_state((PyObject *)self), AN_ERR_INVALID_ARG, NULL,
                            "counters can only be incremented by finite non-negative amounts");
    an_aw_add_f64(self->cell, v);
    Py_RETURN_NONE;
}

/* ---- gauge ----------------------------------------------------------------- */

static inline double
gauge_mark(const metricobject *self)
{
    return self->mark_time ? an_wall_time() : 1.0;
}

static PyObject *
gauge_inc(metricobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double v;
    if (step_amount(self, args, nargs, kwnames, &v) < 0)
        return NULL;
    an_gauge_add(self->cell, v, gauge_mark(self));
    Py_RETURN_NONE;
}

static PyObject *
gauge_dec(metricobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double v;
    if (step_amount(self, args, nargs, kwnames, &v) < 0)
        return NULL;
    an_gauge_add(self->cell, -v, gauge_mark(self));
    Py_RETURN_NONE;
}

static PyObject *
gauge_set(metricobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double v;
    if (nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0) != 1)
        return PyErr_Format(PyExc_TypeError, "set(value)");
    if (get_amount(args, nargs, kwnames, 0.0, &v) < 0)
        return NULL;
    if (self->cell == NULL)
        return no_cell(self);
    an_gauge_set(self->cell, v, gauge_mark(self));
    Py_RETURN_NONE;
}

static PyObject *
gauge_set_to_current_time(metricobject *self, PyObject *unused)
{
    (void)unused;
    if (self->cell == NULL)
        return no_cell(self);
    double now = an_wall_time();
    an_gauge_set(self->cell, now, self->mark_time ? now : 1.0);
    Py_RETURN_NONE;
}

static PyObject *
gauge_set_max(metricobject *self, PyObject *arg)
{
    double v = PyFloat_AsDouble(arg);
    if (v == -1.0 && PyErr_Occurred())
        return NULL;
    if (self->cell == NULL)
        return no_cell(self);
    an_aw_max_f64(&self->cell[0], v);
    an_aw_store_f64(&self->cell[1], gauge_mark(self));
    Py_RETURN_NONE;
}

/* ---- histogram -------------------------------------------------------------- */

/* The amount of observe (required, not NaN) of a metric with a cell; a lone
 * float is the fast path.  -1 with the error set. */
static int
observed_amount(metricobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                double *v)
{
    if (nargs == 1 && kwnames == NULL && PyFloat_CheckExact(args[0])) {
        *v = PyFloat_AS_DOUBLE(args[0]);
    } else {
        if (nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0) < 1) {
            PyErr_Format(PyExc_TypeError, "observe(amount)");
            return -1;
        }
        if (get_amount(args, nargs, kwnames, 0.0, v) < 0)
            return -1;
    }
    if (self->cell == NULL) {
        no_cell(self);
        return -1;
    }
    if (*v != *v) {
        observed_nan(self);
        return -1;
    }
    return 0;
}

static PyObject *
histogram_observe(metricobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double v;
    if (observed_amount(self, args, nargs, kwnames, &v) < 0)
        return NULL;
    an_hist_observe(self->cell, self->bounds, (size_t)self->nbounds, v);
    Py_RETURN_NONE;
}

/* ---- summary ---------------------------------------------------------------- */

static PyObject *
summary_observe(metricobject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double v;
    if (observed_amount(self, args, nargs, kwnames, &v) < 0)
        return NULL;
    an_sketch_add(self->cell, v);
    Py_RETURN_NONE;
}

static int
parse_qs(PyObject *obj, double **qs, Py_ssize_t *n)
{
    PyObject *seq = PySequence_Fast(obj, "quantiles must be a sequence");
    if (seq == NULL)
        return -1;
    *n = PySequence_Fast_GET_SIZE(seq);
    *qs = (double *)PyMem_Malloc(sizeof(double) * (size_t)(*n ? *n : 1));
    if (*qs == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        (*qs)[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if ((*qs)[i] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(*qs);
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

static PyObject *
float_list(const double *v, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyFloat_FromDouble(v[i]);
        if (f == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, f);
    }
    return list;
}

/* _quantiles(qs) -> list[float] from this cell. */
static PyObject *
summary_quantiles(metricobject *self, PyObject *arg)
{
    if (self->cell == NULL)
        return no_cell(self);
    double *qs;
    Py_ssize_t n;
    if (parse_qs(arg, &qs, &n) < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        qs[i] = an_sketch_quantile(self->cell, qs[i]);
    PyObject *r = float_list(qs, n);
    PyMem_Free(qs);
    return r;
}

/* _words() -> bytes: a copy of the whole cell (for merging sketches). */
static PyObject *
metric_words(metricobject *self, PyObject *unused)
{
    (void)unused;
    if (self->cell == NULL)
        return no_cell(self);
    PyObject *b = PyBytes_FromStringAndSize(NULL, self->nwords * 8);
    if (b == NULL)
        return NULL;
    double *out = (double *)PyBytes_AS_STRING(b);
    for (Py_ssize_t k = 0; k < self->nwords; k++)
        out[k] = an_aw_load_f64(&self->cell[k]);
    return b;
}

/* sketch_quantiles(words, qs): words a buffer of float64 (or a list of float)
 * holding a whole sketch cell (combined copies, merged sketches). */
static PyObject *
py_sketch_quantiles(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "sketch_quantiles(words, qs)");
    double *cell = (double *)PyMem_Malloc(sizeof(double) * AN_SKETCH_WORDS);
    if (cell == NULL)
        return PyErr_NoMemory();
    PyObject *r = NULL;
    double *qs = NULL;
    Py_ssize_t n;
    if (PyObject_CheckBuffer(args[0])) {
        Py_buffer view;
        if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
            goto done;
        if (view.len != (Py_ssize_t)(AN_SKETCH_WORDS * 8)) {
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_ValueError, "a sketch is %u float64 words", AN_SKETCH_WORDS);
            goto done;
        }
        memcpy(cell, view.buf, AN_SKETCH_WORDS * 8);
        PyBuffer_Release(&view);
    } else {
        PyObject *seq = PySequence_Fast(args[0], "words must be a buffer or a sequence");
        if (seq == NULL)
            goto done;
        if (PySequence_Fast_GET_SIZE(seq) != (Py_ssize_t)AN_SKETCH_WORDS) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "a sketch is %u words", AN_SKETCH_WORDS);
            goto done;
        }
        for (Py_ssize_t i = 0; i < (Py_ssize_t)AN_SKETCH_WORDS; i++) {
            cell[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
            if (cell[i] == -1.0 && PyErr_Occurred()) {
                Py_DECREF(seq);
                goto done;
            }
        }
        Py_DECREF(seq);
    }
    if (parse_qs(args[1], &qs, &n) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++)
        qs[i] = an_sketch_quantile_f64(cell, qs[i]);
    r = float_list(qs, n);
done:
    PyMem_Free(qs);
    PyMem_Free(cell);
    return r;
}

static PyObject *
py_hist_index(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "hist_index(bounds, value)");
    double *b;
    Py_ssize_t n;
    if (parse_qs(args[0], &b, &n) < 0)
        return NULL;
    double v = PyFloat_AsDouble(args[1]);
    if (v == -1.0 && PyErr_Occurred()) {
        PyMem_Free(b);
        return NULL;
    }
    size_t i = an_hist_index(b, (size_t)n, v);
    PyMem_Free(b);
    return PyLong_FromSize_t(i);
}

/* ---- exposition ------------------------------------------------------------------------ */

/* Appends v as Prometheus writes floats (Go's formatting, prometheus_client's
 * rule): +Inf, -Inf, NaN, Python's shortest repr, and for positive numbers of
 * more than 6 integer digits the exponent form ("1.5e+07"). */
static int
format_go_float(double v, char *out, size_t cap)
{
    if (isinf(v))
        return snprintf(out, cap, "%s", v > 0 ? "+Inf" : "-Inf");
    if (isnan(v))
        return snprintf(out, cap, "NaN");
    char *r = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (r == NULL)
        return -1;
    int n;
    char *dot = strchr(r, '.');
    if (v > 0 && dot != NULL && dot - r > 6 && strchr(r, 'e') == NULL) {
        /* mantissa = first digit . remaining digits, trailing zeros and dot stripped */
        int intdigits = (int)(dot - r);
        char mant[64];
        size_t m = 0;
        mant[m++] = r[0];
        mant[m++] = '.';
        for (char *p = r + 1; *p && m < sizeof(mant) - 1; p++)
            if (*p != '.')
                mant[m++] = *p;
        while (m > 0 && (mant[m - 1] == '0' || mant[m - 1] == '.'))
            m--;
        mant[m] = '\0';
        n = snprintf(out, cap, "%se+%02d", mant, intdigits - 1);
    } else {
        n = snprintf(out, cap, "%s", r);
    }
    PyMem_Free(r);
    return n;
}

/* Appends "<prefix><value>\n" to the growing *buf (capacity *cap, *len
 * used), leaving room for extra more bytes; -1 when out of memory (the error
 * set) or the value cannot be formatted. */
static int
render_line(char **buf, size_t *cap, size_t *len, const char *prefix, size_t plen, double v,
            size_t extra)
{
    size_t need = *len + plen + extra + 80;
    if (need > *cap) {
        size_t c = *cap;
        while (c < need)
            c *= 2;
        char *nb = (char *)PyMem_Realloc(*buf, c);
        if (nb == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        *buf = nb;
        *cap = c;
    }
    memcpy(*buf + *len, prefix, plen);
    *len += plen;
    int w = format_go_float(v, *buf + *len, 64);
    if (w < 0)
        return -1;
    *len += (size_t)w;
    (*buf)[(*len)++] = '\n';
    return 0;
}

/* render_cells(children, prefixes, word, extras=None) -> str: for each child
 * (a metric with a cell), prefix + its word as a Prometheus float + "\n",
 * then extras[i] when given (e.g. the OpenMetrics _created line). */
static PyObject *
py_render_cells(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = an_get_state(module);
    if (nargs < 3 || nargs > 4 || !PyList_Check(args[0]) || !PyList_Check(args[1]))
        return PyErr_Format(PyExc_TypeError, "render_cells(children, prefixes, word, extras=None)");
    PyObject *children = args[0], *prefixes = args[1];
    PyObject *extras = nargs > 3 && args[3] != Py_None ? args[3] : NULL;
    Py_ssize_t word = PyLong_AsSsize_t(args[2]);
    if (word == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(children);
    if (PyList_GET_SIZE(prefixes) != n || (extras && (!PyList_Check(extras) || PyList_GET_SIZE(extras) != n)))
        return PyErr_Format(PyExc_ValueError, "children, prefixes and extras differ in length");
    size_t cap = 4096, len = 0;
    char *buf = (char *)PyMem_Malloc(cap);
    if (buf == NULL)
        return PyErr_NoMemory();
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *child = PyList_GET_ITEM(children, i);
        int ok = 0;
        for (int k = 0; k < 4 && !ok; k++)
            ok = st->metric_types[k] != NULL &&
                 PyObject_TypeCheck(child, (PyTypeObject *)st->metric_types[k]);
        if (!ok) {
            PyErr_SetString(PyExc_TypeError, "render_cells: not a metric");
            goto done;
        }
        metricobject *m = (metricobject *)child;
        if (m->cell == NULL || word < 0 || word >= m->nwords) {
            PyErr_SetString(PyExc_ValueError, "render_cells: metric without that word");
            goto done;
        }
        Py_ssize_t plen, elen = 0;
        const char *p = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(prefixes, i), &plen);
        const char *e = NULL;
        if (p == NULL)
            goto done;
        if (extras != NULL && (e = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(extras, i), &elen)) == NULL)
            goto done;
        if (render_line(&buf, &cap, &len, p, (size_t)plen, an_aw_load_f64(&m->cell[word]),
                        (size_t)elen) < 0)
            goto done;
        if (e != NULL) {
            memcpy(buf + len, e, (size_t)elen);
            len += (size_t)elen;
        }
    }
    result = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)len, "strict");
done:
    PyMem_Free(buf);
    return result;
}

/* render_arena(arena, ids, prefixes, word, nwords) -> str: like render_cells
 * for records of a shared arena, each value combined over every worker by the
 * record's fold (an_arena_read of nwords words, word printed). */
static PyObject *
py_render_arena(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    an_state *st = an_get_state(module);
    if (nargs != 5 || !PyList_Check(args[1]) || !PyList_Check(args[2]))
        return PyErr_Format(PyExc_TypeError, "render_arena(arena, ids, prefixes, word, nwords)");
    an_arena *a = an_py_arena(st, args[0]);
    if (a == NULL)
        return NULL;
    PyObject *ids = args[1], *prefixes = args[2];
    Py_ssize_t word = PyLong_AsSsize_t(args[3]), nwords = PyLong_AsSsize_t(args[4]);
    if ((word == -1 || nwords == -1) && PyErr_Occurred())
        return NULL;
    if (word < 0 || nwords <= word || nwords > 64)
        return PyErr_Format(PyExc_ValueError, "render_arena: word %zd of %zd", word, nwords);
    Py_ssize_t n = PyList_GET_SIZE(ids);
    if (PyList_GET_SIZE(prefixes) != n)
        return PyErr_Format(PyExc_ValueError, "ids and prefixes differ in length");
    size_t cap = 4096, len = 0;
    char *buf = (char *)PyMem_Malloc(cap);
    if (buf == NULL)
        return PyErr_NoMemory();
    PyObject *result = NULL;
    double vals[64];
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long id = PyLong_AsUnsignedLong(PyList_GET_ITEM(ids, i));
        if (id == (unsigned long)-1 && PyErr_Occurred())
            goto done;
        memset(vals, 0, sizeof(vals));
        an_status s = an_arena_read(a, (uint32_t)id, vals, (uint32_t)nwords);
        if (s != AN_OK) {
            an_raise_status(st, s, "cannot read arena record %lu", id);
            goto done;
        }
        Py_ssize_t plen;
        const char *p = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(prefixes, i), &plen);
        if (p == NULL)
            goto done;
        if (render_line(&buf, &cap, &len, p, (size_t)plen, vals[word], 0) < 0)
            goto done;
    }
    result = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)len, "strict");
done:
    PyMem_Free(buf);
    return result;
}

/* ---- the decoder's counters ------------------------------------------------------ */

/* Process-wide, updated with relaxed atomics from any thread (GIL or not) and
 * read at scrape time: [format][status] -> decodes, encoded bytes, pixels; a
 * "refused" slot per format for outputs refused before decoding (budget, out=);
 * and per format a time histogram over DECODE_BOUNDS. */
#define DECODE_NB 12
static const double decode_bounds[DECODE_NB] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                0.05,   0.1,   0.25,   0.5,   1.0,  2.5};
static uint64_t decode_counts[AN_FMT_COUNT][AN_STATUS_COUNT + 1][3];
static uint64_t decode_hist[AN_FMT_COUNT][DECODE_NB + 3];

double
an_decode_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void
an_decode_stats_record(int fmt, an_status status, const char *code, uint64_t nbytes,
                       uint64_t pixels, double seconds)
{
    if (fmt < 0 || fmt >= AN_FMT_COUNT)
        fmt = AN_FMT_UNKNOWN;
    unsigned idx = code != NULL ? AN_STATUS_COUNT : (unsigned)status;
    if (idx > AN_STATUS_COUNT)
        idx = AN_ERR_CORRUPT;
    uint64_t *c = decode_counts[fmt][idx];
    __atomic_add_fetch(&c[0], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&c[1], nbytes, __ATOMIC_RELAXED);
    __atomic_add_fetch(&c[2], pixels, __ATOMIC_RELAXED);
    an_hist_observe(decode_hist[fmt], decode_bounds, DECODE_NB, seconds);
}

/* decode_stats() -> [(format, outcome, decodes, bytes, pixels)] (non-zero rows). */
static PyObject *
py_decode_stats(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (int f = 0; f < AN_FMT_COUNT; f++) {
        for (unsigned s = 0; s <= AN_STATUS_COUNT; s++) {
            uint64_t n = __atomic_load_n(&decode_counts[f][s][0], __ATOMIC_RELAXED);
            if (n == 0)
                continue;
            const char *outcome = s == AN_STATUS_COUNT ? "refused" : an_error_lookup((an_status)s)->code;
            PyObject *row = Py_BuildValue(
                "(ssKKK)", an_format_name((an_format)f), outcome, (unsigned long long)n,
                (unsigned long long)__atomic_load_n(&decode_counts[f][s][1], __ATOMIC_RELAXED),
                (unsigned long long)__atomic_load_n(&decode_counts[f][s][2], __ATOMIC_RELAXED));
            if (row == NULL || PyList_Append(list, row) < 0) {
                Py_XDECREF(row);
                Py_DECREF(list);
                return NULL;
            }
            Py_DECREF(row);
        }
    }
    return list;
}

/* decode_time_histograms() -> (bounds, [(format, [bucket counts..., sum, count])]). */
static PyObject *
py_decode_time_histograms(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    PyObject *bounds = float_list(decode_bounds, DECODE_NB), *rows = PyList_New(0);
    if (bounds == NULL || rows == NULL)
        goto error;
    for (int f = 0; f < AN_FMT_COUNT; f++) {
        double v[DECODE_NB + 3];
        v[DECODE_NB + 2] = 0.0;
        for (int k = 0; k < DECODE_NB + 2; k++)
            v[k] = an_aw_load_f64(&decode_hist[f][k]);
        for (int k = 0; k <= DECODE_NB; k++)
            v[DECODE_NB + 2] += v[k]; /* the count: the sum of the buckets */
        if (v[DECODE_NB + 2] == 0.0)
            continue;
        PyObject *vals = float_list(v, DECODE_NB + 3);
        PyObject *row = vals == NULL ? NULL : Py_BuildValue("(sN)", an_format_name((an_format)f), vals);
        if (row == NULL || PyList_Append(rows, row) < 0) {
            Py_XDECREF(row);
            goto error;
        }
        Py_DECREF(row);
    }
    return Py_BuildValue("(NN)", bounds, rows);
error:
    Py_XDECREF(bounds);
    Py_XDECREF(rows);
    return NULL;
}

/* ---- types -------------------------------------------------------------------- */

#define COMMON_METHODS                                                                       \
    {"_attach", (PyCFunction)(void (*)(void))metric_attach, METH_FASTCALL,                   \
     "_attach(source, nwords, bounds=None, mark_time=False)"},                               \
        {"_set_children", (PyCFunction)(void (*)(void))metric_set_children, METH_FASTCALL,   \
         "_set_children(dict, nlabels)"},                                                    \
        {"labels", (PyCFunction)(void (*)(void))metric_labels,                               \
         METH_FASTCALL | METH_KEYWORDS, "labels(*values, **labels) -> child"},                \
        {"_get", (PyCFunction)metric_get, METH_NOARGS, "_get() -> list[float]"},             \
        {"_value", (PyCFunction)metric_value, METH_NOARGS, "_value() -> float (word 0)"},    \
        {"_words", (PyCFunction)metric_words, METH_NOARGS, "_words() -> bytes"},             \
        {"_reset", (PyCFunction)metric_reset, METH_NOARGS, "_reset(): zero the cell"}

static PyMethodDef counter_methods[] = {
    COMMON_METHODS,
    {"inc", (PyCFunction)(void (*)(void))counter_inc, METH_FASTCALL | METH_KEYWORDS,
     "inc(amount=1): add a non-negative amount."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef gauge_methods[] = {
    COMMON_METHODS,
    {"inc", (PyCFunction)(void (*)(void))gauge_inc, METH_FASTCALL | METH_KEYWORDS, "inc(amount=1)"},
    {"dec", (PyCFunction)(void (*)(void))gauge_dec, METH_FASTCALL | METH_KEYWORDS, "dec(amount=1)"},
    {"set", (PyCFunction)(void (*)(void))gauge_set, METH_FASTCALL | METH_KEYWORDS, "set(value)"},
    {"set_to_current_time", (PyCFunction)gauge_set_to_current_time, METH_NOARGS,
     "set_to_current_time(): the Unix time now."},
    {"_set_max", (PyCFunction)gauge_set_max, METH_O, "_set_max(v): value = max(value, v)"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef histogram_methods[] = {
    COMMON_METHODS,
    {"observe", (PyCFunction)(void (*)(void))histogram_observe, METH_FASTCALL | METH_KEYWORDS,
     "observe(amount)"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef summary_methods[] = {
    COMMON_METHODS,
    {"observe", (PyCFunction)(void (*)(void))summary_observe, METH_FASTCALL | METH_KEYWORDS,
     "observe(amount)"},
    {"_quantiles", (PyCFunction)summary_quantiles, METH_O, "_quantiles(qs) -> list[float]"},
    {NULL, NULL, 0, NULL},
};

static PyObject *
metric_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    metricobject *self = (metricobject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    an_state *st = metric_state((PyObject *)self);
    self->kind = K_COUNTER;
    for (int k = 0; k < 4 && st != NULL; k++) {
        for (PyTypeObject *tp = type; tp != NULL; tp = tp->tp_base)
            if ((PyObject *)tp == st->metric_types[k])
                self->kind = k;
    }
    return (PyObject *)self;
}

static int
metric_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    (void)args;
    (void)kwargs;
    return 0;
}

#define METRIC_SLOTS(methods)                                                                \
    {Py_tp_new, metric_new}, {Py_tp_init, metric_init}, {Py_tp_dealloc, metric_dealloc},     \
        {Py_tp_traverse, metric_traverse}, {Py_tp_clear, metric_clear},                      \
        {Py_tp_methods, methods},                                                            \
    {                                                                                        \
        0, NULL                                                                              \
    }

static PyType_Slot counter_slots[] = {METRIC_SLOTS(counter_methods)};
static PyType_Slot gauge_slots[] = {METRIC_SLOTS(gauge_methods)};
static PyType_Slot histogram_slots[] = {METRIC_SLOTS(histogram_methods)};
static PyType_Slot summary_slots[] = {METRIC_SLOTS(summary_methods)};

#define METRIC_SPEC(pyname, slot_table)                                                           \
    {                                                                                        \
        .name = "amulet_native._core." pyname, .basicsize = sizeof(metricobject),           \
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,             \
        .slots = slot_table,                                                                  \
    }

static PyType_Spec metric_specs[4] = {
    METRIC_SPEC("CounterCore", counter_slots),
    METRIC_SPEC("GaugeCore", gauge_slots),
    METRIC_SPEC("HistogramCore", histogram_slots),
    METRIC_SPEC("SummaryCore", summary_slots),
};

static PyMethodDef metrics_functions[] = {
    {"sketch_quantiles", (PyCFunction)(void (*)(void))py_sketch_quantiles, METH_FASTCALL,
     "sketch_quantiles(words, qs) -> list[float]"},
    {"hist_index", (PyCFunction)(void (*)(void))py_hist_index, METH_FASTCALL,
     "hist_index(bounds, value) -> int: the bucket of value."},
    {"render_cells", (PyCFunction)(void (*)(void))py_render_cells, METH_FASTCALL,
     "render_cells(children, prefixes, word, extras=None) -> str: exposition lines."},
    {"render_arena", (PyCFunction)(void (*)(void))py_render_arena, METH_FASTCALL,
     "render_arena(arena, ids, prefixes, word, nwords) -> str: exposition lines."},
    {"decode_stats", py_decode_stats, METH_NOARGS,
     "decode_stats() -> [(format, outcome, decodes, bytes, pixels)]"},
    {"decode_time_histograms", py_decode_time_histograms, METH_NOARGS,
     "decode_time_histograms() -> (bounds, [(format, [buckets..., sum, count])])"},
    {NULL, NULL, 0, NULL},
};

int
an_metrics_exec(PyObject *m, an_state *st)
{
    for (int k = 0; k < 4; k++) {
        st->metric_types[k] = PyType_FromModuleAndSpec(m, &metric_specs[k], NULL);
        if (st->metric_types[k] == NULL)
            return -1;
        const char *name = strrchr(metric_specs[k].name, '.') + 1;
        if (PyModule_AddObjectRef(m, name, st->metric_types[k]) < 0)
            return -1;
    }
    if (PyModule_AddFunctions(m, metrics_functions) < 0)
        return -1;
    if (PyModule_AddIntConstant(m, "SKETCH_WORDS", AN_SKETCH_WORDS) < 0)
        return -1;
    const char *names[2] = {"SKETCH_ALPHA", "SKETCH_MAX"};
    double values[2] = {AN_SKETCH_ALPHA, an_sketch_max_value()};
    for (int i = 0; i < 2; i++) {
        PyObject *f = PyFloat_FromDouble(values[i]);
        int r = f == NULL ? -1 : PyModule_AddObjectRef(m, names[i], f);
        Py_XDECREF(f);
        if (r < 0)
            return -1;
    }
    return 0;
}
