/*
 * sketch.c - the mergeable quantile sketch of an_metrics.h (DDSketch's
 * logarithmic mapping over fixed dense bins).
 *
 * Fixed bins instead of DDSketch's growable or collapsing stores: the cell must
 * have one size for its whole life (it can live in the shared arena, where
 * records never move) and must be updatable by concurrent threads and
 * processes with plain atomics.  2 x 2432 bins at 1% cover 1e-9 .. 1.29e12 in
 * 38 KiB; values outside are counted as zero or clamped, and the relative
 * error bound is stated for the covered range only.
 */
#include <math.h>

#include "an_arena.h"
#include "an_metrics.h"

/* gamma = (1 + a) / (1 - a) = 1.0202...; LOG_GAMMA = ln(gamma).  Bin b holds
 * magnitudes in (gamma^(b + OFFSET - 1), gamma^(b + OFFSET)]; OFFSET puts
 * AN_SKETCH_MIN in bin 0.  (Checked against AN_SKETCH_ALPHA in the C tests.) */
#define LOG_GAMMA 0.020000666706669435
#define OFFSET (-1037.0)

static double
log_gamma(void)
{
    return LOG_GAMMA;
}

static double
offset(void)
{
    return OFFSET;
}

static uint32_t
bin_of(double mag)
{
    double k = ceil(log(mag) * (1.0 / LOG_GAMMA)) - offset();
    if (k < 0.0)
        return 0;
    if (k >= (double)AN_SKETCH_BINS)
        return AN_SKETCH_BINS - 1;
    return (uint32_t)k;
}

static double
value_of(uint32_t bin)
{
    const double g = (1.0 + AN_SKETCH_ALPHA) / (1.0 - AN_SKETCH_ALPHA);
    return 2.0 * exp(((double)bin + offset()) * log_gamma()) / (g + 1.0);
}

double
an_sketch_max_value(void)
{
    return exp(((double)AN_SKETCH_BINS - 1.0 + offset()) * log_gamma());
}

void
an_sketch_add(uint64_t *cell, double v)
{
    if (v != v)
        return;
    double mag = fabs(v);
    if (mag < AN_SKETCH_MIN)
        an_aw_add_f64(&cell[2], 1.0);
    else if (v > 0)
        an_aw_add_f64(&cell[AN_SKETCH_HEADER + AN_SKETCH_BINS + bin_of(mag)], 1.0);
    else
        an_aw_add_f64(&cell[AN_SKETCH_HEADER + bin_of(mag)], 1.0);
    an_aw_add_f64(&cell[1], v);
    an_aw_add_f64(&cell[0], 1.0);
}

/* Nearest rank over the bins in value order: negatives from the largest
 * magnitude down, zeros, positives up.  get(i) reads word i. */
#define QUANTILE_BODY(GET)                                                          \
    double total = 0.0;                                                             \
    for (uint32_t k = 2; k < AN_SKETCH_WORDS; k++)                                  \
        if (k != 3)                                                                 \
            total += GET(k);                                                        \
    if (total <= 0.0 || q != q)                                                     \
        return NAN;                                                                 \
    if (q < 0.0)                                                                    \
        q = 0.0;                                                                    \
    if (q > 1.0)                                                                    \
        q = 1.0;                                                                    \
    double rank = floor(q * (total - 1.0)), seen = 0.0;                             \
    for (uint32_t b = AN_SKETCH_BINS; b-- > 0;) {                                   \
        seen += GET(AN_SKETCH_HEADER + b);                                          \
        if (seen > rank)                                                            \
            return -value_of(b);                                                    \
    }                                                                               \
    seen += GET(2);                                                                 \
    if (seen > rank)                                                                \
        return 0.0;                                                                 \
    for (uint32_t b = 0; b < AN_SKETCH_BINS; b++) {                                 \
        seen += GET(AN_SKETCH_HEADER + AN_SKETCH_BINS + b);                         \
        if (seen > rank)                                                            \
            return value_of(b);                                                     \
    }                                                                               \
    return value_of(AN_SKETCH_BINS - 1);

double
an_sketch_quantile(const uint64_t *cell, double q)
{
#define GET_ATOMIC(k) an_aw_load_f64(&cell[(k)])
    QUANTILE_BODY(GET_ATOMIC)
#undef GET_ATOMIC
}

double
an_sketch_quantile_f64(const double *cell, double q)
{
#define GET_PLAIN(k) cell[(k)]
    QUANTILE_BODY(GET_PLAIN)
#undef GET_PLAIN
}
