/*
 * nn/cnn_layers.c - the CNN modules: Conv2d, MaxPool2d, AvgPool2d,
 * AdaptiveAvgPool2d, BatchNorm2d and Flatten (torch.nn's), and accuracy.
 * Each forward calls the functional op (ops/conv.c, pool.c, norm.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/module_impl.h"

/* ---- Conv2d ------------------------------------------------------------- */

typedef struct conv_data {
    loom_tensor *weight; /* [out, in/groups, kh, kw], owned by the module */
    loom_tensor *bias;   /* [out] or NULL */
    loom_conv2d_opts opts;
} conv_data;

static loom_tensor *conv_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m;
    const conv_data *d = user;
    return loom_conv2d(x, d->weight, d->bias, &d->opts);
}

loom_tensor *loom__nn_conv2d_relu_forward(loom_module *conv, loom_tensor *x)
{
    if (strcmp(loom_module_type(conv), "Conv2d") != 0) return NULL;
    const conv_data *d = loom__nn_module_user(conv);
    loom_conv2d_opts o = d->opts;
    o.relu = true;
    return loom_conv2d(x, d->weight, d->bias, &o);
}

loom_module *loom_conv2d_module(loom_ctx *ctx, int64_t in_channels, int64_t out_channels, int kh, int kw,
                                const loom_conv2d_opts *opts, bool bias)
{
    if (!ctx) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "conv2d: context is NULL");
        return NULL;
    }
    loom_conv2d_opts o = opts ? *opts : (loom_conv2d_opts){0};
    int groups = o.groups ? o.groups : 1;
    if (in_channels <= 0 || out_channels <= 0 || kh <= 0 || kw <= 0 || groups <= 0 || in_channels % groups ||
        out_channels % groups) {
        loom__set_error(LOOM_ERR_INVALID_ARG,
                        "conv2d: channels (%lld -> %lld) and kernel (%d, %d) must be positive, and the channels "
                        "divisible by groups = %d",
                        (long long)in_channels, (long long)out_channels, kh, kw, o.groups);
        return NULL;
    }
    if (o.relu) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "conv2d: the module takes no fused relu option; follow it with ReLU");
        return NULL;
    }
    conv_data *d = calloc(1, sizeof *d);
    if (!d) {
        loom__set_error(LOOM_ERR_NOMEM, "conv2d: out of memory");
        return NULL;
    }
    d->opts = o;
    loom_module *m = loom_module_create(ctx, "Conv2d", conv_forward, d, free);
    if (!m) {
        free(d);
        return NULL;
    }
    /* PyTorch's Conv2d.reset_parameters: kaiming_uniform_(a = sqrt(5)) is
     * uniform in +-1/sqrt(fan_in), bias likewise; fan_in = in/groups*kh*kw. */
    int64_t fan_in = in_channels / groups * kh * kw;
    double bound = 1.0 / sqrt((double)fan_in);
    loom_tensor *w = loom__nn_uniform(ctx, 4, (const int64_t[]){out_channels, in_channels / groups, kh, kw}, bound);
    if (!w || loom_module_add_parameter(m, "weight", w) != LOOM_OK) {
        loom_tensor_free(w);
        goto fail;
    }
    d->weight = w;
    if (bias) {
        loom_tensor *b = loom__nn_uniform(ctx, 1, &out_channels, bound);
        if (!b || loom_module_add_parameter(m, "bias", b) != LOOM_OK) {
            loom_tensor_free(b);
            goto fail;
        }
        d->bias = b;
    }
    return m;
fail:
    loom_module_free(m);
    return NULL;
}

/* ---- pooling ------------------------------------------------------------- */

static loom_tensor *max_pool_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m;
    return loom_max_pool2d(x, user);
}

static loom_tensor *avg_pool_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m;
    return loom_avg_pool2d(x, user);
}

static loom_module *pool_module(loom_ctx *ctx, const char *type, loom_forward_fn fwd, const loom_pool2d_opts *opts)
{
    if (!opts || opts->kernel[0] < 1 || opts->kernel[1] < 1 || opts->stride[0] < 0 || opts->stride[1] < 0 ||
        opts->padding[0] < 0 || opts->padding[1] < 0 || 2 * opts->padding[0] > opts->kernel[0] ||
        2 * opts->padding[1] > opts->kernel[1]) {
        loom__set_error(LOOM_ERR_INVALID_ARG,
                        "%s: needs a positive kernel, a stride >= 0 (0 = kernel) and padding at most half the kernel",
                        type);
        return NULL;
    }
    loom_pool2d_opts *d = malloc(sizeof *d);
    if (!d) {
        loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory", type);
        return NULL;
    }
    *d = *opts;
    loom_module *m = loom_module_create(ctx, type, fwd, d, free);
    if (!m) free(d);
    return m;
}

loom_module *loom_max_pool2d_module(loom_ctx *ctx, const loom_pool2d_opts *opts)
{
    return pool_module(ctx, "MaxPool2d", max_pool_forward, opts);
}

