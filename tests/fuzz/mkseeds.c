/*
 * mkseeds.c - writes the initial fuzzing corpus: small JPEGs and PNGs covering
 * the decoder's branches (baseline/progressive/arithmetic, gray/RGB/CMYK,
 * subsampling, restart markers, EXIF orientation; every PNG colour type and
 * bit depth, tRNS, Adam7, eXIf).  Generated with the system libraries so the
 * fuzzer needs no Python.  Usage: mkseeds DIR
 */
#include <stdio.h>

#include "../c/testimg.h"

static const char *dir;
static int count;

static void
save(const char *name, uint8_t *data, size_t len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/seed-%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len) {
        perror(path);
        exit(1);
    }
    fclose(f);
    free(data);
    count++;
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    static uint8_t pix[64 * 64 * 8];
    uint8_t exif[6 + 32] = {'E', 'x', 'i', 'f', 0, 0};
    size_t len;
    char name[64];

    struct { const char *name; int comp, prog, arith, rst, hs, vs, adobe, orient; } js[] = {
        {"rgb420", 3, 0, 0, 0, 2, 2, 0, 0}, {"rgb444", 3, 0, 0, 0, 1, 1, 0, 0},
        {"rgb422", 3, 0, 0, 0, 2, 1, 0, 0}, {"gray", 1, 0, 0, 0, 1, 1, 0, 0},
        {"prog", 3, 1, 0, 0, 2, 2, 0, 0},   {"prog-gray", 1, 1, 0, 0, 1, 1, 0, 0},
        {"arith", 3, 0, 1, 0, 2, 2, 0, 0},  {"arith-prog", 3, 1, 1, 0, 2, 2, 0, 0},
        {"restart", 3, 0, 0, 1, 2, 2, 0, 0}, {"cmyk", 4, 0, 0, 0, 1, 1, 0, 0},
        {"cmyk-adobe", 4, 0, 0, 0, 1, 1, 1, 0}, {"exif6", 3, 0, 0, 0, 2, 2, 0, 6},
        {"exif8-prog", 3, 1, 0, 0, 1, 1, 0, 8},
    };
    for (size_t i = 0; i < sizeof(js) / sizeof(js[0]); i++) {
        ti_jpeg_params p;
        ti_jpeg_defaults(&p);
        p.components = js[i].comp;
        p.progressive = js[i].prog;
        p.arith = js[i].arith;
        p.restart_rows = js[i].rst;
        p.h_samp = js[i].hs;
        p.v_samp = js[i].vs;
        p.adobe = js[i].adobe;
        if (js[i].orient) {
            p.app1 = exif;
            p.app1_len = 6 + ti_exif_tiff(exif + 6, js[i].orient);
        }
        ti_pattern(pix, 27, 19, js[i].comp, 1, (uint32_t)i);
        uint8_t *d = ti_jpeg(pix, 27, 19, &p, &len);
        snprintf(name, sizeof(name), "%s.jpg", js[i].name);
        save(name, d, len);
    }

    struct { int ct, bd; } pt[] = {
        {0, 1}, {0, 2}, {0, 4}, {0, 8}, {0, 16}, {2, 8}, {2, 16}, {3, 1},
        {3, 2}, {3, 4}, {3, 8}, {4, 8}, {4, 16}, {6, 8}, {6, 16},
    };
    for (size_t i = 0; i < sizeof(pt) / sizeof(pt[0]); i++)
        for (int il = 0; il < 2; il++) {
            ti_png_params p;
            ti_png_defaults(&p);
            p.color_type = pt[i].ct;
            p.bit_depth = pt[i].bd;
            p.interlace = il;
            p.trns = (i % 3 == 0) && (pt[i].ct == 0 || pt[i].ct == 2 || pt[i].ct == 3);
            if (i % 4 == 1) {
                p.exif = exif + 6;
                p.exif_len = ti_exif_tiff(exif + 6, 3 + (int)(i % 6));
            }
            int ch = pt[i].ct == 2 ? 3 : pt[i].ct == 4 ? 2 : pt[i].ct == 6 ? 4 : 1;
            ti_pattern(pix, 13, 11, ch, pt[i].bd == 16 ? 2 : 1, (uint32_t)i);
            if (pt[i].ct == 3)
                for (size_t k = 0; k < 13 * 11; k++)
                    pix[k] %= (uint8_t)(1u << (pt[i].bd < 8 ? pt[i].bd : 7));
            uint8_t *d = ti_png(pix, 13, 11, &p, &len);
            snprintf(name, sizeof(name), "ct%d-%dbit%s%s.png", pt[i].ct, pt[i].bd,
                     il ? "-i" : "", p.trns ? "-trns" : "");
            save(name, d, len);
        }
    printf("mkseeds: wrote %d seeds to %s\n", count, dir);
    return 0;
}
