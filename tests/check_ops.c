/*
 * tests/check_ops.c - every op of loom/ops.h against hand-computed values.
 *
 * Expected values are literals worked out by hand, or computed here with
 * plain C loops in double from the same input data; never from Loom's own
 * output. Most value tests run three times (loop tests, _i = 0..2): one
 * thread, two threads, and two threads with the portable C backend forced.
 * The "large" case checks that results over 300000 elements (above the
 * kernels' OpenMP thresholds) are bitwise identical for 1 and 2 threads.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check_suites.h"

/* ---- helpers ---------------------------------------------------------- */

#define TOL 1e-6

static void expect_i64_from_doubles(loom_tensor *t, const double *want, int64_t n, int line)
{
    int64_t *w = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    ck_assert(w);
    for (int64_t i = 0; i < n; i++) w[i] = (int64_t)want[i];
    test_assert_i64(t, w, n, __FILE__, line);
    free(w);
}
#define EXPECT_I64_DOUBLES(t, want, n) expect_i64_from_doubles((t), (want), (n), __LINE__)

/* The logical (row-major) values of a strided view of `base`. */
static void strided_values(const double *base, int ndim, const int64_t *shape, const int64_t *strides,
                           int64_t offset, double *out)
{
    int64_t n = numel_of(ndim, shape), idx[LOOM_MAX_DIMS];
    for (int64_t i = 0; i < n; i++) {
        unravel(i, ndim, shape, idx);
        int64_t off = offset;
        for (int d = 0; d < ndim; d++) off += idx[d] * strides[d];
        out[i] = base[off];
    }
}

/* Reference reductions in double over a contiguous array. out gets the
 * keepdim-shaped result (row-major); argmax/argmin give the index in
 * row-major order over the reduced dims. NaN handling as PyTorch: max/min
 * are NaN if any element is, and argmax/argmin point at the first NaN. */
enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_ARGMAX, R_ARGMIN };
static void ref_reduce(const double *x, int ndim, const int64_t *shape, unsigned mask, int op, double *out)
{
    int64_t oshape[LOOM_MAX_DIMS], rshape[LOOM_MAX_DIMS];
    int nr = 0;
    for (int d = 0; d < ndim; d++) {
        oshape[d] = mask & (1u << d) ? 1 : shape[d];
        if (mask & (1u << d)) rshape[nr++] = shape[d];
    }
    int64_t n = numel_of(ndim, shape), on = numel_of(ndim, oshape), extent = numel_of(nr, rshape);
    double *best = malloc(sizeof(double) * (size_t)(on ? on : 1));
    int64_t *arg = malloc(sizeof(int64_t) * (size_t)(on ? on : 1));
    ck_assert(best && arg);
    for (int64_t o = 0; o < on; o++) {
        best[o] = 0;
        arg[o] = -1;
    }
    int64_t idx[LOOM_MAX_DIMS];
    for (int64_t i = 0; i < n; i++) {
        unravel(i, ndim, shape, idx);
        int64_t o = 0, r = 0;
        for (int d = 0; d < ndim; d++) {
            if (mask & (1u << d)) {
                r = r * shape[d] + idx[d];
            } else {
                o = o * oshape[d] + idx[d];
            }
        }
        double v = x[i];
        if (op == R_SUM || op == R_MEAN) {
            best[o] += v;
            continue;
        }
        bool is_max = op == R_MAX || op == R_ARGMAX;
        bool take = arg[o] < 0;
        if (!take && !isnan(best[o])) take = isnan(v) || (is_max ? v > best[o] : v < best[o]);
        if (take) {
            best[o] = v;
            arg[o] = r;
        }
    }
    for (int64_t o = 0; o < on; o++) {
        switch (op) {
        case R_MEAN: out[o] = best[o] / (double)extent; break;
        case R_ARGMAX:
        case R_ARGMIN: out[o] = (double)arg[o]; break;
        default: out[o] = best[o];
        }
    }
    free(best);
    free(arg);
}

/* A deterministic pseudo-random double in [lo, hi). */
static double lcg_next(uint64_t *s, double lo, double hi)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (double)(*s >> 11) / 9007199254740992.0;
}

static void expect_dtype(loom_tensor *t, loom_dtype dt, int line)
{
    ck_assert_msg(t != NULL, "line %d: %s", line, loom_last_error());
    ck_assert_msg(loom_tensor_dtype(t) == dt, "line %d: dtype %s, expected %s", line,
                  loom_dtype_name(loom_tensor_dtype(t)), loom_dtype_name(dt));
}
#define EXPECT_DTYPE(t, dt) expect_dtype((t), (dt), __LINE__)

/* ---- binary arithmetic ------------------------------------------------- */

START_TEST(test_binary_f32)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *a = F32(ctx, LOOM_SHAPE(2, 3), 1, -2, 3.5f, 0, 4, -6);
    loom_tensor *b = F32(ctx, LOOM_SHAPE(2, 3), 2, 4, -0.5f, 3, -8, 2.5f);
    loom_tensor *r = loom_add(a, b);
    assert_shape(r, 2, 3);
    EXPECT_F32(r, TOL, 3, 2, 3, 3, -4, -3.5f);
    EXPECT_F32(loom_sub(a, b), TOL, -1, -6, 4, -3, 12, -8.5f);
    EXPECT_F32(loom_mul(a, b), TOL, 2, -8, -1.75f, 0, -32, -15);
    EXPECT_F32(loom_div(a, b), TOL, 0.5f, -0.5f, -7, 0, -0.5f, -2.4f);
    /* 3.5^-0.5 = 1/sqrt(3.5); 4^-8 = 2^-16; a negative base to a fractional
     * power is NaN. */
    EXPECT_F32(loom_pow(a, b), TOL, 1, 16, 0.534522484f, 0, 1.52587890625e-05f, NAN);
    EXPECT_F32(loom_maximum(a, b), TOL, 2, 4, 3.5f, 3, 4, 2.5f);
    EXPECT_F32(loom_minimum(a, b), TOL, 1, -2, -0.5f, 0, -8, -6);
    /* pow corner cases, as C99/PyTorch: x^0 = 1 even for NaN and 0, 1^y = 1. */
    loom_tensor *pa = F32(ctx, LOOM_SHAPE(6), 0, NAN, 1, -2, 2, 9);
    loom_tensor *pb = F32(ctx, LOOM_SHAPE(6), 0, 0, NAN, 3, -1, 0.5f);
    EXPECT_F32(loom_pow(pa, pb), TOL, 1, 1, 1, -8, 0.5f, 3);
    /* The inputs are unchanged. */
    EXPECT_F32(a, 0, 1, -2, 3.5f, 0, 4, -6);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_binary_i64)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *a = I64(ctx, LOOM_SHAPE(5), 7, -7, 3, 0, -2);
    loom_tensor *b = I64(ctx, LOOM_SHAPE(5), 2, 3, 4, 5, 3);
    EXPECT_I64(loom_add(a, b), 9, -4, 7, 5, 1);
    EXPECT_I64(loom_sub(a, b), 5, -10, -1, -5, -5);
    EXPECT_I64(loom_mul(a, b), 14, -21, 12, 0, -6);
    /* int64 / int64 is true division: float32. */
    EXPECT_F32(loom_div(a, b), TOL, 3.5f, -2.33333333f, 0.75f, 0, -0.666666667f);
    EXPECT_I64(loom_pow(a, b), 49, -343, 81, 0, -8);
    EXPECT_I64(loom_maximum(a, b), 7, 3, 4, 5, 3);
    EXPECT_I64(loom_minimum(a, b), 2, -7, 3, 0, -2);
    /* 0^0 = 1 for integers too. */
    EXPECT_I64(loom_pow(I64(ctx, LOOM_SHAPE(2), 0, 5), I64(ctx, LOOM_SHAPE(2), 0, 0)), 1, 1);
    loom_ctx_free(ctx);
}
END_TEST

/* int64 arithmetic is exact: values above 2^53 are not rounded through
 * double (as they are not in PyTorch). */
START_TEST(test_int64_exact)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *a = I64(ctx, LOOM_SHAPE(4), P53 + 1, INT64_MAX - 1, INT64_MIN + 1, 3037000499);
    loom_tensor *b = I64(ctx, LOOM_SHAPE(4), 1, 1, -1, 3037000499);
    EXPECT_I64(loom_add(a, b), P53 + 2, INT64_MAX, INT64_MIN, 6074000998);
    EXPECT_I64(loom_sub(a, b), P53, INT64_MAX - 2, INT64_MIN + 2, 0);
    EXPECT_I64(loom_mul(loom_slice(a, 0, 3, 4, 1), loom_slice(b, 0, 3, 4, 1)), INT64_C(9223372030926249001));
    EXPECT_I64(loom_pow(I64(ctx, LOOM_SHAPE(2), 3, 2), I64(ctx, LOOM_SHAPE(2), 39, 62)),
               INT64_C(4052555153018976267), INT64_C(4611686018427387904));
    loom_tensor *c = I64(ctx, LOOM_SHAPE(2), P53 + 1, P53);
    loom_tensor *d = I64(ctx, LOOM_SHAPE(2), P53, P53 + 1);
    EXPECT_I64(loom_maximum(c, d), P53 + 1, P53 + 1);
    EXPECT_I64(loom_minimum(c, d), P53, P53);
    EXPECT_BOOL(loom_gt(c, d), 1, 0);
    EXPECT_BOOL(loom_eq(c, d), 0, 0);
    EXPECT_BOOL(loom_le(c, d), 0, 1);
    EXPECT_I64(loom_add_scalar(c, 1), P53 + 2, P53 + 1);
    EXPECT_I64(loom_neg(c), -(P53 + 1), -P53);
    /* Overflow wraps, as int64 arithmetic does in PyTorch. */
    EXPECT_I64(loom_add(I64(ctx, LOOM_SHAPE(2), INT64_MAX, INT64_MIN), I64(ctx, LOOM_SHAPE(2), 1, -1)), INT64_MIN,
               INT64_MAX);
    /* A negative integer exponent (tensor form): 1/base truncated. */
    EXPECT_I64(loom_pow(I64(ctx, LOOM_SHAPE(4), 2, 1, -1, -1), I64(ctx, LOOM_SHAPE(4), -1, -3, -3, -2)), 0, 1, -1, 1);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_div_by_zero)
{
    loom_ctx *ctx = cfg_ctx(_i);
    EXPECT_F32(loom_div(F32(ctx, LOOM_SHAPE(3), 1, -1, 0), F32(ctx, LOOM_SHAPE(3), 0, 0, 0)), 0, INFINITY, -INFINITY,
               NAN);
    /* Integer true division by zero follows float rules. */
    EXPECT_F32(loom_div(I64(ctx, LOOM_SHAPE(3), 1, -1, 0), I64(ctx, LOOM_SHAPE(3), 0, 0, 0)), 0, INFINITY, -INFINITY,
               NAN);
    EXPECT_F32(loom_div_scalar(I64(ctx, LOOM_SHAPE(2), 3, -3), 0), 0, INFINITY, -INFINITY);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_promotion)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *i = I64(ctx, LOOM_SHAPE(3), 1, 2, 3);
    loom_tensor *f = F32(ctx, LOOM_SHAPE(3), 0.5f, 0.25f, -1);
    loom_tensor *t = B8(ctx, LOOM_SHAPE(4), 1, 1, 0, 0);
    loom_tensor *u = B8(ctx, LOOM_SHAPE(4), 1, 0, 1, 0);
    /* int64 with float32 gives float32, in either order. */
    EXPECT_F32(loom_add(i, f), TOL, 1.5f, 2.25f, 2);
    EXPECT_F32(loom_mul(f, i), TOL, 0.5f, 0.5f, -3);
    EXPECT_F32(loom_sub(i, f), TOL, 0.5f, 1.75f, 4);
    EXPECT_F32(loom_maximum(i, f), TOL, 1, 2, 3);
    EXPECT_F32(loom_minimum(f, i), TOL, 0.5f, 0.25f, -1);
    EXPECT_F32(loom_pow(i, F32(ctx, LOOM_SHAPE(3), 0.5f, 2, -1)), TOL, 1, 4, 0.333333333f);
    /* bool arithmetic computes in int64. */
    EXPECT_I64(loom_add(t, u), 2, 1, 1, 0);
    EXPECT_I64(loom_mul(t, u), 1, 0, 0, 0);
    EXPECT_I64(loom_sub(t, u), 0, 1, -1, 0);
    EXPECT_I64(loom_add(B8(ctx, LOOM_SHAPE(2), 1, 0), I64(ctx, LOOM_SHAPE(2), 5, 5)), 6, 5);
    EXPECT_F32(loom_add(B8(ctx, LOOM_SHAPE(2), 1, 0), F32(ctx, LOOM_SHAPE(2), 0.5f, 0.5f)), TOL, 1.5f, 0.5f);
    /* bool / bool: true division, float32. */
    EXPECT_F32(loom_div(B8(ctx, LOOM_SHAPE(2), 1, 0), B8(ctx, LOOM_SHAPE(2), 1, 1)), TOL, 1, 0);
    /* Comparisons across dtypes compare the promoted values. */
    EXPECT_BOOL(loom_lt(i, F32(ctx, LOOM_SHAPE(3), 1.5f, 2, 2.5f)), 1, 0, 0);
    EXPECT_BOOL(loom_eq(B8(ctx, LOOM_SHAPE(2), 1, 0), I64(ctx, LOOM_SHAPE(2), 1, 2)), 1, 0);
    EXPECT_BOOL(loom_ge(F32(ctx, LOOM_SHAPE(2), 0.5f, 1), B8(ctx, LOOM_SHAPE(2), 1, 1)), 0, 1);
    loom_ctx_free(ctx);
}
END_TEST

