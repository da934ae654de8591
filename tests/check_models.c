/*
 * tests/check_models.c - the model zoo (models/resnet.c) and NumPy files
 * (io/npy.c).
 *
 * ResNets: the state dict of resnet18/34/50 is torchvision's, key for key
 * and shape for shape, in order (tests/fixtures/models_cases.h, made by
 * gen_models.py from torchvision 0.14), with the same parameter count;
 * torchvision's initialisation; zero_init_residual; outputs for inputs of
 * other sizes; errors. The numerical parity with torchvision is
 * tests/resnet_parity.sh (it needs PyTorch to make the weights).
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check_suites.h"
#include "tests/fixtures/models_cases.h"

static const struct {
    int depth;
    const model_key *keys;
    int n;
    int64_t nparams;
} ZOO[] = {
    {18, RESNET18_KEYS, (int)(sizeof RESNET18_KEYS / sizeof RESNET18_KEYS[0]), RESNET18_NPARAMS},
    {34, RESNET34_KEYS, (int)(sizeof RESNET34_KEYS / sizeof RESNET34_KEYS[0]), RESNET34_NPARAMS},
    {50, RESNET50_KEYS, (int)(sizeof RESNET50_KEYS / sizeof RESNET50_KEYS[0]), RESNET50_NPARAMS},
};

START_TEST(test_resnet_state_dict)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *m = loom_resnet(ctx, ZOO[_i].depth, NULL);
    ck_assert_msg(m != NULL, "%s", loom_last_error());
    ck_assert_str_eq(loom_module_type(m), "ResNet");
    int n = loom_module_state(m, NULL, NULL, 0);
    ck_assert_int_eq(n, ZOO[_i].n);
    loom_tensor **ts = malloc(sizeof *ts * (size_t)n);
    const char **names = malloc(sizeof *names * (size_t)n);
    ck_assert_int_eq(loom_module_state(m, ts, names, n), n);
    for (int i = 0; i < n; i++) {
        const model_key *k = &ZOO[_i].keys[i];
        ck_assert_str_eq(names[i], k->name);
        test_assert_shape(ts[i], k->ndim, k->shape, k->name, 0);
    }
    int64_t total = 0;
    int np = loom_module_parameters(m, ts, NULL, n);
    for (int i = 0; i < np; i++) total += loom_tensor_numel(ts[i]);
    ck_assert_int_eq(total, ZOO[_i].nparams);
    free(ts);
    free(names);
    loom_module_free(m);
    loom_ctx_free(ctx);
}
END_TEST

/* torchvision's init: conv weights N(0, 2/fan_out), BN weight 1 and bias 0;
 * zero_init_residual zeroes the last BN of every block only. */
START_TEST(test_resnet_init)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *m = loom_resnet(ctx, 18, &(loom_resnet_opts){.num_classes = 10, .zero_init_residual = true});
    ck_assert_msg(m != NULL, "%s", loom_last_error());
    /* layer3.0.conv1: [256, 128, 3, 3], fan_out 256*9: std 0.0295 */
    loom_tensor *w = loom_module_get(m, "layer3.0.conv1.weight");
    float *v = copy_out_f32(w);
    int64_t n = loom_tensor_numel(w);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += v[i], s2 += (double)v[i] * v[i];
    double mean = s / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
    ck_assert_msg(fabs(mean) < 0.002 && fabs(sd - sqrt(2.0 / (256 * 9))) < 0.002, "mean %g sd %g", mean, sd);
    free(v);
    EXPECT_F32(loom_module_get(m, "layer1.0.bn2.weight"), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
               0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
               0, 0, 0, 0, 0, 0, 0, 0, 0);
    float *b1 = copy_out_f32(loom_module_get(m, "layer1.0.bn1.weight"));
    for (int i = 0; i < 64; i++) ck_assert(b1[i] == 1.0f);
    free(b1);
    assert_shape(loom_module_get(m, "fc.weight"), 10, 512);
    loom_module_free(m);
    /* Bottleneck: bn3 zeroed, bn2 not. */
    m = loom_resnet(ctx, 50, &(loom_resnet_opts){.zero_init_residual = true});
    float *b3 = copy_out_f32(loom_module_get(m, "layer2.1.bn3.weight"));
    float *b2 = copy_out_f32(loom_module_get(m, "layer2.1.bn2.weight"));
    for (int i = 0; i < 128; i++) ck_assert(b2[i] == 1.0f);
    for (int i = 0; i < 512; i++) ck_assert(b3[i] == 0.0f);
    free(b2);
    free(b3);
    loom_module_free(m);
    loom_ctx_free(ctx);
}
END_TEST

