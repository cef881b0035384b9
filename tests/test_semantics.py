"""The behaviour the functional API promises (issue 2, DESIGN.md), checked on the
kernels (``rnnfast``) and on the reference (``rnnfast.reference``) alike:

training=False, variable lengths, reverse, batch independence, no in-place changes to
the caller's arrays, dtype casting, memory layouts, empty shapes (T=0, B=0), None as
zeros, and the dtype and ownership of what comes back.

Where two calls must give the same numbers (same implementation, same values, another
memory layout or spelling), the reference is held to bitwise equality and the kernels
to ``assert_close`` at float64 tolerance. Comparisons across batch sizes (one sequence
run alone vs. inside a batch) use ``assert_close`` for both, since BLAS may round a
different-sized product differently.
"""

import numpy as np
import pytest

from conftest import (GATES, assert_close, backward, forward, impl_module,
                      make_inputs, make_params)

IMPLS = ("rnnfast", "rnnfast.reference")
CASES = ("rnn_tanh", "rnn_relu", "lstm", "gru")
T, B, D, H = 6, 5, 3, 4
MIXED_LENGTHS = np.array([6, 3, 0, 1, 5])  # full, partial, zero, one step, T-1


# ----------------------------------------------------------------------------- helpers

@pytest.fixture(params=IMPLS)
def impl(request):
    module = impl_module(request.param)
    if not hasattr(module, "lstm_forward"):
        pytest.skip(f"{request.param} does not export the functional API yet")
    return module


def is_reference(module):
    return module.__name__ == "rnnfast.reference"


def cell_of(case):
    """("rnn", {"nonlinearity": "relu"}) for "rnn_relu"; ("lstm", {}) for "lstm"."""
    if case.startswith("rnn_"):
        return "rnn", {"nonlinearity": case[4:]}
    return case, {}


def n_states(cell):
    return 2 if cell == "lstm" else 1


class Problem:
    """Random inputs, parameters and incoming gradients for one case."""

    def __init__(self, case, T=T, B=B, D=D, H=H, dtype=np.float64, seed=0):
        self.case = case
        self.cell, self.extra = cell_of(case)
        rng = np.random.default_rng(seed)
        self.x, self.states = make_inputs(self.cell, T, B, D, H, dtype, rng)
        self.params = make_params(self.cell, D, H, dtype, rng, scale=0.7)
        self.dy = rng.standard_normal((T, B, H)).astype(dtype)
        self.dstates = tuple(rng.standard_normal((B, H)).astype(dtype)
                             for _ in range(n_states(self.cell)))

    def arrays(self):
        """Every array argument by name, in one dict (for bulk transformations)."""
        out = {"x": self.x, "dy": self.dy}
        out.update(zip(("h0", "c0"), self.states))
        out.update(zip(("w_ih", "w_hh", "b_ih", "b_hh"), self.params))
        out.update(zip(("dh_T", "dc_T"), self.dstates))
        return out


def run(module, problem, *, x=None, states=None, params=None, dy=None, dstates=None,
        use_problem_grads=True, **kwargs):
    """Forward with training, then backward. Returns (y, final states, grads).

    Arguments default to the problem's; pass ``use_problem_grads=False`` to give the
    incoming gradients ``dy``/``dstates`` exactly as passed (None included).
    """
    cell = problem.cell
    x = problem.x if x is None else x
    states = problem.states if states is None else states
    params = problem.params if params is None else params
    if use_problem_grads:
        dy = problem.dy if dy is None else dy
        dstates = problem.dstates if dstates is None else dstates
    elif dstates is None:
        dstates = (None,) * n_states(cell)
    y, finals, cache = forward(module, cell, x, states, params, **problem.extra, **kwargs)
    grads = backward(module, cell, dy, dstates, cache)
    return y, finals, grads


