/* rnnfast: helper threads for jobs of a few microseconds, such as one streaming step.
 *
 * rnnfast_run_parts(fn, job, parts, threads, size) runs fn(job, p), p = 0 .. parts-1, on
 * the calling thread and up to threads-1 helper threads, and returns when every part
 * has run. OpenMP's passive wait policy puts a waiting thread to sleep, and waking it
 * costs tens of microseconds on a VM, several times a whole step; an active policy
 * would keep every OpenMP thread of the process spinning. The helpers here spin
 * instead, for RNNFAST_HELPER_SPIN_US after their last part, then sleep, yielding
 * their core from RNNFAST_HELPER_YIELD_US on.
 *
 * Parts are claimed, not assigned: each thread first claims its own parts (the
 * caller parts 0, T, 2T, ..., helper i parts i+1, i+1+T, ... of a job on T threads),
 * so from one job to the next a thread runs the same parts and finds their data
 * in its own cache; then any part still unclaimed. So a part that no helper has
 * claimed when the caller is free runs on the caller, and a helper that sleeps, or
 * waits for a core, never delays a job; it only means the job runs on fewer
 * threads (a helper descheduled in the middle of a part does delay it, as in any
 * team of threads; after such a wait the caller runs its next jobs alone, see
 * RNNFAST_HELPER_STALL_US). Measured on a 2-core VM: handing a job over and seeing
 * it done costs 0.06-0.35 us.
 *
 * A caller wakes sleeping helpers once (a woken helper may take tens of microseconds
 * to run, and every call to wake it costs microseconds), and never waits for the
 * lock to do so. Helpers compete for the cores with every other thread, and so yield
 * theirs while they spin without a job: with two processes streaming at once on a
 * 2-core VM, 2 threads each (LSTM H = 128), the median step took 5.8-6.0 us (one
 * thread each: 5.6-5.8) and the 90th percentile of 200-step batches 6.3-6.6 us per
 * step (one thread each: 6.0-6.2; spinning without yielding: 26 us).
 *
 * Whether a kind of job is worth sharing at all depends on how far apart the cores
 * are, which can change while a process runs: each kind, its part function and a
 * size the caller gives (a step's shape, or its multiply-adds), keeps a choice,
 * shared or alone, tried out by timing now and then (rnnfast_sharing.h); size 0
 * always shares. Defining RNNFAST_SHARING_TRIALS as 0 shares every job offered.
 *
 * One job at a time per process: a caller that finds the helpers busy with another
 * thread's job runs all its parts itself. The helpers start on first use; in a
 * forked child they are started anew. Without POSIX threads every part runs on the
 * caller. Include this header in one extension module only (rnnfast._helpers).
 */
#ifndef RNNFAST_HELPERS_H
#define RNNFAST_HELPERS_H

#include <stdint.h>
#include <time.h>

#include "rnnfast_sharing.h"
#include "rnnfast_threads.h"

typedef void (*rnnfast_part_fn)(void *job, int part);

/* The limit rnnfast._threads.capped sets on the calling thread's kernel calls in
 * place of OpenMP's (0: none), here so that compiled callers (the streams) see it. */
static _Thread_local int rnnfast_thread_cap = 0;

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#define RNNFAST_HAVE_HELPERS 1
#endif

#ifdef RNNFAST_HAVE_HELPERS

#define RNNFAST_MAX_HELPERS 63
#define RNNFAST_MAX_PARTS 4096
#define RNNFAST_HELPER_SPIN_US 100
/* A helper that has spun this long without a job yields its core at each check,
 * and so does a caller that waits for a stalled part: where the scheduler put a
 * helper on the caller's core (measured on a 2-core VM after the process idled for
 * milliseconds: both threads on one vCPU, the other idle), its spinning took the
 * caller's time, and calls ran 1.3-1.9x as long as on one thread; yielding, about
 * as long as on one thread. Jobs that follow each other closely (the steps of a
 * call, a stream's steps) never wait that long. */
#define RNNFAST_HELPER_YIELD_US 20
/* A caller that waits this long for a part a helper claimed (the helper lost its
 * core to another thread, such as another library's spinning thread pool) runs the
 * next RNNFAST_HELPER_SKIP_JOBS jobs alone. */
