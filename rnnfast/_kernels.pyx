"""The time loops: forward and backpropagation through time (BPTT) for RNN, LSTM and
GRU, one fused-type source for float and double.

Shape legend: T = steps, B = batch, D = input features, H = hidden units,
G = stacked gates (RNN 1, LSTM 4, GRU 3).

These functions trust their caller (``rnnfast.functional``), which validates every
argument and allocates every buffer; they release the GIL for the whole loop and
keep no state between calls.

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
"""

from cython cimport floating
from libc.stdint cimport int64_t

from ._blas cimport gemm, NoTrans, Trans
from ._gates cimport *


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


cdef inline void column_sums(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                             const floating *a, floating *out) noexcept nogil:
    if floating is float:
        column_sums_f32(rows, cols, ld, a, out)
    else:
        column_sums_f64(rows, cols, ld, a, out)


# ---------------------------------------------------------------- shared pieces

cdef inline const int64_t *lengths_ptr(const int64_t[::1] lengths) noexcept nogil:
    return NULL if lengths is None else &lengths[0]


cdef inline const floating *dy_ptr(const floating[:, :, ::1] dy, Py_ssize_t t) noexcept nogil:
    return NULL if dy is None else &dy[t, 0, 0]


cdef inline Py_ssize_t chunk_start(Py_ssize_t step, Py_ssize_t steps, Py_ssize_t T,
                                   bint reverse) noexcept nogil:
    """The first time index of the chunk of ``steps`` steps that begins at ``step``."""
    return T - step - steps if reverse else step


cdef void project_inputs(const floating *x, const floating *w_ih, Py_ssize_t first,
                         Py_ssize_t steps, Py_ssize_t B, Py_ssize_t D, Py_ssize_t GH,
                         floating *gates) noexcept nogil:
    """gates[0:steps] (steps*B, GH) = x[first:first+steps] (steps*B, D) @ W_ih^T."""
    gemm(NoTrans, Trans, steps * B, GH, D, 1, x + first * B * D, D, w_ih, D, 0, gates, GH)


cdef void input_and_weight_grads(const floating *dG, Py_ssize_t rows, Py_ssize_t GH,
                                 const floating *x, Py_ssize_t D,
                                 const floating *h_prev, Py_ssize_t H,
                                 const floating *w_ih, floating *dx, floating *dw_ih,
                                 floating *dw_hh, floating *db) noexcept nogil:
    """The GEMMs after the reverse loop, over all rows = T*B at once.

    dG (rows, GH), x (rows, D), h_prev (rows, H): the states entering each step.
    """
    # dx = dG @ W_ih                      (rows, D)
    gemm(NoTrans, NoTrans, rows, D, GH, 1, dG, GH, w_ih, D, 0, dx, D)
    # dW_ih = dG.T @ x                    (GH, D)
    gemm(Trans, NoTrans, GH, D, rows, 1, dG, GH, x, D, 0, dw_ih, D)
    # dW_hh = dG.T @ h_prev               (GH, H)
    gemm(Trans, NoTrans, GH, H, rows, 1, dG, GH, h_prev, H, 0, dw_hh, H)
    # db = dG.sum(axis=0)                 (GH,)
    column_sums(rows, GH, GH, dG, db)


# ---------------------------------------------------------------- RNN

