"""Inverted-dropout masks for rnnfast.layers in one C pass (csrc/rnnfast_dropout.h)
instead of NumPy's random floats, a comparison and a product."""

from cython cimport floating
from libc.math cimport ceil
from libc.stdint cimport uint64_t

cdef extern from "rnnfast_dropout.h" nogil:
    void dropout_mask_f32(Py_ssize_t n, float *mask, uint64_t key, uint64_t threshold,
                          float scale)
    void dropout_mask_f64(Py_ssize_t n, double *mask, uint64_t key, uint64_t threshold,
                          double scale)


def dropout_mask(floating[::1] mask, uint64_t key, double p, double scale):
    """Fill ``mask`` with ``scale`` where a value is kept, 0 where it is dropped, each
    dropped with probability ``p`` in [0, 1], independently, from the 64-bit ``key``
    (the same key, the same mask)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout_mask: p must be in [0, 1], got {p!r}")
    cdef Py_ssize_t n = mask.shape[0]
    if n == 0:
        return
    with nogil:
        if floating is float:
            dropout_mask_f32(n, &mask[0], key, <uint64_t>ceil(p * 16777216.0), <float>scale)
        else:
            dropout_mask_f64(n, &mask[0], key, <uint64_t>ceil(p * 9007199254740992.0),
                             scale)
