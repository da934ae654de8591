/*
 * ops/grad.c - the gradient rule of every differentiable op.
 *
 * A rule receives the node's output t and g = dL/dt (t's shape) and records,
 * as ordinary lazy ops, dL/d input for each input that requires grad. The
 * backward pass is therefore a DAG like the forward one, run by the same
 * machinery. Grad mode is off while rules run (no double backward).
 *
 * Shapes are simple because of the kernel contract: a binary op's inputs
 * already have the output's shape (broadcasting was recorded as expand
 * views), so broadcast dims are reduced by expand's own rule, a sum.
 */
#include <math.h>
#include <string.h>

#include "backends/registry.h"
#include "ops/ops_internal.h"

bool loom__op_differentiable(loom__op op)
{
    switch (op) {
    case LOOM_OP_NONE:
    case LOOM_OP_EQ:
    case LOOM_OP_NE:
    case LOOM_OP_GT:
    case LOOM_OP_GE:
    case LOOM_OP_LT:
    case LOOM_OP_LE:
    case LOOM_OP_ARGMAX:
    case LOOM_OP_ARGMIN:
    case LOOM_OP_BN_STATS: /* BN_FWD's rule covers the statistics */
    /* Backward ops: no double backward. */
    case LOOM_OP_CONV2D_BWD_DATA:
    case LOOM_OP_CONV2D_BWD_WEIGHT:
    case LOOM_OP_MAX_POOL2D_BWD:
    case LOOM_OP_AVG_POOL2D_BWD:
    case LOOM_OP_BN_BWD_DATA:
    case LOOM_OP_BN_BWD_PARAMS:
    case LOOM_OP_SOFTMAX_BWD:
    case LOOM_OP_LOG_SOFTMAX_BWD:
    case LOOM_OP_RELU_BWD:
    case LOOM_OP_ADAM_STEP:
    case LOOM_OP_SGD_STEP:
    case LOOM_OP_HOST_CALL:
    case LOOM_OP_LSTM_CELL_BWD:
    case LOOM_OP_GRU_CELL_BWD:
    case LOOM_OP_RNN_LAYER_BWD: return false;
    default: return true;
    }
}

/* A float32 scalar in t's context. */
static loom_tensor *num(const loom_tensor *t, double v) { return t ? loom_scalar(t->ctx, LOOM_FLOAT32, v) : NULL; }

/* where(mask, x, 0). */
static loom_tensor *masked(loom_tensor *mask, loom_tensor *x)
{
    return mask && x ? loom_where(mask, x, num(x, 0.0)) : NULL; /* NULL keeps the sub-op's error */
}

static bool need(const loom_tensor *t, int i) { return t->node.in[i]->requires_grad; }

/* Sums g (shape `from`) down to `to`, the shape of an input that was
 * broadcast to `from`: the leading dims and the dims of size 1 that grew. */
static loom_tensor *sum_to(loom_tensor *g, int ndim, const int64_t *to)
{
    int lead = g->ndim - ndim;
    int dims[LOOM_MAX_DIMS], nd = 0;
    for (int d = 0; d < g->ndim; d++)
        if (d < lead || (to[d - lead] == 1 && g->shape[d] != 1)) dims[nd++] = d;
    if (nd == 0) return loom_reshape(g, ndim, to);
    return loom_reshape(loom_sum(g, nd, dims, true), ndim, to);
}

