/*
 * tests/check_graph.c - captured graphs (loom/graph.h): a replayed training
 * step gives bitwise the parameters of the same steps run eagerly (MLP with
 * Adam, CNN with BatchNorm and SGD momentum; portable and auto backends; 1
 * and 2 workers); replays allocate nothing (the context's allocator and,
 * outside sanitizer builds, every malloc of the process); temporaries share
 * planned buffers; steps that a replay cannot repeat are refused.
 */
#include "tests/check_suites.h"

#include <stdatomic.h>
#include <stdio.h>

#include "tests/malloc_count.h"

/* ---- the models ----------------------------------------------------------- */

enum { MLP, CNN, DROP }; /* DROP: the MLP with dropout */

typedef struct rig {
    loom_ctx *ctx;
    loom_module *net;
    loom_optimizer *opt;
    loom_tensor *x, *y; /* static inputs, written in place each step */
    int kind;
    int64_t batch;
} rig;

/* linear + ReLU + dropout(0.3) + linear: a mask drawn every step. */
static loom_module *mlp_dropout(loom_ctx *ctx)
{
    return loom_sequential(ctx, 4,
                           (loom_module *[]){loom_linear(ctx, 12, 16, true), loom_relu_module(ctx),
                                             loom_dropout_module(ctx, 0.3), loom_linear(ctx, 16, 5, true)});
}

static loom_module *mlp(loom_ctx *ctx)
{
    return loom_sequential(ctx, 3,
                           (loom_module *[]){loom_linear(ctx, 12, 16, true), loom_relu_module(ctx),
                                             loom_linear(ctx, 16, 5, true)});
}

/* conv(3->8, 3x3, pad 1) + BN + ReLU + 2x2 max pool + conv(8->16) + ReLU +
 * flatten + linear: oneDNN convolutions with blocked layouts under auto,
 * BN's running statistics and num_batches_tracked updated in place. */
static loom_module *cnn(loom_ctx *ctx)
{
    loom_conv2d_opts c1 = {.padding = {1, 1}};
    loom_pool2d_opts p = {.kernel = {2, 2}};
    return loom_sequential(ctx, 8,
                           (loom_module *[]){loom_conv2d_module(ctx, 3, 8, 3, 3, &c1, true),
                                             loom_batch_norm2d_module(ctx, 8, 1e-5, 0.1, true),
                                             loom_relu_module(ctx), loom_max_pool2d_module(ctx, &p),
                                             loom_conv2d_module(ctx, 8, 16, 3, 3, NULL, true), loom_relu_module(ctx),
                                             loom_flatten_module(ctx, 1, -1), loom_linear(ctx, 16 * 4 * 4, 5, true)});
}

static rig make_rig(int kind, const char *backend, int workers)
{
    rig r = {.kind = kind, .batch = 6};
    loom_ctx_options o = {.num_threads = 2, .num_workers = workers, .seed = 7, .backend = backend};
    r.ctx = loom_ctx_create(&o);
    ck_assert_msg(r.ctx, "%s", loom_last_error());
    r.net = kind == MLP ? mlp(r.ctx) : kind == DROP ? mlp_dropout(r.ctx) : cnn(r.ctx);
    ck_assert_msg(r.net, "%s", loom_last_error());
    loom_tensor *ps[32];
    int n = loom_module_parameters(r.net, ps, NULL, 32);
    if (kind != CNN) {
        r.opt = loom_adam(r.ctx, n, ps, NULL);
    } else {
        loom_sgd_options so = {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3};
        r.opt = loom_sgd(r.ctx, n, ps, &so);
    }
    ck_assert_msg(r.opt, "%s", loom_last_error());
    r.x = kind != CNN ? loom_zeros(r.ctx, LOOM_FLOAT32, LOOM_SHAPE(r.batch, 12))
                      : loom_zeros(r.ctx, LOOM_FLOAT32, LOOM_SHAPE(r.batch, 3, 12, 12));
    r.y = loom_zeros(r.ctx, LOOM_INT64, LOOM_SHAPE(r.batch));
    ck_assert(r.x && r.y);
    return r;
}

