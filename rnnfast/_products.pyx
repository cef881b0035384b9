"""Matrix products of the model layers (rnnfast.Linear) on the kernels' OpenMP threads.

A Linear layer over all T*B rows of a sequence (an output head) multiplies matrices
large enough to gain from a second core. NumPy's BLAS threads would compete with
the kernels' OpenMP threads for the cores (both spin for a while after their work);
here the rows of the result are split over OpenMP threads of the same pool as the
kernels', each a single-threaded BLAS call (the caller holds BLAS at one thread:
rnnfast._threads.single_threaded_blas).
"""

from cython cimport floating
from cython.parallel cimport prange

from ._blas cimport BLAS_Trans, gemm, Trans


cdef inline Py_ssize_t part_start(Py_ssize_t part, Py_ssize_t parts,
                                  Py_ssize_t n) noexcept nogil:
    return part * n // parts


def multiply(BLAS_Trans trans_a, BLAS_Trans trans_b, const floating[:, ::1] a,
             const floating[:, ::1] b, double beta, floating[:, ::1] c, int parts):
    """``c[...] = op(a) @ op(b) + beta * c`` in place, the rows of c split over
    ``parts`` threads. ValueError unless the shapes fit (and each is below 2**31)."""
    cdef Py_ssize_t m = c.shape[0], n = c.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a == Trans else a.shape[1]
    cdef Py_ssize_t a_m = a.shape[1] if trans_a == Trans else a.shape[0]
    cdef Py_ssize_t b_k = b.shape[1] if trans_b == Trans else b.shape[0]
    cdef Py_ssize_t b_n = b.shape[0] if trans_b == Trans else b.shape[1]
    cdef Py_ssize_t part, r0, r1, lda = max(1, a.shape[1])
    if a_m != m or b_n != n or b_k != k:
        raise ValueError(f"multiply: op(a) {a_m}x{k}, op(b) {b_k}x{b_n} and c {m}x{n} "
                         f"do not fit")
    if max(m, n, k, a.shape[1], b.shape[1]) > 2147483647:
        raise ValueError("multiply: BLAS takes sizes below 2**31")
    if m == 0 or n == 0:
        return
    if k == 0:   # an empty sum: BLAS would scale c, but a and b have no element to point at
        for r0 in range(m):
            for r1 in range(n):
                c[r0, r1] = 0 if beta == 0 else <floating>beta * c[r0, r1]
        return
    parts = max(1, min(parts, m))
    with nogil:
        for part in prange(parts, num_threads=parts, schedule="static"):
            r0 = part_start(part, parts, m)
            r1 = part_start(part + 1, parts, m)
            # rows r0 .. r1-1 of op(a): a's columns (Trans) or rows, from r0 on
            gemm(trans_a, trans_b, r1 - r0, n, k, 1,
                 &a[0, r0] if trans_a == Trans else &a[r0, 0], lda, &b[0, 0],
                 max(1, b.shape[1]), <floating>beta, &c[r0, 0], max(1, c.shape[1]))
