/*
 * arena_fuzzer.c - libFuzzer target over the shared arena's file handling
 * (csrc/core/ops/arena.c): a valid small arena with records and a dead
 * worker's slot is built once; each input patches bytes of it (header, slot
 * table, directory, fold state, journal) as a corrupt file or a crashed
 * writer would, then the file is opened, checked, iterated, read, folded and
 * extended.  Every outcome must be a status, never a crash, hang or leak.
 *
 * Input: repeated (u32 offset, u8 len, len bytes) patches.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ops/an_arena.h"

static uint8_t *tmpl;
static size_t tmpl_len; /* header, slots, directory, journal: the patchable part */
static size_t file_len;

static void
build_template(void)
{
    an_arena_config c;
    an_arena_config_init(&c);
    c.max_records = 16;
    c.max_slots = 4;
    c.key_size = 32;
    c.slot_units = 64;
    char path[] = "/tmp/arena_fuzz_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        abort();
    close(fd);
    unlink(path);
    an_arena *a = NULL;
    an_error err;
    memset(&err, 0, sizeof(err));
    if (an_arena_open(&a, path, &c, &err) != AN_OK)
        abort();
    an_arena_rec r;
    const char *keys[] = {"counter", "gauge", "hist", "shared"};
    uint32_t folds[] = {AN_FOLD_ADD, AN_FOLD_MAX, AN_FOLD_ADD, AN_FOLD_SHARED};
    for (int i = 0; i < 4; i++) {
        an_arena_record(a, keys[i], strlen(keys[i]), 1 + (uint32_t)i, folds[i], &r, &err);
        an_aw_add_f64(an_arena_local(a, r.id), 1.5);
    }
    uint32_t dead = an_arena_forge_slot(a, 0, 0);
    (void)dead;
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    file_len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    tmpl = malloc(file_len);
    if (fread(tmpl, 1, file_len, f) != file_len)
        abort();
    fclose(f);
    an_arena_abandon(a);
    an_arena_close(a);
    unlink(path);
    tmpl_len = file_len - (size_t)c.max_slots * c.slot_units * AN_ARENA_UNIT;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (tmpl == NULL)
        build_template();
    int fd = memfd_create("arena_fuzz", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    uint8_t *img = malloc(file_len);
    memcpy(img, tmpl, file_len);
    size_t cut = file_len;
    while (size >= 5) {
        uint32_t off;
        memcpy(&off, data, 4);
        size_t len = data[4];
        data += 5;
        size -= 5;
        if (len > size)
            len = size;
        if (off == 0xffffffffu) { /* truncate instead of patching */
            cut = len * 512;
            continue;
        }
        off %= (uint32_t)tmpl_len;
        if (off + len > tmpl_len)
            len = tmpl_len - off;
        memcpy(img + off, data, len);
        data += len;
        size -= len;
    }
    if (cut > file_len)
        cut = file_len;
    if (write(fd, img, cut) != (ssize_t)cut) {
        free(img);
        close(fd);
        return 0;
    }
    free(img);
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    an_arena *a = NULL;
    an_error err;
    memset(&err, 0, sizeof(err));
    if (an_arena_open(&a, path, NULL, &err) == AN_OK) {
        an_arena_check(a, &err);
        uint32_t cursor = 0;
        an_arena_rec r;
        double out[64];
        while (an_arena_next(a, &cursor, &r)) {
            an_arena_read(a, r.id, out, 64);
            an_aw_add_f64(an_arena_local(a, r.id), 1.0);
        }
        for (uint32_t id = 0; id < 20; id++)
            an_arena_read(a, id, out, 64);
        an_arena_reclaim(a);
        an_arena_record(a, "new", 3, 2, AN_FOLD_ADD, &r, &err);
        an_arena_find(a, "counter", 7, &r);
        an_arena_stats st;
        an_arena_stats_get(a, &st);
        an_arena_close(a);
    }
    close(fd);
    return 0;
}
