/*
 * tests/check_matmul.c - loom_matmul (torch.matmul semantics) against a naive
 * double-precision product computed here from the operands' values (copied
 * out with loom_tensor_copy_to), for every form: 1-D/2-D/batched, broadcast
 * batch dims, transposed/sliced/expanded operands, odd sizes, K = 0, errors.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check_suites.h"

/* Relative tolerance against the sum of |a_ik * b_kj| of each element. */
#define RTOL 1e-4

/* The reference product: torch.matmul's shape rules, computed in double.
 * a, b are contiguous row-major values of shapes ash (an dims) and bsh.
 * Fills oshape/ondim and returns malloc'd out and absum (sum |a||b|). */
typedef struct ref_result {
    int ndim;
    int64_t shape[LOOM_MAX_DIMS];
    int64_t n;
    double *out, *absum;
} ref_result;

static ref_result ref_matmul(const float *a, int an, const int64_t *ash, const float *b, int bn, const int64_t *bsh)
{
    ref_result r = {0};
    /* Promote 1-D operands. */
    int64_t as[LOOM_MAX_DIMS + 1], bs[LOOM_MAX_DIMS + 1];
    int am = an, bm = bn;
    memcpy(as, ash, sizeof(int64_t) * (size_t)an);
    memcpy(bs, bsh, sizeof(int64_t) * (size_t)bn);
    if (an == 1) {
        as[1] = as[0];
        as[0] = 1;
        am = 2;
    }
    if (bn == 1) {
        bs[1] = 1;
        bm = 2;
    }
    int64_t M = as[am - 2], K = as[am - 1], N = bs[bm - 1];
    ck_assert_int_eq(bs[bm - 2], K);
    int na = am - 2, nb = bm - 2, nbatch = na > nb ? na : nb;
    int64_t batch[LOOM_MAX_DIMS];
    for (int i = 0; i < nbatch; i++) {
        int64_t x = i < nbatch - na ? 1 : as[i - (nbatch - na)];
        int64_t y = i < nbatch - nb ? 1 : bs[i - (nbatch - nb)];
        ck_assert(x == y || x == 1 || y == 1);
        batch[i] = x == 1 ? y : x;
    }
    int64_t nbat = 1;
    for (int i = 0; i < nbatch; i++) nbat *= batch[i];
    r.n = nbat * M * N;
    r.out = calloc((size_t)(r.n ? r.n : 1), sizeof(double));
    r.absum = calloc((size_t)(r.n ? r.n : 1), sizeof(double));
    ck_assert(r.out && r.absum);
    int64_t idx[LOOM_MAX_DIMS];
    for (int64_t p = 0; p < nbat; p++) {
        unravel(p, nbatch, batch, idx);
        int64_t ao = 0, bo = 0; /* batch offsets in matrices */
        for (int i = 0; i < nbatch; i++) {
            if (i >= nbatch - na) {
                int64_t s = as[i - (nbatch - na)];
                ao = ao * s + (s == 1 ? 0 : idx[i]);
            }
            if (i >= nbatch - nb) {
                int64_t s = bs[i - (nbatch - nb)];
                bo = bo * s + (s == 1 ? 0 : idx[i]);
            }
        }
        const float *A = a + ao * M * K, *B = b + bo * K * N;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double acc = 0, abs_acc = 0;
                for (int64_t k = 0; k < K; k++) {
                    double t = (double)A[i * K + k] * (double)B[k * N + j];
                    acc += t;
                    abs_acc += fabs(t);
                }
                r.out[(p * M + i) * N + j] = acc;
                r.absum[(p * M + i) * N + j] = abs_acc;
            }
    }
    /* The result's shape: batch, then M unless a was 1-D, then N unless b was. */
    for (int i = 0; i < nbatch; i++) r.shape[r.ndim++] = batch[i];
    if (an != 1) r.shape[r.ndim++] = M;
    if (bn != 1) r.shape[r.ndim++] = N;
    return r;
}

static void ref_free(ref_result *r)
{
    free(r->out);
    free(r->absum);
}

