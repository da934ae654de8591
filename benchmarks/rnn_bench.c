/*
 * benchmarks/rnn_bench.c - training speed of recurrent networks in Loom,
 * to compare with benchmarks/rnn_torch.py (same models, same shapes,
 * random or sine data):
 *
 *   sine:  the seed's program (examples/rnn_sine.c): RNN/LSTM/GRU (1 -> 50,
 *          batch_first) + Linear(50, 1) on the last step, 990 windows of 10,
 *          one full-batch step (zero_grad, forward, MSE, backward, Adam,
 *          loss read back); per-op overhead dominates;
 *   large: LSTM(256 -> 512, 2 layers), sequence 50, batch 64 (time-major),
 *          loss = MSE(output, random target), one Adam step.
 *
 * After --warmup steps, --blocks blocks of --iters steps are timed; the
 * median block is reported (and the best), one JSON line each:
 *   {"impl":"loom","bench":"sine_rnn","threads":2,"steps_per_s":250.3,...}
 *
 * --replay 1 captures one step after the warm-up (loom/graph.h) and times
 * its replays instead (the loss still read back every step).
 *
 * Usage: rnn_bench [--threads T] [--backend NAME] [--bench sine|large|all]
 *                  [--cell rnn|lstm|gru|all] [--iters N] [--blocks B] [--warmup W]
 *                  [--replay 0|1]
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <loom/loom.h>

#include "benchmarks/bench_util.h"

static void die(const char *what)
{
    fprintf(stderr, "rnn_bench: %s: %s\n", what, loom_last_error());
    exit(1);
}

typedef struct state {
    loom_ctx *ctx;
    loom_module *rnn, *fc; /* fc NULL: the loss is on the whole output */
    loom_optimizer *opt;
    loom_tensor *x, *y;
    loom_graph *g;     /* --replay 1: the captured step */
    loom_tensor *loss; /* ... and its loss, kept */
} state;

/* One step; returns the loss kept past the step's scope when `keep`. */
static loom_tensor *step(state *s, bool keep)
{
    loom_scope_begin(s->ctx);
    loom_optimizer_zero_grad(s->opt);
    loom_tensor *out = loom_module_forward(s->rnn, s->x);
    if (s->fc) out = loom_module_forward(s->fc, loom_select(out, 1, loom_tensor_size(out, 1) - 1));
    loom_tensor *loss = loom_mse_loss(out, s->y, LOOM_REDUCTION_MEAN);
    double v;
    if (loom_backward(loss, NULL, NULL) || loom_optimizer_step(s->opt) || loom_tensor_item(loss, &v))
        die("training step");
    if (keep) loss = loom_scope_keep(loss);
    loom_scope_end(s->ctx);
    return keep ? loss : NULL;
}

static void train_step(void *user) { step(user, false); }

static void replay_step(void *user)
{
    state *s = user;
    double v;
    if (loom_graph_replay(s->g) || loom_tensor_item(s->loss, &v)) die("replay");
}

/* Times eager steps, or (replay) the replays of a step captured after one
 * eager step, which creates the optimizer's state. */
static void time_steps(state *s, bool replay, int warmup, int iters, int blocks, double *med, double *best)
{
    if (!replay) {
        bench_time_blocks(train_step, s, warmup, iters, blocks, med, best);
        return;
    }
    step(s, false);
    if (loom_graph_capture_begin(s->ctx)) die("capture");
    s->loss = step(s, true);
    s->g = loom_graph_capture_end(s->ctx);
    if (!s->g) die("capture");
    bench_time_blocks(replay_step, s, warmup, iters, blocks, med, best);
    loom_tensor_free(s->loss);
    loom_graph_free(s->g);
}

static void setup_opt(state *s)
{
    loom_tensor *ps[32];
    int n = loom_module_parameters(s->rnn, ps, NULL, 32);
    if (s->fc) n += loom_module_parameters(s->fc, ps + n, NULL, 32 - n);
    loom_adam_options ao = loom_adam_defaults();
    ao.lr = 0.01;
    s->opt = loom_adam(s->ctx, n, ps, &ao);
    if (!s->opt) die("adam");
}

