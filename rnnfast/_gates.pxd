# The C interface of csrc/: fused per-step gate math, the packed step GEMM and the
# floating-point mode.
# Signatures and shapes are documented in csrc/rnnfast_gates_impl.h.

from libc.stdint cimport int32_t, int64_t

cdef extern from "rnnfast_fpmode.h" nogil:
    unsigned int rnnfast_fpmode_enter()
    void rnnfast_fpmode_exit(unsigned int saved)

cdef extern from "rnnfast_gates.h" nogil:
    # --------------------------------------------------------------- RNN
    void rnn_step_forward_f32(Py_ssize_t B, Py_ssize_t H, int relu, const float *pre,
                              const float *bias, const float *h_prev, float *h_out,
                              const int64_t *lengths, int64_t t)
    void rnn_step_forward_f64(Py_ssize_t B, Py_ssize_t H, int relu, const double *pre,
                              const double *bias, const double *h_prev, double *h_out,
                              const int64_t *lengths, int64_t t)
    void rnn_step_backward_f32(Py_ssize_t B, Py_ssize_t H, int relu, const float *h_t,
                               const float *dy_t, float *dh, float *dpre,
                               const int64_t *lengths, int64_t t)
    void rnn_step_backward_f64(Py_ssize_t B, Py_ssize_t H, int relu, const double *h_t,
                               const double *dy_t, double *dh, double *dpre,
                               const int64_t *lengths, int64_t t)
    # --------------------------------------------------------------- LSTM
    void lstm_step_forward_f32(Py_ssize_t B, Py_ssize_t H, float *gates, const float *bias,
                               const float *h_prev, float *h_out,
                               const float *c_prev, float *c_out,
                               const int64_t *lengths, int64_t t)
    void lstm_step_forward_f64(Py_ssize_t B, Py_ssize_t H, double *gates, const double *bias,
                               const double *h_prev, double *h_out,
                               const double *c_prev, double *c_out,
                               const int64_t *lengths, int64_t t)
    void lstm_step_backward_f32(Py_ssize_t B, Py_ssize_t H, float *gates,
                                const float *c_prev, const float *c_t, const float *dy_t,
                                float *dh, float *dc, const int64_t *lengths, int64_t t)
    void lstm_step_backward_f64(Py_ssize_t B, Py_ssize_t H, double *gates,
                                const double *c_prev, const double *c_t, const double *dy_t,
                                double *dh, double *dc, const int64_t *lengths, int64_t t)
    # --------------------------------------------------------------- GRU
    void gru_step_forward_f32(Py_ssize_t B, Py_ssize_t H, float *gates, const float *hh,
                              const float *b_ih, const float *b_hh, float *gh_n_out,
                              const float *h_prev, float *h_out,
                              const int64_t *lengths, int64_t t)
    void gru_step_forward_f64(Py_ssize_t B, Py_ssize_t H, double *gates, const double *hh,
                              const double *b_ih, const double *b_hh, double *gh_n_out,
                              const double *h_prev, double *h_out,
                              const int64_t *lengths, int64_t t)
    void gru_step_backward_f32(Py_ssize_t B, Py_ssize_t H, float *gates, float *gh_n,
                               float *dgh, const float *h_prev, const float *dy_t,
                               float *dh, const int64_t *lengths, int64_t t)
    void gru_step_backward_f64(Py_ssize_t B, Py_ssize_t H, double *gates, double *gh_n,
                               double *dgh, const double *h_prev, const double *dy_t,
                               double *dh, const int64_t *lengths, int64_t t)
    # --------------------------------------------------------------- masking
    void add_active_rows_f32(Py_ssize_t B, Py_ssize_t H, const float *src, float *dst,
                             const int64_t *lengths, int64_t t)
    void add_active_rows_f64(Py_ssize_t B, Py_ssize_t H, const double *src, double *dst,
                             const int64_t *lengths, int64_t t)
    void zero_inactive_rows_f32(Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, float *rows,
                                const int64_t *lengths)
    void zero_inactive_rows_f64(Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, double *rows,
                                const int64_t *lengths)
    # --------------------------------------------------------------- reductions
    void column_sums_f32(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                         const float *a, float *out)
    void column_sums_f64(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                         const double *a, double *out)

    # --------------------------------------------------------------- one-hot inputs
    int one_hot_ids_f32(Py_ssize_t rows, Py_ssize_t D, const float *x, int32_t *ids)
    int one_hot_ids_f64(Py_ssize_t rows, Py_ssize_t D, const double *x, int32_t *ids)
    int transpose_finite_f32(Py_ssize_t GH, Py_ssize_t D, const float *w, float *w_t)
    int transpose_finite_f64(Py_ssize_t GH, Py_ssize_t D, const double *w, double *w_t)
    void gather_rows_f32(Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t GH, const int32_t *ids,
                         const float *w_t, float *gates)
    void gather_rows_f64(Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t GH, const int32_t *ids,
                         const double *w_t, double *gates)
    int one_hot_at_b_f32(Py_ssize_t g0, Py_ssize_t g1, Py_ssize_t rows, Py_ssize_t D,
                         const float *a, Py_ssize_t lda, const int32_t *ids, float *sums,
                         float *c, Py_ssize_t ldc)
    int one_hot_at_b_f64(Py_ssize_t g0, Py_ssize_t g1, Py_ssize_t rows, Py_ssize_t D,
                         const double *a, Py_ssize_t lda, const int32_t *ids, double *sums,
                         double *c, Py_ssize_t ldc)

