"""rnnfast.layers: RNN, LSTM and GRU layers against torch.nn and their own contracts.

The PyTorch comparisons load one torch layer's ``state_dict()`` into the rnnfast layer,
run the same input through both, and compare the outputs, the final states and every
gradient of the scalar loss

    L = sum(y * dy) + sum(h_n * dh_n) (+ sum(c_n * dc_n) for the LSTM)

with random dy and dh_n (dc_n): dx, the initial-state gradients and each parameter's
gradient by name (torch's ``.grad`` against ``layer.grads``).

Shape legend: T = steps, B = batch, D = input features, H = hidden units,
L = num_layers, N = directions.
"""

import json
import os

import numpy as np
import pytest

from conftest import DTYPES, assert_close, five_point_derivative
from rnnfast.layers import GRU, LSTM, RNN

if os.environ.get("RNNFAST_REQUIRE_TORCH") == "1":
    import torch  # CI sets this: the equivalence tests must run there, not skip
else:
    try:
        import torch
    except ImportError:
        torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

# variant -> (rnnfast class, torch.nn class name, extra constructor arguments)
VARIANTS = {"rnn_tanh": (RNN, "RNN", {"nonlinearity": "tanh"}),
            "rnn_relu": (RNN, "RNN", {"nonlinearity": "relu"}),
            "lstm": (LSTM, "LSTM", {}),
            "gru": (GRU, "GRU", {})}
CLASSES = (RNN, LSTM, GRU)
STATE_NAMES = {RNN: ("h",), GRU: ("h",), LSTM: ("h", "c")}
FD_STEP = 1e-3   # five-point differences in float64, as in test_gradcheck.py
FD_RTOL = 1e-7


def dtype_id(dtype):
    return np.dtype(dtype).name


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    """One torch thread: the shapes are tiny (see test_torch_equivalence.py)."""
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- helpers

def public_state(arrays):
    """A tuple of state arrays in the layers' form: None, one array, or (h, c)."""
    if not arrays:
        return None
    return arrays[0] if len(arrays) == 1 else tuple(arrays)


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def make_torch_layer(variant, D, H, dtype, **kwargs):
    _, torch_name, extra = VARIANTS[variant]
    torch_dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
    return getattr(torch.nn, torch_name)(D, H, dtype=torch_dtype[np.dtype(dtype)],
                                         **extra, **kwargs)


def torch_results(torch_layer, x, states, lengths, dy, dstates):
    """torch's outputs and gradients of L; keys as ``rnnfast_results``.

    x in the layer's layout; states: a tuple of (L*N, B, H) arrays, empty for torch's
    zero default; lengths (B,) or None; dy like y; dstates like states.
    """
    batch_first = torch_layer.batch_first
    steps = x.shape[1] if batch_first else x.shape[0]
    x_leaf = torch.tensor(x, requires_grad=True)
    state_leaves = [torch.tensor(state, requires_grad=True) for state in states]
    hx = None if not state_leaves else (
        state_leaves[0] if len(state_leaves) == 1 else tuple(state_leaves))
    if lengths is None:
        y, final = torch_layer(x_leaf, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x_leaf, torch.as_tensor(lengths, dtype=torch.int64), batch_first=batch_first,
            enforce_sorted=False)
        packed_y, final = torch_layer(packed, hx)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_y, batch_first=batch_first,
                                                      total_length=steps)
    finals = as_tuple(final)
    loss = (y * torch.from_numpy(dy)).sum()
    for final_state, dstate in zip(finals, dstates):
        loss = loss + (final_state * torch.from_numpy(dstate)).sum()
    torch_layer.zero_grad()
    loss.backward()
    results = {"y": y, "dx": x_leaf.grad}
    for name, final_state in zip(("h_n", "c_n"), finals):
        results[name] = final_state
    for name, leaf in zip(("dh0", "dc0"), state_leaves):
        results[name] = leaf.grad
    for name, parameter in torch_layer.named_parameters():
        results[f"grads[{name}]"] = parameter.grad
    return {name: value.detach().numpy() for name, value in results.items()}


def rnnfast_results(layer, x, states, lengths, dy, dstates):
    """The layer's forward and backward on the same problem; keys as ``torch_results``."""
    layer.zero_grad()
    y, final = layer(x, public_state(states), lengths=lengths)
    dx, dinitial = layer.backward(dy, public_state(dstates))
    results = {"y": y, "dx": dx}
    for name, final_state in zip(("h_n", "c_n"), as_tuple(final)):
        results[name] = final_state
    if states:
        for name, dstate in zip(("dh0", "dc0"), as_tuple(dinitial)):
            results[name] = dstate
    for name, grad in layer.grads.items():
        results[f"grads[{name}]"] = grad
    return results


