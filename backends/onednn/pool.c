/*
 * backends/onednn/pool.c - MAX_POOL2D, AVG_POOL2D (forward_inference) and
 * their backward ops, on plain nchw or, when every data input arrives in
 * one blocked layout and the output may stay in it, on that layout (where
 * oneDNN's pooling is JIT code; on nchw it is plain C++). Mixed layouts are
 * converted to plain by graph/ (pooling is memory bound: a reorder inside
 * would cost as much as the op).
 *
 * What oneDNN computes differently from kernels.h, and so is left to ref
 * (supports() rejects it):
 *   - avg pooling with count_include_pad where a window overflows past
 *     H + pad (ceil_mode): oneDNN's avg_include_padding divides every window
 *     by KH*KW, PyTorch by the window clipped to [-pad, H+pad);
 *   - adaptive pooling whose input size is not a multiple of the output size
 *     (the windows then vary in size); divisible ones are plain pooling with
 *     kernel = stride = H/OH;
 *   - max pooling over inputs holding NaN (oneDNN skips NaN, PyTorch
 *     propagates it) or -inf (an all -inf window gives -FLT_MAX); supports()
 *     scans x for them (one read of x);
 *   - windows with no input element (ceil_mode and padding keep every
 *     window non-empty for shapes ops/ produces; checked anyway).
 * Ties: oneDNN's workspace records the first maximum in row-major order,
 * as PyTorch (and kernels.h) does.
 *
 * MAX_POOL2D_BWD gets dy and x, not the forward's argmax, so the program
 * recomputes the forward (forward_training, into a temporary y and the
 * workspace, u8 indices for small windows) and then runs the backward
 * primitive: about twice the forward's memory traffic plus a temporary of
 * numel(y) * (4 + workspace element) bytes per thread.
 */
#include "config.h"

#include <string.h>

#include "backends/onednn/onednn.h"

typedef struct pool_params {
    int64_t N, C, H, W, OH, OW;
    int64_t kernel[2], stride[2], dil[2], pad_l[2], pad_r[2];
    int32_t alg;
    int32_t layout; /* of every data input and the output */
} pool_params;

static bool pool_params_of(const loom__kcall *call, pool_params *p)
{
    memset(p, 0, sizeof *p);
    const loom__attrs *a = call->attrs;
    if (!a) return false;
    const loom__tview *x, *y;
    bool max = false;
    switch (call->op) {
    case LOOM_OP_MAX_POOL2D:
        max = true; /* fall through */
    case LOOM_OP_AVG_POOL2D:
        if (call->n_in != 1) return false;
        x = &call->in[0], y = &call->out;
        break;
    case LOOM_OP_MAX_POOL2D_BWD:
        if (call->n_in != 2) return false;
        max = true;
        y = &call->in[0], x = &call->in[1];
        if (!(call->out.ndim == 4 && loom__onednn_plain_f32(&call->out))) return false;
        for (int d = 0; d < 4; d++)
            if (call->out.shape[d] != x->shape[d]) return false;
        break;
    case LOOM_OP_AVG_POOL2D_BWD:
        if (call->n_in != 1) return false;
        y = &call->in[0], x = &call->out;
        break;
    default: return false;
    }
    if (x->ndim != 4 || y->ndim != 4 || !loom__onednn_plain_f32(x) || !loom__onednn_plain_f32(y)) return false;
    p->layout = call->in[0].layout;
    for (int i = 0; i < call->n_in; i++)
        if (call->in[i].layout != p->layout || !loom__onednn_layout_ok(&call->in[i])) return false;
    if (p->layout != LOOM__LAYOUT_PLAIN && !call->out_layout) return false;
    if (x->shape[0] != y->shape[0] || x->shape[1] != y->shape[1]) return false;
    p->N = x->shape[0], p->C = x->shape[1], p->H = x->shape[2], p->W = x->shape[3];
    p->OH = y->shape[2], p->OW = y->shape[3];
    const int64_t in[2] = {p->H, p->W}, out[2] = {p->OH, p->OW};
    bool overflow = false;
    for (int i = 0; i < 2; i++) {
        int64_t k, s, pad;
        if (a->pool.adaptive) {
            if (in[i] % out[i]) return false;
            k = s = in[i] / out[i];
            pad = 0;
        } else {
            k = a->pool.kernel[i], s = a->pool.stride[i], pad = a->pool.pad[i];
            if (k < 1 || s < 1 || pad < 0) return false;
        }
        /* Right padding that reproduces the output size: the symmetric
         * one in floor mode, more in ceil mode. */
        int64_t pr = pad;
        if (in[i] + pad + pr < k || (in[i] + pad + pr - k) / s + 1 != out[i]) pr = (out[i] - 1) * s + k - in[i] - pad;
        if (pr < 0 || in[i] + pad + pr < k || (in[i] + pad + pr - k) / s + 1 != out[i]) return false;
        /* Every window must hold an input element. */
        if (k - 1 - pad < 0 || (out[i] - 1) * s - pad > in[i] - 1) return false;
        if (pr > pad) overflow = true;
        p->kernel[i] = k, p->stride[i] = s, p->pad_l[i] = pad, p->pad_r[i] = pr;
    }
    if (max) {
        p->alg = dnnl_pooling_max;
    } else if (a->pool.count_include_pad && !a->pool.adaptive) {
        if (overflow) return false;
        p->alg = dnnl_pooling_avg_include_padding;
    } else {
        p->alg = dnnl_pooling_avg_exclude_padding;
    }
    return true;
}

