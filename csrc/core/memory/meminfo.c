/*
 * meminfo.c - process and system memory readings from /proc and cgroup files.
 *
 * Plain file parsing, no psutil: /proc/self/statm (RSS, cheap enough for the
 * process guard), /proc/self/status (VmRSS, VmHWM), /proc/meminfo (MemTotal,
 * MemAvailable), and the memory cgroup.  The cgroup is found the way the
 * kernel describes it: /proc/self/cgroup gives the path inside the hierarchy
 * ("0::/path" for v2, "N:...memory...:/path" for v1), /proc/self/mountinfo
 * where that hierarchy is mounted (and which part of it: inside a container the
 * mount's root may be the container's own cgroup).  When those files do not
 * say, the usual /sys/fs/cgroup paths are tried.  Every path is prefixed with a
 * root directory so the tests can run the parser over fixture trees.
 *
 * Malformed files never crash and never guess: a reading that cannot be parsed
 * is reported as AN_ERR_SYSTEM (proc) or as an unknown cgroup with a reason.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "an_budget.h"

#define V1_UNLIMITED ((uint64_t)1 << 62) /* v1 reports ~2^63 rounded to pages */

static const char *
fix_root(const char *root)
{
    return (root == NULL || strcmp(root, "/") == 0) ? "" : root;
}

/* Reads <root><path> into buf (NUL-terminated); 0 on success. */
static int
read_file(const char *root, const char *path, char *buf, size_t cap, an_error *err)
{
    char full[1024];
    int n = snprintf(full, sizeof(full), "%s%s", fix_root(root), path);
    if (n < 0 || (size_t)n >= sizeof(full)) {
        an_error_set(err, AN_ERR_SYSTEM, "path too long: %s", path);
        return -1;
    }
    FILE *f = fopen(full, "re");
    if (f == NULL) {
        an_error_set(err, AN_ERR_SYSTEM, "cannot open %.150s: %s", full, strerror(errno));
        return -1;
    }
    size_t got = fread(buf, 1, cap - 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        an_error_set(err, AN_ERR_SYSTEM, "cannot read %.180s", full);
        return -1;
    }
    buf[got] = '\0';
    return 0;
}

/* Parses a decimal u64 at s (no sign); returns the end or NULL. */
static const char *
parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return NULL;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return NULL;
        v = v * 10 + d;
    }
    *out = v;
    return p;
}

/* "Key:   1234 kB" in a /proc file; 0 when absent or malformed. */
static int
find_kb(const char *text, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    for (const char *line = text; line != NULL && *line;) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            const char *p = line + klen + 1;
            while (*p == ' ' || *p == '\t')
                p++;
            uint64_t v;
            p = parse_u64(p, &v);
            if (p == NULL || strncmp(p, " kB", 3) != 0 || v > UINT64_MAX / 1024)
                return 0;
            *out = v * 1024;
            return 1;
        }
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return 0;
}

an_status
an_read_procmem(const char *root, an_procmem *out, an_error *err)
{
    char buf[8192];
    memset(out, 0, sizeof(*out));
    memset(err, 0, sizeof(*err));
    if (read_file(root, "/proc/self/status", buf, sizeof(buf), err) < 0)
        return err->status;
    if (!find_kb(buf, "VmRSS", &out->rss) || !find_kb(buf, "VmHWM", &out->peak_rss)) {
        an_error_set(err, AN_ERR_SYSTEM, "malformed /proc/self/status (VmRSS/VmHWM)");
        return err->status;
    }
    if (read_file(root, "/proc/meminfo", buf, sizeof(buf), err) < 0)
        return err->status;
    if (!find_kb(buf, "MemTotal", &out->total) || !find_kb(buf, "MemAvailable", &out->available)) {
        an_error_set(err, AN_ERR_SYSTEM, "malformed /proc/meminfo (MemTotal/MemAvailable)");
        return err->status;
    }
    return AN_OK;
}

an_status
an_read_rss(const char *root, uint64_t *rss, an_error *err)
{
    char buf[256];
    uint64_t size, pages;
    const char *p;
    memset(err, 0, sizeof(*err));
    if (read_file(root, "/proc/self/statm", buf, sizeof(buf), err) < 0)
        return err->status;
    if ((p = parse_u64(buf, &size)) == NULL || *p != ' ' || parse_u64(p + 1, &pages) == NULL) {
        an_error_set(err, AN_ERR_SYSTEM, "malformed /proc/self/statm");
        return err->status;
    }
    long page = sysconf(_SC_PAGESIZE);
    *rss = pages * (uint64_t)(page > 0 ? page : 4096);
    return AN_OK;
}

int
an_parse_cgroup_value(const char *text, uint64_t *out)
{
    const char *p = text;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncmp(p, "max", 3) == 0) {
        p += 3;
        *out = UINT64_MAX;
    } else {
        uint64_t v;
        if ((p = parse_u64(p, &v)) == NULL)
            return 0;
        *out = v >= V1_UNLIMITED ? UINT64_MAX : v;
    }
    while (*p == ' ' || *p == '\t' || *p == '\n')
        p++;
    return *p == '\0';
}

