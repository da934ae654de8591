/*
 * ops/reduce.c - sum, mean, max, min, argmax, argmin over dims.
 *
 * The node's output has the keepdim shape (reduced dims of size 1), which is
 * what the kernel writes; without keepdim a view then drops those dims.
 */
#include <math.h>

#include "backends/registry.h"
#include "ops/ops_internal.h"

/* Drops the dims of `mask` from r (a keepdim-shaped result) unless keepdim. */
static loom_tensor *finish(loom_tensor *r, uint32_t mask, bool keepdim)
{
    if (!r || keepdim) return r;
    int64_t shape[LOOM_MAX_DIMS];
    int k = 0;
    for (int d = 0; d < r->ndim; d++)
        if (!(mask & (1u << d))) shape[k++] = r->shape[d];
    loom_tensor *out = loom_reshape(r, k, shape);
    loom__drop(r);
    return out;
}

static loom_tensor *reduce(loom__op op, loom_tensor *t, uint32_t mask, bool keepdim)
{
    const char *name = loom__op_name(op);
    int64_t shape[LOOM_MAX_DIMS];
    int64_t extent = 1;
    for (int d = 0; d < t->ndim; d++) {
        shape[d] = mask & (1u << d) ? 1 : t->shape[d];
        if (mask & (1u << d)) extent *= t->shape[d];
    }
    loom_dtype out_dt = t->dtype;
    loom_tensor *src = t;
    switch (op) {
    case LOOM_OP_SUM:
        if (t->dtype != LOOM_FLOAT32) out_dt = LOOM_INT64;
        break;
    case LOOM_OP_MEAN:
        out_dt = LOOM_FLOAT32;
        src = loom__cast_to(t, LOOM_FLOAT32);
        if (!src) return NULL;
        break;
    case LOOM_OP_ARGMAX:
    case LOOM_OP_ARGMIN:
        out_dt = LOOM_INT64;
        /* fallthrough */
    default:
        if (extent == 0) {
            char sh[LOOM__SHAPE_STR_MAX];
            loom__set_error(LOOM_ERR_SHAPE, "%s: cannot reduce over an empty dim (input shape %s)", name,
                            loom__shape_str(sh, sizeof sh, t));
            return NULL;
        }
    }
    loom_tensor *r;
    /* An empty reduced extent still records the node (the kernel writes 0,
     * or NaN for mean, as PyTorch gives) so that gradients flow. */
    loom__attrs a = {.reduce = {mask, keepdim}};
    r = loom__record(op, &a, 1, &src, out_dt, t->ndim, shape);
    if (src != t) loom__drop(src);
    return finish(r, mask, keepdim);
}

static loom_tensor *reduce_dims(loom__op op, loom_tensor *t, int ndims, const int *dims, bool keepdim)
{
    const char *name = loom__op_name(op);
    if (!loom__check_inputs(name, 1, &t)) return NULL;
    uint32_t mask = 0;
    if (ndims == 0) {
        mask = (1u << t->ndim) - 1;
    } else {
        if (ndims < 0 || !dims) {
            loom__set_error(LOOM_ERR_INVALID_ARG, "%s: invalid dim list", name);
            return NULL;
        }
        for (int i = 0; i < ndims; i++) {
            int d;
            if (loom__norm_dim(name, dims[i], t->ndim, &d) != LOOM_OK) return NULL;
            if (t->ndim == 0) continue;
            if (mask & (1u << d)) {
                loom__set_error(LOOM_ERR_INVALID_ARG, "%s: dim %d appears more than once", name, d);
                return NULL;
            }
            mask |= 1u << d;
        }
    }
    return reduce(op, t, mask, keepdim);
}

loom_tensor *loom_sum(loom_tensor *t, int ndims, const int *dims, bool keepdim)
{
    return reduce_dims(LOOM_OP_SUM, t, ndims, dims, keepdim);
}

loom_tensor *loom_mean(loom_tensor *t, int ndims, const int *dims, bool keepdim)
{
    return reduce_dims(LOOM_OP_MEAN, t, ndims, dims, keepdim);
}

static loom_tensor *reduce_one(loom__op op, loom_tensor *t, int dim, bool keepdim)
{
    if (dim != LOOM_DIM_ALL) return reduce_dims(op, t, 1, &dim, keepdim);
    if (!loom__check_inputs(loom__op_name(op), 1, &t)) return NULL;
    if (op == LOOM_OP_ARGMAX || op == LOOM_OP_ARGMIN) {
        /* The index into the flattened tensor: reduce a 1-D view (or copy). */
        loom_tensor *flat = loom_reshape(t, 1, (const int64_t[]){-1});
        if (!flat) return NULL;
        loom_tensor *r = reduce(op, flat, 1u, false);
        loom__drop(flat);
        if (!r || !keepdim) return r;
        int64_t ones[LOOM_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++) ones[d] = 1;
        loom_tensor *out = loom_reshape(r, t->ndim, ones);
        loom__drop(r);
        return out;
    }
    return reduce(op, t, (1u << t->ndim) - 1, keepdim);
}

loom_tensor *loom_max(loom_tensor *t, int dim, bool keepdim) { return reduce_one(LOOM_OP_MAX, t, dim, keepdim); }
loom_tensor *loom_min(loom_tensor *t, int dim, bool keepdim) { return reduce_one(LOOM_OP_MIN, t, dim, keepdim); }
loom_tensor *loom_argmax(loom_tensor *t, int dim, bool keepdim)
{
    return reduce_one(LOOM_OP_ARGMAX, t, dim, keepdim);
}
loom_tensor *loom_argmin(loom_tensor *t, int dim, bool keepdim)
{
    return reduce_one(LOOM_OP_ARGMIN, t, dim, keepdim);
}
