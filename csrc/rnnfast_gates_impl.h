/* rnnfast: bodies of the per-step gate functions, for one precision.
 *
 * Included by rnnfast_gates.h with RNNFAST_REAL (float or double), RNNFAST_FN
 * (name suffix), RNNFAST_SIGMOID and RNNFAST_TANH defined. Not a header of its own.
 *
 * Every function sees one time step t: B rows, row b active when
 * lengths == NULL or t < lengths[b]. Buffers are row-major, rows of H values
 * (states) or G*H values (stacked gates).
 */
#define REAL RNNFAST_REAL
#define FN RNNFAST_FN
#define RESTRICT RNNFAST_RESTRICT
#define IS_ACTIVE(b) (lengths == NULL || t < lengths[(b)])

/* sum[j] += addend[j], j < H: the output gradient joins the state gradient. */
static inline void FN(add_into)(ptrdiff_t H, const REAL *RESTRICT addend, REAL *RESTRICT sum)
{
    for (ptrdiff_t j = 0; j < H; j++)
        sum[j] += addend[j];
}

/* ------------------------------------------------------------------ RNN */

/* h_t = act(pre + bias), act = tanh or relu.
 * pre (B, H): x_t W_ih^T + h_{t-1} W_hh^T;  bias (H,): b_ih + b_hh.
 * Inactive rows: h_t = h_{t-1}. */
RNNFAST_CLONES static void FN(rnn_step_forward)(ptrdiff_t B, ptrdiff_t H, int relu,
                                                const REAL *RESTRICT pre,
                                                const REAL *RESTRICT bias,
                                                const REAL *RESTRICT h_prev,
                                                REAL *RESTRICT h_out, const int64_t *lengths,
                                                int64_t t)
{
    for (ptrdiff_t b = 0; b < B; b++) {
        const REAL *pre_b = pre + b * H;
        REAL *h = h_out + b * H;
        if (!IS_ACTIVE(b)) {
            memcpy(h, h_prev + b * H, (size_t)H * sizeof(REAL));
            continue;
        }
        if (relu) {
            for (ptrdiff_t j = 0; j < H; j++) {
                REAL v = pre_b[j] + bias[j];
                h[j] = v < 0 ? (REAL)0 : v;  /* NaN propagates */
            }
        } else {
            for (ptrdiff_t j = 0; j < H; j++)
                h[j] = RNNFAST_TANH(pre_b[j] + bias[j]);
        }
    }
}

/* dpre = (dh + dy_t) * act'(h_t),  tanh' = 1 - h_t^2,  relu' = [h_t > 0].
 * h_t (B, H); dy_t (B, H) or NULL for zeros; dpre (B, H) out.
 * dh (B, H): in dL/dh_t from later steps; out: 0 on active rows (the caller's
 * GEMM dh += dpre W_hh completes dL/dh_{t-1}), unchanged on inactive rows. */
RNNFAST_CLONES static void FN(rnn_step_backward)(ptrdiff_t B, ptrdiff_t H, int relu,
                                                 const REAL *RESTRICT h_t,
                                                 const REAL *RESTRICT dy_t, REAL *RESTRICT dh,
                                                 REAL *RESTRICT dpre, const int64_t *lengths,
                                                 int64_t t)
{
    for (ptrdiff_t b = 0; b < B; b++) {
        const REAL *h = h_t + b * H;
        REAL *dh_b = dh + b * H, *dpre_b = dpre + b * H;
        if (!IS_ACTIVE(b)) {
            memset(dpre_b, 0, (size_t)H * sizeof(REAL));
            continue;
        }
        if (dy_t)
            FN(add_into)(H, dy_t + b * H, dh_b);
        for (ptrdiff_t j = 0; j < H; j++) {
            REAL grad = dh_b[j];
            dpre_b[j] = relu ? grad * (REAL)(h[j] > 0) : grad * ((REAL)1 - h[j] * h[j]);
            dh_b[j] = 0;
        }
    }
}

/* ------------------------------------------------------------------ LSTM */

