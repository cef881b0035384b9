"""Pure-NumPy reference: the executable specification of every rnnfast kernel.

Written to be read, not to be fast: one function per cell and direction of
computation, the equations in the docstrings, one NumPy line per equation.
The functions have exactly the signatures of the public functional API
(``rnnfast.rnn_forward`` and friends), so tests run both and compare.

Shape legend: T = time steps, B = batch, D = input features, H = hidden units.
Parameters follow PyTorch's layout and gate order (see DESIGN.md):
RNN ``W_ih (H, D)``; LSTM gates ``i, f, g, o`` stacked in ``(4H, .)``;
GRU gates ``r, z, n`` stacked in ``(3H, .)``.

Variable lengths: sequence b is active at time t when ``t < lengths[b]``.
An inactive step outputs 0 and carries the state unchanged, so the final state
is the state after the sequence's last valid step. With ``reverse=True`` the
time loop runs from T-1 down to 0, so each sequence starts at its own last
valid step, and outputs are written at their input positions.
"""

import numpy as np
from scipy.special import expit as sigmoid

from . import _checks
from ._types import Cache, GRUGrads, LSTMGrads, RNNGrads

__all__ = ["rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward",
           "gru_forward", "gru_backward"]

IMPL = "rnnfast.reference"


def _time_steps(T, reverse):
    """The order in which forward visits the time steps."""
    return range(T - 1, -1, -1) if reverse else range(T)


# ----------------------------------------------------------------------------- RNN

def rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, *, nonlinearity="tanh", lengths=None,
                reverse=False, training=True):
    """Elman RNN over a sequence.

        h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   act = tanh or relu
        y_t = h_t

    Parameters
    ----------
    x : ndarray of shape (T, B, D)
    h0 : ndarray of shape (B, H) or None for zeros
    w_ih : ndarray of shape (H, D);  w_hh : ndarray of shape (H, H)
    b_ih, b_hh : ndarray of shape (H,) or None for zeros
    nonlinearity : "tanh" or "relu"
    lengths : integer ndarray of shape (B,), or None for all T steps
    reverse : run from the last step to the first
    training : keep what backward needs in the returned cache

    Returns
    -------
    y : ndarray of shape (T, B, H);  h_T : ndarray of shape (B, H);
    cache : Cache, or None when ``training`` is False
    """
    a = _checks.forward_args("rnn", x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, nonlinearity)
    active = _checks.active_mask(a.lengths, a.T, a.B)[:, :, None]  # (T, B, 1)
    act = np.tanh if nonlinearity == "tanh" else (lambda v: np.maximum(v, 0))

    y = np.zeros((a.T, a.B, a.H), a.dtype)
    h_prev = np.zeros((a.T, a.B, a.H), a.dtype)  # state entering step t
    h_new = np.zeros((a.T, a.B, a.H), a.dtype)   # act(...) at step t
    h = a.h0
    for t in _time_steps(a.T, reverse):
        h_prev[t] = h
        h_new[t] = act(a.x[t] @ a.w_ih.T + a.b_ih + h @ a.w_hh.T + a.b_hh)
        h = np.where(active[t], h_new[t], h)
        y[t] = np.where(active[t], h_new[t], 0)
    cache = None
    if training:
        cache = Cache("rnn", IMPL, a.dtype, (a.T, a.B, a.D, a.H), args=a, active=active,
                      nonlinearity=nonlinearity, reverse=reverse, h_prev=h_prev, h_new=h_new)
    return y, h.copy(), cache


