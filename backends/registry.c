/*
 * backends/registry.c - the ordered list of backends, and op names.
 *
 * For each node the registry asks the backends in priority order and takes
 * the first whose kernel accepts the call. The portable C backend comes last
 * and accepts everything it implements, so it is the fallback for cases a
 * faster backend rejects. The oneDNN backend, when built, goes in front.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "backends/ref/ref.h"
#ifdef LOOM_HAVE_ONEDNN
#include "backends/onednn/onednn.h"
#endif
#include "backends/registry.h"
#include "runtime/error.h"

static const char *const op_names[] = {
    [LOOM_OP_NONE] = "leaf",
    [LOOM_OP_VIEW_RESHAPE] = "reshape",
    [LOOM_OP_VIEW_PERMUTE] = "permute",
    [LOOM_OP_VIEW_SLICE] = "slice",
    [LOOM_OP_VIEW_EXPAND] = "expand",
    [LOOM_OP_VIEW_ALIAS] = "alias",
    [LOOM_OP_COPY] = "contiguous",
    [LOOM_OP_CAST] = "to_dtype",
    [LOOM_OP_ADD] = "add",
    [LOOM_OP_SUB] = "sub",
    [LOOM_OP_MUL] = "mul",
    [LOOM_OP_DIV] = "div",
    [LOOM_OP_POW] = "pow",
    [LOOM_OP_MAXIMUM] = "maximum",
    [LOOM_OP_MINIMUM] = "minimum",
    [LOOM_OP_EQ] = "eq",
    [LOOM_OP_NE] = "ne",
    [LOOM_OP_GT] = "gt",
    [LOOM_OP_GE] = "ge",
    [LOOM_OP_LT] = "lt",
    [LOOM_OP_LE] = "le",
    [LOOM_OP_WHERE] = "where",
    [LOOM_OP_NEG] = "neg",
    [LOOM_OP_ABS] = "abs",
    [LOOM_OP_EXP] = "exp",
    [LOOM_OP_LOG] = "log",
    [LOOM_OP_SQRT] = "sqrt",
    [LOOM_OP_SIN] = "sin",
    [LOOM_OP_COS] = "cos",
    [LOOM_OP_TANH] = "tanh",
    [LOOM_OP_SIGMOID] = "sigmoid",
    [LOOM_OP_RELU] = "relu",
    [LOOM_OP_CLAMP] = "clamp",
    [LOOM_OP_MATMUL] = "matmul",
    [LOOM_OP_SUM] = "sum",
    [LOOM_OP_MEAN] = "mean",
    [LOOM_OP_MAX] = "max",
    [LOOM_OP_MIN] = "min",
    [LOOM_OP_ARGMAX] = "argmax",
    [LOOM_OP_ARGMIN] = "argmin",
    [LOOM_OP_CAT] = "cat",
    [LOOM_OP_INDEX_SELECT] = "index_select",
    [LOOM_OP_GATHER] = "gather",
    [LOOM_OP_SLICE_SCATTER] = "slice_scatter",
    [LOOM_OP_INDEX_ADD] = "index_add",
    [LOOM_OP_SCATTER_ADD] = "scatter_add",
    [LOOM_OP_CONV2D] = "conv2d",
    [LOOM_OP_CONV2D_BWD_DATA] = "conv2d_backward_data",
    [LOOM_OP_CONV2D_BWD_WEIGHT] = "conv2d_backward_weight",
    [LOOM_OP_MAX_POOL2D] = "max_pool2d",
    [LOOM_OP_MAX_POOL2D_BWD] = "max_pool2d_backward",
    [LOOM_OP_AVG_POOL2D] = "avg_pool2d",
    [LOOM_OP_AVG_POOL2D_BWD] = "avg_pool2d_backward",
    [LOOM_OP_BN_STATS] = "batch_norm_stats",
    [LOOM_OP_BN_FWD] = "batch_norm",
    [LOOM_OP_BN_BWD_DATA] = "batch_norm_backward_data",
    [LOOM_OP_BN_BWD_PARAMS] = "batch_norm_backward_params",
    [LOOM_OP_SOFTMAX] = "softmax",
    [LOOM_OP_LOG_SOFTMAX] = "log_softmax",
    [LOOM_OP_SOFTMAX_BWD] = "softmax_backward",
    [LOOM_OP_LOG_SOFTMAX_BWD] = "log_softmax_backward",
    [LOOM_OP_RELU_BWD] = "relu_backward",
    [LOOM_OP_ADAM_STEP] = "adam_step",
    [LOOM_OP_SGD_STEP] = "sgd_step",
    [LOOM_OP_HOST_CALL] = "host_call",
    [LOOM_OP_LSTM_CELL] = "lstm_cell",
    [LOOM_OP_LSTM_CELL_BWD] = "lstm_cell_backward",
    [LOOM_OP_GRU_CELL] = "gru_cell",
    [LOOM_OP_GRU_CELL_BWD] = "gru_cell_backward",
    [LOOM_OP_RNN_LAYER] = "rnn_layer",
    [LOOM_OP_RNN_LAYER_BWD] = "rnn_layer_backward",
};
_Static_assert(sizeof op_names / sizeof op_names[0] == LOOM_OP_COUNT, "an op lacks a name");

const char *loom__op_name(loom__op op)
{
    if ((int)op < 0 || op >= LOOM_OP_COUNT || !op_names[op]) return "?";
    return op_names[op];
}

bool loom__backend_parse(const char *name, loom__backend_choice *out)
{
    if (!name || !*name || strcmp(name, "auto") == 0) {
        *out = LOOM__BACKEND_AUTO;
        return true;
    }
    if (strcmp(name, "ref") == 0) {
        *out = LOOM__BACKEND_REF;
        return true;
    }
    if (strcmp(name, "onednn") == 0) {
        *out = LOOM__BACKEND_ONEDNN;
        return true;
    }
    return false;
}

/* Priority order for LOOM__BACKEND_AUTO. */
static const loom__backend *const auto_order[] = {
#ifdef LOOM_HAVE_ONEDNN
    &loom__onednn_backend,
#endif
    &loom__ref_backend,
};

