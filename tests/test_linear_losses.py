"""Linear, mse_loss and cross_entropy: against torch.nn.Linear / torch.nn.functional
(skipped without torch), against finite differences in float64, and their errors."""

import json
import os
import warnings

import numpy as np
import pytest

from rnnfast.linear import Linear
from rnnfast.losses import cross_entropy, mse_loss

from conftest import DTYPES, assert_close


def require_torch():
    """torch, or skip this test without it; CI sets RNNFAST_REQUIRE_TORCH=1 so that a
    missing torch fails there instead of skipping."""
    if os.environ.get("RNNFAST_REQUIRE_TORCH") == "1":
        import torch
        return torch
    return pytest.importorskip("torch")


LEADING = [(), (5,), (3, 4), (2, 3, 4), (0, 2)]


def torch_linear(torch, lin):
    """A torch.nn.Linear holding ``lin``'s parameters, in ``lin``'s dtype."""
    tdtype = torch.float64 if lin.dtype == np.float64 else torch.float32
    ref = torch.nn.Linear(lin.in_features, lin.out_features, bias=lin.bias, dtype=tdtype)
    with torch.no_grad():
        for name, value in lin.params.items():
            getattr(ref, name).copy_(torch.from_numpy(value))
    return ref


# ------------------------------------------------------------------------ Linear

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("leading", LEADING)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(dtype, leading, bias, rng):
    torch = require_torch()
    D, O = 6, 3
    lin = Linear(D, O, bias=bias, dtype=dtype, seed=1)
    ref = torch_linear(torch, lin)
    # Two forward/backward calls: the gradients accumulate over both, as .grad does.
    for call in range(2):
        x = rng.standard_normal(leading + (D,)).astype(dtype)
        dy = rng.standard_normal(leading + (O,)).astype(dtype)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        yt = ref(xt)
        yt.backward(torch.from_numpy(dy))
        y = lin(x)
        dx = lin.backward(dy)
        assert y.dtype == dtype and dx.dtype == dtype
        assert_close(y, yt.detach().numpy(), dtype, f"y (call {call})")
        assert_close(dx, xt.grad.numpy(), dtype, f"dx (call {call})")
        for name, grad in lin.grads.items():
            assert grad.dtype == dtype
            assert_close(grad, getattr(ref, name).grad.numpy(), dtype, f"d{name} (call {call})")
    grads = dict(lin.grads)
    lin.zero_grad()
    for name, grad in lin.grads.items():
        assert grad is grads[name] and not grad.any(), name


def test_linear_init_is_torch_default_and_reproducible():
    D, O = 16, 300
    lin = Linear(D, O, seed=3)
    assert set(lin.params) == {"weight", "bias"}
    assert lin.params["weight"].shape == (O, D) and lin.params["bias"].shape == (O,)
    bound = 1 / np.sqrt(D)
    for name, value in lin.params.items():
        assert value.dtype == np.float32
        assert np.abs(value).max() <= bound and np.abs(value).max() > 0.9 * bound, name
        assert not lin.grads[name].any() and lin.grads[name].shape == value.shape
    again = Linear(D, O, seed=3)
    other = Linear(D, O, seed=4)
    wide = Linear(D, O, seed=3, dtype="float64")
    assert np.array_equal(again.params["weight"], lin.params["weight"])
    assert not np.array_equal(other.params["weight"], lin.params["weight"])
    assert np.array_equal(wide.params["weight"].astype(np.float32), lin.params["weight"])
    assert "bias" not in Linear(D, O, bias=False).params


