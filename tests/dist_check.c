/*
 * tests/dist_check.c - data parallelism over MPI, run by tests/dist.sh
 * under mpirun with 2 and 3 ranks (one thread each).
 *
 *   dist_check train     every rank starts from different weights; after
 *                        loom_dist_broadcast_module and STEPS SGD steps on
 *                        its shard of a fixed global batch (small buckets,
 *                        so there are several), the parameters are bitwise
 *                        identical on every rank, and rank 0 checks them
 *                        against one process training on the whole global
 *                        batch (1e-5 relative).
 *   dist_check train2    the same with 2 threads and 2 workers per rank: the
 *                        reductions run beside the backward's compute on
 *                        a core kept for them.
 *   dist_check mismatch  rank 1 builds a wider model: every rank gets
 *                        LOOM_ERR_SHAPE naming rank 1.
 *   dist_check hang      rank 1 stops answering at step 2; the others must
 *                        fail within the 3 s timeout with a message saying
 *                        so, then end the job (loom_dist_abort).
 *   dist_check die       rank 1 kills itself at step 2; the job must end
 *                        (not hang).
 * Prints "dist_check: ok" on rank 0 when the mode's expectation holds;
 * exits non-zero otherwise.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>

#include <loom/loom.h>

#define STEPS 5
#define GLOBAL 12 /* samples per global batch: divisible by 1, 2, 3 ranks */

static int rank_g;

static void die(const char *what)
{
    fprintf(stderr, "dist_check: rank %d: %s: %s\n", rank_g, what, loom_last_error());
    exit(1);
}

/* conv 3x3 1->4, relu, max-pool 2, flatten, linear 4*3*3 -> 3 (no
 * BatchNorm: its statistics are per rank by design). hidden widens fc. */
static loom_module *build(loom_ctx *ctx, int hidden)
{
    loom_module *m = loom_sequential(
        ctx, 5,
        (loom_module *[]){loom_conv2d_module(ctx, 1, 4, 3, 3, NULL, true), loom_relu_module(ctx),
                          loom_max_pool2d_module(ctx, &(loom_pool2d_opts){.kernel = {2, 2}}),
                          loom_flatten_module(ctx, 1, -1), loom_linear(ctx, 4 * 3 * 3 * hidden / 4, 3, true)});
    if (!m) die("building the model");
    return m;
}

/* The global batch: x [GLOBAL, 1, 8, 8], labels [GLOBAL], the same on
 * every rank (a fixed generator, not the context's). */
static void global_batch(float *x, int64_t *y)
{
    uint32_t s = 7;
    for (int i = 0; i < GLOBAL * 64; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / (float)(1u << 24) - 0.5f;
    }
    for (int i = 0; i < GLOBAL; i++) y[i] = i % 3;
}

/* STEPS of SGD on samples [first, first + count) of the global batch. */
static void train(loom_ctx *ctx, loom_module *m, loom_dist *d, int first, int count, int hang_rank, bool die_instead)
{
    static float x[GLOBAL * 64];
    static int64_t y[GLOBAL];
    global_batch(x, y);
    int np = loom_module_parameters(m, NULL, NULL, 0);
    loom_tensor *ps[16];
    loom_module_parameters(m, ps, NULL, np);
    loom_optimizer *opt = loom_sgd(ctx, np, ps, &(loom_sgd_options){.lr = 0.1, .momentum = 0.9});
    if (!opt) die("sgd");
    for (int step = 0; step < STEPS; step++) {
        if (d && step == 2 && rank_g == hang_rank) {
            if (die_instead) raise(SIGKILL);
            sleep(60); /* stuck: the others must not wait forever */
        }
        loom_scope_begin(ctx);
        loom_tensor *xb = loom_tensor_from_array(ctx, LOOM_FLOAT32, x + first * 64, LOOM_SHAPE(count, 1, 8, 8));
        loom_tensor *yb = loom_tensor_from_array(ctx, LOOM_INT64, y + first, LOOM_SHAPE(count));
        loom_optimizer_zero_grad(opt);
        loom_tensor *loss = loom_cross_entropy_loss(loom_module_forward(m, xb), yb, LOOM_REDUCTION_MEAN);
        loom_status st = d ? loom_dist_backward(d, m, loss) : loom_backward(loss, NULL, NULL);
        if (st != LOOM_OK) {
            fprintf(stderr, "dist_check: rank %d: step %d: %s\n", rank_g, step, loom_last_error());
            if (d) loom_dist_abort(d, 3);
            exit(3);
        }
        if (loom_optimizer_step(opt) != LOOM_OK) die("step");
        loom_scope_end(ctx);
    }
    loom_optimizer_free(opt);
}