/* Checks got (n floats) against the reference. */
static void check_against(const float *got, const ref_result *r, const char *what, int line)
{
    for (int64_t i = 0; i < r->n; i++) {
        double tol = RTOL * r->absum[i] + 1e-6;
        ck_assert_msg(fabs((double)got[i] - r->out[i]) <= tol,
                      "line %d (%s): element %lld is %.9g, expected %.9g (tolerance %.3g)", line, what, (long long)i,
                      (double)got[i], r->out[i], tol);
    }
}

/* Runs loom_matmul(a, b) and checks shape and values against the reference
 * computed from a's and b's values. */
static void check_matmul_at(loom_tensor *a, loom_tensor *b, int line)
{
    ck_assert_msg(a && b, "line %d: operand is NULL: %s", line, loom_last_error());
    int an = loom_tensor_ndim(a), bn = loom_tensor_ndim(b);
    int64_t ash[LOOM_MAX_DIMS], bsh[LOOM_MAX_DIMS];
    loom_tensor_shape(a, ash);
    loom_tensor_shape(b, bsh);
    float *av = copy_out_f32(a), *bv = copy_out_f32(b);
    ref_result r = ref_matmul(av, an, ash, bv, bn, bsh);
    loom_tensor *c = loom_matmul(a, b);
    ck_assert_msg(c != NULL, "line %d: matmul failed: %s", line, loom_last_error());
    ck_assert_msg(loom_tensor_dtype(c) == LOOM_FLOAT32, "line %d: dtype %s", line,
                  loom_dtype_name(loom_tensor_dtype(c)));
    test_assert_shape(c, r.ndim, r.shape, __FILE__, line);
    float *cv = copy_out_f32(c);
    check_against(cv, &r, "matmul", line);
    free(cv);
    ref_free(&r);
    free(av);
    free(bv);
}
#define CHECK_MATMUL(a, b) check_matmul_at((a), (b), __LINE__)

/* ---- literal cases ---------------------------------------------------- */

START_TEST(test_matmul_literals)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* 1-D . 1-D: a 0-dim dot product. */
    loom_tensor *r = loom_matmul(F32(ctx, LOOM_SHAPE(3), 1, 2, 3), F32(ctx, LOOM_SHAPE(3), 4, 5, 6));
    assert_shape0(r);
    EXPECT_F32(r, 1e-6, 32);
    double v = 0;
    ck_assert_int_eq(loom_tensor_item(r, &v), LOOM_OK);
    ck_assert_double_eq_tol(v, 32, 1e-5);
    loom_tensor *m = F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    /* 2-D x 1-D. */
    r = loom_matmul(m, F32(ctx, LOOM_SHAPE(3), 1, 0, -1));
    assert_shape(r, 2);
    EXPECT_F32(r, 1e-6, -2, -2);
    /* 1-D x 2-D. */
    r = loom_matmul(F32(ctx, LOOM_SHAPE(2), 1, 2), m);
    assert_shape(r, 3);
    EXPECT_F32(r, 1e-6, 9, 12, 15);
    /* 2-D x 2-D. */
    r = loom_matmul(m, F32(ctx, LOOM_SHAPE(3, 2), 7, 8, 9, 10, 11, 12));
    assert_shape(r, 2, 2);
    EXPECT_F32(r, 1e-6, 58, 64, 139, 154);
    /* [1,K] x [K,1] and [K,1] x [1,N] (outer product). */
    r = loom_matmul(F32(ctx, LOOM_SHAPE(1, 2), 2, 3), F32(ctx, LOOM_SHAPE(2, 1), 4, 5));
    assert_shape(r, 1, 1);
    EXPECT_F32(r, 1e-6, 23);
    r = loom_matmul(F32(ctx, LOOM_SHAPE(2, 1), 1, 2), F32(ctx, LOOM_SHAPE(1, 3), 1, 10, 100));
    assert_shape(r, 2, 3);
    EXPECT_F32(r, 1e-6, 1, 10, 100, 2, 20, 200);
    /* Batched with literals: [2,2,2] x [2,2,2]. */
    r = loom_matmul(F32(ctx, LOOM_SHAPE(2, 2, 2), 1, 2, 3, 4, 1, 0, 0, 1),
                    F32(ctx, LOOM_SHAPE(2, 2, 2), 1, 1, 0, 1, 5, 6, 7, 8));
    assert_shape(r, 2, 2, 2);
    EXPECT_F32(r, 1e-6, 1, 3, 3, 7, 5, 6, 7, 8);
    /* Transposed literal operand: m^T m. */
    r = loom_matmul(loom_transpose(m, 0, 1), m);
    assert_shape(r, 3, 3);
    EXPECT_F32(r, 1e-6, 17, 22, 27, 22, 29, 36, 27, 36, 45);
    /* NaN and inf propagate. */
    r = loom_matmul(F32(ctx, LOOM_SHAPE(2, 2), NAN, 1, 1, 1), F32(ctx, LOOM_SHAPE(2, 2), 1, 0, 0, 1));
    EXPECT_F32(r, 0, NAN, NAN, 1, 1);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- shapes: against the double reference ------------------------------ */

