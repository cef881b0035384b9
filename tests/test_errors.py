"""Every documented error of the functional API, asserted with its message.

Both implementations validate through ``rnnfast._checks``, so each case runs on the
kernels (``rnnfast``) and on the reference (``rnnfast.reference``) and expects the same
exception type and message. Shapes: T = 3 steps, B = 2 sequences, D = 4 inputs,
H = 5 hidden units; G = stacked gates (RNN 1, LSTM 4, GRU 3).
"""

import re

import numpy as np
import pytest

from conftest import CELLS, GATES, backward, impl_module, make_inputs, make_params

IMPLS = ("rnnfast", "rnnfast.reference")
T, B, D, H = 3, 2, 4, 5
CELL_NAMES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
ARG_ORDER = {"rnn": ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"),
             "gru": ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"),
             "lstm": ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")}


# ----------------------------------------------------------------------------- helpers

def load(name):
    """The implementation module; skips while the kernels' API is not built yet."""
    module = impl_module(name)
    if not hasattr(module, "lstm_forward"):
        pytest.skip(f"{name} does not export the functional API yet (extension not built)")
    return module


@pytest.fixture(params=IMPLS)
def impl(request):
    return load(request.param)


def valid_args(cell, dtype=np.float64):
    """A dict of valid forward arguments by name, for (T, B, D, H) above."""
    rng = np.random.default_rng(7)
    x, states = make_inputs(cell, T, B, D, H, dtype, rng)
    w_ih, w_hh, b_ih, b_hh = make_params(cell, D, H, dtype, rng)
    args = dict(x=x, h0=states[0], w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    if cell == "lstm":
        args["c0"] = states[1]
    return args


def call_forward(module, cell, args, **kwargs):
    """``module.<cell>_forward`` with the arguments in ``args`` (by name), positionally."""
    function = getattr(module, f"{cell}_forward")
    return function(*(args[name] for name in ARG_ORDER[cell]), **kwargs)


def fresh_cache(module, cell, **kwargs):
    return call_forward(module, cell, valid_args(cell), **kwargs)[-1]


def no_dstates(cell):
    return (None, None) if cell == "lstm" else (None,)


def g(cell):
    """The gate multiplier as the messages write it: "" for the RNN, "4*" for the LSTM."""
    return "" if GATES[cell] == 1 else f"{GATES[cell]}*"


def raises(exception, message):
    """pytest.raises matching ``message`` literally (from its start)."""
    return pytest.raises(exception, match="^" + re.escape(message))


def shape_message(name, text, expected, got):
    return f"{name} must have shape {text} = {tuple(expected)}, got {tuple(got)}"


def w_hh_message(cell, got):
    """w_hh sets H from its column count, so its message says which H it read."""
    G = GATES[cell]
    text = f"({G}*H, H)" if G > 1 else "(H, H)"
    if len(got) == 2 and got[1] >= 1:
        H = got[1]
        return (f"w_hh must have shape {text} = ({G * H}, {H}) for {CELL_NAMES[cell]}, "
                f"H being its column count, got {tuple(got)}")
    return (f"w_hh must have shape {text} for {CELL_NAMES[cell]} with hidden size H >= 1, "
            f"got {tuple(got)}")


# ----------------------------------------------------------------------------- shapes

def forward_shape_cases():
    """(cell, argument, bad shape, expected ValueError message)."""
    cases = []
    for cell in CELLS:
        GH = GATES[cell] * H
        for bad in [(T, B), (T, B, D, 1), (T * B * D,)]:
            cases.append((cell, "x", bad, f"x must have shape (T, B, D), got {bad}"))
        states = ("h0", "c0") if cell == "lstm" else ("h0",)
        for name in states:
            for bad in [(B, H + 1), (B + 1, H), (H,), (1, B, H), (H, B)]:
                cases.append((cell, name, bad, shape_message(name, "(B, H)", (B, H), bad)))
        for bad in [(GH, D + 1), (GH + 1, D), (GH, D, 1), (GH * D,), (D, GH)]:
            cases.append((cell, "w_ih", bad,
                          shape_message("w_ih", f"({g(cell)}H, D)", (GH, D), bad)))
        w_hh_cases = [(GH, H + 1), (GH + 1, H), (GH * H,), (GH, H, 1), (0, 0)]
        if GATES[cell] > 1:
            w_hh_cases.append((H, GH))
        for other in CELLS:  # the recurrent weight of another cell
            if GATES[other] != GATES[cell]:
                w_hh_cases.append((GATES[other] * H, H))
        for bad in w_hh_cases:
            cases.append((cell, "w_hh", bad, w_hh_message(cell, bad)))
        for name in ("b_ih", "b_hh"):
            bads = [(GH + 1,), (GH, 1), (1, GH), (0,)]
            if GATES[cell] > 1:
                bads.append((H,))
            for bad in bads:
                cases.append((cell, name, bad,
                              shape_message(name, f"({g(cell)}H,)", (GH,), bad)))
    return cases


@pytest.mark.parametrize("cell, name, bad, message", forward_shape_cases(),
                         ids=lambda v: str(v).replace(" ", ""))
def test_forward_wrong_shape(impl, cell, name, bad, message):
    args = valid_args(cell)
    args[name] = np.zeros(bad)
    with raises(ValueError, message):
        call_forward(impl, cell, args)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad", [(B + 1,), (B - 1,), (B, 1), (1, B), (), (0,)],
                         ids=str)
def test_lengths_wrong_shape(impl, cell, bad):
    lengths = np.ones(bad, dtype=np.int64)
    with raises(ValueError, shape_message("lengths", "(B,)", (B,), bad)):
        call_forward(impl, cell, valid_args(cell), lengths=lengths)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", [(T, B, 0), (0, B, 0), (T, 0, 0), (0, 0, 0)], ids=str)
def test_no_input_features(impl, cell, shape):
    args = valid_args(cell)
    args["x"] = np.zeros(shape)
    args["w_ih"] = np.zeros((GATES[cell] * H, 0))
    if shape[1] == 0:
        args["h0"] = np.zeros((0, H))
        if cell == "lstm":
            args["c0"] = np.zeros((0, H))
    with raises(ValueError, f"x must have at least one feature: shape (T, B, D) with "
                            f"D >= 1, got {shape}"):
        call_forward(impl, cell, args)


def backward_shape_cases():
    cases = []
    for cell in CELLS:
        for bad in [(T, B, H + 1), (T + 1, B, H), (T, B + 1, H), (T, B, D), (B, H),
                    (T, B, H, 1)]:
            cases.append((cell, "dy", bad,
                          shape_message("dy", "(T, B, H)", (T, B, H), bad)))
        for name in (("dh_T", "dc_T") if cell == "lstm" else ("dh_T",)):
            for bad in [(B, H + 1), (B + 1, H), (H,), (1, B, H)]:
                cases.append((cell, name, bad, shape_message(name, "(B, H)", (B, H), bad)))
    return cases


def scalar_cases():
    """A 0-d array (a NumPy scalar) where an array is expected: the message must report
    the shape given, ``()``, not the (1,) that ``np.ascontiguousarray`` turns it into."""
    cases = []
    for cell in ("lstm",):  # the LSTM has every kind of argument
        GH = GATES[cell] * H
        cases.append((cell, "x", "x must have shape (T, B, D), got ()"))
        for name in (("h0", "c0") if cell == "lstm" else ("h0",)):
            cases.append((cell, name, shape_message(name, "(B, H)", (B, H), ())))
        cases.append((cell, "w_ih", shape_message("w_ih", f"({g(cell)}H, D)", (GH, D), ())))
        cases.append((cell, "w_hh", w_hh_message(cell, ())))
        for name in ("b_ih", "b_hh"):
            cases.append((cell, name, shape_message(name, f"({g(cell)}H,)", (GH,), ())))
        cases.append((cell, "dy", shape_message("dy", "(T, B, H)", (T, B, H), ())))
        for name in (("dh_T", "dc_T") if cell == "lstm" else ("dh_T",)):
            cases.append((cell, name, shape_message(name, "(B, H)", (B, H), ())))
    return cases


@pytest.mark.parametrize("cell, name, message", scalar_cases(),
                         ids=lambda v: str(v).replace(" ", ""))
def test_scalar_argument_reports_its_shape(impl, cell, name, message):
    if name in ("dy", "dh_T", "dc_T"):
        cache = fresh_cache(impl, cell)
        with raises(ValueError, message):
            call_backward(impl, cell, cache, **{name: np.float64(0.5)})
    else:
        args = valid_args(cell)
        args[name] = np.float64(0.5)
        with raises(ValueError, message):
            call_forward(impl, cell, args)


def call_backward(module, cell, cache, dy=None, dh_T=None, dc_T=None, **kwargs):
    dstates = (dh_T, dc_T) if cell == "lstm" else (dh_T,)
    return backward(module, cell, dy, dstates, cache, **kwargs)


@pytest.mark.parametrize("cell, name, bad, message", backward_shape_cases(),
                         ids=lambda v: str(v).replace(" ", ""))
def test_backward_wrong_shape(impl, cell, name, bad, message):
    cache = fresh_cache(impl, cell)
    with raises(ValueError, message):
        call_backward(impl, cell, cache, **{name: np.zeros(bad)})


# ----------------------------------------------------------------------------- dtypes

def bad_dtype_arrays(shape):
    """(label, array of ``shape``, the dtype the message names) for non-float input."""
    return [
        ("int64", np.ones(shape, np.int64), "int64"),
        ("int32", np.ones(shape, np.int32), "int32"),
        ("uint8", np.ones(shape, np.uint8), "uint8"),
        ("bool", np.ones(shape, bool), "bool"),
        ("complex128", np.ones(shape, np.complex128), "complex128"),
        ("complex64", np.ones(shape, np.complex64), "complex64"),
        ("object", np.ones(shape).astype(object), "object"),
        ("str", np.full(shape, "1.0"), "<U3"),
        ("bytes", np.full(shape, b"1"), "|S1"),
        ("int-list", np.ones(shape, np.int64).tolist(), "int64"),
    ]


def arg_shape(cell, name):
    GH = GATES[cell] * H
    return {"x": (T, B, D), "h0": (B, H), "c0": (B, H), "w_ih": (GH, D), "w_hh": (GH, H),
            "b_ih": (GH,), "b_hh": (GH,), "dy": (T, B, H), "dh_T": (B, H),
            "dc_T": (B, H)}[name]


FORWARD_FLOAT_ARGS = {cell: [n for n in ARG_ORDER[cell] if n != "w_ih"] for cell in CELLS}
BACKWARD_ARGS = {"rnn": ("dy", "dh_T"), "gru": ("dy", "dh_T"),
                 "lstm": ("dy", "dh_T", "dc_T")}


def dtype_cases(arguments):
    cases = []
    for cell in CELLS:
        for name in arguments[cell]:
            for label, array, dtype_text in bad_dtype_arrays(arg_shape(cell, name)):
                cases.append(pytest.param(cell, name, array, dtype_text,
                                          id=f"{cell}-{name}-{label}"))
    return cases


@pytest.mark.parametrize("param_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell, name, array, dtype_text", dtype_cases(FORWARD_FLOAT_ARGS))
def test_forward_non_float_dtype(impl, cell, name, array, dtype_text, param_dtype):
    args = valid_args(cell, param_dtype)
    args[name] = array
    with raises(TypeError, f"{name} must be a floating-point array, got dtype {dtype_text}"):
        call_forward(impl, cell, args)


@pytest.mark.parametrize("cell, name, array, dtype_text", dtype_cases(BACKWARD_ARGS))
def test_backward_non_float_dtype(impl, cell, name, array, dtype_text):
    cache = fresh_cache(impl, cell)
    with raises(TypeError, f"{name} must be a floating-point array, got dtype {dtype_text}"):
        call_backward(impl, cell, cache, **{name: array})


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", ["x", "h0", "w_ih", "w_hh", "b_ih"])
def test_unconvertible_input(impl, cell, name):
    """A ragged nested list cannot become an array: TypeError naming the argument."""
    ragged = [[1.0, 2.0], [3.0]]
    args = valid_args(cell)
    args[name] = ragged
    with raises(TypeError, f"{name} must be an array of floats, got list that NumPy "
                           f"cannot convert"):
        call_forward(impl, cell, args)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", ["x", "w_hh"])
def test_required_array_is_none(impl, cell, name):
    args = valid_args(cell)
    args[name] = None
    with raises(TypeError, f"{name} must be a floating-point array, got dtype object"):
        call_forward(impl, cell, args)


W_IH_BAD_DTYPES = [np.float16, np.int64, np.int32, np.uint8, bool, np.complex64,
                   np.complex128, object, "U3"]
if np.dtype(np.longdouble) not in (np.dtype(np.float64),):
    W_IH_BAD_DTYPES.append(np.longdouble)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", W_IH_BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_w_ih_dtype_chooses_float32_or_float64(impl, cell, dtype):
    args = valid_args(cell)
    args["w_ih"] = np.ones(arg_shape(cell, "w_ih")).astype(dtype)
    with raises(TypeError, f"w_ih must be float32 or float64 (it chooses the dtype), "
                           f"got dtype {np.dtype(dtype)}"):
        call_forward(impl, cell, args)


@pytest.mark.parametrize("cell", CELLS)
def test_w_ih_none(impl, cell):
    args = valid_args(cell)
    args["w_ih"] = None
    with raises(TypeError, "w_ih must be float32 or float64 (it chooses the dtype), "
                           "got dtype object"):
        call_forward(impl, cell, args)


# ----------------------------------------------------------------------------- lengths

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths, dtype_text", [
    (np.array([3.0, 1.0]), "float64"),
    (np.array([3.0, 1.0], np.float32), "float32"),
    (np.array([3.0, 1.0], np.float16), "float16"),
    ([3.0, 1.0], "float64"),
    (np.array([True, False]), "bool"),
    (np.array([3, 1], np.complex128), "complex128"),
    (np.array([3, 1], dtype=object), "object"),
    (np.array(["3", "1"]), "<U1"),
], ids=lambda v: str(v).replace(" ", ""))
def test_lengths_not_integer(impl, cell, lengths, dtype_text):
    with raises(TypeError, f"lengths must be an array of integers, got dtype {dtype_text}"):
        call_forward(impl, cell, valid_args(cell), lengths=lengths)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths, low, high", [
    ([-1, 3], -1, 3), ([0, -5], -5, 0), ([T + 1, 1], 1, T + 1), ([0, 100], 0, 100),
    ([-1, T + 1], -1, T + 1),
], ids=str)
def test_lengths_out_of_range(impl, cell, lengths, low, high):
    message = (f"lengths must satisfy 0 <= lengths[b] <= T = {T}, "
               f"got values from {low} to {high}")
    for dtype in (np.int64, np.int32, np.int8):
        with raises(ValueError, message):
            call_forward(impl, cell, valid_args(cell), lengths=np.array(lengths, dtype))


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_out_of_range_unsigned_and_empty_time(impl, cell):
    with raises(ValueError, f"lengths must satisfy 0 <= lengths[b] <= T = {T}, "
                            f"got values from 2 to 200"):
        call_forward(impl, cell, valid_args(cell), lengths=np.array([200, 2], np.uint8))
    args = valid_args(cell)
    args["x"] = np.zeros((0, B, D))
    with raises(ValueError, "lengths must satisfy 0 <= lengths[b] <= T = 0, "
                            "got values from 0 to 1"):
        call_forward(impl, cell, args, lengths=[0, 1])


