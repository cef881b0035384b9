/* rnnfast: bodies of the packed step GEMM for one precision. Included by
 * rnnfast_gemm.h with RNNFAST_REAL, RNNFAST_VEC (a 64-byte vector of REAL),
 * RNNFAST_VLEN (its length) and RNNFAST_FN defined. A panel is two vectors wide. */
#define REAL RNNFAST_REAL
#define VEC RNNFAST_VEC
#define IVEC RNNFAST_IVEC
#define VLEN RNNFAST_VLEN
#define NR (2 * VLEN)
#define MR RNNFAST_GEMM_MR
#define MR_WIDE RNNFAST_GEMM_MR_WIDE
#define FN RNNFAST_FN

/* Number of REALs a packed (K, N) matrix takes. */
static inline size_t FN(packed_size)(ptrdiff_t K, ptrdiff_t N)
{
    return (size_t)((N + NR - 1) / NR) * (size_t)K * NR;
}

/* The swap of transpose_block at distance d: lane l of row i takes lane l - d of row
 * i + d where bit d of l is set, and lane l of row i + d takes lane l + d of row i
 * where it is clear (as shuffle indices: VLEN + l is lane l of the second vector). */
#define FROM_LOWER(l, d) (((l) & (d)) ? VLEN + (l) - (d) : (l))
#define FROM_UPPER(l, d) (((l) & (d)) ? VLEN + (l) : (l) + (d))
#if VLEN == 16
#define LANES(F, d) (IVEC){F(0, d), F(1, d), F(2, d), F(3, d), F(4, d), F(5, d), F(6, d), \
                           F(7, d), F(8, d), F(9, d), F(10, d), F(11, d), F(12, d),    \
                           F(13, d), F(14, d), F(15, d)}
#else
#define LANES(F, d) (IVEC){F(0, d), F(1, d), F(2, d), F(3, d), F(4, d), F(5, d), F(6, d), \
                           F(7, d)}
#endif

static inline __attribute__((always_inline)) void
FN(swap_blocks)(VEC rows[VLEN], int d, const IVEC *from_lower, const IVEC *from_upper)
{
    for (int i = 0; i < VLEN; i++) {
        if (i & d)
            continue;
        VEC upper = rows[i], lower = rows[i + d];
        rows[i] = __builtin_shuffle(upper, lower, *from_lower);
        rows[i + d] = __builtin_shuffle(upper, lower, *from_upper);
    }
}

/* rows[i] <- column i of the VLEN x VLEN block held in rows (row i in rows[i]): the
 * off-diagonal d x d sub-blocks swap places for d = VLEN/2, ..., 2, 1. */
static inline __attribute__((always_inline)) void FN(transpose_block)(VEC rows[VLEN])
{
#if VLEN == 16
    const IVEC lower8 = LANES(FROM_LOWER, 8), upper8 = LANES(FROM_UPPER, 8);
    FN(swap_blocks)(rows, 8, &lower8, &upper8);
#endif
    const IVEC lower4 = LANES(FROM_LOWER, 4), upper4 = LANES(FROM_UPPER, 4);
    const IVEC lower2 = LANES(FROM_LOWER, 2), upper2 = LANES(FROM_UPPER, 2);
    const IVEC lower1 = LANES(FROM_LOWER, 1), upper1 = LANES(FROM_UPPER, 1);
    FN(swap_blocks)(rows, 4, &lower4, &upper4);
    FN(swap_blocks)(rows, 2, &lower2, &upper2);
    FN(swap_blocks)(rows, 1, &lower1, &upper1);
}
#undef LANES
#undef FROM_UPPER
#undef FROM_LOWER

/* packed <- B (K, N), element (k, n) at b[k * stride_k + n * stride_n]: so B may be
 * a weight matrix (stride_k = N, stride_n = 1) or its transpose (1, K). Each loop
 * reads B along its contiguous direction; the last panel's columns beyond N are 0. */
