/*
 * tests/runner.c - runs every suite; shared assertion helpers.
 *
 * Check forks each test (CK_FORK), so a crash fails one test, not the run.
 * Set CK_RUN_SUITE / CK_RUN_CASE to run one suite or case.
 */
#include <stdio.h>
#include <stdlib.h>

#include "tests/check_suites.h"

loom_ctx *test_ctx(int threads, const char *backend)
{
    loom_ctx_options o = {.num_threads = threads, .backend = backend, .seed = 1234};
    loom_ctx *ctx = loom_ctx_create(&o);
    ck_assert_msg(ctx != NULL, "ctx_create: %s", loom_last_error());
    return ctx;
}

static void check_meta(loom_tensor *t, loom_dtype dt, int64_t n, const char *file, int line)
{
    ck_assert_msg(t != NULL, "%s:%d: tensor is NULL: %s", file, line, loom_last_error());
    ck_assert_msg(loom_tensor_dtype(t) == dt, "%s:%d: dtype %s, expected %s", file, line,
                  loom_dtype_name(loom_tensor_dtype(t)), loom_dtype_name(dt));
    ck_assert_msg(loom_tensor_numel(t) == n, "%s:%d: numel %lld, expected %lld", file, line,
                  (long long)loom_tensor_numel(t), (long long)n);
}

void test_assert_f32(loom_tensor *t, const float *want, int64_t n, double tol, const char *file, int line)
{
    check_meta(t, LOOM_FLOAT32, n, file, line);
    float *got = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ck_assert(got);
    ck_assert_msg(loom_tensor_copy_to(t, got, sizeof(float) * (size_t)n) == LOOM_OK, "%s:%d: %s", file, line,
                  loom_last_error());
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        if (isnan(w)) {
            ck_assert_msg(isnan(g), "%s:%d: element %lld is %g, expected nan", file, line, (long long)i, g);
            continue;
        }
        if (isinf(w)) {
            ck_assert_msg(g == w, "%s:%d: element %lld is %g, expected %g", file, line, (long long)i, g, w);
            continue;
        }
        ck_assert_msg(fabs(g - w) <= tol * (1.0 + fabs(w)), "%s:%d: element %lld is %.9g, expected %.9g", file, line,
                      (long long)i, g, w);
    }
    free(got);
}

void test_assert_i64(loom_tensor *t, const int64_t *want, int64_t n, const char *file, int line)
{
    check_meta(t, LOOM_INT64, n, file, line);
    int64_t *got = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    ck_assert(got);
    ck_assert_msg(loom_tensor_copy_to(t, got, sizeof(int64_t) * (size_t)n) == LOOM_OK, "%s:%d: %s", file, line,
                  loom_last_error());
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i], "%s:%d: element %lld is %lld, expected %lld", file, line, (long long)i,
                      (long long)got[i], (long long)want[i]);
    free(got);
}

void test_assert_bool(loom_tensor *t, const uint8_t *want, int64_t n, const char *file, int line)
{
    check_meta(t, LOOM_BOOL, n, file, line);
    uint8_t *got = malloc((size_t)(n ? n : 1));
    ck_assert(got);
    ck_assert_msg(loom_tensor_copy_to(t, got, (size_t)n) == LOOM_OK, "%s:%d: %s", file, line, loom_last_error());
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i], "%s:%d: element %lld is %d, expected %d", file, line, (long long)i, got[i],
                      want[i]);
    free(got);
}

void test_assert_shape(loom_tensor *t, int ndim, const int64_t *shape, const char *file, int line)
{
    ck_assert_msg(t != NULL, "%s:%d: tensor is NULL: %s", file, line, loom_last_error());
    ck_assert_msg(loom_tensor_ndim(t) == ndim, "%s:%d: ndim %d, expected %d", file, line, loom_tensor_ndim(t), ndim);
    for (int d = 0; d < ndim; d++)
        ck_assert_msg(loom_tensor_size(t, d) == shape[d], "%s:%d: size of dim %d is %lld, expected %lld", file, line, d,
                      (long long)loom_tensor_size(t, d), (long long)shape[d]);
}

void test_assert_error(int was_null, loom_status status, const char *substr, const char *file, int line)
{
    ck_assert_msg(was_null, "%s:%d: expected a failure (NULL), got a tensor", file, line);
    ck_assert_msg(loom_last_status() == status, "%s:%d: status %s, expected %s (message: %s)", file, line,
                  loom_status_str(loom_last_status()), loom_status_str(status), loom_last_error());
    ck_assert_msg(strstr(loom_last_error(), substr) != NULL, "%s:%d: message \"%s\" lacks \"%s\"", file, line,
                  loom_last_error(), substr);
}

int main(void)
{
    SRunner *sr = srunner_create(loom_suite_tensor());
    srunner_add_suite(sr, loom_suite_runtime());
    srunner_add_suite(sr, loom_suite_scope());
    srunner_add_suite(sr, loom_suite_errors());
    srunner_add_suite(sr, loom_suite_random());
    srunner_add_suite(sr, loom_suite_print());
    srunner_add_suite(sr, loom_suite_ops());
    srunner_add_suite(sr, loom_suite_views());
    srunner_add_suite(sr, loom_suite_matmul());
    srunner_add_suite(sr, loom_suite_nn());
    srunner_add_suite(sr, loom_suite_optim());
    srunner_add_suite(sr, loom_suite_autograd());
    srunner_add_suite(sr, loom_suite_scatter());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