/* gates (B, 4H): in x_t W_ih^T + h_{t-1} W_hh^T; out (active rows) i, f, g, o.
 *   i = sigmoid(a_i + b_i), f = sigmoid(a_f + b_f), g = tanh(a_g + b_g), o = sigmoid(a_o + b_o)
 *   c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)
 * bias (4H,): b_ih + b_hh. Inactive rows: h_t = h_{t-1}, c_t = c_{t-1}. */
RNNFAST_CLONES static void FN(lstm_step_forward)(ptrdiff_t B, ptrdiff_t H,
                                                 REAL *RESTRICT gates,
                                                 const REAL *RESTRICT bias,
                                                 const REAL *RESTRICT h_prev,
                                                 REAL *RESTRICT h_out,
                                                 const REAL *RESTRICT c_prev,
                                                 REAL *RESTRICT c_out, const int64_t *lengths,
                                                 int64_t t)
{
    for (ptrdiff_t b = 0; b < B; b++) {
        REAL *a = gates + b * 4 * H;
        const REAL *cp = c_prev + b * H;
        REAL *c = c_out + b * H, *h = h_out + b * H;
        if (!IS_ACTIVE(b)) {
            memcpy(h, h_prev + b * H, (size_t)H * sizeof(REAL));
            memcpy(c, cp, (size_t)H * sizeof(REAL));
            continue;
        }
        for (ptrdiff_t j = 0; j < H; j++) {
            REAL i = RNNFAST_SIGMOID(a[j] + bias[j]);
            REAL f = RNNFAST_SIGMOID(a[H + j] + bias[H + j]);
            REAL g = RNNFAST_TANH(a[2 * H + j] + bias[2 * H + j]);
            REAL o = RNNFAST_SIGMOID(a[3 * H + j] + bias[3 * H + j]);
            a[j] = i;
            a[H + j] = f;
            a[2 * H + j] = g;
            a[3 * H + j] = o;
            c[j] = f * cp[j] + i * g;
            h[j] = o * RNNFAST_TANH(c[j]);
        }
    }
}

/* gates (B, 4H): in i, f, g, o; out dG, the gradient of the pre-activations:
 *   dh' = dh + dy_t,  tc = tanh(c_t),  dc' = dc + dh' * o * (1 - tc^2)
 *   dG = [dc' g i(1-i), dc' c_{t-1} f(1-f), dc' i (1-g^2), dh' tc o(1-o)]
 * dh (B, H): in dL/dh_t, out 0 on active rows (the caller adds dG W_hh);
 * dc (B, H): in dL/dc_t, out dL/dc_{t-1} = dc' * f. Inactive rows: dG = 0, dh and
 * dc unchanged. dy_t may be NULL. */
RNNFAST_CLONES static void FN(lstm_step_backward)(ptrdiff_t B, ptrdiff_t H,
                                                  REAL *RESTRICT gates,
                                                  const REAL *RESTRICT c_prev,
                                                  const REAL *RESTRICT c_t,
                                                  const REAL *RESTRICT dy_t, REAL *RESTRICT dh,
                                                  REAL *RESTRICT dc, const int64_t *lengths,
                                                  int64_t t)
{
    for (ptrdiff_t b = 0; b < B; b++) {
        REAL *a = gates + b * 4 * H;
        const REAL *cp = c_prev + b * H, *ct = c_t + b * H;
        REAL *dh_b = dh + b * H, *dc_b = dc + b * H;
        if (!IS_ACTIVE(b)) {
            memset(a, 0, (size_t)(4 * H) * sizeof(REAL));
            continue;
        }
        if (dy_t)
            FN(add_into)(H, dy_t + b * H, dh_b);
        for (ptrdiff_t j = 0; j < H; j++) {
            REAL i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
            REAL grad_h = dh_b[j];
            REAL tc = RNNFAST_TANH(ct[j]);
            REAL grad_c = dc_b[j] + grad_h * o * ((REAL)1 - tc * tc);
            a[j] = grad_c * g * i * ((REAL)1 - i);
            a[H + j] = grad_c * cp[j] * f * ((REAL)1 - f);
            a[2 * H + j] = grad_c * i * ((REAL)1 - g * g);
            a[3 * H + j] = grad_h * tc * o * ((REAL)1 - o);
            dc_b[j] = grad_c * f;
            dh_b[j] = 0;
        }
    }
}

