/*
 * ops/shape.c - views: ops whose output shares the input's storage with a
 * new shape, strides and offset. Nothing is copied, except where PyTorch
 * copies too (reshape/flatten of a tensor that cannot be viewed).
 */
#include <string.h>

#include "ops/ops_internal.h"

/* Fills shape[] from a requested shape with at most one -1 (inferred). */
static loom_status infer_shape(const char *op, const loom_tensor *t, int ndim, const int64_t *req,
                               int64_t *shape)
{
    if (ndim < 0 || ndim > LOOM_MAX_DIMS)
        return loom__set_error(LOOM_ERR_SHAPE, "%s: %d dims requested; tensors have 0 to %d", op, ndim,
                               LOOM_MAX_DIMS);
    if (ndim > 0 && !req) return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: shape is NULL", op);
    int infer = -1;
    int64_t known = 1;
    for (int d = 0; d < ndim; d++) {
        if (req[d] == -1) {
            if (infer >= 0) return loom__set_error(LOOM_ERR_SHAPE, "%s: only one dim can be -1", op);
            infer = d;
        } else if (req[d] < 0) {
            return loom__set_error(LOOM_ERR_SHAPE, "%s: invalid size %lld at dim %d", op, (long long)req[d], d);
        } else {
            known *= req[d];
        }
        shape[d] = req[d];
    }
    int64_t numel = loom__numel(t->ndim, t->shape);
    if (infer >= 0) {
        if (known == 0 || numel % known) goto mismatch;
        shape[infer] = numel / known;
    } else if (known != numel) {
        goto mismatch;
    }
    return LOOM_OK;
mismatch:;
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    return loom__set_error(LOOM_ERR_SHAPE, "%s: shape %s is invalid for a tensor of shape %s (%lld elements)", op,
                           loom__fmt_shape(s2, sizeof s2, ndim, req), loom__shape_str(s1, sizeof s1, t),
                           (long long)numel);
}

/* Strides for viewing t with `shape`, if t's strides allow it (PyTorch's
 * computeStride): the new dims must split or merge old dims that are
 * contiguous with respect to each other. Returns false if a copy is needed. */
