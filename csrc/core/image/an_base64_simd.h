/*
 * an_base64_simd.h - the vector kernels behind base64.c (base64_simd.c).
 *
 * Paths, best last; the one used is detected once per process (CPU features,
 * capped by the environment variable AMULET_BASE64_SIMD=scalar|ssse3).
 */
#ifndef AN_BASE64_SIMD_H
#define AN_BASE64_SIMD_H

#include <stddef.h>
#include <stdint.h>

enum { AN_B64_SCALAR = 0, AN_B64_SSSE3 = 1, AN_B64_AVX2 = 2 };

/* The path in use (detected on first call). */
int an_b64_path(void);
/* Forces a path (tests, the fuzzer's cross-check); 0 when this CPU lacks it. */
int an_b64_set_path(int path);
/* "scalar", "ssse3" or "avx2". */
const char *an_b64_path_name(int path);

/* Encodes the longest prefix of whole 3-byte groups the kernel handles
 * (reading at most n bytes); returns the input bytes consumed (a multiple of
 * 3; out receives 4/3 as many characters).  0 for the scalar path. */
size_t an_b64_simd_encode(int path, const uint8_t *in, size_t n, char *out, int urlsafe);

/* Decodes whole blocks of characters that are all data characters of the
 * alphabet (0 undecided: letters and digits only, 1 standard, 2 URL-safe),
 * stopping before the first block that is not or that would not fit in cap
 * (stores write up to 8 bytes of slack within cap).  Returns the characters
 * consumed (a multiple of 16; out receives 3/4 as many bytes). */
size_t an_b64_simd_decode(int path, const uint8_t *in, size_t n, uint8_t *out, size_t cap,
                          int alphabet);

#endif /* AN_BASE64_SIMD_H */
