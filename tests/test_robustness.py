"""Robustness (issue 6, items 1 and 2): hostile values, memory layouts and bad input.

What ``test_errors.py`` and ``test_semantics.py`` leave out:

- NaN and +-Inf in every argument: kernels never crash or warn, and put NaN and Inf
  exactly where the reference (the specification) puts them; NaN stays in the batch
  row it entered and runs forward in time;
- very large pre-activations: no warning of any kind, gates saturate to exactly what
  sigmoid -> {0, 1} and tanh -> {-1, 1} give, outputs and gradients finite;
- subnormal inputs: no crash, results within tolerance of the reference (the kernels
  flush subnormals to zero inside, and restore the caller's floating-point mode);
- hypothesis property tests: random shapes (T = 0 and B = 0 included), lengths, dtypes
  and a memory layout per array argument, for every cell and direction: the kernels
  give bitwise what they give on C-contiguous copies, and match the reference; the
  same for the layers. Each prints how many examples it ran;
- the layers and streams: bad input raises an error naming the argument; NaN through a
  stream stays in its row; mixed float32/float64 input gives results of the layer's
  dtype (README: "chosen by ``w_ih``; float arguments of another width are cast");
- smoke runs of ``bench/bench_threads.py --quick``, ``bench/bench_bidirectional.py
  --quick`` and ``bench/bench_models.py --quick`` (their JSON, never their timings).

Shape legend: T = steps, B = batch, D = input features, H = hidden units,
G = stacked gates (RNN 1, LSTM 4, GRU 3), L = layers, N = directions.
"""

import collections
import importlib.util
import json
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnfast
from rnnfast import reference
from rnnfast.layers import GRU, LSTM, RNN
from conftest import (CELL_VARIANTS, DTYPES, GATES, GRAD_NAMES, assert_close, backward,
                      forward, make_inputs, make_params)

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = list(CELL_VARIANTS)
CLASSES = (RNN, LSTM, GRU)
LAYER_VARIANTS = {"rnn_tanh": (RNN, {"nonlinearity": "tanh"}),
                  "rnn_relu": (RNN, {"nonlinearity": "relu"}),
                  "lstm": (LSTM, {}), "gru": (GRU, {})}
T, B, D, H = 5, 3, 4, 6
T0, B0 = 2, 1  # where a single poisoned value goes: step T0 of batch row B0


# ----------------------------------------------------------------------------- helpers

def state_names(cell):
    return ("h0", "c0") if cell == "lstm" else ("h0",)


def dstate_names(cell):
    return ("dh_T", "dc_T") if cell == "lstm" else ("dh_T",)


def problem(variant, dtype, seed=0, T=T, B=B, D=D, H=H):
    """Every array argument of a forward + backward call, by name."""
    cell, _ = CELL_VARIANTS[variant]
    rng = np.random.default_rng(seed)
    x, states = make_inputs(cell, T, B, D, H, dtype, rng)
    arrays = {"x": x, **dict(zip(state_names(cell), states))}
    arrays.update(zip(("w_ih", "w_hh", "b_ih", "b_hh"), make_params(cell, D, H, dtype, rng)))
    arrays["dy"] = rng.standard_normal((T, B, H)).astype(dtype)
    for name in dstate_names(cell):
        arrays[name] = rng.standard_normal((B, H)).astype(dtype)
    return arrays


def run(module, variant, arrays, lengths=None, reverse=False, training=True):
    """Forward (+ backward when ``training``) on ``arrays``; every result by name."""
    cell, extra = CELL_VARIANTS[variant]
    states = tuple(arrays[name] for name in state_names(cell))
    params = tuple(arrays[name] for name in ("w_ih", "w_hh", "b_ih", "b_hh"))
    y, finals, cache = forward(module, cell, arrays["x"], states, params, lengths=lengths,
                               reverse=reverse, training=training, **extra)
    results = {"y": y, **dict(zip(("h_T", "c_T"), finals))}
    if training:
        dstates = tuple(arrays[name] for name in dstate_names(cell))
        grads = backward(module, cell, arrays["dy"], dstates, cache)
        results.update(zip(GRAD_NAMES[cell], grads))
    return results