static loom_status binary_rule(loom_tensor *t, loom_tensor *g, loom_tensor **gin)
{
    loom_tensor *a = t->node.in[0], *b = t->node.in[1];
    switch (t->node.op) {
    case LOOM_OP_ADD:
        if (t->node.attrs.add.relu) { /* loom_add_relu: mask by the output first */
            loom_tensor *gm = loom__relu_bwd(t, g);
            if (need(t, 0)) gin[0] = loom_alias(gm);
            if (need(t, 1)) gin[1] = loom_alias(gm);
            loom__drop(gm);
            break;
        }
        if (need(t, 0)) gin[0] = loom_alias(g);
        if (need(t, 1)) gin[1] = loom_alias(g);
        break;
    case LOOM_OP_SUB:
        if (need(t, 0)) gin[0] = loom_alias(g);
        if (need(t, 1)) gin[1] = loom_neg(g);
        break;
    case LOOM_OP_MUL:
        if (need(t, 0)) gin[0] = loom_mul(g, b);
        if (need(t, 1)) gin[1] = loom_mul(g, a);
        break;
    case LOOM_OP_DIV:
        if (need(t, 0)) gin[0] = loom_div(g, b);
        if (need(t, 1)) gin[1] = loom_neg(loom_div(loom_mul(g, a), loom_mul(b, b)));
        break;
    case LOOM_OP_POW:
        /* d a^b / da = b a^(b-1), taken as 0 where b == 0 (else 0 * inf at
         * a == 0); d/db = a^b log a, taken as 0 where a == 0 (PyTorch's
         * conventions, which avoid 0 * -inf). */
        if (need(t, 0))
            gin[0] = masked(loom_ne(b, num(b, 0.0)), loom_mul(g, loom_mul(b, loom_pow(a, loom_sub_scalar(b, 1.0)))));
        if (need(t, 1))
            gin[1] = masked(loom_ne(a, num(a, 0.0)), loom_mul(g, loom_mul(t, loom_log(a))));
        break;
    case LOOM_OP_MAXIMUM:
    case LOOM_OP_MINIMUM: {
        /* The larger (smaller) input takes the gradient; ties split it. */
        loom_tensor *win = t->node.op == LOOM_OP_MAXIMUM ? loom_gt(a, b) : loom_lt(a, b);
        loom_tensor *lose = t->node.op == LOOM_OP_MAXIMUM ? loom_lt(a, b) : loom_gt(a, b);
        loom_tensor *half = loom_mul_scalar(g, 0.5);
        loom_tensor *tie = masked(loom_eq(a, b), half);
        if (need(t, 0)) gin[0] = loom_where(win, g, tie);
        if (need(t, 1)) gin[1] = loom_where(lose, g, tie);
        break;
    }
    case LOOM_OP_WHERE: {
        loom_tensor *c = t->node.in[0];
        loom_tensor *zero = num(g, 0.0);
        if (need(t, 1)) gin[1] = loom_where(c, g, zero);
        if (need(t, 2)) gin[2] = loom_where(c, zero, g);
        break;
    }
    default: return loom__set_error(LOOM_ERR_STATE, "backward: no gradient rule for %s", loom__op_name(t->node.op));
    }
    return LOOM_OK;
}

static loom_status unary_rule(loom_tensor *t, loom_tensor *g, loom_tensor **gin)
{
    loom_tensor *a = t->node.in[0];
    loom_tensor *r = NULL;
    switch (t->node.op) {
    case LOOM_OP_NEG: r = loom_neg(g); break;
    case LOOM_OP_ABS: /* sign(a): 0 at 0, as PyTorch */
        r = loom_mul(g, loom_sub(loom_to_dtype(loom_gt(a, num(a, 0)), LOOM_FLOAT32),
                                 loom_to_dtype(loom_lt(a, num(a, 0)), LOOM_FLOAT32)));
        break;
    case LOOM_OP_EXP: r = loom_mul(g, t); break;
    case LOOM_OP_LOG: r = loom_div(g, a); break;
    case LOOM_OP_SQRT: r = loom_div(g, loom_mul_scalar(t, 2.0)); break;
    case LOOM_OP_SIN: r = loom_mul(g, loom_cos(a)); break;
    case LOOM_OP_COS: r = loom_neg(loom_mul(g, loom_sin(a))); break;
    case LOOM_OP_TANH: r = loom_mul(g, loom_sub(num(t, 1.0), loom_mul(t, t))); break;
    case LOOM_OP_SIGMOID: r = loom_mul(g, loom_mul(t, loom_sub(num(t, 1.0), t))); break;
    case LOOM_OP_RELU: r = loom__relu_bwd(t, g); break;
    case LOOM_OP_CLAMP: {
        const loom__attrs *at = &t->node.attrs;
        r = masked(loom_ge(a, num(a, at->clamp.lo)), masked(loom_le(a, num(a, at->clamp.hi)), g));
        break;
    }
    case LOOM_OP_CAST:
    case LOOM_OP_COPY:
    case LOOM_OP_VIEW_ALIAS: r = loom_alias(g); break;
    default: return loom__set_error(LOOM_ERR_STATE, "backward: no gradient rule for %s", loom__op_name(t->node.op));
    }
    gin[0] = r;
    return LOOM_OK;
}