static const loom__kernel *try_backend(const loom__backend *b, const loom__kcall *call)
{
    const loom__kernel *k = &b->kernels[call->op];
    if (!k->run) return NULL;
    /* Blocked inputs go only to kernels that know layouts (kernel.h). */
    if (!k->layouts && loom__kcall_has_blocked(call)) return NULL;
    if (k->supports && !k->supports(call)) return NULL;
    return k;
}

/* The backends a choice tries, in order. */
static const loom__backend *const *choice_list(loom__backend_choice choice, size_t *n)
{
    static const loom__backend *const ref_only[] = {&loom__ref_backend};
    if (choice == LOOM__BACKEND_REF) {
        *n = 1;
        return ref_only;
    }
#ifdef LOOM_HAVE_ONEDNN
    /* "onednn": oneDNN for every call it computes exactly (auto's table
     * also skips the calls where ref is faster). */
    static const loom__backend *const onednn_first[] = {&loom__onednn_backend_all, &loom__ref_backend};
    if (choice == LOOM__BACKEND_ONEDNN) {
        *n = 2;
        return onednn_first;
    }
#endif
    *n = sizeof auto_order / sizeof auto_order[0];
    return auto_order;
}

const loom__kernel *loom__registry_find(loom__backend_choice choice, const loom__kcall *call,
                                        const char **backend_name)
{
    LOOM_ASSERT(call->op > LOOM_OP_NONE && call->op < LOOM_OP_COUNT);
    size_t n;
    const loom__backend *const *list = choice_list(choice, &n);
    for (size_t i = 0; i < n; i++) {
        const loom__kernel *k = try_backend(list[i], call);
        if (k) {
            if (backend_name) *backend_name = list[i]->name;
            return k;
        }
    }
    return NULL;
}

const loom__kernel *loom__registry_pick(loom__backend_choice choice, const loom__kcall *call,
                                        const char **backend_name)
{
    const loom__kernel *k = loom__registry_find(choice, call, backend_name);
    if (k) return k;
    loom__set_error(LOOM_ERR_BACKEND, "%s: no backend has a kernel for %s inputs of this layout",
                    loom__op_name(call->op), call->n_in ? loom_dtype_name(call->in[0].dtype) : "these");
    return NULL;
}

int64_t loom__registry_aux_floats(loom__backend_choice choice, const loom__kcall *call)
{
    size_t n;
    const loom__backend *const *list = choice_list(choice, &n);
    int64_t most = 0;
    for (size_t i = 0; i < n; i++) {
        const loom__kernel *k = &list[i]->kernels[call->op];
        if (!k->run || !k->aux_floats) continue;
        const int64_t f = k->aux_floats(call);
        if (f > most) most = f;
    }
    return most;
}

bool loom__registry_onednn_conv(char *buf, size_t size)
{
#ifdef LOOM_HAVE_ONEDNN
    static const char *const layout[] = {"auto (blocked; 1x1 on plain data stays plain)", "plain (NCHW)",
                                         "blocked"};
    const int l = loom__onednn_conv_layout(), a = loom__onednn_conv_algo();
    const char *algo = a == LOOM__ONEDNN_ALGO_DIRECT     ? "direct"
                       : a == LOOM__ONEDNN_ALGO_WINOGRAD ? "winograd (3x3 stride 1, where oneDNN has it)"
                       : loom__onednn_isa_avx512()       ? "auto (Winograd for 3x3 stride-1 layers with enough tiles)"
                                                         : "auto (direct: no AVX-512, so no Winograd kernels)";
    snprintf(buf, size, "layout %s, algorithm %s", layout[l >= 0 && l < 3 ? l : 0], algo);
    return true;
#else
    (void)buf;
    (void)size;
    return false;
#endif
}

const char *loom__registry_onednn_isa(void)
{
#ifdef LOOM_HAVE_ONEDNN
    return loom__onednn_isa_name();
#else
    return NULL;
#endif
}
