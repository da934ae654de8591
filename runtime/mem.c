/*
 * runtime/mem.c - allocation through the user's allocator, with a cache.
 *
 * Every block is over-allocated by LOOM__ALIGN bytes plus a header and
 * aligned by hand, so that a user allocator only has to provide malloc's
 * guarantees. The header just before the aligned pointer keeps the raw
 * pointer, the requested size, the size class (or NO_CLASS for big blocks)
 * and whether the bytes count as tensor data. A freed block of a cached
 * class goes on its class's free list (linked through its first bytes)
 * unless the list is full.
 */
#include "runtime/mem.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define NO_CLASS 0xffffu
#define MIN_CLASS_SHIFT 6 /* 64 bytes */

typedef struct header {
    void *raw;
    size_t size;
    uint16_t cls;
    uint16_t counted; /* live_bytes includes size */
    int32_t domain;   /* the memory domain it was made for */
} header;

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
    memset(mem, 0, sizeof *mem);
    if (a && a->alloc && a->free) {
        mem->alloc = *a;
    } else {
        mem->alloc.alloc = default_alloc;
        mem->alloc.free = default_free;
        mem->alloc.user = NULL;
    }
    atomic_init(&mem->live_bytes, 0);
    atomic_init(&mem->peak_bytes, 0);
    atomic_init(&mem->bound_blocks, 0);
    atomic_init(&mem->out_bytes, 0);
    atomic_init(&mem->out_peak, 0);
    atomic_init(&mem->lock, false);
    mem->cache_limit = LOOM__MEM_CACHE_AUTO;
    mem->cache_floor = LOOM__MEM_CACHE_FLOOR;
}

void loom__mem_set_binder(loom__mem *mem, loom__mem_bind_fn fn, void *user)
{
    mem->bind = fn;
    mem->bind_user = user;
}

static inline void cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void lock(loom__mem *mem)
{
    while (atomic_exchange_explicit(&mem->lock, true, memory_order_acquire))
        while (atomic_load_explicit(&mem->lock, memory_order_relaxed)) cpu_pause();
}

static void unlock(loom__mem *mem) { atomic_store_explicit(&mem->lock, false, memory_order_release); }

/* Under the lock: *v += d, and *peak raised to it (no other writer). */
static int64_t add_locked(_Atomic int64_t *v, _Atomic int64_t *peak, int64_t d)
{
    const int64_t now = atomic_load_explicit(v, memory_order_relaxed) + d;
    atomic_store_explicit(v, now, memory_order_relaxed);
    if (peak && now > atomic_load_explicit(peak, memory_order_relaxed))
        atomic_store_explicit(peak, now, memory_order_relaxed);
    return now;
}

#define POW2_MAX_SHIFT (MIN_CLASS_SHIFT + LOOM__MEM_POW2_CLASSES - 1) /* 128 KiB */

/* The class of a size, or NO_CLASS if it is too big to cache. */
static unsigned size_class(size_t size)
{
    if (size <= (size_t)1 << POW2_MAX_SHIFT) {
        unsigned c = 0;
        size_t cap = (size_t)1 << MIN_CLASS_SHIFT;
        while (cap < size) {
            cap <<= 1;
            c++;
        }
        return c;
    }
    /* 2^e < size <= 2^(e+1), e >= POW2_MAX_SHIFT: quarter steps of 2^(e-2). */
    unsigned e = POW2_MAX_SHIFT;
    while (e < 63 && ((size_t)2 << e) < size) e++;
    size_t step = (size_t)1 << (e - 2);
    size_t q = (size - ((size_t)1 << e) + step - 1) / step; /* 1..4 */
    unsigned c = LOOM__MEM_POW2_CLASSES + (e - POW2_MAX_SHIFT) * 4 + (unsigned)(q - 1);
    return c < LOOM__MEM_CLASSES ? c : NO_CLASS;
}

static size_t class_bytes(unsigned c)
{
    if (c < LOOM__MEM_POW2_CLASSES) return (size_t)1 << (c + MIN_CLASS_SHIFT);
    unsigned k = c - LOOM__MEM_POW2_CLASSES, e = POW2_MAX_SHIFT + k / 4;
    return ((size_t)1 << e) + (size_t)(k % 4 + 1) * ((size_t)1 << (e - 2));
}

