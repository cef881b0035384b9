"""The Cython kernels against the NumPy reference: outputs, final states and every
gradient, for every cell, dtype, direction and length pattern, on ordinary and edge
shapes (T, B, D, H = 1, and a long T = 1000)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnfast
from rnnfast import reference
from rnnfast._blas import BLAS_Trans, gemm_memview
from conftest import (CELL_VARIANTS, DTYPES, GRAD_NAMES, assert_close, backward, forward,
                      make_inputs, make_params, random_lengths)

NoTrans, Trans = BLAS_Trans.NoTrans, BLAS_Trans.Trans

SHAPES = [  # (T, B, D, H)
    (1, 1, 1, 1),
    (1, 3, 2, 4),
    (6, 1, 3, 5),
    (7, 4, 1, 3),
    (5, 3, 4, 1),
    (33, 5, 6, 7),   # longer than one inference chunk of 32 steps
    (12, 9, 16, 32),
    (4, 2, 21, 35),  # weights packed in register blocks plus leftover rows and columns
    (5, 1, 9, 40),   # a batch of one against 2 to 5 panels of weights (the one-row product)
    (130, 8, 37, 45),  # weight gradients over 2**20 multiply-adds: 1040 rows in blocks
    (11, 8, 3, 13),    # inference of 8 rows and more: one product over [x_t | h_{t-1}]
    (9, 17, 20, 9),    # the same, with row blocks of 8 and 6 and a leftover row
]


def run_both(variant, T, B, D, H, dtype, lengths, reverse, seed=0):
    """Forward (training and inference) and backward through both implementations.

    Returns {name: (kernel result, reference result)} for y, the final states and
    every gradient, plus the inference outputs.
    """
    cell, kwargs = CELL_VARIANTS[variant]
    rng = np.random.default_rng(seed)
    params = make_params(cell, D, H, dtype, rng)
    x, states = make_inputs(cell, T, B, D, H, dtype, rng)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dstates = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in states)
    results = {}
    for module in (rnnfast, reference):
        y, finals, cache = forward(module, cell, x, states, params, lengths=lengths,
                                   reverse=reverse, **kwargs)
        y_inf, finals_inf, no_cache = forward(module, cell, x, states, params,
                                              lengths=lengths, reverse=reverse,
                                              training=False, **kwargs)
        assert no_cache is None
        grads = backward(module, cell, dy, dstates, cache)
        named = {"y": y, "y (inference)": y_inf, "h_T": finals[0],
                 "h_T (inference)": finals_inf[0]}
        if cell == "lstm":
            named.update({"c_T": finals[1], "c_T (inference)": finals_inf[1]})
        named.update(zip(GRAD_NAMES[cell], grads))
        for name, value in named.items():
            results.setdefault(name, []).append(value)
    return results


def assert_all_close(results, dtype):
    for name, (kernel, expected) in results.items():
        assert kernel.dtype == np.dtype(dtype), f"{name}: dtype {kernel.dtype}"
        assert_close(kernel, expected, dtype, name=name)


@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_kernels_match_reference(variant, dtype, shape, reverse, with_lengths):
    T, B, D, H = shape
    lengths = random_lengths(T, B, np.random.default_rng(T * B), with_zero=True) \
        if with_lengths else None
    assert_all_close(run_both(variant, T, B, D, H, dtype, lengths, reverse), dtype)


@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True])
def test_long_sequence(variant, dtype, reverse):
    """T = 1000: errors must not grow along the sequence beyond the tolerance."""
    T, B, D, H = 1000, 3, 4, 8
    lengths = np.array([T, 517, 0])
    assert_all_close(run_both(variant, T, B, D, H, dtype, lengths, reverse), dtype)


@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_input_weights(variant, dtype):
    """A W_ih over 4 MiB (here H * D > 2**20 values for every cell) takes BLAS for the
    input projection and dx instead of the packed kernel."""
    T, B, D, H = 3, 2, 16400, 64
    lengths = np.array([3, 1])
    assert_all_close(run_both(variant, T, B, D, H, dtype, lengths, reverse=False), dtype)


@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T, B, D, H", [(4, 8, 16400, 16), (2, 8, 512, 512)])
def test_input_weights_over_1mib_on_two_threads(variant, dtype, T, B, D, H):
    """A W_ih of 1 MiB or more on two threads: backward frees it (packed or not) once
    dx is done, then runs the weight gradients split by rows (D != H) or one per
    thread (D == H)."""
    lengths = np.array([T, 1, 0, T, 2, T, 1, T])
    assert_all_close(run_both(variant, T, B, D, H, dtype, lengths, reverse=False), dtype)


@settings(max_examples=60, deadline=None)
@given(variant=st.sampled_from(list(CELL_VARIANTS)), dtype=st.sampled_from(DTYPES),
       T=st.integers(1, 12), B=st.integers(1, 5), D=st.integers(1, 6), H=st.integers(1, 9),
       reverse=st.booleans(), data=st.data())
def test_kernels_match_reference_property(variant, dtype, T, B, D, H, reverse, data):
    lengths = data.draw(st.none() | st.lists(st.integers(0, T), min_size=B, max_size=B))
    lengths = None if lengths is None else np.array(lengths)
    seed = data.draw(st.integers(0, 2**16))
    assert_all_close(run_both(variant, T, B, D, H, dtype, lengths, reverse, seed), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [NoTrans, Trans])
@pytest.mark.parametrize("trans_b", [NoTrans, Trans])
def test_gemm_row_major(dtype, trans_a, trans_b):
    """The BLAS wrapper computes c = alpha op(a) op(b) + beta c in place, row-major."""
    rng = np.random.default_rng(3)
    m, n, k = 5, 7, 3
    a = rng.standard_normal((k, m) if trans_a == Trans else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b == Trans else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    op_a = a.T if trans_a == Trans else a
    op_b = b.T if trans_b == Trans else b
    expected = 2.0 * op_a.astype(np.float64) @ op_b + 0.5 * c
    out = c.copy()
    gemm_memview(trans_a, trans_b, 2.0, a, b, 0.5, out)
    assert_close(out, expected, dtype, name="gemm")