def test_linear_protocol():
    lin = Linear(4, 2, dtype=np.float64, seed=0)
    assert lin.training and lin.eval() is lin and not lin.training
    assert lin.train() is lin and lin.training
    config = lin.config()
    assert config == {"in_features": 4, "out_features": 2, "bias": True,
                      "dtype": "float64", "seed": 0}
    assert json.loads(json.dumps(config)) == config
    rebuilt = type(lin)(**config)
    assert rebuilt.config() == config
    for name in lin.params:
        assert np.array_equal(rebuilt.params[name], lin.params[name])

    state = lin.state_dict()
    assert list(state) == ["weight", "bias"]
    state["weight"][:] = 7.0                       # a copy: the layer is untouched
    assert not np.any(lin.params["weight"] == 7.0)
    weight = lin.params["weight"]
    lin.load_state_dict({"weight": np.ones((2, 4), np.float32), "bias": [1, 2]})
    assert lin.params["weight"] is weight          # loaded in place
    assert lin.params["weight"].dtype == np.float64 and np.all(weight == 1)
    assert np.array_equal(lin.params["bias"], [1.0, 2.0])
    # eval mode computes the same and still allows backward
    x = np.ones((3, 4))
    y_train = lin.train()(x)
    y_eval = lin.eval()(x)
    assert np.array_equal(y_train, y_eval)
    assert lin.backward(np.ones((3, 2))).shape == (3, 4)
    assert np.all(lin.grads["bias"] == 3)
    assert "Linear(in_features=4, out_features=2, bias=True, dtype=float64)" == repr(lin)


def test_linear_load_torch_state_dict():
    torch = require_torch()
    torch.manual_seed(0)
    ref = torch.nn.Linear(5, 3)                            # float32, requires_grad params
    lin = Linear(5, 3, dtype=np.float64)
    lin.load_state_dict(ref.state_dict())
    lin.load_state_dict(dict(ref.named_parameters()))      # tensors that require grad
    x = np.random.default_rng(0).standard_normal((4, 5))
    expected = ref(torch.from_numpy(x).float()).detach().numpy()
    assert_close(lin(x), expected, np.float32, "y")


def test_linear_load_state_dict_errors():
    lin = Linear(3, 2, seed=0)
    before = lin.state_dict()
    good = {"weight": np.zeros((2, 3)), "bias": np.zeros(2)}
    cases = [({"weight": good["weight"]}, ValueError, r"missing keys \['bias'\]"),
             ({**good, "extra": np.zeros(1)}, ValueError, r"unexpected keys \['extra'\]"),
             ({**good, "bias": np.zeros(3)}, ValueError, r"'bias' must have shape \(2,\), "
                                                         r"got \(3,\)"),
             ({**good, "weight": np.zeros((3, 2))}, ValueError, r"'weight' must have shape"),
             ({**good, "bias": np.array(["a", "b"])}, TypeError, "'bias' must hold real"),
             ([1, 2], TypeError, "expects a dict")]
    for state, error, message in cases:
        with pytest.raises(error, match=message):
            lin.load_state_dict(state)
    for name, value in before.items():                    # nothing was written
        assert np.array_equal(lin.params[name], value)
    Linear(3, 2, bias=False).load_state_dict({"weight": good["weight"]})
    with pytest.raises(ValueError, match="unexpected keys"):
        Linear(3, 2, bias=False).load_state_dict(good)


