/*
 * loom/nn.h - modules, activations and losses, as torch.nn has them.
 *
 * A module owns named parameters (tensors that require grad), named buffers,
 * and named children; its parameter names follow PyTorch's state_dict keys
 * ("fc1.weight", "0.bias"), so that checkpoints can be exchanged. forward()
 * records ops like any user code. A module is created from a context and
 * freed with loom_module_free(), which frees its parameters, buffers and
 * children. Parameters live outside every scope (the module owns them).
 *
 *     loom_module *net = loom_sequential(ctx, 3, (loom_module *[]){
 *         loom_linear(ctx, 20, 64, true), loom_relu_module(ctx),
 *         loom_linear(ctx, 64, 1, true)});
 *     loom_tensor *y = loom_module_forward(net, x);   // owned by the scope
 *
 * Custom modules: loom_module_create() with a forward callback, then
 * loom_module_add_parameter() / loom_module_add_child().
 */
#ifndef LOOM_NN_H
#define LOOM_NN_H

#include <stdbool.h>
#include <stdint.h>

#include "loom/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_module loom_module;

/* forward(module, input, user) returns a new tensor (owned by the current
 * scope) or NULL with the error set. */
typedef loom_tensor *(*loom_forward_fn)(loom_module *m, loom_tensor *x, void *user);

/* A custom module of type `type` ("SimpleNN"). free_user (may be NULL) is
 * called on `user` by loom_module_free. NULL on failure. */
loom_module *loom_module_create(loom_ctx *ctx, const char *type, loom_forward_fn forward, void *user,
                                void (*free_user)(void *user));

/* Registers t as parameter `name` of m: m takes ownership of the handle
 * (detaching it from its scope) and marks it requires_grad. */
loom_status loom_module_add_parameter(loom_module *m, const char *name, loom_tensor *t);
/* Registers a buffer (state that is not a parameter, e.g. running means). */
loom_status loom_module_add_buffer(loom_module *m, const char *name, loom_tensor *t);
/* Makes `child` a submodule called `name`; m takes ownership of it. */
loom_status loom_module_add_child(loom_module *m, const char *name, loom_module *child);

/* Runs the module. x is not consumed. */
loom_tensor *loom_module_forward(loom_module *m, loom_tensor *x);

const char *loom_module_type(const loom_module *m);
loom_ctx *loom_module_ctx(const loom_module *m);
/* The child called `name` (borrowed), or NULL. */
loom_module *loom_module_child(loom_module *m, const char *name);
/* The direct parameter or buffer called `name` ("weight"), or with a dotted
 * path ("fc1.weight") - borrowed, owned by the module - or NULL. */
loom_tensor *loom_module_get(loom_module *m, const char *name);

/* Training mode (dropout active) or evaluation mode, for m and its children. */
void loom_module_train(loom_module *m, bool training);
bool loom_module_is_training(const loom_module *m);

/* Every parameter of m and its children, in registration order (PyTorch's
 * named_parameters order). Fills up to `cap` entries of params (and names,
 * if not NULL: full dotted names, owned by the module) and returns the total
 * count. The tensors are borrowed: owned by the module. */
int loom_module_parameters(loom_module *m, loom_tensor **params, const char **names, int cap);
/* Parameters and buffers: the state_dict. Same conventions. */
int loom_module_state(loom_module *m, loom_tensor **tensors, const char **names, int cap);

/* Frees m, its children, parameters and buffers. NULL is a no-op. */
void loom_module_free(loom_module *m);

/* ---- layers ---------------------------------------------------------- */

/* y = x W^T + b; weight [out, in], bias [out]; PyTorch's init: weight
 * kaiming-uniform with a = sqrt(5) (uniform in +-1/sqrt(in)), bias uniform
 * in +-1/sqrt(in), drawn from the context's generator. */
loom_module *loom_linear(loom_ctx *ctx, int64_t in_features, int64_t out_features, bool bias);
loom_module *loom_relu_module(loom_ctx *ctx);
loom_module *loom_sigmoid_module(loom_ctx *ctx);
loom_module *loom_tanh_module(loom_ctx *ctx);
loom_module *loom_softmax_module(loom_ctx *ctx, int dim);
loom_module *loom_log_softmax_module(loom_ctx *ctx, int dim);
/* Zeroes elements with probability p in training mode and scales the rest
 * by 1/(1-p); the identity in evaluation mode. Masks come from the context's
 * generator. */
loom_module *loom_dropout_module(loom_ctx *ctx, double p);
/* Children named "0", "1", ...; takes ownership of the n modules (also of
 * those already created when it fails). */
loom_module *loom_sequential(loom_ctx *ctx, int n, loom_module *const *modules);

/* ---- functional forms ------------------------------------------------ */

loom_tensor *loom_linear_fn(loom_tensor *x, loom_tensor *weight, loom_tensor *bias /* may be NULL */);
loom_tensor *loom_softmax(loom_tensor *t, int dim);
loom_tensor *loom_log_softmax(loom_tensor *t, int dim);
loom_tensor *loom_dropout(loom_tensor *t, double p, bool training);

/* ---- losses ------------------------------------------------------------ */

typedef enum loom_reduction {
    LOOM_REDUCTION_MEAN = 0,
    LOOM_REDUCTION_SUM,
    LOOM_REDUCTION_NONE,
    LOOM_REDUCTION_COUNT
} loom_reduction;

/* input and target of one shape (float32). */
loom_tensor *loom_mse_loss(loom_tensor *input, loom_tensor *target, loom_reduction r);
/* input: probabilities in [0, 1]; log clamped at -100 as PyTorch does. */
loom_tensor *loom_bce_loss(loom_tensor *input, loom_tensor *target, loom_reduction r);
/* input: logits; numerically stable. */
loom_tensor *loom_bce_with_logits_loss(loom_tensor *input, loom_tensor *target, loom_reduction r);
/* input: log-probabilities [N, C]; target: int64 class indices [N] in [0, C). */
loom_tensor *loom_nll_loss(loom_tensor *input, loom_tensor *target, loom_reduction r);
/* input: logits [N, C]; target: int64 [N]. log_softmax + nll_loss. */
loom_tensor *loom_cross_entropy_loss(loom_tensor *input, loom_tensor *target, loom_reduction r);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_NN_H */
