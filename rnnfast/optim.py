"""Optimizers and gradient clipping over rnnfast modules, with PyTorch's update formulas.

An optimizer takes a list of modules: anything with a ``params`` dict (name -> float
ndarray) and a ``grads`` dict with the same names and shapes (the RNN / LSTM / GRU
layers, ``Linear``). ``step()`` updates every parameter IN PLACE (the arrays in
``module.params`` stay the same objects) from the gradients as they are, and never
touches the gradients; ``zero_grad()`` sets the gradients to zero in place. The usual
loop::

    opt = rnnfast.Adam([lstm, head], lr=1e-3)
    for x, y in batches:
        opt.zero_grad()
        ...forward, loss, backward (adds into the grads)...
        rnnfast.clip_grad_norm([lstm, head], max_norm=1.0)
        opt.step()

The hyper-parameters are plain attributes (``opt.lr = 1e-4`` between steps schedules
the learning rate); they are validated again at every ``step()``. The state (momentum
buffers, Adam moments and step counts) lives in ``opt.state``, keyed by (index of the
module in the list, parameter name), in the parameters' dtype; it is created on the
first ``step()``, as torch's. ``opt.state_dict()`` / ``opt.load_state_dict(d)`` save and
restore hyper-parameters and state (``rnnfast.save`` stores the dict), so that training
resumed from a checkpoint continues bit for bit.

Formulas, per parameter ``p`` with gradient ``g``, exactly as torch's single-tensor
implementations (``dampening=0``, ``maximize=False``, ``amsgrad=False``):

SGD::

    g = g + weight_decay * p                       (if weight_decay)
    buf = g (first step),  buf = momentum * buf + g (after)     (if momentum)
    g = g + momentum * buf (nesterov),  g = buf (otherwise)     (if momentum)
    p = p - lr * g

Adam / AdamW (t = number of steps taken, starting at 1)::

    g = g + weight_decay * p                       (Adam, if weight_decay)
    p = p * (1 - lr * weight_decay)                (AdamW: decoupled decay)
    m = lerp(m, g, 1 - beta1)        = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

Adam and AdamW update every aligned, C-contiguous parameter in one call into C
(``rnnfast._updates``), one pass over each, with the same operations in the same
order as the NumPy lines of ``Adam._numpy_update``, which any other layout takes:
bitwise the same values. ``clip_grad_norm`` sums and scales in C the same way.
"""

import math
from collections.abc import Mapping

import numpy as np

from . import _updates

__all__ = ["SGD", "Adam", "AdamW", "clip_grad_norm"]


# ---------------------------------------------------------------------------- helpers

def _module_list(modules, owner):
    """``modules`` (one module or an iterable of them) as a list, each checked."""
    if hasattr(modules, "params"):
        modules = [modules]
    try:
        modules = list(modules)
    except TypeError:
        raise TypeError(f"{owner} expects a list of modules (objects with params and grads "
                        f"dicts), got {type(modules).__name__}") from None
    seen = {}
    for i, module in enumerate(modules):
        if id(module) in seen:
            raise ValueError(f"{owner}: modules[{i}] is the same object as "
                             f"modules[{seen[id(module)]}]; list each module once")
        seen[id(module)] = i
        _check_module(module, i, owner)
    if not any(len(module.params) for module in modules):
        raise ValueError(f"{owner} got no parameters: the module list is empty or its "
                         f"modules have no params")
    return modules


def _check_module(module, i, owner):
    """TypeError / ValueError unless ``module`` has matching params and grads dicts."""
    params = getattr(module, "params", None)
    grads = getattr(module, "grads", None)
    if not isinstance(params, Mapping) or not isinstance(grads, Mapping):
        raise TypeError(f"{owner}: modules[{i}] ({type(module).__name__}) must have "
                        f"'params' and 'grads' dicts")
    for name, param in params.items():
        if not isinstance(param, np.ndarray) or param.dtype not in (np.float32, np.float64):
            got = param.dtype if isinstance(param, np.ndarray) else type(param).__name__
            raise TypeError(f"{owner}: modules[{i}].params[{name!r}] must be a float32 or "
                            f"float64 ndarray, got {got}")
        if not param.flags.writeable:
            raise ValueError(f"{owner}: modules[{i}].params[{name!r}] is read-only; "
                             f"parameters are updated in place")
        grad = grads.get(name)
        if grad is None:
            raise ValueError(f"{owner}: modules[{i}].grads has no entry {name!r} "
                             f"(its params have one)")
        if not isinstance(grad, np.ndarray) or grad.shape != param.shape:
            got = grad.shape if isinstance(grad, np.ndarray) else type(grad).__name__
            raise ValueError(f"{owner}: modules[{i}].grads[{name!r}] must be an ndarray "
                             f"of the parameter's shape {param.shape}, got {got}")