def test_linear_without_input_grad(rng):
    """input_grad=False returns None for dx and adds the same weight gradients."""
    with_dx, without_dx = Linear(4, 3, seed=0), Linear(4, 3, seed=0)
    x, dy = rng.standard_normal((5, 2, 4)), rng.standard_normal((5, 2, 3))
    with_dx(x)
    without_dx(x)
    assert with_dx.backward(dy).shape == x.shape
    assert without_dx.backward(dy, input_grad=False) is None
    for name, grad in with_dx.grads.items():
        np.testing.assert_array_equal(without_dx.grads[name], grad, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_products_on_threads_match_numpy(dtype, rng, monkeypatch):
    """Products of 8 rows or more split their rows over the threads (the suite's
    thresholds); the same layer on one thread (NumPy's products) agrees."""
    from rnnfast import _threads
    x = rng.standard_normal((3, 7, 5)).astype(dtype)     # N = 21 rows
    dy = rng.standard_normal((3, 7, 9)).astype(dtype)
    results = []
    for threads in (2, 1):
        monkeypatch.setattr(_threads, "max_threads", lambda: threads)
        lin = Linear(5, 9, seed=3, dtype=dtype)
        lin.grads["weight"] += 1                            # backward adds into it
        results.append((lin(x), lin.backward(dy), lin.grads["weight"].copy()))
    for name, threaded, single in zip(("y", "dx", "dW"), *results):
        assert_close(threaded, single, dtype, name)


def test_linear_weight_gradient_held_elsewhere(rng):
    """A gradient array replaced by a non-contiguous view still receives dW."""
    lin = Linear(6, 10, seed=0, dtype=np.float64)
    twin = Linear(6, 10, seed=0, dtype=np.float64)
    storage = np.zeros((6, 10))
    lin.grads["weight"] = storage.T                         # (10, 6), F-ordered
    x, dy = rng.standard_normal((12, 6)), rng.standard_normal((12, 10))
    for layer in (lin, twin):
        layer(x)
        layer.backward(dy)
    assert_close(storage.T, twin.grads["weight"], np.float64, "dW")


def test_threaded_products_check_their_shapes():
    from rnnfast._blas import BLAS_Trans
    from rnnfast._products import multiply
    a, b = np.ones((4, 3)), np.ones((3, 5))
    with pytest.raises(ValueError, match="op\\(a\\) 4x3, op\\(b\\) 3x5 and c 4x4 do not fit"):
        multiply(BLAS_Trans.NoTrans, BLAS_Trans.NoTrans, a, b, 0.0, np.empty((4, 4)), 2)
    c = np.full((4, 5), 2.0)
    multiply(BLAS_Trans.NoTrans, BLAS_Trans.NoTrans, np.ones((4, 0)), np.ones((0, 5)), 0.5,
             c, 8)                                          # empty sum, more parts than rows
    np.testing.assert_array_equal(c, np.ones((4, 5)))
    multiply(BLAS_Trans.Trans, BLAS_Trans.NoTrans, np.ones((3, 4)), b, 1.0, c, 8)
    np.testing.assert_array_equal(c, np.full((4, 5), 4.0))


def test_linear_errors():
    lin = Linear(4, 3, seed=0)
    with pytest.raises(ValueError, match=r"backward called before forward"):
        lin.backward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., in_features\) = "
                                         r"\(\.\.\., 4\), got \(2, 5\)"):
        lin(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"got \(\)"):
        lin(np.float32(1.0))
    with pytest.raises(TypeError, match="x must be a floating-point array, got dtype int64"):
        lin(np.zeros((2, 4), np.int64))
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        lin(np.zeros((2, 4), np.complex64))
    lin(np.zeros((2, 4)))                                  # float64 input: cast
    with pytest.raises(ValueError, match=r"dy must have the shape .* = \(2, 3\), got \(2, 4\)"):
        lin.backward(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="dy must be a floating-point array"):
        lin.backward(np.zeros((2, 3), bool))
    with pytest.raises(TypeError, match="input_grad must be True or False, got int 0"):
        lin.backward(np.zeros((2, 3), np.float32), input_grad=0)
    for kwargs, error, message in [
            (dict(in_features=0, out_features=2), ValueError, "in_features must be >= 1, got 0"),
            (dict(in_features=2, out_features=-1), ValueError, "out_features must be >= 1"),
            (dict(in_features=2.0, out_features=2), TypeError, "in_features must be an integer"),
            (dict(in_features=True, out_features=2), TypeError, "in_features must be an int"),
            (dict(in_features=2, out_features=2, dtype=np.int32), TypeError,
             "dtype must be float32 or float64"),
            (dict(in_features=2, out_features=2, dtype="float16"), TypeError, "dtype must be"),
            (dict(in_features=2, out_features=2, bias=1), TypeError, "bias must be True or"),
            (dict(in_features=2, out_features=2, seed=1.5), TypeError, "seed must be None"),
            (dict(in_features=2, out_features=2, seed=-1), ValueError, "seed must be None")]:
        with pytest.raises(error, match=message):
            Linear(**kwargs)