@contextmanager
def no_warnings_at_all():
    """Any Python warning or floating-point flag NumPy reports becomes an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            yield


def run_kernels_silently(variant, arrays, **kwargs):
    """The kernels never warn, whatever the values: run them with warnings as errors."""
    with no_warnings_at_all():
        return run(rnnfast, variant, arrays, **kwargs)


def run_reference(variant, arrays, **kwargs):
    """The reference is plain NumPy: NaN and Inf make it warn, which is expected."""
    with np.errstate(all="ignore"):
        return run(reference, variant, arrays, **kwargs)


def assert_same_non_finite(got, want, dtype):
    """NaN, +Inf and -Inf at the same positions; the finite values close."""
    assert got.keys() == want.keys()
    for name in want:
        a, b = got[name], want[name]
        assert a.shape == b.shape and a.dtype == b.dtype == np.dtype(dtype), name
        for test in (np.isnan, np.isposinf, np.isneginf):
            mismatch = test(a) != test(b)
            assert not mismatch.any(), (
                f"{name}: {test.__name__} differs from the reference at "
                f"{np.argwhere(mismatch)[:5].tolist()} (kernel {int(test(a).sum())}, "
                f"reference {int(test(b).sum())} entries)")
        finite = np.isfinite(b)
        assert_close(np.where(finite, a, 0), np.where(finite, b, 0), dtype, name)


def processing_order(T, reverse):
    return list(range(T - 1, -1, -1)) if reverse else list(range(T))


# ----------------------------------------------------------------------------- NaN / Inf

ROW_ARGS = ("x", "h0", "c0", "dy", "dh_T", "dc_T")   # a value here belongs to one batch row
POISON_CASES = [(variant, name) for variant in VARIANTS
                for name in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "dy", "dh_T",
                             "dc_T")
                if CELL_VARIANTS[variant][0] == "lstm" or name not in ("c0", "dc_T")]


def poison_index(name, shape):
    """One entry of argument ``name``: step T0 and row B0 where it has them."""
    if name in ("x", "dy"):
        return (T0, B0, 1)
    if name in ("h0", "c0", "dh_T", "dc_T"):
        return (B0, 1)
    return tuple(min(1, n - 1) for n in shape)


def poison_cases():
    cases = []
    for variant, name in POISON_CASES:
        for lengths in ("full", "lengths"):
            cases.append(pytest.param(variant, name, lengths, id=f"{variant}-{name}-{lengths}"))
    return cases


@pytest.mark.parametrize("variant, name, lengths", poison_cases())
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nan_and_inf_propagate_as_in_the_reference(variant, name, lengths, dtype):
    """One NaN, +Inf or -Inf entry in one argument: the kernels run without a warning
    and put NaN/Inf exactly where the reference does, in every output and gradient,
    forward and reverse, with and without lengths (rows of T, T0 + 1 and 1 steps),
    and in inference."""
    lengths = None if lengths == "full" else np.array([T, T0 + 1, 1])
    for value in (np.nan, np.inf, -np.inf):
        for reverse in (False, True):
            arrays = problem(variant, dtype, seed=3)
            arrays[name][poison_index(name, arrays[name].shape)] = value
            kwargs = dict(lengths=lengths, reverse=reverse)
            got = run_kernels_silently(variant, arrays, **kwargs)
            want = run_reference(variant, arrays, **kwargs)
            assert_same_non_finite(got, want, dtype)
            inference = run_kernels_silently(variant, arrays, training=False, **kwargs)
            for key in inference:
                np.testing.assert_array_equal(inference[key], got[key], err_msg=key)
            if name in ROW_ARGS:  # a value of one row never reaches another row
                others = [b for b in range(B) if b != B0]
                for key in ("y", "dx"):
                    assert np.isfinite(got[key][:, others]).all(), (key, value)
                for key in ("h_T", "c_T", "dh0", "dc0"):
                    if key in got:
                        assert np.isfinite(got[key][others]).all(), (key, value)


@pytest.mark.parametrize("impl", [rnnfast, reference], ids=lambda m: m.__name__)
@pytest.mark.parametrize("variant", VARIANTS)
def test_initial_state_of_an_empty_sequence_stays_out_of_dw_hh(impl, variant):
    """A sequence of length 0 reads nothing and its initial state multiplies nothing:
    Inf there may only reach its own final state and dh0."""
    arrays = problem(variant, np.float64, seed=8)
    arrays["h0"][B0] = np.inf
    lengths = np.array([T, 0, 2])
    with np.errstate(all="ignore"):
        got = run(impl, variant, arrays, lengths=lengths)
        want = run(impl, variant, problem(variant, np.float64, seed=8), lengths=lengths)
    for name in ("dw_ih", "dw_hh", "db_ih", "db_hh"):
        assert_close(got[name], want[name], np.float64, name)


@pytest.mark.parametrize("variant, name", [
    (variant, name) for variant in VARIANTS for name in ("x", "h0", "c0")
    if name != "c0" or CELL_VARIANTS[variant][0] == "lstm"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_nan_runs_forward_in_time_within_its_row(variant, name, reverse):
    """NaN entering row B0 (in x at step T0, or in its initial state) makes that row's
    outputs NaN from that step on, in processing order, and nowhere before it."""
    arrays = problem(variant, np.float64, seed=5)
    arrays[name][poison_index(name, arrays[name].shape)] = np.nan
    y = run_kernels_silently(variant, arrays, reverse=reverse)["y"]
    order = processing_order(T, reverse)
    first = order.index(T0) if name == "x" else 0
    for position, t in enumerate(order):
        if position < first:
            assert np.isfinite(y[t, B0]).all(), f"y[{t}, {B0}] before the NaN entered"
        else:
            assert np.isnan(y[t, B0]).any(), f"y[{t}, {B0}] after the NaN entered"
    if first < T - 1:  # a step later, the recurrence has spread it to every unit
        assert np.isnan(y[order[-1], B0]).all()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", ["w_ih", "w_hh", "b_ih", "b_hh"])
def test_nan_in_a_weight_reaches_every_row(variant, name):
    """A NaN weight is used by every row: every row turns NaN, all of it by the end."""
    arrays = problem(variant, np.float64, seed=6)
    arrays[name][poison_index(name, arrays[name].shape)] = np.nan
    got = run_kernels_silently(variant, arrays)
    assert np.isnan(got["y"][-1]).all() and np.isnan(got["h_T"]).all()
    for b in range(B):
        assert all(np.isnan(got["y"][t, b]).any() for t in range(1, T)), f"row {b}"


# ----------------------------------------------------------------------------- saturation

def hard_forward(variant, arrays, reverse):
    """The cells with sigmoid -> step and tanh -> sign, in float64: what saturated gates
    give exactly. Returns (y, finals, the smallest |pre-activation| met), the last to
    show that every gate really was saturated."""
    cell, extra = CELL_VARIANTS[variant]
    a = {k: v.astype(np.float64) for k, v in arrays.items()}
    step, sign = (lambda v: (v > 0).astype(np.float64)), np.sign
    h = a["h0"]
    c = a.get("c0")
    y = np.zeros(a["dy"].shape)
    smallest = np.inf
    for t in processing_order(a["x"].shape[0], reverse):
        gi = a["x"][t] @ a["w_ih"].T + a["b_ih"]
        gh = h @ a["w_hh"].T + a["b_hh"]
        Hn = h.shape[1]
        if cell == "rnn":
            pre = gi + gh
            h = sign(pre) if extra["nonlinearity"] == "tanh" else np.maximum(pre, 0)
        elif cell == "lstm":
            pre = gi + gh
            i, f, g, o = (pre[:, k * Hn:(k + 1) * Hn] for k in range(4))
            c = step(f) * c + step(i) * sign(g)
            h = step(o) * np.tanh(c)
        else:
            r = step(gi[:, :Hn] + gh[:, :Hn])
            z = step(gi[:, Hn:2 * Hn] + gh[:, Hn:2 * Hn])
            pre_n = gi[:, 2 * Hn:] + r * gh[:, 2 * Hn:]
            pre = np.concatenate([gi[:, :2 * Hn] + gh[:, :2 * Hn], pre_n], axis=1)
            h = (1 - z) * sign(pre_n) + z * h
        smallest = min(smallest, float(np.min(np.abs(pre))))
        y[t] = h
    return y, (h,) if c is None else (h, c), smallest


SATURATING = ("rnn_tanh", "lstm", "gru")
SCALES = {  # name -> (x factor, weight factor) per dtype
    "1e4x-1e3w": {np.float32: (1e4, 1e3), np.float64: (1e4, 1e3)},
    "near-max": {np.float32: (1e34, 1.0), np.float64: (1e300, 1.0)},
}


@pytest.mark.parametrize("variant", SATURATING)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("scale", list(SCALES))
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_large_pre_activations_saturate_without_warnings(variant, dtype, scale, reverse):
    """Pre-activations of 1e7 (and up to 1e35 / 1e301): no warning, no floating-point
    flag; every gate exactly saturated, so outputs equal the hard-gated cells; outputs
    and gradients finite and equal to the reference's."""
    x_factor, w_factor = SCALES[scale][dtype]
    arrays = problem(variant, dtype, seed=11)
    arrays["x"] = arrays["x"] * dtype(x_factor)
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        arrays[name] = arrays[name] * dtype(w_factor)
    with no_warnings_at_all():
        got = run(rnnfast, variant, arrays, reverse=reverse)
        inference = run(rnnfast, variant, arrays, reverse=reverse, training=False)
        want = run(reference, variant, arrays, reverse=reverse)
    y_hard, finals_hard, smallest = hard_forward(variant, arrays, reverse)
    assert smallest > 40, f"a pre-activation of {smallest} is not saturated: bad test data"
    for name, value in got.items():
        assert np.isfinite(value).all(), f"{name} is not finite"
        assert_close(value, want[name], dtype, name)
    for name in inference:
        np.testing.assert_array_equal(inference[name], got[name], err_msg=name)
    assert_close(got["y"], y_hard, dtype, "y vs hard gates")
    for name, value in zip(("h_T", "c_T"), finals_hard):
        assert_close(got[name], value, dtype, f"{name} vs hard gates")
    if variant == "rnn_tanh":  # tanh' = 1 - h^2 = 0 everywhere: no gradient flows
        for name in GRAD_NAMES["rnn"][2:]:
            assert not np.any(got[name]), name


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_large_pre_activations_relu(dtype):
    """ReLU does not saturate: large inputs give large, finite outputs, no warnings."""
    arrays = problem("rnn_relu", dtype, seed=12)
    arrays["x"] = arrays["x"] * dtype(1e4)
    arrays["w_ih"] = arrays["w_ih"] * dtype(1e3)
    with no_warnings_at_all():
        got = run(rnnfast, "rnn_relu", arrays)
        want = run(reference, "rnn_relu", arrays)
    assert np.max(got["y"]) > 1e6
    for name, value in got.items():
        assert np.isfinite(value).all(), name
        assert_close(value, want[name], dtype, name)


