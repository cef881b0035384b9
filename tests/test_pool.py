"""The pool of large buffers (rnnfast._pool, csrc/rnnfast_pool.h).

rnnfast's large arrays (outputs, the training cache, gradients, workspaces) and its C
scratch buffers come from one pool that keeps what a call frees: the next call of the
same shape reuses those pages instead of faulting in fresh ones. Checked here: which
arrays come from it, that a freed buffer serves the next call, that a training loop
then takes no page faults even where the system allocator hands every large block
back to the system, the limit, NumPy's resize of a pooled array, and threads.
"""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import rnnfast
from rnnfast import _pool

MiB = 1 << 20
DEFAULT_LIMIT = 256 * MiB


def handler_name(array):
    """The name of the NumPy allocator of the memory under ``array`` (or its base)."""
    while array.base is not None:
        array = array.base
    multiarray = getattr(np, "_core", None) or np.core
    return multiarray.multiarray.get_handler_name(array)


def kept_bytes(nbytes):
    """What the pool counts for a freed block of ``nbytes``: whole 4 KiB pages,
    less the block's 64-byte header."""
    return -(-(nbytes + 64) // 4096) * 4096 - 64


@pytest.fixture
def empty_pool():
    """An empty pool with the default limit, restored afterwards."""
    previous = rnnfast.set_cache_limit(0)
    rnnfast.set_cache_limit(DEFAULT_LIMIT)
    yield
    rnnfast.set_cache_limit(previous)


def gru_problem(T=50, B=16, D=64, H=64, dtype=np.float32):
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(H)
    return dict(
        x=rng.standard_normal((T, B, D)).astype(dtype),
        h0=rng.standard_normal((B, H)).astype(dtype),
        w_ih=rng.uniform(-bound, bound, (3 * H, D)).astype(dtype),
        w_hh=rng.uniform(-bound, bound, (3 * H, H)).astype(dtype),
        b_ih=rng.uniform(-bound, bound, 3 * H).astype(dtype),
        b_hh=rng.uniform(-bound, bound, 3 * H).astype(dtype),
    )


def forward(p, training):
    return rnnfast.gru_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"],
                               training=training)


def test_large_arrays_come_from_the_pool_and_small_ones_do_not(empty_pool):
    p = gru_problem()          # y (50, 16, 64) float32: 200 KiB; h_T 4 KiB
    y, h_T, cache = forward(p, training=True)
    grads = rnnfast.gru_backward(np.ones_like(y), None, cache)
    assert handler_name(y) == "rnnfast_pool"
    assert handler_name(grads.dx) == "rnnfast_pool"
    assert handler_name(h_T) != "rnnfast_pool"
    assert handler_name(grads.db_ih) != "rnnfast_pool"
    y_inference = forward(p, training=False)[0]
    assert handler_name(y_inference) == "rnnfast_pool"
    np.testing.assert_allclose(y_inference, y, rtol=1e-6, atol=1e-6)


def test_a_freed_buffer_serves_the_next_call_of_its_shape(empty_pool):
    p = gru_problem()
    y = forward(p, training=False)[0]
    start = y.base.ctypes.data
    assert rnnfast.cached_bytes() > 0    # the call's workspace and packed weights
    kept_with_y = rnnfast.cached_bytes()
    del y
    assert rnnfast.cached_bytes() == kept_with_y + kept_bytes(51 * 16 * 64 * 4)  # states
    y_again = forward(p, training=False)[0]
    assert y_again.base.ctypes.data == start
    assert rnnfast.cached_bytes() == kept_with_y