/* maximum/minimum of two bool tensors stay bool (as torch.maximum), and
 * with int64 promote to int64. */
START_TEST(test_bool_extremum)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *p = B8(ctx, LOOM_SHAPE(3), 1, 0, 0), *q = B8(ctx, LOOM_SHAPE(3), 0, 0, 1);
    EXPECT_I64(loom_maximum(p, I64(ctx, LOOM_SHAPE(3), 0, -1, 2)), 1, 0, 2);
    EXPECT_I64(loom_minimum(p, I64(ctx, LOOM_SHAPE(3), 0, -1, 2)), 0, -1, 0);
    EXPECT_BOOL(loom_maximum(p, q), 1, 0, 1);
    EXPECT_BOOL(loom_minimum(p, q), 0, 0, 0);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_scalar_forms)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *i = I64(ctx, LOOM_SHAPE(3), 1, 2, 3);
    loom_tensor *f = F32(ctx, LOOM_SHAPE(3), 1, 2, 3);
    loom_tensor *b = B8(ctx, LOOM_SHAPE(2), 1, 0);
    /* An integral scalar keeps int64; a fractional one makes float32. */
    EXPECT_I64(loom_add_scalar(i, 2), 3, 4, 5);
    EXPECT_F32(loom_add_scalar(i, 0.5), TOL, 1.5f, 2.5f, 3.5f);
    EXPECT_I64(loom_sub_scalar(i, 1), 0, 1, 2);
    EXPECT_F32(loom_sub_scalar(i, 0.25), TOL, 0.75f, 1.75f, 2.75f);
    EXPECT_I64(loom_mul_scalar(i, 2.0), 2, 4, 6);
    EXPECT_F32(loom_mul_scalar(i, -1.5), TOL, -1.5f, -3, -4.5f);
    EXPECT_F32(loom_div_scalar(i, 2), TOL, 0.5f, 1, 1.5f);
    EXPECT_I64(loom_pow_scalar(i, 2), 1, 4, 9);
    EXPECT_F32(loom_pow_scalar(i, 0.5), TOL, 1, 1.41421356f, 1.73205081f);
    EXPECT_I64(loom_add_scalar(i, -5), -4, -3, -2);
    /* float32 tensors stay float32. */
    EXPECT_F32(loom_add_scalar(f, 2), TOL, 3, 4, 5);
    EXPECT_F32(loom_sub_scalar(f, 0.5), TOL, 0.5f, 1.5f, 2.5f);
    EXPECT_F32(loom_mul_scalar(f, -2), TOL, -2, -4, -6);
    EXPECT_F32(loom_div_scalar(f, 4), TOL, 0.25f, 0.5f, 0.75f);
    EXPECT_F32(loom_pow_scalar(f, 2), TOL, 1, 4, 9);
    EXPECT_F32(loom_pow_scalar(f, -1), TOL, 1, 0.5f, 0.333333333f);
    /* bool with a scalar: int64 for an integral one, float32 otherwise. */
    EXPECT_I64(loom_add_scalar(b, 1), 2, 1);
    EXPECT_F32(loom_add_scalar(b, 0.5), TOL, 1.5f, 0.5f);
    EXPECT_I64(loom_mul_scalar(b, 3), 3, 0);
    /* On a 0-dim tensor the result is 0-dim. */
    loom_tensor *s = loom_add_scalar(loom_scalar(ctx, LOOM_INT64, 4), 3);
    assert_shape0(s);
    EXPECT_I64(s, 7);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- comparisons, where ------------------------------------------------ */

START_TEST(test_compare)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *a = F32(ctx, LOOM_SHAPE(6), 1, 2, NAN, -INFINITY, 3, NAN);
    loom_tensor *b = F32(ctx, LOOM_SHAPE(6), 1, 3, NAN, -INFINITY, NAN, 0);
    /* Every comparison with NaN is false except ne. */
    EXPECT_BOOL(loom_eq(a, b), 1, 0, 0, 1, 0, 0);
    EXPECT_BOOL(loom_ne(a, b), 0, 1, 1, 0, 1, 1);
    EXPECT_BOOL(loom_gt(a, b), 0, 0, 0, 0, 0, 0);
    EXPECT_BOOL(loom_ge(a, b), 1, 0, 0, 1, 0, 0);
    EXPECT_BOOL(loom_lt(a, b), 0, 1, 0, 0, 0, 0);
    EXPECT_BOOL(loom_le(a, b), 1, 1, 0, 1, 0, 0);
    EXPECT_BOOL(loom_gt(b, a), 0, 1, 0, 0, 0, 0);

    loom_tensor *i = I64(ctx, LOOM_SHAPE(3), 1, 5, -3);
    loom_tensor *j = I64(ctx, LOOM_SHAPE(3), 2, 5, -4);
    EXPECT_BOOL(loom_eq(i, j), 0, 1, 0);
    EXPECT_BOOL(loom_ne(i, j), 1, 0, 1);
    EXPECT_BOOL(loom_gt(i, j), 0, 0, 1);
    EXPECT_BOOL(loom_ge(i, j), 0, 1, 1);
    EXPECT_BOOL(loom_lt(i, j), 1, 0, 0);
    EXPECT_BOOL(loom_le(i, j), 1, 1, 0);

    loom_tensor *p = B8(ctx, LOOM_SHAPE(4), 1, 0, 1, 0);
    loom_tensor *q = B8(ctx, LOOM_SHAPE(4), 1, 1, 0, 0);
    EXPECT_BOOL(loom_eq(p, q), 1, 0, 0, 1);
    EXPECT_BOOL(loom_gt(p, q), 0, 0, 1, 0);
    EXPECT_BOOL(loom_le(p, q), 1, 1, 0, 1);

    /* Broadcasting comparisons: [2,1] vs [3]. */
    loom_tensor *c = loom_lt(F32(ctx, LOOM_SHAPE(2, 1), 1, 2), F32(ctx, LOOM_SHAPE(3), 0, 1.5f, 3));
    assert_shape(c, 2, 3);
    EXPECT_BOOL(c, 0, 1, 1, 0, 0, 1);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_where)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* cond [2,1], a [3], b 0-dim -> [2,3]. */
    loom_tensor *r = loom_where(B8(ctx, LOOM_SHAPE(2, 1), 1, 0), F32(ctx, LOOM_SHAPE(3), 1, 2, 3),
                                loom_scalar(ctx, LOOM_FLOAT32, -1));
    assert_shape(r, 2, 3);
    EXPECT_F32(r, 0, 1, 2, 3, -1, -1, -1);
    /* All three broadcast: cond [1,3], a [2,1], b 0-dim. */
    r = loom_where(B8(ctx, LOOM_SHAPE(1, 3), 1, 0, 1), F32(ctx, LOOM_SHAPE(2, 1), 10, 20),
                   loom_scalar(ctx, LOOM_FLOAT32, -5));
    assert_shape(r, 2, 3);
    EXPECT_F32(r, 0, 10, -5, 10, 20, -5, 20);
    /* cond [2,1,1], a [1,2,1], b [1,1,2] -> [2,2,2]. */
    r = loom_where(B8(ctx, LOOM_SHAPE(2, 1, 1), 1, 0), F32(ctx, LOOM_SHAPE(1, 2, 1), 1, 2),
                   F32(ctx, LOOM_SHAPE(1, 1, 2), 30, 40));
    assert_shape(r, 2, 2, 2);
    EXPECT_F32(r, 0, 1, 1, 2, 2, 30, 40, 30, 40);
    /* A float condition: nonzero (NaN included) is true, -0.0 is false. */
    r = loom_where(F32(ctx, LOOM_SHAPE(5), 0, 0.5f, -1, NAN, -0.0f), I64(ctx, LOOM_SHAPE(5), 1, 2, 3, 4, 5),
                   loom_scalar(ctx, LOOM_INT64, 0));
    EXPECT_I64(r, 0, 2, 3, 4, 0);
    /* An int64 condition. */
    r = loom_where(I64(ctx, LOOM_SHAPE(3), 0, 3, -1), F32(ctx, LOOM_SHAPE(3), 1, 2, 3), F32(ctx, LOOM_SHAPE(3), 7, 8, 9));
    EXPECT_F32(r, 0, 7, 2, 3);
    /* Mixed value dtypes promote. */
    r = loom_where(B8(ctx, LOOM_SHAPE(2), 1, 0), I64(ctx, LOOM_SHAPE(2), 1, 2), F32(ctx, LOOM_SHAPE(2), 0.5f, 0.5f));
    EXPECT_F32(r, 0, 1, 0.5f);
    /* bool values stay bool; int64 values stay exact. */
    EXPECT_BOOL(loom_where(B8(ctx, LOOM_SHAPE(3), 1, 0, 1), B8(ctx, LOOM_SHAPE(3), 0, 0, 0),
                           B8(ctx, LOOM_SHAPE(3), 1, 1, 1)),
                0, 1, 0);
    EXPECT_I64(loom_where(B8(ctx, LOOM_SHAPE(2), 0, 1), I64(ctx, LOOM_SHAPE(1), P53 + 1),
                          I64(ctx, LOOM_SHAPE(1), INT64_MIN)),
               INT64_MIN, P53 + 1);
    /* NaN values pass through. */
    EXPECT_F32(loom_where(B8(ctx, LOOM_SHAPE(2), 1, 0), F32(ctx, LOOM_SHAPE(2), NAN, 1),
                          F32(ctx, LOOM_SHAPE(2), 2, INFINITY)),
               0, NAN, INFINITY);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- broadcasting ------------------------------------------------------ */