# ----------------------------------------------------------------------------- subnormals

SUBNORMAL = {np.dtype(np.float32): 1e-40, np.dtype(np.float64): 1e-310}
SUBNORMAL_WHERE = ("x", "states", "weights", "all", "grads")


def subnormal_cases():
    cases = []
    for variant in VARIANTS:
        for where in SUBNORMAL_WHERE:
            marks = []
            if variant == "rnn_relu" and where in ("weights", "all"):
                # Subnormal pre-activations: the kernels flush them to 0 (DAZ) and take
                # relu'(0) = 0; the reference (and torch) see a positive number and take
                # relu' = 1, so dW_ih differs by O(1).
                marks.append(pytest.mark.xfail(
                    strict=True, reason="flush-to-zero turns a subnormal positive ReLU "
                                        "pre-activation into 0: its derivative becomes 0"))
            cases.append(pytest.param(variant, where, marks=marks, id=f"{variant}-{where}"))
    return cases


@pytest.mark.parametrize("variant, where", subnormal_cases())
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_subnormal_inputs_match_the_reference(variant, where, dtype):
    """Inputs, states, weights or incoming gradients scaled into the subnormal range
    (1e-40 in float32, 1e-310 in float64): no crash, and within tolerance of the
    reference (which keeps subnormals; the kernels may flush them to zero)."""
    tiny = dtype(SUBNORMAL[np.dtype(dtype)])
    arrays = problem(variant, dtype, seed=13)
    cell = CELL_VARIANTS[variant][0]
    scaled = {"x": ["x"], "states": list(state_names(cell)),
              "weights": ["w_ih", "w_hh", "b_ih", "b_hh"],
              "grads": ["dy", *dstate_names(cell)]}
    scaled["all"] = scaled["x"] + scaled["states"] + scaled["weights"]
    for name in scaled[where]:
        arrays[name] = arrays[name] * tiny
        assert np.any((arrays[name] != 0) & (np.abs(arrays[name]) < np.finfo(dtype).tiny))
    for reverse in (False, True):
        lengths = np.array([T, 2, 0])
        with np.errstate(under="ignore"):
            got = run(rnnfast, variant, arrays, lengths=lengths, reverse=reverse)
            want = run(reference, variant, arrays, lengths=lengths, reverse=reverse)
        for name in want:
            assert np.isfinite(got[name]).all(), name
            assert_close(got[name], want[name], dtype, f"{name} reverse={reverse}")