static void free_rig(rig *r)
{
    loom_optimizer_free(r->opt);
    loom_module_free(r->net);
    loom_ctx_free(r->ctx);
}

/* Batch `step`'s data, from a fixed formula (not Loom's generator). */
static void load_batch(rig *r, int step)
{
    int64_t nx = loom_tensor_numel(r->x);
    float *xv = malloc(sizeof *xv * (size_t)nx);
    int64_t yv[16];
    ck_assert(xv);
    for (int64_t i = 0; i < nx; i++) xv[i] = (float)sin(0.37 * (double)i + 1.3 * step) * 1.5f;
    for (int64_t i = 0; i < r->batch; i++) yv[i] = (i * 3 + step) % 5;
    loom_scope_begin(r->ctx);
    int64_t xs[4];
    loom_tensor_shape(r->x, xs);
    loom_tensor *bx = loom_tensor_from_array(r->ctx, LOOM_FLOAT32, xv, loom_tensor_ndim(r->x), xs);
    loom_tensor *by = loom_tensor_from_array(r->ctx, LOOM_INT64, yv, LOOM_SHAPE(r->batch));
    ck_assert_int_eq(loom_tensor_assign(r->x, bx), LOOM_OK);
    ck_assert_int_eq(loom_tensor_assign(r->y, by), LOOM_OK);
    loom_scope_end(r->ctx);
    free(xv);
}

/* One training step; returns the loss tensor, kept one scope up (the
 * caller frees it). */
static loom_tensor *train_step(rig *r)
{
    loom_scope_begin(r->ctx);
    loom_optimizer_zero_grad(r->opt);
    loom_tensor *loss = loom_cross_entropy_loss(loom_module_forward(r->net, r->x), r->y, LOOM_REDUCTION_MEAN);
    ck_assert_msg(loss, "%s", loom_last_error());
    ck_assert_msg(loom_backward(loss, NULL, NULL) == LOOM_OK, "%s", loom_last_error());
    ck_assert_msg(loom_optimizer_step(r->opt) == LOOM_OK, "%s", loom_last_error());
    loss = loom_scope_keep(loss);
    loom_scope_end(r->ctx);
    return loss;
}

static float loss_of(loom_tensor *loss)
{
    double v;
    ck_assert_msg(loom_tensor_item(loss, &v) == LOOM_OK, "%s", loom_last_error());
    return (float)v;
}

/* Every parameter and buffer, bitwise. */
static void assert_same_state(rig *a, rig *b)
{
    loom_tensor *pa[64], *pb[64];
    const char *na[64];
    int n = loom_module_state(a->net, pa, na, 64), m = loom_module_state(b->net, pb, NULL, 64);
    ck_assert_int_eq(n, m);
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)loom_tensor_numel(pa[i]) * loom_dtype_size(loom_tensor_dtype(pa[i]));
        void *va = malloc(bytes ? bytes : 1), *vb = malloc(bytes ? bytes : 1);
        ck_assert(va && vb);
        ck_assert_int_eq(loom_tensor_copy_to(pa[i], va, bytes), LOOM_OK);
        ck_assert_int_eq(loom_tensor_copy_to(pb[i], vb, bytes), LOOM_OK);
        ck_assert_msg(memcmp(va, vb, bytes) == 0, "%s differs between eager and replayed steps", na[i]);
        free(va);
        free(vb);
    }
}

/* Steps 0..steps-1 eagerly in `eager`, and in `rep` step 0 eagerly, step 1
 * captured and the rest replayed: the losses and every parameter, buffer
 * and optimizer step count are bitwise the same. */