START_TEST(test_broadcast)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* [3,1] + [1,4] -> [3,4]. */
    loom_tensor *r = loom_add(F32(ctx, LOOM_SHAPE(3, 1), 0, 10, 20), F32(ctx, LOOM_SHAPE(1, 4), 1, 2, 3, 4));
    assert_shape(r, 3, 4);
    EXPECT_F32(r, 0, 1, 2, 3, 4, 11, 12, 13, 14, 21, 22, 23, 24);
    /* And the other way round, with sub (order matters). */
    r = loom_sub(F32(ctx, LOOM_SHAPE(1, 4), 1, 2, 3, 4), F32(ctx, LOOM_SHAPE(3, 1), 0, 10, 20));
    assert_shape(r, 3, 4);
    EXPECT_F32(r, 0, 1, 2, 3, 4, -9, -8, -7, -6, -19, -18, -17, -16);
    /* 0-dim with any tensor, on either side. */
    loom_tensor *s = loom_scalar(ctx, LOOM_FLOAT32, 5);
    r = loom_mul(s, F32(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4));
    assert_shape(r, 2, 2);
    EXPECT_F32(r, 0, 5, 10, 15, 20);
    r = loom_sub(F32(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4), s);
    EXPECT_F32(r, 0, -4, -3, -2, -1);
    r = loom_add(s, loom_scalar(ctx, LOOM_FLOAT32, 0.5));
    assert_shape0(r);
    EXPECT_F32(r, 0, 5.5f);
    r = loom_div(s, F32(ctx, LOOM_SHAPE(1), 2));
    assert_shape(r, 1);
    EXPECT_F32(r, 0, 2.5f);
    r = loom_gt(loom_scalar(ctx, LOOM_INT64, 2), I64(ctx, LOOM_SHAPE(3), 1, 2, 3));
    EXPECT_BOOL(r, 1, 0, 0);
    r = loom_add(loom_scalar(ctx, LOOM_INT64, 2), F32(ctx, LOOM_SHAPE(2), 0.5f, 1));
    EXPECT_F32(r, 0, 2.5f, 3);
    /* A leading-dim broadcast: [4] + [2,3,4]. */
    double bv[24], want[24];
    const double av[4] = {1, 2, 3, 4};
    for (int k = 0; k < 24; k++) bv[k] = 10.0 * k;
    for (int k = 0; k < 24; k++) want[k] = bv[k] + av[k % 4];
    loom_tensor *a4 = from_doubles(ctx, av, LOOM_SHAPE(4));
    loom_tensor *b24 = from_doubles(ctx, bv, LOOM_SHAPE(2, 3, 4));
    r = loom_add(a4, b24);
    assert_shape(r, 2, 3, 4);
    EXPECT_DOUBLES(r, want, 24, 0);
    r = loom_add(b24, a4);
    assert_shape(r, 2, 3, 4);
    EXPECT_DOUBLES(r, want, 24, 0);
    /* [2,1,4] * [3,1] -> [2,3,4]. */
    double cv[8], dv[3] = {1, -1, 2};
    for (int k = 0; k < 8; k++) cv[k] = k + 1;
    for (int p = 0; p < 2; p++)
        for (int q = 0; q < 3; q++)
            for (int k = 0; k < 4; k++) want[(p * 3 + q) * 4 + k] = cv[p * 4 + k] * dv[q];
    r = loom_mul(from_doubles(ctx, cv, LOOM_SHAPE(2, 1, 4)), from_doubles(ctx, dv, LOOM_SHAPE(3, 1)));
    assert_shape(r, 2, 3, 4);
    EXPECT_DOUBLES(r, want, 24, 0);
    /* Shapes that do not broadcast. */
    assert_error(loom_add(F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6), F32(ctx, LOOM_SHAPE(4), 1, 2, 3, 4)),
                 LOOM_ERR_SHAPE, "add: shapes [2, 3] and [4] cannot be broadcast");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_broadcast_zero_size)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *z = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0, 3));
    loom_tensor *r = loom_add(z, F32(ctx, LOOM_SHAPE(1, 3), 1, 2, 3));
    assert_shape(r, 0, 3);
    ck_assert_int_eq(loom_tensor_numel(r), 0);
    ck_assert_int_eq(loom_tensor_eval(r), LOOM_OK);
    assert_values_f32(r, NULL, 0, 0);
    /* [2,0] with [2,1] and with a scalar. */
    loom_tensor *z2 = loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(2, 0));
    r = loom_mul(z2, I64(ctx, LOOM_SHAPE(2, 1), 1, 2));
    assert_shape(r, 2, 0);
    assert_values_i64(r, NULL, 0);
    r = loom_add_scalar(z2, 1);
    assert_shape(r, 2, 0);
    assert_values_i64(r, NULL, 0);
    r = loom_eq(z, loom_scalar(ctx, LOOM_FLOAT32, 0));
    assert_shape(r, 0, 3);
    assert_values_bool(r, NULL, 0);
    /* Unary ops and chains on empty tensors evaluate fine. */
    r = loom_exp(loom_neg(z));
    assert_shape(r, 0, 3);
    assert_values_f32(r, NULL, 0, 0);
    /* A chain that ends non-empty: sum over the empty dim. */
    r = loom_sum(loom_add_scalar(z, 1), LOOM_DIMS(0), false);
    assert_shape(r, 3);
    EXPECT_F32(r, 0, 0, 0, 0);
    /* [0] + [1] -> [0]; [0] + [3] cannot broadcast. */
    r = loom_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0)), F32(ctx, LOOM_SHAPE(1), 1));
    assert_shape(r, 0);
    assert_error(loom_add(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0)), F32(ctx, LOOM_SHAPE(3), 1, 2, 3)),
                 LOOM_ERR_SHAPE, "cannot be broadcast");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_broadcast_8d)
{
    loom_ctx *ctx = cfg_ctx(_i);
    double av[16], bv[16], want[256];
    for (int k = 0; k < 16; k++) {
        av[k] = k;
        bv[k] = 100.0 * k;
    }
    loom_tensor *a = from_doubles(ctx, av, LOOM_SHAPE(2, 1, 2, 1, 2, 1, 2, 1));
    loom_tensor *b = from_doubles(ctx, bv, LOOM_SHAPE(1, 2, 1, 2, 1, 2, 1, 2));
    int64_t shape[8] = {2, 2, 2, 2, 2, 2, 2, 2}, idx[8];
    for (int64_t i = 0; i < 256; i++) {
        unravel(i, 8, shape, idx);
        int64_t ai = idx[0] * 8 + idx[2] * 4 + idx[4] * 2 + idx[6];
        int64_t bi = idx[1] * 8 + idx[3] * 4 + idx[5] * 2 + idx[7];
        want[i] = av[ai] + bv[bi];
    }
    loom_tensor *r = loom_add(a, b);
    assert_shape(r, 2, 2, 2, 2, 2, 2, 2, 2);
    EXPECT_DOUBLES(r, want, 256, 0);
    /* Reduce the 8-dim result over the odd dims, and over all. */
    double red[16];
    ref_reduce(want, 8, shape, 0xAAu, R_SUM, red);
    loom_tensor *s = loom_sum(r, LOOM_DIMS(1, 3, 5, 7), false);
    assert_shape(s, 2, 2, 2, 2);
    EXPECT_DOUBLES(s, red, 16, 1e-6);
    ref_reduce(want, 8, shape, 0xFFu, R_MAX, red);
    EXPECT_DOUBLES(loom_max(r, LOOM_DIM_ALL, false), red, 1, 0);
    /* An 8-dim tensor with a 0-dim one. */
    r = loom_mul(a, loom_scalar(ctx, LOOM_FLOAT32, 2));
    assert_shape(r, 2, 1, 2, 1, 2, 1, 2, 1);
    for (int k = 0; k < 16; k++) want[k] = 2 * av[k];
    EXPECT_DOUBLES(r, want, 16, 0);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- unary ------------------------------------------------------------- */

START_TEST(test_unary_f32)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = F32(ctx, LOOM_SHAPE(5), -2, -0.5f, 0, 0.5f, 2);
    EXPECT_F32(loom_neg(x), 0, 2, 0.5f, 0, -0.5f, -2);
    EXPECT_F32(loom_abs(x), 0, 2, 0.5f, 0, 0.5f, 2);
    EXPECT_F32(loom_exp(x), 1e-6, 0.135335283f, 0.606530660f, 1, 1.64872127f, 7.38905610f);
    EXPECT_F32(loom_sin(x), 1e-6, -0.909297427f, -0.479425539f, 0, 0.479425539f, 0.909297427f);
    EXPECT_F32(loom_cos(x), 1e-6, -0.416146837f, 0.877582562f, 1, 0.877582562f, -0.416146837f);
    EXPECT_F32(loom_tanh(x), 1e-6, -0.964027580f, -0.462117157f, 0, 0.462117157f, 0.964027580f);
    EXPECT_F32(loom_sigmoid(x), 1e-6, 0.119202922f, 0.377540669f, 0.5f, 0.622459331f, 0.880797078f);
    EXPECT_F32(loom_relu(x), 0, 0, 0, 0, 0.5f, 2);
    loom_tensor *p = F32(ctx, LOOM_SHAPE(6), 1, 2.718281828f, 0.5f, 0, -1, INFINITY);
    EXPECT_F32(loom_log(p), 1e-6, 0, 1, -0.693147181f, -INFINITY, NAN, INFINITY);
    EXPECT_F32(loom_sqrt(F32(ctx, LOOM_SHAPE(6), 4, 2, 0, -1, INFINITY, 0.25f)), 1e-6, 2, 1.41421356f, 0, NAN,
               INFINITY, 0.5f);
    /* neg(0) is -0.0 and abs(-0.0) is +0.0, bit for bit. */
    float *z = copy_out(loom_neg(F32(ctx, LOOM_SHAPE(1), 0)));
    ck_assert(signbit(z[0]));
    free(z);
    z = copy_out(loom_abs(F32(ctx, LOOM_SHAPE(1), -0.0f)));
    ck_assert(!signbit(z[0]));
    free(z);
    loom_ctx_free(ctx);
}
END_TEST

/* Float functions against libm in double over a spread of inputs (2-D, so
 * the kernels' strided loops see more than one row). */
static double sigmoid_d(double v) { return 1.0 / (1.0 + exp(-v)); }

START_TEST(test_unary_vs_libm)
{
    loom_ctx *ctx = cfg_ctx(_i);
    const double xs[12] = {-7, -3, -1.5, -0.25, 0, 0.3, 1, 2.5, 7, 10, -10, 0.001};
    const double ps[12] = {0.001, 0.3, 1, 2.5, 7, 1000, 1e-20, 3, 1e20, 0.5, 42, 100};
    double want[12];
    struct {
        loom_tensor *(*op)(loom_tensor *);
        double (*fn)(double);
        bool positive;
    } cases[] = {
        {loom_exp, exp, false},   {loom_sin, sin, false},   {loom_cos, cos, false},
        {loom_tanh, tanh, false}, {loom_sigmoid, sigmoid_d, false}, {loom_log, log, true},
        {loom_sqrt, sqrt, true},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const double *in = cases[c].positive ? ps : xs;
        loom_tensor *x = from_doubles(ctx, in, LOOM_SHAPE(3, 4));
        for (int k = 0; k < 12; k++) want[k] = cases[c].fn((double)(float)in[k]);
        loom_tensor *r = cases[c].op(x);
        assert_shape(r, 3, 4);
        EXPECT_DOUBLES(r, want, 12, 2e-6);
    }
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_unary_int_bool)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *i = I64(ctx, LOOM_SHAPE(4), 3, -4, 0, P53 + 1);
    EXPECT_I64(loom_neg(i), -3, 4, 0, -(P53 + 1));
    EXPECT_I64(loom_abs(i), 3, 4, 0, P53 + 1);
    EXPECT_I64(loom_relu(i), 3, 0, 0, P53 + 1);
    /* Float functions of integers and bools give float32. */
    EXPECT_F32(loom_exp(I64(ctx, LOOM_SHAPE(2), 0, 1)), 1e-6, 1, 2.718281828f);
    EXPECT_F32(loom_sqrt(I64(ctx, LOOM_SHAPE(3), 4, 9, 2)), 1e-6, 2, 3, 1.41421356f);
    EXPECT_F32(loom_log(I64(ctx, LOOM_SHAPE(2), 1, 0)), 1e-6, 0, -INFINITY);
    EXPECT_F32(loom_sin(I64(ctx, LOOM_SHAPE(1), 0)), 1e-6, 0);
    EXPECT_F32(loom_cos(I64(ctx, LOOM_SHAPE(1), 0)), 1e-6, 1);
    EXPECT_F32(loom_tanh(I64(ctx, LOOM_SHAPE(1), 1)), 1e-6, 0.761594156f);
    EXPECT_F32(loom_sigmoid(B8(ctx, LOOM_SHAPE(2), 1, 0)), 1e-6, 0.731058579f, 0.5f);
    EXPECT_F32(loom_exp(B8(ctx, LOOM_SHAPE(2), 1, 0)), 1e-6, 2.718281828f, 1);
    /* neg/abs/relu/clamp reject bool. */
    assert_error(loom_neg(B8(ctx, LOOM_SHAPE(1), 1)), LOOM_ERR_DTYPE, "neg");
    assert_error(loom_relu(B8(ctx, LOOM_SHAPE(1), 1)), LOOM_ERR_DTYPE, "relu");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_clamp)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = F32(ctx, LOOM_SHAPE(7), -3, -1, 0, 1, 3, NAN, -INFINITY);
    EXPECT_F32(loom_clamp(x, -1, 2), 0, -1, -1, 0, 1, 2, NAN, -1);
    EXPECT_F32(loom_clamp(x, -INFINITY, 0.5), 0, -3, -1, 0, 0.5f, 0.5f, NAN, -INFINITY);
    EXPECT_F32(loom_clamp(x, 0, INFINITY), 0, 0, 0, 0, 1, 3, NAN, 0);
    EXPECT_F32(loom_clamp(x, -INFINITY, INFINITY), 0, -3, -1, 0, 1, 3, NAN, -INFINITY);
    EXPECT_F32(loom_clamp(x, 2, 2), 0, 2, 2, 2, 2, 2, NAN, 2);
    /* int64 keeps int64, exactly (even near the int64 limits). */
    loom_tensor *i = I64(ctx, LOOM_SHAPE(4), -5, 0, 7, 100);
    EXPECT_I64(loom_clamp(i, -1, 10), -1, 0, 7, 10);
    EXPECT_I64(loom_clamp(i, -INFINITY, 3), -5, 0, 3, 3);
    EXPECT_I64(loom_clamp(i, 0, INFINITY), 0, 0, 7, 100);
    loom_tensor *big = I64(ctx, LOOM_SHAPE(3), INT64_MAX, INT64_MIN, P53 + 1);
    EXPECT_I64(loom_clamp(big, -INFINITY, INFINITY), INT64_MAX, INT64_MIN, P53 + 1);
    EXPECT_I64(loom_clamp(big, 0, INFINITY), INT64_MAX, 0, P53 + 1);
    EXPECT_I64(loom_clamp(big, -INFINITY, 0), 0, INT64_MIN, 0);
    /* Bad bounds. */
    assert_error(loom_clamp(x, 2, 1), LOOM_ERR_INVALID_ARG, "clamp");
    assert_error(loom_clamp(x, NAN, 1), LOOM_ERR_INVALID_ARG, "clamp");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_to_dtype)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *f = F32(ctx, LOOM_SHAPE(7), 2.7f, -2.7f, 0.5f, -0.5f, 3, 1e10f, -1e10f);
    /* float -> int64 truncates toward zero. */
    EXPECT_I64(loom_to_dtype(f, LOOM_INT64), 2, -2, 0, 0, 3, 10000000000, -10000000000);
    /* float -> bool: nonzero (NaN and inf included) is true; -0.0 is false. */
    loom_tensor *g = F32(ctx, LOOM_SHAPE(7), 0, -0.0f, 0.1f, NAN, -3, INFINITY, 1e-30f);
    EXPECT_BOOL(loom_to_dtype(g, LOOM_BOOL), 0, 0, 1, 1, 1, 1, 1);
    loom_tensor *i = I64(ctx, LOOM_SHAPE(4), 0, 5, -1, 16777217);
    EXPECT_BOOL(loom_to_dtype(i, LOOM_BOOL), 0, 1, 1, 1);
    /* int64 -> float32 rounds to nearest (2^24 + 1 is not representable). */
    EXPECT_F32(loom_to_dtype(i, LOOM_FLOAT32), 0, 0, 5, -1, 16777216);
    loom_tensor *b = B8(ctx, LOOM_SHAPE(3), 1, 0, 1);
    EXPECT_F32(loom_to_dtype(b, LOOM_FLOAT32), 0, 1, 0, 1);
    EXPECT_I64(loom_to_dtype(b, LOOM_INT64), 1, 0, 1);
    /* The same dtype: the same values (an alias). */
    loom_tensor *same = loom_to_dtype(f, LOOM_FLOAT32);
    EXPECT_F32(same, 0, 2.7f, -2.7f, 0.5f, -0.5f, 3, 1e10f, -1e10f);
    /* A chain: float -> int64 -> float. */
    EXPECT_F32(loom_to_dtype(loom_to_dtype(f, LOOM_INT64), LOOM_FLOAT32), 0, 2, -2, 0, 0, 3, 1e10f, -1e10f);
    /* Shape is kept, 0-dim too. */
    loom_tensor *s = loom_to_dtype(loom_scalar(ctx, LOOM_FLOAT32, -7.9), LOOM_INT64);
    assert_shape0(s);
    EXPECT_I64(s, -7);
    assert_error(loom_to_dtype(f, LOOM_DTYPE_COUNT), LOOM_ERR_DTYPE, "to_dtype");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_nan_inf)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = F32(ctx, LOOM_SHAPE(3), NAN, INFINITY, -INFINITY);
    EXPECT_F32(loom_relu(x), 0, NAN, INFINITY, 0);
    EXPECT_F32(loom_exp(x), 0, NAN, INFINITY, 0);
    EXPECT_F32(loom_neg(x), 0, NAN, -INFINITY, INFINITY);
    EXPECT_F32(loom_abs(x), 0, NAN, INFINITY, INFINITY);
    EXPECT_F32(loom_tanh(x), 0, NAN, 1, -1);
    EXPECT_F32(loom_sigmoid(x), 0, NAN, 1, 0);
    EXPECT_F32(loom_log(x), 0, NAN, INFINITY, NAN);
    EXPECT_F32(loom_sqrt(x), 0, NAN, INFINITY, NAN);
    EXPECT_F32(loom_sin(x), 0, NAN, NAN, NAN);
    EXPECT_F32(loom_log(F32(ctx, LOOM_SHAPE(2), 0, -0.0f)), 0, -INFINITY, -INFINITY);
    EXPECT_F32(loom_sqrt(F32(ctx, LOOM_SHAPE(1), -1)), 0, NAN);
    /* maximum/minimum propagate NaN from either side. */
    loom_tensor *a = F32(ctx, LOOM_SHAPE(4), NAN, 1, NAN, -INFINITY);
    loom_tensor *b = F32(ctx, LOOM_SHAPE(4), 1, NAN, NAN, 5);
    EXPECT_F32(loom_maximum(a, b), 0, NAN, NAN, NAN, 5);
    EXPECT_F32(loom_minimum(a, b), 0, NAN, NAN, NAN, -INFINITY);
    EXPECT_F32(loom_maximum(b, a), 0, NAN, NAN, NAN, 5);
    EXPECT_F32(loom_minimum(b, a), 0, NAN, NAN, NAN, -INFINITY);
    /* Arithmetic. */
    EXPECT_F32(loom_add(a, b), 0, NAN, NAN, NAN, -INFINITY);
    EXPECT_F32(loom_sub(F32(ctx, LOOM_SHAPE(2), INFINITY, INFINITY), F32(ctx, LOOM_SHAPE(2), INFINITY, 1)), 0, NAN,
               INFINITY);
    EXPECT_F32(loom_mul(F32(ctx, LOOM_SHAPE(2), INFINITY, INFINITY), F32(ctx, LOOM_SHAPE(2), 0, -2)), 0, NAN,
               -INFINITY);
    EXPECT_F32(loom_clamp(F32(ctx, LOOM_SHAPE(3), NAN, INFINITY, -INFINITY), -1, 1), 0, NAN, 1, -1);
    loom_ctx_free(ctx);
}
END_TEST

