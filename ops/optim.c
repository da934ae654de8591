/*
 * ops/optim.c - fused optimizer updates as ops (LOOM_OP_ADAM_STEP,
 * LOOM_OP_SGD_STEP).
 *
 * The optimizers (optim/) could write Adam with a dozen elementwise ops;
 * one fused node makes one pass instead. Its single output packs the three
 * results, [3, n]: the new parameter, first and second moments, which
 * optim/ takes as views (one output per node stays the rule).
 */
#include <math.h>
#include <string.h>

#include "loom/optim.h"
#include "ops/cnn_common.h"

/* Every tensor float32 and of in[0]'s numel; false with the error set. */
static bool same_size_floats(const char *op, int count, loom_tensor *const *in, const char *const *names)
{
    const int64_t n = loom__numel(in[0]->ndim, in[0]->shape);
    for (int i = 0; i < count; i++) {
        if (!loom__want_float(op, "every tensor", in[i])) return false;
        if (loom__numel(in[i]->ndim, in[i]->shape) != n) {
            char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
            loom__set_error(LOOM_ERR_SHAPE, "%s: %s %s and %s %s differ in size", op, names[0],
                            loom__shape_str(s1, sizeof s1, in[0]), names[i], loom__shape_str(s2, sizeof s2, in[i]));
            return false;
        }
    }
    return true;
}

/* The fused step with t as a tensor (loom_adam_step_fused_t) or as the
 * host's step_size and bias_correction2 (step NULL). */
static loom_tensor *adam_step(loom_tensor *p, loom_tensor *g, loom_tensor *m, loom_tensor *v, loom_tensor *step,
                              double beta1, double beta2, double step_size, double bias_correction2, double lr,
                              double eps)
{
    const char *op = "adam_step";
    bool first = !m && !v;
    loom_tensor *in[4] = {p, g, first ? g : m, first ? g : v};
    if (!loom__check_inputs(op, 4, in)) return NULL;
    static const char *const names[4] = {"parameter", "gradient", "m", "v"};
    const int64_t n = loom__numel(p->ndim, p->shape);
    if (!same_size_floats(op, 4, in, names)) return NULL;
    if (step) {
        if (!loom__check_inputs(op, 1, &step)) return NULL;
        if (step->dtype != LOOM_INT64 || loom__numel(step->ndim, step->shape) != 1) {
            loom__set_error(LOOM_ERR_INVALID_ARG, "adam_step: step must be an int64 tensor of one element");
            return NULL;
        }
    }
    if (!(bias_correction2 > 0.0) || !(eps >= 0.0)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "adam_step: bias_correction2 must be > 0 and eps >= 0, got %g and %g",
                        bias_correction2, eps);
        return NULL;
    }
    loom__attrs a;
    memset(&a, 0, sizeof a);
    a.adam.beta1 = beta1;
    a.adam.beta2 = beta2;
    a.adam.step_size = step_size;
    a.adam.bc2_sqrt = sqrt(bias_correction2);
    a.adam.eps = eps;
    a.adam.first = first;
    a.adam.lr = lr;
    int64_t shape[2] = {3, n};
    loom_tensor *in5[5] = {in[0], in[1], in[2], in[3], step};
    return loom__record_contig(LOOM_OP_ADAM_STEP, &a, step ? 5 : 4, in5, 2, shape);
}

loom_tensor *loom_adam_step_fused(loom_tensor *p, loom_tensor *g, loom_tensor *m, loom_tensor *v, double beta1,
                                  double beta2, double step_size, double bias_correction2, double eps)
{
    return adam_step(p, g, m, v, NULL, beta1, beta2, step_size, bias_correction2, 0.0, eps);
}

loom_tensor *loom_adam_step_fused_t(loom_tensor *p, loom_tensor *g, loom_tensor *m, loom_tensor *v, loom_tensor *step,
                                    double beta1, double beta2, double lr, double eps)
{
    if (!step) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "adam_step: step is NULL");
        return NULL;
    }
    return adam_step(p, g, m, v, step, beta1, beta2, lr, 1.0, lr, eps);
}

loom_tensor *loom_sgd_step_fused(loom_tensor *p, loom_tensor *g, loom_tensor *buf, double lr, double momentum,
                                 double dampening, double weight_decay, bool nesterov)
{
    const char *op = "sgd_step";
    const bool has_buf = momentum != 0.0, first = has_buf && !buf;
    loom_tensor *in[3] = {p, g, has_buf && buf ? buf : g};
    if (!loom__check_inputs(op, has_buf ? 3 : 2, in)) return NULL;
    if (!has_buf && buf) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "sgd_step: a momentum buffer was given but momentum is 0");
        return NULL;
    }
    if (nesterov && (!has_buf || dampening != 0.0)) {
        loom__set_error(LOOM_ERR_INVALID_ARG,
                        "sgd_step: Nesterov momentum requires a momentum > 0 and zero dampening (got %g, %g)",
                        momentum, dampening);
        return NULL;
    }
    static const char *const names[3] = {"parameter", "gradient", "momentum buffer"};
    const int64_t n = loom__numel(p->ndim, p->shape);
    if (!same_size_floats(op, has_buf ? 3 : 2, in, names)) return NULL;
    loom__attrs a;
    memset(&a, 0, sizeof a);
    a.sgd.lr = lr;
    a.sgd.momentum = momentum;
    a.sgd.dampening = dampening;
    a.sgd.weight_decay = weight_decay;
    a.sgd.nesterov = nesterov;
    a.sgd.first = first;
    int64_t shape[2] = {has_buf ? 2 : 1, n};
    return loom__record_contig(LOOM_OP_SGD_STEP, &a, has_buf ? 3 : 2, in, 2, shape);
}