# ----------------------------------------------------------------------------- nonlinearity

@pytest.mark.parametrize("nonlinearity", ["sigmoid", "Tanh", "RELU", "", " tanh", None, 1],
                         ids=repr)
def test_bad_nonlinearity(impl, nonlinearity):
    with raises(ValueError, f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}"):
        call_forward(impl, "rnn", valid_args("rnn"), nonlinearity=nonlinearity)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_nonlinearity_is_rnn_only(impl, cell):
    with pytest.raises(TypeError, match="nonlinearity"):
        call_forward(impl, cell, valid_args(cell), nonlinearity="tanh")


# ----------------------------------------------------------------------------- caches

@pytest.mark.parametrize("cell", CELLS)
def test_backward_after_inference(impl, cell):
    cache = fresh_cache(impl, cell, training=False)
    assert cache is None
    name = impl.__name__
    with raises(ValueError, f"{name}.{cell}_backward got cache=None: the forward call ran "
                            f"with training=False, which keeps nothing for backward"):
        call_backward(impl, cell, cache)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad", [None, 0, 1, "no", np.array(False)], ids=repr)
def test_input_grad_must_be_a_bool(impl, cell, bad):
    cache = fresh_cache(impl, cell)
    with raises(TypeError, f"input_grad must be True or False, got {type(bad).__name__}"):
        call_backward(impl, cell, cache, input_grad=bad)
    grads = call_backward(impl, cell, cache, input_grad=np.False_)  # the error consumed nothing
    assert grads.dx is None


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("not_a_cache, type_name", [
    ({}, "dict"), (object(), "object"), ((1, 2), "tuple"), ("cache", "str"),
    (np.zeros(3), "ndarray"),
], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_backward_not_a_cache(impl, cell, not_a_cache, type_name):
    name = impl.__name__
    with raises(TypeError, f"{name}.{cell}_backward expects the cache returned by "
                           f"{name}.{cell}_forward, got {type_name}"):
        call_backward(impl, cell, not_a_cache)


@pytest.mark.parametrize("cell", CELLS)
def test_backward_forward_result_instead_of_cache(impl, cell):
    """Passing the whole forward result (a tuple) instead of its last item."""
    result = call_forward(impl, cell, valid_args(cell))
    name = impl.__name__
    with raises(TypeError, f"{name}.{cell}_backward expects the cache returned by "
                           f"{name}.{cell}_forward, got tuple"):
        call_backward(impl, cell, result)


@pytest.mark.parametrize("source, target", [(s, t) for s in CELLS for t in CELLS if s != t])
def test_backward_cache_of_another_cell(impl, source, target):
    cache = fresh_cache(impl, source)
    name = impl.__name__
    with raises(ValueError, f"{name}.{target}_backward expects the cache returned by "
                            f"{name}.{target}_forward, got one from {name}.{source}_forward"):
        call_backward(impl, target, cache)
    # the refused call did not use the cache up: its own backward still runs
    grads = call_backward(impl, source, cache)
    assert grads.dx.shape == (T, B, D)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("source, target", [("rnnfast.reference", "rnnfast"),
                                            ("rnnfast", "rnnfast.reference")])
def test_backward_cache_of_the_other_implementation(cell, source, target):
    source_module, target_module = load(source), load(target)
    cache = fresh_cache(source_module, cell)
    with raises(ValueError, f"{target}.{cell}_backward expects the cache returned by "
                            f"{target}.{cell}_forward, got one from {source}.{cell}_forward"):
        call_backward(target_module, cell, cache)
    grads = call_backward(source_module, cell, cache)
    assert grads.dx.shape == (T, B, D)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", [None, [T, 0]], ids=["full", "lengths"])
def test_second_backward_on_one_cache(impl, cell, lengths):
    cache = fresh_cache(impl, cell, lengths=lengths)
    call_backward(impl, cell, cache, dy=np.ones((T, B, H)))
    name = impl.__name__
    message = (f"{name}.{cell}_backward: this cache was already used by a backward call "
               f"(backward reuses its buffers); run forward again")
    with raises(ValueError, message):
        call_backward(impl, cell, cache, dy=np.ones((T, B, H)))
    with raises(ValueError, message):  # still refused, whatever the incoming gradients
        call_backward(impl, cell, cache)


@pytest.mark.parametrize("cell", CELLS)
def test_refused_gradients_leave_the_cache_usable(impl, cell):
    """A backward call refused for a bad ``dy`` must not use the cache up."""
    args = valid_args(cell)
    cache = call_forward(impl, cell, args)[-1]
    with pytest.raises(ValueError, match="^dy must have shape"):
        call_backward(impl, cell, cache, dy=np.zeros((T, B, H + 1)))
    with pytest.raises(TypeError, match="^dh_T must be a floating-point array"):
        call_backward(impl, cell, cache, dh_T=np.zeros((B, H), np.int64))
    dy = np.random.default_rng(1).standard_normal((T, B, H))
    grads = call_backward(impl, cell, cache, dy=dy)
    expected = call_backward(impl, cell, call_forward(impl, cell, args)[-1], dy=dy)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
