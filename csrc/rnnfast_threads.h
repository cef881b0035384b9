/* rnnfast: how many threads the kernels may split a batch across (OpenMP's
 * omp_get_max_threads, which follows OMP_NUM_THREADS); 1 in a build without OpenMP.
 * Inside a parallel region: the size of the team running it, a barrier for the whole
 * team (outside a region, or without OpenMP, 1 and no-op), and the join that ends a
 * kernel's region. */
#ifndef RNNFAST_THREADS_H
#define RNNFAST_THREADS_H

#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#define RNNFAST_PAUSE() __builtin_ia32_pause()
#else
#define RNNFAST_PAUSE() ((void)0)
#endif

/* Microseconds thread 0 spins at the end of a parallel region for the others to
 * finish (rnnfast_join) before it goes to sleep in the region's closing barrier.
 * Measured on a 2-core VM (B = 16, H = 64, passive wait policy): 10-20 % more calls
 * per second; with another process busy on one of the cores, as many as without the
 * spin (100 us lost 9 % there). */
#define RNNFAST_JOIN_SPIN_US 50

static inline double rnnfast_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

/* Called by every thread ``tid`` of a team of ``team`` as its last work in a parallel
 * region, with ``finished`` an int shared by the team and 0 at the region's start:
 * threads 1, 2, ... count themselves in; thread 0 (the thread that called the kernel)
 * spins until all have, for RNNFAST_JOIN_SPIN_US at most. Under the passive wait
 * policy a thread that reaches the closing barrier first sleeps, and waking it costs
 * tens of microseconds on a VM; thread 0 starts first (it wakes the others), so it is
 * usually the one that would. */
static inline void rnnfast_join(int tid, int team, int *finished)
{
    if (team < 2)
        return;
    if (tid != 0) {
        __atomic_add_fetch(finished, 1, __ATOMIC_RELEASE);
        return;
    }
    double deadline = rnnfast_seconds() + 1e-6 * RNNFAST_JOIN_SPIN_US;
    while (__atomic_load_n(finished, __ATOMIC_ACQUIRE) < team - 1
           && rnnfast_seconds() < deadline)
        RNNFAST_PAUSE();
}

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
