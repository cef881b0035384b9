/* rnnfast: how many threads the kernels may split a batch across (OpenMP's
 * omp_get_max_threads, which follows OMP_NUM_THREADS); 1 in a build without OpenMP.
 * Inside a parallel region: the size of the team running it, and a barrier for the
 * whole team (outside a region, or without OpenMP, 1 and no-op). */
#ifndef RNNFAST_THREADS_H
#define RNNFAST_THREADS_H

#ifdef _OPENMP
#include <omp.h>
static inline int rnnfast_max_threads(void) { return omp_get_max_threads(); }
static inline int rnnfast_team_size(void) { return omp_get_num_threads(); }
static inline void rnnfast_barrier(void)
{
#pragma omp barrier
}
#else
static inline int rnnfast_max_threads(void) { return 1; }
static inline int rnnfast_team_size(void) { return 1; }
static inline void rnnfast_barrier(void) {}
#endif

#endif /* RNNFAST_THREADS_H */