def assert_same(module, actual, expected, name):
    """Same implementation, same values: bitwise for the reference, close for kernels."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    if is_reference(module):
        np.testing.assert_array_equal(actual, expected, err_msg=name, strict=True)
    else:
        assert_close(actual, expected, actual.dtype, name)


def assert_results_same(module, got, want, label=""):
    """Compare two (y, finals, grads) results tensor by tensor."""
    y, finals, grads = got
    y0, finals0, grads0 = want
    assert_same(module, y, y0, f"{label} y")
    for k, (a, b) in enumerate(zip(finals, finals0)):
        assert_same(module, a, b, f"{label} final state {k}")
    for name in grads0._fields:
        assert_same(module, getattr(grads, name), getattr(grads0, name), f"{label} {name}")


def lengths_param(kind, T=T, B=B):
    return {"none": None, "mixed": MIXED_LENGTHS[:B].copy()}[kind]


# ----------------------------------------------------------------------------- training=False

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("lengths", ["none", "mixed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_inference_returns_no_cache_and_the_same_outputs(impl, case, dtype, lengths, reverse):
    p = Problem(case, dtype=dtype)
    kwargs = dict(lengths=lengths_param(lengths), reverse=reverse, **p.extra)
    y, finals, cache = forward(impl, p.cell, p.x, p.states, p.params, training=False,
                               **kwargs)
    assert cache is None
    y0, finals0, cache0 = forward(impl, p.cell, p.x, p.states, p.params, training=True,
                                  **kwargs)
    assert cache0 is not None
    assert y.dtype == dtype and y.shape == (T, B, H)
    assert_same(impl, y, y0, "y")
    for k, (a, b) in enumerate(zip(finals, finals0)):
        assert a.dtype == dtype and a.shape == (B, H)
        assert_same(impl, a, b, f"final state {k}")


@pytest.mark.parametrize("case", CASES)
def test_inference_long_sequence(impl, case):
    """More steps than any chunking of the input projection: still the same outputs."""
    p = Problem(case, T=75, B=3, D=2, H=3)
    lengths = np.array([75, 40, 33])
    for reverse in (False, True):
        kwargs = dict(lengths=lengths, reverse=reverse, **p.extra)
        y, finals, cache = forward(impl, p.cell, p.x, p.states, p.params, training=False,
                                   **kwargs)
        y0, finals0, _ = forward(impl, p.cell, p.x, p.states, p.params, **kwargs)
        assert cache is None
        assert_same(impl, y, y0, f"y reverse={reverse}")
        for k, (a, b) in enumerate(zip(finals, finals0)):
            assert_same(impl, a, b, f"final state {k} reverse={reverse}")


@pytest.mark.parametrize("case", CASES)
def test_inference_in_chunks_on_threads(case, monkeypatch):
    """Chunks of three steps with the batch split over threads and a wide input
    (D > 128): each thread projects and runs its own rows. Training projects all
    steps at once (through BLAS at this width); the outputs agree."""
    import rnnfast
    from rnnfast import functional

    p = Problem(case, T=10, B=9, D=130, H=4)
    step_bytes = 9 * GATES[p.cell] * 4 * 8
    monkeypatch.setattr(functional, "INFERENCE_CHUNK_BYTES", 3 * step_bytes)
    for reverse in (False, True):
        kwargs = dict(reverse=reverse, **p.extra)
        y, finals, _ = forward(rnnfast, p.cell, p.x, p.states, p.params, training=False,
                               **kwargs)
        y0, finals0, _ = forward(rnnfast, p.cell, p.x, p.states, p.params, **kwargs)
        assert_close(y, y0, np.float64, f"y reverse={reverse}")
        for k, (a, b) in enumerate(zip(finals, finals0)):
            assert_close(a, b, np.float64, f"final state {k} reverse={reverse}")


# Small inference calls whose arrays need no conversion skip the Python-side checks
# (one compiled entry, rnnfast._kernels.forward_inference); every other call takes
# the general path. Both must give the same numbers bit for bit.

def general_path_only(monkeypatch):
    """Make every call take the general path (the compiled entry declines)."""
    from rnnfast import functional
    monkeypatch.setattr(functional._kernels, "forward_inference", lambda *args: None)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("none_args", [False, True], ids=["arrays", "nones"])
def test_small_inference_skips_the_python_checks(case, dtype, reverse, none_args,
                                                 monkeypatch):
    import rnnfast
    from rnnfast import functional

    p = Problem(case, T=40, B=3, dtype=dtype)   # more steps than one projection chunk
    states = (None,) * len(p.states) if none_args else p.states
    params = p.params[:2] + (None, None) if none_args else p.params
    kwargs = dict(reverse=reverse, **p.extra)
    with monkeypatch.context() as patch:
        patch.setattr(functional._checks, "forward_args",
                      lambda *args: pytest.fail("took the general path"))
        y, finals, _ = forward(rnnfast, p.cell, p.x, states, params, training=False,
                               **kwargs)
    general_path_only(monkeypatch)
    y0, finals0, _ = forward(rnnfast, p.cell, p.x, states, params, training=False, **kwargs)
    np.testing.assert_array_equal(y, y0, strict=True)
    assert not np.shares_memory(finals[0], y)
    for a, b in zip(finals, finals0):
        np.testing.assert_array_equal(a, b, strict=True)


class Subclass(np.ndarray):
    pass


def converted_arguments(p):
    """Argument sets the compiled entry declines: each needs a conversion or a check."""
    x, states, (w_ih, w_hh, b_ih, b_hh) = p.x, p.states, p.params
    swapped = w_hh.astype(w_hh.dtype.newbyteorder())
    yield "fortran x", np.asfortranarray(x), states, (w_ih, w_hh, b_ih, b_hh)
    yield "strided x", np.repeat(x, 2, axis=0)[::2], states, (w_ih, w_hh, b_ih, b_hh)
    yield "byte-swapped w_hh", x, states, (w_ih, swapped, b_ih, b_hh)
    yield "subclass w_ih", x, states, (w_ih.view(Subclass), w_hh, b_ih, b_hh)
    yield "float32 x", x.astype(np.float32), states, (w_ih, w_hh, b_ih, b_hh)
    yield "list b_ih", x, states, (w_ih, w_hh, b_ih.tolist(), b_hh)
    yield "states as lists", x, tuple(s.tolist() for s in states), (w_ih, w_hh, b_ih, b_hh)


@pytest.mark.parametrize("case", CASES)
def test_arguments_needing_conversion_match_plain_ones(case):
    import rnnfast

    p = Problem(case, T=7, B=2)
    y0, finals0, _ = forward(rnnfast, p.cell, p.x, p.states, p.params, training=False,
                             **p.extra)
    for label, x, states, params in converted_arguments(p):
        y, finals, _ = forward(rnnfast, p.cell, x, states, params, training=False,
                               **p.extra)
        assert type(y) is np.ndarray and y.dtype == np.float64, label
        tol = 2e-4 if label == "float32 x" else 0
        np.testing.assert_allclose(y, y0, rtol=0, atol=tol, err_msg=label)
        for a, b in zip(finals, finals0):
            np.testing.assert_allclose(a, b, rtol=0, atol=tol, err_msg=label)


@pytest.mark.parametrize("case", CASES)
def test_small_inference_errors_name_the_argument(case):
    """Wrong shapes on the compiled entry's arguments still raise the general errors."""
    import rnnfast

    p = Problem(case, T=3, B=2)
    w_ih, w_hh, b_ih, b_hh = p.params
    wrong = {"x": (p.x[0], p.states, p.params),
             "h0": (p.x, (p.states[0][:, :-1],) + p.states[1:], p.params),
             "b_hh": (p.x, p.states, (w_ih, w_hh, b_ih, b_hh[:-1])),
             "w_hh": (p.x, p.states, (w_ih, w_hh[:-1], b_ih, b_hh))}
    for name, (x, states, params) in wrong.items():
        with pytest.raises(ValueError, match=name):
            forward(rnnfast, p.cell, x, states, params, training=False, **p.extra)