static void check_replay(int kind, const char *backend, int workers, int steps)
{
    rig e = make_rig(kind, backend, workers), r = make_rig(kind, backend, workers);
    loom_graph *g = NULL;
    loom_tensor *rloss = NULL;
    for (int s = 0; s < steps; s++) {
        load_batch(&e, s);
        loom_tensor *eloss = train_step(&e);
        load_batch(&r, s);
        if (s == 0) {
            rloss = train_step(&r);
        } else if (s == 1) {
            loom_tensor_free(rloss);
            ck_assert_int_eq(loom_graph_capture_begin(r.ctx), LOOM_OK);
            rloss = train_step(&r);
            g = loom_graph_capture_end(r.ctx);
            ck_assert_msg(g, "%s", loom_last_error());
        } else {
            ck_assert_msg(loom_graph_replay(g) == LOOM_OK, "%s", loom_last_error());
        }
        float le = loss_of(eloss), lr = loss_of(rloss);
        ck_assert_msg(memcmp(&le, &lr, sizeof le) == 0, "step %d: eager loss %.9g, replayed %.9g", s, le, lr);
        loom_tensor_free(eloss);
    }
    assert_same_state(&e, &r);
    /* The random streams moved alike: the next draws agree. */
    loom_tensor *de = loom_rand(e.ctx, LOOM_SHAPE(7)), *dr = loom_rand(r.ctx, LOOM_SHAPE(7));
    ck_assert(memcmp(loom_tensor_data(de), loom_tensor_data(dr), 7 * sizeof(float)) == 0);
    loom_tensor_free(de);
    loom_tensor_free(dr);
    /* The optimizers agree too (Adam's step count advanced in the graph). */
    int ne, nr;
    loom_tensor **te, **tr;
    char **ne_names, **nr_names;
    ck_assert_int_eq(loom_optimizer_state(e.opt, &ne, &te, &ne_names), LOOM_OK);
    ck_assert_int_eq(loom_optimizer_state(r.opt, &nr, &tr, &nr_names), LOOM_OK);
    ck_assert_int_eq(ne, nr);
    for (int i = 0; i < ne; i++) {
        size_t bytes = (size_t)loom_tensor_numel(te[i]) * loom_dtype_size(loom_tensor_dtype(te[i]));
        const void *a = loom_tensor_data(te[i]), *b = loom_tensor_data(tr[i]);
        ck_assert_msg(a && b && memcmp(a, b, bytes) == 0, "optimizer state %s differs", ne_names[i]);
        loom_tensor_free(te[i]);
        loom_tensor_free(tr[i]);
        free(ne_names[i]);
        free(nr_names[i]);
    }
    free(te);
    free(tr);
    free(ne_names);
    free(nr_names);
    loom_graph_stats st;
    loom_graph_get_stats(g, &st);
    ck_assert_int_gt(st.kernels, 10);
    ck_assert_int_gt(st.copies, 0);      /* parameters assigned in place */
    ck_assert_int_gt(st.carries, 0);     /* optimizer state carried */
    ck_assert_int_gt(st.temporaries, 10);
    /* Temporaries share buffers. */
    ck_assert_msg(st.planned_bytes < st.temporary_bytes, "planned %lld of %lld bytes", (long long)st.planned_bytes,
                  (long long)st.temporary_bytes);
    loom_tensor_free(rloss);
    loom_graph_free(g);
    free_rig(&e);
    free_rig(&r);
}

START_TEST(test_replay_mlp_adam)
{
    check_replay(MLP, "ref", 1, 6);
    check_replay(MLP, "ref", 2, 6);
    check_replay(MLP, NULL, 2, 6);
}
END_TEST

/* Dropout: each replay draws its own mask, the one the eager step draws
 * (the fill is recorded and repeated at the stream's offset of the
 * replay). */
START_TEST(test_replay_dropout)
{
    check_replay(DROP, "ref", 1, 6);
    check_replay(DROP, "ref", 2, 6);
    check_replay(DROP, NULL, 2, 6);
}
END_TEST