bool loom__onednn_pool_supports(const loom__kcall *call)
{
    pool_params p;
    if (!loom__onednn_available() || !pool_params_of(call, &p)) return false;
    if (p.alg == dnnl_pooling_max) {
        const loom__tview *x = call->op == LOOM_OP_MAX_POOL2D ? &call->in[0] : &call->in[1];
        if (loom__onednn_has_nonfinite(x->data, loom__tview_numel(x), true, false)) return false;
    }
    return true;
}

static loom_status pool_build(const loom__kcall *call, const void *params, loom__onednn_prim *prog)
{
    const pool_params *p = params;
    const dnnl_dims_t xd = {p->N, p->C, p->H, p->W}, yd = {p->N, p->C, p->OH, p->OW};
    const dnnl_format_tag_t tag = p->layout == LOOM__LAYOUT_NCHW8C    ? dnnl_nChw8c
                                  : p->layout == LOOM__LAYOUT_NCHW16C ? dnnl_nChw16c
                                                                      : dnnl_nchw;
    dnnl_memory_desc_t x, y;
    dnnl_status_t st = dnnl_memory_desc_init_by_tag(&x, 4, xd, dnnl_f32, tag);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&y, 4, yd, dnnl_f32, tag);
    prog->out_layout = p->layout;
    if (st != dnnl_success) return loom__onednn_error(call, "dnnl_memory_desc_init_by_tag", st);
    dnnl_primitive_attr_t attr = loom__onednn_attr(call, false);
    if (!attr) return loom_last_status();

    /* The API takes DNNL_MAX_NDIMS-long arrays. */
    const dnnl_dims_t stride = {p->stride[0], p->stride[1]}, kernel = {p->kernel[0], p->kernel[1]},
                      dil = {p->dil[0], p->dil[1]}, pad_l = {p->pad_l[0], p->pad_l[1]},
                      pad_r = {p->pad_r[0], p->pad_r[1]};
    const bool fwd = call->op == LOOM_OP_MAX_POOL2D || call->op == LOOM_OP_AVG_POOL2D;
    dnnl_pooling_v2_desc_t fdesc, bdesc;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    const char *what = "dnnl_pooling_v2_forward_desc_init";
    st = dnnl_pooling_v2_forward_desc_init(&fdesc, fwd ? dnnl_forward_inference : dnnl_forward_training,
                                           (dnnl_alg_kind_t)p->alg, &x, &y, stride, kernel, dil, pad_l, pad_r);
    if (st == dnnl_success) {
        what = "dnnl_primitive_desc_create";
        st = dnnl_primitive_desc_create(&fpd, &fdesc, attr, loom__onednn_engine(), NULL);
    }
    if (st == dnnl_success && !fwd) {
        what = "dnnl_pooling_v2_backward_desc_init";
        st = dnnl_pooling_v2_backward_desc_init(&bdesc, (dnnl_alg_kind_t)p->alg, &x, &y, stride, kernel, dil,
                                                pad_l, pad_r);
        if (st == dnnl_success) {
            what = "dnnl_primitive_desc_create";
            st = dnnl_primitive_desc_create(&bpd, &bdesc, attr, loom__onednn_engine(), fpd);
        }
    }
    dnnl_primitive_attr_destroy(attr);
    loom_status ls = LOOM_OK;
    if (st != dnnl_success) {
        ls = loom__onednn_error(call, what, st);
    } else if (fwd) {
        const loom__onednn_arg args[2] = {{DNNL_ARG_SRC, LOOM__ONEDNN_SLOT_IN0, 0},
                                          {DNNL_ARG_DST, LOOM__ONEDNN_SLOT_OUT, 0}};
        ls = loom__onednn_add_step(call, prog, fpd, 2, args);
    } else if (call->op == LOOM_OP_AVG_POOL2D_BWD) {
        const loom__onednn_arg args[2] = {{DNNL_ARG_DIFF_DST, LOOM__ONEDNN_SLOT_IN0, 0},
                                          {DNNL_ARG_DIFF_SRC, LOOM__ONEDNN_SLOT_OUT, 0}};
        ls = loom__onednn_add_step(call, prog, bpd, 2, args);
    } else {
        /* Max: recompute the forward with its workspace, then backward. */
        const dnnl_memory_desc_t *ws = dnnl_primitive_desc_query_md(fpd, dnnl_query_workspace_md, 0);
        if (!ws || ws->ndims == 0) {
            ls = loom__onednn_error(call, "querying the max-pooling workspace", dnnl_unimplemented);
            goto done;
        }
        const int yslot = loom__onednn_add_tmp(prog, dnnl_memory_desc_get_size(&y));
        const int wslot = loom__onednn_add_tmp(prog, dnnl_memory_desc_get_size(ws));
        const loom__onednn_arg fargs[3] = {{DNNL_ARG_SRC, LOOM__ONEDNN_SLOT_IN0 + 1, 0},
                                           {DNNL_ARG_DST, yslot, 0},
                                           {DNNL_ARG_WORKSPACE, wslot, 0}};
        const loom__onednn_arg bargs[3] = {{DNNL_ARG_DIFF_DST, LOOM__ONEDNN_SLOT_IN0, 0},
                                           {DNNL_ARG_WORKSPACE, wslot, 0},
                                           {DNNL_ARG_DIFF_SRC, LOOM__ONEDNN_SLOT_OUT, 0}};
        ls = loom__onednn_add_step(call, prog, fpd, 3, fargs);
        prog->main_step = 1;
        if (ls == LOOM_OK) ls = loom__onednn_add_step(call, prog, bpd, 3, bargs);
    }
done:
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    return ls;
}

loom_status loom__onednn_pool(const loom__kcall *call)
{
    pool_params p;
    if (!pool_params_of(call, &p))
        return loom__onednn_error(call, "checking the arguments", dnnl_invalid_arguments);
    loom__onednn_key key;
    loom__onednn_key_init(&key, call, 0);
    loom__onednn_key_add(&key, &p, sizeof p);
    return loom__onednn_run(call, &key, pool_build, &p);
}
