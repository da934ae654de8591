/*
 * tests/check_random.c - the Philox generator and rand/randn/randint.
 */
#include "ops/philox.h"
#include "tests/check_suites.h"

START_TEST(test_philox_known_answer)
{
    /* Random123's known-answer vectors for Philox4x32-10. */
    loom__philox_block r = loom__philox(0, 0);
    ck_assert_uint_eq(r.v[0], 0x6627e8d5u);
    ck_assert_uint_eq(r.v[1], 0xe169c58du);
    ck_assert_uint_eq(r.v[2], 0xbc57ac4cu);
    ck_assert_uint_eq(r.v[3], 0x9b00dbd8u);
}
END_TEST

/* Copies n float32 values out of t. */
static void values(loom_tensor *t, float *out, int64_t n)
{
    ck_assert_msg(loom_tensor_copy_to(t, out, sizeof(float) * (size_t)n) == LOOM_OK, "%s", loom_last_error());
}

START_TEST(test_same_numbers_for_any_thread_count)
{
    enum { N = 300001 }; /* large enough for the parallel fill */
    static float one[N], two[N];
    loom_ctx *c1 = test_ctx(1, NULL), *c2 = test_ctx(2, NULL);
    loom_manual_seed(c1, 42);
    loom_manual_seed(c2, 42);
    values(loom_rand(c1, LOOM_SHAPE(N)), one, N);
    values(loom_rand(c2, LOOM_SHAPE(N)), two, N);
    ck_assert(memcmp(one, two, sizeof one) == 0);
    values(loom_randn(c1, LOOM_SHAPE(N)), one, N);
    values(loom_randn(c2, LOOM_SHAPE(N)), two, N);
    ck_assert(memcmp(one, two, sizeof one) == 0);
    loom_ctx_free(c1);
    loom_ctx_free(c2);
}
END_TEST

START_TEST(test_seed_and_state)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    float a[8], b[8], c[8];
    loom_manual_seed(ctx, 7);
    values(loom_rand(ctx, LOOM_SHAPE(8)), a, 8);
    loom_rng_state st;
    loom_rng_get_state(ctx, &st);
    ck_assert_uint_eq(st.seed, 7);
    ck_assert_uint_eq(st.offset, 2);
    values(loom_rand(ctx, LOOM_SHAPE(8)), b, 8);
    ck_assert(memcmp(a, b, sizeof a) != 0); /* the stream moved on */
    loom_rng_set_state(ctx, &st);
    values(loom_rand(ctx, LOOM_SHAPE(8)), c, 8);
    ck_assert(memcmp(b, c, sizeof b) == 0); /* restored state replays */
    loom_manual_seed(ctx, 7);
    values(loom_rand(ctx, LOOM_SHAPE(8)), c, 8);
    ck_assert(memcmp(a, c, sizeof a) == 0);
    loom_manual_seed(ctx, 8);
    values(loom_rand(ctx, LOOM_SHAPE(8)), c, 8);
    ck_assert(memcmp(a, c, sizeof a) != 0);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_distributions)
{
    enum { N = 200000 };
    static float v[N];
    static int64_t q[N];
    loom_ctx *ctx = test_ctx(0, NULL);
    values(loom_rand(ctx, LOOM_SHAPE(N)), v, N);
    double sum = 0, sq = 0;
    for (int i = 0; i < N; i++) {
        ck_assert(v[i] >= 0.0f && v[i] < 1.0f);
        sum += v[i];
        sq += (double)v[i] * v[i];
    }
    ck_assert(fabs(sum / N - 0.5) < 0.005);
    ck_assert(fabs(sq / N - sum / N * sum / N - 1.0 / 12) < 0.003);
    values(loom_randn(ctx, LOOM_SHAPE(N)), v, N);
    sum = sq = 0;
    int beyond3 = 0;
    for (int i = 0; i < N; i++) {
        ck_assert(isfinite(v[i]));
        sum += v[i];
        sq += (double)v[i] * v[i];
        beyond3 += fabsf(v[i]) > 3;
    }
    ck_assert(fabs(sum / N) < 0.01);
    ck_assert(fabs(sq / N - 1.0) < 0.02);
    ck_assert(beyond3 > 0.0015 * N && beyond3 < 0.0040 * N); /* 0.27% expected */
    loom_tensor *ri = loom_randint(ctx, -3, 4, LOOM_SHAPE(N));
    ck_assert_int_eq(loom_tensor_dtype(ri), LOOM_INT64);
    ck_assert_int_eq(loom_tensor_copy_to(ri, q, sizeof q), LOOM_OK);
    int count[7] = {0};
    for (int i = 0; i < N; i++) {
        ck_assert(q[i] >= -3 && q[i] < 4);
        count[q[i] + 3]++;
    }
    for (int k = 0; k < 7; k++) ck_assert(abs(count[k] - N / 7) < N / 100);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_random_errors)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    assert_error(loom_randint(ctx, 5, 5, LOOM_SHAPE(2)), LOOM_ERR_INVALID_ARG, "randint: high (5) must be greater");
    assert_error(loom_rand(ctx, LOOM_SHAPE(2, -1)), LOOM_ERR_SHAPE, "rand: negative size -1 at dim 1");
    assert_error(loom_rand(NULL, LOOM_SHAPE(2)), LOOM_ERR_INVALID_ARG, "rand: context is NULL");
    loom_ctx_free(ctx);
}
END_TEST

Suite *loom_suite_random(void)
{
    Suite *s = suite_create("random");
    TCase *tc = test_tcase(s, "core", 60);
    tcase_add_test(tc, test_philox_known_answer);
    tcase_add_test(tc, test_same_numbers_for_any_thread_count);
    tcase_add_test(tc, test_seed_and_state);
    tcase_add_test(tc, test_distributions);
    tcase_add_test(tc, test_random_errors);
    return s;
}
