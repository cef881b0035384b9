"""Two independent pieces of work at once: ``both(first, second)`` runs ``second`` on
a worker thread while the calling thread runs ``first``, each capped at half the
threads (rnnfast._threads.capped), and returns both results. Built for the two
directions of a bidirectional layer, whose kernel calls release the GIL, so the two
time loops run side by side; a batch too small to split would otherwise run each
direction's loop on one core at a time, or share every step between threads.

One worker per process, started on first use (and anew in a forked child). A call
that finds it busy, with another Python thread's pair, runs both pieces itself, one
after the other; so does a caller done with the first piece before the worker started
the second (where the worker waits for a core, say one that another library's spinning
thread pool holds), and a call after the process mostly slept since the last pair
(_process_slept), such as sporadic inference calls. Each piece keeps its cap whichever thread runs it, so the results
never depend on that (the thread counts of a kernel call can change its rounding). An
error in either piece is raised once both are done: the first piece's if both failed.
"""

import os
import queue
import threading
import time

from . import _threads

SLEPT_MIN_S = 5e-4
_last_end = [0.0, 0.0]       # when the last pair ended: wall and process CPU seconds
_lock = threading.Lock()     # held from handing a piece over until it is done
_tasks = None                # the worker's queue of (piece, threads, results, claim)


def both(first, second):
    """``(first(), second())``, run at once where threads allow (see the module
    docstring)."""
    threads = _threads.max_threads()
    if threads < 2:
        return first(), second()
    first_threads, second_threads = threads - threads // 2, threads // 2
    with _threads.single_threaded_blas(2):   # BLAS threads would oversubscribe them
        try:
            if _process_slept() or not _lock.acquire(blocking=False):   # in turn
                return _results(_outcome(first, first_threads),
                                _outcome(second, second_threads))
            results, claim = queue.SimpleQueue(), threading.Lock()
            try:
                _worker_tasks().put((second, second_threads, results, claim))
            except BaseException:
                _lock.release()
                raise
            outcome = _outcome(first, first_threads)
            # a worker that has not started the second piece by now (it waits for a
            # core) leaves it to this thread
            if claim.acquire(blocking=False):
                return _results(outcome, _outcome(second, second_threads))
            return _results(outcome, results.get())
        finally:
            _last_end[:] = time.perf_counter(), time.process_time()


def _process_slept():
    """Whether the process has mostly slept since the last pair ended (less CPU time
    than half the wall time, over at least SLEPT_MIN_S): the worker's core then
    likely sleeps too, and on a 2-core VM waking it slowed the caller's piece. Pairs of
    0.3 ms pieces took 0.37 ms where the process kept a core busy between them, or
    slept 0.5 ms at most, but 0.64 ms after it slept 1 ms or more, longer than the two
    pieces in turn (0.6 ms); bidirectional LSTM B = 1, H = 64, 2 ms apart: 0.29-0.31
    ms paired, 0.25-0.28 in turn."""
    wall, cpu = _last_end
    slept = time.perf_counter() - wall
    return slept > SLEPT_MIN_S and time.process_time() - cpu < 0.5 * slept


def _outcome(piece, threads):
    """``(True, piece())`` with the calls of ``piece`` capped at ``threads`` threads,
    or ``(False, the exception it raised)``."""
    try:
        with _threads.capped(threads):
            return True, piece()
    except BaseException as error:      # noqa: B036 - raised by _results
        return False, error


def _results(*outcomes):
    """The results of the outcomes, or the first one's exception, or the next one's."""
    for succeeded, value in outcomes:
        if not succeeded:
            raise value
    return tuple(value for _, value in outcomes)


def _worker_tasks():
    global _tasks
    if _tasks is None:
        _tasks = queue.SimpleQueue()
        threading.Thread(target=_work, args=(_tasks,), name="rnnfast-pair",
                         daemon=True).start()
    return _tasks


def _work(tasks):
    while True:
        piece, threads, results, claim = tasks.get()
        outcome = None
        if claim.acquire(blocking=False):   # else the caller ran it
            outcome = _outcome(piece, threads)
        # free before the caller hears back, so that its next pair finds it free
        _lock.release()
        if outcome is not None:
            results.put(outcome)
        piece = results = outcome = None


def _after_fork_in_child():
    """The worker thread does not exist in a forked child: start it anew there."""
    global _lock, _tasks
    _lock = threading.Lock()
    _tasks = None


os.register_at_fork(after_in_child=_after_fork_in_child)
