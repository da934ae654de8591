/*
 * tests/check_cnn.c - the CNN part of loom/nn.h: conv2d (fused ReLU
 * included), max/avg/adaptive-avg pooling, batch_norm, softmax and
 * log_softmax as single ops, accuracy, and the CNN modules (Conv2d,
 * MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm2d, Flatten, and
 * Sequential's Conv2d + ReLU fusion).
 *
 * Expected values come from PyTorch 1.13 itself (tests/fixtures/cnn_cases.h,
 * made by gen_cnn.py: outputs, the gradients of every input and the updated
 * running statistics), from hand computation, or from double-precision
 * loops here. Gradients are also checked against finite differences with
 * loom_gradcheck. Value tests run under every configuration of cfg_ctx()
 * (one thread, two threads, the portable "ref" backend forced); a tiny CNN
 * is trained end to end under each too.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check_suites.h"
#include "tests/fixtures/cnn_cases.h"

/* ---- helpers ---------------------------------------------------------- */

/* A deterministic generator for test data (independent of any context's). */
static uint64_t lcg_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* Uniform in [lo, hi). */
static float lcg_uniform(uint64_t *s, float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)lcg_next(s) / 2147483648.0);
}

/* A float32 tensor of shape holding 0.1 * (a random permutation of 0..n-1)
 * - n/20: distinct values at least 0.1 apart, so that nudging one by the
 * gradcheck's eps (1e-2) never changes which element of a window is the
 * largest. */
static loom_tensor *spread_values(loom_ctx *ctx, int ndim, const int64_t *shape, uint64_t seed)
{
    int64_t n = numel_of(ndim, shape);
    float *v = malloc(sizeof(float) * (size_t)n);
    ck_assert(v);
    for (int64_t i = 0; i < n; i++) v[i] = (float)i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(lcg_next(&seed) % (uint64_t)(i + 1));
        float t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
    for (int64_t i = 0; i < n; i++) v[i] = 0.1f * v[i] - 0.05f * (float)n;
    loom_tensor *t = loom_tensor_from_array(ctx, LOOM_FLOAT32, v, ndim, shape);
    free(v);
    ck_assert_msg(t != NULL, "%s", loom_last_error());
    return t;
}

/* Fixed distinct weights 0.5 + 0.25 * (i % 7) of t's shape (the fixtures'
 * upstream gradient). */
static loom_tensor *weights_like(loom_tensor *t)
{
    int64_t shape[LOOM_MAX_DIMS];
    loom_tensor_shape(t, shape);
    int64_t n = loom_tensor_numel(t);
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ck_assert(v);
    for (int64_t i = 0; i < n; i++) v[i] = 0.5f + 0.25f * (float)(i % 7);
    loom_tensor *r = loom_tensor_from_array(loom_tensor_ctx(t), LOOM_FLOAT32, v, loom_tensor_ndim(t), shape);
    free(v);
    ck_assert_msg(r != NULL, "%s", loom_last_error());
    return r;
}

/* Asserts that a and b (float32, same numel) agree within tol (absolute +
 * relative). */
static void assert_close(loom_tensor *a, loom_tensor *b, double tol, const char *what)
{
    ck_assert_msg(a != NULL && b != NULL, "%s: %s", what, loom_last_error());
    int64_t n = loom_tensor_numel(a);
    ck_assert_int_eq(n, loom_tensor_numel(b));
    float *va = copy_out_f32(a), *vb = copy_out_f32(b);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs((double)va[i] - vb[i]) <= tol * (1 + fabs((double)vb[i])), "%s: element %lld: %.9g vs %.9g",
                      what, (long long)i, va[i], vb[i]);
    free(va);
    free(vb);
}

/* ---- PyTorch parity (tests/fixtures/cnn_cases.h) ------------------------- */

/* Case _i / NCFG under configuration _i % NCFG: the output, its shape, the
 * gradients of x, weight and bias after backward(upstream), and for
 * batch_norm in training the running statistics updated in place. */
START_TEST(test_pytorch_parity)
{
    const cnn_case *c = &cnn_cases[_i / NCFG];
    int cfg = _i % NCFG;
    loom_ctx *ctx = cfg_ctx(cfg);
    char label[128];
    bool is_conv = !strcmp(c->fn, "conv2d"), is_bn = !strcmp(c->fn, "batch_norm");
    loom_tensor *x = leaf(ctx, c->x, c->x_ndim, c->x_shape);
    loom_tensor *w = c->w ? leaf(ctx, c->w, c->w_ndim, c->w_shape) : NULL;
    int64_t nb = is_conv ? c->w_shape[0] : c->x_shape[1];
    loom_tensor *b = c->b ? leaf(ctx, c->b, 1, &nb) : NULL;
    int64_t C = c->x_shape[1];
    loom_tensor *rm = c->rm ? loom_tensor_from_array(ctx, LOOM_FLOAT32, c->rm, 1, &C) : NULL;
    loom_tensor *rv = c->rv ? loom_tensor_from_array(ctx, LOOM_FLOAT32, c->rv, 1, &C) : NULL;

    loom_tensor *out = NULL;
    if (is_conv) out = loom_conv2d(x, w, b, &c->conv);
    else if (!strcmp(c->fn, "max_pool2d")) out = loom_max_pool2d(x, &c->pool);
    else if (!strcmp(c->fn, "avg_pool2d")) out = loom_avg_pool2d(x, &c->pool);
    else if (!strcmp(c->fn, "adaptive_avg_pool2d")) out = loom_adaptive_avg_pool2d(x, c->osize[0], c->osize[1]);
    else if (is_bn) out = loom_batch_norm(x, rm, rv, w, b, c->training, c->momentum, c->eps);
    else if (!strcmp(c->fn, "softmax")) out = loom_softmax(x, c->dim);
    else if (!strcmp(c->fn, "log_softmax")) out = loom_log_softmax(x, c->dim);
    else ck_abort_msg("unknown function %s", c->fn);
    ck_assert_msg(out != NULL, "%s (config %d): %s", c->name, cfg, loom_last_error());

    snprintf(label, sizeof label, "%s (config %d) output", c->name, cfg);
    test_assert_shape(out, c->out_ndim, c->out_shape, label, 0);
    int64_t nout = numel_of(c->out_ndim, c->out_shape);
    test_assert_f32(out, c->out, nout, 1e-4, label, 0);

    loom_tensor *up = loom_tensor_from_array(ctx, LOOM_FLOAT32, c->up, c->out_ndim, c->out_shape);
    ck_assert_msg(loom_backward(out, up, NULL) == LOOM_OK, "%s (config %d): backward: %s", c->name, cfg,
                  loom_last_error());
    snprintf(label, sizeof label, "%s (config %d) grad x", c->name, cfg);
    test_assert_f32(loom_tensor_grad(x), c->gx, numel_of(c->x_ndim, c->x_shape), 1e-4, label, 0);
    if (w) {
        snprintf(label, sizeof label, "%s (config %d) grad weight", c->name, cfg);
        test_assert_f32(loom_tensor_grad(w), c->gw, numel_of(c->w_ndim, c->w_shape), 1e-4, label, 0);
    }
    if (b) {
        snprintf(label, sizeof label, "%s (config %d) grad bias", c->name, cfg);
        test_assert_f32(loom_tensor_grad(b), c->gb, nb, 1e-4, label, 0);
    }
    if (is_bn) {
        /* Updated in place in training (PyTorch's rule, unbiased variance);
         * left alone in evaluation (the fixture then holds the old values). */
        snprintf(label, sizeof label, "%s (config %d) running_mean", c->name, cfg);
        test_assert_f32(rm, c->rm_after, C, 1e-5, label, 0);
        snprintf(label, sizeof label, "%s (config %d) running_var", c->name, cfg);
        test_assert_f32(rv, c->rv_after, C, 1e-5, label, 0);
        if (!c->training) {
            test_assert_f32(rm, c->rm, C, 0, label, 1);
            test_assert_f32(rv, c->rv, C, 0, label, 2);
        }
    }
    loom_ctx_free(ctx);
}
END_TEST

/* The fused ReLU gives relu(conv) exactly as the unfused pair does, in
 * values and in every gradient. */
START_TEST(test_fused_relu_matches_unfused)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 4, 7, 6)));
    loom_tensor *w = need_grad(loom_randn(ctx, LOOM_SHAPE(6, 2, 3, 3)));
    loom_tensor *b = need_grad(loom_randn(ctx, LOOM_SHAPE(6)));
    loom_conv2d_opts o = {.stride = {2, 1}, .padding = {1, 1}, .groups = 2};
    loom_conv2d_opts of = o;
    of.relu = true;
    loom_tensor *yf = loom_conv2d(x, w, b, &of);
    loom_tensor *yu = loom_relu(loom_conv2d(x, w, b, &o));
    assert_shape(yf, 2, 6, 4, 6);
    assert_close(yf, yu, 1e-6, "fused vs unfused values");
    float *v = copy_out_f32(yf);
    int zeros = 0;
    for (int i = 0; i < 2 * 6 * 4 * 6; i++) {
        ck_assert(v[i] >= 0);
        zeros += v[i] == 0;
    }
    ck_assert(zeros > 20); /* the ReLU did cut something */
    free(v);
    loom_tensor *r = weights_like(yf);
    loom_tensor *gs[2][3];
    loom_tensor *ys[2] = {yf, yu};
    loom_tensor *in[3] = {x, w, b};
    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(loom_backward(loom_sum(loom_mul(ys[k], r), 0, NULL, false), NULL, NULL), LOOM_OK);
        for (int j = 0; j < 3; j++) {
            gs[k][j] = loom_tensor_grad(in[j]);
            ck_assert_int_eq(loom_tensor_eval(gs[k][j]), LOOM_OK);
            loom_tensor_zero_grad(in[j]);
        }
    }
    assert_close(gs[0][0], gs[1][0], 1e-5, "grad x");
    assert_close(gs[0][1], gs[1][1], 1e-5, "grad weight");
    assert_close(gs[0][2], gs[1][2], 1e-5, "grad bias");
    loom_ctx_free(ctx);
}
END_TEST