START_TEST(test_matmul_forms)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* 1-D . 1-D, 2-D x 1-D, 1-D x 2-D, 2-D x 2-D. */
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(17)), loom_rand(ctx, LOOM_SHAPE(17)));
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(5, 17)), loom_rand(ctx, LOOM_SHAPE(17)));
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(17)), loom_rand(ctx, LOOM_SHAPE(17, 6)));
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(5, 17)), loom_rand(ctx, LOOM_SHAPE(17, 6)));
    /* Batched 3-D x 3-D. */
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(3, 4, 5)), loom_rand(ctx, LOOM_SHAPE(3, 5, 2)));
    /* Broadcast batch: [2,1,M,K] x [3,K,N] -> [2,3,M,N]. */
    loom_tensor *r = loom_matmul(loom_rand(ctx, LOOM_SHAPE(2, 1, 4, 6)), loom_rand(ctx, LOOM_SHAPE(3, 6, 5)));
    assert_shape(r, 2, 3, 4, 5);
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(2, 1, 4, 6)), loom_rand(ctx, LOOM_SHAPE(3, 6, 5)));
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(1, 3, 4, 6)), loom_rand(ctx, LOOM_SHAPE(2, 1, 6, 5)));
    /* 3-D x 2-D and 2-D x 3-D. */
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(4, 3, 7)), loom_rand(ctx, LOOM_SHAPE(7, 2)));
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(3, 7)), loom_rand(ctx, LOOM_SHAPE(4, 7, 2)));
    /* 1-D with batched. */
    r = loom_matmul(loom_rand(ctx, LOOM_SHAPE(7)), loom_rand(ctx, LOOM_SHAPE(4, 7, 2)));
    assert_shape(r, 4, 2);
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(7)), loom_rand(ctx, LOOM_SHAPE(4, 7, 2)));
    r = loom_matmul(loom_rand(ctx, LOOM_SHAPE(4, 3, 7)), loom_rand(ctx, LOOM_SHAPE(7)));
    assert_shape(r, 4, 3);
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(4, 3, 7)), loom_rand(ctx, LOOM_SHAPE(7)));
    /* 4-D x 4-D, and negative values (randn). */
    CHECK_MATMUL(loom_randn(ctx, LOOM_SHAPE(2, 3, 5, 9)), loom_randn(ctx, LOOM_SHAPE(2, 3, 9, 4)));
    CHECK_MATMUL(loom_randn(ctx, LOOM_SHAPE(33, 65)), loom_randn(ctx, LOOM_SHAPE(65, 31)));
    /* Lazy operands. */
    loom_tensor *a = loom_rand(ctx, LOOM_SHAPE(6, 8)), *b = loom_rand(ctx, LOOM_SHAPE(6, 8));
    CHECK_MATMUL(loom_add(a, b), loom_transpose(loom_relu(loom_sub(a, b)), 0, 1));
    loom_ctx_free(ctx);
}
END_TEST