def test_linear_gradients_by_finite_differences(rng):
    lin = Linear(3, 2, dtype=np.float64, seed=5)
    x = rng.standard_normal((4, 2, 3))
    w = rng.standard_normal((4, 2, 2))             # loss = sum(w * y)
    lin(x)
    dx = lin.backward(w)
    eps = 1e-6
    numeric_dx = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        numeric_dx[i] = (np.sum(w * lin(xp)) - np.sum(w * lin(xm))) / (2 * eps)
    assert_close(dx, numeric_dx, np.float64, "dx", rtol=1e-7)
    for name, param in lin.params.items():
        numeric = np.zeros_like(param)
        for i in np.ndindex(param.shape):
            old = param[i]
            param[i] = old + eps
            plus = np.sum(w * lin(x))
            param[i] = old - eps
            minus = np.sum(w * lin(x))
            param[i] = old
            numeric[i] = (plus - minus) / (2 * eps)
        assert_close(lin.grads[name], numeric, np.float64, f"d{name}", rtol=1e-7)


# ------------------------------------------------------------------------ mse_loss

def torch_mse(torch, pred, target, mask=None):
    """(loss, dpred) from torch: mse_loss, or the masked mean written out."""
    p = torch.from_numpy(pred.copy()).requires_grad_(True)
    t = torch.from_numpy(target)
    if mask is None:
        loss = torch.nn.functional.mse_loss(p, t)
    else:
        m = torch.from_numpy(np.broadcast_to(np.asarray(mask, bool), pred.shape).copy())
        loss = torch.nn.functional.mse_loss(p[m], t[m])   # mean over masked-in elements
    loss.backward()
    return loss.item(), p.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (5, 3), (6, 4, 2), (3, 2, 1)])
def test_mse_loss_matches_torch(dtype, shape, rng):
    torch = require_torch()
    pred = rng.standard_normal(shape).astype(dtype)
    target = rng.standard_normal(shape).astype(dtype)
    loss, dpred = mse_loss(pred, target)
    expected_loss, expected_dpred = torch_mse(torch, pred, target)
    assert isinstance(loss, float) and dpred.dtype == dtype
    assert_close(loss, expected_loss, dtype, "loss")
    assert_close(dpred, expected_dpred, dtype, "dpred")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_kind", ["bool", "int", "float"])
def test_mse_loss_masked_matches_torch(dtype, mask_kind, rng):
    torch = require_torch()
    T, B, F = 6, 4, 3
    pred = rng.standard_normal((T, B, F)).astype(dtype)
    target = rng.standard_normal((T, B, F)).astype(dtype)
    lengths = np.array([6, 3, 1, 0])
    step_mask = np.arange(T)[:, None] < lengths[None, :]           # (T, B)
    for mask in (step_mask[:, :, None], rng.random((T, B, F)) < 0.5, step_mask[:, :1, None]):
        mask = mask.astype({"bool": bool, "int": np.int64, "float": dtype}[mask_kind])
        padded = pred.copy()
        padded[~np.broadcast_to(mask.astype(bool), pred.shape)] = np.nan  # never read
        loss, dpred = mse_loss(padded, target, mask)
        expected_loss, expected_dpred = torch_mse(torch, pred, target, mask)
        assert np.isfinite(loss) and dpred.dtype == dtype
        assert_close(loss, expected_loss, dtype, "masked loss")
        assert_close(dpred, expected_dpred, dtype, "masked dpred")


def test_mse_loss_nothing_counts():
    pred = np.ones((3, 2))
    loss, dpred = mse_loss(pred, np.zeros((3, 2)), mask=np.zeros((3, 1), bool))
    assert np.isnan(loss) and dpred.shape == (3, 2) and not dpred.any()
    loss, dpred = mse_loss(np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32))
    assert np.isnan(loss) and dpred.shape == (0, 2) and dpred.dtype == np.float32


