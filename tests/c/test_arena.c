/*
 * test_arena.c - the shared arena (csrc/core/ops/arena.c): records, slots,
 * folding of dead workers (real forked processes, SIGKILL included), PID
 * reuse, corruption and foreign files, a full arena, and -- built with TSan
 * as test_arena_tsan -- concurrent writers, readers, creators and folders.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "ops/an_arena.h"

static char dir[256];

static void
path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static an_arena_config
small_config(void)
{
    an_arena_config c;
    an_arena_config_init(&c);
    c.max_records = 64;
    c.max_slots = 8;
    c.key_size = 32;
    c.slot_units = 256;
    return c;
}

static void
test_basic(void)
{
    current = "basic";
    char p[512];
    path_in(p, sizeof(p), "basic.arena");
    an_arena_config c = small_config();
    an_arena *a = NULL, *b = NULL;
    an_error err = {0};
    CHECK_ST(an_arena_open(&a, p, &c, &err), AN_OK);
    CHECK_ST(an_arena_open(&b, p, NULL, &err), AN_OK); /* existing geometry wins */
    if (a == NULL || b == NULL)
        return;
    CHECK(an_arena_my_slot(a) != an_arena_my_slot(b));
    an_arena_rec r1, r2;
    CHECK_ST(an_arena_record(a, "hits", 4, 1, AN_FOLD_ADD, &r1, &err), AN_OK);
    CHECK_ST(an_arena_record(b, "hits", 4, 1, AN_FOLD_ADD, &r2, &err), AN_OK);
    CHECK(r1.id == r2.id);
    CHECK_ST(an_arena_record(b, "hits", 4, 2, AN_FOLD_ADD, &r2, &err), AN_ERR_ARENA_MISMATCH);
    CHECK_ST(an_arena_find(b, "nope", 4, &r2), AN_ERR_ARENA_MISMATCH);
    an_aw_add_f64(an_arena_local(a, r1.id), 2.5);
    an_aw_add_f64(an_arena_local(b, r1.id), 1.5);
    double v[2];
    CHECK_ST(an_arena_read(a, r1.id, v, 1), AN_OK);
    CHECK(v[0] == 4.0);
    /* shared record: one copy */
    an_arena_rec s;
    CHECK_ST(an_arena_record(a, "gcra", 4, 1, AN_FOLD_SHARED, &s, &err), AN_OK);
    CHECK(an_aw_load(an_arena_local(b, s.id)) == 0);
    uint64_t exp = 0;
    CHECK(an_aw_cas(an_arena_local(a, s.id), &exp, 42));
    CHECK(an_aw_load(an_arena_local(b, s.id)) == 42);
    /* gauges: max / min / latest with the "set" marker */
    an_arena_rec g;
    CHECK_ST(an_arena_record(a, "gmax", 4, 1, AN_FOLD_MAX, &g, &err), AN_OK);
    uint64_t *ga = an_arena_local(a, g.id), *gb = an_arena_local(b, g.id);
    an_aw_store_f64(&ga[0], -3.0);
    an_aw_store_f64(&ga[1], 1.0);
    CHECK_ST(an_arena_read(a, g.id, v, 2), AN_OK);
    CHECK(v[0] == -3.0 && v[1] == 1.0); /* unset copies (0) do not win */
    an_aw_store_f64(&gb[0], 7.0);
    an_aw_store_f64(&gb[1], 1.0);
    CHECK_ST(an_arena_read(a, g.id, v, 2), AN_OK);
    CHECK(v[0] == 7.0);
    /* iteration */
    uint32_t cur = 0, n = 0;
    an_arena_rec it;
    while (an_arena_next(a, &cur, &it))
        n++;
    CHECK(n == 3);
    /* closing b folds its copies into the aggregate: totals unchanged */
    an_arena_close(b);
    CHECK_ST(an_arena_read(a, r1.id, v, 1), AN_OK);
    CHECK(v[0] == 4.0);
    CHECK_ST(an_arena_read(a, g.id, v, 2), AN_OK);
    CHECK(v[0] == 7.0);
    an_arena_stats st;
    an_arena_stats_get(a, &st);
    CHECK(st.live_slots == 1 && st.folds == 1 && st.records == 3);
    CHECK_ST(an_arena_check(a, &err), AN_OK);
    an_arena_close(a);
}