/* ------------------------------------------------------------------ GRU */

/* gates (B, 3H): in gi = x_t W_ih^T; out (active rows) r, z, n.
 * hh (B, 3H): h_{t-1} W_hh^T.  b_ih, b_hh (3H,).
 *   r = sigmoid(gi_r + b_ir + hh_r + b_hr),  z = sigmoid(gi_z + b_iz + hh_z + b_hz)
 *   gh_n = hh_n + b_hn,  n = tanh(gi_n + b_in + r * gh_n),  h_t = (1 - z) n + z h_{t-1}
 * gh_n_out (B, H) or NULL: gh_n kept for backward. Inactive rows: h_t = h_{t-1}. */
RNNFAST_CLONES static void FN(gru_step_forward)(ptrdiff_t B, ptrdiff_t H, REAL *RESTRICT gates,
                                                const REAL *RESTRICT hh,
                                                const REAL *RESTRICT b_ih,
                                                const REAL *RESTRICT b_hh,
                                                REAL *RESTRICT gh_n_out,
                                                const REAL *RESTRICT h_prev,
                                                REAL *RESTRICT h_out, const int64_t *lengths,
                                                int64_t t)
{
    for (ptrdiff_t b = 0; b < B; b++) {
        REAL *a = gates + b * 3 * H;
        const REAL *hh_b = hh + b * 3 * H, *hp = h_prev + b * H;
        REAL *h = h_out + b * H;
        if (!IS_ACTIVE(b)) {
            memcpy(h, hp, (size_t)H * sizeof(REAL));
            continue;
        }
        /* no branch inside the loop below, so that it vectorises */
        if (gh_n_out)
            for (ptrdiff_t j = 0; j < H; j++)
                gh_n_out[b * H + j] = hh_b[2 * H + j] + b_hh[2 * H + j];
        for (ptrdiff_t j = 0; j < H; j++) {
            REAL r = RNNFAST_SIGMOID(a[j] + b_ih[j] + hh_b[j] + b_hh[j]);
            REAL z = RNNFAST_SIGMOID(a[H + j] + b_ih[H + j] + hh_b[H + j] + b_hh[H + j]);
            REAL gh_n = hh_b[2 * H + j] + b_hh[2 * H + j];
            REAL n = RNNFAST_TANH(a[2 * H + j] + b_ih[2 * H + j] + r * gh_n);
            a[j] = r;
            a[H + j] = z;
            a[2 * H + j] = n;
            h[j] = ((REAL)1 - z) * n + z * hp[j];
        }
    }
}

/* gates (B, 3H): in r, z, n; out dgi = [da_r, da_z, da_n], the gradient of the
 * input-side pre-activations. gh_n (B, H): in h_{t-1} W_hn^T + b_hn; out da_n * r.
 * dgh (B, 3H) out: [da_r, da_z, da_n * r], the recurrent side, for the caller's
 * GEMM dh += dgh W_hh.
 *   dh' = dh + dy_t,  dn = dh' (1 - z),  dz = dh' (h_{t-1} - n)
 *   da_n = dn (1 - n^2),  da_r = da_n gh_n r (1 - r),  da_z = dz z (1 - z)
 * dh (B, H): in dL/dh_t; out dh' z on active rows, unchanged on inactive rows.
 * Inactive rows: dgi, gh_n and dgh rows are 0. dy_t may be NULL. */
