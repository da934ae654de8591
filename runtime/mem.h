/*
 * runtime/mem.h - Loom's memory: the user's allocator, 64-byte aligned
 * blocks, a cache of freed blocks, and byte accounting.
 *
 * Every allocation Loom makes for tensors, nodes and their data goes through
 * a loom__mem, so that a test can inject failures (an OOM sweep) and a
 * report can show live and peak bytes. A training step makes thousands of
 * short-lived tensors whose sizes repeat from step to step, so freed blocks
 * up to 1 GiB are kept in per-size-class free lists and reused, as
 * PyTorch's caching allocator does: recording and running a node then costs
 * no call to the user's allocator at steady state, and a step's big
 * activations are not page-faulted in afresh every step. How much the cache
 * keeps is mem->cache_limit's (loom_ctx_options.cache_bytes, docs/runtime.md
 * "The block cache"): by default a freed block is kept while the bytes Loom
 * holds (blocks in use plus the cache) stay within the larger of
 * LOOM__MEM_CACHE_FLOOR and 9/8 of the most bytes ever in use at once, so
 * the cache never holds much more than a step has already needed at once.
 * loom__mem_drain() returns the cache to the allocator.
 * The functions are thread-safe if the user's allocator is.
 */
#ifndef LOOM_RUNTIME_MEM_H
#define LOOM_RUNTIME_MEM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "loom/context.h"

#define LOOM__ALIGN 64
/* Size classes: powers of two from 64 B to 128 KiB (12 classes), then four
 * per octave up to 1 GiB (52 classes: 160, 192, 224, 256 KiB, 320, ...),
 * which wastes at most 25% of a big block; larger blocks are not cached. */
#define LOOM__MEM_POW2_CLASSES 12
#define LOOM__MEM_CLASSES (LOOM__MEM_POW2_CLASSES + 52)
/* The automatic cache limit's floor: below it, freed blocks are kept
 * whatever the peak (a small model's step fits in it whole). */
#define LOOM__MEM_CACHE_FLOOR ((size_t)1 << 30)
/* mem->cache_limit for the automatic policy. */
#define LOOM__MEM_CACHE_AUTO (-1)
/* Blocks of 4 KiB or less: at most this many per class and domain (a long
 * free list of tiny blocks has poor locality). */
#define LOOM__MEM_SMALL_BLOCKS 256

/* Data blocks are cached per memory domain (a NUMA node of the pool's
 * topology; domain d >= LOOM__MEM_DOMAINS shares list d % LOOM__MEM_DOMAINS),
 * so that a block first touched on one NUMA node is reused there and not by
 * a node of another one. */
#define LOOM__MEM_DOMAINS 8
/* Binds a fresh data block to a domain's memory (hwloc on a real NUMA
 * machine, runtime/topology.c); returns 0 when bound. */
typedef int (*loom__mem_bind_fn)(void *ptr, size_t len, int domain, void *user);
/* Fresh blocks this big or bigger are bound (smaller ones share pages). */
#define LOOM__MEM_BIND_MIN ((size_t)64 << 10)
typedef struct loom__mem {
    loom_allocator alloc;
    /* The counts below are written under the lock only (relaxed stores,
     * no read-modify-write), so that an allocation touches one contended
     * line, the lock's, rather than five; anyone may read them. */
    _Atomic int64_t live_bytes; /* data blocks only */
    _Atomic int64_t peak_bytes;
    _Atomic int64_t bound_blocks; /* fresh blocks the binder bound (atomic RMW) */
    /* Blocks handed out and not yet freed, data or not, counted by the
     * bytes of their size class (what they hold), and the most ever: the
     * automatic cache limit's measure. */
    _Atomic int64_t out_bytes;
    _Atomic int64_t out_peak;
    /* Guards the free lists and the counts; held for a few instructions.
     * Test-and-test-and-set with a pause: waiters spin on a shared copy of
     * the line instead of bouncing it with atomic exchanges. */
    atomic_bool lock;
    void *free_list[LOOM__MEM_DOMAINS][LOOM__MEM_CLASSES];
    int free_count[LOOM__MEM_DOMAINS][LOOM__MEM_CLASSES];
    size_t cached_bytes; /* in all free lists */
    /* When each class was last asked for (a count of cached-class
     * allocations): a block that does not fit in the cache pushes out
     * blocks of classes asked for less recently, so the cache follows the
     * sizes in use when they change (another batch size, another model). */
    uint64_t class_used[LOOM__MEM_DOMAINS][LOOM__MEM_CLASSES];
    uint64_t clock;
    /* The most bytes the free lists keep: >= 0 a fixed limit (0: keep
     * nothing), LOOM__MEM_CACHE_AUTO: out_bytes + cache within
     * max(cache_floor, out_peak * 9/8). Set before other threads allocate. */
    int64_t cache_limit;
    size_t cache_floor; /* LOOM__MEM_CACHE_FLOOR (tests lower it) */
    loom__mem_bind_fn bind; /* NULL: no binding (set before blocks are made on workers) */
    void *bind_user;
} loom__mem;

/* Sets up `mem` with `a` (NULL: malloc/free) and the automatic cache
 * limit. */
void loom__mem_init(loom__mem *mem, const loom_allocator *a);

/* Frees every cached block to the user's allocator. Thread-safe. */
void loom__mem_drain(loom__mem *mem);
/* Bytes in the free lists now. */
size_t loom__mem_cached_bytes(loom__mem *mem);

/* Small objects (tensors, nodes): 64-byte aligned. NULL on failure, no
 * message set. */
void *loom__mem_alloc(loom__mem *mem, size_t size);
void loom__mem_free(loom__mem *mem, void *ptr);

/* Tensor data: 64-byte aligned, counted in live/peak bytes. NULL on failure.
 * _on takes a block of domain `domain` (< 0: domain 0) from the cache, or
 * makes a fresh one and binds it there; the plain form is domain 0. */
void *loom__mem_alloc_data(loom__mem *mem, size_t size);
void *loom__mem_alloc_data_on(loom__mem *mem, size_t size, int domain);
/* The domain a data block was made for (as passed to _on, >= 0). */
int loom__mem_block_domain(const void *ptr);
/* Sets the binder of fresh data blocks (NULL: none). Not thread-safe: call
 * before other threads allocate. */
void loom__mem_set_binder(loom__mem *mem, loom__mem_bind_fn fn, void *user);
void loom__mem_free_data(loom__mem *mem, void *ptr);

#endif /* LOOM_RUNTIME_MEM_H */