/* sigmoid and tanh saturate without NaN for large |x|; exp overflows to inf. */
START_TEST(test_saturation)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = F32(ctx, LOOM_SHAPE(8), 100, -100, 1000, -1000, 88.8f, -88.8f, 20, -20);
    const float sig[8] = {1, 0, 1, 0, 1, 0, 1, 2.06115362e-09f};
    assert_values_f32(loom_sigmoid(x), sig, 8, 1e-6);
    EXPECT_F32(loom_tanh(x), 1e-6, 1, -1, 1, -1, 1, -1, 1, -1);
    EXPECT_F32(loom_exp(F32(ctx, LOOM_SHAPE(3), 100, -100, 89)), 1e-6, INFINITY, 0, INFINITY);
    float *s = copy_out(loom_sigmoid(x));
    for (int k = 0; k < 8; k++) ck_assert_msg(!isnan(s[k]) && s[k] >= 0 && s[k] <= 1, "sigmoid[%d] = %g", k, s[k]);
    free(s);
    s = copy_out(loom_tanh(x));
    for (int k = 0; k < 8; k++) ck_assert_msg(!isnan(s[k]) && fabsf(s[k]) <= 1, "tanh[%d] = %g", k, s[k]);
    free(s);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- reductions -------------------------------------------------------- */