def rnn_forward(const floating[:, :, ::1] x,     # (T, B, D)
                const floating[:, ::1] w_ih,     # (H, D)
                const floating[:, ::1] w_hh,     # (H, H)
                const floating[::1] bias,        # (H,) b_ih + b_hh
                const int64_t[::1] lengths,      # (B,) or None
                bint reverse, bint relu,
                floating[:, :, ::1] hs,          # (T+1, B, H) in: h0 in its slot; out: states
                floating[:, :, ::1] gates):      # (K, B, H) workspace
    """h_t = act(x_t W_ih^T + h_{t-1} W_hh^T + bias) over all steps, into ``hs``."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_hh.shape[1]
    cdef Py_ssize_t K = gates.shape[0], prev = reverse, out = 1 - reverse
    cdef Py_ssize_t s, t, first = 0, steps
    cdef floating *gates_t
    cdef unsigned int fpmode
    with nogil:
        fpmode = rnnfast_fpmode_enter()
        for s in range(T):
            t = T - 1 - s if reverse else s
            if s % K == 0:
                steps = min(K, T - s)
                first = chunk_start(s, steps, T, reverse)
                project_inputs(&x[0, 0, 0], &w_ih[0, 0], first, steps, B, D, H, &gates[0, 0, 0])
            gates_t = &gates[t - first, 0, 0]
            # gates_t += h_{t-1} @ W_hh.T         (B, H)
            gemm(NoTrans, Trans, B, H, H, 1, &hs[t + prev, 0, 0], H, &w_hh[0, 0], H,
                 1, gates_t, H)
            rnn_step_forward(B, H, relu, gates_t, &bias[0], &hs[t + prev, 0, 0],
                             &hs[t + out, 0, 0], lengths_ptr(lengths), t)
        rnnfast_fpmode_exit(fpmode)


def rnn_backward(const floating[:, :, ::1] x,    # (T, B, D)
                 const floating[:, ::1] w_ih,    # (H, D)
                 const floating[:, ::1] w_hh,    # (H, H)
                 const int64_t[::1] lengths,     # (B,) or None
                 bint reverse, bint relu,
                 const floating[:, :, ::1] hs,   # (T+1, B, H) from forward
                 const floating[:, :, ::1] dy,   # (T, B, H) or None
                 floating[:, ::1] dh,            # (B, H) in: dh_T; out: dh0
                 floating[:, :, ::1] dpre,       # (T, B, H) out: gradient of the pre-activations
                 floating[:, :, ::1] dx,         # (T, B, D) out
                 floating[:, ::1] dw_ih,         # (H, D) out
                 floating[:, ::1] dw_hh,         # (H, H) out
                 floating[::1] db):              # (H,) out
    """BPTT for ``rnn_forward``: dpre_t = (dy_t + dh_t) act'(h_t), dh_{t-1} = dpre_t W_hh."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_hh.shape[1]
    cdef Py_ssize_t prev = reverse, out = 1 - reverse
    cdef Py_ssize_t s, t
    cdef unsigned int fpmode
    with nogil:
        fpmode = rnnfast_fpmode_enter()
        for s in range(T):
            t = s if reverse else T - 1 - s
            rnn_step_backward(B, H, relu, &hs[t + out, 0, 0], dy_ptr(dy, t), &dh[0, 0],
                              &dpre[t, 0, 0], lengths_ptr(lengths), t)
            # dh += dpre_t @ W_hh                 (B, H)
            gemm(NoTrans, NoTrans, B, H, H, 1, &dpre[t, 0, 0], H, &w_hh[0, 0], H,
                 1, &dh[0, 0], H)
        input_and_weight_grads(&dpre[0, 0, 0], T * B, H, &x[0, 0, 0], D, &hs[prev, 0, 0], H,
                               &w_ih[0, 0], &dx[0, 0, 0], &dw_ih[0, 0], &dw_hh[0, 0], &db[0])
        rnnfast_fpmode_exit(fpmode)


# ---------------------------------------------------------------- LSTM

