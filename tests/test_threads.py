"""Threads: kernel calls from several Python threads at once give the serial results,
batch splitting does not change results beyond rounding, and the BLAS thread
counts are restored after parallel calls."""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import rnnfast
from rnnfast import _helpers, _kernels, _stream, _threads
from conftest import (CELL_VARIANTS, GRAD_NAMES, assert_close, backward, forward,
                      make_inputs, make_params, output_of_child, random_lengths, run_c_test)


def train_step(variant, seed, T=20, B=12, D=5, H=16, dtype=np.float64, reverse=False):
    """Forward + backward of one random problem; returns every result, named."""
    cell, kwargs = CELL_VARIANTS[variant]
    rng = np.random.default_rng(seed)
    params = make_params(cell, D, H, dtype, rng)
    x, states = make_inputs(cell, T, B, D, H, dtype, rng)
    lengths = random_lengths(T, B, rng)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    y, finals, cache = forward(rnnfast, cell, x, states, params, lengths=lengths,
                               reverse=reverse, **kwargs)
    grads = backward(rnnfast, cell, dy, tuple(np.ones_like(s) for s in finals), cache)
    return {"y": y, **{f"final{i}": f for i, f in enumerate(finals)},
            **dict(zip(GRAD_NAMES[cell], grads))}


def serial_and_concurrent(run, args):
    """``run`` over ``args`` one call after another, and from four Python threads at
    once. Both from threads other than the main one: OpenMP's thread limit is a setting
    of each thread, which a library may have changed in the main thread (importing
    PyTorch there caps it at the core count), and a call's thread count can change
    its rounding."""
    with ThreadPoolExecutor(max_workers=1) as one:
        serial = list(one.map(run, args))
    with ThreadPoolExecutor(max_workers=4) as pool:
        return serial, list(pool.map(run, args))


def blas_threads():
    return sorted((info["filepath"], info["num_threads"]) for info in threadpool_info()
                  if info["user_api"] == "blas")


@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
def test_concurrent_calls_match_serial(variant):
    serial, concurrent = serial_and_concurrent(lambda seed: train_step(variant, seed),
                                               range(8))
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


def share_steps(monkeypatch, share):
    """Step teams (threads sharing each step of a batch too small to split) for every
    call, or for none."""
    monkeypatch.setattr(_threads, "MIN_STEP_WORK_PER_THREAD", 1 if share else 10**18)
    monkeypatch.setattr(_threads, "MIN_STEP_COLUMNS_PER_THREAD", 1)
    monkeypatch.setattr(_threads, "MIN_STEP_TEAM_STEPS", 1)


# B = 1, 3: one row (the gate pass on one thread), rows split unevenly; H = 40 leaves
# the last panel of W_hh part-filled (16 doubles or 32 floats a panel)
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
def test_step_team_matches_one_thread(variant, dtype, B, monkeypatch):
    """Forward and BPTT with lengths, both directions, each step shared by threads
    (columns of the products, rows of the gate passes): the one-thread results."""
    for reverse in (False, True):
        share_steps(monkeypatch, True)
        assert _threads.step_parts(23, B, 1, 40, 1, True) == min(_kernels.max_threads(), 40)
        shared = train_step(variant, seed=11, T=23, B=B, D=7, H=40, dtype=dtype,
                            reverse=reverse)
        if _kernels.max_threads() > 1:
            assert _helpers.helper_threads() >= 1
        share_steps(monkeypatch, False)
        whole = train_step(variant, seed=11, T=23, B=B, D=7, H=40, dtype=dtype,
                           reverse=reverse)
        for name in whole:
            assert_close(shared[name], whole[name], dtype, name=f"reverse={reverse} {name}")


def test_shared_steps_from_several_python_threads_match_serial(monkeypatch):
    """Calls whose steps the helpers share, from four Python threads at once (one
    at a time gets the helpers, the others run alone): the serial results."""
    def run(seed):
        variant = ("lstm", "gru", "rnn_tanh")[seed % 3]
        return train_step(variant, seed, T=30, B=2, H=64, dtype=np.float32)

    share_steps(monkeypatch, True)
    serial, concurrent = serial_and_concurrent(run, range(8))
    for expected, got in zip(serial, concurrent):
        for name in expected:
            assert_close(got[name], expected[name], np.float32, name=name)


