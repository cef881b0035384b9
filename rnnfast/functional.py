"""The public functional API: validate, allocate, run the Cython kernels.

Same signatures and results as ``rnnfast.reference`` (the specification); see its
docstrings for the equations. Shape legend: T = steps, B = batch, D = input
features, H = hidden units, G = stacked gates (RNN 1, LSTM 4, GRU 3).

Memory: training keeps, per step, the hidden state and the activated gates
(LSTM: also the cell state; GRU: also ``h W_hn^T + b_hn``); backward overwrites
the gates with their gradients, so a cache serves one backward call. With
``training=False`` nothing is kept: the input projection runs in chunks of at most
``INFERENCE_CHUNK_STEPS`` steps and ``INFERENCE_CHUNK_BYTES``, so the memory beyond
the outputs is O(B*H) and a chunk's gates are still in cache when its steps read them.
Large buffers come from ``rnnfast._pool``, which keeps the ones a call frees for the
next call, so a loop of calls does not fault in fresh pages every time.

One-hot inputs: where every row of ``x`` is one-hot (a single 1, the rest 0) or zero,
as characters fed without an embedding, training looks the input projection up in
W_ih and sums dW_ih from the rows of dG, instead of the two GEMMs over D: the same
numbers up to the order of the sums (the GEMMs still run where W_ih or dG holds inf
or NaN, whose products with the zeros of x are NaN).

Fast path: a ``training=False`` call without lengths whose arrays are already
C-contiguous ndarrays of the parameters' dtype, small enough for one thread, goes
straight to one compiled entry (``_kernels.forward_inference``) that checks shapes
in C and returns the same numbers; it saves the several microseconds the checks and
buffers below cost in Python, which at B=1 are a large part of a call. Any other
call takes the general path, which converts, validates and raises the errors.
"""

import numpy as np

from . import _checks, _kernels, _pool
from ._threads import batch_parts, gemm_parts, single_threaded_blas, step_parts
from ._types import Cache, GRUGrads, LSTMGrads, RNNGrads

__all__ = ["rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward",
           "gru_forward", "gru_backward"]

IMPL = "rnnfast"
INFERENCE_CHUNK_STEPS = 32
INFERENCE_CHUNK_BYTES = 512 * 1024
# Training looks for one-hot rows in x (module docstring); False: always the GEMMs.
ONE_HOT_LOOKUP = True
_MAX_ROWS = 2**31 - 1  # BLAS takes int sizes: T*B rows at most


# ----------------------------------------------------------------------------- RNN

def rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, *, nonlinearity="tanh", lengths=None,
                reverse=False, training=True):
    """Elman RNN over a sequence: ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``.

    Parameters
    ----------
    x : ndarray of shape (T, B, D)
    h0 : ndarray of shape (B, H), or None for zeros
    w_ih : ndarray of shape (H, D), float32 or float64: chooses the dtype
    w_hh : ndarray of shape (H, H)
    b_ih, b_hh : ndarray of shape (H,), or None for zeros
    nonlinearity : "tanh" or "relu"
    lengths : integer ndarray of shape (B,), 0 <= lengths[b] <= T, or None for all T
        steps. Steps ``t >= lengths[b]`` output 0 and carry the state, as PyTorch's
        packed sequences do.
    reverse : run each sequence from its last valid step back to step 0 (the
        backward direction of a bidirectional layer); outputs stay at their input
        positions.
    training : keep what ``rnn_backward`` needs; with False the cache is None.

    Returns
    -------
    y : ndarray of shape (T, B, H)
    h_T : ndarray of shape (B, H), the state after each sequence's last valid step
    cache : Cache for ``rnn_backward``, or None
    """
    if nonlinearity in _checks.NONLINEARITIES:
        done = _compiled_inference(1, nonlinearity == "relu", x, h0, None, w_ih, w_hh, b_ih,
                                   b_hh, lengths, reverse, training)
        if done is not None:
            return done[0], done[1], None
    a = _checks.forward_args("rnn", x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, nonlinearity)
    hs = _state_buffer(a, a.h0, reverse)
    y = _output_buffer(a, training)
    if _has_steps(a):
        gates = _pool.empty((_chunk_steps(a, 1, False), a.B, a.H), a.dtype)
        parts, gemm_parts = _thread_parts(a, 1, training)
        team = _step_parts(a, 1, parts, training)
        with single_threaded_blas(max(gemm_parts, team)):
            _kernels.rnn_forward(a.x, a.w_ih, a.w_hh, a.b_ih + a.b_hh, a.lengths,
                                 training and ONE_HOT_LOOKUP, reverse, nonlinearity == "relu",
                                 training, hs, y, gates, parts, gemm_parts, team)
    h_T = _final(hs, a.T, reverse).copy()
    y = _outputs(hs, y, a, reverse)
    cache = None
    if training:
        cache = Cache("rnn", IMPL, a.dtype, (a.T, a.B, a.D, a.H), args=a, reverse=reverse,
                      relu=nonlinearity == "relu", hs=hs)
    return y, h_T, cache


