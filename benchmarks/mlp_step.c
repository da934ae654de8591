/*
 * benchmarks/mlp_step.c - the time of one training step of the seed MLP
 * (examples/mlp.c): Linear(20, 64) -> ReLU -> Linear(64, 1) -> Sigmoid,
 * BCELoss, Adam (lr 0.001), full batch of 100.
 *
 * One step is what the training loop does per epoch:
 *     scope_begin; zero_grad; forward; bce_loss; backward; adam step; scope_end
 * After --warmup steps, it times --blocks blocks of --steps steps each and
 * reports the median block's time per step (and the best block's), so that
 * a noisy neighbour in one block does not move the figure.
 *
 * Output: one JSON line,
 *   {"impl":"loom","threads":1,"us_per_step":52.3,"best_us_per_step":51.8}
 * benchmarks/mlp_step_torch.py prints the same for PyTorch, and
 * benchmarks/run_mlp_bench.sh runs both, interleaved, and prints the ratio.
 *
 * Options: --threads T (1)  --steps N (500)  --blocks K (7)  --warmup W (50)
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <loom/loom.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int parse_int(const char *opt, const char *s, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || end == s || v < min || v > max) {
        fprintf(stderr, "mlp_step: %s needs an integer from %d to %d, got '%s'\n", opt, min, max, s ? s : "");
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* One training step; LOOM_OK or the first error. */
static loom_status train_step(loom_ctx *ctx, loom_module *model, loom_optimizer *adam, loom_tensor *x, loom_tensor *y)
{
    loom_scope_begin(ctx);
    loom_optimizer_zero_grad(adam);
    loom_tensor *loss = loom_bce_loss(loom_module_forward(model, x), y, LOOM_REDUCTION_MEAN);
    loom_status st = loom_backward(loss, NULL, NULL);
    if (st == LOOM_OK) st = loom_optimizer_step(adam);
    loom_scope_end(ctx);
    return st;
}

int main(int argc, char **argv)
{
    int threads = 1, steps = 500, blocks = 7, warmup = 50, replay = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc;
        if (!strcmp(a, "--threads")) rc = parse_int(a, v, 1, 4096, &threads);
        else if (!strcmp(a, "--steps")) rc = parse_int(a, v, 1, 100000000, &steps);
        else if (!strcmp(a, "--blocks")) rc = parse_int(a, v, 1, 1000, &blocks);
        else if (!strcmp(a, "--warmup")) rc = parse_int(a, v, 0, 100000000, &warmup);
        else if (!strcmp(a, "--replay")) rc = parse_int(a, v, 0, 1, &replay);
        else if (!strcmp(a, "--help")) {
            printf("usage: mlp_step [--threads T] [--steps N] [--blocks K] [--warmup W] [--replay 0|1]\n"
                   "  --replay 1: capture one step after the warm-up and time replays of it (loom/graph.h)\n");
            return 0;
        } else {
            fprintf(stderr, "mlp_step: unknown option '%s' (try --help)\n", a);
            return 2;
        }
        if (rc) return 2;
        i++;
    }

    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = threads, .seed = 0});
    if (!ctx) {
        fprintf(stderr, "mlp_step: %s\n", loom_last_error());
        return 1;
    }
    loom_tensor *x = loom_rand(ctx, LOOM_SHAPE(100, 20));
    loom_tensor *y = loom_to_dtype(loom_randint(ctx, 0, 2, LOOM_SHAPE(100, 1)), LOOM_FLOAT32);
    loom_module *model = loom_sequential(ctx, 4,
                                         (loom_module *[]){loom_linear(ctx, 20, 64, true), loom_relu_module(ctx),
                                                           loom_linear(ctx, 64, 1, true), loom_sigmoid_module(ctx)});
    loom_optimizer *adam = NULL;
    if (model && y) {
        loom_tensor *params[4];
        int n = loom_module_parameters(model, params, NULL, 4);
        adam = n == 4 ? loom_adam(ctx, n, params, NULL) : NULL;
    }
    int rc = 0;
    loom_graph *graph = NULL;
    if (!adam) {
        fprintf(stderr, "mlp_step: setup failed: %s\n", loom_last_error());
        rc = 1;
        goto out;
    }
    for (int i = 0; i < warmup; i++) {
        if (train_step(ctx, model, adam, x, y) != LOOM_OK) {
            fprintf(stderr, "mlp_step: %s\n", loom_last_error());
            rc = 1;
            goto out;
        }
    }
    if (replay) {
        loom_status st = loom_graph_capture_begin(ctx);
        if (st == LOOM_OK) st = train_step(ctx, model, adam, x, y);
        graph = loom_graph_capture_end(ctx);
        if (st != LOOM_OK || !graph) {
            fprintf(stderr, "mlp_step: capture failed: %s\n", loom_last_error());
            rc = 1;
            goto out;
        }
    }
    double *per_step = malloc(sizeof *per_step * (size_t)blocks);
    if (!per_step) {
        rc = 1;
        goto out;
    }
    for (int b = 0; b < blocks && rc == 0; b++) {
        double t0 = now_s();
        for (int i = 0; i < steps; i++) {
            if ((graph ? loom_graph_replay(graph) : train_step(ctx, model, adam, x, y)) != LOOM_OK) {
                fprintf(stderr, "mlp_step: %s\n", loom_last_error());
                rc = 1;
                break;
            }
        }
        per_step[b] = (now_s() - t0) / steps * 1e6;
    }
    if (rc == 0) {
        qsort(per_step, (size_t)blocks, sizeof *per_step, cmp_double);
        printf("{\"impl\":\"loom\",\"replay\":%s,\"threads\":%d,\"us_per_step\":%.2f,\"best_us_per_step\":%.2f}\n",
               graph ? "true" : "false", threads, per_step[blocks / 2], per_step[0]);
    }
    free(per_step);
out:
    loom_graph_free(graph);
    loom_optimizer_free(adam);
    loom_module_free(model);
    loom_ctx_free(ctx);
    return rc;
}