/* Grads of ins[0..n) after backward(sum(y * r)), evaluated; zeroes them. */
static void grads_of(loom_tensor *y, loom_tensor *r, int n, loom_tensor **ins, loom_tensor **out)
{
    ck_assert_int_eq(loom_backward(loom_sum(loom_mul(y, r), 0, NULL, false), NULL, NULL), LOOM_OK);
    for (int j = 0; j < n; j++) {
        out[j] = loom_tensor_grad(ins[j]);
        ck_assert_int_eq(loom_tensor_eval(out[j]), LOOM_OK);
        loom_tensor_zero_grad(ins[j]);
    }
}

/* loom_batch_norm_relu gives relu(loom_batch_norm) exactly: values, the
 * running statistics and every gradient, in training and in evaluation,
 * behind a convolution (blocked data under auto). loom_module_forward_relu
 * and Sequential fuse BatchNorm2d + ReLU the same way, and a module with
 * no fused form (Linear) runs, then ReLUs. Under "onednn" the fused node
 * runs on ref (oneDNN's would need a workspace): close, not equal. */
START_TEST(test_fused_bn_relu)
{
    loom_ctx *ctx = _i < NCFG ? cfg_ctx(_i) : test_ctx(2, "onednn");
    const double tol = _i < NCFG ? 0 : 1e-5;
    for (int training = 1; training >= 0; training--) {
        loom_tensor *x = need_grad(loom_randn(ctx, LOOM_SHAPE(4, 16, 5, 6)));
        loom_tensor *w = need_grad(loom_randn(ctx, LOOM_SHAPE(16, 16, 3, 3)));
        loom_tensor *g = need_grad(loom_rand(ctx, LOOM_SHAPE(16)));
        loom_tensor *b = need_grad(loom_randn(ctx, LOOM_SHAPE(16)));
        loom_tensor *rm[2], *rv[2], *ys[2], *gs[2][4];
        loom_tensor *ins[4] = {x, w, g, b};
        loom_conv2d_opts o = {.padding = {1, 1}};
        for (int k = 0; k < 2; k++) {
            rm[k] = loom_full(ctx, LOOM_FLOAT32, LOOM_SHAPE(16), 0.25);
            rv[k] = loom_full(ctx, LOOM_FLOAT32, LOOM_SHAPE(16), 4.0);
            loom_tensor *h = loom_conv2d(x, w, NULL, &o);
            ys[k] = k == 0 ? loom_batch_norm_relu(h, rm[0], rv[0], g, b, training, 0.1, 1e-5)
                           : loom_relu(loom_batch_norm(h, rm[1], rv[1], g, b, training, 0.1, 1e-5));
            ck_assert_msg(ys[k] != NULL, "%s", loom_last_error());
        }
        assert_close(ys[0], ys[1], tol, training ? "values (training)" : "values (eval)");
        assert_close(rm[0], rm[1], tol, "running_mean");
        assert_close(rv[0], rv[1], tol, "running_var");
        float *v = copy_out_f32(ys[0]);
        int zeros = 0;
        for (int i = 0; i < 4 * 16 * 5 * 6; i++) zeros += v[i] == 0;
        ck_assert(zeros > 100); /* the ReLU did cut something */
        free(v);
        loom_tensor *r = weights_like(ys[0]);
        for (int k = 0; k < 2; k++) grads_of(ys[k], r, 4, ins, gs[k]);
        const char *what[4] = {"grad x", "grad weight", "grad gamma", "grad beta"};
        for (int j = 0; j < 4; j++) {
            char msg[64];
            snprintf(msg, sizeof msg, "%s (%s)", what[j], training ? "training" : "eval");
            assert_close(gs[0][j], gs[1][j], tol, msg);
        }
    }
    /* Modules: Sequential(Conv2d, BatchNorm2d, ReLU) against the modules
     * run one by one; loom_module_forward_relu on a Linear. */
    loom_module *seq = loom_sequential(ctx, 3, (loom_module *[]){loom_conv2d_module(ctx, 3, 8, 3, 3, NULL, false),
                                                                 loom_batch_norm2d_module(ctx, 8, 1e-5, 0.1, true),
                                                                 loom_relu_module(ctx)});
    ck_assert_msg(seq != NULL, "%s", loom_last_error());
    loom_tensor *x = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 3, 7, 7)));
    loom_tensor *ya = loom_module_forward(seq, x);
    loom_tensor *h = loom_module_forward(loom_module_child(seq, "0"), x);
    loom_tensor *yb = loom_relu(loom_module_forward(loom_module_child(seq, "1"), h));
    assert_close(ya, yb, tol, "Sequential(Conv2d, BatchNorm2d, ReLU)");
    loom_tensor *gw[2][2], *pin[2] = {x, loom_module_get(seq, "1.weight")};
    loom_tensor *r = weights_like(ya);
    grads_of(ya, r, 2, pin, gw[0]);
    grads_of(yb, r, 2, pin, gw[1]);
    assert_close(gw[0][0], gw[1][0], tol, "Sequential: grad x");
    assert_close(gw[0][1], gw[1][1], tol, "Sequential: grad bn weight");
    /* Two training forwards of bn: num_batches_tracked counts both. */
    loom_tensor *nbt = loom_module_get(seq, "1.num_batches_tracked");
    double count = -1;
    ck_assert_int_eq(loom_tensor_item(nbt, &count), LOOM_OK);
    ck_assert(count == 2);
    loom_module *lin = loom_linear(ctx, 5, 4, true);
    loom_tensor *xl = loom_randn(ctx, LOOM_SHAPE(3, 5));
    assert_close(loom_module_forward_relu(lin, xl), loom_relu(loom_module_forward(lin, xl)), 0, "Linear + ReLU");
    ck_assert_ptr_null(loom_module_forward_relu(NULL, xl));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_INVALID_ARG);
    loom_module_free(lin);
    loom_module_free(seq);
    loom_ctx_free(ctx);
}
END_TEST

/* loom_add_relu gives loom_relu(loom_add) exactly, values and both
 * gradients: behind convolutions (blocked data under auto), with a
 * broadcast operand, and with a NaN (which stays, as loom_relu keeps it);
 * it takes float32 only. */
START_TEST(test_add_relu)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 16, 5, 6)));
    loom_tensor *w1 = need_grad(loom_randn(ctx, LOOM_SHAPE(16, 16, 3, 3)));
    loom_tensor *w2 = need_grad(loom_randn(ctx, LOOM_SHAPE(16, 16, 1, 1)));
    loom_tensor *c = need_grad(loom_randn(ctx, LOOM_SHAPE(16, 1, 1)));
    loom_conv2d_opts o = {.padding = {1, 1}};
    loom_tensor *ins[4] = {x, w1, w2, c}, *gs[2][4], *ys[2];
    for (int k = 0; k < 2; k++) {
        loom_tensor *a = loom_conv2d(x, w1, NULL, &o), *b = loom_conv2d(x, w2, NULL, NULL);
        loom_tensor *s = loom_add(b, c); /* broadcast [16, 1, 1] */
        ys[k] = k == 0 ? loom_add_relu(a, s) : loom_relu(loom_add(a, s));
        ck_assert_msg(ys[k] != NULL, "%s", loom_last_error());
    }
    assert_close(ys[0], ys[1], 0, "add_relu values");
    loom_tensor *r = weights_like(ys[0]);
    for (int k = 0; k < 2; k++) grads_of(ys[k], r, 4, ins, gs[k]);
    const char *what[4] = {"grad x", "grad w1", "grad w2", "grad c"};
    for (int j = 0; j < 4; j++) assert_close(gs[0][j], gs[1][j], 0, what[j]);
    /* Broadcast directly, and NaN: relu(NaN + 1) is NaN, relu(-2 + 1) 0. */
    loom_tensor *p = loom_tensor_from_array(ctx, LOOM_FLOAT32, (float[]){NAN, -2, 3, 0.5f}, LOOM_SHAPE(2, 2));
    loom_tensor *q = loom_full(ctx, LOOM_FLOAT32, LOOM_SHAPE(2), 1.0);
    float v[4];
    ck_assert_int_eq(loom_tensor_copy_to(loom_add_relu(p, q), v, sizeof v), LOOM_OK);
    ck_assert(isnan(v[0]) && v[1] == 0 && v[2] == 4 && v[3] == 1.5f);
    ck_assert_ptr_null(loom_add_relu(loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(2)), loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(2))));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_DTYPE);
    ck_assert_ptr_null(loom_add_relu(p, NULL));
    loom_ctx_free(ctx);
}
END_TEST

/* Non-contiguous inputs (transposed views) give the values of their
 * contiguous copies. */
START_TEST(test_noncontiguous_inputs)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* x is a [N, C, W, H] tensor transposed to [N, C, H, W]. */
    loom_tensor *xt = loom_randn(ctx, LOOM_SHAPE(2, 3, 5, 6));
    loom_tensor *x = loom_transpose(xt, 2, 3);
    ck_assert(!loom_tensor_is_contiguous(x));
    loom_tensor *xc = loom_contiguous(x);
    loom_tensor *w = loom_transpose(loom_randn(ctx, LOOM_SHAPE(4, 3, 3, 3)), 2, 3);
    loom_tensor *wc = loom_contiguous(w);
    loom_conv2d_opts o = {.padding = {1, 0}};
    assert_close(loom_conv2d(x, w, NULL, &o), loom_conv2d(xc, wc, NULL, &o), 1e-5, "conv2d");
    loom_pool2d_opts p = {.kernel = {3, 2}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true};
    assert_close(loom_max_pool2d(x, &p), loom_max_pool2d(xc, &p), 0, "max_pool2d");
    assert_close(loom_avg_pool2d(x, &p), loom_avg_pool2d(xc, &p), 1e-6, "avg_pool2d");
    assert_close(loom_adaptive_avg_pool2d(x, 4, 3), loom_adaptive_avg_pool2d(xc, 4, 3), 1e-6, "adaptive_avg_pool2d");
    assert_close(loom_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1, 1e-5),
                 loom_batch_norm(xc, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), 1e-5, "batch_norm");
    assert_close(loom_softmax(x, 1), loom_softmax(xc, 1), 1e-6, "softmax");
    assert_close(loom_log_softmax(x, 3), loom_log_softmax(xc, 3), 1e-6, "log_softmax");
    loom_ctx_free(ctx);
}
END_TEST

