/*
 * backends/onednn/norm.c - BN_FWD, BN_BWD_DATA and BN_BWD_PARAMS with
 * oneDNN's batch normalization on x [N,C,*] (2 to 5 dims, plain row-major:
 * ab .. abcde). The statistics [2,C] are bound as two [C] arguments, the
 * mean at offset 0 and the variance at offset C floats.
 *
 *   BN_FWD        forward_inference, use_global_stats | use_scale | use_shift;
 *   BN_BWD_DATA   backward, use_scale, plus use_global_stats when the
 *                 statistics are frozen (dx = dy * gamma * invstd); without
 *                 it oneDNN's backward is the full batch-statistics formula
 *                 of kernels.h, computed from the given mean and variance.
 *                 (oneDNN 2.6 has no backward_data with use_scale for plain
 *                 layouts - "unimplemented" - so this is prop backward with
 *                 dgamma going to a [C] temporary);
 *   BN_BWD_PARAMS backward (diff_scale -> row 0 of out, diff_shift -> row 1),
 *                 use_global_stats so that dx is the cheap formula. oneDNN
 *                 always computes dx too, so the program adds a temporary of
 *                 numel(x) floats for it and a unit gamma (cost: one extra
 *                 write of x's size beside the two reductions).
 * BN_STATS is left to ref (oneDNN's forward_training would also write y).
 * x and dy may come in one blocked layout (nChw8c / nChw16c), where oneDNN's
 * batch norm is JIT code; y and dx are then written in it.
 */
#include "config.h"

#include <math.h>
#include <string.h>

#include "backends/onednn/onednn.h"

typedef struct bn_params {
    int32_t ndim, global;
    int32_t layout; /* of x, dy and (BN_FWD, BN_BWD_DATA) the output */
    int64_t dims[5];
    double eps;
} bn_params;

