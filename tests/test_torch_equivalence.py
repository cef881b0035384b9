"""Equivalence with PyTorch: torch.nn.RNN (tanh, relu), LSTM and GRU.

Each test copies one set of NumPy parameters into a torch layer, runs the same input
through both, and compares the outputs, the final states and every gradient of the
scalar loss

    L = sum(y * dy) + sum(h_T * dh) (+ sum(c_T * dc) for the LSTM)

with random dy (T, B, H), dh (B, H), dc (B, H). The torch side gets its gradients from
autograd; rnnfast gets them from ``<cell>_backward(dy, dh, [dc,] cache)``.

Shape legend: T = steps, B = batch, D = input features, H = hidden units.

How each rnnfast option maps onto torch:
- ``lengths``: ``pack_padded_sequence(x, lengths, enforce_sorted=False)`` in, and
  ``pad_packed_sequence(..., total_length=T)`` out. torch rejects zero lengths, so here
  every length is >= 1 (the zero-length case is covered by the gradient checks).
- ``reverse=True``: the backward half of a bidirectional torch layer, i.e. the
  ``*_l0_reverse`` parameters, ``output[..., H:2H]`` and ``h_n[1]``.
"""

import os

import numpy as np
import pytest

from conftest import (CELL_VARIANTS, DTYPES, PARAM_NAMES, assert_close, backward, forward,
                      impl_module, make_inputs, make_params, random_lengths)

if os.environ.get("RNNFAST_REQUIRE_TORCH") == "1":
    import torch  # CI sets this: the equivalence tests must run there, not skip
else:
    torch = pytest.importorskip("torch")

IMPLS = ("rnnfast", "rnnfast.reference")
TORCH_LAYERS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
# rnnfast parameter name -> torch parameter name (layer 0; "_reverse" appended for reverse)
TORCH_PARAM_NAMES = {"w_ih": "weight_ih", "w_hh": "weight_hh",
                     "b_ih": "bias_ih", "b_hh": "bias_hh"}
TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}

# (T, B, D, H): the smallest possible problem, a small one, and a moderate one.
SHAPES = [(1, 1, 1, 1), (5, 4, 3, 6), (16, 8, 12, 32)]
LENGTH_KINDS = ("none", "variable", "all_short")


def shape_id(shape):
    return "T{}B{}D{}H{}".format(*shape)


def lengths_for(kind, T, B, rng):
    """None, or (B,) int64 lengths in [1, T] that torch's packed sequences accept.

    "variable": sequence 0 is full length, the others random in [1, T];
    "all_short": every length in [1, T-1], so no sequence reaches the last step
    (for T = 1 this degenerates to all ones).
    """
    if kind == "none":
        return None
    if kind == "variable":
        return np.maximum(random_lengths(T, B, rng, with_zero=False), 1)
    return rng.integers(1, max(T - 1, 1) + 1, size=B)


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    """One torch thread for this module: the shapes are tiny, and torch's thread barriers
    stall badly when other processes compete for the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- both sides

def torch_results(variant, x, states, params, lengths, reverse, dy, dstates):
    """Run torch's layer on the same problem; returns {name: ndarray} in rnnfast's names.

    x (T, B, D); states: (h0,) or (h0, c0), each (B, H), or None for torch's zero
    default; params: (w_ih, w_hh, b_ih, b_hh) in torch's layout; lengths (B,) or None;
    dy (T, B, H) and dstates ((dh,) or (dh, dc), each (B, H)) weight the loss, None
    meaning zeros. Gradients are keyed "dx", "dh0", "dc0", "dw_ih", ... ("dh0" and
    "dc0" only when states were given).
    """
    cell, kwargs = CELL_VARIANTS[variant]
    T, B, D = x.shape
    H = params[1].shape[1]
    dtype = TORCH_DTYPES[x.dtype]
    directions = 2 if reverse else 1
    direction = 1 if reverse else 0       # index into h_n / the 2H output features
    suffix = "_reverse" if reverse else ""

    layer = TORCH_LAYERS[cell](D, H, bidirectional=reverse, dtype=dtype, **kwargs)
    torch_params = {name: getattr(layer, f"{TORCH_PARAM_NAMES[name]}_l0{suffix}")
                    for name in PARAM_NAMES}
    with torch.no_grad():
        for name, value in zip(PARAM_NAMES, params):
            torch_params[name].copy_(torch.from_numpy(value))

    x_leaf = torch.tensor(x, requires_grad=True)
    state_leaves = None
    hx = None
    if states is not None:
        # torch's initial states are (directions, B, H): ours go in our direction's slot.
        state_leaves = []
        for state in states:
            full = np.zeros((directions, B, H), x.dtype)
            full[direction] = state
            state_leaves.append(torch.tensor(full, requires_grad=True))
        hx = tuple(state_leaves) if cell == "lstm" else state_leaves[0]

    if lengths is None:
        output, final = layer(x_leaf, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x_leaf, torch.as_tensor(lengths, dtype=torch.int64), enforce_sorted=False)
        packed_output, final = layer(packed, hx)
        output, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_output, total_length=T)
    finals = final if cell == "lstm" else (final,)
    y = output[..., direction * H:(direction + 1) * H]              # (T, B, H)
    finals = tuple(state[direction] for state in finals)            # each (B, H)

    # A None incoming gradient is a zero weight in the loss.
    dy = np.zeros((T, B, H), x.dtype) if dy is None else dy
    dstates = tuple(np.zeros((B, H), x.dtype) if d is None else d for d in dstates)
    loss = (y * torch.from_numpy(dy)).sum()
    for state, dstate in zip(finals, dstates):
        loss = loss + (state * torch.from_numpy(dstate)).sum()
    loss.backward()

    results = {"y": y, "h_T": finals[0], "dx": x_leaf.grad}
    if cell == "lstm":
        results["c_T"] = finals[1]
    if state_leaves is not None:
        for name, leaf in zip(("dh0", "dc0"), state_leaves):
            results[name] = leaf.grad[direction]
    for name in PARAM_NAMES:
        results["d" + name] = torch_params[name].grad
    return {name: value.detach().numpy() for name, value in results.items()}


def rnnfast_results(impl, variant, x, states, params, lengths, reverse, dy, dstates):
    """The same problem through ``impl``'s forward and backward; keys as torch_results."""
    cell, kwargs = CELL_VARIANTS[variant]
    module = impl_module(impl)
    if states is None:
        states = (None,) * len(dstates)
    y, finals, cache = forward(module, cell, x, states, params, lengths=lengths,
                               reverse=reverse, **kwargs)
    grads = backward(module, cell, dy, dstates, cache)
    results = {"y": y, "h_T": finals[0]}
    if cell == "lstm":
        results["c_T"] = finals[1]
    results.update(grads._asdict())
    return results


