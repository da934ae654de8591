/*
 * ops/index.c - cat, stack, index_select, gather, and their adjoints:
 * slice_scatter (internal), index_add, scatter_add.
 */
#include <string.h>

#include "ops/ops_internal.h"

loom_tensor *loom_cat(loom_tensor *const *ts, int n, int dim)
{
    if (n < 1 || !ts) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "cat: expected at least one tensor, got %d", n);
        return NULL;
    }
    if (!loom__check_inputs("cat", n, ts)) return NULL;
    const loom_tensor *t0 = ts[0];
    if (t0->ndim == 0) {
        loom__set_error(LOOM_ERR_SHAPE, "cat: 0-dim tensors cannot be concatenated (use stack)");
        return NULL;
    }
    int d;
    if (loom__norm_dim("cat", dim, t0->ndim, &d) != LOOM_OK) return NULL;
    int64_t shape[LOOM_MAX_DIMS];
    memcpy(shape, t0->shape, sizeof shape);
    shape[d] = 0;
    for (int i = 0; i < n; i++) {
        const loom_tensor *t = ts[i];
        char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
        if (t->dtype != t0->dtype) {
            loom__set_error(LOOM_ERR_DTYPE, "cat: tensor %d is %s but tensor 0 is %s", i, loom_dtype_name(t->dtype),
                            loom_dtype_name(t0->dtype));
            return NULL;
        }
        bool ok = t->ndim == t0->ndim;
        for (int k = 0; ok && k < t->ndim; k++) ok = k == d || t->shape[k] == t0->shape[k];
        if (!ok) {
            loom__set_error(LOOM_ERR_SHAPE, "cat: tensor %d has shape %s, which does not match %s outside dim %d", i,
                            loom__shape_str(s1, sizeof s1, t), loom__shape_str(s2, sizeof s2, t0), d);
            return NULL;
        }
        shape[d] += t->shape[d];
    }
    loom__attrs a = {.axis = {d}};
    return loom__record(LOOM_OP_CAT, &a, n, ts, t0->dtype, t0->ndim, shape);
}

loom_tensor *loom_stack(loom_tensor *const *ts, int n, int dim)
{
    if (n < 1 || !ts) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "stack: expected at least one tensor, got %d", n);
        return NULL;
    }
    if (!loom__check_inputs("stack", n, ts)) return NULL;
    int d;
    if (loom__norm_dim("stack", dim, ts[0]->ndim + 1, &d) != LOOM_OK) return NULL;
    for (int i = 1; i < n; i++) {
        if (ts[i]->ndim != ts[0]->ndim ||
            memcmp(ts[i]->shape, ts[0]->shape, sizeof(int64_t) * (size_t)ts[0]->ndim) != 0) {
            char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
            loom__set_error(LOOM_ERR_SHAPE, "stack: tensor %d has shape %s but tensor 0 has shape %s", i,
                            loom__shape_str(s1, sizeof s1, ts[i]), loom__shape_str(s2, sizeof s2, ts[0]));
            return NULL;
        }
    }
    loom_tensor *local[16];
    loom_tensor **u = n <= 16 ? local : loom__mem_alloc(&ts[0]->ctx->mem, sizeof *u * (size_t)n);
    if (!u) {
        loom__set_error(LOOM_ERR_NOMEM, "stack: out of memory");
        return NULL;
    }
    int made = 0;
    for (; made < n; made++)
        if (!(u[made] = loom_unsqueeze(ts[made], d))) break;
    loom_tensor *out = made == n ? loom_cat(u, n, d) : NULL;
    for (int i = 0; i < made; i++) loom__drop(u[i]);
    if (u != local) loom__mem_free(&ts[0]->ctx->mem, u);
    return out;
}

