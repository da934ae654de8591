/*
 * tests/check_exec.c - the DAG on the work-stealing pool: random DAGs give
 * the same values with 1, 2 and more workers than cores; errors stop a
 * parallel run cleanly; a training step is bitwise reproducible.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "config.h"

#include "tests/check_suites.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "graph/autograd_impl.h"
#ifdef LOOM_HAVE_ONEDNN
#include "backends/onednn/onednn.h"
#endif
#include "graph/capture.h"
#include "loom/graph.h"
#include "graph/eval.h"
#include "graph/tensor_impl.h"
#include "ops/ops_internal.h"
#include "io/io_impl.h"
#include "runtime/cores.h"
#include "runtime/pool.h"
#include "runtime/topology.h"

#include <pthread.h>
#include <stdatomic.h>

static loom_ctx *workers_ctx(int workers, int threads)
{
    loom_ctx_options o = {.num_threads = threads, .num_workers = workers, .seed = 99};
    loom_ctx *ctx = loom_ctx_create(&o);
    ck_assert_msg(ctx != NULL, "%s", loom_last_error());
    ck_assert_int_eq(loom_ctx_num_workers(ctx), workers);
    return ctx;
}

/* A deterministic pseudo-random sequence (the DAG's shape must not depend
 * on Loom's generator). */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Builds a random DAG of `n` nodes over [16, 16] tensors: each node applies
 * a random op to 1-3 random earlier nodes (random fan-in; fan-out follows),
 * and the result is the sum of the last 8 nodes. Returns its values. */
static void random_dag(loom_ctx *ctx, int n, uint64_t seed, float *out)
{
    loom_scope_begin(ctx);
    loom_manual_seed(ctx, 5);
    loom_tensor **t = malloc(sizeof *t * (size_t)n);
    ck_assert(t);
    for (int i = 0; i < 4; i++) t[i] = loom_rand(ctx, LOOM_SHAPE(16, 16));
    uint64_t s = seed;
    for (int i = 4; i < n; i++) {
        loom_tensor *a = t[next_rand(&s) % (uint64_t)i];
        loom_tensor *b = t[next_rand(&s) % (uint64_t)i];
        loom_tensor *c = t[next_rand(&s) % (uint64_t)i];
        switch (next_rand(&s) % 7) {
        case 0: t[i] = loom_add(a, b); break;
        case 1: t[i] = loom_mul_scalar(loom_sub(a, b), 0.5); break;
        case 2: t[i] = loom_tanh(loom_add(a, loom_mul(b, c))); break;
        case 3: t[i] = loom_mul_scalar(loom_matmul(a, b), 1.0 / 16); break;
        case 4: t[i] = loom_where(loom_gt(a, b), c, a); break;
        case 5: t[i] = loom_add(a, loom_mean(b, LOOM_DIMS(1), true)); break;
        default: t[i] = loom_sigmoid(loom_transpose(a, 0, 1)); break;
        }
        ck_assert_msg(t[i] != NULL, "%s", loom_last_error());
    }
    loom_tensor *r = t[n - 1];
    for (int i = n - 8; i < n - 1; i++) r = loom_add(r, t[i]);
    ck_assert_int_eq(loom_tensor_copy_to(r, out, sizeof(float) * 256), LOOM_OK);
    free(t);
    loom_scope_end(ctx);
}

START_TEST(test_random_dags_match_serial)
{
    static float serial[256], par[256];
    const int sizes[] = {50, 500, 3000};
    for (int k = 0; k < 3; k++) {
        loom_ctx *c1 = workers_ctx(1, 1);
        random_dag(c1, sizes[k], 1000 + (uint64_t)k, serial);
        loom_ctx_free(c1);
        const int workers[] = {2, 3, 8}; /* 8: more workers than cores */
        for (int w = 0; w < 3; w++) {
            loom_ctx *c = workers_ctx(workers[w], workers[w]);
            random_dag(c, sizes[k], 1000 + (uint64_t)k, par);
            ck_assert_msg(memcmp(serial, par, sizeof serial) == 0, "dag of %d nodes with %d workers differs",
                          sizes[k], workers[w]);
            loom_ctx_free(c);
        }
    }
}
END_TEST

START_TEST(test_many_independent_nodes)
{
    /* Wide rather than deep: 2000 independent chains of 3 ops. */
    loom_ctx *c1 = workers_ctx(1, 1), *c4 = workers_ctx(4, 4);
    static float a[2000], b[2000];
    loom_ctx *cs[2] = {c1, c4};
    float *outs[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        loom_ctx *ctx = cs[k];
        loom_tensor *x = loom_arange(ctx, LOOM_FLOAT32, 0, 2000, 1);
        loom_tensor *parts[2000];
        for (int i = 0; i < 2000; i++)
            parts[i] = loom_exp(loom_mul_scalar(loom_slice(x, 0, i, i + 1, 1), 0.001));
        ck_assert_int_eq(loom_tensor_copy_to(loom_cat(parts, 2000, 0), outs[k], sizeof a), LOOM_OK);
    }
    for (int i = 0; i < 2000; i++) ck_assert_float_eq_tol(a[i], expf(0.001f * (float)i), 1e-5);
    ck_assert(memcmp(a, b, sizeof a) == 0);
    loom_ctx_free(c1);
    loom_ctx_free(c4);
}
END_TEST

START_TEST(test_error_stops_parallel_run)
{
    loom_ctx *ctx = workers_ctx(4, 4);
    loom_tensor *src = loom_rand(ctx, LOOM_SHAPE(5, 3));
    loom_tensor *parts[64];
    for (int i = 0; i < 64; i++) {
        /* One bad index among many independent nodes. */
        loom_tensor *idx = loom_tensor_from_array(ctx, LOOM_INT64, (const int64_t[]){i == 40 ? 9 : i % 5},
                                                  LOOM_SHAPE(1));
        parts[i] = loom_tanh(loom_index_select(src, 0, idx));
    }
    loom_tensor *all = loom_cat(parts, 64, 0);
    ck_assert_int_eq(loom_tensor_eval(all), LOOM_ERR_RANGE);
    ck_assert_msg(strstr(loom_last_error(), "index 9 is out of range for dim 0 of size 5"), "%s", loom_last_error());
    /* The pool is still usable, and the good parts can be computed. */
    for (int r = 0; r < 3; r++) ck_assert_int_eq(loom_tensor_eval(loom_add(parts[3], parts[7])), LOOM_OK);
    ck_assert_int_eq(loom_tensor_eval(all), LOOM_ERR_RANGE);
    loom_ctx_free(ctx);
}
END_TEST

