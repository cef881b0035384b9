"""Thread policy: how many threads a kernel call uses, and BLAS kept single-threaded
while it does.

A kernel call with B >= 2 * MIN_ROWS_PER_THREAD rows and at least
2 * MIN_WORK_PER_THREAD multiply-adds splits its batch into blocks that run their
time loops on OpenMP threads, and splits the large GEMMs over the same threads.
Smaller calls run their time loop on the calling thread: starting threads would
cost more than they save, and on a busy machine a thread waiting for a core can
stall a short call for a whole scheduler time slice. Over enough steps of enough
work the calling thread shares each step with helper threads instead (step_parts),
which never make it wait for a part they have not started. BLAS libraries keep
thread pools of their own that spin-wait between calls; running them beside the
OpenMP threads oversubscribes the cores (measured: an order of magnitude slower on
2 cores). So while any such call runs, every BLAS library loaded in the process is
set to one thread and restored afterwards. ``OMP_NUM_THREADS`` caps the thread
count.

The two directions of a bidirectional layer are independent: where neither would
use the threads well alone (pairs_directions), they run at once, each on half the
threads (rnnfast._pair), every kernel call in them capped by ``capped``.

A process forked after this one ran a call on OpenMP threads runs every call on
one thread: GNU OpenMP cannot start its threads again in such a child, whose first
parallel region would hang. (The streams' helper threads are plain threads, started
anew in the child.)
"""

import ctypes
import itertools
import math
import os
import threading

from threadpoolctl import ThreadpoolController

from . import _helpers, _kernels
from ._blas import ThreadCounts

MIN_ROWS_PER_THREAD = 4
MIN_WORK_PER_THREAD = 2_000_000  # multiply-adds: some tens of microseconds
# A call's GEMMs over all its steps open a parallel region each, whose sleeping
# threads take tens of microseconds to wake (measured 35-45 us on a 2-core VM):
# they split over more threads than its batch only from this many multiply-adds
# (of the forward) per thread, a hundred microseconds of work or more. Training,
# T = 100, 2 threads, against 32M: LSTM B = 4, H = 128 (52M) +30 %, LSTM B = 1,
# H = 256 +16 %, GRU B = 1, H = 256 (39M) +20 %; at 8M, 13M-20M calls gained 0-13 %.
MIN_GEMM_WORK_PER_THREAD = 16_000_000
# A model layer's product (rnnfast.Linear) splits its rows over threads from this
# many multiply-adds per thread: waking the second thread costs tens of
# microseconds. (N, D, O) = (1600, 192, 103), 32M: 0.69 -> 0.41 ms on 2 threads;
# 16M: 0.35 -> 0.24 ms; 8M: 0.175 -> 0.153 ms; 1.6M: 0.037 -> 0.078 ms.
MIN_PRODUCT_WORK_PER_THREAD = 8_000_000
# A batch too small to split shares each step between threads (step_parts) from
# this many multiply-adds of the step's recurrent product per thread, with two
# panels of 32 columns of the product at least per thread, and in training over
# this many steps at least. Measured on 2 cores against one thread, T = 100: GRU
# B = 2, H = 64 (24576 a step) +10 %, LSTM B = 1, H = 80 +12 %, H = 128 +34 %, RNN
# B = 1, H = 256 +39 %, LSTM B = 1, H = 512 +82 %; RNN B = 4, H = 96 (three panels)
# -12 %. Each thread packs its panels of the weights, so inference gains from one
# step on (LSTM B = 1, H = 256: T = 1 86 -> 46 us, T = 10 223 -> 116 us; LSTM B = 1,
# H = 80, T = 1 9.2 -> 7.3 us), while training, which also computes the weight
# gradients, took 5-25 % longer at T <= 4 (LSTM B = 1, H = 256) and ranged from -5
# to +15 % at T = 6-16.
MIN_STEP_WORK_PER_THREAD = 12288
MIN_STEP_COLUMNS_PER_THREAD = 64
MIN_STEP_TEAM_STEPS = 24
# The two directions of a layer run at once, on half the threads each, from
# MIN_WORK_PER_THREAD multiply-adds a direction: below it handing one over to
# another thread costs more than it saves (LSTM B = 1, H = 32, training: 0.23 ->
# 0.31 ms).
# Not in inference where each batch row reads this many bytes of W_hh a step or
# more: there each step shared by all threads reads its weights from the caches of
# all cores, which pays twice over (LSTM B = 1, H = 256: 1.69 -> 1.78 ms paired).
PAIRED_INFERENCE_MAX_WEIGHT_BYTES_PER_ROW = 768 * 1024