def make_problem(layer, T, B, lengths, rng, with_state=True):
    """x (NaN in the padding, which nobody may read), states, dy and dstates."""
    N = 2 if layer.bidirectional else 1
    H = layer.hidden_size
    x = rng.standard_normal((T, B, layer.input_size)).astype(layer.dtype)
    if lengths is not None:
        x[np.arange(T)[:, None] >= lengths[None, :]] = np.nan
    dy = rng.standard_normal((T, B, N * H)).astype(layer.dtype)
    if layer.batch_first:
        x, dy = x.transpose(1, 0, 2).copy(), dy.transpose(1, 0, 2).copy()
    shape = (layer.num_layers * N, B, H)
    count = len(STATE_NAMES[type(layer)])
    states = tuple(0.5 * rng.standard_normal(shape).astype(layer.dtype)
                   for _ in range(count)) if with_state else ()
    dstates = tuple(rng.standard_normal(shape).astype(layer.dtype) for _ in range(count))
    return x, states, dy, dstates


def assert_matches_torch(variant, dtype, rng, T=5, B=3, D=4, H=3, lengths=None,
                         with_state=True, **layer_kwargs):
    """Build both layers (torch's weights loaded into ours) and compare everything."""
    torch.manual_seed(int(rng.integers(2**31)))
    torch_layer = make_torch_layer(variant, D, H, dtype, **layer_kwargs)
    cls, _, extra = VARIANTS[variant]
    layer = cls(D, H, dtype=dtype, **extra, **layer_kwargs)
    layer.load_state_dict(torch_layer.state_dict())
    x, states, dy, dstates = make_problem(layer, T, B, lengths, rng, with_state)

    theirs = torch_results(torch_layer, x, states, lengths, dy, dstates)
    ours = rnnfast_results(layer, x, states, lengths, dy, dstates)

    state_names = STATE_NAMES[cls]
    expected = ({"y", "dx"} | {f"{name}_n" for name in state_names}
                | {f"grads[{name}]" for name in layer.params})
    if with_state:
        expected |= {f"d{name}0" for name in state_names}
    assert set(theirs) == expected, "torch produced other tensors than expected"
    for name, value in theirs.items():
        assert_close(ours[name], value, dtype, name=name)


# ----------------------------------------------------------------------------- vs torch

INPUT_CASES = ("time_major", "time_major+lengths", "batch_first", "batch_first+lengths")


@needs_torch
@pytest.mark.parametrize("inputs", INPUT_CASES)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3], ids=lambda n: f"L{n}")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_torch(variant, dtype, num_layers, bidirectional, inputs, rng):
    """Outputs, final states, dx, dh0 (dc0) and every parameter gradient."""
    T, B = 5, 3
    lengths = None
    if inputs.endswith("+lengths"):
        lengths = rng.integers(1, T + 1, size=B)   # torch rejects length 0
        lengths[0] = T
        lengths[-1] = 1
    assert_matches_torch(variant, dtype, rng, T=T, B=B, lengths=lengths,
                         num_layers=num_layers, bidirectional=bidirectional,
                         batch_first=inputs.startswith("batch_first"))


@needs_torch
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_torch_without_bias_or_initial_state(variant, rng):
    """bias=False has no bias entries; state=None is torch's hx=None (zeros)."""
    assert_matches_torch(variant, np.float64, rng, num_layers=2, bidirectional=True,
                         bias=False, lengths=np.array([5, 2, 4]))
    assert_matches_torch(variant, np.float64, rng, num_layers=2, with_state=False)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_weights_round_trip_torch_rnnfast_torch(variant, dtype, rng):
    """torch -> rnnfast -> torch: identical parameters and identical outputs."""
    torch.manual_seed(3)
    first = make_torch_layer(variant, 4, 5, dtype, num_layers=2, bidirectional=True)
    cls, _, extra = VARIANTS[variant]
    layer = cls(4, 5, num_layers=2, bidirectional=True, dtype=dtype, **extra)
    layer.load_state_dict(first.state_dict())
    second = make_torch_layer(variant, 4, 5, dtype, num_layers=2, bidirectional=True)
    second.load_state_dict({name: torch.from_numpy(value)
                            for name, value in layer.state_dict().items()})

    x = torch.from_numpy(rng.standard_normal((6, 2, 4)).astype(dtype))
    with torch.no_grad():
        y_first, _ = first(x)
        y_second, _ = second(x)
    assert torch.equal(y_first, y_second)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name
    assert_close(layer.eval()(x.numpy())[0], y_first.numpy(), dtype, name="y")