def rnn_backward(dy, dh_T, cache, *, input_grad=True):
    """Backpropagation through time for ``rnn_forward``.

    Parameters
    ----------
    dy : ndarray of shape (T, B, H), or None for zeros: dL/dy. Entries at steps
        beyond a sequence's length are ignored (those outputs are constant zeros).
    dh_T : ndarray of shape (B, H), or None for zeros: dL/dh_T
    cache : the Cache returned by ``rnn_forward`` with ``training=True``; one use.
    input_grad : False skips dL/dx (``dx`` is None), as PyTorch does for an input
        that does not require grad, such as the data a model's first layer reads:
        it saves the product ``dG W_ih`` over all steps and the (T, B, D) buffer.

    Returns
    -------
    RNNGrads(dx, dh0, dw_ih, dw_hh, db_ih, db_hh), freshly allocated arrays.
    """
    cache = _checks.backward_cache(cache, "rnn", IMPL)
    input_grad = _checks.flag("input_grad", input_grad)
    a, data = cache.data["args"], cache.data
    x = _checks.zero_padding(a.x, a.lengths)
    dy, dh = _incoming_grads(cache, dy, dh_T)
    cache.consumed = True
    dx, dw_ih, dw_hh, db = _grad_buffers(a, input_grad)
    if a.T * a.B:
        dpre = _pool.empty((a.T, a.B, a.H), a.dtype)
        parts, gemm_parts = _thread_parts(a, 1, True)
        team = _step_parts(a, 1, parts, True)
        with single_threaded_blas(max(gemm_parts, team)):
            _kernels.rnn_backward(x, a.w_ih, a.w_hh, a.lengths, ONE_HOT_LOOKUP,
                                  data["reverse"], data["relu"], data["hs"], dy, dh,
                                  np.empty_like(dh), dpre, dx, dw_ih, dw_hh, db, parts,
                                  gemm_parts, team)
    return RNNGrads(dx, dh, dw_ih, dw_hh, db, db.copy())


# ----------------------------------------------------------------------------- LSTM