# ----------------------------------------------------------------------------- lengths

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_outputs_are_zero_beyond_each_length(impl, case, reverse):
    p = Problem(case)
    y, finals, grads = run(impl, p, lengths=MIXED_LENGTHS, reverse=reverse)
    for b, L in enumerate(MIXED_LENGTHS):
        assert np.all(y[L:, b] == 0), f"y[{L}:, {b}] is not 0"
        assert np.all(grads.dx[L:, b] == 0), f"dx[{L}:, {b}] is not 0"
        if L > 0:
            assert np.any(y[:L, b] != 0)


def run_alone(module, p, b, L, reverse, flip):
    """Sequence ``b`` on its own, truncated to its length ``L`` (L >= 1).

    With ``flip`` the valid part is time-flipped and run forward, and the outputs and
    ``dx`` are flipped back: what ``reverse=True`` must equal.
    """
    order = slice(None, None, -1) if flip else slice(None)
    x = p.x[:L, b:b + 1][order]
    dy = p.dy[:L, b:b + 1][order]
    states = tuple(s[b:b + 1] for s in p.states)
    dstates = tuple(d[b:b + 1] for d in p.dstates)
    y, finals, grads = run(module, p, x=x, states=states, dy=dy, dstates=dstates,
                           reverse=reverse and not flip)
    return y[order][:, 0], tuple(f[0] for f in finals), grads, order


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reverse, flip", [(False, False), (True, False), (True, True)],
                         ids=["fwd-vs-truncated", "rev-vs-truncated-rev",
                              "rev-vs-flipped-fwd"])
def test_each_sequence_equals_running_it_alone(impl, case, reverse, flip):
    """With lengths, sequence b in the batch gives what its valid part x[:L, b] gives on
    its own: outputs, final state(s), dx, dh0 (dc0); weight gradients are the sums over
    the sequences. With ``flip``, reverse=True is checked against the time-flipped valid
    part run forward."""
    p = Problem(case)
    y, finals, grads = run(impl, p, lengths=MIXED_LENGTHS, reverse=reverse)
    dtype = np.float64
    weight_sums = {name: 0 for name in ("dw_ih", "dw_hh", "db_ih", "db_hh")}
    for b, L in enumerate(MIXED_LENGTHS):
        if L == 0:
            continue  # test_zero_length_carries_the_state covers it
        ya, finals_a, grads_a, order = run_alone(impl, p, b, L, reverse, flip)
        assert_close(y[:L, b], ya, dtype, f"y[:{L}, {b}]")
        for k, (f, fa) in enumerate(zip(finals, finals_a)):
            assert_close(f[b], fa, dtype, f"final state {k}[{b}]")
        assert_close(grads.dx[:L, b], grads_a.dx[order][:, 0], dtype, f"dx[:{L}, {b}]")
        assert_close(grads.dh0[b], grads_a.dh0[0], dtype, f"dh0[{b}]")
        if p.cell == "lstm":
            assert_close(grads.dc0[b], grads_a.dc0[0], dtype, f"dc0[{b}]")
        for name in weight_sums:
            weight_sums[name] = weight_sums[name] + getattr(grads_a, name)
    for name, total in weight_sums.items():
        assert_close(getattr(grads, name), total, dtype, f"{name} vs sum over sequences")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
