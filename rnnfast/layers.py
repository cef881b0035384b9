"""Recurrent layers: multi-layer, optionally bidirectional RNN, LSTM and GRU.

The layers hold parameters in PyTorch's names, shapes and gate order and run every
step through ``rnnfast.functional`` (the streaming path calls the same Cython kernels
on buffers it keeps); nothing here computes a gate. The two directions of a
bidirectional layer run at once where the threads allow (``rnnfast._pair``).

Shape legend: T = steps, B = batch, D = ``input_size``, H = ``hidden_size``,
L = ``num_layers``, N = directions (2 if ``bidirectional`` else 1), G = stacked gates
(RNN 1, LSTM 4, GRU 3). Sequences are time-major ``(T, B, ·)`` unless ``batch_first``.

Parameters and gradients
------------------------
``params`` maps PyTorch's names to arrays: ``weight_ih_l{k}`` (G*H, D_k) with D_0 = D
and D_k = N*H above the first layer, ``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}`` and
``bias_hh_l{k}`` (G*H,) (absent with ``bias=False``), and the same with ``_reverse``
for the backward direction. ``grads`` has the same keys; ``backward`` adds into it, as
autograd does into ``.grad``, and the caller (a training loop or an optimizer) zeroes
it with ``zero_grad()``.

What forward keeps
------------------
In training mode forward keeps, per layer and direction, the functional cache (the
states and activated gates; see ``rnnfast.functional``) and, per layer below the
last, its dropout mask. One ``backward`` call consumes them: the kernels overwrite the
stored gates with their gradients. In eval mode forward keeps nothing.
"""

import functools
import numbers
import warnings
from collections.abc import Mapping
from typing import List, NamedTuple, Optional

import numpy as np

from . import _checks, _dropout, _pair, _pool, _stream, _threads, functional

__all__ = ["RNN", "LSTM", "GRU"]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_PARAM_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
# Parameters start on a cache-line boundary: a stream step reads every weight row with
# 64-byte loads, and rows straddling two lines made an LSTM step at H = 64 or 128
# 15-20 % slower.
_PARAM_ALIGNMENT = 64


def _aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array whose data starts at a multiple of
    ``_PARAM_ALIGNMENT`` bytes (a view into a slightly larger byte buffer)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(nbytes + _PARAM_ALIGNMENT, np.uint8)
    start = -buffer.ctypes.data % _PARAM_ALIGNMENT
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


def _stack(states):
    """The units' final states, each (B, H) and the caller's own, as one (L*N, B, H)
    array: without np.stack's checks, which cost several microseconds a call, as much
    as a small layer's whole step loop."""
    if len(states) == 1:
        return states[0][None]
    stacked = np.empty((len(states),) + states[0].shape, states[0].dtype)
    for unit, state in enumerate(states):
        stacked[unit] = state
    return stacked


def _concatenate_features(outputs):
    """The directions' outputs, each (T, B, H), side by side: (T, B, N*H)."""
    T, B, H = outputs[0].shape
    joined = _pool.empty((T, B, len(outputs) * H), outputs[0].dtype)
    return np.concatenate(outputs, axis=2, out=joined)


# ----------------------------------------------------------------------------- checks

def _positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _dropout_probability(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"dropout must be a number in [0, 1], got {type(value).__name__} "
                        f"{value!r}")
    if not 0 <= value <= 1:
        raise ValueError(f"dropout must be in [0, 1], got {value}")
    return float(value)


def _float_dtype(value):
    try:
        dtype = None if value is None else np.dtype(value)
    except TypeError:
        dtype = None
    if dtype not in _DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {value!r}")
    return dtype


def _seed(value):
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"seed must be None or an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"seed must be >= 0, got {value}")
    return int(value)


def _float_array(name, value, dtype, shape_text, shape):
    """``value`` as a C-contiguous ``dtype`` array of ``shape``, or None for None.

    TypeError unless it holds real floats; ValueError naming the expected shape.
    """
    if value is None:
        return None
    array = _checks._float_array(name, value, dtype)
    _checks._check_shape(name, array, shape_text, shape)
    return array


# ----------------------------------------------------------------------------- layers

class _Saved(NamedTuple):
    """What a training forward keeps for backward."""

    caches: List[object]                # per unit (layer * N + direction): functional cache
    masks: List[Optional[np.ndarray]]   # per layer: dropout mask (T, B, N*H) on its output
    steps: int                          # T
    batch: int                          # B


