/*
 * backends/flops.c - the floating-point operations of a kernel call, for
 * GFLOP/s figures (loom_ctx_stats.flops, loom_profile_report, loom bench).
 *
 * Counted as oneDNN's verbose mode and PyTorch's profiler count them: two
 * per multiply-add of the convolutions (forward, backward data and
 * backward weights alike) and matrix products; everything else (elementwise
 * ops, pooling, normalisation, the recurrent gates) counts 0, since it is
 * memory-bound and its "FLOPs" would only blur the figure.
 */
#include "backends/kernel.h"

int64_t loom__kcall_flops(const loom__kcall *call)
{
    switch (call->op) {
    case LOOM_OP_CONV2D:
    case LOOM_OP_CONV2D_BWD_DATA: {
        /* y (or dy) [N, O, OH, OW], w [O, C/g, KH, KW]: each output element
         * is a dot product of C/g * KH * KW. */
        const loom__tview *w = &call->in[1];
        const loom__tview *y = call->op == LOOM_OP_CONV2D ? &call->out : &call->in[0];
        return 2 * loom__tview_numel(y) * w->shape[1] * w->shape[2] * w->shape[3];
    }
    case LOOM_OP_CONV2D_BWD_WEIGHT: {
        /* dw [O, C/g, KH, KW], dy [N, O, OH, OW]: each dw element sums N * OH * OW. */
        const loom__tview *dy = &call->in[1];
        return 2 * loom__tview_numel(&call->out) * dy->shape[0] * dy->shape[2] * dy->shape[3];
    }
    case LOOM_OP_RNN_LAYER:
    case LOOM_OP_RNN_LAYER_BWD: {
        /* Forward: x W_ih^T and h W_hh^T over all steps; backward: twice
         * that for each (the data and the weight gradients). */
        loom__rnn_layout L;
        loom__rnn_layout_call(call, &L);
        const int64_t f = 2 * L.T * L.N * L.G * L.H * (L.I + L.H);
        return call->op == LOOM_OP_RNN_LAYER ? f : 2 * f;
    }
    case LOOM_OP_MATMUL: {
        /* out [..., M, N] = a [..., M, K] b [..., K, N] (1-D operands
         * promoted): K is a's last dim. */
        const loom__tview *a = &call->in[0];
        return a->ndim ? 2 * loom__tview_numel(&call->out) * a->shape[a->ndim - 1] : 0;
    }
    default:
        return 0;
    }
}