RNNFAST_CLONES static void FN(pack_panels)(ptrdiff_t K, ptrdiff_t N,
                                           const REAL *RNNFAST_RESTRICT b,
                                           ptrdiff_t stride_k, ptrdiff_t stride_n,
                                           REAL *RNNFAST_RESTRICT packed)
{
    ptrdiff_t panels = (N + NR - 1) / NR;
    if (N % NR)
        memset(packed + (size_t)(panels - 1) * K * NR, 0, (size_t)K * NR * sizeof(REAL));
    if (stride_n == 1) {
        /* rows of B are contiguous: copy each row's NR-wide slice into its panel */
        for (ptrdiff_t p = 0; p < panels; p++) {
            ptrdiff_t width = N - p * NR < NR ? N - p * NR : NR;
            for (ptrdiff_t k = 0; k < K; k++)
                memcpy(packed + ((size_t)p * K + k) * NR, b + k * stride_k + p * NR,
                       (size_t)width * sizeof(REAL));
        }
        return;
    }
    /* columns of B are contiguous (B = W^T, W row-major): column n goes to lane n % NR
     * of panel n / NR, VLEN columns x VLEN rows at a time transposed in registers */
    int blocked = stride_k == 1 && rnnfast_native_64byte_vectors();
    ptrdiff_t n_blocked = blocked ? N / VLEN * VLEN : 0, k_blocked = K / VLEN * VLEN;
    for (ptrdiff_t n0 = 0; n0 < n_blocked; n0 += VLEN) {
        const REAL *columns = b + n0 * stride_n;
        REAL *lanes = packed + (size_t)(n0 / NR) * K * NR + n0 % NR;
        for (ptrdiff_t k0 = 0; k0 < k_blocked; k0 += VLEN) {
            VEC block[VLEN];
            for (int i = 0; i < VLEN; i++)
                memcpy(&block[i], columns + i * stride_n + k0, sizeof(VEC));
            FN(transpose_block)(block);
            for (int i = 0; i < VLEN; i++)
                memcpy(lanes + (k0 + i) * NR, &block[i], sizeof(VEC));
        }
        for (ptrdiff_t k = k_blocked; k < K; k++)
            for (int i = 0; i < VLEN; i++)
                lanes[k * NR + i] = columns[i * stride_n + k];
    }
    for (ptrdiff_t n = n_blocked; n < N; n++) {
        const REAL *column = b + n * stride_n;
        REAL *lane = packed + (size_t)(n / NR) * K * NR + n % NR;
        for (ptrdiff_t k = 0; k < K; k++)
            lane[k * NR] = column[k * stride_k];
    }
}

/* dst[c * ld_dst + r] = src[r * ld_src + c] + add[r] (add may be NULL for 0), r < rows,
 * c < cols: a product computed transposed, C^T (rows, cols), written out as C with a
 * bias per column. Blocks of VLEN x VLEN are transposed in registers where 64-byte
 * vectors are native (see pack_panels). */
RNNFAST_CLONES static void FN(transpose_add)(ptrdiff_t rows, ptrdiff_t cols,
                                             const REAL *RNNFAST_RESTRICT src,
                                             ptrdiff_t ld_src, const REAL *add,
                                             REAL *RNNFAST_RESTRICT dst, ptrdiff_t ld_dst)
{
    int blocked = rnnfast_native_64byte_vectors();
    ptrdiff_t r_blocked = blocked ? rows / VLEN * VLEN : 0;
    ptrdiff_t c_blocked = cols / VLEN * VLEN;
    for (ptrdiff_t r0 = 0; r0 < r_blocked; r0 += VLEN) {
        VEC bias = (VEC){0};
        if (add)
            memcpy(&bias, add + r0, sizeof(VEC));
        for (ptrdiff_t c0 = 0; c0 < c_blocked; c0 += VLEN) {
            VEC block[VLEN];
            for (int i = 0; i < VLEN; i++)
                memcpy(&block[i], src + (r0 + i) * ld_src + c0, sizeof(VEC));
            FN(transpose_block)(block);
            for (int i = 0; i < VLEN; i++) {
                VEC column = block[i] + bias;
                memcpy(dst + (c0 + i) * ld_dst + r0, &column, sizeof(VEC));
            }
        }
        for (ptrdiff_t c = c_blocked; c < cols; c++)
            for (ptrdiff_t r = r0; r < r0 + VLEN; r++)
                dst[c * ld_dst + r] = src[r * ld_src + c] + (add ? add[r] : 0);
    }
    for (ptrdiff_t c = 0; c < cols; c++)
        for (ptrdiff_t r = r_blocked; r < rows; r++)
            dst[c * ld_dst + r] = src[r * ld_src + c] + (add ? add[r] : 0);
}