cdef extern from "rnnfast_gemm.h" nogil:
    size_t packed_size_f32(Py_ssize_t K, Py_ssize_t N)
    size_t packed_size_f64(Py_ssize_t K, Py_ssize_t N)
    void pack_panels_f32(Py_ssize_t K, Py_ssize_t N, const float *b, Py_ssize_t stride_k,
                         Py_ssize_t stride_n, float *packed)
    void pack_panels_f64(Py_ssize_t K, Py_ssize_t N, const double *b, Py_ssize_t stride_k,
                         Py_ssize_t stride_n, double *packed)
    void gemm_packed_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *a,
                         Py_ssize_t lda, const float *packed, float *c, Py_ssize_t ldc)
    void gemm_packed_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *a,
                         Py_ssize_t lda, const double *packed, double *c, Py_ssize_t ldc)
    void gemm_packed_set_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *a,
                             Py_ssize_t lda, const float *packed, float *c, Py_ssize_t ldc)
    void gemm_packed_set_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *a,
                             Py_ssize_t lda, const double *packed, double *c, Py_ssize_t ldc)
    void transpose_add_f32(Py_ssize_t rows, Py_ssize_t cols, const float *src,
                           Py_ssize_t ld_src, const float *add, float *dst,
                           Py_ssize_t ld_dst)
    void transpose_add_f64(Py_ssize_t rows, Py_ssize_t cols, const double *src,
                           Py_ssize_t ld_src, const double *add, double *dst,
                           Py_ssize_t ld_dst)
    size_t at_b_workspace_size_f32(Py_ssize_t K, Py_ssize_t N)
    size_t at_b_workspace_size_f64(Py_ssize_t K, Py_ssize_t N)
    void gemm_at_b_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *a,
                       Py_ssize_t lda, const float *b, Py_ssize_t ldb, float *c,
                       Py_ssize_t ldc, float *packed)
    void gemm_at_b_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *a,
                       Py_ssize_t lda, const double *b, Py_ssize_t ldb, double *c,
                       Py_ssize_t ldc, double *packed)

cdef extern from "rnnfast_threads.h" nogil:
    int rnnfast_max_threads()
    int rnnfast_team_size()
    void rnnfast_barrier()
    void rnnfast_join(int tid, int team, int *finished)
    void rnnfast_team_barrier(int team, int *arrived, int *passed)