static bool same_shape(const loom__tview *a, const loom__tview *b)
{
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

static bool vec_c(const loom__tview *v, int64_t c) { return v->ndim == 1 && v->shape[0] == c && loom__onednn_plain_f32(v); }

static bool stats_c(const loom__tview *v, int64_t c)
{
    return v->ndim == 2 && v->shape[0] == 2 && v->shape[1] == c && loom__onednn_plain_f32(v);
}

static bool bn_params_of(const loom__kcall *call, bn_params *p)
{
    memset(p, 0, sizeof *p);
    const loom__attrs *a = call->attrs;
    /* A fused ReLU (bn.relu) goes to ref: oneDNN's fuse_norm_relu would
     * need its own workspace for the backward, which Loom does not use. */
    if (!a || !(a->bn.eps >= 0.0) || !isfinite(a->bn.eps) || call->n_in < 3 || a->bn.relu) return false;
    const loom__tview *x = &call->in[0];
    if (x->ndim < 2 || x->ndim > 5 || !loom__onednn_plain_f32(x) || !loom__onednn_plain_f32(&call->out)) return false;
    const int64_t c = x->shape[1];
    switch (call->op) {
    case LOOM_OP_BN_FWD:
        if (call->n_in != 4 || !stats_c(&call->in[1], c) || !vec_c(&call->in[2], c) || !vec_c(&call->in[3], c) ||
            !same_shape(&call->out, x))
            return false;
        p->global = 1;
        break;
    case LOOM_OP_BN_BWD_DATA:
        /* A fifth input, BN_BWD_PARAMS's sums (kernel.h), is not needed:
         * oneDNN's backward computes them itself. */
        if ((call->n_in != 4 && loom__bn_sums_input(call) != 4) || !same_shape(&call->in[1], x) ||
            !loom__onednn_plain_f32(&call->in[1]) || !stats_c(&call->in[2], c) || !vec_c(&call->in[3], c) ||
            !same_shape(&call->out, x))
            return false;
        p->global = !a->bn.training;
        break;
    case LOOM_OP_BN_BWD_PARAMS:
        if (call->n_in != 3 || !same_shape(&call->in[1], x) || !loom__onednn_plain_f32(&call->in[1]) ||
            !stats_c(&call->in[2], c) || !stats_c(&call->out, c))
            return false;
        p->global = 1;
        break;
    default: return false;
    }
    /* x and dy may arrive in one blocked layout (oneDNN's JIT batch norm
     * needs it); y / dx then stay in it. The statistics and affine
     * parameters are 1-D or 2-D, always plain. */
    p->layout = x->layout;
    const int ndata = call->op == LOOM_OP_BN_FWD ? 1 : 2;
    for (int i = 0; i < call->n_in; i++) {
        const int want = i < ndata ? p->layout : LOOM__LAYOUT_PLAIN;
        if (call->in[i].layout != want || !loom__onednn_layout_ok(&call->in[i])) return false;
    }
    if (p->layout != LOOM__LAYOUT_PLAIN && call->op != LOOM_OP_BN_BWD_PARAMS && !call->out_layout) return false;
    p->ndim = x->ndim;
    for (int d = 0; d < x->ndim; d++) p->dims[d] = x->shape[d];
    p->eps = a->bn.eps;
    return true;
}

bool loom__onednn_bn_supports(const loom__kcall *call)
{
    bn_params p;
    return loom__onednn_available() && bn_params_of(call, &p);
}

/* BN_BWD_PARAMS: gamma = 1 (dx is thrown away; dgamma and dbeta do not
 * depend on gamma). */
static void unit_gamma(const loom__kcall *call, const loom__onednn_prim *p, void *const *slots)
{
    (void)p;
    float *g = slots[LOOM__ONEDNN_SLOT_TMP0];
    const int64_t c = call->in[0].shape[1];
    for (int64_t i = 0; i < c; i++) g[i] = 1.0f;
}

static loom_status bn_build(const loom__kcall *call, const void *params, loom__onednn_prim *prog)
{
    const bn_params *p = params;
    const int64_t c = p->dims[1];
    const size_t var_off = (size_t)c * sizeof(float);
    dnnl_memory_desc_t x;
    const loom__tview *xv = &call->in[0];
    dnnl_status_t st = loom__onednn_view_md(&x, xv);
    prog->out_layout = call->op == LOOM_OP_BN_BWD_PARAMS ? LOOM__LAYOUT_PLAIN : p->layout;
    if (st != dnnl_success) return loom__onednn_error(call, "dnnl_memory_desc_init_by_tag", st);
    dnnl_primitive_attr_t attr = loom__onednn_attr(call, false);
    if (!attr) return loom_last_status();
    const float eps = (float)p->eps;
    const unsigned global = p->global ? dnnl_use_global_stats : 0u;
    dnnl_batch_normalization_desc_t fd, bd;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    loom_status ls = LOOM_OK;
    const char *what = "dnnl_batch_normalization_forward_desc_init";

    if (call->op == LOOM_OP_BN_FWD) {
        st = dnnl_batch_normalization_forward_desc_init(&fd, dnnl_forward_inference, &x, eps,
                                                        dnnl_use_global_stats | dnnl_use_scale | dnnl_use_shift);
        if (st == dnnl_success) {
            what = "dnnl_primitive_desc_create";
            st = dnnl_primitive_desc_create(&fpd, &fd, attr, loom__onednn_engine(), NULL);
        }
        if (st == dnnl_success) {
            const loom__onednn_arg args[6] = {
                {DNNL_ARG_SRC, LOOM__ONEDNN_SLOT_IN0, 0},       {DNNL_ARG_MEAN, LOOM__ONEDNN_SLOT_IN0 + 1, 0},
                {DNNL_ARG_VARIANCE, LOOM__ONEDNN_SLOT_IN0 + 1, var_off}, {DNNL_ARG_SCALE, LOOM__ONEDNN_SLOT_IN0 + 2, 0},
                {DNNL_ARG_SHIFT, LOOM__ONEDNN_SLOT_IN0 + 3, 0}, {DNNL_ARG_DST, LOOM__ONEDNN_SLOT_OUT, 0},
            };
            ls = loom__onednn_add_step(call, prog, fpd, 6, args);
        }
    } else {
        const bool data = call->op == LOOM_OP_BN_BWD_DATA;
        /* Plain-layout backward_data rejects use_scale: both ops use
         * backward. */
        const unsigned flags = global | dnnl_use_scale | (data ? 0u : (unsigned)dnnl_use_shift);
        st = dnnl_batch_normalization_forward_desc_init(&fd, dnnl_forward_training, &x, eps, flags);
        if (st == dnnl_success) {
            what = "dnnl_primitive_desc_create";
            st = dnnl_primitive_desc_create(&fpd, &fd, attr, loom__onednn_engine(), NULL);
        }
        if (st == dnnl_success) {
            what = "dnnl_batch_normalization_backward_desc_init";
            st = dnnl_batch_normalization_backward_desc_init(&bd, dnnl_backward, &x, &x, eps, flags);
        }
        if (st == dnnl_success) {
            what = "dnnl_primitive_desc_create";
            st = dnnl_primitive_desc_create(&bpd, &bd, attr, loom__onednn_engine(), fpd);
        }
        if (st == dnnl_success && data) {
            const int dgslot = loom__onednn_add_tmp(prog, (size_t)c * sizeof(float));
            const loom__onednn_arg args[7] = {
                {DNNL_ARG_SRC, LOOM__ONEDNN_SLOT_IN0, 0},
                {DNNL_ARG_DIFF_DST, LOOM__ONEDNN_SLOT_IN0 + 1, 0},
                {DNNL_ARG_MEAN, LOOM__ONEDNN_SLOT_IN0 + 2, 0},
                {DNNL_ARG_VARIANCE, LOOM__ONEDNN_SLOT_IN0 + 2, var_off},
                {DNNL_ARG_SCALE, LOOM__ONEDNN_SLOT_IN0 + 3, 0},
                {DNNL_ARG_DIFF_SRC, LOOM__ONEDNN_SLOT_OUT, 0},
                {DNNL_ARG_DIFF_SCALE, dgslot, 0},
            };
            ls = loom__onednn_add_step(call, prog, bpd, 7, args);
        } else if (st == dnnl_success) {
            const int gslot = loom__onednn_add_tmp(prog, (size_t)c * sizeof(float)); /* TMP0: unit_gamma */
            const int dxslot = loom__onednn_add_tmp(prog, dnnl_memory_desc_get_size(&x));
            /* oneDNN's backward also takes the shift as an input (unused by
             * the gradients): any [C] buffer does. */
            const loom__onednn_arg args[9] = {
                {DNNL_ARG_SRC, LOOM__ONEDNN_SLOT_IN0, 0},
                {DNNL_ARG_DIFF_DST, LOOM__ONEDNN_SLOT_IN0 + 1, 0},
                {DNNL_ARG_MEAN, LOOM__ONEDNN_SLOT_IN0 + 2, 0},
                {DNNL_ARG_VARIANCE, LOOM__ONEDNN_SLOT_IN0 + 2, var_off},
                {DNNL_ARG_SCALE, gslot, 0},
                {DNNL_ARG_SHIFT, gslot, 0},
                {DNNL_ARG_DIFF_SRC, dxslot, 0},
                {DNNL_ARG_DIFF_SCALE, LOOM__ONEDNN_SLOT_OUT, 0},
                {DNNL_ARG_DIFF_SHIFT, LOOM__ONEDNN_SLOT_OUT, var_off},
            };
            prog->prep = unit_gamma;
            ls = loom__onednn_add_step(call, prog, bpd, 9, args);
        }
    }
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) ls = loom__onednn_error(call, what, st);
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    return ls;
}

loom_status loom__onednn_bn(const loom__kcall *call)
{
    bn_params p;
    if (!bn_params_of(call, &p)) return loom__onednn_error(call, "checking the arguments", dnnl_invalid_arguments);
    loom__onednn_key key;
    loom__onednn_key_init(&key, call, 0);
    loom__onednn_key_add(&key, &p, sizeof p);
    return loom__onednn_run(call, &key, bn_build, &p);
}