/* ---- hand-computed values -------------------------------------------------- */

START_TEST(test_hand_values)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* 1 x 1 x 3 x 3 input 1..9, 2x2 kernel [[1, 0], [0, -1]]: x[i][j] - x[i+1][j+1] = -4. */
    loom_tensor *x = F32(ctx, LOOM_SHAPE(1, 1, 3, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9);
    loom_tensor *k = F32(ctx, LOOM_SHAPE(1, 1, 2, 2), 1, 0, 0, -1);
    EXPECT_F32(loom_conv2d(x, k, NULL, NULL), 0, -4, -4, -4, -4);
    EXPECT_F32(loom_conv2d(x, k, F32(ctx, LOOM_SHAPE(1), 10), NULL), 0, 6, 6, 6, 6);
    /* Padding 1: the corners see one input element each. */
    loom_tensor *yp = loom_conv2d(x, k, NULL, &(loom_conv2d_opts){.padding = {1, 1}});
    assert_shape(yp, 1, 1, 4, 4);
    EXPECT_F32(yp, 0, -1, -2, -3, 0, -4, -4, -4, 3, -7, -4, -4, 6, 0, 7, 8, 9);
    /* Fused ReLU: the negative ones become 0. */
    EXPECT_F32(loom_conv2d(x, k, NULL, &(loom_conv2d_opts){.padding = {1, 1}, .relu = true}), 0, 0, 0, 0, 0, 0, 0,
               0, 3, 0, 0, 0, 6, 0, 7, 8, 9);
    /* Pooling. */
    loom_tensor *m = F32(ctx, LOOM_SHAPE(1, 1, 4, 4), 1, 5, 2, 0, 3, 4, 8, 1, -1, -2, -3, -4, 0, -5, 6, 7);
    EXPECT_F32(loom_max_pool2d(m, &(loom_pool2d_opts){.kernel = {2, 2}}), 0, 5, 8, 0, 7);
    EXPECT_F32(loom_avg_pool2d(m, &(loom_pool2d_opts){.kernel = {2, 2}}), 1e-7, 13 / 4.0f, 11 / 4.0f, -8 / 4.0f,
               6 / 4.0f);
    /* Padding 1, stride 2, kernel 2: corners alone; count_include_pad divides by 4, exclude_pad by 1, 2 or 4. */
    loom_pool2d_opts pi = {.kernel = {2, 2}, .stride = {2, 2}, .padding = {1, 1}};
    loom_pool2d_opts pe = pi;
    pe.exclude_pad = true;
    EXPECT_F32(loom_avg_pool2d(m, &pi), 1e-7, 1 / 4.0f, 7 / 4.0f, 0, 2 / 4.0f, 7 / 4.0f, -3 / 4.0f, 0, 1 / 4.0f,
               7 / 4.0f);
    EXPECT_F32(loom_avg_pool2d(m, &pe), 1e-7, 1, 7 / 2.0f, 0, 2 / 2.0f, 7 / 4.0f, -3 / 2.0f, 0, 1 / 2.0f, 7);
    EXPECT_F32(loom_max_pool2d(m, &pi), 0, 1, 5, 0, 3, 8, 1, 0, 6, 7);
    EXPECT_F32(loom_adaptive_avg_pool2d(m, 1, 1), 1e-6, 22 / 16.0f);
    /* batch_norm without affine: per channel (x - mean) / sqrt(var + eps). */
    loom_tensor *bx = F32(ctx, LOOM_SHAPE(2, 2), 1, 10, 3, 20);
    EXPECT_F32(loom_batch_norm(bx, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), 1e-4, -1 / sqrtf(1 + 1e-5f),
               -5 / sqrtf(25 + 1e-5f), 1 / sqrtf(1 + 1e-5f), 5 / sqrtf(25 + 1e-5f));
    /* accuracy: argmax per row (the first of equal maxima). */
    loom_tensor *logits = F32(ctx, LOOM_SHAPE(4, 3), 0.1, 2, -1, 3, 1, 0, 0, 0, 5, 1, 1, 0);
    loom_tensor *acc = loom_accuracy(logits, I64(ctx, LOOM_SHAPE(4), 1, 0, 1, 0));
    assert_shape0(acc);
    EXPECT_F32(acc, 0, 0.75f);
    EXPECT_F32(loom_accuracy(logits, I64(ctx, LOOM_SHAPE(4), 1, 0, 2, 0)), 0, 1);
    EXPECT_F32(loom_accuracy(logits, I64(ctx, LOOM_SHAPE(4), 0, 2, 0, 1)), 0, 0);
    EXPECT_F32(loom_accuracy(logits, I64(ctx, LOOM_SHAPE(4), 2, 0, 2, 1)), 0, 0.5f);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- gradcheck ------------------------------------------------------------- */

static loom_tensor *fn_conv(loom_tensor *const *in, int n, void *user)
{
    return loom_conv2d(in[0], in[1], n > 2 ? in[2] : NULL, user);
}

static loom_tensor *fn_max_pool(loom_tensor *const *in, int n, void *user)
{
    (void)n;
    return loom_max_pool2d(in[0], user);
}

static loom_tensor *fn_avg_pool(loom_tensor *const *in, int n, void *user)
{
    (void)n;
    return loom_avg_pool2d(in[0], user);
}

static loom_tensor *fn_adaptive(loom_tensor *const *in, int n, void *user)
{
    (void)n;
    const int64_t *o = user;
    return loom_adaptive_avg_pool2d(in[0], o[0], o[1]);
}

typedef struct bn_arg {
    bool training;
    loom_tensor *rm, *rv;
} bn_arg;

static loom_tensor *fn_bn(loom_tensor *const *in, int n, void *user)
{
    const bn_arg *a = user;
    return loom_batch_norm(in[0], a->rm, a->rv, n > 1 ? in[1] : NULL, n > 2 ? in[2] : NULL, a->training, 0.1, 1e-5);
}

static loom_tensor *fn_softmax(loom_tensor *const *in, int n, void *user)
{
    (void)n;
    return loom_softmax(in[0], *(int *)user);
}

static loom_tensor *fn_log_softmax(loom_tensor *const *in, int n, void *user)
{
    (void)n;
    return loom_log_softmax(in[0], *(int *)user);
}

/* Checks fn's gradients at the inputs; `what` names the case. */
#define GRADCHECK(what, fn, user, ...)                                                             \
    do {                                                                                           \
        loom_tensor *in_[] = {__VA_ARGS__};                                                        \
        loom_status st_ = loom_gradcheck(fn, (int)(sizeof in_ / sizeof in_[0]), in_, (user), NULL); \
        ck_assert_msg(st_ == LOOM_OK, "%s (config %d): %s", (what), _i, loom_last_error());        \
    } while (0)

START_TEST(test_gradcheck_conv)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 4, 5, 4)));
    loom_tensor *w = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 4, 3, 3)));
    loom_tensor *b = need_grad(loom_randn(ctx, LOOM_SHAPE(2)));
    GRADCHECK("conv default", fn_conv, NULL, x, w, b);
    GRADCHECK("conv no bias", fn_conv, NULL, x, w);
    loom_conv2d_opts s2 = {.stride = {2, 2}, .padding = {1, 1}};
    GRADCHECK("conv stride 2 pad 1", fn_conv, &s2, x, w, b);
    loom_conv2d_opts dil = {.dilation = {2, 1}, .padding = {1, 0}, .stride = {1, 2}};
    GRADCHECK("conv dilation (2, 1)", fn_conv, &dil, x, w, b);
    loom_tensor *wg = need_grad(loom_randn(ctx, LOOM_SHAPE(4, 2, 2, 3)));
    loom_tensor *bg = need_grad(loom_randn(ctx, LOOM_SHAPE(4)));
    loom_conv2d_opts g2 = {.groups = 2, .padding = {1, 1}};
    GRADCHECK("conv groups 2", fn_conv, &g2, x, wg, bg);
    loom_tensor *wd = need_grad(loom_randn(ctx, LOOM_SHAPE(4, 1, 3, 3)));
    loom_conv2d_opts dw = {.groups = 4, .padding = {1, 1}, .stride = {2, 1}, .dilation = {1, 2}};
    GRADCHECK("conv depthwise", fn_conv, &dw, x, wd);
    /* Only some inputs requiring grad. */
    loom_tensor *xc = loom_randn(ctx, LOOM_SHAPE(1, 4, 4, 4));
    GRADCHECK("conv w and b only", fn_conv, &s2, xc, w, b);
    loom_tensor *wc = loom_randn(ctx, LOOM_SHAPE(2, 4, 3, 3));
    GRADCHECK("conv x only", fn_conv, &s2, x, wc);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_gradcheck_pool)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = need_grad(spread_values(ctx, LOOM_SHAPE(2, 2, 6, 5), 99));
    loom_pool2d_opts k2 = {.kernel = {2, 2}};
    GRADCHECK("max_pool 2x2", fn_max_pool, &k2, x);
    loom_pool2d_opts k3 = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}};
    GRADCHECK("max_pool 3x3 s2 p1", fn_max_pool, &k3, x);
    loom_pool2d_opts ov = {.kernel = {3, 2}, .stride = {1, 1}};
    GRADCHECK("max_pool overlapping", fn_max_pool, &ov, x);
    loom_pool2d_opts kc = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true};
    GRADCHECK("max_pool ceil", fn_max_pool, &kc, x);

    loom_tensor *xa = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 2, 6, 5)));
    GRADCHECK("avg_pool 2x2", fn_avg_pool, &k2, xa);
    GRADCHECK("avg_pool 3x3 s2 p1", fn_avg_pool, &k3, xa);
    GRADCHECK("avg_pool ceil", fn_avg_pool, &kc, xa);
    loom_pool2d_opts ke = k3;
    ke.exclude_pad = true;
    GRADCHECK("avg_pool exclude_pad", fn_avg_pool, &ke, xa);
    loom_pool2d_opts kce = kc;
    kce.exclude_pad = true;
    GRADCHECK("avg_pool ceil exclude_pad", fn_avg_pool, &kce, xa);
    loom_pool2d_opts rect = {.kernel = {2, 3}, .stride = {3, 1}, .padding = {1, 1}, .ceil_mode = true,
                             .exclude_pad = true};
    GRADCHECK("avg_pool rect", fn_avg_pool, &rect, xa);

    int64_t o32[2] = {3, 2}, o22[2] = {2, 2}, o11[2] = {1, 1}, up[2] = {7, 8};
    loom_tensor *x7 = need_grad(loom_randn(ctx, LOOM_SHAPE(1, 2, 7, 5)));
    GRADCHECK("adaptive 7x5 -> 3x2", fn_adaptive, o32, x7);
    GRADCHECK("adaptive 6x5 -> 2x2", fn_adaptive, o22, xa);
    GRADCHECK("adaptive -> 1x1", fn_adaptive, o11, xa);
    GRADCHECK("adaptive 7x5 -> 7x8", fn_adaptive, up, x7);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_gradcheck_batch_norm)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* The closed-form gradient of training mode couples every element of a
     * channel (it is also covered exactly by the PyTorch fixtures). */
    loom_gradcheck_options o = {0};
    loom_tensor *x = need_grad(loom_add_scalar(loom_mul_scalar(loom_randn(ctx, LOOM_SHAPE(3, 2, 2, 2)), 2.0), 1.0));
    ck_assert_int_eq(loom_tensor_eval(x), LOOM_OK);
    loom_tensor *w = need_grad(F32(ctx, LOOM_SHAPE(2), 0.75, 1.5));
    loom_tensor *b = need_grad(F32(ctx, LOOM_SHAPE(2), -0.5, 0.25));
    bn_arg train = {true, NULL, NULL};
    loom_tensor *in[3] = {x, w, b};
    ck_assert_msg(loom_gradcheck(fn_bn, 3, in, &train, &o) == LOOM_OK, "bn train 4-D (config %d): %s", _i,
                  loom_last_error());
    ck_assert_msg(loom_gradcheck(fn_bn, 1, in, &train, &o) == LOOM_OK, "bn train, no affine (config %d): %s", _i,
                  loom_last_error());
    loom_tensor *x2 = need_grad(loom_randn(ctx, LOOM_SHAPE(4, 2)));
    loom_tensor *in2[3] = {x2, w, b};
    ck_assert_msg(loom_gradcheck(fn_bn, 3, in2, &train, &o) == LOOM_OK, "bn train 2-D (config %d): %s", _i,
                  loom_last_error());
    bn_arg eval = {false, F32(ctx, LOOM_SHAPE(2), 0.5, -1), F32(ctx, LOOM_SHAPE(2), 2, 0.5)};
    ck_assert_msg(loom_gradcheck(fn_bn, 3, in, &eval, NULL) == LOOM_OK, "bn eval (config %d): %s", _i,
                  loom_last_error());
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_gradcheck_softmax)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 3, 2, 4)));
    for (int dim = -1; dim < 4; dim++) {
        GRADCHECK("softmax", fn_softmax, &dim, x);
        GRADCHECK("log_softmax", fn_log_softmax, &dim, x);
    }
    loom_ctx_free(ctx);
}
END_TEST

