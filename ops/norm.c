/*
 * ops/norm.c - batch normalization (torch.nn.functional.batch_norm).
 *
 * x [N, C, *] is normalised per channel c (dim 1):
 *   y = (x - mean_c) / sqrt(var_c + eps) * gamma_c + beta_c.
 * Training: mean and (biased) var are the batch's, computed by a BN_STATS
 * node [2, C]; the running statistics are updated in place with PyTorch's
 * rule, running = (1 - momentum) * running + momentum * batch, the variance
 * taken unbiased (times M / (M - 1), M = N * spatial). Evaluation: the
 * running statistics are used.
 *
 * Autograd: BN_STATS has no gradient rule of its own; BN_FWD's rule in
 * training gives dx through both the normalisation and the statistics (the
 * usual closed form), so the stats node is treated as a constant.
 *
 * loom_batch_norm_relu records the same node with a fused ReLU (attrs
 * bn.relu): y = relu(bn(x)) in one pass, where the pair would write and
 * read the normalised tensor once more. Its gradient masks g with y > 0
 * first (RELU_BWD on the node's own output, as a fused convolution does).
 */
#include <string.h>

#include "loom/autograd.h"
#include "ops/cnn_common.h"

static bool check_param(const char *role, loom_tensor *p, int64_t C)
{
    if (!p) return true;
    if (!loom__want_float("batch_norm", role, p)) return false;
    if (p->ndim != 1 || p->shape[0] != C) {
        char s[LOOM__SHAPE_STR_MAX];
        loom__set_error(LOOM_ERR_SHAPE, "batch_norm: %s %s does not match %lld channels", role,
                        loom__shape_str(s, sizeof s, p), (long long)C);
        return false;
    }
    return true;
}

/* running <- (1 - m) * running + m * batch (no grad, in place). */
static loom_status update_running(loom_tensor *running, loom_tensor *batch, double m)
{
    loom_tensor *v = loom_add(loom_mul_scalar(running, 1.0 - m), loom_mul_scalar(batch, m));
    return v ? loom_tensor_assign(running, v) : loom_last_status();
}