static loom_status reduce_rule(loom_tensor *t, loom_tensor *g, loom_tensor **gin)
{
    loom_tensor *a = t->node.in[0];
    uint32_t mask = t->node.attrs.reduce.mask;
    /* t and g have the keepdim shape: expand them back over a. */
    loom_tensor *ge = loom_expand(g, a->ndim, a->shape);
    switch (t->node.op) {
    case LOOM_OP_SUM: gin[0] = loom_alias(ge); break;
    case LOOM_OP_MEAN: {
        int64_t count = 1;
        for (int d = 0; d < a->ndim; d++)
            if (mask & (1u << d)) count *= a->shape[d];
        gin[0] = loom_mul_scalar(ge, 1.0 / (double)count);
        break;
    }
    case LOOM_OP_MAX:
    case LOOM_OP_MIN: {
        /* Evenly among the elements equal to the extreme (PyTorch's amax). */
        int dims[LOOM_MAX_DIMS], nd = 0;
        for (int d = 0; d < a->ndim; d++)
            if (mask & (1u << d)) dims[nd++] = d;
        loom_tensor *hit = loom_eq(a, loom_expand(t, a->ndim, a->shape));
        loom_tensor *count = nd ? loom_sum(loom_to_dtype(hit, LOOM_FLOAT32), nd, dims, true)
                                : loom_to_dtype(hit, LOOM_FLOAT32);
        gin[0] = masked(hit, loom_div(ge, loom_expand(count, a->ndim, a->shape)));
        break;
    }
    default: return loom__set_error(LOOM_ERR_STATE, "backward: no gradient rule for %s", loom__op_name(t->node.op));
    }
    return LOOM_OK;
}

static loom_status view_rule(loom_tensor *t, loom_tensor *g, loom_tensor **gin)
{
    loom_tensor *a = t->node.in[0];
    const loom__attrs *at = &t->node.attrs;
    switch (t->node.op) {
    case LOOM_OP_VIEW_RESHAPE: gin[0] = loom_reshape(g, a->ndim, a->shape); break;
    case LOOM_OP_VIEW_PERMUTE: {
        int inv[LOOM_MAX_DIMS];
        for (int i = 0; i < t->ndim; i++) inv[at->permute.perm[i]] = i;
        gin[0] = loom_permute(g, t->ndim, inv);
        break;
    }
    case LOOM_OP_VIEW_SLICE: {
        loom_tensor *gs = at->slice.drop_dim ? loom_unsqueeze(g, at->slice.dim) : g;
        gin[0] = loom__slice_scatter(gs, a->ndim, a->shape, at->slice.dim, at->slice.start, at->slice.step);
        break;
    }
    case LOOM_OP_VIEW_EXPAND: gin[0] = sum_to(g, a->ndim, a->shape); break;
    default: return loom__set_error(LOOM_ERR_STATE, "backward: no gradient rule for %s", loom__op_name(t->node.op));
    }
    return LOOM_OK;
}

