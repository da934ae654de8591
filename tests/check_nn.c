/*
 * tests/check_nn.c - loom/nn.h: modules (names, order, lookup, ownership,
 * training mode), Linear's init and forward, the functional forms, every
 * loss, and dropout.
 *
 * Expected values are worked out by hand, computed here in double from the
 * same data, or produced by PyTorch 1.13 itself (tests/fixtures/nn_cases.h,
 * made by gen_nn.py): outputs and input gradients of softmax, log_softmax
 * and every loss with every reduction. Gradients are also checked against
 * finite differences with loom_gradcheck.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check_suites.h"
#include "tests/fixtures/nn_cases.h"

/* ---- helpers ---------------------------------------------------------- */

/* ---- modules: names, order, lookup ------------------------------------ */

START_TEST(test_sequential_names)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *net = loom_sequential(ctx, 4,
                                       (loom_module *[]){loom_linear(ctx, 3, 4, true), loom_relu_module(ctx),
                                                         loom_linear(ctx, 4, 2, true), loom_sigmoid_module(ctx)});
    ck_assert_msg(net != NULL, "%s", loom_last_error());
    ck_assert_str_eq(loom_module_type(net), "Sequential");
    ck_assert_ptr_eq(loom_module_ctx(net), ctx);
    EXPECT_NAMES(net, false, "0.weight", "0.bias", "2.weight", "2.bias");
    EXPECT_NAMES(net, true, "0.weight", "0.bias", "2.weight", "2.bias");
    ck_assert_str_eq(loom_module_type(loom_module_child(net, "0")), "Linear");
    ck_assert_str_eq(loom_module_type(loom_module_child(net, "1")), "ReLU");
    ck_assert_str_eq(loom_module_type(loom_module_child(net, "3")), "Sigmoid");
    assert_shape(loom_module_get(net, "0.weight"), 4, 3);
    assert_shape(loom_module_get(net, "0.bias"), 4);
    assert_shape(loom_module_get(net, "2.weight"), 2, 4);
    /* cap smaller than the count: fills cap entries, returns the total. */
    loom_tensor *two[2] = {NULL, NULL};
    const char *nm[2] = {NULL, NULL};
    ck_assert_int_eq(loom_module_parameters(net, two, nm, 1), 4);
    ck_assert_str_eq(nm[0], "0.weight");
    ck_assert_ptr_null(two[1]);
    ck_assert_int_eq(loom_module_parameters(net, NULL, NULL, 0), 4);
    /* Names of a child asked on its own have no prefix. */
    EXPECT_NAMES(loom_module_child(net, "2"), false, "weight", "bias");
    loom_module_free(net);
    loom_ctx_free(ctx);
}
END_TEST

/* SimpleNN: fc1 -> relu -> fc2, as a PyTorch user would write it. */
static loom_tensor *simple_forward(loom_module *m, loom_tensor *x, void *user)
{
    int *calls = user;
    (*calls)++;
    return loom_module_forward(loom_module_child(m, "fc2"), loom_relu(loom_module_forward(loom_module_child(m, "fc1"), x)));
}

