/*
 * tests/check_scatter.c - the adjoint ops: slice_scatter (internal),
 * index_add and scatter_add.
 *
 * Expected values are literals worked out by hand (and checked against
 * PyTorch), or computed here by plain C loops from the same input data;
 * never from Loom's own output. Value tests run three times (_i = 0..2): one
 * thread, two threads, and two threads with the portable C backend forced.
 * The large cases check that results over 200000 source rows are bitwise
 * identical for 1 and 2 threads, bitwise equal to a float32 accumulation in
 * the kernels' documented order, and close to a double-precision sum.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops_internal.h"
#include "tests/check_suites.h"

/* ---- helpers ---------------------------------------------------------------- */

/* Flat row-major index of idx in shape. */
static int64_t ravel(int ndim, const int64_t *shape, const int64_t *idx)
{
    int64_t f = 0;
    for (int d = 0; d < ndim; d++) f = f * shape[d] + idx[d];
    return f;
}

/* A deterministic pseudo-random sequence (an LCG), independent of Loom. */
static uint64_t lcg_state;
static double lcg_unit(void) /* in [-1, 1), a multiple of 2^-20: exact in float */
{
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(int64_t)((lcg_state >> 43) & 0x1FFFFF) / (1 << 20) - 1.0;
}

/* Evaluates t and expects LOOM_ERR_RANGE with `substr` in the message. */
static void expect_range_error(loom_tensor *t, const char *substr, int line)
{
    ck_assert_msg(t != NULL, "line %d: recording failed: %s", line, loom_last_error());
    loom_status st = loom_tensor_eval(t);
    ck_assert_msg(st == LOOM_ERR_RANGE, "line %d: status %s, expected LOOM_ERR_RANGE", line, loom_status_str(st));
    ck_assert_msg(strstr(loom_last_error(), substr) != NULL, "line %d: message \"%s\" lacks \"%s\"", line,
                  loom_last_error(), substr);
}
#define EXPECT_RANGE_ERROR(t, substr) expect_range_error((t), (substr), __LINE__)

/* ---- plain-loop references ---------------------------------------------------- */

/* out (shape, zero-filled by the caller) gets src (sshape) at
 * start + i * step along dim. */
static void ref_slice_scatter(double *out, int ndim, const int64_t *shape, const double *src, const int64_t *sshape,
                              int dim, int64_t start, int64_t step)
{
    int64_t n = numel_of(ndim, sshape), p[LOOM_MAX_DIMS];
    for (int64_t i = 0; i < n; i++) {
        unravel(i, ndim, sshape, p);
        p[dim] = start + p[dim] * step;
        out[ravel(ndim, shape, p)] = src[i];
    }
}

/* acc (shape) += src (sshape) with positions along dim remapped: by the 1-D
 * index (index_add, xshape == NULL) or by the index of shape xshape
 * (scatter_add: src's row-major strides, only xshape's extent used). The
 * source positions are visited in row-major order, so every element of acc
 * receives its additions in increasing order along dim: the order the
 * kernels promise. T is float or double. */
#define DEFINE_REF_ADD(NAME, T)                                                                                   \
    static void NAME(T *acc, int ndim, const int64_t *shape, const float *src, const int64_t *sshape, int dim,    \
                     const int64_t *index, const int64_t *xshape)                                                 \
    {                                                                                                             \
        const int64_t *it = xshape ? xshape : sshape;                                                             \
        int64_t n = numel_of(ndim, it), p[LOOM_MAX_DIMS];                                                         \
        for (int64_t i = 0; i < n; i++) {                                                                         \
            unravel(i, ndim, it, p);                                                                              \
            const int64_t s = ravel(ndim, sshape, p);                                                             \
            p[dim] = xshape ? index[i] : index[p[dim]];                                                           \
            acc[ravel(ndim, shape, p)] += (T)src[s];                                                              \
        }                                                                                                         \
    }
DEFINE_REF_ADD(ref_add_f32, float)
DEFINE_REF_ADD(ref_add_f64, double)

/* ---- slice_scatter -------------------------------------------------------------- */

START_TEST(test_slice_scatter_basic)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* 1-D: elements 1 and 4 of 5 (step 3). */
    loom_tensor *r = loom__slice_scatter(F32(ctx, LOOM_SHAPE(2), 1, 2), LOOM_SHAPE(5), 0, 1, 3);
    assert_shape(r, 5);
    EXPECT_F32(r, 0, 0, 1, 0, 0, 2);
    /* A full slice is a copy; a negative dim counts from the end. */
    r = loom__slice_scatter(F32(ctx, LOOM_SHAPE(3), 7, 8, 9), LOOM_SHAPE(3), -1, 0, 1);
    EXPECT_F32(r, 0, 7, 8, 9);
    /* 2-D along dim 0: rows 1..2 of 4 (step 1), rows 0 and 2 (step 2). */
    loom_tensor *s = F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    r = loom__slice_scatter(s, LOOM_SHAPE(4, 3), 0, 1, 1);
    assert_shape(r, 4, 3);
    EXPECT_F32(r, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 0, 0, 0);
    r = loom__slice_scatter(s, LOOM_SHAPE(4, 3), 0, 0, 2);
    EXPECT_F32(r, 0, 1, 2, 3, 0, 0, 0, 4, 5, 6, 0, 0, 0);
    /* 2-D along dim 1: columns 1 and 4 of 5 (step 3), columns 3..4. */
    loom_tensor *c = F32(ctx, LOOM_SHAPE(3, 2), 1, 2, 3, 4, 5, 6);
    r = loom__slice_scatter(c, LOOM_SHAPE(3, 5), 1, 1, 3);
    assert_shape(r, 3, 5);
    EXPECT_F32(r, 0, 0, 1, 0, 0, 2, 0, 3, 0, 0, 4, 0, 5, 0, 0, 6);
    r = loom__slice_scatter(c, LOOM_SHAPE(3, 5), 1, 3, 1);
    EXPECT_F32(r, 0, 0, 0, 0, 1, 2, 0, 0, 0, 3, 4, 0, 0, 0, 5, 6);
    /* One element (the adjoint of select, after unsqueeze), any step. */
    r = loom__slice_scatter(F32(ctx, LOOM_SHAPE(2, 1), 8, 9), LOOM_SHAPE(2, 4), 1, 2, 5);
    EXPECT_F32(r, 0, 0, 0, 8, 0, 0, 0, 9, 0);
    /* An empty slice gives zeros. */
    r = loom__slice_scatter(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 0)), LOOM_SHAPE(2, 3), 1, 3, 1);
    EXPECT_F32(r, 0, 0, 0, 0, 0, 0, 0);
    /* int64 and bool (any dtype: values move as bytes). */
    r = loom__slice_scatter(I64(ctx, LOOM_SHAPE(2), P53 + 1, -5), LOOM_SHAPE(4), 0, 1, 2);
    EXPECT_I64(r, 0, P53 + 1, 0, -5);
    r = loom__slice_scatter(B8(ctx, LOOM_SHAPE(2, 1), 1, 1), LOOM_SHAPE(2, 3), 1, 0, 1);
    EXPECT_BOOL(r, 1, 0, 0, 1, 0, 0);
    /* A lazy source. */
    r = loom__slice_scatter(loom_add_scalar(F32(ctx, LOOM_SHAPE(2), 1, 2), 1), LOOM_SHAPE(3), 0, 0, 2);
    EXPECT_F32(r, 0, 2, 0, 3);
    loom_ctx_free(ctx);
}
END_TEST

