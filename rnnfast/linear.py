"""``Linear``: the fully connected output layer ``y = x W^T + b``, over any leading
dimensions, with PyTorch's parameter names, layout and default initialisation.

Shapes: ``N`` stands for any leading dimensions (``(T, B)`` after a recurrent layer,
``(B,)``, or none at all), ``D = in_features``, ``O = out_features``.

Forward keeps the (cast) input ``x`` for backward, by reference: modifying ``x`` in
place between ``forward`` and ``backward`` changes the weight gradient. Backward uses
the weights as they are when it runs.

Module protocol (shared by everything trainable in rnnfast):

- ``params``: dict name -> ndarray; ``grads``: dict with the same names and shapes,
  zeros at construction. ``backward`` only ADDS into ``grads`` (``+=``, like torch's
  ``.grad``); the caller zeroes them with ``zero_grad()`` (or an optimizer's).
- ``training`` with ``train()`` / ``eval()`` (both return the module). ``Linear``
  computes the same thing in both modes, and ``backward`` works in both.
- ``state_dict()`` (a copy of ``params``) and ``load_state_dict(d)``, which copies
  into the existing arrays in place, so anything holding them sees the new values.
- ``config()``: the constructor's keyword arguments, JSON-serialisable, so that
  ``type(m)(**m.config())`` builds a module of the same structure.
"""

import numbers

import numpy as np

from . import _checks, _products
from ._blas import BLAS_Trans
from ._checks import _float_array
from ._threads import product_parts, single_threaded_blas

__all__ = ["Linear"]


def _product(a, b, transpose_a=False, transpose_b=False):
    """op(a) @ op(b) for 2-d arrays of one float dtype: NumPy's, or for large ones the
    rows split over the kernels' threads (rnnfast._products)."""
    m, k = a.shape[::-1] if transpose_a else a.shape
    n = b.shape[0] if transpose_b else b.shape[1]
    parts = product_parts(m, m * n * k)
    if parts == 1:
        return (a.T if transpose_a else a) @ (b.T if transpose_b else b)
    out = np.empty((m, n), a.dtype)
    _multiply(a, b, transpose_a, transpose_b, 0.0, out, parts)
    return out


def _add_product(target, a, b):
    """target += a^T @ b, in place (a weight gradient): straight into ``target`` through
    BLAS, on the kernels' threads for large ones. (NumPy's ``a.T @ b`` of few rows
    leaves BLAS: 23 us for (1, 103)^T (1, 192), against 5 us here.)"""
    m, n, k = a.shape[1], b.shape[1], a.shape[0]
    if target.flags.c_contiguous and target.dtype == a.dtype:
        _multiply(a, b, True, False, 1.0, target, product_parts(m, m * n * k))
    else:
        target += _product(a, b, transpose_a=True)


def _multiply(a, b, transpose_a, transpose_b, beta, out, parts):
    """out[...] = op(a) @ op(b) + beta * out on ``parts`` threads."""
    trans = {False: BLAS_Trans.NoTrans, True: BLAS_Trans.Trans}
    with single_threaded_blas(parts):
        _products.multiply(trans[transpose_a], trans[transpose_b], np.ascontiguousarray(a),
                           np.ascontiguousarray(b), beta, out, parts)


def float_dtype(dtype, name="dtype"):
    """``dtype`` as ``np.dtype('float32')`` or ``np.dtype('float64')``; TypeError otherwise."""
    try:
        result = np.dtype(dtype)
    except TypeError:
        result = None
    if result not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}")
    return result


def positive_int(name, value):
    """``value`` as a Python int >= 1 (bool refused); TypeError / ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def seed_value(seed):
    """``seed`` as None or a Python int (what ``config()`` can store as JSON)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be None or a non-negative integer, "
                        f"got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be None or a non-negative integer, got {seed}")
    return int(seed)


def to_numpy(value):
    """``np.asarray(value)``, detaching torch tensors (and moving them to the CPU) first."""
    if hasattr(value, "detach") and callable(value.detach):
        value = value.detach()
        if hasattr(value, "cpu"):
            value = value.cpu()
    return np.asarray(value)


def load_state_dict_into(params, state, dtype, owner):
    """Copy ``state`` (name -> array-like) into the arrays of ``params`` in place, after
    checking every entry: same names (ValueError listing missing / unexpected ones), same
    shapes (ValueError naming the entry), real numbers (TypeError); values are cast to
    ``dtype``. Nothing is written unless everything is valid."""
    if not hasattr(state, "keys") or not hasattr(state, "__getitem__"):
        raise TypeError(f"{owner}.load_state_dict expects a dict of arrays, "
                        f"got {type(state).__name__}")
    missing = [name for name in params if name not in state]
    unexpected = [name for name in state.keys() if name not in params]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise ValueError(f"{owner}.load_state_dict: {' and '.join(parts)} "
                         f"(expected exactly {list(params)})")
    arrays = {}
    for name, target in params.items():
        try:
            array = to_numpy(state[name])
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{owner}.load_state_dict: {name!r} cannot be converted to an "
                            f"array ({exc})") from None
        if array.dtype.kind not in "fiu":
            raise TypeError(f"{owner}.load_state_dict: {name!r} must hold real numbers, "
                            f"got dtype {array.dtype}")
        if array.shape != target.shape:
            raise ValueError(f"{owner}.load_state_dict: {name!r} must have shape "
                             f"{target.shape}, got {array.shape}")
        arrays[name] = array
    for name, array in arrays.items():
        np.copyto(params[name], array.astype(dtype, copy=False), casting="unsafe")