def lstm_forward(const floating[:, :, ::1] x,    # (T, B, D)
                 const floating[:, ::1] w_ih,    # (4H, D)
                 const floating[:, ::1] w_hh,    # (4H, H)
                 const floating[::1] bias,       # (4H,) b_ih + b_hh
                 const int64_t[::1] lengths,     # (B,) or None
                 bint reverse, bint training,
                 floating[:, :, ::1] hs,         # (T+1, B, H) in: h0 in its slot; out: states
                 floating[:, :, ::1] cs,         # training (T+1, B, H), else (2, B, H); in: c0
                 floating[:, :, ::1] gates):     # (K, B, 4H) workspace; K == T keeps the gates
    """c_t = f c_{t-1} + i g, h_t = o tanh(c_t) over all steps, into ``hs`` and ``cs``."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_hh.shape[1]
    cdef Py_ssize_t K = gates.shape[0], prev = reverse, out = 1 - reverse
    cdef Py_ssize_t s, t, first = 0, steps
    cdef floating *gates_t
    cdef floating *c_prev
    cdef floating *c_out
    cdef unsigned int fpmode
    with nogil:
        fpmode = rnnfast_fpmode_enter()
        for s in range(T):
            t = T - 1 - s if reverse else s
            if s % K == 0:
                steps = min(K, T - s)
                first = chunk_start(s, steps, T, reverse)
                project_inputs(&x[0, 0, 0], &w_ih[0, 0], first, steps, B, D, 4 * H,
                               &gates[0, 0, 0])
            gates_t = &gates[t - first, 0, 0]
            if training:
                c_prev, c_out = &cs[t + prev, 0, 0], &cs[t + out, 0, 0]
            else:
                c_prev, c_out = &cs[s % 2, 0, 0], &cs[(s + 1) % 2, 0, 0]
            # gates_t += h_{t-1} @ W_hh.T         (B, 4H)
            gemm(NoTrans, Trans, B, 4 * H, H, 1, &hs[t + prev, 0, 0], H, &w_hh[0, 0], H,
                 1, gates_t, 4 * H)
            lstm_step_forward(B, H, gates_t, &bias[0], &hs[t + prev, 0, 0],
                              &hs[t + out, 0, 0], c_prev, c_out, lengths_ptr(lengths), t)
        rnnfast_fpmode_exit(fpmode)


def lstm_backward(const floating[:, :, ::1] x,   # (T, B, D)
                  const floating[:, ::1] w_ih,   # (4H, D)
                  const floating[:, ::1] w_hh,   # (4H, H)
                  const int64_t[::1] lengths,    # (B,) or None
                  bint reverse,
                  const floating[:, :, ::1] hs,  # (T+1, B, H) from forward
                  const floating[:, :, ::1] cs,  # (T+1, B, H) from forward
                  floating[:, :, ::1] gates,     # (T, B, 4H) in: i f g o; out: dG
                  const floating[:, :, ::1] dy,  # (T, B, H) or None
                  floating[:, ::1] dh,           # (B, H) in: dh_T; out: dh0
                  floating[:, ::1] dc,           # (B, H) in: dc_T; out: dc0
                  floating[:, :, ::1] dx,        # (T, B, D) out
                  floating[:, ::1] dw_ih,        # (4H, D) out
                  floating[:, ::1] dw_hh,        # (4H, H) out
                  floating[::1] db):             # (4H,) out
    """BPTT for ``lstm_forward``; the stored gates become dG in place."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_hh.shape[1]
    cdef Py_ssize_t prev = reverse, out = 1 - reverse
    cdef Py_ssize_t s, t
    cdef unsigned int fpmode
    with nogil:
        fpmode = rnnfast_fpmode_enter()
        for s in range(T):
            t = s if reverse else T - 1 - s
            lstm_step_backward(B, H, &gates[t, 0, 0], &cs[t + prev, 0, 0], &cs[t + out, 0, 0],
                               dy_ptr(dy, t), &dh[0, 0], &dc[0, 0], lengths_ptr(lengths), t)
            # dh += dG_t @ W_hh                   (B, H)
            gemm(NoTrans, NoTrans, B, H, 4 * H, 1, &gates[t, 0, 0], 4 * H, &w_hh[0, 0], H,
                 1, &dh[0, 0], H)
        input_and_weight_grads(&gates[0, 0, 0], T * B, 4 * H, &x[0, 0, 0], D,
                               &hs[prev, 0, 0], H, &w_ih[0, 0], &dx[0, 0, 0],
                               &dw_ih[0, 0], &dw_hh[0, 0], &db[0])
        rnnfast_fpmode_exit(fpmode)


# ---------------------------------------------------------------- GRU