/* One training step of a small MLP; returns the updated parameters. */
static void train_steps(int workers, int steps, float *w_out)
{
    loom_ctx *ctx = workers_ctx(workers, workers);
    loom_manual_seed(ctx, 3);
    loom_module *net = loom_sequential(ctx, 3, (loom_module *[]){loom_linear(ctx, 8, 32, true),
                                                                 loom_tanh_module(ctx), loom_linear(ctx, 32, 1, true)});
    ck_assert(net);
    loom_tensor *params[4];
    ck_assert_int_eq(loom_module_parameters(net, params, NULL, 4), 4);
    loom_optimizer *opt = loom_adam(ctx, 4, params, NULL);
    loom_tensor *x = loom_rand(ctx, LOOM_SHAPE(64, 8));
    loom_tensor *y = loom_rand(ctx, LOOM_SHAPE(64, 1));
    for (int s = 0; s < steps; s++) {
        loom_scope_begin(ctx);
        loom_optimizer_zero_grad(opt);
        loom_tensor *loss = loom_mse_loss(loom_module_forward(net, x), y, LOOM_REDUCTION_MEAN);
        ck_assert_int_eq(loom_backward(loss, NULL, NULL), LOOM_OK);
        ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
        loom_scope_end(ctx);
    }
    ck_assert_int_eq(loom_tensor_copy_to(params[0], w_out, sizeof(float) * 256), LOOM_OK);
    loom_optimizer_free(opt);
    loom_module_free(net);
    loom_ctx_free(ctx);
}

START_TEST(test_training_bitwise_reproducible)
{
    static float first[256], again[256];
    train_steps(2, 5, first);
    for (int run = 0; run < 20; run++) {
        train_steps(2, 5, again);
        ck_assert_msg(memcmp(first, again, sizeof first) == 0, "run %d differs", run);
    }
    train_steps(1, 5, again); /* and the serial run gives the same bits */
    ck_assert(memcmp(first, again, sizeof first) == 0);
}
END_TEST

START_TEST(test_worker_options)
{
    assert_error(loom_ctx_create(&(loom_ctx_options){.num_workers = -1}), LOOM_ERR_INVALID_ARG,
                 "ctx_create: num_workers is -1");
    setenv("LOOM_NUM_WORKERS", "x", 1);
    assert_error(loom_ctx_create(NULL), LOOM_ERR_INVALID_ARG, "LOOM_NUM_WORKERS=\"x\"");
    setenv("LOOM_NUM_WORKERS", "3", 1);
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 3});
    ck_assert_int_eq(loom_ctx_num_workers(ctx), 3);
    loom_ctx *small = loom_ctx_create(&(loom_ctx_options){.num_threads = 2}); /* lowered to the threads */
    ck_assert_int_eq(loom_ctx_num_workers(small), 2);
    loom_ctx_free(small);
    /* `loom info`'s report names the split and places every worker. */
    char *text = loom_ctx_describe(ctx);
    ck_assert_msg(text != NULL, "%s", loom_last_error());
    ck_assert_msg(strstr(text, "Loom 0.1.0") && strstr(text, "3 workers (work-stealing scheduler") && strstr(text, "workers: 3"),
                  "%s", text);
    free(text);
#ifdef LOOM_HAVE_ONEDNN
    /* ... and the convolution policies in force. */
    const int algo = loom__onednn_conv_algo();
    loom__onednn_set_conv_algo(LOOM__ONEDNN_ALGO_DIRECT);
    text = loom_ctx_describe(ctx);
    ck_assert_msg(text && strstr(text, "convs:    oneDNN layout ") && strstr(text, ", algorithm direct\n"), "%s", text);
    free(text);
    loom__onednn_set_conv_algo(LOOM__ONEDNN_ALGO_AUTO);
    text = loom_ctx_describe(ctx);
    ck_assert_msg(text && strstr(text, loom__onednn_isa_avx512() ? "algorithm auto (Winograd" : "algorithm auto (direct"),
                  "%s", text);
    free(text);
    loom__onednn_set_conv_algo(algo);
#endif
    loom_ctx_free(ctx);
    unsetenv("LOOM_NUM_WORKERS");
}
END_TEST

/* ---- timeline tracing ------------------------------------------------------ */

static const loom__json *member(const loom__json *o, const char *key)
{
    for (size_t i = 0; o->kind == LOOM__JSON_OBJECT && i < o->n; i++)
        if (strcmp(o->members[i].key, key) == 0) return &o->members[i].value;
    return NULL;
}

/* A traced parallel run writes valid trace-event JSON with one complete
 * ("X") slice per node run, on at most num_workers threads, and the
 * scheduler's events: idle slices (a worker parked between the two runs
 * below) and steal instants naming both workers; errors. */
