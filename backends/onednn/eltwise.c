/*
 * backends/onednn/eltwise.c - unary ops with a oneDNN eltwise algorithm,
 * RELU_BWD, and SOFTMAX / LOG_SOFTMAX forward and backward.
 *
 * Unary ops run on the buffer as one 1-D tensor (input and output
 * contiguous, same shape). oneDNN's JIT eltwise kernels were checked against
 * kernels.h / the ref backend on NaN, +-inf, +-0 and subnormal inputs (Debian
 * libdnnl 2.6.3, jit:avx2); the ops where they differ are mapped but marked
 * inexact, and supports() rejects them so ref runs them:
 *   neg      linear(-1, 0) gives +0 for +0 (ref: -0)
 *   exp      NaN -> +inf (ref: NaN)
 *   log      subnormal inputs flushed: log(1e-40) = -88.0 (ref: -92.1)
 *   relu     NaN -> 0 (ref: NaN stays)
 *   clamp    clip: NaN -> lo (ref: NaN stays)
 * abs, sqrt, tanh and sigmoid (logistic) agree. sin and cos have no
 * algorithm.
 *
 * RELU_BWD is eltwise_backward with relu_use_dst_for_bwd (dx = dy where
 * y > 0). oneDNN computes it as dy * (y > 0 ? 1 : 0) and lets a NaN y pass
 * dy, so an infinite or NaN dy where y <= 0, or a NaN y, would give NaN or dy
 * where kernels.h says 0: supports() scans y and dy (one extra read) and
 * leaves such calls to ref.
 *
 * Softmax: x viewed as [outer, D, inner] (inner dropped when 1), axis 1,
 * softmax_v2 with dnnl_softmax_accurate / dnnl_softmax_log. The forward
 * rejects inputs holding NaN or +inf (oneDNN's max skips NaN: a row [NaN, 1,
 * 2] gives [NaN, 0, 0] where the formula gives NaN everywhere); -inf
 * (masking) is exact.
 */
#include "config.h"

#include <string.h>

#include "backends/onednn/onednn.h"

/* ---- unary ---------------------------------------------------------------------- */

typedef struct unary_map {
    loom__op op;
    dnnl_alg_kind_t alg;
    float alpha, beta; /* clamp takes them from attrs */
    bool exact;
} unary_map;

static const unary_map unary_ops[] = {
    {LOOM_OP_NEG, dnnl_eltwise_linear, -1.0f, 0.0f, false},
    {LOOM_OP_ABS, dnnl_eltwise_abs, 0.0f, 0.0f, true},
    {LOOM_OP_EXP, dnnl_eltwise_exp, 0.0f, 0.0f, false},
    {LOOM_OP_LOG, dnnl_eltwise_log, 0.0f, 0.0f, false},
    {LOOM_OP_SQRT, dnnl_eltwise_sqrt, 0.0f, 0.0f, true},
    {LOOM_OP_TANH, dnnl_eltwise_tanh, 0.0f, 0.0f, true},
    {LOOM_OP_SIGMOID, dnnl_eltwise_logistic, 0.0f, 0.0f, true},
    {LOOM_OP_RELU, dnnl_eltwise_relu, 0.0f, 0.0f, false},
    {LOOM_OP_CLAMP, dnnl_eltwise_clip, 0.0f, 0.0f, false},
};

static const unary_map *unary_of(loom__op op)
{
    for (size_t i = 0; i < sizeof unary_ops / sizeof unary_ops[0]; i++)
        if (unary_ops[i].op == op) return &unary_ops[i];
    return NULL;
}

typedef struct elt_params {
    int64_t n;
    int32_t alg;
    float alpha, beta;
} elt_params;

