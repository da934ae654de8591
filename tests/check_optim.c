/*
 * tests/check_optim.c - optimizers and lr schedulers: each option against
 * hand-computed updates, parameter groups, skipped parameters, ownership of
 * the state, validation, and a few training steps of a small MLP against
 * PyTorch 1.13 (tests/fixtures/optim_cases.h, made by gen_optim.py).
 *
 * The hand-computed cases share one setting: p = [1, -2, 3] and the
 * gradients g1 = [0.5, -1, 2], g2 = [-0.25, 0.5, 1], g3 = [1, 0, -0.5]
 * on steps 1, 2, 3 (set through backward of sum(p * g)). The expected
 * values follow the formulas in optim/optimizer.c, evaluated in double (and
 * agree with PyTorch's float64 results exactly).
 */
#include "tests/check_suites.h"
#include "tests/fixtures/optim_cases.h"

static const float P0[3] = {1, -2, 3};
static const float GRADS[3][3] = {{0.5f, -1, 2}, {-0.25f, 0.5f, 1}, {1, 0, -0.5f}};

/* Replaces p's gradient by g (p's shape), through backward of sum(p * g). */
static void set_grad(loom_tensor *p, const float *g)
{
    loom_ctx *ctx = loom_tensor_ctx(p);
    int64_t shape[LOOM_MAX_DIMS];
    loom_tensor_shape(p, shape);
    loom_tensor_zero_grad(p);
    ck_assert_int_eq(loom_scope_begin(ctx), LOOM_OK);
    loom_tensor *c = loom_tensor_from_array(ctx, LOOM_FLOAT32, g, loom_tensor_ndim(p), shape);
    loom_tensor *loss = loom_sum(loom_mul(p, c), 0, NULL, false);
    ck_assert_msg(loom_backward(loss, NULL, NULL) == LOOM_OK, "%s", loom_last_error());
    ck_assert_int_eq(loom_scope_end(ctx), LOOM_OK);
}

/* Runs three steps with GRADS on p = P0 and checks p after each step. */
static void run_three(loom_ctx *ctx, loom_optimizer *opt, loom_tensor *p, const float want[3][3])
{
    for (int s = 0; s < 3; s++) {
        set_grad(p, GRADS[s]);
        ck_assert_msg(loom_optimizer_step(opt) == LOOM_OK, "step %d: %s", s + 1, loom_last_error());
        assert_values_f32(p, want[s], 3, 1e-6);
    }
    (void)ctx;
}

static void sgd_case(const loom_sgd_options *o, const float want[3][3])
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *p = leaf(ctx, P0, LOOM_SHAPE(3));
    loom_optimizer *opt = loom_sgd(ctx, 1, &p, o);
    ck_assert_msg(opt != NULL, "%s", loom_last_error());
    run_three(ctx, opt, p, want);
    loom_optimizer_free(opt);
    loom_ctx_free(ctx);
}

typedef loom_optimizer *(*adam_ctor)(loom_ctx *, int, loom_tensor *const *, const loom_adam_options *);

static void adam_case(adam_ctor make, const loom_adam_options *o, const float want[3][3])
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *p = leaf(ctx, P0, LOOM_SHAPE(3));
    loom_optimizer *opt = make(ctx, 1, &p, o);
    ck_assert_msg(opt != NULL, "%s", loom_last_error());
    run_three(ctx, opt, p, want);
    loom_optimizer_free(opt);
    loom_ctx_free(ctx);
}

/* ---- SGD ----------------------------------------------------------------- */

START_TEST(test_sgd_plain)
{
    /* p -= 0.1 * g */
    sgd_case(&(loom_sgd_options){.lr = 0.1},
             (const float[3][3]){{0.95f, -1.9f, 2.8f}, {0.975f, -1.95f, 2.7f}, {0.875f, -1.95f, 2.75f}});
}
END_TEST

START_TEST(test_sgd_weight_decay)
{
    /* d_p = g + 0.1 p: step 1 d_p = [0.6, -1.2, 2.3]. */
    sgd_case(&(loom_sgd_options){.lr = 0.1, .weight_decay = 0.1},
             (const float[3][3]){
                 {0.94f, -1.88f, 2.77f}, {0.9556f, -1.9112f, 2.6423f}, {0.846044f, -1.892088f, 2.665877f}});
}
END_TEST

START_TEST(test_sgd_momentum)
{
    /* buf1 = g1; buf2 = 0.9 g1 + g2 = [0.2, -0.4, 2.8]; buf3 = 0.9 buf2 + g3. */
    sgd_case(&(loom_sgd_options){.lr = 0.1, .momentum = 0.9},
             (const float[3][3]){{0.95f, -1.9f, 2.8f}, {0.93f, -1.86f, 2.52f}, {0.812f, -1.824f, 2.318f}});
}
END_TEST

START_TEST(test_sgd_dampening)
{
    /* The first buffer is g1 undamped; then buf = 0.9 buf + 0.5 g. */
    sgd_case(&(loom_sgd_options){.lr = 0.1, .momentum = 0.9, .dampening = 0.5},
             (const float[3][3]){{0.95f, -1.9f, 2.8f}, {0.9175f, -1.835f, 2.57f}, {0.83825f, -1.7765f, 2.388f}});
}
END_TEST

START_TEST(test_sgd_nesterov_weight_decay)
{
    /* d_p = g + 0.1 p; buf as momentum; p -= 0.1 (d_p + 0.9 buf). */
    sgd_case(&(loom_sgd_options){.lr = 0.1, .momentum = 0.9, .weight_decay = 0.1, .nesterov = true},
             (const float[3][3]){{0.886f, -1.772f, 2.563f},
                                 {0.868066f, -1.736132f, 2.138003f},
                                 {0.630906146f, -1.641812292f, 1.922950643f}});
}
END_TEST

