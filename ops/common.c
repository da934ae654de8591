/*
 * ops/common.c - helpers every op definition uses.
 */
#include <string.h>

#include "backends/registry.h"
#include "ops/ops_internal.h"

bool loom__check_inputs(const char *op, int n, loom_tensor *const *ts)
{
    for (int i = 0; i < n; i++) {
        if (!ts[i]) {
            if (loom_last_status() == LOOM_OK)
                loom__set_error(LOOM_ERR_INVALID_ARG, "%s: input %d is NULL", op, i);
            return false;
        }
    }
    for (int i = 1; i < n; i++) {
        if (ts[i]->ctx != ts[0]->ctx) {
            loom__set_error(LOOM_ERR_INVALID_ARG, "%s: inputs 0 and %d belong to different contexts", op, i);
            return false;
        }
    }
    return true;
}

loom_status loom__check_shape(const char *op, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > LOOM_MAX_DIMS)
        return loom__set_error(LOOM_ERR_SHAPE, "%s: %d dims requested; tensors have 0 to %d", op, ndim,
                               LOOM_MAX_DIMS);
    if (ndim > 0 && !shape) return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: shape is NULL", op);
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) {
            char sh[LOOM__SHAPE_STR_MAX];
            return loom__set_error(LOOM_ERR_SHAPE, "%s: negative size %lld at dim %d of shape %s", op,
                                   (long long)shape[d], d, loom__fmt_shape(sh, sizeof sh, ndim, shape));
        }
        if (shape[d] && numel > INT64_MAX / 8 / shape[d])
            return loom__set_error(LOOM_ERR_SHAPE, "%s: shape is too large", op);
        numel *= shape[d];
    }
    return LOOM_OK;
}

loom_status loom__norm_dim(const char *op, int dim, int ndim, int *out)
{
    int n = ndim > 0 ? ndim : 1;
    if (dim < -n || dim >= n)
        return loom__set_error(LOOM_ERR_RANGE, "%s: dim %d is out of range for a tensor of %d dims (expected %d to %d)",
                               op, dim, ndim, -n, n - 1);
    *out = dim < 0 ? dim + n : dim;
    return LOOM_OK;
}

loom_status loom__broadcast(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                            int *nout, int64_t *out)
{
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int64_t a = i < n - na ? 1 : sa[i - (n - na)];
        int64_t b = i < n - nb ? 1 : sb[i - (n - nb)];
        if (a != b && a != 1 && b != 1) {
            char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
            return loom__set_error(LOOM_ERR_SHAPE, "%s: shapes %s and %s cannot be broadcast", op,
                                   loom__fmt_shape(s1, sizeof s1, na, sa), loom__fmt_shape(s2, sizeof s2, nb, sb));
        }
        out[i] = a == 1 ? b : a;
    }
    *nout = n;
    return LOOM_OK;
}

static loom_tensor *new_node_tensor(loom__op op, const loom__attrs *attrs, int n_in, loom_tensor *const *in,
                                    loom_dtype dtype, int ndim, const int64_t *shape)
{
    loom_ctx *ctx = in[0]->ctx;
    loom_tensor *t = loom__tensor_new(ctx, dtype, ndim, shape);
    if (!t) return NULL;
    if (n_in > LOOM__INLINE_INPUTS) {
        /* One block: the input pointers, then their versions. */
        t->node.in = loom__mem_alloc(&ctx->mem, (sizeof *t->node.in + sizeof(uint32_t)) * (size_t)n_in);
        if (t->node.in) t->node.in_version = (uint32_t *)(t->node.in + n_in);
        if (!t->node.in) {
            t->node.in = t->node.in_inline;
            loom_tensor_free(t);
            loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory", loom__op_name(op));
            return NULL;
        }
    }
    t->node.op = op;
    if (attrs) t->node.attrs = *attrs;
    for (int i = 0; i < n_in; i++) {
        loom__tensor_incref(in[i]);
        t->node.in[i] = in[i];
    }
    t->node.n_in = n_in;
    for (int i = 0; i < n_in; i++) t->node.in_version[i] = in[i]->storage ? in[i]->storage->version : 0;
    if (ctx->no_grad_depth == 0 && dtype == LOOM_FLOAT32 && loom__op_differentiable(op)) {
        for (int i = 0; i < n_in; i++) {
            if (in[i]->requires_grad) {
                t->requires_grad = true;
                t->grad_fn = true;
                break;
            }
        }
    }
    atomic_store_explicit(&t->state, LOOM__PENDING, memory_order_relaxed);
    return t;
}

loom_tensor *loom__record(loom__op op, const loom__attrs *attrs, int n_in, loom_tensor *const *in,
                          loom_dtype dtype, int ndim, const int64_t *shape)
{
    loom_tensor *t = new_node_tensor(op, attrs, n_in, in, dtype, ndim, shape);
    if (!t) return NULL;
    if (loom__tensor_attach_storage(t, false) != LOOM_OK) {
        loom_tensor_free(t);
        return NULL;
    }
    return t;
}

loom_tensor *loom__record_view(loom__op op, const loom__attrs *attrs, loom_tensor *in, int ndim,
                               const int64_t *shape, const int64_t *strides, int64_t offset)
{
    loom_tensor *t = new_node_tensor(op, attrs, 1, &in, in->dtype, ndim, shape);
    if (!t) return NULL;
    for (int d = 0; d < ndim; d++) t->strides[d] = strides[d];
    t->offset = offset;
    loom__tensor_share_storage(t, in->storage);
    t->node.out_version = in->storage->version;
    /* A view of a computed tensor is computed too: no node needs to run. */
    if (atomic_load_explicit(&in->state, memory_order_acquire) == LOOM__READY) {
        if (!t->grad_fn) loom__node_release_inputs(t);
        atomic_store_explicit(&t->state, LOOM__READY, memory_order_relaxed);
    }
    return t;
}

loom_dtype loom__promote(loom_dtype a, loom_dtype b)
{
    if (a == LOOM_FLOAT32 || b == LOOM_FLOAT32) return LOOM_FLOAT32;
    if (a == LOOM_INT64 || b == LOOM_INT64) return LOOM_INT64;
    return LOOM_BOOL;
}

loom_tensor *loom__cast_to(loom_tensor *t, loom_dtype dtype)
{
    if (t->dtype == dtype) return t;
    return loom__record(LOOM_OP_CAST, NULL, 1, &t, dtype, t->ndim, t->shape);
}

loom_tensor *loom__expand_to(loom_tensor *t, int ndim, const int64_t *shape)
{
    if (t->ndim == ndim && memcmp(t->shape, shape, sizeof(int64_t) * (size_t)ndim) == 0) return t;
    return loom_expand(t, ndim, shape);
}

char *loom__shape_str(char *buf, size_t size, const loom_tensor *t)
{
    return loom__fmt_shape(buf, size, t->ndim, t->shape);
}