@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
def test_step_team_inference_in_chunks_matches_one_thread(variant, monkeypatch):
    """training=False over several chunks of the input projection (T = 70, chunks of
    32 steps), each thread projecting its own columns: the one-thread results."""
    cell, kwargs = CELL_VARIANTS[variant]
    rng = np.random.default_rng(4)
    params = make_params(cell, 24, 48, np.float32, rng)
    x, states = make_inputs(cell, 70, 2, 24, 48, np.float32, rng)
    for reverse in (False, True):
        results = []
        for share in (True, False):
            share_steps(monkeypatch, share)
            y, finals, _ = forward(rnnfast, cell, x, states, params, training=False,
                                   reverse=reverse, **kwargs)
            results.append((y, finals))
        (y, finals), (y_whole, finals_whole) = results
        assert_close(y, y_whole, np.float32, name=f"y, reverse={reverse}")
        for ours, theirs in zip(finals, finals_whole):
            assert_close(ours, theirs, np.float32, name=f"final state, reverse={reverse}")


@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
def test_short_inference_shares_steps_by_default(variant, T, monkeypatch):
    """training=False of one and three steps, B = 1, large enough a step (H = 160) to
    share under the default thresholds, through the compiled entry and with lengths:
    the one-thread results."""
    cell, kwargs = CELL_VARIANTS[variant]
    rng = np.random.default_rng(9)
    H = 160
    params = make_params(cell, 7, H, np.float32, rng)
    x, states = make_inputs(cell, T, 1, 7, H, np.float32, rng)
    assert _threads.step_parts(T, 1, 1, H, 1, False) == min(_kernels.max_threads(), 2)
    for lengths in (None, np.array([T])):
        y, finals, _ = forward(rnnfast, cell, x, states, params, training=False,
                               lengths=lengths, **kwargs)
        share_steps(monkeypatch, False)
        y_whole, finals_whole, _ = forward(rnnfast, cell, x, states, params, training=False,
                                           lengths=lengths, **kwargs)
        monkeypatch.undo()
        assert_close(y, y_whole, np.float32, name="y")
        for ours, theirs in zip(finals, finals_whole):
            assert_close(ours, theirs, np.float32, name="final state")


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_step_thread_count_follows_step_work_columns_and_steps(training):
    threads = _kernels.max_threads()
    assert _threads.step_parts(100, 1, 4, 256, 1, training) == min(threads, 16)  # 1024 columns
    assert _threads.step_parts(100, 1, 4, 256, 2, training) == 1     # the batch is split
    assert _threads.step_parts(100, 1, 4, 48, 1, training) == 1      # 9216 a step
    assert _threads.step_parts(100, 2, 3, 64, 1, training) == min(threads, 2)
    assert _threads.step_parts(100, 4, 1, 96, 1, training) == 1      # 96 columns: one thread
    # too few steps for training; inference shares from one step on
    assert _threads.step_parts(10, 1, 4, 256, 1, training) == (1 if training
                                                                else min(threads, 16))
    assert _threads.step_parts(1, 1, 4, 256, 1, training) == (1 if training
                                                               else min(threads, 16))


# Run in a child process with OMP_NUM_THREADS=3: a team of three threads, each
# with its reverse loop (B = 12) or only thread 0 with one (B = 2), then the GEMMs
# after the loop split three ways with partial sums added after a barrier; and B = 2
# with each step's products shared by three threads (the caller and two helpers).
THREE_THREADS_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from rnnfast import _kernels, _threads
from conftest import CELL_VARIANTS, assert_close
from test_threads import train_step

if _kernels.max_threads() == 1:
    print("no OpenMP")
    sys.exit()