# ----------------------------------------------------------------------------- dropout

def test_dropout_gradients_match_finite_differences(rng):
    """Backward reuses forward's masks: dx and parameter gradients of a 3-layer
    bidirectional LSTM with dropout 0.5 against five-point differences. A fresh layer
    from the same seed draws the same parameters and then the same masks, so each
    evaluation of L sees the masks the analytic gradient was computed with."""
    T, B, D, H = 4, 2, 3, 2

    def fresh_layer():
        return LSTM(D, H, num_layers=3, dropout=0.5, bidirectional=True,
                    dtype=np.float64, seed=11)

    layer = fresh_layer()
    x, _, dy, (dh, dc) = make_problem(layer, T, B, None, rng, with_state=False)
    y, _ = layer(x)
    assert np.any(y != fresh_layer().eval()(x)[0]), "dropout had no effect"
    dx, _ = layer.backward(dy, (dh, dc))

    probe = fresh_layer()  # perturbed in place; each evaluation loads it into a fresh layer

    def loss():
        fresh = fresh_layer()
        fresh.load_state_dict(probe.params)
        y, (h_n, c_n) = fresh(x)
        return np.sum(y * dy) + np.sum(h_n * dh) + np.sum(c_n * dc)

    for name in ("weight_ih_l0", "weight_hh_l1_reverse", "bias_ih_l1", "weight_ih_l2"):
        indices = [tuple(rng.integers(0, n) for n in probe.params[name].shape)
                   for _ in range(3)]
        numeric = [five_point_derivative(loss, probe.params[name], i, FD_STEP) for i in indices]
        analytic = [layer.grads[name][i] for i in indices]
        assert_close(analytic, numeric, np.float64, name=f"grads[{name}]", rtol=FD_RTOL)
    indices = [tuple(rng.integers(0, n) for n in x.shape) for _ in range(6)]
    numeric = [five_point_derivative(loss, x, i, FD_STEP) for i in indices]
    assert_close([dx[i] for i in indices], numeric, np.float64, name="dx", rtol=FD_RTOL)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_dropout_masks_are_seeded_fresh_per_call_and_off_in_eval(cls, rng):
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    layer = cls(4, 6, num_layers=2, dropout=0.3, seed=5)
    y_first, _ = layer(x)
    y_second, _ = layer(x)
    assert not np.array_equal(y_first, y_second), "each forward draws a new mask"
    np.testing.assert_array_equal(cls(4, 6, num_layers=2, dropout=0.3, seed=5)(x)[0],
                                  y_first)

    without_dropout = cls(4, 6, num_layers=2, seed=5)
    np.testing.assert_array_equal(layer.eval()(x)[0], without_dropout(x)[0])

    # dropout=1 drops the whole output of layer 0 but not the last layer's output.
    dropped = cls(4, 6, num_layers=2, dropout=1.0, seed=5)
    top_alone = cls(6, 6, seed=0)
    top_alone.load_state_dict({name.replace("_l1", "_l0"): value
                               for name, value in dropped.params.items() if "_l1" in name})
    y, _ = dropped(x)
    assert np.any(y)
    assert_close(y, top_alone(np.zeros((5, 3, 6), np.float32))[0], np.float32, name="y")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.05, 0.2, 0.5, 0.9])
def test_dropout_masks_drop_independently_with_probability_p(dtype, p):
    """rnnfast._dropout: each value 0 with probability p, else 1 / (1 - p), exactly;
    the dropped fraction of 2M values within 5 sigma of p, in every block of 64K
    values, and adjacent values (and values 1, 2, 64 and 4096 apart) uncorrelated;
    the same key gives the same mask, another key another one."""
    from rnnfast import _dropout
    n, scale = 2**21, 1.0 / (1.0 - p)
    mask = np.empty(n, dtype)
    _dropout.dropout_mask(mask, 2**64 - 12345, p, scale)
    kept = mask != 0
    assert np.all(mask[kept] == dtype(scale))
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs((1 - kept.mean()) - p) < 5 * sigma
    blocks = 1 - kept.reshape(32, -1).mean(axis=1)
    assert np.all(np.abs(blocks - p) < 5 * np.sqrt(p * (1 - p) / blocks.size))
    dropped = (~kept).astype(np.float64) - p
    for lag in (1, 2, 64, 4096):
        correlation = np.mean(dropped[:-lag] * dropped[lag:]) / (p * (1 - p))
        assert abs(correlation) < 5 / np.sqrt(n - lag), lag
    again, other = np.empty(n, dtype), np.empty(n, dtype)
    _dropout.dropout_mask(again, 2**64 - 12345, p, scale)
    _dropout.dropout_mask(other, 2**64 - 12346, p, scale)
    assert np.array_equal(again, mask) and not np.array_equal(other, mask)


