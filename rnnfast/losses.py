"""Loss functions, each returning ``(loss, gradient)``: the mean-reduced loss as a Python
float and its gradient with respect to the prediction, ready for ``backward``.

Both reduce as PyTorch's ``reduction="mean"`` does: the mean over the elements that
count (masked-in elements for ``mse_loss``, non-ignored targets for ``cross_entropy``).
When nothing counts (an empty input, a mask of zeros, every target ignored) the mean is
0 / 0: the loss is ``nan``, as in torch, and the gradient is all zeros, as torch's is
for all-ignored targets (no element contributes to the loss).

dtype: the prediction (``pred`` / ``logits``) chooses it when it is float32 or float64
(other floats compute in float64); the gradient has that dtype.
"""

import numpy as np

from . import _losses
from ._checks import _as_array

__all__ = ["mse_loss", "cross_entropy"]


def _prediction(name, value):
    """``value`` as a float32 or float64 array; TypeError unless it holds real floats."""
    array = _as_array(name, value)
    if array.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    return array


def _mask(mask, shape):
    """``mask`` as a bool array broadcast to ``shape`` (a read-only view)."""
    array = _as_array("mask", mask)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"mask must be a bool array or hold 0 and 1, got dtype {array.dtype}")
    if array.dtype.kind != "b":
        if not np.all((array == 0) | (array == 1)):
            bad = array[(array != 0) & (array != 1)].flat[0]
            raise ValueError(f"mask must be bool or hold only 0 and 1, got the value {bad}")
        array = array != 0
    try:
        return np.broadcast_to(array, shape)
    except ValueError:
        hint = ""
        if array.ndim < len(shape) and array.shape == tuple(shape[:array.ndim]):
            hint = (f"; a mask over the leading dimensions needs trailing axes of size 1, "
                    f"e.g. mask[..., None] of shape {array.shape + (1,)}")
        raise ValueError(f"mask of shape {array.shape} cannot be broadcast to pred's shape "
                         f"{tuple(shape)}{hint}") from None


def mse_loss(pred, target, mask=None):
    """Mean squared error, as ``torch.nn.functional.mse_loss`` (``reduction="mean"``),
    optionally over the masked-in elements only.

    ::

        loss  = sum(mask * (pred - target)**2) / n,   n = number of masked-in elements
        dpred = 2 * mask * (pred - target) / n

    Parameters
    ----------
    pred : ndarray of floats, any shape
    target : ndarray of floats, the shape of ``pred`` (cast to pred's dtype)
    mask : None, or bool / 0-1 ndarray broadcastable to pred's shape
        True (1) where the element counts. Masked-out elements may hold anything (nan
        included) in ``pred`` and ``target``: they touch neither the loss nor the
        gradient, whose entries there are 0. With a ``(T, B, 1)`` mask and a
        ``(T, B, F)`` pred, each masked-in step counts F elements.

    Returns
    -------
    loss : float
        ``nan`` when no element counts (empty pred, all-zero mask).
    dpred : ndarray, the shape and dtype of pred
        The gradient of ``loss`` with respect to ``pred``.
    """
    pred = _prediction("pred", pred)
    target = _as_array("target", target)
    if target.dtype.kind != "f":
        raise TypeError(f"target must be a floating-point array, got dtype {target.dtype}")
    if target.shape != pred.shape:
        raise ValueError(f"target must have the shape of pred {pred.shape}, "
                         f"got {target.shape}")
    diff = pred - target.astype(pred.dtype, copy=False)
    if mask is None:
        count = diff.size
    else:
        mask = _mask(mask, pred.shape)
        count = int(np.count_nonzero(mask))
        diff = np.where(mask, diff, 0).astype(pred.dtype, copy=False)
    if count == 0:
        return float("nan"), np.zeros_like(pred)
    with np.errstate(under="ignore"):
        loss = float(np.sum(diff * diff) / count)
        dpred = diff * (2.0 / count)
    return loss, dpred.astype(pred.dtype, copy=False)


def cross_entropy(logits, targets, ignore_index=-100):
    """Softmax cross-entropy from logits, as ``torch.nn.functional.cross_entropy`` with
    class-index targets and ``reduction="mean"``, but with the classes on the LAST axis.

    ::

        log p[..., c] = logits[..., c] - logsumexp(logits[..., :])
        loss          = -sum over counted positions of log p[..., targets[...]] / n
        dlogits       = (softmax(logits) - onehot(targets)) / n   (0 where ignored)

    where the counted positions are those with ``targets != ignore_index`` and n is their
    number. The log-sum-exp subtracts each row's maximum first, so any finite logits
    (1e4, -1e4) give finite results without overflow. Ignored positions are never
    read: their logits may hold anything (nan included). One pass in C per row
    (rnnfast._losses); the loss sums in float64.

    Parameters
    ----------
    logits : ndarray of floats of shape (..., C)
        e.g. (B, C), or (T, B, C) straight from a Linear over a recurrent layer's output.
        (torch puts the classes on axis 1 for more than 2 dimensions: move them last,
        ``np.moveaxis(x, 1, -1)``, to compare.)
    targets : ndarray of integers of shape (...)
        logits' shape without its last axis; each value in ``[0, C)`` or ``ignore_index``.
    ignore_index : int
        Target value that does not count (default -100, torch's; padding positions).

    Returns
    -------
    loss : float
        ``nan`` when no position counts (no positions, or every target ignored).
    dlogits : ndarray, the shape and dtype of logits
        The gradient of ``loss`` with respect to ``logits``.
    """
    logits = _prediction("logits", logits)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape (..., C) with C >= 1 classes on the last "
                         f"axis, got {logits.shape}")
    C = logits.shape[-1]
    targets = _as_array("targets", targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be an array of integer class indices, "
                        f"got dtype {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets must have logits' shape without its class axis: "
                         f"(...) = {logits.shape[:-1]} for logits of shape (..., C) = "
                         f"{logits.shape}, got {targets.shape}")
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index,
                                                                   (int, np.integer)):
        raise TypeError(f"ignore_index must be an integer, got "
                        f"{type(ignore_index).__name__} {ignore_index!r}")
    if not -2**63 <= ignore_index < 2**63:
        raise ValueError(f"ignore_index must fit in int64, got {ignore_index}")

    flat_logits = np.ascontiguousarray(logits.reshape(-1, C))           # (N, C)
    flat_targets = np.ascontiguousarray(targets.reshape(-1), dtype=np.int64)  # (N,)
    dlogits = np.empty(flat_logits.shape, logits.dtype)                 # (N, C)
    loss, bad_row = _losses.softmax_cross_entropy(flat_logits, flat_targets, ignore_index,
                                                  dlogits)
    if bad_row >= 0:
        where = np.unravel_index(bad_row, targets.shape)
        raise ValueError(f"targets must be class indices in [0, C) = [0, {C}) or "
                         f"ignore_index = {ignore_index}, got {targets[where]} at index "
                         f"{tuple(int(i) for i in where)}")
    return loss, dlogits.reshape(logits.shape)