/* ---- errors -------------------------------------------------------------- */

START_TEST(test_errors)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(1, 3, 5, 5));
    loom_tensor *x3 = loom_randn(ctx, LOOM_SHAPE(3, 5, 5));
    loom_tensor *w = loom_randn(ctx, LOOM_SHAPE(4, 3, 3, 3));
    loom_tensor *b4 = loom_randn(ctx, LOOM_SHAPE(4));
    loom_tensor *xi = loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(1, 3, 5, 5));

    /* conv2d: ndim. */
    assert_error(loom_conv2d(x3, w, NULL, NULL), LOOM_ERR_SHAPE, "conv2d: input must be 4-D [N, C, H, W], got [3, 5, 5]");
    assert_error(loom_conv2d(x, loom_randn(ctx, LOOM_SHAPE(4, 3, 3)), NULL, NULL), LOOM_ERR_SHAPE,
                 "conv2d: weight must be 4-D [out_channels, in_channels/groups, kH, kW], got [4, 3, 3]");
    /* Channels and groups. */
    assert_error(loom_conv2d(x, loom_randn(ctx, LOOM_SHAPE(4, 2, 3, 3)), NULL, NULL), LOOM_ERR_SHAPE,
                 "conv2d: input [1, 3, 5, 5] and weight [4, 2, 3, 3] do not match with groups = 1");
    assert_error(loom_conv2d(x, w, NULL, &(loom_conv2d_opts){.groups = 3}), LOOM_ERR_SHAPE,
                 "input [1, 3, 5, 5] and weight [4, 3, 3, 3] do not match with groups = 3");
    assert_error(loom_conv2d(loom_randn(ctx, LOOM_SHAPE(1, 4, 5, 5)), loom_randn(ctx, LOOM_SHAPE(3, 2, 3, 3)), NULL,
                             &(loom_conv2d_opts){.groups = 2}),
                 LOOM_ERR_SHAPE, "input [1, 4, 5, 5] and weight [3, 2, 3, 3] do not match with groups = 2");
    assert_error(loom_conv2d(x, loom_randn(ctx, LOOM_SHAPE(4, 1, 3, 3)), NULL, &(loom_conv2d_opts){.groups = 2}),
                 LOOM_ERR_SHAPE, "conv2d: input [1, 3, 5, 5] and weight [4, 1, 3, 3]");
    assert_error(loom_conv2d(x, w, NULL, &(loom_conv2d_opts){.groups = -1}), LOOM_ERR_INVALID_ARG,
                 "conv2d: groups must be positive, got -1");
    /* Bias. */
    assert_error(loom_conv2d(x, w, loom_randn(ctx, LOOM_SHAPE(3)), NULL), LOOM_ERR_SHAPE,
                 "conv2d: bias [3] does not match out_channels = 4");
    assert_error(loom_conv2d(x, w, loom_randn(ctx, LOOM_SHAPE(1, 4)), NULL), LOOM_ERR_SHAPE,
                 "conv2d: bias [1, 4] does not match out_channels = 4");
    /* Negative stride, padding, dilation. */
    assert_error(loom_conv2d(x, w, b4, &(loom_conv2d_opts){.stride = {-1, 1}}), LOOM_ERR_INVALID_ARG,
                 "conv2d: stride (-1, 1)");
    assert_error(loom_conv2d(x, w, b4, &(loom_conv2d_opts){.padding = {0, -2}}), LOOM_ERR_INVALID_ARG,
                 "padding (0, -2)");
    assert_error(loom_conv2d(x, w, b4, &(loom_conv2d_opts){.dilation = {-1, 0}}), LOOM_ERR_INVALID_ARG,
                 "must not be negative");
    /* A kernel bigger than the padded input. */
    loom_tensor *x22 = loom_randn(ctx, LOOM_SHAPE(1, 3, 2, 2));
    assert_error(loom_conv2d(x22, w, NULL, NULL), LOOM_ERR_SHAPE,
                 "conv2d: input [1, 3, 2, 2] padded by (0, 0) is smaller than the kernel [4, 3, 3, 3] dilated by (1, 1)");
    assert_error(loom_conv2d(x, w, NULL, &(loom_conv2d_opts){.dilation = {3, 1}}), LOOM_ERR_SHAPE,
                 "conv2d: input [1, 3, 5, 5] padded by (0, 0) is smaller than the kernel [4, 3, 3, 3] dilated by (3, 1)");
    ck_assert_ptr_nonnull(loom_conv2d(x22, w, NULL, &(loom_conv2d_opts){.padding = {1, 1}})); /* fits padded */
    /* dtype. */
    assert_error(loom_conv2d(xi, w, NULL, NULL), LOOM_ERR_DTYPE, "conv2d: input must be float32, got int64");
    assert_error(loom_conv2d(x, loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(4, 3, 3, 3)), NULL, NULL), LOOM_ERR_DTYPE,
                 "conv2d: weight must be float32, got int64");
    assert_error(loom_conv2d(x, w, loom_zeros(ctx, LOOM_BOOL, LOOM_SHAPE(4)), NULL), LOOM_ERR_DTYPE,
                 "conv2d: bias must be float32, got bool");
    /* NULL arguments. */
    loom_clear_error();
    assert_error(loom_conv2d(NULL, w, NULL, NULL), LOOM_ERR_INVALID_ARG, "conv2d: input 0 is NULL");
    loom_clear_error();
    assert_error(loom_conv2d(x, NULL, NULL, NULL), LOOM_ERR_INVALID_ARG, "conv2d: input 1 is NULL");

    /* Pooling. */
    loom_pool2d_opts k2 = {.kernel = {2, 2}};
    const char *names[2] = {"max_pool2d", "avg_pool2d"};
    loom_tensor *(*pools[2])(loom_tensor *, const loom_pool2d_opts *) = {loom_max_pool2d, loom_avg_pool2d};
    char want[160];
    for (int p = 0; p < 2; p++) {
        snprintf(want, sizeof want, "%s: input must be 4-D [N, C, H, W], got [3, 5, 5]", names[p]);
        assert_error(pools[p](x3, &k2), LOOM_ERR_SHAPE, want);
        snprintf(want, sizeof want, "%s: input must be float32, got int64", names[p]);
        assert_error(pools[p](xi, &k2), LOOM_ERR_DTYPE, want);
        snprintf(want, sizeof want, "%s: options with a kernel size are required", names[p]);
        assert_error(pools[p](x, NULL), LOOM_ERR_INVALID_ARG, want);
        snprintf(want, sizeof want, "%s: kernel (2, 2) and stride (-1, 1) must be positive", names[p]);
        assert_error(pools[p](x, &(loom_pool2d_opts){.kernel = {2, 2}, .stride = {-1, 1}}), LOOM_ERR_INVALID_ARG,
                     want);
        snprintf(want, sizeof want, "%s: kernel (0, 2)", names[p]);
        assert_error(pools[p](x, &(loom_pool2d_opts){.kernel = {0, 2}}), LOOM_ERR_INVALID_ARG, want);
        snprintf(want, sizeof want, "%s: padding (2, 0) must be at most half the kernel (3, 3)", names[p]);
        assert_error(pools[p](x, &(loom_pool2d_opts){.kernel = {3, 3}, .padding = {2, 0}}), LOOM_ERR_INVALID_ARG,
                     want);
        snprintf(want, sizeof want, "%s: kernel (3, 3) and stride (0, 0) must be positive, padding (0, -1) not negative",
                 names[p]);
        assert_error(pools[p](x, &(loom_pool2d_opts){.kernel = {3, 3}, .padding = {0, -1}}), LOOM_ERR_INVALID_ARG,
                     want);
        snprintf(want, sizeof want, "%s: input [1, 3, 2, 2] padded by (0, 0) is smaller than the kernel (3, 3)",
                 names[p]);
        assert_error(pools[p](x22, &(loom_pool2d_opts){.kernel = {3, 3}}), LOOM_ERR_SHAPE, want);
        /* Exactly half the kernel is allowed, and padding that makes it fit. */
        ck_assert_ptr_nonnull(pools[p](x22, &(loom_pool2d_opts){.kernel = {3, 3}, .padding = {1, 1}}));
        ck_assert_ptr_nonnull(pools[p](x22, &(loom_pool2d_opts){.kernel = {2, 2}, .padding = {1, 1}}));
    }
    assert_error(loom_adaptive_avg_pool2d(x3, 2, 2), LOOM_ERR_SHAPE,
                 "adaptive_avg_pool2d: input must be 4-D [N, C, H, W], got [3, 5, 5]");
    assert_error(loom_adaptive_avg_pool2d(xi, 2, 2), LOOM_ERR_DTYPE, "adaptive_avg_pool2d: input must be float32");
    assert_error(loom_adaptive_avg_pool2d(x, 0, 2), LOOM_ERR_INVALID_ARG,
                 "adaptive_avg_pool2d: output size (0, 2) must be positive");

    /* batch_norm. */
    loom_tensor *c3 = loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(3));
    loom_tensor *c4 = loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(4));
    loom_tensor *x23 = loom_randn(ctx, LOOM_SHAPE(2, 3));
    assert_error(loom_batch_norm(loom_randn(ctx, LOOM_SHAPE(3)), NULL, NULL, NULL, NULL, true, 0.1, 1e-5),
                 LOOM_ERR_SHAPE, "batch_norm: input must have at least 2 dims [N, C, ...], got [3]");
    assert_error(loom_batch_norm(x, NULL, NULL, c4, NULL, true, 0.1, 1e-5), LOOM_ERR_SHAPE,
                 "batch_norm: weight [4] does not match 3 channels");
    assert_error(loom_batch_norm(x, NULL, NULL, c3, c4, true, 0.1, 1e-5), LOOM_ERR_SHAPE,
                 "batch_norm: bias [4] does not match 3 channels");
    assert_error(loom_batch_norm(x, c4, c3, NULL, NULL, true, 0.1, 1e-5), LOOM_ERR_SHAPE,
                 "batch_norm: running_mean [4] does not match 3 channels");
    assert_error(loom_batch_norm(x, c3, c4, NULL, NULL, false, 0.1, 1e-5), LOOM_ERR_SHAPE,
                 "batch_norm: running_var [4] does not match 3 channels");
    assert_error(loom_batch_norm(xi, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), LOOM_ERR_DTYPE,
                 "batch_norm: input must be float32, got int64");
    assert_error(loom_batch_norm(x, NULL, NULL, loom_ones(ctx, LOOM_INT64, LOOM_SHAPE(3)), NULL, true, 0.1, 1e-5),
                 LOOM_ERR_DTYPE, "batch_norm: weight must be float32, got int64");
    /* One value per channel in training. */
    assert_error(loom_batch_norm(loom_randn(ctx, LOOM_SHAPE(1, 3)), NULL, NULL, NULL, NULL, true, 0.1, 1e-5),
                 LOOM_ERR_SHAPE, "batch_norm: expected more than 1 value per channel when training, got input [1, 3]");
    assert_error(loom_batch_norm(loom_randn(ctx, LOOM_SHAPE(1, 3, 1, 1)), c3, c3, NULL, NULL, true, 0.1, 1e-5),
                 LOOM_ERR_SHAPE, "got input [1, 3, 1, 1]");
    /* ... which evaluation mode allows. */
    ck_assert_ptr_nonnull(loom_batch_norm(loom_randn(ctx, LOOM_SHAPE(1, 3)), c3, c3, NULL, NULL, false, 0.1, 1e-5));
    /* Evaluation without running statistics; one of the two. */
    assert_error(loom_batch_norm(x23, NULL, NULL, NULL, NULL, false, 0.1, 1e-5), LOOM_ERR_INVALID_ARG,
                 "batch_norm: evaluation mode needs running_mean and running_var");
    assert_error(loom_batch_norm(x23, c3, NULL, NULL, NULL, false, 0.1, 1e-5), LOOM_ERR_INVALID_ARG,
                 "batch_norm: evaluation mode needs running_mean and running_var");
    assert_error(loom_batch_norm(x23, NULL, c3, NULL, NULL, true, 0.1, 1e-5), LOOM_ERR_INVALID_ARG,
                 "batch_norm: give both running_mean and running_var, or neither");
    /* eps and momentum. */
    assert_error(loom_batch_norm(x23, NULL, NULL, NULL, NULL, true, 0.1, 0), LOOM_ERR_INVALID_ARG,
                 "batch_norm: eps must be positive and momentum in [0, 1], got 0 and 0.1");
    assert_error(loom_batch_norm(x23, NULL, NULL, NULL, NULL, true, 1.5, 1e-5), LOOM_ERR_INVALID_ARG,
                 "momentum in [0, 1]");
    /* Another context. */
    loom_ctx *other = test_ctx(1, NULL);
    assert_error(loom_batch_norm(x23, NULL, NULL, loom_ones(other, LOOM_FLOAT32, LOOM_SHAPE(3)), NULL, true, 0.1, 1e-5),
                 LOOM_ERR_INVALID_ARG, "batch_norm: weight belongs to another context");
    assert_error(loom_conv2d(x, loom_randn(other, LOOM_SHAPE(4, 3, 3, 3)), NULL, NULL), LOOM_ERR_INVALID_ARG,
                 "conv2d: inputs 0 and 1 belong to different contexts");
    loom_ctx_free(other);

    /* softmax / log_softmax. */
    assert_error(loom_softmax(x, 4), LOOM_ERR_RANGE, "softmax: dim 4 is out of range for a tensor of 4 dims");
    assert_error(loom_log_softmax(x, -5), LOOM_ERR_RANGE, "log_softmax: dim -5");
    assert_error(loom_softmax(xi, 1), LOOM_ERR_DTYPE, "softmax: input must be float32, got int64");
    assert_error(loom_log_softmax(xi, 1), LOOM_ERR_DTYPE, "log_softmax: input must be float32, got int64");

    /* accuracy. */
    loom_tensor *logits = loom_randn(ctx, LOOM_SHAPE(4, 3));
    assert_error(loom_accuracy(logits, I64(ctx, LOOM_SHAPE(3), 0, 1, 2)), LOOM_ERR_SHAPE,
                 "accuracy: expected logits [N, K] and int64 labels [N], got [4, 3] and int64 [3]");
    assert_error(loom_accuracy(logits, loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(4))), LOOM_ERR_SHAPE,
                 "got [4, 3] and float32 [4]");
    assert_error(loom_accuracy(loom_randn(ctx, LOOM_SHAPE(4)), I64(ctx, LOOM_SHAPE(4), 0, 1, 2, 0)), LOOM_ERR_SHAPE,
                 "accuracy: expected logits [N, K]");
    loom_clear_error();
    assert_error(loom_accuracy(NULL, I64(ctx, LOOM_SHAPE(1), 0)), LOOM_ERR_INVALID_ARG, "accuracy");

    /* Module constructors. */
    assert_error(loom_conv2d_module(ctx, 3, 4, 3, 3, &(loom_conv2d_opts){.groups = 2}, true), LOOM_ERR_INVALID_ARG,
                 "conv2d: channels (3 -> 4) and kernel (3, 3) must be positive, and the channels divisible by groups = 2");
    assert_error(loom_conv2d_module(ctx, 0, 4, 3, 3, NULL, true), LOOM_ERR_INVALID_ARG, "conv2d: channels (0 -> 4)");
    assert_error(loom_conv2d_module(ctx, 3, 4, 0, 3, NULL, true), LOOM_ERR_INVALID_ARG, "kernel (0, 3)");
    assert_error(loom_conv2d_module(ctx, 3, 4, 3, 3, &(loom_conv2d_opts){.relu = true}, true), LOOM_ERR_INVALID_ARG,
                 "conv2d: the module takes no fused relu option");
    assert_error(loom_conv2d_module(NULL, 3, 4, 3, 3, NULL, true), LOOM_ERR_INVALID_ARG, "conv2d: context is NULL");
    assert_error(loom_max_pool2d_module(ctx, NULL), LOOM_ERR_INVALID_ARG, "MaxPool2d: needs a positive kernel");
    assert_error(loom_avg_pool2d_module(ctx, &(loom_pool2d_opts){.kernel = {2, 2}, .padding = {2, 0}}),
                 LOOM_ERR_INVALID_ARG, "AvgPool2d: needs a positive kernel, a stride >= 0 (0 = kernel) and padding at "
                                       "most half the kernel");
    assert_error(loom_adaptive_avg_pool2d_module(ctx, 2, 0), LOOM_ERR_INVALID_ARG,
                 "adaptive_avg_pool2d: output size (2, 0) must be positive");
    assert_error(loom_batch_norm2d_module(ctx, 0, 1e-5, 0.1, true), LOOM_ERR_INVALID_ARG,
                 "BatchNorm2d: needs a context, num_features > 0 (got 0)");
    assert_error(loom_batch_norm2d_module(ctx, 3, 0, 0.1, true), LOOM_ERR_INVALID_ARG, "eps > 0 (got 0)");
    assert_error(loom_batch_norm2d_module(ctx, 3, 1e-5, -0.1, true), LOOM_ERR_INVALID_ARG, "momentum in [0, 1] (got -0.1)");
    loom_module *bn = loom_batch_norm2d_module(ctx, 3, 1e-5, 0.1, true);
    assert_error(loom_module_forward(bn, x23), LOOM_ERR_SHAPE, "BatchNorm2d: expected a 4-D input [N, C, H, W], got [2, 3]");
    assert_error(loom_module_forward(bn, loom_randn(ctx, LOOM_SHAPE(2, 4, 2, 2))), LOOM_ERR_SHAPE,
                 "batch_norm: running_mean [3] does not match 4 channels");
    loom_module_free(bn);
    loom_module *conv = loom_conv2d_module(ctx, 3, 4, 3, 3, NULL, true);
    assert_error(loom_module_forward(conv, x22), LOOM_ERR_SHAPE, "conv2d: input [1, 3, 2, 2] padded by (0, 0)");
    loom_module_free(conv);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- modules --------------------------------------------------------------- */