static void
test_full(void)
{
    current = "full";
    an_arena_config c = small_config();
    an_arena *a = NULL;
    an_error err = {0};
    CHECK_ST(an_arena_open_anonymous(&a, &c, &err), AN_OK);
    if (a == NULL)
        return;
    an_arena_rec r;
    char key[40];
    int made = 0;
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        if (an_arena_record(a, key, strlen(key), 1, AN_FOLD_ADD, &r, &err) == AN_OK)
            made++;
    }
    CHECK(made == 64);
    CHECK_ST(an_arena_record(a, "k200", 4, 1, AN_FOLD_ADD, &r, &err), AN_ERR_ARENA_FULL);
    an_arena_stats st;
    an_arena_stats_get(a, &st);
    CHECK(st.overflow == 37);
    CHECK_ST(an_arena_record(a, "k1", 2, 1, AN_FOLD_ADD, &r, &err), AN_OK); /* still found */
    an_arena_close(a);
    /* units run out before entries */
    CHECK_ST(an_arena_open_anonymous(&a, &c, &err), AN_OK);
    CHECK_ST(an_arena_record(a, "big", 3, 200, AN_FOLD_ADD, &r, &err), AN_OK);
    CHECK_ST(an_arena_record(a, "big2", 4, 100, AN_FOLD_ADD, &r, &err), AN_ERR_ARENA_FULL);
    CHECK_ST(an_arena_record(a, "small", 5, 56, AN_FOLD_ADD, &r, &err), AN_OK);
    char longkey[64];
    memset(longkey, 'x', sizeof(longkey));
    CHECK_ST(an_arena_record(a, longkey, sizeof(longkey), 1, AN_FOLD_ADD, &r, &err),
             AN_ERR_INVALID_ARG);
    CHECK_ST(an_arena_record(a, "z", 1, 1, 99, &r, &err), AN_ERR_INVALID_ARG);
    an_arena_close(a);
}

static void
write_file(const char *p, const void *data, size_t n)
{
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
        if (write(fd, data, n) != (ssize_t)n)
            n_fail++;
        close(fd);
    }
}

static void
flip_byte(const char *p, off_t off)
{
    int fd = open(p, O_RDWR);
    unsigned char b = 0;
    if (fd < 0 || pread(fd, &b, 1, off) != 1) {
        n_fail++;
    } else {
        b ^= 0x5a;
        if (pwrite(fd, &b, 1, off) != 1)
            n_fail++;
    }
    if (fd >= 0)
        close(fd);
}

static void
test_corrupt(void)
{
    current = "corrupt";
    char p[512];
    an_arena *a = NULL;
    an_error err = {0};
    an_arena_config c = small_config();

    path_in(p, sizeof(p), "foreign.arena");
    write_file(p, "#!/bin/sh\necho not an arena\n", 28);
    CHECK_ST(an_arena_open(&a, p, &c, &err), AN_ERR_ARENA_CORRUPT);
    CHECK(a == NULL);
    write_file(p, "", 0);
    CHECK_ST(an_arena_open(&a, p, &c, &err), AN_ERR_ARENA_CORRUPT);

    /* a real arena, then damage: version, geometry (checksum), truncation */
    for (int what = 0; what < 4; what++) {
        path_in(p, sizeof(p), "damaged.arena");
        unlink(p);
        CHECK_ST(an_arena_open(&a, p, &c, &err), AN_OK);
        an_arena_rec r;
        CHECK_ST(an_arena_record(a, "x", 1, 1, AN_FOLD_ADD, &r, &err), AN_OK);
        an_arena_close(a);
        a = NULL;
        if (what == 0)
            flip_byte(p, 8); /* version */
        else if (what == 1)
            flip_byte(p, 20); /* key_size, under the checksum */
        else if (what == 2)
            CHECK(truncate(p, 8192) == 0);
        else
            flip_byte(p, 0); /* magic */
        CHECK_ST(an_arena_open(&a, p, &c, &err), AN_ERR_ARENA_CORRUPT);
        CHECK(a == NULL);
    }
    /* a damaged directory entry: found by check and by lookup, never used */
    path_in(p, sizeof(p), "entry.arena");
    unlink(p);
    CHECK_ST(an_arena_open(&a, p, &c, &err), AN_OK);
    an_arena_rec r;
    CHECK_ST(an_arena_record(a, "entry", 5, 1, AN_FOLD_ADD, &r, &err), AN_OK);
    char *key = (char *)r.key;
    key[0] ^= 1; /* the key changes under its checksum */
    CHECK_ST(an_arena_check(a, &err), AN_ERR_ARENA_CORRUPT);
    uint32_t cur = 0;
    CHECK(an_arena_next(a, &cur, &r) == 0);
    key[0] ^= 1;
    CHECK_ST(an_arena_check(a, &err), AN_OK);
    an_arena_close(a);
}

