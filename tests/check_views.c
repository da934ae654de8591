/*
 * tests/check_views.c - views (reshape, view, permute, transpose, slice,
 * select, squeeze, unsqueeze, expand, flatten, contiguous, alias): shapes,
 * strides as PyTorch has them, storage sharing, and the values read through
 * them, including views of lazy tensors and views that outlive their base.
 *
 * Expected values come from the index formulas of each view, written out by
 * hand or computed with plain loops here.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check_suites.h"

/* Asserts t's strides. */
static void check_strides(loom_tensor *t, int ndim, const int64_t *want, int line)
{
    ck_assert_msg(t != NULL, "line %d: tensor is NULL: %s", line, loom_last_error());
    ck_assert_msg(loom_tensor_ndim(t) == ndim, "line %d: ndim %d, expected %d", line, loom_tensor_ndim(t), ndim);
    for (int d = 0; d < ndim; d++)
        ck_assert_msg(loom_tensor_stride(t, d) == want[d], "line %d: stride of dim %d is %lld, expected %lld", line, d,
                      (long long)loom_tensor_stride(t, d), (long long)want[d]);
}
#define assert_strides(t, ...) \
    check_strides((t), LOOM__NARGS(__VA_ARGS__), (const int64_t[]){__VA_ARGS__}, __LINE__)

/* arange(n) as float32 with shape. */
static loom_tensor *iota(loom_ctx *ctx, int ndim, const int64_t *shape)
{
    int64_t n = numel_of(ndim, shape);
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ck_assert(v);
    for (int64_t i = 0; i < n; i++) v[i] = (float)i;
    loom_tensor *t = loom_tensor_from_array(ctx, LOOM_FLOAT32, v, ndim, shape);
    free(v);
    ck_assert_msg(t != NULL, "%s", loom_last_error());
    return t;
}

/* Checks the values of a view of an iota tensor: element i of the view
 * (row-major over `shape`) must be offset + sum(idx * strides), i.e. the
 * storage index PyTorch's strides give. */
static void check_view_values(loom_tensor *t, int ndim, const int64_t *shape, const int64_t *strides, int64_t offset,
                              int line)
{
    int64_t n = numel_of(ndim, shape);
    float *want = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ck_assert(want);
    int64_t idx[LOOM_MAX_DIMS];
    for (int64_t i = 0; i < n; i++) {
        unravel(i, ndim, shape, idx);
        int64_t off = offset;
        for (int d = 0; d < ndim; d++) off += idx[d] * strides[d];
        want[i] = (float)off;
    }
    test_assert_shape(t, ndim, shape, __FILE__, line);
    test_assert_f32(t, want, n, 0, __FILE__, line);
    free(want);
}
#define CHECK_VIEW(t, ndim, shape, strides, offset) \
    check_view_values((t), (ndim), (const int64_t[])shape, (const int64_t[])strides, (offset), __LINE__)
#define S(...) {__VA_ARGS__}

/* ---- reshape / view ----------------------------------------------------- */