/* A 4-D output, every dim, several starts and steps (3 included), full and
 * partial slices, against plain loops. */
START_TEST(test_slice_scatter_4d)
{
    loom_ctx *ctx = cfg_ctx(_i);
    const int64_t shape[4] = {3, 4, 5, 6};
    const int64_t starts_steps[][2] = {{0, 1}, {1, 1}, {0, 2}, {1, 3}, {2, 3}, {0, 3}, {1, 2}};
    double src[360], want[360];
    lcg_state = 42;
    for (int dim = 0; dim < 4; dim++) {
        for (size_t k = 0; k < sizeof starts_steps / sizeof starts_steps[0]; k++) {
            const int64_t start = starts_steps[k][0], step = starts_steps[k][1];
            if (start >= shape[dim]) continue;
            const int64_t full = (shape[dim] - start + step - 1) / step;
            for (int64_t n = full; n >= 1 && n >= full - 1; n--) {
                int64_t sshape[4];
                memcpy(sshape, shape, sizeof sshape);
                sshape[dim] = n;
                const int64_t ns = numel_of(4, sshape);
                for (int64_t i = 0; i < ns; i++) src[i] = lcg_unit();
                memset(want, 0, sizeof want);
                ref_slice_scatter(want, 4, shape, src, sshape, dim, start, step);
                loom_tensor *r = loom__slice_scatter(from_doubles(ctx, src, 4, sshape), 4, shape, dim, start, step);
                ck_assert_msg(r != NULL, "dim %d start %lld step %lld: %s", dim, (long long)start, (long long)step,
                              loom_last_error());
                assert_shape(r, 3, 4, 5, 6);
                EXPECT_DOUBLES(r, want, 360, 0);
            }
        }
    }
    loom_ctx_free(ctx);
}
END_TEST

/* A non-contiguous source: a permuted view, and a slice with a step. */
START_TEST(test_slice_scatter_noncontiguous)
{
    loom_ctx *ctx = cfg_ctx(_i);
    double v[60], src[60], want[160];
    for (int k = 0; k < 60; k++) v[k] = k + 1;
    /* base [5, 3, 4] permuted to [4, 3, 5]: src[a][b][c] = base[c][b][a]. */
    loom_tensor *base = from_doubles(ctx, v, LOOM_SHAPE(5, 3, 4));
    loom_tensor *p = loom_permute(base, 3, (const int[]){2, 1, 0});
    const int64_t sshape[3] = {4, 3, 5}, shape[3] = {4, 8, 5};
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 5; c++) src[(a * 3 + b) * 5 + c] = v[(c * 3 + b) * 4 + a];
    memset(want, 0, sizeof want);
    ref_slice_scatter(want, 3, shape, src, sshape, 1, 1, 3);
    loom_tensor *r = loom__slice_scatter(p, 3, shape, 1, 1, 3);
    assert_shape(r, 4, 8, 5);
    EXPECT_DOUBLES(r, want, 160, 0);
    /* Every other element of a row: stride 2 in the inner dim. */
    loom_tensor *row = loom_slice(from_doubles(ctx, v, LOOM_SHAPE(2, 6)), 1, 0, 6, 2);
    r = loom__slice_scatter(row, LOOM_SHAPE(2, 4), 1, 1, 1);
    EXPECT_F32(r, 0, 0, 1, 3, 5, 0, 7, 9, 11);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_slice_scatter_errors)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *s = F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    /* Shapes outside dim must match, and the ndim. */
    assert_error(loom__slice_scatter(s, LOOM_SHAPE(4, 4), 0, 0, 1), LOOM_ERR_SHAPE, "slice_scatter: source shape [2, 3]");
    assert_error(loom__slice_scatter(s, LOOM_SHAPE(2, 3, 1), 0, 0, 1), LOOM_ERR_SHAPE, "slice_scatter");
    assert_error(loom__slice_scatter(s, 0, NULL, 0, 0, 1), LOOM_ERR_SHAPE, "slice_scatter");
    /* The slice must fit: 2 rows from 1 with step 3 need 5. */
    assert_error(loom__slice_scatter(s, LOOM_SHAPE(4, 3), 0, 1, 3), LOOM_ERR_SHAPE, "do not fit dim 0 of size 4");
    assert_error(loom__slice_scatter(s, LOOM_SHAPE(2, 3), 0, 1, 1), LOOM_ERR_SHAPE, "slice_scatter");
    assert_error(loom__slice_scatter(s, LOOM_SHAPE(8, 3), 0, 2, INT64_MAX), LOOM_ERR_SHAPE, "slice_scatter");
    assert_error(loom__slice_scatter(s, LOOM_SHAPE(4, 3), 0, -1, 1), LOOM_ERR_RANGE, "slice_scatter: start -1");
    assert_error(loom__slice_scatter(s, LOOM_SHAPE(4, 3), 0, 0, 0), LOOM_ERR_INVALID_ARG, "step must be >= 1");
    assert_error(loom__slice_scatter(s, LOOM_SHAPE(4, 3), 2, 0, 1), LOOM_ERR_RANGE, "slice_scatter");
    assert_error(loom__slice_scatter(s, LOOM_SHAPE(4, -3), 0, 0, 1), LOOM_ERR_SHAPE, "slice_scatter");
    /* A NULL input keeps the earlier error. */
    loom_clear_error();
    ck_assert_ptr_null(loom__slice_scatter(NULL, LOOM_SHAPE(2), 0, 0, 1));
    loom_ctx_free(ctx);
}
END_TEST