assert _kernels.max_threads() == 3
for variant in CELL_VARIANTS:
    for T, B, shared_steps in ((20, 12, False), (40, 2, False), (40, 2, True)):
        _threads.MIN_WORK_PER_THREAD = _threads.MIN_GEMM_WORK_PER_THREAD = 1
        _threads.MIN_STEP_WORK_PER_THREAD = 1 if shared_steps else 10**18
        _threads.MIN_STEP_COLUMNS_PER_THREAD = _threads.MIN_STEP_TEAM_STEPS = 1
        _threads.MIN_ROWS_PER_THREAD = 4
        parts = _threads.batch_parts(B)
        assert (parts, _threads.gemm_parts(T * B, 10**9, parts)) == ((3, 3) if B == 12
                                                                    else (1, 3))
        assert _threads.step_parts(T, B, 1, 40, parts, True) == (3 if shared_steps else 1)
        split = train_step(variant, seed=7, T=T, B=B, H=40)
        _threads.MIN_ROWS_PER_THREAD = 10**9
        _threads.MIN_STEP_WORK_PER_THREAD = 10**18
        whole = train_step(variant, seed=7, T=T, B=B, H=40)
        for name in whole:
            assert_close(split[name], whole[name], np.float64, name=f"{variant} B={B} {name}")
print("matched")
"""


def assert_child_matches(script, threads):
    """``script`` (given this folder), run in a fresh interpreter on ``threads``
    OpenMP threads, prints "matched", or skips the test in a build without OpenMP."""
    output = output_of_child(script, os.path.dirname(os.path.abspath(__file__)),
                             OMP_NUM_THREADS=str(threads))
    if output == "no OpenMP":
        pytest.skip("a build without OpenMP runs one thread")
    assert output == "matched"


def test_three_threads_match_one_thread():
    assert_child_matches(THREE_THREADS_SCRIPT, 3)


# Run in a child process with OMP_NUM_THREADS=2 bound to one CPU: the helper threads
# start there too, so every shared step's helper waits for the caller's core.
ONE_CORE_SCRIPT = """
import os, sys
sys.path.insert(0, sys.argv[1])
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import numpy as np
import rnnfast
from rnnfast import _helpers, _kernels, _threads
from conftest import CELL_VARIANTS, assert_close
from test_threads import train_step

if _kernels.max_threads() == 1:
    print("no OpenMP")
    sys.exit()
_threads.MIN_STEP_COLUMNS_PER_THREAD = _threads.MIN_STEP_TEAM_STEPS = 1
for variant in CELL_VARIANTS:
    _threads.MIN_STEP_WORK_PER_THREAD = 1
    assert _threads.step_parts(30, 2, 1, 40, 1, True) == 2
    shared = train_step(variant, seed=5, T=30, B=2, H=40)
    _threads.MIN_STEP_WORK_PER_THREAD = 10**18
    whole = train_step(variant, seed=5, T=30, B=2, H=40)
    for name in whole:
        assert_close(shared[name], whole[name], np.float64, name=f"{variant} {name}")
stream = rnnfast.LSTM(64, 64, dtype=np.float32).stream(1)
for x in np.random.default_rng(0).standard_normal((300, 1, 64)).astype(np.float32):
    stream(x)
assert _helpers.helper_threads() >= 1
print("matched")
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_helpers_on_the_callers_core_give_the_one_thread_results():
    assert_child_matches(ONE_CORE_SCRIPT, 2)