START_TEST(test_trace_file)
{
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 2, .num_workers = 2});
    ck_assert_ptr_nonnull(ctx);
    ck_assert_int_eq(loom_trace_stop(ctx, NULL), LOOM_ERR_STATE);
    ck_assert_int_eq(loom_trace_start(ctx), LOOM_OK);
    ck_assert_int_eq(loom_trace_start(ctx), LOOM_ERR_STATE);
    loom_ctx_stats before, after;
    loom_ctx_get_stats(ctx, &before);
    loom_tensor *ys[16];
    for (int b = 0; b < 16; b++) {
        loom_tensor *x = loom_rand(ctx, LOOM_SHAPE(64, 64));
        ys[b] = loom_sum(loom_tanh(loom_matmul(x, x)), 0, NULL, false);
    }
    ck_assert_int_eq(loom_tensor_eval(loom_sum(loom_stack(ys, 16, 0), 0, NULL, false)), LOOM_OK);
    /* Worker 1 parks within microseconds of running dry; the next run
     * wakes it, and it records the idle interval as it wakes, which may be
     * after that run ended: the second pause leaves it the time. */
    nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
    for (int b = 0; b < 16; b++) {
        loom_tensor *x = loom_rand(ctx, LOOM_SHAPE(64, 64));
        ys[b] = loom_sum(loom_tanh(loom_matmul(x, x)), 0, NULL, false);
    }
    ck_assert_int_eq(loom_tensor_eval(loom_sum(loom_stack(ys, 16, 0), 0, NULL, false)), LOOM_OK);
    nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
    loom_ctx_get_stats(ctx, &after);
    char dir[] = "/tmp/loom_trace_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[64], bad[80];
    snprintf(path, sizeof path, "%s/t.json", dir);
    snprintf(bad, sizeof bad, "%s/missing/t.json", dir);
    ck_assert_int_eq(loom_trace_stop(ctx, path), LOOM_OK);
    /* A path that cannot be written: an error, and no file left behind. */
    ck_assert_int_eq(loom_trace_start(ctx), LOOM_OK);
    ck_assert_int_eq(loom_trace_stop(ctx, bad), LOOM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "missing"));

    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    static char text[1 << 20];
    size_t len = fread(text, 1, sizeof text, f);
    fclose(f);
    ck_assert_uint_lt(len, sizeof text);
    loom__json doc;
    ck_assert_msg(loom__json_parse(text, len, "trace", &doc) == LOOM_OK, "%s", loom_last_error());
    const loom__json *events = member(&doc, "traceEvents");
    ck_assert_ptr_nonnull(events);
    ck_assert_int_eq(events->kind, LOOM__JSON_ARRAY);
    int64_t slices = 0, idle = 0;
    bool tid_seen[128] = {false};
    for (size_t i = 0; i < events->n; i++) {
        const loom__json *e = &events->items[i], *ph = member(e, "ph"), *cat = member(e, "cat");
        ck_assert_ptr_nonnull(ph);
        if (cat && !strcmp(cat->str, "scheduler")) {
            const loom__json *args = member(e, "args"), *name = member(e, "name");
            ck_assert(args && name && member(e, "ts") && member(e, "tid"));
            const loom__json *w = member(args, "worker");
            ck_assert(w && w->is_uint && w->uint < 2);
            if (!strcmp(name->str, "idle")) {
                ck_assert_str_eq(ph->str, "X");
                ck_assert_ptr_nonnull(member(e, "dur"));
                idle++;
            } else if (!strcmp(name->str, "wait for cores")) {
                ck_assert_str_eq(ph->str, "X");
                const loom__json *width = member(args, "width");
                ck_assert(member(e, "dur") && width && width->is_uint && width->uint >= 1 && width->uint <= 2);
            } else {
                ck_assert_str_eq(name->str, "steal");
                ck_assert_str_eq(ph->str, "i");
                const loom__json *from = member(args, "from_worker");
                ck_assert(from && from->is_uint && from->uint < 2 && from->uint != w->uint);

            }
            continue;
        }
        if (strcmp(ph->str, "X") != 0) continue;
        slices++;
        ck_assert_ptr_nonnull(member(e, "name"));
        ck_assert_ptr_nonnull(member(e, "ts"));
        ck_assert_ptr_nonnull(member(e, "dur"));
        const loom__json *tid = member(e, "tid");
        ck_assert(tid && tid->is_uint && tid->uint < 128);
        tid_seen[tid->uint] = true;
    }
    /* Every node that ran a kernel; views and leaves run none. */
    ck_assert_int_gt(slices, 16 * 3);
    /* A worker records its idle slice when it wakes: two parks of worker 1
     * mean at least one wake while the trace ran (a loaded machine may
     * keep it from parking at all). */
    loom__pool_stats ps;
    loom__pool_get_stats(ctx->pool, 1, &ps);
    if (ps.parks >= 2) ck_assert_int_ge(idle, 1);
    ck_assert_int_le(slices, after.nodes_run - before.nodes_run);
    int threads = 0;
    for (int i = 0; i < 128; i++) threads += tid_seen[i];
    ck_assert_int_ge(threads, 1);
    ck_assert_int_le(threads, 3); /* 2 workers, and the caller may run nodes */
    loom__json_free(&doc);
    remove(path);
    rmdir(dir);
    loom_ctx_free(ctx);
}
END_TEST


/* FLOPs are counted exactly for matrix products and convolutions (each
 * direction), not for elementwise ops; the profile counts calls, time and
 * FLOPs per op only between start and stop. */
START_TEST(test_profile_flops)
{
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 1});
    loom_ctx_stats s0, s1;
    char *empty = loom_profile_report(ctx);
    ck_assert_ptr_nonnull(empty);
    ck_assert_msg(strstr(empty, "loom profile: 0.000 s") && !strstr(empty, "matmul"), "%s", empty);
    free(empty);

    loom_ctx_get_stats(ctx, &s0);
    ck_assert_int_eq(loom_tensor_eval(loom_matmul(loom_rand(ctx, LOOM_SHAPE(8, 16)), loom_rand(ctx, LOOM_SHAPE(16, 4)))),
                     LOOM_OK);
    loom_ctx_get_stats(ctx, &s1);
    ck_assert_int_eq(s1.flops - s0.flops, 2 * 8 * 16 * 4);

    /* x [2, 3, 9, 9], w [5, 3, 3, 3], stride 2, padding 1: y [2, 5, 5, 5];
     * 2 * 250 outputs * 27 = 13500 each for the forward, backward data and
     * backward weights; relu and the sum add none. */
    ck_assert_int_eq(loom_profile_start(ctx), LOOM_OK);
    loom_tensor *x = loom_rand(ctx, LOOM_SHAPE(2, 3, 9, 9)), *w = loom_rand(ctx, LOOM_SHAPE(5, 3, 3, 3));
    loom_tensor_set_requires_grad(x, true);
    loom_tensor_set_requires_grad(w, true);
    loom_conv2d_opts o = {.stride = {2, 2}, .padding = {1, 1}};
    loom_tensor *loss = loom_sum(loom_relu(loom_conv2d(x, w, NULL, &o)), 0, NULL, false);
    loom_ctx_get_stats(ctx, &s0);
    ck_assert_int_eq(loom_backward(loss, NULL, NULL), LOOM_OK);
    loom_ctx_get_stats(ctx, &s1);
    ck_assert_int_eq(s1.flops - s0.flops, 3 * 13500);
    ck_assert_int_eq(loom_profile_stop(ctx), LOOM_OK);
    /* Not counted: stopped. */
    ck_assert_int_eq(loom_tensor_eval(loom_conv2d(x, w, NULL, &o)), LOOM_OK);
    char *table = loom_profile_report(ctx);
    ck_assert_ptr_nonnull(table);
    ck_assert_msg(strstr(table, " GFLOP\n") && strstr(table, "GFLOP/s"), "%s", table);
    const char *conv = strstr(table, "\nconv2d ");
    ck_assert_msg(conv != NULL, "%s", table);
    long calls = 0;
    ck_assert_int_eq(sscanf(conv + 1, "conv2d %ld", &calls), 1);
    ck_assert_int_eq(calls, 1);
    ck_assert_msg(strstr(table, "conv2d_backward_weight") && strstr(table, "relu"), "%s", table);
    free(table);
    ck_assert_int_eq(loom_profile_start(NULL), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_null(loom_profile_report(NULL));
    loom_ctx_free(ctx);
}
END_TEST

/* ---- host calls and the backward hook (what dist/ is built on) ------------ */

static int host_order[8], host_calls;

static loom_status host_double(void *user, float *data, int64_t n)
{
    host_order[host_calls++ & 7] = (int)(intptr_t)user;
    for (int64_t i = 0; i < n; i++) data[i] *= 2.0f;
    return LOOM_OK;
}

static loom_status host_fail(void *user, float *data, int64_t n)
{
    (void)user, (void)data, (void)n;
    return loom__set_error(LOOM_ERR_STATE, "host callback refused");
}

