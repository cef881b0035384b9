"""The two directions of a bidirectional layer at once (rnnfast._pair): the results of
running them one after the other, each direction's calls capped at half the
threads, errors raised once both are done, and a worker that a forked child starts
anew."""

import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rnnfast
from rnnfast import _pair, _threads
from conftest import CELL_VARIANTS, assert_close, output_of_child

LAYERS = {"rnn": rnnfast.RNN, "lstm": rnnfast.LSTM, "gru": rnnfast.GRU}

needs_two_threads = pytest.mark.skipif(_threads.max_threads() < 2,
                                       reason="runs one thread (a build without OpenMP)")


PROCESS_SLEPT = _pair._process_slept


@pytest.fixture(autouse=True)
def awake(monkeypatch):
    """Pairs run at once here even where the process slept before them (between
    tests, in a wait for the worker); test_a_process_that_slept_runs_in_turn checks
    that rule."""
    monkeypatch.setattr(_pair, "_process_slept", lambda: False)


def make_layer(variant, dtype, **options):
    cell, extra = CELL_VARIANTS[variant]
    return LAYERS[cell](5, 7, num_layers=2, bidirectional=True, dtype=dtype, seed=4,
                        **extra, **options)


def run_layer(layer, training, lengths, seed=0):
    """Outputs, final states, and in training dx, the initial states' gradients and
    every parameter gradient of one forward (and backward)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((9, 6, 5)).astype(layer.dtype)
    layer.train(training)
    layer.zero_grad()
    y, state = layer(x, lengths=lengths)
    results = {"y": y.copy(), **{f"state{i}": s.copy() for i, s in enumerate(as_tuple(state))}}
    if training:
        dy = rng.standard_normal(y.shape).astype(layer.dtype)
        dx, dstate = layer.backward(dy, tuple(np.ones_like(s) for s in as_tuple(state))
                                    if isinstance(state, tuple) else np.ones_like(state))
        results["dx"] = dx
        results.update({f"dstate{i}": d for i, d in enumerate(as_tuple(dstate))})
        results.update({f"grad {name}": g.copy() for name, g in layer.grads.items()})
    return results


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def count_pairs(monkeypatch):
    """A list that grows by one entry per call of _pair.both."""
    calls = []
    both = _pair.both

    def counted(first, second):
        calls.append(1)
        return both(first, second)
    monkeypatch.setattr(_pair, "both", counted)
    return calls


@needs_two_threads
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
def test_directions_at_once_match_one_after_the_other(variant, dtype, training,
                                                      with_lengths, monkeypatch):
    lengths = np.array([9, 3, 0, 9, 5, 1]) if with_lengths else None
    layer = make_layer(variant, dtype, dropout=0.0)
    pairs = count_pairs(monkeypatch)
    paired = run_layer(layer, training, lengths)
    assert len(pairs) == (4 if training else 2)      # two layers, forward and backward
    monkeypatch.setattr(_threads, "pairs_directions", lambda *args: False)
    in_turn = run_layer(layer, training, lengths)
    assert len(pairs) == (4 if training else 2)
    for name in in_turn:
        assert_close(paired[name], in_turn[name], dtype, name=name)


@needs_two_threads
@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
def test_who_runs_the_reverse_direction_never_changes_the_results(variant, monkeypatch):
    """The worker, the caller taking back a piece the worker has not started, or the
    caller running both in turn as the worker is busy: bitwise the same results, each
    direction's calls on the same threads (on all of them, a call would split its
    GEMMs over the steps into other partial sums)."""
    layer = make_layer(variant, np.float64, dropout=0.0)
    on_the_worker = run_layer(layer, True, None)
    with _pair._lock:   # the worker is busy
        in_turn = run_layer(layer, True, None)

    class NeverStarted:
        """A worker that never starts its piece: the caller takes each one back."""

        def put(self, task):
            _pair._lock.release()     # as the worker does when it finds a piece taken

    monkeypatch.setattr(_pair, "_worker_tasks", NeverStarted)
    taken_back = run_layer(layer, True, None)
    for name in on_the_worker:
        np.testing.assert_array_equal(in_turn[name], on_the_worker[name], err_msg=name)
        np.testing.assert_array_equal(taken_back[name], on_the_worker[name], err_msg=name)


def test_pairs_directions_by_work_weights_and_threads(monkeypatch):
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 2_000_000)
    monkeypatch.setattr(_threads, "max_threads", lambda: 2)
    pairs = _threads.pairs_directions
    # LSTM, T = 100, B = 1: H = 32 is 0.8M multiply-adds a direction, H = 64 3.3M
    assert not pairs(100, 1, 4, 32, 32, 4, True)
    assert pairs(100, 1, 4, 64, 64, 4, True) and pairs(100, 1, 4, 64, 64, 4, False)
    # W_hh of 1 MiB: inference pairs from B = 2 (512 KiB a row), training always
    assert not pairs(100, 1, 4, 256, 256, 4, False)
    assert pairs(100, 2, 4, 256, 256, 4, False) and pairs(100, 1, 4, 256, 256, 4, True)
    monkeypatch.setattr(_threads, "max_threads", lambda: 1)
    assert not pairs(100, 16, 4, 256, 256, 4, True)


def after_the_second_starts(first, second):
    """``(first, second)`` wrapped so that the first waits until the second has started
    (on the worker: the caller takes back only a second piece not yet started), once
    the worker is free (it may still be skipping a piece an earlier caller took back;
    busy, it would leave both pieces to the caller, and the first would wait in vain)."""
    wait_for_the_worker()
    started = threading.Event()

    def waiting():
        assert started.wait(30)
        return first()

    def starting():
        started.set()
        return second()
    return waiting, starting


def wait_for_the_worker():
    deadline = time.monotonic() + 30
    while _pair._lock.locked():
        assert time.monotonic() < deadline, "the worker stays busy"
        time.sleep(0.001)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_both_caps_each_piece_at_half_the_threads(threads):
    def piece():
        return threading.get_ident(), _threads.max_threads()

    with _threads.capped(threads):
        allowed = _threads.max_threads()
        pieces = after_the_second_starts(piece, piece) if allowed > 1 else (piece, piece)
        (first_thread, first_cap), (second_thread, second_cap) = _pair.both(*pieces)
        assert _threads.max_threads() == allowed      # the cap of the caller is back
    assert first_thread == threading.get_ident()
    if allowed < 2:     # one thread: both pieces on the caller, in turn
        assert (second_thread, first_cap, second_cap) == (first_thread, allowed, allowed)
    else:
        assert second_thread != first_thread
        assert (first_cap, second_cap) == (allowed - allowed // 2, allowed // 2)


@needs_two_threads
def test_the_worker_takes_the_callers_share_not_a_share_of_its_own_limit():
    """OpenMP's limit is a setting of each thread: with the worker's own set to 1, the
    second piece still gets half the caller's threads, as it would on the caller."""
    from threadpoolctl import threadpool_limits

    limiter = []

    def on_the_worker(action):
        first, second = after_the_second_starts(lambda: None, action)
        return _pair.both(first, second)[1]

    with _threads.capped(4):
        on_the_worker(lambda: limiter.append(threadpool_limits(1, user_api="openmp")))
        try:
            assert on_the_worker(_threads.max_threads) == 2
        finally:
            on_the_worker(lambda: limiter[0].restore_original_limits())