# A child forked after OpenMP threads ran (a batch of 16 split in two): GNU OpenMP
# would hang in its first parallel region, so the child's calls use no OpenMP thread.
FORK_AFTER_TEAMS_SCRIPT = """
import os
import numpy as np
import rnnfast
from rnnfast import _threads

rng = np.random.default_rng(0)
calls = [(rnnfast.GRU(64, 64, seed=1).eval(), 16), (rnnfast.LSTM(256, 256, seed=2).eval(), 1)]
inputs = [rng.standard_normal((200, B, layer.input_size)).astype(np.float32)
          for layer, B in calls]
expected = [layer(x)[0].copy() for (layer, _), x in zip(calls, inputs)]
pid = os.fork()
if pid == 0:    # the child: the same results
    same = all(np.allclose(layer(x)[0], y, rtol=2e-4, atol=2e-5)
               for (layer, _), x, y in zip(calls, inputs, expected))
    os._exit(0 if same and _threads.max_threads() == 1 else 1)
_, status = os.waitpid(pid, 0)
print(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_after_openmp_threads_ran_computes_without_them():
    assert output_of_child(FORK_AFTER_TEAMS_SCRIPT) == "True"


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


# ----------------------------------------------------------------------------- streams

STREAM_CELLS = {"rnn_tanh": (rnnfast.RNN, {"nonlinearity": "tanh"}),
                "rnn_relu": (rnnfast.RNN, {"nonlinearity": "relu"}),
                "lstm": (rnnfast.LSTM, {}), "gru": (rnnfast.GRU, {})}


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def stream_outputs(layer, x, threads):
    """The stream's outputs (T, B, H), its final state, and the threads rnnfast may use
    (1 without OpenMP), with ``threads`` threads allowed."""
    with threadpool_limits(limits=threads, user_api="openmp"):
        stream = layer.stream(x.shape[1])
        outputs = np.stack([stream(x_t) for x_t in x])
        return outputs, stream.state, _kernels.max_threads()


# (B, D, H, layers): one part per thread; column counts that are not a multiple of a
# cache line; more parts than threads (B*G*H above 1024 outputs a part); large batches,
# whose products run transposed, split by rows of the weights (B = 33: a panel of the
# batch and one column more; B = 40, D = 24: the first RNN layer's weights too small
# for that, so it goes to BLAS whole in float32). B = 3, H = 200: the LSTM's 3 parts
# rounded up to 4 on 2 threads; B = 21, H = 24: the LSTM keeps 3 on 2 threads (4 would
# be narrower than 32 columns).
STREAM_SPLITS = [(1, 128, 128, 2), (3, 20, 200, 1), (4, 300, 300, 1), (40, 24, 56, 2),
                 (33, 40, 72, 1), (21, 24, 24, 1)]


@pytest.mark.parametrize("shape", STREAM_SPLITS, ids=lambda s: "B{}_D{}_H{}_L{}".format(*s))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cell", list(STREAM_CELLS))
def test_stream_split_over_threads_matches_one_thread(cell, dtype, shape):
    """A stream step whose products split over the calling thread and helper threads
    gives the one-thread results and the whole sequence's, with 2 and 4 threads."""
    B, D, H, layers = shape
    cls, extra = STREAM_CELLS[cell]
    layer = cls(D, H, num_layers=layers, dtype=dtype, seed=5, **extra).eval()
    x = np.random.default_rng(2).standard_normal((6, B, D)).astype(dtype)
    expected, expected_state, _ = stream_outputs(layer, x, threads=1)
    assert_close(expected, layer(x)[0], dtype, name="one thread against forward")
    for threads in (2, 4):
        outputs, state, allowed = stream_outputs(layer, x, threads)
        assert_close(outputs, expected, dtype, name=f"y, {threads} threads")
        for ours, theirs in zip(as_tuple(state), as_tuple(expected_state)):
            assert_close(ours, theirs, dtype, name=f"state, {threads} threads")
        if allowed > 1:     # a build with OpenMP
            assert _stream.helper_threads() >= 1


def test_stream_steps_shared_or_alone_give_the_same_bits():
    """The helpers time sharing a kind of step against running it alone and choose
    (csrc/rnnfast_sharing.h): a stream's layers become kinds with a choice after a
    trial, and steps run either way give bitwise the same results, so two runs over
    the same inputs, whose steps ran in different ways, agree exactly."""
    layer = rnnfast.LSTM(128, 128, num_layers=2, seed=3).eval()
    x = np.random.default_rng(4).standard_normal((400, 1, 128)).astype(np.float32)
    first, first_state, allowed = stream_outputs(layer, x, threads=2)
    second, second_state, _ = stream_outputs(layer, x, threads=2)
    np.testing.assert_array_equal(first, second)
    for ours, theirs in zip(first_state, second_state):
        np.testing.assert_array_equal(ours, theirs)
    if allowed < 2:     # a build without OpenMP: no helpers
        return
    # LSTM (kind 2), B = 1: 4 * B*4H*(D + H) + 2 for each layer's step
    kinds = {choice["size"]: choice for choice in _helpers.sharing_choices()}
    choice = kinds[4 * 512 * 256 + 2]
    assert choice["trials"] >= 1
    assert choice["alone_us"] is None or choice["alone_us"] > 0


