"""SGD, Adam, AdamW and clip_grad_norm against torch.optim / torch.nn.utils (skipped
without torch): the same parameters and gradients stepped side by side; then the
in-place contract, hyper-parameter validation and a small training run."""

import math
import re
import os

import numpy as np
import pytest

from rnnfast.linear import Linear
from rnnfast.losses import mse_loss
from rnnfast.optim import SGD, Adam, AdamW, clip_grad_norm

from conftest import DTYPES, assert_close


def require_torch():
    """torch, or skip this test without it; CI sets RNNFAST_REQUIRE_TORCH=1 so that a
    missing torch fails there instead of skipping."""
    if os.environ.get("RNNFAST_REQUIRE_TORCH") == "1":
        import torch
        return torch
    return pytest.importorskip("torch")


# Worst |difference| allowed after 10 steps, relative to max(1, max |torch's param|).
STEP_RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}

SHAPES = {"a": [(4, 3), (3,)], "b": [(2, 5, 2), (1,)]}


class Holder:
    """The least a module needs to be for the optimizers: params and grads dicts."""

    def __init__(self, shapes, dtype, rng):
        self.params = {f"p{i}": rng.standard_normal(shape).astype(dtype)
                       for i, shape in enumerate(shapes)}
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}


def make_modules(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [Holder(shapes, dtype, rng) for shapes in SHAPES.values()]


def torch_tensors(torch, modules):
    """torch leaf tensors holding copies of every parameter, in the modules' order."""
    return [torch.tensor(value.copy(), requires_grad=True)
            for module in modules for value in module.params.values()]


def set_grads(torch, modules, tensors, rng, scale=1.0):
    """The same random gradients in both (one parameter's gradient is zero each time)."""
    pairs = [(module.grads, name) for module in modules for name in module.grads]
    for k, ((grads, name), tensor) in enumerate(zip(pairs, tensors)):
        grad = (scale * rng.standard_normal(grads[name].shape)).astype(grads[name].dtype)
        if k == 1:
            grad[...] = 0
        grads[name][...] = grad
        tensor.grad = torch.from_numpy(grad.copy())


def compare(modules, tensors, dtype, what):
    values = [value for module in modules for value in module.params.values()]
    for k, (value, tensor) in enumerate(zip(values, tensors)):
        assert value.dtype == dtype
        assert_close(value, tensor.detach().numpy(), dtype, f"{what} param {k}",
                     rtol=STEP_RTOL[np.dtype(dtype)])


def worst_difference(modules, tensors):
    values = [value for module in modules for value in module.params.values()]
    return max(float(np.max(np.abs(v.astype(np.float64) - t.detach().numpy())))
               for v, t in zip(values, tensors))


def run_side_by_side(torch, make_ours, make_theirs, dtype, steps=10, grad_scale=1.0):
    modules = make_modules(dtype)
    tensors = torch_tensors(torch, modules)
    ours = make_ours(modules)
    theirs = make_theirs(tensors)
    rng = np.random.default_rng(1)
    arrays = [value for module in modules for value in module.params.values()]
    for step in range(steps):
        set_grads(torch, modules, tensors, rng, grad_scale)
        grads_before = [g.copy() for module in modules for g in module.grads.values()]
        ours.step()
        theirs.step()
        compare(modules, tensors, dtype, f"{type(ours).__name__} step {step + 1}")
        grads_after = [g for module in modules for g in module.grads.values()]
        assert all(np.array_equal(a, b) for a, b in zip(grads_before, grads_after))
    # updated in place: the very same arrays
    assert all(a is b for a, b in zip(arrays, [v for m in modules for v in m.params.values()]))
    return worst_difference(modules, tensors)


SGD_OPTIONS = [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
               dict(weight_decay=0.1), dict(momentum=0.5, weight_decay=0.1),
               dict(momentum=0.9, nesterov=True, weight_decay=0.05), dict(momentum=1.5)]
ADAM_OPTIONS = [dict(), dict(weight_decay=0.1), dict(betas=(0.5, 0.9), eps=1e-3),
                dict(lr=0.1, betas=(0.0, 0.99)), dict(lr=0.05, weight_decay=0.2,
                                                     betas=(0.7, 0.8))]
ADAMW_OPTIONS = [dict(), dict(weight_decay=0.0), dict(lr=0.1, weight_decay=0.5),
                 dict(betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)]


def optimizer_cases():
    for options in SGD_OPTIONS:
        yield "SGD", dict(lr=0.1, **options)
    for options in ADAM_OPTIONS:
        yield "Adam", options
    for options in ADAMW_OPTIONS:
        yield "AdamW", options


CASES = list(optimizer_cases())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}"
                              for n, o in CASES])
