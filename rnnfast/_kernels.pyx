"""The time loops: forward and backpropagation through time (BPTT) for RNN, LSTM and
GRU, one fused-type source for float and double.

Shape legend: T = steps, B = batch, D = input features, H = hidden units,
G = stacked gates (RNN 1, LSTM 4, GRU 3).

These functions trust their caller (``rnnfast.functional``), which validates every
argument and allocates every buffer; they release the GIL for the whole loop. The
exception is ``forward_inference``, a whole ``training=False`` call for small
problems: it checks its arguments in C, declines (returns None) anything that needs
converting or threads, and allocates its own outputs. The one state kept between
calls is inference's packed weights (kept_weights_of, csrc/rnnfast_kept.h), packed
again whenever the bytes of the weights they came from have changed.

Buffers, allocated by the caller:

- ``hs`` (T+1, B, H): the hidden states in time order plus the initial state.
  Forward direction: ``hs[0] = h0`` and ``h_t`` at ``hs[t+1]``. Reverse direction:
  ``h_t`` at ``hs[t]`` and ``hs[T] = h0``. So the state entering step t is
  ``hs[t + prev]`` and ``h_t`` is ``hs[t + out]`` (prev, out = 0, 1 forward and
  1, 0 reverse), and the states entering all steps form one (T*B, H) matrix
  ``hs[prev:prev+T]`` for the ``dW_hh`` GEMM.
- ``gates`` (K, B, G*H): the input projection of K steps at a time. In training
  K == T and the buffer keeps the activated gates for backward, which overwrites
  them with the gradients of the pre-activations (dG). In inference K may be
  smaller: the projection is computed chunk by chunk in O(K*B*G*H) memory.
- ``cs`` (LSTM): the cell states, laid out like ``hs`` in training; in inference
  two (B, H) slots used in turn, slot 0 holding c0 on entry.

Inactive steps (``t >= lengths[b]``, lengths None meaning all active) carry the
state forward and the state gradient backward; see csrc/rnnfast_gates_impl.h.

Threads: batch rows are independent, so the batch is split into ``parts`` blocks of
rows, each running the whole time loop on its own thread (OpenMP) with no
synchronisation between steps. With one block no OpenMP region is entered at all:
even a region of one thread costs GNU OpenMP several system calls, a large part of a
small call's time. One block may instead share each step's product (and its input
projection) by columns between ``step_parts`` threads, the caller and helper threads
(rnnfast._helpers, no OpenMP), the gate pass staying on the caller: each thread then
packs and reads only its panels of the weights, which stay in its cache. Inside the
loop the recurrent product uses the packed kernel of csrc/rnnfast_gemm.h on W_hh
packed once per call (in inference: kept from the call before where W_hh has not
changed). The input projection and dx = dG W_ih use the same kernel on
W_ih (or W_ih^T) packed once per call where W_ih is small or the projection runs in
chunks (inference): then each thread projects its
own rows chunk by chunk, with no barrier between chunks. LSTM inference with enough
rows per thread has no projection at all: each step is one product over
[x_t | h_{t-1}] (forward_joined). The weight gradients go
through the same kernel too (gemm_at_b): dW_ih and dW_hh one per thread where two
threads share them evenly, else each split by its sum over the steps. These
GEMMs over all T*B rows (and the BLAS calls for a large W_ih) are split over
``gemm_parts`` threads, which may exceed ``parts``: a batch too small to split still
spreads them. Backward runs its reverse loops and all of these GEMMs in one parallel
region, with barriers between them (grads_after_loop): each region start wakes
sleeping threads, and a barrier costs less. Both regions end in rnnfast_join, and
their barriers are rnnfast_team_barrier: a thread spins briefly for the others
before it goes to sleep (csrc/rnnfast_threads.h). BLAS runs one single-threaded
call per thread: the caller (rnnfast._threads) holds BLAS at one thread while
``gemm_parts > 1``.
"""

cimport numpy as cnp
import numpy as np
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memcpy, memset

from ._blas cimport BLAS_Trans, gemm, NoTrans, Trans
from ._helpers cimport run_parts
from ._pool cimport empty_array, pool_alloc, pool_free, pool_limit, pool_release
from ._gates cimport *

cdef extern from "rnnfast_kept.h" nogil:
    ctypedef struct rnnfast_kept_entry:
        void *packed
    rnnfast_kept_entry *rnnfast_kept_lookup(const void *a, size_t a_bytes, const void *b,
                                            size_t b_bytes, const int64_t *shape,
                                            size_t packed_bytes, int *fresh)
    void rnnfast_kept_store(rnnfast_kept_entry *entry)
    void rnnfast_kept_unlock()
    int rnnfast_kept_describe(int64_t *shapes, size_t *bytes)
    void rnnfast_kept_clear()
    enum: RNNFAST_KEPT_ENTRIES, RNNFAST_KEPT_SHAPE


cnp.import_array()

cdef enum:
    # A W_ih of at most this many bytes goes through the packed kernel, in the input
    # projection and in dx = dG W_ih, rather than BLAS: measured faster at 1 and 4 MiB
    # (LSTM, D = H = 256 and 512), as BLAS packs the T*B rows of x or dG for each call.
    PACKED_INPUT_WEIGHTS_MAX_BYTES = 4 * 1024 * 1024
    # A weight gradient A^T B of fewer multiply-adds goes to BLAS, whose small-matrix
    # kernels pack nothing: measured faster at B = 1 (GRU, T = 100, H = 32) than
    # gemm_at_b, which is ahead from about 1.6M (LSTM, B = 4).
    AT_B_MIN_MULTIPLY_ADDS = 1 << 20
    # BLAS takes int sizes: T*B rows at most.
    MAX_ROWS = 2147483647
    # Backward frees a packed W_ih of this many bytes or more as soon as dx is done,
    # before the weight gradients allocate their scratch.
    LARGE_INPUT_WEIGHTS_BYTES = 1024 * 1024
    # Rows per thread from which, and joined weights up to which, an LSTM inference
    # forward runs each step as one product over [x_t | h_{t-1}] (joins_steps).
    JOINED_MIN_ROWS = 8
    JOINED_MAX_BYTES = 2 * 1024 * 1024
    # Inference keeps packed weights of at most this many bytes between calls
    # (kept_weights_of), with a copy of their sources: 64 MiB in all at most.
    KEPT_MAX_BYTES = 4 * 1024 * 1024


# ---------------------------------------------------------------- C dispatch by dtype

cdef inline void rnn_step_forward(Py_ssize_t B, Py_ssize_t H, int relu, const floating *pre,
                                  const floating *bias, const floating *h_prev,
                                  floating *h_out, const int64_t *lengths,
                                  int64_t t) noexcept nogil:
    if floating is float:
        rnn_step_forward_f32(B, H, relu, pre, bias, h_prev, h_out, lengths, t)
    else:
        rnn_step_forward_f64(B, H, relu, pre, bias, h_prev, h_out, lengths, t)


cdef inline void rnn_step_backward(Py_ssize_t B, Py_ssize_t H, int relu, const floating *h_t,
                                   const floating *dy_t, floating *dh, floating *dpre,
                                   const int64_t *lengths, int64_t t) noexcept nogil:
    if floating is float:
        rnn_step_backward_f32(B, H, relu, h_t, dy_t, dh, dpre, lengths, t)
    else:
        rnn_step_backward_f64(B, H, relu, h_t, dy_t, dh, dpre, lengths, t)


cdef inline void lstm_step_forward(Py_ssize_t B, Py_ssize_t H, floating *gates,
                                   const floating *bias, const floating *h_prev,
                                   floating *h_out, const floating *c_prev, floating *c_out,
                                   const int64_t *lengths, int64_t t) noexcept nogil:
    if floating is float:
        lstm_step_forward_f32(B, H, gates, bias, h_prev, h_out, c_prev, c_out, lengths, t)
    else:
        lstm_step_forward_f64(B, H, gates, bias, h_prev, h_out, c_prev, c_out, lengths, t)


cdef inline void lstm_step_backward(Py_ssize_t B, Py_ssize_t H, floating *gates,
                                    const floating *c_prev, const floating *c_t,
                                    const floating *dy_t, floating *dh, floating *dc,
                                    const int64_t *lengths, int64_t t) noexcept nogil:
    if floating is float:
        lstm_step_backward_f32(B, H, gates, c_prev, c_t, dy_t, dh, dc, lengths, t)
    else:
        lstm_step_backward_f64(B, H, gates, c_prev, c_t, dy_t, dh, dc, lengths, t)


cdef inline void gru_step_forward(Py_ssize_t B, Py_ssize_t H, floating *gates,
                                  const floating *hh, const floating *b_ih,
                                  const floating *b_hh, floating *gh_n_out,
                                  const floating *h_prev, floating *h_out,
                                  const int64_t *lengths, int64_t t) noexcept nogil:
    if floating is float:
        gru_step_forward_f32(B, H, gates, hh, b_ih, b_hh, gh_n_out, h_prev, h_out, lengths, t)
    else:
        gru_step_forward_f64(B, H, gates, hh, b_ih, b_hh, gh_n_out, h_prev, h_out, lengths, t)


cdef inline void gru_step_backward(Py_ssize_t B, Py_ssize_t H, floating *gates,
                                   floating *gh_n, floating *dgh, const floating *h_prev,
                                   const floating *dy_t, floating *dh,
                                   const int64_t *lengths, int64_t t) noexcept nogil:
    if floating is float:
        gru_step_backward_f32(B, H, gates, gh_n, dgh, h_prev, dy_t, dh, lengths, t)
    else:
        gru_step_backward_f64(B, H, gates, gh_n, dgh, h_prev, dy_t, dh, lengths, t)


cdef inline void pack_panels(Py_ssize_t K, Py_ssize_t N, const floating *b,
                             Py_ssize_t stride_k, Py_ssize_t stride_n,
                             floating *packed) noexcept nogil:
    if floating is float:
        pack_panels_f32(K, N, b, stride_k, stride_n, packed)
    else:
        pack_panels_f64(K, N, b, stride_k, stride_n, packed)


