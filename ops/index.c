/*
 * ops/index.c - cat, stack, index_select, gather.
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