/* Any input size the strides allow; batch statistics in training, running
 * ones in evaluation; errors name the problem. */
START_TEST(test_resnet_forward)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_module *m = loom_resnet(ctx, 18, &(loom_resnet_opts){.num_classes = 7});
    loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(2, 3, 40, 52));
    loom_module_train(m, false);
    loom_tensor *y = loom_module_forward(m, x);
    assert_shape(y, 2, 7);
    ck_assert_int_eq(loom_tensor_eval(y), LOOM_OK);
    /* Training: a step of backward reaches the stem. */
    loom_module_train(m, true);
    loom_tensor *loss = loom_sum(loom_module_forward(m, x), 0, NULL, false);
    ck_assert_int_eq(loom_backward(loss, NULL, NULL), LOOM_OK);
    assert_shape(loom_tensor_grad(loom_module_get(m, "conv1.weight")), 64, 3, 7, 7);
    EXPECT_I64(loom_module_get(m, "bn1.num_batches_tracked"), 1);
    assert_error(loom_module_forward(m, loom_randn(ctx, LOOM_SHAPE(2, 1, 40, 40))), LOOM_ERR_SHAPE,
                 "resnet: expected an input [N, 3, H, W], got [2, 1, 40, 40]");
    loom_module_free(m);
    assert_error(loom_resnet(ctx, 20, NULL), LOOM_ERR_INVALID_ARG, "depth must be 18, 34, 50, 101 or 152 (got 20)");
    loom_ctx_free(ctx);
}
END_TEST

/* loom_resnet_fuse_for_inference: the same outputs as the evaluation-mode
 * ResNet (BasicBlock and Bottleneck, downsample, non-trivial running
 * statistics after a few training steps, a replaced fc), within float
 * rounding; a snapshot (later training does not change it). */
START_TEST(test_resnet_fused)
{
    loom_ctx *ctx = cfg_ctx(_i);
    for (int depth = 18; depth <= 50; depth += 32) {
        loom_module *m = loom_resnet(ctx, depth, &(loom_resnet_opts){.num_classes = 5});
        loom_module_replace_child(m, "fc", loom_linear(ctx, depth == 18 ? 512 : 2048, 3, true));
        loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(2, 3, 48, 40));
        loom_module_train(m, true);
        for (int i = 0; i < 2; i++) /* running statistics away from 0 and 1 */
            ck_assert_int_eq(loom_tensor_eval(loom_module_forward(m, loom_mul_scalar(x, 1.5 + i))), LOOM_OK);
        loom_module_train(m, false);
        loom_module *f = loom_resnet_fuse_for_inference(m);
        ck_assert_msg(f != NULL, "%s", loom_last_error());
        ck_assert_str_eq(loom_module_type(f), "ResNetFused");
        float a[6], b[6];
        ck_assert_int_eq(loom_tensor_copy_to(loom_module_forward(m, x), a, sizeof a), LOOM_OK);
        ck_assert_int_eq(loom_tensor_copy_to(loom_module_forward(f, x), b, sizeof b), LOOM_OK);
        for (int k = 0; k < 6; k++) ck_assert_msg(fabsf(a[k] - b[k]) <= 1e-4f * (1.0f + fabsf(a[k])), "%d: %g vs %g", k, a[k], b[k]);
        /* A snapshot: training the original leaves the fused one as it was. */
        loom_module_train(m, true);
        ck_assert_int_eq(loom_tensor_eval(loom_module_forward(m, x)), LOOM_OK);
        float c[6];
        ck_assert_int_eq(loom_tensor_copy_to(loom_module_forward(f, x), c, sizeof c), LOOM_OK);
        ck_assert(memcmp(b, c, sizeof b) == 0);
        assert_error(loom_module_forward(f, loom_randn(ctx, LOOM_SHAPE(1, 1, 40, 40))), LOOM_ERR_SHAPE,
                     "expected an input [N, 3, H, W]");
        loom_module_free(f);
        loom_module_free(m);
    }
    assert_error(loom_resnet_fuse_for_inference(NULL), LOOM_ERR_INVALID_ARG, "expected a module of type ResNet");
    loom_ctx_free(ctx);
}
END_TEST

