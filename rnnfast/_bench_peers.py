"""What the benchmark times: rnnfast, its NumPy reference and the peers PyTorch, JAX
and ONNX Runtime, each running one cell with the same weights on the same inputs.

Shape legend: T = steps, B = batch, D = input features, H = hidden units, G = stacked
gates (RNN 1, LSTM 4, GRU 3).

A *problem* (:func:`make_problem`) holds the inputs, initial states, parameters in
PyTorch's layout and gate order, and the output gradient ``dy``. Each implementation
turns it into a :class:`Runner` for whole sequences:

* ``infer()``: the forward pass alone, returning ``y`` (T, B, H);
* ``train()``: forward and backpropagation through time from ``dy`` (``dh_T = 0``):
  every parameter gradient, ``dx`` and the initial-state gradients;
* ``reset()``, untimed, before each ``train()`` (drops PyTorch's accumulated ``.grad``);
* ``gradients()``, untimed: the gradients ``train()`` computes, as a dict with
  rnnfast's names (``dx``, ``dh0``, ``dc0``, ``dw_ih``, ``dw_hh``, ``db_ih``, ``db_hh``),
  for checking the implementations against each other;

and into a stream (:func:`stream_callable`): ``run()`` feeds the T steps of ``x`` (B = 1)
one call each from Python, the state carried from call to call, and returns the T
outputs (1, H).

The peers, each imported on first use (:func:`import_peer`), never at module import:

* PyTorch: ``torch.nn.RNN`` / ``LSTM`` / ``GRU``; inference under
  ``torch.inference_mode()``; training ``y.backward(dy)`` with ``x`` and the initial
  states requiring grad; the stream calls the module on one step, ``module(x_t, state)``.
* JAX: the cell in a jit-compiled ``lax.scan``, the input projection of all steps one
  matmul before the scan (as rnnfast does); training is ``jax.grad`` of
  ``sum(y * dy)`` with respect to the parameters, ``x`` and the initial states, jitted
  whole; the stream calls a jitted one-step function. JAX dispatches asynchronously,
  so every call waits for its result (``block_until_ready``). XLA sizes its CPU
  thread pool once, when its backend starts (:func:`jax_threads`).
* ONNX Runtime: a model of one ONNX ``RNN`` / ``LSTM`` / ``GRU`` node built with the
  ``onnx`` helper API, the weights as initializers in ONNX's gate orders (LSTM
  ``i o f c``, GRU ``z r h`` with ``linear_before_reset=1``, which is PyTorch's GRU;
  bias ``[Wb; Rb]``); a session with ``intra_op_num_threads`` = the thread count, one
  inter-op thread, sequential execution. Forward only, float32 only (its CPU kernels
  for these operators have no float64). The stream runs a one-step model, feeding
  ``Y_h`` (and ``Y_c``) back as the next call's initial state.
"""

import importlib
import math
import os
from typing import Callable, NamedTuple, Optional

import numpy as np

import rnnfast
import rnnfast.reference

__all__ = ["CELLS", "PEERS", "INSTALL_HINT", "Runner", "make_problem", "import_peer",
           "missing_peer_message", "jax_threads", "peer_runs_at", "runner", "onnx_model",
           "onnx_session", "stream_callable", "as_numpy"]

# cell name -> (functional-API family, nonlinearity, number of stacked gates G)
CELLS = {
    "rnn_tanh": ("rnn", "tanh", 1),
    "rnn_relu": ("rnn", "relu", 1),
    "lstm": ("lstm", None, 4),
    "gru": ("gru", None, 3),
}

PEERS = ("torch", "jax", "onnxruntime")
INSTALL_HINT = 'pip install "rnnfast[bench]"'
# peer -> the modules it needs
_PEER_MODULES = {"torch": ("torch",), "jax": ("jax",), "onnxruntime": ("onnxruntime", "onnx")}