def test_dropout_mask_edges():
    """p = 0 keeps everything, p = 1 drops everything; p outside [0, 1] is refused."""
    from rnnfast import _dropout
    mask = np.empty(1000, np.float32)
    _dropout.dropout_mask(mask, 7, 0.0, 1.0)
    assert np.all(mask == 1)
    _dropout.dropout_mask(mask, 7, 1.0, 0.0)
    assert not mask.any()
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got 1.5"):
        _dropout.dropout_mask(mask, 7, 1.5, 1.0)
    _dropout.dropout_mask(mask[:0], 7, 0.5, 2.0)


def test_dropout_with_one_layer_warns_as_torch():
    with pytest.warns(UserWarning, match="num_layers=1"):
        GRU(3, 4, dropout=0.2)


# ----------------------------------------------------------------------------- modes, grads

@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_eval_keeps_nothing_and_matches_training_outputs(cls, rng):
    layer = cls(3, 4, num_layers=2, bidirectional=True, seed=1)
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    lengths = np.array([6, 3])
    assert layer.training and layer.eval() is layer and not layer.training
    y_eval, state_eval = layer(x, lengths=lengths)
    with pytest.raises(ValueError, match="training mode"):
        layer.backward(np.ones_like(y_eval))
    assert layer.train() is layer and layer.training
    y_train, state_train = layer(x, lengths=lengths)
    np.testing.assert_array_equal(y_eval, y_train)
    for name, eval_value, train_value in zip(STATE_NAMES[cls], as_tuple(state_eval),
                                             as_tuple(state_train)):
        np.testing.assert_array_equal(eval_value, train_value, err_msg=name)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_grads_accumulate_and_zero_grad_zeroes_in_place(cls, rng):
    layer = cls(3, 4, num_layers=2, seed=2, dtype=np.float64)
    x = rng.standard_normal((5, 2, 3))
    dy = rng.standard_normal((5, 2, 4))
    assert all(not np.any(grad) for grad in layer.grads.values())

    layer(x)
    layer.backward(dy)
    once = {name: grad.copy() for name, grad in layer.grads.items()}
    layer(x)
    layer.backward(dy)
    for name, grad in layer.grads.items():
        assert_close(grad, 2 * once[name], np.float64, name=name)

    arrays = dict(layer.grads)
    layer.zero_grad()
    for name, grad in layer.grads.items():
        assert grad is arrays[name] and not np.any(grad), name


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_without_input_grad_dx_is_none_and_the_rest_identical(cls, bidirectional, rng):
    """input_grad=False skips only the first layer's dx: every parameter gradient and
    the initial states' gradients come out bitwise as with it (dropout included)."""
    twins = [cls(3, 5, num_layers=3, dropout=0.3, bidirectional=bidirectional,
                 batch_first=True, seed=4) for _ in range(2)]
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 6, 5 * (1 + bidirectional))).astype(np.float32)
    results = []
    for layer, input_grad in zip(twins, (True, False)):
        layer(x)
        results.append(layer.backward(dy, input_grad=input_grad))
    (dx, dstate), (no_dx, dstate_without) = results
    assert dx.shape == x.shape and no_dx is None
    for name, with_value, without_value in zip(STATE_NAMES[cls], as_tuple(dstate),
                                               as_tuple(dstate_without)):
        np.testing.assert_array_equal(without_value, with_value, err_msg=name)
    for name, grad in twins[0].grads.items():
        np.testing.assert_array_equal(twins[1].grads[name], grad, err_msg=name)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_backward_errors(cls, rng):
    layer = cls(3, 4, num_layers=2, bidirectional=True, batch_first=True, seed=0)
    with pytest.raises(ValueError, match="needs a forward call in training mode"):
        layer.backward(None)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    y, state = layer(x)
    with pytest.raises(ValueError, match=r"dy must have shape \(B, T, num_directions\*H\)"):
        layer.backward(np.ones((5, 2, 8)))
    bad_state = np.ones((2, 2, 4))
    with pytest.raises((ValueError, TypeError), match="dh_n" if cls is not LSTM else "tuple"):
        layer.backward(None, bad_state)
    with pytest.raises(TypeError, match="input_grad must be True or False, got str 'no'"):
        layer.backward(None, input_grad="no")
    dx, dstate = layer.backward(np.ones_like(y), state)  # the errors consumed nothing
    assert dx.shape == x.shape
    for value in as_tuple(dstate):
        assert value.shape == (4, 2, 4)
    with pytest.raises(ValueError, match="each forward serves one backward"):
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_forward_errors(cls, rng):
    layer = cls(3, 4, num_layers=2, seed=0)
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, D\) with D = "
                                         r"input_size = 3, got \(5, 2, 4\)"):
        layer(np.ones((5, 2, 4)))
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        layer(np.ones((5, 2, 3), dtype=int))
    good = np.zeros((2, 2, 4))
    bad = np.zeros((1, 2, 4))
    state = (good, bad) if cls is LSTM else bad
    name = "c0" if cls is LSTM else "h0"
    with pytest.raises(ValueError, match=rf"{name} must have shape "
                                         r"\(num_layers\*num_directions, B, H\)"):
        layer(np.ones((5, 2, 3)), state)
    if cls is LSTM:
        with pytest.raises(TypeError, match=r"state must be None or a tuple \(h0, c0\)"):
            layer(np.ones((5, 2, 3)), good)
    with pytest.raises(ValueError, match="lengths"):
        layer(np.ones((5, 2, 3)), lengths=[6, 1])