/* The bytes a block holds: its class's, or its size if too big to cache. */
static size_t held_bytes(unsigned cls, size_t size) { return cls != NO_CLASS ? class_bytes(cls) : size; }

static void *block_alloc(loom__mem *mem, size_t size, bool counted, int domain)
{
    unsigned cls = size_class(size ? size : 1);
    const int d = domain % LOOM__MEM_DOMAINS;
    const int64_t held = (int64_t)held_bytes(cls, size);
    void *p = NULL;
    if (cls != NO_CLASS) {
        lock(mem);
        mem->class_used[d][cls] = ++mem->clock;
        p = mem->free_list[d][cls];
        if (p) { /* counted under the same lock */
            mem->free_list[d][cls] = *(void **)p;
            mem->free_count[d][cls]--;
            mem->cached_bytes -= class_bytes(cls);
            add_locked(&mem->out_bytes, &mem->out_peak, held);
            if (counted) add_locked(&mem->live_bytes, &mem->peak_bytes, (int64_t)size);
        }
        unlock(mem);
    }
    if (!p) {
        size_t bytes = cls != NO_CLASS ? class_bytes(cls) : size;
        if (bytes > SIZE_MAX - LOOM__ALIGN - sizeof(header)) return NULL;
        char *raw = mem->alloc.alloc(bytes + LOOM__ALIGN + sizeof(header), mem->alloc.user);
        if (!raw) return NULL;
        lock(mem);
        add_locked(&mem->out_bytes, &mem->out_peak, held);
        if (counted) add_locked(&mem->live_bytes, &mem->peak_bytes, (int64_t)size);
        unlock(mem);
        uintptr_t a = (uintptr_t)(raw + sizeof(header));
        a = (a + LOOM__ALIGN - 1) & ~(uintptr_t)(LOOM__ALIGN - 1);
        p = (void *)a;
        ((header *)p - 1)->raw = raw;
        ((header *)p - 1)->cls = (uint16_t)cls;
        ((header *)p - 1)->domain = domain;
        /* Fresh memory: bound before anything touches it, so its pages go
         * to the domain's node (first touch would do the same for pages the
         * allocator never used, but not for ones it recycles). */
        if (counted && mem->bind && bytes >= LOOM__MEM_BIND_MIN && mem->bind(p, bytes, domain, mem->bind_user) == 0)
            atomic_fetch_add_explicit(&mem->bound_blocks, 1, memory_order_relaxed);
    }
    header *h = (header *)p - 1;
    h->size = size;
    h->counted = counted;
    return p;
}

/* Gives a chain of blocks (linked through their first bytes) back to the
 * user's allocator. */
static void free_chain(loom__mem *mem, void *p)
{
    while (p) {
        void *next = *(void **)p;
        mem->alloc.free(((header *)p - 1)->raw, mem->alloc.user);
        p = next;
    }
}

/* Under the lock: bytes by which keeping `cb` more bytes would exceed the
 * limit (<= 0: it fits), `out` bytes being in use. */
static int64_t over_limit(const loom__mem *mem, int64_t out, size_t cb)
{
    if (mem->cache_limit >= 0) return (int64_t)(mem->cached_bytes + cb) - mem->cache_limit;
    /* Automatic: what Loom holds after keeping this block (the blocks
     * still in use plus the cache, each by its class's bytes) must not
     * exceed the most ever in use at once, plus an eighth, or the floor. A
     * step that repeats then finds all its blocks in the cache, and a
     * shape that changes cannot make the cache grow past that. The eighth
     * is for blocks a step frees while it still makes others of new
     * classes: the cache then holds both for a moment (without it,
     * ResNet-18 training still unmapped ~5 blocks a step, 3% slower). */
    int64_t peak = atomic_load_explicit(&mem->out_peak, memory_order_relaxed);
    uint64_t limit = (uint64_t)(peak > 0 ? peak + peak / 8 : 0);
    if (limit < mem->cache_floor) limit = mem->cache_floor;
    return (int64_t)((uint64_t)(out > 0 ? out : 0) + mem->cached_bytes + cb) - (int64_t)limit;
}

