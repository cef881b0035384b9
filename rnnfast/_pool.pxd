# Memory from the process's one cache of large buffers (csrc/rnnfast_pool.h), for the
# other extension modules: they cimport these, so that all share the one pool.

cimport numpy as cnp

cdef void *pool_alloc(size_t bytes, bint packed_weights) noexcept nogil
cdef void pool_free(void *memory) noexcept nogil
cdef void pool_release(void *memory) noexcept nogil
cdef size_t pool_limit() noexcept nogil
cdef cnp.ndarray empty_array(int nd, cnp.npy_intp *dims, int typenum)
