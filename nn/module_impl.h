/*
 * nn/module_impl.h - what the nn/ sources share: argument checks that name the
 * function and the shapes, and a private scope for temporaries.
 *
 * nn/ is written against the public API only (include/loom/), as any user
 * code would be, plus runtime/error.h to report errors; it never touches
 * graph/ internals or a backend (shared/notes/architecture.md).
 */
#ifndef LOOM_NN_MODULE_IMPL_H
#define LOOM_NN_MODULE_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "loom/loom.h"
#include "runtime/error.h"

/* Formats t's shape ("[4, 3]") into buf, which needs LOOM__SHAPE_STR_MAX
 * bytes. */
static inline char *loom__nn_shape(char *buf, const loom_tensor *t)
{
    int64_t shape[LOOM_MAX_DIMS];
    loom_tensor_shape(t, shape);
    return loom__fmt_shape(buf, LOOM__SHAPE_STR_MAX, loom_tensor_ndim(t), shape);
}

/* True if t and u have the same shape. */
static inline bool loom__nn_same_shape(const loom_tensor *t, const loom_tensor *u)
{
    if (loom_tensor_ndim(t) != loom_tensor_ndim(u)) return false;
    for (int d = 0; d < loom_tensor_ndim(t); d++)
        if (loom_tensor_size(t, d) != loom_tensor_size(u, d)) return false;
    return true;
}

/* Checks that t (argument `what` of `op`) is not NULL. A NULL keeps the
 * error that produced it (ops' convention: a chain is checked once), or
 * sets one if there is none. */
static inline bool loom__nn_present(const char *op, const char *what, const loom_tensor *t)
{
    if (t) return true;
    if (loom_last_status() == LOOM_OK) loom__set_error(LOOM_ERR_INVALID_ARG, "%s: %s is NULL", op, what);
    return false;
}

/* Checks that t is float32. */
static inline bool loom__nn_float(const char *op, const char *what, const loom_tensor *t)
{
    if (loom_tensor_dtype(t) == LOOM_FLOAT32) return true;
    loom__set_error(LOOM_ERR_DTYPE, "%s: %s must be float32, got %s", op, what,
                    loom_dtype_name(loom_tensor_dtype(t)));
    return false;
}

/* Functions that record several ops keep their temporaries in a private
 * scope, so that the caller's scope receives only the result:
 *
 *     if (!loom__nn_enter(ctx)) return NULL;
 *     loom_tensor *y = ...;             // temporaries die at leave
 *     return loom__nn_leave(ctx, y);    // y moves to the caller's scope
 *
 * The result must have been created inside the private scope. */
static inline bool loom__nn_enter(loom_ctx *ctx) { return loom_scope_begin(ctx) == LOOM_OK; }

static inline loom_tensor *loom__nn_leave(loom_ctx *ctx, loom_tensor *result)
{
    loom_scope_keep(result);
    loom_scope_end(ctx); /* cannot fail: enter opened it */
    return result;
}

/* A computed tensor of `shape` uniform in [-bound, bound), drawn from the
 * context's generator as (rand * 2 - 1) * bound (PyTorch's init order:
 * weight first, then bias). Its temporaries live in a private scope; the
 * result is in the caller's scope. (nn/layers.c) */
loom_tensor *loom__nn_uniform(loom_ctx *ctx, int ndim, const int64_t *shape, double bound);

/* The user pointer a module was created with (nn/module.c). */
void *loom__nn_module_user(loom_module *m);

/* A Conv2d module's forward with a ReLU fused into the convolution, for
 * Sequential's Conv2d+ReLU pairs (nn/cnn_layers.c). NULL (no error set)
 * if conv is not a Conv2d. */
loom_tensor *loom__nn_conv2d_relu_forward(loom_module *conv, loom_tensor *x);
/* The same for a BatchNorm2d module (loom_batch_norm_relu). */
loom_tensor *loom__nn_batch_norm2d_relu_forward(loom_module *bn, loom_tensor *x);

#endif /* LOOM_NN_MODULE_IMPL_H */