START_TEST(test_reshape_view)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = iota(ctx, LOOM_SHAPE(12));
    loom_tensor *r = loom_reshape(x, LOOM_SHAPE(3, -1));
    assert_shape(r, 3, 4);
    assert_strides(r, 4, 1);
    ck_assert(loom_tensor_shares_storage(r, x));
    CHECK_VIEW(r, 2, S(3, 4), S(4, 1), 0);
    r = loom_reshape(x, LOOM_SHAPE(2, -1, 2));
    assert_shape(r, 2, 3, 2);
    assert_strides(r, 6, 2, 1);
    r = loom_view(x, LOOM_SHAPE(-1, 6));
    assert_shape(r, 2, 6);
    ck_assert(loom_tensor_shares_storage(r, x));
    CHECK_VIEW(r, 2, S(2, 6), S(6, 1), 0);
    r = loom_view(loom_view(x, LOOM_SHAPE(3, 4)), LOOM_SHAPE(-1));
    assert_shape(r, 12);
    ck_assert(loom_tensor_shares_storage(r, x));
    /* Size-1 dims anywhere. */
    r = loom_view(x, LOOM_SHAPE(1, 3, 1, 4, 1));
    assert_shape(r, 1, 3, 1, 4, 1);
    CHECK_VIEW(r, 5, S(1, 3, 1, 4, 1), S(12, 4, 4, 1, 1), 0);
    /* One element to 0-dim and back. */
    loom_tensor *one = loom_tensor_from_array(ctx, LOOM_FLOAT32, (const float[]){7}, LOOM_SHAPE(1, 1));
    r = loom_reshape(one, 0, NULL);
    assert_shape0(r);
    EXPECT_F32(r, 0, 7);
    r = loom_reshape(r, LOOM_SHAPE(-1));
    assert_shape(r, 1);
    EXPECT_F32(r, 0, 7);
    /* Empty tensors reshape too, with -1 inferred from the other sizes. */
    loom_tensor *e = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0, 4));
    r = loom_reshape(e, LOOM_SHAPE(2, 0, 2));
    assert_shape(r, 2, 0, 2);
    r = loom_reshape(e, LOOM_SHAPE(-1, 2));
    assert_shape(r, 0, 2);
    /* int64 and bool keep their dtype. */
    EXPECT_I64(loom_view(I64(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4), LOOM_SHAPE(4)), 1, 2, 3, 4);
    EXPECT_BOOL(loom_reshape(B8(ctx, LOOM_SHAPE(4), 1, 0, 0, 1), LOOM_SHAPE(2, 2)), 1, 0, 0, 1);
    /* Errors. */
    assert_error(loom_reshape(x, LOOM_SHAPE(5, -1)), LOOM_ERR_SHAPE, "reshape");
    assert_error(loom_reshape(x, LOOM_SHAPE(-1, -1)), LOOM_ERR_SHAPE, "reshape");
    assert_error(loom_view(x, LOOM_SHAPE(3, 5)), LOOM_ERR_SHAPE, "view");
    assert_error(loom_reshape(x, LOOM_SHAPE(-2, 6)), LOOM_ERR_SHAPE, "reshape");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_view_noncontiguous)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = iota(ctx, LOOM_SHAPE(3, 4));
    loom_tensor *t = loom_transpose(x, 0, 1); /* [4,3], strides [1,4] */
    /* view cannot flatten a transposed tensor. */
    assert_error(loom_view(t, LOOM_SHAPE(12)), LOOM_ERR_SHAPE, "view");
    assert_error(loom_view(t, LOOM_SHAPE(3, 4)), LOOM_ERR_SHAPE, "view");
    /* reshape copies it, in the transposed (logical) order. */
    loom_tensor *r = loom_reshape(t, LOOM_SHAPE(12));
    ck_assert_ptr_nonnull(r);
    ck_assert(!loom_tensor_shares_storage(r, x));
    ck_assert(loom_tensor_is_contiguous(r));
    EXPECT_F32(r, 0, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11);
    r = loom_reshape(t, LOOM_SHAPE(2, 6));
    EXPECT_F32(r, 0, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11);
    /* ... but a view that only splits or keeps dims works (as PyTorch). */
    r = loom_view(t, LOOM_SHAPE(2, 2, 3));
    ck_assert_ptr_nonnull(r);
    ck_assert(loom_tensor_shares_storage(r, x));
    assert_strides(r, 2, 1, 4);
    CHECK_VIEW(r, 3, S(2, 2, 3), S(2, 1, 4), 0);
    r = loom_view(t, LOOM_SHAPE(4, 1, 3));
    ck_assert(loom_tensor_shares_storage(r, x));
    CHECK_VIEW(r, 3, S(4, 1, 3), S(1, 1, 4), 0);
    /* A [2,3,4] tensor with dims 0 and 1 swapped: the last dim can be split
     * or kept, the first two cannot be merged. */
    loom_tensor *y = iota(ctx, LOOM_SHAPE(2, 3, 4));
    loom_tensor *p = loom_transpose(y, 0, 1); /* [3,2,4], strides [4,12,1] */
    r = loom_view(p, LOOM_SHAPE(3, 2, 2, 2));
    ck_assert(loom_tensor_shares_storage(r, y));
    assert_strides(r, 4, 12, 2, 1);
    CHECK_VIEW(r, 4, S(3, 2, 2, 2), S(4, 12, 2, 1), 0);
    r = loom_view(p, LOOM_SHAPE(3, 8));
    ck_assert_ptr_null(r);
    r = loom_reshape(p, LOOM_SHAPE(6, 4));
    ck_assert(!loom_tensor_shares_storage(r, y));
    float want[24];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 4; k++) want[(i * 2 + j) * 4 + k] = (float)(j * 12 + i * 4 + k);
    assert_values_f32(r, want, 24, 0);
    /* Columns 0 and 2 of [3,4] are evenly spaced (strides [4,2]): they merge
     * into one dim of stride 2, as in PyTorch. */
    loom_tensor *s2 = loom_slice(x, 1, 0, 4, 2);
    r = loom_view(s2, LOOM_SHAPE(6));
    ck_assert_ptr_nonnull(r);
    ck_assert(loom_tensor_shares_storage(r, x));
    assert_strides(r, 2);
    EXPECT_F32(r, 0, 0, 2, 4, 6, 8, 10);
    /* Columns 0 and 3 (strides [4,3]) can gain size-1 dims but not merge. */
    loom_tensor *s = loom_slice(x, 1, 0, 4, 3);
    r = loom_view(s, LOOM_SHAPE(3, 1, 2));
    ck_assert(loom_tensor_shares_storage(r, x));
    CHECK_VIEW(r, 3, S(3, 1, 2), S(4, 3, 3), 0);
    assert_error(loom_view(s, LOOM_SHAPE(6)), LOOM_ERR_SHAPE, "view");
    r = loom_reshape(s, LOOM_SHAPE(6));
    ck_assert(!loom_tensor_shares_storage(r, x));
    EXPECT_F32(r, 0, 0, 3, 4, 7, 8, 11);
    /* Expanded (stride 0) tensors: splitting keeps stride 0, merging a
     * broadcast dim with a real one needs a copy. */
    loom_tensor *e = loom_expand(iota(ctx, LOOM_SHAPE(3, 1)), LOOM_SHAPE(3, 4));
    r = loom_view(e, LOOM_SHAPE(3, 2, 2));
    ck_assert_ptr_nonnull(r);
    assert_strides(r, 1, 0, 0);
    EXPECT_F32(r, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2);
    assert_error(loom_view(e, LOOM_SHAPE(12)), LOOM_ERR_SHAPE, "view");
    r = loom_reshape(e, LOOM_SHAPE(12));
    ck_assert(!loom_tensor_shares_storage(r, e));
    EXPECT_F32(r, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2);
    loom_tensor *e2 = loom_expand(iota(ctx, LOOM_SHAPE(3)), LOOM_SHAPE(2, 3));
    r = loom_reshape(e2, LOOM_SHAPE(6));
    EXPECT_F32(r, 0, 0, 1, 2, 0, 1, 2);
    r = loom_flatten(loom_expand(iota(ctx, LOOM_SHAPE(1)), LOOM_SHAPE(2, 2)), 0, 1);
    EXPECT_F32(r, 0, 0, 0, 0, 0);
    /* Rows sliced out of a contiguous tensor stay viewable. */
    r = loom_view(loom_slice(x, 0, 1, 3, 1), LOOM_SHAPE(8));
    ck_assert(loom_tensor_shares_storage(r, x));
    EXPECT_F32(r, 0, 4, 5, 6, 7, 8, 9, 10, 11);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- permute / transpose ------------------------------------------------- */