/* Replaces every gradient of the pass by a host_call of it (x2). */
static loom_status double_grads(void *user, size_t n, loom_tensor *const *leaves, loom_tensor **grads)
{
    (void)leaves;
    loom_tensor *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        int64_t shape[LOOM_MAX_DIMS];
        loom_tensor_shape(grads[i], shape);
        loom_tensor *h = loom__host_call(grads[i], prev ? 1 : 0, &prev, host_double, (void *)(intptr_t)(i + 1));
        grads[i] = loom_reshape(h, loom_tensor_ndim(grads[i]), shape);
        prev = h;
        *(int *)user += 1;
    }
    return LOOM_OK;
}

START_TEST(test_host_call_and_hook)
{
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 2, .num_workers = 2});
    /* Two chained host calls: both run, in dependency order, on the data. */
    host_calls = 0;
    loom_tensor *x = loom_tensor_from_array(ctx, LOOM_FLOAT32, (const float[]){1, 2, 3, 4}, LOOM_SHAPE(2, 2));
    loom_tensor *a = loom__host_call(x, 0, NULL, host_double, (void *)1);
    loom_tensor *b = loom__host_call(loom_add(x, x), 1, &a, host_double, (void *)2);
    float out[4];
    ck_assert_int_eq(loom_tensor_copy_to(b, out, sizeof out), LOOM_OK);
    ck_assert(out[0] == 4 && out[3] == 16);
    ck_assert_int_eq(host_calls, 2);
    ck_assert(host_order[0] == 1 && host_order[1] == 2);
    ck_assert_int_eq(loom_tensor_ndim(b), 1); /* flattened */
    /* A failing callback fails its node with its message. */
    ck_assert_int_eq(loom_tensor_eval(loom__host_call(x, 0, NULL, host_fail, NULL)), LOOM_ERR_STATE);
    ck_assert_msg(strstr(loom_last_error(), "host callback refused"), "%s", loom_last_error());

    /* The hook sees this pass's gradients and its replacements are what
     * accumulates: w.grad = 2 * dL/dw, both times. */
    loom_tensor *w = loom_tensor_from_array(ctx, LOOM_FLOAT32, (const float[]){1, -2, 3}, LOOM_SHAPE(3));
    loom_tensor_set_requires_grad(w, true);
    int hooked = 0;
    for (int pass = 1; pass <= 2; pass++) {
        loom_scope_begin(ctx);
        loom_tensor *loss = loom_sum(loom_mul(w, w), 0, NULL, false); /* dL/dw = 2w */
        ck_assert_int_eq(loom__backward_hooked(loss, NULL, NULL, double_grads, &hooked, pass - 1), LOOM_OK);
        float g[3];
        ck_assert_int_eq(loom_tensor_copy_to(loom_tensor_grad(w), g, sizeof g), LOOM_OK);
        ck_assert(g[0] == 4.0f * pass && g[1] == -8.0f * pass && g[2] == 12.0f * pass);
        loom_scope_end(ctx);
    }
    ck_assert_int_eq(hooked, 2);
    loom_ctx_free(ctx);
}
END_TEST

/* Without MPI every loom_dist call says so; with it, NULL handles are
 * refused (MPI itself is exercised by tests/dist.sh under mpirun). */
START_TEST(test_dist_without_mpi)
{
    ck_assert_int_eq(loom_dist_rank(NULL), 0);
    ck_assert_int_eq(loom_dist_size(NULL), 1);
    if (!loom_dist_available()) {
        loom_dist *d = (loom_dist *)1;
        ck_assert_int_eq(loom_dist_init(NULL, NULL, NULL, &d), LOOM_ERR_STATE);
        ck_assert_ptr_null(d);
        ck_assert_msg(strstr(loom_last_error(), "without MPI") && strstr(loom_last_error(), "--with-mpi"), "%s",
                      loom_last_error());
        ck_assert_int_eq(loom_dist_backward(NULL, NULL, NULL), LOOM_ERR_STATE);
    } else {
        ck_assert_int_eq(loom_dist_backward(NULL, NULL, NULL), LOOM_ERR_INVALID_ARG);
        ck_assert_int_eq(loom_dist_barrier(NULL), LOOM_ERR_INVALID_ARG);
        ck_assert_int_eq(loom_dist_init(NULL, NULL, NULL, NULL), LOOM_ERR_INVALID_ARG);
    }
}
END_TEST

/* ---- the core budget --------------------------------------------------- */

START_TEST(test_cores_basics)
{
    loom__cores *c = loom__cores_create(2, (int[]){3, 0});
    ck_assert(c);
    ck_assert_int_eq(loom__cores_total(c, 0), 3);
    ck_assert_int_eq(loom__cores_total(c, 1), 3); /* an empty domain is served by domain 0 */
    ck_assert_int_eq(loom__cores_take(c, 0, 2), 2);
    ck_assert_int_eq(loom__cores_take(c, 0, 5), 1); /* only one left: flexible takes it */
    ck_assert_int_eq(loom__cores_free_now(c, 0), 0);
    loom__cores_give(c, 0, 3);
    ck_assert_int_eq(loom__cores_take_exact(c, 0, 9), 3); /* clamped to the domain */
    loom__cores_give(c, 0, 3);
    ck_assert_int_eq(loom__cores_free_now(c, 0), 3);
    loom__cores_free(c);
    /* Widths: 1, 2, 4, ... and the total. */
    const int want[][3] = {{1, 16, 1}, {3, 16, 2}, {7, 16, 4}, {15, 16, 8}, {16, 16, 16}, {5, 6, 4}, {6, 6, 6}, {2, 3, 2}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_int_eq(loom__cores_width(want[i][0], want[i][1]), want[i][2]);
    /* Wide-width policies: want, total, then big / planned / full. */
    const int pol[][5] = {{1, 16, 1, 1, 1},   {2, 16, 2, 2, 16}, {3, 16, 2, 2, 16}, {4, 16, 16, 4, 16},
                          {7, 16, 16, 4, 16}, {40, 16, 16, 16, 16}, {3, 2, 2, 2, 2}, {5, 6, 6, 4, 6}};
    const char *names[] = {"big", "planned", "full"};
    ck_assert_int_eq(loom__wide_width_policy(NULL), LOOM__WIDE_BIG);
    ck_assert_int_eq(loom__wide_width_policy("bogus"), LOOM__WIDE_BIG);
    for (size_t i = 0; i < sizeof pol / sizeof pol[0]; i++)
        for (int p = 0; p < 3; p++)
            ck_assert_msg(loom__wide_width(loom__wide_width_policy(names[p]), pol[i][0], pol[i][1]) == pol[i][2 + p],
                          "%s: want %d of %d", names[p], pol[i][0], pol[i][1]);
}
END_TEST

typedef struct cores_job {
    loom__cores *c;
    atomic_int held, max_held;
    int seed;
} cores_job;

static void *cores_hammer(void *arg)
{
    cores_job *j = arg;
    uint64_t s = (uint64_t)__atomic_fetch_add(&j->seed, 1, __ATOMIC_RELAXED) * 7919 + 1;
    for (int i = 0; i < 3000; i++) {
        int want = 1 + (int)(next_rand(&s) % 5);
        bool exact = next_rand(&s) % 4 == 0;
        int k = exact ? loom__cores_take_exact(j->c, 0, want) : loom__cores_take(j->c, 0, want);
        ck_assert(k >= 1 && k <= want && (!exact || k == (want < 4 ? want : 4)));
        int now = atomic_fetch_add(&j->held, k) + k;
        int m = atomic_load(&j->max_held);
        while (now > m && !atomic_compare_exchange_weak(&j->max_held, &m, now)) {
        }
        if (i % 64 == 0) sched_yield();
        atomic_fetch_sub(&j->held, k);
        loom__cores_give(j->c, 0, k);
    }
    return NULL;
}

/* 8 threads on a budget of 4, flexible and exact takers mixed: never more
 * than 4 tokens out, every exact taker served (no deadlock, no starvation:
 * the test ends), and every token back at the end. */
START_TEST(test_cores_stress)
{
    cores_job j = {.c = loom__cores_create(1, (int[]){4})};
    ck_assert(j.c);
    atomic_init(&j.held, 0);
    atomic_init(&j.max_held, 0);
    pthread_t th[8];
    for (int i = 0; i < 8; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, cores_hammer, &j), 0);
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    ck_assert_int_le(atomic_load(&j.max_held), 4);
    ck_assert_int_ge(atomic_load(&j.max_held), 2);
    ck_assert_int_eq(loom__cores_free_now(j.c, 0), 4);
    loom__cores_free(j.c);
}
END_TEST