/* Transfer learning: freeze everything, replace fc, unfreeze layer4; the
 * optimizer's parameters, the gradients and the BatchNorm modes follow. */
START_TEST(test_transfer_api)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *net = loom_resnet(ctx, 18, NULL);
    const int all = loom_module_parameters(net, NULL, NULL, 0);
    ck_assert_int_eq(all, 62);
    ck_assert_int_eq(loom_module_freeze(net, NULL, true), 62);
    ck_assert_int_eq(loom_module_freeze(net, "", true), 0); /* already frozen */
    ck_assert_int_eq(loom_module_trainable_parameters(net, NULL, NULL, 0), 0);
    ck_assert_int_eq(loom_module_replace_child(net, "fc", loom_linear(ctx, 512, 2, true)), LOOM_OK);
    assert_shape(loom_module_get(net, "fc.weight"), 2, 512);
    loom_tensor *tp[64];
    const char *tn[64];
    ck_assert_int_eq(loom_module_trainable_parameters(net, tp, tn, 64), 2);
    ck_assert_str_eq(tn[0], "fc.weight");
    ck_assert_str_eq(tn[1], "fc.bias");
    /* Frozen BatchNorms stay in evaluation mode when the net trains. */
    loom_module_train(net, true);
    ck_assert(!loom_module_is_training(loom_module_child(net, "bn1")));
    ck_assert(!loom_module_is_training(loom_module_child(net, "layer4.1.bn2")));
    ck_assert(loom_module_is_training(loom_module_child(net, "fc")));
    float rm[64];
    ck_assert_int_eq(loom_tensor_copy_to(loom_module_get(net, "bn1.running_mean"), rm, sizeof rm), LOOM_OK);
    loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(2, 3, 36, 36));
    loom_tensor *y = loom_module_forward(net, x);
    assert_shape(y, 2, 2);
    ck_assert_int_eq(loom_backward(loom_sum(y, 0, NULL, false), NULL, NULL), LOOM_OK);
    ck_assert(loom_tensor_has_grad(loom_module_get(net, "fc.weight")));
    ck_assert(!loom_tensor_has_grad(loom_module_get(net, "conv1.weight")));
    ck_assert(!loom_tensor_has_grad(loom_module_get(net, "layer4.1.conv2.weight")));
    assert_values_f32(loom_module_get(net, "bn1.running_mean"), rm, 64, 0); /* did not move */
    /* Unfreeze layer4: its 15 parameters join, its BatchNorms train again. */
    ck_assert_int_eq(loom_module_freeze(net, "layer4", false), 15);
    ck_assert_int_eq(loom_module_freeze(net, "layer", true), 0); /* whole components only: "layer" names nothing */
    ck_assert_int_eq(loom_module_trainable_parameters(net, NULL, NULL, 0), 17);
    ck_assert(loom_module_is_training(loom_module_child(net, "layer4.1.bn2")));
    ck_assert(!loom_module_is_training(loom_module_child(net, "layer3.1.bn2")));
    /* Errors: the new child is freed, not leaked. */
    ck_assert_int_eq(loom_module_replace_child(net, "head", loom_linear(ctx, 512, 2, true)), LOOM_ERR_INVALID_ARG);
    ck_assert(strstr(loom_last_error(), "no submodule \"head\"") != NULL);
    ck_assert_int_eq(loom_module_freeze(NULL, NULL, true), -1);
    loom_module_free(net);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- training checkpoints -------------------------------------------------- */

static loom_module *small_net(loom_ctx *ctx)
{
    return loom_sequential(ctx, 6, (loom_module *[]){loom_conv2d_module(ctx, 1, 4, 3, 3, NULL, true),
                                                      loom_batch_norm2d_module(ctx, 4, 1e-5, 0.1, true),
                                                      loom_relu_module(ctx), loom_dropout_module(ctx, 0.3),
                                                      loom_flatten_module(ctx, 1, -1), loom_linear(ctx, 144, 3, true)});
}

