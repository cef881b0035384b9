/* rnnfast: the two passes of rnnfast.optim.clip_grad_norm over a gradient. The sum of
 * its squares in double, in one pass: sum_k (double)x[k]^2, with no float64 copy of
 * a float32 array; it vectorises as an OpenMP simd reduction (rnnfast_math.h). And
 * its scaling x[k] = x[k] * factor, the factor rounded to the array's precision
 * first, as NumPy multiplies a float32 array by a Python float. */
#ifndef RNNFAST_NORMS_H
#define RNNFAST_NORMS_H

#include <stddef.h>

#include "rnnfast_gates.h"  /* RNNFAST_CLONES, RNNFAST_RESTRICT */
#include "rnnfast_math.h"   /* RNNFAST_SIMD_REDUCTION */

#define RNNFAST_SUM_OF_SQUARES(NAME, REAL)                                               \
    RNNFAST_CLONES static double NAME(ptrdiff_t n, const REAL *RNNFAST_RESTRICT values)  \
    {                                                                                    \
        double total = 0.0;                                                              \
        RNNFAST_SIMD_REDUCTION(+ : total)                                                \
        for (ptrdiff_t k = 0; k < n; k++)                                                \
            total += (double)values[k] * (double)values[k];                              \
        return total;                                                                    \
    }

#define RNNFAST_SCALE(NAME, REAL)                                                        \
    RNNFAST_CLONES static void NAME(ptrdiff_t n, REAL *RNNFAST_RESTRICT values,          \
                                    double factor)                                       \
    {                                                                                    \
        const REAL rounded = (REAL)factor;                                               \
        for (ptrdiff_t k = 0; k < n; k++)                                                \
            values[k] = values[k] * rounded;                                             \
    }

RNNFAST_SUM_OF_SQUARES(sum_of_squares_f32, float)
RNNFAST_SUM_OF_SQUARES(sum_of_squares_f64, double)
RNNFAST_SCALE(scale_f32, float)
RNNFAST_SCALE(scale_f64, double)

#undef RNNFAST_SUM_OF_SQUARES
#undef RNNFAST_SCALE

#endif /* RNNFAST_NORMS_H */
