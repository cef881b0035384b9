/* rnnfast: the recurrent product of one time step, C += A op(W), on weights packed
 * once per call; the input projection and dx = dG W_ih on the same kernel; and the
 * weight gradients A^T B (gemm_at_b).
 *
 * Per step the recurrent GEMM is small in its rows (the batch) and reuses the same
 * weight matrix T times. A BLAS call repacks that matrix on every call; here it is
 * packed once into column panels of NR values, and a register-blocked kernel of
 * MR rows x NR columns streams each panel once per step. Written with GCC/Clang
 * vector extensions, so one source compiles to SSE, AVX2 or AVX-512 (the driver is
 * multi-versioned like the gate passes).
 *
 * Packed layout: for the product C (M, N) += A (M, K) B (K, N), panel p holds
 * B[k, p*NR + j] at packed[(p*K + k)*NR + j], zero beyond column N.
 */
#ifndef RNNFAST_GEMM_H
#define RNNFAST_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rnnfast_gates.h"  /* RNNFAST_CLONES, RNNFAST_RESTRICT */

#define RNNFAST_GEMM_MR 6
/* Row blocks of 8 serve where they leave no shorter block behind (see gemm_rows). */
#define RNNFAST_GEMM_MR_WIDE 8
#define RNNFAST_GEMV_PANELS 4  /* panels per pass of the one-row product */
/* Block of B packed at a time by gemm_at_b: rows x panels. Measured on a weight
 * gradient of K = 3200 rows: 256 rows as fast as 128, ahead of 512. */
#define RNNFAST_AT_B_ROWS 256
#define RNNFAST_AT_B_PANELS 16

/* Whether 64-byte vectors are native here (AVX-512): packing transposes blocks in
 * registers only then; elsewhere the compiler splits each 64-byte shuffle into many
 * narrower ones, slower than moving one value at a time. */
static inline int rnnfast_native_64byte_vectors(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

typedef float rnnfast_v16sf __attribute__((vector_size(64)));
typedef double rnnfast_v8df __attribute__((vector_size(64)));
typedef int32_t rnnfast_v16si __attribute__((vector_size(64)));
typedef int64_t rnnfast_v8di __attribute__((vector_size(64)));

#define RNNFAST_REAL float
#define RNNFAST_VEC rnnfast_v16sf
#define RNNFAST_IVEC rnnfast_v16si
#define RNNFAST_VLEN 16
#define RNNFAST_FN(name) name##_f32
#include "rnnfast_gemm_impl.h"
#undef RNNFAST_REAL
#undef RNNFAST_VEC
#undef RNNFAST_IVEC
#undef RNNFAST_VLEN
#undef RNNFAST_FN

#define RNNFAST_REAL double
#define RNNFAST_VEC rnnfast_v8df
#define RNNFAST_IVEC rnnfast_v8di
#define RNNFAST_VLEN 8
#define RNNFAST_FN(name) name##_f64
#include "rnnfast_gemm_impl.h"
#undef RNNFAST_REAL
#undef RNNFAST_VEC
#undef RNNFAST_IVEC
#undef RNNFAST_VLEN
#undef RNNFAST_FN

#endif /* RNNFAST_GEMM_H */
