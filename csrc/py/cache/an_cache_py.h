/*
 * an_cache_py.h - what cache.c shares with cached.c (the @cached hit path).
 */
#ifndef AN_CACHE_PY_H
#define AN_CACHE_PY_H

#include "../an_py.h"

/* True when obj is a native Cache (the C type or a subclass of it). */
int an_cache_check(PyObject *obj);

/* Looks key up in a native Cache exactly like Cache.get (purges expired
 * entries, counts a hit or a miss, marks the entry recently used).  Returns a
 * new reference to the value; NULL with no exception set on a miss; NULL with
 * an exception set on error (unhashable key, a raising __eq__ or timer). */
PyObject *an_cache_lookup(PyObject *cache, PyObject *key);

/* cached.c: registers CachedFunction and make_key on the module. */
int an_cached_exec(PyObject *m, an_state *st);
PyObject *an_py_make_key(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif /* AN_CACHE_PY_H */
