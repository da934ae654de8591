/*
 * backends/ref/ref_backend.c - the portable C backend's kernel table.
 *
 * The ref backend has a kernel for every compute op, so the registry can
 * always fall back to it. Views (LOOM_OP_VIEW_*) and leaves (LOOM_OP_NONE)
 * compute nothing and have no entry. Each kernel accepts every plain call of
 * its op and reports unsupported dtypes itself, with a message naming the op
 * and dtype; `supports` is NULL except for the elementwise ops that also
 * take blocked inputs (same_layout below).
 */
#include <stddef.h>

#include "backends/ref/ref.h"

/* Elementwise ops on blocked inputs (backends/kernel.h): every input has
 * the output's shape and one blocked layout, so the kernels, which walk
 * same-shape contiguous views flat, compute the same values in that layout
 * and the output keeps it. Anything else blocked (broadcasting, mixed
 * layouts) is converted to plain by graph/ first. */
static bool same_layout(const loom__kcall *call)
{
    if (!loom__kcall_has_blocked(call)) return true;
    const int layout = call->in[0].layout;
    if (layout <= LOOM__LAYOUT_PLAIN || !call->out_layout || call->out.dtype != LOOM_FLOAT32) return false;
    for (int i = 0; i < call->n_in; i++) {
        const loom__tview *v = &call->in[i];
        if (v->layout != layout || v->dtype != LOOM_FLOAT32 || v->ndim != call->out.ndim) return false;
        for (int d = 0; d < v->ndim; d++)
            if (v->shape[d] != call->out.shape[d]) return false;
    }
    return true;
}

static loom_status keep_layout(const loom__kcall *call, loom_status st)
{
    if (st == LOOM_OK && call->out_layout && loom__kcall_has_blocked(call)) *call->out_layout = call->in[0].layout;
    return st;
}

static loom_status binary_l(const loom__kcall *call) { return keep_layout(call, loom__ref_binary(call)); }
static loom_status unary_l(const loom__kcall *call) { return keep_layout(call, loom__ref_unary(call)); }
static loom_status relu_bwd_l(const loom__kcall *call) { return keep_layout(call, loom__ref_relu_bwd(call)); }

/* Batch norm (backends/ref/norm.c) reads x and dy in one layout, plain or
 * blocked, and writes y / dx in it; statistics and parameters are plain. */
static bool bn_layout(const loom__kcall *call)
{
    const int l = call->in[0].layout;
    if (l == LOOM__LAYOUT_PLAIN) return !loom__kcall_has_blocked(call);
    if ((l != LOOM__LAYOUT_NCHW8C && l != LOOM__LAYOUT_NCHW16C) || call->in[0].ndim != 4 ||
        call->in[0].shape[1] % loom__layout_block(l))
        return false;
    const int ndata = call->op == LOOM_OP_BN_STATS || call->op == LOOM_OP_BN_FWD ? 1 : 2;
    const int mask = loom__bn_mask_input(call); /* a fused ReLU's y: like x */
    for (int i = 1; i < call->n_in; i++)
        if (call->in[i].layout != (i < ndata || i == mask ? l : LOOM__LAYOUT_PLAIN)) return false;
    const bool writes_data = call->op == LOOM_OP_BN_FWD || call->op == LOOM_OP_BN_BWD_DATA;
    return !writes_data || call->out_layout;
}

static loom_status bn_fwd_l(const loom__kcall *call) { return keep_layout(call, loom__ref_bn_fwd(call)); }
static loom_status bn_bwd_data_l(const loom__kcall *call) { return keep_layout(call, loom__ref_bn_bwd_data(call)); }

static bool pool_layout(const loom__kcall *call)
{
    return !loom__kcall_has_blocked(call) || loom__ref_pool_blocked_ok(call);
}

static loom_status max_pool_l(const loom__kcall *call) { return keep_layout(call, loom__ref_max_pool2d(call)); }
static loom_status max_pool_bwd_l(const loom__kcall *call)
{
    return keep_layout(call, loom__ref_max_pool2d_bwd(call));
}

static bool sum_layout(const loom__kcall *call)
{
    return !loom__kcall_has_blocked(call) || loom__ref_sum_blocked_ok(call);
}

static loom_status sum_l(const loom__kcall *call)
{
    return loom__kcall_has_blocked(call) ? loom__ref_sum_blocked(call) : loom__ref_reduce(call);
}