loom_tensor *loom_index_select(loom_tensor *t, int dim, loom_tensor *index)
{
    loom_tensor *in[2] = {t, index};
    if (!loom__check_inputs("index_select", 2, in)) return NULL;
    int d;
    if (loom__norm_dim("index_select", dim, t->ndim, &d) != LOOM_OK) return NULL;
    if (index->dtype != LOOM_INT64) {
        loom__set_error(LOOM_ERR_DTYPE, "index_select: index must be int64, got %s", loom_dtype_name(index->dtype));
        return NULL;
    }
    if (index->ndim > 1) {
        char s[LOOM__SHAPE_STR_MAX];
        loom__set_error(LOOM_ERR_SHAPE, "index_select: index must be 1-D, got shape %s",
                        loom__shape_str(s, sizeof s, index));
        return NULL;
    }
    int64_t shape[LOOM_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    int ndim = t->ndim;
    if (ndim == 0) { /* a scalar source: index must have one element */
        ndim = 0;
    } else {
        shape[d] = loom__numel(index->ndim, index->shape);
    }
    if (t->ndim == 0 && loom__numel(index->ndim, index->shape) != 1) {
        loom__set_error(LOOM_ERR_SHAPE, "index_select: a 0-dim source takes exactly one index");
        return NULL;
    }
    loom_tensor *idx = index->ndim == 1 ? index : loom_reshape(index, 1, (const int64_t[]){1});
    if (!idx) return NULL;
    loom_tensor *src = t->ndim ? t : loom_reshape(t, 1, (const int64_t[]){1});
    loom_tensor *out = NULL;
    if (src) {
        int64_t s1[1] = {1};
        loom__attrs a = {.axis = {d}};
        out = loom__record(LOOM_OP_INDEX_SELECT, &a, 2, (loom_tensor *[]){src, idx}, t->dtype, t->ndim ? ndim : 1,
                           t->ndim ? shape : s1);
    }
    if (src && src != t) {
        loom__drop(src);
        if (out) {
            loom_tensor *r = loom_reshape(out, 0, NULL);
            loom__drop(out);
            out = r;
        }
    }
    if (idx != index) loom__drop(idx);
    return out;
}

loom_tensor *loom_gather(loom_tensor *t, int dim, loom_tensor *index)
{
    loom_tensor *in[2] = {t, index};
    if (!loom__check_inputs("gather", 2, in)) return NULL;
    int d;
    if (loom__norm_dim("gather", dim, t->ndim, &d) != LOOM_OK) return NULL;
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    if (index->dtype != LOOM_INT64) {
        loom__set_error(LOOM_ERR_DTYPE, "gather: index must be int64, got %s", loom_dtype_name(index->dtype));
        return NULL;
    }
    if (t->ndim == 0) {
        loom__set_error(LOOM_ERR_SHAPE, "gather: the source must have at least 1 dim");
        return NULL;
    }
    bool ok = index->ndim == t->ndim;
    for (int k = 0; ok && k < t->ndim; k++) ok = k == d || index->shape[k] <= t->shape[k];
    if (!ok) {
        loom__set_error(LOOM_ERR_SHAPE, "gather: index shape %s does not fit source shape %s at dim %d (index needs the "
                        "same number of dims and sizes no larger outside dim)",
                        loom__shape_str(s1, sizeof s1, index), loom__shape_str(s2, sizeof s2, t), d);
        return NULL;
    }
    loom__attrs a = {.axis = {d}};
    return loom__record(LOOM_OP_GATHER, &a, 2, (loom_tensor *[]){t, index}, t->dtype, index->ndim, index->shape);
}

/* ---- the adjoints ----------------------------------------------------------- */

loom_tensor *loom__slice_scatter(loom_tensor *src, int ndim, const int64_t *shape, int dim, int64_t start,
                                 int64_t step)
{
    if (!loom__check_inputs("slice_scatter", 1, &src)) return NULL;
    if (loom__check_shape("slice_scatter", ndim, shape) != LOOM_OK) return NULL;
    if (ndim == 0) {
        loom__set_error(LOOM_ERR_SHAPE, "slice_scatter: the output must have at least 1 dim");
        return NULL;
    }
    int d;
    if (loom__norm_dim("slice_scatter", dim, ndim, &d) != LOOM_OK) return NULL;
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    bool ok = src->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = k == d || src->shape[k] == shape[k];
    if (!ok) {
        loom__set_error(LOOM_ERR_SHAPE, "slice_scatter: source shape %s does not match output shape %s outside dim %d",
                        loom__shape_str(s1, sizeof s1, src), loom__fmt_shape(s2, sizeof s2, ndim, shape), d);
        return NULL;
    }
    if (step < 1) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "slice_scatter: step must be >= 1, got %lld", (long long)step);
        return NULL;
    }
    const int64_t n = src->shape[d], size = shape[d];
    if (start < 0 || start > size) {
        loom__set_error(LOOM_ERR_RANGE, "slice_scatter: start %lld is out of range for dim %d of size %lld",
                        (long long)start, d, (long long)size);
        return NULL;
    }
    /* The last element, start + (n - 1) * step, must be inside the dim
     * (written without overflow). */
    if (n > 0 && (start >= size || n - 1 > (size - 1 - start) / step)) {
        loom__set_error(LOOM_ERR_SHAPE,
                        "slice_scatter: %lld elements from %lld with step %lld do not fit dim %d of size %lld "
                        "(source %s, output %s)",
                        (long long)n, (long long)start, (long long)step, d, (long long)size,
                        loom__shape_str(s1, sizeof s1, src), loom__fmt_shape(s2, sizeof s2, ndim, shape));
        return NULL;
    }
    loom__attrs a = {.slice = {d, start, step, false}};
    return loom__record(LOOM_OP_SLICE_SCATTER, &a, 1, &src, src->dtype, ndim, shape);
}