/* loom__dag_alone on DAGs given as edge lists over nodes in a topological
 * order; want: the alone nodes as a string of 0/1. */
static void check_alone(int n, const int (*edges)[2], int ne, const char *want)
{
    int64_t off[16] = {0}, succ[32], fill[16];
    ck_assert(n < 16 && ne <= 32);
    for (int e = 0; e < ne; e++) off[edges[e][0] + 1]++;
    for (int i = 0; i < n; i++) off[i + 1] += off[i];
    for (int i = 0; i < n; i++) fill[i] = off[i];
    for (int e = 0; e < ne; e++) succ[fill[edges[e][0]]++] = edges[e][1];
    bool alone[16];
    ck_assert(loom__dag_alone((size_t)n, off, succ, alone));
    char got[17];
    for (int i = 0; i < n; i++) got[i] = alone[i] ? '1' : '0';
    got[n] = 0;
    ck_assert_msg(strcmp(got, want) == 0, "alone %s, expected %s", got, want);
}

/* A node nothing can run beside (every other node its ancestor or its
 * descendant) is found, in O(n + edges), and takes every token: a chain
 * of small nodes on 2 workers runs each node 2 wide, as with the
 * scheduler off, where it ran 1 wide beside idle cores. */
START_TEST(test_alone_nodes)
{
    check_alone(4, (const int[][2]){{0, 1}, {1, 2}, {2, 3}}, 3, "1111");           /* chain */
    check_alone(4, (const int[][2]){{0, 1}, {0, 2}, {1, 3}, {2, 3}}, 4, "1001");   /* diamond */
    check_alone(4, (const int[][2]){{0, 2}, {1, 3}}, 2, "0000");                   /* two chains */
    check_alone(4, (const int[][2]){{0, 1}, {0, 2}, {1, 3}}, 3, "1000");           /* a side sink */
    check_alone(5, (const int[][2]){{0, 1}, {0, 2}, {1, 3}, {2, 3}, {3, 4}, {0, 4}}, 6, "10011");
    check_alone(3, (const int[][2]){{0, 2}, {0, 2}, {1, 2}}, 3, "001");            /* a duplicate edge */
    check_alone(1, NULL, 0, "1");

    loom_ctx *ctx = workers_ctx(2, 2);
    ctx->check_running = true;
    loom_tensor *x = loom_rand(ctx, LOOM_SHAPE(64));
    ck_assert_int_eq(loom_tensor_eval(x), LOOM_OK);
    loom_tensor *y = x;
    for (int i = 0; i < 8; i++) y = loom_add_scalar(loom_mul_scalar(y, 0.5), 1.0);
    ck_assert_int_eq(loom__node_want(y, 2), 1); /* narrow by its work */
    ck_assert_int_eq(loom_tensor_eval(y), LOOM_OK);
    ck_assert_int_eq(atomic_load(&ctx->running_max), 2);
    loom_ctx_free(ctx);
}
END_TEST

/* The bound on the scheduler itself: random DAGs whose nodes want 1 to all
 * of the threads (matmuls of several sizes among small ops), with 4 workers
 * on a budget of 4 (on a 2-core machine, so more threads than cores): the
 * threads running nodes, workers and their kernels' teams counted
 * together, never exceed 4; some node ran wide and several ran at once. */
START_TEST(test_core_budget_bound)
{
    loom_ctx *ctx = workers_ctx(4, 4);
    ctx->check_running = true;
    loom_manual_seed(ctx, 8);
    uint64_t s = 11;
    for (int rep = 0; rep < 3; rep++) {
        loom_scope_begin(ctx);
        loom_tensor *acc[6];
        for (int b = 0; b < 6; b++) acc[b] = loom_rand(ctx, LOOM_SHAPE(8, 8));
        for (int i = 0; i < 60; i++) {
            int b = (int)(next_rand(&s) % 6);
            int64_t n = (int64_t[]){8, 64, 160, 256}[next_rand(&s) % 4];
            loom_tensor *x = loom_rand(ctx, LOOM_SHAPE(n, n));
            loom_tensor *y = loom_sum(loom_matmul(x, x), 0, NULL, false);
            acc[b] = loom_add(acc[b], y);
            ck_assert(acc[b]);
        }
        loom_tensor *r = acc[0];
        for (int b = 1; b < 6; b++) r = loom_add(r, acc[b]);
        ck_assert_int_eq(loom_tensor_eval(r), LOOM_OK);
        loom_scope_end(ctx);
    }
    int max = atomic_load(&ctx->running_max);
    ck_assert_msg(max <= 4 && max >= 2, "at most %d threads ran nodes at once", max);
    ck_assert_int_eq(atomic_load(&ctx->running), 0);
    loom_ctx_free(ctx);
}
END_TEST

#ifdef LOOM_HAVE_HWLOC
/* NUMA on a synthetic two-node machine ("pack:2 [numa] core:2 pu:1", 4
 * workers on 2 cores): routing of ready nodes to their home node, output
 * placement on the node of the worker that ran them, and results equal to
 * a serial run. */
