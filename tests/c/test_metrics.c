/*
 * test_metrics.c - the metric cells and the sketch (csrc/core/ops/metrics.c,
 * sketch.c): bucket search, exact counts under concurrent threads (run under
 * TSan), the sketch's relative error and merge-by-addition, and cells living
 * in an arena shared by threads of several "workers".
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ops/an_arena.h"
#include "ops/an_metrics.h"

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void
test_hist_index(void)
{
    current = "hist_index";
    double b[] = {0.1, 0.5, 1.0, 10.0};
    CHECK(an_hist_index(b, 4, 0.05) == 0);
    CHECK(an_hist_index(b, 4, 0.1) == 0); /* le: upper bound inclusive */
    CHECK(an_hist_index(b, 4, 0.2) == 1);
    CHECK(an_hist_index(b, 4, 10.0) == 3);
    CHECK(an_hist_index(b, 4, 11.0) == 4);
    CHECK(an_hist_index(b, 4, NAN) == 4);
    CHECK(an_hist_index(b, 4, -INFINITY) == 0);
    CHECK(an_hist_index(b, 0, 1.0) == 0);
}

#define THREADS 8
#define PER_THREAD 20000

static double bounds[] = {1, 2, 4, 8, 16, 32, 64};
static uint64_t hist[7 + 3];
static uint64_t sketch[AN_SKETCH_WORDS];
static uint64_t counter[1];

static void *
observer(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        double v = (double)((i + id) % 100);
        an_hist_observe(hist, bounds, 7, v);
        an_sketch_add(sketch, v);
        an_aw_add_f64(counter, 1.0);
    }
    return NULL;
}

static void
test_threads(void)
{
    current = "threads";
    pthread_t th[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, observer, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    double total = THREADS * (double)PER_THREAD;
    CHECK(an_aw_load_f64(counter) == total);
    CHECK(an_aw_load_f64(&sketch[0]) == total);
    double buckets = 0;
    for (int i = 0; i < 8; i++)
        buckets += an_aw_load_f64(&hist[i]);
    CHECK(buckets == total);
    /* values 0..99, each equally often: bucket le=1 holds 0 and 1 */
    CHECK(an_aw_load_f64(&hist[0]) == total * 2 / 100);
    double sum = 0;
    for (long id = 0; id < THREADS; id++)
        for (int i = 0; i < PER_THREAD; i++)
            sum += (double)((i + id) % 100);
    CHECK(an_aw_load_f64(&hist[8]) == sum);
}

static double
exact_q(double *sorted, size_t n, double q)
{
    return sorted[(size_t)floor(q * (double)(n - 1))];
}

static void
test_sketch_error(void)
{
    current = "sketch_error";
    size_t n = 20000;
    double *v = malloc(n * sizeof(double));
    uint64_t *cell = calloc(AN_SKETCH_WORDS, 8);
    uint64_t *half1 = calloc(AN_SKETCH_WORDS, 8), *half2 = calloc(AN_SKETCH_WORDS, 8);
    srand(7);
    for (int dist = 0; dist < 4; dist++) {
        memset(cell, 0, AN_SKETCH_WORDS * 8);
        memset(half1, 0, AN_SKETCH_WORDS * 8);
        memset(half2, 0, AN_SKETCH_WORDS * 8);
        for (size_t i = 0; i < n; i++) {
            double u = (rand() + 1.0) / ((double)RAND_MAX + 2.0);
            if (dist == 0)
                v[i] = u * 1000;                 /* uniform */
            else if (dist == 1)
                v[i] = exp(20 * u - 10);         /* log-uniform over 9 decades */
            else if (dist == 2)
                v[i] = (i % 2 ? 1 : -1) * exp(10 * u); /* both signs */
            else
                v[i] = pow(1.0202, (double)(i % 50)) * 1e-3; /* bin edges */
            an_sketch_add(cell, v[i]);
            an_sketch_add(i < n / 3 ? half1 : half2, v[i]);
        }
        qsort(v, n, sizeof(double), cmp_double);
        double qs[] = {0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1};
        for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
            double want = exact_q(v, n, qs[k]), got = an_sketch_quantile(cell, qs[k]);
            CHECK(fabs(got - want) <= AN_SKETCH_ALPHA * fabs(want) * (1 + 1e-9));
        }
        /* merging is adding bins: equal to the sketch of all the data */
        int same = 1;
        for (uint32_t k = 2; k < AN_SKETCH_WORDS; k++)
            same &= an_aw_load_f64(&half1[k]) + an_aw_load_f64(&half2[k]) ==
                    an_aw_load_f64(&cell[k]);
        CHECK(same);
    }
    memset(cell, 0, AN_SKETCH_WORDS * 8);
    CHECK(isnan(an_sketch_quantile(cell, 0.5)));
    an_sketch_add(cell, 0.0);
    an_sketch_add(cell, NAN);
    CHECK(an_sketch_quantile(cell, 0.5) == 0.0);
    CHECK(an_aw_load_f64(&cell[0]) == 1.0);
    free(v);
    free(cell);
    free(half1);
    free(half2);
}

/* Threads of two arena handles (two "workers") write one histogram record;
 * a third thread reads and folds meanwhile. */
typedef struct {
    an_arena *a;
    uint32_t id;
} warg;

static void *
arena_writer(void *p)
{
    warg *w = (warg *)p;
    uint64_t *cell = an_arena_local(w->a, w->id);
    for (int i = 0; i < PER_THREAD; i++)
        an_hist_observe(cell, bounds, 7, (double)(i % 70));
    return NULL;
}

static void *
arena_reader(void *p)
{
    warg *w = (warg *)p;
    double out[10];
    for (int i = 0; i < 300; i++) {
        an_arena_read(w->a, w->id, out, 10);
        an_arena_reclaim(w->a);
    }
    return NULL;
}

static void
test_arena_cells(void)
{
    current = "arena_cells";
    an_arena_config cfg;
    an_arena_config_init(&cfg);
    cfg.max_records = 16;
    cfg.max_slots = 4;
    cfg.slot_units = 64;
    an_arena *a = NULL;
    an_error err = {0};
    CHECK_ST(an_arena_open_anonymous(&a, &cfg, &err), AN_OK);
    if (a == NULL)
        return;
    an_arena_rec r;
    CHECK_ST(an_arena_record(a, "h", 1, 2, AN_FOLD_ADD, &r, &err), AN_OK);
    pthread_t th[4];
    warg args[4];
    for (int i = 0; i < 4; i++) {
        args[i].a = a;
        args[i].id = r.id;
        pthread_create(&th[i], NULL, i < 3 ? arena_writer : arena_reader, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    double out[10];
    CHECK_ST(an_arena_read(a, r.id, out, 10), AN_OK);
    double count = 0;
    for (int k = 0; k < 8; k++)
        count += out[k];
    CHECK(count == 3.0 * PER_THREAD);
    an_arena_close(a);
}

int
main(void)
{
    (void)fault_malloc;
    (void)fault_free;
    test_hist_index();
    test_threads();
    test_sketch_error();
    test_arena_cells();
    printf("test_metrics: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
