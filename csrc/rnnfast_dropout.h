/* rnnfast: inverted-dropout masks from a counter-based generator, in one pass.
 *
 * Value k of a mask (k = 0 .. n-1), for a 64-bit key drawn from the layer's NumPy
 * generator once per mask:
 *   bits_k = SplitMix64(key + (k + 1) * 0x9e3779b97f4a7c15) >> (64 - BITS)
 *   mask_k = scale  if bits_k >= threshold  else 0
 * with BITS = 24 (float) or 53 (double). bits_k / 2^BITS is u_k, uniform on [0, 1)
 * at the resolution of NumPy's random floats of that dtype, and with threshold =
 * ceil(p * 2^BITS) the test is u_k >= p: a value is dropped with probability p (up to
 * that resolution). The values are SplitMix64's stream seeded with the key, a
 * generator that passes BigCrush; each depends on k alone, so the loop vectorises
 * and the parts of a mask could be filled in any order.
 */
#ifndef RNNFAST_DROPOUT_H
#define RNNFAST_DROPOUT_H

#include <stddef.h>
#include <stdint.h>

#include "rnnfast_gates.h"  /* RNNFAST_CLONES, RNNFAST_RESTRICT */

static inline uint64_t rnnfast_splitmix64(uint64_t counter)
{
    uint64_t z = counter;
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

#define RNNFAST_DROPOUT_MASK(NAME, REAL, BITS)                                           \
    RNNFAST_CLONES static void NAME(ptrdiff_t n, REAL *RNNFAST_RESTRICT mask,            \
                                    uint64_t key, uint64_t threshold, REAL scale)        \
    {                                                                                    \
        for (ptrdiff_t k = 0; k < n; k++) {                                              \
            uint64_t counter = key + ((uint64_t)k + 1) * UINT64_C(0x9e3779b97f4a7c15);   \
            uint64_t bits = rnnfast_splitmix64(counter) >> (64 - (BITS));                \
            mask[k] = bits >= threshold ? scale : (REAL)0;                               \
        }                                                                                \
    }

RNNFAST_DROPOUT_MASK(dropout_mask_f32, float, 24)
RNNFAST_DROPOUT_MASK(dropout_mask_f64, double, 53)

#undef RNNFAST_DROPOUT_MASK

#endif /* RNNFAST_DROPOUT_H */