static int fixed_home(void *node, void *user)
{
    (void)user;
    return *(int *)((loom__dag_node *)node + 1);
}

typedef struct numa_run {
    loom_tensor **t;
    int *ran_numa;
} numa_run;

static loom_status run_and_note(loom__worker *w, void *task, void *user)
{
    numa_run *r = user;
    const intptr_t i = (intptr_t)task - 1;
    r->ran_numa[i] = loom__worker_numa(w);
    return loom__run_node(r->t[i], w);
}

/* Runs NT fresh nodes on `pool` (context ctx) as roots; each output must
 * be a block of the NUMA node its worker is on. Counts runs per node. */
static void numa_place(loom_ctx *ctx, loom__pool *pool, int on[2])
{
    enum { NT = 16 };
    loom_tensor *t[NT];
    int ran[NT];
    void *roots[NT];
    for (int i = 0; i < NT; i++) {
        t[i] = loom_mul_scalar(loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(64, 64)), (double)i);
        ck_assert_int_eq(loom_tensor_eval(t[i]->node.in[0]), LOOM_OK);
        roots[i] = (void *)(intptr_t)(i + 1);
    }
    numa_run r = {t, ran};
    ck_assert_int_eq(loom__pool_run(pool, roots, NT, run_and_note, &r), LOOM_OK);
    for (int i = 0; i < NT; i++) {
        ck_assert_int_eq(loom__mem_block_domain(t[i]->storage->data), ran[i]);
        on[ran[i]]++;
        atomic_store(&t[i]->state, LOOM__READY);
        ck_assert_float_eq(((float *)t[i]->storage->data)[63], (float)i);
        loom_tensor_free(t[i]);
    }
}

/* A chain of 12 narrow nodes from x. */
static loom_tensor *numa_chain(loom_tensor *x)
{
    for (int i = 0; i < 12; i++) x = loom_tanh(loom_add_scalar(loom_mul_scalar(x, 0.9), 0.05));
    return x;
}

/* A context whose pool has 4 workers on the synthetic two-node machine
 * (2 cores, so 2 tokens, per node); *topo must outlive it. */
static loom_ctx *numa_ctx(loom__topology **topo)
{
    *topo = loom__topology_create(&(loom__topology_options){.synthetic = "pack:2 [numa] core:2 pu:1"});
    ck_assert_msg(*topo != NULL, "%s", loom_last_error());
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 4, .num_workers = 4, .seed = 3, .backend = "ref"});
    ck_assert(ctx != NULL);
    ctx->pool = loom__pool_create(*topo, &(loom__pool_options){.num_workers = 4, .core_budget = 4, .deque_capacity = 256});
    ck_assert_msg(ctx->pool != NULL, "%s", loom_last_error());
    loom__ctx_pool_ready(ctx);
    return ctx;
}

START_TEST(test_numa_dispatch)
{
    loom__topology *topo;
    loom_ctx *ctx = numa_ctx(&topo);
    ck_assert(ctx->numa_dispatch);
    ck_assert_int_eq(loom__pool_numa_domains(ctx->pool), 2);
    const int w1 = loom__pool_numa_worker(ctx->pool, 1);
    ck_assert(w1 > 0 && loom__pool_numa_worker(ctx->pool, 0) == 0 && loom__pool_numa_worker(ctx->pool, 5) == -1);

    /* Routing: to the first worker of the home, once; never wide nodes. */
    struct {
        loom__dag_node d;
        int home;
    } nodes[3] = {{.home = 1}, {.home = 0}, {.home = 1}};
    nodes[2].d.wide = true;
    _Atomic int64_t sent = 0;
    const loom__dag g = {.nodes = (char *)nodes, .stride = sizeof nodes[0], .home = fixed_home, .sent_home = &sent};
    ck_assert_int_eq(loom__dag_route(&g, &nodes[0].d, 0, ctx->pool), w1);
    ck_assert_int_eq(loom__dag_route(&g, &nodes[0].d, 0, ctx->pool), -1); /* decided once */
    ck_assert_int_eq(loom__dag_route(&g, &nodes[1].d, 0, ctx->pool), -1); /* already home */
    ck_assert_int_eq(loom__dag_route(&g, &nodes[2].d, 0, ctx->pool), -1); /* wide: worker 0 */
    ck_assert_int_eq(atomic_load(&sent), 1);

    /* Placement: each output is a block of the NUMA node its worker is on,
     * on the two-node pool and on one with workers on node 1 only. */
    int on[2] = {0, 0};
    numa_place(ctx, ctx->pool, on);
    ck_assert_int_eq(on[0] + on[1], 16);
    loom__pool *p1 = loom__pool_create(
        topo, &(loom__pool_options){.num_workers = 2, .cores = (int[]){2, 3}, .ncores = 2, .deque_capacity = 64});
    ck_assert_msg(p1 != NULL, "%s", loom_last_error());
    on[0] = on[1] = 0;
    numa_place(ctx, p1, on);
    ck_assert_int_eq(on[1], 16);
    loom__pool_free(p1);

    /* Two chains, one from data on each node: same values as serially. */
    loom_tensor *a = loom_rand(ctx, LOOM_SHAPE(32, 32)), *b = loom_rand(ctx, LOOM_SHAPE(32, 32));
    ck_assert_int_eq(loom_tensor_eval(a), LOOM_OK);
    ck_assert_int_eq(loom_tensor_eval(b), LOOM_OK);
    loom__storage *bs = b->storage;
    void *moved = loom__mem_alloc_data_on(bs->mem, bs->nbytes, 1);
    memcpy(moved, bs->data, bs->nbytes);
    loom__mem_free_data(bs->mem, bs->data);
    bs->data = moved;
    loom_tensor *out = loom_add(loom_sum(numa_chain(a), 0, NULL, false), loom_sum(numa_chain(b), 0, NULL, false));
    ck_assert_int_eq(loom_tensor_eval(out), LOOM_OK);
    loom_ctx_stats st;
    loom_ctx_get_stats(ctx, &st);
    /* Whether the node-1 chain needed sending depends on who took its root
     * first (a node-1 worker may steal it); the counters stay bounded. */
    ck_assert_int_le(st.nodes_sent_home + st.nodes_run_away, 2 * st.nodes_run);
    ck_assert_int_eq(st.bound_blocks, 0); /* synthetic: nothing to bind */
    char page[64];
    ck_assert_int_eq(loom__topology_bind_area(page, sizeof page, 1, topo), 1);

    loom_ctx *ser = loom_ctx_create(&(loom_ctx_options){.num_threads = 1, .num_workers = 1, .backend = "ref"});
    loom_tensor *a2 = loom_tensor_from_array(ser, LOOM_FLOAT32, loom_tensor_data(a), LOOM_SHAPE(32, 32));
    loom_tensor *b2 = loom_tensor_from_array(ser, LOOM_FLOAT32, loom_tensor_data(b), LOOM_SHAPE(32, 32));
    loom_tensor *out2 = loom_add(loom_sum(numa_chain(a2), 0, NULL, false), loom_sum(numa_chain(b2), 0, NULL, false));
    ck_assert_int_eq(loom_tensor_eval(out2), LOOM_OK);
    const float *o1 = loom_tensor_data(out), *o2 = loom_tensor_data(out2);
    ck_assert_msg(o1[0] == o2[0], "%.9g against serial %.9g", o1[0], o2[0]); /* sums of everything */
    loom_ctx_free(ser);
    loom_ctx_free(ctx);
    loom__topology_free(topo);
}
END_TEST