START_TEST(test_custom_module)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    int *calls = calloc(1, sizeof *calls);
    loom_module *m = loom_module_create(ctx, "SimpleNN", simple_forward, calls, free);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(loom_module_add_child(m, "fc1", loom_linear(ctx, 2, 3, true)), LOOM_OK);
    ck_assert_int_eq(loom_module_add_child(m, "fc2", loom_linear(ctx, 3, 1, true)), LOOM_OK);
    ck_assert_str_eq(loom_module_type(m), "SimpleNN");
    EXPECT_NAMES(m, false, "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias");

    /* Own parameters come first whatever the registration order (PyTorch's
     * named_parameters), buffers only in the state, after own parameters. */
    ck_assert_int_eq(loom_module_add_parameter(m, "scale", F32(ctx, LOOM_SHAPE(1), 2)), LOOM_OK);
    ck_assert_int_eq(loom_module_add_buffer(m, "steps", I64(ctx, LOOM_SHAPE(1), 0)), LOOM_OK);
    EXPECT_NAMES(m, false, "scale", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias");
    EXPECT_NAMES(m, true, "scale", "steps", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias");
    ck_assert(!loom_tensor_requires_grad(loom_module_get(m, "steps")));

    /* A grandchild invalidates the names cached at the top. */
    loom_module *inner = loom_module_create(ctx, "Inner", NULL, NULL, NULL);
    ck_assert_int_eq(loom_module_add_child(m, "body", inner), LOOM_OK);
    ck_assert_int_eq(loom_module_add_child(inner, "0", loom_linear(ctx, 1, 1, false)), LOOM_OK);
    EXPECT_NAMES(m, false, "scale", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "body.0.weight");
    ck_assert_ptr_eq(loom_module_child(m, "body.0"), loom_module_child(inner, "0"));

    /* forward: y = fc2(relu(fc1(x))) against hand computation. */
    SET(m, "fc1.weight", 1, -1, 0.5, 2, -1, 0);
    SET(m, "fc1.bias", 0, 1, 0.5);
    SET(m, "fc2.weight", 1, 2, -1);
    SET(m, "fc2.bias", 0.25);
    loom_tensor *x = F32(ctx, LOOM_SHAPE(2, 2), 1, 2, -3, 1);
    /* h = relu(x W1^T + b1): row 0: [1-2, 0.5+4+1, -1+0.5] = [-1, 5.5, -0.5] -> [0, 5.5, 0]
     *                        row 1: [-3-1, -1.5+2+1, 3+0.5] = [-4, 1.5, 3.5] -> [0, 1.5, 3.5]
     * y = h W2^T + b2: [11 + 0.25, 3 - 3.5 + 0.25] */
    loom_tensor *y = loom_module_forward(m, x);
    EXPECT_F32(y, 1e-6, 11.25, -0.25);
    assert_shape(y, 2, 1);
    ck_assert_int_eq(*calls, 1);

    /* A module without forward fails cleanly. */
    ck_assert_ptr_null(loom_module_forward(inner, x));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "Inner has no forward"));
    loom_module_free(m); /* frees calls through free_user */
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_dotted_lookup)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *top = loom_module_create(ctx, "Top", NULL, NULL, NULL);
    loom_module *enc = loom_sequential(ctx, 2, (loom_module *[]){loom_linear(ctx, 2, 2, true), loom_tanh_module(ctx)});
    ck_assert_int_eq(loom_module_add_child(top, "encoder", enc), LOOM_OK);
    ck_assert_int_eq(loom_module_add_buffer(top, "mean", F32(ctx, LOOM_SHAPE(2), 0, 0)), LOOM_OK);
    loom_tensor *w = loom_module_get(top, "encoder.0.weight");
    ck_assert_ptr_nonnull(w);
    ck_assert_ptr_eq(w, loom_module_get(loom_module_child(top, "encoder.0"), "weight"));
    ck_assert_ptr_eq(w, loom_module_get(enc, "0.weight"));
    ck_assert_ptr_nonnull(loom_module_get(top, "mean"));
    ck_assert_str_eq(loom_module_type(loom_module_child(top, "encoder.1")), "Tanh");
    /* Misses: a child is not a tensor; unknown names at every level. */
    assert_error(loom_module_get(top, "encoder"), LOOM_ERR_INVALID_ARG, "no parameter or buffer \"encoder\"");
    assert_error(loom_module_get(top, "encoder.0.gamma"), LOOM_ERR_INVALID_ARG, "encoder.0.gamma");
    assert_error(loom_module_get(top, "decoder.0.weight"), LOOM_ERR_INVALID_ARG, "decoder.0.weight");
    assert_error(loom_module_get(top, "encoder.0.weight.x"), LOOM_ERR_INVALID_ARG, "encoder.0.weight.x");
    assert_error(loom_module_get(top, ""), LOOM_ERR_INVALID_ARG, "no parameter");
    assert_error(loom_module_child(top, "encoder.5"), LOOM_ERR_INVALID_ARG, "no submodule \"encoder.5\"");
    assert_error(loom_module_child(top, "mean"), LOOM_ERR_INVALID_ARG, "no submodule");
    assert_error(loom_module_get(NULL, "x"), LOOM_ERR_INVALID_ARG, "module is NULL");
    EXPECT_NAMES(top, true, "mean", "encoder.0.weight", "encoder.0.bias");
    EXPECT_NAMES(top, false, "encoder.0.weight", "encoder.0.bias");
    loom_module_free(top);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_duplicate_and_bad_names)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    int64_t base = live(ctx);
    loom_module *m = loom_module_create(ctx, "M", NULL, NULL, NULL);
    ck_assert_int_eq(loom_module_add_parameter(m, "w", F32(ctx, LOOM_SHAPE(1), 1)), LOOM_OK);
    ck_assert_int_eq(loom_module_add_child(m, "fc", loom_linear(ctx, 1, 1, true)), LOOM_OK);
    loom_scope_begin(ctx);
    loom_tensor *t = F32(ctx, LOOM_SHAPE(1), 2);
    ck_assert_int_eq(loom_module_add_parameter(m, "w", t), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "M already has a parameter called \"w\""));
    ck_assert_int_eq(loom_module_add_buffer(m, "w", t), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_module_add_parameter(m, "fc", t), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "child module called \"fc\""));
    ck_assert_int_eq(loom_module_add_parameter(m, "a.b", t), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "contains '.'"));
    ck_assert_int_eq(loom_module_add_parameter(m, "", t), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_module_add_parameter(m, NULL, t), LOOM_ERR_INVALID_ARG);
    /* Parameters must be float32 leaves; buffers may be any dtype. */
    ck_assert_int_eq(loom_module_add_parameter(m, "i", I64(ctx, LOOM_SHAPE(1), 1)), LOOM_ERR_DTYPE);
    loom_tensor *leaf = need_grad(F32(ctx, LOOM_SHAPE(1), 1));
    ck_assert_int_eq(loom_module_add_parameter(m, "nl", loom_mul_scalar(leaf, 2)), LOOM_ERR_STATE);
    /* NULL tensor: keeps the error of the call that produced it. */
    loom_clear_error();
    ck_assert_int_eq(loom_module_add_parameter(m, "n", NULL), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_module_add_parameter(m, "n", loom_reshape(t, LOOM_SHAPE(7))), LOOM_ERR_SHAPE);
    ck_assert_int_eq(loom_module_add_parameter(NULL, "n", t), LOOM_ERR_INVALID_ARG);
    /* The same tensor twice. */
    ck_assert_int_eq(loom_module_add_parameter(m, "t", t), LOOM_OK);
    ck_assert_int_eq(loom_module_add_buffer(m, "t2", t), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "already parameter \"t\""));
    loom_scope_end(ctx);
    /* The failed tensors stayed in the scope and died with it; t is the
     * module's. */
    scalar_of(loom_module_get(m, "t"));

    /* A child with a taken name is freed (the module owned it from the call). */
    ck_assert_int_eq(loom_module_add_child(m, "w", loom_linear(ctx, 2, 2, true)), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_module_add_child(m, "fc", loom_relu_module(ctx)), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_module_add_child(NULL, "x", loom_linear(ctx, 2, 2, true)), LOOM_ERR_INVALID_ARG);
    /* Cycles and second parents are refused without freeing anything. */
    ck_assert_int_eq(loom_module_add_child(m, "self", m), LOOM_ERR_INVALID_ARG);
    loom_module *fc = loom_module_child(m, "fc");
    ck_assert_int_eq(loom_module_add_child(fc, "up", m), LOOM_ERR_INVALID_ARG);
    loom_module *other = loom_module_create(ctx, "Other", NULL, NULL, NULL);
    ck_assert_int_eq(loom_module_add_child(other, "fc", fc), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "already a child of a M"));
    ck_assert_ptr_eq(loom_module_child(m, "fc"), fc);
    /* A failed constructor's NULL keeps its error. */
    ck_assert_int_eq(loom_module_add_child(m, "bad", loom_linear(ctx, 0, 2, true)), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "linear: in_features"));
    EXPECT_NAMES(m, false, "w", "t", "fc.weight", "fc.bias");

    /* Freeing a child directly unlinks it from its parent. */
    loom_module_free(fc);
    ck_assert_ptr_null(loom_module_child(m, "fc"));
    EXPECT_NAMES(m, false, "w", "t");
    loom_module_free(other);
    loom_module_free(m);
    ck_assert_int_eq(live(ctx), base);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_train_eval)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *inner = loom_sequential(ctx, 1, (loom_module *[]){loom_dropout_module(ctx, 0.5)});
    loom_module *net =
        loom_sequential(ctx, 3, (loom_module *[]){loom_linear(ctx, 2, 2, true), inner, loom_relu_module(ctx)});
    ck_assert_ptr_nonnull(net);
    loom_module *drop = loom_module_child(net, "1.0");
    ck_assert_str_eq(loom_module_type(drop), "Dropout");
    ck_assert(loom_module_is_training(net) && loom_module_is_training(drop)); /* PyTorch's default */
    loom_module_train(net, false);
    ck_assert(!loom_module_is_training(net));
    ck_assert(!loom_module_is_training(inner));
    ck_assert(!loom_module_is_training(drop));
    ck_assert(!loom_module_is_training(loom_module_child(net, "0")));
    loom_module_train(inner, true); /* only the subtree */
    ck_assert(!loom_module_is_training(net));
    ck_assert(loom_module_is_training(drop));
    loom_module_train(net, true);
    ck_assert(loom_module_is_training(loom_module_child(net, "2")));
    ck_assert(!loom_module_is_training(NULL));
    loom_module_train(NULL, true); /* no-op */
    loom_module_free(net);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_parameters_are_owned_leaves)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    int64_t base = live(ctx);
    loom_scope_begin(ctx);
    loom_module *net =
        loom_sequential(ctx, 2, (loom_module *[]){loom_linear(ctx, 4, 8, true), loom_linear(ctx, 8, 3, false)});
    loom_scope_end(ctx); /* the parameters live outside every scope */
    ck_assert_int_eq(live(ctx), base + 3);
    loom_tensor *p[8];
    const char *names[8];
    ck_assert_int_eq(loom_module_parameters(net, p, names, 8), 3);
    ck_assert_str_eq(names[2], "1.weight");
    for (int i = 0; i < 3; i++) {
        ck_assert(loom_tensor_requires_grad(p[i]));
        ck_assert(loom_tensor_is_leaf(p[i]));
        ck_assert_int_eq(loom_tensor_dtype(p[i]), LOOM_FLOAT32);
        ck_assert(loom_tensor_is_contiguous(p[i]));
        ck_assert(!loom_tensor_has_grad(p[i]));
    }
    /* A training step's worth: forward, loss, backward reach every parameter. */
    for (int step = 0; step < 3; step++) {
        loom_scope_begin(ctx);
        loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(5, 4));
        loom_tensor *y = loom_randint(ctx, 0, 3, LOOM_SHAPE(5));
        loom_tensor *loss = loom_cross_entropy_loss(loom_module_forward(net, x), y, LOOM_REDUCTION_MEAN);
        ck_assert_msg(loom_backward(loss, NULL, NULL) == LOOM_OK, "%s", loom_last_error());
        for (int i = 0; i < 3; i++) {
            ck_assert(loom_tensor_has_grad(p[i]));
            loom_tensor *g = loom_tensor_grad(p[i]);
            ck_assert_int_eq(loom_tensor_numel(g), loom_tensor_numel(p[i]));
            loom_tensor_zero_grad(p[i]);
        }
        loom_scope_end(ctx);
        ck_assert_int_eq(live(ctx), base + 3);
    }
    loom_module_free(net);
    ck_assert_int_eq(live(ctx), base);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_sequential_ownership)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    int64_t base = live(ctx);
    /* A NULL entry (a failed constructor): the others are freed, the
     * constructor's error is kept. */
    loom_module *net = loom_sequential(ctx, 3, (loom_module *[]){loom_linear(ctx, 2, 2, true), loom_linear(ctx, -1, 2, true),
                                                                 loom_relu_module(ctx)});
    assert_error(net, LOOM_ERR_INVALID_ARG, "linear: in_features and out_features must be positive, got -1 and 2");
    ck_assert_int_eq(live(ctx), base);
    /* The same module twice: refused, freed once. */
    loom_module *r = loom_relu_module(ctx);
    assert_error(loom_sequential(ctx, 2, (loom_module *[]){r, r}), LOOM_ERR_INVALID_ARG, "module 1 is also module 0");
    assert_error(loom_sequential(ctx, -1, NULL), LOOM_ERR_INVALID_ARG, "sequential");
    assert_error(loom_sequential(NULL, 1, (loom_module *[]){loom_linear(ctx, 1, 1, true)}), LOOM_ERR_INVALID_ARG,
                 "context is NULL");
    ck_assert_int_eq(live(ctx), base);
    /* Empty: the identity (a new handle). */
    loom_module *empty = loom_sequential(ctx, 0, NULL);
    ck_assert_ptr_nonnull(empty);
    loom_tensor *x = F32(ctx, LOOM_SHAPE(2), 1, -2);
    loom_tensor *y = loom_module_forward(empty, x);
    ck_assert_ptr_ne(y, x);
    EXPECT_F32(y, 0, 1, -2);
    ck_assert_int_eq(loom_module_parameters(empty, NULL, NULL, 0), 0);
    loom_tensor_free(y);
    loom_module_free(empty);
    /* Chaining, and intermediates do not pile up in the caller's scope. */
    loom_module *chain = loom_sequential(
        ctx, 3, (loom_module *[]){loom_relu_module(ctx), loom_tanh_module(ctx), loom_sigmoid_module(ctx)});
    loom_scope_begin(ctx);
    int64_t before = live(ctx);
    loom_tensor *z = loom_module_forward(chain, x);
    EXPECT_F32(z, 1e-6, (float)(1 / (1 + exp(-tanh(1.0)))), 0.5f);
    ck_assert_int_eq(live(ctx), before + 1); /* once computed, only z is left */
    loom_scope_end(ctx);
    loom_module_free(chain);
    loom_tensor_free(x);
    ck_assert_int_eq(live(ctx), base);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- Linear ------------------------------------------------------------ */

