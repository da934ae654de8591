/*
 * tools/bench.c - `loom bench`: the throughput of a model of the zoo, one
 * JSON line per (backend, threads, batch) combination:
 *
 *     loom bench --model resnet18 --mode infer --batch 1,8,32 --threads 1,2
 *     {"impl": "loom", "model": "resnet18", "mode": "infer", "batch": 1, "threads": 1,
 *      "backend": "auto", "image": [3, 224, 224], "images_per_s": 23.1, "ms": 43.3,
 *      "best_ms": 42.9, "iters": 47, "gflops": 42.0, "gflop_per_iter": 3.64,
 *      "peak_bytes": 81788928, "max_rss_bytes": 260571136}
 *
 * A step is what a user's loop does: infer = the forward in evaluation
 * mode without gradients, the output computed; train = zero_grad, forward,
 * cross-entropy on random labels, backward, an SGD step (momentum 0.9, as
 * torchvision's reference recipe), the loss read back. Inputs are random
 * normal images (the data pipeline is not measured). Each combination gets
 * a fresh context and model; after --warmup steps, steps are timed one by
 * one until --min-time seconds and at least 3 steps have passed; the
 * median step gives images/s (robust to the noise of shared machines),
 * the fastest best_ms. gflops is the counted FLOPs of the timed steps
 * (2 per multiply-add of convolutions and matrix products) over their
 * time; peak_bytes the most tensor memory the context held; max_rss_bytes
 * the process's peak resident size so far. --profile prints each
 * combination's per-op table (loom_profile_report) to stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <loom/loom.h>

#include "tools/args.h"
#include "tools/commands.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: loom bench --model NAME [options]\n"
               "Training or inference throughput of a model of the zoo on random images; one JSON line\n"
               "per backend, thread count and batch size (images/s, GFLOP/s, peak memory).\n"
               "  --model NAME       mlp, simplecnn, rnn, lstm, gru, resnet18, resnet34, resnet50, ...\n"
               "  --mode M           infer (default) or train (forward, backward, SGD step)\n"
               "  --batch LIST       batch sizes, e.g. 1,8,32 (default 32)\n"
               "  --threads LIST     thread counts, e.g. 1,2 (default: LOOM_NUM_THREADS or every core)\n"
               "  --backend LIST     auto, onednn, ref, e.g. auto,ref (default auto)\n"
               "  --size S           images S x S (default 224 for resnets, 28 otherwise)\n"
               "  --channels C       image channels (default 3 for resnets, 1 otherwise)\n"
               "  --classes N        output classes (default 1000 for resnets, 10 otherwise)\n"
               "  --warmup N         untimed steps first (default 2)\n"
               "  --min-time S       time steps for at least S seconds (default 2)\n"
               "  --profile          print a per-op table (calls, time, share, GFLOP/s) to stderr\n"
               "  --no-fuse          run ResNet inference unfused (by default BatchNorm is folded into the\n"
               "                     convolutions and ReLU fused: loom_resnet_fuse_for_inference)\n");
}

typedef struct config {
    const char *model, *mode, *backend;
    long batch, threads, size, channels, classes, warmup;
    double min_time;
    bool profile, no_fuse;
} config;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One step; LOOM_OK or the failure. */
static loom_status step(loom_ctx *ctx, loom_module *m, loom_optimizer *opt, loom_tensor *x, loom_tensor *y)
{
    loom_scope_begin(ctx);
    loom_status st;
    if (!opt) {
        st = loom_tensor_eval(loom_module_forward(m, x));
    } else {
        loom_optimizer_zero_grad(opt);
        loom_tensor *loss = loom_cross_entropy_loss(loom_module_forward(m, x), y, LOOM_REDUCTION_MEAN);
        double v;
        st = loom_backward(loss, NULL, NULL);
        if (st == LOOM_OK) st = loom_optimizer_step(opt);
        if (st == LOOM_OK) st = loom_tensor_item(loss, &v);
    }
    loom_scope_end(ctx);
    return st;
}

