/* rnnfast: packed weights kept from one inference call to the next.
 *
 * An inference call packs its weights into panels before its time loop. Packed
 * afresh by the caller's thread, the panels are then read by every thread of the
 * call, so each call writes cache lines that the other cores hold from the call
 * before: every such write waits for the other cores to give the line up. On the
 * project's 2-core VM packing the 512 KiB of an LSTM's joined weights (D = H = 128)
 * took 11 us in a loop of its own and 50-250 us inside 2-thread calls (more while
 * the host had put the vCPUs on cores far apart), a fixed cost of every call.
 *
 * So a call may keep its packed weights here, with a copy of the bytes of the
 * arrays they were packed from (their sources), and the next call from the same
 * arrays compares those bytes with the arrays' current ones (memcmp: bitwise, NaN
 * and signed zeros included) and packs again only where they differ. Reading the
 * kept panels, no core writes them, and each core keeps its copy in its cache.
 *
 * An entry is found by its sources' addresses and sizes and by the caller's
 * description of the packing (RNNFAST_KEPT_SHAPE numbers: the layout, the dtype's
 * size and the matrices' dimensions, so that the same bytes packed otherwise or read
 * as another dtype or shape are another entry); RNNFAST_KEPT_ENTRIES are
 * kept, the least recently used replaced. A caller holds the whole cache from
 * rnnfast_kept_lookup until rnnfast_kept_unlock, for the length of its call; a
 * caller that finds it held (another thread's call) packs its own weights as
 * before. Memory from malloc, freed when an entry is replaced or by
 * rnnfast_kept_clear; at most RNNFAST_KEPT_ENTRIES * 2 * (the largest packed size a
 * caller offers) in all.
 *
 * One cache per process: include this header in one extension module only
 * (rnnfast._kernels). A forked child starts with the cache free (pthread_atfork).
 */
#ifndef RNNFAST_KEPT_H
#define RNNFAST_KEPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#define RNNFAST_KEPT_ENTRIES 8
#define RNNFAST_KEPT_SOURCES 2
#define RNNFAST_KEPT_SHAPE 5

typedef struct {
    const void *sources[RNNFAST_KEPT_SOURCES];  /* the key: addresses and byte counts */
    size_t sizes[RNNFAST_KEPT_SOURCES];
    int64_t shape[RNNFAST_KEPT_SHAPE];
    int valid;                   /* packed holds the packing of copy's bytes */
    unsigned char *copy;         /* the sources' bytes, one after the other */
    size_t copy_capacity;
    void *packed;                /* 64-byte aligned */
    size_t packed_capacity;
    uint64_t used;               /* the clock at the last lookup */
} rnnfast_kept_entry;

static struct {
    int lock;
    int guarded;                 /* the fork handler is registered */
    uint64_t clock;
    rnnfast_kept_entry entries[RNNFAST_KEPT_ENTRIES];
} rnnfast_kept;

static inline void rnnfast_kept_unlock(void)
{
    __atomic_store_n(&rnnfast_kept.lock, 0, __ATOMIC_RELEASE);
}

/* Locks the cache, waiting while another thread's call holds it. */
static inline void rnnfast_kept_wait(void)
{
    while (__atomic_exchange_n(&rnnfast_kept.lock, 1, __ATOMIC_ACQUIRE))
        ;
}

#if defined(__unix__) || defined(__APPLE__)
/* In a forked child no thread holds the cache, whichever held it in the parent: an
 * entry being packed then is not marked valid, so nothing half-written is used. */
static void rnnfast_kept_after_fork(void)
{
    rnnfast_kept.lock = 0;
}
#endif

static inline int rnnfast_kept_matches(const rnnfast_kept_entry *entry,
                                       const void *const *sources, const size_t *sizes,
                                       const int64_t *shape)
{
    for (int s = 0; s < RNNFAST_KEPT_SOURCES; s++)
        if (entry->sources[s] != sources[s] || entry->sizes[s] != sizes[s])
            return 0;
    return memcmp(entry->shape, shape, sizeof(entry->shape)) == 0;
}

/* Whether the sources' bytes are those the entry was packed from. */
static inline int rnnfast_kept_unchanged(const rnnfast_kept_entry *entry)
{
    const unsigned char *copy = entry->copy;
    for (int s = 0; s < RNNFAST_KEPT_SOURCES; s++) {
        if (entry->sizes[s] && memcmp(copy, entry->sources[s], entry->sizes[s]) != 0)
            return 0;
        copy += entry->sizes[s];
    }
    return 1;
}

/* Makes the entry's buffers hold ``copy_bytes`` and ``packed_bytes``; 0 without
 * memory (the entry then holds none). */
