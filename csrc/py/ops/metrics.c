/*
 * metrics.c (binding) - native metric cells (filled in by the metrics commit).
 */
#include "an_ops_py.h"

int
an_metrics_exec(PyObject *m, an_state *st)
{
    (void)m;
    (void)st;
    return 0;
}