START_TEST(test_permute_transpose)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = iota(ctx, LOOM_SHAPE(2, 3));
    loom_tensor *t = loom_transpose(x, 0, 1);
    assert_shape(t, 3, 2);
    assert_strides(t, 1, 3);
    ck_assert(loom_tensor_shares_storage(t, x));
    ck_assert(!loom_tensor_is_contiguous(t));
    EXPECT_F32(t, 0, 0, 3, 1, 4, 2, 5);
    t = loom_transpose(x, -1, -2);
    assert_strides(t, 1, 3);
    EXPECT_F32(t, 0, 0, 3, 1, 4, 2, 5);
    /* transpose(d, d) changes nothing. */
    t = loom_transpose(x, 1, 1);
    assert_shape(t, 2, 3);
    assert_strides(t, 3, 1);
    EXPECT_F32(t, 0, 0, 1, 2, 3, 4, 5);

    loom_tensor *y = iota(ctx, LOOM_SHAPE(2, 3, 4));
    assert_strides(y, 12, 4, 1);
    loom_tensor *p = loom_permute(y, LOOM_DIMS(2, 0, 1));
    assert_shape(p, 4, 2, 3);
    assert_strides(p, 1, 12, 4);
    ck_assert(loom_tensor_shares_storage(p, y));
    CHECK_VIEW(p, 3, S(4, 2, 3), S(1, 12, 4), 0);
    p = loom_permute(y, LOOM_DIMS(-1, 1, 0));
    assert_shape(p, 4, 3, 2);
    CHECK_VIEW(p, 3, S(4, 3, 2), S(1, 4, 12), 0);
    p = loom_permute(y, LOOM_DIMS(0, 1, 2));
    ck_assert(loom_tensor_is_contiguous(p));
    CHECK_VIEW(p, 3, S(2, 3, 4), S(12, 4, 1), 0);
    /* Permuting back restores contiguity. */
    p = loom_permute(loom_permute(y, LOOM_DIMS(2, 0, 1)), LOOM_DIMS(1, 2, 0));
    assert_shape(p, 2, 3, 4);
    assert_strides(p, 12, 4, 1);
    ck_assert(loom_tensor_is_contiguous(p));
    t = loom_transpose(y, 0, 2);
    assert_shape(t, 4, 3, 2);
    assert_strides(t, 1, 4, 12);
    /* A 0-dim tensor transposes to itself. */
    loom_tensor *s = loom_transpose(loom_scalar(ctx, LOOM_FLOAT32, 3), 0, -1);
    assert_shape0(s);
    EXPECT_F32(s, 0, 3);
    /* Errors. */
    assert_error(loom_permute(y, LOOM_DIMS(0, 0, 1)), LOOM_ERR_SHAPE, "permute");
    assert_error(loom_permute(y, LOOM_DIMS(0, 1)), LOOM_ERR_SHAPE, "permute");
    assert_error(loom_transpose(y, 0, 3), LOOM_ERR_RANGE, "transpose");
    loom_ctx_free(ctx);
}
END_TEST

/* ---- slice / select ------------------------------------------------------ */

START_TEST(test_slice)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = iota(ctx, LOOM_SHAPE(10));
    loom_tensor *r = loom_slice(x, 0, 2, 5, 1);
    assert_shape(r, 3);
    assert_strides(r, 1);
    ck_assert(loom_tensor_shares_storage(r, x));
    EXPECT_F32(r, 0, 2, 3, 4);
    /* Negative start and end count from the end. */
    EXPECT_F32(loom_slice(x, 0, -3, 10, 1), 0, 7, 8, 9);
    EXPECT_F32(loom_slice(x, 0, 0, -1, 1), 0, 0, 1, 2, 3, 4, 5, 6, 7, 8);
    EXPECT_F32(loom_slice(x, -1, -4, -2, 1), 0, 6, 7);
    /* Clamping beyond the size, as Python slices. */
    EXPECT_F32(loom_slice(x, 0, 8, 100, 1), 0, 8, 9);
    EXPECT_F32(loom_slice(x, 0, -100, 2, 1), 0, 0, 1);
    r = loom_slice(x, 0, -100, 100, 1);
    assert_shape(r, 10);
    /* Steps 2 and 3. */
    r = loom_slice(x, 0, 0, 10, 2);
    assert_shape(r, 5);
    assert_strides(r, 2);
    EXPECT_F32(r, 0, 0, 2, 4, 6, 8);
    r = loom_slice(x, 0, 1, 10, 2);
    EXPECT_F32(r, 0, 1, 3, 5, 7, 9);
    r = loom_slice(x, 0, 2, 100, 3);
    assert_shape(r, 3);
    assert_strides(r, 3);
    EXPECT_F32(r, 0, 2, 5, 8);
    r = loom_slice(x, 0, 0, 10, 3);
    EXPECT_F32(r, 0, 0, 3, 6, 9);
    EXPECT_F32(loom_slice(x, 0, -100, 4, 2), 0, 0, 2);
    EXPECT_F32(loom_slice(x, 0, 0, 10, 100), 0, 0);
    /* Empty results. */
    r = loom_slice(x, 0, 5, 2, 1);
    assert_shape(r, 0);
    assert_values_f32(r, NULL, 0, 0);
    r = loom_slice(x, 0, 10, 100, 1);
    assert_shape(r, 0);
    r = loom_slice(x, 0, -2, -5, 2);
    assert_shape(r, 0);
    r = loom_slice(x, 0, 3, 3, 1);
    assert_shape(r, 0);
    /* 2-D: both dims, with step. */
    loom_tensor *y = iota(ctx, LOOM_SHAPE(4, 5));
    r = loom_slice(y, 1, 1, 5, 2);
    assert_shape(r, 4, 2);
    assert_strides(r, 5, 2);
    CHECK_VIEW(r, 2, S(4, 2), S(5, 2), 1);
    r = loom_slice(loom_slice(y, 0, 1, 4, 2), 1, -3, 5, 1);
    assert_shape(r, 2, 3);
    assert_strides(r, 10, 1);
    CHECK_VIEW(r, 2, S(2, 3), S(10, 1), 7);
    r = loom_slice(y, 0, 1, -1, 1);
    ck_assert(loom_tensor_is_contiguous(r));
    CHECK_VIEW(r, 2, S(2, 5), S(5, 1), 5);
    r = loom_slice(y, 1, 2, 2, 1);
    assert_shape(r, 4, 0);
    /* Errors. */
    assert_error(loom_slice(x, 0, 0, 5, 0), LOOM_ERR_INVALID_ARG, "slice");
    assert_error(loom_slice(x, 1, 0, 5, 1), LOOM_ERR_RANGE, "slice");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_select)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = iota(ctx, LOOM_SHAPE(3, 4));
    loom_tensor *r = loom_select(x, 0, 1);
    assert_shape(r, 4);
    assert_strides(r, 1);
    ck_assert(loom_tensor_shares_storage(r, x));
    EXPECT_F32(r, 0, 4, 5, 6, 7);
    r = loom_select(x, 0, -1);
    EXPECT_F32(r, 0, 8, 9, 10, 11);
    r = loom_select(x, 1, -2);
    assert_shape(r, 3);
    assert_strides(r, 4);
    EXPECT_F32(r, 0, 2, 6, 10);
    r = loom_select(x, -1, 0);
    EXPECT_F32(r, 0, 0, 4, 8);
    /* Selecting from 1-D gives a 0-dim tensor; item reads it. */
    r = loom_select(loom_select(x, 0, 2), 0, -1);
    assert_shape0(r);
    double v = 0;
    ck_assert_int_eq(loom_tensor_item(r, &v), LOOM_OK);
    ck_assert_double_eq(v, 11);
    /* 3-D, middle dim. */
    loom_tensor *y = iota(ctx, LOOM_SHAPE(2, 3, 4));
    r = loom_select(y, 1, 2);
    assert_shape(r, 2, 4);
    assert_strides(r, 12, 1);
    CHECK_VIEW(r, 2, S(2, 4), S(12, 1), 8);
    /* Of a transposed tensor. */
    r = loom_select(loom_transpose(x, 0, 1), 0, 3);
    assert_strides(r, 4);
    EXPECT_F32(r, 0, 3, 7, 11);
    /* int64. */
    EXPECT_I64(loom_select(I64(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4), 1, 1), 2, 4);
    assert_error(loom_select(x, 0, 3), LOOM_ERR_RANGE, "select");
    assert_error(loom_select(x, 1, -5), LOOM_ERR_RANGE, "select");
    assert_error(loom_select(x, 2, 0), LOOM_ERR_RANGE, "select");
    loom_ctx_free(ctx);
}
END_TEST