/* One cgroup value file of dir; 0 with a reason in cg->problem on failure. */
static int
read_value(const char *root, const char *dir, const char *name, uint64_t *out, an_cgroup *cg)
{
    char path[700], buf[128];
    an_error err;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (read_file(root, path, buf, sizeof(buf), &err) < 0) {
        snprintf(cg->problem, sizeof(cg->problem), "%s", err.detail);
        return 0;
    }
    if (!an_parse_cgroup_value(buf, out)) {
        snprintf(cg->problem, sizeof(cg->problem), "malformed %.160s", path);
        return 0;
    }
    return 1;
}

/* "key value" in a cgroup memory.stat; 0 when absent or malformed. */
static int
find_stat(const char *text, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    for (const char *line = text; line != NULL && *line;) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            const char *p = parse_u64(line + klen + 1, out);
            return p != NULL && (*p == '\n' || *p == '\0');
        }
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return 0;
}

/* The reclaimable page cache of dir from its memory.stat, when it can be read:
 * memory.current / usage_in_bytes count it, yet the kernel drops it before it
 * OOM-kills, so pressure is judged on usage minus it (the working set, as the
 * kubelet and docker stats do).  Missing or malformed: left unknown. */
static void
read_inactive(const char *root, const char *dir, const char *key, an_cgroup *cg)
{
    char path[700], buf[8192];
    an_error err;
    uint64_t v;
    snprintf(path, sizeof(path), "%s/memory.stat", dir);
    if (read_file(root, path, buf, sizeof(buf), &err) == 0 && find_stat(buf, key, &v)) {
        cg->inactive_file = v;
        cg->have_inactive = 1;
    }
}

static int
is_dir_file(const char *root, const char *dir, const char *name)
{
    char full[1100];
    snprintf(full, sizeof(full), "%s%s/%s", fix_root(root), dir, name);
    return access(full, R_OK) == 0;
}

/* The cgroup path of this process for v2 (want_v1 = 0) or the v1 memory
 * controller, from /proc/self/cgroup.  0 when not listed. */
static int
proc_cgroup_path(const char *text, int want_v1, char *path, size_t cap)
{
    for (const char *line = text; line != NULL && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *c1 = memchr(line, ':', len);
        const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - line)) : NULL;
        if (c2 != NULL) {
            size_t clen = (size_t)(c2 - c1 - 1);
            int match;
            if (want_v1) {
                /* controllers are comma separated: "memory" or "cpu,memory" */
                match = 0;
                for (const char *q = c1 + 1; q < c2;) {
                    const char *comma = memchr(q, ',', (size_t)(c2 - q));
                    const char *qe = comma ? comma : c2;
                    if ((size_t)(qe - q) == 6 && memcmp(q, "memory", 6) == 0)
                        match = 1;
                    q = qe + 1;
                }
            } else {
                match = (c1 - line == 1 && line[0] == '0' && clen == 0);
            }
            size_t plen = len - (size_t)(c2 + 1 - line);
            if (match && plen > 0 && plen < cap && c2[1] == '/') {
                memcpy(path, c2 + 1, plen);
                path[plen] = '\0';
                return 1;
            }
        }
        line = end ? end + 1 : NULL;
    }
    return 0;
}

/* Splits the next space-separated field of a mountinfo line. */
static const char *
next_field(const char *p, const char *end, char *out, size_t cap)
{
    while (p < end && *p == ' ')
        p++;
    const char *s = p;
    while (p < end && *p != ' ')
        p++;
    size_t n = (size_t)(p - s);
    if (n == 0 || n >= cap)
        return NULL;
    memcpy(out, s, n);
    out[n] = '\0';
    return p;
}

/* Finds the mount of the v2 hierarchy (want_v1 = 0) or of the v1 memory
 * controller: its mount point and the hierarchy path at its root. */
static int
find_mount(const char *text, int want_v1, char *mnt_root, char *mnt_point, size_t cap)
{
    for (const char *line = text; line != NULL && *line;) {
        const char *end = strchr(line, '\n');
        if (end == NULL)
            end = line + strlen(line);
        char f[5][512], fstype[64], source[512], opts[512];
        const char *p = line;
        int ok = 1;
        for (int i = 0; i < 5 && ok; i++)
            ok = (p = next_field(p, end, f[i], sizeof(f[i]))) != NULL;
        /* optional fields up to the "-" separator */
        const char *sep = ok ? strstr(p, " - ") : NULL;
        if (sep != NULL && sep < end) {
            p = sep + 3;
            ok = (p = next_field(p, end, fstype, sizeof(fstype))) != NULL &&
                 (p = next_field(p, end, source, sizeof(source))) != NULL &&
                 next_field(p, end, opts, sizeof(opts)) != NULL;
            int match = 0;
            if (ok && !want_v1)
                match = strcmp(fstype, "cgroup2") == 0;
            else if (ok && strcmp(fstype, "cgroup") == 0) {
                char *save = NULL;
                for (char *t = strtok_r(opts, ",", &save); t != NULL;
                     t = strtok_r(NULL, ",", &save))
                    if (strcmp(t, "memory") == 0)
                        match = 1;
            }
            if (match && strlen(f[3]) < cap && strlen(f[4]) < cap) {
                strcpy(mnt_root, f[3]);
                strcpy(mnt_point, f[4]);
                return 1;
            }
        }
        line = *end ? end + 1 : NULL;
    }
    return 0;
}