/* Measures one combination and prints its line; 0 or 1 (failure). */
static int run_one(const config *c)
{
    const bool train = !strcmp(c->mode, "train");
    int status = 1;
    const char *what = "creating the context";
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = (int)c->threads, .seed = 1, .backend = c->backend});
    loom_module *m = NULL;
    loom_optimizer *opt = NULL;
    loom_tensor **params = NULL;
    double *times = NULL;
    if (!ctx) goto out;
    what = "building the model";
    m = loom_model(ctx, c->model,
                   &(loom_model_opts){.in_channels = c->channels, .height = c->size, .width = c->size,
                                      .num_classes = c->classes});
    if (!m) goto out;
    loom_tensor *x = loom_randn(ctx, 4, (const int64_t[]){c->batch, c->channels, c->size, c->size});
    loom_tensor *y = loom_randint(ctx, 0, c->classes, 1, (const int64_t[]){c->batch});
    what = "creating the inputs";
    if (!x || !y || loom_tensor_eval(x) != LOOM_OK || loom_tensor_eval(y) != LOOM_OK) goto out;
    if (train) {
        int np = loom_module_parameters(m, NULL, NULL, 0);
        params = malloc(sizeof *params * (size_t)(np ? np : 1));
        what = "creating the optimizer";
        if (!params) goto out;
        loom_module_parameters(m, params, NULL, np);
        opt = loom_sgd(ctx, np, params, &(loom_sgd_options){.lr = 0.01, .momentum = 0.9});
        if (!opt) goto out;
        loom_module_train(m, true);
    } else {
        loom_module_train(m, false);
        /* ResNet inference as a user should run it: BatchNorm folded, ReLU
         * fused (loom_resnet_fuse_for_inference; --no-fuse keeps the
         * module as it is). */
        if (!c->no_fuse && !strcmp(loom_module_type(m), "ResNet")) {
            what = "fusing the model";
            loom_module *f = loom_resnet_fuse_for_inference(m);
            if (!f) goto out;
            loom_module_free(m);
            m = f;
        }
        loom_no_grad_begin(ctx);
    }
    what = "running a step";
    for (long i = 0; i < c->warmup; i++)
        if (step(ctx, m, opt, x, y) != LOOM_OK) goto out;
    size_t cap = 64, n = 0;
    times = malloc(sizeof *times * cap);
    if (!times) goto out;
    loom_ctx_stats s0, s1;
    loom_ctx_get_stats(ctx, &s0);
    if (c->profile) loom_profile_start(ctx);
    const double start = loom_tool_now();
    double total = 0;
    while (n < 3 || total < c->min_time) {
        double t0 = loom_tool_now();
        if (step(ctx, m, opt, x, y) != LOOM_OK) goto out;
        double t = loom_tool_now() - t0;
        if (n == cap) {
            double *more = realloc(times, sizeof *times * cap * 2);
            if (!more) goto out;
            times = more;
            cap *= 2;
        }
        times[n++] = t;
        total = loom_tool_now() - start;
    }
    if (c->profile) loom_profile_stop(ctx);
    loom_ctx_get_stats(ctx, &s1);
    if (!train) loom_no_grad_end(ctx);
    qsort(times, n, sizeof *times, cmp_double);
    const double med = times[n / 2], flops = (double)(s1.flops - s0.flops);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"impl\": \"loom\", \"model\": \"%s\", \"mode\": \"%s\", \"batch\": %ld, \"threads\": %d, "
           "\"backend\": \"%s\", \"image\": [%ld, %ld, %ld], \"images_per_s\": %.2f, \"ms\": %.3f, "
           "\"best_ms\": %.3f, \"iters\": %zu, \"gflops\": %.2f, \"gflop_per_iter\": %.4f, \"peak_bytes\": %lld, "
           "\"max_rss_bytes\": %lld, \"fused\": %s}\n",
           c->model, c->mode, c->batch, loom_ctx_num_threads(ctx), loom_ctx_backend(ctx), c->channels, c->size,
           c->size, (double)c->batch / med, med * 1e3, times[0] * 1e3, n, flops / total * 1e-9,
           flops / (double)n * 1e-9, (long long)s1.peak_bytes, (long long)ru.ru_maxrss * 1024,
           strcmp(loom_module_type(m), "ResNetFused") ? "false" : "true");
    fflush(stdout);
    if (c->profile) {
        char *table = loom_profile_report(ctx);
        if (table) fprintf(stderr, "%s batch %ld, %d threads, backend %s:\n%s", c->model, c->batch,
                           loom_ctx_num_threads(ctx), loom_ctx_backend(ctx), table);
        free(table);
    }
    status = 0;