START_TEST(test_replay_cnn_sgd)
{
    check_replay(CNN, "ref", 1, 5);
    check_replay(CNN, "ref", 2, 5);
    check_replay(CNN, NULL, 1, 5);
    check_replay(CNN, NULL, 2, 5);
}
END_TEST

/* ---- no allocation at steady state ---------------------------------------- */

typedef struct counting {
    atomic_long allocs;
} counting;

static void *count_alloc(size_t n, void *user)
{
    atomic_fetch_add(&((counting *)user)->allocs, 1);
    return malloc(n);
}

static void count_free(void *p, void *user)
{
    (void)user;
    free(p);
}

static void check_no_alloc(int kind, const char *backend, int workers, bool process_wide)
{
    counting c;
    atomic_init(&c.allocs, 0);
    loom_allocator al = {count_alloc, count_free, &c};
    rig r = {.kind = kind, .batch = 6};
    loom_ctx_options o = {.num_threads = 2, .num_workers = workers, .seed = 7, .backend = backend, .allocator = &al};
    r.ctx = loom_ctx_create(&o);
    ck_assert(r.ctx);
    r.net = kind == MLP ? mlp(r.ctx) : cnn(r.ctx);
    loom_tensor *ps[32];
    int n = loom_module_parameters(r.net, ps, NULL, 32);
    r.opt = loom_adam(r.ctx, n, ps, NULL);
    r.x = kind == MLP ? loom_zeros(r.ctx, LOOM_FLOAT32, LOOM_SHAPE(r.batch, 12))
                      : loom_zeros(r.ctx, LOOM_FLOAT32, LOOM_SHAPE(r.batch, 3, 12, 12));
    r.y = loom_zeros(r.ctx, LOOM_INT64, LOOM_SHAPE(r.batch));
    load_batch(&r, 0);
    loom_tensor_free(train_step(&r));
    ck_assert_int_eq(loom_graph_capture_begin(r.ctx), LOOM_OK);
    loom_tensor *loss = train_step(&r);
    loom_graph *g = loom_graph_capture_end(r.ctx);
    ck_assert_msg(g, "%s", loom_last_error());
    /* Warm up: per-thread scratch grows the first time a worker runs a
     * node that needs more (who runs what varies with stealing). */
    for (int i = 0; i < 12; i++) ck_assert_int_eq(loom_graph_replay(g), LOOM_OK);
    /* No ck_assert inside the window: Check allocates to record one. A
     * worker that runs a node for the first time may still grow its
     * scratch once, and the block cache gains a block the first time two
     * nodes' layout-conversion copies of one size class run at the same
     * time (which replay that is depends on the schedule): steady state is
     * a window of 20 replays without any allocation, within a few windows.
     * The context's allocator must be quiet in that window even where the
     * process-wide count is not checked. */
    int failed = 0;
    long mallocs = -1, allocs = -1;
    for (int w = 0; w < 5 && (mallocs != 0 || allocs != 0); w++) {
        const long before = atomic_load(&c.allocs);
        loom__malloc_count_start();
        for (int i = 0; i < 20; i++) failed += loom_graph_replay(g) != LOOM_OK;
        mallocs = loom__malloc_count_stop();
        allocs = atomic_load(&c.allocs) - before;
        if (!process_wide) mallocs = 0; /* oneDNN's own allocations: not checked */
    }
    ck_assert_int_eq(failed, 0);
    ck_assert_msg(allocs == 0, "20 replays called the context's allocator %ld times", allocs);
    if (process_wide && loom__malloc_count_works())
        ck_assert_msg(mallocs == 0, "20 replays made %ld heap allocations", mallocs);
    /* The step still trains: the loss went down on this fixed batch. */
    ck_assert(isfinite(loss_of(loss)));
    loom_tensor_free(loss);
    loom_graph_free(g);
    free_rig(&r);
}