START_TEST(test_linear_init)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    const int64_t in = 100, out = 200;
    loom_module *lin = loom_linear(ctx, in, out, true);
    ck_assert_ptr_nonnull(lin);
    ck_assert_str_eq(loom_module_type(lin), "Linear");
    double bound = 1.0 / sqrt((double)in);
    float fbound = (float)bound;
    float *w = copy_out_f32(loom_module_get(lin, "weight"));
    float *b = copy_out_f32(loom_module_get(lin, "bias"));
    int64_t n = in * out;
    double sum = 0, sq = 0;
    int64_t bins[10] = {0};
    for (int64_t i = 0; i < n; i++) {
        ck_assert_msg(fabsf(w[i]) <= fbound, "weight %lld = %g outside +-%g", (long long)i, w[i], bound);
        sum += w[i];
        sq += (double)w[i] * w[i];
        int k = (int)((w[i] + bound) / (2 * bound) * 10);
        bins[k < 0 ? 0 : k > 9 ? 9 : k]++;
    }
    /* Uniform on [-b, b]: mean 0 (sd of the mean b/sqrt(3n) = 4e-4),
     * variance b^2/3 (relative sd ~0.6% here), flat histogram (sd ~43). */
    double mean = sum / (double)n, var = sq / (double)n - mean * mean;
    ck_assert_msg(fabs(mean) < 0.003, "mean %g", mean);
    ck_assert_msg(fabs(var / (bound * bound / 3) - 1) < 0.05, "variance %g, expected %g", var, bound * bound / 3);
    for (int k = 0; k < 10; k++) ck_assert_msg(llabs(bins[k] - n / 10) < 250, "bin %d holds %lld", k, (long long)bins[k]);
    bool distinct = false;
    for (int64_t i = 0; i < out; i++) {
        ck_assert_msg(fabsf(b[i]) <= fbound, "bias %lld = %g outside +-%g", (long long)i, b[i], bound);
        distinct |= b[i] != b[0];
    }
    ck_assert(distinct);
    free(w);
    free(b);
    loom_module_free(lin);

    /* Drawn from the context's generator: same seed, same weights. */
    loom_manual_seed(ctx, 7);
    loom_module *a = loom_linear(ctx, 3, 2, true);
    loom_module *c = loom_linear(ctx, 3, 2, true); /* the generator moved on */
    loom_manual_seed(ctx, 7);
    loom_module *a2 = loom_linear(ctx, 3, 2, true);
    float *wa = copy_out_f32(loom_module_get(a, "weight")), *wc = copy_out_f32(loom_module_get(c, "weight"));
    float *wa2 = copy_out_f32(loom_module_get(a2, "weight"));
    ck_assert(memcmp(wa, wa2, sizeof(float) * 6) == 0);
    ck_assert(memcmp(wa, wc, sizeof(float) * 6) != 0);
    for (int i = 0; i < 6; i++) ck_assert(fabsf(wa[i]) <= (float)(1 / sqrt(3.0)));
    free(wa);
    free(wc);
    free(wa2);
    loom_module_free(a);
    loom_module_free(c);
    loom_module_free(a2);

    /* No bias. */
    loom_module *nb = loom_linear(ctx, 5, 2, false);
    EXPECT_NAMES(nb, false, "weight");
    ck_assert_ptr_null(loom_module_get(nb, "bias"));
    loom_module_free(nb);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_linear_forward)
{
    loom_ctx *ctx = test_ctx(2, NULL);
    loom_module *lin = loom_linear(ctx, 3, 2, true);
    SET(lin, "weight", 1, 2, 3, -1, 0.5, 0);
    SET(lin, "bias", 0.5, -1);
    /* [2, 3] input: rows [1, 0, -1] and [2, 2, 2]. */
    loom_tensor *x = F32(ctx, LOOM_SHAPE(2, 3), 1, 0, -1, 2, 2, 2);
    loom_tensor *y = loom_module_forward(lin, x);
    assert_shape(y, 2, 2);
    EXPECT_F32(y, 1e-6, 1 - 3 + 0.5, -1 - 1, 2 + 4 + 6 + 0.5, -2 + 1 - 1);
    /* [..., in]: a batch of batches, and a single vector. */
    loom_tensor *x3 = loom_reshape(loom_cat((loom_tensor *[]){x, x}, 2, 0), LOOM_SHAPE(2, 2, 3));
    loom_tensor *y3 = loom_module_forward(lin, x3);
    assert_shape(y3, 2, 2, 2);
    EXPECT_F32(y3, 1e-6, -1.5, -2, 12.5, -2, -1.5, -2, 12.5, -2);
    loom_tensor *y1 = loom_module_forward(lin, F32(ctx, LOOM_SHAPE(3), 1, 1, 1));
    assert_shape(y1, 2);
    EXPECT_F32(y1, 1e-6, 6.5, -1.5);
    /* The functional form, without bias. */
    EXPECT_F32(loom_linear_fn(x, loom_module_get(lin, "weight"), NULL), 1e-6, -2, -1, 12, -1);
    /* Shape errors name linear and the shapes. */
    assert_error(loom_module_forward(lin, F32(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4)), LOOM_ERR_SHAPE,
                 "linear: input [2, 2] does not end in in_features = 3 (weight [2, 3])");
    assert_error(loom_linear_fn(x, loom_module_get(lin, "bias"), NULL), LOOM_ERR_SHAPE,
                 "linear: weight must be 2-D [out_features, in_features], got [2]");
    assert_error(loom_linear_fn(x, loom_module_get(lin, "weight"), x), LOOM_ERR_SHAPE,
                 "linear: bias [2, 3] does not match out_features = 2");
    assert_error(loom_linear_fn(loom_scalar(ctx, LOOM_FLOAT32, 1), loom_module_get(lin, "weight"), NULL),
                 LOOM_ERR_SHAPE, "linear");
    assert_error(loom_module_forward(lin, I64(ctx, LOOM_SHAPE(3), 1, 2, 3)), LOOM_ERR_DTYPE,
                 "linear: input must be float32, got int64");
    assert_error(loom_linear_fn(NULL, x, NULL), LOOM_ERR_DTYPE, "linear: input must be float32"); /* kept */
    loom_clear_error();
    assert_error(loom_linear_fn(NULL, x, NULL), LOOM_ERR_INVALID_ARG, "linear: input is NULL");
    loom_module_free(lin);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_linear_bad_features)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    assert_error(loom_linear(ctx, 0, 3, true), LOOM_ERR_INVALID_ARG, "linear: in_features and out_features must be positive, got 0 and 3");
    assert_error(loom_linear(ctx, -4, 3, true), LOOM_ERR_INVALID_ARG, "got -4 and 3");
    assert_error(loom_linear(ctx, 4, 0, false), LOOM_ERR_INVALID_ARG, "got 4 and 0");
    assert_error(loom_linear(NULL, 4, 3, true), LOOM_ERR_INVALID_ARG, "context is NULL");
    assert_error(loom_dropout_module(ctx, 1.0), LOOM_ERR_INVALID_ARG, "dropout: probability must be in [0, 1), got 1");
    assert_error(loom_dropout_module(ctx, -0.1), LOOM_ERR_INVALID_ARG, "dropout");
    assert_error(loom_dropout_module(ctx, NAN), LOOM_ERR_INVALID_ARG, "dropout");
    assert_error(loom_module_create(NULL, "X", NULL, NULL, NULL), LOOM_ERR_INVALID_ARG, "context is NULL");
    ck_assert_int_eq(live(ctx), 0);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- gradcheck ---------------------------------------------------------- */