START_TEST(test_sgd_buffer_is_a_copy)
{
    /* The first momentum buffer is a copy of the gradient: overwriting the
     * gradient in place afterwards (as gradient clipping may) leaves it. */
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *p = leaf(ctx, P0, LOOM_SHAPE(3));
    loom_optimizer *opt = loom_sgd(ctx, 1, &p, &(loom_sgd_options){.lr = 0.1, .momentum = 0.9});
    ck_assert(opt != NULL);
    set_grad(p, GRADS[0]);
    ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
    ck_assert_int_eq(loom_scope_begin(ctx), LOOM_OK);
    loom_tensor *g = loom_tensor_grad(p);
    ck_assert_int_eq(loom_tensor_assign(g, F32(ctx, LOOM_SHAPE(3), -0.25f, 0.5f, 1)), LOOM_OK);
    ck_assert_int_eq(loom_scope_end(ctx), LOOM_OK);
    ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
    assert_values_f32(p, ((const float[]){0.93f, -1.86f, 2.52f}), 3, 1e-6);
    loom_optimizer_free(opt);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- Adam / AdamW ---------------------------------------------------------- */

START_TEST(test_adam_defaults)
{
    loom_adam_options a = loom_adam_defaults(), w = loom_adamw_defaults();
    ck_assert(a.lr == 1e-3 && a.beta1 == 0.9 && a.beta2 == 0.999 && a.eps == 1e-8 && a.weight_decay == 0 &&
              !a.amsgrad);
    ck_assert(w.lr == 1e-3 && w.beta1 == 0.9 && w.beta2 == 0.999 && w.eps == 1e-8 && w.weight_decay == 1e-2 &&
              !w.amsgrad);
    /* NULL options are those defaults: the first step moves each element
     * by lr * g / (|g| + eps). */
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *p = leaf(ctx, P0, LOOM_SHAPE(3));
    loom_optimizer *opt = loom_adam(ctx, 1, &p, NULL);
    ck_assert(opt != NULL);
    ck_assert(loom_optimizer_lr(opt, 0) == 1e-3);
    set_grad(p, GRADS[0]);
    ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
    assert_values_f32(p, ((const float[]){0.999f, -1.999f, 2.999f}), 3, 1e-7);
    loom_optimizer_free(opt);
    /* AdamW's default decay: p * (1 - 1e-3 * 1e-2) first. */
    loom_tensor *q = leaf(ctx, P0, LOOM_SHAPE(3));
    opt = loom_adamw(ctx, 1, &q, NULL);
    ck_assert(opt != NULL);
    set_grad(q, GRADS[0]);
    ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
    assert_values_f32(q, ((const float[]){0.99899f, -1.99898f, 2.99897f}), 3, 1e-7);
    loom_optimizer_free(opt);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_adam)
{
    loom_adam_options o = loom_adam_defaults();
    o.lr = 0.01;
    adam_case(loom_adam, &o,
              (const float[3][3]){{0.9900000002f, -1.99f, 2.99f},
                                  {0.9873366299f, -1.98733663f, 2.980678204f},
                                  {0.980755514f, -1.985277837f, 2.97504159f}});
}
END_TEST

START_TEST(test_adam_weight_decay)
{
    /* g += 0.1 p before the moments. */
    loom_adam_options o = loom_adam_defaults();
    o.lr = 0.01;
    o.weight_decay = 0.1;
    adam_case(loom_adam, &o,
              (const float[3][3]){{0.9900000002f, -1.99f, 2.99f},
                                  {0.9853191993f, -1.985312259f, 2.98050551f},
                                  {0.9779775548f, -1.98072136f, 2.973675033f}});
}
END_TEST

START_TEST(test_adam_amsgrad)
{
    /* With betas (0.8, 0.9), v of elements 1 and 2 decreases on step 3
     * (g3 is 0 and -0.5 there), so max(vmax, v) differs from v: without
     * amsgrad step 3 gives [0.9811226331, -1.986266111, 2.9756291]. */
    loom_adam_options o = loom_adam_defaults();
    o.lr = 0.01;
    o.beta1 = 0.8;
    o.beta2 = 0.9;
    adam_case(loom_adam, &o,
              (const float[3][3]){{0.9900000002f, -1.99f, 2.99f},
                                  {0.9878577183f, -1.987857718f, 2.980716778f},
                                  {0.9811226331f, -1.986266111f, 2.9756291f}});
    o.amsgrad = true;
    adam_case(loom_adam, &o,
              (const float[3][3]){{0.9900000002f, -1.99f, 2.99f},
                                  {0.9878577183f, -1.987857718f, 2.980716778f},
                                  {0.9811226331f, -1.986347787f, 2.975746588f}});
}
END_TEST

START_TEST(test_adamw)
{
    /* p *= 1 - 0.01 * 0.1 first, then Adam without the decay term. */
    loom_adam_options o = loom_adamw_defaults();
    o.lr = 0.01;
    o.weight_decay = 0.1;
    adam_case(loom_adamw, &o,
              (const float[3][3]){{0.9890000002f, -1.988f, 2.987f},
                                  {0.9853476299f, -1.98334863f, 2.974691204f},
                                  {0.9777811663f, -1.979306488f, 2.966079899f}});
}
END_TEST

/* ---- groups, skipping, state ----------------------------------------------- */

START_TEST(test_groups_lr)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *p = leaf(ctx, P0, LOOM_SHAPE(3));
    loom_tensor *q = leaf(ctx, (const float[]){1, 2, 3, 4}, LOOM_SHAPE(2, 2));
    loom_tensor *r = leaf(ctx, (const float[]){5}, LOOM_SHAPE(1));
    loom_optimizer *opt = loom_sgd(ctx, 1, &p, &(loom_sgd_options){.lr = 0.1});
    ck_assert(opt != NULL);
    ck_assert_int_eq(loom_optimizer_add_group(opt, 2, (loom_tensor *[]){q, r}, 0.01), 1);
    ck_assert_int_eq(loom_optimizer_num_groups(opt), 2);
    ck_assert(loom_optimizer_lr(opt, 0) == 0.1 && loom_optimizer_lr(opt, 1) == 0.01);
    set_grad(p, GRADS[0]);
    set_grad(q, (const float[]){1, -1, 10, 0});
    set_grad(r, (const float[]){-100});
    ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
    assert_values_f32(p, ((const float[]){0.95f, -1.9f, 2.8f}), 3, 1e-6);
    assert_values_f32(q, ((const float[]){0.99f, 2.01f, 2.9f, 4}), 4, 1e-6);
    assert_values_f32(r, ((const float[]){6}), 1, 1e-6);
    /* set_lr changes only its group. */
    ck_assert_int_eq(loom_optimizer_set_lr(opt, 1, 0.1), LOOM_OK);
    ck_assert(loom_optimizer_lr(opt, 0) == 0.1 && loom_optimizer_lr(opt, 1) == 0.1);
    ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK); /* the same gradients again */
    assert_values_f32(p, ((const float[]){0.9f, -1.8f, 2.6f}), 3, 1e-6);
    assert_values_f32(q, ((const float[]){0.89f, 2.11f, 1.9f, 4}), 4, 1e-6);
    assert_values_f32(r, ((const float[]){16}), 1, 1e-6);
    /* An lr of 0 may be set (schedulers reach it): nothing moves. */
    ck_assert_int_eq(loom_optimizer_set_lr(opt, 0, 0), LOOM_OK);
    ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
    assert_values_f32(p, ((const float[]){0.9f, -1.8f, 2.6f}), 3, 1e-6);
    loom_optimizer_free(opt);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_skips_params_without_grad)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *p = leaf(ctx, P0, LOOM_SHAPE(3));
    loom_tensor *q = leaf(ctx, P0, LOOM_SHAPE(3));
    loom_tensor *frozen = leaf(ctx, P0, LOOM_SHAPE(3));
    loom_tensor *plain = loom_tensor_from_array(ctx, LOOM_FLOAT32, P0, LOOM_SHAPE(3)); /* no requires_grad */
    loom_adam_options o = loom_adam_defaults();
    o.lr = 0.01;
    loom_optimizer *opt = loom_adam(ctx, 4, (loom_tensor *[]){p, q, frozen, plain}, &o);
    ck_assert_msg(opt != NULL, "%s", loom_last_error());
    /* `frozen` has a gradient but no longer requires grad: skipped too. */
    set_grad(frozen, GRADS[0]);
    ck_assert_int_eq(loom_tensor_set_requires_grad(frozen, false), LOOM_OK);
    ck_assert(loom_tensor_has_grad(frozen));

    /* Step 1: only p has a gradient. */
    set_grad(p, GRADS[0]);
    int64_t before = live(ctx);
    ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
    ck_assert_int_eq(live(ctx), before + 3); /* p's m, v and step count, nothing for q */
    assert_values_f32(p, ((const float[]){0.9900000002f, -1.99f, 2.99f}), 3, 1e-6);
    assert_values_f32(q, P0, 3, 0);
    assert_values_f32(frozen, P0, 3, 0);
    assert_values_f32(plain, P0, 3, 0);

    /* Step 2: q's state is created now and its step count starts at 1, so
     * its update is a first Adam step, while p takes a second one. */
    set_grad(p, GRADS[1]);
    set_grad(q, GRADS[1]);
    ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
    assert_values_f32(p, ((const float[]){0.9873366299f, -1.98733663f, 2.980678204f}), 3, 1e-6);
    assert_values_f32(q, ((const float[]){1.01f, -2.01f, 2.99f}), 3, 1e-6);
    assert_values_f32(frozen, P0, 3, 0);

    /* zero_grad drops every gradient: the next step changes nothing. */
    loom_optimizer_zero_grad(opt);
    ck_assert(!loom_tensor_has_grad(p) && !loom_tensor_has_grad(q) && !loom_tensor_has_grad(frozen));
    ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
    assert_values_f32(q, ((const float[]){1.01f, -2.01f, 2.99f}), 3, 1e-6);
    loom_optimizer_free(opt);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_state_ownership_no_leaks)
{
    /* A training loop with a scope per step: the optimizer's state outlives
     * the scopes, the step's temporaries do not, and free releases the
     * state. Adam with amsgrad keeps three tensors per parameter. */
    loom_ctx *ctx = test_ctx(2, NULL);
    loom_tensor *w = leaf(ctx, (const float[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, LOOM_SHAPE(4, 3));
    loom_tensor *b = leaf(ctx, (const float[]){0, 0, 0}, LOOM_SHAPE(3));
    loom_tensor *x = loom_rand(ctx, LOOM_SHAPE(8, 4));
    int64_t base = live(ctx);
    loom_adam_options o = loom_adam_defaults();
    o.amsgrad = true;
    o.weight_decay = 0.01;
    loom_optimizer *opt = loom_adam(ctx, 2, (loom_tensor *[]){w, b}, &o);
    ck_assert(opt != NULL);
    double prev = INFINITY;
    for (int step = 0; step < 20; step++) {
        ck_assert_int_eq(loom_scope_begin(ctx), LOOM_OK);
        loom_optimizer_zero_grad(opt);
        loom_tensor *y = loom_add(loom_matmul(x, w), b);
        loom_tensor *loss = loom_mean(loom_mul(y, y), 0, NULL, false);
        double l;
        ck_assert_int_eq(loom_tensor_item(loss, &l), LOOM_OK);
        ck_assert_msg(l < prev, "loss %g did not decrease from %g", l, prev);
        prev = l;
        ck_assert_int_eq(loom_backward(loss, NULL, NULL), LOOM_OK);
        ck_assert_msg(loom_optimizer_step(opt) == LOOM_OK, "%s", loom_last_error());
        ck_assert_int_eq(loom_scope_end(ctx), LOOM_OK);
        /* 6 state tensors, 2 step counts and the 2 gradients. */
        ck_assert_int_eq(live(ctx), base + 10);
    }
    loom_optimizer_zero_grad(opt);
    ck_assert_int_eq(live(ctx), base + 8);
    loom_optimizer_free(opt);
    ck_assert_int_eq(live(ctx), base);
    ck_assert_int_eq(loom_scope_depth(ctx), 0);
    ck_assert(loom_grad_enabled(ctx));
    loom_optimizer_free(NULL);
    loom_optimizer_zero_grad(NULL);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_step_after_pending_reader)
{
    /* An op recorded from a parameter before the step and run after it
     * would see the new values: it fails instead ("modified in place"),
     * and the step itself, and the optimizer, are unaffected. */
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *p = leaf(ctx, P0, LOOM_SHAPE(3));
    loom_optimizer *opt = loom_sgd(ctx, 1, &p, &(loom_sgd_options){.lr = 0.1, .momentum = 0.9});
    ck_assert(opt != NULL);
    ck_assert_int_eq(loom_optimizer_step(NULL), LOOM_ERR_INVALID_ARG);
    set_grad(p, GRADS[0]);
    ck_assert_int_eq(loom_scope_begin(ctx), LOOM_OK);
    loom_tensor *pending = loom_mul_scalar(p, 2.0);
    ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
    ck_assert_int_eq(loom_tensor_eval(pending), LOOM_ERR_STATE);
    ck_assert_msg(strstr(loom_last_error(), "modified in place") != NULL, "%s", loom_last_error());
    ck_assert_int_eq(loom_scope_end(ctx), LOOM_OK);
    assert_values_f32(p, ((const float[]){0.95f, -1.9f, 2.8f}), 3, 1e-6);
    set_grad(p, GRADS[1]);
    ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
    assert_values_f32(p, ((const float[]){0.93f, -1.86f, 2.52f}), 3, 1e-6);
    ck_assert_int_eq(loom_scope_depth(ctx), 0);
    loom_optimizer_free(opt);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- validation ------------------------------------------------------------ */

START_TEST(test_validation)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *p = leaf(ctx, P0, LOOM_SHAPE(3));
    loom_tensor *q = leaf(ctx, P0, LOOM_SHAPE(3));
    loom_tensor *ps[1] = {p};
    loom_adam_options a = loom_adam_defaults();

    assert_error(loom_sgd(ctx, 0, ps, &(loom_sgd_options){.lr = 0.1}), LOOM_ERR_INVALID_ARG, "no parameters");
    assert_error(loom_sgd(ctx, 1, NULL, &(loom_sgd_options){.lr = 0.1}), LOOM_ERR_INVALID_ARG, "no parameters");
    assert_error(loom_adam(ctx, 0, ps, NULL), LOOM_ERR_INVALID_ARG, "no parameters");
    assert_error(loom_adamw(ctx, -1, ps, NULL), LOOM_ERR_INVALID_ARG, "no parameters");
    assert_error(loom_sgd(ctx, 1, (loom_tensor *[]){NULL}, &(loom_sgd_options){.lr = 0.1}), LOOM_ERR_INVALID_ARG,
                 "parameter 0 is NULL");
    assert_error(loom_sgd(ctx, 2, (loom_tensor *[]){p, p}, &(loom_sgd_options){.lr = 0.1}), LOOM_ERR_INVALID_ARG,
                 "appears twice");
    assert_error(loom_sgd(NULL, 1, ps, &(loom_sgd_options){.lr = 0.1}), LOOM_ERR_INVALID_ARG, "context");
    assert_error(loom_sgd(ctx, 1, ps, NULL), LOOM_ERR_INVALID_ARG, "learning rate is required");

    /* Learning rates: the message says which problem. */
    assert_error(loom_sgd(ctx, 1, ps, &(loom_sgd_options){.lr = NAN}), LOOM_ERR_INVALID_ARG,
                 "learning rate nan is not finite");
    assert_error(loom_sgd(ctx, 1, ps, &(loom_sgd_options){.lr = INFINITY}), LOOM_ERR_INVALID_ARG, "not finite");
    assert_error(loom_sgd(ctx, 1, ps, &(loom_sgd_options){.lr = -0.1}), LOOM_ERR_INVALID_ARG,
                 "learning rate -0.1 is not positive");
    assert_error(loom_sgd(ctx, 1, ps, &(loom_sgd_options){0}), LOOM_ERR_INVALID_ARG, "learning rate 0 is not positive");
    a.lr = NAN;
    assert_error(loom_adam(ctx, 1, ps, &a), LOOM_ERR_INVALID_ARG, "adam: learning rate nan is not finite");
    a.lr = -1;
    assert_error(loom_adamw(ctx, 1, ps, &a), LOOM_ERR_INVALID_ARG, "adamw: learning rate -1 is not positive");

    /* SGD's other options. */
    assert_error(loom_sgd(ctx, 1, ps, &(loom_sgd_options){.lr = 0.1, .momentum = -0.5}), LOOM_ERR_INVALID_ARG,
                 "momentum -0.5");
    assert_error(loom_sgd(ctx, 1, ps, &(loom_sgd_options){.lr = 0.1, .momentum = NAN}), LOOM_ERR_INVALID_ARG,
                 "momentum nan");
    assert_error(loom_sgd(ctx, 1, ps, &(loom_sgd_options){.lr = 0.1, .weight_decay = -1}), LOOM_ERR_INVALID_ARG,
                 "weight_decay -1");
    assert_error(loom_sgd(ctx, 1, ps, &(loom_sgd_options){.lr = 0.1, .dampening = -1}), LOOM_ERR_INVALID_ARG,
                 "dampening -1");
    assert_error(loom_sgd(ctx, 1, ps, &(loom_sgd_options){.lr = 0.1, .nesterov = true}), LOOM_ERR_INVALID_ARG,
                 "Nesterov momentum requires a momentum > 0 and zero dampening");
    assert_error(loom_sgd(ctx, 1, ps, &(loom_sgd_options){.lr = 0.1, .momentum = 0.9, .dampening = 0.1,
                                                           .nesterov = true}),
                 LOOM_ERR_INVALID_ARG, "zero dampening");

    /* Adam's. */
    a = loom_adam_defaults();
    a.eps = -1e-8;
    assert_error(loom_adam(ctx, 1, ps, &a), LOOM_ERR_INVALID_ARG, "eps -1e-08");
    a = loom_adam_defaults();
    a.beta1 = 1.0;
    assert_error(loom_adam(ctx, 1, ps, &a), LOOM_ERR_INVALID_ARG, "beta1 1 is outside [0, 1)");
    a = loom_adam_defaults();
    a.beta2 = -0.1;
    assert_error(loom_adam(ctx, 1, ps, &a), LOOM_ERR_INVALID_ARG, "beta2 -0.1 is outside [0, 1)");
    a = loom_adam_defaults();
    a.beta2 = NAN;
    assert_error(loom_adamw(ctx, 1, ps, &a), LOOM_ERR_INVALID_ARG, "beta2 nan");
    a = loom_adam_defaults();
    a.weight_decay = -0.01;
    assert_error(loom_adamw(ctx, 1, ps, &a), LOOM_ERR_INVALID_ARG, "weight_decay -0.01");

    /* Groups and learning rates of an existing optimizer. */
    loom_optimizer *opt = loom_sgd(ctx, 1, ps, &(loom_sgd_options){.lr = 0.1});
    ck_assert(opt != NULL);
    ck_assert_int_eq(loom_optimizer_add_group(opt, 1, &q, NAN), -1);
    ck_assert_str_eq(loom_last_error(), "optimizer_add_group: learning rate nan is not finite");
    ck_assert_int_eq(loom_optimizer_add_group(opt, 0, &q, 0.1), -1);
    ck_assert(strstr(loom_last_error(), "no parameters") != NULL);
    ck_assert_int_eq(loom_optimizer_add_group(opt, 1, ps, 0.1), -1);
    ck_assert(strstr(loom_last_error(), "already in parameter group 0") != NULL);
    ck_assert_int_eq(loom_optimizer_add_group(NULL, 1, &q, 0.1), -1);
    ck_assert_int_eq(loom_optimizer_num_groups(opt), 1);
    ck_assert_int_eq(loom_optimizer_set_lr(opt, 0, -0.1), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_optimizer_set_lr(opt, 0, NAN), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_optimizer_set_lr(opt, 1, 0.1), LOOM_ERR_RANGE);
    ck_assert(isnan(loom_optimizer_lr(opt, 3)));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_RANGE);
    ck_assert(isnan(loom_optimizer_lr(NULL, 0)));
    ck_assert_int_eq(loom_optimizer_num_groups(NULL), 0);

    /* Schedulers. */
    assert_error(loom_step_lr(NULL, 1, 0.5), LOOM_ERR_INVALID_ARG, "optimizer is NULL");
    assert_error(loom_step_lr(opt, 0, 0.5), LOOM_ERR_INVALID_ARG, "step_size 0");
    assert_error(loom_step_lr(opt, 1, NAN), LOOM_ERR_INVALID_ARG, "gamma nan");
    assert_error(loom_step_lr(opt, 1, -0.5), LOOM_ERR_INVALID_ARG, "gamma -0.5");
    assert_error(loom_cosine_annealing_lr(opt, 0, 0), LOOM_ERR_INVALID_ARG, "T_max 0");
    assert_error(loom_cosine_annealing_lr(opt, 10, -1), LOOM_ERR_INVALID_ARG, "eta_min -1");
    assert_error(loom_cosine_annealing_lr(opt, 10, INFINITY), LOOM_ERR_INVALID_ARG, "eta_min inf");
    ck_assert_int_eq(loom_scheduler_step(NULL), LOOM_ERR_INVALID_ARG);
    loom_scheduler_free(NULL);
    ck_assert(loom_optimizer_lr(opt, 0) == 0.1); /* failed schedulers changed nothing */

    /* Another context's parameter. */
    loom_ctx *other = test_ctx(1, NULL);
    loom_tensor *r = leaf(other, (const float[]){1}, LOOM_SHAPE(1));
    ck_assert_int_eq(loom_optimizer_add_group(opt, 1, &r, 0.1), -1);
    ck_assert(strstr(loom_last_error(), "another context") != NULL);
    loom_ctx_free(other);

    loom_optimizer_free(opt);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- schedulers ------------------------------------------------------------- */

static loom_optimizer *two_groups(loom_ctx *ctx, double lr0, double lr1)
{
    loom_tensor *p = leaf(ctx, (const float[]){1}, LOOM_SHAPE(1));
    loom_tensor *q = leaf(ctx, (const float[]){1}, LOOM_SHAPE(1));
    loom_optimizer *opt = loom_sgd(ctx, 1, &p, &(loom_sgd_options){.lr = lr0});
    ck_assert(opt != NULL);
    ck_assert_int_eq(loom_optimizer_add_group(opt, 1, &q, lr1), 1);
    return opt;
}

static void check_lrs(loom_optimizer *opt, loom_scheduler *s, const double *want, int epochs)
{
    for (int e = 0; e < epochs; e++) {
        if (e > 0) ck_assert_int_eq(loom_scheduler_step(s), LOOM_OK);
        for (int g = 0; g < 2; g++) {
            double got = loom_optimizer_lr(opt, g), w = want[2 * e + g];
            ck_assert_msg(fabs(got - w) <= 1e-12 * fabs(w) + 1e-15, "epoch %d group %d: lr %.17g, expected %.17g",
                          e, g, got, w);
        }
    }
}

START_TEST(test_step_lr)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_optimizer *opt = two_groups(ctx, 1.0, 0.5);
    loom_scheduler *s = loom_step_lr(opt, 2, 0.1);
    ck_assert(s != NULL);
    /* lr = initial * 0.1^(epoch / 2) */
    check_lrs(opt, s, (const double[]){1, 0.5, 1, 0.5, 0.1, 0.05, 0.1, 0.05, 0.01, 0.005}, 5);
    loom_scheduler_free(s);
    loom_optimizer_free(opt);

    /* PyTorch's values. */
    opt = two_groups(ctx, 0.1, 0.02);
    s = loom_step_lr(opt, 3, 0.5);
    check_lrs(opt, s, optim_steplr, OPTIM_STEP_EPOCHS);
    loom_scheduler_free(s);
    loom_optimizer_free(opt);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_cosine_annealing_lr)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_optimizer *opt = two_groups(ctx, 1.0, 0.5);
    loom_scheduler *s = loom_cosine_annealing_lr(opt, 2, 0);
    ck_assert(s != NULL);
    /* (1 + cos(pi e / 2)) / 2 * initial: 1, 0.5, 0, then up again past
     * T_max: 0.5, 1 (PyTorch's closed form). */
    check_lrs(opt, s, (const double[]){1, 0.5, 0.5, 0.25, 0, 0, 0.5, 0.25, 1, 0.5}, 5);
    loom_scheduler_free(s);
    loom_optimizer_free(opt);

    /* PyTorch's values, to three times T_max. */
    opt = two_groups(ctx, 0.1, 0.02);
    s = loom_cosine_annealing_lr(opt, 4, 0.001);
    check_lrs(opt, s, optim_coslr, OPTIM_COS_EPOCHS);
    loom_scheduler_free(s);
    loom_optimizer_free(opt);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_scheduler_drives_optimizer)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *p = leaf(ctx, (const float[]){1}, LOOM_SHAPE(1));
    loom_optimizer *opt = loom_sgd(ctx, 1, &p, &(loom_sgd_options){.lr = 0.1});
    loom_scheduler *s = loom_step_lr(opt, 1, 0.5);
    ck_assert(s != NULL);
    const float want[4] = {0.9f, 0.85f, 0.825f, 0.8125f};
    for (int e = 0; e < 4; e++) {
        set_grad(p, (const float[]){1});
        ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
        ck_assert_int_eq(loom_scheduler_step(s), LOOM_OK);
        assert_values_f32(p, &want[e], 1, 1e-6);
    }
    loom_scheduler_free(s);

    /* A second scheduler starts from the initial lr (0.1), not from the
     * current one (0.00625), as PyTorch's group['initial_lr'] does. */
    ck_assert(fabs(loom_optimizer_lr(opt, 0) - 0.00625) < 1e-15);
    s = loom_cosine_annealing_lr(opt, 2, 0);
    ck_assert(loom_optimizer_lr(opt, 0) == 0.1);
    /* A group added after the scheduler keeps its own lr. */
    loom_tensor *q = leaf(ctx, (const float[]){1}, LOOM_SHAPE(1));
    ck_assert_int_eq(loom_optimizer_add_group(opt, 1, &q, 0.3), 1);
    ck_assert_int_eq(loom_scheduler_step(s), LOOM_OK);
    ck_assert(fabs(loom_optimizer_lr(opt, 0) - 0.05) < 1e-15);
    ck_assert(loom_optimizer_lr(opt, 1) == 0.3);
    /* Freeing the scheduler after the optimizer is fine. */
    loom_optimizer_free(opt);
    loom_scheduler_free(s);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- PyTorch parity ------------------------------------------------------- */