def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, *, lengths=None, reverse=False,
                 training=True):
    """LSTM over a sequence, gates ``i, f, g, o`` stacked in PyTorch's order.

    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``. Arguments as in
    ``rnn_forward``, with ``w_ih (4H, D)``, ``w_hh (4H, H)``, biases ``(4H,)`` and the
    initial cell state ``c0 (B, H)`` or None for zeros.

    Returns
    -------
    y : ndarray of shape (T, B, H)
    h_T, c_T : ndarrays of shape (B, H)
    cache : Cache for ``lstm_backward``, or None
    """
    done = _compiled_inference(4, False, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse,
                               training)
    if done is not None:
        return done + (None,)
    a = _checks.forward_args("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths)
    hs = _state_buffer(a, a.h0, reverse)
    y = _output_buffer(a, training)
    if training:
        cs = _state_buffer(a, a.c0, reverse)
    else:
        cs = np.empty((2, a.B, a.H), a.dtype)  # c_{t-1} and c_t, used in turn
        cs[0] = a.c0
    gates = _pool.empty((_chunk_steps(a, 4, training), a.B, 4 * a.H), a.dtype)
    if _has_steps(a):
        parts, gemm_parts = _thread_parts(a, 4, training)
        team = _step_parts(a, 4, parts, training)
        with single_threaded_blas(max(gemm_parts, team)):
            _kernels.lstm_forward(a.x, a.w_ih, a.w_hh, a.b_ih + a.b_hh, a.lengths,
                                  training and ONE_HOT_LOOKUP, reverse, training, hs, cs, y,
                                  gates, parts, gemm_parts, team)
    h_T = _final(hs, a.T, reverse).copy()
    c_T = (_final(cs, a.T, reverse) if training else cs[a.T % 2]).copy()
    y = _outputs(hs, y, a, reverse)
    cache = None
    if training:
        cache = Cache("lstm", IMPL, a.dtype, (a.T, a.B, a.D, a.H), args=a, reverse=reverse,
                      hs=hs, cs=cs, gates=gates)
    return y, h_T, c_T, cache


def lstm_backward(dy, dh_T, dc_T, cache, *, input_grad=True):
    """Backpropagation through time for ``lstm_forward``.

    ``dy (T, B, H)``, ``dh_T (B, H)`` and ``dc_T (B, H)`` may each be None for zeros;
    ``input_grad=False`` skips dx; see ``rnn_backward``.
    Returns LSTMGrads(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh).
    """
    cache = _checks.backward_cache(cache, "lstm", IMPL)
    input_grad = _checks.flag("input_grad", input_grad)
    a, data = cache.data["args"], cache.data
    x = _checks.zero_padding(a.x, a.lengths)
    dy, dh = _incoming_grads(cache, dy, dh_T)
    dc = _state_grad("dc_T", dc_T, cache)
    cache.consumed = True
    dx, dw_ih, dw_hh, db = _grad_buffers(a, input_grad)
    if a.T * a.B:
        parts, gemm_parts = _thread_parts(a, 4, True)
        team = _step_parts(a, 4, parts, True)
        with single_threaded_blas(max(gemm_parts, team)):
            _kernels.lstm_backward(x, a.w_ih, a.w_hh, a.lengths, ONE_HOT_LOOKUP,
                                   data["reverse"], data["hs"], data["cs"], data["gates"], dy,
                                   dh, dc, np.empty_like(dh), dx, dw_ih, dw_hh, db, parts,
                                   gemm_parts, team)
    return LSTMGrads(dx, dh, dc, dw_ih, dw_hh, db, db.copy())


# ----------------------------------------------------------------------------- GRU

def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, *, lengths=None, reverse=False,
                training=True):
    """GRU over a sequence, gates ``r, z, n`` stacked in PyTorch's order.

    ``n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))``, ``h_t = (1 - z) n + z h_{t-1}``.
    Arguments as in ``rnn_forward``, with ``w_ih (3H, D)``, ``w_hh (3H, H)`` and
    biases ``(3H,)``.

    Returns
    -------
    y : ndarray of shape (T, B, H)
    h_T : ndarray of shape (B, H)
    cache : Cache for ``gru_backward``, or None
    """
    done = _compiled_inference(3, False, x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, reverse,
                               training)
    if done is not None:
        return done[0], done[1], None
    a = _checks.forward_args("gru", x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths)
    hs = _state_buffer(a, a.h0, reverse)
    y = _output_buffer(a, training)
    gates = _pool.empty((_chunk_steps(a, 3, training), a.B, 3 * a.H), a.dtype)
    gh_n = _pool.empty((a.T, a.B, a.H), a.dtype) if training else None
    if _has_steps(a):
        hh = np.empty((a.B, 3 * a.H), a.dtype)
        parts, gemm_parts = _thread_parts(a, 3, training)
        team = _step_parts(a, 3, parts, training)
        with single_threaded_blas(max(gemm_parts, team)):
            _kernels.gru_forward(a.x, a.w_ih, a.w_hh, a.b_ih, a.b_hh, a.lengths,
                                 training and ONE_HOT_LOOKUP, reverse, training, hs, y, gates,
                                 hh, gh_n, parts, gemm_parts, team)
    h_T = _final(hs, a.T, reverse).copy()
    y = _outputs(hs, y, a, reverse)
    cache = None
    if training:
        cache = Cache("gru", IMPL, a.dtype, (a.T, a.B, a.D, a.H), args=a, reverse=reverse,
                      hs=hs, gates=gates, gh_n=gh_n)
    return y, h_T, cache


def gru_backward(dy, dh_T, cache, *, input_grad=True):
    """Backpropagation through time for ``gru_forward``; see ``rnn_backward``.

    Returns GRUGrads(dx, dh0, dw_ih, dw_hh, db_ih, db_hh).
    """
    cache = _checks.backward_cache(cache, "gru", IMPL)
    input_grad = _checks.flag("input_grad", input_grad)
    a, data = cache.data["args"], cache.data
    x = _checks.zero_padding(a.x, a.lengths)
    dy, dh = _incoming_grads(cache, dy, dh_T)
    cache.consumed = True
    dx, dw_ih, dw_hh, db_ih = _grad_buffers(a, input_grad)
    db_hh = np.empty_like(db_ih) if a.T * a.B else np.zeros_like(db_ih)
    if a.T * a.B:
        dgh = np.empty((a.B, 3 * a.H), a.dtype)
        parts, gemm_parts = _thread_parts(a, 3, True)
        team = _step_parts(a, 3, parts, True)
        with single_threaded_blas(max(gemm_parts, team)):
            _kernels.gru_backward(x, a.w_ih, a.w_hh, a.lengths, ONE_HOT_LOOKUP,
                                  data["reverse"], data["hs"], data["gates"], data["gh_n"], dy,
                                  dh, np.empty_like(dh), dgh, dx, dw_ih, dw_hh, db_ih, db_hh,
                                  parts, gemm_parts, team)
    return GRUGrads(dx, dh, dw_ih, dw_hh, db_ih, db_hh)