/* C[0:rows, 0:cols] += acc[0:rows] (each row two vectors, NR values), or = acc
 * where not ``accumulate``. */
static inline __attribute__((always_inline)) void
FN(gemm_store)(int rows, VEC acc[][2], REAL *c, ptrdiff_t ldc, ptrdiff_t cols, int accumulate)
{
    for (int r = 0; r < rows; r++) {
        REAL *c_r = c + r * ldc;
        if (cols == NR) {
            VEC c0 = acc[r][0], c1 = acc[r][1];
            if (accumulate) {
                VEC old0, old1;
                memcpy(&old0, c_r, sizeof(VEC));
                memcpy(&old1, c_r + VLEN, sizeof(VEC));
                c0 += old0;
                c1 += old1;
            }
            memcpy(c_r, &c0, sizeof(VEC));
            memcpy(c_r + VLEN, &c1, sizeof(VEC));
        } else {
            REAL sums[NR];
            memcpy(sums, acc[r], sizeof(sums));
            for (ptrdiff_t j = 0; j < cols; j++)
                c_r[j] = accumulate ? c_r[j] + sums[j] : sums[j];
        }
    }
}

/* C[0:rows, 0:cols] += A[0:rows, :] (rows, K) @ panel (K, NR), rows <= MR_WIDE; element
 * (r, k) of A at a[r * a_row + k * a_k] (see gemm_rows). */
static inline __attribute__((always_inline)) void
FN(gemm_block)(int rows, ptrdiff_t K, const REAL *a, ptrdiff_t a_row, ptrdiff_t a_k,
               const REAL *panel, REAL *c, ptrdiff_t ldc, ptrdiff_t cols, int accumulate)
{
    VEC acc[MR_WIDE][2];
    for (int r = 0; r < rows; r++) {
        acc[r][0] = (VEC){0};
        acc[r][1] = (VEC){0};
        /* the block of C is read after the loop: fetch it now (measured 4-10 % faster
         * on weight gradients, whose C is swept once per block of rows of B) */
        if (accumulate) {
            __builtin_prefetch(c + r * ldc, 1);
            __builtin_prefetch(c + r * ldc + cols - 1, 1);
        }
    }
    for (ptrdiff_t k = 0; k < K; k++) {
        VEC w0, w1;
        memcpy(&w0, panel + k * NR, sizeof(VEC));
        memcpy(&w1, panel + k * NR + VLEN, sizeof(VEC));
        for (int r = 0; r < rows; r++) {
            REAL a_rk = a[r * a_row + k * a_k];
            acc[r][0] += a_rk * w0;
            acc[r][1] += a_rk * w1;
        }
    }
    FN(gemm_store)(rows, acc, c, ldc, cols, accumulate);
}

/* gemm_block for one or two rows (a batch of one or two, as in streaming or small
 * batches): with so few rows one accumulator chain per row would wait on the FMA
 * latency at every k, so the sum over k runs in 4 / rows interleaved chains. */
