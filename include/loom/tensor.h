/*
 * loom/tensor.h - tensors: creation, properties, views, data access, printing.
 *
 * A loom_tensor is an opaque handle to an n-dimensional array (up to
 * LOOM_MAX_DIMS dims) of float32, int64 or bool, viewed through a shape,
 * strides (in elements) and an offset into a storage that views share.
 *
 * Tensors are lazy, as in a define-by-run graph: an op records a node
 * (op, inputs, attributes, output shape and dtype) and returns at once;
 * values are computed when they are needed - loom_tensor_eval(), data
 * access, item(), printing. Shape and dtype errors are caught when the op is
 * recorded; errors while computing are returned by whatever forced it.
 *
 * Ownership: every function here that returns a loom_tensor* returns a new
 * handle owned by the innermost open scope of the context (see
 * loom/context.h). Pointers to data and strings state their own lifetime.
 *
 *     loom_tensor *a = loom_tensor_from_array(ctx, LOOM_FLOAT32,
 *                          (float[]){1, 2, 3}, LOOM_SHAPE(3));
 *     loom_tensor *b = loom_mul_scalar(a, 2.0);
 *     loom_tensor_print(b, stdout);   // tensor([2., 4., 6.])
 */
#ifndef LOOM_TENSOR_H
#define LOOM_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "loom/context.h"
#include "loom/status.h"
#include "loom/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- creation (eager: the returned tensor holds its values) ---------- */

/* A new tensor holding a copy of `data` (contiguous, row-major, of `dtype`:
 * float, int64_t, or uint8_t 0/1 for bool). ndim may be 0 (a scalar). */
loom_tensor *loom_tensor_from_array(loom_ctx *ctx, loom_dtype dtype, const void *data,
                                    int ndim, const int64_t *shape);
loom_tensor *loom_zeros(loom_ctx *ctx, loom_dtype dtype, int ndim, const int64_t *shape);
loom_tensor *loom_ones(loom_ctx *ctx, loom_dtype dtype, int ndim, const int64_t *shape);
loom_tensor *loom_full(loom_ctx *ctx, loom_dtype dtype, int ndim, const int64_t *shape,
                       double value);
/* A 0-dim tensor. */
loom_tensor *loom_scalar(loom_ctx *ctx, loom_dtype dtype, double value);
/* Values start, start+step, ... < end (> end for a negative step), as
 * torch.arange. dtype FLOAT32 or INT64. */
loom_tensor *loom_arange(loom_ctx *ctx, loom_dtype dtype, double start, double end,
                         double step);
/* `steps` float32 values from start to end inclusive, as torch.linspace. */
loom_tensor *loom_linspace(loom_ctx *ctx, double start, double end, int64_t steps);
/* float32 uniform in [0, 1), standard normal, and int64 uniform in
 * [low, high), from the context's generator. */
loom_tensor *loom_rand(loom_ctx *ctx, int ndim, const int64_t *shape);
loom_tensor *loom_randn(loom_ctx *ctx, int ndim, const int64_t *shape);
loom_tensor *loom_randint(loom_ctx *ctx, int64_t low, int64_t high, int ndim,
                          const int64_t *shape);

/* ---- properties (never force computation) ---------------------------- */

loom_ctx *loom_tensor_ctx(const loom_tensor *t);
loom_dtype loom_tensor_dtype(const loom_tensor *t);
int loom_tensor_ndim(const loom_tensor *t);
/* Size of dim d; negative d counts from the end. -1 if d is out of range. */
int64_t loom_tensor_size(const loom_tensor *t, int d);
/* Stride (in elements) of dim d; negative d counts from the end. */
int64_t loom_tensor_stride(const loom_tensor *t, int d);
/* Copies the shape into out[0..ndim-1] (out needs LOOM_MAX_DIMS entries). */
void loom_tensor_shape(const loom_tensor *t, int64_t *out);
int64_t loom_tensor_numel(const loom_tensor *t);
bool loom_tensor_is_contiguous(const loom_tensor *t);
/* True when both handles view the same storage. */
bool loom_tensor_shares_storage(const loom_tensor *a, const loom_tensor *b);