class _RecurrentLayer:
    """Machinery shared by RNN, LSTM and GRU; a subclass names its functional pair.

    Subclasses set ``_forward`` / ``_backward`` (the functional functions),
    ``_gates`` (G), ``_state_names`` (``("h",)`` or ``("h", "c")``) and
    ``_stream_kind()`` (the cell for ``rnnfast._stream``).
    States are handled as tuples of arrays, one per name in ``_state_names``; the
    public API shows a single array, or ``(h, c)`` for the LSTM.
    """

    _forward = None
    _backward = None
    _gates = None
    _state_names = ("h",)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None):
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.bias = _checks.flag("bias", bias)
        self.batch_first = _checks.flag("batch_first", batch_first)
        self.dropout = _dropout_probability(dropout)
        self.bidirectional = _checks.flag("bidirectional", bidirectional)
        self.dtype = _float_dtype(dtype)
        self.seed = _seed(seed)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(f"dropout={self.dropout} has no effect with num_layers=1: dropout "
                          f"applies between layers, to every output but the last layer's",
                          UserWarning, stacklevel=2)
        self.training = True
        self._directions = 2 if self.bidirectional else 1
        # Parameter names per unit (layer * N + direction), in PyTorch's order.
        self._unit_names = [self._names(layer, direction)
                            for layer in range(self.num_layers)
                            for direction in range(self._directions)]
        # One generator draws the initial parameters, then every dropout mask.
        self._rng = np.random.default_rng(self.seed)
        self.params = self._initial_params()
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}
        self._saved = None

    # ------------------------------------------------------------------ parameters

    def _names(self, layer, direction):
        """Parameter names of one layer and direction: 4, or 2 without biases."""
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        kinds = _PARAM_KINDS if self.bias else _PARAM_KINDS[:2]
        return tuple(kind + suffix for kind in kinds)

    def _param_shapes(self, layer):
        """Shapes of weight_ih (G*H, D_k), weight_hh (G*H, H), bias_ih, bias_hh (G*H,)."""
        rows = self._gates * self.hidden_size
        return (rows, self._inputs(layer)), (rows, self.hidden_size), (rows,), (rows,)

    def _inputs(self, layer):
        """D_k: the input width of layer k."""
        return self.input_size if layer == 0 else self._directions * self.hidden_size

    def _initial_params(self):
        """PyTorch's default: every parameter uniform in [-1/sqrt(H), 1/sqrt(H)]."""
        bound = 1.0 / np.sqrt(self.hidden_size)
        params = {}
        for unit, names in enumerate(self._unit_names):
            for name, shape in zip(names, self._param_shapes(unit // self._directions)):
                params[name] = _aligned_empty(shape, self.dtype)
                params[name][...] = self._rng.uniform(-bound, bound, shape)
        return params

    def _weights(self, unit):
        """(w_ih, w_hh, b_ih, b_hh) of one unit for the functional API; None biases
        without ``bias``."""
        weights = tuple(self.params[name] for name in self._unit_names[unit])
        return weights if self.bias else weights + (None, None)

    def zero_grad(self):
        """Set every gradient to zero, in place (arrays held elsewhere stay valid)."""
        for grad in self.grads.values():
            grad.fill(0)

    def state_dict(self):
        """A copy of ``params``: name -> ndarray, PyTorch's names and shapes."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state_dict):
        """Copy parameters in from ``state_dict``, in place, cast to the layer's dtype.

        Parameters
        ----------
        state_dict : mapping name -> array-like
            Exactly the names of ``params``, each of its shape: NumPy arrays, anything
            ``np.asarray`` converts, or torch tensors (a torch layer's ``state_dict()``).

        Raises
        ------
        ValueError
            A name is missing or unexpected, or an array has the wrong shape. Nothing
            is loaded then.
        TypeError
            ``state_dict`` is not a mapping, or a value does not convert to an array
            of floats.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping name -> array, got "
                            f"{type(state_dict).__name__}")
        missing = [name for name in self.params if name not in state_dict]
        unexpected = [name for name in state_dict if name not in self.params]
        if missing or unexpected:
            problems = ([f"missing keys {missing}"] if missing else []) + (
                [f"unexpected keys {unexpected}"] if unexpected else [])
            raise ValueError(f"state_dict does not match this {type(self).__name__}: "
                             + "; ".join(problems))
        loaded = {}
        for name, target in self.params.items():
            value = state_dict[name]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu()
            loaded[name] = _float_array(f"state_dict[{name!r}]", value, self.dtype,
                                        str(target.shape), target.shape)
        for name, value in loaded.items():
            np.copyto(self.params[name], value)

    def config(self):
        """The constructor's arguments as a JSON-able dict: ``type(layer)(**config)``
        builds an equivalent layer (``load_state_dict`` then gives it the same
        parameters)."""
        return {"input_size": self.input_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "bias": self.bias,
                "batch_first": self.batch_first, "dropout": self.dropout,
                "bidirectional": self.bidirectional, "dtype": self.dtype.name,
                "seed": self.seed}

    # ------------------------------------------------------------------ modes

    def train(self, mode=True):
        """Training mode (``mode=True``): dropout on, forward keeps what backward needs.
        Returns self."""
        self.training = _checks.flag("mode", mode)
        return self

    def eval(self):
        """Inference mode: no dropout, forward keeps nothing. Returns self."""
        return self.train(False)

    # ------------------------------------------------------------------ forward

    def __call__(self, x, state=None, lengths=None):
        """Same as ``forward``."""
        return self.forward(x, state, lengths)

    def forward(self, x, state=None, lengths=None):
        """Run the layers over a batch of sequences.

        Parameters
        ----------
        x : ndarray of shape (T, B, D), or (B, T, D) with ``batch_first``
        state : initial state, or None for zeros
            RNN, GRU: ``h0`` of shape (L*N, B, H); LSTM: a tuple ``(h0, c0)`` of such
            arrays (either may be None). Row ``layer * N + direction``, as in torch.
        lengths : integer ndarray of shape (B,), 0 <= lengths[b] <= T, or None
            Variable-length sequences, as torch's packed sequences: outputs beyond a
            sequence's length are 0 and its final state is the one after its last valid
            step (both directions run over the same valid steps).

        Returns
        -------
        y : ndarray of shape (T, B, N*H), or (B, T, N*H) with ``batch_first``
            The last layer's outputs, the forward direction in ``[..., :H]``.
        state : the final state in ``state``'s form: ``h_n`` of shape (L*N, B, H), or
            ``(h_n, c_n)`` for the LSTM.
        """
        x = self._time_major_input(x)
        steps, batch = x.shape[:2]
        initial = self._state_arrays("state", state, ("h0", "c0"), batch)
        finals = [[] for _ in self._state_names]   # per state name: (B, H) per unit
        caches, masks = [], []
        layer_input = x
        for layer in range(self.num_layers):
            forward = functools.partial(self._forward_unit, layer, layer_input, initial,
                                        lengths)
            outputs = []
            for y, *unit_finals, cache in self._each_direction(forward, layer, steps, batch,
                                                               self.training):
                outputs.append(y)
                caches.append(cache)
                for name_finals, final in zip(finals, unit_finals):
                    name_finals.append(final)
            layer_input = outputs[0] if len(outputs) == 1 else _concatenate_features(outputs)
            mask = self._dropout_mask(layer, layer_input.shape)
            if mask is not None:
                layer_input *= mask
            masks.append(mask)
        self._saved = _Saved(caches, masks, steps, batch) if self.training else None
        y = layer_input.swapaxes(0, 1) if self.batch_first else layer_input
        return y, self._public_state([_stack(name_finals) for name_finals in finals])

    def _forward_unit(self, layer, layer_input, initial, lengths, direction):
        """The functional forward of one layer and direction."""
        unit = layer * self._directions + direction
        return self._forward(layer_input, *(None if s is None else s[unit] for s in initial),
                             *self._weights(unit), lengths=lengths, reverse=bool(direction),
                             training=self.training, **self._cell_options())

    def _backward_unit(self, layer, d_output, d_finals, caches, input_grad, direction):
        """The functional backward of one layer and direction."""
        unit = layer * self._directions + direction
        H = self.hidden_size
        dy = None if d_output is None else d_output[..., direction * H:(direction + 1) * H]
        return self._backward(dy, *(None if d is None else d[unit] for d in d_finals),
                              caches[unit], input_grad=input_grad)

    def _each_direction(self, run, layer, steps, batch, training):
        """``[run(0), run(1)]`` for a bidirectional layer, ``[run(0)]`` otherwise; the
        two directions at once where threads allow (rnnfast._threads.pairs_directions).
        """
        if self._directions == 1:
            return [run(0)]
        if _threads.pairs_directions(steps, batch, self._gates, self._inputs(layer),
                                     self.hidden_size, self.dtype.itemsize, training):
            return _pair.both(lambda: run(0), lambda: run(1))
        return [run(0), run(1)]

    def _cell_options(self):
        """Extra keyword arguments of the functional forward (the RNN's nonlinearity)."""
        return {}

    def _time_major_input(self, x):
        """x as a C-contiguous (T, B, D) array of the layer's dtype."""
        x = _checks._float_array("x", x, self.dtype)
        layout = "(B, T, D)" if self.batch_first else "(T, B, D)"
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x must have shape {layout} with D = input_size = "
                             f"{self.input_size}, got {x.shape}")
        return _pool.copy(x.swapaxes(0, 1)) if self.batch_first else x

    def _state_arrays(self, argument, value, names, batch):
        """The public state form (an array, or a pair for the LSTM) as a tuple with one
        (L*N, B, H) array or None per state name; ``names`` name its parts in errors."""
        count = len(self._state_names)
        if value is None:
            return (None,) * count
        if count == 1:
            parts = (value,)
        elif isinstance(value, (tuple, list)) and len(value) == count:
            parts = tuple(value)
        else:
            raise TypeError(f"{argument} must be None or a tuple ({', '.join(names)}) for "
                            f"{type(self).__name__}, got {type(value).__name__}")
        shape = (self.num_layers * self._directions, batch, self.hidden_size)
        return tuple(_float_array(name, part, self.dtype, "(num_layers*num_directions, B, H)",
                                  shape)
                     for name, part in zip(names, parts))

    def _public_state(self, arrays):
        """A tuple of state arrays in the public form: one array, or (h, c)."""
        return arrays[0] if len(arrays) == 1 else tuple(arrays)

    def _dropout_mask(self, layer, shape):
        """Inverted dropout on a layer's output (T, B, N*H): entries are 0 with
        probability ``dropout``, else 1 / (1 - dropout). None where torch applies no
        dropout: eval mode, dropout 0, the last layer."""
        if not (self.training and self.dropout > 0 and layer < self.num_layers - 1):
            return None
        mask = _pool.empty(shape, self.dtype)
        # one 64-bit key from the layer's generator per mask (rnnfast._dropout)
        key = int(self._rng.integers(0, 2**64, dtype=np.uint64))
        scale = 1.0 / (1.0 - self.dropout) if self.dropout < 1 else 0.0
        _dropout.dropout_mask(mask.reshape(-1), key, self.dropout, scale)
        return mask

    # ------------------------------------------------------------------ backward

    def backward(self, dy, dstate=None, *, input_grad=True):
        """Backpropagation through time for the last forward call (in training mode).

        Adds every parameter's gradient into ``grads``; consumes what forward kept.

        Parameters
        ----------
        dy : ndarray of shape (T, B, N*H) (or (B, T, N*H) with ``batch_first``), or
            None for zeros: dL/dy. Entries beyond a sequence's length are ignored.
        dstate : dL/d(final state) in the form forward returned it, or None for
            zeros: ``dh_n`` (L*N, B, H), or ``(dh_n, dc_n)`` for the LSTM (either may
            be None).
        input_grad : False skips dL/dx, as PyTorch does for an input that does not
            require grad (data, one-hot characters): the first layer's ``dG W_ih``
            over all steps is not computed and ``dx`` is None.

        Returns
        -------
        dx : ndarray with x's shape and layout: dL/dx (None with ``input_grad=False``)
        dstate : dL/d(initial state): ``dh0`` (L*N, B, H), or ``(dh0, dc0)`` for the
            LSTM.
        """
        saved = self._saved
        if saved is None:
            raise ValueError(f"{type(self).__name__}.backward needs a forward call in "
                             f"training mode first (after train(); each forward serves "
                             f"one backward)")
        d_output = self._time_major_grad(dy, saved.steps, saved.batch)
        d_finals = self._state_arrays("dstate", dstate, ("dh_n", "dc_n"), saved.batch)
        input_grad = _checks.flag("input_grad", input_grad)
        self._saved = None
        units = self.num_layers * self._directions
        d_initial = [np.empty((units, saved.batch, self.hidden_size), self.dtype)
                     for _ in self._state_names]
        for layer in reversed(range(self.num_layers)):
            # the layers above the first need their dx: the gradient of the layer below
            backward = functools.partial(self._backward_unit, layer, d_output, d_finals,
                                         saved.caches, input_grad or layer > 0)
            d_input = None
            grads = self._each_direction(backward, layer, saved.steps, saved.batch, True)
            for direction, (dx, *d_states, dw_ih, dw_hh, db_ih, db_hh) in enumerate(grads):
                unit = layer * self._directions + direction
                # zip stops after the weights when the layer has no biases
                for name, grad in zip(self._unit_names[unit], (dw_ih, dw_hh, db_ih, db_hh)):
                    self.grads[name] += grad
                for d_initial_name, d_state in zip(d_initial, d_states):
                    d_initial_name[unit] = d_state
                # both directions read the same input: their gradients add
                if dx is not None:
                    d_input = dx if d_input is None else np.add(d_input, dx, out=d_input)
            mask = saved.masks[layer - 1] if layer > 0 else None
            if mask is not None:
                d_input *= mask
            d_output = d_input
        dx = d_output.swapaxes(0, 1) if self.batch_first and d_output is not None else d_output
        return dx, self._public_state(d_initial)

    def _time_major_grad(self, dy, steps, batch):
        """dy as a (T, B, N*H) array (a view of it with ``batch_first``), or None."""
        width = self._directions * self.hidden_size
        if self.batch_first:
            dy = _float_array("dy", dy, self.dtype, "(B, T, num_directions*H)",
                              (batch, steps, width))
            return None if dy is None else dy.swapaxes(0, 1)
        return _float_array("dy", dy, self.dtype, "(T, B, num_directions*H)",
                            (steps, batch, width))

    # ------------------------------------------------------------------ streaming

    def stream(self, batch_size=1):
        """A step-by-step inference runner that keeps the state between calls.

        ``s = layer.stream(B)``; ``y_t = s(x_t)`` with x_t (B, D) returns (B, H), the
        last layer's output for this step, a new array; ``s(x_t, out)`` writes it
        into ``out`` instead (an aligned, C-contiguous, writeable (B, H) ndarray of
        the layer's dtype, which may be x_t itself) and returns ``out``, so that a
        loop of steps allocates nothing. ``s.lookup(i, out=None)`` steps a stream of
        batch 1 whose input is the one-hot row with its 1 at ``i``, reading column
        ``i`` of the first layer's W_ih alone (the same result wherever W_ih is
        finite; see ``rnnfast._stream.StepRunner.lookup``). ``s.state`` is the current
        state (h of shape (L, B, H), or (h, c) for the LSTM); ``s.reset()`` sets it to
        zeros and ``s.reset(state)`` to ``state`` in that form.
        No dropout (streaming is inference). The stream reads ``params`` at every
        call, so in-place updates and replaced arrays both take effect.

        Raises
        ------
        ValueError
            For a bidirectional layer: its backward direction needs the future inputs.
        """
        if self.bidirectional:
            raise ValueError(f"stream() cannot run a bidirectional {type(self).__name__}: "
                             f"its backward direction needs the inputs of future steps")
        return _Stream(self, _positive_int("batch_size", batch_size))


# ----------------------------------------------------------------------------- streams

class _Stream(_stream.StepRunner):
    """Step-by-step inference for a unidirectional layer (see ``stream``).

    A call is ``rnnfast._stream.StepRunner.__call__`` itself, with no Python frame in
    between, built for the cost of one call from Python: the runner holds the state
    ``_states`` (S, L, B, H), S = 1 (h) or 2 (h, c), runs every layer's step straight
    on the arrays in ``params`` and returns a new (B, H) array or fills ``out``. It
    checks the input with a few C comparisons and hands anything else to
    ``_checked_input``; whenever ``params`` holds an array it has not seen, it asks
    ``_check_params`` to validate the arrays before it uses them.
    """

    def __init__(self, layer, batch_size):
        L, B, H = layer.num_layers, batch_size, layer.hidden_size
        self._layer = layer
        self._dtype = layer.dtype
        self._input_shape = (B, layer.input_size)
        self._states = np.zeros((len(layer._state_names), L, B, H), layer.dtype)
        names = []
        for unit_names in layer._unit_names:
            names += list(unit_names) + [None] * (4 - len(unit_names))   # no biases
        super().__init__(layer._stream_kind(), layer.params, names, self._check_params,
                         self._checked_input, self._states, layer.input_size, H)

    def _checked_input(self, x_t):
        if x_t is None:
            raise TypeError("x_t must be an array of floats of shape (B, D), got None")
        x_t = _float_array("x_t", x_t, self._dtype, "(B, D)", self._input_shape)
        return x_t if x_t.flags.aligned else x_t.copy()

    def _check_params(self, arrays):
        """ValueError unless ``arrays`` (4 per layer, None for a missing bias) are the
        C-contiguous arrays of the layer's dtype and shapes."""
        layer = self._layer
        for k in range(layer.num_layers):
            for name, array, shape in zip(layer._unit_names[k], arrays[4 * k:4 * k + 4],
                                          layer._param_shapes(k)):
                if not (isinstance(array, np.ndarray) and array.dtype == self._dtype
                        and array.shape == shape and array.flags.c_contiguous
                        and array.flags.aligned):
                    raise ValueError(
                        f"stream: params[{name!r}] must be an aligned, C-contiguous "
                        f"{self._dtype.name} "
                        f"ndarray of shape {shape}, got {type(array).__name__} "
                        f"{getattr(array, 'dtype', '')} {getattr(array, 'shape', '')}")

    @property
    def state(self):
        """The current state, a copy: h (L, B, H), or (h, c) for the LSTM."""
        return self._layer._public_state([states.copy() for states in self._states])

    def reset(self, state=None):
        """Start over from zeros, or from ``state``: h (L, B, H), or (h, c) for the LSTM
        (either may be None for zeros)."""
        names = self._layer._state_names
        if state is None:
            state = (None,) * len(names)
        elif len(names) == 1:
            state = (state,)
        elif not (isinstance(state, (tuple, list)) and len(state) == len(names)):
            raise TypeError(f"state must be None or a tuple (h, c) for LSTM, got "
                            f"{type(state).__name__}")
        shape = (self._layer.num_layers, self._input_shape[0], self._layer.hidden_size)
        arrays = [_float_array(name, part, self._dtype, "(num_layers, B, H)", shape)
                  for name, part in zip(names, state)]
        for states, array in zip(self._states, arrays):
            states[...] = 0 if array is None else array


# ----------------------------------------------------------------------------- cells

class RNN(_RecurrentLayer):
    """Elman RNN layers, ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``,
    as ``torch.nn.RNN``.

    Parameters
    ----------
    input_size : int, D
    hidden_size : int, H
    num_layers : int, L: stacked layers, each reading the outputs of the one below
    nonlinearity : "tanh" or "relu"
    bias : bool, whether there are bias parameters
    batch_first : bool, x and y are (B, T, ·) instead of (T, B, ·); states are not
        affected
    dropout : float in [0, 1], inverted dropout on each layer's outputs but the
        last, in training mode
    bidirectional : bool, a second direction reads each sequence backwards; outputs
        concatenate on the last axis, forward direction first
    dtype : float32 or float64
    seed : int or None, seeds the initial parameters and the dropout masks
    """

    _forward = staticmethod(functional.rnn_forward)
    _backward = staticmethod(functional.rnn_backward)
    _gates = 1

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=np.float32,
                 seed=None):
        if nonlinearity not in _checks.NONLINEARITIES:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed)

    def _cell_options(self):
        return {"nonlinearity": self.nonlinearity}

    def _stream_kind(self):
        return (_stream.CellKind.RNN_RELU if self.nonlinearity == "relu"
                else _stream.CellKind.RNN_TANH)

    def config(self):
        return {**super().config(), "nonlinearity": self.nonlinearity}


class LSTM(_RecurrentLayer):
    """LSTM layers, gates ``i, f, g, o``, as ``torch.nn.LSTM`` (without ``proj_size``).

    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``. Arguments as ``RNN``'s,
    without ``nonlinearity``; states are pairs ``(h, c)``.
    """

    _forward = staticmethod(functional.lstm_forward)
    _backward = staticmethod(functional.lstm_backward)
    _gates = 4
    _state_names = ("h", "c")

    def _stream_kind(self):
        return _stream.CellKind.LSTM


class GRU(_RecurrentLayer):
    """GRU layers, gates ``r, z, n``, as ``torch.nn.GRU``.

    ``n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))``, ``h_t = (1 - z) n + z h_{t-1}``.
    Arguments as ``RNN``'s, without ``nonlinearity``.
    """

    _forward = staticmethod(functional.gru_forward)
    _backward = staticmethod(functional.gru_backward)
    _gates = 3

    def _stream_kind(self):
        return _stream.CellKind.GRU