/* ---- index_add ------------------------------------------------------------------ */

START_TEST(test_index_add)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* Dim 0 with a repeated index: rows accumulate. */
    loom_tensor *t = F32(ctx, LOOM_SHAPE(5, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    loom_tensor *src = F32(ctx, LOOM_SHAPE(4, 3), 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4);
    loom_tensor *r = loom_index_add(t, 0, I64(ctx, LOOM_SHAPE(4), 0, 2, 0, 4), src);
    assert_shape(r, 5, 3);
    EXPECT_F32(r, 0, 5, 6, 7, 4, 5, 6, 9, 10, 11, 10, 11, 12, 17, 18, 19);
    /* Dim 1 (and -1): columns. */
    loom_tensor *z = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 4));
    loom_tensor *s2 = F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    loom_tensor *i2 = I64(ctx, LOOM_SHAPE(3), 3, 1, 3);
    r = loom_index_add(z, 1, i2, s2);
    EXPECT_F32(r, 0, 0, 2, 0, 4, 0, 5, 0, 10);
    EXPECT_F32(loom_index_add(z, -1, i2, s2), 0, 0, 2, 0, 4, 0, 5, 0, 10);
    /* int64, exact beyond 2^53, with accumulation. */
    r = loom_index_add(I64(ctx, LOOM_SHAPE(3), 1, 2, 3), 0, I64(ctx, LOOM_SHAPE(4), 2, 2, 0, 2),
                       I64(ctx, LOOM_SHAPE(4), P53, 1, -7, 10));
    EXPECT_I64(r, -6, 2, P53 + 14);
    r = loom_index_add(I64(ctx, LOOM_SHAPE(2, 2), 0, 0, 0, 0), 1, I64(ctx, LOOM_SHAPE(3), 1, 1, 0),
                       I64(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6));
    EXPECT_I64(r, 3, 3, 6, 9);
    /* 1-D; a 0-dim source for a 1-D tensor; 0-dim everything. */
    EXPECT_F32(loom_index_add(F32(ctx, LOOM_SHAPE(3), 1, 1, 1), 0, I64(ctx, LOOM_SHAPE(5), 2, 0, 2, 2, 1),
                              F32(ctx, LOOM_SHAPE(5), 1, 2, 3, 4, 5)), 0,
               3, 6, 9);
    EXPECT_F32(loom_index_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3)), 0, I64(ctx, LOOM_SHAPE(1), 0),
                              loom_scalar(ctx, LOOM_FLOAT32, 5)), 0,
               5, 0, 0);
    r = loom_index_add(loom_scalar(ctx, LOOM_FLOAT32, 1), 0, I64(ctx, LOOM_SHAPE(1), 0),
                       loom_scalar(ctx, LOOM_FLOAT32, 5));
    assert_shape0(r);
    EXPECT_F32(r, 0, 6);
    /* An empty index leaves t as it is. */
    r = loom_index_add(s2, 0, loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(0)), loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0, 3)));
    EXPECT_F32(r, 0, 1, 2, 3, 4, 5, 6);
    /* A lazy t, index and source. */
    r = loom_index_add(loom_mul_scalar(s2, 2), 0, loom_add_scalar(I64(ctx, LOOM_SHAPE(1), 0), 1),
                       loom_add_scalar(F32(ctx, LOOM_SHAPE(1, 3), 0, 0, 0), 1));
    EXPECT_F32(r, 0, 2, 4, 6, 9, 11, 13);
    loom_ctx_free(ctx);
}
END_TEST