static loom_tensor *fn_linear(loom_tensor *const *in, int n, void *user)
{
    (void)user;
    return loom_linear_fn(in[0], in[1], n > 2 ? in[2] : NULL);
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

typedef struct loss_arg {
    loom_tensor *(*loss)(loom_tensor *, loom_tensor *, loom_reduction);
    loom_reduction r;
} loss_arg;

static loom_tensor *fn_loss(loom_tensor *const *in, int n, void *user)
{
    (void)n;
    const loss_arg *a = user;
    return a->loss(in[0], in[1], a->r);
}

#define GRADCHECK(fn, user, ...)                                                                   \
    do {                                                                                           \
        loom_tensor *in_[] = {__VA_ARGS__};                                                        \
        loom_status st_ = loom_gradcheck(fn, (int)(sizeof in_ / sizeof in_[0]), in_, (user), NULL); \
        ck_assert_msg(st_ == LOOM_OK, "%s: %s", #fn, loom_last_error());                           \
    } while (0)

START_TEST(test_gradcheck_linear_softmax)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = need_grad(loom_randn(ctx, LOOM_SHAPE(3, 4)));
    loom_tensor *w = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 4)));
    loom_tensor *b = need_grad(loom_randn(ctx, LOOM_SHAPE(2)));
    GRADCHECK(fn_linear, NULL, x, w, b);
    GRADCHECK(fn_linear, NULL, x, w);
    loom_tensor *x3 = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 2, 4)));
    GRADCHECK(fn_linear, NULL, x3, w, b);

    loom_tensor *s = need_grad(loom_mul_scalar(loom_randn(ctx, LOOM_SHAPE(3, 5)), 2.0));
    loom_tensor_eval(s);
    for (int dim = -2; dim < 2; dim++) {
        GRADCHECK(fn_softmax, &dim, s);
        GRADCHECK(fn_log_softmax, &dim, s);
    }
    loom_tensor *s3 = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 3, 2)));
    int d1 = 1;
    GRADCHECK(fn_softmax, &d1, s3);
    GRADCHECK(fn_log_softmax, &d1, s3);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_gradcheck_losses)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = need_grad(loom_randn(ctx, LOOM_SHAPE(4, 3)));
    loom_tensor *t = need_grad(loom_rand(ctx, LOOM_SHAPE(4, 3)));
    /* BCE probabilities kept away from 0 and 1 (finite differences with
     * eps 1e-2 need room): 0.1 + 0.8 * rand. */
    loom_tensor *p = need_grad(loom_add_scalar(loom_mul_scalar(loom_rand(ctx, LOOM_SHAPE(4, 3)), 0.8), 0.1));
    loom_tensor_eval(p);
    loom_tensor *logits = need_grad(loom_mul_scalar(loom_randn(ctx, LOOM_SHAPE(4, 3)), 3.0));
    loom_tensor_eval(logits);
    loom_tensor *logp = need_grad(loom_randn(ctx, LOOM_SHAPE(4, 3)));
    loom_tensor *cls = I64(ctx, LOOM_SHAPE(4), 2, 0, 1, 2);
    loom_tensor *x1 = need_grad(loom_randn(ctx, LOOM_SHAPE(3)));
    loom_tensor *cls0 = loom_tensor_from_array(ctx, LOOM_INT64, (const int64_t[]){1}, 0, NULL);
    loom_tensor *xk = need_grad(loom_randn(ctx, LOOM_SHAPE(2, 3, 2)));
    loom_tensor *clsk = I64(ctx, LOOM_SHAPE(2, 2), 0, 2, 1, 1);
    for (int r = 0; r < LOOM_REDUCTION_COUNT; r++) {
        loss_arg mse = {loom_mse_loss, r}, bce = {loom_bce_loss, r}, bcel = {loom_bce_with_logits_loss, r};
        loss_arg nll = {loom_nll_loss, r}, ce = {loom_cross_entropy_loss, r};
        GRADCHECK(fn_loss, &mse, x, t);
        GRADCHECK(fn_loss, &bce, p, t);
        GRADCHECK(fn_loss, &bcel, logits, t);
        GRADCHECK(fn_loss, &nll, logp, cls);
        GRADCHECK(fn_loss, &ce, logp, cls);
        GRADCHECK(fn_loss, &nll, x1, cls0);
        GRADCHECK(fn_loss, &ce, x1, cls0);
        GRADCHECK(fn_loss, &nll, xk, clsk);
        GRADCHECK(fn_loss, &ce, xk, clsk);
    }
    loom_ctx_free(ctx);
}
END_TEST