/* The dtype rules index_add and scatter_add share: an int64 index, and t and
 * src of one dtype, float32 or int64 (PyTorch requires the same dtype too). */
static bool check_add_dtypes(const char *op, const loom_tensor *t, const loom_tensor *index, const loom_tensor *src)
{
    if (index->dtype != LOOM_INT64) {
        loom__set_error(LOOM_ERR_DTYPE, "%s: index must be int64, got %s", op, loom_dtype_name(index->dtype));
        return false;
    }
    if (src->dtype != t->dtype) {
        loom__set_error(LOOM_ERR_DTYPE, "%s: source dtype %s differs from the tensor's %s", op,
                        loom_dtype_name(src->dtype), loom_dtype_name(t->dtype));
        return false;
    }
    if (t->dtype != LOOM_FLOAT32 && t->dtype != LOOM_INT64) {
        loom__set_error(LOOM_ERR_DTYPE, "%s: dtype %s is not supported (float32 or int64)", op,
                        loom_dtype_name(t->dtype));
        return false;
    }
    return true;
}

/* t + z, where z is the recorded zero-based adjoint node (dropped here). */
static loom_tensor *add_to(loom_tensor *t, loom_tensor *z)
{
    if (!z) return NULL;
    loom_tensor *out = loom_add(t, z);
    loom__drop(z);
    return out;
}

/* A 0-dim t, index and src are handled as 1-element 1-D ones, and the result
 * viewed as 0-dim again. */
typedef loom_tensor *(*add_op_fn)(loom_tensor *, int, loom_tensor *, loom_tensor *);
static loom_tensor *add_op_0d(add_op_fn fn, loom_tensor *t, int dim, loom_tensor *index, loom_tensor *src)
{
    const int64_t one[1] = {1};
    loom_tensor *t1 = loom_reshape(t, 1, one);
    loom_tensor *i1 = index->ndim ? index : loom_reshape(index, 1, one);
    loom_tensor *s1 = src->ndim ? src : loom_reshape(src, 1, one);
    loom_tensor *r = t1 && i1 && s1 ? fn(t1, dim, i1, s1) : NULL;
    loom_tensor *out = r ? loom_reshape(r, 0, NULL) : NULL;
    loom__drop(r);
    loom__drop(t1);
    if (i1 != index) loom__drop(i1);
    if (s1 != src) loom__drop(s1);
    return out;
}