loom_module *loom_avg_pool2d_module(loom_ctx *ctx, const loom_pool2d_opts *opts)
{
    return pool_module(ctx, "AvgPool2d", avg_pool_forward, opts);
}

static loom_tensor *adaptive_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m;
    const int64_t *o = user;
    return loom_adaptive_avg_pool2d(x, o[0], o[1]);
}

loom_module *loom_adaptive_avg_pool2d_module(loom_ctx *ctx, int64_t out_h, int64_t out_w)
{
    if (out_h < 1 || out_w < 1) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "adaptive_avg_pool2d: output size (%lld, %lld) must be positive",
                        (long long)out_h, (long long)out_w);
        return NULL;
    }
    int64_t *d = malloc(2 * sizeof *d);
    if (!d) {
        loom__set_error(LOOM_ERR_NOMEM, "adaptive_avg_pool2d: out of memory");
        return NULL;
    }
    d[0] = out_h, d[1] = out_w;
    loom_module *m = loom_module_create(ctx, "AdaptiveAvgPool2d", adaptive_forward, d, free);
    if (!m) free(d);
    return m;
}

/* ---- BatchNorm2d ------------------------------------------------------------ */

typedef struct bn_data {
    loom_tensor *weight, *bias;            /* [C] or NULL (affine = false) */
    loom_tensor *running_mean, *running_var; /* [C] buffers */
    loom_tensor *num_batches_tracked;        /* int64 0-dim buffer, as PyTorch's */
    double eps, momentum;
} bn_data;

static loom_tensor *bn_run(loom_module *m, loom_tensor *x, const bn_data *d, bool relu)
{
    if (x && loom_tensor_ndim(x) != 4) {
        char s[LOOM__SHAPE_STR_MAX];
        loom__set_error(LOOM_ERR_SHAPE, "BatchNorm2d: expected a 4-D input [N, C, H, W], got %s", loom__nn_shape(s, x));
        return NULL;
    }
    bool training = loom_module_is_training(m);
    if (x && training) {
        /* PyTorch counts the batches seen in training (it uses the count
         * only when momentum is None, which Loom does not offer); kept for
         * state_dict parity. */
        loom_tensor *next = loom_add_scalar(d->num_batches_tracked, 1.0);
        loom_status st = next ? loom_tensor_assign(d->num_batches_tracked, next) : loom_last_status();
        loom_tensor_free(next);
        if (st != LOOM_OK) return NULL;
    }
    return (relu ? loom_batch_norm_relu : loom_batch_norm)(x, d->running_mean, d->running_var, d->weight, d->bias,
                                                           training, d->momentum, d->eps);
}

static loom_tensor *bn_forward(loom_module *m, loom_tensor *x, void *user) { return bn_run(m, x, user, false); }

loom_tensor *loom__nn_batch_norm2d_relu_forward(loom_module *bn, loom_tensor *x)
{
    if (strcmp(loom_module_type(bn), "BatchNorm2d") != 0) return NULL;
    return bn_run(bn, x, loom__nn_module_user(bn), true);
}

loom_module *loom_batch_norm2d_module(loom_ctx *ctx, int64_t num_features, double eps, double momentum, bool affine)
{
    if (!ctx || num_features <= 0 || !(eps > 0.0) || !(momentum >= 0.0 && momentum <= 1.0)) {
        loom__set_error(LOOM_ERR_INVALID_ARG,
                        "BatchNorm2d: needs a context, num_features > 0 (got %lld), eps > 0 (got %g) and momentum in "
                        "[0, 1] (got %g)",
                        (long long)num_features, eps, momentum);
        return NULL;
    }
    bn_data *d = calloc(1, sizeof *d);
    if (!d) {
        loom__set_error(LOOM_ERR_NOMEM, "BatchNorm2d: out of memory");
        return NULL;
    }
    d->eps = eps;
    d->momentum = momentum;
    loom_module *m = loom_module_create(ctx, "BatchNorm2d", bn_forward, d, free);
    if (!m) {
        free(d);
        return NULL;
    }
    const int64_t *C = &num_features;
    struct {
        const char *name;
        loom_tensor **slot;
        double value;
        bool param;
    } items[4] = {
        {"weight", &d->weight, 1.0, true},
        {"bias", &d->bias, 0.0, true},
        {"running_mean", &d->running_mean, 0.0, false},
        {"running_var", &d->running_var, 1.0, false},
    };
    for (int i = affine ? 0 : 2; i < 4; i++) {
        loom_tensor *t = loom_full(ctx, LOOM_FLOAT32, 1, C, items[i].value);
        loom_status st = t ? (items[i].param ? loom_module_add_parameter(m, items[i].name, t)
                                             : loom_module_add_buffer(m, items[i].name, t))
                           : loom_last_status();
        if (st != LOOM_OK) {
            loom_tensor_free(t);
            loom_module_free(m);
            return NULL;
        }
        *items[i].slot = t;
    }
    loom_tensor *nbt = loom_zeros(ctx, LOOM_INT64, 0, NULL);
    loom_status st = nbt ? loom_module_add_buffer(m, "num_batches_tracked", nbt) : loom_last_status();
    if (st != LOOM_OK) {
        loom_tensor_free(nbt);
        loom_module_free(m);
        return NULL;
    }
    d->num_batches_tracked = nbt;
    return m;
}

