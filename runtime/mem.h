/*
 * runtime/mem.h - Loom's memory: the user's allocator, 64-byte aligned
 * blocks, a cache of freed blocks, and byte accounting.
 *
 * Every allocation Loom makes for tensors, nodes and their data goes through
 * a loom__mem, so that a test can inject failures (an OOM sweep) and a
 * report can show live and peak bytes. A training step makes thousands of
 * short-lived tensors whose sizes repeat from step to step, so freed blocks
 * up to 1 GiB are kept in per-size-class free lists (at most
 * LOOM__MEM_CACHE_BYTES in all) and reused, as PyTorch's caching allocator
 * does:
 * recording and running a node then costs no call to the user's allocator
 * at steady state. loom__mem_drain() returns the cache to the allocator.
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
/* The cache holds at most this many bytes in all. A training step's
 * activations are freed together at the end of its scope and reallocated
 * by the next step: a cache that holds them spares the page faults of
 * fresh memory, which cost more than the compute of small nodes (the
 * machine writes fresh pages at ~5 GB/s). */
#define LOOM__MEM_CACHE_BYTES ((size_t)1 << 30)
/* ... and at most this many per size class above 4 KiB (256 blocks below). */
#define LOOM__MEM_CACHE_CLASS_BYTES ((size_t)256 << 20)

typedef struct loom__mem {
    loom_allocator alloc;
    _Atomic int64_t live_bytes; /* data blocks only */
    _Atomic int64_t peak_bytes;
    atomic_flag lock; /* guards the free lists; held for a few instructions */
    void *free_list[LOOM__MEM_CLASSES];
    int free_count[LOOM__MEM_CLASSES];
    size_t cached_bytes; /* in all free lists */
} loom__mem;

/* Sets up `mem` with `a` (NULL: malloc/free). */
void loom__mem_init(loom__mem *mem, const loom_allocator *a);

/* Frees every cached block to the user's allocator. */
void loom__mem_drain(loom__mem *mem);

/* Small objects (tensors, nodes): 64-byte aligned. NULL on failure, no
 * message set. */
void *loom__mem_alloc(loom__mem *mem, size_t size);
void loom__mem_free(loom__mem *mem, void *ptr);

/* Tensor data: 64-byte aligned, counted in live/peak bytes. NULL on failure. */
void *loom__mem_alloc_data(loom__mem *mem, size_t size);
void loom__mem_free_data(loom__mem *mem, void *ptr);

#endif /* LOOM_RUNTIME_MEM_H */
