/*
 * arena.c - the shared arena of an_arena.h: one mapped file, records claimed
 * by CAS, per-worker slots keyed by (pid, start time), dead slots folded into
 * the aggregate under a lease anyone can take over.
 *
 * Why a lease and not a lock for folding: a worker can die at any instruction
 * (SIGKILL, OOM killer).  A pthread mutex in shared memory would stay locked
 * forever (robust mutexes exist but their recovery needs a consistent state
 * to recover to).  Here the lease word names its holder by (pid, start time),
 * so a dead holder is recognised, and the fold is resumable: it folds one
 * record at a time through a journal (new aggregate values are written to the
 * journal, the journal is marked valid, then copied), so redoing a step after
 * a crash copies the same values again instead of adding twice.
 *
 * Readers bracket their reads with fold_seq (odd while a fold runs) and retry,
 * which keeps a scrape from seeing a dead worker's values both in its slot and
 * in the aggregate.  Writers never look at it: an increment is one atomic on
 * the worker's own cache line.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "an_arena.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ARENA_MAGIC "ANARENA\0"
#define ARENA_VERSION 1u
#define PAGE 4096u
#define HEADER_SIZE PAGE
#define JOURNAL_WORDS (AN_ARENA_MAX_RECORD_UNITS * AN_ARENA_WORDS_PER_UNIT)

/* Owner words (slot table, fold lease, claimed directory entries):
 * bits 0-1 state, bits 2-23 pid (pid_max <= 2^22), bits 24-63 the low 40 bits
 * of the process start time in clock ticks (348 years at 100 Hz). */
#define OW_FREE 0u
#define OW_LIVE 2u
#define OW_FOLDING 3u
#define OW_STATE(w) ((unsigned)((w) & 3u))
#define OW_IDENT(w) ((w) & ~(uint64_t)3u)
#define OW_PID(w) ((pid_t)(((w) >> 2) & 0x3fffffu))
#define OW_START(w) ((w) >> 24)
#define START_MASK ((UINT64_C(1) << 40) - 1)

/* Directory entry states (INIT entries hold their claimer's ident | 1). */
#define DE_EMPTY 0u
#define DE_INIT 1u
#define DE_READY 2u
#define DE_BROKEN 3u

/* Invariant: the static part (magic .. checksum) never changes after creation
 * and checksum is the FNV-1a hash of the bytes before it. */
typedef struct arena_header {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint32_t max_records, max_slots, key_size, slot_units;
    uint32_t entry_size, reserved;
    uint64_t slots_off, dir_off, journal_off, data_off, file_size;
    uint64_t checksum;
    uint8_t pad0[128 - 88];
    /* dynamic part: atomics only */
    uint64_t units_used;
    uint64_t records;
    uint64_t overflow;
    uint64_t folds;
    uint64_t corrupt;
    uint8_t pad1[64 - 40];
    uint64_t fold_lease;    /* owner ident of the folder, 0 = none */
    uint64_t fold_seq;      /* odd while a fold is in progress */
    uint64_t fold_slot;     /* slot being folded */
    uint64_t fold_pos;      /* next directory index to fold */
    uint64_t journal_valid; /* journal holds the new aggregate of journal_rec */
    uint64_t journal_rec;
} arena_header;

typedef struct dir_entry {
    uint64_t state;
    uint64_t hash;
    uint32_t offset, units, fold, key_len;
    uint64_t check;
    char key[];
} dir_entry;

struct an_arena {
    int fd;
    uint8_t *base;        /* the whole file */
    size_t size;
    arena_header *hdr;
    uint64_t *slots;      /* owner word of slot s at slots[s * 8] */
    uint8_t *dir;
    uint64_t *journal;
    uint8_t *data;
    uint8_t *view;        /* this process's slot region (its own mapping) */
    size_t region;        /* bytes per slot region */
    uint32_t my_slot;     /* 0 = detached */
    uint64_t ident;       /* this process's owner ident */
    uint32_t max_records, max_slots, key_size, entry_size, slot_units;
};

/* ---- small helpers ---------------------------------------------------------- */

static uint64_t
fnv1a(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = (const uint8_t *)p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}
#define FNV_INIT UINT64_C(0xcbf29ce484222325)

static size_t
round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

uint64_t
an_proc_start_time(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return 0;
    p += 2;
    if (*p == 'Z' || *p == 'X')
        return 0; /* a zombie has exited: its slot may be folded */
    /* fields after the command: state is field 3, starttime field 22 */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return 0;
        p++;
    }
    return strtoull(p, NULL, 10);
}

static uint64_t
self_ident(void)
{
    pid_t pid = getpid();
    uint64_t start = an_proc_start_time(pid) & START_MASK;
    return ((uint64_t)(pid & 0x3fffff) << 2) | (start << 24);
}

/* 1 when the process named by owner word w still runs. */
static int
ident_alive(const an_arena *a, uint64_t w)
{
    if (OW_IDENT(w) == a->ident)
        return 1;
    pid_t pid = OW_PID(w);
    if (pid <= 0)
        return 0;
    uint64_t start = an_proc_start_time(pid);
    return start != 0 && (start & START_MASK) == OW_START(w);
}