static loom_optimizer *small_opt(loom_ctx *ctx, loom_module *net, bool sgd)
{
    loom_tensor *ps[16];
    int n = loom_module_parameters(net, ps, NULL, 16);
    if (sgd) return loom_sgd(ctx, n, ps, &(loom_sgd_options){.lr = 0.05, .momentum = 0.9});
    return loom_adam(ctx, n, ps, NULL);
}

static void steps(loom_ctx *ctx, loom_module *net, loom_optimizer *opt, int k)
{
    for (int i = 0; i < k; i++) {
        loom_scope_begin(ctx);
        loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(8, 1, 8, 8)); /* drawn from the context: part of the state */
        loom_tensor *y = loom_randint(ctx, 0, 3, LOOM_SHAPE(8));
        loom_optimizer_zero_grad(opt);
        loom_tensor *loss = loom_cross_entropy_loss(loom_module_forward(net, x), y, LOOM_REDUCTION_MEAN);
        ck_assert_int_eq(loom_backward(loss, NULL, NULL), LOOM_OK);
        ck_assert_int_eq(loom_optimizer_step(opt), LOOM_OK);
        loom_scope_end(ctx);
    }
}

/* Every state tensor's bytes, concatenated. */
static unsigned char *state_bytes(loom_module *net, size_t *len)
{
    loom_tensor *ts[32];
    int n = loom_module_state(net, ts, NULL, 32);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (size_t)loom_tensor_numel(ts[i]) * (size_t)loom_dtype_size(loom_tensor_dtype(ts[i]));
    unsigned char *b = malloc(total);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t sz = (size_t)loom_tensor_numel(ts[i]) * (size_t)loom_dtype_size(loom_tensor_dtype(ts[i]));
        ck_assert_int_eq(loom_tensor_copy_to(ts[i], b + off, sz), LOOM_OK);
        off += sz;
    }
    *len = total;
    return b;
}

/* Train 6 steps straight; or 3, save, load into a fresh run, 3 more: the
 * same bits (parameters, BatchNorm statistics and counts, Adam's moments,
 * dropout masks and data from the restored generator). */
