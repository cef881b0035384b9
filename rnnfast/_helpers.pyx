"""The helper threads of the process (csrc/rnnfast_helpers.h): ``run_parts`` runs
the parts of a job of a few microseconds on the calling thread and spinning helper
threads. The pool's state lives in this module alone, so the streams
(rnnfast._stream) and the time loops' step teams (rnnfast._kernels) share one pool,
and one job runs at a time: a caller that finds the helpers busy runs its parts
itself.
"""

cdef extern from "rnnfast_helpers.h" nogil:
    ctypedef void (*rnnfast_part_fn)(void *job, int part) noexcept nogil
    ctypedef struct rnnfast_sharing:
        int alone, tried
        double best[2]
    int rnnfast_helpers_choices(int64_t *sizes, rnnfast_sharing *choices, int capacity)
    void rnnfast_run_parts(rnnfast_part_fn fn, void *job, int parts, int threads,
                           int64_t size)
    int rnnfast_helpers_running()
    int rnnfast_thread_cap
    double rnnfast_round_trip(int batches, int trips, double timeout)


cdef void run_parts(part_fn fn, void *job, int parts, int threads,
                    int64_t size) noexcept nogil:
    """fn(job, p) for p = 0 .. parts-1 on at most ``threads`` threads, the caller one
    of them; returns when every part has run. ``size`` (a step's shape, or its
    multiply-adds) tells kinds of job apart: each kind runs on the caller alone where
    timing shows that sharing it does not pay; 0 always shares."""
    rnnfast_run_parts(fn, job, parts, threads, size)


cdef int thread_cap() noexcept nogil:
    """The calling thread's thread limit in place of OpenMP's (set_thread_cap), or 0."""
    return rnnfast_thread_cap


def set_thread_cap(int threads):
    """Make ``threads`` (0: none) the calling thread's limit in place of OpenMP's for
    compiled callers (rnnfast._threads.capped keeps it); returns the previous one."""
    global rnnfast_thread_cap
    previous = rnnfast_thread_cap
    rnnfast_thread_cap = threads
    return previous


def sharing_choices():
    """The kinds of job the helpers keep a choice for (see run_parts), as dicts:
    ``size``, ``alone`` (the choice), ``trials`` (ended so far) and ``shared_us``,
    ``alone_us`` (the last trial's fastest block of each way, None if untimed). None
    while a job runs."""
    cdef int64_t sizes[64]
    cdef rnnfast_sharing choices[64]
    cdef int count = rnnfast_helpers_choices(sizes, choices, 64)
    if count < 0:
        return None
    return [{"size": sizes[i], "alone": bool(choices[i].alone), "trials": choices[i].tried,
             "shared_us": _microseconds(choices[i].best[0]) if choices[i].tried else None,
             "alone_us": _microseconds(choices[i].best[1]) if choices[i].tried else None}
            for i in range(count)]


def _microseconds(seconds):
    return None if seconds >= 1e300 else 1e6 * seconds


def round_trip_us():
    """Microseconds for a write of one thread to reach another and the answer to come
    back, both spinning (the fastest mean of 5 batches of 2000); None where the two
    threads share a core or no thread starts. On a 2-core VM: 0.07-0.14 us between
    near cores, 0.33-0.48 where the host moved its vCPUs far apart."""
    cdef double seconds
    with nogil:
        seconds = rnnfast_round_trip(5, 2000, 0.05)
    return None if seconds < 0 else 1e6 * seconds


def helper_threads():
    """How many helper threads this process has started."""
    return rnnfast_helpers_running()