def test_kernels_restore_the_callers_floating_point_mode():
    """Flush-to-zero is set inside the kernels only: after a call, from this thread
    and from others, NumPy still produces subnormals."""
    def subnormals_survive():
        with np.errstate(under="ignore"):
            halved64 = np.array([1e-310]) * 0.5
            halved32 = np.array([1e-40], np.float32) * np.float32(0.5)
        return halved64[0] == 5e-311 and halved32[0] == np.float32(5e-41)

    assert subnormals_survive()

    def call(variant):
        arrays = problem(variant, np.float64, B=9)  # B = 9: a batch split, if cores allow
        run(rnnfast, variant, arrays)
        return subnormals_survive()

    for variant in VARIANTS:
        assert call(variant), variant
    with ThreadPoolExecutor(max_workers=3) as pool:
        assert all(pool.map(call, VARIANTS * 3))
    assert subnormals_survive()


# ----------------------------------------------------------------------------- properties

EXAMPLES = collections.Counter()  # property check name -> examples run
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None, print_blob=True,
                             suppress_health_check=[HealthCheck.too_slow])
LAYOUTS = ("C", "F", "strided", "sliced", "negative", "readonly")


def relayout(array, layout):
    """The same values as ``array`` (same dtype) in another memory layout."""
    array = np.asarray(array)
    if layout == "C":
        return np.array(array, order="C")
    if layout == "F":
        return np.asfortranarray(array)
    if layout == "strided":  # every other element of a larger buffer, on every axis
        buffer = np.zeros(tuple(2 * n + 1 for n in array.shape), array.dtype)
        view = buffer[tuple(slice(1, None, 2) for _ in array.shape)]
        view[...] = array
        return view
    if layout == "sliced":  # a slice of the last axis of a wider buffer
        buffer = np.zeros(array.shape[:-1] + (array.shape[-1] + 3,), array.dtype)
        view = buffer[..., 2:2 + array.shape[-1]]
        view[...] = array
        return view
    if layout == "negative":  # negative strides on every axis
        flipped = tuple(slice(None, None, -1) for _ in array.shape)
        return np.array(array[flipped], order="C")[flipped]
    if layout == "readonly":
        out = np.array(array, order="C")
        out.flags.writeable = False
        return out
    raise ValueError(layout)


def run_property(name, check, record_property, capsys):
    """Run the hypothesis check ``check``; record and print how many examples ran (and
    how many had T = 0 or B = 0)."""
    before, empty_before = EXAMPLES[name], EXAMPLES[f"{name} empty"]
    check()
    count = EXAMPLES[name] - before
    empty = EXAMPLES[f"{name} empty"] - empty_before
    record_property("hypothesis_examples", count)
    with capsys.disabled():
        print(f"\n[hypothesis] {name}: {count} examples, {empty} with T = 0 or B = 0")
    assert count >= 50, f"only {count} examples ran"


def sizes(largest):
    """1 .. largest, and sometimes 0 (about one draw in largest + 1; plain integers
    would give hypothesis's favourite, 0, far more often)."""
    return st.sampled_from(list(range(1, largest + 1)) + [0])


def other_width(dtype):
    return np.float64 if np.dtype(dtype) == np.float32 else np.float32


@PROPERTY_SETTINGS
@given(data=st.data())
def check_kernels_any_layout(variant, reverse, data):
    EXAMPLES[f"kernels-{variant}-{'rev' if reverse else 'fwd'}"] += 1
    cell = CELL_VARIANTS[variant][0]
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    Tn = data.draw(sizes(7), label="T")
    Bn = data.draw(sizes(9), label="B")   # B >= 8 splits the batch across threads
    EXAMPLES[f"kernels-{variant}-{'rev' if reverse else 'fwd'} empty"] += Tn * Bn == 0
    Dn = data.draw(st.integers(1, 5), label="D")
    Hn = data.draw(st.integers(1, 6), label="H")
    lengths = data.draw(st.none() | st.lists(st.integers(0, Tn), min_size=Bn, max_size=Bn),
                        label="lengths")
    training = data.draw(st.booleans(), label="training")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    arrays = problem(variant, dtype, seed, Tn, Bn, Dn, Hn)
    for name in arrays:
        if name != "w_ih" and data.draw(st.booleans(), label=f"{name} other width"):
            arrays[name] = arrays[name].astype(other_width(dtype))  # cast by the API
        arrays[name] = relayout(arrays[name], data.draw(st.sampled_from(LAYOUTS),
                                                        label=f"{name} layout"))
    if lengths is not None:
        lengths_dtype = data.draw(st.sampled_from([np.int64, np.int32, np.uint16]))
        lengths = relayout(np.array(lengths, lengths_dtype),
                           data.draw(st.sampled_from(LAYOUTS), label="lengths layout"))
    contiguous = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    kwargs = dict(reverse=reverse, training=training)
    got = run(rnnfast, variant, arrays, lengths=lengths, **kwargs)
    want = run(rnnfast, variant, contiguous,
               lengths=None if lengths is None else np.ascontiguousarray(lengths), **kwargs)
    expected = run(reference, variant, arrays, lengths=lengths, **kwargs)
    assert got.keys() == want.keys() == expected.keys()
    for name in want:
        assert got[name].dtype == np.dtype(dtype), name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name, strict=True)
        assert_close(got[name], expected[name], dtype, name)
    if training:
        assert got["dx"].shape == (Tn, Bn, Dn)
        assert got["dw_hh"].shape == (GATES[cell] * Hn, Hn)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_property_kernels_any_layout_equal_contiguous_and_reference(variant, reverse,
                                                                   record_property, capsys):
    """Random T (0 included), B (0 included), D, H, lengths, dtype, training, and per
    array argument a float width and a memory layout (C, Fortran, strided,
    last-axis slice, negative strides, read-only); lengths in int64/int32/uint16 and a
    layout too. Kernel results are bitwise those on C-contiguous copies and within
    tolerance of the reference."""
    run_property(f"kernels-{variant}-{'rev' if reverse else 'fwd'}",
                 lambda: check_kernels_any_layout(variant, reverse), record_property, capsys)


