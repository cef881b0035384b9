"""Finite-difference gradient checks, float64, for every input and parameter.

For each cell the scalar loss

    L = sum(y * dy) + sum(h_T * dh) (+ sum(c_T * dc) for the LSTM)

with fixed random dy (T, B, H), dh (B, H), dc (B, H) is differentiated two ways:
analytically by ``<cell>_backward(dy, dh, [dc,] cache)`` and numerically, element by
element, by the five-point central difference

    dL/dp ~ (L(p - 2e) - 8 L(p - e) + 8 L(p + e) - L(p + 2e)) / (12 e)

whose truncation error is O(e^4). Each test checks one argument (x, h0, c0, w_ih, w_hh,
b_ih or b_hh) of one cell, with and without variable lengths (one of them zero) and in
both directions. Shape legend: T = steps, B = batch, D = input features, H = hidden units.
"""

import numpy as np
import pytest

from conftest import (CELL_VARIANTS, PARAM_NAMES, assert_close, backward,
                      five_point_derivative, forward, impl_module, make_inputs, make_params,
                      random_lengths)

IMPLS = ("rnnfast", "rnnfast.reference")

# Step e and tolerance. With |L| = O(10) in float64, rounding in L costs about
# 1e-15 * 10 * 18 / (12 e) ~ 1e-11 for e = 1e-3; the truncation error e^4 * L^(5) / 30
# is ~1e-12 for the smooth, O(1)-derivative losses here. Measured worst difference (both
# impls): 2e-11. A scale-relative 1e-7 (|diff| <= 1e-7 * max(1, max|grad|), as in
# assert_close) leaves a margin of over 1000x, and still catches small formula errors:
# scaling one LSTM gate derivative by (1 + 1e-6) fails these tests.
FD_STEP = 1e-3
FD_RTOL = 1e-7

# Arrays with more elements than this are checked at a random subset of elements.
MAX_CHECKED_ELEMENTS = 30

# (T, B, D, H): the workhorse, the smallest problem, and a wider one checked on subsets.
SHAPES = [(4, 3, 3, 2), (1, 1, 1, 1), (5, 3, 4, 5)]

ARGUMENTS = {"rnn": ("x", "h0") + PARAM_NAMES,
             "gru": ("x", "h0") + PARAM_NAMES,
             "lstm": ("x", "h0", "c0") + PARAM_NAMES}
CASES = [(variant, argument) for variant, (cell, _) in CELL_VARIANTS.items()
         for argument in ARGUMENTS[cell]]


def shape_id(shape):
    return "T{}B{}D{}H{}".format(*shape)


def relu_preactivations(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse):
    """(T, B, H) pre-activations of the relu RNN, NaN at inactive steps.

        pre_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh,   h_t = relu(pre_t) if active
    """
    T, B, _ = x.shape
    active = (np.ones((T, B), bool) if lengths is None
              else np.arange(T)[:, None] < lengths[None, :])           # (T, B)
    pre = np.empty((T, B, w_hh.shape[0]))
    h = h0
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        pre[t] = x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        h = np.where(active[t][:, None], np.maximum(pre[t], 0), h)
    return np.where(active[:, :, None], pre, np.nan)


# A relu pre-activation closer to 0 than this could cross the kink inside the stencil
# (a perturbation of 2 * FD_STEP moves pre-activations here by well under 0.01).
RELU_MARGIN = 0.02


def draw_problem(variant, shape, lengths, reverse, rng):
    """Random x (T, B, D), states ((B, H),...) and params for one cell variant.

    For the relu RNN, redraws (deterministically, from the seeded rng) until every
    active pre-activation is at least RELU_MARGIN away from the kink at 0 and some unit
    is on: otherwise finite differences straddle the kink, or every gradient is zero and
    the check would be vacuous.
    """
    cell, _ = CELL_VARIANTS[variant]
    T, B, D, H = shape
    for _attempt in range(1000):
        x, states = make_inputs(cell, T, B, D, H, np.float64, rng)
        params = make_params(cell, D, H, np.float64, rng)
        if variant != "rnn_relu":
            return x, states, params
        pre = relu_preactivations(x, *states, *params, lengths, reverse)
        if np.nanmin(np.abs(pre)) > RELU_MARGIN and np.nanmax(pre) > 0:
            return x, states, params
    raise AssertionError(f"no relu problem away from the kink in 1000 draws for {shape}")