#define RNNFAST_HELPER_STALL_US 50
#define RNNFAST_HELPER_SKIP_JOBS 32
#ifndef RNNFAST_SHARING_TRIALS
#define RNNFAST_SHARING_TRIALS 1
#endif
#define RNNFAST_SHARING_KINDS 16   /* kinds with a choice, the least recently used out */

static struct {
    /* What a job's threads touch first, in one cache line with its first claims (a
     * job of 2-4 parts moves one line between the cores). The job word: the job's
     * number in bits 32-63, the threads it runs on (the caller and helpers 0 ..
     * threads-2) in bits 16-31, its part count in bits 0-15. */
    uint64_t job_word;
    rnnfast_part_fn fn;
    void *job;
    int parts_done;
    int busy;                       /* a caller owns the helpers (a try-lock) */
    /* claims[p] is 2 * number while part p of job ``number`` is free, 2 * number + 1
     * once claimed, by one compare-and-swap: so a helper that comes late never claims
     * a part of the next job, whose publication resets the claims first. */
    uint64_t claims[RNNFAST_MAX_PARTS];
    int jobs_to_skip;               /* jobs left to run alone after a stall (under busy) */
    struct {                        /* the kinds of job with a choice (under busy) */
        rnnfast_part_fn fn;         /* NULL: a free entry */
        int64_t size;
        uint32_t used;              /* the number of the job that last used it */
        rnnfast_sharing sharing;
    } kinds[RNNFAST_SHARING_KINDS];
    int sleeping;                   /* helpers asleep on ``wake`` */
    int wake_sent;                  /* woken since the last one fell asleep */
    int started;                    /* helper threads running */
    int guarded;                    /* the fork handler is registered */
    pthread_mutex_t lock;
    pthread_cond_t wake;
} rnnfast_helpers __attribute__((aligned(64))) = {
    .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER
};

/* Runs part ``part`` of job ``number`` if it is still free; whether it did. */
static inline int rnnfast_helpers_try_part(uint32_t number, unsigned part)
{
    uint64_t free_claim = (uint64_t)number << 1;
    if (__atomic_load_n(&rnnfast_helpers.claims[part], __ATOMIC_RELAXED) != free_claim
            || !__atomic_compare_exchange_n(&rnnfast_helpers.claims[part], &free_claim,
                                            free_claim | 1, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED))
        return 0;
    rnnfast_helpers.fn(rnnfast_helpers.job, (int)part);
    __atomic_add_fetch(&rnnfast_helpers.parts_done, 1, __ATOMIC_RELEASE);
    return 1;
}

/* Claims and runs parts of job ``number`` as thread ``me`` (0 the caller, i+1
 * helper i): its own parts first, then any left. Returns how many it ran. */
static inline int rnnfast_helpers_work(uint32_t number, unsigned me)
{
    uint64_t word = __atomic_load_n(&rnnfast_helpers.job_word, __ATOMIC_ACQUIRE);
    unsigned parts = (unsigned)word & 0xffffu, threads = (unsigned)(word >> 16) & 0xffffu;
    int ran = 0;
    if ((uint32_t)(word >> 32) != number || me >= threads)
        return 0;
    for (unsigned part = me; part < parts; part += threads)
        ran += rnnfast_helpers_try_part(number, part);
    for (unsigned part = 0; part < parts; part++)
        ran += rnnfast_helpers_try_part(number, part);
    return ran;
}

/* The choice kept for jobs of part function ``fn`` and ``size`` (the caller owns
 * the helpers, ``number`` is the job's), a new one in place of the least recently
 * used; NULL for size 0 or with trials off. */
static rnnfast_sharing *rnnfast_helpers_sharing(rnnfast_part_fn fn, int64_t size,
                                                uint32_t number)
{
    if (!RNNFAST_SHARING_TRIALS || size == 0)
        return NULL;
    int oldest = 0;
    for (int kind = 0; kind < RNNFAST_SHARING_KINDS; kind++) {
        if (rnnfast_helpers.kinds[kind].fn == fn
                && rnnfast_helpers.kinds[kind].size == size) {
            rnnfast_helpers.kinds[kind].used = number;
            return &rnnfast_helpers.kinds[kind].sharing;
        }
        if (rnnfast_helpers.kinds[kind].fn == NULL
                || number - rnnfast_helpers.kinds[kind].used
                   > number - rnnfast_helpers.kinds[oldest].used)
            oldest = kind;
    }
    rnnfast_helpers.kinds[oldest].fn = fn;
    rnnfast_helpers.kinds[oldest].size = size;
    rnnfast_helpers.kinds[oldest].used = number;
    rnnfast_sharing_init(&rnnfast_helpers.kinds[oldest].sharing);
    return &rnnfast_helpers.kinds[oldest].sharing;
}

