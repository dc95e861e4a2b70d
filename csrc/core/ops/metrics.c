/*
 * metrics.c - the update paths of counters, gauges and histograms on cells
 * (see an_metrics.h).  Histogram buckets are found by binary search over the
 * bounds; the count of the bucket, the sum and the total count are three
 * independent atomics, so a scrape may see one observation half-counted, but
 * nothing is ever lost or counted twice.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "an_metrics.h"

#include <time.h>

#include "an_arena.h"

size_t
an_hist_index(const double *bounds, size_t n, double v)
{
    size_t lo = 0, hi = n;
    if (v != v)
        return n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bounds[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void
an_hist_observe(uint64_t *cell, const double *bounds, size_t n, double v)
{
    size_t i = an_hist_index(bounds, n, v);
    an_aw_add_f64(&cell[i], 1.0);
    an_aw_add_f64(&cell[n + 1], v);
}

void
an_gauge_set(uint64_t *cell, double v, double mark)
{
    an_aw_store_f64(&cell[0], v);
    an_aw_store_f64(&cell[1], mark);
}

void
an_gauge_add(uint64_t *cell, double d, double mark)
{
    an_aw_add_f64(&cell[0], d);
    an_aw_store_f64(&cell[1], mark);
}

double
an_wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