static bool same_shape(const loom__tview *a, const loom__tview *b)
{
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

static bool unary_params_of(const loom__kcall *call, elt_params *p)
{
    memset(p, 0, sizeof *p);
    const unary_map *m = unary_of(call->op);
    if (!m || !m->exact || call->n_in != 1) return false;
    if (!loom__onednn_plain_f32(&call->in[0]) || !loom__onednn_plain_f32(&call->out) ||
        !same_shape(&call->in[0], &call->out))
        return false;
    p->n = loom__tview_numel(&call->out);
    p->alg = m->alg;
    p->alpha = m->alpha, p->beta = m->beta;
    if (call->op == LOOM_OP_CLAMP) {
        if (!call->attrs) return false;
        p->alpha = (float)call->attrs->clamp.lo, p->beta = (float)call->attrs->clamp.hi;
    }
    return true;
}

bool loom__onednn_unary_supports(const loom__kcall *call)
{
    elt_params p;
    return loom__onednn_available() && unary_params_of(call, &p);
}

static dnnl_status_t flat_md(dnnl_memory_desc_t *md, int64_t n)
{
    const dnnl_dims_t d = {n};
    return dnnl_memory_desc_init_by_tag(md, 1, d, dnnl_f32, dnnl_a);
}

static loom_status unary_build(const loom__kcall *call, const void *params, loom__onednn_prim *prog)
{
    const elt_params *p = params;
    dnnl_memory_desc_t md;
    dnnl_eltwise_desc_t d;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = loom__onednn_attr(call, false);
    if (!attr) return loom_last_status();
    const char *what = "dnnl_eltwise_forward_desc_init";
    dnnl_status_t st = flat_md(&md, p->n);
    if (st == dnnl_success)
        st = dnnl_eltwise_forward_desc_init(&d, dnnl_forward_inference, (dnnl_alg_kind_t)p->alg, &md, p->alpha,
                                            p->beta);
    if (st == dnnl_success) {
        what = "dnnl_primitive_desc_create";
        st = dnnl_primitive_desc_create(&pd, &d, attr, loom__onednn_engine(), NULL);
    }
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) return loom__onednn_error(call, what, st);
    const loom__onednn_arg args[2] = {{DNNL_ARG_SRC, LOOM__ONEDNN_SLOT_IN0, 0}, {DNNL_ARG_DST, LOOM__ONEDNN_SLOT_OUT, 0}};
    loom_status ls = loom__onednn_add_step(call, prog, pd, 2, args);
    dnnl_primitive_desc_destroy(pd);
    return ls;
}

loom_status loom__onednn_unary(const loom__kcall *call)
{
    elt_params p;
    if (!unary_params_of(call, &p))
        return loom__onednn_error(call, "checking the arguments", dnnl_invalid_arguments);
    loom__onednn_key key;
    loom__onednn_key_init(&key, call, 0);
    loom__onednn_key_add(&key, &p, sizeof p);
    return loom__onednn_run(call, &key, unary_build, &p);
}

/* ---- relu backward --------------------------------------------------------------- */

static bool relu_bwd_params_of(const loom__kcall *call, elt_params *p)
{
    memset(p, 0, sizeof *p);
    if (call->op != LOOM_OP_RELU_BWD || call->n_in != 2) return false;
    for (int i = 0; i < 2; i++)
        if (!loom__onednn_plain_f32(&call->in[i]) || !same_shape(&call->in[i], &call->out)) return false;
    if (!loom__onednn_plain_f32(&call->out)) return false;
    p->n = loom__tview_numel(&call->out);
    p->alg = dnnl_eltwise_relu_use_dst_for_bwd;
    return true;
}

bool loom__onednn_relu_bwd_supports(const loom__kcall *call)
{
    elt_params p;
    if (!loom__onednn_available() || !relu_bwd_params_of(call, &p)) return false;
    return !loom__onednn_has_nonfinite(call->in[0].data, p.n, false, false) &&
           !loom__onednn_has_nonfinite(call->in[1].data, p.n, true, true);
}