/* Transposed, sliced and expanded operands: no copy is made by the caller. */
START_TEST(test_matmul_strided)
{
    loom_ctx *ctx = cfg_ctx(_i);
    const int64_t M = 9, K = 11, N = 7;
    loom_tensor *at_base = loom_rand(ctx, LOOM_SHAPE(K, M));
    loom_tensor *bt_base = loom_rand(ctx, LOOM_SHAPE(N, K));
    loom_tensor *at = loom_transpose(at_base, 0, 1); /* [M,K], strides [1,M] */
    loom_tensor *bt = loom_transpose(bt_base, 0, 1); /* [K,N], strides [1,K] */
    ck_assert(loom_tensor_shares_storage(at, at_base));
    ck_assert(!loom_tensor_is_contiguous(at));
    loom_tensor *a = loom_rand(ctx, LOOM_SHAPE(M, K));
    loom_tensor *b = loom_rand(ctx, LOOM_SHAPE(K, N));
    CHECK_MATMUL(at, b);
    CHECK_MATMUL(a, bt);
    CHECK_MATMUL(at, bt);
    /* Batched transposes of the last two dims, and of batch with rows. */
    loom_tensor *a3 = loom_rand(ctx, LOOM_SHAPE(3, K, M));
    loom_tensor *b3 = loom_rand(ctx, LOOM_SHAPE(3, N, K));
    CHECK_MATMUL(loom_transpose(a3, -1, -2), loom_transpose(b3, 1, 2));
    CHECK_MATMUL(loom_transpose(loom_rand(ctx, LOOM_SHAPE(M, 3, K)), 0, 1), loom_rand(ctx, LOOM_SHAPE(3, K, N)));
    /* Sliced operands: every other row, a column window, a step-3 column
     * slice of b. */
    loom_tensor *big = loom_rand(ctx, LOOM_SHAPE(2 * M, K + 5));
    loom_tensor *as = loom_slice(loom_slice(big, 0, 0, 2 * M, 2), 1, 2, K + 2, 1); /* [M,K] */
    assert_shape(as, M, K);
    loom_tensor *bigb = loom_rand(ctx, LOOM_SHAPE(K, 3 * N));
    loom_tensor *bs = loom_slice(bigb, 1, 1, 3 * N, 3); /* [K,N] */
    assert_shape(bs, K, N);
    CHECK_MATMUL(as, b);
    CHECK_MATMUL(a, bs);
    CHECK_MATMUL(as, bs);
    CHECK_MATMUL(loom_transpose(bs, 0, 1), loom_transpose(as, 0, 1));
    /* Selected rows/columns as 1-D operands (strided vectors). */
    CHECK_MATMUL(loom_select(bigb, 1, 4), bs);
    CHECK_MATMUL(a, loom_select(bt, 1, 3));
    /* Expanded (stride 0) operands, batch and inner dims. */
    loom_tensor *b1 = loom_rand(ctx, LOOM_SHAPE(1, K, N));
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(4, M, K)), loom_expand(b1, LOOM_SHAPE(4, K, N)));
    CHECK_MATMUL(loom_expand(loom_rand(ctx, LOOM_SHAPE(M, 1)), LOOM_SHAPE(M, K)), b);
    CHECK_MATMUL(a, loom_expand(loom_rand(ctx, LOOM_SHAPE(1, N)), LOOM_SHAPE(K, N)));
    CHECK_MATMUL(loom_expand(loom_scalar(ctx, LOOM_FLOAT32, 0.5), LOOM_SHAPE(2, M, K)),
                 loom_expand(loom_transpose(loom_rand(ctx, LOOM_SHAPE(1, N, K)), 1, 2), LOOM_SHAPE(2, K, N)));
    loom_ctx_free(ctx);
}
END_TEST

/* ---- odd sizes, threads 1 and 2 agree ------------------------------------ */

static const int64_t ODD[][3] = {{1, 1, 1}, {7, 13, 5}, {67, 129, 35}, {255, 257, 129}, {1, 300, 1}, {130, 1, 70}};
#define NODD ((int)(sizeof ODD / sizeof ODD[0]))