static const loom__kernel ref_kernels[] = {
    [LOOM_OP_COPY] = {NULL, loom__ref_copy},
    [LOOM_OP_CAST] = {NULL, loom__ref_copy},

    [LOOM_OP_ADD] = {same_layout, binary_l, false, true},
    [LOOM_OP_SUB] = {same_layout, binary_l, false, true},
    [LOOM_OP_MUL] = {same_layout, binary_l, false, true},
    [LOOM_OP_DIV] = {same_layout, binary_l, false, true},
    [LOOM_OP_POW] = {same_layout, binary_l, false, true},
    [LOOM_OP_MAXIMUM] = {same_layout, binary_l, false, true},
    [LOOM_OP_MINIMUM] = {same_layout, binary_l, false, true},
    [LOOM_OP_EQ] = {NULL, loom__ref_compare},
    [LOOM_OP_NE] = {NULL, loom__ref_compare},
    [LOOM_OP_GT] = {NULL, loom__ref_compare},
    [LOOM_OP_GE] = {NULL, loom__ref_compare},
    [LOOM_OP_LT] = {NULL, loom__ref_compare},
    [LOOM_OP_LE] = {NULL, loom__ref_compare},
    [LOOM_OP_WHERE] = {NULL, loom__ref_where},

    [LOOM_OP_NEG] = {same_layout, unary_l, false, true},
    [LOOM_OP_ABS] = {same_layout, unary_l, false, true},
    [LOOM_OP_EXP] = {same_layout, unary_l, false, true},
    [LOOM_OP_LOG] = {same_layout, unary_l, false, true},
    [LOOM_OP_SQRT] = {same_layout, unary_l, false, true},
    [LOOM_OP_SIN] = {same_layout, unary_l, false, true},
    [LOOM_OP_COS] = {same_layout, unary_l, false, true},
    [LOOM_OP_TANH] = {same_layout, unary_l, false, true},
    [LOOM_OP_SIGMOID] = {same_layout, unary_l, false, true},
    [LOOM_OP_RELU] = {same_layout, unary_l, false, true},
    [LOOM_OP_CLAMP] = {same_layout, unary_l, false, true},

    [LOOM_OP_MATMUL] = {NULL, loom__ref_matmul},

    [LOOM_OP_SUM] = {sum_layout, sum_l, false, true},
    [LOOM_OP_MEAN] = {NULL, loom__ref_reduce},
    [LOOM_OP_MAX] = {NULL, loom__ref_reduce},
    [LOOM_OP_MIN] = {NULL, loom__ref_reduce},
    [LOOM_OP_ARGMAX] = {NULL, loom__ref_reduce},
    [LOOM_OP_ARGMIN] = {NULL, loom__ref_reduce},

    [LOOM_OP_CAT] = {NULL, loom__ref_cat},
    [LOOM_OP_INDEX_SELECT] = {NULL, loom__ref_index_select},
    [LOOM_OP_GATHER] = {NULL, loom__ref_gather},
    [LOOM_OP_SLICE_SCATTER] = {NULL, loom__ref_slice_scatter},
    [LOOM_OP_INDEX_ADD] = {NULL, loom__ref_index_add},
    [LOOM_OP_SCATTER_ADD] = {NULL, loom__ref_scatter_add},

    [LOOM_OP_CONV2D] = {NULL, loom__ref_conv2d},
    [LOOM_OP_CONV2D_BWD_DATA] = {NULL, loom__ref_conv2d_bwd_data},
    [LOOM_OP_CONV2D_BWD_WEIGHT] = {loom__ref_conv_bwd_weight_layouts_ok, loom__ref_conv2d_bwd_weight, false, true},
    [LOOM_OP_MAX_POOL2D] = {pool_layout, max_pool_l, false, true},
    [LOOM_OP_MAX_POOL2D_BWD] = {pool_layout, max_pool_bwd_l, false, true},
    [LOOM_OP_AVG_POOL2D] = {NULL, loom__ref_avg_pool2d},
    [LOOM_OP_AVG_POOL2D_BWD] = {NULL, loom__ref_avg_pool2d_bwd},
    [LOOM_OP_BN_STATS] = {bn_layout, loom__ref_bn_stats, false, true},
    [LOOM_OP_BN_FWD] = {bn_layout, bn_fwd_l, false, true},
    [LOOM_OP_BN_BWD_DATA] = {bn_layout, bn_bwd_data_l, false, true},
    [LOOM_OP_BN_BWD_PARAMS] = {bn_layout, loom__ref_bn_bwd_params, false, true},
    [LOOM_OP_SOFTMAX] = {NULL, loom__ref_softmax},
    [LOOM_OP_LOG_SOFTMAX] = {NULL, loom__ref_softmax},
    [LOOM_OP_SOFTMAX_BWD] = {NULL, loom__ref_softmax_bwd},
    [LOOM_OP_LOG_SOFTMAX_BWD] = {NULL, loom__ref_softmax_bwd},
    [LOOM_OP_RELU_BWD] = {same_layout, relu_bwd_l, false, true},
    [LOOM_OP_ADAM_STEP] = {NULL, loom__ref_adam_step},
    [LOOM_OP_SGD_STEP] = {NULL, loom__ref_sgd_step},
    [LOOM_OP_HOST_CALL] = {NULL, loom__ref_host_call},
    [LOOM_OP_LSTM_CELL] = {NULL, loom__ref_lstm_cell},
    [LOOM_OP_LSTM_CELL_BWD] = {NULL, loom__ref_lstm_cell_bwd},
    [LOOM_OP_GRU_CELL] = {NULL, loom__ref_gru_cell},
    [LOOM_OP_GRU_CELL_BWD] = {NULL, loom__ref_gru_cell_bwd},
    [LOOM_OP_RNN_LAYER] = {NULL, loom__ref_rnn_layer, .aux_floats = loom__ref_rnn_layer_aux},
    [LOOM_OP_RNN_LAYER_BWD] = {NULL, loom__ref_rnn_layer_bwd},
};

/* The table's size comes from its last entry: an op added after GRU_CELL_BWD
 * without a kernel here (or the table outgrowing the enum) stops the build.
 * An op added in the middle still gets a {NULL, NULL} slot, which the
 * registry reports as "no kernel", and the test over all ops catches. */
_Static_assert(sizeof ref_kernels / sizeof ref_kernels[0] == LOOM_OP_COUNT,
               "ref_kernels must have one entry per loom__op");

const loom__backend loom__ref_backend = {
    .name = "ref",
    .kernels = ref_kernels,
};