/* Every element of t lies within +-bound, and they are spread over it. */
static void expect_uniform_init(loom_tensor *t, double bound)
{
    int64_t n = loom_tensor_numel(t);
    float *v = copy_out_f32(t);
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    for (int64_t i = 0; i < n; i++) {
        ck_assert_msg(fabsf(v[i]) <= (float)bound, "element %lld = %g outside +-%g", (long long)i, v[i], bound);
        lo = fmin(lo, v[i]);
        hi = fmax(hi, v[i]);
        sum += v[i];
    }
    if (n >= 100) {
        /* Uniform on [-b, b]: extremes near the bounds, mean near 0. */
        ck_assert_msg(hi > 0.9 * bound && lo < -0.9 * bound, "range [%g, %g] for bound %g", lo, hi, bound);
        ck_assert_msg(fabs(sum / (double)n) < 0.15 * bound, "mean %g for bound %g", sum / (double)n, bound);
    } else {
        ck_assert(hi > lo);
    }
    free(v);
}

START_TEST(test_conv2d_module)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_module *c = loom_conv2d_module(ctx, 3, 16, 3, 3, NULL, true);
    ck_assert_msg(c != NULL, "%s", loom_last_error());
    ck_assert_str_eq(loom_module_type(c), "Conv2d");
    EXPECT_NAMES(c, false, "weight", "bias");
    EXPECT_NAMES(c, true, "weight", "bias");
    loom_tensor *w = loom_module_get(c, "weight"), *b = loom_module_get(c, "bias");
    assert_shape(w, 16, 3, 3, 3);
    assert_shape(b, 16);
    ck_assert(loom_tensor_requires_grad(w) && loom_tensor_is_leaf(w));
    ck_assert(loom_tensor_requires_grad(b));
    expect_uniform_init(w, 1 / sqrt(27.0));
    expect_uniform_init(b, 1 / sqrt(27.0));
    /* forward is the functional conv with the module's parameters. */
    loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(2, 3, 6, 5));
    loom_tensor *y = loom_module_forward(c, x);
    assert_shape(y, 2, 16, 4, 3);
    assert_close(y, loom_conv2d(x, w, b, NULL), 0, "Conv2d forward");
    loom_module_free(c);

    /* Groups, stride, padding, dilation, no bias: fan_in = in/groups * kh * kw. */
    loom_conv2d_opts o = {.stride = {2, 1}, .padding = {1, 2}, .dilation = {1, 2}, .groups = 2};
    loom_module *g = loom_conv2d_module(ctx, 4, 6, 3, 2, &o, false);
    ck_assert_msg(g != NULL, "%s", loom_last_error());
    EXPECT_NAMES(g, false, "weight");
    ck_assert_ptr_null(loom_module_get(g, "bias"));
    loom_tensor *wg = loom_module_get(g, "weight");
    assert_shape(wg, 6, 2, 3, 2);
    expect_uniform_init(wg, 1 / sqrt(12.0));
    loom_tensor *xg = loom_randn(ctx, LOOM_SHAPE(1, 4, 5, 5));
    loom_tensor *yg = loom_module_forward(g, xg);
    assert_shape(yg, 1, 6, 3, 7);
    assert_close(yg, loom_conv2d(xg, wg, NULL, &o), 0, "Conv2d groups forward");
    /* Gradients reach the weight. */
    ck_assert_int_eq(loom_backward(loom_sum(yg, 0, NULL, false), NULL, NULL), LOOM_OK);
    ck_assert(loom_tensor_has_grad(wg));
    loom_module_free(g);

    /* Depthwise, large: the init bound 1/sqrt(kh*kw) over many draws. */
    loom_module *d = loom_conv2d_module(ctx, 32, 64, 5, 5, &(loom_conv2d_opts){.groups = 32}, true);
    assert_shape(loom_module_get(d, "weight"), 64, 1, 5, 5);
    expect_uniform_init(loom_module_get(d, "weight"), 1 / 5.0);
    expect_uniform_init(loom_module_get(d, "bias"), 1 / 5.0);
    loom_module_free(d);

    /* The context's generator: same seed, same weights. */
    loom_manual_seed(ctx, 11);
    loom_module *a1 = loom_conv2d_module(ctx, 2, 2, 2, 2, NULL, true);
    loom_manual_seed(ctx, 11);
    loom_module *a2 = loom_conv2d_module(ctx, 2, 2, 2, 2, NULL, true);
    assert_close(loom_module_get(a1, "weight"), loom_module_get(a2, "weight"), 0, "seeded init");
    loom_module_free(a1);
    loom_module_free(a2);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_pool_flatten_modules)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(2, 3, 7, 6));
    loom_pool2d_opts o = {.kernel = {3, 2}, .stride = {2, 0}, .padding = {1, 1}, .ceil_mode = true, .exclude_pad = true};
    loom_module *mp = loom_max_pool2d_module(ctx, &o);
    loom_module *ap = loom_avg_pool2d_module(ctx, &o);
    loom_module *ad = loom_adaptive_avg_pool2d_module(ctx, 3, 4);
    ck_assert_str_eq(loom_module_type(mp), "MaxPool2d");
    ck_assert_str_eq(loom_module_type(ap), "AvgPool2d");
    ck_assert_str_eq(loom_module_type(ad), "AdaptiveAvgPool2d");
    ck_assert_int_eq(loom_module_parameters(mp, NULL, NULL, 0), 0);
    ck_assert_int_eq(loom_module_state(ap, NULL, NULL, 0), 0);
    /* H: (7 + 2 - 3) / 2 + 1 = 4; W: stride 0 = kernel 2: (6 + 2 - 2) / 2 + 1 = 4. */
    loom_tensor *ym = loom_module_forward(mp, x);
    assert_shape(ym, 2, 3, 4, 4);
    assert_close(ym, loom_max_pool2d(x, &o), 0, "MaxPool2d");
    assert_close(loom_module_forward(ap, x), loom_avg_pool2d(x, &o), 0, "AvgPool2d");
    loom_tensor *ya = loom_module_forward(ad, x);
    assert_shape(ya, 2, 3, 3, 4);
    assert_close(ya, loom_adaptive_avg_pool2d(x, 3, 4), 0, "AdaptiveAvgPool2d");
    loom_module_free(mp);
    loom_module_free(ap);
    loom_module_free(ad);

    /* Flatten. */
    loom_tensor *z = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 3, 4, 5)));
    float *zv = copy_out_f32(z);
    loom_module *f = loom_flatten_module(ctx, 1, -1);
    ck_assert_str_eq(loom_module_type(f), "Flatten");
    ck_assert_int_eq(loom_module_parameters(f, NULL, NULL, 0), 0);
    loom_tensor *f1 = loom_module_forward(f, z);
    assert_shape(f1, 2, 60);
    assert_values_f32(f1, zv, 120, 0);
    loom_module *f23 = loom_flatten_module(ctx, 2, 3), *f01 = loom_flatten_module(ctx, 0, 1);
    assert_shape(loom_module_forward(f23, z), 2, 3, 20);
    assert_shape(loom_module_forward(f01, z), 6, 4, 5);
    assert_values_f32(loom_module_forward(f01, z), zv, 120, 0);
    /* The gradient flows back through the reshape. */
    loom_tensor *r = weights_like(f1);
    ck_assert_int_eq(loom_backward(loom_sum(loom_mul(f1, r), 0, NULL, false), NULL, NULL), LOOM_OK);
    float *rv = copy_out_f32(r);
    assert_values_f32(loom_tensor_grad(z), rv, 120, 0);
    free(rv);
    free(zv);
    /* A bad dim fails at forward. */
    loom_module *bad = loom_flatten_module(ctx, 1, 7);
    ck_assert_ptr_null(loom_module_forward(bad, z));
    loom_module_free(bad);
    loom_module_free(f);
    loom_module_free(f23);
    loom_module_free(f01);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_batch_norm2d_module)
{
    loom_ctx *ctx = cfg_ctx(_i);
    const double eps = 1e-5, mom = 0.1;
    loom_module *bn = loom_batch_norm2d_module(ctx, 2, eps, mom, true);
    ck_assert_msg(bn != NULL, "%s", loom_last_error());
    ck_assert_str_eq(loom_module_type(bn), "BatchNorm2d");
    EXPECT_NAMES(bn, false, "weight", "bias");
    EXPECT_NAMES(bn, true, "weight", "bias", "running_mean", "running_var", "num_batches_tracked");
    loom_tensor *rm = loom_module_get(bn, "running_mean"), *rv = loom_module_get(bn, "running_var");
    ck_assert(loom_tensor_requires_grad(loom_module_get(bn, "weight")));
    ck_assert(!loom_tensor_requires_grad(rm) && !loom_tensor_requires_grad(rv));
    EXPECT_F32(loom_module_get(bn, "weight"), 0, 1, 1);
    EXPECT_F32(loom_module_get(bn, "bias"), 0, 0, 0);
    EXPECT_F32(rm, 0, 0, 0);
    EXPECT_F32(rv, 0, 1, 1);

    /* x [2, 2, 1, 3]: channel 0 holds {1, 2, 6, 3, 0, 0}, channel 1 {4, -1, 2, 5, 5, 9}. */
    float xv[12] = {1, 2, 6, 4, -1, 2, 3, 0, 0, 5, 5, 9};
    loom_tensor *x = loom_tensor_from_array(ctx, LOOM_FLOAT32, xv, LOOM_SHAPE(2, 2, 1, 3));
    double mean[2] = {0, 0}, var[2] = {0, 0};
    for (int c = 0; c < 2; c++) {
        for (int n = 0; n < 2; n++)
            for (int j = 0; j < 3; j++) mean[c] += xv[n * 6 + c * 3 + j] / 6.0;
        for (int n = 0; n < 2; n++)
            for (int j = 0; j < 3; j++) var[c] += pow(xv[n * 6 + c * 3 + j] - mean[c], 2) / 6.0;
    }
    SET(bn, "weight", 2, 0.5);
    SET(bn, "bias", -1, 3);
    const double gam[2] = {2, 0.5}, bet[2] = {-1, 3};
    double want[12];
    for (int i = 0; i < 12; i++) {
        int c = (i / 3) % 2;
        want[i] = (xv[i] - mean[c]) / sqrt(var[c] + eps) * gam[c] + bet[c];
    }
    /* Training: batch statistics; the running ones move by momentum
     * (unbiased variance: times 6/5). Twice: they compound. */
    EXPECT_DOUBLES(loom_module_forward(bn, x), want, 12, 1e-5);
    double rm1[2], rv1[2];
    for (int c = 0; c < 2; c++) {
        rm1[c] = mom * mean[c];
        rv1[c] = (1 - mom) * 1 + mom * var[c] * 6 / 5;
    }
    EXPECT_DOUBLES(rm, rm1, 2, 1e-6);
    EXPECT_DOUBLES(rv, rv1, 2, 1e-6);
    EXPECT_DOUBLES(loom_module_forward(bn, x), want, 12, 1e-5);
    double rm2[2], rv2[2];
    for (int c = 0; c < 2; c++) {
        rm2[c] = (1 - mom) * rm1[c] + mom * mean[c];
        rv2[c] = (1 - mom) * rv1[c] + mom * var[c] * 6 / 5;
    }
    EXPECT_DOUBLES(rm, rm2, 2, 1e-6);
    EXPECT_DOUBLES(rv, rv2, 2, 1e-6);

    /* Evaluation: the running statistics are used and left alone. */
    loom_module_train(bn, false);
    double wante[12];
    for (int i = 0; i < 12; i++) {
        int c = (i / 3) % 2;
        wante[i] = (xv[i] - rm2[c]) / sqrt(rv2[c] + eps) * gam[c] + bet[c];
    }
    for (int k = 0; k < 2; k++) EXPECT_DOUBLES(loom_module_forward(bn, x), wante, 12, 1e-5);
    EXPECT_DOUBLES(rm, rm2, 2, 1e-6);
    EXPECT_DOUBLES(rv, rv2, 2, 1e-6);
    /* One value per channel is fine in evaluation mode. */
    loom_tensor *one = loom_module_forward(bn, F32(ctx, LOOM_SHAPE(1, 2, 1, 1), 1, 2));
    EXPECT_F32(one, 1e-5, (float)((1 - rm2[0]) / sqrt(rv2[0] + eps) * 2 - 1),
               (float)((2 - rm2[1]) / sqrt(rv2[1] + eps) * 0.5 + 3));
    /* Back to training: batch statistics again. */
    loom_module_train(bn, true);
    EXPECT_DOUBLES(loom_module_forward(bn, x), want, 12, 1e-5);
    /* PyTorch's count of training forwards (evaluation does not count). */
    EXPECT_I64(loom_module_get(bn, "num_batches_tracked"), 3);
    loom_module_free(bn);

    /* affine = false: buffers only; momentum 1 replaces the running ones. */
    loom_module *na = loom_batch_norm2d_module(ctx, 2, eps, 1.0, false);
    EXPECT_NAMES(na, true, "running_mean", "running_var", "num_batches_tracked");
    ck_assert_int_eq(loom_module_parameters(na, NULL, NULL, 0), 0);
    ck_assert_ptr_nonnull(loom_module_forward(na, x));
    double um[2] = {mean[0], mean[1]}, uv[2] = {var[0] * 6 / 5, var[1] * 6 / 5};
    EXPECT_DOUBLES(loom_module_get(na, "running_mean"), um, 2, 1e-6);
    EXPECT_DOUBLES(loom_module_get(na, "running_var"), uv, 2, 1e-5);
    loom_module_free(na);
    loom_ctx_free(ctx);
}
END_TEST