START_TEST(test_matmul_odd_sizes)
{
    const int64_t M = ODD[_i][0], K = ODD[_i][1], N = ODD[_i][2];
    loom_ctx *c1 = cfg_ctx(0);
    loom_ctx *c2 = cfg_ctx(1);
    loom_ctx *c3 = cfg_ctx(2);
    float *av = copy_out_f32(loom_rand(c1, LOOM_SHAPE(M, K)));
    float *bv = copy_out_f32(loom_rand(c1, LOOM_SHAPE(K, N)));
    ref_result r = ref_matmul(av, 2, (const int64_t[]){M, K}, bv, 2, (const int64_t[]){K, N});
    float *out[3];
    loom_ctx *cs[3] = {c1, c2, c3};
    for (int c = 0; c < 3; c++) {
        loom_tensor *a = loom_tensor_from_array(cs[c], LOOM_FLOAT32, av, LOOM_SHAPE(M, K));
        loom_tensor *b = loom_tensor_from_array(cs[c], LOOM_FLOAT32, bv, LOOM_SHAPE(K, N));
        loom_tensor *p = loom_matmul(a, b);
        assert_shape(p, M, N);
        out[c] = copy_out_f32(p);
        check_against(out[c], &r, c == 0 ? "1 thread" : c == 1 ? "2 threads" : "ref backend", __LINE__);
    }
    /* 1 and 2 threads agree within tolerance. */
    for (int64_t i = 0; i < M * N; i++)
        ck_assert_msg(fabs((double)out[0][i] - out[1][i]) <= RTOL * r.absum[i] + 1e-6,
                      "element %lld: %.9g with 1 thread, %.9g with 2", (long long)i, (double)out[0][i],
                      (double)out[1][i]);
    /* The transposed-operand form of the same product. */
    loom_tensor *at = loom_transpose(loom_contiguous(loom_transpose(
                                         loom_tensor_from_array(c2, LOOM_FLOAT32, av, LOOM_SHAPE(M, K)), 0, 1)),
                                     0, 1);
    loom_tensor *bt = loom_transpose(loom_contiguous(loom_transpose(
                                         loom_tensor_from_array(c2, LOOM_FLOAT32, bv, LOOM_SHAPE(K, N)), 0, 1)),
                                     0, 1);
    ck_assert(M == 1 || K == 1 || !loom_tensor_is_contiguous(at));
    float *tv = copy_out_f32(loom_matmul(at, bt));
    check_against(tv, &r, "transposed operands, 2 threads", __LINE__);
    free(tv);
    /* Batched: the same matrices twice, the second scaled by 2. */
    loom_tensor *a2 = loom_tensor_from_array(c2, LOOM_FLOAT32, av, LOOM_SHAPE(1, M, K));
    loom_tensor *ab = loom_cat((loom_tensor *[]){a2, loom_mul_scalar(a2, 2)}, 2, 0);
    loom_tensor *pb = loom_matmul(ab, loom_tensor_from_array(c2, LOOM_FLOAT32, bv, LOOM_SHAPE(K, N)));
    assert_shape(pb, 2, M, N);
    float *bo = copy_out_f32(pb);
    check_against(bo, &r, "batch 0", __LINE__);
    for (int64_t i = 0; i < M * N; i++)
        ck_assert_msg(fabs((double)bo[M * N + i] - 2 * r.out[i]) <= 2 * (RTOL * r.absum[i] + 1e-6),
                      "batch 1 element %lld: %.9g, expected %.9g", (long long)i, (double)bo[M * N + i], 2 * r.out[i]);
    free(bo);
    for (int c = 0; c < 3; c++) free(out[c]);
    ref_free(&r);
    free(av);
    free(bv);
    loom_ctx_free(c1);
    loom_ctx_free(c2);
    loom_ctx_free(c3);
}
END_TEST

/* A large batched product with 2 threads against the reference. */
START_TEST(test_matmul_batched_large)
{
    loom_ctx *ctx = cfg_ctx(_i);
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(4, 67, 129)), loom_rand(ctx, LOOM_SHAPE(4, 129, 35)));
    CHECK_MATMUL(loom_rand(ctx, LOOM_SHAPE(3, 1, 33, 64)), loom_rand(ctx, LOOM_SHAPE(2, 64, 65)));
    CHECK_MATMUL(loom_transpose(loom_rand(ctx, LOOM_SHAPE(2, 150, 70)), 1, 2), loom_rand(ctx, LOOM_SHAPE(150, 90)));
    loom_ctx_free(ctx);
}
END_TEST

