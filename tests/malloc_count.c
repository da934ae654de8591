/*
 * tests/malloc_count.c - see malloc_count.h.
 */
#include "tests/malloc_count.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define NO_INTERPOSE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define NO_INTERPOSE 1
#endif
#endif

static atomic_bool counting;
static atomic_long count;
void loom__malloc_count_start(void)
{
    atomic_store(&count, 0);
    atomic_store(&counting, true);
}

long loom__malloc_count_stop(void)
{
    atomic_store(&counting, false);
    return atomic_load(&count);
}

#ifdef NO_INTERPOSE
bool loom__malloc_count_works(void) { return false; }
#else
bool loom__malloc_count_works(void) { return true; }

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static inline void bump(void)
{
    if (atomic_load_explicit(&counting, memory_order_relaxed)) atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
}

void *malloc(size_t n)
{
    bump();
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    bump();
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    bump();
    return __libc_realloc(p, n);
}

void free(void *p) { __libc_free(p); }

void *memalign(size_t a, size_t n)
{
    bump();
    return __libc_memalign(a, n);
}

void *aligned_alloc(size_t a, size_t n)
{
    bump();
    return __libc_memalign(a, n);
}

int posix_memalign(void **out, size_t a, size_t n)
{
    bump();
    void *p = __libc_memalign(a, n);
    if (!p && n) return ENOMEM;
    *out = p;
    return 0;
}
#endif