def layer_arrays(layer, Tn, Bn, rng):
    """x, state(s), dy and dstate(s) for ``layer`` in its own layout conventions."""
    N = 2 if layer.bidirectional else 1
    x_shape = (Bn, Tn, layer.input_size) if layer.batch_first else (Tn, Bn, layer.input_size)
    y_shape = x_shape[:2] + (N * layer.hidden_size,)
    state_shape = (layer.num_layers * N, Bn, layer.hidden_size)
    count = len(layer._state_names)
    return {"x": rng.standard_normal(x_shape), "dy": rng.standard_normal(y_shape),
            **{f"s{k}": rng.standard_normal(state_shape) * 0.5 for k in range(count)},
            **{f"ds{k}": rng.standard_normal(state_shape) for k in range(count)}}


def run_layer(layer, arrays, lengths):
    """forward + backward on a fresh gradient; results by name."""
    count = len(layer._state_names)

    def public(prefix):
        parts = tuple(arrays[f"{prefix}{k}"] for k in range(count))
        return parts[0] if count == 1 else parts

    layer.zero_grad()
    y, state = layer(arrays["x"], public("s"), lengths)
    dx, dstate = layer.backward(arrays["dy"], public("ds"))
    as_tuple = (lambda v: v if isinstance(v, tuple) else (v,))
    results = {"y": y, "dx": dx}
    results.update({f"state{k}": v for k, v in enumerate(as_tuple(state))})
    results.update({f"dstate{k}": v for k, v in enumerate(as_tuple(dstate))})
    results.update({f"grad {name}": g.copy() for name, g in layer.grads.items()})
    return results


