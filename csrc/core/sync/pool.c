/*
 * pool.c - native worker threads for batch work (decode_many).
 *
 * Design: one mutex, two condition variables, a FIFO of batches.  Work items
 * are milliseconds long (whole image decodes), so handing out one index at a
 * time under the mutex costs nothing measurable and keeps the load balanced
 * when images differ in size.  A batch lives on its caller's stack; the caller
 * takes indices too and waits until every index it handed out has returned, so
 * a worker never touches a batch after the mutex release that follows its last
 * done++.  Workers never call Python; they only run the callback.
 *
 * Invariants (under mu): queued batches have next < n; done <= next <= n; a
 * batch is unlinked from the queue as soon as next == n.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#endif
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "an_pool.h"

typedef struct an_batch {
    an_pool_fn fn;
    void *arg;
    size_t n, next, done;
    int helpers, max_helpers;   /* workers currently taking from this batch */
    struct an_batch *link;
} an_batch;

struct an_pool {
    pthread_mutex_t mu;
    pthread_cond_t work;        /* a batch was queued, or stop */
    pthread_cond_t finished;    /* some batch's done reached n */
    an_batch *head, *tail;
    pthread_t *threads;
    int nthreads, capacity;
    int stop;
    pid_t owner;
};

static void
unlink_batch(an_pool *p, an_batch *b)
{
    an_batch **pp = &p->head, *prev = NULL;
    while (*pp != NULL && *pp != b) {
        prev = *pp;
        pp = &(*pp)->link;
    }
    if (*pp == NULL)
        return;
    *pp = b->link;
    if (p->tail == b)
        p->tail = prev;
    b->link = NULL;
}

/* First queued batch a worker may help with, or NULL. */
static an_batch *
find_batch(an_pool *p)
{
    for (an_batch *b = p->head; b != NULL; b = b->link)
        if (b->next < b->n && b->helpers < b->max_helpers)
            return b;
    return NULL;
}

/* Takes indices from b until none are left; called and returns with mu held. */
static void
drain(an_pool *p, an_batch *b)
{
    while (b->next < b->n) {
        size_t i = b->next++;
        if (b->next == b->n)
            unlink_batch(p, b);
        pthread_mutex_unlock(&p->mu);
        b->fn(b->arg, i);
        pthread_mutex_lock(&p->mu);
        if (++b->done == b->n)
            pthread_cond_broadcast(&p->finished);
    }
}

static void *
worker_main(void *arg)
{
    an_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        an_batch *b = find_batch(p);
        if (b == NULL) {
            if (p->stop && p->head == NULL)
                break;
            pthread_cond_wait(&p->work, &p->mu);
            continue;
        }
        b->helpers++;
        drain(p, b);
        /* b->done may equal n now and its caller may return as soon as mu is
         * released: this is the last access to b. */
        b->helpers--;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

an_status
an_pool_create(an_pool **out, int nthreads)
{
    *out = NULL;
    an_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return AN_ERR_NOMEM;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return AN_ERR_THREADS;
    }
    if (pthread_cond_init(&p->work, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return AN_ERR_THREADS;
    }
    if (pthread_cond_init(&p->finished, NULL) != 0) {
        pthread_cond_destroy(&p->work);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return AN_ERR_THREADS;
    }
    p->owner = getpid();
    an_status st = an_pool_grow(p, nthreads);
    if (st != AN_OK) {
        an_pool_destroy(p);
        return st;
    }
    *out = p;
    return AN_OK;
}

an_status
an_pool_grow(an_pool *p, int nthreads)
{
    an_status st = AN_OK;
    pthread_mutex_lock(&p->mu);
    if (nthreads > p->capacity) {
        pthread_t *t = realloc(p->threads, (size_t)nthreads * sizeof(*t));
        if (t == NULL) {
            pthread_mutex_unlock(&p->mu);
            return AN_ERR_NOMEM;
        }
        p->threads = t;
        p->capacity = nthreads;
    }
    while (p->nthreads < nthreads) {
        /* Workers block every signal: they must never run Python's handlers
         * (the main thread gets Ctrl-C). */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int rc = pthread_create(&p->threads[p->nthreads], NULL, worker_main, p);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc != 0) {
            st = AN_ERR_THREADS;
            break;
        }
        p->nthreads++;
    }
    pthread_mutex_unlock(&p->mu);
    return st;
}

int
an_pool_size(an_pool *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->nthreads;
    pthread_mutex_unlock(&p->mu);
    return n;
}

pid_t
an_pool_owner(const an_pool *p)
{
    return p->owner;
}

void
an_pool_run(an_pool *p, an_pool_fn fn, void *arg, size_t n, int max_helpers)
{
    if (n == 0)
        return;
    an_batch b;
    memset(&b, 0, sizeof(b));
    b.fn = fn;
    b.arg = arg;
    b.n = n;
    b.max_helpers = max_helpers < 0 ? 0 : max_helpers;
    pthread_mutex_lock(&p->mu);
    if (b.max_helpers > 0 && n > 1) {
        if (p->tail != NULL)
            p->tail->link = &b;
        else
            p->head = &b;
        p->tail = &b;
        pthread_cond_broadcast(&p->work);
    }
    drain(p, &b);
    while (b.done < b.n)
        pthread_cond_wait(&p->finished, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void
an_pool_destroy(an_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->finished);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

/* ---- CPU budget ---- */

static long
read_long_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    size_t got = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[got] = '\0';
    return (long)got;
}

/* CPUs allowed by a cgroup quota, or 0 when there is none. */
static int
cgroup_cpus(void)
{
    char buf[128];
    long long quota = -1, period = 0;
    if (read_long_file("/sys/fs/cgroup/cpu.max", buf, sizeof(buf)) > 0) {
        if (strncmp(buf, "max", 3) == 0)
            return 0;
        if (sscanf(buf, "%lld %lld", &quota, &period) != 2)
            return 0;
    } else if (read_long_file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", buf, sizeof(buf)) > 0 &&
               sscanf(buf, "%lld", &quota) == 1 &&
               read_long_file("/sys/fs/cgroup/cpu/cpu.cfs_period_us", buf, sizeof(buf)) > 0) {
        if (sscanf(buf, "%lld", &period) != 1)
            return 0;
    }
    if (quota <= 0 || period <= 0)
        return 0;
    long long cpus = (quota + period - 1) / period;
    return cpus > 4096 ? 4096 : (int)cpus;
}

int
an_available_cpus(void)
{
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online > 0 ? (int)online : 1;
    }
    int quota = cgroup_cpus();
    if (quota > 0 && quota < n)
        n = quota;
    return n > 0 ? n : 1;
}
