/*
 * base64_simd.c - the vector kernels of the base64 codec (SSSE3 and AVX2),
 * chosen at run time by CPU detection, with base64.c's scalar code as the
 * fallback and as the only authority on errors.
 *
 * The kernels only ever do the easy part: encoding whole 3-byte groups, and
 * decoding blocks of 16 (SSSE3) or 32 (AVX2) characters that are all data
 * characters of the current alphabet.  A block holding anything else (a
 * newline, padding, an invalid byte, the first '+', '/', '-' or '_' while the
 * alphabet is undecided) is left to base64.c's scalar gears, exactly as its
 * own 16-character fast gear does.  So every error offset, alphabet decision,
 * padding and whitespace rule is the scalar code's by construction, and the
 * fuzzer cross-checks the two paths byte for byte (tests/fuzz/base64_fuzzer.c).
 *
 * Encoding reshuffles 12 bytes per 128-bit lane into 16 6-bit indices with two
 * multiplies (Muła's method) and maps them to ASCII with one pshufb of
 * per-range offsets.  Decoding validates and translates with nibble lookups
 * (AVX2, decided alphabet) or range compares (SSSE3: A-Z, a-z, 0-9 and the
 * alphabet's two extra characters), then packs 4 x 6 bits into 3 bytes with
 * maddubs/madd and a shuffle.
 */
#include <stdlib.h>
#include <string.h>

#include "an_base64.h"
#include "an_base64_simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define AN_B64_X86 1
#include <immintrin.h>
#endif

#ifdef AN_B64_X86

#define SSSE3 __attribute__((target("ssse3")))
#define AVX2 __attribute__((target("avx2")))

/* ---- encode ---- */

SSSE3 static inline __m128i
enc_reshuffle128(__m128i in)
{
    in = _mm_shuffle_epi8(in, _mm_set_epi8(10, 11, 9, 10, 7, 8, 6, 7, 4, 5, 3, 4, 1, 2, 0, 1));
    const __m128i t0 = _mm_and_si128(in, _mm_set1_epi32(0x0fc0fc00));
    const __m128i t1 = _mm_mulhi_epu16(t0, _mm_set1_epi32(0x04000040));
    const __m128i t2 = _mm_and_si128(in, _mm_set1_epi32(0x003f03f0));
    const __m128i t3 = _mm_mullo_epi16(t2, _mm_set1_epi32(0x01000010));
    return _mm_or_si128(t1, t3);
}

/* 6-bit indices to ASCII: offset per range (A-Z, a-z, 0-9, 62, 63). */
SSSE3 static inline __m128i
enc_translate128(__m128i in, __m128i lut)
{
    __m128i idx = _mm_subs_epu8(in, _mm_set1_epi8(51));
    idx = _mm_sub_epi8(idx, _mm_cmpgt_epi8(in, _mm_set1_epi8(25)));
    return _mm_add_epi8(in, _mm_shuffle_epi8(lut, idx));
}

static inline void
enc_lut(int urlsafe, int8_t lut[16])
{
    static const int8_t base[16] = {65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, 0, 0, 0, 0};
    memcpy(lut, base, 16);
    lut[12] = (int8_t)((urlsafe ? '-' : '+') - 62);
    lut[13] = (int8_t)((urlsafe ? '_' : '/') - 63);
}

SSSE3 static size_t
encode_ssse3(const uint8_t *in, size_t n, char *out, int urlsafe)
{
    int8_t l[16];
    enc_lut(urlsafe, l);
    const __m128i lut = _mm_loadu_si128((const __m128i *)(const void *)l);
    size_t i = 0, o = 0;
    while (n - i >= 16) { /* reads 16, uses 12 */
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(in + i));
        v = enc_translate128(enc_reshuffle128(v), lut);
        _mm_storeu_si128((__m128i *)(void *)(out + o), v);
        i += 12;
        o += 16;
    }
    return i;
}

AVX2 static size_t
encode_avx2(const uint8_t *in, size_t n, char *out, int urlsafe)
{
    int8_t l[16];
    enc_lut(urlsafe, l);
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)l));
    const __m256i shuf = _mm256_set_epi8(10, 11, 9, 10, 7, 8, 6, 7, 4, 5, 3, 4, 1, 2, 0, 1,
                                         10, 11, 9, 10, 7, 8, 6, 7, 4, 5, 3, 4, 1, 2, 0, 1);
    /* After the first group, one 32-byte load from in + i - 4 puts the
     * group's first 12 bytes at offsets 4..15 of the low lane and the next 12
     * at 0..11 of the high lane; the low lane's shuffle indexes 4 further. */
    const __m256i shuf_off = _mm256_add_epi8(
        shuf, _mm256_setr_epi8(4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0,
                               0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
    size_t i = 0, o = 0;
    while (n - i >= 28) { /* reads up to 28 from i, uses 24 */
        __m256i v;
        if (i == 0)
            v = _mm256_shuffle_epi8(
                _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)in)),
                    _mm_loadu_si128((const __m128i *)(const void *)(in + 12)), 1),
                shuf);
        else
            v = _mm256_shuffle_epi8(
                _mm256_loadu_si256((const __m256i *)(const void *)(in + i - 4)), shuf_off);
        __m256i t1 = _mm256_mulhi_epu16(_mm256_and_si256(v, _mm256_set1_epi32(0x0fc0fc00)),
                                        _mm256_set1_epi32(0x04000040));
        __m256i t3 = _mm256_mullo_epi16(_mm256_and_si256(v, _mm256_set1_epi32(0x003f03f0)),
                                        _mm256_set1_epi32(0x01000010));
        v = _mm256_or_si256(t1, t3);
        __m256i idx = _mm256_subs_epu8(v, _mm256_set1_epi8(51));
        idx = _mm256_sub_epi8(idx, _mm256_cmpgt_epi8(v, _mm256_set1_epi8(25)));
        v = _mm256_add_epi8(v, _mm256_shuffle_epi8(lut, idx));
        _mm256_storeu_si256((__m256i *)(void *)(out + o), v);
        i += 24;
        o += 32;
    }
    return i;
}