def test_mse_loss_finite_differences(rng):
    pred = rng.standard_normal((4, 3))
    target = rng.standard_normal((4, 3))
    mask = rng.random((4, 1)) < 0.7
    mask[0] = True
    _, dpred = mse_loss(pred, target, mask)
    numeric = np.zeros_like(pred)
    for i in np.ndindex(pred.shape):
        p, m = pred.copy(), pred.copy()
        p[i] += 1e-6
        m[i] -= 1e-6
        numeric[i] = (mse_loss(p, target, mask)[0] - mse_loss(m, target, mask)[0]) / 2e-6
    assert_close(dpred, numeric, np.float64, "dpred", rtol=1e-7)


def test_mse_loss_errors():
    pred = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"target must have the shape of pred \(3, 2\), "
                                         r"got \(3, 1\)"):
        mse_loss(pred, np.zeros((3, 1), np.float32))
    with pytest.raises(TypeError, match="target must be a floating-point array, got dtype int"):
        mse_loss(pred, np.zeros((3, 2), np.int64))
    with pytest.raises(TypeError, match="pred must be a floating-point array"):
        mse_loss(np.zeros((3, 2), np.int32), pred)
    with pytest.raises(ValueError, match="mask must be bool or hold only 0 and 1, got the "
                                         "value 0.5"):
        mse_loss(pred, pred, np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match=r"mask of shape \(3,\) cannot be broadcast to pred's "
                                         r"shape \(3, 2\); .* mask\[\.\.\., None\] of shape "
                                         r"\(3, 1\)"):
        mse_loss(pred, pred, np.ones(3, bool))
    with pytest.raises(ValueError, match=r"mask of shape \(4, 2\) cannot be broadcast"):
        mse_loss(pred, pred, np.ones((4, 2), bool))
    with pytest.raises(TypeError, match="mask must be a bool array"):
        mse_loss(pred, pred, np.array(["1"] * 6).reshape(3, 2))


# ------------------------------------------------------------------- cross_entropy

def torch_cross_entropy(torch, logits, targets, ignore_index=-100):
    """(loss, dlogits) from torch, which wants the classes on axis 1: moved there and
    back."""
    x = torch.from_numpy(logits.copy()).requires_grad_(True)
    moved = torch.movedim(x, -1, 1) if x.dim() > 2 else x
    loss = torch.nn.functional.cross_entropy(moved, torch.from_numpy(targets.astype(np.int64)),
                                             ignore_index=ignore_index)
    loss.backward()
    return loss.item(), x.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5,), (8, 5), (6, 4, 5), (3, 2, 4, 7), (1, 1),
                                   (9, 16), (7, 33), (20, 3, 103), (4, 1000)])
def test_cross_entropy_matches_torch(dtype, shape, rng):
    torch = require_torch()
    logits = (3 * rng.standard_normal(shape)).astype(dtype)
    targets = rng.integers(0, shape[-1], size=shape[:-1])
    loss, dlogits = cross_entropy(logits, targets)
    expected_loss, expected_dlogits = torch_cross_entropy(torch, logits, targets)
    assert isinstance(loss, float) and dlogits.dtype == dtype and dlogits.shape == shape
    assert_close(loss, expected_loss, dtype, "loss")
    assert_close(dlogits, expected_dlogits, dtype, "dlogits")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ignore_index", [-100, -1, 2])
def test_cross_entropy_ignore_index_matches_torch(dtype, ignore_index, rng):
    torch = require_torch()
    T, B, C = 7, 3, 4                                       # (T, B, C), padded sequences
    logits = rng.standard_normal((T, B, C)).astype(dtype)
    targets = rng.integers(0, C, size=(T, B))
    targets[4:, 0] = ignore_index
    targets[1:, 2] = ignore_index
    loss, dlogits = cross_entropy(logits, targets, ignore_index=ignore_index)
    expected_loss, expected_dlogits = torch_cross_entropy(torch, logits, targets, ignore_index)
    assert_close(loss, expected_loss, dtype, "loss")
    assert_close(dlogits, expected_dlogits, dtype, "dlogits")
    assert not dlogits[targets == ignore_index].any()
    # Ignored positions are never read: nan there changes nothing.
    garbage = logits.copy()
    garbage[targets == ignore_index] = np.nan
    loss2, dlogits2 = cross_entropy(garbage, targets, ignore_index=ignore_index)
    assert loss2 == loss and np.array_equal(dlogits2, dlogits)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_extreme_logits(dtype, rng):
    torch = require_torch()
    B, C = 6, 5
    logits = (1e4 * rng.standard_normal((B, C))).astype(dtype)
    logits[0] = [1e4, -1e4, 1e4, 0, -1e4]
    logits[1] = 1e4                                         # all equal: uniform softmax
    targets = rng.integers(0, C, size=B)
    targets[0] = 1                                          # log p = -2e4
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        loss, dlogits = cross_entropy(logits, targets)
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    expected_loss, expected_dlogits = torch_cross_entropy(torch, logits, targets)
    assert_close(loss, expected_loss, dtype, "loss")
    assert_close(dlogits, expected_dlogits, dtype, "dlogits")
    assert_close(dlogits[1], np.full(C, 1 / C) / B - np.eye(C)[targets[1]] / B, dtype, "row 1")