/* BCE composed of tensor ops, as PyTorch defines it: -mean(y log p +
 * (1 - y) log(1 - p)), each log clamped at -100 (its gradient is computed
 * by autograd through the ops rather than by BCELoss's own formula). */
static loom_tensor *bce(loom_tensor *prob, loom_tensor *y)
{
    loom_tensor *lp = loom_clamp(loom_log(prob), -100, INFINITY);
    loom_tensor *lq = loom_clamp(loom_log(loom_sub(loom_ones(loom_tensor_ctx(prob), LOOM_FLOAT32, LOOM_SHAPE(1)), prob)),
                                 -100, INFINITY);
    loom_tensor *one_minus_y = loom_add_scalar(loom_neg(y), 1.0);
    return loom_neg(loom_mean(loom_add(loom_mul(y, lp), loom_mul(one_minus_y, lq)), 0, NULL, false));
}

static void check_close(const float *got, const float *want, int n, double rtol, const char *what, int step)
{
    for (int i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - want[i]) <= rtol * fabs(want[i]) + 1e-7, "%s, step %d, element %d: %.9g, "
                      "PyTorch %.9g", what, step, i, got[i], want[i]);
}

/* One fixture case; the loss is nn's loom_bce_loss or the composed one. */
static void parity_case(const optim_case *c, int threads, bool nn_loss)
{
    loom_ctx *ctx = test_ctx(threads, NULL);
    /* fc1.weight [5, 4], fc1.bias [5], fc2.weight [1, 5], fc2.bias [1] */
    const float *w = optim_w0;
    loom_tensor *w1 = leaf(ctx, w, LOOM_SHAPE(OPTIM_HIDDEN, OPTIM_IN));
    loom_tensor *b1 = leaf(ctx, w + OPTIM_HIDDEN * OPTIM_IN, LOOM_SHAPE(OPTIM_HIDDEN));
    loom_tensor *w2 = leaf(ctx, w + OPTIM_HIDDEN * OPTIM_IN + OPTIM_HIDDEN, LOOM_SHAPE(1, OPTIM_HIDDEN));
    loom_tensor *b2 = leaf(ctx, w + OPTIM_NPARAM - 1, LOOM_SHAPE(1));
    loom_tensor *params[4] = {w1, b1, w2, b2};
    loom_tensor *x = loom_tensor_from_array(ctx, LOOM_FLOAT32, optim_x, LOOM_SHAPE(OPTIM_BATCH, OPTIM_IN));
    loom_tensor *y = loom_tensor_from_array(ctx, LOOM_FLOAT32, optim_y, LOOM_SHAPE(OPTIM_BATCH, 1));

    int n0 = c->lr2 > 0 ? 2 : 4;
    loom_optimizer *opt;
    if (c->kind == 0) {
        loom_sgd_options o = {.lr = c->lr, .momentum = c->momentum, .dampening = c->dampening,
                              .weight_decay = c->weight_decay, .nesterov = c->nesterov};
        opt = loom_sgd(ctx, n0, params, &o);
    } else {
        loom_adam_options o = {.lr = c->lr, .beta1 = c->beta1, .beta2 = c->beta2, .eps = c->eps,
                               .weight_decay = c->weight_decay, .amsgrad = c->amsgrad};
        opt = (c->kind == 1 ? loom_adam : loom_adamw)(ctx, n0, params, &o);
    }
    ck_assert_msg(opt != NULL, "%s: %s", c->name, loom_last_error());
    if (c->lr2 > 0) ck_assert_int_eq(loom_optimizer_add_group(opt, 2, params + 2, c->lr2), 1);

    for (int step = 0; step < OPTIM_STEPS; step++) {
        ck_assert_int_eq(loom_scope_begin(ctx), LOOM_OK);
        loom_optimizer_zero_grad(opt);
        loom_tensor *h = loom_relu(loom_add(loom_matmul(x, loom_transpose(w1, 0, 1)), b1));
        loom_tensor *out = loom_sigmoid(loom_add(loom_matmul(h, loom_transpose(w2, 0, 1)), b2));
        loom_tensor *loss = nn_loss ? loom_bce_loss(out, y, LOOM_REDUCTION_MEAN) : bce(out, y);
        double l;
        ck_assert_msg(loom_tensor_item(loss, &l) == LOOM_OK, "%s", loom_last_error());
        float lf = (float)l;
        check_close(&lf, &c->loss[step], 1, 1e-5, c->name, step + 1);
        ck_assert_msg(loom_backward(loss, NULL, NULL) == LOOM_OK, "%s", loom_last_error());
        ck_assert_msg(loom_optimizer_step(opt) == LOOM_OK, "%s: %s", c->name, loom_last_error());
        ck_assert_int_eq(loom_scope_end(ctx), LOOM_OK);

        float got[OPTIM_NPARAM];
        size_t off = 0;
        for (int i = 0; i < 4; i++) {
            size_t n = (size_t)loom_tensor_numel(params[i]);
            ck_assert_int_eq(loom_tensor_copy_to(params[i], got + off, n * sizeof(float)), LOOM_OK);
            off += n;
        }
        ck_assert_int_eq((int)off, OPTIM_NPARAM);
        check_close(got, c->after[step], OPTIM_NPARAM, 1e-5, c->name, step + 1);
    }
    loom_optimizer_free(opt);
    loom_ctx_free(ctx);
}