/* ---- decode ---- */

/* Values of 16 characters and whether all are data characters.  c62/c63 are
 * the alphabet's extra characters; with extra == 0 (undecided) only letters
 * and digits count. */
#define DEC_CLASSIFY(W, P, v, c62, c63, extra, val, bad)                                     \
    do {                                                                                     \
        __m##W##i up = _mm##P##_and_si##W(_mm##P##_cmpgt_epi8(v, _mm##P##_set1_epi8('A' - 1)), \
                                           _mm##P##_cmpgt_epi8(_mm##P##_set1_epi8('Z' + 1), v)); \
        __m##W##i lo = _mm##P##_and_si##W(_mm##P##_cmpgt_epi8(v, _mm##P##_set1_epi8('a' - 1)), \
                                           _mm##P##_cmpgt_epi8(_mm##P##_set1_epi8('z' + 1), v)); \
        __m##W##i dg = _mm##P##_and_si##W(_mm##P##_cmpgt_epi8(v, _mm##P##_set1_epi8('0' - 1)), \
                                           _mm##P##_cmpgt_epi8(_mm##P##_set1_epi8('9' + 1), v)); \
        __m##W##i e2 = _mm##P##_and_si##W(_mm##P##_cmpeq_epi8(v, c62), extra);               \
        __m##W##i e3 = _mm##P##_and_si##W(_mm##P##_cmpeq_epi8(v, c63), extra);               \
        __m##W##i off = _mm##P##_or_si##W(                                                   \
            _mm##P##_or_si##W(_mm##P##_and_si##W(up, _mm##P##_set1_epi8(-65)),              \
                              _mm##P##_and_si##W(lo, _mm##P##_set1_epi8(-71))),             \
            _mm##P##_and_si##W(dg, _mm##P##_set1_epi8(4)));                                 \
        val = _mm##P##_add_epi8(v, off);                                                     \
        val = _mm##P##_or_si##W(_mm##P##_andnot_si##W(_mm##P##_or_si##W(e2, e3), val),      \
                                _mm##P##_or_si##W(_mm##P##_and_si##W(e2, _mm##P##_set1_epi8(62)), \
                                                  _mm##P##_and_si##W(e3, _mm##P##_set1_epi8(63)))); \
        bad = _mm##P##_or_si##W(_mm##P##_or_si##W(up, lo), _mm##P##_or_si##W(dg, _mm##P##_or_si##W(e2, e3))); \
    } while (0)

SSSE3 static size_t
decode_ssse3(const uint8_t *in, size_t n, uint8_t *out, size_t cap, int alphabet)
{
    const __m128i c62 = _mm_set1_epi8(alphabet == 2 ? '-' : '+');
    const __m128i c63 = _mm_set1_epi8(alphabet == 2 ? '_' : '/');
    const __m128i extra = _mm_set1_epi8(alphabet ? -1 : 0);
    size_t i = 0, o = 0;
    while (n - i >= 16 && cap - o >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(in + i)), val, ok;
        DEC_CLASSIFY(128, , v, c62, c63, extra, val, ok);
        if (_mm_movemask_epi8(ok) != 0xFFFF)
            break;
        __m128i m = _mm_maddubs_epi16(val, _mm_set1_epi32(0x01400140));
        m = _mm_madd_epi16(m, _mm_set1_epi32(0x00011000));
        m = _mm_shuffle_epi8(m, _mm_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1));
        _mm_storeu_si128((__m128i *)(void *)(out + o), m);
        i += 16;
        o += 12;
    }
    return i;
}

/* Validation and translation of a decided alphabet by nibble lookups (Muła's
 * scheme): lut_hi[high nibble] & lut_lo[low nibble] is zero exactly for the
 * alphabet's characters (bytes >= 0x80 hit the 0x10 class); the value is the
 * character plus lut_roll[high nibble], except for the one character of its
 * class that needs its own offset (over_c, over_roll). */
typedef struct dec_luts {
    int8_t lo[16], hi[16], roll[16];
    char over_c;
    int8_t over_roll;
} dec_luts;