def gru_forward(const floating[:, :, ::1] x,     # (T, B, D)
                const floating[:, ::1] w_ih,     # (3H, D)
                const floating[:, ::1] w_hh,     # (3H, H)
                const floating[::1] b_ih,        # (3H,)
                const floating[::1] b_hh,        # (3H,)
                const int64_t[::1] lengths,      # (B,) or None
                bint reverse,
                floating[:, :, ::1] hs,          # (T+1, B, H) in: h0 in its slot; out: states
                floating[:, :, ::1] gates,       # (K, B, 3H) workspace; K == T keeps the gates
                floating[:, ::1] hh,             # (B, 3H) workspace: h_{t-1} W_hh^T
                floating[:, :, ::1] gh_n):       # (T, B, H) out: h_{t-1} W_hn^T + b_hn, or None
    """h_t = (1 - z) n + z h_{t-1} over all steps, into ``hs``."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_hh.shape[1]
    cdef Py_ssize_t K = gates.shape[0], prev = reverse, out = 1 - reverse
    cdef Py_ssize_t s, t, first = 0, steps
    cdef floating *gates_t
    cdef floating *gh_n_t
    cdef unsigned int fpmode
    with nogil:
        fpmode = rnnfast_fpmode_enter()
        for s in range(T):
            t = T - 1 - s if reverse else s
            if s % K == 0:
                steps = min(K, T - s)
                first = chunk_start(s, steps, T, reverse)
                project_inputs(&x[0, 0, 0], &w_ih[0, 0], first, steps, B, D, 3 * H,
                               &gates[0, 0, 0])
            gates_t = &gates[t - first, 0, 0]
            gh_n_t = NULL if gh_n is None else &gh_n[t, 0, 0]
            # hh = h_{t-1} @ W_hh.T               (B, 3H)
            gemm(NoTrans, Trans, B, 3 * H, H, 1, &hs[t + prev, 0, 0], H, &w_hh[0, 0], H,
                 0, &hh[0, 0], 3 * H)
            gru_step_forward(B, H, gates_t, &hh[0, 0], &b_ih[0], &b_hh[0], gh_n_t,
                             &hs[t + prev, 0, 0], &hs[t + out, 0, 0], lengths_ptr(lengths), t)
        rnnfast_fpmode_exit(fpmode)


def gru_backward(const floating[:, :, ::1] x,    # (T, B, D)
                 const floating[:, ::1] w_ih,    # (3H, D)
                 const floating[:, ::1] w_hh,    # (3H, H)
                 const int64_t[::1] lengths,     # (B,) or None
                 bint reverse,
                 const floating[:, :, ::1] hs,   # (T+1, B, H) from forward
                 floating[:, :, ::1] gates,      # (T, B, 3H) in: r z n; out: dgi
                 floating[:, :, ::1] gh_n,       # (T, B, H) in: gh_n; out: da_n * r
                 const floating[:, :, ::1] dy,   # (T, B, H) or None
                 floating[:, ::1] dh,            # (B, H) in: dh_T; out: dh0
                 floating[:, ::1] dgh,           # (B, 3H) workspace: recurrent-side dG of a step
                 floating[:, :, ::1] dx,         # (T, B, D) out
                 floating[:, ::1] dw_ih,         # (3H, D) out
                 floating[:, ::1] dw_hh,         # (3H, H) out
                 floating[::1] db_ih,            # (3H,) out
                 floating[::1] db_hh):           # (3H,) out
    """BPTT for ``gru_forward``.

    The input side and the recurrent side differ only in the n gate (da_n versus
    da_n * r), so dgi is kept in ``gates`` and the recurrent n part in ``gh_n``.
    """
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = w_hh.shape[1]
    cdef Py_ssize_t prev = reverse, rows = T * B
    cdef Py_ssize_t s, t
    cdef const floating *h_prev_all
    cdef unsigned int fpmode
    with nogil:
        fpmode = rnnfast_fpmode_enter()
        for s in range(T):
            t = s if reverse else T - 1 - s
            gru_step_backward(B, H, &gates[t, 0, 0], &gh_n[t, 0, 0], &dgh[0, 0],
                              &hs[t + prev, 0, 0], dy_ptr(dy, t), &dh[0, 0],
                              lengths_ptr(lengths), t)
            # dh += dgh @ W_hh                    (B, H)
            gemm(NoTrans, NoTrans, B, H, 3 * H, 1, &dgh[0, 0], 3 * H, &w_hh[0, 0], H,
                 1, &dh[0, 0], H)
        h_prev_all = &hs[prev, 0, 0]
        # dx = dgi @ W_ih                         (T*B, D)
        gemm(NoTrans, NoTrans, rows, D, 3 * H, 1, &gates[0, 0, 0], 3 * H, &w_ih[0, 0], D,
             0, &dx[0, 0, 0], D)
        # dW_ih = dgi.T @ x                       (3H, D)
        gemm(Trans, NoTrans, 3 * H, D, rows, 1, &gates[0, 0, 0], 3 * H, &x[0, 0, 0], D,
             0, &dw_ih[0, 0], D)
        # dW_hh[:2H] = dgi[:, :2H].T @ h_prev     (2H, H)
        gemm(Trans, NoTrans, 2 * H, H, rows, 1, &gates[0, 0, 0], 3 * H, h_prev_all, H,
             0, &dw_hh[0, 0], H)
        # dW_hh[2H:] = (da_n * r).T @ h_prev      (H, H)
        gemm(Trans, NoTrans, H, H, rows, 1, &gh_n[0, 0, 0], H, h_prev_all, H,
             0, &dw_hh[2 * H, 0], H)
        # db_ih = dgi.sum(0);  db_hh = [dgi[:, :2H].sum(0), (da_n * r).sum(0)]
        column_sums(rows, 3 * H, 3 * H, &gates[0, 0, 0], &db_ih[0])
        column_sums(rows, 2 * H, 3 * H, &gates[0, 0, 0], &db_hh[0])
        column_sums(rows, H, H, &gh_n[0, 0, 0], &db_hh[2 * H])
        rnnfast_fpmode_exit(fpmode)
