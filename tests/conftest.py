"""Shared test helpers: tolerances, parameter factories and one calling convention for
all three cells, so a test can be written once and parametrised over cells and
implementations."""

import importlib

import numpy as np
import pytest

from rnnfast import _threads

CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
DTYPES = (np.float32, np.float64)

# Relative tolerance per dtype: max |actual - expected| <= RTOL * max(1, max |expected|).
RTOL = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-9}

PARAM_NAMES = ("w_ih", "w_hh", "b_ih", "b_hh")
GRAD_NAMES = {"rnn": ("dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"),
              "gru": ("dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"),
              "lstm": ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh")}


def impl_module(name):
    """``"rnnfast"`` (the kernels) or ``"rnnfast.reference"``."""
    return importlib.import_module(name)


def assert_close(actual, expected, dtype, name="", rtol=None):
    """Scale-relative comparison; the message names the tensor and its worst difference."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    if actual.size == 0:
        return
    rtol = RTOL[np.dtype(dtype)] if rtol is None else rtol
    scale = max(1.0, float(np.max(np.abs(expected))))
    worst = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    assert worst <= rtol * scale, (
        f"{name}: max |difference| {worst:.3g} exceeds {rtol:g} x scale {scale:.3g}")


def five_point_derivative(loss, array, index, step):
    """dL/d array[index] by the five-point central difference; ``array`` is restored."""
    original = array[index]
    values = {}
    for k in (-2, -1, 1, 2):
        array[index] = original + k * step
        values[k] = loss()
    array[index] = original
    return (values[-2] - 8 * values[-1] + 8 * values[1] - values[2]) / (12 * step)


def make_params(cell, D, H, dtype, rng, scale=None):
    """Random parameters in PyTorch's layout: (w_ih, w_hh, b_ih, b_hh)."""
    G = GATES[cell]
    scale = 1.0 / np.sqrt(H) if scale is None else scale
    return tuple((rng.uniform(-scale, scale, size)).astype(dtype)
                 for size in ((G * H, D), (G * H, H), (G * H,), (G * H,)))


def make_inputs(cell, T, B, D, H, dtype, rng):
    """x (T, B, D) and the initial state(s) as a tuple: (h0,) or (h0, c0) for the LSTM."""
    x = rng.standard_normal((T, B, D)).astype(dtype)
    states = tuple(rng.standard_normal((B, H)).astype(dtype) * 0.5
                   for _ in range(2 if cell == "lstm" else 1))
    return x, states


def forward(module, cell, x, states, params, **kwargs):
    """Call ``module.<cell>_forward``; returns (y, final_states tuple, cache)."""
    function = getattr(module, f"{cell}_forward")
    if cell == "lstm":
        y, h_T, c_T, cache = function(x, *states, *params, **kwargs)
        return y, (h_T, c_T), cache
    y, h_T, cache = function(x, *states, *params, **kwargs)
    return y, (h_T,), cache


def backward(module, cell, dy, dstates, cache, **kwargs):
    """Call ``module.<cell>_backward``; ``dstates`` is (dh_T,) or (dh_T, dc_T)."""
    return getattr(module, f"{cell}_backward")(dy, *dstates, cache, **kwargs)


def random_lengths(T, B, rng, with_zero=True):
    """Lengths in [0, T] with at least one full-length sequence (and one zero if asked)."""
    lengths = rng.integers(0, T + 1, size=B)
    lengths[0] = T
    if with_zero and B > 1:
        lengths[-1] = 0
    return lengths


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# Cell variants for parametrising tests: the RNN once per nonlinearity.
# name -> (cell, extra keyword arguments of <cell>_forward)
CELL_VARIANTS = {"rnn_tanh": ("rnn", {"nonlinearity": "tanh"}),
                 "rnn_relu": ("rnn", {"nonlinearity": "relu"}),
                 "lstm": ("lstm", {}),
                 "gru": ("gru", {})}


@pytest.fixture(autouse=True)
def split_small_batches(monkeypatch):
    """The tests' shapes are small: let calls with B >= 8 (T*B >= 8 for the GEMMs over
    all steps, 8 output rows for a Linear layer's products) still take the
    multi-threaded path, which the library keeps for calls with enough work to gain
    from it."""
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_threads, "MIN_GEMM_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_threads, "MIN_PRODUCT_WORK_PER_THREAD", 1)


def rnnfast_env(env=None):
    """A copy of ``env`` (default ``os.environ``) whose PYTHONPATH makes a child
    process import the same rnnfast as these tests (installed, or the source tree on
    a relative PYTHONPATH), from any working directory."""
    import os

    import rnnfast

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(rnnfast.__file__)))
    env = dict(os.environ if env is None else env)
    # after the caller's entries, so that those may shadow other packages (a test can
    # hide matplotlib) even when rnnfast is installed beside them
    env["PYTHONPATH"] = os.pathsep.join(
        [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p] + [package_parent])
    return env


def run_rnnfast(args, cwd, timeout=300, env=None, **options):
    """``python -m rnnfast *args`` in a subprocess from ``cwd`` with
    ``rnnfast_env(env)``: the CompletedProcess, with text stdout and stderr captured."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "rnnfast", *map(str, args)], cwd=cwd,
                          env=rnnfast_env(env), capture_output=True, text=True,
                          timeout=timeout, **options)


def run_c_test(tmp_path, name, sanitizer=None):
    """Builds tests/c/<name>.c against the source tree's csrc/ (plain, or under the
    ``sanitizer``) and runs it: it must print "ok" and exit with status 0."""
    import os
    import shutil
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    source = os.path.join(here, "c", f"{name}.c")
    headers = os.path.join(os.path.dirname(here), "csrc")
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None or not os.path.isdir(headers):
        pytest.skip("needs a C compiler and the source tree's csrc/")
    flags = ["-O1", "-g", f"-fsanitize={sanitizer}"] if sanitizer else ["-O2"]
    binary = str(tmp_path / name)
    built = subprocess.run([compiler, *flags, "-I", headers, source, "-o", binary, "-pthread",
                            "-lm"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        if sanitizer:
            pytest.skip(f"the compiler cannot build with -fsanitize={sanitizer}")
        pytest.fail(built.stderr)
    # not the sanitizer runtime preloaded into this interpreter, if any
    env = {name: value for name, value in os.environ.items() if name != "LD_PRELOAD"}
    env["TSAN_OPTIONS"] = "halt_on_error=1"
    result = subprocess.run([binary], env=env, capture_output=True, text=True, timeout=300)
    if sanitizer and "FATAL: ThreadSanitizer" in result.stderr:
        pytest.skip(f"ThreadSanitizer cannot run here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"


def output_of_child(script, *args, **env):
    """The printed output of ``script`` run in a fresh interpreter, with ``args`` and
    the environment variables ``env``, which must exit with status 0."""
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", script, *args],
                            env=rnnfast_env({**os.environ, **env}), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
