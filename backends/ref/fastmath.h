/*
 * backends/ref/fastmath.h - float32 exp, tanh and sigmoid that gcc
 * vectorises (no libm calls, branch-free selects), and the bit helpers
 * they use; shared by the elementwise kernels and the recurrent cells.
 */
#ifndef LOOM_BACKENDS_REF_FASTMATH_H
#define LOOM_BACKENDS_REF_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---- bit helpers and vectorisable float math ---------------------------- */

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* c ? a : b without a branch (see the header comment). */
static inline float sel_f32(int c, float a, float b)
{
    const uint32_t m = 0u - (uint32_t)(c != 0);
    return bits_f32((f32_bits(a) & m) | (f32_bits(b) & ~m));
}

/* e^x, Cephes expf: x = k ln2 + r with |r| <= ln2/2, a degree-6 polynomial
 * for e^r, then a scale by 2^k done as two multiplies (2^(k/2) twice) so that
 * results in the subnormal range round once instead of flushing to zero.
 * Max error ~1 ulp over the float range. Branch-free, so loops vectorise;
 * NaN passes through the clamps and the polynomial, +-inf give inf and 0. */
static inline float exp_f32(float x)
{
    /* Clamp (NaN passes: both tests are false). Blends, not ?:, or gcc
     * threads the constant 89 through the polynomial and gives up
     * vectorising because the constant-folded path "could trap". */
    float xc = sel_f32(x < -104.0f, -104.0f, x); /* e^-104 rounds to 0 */
    xc = sel_f32(xc > 89.0f, 89.0f, xc);         /* e^89 overflows to inf */
    /* k = round(x / ln2): adding 1.5 * 2^23 leaves k in the low mantissa
     * bits, which avoids a float -> int conversion (undefined for NaN). */
    const float t = xc * 1.44269504088896341f + 12582912.0f;
    const float fk = t - 12582912.0f;
    const int32_t k = (int32_t)(f32_bits(t) - 0x4B400000u);
    const float r = (xc - fk * 0.693359375f) - fk * -2.12194440e-4f; /* ln2 = hi + lo */
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    const int32_t k1 = k / 2, k2 = k - k1; /* each in [-75, 65]: normal scales */
    const float s1 = bits_f32(((uint32_t)k1 + 127u) << 23);
    const float s2 = bits_f32(((uint32_t)k2 + 127u) << 23);
    return y * s1 * s2;
}

/* tanh, Cephes tanhf: an odd polynomial for |x| < 0.625 (where 1 - 2/(e+1)
 * would cancel), else 1 - 2 / (e^{2|x|} + 1) with x's sign. ~2 ulp. */
static inline float tanh_f32(float x)
{
    const float ax = fabsf(x);
    const float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    const float small = x + x * z * p;
    const float e = exp_f32(2.0f * ax); /* inf for large |x|: 2/inf = 0 */
    const float big = bits_f32(f32_bits(1.0f - 2.0f / (e + 1.0f)) | (f32_bits(x) & 0x80000000u));
    return sel_f32(ax < 0.625f, small, big);
}

/* 1 / (1 + e^-x), stable for any x: with e = e^-|x| <= 1 nothing overflows;
 * x >= 0 gives 1 / (1 + e), x < 0 gives e / (1 + e) (no 1 - tiny). */
static inline float sigmoid_f32(float x)
{
    const float e = exp_f32(-fabsf(x));
    return sel_f32(x >= 0.0f, 1.0f, e) / (1.0f + e);
}

#endif /* LOOM_BACKENDS_REF_FASTMATH_H */