def test_zero_length_carries_the_state(impl, case, reverse, training):
    p = Problem(case)
    lengths = np.array([T, 0, 2, 0, T])
    y, finals, cache = forward(impl, p.cell, p.x, p.states, p.params, lengths=lengths,
                               reverse=reverse, training=training, **p.extra)
    for b in (1, 3):
        assert np.all(y[:, b] == 0)
        for k, (f, s) in enumerate(zip(finals, p.states)):
            np.testing.assert_array_equal(f[b], s[b], err_msg=f"final state {k}[{b}]")
    if not training:
        return
    grads = backward(impl, p.cell, p.dy, p.dstates, cache)
    for b in (1, 3):
        assert np.all(grads.dx[:, b] == 0)
        np.testing.assert_array_equal(grads.dh0[b], p.dstates[0][b], err_msg=f"dh0[{b}]")
        if p.cell == "lstm":
            np.testing.assert_array_equal(grads.dc0[b], p.dstates[1][b],
                                          err_msg=f"dc0[{b}]")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_all_lengths_zero(impl, case, reverse):
    p = Problem(case)
    y, finals, grads = run(impl, p, lengths=np.zeros(B, np.int64), reverse=reverse)
    assert np.all(y == 0)
    for f, s in zip(finals, p.states):
        np.testing.assert_array_equal(f, s)
        assert not np.shares_memory(f, s)
    assert np.all(grads.dx == 0)
    for d, s in zip(grads[1:1 + n_states(p.cell)], p.dstates):
        np.testing.assert_array_equal(d, s)
        assert not np.shares_memory(d, s)
    for name in ("dw_ih", "dw_hh", "db_ih", "db_hh"):
        assert np.all(getattr(grads, name) == 0), name


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_full_lengths_equal_no_lengths(impl, case, reverse):
    p = Problem(case)
    for lengths in (np.full(B, T), [T] * B, np.full(B, T, np.int32), np.full(B, T, np.uint8)):
        got = run(impl, p, lengths=lengths, reverse=reverse)
        want = run(impl, p, lengths=None, reverse=reverse)
        assert_results_same(impl, got, want, f"lengths {lengths!r}")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_padding_values_do_not_matter_forward(impl, case, reverse):
    """Steps beyond a length are never read: NaN/inf padding leaves y and h_T alone,
    as with PyTorch's packed sequences."""
    p = Problem(case)
    want_y, want_finals, _ = forward(impl, p.cell, p.x, p.states, p.params,
                                     lengths=MIXED_LENGTHS, reverse=reverse, **p.extra)
    padded = p.x.copy()
    mask = np.arange(T)[:, None] >= MIXED_LENGTHS[None, :]
    padded[mask] = np.nan
    padded[-1, 1] = np.inf
    with np.errstate(all="ignore"):
        y, finals, _ = forward(impl, p.cell, padded, p.states, p.params,
                               lengths=MIXED_LENGTHS, reverse=reverse, **p.extra)
    assert_same(impl, y, want_y, "y")
    for k, (f, w) in enumerate(zip(finals, want_finals)):
        assert_same(impl, f, w, f"final state {k}")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("padding", ["large-x", "nan-dy", "inf-dy"])
def test_padding_values_do_not_matter_backward(impl, case, reverse, padding):
    """The gradients ignore padded ``x`` and ``dy`` at padded steps."""
    p = Problem(case)
    want = run(impl, p, lengths=MIXED_LENGTHS, reverse=reverse)
    mask = np.arange(T)[:, None] >= MIXED_LENGTHS[None, :]
    value, where = padding.split("-")
    arrays = {"x": p.x.copy(), "dy": p.dy.copy()}
    arrays[where][mask] = {"large": 1e6, "nan": np.nan, "inf": -np.inf}[value]
    with np.errstate(all="ignore"):
        got = run(impl, p, x=arrays["x"], dy=arrays["dy"], lengths=MIXED_LENGTHS,
                  reverse=reverse)
    assert_results_same(impl, got, want, f"{value} padding in {where}")


@pytest.mark.parametrize("case", CASES)
def test_non_finite_padding_in_x_does_not_reach_the_gradients(impl, case):
    """NaN/inf in x beyond a sequence's length: PyTorch's packed sequences never see
    the padding, so every gradient, dw_ih included, stays what zero padding gives.
    (A dW_ih = dG^T X over all T*B rows turns 0 * NaN into NaN.)"""
    p = Problem(case)
    mask = np.arange(T)[:, None] >= MIXED_LENGTHS[None, :]
    for reverse in (False, True):
        want = run(impl, p, lengths=MIXED_LENGTHS, reverse=reverse)
        x = p.x.copy()
        x[mask] = np.nan
        x[-1, 1] = np.inf
        with np.errstate(all="ignore"):
            got = run(impl, p, x=x, lengths=MIXED_LENGTHS, reverse=reverse)
        assert_results_same(impl, got, want, f"reverse={reverse}")