_lock = threading.Lock()
_active_calls = 0

_cap = threading.local()      # .threads: this Python thread's limit, where capped
_caps = 0                     # caps in force, in all threads (capped)
_limiters = None
_ran_teams = False            # this process has chosen OpenMP threads for a call
_forked_after_teams = False   # ... and this is a child forked after it did


def max_threads():
    """The most threads a kernel call may use: OpenMP's limit (``OMP_NUM_THREADS``),
    or the cap of the calling Python thread (``capped``); 1 in a build without OpenMP
    and in a child forked after OpenMP threads ran."""
    return 1 if _forked_after_teams else _capped(_kernels.max_threads())


def _capped(threads):
    if _caps == 0:   # the common case, without the slower thread-local lookup
        return threads
    return getattr(_cap, "threads", threads)


class capped:
    """Context manager: within the block the kernel calls of this Python thread (its
    streams' steps too) take ``threads`` as their limit in place of OpenMP's (caps
    nest: the innermost holds).
    In place, not below: OpenMP's limit is a setting of each thread, and a worker
    running a piece for another thread takes that thread's share of its limit, not
    a share of its own."""

    def __init__(self, threads):
        self.threads = threads

    def __enter__(self):
        global _caps
        self.saved = getattr(_cap, "threads", None)
        _cap.threads = self.threads
        self.saved_in_c = _helpers.set_thread_cap(self.threads)   # for the streams
        with _lock:
            _caps += 1
        return self

    def __exit__(self, *exc_info):
        global _caps
        with _lock:
            _caps -= 1
        _helpers.set_thread_cap(self.saved_in_c)
        if self.saved is None:
            del _cap.threads
        else:
            _cap.threads = self.saved
        return False


def _team(threads):
    """``threads`` for a call, noting whether OpenMP threads run (see the fork rule)."""
    global _ran_teams
    if threads > 1:
        _ran_teams = True
    return threads


def _after_fork_in_child():
    global _forked_after_teams
    _forked_after_teams = _forked_after_teams or _ran_teams


os.register_at_fork(after_in_child=_after_fork_in_child)