START_TEST(test_sum_mean)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    loom_tensor *r = loom_sum(x, 0, NULL, false);
    assert_shape0(r);
    EXPECT_F32(r, 0, 21);
    r = loom_sum(x, LOOM_DIMS(0), false);
    assert_shape(r, 3);
    EXPECT_F32(r, 0, 5, 7, 9);
    r = loom_sum(x, LOOM_DIMS(1), false);
    assert_shape(r, 2);
    EXPECT_F32(r, 0, 6, 15);
    r = loom_sum(x, LOOM_DIMS(-1), false);
    assert_shape(r, 2);
    EXPECT_F32(r, 0, 6, 15);
    r = loom_sum(x, LOOM_DIMS(-2), false);
    EXPECT_F32(r, 0, 5, 7, 9);
    r = loom_sum(x, LOOM_DIMS(0, 1), false);
    assert_shape0(r);
    EXPECT_F32(r, 0, 21);
    r = loom_sum(x, LOOM_DIMS(-1, 0), false);
    assert_shape0(r);
    EXPECT_F32(r, 0, 21);
    r = loom_sum(x, LOOM_DIMS(1), true);
    assert_shape(r, 2, 1);
    EXPECT_F32(r, 0, 6, 15);
    r = loom_sum(x, 0, NULL, true);
    assert_shape(r, 1, 1);
    EXPECT_F32(r, 0, 21);
    ck_assert_double_eq_tol(scalar_of(loom_sum(x, 0, NULL, false)), 21, 1e-9);

    r = loom_mean(x, 0, NULL, false);
    assert_shape0(r);
    EXPECT_F32(r, 1e-7, 3.5f);
    EXPECT_F32(loom_mean(x, LOOM_DIMS(0), false), 1e-7, 2.5f, 3.5f, 4.5f);
    EXPECT_F32(loom_mean(x, LOOM_DIMS(1), false), 1e-7, 2, 5);
    r = loom_mean(x, LOOM_DIMS(-1), true);
    assert_shape(r, 2, 1);
    EXPECT_F32(r, 1e-7, 2, 5);
    r = loom_mean(x, LOOM_DIMS(0, -1), true);
    assert_shape(r, 1, 1);
    EXPECT_F32(r, 1e-7, 3.5f);

    /* A 3-D tensor, several dims, against the double reference. */
    double v[60], want[60];
    int64_t shape[3] = {3, 4, 5};
    for (int k = 0; k < 60; k++) v[k] = (k * 37 % 61) - 30.5;
    loom_tensor *t = from_doubles(ctx, v, LOOM_SHAPE(3, 4, 5));
    static const struct {
        int n;
        int dims[3];
        unsigned mask;
    } cases[] = {
        {1, {0}, 1u}, {1, {1}, 2u}, {1, {2}, 4u}, {2, {0, 2}, 5u}, {2, {-1, -2}, 6u}, {2, {0, 1}, 3u}, {3, {2, 0, 1}, 7u},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int keep = 0; keep < 2; keep++) {
            int64_t on = 1;
            for (int d = 0; d < 3; d++)
                if (!(cases[c].mask & (1u << d))) on *= shape[d];
            ref_reduce(v, 3, shape, cases[c].mask, R_SUM, want);
            r = loom_sum(t, cases[c].n, cases[c].dims, keep);
            ck_assert_ptr_nonnull(r);
            ck_assert_int_eq(loom_tensor_ndim(r), keep ? 3 : 3 - cases[c].n);
            if (keep)
                for (int d = 0; d < 3; d++)
                    ck_assert_int_eq(loom_tensor_size(r, d), cases[c].mask & (1u << d) ? 1 : shape[d]);
            EXPECT_DOUBLES(r, want, on, 1e-6);
            ref_reduce(v, 3, shape, cases[c].mask, R_MEAN, want);
            EXPECT_DOUBLES(loom_mean(t, cases[c].n, cases[c].dims, keep), want, on, 1e-6);
        }
    }
    /* Sum of a 0-dim tensor. */
    r = loom_sum(loom_scalar(ctx, LOOM_FLOAT32, 5), 0, NULL, false);
    assert_shape0(r);
    EXPECT_F32(r, 0, 5);
    r = loom_mean(loom_scalar(ctx, LOOM_FLOAT32, 5), LOOM_DIMS(-1), true);
    assert_shape0(r);
    EXPECT_F32(r, 0, 5);
    /* Bad dim lists. */
    assert_error(loom_sum(x, LOOM_DIMS(2), false), LOOM_ERR_RANGE, "sum");
    assert_error(loom_mean(x, LOOM_DIMS(-3), false), LOOM_ERR_RANGE, "mean");
    assert_error(loom_sum(x, LOOM_DIMS(0, -2), false), LOOM_ERR_INVALID_ARG, "sum");
    assert_error(loom_max(x, 2, false), LOOM_ERR_RANGE, "max");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_sum_int_bool)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *i = I64(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4);
    loom_tensor *r = loom_sum(i, 0, NULL, false);
    assert_shape0(r);
    EXPECT_I64(r, 10);
    EXPECT_I64(loom_sum(i, LOOM_DIMS(0), false), 4, 6);
    EXPECT_I64(loom_sum(i, LOOM_DIMS(-1), true), 3, 7);
    /* Exact above 2^53. */
    EXPECT_I64(loom_sum(I64(ctx, LOOM_SHAPE(3), P53, 1, 1), 0, NULL, false), P53 + 2);
    /* bool sums count, as int64. */
    loom_tensor *b = B8(ctx, LOOM_SHAPE(2, 3), 1, 0, 1, 1, 1, 0);
    EXPECT_I64(loom_sum(b, 0, NULL, false), 4);
    EXPECT_I64(loom_sum(b, LOOM_DIMS(1), false), 2, 2);
    EXPECT_I64(loom_sum(b, LOOM_DIMS(0), false), 2, 1, 1);
    /* mean of int64 and bool is float32. */
    r = loom_mean(I64(ctx, LOOM_SHAPE(4), 1, 2, 3, 4), 0, NULL, false);
    EXPECT_F32(r, 1e-7, 2.5f);
    EXPECT_F32(loom_mean(i, LOOM_DIMS(1), false), 1e-7, 1.5f, 3.5f);
    EXPECT_F32(loom_mean(B8(ctx, LOOM_SHAPE(4), 1, 0, 1, 1), 0, NULL, false), 1e-7, 0.75f);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_reduce_empty)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *z = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 0));
    loom_tensor *r = loom_sum(z, LOOM_DIMS(1), false);
    assert_shape(r, 2);
    EXPECT_F32(r, 0, 0, 0);
    r = loom_mean(z, LOOM_DIMS(1), false);
    assert_shape(r, 2);
    EXPECT_F32(r, 0, NAN, NAN);
    r = loom_sum(z, LOOM_DIMS(0), false);
    assert_shape(r, 0);
    assert_values_f32(r, NULL, 0, 0);
    r = loom_sum(z, 0, NULL, false);
    assert_shape0(r);
    EXPECT_F32(r, 0, 0);
    r = loom_mean(z, 0, NULL, false);
    assert_shape0(r);
    EXPECT_F32(r, 0, NAN);
    r = loom_sum(z, LOOM_DIMS(1), true);
    assert_shape(r, 2, 1);
    EXPECT_F32(r, 0, 0, 0);
    /* int64 and bool empty sums give int64 zeros. */
    EXPECT_I64(loom_sum(loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(2, 0)), LOOM_DIMS(1), false), 0, 0);
    EXPECT_I64(loom_sum(loom_zeros(ctx, LOOM_BOOL, LOOM_SHAPE(0)), 0, NULL, false), 0);
    EXPECT_F32(loom_mean(loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(0, 3)), LOOM_DIMS(0), false), 0, NAN, NAN, NAN);
    /* [0,3] reduced over the non-empty dim: an empty result. */
    r = loom_max(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0, 3)), 1, false);
    assert_shape(r, 0);
    assert_values_f32(r, NULL, 0, 0);
    /* max/argmax over an empty dim have no answer. */
    assert_error(loom_max(z, 1, false), LOOM_ERR_SHAPE, "max");
    assert_error(loom_argmax(z, LOOM_DIM_ALL, false), LOOM_ERR_SHAPE, "argmax");
    assert_error(loom_min(z, LOOM_DIM_ALL, false), LOOM_ERR_SHAPE, "min");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_max_min_arg)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = F32(ctx, LOOM_SHAPE(2, 3), 3, 1, 3, -2, 5, 5);
    loom_tensor *r = loom_max(x, 1, false);
    assert_shape(r, 2);
    EXPECT_F32(r, 0, 3, 5);
    /* Ties: the first index. */
    r = loom_argmax(x, 1, false);
    assert_shape(r, 2);
    EXPECT_I64(r, 0, 1);
    EXPECT_F32(loom_min(x, 1, false), 0, 1, -2);
    EXPECT_I64(loom_argmin(x, 1, false), 1, 0);
    EXPECT_F32(loom_max(x, 0, false), 0, 3, 5, 5);
    EXPECT_I64(loom_argmax(x, 0, false), 0, 1, 1);
    EXPECT_F32(loom_min(x, -2, false), 0, -2, 1, 3);
    EXPECT_I64(loom_argmin(x, -2, false), 1, 0, 0);
    EXPECT_I64(loom_argmax(x, -1, false), 0, 1);
    /* Over every element. */
    r = loom_max(x, LOOM_DIM_ALL, false);
    assert_shape0(r);
    EXPECT_F32(r, 0, 5);
    r = loom_argmax(x, LOOM_DIM_ALL, false);
    assert_shape0(r);
    EXPECT_I64(r, 4);
    EXPECT_F32(loom_min(x, LOOM_DIM_ALL, false), 0, -2);
    EXPECT_I64(loom_argmin(x, LOOM_DIM_ALL, false), 3);
    /* keepdim. */
    r = loom_max(x, 1, true);
    assert_shape(r, 2, 1);
    EXPECT_F32(r, 0, 3, 5);
    r = loom_argmin(x, 0, true);
    assert_shape(r, 1, 3);
    EXPECT_I64(r, 1, 0, 0);
    r = loom_argmax(x, LOOM_DIM_ALL, true);
    assert_shape(r, 1, 1);
    EXPECT_I64(r, 4);
    r = loom_max(x, LOOM_DIM_ALL, true);
    assert_shape(r, 1, 1);
    EXPECT_F32(r, 0, 5);
    /* All equal: index 0. */
    loom_tensor *eq = F32(ctx, LOOM_SHAPE(3), 7, 7, 7);
    EXPECT_I64(loom_argmax(eq, 0, false), 0);
    EXPECT_I64(loom_argmin(eq, 0, false), 0);
    /* -inf only. */
    loom_tensor *ninf = F32(ctx, LOOM_SHAPE(2), -INFINITY, -INFINITY);
    EXPECT_F32(loom_max(ninf, 0, false), 0, -INFINITY);
    EXPECT_I64(loom_argmax(ninf, 0, false), 0);
    /* 0-dim input. */
    loom_tensor *s = loom_scalar(ctx, LOOM_FLOAT32, 4);
    r = loom_max(s, 0, false);
    assert_shape0(r);
    EXPECT_F32(r, 0, 4);
    EXPECT_I64(loom_argmax(s, LOOM_DIM_ALL, false), 0);
    /* 3-D, every dim, against the reference. */
    double v[30], want[30];
    int64_t shape[3] = {2, 3, 5};
    for (int k = 0; k < 30; k++) v[k] = (k * 13 % 7) - 3; /* many ties */
    loom_tensor *t = from_doubles(ctx, v, LOOM_SHAPE(2, 3, 5));
    for (int d = 0; d < 3; d++) {
        int64_t on = 30 / shape[d];
        ref_reduce(v, 3, shape, 1u << d, R_MAX, want);
        EXPECT_DOUBLES(loom_max(t, d, false), want, on, 0);
        ref_reduce(v, 3, shape, 1u << d, R_MIN, want);
        EXPECT_DOUBLES(loom_min(t, d, true), want, on, 0);
        ref_reduce(v, 3, shape, 1u << d, R_ARGMAX, want);
        EXPECT_I64_DOUBLES(loom_argmax(t, d, false), want, on);
        ref_reduce(v, 3, shape, 1u << d, R_ARGMIN, want);
        EXPECT_I64_DOUBLES(loom_argmin(t, d - 3, false), want, on);
    }
    ref_reduce(v, 3, shape, 7u, R_ARGMAX, want);
    EXPECT_I64_DOUBLES(loom_argmax(t, LOOM_DIM_ALL, false), want, 1);
    ref_reduce(v, 3, shape, 7u, R_ARGMIN, want);
    EXPECT_I64_DOUBLES(loom_argmin(t, LOOM_DIM_ALL, false), want, 1);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_arg_nan)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = F32(ctx, LOOM_SHAPE(2, 4), 1, NAN, 3, NAN, 2, 0, -1, 5);
    EXPECT_F32(loom_max(x, 1, false), 0, NAN, 5);
    EXPECT_I64(loom_argmax(x, 1, false), 1, 3);
    EXPECT_F32(loom_min(x, 1, false), 0, NAN, -1);
    EXPECT_I64(loom_argmin(x, 1, false), 1, 2);
    EXPECT_F32(loom_max(x, 0, false), 0, 2, NAN, 3, NAN);
    EXPECT_I64(loom_argmax(x, 0, false), 1, 0, 0, 0);
    EXPECT_I64(loom_argmin(x, 0, false), 0, 0, 1, 0);
    EXPECT_F32(loom_max(x, LOOM_DIM_ALL, false), 0, NAN);
    EXPECT_I64(loom_argmax(x, LOOM_DIM_ALL, false), 1);
    EXPECT_F32(loom_min(x, LOOM_DIM_ALL, false), 0, NAN);
    EXPECT_I64(loom_argmin(x, LOOM_DIM_ALL, false), 1);
    /* NaN after the maximum still wins; NaN first too. */
    loom_tensor *y = F32(ctx, LOOM_SHAPE(2, 3), INFINITY, 1, NAN, NAN, INFINITY, -INFINITY);
    EXPECT_F32(loom_max(y, 1, false), 0, NAN, NAN);
    EXPECT_I64(loom_argmax(y, 1, false), 2, 0);
    EXPECT_I64(loom_argmin(y, 1, false), 2, 0);
    /* sum and mean propagate NaN too. */
    EXPECT_F32(loom_sum(x, LOOM_DIMS(1), false), 0, NAN, 6);
    EXPECT_F32(loom_mean(x, LOOM_DIMS(1), false), 1e-7, NAN, 1.5f);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_max_int_bool)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *i = I64(ctx, LOOM_SHAPE(4), 4, -1, 9, 9);
    loom_tensor *r = loom_max(i, 0, false);
    EXPECT_DTYPE(r, LOOM_INT64);
    EXPECT_I64(r, 9);
    EXPECT_I64(loom_argmax(i, 0, false), 2);
    EXPECT_I64(loom_min(i, LOOM_DIM_ALL, false), -1);
    EXPECT_I64(loom_argmin(i, LOOM_DIM_ALL, false), 1);
    /* Exact above 2^53. */
    loom_tensor *big = I64(ctx, LOOM_SHAPE(3), P53, P53 + 1, P53);
    EXPECT_I64(loom_max(big, 0, false), P53 + 1);
    EXPECT_I64(loom_argmax(big, 0, false), 1);
    EXPECT_I64(loom_argmin(I64(ctx, LOOM_SHAPE(3), P53 + 1, P53 + 2, P53), 0, false), 2);
    /* bool: max is bool. */
    loom_tensor *b = B8(ctx, LOOM_SHAPE(2, 3), 0, 1, 1, 0, 0, 0);
    r = loom_max(b, 1, false);
    EXPECT_DTYPE(r, LOOM_BOOL);
    EXPECT_BOOL(r, 1, 0);
    EXPECT_I64(loom_argmax(b, 1, false), 1, 0);
    EXPECT_BOOL(loom_min(b, 0, false), 0, 0, 0);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- cat, stack, index_select, gather ----------------------------------- */

