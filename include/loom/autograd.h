/*
 * loom/autograd.h - define-by-run automatic differentiation.
 *
 * Mark leaf tensors (parameters, inputs) with loom_tensor_set_requires_grad;
 * every op recorded from them (while grad mode is on) remembers how to
 * compute its gradient. loom_backward() on a scalar loss records the backward
 * pass as ops of the same DAG, runs them, and accumulates each leaf's
 * gradient into its .grad, as PyTorch's loss.backward() does:
 *
 *     loom_tensor_set_requires_grad(w, true);
 *     loom_scope_begin(ctx);
 *     loom_tensor *loss = loom_mean(loom_pow_scalar(loom_sub(loom_matmul(x, w), y), 2), 0, NULL, false);
 *     loom_backward(loss, NULL);             // w's grad += d loss / d w
 *     loom_tensor *gw = loom_tensor_grad(w); // a handle owned by the scope
 *     loom_scope_end(ctx);
 *
 * Only float32 tensors carry gradients. The graph of a forward pass is freed
 * by backward (its saved inputs are let go); a second backward over it fails
 * with LOOM_ERR_STATE unless the first passed retain_graph.
 *
 * Gradients flow through views (reshape, permute, slice, expand, ...) and
 * reduce over broadcast dims.
 */
#ifndef LOOM_AUTOGRAD_H
#define LOOM_AUTOGRAD_H

#include <stdbool.h>

#include "loom/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Marks a leaf tensor as needing its gradient (or not). LOOM_ERR_STATE for a
 * tensor computed from others that require grad (not a leaf);
 * LOOM_ERR_DTYPE for a non-float32 tensor. */
loom_status loom_tensor_set_requires_grad(loom_tensor *t, bool requires_grad);
bool loom_tensor_requires_grad(const loom_tensor *t);
/* True unless t was computed by an op from tensors that require grad. */
bool loom_tensor_is_leaf(const loom_tensor *t);

/* True if t has an accumulated gradient. */
bool loom_tensor_has_grad(const loom_tensor *t);
/* A new handle (owned by the current scope) on t's accumulated gradient;
 * NULL with LOOM_ERR_STATE if t has none. */
loom_tensor *loom_tensor_grad(loom_tensor *t);
/* Drops t's gradient (PyTorch's zero_grad(set_to_none=True)). */
void loom_tensor_zero_grad(loom_tensor *t);

typedef struct loom_backward_options {
    bool retain_graph; /* keep the graph for another backward */
} loom_backward_options;

/* Computes the gradients of root with respect to every leaf that requires
 * grad and accumulates them. grad: d(something)/d(root), root's shape; NULL
 * means 1 and needs a one-element root. opts may be NULL. The gradients are
 * computed when this returns. */
loom_status loom_backward(loom_tensor *root, loom_tensor *grad, const loom_backward_options *opts);

/* A view of t's values that does not require grad and records no gradient
 * (shares storage with t). */
loom_tensor *loom_detach(loom_tensor *t);

/* Grad mode. Inside loom_no_grad_begin/end (nestable), ops record no
 * gradient information: evaluation and optimizer updates. */
void loom_no_grad_begin(loom_ctx *ctx);
void loom_no_grad_end(loom_ctx *ctx);
bool loom_grad_enabled(const loom_ctx *ctx);

/* Writes src's values into dst (same shape; src is converted to dst's
 * dtype), in place: the way optimizers update parameters. dst must not be a
 * view of a pending result. Ops recorded earlier that read dst and have not
 * run yet, or whose saved inputs backward still needs, then fail with
 * LOOM_ERR_STATE ("modified in place") rather than silently use new values. */
loom_status loom_tensor_assign(loom_tensor *dst, loom_tensor *src);

/* ---- gradient checking -------------------------------------------------- */

/* A differentiable function of n tensors, for loom_gradcheck. It returns a
 * new tensor (owned by the current scope) or NULL on failure. */
typedef loom_tensor *(*loom_grad_fn)(loom_tensor *const *inputs, int n, void *user);

typedef struct loom_gradcheck_options {
    double eps;  /* finite-difference step; 0: 1e-2 (float32 data) */
    double atol; /* 0: 1e-3 */
    double rtol; /* 0: 1e-2 */
} loom_gradcheck_options;

/* Compares the gradients backward computes for fn at `inputs` (those that
 * require grad) with central finite differences of sum(fn(inputs) * r) for a
 * fixed random r. LOOM_OK if every element agrees within atol + rtol*|g|;
 * else LOOM_ERR_INVALID_ARG with a message naming the input, the element and
 * both values. The inputs' grads are cleared before and after. */
loom_status loom_gradcheck(loom_grad_fn fn, int n, loom_tensor *const *inputs, void *user,
                           const loom_gradcheck_options *opts);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_AUTOGRAD_H */