static const dec_luts luts_std = {
    {0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B, 0x1B, 0x1A},
    {0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10},
    {0, 0, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0},
    '/', 16,
};
static const dec_luts luts_url = {
    {0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x3B, 0x3B, 0x3A, 0x3B, 0x33},
    {0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x20, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10},
    {0, 0, 17, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0},
    '_', -32,
};

#define LOAD128(p) _mm_loadu_si128((const __m128i *)(const void *)(p))

AVX2 static size_t
decode_avx2(const uint8_t *in, size_t n, uint8_t *out, size_t cap, int alphabet)
{
    size_t i = 0, o = 0;
    if (alphabet != 0) {
        const dec_luts *L = alphabet == 2 ? &luts_url : &luts_std;
        const __m256i lut_lo = _mm256_broadcastsi128_si256(LOAD128(L->lo));
        const __m256i lut_hi = _mm256_broadcastsi128_si256(LOAD128(L->hi));
        const __m256i lut_roll = _mm256_broadcastsi128_si256(LOAD128(L->roll));
        const __m256i over_c = _mm256_set1_epi8(L->over_c);
        const __m256i over_roll = _mm256_set1_epi8(L->over_roll);
        const __m256i m2f = _mm256_set1_epi8(0x2f);
        const __m256i shuf =
            _mm256_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1, 2, 1, 0, 6,
                             5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
        const __m256i perm = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7);
        while (n - i >= 32 && cap - o >= 32) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(in + i));
            __m256i hi_n = _mm256_and_si256(_mm256_srli_epi32(v, 4), m2f);
            __m256i lo_n = _mm256_and_si256(v, m2f);
            __m256i hi = _mm256_shuffle_epi8(lut_hi, hi_n);
            __m256i lo = _mm256_shuffle_epi8(lut_lo, lo_n);
            if (!_mm256_testz_si256(lo, hi))
                break;
            __m256i roll = _mm256_shuffle_epi8(lut_roll, hi_n);
            roll = _mm256_blendv_epi8(roll, over_roll, _mm256_cmpeq_epi8(v, over_c));
            v = _mm256_add_epi8(v, roll);
            __m256i m = _mm256_maddubs_epi16(v, _mm256_set1_epi32(0x01400140));
            m = _mm256_madd_epi16(m, _mm256_set1_epi32(0x00011000));
            m = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(m, shuf), perm);
            _mm256_storeu_si256((__m256i *)(void *)(out + o), m);
            i += 32;
            o += 24;
        }
    }
    /* The undecided alphabet, or a last 16-character block. */
    return i + decode_ssse3(in + i, n - i, out + o, cap - o, alphabet);
}

#endif /* AN_B64_X86 */

/* ---- dispatch ---- */

static int chosen = -1; /* an_b64_path; -1 = not detected yet */

static int
detect(void)
{
    int best = AN_B64_SCALAR;
#ifdef AN_B64_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        best = AN_B64_AVX2;
    else if (__builtin_cpu_supports("ssse3"))
        best = AN_B64_SSSE3;
#endif
    /* AMULET_BASE64_SIMD=scalar|ssse3 caps the path (tests, comparisons). */
    const char *cap = getenv("AMULET_BASE64_SIMD");
    if (cap != NULL) {
        if (strcmp(cap, "scalar") == 0)
            best = AN_B64_SCALAR;
        else if (strcmp(cap, "ssse3") == 0 && best > AN_B64_SSSE3)
            best = AN_B64_SSSE3;
    }
    return best;
}

int
an_b64_path(void)
{
    int c = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
    if (c < 0) {
        c = detect();
        __atomic_store_n(&chosen, c, __ATOMIC_RELAXED); /* idempotent */
    }
    return c;
}

int
an_b64_set_path(int path)
{
    int best = detect();
    if (path < AN_B64_SCALAR || path > best)
        return 0;
    __atomic_store_n(&chosen, path, __ATOMIC_RELAXED);
    return 1;
}

const char *
an_b64_path_name(int path)
{
    switch (path) {
    case AN_B64_AVX2: return "avx2";
    case AN_B64_SSSE3: return "ssse3";
    default: return "scalar";
    }
}

size_t
an_b64_simd_encode(int path, const uint8_t *in, size_t n, char *out, int urlsafe)
{
#ifdef AN_B64_X86
    if (path == AN_B64_AVX2)
        return encode_avx2(in, n, out, urlsafe);
    if (path == AN_B64_SSSE3)
        return encode_ssse3(in, n, out, urlsafe);
#endif
    (void)path, (void)in, (void)n, (void)out, (void)urlsafe;
    return 0;
}

size_t
an_b64_simd_decode(int path, const uint8_t *in, size_t n, uint8_t *out, size_t cap, int alphabet)
{
#ifdef AN_B64_X86
    if (path == AN_B64_AVX2)
        return decode_avx2(in, n, out, cap, alphabet);
    if (path == AN_B64_SSSE3)
        return decode_ssse3(in, n, out, cap, alphabet);
#endif
    (void)path, (void)in, (void)n, (void)out, (void)cap, (void)alphabet;
    return 0;
}