/* A 3-D tensor along each dim, with repeats, against plain loops. */
START_TEST(test_index_add_3d)
{
    loom_ctx *ctx = cfg_ctx(_i);
    const int64_t shape[3] = {3, 4, 5};
    float src[120];
    double base[60], want[60];
    lcg_state = 7;
    for (int k = 0; k < 60; k++) base[k] = k - 20;
    for (int dim = 0; dim < 3; dim++) {
        const int64_t len = 6;
        int64_t sshape[3] = {3, 4, 5}, index[6];
        sshape[dim] = len;
        for (int k = 0; k < len; k++) index[k] = (k * 5 + 1) % shape[dim];
        const int64_t ns = numel_of(3, sshape);
        for (int64_t k = 0; k < ns; k++) src[k] = (float)(int)(lcg_unit() * 50);
        memcpy(want, base, sizeof want);
        ref_add_f64(want, 3, shape, src, sshape, dim, index, NULL);
        loom_tensor *r = loom_index_add(from_doubles(ctx, base, 3, shape), dim,
                                        loom_tensor_from_array(ctx, LOOM_INT64, index, LOOM_SHAPE(6)),
                                        loom_tensor_from_array(ctx, LOOM_FLOAT32, src, 3, sshape));
        assert_shape(r, 3, 4, 5);
        EXPECT_DOUBLES(r, want, 60, 0);
    }
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_index_add_errors)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *t = F32(ctx, LOOM_SHAPE(5), 1, 2, 3, 4, 5);
    loom_tensor *s2 = F32(ctx, LOOM_SHAPE(2), 1, 1);
    /* Out-of-range and negative indices fail when computed. */
    EXPECT_RANGE_ERROR(loom_index_add(t, 0, I64(ctx, LOOM_SHAPE(2), 1, 5), s2),
                       "index_add: index 5 is out of range for dim 0 of size 5");
    EXPECT_RANGE_ERROR(loom_index_add(t, 0, I64(ctx, LOOM_SHAPE(2), -1, 7), s2), "index_add: index -1 is out of range");
    loom_tensor *m = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 3));
    EXPECT_RANGE_ERROR(loom_index_add(m, 1, I64(ctx, LOOM_SHAPE(2), 0, 3), loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 2))),
                       "index 3 is out of range for dim 1 of size 3");
    /* Shapes, at record time. */
    assert_error(loom_index_add(t, 0, I64(ctx, LOOM_SHAPE(3), 0, 1, 2), s2), LOOM_ERR_SHAPE,
                 "index_add: source shape [2] does not match tensor shape [5] with an index of 3 entries");
    assert_error(loom_index_add(m, 0, I64(ctx, LOOM_SHAPE(1), 0), loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(1, 2))),
                 LOOM_ERR_SHAPE, "index_add");
    assert_error(loom_index_add(m, 0, I64(ctx, LOOM_SHAPE(1), 0), loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(1, 3, 1))),
                 LOOM_ERR_SHAPE, "index_add");
    assert_error(loom_index_add(m, 0, I64(ctx, LOOM_SHAPE(1, 1), 0), loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(1, 3))),
                 LOOM_ERR_SHAPE, "index_add: index must be 1-D");
    assert_error(loom_index_add(m, 2, I64(ctx, LOOM_SHAPE(1), 0), m), LOOM_ERR_RANGE, "index_add");
    /* Dtypes. */
    assert_error(loom_index_add(t, 0, F32(ctx, LOOM_SHAPE(2), 0, 1), s2), LOOM_ERR_DTYPE, "index_add: index must be int64");
    assert_error(loom_index_add(t, 0, I64(ctx, LOOM_SHAPE(2), 0, 1), I64(ctx, LOOM_SHAPE(2), 0, 1)), LOOM_ERR_DTYPE,
                 "index_add: source dtype int64 differs");
    assert_error(loom_index_add(B8(ctx, LOOM_SHAPE(2), 0, 1), 0, I64(ctx, LOOM_SHAPE(1), 0), B8(ctx, LOOM_SHAPE(1), 1)),
                 LOOM_ERR_DTYPE, "index_add: dtype bool is not supported");
    loom_ctx_free(ctx);
}
END_TEST

/* ---- scatter_add ------------------------------------------------------------------ */

START_TEST(test_scatter_add_2d)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *src8 = F32(ctx, LOOM_SHAPE(2, 4), 1, 2, 3, 4, 5, 6, 7, 8);
    /* Dim 0. */
    loom_tensor *r = loom_scatter_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 4)), 0,
                                      I64(ctx, LOOM_SHAPE(2, 4), 0, 1, 2, 0, 2, 0, 0, 1), src8);
    assert_shape(r, 3, 4);
    EXPECT_F32(r, 0, 1, 6, 7, 4, 0, 2, 0, 8, 5, 0, 3, 0);
    r = loom_scatter_add(loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 4)), 0,
                         I64(ctx, LOOM_SHAPE(2, 4), 0, 1, 2, 0, 2, 0, 0, 1), src8);
    EXPECT_F32(r, 0, 2, 7, 8, 5, 1, 3, 1, 9, 6, 1, 4, 1);
    /* Dim 1 with repeated indices. */
    loom_tensor *z23 = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 3));
    loom_tensor *s6 = F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    r = loom_scatter_add(z23, 1, I64(ctx, LOOM_SHAPE(2, 3), 0, 0, 2, 1, 1, 1), s6);
    EXPECT_F32(r, 0, 3, 0, 3, 0, 15, 0);
    EXPECT_F32(loom_scatter_add(z23, -1, I64(ctx, LOOM_SHAPE(2, 3), 0, 0, 2, 1, 1, 1), s6), 0, 3, 0, 3, 0, 15, 0);
    /* The index smaller than src (only its extent of src is used), and
     * smaller than t outside dim (the other rows stay zero). */
    loom_tensor *s12 = F32(ctx, LOOM_SHAPE(3, 4), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    loom_tensor *i22 = I64(ctx, LOOM_SHAPE(2, 2), 2, 2, 0, 1);
    r = loom_scatter_add(z23, 1, i22, s12);
    EXPECT_F32(r, 0, 0, 0, 3, 5, 6, 0);
    r = loom_scatter_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(4, 3)), 1, i22, s12);
    assert_shape(r, 4, 3);
    EXPECT_F32(r, 0, 0, 0, 3, 5, 6, 0, 0, 0, 0, 0, 0, 0);
    r = loom_scatter_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 5)), 0, i22, s12);
    EXPECT_F32(r, 0, 5, 0, 0, 0, 0, 0, 6, 0, 0, 0, 1, 2, 0, 0, 0);
    /* The index longer along dim than t. */
    r = loom_scatter_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 2)), 1, I64(ctx, LOOM_SHAPE(2, 4), 0, 1, 1, 0, 1, 1, 1, 1),
                         src8);
    EXPECT_F32(r, 0, 5, 5, 0, 26);
    r = loom_scatter_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 3)), 0, loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(3, 3)),
                         loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 3)));
    EXPECT_F32(r, 0, 3, 3, 3, 0, 0, 0);
    /* int64, exact beyond 2^53; the CrossEntropy-backward shape [N, C] with
     * index [N, 1] along dim 1. */
    r = loom_scatter_add(loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(3, 4)), 1, I64(ctx, LOOM_SHAPE(3, 1), 3, 0, 2),
                         I64(ctx, LOOM_SHAPE(3, 1), P53 + 1, -2, 5));
    EXPECT_I64(r, 0, 0, 0, P53 + 1, -2, 0, 0, 0, 0, 0, 5, 0);
    r = loom_scatter_add(I64(ctx, LOOM_SHAPE(2), 10, 20), 0, I64(ctx, LOOM_SHAPE(4), 1, 1, 0, 1),
                         I64(ctx, LOOM_SHAPE(4), P53, 1, 2, 3));
    EXPECT_I64(r, 12, P53 + 24);
    /* 0-dim, and an empty index (t unchanged). */
    r = loom_scatter_add(loom_scalar(ctx, LOOM_FLOAT32, 1), 0, loom_scalar(ctx, LOOM_INT64, 0),
                         loom_scalar(ctx, LOOM_FLOAT32, 5));
    assert_shape0(r);
    EXPECT_F32(r, 0, 6);
    r = loom_scatter_add(s6, 0, loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(0, 3)), s6);
    EXPECT_F32(r, 0, 1, 2, 3, 4, 5, 6);
    loom_ctx_free(ctx);
}
END_TEST