/* Sleeps until a job after job ``seen`` is published. Each check of the job word
 * comes after ``sleeping`` and ``wake_sent`` say that this helper waits, so a job
 * published after the check finds them so and wakes it. */
static void rnnfast_helper_sleep(uint32_t seen)
{
    pthread_mutex_lock(&rnnfast_helpers.lock);
    __atomic_add_fetch(&rnnfast_helpers.sleeping, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        __atomic_store_n(&rnnfast_helpers.wake_sent, 0, __ATOMIC_SEQ_CST);
        if ((uint32_t)(__atomic_load_n(&rnnfast_helpers.job_word, __ATOMIC_SEQ_CST) >> 32)
                != seen)
            break;
        pthread_cond_wait(&rnnfast_helpers.wake, &rnnfast_helpers.lock);
    }
    __atomic_sub_fetch(&rnnfast_helpers.sleeping, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&rnnfast_helpers.lock);
}

/* The loop of helper number ``index`` (0, 1, ...): spin for the next job,
 * RNNFAST_HELPER_SPIN_US at most, then sleep. */
static void *rnnfast_helper_main(void *index)
{
    int helper = (int)(intptr_t)index;
    uint32_t seen = (uint32_t)(__atomic_load_n(&rnnfast_helpers.job_word,
                                               __ATOMIC_ACQUIRE) >> 32);
    for (;;) {
        double start = rnnfast_seconds();
        int polls = 0;
        uint32_t number;
        while ((number = (uint32_t)(__atomic_load_n(&rnnfast_helpers.job_word,
                                                     __ATOMIC_ACQUIRE) >> 32)) == seen) {
            RNNFAST_PAUSE();
            if (++polls % 64 == 0) {
                double spun = rnnfast_seconds() - start;
                if (spun >= 1e-6 * RNNFAST_HELPER_SPIN_US) {
                    rnnfast_helper_sleep(seen);
                    start = rnnfast_seconds();
                } else if (spun >= 1e-6 * RNNFAST_HELPER_YIELD_US) {
                    sched_yield();   /* a thread waiting for this core runs first */
                }
            }
        }
        seen = number;
        rnnfast_helpers_work(number, (unsigned)helper + 1);
    }
    return NULL;
}

/* In a forked child only the forking thread exists: start the helpers anew. */
static void rnnfast_helpers_after_fork_in_child(void)
{
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
    rnnfast_helpers.lock = lock;
    rnnfast_helpers.wake = wake;
    rnnfast_helpers.busy = 0;
    rnnfast_helpers.sleeping = 0;
    rnnfast_helpers.wake_sent = 0;
    rnnfast_helpers.started = 0;
}

/* Starts helpers until ``wanted`` run (caller owns the helpers); returns how many of
 * them, up to ``wanted``, run. */
static int rnnfast_helpers_start(int wanted)
{
    if (wanted > RNNFAST_MAX_HELPERS)
        wanted = RNNFAST_MAX_HELPERS;
    if (!rnnfast_helpers.guarded) {
        if (pthread_atfork(NULL, NULL, rnnfast_helpers_after_fork_in_child) != 0)
            return 0;
        rnnfast_helpers.guarded = 1;
    }
    while (rnnfast_helpers.started < wanted) {
        pthread_t thread;
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attributes, (size_t)1 << 20);
        int failed = pthread_create(&thread, &attributes, rnnfast_helper_main,
                                    (void *)(intptr_t)rnnfast_helpers.started);
        pthread_attr_destroy(&attributes);
        if (failed)
            break;
        __atomic_store_n(&rnnfast_helpers.started, rnnfast_helpers.started + 1,
                         __ATOMIC_RELAXED);
    }
    return rnnfast_helpers.started < wanted ? rnnfast_helpers.started : wanted;
}

