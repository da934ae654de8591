/*
 * benchmarks/bench_util.h - what the benchmark programs share: a monotonic
 * clock and timing by blocks (the median block, robust to the noise of
 * shared machines, and the best).
 */
#ifndef LOOM_BENCH_UTIL_H
#define LOOM_BENCH_UTIL_H

#include <stdlib.h>
#include <time.h>

/* Seconds on the monotonic clock. */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs f(user) `warmup` times, then `blocks` blocks (at most 64) of
 * `iters` calls; sets *median and *best to seconds per call. */
static inline void bench_time_blocks(void (*f)(void *), void *user, int warmup, int iters, int blocks, double *median,
                                     double *best)
{
    for (int i = 0; i < warmup; i++) f(user);
    double t[64];
    int nb = blocks < 1 ? 1 : blocks < 64 ? blocks : 64;
    for (int b = 0; b < nb; b++) {
        double t0 = bench_now();
        for (int i = 0; i < iters; i++) f(user);
        t[b] = (bench_now() - t0) / iters;
    }
    qsort(t, (size_t)nb, sizeof t[0], bench_cmp_double);
    *median = t[nb / 2];
    *best = t[0];
}

#endif /* LOOM_BENCH_UTIL_H */