static uint64_t
header_checksum(const arena_header *h)
{
    return fnv1a(FNV_INIT, h, offsetof(arena_header, checksum));
}

static dir_entry *
entry_at(const an_arena *a, uint32_t i)
{
    return (dir_entry *)(a->dir + (size_t)i * a->entry_size);
}

/* The checksum of an entry; a corrupt key_len (past key_size) never matches
 * and is never read past. */
static uint64_t
entry_checksum(const an_arena *a, const dir_entry *e)
{
    if (e->key_len > a->key_size)
        return ~e->check;
    uint64_t h = fnv1a(FNV_INIT, &e->hash, sizeof(e->hash));
    h = fnv1a(h, &e->offset, 4 * sizeof(uint32_t));
    return fnv1a(h, e->key, e->key_len);
}

/* A published entry that can be used: checksum, size and bounds. */
static int
entry_valid(const an_arena *a, const dir_entry *e)
{
    return e->check == entry_checksum(a, e) && e->units >= 1 &&
           e->units <= AN_ARENA_MAX_RECORD_UNITS && e->offset + (uint64_t)e->units <= a->slot_units;
}

static uint64_t *
slot_word(const an_arena *a, uint32_t s)
{
    return &a->slots[(size_t)s * 8];
}

static uint64_t *
copy_at(const an_arena *a, uint32_t slot, uint32_t offset)
{
    return (uint64_t *)(a->data + (size_t)slot * a->region + (size_t)offset * AN_ARENA_UNIT);
}

void
an_arena_config_init(an_arena_config *cfg)
{
    cfg->max_records = 4096;
    cfg->max_slots = 64;
    cfg->key_size = 512;
    cfg->slot_units = 16384;
}

static an_status
check_config(const an_arena_config *c, an_error *err)
{
    if (c->max_records < 1 || c->max_records > (1u << 24) || c->max_slots < 2 ||
        c->max_slots > 1024 || c->key_size < 8 || c->key_size > 4096 || c->slot_units < 64 ||
        c->slot_units % 64 != 0 || c->slot_units > (1u << 26)) {
        an_error_set(err, AN_ERR_INVALID_ARG,
                     "invalid arena geometry (records %u, slots %u, key_size %u, slot_units %u)",
                     c->max_records, c->max_slots, c->key_size, c->slot_units);
        return err->status;
    }
    return AN_OK;
}

static void
layout(arena_header *h, const an_arena_config *c)
{
    memset(h, 0, sizeof(*h));
    memcpy(h->magic, ARENA_MAGIC, 8);
    h->version = ARENA_VERSION;
    h->header_size = HEADER_SIZE;
    h->max_records = c->max_records;
    h->max_slots = c->max_slots;
    h->key_size = c->key_size;
    h->slot_units = c->slot_units;
    h->entry_size = (uint32_t)round_up(sizeof(dir_entry) + c->key_size, 8);
    h->slots_off = HEADER_SIZE;
    h->dir_off = h->slots_off + round_up((size_t)c->max_slots * 64, PAGE);
    h->journal_off = h->dir_off + round_up((size_t)c->max_records * h->entry_size, PAGE);
    h->data_off = h->journal_off + round_up(JOURNAL_WORDS * 8, PAGE);
    h->file_size = h->data_off + (uint64_t)c->max_slots * c->slot_units * AN_ARENA_UNIT;
    h->checksum = header_checksum(h);
}

/* Validates the static header of a mapping of size bytes. */
static an_status
validate_header(const arena_header *h, size_t size, an_error *err)
{
    if (size < sizeof(arena_header) || memcmp(h->magic, ARENA_MAGIC, 8) != 0) {
        an_error_set(err, AN_ERR_ARENA_CORRUPT, "not an arena file (bad magic)");
        return err->status;
    }
    if (h->version != ARENA_VERSION) {
        an_error_set(err, AN_ERR_ARENA_CORRUPT, "arena version %u, this library reads %u",
                     h->version, ARENA_VERSION);
        return err->status;
    }
    if (h->checksum != header_checksum(h)) {
        an_error_set(err, AN_ERR_ARENA_CORRUPT, "arena header checksum mismatch");
        return err->status;
    }
    an_arena_config c = {h->max_records, h->max_slots, h->key_size, h->slot_units};
    arena_header want;
    if (check_config(&c, err) != AN_OK) {
        an_error_set(err, AN_ERR_ARENA_CORRUPT, "arena header has an invalid geometry");
        return err->status;
    }
    layout(&want, &c);
    if (want.file_size != h->file_size || want.data_off != h->data_off ||
        want.entry_size != h->entry_size) {
        an_error_set(err, AN_ERR_ARENA_CORRUPT, "arena header layout is inconsistent");
        return err->status;
    }
    if (size < h->file_size) {
        an_error_set(err, AN_ERR_ARENA_CORRUPT, "arena file is truncated (%zu of %llu bytes)",
                     size, (unsigned long long)h->file_size);
        return err->status;
    }
    return AN_OK;
}