START_TEST(test_pytorch_parity)
{
    int ncases = (int)(sizeof optim_cases / sizeof optim_cases[0]);
    for (int i = 0; i < ncases; i++) {
        parity_case(&optim_cases[i], 1, true);
        parity_case(&optim_cases[i], 2, true);
        parity_case(&optim_cases[i], 1, false);
    }
}
END_TEST

/* loom_adam_step_fused against the formula evaluated by hand in float, and
 * its argument checks. */
START_TEST(test_adam_step_fused)
{
    loom_ctx *ctx = loom_ctx_create(NULL);
    const float pv[3] = {1.0f, -2.0f, 0.5f}, gv[3] = {0.1f, 0.2f, -0.3f};
    const float mv[3] = {0.01f, -0.02f, 0.03f}, vv[3] = {0.001f, 0.002f, 0.003f};
    loom_tensor *p = loom_tensor_from_array(ctx, LOOM_FLOAT32, pv, LOOM_SHAPE(3));
    loom_tensor *g = loom_tensor_from_array(ctx, LOOM_FLOAT32, gv, LOOM_SHAPE(3));
    loom_tensor *m = loom_tensor_from_array(ctx, LOOM_FLOAT32, mv, LOOM_SHAPE(3));
    loom_tensor *v = loom_tensor_from_array(ctx, LOOM_FLOAT32, vv, LOOM_SHAPE(3));
    const double b1 = 0.9, b2 = 0.999, step = 0.01, bc2 = 0.5, eps = 1e-8;
    for (int first = 0; first < 2; first++) {
        loom_tensor *f = first ? loom_adam_step_fused(p, g, NULL, NULL, b1, b2, step, bc2, eps)
                               : loom_adam_step_fused(p, g, m, v, b1, b2, step, bc2, eps);
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(loom_tensor_ndim(f), 2);
        ck_assert_int_eq(loom_tensor_size(f, 0), 3);
        float want[9];
        for (int i = 0; i < 3; i++) {
            float mi = (first ? 0.0f : mv[i] * (float)b1) + gv[i] * (float)(1 - b1);
            float vi = (first ? 0.0f : vv[i] * (float)b2) + (float)(1 - b2) * (gv[i] * gv[i]);
            float d = sqrtf(vi) / (float)sqrt(bc2) + (float)eps;
            want[i] = pv[i] + (float)-step * (mi / d);
            want[3 + i] = mi;
            want[6 + i] = vi;
        }
        assert_values_f32(f, want, 9, 1e-6);
    }
    /* Errors: sizes, dtype, bias correction. */
    loom_tensor *g4 = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(4));
    ck_assert_ptr_null(loom_adam_step_fused(p, g4, m, v, b1, b2, step, bc2, eps));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "adam_step"));
    loom_tensor *gi = loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(3));
    ck_assert_ptr_null(loom_adam_step_fused(p, gi, m, v, b1, b2, step, bc2, eps));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_DTYPE);
    ck_assert_ptr_null(loom_adam_step_fused(p, g, m, v, b1, b2, step, 0.0, eps));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_INVALID_ARG);
    loom_ctx_free(ctx);
}
END_TEST