/* Under the lock: makes room for `need` bytes by taking cached blocks of
 * classes asked for before (d, cls) was, least recently asked for first,
 * onto *evicted (linked through their first bytes; the caller frees them
 * after unlocking). Takes nothing and returns false when those classes
 * hold too little. Without this, blocks of sizes no longer asked for would
 * fill the cache for good after a shape change, and every block of the
 * new sizes would go back to the allocator when freed (conv_bench's
 * ResNet 1x1 backward-data after the 7x7 stem: a fresh 25 MB output, its
 * pages faulted in, every call: 0.80 of the primitive instead of 0.97). */
static bool evict_older(loom__mem *mem, int d, unsigned cls, int64_t need, void **evicted)
{
    const uint64_t mine = mem->class_used[d][cls];
    int64_t avail = 0;
    for (int dd = 0; dd < LOOM__MEM_DOMAINS; dd++)
        for (unsigned c = 0; c < LOOM__MEM_CLASSES; c++)
            if (mem->free_count[dd][c] && mem->class_used[dd][c] < mine)
                avail += (int64_t)class_bytes(c) * mem->free_count[dd][c];
    if (avail < need) return false;
    while (need > 0) {
        int bd = -1;
        unsigned bc = 0;
        for (int dd = 0; dd < LOOM__MEM_DOMAINS; dd++)
            for (unsigned c = 0; c < LOOM__MEM_CLASSES; c++)
                if (mem->free_count[dd][c] && mem->class_used[dd][c] < mine &&
                    (bd < 0 || mem->class_used[dd][c] < mem->class_used[bd][bc]))
                    bd = dd, bc = c;
        void *q = mem->free_list[bd][bc];
        mem->free_list[bd][bc] = *(void **)q;
        mem->free_count[bd][bc]--;
        mem->cached_bytes -= class_bytes(bc);
        need -= (int64_t)class_bytes(bc);
        *(void **)q = *evicted;
        *evicted = q;
    }
    return true;
}

static void block_free(loom__mem *mem, void *p)
{
    if (!p) return;
    header *h = (header *)p - 1;
    const unsigned cls = h->cls;
    const int d = h->domain % LOOM__MEM_DOMAINS;
    void *evicted = NULL;
    bool keep = false;
    lock(mem);
    if (h->counted) add_locked(&mem->live_bytes, NULL, -(int64_t)h->size);
    const int64_t out = add_locked(&mem->out_bytes, NULL, -(int64_t)held_bytes(cls, h->size));
    if (cls != NO_CLASS) {
        const size_t cb = class_bytes(cls);
        if (cb > 4096 || mem->free_count[d][cls] < LOOM__MEM_SMALL_BLOCKS) {
            const int64_t need = over_limit(mem, out, cb);
            keep = need <= 0 || evict_older(mem, d, cls, need, &evicted);
        }
        if (keep) {
            *(void **)p = mem->free_list[d][cls];
            mem->free_list[d][cls] = p;
            mem->free_count[d][cls]++;
            mem->cached_bytes += cb;
        }
    }
    unlock(mem);
    free_chain(mem, evicted);
    if (!keep) mem->alloc.free(h->raw, mem->alloc.user);
}

void loom__mem_drain(loom__mem *mem)
{
    lock(mem);
    for (int d = 0; d < LOOM__MEM_DOMAINS; d++)
        for (unsigned c = 0; c < LOOM__MEM_CLASSES; c++) {
            free_chain(mem, mem->free_list[d][c]);
            mem->free_list[d][c] = NULL;
            mem->free_count[d][c] = 0;
        }
    mem->cached_bytes = 0;
    unlock(mem);
}

size_t loom__mem_cached_bytes(loom__mem *mem)
{
    lock(mem);
    size_t n = mem->cached_bytes;
    unlock(mem);
    return n;
}

void *loom__mem_alloc(loom__mem *mem, size_t size) { return block_alloc(mem, size, false, 0); }
void loom__mem_free(loom__mem *mem, void *ptr) { block_free(mem, ptr); }
void *loom__mem_alloc_data(loom__mem *mem, size_t size) { return block_alloc(mem, size, true, 0); }
void *loom__mem_alloc_data_on(loom__mem *mem, size_t size, int domain)
{
    return block_alloc(mem, size, true, domain > 0 ? domain : 0);
}
int loom__mem_block_domain(const void *ptr) { return ((const header *)ptr - 1)->domain; }
void loom__mem_free_data(loom__mem *mem, void *ptr) { block_free(mem, ptr); }