static inline __attribute__((always_inline)) void
FN(gemm_block_few)(int rows, ptrdiff_t K, const REAL *a, ptrdiff_t a_row, ptrdiff_t a_k,
                   const REAL *panel, REAL *c, ptrdiff_t ldc, ptrdiff_t cols, int accumulate)
{
    enum { MAX_CHAINS = 4 };
    const int chains = MAX_CHAINS / rows;
    VEC acc[MAX_CHAINS][2][2];
    for (int ch = 0; ch < chains; ch++)
        for (int r = 0; r < rows; r++) {
            acc[ch][r][0] = (VEC){0};
            acc[ch][r][1] = (VEC){0};
        }
    ptrdiff_t k = 0;
    for (; k + chains <= K; k += chains)
        for (int ch = 0; ch < chains; ch++) {
            VEC w0, w1;
            memcpy(&w0, panel + (k + ch) * NR, sizeof(VEC));
            memcpy(&w1, panel + (k + ch) * NR + VLEN, sizeof(VEC));
            for (int r = 0; r < rows; r++) {
                REAL a_rk = a[r * a_row + (k + ch) * a_k];
                acc[ch][r][0] += a_rk * w0;
                acc[ch][r][1] += a_rk * w1;
            }
        }
    for (; k < K; k++) {
        VEC w0, w1;
        memcpy(&w0, panel + k * NR, sizeof(VEC));
        memcpy(&w1, panel + k * NR + VLEN, sizeof(VEC));
        for (int r = 0; r < rows; r++) {
            REAL a_rk = a[r * a_row + k * a_k];
            acc[0][r][0] += a_rk * w0;
            acc[0][r][1] += a_rk * w1;
        }
    }
    for (int ch = 1; ch < chains; ch++)
        for (int r = 0; r < rows; r++) {
            acc[0][r][0] += acc[ch][r][0];
            acc[0][r][1] += acc[ch][r][1];
        }
    FN(gemm_store)(rows, acc[0], c, ldc, cols, accumulate);
}

/* C[0, p0*NR : p0*NR + panels*NR] += a (1, K) @ panels p0 .. p0+panels-1: one row
 * against up to RNNFAST_GEMV_PANELS panels at once, k outermost, so that each a[k] is
 * broadcast once for all of them. */
static inline __attribute__((always_inline)) void
FN(gemv_panels)(int panels, ptrdiff_t K, const REAL *a, const REAL *packed, ptrdiff_t p0,
                REAL *c, ptrdiff_t N, int accumulate)
{
    VEC acc[RNNFAST_GEMV_PANELS][2];
    const REAL *first = packed + (size_t)p0 * K * NR;
    for (int g = 0; g < panels; g++) {
        acc[g][0] = (VEC){0};
        acc[g][1] = (VEC){0};
    }
    for (ptrdiff_t k = 0; k < K; k++) {
        REAL a_k = a[k];
        for (int g = 0; g < panels; g++) {
            VEC w0, w1;
            memcpy(&w0, first + ((size_t)g * K + k) * NR, sizeof(VEC));
            memcpy(&w1, first + ((size_t)g * K + k) * NR + VLEN, sizeof(VEC));
            acc[g][0] += a_k * w0;
            acc[g][1] += a_k * w1;
        }
    }
    for (int g = 0; g < panels; g++) {
        ptrdiff_t column = (p0 + g) * NR;
        FN(gemm_store)(1, &acc[g], c + column, 0, N - column < NR ? N - column : NR,
                       accumulate);
    }
}

/* C (1, N) += a (1, K) @ B (K, N) for a packed B small enough to stay in L1 (see
 * gemm_packed). */
RNNFAST_CLONES static void FN(gemv_packed)(ptrdiff_t N, ptrdiff_t K, const REAL *a,
                                           const REAL *packed, REAL *c, int accumulate)
{
    ptrdiff_t panels = (N + NR - 1) / NR, p = 0;
    for (; p + RNNFAST_GEMV_PANELS <= panels; p += RNNFAST_GEMV_PANELS)
        FN(gemv_panels)(RNNFAST_GEMV_PANELS, K, a, packed, p, c, N, accumulate);
    switch (panels - p) {  /* constant panel counts, so each unrolls */
    case 3: FN(gemv_panels)(3, K, a, packed, p, c, N, accumulate); break;
    case 2: FN(gemv_panels)(2, K, a, packed, p, c, N, accumulate); break;
    case 1: FN(gemv_panels)(1, K, a, packed, p, c, N, accumulate); break;
    default: break;
    }
}