/* Moves t's data to a block of memory domain (NUMA node) d. */
static void move_to_numa(loom_tensor *t, int d)
{
    ck_assert_int_eq(loom_tensor_eval(t), LOOM_OK);
    loom__storage *s = t->storage;
    void *moved = loom__mem_alloc_data_on(s->mem, s->nbytes, d);
    ck_assert(moved != NULL);
    memcpy(moved, s->data, s->nbytes);
    loom__mem_free_data(s->mem, s->data);
    s->data = moved;
}

static int64_t away_now(loom_ctx *ctx)
{
    loom_ctx_stats st;
    loom_ctx_get_stats(ctx, &st);
    return st.nodes_run_away;
}

/* Wide nodes (an OpenMP team) run on their home NUMA node's first worker,
 * the team master of that node, where every node has as many tokens; a
 * captured step replays with the same routing, its planned buffers on the
 * nodes where the eager step put them. Same synthetic machine as above. */
START_TEST(test_numa_wide_and_replay)
{
    loom__topology *topo;
    loom_ctx *ctx = numa_ctx(&topo);
    ck_assert(ctx->numa_dispatch && ctx->wide_home);
    const int w1 = loom__pool_numa_worker(ctx->pool, 1);

    /* The choice: the home's master, decided once, counted as sent when
     * made on another node; worker 0 without wide_home. */
    struct {
        loom__dag_node d;
        int home;
    } nodes[3] = {{.d.wide = true, .home = 1}, {.d.wide = true, .home = 0}, {.d.wide = true, .home = 1}};
    _Atomic int64_t sent = 0;
    loom__dag g = {.nodes = (char *)nodes, .stride = sizeof nodes[0], .home = fixed_home, .wide_home = true, .sent_home = &sent};
    ck_assert_int_eq(loom__dag_master(&g, &nodes[0].d, 0, ctx->pool), w1);
    ck_assert_int_eq(loom__dag_master(&g, &nodes[0].d, 0, ctx->pool), w1);
    ck_assert_int_eq(loom__dag_master(&g, &nodes[1].d, 1, ctx->pool), 0);
    ck_assert_int_eq(atomic_load(&sent), 2); /* both made on the other node */
    g.wide_home = false;
    ck_assert_int_eq(loom__dag_master(&g, &nodes[2].d, 0, ctx->pool), 0);

    /* Eager: a wide matmul of data on node 1, then a narrow chain. */
    loom_tensor *a = loom_rand(ctx, LOOM_SHAPE(256, 256)), *b = loom_rand(ctx, LOOM_SHAPE(256, 256));
    move_to_numa(a, 1);
    move_to_numa(b, 1);
    loom_tensor *mm = loom_matmul(a, b);
    ck_assert_int_gt(loom__node_want(mm, 4), 1); /* wide */
    loom_tensor *y = loom_sum(numa_chain(mm), 0, NULL, false);
    int64_t away = away_now(ctx);
    ck_assert_int_eq(loom_tensor_eval(y), LOOM_OK);
    ck_assert_int_eq(loom__mem_block_domain(mm->storage->data), 1);
    ck_assert_int_eq(loom__mem_block_domain(y->storage->data), 1);
    ck_assert_int_eq(away_now(ctx), away);
    const float eager = *(const float *)loom_tensor_data(y);
    loom_tensor *mm0 = loom_matmul(b, a); /* the same from node 0 */
    move_to_numa(mm0->node.in[0], 0);
    move_to_numa(mm0->node.in[1], 0);
    ck_assert_int_eq(loom_tensor_eval(mm0), LOOM_OK);
    ck_assert_int_eq(loom__mem_block_domain(mm0->storage->data), 0);
    loom_tensor_free(mm0);
    move_to_numa(b, 1);
    move_to_numa(a, 1);

    /* Capture and replay: the same routes and values. */
    ck_assert_int_eq(loom_graph_capture_begin(ctx), LOOM_OK);
    loom_scope_begin(ctx); /* the intermediates die: temporaries in slots */
    loom_tensor *ry = loom_scope_keep(loom_sum(numa_chain(loom_matmul(a, b)), 0, NULL, false));
    ck_assert_int_eq(loom_tensor_eval(ry), LOOM_OK);
    loom_scope_end(ctx);
    loom_graph *cg = loom_graph_capture_end(ctx);
    ck_assert_msg(cg != NULL, "%s", loom_last_error());
    loom_graph_stats gst;
    loom_graph_get_stats(cg, &gst);
    ck_assert_int_ge(gst.temporaries, 30);
    enum { MAXN = 64 };
    bool runs[MAXN], wide[MAXN];
    int home[MAXN], master[MAXN];
    for (int rep = 0; rep < 5; rep++) {
        away = away_now(ctx);
        ck_assert_int_eq(loom_graph_replay(cg), LOOM_OK);
        ck_assert_int_eq(away_now(ctx), away);
        const float r = *(const float *)loom_tensor_data(ry);
        ck_assert_msg(memcmp(&r, &eager, sizeof r) == 0, "replay %d: %.9g, eager %.9g", rep, r, eager);
        const int64_t n = loom__graph_routes(cg, runs, wide, home, master, MAXN);
        ck_assert(n > 10 && n <= MAXN);
        /* A chain: every node that runs a kernel is alone (nothing can run
         * beside it), so wide, pinned to node 1's master. */
        int nwide = 0, nruns = 0;
        for (int64_t i = 0; i < n; i++) {
            ck_assert_msg(home[i] == (runs[i] ? 1 : -1), "node %lld of %lld of the replay: home %d", (long long)i, (long long)n, home[i]);
            nruns += runs[i];
            if (wide[i]) {
                nwide++;
                ck_assert_int_eq(master[i], w1);
            }
        }
        ck_assert_int_eq(nwide, nruns);
    }
    loom_graph_free(cg);
    loom_tensor_free(ry);
    loom_tensor_free(y);

    /* Unequal nodes (2 tokens on node 0, 1 on node 1): a wide node would
     * run narrower on node 1, so every wide node runs on worker 0. */
    loom_ctx *c3 = loom_ctx_create(&(loom_ctx_options){.num_threads = 3, .num_workers = 3, .backend = "ref"});
    ck_assert(c3 != NULL);
    c3->pool = loom__pool_create(
        topo, &(loom__pool_options){.num_workers = 3, .cores = (int[]){0, 1, 2}, .ncores = 3, .core_budget = 3, .deque_capacity = 64});
    ck_assert_msg(c3->pool != NULL, "%s", loom_last_error());
    loom__ctx_pool_ready(c3);
    ck_assert(c3->numa_dispatch && !c3->wide_home);
    loom_tensor *a3 = loom_rand(c3, LOOM_SHAPE(256, 256)), *b3 = loom_rand(c3, LOOM_SHAPE(256, 256));
    move_to_numa(a3, 1);
    move_to_numa(b3, 1);
    loom_tensor *mm3 = loom_matmul(a3, b3);
    ck_assert_int_eq(loom_tensor_eval(mm3), LOOM_OK);
    ck_assert_int_eq(loom__mem_block_domain(mm3->storage->data), 0);
    loom_ctx_free(c3);
    loom_ctx_free(ctx);
    loom__topology_free(topo);
}
END_TEST
#endif

