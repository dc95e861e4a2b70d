/*
 * an_ops_py.h - private declarations shared by the ops bindings (arena.c,
 * metrics.c): the Arena object, so that metric cells can point into a shared
 * arena and keep it alive.
 */
#ifndef AN_OPS_PY_H
#define AN_OPS_PY_H

#include "../an_py.h"

#include "../../core/ops/an_arena.h"

typedef struct an_arena_object {
    PyObject_HEAD
    an_arena *arena;     /* NULL once closed */
    int detached;        /* close() gave up the slot; the mapping lives on */
    struct an_arena_object *next_open; /* the fork list (see arena.c) */
    PyObject *weakrefs;
} an_arena_object;

/* The open arena behind obj (an _core.Arena), or NULL with an exception set
 * (TypeError for another type, ArenaError when closed). */
an_arena *an_py_arena(an_state *st, PyObject *obj);
/* 1 when obj is an _core.Arena. */
int an_py_is_arena(an_state *st, PyObject *obj);

#endif /* AN_OPS_PY_H */