START_TEST(test_replay_allocates_nothing)
{
    /* The MLP on the portable kernels: no heap allocation anywhere in the
     * process (but libgomp's own, tests/malloc_count.h), on 1 and 2
     * workers. */
    check_no_alloc(MLP, "ref", 1, true);
    check_no_alloc(MLP, "ref", 2, true);
    /* The CNN (conv, batch norm, pooling) on the portable kernels: none
     * either. With oneDNN: none from Loom's allocator; oneDNN still makes
     * its memory objects per call (docs/runtime.md, "Captured graphs"). */
    check_no_alloc(CNN, "ref", 1, true);
    check_no_alloc(CNN, "ref", 2, true);
    check_no_alloc(CNN, NULL, 2, false);
}
END_TEST

/* ---- what a replay cannot repeat ------------------------------------------ */

START_TEST(test_capture_refusals)
{
    rig r = make_rig(MLP, "ref", 1);
    load_batch(&r, 0);
    /* An optimizer's first step inside a capture. */
    ck_assert_int_eq(loom_graph_capture_begin(r.ctx), LOOM_OK);
    ck_assert_int_eq(loom_graph_capture_begin(r.ctx), LOOM_ERR_STATE); /* nested */
    loom_scope_begin(r.ctx);
    loom_tensor *loss = loom_cross_entropy_loss(loom_module_forward(r.net, r.x), r.y, LOOM_REDUCTION_MEAN);
    ck_assert_int_eq(loom_backward(loss, NULL, NULL), LOOM_OK);
    ck_assert_int_eq(loom_optimizer_step(r.opt), LOOM_ERR_STATE);
    ck_assert(strstr(loom_last_error(), "first step"));
    loom_scope_end(r.ctx);
    loom_graph *g = loom_graph_capture_end(r.ctx);
    ck_assert(g != NULL); /* forward and backward alone replay fine */
    loom_graph_free(g);
    ck_assert_ptr_null(loom_graph_capture_end(r.ctx)); /* none in progress */
    ck_assert(strstr(loom_last_error(), "no capture"));
    loom_tensor_free(train_step(&r));

    /* The random stream moved other than by a draw (reseeded inside the
     * step): a replay could not follow it. Draws themselves replay
     * (test_replay_dropout). */
    ck_assert_int_eq(loom_graph_capture_begin(r.ctx), LOOM_OK);
    loom_scope_begin(r.ctx);
    ck_assert_int_eq(loom_tensor_eval(loom_dropout(loom_module_forward(r.net, r.x), 0.5, true)), LOOM_OK);
    loom_manual_seed(r.ctx, 99);
    loom_scope_end(r.ctx);
    ck_assert_ptr_null(loom_graph_capture_end(r.ctx));
    ck_assert_msg(strstr(loom_last_error(), "random stream"), "%s", loom_last_error());

    /* State replaced by a new tensor without a carry: a running sum kept
     * functionally reads stale values on replay. */
    loom_tensor *acc = loom_scope_detach(loom_zeros(r.ctx, LOOM_FLOAT32, LOOM_SHAPE(5)));
    ck_assert_int_eq(loom_graph_capture_begin(r.ctx), LOOM_OK);
    loom_tensor *next = loom_scope_detach(loom_add_scalar(acc, 1.0));
    ck_assert_int_eq(loom_tensor_eval(next), LOOM_OK);
    loom_tensor_free(acc);
    acc = next;
    ck_assert_ptr_null(loom_graph_capture_end(r.ctx));
    ck_assert_msg(strstr(loom_last_error(), "stale"), "%s", loom_last_error());

    /* The same with loom_graph_carry: replays count on. */
    ck_assert_int_eq(loom_graph_capture_begin(r.ctx), LOOM_OK);
    next = loom_scope_detach(loom_add_scalar(acc, 1.0));
    ck_assert_int_eq(loom_graph_carry(acc, next), LOOM_OK);
    loom_tensor_free(acc);
    acc = next;
    g = loom_graph_capture_end(r.ctx);
    ck_assert_msg(g, "%s", loom_last_error());
    for (int i = 0; i < 3; i++) ck_assert_int_eq(loom_graph_replay(g), LOOM_OK);
    const float want[5] = {5, 5, 5, 5, 5};
    assert_values_f32(acc, want, 5, 0);
    loom_graph_free(g);
    loom_tensor_free(acc);

    ck_assert_int_eq(loom_graph_replay(NULL), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_graph_capture_begin(NULL), LOOM_ERR_INVALID_ARG);
    free_rig(&r);
}
END_TEST

