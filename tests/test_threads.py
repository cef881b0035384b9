"""Threads: kernel calls from several Python threads at once give the serial results,
batch splitting does not change results beyond rounding, and the BLAS thread
counts are restored after parallel calls."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import rnnfast
from rnnfast import _kernels, _threads
from conftest import (CELL_VARIANTS, GRAD_NAMES, assert_close, backward, forward,
                      make_inputs, make_params, random_lengths)


def train_step(variant, seed, T=20, B=12, D=5, H=16, dtype=np.float64):
    """Forward + backward of one random problem; returns every result, named."""
    cell, kwargs = CELL_VARIANTS[variant]
    rng = np.random.default_rng(seed)
    params = make_params(cell, D, H, dtype, rng)
    x, states = make_inputs(cell, T, B, D, H, dtype, rng)
    lengths = random_lengths(T, B, rng)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    y, finals, cache = forward(rnnfast, cell, x, states, params, lengths=lengths, **kwargs)
    grads = backward(rnnfast, cell, dy, tuple(np.ones_like(s) for s in finals), cache)
    return {"y": y, **{f"final{i}": f for i, f in enumerate(finals)},
            **dict(zip(GRAD_NAMES[cell], grads))}


def blas_threads():
    return sorted((info["filepath"], info["num_threads"]) for info in threadpool_info()
                  if info["user_api"] == "blas")


@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
def test_concurrent_calls_match_serial(variant):
    seeds = list(range(8))
    serial = [train_step(variant, seed) for seed in seeds]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda seed: train_step(variant, seed), seeds))
    for expected, got in zip(serial, concurrent):
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
def test_batch_split_matches_one_thread(variant, monkeypatch):
    """The same problem with the batch split across threads and on one thread."""
    split = train_step(variant, seed=3)
    monkeypatch.setattr(_threads, "MIN_ROWS_PER_THREAD", 10**9)
    whole = train_step(variant, seed=3)
    for name in whole:
        assert_close(split[name], whole[name], np.float64, name=name)


@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
def test_gemm_split_of_a_small_batch_matches_one_thread(variant, monkeypatch):
    """B = 2 runs its time loop on one thread and its GEMMs over all T*B rows (the
    input projection, dx, the weight gradients) on several: the same results."""
    split = train_step(variant, seed=5, T=40, B=2)
    monkeypatch.setattr(_threads, "MIN_ROWS_PER_THREAD", 10**9)
    whole = train_step(variant, seed=5, T=40, B=2)
    for name in whole:
        assert_close(split[name], whole[name], np.float64, name=name)


# Run in a child process with OMP_NUM_THREADS=3: a team of three threads, each
# with its reverse loop (B = 12) or only thread 0 with one (B = 2), then the GEMMs
# after the loop split three ways with partial sums added after a barrier.
THREE_THREADS_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from rnnfast import _kernels, _threads
from conftest import CELL_VARIANTS, assert_close
from test_threads import train_step

assert _kernels.max_threads() == 3
for variant in CELL_VARIANTS:
    for T, B in ((20, 12), (40, 2)):
        _threads.MIN_WORK_PER_THREAD = _threads.MIN_GEMM_WORK_PER_THREAD = 1
        _threads.MIN_ROWS_PER_THREAD = 4
        parts = _threads.batch_parts(B)
        assert (parts, _threads.gemm_parts(T * B, 10**9, parts)) == ((3, 3) if B == 12
                                                                    else (1, 3))
        split = train_step(variant, seed=7, T=T, B=B)
        _threads.MIN_ROWS_PER_THREAD = 10**9
        whole = train_step(variant, seed=7, T=T, B=B)
        for name in whole:
            assert_close(split[name], whole[name], np.float64, name=f"{variant} B={B} {name}")
print("matched")
"""


def test_three_threads_match_one_thread():
    import os
    import subprocess
    import sys

    from conftest import rnnfast_env

    env = rnnfast_env({**os.environ, "OMP_NUM_THREADS": "3"})
    result = subprocess.run([sys.executable, "-c", THREE_THREADS_SCRIPT,
                             os.path.dirname(os.path.abspath(__file__))],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "matched"


def test_gemm_thread_count_follows_rows_and_work(monkeypatch):
    monkeypatch.setattr(_threads, "MIN_GEMM_WORK_PER_THREAD", 32_000_000)
    threads = _kernels.max_threads()
    assert _threads.gemm_parts(4000, 524_000_000, 1) == min(threads, 16)
    assert _threads.gemm_parts(1000, 40_000_000, 1) == 1    # wake-ups would cost more
    assert _threads.gemm_parts(7, 10**12, 1) == 1           # too few rows
    assert _threads.gemm_parts(64, 1_000, 2) == 2           # never below the loop's threads


def test_thread_count_follows_rows_and_work(monkeypatch):
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 2_000_000)
    threads = _kernels.max_threads()
    assert _threads.batch_parts(64, 10**9) == min(threads, 16)
    assert _threads.batch_parts(64, 1_000) == 1         # too little work to share
    assert _threads.batch_parts(7, 10**9) == 1          # too few rows
    assert _threads.batch_parts(8, 4_000_000) == min(threads, 2)


def test_blas_thread_counts_restored():
    before = blas_threads()
    assert _threads.batch_parts(12) >= 1
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda seed: train_step("lstm", seed), range(6)))
    assert blas_threads() == before
    with _threads.single_threaded_blas(parts=2):
        with _threads.single_threaded_blas(parts=2):
            assert all(threads == 1 for _, threads in blas_threads())
        assert all(threads == 1 for _, threads in blas_threads())
    assert blas_threads() == before


def test_openblas_thread_counts_through_its_entry_points():
    """Each OpenBLAS with its own threads is read and set through its C entry points,
    which agree with threadpoolctl; any other BLAS goes through threadpoolctl."""
    from rnnfast._blas import ThreadCounts

    counts, controlled = _threads._blas_limiters()
    infos = [info for info in threadpool_info() if info["user_api"] == "blas"]
    openblas = [info["num_threads"] for info in infos
                if info["internal_api"] == "openblas" and info["threading_layer"] == "pthreads"]
    assert sorted(counts.counts()) == sorted(openblas)
    assert len(openblas) + len(controlled.libraries) == len(infos)
    counts.limit_to_one()
    try:
        assert counts.counts() == [1] * len(openblas)
    finally:
        counts.restore()
    assert sorted(counts.counts()) == sorted(openblas)
    with pytest.raises(ValueError, match=r"addresses\[0\] must be two non-null"):
        ThreadCounts([(0, 0)])
    with pytest.raises(ValueError, match="at most 8 libraries"):
        ThreadCounts([(1, 1)] * 9)


def test_openmp_wait_policy_is_passive_only_while_the_runtime_loads(monkeypatch):
    """The runtime loads with OMP_WAIT_POLICY=PASSIVE unless the user set a policy;
    the environment is left as it was either way."""
    import os

    from rnnfast._openmp import passive_wait_while_loading

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    with passive_wait_while_loading():
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ
    for name, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "1000")):
        monkeypatch.setenv(name, value)
        with passive_wait_while_loading():
            assert os.environ.get("OMP_WAIT_POLICY") == (value if name == "OMP_WAIT_POLICY"
                                                         else None)
        monkeypatch.delenv(name)