def test_a_process_that_slept_runs_in_turn(monkeypatch):
    """Whether the process mostly slept since the last pair ended, over 0.5 ms at
    least: then the worker's core likely sleeps too, and both() runs in turn."""
    monkeypatch.setattr(_pair, "_last_end", [0.0, 0.0])

    def after(wait):
        _pair._last_end[:] = time.perf_counter(), time.process_time()
        wait()
        return PROCESS_SLEPT()

    def busy():
        end = time.perf_counter() + 0.005
        while time.perf_counter() < end:
            pass
    assert after(lambda: time.sleep(0.01))
    assert not after(busy)
    assert not after(lambda: None)


@needs_two_threads
def test_a_pair_after_the_process_slept_runs_in_turn_on_the_same_caps(monkeypatch):
    monkeypatch.setattr(_pair, "_process_slept", lambda: True)

    def piece():
        return threading.get_ident(), _threads.max_threads()
    with _threads.capped(4):
        first, second = _pair.both(piece, piece)
    assert first == (threading.get_ident(), 2) and second == (threading.get_ident(), 2)


@needs_two_threads
def test_both_raises_once_both_pieces_are_done():
    finished = []

    def slow():
        time.sleep(0.05)
        finished.append("second")
        return 2

    def fails(message):
        def piece():
            raise ValueError(message)
        return piece

    with pytest.raises(ValueError, match="first"):
        _pair.both(fails("first"), slow)
    assert finished == ["second"]
    with pytest.raises(ValueError, match="second"):
        _pair.both(lambda: 1, fails("second"))
    with pytest.raises(ValueError, match="first"):
        _pair.both(fails("first"), fails("second"))
    assert _pair.both(lambda: 1, lambda: 2) == (1, 2)      # the worker is free again