def test_optimizer_matches_torch(name, options, dtype):
    torch = require_torch()
    ours = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}[name]
    theirs = getattr(torch.optim, name)
    run_side_by_side(torch, lambda modules: ours(modules, **options),
                     lambda tensors: theirs(tensors, **options), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", [case for case in CASES if case[0] != "SGD"],
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}"
                              for n, o in CASES if n != "SGD"])
def test_fused_adam_is_bitwise_the_numpy_form(name, options, dtype, monkeypatch):
    """Adam and AdamW update C-contiguous parameters in one C pass (rnnfast._updates);
    any other layout takes the NumPy operations. Both give the same bits."""
    from rnnfast import optim
    runs = []
    for fused in (True, False):
        if not fused:   # every parameter left to the NumPy form
            monkeypatch.setattr(optim._updates, "adam_updates",
                                lambda entries, *hyper: range(len(entries)))
        modules = make_modules(dtype)
        optimizer = {"Adam": Adam, "AdamW": AdamW}[name](modules, **options)
        rng = np.random.default_rng(1)
        for _ in range(5):
            for module in modules:
                for grad in module.grads.values():
                    grad[...] = rng.standard_normal(grad.shape)
            optimizer.step()
        runs.append([value for module in modules for value in module.params.values()]
                    + [buffer for state in optimizer.state.values()
                       for buffer in (state["exp_avg"], state["exp_avg_sq"])])
    for k, (fused_value, numpy_value) in enumerate(zip(*runs)):
        np.testing.assert_array_equal(fused_value, numpy_value, err_msg=f"array {k}",
                                      strict=True)


def test_adam_updates_a_strided_parameter(monkeypatch):
    """A parameter that is a strided view takes the NumPy operations, in place."""
    storage = np.ones((4, 6))
    holder = Holder([], np.float64, None)
    holder.params = {"w": storage[:, ::2]}
    holder.grads = {"w": np.full((4, 3), 0.5)}
    twin = Holder([(4, 3)], np.float64, np.random.default_rng(0))
    twin.params["p0"][...] = 1
    twin.grads["p0"][...] = 0.5
    for module in (holder, twin):
        Adam([module], lr=0.1, weight_decay=0.01).step()
    np.testing.assert_array_equal(storage[:, ::2], twin.params["p0"])
    np.testing.assert_array_equal(storage[:, 1::2], 1)


def misaligned_copy(array):
    """A copy of ``array`` whose data starts one byte past an aligned address."""
    storage = np.zeros(array.nbytes + 1, np.uint8)
    copy = storage[1:].view(array.dtype).reshape(array.shape)
    copy[...] = array
    assert not copy.flags.aligned
    return copy