/* ---- squeeze / unsqueeze / expand ----------------------------------------- */

START_TEST(test_squeeze_unsqueeze)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = iota(ctx, LOOM_SHAPE(1, 3, 1));
    loom_tensor *r = loom_squeeze(x, 0);
    assert_shape(r, 3, 1);
    ck_assert(loom_tensor_shares_storage(r, x));
    EXPECT_F32(r, 0, 0, 1, 2);
    r = loom_squeeze(x, -1);
    assert_shape(r, 1, 3);
    EXPECT_F32(r, 0, 0, 1, 2);
    /* A dim that is not 1: unchanged. */
    r = loom_squeeze(x, 1);
    assert_shape(r, 1, 3, 1);
    ck_assert(loom_tensor_shares_storage(r, x));
    r = loom_squeeze_all(x);
    assert_shape(r, 3);
    assert_strides(r, 1);
    EXPECT_F32(r, 0, 0, 1, 2);
    r = loom_squeeze_all(loom_tensor_from_array(ctx, LOOM_FLOAT32, (const float[]){5}, LOOM_SHAPE(1, 1)));
    assert_shape0(r);
    EXPECT_F32(r, 0, 5);
    r = loom_squeeze_all(iota(ctx, LOOM_SHAPE(2, 3)));
    assert_shape(r, 2, 3);
    /* squeeze keeps the strides of a non-contiguous tensor. */
    loom_tensor *y = iota(ctx, LOOM_SHAPE(3, 1, 4));
    r = loom_squeeze(loom_transpose(y, 0, 2), 1); /* [4,1,3] -> [4,3] */
    assert_shape(r, 4, 3);
    assert_strides(r, 1, 4);
    CHECK_VIEW(r, 2, S(4, 3), S(1, 4), 0);

    loom_tensor *v = iota(ctx, LOOM_SHAPE(3));
    r = loom_unsqueeze(v, 0);
    assert_shape(r, 1, 3);
    assert_strides(r, 3, 1);
    ck_assert(loom_tensor_is_contiguous(r));
    ck_assert(loom_tensor_shares_storage(r, v));
    EXPECT_F32(r, 0, 0, 1, 2);
    r = loom_unsqueeze(v, 1);
    assert_shape(r, 3, 1);
    assert_strides(r, 1, 1);
    r = loom_unsqueeze(v, -1);
    assert_shape(r, 3, 1);
    r = loom_unsqueeze(v, -2);
    assert_shape(r, 1, 3);
    loom_tensor *m = iota(ctx, LOOM_SHAPE(2, 3));
    r = loom_unsqueeze(m, 1);
    assert_shape(r, 2, 1, 3);
    assert_strides(r, 3, 3, 1);
    EXPECT_F32(r, 0, 0, 1, 2, 3, 4, 5);
    r = loom_unsqueeze(loom_transpose(m, 0, 1), 2);
    assert_shape(r, 3, 2, 1);
    assert_strides(r, 1, 3, 1);
    EXPECT_F32(r, 0, 0, 3, 1, 4, 2, 5);
    r = loom_unsqueeze(loom_scalar(ctx, LOOM_FLOAT32, 2), 0);
    assert_shape(r, 1);
    EXPECT_F32(r, 0, 2);
    assert_error(loom_unsqueeze(v, 2), LOOM_ERR_RANGE, "unsqueeze");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_expand)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *c = iota(ctx, LOOM_SHAPE(3, 1));
    loom_tensor *r = loom_expand(c, LOOM_SHAPE(-1, 4));
    assert_shape(r, 3, 4);
    assert_strides(r, 1, 0);
    ck_assert(loom_tensor_shares_storage(r, c));
    ck_assert(!loom_tensor_is_contiguous(r));
    EXPECT_F32(r, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2);
    /* New leading dims. */
    r = loom_expand(c, LOOM_SHAPE(2, 3, 4));
    assert_shape(r, 2, 3, 4);
    assert_strides(r, 0, 1, 0);
    CHECK_VIEW(r, 3, S(2, 3, 4), S(0, 1, 0), 0);
    loom_tensor *v = iota(ctx, LOOM_SHAPE(3));
    r = loom_expand(v, LOOM_SHAPE(2, 3));
    assert_strides(r, 0, 1);
    EXPECT_F32(r, 0, 0, 1, 2, 0, 1, 2);
    r = loom_expand(v, LOOM_SHAPE(2, -1));
    assert_shape(r, 2, 3);
    /* A 0-dim tensor expands to anything. */
    r = loom_expand(loom_scalar(ctx, LOOM_INT64, 9), LOOM_SHAPE(2, 2));
    assert_strides(r, 0, 0);
    EXPECT_I64(r, 9, 9, 9, 9);
    /* To size 0. */
    r = loom_expand(c, LOOM_SHAPE(3, 0));
    assert_shape(r, 3, 0);
    assert_values_f32(r, NULL, 0, 0);
    /* Expanding an expanded view, and an expanded transposed view. */
    r = loom_expand(loom_expand(v, LOOM_SHAPE(1, 3)), LOOM_SHAPE(2, 2, 3));
    assert_strides(r, 0, 0, 1);
    EXPECT_F32(r, 0, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2);
    loom_tensor *row = iota(ctx, LOOM_SHAPE(1, 3));
    r = loom_expand(loom_transpose(row, 0, 1), LOOM_SHAPE(3, 2));
    assert_strides(r, 1, 0);
    EXPECT_F32(r, 0, 0, 0, 1, 1, 2, 2);
    /* Errors: a non-1 dim cannot change; fewer dims; -1 for a new dim. */
    assert_error(loom_expand(v, LOOM_SHAPE(4)), LOOM_ERR_SHAPE, "expand");
    assert_error(loom_expand(c, LOOM_SHAPE(4)), LOOM_ERR_SHAPE, "expand");
    assert_error(loom_expand(v, LOOM_SHAPE(-1, 3)), LOOM_ERR_SHAPE, "expand");
    loom_ctx_free(ctx);
}
END_TEST

