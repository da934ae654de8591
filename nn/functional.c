/*
 * nn/functional.c - linear and dropout as functions of tensors
 * (torch.nn.functional). Each is a composition of tensor ops, so autograd
 * differentiates it with the ops' own rules. (softmax, log_softmax,
 * convolution, pooling and batch norm are ops of their own: ops/.)
 */
#include <math.h>

#include "nn/module_impl.h"

loom_tensor *loom_linear_fn(loom_tensor *x, loom_tensor *weight, loom_tensor *bias)
{
    const char *op = "linear";
    if (!loom__nn_present(op, "input", x) || !loom__nn_present(op, "weight", weight)) return NULL;
    loom_ctx *ctx = loom_tensor_ctx(x);
    if (loom_tensor_ctx(weight) != ctx || (bias && loom_tensor_ctx(bias) != ctx)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "linear: input, weight and bias belong to different contexts");
        return NULL;
    }
    if (!loom__nn_float(op, "input", x) || !loom__nn_float(op, "weight", weight) ||
        (bias && !loom__nn_float(op, "bias", bias)))
        return NULL;
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    if (loom_tensor_ndim(weight) != 2) {
        loom__set_error(LOOM_ERR_SHAPE, "linear: weight must be 2-D [out_features, in_features], got %s",
                        loom__nn_shape(s1, weight));
        return NULL;
    }
    if (loom_tensor_ndim(x) < 1 || loom_tensor_size(x, -1) != loom_tensor_size(weight, 1)) {
        loom__set_error(LOOM_ERR_SHAPE, "linear: input %s does not end in in_features = %lld (weight %s)",
                        loom__nn_shape(s1, x), (long long)loom_tensor_size(weight, 1), loom__nn_shape(s2, weight));
        return NULL;
    }
    if (bias && (loom_tensor_ndim(bias) != 1 || loom_tensor_size(bias, 0) != loom_tensor_size(weight, 0))) {
        loom__set_error(LOOM_ERR_SHAPE, "linear: bias %s does not match out_features = %lld (weight %s)",
                        loom__nn_shape(s1, bias), (long long)loom_tensor_size(weight, 0), loom__nn_shape(s2, weight));
        return NULL;
    }
    /* y [..., out] = x [..., in] @ W^T [in, out] + b [out] */
    if (!loom__nn_enter(ctx)) return NULL;
    loom_tensor *y = loom_matmul(x, loom_transpose(weight, 0, 1));
    if (bias) y = loom_add(y, bias);
    return loom__nn_leave(ctx, y);
}

loom_tensor *loom_dropout(loom_tensor *t, double p, bool training)
{
    const char *op = "dropout";
    if (!loom__nn_present(op, "input", t)) return NULL;
    if (!(p >= 0.0 && p <= 1.0)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "dropout: probability must be in [0, 1], got %g", p);
        return NULL;
    }
    if (!loom__nn_float(op, "input", t)) return NULL;
    if (!training || p == 0.0) return loom_alias(t);
    if (p == 1.0) return loom_mul_scalar(t, 0.0); /* PyTorch: input * 0 (NaN stays NaN) */
    loom_ctx *ctx = loom_tensor_ctx(t);
    int64_t shape[LOOM_MAX_DIMS];
    loom_tensor_shape(t, shape);
    if (!loom__nn_enter(ctx)) return NULL;
    /* Keep each element with probability 1 - p (rand in [0, 1) < 1 - p) and
     * scale the kept ones by 1/(1 - p), so that the expectation is t. */
    loom_tensor *keep = loom_lt(loom_rand(ctx, loom_tensor_ndim(t), shape), loom_scalar(ctx, LOOM_FLOAT32, 1.0 - p));
    loom_tensor *scale = loom_mul_scalar(loom_to_dtype(keep, LOOM_FLOAT32), 1.0 / (1.0 - p));
    return loom__nn_leave(ctx, loom_mul(t, scale));
}
