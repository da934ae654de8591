/*
 * benchmarks/resnet_bench.c - ResNet throughput in Loom, to compare with
 * benchmarks/resnet_torch.py (the same torchvision model, shapes and
 * steps):
 *
 *   infer: the forward of a batch in evaluation mode without gradients;
 *   train: one Adam step (zero_grad, forward, cross entropy, backward,
 *          step, the loss read back).
 *
 * Random inputs [N, 3, S, S]. After --warmup steps, --blocks blocks of
 * --iters steps are timed; the median block is reported (and the best),
 * one JSON line each:
 *   {"impl":"loom","bench":"infer","model":"resnet18","batch":32,"size":224,"images_per_s":...}
 *
 * Usage: resnet_bench [--model resnet18|34|50] [--bench infer|train] [--batch N] [--size S]
 *                     [--threads T] [--backend NAME] [--iters N] [--blocks B] [--warmup W]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <loom/loom.h>

#include "benchmarks/bench_util.h"

typedef struct state {
    loom_ctx *ctx;
    loom_module *net;
    loom_optimizer *opt;
    loom_tensor *x, *y;
} state;

static void die(const char *what)
{
    fprintf(stderr, "resnet_bench: %s: %s\n", what, loom_last_error());
    exit(1);
}

static void infer_step(void *user)
{
    state *s = user;
    loom_scope_begin(s->ctx);
    if (loom_tensor_eval(loom_module_forward(s->net, s->x))) die("inference");
    loom_scope_end(s->ctx);
}

static void train_step(void *user)
{
    state *s = user;
    loom_scope_begin(s->ctx);
    loom_optimizer_zero_grad(s->opt);
    loom_tensor *loss = loom_cross_entropy_loss(loom_module_forward(s->net, s->x), s->y, LOOM_REDUCTION_MEAN);
    double v;
    if (loom_backward(loss, NULL, NULL) || loom_optimizer_step(s->opt) || loom_tensor_item(loss, &v)) die("training");
    loom_scope_end(s->ctx);
}

int main(int argc, char **argv)
{
    const char *model = "resnet18", *bench = "infer", *backend = NULL;
    int batch = 32, size = 224, threads = 0, iters = 3, blocks = 3, warmup = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--bench")) bench = v;
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--batch")) batch = atoi(v);
        else if (!strcmp(a, "--size")) size = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--iters")) iters = atoi(v);
        else if (!strcmp(a, "--blocks")) blocks = atoi(v);
        else if (!strcmp(a, "--warmup")) warmup = atoi(v);
        else {
            fprintf(stderr, "resnet_bench: unknown option %s\n", a);
            return 2;
        }
    }
    int depth = strncmp(model, "resnet", 6) ? 0 : atoi(model + 6);
    if (batch < 1 || size < 33 || iters < 1 || blocks < 1 || warmup < 0 || (strcmp(bench, "infer") && strcmp(bench, "train"))) {
        fprintf(stderr, "resnet_bench: bad arguments\n");
        return 2;
    }
    state s = {.ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = threads, .seed = 1, .backend = backend})};
    if (!s.ctx) die("context");
    s.net = loom_resnet(s.ctx, depth, NULL);
    if (!s.net) die("model");
    s.x = loom_randn(s.ctx, 4, (const int64_t[]){batch, 3, size, size});
    s.y = loom_randint(s.ctx, 0, 1000, 1, (const int64_t[]){batch});
    if (!s.x || !s.y || loom_tensor_eval(s.x) || loom_tensor_eval(s.y)) die("inputs");
    bool train = !strcmp(bench, "train");
    if (train) {
        loom_tensor *ps[1024];
        int n = loom_module_parameters(s.net, ps, NULL, 1024);
        s.opt = loom_adam(s.ctx, n, ps, NULL);
        if (!s.opt) die("adam");
    } else {
        loom_module_train(s.net, false);
        loom_no_grad_begin(s.ctx);
    }
    double med, best;
    bench_time_blocks(train ? train_step : infer_step, &s, warmup, iters, blocks, &med, &best);
    printf("{\"impl\":\"loom\",\"bench\":\"%s\",\"model\":\"%s\",\"batch\":%d,\"size\":%d,\"threads\":%d,"
           "\"ms\":%.2f,\"best_ms\":%.2f,\"images_per_s\":%.2f}\n",
           bench, model, batch, size, loom_ctx_num_threads(s.ctx), med * 1e3, best * 1e3, batch / med);
    if (!train) loom_no_grad_end(s.ctx);
    loom_optimizer_free(s.opt);
    loom_module_free(s.net);
    loom_ctx_free(s.ctx);
    return 0;
}