/* Children write n increments each, some are killed mid-loop; the parent's
 * reads must equal the increments the children finished. */
static void
test_processes(void)
{
    current = "processes";
    char p[512];
    path_in(p, sizeof(p), "procs.arena");
    unlink(p);
    an_arena_config c = small_config();
    an_arena *a = NULL;
    an_error err = {0};
    CHECK_ST(an_arena_open(&a, p, &c, &err), AN_OK);
    if (a == NULL)
        return;
    an_arena_rec r, done;
    CHECK_ST(an_arena_record(a, "n", 1, 1, AN_FOLD_ADD, &r, &err), AN_OK);
    CHECK_ST(an_arena_record(a, "done", 4, 1, AN_FOLD_SHARED, &done, &err), AN_OK);
    struct stat st0, st1;
    CHECK(stat(p, &st0) == 0);
    for (int round = 0; round < 30; round++) {
        pid_t kids[4];
        for (int k = 0; k < 4; k++) {
            kids[k] = fork();
            if (kids[k] == 0) {
                an_arena *ca = NULL;
                an_error cerr = {0};
                if (an_arena_open(&ca, p, NULL, &cerr) != AN_OK)
                    _exit(3);
                an_arena_rec cr, cd;
                an_arena_record(ca, "n", 1, 1, AN_FOLD_ADD, &cr, &cerr);
                an_arena_record(ca, "done", 4, 1, AN_FOLD_SHARED, &cd, &cerr);
                uint64_t *w = an_arena_local(ca, cr.id), *d = an_arena_local(ca, cd.id);
                /* the shared counter counts finished increments: an increment
                 * is counted only after it is visible in the slot */
                for (int i = 0; i < 20000; i++) {
                    an_aw_add_f64(w, 1.0);
                    an_aw_add(d, 1);
                }
                if (k % 2 == 0)
                    _exit(0); /* exit without closing: a crash, folded later */
                an_arena_close(ca);
                _exit(0);
            }
        }
        if (round % 3 == 0) {
            usleep(200);
            kill(kids[0], SIGKILL); /* mid-write */
        }
        for (int k = 0; k < 4; k++)
            waitpid(kids[k], NULL, 0);
        an_arena_reclaim(a);
    }
    double v;
    CHECK_ST(an_arena_read(a, r.id, &v, 1), AN_OK);
    uint64_t finished = an_aw_load(an_arena_local(a, done.id));
    /* killed between the two adds: at most one increment each not yet counted */
    CHECK(v >= (double)finished && v <= (double)finished + 10);
    an_arena_stats s;
    an_arena_stats_get(a, &s);
    CHECK(s.live_slots == 1);
    CHECK(stat(p, &st1) == 0);
    CHECK(st0.st_size == st1.st_size);
    /* fork with an open arena: the child gets its own slot at the same addresses */
    uint64_t *mine = an_arena_local(a, r.id);
    double before;
    an_arena_read(a, r.id, &before, 1);
    pid_t kid = fork();
    if (kid == 0) {
        an_error cerr = {0};
        if (an_arena_after_fork(a, &cerr) != AN_OK)
            _exit(3);
        an_aw_add_f64(mine, 5.0);
        _exit(an_arena_local(a, r.id) == mine ? 0 : 4);
    }
    int status = 0;
    waitpid(kid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    double after;
    an_arena_read(a, r.id, &after, 1);
    CHECK(after == before + 5.0);
    CHECK(an_aw_load_f64(mine) == an_aw_load_f64(an_arena_local(a, r.id)));
    an_arena_close(a);
}

static void
test_pid_reuse(void)
{
    current = "pid_reuse";
    an_arena_config c = small_config();
    an_arena *a = NULL;
    an_error err = {0};
    CHECK_ST(an_arena_open_anonymous(&a, &c, &err), AN_OK);
    if (a == NULL)
        return;
    an_arena_rec r, live;
    CHECK_ST(an_arena_record(a, "c", 1, 1, AN_FOLD_ADD, &r, &err), AN_OK);
    CHECK_ST(an_arena_record(a, "lg", 2, 1, AN_FOLD_MAX | AN_FOLD_DROP, &live, &err), AN_OK);
    /* our own pid, another start time: a process that reused the pid */
    uint64_t real = an_proc_start_time(getpid());
    CHECK(real != 0);
    uint32_t s = an_arena_forge_slot(a, getpid(), real + 12345);
    CHECK(s != 0);
    an_aw_add_f64(an_arena_slot_words(a, r.id, s), 10.0);
    uint64_t *lw = an_arena_slot_words(a, live.id, s);
    an_aw_store_f64(&lw[0], 99.0);
    an_aw_store_f64(&lw[1], 1.0);
    /* a live impostor slot with the true start time is not reclaimed */
    uint32_t t = an_arena_forge_slot(a, getpid(), real);
    an_aw_add_f64(an_arena_slot_words(a, r.id, t), 1.0);
    CHECK(an_arena_reclaim(a) == 1);
    double v[2];
    CHECK_ST(an_arena_read(a, r.id, v, 1), AN_OK);
    CHECK(v[0] == 11.0);
    CHECK_ST(an_arena_read(a, live.id, v, 2), AN_OK);
    CHECK(v[1] == 0.0); /* live* gauges drop the dead */
    an_arena_stats st;
    an_arena_stats_get(a, &st);
    CHECK(st.live_slots == 2 && st.folds == 1);
    an_arena_close(a);
}

/* ---- concurrency (meaningful under TSan) --------------------------------- */

typedef struct {
    an_arena *a;
    int id;
} worker_arg;

static void *
writer(void *p)
{
    worker_arg *w = (worker_arg *)p;
    an_arena_rec r;
    an_error err = {0};
    char key[16];
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "k%d", i % 20);
        if (an_arena_record(w->a, key, strlen(key), 1, AN_FOLD_ADD, &r, &err) != AN_OK)
            return (void *)1;
        an_aw_add_f64(an_arena_local(w->a, r.id), 1.0);
    }
    return NULL;
}