/* The op-by-op SGD update (what loom_sgd recorded before the fused step):
 * row 0 the new p, row 1 the new buf (NULL without momentum). */
static void sgd_by_ops(loom_tensor *p, loom_tensor *g, loom_tensor *buf, double lr, double mom, double damp,
                       double wd, bool nesterov, loom_tensor **p_new, loom_tensor **buf_new)
{
    loom_tensor *d = g;
    if (wd != 0) d = loom_add(d, loom_mul_scalar(p, wd));
    *buf_new = NULL;
    if (mom != 0) {
        loom_tensor *b = buf ? loom_add(loom_mul_scalar(buf, mom), loom_mul_scalar(d, 1.0 - damp))
                             : loom_mul_scalar(d, 1.0);
        *buf_new = b;
        d = nesterov ? loom_add(d, loom_mul_scalar(b, mom)) : b;
    }
    *p_new = loom_sub(p, loom_mul_scalar(d, lr));
}

static void assert_same_bits(loom_tensor *a, loom_tensor *b, int64_t n, const char *what)
{
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    ck_assert(x && y);
    ck_assert_int_eq(loom_tensor_copy_to(a, x, sizeof(float) * (size_t)n), LOOM_OK);
    ck_assert_int_eq(loom_tensor_copy_to(b, y, sizeof(float) * (size_t)n), LOOM_OK);
    ck_assert_msg(memcmp(x, y, sizeof(float) * (size_t)n) == 0, "%s: fused and op-by-op differ", what);
    free(x);
    free(y);
}