# PyTorch's gate blocks in ONNX's order: LSTM i f g o -> i o f c; GRU r z n -> z r h
ONNX_GATE_ORDER = {"rnn": (0,), "lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}
ONNX_OPERATOR = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
ONNX_OPSET = 17


class Runner(NamedTuple):
    """One implementation's callables for one problem (see the module docstring);
    ``train`` is None where the implementation has no backward."""
    infer: Callable
    train: Optional[Callable]
    reset: Optional[Callable]
    gradients: Optional[Callable]


def make_problem(cell, shape, dtype=np.float32, seed=0):
    """Random inputs, initial states, parameters (PyTorch's initial range) and ``dy``.

    Parameters
    ----------
    cell : str, a key of ``CELLS``
    shape : (T, B, D, H)
    dtype : float32 or float64
    seed : int, seeds the one generator every array is drawn from

    Returns
    -------
    dict with ``cell``, ``shape``, ``x`` (T, B, D), ``h0`` (B, H), ``c0`` (B, H) for the
    LSTM else None, ``w_ih`` (G*H, D), ``w_hh`` (G*H, H), ``b_ih``, ``b_hh`` (G*H,) and
    ``dy`` (T, B, H).
    """
    _, _, gates = CELLS[cell]
    T, B, D, H = shape
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(H)

    def uniform(*dims):
        return rng.uniform(-bound, bound, dims).astype(dtype)

    return {
        "cell": cell,
        "shape": tuple(shape),
        "x": rng.standard_normal((T, B, D)).astype(dtype),
        "h0": (0.5 * rng.standard_normal((B, H))).astype(dtype),
        "c0": (0.5 * rng.standard_normal((B, H))).astype(dtype) if cell == "lstm" else None,
        "w_ih": uniform(gates * H, D),
        "w_hh": uniform(gates * H, H),
        "b_ih": uniform(gates * H),
        "b_hh": uniform(gates * H),
        "dy": rng.standard_normal((T, B, H)).astype(dtype),
    }


def _family(problem):
    return CELLS[problem["cell"]][0]


def _initial_states(problem):
    """(h0,) or (h0, c0) for the LSTM, each (B, H)."""
    return (problem["h0"],) if problem["c0"] is None else (problem["h0"], problem["c0"])


def _state_grad_names(problem):
    return ("dh0",) if problem["c0"] is None else ("dh0", "dc0")


def as_numpy(y):
    """A NumPy array of any implementation's output (torch tensor, JAX array, ndarray)."""
    return np.asarray(y.detach() if hasattr(y, "detach") else y)


# ----------------------------------------------------------------------------- peers

_imported = {}
_jax_pool = {}


def import_peer(name):
    """The peer's main module, imported on first use; None where it (or a module it
    needs) is not installed."""
    if name not in _imported:
        try:
            modules = [importlib.import_module(module) for module in _PEER_MODULES[name]]
        except ImportError:
            modules = [None]
        _imported[name] = modules[0]
    return _imported[name]


def missing_peer_message(name):
    """The line telling that a peer is missing and how to install it."""
    needs = " and ".join(_PEER_MODULES[name])
    return f"{name}: {needs} not installed, its columns stay empty ({INSTALL_HINT})"


def _jax_pool_size(threads):
    """The size of the pool XLA makes when :func:`jax_threads` starts it with
    ``threads``: one thread per CPU the starting thread may run on."""
    if not hasattr(os, "sched_setaffinity"):   # not Linux: the affinity stays as it is
        return os.cpu_count()
    return min(threads, len(os.sched_getaffinity(0)))


def jax_threads(threads):
    """Start JAX's CPU backend with a pool of ``threads`` threads (the first call
    decides: XLA sizes the pool once). Returns the pool's size, None without JAX.

    XLA sizes its pool by the CPUs the starting thread may run on, so the calling
    thread's affinity is narrowed to ``threads`` CPUs while the backend starts; then
    every thread of the process gets the full set back (the pool keeps its size).
    Without ``os.sched_setaffinity`` (not Linux) the pool has one thread per CPU.
    """
    jax = import_peer("jax")
    if jax is None:
        return None
    if "size" not in _jax_pool:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_enable_x64", True)  # float64 problems stay float64
        size = _jax_pool_size(threads)
        if not hasattr(os, "sched_setaffinity"):
            jax.devices()
        else:
            allowed = os.sched_getaffinity(0)
            os.sched_setaffinity(0, sorted(allowed)[:size])
            try:
                jax.devices()
            finally:
                for task in os.listdir("/proc/self/task"):
                    os.sched_setaffinity(int(task), allowed)
        _jax_pool["size"] = size
    return _jax_pool["size"]


def peer_runs_at(name, threads):
    """Whether ``name`` is installed and can run with ``threads`` threads (JAX only
    with the pool size its backend started with)."""
    if import_peer(name) is None:
        return False
    return name != "jax" or jax_threads(threads) == _jax_pool_size(threads)


# ----------------------------------------------------------------------------- runners

def runner(name, problem, threads):
    """The :class:`Runner` of implementation ``name`` (``"rnnfast"``, ``"reference"``
    or a peer) for ``problem``; None where it cannot run it (ONNX Runtime in float64)."""
    if name in ("rnnfast", "reference"):
        return _numpy_runner(rnnfast if name == "rnnfast" else rnnfast.reference, problem)
    return {"torch": _torch_runner, "jax": _jax_runner,
            "onnxruntime": _onnx_runner}[name](problem, threads)


def _functional_pair(module, problem):
    """``(forward, backward, options)`` of the functional API for the problem's cell."""
    family, nonlinearity, _ = CELLS[problem["cell"]]
    options = {"nonlinearity": nonlinearity} if family == "rnn" else {}
    return (getattr(module, f"{family}_forward"), getattr(module, f"{family}_backward"),
            options)


def _numpy_runner(module, problem):
    """rnnfast or its reference (same functional API); ``train()`` returns the grads."""
    forward, backward, options = _functional_pair(module, problem)
    p = problem
    params = (p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
    states = _initial_states(p)
    no_final_state_grads = (None,) * len(states)     # dh_T (, dc_T) = 0
    x, dy = p["x"], p["dy"]

    def infer():
        return forward(x, *states, *params, training=False, **options)[0]

    def train():
        cache = forward(x, *states, *params, training=True, **options)[-1]
        return backward(dy, *no_final_state_grads, cache)

    def gradients():
        return dict(train()._asdict())

    return Runner(infer, train, None, gradients)


def _torch_module(torch, problem):
    """``torch.nn.RNN`` / ``LSTM`` / ``GRU`` (D, H) holding the problem's weights."""
    family, nonlinearity, _ = CELLS[problem["cell"]]
    _, _, D, H = problem["shape"]
    if family == "rnn":
        module = torch.nn.RNN(D, H, nonlinearity=nonlinearity)
    else:
        module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[family](D, H)
    module = module.to(torch.float64 if problem["x"].dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for torch_name, name in (("weight_ih_l0", "w_ih"), ("weight_hh_l0", "w_hh"),
                                 ("bias_ih_l0", "b_ih"), ("bias_hh_l0", "b_hh")):
            getattr(module, torch_name).copy_(torch.from_numpy(problem[name]))
    return module


def _torch_runner(problem, threads):
    torch = import_peer("torch")
    module = _torch_module(torch, problem)

    def tensor(a, grad):
        return torch.from_numpy(a.copy()).requires_grad_(grad)

    x, dy = tensor(problem["x"], True), tensor(problem["dy"], False)
    states = [tensor(s[None], True) for s in _initial_states(problem)]   # (1, B, H) each
    hx = tuple(states) if len(states) == 2 else states[0]

    def infer():
        with torch.inference_mode():
            return module(x, hx)[0]

    def train():
        y = module(x, hx)[0]
        y.backward(dy)

    def reset():
        """Drop the gradients (set to None, so backward allocates fresh ones as rnnfast
        does)."""
        module.zero_grad(set_to_none=True)
        for leaf in (x, *states):
            leaf.grad = None

    def gradients():
        reset()
        train()
        grads = {"dx": x.grad}
        grads.update({name: s.grad[0] for name, s in zip(_state_grad_names(problem), states)})
        grads.update({"dw_ih": module.weight_ih_l0.grad, "dw_hh": module.weight_hh_l0.grad,
                      "db_ih": module.bias_ih_l0.grad, "db_hh": module.bias_hh_l0.grad})
        return {name: as_numpy(g) for name, g in grads.items()}

    return Runner(infer, train, reset, gradients)


def _jax_cell(jax, problem):
    """``step(w_hh, b_hh, state, gx_t) -> (state, h)``: one step of the problem's cell,
    ``gx_t = x_t W_ih^T + b_ih`` (B, G*H) given; state (h,) or (h, c), each (B, H)."""
    jnp, sigmoid = jax.numpy, jax.nn.sigmoid
    family, nonlinearity, gates = CELLS[problem["cell"]]
    activation = jax.nn.relu if nonlinearity == "relu" else jnp.tanh

    def step(w_hh, b_hh, state, gx_t):
        h = state[0]
        gh = h @ w_hh.T + b_hh                                   # (B, G*H)
        if family == "rnn":                                      # h' = act(gx + gh)
            h = activation(gx_t + gh)
            return (h,), h
        if family == "lstm":
            i, f, g, o = jnp.split(gx_t + gh, gates, axis=-1)
            c = sigmoid(f) * state[1] + sigmoid(i) * jnp.tanh(g)  # c' = f c + i g
            h = sigmoid(o) * jnp.tanh(c)                         # h' = o tanh(c')
            return (h, c), h
        x_r, x_z, x_n = jnp.split(gx_t, gates, axis=-1)
        h_r, h_z, h_n = jnp.split(gh, gates, axis=-1)
        r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)                              # n = tanh(xn + r hn)
        h = (1 - z) * n + z * h                                  # h' = (1 - z) n + z h
        return (h,), h

    return step


def _jax_forward(jax, problem):
    """``forward(params, x, state) -> (y, final state)`` over a whole sequence."""
    step = _jax_cell(jax, problem)

    def forward(params, x, state):
        w_ih, w_hh, b_ih, b_hh = params
        gx = x @ w_ih.T + b_ih                    # (T, B, G*H): every step at once
        final, y = jax.lax.scan(lambda s, gx_t: step(w_hh, b_hh, s, gx_t), state, gx)
        return y, final

    return forward


def _jax_runner(problem, threads):
    jax = import_peer("jax")
    jax_threads(threads)
    jnp = jax.numpy
    forward = _jax_forward(jax, problem)
    p = problem
    params = tuple(jnp.asarray(p[name]) for name in ("w_ih", "w_hh", "b_ih", "b_hh"))
    x, dy = jnp.asarray(p["x"]), jnp.asarray(p["dy"])
    states = tuple(jnp.asarray(s) for s in _initial_states(p))

    def loss(params, x, states):                  # sum(y * dy): its gradient is BPTT from dy
        return jnp.sum(forward(params, x, states)[0] * dy)

    jit_forward = jax.jit(lambda params, x, states: forward(params, x, states)[0])
    jit_grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))

    def infer():
        return jit_forward(params, x, states).block_until_ready()

    def train():
        return jax.block_until_ready(jit_grad(params, x, states))

    def gradients():
        param_grads, dx, state_grads = train()
        grads = {"dx": dx, **dict(zip(_state_grad_names(p), state_grads)),
                 **dict(zip(("dw_ih", "dw_hh", "db_ih", "db_hh"), param_grads))}
        return {name: as_numpy(g) for name, g in grads.items()}

    return Runner(infer, train, None, gradients)


