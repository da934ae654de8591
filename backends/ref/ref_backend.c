/*
 * backends/ref/ref_backend.c - the portable C backend's kernel table.
 *
 * The ref backend has a kernel for every compute op, so the registry can
 * always fall back to it. Views (LOOM_OP_VIEW_*) and leaves (LOOM_OP_NONE)
 * compute nothing and have no entry. `supports` is NULL everywhere: each
 * kernel accepts every call of its op and reports unsupported dtypes itself,
 * with a message naming the op and dtype.
 */
#include <stddef.h>

#include "backends/ref/ref.h"

static const loom__kernel ref_kernels[] = {
    [LOOM_OP_COPY] = {NULL, loom__ref_copy},
    [LOOM_OP_CAST] = {NULL, loom__ref_copy},

    [LOOM_OP_ADD] = {NULL, loom__ref_binary},
    [LOOM_OP_SUB] = {NULL, loom__ref_binary},
    [LOOM_OP_MUL] = {NULL, loom__ref_binary},
    [LOOM_OP_DIV] = {NULL, loom__ref_binary},
    [LOOM_OP_POW] = {NULL, loom__ref_binary},
    [LOOM_OP_MAXIMUM] = {NULL, loom__ref_binary},
    [LOOM_OP_MINIMUM] = {NULL, loom__ref_binary},
    [LOOM_OP_EQ] = {NULL, loom__ref_compare},
    [LOOM_OP_NE] = {NULL, loom__ref_compare},
    [LOOM_OP_GT] = {NULL, loom__ref_compare},
    [LOOM_OP_GE] = {NULL, loom__ref_compare},
    [LOOM_OP_LT] = {NULL, loom__ref_compare},
    [LOOM_OP_LE] = {NULL, loom__ref_compare},
    [LOOM_OP_WHERE] = {NULL, loom__ref_where},

    [LOOM_OP_NEG] = {NULL, loom__ref_unary},
    [LOOM_OP_ABS] = {NULL, loom__ref_unary},
    [LOOM_OP_EXP] = {NULL, loom__ref_unary},
    [LOOM_OP_LOG] = {NULL, loom__ref_unary},
    [LOOM_OP_SQRT] = {NULL, loom__ref_unary},
    [LOOM_OP_SIN] = {NULL, loom__ref_unary},
    [LOOM_OP_COS] = {NULL, loom__ref_unary},
    [LOOM_OP_TANH] = {NULL, loom__ref_unary},
    [LOOM_OP_SIGMOID] = {NULL, loom__ref_unary},
    [LOOM_OP_RELU] = {NULL, loom__ref_unary},
    [LOOM_OP_CLAMP] = {NULL, loom__ref_unary},

    [LOOM_OP_MATMUL] = {NULL, loom__ref_matmul},

    [LOOM_OP_SUM] = {NULL, loom__ref_reduce},
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
    [LOOM_OP_CONV2D_BWD_WEIGHT] = {NULL, loom__ref_conv2d_bwd_weight},
    [LOOM_OP_MAX_POOL2D] = {NULL, loom__ref_max_pool2d},
    [LOOM_OP_MAX_POOL2D_BWD] = {NULL, loom__ref_max_pool2d_bwd},
    [LOOM_OP_AVG_POOL2D] = {NULL, loom__ref_avg_pool2d},
    [LOOM_OP_AVG_POOL2D_BWD] = {NULL, loom__ref_avg_pool2d_bwd},
    [LOOM_OP_BN_STATS] = {NULL, loom__ref_bn_stats},
    [LOOM_OP_BN_FWD] = {NULL, loom__ref_bn_fwd},
    [LOOM_OP_BN_BWD_DATA] = {NULL, loom__ref_bn_bwd_data},
    [LOOM_OP_BN_BWD_PARAMS] = {NULL, loom__ref_bn_bwd_params},
    [LOOM_OP_SOFTMAX] = {NULL, loom__ref_softmax},
    [LOOM_OP_LOG_SOFTMAX] = {NULL, loom__ref_softmax},
    [LOOM_OP_SOFTMAX_BWD] = {NULL, loom__ref_softmax_bwd},
    [LOOM_OP_LOG_SOFTMAX_BWD] = {NULL, loom__ref_softmax_bwd},
    [LOOM_OP_RELU_BWD] = {NULL, loom__ref_relu_bwd},
    [LOOM_OP_ADAM_STEP] = {NULL, loom__ref_adam_step},
    [LOOM_OP_HOST_CALL] = {NULL, loom__ref_host_call},
    [LOOM_OP_LSTM_CELL] = {NULL, loom__ref_lstm_cell},
    [LOOM_OP_LSTM_CELL_BWD] = {NULL, loom__ref_lstm_cell_bwd},
    [LOOM_OP_GRU_CELL] = {NULL, loom__ref_gru_cell},
    [LOOM_OP_GRU_CELL_BWD] = {NULL, loom__ref_gru_cell_bwd},
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