def batch_parts(B, multiply_adds=math.inf):
    """How many blocks of batch rows run their time loops in parallel, for a call of
    B rows and about ``multiply_adds`` multiply-adds in all."""
    by_work = multiply_adds // MIN_WORK_PER_THREAD
    return _team(int(max(1, min(max_threads(), B // MIN_ROWS_PER_THREAD, by_work))))


def step_parts(T, B, gates, H, parts, training):
    """Threads that share each step of a call of T steps whose batch of B rows runs
    as one block (``parts == 1``): the calling thread and helper threads
    (rnnfast._helpers, which a forked child starts anew) each pack and then compute
    some panels of columns of the step's products; the gate pass stays on the
    caller. Each core then reads only its panels of W_hh, which stay in its cache
    from step to step, where one core would stream all of it. ``gates`` = G;
    ``training``: a forward that keeps its cache, or a backward."""
    by_step = B * gates * H * H // MIN_STEP_WORK_PER_THREAD
    if parts > 1 or by_step < 2 or (training and T < MIN_STEP_TEAM_STEPS):   # cheap first
        return 1
    by_columns = gates * H // MIN_STEP_COLUMNS_PER_THREAD
    return int(max(1, min(_capped(_kernels.max_threads()), by_step, by_columns)))


def pairs_directions(T, B, gates, D, H, itemsize, training):
    """Whether the two directions of a layer run at once (``rnnfast._pair.both``),
    for calls of T steps, B rows, G = ``gates``, input width D, H hidden units and
    ``itemsize`` bytes a value; ``training``: a training forward or a backward."""
    if T * B * gates * H * (D + H) < MIN_WORK_PER_THREAD or max_threads() < 2:
        return False
    return training or gates * H * H * itemsize < PAIRED_INFERENCE_MAX_WEIGHT_BYTES_PER_ROW * B


def gemm_parts(rows, multiply_adds, parts):
    """Threads for a call's GEMMs over all its ``rows`` = T*B rows (the training input
    projection, dx and the weight gradients), at least the ``parts`` of its time loop:
    a batch too small to split, over many steps, still spreads them."""
    by_work = multiply_adds // MIN_GEMM_WORK_PER_THREAD
    return _team(int(max(parts, min(max_threads(), rows // MIN_ROWS_PER_THREAD, by_work))))


def product_parts(rows, multiply_adds):
    """Threads for a model layer's product of ``rows`` output rows and
    ``multiply_adds`` in all (``rnnfast._products.multiply``)."""
    by_work = multiply_adds // MIN_PRODUCT_WORK_PER_THREAD
    return _team(int(max(1, min(max_threads(), rows // MIN_ROWS_PER_THREAD, by_work))))


class single_threaded_blas:
    """Context manager: BLAS on one thread while a parallel kernel call runs.

    Calls from several Python threads nest: the first one in saves and limits the
    thread counts, the last one out restores them.
    """

    def __init__(self, parts):
        self.parts = parts

    def __enter__(self):
        global _active_calls
        if self.parts > 1:
            with _lock:
                if _active_calls == 0:
                    for limiter in _blas_limiters():
                        limiter.limit_to_one()
                _active_calls += 1
        return self

    def __exit__(self, *exc_info):
        global _active_calls
        if self.parts > 1:
            with _lock:
                _active_calls -= 1
                if _active_calls == 0:
                    for limiter in _blas_limiters():
                        limiter.restore()
        return False


def blas_on_one_thread():
    """Context manager: every BLAS library at one thread for a whole block of work,
    such as a training loop, whatever the thread counts of its kernel calls. Between
    kernel calls a model runs small products (its output layer, losses, clipping)
    that gain nothing from BLAS threads, while their spin-waiting takes the cores
    the kernels' own threads need."""
    return single_threaded_blas(parts=2)   # any parts > 1 holds BLAS at one thread


def _blas_limiters():
    """What sets every BLAS library loaded in this process (scipy's among them) to one
    thread and back, found once: a pthreads OpenBLAS through its C entry points
    (``_blas.ThreadCounts``, about 10 us less per kernel call than ctypes), any other
    through threadpoolctl."""
    global _limiters
    if _limiters is None:
        addresses, others = [], []
        for library in ThreadpoolController().select(user_api="blas").lib_controllers:
            entry_points = _openblas_entry_points(library)
            if entry_points is None or len(addresses) == 8:
                others.append(library)
            else:
                addresses.append(entry_points)
        _limiters = (ThreadCounts(addresses), _ControlledLibraries(others))
    return _limiters


def _openblas_entry_points(library):
    """The addresses of ``openblas_get_num_threads`` and ``openblas_set_num_threads``
    (with scipy's prefix or the 64-bit suffix) of an OpenBLAS that runs its own
    threads, or None for any other library."""
    if (library.internal_api != "openblas"
            or getattr(library, "threading_layer", None) != "pthreads"):
        return None
    dynlib = ctypes.CDLL(library.filepath)
    for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
        getter = getattr(dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
        setter = getattr(dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
        if getter is not None and setter is not None:
            return (ctypes.cast(getter, ctypes.c_void_p).value,
                    ctypes.cast(setter, ctypes.c_void_p).value)
    return None


class _ControlledLibraries:
    """``limit_to_one`` and ``restore`` for libraries set through threadpoolctl."""

    def __init__(self, libraries):
        self.libraries = libraries
        self.saved = []

    def limit_to_one(self):
        self.saved = [(library, library.num_threads) for library in self.libraries]
        for library, _ in self.saved:
            library.set_num_threads(1)

    def restore(self):
        for library, threads in self.saved:
            library.set_num_threads(threads)