/* C (M, N) += A (M, K) @ B (K, N), or C = A @ B where not ``accumulate``, B given as
 * packed panels (see pack_panels), C row-major with leading dimension ldc and element
 * (m, k) of A at a[m * a_row + k * a_k]: a row-major A has (a_row, a_k) = (lda, 1),
 * and a row-major A^T, stored (K, M), has (1, lda). Each caller passes constants
 * there, so this inlines to a kernel for each layout.
 *
 * Row blocks outermost: a block of A (MR x K) stays in L1 while the panels stream past
 * it, and each block of C is finished in one visit. (Panels outermost would sweep all
 * of C once per panel: measured 5-30 % slower, most at large M or K.) */
static inline __attribute__((always_inline)) void
FN(gemm_rows)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const REAL *a, ptrdiff_t a_row,
              ptrdiff_t a_k, const REAL *packed, REAL *c, ptrdiff_t ldc, int accumulate)
{
    /* Blocks of MR rows, but first one or two of MR_WIDE where that leaves a multiple
     * of MR (M % MR = 2 or 4): M = 16 runs 8 + 8 instead of 6 + 6 + 4, whose short
     * block streams every panel for few rows. Measured on one core (N = 512, K = 128):
     * M = 8 +7 %, 16 +2 %; more rows of 8 than that lose to blocks of 6. */
    ptrdiff_t m = 0, wide = M % MR == 2 ? 1 : M % MR == 4 ? 2 : 0;
    if (M < wide * MR_WIDE)
        wide = 0;
    for (; m < wide * MR_WIDE; m += MR_WIDE)
        for (ptrdiff_t p = 0; p * NR < N; p++)
            FN(gemm_block)(MR_WIDE, K, a + m * a_row, a_row, a_k,
                           packed + (size_t)p * K * NR, c + m * ldc + p * NR, ldc,
                           N - p * NR < NR ? N - p * NR : NR, accumulate);
    for (; m + MR <= M; m += MR)
        for (ptrdiff_t p = 0; p * NR < N; p++)
            FN(gemm_block)(MR, K, a + m * a_row, a_row, a_k, packed + (size_t)p * K * NR,
                           c + m * ldc + p * NR, ldc, N - p * NR < NR ? N - p * NR : NR,
                           accumulate);
    if (m == M)
        return;
    const REAL *a_rest = a + m * a_row;
    for (ptrdiff_t p = 0; p * NR < N; p++) {
        ptrdiff_t cols = N - p * NR < NR ? N - p * NR : NR;
        const REAL *panel = packed + (size_t)p * K * NR;
        REAL *c_rest = c + m * ldc + p * NR;
        /* the last rows, with constant row counts so each unrolls. Split chains sum
         * in another order, so they serve only calls of one or two rows: then a row's
         * result never depends on how the rows of a larger product are split. */
        switch ((M - m) + (M <= 2 ? 8 : 0)) {
        case 5: FN(gemm_block)(5, K, a_rest, a_row, a_k, panel, c_rest, ldc, cols, accumulate); break;
        case 4: FN(gemm_block)(4, K, a_rest, a_row, a_k, panel, c_rest, ldc, cols, accumulate); break;
        case 3: FN(gemm_block)(3, K, a_rest, a_row, a_k, panel, c_rest, ldc, cols, accumulate); break;
        case 2: FN(gemm_block)(2, K, a_rest, a_row, a_k, panel, c_rest, ldc, cols, accumulate); break;
        case 1: FN(gemm_block)(1, K, a_rest, a_row, a_k, panel, c_rest, ldc, cols, accumulate); break;
        case 8 + 2: FN(gemm_block_few)(2, K, a_rest, a_row, a_k, panel, c_rest, ldc, cols, accumulate); break;
        case 8 + 1: FN(gemm_block_few)(1, K, a_rest, a_row, a_k, panel, c_rest, ldc, cols, accumulate); break;
        default: break;
        }
    }
}

/* C (M, N) += A (M, K) @ B (K, N), or C = A @ B where not ``accumulate``, B given as
 * packed panels (see pack_panels). Row-major with leading dimensions lda and ldc. */