static loom_status relu_bwd_build(const loom__kcall *call, const void *params, loom__onednn_prim *prog)
{
    const elt_params *p = params;
    dnnl_memory_desc_t md;
    dnnl_eltwise_desc_t fd, bd;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    dnnl_primitive_attr_t attr = loom__onednn_attr(call, false);
    if (!attr) return loom_last_status();
    const char *what = "dnnl_eltwise_forward_desc_init";
    dnnl_status_t st = flat_md(&md, p->n);
    if (st == dnnl_success)
        st = dnnl_eltwise_forward_desc_init(&fd, dnnl_forward_training, dnnl_eltwise_relu_use_dst_for_bwd, &md, 0.0f,
                                            0.0f);
    if (st == dnnl_success) {
        what = "dnnl_primitive_desc_create";
        st = dnnl_primitive_desc_create(&fpd, &fd, attr, loom__onednn_engine(), NULL);
    }
    if (st == dnnl_success) {
        what = "dnnl_eltwise_backward_desc_init";
        st = dnnl_eltwise_backward_desc_init(&bd, dnnl_eltwise_relu_use_dst_for_bwd, &md, &md, 0.0f, 0.0f);
    }
    if (st == dnnl_success) {
        what = "dnnl_primitive_desc_create";
        st = dnnl_primitive_desc_create(&bpd, &bd, attr, loom__onednn_engine(), fpd);
    }
    dnnl_primitive_attr_destroy(attr);
    loom_status ls;
    if (st != dnnl_success) {
        ls = loom__onednn_error(call, what, st);
    } else {
        const loom__onednn_arg args[3] = {{DNNL_ARG_DST, LOOM__ONEDNN_SLOT_IN0, 0},
                                          {DNNL_ARG_DIFF_DST, LOOM__ONEDNN_SLOT_IN0 + 1, 0},
                                          {DNNL_ARG_DIFF_SRC, LOOM__ONEDNN_SLOT_OUT, 0}};
        ls = loom__onednn_add_step(call, prog, bpd, 3, args);
    }
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    return ls;
}

loom_status loom__onednn_relu_bwd(const loom__kcall *call)
{
    elt_params p;
    if (!relu_bwd_params_of(call, &p))
        return loom__onednn_error(call, "checking the arguments", dnnl_invalid_arguments);
    loom__onednn_key key;
    loom__onednn_key_init(&key, call, 0);
    loom__onednn_key_add(&key, &p, sizeof p);
    return loom__onednn_run(call, &key, relu_bwd_build, &p);
}

/* ---- softmax ------------------------------------------------------------------------ */

typedef struct softmax_params {
    int64_t dims[3]; /* outer, D, inner */
    int32_t ndim;    /* 2 when inner == 1 */
    int32_t alg;     /* dnnl_softmax_accurate / dnnl_softmax_log */
} softmax_params;

static bool softmax_params_of(const loom__kcall *call, softmax_params *p)
{
    memset(p, 0, sizeof *p);
    bool bwd;
    switch (call->op) {
    case LOOM_OP_SOFTMAX: bwd = false, p->alg = dnnl_softmax_accurate; break;
    case LOOM_OP_LOG_SOFTMAX: bwd = false, p->alg = dnnl_softmax_log; break;
    case LOOM_OP_SOFTMAX_BWD: bwd = true, p->alg = dnnl_softmax_accurate; break;
    case LOOM_OP_LOG_SOFTMAX_BWD: bwd = true, p->alg = dnnl_softmax_log; break;
    default: return false;
    }
    if (!call->attrs || call->n_in != (bwd ? 2 : 1)) return false;
    for (int i = 0; i < call->n_in; i++)
        if (!loom__onednn_plain_f32(&call->in[i]) || !same_shape(&call->in[i], &call->out)) return false;
    const loom__tview *o = &call->out;
    if (!loom__onednn_plain_f32(o) || o->ndim < 1) return false;
    const int axis = call->attrs->axis.dim;
    if (axis < 0 || axis >= o->ndim) return false;
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) outer *= o->shape[d];
    for (int d = axis + 1; d < o->ndim; d++) inner *= o->shape[d];
    p->dims[0] = outer, p->dims[1] = o->shape[axis], p->dims[2] = inner;
    p->ndim = inner == 1 ? 2 : 3;
    return true;
}