/* Copies the kinds of job with a choice (at most ``capacity``): size and choice;
 * returns how many it copied, or -1 while a job runs. */
static int rnnfast_helpers_choices(int64_t *sizes, rnnfast_sharing *choices, int capacity)
{
    int count = 0;
    if (__atomic_exchange_n(&rnnfast_helpers.busy, 1, __ATOMIC_ACQUIRE))
        return -1;
    for (int kind = 0; kind < RNNFAST_SHARING_KINDS && count < capacity; kind++)
        if (rnnfast_helpers.kinds[kind].fn != NULL) {
            sizes[count] = rnnfast_helpers.kinds[kind].size;
            choices[count++] = rnnfast_helpers.kinds[kind].sharing;
        }
    __atomic_store_n(&rnnfast_helpers.busy, 0, __ATOMIC_RELEASE);
    return count;
}

/* A flag handed back and forth between two threads (rnnfast_round_trip). */
typedef struct {
    int flag;       /* 2i+1: the caller's turn i is out; 2i+2: answered; -1: stop */
    int trips;
} rnnfast_ping;

static void *rnnfast_pong(void *arg)
{
    rnnfast_ping *ping = arg;
    for (int i = 0; i < ping->trips; i++) {
        int flag;
        while ((flag = __atomic_load_n(&ping->flag, __ATOMIC_ACQUIRE)) != 2 * i + 1) {
            if (flag < 0)
                return NULL;
            RNNFAST_PAUSE();
        }
        __atomic_store_n(&ping->flag, 2 * i + 2, __ATOMIC_RELEASE);
    }
    return NULL;
}

/* Seconds for one round trip between the calling thread and a new thread, each
 * spinning for the other's write of one flag: how far apart the cores under the two
 * threads are (the fastest mean of ``batches`` batches of ``trips``). -1 where the
 * thread cannot start or a batch takes longer than ``timeout`` seconds (the two
 * threads then share a core). */
static double rnnfast_round_trip(int batches, int trips, double timeout)
{
    rnnfast_ping ping = {0, batches * trips};
    pthread_t thread;
    double best = 1e300;
    if (pthread_create(&thread, NULL, rnnfast_pong, &ping) != 0)
        return -1.0;
    for (int batch = 0; batch < batches && best > 0; batch++) {
        double start = rnnfast_seconds();
        for (int i = batch * trips; i < (batch + 1) * trips && best > 0; i++) {
            __atomic_store_n(&ping.flag, 2 * i + 1, __ATOMIC_RELEASE);
            int polls = 0;
            while (__atomic_load_n(&ping.flag, __ATOMIC_ACQUIRE) != 2 * i + 2) {
                RNNFAST_PAUSE();
                if (++polls % 1024 == 0 && rnnfast_seconds() - start > timeout) {
                    best = -1.0;
                    break;
                }
            }
        }
        double mean = (rnnfast_seconds() - start) / trips;
        if (best > 0 && mean < best)
            best = mean;
    }
    __atomic_store_n(&ping.flag, -1, __ATOMIC_RELEASE);
    pthread_join(thread, NULL);
    return best;
}

/* How many helper threads run in this process. */
static int rnnfast_helpers_running(void)
{
    return __atomic_load_n(&rnnfast_helpers.started, __ATOMIC_RELAXED);
}

static void rnnfast_run_parts_here(rnnfast_part_fn fn, void *job, int parts)
{
    for (int part = 0; part < parts; part++)
        fn(job, part);
}