START_TEST(test_cat)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *a = F32(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4);
    loom_tensor *b = F32(ctx, LOOM_SHAPE(1, 2), 5, 6);
    loom_tensor *c = F32(ctx, LOOM_SHAPE(2, 1), 7, 8);
    loom_tensor *r = loom_cat((loom_tensor *[]){a, b}, 2, 0);
    assert_shape(r, 3, 2);
    EXPECT_F32(r, 0, 1, 2, 3, 4, 5, 6);
    r = loom_cat((loom_tensor *[]){b, a}, 2, -2);
    assert_shape(r, 3, 2);
    EXPECT_F32(r, 0, 5, 6, 1, 2, 3, 4);
    r = loom_cat((loom_tensor *[]){a, c}, 2, 1);
    assert_shape(r, 2, 3);
    EXPECT_F32(r, 0, 1, 2, 7, 3, 4, 8);
    r = loom_cat((loom_tensor *[]){c, a}, 2, -1);
    assert_shape(r, 2, 3);
    EXPECT_F32(r, 0, 7, 1, 2, 8, 3, 4);
    /* Three inputs, one repeated. */
    r = loom_cat((loom_tensor *[]){a, c, c}, 3, 1);
    assert_shape(r, 2, 4);
    EXPECT_F32(r, 0, 1, 2, 7, 7, 3, 4, 8, 8);
    r = loom_cat((loom_tensor *[]){a, b, a}, 3, 0);
    assert_shape(r, 5, 2);
    EXPECT_F32(r, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4);
    /* Five inputs, one of them empty. */
    loom_tensor *five[5] = {
        F32(ctx, LOOM_SHAPE(1), 1), F32(ctx, LOOM_SHAPE(2), 2, 3), loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0)),
        F32(ctx, LOOM_SHAPE(1), 4), F32(ctx, LOOM_SHAPE(3), 5, 6, 7),
    };
    r = loom_cat(five, 5, 0);
    assert_shape(r, 7);
    EXPECT_F32(r, 0, 1, 2, 3, 4, 5, 6, 7);
    /* Five 2-D inputs along dim 1, including lazy ones. */
    loom_tensor *cols[5] = {c, loom_add_scalar(c, 10), a, loom_neg(c), loom_mul_scalar(a, 2)};
    r = loom_cat(cols, 5, -1);
    assert_shape(r, 2, 7);
    EXPECT_F32(r, 0, 7, 17, 1, 2, -7, 2, 4, 8, 18, 3, 4, -8, 6, 8);
    /* One input: a copy. */
    r = loom_cat(&a, 1, 0);
    assert_shape(r, 2, 2);
    EXPECT_F32(r, 0, 1, 2, 3, 4);
    /* int64 and bool. */
    r = loom_cat((loom_tensor *[]){I64(ctx, LOOM_SHAPE(1, 2), P53 + 1, -1), I64(ctx, LOOM_SHAPE(1, 2), 3, INT64_MIN),
                                   I64(ctx, LOOM_SHAPE(1, 2), 5, 6)},
                 3, 0);
    assert_shape(r, 3, 2);
    EXPECT_I64(r, P53 + 1, -1, 3, INT64_MIN, 5, 6);
    r = loom_cat((loom_tensor *[]){B8(ctx, LOOM_SHAPE(2, 1), 1, 0), B8(ctx, LOOM_SHAPE(2, 2), 0, 1, 1, 1)}, 2, 1);
    assert_shape(r, 2, 3);
    EXPECT_BOOL(r, 1, 0, 1, 0, 1, 1);
    /* A 3-D cat on the middle dim. */
    double u[24], w[12], want[36];
    for (int k = 0; k < 24; k++) u[k] = k;
    for (int k = 0; k < 12; k++) w[k] = 100 + k;
    for (int p = 0; p < 2; p++)
        for (int q = 0; q < 6; q++)
            for (int k = 0; k < 3; k++)
                want[(p * 6 + q) * 3 + k] = q < 4 ? u[(p * 4 + q) * 3 + k] : w[(p * 2 + (q - 4)) * 3 + k];
    r = loom_cat((loom_tensor *[]){from_doubles(ctx, u, LOOM_SHAPE(2, 4, 3)), from_doubles(ctx, w, LOOM_SHAPE(2, 2, 3))},
                 2, 1);
    assert_shape(r, 2, 6, 3);
    EXPECT_DOUBLES(r, want, 36, 0);
    /* Errors. */
    assert_error(loom_cat((loom_tensor *[]){a, I64(ctx, LOOM_SHAPE(1, 2), 1, 2)}, 2, 0), LOOM_ERR_DTYPE, "cat");
    assert_error(loom_cat((loom_tensor *[]){a, c}, 2, 0), LOOM_ERR_SHAPE, "cat");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_stack)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *a = F32(ctx, LOOM_SHAPE(3), 1, 2, 3);
    loom_tensor *b = F32(ctx, LOOM_SHAPE(3), 4, 5, 6);
    loom_tensor *r = loom_stack((loom_tensor *[]){a, b}, 2, 0);
    assert_shape(r, 2, 3);
    EXPECT_F32(r, 0, 1, 2, 3, 4, 5, 6);
    r = loom_stack((loom_tensor *[]){a, b}, 2, 1);
    assert_shape(r, 3, 2);
    EXPECT_F32(r, 0, 1, 4, 2, 5, 3, 6);
    r = loom_stack((loom_tensor *[]){a, b, a}, 3, -1);
    assert_shape(r, 3, 3);
    EXPECT_F32(r, 0, 1, 4, 1, 2, 5, 2, 3, 6, 3);
    loom_tensor *c = F32(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4);
    loom_tensor *d = F32(ctx, LOOM_SHAPE(2, 2), 5, 6, 7, 8);
    r = loom_stack((loom_tensor *[]){c, d}, 2, 0);
    assert_shape(r, 2, 2, 2);
    EXPECT_F32(r, 0, 1, 2, 3, 4, 5, 6, 7, 8);
    r = loom_stack((loom_tensor *[]){c, d}, 2, 1);
    assert_shape(r, 2, 2, 2);
    EXPECT_F32(r, 0, 1, 2, 5, 6, 3, 4, 7, 8);
    r = loom_stack((loom_tensor *[]){c, d}, 2, 2);
    assert_shape(r, 2, 2, 2);
    EXPECT_F32(r, 0, 1, 5, 2, 6, 3, 7, 4, 8);
    /* 0-dim inputs stack to 1-D. */
    r = loom_stack((loom_tensor *[]){loom_scalar(ctx, LOOM_INT64, 1), loom_scalar(ctx, LOOM_INT64, -2)}, 2, 0);
    assert_shape(r, 2);
    EXPECT_I64(r, 1, -2);
    r = loom_stack((loom_tensor *[]){B8(ctx, LOOM_SHAPE(2), 1, 0), B8(ctx, LOOM_SHAPE(2), 0, 0)}, 2, -1);
    assert_shape(r, 2, 2);
    EXPECT_BOOL(r, 1, 0, 0, 0);
    assert_error(loom_stack((loom_tensor *[]){a, c}, 2, 0), LOOM_ERR_SHAPE, "stack");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_index_select)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *t = F32(ctx, LOOM_SHAPE(3, 2), 1, 2, 3, 4, 5, 6);
    loom_tensor *r = loom_index_select(t, 0, I64(ctx, LOOM_SHAPE(4), 2, 0, 2, 1));
    assert_shape(r, 4, 2);
    EXPECT_F32(r, 0, 5, 6, 1, 2, 5, 6, 3, 4);
    r = loom_index_select(t, 1, I64(ctx, LOOM_SHAPE(3), 1, 1, 0));
    assert_shape(r, 3, 3);
    EXPECT_F32(r, 0, 2, 2, 1, 4, 4, 3, 6, 6, 5);
    r = loom_index_select(t, -1, I64(ctx, LOOM_SHAPE(1), 0));
    assert_shape(r, 3, 1);
    EXPECT_F32(r, 0, 1, 3, 5);
    /* An empty index. */
    r = loom_index_select(t, 0, loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(0)));
    assert_shape(r, 0, 2);
    assert_values_f32(r, NULL, 0, 0);
    r = loom_index_select(t, 1, loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(0)));
    assert_shape(r, 3, 0);
    /* int64 and bool sources; a 3-D source on its middle dim. */
    EXPECT_I64(loom_index_select(I64(ctx, LOOM_SHAPE(3), P53 + 1, 7, -9), 0, I64(ctx, LOOM_SHAPE(5), 2, 0, 0, 1, 2)),
               -9, P53 + 1, P53 + 1, 7, -9);
    EXPECT_BOOL(loom_index_select(B8(ctx, LOOM_SHAPE(2, 2), 1, 0, 0, 1), 1, I64(ctx, LOOM_SHAPE(2), 1, 1)), 0, 0, 1,
                1);
    double v[24], want[24];
    for (int k = 0; k < 24; k++) v[k] = k;
    const int64_t idx[4] = {3, 0, 3, 1};
    for (int p = 0; p < 2; p++)
        for (int q = 0; q < 4; q++)
            for (int k = 0; k < 3; k++) want[(p * 4 + q) * 3 + k] = v[(p * 4 + idx[q]) * 3 + k];
    r = loom_index_select(from_doubles(ctx, v, LOOM_SHAPE(2, 4, 3)), 1,
                          loom_tensor_from_array(ctx, LOOM_INT64, idx, LOOM_SHAPE(4)));
    assert_shape(r, 2, 4, 3);
    EXPECT_DOUBLES(r, want, 24, 0);
    /* A lazy index. */
    r = loom_index_select(t, 0, loom_add_scalar(I64(ctx, LOOM_SHAPE(2), 1, 0), 1));
    EXPECT_F32(r, 0, 5, 6, 3, 4);
    assert_error(loom_index_select(t, 0, F32(ctx, LOOM_SHAPE(1), 0)), LOOM_ERR_DTYPE, "index_select");
    /* A 0-dim source with one index gives a 0-dim result. */
    r = loom_index_select(loom_scalar(ctx, LOOM_FLOAT32, 5), 0, I64(ctx, LOOM_SHAPE(1), 0));
    assert_shape0(r);
    EXPECT_F32(r, 0, 5);
    /* Out-of-range and negative indices fail when computed. */
    r = loom_index_select(t, 0, I64(ctx, LOOM_SHAPE(3), 0, 3, 1));
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(loom_tensor_eval(r), LOOM_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "index_select"));
    r = loom_index_select(t, 1, I64(ctx, LOOM_SHAPE(2), 0, -1));
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(loom_tensor_eval(r), LOOM_ERR_RANGE);
    loom_ctx_free(ctx);
}
END_TEST

/* More inputs than fit inline in a node (cat) or on the stack (stack). */
START_TEST(test_cat_stack_many)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *ts[20];
    int64_t want[40];
    for (int k = 0; k < 20; k++) {
        ts[k] = I64(ctx, LOOM_SHAPE(2), 10 * k, 10 * k + 1);
        want[2 * k] = 10 * k;
        want[2 * k + 1] = 10 * k + 1;
    }
    loom_tensor *r = loom_cat(ts, 20, 0);
    assert_shape(r, 40);
    assert_values_i64(r, want, 40);
    r = loom_stack(ts, 20, 0);
    assert_shape(r, 20, 2);
    assert_values_i64(r, want, 40);
    r = loom_stack(ts, 20, 1);
    assert_shape(r, 2, 20);
    for (int k = 0; k < 20; k++) {
        want[k] = 10 * k;
        want[20 + k] = 10 * k + 1;
    }
    assert_values_i64(r, want, 40);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_gather)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *t = F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    loom_tensor *r = loom_gather(t, 1, I64(ctx, LOOM_SHAPE(2, 2), 2, 0, 1, 1));
    assert_shape(r, 2, 2);
    EXPECT_F32(r, 0, 3, 1, 5, 5);
    r = loom_gather(t, 0, I64(ctx, LOOM_SHAPE(2, 3), 1, 0, 1, 0, 0, 0));
    assert_shape(r, 2, 3);
    EXPECT_F32(r, 0, 4, 2, 6, 1, 2, 3);
    /* The index may be smaller than the source outside dim. */
    r = loom_gather(t, 1, I64(ctx, LOOM_SHAPE(1, 2), 0, 2));
    assert_shape(r, 1, 2);
    EXPECT_F32(r, 0, 1, 3);
    r = loom_gather(t, 0, I64(ctx, LOOM_SHAPE(1, 2), 1, 0));
    EXPECT_F32(r, 0, 4, 2);
    /* ... and larger along dim. */
    r = loom_gather(t, -1, I64(ctx, LOOM_SHAPE(2, 4), 0, 0, 2, 1, 2, 2, 2, 0));
    assert_shape(r, 2, 4);
    EXPECT_F32(r, 0, 1, 1, 3, 2, 6, 6, 6, 4);
    EXPECT_I64(loom_gather(I64(ctx, LOOM_SHAPE(2, 2), P53 + 1, 2, 3, 4), 1, I64(ctx, LOOM_SHAPE(2, 1), 0, 1)), P53 + 1,
               4);
    EXPECT_BOOL(loom_gather(B8(ctx, LOOM_SHAPE(3), 1, 0, 1), 0, I64(ctx, LOOM_SHAPE(4), 1, 1, 2, 0)), 0, 0, 1, 1);
    assert_error(loom_gather(t, 0, I64(ctx, LOOM_SHAPE(2), 0, 1)), LOOM_ERR_SHAPE, "gather");
    r = loom_gather(t, 1, I64(ctx, LOOM_SHAPE(2, 1), 0, 3));
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(loom_tensor_eval(r), LOOM_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "gather"));
    r = loom_gather(t, 0, I64(ctx, LOOM_SHAPE(1, 1), -1));
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(loom_tensor_eval(r), LOOM_ERR_RANGE);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_gather_3d)
{
    loom_ctx *ctx = cfg_ctx(_i);
    double v[60], want[60];
    for (int k = 0; k < 60; k++) v[k] = k * 1.5 - 7;
    loom_tensor *t = from_doubles(ctx, v, LOOM_SHAPE(3, 4, 5));
    const int64_t shape[3] = {3, 4, 5};
    /* Index shapes: smaller than t outside dim, any size along dim. */
    const int64_t ishape[3][3] = {{4, 3, 2}, {2, 6, 5}, {3, 2, 7}};
    for (int dim = 0; dim < 3; dim++) {
        int64_t n = numel_of(3, ishape[dim]), id[3];
        int64_t *index = malloc(sizeof(int64_t) * (size_t)n);
        ck_assert(index);
        for (int64_t i = 0; i < n; i++) {
            index[i] = (i * 7 + 3) % shape[dim];
            unravel(i, 3, ishape[dim], id);
            id[dim] = index[i];
            want[i] = v[(id[0] * 4 + id[1]) * 5 + id[2]];
        }
        loom_tensor *it = loom_tensor_from_array(ctx, LOOM_INT64, index, 3, ishape[dim]);
        loom_tensor *r = loom_gather(t, dim, it);
        ck_assert_ptr_nonnull(r);
        for (int d = 0; d < 3; d++) ck_assert_int_eq(loom_tensor_size(r, d), ishape[dim][d]);
        EXPECT_DOUBLES(r, want, n, 0);
        /* The same with a negative dim. */
        EXPECT_DOUBLES(loom_gather(t, dim - 3, it), want, n, 0);
        free(index);
    }
    loom_ctx_free(ctx);
}
END_TEST

/* ---- non-contiguous inputs --------------------------------------------- */

/* base: [3,4] with distinct values in a scrambled order, so that storage
 * order and logical order give different answers. */
static const double BASE12[12] = {0, 7, 2, 9, 4, 11, 6, 1, 8, 3, 10, 5};

