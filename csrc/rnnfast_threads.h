/* rnnfast: how many threads the kernels may split a batch across (OpenMP's
 * omp_get_max_threads, which follows OMP_NUM_THREADS); 1 in a build without OpenMP. */
#ifndef RNNFAST_THREADS_H
#define RNNFAST_THREADS_H

#ifdef _OPENMP
#include <omp.h>
static inline int rnnfast_max_threads(void) { return omp_get_max_threads(); }
#else
static inline int rnnfast_max_threads(void) { return 1; }
#endif

#endif /* RNNFAST_THREADS_H */
