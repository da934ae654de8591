/*
 * benchmarks/cnn_bench.c - throughput of the seed SimpleCNN in Loom
 * (loom_simple_cnn, as examples/cnn_mnist.c trains it), to compare with
 * benchmarks/cnn_torch.py:
 *
 *   train: one Adam step on a batch of 64 (zero_grad, forward, NLL loss,
 *          backward, step, loss read back), in images/s;
 *   infer: the forward of a batch of 1000 in evaluation mode without
 *          gradients, in images/s;
 *   layers: each layer's forward (and forward + backward for the
 *          convolutions and fc1) alone on the training batch's shapes, in
 *          ms and GFLOP/s.
 *
 * Random inputs (the data pipeline is not measured). After --warmup
 * iterations, --blocks blocks of --iters iterations are timed; the median
 * block is reported (and the best), one JSON line per measurement:
 *   {"impl":"loom","bench":"train","threads":2,"batch":64,"images_per_s":2450.1,...}
 *
 * Usage: cnn_bench [--threads T] [--backend NAME] [--bench train|infer|layers|all]
 *                  [--iters N] [--blocks B] [--warmup W]
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <loom/loom.h>

static double now(void)
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

static void die(const char *what)
{
    fprintf(stderr, "cnn_bench: %s: %s\n", what, loom_last_error());
    exit(1);
}

/* ---- the model: the seed's SimpleCNN from the zoo (loom/models.h) -------- */

typedef struct net {
    loom_module *root;
} net;

static void build(loom_ctx *ctx, net *n)
{
    n->root = loom_simple_cnn(ctx, NULL);
    if (!n->root) die("building the model");
}

/* ---- timing ---------------------------------------------------------------- */

typedef struct cfg {
    int threads, iters, blocks, warmup;
    const char *backend, *bench;
} cfg;

typedef void (*step_fn)(void *user);

/* Median and best seconds per iteration. */
static void time_it(const cfg *c, step_fn f, void *user, int iters, double *med, double *best)
{
    for (int i = 0; i < c->warmup; i++) f(user);
    double t[64];
    int nb = c->blocks < 64 ? c->blocks : 64;
    for (int b = 0; b < nb; b++) {
        double t0 = now();
        for (int i = 0; i < iters; i++) f(user);
        t[b] = (now() - t0) / iters;
    }
    qsort(t, (size_t)nb, sizeof t[0], cmp_double);
    *med = t[nb / 2];
    *best = t[0];
}

typedef struct train_state {
    loom_ctx *ctx;
    net *n;
    loom_optimizer *opt;
    loom_tensor *x, *y;
} train_state;

static void train_step(void *user)
{
    train_state *s = user;
    loom_scope_begin(s->ctx);
    loom_optimizer_zero_grad(s->opt);
    loom_tensor *loss = loom_nll_loss(loom_module_forward(s->n->root, s->x), s->y, LOOM_REDUCTION_MEAN);
    double v;
    if (loom_backward(loss, NULL, NULL) || loom_optimizer_step(s->opt) || loom_tensor_item(loss, &v))
        die("training step");
    loom_scope_end(s->ctx);
}

static void infer_step(void *user)
{
    train_state *s = user;
    loom_scope_begin(s->ctx);
    loom_tensor *out = loom_module_forward(s->n->root, s->x);
    if (loom_tensor_eval(out)) die("inference");
    loom_scope_end(s->ctx);
}

/* One layer: a function of the input recorded and evaluated (and, with
 * backward, differentiated through a sum). */
typedef struct layer_state {
    loom_ctx *ctx;
    loom_tensor *x;
    loom_tensor *(*fn)(loom_tensor *x, void *p);
    void *p;
    bool backward;
    loom_tensor *const *params; /* zero-grad'ed each time */
    int nparams;
} layer_state;

static void layer_step(void *user)
{
    layer_state *s = user;
    loom_scope_begin(s->ctx);
    for (int i = 0; i < s->nparams; i++) loom_tensor_zero_grad(s->params[i]);
    loom_tensor *y = s->fn(s->x, s->p);
    loom_status st;
    if (s->backward) st = loom_backward(loom_sum(y, 0, NULL, false), NULL, NULL);
    else st = loom_tensor_eval(y);
    if (st) die("layer");
    loom_scope_end(s->ctx);
}

static loom_tensor *conv_relu(loom_tensor *x, void *p)
{
    loom_module *m = p;
    return loom_conv2d(x, loom_module_get(m, "weight"), loom_module_get(m, "bias"), &(loom_conv2d_opts){.relu = true});
}

static loom_tensor *pool2(loom_tensor *x, void *p)
{
    (void)p;
    return loom_max_pool2d(x, &(loom_pool2d_opts){.kernel = {2, 2}});
}

static loom_tensor *linear_relu(loom_tensor *x, void *p) { return loom_relu(loom_module_forward(p, x)); }

