/*
 * benchmarks/gemm_bench.c - Loom's portable SGEMM against oneDNN's dnnl_sgemm.
 *
 * For each size M = N = K and each thread count, times
 *   loom_ref: c = loom_matmul(a, b); loom_tensor_eval(c); loom_tensor_free(c)
 *             in a context created with .backend = "ref", .num_threads = T
 *             (a and b are created once per context by loom_rand);
 *   onednn:   dnnl_sgemm('N', 'N', M, N, K, 1, A, K, B, N, 0, C, N) after
 *             omp_set_num_threads(T)
 * one repetition of each in turn (after one warm-up call of each), until each
 * has run for --min-time seconds and at least 3 times. The reported "gflops"
 * is from the best (fastest) repetition, "median_gflops" from the median.
 *
 * Output: one JSON object per line,
 *   {"impl": "loom_ref", "m": 1024, "n": 1024, "k": 1024, "threads": 1,
 *    "gflops": 85.1, "median_gflops": 83.9, "reps": 40}
 *   {"impl": "onednn", ...}
 *   {"ratio": 0.98, "ratio_median": 0.97, "m": ..., "n": ..., "k": ..., "threads": ...}
 * where ratio = loom / onednn. Built without oneDNN (LOOM_HAVE_ONEDNN unset)
 * only the loom_ref lines are printed.
 *
 * Options: --sizes 256,1024,2048  --threads 1,N  --min-time 0.5
 * (default threads: 1 and every processor, omp_get_num_procs()).
 */
#define _POSIX_C_SOURCE 200809L

#if defined(__has_include)
#if __has_include("config.h")
#include "config.h"
#endif
#endif

#include <loom/loom.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef LOOM_HAVE_ONEDNN
#include <dnnl.h>
#endif

#define MAX_LIST 32

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int num_procs(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#endif
}

/* "256,1024" -> {256, 1024}; returns the count, or -1 if malformed. */
static int parse_list(const char *s, long *out, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || n == max) return -1;
        out[n++] = v;
        if (*end == ',') end++;
        else if (*end != '\0') return -1;
        s = end;
    }
    return n > 0 ? n : -1;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Times of the repetitions of one implementation. */
typedef struct samples {
    double *t;
    int n, cap;
    double total;
} samples;

static int samples_add(samples *s, double t)
{
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        double *nt = realloc(s->t, sizeof(double) * (size_t)cap);
        if (!nt) return -1;
        s->t = nt;
        s->cap = cap;
    }
    s->t[s->n++] = t;
    s->total += t;
    return 0;
}

static void samples_stats(samples *s, double *best, double *median)
{
    qsort(s->t, (size_t)s->n, sizeof(double), cmp_double);
    *best = s->t[0];
    *median = s->n % 2 ? s->t[s->n / 2] : 0.5 * (s->t[s->n / 2 - 1] + s->t[s->n / 2]);
}

static void print_impl(const char *impl, long n, int threads, double flops, samples *s,
                       double *best_gf, double *median_gf)
{
    double best, median;
    samples_stats(s, &best, &median);
    *best_gf = flops / best * 1e-9;
    *median_gf = flops / median * 1e-9;
    printf("{\"impl\": \"%s\", \"m\": %ld, \"n\": %ld, \"k\": %ld, \"threads\": %d, "
           "\"gflops\": %.2f, \"median_gflops\": %.2f, \"reps\": %d}\n",
           impl, n, n, n, threads, *best_gf, *median_gf, s->n);
    fflush(stdout);
}

/* One Loom repetition: record, compute and free c = a @ b. Returns the
 * elapsed seconds, or a negative value on failure. */
static double loom_rep(loom_tensor *a, loom_tensor *b)
{
    const double t0 = now_s();
    loom_tensor *c = loom_matmul(a, b);
    if (!c) return -1.0;
    loom_status st = loom_tensor_eval(c);
    loom_tensor_free(c);
    const double t1 = now_s();
    return st == LOOM_OK ? t1 - t0 : -1.0;
}

#ifdef LOOM_HAVE_ONEDNN
static double onednn_rep(long n, int threads, const float *A, const float *B, float *C)
{
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    const double t0 = now_s();
    dnnl_status_t st = dnnl_sgemm('N', 'N', n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
    const double t1 = now_s();
    return st == dnnl_success ? t1 - t0 : -1.0;
}
#endif

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--sizes 256,1024,2048] [--threads 1,%d] [--min-time 0.5]\n"
            "Times Loom's portable SGEMM (loom_matmul, backend \"ref\")%s on square\n"
            "matrices; prints one JSON object per line.\n",
            prog, num_procs(),
#ifdef LOOM_HAVE_ONEDNN
            " against oneDNN's dnnl_sgemm"
#else
            ""
#endif
    );
}