# ----------------------------------------------------------------------------- buffers

def _compiled_inference(gates, relu, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse,
                        training):
    """``(y, h_T, c_T)`` from the compiled entry for a small ``training=False`` call
    without lengths whose arrays need no conversion, else None (module docstring)."""
    if training or lengths is not None:
        return None
    return _kernels.forward_inference(gates, relu, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse,
                                      INFERENCE_CHUNK_STEPS, INFERENCE_CHUNK_BYTES, batch_parts,
                                      step_parts)


def _has_steps(a):
    """False for the empty cases T == 0 or B == 0, where no kernel runs."""
    if a.T * a.B > _MAX_ROWS:
        raise ValueError(f"x must have at most {_MAX_ROWS} rows T*B, got T*B = {a.T * a.B}")
    return a.T > 0 and a.B > 0


def _thread_parts(a, gates, training):
    """Threads for a call, by its multiply-adds T*B*G*H*(D+H): ``parts`` for the time
    loop, split by batch rows, and ``gemm_parts`` for the GEMMs over all T*B rows
    (training's input projection, dx and the weight gradients; in inference the
    projection runs in chunks on the loop's threads)."""
    multiply_adds = a.T * a.B * gates * a.H * (a.D + a.H)
    parts = batch_parts(a.B, multiply_adds)
    return parts, gemm_parts(a.T * a.B, multiply_adds, parts) if training else parts


def _step_parts(a, gates, parts, training):
    """Threads sharing each step where the batch runs as one block (step_parts)."""
    return step_parts(a.T, a.B, gates, a.H, parts, training)


def _chunk_steps(a, gates, training):
    """Steps per input-projection GEMM: all of them in training (the buffer keeps the
    gates), else chunks of at most INFERENCE_CHUNK_STEPS steps and
    INFERENCE_CHUNK_BYTES of gates, which bound the workspace and keep it in cache
    between the projection that writes it and the steps that read it."""
    if training:
        return max(1, a.T)
    step_bytes = a.B * gates * a.H * a.dtype.itemsize
    return max(1, min(a.T, INFERENCE_CHUNK_STEPS, INFERENCE_CHUNK_BYTES // max(1, step_bytes)))


def _state_buffer(a, initial, reverse):
    """(T+1, B, H) states in time order, the initial state in its slot (see _kernels)."""
    states = _pool.empty((a.T + 1, a.B, a.H), a.dtype)
    states[a.T if reverse else 0] = initial
    return states


def _final(states, T, reverse):
    """The state after the last step processed: time T-1 forward, time 0 reverse."""
    return states[0 if reverse else T]


def _output_buffer(a, training):
    """In training, where ``hs`` stays in the cache, the (T, B, H) array the kernels
    copy the states into, each batch block's by the thread that computed it; else None
    (y is then a view of ``hs``)."""
    return _pool.empty((a.T, a.B, a.H), a.dtype) if training and _has_steps(a) else None


def _outputs(hs, y, a, reverse):
    """y (T, B, H): the states at their time positions, 0 beyond each length: ``y`` as
    the kernels filled it (_output_buffer), or, where it is None, a view of ``hs``
    (inference, or an empty training call)."""
    if y is None:
        y = hs[0:a.T] if reverse else hs[1:a.T + 1]
    if a.lengths is not None:
        y[~_checks.active_mask(a.lengths, a.T, a.B)] = 0
    return y


def _state_grad(name, value, cache):
    """A fresh (B, H) buffer holding dL/d(final state), zeros for None; backward
    turns it into the gradient of the initial state in place."""
    T, B, _, H = cache.shape
    grad = _checks.grad_array(name, value, "(B, H)", (B, H), cache.dtype)
    return np.zeros((B, H), cache.dtype) if grad is None else grad.copy()


def _incoming_grads(cache, dy, dh_T):
    T, B, _, H = cache.shape
    dy = _checks.grad_array("dy", dy, "(T, B, H)", (T, B, H), cache.dtype)
    return dy, _state_grad("dh_T", dh_T, cache)


def _grad_buffers(a, input_grad):
    """dx (T, B, D) (None without ``input_grad``) and dw_ih, dw_hh, db for the kernels,
    which set every value of them; zeros where none runs (T*B = 0, checked here)."""
    dx = _pool.empty(a.x.shape, a.dtype) if input_grad else None
    if _has_steps(a):
        return (dx, _pool.empty(a.w_ih.shape, a.dtype), _pool.empty(a.w_hh.shape, a.dtype),
                np.empty(a.b_ih.shape, a.dtype))
    return (dx, _pool.zeros(a.w_ih.shape, a.dtype), _pool.zeros(a.w_hh.shape, a.dtype),
            np.zeros(a.b_ih.shape, a.dtype))