def test_streams_in_several_python_threads_match_serial():
    """Streams stepped from four Python threads at once share the helper threads (a
    step that finds them busy runs on its own thread): the serial results."""
    layers = [rnnfast.LSTM(128, 128, seed=seed).eval() for seed in range(4)]
    x = np.random.default_rng(0).standard_normal((200, 1, 128)).astype(np.float32)

    def run(layer):
        stream = layer.stream(1)
        return np.stack([stream(x_t) for x_t in x])

    with threadpool_limits(limits=2, user_api="openmp"):
        serial = [run(layer) for layer in layers]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(run, layers))
    for expected, got in zip(serial, concurrent):
        assert_close(got, expected, np.float32, name="y")


def test_one_thread_starts_no_helper():
    script = ("import numpy as np, rnnfast\nfrom rnnfast import _stream\n"
              "stream = rnnfast.LSTM(128, 128).stream(1)\n"
              "for _ in range(10): stream(np.ones((1, 128), np.float32))\n"
              "print(_stream.helper_threads())\n")
    assert output_of_child(script, OMP_NUM_THREADS="1") == "0"


CAPPED_STREAM_SCRIPT = """
import numpy as np
import rnnfast
from threadpoolctl import threadpool_limits
from rnnfast import _helpers, _kernels, _threads

layer = rnnfast.LSTM(128, 128, seed=1).eval()
x = np.random.default_rng(0).standard_normal((50, 1, 128)).astype(np.float32)
with threadpool_limits(limits=2, user_api="openmp"):   # whatever OMP_NUM_THREADS says
    stream = layer.stream(1)
    with _threads.capped(1):
        capped = np.stack([stream(x_t) for x_t in x])
    alone = _helpers.helper_threads() == 0
    stream.reset()
    shared = np.stack([stream(x_t) for x_t in x])
    helpers = 1 if _kernels.max_threads() > 1 else 0     # none in a build without OpenMP
    print(alone and _helpers.helper_threads() == helpers and np.array_equal(capped, shared))
"""


def test_a_capped_thread_streams_alone():
    """Streams take ``_threads.capped`` as their limit too: a stream stepped under
    ``capped(1)`` starts no helper thread (in a fresh interpreter), the same stream
    outside it does, with bitwise the same outputs."""
    assert output_of_child(CAPPED_STREAM_SCRIPT) == "True"


STREAM_FORK_SCRIPT = """
import os
import numpy as np
import rnnfast
from threadpoolctl import threadpool_limits
from rnnfast import _kernels, _stream

layer = rnnfast.GRU(128, 128, seed=1).eval()
x = np.random.default_rng(0).standard_normal((50, 1, 128)).astype(np.float32)

def matches():
    stream = layer.stream(1)
    y = np.stack([stream(x_t) for x_t in x])
    return np.allclose(y, expected, rtol=2e-4, atol=2e-5)

with threadpool_limits(limits=2, user_api="openmp"):   # whatever OMP_NUM_THREADS says
    expected = layer(x)[0]
    helpers = 1 if _kernels.max_threads() > 1 else 0     # none in a build without OpenMP
    started = matches() and _stream.helper_threads() == helpers
    pid = os.fork()
    if pid == 0:    # the child: no helper thread came along; it starts its own
        os._exit(0 if matches() and matches() and _stream.helper_threads() == helpers else 1)
    _, status = os.waitpid(pid, 0)
    print(started and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and matches())
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_streams_with_helpers_of_its_own():
    assert output_of_child(STREAM_FORK_SCRIPT) == "True"


@pytest.mark.parametrize("sanitizer", [None, "thread"])
def test_helper_threads_run_every_part_once(tmp_path, sanitizer):
    """The C stress test of csrc/rnnfast_helpers.h (tests/c/helpers_stress.c), built
    plain and under ThreadSanitizer: exact totals, no data race reported, with jobs
    that always share and jobs whose sharing is tried out and chosen."""
    run_c_test(tmp_path, "helpers_stress", sanitizer)


@pytest.mark.parametrize("sanitizer", [None, "undefined"])
def test_sharing_is_chosen_where_it_pays(tmp_path, sanitizer):
    """csrc/rnnfast_sharing.h on made-up timings (tests/c/sharing_choice.c): sharing
    kept where it is faster, given up where it is slower, by less than the margin or
    where the helpers never come, chosen again once it pays; trials that cannot time
    their blocks keep the choice."""
    run_c_test(tmp_path, "sharing_choice", sanitizer)