@PROPERTY_SETTINGS
@given(data=st.data())
def check_layers_any_layout(variant, data):
    EXAMPLES[f"layers-{variant}"] += 1
    cls, extra = LAYER_VARIANTS[variant]
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    layer = cls(data.draw(st.integers(1, 4), label="D"), data.draw(st.integers(1, 5), label="H"),
                num_layers=data.draw(st.integers(1, 2), label="L"),
                bidirectional=data.draw(st.booleans(), label="bidirectional"),
                batch_first=data.draw(st.booleans(), label="batch_first"),
                bias=data.draw(st.booleans(), label="bias"), dtype=dtype, seed=0, **extra)
    Tn = data.draw(sizes(6), label="T")
    Bn = data.draw(sizes(9), label="B")
    EXAMPLES[f"layers-{variant} empty"] += Tn * Bn == 0
    lengths = data.draw(st.none() | st.lists(st.integers(0, Tn), min_size=Bn, max_size=Bn),
                        label="lengths")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    arrays = layer_arrays(layer, Tn, Bn, rng)
    for name in arrays:
        width = data.draw(st.sampled_from([np.float32, np.float64]), label=f"{name} dtype")
        arrays[name] = relayout(arrays[name].astype(width),
                                data.draw(st.sampled_from(LAYOUTS), label=f"{name} layout"))
    if lengths is not None:
        lengths = relayout(np.array(lengths, np.int64), data.draw(st.sampled_from(LAYOUTS)))
    got = run_layer(layer, arrays, lengths)
    want = run_layer(layer, {k: np.ascontiguousarray(a) for k, a in arrays.items()},
                     None if lengths is None else np.ascontiguousarray(lengths))
    for name in want:
        assert got[name].dtype == np.dtype(dtype), f"{name} is {got[name].dtype}"
        np.testing.assert_array_equal(got[name], want[name], err_msg=name, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_property_layers_any_layout_equal_contiguous(variant, record_property, capsys):
    """Random layers (L, N, batch_first, bias, dtype) and inputs: any float width and
    memory layout of x, the states, dy and the state gradients gives bitwise the
    results of C-contiguous copies, always in the layer's dtype."""
    run_property(f"layers-{variant}", lambda: check_layers_any_layout(variant),
                 record_property, capsys)


# ----------------------------------------------------------------------------- layers: bad input

def raises(exception, message):
    """pytest.raises matching ``message`` literally, from its start."""
    return pytest.raises(exception, match="^" + re.escape(message))


def make_layer(cls, **kwargs):
    return cls(3, 4, num_layers=2, seed=0, **kwargs)


def state_of(cls, *parts):
    """The public state form: one array, or the (h, c) pair for the LSTM."""
    return tuple(parts) if cls is LSTM else parts[0]


STATE_TEXT = "(num_layers*num_directions, B, H)"


def layer_forward_cases():
    """(id, layer kwargs, call(layer, cls), exception, message)."""
    good = np.zeros((5, 2, 3))
    cases = []
    for shape in [(3,), (5, 3), (5, 2, 3, 1), ()]:
        cases.append((f"x{shape}", {}, lambda l, c, s=shape: l(np.zeros(s)), ValueError,
                      f"x must have shape (T, B, D) with D = input_size = 3, got {shape}"))
    for shape in [(2, 5), (2, 5, 4)]:
        cases.append((f"batch_first-x{shape}", {"batch_first": True},
                      lambda l, c, s=shape: l(np.zeros(s)), ValueError,
                      f"x must have shape (B, T, D) with D = input_size = 3, got {shape}"))
    for label, array, text in [("complex", np.ones((5, 2, 3), complex), "complex128"),
                               ("bool", np.ones((5, 2, 3), bool), "bool"),
                               ("int32", np.ones((5, 2, 3), np.int32), "int32"),
                               ("str", np.full((5, 2, 3), "1"), "<U1"),
                               ("None", None, "object")]:
        cases.append((f"x-{label}", {}, lambda l, c, a=array: l(a), TypeError,
                      f"x must be a floating-point array, got dtype {text}"))
    cases.append(("x-ragged", {}, lambda l, c: l([[[1.0]], [[1.0, 2.0]]]), TypeError,
                  "x must be an array of floats, got list that NumPy cannot convert"))
    for label, shape in [("B", (2, 3, 4)), ("L", (1, 2, 4)), ("H", (2, 2, 5)),
                         ("ndim", (2, 4))]:
        cases.append((f"h0-{label}", {},
                      lambda l, c, s=shape: l(good, state_of(c, np.zeros(s), None)),
                      ValueError,
                      f"h0 must have shape {STATE_TEXT} = (2, 2, 4), got {shape}"))
    cases.append(("h0-bidirectional", {"bidirectional": True},
                  lambda l, c: l(good, state_of(c, np.zeros((2, 2, 4)), None)), ValueError,
                  f"h0 must have shape {STATE_TEXT} = (4, 2, 4), got (2, 2, 4)"))
    for label, dtype in [("complex", complex), ("int", np.int64)]:
        cases.append((f"h0-{label}", {},
                      lambda l, c, d=dtype: l(good, state_of(c, np.zeros((2, 2, 4), d), None)),
                      TypeError,
                      f"h0 must be a floating-point array, got dtype {np.dtype(dtype)}"))
    cases.append(("lengths-negative", {}, lambda l, c: l(good, lengths=[-1, 2]), ValueError,
                  "lengths must satisfy 0 <= lengths[b] <= T = 5, got values from -1 to 2"))
    cases.append(("lengths-float", {}, lambda l, c: l(good, lengths=[1.0, 2.0]), TypeError,
                  "lengths must be an array of integers, got dtype float64"))
    cases.append(("lengths-bool", {}, lambda l, c: l(good, lengths=[True, True]), TypeError,
                  "lengths must be an array of integers, got dtype bool"))
    for shape in [(3,), (1, 2), ()]:
        cases.append((f"lengths{shape}", {},
                      lambda l, c, s=shape: l(good, lengths=np.ones(s, int)), ValueError,
                      f"lengths must have shape (B,) = (2,), got {shape}"))
    cases.append(("lengths-batch_first", {"batch_first": True},
                  lambda l, c: l(np.zeros((2, 5, 3)), lengths=[6, 1]), ValueError,
                  "lengths must satisfy 0 <= lengths[b] <= T = 5, got values from 1 to 6"))
    return cases


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", layer_forward_cases(), ids=lambda case: case[0])
def test_layer_forward_bad_input(cls, case):
    _, kwargs, call, exception, message = case
    layer = make_layer(cls, **kwargs)
    with raises(exception, message):
        call(layer, cls)
    assert layer._saved is None  # a refused call keeps nothing for backward


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_layer_state_errors_name_the_part(cls):
    """c0 is named in its own errors; the LSTM wants the (h0, c0) pair."""
    layer = make_layer(cls)
    x = np.zeros((5, 2, 3))
    if cls is not LSTM:
        with raises(TypeError, "h0 must be an array of floats, got list that NumPy cannot "
                               "convert"):
            layer(x, [[[0.0] * 4] * 2, [[0.0] * 4]])
        return
    with raises(ValueError, f"c0 must have shape {STATE_TEXT} = (2, 2, 4), got (2, 2, 3)"):
        layer(x, (np.zeros((2, 2, 4)), np.zeros((2, 2, 3))))
    with raises(TypeError, "c0 must be a floating-point array, got dtype int64"):
        layer(x, (None, np.zeros((2, 2, 4), np.int64)))
    for bad in [np.zeros((2, 2, 4)), (np.zeros((2, 2, 4)),), (None, None, None)]:
        with raises(TypeError, "state must be None or a tuple (h0, c0) for LSTM, got"):
            layer(x, bad)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_layer_backward_bad_input(cls):
    layer = make_layer(cls)
    y, _ = layer(np.zeros((5, 2, 3)))
    dy_text = "dy must have shape (T, B, num_directions*H) = (5, 2, 4), got"
    for bad in [np.ones((2, 5, 4)), np.ones((5, 2)), np.ones((5, 2, 4, 1))]:
        with raises(ValueError, f"{dy_text} {bad.shape}"):
            layer.backward(bad)
    for bad, text in [(np.ones((5, 2, 4), complex), "complex128"),
                      (np.ones((5, 2, 4), np.int64), "int64"), ("dy", "<U2")]:
        with raises(TypeError, f"dy must be a floating-point array, got dtype {text}"):
            layer.backward(bad)
    with raises(ValueError, f"dh_n must have shape {STATE_TEXT} = (2, 2, 4), got (2, 2)"):
        layer.backward(None, state_of(cls, np.ones((2, 2)), None))
    if cls is LSTM:
        with raises(TypeError, "dc_n must be a floating-point array, got dtype bool"):
            layer.backward(None, (None, np.ones((2, 2, 4), bool)))
    dx, _ = layer.backward(np.ones_like(y))  # nothing above consumed the forward
    assert dx.shape == (5, 2, 3)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_stream_bad_input(cls):
    stream = make_layer(cls).stream(2)
    for shape in [(3,), (1, 2, 3), (2, 4), (3, 3), (0, 3), ()]:
        with raises(ValueError, f"x_t must have shape (B, D) = (2, 3), got {shape}"):
            stream(np.zeros(shape, np.float32))
    for array, text in [(np.ones((2, 3), complex), "complex128"),
                        (np.ones((2, 3), bool), "bool"), ([[1, 2, 3], [4, 5, 6]], "int64"),
                        (np.full((2, 3), "a"), "<U1")]:
        with raises(TypeError, f"x_t must be a floating-point array, got dtype {text}"):
            stream(array)
    with raises(TypeError, "x_t must be an array of floats of shape (B, D), got None"):
        stream(None)
    with raises(ValueError, "h must have shape (num_layers, B, H) = (2, 2, 4), got (1, 2, 4)"):
        stream.reset(state_of(cls, np.zeros((1, 2, 4)), None))
    with raises(TypeError, "h must be a floating-point array, got dtype int64"):
        stream.reset(state_of(cls, np.zeros((2, 2, 4), np.int64), None))
    if cls is LSTM:
        with raises(ValueError, "c must have shape (num_layers, B, H) = (2, 2, 4), "
                                "got (2, 4)"):
            stream.reset((None, np.zeros((2, 4))))
        with raises(TypeError, "state must be None or a tuple (h, c) for LSTM, got ndarray"):
            stream.reset(np.zeros((2, 2, 4)))
    stream.reset(state_of(cls, np.zeros((2, 2, 4)), None))  # the refusals broke nothing
    assert stream(np.zeros((2, 3))).shape == (2, 4)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batch, hidden", [(2, 4), (9, 4), (40, 64)],
                         ids=lambda v: f"{v}")
