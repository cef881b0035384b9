/* rnnfast: a cache of large buffers, so that a call reuses the pages of the buffers
 * the previous call freed instead of taking fresh ones from the system.
 *
 * glibc hands a large freed block back to the system (munmap, or by trimming the top
 * of its heap), and the next call of the same shape touches every page anew: a page
 * fault, about 1.4 us per 4 KiB on the project's machine. A GRU training call at
 * (T, B, D, H) = (100, 16, 64, 64) took 923 of them, 40 % of its time, in a script
 * whose heap had been trimmed. Blocks of RNNFAST_POOL_MIN_BYTES and more, freed here,
 * are kept (up to rnnfast_pool_limit bytes in all, the oldest released first) and
 * served again to any request they fit with at most half of it to spare.
 *
 * Every block starts with a header of RNNFAST_POOL_HEADER bytes that holds its
 * capacity; the caller's memory after it is 64-byte aligned. Blocks for packed
 * weights of 2 MiB and more are aligned to 2 MiB and offered to the kernel for huge
 * pages, so the panels that every step streams from L3 need few TLB entries
 * (measured 1-2 % faster at H = 512, LSTM, 4 MiB per matrix); other blocks of 4 MiB
 * and more offer the 2 MiB pages inside them, as NumPy's own allocator does.
 *
 * One pool per process: include this header in one extension module only
 * (rnnfast._pool) and reach it from the others through that module's C functions.
 * Thread-safe (one lock).
 */
#ifndef RNNFAST_POOL_H
#define RNNFAST_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#define RNNFAST_POOL_MIN_BYTES ((size_t)64 << 10)
#define RNNFAST_POOL_HEADER 64
#define RNNFAST_POOL_SLOTS 64

/* Bytes kept in all, at most. The memory-safety build keeps nothing unless a test
 * sets a limit, so that AddressSanitizer sees every buffer freed: a block kept here
 * would hide a use after free. */
#ifdef RNNFAST_POOL_KEEP_NOTHING
static size_t rnnfast_pool_limit = 0;
#else
static size_t rnnfast_pool_limit = (size_t)256 << 20;
#endif

static struct {
    int lock;                                  /* a spin lock: held for a few loads */
    int count;                                 /* blocks kept, oldest first */
    void *blocks[RNNFAST_POOL_SLOTS];          /* block starts (headers) */
    size_t capacities[RNNFAST_POOL_SLOTS];
    size_t kept_bytes;
} rnnfast_pool;

static inline void rnnfast_pool_lock(void)
{
    while (__atomic_exchange_n(&rnnfast_pool.lock, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&rnnfast_pool.lock, __ATOMIC_RELAXED))
            ;
}

static inline void rnnfast_pool_unlock(void)
{
    __atomic_store_n(&rnnfast_pool.lock, 0, __ATOMIC_RELEASE);
}

/* Removes kept block i (lock held) and returns its start. */
static inline void *rnnfast_pool_take(int i)
{
    void *block = rnnfast_pool.blocks[i];
    rnnfast_pool.kept_bytes -= rnnfast_pool.capacities[i];
    rnnfast_pool.count--;
    memmove(&rnnfast_pool.blocks[i], &rnnfast_pool.blocks[i + 1],
            (size_t)(rnnfast_pool.count - i) * sizeof(void *));
    memmove(&rnnfast_pool.capacities[i], &rnnfast_pool.capacities[i + 1],
            (size_t)(rnnfast_pool.count - i) * sizeof(size_t));
    return block;
}

#define RNNFAST_HUGE_PAGE ((size_t)2 << 20)

