/* rnnfast: one Adam / AdamW update of a parameter, in one pass over its values.
 *
 * The same operations, in the same order and precision, as the NumPy form in
 * rnnfast/optim.py (Adam._update), so the two give bitwise the same values when
 * compiled without contracting a * b + c into fused multiply-adds (the extension
 * that includes this header is built with -ffp-contract=off). The scalars arrive
 * in double and are rounded to the arrays' precision first, as NumPy rounds a
 * Python float scalar taking part in an operation on float32 arrays.
 *
 * Per value, with n = the number of values:
 *   g  = g + weight_decay * p                  (coupled decay: Adam)
 *   p  = p * decay                             (decoupled decay: AdamW; 1 otherwise)
 *   m  = m + w * (g - m)        for w = 1 - beta1 < 0.5, else
 *   m  = g - (g - m) * (1 - w)  (torch's lerp)
 *   v  = v * beta2 + ((1 - beta2) * g) * g
 *   p  = p - (step_size * m) / (sqrt(v) / bias_correction2_sqrt + eps)
 */
#ifndef RNNFAST_ADAM_H
#define RNNFAST_ADAM_H

#include <math.h>
#include <stddef.h>

#include "rnnfast_gates.h"  /* RNNFAST_CLONES, RNNFAST_RESTRICT */

/* adam_update_f32 / _f64: coupled: add weight_decay * p to g (Adam); decoupled:
 * multiply p by decay first (AdamW); weight = 1 - beta1. */
#define RNNFAST_ADAM_UPDATE(NAME, REAL, SQRT)                                            \
    RNNFAST_CLONES static void NAME(                                                     \
        ptrdiff_t n, REAL *RNNFAST_RESTRICT param, const REAL *RNNFAST_RESTRICT grad,    \
        REAL *RNNFAST_RESTRICT exp_avg, REAL *RNNFAST_RESTRICT exp_avg_sq, int coupled,  \
        double weight_decay, int decoupled, double decay, double weight, double beta2,   \
        double step_size, double bias_correction2_sqrt, double eps)                      \
    {                                                                                    \
        const REAL wd = (REAL)weight_decay, keep = (REAL)decay, w = (REAL)weight;         \
        const REAL w_rest = (REAL)(1.0 - weight), b2 = (REAL)beta2;                       \
        const REAL b2_rest = (REAL)(1.0 - beta2), step = (REAL)step_size;                 \
        const REAL bc2 = (REAL)bias_correction2_sqrt, e = (REAL)eps;                      \
        for (ptrdiff_t k = 0; k < n; k++) {                                              \
            REAL g = grad[k];                                                            \
            if (coupled)                                                                 \
                g = g + wd * param[k];                                                   \
            REAL p = decoupled ? param[k] * keep : param[k];                             \
            REAL m = exp_avg[k];                                                         \
            m = weight < 0.5 ? m + w * (g - m) : g - (g - m) * w_rest;                    \
            REAL v = exp_avg_sq[k] * b2 + (b2_rest * g) * g;                             \
            exp_avg[k] = m;                                                              \
            exp_avg_sq[k] = v;                                                           \
            param[k] = p - (step * m) / (SQRT(v) / bc2 + e);                             \
        }                                                                                \
    }

RNNFAST_ADAM_UPDATE(adam_update_f32, float, sqrtf)
RNNFAST_ADAM_UPDATE(adam_update_f64, double, sqrt)

#undef RNNFAST_ADAM_UPDATE

#endif /* RNNFAST_ADAM_H */