@needs_two_threads
def test_both_inside_a_piece_runs_in_turn():
    """A piece that pairs again finds the worker busy and runs both parts itself."""
    def inner():
        return _pair.both(threading.get_ident, threading.get_ident)

    (first_a, first_b), (second_a, second_b) = _pair.both(*after_the_second_starts(inner,
                                                                                    inner))
    assert first_a == first_b == threading.get_ident()
    assert second_a == second_b != threading.get_ident()


@needs_two_threads
def test_the_caller_runs_a_second_piece_the_worker_has_not_started(monkeypatch):
    """A worker that waits for a core leaves the second piece to the caller; once it
    runs, it skips that piece and is free for the next pair."""
    held = queue.SimpleQueue()      # the worker's tasks, held back until both() is done
    monkeypatch.setattr(_pair, "_worker_tasks", lambda: held)
    ran = []
    assert _pair.both(lambda: ran.append("first") or 1, lambda: ran.append("second") or 2) \
        == (1, 2)
    assert ran == ["first", "second"]
    threading.Thread(target=_pair._work, args=(held,), daemon=True).start()
    monkeypatch.undo()
    wait_for_the_worker()     # which skips the piece and frees itself
    assert ran == ["first", "second"]
    first, second = after_the_second_starts(threading.get_ident, threading.get_ident)
    caller, worker = _pair.both(first, second)
    assert caller == threading.get_ident() != worker


@needs_two_threads
def test_bidirectional_layers_from_several_python_threads_match_serial():
    """Four Python threads share one worker: a call that finds it busy runs its
    directions in turn, with the same results."""
    layers = [rnnfast.LSTM(16, 32, bidirectional=True, seed=seed) for seed in range(4)]
    x = np.random.default_rng(0).standard_normal((40, 2, 16)).astype(np.float32)

    def run(layer):
        y, _ = layer(x)
        dx, _ = layer.backward(np.ones_like(y))
        return y, dx

    serial = [run(layer) for layer in layers]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            for (y, dx), (y_serial, dx_serial) in zip(pool.map(run, layers), serial):
                assert_close(y, y_serial, np.float32, name="y")
                assert_close(dx, dx_serial, np.float32, name="dx")


FORK_SCRIPT = """
import os
import threading
import time
import numpy as np
import rnnfast
from rnnfast import _pair

_pair._process_slept = lambda: False    # pair the first call too
layer = rnnfast.GRU(64, 64, bidirectional=True, seed=1).eval()
x = np.random.default_rng(0).standard_normal((100, 1, 64)).astype(np.float32)
expected = layer(x)[0].copy()     # 2.5M multiply-adds a direction: paired
assert any(thread.name == "rnnfast-pair" for thread in threading.enumerate())
pid = os.fork()
if pid == 0:    # the child: no worker came along; it starts its own
    same = np.allclose(layer(x)[0], expected, rtol=2e-4, atol=2e-5)
    while _pair._lock.locked():     # the worker may still skip a piece taken back
        time.sleep(0.001)
    started = threading.Event()
    def first():
        started.wait(30)
        return threading.get_ident()
    def second():
        started.set()
        return threading.get_ident()
    threads = threading.get_ident(), _pair.both(first, second)
    os._exit(0 if same and threads[0] == threads[1][0] != threads[1][1] else 1)
_, status = os.waitpid(pid, 0)
print(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
"""


@needs_two_threads
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_pairs_with_a_worker_of_its_own():
    assert output_of_child(FORK_SCRIPT, OMP_NUM_THREADS="2") == "True"