/* ---- Flatten ------------------------------------------------------------------ */

static loom_tensor *flatten_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m;
    const int *d = user;
    return loom_flatten(x, d[0], d[1]);
}

loom_module *loom_flatten_module(loom_ctx *ctx, int start_dim, int end_dim)
{
    int *d = malloc(2 * sizeof *d);
    if (!d) {
        loom__set_error(LOOM_ERR_NOMEM, "flatten: out of memory");
        return NULL;
    }
    d[0] = start_dim, d[1] = end_dim;
    loom_module *m = loom_module_create(ctx, "Flatten", flatten_forward, d, free);
    if (!m) free(d);
    return m;
}

/* ---- accuracy ------------------------------------------------------------------ */

loom_tensor *loom_accuracy(loom_tensor *logits, loom_tensor *labels)
{
    const char *op = "accuracy";
    if (!loom__nn_present(op, "logits", logits) || !loom__nn_present(op, "labels", labels)) return NULL;
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    if (loom_tensor_ndim(logits) != 2 || loom_tensor_ndim(labels) != 1 ||
        loom_tensor_size(labels, 0) != loom_tensor_size(logits, 0) || loom_tensor_dtype(labels) != LOOM_INT64) {
        loom__set_error(LOOM_ERR_SHAPE, "accuracy: expected logits [N, K] and int64 labels [N], got %s and %s %s",
                        loom__nn_shape(s1, logits), loom_dtype_name(loom_tensor_dtype(labels)),
                        loom__nn_shape(s2, labels));
        return NULL;
    }
    loom_ctx *ctx = loom_tensor_ctx(logits);
    if (!loom__nn_enter(ctx)) return NULL;
    loom_tensor *hit = loom_eq(loom_argmax(logits, 1, false), labels);
    return loom__nn_leave(ctx, loom_mean(loom_to_dtype(hit, LOOM_FLOAT32), 0, NULL, false));
}

/* ---- conv + batch norm folding (torch.nn.utils.fuse_conv_bn_eval) ------------ */

loom_module *loom_fuse_conv_bn_eval(loom_module *conv, loom_module *bn)
{
    const char *op = "fuse_conv_bn_eval";
    if (!conv || !bn || strcmp(loom_module_type(conv), "Conv2d") != 0 ||
        strcmp(loom_module_type(bn), "BatchNorm2d") != 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: expected a Conv2d and a BatchNorm2d module", op);
        return NULL;
    }
    const conv_data *c = loom__nn_module_user(conv);
    const bn_data *b = loom__nn_module_user(bn);
    int64_t O = loom_tensor_size(c->weight, 0);
    if (loom_tensor_size(b->running_mean, 0) != O) {
        loom__set_error(LOOM_ERR_SHAPE, "%s: the convolution has %lld output channels but the batch norm %lld", op,
                        (long long)O, (long long)loom_tensor_size(b->running_mean, 0));
        return NULL;
    }
    loom_ctx *ctx = loom_module_ctx(conv);
    int64_t ws[4];
    loom_tensor_shape(c->weight, ws);
    int groups = c->opts.groups ? c->opts.groups : 1;
    loom_module *fused = loom_conv2d_module(ctx, ws[1] * groups, O, (int)ws[2], (int)ws[3], &c->opts, true);
    if (!fused) return NULL;
    conv_data *f = loom__nn_module_user(fused);
    if (!loom__nn_enter(ctx)) {
        loom_module_free(fused);
        return NULL;
    }
    loom_no_grad_begin(ctx);
    /* scale [O] = gamma / sqrt(running_var + eps);
     * w' = w * scale[o]; b' = (b - running_mean) * scale + beta. */
    loom_tensor *scale = loom_div(b->weight ? b->weight : loom_ones(ctx, LOOM_FLOAT32, 1, &O),
                                  loom_sqrt(loom_add_scalar(b->running_var, b->eps)));
    loom_tensor *w = loom_mul(c->weight, loom_reshape(scale, 4, (const int64_t[]){O, 1, 1, 1}));
    loom_tensor *bias = c->bias ? c->bias : loom_zeros(ctx, LOOM_FLOAT32, 1, &O);
    loom_tensor *nb = loom_mul(loom_sub(bias, b->running_mean), scale);
    if (b->bias) nb = loom_add(nb, b->bias);
    loom_status st = w && nb ? loom_tensor_assign(f->weight, w) : loom_last_status();
    if (st == LOOM_OK) st = loom_tensor_assign(f->bias, nb);
    loom_no_grad_end(ctx);
    loom__nn_leave(ctx, NULL);
    if (st != LOOM_OK) {
        loom_module_free(fused);
        return NULL;
    }
    loom_module_train(fused, false);
    return fused;
}