/* ---- softmax ------------------------------------------------------------- */

START_TEST(test_softmax_values)
{
    loom_ctx *ctx = test_ctx(2, NULL);
    /* Rows sum to 1, against exp(x_i) / sum exp(x_j) in double. */
    float xv[12] = {0.5f, -1, 2, 0, 3, 3, 3, 3, -4, 10, 0.25f, 1};
    loom_tensor *x = loom_tensor_from_array(ctx, LOOM_FLOAT32, xv, LOOM_SHAPE(3, 4));
    loom_tensor *y = loom_softmax(x, 1);
    loom_tensor *ly = loom_log_softmax(x, -1);
    float want[12], lwant[12];
    for (int r = 0; r < 3; r++) {
        double s = 0;
        for (int c = 0; c < 4; c++) s += exp(xv[r * 4 + c]);
        for (int c = 0; c < 4; c++) {
            want[r * 4 + c] = (float)(exp(xv[r * 4 + c]) / s);
            lwant[r * 4 + c] = (float)(xv[r * 4 + c] - log(s));
        }
    }
    assert_values_f32(y, want, 12, 1e-6);
    assert_values_f32(ly, lwant, 12, 1e-6);
    EXPECT_F32(loom_sum(y, LOOM_DIMS(1), false), 1e-6, 1, 1, 1);
    /* dim 0: the columns sum to 1. */
    EXPECT_F32(loom_sum(loom_softmax(x, 0), LOOM_DIMS(0), false), 1e-6, 1, 1, 1, 1);
    /* Large inputs do not overflow: shift invariance. */
    loom_tensor *big = F32(ctx, LOOM_SHAPE(2, 3), 1000, 1000, 1000, -1000, 0, 1000);
    EXPECT_F32(loom_softmax(big, 1), 1e-6, 1.0f / 3, 1.0f / 3, 1.0f / 3, 0, 0, 1);
    EXPECT_F32(loom_log_softmax(big, 1), 1e-5, -logf(3), -logf(3), -logf(3), -2000, -1000, 0);
    loom_tensor *small = F32(ctx, LOOM_SHAPE(3), -1000, -1001, -1002);
    loom_tensor *ws = loom_softmax(small, 0);
    double z = 1 + exp(-1) + exp(-2);
    EXPECT_F32(ws, 1e-6, (float)(1 / z), (float)(exp(-1) / z), (float)(exp(-2) / z));
    /* A 0-dim input: 1 (and 0 for log_softmax), as in PyTorch. */
    EXPECT_F32(loom_softmax(loom_scalar(ctx, LOOM_FLOAT32, 5), 0), 0, 1);
    EXPECT_F32(loom_log_softmax(loom_scalar(ctx, LOOM_FLOAT32, 5), -1), 0, 0);
    /* Modules. */
    loom_module *sm = loom_softmax_module(ctx, 1), *lsm = loom_log_softmax_module(ctx, -1);
    ck_assert_str_eq(loom_module_type(sm), "Softmax");
    ck_assert_str_eq(loom_module_type(lsm), "LogSoftmax");
    assert_values_f32(loom_module_forward(sm, x), want, 12, 1e-6);
    assert_values_f32(loom_module_forward(lsm, x), lwant, 12, 1e-6);
    /* Errors. */
    assert_error(loom_softmax(x, 2), LOOM_ERR_RANGE, "softmax: dim 2 is out of range for a tensor of 2 dims");
    assert_error(loom_log_softmax(x, -3), LOOM_ERR_RANGE, "log_softmax: dim -3");
    assert_error(loom_softmax(I64(ctx, LOOM_SHAPE(2), 1, 2), 0), LOOM_ERR_DTYPE, "softmax: input must be float32");
    loom_module *sm3 = loom_softmax_module(ctx, 3); /* the dim is checked at forward, as in PyTorch */
    assert_error(loom_module_forward(sm3, x), LOOM_ERR_RANGE, "softmax: dim 3");
    loom_module_free(sm3);
    loom_module_free(sm);
    loom_module_free(lsm);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_activation_modules)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = F32(ctx, LOOM_SHAPE(3), -1, 0, 2);
    loom_module *r = loom_relu_module(ctx), *s = loom_sigmoid_module(ctx), *t = loom_tanh_module(ctx);
    ck_assert_str_eq(loom_module_type(r), "ReLU");
    ck_assert_str_eq(loom_module_type(s), "Sigmoid");
    ck_assert_str_eq(loom_module_type(t), "Tanh");
    EXPECT_F32(loom_module_forward(r, x), 0, 0, 0, 2);
    EXPECT_F32(loom_module_forward(s, x), 1e-6, (float)(1 / (1 + exp(1.0))), 0.5f, (float)(1 / (1 + exp(-2.0))));
    EXPECT_F32(loom_module_forward(t, x), 1e-6, (float)tanh(-1.0), 0, (float)tanh(2.0));
    ck_assert_int_eq(loom_module_parameters(r, NULL, NULL, 0), 0);
    ck_assert_ptr_null(loom_module_forward(r, NULL));
    assert_error(loom_module_forward(NULL, x), LOOM_ERR_INVALID_ARG, "module_forward: module is NULL");
    loom_module_free(r);
    loom_module_free(s);
    loom_module_free(t);
    loom_module_free(NULL);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- losses: values, edges, errors ------------------------------------- */

