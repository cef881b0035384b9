# Row-major BLAS on top of scipy.linalg.cython_blas, for float and double.

from cython cimport floating

# --------------------------------------------------------------------- enums

cpdef enum BLAS_Trans:
    NoTrans = 110  # 'n'
    Trans = 116    # 't'

# --------------------------------------------------------------------- level 3

cdef void gemm(BLAS_Trans trans_a, BLAS_Trans trans_b, int m, int n, int k,
               floating alpha, const floating *a, int lda,
               const floating *b, int ldb,
               floating beta, floating *c, int ldc) noexcept nogil
