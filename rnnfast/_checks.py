"""Argument validation and the dtype/contiguity policy, shared by the kernels' API and
the reference so that both accept and refuse exactly the same inputs.

Policy:
- the parameters choose the dtype: ``w_ih`` must be float32 or float64; every other
  floating-point argument (x, states, other weights, gradients) is cast to it;
- integer, bool, complex, object and string arrays raise ``TypeError`` naming the argument;
- every wrong shape raises ``ValueError`` naming the argument, the expected shape and
  the shape it got;
- arrays are made C-contiguous, copying only when they are not already.
"""

from typing import NamedTuple, Optional

import numpy as np

from . import _pool
from ._types import Cache

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CELL_NAMES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
NONLINEARITIES = ("tanh", "relu")


class ForwardArgs(NamedTuple):
    """Validated forward arguments: C-contiguous arrays of one float dtype."""

    x: np.ndarray                  # (T, B, D)
    h0: np.ndarray                 # (B, H), zeros when None was given
    c0: Optional[np.ndarray]       # (B, H) for the LSTM, else None
    w_ih: np.ndarray               # (G*H, D)
    w_hh: np.ndarray               # (G*H, H)
    b_ih: np.ndarray               # (G*H,), zeros when None was given
    b_hh: np.ndarray               # (G*H,), zeros when None was given
    lengths: Optional[np.ndarray]  # (B,) int64, or None for "all T steps"
    dtype: np.dtype
    T: int
    B: int
    D: int
    H: int


def _as_array(name, value):
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of floats, got {type(value).__name__} "
                        f"that NumPy cannot convert ({exc})") from None
    return array


def _float_array(name, value, dtype):
    """``value`` as a C-contiguous array of ``dtype``; TypeError unless it holds real floats."""
    array = _as_array(name, value)
    if array.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    if array.dtype == dtype and array.flags.c_contiguous:
        return array
    return _pool.copy(array, dtype)   # keeps 0-d arrays 0-d


def _shape_error(name, expected_text, expected, got):
    return ValueError(f"{name} must have shape {expected_text} = {tuple(expected)}, "
                      f"got {tuple(got)}")


def _check_shape(name, array, expected_text, expected):
    if array.shape != tuple(expected):
        raise _shape_error(name, expected_text, expected, array.shape)


def flag(name, value):
    """``value`` as a bool; TypeError unless it is True or False (or a NumPy bool)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def parameter_dtype(w_ih):
    """The computation dtype, chosen by ``w_ih``: float32 or float64."""
    array = _as_array("w_ih", w_ih)
    if array.dtype not in (np.float32, np.float64):
        raise TypeError(f"w_ih must be float32 or float64 (it chooses the dtype), "
                        f"got dtype {array.dtype}")
    return array.dtype


def forward_args(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, nonlinearity="tanh"):
    """Validate a forward call of ``cell`` ("rnn", "lstm" or "gru")."""
    gates = GATES[cell]
    g = "" if gates == 1 else f"{gates}*"
    if cell == "rnn" and nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")

    dtype = parameter_dtype(w_ih)
    w_hh = _float_array("w_hh", w_hh, dtype)
    if w_hh.ndim != 2 or w_hh.shape[1] < 1 or w_hh.shape[0] != gates * w_hh.shape[1]:
        if w_hh.ndim == 2 and w_hh.shape[1] >= 1:
            H = w_hh.shape[1]
            raise ValueError(f"w_hh must have shape ({g}H, H) = ({gates * H}, {H}) for "
                             f"{CELL_NAMES[cell]}, H being its column count, got {w_hh.shape}")
        raise ValueError(f"w_hh must have shape ({g}H, H) for {CELL_NAMES[cell]} with hidden "
                         f"size H >= 1, got {w_hh.shape}")
    H = w_hh.shape[1]
    GH = gates * H

    x = _float_array("x", x, dtype)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, D), got {x.shape}")
    T, B, D = x.shape
    if D < 1:
        raise ValueError(f"x must have at least one feature: shape (T, B, D) with D >= 1, "
                         f"got {x.shape}")

    w_ih = _float_array("w_ih", w_ih, dtype)
    _check_shape("w_ih", w_ih, f"({g}H, D)", (GH, D))

    def state(name, value):
        if value is None:
            return np.zeros((B, H), dtype)
        array = _float_array(name, value, dtype)
        _check_shape(name, array, "(B, H)", (B, H))
        return array

    def bias(name, value):
        if value is None:
            return np.zeros(GH, dtype)
        array = _float_array(name, value, dtype)
        _check_shape(name, array, f"({g}H,)", (GH,))
        return array

    h0 = state("h0", h0)
    c0 = state("c0", c0) if cell == "lstm" else None
    b_ih = bias("b_ih", b_ih)
    b_hh = bias("b_hh", b_hh)
    lengths = lengths_array(lengths, T, B)
    return ForwardArgs(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, dtype, T, B, D, H)


def lengths_array(lengths, T, B):
    """``lengths`` as a C-contiguous int64 array of shape (B,) with 0 <= lengths <= T."""
    if lengths is None:
        return None
    array = _as_array("lengths", lengths)
    if array.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an array of integers, got dtype {array.dtype}")
    _check_shape("lengths", array, "(B,)", (B,))
    if array.size and (array.min() < 0 or array.max() > T):
        raise ValueError(f"lengths must satisfy 0 <= lengths[b] <= T = {T}, "
                         f"got values from {array.min()} to {array.max()}")
    return np.ascontiguousarray(array, dtype=np.int64)


def backward_cache(cache, cell, impl):
    """Check that ``cache`` came from ``impl``'s ``cell`` forward and was not used yet."""
    function = f"{impl}.{cell}_backward"
    if cache is None:
        raise ValueError(f"{function} got cache=None: the forward call ran with "
                         f"training=False, which keeps nothing for backward")
    if not isinstance(cache, Cache):
        raise TypeError(f"{function} expects the cache returned by {impl}.{cell}_forward, "
                        f"got {type(cache).__name__}")
    if cache.cell != cell or cache.impl != impl:
        raise ValueError(f"{function} expects the cache returned by {impl}.{cell}_forward, "
                         f"got one from {cache.impl}.{cache.cell}_forward")
    if cache.consumed:
        raise ValueError(f"{function}: this cache was already used by a backward call "
                         f"(backward reuses its buffers); run forward again")
    return cache


def grad_array(name, value, expected_text, shape, dtype):
    """An incoming gradient: None, or a float array of ``shape`` cast to ``dtype``."""
    if value is None:
        return None
    array = _float_array(name, value, dtype)
    _check_shape(name, array, expected_text, shape)
    return array


def zero_padding(x, lengths):
    """``x`` (T, B, D) with the steps beyond each length set to 0 (a copy), or ``x``
    itself when nothing is padded. Backward's ``dW_ih = dG^T x`` runs over every
    step; zeroing the padding keeps whatever it holds (NaN, inf) out of it, as
    PyTorch's packed sequences never read it."""
    T, B = x.shape[:2]
    if lengths is None or np.all(lengths == T):
        return x
    return np.where(active_mask(lengths, T, B)[:, :, None], x, 0).astype(x.dtype, copy=False)


def active_mask(lengths, T, B):
    """(T, B) bool: True where step t of sequence b is within its length."""
    if lengths is None:
        return np.ones((T, B), dtype=bool)
    return np.arange(T)[:, None] < lengths[None, :]