def rnn_backward(dy, dh_T, cache, *, input_grad=True):
    """Backpropagation through time for ``rnn_forward``.

        dpre_t = (dy_t + dh_t) * act'(pre_t),  tanh' = 1 - h_t^2,  relu' = [h_t > 0]
        dx_t = dpre_t W_ih,   dh_{t-1} = dpre_t W_hh
        dW_ih = sum_t dpre_t^T x_t,   dW_hh = sum_t dpre_t^T h_{t-1},   db = sum_t dpre_t

    ``dy`` (T, B, H) and ``dh_T`` (B, H) may be None for zeros. Gradients at
    inactive steps (``t >= lengths[b]``) of ``dy`` are ignored: those outputs are
    constant zeros. ``input_grad=False``: ``dx`` is None (dL/dx not wanted).
    """
    cache = _checks.backward_cache(cache, "rnn", IMPL)
    input_grad = _checks.flag("input_grad", input_grad)
    a, active = cache.data["args"], cache.data["active"]
    x = np.where(active, a.x, 0)  # inactive steps never read x
    dy, dh = _incoming_grads(cache, dy, dh_T)
    h_prev, h_new = cache.data["h_prev"], cache.data["h_new"]

    dx = np.zeros_like(a.x)
    dw_ih, dw_hh = np.zeros_like(a.w_ih), np.zeros_like(a.w_hh)
    db = np.zeros_like(a.b_ih)
    for t in reversed(_time_steps(a.T, cache.data["reverse"])):
        dh_t = dh + np.where(active[t], dy[t], 0)
        if cache.data["nonlinearity"] == "tanh":
            dpre = dh_t * (1 - h_new[t] ** 2)
        else:
            dpre = dh_t * (h_new[t] > 0)
        dpre = np.where(active[t], dpre, 0)
        dx[t] = dpre @ a.w_ih
        dw_ih += dpre.T @ x[t]
        dw_hh += dpre.T @ np.where(active[t], h_prev[t], 0)
        db += dpre.sum(axis=0)
        dh = np.where(active[t], dpre @ a.w_hh, dh)
    cache.consumed = True
    return RNNGrads(dx if input_grad else None, dh, dw_ih, dw_hh, db, db.copy())


# ----------------------------------------------------------------------------- LSTM

def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, *, lengths=None, reverse=False,
                 training=True):
    """LSTM over a sequence, gates ``i, f, g, o`` in PyTorch's order.

        [a_i, a_f, a_g, a_o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
        i = sigmoid(a_i),  f = sigmoid(a_f),  g = tanh(a_g),  o = sigmoid(a_o)
        c_t = f * c_{t-1} + i * g
        h_t = o * tanh(c_t)

    Shapes as in ``rnn_forward`` with ``W_ih (4H, D)``, ``W_hh (4H, H)``, biases
    ``(4H,)`` and the cell state ``c0`` (B, H) or None for zeros.

    Returns ``y (T, B, H)``, ``h_T (B, H)``, ``c_T (B, H)`` and the cache (or None).
    """
    a = _checks.forward_args("lstm", x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths)
    active = _checks.active_mask(a.lengths, a.T, a.B)[:, :, None]
    H = a.H

    y = np.zeros((a.T, a.B, H), a.dtype)
    h_prev = np.zeros((a.T, a.B, H), a.dtype)
    c_prev = np.zeros((a.T, a.B, H), a.dtype)
    gates = np.zeros((a.T, a.B, 4 * H), a.dtype)  # activated i, f, g, o
    c_new = np.zeros((a.T, a.B, H), a.dtype)
    h, c = a.h0, a.c0
    for t in _time_steps(a.T, reverse):
        h_prev[t], c_prev[t] = h, c
        pre = a.x[t] @ a.w_ih.T + a.b_ih + h @ a.w_hh.T + a.b_hh
        i = sigmoid(pre[:, 0 * H:1 * H])
        f = sigmoid(pre[:, 1 * H:2 * H])
        g = np.tanh(pre[:, 2 * H:3 * H])
        o = sigmoid(pre[:, 3 * H:4 * H])
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        c_new[t] = f * c + i * g
        h_t = o * np.tanh(c_new[t])
        h = np.where(active[t], h_t, h)
        c = np.where(active[t], c_new[t], c)
        y[t] = np.where(active[t], h_t, 0)
    cache = None
    if training:
        cache = Cache("lstm", IMPL, a.dtype, (a.T, a.B, a.D, a.H), args=a, active=active,
                      reverse=reverse, h_prev=h_prev, c_prev=c_prev, gates=gates, c_new=c_new)
    return y, h.copy(), c.copy(), cache