START_TEST(test_nc_binary_unary)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *base = from_doubles(ctx, BASE12, LOOM_SHAPE(3, 4));
    double tv[12], sv[6], ev[12], want[12], other[12];
    /* Transposed: [4,3], strides [1,4]. */
    strided_values(BASE12, 2, (const int64_t[]){4, 3}, (const int64_t[]){1, 4}, 0, tv);
    /* Sliced with step 2 along dim 1: [3,2], strides [4,2]. */
    strided_values(BASE12, 2, (const int64_t[]){3, 2}, (const int64_t[]){4, 2}, 0, sv);
    /* Row 1 (a [1,4] view at offset 4) expanded to [3,4]: strides [0,1]. */
    strided_values(BASE12, 2, (const int64_t[]){3, 4}, (const int64_t[]){0, 1}, 4, ev);
    loom_tensor *tr = loom_transpose(base, 0, 1);
    loom_tensor *sl = loom_slice(base, 1, 0, 4, 2);
    loom_tensor *ex = loom_expand(loom_slice(base, 0, 1, 2, 1), LOOM_SHAPE(3, 4));
    ck_assert(!loom_tensor_is_contiguous(tr) && !loom_tensor_is_contiguous(sl) && !loom_tensor_is_contiguous(ex));
    for (int k = 0; k < 12; k++) other[k] = 0.5 * k - 1;
    loom_tensor *o43 = from_doubles(ctx, other, LOOM_SHAPE(4, 3));
    loom_tensor *o34 = from_doubles(ctx, other, LOOM_SHAPE(3, 4));

    for (int k = 0; k < 12; k++) want[k] = tv[k] + other[k];
    EXPECT_DOUBLES(loom_add(tr, o43), want, 12, 0);
    for (int k = 0; k < 12; k++) want[k] = other[k] - tv[k];
    EXPECT_DOUBLES(loom_sub(o43, tr), want, 12, 0);
    for (int k = 0; k < 6; k++) want[k] = sv[k] * other[k];
    EXPECT_DOUBLES(loom_mul(sl, from_doubles(ctx, other, LOOM_SHAPE(3, 2))), want, 6, 1e-7);
    for (int k = 0; k < 12; k++) want[k] = ev[k] - other[k];
    EXPECT_DOUBLES(loom_sub(ex, o34), want, 12, 0);
    for (int k = 0; k < 12; k++) want[k] = fmax(ev[k], BASE12[k]);
    EXPECT_DOUBLES(loom_maximum(ex, base), want, 12, 0);
    /* Both operands non-contiguous: transposed with the transpose of the
     * expanded view. */
    double etv[12];
    strided_values(BASE12, 2, (const int64_t[]){4, 3}, (const int64_t[]){1, 0}, 4, etv);
    for (int k = 0; k < 12; k++) want[k] = tv[k] * etv[k];
    EXPECT_DOUBLES(loom_mul(tr, loom_transpose(ex, 0, 1)), want, 12, 0);
    /* A sliced view with an offset and broadcasting: rows 1..2 + column. */
    double rv[8];
    strided_values(BASE12, 2, (const int64_t[]){2, 4}, (const int64_t[]){4, 1}, 4, rv);
    for (int k = 0; k < 8; k++) want[k] = rv[k] / (1 + k / 4);
    EXPECT_DOUBLES(loom_div(loom_slice(base, 0, 1, 3, 1), F32(ctx, LOOM_SHAPE(2, 1), 1, 2)), want, 8, 1e-7);
    /* Comparison and where on views. */
    uint8_t wb[12];
    for (int k = 0; k < 12; k++) wb[k] = tv[k] > other[k];
    assert_values_bool(loom_gt(tr, o43), wb, 12);
    for (int k = 0; k < 12; k++) want[k] = tv[k] > 5 ? tv[k] : etv[k];
    EXPECT_DOUBLES(loom_where(loom_gt(tr, loom_scalar(ctx, LOOM_FLOAT32, 5)), tr, loom_transpose(ex, 0, 1)), want, 12,
                   0);
    /* A 0-dim scalar expanded (stride 0 everywhere). */
    loom_tensor *s = loom_expand(loom_scalar(ctx, LOOM_FLOAT32, 2), LOOM_SHAPE(4, 3));
    for (int k = 0; k < 12; k++) want[k] = tv[k] * 2;
    EXPECT_DOUBLES(loom_mul(tr, s), want, 12, 0);
    /* int64 non-contiguous operands. */
    loom_tensor *ibase = loom_to_dtype(base, LOOM_INT64);
    int64_t iw[12];
    for (int k = 0; k < 12; k++) iw[k] = (int64_t)tv[k] * 3 - (int64_t)etv[k];
    assert_values_i64(loom_sub(loom_mul_scalar(loom_transpose(ibase, 0, 1), 3),
                               loom_transpose(loom_expand(loom_slice(ibase, 0, 1, 2, 1), LOOM_SHAPE(3, 4)), 0, 1)),
                      iw, 12);

    /* Unary ops on the three kinds of view. */
    for (int k = 0; k < 12; k++) want[k] = exp(tv[k] / 4);
    EXPECT_DOUBLES(loom_exp(loom_transpose(loom_div_scalar(base, 4), 0, 1)), want, 12, 1e-6);
    for (int k = 0; k < 12; k++) want[k] = exp(tv[k] - 6);
    EXPECT_DOUBLES(loom_exp(loom_sub_scalar(tr, 6)), want, 12, 1e-6);
    for (int k = 0; k < 6; k++) want[k] = -sv[k];
    EXPECT_DOUBLES(loom_neg(sl), want, 6, 0);
    for (int k = 0; k < 12; k++) want[k] = sqrt(ev[k]);
    EXPECT_DOUBLES(loom_sqrt(ex), want, 12, 1e-6);
    for (int k = 0; k < 12; k++) want[k] = tanh(tv[k] - 5);
    EXPECT_DOUBLES(loom_tanh(loom_sub_scalar(tr, 5)), want, 12, 1e-6);
    for (int k = 0; k < 12; k++) want[k] = fmin(fmax(tv[k], 2), 8);
    EXPECT_DOUBLES(loom_clamp(tr, 2, 8), want, 12, 0);
    for (int k = 0; k < 6; k++) want[k] = sv[k];
    EXPECT_I64_DOUBLES(loom_to_dtype(sl, LOOM_INT64), want, 6);
    for (int k = 0; k < 12; k++) want[k] = ev[k];
    EXPECT_DOUBLES(loom_abs(ex), want, 12, 0);
    for (int k = 0; k < 12; k++) want[k] = fabs(tv[k] - 5.5);
    EXPECT_DOUBLES(loom_abs(loom_sub_scalar(tr, 5.5)), want, 12, 0);
    /* relu directly on a transposed leaf. */
    loom_tensor *m = from_doubles(ctx, other, LOOM_SHAPE(3, 4));
    double mt[12];
    strided_values(other, 2, (const int64_t[]){4, 3}, (const int64_t[]){1, 4}, 0, mt);
    for (int k = 0; k < 12; k++) want[k] = fmax(mt[k], 0);
    EXPECT_DOUBLES(loom_relu(loom_transpose(m, 0, 1)), want, 12, 0);
    /* sigmoid of a step-3 slice of a 1-D tensor. */
    double w1[4];
    for (int k = 0; k < 4; k++) w1[k] = sigmoid_d(other[3 * k]);
    EXPECT_DOUBLES(loom_sigmoid(loom_slice(loom_reshape(m, LOOM_SHAPE(-1)), 0, 0, 12, 3)), w1, 4, 1e-6);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_nc_reduce)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *base = from_doubles(ctx, BASE12, LOOM_SHAPE(3, 4));
    double tv[12], sv[6], ev[20], want[20];
    const int64_t tshape[2] = {4, 3}, sshape[2] = {3, 2}, eshape[3] = {5, 1, 4};
    strided_values(BASE12, 2, tshape, (const int64_t[]){1, 4}, 0, tv);
    strided_values(BASE12, 2, sshape, (const int64_t[]){4, 2}, 1, sv);
    strided_values(BASE12, 3, eshape, (const int64_t[]){0, 0, 1}, 8, ev);
    loom_tensor *tr = loom_transpose(base, 0, 1);
    loom_tensor *sl = loom_slice(base, 1, 1, 4, 2); /* columns 1 and 3 */
    loom_tensor *ex = loom_expand(loom_slice(base, 0, 2, 3, 1), LOOM_SHAPE(5, 1, 4));
    static const int ops[6] = {R_SUM, R_MEAN, R_MAX, R_MIN, R_ARGMAX, R_ARGMIN};
    struct {
        loom_tensor *t;
        const double *v;
        int ndim;
        const int64_t *shape;
    } views[3] = {{tr, tv, 2, tshape}, {sl, sv, 2, sshape}, {ex, ev, 3, eshape}};
    for (int w = 0; w < 3; w++) {
        for (int d = 0; d < views[w].ndim; d++) {
            int64_t on = numel_of(views[w].ndim, views[w].shape) / views[w].shape[d];
            for (int o = 0; o < 6; o++) {
                ref_reduce(views[w].v, views[w].ndim, views[w].shape, 1u << d, ops[o], want);
                loom_tensor *r = NULL;
                switch (ops[o]) {
                case R_SUM: r = loom_sum(views[w].t, 1, &d, false); break;
                case R_MEAN: r = loom_mean(views[w].t, 1, &d, true); break;
                case R_MAX: r = loom_max(views[w].t, d, false); break;
                case R_MIN: r = loom_min(views[w].t, d, false); break;
                case R_ARGMAX: r = loom_argmax(views[w].t, d, false); break;
                default: r = loom_argmin(views[w].t, d, true); break;
                }
                if (ops[o] == R_ARGMAX || ops[o] == R_ARGMIN)
                    EXPECT_I64_DOUBLES(r, want, on);
                else
                    EXPECT_DOUBLES(r, want, on, 1e-6);
            }
        }
        /* Over everything: argmax is the index in the view's row-major order. */
        unsigned all = (1u << views[w].ndim) - 1;
        ref_reduce(views[w].v, views[w].ndim, views[w].shape, all, R_SUM, want);
        EXPECT_DOUBLES(loom_sum(views[w].t, 0, NULL, false), want, 1, 1e-6);
        ref_reduce(views[w].v, views[w].ndim, views[w].shape, all, R_MEAN, want);
        EXPECT_DOUBLES(loom_mean(views[w].t, 0, NULL, false), want, 1, 1e-6);
        ref_reduce(views[w].v, views[w].ndim, views[w].shape, all, R_MAX, want);
        EXPECT_DOUBLES(loom_max(views[w].t, LOOM_DIM_ALL, false), want, 1, 0);
        ref_reduce(views[w].v, views[w].ndim, views[w].shape, all, R_ARGMAX, want);
        EXPECT_I64_DOUBLES(loom_argmax(views[w].t, LOOM_DIM_ALL, false), want, 1);
        ref_reduce(views[w].v, views[w].ndim, views[w].shape, all, R_ARGMIN, want);
        EXPECT_I64_DOUBLES(loom_argmin(views[w].t, LOOM_DIM_ALL, false), want, 1);
    }
    /* Sum over two dims of the expanded view. */
    ref_reduce(ev, 3, eshape, 5u, R_SUM, want);
    EXPECT_DOUBLES(loom_sum(ex, LOOM_DIMS(0, 2), false), want, 1, 1e-6);
    /* The transposed argmax over all differs from the storage-order one. */
    EXPECT_I64(loom_argmax(tr, LOOM_DIM_ALL, false), 4);
    EXPECT_I64(loom_argmax(base, LOOM_DIM_ALL, false), 5);
    /* int64 and bool sums of views. */
    EXPECT_I64(loom_sum(loom_transpose(I64(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4), 0, 1), LOOM_DIMS(1), false), 4, 6);
    EXPECT_I64(loom_sum(loom_slice(B8(ctx, LOOM_SHAPE(5), 1, 0, 1, 1, 1), 0, 0, 5, 2), 0, NULL, false), 3);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_nc_join_index)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *base = from_doubles(ctx, BASE12, LOOM_SHAPE(3, 4));
    double tv[12], sv[6], ev[6], want[64];
    strided_values(BASE12, 2, (const int64_t[]){4, 3}, (const int64_t[]){1, 4}, 0, tv);
    strided_values(BASE12, 2, (const int64_t[]){3, 2}, (const int64_t[]){4, 2}, 0, sv);
    strided_values(BASE12, 2, (const int64_t[]){2, 3}, (const int64_t[]){0, 4}, 3, ev); /* column 3 expanded */
    loom_tensor *tr = loom_transpose(base, 0, 1);                                         /* [4,3] */
    loom_tensor *sl = loom_slice(base, 1, 0, 4, 2);                                       /* [3,2] */
    loom_tensor *ex = loom_expand(loom_transpose(loom_slice(base, 1, 3, 4, 1), 0, 1), LOOM_SHAPE(2, 3)); /* [2,3] */
    /* cat along dim 0: [4,3] + [2,3]; along dim 1: [3,2] + transposed [3,4]. */
    for (int k = 0; k < 12; k++) want[k] = tv[k];
    for (int k = 0; k < 6; k++) want[12 + k] = ev[k];
    loom_tensor *r = loom_cat((loom_tensor *[]){tr, ex}, 2, 0);
    assert_shape(r, 6, 3);
    EXPECT_DOUBLES(r, want, 18, 0);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 2; j++) want[i * 6 + j] = sv[i * 2 + j];
        for (int j = 0; j < 4; j++) want[i * 6 + 2 + j] = BASE12[i * 4 + j];
    }
    r = loom_cat((loom_tensor *[]){sl, loom_transpose(tr, 0, 1)}, 2, 1);
    assert_shape(r, 3, 6);
    EXPECT_DOUBLES(r, want, 18, 0);
    /* stack of views. */
    for (int k = 0; k < 6; k++) {
        want[2 * k] = sv[k];
        want[2 * k + 1] = tv[k];
    }
    r = loom_stack((loom_tensor *[]){sl, loom_reshape(loom_slice(tr, 0, 0, 2, 1), LOOM_SHAPE(3, 2))}, 2, 2);
    assert_shape(r, 3, 2, 2);
    EXPECT_DOUBLES(r, want, 12, 0);
    /* index_select on a transposed source, along both dims, with a
     * step-sliced index and an expanded index. */
    loom_tensor *idx_full = I64(ctx, LOOM_SHAPE(6), 2, 9, 0, 9, 1, 9);
    loom_tensor *idx = loom_slice(idx_full, 0, 0, 6, 2); /* 2, 0, 1 */
    r = loom_index_select(tr, 0, idx);
    assert_shape(r, 3, 3);
    const int sel[3] = {2, 0, 1};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) want[i * 3 + j] = tv[sel[i] * 3 + j];
    EXPECT_DOUBLES(r, want, 9, 0);
    r = loom_index_select(tr, 1, idx);
    assert_shape(r, 4, 3);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) want[i * 3 + j] = tv[i * 3 + sel[j]];
    EXPECT_DOUBLES(r, want, 12, 0);
    loom_tensor *idx_e = loom_expand(loom_scalar(ctx, LOOM_INT64, 1), LOOM_SHAPE(4));
    r = loom_index_select(sl, 1, idx_e);
    assert_shape(r, 3, 4);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) want[i * 4 + j] = sv[i * 2 + 1];
    EXPECT_DOUBLES(r, want, 12, 0);
    /* gather with a transposed source and a transposed index. */
    const int64_t iv[8] = {0, 2, 1, 1, 2, 0, 0, 1}; /* stored [2,4], used as [4,2] */
    loom_tensor *it = loom_transpose(loom_tensor_from_array(ctx, LOOM_INT64, iv, LOOM_SHAPE(2, 4)), 0, 1);
    r = loom_gather(tr, 1, it);
    assert_shape(r, 4, 2);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++) want[i * 2 + j] = tv[i * 3 + iv[j * 4 + i]];
    EXPECT_DOUBLES(r, want, 8, 0);
    /* gather along dim 0 of an expanded source: every row is the same. */
    r = loom_gather(ex, 0, I64(ctx, LOOM_SHAPE(2, 3), 1, 0, 1, 0, 1, 0));
    for (int k = 0; k < 6; k++) want[k] = ev[k % 3];
    EXPECT_DOUBLES(r, want, 6, 0);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- large tensors: threads 1 and 2 agree bit for bit -------------------- */

