"""Result types shared by the kernels and the reference: gradient tuples and the cache."""

from typing import NamedTuple, Optional

import numpy as np

__all__ = ["RNNGrads", "LSTMGrads", "GRUGrads", "Cache"]


class RNNGrads(NamedTuple):
    """Gradients returned by ``rnn_backward``.

    Shapes: ``dx`` (T, B, D), ``dh0`` (B, H), ``dw_ih`` (H, D), ``dw_hh`` (H, H),
    ``db_ih`` and ``db_hh`` (H,).
    """

    dx: Optional[np.ndarray]       # None with input_grad=False
    dh0: np.ndarray
    dw_ih: np.ndarray
    dw_hh: np.ndarray
    db_ih: np.ndarray
    db_hh: np.ndarray


class LSTMGrads(NamedTuple):
    """Gradients returned by ``lstm_backward``.

    Shapes: ``dx`` (T, B, D), ``dh0`` and ``dc0`` (B, H), ``dw_ih`` (4H, D),
    ``dw_hh`` (4H, H), ``db_ih`` and ``db_hh`` (4H,).
    """

    dx: Optional[np.ndarray]       # None with input_grad=False
    dh0: np.ndarray
    dc0: np.ndarray
    dw_ih: np.ndarray
    dw_hh: np.ndarray
    db_ih: np.ndarray
    db_hh: np.ndarray


class GRUGrads(NamedTuple):
    """Gradients returned by ``gru_backward``.

    Shapes: ``dx`` (T, B, D), ``dh0`` (B, H), ``dw_ih`` (3H, D), ``dw_hh`` (3H, H),
    ``db_ih`` and ``db_hh`` (3H,).
    """

    dx: Optional[np.ndarray]       # None with input_grad=False
    dh0: np.ndarray
    dw_ih: np.ndarray
    dw_hh: np.ndarray
    db_ih: np.ndarray
    db_hh: np.ndarray


class Cache:
    """What a forward call keeps for its backward call. Opaque: pass it on unchanged.

    ``cell`` is ``"rnn"``, ``"lstm"`` or ``"gru"``; ``impl`` names the module whose
    forward made it (``"rnnfast"`` or ``"rnnfast.reference"``), since each backward
    understands only its own forward's cache. A cache serves one backward call:
    the kernels' backward overwrites the stored gates with their gradients.
    The cache holds references to ``x`` and the weights (as torch's autograd does):
    modifying them in place between forward and backward changes the gradients.
    """

    __slots__ = ("cell", "impl", "dtype", "shape", "data", "consumed")

    def __init__(self, cell, impl, dtype, shape, **data):
        self.cell = cell
        self.impl = impl
        self.dtype = np.dtype(dtype)
        self.shape = shape  # (T, B, D, H)
        self.data = data
        self.consumed = False

    def __repr__(self):
        T, B, D, H = self.shape
        state = ", consumed" if self.consumed else ""
        return (f"<{self.impl}.{self.cell}_forward cache: T={T} B={B} D={D} H={H} "
                f"{self.dtype.name}{state}>")
