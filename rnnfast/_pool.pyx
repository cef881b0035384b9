"""rnnfast's arrays and scratch buffers from a cache of large buffers.

The kernels' arrays (outputs, the training cache, gradients, workspaces) and their
C scratch buffers (packed weights, partial sums) come from one pool per process,
csrc/rnnfast_pool.h: a large block that a call frees is kept, and the next call
reuses its pages instead of faulting in fresh ones. Arrays hold NumPy's allocator
interface (a ``mem_handler``) to the pool, so they may outlive any call and return
their memory to the pool when they are freed; other arrays are untouched.

``rnnfast.cached_bytes()`` tells how much the pool keeps and
``rnnfast.set_cache_limit(bytes)`` bounds it (0 releases everything and keeps nothing
from then on).
"""

cimport numpy as cnp
import numbers

import numpy as np
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport SIZE_MAX
from libc.string cimport memcpy, memset, strcpy

cnp.import_array()

cdef extern from "rnnfast_pool.h" nogil:
    size_t RNNFAST_POOL_MIN_BYTES
    void *rnnfast_pool_alloc(size_t bytes, int packed_weights)
    size_t rnnfast_pool_capacity(const void *memory)
    void rnnfast_pool_free(void *memory)
    void rnnfast_pool_release(void *memory)
    size_t rnnfast_pool_set_limit(size_t limit)
    size_t rnnfast_pool_kept_bytes()
    size_t rnnfast_pool_limit
    int rnnfast_pool_guard_fork()

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        unsigned char version
        PyDataMemAllocator allocator
    object PyDataMem_SetHandler(object handler)

__all__ = ["cached_bytes", "set_cache_limit", "empty", "zeros", "copy"]


# ---------------------------------------------------------------- C interface

cdef void *pool_alloc(size_t bytes, bint packed_weights) noexcept nogil:
    """``bytes`` of 64-byte aligned memory (NULL when out of memory); pool_free it."""
    return rnnfast_pool_alloc(bytes, packed_weights)


cdef void pool_free(void *memory) noexcept nogil:
    """Give back memory from pool_alloc (NULL: nothing); the pool may keep it."""
    rnnfast_pool_free(memory)


cdef void pool_release(void *memory) noexcept nogil:
    """Give back memory from pool_alloc to the system now (to lower a peak)."""
    rnnfast_pool_release(memory)


cdef size_t pool_limit() noexcept nogil:
    """The bytes the pool may keep (set_cache_limit): rnnfast's other caches keep
    nothing either while it is 0."""
    return rnnfast_pool_limit


# ---------------------------------------------------------------- NumPy's allocator

cdef void *handler_malloc(void *ctx, size_t size) noexcept nogil:
    return rnnfast_pool_alloc(size, 0)


cdef void *handler_calloc(void *ctx, size_t nelem, size_t elsize) noexcept nogil:
    if elsize != 0 and nelem > <size_t>-1 // elsize:
        return NULL
    cdef void *memory = rnnfast_pool_alloc(nelem * elsize, 0)
    if memory != NULL:
        memset(memory, 0, nelem * elsize)
    return memory


cdef void *handler_realloc(void *ctx, void *memory, size_t new_size) noexcept nogil:
    if memory == NULL:
        return rnnfast_pool_alloc(new_size, 0)
    cdef size_t capacity = rnnfast_pool_capacity(memory)
    if new_size <= capacity:
        return memory
    cdef void *moved = rnnfast_pool_alloc(new_size, 0)
    if moved != NULL:
        memcpy(moved, memory, capacity)
        rnnfast_pool_free(memory)
    return moved


cdef void handler_free(void *ctx, void *memory, size_t size) noexcept nogil:
    rnnfast_pool_free(memory)


cdef PyDataMem_Handler pool_handler
strcpy(pool_handler.name, b"rnnfast_pool")
pool_handler.version = 1
pool_handler.allocator.ctx = NULL
pool_handler.allocator.malloc = handler_malloc
pool_handler.allocator.calloc = handler_calloc
pool_handler.allocator.realloc = handler_realloc
pool_handler.allocator.free = handler_free
# the capsule lives as long as the module: every array allocated through it keeps a
# reference, so the handler outlives them all
cdef object handler_capsule = PyCapsule_New(&pool_handler, "mem_handler", NULL)
if rnnfast_pool_guard_fork() != 0:
    raise MemoryError("cannot register the buffer pool's fork handlers")


cdef cnp.ndarray empty_array(int nd, cnp.npy_intp *dims, int typenum):
    """``PyArray_EMPTY(nd, dims, typenum, 0)``, its memory from the pool where it is
    large enough for the pool to keep (smaller ones gain nothing there)."""
    cdef size_t nbytes = cnp.PyArray_DescrFromType(typenum).itemsize
    cdef int i
    for i in range(nd):
        nbytes *= <size_t>dims[i]
    if nbytes < RNNFAST_POOL_MIN_BYTES:
        return cnp.PyArray_EMPTY(nd, dims, typenum, 0)
    previous = PyDataMem_SetHandler(handler_capsule)
    try:
        return cnp.PyArray_EMPTY(nd, dims, typenum, 0)
    finally:
        PyDataMem_SetHandler(previous)


# ---------------------------------------------------------------- Python interface

def empty(shape, dtype):
    """``np.empty(shape, dtype)`` (C order, a shape of up to 8 axes), from the pool
    where it is large enough."""
    cdef cnp.npy_intp dims[8]
    cdef int axis
    if len(shape) > 8:
        raise ValueError(f"shape must have at most 8 axes, got {len(shape)}")
    for axis in range(len(shape)):
        dims[axis] = shape[axis]
    return empty_array(len(shape), dims, np.dtype(dtype).num)


def zeros(shape, dtype):
    """``np.zeros(shape, dtype)`` (C order), from the pool where it is large enough."""
    array = empty(shape, dtype)
    array.fill(0)
    return array


def copy(array, dtype=None):
    """A C-ordered copy of ``array`` (cast to ``dtype`` if given, as ``astype`` does),
    from the pool where it is large enough."""
    result = empty(array.shape, array.dtype if dtype is None else dtype)
    np.copyto(result, array, casting="unsafe")
    return result


def cached_bytes():
    """Bytes of freed buffers that rnnfast keeps for its later calls."""
    return rnnfast_pool_kept_bytes()


def set_cache_limit(limit):
    """Keep at most ``limit`` bytes of freed buffers for later calls (0: keep none).

    rnnfast keeps the large buffers (64 KiB and more) that its calls free, up to
    256 MiB by default, so that the next call reuses their pages instead of faulting
    in fresh ones from the system. Lowering the limit releases what is over it at
    once; 0 also drops the packed weights that inference calls keep for the next
    call with the same weights (``rnnfast._kernels.kept_weights``), and keeps none
    after. Returns the limit before.
    """
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral):
        raise TypeError(f"limit must be an int (bytes), got {type(limit).__name__} {limit!r}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0 bytes, got {limit}")
    previous = rnnfast_pool_set_limit(min(int(limit), SIZE_MAX))
    if limit == 0:
        from . import _kernels
        _kernels.forget_kept_weights()
    return previous
