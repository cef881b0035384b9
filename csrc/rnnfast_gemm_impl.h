/* rnnfast: bodies of the packed step GEMM for one precision. Included by
 * rnnfast_gemm.h with RNNFAST_REAL, RNNFAST_VEC (a 64-byte vector of REAL),
 * RNNFAST_VLEN (its length) and RNNFAST_FN defined. A panel is two vectors wide. */
#define REAL RNNFAST_REAL
#define VEC RNNFAST_VEC
#define VLEN RNNFAST_VLEN
#define NR (2 * VLEN)
#define MR RNNFAST_GEMM_MR
#define FN RNNFAST_FN

/* Number of REALs a packed (K, N) matrix takes. */
static inline size_t FN(packed_size)(ptrdiff_t K, ptrdiff_t N)
{
    return (size_t)((N + NR - 1) / NR) * (size_t)K * NR;
}

/* packed <- B (K, N), element (k, n) at b[k * stride_k + n * stride_n]: so B may be
 * a weight matrix (stride_k = N, stride_n = 1) or its transpose (1, K). */
static void FN(pack_panels)(ptrdiff_t K, ptrdiff_t N, const REAL *RNNFAST_RESTRICT b,
                            ptrdiff_t stride_k, ptrdiff_t stride_n,
                            REAL *RNNFAST_RESTRICT packed)
{
    for (ptrdiff_t p = 0; p * NR < N; p++)
        for (ptrdiff_t k = 0; k < K; k++) {
            REAL *row = packed + ((size_t)p * K + k) * NR;
            for (ptrdiff_t j = 0; j < NR; j++) {
                ptrdiff_t n = p * NR + j;
                row[j] = n < N ? b[k * stride_k + n * stride_n] : (REAL)0;
            }
        }
}

/* C[0:rows, 0:cols] += A[0:rows, :] (rows, K) @ panel (K, NR), rows <= MR. */
static inline __attribute__((always_inline)) void
FN(gemm_block)(int rows, ptrdiff_t K, const REAL *a, ptrdiff_t lda, const REAL *panel,
               REAL *c, ptrdiff_t ldc, ptrdiff_t cols)
{
    VEC acc[MR][2];
    for (int r = 0; r < rows; r++) {
        acc[r][0] = (VEC){0};
        acc[r][1] = (VEC){0};
    }
    for (ptrdiff_t k = 0; k < K; k++) {
        VEC w0, w1;
        memcpy(&w0, panel + k * NR, sizeof(VEC));
        memcpy(&w1, panel + k * NR + VLEN, sizeof(VEC));
        for (int r = 0; r < rows; r++) {
            REAL a_rk = a[r * lda + k];
            acc[r][0] += a_rk * w0;
            acc[r][1] += a_rk * w1;
        }
    }
    for (int r = 0; r < rows; r++) {
        REAL *c_r = c + r * ldc;
        if (cols == NR) {
            VEC c0, c1;
            memcpy(&c0, c_r, sizeof(VEC));
            memcpy(&c1, c_r + VLEN, sizeof(VEC));
            c0 += acc[r][0];
            c1 += acc[r][1];
            memcpy(c_r, &c0, sizeof(VEC));
            memcpy(c_r + VLEN, &c1, sizeof(VEC));
        } else {
            REAL sums[NR];
            memcpy(sums, acc[r], sizeof(sums));
            for (ptrdiff_t j = 0; j < cols; j++)
                c_r[j] += sums[j];
        }
    }
}

/* C (M, N) += A (M, K) @ B (K, N), B given as packed panels (see pack_panels).
 * Row-major with leading dimensions lda and ldc. */
RNNFAST_CLONES static void FN(gemm_packed)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                                           const REAL *a, ptrdiff_t lda,
                                           const REAL *packed, REAL *c, ptrdiff_t ldc)
{
    for (ptrdiff_t p = 0; p * NR < N; p++) {
        ptrdiff_t cols = N - p * NR < NR ? N - p * NR : NR;
        const REAL *panel = packed + (size_t)p * K * NR;
        ptrdiff_t m = 0;
        for (; m + MR <= M; m += MR)
            FN(gemm_block)(MR, K, a + m * lda, lda, panel, c + m * ldc + p * NR, ldc, cols);
        const REAL *a_rest = a + m * lda;
        REAL *c_rest = c + m * ldc + p * NR;
        switch (M - m) {  /* the last rows, with constant row counts so each unrolls */
        case 5: FN(gemm_block)(5, K, a_rest, lda, panel, c_rest, ldc, cols); break;
        case 4: FN(gemm_block)(4, K, a_rest, lda, panel, c_rest, ldc, cols); break;
        case 3: FN(gemm_block)(3, K, a_rest, lda, panel, c_rest, ldc, cols); break;
        case 2: FN(gemm_block)(2, K, a_rest, lda, panel, c_rest, ldc, cols); break;
        case 1: FN(gemm_block)(1, K, a_rest, lda, panel, c_rest, ldc, cols); break;
        default: break;
        }
    }
}

#undef FN
#undef MR
#undef NR
#undef VLEN
#undef VEC
#undef REAL
