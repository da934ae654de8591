/*
 * benchmarks/node_overhead.c - what one tiny node costs: recording it,
 * running it, and freeing it. A training step of a small model is hundreds
 * of such nodes, so this is Loom's per-op overhead (PyTorch's is several
 * microseconds of Python and dispatch per op).
 *
 *     ./benchmarks/node_overhead [--nodes N] [--rounds R]
 *
 * Prints one JSON line per round and phase:
 *     {"bench": "node_overhead", "mode": "lazy", "record_us": ..., "run_us": ..., "free_us": ...}
 * lazy: record a chain of N adds of 4-element tensors, then evaluate it once;
 * eager: record and evaluate each add at once (define-by-run, op by op).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <loom/loom.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    long nodes = 100000, rounds = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--nodes") && i + 1 < argc) nodes = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = strtol(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--nodes N] [--rounds R]\n", argv[0]);
            return 2;
        }
    }
    if (nodes < 1 || rounds < 1) {
        fprintf(stderr, "node_overhead: --nodes and --rounds must be positive\n");
        return 2;
    }
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 1});
    if (!ctx) {
        fprintf(stderr, "node_overhead: %s\n", loom_last_error());
        return 1;
    }
    loom_tensor *a = loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(4));
    for (long r = 0; r < rounds; r++) {
        loom_scope_begin(ctx);
        double t0 = now();
        loom_tensor *x = a;
        for (long i = 0; i < nodes; i++) x = loom_add(x, a);
        double t1 = now();
        loom_status st = loom_tensor_eval(x);
        double t2 = now();
        loom_scope_end(ctx);
        double t3 = now();
        if (st != LOOM_OK) {
            fprintf(stderr, "node_overhead: %s\n", loom_last_error());
            return 1;
        }
        printf("{\"bench\": \"node_overhead\", \"mode\": \"lazy\", \"nodes\": %ld, \"record_us\": %.3f, "
               "\"run_us\": %.3f, \"free_us\": %.3f}\n",
               nodes, (t1 - t0) / (double)nodes * 1e6, (t2 - t1) / (double)nodes * 1e6,
               (t3 - t2) / (double)nodes * 1e6);
        loom_scope_begin(ctx);
        t0 = now();
        x = a;
        for (long i = 0; i < nodes && st == LOOM_OK; i++) {
            x = loom_add(x, a);
            st = loom_tensor_eval(x);
        }
        t1 = now();
        loom_scope_end(ctx);
        t2 = now();
        printf("{\"bench\": \"node_overhead\", \"mode\": \"eager\", \"nodes\": %ld, \"record_run_us\": %.3f, "
               "\"free_us\": %.3f}\n",
               nodes, (t1 - t0) / (double)nodes * 1e6, (t2 - t1) / (double)nodes * 1e6);
    }
    loom_ctx_free(ctx);
    return 0;
}