START_TEST(test_checkpoint_resume)
{
    const bool sgd = _i == 1;
    char dir[512], path[600];
    tmp_make(dir, sizeof dir, "ckpt");
    snprintf(path, sizeof path, "%s/run.safetensors", dir);
    loom_ctx *a = loom_ctx_create(&(loom_ctx_options){.num_threads = 1, .seed = 11});
    loom_module *na = small_net(a);
    loom_optimizer *oa = small_opt(a, na, sgd);
    steps(a, na, oa, 3);
    ck_assert_int_eq(loom_checkpoint_save(path, na, oa, 3), LOOM_OK);
    steps(a, na, oa, 3);
    size_t la, lb;
    unsigned char *ba = state_bytes(na, &la);

    loom_ctx *b = loom_ctx_create(&(loom_ctx_options){.num_threads = 1, .seed = 999}); /* other init, other seed */
    loom_module *nb = small_net(b);
    loom_optimizer *ob = small_opt(b, nb, sgd);
    int64_t epoch = -1;
    ck_assert_msg(loom_checkpoint_load(path, nb, ob, &epoch) == LOOM_OK, "%s", loom_last_error());
    ck_assert_int_eq(epoch, 3);
    steps(b, nb, ob, 3);
    unsigned char *bb = state_bytes(nb, &lb);
    ck_assert_uint_eq(la, lb);
    ck_assert_msg(memcmp(ba, bb, la) == 0, "resumed run differs from the uninterrupted one");
    free(ba);
    free(bb);

    /* loom_load_weights takes the model part of a checkpoint (no optimizer
     * needed), and a plain state dict (below). */
    loom_module *nc = small_net(b), *nd = small_net(b);
    loom_optimizer *od = small_opt(b, nd, sgd);
    ck_assert_msg(loom_load_weights(nc, path) == LOOM_OK, "%s", loom_last_error());
    ck_assert_int_eq(loom_checkpoint_load(path, nd, od, NULL), LOOM_OK);
    size_t lc, ld;
    unsigned char *bc = state_bytes(nc, &lc), *bd = state_bytes(nd, &ld);
    ck_assert(lc == ld && memcmp(bc, bd, lc) == 0);
    free(bc);
    free(bd);

    /* The wrong optimizer kind, or a checkpoint without one: refused, and
     * nothing changed. */
    loom_optimizer *wrong = small_opt(b, nb, !sgd);
    unsigned char *before = state_bytes(nb, &lb);
    ck_assert_int_eq(loom_checkpoint_load(path, nb, wrong, NULL), LOOM_ERR_FORMAT);
    ck_assert(strstr(loom_last_error(), "not that of") != NULL);
    unsigned char *after = state_bytes(nb, &lb);
    ck_assert(memcmp(before, after, lb) == 0);
    free(before);
    free(after);
    ck_assert_int_eq(loom_checkpoint_load(path, nb, NULL, NULL), LOOM_ERR_INVALID_ARG);
    /* A plain module file is not a checkpoint. */
    ck_assert_int_eq(loom_module_save(nb, path), LOOM_OK);
    ck_assert_int_eq(loom_checkpoint_load(path, nb, ob, NULL), LOOM_ERR_FORMAT);
    ck_assert_msg(loom_load_weights(nc, path) == LOOM_OK, "%s", loom_last_error());
    unsigned char *sb = state_bytes(nb, &lb), *sc = state_bytes(nc, &lc);
    ck_assert(lb == lc && memcmp(sb, sc, lb) == 0);
    free(sb);
    free(sc);
    /* Another model's weights: refused, naming what is missing. */
    loom_module *other = loom_model(b, "mlp", NULL);
    ck_assert_int_eq(loom_load_weights(other, path), LOOM_ERR_FORMAT);
    ck_assert_msg(strstr(loom_last_error(), "linear_relu_stack.0.weight"), "%s", loom_last_error());
    loom_module_free(other);
    loom_optimizer_free(od);
    loom_module_free(nc);
    loom_module_free(nd);
    loom_optimizer_free(wrong);
    loom_optimizer_free(oa);
    loom_optimizer_free(ob);
    loom_module_free(na);
    loom_module_free(nb);
    loom_ctx_free(a);
    loom_ctx_free(b);
    tmp_remove(dir);
}
END_TEST

/* ---- the zoo ---------------------------------------------------------------- */

static void assert_param(loom_module *m, const char *name, int ndim, const int64_t *shape)
{
    loom_tensor *t = loom_module_get(m, name);
    ck_assert_msg(t != NULL, "no %s", name);
    ck_assert_int_eq(loom_tensor_ndim(t), ndim);
    for (int d = 0; d < ndim; d++) ck_assert_int_eq(loom_tensor_size(t, d), shape[d]);
}

/* Every model of the zoo builds for 1 x 28 x 28 images and 10 classes and
 * maps [2, 1, 28, 28] to [2, 10], with PyTorch's names and shapes. */