def float64_cross_entropy(logits, targets, ignore_index):
    """(loss, dlogits) of the docstring's formulas in float64 NumPy, for (N, C) logits."""
    z = logits.astype(np.float64)
    counted = targets != ignore_index
    n = int(counted.sum())
    shifted = z - z.max(axis=1, keepdims=True)
    softmax = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    rows = np.flatnonzero(counted)
    log_p = shifted[rows, targets[rows]] - np.log(np.exp(shifted[rows]).sum(axis=1))
    dlogits = np.zeros_like(z)
    dlogits[rows] = softmax[rows] / n
    dlogits[rows, targets[rows]] -= 1 / n
    return float(-log_p.sum() / n), dlogits


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 2, 15, 16, 17, 31, 32, 33, 64, 100, 257])
def test_cross_entropy_matches_float64_numpy_at_every_class_count(dtype, C, rng):
    """Each class count around the SIMD widths, a third of the rows ignored, logits of
    scales 0.1 to 30: the loss and gradient of the float64 formulas, without torch."""
    N = 40
    logits = (rng.standard_normal((N, C)) * rng.choice([0.1, 3.0, 30.0], (N, 1))).astype(dtype)
    targets = rng.integers(0, C, size=N)
    targets[rng.random(N) < 1 / 3] = -7
    loss, dlogits = cross_entropy(logits, targets, ignore_index=-7)
    expected_loss, expected_dlogits = float64_cross_entropy(logits, targets, -7)
    n = np.count_nonzero(targets != -7)
    assert_close(loss, expected_loss, dtype, "loss")
    assert_close(dlogits * n, expected_dlogits * n, dtype, "dlogits * n")   # values in [-1, 1]
    assert not dlogits[targets == -7].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_masked_classes_and_strided_logits(dtype, rng):
    """-inf logits (classes masked out) get probability 0 and gradient 0, as in torch;
    logits that are a strided view give the values of their contiguous copy."""
    torch = require_torch()
    B, C = 12, 37
    logits = (2 * rng.standard_normal((B, 2 * C))).astype(dtype)[:, ::2]   # strided
    targets = rng.integers(0, C, size=B)
    logits[:, 5] = -np.inf
    logits[3, :30] = -np.inf
    targets[3] = 31
    targets[targets == 5] = 6
    loss, dlogits = cross_entropy(logits, targets)
    expected_loss, expected_dlogits = torch_cross_entropy(torch, logits, targets)
    assert_close(loss, expected_loss, dtype, "loss")
    assert_close(dlogits, expected_dlogits, dtype, "dlogits")
    assert np.all(dlogits[:, 5] == 0) and np.all(dlogits[3, :30] == 0)
    contiguous_loss, contiguous_dlogits = cross_entropy(np.ascontiguousarray(logits), targets)
    assert loss == contiguous_loss and np.array_equal(dlogits, contiguous_dlogits)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_cross_entropy_non_finite_logits_spoil_only_their_row(dtype, bad, rng):
    """A NaN or +inf logit makes the loss and its row's gradient NaN, as in torch; the
    other rows' gradients are those without it."""
    torch = require_torch()
    logits = rng.standard_normal((5, 40)).astype(dtype)
    targets = rng.integers(0, 40, size=5)
    _, clean = cross_entropy(logits, targets)
    logits[2, 17] = bad
    with np.errstate(invalid="ignore"):
        loss, dlogits = cross_entropy(logits, targets)
    expected_loss, expected_dlogits = torch_cross_entropy(torch, logits, targets)
    assert np.isnan(loss) and np.isnan(expected_loss)
    assert np.all(np.isnan(dlogits[2])) and np.all(np.isnan(expected_dlogits[2]))
    rest = [0, 1, 3, 4]
    assert np.array_equal(dlogits[rest], clean[rest])
    assert_close(dlogits[rest], expected_dlogits[rest], dtype, "other rows")