cdef inline void gemm_packed(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating *a,
                             Py_ssize_t lda, const floating *packed, floating *c,
                             Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        gemm_packed_f32(M, N, K, a, lda, packed, c, ldc)
    else:
        gemm_packed_f64(M, N, K, a, lda, packed, c, ldc)


cdef inline void gemm_packed_set(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating *a,
                                 Py_ssize_t lda, const floating *packed, floating *c,
                                 Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        gemm_packed_set_f32(M, N, K, a, lda, packed, c, ldc)
    else:
        gemm_packed_set_f64(M, N, K, a, lda, packed, c, ldc)


cdef inline void gemm_at_b(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating *a,
                           Py_ssize_t lda, const floating *b, Py_ssize_t ldb, floating *c,
                           Py_ssize_t ldc) noexcept nogil:
    # C = A^T B (m, n) for A (k, m) and B (k, n); small ones, or any when out of
    # memory, through BLAS
    cdef floating *packed = NULL
    if m * n * k >= AT_B_MIN_MULTIPLY_ADDS:
        if floating is float:
            packed = <floating *>pool_alloc(at_b_workspace_size_f32(k, n) * sizeof(floating),
                                            False)
            if packed != NULL:
                gemm_at_b_f32(m, n, k, a, lda, b, ldb, c, ldc, packed)
        else:
            packed = <floating *>pool_alloc(at_b_workspace_size_f64(k, n) * sizeof(floating),
                                            False)
            if packed != NULL:
                gemm_at_b_f64(m, n, k, a, lda, b, ldb, c, ldc, packed)
    if packed == NULL:
        gemm(Trans, NoTrans, m, n, k, 1, a, lda, b, ldb, 0, c, ldc)
    pool_free(packed)


cdef inline void add_active_rows(Py_ssize_t B, Py_ssize_t H, const floating *src,
                                 floating *dst, const int64_t *lengths,
                                 int64_t t) noexcept nogil:
    if floating is float:
        add_active_rows_f32(B, H, src, dst, lengths, t)
    else:
        add_active_rows_f64(B, H, src, dst, lengths, t)


cdef inline void zero_inactive_rows(Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, floating *rows,
                                    const int64_t *lengths) noexcept nogil:
    if floating is float:
        zero_inactive_rows_f32(T, B, H, rows, lengths)
    else:
        zero_inactive_rows_f64(T, B, H, rows, lengths)


cdef inline void column_sums(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                             const floating *a, floating *out) noexcept nogil:
    if floating is float:
        column_sums_f32(rows, cols, ld, a, out)
    else:
        column_sums_f64(rows, cols, ld, a, out)


cdef inline bint one_hot_ids_of(Py_ssize_t rows, Py_ssize_t D, const floating *x,
                                int32_t *ids) noexcept nogil:
    if floating is float:
        return one_hot_ids_f32(rows, D, x, ids)
    else:
        return one_hot_ids_f64(rows, D, x, ids)


cdef inline bint transpose_finite(Py_ssize_t GH, Py_ssize_t D, const floating *w,
                                  floating *w_t) noexcept nogil:
    if floating is float:
        return transpose_finite_f32(GH, D, w, w_t)
    else:
        return transpose_finite_f64(GH, D, w, w_t)


cdef inline void gather_rows(Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t GH, const int32_t *ids,
                             const floating *w_t, floating *gates) noexcept nogil:
    if floating is float:
        gather_rows_f32(r0, r1, GH, ids, w_t, gates)
    else:
        gather_rows_f64(r0, r1, GH, ids, w_t, gates)


cdef inline bint one_hot_at_b(Py_ssize_t g0, Py_ssize_t g1, Py_ssize_t rows, Py_ssize_t D,
                              const floating *a, Py_ssize_t lda, const int32_t *ids,
                              floating *sums, floating *c, Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        return one_hot_at_b_f32(g0, g1, rows, D, a, lda, ids, sums, c, ldc)
    else:
        return one_hot_at_b_f64(g0, g1, rows, D, a, lda, ids, sums, c, ldc)


# ---------------------------------------------------------------- shared pieces

def max_threads():
    """The most threads a kernel call splits its batch across (1 without OpenMP)."""
    return rnnfast_max_threads()


cdef inline Py_ssize_t part_start(Py_ssize_t part, Py_ssize_t parts, Py_ssize_t B) noexcept nogil:
    """First batch row of block ``part`` when B rows are split into ``parts`` blocks."""
    return part * B // parts


cdef inline bint panel_range(Py_ssize_t N, Py_ssize_t panel, int part, int parts,
                             Py_ssize_t *n0, Py_ssize_t *n1) noexcept nogil:
    """Columns n0:n1 of part ``part`` when the N columns, in panels of ``panel``, are
    split into ``parts`` by whole panels; False where the part is empty."""
    cdef Py_ssize_t panels = (N + panel - 1) // panel
    n0[0] = part_start(part, parts, panels) * panel
    n1[0] = min(N, part_start(part + 1, parts, panels) * panel)
    return n1[0] > n0[0]


ctypedef struct PackJob:
    # pack_panels of B (K, N), element (k, n) at b[k * stride_k + n * stride_n], into
    # ``packed``, split into ``parts`` by whole panels of ``panel`` columns
    Py_ssize_t K, N, stride_k, stride_n, panel, parts
    const void *b
    void *packed


cdef inline void pack_part(const PackJob *job, int part, const floating *b,
                           floating *packed) noexcept nogil:
    # panel p of the packed B starts at p * K * panel = n0 * K
    cdef Py_ssize_t n0, n1
    if panel_range(job.N, job.panel, part, job.parts, &n0, &n1):
        pack_panels(job.K, n1 - n0, b + n0 * job.stride_n, job.stride_k, job.stride_n,
                    packed + n0 * job.K)


cdef void pack_part_f32(void *job, int part) noexcept nogil:
    pack_part(<PackJob *>job, part, <const float *>(<PackJob *>job).b,
              <float *>(<PackJob *>job).packed)


cdef void pack_part_f64(void *job, int part) noexcept nogil:
    pack_part(<PackJob *>job, part, <const double *>(<PackJob *>job).b,
              <double *>(<PackJob *>job).packed)


cdef floating *packed_or_null(Py_ssize_t rows, Py_ssize_t cols, const floating *w,
                              bint transpose, int threads) noexcept nogil:
    """Pack op(W) of W (rows, cols) for gemm_packed: W^T (cols, rows) when ``transpose``,
    else W itself. Forward multiplies by W_hh^T, backward by W_hh. NULL when out of
    memory; the caller gives the buffer back (pool_free). ``threads`` > 1 packs the
    panels in the parts that multiply_packed gives the same threads, so each thread
    writes the panels it goes on to read into its own cache.
    """
    cdef PackJob job
    job.K = cols if transpose else rows
    job.N = rows if transpose else cols
    job.stride_k = 1 if transpose else cols
    job.stride_n = cols if transpose else 1
    job.b = w
    job.parts = threads
    cdef size_t size
    if floating is float:
        size = packed_size_f32(job.K, job.N)
        job.panel = packed_size_f32(1, 1)
    else:
        size = packed_size_f64(job.K, job.N)
        job.panel = packed_size_f64(1, 1)
    job.packed = pool_alloc(size * sizeof(floating), True)
    if job.packed == NULL:
        return NULL
    if threads < 2:
        pack_panels(job.K, job.N, w, job.stride_k, job.stride_n, <floating *>job.packed)
    elif floating is float:
        run_parts(pack_part_f32, &job, threads, threads, 0)
    else:
        run_parts(pack_part_f64, &job, threads, threads, 0)
    return <floating *>job.packed


cdef inline int pack_threads(int gemm_parts, int step_parts) noexcept nogil:
    """Threads that pack the weights of a call: those that share its steps, each
    packing the panels it goes on to read (LSTM inference, B = 1, H = 256: 12 % less
    time; training, B = 1, H = 128: 5 %), unless the call also splits GEMMs over all
    steps between OpenMP threads (``gemm_parts`` > 1: in training, the input projection
    before the forward loop, and the region the backward loop runs in), where the
    helpers, spinning for their next part after the packing, would take a core from
    those threads (measured 4-7 % slower at B = 1-4, H = 128-256)."""
    return step_parts if gemm_parts == 1 else 1


cdef floating *pack_weights(Py_ssize_t rows, Py_ssize_t cols, const floating *w,
                            bint transpose, int threads) except NULL:
    """packed_or_null, raising MemoryError instead of returning NULL."""
    cdef floating *packed
    with nogil:
        packed = packed_or_null(rows, cols, w, transpose, threads)
    if packed == NULL:
        raise MemoryError(f"cannot allocate packed weights for a ({rows}, {cols}) matrix")
    return packed


ctypedef struct PackedProduct:
    # C (M, N) (+)= A (M, K) @ B (K, N), B packed in panels of ``panel`` columns,
    # split into ``parts`` by whole panels: part p computes columns n0:n1 of C.
    Py_ssize_t M, N, K, lda, ldc, panel, parts
    bint accumulate
    const void *a
    const void *packed
    void *c


cdef inline void packed_product_part(const PackedProduct *job, int part,
                                     floating *c) noexcept nogil:
    cdef Py_ssize_t n0, n1
    cdef const floating *a = <const floating *>job.a
    if not panel_range(job.N, job.panel, part, job.parts, &n0, &n1):
        return
    # panel p of the packed B starts at p * K * panel = n0 * K
    cdef const floating *columns = <const floating *>job.packed + n0 * job.K
    if job.accumulate:
        gemm_packed(job.M, n1 - n0, job.K, a, job.lda, columns, c + n0, job.ldc)
    else:
        gemm_packed_set(job.M, n1 - n0, job.K, a, job.lda, columns, c + n0, job.ldc)


cdef void packed_product_part_f32(void *job, int part) noexcept nogil:
    packed_product_part(<PackedProduct *>job, part, <float *>(<PackedProduct *>job).c)


cdef void packed_product_part_f64(void *job, int part) noexcept nogil:
    packed_product_part(<PackedProduct *>job, part, <double *>(<PackedProduct *>job).c)


cdef void multiply_packed(int threads, bint accumulate, Py_ssize_t M, Py_ssize_t N,
                          Py_ssize_t K, const floating *a, Py_ssize_t lda,
                          const floating *packed, floating *c, Py_ssize_t ldc) noexcept nogil:
    """C (M, N) += A (M, K) @ B (K, N), or C = A @ B where not ``accumulate``, B
    packed (gemm_packed), on ``threads`` threads: the caller and helper threads
    (rnnfast._helpers), one part of whole panels each. A thread that takes the same
    part at every step of a loop keeps its panels in its own cache. The helpers tell
    products apart by their shape (a forward step's from a backward step's, whose
    M*N*K is the same), and share each kind only where that pays (run_parts)."""
    cdef PackedProduct job
    cdef int64_t shape
    if threads < 2:
        if accumulate:
            gemm_packed(M, N, K, a, lda, packed, c, ldc)
        else:
            gemm_packed_set(M, N, K, a, lda, packed, c, ldc)
        return
    shape = (M & 0x1fffff) << 42 | (N & 0x1fffff) << 21 | (K & 0x1fffff)
    job.M, job.N, job.K, job.lda, job.ldc, job.parts = M, N, K, lda, ldc, threads
    job.accumulate, job.a, job.packed, job.c = accumulate, a, packed, c
    if floating is float:
        job.panel = packed_size_f32(1, 1)
        run_parts(packed_product_part_f32, &job, threads, threads, shape)
    else:
        job.panel = packed_size_f64(1, 1)
        run_parts(packed_product_part_f64, &job, threads, threads, shape)


cdef inline const int64_t *lengths_ptr(const int64_t[::1] lengths) noexcept nogil:
    return NULL if lengths is None else &lengths[0]


cdef inline const floating *optional_ptr(const floating[:, :, ::1] array) noexcept nogil:
    return NULL if array is None else &array[0, 0, 0]


cdef inline floating *optional_out_ptr(floating[:, :, ::1] array) noexcept nogil:
    return NULL if array is None else &array[0, 0, 0]


cdef inline Py_ssize_t chunk_start(Py_ssize_t step, Py_ssize_t steps, Py_ssize_t T,
                                   bint reverse) noexcept nogil:
    """The first time index of the chunk of ``steps`` steps that begins at ``step``."""
    return T - step - steps if reverse else step


cdef void gemm_split_rows(BLAS_Trans trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                          const floating *a, Py_ssize_t lda, const floating *b, Py_ssize_t ldb,
                          floating *c, Py_ssize_t ldc, int parts) noexcept nogil:
    """C = A op(B) (m, n), its rows split into ``parts`` blocks computed in parallel,
    each by a single-threaded BLAS call (the caller limits BLAS to one thread)."""
    cdef Py_ssize_t part, m0, m1
    if parts == 1:
        gemm(NoTrans, trans_b, m, n, k, 1, a, lda, b, ldb, 0, c, ldc)
        return
    for part in prange(parts, num_threads=parts, schedule="static"):
        m0 = part_start(part, parts, m)
        m1 = part_start(part + 1, parts, m)
        gemm(NoTrans, trans_b, m1 - m0, n, k, 1, a + m0 * lda, lda, b, ldb, 0, c + m0 * ldc,
             ldc)


cdef inline bint packs_input_weights(Py_ssize_t GH, Py_ssize_t D, size_t itemsize) noexcept nogil:
    """Whether W_ih (GH, D) is small enough for the packed kernel to beat BLAS."""
    return GH * D * itemsize <= PACKED_INPUT_WEIGHTS_MAX_BYTES


cdef inline bint packs_projection(Py_ssize_t GH, Py_ssize_t D, bint chunked,
                                  size_t itemsize) noexcept nogil:
    """Whether the input projection runs on W_ih^T (D, GH) packed (step_weights)
    rather than through BLAS: the packed kernel wins for small W_ih
    (packs_input_weights) and wherever the projection runs in ``chunked`` calls of a
    few steps, where BLAS would repack W_ih on every call."""
    return chunked or packs_input_weights(GH, D, itemsize)


cdef void project_inputs(const floating *x, const floating *w_ih,
                         const floating *packed_w_ih_t, Py_ssize_t first, Py_ssize_t steps,
                         Py_ssize_t B, Py_ssize_t D, Py_ssize_t GH, floating *gates,
                         int parts, int step_parts) noexcept nogil:
    # gates[0:steps] = x[first:first+steps] @ W_ih.T       (steps*B, GH)
    # split by rows over ``parts`` OpenMP threads, or by columns over ``step_parts``
    # threads of one block (multiply_packed)
    cdef Py_ssize_t part, m0, m1, rows = steps * B
    cdef const floating *x_first = x + first * B * D
    if packed_w_ih_t == NULL:
        gemm_split_rows(Trans, rows, GH, D, x_first, D, w_ih, D, gates, GH, parts)
        return
    if parts == 1:
        multiply_packed(step_parts, False, rows, GH, D, x_first, D, packed_w_ih_t, gates, GH)
        return
    for part in prange(parts, num_threads=parts, schedule="static"):
        m0 = part_start(part, parts, rows)
        m1 = part_start(part + 1, parts, rows)
        gemm_packed_set(m1 - m0, GH, D, x_first + m0 * D, D, packed_w_ih_t, gates + m0 * GH,
                        GH)


cdef void add_recurrent_grad(Py_ssize_t nb, Py_ssize_t H, Py_ssize_t GH, const floating *dG_t,
                             const floating *packed_w_hh, floating *dh, floating *scratch,
                             const int64_t *lengths, int64_t t, int threads) noexcept nogil:
    """dh += dG_t @ W_hh (nb, H) on the rows active at step t, every row when lengths is
    NULL, the product on ``threads`` threads (multiply_packed). Inactive rows keep
    their carried gradient exactly: their dG_t is 0, but 0 * inf in W_hh would still
    be NaN, so the product goes through ``scratch``."""
    if lengths == NULL:
        multiply_packed(threads, True, nb, H, GH, dG_t, GH, packed_w_hh, dh, H)
    else:
        multiply_packed(threads, False, nb, H, GH, dG_t, GH, packed_w_hh, scratch, H)
        add_active_rows(nb, H, scratch, dh, lengths, t)


cdef inline bint side_by_side(int team, Py_ssize_t D, Py_ssize_t H) noexcept nogil:
    """Whether the weight gradients of the input side (width D) and of the recurrent
    side (width H) run one per thread: with two threads and about equal work. Neither
    then needs the scratch partial sums of a split by rows (measured: as fast, and
    1 MiB less at H = 512)."""
    return team == 2 and 4 * D <= 5 * H and 4 * H <= 5 * D


cdef struct WeightGrad:
    # c (m, n) = a^T b, the sum over the T*B rows of the steps: a (T*B, m) and b (T*B, n)
    # row-major with leading dimensions lda and ldb, c with ldc. ``partial``: the sums
    # of threads 1, 2, ... where the rows are split, (team - 1, m, n), or NULL
    Py_ssize_t m, n, lda, ldb, ldc
    const void *a
    const void *b
    void *c
    void *partial


cdef struct BiasGrad:
    # out (cols,) = the column sums of a (T*B, cols), leading dimension ld
    Py_ssize_t cols, ld
    const void *a
    void *out


cdef struct AfterLoop:
    # What BPTT computes once the reverse loops are done (grads_after_loop), on buffers
    # of the dtype of the call: dx = dG W_ih (T*B, D) for dG (T*B, GH), the weight and
    # bias gradients, and the bookkeeping between them.
    Py_ssize_t T, B, D, H, GH
    const void *w_ih           # (GH, D)
    void *dx                   # (T*B, D), or NULL: dx not wanted
    void *packed_w_hh          # freed as soon as the reverse loops are done
    void *packed_w_ih          # W_ih packed for dx, NULL where BLAS runs it
    void *h_prev               # (T*B, H) states entering each step; with lengths, the
    const int64_t *lengths     # inactive rows are zeroed before dW_hh
    void *scratch              # the partial sums of every weight gradient
    int32_t *one_hot           # (T*B,) one_hot_rows(x), or NULL: dW_ih sums dG's rows
    void *one_hot_sums         # (D + 1, GH) workspace of one_hot_at_b
    int arrived, finished      # threads at a barrier, and done: for rnnfast_team_barrier
                               # and rnnfast_join
    int weight_grads, bias_grads
    WeightGrad weight[3]       # [0]: the input side (dW_ih); the rest the recurrent side
    BiasGrad bias[3]


cdef void start_after_loop(AfterLoop *after, Py_ssize_t T, Py_ssize_t B, Py_ssize_t D,
                           Py_ssize_t H, Py_ssize_t GH, const void *w_ih, void *dx,
                           void *h_prev, const int64_t *lengths) noexcept nogil:
    memset(after, 0, sizeof(AfterLoop))
    after.T, after.B, after.D, after.H, after.GH = T, B, D, H, GH
    after.w_ih, after.dx, after.h_prev, after.lengths = w_ih, dx, h_prev, lengths


cdef void add_weight_grad(AfterLoop *after, Py_ssize_t m, Py_ssize_t n, const void *a,
                          Py_ssize_t lda, const void *b, Py_ssize_t ldb, void *c,
                          Py_ssize_t ldc) noexcept nogil:
    after.weight[after.weight_grads] = WeightGrad(m, n, lda, ldb, ldc, a, b, c, NULL)
    after.weight_grads += 1


cdef void add_bias_grad(AfterLoop *after, Py_ssize_t cols, Py_ssize_t ld, const void *a,
                        void *out) noexcept nogil:
    after.bias[after.bias_grads] = BiasGrad(cols, ld, a, out)
    after.bias_grads += 1


cdef void alloc_partial_sums(AfterLoop *after, int team, size_t itemsize) noexcept nogil:
    """Scratch for the partial weight gradients of threads 1 .. team-1, which split the
    rows: for every gradient at once, (team - 1) * G*H * (D + H) values. Left NULL when
    out of memory: the rows of each gradient are split instead (slower by a few
    percent, see grads_after_loop)."""
    cdef Py_ssize_t i, total = 0
    cdef int first = after.one_hot != NULL   # a one-hot dW_ih needs none
    cdef char *scratch
    for i in range(first, after.weight_grads):
        total += after.weight[i].m * after.weight[i].n
    scratch = <char *>pool_alloc((team - 1) * total * itemsize, False)
    after.scratch = scratch
    if scratch == NULL:
        return
    for i in range(first, after.weight_grads):
        after.weight[i].partial = scratch
        scratch += (team - 1) * after.weight[i].m * after.weight[i].n * itemsize


cdef void free_after_loop(AfterLoop *after) noexcept nogil:
    pool_free(after.packed_w_hh)
    pool_free(after.packed_w_ih)
    pool_free(after.scratch)
    pool_free(after.one_hot_sums)
    pool_free(after.one_hot)
    after.packed_w_hh = after.packed_w_ih = after.scratch = after.one_hot_sums = NULL
    after.one_hot = NULL


cdef void grads_after_loop(int tid, int team, AfterLoop *after,
                           const floating *dG) noexcept nogil:
    """The GEMMs after BPTT, run by every thread ``tid`` of a team of ``team`` (one
    parallel region with the reverse loops before it, so that no thread sleeps between
    them: on a 2-core VM each region costs tens of microseconds to wake).

    dx = dG W_ih by rows (none where ``after.dx`` is NULL). The weight gradients one per
    thread where two threads share them evenly (side_by_side), else each split by rows
    of the steps into partial sums, added up after a barrier by rows of the gradient;
    for one-hot inputs dW_ih by rows of the gradient, as sums of dG's rows
    (one_hot_at_b). The bias gradients by columns.
    """
    cdef Py_ssize_t rows = after.T * after.B, GH = after.GH, D = after.D
    cdef Py_ssize_t i, q, r, j, r0, r1, m, n
    cdef WeightGrad *w
    cdef BiasGrad *bias
    cdef floating *c
    cdef const floating *partial
    cdef const floating *packed_w_ih
    cdef int barriers = 0       # the barriers this thread has passed
    cdef bint whole = side_by_side(team, D, after.H) and after.one_hot == NULL
    cdef bint split_rows = not whole and team > 1
    cdef bint one_hot
    cdef bint wants_dx = after.dx != NULL
    # a large packed W_ih is freed before the partial sums are allocated (below)
    cdef bint large_w_ih = wants_dx and GH * D * sizeof(floating) >= LARGE_INPUT_WEIGHTS_BYTES
    rnnfast_team_barrier(team, &after.arrived, &barriers)   # every step's dG is in place
    if tid == 0:
        pool_free(after.packed_w_hh)   # done with; the packed W_ih below may reuse it
        after.packed_w_hh = NULL
        if wants_dx and packs_input_weights(GH, D, sizeof(floating)):
            after.packed_w_ih = packed_or_null(GH, D, <const floating *>after.w_ih, False, 1)
        if after.lengths != NULL:   # states carried past a length stay out of dW_hh
            zero_inactive_rows(after.T, after.B, after.H, <floating *>after.h_prev,
                               after.lengths)
        if split_rows and not large_w_ih:
            alloc_partial_sums(after, team, sizeof(floating))
        if after.one_hot != NULL:
            after.one_hot_sums = pool_alloc((D + 1) * GH * sizeof(floating), False)
    rnnfast_team_barrier(team, &after.arrived, &barriers)
    packed_w_ih = <const floating *>after.packed_w_ih
    # dx = dG @ W_ih                          (rows, D)
    r0 = part_start(tid, team, rows)
    r1 = part_start(tid + 1, team, rows)
    if wants_dx and packed_w_ih == NULL:
        gemm(NoTrans, NoTrans, r1 - r0, D, GH, 1, dG + r0 * GH, GH,
             <const floating *>after.w_ih, D, 0, <floating *>after.dx + r0 * D, D)
    elif wants_dx:
        gemm_packed_set(r1 - r0, D, GH, dG + r0 * GH, GH, packed_w_ih,
                        <floating *>after.dx + r0 * D, D)
    if large_w_ih:
        # a large packed W_ih goes back to the system before the weight gradients
        # allocate their scratch: a lower peak, for barriers that cost nothing against
        # these GEMMs
        rnnfast_team_barrier(team, &after.arrived, &barriers)
        if tid == 0:
            pool_release(after.packed_w_ih)
            after.packed_w_ih = NULL
            if split_rows:
                alloc_partial_sums(after, team, sizeof(floating))
        rnnfast_team_barrier(team, &after.arrived, &barriers)
    for i in range(after.weight_grads):
        w = &after.weight[i]
        one_hot = i == 0 and after.one_hot != NULL
        if whole:   # the input side on thread 0, the recurrent side on thread 1
            if (i > 0) == tid:
                gemm_at_b(w.m, w.n, rows, <const floating *>w.a, w.lda, <const floating *>w.b,
                          w.ldb, <floating *>w.c, w.ldc)
        elif w.partial == NULL:   # no scratch, or one-hot: split the rows of the gradient
            r0 = part_start(tid, team, w.m)
            r1 = part_start(tid + 1, team, w.m)
            if not (one_hot and after.one_hot_sums != NULL and one_hot_at_b(
                    r0, r1, rows, w.n, <const floating *>w.a, w.lda, after.one_hot,
                    <floating *>after.one_hot_sums + (w.n + 1) * r0, <floating *>w.c,
                    w.ldc)):
                gemm_at_b(r1 - r0, w.n, rows, <const floating *>w.a + r0, w.lda,
                          <const floating *>w.b, w.ldb, <floating *>w.c + r0 * w.ldc, w.ldc)
        else:
            r0 = part_start(tid, team, rows)
            r1 = part_start(tid + 1, team, rows)
            if tid == 0:
                gemm_at_b(w.m, w.n, r1, <const floating *>w.a, w.lda, <const floating *>w.b,
                          w.ldb, <floating *>w.c, w.ldc)
            else:
                gemm_at_b(w.m, w.n, r1 - r0, <const floating *>w.a + r0 * w.lda, w.lda,
                          <const floating *>w.b + r0 * w.ldb, w.ldb,
                          <floating *>w.partial + (tid - 1) * w.m * w.n, w.n)
    if split_rows and after.scratch != NULL:
        rnnfast_team_barrier(team, &after.arrived, &barriers)
        for i in range(after.weight_grads):
            # c[r] += the partial sums of threads 1 .. team-1, rows of c split
            w = &after.weight[i]
            if w.partial == NULL:   # one-hot: no partial sums
                continue
            m, n, c = w.m, w.n, <floating *>w.c
            for r in range(part_start(tid, team, m), part_start(tid + 1, team, m)):
                for q in range(team - 1):
                    partial = <const floating *>w.partial + (q * m + r) * n
                    for j in range(n):
                        c[r * w.ldc + j] += partial[j]
    for i in range(after.bias_grads):
        # out = the column sums of a              (cols,), columns split
        bias = &after.bias[i]
        r0 = part_start(tid, team, bias.cols)
        r1 = part_start(tid + 1, team, bias.cols)
        column_sums(rows, r1 - r0, bias.ld, <const floating *>bias.a + r0,
                    <floating *>bias.out + r0)
    rnnfast_join(tid, team, &after.finished)


cdef void project_rows(const floating *x, const floating *packed_w_ih_t, Py_ssize_t first,
                       Py_ssize_t steps, Py_ssize_t B, Py_ssize_t b0, Py_ssize_t nb,
                       Py_ssize_t D, Py_ssize_t GH, floating *gates) noexcept nogil:
    # gates[s, b0:b0+nb] = x[first+s, b0:b0+nb] @ W_ih.T   (nb, GH) for each s < steps
    cdef Py_ssize_t s
    for s in range(steps):
        gemm_packed_set(nb, GH, D, x + ((first + s) * B + b0) * D, D, packed_w_ih_t,
                        gates + (s * B + b0) * GH, GH)


cdef inline void forward_rows(int gates_per_unit, bint relu, bint training, Py_ssize_t b0,
                              Py_ssize_t nb, Py_ssize_t s0, Py_ssize_t steps, Py_ssize_t first,
                              Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, bint reverse,
                              floating *hs, floating *cs, floating *gates, floating *hh,
                              floating *gh_n, const floating *packed, const floating *bias,
                              const floating *b_hh, const int64_t *lengths,
                              int threads) noexcept nogil:
    """The time loop of one cell: RNN (G = 1), LSTM (4) or GRU (3); see forward_chunks."""
    if gates_per_unit == 1:
        rnn_forward_rows(b0, nb, s0, steps, first, T, B, H, reverse, relu, hs, gates, packed,
                         bias, lengths, threads)
    elif gates_per_unit == 4:
        lstm_forward_rows(b0, nb, s0, steps, first, T, B, H, reverse, training, hs, cs, gates,
                          packed, bias, lengths, threads)
    else:
        gru_forward_rows(b0, nb, s0, steps, first, T, B, H, reverse, hs, gates, hh, gh_n,
                         packed, bias, b_hh, lengths, threads)


cdef void forward_team(int tid, int team, int *finished, int gates_per_unit, bint relu,
                       bint training, Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H,
                       Py_ssize_t K, const floating *x, const floating *packed_ih,
                       const floating *packed, const floating *bias, const floating *b_hh,
                       const int64_t *lengths, bint reverse, floating *hs, floating *cs,
                       floating *y, floating *gates, floating *hh, floating *gh_n,
                       int parts) noexcept nogil:
    """Thread ``tid`` of ``team`` in forward_chunks: each of its batch blocks, of
    ``parts``, projects its own rows and runs them, chunk by chunk, then copies its
    rows of the states into y (where not NULL) while they are in its core's cache."""
    cdef Py_ssize_t GH = gates_per_unit * H, chunk, s0, steps, first, b0, nb
    cdef int part = tid
    while part < parts:
        b0 = part_start(part, parts, B)
        nb = part_start(part + 1, parts, B) - b0
        for chunk in range((T + K - 1) // K):
            s0 = chunk * K
            steps = min(K, T - s0)
            first = chunk_start(s0, steps, T, reverse)
            project_rows(x, packed_ih, first, steps, B, b0, nb, D, GH, gates)
            forward_rows(gates_per_unit, relu, training, b0, nb, s0, steps, first, T, B, H,
                         reverse, hs, cs, gates, hh, gh_n, packed, bias, b_hh, lengths, 1)
        if y != NULL:
            copy_outputs(T, B, H, b0, nb, reverse, hs, y)
        part += team
    rnnfast_join(tid, team, finished)


cdef inline void copy_outputs(Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t b0,
                              Py_ssize_t nb, bint reverse, const floating *hs,
                              floating *y) noexcept nogil:
    # y[t, b0:b0+nb] = hs[t + 1 - reverse, b0:b0+nb]: the states at their time positions
    cdef Py_ssize_t t
    hs += (1 - reverse) * B * H
    for t in range(T):
        memcpy(y + (t * B + b0) * H, hs + (t * B + b0) * H, nb * H * sizeof(floating))


cdef void forward_chunks(int gates_per_unit, bint relu, bint training, Py_ssize_t T,
                         Py_ssize_t B, Py_ssize_t D, Py_ssize_t H, Py_ssize_t K, bint projected,
                         const floating *x, const floating *w_ih, const floating *packed_ih,
                         const floating *packed, const floating *bias, const floating *b_hh,
                         const int64_t *lengths, bint reverse, floating *hs, floating *cs,
                         floating *y, floating *gates, floating *hh, floating *gh_n, int parts,
                         int gemm_parts, int step_parts) noexcept nogil:
    """A forward pass over all T steps, K at a time: the input projection of K steps,
    then their time loop; ``projected``: K == T and ``gates`` holds the projection
    already (project_one_hot). Where ``y`` (T, B, H) is not NULL it receives a copy
    of the states at their time positions, each block's by the thread that ran it.

    ``bias``: b_ih + b_hh (RNN, LSTM) or b_ih (GRU, with ``b_hh``); ``relu`` for the
    RNN, ``training`` for the LSTM, ``hh`` and ``gh_n`` for the GRU; see the buffers in
    the module docstring. With several blocks and a packed W_ih each thread projects
    its own rows and runs them, every chunk, in one parallel region without a barrier
    between chunks; otherwise each chunk's projection is split over ``parts`` threads
    first, or over ``gemm_parts`` where one chunk holds all steps. One block shares
    the projection, where ``gemm_parts`` is 1, and each step's product between
    ``step_parts`` threads: the caller and helper threads (multiply_packed).
    """
    cdef Py_ssize_t GH = gates_per_unit * H, chunks = (T + K - 1) // K
    cdef Py_ssize_t chunk, s0, steps, first, part, b0
    cdef int finished = 0
    if parts > 1 and packed_ih != NULL:
        with parallel(num_threads=parts):
            forward_team(threadid(), rnnfast_team_size(), &finished, gates_per_unit, relu,
                         training, T, B, D, H, K, x, packed_ih, packed, bias, b_hh, lengths,
                         reverse, hs, cs, y, gates, hh, gh_n, parts)
        return
    for chunk in range(chunks):
        s0 = chunk * K
        steps = min(K, T - s0)
        first = chunk_start(s0, steps, T, reverse)
        # one projection of all steps on gemm_parts threads, chunks on the loop's
        if not projected:
            project_inputs(x, w_ih, packed_ih, first, steps, B, D, GH, gates,
                           gemm_parts if chunks == 1 else parts, step_parts)
        if parts == 1:   # one block: no OpenMP region (see the docstring)
            forward_rows(gates_per_unit, relu, training, 0, B, s0, steps, first, T, B, H,
                         reverse, hs, cs, gates, hh, gh_n, packed, bias, b_hh, lengths,
                         step_parts)
        else:
            for part in prange(parts, num_threads=parts, schedule="static"):
                b0 = part_start(part, parts, B)
                forward_rows(gates_per_unit, relu, training, b0,
                             part_start(part + 1, parts, B) - b0, s0, steps, first, T, B, H,
                             reverse, hs, cs, gates, hh, gh_n, packed, bias, b_hh, lengths, 1)
    if y != NULL:
        copy_outputs(T, B, H, 0, B, reverse, hs, y)


# ---------------------------------------------------------------- joined steps

cdef inline bint joins_steps(int gates_per_unit, bint training, Py_ssize_t B, Py_ssize_t D,
                             Py_ssize_t H, int parts, size_t itemsize) noexcept nogil:
    """Whether a forward runs as forward_joined: LSTM inference with JOINED_MIN_ROWS
    rows or more per thread, where each step's product is bound by arithmetic, and
    joined weights of at most JOINED_MAX_BYTES. Time against the projection apart,
    two threads: (100,16,64,64) -1 to -3 %, (100,32,128,128) -1 to -2.5 %,
    (100,64,256,256) -1 %; (50,64,512,512), whose 8 MiB of joined weights stream
    from L3, +0.5 %. The RNN lost 1-2 % (its step's product is 4 times narrower), and
    the GRU's n gate needs h W_hn^T apart."""
    return (gates_per_unit == 4 and not training and B // parts >= JOINED_MIN_ROWS
            and gates_per_unit * H * (D + H) * itemsize <= JOINED_MAX_BYTES)


cdef floating *joined_rows_of(Py_ssize_t GH, Py_ssize_t D, Py_ssize_t H,
                              const floating *w_ih, const floating *w_hh) noexcept nogil:
    """[W_ih | W_hh] (GH, D+H) in a pool buffer (pool_free it); NULL without memory."""
    cdef Py_ssize_t g, DH = D + H
    cdef floating *joined = <floating *>pool_alloc(GH * DH * sizeof(floating), False)
    if joined != NULL:
        for g in range(GH):
            memcpy(joined + g * DH, w_ih + g * D, D * sizeof(floating))
            memcpy(joined + g * DH + D, w_hh + g * H, H * sizeof(floating))
    return joined


cdef enum:
    # how kept weights are packed (the first number of their shape in rnnfast_kept.h)
    KEPT_JOINED = 1          # [W_ih | W_hh]^T (D+H, GH)
    KEPT_STEPS = 2           # W_hh^T (H, GH), then W_ih^T (D, GH) where packed
    KEPT_STEPS_NO_IH = 3     # W_hh^T (H, GH) alone


cdef inline size_t packed_elements(Py_ssize_t K, Py_ssize_t N, size_t itemsize) noexcept nogil:
    """Values in K (rows) x N (columns) packed in panels, of float (4) or double (8)."""
    return packed_size_f32(K, N) if itemsize == 4 else packed_size_f64(K, N)


cdef floating *kept_weights_of(int layout, Py_ssize_t GH, Py_ssize_t D, Py_ssize_t H,
                               const floating *w_ih, const floating *w_hh) noexcept nogil:
    """W_ih and W_hh packed as ``layout`` says, kept between calls (csrc/rnnfast_kept.h):
    packed again only where the bytes of W_ih or W_hh changed since. The cache stays
    locked until rnnfast_kept_unlock(); NULL, nothing locked, where another thread
    holds it or memory runs out."""
    cdef int fresh = 0
    cdef int64_t shape[RNNFAST_KEPT_SHAPE]
    cdef size_t ih_bytes = 0 if layout == KEPT_STEPS_NO_IH else GH * D * sizeof(floating)
    cdef size_t packed = packed_elements(H, GH, sizeof(floating)) + (
        0 if layout == KEPT_STEPS_NO_IH else packed_elements(D, GH, sizeof(floating)))
    cdef floating *joined
    cdef floating *panels
    shape[0], shape[1], shape[2], shape[3], shape[4] = layout, sizeof(floating), GH, D, H
    if packed * sizeof(floating) > KEPT_MAX_BYTES or pool_limit() == 0:
        return NULL
    cdef rnnfast_kept_entry *entry = rnnfast_kept_lookup(
        w_ih, ih_bytes, w_hh, GH * H * sizeof(floating), shape, packed * sizeof(floating),
        &fresh)
    if entry == NULL:
        return NULL
    panels = <floating *>entry.packed
    if fresh:
        return panels
    if layout == KEPT_JOINED:
        joined = joined_rows_of(GH, D, H, w_ih, w_hh)
        if joined == NULL:
            rnnfast_kept_unlock()
            return NULL
        pack_panels(D + H, GH, joined, 1, D + H, panels)   # W^T: K = D + H, N = GH
        pool_free(joined)
    else:
        pack_panels(H, GH, w_hh, 1, H, panels)              # W_hh^T: K = H, N = GH
        if layout == KEPT_STEPS:
            pack_panels(D, GH, w_ih, 1, D, panels + packed_elements(H, GH, sizeof(floating)))
    rnnfast_kept_store(entry)
    return panels


cdef floating *joined_weights(Py_ssize_t GH, Py_ssize_t D, Py_ssize_t H,
                              const floating *w_ih, const floating *w_hh,
                              bint *kept) except NULL:
    """[W_ih | W_hh]^T (D+H, GH) packed for forward_joined: the weights kept between
    calls (kept_weights_of; *kept set), or else packed for this call alone. Give them
    back with release_weights."""
    cdef floating *packed
    cdef floating *joined
    with nogil:
        packed = kept_weights_of(KEPT_JOINED, GH, D, H, w_ih, w_hh)
        kept[0] = packed != NULL
        if packed == NULL:
            joined = joined_rows_of(GH, D, H, w_ih, w_hh)
            if joined != NULL:
                packed = packed_or_null(GH, D + H, joined, True, 1)
                pool_free(joined)
    if packed == NULL:
        raise MemoryError(f"cannot allocate the joined ({GH}, {D + H}) weights")
    return packed


cdef floating *step_weights(Py_ssize_t GH, Py_ssize_t D, Py_ssize_t H, const floating *w_ih,
                            const floating *w_hh, bint with_ih, bint keep, int packers,
                            floating **packed_ih, bint *kept) except NULL:
    """W_hh^T (H, GH) packed for the steps, returned, and W_ih^T (D, GH) packed for the
    input projection into *packed_ih where ``with_ih`` (else NULL): the weights kept
    between calls where ``keep`` allows and the cache is free (kept_weights_of; *kept
    set), else packed for this call on ``packers`` threads (pack_weights). Give them
    back with release_weights."""
    cdef floating *packed = NULL
    if keep:
        with nogil:
            packed = kept_weights_of(KEPT_STEPS if with_ih else KEPT_STEPS_NO_IH, GH, D, H,
                                     w_ih, w_hh)
    kept[0] = packed != NULL
    if packed != NULL:
        packed_ih[0] = packed + packed_elements(H, GH, sizeof(floating)) if with_ih else NULL
        return packed
    packed = pack_weights(GH, H, w_hh, True, packers)
    if with_ih:
        try:
            packed_ih[0] = pack_weights(GH, D, w_ih, True, packers)
        except MemoryError:
            pool_free(packed)
            raise
    return packed


cdef inline void release_weights(floating *packed, floating *packed_ih,
                                 bint kept) noexcept nogil:
    """Gives back what joined_weights or step_weights returned."""
    if kept:
        rnnfast_kept_unlock()
    else:
        pool_free(packed)
        pool_free(packed_ih)


KEPT_LAYOUTS = {KEPT_JOINED: "joined", KEPT_STEPS: "steps", KEPT_STEPS_NO_IH: "W_hh"}


def kept_weights():
    """What inference keeps packed between calls (csrc/rnnfast_kept.h): a list of
    (layout, itemsize, G*H, D, H), one per set of weights, the layout "joined"
    ([W_ih | W_hh]^T), "steps" (W_hh^T and W_ih^T) or "W_hh" (W_hh^T alone), and the
    bytes held in all."""
    cdef int64_t shapes[RNNFAST_KEPT_ENTRIES * RNNFAST_KEPT_SHAPE]
    cdef size_t held = 0
    cdef int count, i
    with nogil:
        count = rnnfast_kept_describe(shapes, &held)
    return ([(KEPT_LAYOUTS[shapes[i * RNNFAST_KEPT_SHAPE]],)
             + tuple(shapes[i * RNNFAST_KEPT_SHAPE + k] for k in range(1, RNNFAST_KEPT_SHAPE))
             for i in range(count)], held)


def forget_kept_weights():
    """Free the packed weights that inference keeps between calls (kept_weights)."""
    with nogil:
        rnnfast_kept_clear()


cdef void *joined_inputs(Py_ssize_t B, Py_ssize_t D, Py_ssize_t H, size_t itemsize) except NULL:
    """The workspace [x_t | h_{t-1}] (B, D+H) of forward_joined."""
    cdef void *xh = pool_alloc(B * (D + H) * itemsize, False)
    if xh == NULL:
        raise MemoryError(f"cannot allocate a ({B}, {D + H}) workspace")
    return xh


cdef void joined_rows(Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t T, Py_ssize_t B,
                      Py_ssize_t D, Py_ssize_t H, bint reverse, const floating *x,
                      const floating *packed, const floating *bias, const int64_t *lengths,
                      floating *hs, floating *cs, floating *gates,
                      floating *xh) noexcept nogil:
    """The time loop of forward_joined for batch rows b0 .. b0+nb-1; ``xh`` (nb, D+H)
    holds [x_t | h_{t-1}] and ``gates`` (nb, 4H) the step's gates."""
    cdef Py_ssize_t s, t, r, DH = D + H, prev = reverse, out = 1 - reverse
    cdef const int64_t *row_lengths = NULL if lengths == NULL else lengths + b0
    cdef floating *h_out
    cdef unsigned int fpmode = rnnfast_fpmode_enter()
    for r in range(nb):
        memcpy(xh + r * DH + D, hs + ((T * prev) * B + b0 + r) * H, H * sizeof(floating))
    for s in range(T):
        t = T - 1 - s if reverse else s
        for r in range(nb):
            memcpy(xh + r * DH, x + (t * B + b0 + r) * D, D * sizeof(floating))
        # gates = [x_t | h_{t-1}] @ [W_ih | W_hh]^T        (nb, 4H)
        gemm_packed_set(nb, 4 * H, DH, xh, DH, packed, gates, 4 * H)
        h_out = hs + ((t + out) * B + b0) * H
        # the cell states in two slots used in turn, as in lstm_forward_rows
        lstm_step_forward(nb, H, gates, bias, hs + ((t + prev) * B + b0) * H, h_out,
                          cs + ((s % 2) * B + b0) * H, cs + (((s + 1) % 2) * B + b0) * H,
                          row_lengths, t)
        for r in range(nb):
            memcpy(xh + r * DH + D, h_out + r * H, H * sizeof(floating))
    rnnfast_fpmode_exit(fpmode)


cdef void joined_team(int tid, int team, int *finished, Py_ssize_t T, Py_ssize_t B,
                      Py_ssize_t D, Py_ssize_t H, bint reverse, const floating *x,
                      const floating *packed, const floating *bias, const int64_t *lengths,
                      floating *hs, floating *cs, floating *gates, floating *xh,
                      int parts) noexcept nogil:
    """Thread ``tid`` of ``team`` in forward_joined: each of its batch blocks."""
    cdef Py_ssize_t b0, nb
    cdef int part = tid
    while part < parts:
        b0 = part_start(part, parts, B)
        nb = part_start(part + 1, parts, B) - b0
        joined_rows(b0, nb, T, B, D, H, reverse, x, packed, bias, lengths, hs, cs,
                    gates + b0 * 4 * H, xh + b0 * (D + H))
        part += team
    rnnfast_join(tid, team, finished)


cdef void forward_joined(Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t H,
                         const floating *x, const floating *packed, const floating *bias,
                         const int64_t *lengths, bint reverse, floating *hs, floating *cs,
                         floating *gates, floating *xh, int parts) noexcept nogil:
    """An LSTM forward pass in inference, each step one product
    [x_t | h_{t-1}] @ [W_ih | W_hh]^T over K = D + H on the weights packed by
    joined_weights: no separate input projection, so each step writes its gates
    once, and the longer K runs the kernel closer to its peak (one core, M = 16,
    N = 512, D = H = 128: 114 GFLOP/s, against 110 for the projection and the
    recurrent product apart). ``gates`` (B, 4H) and ``xh`` (B, D+H) are workspaces;
    ``hs`` (T+1, B, H), ``cs`` (2, B, H) and ``bias`` as in forward_chunks, the batch
    split into ``parts`` blocks as there."""
    cdef int finished = 0
    if parts == 1:
        joined_rows(0, B, T, B, D, H, reverse, x, packed, bias, lengths, hs, cs, gates, xh)
        return
    with parallel(num_threads=parts):
        joined_team(threadid(), rnnfast_team_size(), &finished, T, B, D, H, reverse, x,
                    packed, bias, lengths, hs, cs, gates, xh, parts)


cdef inline void backward_rows(int gates_per_unit, bint relu, Py_ssize_t b0, Py_ssize_t nb,
                               AfterLoop *after, bint reverse, const floating *hs,
                               const floating *cs, floating *gates, floating *gh_n,
                               const floating *dy, floating *dh, floating *dc,
                               floating *dh_scratch, floating *dgh, int threads) noexcept nogil:
    """The reverse time loop of one cell for batch rows b0 .. b0+nb-1: RNN (G = 1, its
    dpre in ``gates``), LSTM (4, with ``cs`` and ``dc``) or GRU (3, with ``gh_n`` and
    ``dgh``); see the *_backward functions. Each step's product on ``threads``
    threads."""
    cdef const floating *packed = <const floating *>after.packed_w_hh
    if gates_per_unit == 1:
        rnn_backward_rows(b0, nb, after.T, after.B, after.H, reverse, relu, hs, dy, dh,
                          dh_scratch, gates, packed, after.lengths, threads)
    elif gates_per_unit == 4:
        lstm_backward_rows(b0, nb, after.T, after.B, after.H, reverse, cs, gates, dy, dh, dc,
                           dh_scratch, packed, after.lengths, threads)
    else:
        gru_backward_rows(b0, nb, after.T, after.B, after.H, reverse, hs, gates, gh_n, dy, dh,
                          dh_scratch, dgh, packed, after.lengths, threads)


cdef void backward_team(int tid, int team, int parts, int step_parts, int gates_per_unit,
                        bint relu, AfterLoop *after, bint reverse, const floating *hs,
                        const floating *cs, floating *gates, floating *gh_n,
                        const floating *dy, floating *dh, floating *dc,
                        floating *dh_scratch, floating *dgh) noexcept nogil:
    """Thread ``tid`` of ``team``: the reverse loops of its batch blocks, of ``parts``
    (one block shares each step's product between ``step_parts`` threads), then its
    share of grads_after_loop (dG in ``gates``)."""
    cdef Py_ssize_t B = after.B, b0
    cdef int part = tid
    while part < parts:
        b0 = part_start(part, parts, B)
        backward_rows(gates_per_unit, relu, b0, part_start(part + 1, parts, B) - b0, after,
                      reverse, hs, cs, gates, gh_n, dy, dh, dc, dh_scratch, dgh,
                      step_parts if parts == 1 else 1)
        part += team
    grads_after_loop(tid, team, after, gates)


cdef void run_backward(int threads, int parts, int step_parts, int gates_per_unit, bint relu,
                       AfterLoop *after, bint reverse, const floating *hs,
                       const floating *cs, floating *gates, floating *gh_n,
                       const floating *dy, floating *dh, floating *dc, floating *dh_scratch,
                       floating *dgh) noexcept nogil:
    """BPTT on ``threads`` threads, in one parallel region (none for one thread: see
    the module docstring)."""
    if threads == 1:
        backward_team(0, 1, parts, step_parts, gates_per_unit, relu, after, reverse, hs, cs,
                      gates, gh_n, dy, dh, dc, dh_scratch, dgh)
        return
    with parallel(num_threads=threads):
        backward_team(threadid(), rnnfast_team_size(), parts, step_parts, gates_per_unit,
                      relu, after, reverse, hs, cs, gates, gh_n, dy, dh, dc, dh_scratch, dgh)


# ---------------------------------------------------------------- one-hot inputs

cdef int32_t *one_hot_rows(Py_ssize_t rows, Py_ssize_t D, const floating *x) noexcept nogil:
    """For x (rows, D) whose every row is one-hot or zero: the column of each row's 1
    (-1 for a row of zeros) in a pool buffer (pool_free it); else NULL (also without
    memory). Most other inputs fail on their first row, before any allocation."""
    cdef int32_t first
    cdef int32_t *ids
    if rows == 0 or D == 0 or D > 2147483647 or not one_hot_ids_of(1, D, x, &first):
        return NULL
    ids = <int32_t *>pool_alloc(rows * sizeof(int32_t), False)
    if ids != NULL and not one_hot_ids_of(rows, D, x, ids):
        pool_free(ids)
        ids = NULL
    return ids


def one_hot_ids(const floating[:, :, ::1] x):
    """What the training kernels find in x (T, B, D) when asked to look for one-hot
    rows: (T*B,) int32 (one_hot_rows), or None."""
    cdef int32_t *ids = NULL
    if x.shape[0] * x.shape[1] * x.shape[2] > 0:   # no element to point at otherwise
        ids = one_hot_rows(x.shape[0] * x.shape[1], x.shape[2], &x[0, 0, 0])
    if ids == NULL:
        return None
    try:
        return np.asarray(<int32_t[:x.shape[0] * x.shape[1]]>ids).copy()
    finally:
        pool_free(ids)


cdef bint project_one_hot(Py_ssize_t rows, Py_ssize_t GH, Py_ssize_t D, const int32_t *ids,
                          const floating *w_ih, floating *gates, int threads) except -1:
    """gates (rows, GH) = x W_ih^T for the one-hot rows x that ``ids`` describe, on
    ``threads`` threads; False, with nothing written, where W_ih holds a non-finite
    value (or the transposed copy finds no memory): the GEMM then runs."""
    cdef floating *w_t = <floating *>pool_alloc(GH * D * sizeof(floating), False)
    cdef bint finite = False
    cdef Py_ssize_t part
    if w_t == NULL:
        return False
    with nogil:
        finite = transpose_finite(GH, D, w_ih, w_t)
        if finite:
            for part in prange(threads, num_threads=threads, schedule="static"):
                gather_rows(part_start(part, threads, rows), part_start(part + 1, threads, rows),
                            GH, ids, w_t, gates)
    pool_free(w_t)
    return finite


cdef bint projects_one_hot(Py_ssize_t T, Py_ssize_t B, Py_ssize_t D, Py_ssize_t GH,
                           bint one_hot_inputs, const floating *x, const floating *w_ih,
                           floating[:, :, ::1] gates, int threads) except -1:
    """Whether a forward's projection of all T steps at once (training) was looked up
    for one-hot inputs (project_one_hot) into ``gates`` (T, B, GH)."""
    cdef int32_t *ids = NULL
    if not (one_hot_inputs and gates.shape[0] == T):
        return False
    ids = one_hot_rows(T * B, D, x)
    try:
        return ids != NULL and project_one_hot(T * B, GH, D, ids, w_ih, &gates[0, 0, 0],
                                               threads)
    finally:
        pool_free(ids)


# ---------------------------------------------------------------- RNN

cdef void rnn_forward_rows(Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t s0, Py_ssize_t steps,
                           Py_ssize_t first, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
                           bint reverse, bint relu, floating *hs, floating *gates,
                           const floating *packed_w_hh_t, const floating *bias,
                           const int64_t *lengths, int threads) noexcept nogil:
    """Steps s0 .. s0+steps-1 for batch rows b0 .. b0+nb-1, each step's product on
    ``threads`` threads (multiply_packed)."""
    cdef Py_ssize_t s, t, prev = reverse, out = 1 - reverse
    cdef floating *gates_t
    cdef floating *h_prev
    cdef unsigned int fpmode = rnnfast_fpmode_enter()
    for s in range(s0, s0 + steps):
        t = T - 1 - s if reverse else s
        gates_t = gates + ((t - first) * B + b0) * H
        h_prev = hs + ((t + prev) * B + b0) * H
        # gates_t += h_{t-1} @ W_hh.T         (nb, H)
        multiply_packed(threads, True, nb, H, H, h_prev, H, packed_w_hh_t, gates_t, H)
        rnn_step_forward(nb, H, relu, gates_t, bias, h_prev, hs + ((t + out) * B + b0) * H,
                         NULL if lengths == NULL else lengths + b0, t)
    rnnfast_fpmode_exit(fpmode)


def rnn_forward(const floating[:, :, ::1] x,     # (T, B, D)
                const floating[:, ::1] w_ih,     # (H, D)
                const floating[:, ::1] w_hh,     # (H, H)
                const floating[::1] bias,        # (H,) b_ih + b_hh
                const int64_t[::1] lengths,      # (B,) or None
                bint one_hot_inputs,             # look for one-hot rows in x (training)
                bint reverse, bint relu, bint training,
                floating[:, :, ::1] hs,          # (T+1, B, H) in: h0 in its slot; out: states
                floating[:, :, ::1] y,           # (T, B, H) out: states at their times, or None
                floating[:, :, ::1] gates,       # (K, B, H) workspace
                int parts,                       # batch blocks run in parallel
                int gemm_parts,                  # threads of the GEMMs over all steps
                int step_parts):                 # threads sharing each step of one block
    """h_t = act(x_t W_ih^T + h_{t-1} W_hh^T + bias) over all steps, into ``hs``."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_hh.shape[1]
    cdef int packers = pack_threads(gemm_parts, step_parts)
    cdef floating *packed = NULL
    cdef floating *packed_ih = NULL
    cdef bint projected, kept = False
    try:
        projected = projects_one_hot(T, B, D, H, one_hot_inputs, &x[0, 0, 0], &w_ih[0, 0],
                                     gates, gemm_parts)
        packed = step_weights(H, D, H, &w_ih[0, 0], &w_hh[0, 0],
                              not projected and packs_projection(H, D, gates.shape[0] < T,
                                                                 sizeof(floating)),
                              not training and packers == 1, packers, &packed_ih, &kept)
        with nogil:
            forward_chunks(1, relu, False, T, B, D, H, gates.shape[0], projected, &x[0, 0, 0],
                           &w_ih[0, 0], packed_ih, packed, &bias[0], NULL, lengths_ptr(lengths),
                           reverse, &hs[0, 0, 0], NULL, optional_out_ptr(y), &gates[0, 0, 0],
                           NULL, NULL, parts, gemm_parts, step_parts)
    finally:
        release_weights(packed, packed_ih, kept)


cdef void rnn_backward_rows(Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t T, Py_ssize_t B,
                            Py_ssize_t H, bint reverse, bint relu, const floating *hs,
                            const floating *dy, floating *dh, floating *dh_scratch,
                            floating *dpre, const floating *packed_w_hh,
                            const int64_t *lengths, int threads) noexcept nogil:
    """The reverse time loop for batch rows b0 .. b0+nb-1, each step's product on
    ``threads`` threads."""
    cdef Py_ssize_t s, t, out = 1 - reverse
    cdef floating *dpre_t
    cdef unsigned int fpmode = rnnfast_fpmode_enter()
    for s in range(T):
        t = s if reverse else T - 1 - s
        dpre_t = dpre + (t * B + b0) * H
        rnn_step_backward(nb, H, relu, hs + ((t + out) * B + b0) * H,
                          NULL if dy == NULL else dy + (t * B + b0) * H, dh + b0 * H, dpre_t,
                          NULL if lengths == NULL else lengths + b0, t)
        # dh += dpre_t @ W_hh                 (nb, H)
        add_recurrent_grad(nb, H, H, dpre_t, packed_w_hh, dh + b0 * H, dh_scratch + b0 * H,
                           NULL if lengths == NULL else lengths + b0, t, threads)
    rnnfast_fpmode_exit(fpmode)


def rnn_backward(const floating[:, :, ::1] x,    # (T, B, D)
                 const floating[:, ::1] w_ih,    # (H, D)
                 const floating[:, ::1] w_hh,    # (H, H)
                 const int64_t[::1] lengths,     # (B,) or None
                 bint one_hot_inputs,            # look for one-hot rows in x (training)
                 bint reverse, bint relu,
                 floating[:, :, ::1] hs,         # (T+1, B, H) from forward; consumed
                 const floating[:, :, ::1] dy,   # (T, B, H) or None
                 floating[:, ::1] dh,            # (B, H) in: dh_T; out: dh0
                 floating[:, ::1] dh_scratch,    # (B, H) workspace
                 floating[:, :, ::1] dpre,       # (T, B, H) out: gradient of the pre-activations
                 floating[:, :, ::1] dx,         # (T, B, D) out, or None: not wanted
                 floating[:, ::1] dw_ih,         # (H, D) out
                 floating[:, ::1] dw_hh,         # (H, H) out
                 floating[::1] db,               # (H,) out
                 int parts,                      # batch blocks run in parallel
                 int gemm_parts,                 # threads of the GEMMs after the loop
                 int step_parts):                # threads sharing each step of one block
    """BPTT for ``rnn_forward``: dpre_t = (dy_t + dh_t) act'(h_t), dh_{t-1} = dpre_t W_hh."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_hh.shape[1]
    cdef int threads = max(parts, gemm_parts)
    cdef AfterLoop after
    start_after_loop(&after, T, B, D, H, H, &w_ih[0, 0], optional_out_ptr(dx),
                     &hs[reverse, 0, 0], lengths_ptr(lengths))
    try:
        after.packed_w_hh = pack_weights(w_hh.shape[0], H, &w_hh[0, 0], False,
                                          pack_threads(gemm_parts, step_parts))
        if one_hot_inputs:
            after.one_hot = one_hot_rows(T * B, D, &x[0, 0, 0])
        # dW_ih = dpre.T @ x     (H, D);   dW_hh = dpre.T @ h_prev     (H, H)
        add_weight_grad(&after, H, D, &dpre[0, 0, 0], H, &x[0, 0, 0], D, &dw_ih[0, 0], D)
        add_weight_grad(&after, H, H, &dpre[0, 0, 0], H, &hs[reverse, 0, 0], H, &dw_hh[0, 0], H)
        # db = dpre.sum(0)       (H,)
        add_bias_grad(&after, H, H, &dpre[0, 0, 0], &db[0])
        with nogil:
            run_backward(threads, parts, step_parts, 1, relu, &after, reverse, &hs[0, 0, 0], NULL,
                         &dpre[0, 0, 0], NULL, optional_ptr(dy), &dh[0, 0], NULL,
                         &dh_scratch[0, 0], NULL)
    finally:
        free_after_loop(&after)


# ---------------------------------------------------------------- LSTM

cdef void lstm_forward_rows(Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t s0, Py_ssize_t steps,
                            Py_ssize_t first, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
                            bint reverse, bint training, floating *hs, floating *cs,
                            floating *gates, const floating *packed_w_hh_t,
                            const floating *bias, const int64_t *lengths,
                            int threads) noexcept nogil:
    """Steps s0 .. s0+steps-1 for batch rows b0 .. b0+nb-1, each step's product on
    ``threads`` threads (multiply_packed)."""
    cdef Py_ssize_t s, t, prev = reverse, out = 1 - reverse
    cdef floating *gates_t
    cdef floating *h_prev
    cdef floating *c_prev
    cdef floating *c_out
    cdef unsigned int fpmode = rnnfast_fpmode_enter()
    for s in range(s0, s0 + steps):
        t = T - 1 - s if reverse else s
        gates_t = gates + ((t - first) * B + b0) * 4 * H
        h_prev = hs + ((t + prev) * B + b0) * H
        if training:
            c_prev, c_out = cs + ((t + prev) * B + b0) * H, cs + ((t + out) * B + b0) * H
        else:
            c_prev, c_out = cs + ((s % 2) * B + b0) * H, cs + (((s + 1) % 2) * B + b0) * H
        # gates_t += h_{t-1} @ W_hh.T         (nb, 4H)
        multiply_packed(threads, True, nb, 4 * H, H, h_prev, H, packed_w_hh_t, gates_t, 4 * H)
        lstm_step_forward(nb, H, gates_t, bias, h_prev, hs + ((t + out) * B + b0) * H,
                          c_prev, c_out, NULL if lengths == NULL else lengths + b0, t)
    rnnfast_fpmode_exit(fpmode)


def lstm_forward(const floating[:, :, ::1] x,    # (T, B, D)
                 const floating[:, ::1] w_ih,    # (4H, D)
                 const floating[:, ::1] w_hh,    # (4H, H)
                 const floating[::1] bias,       # (4H,) b_ih + b_hh
                 const int64_t[::1] lengths,     # (B,) or None
                 bint one_hot_inputs,            # look for one-hot rows in x (training)
                 bint reverse, bint training,
                 floating[:, :, ::1] hs,         # (T+1, B, H) in: h0 in its slot; out: states
                 floating[:, :, ::1] cs,         # training (T+1, B, H), else (2, B, H); in: c0
                 floating[:, :, ::1] y,          # (T, B, H) out: states at their times, or None
                 floating[:, :, ::1] gates,      # (K, B, 4H) workspace; K == T keeps the gates
                 int parts,                      # batch blocks run in parallel
                 int gemm_parts,                 # threads of the GEMMs over all steps
                 int step_parts):                # threads sharing each step of one block
    """c_t = f c_{t-1} + i g, h_t = o tanh(c_t) over all steps, into ``hs`` and ``cs``."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_hh.shape[1]
    cdef int packers = pack_threads(gemm_parts, step_parts)
    cdef floating *packed = NULL
    cdef floating *packed_ih = NULL
    cdef floating *xh = NULL
    cdef bint kept = False
    cdef bint projected
    try:
        if joins_steps(4, training, B, D, H, parts, sizeof(floating)):
            packed = joined_weights(4 * H, D, H, &w_ih[0, 0], &w_hh[0, 0], &kept)
            xh = <floating *>joined_inputs(B, D, H, sizeof(floating))
            with nogil:
                forward_joined(T, B, D, H, &x[0, 0, 0], packed, &bias[0], lengths_ptr(lengths),
                               reverse, &hs[0, 0, 0], &cs[0, 0, 0], &gates[0, 0, 0], xh, parts)
                if y is not None:
                    copy_outputs(T, B, H, 0, B, reverse, &hs[0, 0, 0], &y[0, 0, 0])
            return
        projected = projects_one_hot(T, B, D, 4 * H, one_hot_inputs, &x[0, 0, 0], &w_ih[0, 0],
                                     gates, gemm_parts)
        packed = step_weights(4 * H, D, H, &w_ih[0, 0], &w_hh[0, 0],
                              not projected and packs_projection(4 * H, D, gates.shape[0] < T,
                                                                 sizeof(floating)),
                              not training and packers == 1, packers, &packed_ih, &kept)
        with nogil:
            forward_chunks(4, False, training, T, B, D, H, gates.shape[0], projected,
                           &x[0, 0, 0], &w_ih[0, 0], packed_ih, packed, &bias[0], NULL,
                           lengths_ptr(lengths), reverse, &hs[0, 0, 0], &cs[0, 0, 0],
                           optional_out_ptr(y), &gates[0, 0, 0], NULL, NULL, parts,
                           gemm_parts, step_parts)
    finally:
        release_weights(packed, packed_ih, kept)
        pool_free(xh)


cdef void lstm_backward_rows(Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t T, Py_ssize_t B,
                             Py_ssize_t H, bint reverse, const floating *cs,
                             floating *gates, const floating *dy, floating *dh, floating *dc,
                             floating *dh_scratch, const floating *packed_w_hh,
                             const int64_t *lengths, int threads) noexcept nogil:
    """The reverse time loop for batch rows b0 .. b0+nb-1, each step's product on
    ``threads`` threads."""
    cdef Py_ssize_t s, t, prev = reverse, out = 1 - reverse
    cdef floating *gates_t
    cdef unsigned int fpmode = rnnfast_fpmode_enter()
    for s in range(T):
        t = s if reverse else T - 1 - s
        gates_t = gates + (t * B + b0) * 4 * H
        lstm_step_backward(nb, H, gates_t, cs + ((t + prev) * B + b0) * H,
                           cs + ((t + out) * B + b0) * H,
                           NULL if dy == NULL else dy + (t * B + b0) * H, dh + b0 * H,
                           dc + b0 * H, NULL if lengths == NULL else lengths + b0, t)
        # dh += dG_t @ W_hh                   (nb, H)
        add_recurrent_grad(nb, H, 4 * H, gates_t, packed_w_hh, dh + b0 * H,
                           dh_scratch + b0 * H, NULL if lengths == NULL else lengths + b0, t,
                           threads)
    rnnfast_fpmode_exit(fpmode)


def lstm_backward(const floating[:, :, ::1] x,   # (T, B, D)
                  const floating[:, ::1] w_ih,   # (4H, D)
                  const floating[:, ::1] w_hh,   # (4H, H)
                  const int64_t[::1] lengths,    # (B,) or None
                  bint one_hot_inputs,           # look for one-hot rows in x (training)
                  bint reverse,
                  floating[:, :, ::1] hs,        # (T+1, B, H) from forward; consumed
                  const floating[:, :, ::1] cs,  # (T+1, B, H) from forward
                  floating[:, :, ::1] gates,     # (T, B, 4H) in: i f g o; out: dG
                  const floating[:, :, ::1] dy,  # (T, B, H) or None
                  floating[:, ::1] dh,           # (B, H) in: dh_T; out: dh0
                  floating[:, ::1] dc,           # (B, H) in: dc_T; out: dc0
                  floating[:, ::1] dh_scratch,   # (B, H) workspace
                  floating[:, :, ::1] dx,        # (T, B, D) out, or None: not wanted
                  floating[:, ::1] dw_ih,        # (4H, D) out
                  floating[:, ::1] dw_hh,        # (4H, H) out
                  floating[::1] db,              # (4H,) out
                  int parts,                     # batch blocks run in parallel
                  int gemm_parts,                # threads of the GEMMs after the loop
                  int step_parts):               # threads sharing each step of one block
    """BPTT for ``lstm_forward``; the stored gates become dG in place."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_hh.shape[1]
    cdef int threads = max(parts, gemm_parts)
    cdef AfterLoop after
    start_after_loop(&after, T, B, D, H, 4 * H, &w_ih[0, 0], optional_out_ptr(dx),
                     &hs[reverse, 0, 0], lengths_ptr(lengths))
    try:
        after.packed_w_hh = pack_weights(w_hh.shape[0], H, &w_hh[0, 0], False,
                                          pack_threads(gemm_parts, step_parts))
        if one_hot_inputs:
            after.one_hot = one_hot_rows(T * B, D, &x[0, 0, 0])
        # dW_ih = dG.T @ x       (4H, D);   dW_hh = dG.T @ h_prev       (4H, H)
        add_weight_grad(&after, 4 * H, D, &gates[0, 0, 0], 4 * H, &x[0, 0, 0], D, &dw_ih[0, 0], D)
        add_weight_grad(&after, 4 * H, H, &gates[0, 0, 0], 4 * H, &hs[reverse, 0, 0], H,
                        &dw_hh[0, 0], H)
        # db = dG.sum(0)         (4H,)
        add_bias_grad(&after, 4 * H, 4 * H, &gates[0, 0, 0], &db[0])
        with nogil:
            run_backward(threads, parts, step_parts, 4, False, &after, reverse, NULL, &cs[0, 0, 0],
                         &gates[0, 0, 0], NULL, optional_ptr(dy), &dh[0, 0], &dc[0, 0],
                         &dh_scratch[0, 0], NULL)
    finally:
        free_after_loop(&after)


# ---------------------------------------------------------------- GRU

cdef void gru_forward_rows(Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t s0, Py_ssize_t steps,
                           Py_ssize_t first, Py_ssize_t T, Py_ssize_t B, Py_ssize_t H,
                           bint reverse, floating *hs, floating *gates, floating *hh,
                           floating *gh_n, const floating *packed_w_hh_t,
                           const floating *b_ih, const floating *b_hh,
                           const int64_t *lengths, int threads) noexcept nogil:
    """Steps s0 .. s0+steps-1 for batch rows b0 .. b0+nb-1, each step's product on
    ``threads`` threads (multiply_packed)."""
    cdef Py_ssize_t s, t, prev = reverse, out = 1 - reverse
    cdef floating *h_prev
    cdef floating *hh_rows = hh + b0 * 3 * H
    cdef unsigned int fpmode = rnnfast_fpmode_enter()
    for s in range(s0, s0 + steps):
        t = T - 1 - s if reverse else s
        h_prev = hs + ((t + prev) * B + b0) * H
        # hh = h_{t-1} @ W_hh.T               (nb, 3H)
        multiply_packed(threads, False, nb, 3 * H, H, h_prev, H, packed_w_hh_t, hh_rows, 3 * H)
        gru_step_forward(nb, H, gates + ((t - first) * B + b0) * 3 * H, hh_rows, b_ih, b_hh,
                         NULL if gh_n == NULL else gh_n + (t * B + b0) * H, h_prev,
                         hs + ((t + out) * B + b0) * H,
                         NULL if lengths == NULL else lengths + b0, t)
    rnnfast_fpmode_exit(fpmode)


def gru_forward(const floating[:, :, ::1] x,     # (T, B, D)
                const floating[:, ::1] w_ih,     # (3H, D)
                const floating[:, ::1] w_hh,     # (3H, H)
                const floating[::1] b_ih,        # (3H,)
                const floating[::1] b_hh,        # (3H,)
                const int64_t[::1] lengths,      # (B,) or None
                bint one_hot_inputs,             # look for one-hot rows in x (training)
                bint reverse, bint training,
                floating[:, :, ::1] hs,          # (T+1, B, H) in: h0 in its slot; out: states
                floating[:, :, ::1] y,           # (T, B, H) out: states at their times, or None
                floating[:, :, ::1] gates,       # (K, B, 3H) workspace; K == T keeps the gates
                floating[:, ::1] hh,             # (B, 3H) workspace: h_{t-1} W_hh^T
                floating[:, :, ::1] gh_n,        # (T, B, H) out: h_{t-1} W_hn^T + b_hn, or None
                int parts,                       # batch blocks run in parallel
                int gemm_parts,                  # threads of the GEMMs over all steps
                int step_parts):                 # threads sharing each step of one block
    """h_t = (1 - z) n + z h_{t-1} over all steps, into ``hs``."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_hh.shape[1]
    cdef int packers = pack_threads(gemm_parts, step_parts)
    cdef floating *packed = NULL
    cdef floating *packed_ih = NULL
    cdef bint projected, kept = False
    try:
        projected = projects_one_hot(T, B, D, 3 * H, one_hot_inputs, &x[0, 0, 0], &w_ih[0, 0],
                                     gates, gemm_parts)
        packed = step_weights(3 * H, D, H, &w_ih[0, 0], &w_hh[0, 0],
                              not projected and packs_projection(3 * H, D, gates.shape[0] < T,
                                                                 sizeof(floating)),
                              not training and packers == 1, packers, &packed_ih, &kept)
        with nogil:
            forward_chunks(3, False, False, T, B, D, H, gates.shape[0], projected, &x[0, 0, 0],
                           &w_ih[0, 0], packed_ih, packed, &b_ih[0], &b_hh[0],
                           lengths_ptr(lengths), reverse, &hs[0, 0, 0], NULL,
                           optional_out_ptr(y), &gates[0, 0, 0], &hh[0, 0],
                           <floating *>optional_ptr(gh_n), parts, gemm_parts, step_parts)
    finally:
        release_weights(packed, packed_ih, kept)


cdef void gru_backward_rows(Py_ssize_t b0, Py_ssize_t nb, Py_ssize_t T, Py_ssize_t B,
                            Py_ssize_t H, bint reverse, const floating *hs, floating *gates,
                            floating *gh_n, const floating *dy, floating *dh,
                            floating *dh_scratch, floating *dgh, const floating *packed_w_hh,
                            const int64_t *lengths, int threads) noexcept nogil:
    """The reverse time loop for batch rows b0 .. b0+nb-1, each step's product on
    ``threads`` threads."""
    cdef Py_ssize_t s, t, prev = reverse
    cdef floating *dgh_rows = dgh + b0 * 3 * H
    cdef unsigned int fpmode = rnnfast_fpmode_enter()
    for s in range(T):
        t = s if reverse else T - 1 - s
        gru_step_backward(nb, H, gates + (t * B + b0) * 3 * H, gh_n + (t * B + b0) * H,
                          dgh_rows, hs + ((t + prev) * B + b0) * H,
                          NULL if dy == NULL else dy + (t * B + b0) * H, dh + b0 * H,
                          NULL if lengths == NULL else lengths + b0, t)
        # dh += dgh @ W_hh                    (nb, H)
        add_recurrent_grad(nb, H, 3 * H, dgh_rows, packed_w_hh, dh + b0 * H,
                           dh_scratch + b0 * H, NULL if lengths == NULL else lengths + b0, t,
                           threads)
    rnnfast_fpmode_exit(fpmode)


def gru_backward(const floating[:, :, ::1] x,    # (T, B, D)
                 const floating[:, ::1] w_ih,    # (3H, D)
                 const floating[:, ::1] w_hh,    # (3H, H)
                 const int64_t[::1] lengths,     # (B,) or None
                 bint one_hot_inputs,            # look for one-hot rows in x (training)
                 bint reverse,
                 floating[:, :, ::1] hs,         # (T+1, B, H) from forward; consumed
                 floating[:, :, ::1] gates,      # (T, B, 3H) in: r z n; out: dgi
                 floating[:, :, ::1] gh_n,       # (T, B, H) in: gh_n; out: da_n * r
                 const floating[:, :, ::1] dy,   # (T, B, H) or None
                 floating[:, ::1] dh,            # (B, H) in: dh_T; out: dh0
                 floating[:, ::1] dh_scratch,    # (B, H) workspace
                 floating[:, ::1] dgh,           # (B, 3H) workspace: recurrent-side dG of a step
                 floating[:, :, ::1] dx,         # (T, B, D) out, or None: not wanted
                 floating[:, ::1] dw_ih,         # (3H, D) out
                 floating[:, ::1] dw_hh,         # (3H, H) out
                 floating[::1] db_ih,            # (3H,) out
                 floating[::1] db_hh,            # (3H,) out
                 int parts,                      # batch blocks run in parallel
                 int gemm_parts,                 # threads of the GEMMs after the loop
                 int step_parts):                # threads sharing each step of one block
    """BPTT for ``gru_forward``.

    The input side and the recurrent side differ only in the n gate (da_n versus
    da_n * r), so dgi is kept in ``gates`` and the recurrent n part in ``gh_n``.
    """
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_hh.shape[1]
    cdef int threads = max(parts, gemm_parts)
    cdef AfterLoop after
    cdef floating *h_prev = &hs[reverse, 0, 0]
    start_after_loop(&after, T, B, D, H, 3 * H, &w_ih[0, 0], optional_out_ptr(dx), h_prev,
                     lengths_ptr(lengths))
    try:
        after.packed_w_hh = pack_weights(w_hh.shape[0], H, &w_hh[0, 0], False,
                                          pack_threads(gemm_parts, step_parts))
        if one_hot_inputs:
            after.one_hot = one_hot_rows(T * B, D, &x[0, 0, 0])
        # dW_ih = dgi.T @ x                       (3H, D)
        # dW_hh[:2H] = dgi[:, :2H].T @ h_prev     (2H, H)
        # dW_hh[2H:] = (da_n * r).T @ h_prev      (H, H)
        add_weight_grad(&after, 3 * H, D, &gates[0, 0, 0], 3 * H, &x[0, 0, 0], D, &dw_ih[0, 0], D)
        add_weight_grad(&after, 2 * H, H, &gates[0, 0, 0], 3 * H, h_prev, H, &dw_hh[0, 0], H)
        add_weight_grad(&after, H, H, &gh_n[0, 0, 0], H, h_prev, H, &dw_hh[2 * H, 0], H)
        # db_ih = dgi.sum(0);  db_hh = [dgi[:, :2H].sum(0), (da_n * r).sum(0)]
        add_bias_grad(&after, 3 * H, 3 * H, &gates[0, 0, 0], &db_ih[0])
        add_bias_grad(&after, 2 * H, 3 * H, &gates[0, 0, 0], &db_hh[0])
        add_bias_grad(&after, H, H, &gh_n[0, 0, 0], &db_hh[2 * H])
        with nogil:
            run_backward(threads, parts, step_parts, 3, False, &after, reverse, &hs[0, 0, 0], NULL,
                         &gates[0, 0, 0], &gh_n[0, 0, 0], optional_ptr(dy), &dh[0, 0], NULL,
                         &dh_scratch[0, 0], &dgh[0, 0])
    finally:
        free_after_loop(&after)


# ---------------------------------------------------------------- whole inference calls

cdef inline bint usable_as_is(object array, int typenum, int ndim):
    """True for an ndarray (no subclass) of ``typenum`` with ``ndim`` dimensions,
    C-contiguous, aligned and in native byte order: what the kernels take unchanged."""
    if type(array) is not np.ndarray:
        return False
    cdef cnp.ndarray a = <cnp.ndarray>array
    return (cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_NDIM(a) == ndim
            and cnp.PyArray_ISCARRAY_RO(a) and cnp.PyArray_ISNOTSWAPPED(a))


cdef inline bint optional_fits(object array, int typenum, Py_ssize_t rows,
                               Py_ssize_t cols):
    """None, or an array usable as is of shape (rows, cols), (rows,) when cols < 0."""
    if array is None:
        return True
    if not usable_as_is(array, typenum, 1 if cols < 0 else 2):
        return False
    cdef cnp.npy_intp *shape = cnp.PyArray_DIMS(<cnp.ndarray>array)
    return shape[0] == rows and (cols < 0 or shape[1] == cols)


cdef inline void *data_or_null(object array):
    return NULL if array is None else cnp.PyArray_DATA(<cnp.ndarray>array)


cdef void copy_or_zero(floating *dst, const void *src, Py_ssize_t n) noexcept nogil:
    if src == NULL:
        memset(dst, 0, n * sizeof(floating))
    else:
        memcpy(dst, src, n * sizeof(floating))


cdef int run_inference(int gates_per_unit, bint relu, bint reverse, Py_ssize_t T,
                       Py_ssize_t B, Py_ssize_t D, Py_ssize_t H, Py_ssize_t K,
                       const floating *x, const void *h0, const void *c0,
                       const floating *w_ih, const floating *w_hh, const void *b_ih,
                       const void *b_hh, floating *hs, floating *cs,
                       floating *gates, int step_parts) except -1:
    """A ``training=False`` forward of one block on raw buffers, each step shared by
    ``step_parts`` threads (see forward_inference)."""
    cdef Py_ssize_t GH = gates_per_unit * H, j
    cdef floating *packed = NULL
    cdef floating *packed_ih = NULL
    # biases (2, GH), then for the GRU the workspace hh (B, GH)
    cdef floating *scratch = <floating *>pool_alloc(
        (2 + (B if gates_per_unit == 3 else 0)) * GH * sizeof(floating), False)
    if scratch == NULL:
        raise MemoryError("cannot allocate the bias and workspace buffers")
    cdef floating *xh = NULL
    cdef bint joined = joins_steps(gates_per_unit, False, B, D, H, 1, sizeof(floating))
    cdef bint kept = False
    try:
        if joined:
            packed = joined_weights(GH, D, H, w_ih, w_hh, &kept)
            xh = <floating *>joined_inputs(B, D, H, sizeof(floating))
        else:
            packed = step_weights(GH, D, H, w_ih, w_hh,
                                  packs_projection(GH, D, K < T, sizeof(floating)),
                                  step_parts == 1, step_parts, &packed_ih, &kept)
        with nogil:
            copy_or_zero(scratch, b_ih, GH)
            copy_or_zero(scratch + GH, b_hh, GH)
            copy_or_zero(hs + (T * B * H if reverse else 0), h0, B * H)
            if gates_per_unit != 3:
                for j in range(GH):   # the two biases act as one: b = b_ih + b_hh
                    scratch[j] += scratch[GH + j]
            if gates_per_unit == 4:
                copy_or_zero(cs, c0, B * H)
            if joined:
                forward_joined(T, B, D, H, x, packed, scratch, NULL, reverse, hs, cs, gates,
                               xh, 1)
            else:
                forward_chunks(gates_per_unit, relu, False, T, B, D, H, K, False, x, w_ih,
                               packed_ih, packed, scratch, scratch + GH, NULL, reverse, hs,
                               cs, NULL, gates, scratch + 2 * GH, NULL, 1, 1, step_parts)
    finally:
        release_weights(packed, packed_ih, kept)
        pool_free(xh)
        pool_free(scratch)
    return 0


def forward_inference(int gates_per_unit, bint relu, x, h0, c0, w_ih, w_hh, b_ih, b_hh,
                      bint reverse, Py_ssize_t chunk_steps, Py_ssize_t chunk_bytes,
                      batch_parts, step_parts):
    """A whole ``training=False`` forward call (RNN: G = 1, LSTM: 4, GRU: 3) without
    lengths, for arguments that need no conversion: every array an ndarray of the
    dtype of ``w_ih`` (float32 or float64), C-contiguous, of the right shape, with
    T, B >= 1, on a call that ``batch_parts(B, multiply_adds)`` keeps in one block,
    whose steps ``step_parts(T, B, G, H, 1, False)`` threads share.

    Returns ``(y, h_T, c_T)`` (c_T None unless LSTM), computed exactly as the general
    path computes it, or None for any other arguments: the caller then takes the
    general path, which converts, validates, raises its errors and runs threads.
    Built for small calls, where checking and allocating in Python would cost
    several times the arithmetic.
    """
    if type(w_ih) is not np.ndarray:
        return None
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>w_ih)
    if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
        return None
    if not (usable_as_is(x, typenum, 3) and usable_as_is(w_ih, typenum, 2)
            and usable_as_is(w_hh, typenum, 2)):
        return None
    cdef cnp.npy_intp *x_shape = cnp.PyArray_DIMS(<cnp.ndarray>x)
    cdef Py_ssize_t T = x_shape[0], B = x_shape[1], D = x_shape[2]
    cdef Py_ssize_t H = cnp.PyArray_DIMS(<cnp.ndarray>w_hh)[1]
    cdef Py_ssize_t GH = gates_per_unit * H
    if T < 1 or B < 1 or D < 1 or H < 1 or T * B > MAX_ROWS:
        return None
    if not (optional_fits(w_hh, typenum, GH, H) and optional_fits(w_ih, typenum, GH, D)
            and optional_fits(h0, typenum, B, H) and optional_fits(b_ih, typenum, GH, -1)
            and optional_fits(b_hh, typenum, GH, -1)):
        return None
    if not optional_fits(c0, typenum, B, H):
        return None
    # one row never splits (batch_parts gives 1 below 2 rows): skip the Python call
    if B > 1 and batch_parts(B, T * B * GH * (D + H)) != 1:
        return None
    cdef int threads = step_parts(T, B, gates_per_unit, H, 1, False)

    # steps per input projection: chunk_steps at most, and chunk_bytes of gates
    cdef Py_ssize_t step_bytes = B * GH * cnp.PyArray_ITEMSIZE(<cnp.ndarray>w_ih)
    cdef Py_ssize_t K = max(1, min(T, chunk_steps, chunk_bytes // step_bytes))
    cdef cnp.npy_intp hs_shape[3]
    hs_shape[:] = [T + 1, B, H]
    cdef cnp.ndarray hs = empty_array(3, hs_shape, typenum)
    cdef cnp.ndarray cs = None
    hs_shape[0] = 2
    if gates_per_unit == 4:   # c_{t-1} and c_t, used in turn
        cs = empty_array(3, hs_shape, typenum)
    hs_shape[:] = [K, B, GH]
    cdef cnp.ndarray gates = empty_array(3, hs_shape, typenum)
    if typenum == cnp.NPY_FLOAT:
        run_inference(gates_per_unit, relu, reverse, T, B, D, H, K,
                      <float *>cnp.PyArray_DATA(<cnp.ndarray>x), data_or_null(h0),
                      data_or_null(c0), <float *>cnp.PyArray_DATA(<cnp.ndarray>w_ih),
                      <float *>cnp.PyArray_DATA(<cnp.ndarray>w_hh), data_or_null(b_ih),
                      data_or_null(b_hh), <float *>cnp.PyArray_DATA(hs),
                      <float *>data_or_null(cs), <float *>cnp.PyArray_DATA(gates), threads)
    else:
        run_inference(gates_per_unit, relu, reverse, T, B, D, H, K,
                      <double *>cnp.PyArray_DATA(<cnp.ndarray>x), data_or_null(h0),
                      data_or_null(c0), <double *>cnp.PyArray_DATA(<cnp.ndarray>w_ih),
                      <double *>cnp.PyArray_DATA(<cnp.ndarray>w_hh), data_or_null(b_ih),
                      data_or_null(b_hh), <double *>cnp.PyArray_DATA(hs),
                      <double *>data_or_null(cs), <double *>cnp.PyArray_DATA(gates), threads)
    y = hs[:T] if reverse else hs[1:]
    h_T = hs[0 if reverse else T].copy()
    c_T = None if cs is None else cs[T % 2].copy()
    return y, h_T, c_T