START_TEST(test_zoo)
{
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 2, .seed = 5});
    const loom_model_opts mnist = {.in_channels = 1, .height = 28, .width = 28, .num_classes = 10};
    loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(2, 1, 28, 28));
    int count = 0;
    for (const char *const *name = loom_model_names(); *name; name++, count++) {
        if (!strcmp(*name, "resnet101") || !strcmp(*name, "resnet152")) continue; /* slow to build; as resnet50 */
        loom_module *m = loom_model(ctx, *name, &mnist);
        ck_assert_msg(m != NULL, "%s: %s", *name, loom_last_error());
        loom_module_train(m, false);
        loom_tensor *y = loom_module_forward(m, x);
        ck_assert_msg(y && loom_tensor_eval(y) == LOOM_OK, "%s: %s", *name, loom_last_error());
        ck_assert_int_eq(loom_tensor_ndim(y), 2);
        ck_assert_int_eq(loom_tensor_size(y, 0), 2);
        ck_assert_int_eq(loom_tensor_size(y, 1), 10);
        loom_module_free(m);
    }
    ck_assert_int_eq(count, 10);

    /* PyTorch's names: the quickstart network, the seed's SimpleCNN, an
     * nn.LSTM + nn.Linear, torchvision's ResNet with a 1-channel conv1. */
    loom_module *mlp = loom_model(ctx, "mlp", NULL);
    assert_param(mlp, "linear_relu_stack.0.weight", 2, (const int64_t[]){512, 784});
    assert_param(mlp, "linear_relu_stack.2.weight", 2, (const int64_t[]){512, 512});
    assert_param(mlp, "linear_relu_stack.4.bias", 1, (const int64_t[]){10});
    ck_assert_int_eq(loom_module_parameters(mlp, NULL, NULL, 0), 6);
    loom_module *cnn = loom_simple_cnn(ctx, NULL);
    assert_param(cnn, "conv1.weight", 4, (const int64_t[]){32, 1, 3, 3});
    assert_param(cnn, "fc1.weight", 2, (const int64_t[]){128, 9216});
    assert_param(cnn, "fc2.bias", 1, (const int64_t[]){10});
    /* simplecnn gives log-probabilities: each row's exp sums to 1. */
    double total = 0;
    ck_assert_int_eq(loom_tensor_item(loom_sum(loom_exp(loom_module_forward(cnn, x)), 0, NULL, false), &total),
                     LOOM_OK);
    ck_assert_double_eq_tol(total, 2.0, 1e-5);
    loom_module *lstm = loom_model(ctx, "lstm", &(loom_model_opts){.in_channels = 3, .width = 8, .num_classes = 4});
    assert_param(lstm, "rnn.weight_ih_l0", 2, (const int64_t[]){512, 24});
    assert_param(lstm, "rnn.weight_hh_l0", 2, (const int64_t[]){512, 128});
    assert_param(lstm, "fc.weight", 2, (const int64_t[]){4, 128});
    /* Rows are steps: any number of rows, 3 channels of 8 columns. */
    loom_tensor *seq = loom_module_forward(lstm, loom_randn(ctx, LOOM_SHAPE(2, 3, 5, 8)));
    ck_assert_msg(seq && loom_tensor_eval(seq) == LOOM_OK, "%s", loom_last_error());
    ck_assert_int_eq(loom_tensor_size(seq, 1), 4);
    loom_module *rn = loom_model(ctx, "resnet18", &(loom_model_opts){.in_channels = 1});
    assert_param(rn, "conv1.weight", 4, (const int64_t[]){64, 1, 7, 7});
    assert_param(rn, "fc.weight", 2, (const int64_t[]){1000, 512});

    /* Errors name the problem. */
    ck_assert_ptr_null(loom_module_forward(cnn, loom_randn(ctx, LOOM_SHAPE(2, 1, 32, 32))));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_SHAPE);
    ck_assert_msg(strstr(loom_last_error(), "[N, 1, 28, 28]") && strstr(loom_last_error(), "[2, 1, 32, 32]"), "%s",
                  loom_last_error());
    ck_assert_ptr_null(loom_module_forward(mlp, loom_randn(ctx, LOOM_SHAPE(2, 784))));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_SHAPE);
    ck_assert_ptr_null(loom_module_forward(rn, loom_randn(ctx, LOOM_SHAPE(2, 3, 28, 28))));
    ck_assert_msg(strstr(loom_last_error(), "[N, 1, H, W]"), "%s", loom_last_error());
    ck_assert_ptr_null(loom_model(ctx, "vgg16", NULL));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_INVALID_ARG);
    ck_assert_msg(strstr(loom_last_error(), "vgg16") && strstr(loom_last_error(), "simplecnn"), "%s",
                  loom_last_error());
    ck_assert_ptr_null(loom_model(ctx, "resnet19", NULL));
    ck_assert_ptr_null(loom_simple_cnn(ctx, &(loom_model_opts){.height = 5}));
    ck_assert_ptr_null(loom_model(ctx, "mlp", &(loom_model_opts){.num_classes = -1}));
    loom_module_free(mlp);
    loom_module_free(cnn);
    loom_module_free(lstm);
    loom_module_free(rn);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- .npy ---------------------------------------------------------------- */