def test_cross_entropy_all_ignored_is_nan_with_zero_gradient():
    torch = require_torch()
    logits = np.random.default_rng(0).standard_normal((3, 4))
    targets = np.full(3, -100)
    loss, dlogits = cross_entropy(logits, targets)
    expected_loss, expected_dlogits = torch_cross_entropy(torch, logits, targets)
    assert np.isnan(loss) and np.isnan(expected_loss)
    assert np.array_equal(dlogits, expected_dlogits) and not dlogits.any()
    loss, dlogits = cross_entropy(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert np.isnan(loss) and dlogits.shape == (0, 4) and dlogits.dtype == np.float32


def test_cross_entropy_finite_differences(rng):
    logits = rng.standard_normal((3, 2, 4))
    targets = rng.integers(0, 4, size=(3, 2))
    targets[1, 1] = -100
    _, dlogits = cross_entropy(logits, targets)
    numeric = np.zeros_like(logits)
    for i in np.ndindex(logits.shape):
        p, m = logits.copy(), logits.copy()
        p[i] += 1e-6
        m[i] -= 1e-6
        numeric[i] = (cross_entropy(p, targets)[0] - cross_entropy(m, targets)[0]) / 2e-6
    assert_close(dlogits, numeric, np.float64, "dlogits", rtol=1e-7)


def test_cross_entropy_errors():
    logits = np.zeros((3, 4), np.float32)
    with pytest.raises(TypeError, match="targets must be an array of integer class indices, "
                                        "got dtype float64"):
        cross_entropy(logits, np.zeros(3))
    with pytest.raises(TypeError, match="targets must be an array of integer"):
        cross_entropy(logits, np.zeros(3, bool))
    with pytest.raises(TypeError, match="logits must be a floating-point array"):
        cross_entropy(logits.astype(int), np.zeros(3, int))
    with pytest.raises(ValueError, match=r"targets must have logits' shape without its class "
                                         r"axis: \(\.\.\.\) = \(3,\) .* got \(3, 4\)"):
        cross_entropy(logits, np.zeros((3, 4), int))
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, C\) = "
                                         r"\[0, 4\) or ignore_index = -100, got 4 at index "
                                         r"\(2,\)"):
        cross_entropy(logits, np.array([0, 3, 4]))
    with pytest.raises(ValueError, match=r"got -1 at index \(1, 0\)"):
        cross_entropy(np.zeros((2, 2, 4)), np.array([[0, 1], [-1, 2]]))
    with pytest.raises(ValueError, match=r"C >= 1 classes on the last axis, got \(3, 0\)"):
        cross_entropy(np.zeros((3, 0)), np.zeros(3, int))
    with pytest.raises(ValueError, match=r"got \(\)"):
        cross_entropy(np.float64(1.0), np.zeros((), int))
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        cross_entropy(logits, np.zeros(3, int), ignore_index=1.0)
    with pytest.raises(ValueError, match="ignore_index must fit in int64, got 92233720368"):
        cross_entropy(logits, np.zeros(3, int), ignore_index=2**63)
    with pytest.raises(ValueError, match=r"got 18446744073709551615 at index \(0, 1\)"):
        cross_entropy(np.zeros((2, 2, 4)), np.array([[0, 2**64 - 1], [1, 2]], np.uint64))