int main(int argc, char **argv)
{
    long sizes[MAX_LIST] = {256, 1024, 2048};
    int nsizes = 3;
    long threads[MAX_LIST];
    int nthreads = 0;
    double min_time = 0.5;

    threads[nthreads++] = 1;
    if (num_procs() > 1) threads[nthreads++] = num_procs();

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            usage(argv[0]);
            return 0;
        } else if (!strcmp(opt, "--sizes") && val) {
            nsizes = parse_list(val, sizes, MAX_LIST);
            i++;
        } else if (!strcmp(opt, "--threads") && val) {
            nthreads = parse_list(val, threads, MAX_LIST);
            i++;
        } else if (!strcmp(opt, "--min-time") && val) {
            char *end;
            min_time = strtod(val, &end);
            if (*end != '\0' || !(min_time >= 0.0)) nsizes = -1;
            i++;
        } else {
            nsizes = -1;
        }
        if (nsizes < 0 || nthreads < 0) {
            fprintf(stderr, "%s: bad or unknown option '%s'\n", argv[0], opt);
            usage(argv[0]);
            return 2;
        }
    }

    int status = 0;
    for (int ti = 0; ti < nthreads && status == 0; ti++) {
        const int nt = (int)threads[ti];
        loom_ctx_options opts;
        memset(&opts, 0, sizeof opts);
        opts.num_threads = nt;
        opts.backend = "ref";
        opts.seed = 42;
        loom_ctx *ctx = loom_ctx_create(&opts);
        if (!ctx) {
            fprintf(stderr, "loom_ctx_create(threads=%d): %s\n", nt, loom_last_error());
            return 1;
        }

        for (int si = 0; si < nsizes && status == 0; si++) {
            const long n = sizes[si];
            const double flops = 2.0 * (double)n * (double)n * (double)n;
            const int64_t shape[2] = {n, n};
            loom_tensor *a = loom_rand(ctx, 2, shape);
            loom_tensor *b = loom_rand(ctx, 2, shape);
            if (!a || !b || loom_tensor_eval(a) != LOOM_OK || loom_tensor_eval(b) != LOOM_OK) {
                fprintf(stderr, "loom_rand(%ld x %ld): %s\n", n, n, loom_last_error());
                status = 1;
                break;
            }
#ifdef LOOM_HAVE_ONEDNN
            const size_t bytes = sizeof(float) * (size_t)n * (size_t)n;
            float *A = malloc(bytes), *B = malloc(bytes), *C = malloc(bytes);
            if (!A || !B || !C) {
                fprintf(stderr, "out of memory for %ld x %ld matrices\n", n, n);
                free(A); free(B); free(C);
                status = 1;
                break;
            }
            srand(1);
            for (size_t i = 0; i < (size_t)n * (size_t)n; i++) {
                A[i] = (float)rand() / ((float)RAND_MAX + 1.0f);
                B[i] = (float)rand() / ((float)RAND_MAX + 1.0f);
                C[i] = 0.0f;
            }
#endif
            samples sl = {0}, so = {0};
            /* warm-up */
            if (loom_rep(a, b) < 0) {
                fprintf(stderr, "loom matmul %ld: %s\n", n, loom_last_error());
                status = 1;
            }
#ifdef LOOM_HAVE_ONEDNN
            if (status == 0 && onednn_rep(n, nt, A, B, C) < 0) {
                fprintf(stderr, "dnnl_sgemm %ld failed\n", n);
                status = 1;
            }
#endif
            /* interleaved repetitions */
            for (;;) {
                if (status) break;
                int more = sl.n < 3 || sl.total < min_time;
#ifdef LOOM_HAVE_ONEDNN
                more = more || so.n < 3 || so.total < min_time;
#endif
                if (!more) break;
                const double tl = loom_rep(a, b);
                if (tl < 0 || samples_add(&sl, tl)) {
                    fprintf(stderr, "loom matmul %ld: %s\n", n, loom_last_error());
                    status = 1;
                    break;
                }
#ifdef LOOM_HAVE_ONEDNN
                const double to = onednn_rep(n, nt, A, B, C);
                if (to < 0 || samples_add(&so, to)) {
                    fprintf(stderr, "dnnl_sgemm %ld failed\n", n);
                    status = 1;
                    break;
                }
#endif
            }
            if (status == 0) {
                double lb, lm;
                print_impl("loom_ref", n, nt, flops, &sl, &lb, &lm);
#ifdef LOOM_HAVE_ONEDNN
                double ob, om;
                print_impl("onednn", n, nt, flops, &so, &ob, &om);
                printf("{\"ratio\": %.3f, \"ratio_median\": %.3f, \"m\": %ld, \"n\": %ld, "
                       "\"k\": %ld, \"threads\": %d}\n",
                       lb / ob, lm / om, n, n, n, nt);
                fflush(stdout);
#endif
            }
            free(sl.t);
            free(so.t);
#ifdef LOOM_HAVE_ONEDNN
            free(A);
            free(B);
            free(C);
#endif
            loom_tensor_free(a);
            loom_tensor_free(b);
        }
        loom_ctx_free(ctx);
    }
    return status;
}