static bool view_strides(const loom_tensor *t, int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t numel = loom__numel(t->ndim, t->shape);
    if (numel == 0 || t->ndim == 0) {
        loom__contiguous_strides(ndim, shape, strides);
        return true;
    }
    int view_d = ndim - 1;
    int64_t chunk_base_stride = t->ndim ? t->strides[t->ndim - 1] : 1;
    int64_t tensor_numel = 1, view_numel = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        tensor_numel *= t->shape[d];
        /* End of a chunk of old dims that are contiguous with each other. */
        if (d == 0 || (t->shape[d - 1] != 1 && t->strides[d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                strides[view_d] = view_numel * chunk_base_stride;
                view_numel *= shape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return false;
            if (d > 0) {
                chunk_base_stride = t->strides[d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

static loom_tensor *reshape_impl(const char *op, loom_tensor *t, int ndim, const int64_t *req, bool may_copy)
{
    if (!loom__check_inputs(op, 1, &t)) return NULL;
    int64_t shape[LOOM_MAX_DIMS], strides[LOOM_MAX_DIMS];
    if (infer_shape(op, t, ndim, req, shape) != LOOM_OK) return NULL;
    if (view_strides(t, ndim, shape, strides))
        return loom__record_view(LOOM_OP_VIEW_RESHAPE, NULL, t, ndim, shape, strides, t->offset);
    if (!may_copy) {
        char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
        loom__set_error(LOOM_ERR_SHAPE,
                        "%s: shape %s is not compatible with the input's shape %s and strides; use reshape (which copies)",
                        op, loom__fmt_shape(s2, sizeof s2, ndim, shape), loom__shape_str(s1, sizeof s1, t));
        return NULL;
    }
    loom_tensor *c = loom_contiguous(t);
    if (!c) return NULL;
    loom__contiguous_strides(ndim, shape, strides);
    loom_tensor *out = loom__record_view(LOOM_OP_VIEW_RESHAPE, NULL, c, ndim, shape, strides, 0);
    loom__drop(c);
    return out;
}

loom_tensor *loom_reshape(loom_tensor *t, int ndim, const int64_t *shape)
{
    return reshape_impl("reshape", t, ndim, shape, true);
}

loom_tensor *loom_view(loom_tensor *t, int ndim, const int64_t *shape)
{
    return reshape_impl("view", t, ndim, shape, false);
}

loom_tensor *loom_permute(loom_tensor *t, int ndim, const int *dims)
{
    if (!loom__check_inputs("permute", 1, &t)) return NULL;
    if (ndim != t->ndim || (ndim && !dims)) {
        loom__set_error(LOOM_ERR_SHAPE, "permute: %d dims given for a tensor of %d dims", ndim, t->ndim);
        return NULL;
    }
    loom__attrs a;
    int64_t shape[LOOM_MAX_DIMS], strides[LOOM_MAX_DIMS];
    bool seen[LOOM_MAX_DIMS] = {false};
    for (int i = 0; i < ndim; i++) {
        int d;
        if (loom__norm_dim("permute", dims[i], ndim, &d) != LOOM_OK) return NULL;
        if (seen[d]) {
            loom__set_error(LOOM_ERR_SHAPE, "permute: dim %d appears twice", d);
            return NULL;
        }
        seen[d] = true;
        a.permute.perm[i] = d;
        shape[i] = t->shape[d];
        strides[i] = t->strides[d];
    }
    return loom__record_view(LOOM_OP_VIEW_PERMUTE, &a, t, ndim, shape, strides, t->offset);
}

loom_tensor *loom_transpose(loom_tensor *t, int dim0, int dim1)
{
    if (!loom__check_inputs("transpose", 1, &t)) return NULL;
    int d0, d1;
    if (loom__norm_dim("transpose", dim0, t->ndim, &d0) != LOOM_OK) return NULL;
    if (loom__norm_dim("transpose", dim1, t->ndim, &d1) != LOOM_OK) return NULL;
    if (t->ndim == 0) return loom_alias(t);
    int perm[LOOM_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return loom_permute(t, t->ndim, perm);
}

loom_tensor *loom_slice(loom_tensor *t, int dim, int64_t start, int64_t end, int64_t step)
{
    if (!loom__check_inputs("slice", 1, &t)) return NULL;
    if (t->ndim == 0) {
        loom__set_error(LOOM_ERR_SHAPE, "slice: cannot slice a 0-dim tensor");
        return NULL;
    }
    int d;
    if (loom__norm_dim("slice", dim, t->ndim, &d) != LOOM_OK) return NULL;
    if (step < 1) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "slice: step must be >= 1, got %lld", (long long)step);
        return NULL;
    }
    int64_t n = t->shape[d];
    /* Python's clamping: negative counts from the end, then clip to [0, n]. */
    if (start < 0) start += n;
    if (end < 0) end += n;
    start = start < 0 ? 0 : start > n ? n : start;
    end = end < start ? start : end > n ? n : end;
    int64_t shape[LOOM_MAX_DIMS], strides[LOOM_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    memcpy(strides, t->strides, sizeof strides);
    shape[d] = (end - start + step - 1) / step;
    strides[d] = t->strides[d] * step;
    loom__attrs a = {.slice = {d, start, step, false}};
    return loom__record_view(LOOM_OP_VIEW_SLICE, &a, t, t->ndim, shape, strides, t->offset + start * t->strides[d]);
}

loom_tensor *loom_select(loom_tensor *t, int dim, int64_t index)
{
    if (!loom__check_inputs("select", 1, &t)) return NULL;
    if (t->ndim == 0) {
        loom__set_error(LOOM_ERR_SHAPE, "select: cannot index a 0-dim tensor");
        return NULL;
    }
    int d;
    if (loom__norm_dim("select", dim, t->ndim, &d) != LOOM_OK) return NULL;
    int64_t n = t->shape[d];
    if (index < -n || index >= n) {
        loom__set_error(LOOM_ERR_RANGE, "select: index %lld is out of range for dim %d of size %lld",
                        (long long)index, d, (long long)n);
        return NULL;
    }
    if (index < 0) index += n;
    int64_t shape[LOOM_MAX_DIMS], strides[LOOM_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (i == d) continue;
        shape[k] = t->shape[i];
        strides[k++] = t->strides[i];
    }
    loom__attrs a = {.slice = {d, index, 1, true}};
    return loom__record_view(LOOM_OP_VIEW_SLICE, &a, t, k, shape, strides, t->offset + index * t->strides[d]);
}

/* Removes/inserts dims with the strides preserved: always a view. */
static loom_tensor *restride(loom_tensor *t, int ndim, const int64_t *shape, const int64_t *strides)
{
    return loom__record_view(LOOM_OP_VIEW_RESHAPE, NULL, t, ndim, shape, strides, t->offset);
}

loom_tensor *loom_squeeze(loom_tensor *t, int dim)
{
    if (!loom__check_inputs("squeeze", 1, &t)) return NULL;
    int d;
    if (loom__norm_dim("squeeze", dim, t->ndim, &d) != LOOM_OK) return NULL;
    if (t->ndim == 0 || t->shape[d] != 1) return loom_alias(t);
    int64_t shape[LOOM_MAX_DIMS], strides[LOOM_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (i == d) continue;
        shape[k] = t->shape[i];
        strides[k++] = t->strides[i];
    }
    return restride(t, k, shape, strides);
}

loom_tensor *loom_squeeze_all(loom_tensor *t)
{
    if (!loom__check_inputs("squeeze", 1, &t)) return NULL;
    int64_t shape[LOOM_MAX_DIMS], strides[LOOM_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 1) continue;
        shape[k] = t->shape[i];
        strides[k++] = t->strides[i];
    }
    return restride(t, k, shape, strides);
}

loom_tensor *loom_unsqueeze(loom_tensor *t, int dim)
{
    if (!loom__check_inputs("unsqueeze", 1, &t)) return NULL;
    if (t->ndim == LOOM_MAX_DIMS) {
        loom__set_error(LOOM_ERR_SHAPE, "unsqueeze: a tensor of %d dims cannot gain another", LOOM_MAX_DIMS);
        return NULL;
    }
    int d;
    if (loom__norm_dim("unsqueeze", dim, t->ndim + 1, &d) != LOOM_OK) return NULL;
    int64_t shape[LOOM_MAX_DIMS], strides[LOOM_MAX_DIMS];
    int k = 0;
    for (int i = 0; i <= t->ndim; i++) {
        if (i == d) {
            shape[i] = 1;
            /* Any stride works for a size-1 dim; PyTorch uses size*stride of
             * the next dim so that contiguity is preserved. */
            strides[i] = i < t->ndim ? t->shape[i] * t->strides[i] : 1;
        } else {
            shape[i] = t->shape[k];
            strides[i] = t->strides[k++];
        }
    }
    return restride(t, t->ndim + 1, shape, strides);
}

loom_tensor *loom_expand(loom_tensor *t, int ndim, const int64_t *req)
{
    if (!loom__check_inputs("expand", 1, &t)) return NULL;
    if (ndim < t->ndim || ndim > LOOM_MAX_DIMS || (ndim && !req)) {
        loom__set_error(LOOM_ERR_SHAPE, "expand: cannot expand a tensor of %d dims to %d dims", t->ndim, ndim);
        return NULL;
    }
    int64_t shape[LOOM_MAX_DIMS], strides[LOOM_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int64_t want = req[i];
        if (i < lead) {
            if (want < 0) {
                loom__set_error(LOOM_ERR_SHAPE, "expand: size -1 is not allowed for the new leading dim %d", i);
                return NULL;
            }
            shape[i] = want;
            strides[i] = 0;
            continue;
        }
        int64_t have = t->shape[i - lead];
        if (want == -1 || want == have) {
            shape[i] = have;
            strides[i] = t->strides[i - lead];
        } else if (have == 1 && want >= 0) {
            shape[i] = want;
            strides[i] = 0;
        } else {
            char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
            loom__set_error(LOOM_ERR_SHAPE, "expand: the size %lld at dim %d must match the existing size %lld (shape %s to %s)",
                            (long long)want, i, (long long)have, loom__shape_str(s1, sizeof s1, t),
                            loom__fmt_shape(s2, sizeof s2, ndim, req));
            return NULL;
        }
    }
    return loom__record_view(LOOM_OP_VIEW_EXPAND, NULL, t, ndim, shape, strides, t->offset);
}

loom_tensor *loom_flatten(loom_tensor *t, int start_dim, int end_dim)
{
    if (!loom__check_inputs("flatten", 1, &t)) return NULL;
    int s, e;
    if (loom__norm_dim("flatten", start_dim, t->ndim, &s) != LOOM_OK) return NULL;
    if (loom__norm_dim("flatten", end_dim, t->ndim, &e) != LOOM_OK) return NULL;
    if (t->ndim == 0) return loom_reshape(t, 1, (const int64_t[]){1});
    if (s > e) {
        loom__set_error(LOOM_ERR_RANGE, "flatten: start_dim %d comes after end_dim %d", s, e);
        return NULL;
    }
    int64_t shape[LOOM_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < s; i++) shape[k++] = t->shape[i];
    int64_t m = 1;
    for (int i = s; i <= e; i++) m *= t->shape[i];
    shape[k++] = m;
    for (int i = e + 1; i < t->ndim; i++) shape[k++] = t->shape[i];
    return loom_reshape(t, k, shape);
}

loom_tensor *loom_contiguous(loom_tensor *t)
{
    if (!loom__check_inputs("contiguous", 1, &t)) return NULL;
    if (loom__is_contiguous(t->ndim, t->shape, t->strides)) return loom_alias(t);
    return loom__record(LOOM_OP_COPY, NULL, 1, &t, t->dtype, t->ndim, t->shape);
}

loom_tensor *loom_alias(loom_tensor *t)
{
    if (!loom__check_inputs("alias", 1, &t)) return NULL;
    return loom__record_view(LOOM_OP_VIEW_ALIAS, NULL, t, t->ndim, t->shape, t->strides, t->offset);
}