/* Sequential(Conv2d, ReLU) runs fused: the same values and gradients as the
 * functional conv then relu with the same parameters. */
START_TEST(test_sequential_conv_relu)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_conv2d_opts o = {.stride = {1, 2}, .padding = {1, 1}, .groups = 1};
    loom_module *seq = loom_sequential(ctx, 4, (loom_module *[]){loom_conv2d_module(ctx, 3, 4, 3, 3, &o, true),
                                                                 loom_relu_module(ctx),
                                                                 loom_conv2d_module(ctx, 4, 2, 1, 1, NULL, false),
                                                                 loom_relu_module(ctx)});
    ck_assert_msg(seq != NULL, "%s", loom_last_error());
    EXPECT_NAMES(seq, false, "0.weight", "0.bias", "2.weight");
    ck_assert_str_eq(loom_module_type(loom_module_child(seq, "0")), "Conv2d");
    ck_assert_str_eq(loom_module_type(loom_module_child(seq, "1")), "ReLU");
    loom_tensor *w0 = loom_module_get(seq, "0.weight"), *b0 = loom_module_get(seq, "0.bias");
    loom_tensor *w2 = loom_module_get(seq, "2.weight");
    loom_tensor *x = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 3, 6, 7)));

    loom_tensor *ys = loom_module_forward(seq, x);
    loom_tensor *h = loom_relu(loom_conv2d(x, w0, b0, &o));
    loom_tensor *yf = loom_relu(loom_conv2d(h, w2, NULL, NULL));
    assert_shape(ys, 2, 2, 6, 4);
    assert_close(ys, yf, 1e-6, "Sequential vs functional");
    /* The first layer's output alone, fused in a 2-module Sequential. */
    loom_module *pair = loom_sequential(ctx, 2, (loom_module *[]){loom_conv2d_module(ctx, 3, 4, 3, 3, &o, true),
                                                                  loom_relu_module(ctx)});
    SET(pair, "0.bias", 0.5, -0.5, 0.25, -0.25);
    loom_tensor *pw = loom_module_get(pair, "0.weight"), *pb = loom_module_get(pair, "0.bias");
    loom_tensor *yp = loom_module_forward(pair, x);
    assert_close(yp, loom_relu(loom_conv2d(x, pw, pb, &o)), 1e-6, "Sequential(Conv2d, ReLU)");

    loom_tensor *params[4] = {x, w0, b0, w2};
    loom_tensor *g[2][4];
    loom_tensor *outs[2] = {ys, yf};
    loom_tensor *r = weights_like(ys);
    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(loom_backward(loom_sum(loom_mul(outs[k], r), 0, NULL, false), NULL, NULL), LOOM_OK);
        for (int j = 0; j < 4; j++) {
            g[k][j] = loom_tensor_grad(params[j]);
            ck_assert_int_eq(loom_tensor_eval(g[k][j]), LOOM_OK);
            loom_tensor_zero_grad(params[j]);
        }
    }
    const char *what[4] = {"grad x", "grad 0.weight", "grad 0.bias", "grad 2.weight"};
    for (int j = 0; j < 4; j++) assert_close(g[0][j], g[1][j], 1e-5, what[j]);
    loom_module_free(pair);
    loom_module_free(seq);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- end to end: a tiny CNN learns where the blob is -------------------------- */

