/* rnnfast: how many threads the kernels may split a batch across (OpenMP's
 * omp_get_max_threads, which follows OMP_NUM_THREADS); 1 in a build without OpenMP.
 * Inside a parallel region: the size of the team running it, the team's barrier
 * (outside a region, or without OpenMP, 1 and no-op), and the two waits of the
 * kernels' regions, which spin briefly before they sleep. */
#ifndef RNNFAST_THREADS_H
#define RNNFAST_THREADS_H

#include <time.h>

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

#if defined(__x86_64__) || defined(__i386__)
#define RNNFAST_PAUSE() __builtin_ia32_pause()
#else
#define RNNFAST_PAUSE() ((void)0)
#endif

/* Under the passive wait policy a thread that waits for others in OpenMP sleeps, and
 * waking it costs tens of microseconds on a VM: a large part of a small call. So at
 * a barrier, and at the end of a region, a thread first spins for the others for
 * RNNFAST_SPIN_US at most. A spin that runs out (the others did not come in time, as
 * on a machine whose cores are busy with other work) turns the next RNNFAST_SPIN_SKIPS
 * spins of the process into plain waits. Measured on a 2-core VM (B = 16, H = 64):
 * 10-20 % more calls per second; with another process busy on one core, as many as
 * with no spin at all (spinning every time lost 13 % there). */
#define RNNFAST_SPIN_US 50
#define RNNFAST_SPIN_SKIPS 16
static int rnnfast_spins_to_skip = 0;   /* a hint shared by all threads: relaxed atomics */

static inline double rnnfast_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

/* Spins until *counter reaches ``target``, RNNFAST_SPIN_US at most (see above). */
static inline void rnnfast_spin_until(int *counter, int target)
{
    if (__atomic_load_n(&rnnfast_spins_to_skip, __ATOMIC_RELAXED) > 0) {
        __atomic_sub_fetch(&rnnfast_spins_to_skip, 1, __ATOMIC_RELAXED);
        return;
    }
    double deadline = rnnfast_seconds() + 1e-6 * RNNFAST_SPIN_US;
    while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) < target) {
        if (rnnfast_seconds() >= deadline) {
            __atomic_store_n(&rnnfast_spins_to_skip, RNNFAST_SPIN_SKIPS, __ATOMIC_RELAXED);
            return;
        }
        RNNFAST_PAUSE();
    }
}

/* The team's barrier, after a spin: every thread counts itself into ``arrived``
 * (shared, 0 at the region's start) and spins until the whole team has. ``passed``
 * counts the barriers the calling thread has passed (its own, 0 at the start). */
static inline void rnnfast_team_barrier(int team, int *arrived, int *passed)
{
    if (team > 1) {
        __atomic_add_fetch(arrived, 1, __ATOMIC_ACQ_REL);
        rnnfast_spin_until(arrived, ++*passed * team);
    }
    rnnfast_barrier();
}

/* The last work of every thread ``tid`` in a kernel's region, with ``finished``
 * shared and 0 at the region's start: threads 1, 2, ... count themselves in, and
 * thread 0 (the thread that called the kernel) spins until all have. It would
 * otherwise be the one to sleep in the region's closing barrier, as it starts first
 * (it wakes the others). */
static inline void rnnfast_join(int tid, int team, int *finished)
{
    if (team < 2)
        return;
    if (tid != 0)
        __atomic_add_fetch(finished, 1, __ATOMIC_RELEASE);
    else
        rnnfast_spin_until(finished, team - 1);
}

#endif /* RNNFAST_THREADS_H */
