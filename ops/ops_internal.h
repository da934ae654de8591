/*
 * ops/ops_internal.h - what every op definition shares: input checks, shape
 * and dtype inference helpers, and recording a node.
 *
 * An op in ops/ validates its inputs, infers the output's shape and dtype,
 * inserts the casts and broadcasting views its kernel contract needs (see
 * backends/kernel.h), and records one node. It computes nothing.
 */
#ifndef LOOM_OPS_INTERNAL_H
#define LOOM_OPS_INTERNAL_H

#include <stdbool.h>

#include "backends/kernel.h"
#include "graph/tensor_impl.h"
#include "loom/nn.h"
#include "loom/ops.h"
#include "runtime/error.h"

/* True if all n inputs are non-NULL and share one context. A NULL input
 * returns false and keeps the earlier error (or sets one if there is none);
 * mixed contexts set LOOM_ERR_INVALID_ARG. */
bool loom__check_inputs(const char *op, int n, loom_tensor *const *ts);

/* Checks ndim and shape of a tensor to be created. */
loom_status loom__check_shape(const char *op, int ndim, const int64_t *shape);

/* Normalises dim (negative counts from the end) for a tensor of ndim dims.
 * LOOM_ERR_RANGE with a message naming op if it is out of range. A 0-dim
 * tensor accepts dims 0 and -1, as in PyTorch. */
loom_status loom__norm_dim(const char *op, int dim, int ndim, int *out);

/* NumPy broadcasting of two shapes. */
loom_status loom__broadcast(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                            int *nout, int64_t *out);

/* A new computed (READY) tensor with its data allocated but not filled;
 * messages name `op`. For creation ops (ops/create.c, ops/random.c). */
loom_tensor *loom__new_ready(const char *op, loom_ctx *ctx, loom_dtype dtype, int ndim, const int64_t *shape);

/* Drops tmp if it is a temporary an op made from its input orig (a cast or
 * an expand), i.e. when it is neither NULL nor orig itself. */
static inline void loom__drop_temp(loom_tensor *tmp, const loom_tensor *orig)
{
    if (tmp && tmp != orig) loom_tensor_free(tmp);
}

/* Records a compute node: a new pending tensor (contiguous, its storage
 * allocated when the node runs) with the given inputs, each of which gains a
 * reference. The result belongs to the current scope. */
loom_tensor *loom__record(loom__op op, const loom__attrs *attrs, int n_in, loom_tensor *const *in,
                          loom_dtype dtype, int ndim, const int64_t *shape);

/* Records a view node: a new tensor sharing in's storage with the given
 * shape, strides and offset (elements). */
loom_tensor *loom__record_view(loom__op op, const loom__attrs *attrs, loom_tensor *in, int ndim,
                               const int64_t *shape, const int64_t *strides, int64_t offset);

/* Internal temporaries (inserted casts and expands) are handed to the node
 * that consumes them: call loom__drop(tmp) after recording that node. */
static inline void loom__drop(loom_tensor *t) { loom_tensor_free(t); }

/* t converted to dtype: t itself if it already has it, else a new temporary
 * (to be dropped). NULL on failure. */
loom_tensor *loom__cast_to(loom_tensor *t, loom_dtype dtype);

/* t broadcast to shape: t itself if the shape is equal, else a new temporary
 * expand view (to be dropped). */
loom_tensor *loom__expand_to(loom_tensor *t, int ndim, const int64_t *shape);

/* Type promotion: bool < int64 < float32. */
loom_dtype loom__promote(loom_dtype a, loom_dtype b);

/* Records LOOM_OP_HOST_CALL (ops/host.c): out [numel(x)] = x flattened,
 * then fn(user, out, n) in place, after x and the ndeps ordering-only
 * inputs are computed. Not differentiable. user must outlive the run. */
loom_tensor *loom__host_call(loom_tensor *x, int ndeps, loom_tensor *const *deps,
                             loom_status (*fn)(void *user, float *data, int64_t n), void *user);

/* ---- autograd (ops/grad.c) ---------------------------------------------- */