def _number(owner, name, value, low=0.0, high=None, high_open=False):
    """``value`` as a finite float with ``low <= value`` (``< high`` or ``<= high``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{owner}: {name} must be a number, got "
                        f"{type(value).__name__} {value!r}")
    value = float(value)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or value < low or too_high:
        bound = "" if high is None else f" and {'<' if high_open else '<='} {high:g}"
        raise ValueError(f"{owner}: {name} must be a finite number >= {low:g}{bound}, "
                         f"got {value!r}")
    return value


def _keys_text(value):
    return f"keys {sorted(value)}" if isinstance(value, Mapping) else type(value).__name__


def _lerp_(start, end, weight):
    """``start = start + weight * (end - start)`` in place, computed as torch's lerp
    (the other form for weight >= 0.5, which is exact at weight 1)."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        np.subtract(end, (end - start) * (1.0 - weight), out=start)


class _Optimizer:
    """Shared machinery: the module list, the state, ``zero_grad``."""

    def __init__(self, modules):
        self.modules = _module_list(modules, type(self).__name__)
        self.state = {}   # (module index, parameter name) -> dict of buffers

    def _parameters(self):
        """(key, param, grad) for every parameter, the modules checked again."""
        owner = type(self).__name__
        for i, module in enumerate(self.modules):
            _check_module(module, i, owner)
            for name, param in module.params.items():
                yield (i, name), param, module.grads[name]

    def zero_grad(self):
        """Set every gradient of every module to zero, in place."""
        for module in self.modules:
            for grad in module.grads.values():
                grad.fill(0)

    def step(self):
        """Update every parameter in place from its gradient."""
        self._check_hyper()
        for key, param, grad in self._parameters():
            self._update(self.state.setdefault(key, {}), param, grad)

    def state_dict(self):
        """The optimizer's state as plain values and arrays (copies), for a checkpoint
        with ``rnnfast.save``: ``{"type": class name, "hyper": {name: value},
        "state": {"<module index>/<param name>": {buffer name: array or step count}}}``.
        """
        hyper = {name: (list(value) if isinstance(value, tuple) else value)
                 for name, value in ((name, getattr(self, name)) for name in self._hyper)}
        state = {f"{i}/{name}": {key: (value.copy() if isinstance(value, np.ndarray)
                                       else value)
                                 for key, value in buffers.items()}
                 for (i, name), buffers in self.state.items()}
        return {"type": type(self).__name__, "hyper": hyper, "state": state}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state from :meth:`state_dict`, for the same
        list of modules in the same order; arrays are copied. Raises ``ValueError`` /
        ``TypeError`` naming what does not fit, leaving the optimizer unchanged."""
        owner = type(self).__name__
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"type", "hyper", "state"}:
            raise TypeError(f"{owner}.load_state_dict: expected a dict with keys 'type', "
                            f"'hyper' and 'state', got {_keys_text(state_dict)}")
        if state_dict["type"] != owner:
            raise ValueError(f"{owner}.load_state_dict: the state is of a "
                             f"{state_dict['type']!r} optimizer")
        hyper = state_dict["hyper"]
        if not isinstance(hyper, Mapping) or set(hyper) != set(self._hyper):
            raise ValueError(f"{owner}.load_state_dict: 'hyper' must hold "
                             f"{sorted(self._hyper)}, got {_keys_text(hyper)}")
        saved = state_dict["state"]
        if not isinstance(saved, Mapping):
            raise TypeError(f"{owner}.load_state_dict: 'state' must be a dict, "
                            f"got {type(saved).__name__}")
        params = {f"{i}/{name}": ((i, name), param) for (i, name), param, _ in
                  self._parameters()}
        state = {}
        for key, buffers in saved.items():
            if key not in params:
                raise ValueError(f"{owner}.load_state_dict: state for {key!r}, which is no "
                                 f"parameter of these modules (module index/name)")
            index, param = params[key]
            state[index] = self._checked_buffers(key, buffers, param)
        previous = {name: getattr(self, name) for name in self._hyper}
        for name in self._hyper:
            value = hyper[name]
            setattr(self, name, tuple(value) if isinstance(value, list) else value)
        try:
            self._check_hyper()
        except (TypeError, ValueError):
            for name, value in previous.items():
                setattr(self, name, value)
            raise
        self.state = state

    def _checked_buffers(self, key, buffers, param):
        """A copy of one parameter's saved buffers, checked against the parameter."""
        owner = type(self).__name__
        if not isinstance(buffers, Mapping) or not set(buffers) <= set(self._buffers):
            raise ValueError(f"{owner}.load_state_dict: state[{key!r}] must hold some of "
                             f"{sorted(self._buffers)}, got {_keys_text(buffers)}")
        checked = {}
        for name, value in buffers.items():
            if name == "step":
                if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
                        or value < 0:
                    raise ValueError(f"{owner}.load_state_dict: state[{key!r}]['step'] must "
                                     f"be an integer >= 0, got {value!r}")
                checked[name] = int(value)
            elif not (isinstance(value, np.ndarray) and value.shape == param.shape
                      and value.dtype == param.dtype):
                raise ValueError(f"{owner}.load_state_dict: state[{key!r}][{name!r}] must be "
                                 f"a {param.dtype} array of shape {param.shape}, got "
                                 f"{getattr(value, 'dtype', type(value).__name__)} "
                                 f"{getattr(value, 'shape', '')}")
            else:
                checked[name] = value.copy()
        return checked

    def _check_hyper(self):
        raise NotImplementedError

    def _update(self, state, param, grad):
        raise NotImplementedError