RNNFAST_CLONES static void FN(gru_step_backward)(ptrdiff_t B, ptrdiff_t H,
                                                 REAL *RESTRICT gates, REAL *RESTRICT gh_n,
                                                 REAL *RESTRICT dgh,
                                                 const REAL *RESTRICT h_prev,
                                                 const REAL *RESTRICT dy_t, REAL *RESTRICT dh,
                                                 const int64_t *lengths, int64_t t)
{
    for (ptrdiff_t b = 0; b < B; b++) {
        REAL *a = gates + b * 3 * H, *ghn = gh_n + b * H, *dgh_b = dgh + b * 3 * H;
        const REAL *hp = h_prev + b * H;
        REAL *dh_b = dh + b * H;
        if (!IS_ACTIVE(b)) {
            memset(a, 0, (size_t)(3 * H) * sizeof(REAL));
            memset(ghn, 0, (size_t)H * sizeof(REAL));
            memset(dgh_b, 0, (size_t)(3 * H) * sizeof(REAL));
            continue;
        }
        if (dy_t)
            FN(add_into)(H, dy_t + b * H, dh_b);
        for (ptrdiff_t j = 0; j < H; j++) {
            REAL r = a[j], z = a[H + j], n = a[2 * H + j];
            REAL grad_h = dh_b[j];
            REAL dn = grad_h * ((REAL)1 - z);
            REAL dz = grad_h * (hp[j] - n);
            REAL da_n = dn * ((REAL)1 - n * n);
            REAL da_r = da_n * ghn[j] * r * ((REAL)1 - r);
            REAL da_z = dz * z * ((REAL)1 - z);
            a[j] = da_r;
            a[H + j] = da_z;
            a[2 * H + j] = da_n;
            ghn[j] = da_n * r;
            dgh_b[j] = da_r;
            dgh_b[H + j] = da_z;
            dgh_b[2 * H + j] = da_n * r;
            dh_b[j] = grad_h * z;
        }
    }
}

/* ------------------------------------------------------------------ masking */

/* dst[b] += src[b] (B, H) for the rows active at step t only: the recurrent
 * gradient dG_t W_hh joins dL/dh_{t-1} where the step ran, while inactive rows,
 * whose dG_t is 0, keep their carried gradient untouched (0 * inf would be NaN). */
static void FN(add_active_rows)(ptrdiff_t B, ptrdiff_t H, const REAL *RESTRICT src,
                                REAL *RESTRICT dst, const int64_t *lengths, int64_t t)
{
    for (ptrdiff_t b = 0; b < B; b++)
        if (IS_ACTIVE(b))
            FN(add_into)(H, src + b * H, dst + b * H);
}

/* rows (T*B, H), row t*B + b: set to 0 where step t is inactive for sequence b, so
 * that a weight-gradient GEMM over every row never multiplies what they hold
 * (a carried state that may be inf) by their zero gate gradient. */
static void FN(zero_inactive_rows)(ptrdiff_t T, ptrdiff_t B, ptrdiff_t H, REAL *rows,
                                   const int64_t *lengths)
{
    for (int64_t t = 0; t < T; t++)
        for (ptrdiff_t b = 0; b < B; b++)
            if (!IS_ACTIVE(b))
                memset(rows + (t * B + b) * H, 0, (size_t)H * sizeof(REAL));
}

/* ------------------------------------------------------------------ reductions */

/* out[j] = sum_r a[r * ld + j] for j < cols: bias gradients as column sums of the
 * stacked gate gradients (rows = T*B). Accumulates in double, in column blocks that
 * stay in registers/L1 while the rows stream past. */
RNNFAST_CLONES static void FN(column_sums)(ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                                           const REAL *RESTRICT a, REAL *RESTRICT out)
{
    enum { BLOCK = 256 };
    double acc[BLOCK];
    for (ptrdiff_t j0 = 0; j0 < cols; j0 += BLOCK) {
        ptrdiff_t width = cols - j0 < BLOCK ? cols - j0 : BLOCK;
        for (ptrdiff_t j = 0; j < width; j++)
            acc[j] = 0.0;
        for (ptrdiff_t r = 0; r < rows; r++) {
            const REAL *row = a + r * ld + j0;
            for (ptrdiff_t j = 0; j < width; j++)
                acc[j] += (double)row[j];
        }
        for (ptrdiff_t j = 0; j < width; j++)
            out[j0 + j] = (REAL)acc[j];
    }
}

/* ------------------------------------------------------------------ one-hot inputs
 *
 * Where every row of x (rows, D) is one-hot (a single 1, the rest 0) or all zeros, as
 * characters or categories fed without an embedding, the input projection
 * x W_ih^T is a lookup of columns of W_ih and dW_ih = dG^T x sums rows of dG: no
 * multiply-add over D. Both give what the GEMMs give, up to the order of the sums,
 * wherever the products with the zeros of x are 0: with a non-finite value in W_ih
 * (forward) or dG (backward) they are NaN, and the callers keep the GEMM. */