def varied_lengths(T, B, rng):
    """(B,) lengths in [0, T]: sequence 0 full, sequence 1 partial (in [1, T-1]) when
    T > 1 and B > 2, the last one empty when B > 1, the rest random."""
    lengths = random_lengths(T, B, rng)
    if T > 1 and B > 2:
        lengths[1] = rng.integers(1, T)
    return lengths


def checked_indices(shape, rng):
    """Every index of an array of ``shape``, or a random subset if it is large."""
    indices = list(np.ndindex(*shape))
    if len(indices) <= MAX_CHECKED_ELEMENTS:
        return indices
    chosen = rng.choice(len(indices), size=MAX_CHECKED_ELEMENTS, replace=False)
    return [indices[i] for i in sorted(chosen)]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("variant,argument", CASES, ids=[f"{v}-{a}" for v, a in CASES])
@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_matches_finite_differences(impl, variant, argument, shape, with_lengths,
                                             reverse, rng):
    module = impl_module(impl)
    cell, kwargs = CELL_VARIANTS[variant]
    T, B, D, H = shape
    dtype = np.float64

    lengths = varied_lengths(T, B, rng) if with_lengths else None
    dy = rng.standard_normal((T, B, H))
    x, states, params = draw_problem(variant, shape, lengths, reverse, rng)
    dstates = tuple(rng.standard_normal((B, H)) for _ in states)   # dh (, dc)

    # Every differentiable argument by name; the loss below reads them from here, so
    # perturbing an array in place perturbs the next forward call.
    arrays = dict(zip(ARGUMENTS[cell], (x, *states, *params)))

    def run_forward():
        state_names = ("h0", "c0") if cell == "lstm" else ("h0",)
        return forward(module, cell, arrays["x"], tuple(arrays[n] for n in state_names),
                       tuple(arrays[n] for n in PARAM_NAMES), lengths=lengths,
                       reverse=reverse, **kwargs)

    # Analytic gradient first: the cache refers to the arrays we perturb below.
    y, finals, cache = run_forward()
    grads = backward(module, cell, dy, dstates, cache)
    analytic = getattr(grads, "d" + argument)
    assert analytic.shape == arrays[argument].shape

    # Backstop for draw_problem: the relu on/off pattern must not change in the stencil.
    relu_pattern = (y > 0) if variant == "rnn_relu" else None

    def loss():
        y, finals, _ = run_forward()
        if relu_pattern is not None:
            # y = relu(pre-activation) at active steps: a changed sign pattern means the
            # stencil straddles a kink, where finite differences are meaningless.
            assert np.array_equal(y > 0, relu_pattern), (
                "a relu pre-activation crossed 0 inside the finite-difference stencil; "
                "raise RELU_MARGIN")
        return (np.sum(y * dy)
                + sum(np.sum(state * dstate) for state, dstate in zip(finals, dstates)))

    target = arrays[argument]
    indices = checked_indices(target.shape, rng)
    numeric = np.array([five_point_derivative(loss, target, index, FD_STEP)
                        for index in indices])
    selected = np.array([analytic[index] for index in indices])
    # Guard against a vacuous check (e.g. every checked element outside the lengths).
    assert np.any(np.abs(numeric) > 1e-6), f"d{argument} is zero at every checked element"
    assert_close(selected, numeric, dtype, rtol=FD_RTOL,
                 name=f"d{argument} at {len(indices)} elements (lengths={lengths})")