# ------------------------------------------------------------------------------- SGD

class SGD(_Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum and L2 weight
    decay, as ``torch.optim.SGD`` with ``dampening=0``.

    Parameters
    ----------
    modules : list of modules (objects with ``params`` and ``grads`` dicts), or one
    lr : float >= 0
    momentum : float >= 0
        0: plain SGD. The buffer starts as the first step's gradient (torch's rule).
    nesterov : bool
        Nesterov momentum; needs momentum > 0.
    weight_decay : float >= 0
        L2 penalty: ``weight_decay * p`` is added to the gradient.
    """

    _hyper = ("lr", "momentum", "nesterov", "weight_decay")
    _buffers = ("momentum_buffer",)

    def __init__(self, modules, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(modules)
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self._check_hyper()

    def _check_hyper(self):
        self.lr = _number("SGD", "lr", self.lr)
        self.momentum = _number("SGD", "momentum", self.momentum)
        self.weight_decay = _number("SGD", "weight_decay", self.weight_decay)
        if not isinstance(self.nesterov, (bool, np.bool_)):
            raise TypeError(f"SGD: nesterov must be True or False, got {self.nesterov!r}")
        if self.nesterov and self.momentum <= 0:
            raise ValueError("SGD: nesterov=True requires momentum > 0")

    def _update(self, state, param, grad):
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        if self.momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.astype(param.dtype, copy=True)
            else:
                buf *= self.momentum
                buf += grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        param -= self.lr * grad

    def __repr__(self):
        return (f"SGD(lr={self.lr:g}, momentum={self.momentum:g}, nesterov={self.nesterov}, "
                f"weight_decay={self.weight_decay:g})")


# ------------------------------------------------------------------------------ Adam

class Adam(_Optimizer):
    """Adam, as ``torch.optim.Adam`` (``amsgrad=False``): bias-corrected moments, and
    ``weight_decay`` as an L2 penalty added to the gradient (coupled; see AdamW).

    Parameters
    ----------
    modules : list of modules (objects with ``params`` and ``grads`` dicts), or one
    lr : float >= 0
    betas : (float, float), each in [0, 1)
    eps : float >= 0
    weight_decay : float >= 0
    """

    _decoupled = False
    _hyper = ("lr", "betas", "eps", "weight_decay")
    _buffers = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, modules, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(modules)
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self._check_hyper()

    def _check_hyper(self):
        owner = type(self).__name__
        self.lr = _number(owner, "lr", self.lr)
        self.eps = _number(owner, "eps", self.eps)
        self.weight_decay = _number(owner, "weight_decay", self.weight_decay)
        try:
            beta1, beta2 = self.betas
        except (TypeError, ValueError):
            raise TypeError(f"{owner}: betas must be a pair (beta1, beta2), "
                            f"got {self.betas!r}") from None
        self.betas = (_number(owner, "betas[0]", beta1, high=1.0, high_open=True),
                      _number(owner, "betas[1]", beta2, high=1.0, high_open=True))

    def step(self):
        """Update every parameter in place from its gradient."""
        self._check_hyper()
        parameters = list(self._parameters())   # every module checked before any change
        entries = []   # (param, grad, exp_avg, exp_avg_sq, step) per parameter
        for key, param, grad in parameters:
            state = self.state.get(key)
            if not state:
                state = self.state[key] = {"step": 0, "exp_avg": np.zeros_like(param),
                                           "exp_avg_sq": np.zeros_like(param)}
            state["step"] += 1
            entries.append((param, grad, state["exp_avg"], state["exp_avg_sq"], state["step"]))
        beta1, beta2 = self.betas
        decay = self.weight_decay != 0
        # _numpy_update in one pass over each parameter, bitwise the same values
        left = _updates.adam_updates(entries, decay and not self._decoupled, self.weight_decay,
                                     decay and self._decoupled, 1 - self.lr * self.weight_decay,
                                     1 - beta1, beta1, beta2, self.lr, self.eps)
        for index in left:
            self._numpy_update(*entries[index])

    def _numpy_update(self, param, grad, exp_avg, exp_avg_sq, step):
        """One parameter's update in NumPy operations (any layout)."""
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            if self._decoupled:
                param *= 1 - self.lr * self.weight_decay
            else:
                grad = grad + self.weight_decay * param
        # m = beta1 m + (1 - beta1) g ;  v = beta2 v + (1 - beta2) g^2
        _lerp_(exp_avg, grad, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        step_size = self.lr / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + self.eps
        param -= step_size * exp_avg / denom

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr:g}, betas={self.betas}, eps={self.eps:g}, "
                f"weight_decay={self.weight_decay:g})")


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay, each step
    first multiplying the parameters by ``1 - lr * weight_decay`` (default 1e-2); the
    gradient itself is left alone. Same parameters as :class:`Adam`."""

    _decoupled = True

    def __init__(self, modules, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(modules, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# -------------------------------------------------------------------------- clipping

def clip_grad_norm(modules, max_norm, error_if_nonfinite=False):
    """Scale all gradients together so that their global L2 norm is at most
    ``max_norm``, as ``torch.nn.utils.clip_grad_norm_`` (norm_type 2).

    ``total_norm`` is the L2 norm of every gradient of every module, concatenated
    (accumulated in float64). When ``max_norm / (total_norm + 1e-6) < 1`` every
    gradient is multiplied by that factor in place; otherwise nothing changes. A
    non-finite total norm scales by the non-finite factor as torch does (the gradients
    become nan), unless ``error_if_nonfinite`` asks for a ValueError instead.

    Parameters
    ----------
    modules : list of modules (objects with ``params`` and ``grads`` dicts), or one
    max_norm : float >= 0 (``inf``: only measure)
    error_if_nonfinite : bool

    Returns
    -------
    total_norm : float
        The norm before clipping.
    """
    modules = _module_list(modules, "clip_grad_norm")
    if isinstance(max_norm, (bool, np.bool_)) or not isinstance(
            max_norm, (int, float, np.integer, np.floating)):
        raise TypeError(f"clip_grad_norm: max_norm must be a number, got "
                        f"{type(max_norm).__name__} {max_norm!r}")
    max_norm = float(max_norm)
    if math.isnan(max_norm) or max_norm < 0:
        raise ValueError(f"clip_grad_norm: max_norm must be >= 0, got {max_norm!r}")
    grads = [module.grads[name] for module in modules for name in module.params]
    total_norm = math.sqrt(_updates.sum_of_squares(grads))   # summed in float64
    if not math.isfinite(total_norm) and error_if_nonfinite:
        raise ValueError(f"clip_grad_norm: the total norm of the gradients is "
                         f"{total_norm}, so they cannot be clipped "
                         f"(error_if_nonfinite=True)")
    coef = max_norm / (total_norm + 1e-6)
    if not coef >= 1.0:   # coef < 1, or nan (a nan or infinite norm): scale, as torch
        _updates.scale(grads, coef)           # grad *= coef; inf * 0 = nan, as in torch
    return total_norm
