"""Row-major GEMM over scipy.linalg.cython_blas, fused over float and double.

No BLAS is linked at build time: scipy's cython_blas hands over the function
pointers of the OpenBLAS that scipy ships, at import.
"""

from scipy.linalg.cython_blas cimport sgemm, dgemm

# --------------------------------------------------------------------- level 3

cdef void gemm(BLAS_Trans trans_a, BLAS_Trans trans_b, int m, int n, int k,
               floating alpha, const floating *a, int lda,
               const floating *b, int ldb,
               floating beta, floating *c, int ldc) noexcept nogil:
    """C := alpha op(A) op(B) + beta C, all row-major.

    op(A) is (m, k), op(B) is (k, n), C is (m, n); each leading dimension is the
    stored array's column count. A row-major matrix is the column-major matrix of
    its transpose, so this is the column-major C^T := alpha op(B)^T op(A)^T + beta C^T.
    """
    cdef char ta = <char>trans_a
    cdef char tb = <char>trans_b
    cdef Py_ssize_t i, j
    if m <= 0 or n <= 0:
        return
    if k <= 0:
        # An empty sum: C := beta C (BLAS does the same, but rejects lda = 0).
        for i in range(m):
            for j in range(n):
                c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *>b, &ldb, <float *>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *>b, &ldb, <double *>a, &lda,
              &beta, c, &ldc)


def gemm_memview(BLAS_Trans trans_a, BLAS_Trans trans_b, double alpha,
                 const floating[:, ::1] a, const floating[:, ::1] b,
                 double beta, floating[:, ::1] c):
    """``c[...] = alpha op(a) @ op(b) + beta c`` in place: the test twin of ``gemm``."""
    cdef int m = c.shape[0], n = c.shape[1]
    cdef int k = a.shape[0] if trans_a == Trans else a.shape[1]
    cdef int a_k = k
    cdef int b_k = b.shape[1] if trans_b == Trans else b.shape[0]
    cdef int a_m = a.shape[1] if trans_a == Trans else a.shape[0]
    cdef int b_n = b.shape[0] if trans_b == Trans else b.shape[1]
    if a_m != m or b_n != n or b_k != a_k:
        raise ValueError(f"gemm: op(a) {a_m}x{a_k}, op(b) {b_k}x{b_n} and c {m}x{n} "
                         f"do not fit")
    with nogil:
        gemm(trans_a, trans_b, m, n, k, <floating>alpha, &a[0, 0], max(1, a.shape[1]),
             &b[0, 0], max(1, b.shape[1]), <floating>beta, &c[0, 0], max(1, c.shape[1]))


# --------------------------------------------------------------------- thread counts

ctypedef int (*threads_getter)() noexcept nogil
ctypedef void (*threads_setter)(int) noexcept nogil

cdef enum:
    MAX_LIBRARIES = 8


cdef class ThreadCounts:
    """The thread counts of BLAS libraries, read and set through their C entry points
    (``openblas_get_num_threads``, ``openblas_set_num_threads``) given by address: a
    few nanoseconds a call, where one through ctypes costs about a microsecond.

    Parameters
    ----------
    addresses : sequence of (getter, setter) address pairs, one per library, at most 8
    """
    cdef Py_ssize_t libraries
    cdef threads_getter getters[MAX_LIBRARIES]
    cdef threads_setter setters[MAX_LIBRARIES]
    cdef int saved[MAX_LIBRARIES]

    def __init__(self, addresses):
        if len(addresses) > MAX_LIBRARIES:
            raise ValueError(f"addresses must name at most {MAX_LIBRARIES} libraries, "
                             f"got {len(addresses)}")
        for i, (getter, setter) in enumerate(addresses):
            if not getter or not setter:
                raise ValueError(f"addresses[{i}] must be two non-null addresses, "
                                 f"got {(getter, setter)}")
            self.getters[i] = <threads_getter><size_t>getter
            self.setters[i] = <threads_setter><size_t>setter
        self.libraries = len(addresses)

    def limit_to_one(self):
        """Save each library's thread count, then set it to 1."""
        cdef Py_ssize_t i
        for i in range(self.libraries):
            self.saved[i] = self.getters[i]()
            self.setters[i](1)

    def restore(self):
        """Set each library's thread count back to the one ``limit_to_one`` saved."""
        cdef Py_ssize_t i
        for i in range(self.libraries):
            self.setters[i](self.saved[i])

    def counts(self):
        """The current thread counts, one per library."""
        return [self.getters[i]() for i in range(self.libraries)]