static void rnnfast_run_parts(rnnfast_part_fn fn, void *job, int parts, int threads,
                              int64_t size)
{
    if (threads < 2 || parts < 2 || parts > RNNFAST_MAX_PARTS
            || __atomic_exchange_n(&rnnfast_helpers.busy, 1, __ATOMIC_ACQUIRE)) {
        rnnfast_run_parts_here(fn, job, parts);
        return;
    }
    uint32_t number = (uint32_t)(__atomic_load_n(&rnnfast_helpers.job_word,
                                                 __ATOMIC_RELAXED) >> 32) + 1;
    rnnfast_sharing *sharing = rnnfast_helpers_sharing(fn, size, number);
    int alone = sharing != NULL && rnnfast_sharing_alone(
        sharing, rnnfast_sharing_timing(sharing) ? rnnfast_seconds() : 0.0);
    if (alone || rnnfast_helpers.jobs_to_skip > 0) {
        if (!alone) {   /* after a stall: no help to time */
            rnnfast_helpers.jobs_to_skip--;
            rnnfast_sharing_disturbed(sharing);
        }
        __atomic_store_n(&rnnfast_helpers.busy, 0, __ATOMIC_RELEASE);
        rnnfast_run_parts_here(fn, job, parts);
        return;
    }
    int helpers = rnnfast_helpers_start(threads - 1);
    if (helpers == 0) {
        __atomic_store_n(&rnnfast_helpers.busy, 0, __ATOMIC_RELEASE);
        rnnfast_run_parts_here(fn, job, parts);
        return;
    }
    /* Publish the job: its fields and free claims first, then its word. */
    rnnfast_helpers.fn = fn;
    rnnfast_helpers.job = job;
    __atomic_store_n(&rnnfast_helpers.parts_done, 0, __ATOMIC_RELAXED);
    for (int part = 0; part < parts; part++)
        __atomic_store_n(&rnnfast_helpers.claims[part], (uint64_t)number << 1,
                         __ATOMIC_RELAXED);
    __atomic_store_n(&rnnfast_helpers.job_word,
                     (uint64_t)number << 32 | (uint64_t)(helpers + 1) << 16 | (uint64_t)parts,
                     __ATOMIC_SEQ_CST);
    /* Wake sleeping helpers, once, if the lock is free: a helper that holds it may
     * have lost its core, and one that sleeps through a job only leaves its parts to
     * the caller (the next job wakes it). */
    if (__atomic_load_n(&rnnfast_helpers.sleeping, __ATOMIC_SEQ_CST) > 0
            && !__atomic_load_n(&rnnfast_helpers.wake_sent, __ATOMIC_SEQ_CST)
            && pthread_mutex_trylock(&rnnfast_helpers.lock) == 0) {
        __atomic_store_n(&rnnfast_helpers.wake_sent, 1, __ATOMIC_SEQ_CST);
        pthread_cond_broadcast(&rnnfast_helpers.wake);
        pthread_mutex_unlock(&rnnfast_helpers.lock);
    }
    int mine = rnnfast_helpers_work(number, 0);
    /* Every part is claimed; wait for those that helpers run, noting a stall. */
    if (__atomic_load_n(&rnnfast_helpers.parts_done, __ATOMIC_ACQUIRE) < parts) {
        double deadline = rnnfast_seconds() + 1e-6 * RNNFAST_HELPER_STALL_US;
        int polls = 0, stalled = 0;
        while (__atomic_load_n(&rnnfast_helpers.parts_done, __ATOMIC_ACQUIRE) < parts) {
            RNNFAST_PAUSE();
            if (++polls % 64 == 0) {
                if (stalled)
                    sched_yield();   /* the helper may wait for this very core */
                else if (rnnfast_seconds() >= deadline)
                    stalled = 1;
            }
        }
        if (stalled) {
            rnnfast_helpers.jobs_to_skip = RNNFAST_HELPER_SKIP_JOBS;
            rnnfast_sharing_disturbed(sharing);
        }
    }
    if (rnnfast_helpers.jobs_to_skip == 0)
        rnnfast_sharing_helped(sharing, mine < parts);
    __atomic_store_n(&rnnfast_helpers.busy, 0, __ATOMIC_RELEASE);
}

#else /* no POSIX threads: every part on the caller */

static int rnnfast_helpers_running(void) { return 0; }

static double rnnfast_round_trip(int batches, int trips, double timeout)
{
    (void)batches; (void)trips; (void)timeout;
    return -1.0;
}

static int rnnfast_helpers_choices(int64_t *sizes, rnnfast_sharing *choices, int capacity)
{
    (void)sizes; (void)choices; (void)capacity;
    return 0;
}

static void rnnfast_run_parts(rnnfast_part_fn fn, void *job, int parts, int threads,
                              int64_t size)
{
    (void)threads;
    (void)size;
    for (int part = 0; part < parts; part++)
        fn(job, part);
}

#endif /* RNNFAST_HAVE_HELPERS */

#endif /* RNNFAST_HELPERS_H */