/* loom_sgd_step_fused gives bitwise what the op-by-op form gives, for every
 * option, on 1 and 2 threads (the fused kernel's team splits the elements);
 * and its argument checks. */
START_TEST(test_sgd_step_fused)
{
    const int64_t n = 100003;
    static const struct {
        double mom, damp, wd;
        bool nesterov, first;
    } cases[] = {{0, 0, 0, false, false},    {0, 0, 1e-4, false, false},  {0.9, 0, 0, false, true},
                 {0.9, 0, 5e-4, false, true}, {0.9, 0, 0, false, false},   {0.9, 0.5, 1e-4, false, false},
                 {0.9, 0, 1e-4, true, false}, {0.9, 0, 0, true, true}};
    for (int threads = 1; threads <= 2; threads++) {
        loom_ctx *ctx = test_ctx(threads, "ref");
        loom_manual_seed(ctx, 7);
        loom_tensor *p = loom_randn(ctx, LOOM_SHAPE(n)), *g = loom_randn(ctx, LOOM_SHAPE(n));
        loom_tensor *buf = loom_randn(ctx, LOOM_SHAPE(n));
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            const double lr = 0.0123;
            loom_tensor *b = cases[c].mom != 0 && !cases[c].first ? buf : NULL;
            loom_tensor *f = loom_sgd_step_fused(p, g, b, lr, cases[c].mom, cases[c].damp, cases[c].wd,
                                                 cases[c].nesterov);
            ck_assert_msg(f != NULL, "%s", loom_last_error());
            ck_assert_int_eq(loom_tensor_size(f, 0), cases[c].mom != 0 ? 2 : 1);
            loom_tensor *pw, *bw;
            sgd_by_ops(p, g, b, lr, cases[c].mom, cases[c].damp, cases[c].wd, cases[c].nesterov, &pw, &bw);
            assert_same_bits(loom_select(f, 0, 0), pw, n, "p");
            if (bw) assert_same_bits(loom_select(f, 0, 1), bw, n, "buf");
        }
        /* Errors: sizes, dtype, a buffer without momentum, Nesterov without momentum. */
        loom_tensor *g4 = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(4));
        ck_assert_ptr_null(loom_sgd_step_fused(p, g4, NULL, 0.1, 0, 0, 0, false));
        ck_assert_int_eq(loom_last_status(), LOOM_ERR_SHAPE);
        ck_assert_ptr_nonnull(strstr(loom_last_error(), "sgd_step"));
        loom_tensor *gi = loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(n));
        ck_assert_ptr_null(loom_sgd_step_fused(p, gi, NULL, 0.1, 0, 0, 0, false));
        ck_assert_int_eq(loom_last_status(), LOOM_ERR_DTYPE);
        ck_assert_ptr_null(loom_sgd_step_fused(p, g, buf, 0.1, 0, 0, 0, false));
        ck_assert_int_eq(loom_last_status(), LOOM_ERR_INVALID_ARG);
        ck_assert_ptr_null(loom_sgd_step_fused(p, g, NULL, 0.1, 0, 0, 0, true));
        ck_assert_int_eq(loom_last_status(), LOOM_ERR_INVALID_ARG);
        loom_ctx_free(ctx);
    }
}
END_TEST

