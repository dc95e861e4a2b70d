/*
 * an_metrics.h - the hot path of the metric types and the mergeable quantile
 * sketch, over "cells": arrays of 64-bit words holding doubles, either in
 * process memory or in this worker's copy of a shared-arena record.
 *
 * Every update is one or a few atomics on the cell, so threads never lock and
 * a worker killed between two updates leaves every finished update counted.
 * Cell layouts (words):
 *
 *   counter    [value]
 *   gauge      [value, mark]      mark: 1 once written, or the wall-clock time
 *                                 of the last write (mode "mostrecent"), so the
 *                                 arena's MAX/MIN/LATEST folds skip unset copies
 *   histogram  [bucket_0 .. bucket_n, sum, count]   bucket_i counts values in
 *                                 (bound_{i-1}, bound_i]; bucket_n is +Inf;
 *                                 count is left 0: readers sum the buckets
 *   summary    the sketch: [count, sum, zero, max, neg bins.., pos bins..]
 */
#ifndef AN_METRICS_H
#define AN_METRICS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- histogram ------------------------------------------------------------- */

/* Index of the first bound >= v among n ascending finite bounds (n when v is
 * above them all, i.e. the +Inf bucket).  NaN goes to +Inf.  Binary search. */
size_t an_hist_index(const double *bounds, size_t n, double v);
/* Counts v into a histogram cell of n + 3 words (n finite bounds): its bucket
 * and the sum (the count word is not written; it is the sum of the buckets). */
void an_hist_observe(uint64_t *cell, const double *bounds, size_t n, double v);

/* ---- gauge ------------------------------------------------------------------ */

void an_gauge_set(uint64_t *cell, double v, double mark);
void an_gauge_add(uint64_t *cell, double d, double mark);
/* Wall-clock seconds (CLOCK_REALTIME) as a double. */
double an_wall_time(void);

/* ---- sketch ------------------------------------------------------------------ */

/* A DDSketch-style log-bucketed sketch with relative accuracy ALPHA: every
 * positive value v in [AN_SKETCH_MIN, AN_SKETCH_MAX] falls in bin
 * i = ceil(log_gamma(v)), gamma = (1 + ALPHA) / (1 - ALPHA), whose
 * representative 2 gamma^i / (gamma + 1) is within ALPHA of v relatively;
 * negative values mirror into their own bins, |v| < MIN counts as zero,
 * |v| > MAX is clamped into the last bin.  Bins are counts stored as doubles,
 * so two sketches merge by adding word for word -- exactly the sketch of the
 * union of the data, which is what lets several workers' Summaries merge. */
#define AN_SKETCH_ALPHA 0.01
#define AN_SKETCH_BINS 2432u /* per sign: covers 1e-9 .. 1.29e12 */
#define AN_SKETCH_MIN 1e-9
#define AN_SKETCH_HEADER 4u /* count, sum, zero count, max |v| seen (unused: 0) */
#define AN_SKETCH_WORDS (AN_SKETCH_HEADER + 2u * AN_SKETCH_BINS)

/* Adds v (NaN is ignored). */
void an_sketch_add(uint64_t *cell, double v);
/* The q-quantile (0 <= q <= 1) of the values in cell (a plain or atomic copy;
 * read with atomic loads), NaN when empty.  Nearest-rank on the bins. */
double an_sketch_quantile(const uint64_t *cell, double q);
/* Same over a combined copy held as doubles (e.g. an_arena_read output). */
double an_sketch_quantile_f64(const double *cell, double q);
/* The largest value representable without clamping. */
double an_sketch_max_value(void);

#ifdef __cplusplus
}
#endif
#endif /* AN_METRICS_H */