class Linear:
    """Fully connected layer ``y = x W^T + b``, as ``torch.nn.Linear``.

    Parameters
    ----------
    in_features : int
        D, the size of the last dimension of the input.
    out_features : int
        O, the size of the last dimension of the output.
    bias : bool
        Whether to add the learnable bias ``b`` (otherwise there is no ``"bias"`` entry).
    dtype : float32 or float64 (type, dtype or name)
        The dtype of the parameters and of every computation; float inputs of the other
        width are cast to it.
    seed : int or None
        Seed of ``np.random.default_rng`` for the initialisation, torch's default:
        ``weight`` and ``bias`` uniform in ``[-1/sqrt(D), 1/sqrt(D)]`` (drawn in
        float64, weight first, then cast).

    Attributes
    ----------
    params : dict
        ``"weight"`` ndarray of shape (O, D), ``"bias"`` ndarray of shape (O,).
    grads : dict
        Same names and shapes; ``backward`` adds into them.
    training : bool
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, seed=None):
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        self.bias = _checks.flag("bias", bias)
        self.dtype = float_dtype(dtype)
        self.seed = seed_value(seed)
        self.training = True

        rng = np.random.default_rng(self.seed)
        bound = 1.0 / np.sqrt(self.in_features)
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        self.params = {name: rng.uniform(-bound, bound, shape).astype(self.dtype)
                       for name, shape in shapes.items()}
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}
        self._x = None  # (*N, D): the input of the last forward call, for backward

    # ------------------------------------------------------------------ computation

    def forward(self, x):
        """``y = x W^T + b``.

        Parameters
        ----------
        x : ndarray of shape (*N, D)
            Any number of leading dimensions (none included); cast to the layer's dtype.

        Returns
        -------
        y : ndarray of shape (*N, O)
        """
        x = _float_array("x", x, self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., in_features) = "
                             f"(..., {self.in_features}), got {x.shape}")
        x2 = x.reshape(-1, self.in_features)                  # (N, D)
        y = _product(x2, self.params["weight"], transpose_b=True)   # (N, O) = x W^T
        if self.bias:
            y += self.params["bias"]
        self._x = x
        return y.reshape(x.shape[:-1] + (self.out_features,))

    __call__ = forward

    def backward(self, dy, *, input_grad=True):
        """Gradients of the last ``forward`` call: adds ``dy^T x`` into
        ``grads["weight"]`` and ``sum(dy)`` into ``grads["bias"]``; returns ``dx``.

        Parameters
        ----------
        dy : ndarray of shape (*N, O)
            The gradient of the loss with respect to the last forward's ``y``.
        input_grad : False skips ``dx`` (returns None): for an input that needs no
            gradient, such as data.

        Returns
        -------
        dx : ndarray of shape (*N, D), or None
        """
        if self._x is None:
            raise ValueError("Linear.backward called before forward: there is no input "
                             "to compute the weight gradient from")
        input_grad = _checks.flag("input_grad", input_grad)
        x = self._x
        expected = x.shape[:-1] + (self.out_features,)
        dy = _float_array("dy", dy, self.dtype)
        if dy.shape != expected:
            raise ValueError(f"dy must have the shape of the last forward's output "
                             f"(..., out_features) = {expected}, got {dy.shape}")
        x2 = x.reshape(-1, self.in_features)                   # (N, D)
        dy2 = dy.reshape(-1, self.out_features)                # (N, O)
        # dW += dy^T x
        _add_product(self.grads["weight"], dy2, x2)
        if self.bias:
            # db += sum over N of dy, accumulated in float64
            self.grads["bias"] += dy2.sum(axis=0, dtype=np.float64).astype(self.dtype)
        # dx = dy W
        if not input_grad:
            return None
        return _product(dy2, self.params["weight"]).reshape(x.shape)

    # ------------------------------------------------------------------ protocol

    def zero_grad(self):
        """Set every gradient to zero, in place."""
        for grad in self.grads.values():
            grad.fill(0)

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        """A copy of ``params``: ``{"weight": (O, D), "bias": (O,)}``."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state):
        """Copy ``state`` into the parameters in place. Accepts anything NumPy converts,
        torch tensors included (a ``torch.nn.Linear``'s ``state_dict()`` loads as is);
        values are cast to the layer's dtype. Missing or unexpected names and wrong
        shapes raise ValueError, nothing being loaded then."""
        load_state_dict_into(self.params, state, self.dtype, "Linear")

    def config(self):
        """The constructor's keyword arguments (JSON-serialisable)."""
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "dtype": self.dtype.name, "seed": self.seed}

    def __repr__(self):
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias}, dtype={self.dtype.name})")
