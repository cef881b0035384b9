"""The helper threads of the process (csrc/rnnfast_helpers.h): ``run_parts`` runs
the parts of a job of a few microseconds on the calling thread and spinning helper
threads. The pool's state lives in this module alone, so the streams
(rnnfast._stream) and the time loops' step teams (rnnfast._kernels) share one pool,
and one job runs at a time: a caller that finds the helpers busy runs its parts
itself.
"""

cdef extern from "rnnfast_helpers.h" nogil:
    ctypedef void (*rnnfast_part_fn)(void *job, int part) noexcept nogil
    void rnnfast_run_parts(rnnfast_part_fn fn, void *job, int parts, int threads)
    int rnnfast_helpers_running()


cdef void run_parts(part_fn fn, void *job, int parts, int threads) noexcept nogil:
    """fn(job, p) for p = 0 .. parts-1 on at most ``threads`` threads, the caller one
    of them; returns when every part has run."""
    rnnfast_run_parts(fn, job, parts, threads)


def helper_threads():
    """How many helper threads this process has started."""
    return rnnfast_helpers_running()
