"""Two independent pieces of work at once: ``both(first, second)`` runs ``second`` on
a worker thread while the calling thread runs ``first``, each capped at half the
threads (rnnfast._threads.capped), and returns both results. Built for the two
directions of a bidirectional layer, whose kernel calls release the GIL, so the two
time loops run side by side; a batch too small to split would otherwise run each
direction's loop on one core at a time, or share every step between threads.

One worker per process, started on first use (and anew in a forked child). A call
that finds it busy, with another Python thread's pair, runs both pieces itself, one
after the other, as it does where only one thread is allowed; so does a caller done
with the first piece before the worker started the second (where the worker waits for
a core, say one that another library's spinning thread pool holds). An error in either
piece is raised once both are done: the first piece's if both failed.
"""

import os
import queue
import threading

from . import _threads

_lock = threading.Lock()     # held from handing a piece over until it is done
_tasks = None                # the worker's queue of (piece, threads, results)


def both(first, second):
    """``(first(), second())``, run at once where threads allow (see the module
    docstring)."""
    threads = _threads.max_threads()
    if threads < 2 or not _lock.acquire(blocking=False):
        return first(), second()
    results, claim = queue.SimpleQueue(), threading.Lock()
    try:
        _worker_tasks().put((second, threads // 2, results, claim))
    except BaseException:
        _lock.release()
        raise
    with _threads.single_threaded_blas(2):   # BLAS threads would oversubscribe them
        with _threads.capped(threads - threads // 2):
            outcome = _outcome(first)
            # a worker that has not started the second piece by now (it waits for a
            # core) leaves it to this thread
            second_outcome = _outcome(second) if claim.acquire(blocking=False) else None
        if second_outcome is None:
            second_outcome = results.get()
    for succeeded, value in (outcome, second_outcome):
        if not succeeded:
            raise value
    return outcome[1], second_outcome[1]


def _worker_tasks():
    global _tasks
    if _tasks is None:
        _tasks = queue.SimpleQueue()
        threading.Thread(target=_work, args=(_tasks,), name="rnnfast-pair",
                         daemon=True).start()
    return _tasks


def _outcome(piece):
    """``(True, piece())``, or ``(False, the exception it raised)``."""
    try:
        return True, piece()
    except BaseException as error:      # noqa: B036 - raised by both() once both are done
        return False, error


def _work(tasks):
    while True:
        piece, threads, results, claim = tasks.get()
        outcome = None
        if claim.acquire(blocking=False):   # else the caller ran it
            with _threads.capped(threads):
                outcome = _outcome(piece)
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