/* m's parameters, flattened into a malloc'd array of *n floats. */
static float *flat_params(loom_module *m, int *n)
{
    loom_tensor *ps[16];
    int np = loom_module_parameters(m, ps, NULL, 16), total = 0;
    for (int i = 0; i < np; i++) total += (int)loom_tensor_numel(ps[i]);
    float *out = malloc(sizeof *out * (size_t)total), *p = out;
    for (int i = 0; i < np; i++) {
        size_t k = (size_t)loom_tensor_numel(ps[i]);
        if (loom_tensor_copy_to(ps[i], p, k * sizeof *p) != LOOM_OK) die("copy");
        p += k;
    }
    *n = total;
    return out;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "train";
    loom_dist *d;
    /* 3 s for the failure modes; 256-byte buckets, so that several run. */
    loom_dist_options o = {.bucket_mb = 1.0 / 4096, .timeout_s = strcmp(mode, "hang") ? 60 : 3};
    if (loom_dist_init(&argc, &argv, &o, &d) != LOOM_OK) die("dist_init");
    rank_g = loom_dist_rank(d);
    const int size = loom_dist_size(d);
    /* Different weights on every rank: the broadcast must fix that. */
    const int threads = !strcmp(mode, "train2") ? 2 : 1;
    loom_ctx *ctx = loom_ctx_create(
        &(loom_ctx_options){.num_threads = threads, .num_workers = threads, .seed = 100 + (uint64_t)rank_g});
    if (!ctx) die("ctx");

    if (!strcmp(mode, "mismatch")) {
        loom_module *m = build(ctx, rank_g == 1 ? 8 : 4);
        loom_status st = loom_dist_broadcast_module(d, m);
        const char *msg = loom_last_error();
        bool ok = st == LOOM_ERR_SHAPE && strstr(msg, "rank 1's model differs from rank 0's");
        if (!ok) fprintf(stderr, "dist_check: rank %d: expected a mismatch naming rank 1, got %d: %s\n", rank_g, st, msg);
        if (ok && rank_g == 0) printf("dist_check: ok (%s)\n", msg);
        loom_module_free(m);
        loom_ctx_free(ctx);
        loom_dist_free(d);
        return ok ? 0 : 1;
    }

    loom_module *m = build(ctx, 4);
    if (loom_dist_broadcast_module(d, m) != LOOM_OK) die("broadcast");
    const int per = GLOBAL / size;
    const bool hang = !strcmp(mode, "hang"), killed = !strcmp(mode, "die");
    train(ctx, m, d, rank_g * per, per, hang || killed ? 1 : -1, killed);
    if (hang || killed) { /* the stuck rank's peers must have failed in train() */
        fprintf(stderr, "dist_check: rank %d: finished although rank 1 stopped\n", rank_g);
        return 1;
    }
    loom_dist_stats ds;
    loom_dist_get_stats(d, &ds);

    int n;
    float *mine = flat_params(m, &n);
    float *all = rank_g == 0 ? malloc(sizeof *all * (size_t)n * (size_t)size) : NULL;
    MPI_Gather(mine, n, MPI_FLOAT, all, n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    int status = 0;
    if (rank_g == 0) {
        for (int r = 1; r < size; r++)
            if (memcmp(all, all + (size_t)r * (size_t)n, sizeof *all * (size_t)n) != 0) {
                fprintf(stderr, "dist_check: rank %d's parameters differ from rank 0's\n", r);
                status = 1;
            }
        /* One process, the whole global batch, rank 0's initial weights. */
        loom_ctx *one = loom_ctx_create(&(loom_ctx_options){.num_threads = 1, .seed = 100});
        loom_module *ref = build(one, 4);
        train(one, ref, NULL, 0, GLOBAL, -1, false);
        int n1;
        float *single = flat_params(ref, &n1);
        double worst = 0, scale = 0;
        for (int i = 0; i < n; i++) {
            worst = fmax(worst, fabs((double)mine[i] - (double)single[i]));
            scale = fmax(scale, fabs((double)single[i]));
        }
        if (n1 != n || worst > 1e-5 * scale) {
            fprintf(stderr, "dist_check: differs from single-process training by %g (scale %g)\n", worst, scale);
            status = 1;
        }
        if (ds.buckets < 2 * STEPS) {
            fprintf(stderr, "dist_check: %lld buckets in %d steps; the 256-byte buckets should make several a step\n",
                     (long long)ds.buckets, STEPS);
            status = 1;
        }
        if (!status)
            printf("dist_check: ok (%d ranks, %d parameters bitwise identical, %g from single-process, "
                   "%lld buckets)\n",
                   size, n, worst, (long long)ds.buckets);
        free(single);
        loom_module_free(ref);
        loom_ctx_free(one);
    }
    MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
    free(mine);
    free(all);
    loom_module_free(m);
    loom_ctx_free(ctx);
    loom_dist_free(d);
    return status;
}
