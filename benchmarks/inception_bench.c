/*
 * benchmarks/inception_bench.c - a branchy CNN (Inception-style blocks) on
 * the DAG scheduler: does running independent convolutions at the same time
 * (inter-op) beat running one at a time with every thread inside it
 * (intra-op)?
 *
 *     ./benchmarks/inception_bench [--batch N] [--blocks K] [--reps R] [--threads P]
 *
 * Each block maps x [N, 64, 14, 14] to the concatenation of four branches,
 * as GoogLeNet's: 1x1 conv 64->16; 1x1 64->24 then 3x3 24->24; 1x1 64->8
 * then 5x5 8->16; 3x3 max-pool then 1x1 64->8 (all with ReLU): 64
 * channels out, so K blocks chain. One training step: forward, a sum as the
 * loss, backward (weights and input gradients), no optimizer. Small
 * batches are where one node cannot fill the cores but four branches can.
 * Configurations (one JSON line each, best of R):
 *   workers=1 threads=P   one node at a time, P threads inside it
 *   workers=P threads=P   P nodes at a time, one thread each
 * and the speedup of the second over the first.
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

static void die(const char *what)
{
    fprintf(stderr, "inception_bench: %s: %s\n", what, loom_last_error());
    exit(1);
}

enum { NCONV = 6 };
/* out, in, kernel, padding of the block's six convolutions */
static const int convs[NCONV][4] = {{16, 64, 1, 0}, {24, 64, 1, 0}, {24, 24, 3, 1},
                                    {8, 64, 1, 0},  {16, 8, 5, 2},  {8, 64, 1, 0}};

typedef struct model {
    loom_ctx *ctx;
    int nblocks;
    loom_tensor **w, **b; /* nblocks * NCONV each */
} model;

static loom_tensor *conv(model *m, int blk, int i, loom_tensor *x)
{
    const int *c = convs[i];
    loom_conv2d_opts o = {.padding = {c[3], c[3]}, .relu = true};
    return loom_conv2d(x, m->w[blk * NCONV + i], m->b[blk * NCONV + i], &o);
}

static loom_tensor *block(model *m, int blk, loom_tensor *x)
{
    loom_tensor *br[4];
    br[0] = conv(m, blk, 0, x);
    br[1] = conv(m, blk, 2, conv(m, blk, 1, x));
    br[2] = conv(m, blk, 4, conv(m, blk, 3, x));
    br[3] = conv(m, blk, 5, loom_max_pool2d(x, &(loom_pool2d_opts){.kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1}}));
    return loom_cat(br, 4, 1);
}

static void setup(model *m, int workers, int threads, int nblocks)
{
    m->ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = threads, .num_workers = workers, .seed = 1});
    if (!m->ctx) die("context");
    m->nblocks = nblocks;
    m->w = calloc((size_t)(nblocks * NCONV), sizeof *m->w);
    m->b = calloc((size_t)(nblocks * NCONV), sizeof *m->b);
    if (!m->w || !m->b) die("out of memory");
    for (int k = 0; k < nblocks * NCONV; k++) {
        const int *c = convs[k % NCONV];
        m->w[k] = loom_mul_scalar(loom_randn(m->ctx, LOOM_SHAPE(c[0], c[1], c[2], c[2])), 0.1);
        m->b[k] = loom_zeros(m->ctx, LOOM_FLOAT32, LOOM_SHAPE(c[0]));
        if (loom_tensor_eval(m->w[k]) || loom_tensor_set_requires_grad(m->w[k], true) ||
            loom_tensor_set_requires_grad(m->b[k], true))
            die("parameters");
    }
}

static double step(model *m, loom_tensor *x)
{
    loom_scope_begin(m->ctx);
    for (int k = 0; k < m->nblocks * NCONV; k++) {
        loom_tensor_zero_grad(m->w[k]);
        loom_tensor_zero_grad(m->b[k]);
    }
    double t0 = now();
    loom_tensor *h = x;
    for (int blk = 0; blk < m->nblocks; blk++) h = block(m, blk, h);
    loom_tensor *loss = loom_sum(h, 0, NULL, false);
    if (loom_backward(loss, NULL, NULL) != LOOM_OK) die("backward");
    double t = now() - t0;
    loom_scope_end(m->ctx);
    return t;
}

int main(int argc, char **argv)
{
    int batch = 8, nblocks = 4, reps = 10, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--blocks")) nblocks = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "inception_bench: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (batch < 1 || nblocks < 1 || reps < 1 || threads < 0 || argc % 2 == 0) {
        fprintf(stderr, "usage: inception_bench [--batch N] [--blocks K] [--reps R] [--threads P]\n");
        return 2;
    }
    double best[2];
    int P = 0;
    for (int cfg = 0; cfg < 2; cfg++) {
        model m;
        loom_ctx *probe = loom_ctx_create(&(loom_ctx_options){.num_threads = threads});
        if (!probe) die("context");
        P = loom_ctx_num_threads(probe);
        loom_ctx_free(probe);
        setup(&m, cfg == 0 ? 1 : P, P, nblocks);
        loom_tensor *x = loom_randn(m.ctx, LOOM_SHAPE(batch, 64, 14, 14));
        if (loom_tensor_eval(x)) die("input");
        step(&m, x); /* warm-up: primitives, caches */
        best[cfg] = 1e30;
        for (int r = 0; r < reps; r++) {
            double t = step(&m, x);
            if (t < best[cfg]) best[cfg] = t;
        }
        printf("{\"bench\":\"inception\",\"batch\":%d,\"blocks\":%d,\"workers\":%d,\"threads\":%d,\"ms\":%.3f}\n", batch,
               nblocks, loom_ctx_num_workers(m.ctx), P, best[cfg] * 1e3);
        free(m.w);
        free(m.b);
        loom_ctx_free(m.ctx);
    }
    printf("{\"bench\":\"inception\",\"batch\":%d,\"speedup_workers_over_intra_op\":%.3f}\n", batch, best[0] / best[1]);
    return 0;
}