def mixed_module(rng):
    """A module whose parameters and gradients take every way through the updates:
    float32 and float64, C-contiguous, strided, misaligned, a read-only gradient and
    a parameter of no values."""
    module = Holder([(5, 3), (4,), (3, 6), (2, 3), (0,)], np.float64, rng)
    module.params["p1"] = module.params["p1"].astype(np.float32)
    module.grads["p1"] = module.grads["p1"].astype(np.float32)
    module.params["p2"] = np.asfortranarray(module.params["p2"])
    module.params["p3"] = misaligned_copy(module.params["p3"].astype(np.float32))
    module.grads["p3"] = module.grads["p3"].astype(np.float32)
    return module


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_over_mixed_layouts_is_bitwise_each_parameter_alone(name):
    """One step call over parameters of both dtypes and of every layout (the flat ones
    in C, the others by NumPy) gives each parameter the bits that an optimizer of that
    parameter alone, C-contiguous, gives it."""
    optimizer_type = {"Adam": Adam, "AdamW": AdamW}[name]
    module = mixed_module(np.random.default_rng(6))
    alone = []
    for param_name, param in module.params.items():
        single = Holder([], param.dtype, None)
        single.params = {"p": np.ascontiguousarray(param).copy()}
        single.grads = {"p": np.zeros_like(single.params["p"])}
        alone.append((param_name, single, optimizer_type([single], lr=0.05,
                                                          weight_decay=0.1)))
    optimizer = optimizer_type([module], lr=0.05, weight_decay=0.1)
    rng = np.random.default_rng(7)
    for _ in range(3):
        for param_name, single, _ in alone:
            module.grads[param_name][...] = rng.standard_normal(module.grads[param_name].shape)
            single.grads["p"][...] = module.grads[param_name]
        module.grads["p0"].flags.writeable = False   # read, never written
        optimizer.step()
        module.grads["p0"].flags.writeable = True
        for _, _, single_optimizer in alone:
            single_optimizer.step()
    for param_name, single, _ in alone:
        np.testing.assert_array_equal(module.params[param_name], single.params["p"],
                                      err_msg=param_name, strict=True)


def test_clip_grad_norm_over_mixed_layouts_is_bitwise_the_contiguous_one():
    """The norm and the scaled gradients are the same bits whatever the gradients'
    layouts: misaligned and strided ones go through copies and NumPy, flat ones C."""
    module = mixed_module(np.random.default_rng(8))
    rng = np.random.default_rng(9)
    for grad in module.grads.values():
        grad[...] = rng.standard_normal(grad.shape)
    module.grads["p0"] = np.asfortranarray(module.grads["p0"])
    module.grads["p3"] = misaligned_copy(module.grads["p3"])
    twin = Holder([], np.float64, None)
    twin.params = {name: np.ascontiguousarray(value).copy()
                   for name, value in module.params.items()}
    twin.grads = {name: np.ascontiguousarray(value).copy()
                  for name, value in module.grads.items()}
    assert clip_grad_norm(module, 0.5) == clip_grad_norm(twin, 0.5)
    for name, grad in module.grads.items():
        np.testing.assert_array_equal(grad, twin.grads[name], err_msg=name, strict=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_learning_rate_changed_between_steps(dtype):
    torch = require_torch()
    modules = make_modules(dtype)
    tensors = torch_tensors(torch, modules)
    ours, theirs = AdamW(modules, lr=0.01), torch.optim.AdamW(tensors, lr=0.01)
    rng = np.random.default_rng(2)
    for step in range(6):
        set_grads(torch, modules, tensors, rng)
        ours.lr = theirs.param_groups[0]["lr"] = 0.01 / (1 + step)
        ours.step()
        theirs.step()
    compare(modules, tensors, dtype, "scheduled AdamW")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e6, math.inf, 0.0])
