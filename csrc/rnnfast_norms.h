/* rnnfast: the sum of squares of an array, in double, in one pass (the gradient norm
 * of rnnfast.optim.clip_grad_norm): sum_k (double)x[k]^2, with no float64 copy of a
 * float32 array. It vectorises as an OpenMP simd reduction (rnnfast_math.h). */
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

RNNFAST_SUM_OF_SQUARES(sum_of_squares_f32, float)
RNNFAST_SUM_OF_SQUARES(sum_of_squares_f64, double)

#undef RNNFAST_SUM_OF_SQUARES

#endif /* RNNFAST_NORMS_H */