/* 3-D along each dim, index smaller than t and src, against plain loops. */
START_TEST(test_scatter_add_3d)
{
    loom_ctx *ctx = cfg_ctx(_i);
    const int64_t shape[3] = {3, 4, 5}, sshape[3] = {4, 5, 6};
    /* Index shapes: <= src everywhere, <= t outside dim; equal to t outside
     * dim in the last case of each (the fused-zero path). */
    const int64_t ishape[3][2][3] = {{{4, 3, 2}, {4, 4, 5}}, {{2, 5, 5}, {3, 5, 5}}, {{3, 2, 6}, {3, 4, 6}}};
    float src[120];
    double base[60], want[60];
    int64_t index[120];
    lcg_state = 99;
    for (int k = 0; k < 120; k++) src[k] = (float)(int)(lcg_unit() * 100);
    for (int k = 0; k < 60; k++) base[k] = 3 * k - 50;
    loom_tensor *tt = from_doubles(ctx, base, 3, shape);
    loom_tensor *ts = loom_tensor_from_array(ctx, LOOM_FLOAT32, src, 3, sshape);
    for (int dim = 0; dim < 3; dim++) {
        for (int c = 0; c < 2; c++) {
            const int64_t *is = ishape[dim][c], n = numel_of(3, is);
            for (int64_t k = 0; k < n; k++) index[k] = (k * 7 + 3 + c) % shape[dim];
            memcpy(want, base, sizeof want);
            ref_add_f64(want, 3, shape, src, sshape, dim, index, is);
            loom_tensor *r = loom_scatter_add(tt, dim, loom_tensor_from_array(ctx, LOOM_INT64, index, 3, is), ts);
            ck_assert_msg(r != NULL, "dim %d: %s", dim, loom_last_error());
            assert_shape(r, 3, 4, 5);
            EXPECT_DOUBLES(r, want, 60, 0);
        }
    }
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_scatter_add_errors)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *t = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 3));
    loom_tensor *s = loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 3));
    /* Out of range, negative: at eval, the first bad index in row-major order. */
    EXPECT_RANGE_ERROR(loom_scatter_add(t, 1, I64(ctx, LOOM_SHAPE(2, 3), 0, 1, 2, 0, 3, 9), s),
                       "scatter_add: index 3 is out of range for dim 1 of size 3");
    EXPECT_RANGE_ERROR(loom_scatter_add(t, 0, I64(ctx, LOOM_SHAPE(2, 3), 0, 1, 1, 0, -4, 0), s),
                       "scatter_add: index -4 is out of range for dim 0 of size 2");
    /* Shapes at record time. */
    assert_error(loom_scatter_add(t, 0, I64(ctx, LOOM_SHAPE(6), 0, 0, 0, 0, 0, 0), s), LOOM_ERR_SHAPE,
                 "scatter_add: index shape [6] does not fit tensor shape [2, 3] and source shape [2, 3]");
    assert_error(loom_scatter_add(t, 0, loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(3, 3)), s), LOOM_ERR_SHAPE,
                 "scatter_add");                        /* larger than src */
    assert_error(loom_scatter_add(t, 0, loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(1, 4)),
                                  loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 4))),
                 LOOM_ERR_SHAPE, "scatter_add");        /* larger than t outside dim */
    assert_error(loom_scatter_add(t, 0, loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(1, 3)),
                                  loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 3, 1))),
                 LOOM_ERR_SHAPE, "scatter_add");        /* src ndim */
    assert_error(loom_scatter_add(t, 2, loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(1, 3)), s), LOOM_ERR_RANGE,
                 "scatter_add");
    /* Dtypes. */
    assert_error(loom_scatter_add(t, 0, s, s), LOOM_ERR_DTYPE, "scatter_add: index must be int64");
    assert_error(loom_scatter_add(t, 0, loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(1, 3)),
                                  loom_ones(ctx, LOOM_INT64, LOOM_SHAPE(2, 3))),
                 LOOM_ERR_DTYPE, "scatter_add: source dtype int64 differs from the tensor's float32");
    assert_error(loom_scatter_add(B8(ctx, LOOM_SHAPE(1), 0), 0, I64(ctx, LOOM_SHAPE(1), 0), B8(ctx, LOOM_SHAPE(1), 1)),
                 LOOM_ERR_DTYPE, "scatter_add");
    loom_ctx_free(ctx);
}
END_TEST

/* ---- non-contiguous operands -------------------------------------------------------- */