loom_tensor *loom_index_add(loom_tensor *t, int dim, loom_tensor *index, loom_tensor *src)
{
    loom_tensor *in[3] = {t, index, src};
    if (!loom__check_inputs("index_add", 3, in)) return NULL;
    int d;
    if (loom__norm_dim("index_add", dim, t->ndim, &d) != LOOM_OK) return NULL;
    if (!check_add_dtypes("index_add", t, index, src)) return NULL;
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX], s3[LOOM__SHAPE_STR_MAX];
    if (index->ndim > 1) {
        loom__set_error(LOOM_ERR_SHAPE, "index_add: index must be 1-D, got shape %s",
                        loom__shape_str(s1, sizeof s1, index));
        return NULL;
    }
    const int64_t len = loom__numel(index->ndim, index->shape);
    if (t->ndim == 0) {
        /* PyTorch allows a 0-dim t with a 0-dim (or 1-element) source and index. */
        if (src->ndim > 1 || loom__numel(src->ndim, src->shape) != 1 || len != 1) {
            loom__set_error(LOOM_ERR_SHAPE, "index_add: a 0-dim tensor takes one index and a one-element source, "
                            "got index %s and source %s",
                            loom__shape_str(s1, sizeof s1, index), loom__shape_str(s2, sizeof s2, src));
            return NULL;
        }
        return add_op_0d(loom_index_add, t, 0, index, src);
    }
    if (src->ndim == 0 && t->ndim == 1) { /* PyTorch takes a 0-dim source as one row */
        loom_tensor *row = loom_reshape(src, 1, (const int64_t[]){1});
        loom_tensor *out = row ? loom_index_add(t, d, index, row) : NULL;
        loom__drop(row);
        return out;
    }
    bool ok = src->ndim == t->ndim;
    for (int k = 0; ok && k < t->ndim; k++) ok = src->shape[k] == (k == d ? len : t->shape[k]);
    if (!ok) {
        loom__set_error(LOOM_ERR_SHAPE, "index_add: source shape %s does not match tensor shape %s with an index of "
                        "%lld entries at dim %d (index shape %s)",
                        loom__shape_str(s1, sizeof s1, src), loom__shape_str(s2, sizeof s2, t), (long long)len, d,
                        loom__shape_str(s3, sizeof s3, index));
        return NULL;
    }
    loom_tensor *idx = index->ndim == 1 ? index : loom_reshape(index, 1, (const int64_t[]){1});
    if (!idx) return NULL;
    loom__attrs a = {.axis = {d}};
    loom_tensor *z = loom__record(LOOM_OP_INDEX_ADD, &a, 2, (loom_tensor *[]){src, idx}, t->dtype, t->ndim, t->shape);
    if (idx != index) loom__drop(idx);
    return add_to(t, z);
}

loom_tensor *loom_scatter_add(loom_tensor *t, int dim, loom_tensor *index, loom_tensor *src)
{
    loom_tensor *in[3] = {t, index, src};
    if (!loom__check_inputs("scatter_add", 3, in)) return NULL;
    int d;
    if (loom__norm_dim("scatter_add", dim, t->ndim, &d) != LOOM_OK) return NULL;
    if (!check_add_dtypes("scatter_add", t, index, src)) return NULL;
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX], s3[LOOM__SHAPE_STR_MAX];
    /* PyTorch's rules: one ndim for all three; index no larger than src in
     * every dim, and no larger than t outside dim. */
    bool ok = index->ndim == t->ndim && src->ndim == t->ndim;
    for (int k = 0; ok && k < t->ndim; k++)
        ok = index->shape[k] <= src->shape[k] && (k == d || index->shape[k] <= t->shape[k]);
    if (!ok) {
        loom__set_error(LOOM_ERR_SHAPE, "scatter_add: index shape %s does not fit tensor shape %s and source shape %s "
                        "at dim %d (index needs their number of dims, sizes no larger than the source's, and no "
                        "larger than the tensor's outside dim)",
                        loom__shape_str(s1, sizeof s1, index), loom__shape_str(s2, sizeof s2, t),
                        loom__shape_str(s3, sizeof s3, src), d);
        return NULL;
    }
    if (t->ndim == 0) return add_op_0d(loom_scatter_add, t, 0, index, src);
    /* Only index's extent of src takes part: narrow src to index's shape (views). */
    loom_tensor *s = src;
    for (int k = 0; s && k < t->ndim; k++) {
        if (index->shape[k] == s->shape[k]) continue;
        loom_tensor *n = loom_slice(s, k, 0, index->shape[k], 1);
        if (s != src) loom__drop(s);
        s = n;
    }
    if (!s) return NULL;
    loom__attrs a = {.axis = {d}};
    loom_tensor *z = loom__record(LOOM_OP_SCATTER_ADD, &a, 2, (loom_tensor *[]){s, index}, t->dtype, t->ndim, t->shape);
    if (s != src) loom__drop(s);
    return add_to(t, z);
}