START_TEST(test_npy)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    char dir[512], p[600];
    tmp_make(dir, sizeof dir, "npy");
    snprintf(p, sizeof p, "%s/a.npy", dir);
    /* Round trips of every dtype and of 0-, 1- and 3-dim shapes. */
    loom_tensor *ts[4] = {loom_randn(ctx, LOOM_SHAPE(2, 3, 5)), I64(ctx, LOOM_SHAPE(3), -1, 0, 7),
                          B8(ctx, LOOM_SHAPE(2), 1, 0), loom_scalar(ctx, LOOM_FLOAT32, 2.5)};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(loom_save_npy(ts[i], p), LOOM_OK);
        loom_tensor *r = loom_load_npy(ctx, p);
        ck_assert_msg(r != NULL, "%s", loom_last_error());
        int64_t sh[LOOM_MAX_DIMS];
        loom_tensor_shape(ts[i], sh);
        test_assert_shape(r, loom_tensor_ndim(ts[i]), sh, "roundtrip", i);
        ck_assert_int_eq(loom_tensor_dtype(r), loom_tensor_dtype(ts[i]));
        double diff;
        ck_assert_int_eq(loom_tensor_item(loom_sum(loom_to_dtype(loom_ne(r, ts[i]), LOOM_INT64), 0, NULL, false),
                                          &diff),
                         LOOM_OK);
        ck_assert(diff == 0);
    }
    /* The header is NumPy's: padded to 64 bytes, ending in '\n'. */
    ck_assert_int_eq(loom_save_npy(ts[0], p), LOOM_OK);
    FILE *f = fopen(p, "rb");
    unsigned char head[128];
    ck_assert(fread(head, 1, 128, f) == 128);
    fclose(f);
    ck_assert(!memcmp(head, "\x93NUMPY\x01\x00", 8));
    size_t hl = head[8] | (size_t)head[9] << 8;
    ck_assert_uint_eq((10 + hl) % 64, 0);
    ck_assert(head[10 + hl - 1] == '\n');
    ck_assert(strstr((const char *)head + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 5), }") != NULL);
    /* Errors. */
    static const struct {
        const char *header, *want;
        loom_status st;
    } bad[] = {
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", "dtype '<f8' is not one Loom reads",
         LOOM_ERR_DTYPE},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", "Fortran order", LOOM_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", "the data is 8 bytes, but shape [3] needs 12",
         LOOM_ERR_FORMAT},
        {"{'descr': '<f4', 'shape': (2,), }", "lacks fortran_order", LOOM_ERR_FORMAT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", "non-negative", LOOM_ERR_FORMAT},
        {"[1, 2]", "not a dict", LOOM_ERR_FORMAT},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        f = fopen(p, "wb");
        size_t hlen = strlen(bad[k].header) + 1;
        unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)hlen, 0};
        fwrite(pre, 1, 10, f);
        fwrite(bad[k].header, 1, hlen - 1, f);
        fputc('\n', f);
        fwrite((float[]){1, 2}, sizeof(float), 2, f);
        fclose(f);
        assert_error(loom_load_npy(ctx, p), bad[k].st, bad[k].want);
    }
    f = fopen(p, "wb");
    fputs("not numpy", f);
    fclose(f);
    assert_error(loom_load_npy(ctx, p), LOOM_ERR_FORMAT, "not a .npy file");
    snprintf(p, sizeof p, "%s/missing.npy", dir);
    assert_error(loom_load_npy(ctx, p), LOOM_ERR_IO, "missing.npy");
    ck_assert_int_eq(loom_save_npy(ts[0], "/nonexistent-dir/x.npy"), LOOM_ERR_IO);
    tmp_remove(dir);
    loom_ctx_free(ctx);
}
END_TEST

Suite *loom_suite_models(void)
{
    Suite *s = suite_create("models");
    TCase *tc = test_tcase(s, "resnet", 120);
    tcase_add_loop_test(tc, test_resnet_state_dict, 0, 3);
    tcase_add_test(tc, test_resnet_init);
    tcase_add_loop_test(tc, test_resnet_forward, 0, NCFG);
    tcase_add_loop_test(tc, test_resnet_fused, 0, NCFG);
    tcase_add_test(tc, test_transfer_api);
    tc = test_tcase(s, "checkpoint", 60);
    tcase_add_loop_test(tc, test_checkpoint_resume, 0, 2);
    tc = test_tcase(s, "zoo", 120);
    tcase_add_test(tc, test_zoo);
    tc = test_tcase(s, "npy", 30);
    tcase_add_test(tc, test_npy);
    return s;
}