static void *
reader(void *p)
{
    worker_arg *w = (worker_arg *)p;
    for (int i = 0; i < 200; i++) {
        uint32_t cur = 0;
        an_arena_rec r;
        double v;
        while (an_arena_next(w->a, &cur, &r))
            an_arena_read(w->a, r.id, &v, 1);
        an_arena_reclaim(w->a);
    }
    return NULL;
}

static void
test_threads(void)
{
    current = "threads";
    an_arena_config c = small_config();
    an_arena *a = NULL;
    an_error err = {0};
    CHECK_ST(an_arena_open_anonymous(&a, &c, &err), AN_OK);
    if (a == NULL)
        return;
    pthread_t th[6];
    worker_arg args[6];
    for (int i = 0; i < 6; i++) {
        args[i].a = a;
        args[i].id = i;
        pthread_create(&th[i], NULL, i < 4 ? writer : reader, &args[i]);
    }
    /* meanwhile: slots of "dead" workers appear and are folded */
    an_arena_rec r;
    CHECK_ST(an_arena_record(a, "k0", 2, 1, AN_FOLD_ADD, &r, &err), AN_OK);
    /* A forge can be refused while every slot is taken (the writers' and dead
     * ones not yet reclaimed): count what was added, not what was tried. */
    int forged = 0;
    for (int i = 0; i < 50; i++) {
        uint32_t s = an_arena_forge_slot(a, 0, 0);
        if (s != 0) {
            an_aw_add_f64(an_arena_slot_words(a, r.id, s), 1.0);
            forged++;
        }
        an_arena_reclaim(a);
    }
    CHECK(forged > 0);
    void *ret;
    int bad = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], &ret);
        bad += ret != NULL;
    }
    CHECK(bad == 0);
    an_arena_reclaim(a);
    double total = 0, v;
    uint32_t cur = 0;
    while (an_arena_next(a, &cur, &r)) {
        CHECK_ST(an_arena_read(a, r.id, &v, 1), AN_OK);
        total += v;
    }
    CHECK(total == 4 * 2000 + forged);
    an_arena_close(a);
}

int
main(int argc, char **argv)
{
    (void)fault_malloc; /* check.h's fault injection: the arena allocates one struct */
    (void)fault_free;
    int only_threads = argc > 1 && strcmp(argv[1], "threads") == 0;
    snprintf(dir, sizeof(dir), "/tmp/an_arena_test.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    if (!only_threads) {
        test_basic();
        test_full();
        test_corrupt();
        test_processes();
        test_pid_reuse();
    }
    test_threads();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        n_fail++;
    printf("test_arena: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
