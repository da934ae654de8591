/*
 * benchmarks/dag_parallel.c - inter-op parallelism: a DAG of many
 * independent medium-sized nodes, run with one worker and with several.
 *
 *     ./benchmarks/dag_parallel [--branches B] [--size N] [--reps R]
 *
 * The graph is B independent branches, each sum(tanh(x_b @ w / N) + x_b)
 * with [N, N] operands (5 nodes), whose B scalars are stacked and summed. Each configuration prints one JSON
 * line; the last line gives the speedup of all cores over one.
 *   workers=1 threads=1   one node at a time, one thread each (baseline)
 *   workers=1 threads=P   one node at a time, each parallel inside (OpenMP)
 *   workers=P threads=P   P nodes at a time, one thread each (the pool)
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

typedef struct config {
    loom_ctx *ctx;
    loom_tensor *w, **x, **ys;
    double best;
} config;

static void setup(config *c, int workers, int threads, int branches, int64_t n)
{
    c->ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = threads, .num_workers = workers, .seed = 1});
    c->x = malloc(sizeof *c->x * (size_t)branches);
    c->ys = malloc(sizeof *c->ys * (size_t)branches);
    if (!c->ctx || !c->x || !c->ys) {
        fprintf(stderr, "dag_parallel: %s\n", c->ctx ? "out of memory" : loom_last_error());
        exit(1);
    }
    c->w = loom_rand(c->ctx, LOOM_SHAPE(n, n));
    for (int b = 0; b < branches; b++) c->x[b] = loom_rand(c->ctx, LOOM_SHAPE(n, n));
    c->best = 1e30;
}

/* One evaluation of the branch graph; returns its time. */
static double run_once(config *c, int branches, int64_t n)
{
    loom_scope_begin(c->ctx);
    double t0 = now();
    for (int b = 0; b < branches; b++)
        c->ys[b] = loom_sum(loom_add(loom_tanh(loom_mul_scalar(loom_matmul(c->x[b], c->w), 1.0 / (double)n)), c->x[b]),
                            0, NULL, false);
    /* One small join at the end (B scalars), not a chain of adds that
     * would serialise. */
    loom_tensor *acc = loom_sum(loom_stack(c->ys, branches, 0), 0, NULL, false);
    if (loom_tensor_eval(acc) != LOOM_OK) {
        fprintf(stderr, "dag_parallel: %s\n", loom_last_error());
        exit(1);
    }
    double t = now() - t0;
    loom_scope_end(c->ctx);
    return t;
}

int main(int argc, char **argv)
{
    int branches = 256, reps = 5;
    int64_t n = 96;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--branches") && i + 1 < argc) branches = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) n = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--branches B] [--size N] [--reps R]\n", argv[0]);
            return 2;
        }
    }
    if (branches < 1 || n < 1 || reps < 1) {
        fprintf(stderr, "dag_parallel: arguments must be positive\n");
        return 2;
    }
    loom_ctx *probe = loom_ctx_create(NULL);
    int p = probe ? loom_ctx_num_threads(probe) : 1;
    loom_ctx_free(probe);
    const int cfg[3][2] = {{1, 1}, {1, p}, {p, p}};
    config c[3];
    for (int k = 0; k < 3; k++) setup(&c[k], cfg[k][0], cfg[k][1], branches, n);
    /* The pool (k = 2) and its baseline (k = 0) interleaved, best of reps
     * after a warm-up each, so that the machine's noise hits both alike.
     * The OpenMP configuration (k = 1) runs after them: after each parallel
     * region libgomp's team threads spin for a while (GOMP_SPINCOUNT), and
     * interleaved they would take the pool's cores. */
    const int sequence[3] = {0, 2, 1};
    for (int phase = 0; phase < 2; phase++)
        for (int r = 0; r <= reps; r++)
            for (int q = 0; q < 3; q++) {
                int k = sequence[q];
                if ((phase == 0) != (k != 1)) continue;
                double t = run_once(&c[k], branches, n);
                if (r > 0 && t < c[k].best) c[k].best = t;
            }
    double t[3];
    for (int k = 0; k < 3; k++) {
        t[k] = c[k].best;
        printf("{\"bench\": \"dag_parallel\", \"branches\": %d, \"size\": %lld, \"workers\": %d, \"threads\": %d, "
               "\"ms\": %.3f, \"nodes_per_s\": %.0f}\n",
               branches, (long long)n, cfg[k][0], cfg[k][1], t[k] * 1e3, (double)(branches * 5 + 2) / t[k]);
        free(c[k].x);
        free(c[k].ys);
        loom_ctx_free(c[k].ctx);
    }
    printf("{\"bench\": \"dag_parallel\", \"cores\": %d, \"speedup_workers\": %.2f, \"speedup_intra_op\": %.2f}\n", p,
           t[0] / t[2], t[0] / t[1]);
    return 0;
}
