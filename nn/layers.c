/*
 * nn/layers.c - the built-in modules: Linear, the activations, Softmax,
 * LogSoftmax and Dropout. Each is a loom_module with a forward callback
 * that calls the functional form (nn/functional.c) or a tensor op.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "nn/module_impl.h"

/* ---- Linear ---------------------------------------------------------------- */

typedef struct linear_data {
    loom_tensor *weight; /* [out, in], owned by the module */
    loom_tensor *bias;   /* [out] or NULL, owned by the module */
} linear_data;

static loom_tensor *linear_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m;
    const linear_data *d = user;
    return loom_linear_fn(x, d->weight, d->bias);
}

loom_tensor *loom__nn_uniform(loom_ctx *ctx, int ndim, const int64_t *shape, double bound)
{
    if (!loom__nn_enter(ctx)) return NULL;
    loom_no_grad_begin(ctx);
    loom_tensor *w = loom_mul_scalar(loom_sub_scalar(loom_mul_scalar(loom_rand(ctx, ndim, shape), 2.0), 1.0), bound);
    loom_no_grad_end(ctx);
    if (w && loom_tensor_eval(w) != LOOM_OK) w = NULL;
    return loom__nn_leave(ctx, w);
}

loom_module *loom_linear(loom_ctx *ctx, int64_t in_features, int64_t out_features, bool bias)
{
    if (!ctx) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "linear: context is NULL");
        return NULL;
    }
    if (in_features <= 0 || out_features <= 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "linear: in_features and out_features must be positive, got %lld and %lld",
                        (long long)in_features, (long long)out_features);
        return NULL;
    }
    linear_data *d = calloc(1, sizeof *d);
    if (!d) {
        loom__set_error(LOOM_ERR_NOMEM, "linear: out of memory");
        return NULL;
    }
    loom_module *m = loom_module_create(ctx, "Linear", linear_forward, d, free);
    if (!m) {
        free(d);
        return NULL;
    }
    /* PyTorch's reset_parameters(): kaiming_uniform_(weight, a=sqrt(5)) is
     * uniform in +-gain*sqrt(3/fan_in) with gain = sqrt(2/(1+a^2)) =
     * sqrt(1/3), i.e. +-1/sqrt(fan_in); the bias is uniform in
     * +-1/sqrt(fan_in). Weight first, then bias, as PyTorch draws them. */
    double bound = 1.0 / sqrt((double)in_features);
    loom_tensor *w = loom__nn_uniform(ctx, 2, (const int64_t[]){out_features, in_features}, bound);
    if (!w || loom_module_add_parameter(m, "weight", w) != LOOM_OK) goto fail_w;
    d->weight = w;
    if (bias) {
        loom_tensor *b = loom__nn_uniform(ctx, 1, (const int64_t[]){out_features}, bound);
        if (!b || loom_module_add_parameter(m, "bias", b) != LOOM_OK) {
            loom_tensor_free(b); /* not taken by the module on failure */
            goto fail;
        }
        d->bias = b;
    }
    return m;
fail_w:
    loom_tensor_free(w);
fail:
    loom_module_free(m);
    return NULL;
}

/* ---- activations ------------------------------------------------------------- */

static loom_tensor *relu_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m, (void)user;
    return loom_relu(x);
}

static loom_tensor *sigmoid_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m, (void)user;
    return loom_sigmoid(x);
}

static loom_tensor *tanh_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m, (void)user;
    return loom_tanh(x);
}

loom_module *loom_relu_module(loom_ctx *ctx) { return loom_module_create(ctx, "ReLU", relu_forward, NULL, NULL); }

loom_module *loom_sigmoid_module(loom_ctx *ctx)
{
    return loom_module_create(ctx, "Sigmoid", sigmoid_forward, NULL, NULL);
}

loom_module *loom_tanh_module(loom_ctx *ctx) { return loom_module_create(ctx, "Tanh", tanh_forward, NULL, NULL); }

/* The dim travels in the user pointer itself: nothing to allocate. The dim
 * is checked against the input's dims at forward time, as in PyTorch. */
static loom_tensor *softmax_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m;
    return loom_softmax(x, (int)(intptr_t)user);
}

static loom_tensor *log_softmax_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m;
    return loom_log_softmax(x, (int)(intptr_t)user);
}

loom_module *loom_softmax_module(loom_ctx *ctx, int dim)
{
    return loom_module_create(ctx, "Softmax", softmax_forward, (void *)(intptr_t)dim, NULL);
}

loom_module *loom_log_softmax_module(loom_ctx *ctx, int dim)
{
    return loom_module_create(ctx, "LogSoftmax", log_softmax_forward, (void *)(intptr_t)dim, NULL);
}

/* ---- Dropout ------------------------------------------------------------------- */

static loom_tensor *dropout_forward(loom_module *m, loom_tensor *x, void *user)
{
    return loom_dropout(x, *(const double *)user, loom_module_is_training(m));
}

loom_module *loom_dropout_module(loom_ctx *ctx, double p)
{
    /* p == 1 is refused for the module (it would zero everything while
     * training); the functional form accepts it, as PyTorch does. */
    if (!(p >= 0.0 && p < 1.0)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "dropout: probability must be in [0, 1), got %g", p);
        return NULL;
    }
    double *d = malloc(sizeof *d);
    if (!d) {
        loom__set_error(LOOM_ERR_NOMEM, "dropout: out of memory");
        return NULL;
    }
    *d = p;
    loom_module *m = loom_module_create(ctx, "Dropout", dropout_forward, d, free);
    if (!m) free(d);
    return m;
}