START_TEST(test_noncontiguous)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* index_add along dim 0 with a transposed source [4, 3] (from [3, 4]) and
     * a strided index (every other element of [0, 9, 2, 9, 0, 9, 1, 9]). */
    float sv[12];
    for (int k = 0; k < 12; k++) sv[k] = (float)(k + 1);
    loom_tensor *src = loom_transpose(loom_tensor_from_array(ctx, LOOM_FLOAT32, sv, LOOM_SHAPE(3, 4)), 0, 1);
    loom_tensor *idx = loom_slice(I64(ctx, LOOM_SHAPE(8), 0, 9, 2, 9, 0, 9, 1, 9), 0, 0, 8, 2);
    ck_assert(!loom_tensor_is_contiguous(src) && !loom_tensor_is_contiguous(idx));
    loom_tensor *r = loom_index_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 3)), 0, idx, src);
    /* src rows: [1,5,9], [2,6,10], [3,7,11], [4,8,12]; to rows 0, 2, 0, 1. */
    EXPECT_F32(r, 0, 4, 12, 20, 4, 8, 12, 2, 6, 10);
    /* ... and along dim 1, where the source's stride along dim is 4:
     * src[:, :2] = [[1,5],[2,6],[3,7],[4,8]], both columns to column 1. */
    r = loom_index_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(4, 2)), 1,
                       loom_slice(I64(ctx, LOOM_SHAPE(4), 1, 7, 1, 7), 0, 0, 4, 2), loom_slice(src, 1, 0, 2, 1));
    EXPECT_F32(r, 0, 0, 6, 0, 8, 0, 10, 0, 12);
    /* scatter_add with a transposed source and a transposed index. */
    loom_tensor *it = loom_transpose(I64(ctx, LOOM_SHAPE(3, 2), 1, 0, 0, 2, 1, 1), 0, 1); /* [[1,0,1],[0,2,1]] */
    loom_tensor *st = loom_transpose(F32(ctx, LOOM_SHAPE(3, 2), 1, 2, 3, 4, 5, 6), 0, 1); /* [[1,3,5],[2,4,6]] */
    r = loom_scatter_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 3)), 1, it, st);
    EXPECT_F32(r, 0, 3, 6, 0, 2, 6, 4);
    r = loom_scatter_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 3)), 0, it, st);
    EXPECT_F32(r, 0, 2, 3, 0, 1, 0, 11, 0, 4, 0);
    /* An expanded index (stride 0 along the inner dim) makes scatter_add an
     * index_add: every column of source row i goes to row index[i]. */
    loom_tensor *e = loom_expand(I64(ctx, LOOM_SHAPE(4, 1), 2, 0, 2, 1), LOOM_SHAPE(4, 3));
    loom_tensor *sc = loom_contiguous(src);
    r = loom_scatter_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 3)), 0, e, sc);
    EXPECT_F32(r, 0, 2, 6, 10, 4, 8, 12, 4, 12, 20);
    r = loom_scatter_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 3)), 0, e, src);
    EXPECT_F32(r, 0, 2, 6, 10, 4, 8, 12, 4, 12, 20);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- large: threads 1 and 2 agree bit for bit ------------------------------------------ */

enum { L_ROWS = 200000, L_OUT = 1000, L_COLS = 48, CE_C = 10, CE_K = 3 };

/* Three large adds into fresh contexts of `threads` threads; results are
 * copied into the caller's arrays. The index values are given (from one
 * loom_randint call, read back once). */
static void large_run(int threads, const float *tv, const float *sv, const int64_t *rows, const int64_t *cells,
                      const int64_t *ce, float *out_ia, float *out_sa, float *out_ce)
{
    loom_ctx *ctx = test_ctx(threads, NULL);
    ck_assert_int_eq(loom_ctx_num_threads(ctx), threads);
    /* index_add along dim 0: [L, D] rows into [1000, D]. */
    loom_tensor *t = loom_tensor_from_array(ctx, LOOM_FLOAT32, tv, LOOM_SHAPE(L_OUT, L_COLS));
    loom_tensor *s = loom_tensor_from_array(ctx, LOOM_FLOAT32, sv, LOOM_SHAPE(L_ROWS, L_COLS));
    loom_tensor *r = loom_index_add(t, 0, loom_tensor_from_array(ctx, LOOM_INT64, rows, LOOM_SHAPE(L_ROWS)), s);
    ck_assert_msg(r != NULL, "%s", loom_last_error());
    ck_assert_int_eq(loom_tensor_copy_to(r, out_ia, sizeof(float) * L_OUT * L_COLS), LOOM_OK);
    /* scatter_add along dim 0 with a per-element index. */
    r = loom_scatter_add(t, 0, loom_tensor_from_array(ctx, LOOM_INT64, cells, LOOM_SHAPE(L_ROWS, L_COLS)), s);
    ck_assert_msg(r != NULL, "%s", loom_last_error());
    ck_assert_int_eq(loom_tensor_copy_to(r, out_sa, sizeof(float) * L_OUT * L_COLS), LOOM_OK);
    /* scatter_add along the last dim: [N, K] into zeros [N, C] (the
     * CrossEntropy backward's shape with K = 1; K = 3 accumulates). */
    loom_tensor *sk = loom_slice(s, 1, 0, CE_K, 1);
    r = loom_scatter_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(L_ROWS, CE_C)), 1,
                         loom_tensor_from_array(ctx, LOOM_INT64, ce, LOOM_SHAPE(L_ROWS, CE_K)), sk);
    ck_assert_msg(r != NULL, "%s", loom_last_error());
    ck_assert_int_eq(loom_tensor_copy_to(r, out_ce, sizeof(float) * L_ROWS * CE_C), LOOM_OK);
    loom_ctx_free(ctx);
}

/* got == the float accumulation exactly; close to the double one. */
static void check_large(const char *what, const float *got1, const float *got2, const float *acc32,
                        const double *acc64, const double *absum, int64_t n)
{
    ck_assert_msg(memcmp(got1, got2, sizeof(float) * (size_t)n) == 0, "%s: 1 and 2 threads differ", what);
    /* One ck_assert per check, not per element: each ck_assert costs Check
     * a write to its log. */
    int64_t bad32 = -1, bad64 = -1;
    for (int64_t k = 0; k < n && bad32 < 0; k++)
        if (memcmp(&got1[k], &acc32[k], sizeof(float)) != 0) bad32 = k;
    for (int64_t k = 0; k < n && bad64 < 0; k++)
        if (!(fabs(got1[k] - acc64[k]) <= 1e-6 * (absum[k] + 1))) bad64 = k;
    ck_assert_msg(bad32 < 0, "%s: element %lld is %.9g, the in-order float sum is %.9g", what, (long long)bad32,
                  got1[bad32 < 0 ? 0 : bad32], acc32[bad32 < 0 ? 0 : bad32]);
    ck_assert_msg(bad64 < 0, "%s: element %lld is %.9g, expected %.9g", what, (long long)bad64,
                  got1[bad64 < 0 ? 0 : bad64], acc64[bad64 < 0 ? 0 : bad64]);
}