static inline __attribute__((always_inline)) void
FN(gemm_packed_body)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const REAL *a, ptrdiff_t lda,
                     const REAL *packed, REAL *c, ptrdiff_t ldc, int accumulate)
{
    /* One row (a batch of one) on two or more panels that fit in L1 (32 KiB):
     * gemv_packed broadcasts each a[k] once for up to four panels; measured 15-20 %
     * faster there. One panel needs the split chains of gemm_block_few to hide the
     * FMA latency, and from L2 the row-block order of gemm_rows keeps up better. */
    if (M == 1 && N > NR && FN(packed_size)(K, N) * sizeof(REAL) <= 32768) {
        FN(gemv_packed)(N, K, a, packed, c, accumulate);
        return;
    }
    FN(gemm_rows)(M, N, K, a, lda, 1, packed, c, ldc, accumulate);
}

/* C (M, N) += A (M, K) @ B (K, N), B given as packed panels. */
RNNFAST_CLONES static void FN(gemm_packed)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                                           const REAL *a, ptrdiff_t lda,
                                           const REAL *packed, REAL *c, ptrdiff_t ldc)
{
    FN(gemm_packed_body)(M, N, K, a, lda, packed, c, ldc, 1);
}

/* C (M, N) = A (M, K) @ B (K, N): gemm_packed writing C without reading it. */
RNNFAST_CLONES static void FN(gemm_packed_set)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                                               const REAL *a, ptrdiff_t lda,
                                               const REAL *packed, REAL *c, ptrdiff_t ldc)
{
    FN(gemm_packed_body)(M, N, K, a, lda, packed, c, ldc, 0);
}

/* REALs of the workspace gemm_at_b needs for B (K, N). */
static inline size_t FN(at_b_workspace_size)(ptrdiff_t K, ptrdiff_t N)
{
    const ptrdiff_t block_rows = RNNFAST_AT_B_ROWS, block_cols = RNNFAST_AT_B_PANELS * NR;
    return FN(packed_size)(K < block_rows ? K : block_rows, N < block_cols ? N : block_cols);
}

/* C (M, N) = A^T B for A (K, M) and B (K, N), both row-major with leading dimensions
 * lda and ldb: a weight gradient, the sum over K = T*B rows of the steps. A BLAS
 * call packs both operands, reading every element from memory once more; here only
 * B is packed, RNNFAST_AT_B_ROWS rows by up to RNNFAST_AT_B_PANELS panels at a time
 * (a block that stays in L2), into ``packed`` (at_b_workspace_size REALs), and
 * gemm_rows reads A where it lies: at each k the MR values of a row block of C sit
 * side by side in row k of A. */
RNNFAST_CLONES static void FN(gemm_at_b)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                                         const REAL *a, ptrdiff_t lda, const REAL *b,
                                         ptrdiff_t ldb, REAL *c, ptrdiff_t ldc,
                                         REAL *RNNFAST_RESTRICT packed)
{
    const ptrdiff_t block_rows = RNNFAST_AT_B_ROWS, block_cols = RNNFAST_AT_B_PANELS * NR;
    if (K == 0)
        for (ptrdiff_t m = 0; m < M; m++)
            memset(c + m * ldc, 0, (size_t)N * sizeof(REAL));
    for (ptrdiff_t k0 = 0; k0 < K; k0 += block_rows) {
        ptrdiff_t rows = K - k0 < block_rows ? K - k0 : block_rows;
        for (ptrdiff_t n0 = 0; n0 < N; n0 += block_cols) {
            ptrdiff_t cols = N - n0 < block_cols ? N - n0 : block_cols;
            FN(pack_panels)(rows, cols, b + k0 * ldb + n0, ldb, 1, packed);
            /* C[:, n0:n0+cols] (+)= A[k0:k0+rows].T @ B[k0:k0+rows, n0:n0+cols] */
            FN(gemm_rows)(M, cols, rows, a + k0 * lda, 1, lda, packed, c + n0, ldc, k0 > 0);
        }
    }
}

#undef FN
#undef MR
#undef MR_WIDE
#undef NR
#undef VLEN
#undef VEC
#undef IVEC
#undef REAL