static void emit(const cfg *c, const char *bench, int batch, double med, double best, double flops)
{
    printf("{\"impl\":\"loom\",\"bench\":\"%s\",\"threads\":%d,\"backend\":\"%s\",\"batch\":%d,"
           "\"ms\":%.4f,\"best_ms\":%.4f,\"images_per_s\":%.1f",
           bench, c->threads, c->backend, batch, med * 1e3, best * 1e3, batch / med);
    if (flops > 0) printf(",\"gflops\":%.1f", flops / med * 1e-9);
    printf("}\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    cfg c = {.threads = 0, .iters = 20, .blocks = 5, .warmup = 5, .backend = "auto", .bench = "all"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "cnn_bench: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--threads")) c.threads = atoi(v);
        else if (!strcmp(a, "--backend")) c.backend = v;
        else if (!strcmp(a, "--bench")) c.bench = v;
        else if (!strcmp(a, "--iters")) c.iters = atoi(v);
        else if (!strcmp(a, "--blocks")) c.blocks = atoi(v);
        else if (!strcmp(a, "--warmup")) c.warmup = atoi(v);
        else {
            fprintf(stderr, "cnn_bench: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (c.iters < 1 || c.blocks < 1 || c.warmup < 0 || c.threads < 0) {
        fprintf(stderr, "cnn_bench: --iters and --blocks must be >= 1, --warmup and --threads >= 0\n");
        return 2;
    }
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = c.threads, .seed = 1, .backend = c.backend});
    if (!ctx) die("context");
    c.threads = loom_ctx_num_threads(ctx);
    c.backend = loom_ctx_backend(ctx);
    net n;
    build(ctx, &n);
    loom_tensor *params[8];
    loom_module_parameters(n.root, params, NULL, 8);
    loom_optimizer *opt = loom_adam(ctx, 8, params, NULL);
    if (!opt) die("adam");
    bool all = !strcmp(c.bench, "all");
    /* Forward FLOPs per image: conv1, conv2, fc1, fc2 (multiply-adds x 2). */
    const double f_conv1 = 2.0 * 26 * 26 * 32 * 9, f_conv2 = 2.0 * 24 * 24 * 64 * 32 * 9;
    const double f_fc1 = 2.0 * 9216 * 128, f_fc2 = 2.0 * 128 * 10;
    const double f_fwd = f_conv1 + f_conv2 + f_fc1 + f_fc2;

    if (all || !strcmp(c.bench, "train")) {
        train_state s = {ctx, &n, opt, loom_randn(ctx, LOOM_SHAPE(64, 1, 28, 28)),
                         loom_randint(ctx, 0, 10, LOOM_SHAPE(64))};
        double med, best;
        time_it(&c, train_step, &s, c.iters, &med, &best);
        /* backward ~ 2x forward (conv1's data gradient is not needed) */
        emit(&c, "train", 64, med, best, 64 * (3 * f_fwd - f_conv1));
    }
    if (all || !strcmp(c.bench, "infer")) {
        loom_module_train(n.root, false);
        loom_no_grad_begin(ctx);
        train_state s = {ctx, &n, opt, loom_randn(ctx, LOOM_SHAPE(1000, 1, 28, 28)), NULL};
        double med, best;
        int it = c.iters / 10 > 0 ? c.iters / 10 : 1;
        time_it(&c, infer_step, &s, it, &med, &best);
        emit(&c, "infer", 1000, med, best, 1000 * f_fwd);
        loom_no_grad_end(ctx);
        loom_module_train(n.root, true);
    }
    if (all || !strcmp(c.bench, "layers")) {
        loom_tensor *x1 = loom_randn(ctx, LOOM_SHAPE(64, 1, 28, 28));
        loom_tensor *x2 = loom_randn(ctx, LOOM_SHAPE(64, 32, 26, 26));
        loom_tensor *x3 = loom_randn(ctx, LOOM_SHAPE(64, 64, 24, 24));
        loom_tensor *x4 = loom_randn(ctx, LOOM_SHAPE(64, 9216));
        loom_tensor_set_requires_grad(x2, true); /* conv2's input gradient is part of training */
        loom_tensor_set_requires_grad(x3, true);
        loom_tensor_set_requires_grad(x4, true);
        loom_tensor *p1[2], *p2[2], *p3[2];
        loom_module *conv1 = loom_module_child(n.root, "conv1"), *conv2 = loom_module_child(n.root, "conv2");
        loom_module *fc1 = loom_module_child(n.root, "fc1");
        loom_module_parameters(conv1, p1, NULL, 2);
        loom_module_parameters(conv2, p2, NULL, 2);
        loom_module_parameters(fc1, p3, NULL, 2);
        struct {
            const char *name;
            loom_tensor *x;
            loom_tensor *(*fn)(loom_tensor *, void *);
            void *p;
            loom_tensor *const *params;
            double fwd_flops, bwd_flops;
        } L[] = {
            {"conv1_relu", x1, conv_relu, conv1, p1, 64 * f_conv1, 64 * f_conv1},
            {"conv2_relu", x2, conv_relu, conv2, p2, 64 * f_conv2, 2 * 64 * f_conv2},
            {"max_pool2d", x3, pool2, NULL, NULL, 0, 0},
            {"fc1_relu", x4, linear_relu, fc1, p3, 64 * f_fc1, 2 * 64 * f_fc1},
        };
        for (size_t i = 0; i < sizeof L / sizeof L[0]; i++) {
            for (int bwd = 0; bwd < 2; bwd++) {
                layer_state s = {ctx, L[i].x, L[i].fn, L[i].p, bwd == 1, L[i].params, L[i].params ? 2 : 0};
                double med, best;
                time_it(&c, layer_step, &s, c.iters, &med, &best);
                char name[64];
                snprintf(name, sizeof name, "%s_%s", L[i].name, bwd ? "fwd_bwd" : "fwd");
                emit(&c, name, 64, med, best, L[i].fwd_flops + (bwd ? L[i].bwd_flops : 0));
            }
        }
    }
    loom_optimizer_free(opt);
    loom_module_free(n.root);
    loom_ctx_free(ctx);
    return 0;
}