START_TEST(test_loss_values)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = F32(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4);
    loom_tensor *t = F32(ctx, LOOM_SHAPE(2, 2), 1, 0, 5, 4.5);
    /* mse: squared errors 0, 4, 4, 0.25. */
    EXPECT_F32(loom_mse_loss(x, t, LOOM_REDUCTION_NONE), 1e-6, 0, 4, 4, 0.25);
    EXPECT_F32(loom_mse_loss(x, t, LOOM_REDUCTION_SUM), 1e-6, 8.25);
    loom_tensor *m = loom_mse_loss(x, t, LOOM_REDUCTION_MEAN);
    assert_shape0(m);
    EXPECT_F32(m, 1e-6, 8.25 / 4);
    /* nll: -input[n, target[n]]. */
    loom_tensor *lp = F32(ctx, LOOM_SHAPE(2, 3), -1, -2, -3, -0.5, -1.5, -2.5);
    loom_tensor *cls = I64(ctx, LOOM_SHAPE(2), 2, 0);
    EXPECT_F32(loom_nll_loss(lp, cls, LOOM_REDUCTION_NONE), 0, 3, 0.5);
    EXPECT_F32(loom_nll_loss(lp, cls, LOOM_REDUCTION_MEAN), 1e-7, 1.75);
    EXPECT_F32(loom_nll_loss(lp, cls, LOOM_REDUCTION_SUM), 1e-7, 3.5);
    /* cross entropy of equal logits: log(C). */
    loom_tensor *eq = F32(ctx, LOOM_SHAPE(2, 4), 7, 7, 7, 7, 0, 0, 0, 0);
    EXPECT_F32(loom_cross_entropy_loss(eq, cls, LOOM_REDUCTION_NONE), 1e-6, logf(4), logf(4));
    /* bce and bce_with_logits agree through the sigmoid. */
    loom_tensor *z = F32(ctx, LOOM_SHAPE(4), -2, 0, 0.5, 3);
    loom_tensor *y = F32(ctx, LOOM_SHAPE(4), 0, 1, 0.3, 1);
    float *a = copy_out_f32(loom_bce_with_logits_loss(z, y, LOOM_REDUCTION_NONE));
    float *b = copy_out_f32(loom_bce_loss(loom_sigmoid(z), y, LOOM_REDUCTION_NONE));
    for (int i = 0; i < 4; i++) ck_assert_msg(fabsf(a[i] - b[i]) < 1e-5f, "%d: %g vs %g", i, a[i], b[i]);
    ck_assert(fabsf(a[1] - logf(2)) < 1e-6f);
    free(a);
    free(b);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_bce_edges)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    /* log clamped at -100: a confident wrong answer costs exactly 100; a
     * confident right one 0. The gradient stays finite (PyTorch's
     * (x - t) / max(x (1 - x), 1e-12)). */
    loom_tensor *x = need_grad(F32(ctx, LOOM_SHAPE(4), 0, 1, 0, 1));
    loom_tensor *t = F32(ctx, LOOM_SHAPE(4), 1, 0, 0, 1);
    EXPECT_F32(loom_bce_loss(x, t, LOOM_REDUCTION_NONE), 0, 100, 100, 0, 0);
    loom_tensor *l = loom_bce_loss(x, t, LOOM_REDUCTION_SUM);
    EXPECT_F32(l, 0, 200);
    ck_assert_int_eq(loom_backward(l, NULL, NULL), LOOM_OK);
    float *g = copy_out_f32(loom_tensor_grad(x));
    for (int i = 0; i < 4; i++) ck_assert_msg(isfinite(g[i]), "grad %d = %g", i, g[i]);
    ck_assert_float_eq_tol(g[0], -1e12f, 1e7f);
    ck_assert_float_eq_tol(g[1], 1e12f, 1e7f);
    ck_assert_float_eq(g[2], 0);
    ck_assert_float_eq(g[3], 0);
    free(g);
    /* Without grad, the same values. */
    loom_no_grad_begin(ctx);
    EXPECT_F32(loom_bce_loss(x, t, LOOM_REDUCTION_MEAN), 0, 50);
    loom_no_grad_end(ctx);

    /* with logits: +-100 and beyond stay finite, gradients sigmoid(x) - t. */
    loom_tensor *z = need_grad(F32(ctx, LOOM_SHAPE(5), -100, 100, 0, -1000, 1000));
    loom_tensor *y = F32(ctx, LOOM_SHAPE(5), 1, 0, 0.25, 0, 1);
    loom_tensor *lz = loom_bce_with_logits_loss(z, y, LOOM_REDUCTION_NONE);
    EXPECT_F32(lz, 1e-6, 100, 100, logf(2), 0, 0);
    ck_assert_int_eq(loom_backward(loom_sum(lz, 0, NULL, false), NULL, NULL), LOOM_OK);
    EXPECT_F32(loom_tensor_grad(z), 1e-6, -1, 1, 0.25, 0, 0);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_loss_errors)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x41 = loom_rand(ctx, LOOM_SHAPE(4, 1));
    loom_tensor *x4 = loom_rand(ctx, LOOM_SHAPE(4));
    loom_tensor *x43 = loom_randn(ctx, LOOM_SHAPE(4, 3));
    loom_tensor *i4 = I64(ctx, LOOM_SHAPE(4), 0, 1, 2, 0);
    loom_tensor *i5 = I64(ctx, LOOM_SHAPE(5), 0, 1, 2, 0, 1);
    assert_error(loom_mse_loss(x41, x4, LOOM_REDUCTION_MEAN), LOOM_ERR_SHAPE,
                 "mse_loss: input [4, 1] and target [4] have different shapes");
    assert_error(loom_bce_loss(x41, x4, LOOM_REDUCTION_MEAN), LOOM_ERR_SHAPE, "bce_loss: input [4, 1] and target [4]");
    assert_error(loom_bce_with_logits_loss(x4, x41, LOOM_REDUCTION_SUM), LOOM_ERR_SHAPE, "bce_with_logits_loss");
    assert_error(loom_bce_loss(x4, i4, LOOM_REDUCTION_MEAN), LOOM_ERR_DTYPE, "bce_loss: target must be float32, got int64");
    assert_error(loom_mse_loss(i4, i4, LOOM_REDUCTION_MEAN), LOOM_ERR_DTYPE, "mse_loss: input must be float32, got int64");
    assert_error(loom_nll_loss(x43, x4, LOOM_REDUCTION_MEAN), LOOM_ERR_DTYPE,
                 "nll_loss: target must be int64 class indices, got float32");
    assert_error(loom_nll_loss(x43, i5, LOOM_REDUCTION_MEAN), LOOM_ERR_SHAPE,
                 "nll_loss: input [4, 3] and target [5] have different batch sizes");
    assert_error(loom_cross_entropy_loss(x43, i5, LOOM_REDUCTION_NONE), LOOM_ERR_SHAPE,
                 "cross_entropy_loss: input [4, 3] and target [5] have different batch sizes");
    assert_error(loom_cross_entropy_loss(x43, loom_reshape(i4, LOOM_SHAPE(4, 1)), LOOM_REDUCTION_NONE),
                 LOOM_ERR_SHAPE, "cross_entropy_loss: input [4, 3] needs a target of 1 dims ([N]), got [4, 1]");
    assert_error(loom_nll_loss(x4, i4, LOOM_REDUCTION_MEAN), LOOM_ERR_SHAPE, "needs a target of 0 dims");
    assert_error(loom_nll_loss(loom_scalar(ctx, LOOM_FLOAT32, 1), i4, LOOM_REDUCTION_MEAN), LOOM_ERR_SHAPE,
                 "0-dim");
    assert_error(loom_nll_loss(loom_randn(ctx, LOOM_SHAPE(2, 3, 4)), I64(ctx, LOOM_SHAPE(2, 3), 0, 0, 0, 0, 0, 0),
                               LOOM_REDUCTION_MEAN),
                 LOOM_ERR_SHAPE, "differ outside the class dim");
    assert_error(loom_nll_loss(i4, i4, LOOM_REDUCTION_MEAN), LOOM_ERR_DTYPE, "nll_loss: input must be float32");
    for (int bad = -1; bad <= LOOM_REDUCTION_COUNT; bad += LOOM_REDUCTION_COUNT + 1) {
        assert_error(loom_mse_loss(x4, x4, (loom_reduction)bad), LOOM_ERR_INVALID_ARG, "mse_loss: invalid reduction");
        assert_error(loom_bce_loss(x4, x4, (loom_reduction)bad), LOOM_ERR_INVALID_ARG, "bce_loss: invalid reduction");
        assert_error(loom_bce_with_logits_loss(x4, x4, (loom_reduction)bad), LOOM_ERR_INVALID_ARG, "invalid reduction");
        assert_error(loom_nll_loss(x43, i4, (loom_reduction)bad), LOOM_ERR_INVALID_ARG, "nll_loss: invalid reduction");
        assert_error(loom_cross_entropy_loss(x43, i4, (loom_reduction)bad), LOOM_ERR_INVALID_ARG, "invalid reduction");
    }
    /* NULL: keeps the error of what produced it, or names the argument. */
    assert_error(loom_mse_loss(loom_reshape(x4, LOOM_SHAPE(3)), x4, LOOM_REDUCTION_MEAN), LOOM_ERR_SHAPE, "reshape");
    loom_clear_error();
    assert_error(loom_mse_loss(x4, NULL, LOOM_REDUCTION_MEAN), LOOM_ERR_INVALID_ARG, "mse_loss: target is NULL");
    loom_clear_error();
    assert_error(loom_cross_entropy_loss(NULL, i4, LOOM_REDUCTION_MEAN), LOOM_ERR_INVALID_ARG,
                 "cross_entropy_loss: input is NULL");
    /* Another context. */
    loom_ctx *other = test_ctx(1, NULL);
    assert_error(loom_mse_loss(x4, loom_rand(other, LOOM_SHAPE(4)), LOOM_REDUCTION_MEAN), LOOM_ERR_INVALID_ARG,
                 "different contexts");
    loom_ctx_free(other);
    /* A class index out of range is found when the loss is computed. */
    loom_tensor *l = loom_nll_loss(x43, I64(ctx, LOOM_SHAPE(4), 0, 3, 1, 1), LOOM_REDUCTION_MEAN);
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(loom_tensor_eval(l), LOOM_ERR_RANGE);
    loom_tensor *l2 = loom_cross_entropy_loss(x43, I64(ctx, LOOM_SHAPE(4), 0, -1, 1, 1), LOOM_REDUCTION_SUM);
    ck_assert_int_eq(loom_tensor_eval(l2), LOOM_ERR_RANGE);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- PyTorch parity (tests/fixtures/nn_cases.h) ------------------------ */