def test_stream_nan_stays_in_its_row(variant, batch, hidden):
    """NaN in row 0 of one step: row 0 is NaN from then on (until reset), every other row
    stays what a clean stream gives, bitwise; nothing crashes or warns. B = 40 runs the
    products of a large batch transposed."""
    cls, extra = LAYER_VARIANTS[variant]
    layer = cls(3, hidden, num_layers=2, seed=1, **extra)
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((6, batch, 3)).astype(np.float32)
    clean, poisoned = layer.stream(batch), layer.stream(batch)
    with no_warnings_at_all():
        for t, x_t in enumerate(xs):
            x_bad = x_t.copy()
            if t == 2:
                x_bad[0, 1] = np.nan
            want, got = clean(x_t), poisoned(x_bad)
            np.testing.assert_array_equal(got[1:], want[1:], err_msg=f"step {t}")
            if t < 2:
                np.testing.assert_array_equal(got[0], want[0])
            else:
                assert np.isnan(got[0]).any(), f"step {t}"
        for part in (poisoned.state if cls is LSTM else (poisoned.state,)):
            assert np.isnan(part[:, 0]).any() and np.isfinite(part[:, 1:]).all()
        poisoned.reset()
        clean.reset()
        np.testing.assert_array_equal(poisoned(xs[0]), clean(xs[0]))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_layer_non_finite_input_stays_in_its_row(cls, value):
    """Through two bidirectional layers: a non-finite x[T0, B0] reaches no other batch
    row, forward or backward; parameter gradients turn NaN for NaN input."""
    layer = cls(3, 4, num_layers=2, bidirectional=True, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, 3))
    x[T0, B0, 0] = value
    with no_warnings_at_all():
        y, state = layer(x)
        dx, dstate = layer.backward(rng.standard_normal(y.shape))
    others = [b for b in range(B) if b != B0]
    assert np.isfinite(y[:, others]).all() and np.isfinite(dx[:, others]).all()
    for part in (state if cls is LSTM else (state,)) + (dstate if cls is LSTM else (dstate,)):
        assert np.isfinite(part[:, others]).all()
    if np.isnan(value):
        assert np.isnan(y[:, B0]).any(axis=1).all()  # both directions: every step
        assert all(np.isnan(g).all() for g in layer.grads.values())


# ----------------------------------------------------------------------------- layers: dtypes

def test_readme_documents_the_cast_rule():
    readme = ROOT / "README.md"
    if not readme.is_file():
        pytest.skip("README.md is not next to the tests")
    text = " ".join(readme.read_text().split())
    assert "float32 or float64, chosen by `w_ih`; float arguments of another width are " \
           "cast to it" in text


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("other", [np.float32, np.float64, np.float16],
                         ids=lambda d: np.dtype(d).name)