# ----------------------------------------------------------------------------- reverse

@pytest.mark.parametrize("case", CASES)
def test_reverse_without_lengths_is_the_flipped_sequence(impl, case):
    p = Problem(case)
    y, finals, grads = run(impl, p, reverse=True)
    yf, finals_f, grads_f = run(impl, p, x=p.x[::-1], dy=p.dy[::-1], reverse=False)
    assert_close(y, yf[::-1], np.float64, "y")
    for k, (a, b) in enumerate(zip(finals, finals_f)):
        assert_close(a, b, np.float64, f"final state {k}")
    assert_close(grads.dx, grads_f.dx[::-1], np.float64, "dx")
    for name in grads._fields[1:]:
        assert_close(getattr(grads, name), getattr(grads_f, name), np.float64, name)


@pytest.mark.parametrize("case", CASES)
def test_reverse_changes_the_result(impl, case):
    """A guard against a reverse flag that is ignored."""
    p = Problem(case)
    y, _, _ = forward(impl, p.cell, p.x, p.states, p.params, **p.extra)
    yr, _, _ = forward(impl, p.cell, p.x, p.states, p.params, reverse=True, **p.extra)
    assert np.max(np.abs(y - yr)) > 1e-3


# ----------------------------------------------------------------------------- batch

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", ["none", "mixed"])
@pytest.mark.parametrize("poison", ["random", "nan", "inf", "huge"])
def test_batch_elements_are_independent(impl, case, reverse, lengths, poison):
    """Changing every other batch element (inputs, states, lengths, incoming gradients)
    changes nothing in element b's outputs and input/state gradients."""
    p = Problem(case)
    lengths = lengths_param(lengths)
    want_y, want_finals, want_grads = run(impl, p, lengths=lengths, reverse=reverse)
    keep = [0, 3] if lengths is None else [0, 1, 3]  # full, partial, one step
    others = [b for b in range(B) if b not in keep]
    rng = np.random.default_rng(99)
    value = {"random": None, "nan": np.nan, "inf": np.inf, "huge": 1e300}[poison]

    def poisoned(array, axis):
        array = array.copy()
        index = (slice(None),) * axis + (others,)
        shape = array[index].shape
        array[index] = rng.standard_normal(shape) * 3 if value is None else value
        return array

    x = poisoned(p.x, 1)
    dy = poisoned(p.dy, 1)
    states = tuple(poisoned(s, 0) for s in p.states)
    dstates = tuple(poisoned(d, 0) for d in p.dstates)
    new_lengths = lengths
    if lengths is not None:
        new_lengths = lengths.copy()
        new_lengths[others] = T - new_lengths[others]
    with np.errstate(all="ignore"):
        y, finals, grads = run(impl, p, x=x, states=states, dy=dy, dstates=dstates,
                               lengths=new_lengths, reverse=reverse)
    for b in keep:
        assert_same(impl, y[:, b], want_y[:, b], f"y[:, {b}]")
        for k, (f, w) in enumerate(zip(finals, want_finals)):
            assert_same(impl, f[b], w[b], f"final state {k}[{b}]")
        assert_same(impl, grads.dx[:, b], want_grads.dx[:, b], f"dx[:, {b}]")
        assert_same(impl, grads.dh0[b], want_grads.dh0[b], f"dh0[{b}]")
        if p.cell == "lstm":
            assert_same(impl, grads.dc0[b], want_grads.dc0[b], f"dc0[{b}]")