static loom_tensor *batch_norm(loom_tensor *x, loom_tensor *running_mean, loom_tensor *running_var,
                               loom_tensor *weight, loom_tensor *bias, bool training, double momentum, double eps,
                               bool relu)
{
    const char *op = "batch_norm";
    if (!loom__check_inputs(op, 1, &x) || !loom__want_float(op, "input", x)) return NULL;
    char s[LOOM__SHAPE_STR_MAX];
    if (x->ndim < 2) {
        loom__set_error(LOOM_ERR_SHAPE, "batch_norm: input must have at least 2 dims [N, C, ...], got %s",
                        loom__shape_str(s, sizeof s, x));
        return NULL;
    }
    int64_t C = x->shape[1];
    loom_ctx *ctx = x->ctx;
    loom_tensor *ps[4] = {running_mean, running_var, weight, bias};
    const char *roles[4] = {"running_mean", "running_var", "weight", "bias"};
    for (int i = 0; i < 4; i++) {
        if (ps[i] && ps[i]->ctx != ctx) {
            loom__set_error(LOOM_ERR_INVALID_ARG, "batch_norm: %s belongs to another context", roles[i]);
            return NULL;
        }
        if (!check_param(roles[i], ps[i], C)) return NULL;
    }
    if (!(eps > 0.0) || !(momentum >= 0.0 && momentum <= 1.0)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "batch_norm: eps must be positive and momentum in [0, 1], got %g and %g",
                        eps, momentum);
        return NULL;
    }
    if (!training && (!running_mean || !running_var)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "batch_norm: evaluation mode needs running_mean and running_var");
        return NULL;
    }
    if ((running_mean == NULL) != (running_var == NULL)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "batch_norm: give both running_mean and running_var, or neither");
        return NULL;
    }
    int64_t M = loom__numel(x->ndim, x->shape) / (C ? C : 1);
    if (training && M <= 1) {
        loom__set_error(LOOM_ERR_SHAPE, "batch_norm: expected more than 1 value per channel when training, got input %s",
                        loom__shape_str(s, sizeof s, x));
        return NULL;
    }
    loom__attrs a;
    memset(&a, 0, sizeof a);
    a.bn.eps = eps;
    a.bn.training = training;
    a.bn.relu = relu;

    loom_tensor *stats = NULL, *gamma = weight, *beta = bias;
    if (!gamma) gamma = loom_ones(ctx, LOOM_FLOAT32, 1, &C);
    if (!beta) beta = loom_zeros(ctx, LOOM_FLOAT32, 1, &C);
    loom_tensor *y = NULL;
    if (!gamma || !beta) goto out;
    if (training) {
        loom_tensor *xc = loom__contig(x);
        int64_t sshape[2] = {2, C};
        if (xc) stats = loom__record(LOOM_OP_BN_STATS, &a, 1, &xc, LOOM_FLOAT32, 2, sshape);
        loom__drop_temp(xc, x);
    } else {
        loom_tensor *rs[2] = {running_mean, running_var};
        loom_no_grad_begin(ctx);
        stats = loom_stack(rs, 2, 0);
        loom_no_grad_end(ctx);
    }
    if (!stats) goto out;
    y = loom__record_contig(LOOM_OP_BN_FWD, &a, 4, (loom_tensor *[]){x, stats, gamma, beta}, x->ndim, x->shape);
    if (y && training && running_mean) {
        /* In a scope of its own: the temporaries die with it. loom_tensor_assign
         * evaluates the batch statistics here (a sync point of the lazy
         * graph), as PyTorch updates running stats during the forward. */
        loom_status st = loom_scope_begin(ctx);
        if (st == LOOM_OK) {
            loom_no_grad_begin(ctx);
            loom_tensor *mean = loom_select(stats, 0, 0);
            loom_tensor *var = loom_mul_scalar(loom_select(stats, 0, 1), (double)M / (double)(M - 1));
            st = mean && var ? update_running(running_mean, mean, momentum) : loom_last_status();
            if (st == LOOM_OK) st = update_running(running_var, var, momentum);
            loom_no_grad_end(ctx);
            loom_scope_end(ctx);
        }
        if (st != LOOM_OK) {
            loom_tensor_free(y);
            y = NULL;
        }
    }
out:
    if (stats) loom_tensor_free(stats);
    if (gamma != weight) loom_tensor_free(gamma);
    if (beta != bias) loom_tensor_free(beta);
    return y;
}

loom_tensor *loom_batch_norm(loom_tensor *x, loom_tensor *running_mean, loom_tensor *running_var,
                             loom_tensor *weight, loom_tensor *bias, bool training, double momentum, double eps)
{
    return batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, false);
}

loom_tensor *loom_batch_norm_relu(loom_tensor *x, loom_tensor *running_mean, loom_tensor *running_var,
                                  loom_tensor *weight, loom_tensor *bias, bool training, double momentum, double eps)
{
    return batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, true);
}

loom_tensor *loom__bn_bwd_data(loom_tensor *x, loom_tensor *dy, loom_tensor *stats, loom_tensor *gamma,
                               loom_tensor *y, loom_tensor *p, const loom__attrs *a)
{
    loom_tensor *in[6] = {x, dy, stats, gamma};
    int n = 4;
    if (a->bn.relu) in[n++] = y;
    if (p) in[n++] = p;
    if (!loom__check_inputs("batch_norm_backward_data", n, in)) return NULL;
    return loom__record_contig(LOOM_OP_BN_BWD_DATA, a, n, in, x->ndim, x->shape);
}

loom_tensor *loom__bn_bwd_params(loom_tensor *x, loom_tensor *dy, loom_tensor *stats, loom_tensor *y,
                                 const loom__attrs *a)
{
    loom_tensor *in[4] = {x, dy, stats, y};
    const int n = a->bn.relu ? 4 : 3;
    if (!loom__check_inputs("batch_norm_backward_params", n, in)) return NULL;
    int64_t shape[2] = {2, x->shape[1]};
    return loom__record_contig(LOOM_OP_BN_BWD_PARAMS, a, n, in, 2, shape);
}
