"""Packed weights kept between inference calls (csrc/rnnfast_kept.h): an inference
forward keeps its weights packed, with a copy of their bytes, and packs them again
only where those bytes changed: [W_ih | W_hh] for an LSTM that runs each step as one
product over [x_t | h_{t-1}] ("joined"), else W_hh and, where the projection runs on
packed weights, W_ih ("steps"). Whatever happens to the arrays between calls, every
result must be bitwise the one of weights packed afresh: the same call on copies of
the weights, which lie at other addresses."""

import os
import threading

import numpy as np
import pytest

import rnnfast
from conftest import CELLS, DTYPES, forward, make_params, output_of_child
from rnnfast import _kernels, functional

T, D, H = 6, 12, 16
# 16 rows: 8 per thread where the batch is split in two, enough for an LSTM to join its
# steps; 2 rows: too few
BATCHES = {"joined": 16, "steps": 2}
CASES = [("lstm", "joined"), ("lstm", "steps"), ("gru", "steps"), ("rnn", "steps")]


def inference(cell, x, params):
    states = (None,) * (2 if cell == "lstm" else 1)
    return forward(functional, cell, x, states, params, training=False)[0]


def fresh(cell, x, params):
    """The same call on copies of the weights: packed afresh."""
    return inference(cell, x, [np.array(p, copy=True) for p in params])


def problem(cell, layout, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, BATCHES[layout], D)).astype(dtype)
    return x, list(make_params(cell, D, H, dtype, rng))


@pytest.fixture(autouse=True)
def pool_keeps_buffers():
    """Weights are kept only while the buffer pool may keep memory, which the
    memory-safety build's pool does only when told to."""
    previous = rnnfast.set_cache_limit(256 << 20)
    yield
    rnnfast.set_cache_limit(previous)


@pytest.fixture(params=["one block", "split"])
def blocks(request, monkeypatch):
    """The small-call path (one block, compiled) and the batch split in two."""
    if request.param == "split":
        request.getfixturevalue("split_small_batches")
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell, layout", CASES)
def test_the_packed_weights_are_kept_and_reused(cell, layout, dtype, blocks):
    x, params = problem(cell, layout, dtype, 0)
    first = inference(cell, x, params)
    shapes, held = _kernels.kept_weights()
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    assert (layout, np.dtype(dtype).itemsize, G * H, D, H) in shapes
    assert held > 0
    np.testing.assert_array_equal(inference(cell, x, params), first)
    np.testing.assert_array_equal(first, fresh(cell, x, params))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell, layout", CASES)
def test_weights_changed_in_place_are_packed_again(cell, layout, dtype, blocks):
    x, params = problem(cell, layout, dtype, 1)
    w_ih, w_hh = params[0], params[1]
    inference(cell, x, params)
    w_hh[3, 5] += 0.5
    np.testing.assert_array_equal(inference(cell, x, params), fresh(cell, x, params))
    w_ih[-1, -1] = -w_ih[-1, -1]                    # the last value of W_ih
    np.testing.assert_array_equal(inference(cell, x, params), fresh(cell, x, params))
    w_ih[0, 0] = np.nan
    with_nan = inference(cell, x, params)
    assert np.isnan(with_nan).any()
    np.testing.assert_array_equal(with_nan, fresh(cell, x, params))
    w_ih[0, 0] = 0.25
    np.testing.assert_array_equal(inference(cell, x, params), fresh(cell, x, params))


def test_the_same_weights_packed_both_ways_are_two_entries(blocks):
    """An LSTM's weights joined for a large batch and packed apart for a small one."""
    x_joined, params = problem("lstm", "joined", np.float32, 4)
    x_steps = x_joined[:, :BATCHES["steps"]].copy()
    for _ in range(2):
        for x in (x_joined, x_steps):
            np.testing.assert_array_equal(inference("lstm", x, params),
                                          fresh("lstm", x, params))
    shapes, _ = _kernels.kept_weights()
    assert {("joined", 4, 4 * H, D, H), ("steps", 4, 4 * H, D, H)} <= set(shapes)


@pytest.mark.parametrize("cell", CELLS)
def test_an_array_refilled_with_other_weights_is_packed_again(cell, blocks):
    """The same addresses, other bytes: what an array freed and allocated again, or
    overwritten with another model's weights, looks like."""
    x, params = problem(cell, "steps", np.float32, 2)
    _, others = problem(cell, "steps", np.float32, 3)
    inference(cell, x, params)
    for param, other in zip(params, others):
        param[...] = other
    np.testing.assert_array_equal(inference(cell, x, params), fresh(cell, x, others))


def test_more_weight_sets_than_are_kept_in_turn(blocks):
    problems = [problem("lstm", "joined", np.float32, seed) for seed in range(12)]
    expected = [fresh("lstm", x, params) for x, params in problems]
    for _ in range(3):
        for (x, params), want in zip(problems, expected):
            np.testing.assert_array_equal(inference("lstm", x, params), want)
    shapes, _ = _kernels.kept_weights()
    assert 1 <= len(shapes) <= 8


def test_threads_calling_at_once_each_get_their_own_weights(blocks):
    """While one call holds the kept weights, another thread's call packs its own."""
    problems = [problem(cell, "steps" if cell == "gru" else "joined", np.float32, seed)
                for seed, cell in enumerate(("lstm", "gru", "lstm"))]
    cells = ("lstm", "gru", "lstm")
    expected = [fresh(cell, x, params) for cell, (x, params) in zip(cells, problems)]
    failures = []

    def run(index):
        x, params = problems[index]
        for _ in range(40):
            if not np.array_equal(inference(cells[index], x, params), expected[index]):
                failures.append(index)
                return

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(problems))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_cache_limit_of_zero_drops_the_kept_weights_and_keeps_none():
    x, params = problem("lstm", "joined", np.float32, 30)
    expected = inference("lstm", x, params)
    assert _kernels.kept_weights()[0]
    rnnfast.set_cache_limit(0)
    assert _kernels.kept_weights() == ([], 0)
    np.testing.assert_array_equal(inference("lstm", x, params), expected)
    assert _kernels.kept_weights() == ([], 0)


FORK_SCRIPT = """
import os, threading
import numpy as np
import rnnfast
from rnnfast import _kernels, functional

rnnfast.set_cache_limit(256 << 20)
rng = np.random.default_rng(0)
x = rng.standard_normal((200, 16, 32)).astype(np.float32)
params = [0.1 * rng.standard_normal(shape).astype(np.float32)
          for shape in ((128, 32), (128, 32), (128,), (128,))]
running = threading.Event()
stop = threading.Event()

def infer():
    while not stop.is_set():
        functional.lstm_forward(x, None, None, *params, training=False)
        running.set()

thread = threading.Thread(target=infer)
thread.start()
running.wait()
pid = os.fork()   # most likely while the thread's call holds the kept weights
if pid == 0:
    y = functional.lstm_forward(x[:3], None, None, *params, training=False)[0]
    again = functional.lstm_forward(x[:3], None, None, *params, training=False)[0]
    kept = len(_kernels.kept_weights()[0]) >= 1
    rnnfast.set_cache_limit(0)
    os._exit(0 if np.array_equal(y, again) and kept else 3)
_, status = os.waitpid(pid, 0)
stop.set()
thread.join()
print(os.WEXITSTATUS(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_during_a_call_keeps_weights_of_its_own():
    """The child starts with the cache free, whichever thread held it in the parent."""
    assert output_of_child(FORK_SCRIPT) == "0"
