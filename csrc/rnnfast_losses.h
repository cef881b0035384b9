/* rnnfast: softmax cross-entropy over rows of logits, loss and gradient in one pass.
 *
 * For each row z (C,) of logits whose target t is not ignore_index:
 *   m       = max_c z[c]
 *   e[c]    = exp(z[c] - m)                   in [0, 1], e[argmax] = 1
 *   s       = sum_c e[c]                      >= 1
 *   loss_r  = log s - (z[t] - m)              = -log softmax(z)[t]
 *   dz[c]   = (e[c] / s - [c == t]) * scale   (scale = 1 / the number of counted rows)
 * and dz = 0 on rows whose target is ignore_index (their logits are never read). The
 * function returns the sum of loss_r over the counted rows, accumulated in double.
 *
 * exp is rnnfast_math.h's, which vectorises, with 0 below its range (z - m < -87 in
 * float, -708 in double: exp underflows there, as NumPy's and torch's do). The
 * maximum and the sum vectorise as OpenMP simd reductions. A NaN logit makes its
 * row's loss and gradient NaN (z - m and exp keep NaN, whatever the maximum made of
 * it), an infinite one too (inf - inf), as the NumPy form's.
 */
#ifndef RNNFAST_LOSSES_H
#define RNNFAST_LOSSES_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rnnfast_gates.h"  /* RNNFAST_CLONES, RNNFAST_RESTRICT */
#include "rnnfast_math.h"   /* exp, RNNFAST_SIMD_REDUCTION */

#define RNNFAST_SOFTMAX_CROSS_ENTROPY(NAME, REAL, EXP, EXP_MIN, LOG)                       \
    RNNFAST_CLONES static double NAME(                                                   \
        ptrdiff_t rows, ptrdiff_t C, const REAL *RNNFAST_RESTRICT logits,                \
        const int64_t *RNNFAST_RESTRICT targets, int64_t ignore_index, REAL scale,        \
        REAL *RNNFAST_RESTRICT dlogits)                                                  \
    {                                                                                    \
        double total = 0.0;                                                              \
        for (ptrdiff_t r = 0; r < rows; r++) {                                           \
            const REAL *z = logits + r * C;                                              \
            REAL *dz = dlogits + r * C;                                                  \
            int64_t t = targets[r];                                                      \
            if (t == ignore_index) {                                                     \
                memset(dz, 0, (size_t)C * sizeof(REAL));                                 \
                continue;                                                                \
            }                                                                            \
            /* m = max_c z[c] */                                                         \
            REAL m = -INFINITY;                                                          \
            RNNFAST_SIMD_REDUCTION(max : m)                                              \
            for (ptrdiff_t c = 0; c < C; c++)                                            \
                m = z[c] > m ? z[c] : m;                                                 \
            /* e[c] into dz, s = sum_c e[c] */                                           \
            REAL s = 0;                                                                  \
            RNNFAST_SIMD_REDUCTION(+ : s)                                                \
            for (ptrdiff_t c = 0; c < C; c++) {                                          \
                REAL shifted = z[c] - m;                                                 \
                REAL e = shifted < EXP_MIN ? 0 : EXP(shifted);                           \
                dz[c] = e;                                                               \
                s += e;                                                                  \
            }                                                                            \
            total += (double)LOG(s) - (double)(z[t] - m);                                \
            /* dz = (e / s - onehot(t)) * scale */                                       \
            REAL weight = scale / s;                                                     \
            for (ptrdiff_t c = 0; c < C; c++)                                            \
                dz[c] *= weight;                                                         \
            dz[t] -= scale;                                                              \
        }                                                                                \
        return total;                                                                    \
    }

RNNFAST_SOFTMAX_CROSS_ENTROPY(softmax_cross_entropy_f32, float, rnnfast_expf, -87.0f, logf)
RNNFAST_SOFTMAX_CROSS_ENTROPY(softmax_cross_entropy_f64, double, rnnfast_exp, -708.0, log)

#undef RNNFAST_SOFTMAX_CROSS_ENTROPY

#endif /* RNNFAST_LOSSES_H */
