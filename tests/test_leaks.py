"""LEAK TESTS (issue 6, item 4): thousands of calls keep the process's memory flat.

Each test makes WARMUP calls (buffers, caches and allocator pools settle), collects
garbage and measures, makes CALLS more calls, collects and measures again, and
asserts that

- the resident set size (``/proc/self/statm``; the peak RSS from ``resource`` where
  that file is missing) grew by less than RSS_BOUND = 8 MiB, and
- the memory ``tracemalloc`` sees (Python objects and NumPy's array buffers, which
  NumPy reports to it) grew by less than TRACED_BOUND = 256 KiB.

The shapes are small, so that thousands of calls take about a second, yet each call
allocates well over RSS_BOUND / CALLS = 1.7 KiB in every large buffer (inputs, states,
gates, the kernels' packed weights), so a leak of any one of them per call exceeds
the bound; tracemalloc catches Python-level leaks from about 50 bytes per call.
(Checked by hand: a 4 KiB malloc per call left unfreed grows RSS by 20 MiB, a
512-byte array kept per call grows the traced memory by 3 MiB.)

Covered: forward + backward of every cell through the functional API (training,
inference, lengths, reverse, caches dropped unused, refused calls), the layers'
forward + backward, streams, and calls from several threads at once.
Each test prints the growth it measured. Timings are not asserted.
"""

import gc
import os
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rnnfast
from rnnfast.layers import GRU, LSTM, RNN
from conftest import CELL_VARIANTS, backward, forward, make_inputs, make_params

MiB = 1 << 20
RSS_BOUND = 8 * MiB
TRACED_BOUND = 256 * 1024
WARMUP = 500
CALLS = 5000
T, B, D, H = 8, 4, 16, 32   # B = 4: one kernel thread per call (see test_threads.py)


# ----------------------------------------------------------------------------- measuring

