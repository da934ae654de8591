/*
 * ops/softmax.c - softmax and log_softmax as single ops
 * (torch.softmax / torch.log_softmax), with their backward ops.
 *
 * One node each, rather than a max/sub/exp/sum/div chain: fewer nodes, one
 * pass over the data, and oneDNN has primitives for both directions. The
 * backward reads the op's output y, not its input:
 *   softmax:     dx = y * (dy - sum(dy * y))
 *   log_softmax: dx = dy - exp(y) * sum(dy)
 */
#include <string.h>

#include "backends/registry.h"
#include "ops/cnn_common.h"

static loom_tensor *softmax_impl(const char *op, loom__op kop, loom_tensor *t, int dim)
{
    if (!loom__check_inputs(op, 1, &t)) return NULL;
    if (t->dtype != LOOM_FLOAT32) {
        loom__set_error(LOOM_ERR_DTYPE, "%s: input must be float32, got %s", op, loom_dtype_name(t->dtype));
        return NULL;
    }
    int d;
    if (loom__norm_dim(op, dim, t->ndim, &d) != LOOM_OK) return NULL;
    if (t->ndim == 0) {
        /* A 0-dim tensor: one element along a dim of 1. */
        loom_tensor *u = loom_unsqueeze(t, 0);
        loom_tensor *r = u ? softmax_impl(op, kop, u, 0) : NULL;
        loom_tensor *out = r ? loom_squeeze(r, 0) : NULL;
        loom__drop_temp(r, NULL);
        loom__drop_temp(u, NULL);
        return out;
    }
    loom__attrs a;
    memset(&a, 0, sizeof a);
    a.axis.dim = d;
    return loom__record_contig(kop, &a, 1, &t, t->ndim, t->shape);
}

loom_tensor *loom_softmax(loom_tensor *t, int dim) { return softmax_impl("softmax", LOOM_OP_SOFTMAX, t, dim); }

loom_tensor *loom_log_softmax(loom_tensor *t, int dim)
{
    return softmax_impl("log_softmax", LOOM_OP_LOG_SOFTMAX, t, dim);
}

loom_tensor *loom__softmax_bwd(loom__op bwd_op, loom_tensor *y, loom_tensor *dy, const loom__attrs *a)
{
    loom_tensor *in[2] = {y, dy};
    if (!loom__check_inputs(loom__op_name(bwd_op), 2, in)) return NULL;
    return loom__record_contig(bwd_op, a, 2, in, y->ndim, y->shape);
}