#define LR 600
#define LC 500
#define LN (LR * LC)

/* Runs the same computations in ctx and returns their outputs, copied out. */
#define NLARGE 26
static void large_outputs(loom_ctx *ctx, const float *xv, const float *yv, const int64_t *iv, void **out,
                          size_t *bytes)
{
    loom_tensor *x = loom_tensor_from_array(ctx, LOOM_FLOAT32, xv, LOOM_SHAPE(LR, LC));
    loom_tensor *y = loom_tensor_from_array(ctx, LOOM_FLOAT32, yv, LOOM_SHAPE(LR, LC));
    loom_tensor *ii = loom_tensor_from_array(ctx, LOOM_INT64, iv, LOOM_SHAPE(LR, LC));
    loom_tensor *idx = loom_tensor_from_array(ctx, LOOM_INT64, iv, LOOM_SHAPE(LR));
    loom_tensor *xt = loom_transpose(x, 0, 1);
    loom_tensor *yt = loom_reshape(loom_transpose(y, 0, 1), LOOM_SHAPE(LC, LR)); /* a copy */
    loom_tensor *g = loom_clamp(loom_mul_scalar(ii, 1), 0, LR - 1);              /* indices */
    loom_tensor *r[NLARGE] = {
        loom_add(x, y),
        loom_mul(xt, yt),
        loom_exp(x),
        loom_sigmoid(xt),
        loom_tanh(y),
        loom_div(x, loom_add_scalar(loom_abs(y), 0.5)),
        loom_sum(x, 0, NULL, false),
        loom_sum(x, LOOM_DIMS(0), false),
        loom_sum(x, LOOM_DIMS(1), false),
        loom_sum(xt, LOOM_DIMS(1), true),
        loom_mean(x, 0, NULL, false),
        loom_mean(xt, LOOM_DIMS(0), false),
        loom_max(x, 0, false),
        loom_argmax(x, 1, false),
        loom_argmin(xt, LOOM_DIM_ALL, false),
        loom_max(y, LOOM_DIM_ALL, false),
        loom_sum(ii, 0, NULL, false),
        loom_gt(x, y),
        loom_where(loom_gt(x, y), x, y),
        loom_cat((loom_tensor *[]){x, y, x}, 3, 1),
        loom_index_select(x, 1, loom_clamp(idx, 0, LC - 1)),
        loom_gather(x, 0, g),
        loom_to_dtype(loom_mul_scalar(x, 1000), LOOM_INT64),
        loom_sum(loom_expand(loom_slice(x, 0, 0, 1, 1), LOOM_SHAPE(LR, LC)), LOOM_DIMS(0), false),
        loom_pow(loom_abs(x), y),
        loom_mean(loom_slice(x, 1, 1, LC, 2), LOOM_DIMS(0, 1), false),
    };
    for (int k = 0; k < NLARGE; k++) {
        ck_assert_msg(r[k] != NULL, "large op %d: %s", k, loom_last_error());
        out[k] = copy_out(r[k]);
        bytes[k] = (size_t)loom_tensor_numel(r[k]) * (size_t)loom_dtype_size(loom_tensor_dtype(r[k]));
    }
}

START_TEST(test_large_identical)
{
    float *xv = malloc(sizeof(float) * LN), *yv = malloc(sizeof(float) * LN);
    int64_t *iv = malloc(sizeof(int64_t) * LN);
    ck_assert(xv && yv && iv);
    uint64_t s = 42;
    for (int64_t k = 0; k < LN; k++) {
        xv[k] = (float)lcg_next(&s, -1, 1);
        yv[k] = (float)lcg_next(&s, -2, 2);
        iv[k] = (int64_t)lcg_next(&s, -100, 1000);
    }
    void *out1[NLARGE], *out2[NLARGE], *out3[NLARGE];
    size_t b1[NLARGE], b2[NLARGE], b3[NLARGE];
    loom_ctx *c1 = cfg_ctx(0);
    large_outputs(c1, xv, yv, iv, out1, b1);
    loom_ctx_free(c1);
    loom_ctx *c2 = cfg_ctx(1);
    large_outputs(c2, xv, yv, iv, out2, b2);
    loom_ctx_free(c2);
    loom_ctx *c3 = cfg_ctx(2);
    large_outputs(c3, xv, yv, iv, out3, b3);
    loom_ctx_free(c3);
    for (int k = 0; k < NLARGE; k++) {
        ck_assert_uint_eq(b1[k], b2[k]);
        ck_assert_msg(memcmp(out1[k], out2[k], b1[k]) == 0, "large op %d differs between 1 and 2 threads", k);
    }

    /* The values are right, too (against double references). */
    double sx = 0, sax = 0, mx = -INFINITY;
    int64_t si = 0;
    for (int64_t k = 0; k < LN; k++) {
        sx += xv[k];
        sax += fabs(xv[k]);
        si += iv[k];
        if (yv[k] > mx) mx = yv[k];
    }
    const float *f = out1[6];
    ck_assert_msg(fabs(f[0] - sx) <= 1e-5 * sax + 1e-3, "sum %.9g, expected %.9g", f[0], sx);
    f = out1[10];
    ck_assert_msg(fabs(f[0] - sx / LN) <= 1e-5 * sax / LN + 1e-7, "mean %.9g, expected %.9g", f[0], sx / LN);
    ck_assert_int_eq(*(const int64_t *)out1[16], si);
    ck_assert_float_eq(*(const float *)out1[15], (float)mx);
    f = out1[0];
    for (int64_t k = 0; k < LN; k++) ck_assert_float_eq(f[k], xv[k] + yv[k]);
    f = out1[1];
    for (int64_t i = 0; i < LC; i++)
        for (int64_t j = 0; j < LR; j++) ck_assert_float_eq(f[i * LR + j], xv[j * LC + i] * yv[j * LC + i]);
    f = out1[7];
    for (int64_t j = 0; j < LC; j++) {
        double col = 0, acol = 0;
        for (int64_t i = 0; i < LR; i++) {
            col += xv[i * LC + j];
            acol += fabs(xv[i * LC + j]);
        }
        ck_assert_msg(fabs(f[j] - col) <= 1e-5 * acol + 1e-5, "column sum %lld: %.9g, expected %.9g", (long long)j,
                      f[j], col);
    }
    const int64_t *am = out1[13];
    for (int64_t i = 0; i < LR; i++) {
        int64_t best = 0;
        for (int64_t j = 1; j < LC; j++)
            if (xv[i * LC + j] > xv[i * LC + best]) best = j;
        ck_assert_int_eq(am[i], best);
    }
    const float *cat = out1[19];
    for (int64_t i = 0; i < LR; i += 37)
        for (int64_t j = 0; j < LC; j++) {
            ck_assert_float_eq(cat[i * 3 * LC + j], xv[i * LC + j]);
            ck_assert_float_eq(cat[i * 3 * LC + LC + j], yv[i * LC + j]);
            ck_assert_float_eq(cat[i * 3 * LC + 2 * LC + j], xv[i * LC + j]);
        }
    const float *ga = out1[21];
    for (int64_t k = 0; k < LN; k++) {
        int64_t g = iv[k] < 0 ? 0 : iv[k] > LR - 1 ? LR - 1 : iv[k];
        ck_assert_float_eq(ga[k], xv[g * LC + k % LC]);
    }
    const int64_t *ti = out1[22];
    for (int64_t k = 0; k < LN; k++) ck_assert_int_eq(ti[k], (int64_t)(xv[k] * 1000.0f));
    /* The ref backend agrees within tolerance (auto may pick another
     * backend, so no bitwise check here). */
    for (int k = 0; k < NLARGE; k++) ck_assert_uint_eq(b1[k], b3[k]);
    f = out3[6];
    ck_assert_msg(fabs(f[0] - sx) <= 1e-5 * sax + 1e-3, "ref sum %.9g, expected %.9g", f[0], sx);
    for (int k = 0; k < NLARGE; k++) {
        free(out1[k]);
        free(out2[k]);
        free(out3[k]);
    }
    free(xv);
    free(yv);
    free(iv);
}
END_TEST

Suite *loom_suite_ops(void)
{
    Suite *s = suite_create("ops");

    TCase *tc = test_tcase(s, "binary", 60);
    tcase_add_loop_test(tc, test_binary_f32, 0, NCFG);
    tcase_add_loop_test(tc, test_binary_i64, 0, NCFG);
    tcase_add_loop_test(tc, test_int64_exact, 0, NCFG);
    tcase_add_loop_test(tc, test_div_by_zero, 0, NCFG);
    tcase_add_loop_test(tc, test_promotion, 0, NCFG);
    tcase_add_loop_test(tc, test_bool_extremum, 0, NCFG);
    tcase_add_loop_test(tc, test_scalar_forms, 0, NCFG);
    tcase_add_loop_test(tc, test_compare, 0, NCFG);
    tcase_add_loop_test(tc, test_where, 0, NCFG);

    tc = test_tcase(s, "broadcast", 60);
    tcase_add_loop_test(tc, test_broadcast, 0, NCFG);
    tcase_add_loop_test(tc, test_broadcast_zero_size, 0, NCFG);
    tcase_add_loop_test(tc, test_broadcast_8d, 0, NCFG);

    tc = test_tcase(s, "unary", 60);
    tcase_add_loop_test(tc, test_unary_f32, 0, NCFG);
    tcase_add_loop_test(tc, test_unary_vs_libm, 0, NCFG);
    tcase_add_loop_test(tc, test_unary_int_bool, 0, NCFG);
    tcase_add_loop_test(tc, test_clamp, 0, NCFG);
    tcase_add_loop_test(tc, test_to_dtype, 0, NCFG);
    tcase_add_loop_test(tc, test_nan_inf, 0, NCFG);
    tcase_add_loop_test(tc, test_saturation, 0, NCFG);

    tc = test_tcase(s, "reduce", 60);
    tcase_add_loop_test(tc, test_sum_mean, 0, NCFG);
    tcase_add_loop_test(tc, test_sum_int_bool, 0, NCFG);
    tcase_add_loop_test(tc, test_reduce_empty, 0, NCFG);
    tcase_add_loop_test(tc, test_max_min_arg, 0, NCFG);
    tcase_add_loop_test(tc, test_arg_nan, 0, NCFG);
    tcase_add_loop_test(tc, test_max_int_bool, 0, NCFG);

    tc = test_tcase(s, "join_index", 60);
    tcase_add_loop_test(tc, test_cat, 0, NCFG);
    tcase_add_loop_test(tc, test_stack, 0, NCFG);
    tcase_add_loop_test(tc, test_cat_stack_many, 0, NCFG);
    tcase_add_loop_test(tc, test_index_select, 0, NCFG);
    tcase_add_loop_test(tc, test_gather, 0, NCFG);
    tcase_add_loop_test(tc, test_gather_3d, 0, NCFG);

    tc = test_tcase(s, "noncontiguous", 60);
    tcase_add_loop_test(tc, test_nc_binary_unary, 0, NCFG);
    tcase_add_loop_test(tc, test_nc_reduce, 0, NCFG);
    tcase_add_loop_test(tc, test_nc_join_index, 0, NCFG);

    tc = test_tcase(s, "large", 120);
    tcase_add_test(tc, test_large_identical);
    return s;
}