START_TEST(test_large_identical)
{
    const int64_t nsrc = (int64_t)L_ROWS * L_COLS, nout = (int64_t)L_OUT * L_COLS, nce = (int64_t)L_ROWS * CE_C;
    float *tv = malloc(sizeof(float) * (size_t)nout), *sv = malloc(sizeof(float) * (size_t)nsrc);
    int64_t *rows = malloc(sizeof(int64_t) * L_ROWS), *cells = malloc(sizeof(int64_t) * (size_t)nsrc);
    int64_t *ce = malloc(sizeof(int64_t) * L_ROWS * CE_K);
    float *got[2][3], *acc32 = malloc(sizeof(float) * (size_t)nce);
    double *acc64 = malloc(sizeof(double) * (size_t)nce), *absum = malloc(sizeof(double) * (size_t)nce);
    ck_assert(tv && sv && rows && cells && ce && acc32 && acc64 && absum);
    for (int k = 0; k < 2; k++) {
        got[k][0] = malloc(sizeof(float) * (size_t)nout);
        got[k][1] = malloc(sizeof(float) * (size_t)nout);
        got[k][2] = malloc(sizeof(float) * (size_t)nce);
        ck_assert(got[k][0] && got[k][1] && got[k][2]);
    }
    lcg_state = 2024;
    for (int64_t k = 0; k < nout; k++) tv[k] = (float)lcg_unit();
    for (int64_t k = 0; k < nsrc; k++) sv[k] = (float)(lcg_unit() * 3.0);
    /* Random indices from loom_randint, read back once. */
    loom_ctx *ctx = test_ctx(1, NULL);
    ck_assert_int_eq(loom_tensor_copy_to(loom_randint(ctx, 0, L_OUT, LOOM_SHAPE(L_ROWS)), rows, sizeof(int64_t) * L_ROWS),
                     LOOM_OK);
    ck_assert_int_eq(loom_tensor_copy_to(loom_randint(ctx, 0, L_OUT, LOOM_SHAPE(L_ROWS, L_COLS)), cells,
                                         sizeof(int64_t) * (size_t)nsrc),
                     LOOM_OK);
    ck_assert_int_eq(loom_tensor_copy_to(loom_randint(ctx, 0, CE_C, LOOM_SHAPE(L_ROWS, CE_K)), ce,
                                         sizeof(int64_t) * L_ROWS * CE_K),
                     LOOM_OK);
    loom_ctx_free(ctx);
    int64_t in_range = 0;
    for (int64_t k = 0; k < L_ROWS; k++) in_range += rows[k] >= 0 && rows[k] < L_OUT;
    ck_assert_int_eq(in_range, L_ROWS);

    large_run(1, tv, sv, rows, cells, ce, got[0][0], got[0][1], got[0][2]);
    large_run(2, tv, sv, rows, cells, ce, got[1][0], got[1][1], got[1][2]);

    /* The references: zero, accumulate in order, then add t. */
    const int64_t oshape[2] = {L_OUT, L_COLS}, sshape[2] = {L_ROWS, L_COLS};
    const int64_t ceshape[2] = {L_ROWS, CE_C}, ceishape[2] = {L_ROWS, CE_K};
    for (int c = 0; c < 3; c++) {
        const int64_t n = c < 2 ? nout : nce;
        memset(acc32, 0, sizeof(float) * (size_t)n);
        memset(acc64, 0, sizeof(double) * (size_t)n);
        memset(absum, 0, sizeof(double) * (size_t)n);
        float *absf = malloc(sizeof(float) * (size_t)nsrc);
        ck_assert(absf);
        for (int64_t k = 0; k < nsrc; k++) absf[k] = fabsf(sv[k]);
        if (c == 0) {
            ref_add_f32(acc32, 2, oshape, sv, sshape, 0, rows, NULL);
            ref_add_f64(acc64, 2, oshape, sv, sshape, 0, rows, NULL);
            ref_add_f64(absum, 2, oshape, absf, sshape, 0, rows, NULL);
        } else if (c == 1) {
            ref_add_f32(acc32, 2, oshape, sv, sshape, 0, cells, sshape);
            ref_add_f64(acc64, 2, oshape, sv, sshape, 0, cells, sshape);
            ref_add_f64(absum, 2, oshape, absf, sshape, 0, cells, sshape);
        } else {
            ref_add_f32(acc32, 2, ceshape, sv, sshape, 1, ce, ceishape);
            ref_add_f64(acc64, 2, ceshape, sv, sshape, 1, ce, ceishape);
            ref_add_f64(absum, 2, ceshape, absf, sshape, 1, ce, ceishape);
        }
        free(absf);
        if (c < 2) {
            for (int64_t k = 0; k < n; k++) {
                acc32[k] = tv[k] + acc32[k];
                acc64[k] += tv[k];
                absum[k] += fabs(tv[k]);
            }
        } else {
            for (int64_t k = 0; k < n; k++) acc32[k] = 0.0f + acc32[k];
        }
        static const char *const names[3] = {"index_add dim 0", "scatter_add dim 0", "scatter_add dim 1"};
        check_large(names[c], got[0][c], got[1][c], acc32, acc64, absum, n);
    }
    for (int k = 0; k < 2; k++)
        for (int c = 0; c < 3; c++) free(got[k][c]);
    free(tv);
    free(sv);
    free(rows);
    free(cells);
    free(ce);
    free(acc32);
    free(acc64);
    free(absum);
}
END_TEST

/* int64 sums are exact: the large index_add with int64 values, and the
 * first bad index reported whatever the thread count. */