out:
    if (status) fprintf(stderr, "loom bench: %s (%s, batch %ld): %s\n", what, c->model, c->batch, loom_last_error());
    free(times);
    free(params);
    loom_optimizer_free(opt);
    loom_module_free(m);
    loom_ctx_free(ctx);
    return status;
}

int loom_tool_bench(int argc, char **argv)
{
    const char *cmd = "loom bench", *backends = "auto";
    config c = {.mode = "infer", .warmup = 2, .min_time = 2};
    loom_tool_ints batches = {1, {32}}, threads = {1, {0}};
    const loom_tool_opt opts[] = {
        {"--model", LOOM_TOOL_STR, &c.model, 0, 0},
        {"--mode", LOOM_TOOL_STR, &c.mode, 0, 0},
        {"--batch", LOOM_TOOL_INTS, &batches, 1, 1 << 20},
        {"--threads", LOOM_TOOL_INTS, &threads, 1, 4096},
        {"--backend", LOOM_TOOL_STR, &backends, 0, 0},
        {"--size", LOOM_TOOL_INT, &c.size, 1, 1 << 16},
        {"--channels", LOOM_TOOL_INT, &c.channels, 1, 1 << 16},
        {"--classes", LOOM_TOOL_INT, &c.classes, 1, 1 << 24},
        {"--warmup", LOOM_TOOL_INT, &c.warmup, 0, 1000000},
        {"--min-time", LOOM_TOOL_DOUBLE, &c.min_time, 0, 86400},
        {"--profile", LOOM_TOOL_FLAG, &c.profile, 0, 0},
        {"--no-fuse", LOOM_TOOL_FLAG, &c.no_fuse, 0, 0},
    };
    int rc = loom_tool_parse(cmd, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, usage);
    if (rc >= 0) return rc;
    if (!c.model) {
        fprintf(stderr, "%s: --model is required (see %s --help)\n", cmd, cmd);
        return 2;
    }
    if (!loom_tool_choice(cmd, "--model", c.model, loom_model_names()) ||
        !loom_tool_choice(cmd, "--mode", c.mode, (const char *const[]){"infer", "train", NULL}))
        return 2;
    /* The backends: a comma-separated list, each checked before anything runs. */
    char list[64];
    const char *names[8];
    int nb = 0;
    if (strlen(backends) >= sizeof list) {
        fprintf(stderr, "%s: --backend list too long\n", cmd);
        return 2;
    }
    strcpy(list, backends);
    for (char *save = NULL, *b = strtok_r(list, ",", &save); b; b = strtok_r(NULL, ",", &save)) {
        if (nb == 8 || !loom_tool_choice(cmd, "--backend", b, (const char *const[]){"auto", "onednn", "ref", NULL}))
            return 2;
        names[nb++] = b;
    }
    if (!nb) {
        fprintf(stderr, "%s: --backend needs at least one of auto, onednn, ref\n", cmd);
        return 2;
    }
    const bool resnet = !strncmp(c.model, "resnet", 6);
    if (!c.size) c.size = resnet ? 224 : 28;
    if (!c.channels) c.channels = resnet ? 3 : 1;
    if (!c.classes) c.classes = resnet ? 1000 : 10;
    int failed = 0;
    for (int b = 0; b < nb; b++)
        for (int t = 0; t < threads.n; t++)
            for (int k = 0; k < batches.n; k++) {
                config one = c;
                one.backend = names[b];
                one.threads = threads.v[t];
                one.batch = batches.v[k];
                failed |= run_one(&one);
            }
    return failed;
}