# ----------------------------------------------------------------------------- no in-place

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("lengths", ["none", "mixed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_inputs_are_not_modified(impl, case, dtype, lengths, reverse):
    """Forward and backward leave every argument as it was, also when the arguments
    are already C-contiguous arrays of the parameter dtype (no defensive copy)."""
    p = Problem(case, dtype=dtype)
    lengths = lengths_param(lengths)
    originals = {name: a.copy() for name, a in p.arrays().items()}
    lengths_copy = None if lengths is None else lengths.copy()
    y, finals, cache = forward(impl, p.cell, p.x, p.states, p.params, lengths=lengths,
                               reverse=reverse, **p.extra)
    y_copy = y.copy()
    finals_copy = tuple(f.copy() for f in finals)
    grads = backward(impl, p.cell, p.dy, p.dstates, cache)
    for name, array in p.arrays().items():
        np.testing.assert_array_equal(array, originals[name], err_msg=name, strict=True)
    if lengths is not None:
        np.testing.assert_array_equal(lengths, lengths_copy, err_msg="lengths", strict=True)
    # backward does not write into what forward returned either
    np.testing.assert_array_equal(y, y_copy, err_msg="y after backward")
    for k, (f, c) in enumerate(zip(finals, finals_copy)):
        np.testing.assert_array_equal(f, c, err_msg=f"final state {k} after backward")
    assert grads.dx.shape == p.x.shape


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("split", [False, True], ids=["one-block", "batch-split"])
def test_overwriting_y_leaves_the_backward_as_it_was(impl, case, split, monkeypatch):
    """y is the caller's own array (the cache keeps the states apart): overwriting it
    between forward and backward, as an in-place activation would, changes no
    gradient; with lengths, both directions, on one block and with the batch split
    over threads (each thread copying its rows into y)."""
    from rnnfast import _threads

    if split:
        monkeypatch.setattr(_threads, "MIN_ROWS_PER_THREAD", 1)
        monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 1)
    p = Problem(case, T=7, B=9)
    lengths = np.array([7, 3, 0, 1, 7, 6, 2, 7, 5])
    for reverse in (False, True):
        kwargs = dict(lengths=lengths, reverse=reverse, **p.extra)
        y, _, cache = forward(impl, p.cell, p.x, p.states, p.params, **kwargs)
        expected_y = y.copy()
        y[...] = np.nan
        grads = backward(impl, p.cell, p.dy, p.dstates, cache)
        y_again, _, cache = forward(impl, p.cell, p.x, p.states, p.params, **kwargs)
        np.testing.assert_array_equal(y_again, expected_y)
        expected = backward(impl, p.cell, p.dy, p.dstates, cache)
        for name in expected._fields:
            np.testing.assert_array_equal(getattr(grads, name), getattr(expected, name),
                                          err_msg=f"{name} reverse={reverse}")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("T_, B_", [(T, B), (0, B), (T, 0)], ids=["full", "T0", "B0"])
def test_results_do_not_share_memory_with_inputs_or_each_other(impl, case, T_, B_):
    p = Problem(case, T=T_, B=B_)
    lengths = None if B_ == 0 else np.array([T_, 0, T_ // 2, 1 if T_ else 0, 0])
    y, finals, cache = forward(impl, p.cell, p.x, p.states, p.params, lengths=lengths,
                               **p.extra)
    grads = backward(impl, p.cell, p.dy, p.dstates, cache)
    results = {"y": y, **{f"final{k}": f for k, f in enumerate(finals)},
               **grads._asdict()}
    inputs = p.arrays()
    for rname, r in results.items():
        for iname, a in inputs.items():
            assert not np.shares_memory(r, a), f"{rname} shares memory with {iname}"
        for other, o in results.items():
            if other != rname:
                assert not np.shares_memory(r, o), f"{rname} shares memory with {other}"


# ----------------------------------------------------------------------------- dtypes

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("param_dtype, other_dtype", [
    (np.float32, np.float64), (np.float64, np.float32), (np.float32, np.float16),
    (np.float64, np.float16)], ids=["f32<-f64", "f64<-f32", "f32<-f16", "f64<-f16"])
def test_other_float_widths_are_cast_to_the_parameter_dtype(impl, case, param_dtype,
                                                            other_dtype):
    """Every argument but w_ih in another float width: the results have w_ih's dtype
    and equal running with those arguments cast up front."""
    p = Problem(case, dtype=param_dtype)

    def other(a):
        return a.astype(other_dtype)

    def cast(a):  # what the implementation must do with other(a)
        return other(a).astype(param_dtype)

    w_ih, w_hh, b_ih, b_hh = p.params
    got = run(impl, p, x=other(p.x), states=tuple(map(other, p.states)),
              params=(w_ih, other(w_hh), other(b_ih), other(b_hh)),
              dy=other(p.dy), dstates=tuple(map(other, p.dstates)), lengths=MIXED_LENGTHS)
    want = run(impl, p, x=cast(p.x), states=tuple(map(cast, p.states)),
               params=(w_ih, cast(w_hh), cast(b_ih), cast(b_hh)),
               dy=cast(p.dy), dstates=tuple(map(cast, p.dstates)), lengths=MIXED_LENGTHS)
    y, finals, grads = got
    assert y.dtype == param_dtype
    assert all(f.dtype == param_dtype for f in finals)
    for name, g in grads._asdict().items():
        assert g.dtype == param_dtype, f"{name} is {g.dtype}, expected {np.dtype(param_dtype)}"
    assert_results_same(impl, got, want)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_results_have_the_parameter_dtype_and_shapes(impl, case, dtype):
    p = Problem(case, dtype=dtype)
    cell, G = p.cell, GATES[p.cell]
    y, finals, grads = run(impl, p, lengths=MIXED_LENGTHS)
    assert isinstance(y, np.ndarray) and y.dtype == dtype and y.shape == (T, B, H)
    for f in finals:
        assert isinstance(f, np.ndarray) and f.dtype == dtype and f.shape == (B, H)
    expected = {"dx": (T, B, D), "dh0": (B, H), "dc0": (B, H), "dw_ih": (G * H, D),
                "dw_hh": (G * H, H), "db_ih": (G * H,), "db_hh": (G * H,)}
    assert type(grads).__name__ == {"rnn": "RNNGrads", "lstm": "LSTMGrads",
                                    "gru": "GRUGrads"}[cell]
    for name, g in grads._asdict().items():
        assert isinstance(g, np.ndarray), name
        assert g.dtype == dtype, f"{name} is {g.dtype}"
        assert g.shape == expected[name], f"{name} has shape {g.shape}"
        assert np.all(np.isfinite(g)), name


@pytest.mark.parametrize("case", CASES)
def test_float32_and_float64_agree(impl, case):
    """The same problem in both widths agrees to float32 accuracy."""
    p64 = Problem(case, dtype=np.float64)
    p32 = Problem(case, dtype=np.float32)
    got = run(impl, p32, lengths=MIXED_LENGTHS)
    want = run(impl, p64, x=p32.x.astype(np.float64),
               states=tuple(s.astype(np.float64) for s in p32.states),
               params=tuple(w.astype(np.float64) for w in p32.params),
               dy=p32.dy.astype(np.float64),
               dstates=tuple(d.astype(np.float64) for d in p32.dstates),
               lengths=MIXED_LENGTHS)
    (y, finals, grads), (y0, finals0, grads0) = got, want
    assert_close(y, y0, np.float32, "y")
    for a, b in zip(finals, finals0):
        assert_close(a, b, np.float32, "final state")
    for name in grads._fields:
        assert_close(getattr(grads, name), getattr(grads0, name), np.float32, name,
                     rtol=1e-3)


# ----------------------------------------------------------------------------- layouts

def relayout(array, layout):
    """The same values as ``array`` in another memory layout."""
    array = np.asarray(array)
    if layout == "fortran":
        return np.asfortranarray(array)
    if layout == "transposed-view":  # C-order values read through a transposed buffer
        return np.ascontiguousarray(array.T).T
    if layout == "strided":  # every other element of a buffer twice the size
        buffer = np.zeros(tuple(2 * n + 1 for n in array.shape), array.dtype)
        view = buffer[tuple(slice(1, None, 2) for _ in array.shape)]
        view[...] = array
        return view
    if layout == "negative":  # negative strides on every axis
        flipped = tuple(slice(None, None, -1) for _ in array.shape)
        return np.ascontiguousarray(array[flipped])[flipped]
    if layout == "readonly":
        out = array.copy()
        out.flags.writeable = False
        return out
    if layout == "list":
        return array.tolist()
    raise ValueError(layout)


LAYOUTS = ("fortran", "transposed-view", "strided", "negative", "readonly", "list")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_memory_layout_does_not_change_results(impl, case, layout, reverse):
    p = Problem(case)
    want = run(impl, p, lengths=MIXED_LENGTHS, reverse=reverse)
    a = {name: relayout(v, layout) for name, v in p.arrays().items()}
    if layout not in ("list", "readonly"):
        assert not a["x"].flags.c_contiguous
    states = (a["h0"], a["c0"]) if p.cell == "lstm" else (a["h0"],)
    dstates = (a["dh_T"], a["dc_T"]) if p.cell == "lstm" else (a["dh_T"],)
    got = run(impl, p, x=a["x"], states=states,
              params=(a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]), dy=a["dy"],
              dstates=dstates, lengths=relayout(MIXED_LENGTHS, layout), reverse=reverse)
    assert_results_same(impl, got, want, layout)


@pytest.mark.parametrize("case", CASES)
def test_broadcast_read_only_views(impl, case):
    """Zero-stride, read-only views (np.broadcast_to) are read correctly."""
    p = Problem(case)
    h0 = np.broadcast_to(p.states[0][0], (B, H))
    states = (h0,) + tuple(np.broadcast_to(s[1], (B, H)) for s in p.states[1:])
    b_ih = np.broadcast_to(np.float64(0.25), p.params[2].shape)
    params = (p.params[0], p.params[1], b_ih, p.params[3])
    dy = np.broadcast_to(p.dy[:, :1], p.dy.shape)
    got = run(impl, p, x=p.x, states=states, params=params, dy=dy, lengths=MIXED_LENGTHS)
    want = run(impl, p, x=p.x, states=tuple(map(np.array, states)),
               params=tuple(map(np.array, params)), dy=np.array(dy), lengths=MIXED_LENGTHS)
    assert_results_same(impl, got, want)


# ----------------------------------------------------------------------------- empty

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", [False, True], ids=["nolengths", "lengths"])
@pytest.mark.parametrize("T_, B_", [(0, B), (T, 0), (0, 0)], ids=["T0", "B0", "T0B0"])
def test_empty_time_or_batch(impl, case, dtype, reverse, lengths, T_, B_):
    p = Problem(case, T=T_, B=B_, dtype=dtype)
    G = GATES[p.cell]
    lengths = np.zeros(B_, np.int64) if lengths else None
    for training in (False, True):
        y, finals, cache = forward(impl, p.cell, p.x, p.states, p.params, lengths=lengths,
                                   reverse=reverse, training=training, **p.extra)
        assert y.shape == (T_, B_, H) and y.dtype == dtype
        for f, s in zip(finals, p.states):
            assert f.shape == (B_, H) and f.dtype == dtype
            np.testing.assert_array_equal(f, s)
            assert not np.shares_memory(f, s)
        assert (cache is None) == (not training)
    for dy, dstates in ((p.dy, p.dstates), (None, (None,) * n_states(p.cell))):
        _, _, cache = forward(impl, p.cell, p.x, p.states, p.params, lengths=lengths,
                              reverse=reverse, **p.extra)
        grads = backward(impl, p.cell, dy, dstates, cache)
        assert grads.dx.shape == (T_, B_, D) and grads.dx.dtype == dtype
        for k, (g, d) in enumerate(zip(grads[1:1 + n_states(p.cell)], dstates)):
            assert g.shape == (B_, H) and g.dtype == dtype
            np.testing.assert_array_equal(g, np.zeros((B_, H)) if d is None else d,
                                          err_msg=f"initial state gradient {k}")
        shapes = {"dw_ih": (G * H, D), "dw_hh": (G * H, H), "db_ih": (G * H,),
                  "db_hh": (G * H,)}
        for name, shape in shapes.items():
            g = getattr(grads, name)
            assert g.shape == shape and g.dtype == dtype, name
            assert np.all(g == 0), f"{name} is not zero"


# ----------------------------------------------------------------------------- None = 0

NONE_ARGS = {"rnn": ("h0", "b_ih", "b_hh", "dy", "dh_T"),
             "gru": ("h0", "b_ih", "b_hh", "dy", "dh_T"),
             "lstm": ("h0", "c0", "b_ih", "b_hh", "dy", "dh_T", "dc_T")}
NONE_CASES = [(case, name) for case in CASES for name in NONE_ARGS[cell_of(case)[0]]]
NONE_CASES += [(case, "all") for case in CASES]


@pytest.mark.parametrize("case, name", NONE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_none_means_zeros(impl, case, name, dtype, reverse):
    p = Problem(case, dtype=dtype)
    names = NONE_ARGS[p.cell] if name == "all" else (name,)

    def spelled(as_none):
        a = p.arrays()
        for n in names:
            a[n] = None if as_none else np.zeros_like(a[n])
        states = (a["h0"], a["c0"]) if p.cell == "lstm" else (a["h0"],)
        dstates = (a["dh_T"], a["dc_T"]) if p.cell == "lstm" else (a["dh_T"],)
        return run(impl, p, states=states,
                   params=(a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"]), dy=a["dy"],
                   dstates=dstates, use_problem_grads=False, lengths=MIXED_LENGTHS,
                   reverse=reverse)

    assert_results_same(impl, spelled(True), spelled(False), f"None for {names}")


# ----------------------------------------------------------------------------- input_grad

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("lengths", ["none", "mixed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_without_input_grad_dx_is_none_and_the_rest_identical(impl, case, dtype, lengths,
                                                              reverse):
    p = Problem(case, dtype=dtype)
    assert_input_grad_skips_only_dx(impl, p, lengths=lengths_param(lengths), reverse=reverse)


# (T, B, D, H): threads over the steps' rows and side by side; a W_ih of 1 MiB or more
# in float32, freed after dx when dx runs
@pytest.mark.parametrize("shape", [(4, 16, 40, 24), (3, 2, 9, 30), (3, 6, 260, 256)],
                         ids=str)
@pytest.mark.parametrize("case", CASES)
def test_without_input_grad_on_threads_and_large_input_weights(case, shape):
    p = Problem(case, *shape, dtype=np.float32, seed=3)
    assert_input_grad_skips_only_dx(impl_module("rnnfast"), p)


def assert_input_grad_skips_only_dx(module, problem, **kwargs):
    """input_grad=False gives dx None and every other gradient bitwise as with dx."""
    def grads(input_grad):
        _, _, cache = forward(module, problem.cell, problem.x, problem.states,
                              problem.params, **problem.extra, **kwargs)
        return backward(module, problem.cell, problem.dy, problem.dstates, cache,
                        input_grad=input_grad)

    with_dx, without_dx = grads(True), grads(False)
    assert with_dx.dx.shape == problem.x.shape and without_dx.dx is None
    for name in with_dx._fields[1:]:
        np.testing.assert_array_equal(getattr(without_dx, name), getattr(with_dx, name),
                                      err_msg=name, strict=True)


# ----------------------------------------------------------------------------- caches

@pytest.mark.parametrize("case", CASES)
def test_caches_are_independent(impl, case):
    """Two forward calls in flight: each backward uses its own cache only, whatever the
    order, and repeated runs give identical results."""
    p, q = Problem(case, seed=1), Problem(case, seed=2)
    want_p = run(impl, p, lengths=MIXED_LENGTHS)
    want_q = run(impl, q, reverse=True)
    yp, fp, cp = forward(impl, p.cell, p.x, p.states, p.params, lengths=MIXED_LENGTHS,
                         **p.extra)
    yq, fq, cq = forward(impl, q.cell, q.x, q.states, q.params, reverse=True, **q.extra)
    gq = backward(impl, q.cell, q.dy, q.dstates, cq)
    gp = backward(impl, p.cell, p.dy, p.dstates, cp)
    assert_results_same(impl, (yp, fp, gp), want_p, "first")
    assert_results_same(impl, (yq, fq, gq), want_q, "second")