START_TEST(test_large_int64_and_errors)
{
    const int64_t n = L_ROWS;
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)n), *src = malloc(sizeof(int64_t) * (size_t)n * 8);
    int64_t want[L_OUT * 8];
    ck_assert(idx && src);
    for (int threads = 1; threads <= 2; threads++) {
        loom_ctx *ctx = test_ctx(threads, NULL);
        lcg_state = 5;
        for (int64_t k = 0; k < n; k++) idx[k] = (int64_t)((lcg_unit() + 1) * 500) % L_OUT;
        for (int64_t k = 0; k < n * 8; k++) src[k] = (int64_t)(lcg_unit() * 1e6) * (INT64_C(1) << 20);
        memset(want, 0, sizeof want);
        for (int64_t k = 0; k < n; k++)
            for (int c = 0; c < 8; c++) want[idx[k] * 8 + c] += src[k * 8 + c];
        loom_tensor *r = loom_index_add(loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(L_OUT, 8)), 0,
                                        loom_tensor_from_array(ctx, LOOM_INT64, idx, LOOM_SHAPE(L_ROWS)),
                                        loom_tensor_from_array(ctx, LOOM_INT64, src, LOOM_SHAPE(L_ROWS, 8)));
        assert_values_i64(r, want, L_OUT * 8);
        /* Two bad indices: the first in row-major order is named. */
        idx[150000] = L_OUT + 7;
        idx[1000] = L_OUT + 3;
        loom_tensor *ix = loom_tensor_from_array(ctx, LOOM_INT64, idx, LOOM_SHAPE(L_ROWS, 1));
        loom_tensor *bad = loom_scatter_add(loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(L_OUT, 1)), 0, ix,
                                            loom_tensor_from_array(ctx, LOOM_INT64, src, LOOM_SHAPE(L_ROWS, 1)));
        EXPECT_RANGE_ERROR(bad, "scatter_add: index 1003 is out of range for dim 0 of size 1000");
        bad = loom_index_add(loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(L_OUT, 8)), 0, loom_reshape(ix, LOOM_SHAPE(L_ROWS)),
                             loom_tensor_from_array(ctx, LOOM_INT64, src, LOOM_SHAPE(L_ROWS, 8)));
        EXPECT_RANGE_ERROR(bad, "index_add: index 1003 is out of range for dim 0 of size 1000");
        loom_ctx_free(ctx);
    }
    free(idx);
    free(src);
}
END_TEST

/* slice_scatter above the kernels' thread thresholds: part boundaries fall
 * inside rows of the zero fill and of the copy. */
START_TEST(test_large_slice_scatter)
{
    const int64_t shape[3] = {64, 300, 33};
    const int64_t n = numel_of(3, shape);
    const int64_t cases[][3] = {{1, 7, 1}, {1, 2, 3}, {2, 0, 1}, {0, 20, 1}}; /* dim, start, step */
    double *src = malloc(sizeof(double) * (size_t)n), *want = malloc(sizeof(double) * (size_t)n);
    float *got[2] = {malloc(sizeof(float) * (size_t)n), malloc(sizeof(float) * (size_t)n)};
    ck_assert(src && want && got[0] && got[1]);
    lcg_state = 11;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int dim = (int)cases[c][0];
        const int64_t start = cases[c][1], step = cases[c][2];
        int64_t sshape[3] = {64, 300, 33};
        sshape[dim] = (shape[dim] - start + step - 1) / step - 1; /* leaves a gap at the end */
        const int64_t ns = numel_of(3, sshape);
        for (int64_t k = 0; k < ns; k++) src[k] = lcg_unit();
        memset(want, 0, sizeof(double) * (size_t)n);
        ref_slice_scatter(want, 3, shape, src, sshape, dim, start, step);
        for (int threads = 1; threads <= 2; threads++) {
            loom_ctx *ctx = test_ctx(threads, NULL);
            loom_tensor *r = loom__slice_scatter(from_doubles(ctx, src, 3, sshape), 3, shape, dim, start, step);
            ck_assert_msg(r != NULL, "%s", loom_last_error());
            ck_assert_int_eq(loom_tensor_copy_to(r, got[threads - 1], sizeof(float) * (size_t)n), LOOM_OK);
            loom_ctx_free(ctx);
        }
        int64_t bad = -1;
        for (int64_t k = 0; k < n && bad < 0; k++)
            if (got[0][k] != (float)want[k]) bad = k;
        ck_assert_msg(bad < 0, "case %zu: element %lld is %g, expected %g", c, (long long)bad, got[0][bad < 0 ? 0 : bad],
                      want[bad < 0 ? 0 : bad]);
        ck_assert(memcmp(got[0], got[1], sizeof(float) * (size_t)n) == 0);
    }
    free(src);
    free(want);
    free(got[0]);
    free(got[1]);
}
END_TEST

Suite *loom_suite_scatter(void)
{
    Suite *s = suite_create("scatter");

    TCase *tc = test_tcase(s, "slice_scatter", 60);
    tcase_add_loop_test(tc, test_slice_scatter_basic, 0, NCFG);
    tcase_add_loop_test(tc, test_slice_scatter_4d, 0, NCFG);
    tcase_add_loop_test(tc, test_slice_scatter_noncontiguous, 0, NCFG);
    tcase_add_test(tc, test_slice_scatter_errors);

    tc = test_tcase(s, "index_add", 60);
    tcase_add_loop_test(tc, test_index_add, 0, NCFG);
    tcase_add_loop_test(tc, test_index_add_3d, 0, NCFG);
    tcase_add_loop_test(tc, test_index_add_errors, 0, NCFG);

    tc = test_tcase(s, "scatter_add", 60);
    tcase_add_loop_test(tc, test_scatter_add_2d, 0, NCFG);
    tcase_add_loop_test(tc, test_scatter_add_3d, 0, NCFG);
    tcase_add_loop_test(tc, test_scatter_add_errors, 0, NCFG);
    tcase_add_loop_test(tc, test_noncontiguous, 0, NCFG);

    tc = test_tcase(s, "large", 120);
    tcase_add_test(tc, test_large_identical);
    tcase_add_test(tc, test_large_int64_and_errors);
    tcase_add_test(tc, test_large_slice_scatter);
    return s;
}