def assert_matches_torch(ours, theirs, dtype, context):
    """Every tensor torch produced, compared by name (outputs, final states, gradients)."""
    for name, expected in theirs.items():
        assert_close(ours[name], expected, dtype, name=f"{name} ({context})")


def make_problem(variant, shape, dtype, rng):
    """Random x, states, params and loss weights dy, dstates for one cell variant."""
    cell, _ = CELL_VARIANTS[variant]
    T, B, D, H = shape
    params = make_params(cell, D, H, dtype, rng)
    x, states = make_inputs(cell, T, B, D, H, dtype, rng)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dstates = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in states)
    return x, states, params, dy, dstates


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("length_kind", LENGTH_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
@pytest.mark.parametrize("impl", IMPLS)
def test_outputs_and_gradients_match_torch(impl, variant, dtype, shape, length_kind,
                                           reverse, rng):
    x, states, params, dy, dstates = make_problem(variant, shape, dtype, rng)
    lengths = lengths_for(length_kind, shape[0], shape[1], rng)

    theirs = torch_results(variant, x, states, params, lengths, reverse, dy, dstates)
    ours = rnnfast_results(impl, variant, x, states, params, lengths, reverse, dy, dstates)

    cell, _ = CELL_VARIANTS[variant]
    # Guard against a vacuous comparison: torch must have produced every gradient.
    assert set(theirs) >= {"y", "h_T", *("d" + n for n in PARAM_NAMES), "dx", "dh0"}
    assert cell != "lstm" or {"c_T", "dc0"} <= set(theirs)
    assert_matches_torch(ours, theirs, dtype, f"lengths={lengths}")


def none_cases():
    """(variant, names of the incoming gradients passed as None)."""
    cases = []
    for variant, (cell, _) in CELL_VARIANTS.items():
        names = ("dy", "dh_T", "dc_T") if cell == "lstm" else ("dy", "dh_T")
        cases += [(variant, (name,)) for name in names] + [(variant, names)]
    return cases


@pytest.mark.parametrize("variant,missing", none_cases(),
                         ids=lambda v: "+".join(v) if isinstance(v, tuple) else v)
@pytest.mark.parametrize("impl", IMPLS)
def test_none_incoming_gradient_equals_zeros(impl, variant, missing, rng):
    """dy / dh_T / dc_T = None behave exactly like arrays of zeros, and match torch."""
    dtype = np.float64
    T, B, D, H = 5, 3, 4, 3
    x, states, params, dy, dstates = make_problem(variant, (T, B, D, H), dtype, rng)
    lengths = np.array([5, 2, 4])

    incoming = {"dy": dy, "dh_T": dstates[0]}
    if len(dstates) == 2:
        incoming["dc_T"] = dstates[1]
    with_none = {name: (None if name in missing else value)
                 for name, value in incoming.items()}
    with_zeros = {name: (np.zeros_like(value) if name in missing else value)
                  for name, value in incoming.items()}

    def run(grads):
        dstates = tuple(grads[name] for name in ("dh_T", "dc_T") if name in grads)
        return rnnfast_results(impl, variant, x, states, params, lengths, False,
                               grads["dy"], dstates)

    ours_none, ours_zeros = run(with_none), run(with_zeros)
    for name, expected in ours_zeros.items():
        assert_close(ours_none[name], expected, dtype, name=f"{name} (None vs zeros)")

    dstates_none = tuple(with_none[name] for name in ("dh_T", "dc_T") if name in with_none)
    theirs = torch_results(variant, x, states, params, lengths, False,
                           with_none["dy"], dstates_none)
    assert_matches_torch(ours_none, theirs, dtype, f"{'+'.join(missing)}=None")
    if set(missing) == set(incoming):
        # Nothing flows back: every gradient is exactly zero.
        for name in ours_none:
            if name.startswith("d"):
                assert not np.any(ours_none[name]), f"{name} is not zero with all-None input"


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
@pytest.mark.parametrize("impl", IMPLS)
def test_none_initial_state_matches_torch_default(impl, variant, reverse, rng):
    """h0 (and c0) = None is torch's hx=None: zero initial states."""
    dtype = np.float64
    x, _, params, dy, dstates = make_problem(variant, (4, 3, 2, 5), dtype, rng)
    lengths = np.array([4, 1, 3])
    theirs = torch_results(variant, x, None, params, lengths, reverse, dy, dstates)
    ours = rnnfast_results(impl, variant, x, None, params, lengths, reverse, dy, dstates)
    assert "dh0" not in theirs  # torch has no leaf to differentiate; the rest must match
    assert_matches_torch(ours, theirs, dtype, "h0=None")