static an_status
io_error(an_error *err, const char *what, const char *path)
{
    int e = errno;
    err->actual = (uint64_t)e;
    an_error_set(err, AN_ERR_IO, "%s %s: %s", what, path, strerror(e));
    return err->status;
}

/* Reserves the file's blocks for [off, off + len): on a full filesystem (a
 * small tmpfs, /dev/shm, a quota) the arena then fails here with an error
 * instead of killing the process with SIGBUS at its first write to a hole of
 * the sparse file.  Filesystems without fallocate keep the sparse file. */
static an_status
reserve(int fd, uint64_t off, uint64_t len, an_error *err)
{
    int r;
    do
        r = fallocate(fd, 0, (off_t)off, (off_t)len);
    while (r != 0 && errno == EINTR);
    if (r == 0 || errno == EOPNOTSUPP || errno == ENOSYS)
        return AN_OK;
    return io_error(err, "reserve space in", "arena");
}

/* Maps this process's slot region at a fixed or new address, the copies of
 * the records allocated so far reserved first (a forked child writes through
 * its parent's record pointers at once; later records are reserved when this
 * process looks them up).  Only the used part is reserved, so a slot costs the
 * blocks its records need, as with the sparse file.  On failure the slot is
 * given up and the view, if any, points nowhere. */
static an_status
map_view(an_arena *a, void *at, an_error *err)
{
    off_t off = (off_t)(a->hdr->data_off + (uint64_t)a->my_slot * a->region);
    uint64_t used = an_aw_load(&a->hdr->units_used);
    if (used > a->slot_units)
        used = a->slot_units;
    an_status s = used ? reserve(a->fd, (uint64_t)off, used * AN_ARENA_UNIT, err) : AN_OK;
    if (s != AN_OK) {
        an_arena_abandon(a);
        return s;
    }
    void *p = mmap(at, a->region, PROT_READ | PROT_WRITE, MAP_SHARED | (at ? MAP_FIXED : 0), a->fd,
                   off);
    if (p == MAP_FAILED)
        return io_error(err, "mmap", "slot view");
    a->view = (uint8_t *)p;
    return AN_OK;
}

static an_status
claim_slot(an_arena *a, an_error *err)
{
    an_arena_reclaim(a);
    /* Another starter may be folding right now: let it finish (bounded), so
     * that the slots it frees are reused instead of fresh ones being touched. */
    for (unsigned spins = 0; spins < 20000; spins++) {
        uint64_t holder = an_aw_load(&a->hdr->fold_lease);
        if (holder == 0 || !ident_alive(a, holder))
            break;
        sched_yield();
    }
    an_arena_reclaim(a);
    for (uint32_t s = 1; s < a->max_slots; s++) {
        uint64_t expected = 0;
        if (an_aw_cas(slot_word(a, s), &expected, a->ident | OW_LIVE)) {
            a->my_slot = s;
            return AN_OK;
        }
    }
    an_aw_add(&a->hdr->overflow, 1);
    an_error_set(err, AN_ERR_ARENA_FULL, "no free worker slot (max_slots %u)", a->max_slots);
    return err->status;
}

static an_status
attach(an_arena *a, an_error *err)
{
    arena_header *h = (arena_header *)a->base;
    an_status s = validate_header(h, a->size, err);
    if (s != AN_OK)
        return s;
    a->hdr = h;
    a->max_records = h->max_records;
    a->max_slots = h->max_slots;
    a->key_size = h->key_size;
    a->entry_size = h->entry_size;
    a->slot_units = h->slot_units;
    a->region = (size_t)h->slot_units * AN_ARENA_UNIT;
    a->slots = (uint64_t *)(a->base + h->slots_off);
    a->dir = a->base + h->dir_off;
    a->journal = (uint64_t *)(a->base + h->journal_off);
    a->data = a->base + h->data_off;
    a->ident = self_ident();
    if ((s = claim_slot(a, err)) != AN_OK)
        return s;
    return map_view(a, NULL, err);
}

static an_arena *
arena_new(void)
{
    an_arena *a = (an_arena *)an_calloc(NULL, 1, sizeof(*a));
    if (a != NULL)
        a->fd = -1;
    return a;
}

static void
arena_unmap(an_arena *a)
{
    if (a->view != NULL)
        munmap(a->view, a->region);
    if (a->base != NULL)
        munmap(a->base, a->size);
    if (a->fd >= 0)
        close(a->fd);
    an_free(NULL, a);
}