def _onnx_gates(array, family):
    """Gate blocks of a (G*H, ...) array reordered from PyTorch's order to ONNX's."""
    blocks = np.split(array, len(ONNX_GATE_ORDER[family]), axis=0)
    return np.concatenate([blocks[k] for k in ONNX_GATE_ORDER[family]], axis=0)


def onnx_model(problem, steps):
    """An ONNX model of one recurrent node holding the problem's weights.

    Inputs ``X`` (steps, B, D), ``initial_h`` (1, B, H) and, for the LSTM,
    ``initial_c``; outputs ``Y`` (steps, 1, B, H), ``Y_h`` and ``Y_c`` (1, B, H).
    ONNX's weights are ``W`` (1, G*H, D), ``R`` (1, G*H, H) and ``B`` (1, 2*G*H) =
    [input biases; recurrent biases], gates in ONNX's order.
    """
    onnx = importlib.import_module("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    family, nonlinearity, _ = CELLS[problem["cell"]]
    _, B, D, H = problem["shape"]
    p = problem
    weights = {
        "W": _onnx_gates(p["w_ih"], family)[None],
        "R": _onnx_gates(p["w_hh"], family)[None],
        "B": np.concatenate([_onnx_gates(p["b_ih"], family),
                             _onnx_gates(p["b_hh"], family)])[None],
    }
    float_type = onnx.TensorProto.FLOAT
    state_names = ["initial_h"] + (["initial_c"] if family == "lstm" else [])
    output_names = ["Y", "Y_h"] + (["Y_c"] if family == "lstm" else [])
    attributes = {"hidden_size": H}
    if family == "rnn":
        attributes["activations"] = ["Relu" if nonlinearity == "relu" else "Tanh"]
    if family == "gru":
        attributes["linear_before_reset"] = 1     # r * (h W_hn^T + b_hn), as PyTorch
    node = helper.make_node(ONNX_OPERATOR[family], ["X", "W", "R", "B", ""] + state_names,
                            output_names, **attributes)
    inputs = [helper.make_tensor_value_info("X", float_type, [steps, B, D])]
    inputs += [helper.make_tensor_value_info(name, float_type, [1, B, H])
               for name in state_names]
    outputs = [helper.make_tensor_value_info("Y", float_type, [steps, 1, B, H])]
    outputs += [helper.make_tensor_value_info(name, float_type, [1, B, H])
                for name in output_names[1:]]
    graph = helper.make_graph([node], f"rnnfast_{problem['cell']}", inputs, outputs,
                              [numpy_helper.from_array(a, name) for name, a in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    onnx.checker.check_model(model)
    return model


def onnx_session(model, threads):
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op thread,
    sequential execution."""
    ort = import_peer("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _onnx_runner(problem, threads):
    if problem["x"].dtype != np.float32:
        return None
    T = problem["shape"][0]
    session = onnx_session(onnx_model(problem, T), threads)
    feeds = {"X": problem["x"]}
    feeds.update({name: s[None] for name, s in zip(("initial_h", "initial_c"),
                                                     _initial_states(problem))})

    def infer():
        return session.run(["Y"], feeds)[0][:, 0]     # (T, 1, B, H) -> (T, B, H)

    return Runner(infer, None, None, None)


# ----------------------------------------------------------------------------- streams

def stream_callable(name, problem, threads):
    """``run()`` feeding the problem's T steps (B = 1) one call each through
    implementation ``name``, the state starting at zeros; returns the T outputs.
    None where the implementation cannot run the problem."""
    if problem["shape"][1] != 1:
        raise ValueError(f"stream problems have B = 1, got shape {problem['shape']}")
    return {"rnnfast": _rnnfast_stream, "torch": _torch_stream, "jax": _jax_stream,
            "onnxruntime": _onnx_stream}[name](problem, threads)


def _rnnfast_stream(problem, threads):
    family, nonlinearity, _ = CELLS[problem["cell"]]
    _, _, D, H = problem["shape"]
    options = {"nonlinearity": nonlinearity} if family == "rnn" else {}
    layer = getattr(rnnfast, family.upper())(D, H, dtype=problem["x"].dtype, **options)
    layer.load_state_dict({"weight_ih_l0": problem["w_ih"], "weight_hh_l0": problem["w_hh"],
                           "bias_ih_l0": problem["b_ih"], "bias_hh_l0": problem["b_hh"]})
    stream = layer.stream(1)
    xs = list(problem["x"])                                  # T arrays (1, D)

    def run():
        stream.reset()
        ys = []
        for x_t in xs:
            ys.append(stream(x_t))
        return ys

    return run


def _torch_stream(problem, threads):
    torch = import_peer("torch")
    module = _torch_module(torch, problem)
    xs = list(torch.from_numpy(problem["x"]).unsqueeze(1))   # T tensors (1, 1, D)

    def run():
        state = None                                         # zeros
        ys = []
        with torch.inference_mode():
            for x_t in xs:
                y, state = module(x_t, state)
                ys.append(y)
        return ys

    return run


def _jax_stream(problem, threads):
    jax = import_peer("jax")
    jax_threads(threads)
    jnp = jax.numpy
    step = _jax_cell(jax, problem)
    w_ih, w_hh, b_ih, b_hh = (jnp.asarray(problem[n]) for n in ("w_ih", "w_hh", "b_ih", "b_hh"))

    @jax.jit
    def one_step(x_t, state):                                # x_t (1, D)
        state, h = step(w_hh, b_hh, state, x_t @ w_ih.T + b_ih)
        return h, state

    xs = list(jnp.asarray(problem["x"]))                     # T arrays (1, D)
    zeros = tuple(jnp.zeros_like(jnp.asarray(s)) for s in _initial_states(problem))

    def run():
        state = zeros
        ys = []
        for x_t in xs:
            y, state = one_step(x_t, state)
            ys.append(y.block_until_ready())
        return ys

    return run


def _onnx_stream(problem, threads):
    if problem["x"].dtype != np.float32:
        return None
    session = onnx_session(onnx_model(problem, 1), threads)
    state_names = ["initial_h", "initial_c"][:len(_initial_states(problem))]
    output_names = ["Y_h", "Y_c"][:len(state_names)]
    xs = list(problem["x"][:, None])                         # T arrays (1, 1, D)
    zeros = [np.zeros_like(s[None]) for s in _initial_states(problem)]

    def run():
        state = zeros
        ys = []
        for x_t in xs:
            state = session.run(output_names, {"X": x_t, **dict(zip(state_names, state))})
            ys.append(state[0][0])                           # Y_h (1, 1, H): h_t is y_t
        return ys

    return run
