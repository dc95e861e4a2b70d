/*
 * fuzz_main.c - replays inputs through LLVMFuzzerTestOneInput without libFuzzer.
 *
 * Built with plain gcc (plus ASan/UBSan) so a crash file from tests/crashers/
 * can be reproduced and debugged anywhere:  ./replay FILE...
 * Directories are not walked; pass files (a shell glob does it).  Exits non-zero
 * if a file cannot be read; a bug in the core aborts through the sanitizers.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
replay(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (buf == NULL) {
            fclose(f);
            return -1;
        }
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap)
            break;
        uint8_t *grown = realloc(buf, cap * 2);
        if (grown == NULL)
            free(buf);
        buf = grown;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!bad)
        LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return bad ? -1 : 0;
}

int
main(int argc, char **argv)
{
    int failed = 0;
    for (int i = 1; i < argc; i++)
        if (replay(argv[i]) != 0)
            failed++;
    printf("replayed %d file(s), %d unreadable\n", argc - 1 - failed, failed);
    return failed ? 1 : 0;
}