static loom_status index_rule(loom_tensor *t, loom_tensor *g, loom_tensor **gin)
{
    const loom__attrs *at = &t->node.attrs;
    switch (t->node.op) {
    case LOOM_OP_MATMUL: {
        /* a [.., M, K], b [.., K, N] with equal batch dims. */
        loom_tensor *a = t->node.in[0], *b = t->node.in[1];
        if (need(t, 0)) gin[0] = loom_matmul(g, loom_transpose(b, -1, -2));
        if (need(t, 1)) gin[1] = loom_matmul(loom_transpose(a, -1, -2), g);
        break;
    }
    case LOOM_OP_CAT: {
        int64_t off = 0;
        for (int i = 0; i < t->node.n_in; i++) {
            int64_t len = t->node.in[i]->shape[at->axis.dim];
            if (need(t, i)) gin[i] = loom_slice(g, at->axis.dim, off, off + len, 1);
            off += len;
        }
        break;
    }
    case LOOM_OP_INDEX_SELECT: {
        loom_tensor *src = t->node.in[0], *idx = t->node.in[1];
        if (need(t, 0))
            gin[0] = loom__record(LOOM_OP_INDEX_ADD, at, 2, (loom_tensor *[]){g, idx}, g->dtype, src->ndim,
                                  src->shape);
        break;
    }
    case LOOM_OP_GATHER: {
        loom_tensor *src = t->node.in[0], *idx = t->node.in[1];
        if (need(t, 0))
            gin[0] = loom__record(LOOM_OP_SCATTER_ADD, at, 2, (loom_tensor *[]){g, idx}, g->dtype, src->ndim,
                                  src->shape);
        break;
    }
    case LOOM_OP_SLICE_SCATTER: {
        loom_tensor *src = t->node.in[0];
        if (need(t, 0)) {
            int64_t end = at->slice.start + src->shape[at->slice.dim] * at->slice.step;
            gin[0] = loom_slice(g, at->slice.dim, at->slice.start, end, at->slice.step);
        }
        break;
    }
    case LOOM_OP_INDEX_ADD: {
        if (need(t, 0)) gin[0] = loom_index_select(g, at->axis.dim, t->node.in[1]);
        break;
    }
    case LOOM_OP_SCATTER_ADD: {
        if (need(t, 0)) gin[0] = loom_gather(g, at->axis.dim, t->node.in[1]);
        break;
    }
    default: return loom__set_error(LOOM_ERR_STATE, "backward: no gradient rule for %s", loom__op_name(t->node.op));
    }
    return LOOM_OK;
}

/* Convolution, pooling, batch norm and softmax: each gradient is one or two
 * backward ops (ops/conv.c, pool.c, norm.c, softmax.c). */
static loom_status cnn_rule(loom_tensor *t, loom_tensor *g, loom_tensor **gin)
{
    loom__node *n = &t->node;
    const loom__attrs *at = &n->attrs;
    loom_tensor *x = n->in[0];
    switch (n->op) {
    case LOOM_OP_CONV2D: {
        loom_tensor *w = n->in[1];
        /* A fused ReLU: y > 0 exactly where the convolution was > 0. */
        loom_tensor *gp = at->conv.relu ? loom__relu_bwd(t, g) : g;
        if (need(t, 0)) gin[0] = loom__conv2d_bwd_data(gp, w, at, x->shape);
        if (need(t, 1)) gin[1] = loom__conv2d_bwd_weight(x, gp, at, w->shape);
        if (n->n_in == 3 && need(t, 2)) gin[2] = loom_sum(gp, 3, (int[]){0, 2, 3}, false);
        if (gp != g) loom__drop(gp);
        break;
    }
    case LOOM_OP_MAX_POOL2D:
        if (need(t, 0)) gin[0] = loom__max_pool2d_bwd(g, x, at);
        break;
    case LOOM_OP_AVG_POOL2D:
        if (need(t, 0)) gin[0] = loom__avg_pool2d_bwd(g, at, x->shape);
        break;
    case LOOM_OP_BN_FWD: {
        loom_tensor *stats = n->in[1], *gamma = n->in[2];
        /* A fused ReLU: g counts where y > 0, i.e. where the normalised
         * value was; both halves mask it themselves (no RELU_BWD tensor).
         * The data half takes its sums from the parameters' half when the
         * graph has one, rather than reducing x and g a second time. */
        loom_tensor *y = at->bn.relu ? t : NULL, *p = NULL;
        if (need(t, 2) || need(t, 3)) {
            p = loom__bn_bwd_params(x, g, stats, y, at);
            if (p && need(t, 2)) gin[2] = loom_select(p, 0, 0);
            if (p && need(t, 3)) gin[3] = loom_select(p, 0, 1);
        }
        if (need(t, 0)) gin[0] = loom__bn_bwd_data(x, g, stats, gamma, y, at->bn.training ? p : NULL, at);
        if (p) loom__drop(p);
        if (need(t, 1))
            return loom__set_error(LOOM_ERR_STATE, "backward: batch_norm statistics that require grad are not supported");
        break;
    }
    case LOOM_OP_SOFTMAX:
        if (need(t, 0)) gin[0] = loom__softmax_bwd(LOOM_OP_SOFTMAX_BWD, t, g, at);
        break;
    case LOOM_OP_LOG_SOFTMAX:
        if (need(t, 0)) gin[0] = loom__softmax_bwd(LOOM_OP_LOG_SOFTMAX_BWD, t, g, at);
        break;
    default: return loom__set_error(LOOM_ERR_STATE, "backward: no gradient rule for %s", loom__op_name(n->op));
    }
    return LOOM_OK;
}