/* ---- data access (forces computation) -------------------------------- */

/* Computes t (and whatever it depends on). */
loom_status loom_tensor_eval(loom_tensor *t);
/* Computes t like loom_tensor_eval, but leaves its storage in the layout
 * the node that made it wrote (a oneDNN node's blocked layout, e.g.
 * nChw16c) instead of converting it to plain row-major data. For forcing
 * an intermediate result you will not read yourself: a later node takes
 * it as it is, and loom_tensor_data / loom_tensor_eval still convert it
 * when you read it. */
loom_status loom_tensor_compute(loom_tensor *t);

/* A pointer to t's first element, after computing it. Elements are laid out
 * by loom_tensor_stride(); use loom_tensor_copy_to() for a contiguous copy.
 * The memory belongs to the tensor and stays valid while t lives. Writing
 * through it is not allowed. NULL on failure. */
const void *loom_tensor_data(loom_tensor *t);

/* Copies t's values, contiguous row-major, into dst (dst_bytes must be at
 * least numel * dtype size). */
loom_status loom_tensor_copy_to(loom_tensor *t, void *dst, size_t dst_bytes);

/* The value of a one-element tensor, converted to double. */
loom_status loom_tensor_item(loom_tensor *t, double *out);

/* The tensor formatted as PyTorch's repr ("tensor([5., 7., 9.])").
 * Returns a malloc'd string the caller frees with free(); NULL on failure. */
char *loom_tensor_to_string(loom_tensor *t);

/* Writes loom_tensor_to_string(t) and a newline to f. */
loom_status loom_tensor_print(loom_tensor *t, FILE *f);

/* Frees the handle now (removing it from its scope). NULL is a no-op. */
void loom_tensor_free(loom_tensor *t);

/* ---- views: share storage with the input, no copy -------------------- */

/* -1 in shape is inferred. reshape copies when t cannot be viewed with the
 * new shape (as torch.reshape); view fails instead (as torch.view). */
loom_tensor *loom_reshape(loom_tensor *t, int ndim, const int64_t *shape);
loom_tensor *loom_view(loom_tensor *t, int ndim, const int64_t *shape);
loom_tensor *loom_permute(loom_tensor *t, int ndim, const int *dims);
loom_tensor *loom_transpose(loom_tensor *t, int dim0, int dim1);
/* Elements start, start+step, ... < end of dim; negative start/end count from
 * the end, and both are clamped to the dim as Python slices are; step >= 1. */
loom_tensor *loom_slice(loom_tensor *t, int dim, int64_t start, int64_t end, int64_t step);
/* Index `index` of dim, removing the dim (t[..., index, ...]). */
loom_tensor *loom_select(loom_tensor *t, int dim, int64_t index);
/* Removes dim if its size is 1 (else returns an alias, as PyTorch does). */
loom_tensor *loom_squeeze(loom_tensor *t, int dim);
/* Removes every size-1 dim. */
loom_tensor *loom_squeeze_all(loom_tensor *t);
loom_tensor *loom_unsqueeze(loom_tensor *t, int dim);
/* Broadcasts size-1 dims (and new leading dims) to shape; -1 keeps a size. */
loom_tensor *loom_expand(loom_tensor *t, int ndim, const int64_t *shape);
/* Merges dims start_dim..end_dim (inclusive, negative from the end); a view
 * when possible, else a copy (as torch.flatten). */
loom_tensor *loom_flatten(loom_tensor *t, int start_dim, int end_dim);
/* A contiguous tensor with t's values: an alias if t is already contiguous. */
loom_tensor *loom_contiguous(loom_tensor *t);
/* A new handle on the same tensor (same storage and shape). */
loom_tensor *loom_alias(loom_tensor *t);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_TENSOR_H */