def test_clip_grad_norm_matches_torch(dtype, max_norm):
    torch = require_torch()
    modules = make_modules(dtype)
    tensors = torch_tensors(torch, modules)
    set_grads(torch, modules, tensors, np.random.default_rng(3))
    before = [g.copy() for module in modules for g in module.grads.values()]
    total = clip_grad_norm(modules, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    assert isinstance(total, float)
    assert_close(total, expected.item(), dtype, "total_norm")
    grads = [g for module in modules for g in module.grads.values()]
    for k, (grad, tensor) in enumerate(zip(grads, tensors)):
        assert_close(grad, tensor.grad.numpy(), dtype, f"clipped grad {k}")
    if max_norm > total:                                    # untouched, bit for bit
        assert all(np.array_equal(a, b) for a, b in zip(before, grads))
    else:
        norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
        assert norm <= max_norm * (1 + 1e-6) + 1e-12


def test_clip_grad_norm_nonfinite():
    torch = require_torch()
    for bad in (np.nan, np.inf):
        modules = make_modules(np.float64)
        tensors = torch_tensors(torch, modules)
        set_grads(torch, modules, tensors, np.random.default_rng(4))
        modules[0].grads["p0"][0, 0] = bad
        tensors[0].grad[0, 0] = bad
        total = clip_grad_norm(modules, 1.0)
        expected = torch.nn.utils.clip_grad_norm_(tensors, 1.0).item()
        assert (math.isnan(total) and math.isnan(expected)) or total == expected
        grads = [g for module in modules for g in module.grads.values()]
        for grad, tensor in zip(grads, tensors):
            np.testing.assert_array_equal(grad, tensor.grad.numpy())
        with pytest.raises(ValueError, match="total norm of the gradients is (nan|inf)"):
            clip_grad_norm(modules, 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_grad_norm_sums_squares_in_float64(dtype):
    """The norm sums the squares in float64, over contiguous, strided and other-dtype
    gradients alike, and of float32 values whose squares overflow float32."""
    rng = np.random.default_rng(5)
    module = Holder([(1003,), (64, 48), (7, 5, 3), (0,)], dtype, rng)
    for grad in module.grads.values():
        grad[...] = rng.standard_normal(grad.shape)
    module.grads["p1"] = np.asfortranarray(module.grads["p1"])      # replaced, strided
    module.grads["p2"] = module.grads["p2"].astype(np.float16)       # another dtype
    module.grads["p0"][:3] = 3e20 if dtype == np.float32 else 3e150  # float32 squares overflow
    expected = math.sqrt(math.fsum(float(v) ** 2 for grad in module.grads.values()
                                   for v in grad.ravel()))
    assert clip_grad_norm(module, math.inf) == pytest.approx(expected, rel=1e-13)


def test_clip_grad_norm_by_hand():
    modules = make_modules(np.float64)
    for module in modules:
        for grad in module.grads.values():
            grad[...] = 1.0
    # 12 + 3 + 20 + 1 = 36 ones: the norm is 6
    assert clip_grad_norm(modules, 2.0) == pytest.approx(6.0, rel=1e-15)
    for module in modules:
        for grad in module.grads.values():
            np.testing.assert_allclose(grad, 2.0 / (6.0 + 1e-6), rtol=1e-15)
    assert clip_grad_norm(modules[0], math.inf) == pytest.approx(
        math.sqrt(15) * 2.0 / (6.0 + 1e-6), rel=1e-14)                 # one module


# ----------------------------------------------------------- contract and errors

def test_zero_grad_and_state():
    modules = make_modules(np.float32)
    for module in modules:
        for grad in module.grads.values():
            grad[...] = 1.0
    grads = [g for m in modules for g in m.grads.values()]
    opt = Adam(modules)
    opt.step()
    assert set(opt.state) == {(0, "p0"), (0, "p1"), (1, "p0"), (1, "p1")}
    assert opt.state[(0, "p0")]["step"] == 1
    assert opt.state[(0, "p0")]["exp_avg"].dtype == np.float32
    opt.zero_grad()
    assert all(a is b and not a.any()
               for a, b in zip(grads, [g for m in modules for g in m.grads.values()]))
    sgd = SGD(modules, lr=0.1, momentum=0.9)
    sgd.step()
    assert set(sgd.state[(1, "p1")]) == {"momentum_buffer"}
    assert "momentum=0.9" in repr(sgd) and "betas=(0.9, 0.999)" in repr(opt)


def test_training_a_linear_layer_reduces_the_loss():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3
    for make in (lambda m: SGD(m, lr=0.1, momentum=0.9), lambda m: Adam(m, lr=0.05),
                 lambda m: AdamW(m, lr=0.05)):
        lin = Linear(3, 1, dtype=np.float64, seed=0)
        opt = make([lin])
        first = None
        for _ in range(100):
            opt.zero_grad()
            loss, dpred = mse_loss(lin(x), y)
            lin.backward(dpred)
            clip_grad_norm([lin], 5.0)
            opt.step()
            first = loss if first is None else first
        assert loss < 0.01 * first, (type(opt).__name__, first, loss)


@pytest.mark.parametrize("make, message", [
    (lambda m: SGD(m, lr=-0.1), r"SGD: lr must be a finite number >= 0, got -0\.1"),
    (lambda m: SGD(m, lr=float("nan")), r"lr must be a finite number >= 0, got nan"),
    (lambda m: SGD(m, lr=0.1, momentum=-1), "momentum must be a finite number >= 0"),
    (lambda m: SGD(m, lr=0.1, weight_decay=-1e-3), "weight_decay must be a finite number"),
    (lambda m: SGD(m, lr=0.1, nesterov=True), "nesterov=True requires momentum > 0"),
    (lambda m: Adam(m, lr=-1), "Adam: lr must be"),
    (lambda m: Adam(m, eps=-1e-8), "Adam: eps must be"),
    (lambda m: Adam(m, betas=(1.0, 0.9)), r"betas\[0\] must be a finite number >= 0 and < 1"),
    (lambda m: Adam(m, betas=(0.9, -0.1)), r"betas\[1\] must be"),
    (lambda m: AdamW(m, weight_decay=-0.01), "AdamW: weight_decay must be"),
    (lambda m: clip_grad_norm(m, -1.0), "max_norm must be >= 0, got -1.0"),
    (lambda m: clip_grad_norm(m, float("nan")), "max_norm must be >= 0, got nan"),
    (lambda m: SGD([m[0], m[1], m[0]], lr=0.1), r"modules\[2\] is the same object as "
                                                r"modules\[0\]"),
    (lambda m: Adam([]), "Adam got no parameters"),
])
def test_bad_arguments_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make(make_modules(np.float64))


@pytest.mark.parametrize("make, message", [
    (lambda m: SGD(m, lr="0.1"), "SGD: lr must be a number, got str"),
    (lambda m: SGD(m, lr=0.1, nesterov=1), "nesterov must be True or False"),
    (lambda m: Adam(m, betas=0.9), "betas must be a pair"),
    (lambda m: Adam([object()]), r"modules\[0\] \(object\) must have 'params' and 'grads'"),
    (lambda m: SGD(5, lr=0.1), "expects a list of modules"),
    (lambda m: clip_grad_norm(m, None), "max_norm must be a number"),
])
def test_bad_argument_types_raise_type_error(make, message):
    with pytest.raises(TypeError, match=message):
        make(make_modules(np.float64))


def test_bad_modules_are_refused():
    modules = make_modules(np.float64)
    modules[1].grads["p1"] = np.zeros(2)
    with pytest.raises(ValueError, match=r"modules\[1\]\.grads\['p1'\] must be an ndarray of "
                                         r"the parameter's shape \(1,\), got \(2,\)"):
        SGD(modules, lr=0.1)
    modules = make_modules(np.float64)
    del modules[0].grads["p0"]
    with pytest.raises(ValueError, match=r"modules\[0\]\.grads has no entry 'p0'"):
        Adam(modules)
    modules = make_modules(np.float64)
    modules[0].params["p0"] = modules[0].params["p0"].astype(np.int64)
    with pytest.raises(TypeError, match=r"params\['p0'\] must be a float32 or float64 "
                                        r"ndarray, got int64"):
        Adam(modules)
    modules = make_modules(np.float64)
    modules[0].params["p1"].flags.writeable = False
    with pytest.raises(ValueError, match="is read-only"):
        AdamW(modules)
    # checked again at every step, hyper-parameters included
    modules = make_modules(np.float64)
    opt = SGD(modules, lr=0.1)
    opt.lr = -1.0
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        opt.step()
    opt.lr = 0.1
    modules[1].grads["p0"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"modules\[1\]\.grads\['p0'\] must be"):
        opt.step()


# ------------------------------------------------------------- state_dict / resuming

RESUMABLE = [lambda m: SGD(m, lr=0.05, momentum=0.9, nesterov=True),
             lambda m: Adam(m, lr=0.01, betas=(0.8, 0.99), weight_decay=0.01),
             lambda m: AdamW(m, lr=0.01)]


def step_with_random_grads(optimizer, rng, steps):
    for _ in range(steps):
        for module in optimizer.modules:
            for grad in module.grads.values():
                grad[...] = rng.standard_normal(grad.shape)
        optimizer.step()


@pytest.mark.parametrize("make", RESUMABLE)
def test_state_dict_resumes_bit_for_bit_through_a_checkpoint(tmp_path, make):
    """k steps, a checkpoint of modules and optimizer state, n - k more steps from the
    loaded copy: the same parameters, bit for bit, as n steps in one go."""
    import rnnfast

    straight = make(make_modules(np.float64))
    step_with_random_grads(straight, np.random.default_rng(1), 7)

    first = make(make_modules(np.float64))
    rng = np.random.default_rng(1)
    step_with_random_grads(first, rng, 3)
    rnnfast.save(tmp_path / "state.npz", {"optimizer": first.state_dict(),
                                          "params": [m.params for m in first.modules]})
    saved = rnnfast.load(tmp_path / "state.npz")
    modules = make_modules(np.float64, seed=5)           # different starting values
    for module, params in zip(modules, saved["params"]):
        for name, value in params.items():
            module.params[name][...] = value
    resumed = make(modules)
    resumed.lr = 123.0                                   # replaced by the saved value
    resumed.load_state_dict(saved["optimizer"])
    assert resumed.lr == first.lr
    step_with_random_grads(resumed, rng, 4)

    for ours, theirs in zip(resumed.modules, straight.modules):
        for name in ours.params:
            assert ours.params[name].tobytes() == theirs.params[name].tobytes(), name


def test_state_dict_is_a_copy_and_load_state_dict_checks_it():
    optimizer = Adam(make_modules(np.float32), lr=0.1)
    step_with_random_grads(optimizer, np.random.default_rng(0), 2)
    state = optimizer.state_dict()
    assert state["type"] == "Adam" and state["hyper"]["betas"] == [0.9, 0.999]
    assert set(state["state"]) == {"0/p0", "0/p1", "1/p0", "1/p1"}
    assert state["state"]["0/p0"]["step"] == 2
    state["state"]["0/p0"]["exp_avg"][...] = 7           # a copy: the optimizer is unchanged
    assert not np.any(optimizer.state[(0, "p0")]["exp_avg"] == 7)

    other = Adam(make_modules(np.float32), lr=0.1)
    cases = [
        ({**state, "type": "SGD"}, ValueError, "of a 'SGD' optimizer"),
        ({"type": "Adam"}, TypeError, "keys 'type', 'hyper' and 'state'"),
        ({**state, "hyper": {"lr": 0.1}}, ValueError, "'hyper' must hold"),
        ({**state, "hyper": {**state["hyper"], "lr": -1.0}}, ValueError, "lr must be"),
        ({**state, "state": {"2/p0": {}}}, ValueError, "'2/p0', which is no parameter"),
        ({**state, "state": {"0/p0": {"exp_avg": np.zeros(3, np.float32)}}}, ValueError,
         "must be a float32 array of shape (4, 3)"),
        ({**state, "state": {"0/p0": {"step": -1}}}, ValueError, "integer >= 0"),
        ({**state, "state": {"0/p0": {"velocity": 1}}}, ValueError, "must hold some of"),
    ]
    for bad, error, fragment in cases:
        with pytest.raises(error, match=re.escape(fragment)):
            other.load_state_dict(bad)
        assert other.lr == 0.1 and other.state == {}