static void finish(state *s)
{
    loom_optimizer_free(s->opt);
    loom_module_free(s->rnn);
    loom_module_free(s->fc);
    loom_ctx_free(s->ctx);
}

static loom_ctx *make_ctx(int threads, const char *backend)
{
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = threads, .seed = 1, .backend = backend});
    if (!ctx) die("context");
    return ctx;
}

static void emit(const char *bench, int threads, bool replay, double med, double best)
{
    printf("{\"impl\":\"loom\",\"bench\":\"%s\",\"threads\":%d,\"replay\":%s,\"ms\":%.4f,\"best_ms\":%.4f,"
           "\"steps_per_s\":%.2f}\n",
           bench, threads, replay ? "true" : "false", med * 1e3, best * 1e3, 1.0 / med);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int threads = 0, iters = 10, blocks = 5, warmup = 3, replay = 0;
    const char *backend = NULL, *bench = "all", *cell = "all";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "rnn_bench: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--bench")) bench = v;
        else if (!strcmp(a, "--cell")) cell = v;
        else if (!strcmp(a, "--iters")) iters = atoi(v);
        else if (!strcmp(a, "--blocks")) blocks = atoi(v);
        else if (!strcmp(a, "--warmup")) warmup = atoi(v);
        else if (!strcmp(a, "--replay")) replay = atoi(v);
        else {
            fprintf(stderr, "rnn_bench: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (iters < 1 || blocks < 1 || warmup < 0 || threads < 0 || replay < 0 || replay > 1) {
        fprintf(stderr, "rnn_bench: --iters and --blocks must be >= 1, --warmup and --threads >= 0, --replay 0 or 1\n");
        return 2;
    }
    double med, best;
    if (!strcmp(bench, "all") || !strcmp(bench, "sine")) {
        static const char *const names[] = {"rnn", "lstm", "gru"};
        static const loom_rnn_mode modes[] = {LOOM_RNN_TANH, LOOM_LSTM, LOOM_GRU};
        enum { P = 1000, W = 10, S = P - W };
        static float xs[S * W], ys[S], data[P];
        for (int i = 0; i < P; i++) data[i] = (float)sin(100.0 * i / (P - 1));
        for (int i = 0; i < S; i++) {
            memcpy(xs + i * W, data + i, sizeof(float) * W);
            ys[i] = data[i + W];
        }
        for (int k = 0; k < 3; k++) {
            if (strcmp(cell, "all") && strcmp(cell, names[k])) continue;
            state s = {.ctx = make_ctx(threads, backend)};
            s.x = loom_tensor_from_array(s.ctx, LOOM_FLOAT32, xs, LOOM_SHAPE(S, W, 1));
            s.y = loom_tensor_from_array(s.ctx, LOOM_FLOAT32, ys, LOOM_SHAPE(S, 1));
            s.rnn = loom_rnn_module(s.ctx, modes[k], 1, 50, &(loom_rnn_opts){.batch_first = true});
            s.fc = loom_linear(s.ctx, 50, 1, true);
            if (!s.x || !s.y || !s.rnn || !s.fc) die("sine setup");
            setup_opt(&s);
            time_steps(&s, replay, warmup, iters, blocks, &med, &best);
            char name[32];
            snprintf(name, sizeof name, "sine_%s", names[k]);
            emit(name, loom_ctx_num_threads(s.ctx), replay, med, best);
            finish(&s);
        }
    }
    if (!strcmp(bench, "all") || !strcmp(bench, "large")) {
        state s = {.ctx = make_ctx(threads, backend)};
        s.x = loom_randn(s.ctx, LOOM_SHAPE(50, 64, 256));
        s.y = loom_randn(s.ctx, LOOM_SHAPE(50, 64, 512));
        s.rnn = loom_rnn_module(s.ctx, LOOM_LSTM, 256, 512, &(loom_rnn_opts){.num_layers = 2});
        if (!s.x || !s.y || !s.rnn || loom_tensor_eval(s.x) || loom_tensor_eval(s.y)) die("large setup");
        setup_opt(&s);
        time_steps(&s, replay, warmup, iters, blocks, &med, &best);
        emit("large_lstm", loom_ctx_num_threads(s.ctx), replay, med, best);
        finish(&s);
    }
    return 0;
}