loom_status loom__grad_rule(loom_tensor *t, loom_tensor *g, loom_tensor **gin)
{
    for (int i = 0; i < t->node.n_in; i++) gin[i] = NULL;
    loom_clear_error(); /* so that a NULL below is known to be a failure */
    loom_status st;
    switch (t->node.op) {
    case LOOM_OP_ADD:
    case LOOM_OP_SUB:
    case LOOM_OP_MUL:
    case LOOM_OP_DIV:
    case LOOM_OP_POW:
    case LOOM_OP_MAXIMUM:
    case LOOM_OP_MINIMUM:
    case LOOM_OP_WHERE: st = binary_rule(t, g, gin); break;
    case LOOM_OP_SUM:
    case LOOM_OP_MEAN:
    case LOOM_OP_MAX:
    case LOOM_OP_MIN: st = reduce_rule(t, g, gin); break;
    case LOOM_OP_VIEW_RESHAPE:
    case LOOM_OP_VIEW_PERMUTE:
    case LOOM_OP_VIEW_SLICE:
    case LOOM_OP_VIEW_EXPAND: st = view_rule(t, g, gin); break;
    case LOOM_OP_MATMUL:
    case LOOM_OP_CAT:
    case LOOM_OP_INDEX_SELECT:
    case LOOM_OP_GATHER:
    case LOOM_OP_SLICE_SCATTER:
    case LOOM_OP_INDEX_ADD:
    case LOOM_OP_SCATTER_ADD: st = index_rule(t, g, gin); break;
    case LOOM_OP_CONV2D:
    case LOOM_OP_MAX_POOL2D:
    case LOOM_OP_AVG_POOL2D:
    case LOOM_OP_BN_FWD:
    case LOOM_OP_SOFTMAX:
    case LOOM_OP_LOG_SOFTMAX: st = cnn_rule(t, g, gin); break;
    case LOOM_OP_LSTM_CELL:
    case LOOM_OP_GRU_CELL: st = loom__rnn_cell_rule(t, g, gin); break;
    case LOOM_OP_RNN_LAYER: st = loom__rnn_layer_rule(t, g, gin); break;
    default: st = unary_rule(t, g, gin); break;
    }
    if (st != LOOM_OK) return st;
    /* A failed sub-op left NULL where a gradient was due. */
    for (int i = 0; i < t->node.n_in; i++)
        if (t->node.in[i]->requires_grad && !gin[i] && loom_last_status() != LOOM_OK)
            return loom_last_status();
    return LOOM_OK;
}