/* ---- empty dims ---------------------------------------------------------- */

START_TEST(test_matmul_empty)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* K = 0: a sum of nothing, zeros. */
    loom_tensor *r = loom_matmul(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 0)),
                                 loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0, 4)));
    assert_shape(r, 3, 4);
    const float zeros[12] = {0};
    assert_values_f32(r, zeros, 12, 0);
    r = loom_matmul(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0)), loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0)));
    assert_shape0(r);
    EXPECT_F32(r, 0, 0);
    r = loom_matmul(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 2, 0)), loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(0, 3)));
    assert_shape(r, 2, 2, 3);
    assert_values_f32(r, zeros, 12, 0);
    /* K = 0 after ops that leave garbage-free inputs: a lazy empty operand. */
    r = loom_matmul(loom_exp(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 0))),
                    loom_slice(loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 2)), 0, 3, 3, 1));
    assert_shape(r, 2, 2);
    assert_values_f32(r, zeros, 4, 0);
    /* M = 0 or N = 0: empty results. */
    r = loom_matmul(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0, 5)), loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(5, 4)));
    assert_shape(r, 0, 4);
    assert_values_f32(r, NULL, 0, 0);
    r = loom_matmul(loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 5)), loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(5, 0)));
    assert_shape(r, 3, 0);
    assert_values_f32(r, NULL, 0, 0);
    r = loom_matmul(loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(0, 3, 5)), loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(5, 2)));
    assert_shape(r, 0, 3, 2);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- errors ------------------------------------------------------------- */

START_TEST(test_matmul_errors)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *a = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 4));
    loom_tensor *b = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(5, 6));
    assert_error(loom_matmul(a, b), LOOM_ERR_SHAPE, "matmul: shapes [3, 4] and [5, 6] do not match");
    assert_error(loom_matmul(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(4)), loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(5))),
                 LOOM_ERR_SHAPE, "matmul");
    assert_error(loom_matmul(a, loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3))), LOOM_ERR_SHAPE, "matmul");
    /* Batch dims that do not broadcast. */
    assert_error(loom_matmul(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 3, 4)),
                             loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 4, 5))),
                 LOOM_ERR_SHAPE, "matmul");
    /* 0-dim operands. */
    assert_error(loom_matmul(loom_scalar(ctx, LOOM_FLOAT32, 1), a), LOOM_ERR_SHAPE, "matmul");
    /* int64 (and bool) inputs are refused. */
    loom_tensor *i = loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(4, 2));
    assert_error(loom_matmul(a, i), LOOM_ERR_DTYPE, "matmul");
    assert_error(loom_matmul(loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(3, 4)), loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(4, 2))),
                 LOOM_ERR_DTYPE, "matmul");
    assert_error(loom_matmul(loom_zeros(ctx, LOOM_BOOL, LOOM_SHAPE(3)), loom_zeros(ctx, LOOM_BOOL, LOOM_SHAPE(3))),
                 LOOM_ERR_DTYPE, "matmul");
    /* A NULL operand keeps the earlier error. */
    loom_clear_error();
    ck_assert_ptr_null(loom_matmul(loom_matmul(a, b), a));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "[3, 4] and [5, 6]"));
    loom_ctx_free(ctx);
}
END_TEST

Suite *loom_suite_matmul(void)
{
    Suite *s = suite_create("matmul");
    TCase *tc = test_tcase(s, "forms", 60);
    tcase_add_loop_test(tc, test_matmul_literals, 0, NCFG);
    tcase_add_loop_test(tc, test_matmul_forms, 0, NCFG);
    tcase_add_loop_test(tc, test_matmul_strided, 0, NCFG);
    tcase_add_loop_test(tc, test_matmul_empty, 0, NCFG);
    tcase_add_test(tc, test_matmul_errors);

    tc = test_tcase(s, "sizes", 120);
    tcase_add_loop_test(tc, test_matmul_odd_sizes, 0, NODD);
    tcase_add_loop_test(tc, test_matmul_batched_large, 0, NCFG);
    return s;
}