/* True if gradients flow through op (not comparisons, argmax, ...). */
bool loom__op_differentiable(loom__op op);

/* Records the gradients of t's node inputs given g = dL/dt (t's shape):
 * gin[i] receives a new tensor (owned by the current scope) for each input
 * that requires grad, NULL for the others. Grad mode must be off. */
loom_status loom__grad_rule(loom_tensor *t, loom_tensor *g, loom_tensor **gin);

/* Formats a tensor's shape into buf for messages. */
char *loom__shape_str(char *buf, size_t size, const loom_tensor *t);

/* ---- adjoints of slice/select (ops/index.c) ------------------------------ */

/* A new tensor of `shape` (ndim >= 1), zero except along dim, where
 * out[.., start + i * step, ..] = src[.., i, ..] (torch.slice_scatter on
 * zeros): the adjoint of loom_slice, and of loom_select after unsqueezing
 * the gradient at dim. src has `shape` outside dim and n elements along it,
 * with start >= 0, step >= 1 and start + (n - 1) * step < shape[dim]. Any
 * dtype; shape errors at record time. */
loom_tensor *loom__slice_scatter(loom_tensor *src, int ndim, const int64_t *shape, int dim, int64_t start,
                                 int64_t step);

/* ---- the backward ops of the CNN ops (ops/conv.c, pool.c, norm.c,
 * softmax.c), for their gradient rules. Each records one node on contiguous
 * copies of its inputs; a = the forward node's attributes. ---------------- */
loom_tensor *loom__conv2d_bwd_data(loom_tensor *dy, loom_tensor *w, const loom__attrs *a, const int64_t *x_shape);
loom_tensor *loom__conv2d_bwd_weight(loom_tensor *x, loom_tensor *dy, const loom__attrs *a, const int64_t *w_shape);
loom_tensor *loom__relu_bwd(loom_tensor *y, loom_tensor *dy);
loom_tensor *loom__max_pool2d_bwd(loom_tensor *dy, loom_tensor *x, const loom__attrs *a);
loom_tensor *loom__avg_pool2d_bwd(loom_tensor *dy, const loom__attrs *a, const int64_t *x_shape);
/* Batch norm's backward halves (inputs: backends/kernel.h). y: the fused
 * ReLU's output when a->bn.relu (dy counts where y > 0), else unused; p:
 * BN_BWD_PARAMS's result for the same x, dy and y, or NULL. */
loom_tensor *loom__bn_bwd_data(loom_tensor *x, loom_tensor *dy, loom_tensor *stats, loom_tensor *gamma,
                               loom_tensor *y, loom_tensor *p, const loom__attrs *a);
loom_tensor *loom__bn_bwd_params(loom_tensor *x, loom_tensor *dy, loom_tensor *stats, loom_tensor *y,
                                 const loom__attrs *a);
loom_tensor *loom__softmax_bwd(loom__op bwd_op, loom_tensor *y, loom_tensor *dy, const loom__attrs *a);

/* The fused recurrent cells' gradient rule (ops/rnn.c): t is the
 * LSTM_CELL or GRU_CELL node, g the gradient of its output; sets gin[i]
 * for the inputs that need one. */
loom_status loom__rnn_cell_rule(loom_tensor *t, loom_tensor *g, loom_tensor **gin);
/* The packing (backends/kernel.h) of an RNN_LAYER node t. */
void loom__rnn_node_layout(const loom_tensor *t, loom__rnn_layout *L);
/* The same for RNN_LAYER: one RNN_LAYER_BWD node. */
loom_status loom__rnn_layer_rule(loom_tensor *t, loom_tensor *g, loom_tensor **gin);

/* ops/random.c: the kinds of fill, and the fill itself (a
 * loom__rand_fill_fn of graph/capture.h). */
enum { LOOM__RAND_UNIFORM, LOOM__RAND_NORMAL, LOOM__RAND_INT };
uint64_t loom__rand_fill(int kind, void *data, int64_t n, uint64_t seed, uint64_t base, int64_t low, int64_t high,
                         int nthreads);

#endif /* LOOM_OPS_INTERNAL_H */
