/*
 * nn/loss.c - loss functions with PyTorch's formulas, reductions and
 * gradients: mse, bce, bce_with_logits, nll, cross_entropy.
 *
 * Arguments are checked when the loss is called, with messages that name
 * the loss and the shapes. Where PyTorch would broadcast an input against a
 * target of another shape (with only a warning: "Using a target size that
 * is different to the input size"), these refuse: that case is nearly
 * always a bug, e.g. an output [N, 1] against labels [N].
 *
 * Statuses: LOOM_ERR_INVALID_ARG for NULL arguments and a bad reduction,
 * LOOM_ERR_DTYPE for wrong dtypes, LOOM_ERR_SHAPE for shapes that do not
 * match.
 */
#include <math.h>

#include "nn/module_impl.h"

/* Checks what every loss needs: both tensors, one context, a valid
 * reduction, and a float32 input. */
static bool check_common(const char *op, loom_tensor *input, loom_tensor *target, loom_reduction r)
{
    if (!loom__nn_present(op, "input", input) || !loom__nn_present(op, "target", target)) return false;
    if (loom_tensor_ctx(input) != loom_tensor_ctx(target)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: input and target belong to different contexts", op);
        return false;
    }
    if ((int)r < 0 || r >= LOOM_REDUCTION_COUNT) {
        loom__set_error(LOOM_ERR_INVALID_ARG,
                        "%s: invalid reduction %d (expected LOOM_REDUCTION_MEAN, LOOM_REDUCTION_SUM or "
                        "LOOM_REDUCTION_NONE)",
                        op, (int)r);
        return false;
    }
    return loom__nn_float(op, "input", input);
}

/* Elementwise losses: a float32 target of the input's shape. */
static bool check_pair(const char *op, loom_tensor *input, loom_tensor *target, loom_reduction r)
{
    if (!check_common(op, input, target, r) || !loom__nn_float(op, "target", target)) return false;
    if (!loom__nn_same_shape(input, target)) {
        char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
        loom__set_error(LOOM_ERR_SHAPE, "%s: input %s and target %s have different shapes", op,
                        loom__nn_shape(s1, input), loom__nn_shape(s2, target));
        return false;
    }
    return true;
}

/* Per-element losses -> the requested reduction (mean: over every
 * element, a 0-dim result). */
static loom_tensor *reduce(loom_tensor *l, loom_reduction r)
{
    switch (r) {
    case LOOM_REDUCTION_MEAN: return loom_mean(l, 0, NULL, false);
    case LOOM_REDUCTION_SUM: return loom_sum(l, 0, NULL, false);
    default: return l;
    }
}

loom_tensor *loom_mse_loss(loom_tensor *input, loom_tensor *target, loom_reduction r)
{
    if (!check_pair("mse_loss", input, target, r)) return NULL;
    loom_ctx *ctx = loom_tensor_ctx(input);
    if (!loom__nn_enter(ctx)) return NULL;
    loom_tensor *d = loom_sub(input, target);
    return loom__nn_leave(ctx, reduce(loom_mul(d, d), r));
}

/* BCE: l = -(t * max(log x, -100) + (1 - t) * max(log(1 - x), -100)), as
 * PyTorch 1.13 computes it (log(1 - x), not log1p).
 *
 * The gradient with respect to x is PyTorch's, not the derivative of the
 * clamped formula: (x - t) / max(x (1 - x), 1e-12). The two agree inside
 * (0, 1), but at x = 0 or 1 the composition would give 0/0 (log's rule
 * divides by x) and PyTorch gives a large finite value. So the loss is
 * recorded as
 *     l = L(detach(x), t) + (x - detach(x)) * detach(G),   G = the formula above,
 * whose value is exactly L (x - detach(x) is exactly 0 and G is finite)
 * and whose gradient with respect to x is exactly G. The target keeps the
 * composition's gradient, max(log(1 - x), -100) - max(log x, -100) (PyTorch
 * gives the same without the clamp, hence inf at x = 0 or 1). */
loom_tensor *loom_bce_loss(loom_tensor *input, loom_tensor *target, loom_reduction r)
{
    if (!check_pair("bce_loss", input, target, r)) return NULL;
    loom_ctx *ctx = loom_tensor_ctx(input);
    if (!loom__nn_enter(ctx)) return NULL;
    bool inject = loom_grad_enabled(ctx) && loom_tensor_requires_grad(input);
    loom_tensor *x = inject ? loom_detach(input) : input;
    loom_tensor *logx = loom_clamp(loom_log(x), -100.0, INFINITY);
    loom_tensor *log1mx = loom_clamp(loom_log(loom_sub(loom_scalar(ctx, LOOM_FLOAT32, 1.0), x)), -100.0, INFINITY);
    /* -(t * log x + (1 - t) * log(1 - x)) = (t - 1) * log(1 - x) - t * log x, PyTorch's order of terms */
    loom_tensor *l = loom_sub(loom_mul(loom_sub_scalar(target, 1.0), log1mx), loom_mul(target, logx));
    if (inject) {
        loom_no_grad_begin(ctx);
        loom_tensor *x1mx = loom_mul(loom_sub(loom_scalar(ctx, LOOM_FLOAT32, 1.0), x), x);
        loom_tensor *g = loom_div(loom_sub(x, target), loom_clamp(x1mx, 1e-12, INFINITY));
        loom_no_grad_end(ctx);
        l = loom_add(l, loom_mul(loom_sub(input, x), g));
    }
    return loom__nn_leave(ctx, reduce(l, r));
}