# ----------------------------------------------------------------------------- parameters

@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_params_names_shapes_and_initialisation(cls):
    G = {RNN: 1, LSTM: 4, GRU: 3}[cls]
    D, H = 5, 16
    layer = cls(D, H, num_layers=2, bidirectional=True, seed=0)
    expected = {}
    for k in range(2):
        for suffix in ("", "_reverse"):
            expected[f"weight_ih_l{k}{suffix}"] = (G * H, D if k == 0 else 2 * H)
            expected[f"weight_hh_l{k}{suffix}"] = (G * H, H)
            expected[f"bias_ih_l{k}{suffix}"] = (G * H,)
            expected[f"bias_hh_l{k}{suffix}"] = (G * H,)
    assert {name: value.shape for name, value in layer.params.items()} == expected
    assert list(layer.grads) == list(layer.params)

    bound = 1 / np.sqrt(H)
    values = np.concatenate([value.ravel() for value in layer.params.values()])
    assert values.dtype == np.float32
    assert np.all(np.abs(values) <= np.float32(bound))
    assert values.min() < -0.95 * bound and values.max() > 0.95 * bound

    without_bias = cls(D, H, num_layers=2, bidirectional=True, bias=False)
    assert set(without_bias.params) == {n for n in expected if n.startswith("weight")}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_seed_reproduces_parameters(cls):
    def params(seed):
        return cls(3, 4, num_layers=2, seed=seed, dtype=np.float64).params

    same, again, other = params(7), params(7), params(8)
    for name in same:
        np.testing.assert_array_equal(same[name], again[name], err_msg=name)
    assert not np.array_equal(same["weight_hh_l1"], other["weight_hh_l1"])
    assert not np.array_equal(params(None)["weight_hh_l1"], params(None)["weight_hh_l1"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_parameters_start_on_a_cache_line_and_stay_there_when_loaded(cls, dtype):
    """A stream step reads each weight row with 64-byte loads: rows that straddle
    cache lines are slower, so every parameter starts on a 64-byte boundary."""
    layer = cls(5, 7, num_layers=2, bidirectional=True, dtype=dtype)
    for name, value in layer.params.items():
        assert value.ctypes.data % 64 == 0, name
        assert value.flags.c_contiguous and value.flags.writeable, name
        assert value.dtype == dtype and value.shape == layer.grads[name].shape, name
    held = dict(layer.params)
    layer.load_state_dict(cls(5, 7, num_layers=2, bidirectional=True, seed=3).state_dict())
    for name, value in layer.params.items():
        assert value is held[name] and value.ctypes.data % 64 == 0, name


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_state_dict_round_trip_and_errors(cls):
    source = cls(3, 4, num_layers=2, seed=1, dtype=np.float64)
    target = cls(3, 4, num_layers=2, seed=2)
    state = source.state_dict()
    state["weight_ih_l0"][0, 0] = 123.0
    assert source.params["weight_ih_l0"][0, 0] != 123.0, "state_dict must copy"

    held = target.params["weight_hh_l1"]
    target.load_state_dict(state)   # float64 into a float32 layer: cast
    assert target.params["weight_hh_l1"] is held, "loading copies in place"
    for name, value in state.items():
        assert target.params[name].dtype == np.float32
        np.testing.assert_array_equal(target.params[name], value.astype(np.float32))

    before = target.state_dict()
    cases = [({**state, "weight_ih_l2": state["weight_ih_l0"]}, ValueError,
              r"unexpected keys \['weight_ih_l2'\]"),
             ({k: v for k, v in state.items() if k != "bias_hh_l1"}, ValueError,
              r"missing keys \['bias_hh_l1'\]"),
             ({**state, "bias_ih_l0": state["bias_ih_l0"][:-1]}, ValueError,
              r"state_dict\['bias_ih_l0'\] must have shape"),
             ({**state, "weight_hh_l0": state["weight_hh_l0"].astype(int)}, TypeError,
              r"state_dict\['weight_hh_l0'\] must be a floating-point array"),
             (list(state.items()), TypeError, "state_dict must be a mapping")]
    for bad, error, message in cases:
        with pytest.raises(error, match=message):
            target.load_state_dict(bad)
    for name, value in target.params.items():
        np.testing.assert_array_equal(value, before[name], err_msg=f"{name} changed")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_config_rebuilds_an_equivalent_layer(cls):
    extra = {"nonlinearity": "relu"} if cls is RNN else {}
    layer = cls(3, 4, num_layers=2, bias=False, batch_first=True, dropout=0.25,
                bidirectional=True, dtype=np.float64, seed=9, **extra)
    config = json.loads(json.dumps(layer.config()))
    assert config["dtype"] == "float64"
    rebuilt = cls(**config)
    assert rebuilt.config() == layer.config()
    for name, value in layer.params.items():
        np.testing.assert_array_equal(rebuilt.params[name], value, err_msg=name)
        assert rebuilt.params[name].dtype == np.float64


BAD_ARGUMENTS = [({"input_size": 0}, ValueError, "input_size must be >= 1"),
                 ({"hidden_size": 2.5}, TypeError, "hidden_size must be an int"),
                 ({"num_layers": True}, TypeError, "num_layers must be an int"),
                 ({"bias": 1}, TypeError, "bias must be True or False"),
                 ({"batch_first": "yes"}, TypeError, "batch_first must be True or False"),
                 ({"bidirectional": None}, TypeError, "bidirectional must be True or False"),
                 ({"dropout": 1.5}, ValueError, r"dropout must be in \[0, 1\]"),
                 ({"dropout": "0.1"}, TypeError, "dropout must be a number"),
                 ({"dtype": np.float16}, TypeError, "dtype must be float32 or float64"),
                 ({"dtype": "complex"}, TypeError, "dtype must be float32 or float64"),
                 ({"seed": -1}, ValueError, "seed must be >= 0"),
                 ({"seed": 1.0}, TypeError, "seed must be None or an int")]


@pytest.mark.parametrize("kwargs,error,message", BAD_ARGUMENTS,
                         ids=lambda v: next(iter(v)) if isinstance(v, dict) else "")
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_constructor_rejects_bad_arguments(cls, kwargs, error, message):
    arguments = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(error, match=message):
        cls(**arguments)


def test_rnn_rejects_unknown_nonlinearity():
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'gelu'"):
        RNN(3, 4, nonlinearity="gelu")


# ----------------------------------------------------------------------------- streaming

@pytest.mark.parametrize("batch", [1, 8], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stream_equals_full_sequence_forward(variant, dtype, batch, rng):
    """Step by step, from a given state, as the whole sequence in eval mode; B = 8 runs
    the kernels' batch split."""
    cls, _, extra = VARIANTS[variant]
    layer = cls(3, 5, num_layers=3, dropout=0.5, batch_first=True, dtype=dtype, seed=4,
                **extra)
    x = rng.standard_normal((batch, 7, 3)).astype(dtype)
    initial = tuple(rng.standard_normal((3, batch, 5)).astype(dtype)
                    for _ in STATE_NAMES[cls])
    y, final = layer.eval()(x, public_state(initial))

    stream = layer.train().stream(batch)   # streams never drop out, whatever the mode
    stream.reset(public_state(initial))
    steps = np.stack([stream(x[:, t]) for t in range(7)], axis=1)
    assert_close(steps, y, dtype, name="y")
    for name, ours, expected in zip(STATE_NAMES[cls], as_tuple(stream.state), as_tuple(final)):
        assert_close(ours, expected, dtype, name=name)

    stream.reset()
    for value in as_tuple(stream.state):
        assert value.shape == (3, batch, 5) and not np.any(value)
    y_zero, _ = layer.eval()(x)
    assert_close(np.stack([stream(x[:, t]) for t in range(7)], axis=1), y_zero, dtype,
                 name="y after reset")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stream_without_biases_and_with_a_large_batch(variant, dtype, rng):
    """Layers without biases, and a batch big enough for the stream to release the GIL
    during its steps: still the whole sequence in eval mode, step by step."""
    cls, _, extra = VARIANTS[variant]
    for batch, hidden, bias in ((2, 6, False), (48, 40, True)):
        layer = cls(4, hidden, num_layers=2, bias=bias, dtype=dtype, seed=3, **extra).eval()
        x = rng.standard_normal((5, batch, 4)).astype(dtype)
        y, _ = layer(x)
        stream = layer.stream(batch)
        assert_close(np.stack([stream(x[t]) for t in range(5)]), y, dtype,
                     name=f"y (B={batch}, bias={bias})")


def test_stream_takes_misaligned_and_strided_inputs(rng):
    layer = LSTM(3, 4, seed=1).eval()
    x = rng.standard_normal((2, 3)).astype(np.float32)
    expected = layer.stream(2)(x)
    buffer = np.zeros(2 * 3 * 4 + 1, np.uint8)
    misaligned = buffer[1:].view(np.float32).reshape(2, 3)
    misaligned[...] = x
    assert not misaligned.flags.aligned
    np.testing.assert_array_equal(layer.stream(2)(misaligned), expected)
    strided = np.zeros((2, 6), np.float32)
    strided[:, ::2] = x
    np.testing.assert_array_equal(layer.stream(2)(strided[:, ::2]), expected)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_stream_inputs_and_parameter_updates(cls, rng):
    layer = cls(3, 4, num_layers=2, bias=False, seed=0).eval()
    stream = layer.stream(2)
    x = rng.standard_normal((2, 3))
    as_float32 = stream(x.astype(np.float32))
    stream.reset()
    np.testing.assert_array_equal(stream(x), as_float32)    # float64 input is cast
    stream.reset()
    wide = np.repeat(x.astype(np.float32), 2, axis=1)[:, ::2]  # not contiguous
    np.testing.assert_array_equal(stream(wide), as_float32)
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, D\) = \(2, 3\)"):
        stream(np.ones((1, 3), np.float32))
    with pytest.raises(TypeError, match="x_t must be a floating-point array"):
        stream(np.ones((2, 3), int))

    # In-place loads and replaced arrays both reach the stream.
    other = cls(3, 4, num_layers=2, bias=False, seed=1).eval()
    layer.load_state_dict(other.state_dict())
    stream.reset()
    assert_close(stream(x), other(x[None])[0][0], np.float32, name="after load_state_dict")
    layer.params["weight_hh_l1"] = np.zeros_like(layer.params["weight_hh_l1"])
    other.params["weight_hh_l1"][...] = 0
    stream.reset()
    assert_close(stream(x), other(x[None])[0][0], np.float32, name="after replacing")
    layer.params["weight_hh_l1"] = np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match=r"params\['weight_hh_l1'\] must be an aligned, C-contiguous"):
        stream(x)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stream_writes_into_out(variant, dtype, rng):
    """``stream(x_t, out)`` writes the step's h into ``out`` and returns it: the same
    values as a stream that returns new arrays, out reused at every step, also where
    out is x_t itself (D = H) and where the steps share the cores (H = 128)."""
    cls, _, extra = VARIANTS[variant]
    for batch, size in ((3, 6), (1, 128)):
        layer = cls(size, size, num_layers=2, dtype=dtype, seed=2, **extra).eval()
        x = rng.standard_normal((6, batch, size)).astype(dtype)
        fresh, into, in_place = layer.stream(batch), layer.stream(batch), layer.stream(batch)
        out = np.full((batch, size), np.nan, dtype)
        for t in range(6):
            expected = fresh(x[t])
            assert into(x[t], out) is out
            np.testing.assert_array_equal(out, expected)
            x_t = x[t].copy()
            assert in_place(x_t, out=x_t) is x_t
            np.testing.assert_array_equal(x_t, expected)


def test_stream_rejects_a_bad_out(rng):
    layer = GRU(3, 4, seed=0).eval()
    stream = layer.stream(2)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    expected = layer.stream(2)(x)
    cases = [
        ([[0.0] * 4] * 2, TypeError, r"out must be None or a float32 ndarray of shape "
                                     r"\(B, H\) = \(2, 4\), got list"),
        (np.zeros((2, 4)), TypeError, "out must have dtype float32, got float64"),
        (np.zeros((2, 5), np.float32), ValueError, r"out must have shape \(B, H\) = \(2, 4\), "
                                                   r"got \(2, 5\)"),
        (np.zeros(8, np.float32), ValueError, r"out must have shape .* got \(8,\)"),
        (np.zeros((4, 2), np.float32).T, ValueError, "out must be C-contiguous and aligned"),
        (np.zeros(33, np.uint8)[1:].view(np.float32).reshape(2, 4), ValueError,
         "out must be C-contiguous and aligned"),
        (np.ma.zeros((2, 4), np.float32), TypeError, "got MaskedArray"),
    ]
    read_only = np.zeros((2, 4), np.float32)
    read_only.flags.writeable = False
    cases.append((read_only, ValueError, "out must be writeable"))
    for out, error, message in cases:
        with pytest.raises(error, match=message):
            stream(x, out)
    # a refused out leaves the stream's state where it was
    np.testing.assert_array_equal(stream(x), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stream_lookup_is_the_step_of_a_one_hot_row(variant, dtype, rng):
    """``stream.lookup(i, out)``: bitwise the step of the one-hot row x_t = e_i, for
    layers whose steps run in parts (H = 40, 96 with helpers, 192 of two layers) and
    for one that runs transposed (H = 6), with and without biases."""
    cls, _, extra = VARIANTS[variant]
    for D, H, layers, bias in ((11, 40, 1, True), (95, 96, 2, False), (60, 192, 2, True),
                               (9, 6, 3, True)):
        layer = cls(D, H, num_layers=layers, bias=bias, dtype=dtype, seed=5, **extra).eval()
        stepped, looked_up = layer.stream(1), layer.stream(1)
        out = np.full((1, H), np.nan, dtype)
        for index in rng.integers(0, D, 12):
            one_hot = np.zeros((1, D), dtype)
            one_hot[0, index] = 1
            expected = stepped(one_hot)
            assert looked_up.lookup(np.int64(index) if index % 2 else int(index), out) is out
            np.testing.assert_array_equal(out, expected, err_msg=f"D={D}, H={H}")
            np.testing.assert_array_equal(looked_up.lookup(int(index)),
                                          stepped(one_hot), err_msg="new array")
        for ours, theirs in zip(as_tuple(looked_up.state), as_tuple(stepped.state)):
            np.testing.assert_array_equal(ours, theirs)


def test_stream_lookup_reads_the_column_alone_and_refuses_bad_arguments():
    layer = LSTM(5, 40, seed=0).eval()
    stream = layer.stream(1)
    expected = layer.stream(1)(np.eye(5, dtype=np.float32)[[3]])
    layer.params["weight_ih_l0"][:, 1] = np.nan    # a one-hot product would be NaN
    np.testing.assert_array_equal(stream.lookup(3), expected)
    for index, error, message in [(5, ValueError, r"index must be in \[0, 5\), got 5"),
                                  (-1, ValueError, r"index must be in \[0, 5\), got -1"),
                                  (2.0, TypeError, "index must be an integer, got float"),
                                  (True, TypeError, "index must be an integer, got bool"),
                                  (None, TypeError, "index must be an integer")]:
        with pytest.raises(error, match=message):
            stream.lookup(index)
    with pytest.raises(ValueError, match="out must have shape"):
        stream.lookup(0, np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="lookup\\(\\) steps a stream of batch 1, got batch 2"):
        layer.stream(2).lookup(0)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_stream_rejects_bidirectional_and_bad_batch_size(cls):
    with pytest.raises(ValueError, match="cannot run a bidirectional"):
        cls(3, 4, bidirectional=True).stream()
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        cls(3, 4).stream(0)