/* ---- flatten / contiguous / alias ------------------------------------------ */

START_TEST(test_flatten)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *y = iota(ctx, LOOM_SHAPE(2, 3, 4));
    loom_tensor *r = loom_flatten(y, 0, -1);
    assert_shape(r, 24);
    ck_assert(loom_tensor_shares_storage(r, y));
    CHECK_VIEW(r, 1, S(24), S(1), 0);
    r = loom_flatten(y, 1, 2);
    assert_shape(r, 2, 12);
    assert_strides(r, 12, 1);
    r = loom_flatten(y, 0, 1);
    assert_shape(r, 6, 4);
    r = loom_flatten(y, -2, -1);
    assert_shape(r, 2, 12);
    r = loom_flatten(y, 1, 1);
    assert_shape(r, 2, 3, 4);
    /* Of a non-contiguous tensor: [3,2,4] with strides [4,12,1]. */
    loom_tensor *p = loom_transpose(y, 0, 1);
    r = loom_flatten(p, 0, 1); /* cannot be a view: a copy */
    assert_shape(r, 6, 4);
    ck_assert(!loom_tensor_shares_storage(r, y));
    float want[24];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 4; k++) want[(i * 2 + j) * 4 + k] = (float)(j * 12 + i * 4 + k);
    assert_values_f32(r, want, 24, 0);
    r = loom_flatten(p, 0, -1);
    assert_shape(r, 24);
    assert_values_f32(r, want, 24, 0);
    r = loom_flatten(p, 1, 2); /* [3, 8] also needs a copy */
    assert_shape(r, 3, 8);
    assert_values_f32(r, want, 24, 0);
    /* A permuted tensor whose flattened dims stay mergeable: a view. */
    loom_tensor *q = loom_permute(y, LOOM_DIMS(1, 2, 0)); /* [3,4,2], strides [4,1,12] */
    r = loom_flatten(q, 0, 1);
    assert_shape(r, 12, 2);
    assert_strides(r, 1, 12);
    ck_assert(loom_tensor_shares_storage(r, y));
    CHECK_VIEW(r, 2, S(12, 2), S(1, 12), 0);
    /* 0-dim flattens to [1]. */
    r = loom_flatten(loom_scalar(ctx, LOOM_FLOAT32, 4), 0, -1);
    assert_shape(r, 1);
    EXPECT_F32(r, 0, 4);
    assert_error(loom_flatten(y, 2, 1), LOOM_ERR_RANGE, "flatten");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_contiguous_alias)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = iota(ctx, LOOM_SHAPE(3, 4));
    ck_assert(loom_tensor_is_contiguous(x));
    loom_tensor *c = loom_contiguous(x);
    ck_assert(loom_tensor_shares_storage(c, x));
    ck_assert(loom_tensor_is_contiguous(c));
    loom_tensor *t = loom_transpose(x, 0, 1);
    ck_assert(!loom_tensor_is_contiguous(t));
    c = loom_contiguous(t);
    assert_shape(c, 4, 3);
    ck_assert(loom_tensor_is_contiguous(c));
    assert_strides(c, 3, 1);
    ck_assert(!loom_tensor_shares_storage(c, x));
    EXPECT_F32(c, 0, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11);
    /* The contiguous copy's data pointer reads row-major. */
    const float *d = loom_tensor_data(c);
    ck_assert_ptr_nonnull(d);
    ck_assert_float_eq(d[1], 4);
    ck_assert_float_eq(d[3], 1);
    /* A stepped slice and an expanded view are not contiguous; contiguous()
     * of them copies. */
    loom_tensor *s = loom_slice(x, 1, 0, 4, 2);
    ck_assert(!loom_tensor_is_contiguous(s));
    c = loom_contiguous(s);
    ck_assert(loom_tensor_is_contiguous(c));
    EXPECT_F32(c, 0, 0, 2, 4, 6, 8, 10);
    loom_tensor *e = loom_expand(loom_select(x, 0, 1), LOOM_SHAPE(2, 4));
    ck_assert(!loom_tensor_is_contiguous(e));
    c = loom_contiguous(e);
    ck_assert(loom_tensor_is_contiguous(c));
    assert_strides(c, 4, 1);
    EXPECT_F32(c, 0, 4, 5, 6, 7, 4, 5, 6, 7);
    /* Size-1 dims do not break contiguity (their stride does not matter),
     * and a slice of whole rows is contiguous. */
    ck_assert(loom_tensor_is_contiguous(loom_unsqueeze(x, 1)));
    ck_assert(loom_tensor_is_contiguous(loom_slice(x, 0, 1, 2, 1)));
    ck_assert(loom_tensor_is_contiguous(loom_transpose(iota(ctx, LOOM_SHAPE(1, 5)), 0, 1)));
    ck_assert(loom_tensor_is_contiguous(loom_expand(iota(ctx, LOOM_SHAPE(1, 3)), LOOM_SHAPE(1, 3))));
    /* alias: same storage, shape and strides. */
    loom_tensor *a = loom_alias(t);
    assert_shape(a, 4, 3);
    assert_strides(a, 1, 4);
    ck_assert(loom_tensor_shares_storage(a, x));
    EXPECT_F32(a, 0, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11);
    /* An alias of a lazy tensor evaluates with it. */
    loom_tensor *l = loom_add_scalar(x, 1);
    a = loom_alias(l);
    ck_assert(loom_tensor_shares_storage(a, l));
    EXPECT_F32(a, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    EXPECT_F32(loom_select(l, 0, 0), 0, 1, 2, 3, 4);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- reading through views ------------------------------------------------ */

START_TEST(test_copy_to_and_data)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = iota(ctx, LOOM_SHAPE(3, 4));
    float buf[24];
    /* copy_to of a transposed view gives its row-major values. */
    ck_assert_int_eq(loom_tensor_copy_to(loom_transpose(x, 0, 1), buf, sizeof buf), LOOM_OK);
    const float tw[12] = {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11};
    for (int k = 0; k < 12; k++) ck_assert_float_eq(buf[k], tw[k]);
    /* Sliced with step, and with an offset. */
    ck_assert_int_eq(loom_tensor_copy_to(loom_slice(loom_slice(x, 1, 1, 4, 2), 0, 1, 3, 1), buf, sizeof buf), LOOM_OK);
    const float sw[4] = {5, 7, 9, 11};
    for (int k = 0; k < 4; k++) ck_assert_float_eq(buf[k], sw[k]);
    /* Expanded. */
    ck_assert_int_eq(loom_tensor_copy_to(loom_expand(loom_slice(x, 0, 2, 3, 1), LOOM_SHAPE(2, 4)), buf, sizeof buf),
                     LOOM_OK);
    const float ew[8] = {8, 9, 10, 11, 8, 9, 10, 11};
    for (int k = 0; k < 8; k++) ck_assert_float_eq(buf[k], ew[k]);
    /* A destination too small is refused. */
    ck_assert_int_ne(loom_tensor_copy_to(x, buf, 4), LOOM_OK);
    /* loom_tensor_data points at the view's first element; elements are
     * laid out by its strides. */
    loom_tensor *s = loom_slice(iota(ctx, LOOM_SHAPE(10)), 0, 2, 10, 3); /* 2, 5, 8 */
    const float *d = loom_tensor_data(s);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(loom_tensor_stride(s, 0), 3);
    ck_assert_float_eq(d[0], 2);
    ck_assert_float_eq(d[3], 5);
    ck_assert_float_eq(d[6], 8);
    loom_tensor *t = loom_transpose(x, 0, 1);
    d = loom_tensor_data(t);
    ck_assert_ptr_nonnull(d);
    ck_assert_float_eq(d[2 * loom_tensor_stride(t, 0) + 1 * loom_tensor_stride(t, 1)], 6); /* t[2][1] = x[1][2] */
    /* item on a selected element. */
    double v = 0;
    ck_assert_int_eq(loom_tensor_item(loom_select(loom_select(t, 0, 3), 0, 2), &v), LOOM_OK);
    ck_assert_double_eq(v, 11);
    /* int64 and bool views. */
    loom_tensor *i = I64(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    EXPECT_I64(loom_transpose(i, 0, 1), 1, 4, 2, 5, 3, 6);
    EXPECT_I64(loom_slice(i, 1, 0, 3, 2), 1, 3, 4, 6);
    loom_tensor *b = B8(ctx, LOOM_SHAPE(2, 2), 1, 0, 0, 0);
    EXPECT_BOOL(loom_transpose(b, 0, 1), 1, 0, 0, 0);
    EXPECT_BOOL(loom_expand(loom_select(b, 1, 0), LOOM_SHAPE(2, 2)), 1, 0, 1, 0);
    /* Printing goes through the same path. */
    char *str = loom_tensor_to_string(loom_transpose(I64(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4), 0, 1));
    ck_assert_ptr_nonnull(str);
    ck_assert_str_eq(str, "tensor([[1, 3],\n        [2, 4]])");
    free(str);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- views of lazy tensors ------------------------------------------------- */

START_TEST(test_views_of_lazy)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *a = F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    loom_tensor *b = F32(ctx, LOOM_SHAPE(2, 3), 10, 20, 30, 40, 50, 60);
    /* transpose(add(a, b)) before the sum has been computed. */
    loom_tensor *s = loom_add(a, b);
    loom_tensor *t = loom_transpose(s, 0, 1);
    assert_shape(t, 3, 2);
    assert_strides(t, 1, 3);
    ck_assert(loom_tensor_shares_storage(t, s));
    EXPECT_F32(t, 0, 11, 44, 22, 55, 33, 66);
    /* The base reads correctly afterwards. */
    EXPECT_F32(s, 0, 11, 22, 33, 44, 55, 66);
    /* Every kind of view of a lazy result, each read before its base. */
    EXPECT_F32(loom_slice(loom_mul(a, b), 1, 0, 3, 2), 0, 10, 90, 160, 360);
    EXPECT_F32(loom_select(loom_sub(b, a), 0, -1), 0, 36, 45, 54);
    EXPECT_F32(loom_view(loom_mul_scalar(a, 2), LOOM_SHAPE(3, 2)), 0, 2, 4, 6, 8, 10, 12);
    EXPECT_F32(loom_reshape(loom_transpose(loom_neg(a), 0, 1), LOOM_SHAPE(6)), 0, -1, -4, -2, -5, -3, -6);
    EXPECT_F32(loom_expand(loom_sum(a, LOOM_DIMS(1), true), LOOM_SHAPE(2, 2)), 0, 6, 6, 15, 15);
    EXPECT_F32(loom_unsqueeze(loom_squeeze_all(loom_sum(a, LOOM_DIMS(0), true)), 0), 0, 5, 7, 9);
    EXPECT_F32(loom_flatten(loom_permute(loom_add_scalar(a, 1), LOOM_DIMS(1, 0)), 0, 1), 0, 2, 5, 3, 6, 4, 7);
    /* A lazy op on top of a view of a lazy op. */
    loom_tensor *u = loom_mul(loom_transpose(loom_add(a, b), 0, 1), F32(ctx, LOOM_SHAPE(3, 1), 1, 2, 3));
    EXPECT_F32(u, 0, 11, 44, 44, 110, 99, 198);
    /* Two views of one pending tensor, read in turn. */
    loom_tensor *p = loom_exp(loom_scalar(ctx, LOOM_FLOAT32, 0));
    loom_tensor *pv1 = loom_reshape(p, LOOM_SHAPE(1, 1));
    loom_tensor *pv2 = loom_expand(p, LOOM_SHAPE(3));
    EXPECT_F32(pv2, 0, 1, 1, 1);
    EXPECT_F32(pv1, 0, 1);
    /* Evaluating the view computes the base: base then reads ready. */
    loom_tensor *q = loom_add_scalar(a, 100);
    loom_tensor *qv = loom_slice(q, 0, 1, 2, 1);
    ck_assert_int_eq(loom_tensor_eval(qv), LOOM_OK);
    EXPECT_F32(q, 0, 101, 102, 103, 104, 105, 106);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- chains ------------------------------------------------------------- */

START_TEST(test_view_chains)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = iota(ctx, LOOM_SHAPE(4, 6));
    /* transpose -> slice(step 2) -> select -> unsqueeze -> expand. */
    loom_tensor *t = loom_transpose(x, 0, 1);         /* [6,4], strides [1,6] */
    loom_tensor *s = loom_slice(t, 0, 1, 6, 2);       /* rows 1,3,5: [3,4], strides [2,6], offset 1 */
    loom_tensor *c = loom_select(s, 1, 2);            /* [3], stride 2, offset 13 */
    loom_tensor *u = loom_unsqueeze(c, 0);            /* [1,3] */
    loom_tensor *e = loom_expand(u, LOOM_SHAPE(2, 3)); /* [2,3], strides [0,2] */
    CHECK_VIEW(s, 2, S(3, 4), S(2, 6), 1);
    assert_strides(s, 2, 6);
    CHECK_VIEW(c, 1, S(3), S(2), 13);
    assert_strides(e, 0, 2);
    CHECK_VIEW(e, 2, S(2, 3), S(0, 2), 13);
    ck_assert(loom_tensor_shares_storage(e, x));
    /* reshape -> permute -> slice -> flatten (copy) -> view. */
    loom_tensor *r = loom_reshape(x, LOOM_SHAPE(2, 2, 6));                 /* strides [12,6,1] */
    loom_tensor *p = loom_permute(r, LOOM_DIMS(2, 0, 1));                  /* [6,2,2], strides [1,12,6] */
    loom_tensor *sl = loom_slice(p, 0, 0, 6, 3);                           /* [2,2,2], strides [3,12,6] */
    CHECK_VIEW(sl, 3, S(2, 2, 2), S(3, 12, 6), 0);
    loom_tensor *f = loom_flatten(sl, 1, 2);                               /* strides [3,6] (mergeable) */
    CHECK_VIEW(f, 2, S(2, 4), S(3, 6), 0);
    ck_assert(loom_tensor_shares_storage(f, x));
    loom_tensor *g = loom_flatten(sl, 0, 1); /* strides 3 and 12 do not merge: a copy */
    assert_shape(g, 4, 2);
    ck_assert(!loom_tensor_shares_storage(g, x));
    ck_assert(loom_tensor_is_contiguous(g));
    EXPECT_F32(g, 0, 0, 6, 12, 18, 3, 9, 15, 21);
    /* The copy can be viewed again, and viewed lazily computed values too. */
    loom_tensor *gv = loom_view(g, LOOM_SHAPE(8));
    ck_assert(loom_tensor_shares_storage(gv, g));
    EXPECT_F32(gv, 0, 0, 6, 12, 18, 3, 9, 15, 21);
    EXPECT_F32(loom_select(loom_transpose(loom_mul_scalar(g, 2), 0, 1), 0, 1), 0, 12, 36, 18, 42);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- lifetime ------------------------------------------------------------ */

START_TEST(test_view_outlives_base)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* A view of a leaf: free the base handle, then read the view. */
    loom_tensor *x = iota(ctx, LOOM_SHAPE(3, 4));
    loom_tensor *t = loom_transpose(x, 0, 1);
    loom_tensor *s = loom_slice(x, 1, 1, 4, 2);
    loom_tensor_free(x);
    EXPECT_F32(t, 0, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11);
    EXPECT_F32(s, 0, 1, 3, 5, 7, 9, 11);
    /* A view of a lazy result: free the result and its inputs first. */
    loom_tensor *a = F32(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4);
    loom_tensor *b = F32(ctx, LOOM_SHAPE(2, 2), 5, 6, 7, 8);
    loom_tensor *m = loom_mul(a, b);
    loom_tensor *v = loom_transpose(m, 0, 1);
    loom_tensor *w = loom_expand(loom_select(m, 0, 1), LOOM_SHAPE(2, 2));
    loom_tensor_free(m);
    loom_tensor_free(a);
    loom_tensor_free(b);
    EXPECT_F32(v, 0, 5, 21, 12, 32);
    EXPECT_F32(w, 0, 21, 32, 21, 32);
    /* A view that outlives its base's scope (kept to the outer scope). */
    ck_assert_int_eq(loom_scope_begin(ctx), LOOM_OK);
    loom_tensor *base = loom_add_scalar(iota(ctx, LOOM_SHAPE(2, 3)), 1);
    loom_tensor *kept = loom_scope_keep(loom_slice(loom_transpose(base, 0, 1), 0, 1, 3, 1));
    ck_assert_int_eq(loom_scope_end(ctx), LOOM_OK);
    assert_shape(kept, 2, 2);
    EXPECT_F32(kept, 0, 2, 5, 3, 6);
    /* A chain of views whose intermediate handles are all freed. */
    loom_tensor *y = iota(ctx, LOOM_SHAPE(2, 3, 4));
    loom_tensor *v1 = loom_permute(y, LOOM_DIMS(2, 1, 0));
    loom_tensor *v2 = loom_select(v1, 1, 1);
    loom_tensor *v3 = loom_slice(v2, 0, 0, 4, 3);
    loom_tensor_free(y);
    loom_tensor_free(v1);
    loom_tensor_free(v2);
    /* v3[i][j] = y[j][1][3i]: [2,2]. */
    EXPECT_F32(v3, 0, 4, 16, 7, 19);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- strides, sizes ------------------------------------------------------ */

START_TEST(test_strides_sizes)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *y = iota(ctx, LOOM_SHAPE(2, 3, 4));
    assert_strides(y, 12, 4, 1);
    ck_assert_int_eq(loom_tensor_stride(y, -1), 1);
    ck_assert_int_eq(loom_tensor_stride(y, -3), 12);
    ck_assert_int_eq(loom_tensor_size(y, -1), 4);
    ck_assert_int_eq(loom_tensor_size(y, -3), 2);
    ck_assert_int_eq(loom_tensor_size(y, 3), -1);
    ck_assert_int_eq(loom_tensor_size(y, -4), -1);
    ck_assert_int_eq(loom_tensor_numel(y), 24);
    int64_t shape[LOOM_MAX_DIMS];
    loom_tensor_shape(loom_permute(y, LOOM_DIMS(1, 2, 0)), shape);
    ck_assert_int_eq(shape[0], 3);
    ck_assert_int_eq(shape[1], 4);
    ck_assert_int_eq(shape[2], 2);
    /* Strides as PyTorch reports them. */
    assert_strides(loom_transpose(iota(ctx, LOOM_SHAPE(2, 3)), 0, 1), 1, 3);
    assert_strides(loom_permute(y, LOOM_DIMS(1, 2, 0)), 4, 1, 12);
    assert_strides(loom_slice(y, 2, 0, 4, 2), 12, 4, 2);
    assert_strides(loom_slice(y, 0, 1, 2, 1), 12, 4, 1);
    assert_strides(loom_select(y, 2, 1), 12, 4);
    assert_strides(loom_select(y, 0, 1), 4, 1);
    assert_strides(loom_expand(iota(ctx, LOOM_SHAPE(3, 1)), LOOM_SHAPE(2, 3, 5)), 0, 1, 0);
    assert_strides(loom_unsqueeze(y, 0), 24, 12, 4, 1);
    assert_strides(loom_unsqueeze(y, 3), 12, 4, 1, 1);
    assert_strides(loom_view(y, LOOM_SHAPE(6, 4)), 4, 1);
    assert_strides(loom_flatten(y, 1, 2), 12, 1);
    assert_strides(loom_contiguous(loom_permute(y, LOOM_DIMS(2, 0, 1))), 6, 3, 1);
    /* Views keep dtype. */
    ck_assert_int_eq(loom_tensor_dtype(loom_transpose(I64(ctx, LOOM_SHAPE(1, 2), 1, 2), 0, 1)), LOOM_INT64);
    ck_assert_int_eq(loom_tensor_dtype(loom_expand(B8(ctx, LOOM_SHAPE(1), 1), LOOM_SHAPE(3))), LOOM_BOOL);
    /* Views never compute: a view of a pending tensor stays cheap (the base
     * has not run when only shape queries are made). */
    loom_ctx_stats st0, st1;
    loom_ctx_get_stats(ctx, &st0);
    loom_tensor *lz = loom_transpose(loom_add(y, y), 0, 2);
    assert_shape(lz, 4, 3, 2);
    assert_strides(lz, 1, 4, 12);
    loom_ctx_get_stats(ctx, &st1);
    ck_assert_int_eq(st1.nodes_run, st0.nodes_run);
    loom_ctx_free(ctx);
}
END_TEST

Suite *loom_suite_views(void)
{
    Suite *s = suite_create("views");
    TCase *tc = test_tcase(s, "shape_views", 60);
    tcase_add_loop_test(tc, test_reshape_view, 0, NCFG);
    tcase_add_loop_test(tc, test_view_noncontiguous, 0, NCFG);
    tcase_add_loop_test(tc, test_permute_transpose, 0, NCFG);
    tcase_add_loop_test(tc, test_slice, 0, NCFG);
    tcase_add_loop_test(tc, test_select, 0, NCFG);
    tcase_add_loop_test(tc, test_squeeze_unsqueeze, 0, NCFG);
    tcase_add_loop_test(tc, test_expand, 0, NCFG);
    tcase_add_loop_test(tc, test_flatten, 0, NCFG);
    tcase_add_loop_test(tc, test_contiguous_alias, 0, NCFG);
    tcase_add_test(tc, test_strides_sizes);

    tc = test_tcase(s, "reading", 60);
    tcase_add_loop_test(tc, test_copy_to_and_data, 0, NCFG);
    tcase_add_loop_test(tc, test_views_of_lazy, 0, NCFG);
    tcase_add_loop_test(tc, test_view_chains, 0, NCFG);
    tcase_add_loop_test(tc, test_view_outlives_base, 0, NCFG);
    return s;
}