/* A new block of ``bytes`` (a multiple of 4 KiB, header included); see above. */
static inline void *rnnfast_pool_new_block(size_t bytes, int packed_weights)
{
    void *block;
    if (packed_weights && bytes >= RNNFAST_HUGE_PAGE) {
        block = aligned_alloc(RNNFAST_HUGE_PAGE, bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (block != NULL)
            madvise(block, bytes, MADV_HUGEPAGE);
#endif
        return block;
    }
    block = aligned_alloc(64, bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (block != NULL && bytes >= 2 * RNNFAST_HUGE_PAGE) {
        const uintptr_t huge_mask = ~(uintptr_t)(RNNFAST_HUGE_PAGE - 1);
        uintptr_t first = ((uintptr_t)block + RNNFAST_HUGE_PAGE - 1) & huge_mask;
        uintptr_t end = ((uintptr_t)block + bytes) & huge_mask;
        madvise((void *)first, end - first, MADV_HUGEPAGE);
    }
#endif
    return block;
}

/* ``bytes`` of memory, 64-byte aligned, or NULL when the system has none.
 * ``packed_weights``: for packed weights (huge pages from 2 MiB, see above). */
static void *rnnfast_pool_alloc(size_t bytes, int packed_weights)
{
    if (bytes > (size_t)-1 / 2)
        return NULL;
    /* whole pages, header included; whole huge pages for large packed weights */
    size_t page = packed_weights && bytes + RNNFAST_POOL_HEADER >= RNNFAST_HUGE_PAGE
                  ? RNNFAST_HUGE_PAGE : 4096;
    size_t capacity = ((bytes + RNNFAST_POOL_HEADER + page - 1) & ~(page - 1))
                      - RNNFAST_POOL_HEADER;
    void *block = NULL;
    if (capacity >= RNNFAST_POOL_MIN_BYTES) {
        int best = -1;
        rnnfast_pool_lock();
        for (int i = 0; i < rnnfast_pool.count; i++) {
            size_t kept = rnnfast_pool.capacities[i];
            if (kept >= capacity && kept - capacity <= capacity / 2
                && (best < 0 || kept < rnnfast_pool.capacities[best]))
                best = i;
        }
        if (best >= 0) {
            capacity = rnnfast_pool.capacities[best];
            block = rnnfast_pool_take(best);
        }
        rnnfast_pool_unlock();
    }
    if (block == NULL) {
        block = rnnfast_pool_new_block(capacity + RNNFAST_POOL_HEADER, packed_weights);
        if (block == NULL)
            return NULL;
    }
    memcpy(block, &capacity, sizeof(capacity));
    return (char *)block + RNNFAST_POOL_HEADER;
}

/* The bytes usable at ``memory`` from rnnfast_pool_alloc: at least those asked for. */
static inline size_t rnnfast_pool_capacity(const void *memory)
{
    size_t capacity;
    memcpy(&capacity, (const char *)memory - RNNFAST_POOL_HEADER, sizeof(capacity));
    return capacity;
}

/* Gives back memory from rnnfast_pool_alloc (NULL: nothing): kept for a later request
 * where it is large enough to be worth it and fits under the limit, else released. */
static void rnnfast_pool_free(void *memory)
{
    if (memory == NULL)
        return;
    void *block = (char *)memory - RNNFAST_POOL_HEADER;
    size_t capacity = rnnfast_pool_capacity(memory);
    if (capacity < RNNFAST_POOL_MIN_BYTES) {
        free(block);
        return;
    }
    void *released[RNNFAST_POOL_SLOTS + 1];
    int n_released = 0;
    rnnfast_pool_lock();
    if (capacity > rnnfast_pool_limit) {
        released[n_released++] = block;
    } else {
        /* make room: the oldest blocks go first */
        while (rnnfast_pool.count == RNNFAST_POOL_SLOTS
               || rnnfast_pool.kept_bytes + capacity > rnnfast_pool_limit)
            released[n_released++] = rnnfast_pool_take(0);
        rnnfast_pool.blocks[rnnfast_pool.count] = block;
        rnnfast_pool.capacities[rnnfast_pool.count] = capacity;
        rnnfast_pool.count++;
        rnnfast_pool.kept_bytes += capacity;
    }
    rnnfast_pool_unlock();
    for (int i = 0; i < n_released; i++)
        free(released[i]);
}

/* Gives back memory from rnnfast_pool_alloc to the system at once (to lower a peak). */
static void rnnfast_pool_release(void *memory)
{
    if (memory != NULL)
        free((char *)memory - RNNFAST_POOL_HEADER);
}

/* Sets the most bytes kept (0: keep none), releases what is over it and returns the
 * limit before. */
static size_t rnnfast_pool_set_limit(size_t limit)
{
    void *released[RNNFAST_POOL_SLOTS];
    int n_released = 0;
    rnnfast_pool_lock();
    size_t previous = rnnfast_pool_limit;
    rnnfast_pool_limit = limit;
    while (rnnfast_pool.kept_bytes > limit)
        released[n_released++] = rnnfast_pool_take(0);
    rnnfast_pool_unlock();
    for (int i = 0; i < n_released; i++)
        free(released[i]);
    return previous;
}

/* A fork while another thread holds the lock would leave the child's copy locked for
 * good: the lock is taken around fork(), so the pool is consistent on both sides. */
static void rnnfast_pool_unlock_after_fork(void) { rnnfast_pool_unlock(); }

static int rnnfast_pool_guard_fork(void)
{
#if defined(__unix__) || defined(__APPLE__)
    return pthread_atfork(rnnfast_pool_lock, rnnfast_pool_unlock_after_fork,
                          rnnfast_pool_unlock_after_fork);
#else
    return 0;
#endif
}

static size_t rnnfast_pool_kept_bytes(void)
{
    rnnfast_pool_lock();
    size_t kept = rnnfast_pool.kept_bytes;
    rnnfast_pool_unlock();
    return kept;
}

#endif /* RNNFAST_POOL_H */
