# The process's helper threads (csrc/rnnfast_helpers.h), one pool for the streams
# and the kernels' step teams: rnnfast._helpers holds it, other modules cimport this.

from libc.stdint cimport int64_t

ctypedef void (*part_fn)(void *job, int part) noexcept nogil

cdef void run_parts(part_fn fn, void *job, int parts, int threads,
                    int64_t size) noexcept nogil
cdef int thread_cap() noexcept nogil