static inline int rnnfast_kept_reserve(rnnfast_kept_entry *entry, size_t copy_bytes,
                                       size_t packed_bytes)
{
    if (entry->copy_capacity < copy_bytes || entry->packed_capacity < packed_bytes) {
        free(entry->copy);
        free(entry->packed);
        entry->copy = malloc(copy_bytes ? copy_bytes : 1);
        entry->packed = aligned_alloc(64, (packed_bytes + 63) / 64 * 64);
        entry->copy_capacity = entry->copy ? copy_bytes : 0;
        entry->packed_capacity = entry->packed ? packed_bytes : 0;
        if (!entry->copy || !entry->packed) {
            free(entry->copy);
            free(entry->packed);
            entry->copy = entry->packed = NULL;
            entry->copy_capacity = entry->packed_capacity = 0;
            return 0;
        }
    }
    return 1;
}

/* Locks the cache and returns the entry for the sources (two arrays: address and
 * byte count each, a count of 0 for none) packed as ``shape`` describes
 * (RNNFAST_KEPT_SHAPE numbers), with *fresh = 1 where its packed weights
 * are those of the sources' current bytes. With *fresh = 0 the entry has room for
 * ``packed_bytes`` of packed weights, which the caller writes into entry->packed
 * before it calls rnnfast_kept_store. NULL, with nothing locked, where another
 * thread holds the cache or there is no memory. The caller unlocks after its call
 * (rnnfast_kept_unlock). */
static rnnfast_kept_entry *rnnfast_kept_lookup(const void *a, size_t a_bytes,
                                               const void *b, size_t b_bytes,
                                               const int64_t *shape, size_t packed_bytes,
                                               int *fresh)
{
    const void *sources[RNNFAST_KEPT_SOURCES] = {a, b};
    const size_t sizes[RNNFAST_KEPT_SOURCES] = {a_bytes, b_bytes};
    if (__atomic_exchange_n(&rnnfast_kept.lock, 1, __ATOMIC_ACQUIRE))
        return NULL;
#if defined(__unix__) || defined(__APPLE__)
    if (!rnnfast_kept.guarded)
        rnnfast_kept.guarded = pthread_atfork(NULL, NULL, rnnfast_kept_after_fork) == 0;
#endif
    rnnfast_kept_entry *entry = NULL, *oldest = &rnnfast_kept.entries[0];
    for (int i = 0; i < RNNFAST_KEPT_ENTRIES; i++) {
        rnnfast_kept_entry *candidate = &rnnfast_kept.entries[i];
        if (candidate->valid && rnnfast_kept_matches(candidate, sources, sizes, shape)) {
            entry = candidate;
            break;
        }
        if (!candidate->valid || (oldest->valid && candidate->used < oldest->used))
            oldest = candidate;
    }
    rnnfast_kept.clock++;
    if (entry && rnnfast_kept_unchanged(entry)) {
        entry->used = rnnfast_kept.clock;
        *fresh = 1;
        return entry;
    }
    if (!entry)
        entry = oldest;
    entry->valid = 0;
    if (!rnnfast_kept_reserve(entry, a_bytes + b_bytes, packed_bytes)) {
        rnnfast_kept_unlock();
        return NULL;
    }
    for (int s = 0; s < RNNFAST_KEPT_SOURCES; s++) {
        entry->sources[s] = sources[s];
        entry->sizes[s] = sizes[s];
    }
    memcpy(entry->shape, shape, sizeof(entry->shape));
    entry->used = rnnfast_kept.clock;
    *fresh = 0;
    return entry;
}

/* Marks the entry's packed weights as those of its sources' current bytes, which it
 * copies: call once entry->packed holds them. */
static void rnnfast_kept_store(rnnfast_kept_entry *entry)
{
    unsigned char *copy = entry->copy;
    for (int s = 0; s < RNNFAST_KEPT_SOURCES; s++) {
        if (entry->sizes[s])
            memcpy(copy, entry->sources[s], entry->sizes[s]);
        copy += entry->sizes[s];
    }
    entry->valid = 1;
}

/* Writes the shape of every entry that holds packed weights into ``shapes``
 * (RNNFAST_KEPT_ENTRIES rows of RNNFAST_KEPT_SHAPE) and the bytes the entries hold
 * into *bytes; returns their number. Waits for the cache while another thread's call
 * holds it. */
static int rnnfast_kept_describe(int64_t *shapes, size_t *bytes)
{
    int count = 0;
    rnnfast_kept_wait();
    *bytes = 0;
    for (int i = 0; i < RNNFAST_KEPT_ENTRIES; i++) {
        const rnnfast_kept_entry *entry = &rnnfast_kept.entries[i];
        *bytes += entry->copy_capacity + entry->packed_capacity;
        if (entry->valid)
            memcpy(shapes + RNNFAST_KEPT_SHAPE * count++, entry->shape, sizeof(entry->shape));
    }
    rnnfast_kept_unlock();
    return count;
}

/* Frees every entry. Waits for the cache while another thread's call holds it. */
static void rnnfast_kept_clear(void)
{
    rnnfast_kept_wait();
    for (int i = 0; i < RNNFAST_KEPT_ENTRIES; i++) {
        rnnfast_kept_entry *entry = &rnnfast_kept.entries[i];
        free(entry->copy);
        free(entry->packed);
        memset(entry, 0, sizeof(*entry));
    }
    rnnfast_kept_unlock();
}

#endif /* RNNFAST_KEPT_H */