/* One training step of a CNN (conv with groups and stride, batch norm,
 * max/avg/adaptive pooling, linear, cross-entropy, Adam), three steps;
 * the parameters as floats. */
static int cnn_params(const char *backend, int threads, int workers, float *out, int cap)
{
    loom_ctx *ctx = loom_ctx_create(
        &(loom_ctx_options){.num_threads = threads, .num_workers = workers, .seed = 5, .backend = backend});
    ck_assert_msg(ctx != NULL, "%s", loom_last_error());
    loom_conv2d_opts c1 = {.stride = {1, 1}, .padding = {1, 1}, .dilation = {1, 1}, .groups = 1};
    loom_conv2d_opts c2 = {.stride = {2, 2}, .padding = {1, 1}, .dilation = {1, 1}, .groups = 2};
    loom_conv2d_opts c3 = {.stride = {1, 1}, .dilation = {1, 1}, .groups = 1};
    loom_pool2d_opts mp = {.kernel = {2, 2}};
    loom_pool2d_opts ap = {.kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1}};
    loom_module *net = loom_sequential(
        ctx, 11,
        (loom_module *[]){loom_conv2d_module(ctx, 3, 16, 3, 3, &c1, true), loom_batch_norm2d_module(ctx, 16, 1e-5, 0.1, true),
                          loom_relu_module(ctx), loom_max_pool2d_module(ctx, &mp),
                          loom_conv2d_module(ctx, 16, 32, 3, 3, &c2, true), loom_avg_pool2d_module(ctx, &ap),
                          loom_conv2d_module(ctx, 32, 24, 1, 1, &c3, true), loom_adaptive_avg_pool2d_module(ctx, 3, 3),
                          loom_flatten_module(ctx, 1, -1), loom_linear(ctx, 24 * 9, 40, true),
                          loom_linear(ctx, 40, 10, true)});
    ck_assert_msg(net != NULL, "%s", loom_last_error());
    loom_tensor *params[32];
    int np = loom_module_parameters(net, params, NULL, 32);
    loom_optimizer *opt = loom_adam(ctx, np, params, NULL);
    loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(37, 3, 22, 22));
    loom_tensor *y = loom_randint(ctx, 0, 10, LOOM_SHAPE(37));
    for (int step = 0; step < 3; step++) {
        loom_scope_begin(ctx);
        loom_optimizer_zero_grad(opt);
        loom_tensor *loss = loom_cross_entropy_loss(loom_module_forward(net, x), y, LOOM_REDUCTION_MEAN);
        ck_assert_int_eq(loom_backward(loss, NULL, NULL), LOOM_OK);
        ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
        loom_scope_end(ctx);
    }
    int n = 0;
    for (int i = 0; i < np; i++) {
        int64_t k = loom_tensor_numel(params[i]);
        ck_assert(n + k <= cap);
        ck_assert_int_eq(loom_tensor_copy_to(params[i], out + n, sizeof(float) * (size_t)k), LOOM_OK);
        n += (int)k;
    }
    loom_optimizer_free(opt);
    loom_module_free(net);
    loom_ctx_free(ctx);
    return n;
}

/* The scheduler may run a portable kernel at any width, so every portable
 * kernel must give the same bits at every width: a CNN's training with 1 to
 * 5 threads, scheduler on and off, gives identical parameters. oneDNN's
 * results depend on its thread count (its kernels run at a fixed, planned
 * width), so with oneDNN the same thread count must give the same bits
 * whatever the schedule: 5 runs with 3 workers. */
START_TEST(test_cnn_widths_bitwise)
{
    enum { CAP = 16384 };
    static float a[CAP], b[CAP];
    int n = cnn_params("ref", 1, 1, a, CAP);
    for (int t = 2; t <= 5; t++)
        for (int w = 1; w <= t; w += t - 1) {
            ck_assert_int_eq(cnn_params("ref", t, w, b, CAP), n);
            ck_assert_msg(memcmp(a, b, sizeof(float) * (size_t)n) == 0, "ref, %d threads, %d workers", t, w);
        }
#ifdef LOOM_HAVE_ONEDNN
    n = cnn_params("auto", 3, 3, a, CAP);
    for (int run = 0; run < 5; run++) {
        cnn_params(run % 2 ? "auto" : "onednn", 3, 3, b, CAP);
        if (run % 2 == 0) continue; /* the onednn runs only exercise the exact path */
        ck_assert_msg(memcmp(a, b, sizeof(float) * (size_t)n) == 0, "auto, 3 threads, run %d", run);
    }
#endif
}
END_TEST

Suite *loom_suite_exec(void)
{
    Suite *s = suite_create("exec");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_random_dags_match_serial);
    tcase_add_test(tc, test_many_independent_nodes);
    tcase_add_test(tc, test_error_stops_parallel_run);
    tcase_add_test(tc, test_training_bitwise_reproducible);
    tcase_add_test(tc, test_worker_options);
    tcase_add_test(tc, test_trace_file);
    tcase_add_test(tc, test_profile_flops);
    tcase_add_test(tc, test_host_call_and_hook);
    tcase_add_test(tc, test_dist_without_mpi);
    tcase_add_test(tc, test_cores_basics);
    tcase_add_test(tc, test_cores_stress);
    tcase_add_test(tc, test_core_budget_bound);
    tcase_add_test(tc, test_alone_nodes);
#ifdef LOOM_HAVE_HWLOC
    tcase_add_test(tc, test_numa_dispatch);
    tcase_add_test(tc, test_numa_wide_and_replay);
#endif
    tcase_add_test(tc, test_cnn_widths_bitwise);
    suite_add_tcase(s, tc);
    return s;
}
