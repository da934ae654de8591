/*
 * runtime/mem.c - allocation through the user's allocator.
 *
 * Data blocks are over-allocated by LOOM__ALIGN bytes and aligned by hand, so
 * that a user allocator only has to provide malloc's guarantees. The header
 * just before the aligned pointer keeps the raw pointer and the size.
 */
#include "runtime/mem.h"

#include <stdlib.h>

static void *default_alloc(size_t size, void *user)
{
    (void)user;
    return malloc(size);
}

static void default_free(void *ptr, void *user)
{
    (void)user;
    free(ptr);
}

void loom__mem_init(loom__mem *mem, const loom_allocator *a)
{
    if (a && a->alloc && a->free) {
        mem->alloc = *a;
    } else {
        mem->alloc.alloc = default_alloc;
        mem->alloc.free = default_free;
        mem->alloc.user = NULL;
    }
    atomic_init(&mem->live_bytes, 0);
    atomic_init(&mem->peak_bytes, 0);
}

void *loom__mem_alloc(loom__mem *mem, size_t size)
{
    return mem->alloc.alloc(size ? size : 1, mem->alloc.user);
}

void loom__mem_free(loom__mem *mem, void *ptr)
{
    if (ptr) mem->alloc.free(ptr, mem->alloc.user);
}

typedef struct data_header {
    void *raw;
    size_t size;
} data_header;

void *loom__mem_alloc_data(loom__mem *mem, size_t size)
{
    if (size > SIZE_MAX - LOOM__ALIGN - sizeof(data_header)) return NULL;
    size_t total = size + LOOM__ALIGN + sizeof(data_header);
    char *raw = mem->alloc.alloc(total, mem->alloc.user);
    if (!raw) return NULL;
    uintptr_t p = (uintptr_t)(raw + sizeof(data_header));
    p = (p + LOOM__ALIGN - 1) & ~(uintptr_t)(LOOM__ALIGN - 1);
    data_header *h = (data_header *)p - 1;
    h->raw = raw;
    h->size = size;
    int64_t now = atomic_fetch_add_explicit(&mem->live_bytes, (int64_t)size, memory_order_relaxed) +
                  (int64_t)size;
    int64_t peak = atomic_load_explicit(&mem->peak_bytes, memory_order_relaxed);
    while (now > peak && !atomic_compare_exchange_weak_explicit(
                             &mem->peak_bytes, &peak, now, memory_order_relaxed,
                             memory_order_relaxed)) {
    }
    return (void *)p;
}

void loom__mem_free_data(loom__mem *mem, void *ptr)
{
    if (!ptr) return;
    data_header *h = (data_header *)ptr - 1;
    atomic_fetch_sub_explicit(&mem->live_bytes, (int64_t)h->size, memory_order_relaxed);
    mem->alloc.free(h->raw, mem->alloc.user);
}