/* 8 independent chains of 4 ops on x, summed at the end. */
static loom_tensor *branches(loom_tensor *x)
{
    loom_tensor *sum = NULL;
    for (int b = 0; b < 8; b++) {
        loom_tensor *t = loom_mul_scalar(x, 1.0 + b);
        for (int k = 0; k < 4; k++) t = loom_tanh(loom_add_scalar(t, 0.1 * k));
        sum = sum ? loom_add(sum, t) : t;
    }
    return sum;
}

/* A temporary's buffer is reused only after every reader of the previous
 * one has run, in any schedule: two independent branches never share. */
START_TEST(test_planning_respects_concurrency)
{
    for (int workers = 1; workers <= 2; workers++) {
        loom_ctx_options o = {.num_threads = 2, .num_workers = workers, .seed = 3, .backend = "ref"};
        loom_ctx *ctx = loom_ctx_create(&o);
        ck_assert(ctx);
        loom_tensor *x = loom_scope_detach(loom_rand(ctx, LOOM_SHAPE(64, 64)));
        loom_tensor *out = NULL;
        ck_assert_int_eq(loom_graph_capture_begin(ctx), LOOM_OK);
        loom_scope_begin(ctx);
        out = loom_scope_keep(branches(x));
        ck_assert_int_eq(loom_tensor_eval(out), LOOM_OK);
        loom_scope_end(ctx);
        loom_graph *g = loom_graph_capture_end(ctx);
        ck_assert_msg(g, "%s", loom_last_error());
        float *want = malloc(sizeof *want * 64 * 64);
        ck_assert_int_eq(loom_tensor_copy_to(out, want, sizeof *want * 64 * 64), LOOM_OK);
        /* New input values: the replay must follow them. */
        loom_scope_begin(ctx);
        ck_assert_int_eq(loom_tensor_assign(x, loom_mul_scalar(x, 0.5)), LOOM_OK);
        loom_scope_end(ctx);
        for (int i = 0; i < 20; i++) ck_assert_int_eq(loom_graph_replay(g), LOOM_OK);
        /* Eager reference on the new x. */
        loom_scope_begin(ctx);
        ck_assert_int_eq(loom_tensor_copy_to(branches(x), want, sizeof *want * 64 * 64), LOOM_OK);
        loom_scope_end(ctx);
        const float *got = loom_tensor_data(out);
        ck_assert(got);
        ck_assert_msg(memcmp(got, want, sizeof *want * 64 * 64) == 0, "replay differs from eager (workers %d)",
                      workers);
        loom_graph_stats st;
        loom_graph_get_stats(g, &st);
        ck_assert_int_eq(st.segments, 1);
        ck_assert_int_eq(st.kernels, 8 * 9 + 7);
        ck_assert(st.planned_bytes < st.temporary_bytes);
        free(want);
        loom_graph_free(g);
        loom_tensor_free(out);
        loom_tensor_free(x);
        loom_ctx_free(ctx);
    }
}
END_TEST

Suite *loom_suite_graph(void)
{
    Suite *s = suite_create("graph");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_replay_mlp_adam);
    tcase_add_test(tc, test_replay_cnn_sgd);
    tcase_add_test(tc, test_replay_dropout);
    tcase_add_test(tc, test_replay_allocates_nothing);
    tcase_add_test(tc, test_capture_refusals);
    tcase_add_test(tc, test_planning_respects_concurrency);
    suite_add_tcase(s, tc);
    return s;
}