Suite *loom_suite_optim(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = test_tcase(s, "sgd", 0);
    tcase_add_test(tc, test_sgd_plain);
    tcase_add_test(tc, test_adam_step_fused);
    tcase_add_test(tc, test_sgd_step_fused);
    tcase_add_test(tc, test_sgd_weight_decay);
    tcase_add_test(tc, test_sgd_momentum);
    tcase_add_test(tc, test_sgd_dampening);
    tcase_add_test(tc, test_sgd_nesterov_weight_decay);
    tcase_add_test(tc, test_sgd_buffer_is_a_copy);

    tc = test_tcase(s, "adam", 0);
    tcase_add_test(tc, test_adam_defaults);
    tcase_add_test(tc, test_adam);
    tcase_add_test(tc, test_adam_weight_decay);
    tcase_add_test(tc, test_adam_amsgrad);
    tcase_add_test(tc, test_adamw);

    tc = test_tcase(s, "params", 0);
    tcase_add_test(tc, test_groups_lr);
    tcase_add_test(tc, test_skips_params_without_grad);
    tcase_add_test(tc, test_state_ownership_no_leaks);
    tcase_add_test(tc, test_step_after_pending_reader);
    tcase_add_test(tc, test_validation);

    tc = test_tcase(s, "schedulers", 0);
    tcase_add_test(tc, test_step_lr);
    tcase_add_test(tc, test_cosine_annealing_lr);
    tcase_add_test(tc, test_scheduler_drives_optimizer);

    tc = test_tcase(s, "pytorch", 60);
    tcase_add_test(tc, test_pytorch_parity);
    return s;
}