def lstm_backward(dy, dh_T, dc_T, cache, *, input_grad=True):
    """Backpropagation through time for ``lstm_forward``.

        dh = dy_t + dh_t (from the future);   tc = tanh(c_t)
        do = dh * tc
        dc = dc_t + dh * o * (1 - tc^2)
        di = dc * g,   df = dc * c_{t-1},   dg = dc * i,   dc_{t-1} = dc * f
        da = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]     (gradient of the pre-activations)
        dx_t = da W_ih,   dh_{t-1} = da W_hh
        dW_ih = sum_t da^T x_t,   dW_hh = sum_t da^T h_{t-1},   db = sum_t da

    ``dy``, ``dh_T`` and ``dc_T`` may be None for zeros; ``input_grad`` as in
    ``rnn_backward``.
    """
    cache = _checks.backward_cache(cache, "lstm", IMPL)
    input_grad = _checks.flag("input_grad", input_grad)
    a, active = cache.data["args"], cache.data["active"]
    x = np.where(active, a.x, 0)  # inactive steps never read x
    dy, dh = _incoming_grads(cache, dy, dh_T)
    dc = _checks.grad_array("dc_T", dc_T, "(B, H)", (a.B, a.H), a.dtype)
    dc = np.zeros((a.B, a.H), a.dtype) if dc is None else dc.copy()
    H = a.H

    dx = np.zeros_like(a.x)
    dw_ih, dw_hh = np.zeros_like(a.w_ih), np.zeros_like(a.w_hh)
    db = np.zeros_like(a.b_ih)
    for t in reversed(_time_steps(a.T, cache.data["reverse"])):
        gates = cache.data["gates"][t]
        i, f, g, o = (gates[:, k * H:(k + 1) * H] for k in range(4))
        tc = np.tanh(cache.data["c_new"][t])
        dh_t = dh + np.where(active[t], dy[t], 0)
        do = dh_t * tc
        dc_t = dc + dh_t * o * (1 - tc ** 2)
        di, df, dg = dc_t * g, dc_t * cache.data["c_prev"][t], dc_t * i
        da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2),
                             do * o * (1 - o)], axis=1)
        da = np.where(active[t], da, 0)
        dx[t] = da @ a.w_ih
        dw_ih += da.T @ x[t]
        dw_hh += da.T @ np.where(active[t], cache.data["h_prev"][t], 0)
        db += da.sum(axis=0)
        dh = np.where(active[t], da @ a.w_hh, dh)
        dc = np.where(active[t], dc_t * f, dc)
    cache.consumed = True
    return LSTMGrads(dx if input_grad else None, dh, dc, dw_ih, dw_hh, db, db.copy())


# ----------------------------------------------------------------------------- GRU

def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, *, lengths=None, reverse=False,
                training=True):
    """GRU over a sequence, gates ``r, z, n`` in PyTorch's order.

        [gi_r, gi_z, gi_n] = x_t W_ih^T + b_ih
        [gh_r, gh_z, gh_n] = h_{t-1} W_hh^T + b_hh
        r = sigmoid(gi_r + gh_r),  z = sigmoid(gi_z + gh_z)
        n = tanh(gi_n + r * gh_n)
        h_t = (1 - z) * n + z * h_{t-1}

    Shapes as in ``rnn_forward`` with ``W_ih (3H, D)``, ``W_hh (3H, H)``, biases ``(3H,)``.
    """
    a = _checks.forward_args("gru", x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths)
    active = _checks.active_mask(a.lengths, a.T, a.B)[:, :, None]
    H = a.H

    y = np.zeros((a.T, a.B, H), a.dtype)
    h_prev = np.zeros((a.T, a.B, H), a.dtype)
    gates = np.zeros((a.T, a.B, 3 * H), a.dtype)  # activated r, z, n
    gh_n = np.zeros((a.T, a.B, H), a.dtype)       # h_{t-1} W_hn^T + b_hn
    h = a.h0
    for t in _time_steps(a.T, reverse):
        h_prev[t] = h
        gi = a.x[t] @ a.w_ih.T + a.b_ih
        gh = h @ a.w_hh.T + a.b_hh
        r = sigmoid(gi[:, 0:H] + gh[:, 0:H])
        z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        gates[t] = np.concatenate([r, z, n], axis=1)
        gh_n[t] = gh[:, 2 * H:]
        h_t = (1 - z) * n + z * h
        h = np.where(active[t], h_t, h)
        y[t] = np.where(active[t], h_t, 0)
    cache = None
    if training:
        cache = Cache("gru", IMPL, a.dtype, (a.T, a.B, a.D, a.H), args=a, active=active,
                      reverse=reverse, h_prev=h_prev, gates=gates, gh_n=gh_n)
    return y, h.copy(), cache