START_TEST(test_pytorch_parity)
{
    const nn_case *c = &nn_cases[_i];
    loom_ctx *ctx = test_ctx(_i % 2 ? 2 : 1, NULL);
    loom_tensor *x = need_grad(loom_tensor_from_array(ctx, LOOM_FLOAT32, c->input, c->in_ndim, c->in_shape));
    loom_tensor *t = NULL;
    if (c->target) {
        t = loom_tensor_from_array(ctx, c->tg_int ? LOOM_INT64 : LOOM_FLOAT32, c->target, c->tg_ndim, c->tg_shape);
        ck_assert_ptr_nonnull(t);
        if (!c->tg_int) need_grad(t);
    }
    loom_tensor *out = NULL;
    if (!strcmp(c->fn, "softmax")) out = loom_softmax(x, c->dim);
    else if (!strcmp(c->fn, "log_softmax")) out = loom_log_softmax(x, c->dim);
    else if (!strcmp(c->fn, "mse")) out = loom_mse_loss(x, t, c->reduction);
    else if (!strcmp(c->fn, "bce")) out = loom_bce_loss(x, t, c->reduction);
    else if (!strcmp(c->fn, "bce_logits")) out = loom_bce_with_logits_loss(x, t, c->reduction);
    else if (!strcmp(c->fn, "nll")) out = loom_nll_loss(x, t, c->reduction);
    else if (!strcmp(c->fn, "cross_entropy")) out = loom_cross_entropy_loss(x, t, c->reduction);
    else ck_abort_msg("unknown function %s", c->fn);
    ck_assert_msg(out != NULL, "%s: %s", c->name, loom_last_error());
    test_assert_shape(out, c->out_ndim, c->out_shape, c->name, 0);
    int64_t nout = loom_tensor_numel(out), nin = loom_tensor_numel(x);
    test_assert_f32(out, c->output, nout, 1e-5, c->name, 1);
    loom_tensor *up = c->upstream ? loom_tensor_from_array(ctx, LOOM_FLOAT32, c->upstream, c->out_ndim, c->out_shape)
                                  : NULL;
    ck_assert_msg(loom_backward(out, up, NULL) == LOOM_OK, "%s: %s", c->name, loom_last_error());
    test_assert_f32(loom_tensor_grad(x), c->grad_input, nin, 1e-5, c->name, 2);
    if (c->grad_target) test_assert_f32(loom_tensor_grad(t), c->grad_target, loom_tensor_numel(t), 1e-5, c->name, 3);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- dropout ------------------------------------------------------------- */

START_TEST(test_dropout)
{
    loom_ctx *ctx = test_ctx(2, NULL);
    const int64_t n = 100000;
    loom_tensor *ones = loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(n));
    loom_tensor *x = F32(ctx, LOOM_SHAPE(2, 2), 1, -2, 3, 4);
    /* Evaluation mode and p == 0: the input itself (a new handle on it). */
    loom_tensor *e = loom_dropout(x, 0.5, false);
    ck_assert_ptr_ne(e, x);
    ck_assert(loom_tensor_shares_storage(e, x));
    EXPECT_F32(e, 0, 1, -2, 3, 4);
    EXPECT_F32(loom_dropout(x, 0.0, true), 0, 1, -2, 3, 4);
    /* p == 1: zeros, as in PyTorch. */
    EXPECT_F32(loom_dropout(x, 1.0, true), 0, 0, 0, 0, 0);
    /* Training: about p zeroed, the rest scaled by 1/(1-p). */
    const double ps[] = {0.1, 0.3, 0.5, 0.8};
    for (int k = 0; k < 4; k++) {
        double p = ps[k];
        float *v = copy_out_f32(loom_dropout(ones, p, true));
        int64_t zeros = 0;
        for (int64_t i = 0; i < n; i++) {
            if (v[i] == 0) zeros++;
            else ck_assert_msg(fabsf(v[i] - (float)(1 / (1 - p))) < 1e-6f, "kept %g, p %g", v[i], p);
        }
        /* sd of the count: sqrt(n p (1-p)) <= 158; allow ~6 sd. */
        ck_assert_msg(llabs(zeros - (int64_t)(p * n)) < 1000, "p %g: %lld of %lld zeroed", p, (long long)zeros,
                      (long long)n);
        free(v);
    }
    /* Two calls draw different masks; the gradient is the mask, scaled. */
    loom_tensor *xr = need_grad(loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(1000)));
    loom_tensor *d = loom_dropout(xr, 0.5, true);
    float *dv = copy_out_f32(d), *dv2 = copy_out_f32(loom_dropout(xr, 0.5, true));
    ck_assert(memcmp(dv, dv2, sizeof(float) * 1000) != 0);
    ck_assert_int_eq(loom_backward(loom_sum(d, 0, NULL, false), NULL, NULL), LOOM_OK);
    float *gv = copy_out_f32(loom_tensor_grad(xr));
    for (int i = 0; i < 1000; i++) ck_assert_float_eq(gv[i], dv[i]);
    free(dv);
    free(dv2);
    free(gv);
    /* The module follows the training flag. */
    loom_module *m = loom_dropout_module(ctx, 0.25);
    ck_assert_str_eq(loom_module_type(m), "Dropout");
    float *tv = copy_out_f32(loom_module_forward(m, ones));
    int64_t zeros = 0;
    for (int64_t i = 0; i < n; i++) zeros += tv[i] == 0;
    ck_assert(llabs(zeros - n / 4) < 1000);
    free(tv);
    loom_module_train(m, false);
    loom_tensor *ev = loom_module_forward(m, x);
    ck_assert(loom_tensor_shares_storage(ev, x));
    EXPECT_F32(ev, 0, 1, -2, 3, 4);
    loom_module_free(m);
    /* Errors. */
    assert_error(loom_dropout(x, 1.5, true), LOOM_ERR_INVALID_ARG, "dropout: probability must be in [0, 1], got 1.5");
    assert_error(loom_dropout(x, -0.5, false), LOOM_ERR_INVALID_ARG, "dropout");
    assert_error(loom_dropout(I64(ctx, LOOM_SHAPE(1), 1), 0.5, true), LOOM_ERR_DTYPE, "dropout: input must be float32");
    loom_clear_error();
    assert_error(loom_dropout(NULL, 0.5, true), LOOM_ERR_INVALID_ARG, "dropout: input is NULL");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_nn_no_leaks)
{
    /* Every nn function leaves only its result in the caller's scope:
     * once the results are freed, nothing is left. */
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *net = loom_sequential(ctx, 3, (loom_module *[]){loom_linear(ctx, 4, 6, true), loom_dropout_module(ctx, 0.2),
                                                                 loom_linear(ctx, 6, 3, true)});
    loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(5, 4));
    loom_tensor *p = loom_rand(ctx, LOOM_SHAPE(5, 3));
    loom_tensor *cls = loom_randint(ctx, 0, 3, LOOM_SHAPE(5));
    int64_t base = live(ctx);
    loom_tensor *y = loom_module_forward(net, x);
    loom_tensor *outs[] = {
        loom_softmax(y, 1),
        loom_log_softmax(y, 0),
        loom_dropout(y, 0.5, true),
        loom_mse_loss(y, p, LOOM_REDUCTION_MEAN),
        loom_bce_loss(p, p, LOOM_REDUCTION_SUM),
        loom_bce_with_logits_loss(y, p, LOOM_REDUCTION_NONE),
        loom_nll_loss(y, cls, LOOM_REDUCTION_MEAN),
        loom_cross_entropy_loss(y, cls, LOOM_REDUCTION_SUM),
        loom_linear_fn(x, loom_module_get(net, "0.weight"), loom_module_get(net, "0.bias")),
    };
    int nouts = (int)(sizeof outs / sizeof outs[0]);
    for (int i = 0; i < nouts; i++) ck_assert_msg(loom_tensor_eval(outs[i]) == LOOM_OK, "%d: %s", i, loom_last_error());
    loom_tensor *loss = loom_cross_entropy_loss(y, cls, LOOM_REDUCTION_MEAN);
    ck_assert_int_eq(loom_backward(loss, NULL, NULL), LOOM_OK);
    for (int i = 0; i < nouts; i++) loom_tensor_free(outs[i]);
    loom_tensor_free(loss);
    loom_tensor_free(y);
    loom_tensor *params[4];
    ck_assert_int_eq(loom_module_parameters(net, params, NULL, 4), 4);
    for (int i = 0; i < 4; i++) loom_tensor_zero_grad(params[i]); /* the grads are live tensors too */
    ck_assert_int_eq(live(ctx), base);
    loom_module_free(net);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- out of memory: fail the n-th allocation, for every n --------------- */