/* Maps a hierarchy path to a directory under the mount point. */
static int
map_path(const char *mnt_root, const char *mnt_point, const char *cg, char *dir, size_t cap)
{
    size_t rlen = strlen(mnt_root);
    const char *rest;
    if (strcmp(mnt_root, "/") == 0)
        rest = cg;
    else if (strncmp(cg, mnt_root, rlen) == 0 && (cg[rlen] == '/' || cg[rlen] == '\0'))
        rest = cg + rlen;
    else
        rest = ""; /* cgroup namespace: the mount's root is our cgroup */
    if (strcmp(rest, "/") == 0)
        rest = "";
    int n = snprintf(dir, cap, "%s%s", strcmp(mnt_point, "/") == 0 ? "" : mnt_point, rest);
    return n > 0 && (size_t)n < cap;
}

/* Reads limit and usage of a v2 directory, walking up to mount_point for the
 * smallest memory.max. */
static void
read_v2(const char *root, const char *dir, const char *mount_point, an_cgroup *cg)
{
    uint64_t usage, limit = UINT64_MAX;
    char cur[512];
    cg->version = 2;
    snprintf(cg->path, sizeof(cg->path), "%s", dir);
    if (!read_value(root, dir, "memory.current", &usage, cg))
        return;
    snprintf(cur, sizeof(cur), "%s", dir);
    size_t mlen = strlen(mount_point);
    for (;;) {
        uint64_t v;
        if (is_dir_file(root, cur, "memory.max")) {
            if (!read_value(root, cur, "memory.max", &v, cg))
                return;
            if (v < limit)
                limit = v;
        }
        if (strlen(cur) <= mlen)
            break;
        char *slash = strrchr(cur, '/');
        if (slash == NULL || slash == cur)
            break;
        *slash = '\0';
    }
    cg->usage = usage;
    cg->limit = limit;
    cg->known = 1;
    read_inactive(root, dir, "inactive_file", cg);
}

static void
read_v1(const char *root, const char *dir, an_cgroup *cg)
{
    cg->version = 1;
    snprintf(cg->path, sizeof(cg->path), "%s", dir);
    if (read_value(root, dir, "memory.limit_in_bytes", &cg->limit, cg) &&
        read_value(root, dir, "memory.usage_in_bytes", &cg->usage, cg)) {
        cg->known = 1;
        read_inactive(root, dir, "total_inactive_file", cg);
    }
}

void
an_read_cgroup(const char *root, an_cgroup *out)
{
    char *cgtext = malloc(8192), *mi = malloc(65536);
    char cgpath[512], mroot[512], mpoint[512], dir[512];
    an_error err;
    memset(out, 0, sizeof(*out));
    out->limit = UINT64_MAX;
    if (cgtext == NULL || mi == NULL) {
        snprintf(out->problem, sizeof(out->problem), "out of memory");
        goto done;
    }
    int have_cg = read_file(root, "/proc/self/cgroup", cgtext, 8192, &err) == 0;
    int have_mi = read_file(root, "/proc/self/mountinfo", mi, 65536, &err) == 0;
    if (have_cg && have_mi) {
        if (proc_cgroup_path(cgtext, 0, cgpath, sizeof(cgpath)) &&
            find_mount(mi, 0, mroot, mpoint, sizeof(mroot)) &&
            map_path(mroot, mpoint, cgpath, dir, sizeof(dir))) {
            /* Without a cgroup namespace a container may see the host's path
             * while its own cgroup is mounted at the mount point. */
            if (is_dir_file(root, dir, "memory.current")) {
                read_v2(root, dir, mpoint, out);
                goto done;
            }
            if (is_dir_file(root, mpoint, "memory.current")) {
                read_v2(root, mpoint, mpoint, out);
                goto done;
            }
        }
        if (proc_cgroup_path(cgtext, 1, cgpath, sizeof(cgpath)) &&
            find_mount(mi, 1, mroot, mpoint, sizeof(mroot)) &&
            map_path(mroot, mpoint, cgpath, dir, sizeof(dir))) {
            if (is_dir_file(root, dir, "memory.limit_in_bytes")) {
                read_v1(root, dir, out);
                goto done;
            }
            if (is_dir_file(root, mpoint, "memory.limit_in_bytes")) {
                read_v1(root, mpoint, out);
                goto done;
            }
        }
    }
    /* The usual places (a container that mounts its own cgroup at the top). */
    if (is_dir_file(root, "/sys/fs/cgroup", "memory.max") ||
        is_dir_file(root, "/sys/fs/cgroup", "memory.current"))
        read_v2(root, "/sys/fs/cgroup", "/sys/fs/cgroup", out);
    else if (is_dir_file(root, "/sys/fs/cgroup/memory", "memory.limit_in_bytes"))
        read_v1(root, "/sys/fs/cgroup/memory", out);
done:
    free(cgtext);
    free(mi);
}