/* ids[r] = the column of the 1 in row r of x, -1 for a row of zeros; returns 1, or 0
 * (ids undefined) as soon as a row holds anything else, NaN included. */
RNNFAST_CLONES static int FN(one_hot_ids)(ptrdiff_t rows, ptrdiff_t D,
                                          const REAL *RESTRICT x, int32_t *RESTRICT ids)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        const REAL *row = x + r * D;
        int others = 0, ones = 0;
        for (ptrdiff_t j = 0; j < D; j++) {
            others |= (row[j] != 0) & (row[j] != 1);
            ones += row[j] == 1;
        }
        if (others || ones > 1)
            return 0;
        ids[r] = -1;
        for (ptrdiff_t j = 0; ones && j < D; j++)
            if (row[j] == 1) {
                ids[r] = (int32_t)j;
                break;
            }
    }
    return 1;
}

/* w_t (D, GH) = w (GH, D) transposed; returns 0 if w holds a non-finite value. */
RNNFAST_CLONES static int FN(transpose_finite)(ptrdiff_t GH, ptrdiff_t D,
                                               const REAL *RESTRICT w, REAL *RESTRICT w_t)
{
    int finite = 1;
    for (ptrdiff_t g = 0; g < GH; g++)
        for (ptrdiff_t j = 0; j < D; j++) {
            REAL value = w[g * D + j];
            finite &= value - value == 0;   /* inf - inf and NaN - NaN are NaN */
            w_t[j * GH + g] = value;
        }
    return finite;
}

/* gates[r] = w_t[ids[r]] (GH,) for r in [r0, r1): x W_ih^T for one-hot rows x, with
 * w_t = W_ih^T (D, GH); zeros for a row of zeros. */
static void FN(gather_rows)(ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t GH, const int32_t *ids,
                            const REAL *RESTRICT w_t, REAL *RESTRICT gates)
{
    for (ptrdiff_t r = r0; r < r1; r++) {
        if (ids[r] < 0)
            memset(gates + r * GH, 0, (size_t)GH * sizeof(REAL));
        else
            memcpy(gates + r * GH, w_t + (ptrdiff_t)ids[r] * GH, (size_t)GH * sizeof(REAL));
    }
}

/* c[g, j] = sum over the rows r with ids[r] = j of a[r, g], for g in [g0, g1) and
 * j < D: rows g0 .. g1-1 of dW_ih = dG^T x (GH, D) for one-hot rows x, dG = a
 * (rows, lda). Sums into rows 0 .. D-1 of sums (D + 1, g1 - g0), contiguous in g,
 * then transposes; row D sums a * 0, which stays 0 unless a value is inf or NaN.
 * Returns 0 (c untouched) if a[:, g0:g1] holds a non-finite value. */
RNNFAST_CLONES static int FN(one_hot_at_b)(ptrdiff_t g0, ptrdiff_t g1, ptrdiff_t rows,
                                           ptrdiff_t D, const REAL *RESTRICT a,
                                           ptrdiff_t lda, const int32_t *ids,
                                           REAL *RESTRICT sums, REAL *RESTRICT c,
                                           ptrdiff_t ldc)
{
    ptrdiff_t width = g1 - g0;
    REAL *checks = sums + D * width;
    memset(sums, 0, (size_t)((D + 1) * width) * sizeof(REAL));
    for (ptrdiff_t r = 0; r < rows; r++) {
        const REAL *a_row = a + r * lda + g0;
        for (ptrdiff_t g = 0; g < width; g++)
            checks[g] += a_row[g] * 0;
        if (ids[r] < 0)
            continue;
        REAL *sum = sums + (ptrdiff_t)ids[r] * width;
        for (ptrdiff_t g = 0; g < width; g++)
            sum[g] += a_row[g];
    }
    int finite = 1;
    for (ptrdiff_t g = 0; g < width; g++)
        finite &= checks[g] == 0;
    if (!finite)
        return 0;
    for (ptrdiff_t g = 0; g < width; g++)
        for (ptrdiff_t j = 0; j < D; j++)
            c[(g0 + g) * ldc + j] = sums[j * width + g];
    return 1;
}

#undef IS_ACTIVE
#undef RESTRICT
#undef FN
#undef REAL