/* Builds a small network and runs every loss on it: returns the status of
 * the first failure, or LOOM_OK and the total loss in *value (and, with
 * `backward`, the first layer's weight gradient in grad[12]). */
static loom_status nn_program(failing *f, bool backward, double *value, float *grad)
{
    loom_allocator al = {failing_alloc, failing_free, f};
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 1, .num_workers = 1, .seed = 3, .allocator = &al});
    if (!ctx) return loom_last_status();
    loom_module *net = loom_sequential(ctx, 4, (loom_module *[]){loom_linear(ctx, 3, 4, true), loom_relu_module(ctx),
                                                                 loom_dropout_module(ctx, 0.25),
                                                                 loom_linear(ctx, 4, 2, true)});
    loom_status st = net ? LOOM_OK : loom_last_status();
    if (st == LOOM_OK) st = loom_scope_begin(ctx);
    if (st == LOOM_OK) {
        loom_tensor *x = F32(ctx, LOOM_SHAPE(2, 3), 1, -2, 3, 0.5, 0, -1);
        loom_tensor *y = I64(ctx, LOOM_SHAPE(2), 1, 0);
        loom_tensor *z = loom_module_forward(net, x);
        loom_tensor *p = loom_sigmoid(z);
        loom_tensor *terms[] = {
            loom_cross_entropy_loss(z, y, LOOM_REDUCTION_MEAN),
            loom_nll_loss(loom_log_softmax(z, 1), y, LOOM_REDUCTION_SUM),
            loom_mse_loss(loom_softmax(z, 1), p, LOOM_REDUCTION_MEAN),
            loom_mean(loom_bce_loss(p, loom_detach(p), LOOM_REDUCTION_NONE), 0, NULL, false),
            loom_bce_with_logits_loss(z, loom_detach(p), LOOM_REDUCTION_SUM),
            loom_sum(loom_dropout(z, 0.5, true), 0, NULL, false),
        };
        loom_tensor *loss = loom_sum(loom_stack(terms, 6, 0), 0, NULL, false);
        st = loom_tensor_item(loss, value);
        if (st == LOOM_OK && backward) {
            st = loom_backward(loss, NULL, NULL);
            loom_tensor *params[4];
            if (st == LOOM_OK) {
                ck_assert_int_eq(loom_module_parameters(net, params, NULL, 4), 4);
                for (int i = 0; i < 4; i++) ck_assert(loom_tensor_has_grad(params[i]));
                st = loom_tensor_copy_to(loom_tensor_grad(params[0]), grad, sizeof(float) * 12);
            }
        }
        loom_scope_end(ctx);
    }
    loom_module_free(net); /* frees the parameters and their grads */
    loom_ctx_free(ctx);
    return st;
}

/* nn_program without backward, for oom_sweep: user is the double *value. */
static loom_status nn_forward_program(failing *f, void *user) { return nn_program(f, false, user, NULL); }

/* Every failing allocation while building modules, recording and
 * computing the forward pass and the losses gives "out of memory" and
 * leaks nothing. (The backward pass is run once, not swept: its own
 * out-of-memory handling belongs to the autograd tests.) */
START_TEST(test_oom_sweep)
{
    failing f = {0, 0, 0};
    double want = 0, got = 0;
    float grad[12];
    ck_assert_msg(nn_program(&f, true, &want, grad) == LOOM_OK, "%s", loom_last_error());
    ck_assert_int_eq(f.outstanding, 0);
    f = (failing){0, 0, 0};
    ck_assert_int_eq(nn_program(&f, false, &got, NULL), LOOM_OK);
    ck_assert(got == want);
    long total = f.count;
    ck_assert(total > 20);
    oom_sweep(nn_forward_program, &got, total);
}
END_TEST

Suite *loom_suite_nn(void)
{
    Suite *s = suite_create("nn");
    TCase *tc = test_tcase(s, "modules", 60);
    tcase_add_test(tc, test_sequential_names);
    tcase_add_test(tc, test_custom_module);
    tcase_add_test(tc, test_dotted_lookup);
    tcase_add_test(tc, test_duplicate_and_bad_names);
    tcase_add_test(tc, test_train_eval);
    tcase_add_test(tc, test_parameters_are_owned_leaves);
    tcase_add_test(tc, test_sequential_ownership);
    tcase_add_test(tc, test_linear_init);
    tcase_add_test(tc, test_linear_forward);
    tcase_add_test(tc, test_linear_bad_features);
    tcase_add_test(tc, test_activation_modules);
    tcase_add_test(tc, test_nn_no_leaks);
    tcase_add_test(tc, test_oom_sweep);

    TCase *tf = test_tcase(s, "functional", 120);
    tcase_add_test(tf, test_gradcheck_linear_softmax);
    tcase_add_test(tf, test_gradcheck_losses);
    tcase_add_test(tf, test_softmax_values);
    tcase_add_test(tf, test_loss_values);
    tcase_add_test(tf, test_bce_edges);
    tcase_add_test(tf, test_loss_errors);
    tcase_add_loop_test(tf, test_pytorch_parity, 0, NN_NCASES);
    tcase_add_test(tf, test_dropout);
    return s;
}