FAULTS_SCRIPT = textwrap.dedent("""
    import ctypes, resource, statistics, sys
    import numpy as np
    import rnnfast
    # glibc: mmap every block from 64 KiB and give it back on free, so that without
    # the pool every large buffer of every call comes as fresh pages
    libc = ctypes.CDLL(None)
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    if not (libc.mallopt(M_MMAP_THRESHOLD, 65536) == libc.mallopt(M_TRIM_THRESHOLD, 65536)
            == 1):
        sys.exit(print("mallopt refused"))   # another allocator (a sanitizer's)
    rnnfast.set_cache_limit(int(sys.argv[1]))
    rng = np.random.default_rng(0)
    T, B, D, H = 100, 16, 64, 64
    x = rng.standard_normal((T, B, D), dtype=np.float32)
    dy = np.ones((T, B, H), np.float32)
    if sys.argv[2] == "functional":
        h0 = np.zeros((B, H), np.float32)
        w_ih = rng.uniform(-0.1, 0.1, (3 * H, D)).astype(np.float32)
        w_hh = rng.uniform(-0.1, 0.1, (3 * H, H)).astype(np.float32)
        b = np.zeros(3 * H, np.float32)

        def step():
            y, h_T, cache = rnnfast.gru_forward(x, h0, w_ih, w_hh, b, b, training=True)
            return rnnfast.gru_backward(dy, None, cache)
    else:   # two bidirectional layers with dropout, batch first
        lstm = rnnfast.LSTM(D, H, num_layers=2, bidirectional=True, dropout=0.25,
                            batch_first=True)
        x = np.ascontiguousarray(x.swapaxes(0, 1))
        dy = np.ones((B, T, 2 * H), np.float32)

        def step():
            lstm.zero_grad()
            lstm(x)
            return lstm.backward(dy)

    for _ in range(5):
        step()
    faults = []
    for _ in range(21):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    # the median: a thread's first piece of work (the bidirectional layer's worker,
    # whose first turn depends on timing) grows its malloc arena once
    print(statistics.median(faults))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("api", ["functional", "layers"])
def test_a_training_loop_faults_in_no_fresh_pages(api, capsys):
    def faults_per_call(limit):
        result = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, str(limit), api],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        if result.stdout.strip() == "mallopt refused":
            pytest.skip("the allocator is not glibc's: mallopt has no effect")
        return float(result.stdout)

    with_pool, without_pool = faults_per_call(DEFAULT_LIMIT), faults_per_call(0)
    with capsys.disabled():
        print(f"\n  page faults per training step ({api}): {with_pool:.0f} with the pool, "
              f"{without_pool:.0f} without")
    assert with_pool < 8
    assert without_pool > 100    # the check above can fail at all


def test_limit_bounds_what_is_kept_and_zero_releases_everything(empty_pool):
    arrays = [_pool.empty((64, 1024), np.float32) for _ in range(4)]   # 256 KiB each
    block = kept_bytes(256 * 1024)
    del arrays
    assert rnnfast.cached_bytes() == 4 * block
    assert rnnfast.set_cache_limit(600 * 1024) == DEFAULT_LIMIT
    assert rnnfast.cached_bytes() == 2 * block      # the oldest went first
    small = _pool.empty((1024,), np.float32)        # 4 KiB: never kept
    del small
    assert rnnfast.cached_bytes() == 2 * block
    rnnfast.set_cache_limit(0)
    assert rnnfast.cached_bytes() == 0
    y = forward(gru_problem(), training=False)[0]
    del y
    assert rnnfast.cached_bytes() == 0


@pytest.mark.parametrize("limit, error, message", [
    (1.5, TypeError, "limit must be an int (bytes), got float 1.5"),
    (True, TypeError, "limit must be an int (bytes), got bool True"),
    (-1, ValueError, "limit must be >= 0 bytes, got -1"),
])
def test_a_bad_limit_is_refused(limit, error, message):
    with pytest.raises(error) as info:
        rnnfast.set_cache_limit(limit)
    assert str(info.value) == message


@pytest.mark.parametrize("new_size", [10_000, 60_000, 400_000])
def test_resizing_a_pooled_array_keeps_its_values(empty_pool, new_size):
    array = _pool.empty((50_000,), np.float32)     # 200 KiB
    array[:] = np.arange(50_000)
    assert handler_name(array) == "rnnfast_pool"
    array.resize((new_size,), refcheck=False)
    kept = min(new_size, 50_000)
    np.testing.assert_array_equal(array[:kept], np.arange(kept, dtype=np.float32))
    array[:] = 7                                   # all of it writable
    assert array.sum() == 7 * new_size


def test_threads_never_share_a_buffer(empty_pool):
    failures = []

    def work(tid):
        for i in range(200):
            first = _pool.empty((20_000,), np.int64)     # 160 KiB
            first[:] = tid * 1000 + i
            second = _pool.empty((20_000 + 1000 * tid,), np.int64)
            second[:] = -tid
            if not (first == tid * 1000 + i).all() or not (second == -tid).all():
                failures.append((tid, i))
            del first, second

    threads = [threading.Thread(target=work, args=(tid,)) for tid in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


FORK_SCRIPT = textwrap.dedent("""
    import os
    import numpy as np
    import rnnfast
    from rnnfast import _pool

    rnnfast.set_cache_limit(256 << 20)    # the memory-safety build starts at 0
    rng = np.random.default_rng(0)
    T, B, D, H = 200, 1, 128, 128     # one thread: no OpenMP region in the child
    args = (rng.standard_normal((T, B, D)).astype(np.float32),
            np.zeros((B, H), np.float32),
            rng.uniform(-0.1, 0.1, (3 * H, D)).astype(np.float32),
            rng.uniform(-0.1, 0.1, (3 * H, H)).astype(np.float32), None, None)
    expected = rnnfast.gru_forward(*args, training=False)[0].copy()
    held = _pool.empty((50_000,), np.float32)    # the pool holds blocks across the fork
    del held
    pid = os.fork()
    if pid == 0:    # the child: exit status 0 when its results match
        ok = all(np.array_equal(rnnfast.gru_forward(*args, training=False)[0], expected)
                 for _ in range(3))
        os._exit(0 if ok and rnnfast.cached_bytes() > 0 else 1)
    _, status = os.waitpid(pid, 0)
    same = np.array_equal(rnnfast.gru_forward(*args, training=False)[0], expected)
    print(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and same)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_allocates_from_its_copy_of_the_pool():
    # in a fresh interpreter: this one may run other libraries' threads, which a
    # fork does not take along
    result = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