def resident_bytes():
    """The process's resident set size now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        resource = pytest.importorskip("resource")
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def measure_growth(call, record_property, capsys, label, calls=CALLS, warmup=WARMUP,
                   kernel_calls_per_call=1):
    """Run ``call(i)`` warmup + calls times; assert and report the memory growth over
    the last ``calls`` (each making ``kernel_calls_per_call`` kernel calls)."""
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        for i in range(warmup):
            call(i)
        gc.collect()
        rss_before = resident_bytes()
        traced_before, _ = tracemalloc.get_traced_memory()
        snapshot = tracemalloc.take_snapshot()
        for i in range(warmup, warmup + calls):
            call(i)
        gc.collect()
        rss_growth = resident_bytes() - rss_before
        traced_growth = tracemalloc.get_traced_memory()[0] - traced_before
        top = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")[:5]
    finally:
        if started_here:
            tracemalloc.stop()
    count = calls * kernel_calls_per_call
    record_property("rss_growth_bytes", rss_growth)
    record_property("traced_growth_bytes", traced_growth)
    with capsys.disabled():
        print(f"\n[leaks] {label}: {count} calls, RSS {rss_growth / 1024:+.0f} KiB, "
              f"tracemalloc {traced_growth / 1024:+.1f} KiB")
    growth_lines = "\n".join(str(stat) for stat in top)
    assert rss_growth < RSS_BOUND, (
        f"{label}: RSS grew by {rss_growth / MiB:.1f} MiB over {count} calls "
        f"(bound {RSS_BOUND / MiB:.0f} MiB); largest traced growth:\n{growth_lines}")
    assert traced_growth < TRACED_BOUND, (
        f"{label}: traced memory grew by {traced_growth / 1024:.0f} KiB over {count} calls "
        f"(bound {TRACED_BOUND / 1024:.0f} KiB); largest growth:\n{growth_lines}")


# ----------------------------------------------------------------------------- functional

def functional_call(variant, dtype=np.float64, seed=0):
    """``call(i)``: one of four kinds of call in turn: forward + backward; forward +
    backward with lengths, reverse; inference; a training forward whose cache is
    dropped unused."""
    cell, extra = CELL_VARIANTS[variant]
    rng = np.random.default_rng(seed)
    params = make_params(cell, D, H, dtype, rng)
    x, states = make_inputs(cell, T, B, D, H, dtype, rng)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dstates = tuple(np.ones((B, H), dtype) for _ in states)
    lengths = np.array([T, T // 2, 0, 1])

    def call(i):
        kind = i % 4
        if kind == 0:
            *_, cache = forward(rnnfast, cell, x, states, params, **extra)
            backward(rnnfast, cell, dy, dstates, cache)
        elif kind == 1:
            *_, cache = forward(rnnfast, cell, x, states, params, lengths=lengths,
                                reverse=True, **extra)
            backward(rnnfast, cell, None, (None,) * len(states), cache)
        elif kind == 2:
            forward(rnnfast, cell, x, states, params, training=False, **extra)
        else:
            forward(rnnfast, cell, x, states, params, **extra)  # cache never used
    return call


@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
def test_functional_calls_keep_memory_flat(variant, record_property, capsys):
    measure_growth(functional_call(variant), record_property, capsys, f"functional {variant}")


def test_refused_calls_keep_memory_flat(record_property, capsys):
    """Errors raised by validation (bad shapes, dtypes, used caches) leak nothing."""
    rng = np.random.default_rng(1)
    params = make_params("lstm", D, H, np.float32, rng)
    x, states = make_inputs("lstm", T, B, D, H, np.float32, rng)
    *_, used = forward(rnnfast, "lstm", x, states, params)
    backward(rnnfast, "lstm", None, (None, None), used)
    bad_calls = [
        lambda: forward(rnnfast, "lstm", x[:, :, :-1], states, params),
        lambda: forward(rnnfast, "lstm", x.astype(np.int32), states, params),
        lambda: forward(rnnfast, "lstm", x, states, params, lengths=[T + 1] * B),
        lambda: backward(rnnfast, "lstm", None, (None, None), used),
        lambda: backward(rnnfast, "gru", None, (None,), used),
    ]

    def call(i):
        with pytest.raises((ValueError, TypeError)):
            bad_calls[i % len(bad_calls)]()

    measure_growth(call, record_property, capsys, "refused calls")


def test_concurrent_calls_keep_memory_flat(record_property, capsys):
    """Two Python threads calling the kernels at once (thread-local state, if any,
    must not pile up)."""
    calls = [functional_call(variant, seed=k) for k, variant in enumerate(CELL_VARIANTS)]
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        def call(i):  # each of the two threads makes 25 calls per round
            list(pool.map(lambda k: [calls[k % 4](i * 50 + j) for j in range(25)],
                          (i % 4, (i + 1) % 4)))

        measure_growth(call, record_property, capsys, "two threads", calls=CALLS // 50,
                       warmup=WARMUP // 50, kernel_calls_per_call=50)
    finally:
        pool.shutdown()


# ----------------------------------------------------------------------------- layers

@pytest.mark.parametrize("cls", [RNN, LSTM, GRU], ids=lambda c: c.__name__)
def test_layer_forward_backward_keeps_memory_flat(cls, record_property, capsys):
    """Two bidirectional layers with dropout: forward + backward, with and without
    lengths, and eval-mode forwards."""
    layer = cls(D, H, num_layers=2, bidirectional=True, dropout=0.25, seed=0,
                dtype=np.float64)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, B, D))
    dy = rng.standard_normal((T, B, 2 * H))
    lengths = np.array([T, 3, 0, 1])

    def call(i):
        if i % 3 == 2:
            layer.eval()(x)
            layer.train()
            return
        y, state = layer(x, lengths=lengths if i % 3 else None)
        layer.backward(dy)
        if i % 50 == 0:
            layer.zero_grad()

    measure_growth(call, record_property, capsys, f"layer {cls.__name__}",
                   calls=CALLS // 5, warmup=WARMUP // 5)


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU], ids=lambda c: c.__name__)
def test_stream_keeps_memory_flat(cls, record_property, capsys):
    """Stream steps, resets, and a parameter array replaced now and then (the stream
    rebuilds its arguments then)."""
    layer = cls(D, H, num_layers=2, seed=0)
    stream = layer.stream(B)
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((16, B, D)).astype(np.float32)

    def call(i):
        stream(xs[i % 16])
        if i % 100 == 0:
            stream.reset()
            layer.params["weight_hh_l1"] = layer.params["weight_hh_l1"].copy()

    measure_growth(call, record_property, capsys, f"stream {cls.__name__}")
