/* rnnfast: exp, sigmoid and tanh written so that loops over them vectorise.
 *
 * libm's expf/tanhf are scalar calls (about 10 ns each); the gate pass of an LSTM
 * makes five per hidden unit and step, which would cost more than the GEMMs at
 * small and medium sizes. These versions are branch-free straight-line code that
 * the compiler turns into SIMD instructions:
 *
 *   exp(x) = 2^n * exp(r),  n = round(x / ln 2),  r = x - n ln 2 in [-ln2/2, ln2/2]
 *
 * with exp(r) from a polynomial and 2^n built in the exponent bits. For double the
 * polynomial is exp's Taylor polynomial of degree 12 (truncation below 1.7e-16
 * relative); for float a degree-5 polynomial 1 + r (c1 + r (c2 + ...)) whose
 * coefficients minimise the largest relative error on the interval (7.4e-8; the
 * Taylor polynomial needs degree 6 for 1.2e-7), with its constant term exactly 1
 * so that tanh keeps its relative accuracy near 0. Measured against libm
 * (tests/c/gate_math.c): expf 2e-7 relative, sigmoidf 1e-7 and tanhf 1.4e-7
 * absolute.
 * The argument is clamped to the finite range first, so exp never returns inf;
 * that is exact enough for sigmoid and tanh, which saturate long before. NaN
 * propagates through the arithmetic (the clamp keeps it), with no select for it.
 * The clamp is written as two one-sided selects, max(lo, x) and then min(hi, ·),
 * each of a value against a constant: one nested select cost about 5 % more
 * in the LSTM gate pass.
 */
#ifndef RNNFAST_MATH_H
#define RNNFAST_MATH_H

#include <math.h>
#include <stdint.h>

/* Put before a reduction loop (a sum, a maximum), it vectorises the loop, in another
 * order than one by one, where the compiler takes OpenMP's simd directive
 * (-fopenmp-simd); elsewhere the loop runs as written. */
#define RNNFAST_PRAGMA(text) _Pragma(#text)
#define RNNFAST_SIMD_REDUCTION(clause) RNNFAST_PRAGMA(omp simd reduction(clause))

/* ---------------------------------------------------------------- float */

static inline float rnnfast_expf(float x)
{
    /* 1.5 * 2^23 + 127: adding it rounds to an integer, held as n + 127 in the low
     * bits, so the exponent bits of 2^n are those bits moved up by 23 */
    const float magic = 12582912.0f + 127.0f;
    float low = -87.0f > x ? -87.0f : x;        /* max(-87, x), NaN kept */
    float clamped = 88.0f < low ? 88.0f : low;  /* min(88, low), NaN kept */
    float shifted = clamped * 1.44269504088896341f + magic;
    float n = shifted - magic;
    float r = (clamped - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.0f + r * (1.0000000516630947f + r * (0.4999904330144857f
              + r * (0.1666693949935534f + r * (0.04190804478324873f
              + r * 0.008325664062364986f))));
    union { float f; uint32_t i; } scale;
    scale.f = shifted;
    scale.i <<= 23;  /* 2^n */
    return p * scale.f;
}

static inline float rnnfast_sigmoidf(float x)
{
    return 1.0f / (1.0f + rnnfast_expf(-x));
}

/* tanh(x) = (exp(2x) - 1) / (exp(2x) + 1): absolute error about 1.4e-7. */
static inline float rnnfast_tanhf(float x)
{
    float e = rnnfast_expf(2.0f * x);
    return (e - 1.0f) / (e + 1.0f);
}

/* ---------------------------------------------------------------- double */

static inline double rnnfast_exp(double x)
{
    const double magic = 6755399441055744.0 + 1023.0;  /* 1.5 * 2^52 + 1023 */
    double low = -708.0 > x ? -708.0 : x;        /* max(-708, x), NaN kept */
    double clamped = 709.0 < low ? 709.0 : low;  /* min(709, low), NaN kept */
    double shifted = clamped * 1.44269504088896338700 + magic;
    double n = shifted - magic;
    double r = (clamped - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
    double p = 1.0 + r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24
               + r * (1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320
               + r * (1.0 / 362880 + r * (1.0 / 3628800 + r * (1.0 / 39916800
               + r * (1.0 / 479001600))))))))))));
    union { double f; uint64_t i; } scale;
    scale.f = shifted;
    scale.i <<= 52;  /* 2^n */
    return p * scale.f;
}

static inline double rnnfast_sigmoid(double x)
{
    return 1.0 / (1.0 + rnnfast_exp(-x));
}

/* tanh(x) = (exp(2x) - 1) / (exp(2x) + 1): absolute error about 2e-16. */
static inline double rnnfast_tanh(double x)
{
    double e = rnnfast_exp(2.0 * x);
    return (e - 1.0) / (e + 1.0);
}

#endif /* RNNFAST_MATH_H */