/* Writes a fresh header into fd (already sized). */
static an_status
init_file(int fd, const an_arena_config *cfg, an_error *err)
{
    arena_header h;
    layout(&h, cfg);
    if (ftruncate(fd, (off_t)h.file_size) != 0)
        return io_error(err, "ftruncate", "arena");
    /* header, slot table, directory, journal and the aggregate slot 0 */
    an_status s = reserve(fd, 0, h.data_off + (uint64_t)h.slot_units * AN_ARENA_UNIT, err);
    if (s != AN_OK)
        return s;
    if (pwrite(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
        return io_error(err, "write", "arena header");
    return AN_OK;
}

static an_status
map_fd(an_arena *a, an_error *err)
{
    struct stat st;
    if (fstat(a->fd, &st) != 0)
        return io_error(err, "fstat", "arena");
    if ((size_t)st.st_size < sizeof(arena_header)) {
        an_error_set(err, AN_ERR_ARENA_CORRUPT, "arena file is truncated (%lld bytes)",
                     (long long)st.st_size);
        return err->status;
    }
    a->size = (size_t)st.st_size;
    void *p = mmap(NULL, a->size, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
    if (p == MAP_FAILED)
        return io_error(err, "mmap", "arena");
    a->base = (uint8_t *)p;
    return attach(a, err);
}

/* The start of both opens: *cfg (the defaults, in *def, when NULL) checked and
 * an unmapped arena in *a. */
static an_status
arena_begin(const an_arena_config **cfg, an_arena_config *def, an_arena **a, an_error *err)
{
    if (*cfg == NULL) {
        an_arena_config_init(def);
        *cfg = def;
    }
    an_status s = check_config(*cfg, err);
    if (s != AN_OK)
        return s;
    *a = arena_new();
    if (*a == NULL) {
        an_error_set(err, AN_ERR_NOMEM, NULL);
        return AN_ERR_NOMEM;
    }
    return AN_OK;
}

an_status
an_arena_open(an_arena **out, const char *path, const an_arena_config *cfg, an_error *err)
{
    an_arena_config def;
    an_arena *a;
    *out = NULL;
    an_status s = arena_begin(&cfg, &def, &a, err);
    if (s != AN_OK)
        return s;
    a->fd = open(path, O_RDWR | O_CLOEXEC);
    if (a->fd < 0 && errno == ENOENT) {
        /* Build the file under a private name, then link it into place: a
         * concurrent creator either wins the link or opens the winner's file. */
        /* The private name carries our pid and a per-process counter, so no
         * live process or thread can own it: a file already there is the
         * leftover of a creator killed mid-way that had our pid (pid reuse,
         * pid 1 in a container), and is removed instead of blocking us. */
        static uint32_t tmp_seq;
        char tmp[4096];
        unsigned seq = __atomic_fetch_add(&tmp_seq, 1u, __ATOMIC_RELAXED);
        if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%d.%u", path, (int)getpid(), seq) >=
            sizeof(tmp)) {
            an_error_set(err, AN_ERR_INVALID_ARG, "arena path too long");
            arena_unmap(a);
            return err->status;
        }
        int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EEXIST && unlink(tmp) == 0)
            fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            s = io_error(err, "create", tmp);
            arena_unmap(a);
            return s;
        }
        s = init_file(fd, cfg, err);
        if (s == AN_OK && link(tmp, path) != 0 && errno != EEXIST)
            s = io_error(err, "link", path);
        close(fd);
        unlink(tmp);
        if (s != AN_OK) {
            arena_unmap(a);
            return s;
        }
        a->fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (a->fd < 0) {
        s = io_error(err, "open", path);
        arena_unmap(a);
        return s;
    }
    if ((s = map_fd(a, err)) != AN_OK) {
        arena_unmap(a);
        return s;
    }
    *out = a;
    return AN_OK;
}

an_status
an_arena_open_anonymous(an_arena **out, const an_arena_config *cfg, an_error *err)
{
    an_arena_config def;
    an_arena *a;
    *out = NULL;
    an_status s = arena_begin(&cfg, &def, &a, err);
    if (s != AN_OK)
        return s;
    a->fd = memfd_create("amulet_arena", MFD_CLOEXEC);
    if (a->fd < 0) {
        s = io_error(err, "memfd_create", "arena");
        arena_unmap(a);
        return s;
    }
    if ((s = init_file(a->fd, cfg, err)) != AN_OK || (s = map_fd(a, err)) != AN_OK) {
        arena_unmap(a);
        return s;
    }
    *out = a;
    return AN_OK;
}

/* Points the view at a private anonymous page range, so that stale pointers
 * from an_arena_local() write nowhere once the slot is given up. */
static void
blank_view(an_arena *a)
{
    if (a->view != NULL)
        (void)mmap(a->view, a->region, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}

void
an_arena_abandon(an_arena *a)
{
    if (a->my_slot != 0) {
        /* pid 0 never runs: the slot now reads as dead to every reclaimer */
        uint64_t w = an_aw_load(slot_word(a, a->my_slot));
        if (OW_IDENT(w) == a->ident)
            an_aw_store(slot_word(a, a->my_slot), OW_LIVE);
        a->my_slot = 0;
    }
    blank_view(a);
}

void
an_arena_close(an_arena *a)
{
    if (a == NULL)
        return;
    int had_slot = a->my_slot != 0;
    an_arena_abandon(a);
    if (had_slot && a->hdr != NULL)
        an_arena_reclaim(a);
    arena_unmap(a);
}

an_status
an_arena_after_fork(an_arena *a, an_error *err)
{
    a->ident = self_ident();
    a->my_slot = 0;
    an_status s = claim_slot(a, err);
    if (s != AN_OK) {
        blank_view(a);
        return s;
    }
    return map_view(a, a->view, err);
}

/* ---- records ------------------------------------------------------------ */

static int
alloc_units(an_arena *a, uint32_t units, uint32_t *offset)
{
    uint64_t used = an_aw_load(&a->hdr->units_used);
    do {
        if (used + units > a->slot_units)
            return 0;
    } while (!an_aw_cas(&a->hdr->units_used, &used, used + units));
    *offset = (uint32_t)used;
    return 1;
}

static void
fill_record(an_arena *a, uint32_t i, const dir_entry *e, an_arena_rec *rec)
{
    rec->id = i;
    rec->units = e->units;
    rec->fold = e->fold;
    rec->key_len = e->key_len;
    rec->key = e->key;
    (void)a;
}

/* Waits for an INIT entry to be published; breaks it if its claimer died.
 * Returns the entry's state afterwards. */
static uint64_t
await_entry(an_arena *a, dir_entry *e)
{
    for (unsigned spins = 0;; spins++) {
        uint64_t st = an_aw_load(&e->state);
        if ((st & 3u) != DE_INIT || st == DE_INIT)
            return st == DE_INIT ? DE_BROKEN : st;
        if (spins % 64 == 63 && !ident_alive(a, st)) {
            uint64_t expected = st;
            if (an_aw_cas(&e->state, &expected, DE_BROKEN))
                return DE_BROKEN;
            continue;
        }
        sched_yield();
    }
}

static an_status
lookup(an_arena *a, const void *key, size_t key_len, uint32_t units, uint32_t fold, int create,
       an_arena_rec *rec, an_error *err)
{
    if (key_len == 0 || key_len > a->key_size) {
        if (err != NULL) {
            err->actual = key_len;
            err->limit = a->key_size;
            an_error_set(err, AN_ERR_INVALID_ARG, "arena key of %zu bytes (1..%u allowed)",
                         key_len, a->key_size);
        }
        return AN_ERR_INVALID_ARG;
    }
    if (create && (units == 0 || units > AN_ARENA_MAX_RECORD_UNITS ||
                   ((fold & AN_FOLD_OP_MASK) > AN_FOLD_LATEST) || fold > (AN_FOLD_DROP | 7u))) {
        if (err != NULL)
            an_error_set(err, AN_ERR_INVALID_ARG, "record of %u units / fold %u refused", units,
                         fold);
        return AN_ERR_INVALID_ARG;
    }
    uint64_t h = fnv1a(FNV_INIT, key, key_len);
    uint32_t start = (uint32_t)(h % a->max_records);
    for (uint32_t probe = 0; probe < a->max_records; probe++) {
        uint32_t i = (start + probe) % a->max_records;
        dir_entry *e = entry_at(a, i);
        uint64_t st = an_aw_load(&e->state);
        if (st == DE_EMPTY) {
            if (!create)
                return AN_ERR_ARENA_MISMATCH;
            uint64_t expected = DE_EMPTY;
            if (!an_aw_cas(&e->state, &expected, a->ident | DE_INIT)) {
                probe--; /* somebody claimed it: look at it again */
                continue;
            }
            uint32_t offset;
            if (!alloc_units(a, units, &offset)) {
                an_aw_store(&e->state, DE_EMPTY);
                an_aw_add(&a->hdr->overflow, 1);
                if (err != NULL)
                    an_error_set(err, AN_ERR_ARENA_FULL,
                                 "arena data full (%u units per slot) for a record of %u units",
                                 a->slot_units, units);
                return AN_ERR_ARENA_FULL;
            }
            e->hash = h;
            e->offset = offset;
            e->units = units;
            e->fold = fold;
            e->key_len = (uint32_t)key_len;
            memcpy(e->key, key, key_len);
            e->check = entry_checksum(a, e);
            an_aw_add(&a->hdr->records, 1);
            an_aw_store(&e->state, DE_READY);
            fill_record(a, i, e, rec);
            return AN_OK;
        }
        if ((st & 3u) == DE_INIT)
            st = await_entry(a, e);
        if (st == DE_BROKEN)
            continue;
        if (st != DE_READY) {
            an_aw_add(&a->hdr->corrupt, 1);
            continue;
        }
        if (e->hash != h || e->key_len != key_len || memcmp(e->key, key, key_len) != 0)
            continue;
        if (!entry_valid(a, e)) {
            an_aw_add(&a->hdr->corrupt, 1);
            if (err != NULL)
                an_error_set(err, AN_ERR_ARENA_CORRUPT, "arena record %u fails its checksum", i);
            return AN_ERR_ARENA_CORRUPT;
        }
        if (create && (e->units != units || e->fold != fold)) {
            if (err != NULL)
                an_error_set(err, AN_ERR_ARENA_MISMATCH,
                             "record exists with %u units / fold %u (asked %u / %u)", e->units,
                             e->fold, units, fold);
            return AN_ERR_ARENA_MISMATCH;
        }
        fill_record(a, i, e, rec);
        return AN_OK;
    }
    if (!create)
        return AN_ERR_ARENA_MISMATCH;
    an_aw_add(&a->hdr->overflow, 1);
    if (err != NULL)
        an_error_set(err, AN_ERR_ARENA_FULL, "arena directory full (%u records)", a->max_records);
    return AN_ERR_ARENA_FULL;
}

/* Reserves this process's copy of a found record (see reserve()). */
static an_status
reserve_copy(an_arena *a, const an_arena_rec *rec, an_error *err)
{
    if (a->my_slot == 0 || a->fd < 0 || rec->fold == AN_FOLD_SHARED)
        return AN_OK; /* shared records live in slot 0, reserved with the file */
    uint64_t off = a->hdr->data_off + (uint64_t)a->my_slot * a->region +
                   (uint64_t)entry_at(a, rec->id)->offset * AN_ARENA_UNIT;
    an_error local;
    memset(&local, 0, sizeof(local));
    return reserve(a->fd, off, (uint64_t)rec->units * AN_ARENA_UNIT, err ? err : &local);
}

an_status
an_arena_record(an_arena *a, const void *key, size_t key_len, uint32_t units, uint32_t fold,
                an_arena_rec *rec, an_error *err)
{
    an_status s = lookup(a, key, key_len, units, fold, 1, rec, err);
    return s == AN_OK ? reserve_copy(a, rec, err) : s;
}

an_status
an_arena_find(an_arena *a, const void *key, size_t key_len, an_arena_rec *rec)
{
    an_status s = lookup(a, key, key_len, 0, 0, 0, rec, NULL);
    return s == AN_OK ? reserve_copy(a, rec, NULL) : s;
}

uint64_t *
an_arena_local(an_arena *a, uint32_t id)
{
    const dir_entry *e = entry_at(a, id);
    if (e->fold == AN_FOLD_SHARED)
        return copy_at(a, 0, e->offset);
    return (uint64_t *)(a->view + (size_t)e->offset * AN_ARENA_UNIT);
}

const uint64_t *
an_arena_copy(an_arena *a, uint32_t id, uint32_t slot)
{
    return copy_at(a, slot, entry_at(a, id)->offset);
}

int
an_arena_next(an_arena *a, uint32_t *cursor, an_arena_rec *rec)
{
    for (uint32_t i = *cursor; i < a->max_records; i++) {
        dir_entry *e = entry_at(a, i);
        if (an_aw_load(&e->state) != DE_READY)
            continue;
        if (!entry_valid(a, e)) {
            an_aw_add(&a->hdr->corrupt, 1);
            continue;
        }
        fill_record(a, i, e, rec);
        *cursor = i + 1;
        return 1;
    }
    *cursor = a->max_records;
    return 0;
}

/* ---- combining copies --------------------------------------------------- */

/* Folds the copy src (atomic words of another slot) into acc by op. */
static void
combine(uint32_t op, double *acc, const uint64_t *src, uint32_t nwords)
{
    if (op == AN_FOLD_ADD) {
        for (uint32_t k = 0; k < nwords; k++)
            acc[k] += an_aw_load_f64(&src[k]);
        return;
    }
    if (nwords < 2 || (op != AN_FOLD_MAX && op != AN_FOLD_MIN && op != AN_FOLD_LATEST))
        return;
    double v = an_aw_load_f64(&src[0]), mark = an_aw_load_f64(&src[1]);
    if (mark == 0.0)
        return;
    if (acc[1] == 0.0 || (op == AN_FOLD_MAX && v > acc[0]) || (op == AN_FOLD_MIN && v < acc[0]) ||
        (op == AN_FOLD_LATEST && mark >= acc[1])) {
        acc[0] = v;
        acc[1] = op == AN_FOLD_LATEST ? mark : 1.0;
    }
}

/* ---- folding dead slots ------------------------------------------------- */

#define READ_WAIT_S 2.0 /* longest a reader waits for a live folder */

static double
monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
fold_record(an_arena *a, uint32_t i, uint32_t slot)
{
    dir_entry *e = entry_at(a, i);
    if (an_aw_load(&e->state) != DE_READY || e->fold == AN_FOLD_SHARED ||
        (e->fold & AN_FOLD_DROP) || !entry_valid(a, e))
        return;
    uint32_t n = e->units * AN_ARENA_WORDS_PER_UNIT, op = e->fold & AN_FOLD_OP_MASK;
    uint64_t *agg = copy_at(a, 0, e->offset);
    const uint64_t *dead = copy_at(a, slot, e->offset);
    /* the journal gets the new aggregate: agg combined with the dead copy */
    for (uint32_t k = 0; k < n; k++)
        an_aw_store(&a->journal[k], an_aw_load(&agg[k]));
    if (op == AN_FOLD_ADD) {
        for (uint32_t k = 0; k < n; k++)
            an_aw_store_f64(&a->journal[k],
                            an_aw_load_f64(&a->journal[k]) + an_aw_load_f64(&dead[k]));
    } else if (n >= 2) {
        double acc[2] = {an_aw_load_f64(&agg[0]), an_aw_load_f64(&agg[1])};
        combine(op, acc, dead, 2);
        an_aw_store_f64(&a->journal[0], acc[0]);
        an_aw_store_f64(&a->journal[1], acc[1]);
    }
    an_aw_store(&a->hdr->journal_rec, i);
    an_aw_store(&a->hdr->journal_valid, 1);
    for (uint32_t k = 0; k < n; k++)
        an_aw_store(&agg[k], an_aw_load(&a->journal[k]));
    an_aw_store(&a->hdr->fold_pos, (uint64_t)i + 1);
    an_aw_store(&a->hdr->journal_valid, 0);
}

/* Replays a valid journal left by a dead folder (idempotent copy). */
static void
replay_journal(an_arena *a)
{
    if (!an_aw_load(&a->hdr->journal_valid))
        return;
    uint64_t i = an_aw_load(&a->hdr->journal_rec);
    if (i < a->max_records) {
        dir_entry *e = entry_at(a, (uint32_t)i);
        if (e->units <= AN_ARENA_MAX_RECORD_UNITS && e->offset + (uint64_t)e->units <= a->slot_units) {
            uint64_t *agg = copy_at(a, 0, e->offset);
            for (uint32_t k = 0; k < e->units * AN_ARENA_WORDS_PER_UNIT; k++)
                an_aw_store(&agg[k], an_aw_load(&a->journal[k]));
        }
        an_aw_store(&a->hdr->fold_pos, i + 1);
    }
    an_aw_store(&a->hdr->journal_valid, 0);
}

/* Runs the fold of hdr->fold_slot from hdr->fold_pos to the end, then frees the slot. */
static void
finish_fold(an_arena *a)
{
    uint32_t slot = (uint32_t)an_aw_load(&a->hdr->fold_slot);
    replay_journal(a);
    if (slot == 0 || slot >= a->max_slots)
        goto done;
    for (uint64_t i = an_aw_load(&a->hdr->fold_pos); i < a->max_records; i++)
        fold_record(a, (uint32_t)i, slot);
    uint64_t used = an_aw_load(&a->hdr->units_used);
    if (used > a->slot_units)
        used = a->slot_units; /* a corrupt counter must not zero past the region */
    uint64_t *w = copy_at(a, slot, 0);
    for (uint64_t k = 0; k < used * AN_ARENA_WORDS_PER_UNIT; k++)
        if (__atomic_load_n(&w[k], __ATOMIC_RELAXED) != 0)
            __atomic_store_n(&w[k], 0, __ATOMIC_RELAXED);
    /* fold_slot is cleared before the slot is freed: a resumed fold must
     * never zero a slot that a new worker may already have claimed */
    an_aw_store(&a->hdr->fold_slot, 0);
    an_aw_add(&a->hdr->folds, 1);
    an_aw_store(slot_word(a, slot), OW_FREE);
done:
    an_aw_store(&a->hdr->fold_slot, 0);
    an_aw_add(&a->hdr->fold_seq, 1); /* even again: the fold is visible as a whole */
}

/* Takes the fold lease (from nobody, or from a dead holder, finishing its
 * fold).  Returns 1 when held, 0 when a live process holds it. */
static int
take_lease(an_arena *a)
{
    uint64_t me = a->ident | OW_LIVE;
    for (;;) {
        uint64_t w = an_aw_load(&a->hdr->fold_lease);
        if (w == me)
            return 1;
        if (w != 0 && ident_alive(a, w))
            return 0;
        if (an_aw_cas(&a->hdr->fold_lease, &w, me)) {
            if (w != 0 && (an_aw_load(&a->hdr->fold_seq) & 1u))
                finish_fold(a); /* the dead holder's fold, resumed */
            return 1;
        }
    }
}

static void
drop_lease(an_arena *a)
{
    uint64_t me = a->ident | OW_LIVE;
    an_aw_cas(&a->hdr->fold_lease, &me, 0);
}

int
an_arena_reclaim(an_arena *a)
{
    int folded = 0;
    if (!take_lease(a))
        return 0;
    for (uint32_t s = 1; s < a->max_slots; s++) {
        uint64_t w = an_aw_load(slot_word(a, s));
        if (w == OW_FREE || s == a->my_slot || ident_alive(a, w))
            continue;
        if (!an_aw_cas(slot_word(a, s), &w, OW_IDENT(w) | OW_FOLDING))
            continue;
        an_aw_store(&a->hdr->fold_slot, s);
        an_aw_store(&a->hdr->fold_pos, 0);
        an_aw_store(&a->hdr->journal_valid, 0);
        an_aw_add(&a->hdr->fold_seq, 1); /* odd: readers wait for the whole fold */
        finish_fold(a);
        folded++;
    }
    drop_lease(a);
    return folded;
}

an_status
an_arena_read(an_arena *a, uint32_t id, double *out, uint32_t nwords)
{
    if (id >= a->max_records)
        return AN_ERR_INVALID_ARG;
    dir_entry *e = entry_at(a, id);
    if (an_aw_load(&e->state) != DE_READY)
        return AN_ERR_ARENA_MISMATCH;
    if (!entry_valid(a, e)) {
        an_aw_add(&a->hdr->corrupt, 1);
        return AN_ERR_ARENA_CORRUPT;
    }
    uint32_t n = e->units * AN_ARENA_WORDS_PER_UNIT;
    if (nwords > n)
        nwords = n;
    uint32_t op = e->fold & AN_FOLD_OP_MASK;
    double waited_since = 0.0;
    for (unsigned attempt = 0;; attempt++) {
        uint64_t seq = an_aw_load(&a->hdr->fold_seq);
        if (seq & 1u) {
            uint64_t holder = an_aw_load(&a->hdr->fold_lease);
            if (holder != 0 && !ident_alive(a, holder) && take_lease(a)) {
                drop_lease(a);
            } else {
                /* A live folder that does not finish (stopped by SIGSTOP, a
                 * debugger, a frozen cgroup) must not hang every reader: a
                 * fold takes milliseconds, so after READ_WAIT_S give up. */
                sched_yield();
                if ((attempt & 255u) == 0) {
                    double now = monotonic_s();
                    if (waited_since == 0.0)
                        waited_since = now;
                    else if (now - waited_since > READ_WAIT_S)
                        return AN_ERR_LOCK_TIMEOUT;
                }
            }
            continue;
        }
        memset(out, 0, nwords * sizeof(double));
        if (e->fold == AN_FOLD_SHARED) {
            const uint64_t *w = copy_at(a, 0, e->offset);
            for (uint32_t k = 0; k < nwords; k++)
                out[k] = an_aw_load_f64(&w[k]);
        } else {
            for (uint32_t s = (e->fold & AN_FOLD_DROP) ? 1 : 0; s < a->max_slots; s++) {
                if (s != 0 && an_aw_load(slot_word(a, s)) == OW_FREE)
                    continue;
                combine(op, out, copy_at(a, s, e->offset), nwords);
            }
        }
        if (an_aw_load(&a->hdr->fold_seq) == seq)
            return AN_OK;
    }
}

an_status
an_arena_check(an_arena *a, an_error *err)
{
    an_status s = validate_header(a->hdr, a->size, err);
    if (s != AN_OK)
        return s;
    uint32_t bad = 0;
    for (uint32_t i = 0; i < a->max_records; i++) {
        dir_entry *e = entry_at(a, i);
        uint64_t st = an_aw_load(&e->state);
        if (st == DE_EMPTY || st == DE_BROKEN || (st & 3u) == DE_INIT)
            continue;
        if (st != DE_READY || !entry_valid(a, e))
            bad++;
    }
    if (bad) {
        err->actual = bad;
        an_error_set(err, AN_ERR_ARENA_CORRUPT, "%u arena directory entries are corrupt", bad);
        return err->status;
    }
    return AN_OK;
}

void
an_arena_stats_get(an_arena *a, an_arena_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->file_size = a->hdr->file_size;
    st->records = (uint32_t)an_aw_load(&a->hdr->records);
    st->max_records = a->max_records;
    st->units_used = (uint32_t)an_aw_load(&a->hdr->units_used);
    st->slot_units = a->slot_units;
    st->max_slots = a->max_slots;
    for (uint32_t s = 1; s < a->max_slots; s++)
        if (an_aw_load(slot_word(a, s)) != OW_FREE)
            st->live_slots++;
    st->overflow = an_aw_load(&a->hdr->overflow);
    st->folds = an_aw_load(&a->hdr->folds);
    st->corrupt = an_aw_load(&a->hdr->corrupt);
    st->my_slot = a->my_slot;
}

uint32_t
an_arena_my_slot(const an_arena *a)
{
    return a->my_slot;
}

void
an_arena_count_overflow(an_arena *a)
{
    an_aw_add(&a->hdr->overflow, 1);
}

uint32_t
an_arena_forge_slot(an_arena *a, pid_t pid, uint64_t start_time)
{
    uint64_t w = ((uint64_t)(pid & 0x3fffff) << 2) | ((start_time & START_MASK) << 24) | OW_LIVE;
    for (uint32_t s = 1; s < a->max_slots; s++) {
        uint64_t expected = 0;
        if (an_aw_cas(slot_word(a, s), &expected, w))
            return s;
    }
    return 0;
}

uint64_t *
an_arena_slot_words(an_arena *a, uint32_t id, uint32_t slot)
{
    return copy_at(a, slot, entry_at(a, id)->offset);
}
