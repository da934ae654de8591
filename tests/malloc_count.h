/*
 * tests/malloc_count.h - counts the process's heap allocations (malloc,
 * calloc, realloc, posix_memalign, aligned_alloc, memalign) between start
 * and stop, from every thread, by defining those functions in the test
 * binary over glibc's __libc_* entry points. Every caller counts,
 * libgomp included (Loom's kernels enter no OpenMP region for serial
 * work: backends/ref/nditer.h, LOOM__OMP_TEAM). Sanitizer builds (which replace malloc themselves) count nothing:
 * works() is false there.
 */
#ifndef LOOM_TESTS_MALLOC_COUNT_H
#define LOOM_TESTS_MALLOC_COUNT_H

#include <stdbool.h>

void loom__malloc_count_start(void);
long loom__malloc_count_stop(void);
bool loom__malloc_count_works(void);

#endif