/* l = max(x, 0) - x t + log(1 + exp(-|x|)), which never overflows. -|x| is
 * written min(x, 0) - max(x, 0): at x = 0 the tie rules of maximum and
 * minimum (half the gradient each way) then give d/dx = 1/2 - t =
 * sigmoid(0) - t, where abs and relu (gradient 0 at 0) would give -t. The
 * gradient is sigmoid(x) - t everywhere, as in PyTorch. */
loom_tensor *loom_bce_with_logits_loss(loom_tensor *input, loom_tensor *target, loom_reduction r)
{
    if (!check_pair("bce_with_logits_loss", input, target, r)) return NULL;
    loom_ctx *ctx = loom_tensor_ctx(input);
    if (!loom__nn_enter(ctx)) return NULL;
    loom_tensor *zero = loom_scalar(ctx, LOOM_FLOAT32, 0.0);
    loom_tensor *pos = loom_maximum(input, zero);
    loom_tensor *neg_abs = loom_sub(loom_minimum(input, zero), pos);
    loom_tensor *softplus = loom_log(loom_add_scalar(loom_exp(neg_abs), 1.0));
    loom_tensor *l = loom_add(loom_sub(pos, loom_mul(input, target)), softplus);
    return loom__nn_leave(ctx, reduce(l, r));
}

/* Checks class-index losses: input [N, C, d1, ...] (or [C]) float32, target
 * int64 [N, d1, ...] (or 0-dim). Returns the class dim in *cdim. */
static bool check_classes(const char *op, loom_tensor *input, loom_tensor *target, loom_reduction r, int *cdim)
{
    if (!check_common(op, input, target, r)) return false;
    if (loom_tensor_dtype(target) != LOOM_INT64) {
        loom__set_error(LOOM_ERR_DTYPE, "%s: target must be int64 class indices, got %s", op,
                        loom_dtype_name(loom_tensor_dtype(target)));
        return false;
    }
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    int nd = loom_tensor_ndim(input), td = loom_tensor_ndim(target);
    if (nd == 0) {
        loom__set_error(LOOM_ERR_SHAPE, "%s: input must be [N, C] or [C], got a 0-dim tensor", op);
        return false;
    }
    if (td != (nd == 1 ? 0 : nd - 1)) {
        loom__set_error(LOOM_ERR_SHAPE, "%s: input %s needs a target of %d dims (%s), got %s", op,
                        loom__nn_shape(s1, input), nd == 1 ? 0 : nd - 1,
                        nd == 1 ? "a single class index" : nd == 2 ? "[N]" : "[N, d1, ...]",
                        loom__nn_shape(s2, target));
        return false;
    }
    if (nd >= 2 && loom_tensor_size(input, 0) != loom_tensor_size(target, 0)) {
        loom__set_error(LOOM_ERR_SHAPE, "%s: input %s and target %s have different batch sizes", op,
                        loom__nn_shape(s1, input), loom__nn_shape(s2, target));
        return false;
    }
    for (int d = 2; d < nd; d++) {
        if (loom_tensor_size(input, d) != loom_tensor_size(target, d - 1)) {
            loom__set_error(LOOM_ERR_SHAPE, "%s: input %s and target %s differ outside the class dim 1", op,
                            loom__nn_shape(s1, input), loom__nn_shape(s2, target));
            return false;
        }
    }
    *cdim = nd == 1 ? 0 : 1;
    return true;
}

/* -input[n, target[n], ...], gathered along the class dim; a class index
 * out of [0, C) is reported by gather when the loss is computed. Mean
 * divides by the number of targets, as PyTorch does without weights. */
static loom_tensor *nll(loom_tensor *logp, loom_tensor *target, int cdim, loom_reduction r)
{
    loom_tensor *picked;
    if (cdim == 0) { /* [C] and a 0-dim target */
        picked = loom_reshape(loom_gather(logp, 0, loom_reshape(target, 1, (const int64_t[]){1})), 0, NULL);
    } else {
        picked = loom_squeeze(loom_gather(logp, 1, loom_unsqueeze(target, 1)), 1);
    }
    return reduce(loom_neg(picked), r);
}

loom_tensor *loom_nll_loss(loom_tensor *input, loom_tensor *target, loom_reduction r)
{
    int cdim;
    if (!check_classes("nll_loss", input, target, r, &cdim)) return NULL;
    loom_ctx *ctx = loom_tensor_ctx(input);
    if (!loom__nn_enter(ctx)) return NULL;
    return loom__nn_leave(ctx, nll(input, target, cdim, r));
}

loom_tensor *loom_cross_entropy_loss(loom_tensor *input, loom_tensor *target, loom_reduction r)
{
    int cdim;
    if (!check_classes("cross_entropy_loss", input, target, r, &cdim)) return NULL;
    loom_ctx *ctx = loom_tensor_ctx(input);
    if (!loom__nn_enter(ctx)) return NULL;
    return loom__nn_leave(ctx, nll(loom_log_softmax(input, cdim), target, cdim, r));
}