def gru_backward(dy, dh_T, cache, *, input_grad=True):
    """Backpropagation through time for ``gru_forward``.

        dh = dy_t + dh_t (from the future)
        dn = dh * (1 - z),   dz = dh * (h_{t-1} - n)
        da_n = dn * (1 - n^2)                 (input side of n; the recurrent side is da_n * r)
        dr = da_n * gh_n
        da_r = dr * r (1 - r),   da_z = dz * z (1 - z)
        dgi = [da_r, da_z, da_n],   dgh = [da_r, da_z, da_n * r]
        dx_t = dgi W_ih,   dh_{t-1} = dh * z + dgh W_hh
        dW_ih = sum_t dgi^T x_t,   dW_hh = sum_t dgh^T h_{t-1}
        db_ih = sum_t dgi,   db_hh = sum_t dgh

    ``input_grad`` as in ``rnn_backward``.
    """
    cache = _checks.backward_cache(cache, "gru", IMPL)
    input_grad = _checks.flag("input_grad", input_grad)
    a, active = cache.data["args"], cache.data["active"]
    x = np.where(active, a.x, 0)  # inactive steps never read x
    dy, dh = _incoming_grads(cache, dy, dh_T)
    H = a.H

    dx = np.zeros_like(a.x)
    dw_ih, dw_hh = np.zeros_like(a.w_ih), np.zeros_like(a.w_hh)
    db_ih, db_hh = np.zeros_like(a.b_ih), np.zeros_like(a.b_hh)
    for t in reversed(_time_steps(a.T, cache.data["reverse"])):
        gates, h_prev = cache.data["gates"][t], cache.data["h_prev"][t]
        r, z, n = gates[:, 0:H], gates[:, H:2 * H], gates[:, 2 * H:]
        dh_t = dh + np.where(active[t], dy[t], 0)
        dn = dh_t * (1 - z)
        dz = dh_t * (h_prev - n)
        da_n = dn * (1 - n ** 2)
        dr = da_n * cache.data["gh_n"][t]
        da_r, da_z = dr * r * (1 - r), dz * z * (1 - z)
        dgi = np.where(active[t], np.concatenate([da_r, da_z, da_n], axis=1), 0)
        dgh = np.where(active[t], np.concatenate([da_r, da_z, da_n * r], axis=1), 0)
        dx[t] = dgi @ a.w_ih
        dw_ih += dgi.T @ x[t]
        dw_hh += dgh.T @ np.where(active[t], h_prev, 0)
        db_ih += dgi.sum(axis=0)
        db_hh += dgh.sum(axis=0)
        dh = np.where(active[t], dh_t * z + dgh @ a.w_hh, dh)
    cache.consumed = True
    return GRUGrads(dx if input_grad else None, dh, dw_ih, dw_hh, db_ih, db_hh)


# ----------------------------------------------------------------------------- shared

def _incoming_grads(cache, dy, dh_T):
    """``dy`` (T, B, H) and a fresh copy of ``dh_T`` (B, H), zeros where None."""
    T, B, _, H = cache.shape
    dy = _checks.grad_array("dy", dy, "(T, B, H)", (T, B, H), cache.dtype)
    dh = _checks.grad_array("dh_T", dh_T, "(B, H)", (B, H), cache.dtype)
    dy = np.zeros((T, B, H), cache.dtype) if dy is None else dy
    dh = np.zeros((B, H), cache.dtype) if dh is None else dh.copy()
    return dy, dh
