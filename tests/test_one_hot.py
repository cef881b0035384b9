"""One-hot inputs in training: where every row of x is one-hot or zero, the kernels
look the input projection up in W_ih and sum dW_ih from dG's rows instead of the two
GEMMs over D (rnnfast.functional's docstring). The results must be the GEMMs' up to
the order of the sums (the forward exactly), match the reference, and keep the GEMMs'
NaN where W_ih or dG is not finite.

The GEMM path is forced with ``functional.ONE_HOT_LOOKUP = False``.
"""

import numpy as np
import pytest

from conftest import (CELLS, DTYPES, GATES, assert_close, backward, forward, make_params)
from rnnfast import _kernels, functional, reference


def one_hot_inputs(T, B, D, dtype, rng, zero_rows=True):
    """x (T, B, D): one 1 per row at a random column, some rows all zeros."""
    x = np.zeros((T, B, D), dtype)
    columns = rng.integers(0, D, (T, B))
    x[np.arange(T)[:, None], np.arange(B)[None, :], columns] = 1
    if zero_rows:
        x[rng.random((T, B)) < 0.2] = 0
    return x


def train(cell, x, params, dy, dstates, gemm=False, monkeypatch=None, **kwargs):
    """Forward and backward through the kernels; ``gemm`` forces the GEMM path."""
    if gemm:
        monkeypatch.setattr(functional, "ONE_HOT_LOOKUP", False)
    states = (None,) * len(dstates)
    y, finals, cache = forward(functional, cell, x, states, params, **kwargs)
    grads = backward(functional, cell, dy, dstates, cache)
    if gemm:
        monkeypatch.undo()
    return y, finals, grads


def problem(cell, T, B, D, H, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = one_hot_inputs(T, B, D, dtype, rng)
    params = make_params(cell, D, H, dtype, rng)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dstates = tuple(rng.standard_normal((B, H)).astype(dtype)
                    for _ in range(2 if cell == "lstm" else 1))
    return x, params, dy, dstates


# ----------------------------------------------------------------------------- detection

def test_one_hot_ids_finds_the_columns_and_zero_rows():
    x = np.zeros((2, 3, 4), np.float32)
    x[0, 0, 2] = x[0, 2, 0] = x[1, 1, 3] = 1
    x[1, 2, 1] = -0.0
    np.testing.assert_array_equal(_kernels.one_hot_ids(x), [2, -1, 0, -1, 3, -1])
    assert _kernels.one_hot_ids(x).dtype == np.int32
    np.testing.assert_array_equal(_kernels.one_hot_ids(x.astype(np.float64)),
                                  [2, -1, 0, -1, 3, -1])


@pytest.mark.parametrize("change", ["two ones", "a 2", "a 0.5", "a -1", "NaN", "inf"])
def test_anything_else_is_not_one_hot(change):
    x = np.zeros((3, 2, 5), np.float64)
    x[:, :, 1] = 1
    row = x[2, 1]
    if change == "two ones":
        row[3] = 1
    else:
        row[1] = {"a 2": 2, "a 0.5": 0.5, "a -1": -1, "NaN": np.nan, "inf": np.inf}[change]
    assert _kernels.one_hot_ids(x) is None


def test_empty_inputs_are_not_one_hot():
    for shape in [(0, 2, 3), (2, 0, 3), (2, 3, 0)]:
        assert _kernels.one_hot_ids(np.zeros(shape, np.float32)) is None


# ----------------------------------------------------------------------------- results

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
# (T, B, D, H): one thread; batch rows split over threads (the suite's thresholds)
@pytest.mark.parametrize("shape", [(6, 3, 7, 5), (9, 16, 40, 24)], ids=str)
def test_one_hot_matches_the_gemms_and_the_reference(cell, dtype, lengths, reverse, shape,
                                                     monkeypatch):
    T, B, D, H = shape
    x, params, dy, dstates = problem(cell, T, B, D, H, dtype)
    options = {"reverse": reverse}
    if lengths:
        options["lengths"] = np.random.default_rng(1).integers(0, T + 1, B)
    looked_up = train(cell, x, params, dy, dstates, **options)
    multiplied = train(cell, x, params, dy, dstates, gemm=True, monkeypatch=monkeypatch,
                       **options)
    y, finals, grads = looked_up
    # the forward's lookup is exact: the GEMM adds only zeros to each W_ih entry
    np.testing.assert_array_equal(y, multiplied[0])
    for final, expected in zip(finals, multiplied[1]):
        np.testing.assert_array_equal(final, expected)
    for name in grads._fields:
        assert_close(getattr(grads, name), getattr(multiplied[2], name), dtype, name)
    states = (None,) * len(dstates)
    _, _, cache = forward(reference, cell, x, states, params, **options)
    expected = backward(reference, cell, dy, dstates, cache)
    for name in grads._fields:
        assert_close(getattr(grads, name), getattr(expected, name), dtype, name)


@pytest.mark.parametrize("cell", CELLS)
def test_non_finite_input_weights_keep_the_gemms_nan(cell, monkeypatch):
    """0 * inf is NaN: a non-finite W_ih reaches every row through the GEMM, so the
    lookup must not run."""
    x, params, dy, dstates = problem(cell, 4, 3, 6, 5, np.float64)
    params[0][1, 2] = np.inf
    y, _, grads = train(cell, x, params, dy, dstates)
    y_gemm, _, grads_gemm = train(cell, x, params, dy, dstates, gemm=True,
                                  monkeypatch=monkeypatch)
    assert np.isnan(y).any()
    np.testing.assert_array_equal(y, y_gemm)
    for name in grads._fields:
        np.testing.assert_array_equal(getattr(grads, name), getattr(grads_gemm, name),
                                      err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B", [3, 16], ids=["B3", "B16"])
def test_non_finite_gate_gradients_keep_the_gemms_nan(cell, B, monkeypatch):
    """An inf in dy makes dG inf on some rows; dG^T x then has NaN wherever x is 0,
    which the sums of dG's rows alone would not produce."""
    x, params, dy, dstates = problem(cell, 5, B, 9, 4, np.float64)
    dy[2, 1, 3] = np.inf
    grads = train(cell, x, params, dy, dstates)[2]
    grads_gemm = train(cell, x, params, dy, dstates, gemm=True, monkeypatch=monkeypatch)[2]
    assert np.isnan(grads_gemm.dw_ih).any()
    for name in grads._fields:
        actual, expected = getattr(grads, name), getattr(grads_gemm, name)
        np.testing.assert_array_equal(np.isfinite(actual), np.isfinite(expected),
                                      err_msg=name)
        finite = np.isfinite(expected)
        assert_close(actual[finite], expected[finite], np.float64, name)


def test_inference_is_unchanged_by_one_hot_inputs(monkeypatch):
    x, params, _, _ = problem("lstm", 7, 4, 10, 6, np.float32)
    y = functional.lstm_forward(x, None, None, *params, training=False)[0]
    monkeypatch.setattr(functional, "ONE_HOT_LOOKUP", False)
    np.testing.assert_array_equal(y, functional.lstm_forward(x, None, None, *params,
                                                             training=False)[0])