def test_layer_mixed_widths_give_the_layer_dtype(cls, dtype, other):
    """x, states, dy and state gradients in another float width: every output, state,
    gradient and ``grads`` entry has the layer's dtype and equals running on inputs
    cast to it beforehand (the parameters choose the dtype, as in the functional API)."""
    layer = cls(3, 4, num_layers=2, bidirectional=True, seed=5, dtype=dtype)
    rng = np.random.default_rng(6)
    arrays = layer_arrays(layer, T, B, rng)
    mixed = {k: a.astype(other) for k, a in arrays.items()}
    cast = {k: a.astype(dtype) for k, a in mixed.items()}
    got = run_layer(layer, mixed, None)
    want = run_layer(layer, cast, None)
    for name in want:
        assert got[name].dtype == np.dtype(dtype), f"{name} is {got[name].dtype}"
        np.testing.assert_array_equal(got[name], want[name], err_msg=name, strict=True)
    assert all(g.dtype == np.dtype(dtype) for g in layer.grads.values())

    stream = cls(3, 4, num_layers=2, seed=5, dtype=dtype).stream(B)
    initial = tuple(rng.standard_normal((2, B, 4)).astype(other) for _ in layer._state_names)
    stream.reset(initial[0] if cls is not LSTM else initial)
    out = stream(arrays["x"][0].astype(other))
    assert out.dtype == np.dtype(dtype)
    for part in (stream.state if cls is LSTM else (stream.state,)):
        assert part.dtype == np.dtype(dtype)


# ----------------------------------------------------------------------------- bench smoke

BENCH_THREADS = ROOT / "bench" / "bench_threads.py"


def load_bench_script(path):
    """A script of bench/ imported as a module, or the test skipped where the source
    tree (and so bench/) is not at hand."""
    if not path.is_file():
        pytest.skip(f"benchmark script not found at {path}")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_threads_quick_run_writes_json(tmp_path, capsys):
    """``bench/bench_threads.py --quick`` on a tiny shape: its table and JSON have the
    documented form. Timings are never asserted (DESIGN.md)."""
    bench = load_bench_script(BENCH_THREADS)
    path = tmp_path / "threads.json"
    status = bench.main(["--quick", "--cells", "lstm,gru", "--shape", "3,4,2,4",
                         "--threads", "1,2", "--calls", "4", "--repeat", "1",
                         "--json", str(path)])
    assert status == 0
    assert "| cell | mode | threads |" in capsys.readouterr().out
    results = json.loads(path.read_text())
    assert results["machine"]["cpu_count"] >= 1
    assert results["settings"]["shape"] == {"T": 3, "B": 4, "D": 2, "H": 4}
    assert results["settings"]["kernel_threads_per_call"] == 1
    rows = results["rows"]
    assert {(r["cell"], r["mode"], r["threads"]) for r in rows} == {
        (cell, mode, k) for cell in ("lstm", "gru") for mode in results["settings"]["modes"]
        for k in (1, 2)}
    assert {(r["mode"], r["threads"]) for r in results["controls"]} == {
        (name, k) for name in ("numpy_matmul", "python_loop") for k in (1, 2)}
    for row in rows + results["controls"]:
        assert row["calls_per_thread"] == 4
        assert row["total_calls"] == 4 * row["threads"]
        for key in ("serial_s", "threaded_s", "speedup"):
            assert isinstance(row[key], float), key
        assert row["results_equal_serial"] is True


BENCH_BIDIRECTIONAL = ROOT / "bench" / "bench_bidirectional.py"


def test_bench_bidirectional_quick_run_writes_json(tmp_path, capsys):
    """``bench/bench_bidirectional.py --quick``: its table and JSON have the documented
    form and every implementation's output agreed with rnnfast's. Timings are never
    asserted (DESIGN.md)."""
    bench = load_bench_script(BENCH_BIDIRECTIONAL)
    path = tmp_path / "bidirectional.json"
    assert bench.main(["--quick", "--json", str(path)]) == 0
    assert "| cell | mode | T,B,D,H | at once | in turn |" in capsys.readouterr().out
    results = json.loads(path.read_text())
    assert results["threads"] >= 1 and results["machine"]["cpu_count"] >= 1
    rows = results["rows"]
    assert {(r["cell"], r["mode"], tuple(r["shape"])) for r in rows} == {
        ("lstm", mode, shape) for mode in ("inference", "training")
        for shape in bench.QUICK_SHAPES}
    for row in rows:
        assert row["agree"] is True
        seconds = row["seconds"]
        assert set(seconds) == set(bench.IMPLEMENTATIONS)
        assert seconds["at once"] > 0 and seconds["in turn"] > 0
        if row["mode"] == "training":     # ONNX Runtime has no backward
            assert seconds["onnxruntime"] is None


BENCH_MODELS = ROOT / "bench" / "bench_models.py"


def test_bench_models_quick_run_writes_json(tmp_path, capsys):
    """``bench/bench_models.py --quick``: its table and JSON have the documented form,
    and where PyTorch is installed its losses and gradients agreed with rnnfast's.
    Timings are never asserted (DESIGN.md)."""
    bench = load_bench_script(BENCH_MODELS)
    path = tmp_path / "models.json"
    assert bench.main(["--quick", "--json", str(path)]) == 0
    assert "| model | cell | L x H | T,B,D | rnnfast ms | torch ms |" in capsys.readouterr().out
    results = json.loads(path.read_text())
    assert results["threads"] >= 1 and results["machine"]["cpu_count"] >= 1
    rows = results["rows"]
    assert [(r["kind"], r["cell"], r["layers"], r["hidden"]) for r in rows] == [
        (m.kind, m.cell, m.layers, m.hidden) for m in bench.QUICK_MODELS]
    torch_installed = importlib.util.find_spec("torch") is not None
    for row in rows:
        assert row["seconds"]["rnnfast"] > 0
        assert row["agree"] is (True if torch_installed else None)
        assert (row["seconds"]["torch"] > 0) if torch_installed else row["seconds"]["torch"] is None
