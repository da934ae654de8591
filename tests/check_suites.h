/*
 * tests/check_suites.h - one Check suite per module, run by tests/runner.c.
 */
#ifndef LOOM_TESTS_CHECK_SUITES_H
#define LOOM_TESTS_CHECK_SUITES_H

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include <loom/loom.h>

Suite *loom_suite_tensor(void);
Suite *loom_suite_runtime(void);
Suite *loom_suite_scope(void);
Suite *loom_suite_errors(void);
Suite *loom_suite_random(void);
Suite *loom_suite_print(void);
Suite *loom_suite_ops(void);
Suite *loom_suite_views(void);
Suite *loom_suite_matmul(void);
Suite *loom_suite_nn(void);
Suite *loom_suite_optim(void);
Suite *loom_suite_autograd(void);
Suite *loom_suite_scatter(void);

/* Shared helpers (tests/runner.c). */

/* A context with `threads` threads and the given backend (NULL = auto);
 * fails the test if creation fails. */
loom_ctx *test_ctx(int threads, const char *backend);

/* Asserts that t is non-NULL, computes it, and checks its float32 values
 * (contiguous row-major) against want[0..n-1] within tol (absolute +
 * relative), and its numel against n. NaNs must match NaNs. */
#define assert_values_f32(t, want, n, tol) test_assert_f32(t, want, n, tol, __FILE__, __LINE__)
void test_assert_f32(loom_tensor *t, const float *want, int64_t n, double tol, const char *file, int line);
#define assert_values_i64(t, want, n) test_assert_i64(t, want, n, __FILE__, __LINE__)
void test_assert_i64(loom_tensor *t, const int64_t *want, int64_t n, const char *file, int line);
#define assert_values_bool(t, want, n) test_assert_bool(t, want, n, __FILE__, __LINE__)
void test_assert_bool(loom_tensor *t, const uint8_t *want, int64_t n, const char *file, int line);

/* Asserts t's shape. */
#define assert_shape(t, ...) \
    test_assert_shape(t, LOOM__NARGS(__VA_ARGS__), (const int64_t[]){__VA_ARGS__}, __FILE__, __LINE__)
#define assert_shape0(t) test_assert_shape(t, 0, NULL, __FILE__, __LINE__)
void test_assert_shape(loom_tensor *t, int ndim, const int64_t *shape, const char *file, int line);

/* Asserts that `expr` returned NULL and the last error has `status` and
 * contains `substr`. */
#define assert_error(expr, status, substr) test_assert_error((expr) == NULL, status, substr, __FILE__, __LINE__)
void test_assert_error(int was_null, loom_status status, const char *substr, const char *file, int line);

/* Shorthands for float/int64 tensors from literals. */
#define F32(ctx, shape, ...) loom_tensor_from_array(ctx, LOOM_FLOAT32, (const float[]){__VA_ARGS__}, shape)
#define I64(ctx, shape, ...) loom_tensor_from_array(ctx, LOOM_INT64, (const int64_t[]){__VA_ARGS__}, shape)

#endif