bool loom__onednn_softmax_supports(const loom__kcall *call)
{
    softmax_params p;
    if (!loom__onednn_available() || !softmax_params_of(call, &p)) return false;
    if (call->op == LOOM_OP_SOFTMAX || call->op == LOOM_OP_LOG_SOFTMAX)
        return !loom__onednn_has_nonfinite(call->in[0].data, loom__tview_numel(&call->in[0]), false, true);
    return true;
}

static loom_status softmax_build(const loom__kcall *call, const void *params, loom__onednn_prim *prog)
{
    const softmax_params *p = params;
    const bool bwd = call->op == LOOM_OP_SOFTMAX_BWD || call->op == LOOM_OP_LOG_SOFTMAX_BWD;
    dnnl_memory_desc_t md;
    dnnl_softmax_v2_desc_t fd, bd;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    dnnl_primitive_attr_t attr = loom__onednn_attr(call, false);
    if (!attr) return loom_last_status();
    const char *what = "dnnl_softmax_v2_forward_desc_init";
    dnnl_status_t st = loom__onednn_plain_md(&md, p->ndim, p->dims);
    if (st == dnnl_success)
        st = dnnl_softmax_v2_forward_desc_init(&fd, bwd ? dnnl_forward_training : dnnl_forward_inference,
                                               (dnnl_alg_kind_t)p->alg, &md, &md, 1);
    if (st == dnnl_success) {
        what = "dnnl_primitive_desc_create";
        st = dnnl_primitive_desc_create(&fpd, &fd, attr, loom__onednn_engine(), NULL);
    }
    if (st == dnnl_success && bwd) {
        what = "dnnl_softmax_v2_backward_desc_init";
        st = dnnl_softmax_v2_backward_desc_init(&bd, (dnnl_alg_kind_t)p->alg, &md, &md, &md, 1);
        if (st == dnnl_success) {
            what = "dnnl_primitive_desc_create";
            st = dnnl_primitive_desc_create(&bpd, &bd, attr, loom__onednn_engine(), fpd);
        }
    }
    dnnl_primitive_attr_destroy(attr);
    loom_status ls;
    if (st != dnnl_success) {
        ls = loom__onednn_error(call, what, st);
    } else if (!bwd) {
        const loom__onednn_arg args[2] = {{DNNL_ARG_SRC, LOOM__ONEDNN_SLOT_IN0, 0},
                                          {DNNL_ARG_DST, LOOM__ONEDNN_SLOT_OUT, 0}};
        ls = loom__onednn_add_step(call, prog, fpd, 2, args);
    } else {
        const loom__onednn_arg args[3] = {{DNNL_ARG_DST, LOOM__ONEDNN_SLOT_IN0, 0},
                                          {DNNL_ARG_DIFF_DST, LOOM__ONEDNN_SLOT_IN0 + 1, 0},
                                          {DNNL_ARG_DIFF_SRC, LOOM__ONEDNN_SLOT_OUT, 0}};
        ls = loom__onednn_add_step(call, prog, bpd, 3, args);
    }
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    return ls;
}

loom_status loom__onednn_softmax(const loom__kcall *call)
{
    softmax_params p;
    if (!softmax_params_of(call, &p))
        return loom__onednn_error(call, "checking the arguments", dnnl_invalid_arguments);
    loom__onednn_key key;
    loom__onednn_key_init(&key, call, 0);
    loom__onednn_key_add(&key, &p, sizeof p);
    return loom__onednn_run(call, &key, softmax_build, &p);
}