#define E2E_N 48

/* 8x8 images with faint noise and a bright 2x2 blob, in the left half
 * (label 0) or the right half (label 1). */
static void blob_data(float *x, int64_t *y)
{
    uint64_t s = 2024;
    for (int i = 0; i < E2E_N; i++) {
        float *img = x + i * 64;
        for (int p = 0; p < 64; p++) img[p] = lcg_uniform(&s, -0.1f, 0.1f);
        int label = i % 2;
        int r = (int)(lcg_next(&s) % 7);
        int c = (int)(lcg_next(&s) % 3) + (label ? 4 : 0); /* cols c, c+1 in 0..3 or 4..7 */
        for (int dr = 0; dr < 2; dr++)
            for (int dc = 0; dc < 2; dc++) img[(r + dr) * 8 + c + dc] = 1.0f;
        y[i] = label;
    }
}

START_TEST(test_train_tiny_cnn)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_manual_seed(ctx, 5);
    loom_module *net = loom_sequential(
        ctx, 5,
        (loom_module *[]){loom_conv2d_module(ctx, 1, 4, 3, 3, &(loom_conv2d_opts){.padding = {1, 1}}, true),
                          loom_relu_module(ctx), loom_max_pool2d_module(ctx, &(loom_pool2d_opts){.kernel = {2, 2}}),
                          loom_flatten_module(ctx, 1, -1), loom_linear(ctx, 4 * 4 * 4, 2, true)});
    ck_assert_msg(net != NULL, "%s", loom_last_error());
    float *xv = malloc(sizeof(float) * E2E_N * 64);
    int64_t yv[E2E_N];
    ck_assert(xv);
    blob_data(xv, yv);
    loom_tensor *x = loom_tensor_from_array(ctx, LOOM_FLOAT32, xv, LOOM_SHAPE(E2E_N, 1, 8, 8));
    loom_tensor *y = loom_tensor_from_array(ctx, LOOM_INT64, yv, LOOM_SHAPE(E2E_N));
    free(xv);
    loom_tensor *params[8];
    int np = loom_module_parameters(net, params, NULL, 8);
    ck_assert_int_eq(np, 4);
    loom_adam_options ao = loom_adam_defaults();
    ao.lr = 0.05;
    loom_optimizer *opt = loom_adam(ctx, np, params, &ao);
    ck_assert_msg(opt != NULL, "%s", loom_last_error());
    double first = 0, last = 0, acc = 0;
    for (int step = 0; step < 30; step++) {
        loom_scope_begin(ctx);
        loom_optimizer_zero_grad(opt);
        loom_tensor *logits = loom_module_forward(net, x);
        loom_tensor *loss = loom_cross_entropy_loss(logits, y, LOOM_REDUCTION_MEAN);
        double lv = scalar_of(loss);
        if (step == 0) first = lv;
        last = lv;
        ck_assert_msg(loom_backward(loss, NULL, NULL) == LOOM_OK, "step %d: %s", step, loom_last_error());
        ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
        loom_scope_end(ctx);
    }
    loom_scope_begin(ctx);
    loom_no_grad_begin(ctx);
    loom_module_train(net, false);
    acc = scalar_of(loom_accuracy(loom_module_forward(net, x), y));
    loom_no_grad_end(ctx);
    loom_scope_end(ctx);
    ck_assert_msg(acc >= 0.95, "config %d: training accuracy %g after 30 steps (loss %g -> %g)", _i, acc, first, last);
    ck_assert_msg(last < first, "config %d: loss %g -> %g", _i, first, last);
    loom_optimizer_free(opt);
    loom_module_free(net);
    loom_ctx_free(ctx);
}
END_TEST

