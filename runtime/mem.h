/*
 * runtime/mem.h - Loom's memory: the user's allocator, 64-byte aligned
 * blocks for tensor data, and byte accounting.
 *
 * Every allocation Loom makes goes through a loom__mem so that a test can
 * inject failures (an OOM sweep) and a report can show live and peak bytes.
 * The functions are thread-safe if the user's allocator is.
 */
#ifndef LOOM_RUNTIME_MEM_H
#define LOOM_RUNTIME_MEM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "loom/context.h"

#define LOOM__ALIGN 64

typedef struct loom__mem {
    loom_allocator alloc;
    _Atomic int64_t live_bytes; /* data blocks only */
    _Atomic int64_t peak_bytes;
} loom__mem;

/* Sets up `mem` with `a` (NULL: malloc/free). */
void loom__mem_init(loom__mem *mem, const loom_allocator *a);

/* Small objects (tensors, nodes): NULL on failure, no message set. */
void *loom__mem_alloc(loom__mem *mem, size_t size);
void loom__mem_free(loom__mem *mem, void *ptr);

/* Tensor data: 64-byte aligned, counted in live/peak bytes. NULL on failure. */
void *loom__mem_alloc_data(loom__mem *mem, size_t size);
void loom__mem_free_data(loom__mem *mem, void *ptr);

#endif /* LOOM_RUNTIME_MEM_H */