/* Every CNN function leaves only its result in the caller's scope. */
START_TEST(test_cnn_no_leaks)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 3, 6, 6)));
    loom_tensor *w = need_grad(loom_randn(ctx, LOOM_SHAPE(4, 3, 3, 3)));
    loom_tensor *b = need_grad(loom_randn(ctx, LOOM_SHAPE(4)));
    loom_tensor *g = need_grad(loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(3)));
    loom_tensor *rm = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3)), *rv = loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(3));
    loom_tensor *cls = I64(ctx, LOOM_SHAPE(2), 0, 1);
    int64_t base = live(ctx);
    loom_pool2d_opts po = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true};
    loom_tensor *outs[] = {
        loom_conv2d(x, w, b, &(loom_conv2d_opts){.padding = {1, 1}, .relu = true}),
        loom_max_pool2d(x, &po),
        loom_avg_pool2d(x, &po),
        loom_adaptive_avg_pool2d(x, 4, 5),
        loom_batch_norm(x, rm, rv, g, NULL, true, 0.1, 1e-5),
        loom_batch_norm(x, rm, rv, NULL, g, false, 0.1, 1e-5),
        loom_softmax(x, 1),
        loom_log_softmax(x, -1),
    };
    int nouts = (int)(sizeof outs / sizeof outs[0]);
    loom_tensor *terms[8];
    for (int i = 0; i < nouts; i++) {
        ck_assert_msg(outs[i] != NULL && loom_tensor_eval(outs[i]) == LOOM_OK, "%d: %s", i, loom_last_error());
        terms[i] = loom_mean(outs[i], 0, NULL, false);
    }
    loom_tensor *loss = loom_sum(loom_stack(terms, nouts, 0), 0, NULL, false);
    ck_assert_msg(loom_backward(loss, NULL, NULL) == LOOM_OK, "config %d: backward: %s", _i, loom_last_error());
    loom_tensor *acc = loom_accuracy(loom_randn(ctx, LOOM_SHAPE(2, 3)), cls);
    ck_assert_int_eq(loom_tensor_eval(acc), LOOM_OK);
    for (int i = 0; i < nouts; i++) {
        loom_tensor_free(outs[i]);
        loom_tensor_free(terms[i]);
    }
    loom_tensor_free(loss);
    loom_tensor_free(acc);
    loom_tensor *ps[4] = {x, w, b, g};
    for (int i = 0; i < 4; i++) {
        ck_assert(loom_tensor_has_grad(ps[i]));
        loom_tensor_zero_grad(ps[i]);
    }
    /* The stack and the scalars built for the loss are the only extras. */
    ck_assert_int_le(live(ctx), base + 2);
    loom_ctx_free(ctx);
}
END_TEST

/* loom_fuse_conv_bn_eval: one convolution equals conv then batch norm in
 * evaluation mode (non-trivial running statistics and affine parameters). */
START_TEST(test_fuse_conv_bn_eval)
{
    loom_ctx *ctx = cfg_ctx(_i);
    for (int groups = 1; groups <= 2; groups++) {
        loom_conv2d_opts o = {.stride = {2, 1}, .padding = {1, 1}, .groups = groups};
        loom_module *conv = loom_conv2d_module(ctx, 4, 6, 3, 3, &o, groups == 1);
        loom_module *bn = loom_batch_norm2d_module(ctx, 6, 1e-3, 0.1, true);
        ck_assert_ptr_nonnull(conv);
        ck_assert_ptr_nonnull(bn);
        const char *names[4] = {"weight", "bias", "running_mean", "running_var"};
        for (int i = 0; i < 4; i++) {
            loom_tensor *r = loom_rand(ctx, LOOM_SHAPE(6));
            if (i == 3) r = loom_add_scalar(r, 0.5); /* variances > 0 */
            else r = loom_sub_scalar(r, 0.5);
            ck_assert_int_eq(loom_tensor_assign(loom_module_get(bn, names[i]), r), LOOM_OK);
        }
        loom_module_train(conv, false);
        loom_module_train(bn, false);
        loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(2, 4, 7, 6));
        loom_tensor *want = loom_module_forward(bn, loom_module_forward(conv, x));
        loom_module *fused = loom_fuse_conv_bn_eval(conv, bn);
        ck_assert_ptr_nonnull(fused);
        ck_assert_ptr_nonnull(loom_module_get(fused, "bias"));
        loom_tensor *got = loom_module_forward(fused, x);
        assert_close(got, want, 1e-5, "fused conv+bn");
        loom_module_free(fused);
        loom_module_free(bn);
        loom_module_free(conv);
    }
    /* Errors: wrong module types, channel mismatch. */
    loom_module *conv = loom_conv2d_module(ctx, 2, 3, 1, 1, NULL, false);
    loom_module *bn = loom_batch_norm2d_module(ctx, 4, 1e-5, 0.1, true);
    ck_assert_ptr_null(loom_fuse_conv_bn_eval(bn, conv));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_null(loom_fuse_conv_bn_eval(conv, bn));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "output channels"));
    loom_module_free(bn);
    loom_module_free(conv);
    loom_ctx_free(ctx);
}
END_TEST

Suite *loom_suite_cnn(void)
{
    Suite *s = suite_create("cnn");
    TCase *tp = test_tcase(s, "parity", 60);
    tcase_add_loop_test(tp, test_pytorch_parity, 0, CNN_NCASES * NCFG);
    tcase_add_loop_test(tp, test_fused_relu_matches_unfused, 0, NCFG);
    tcase_add_loop_test(tp, test_fused_bn_relu, 0, NCFG + 1);
    tcase_add_loop_test(tp, test_add_relu, 0, NCFG);
    tcase_add_loop_test(tp, test_fuse_conv_bn_eval, 0, NCFG);
    tcase_add_loop_test(tp, test_noncontiguous_inputs, 0, NCFG);
    tcase_add_loop_test(tp, test_hand_values, 0, NCFG);

    TCase *tg = test_tcase(s, "gradcheck", 60);
    tcase_add_loop_test(tg, test_gradcheck_conv, 0, NCFG);
    tcase_add_loop_test(tg, test_gradcheck_pool, 0, NCFG);
    tcase_add_loop_test(tg, test_gradcheck_batch_norm, 0, NCFG);
    tcase_add_loop_test(tg, test_gradcheck_softmax, 0, NCFG);

    TCase *te = test_tcase(s, "errors", 30);
    tcase_add_test(te, test_errors);

    TCase *tm = test_tcase(s, "modules", 60);
    tcase_add_loop_test(tm, test_conv2d_module, 0, NCFG);
    tcase_add_loop_test(tm, test_pool_flatten_modules, 0, NCFG);
    tcase_add_loop_test(tm, test_batch_norm2d_module, 0, NCFG);
    tcase_add_loop_test(tm, test_sequential_conv_relu, 0, NCFG);
    tcase_add_loop_test(tm, test_cnn_no_leaks, 0, NCFG);
    tcase_add_loop_test(tm, test_train_tiny_cnn, 0, NCFG);
    return s;
}
