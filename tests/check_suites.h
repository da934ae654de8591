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
Suite *loom_suite_exec(void);
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
Suite *loom_suite_cnn_kernels(void);
Suite *loom_suite_data(void);
Suite *loom_suite_onednn(void);
Suite *loom_suite_layout(void);
Suite *loom_suite_graph(void);
Suite *loom_suite_cnn(void);
Suite *loom_suite_rnn(void);
Suite *loom_suite_io(void);
Suite *loom_suite_pth(void);
Suite *loom_suite_models(void);
Suite *loom_suite_tools(void);

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

/* Shorthands for float/int64/bool tensors from literals. */
#define F32(ctx, shape, ...) loom_tensor_from_array(ctx, LOOM_FLOAT32, (const float[]){__VA_ARGS__}, shape)
#define I64(ctx, shape, ...) loom_tensor_from_array(ctx, LOOM_INT64, (const int64_t[]){__VA_ARGS__}, shape)
#define B8(ctx, shape, ...) loom_tensor_from_array(ctx, LOOM_BOOL, (const uint8_t[]){__VA_ARGS__}, shape)

/* The number of elements in a literal list of floats, int64s or bools. */
#define NF(...) ((int64_t)(sizeof((const float[]){__VA_ARGS__}) / sizeof(float)))
#define NI(...) ((int64_t)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define NB(...) ((int64_t)sizeof((const uint8_t[]){__VA_ARGS__}))

/* assert_values_* against a literal list: EXPECT_F32 within tol (0 = the
 * exact values), EXPECT_I64 and EXPECT_BOOL exactly. */
#define EXPECT_F32(t, tol, ...) assert_values_f32((t), ((const float[]){__VA_ARGS__}), NF(__VA_ARGS__), (tol))
#define EXPECT_I64(t, ...) assert_values_i64((t), ((const int64_t[]){__VA_ARGS__}), NI(__VA_ARGS__))
#define EXPECT_BOOL(t, ...) assert_values_bool((t), ((const uint8_t[]){__VA_ARGS__}), NB(__VA_ARGS__))

#define P53 INT64_C(9007199254740992) /* 2^53 */

/* Sets module m's parameter or buffer `name` to literal float values. */
#define SET(m, name, ...)                                                                          \
    do {                                                                                           \
        loom_tensor *p_ = loom_module_get((m), (name));                                            \
        ck_assert_msg(p_ != NULL, "%s", loom_last_error());                                        \
        int64_t sh_[LOOM_MAX_DIMS];                                                                \
        loom_tensor_shape(p_, sh_);                                                                \
        loom_tensor *v_ = loom_tensor_from_array(loom_module_ctx(m), LOOM_FLOAT32,                 \
                                                 (const float[]){__VA_ARGS__}, loom_tensor_ndim(p_), sh_); \
        ck_assert_int_eq(loom_tensor_assign(p_, v_), LOOM_OK);                                     \
        loom_tensor_free(v_);                                                                      \
    } while (0)

/* Checks that m's parameters (state == false) or whole state (true) are
 * exactly `want`, in order, and that each name looks up its tensor (at most
 * 32 names). */
void expect_names(loom_module *m, bool state, const char *const *want, int n);
#define EXPECT_NAMES(m, state, ...)                                                                \
    expect_names((m), (state), (const char *const[]){__VA_ARGS__},                                 \
                 (int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)))

/* The configurations of loop tests (tcase_add_loop_test(tc, fn, 0, NCFG)):
 * _i = 0: one thread; 1: two threads; 2: two threads with the portable C
 * backend ("ref") forced. cfg_ctx(_i) creates the context. */
#define NCFG 3
loom_ctx *cfg_ctx(int i);

/* A test case `name` of suite s, with a timeout in seconds (0: Check's
 * default); add the tests to the TCase it returns. */
TCase *test_tcase(Suite *s, const char *name, double timeout);

/* The number of elements of a shape. */
int64_t numel_of(int ndim, const int64_t *shape);

/* The row-major multi-index idx[0..ndim-1] of flat index i in shape. */
void unravel(int64_t i, int ndim, const int64_t *shape, int64_t *idx);

/* The context's live tensors / live bytes (loom_ctx_get_stats). */
int64_t live(loom_ctx *ctx);
int64_t live_bytes(loom_ctx *ctx);

/* A fresh directory $TMPDIR/loom-<tag>-XXXXXX (or under /tmp), its path in
 * dir[0..size-1]; tmp_remove deletes it and what the tests put in it (files
 * and empty or read-only directories). Both fail the test on error. */
void tmp_make(char *dir, size_t size, const char *tag);
void tmp_remove(const char *dir);

/* A malloc'd copy of x[0..n-1] as floats (caller frees). */
float *floats_from_doubles(const double *x, int64_t n);

/* A contiguous float32 tensor of shape from doubles (exact when the doubles
 * are floats); fails the test if creation fails. */
loom_tensor *from_doubles(loom_ctx *ctx, const double *x, int ndim, const int64_t *shape);

/* assert_values_f32 against doubles (rounded to float). */
#define EXPECT_DOUBLES(t, want, n, tol) test_expect_doubles((t), (want), (n), (tol), __FILE__, __LINE__)
void test_expect_doubles(loom_tensor *t, const double *want, int64_t n, double tol, const char *file, int line);

/* Computes t (asserting it is non-NULL) and copies its values into a
 * malloc'd buffer the caller frees: copy_out in t's dtype, copy_out_f32 as
 * float32 (for float32 tensors). */
void *copy_out(loom_tensor *t);
float *copy_out_f32(loom_tensor *t);

/* The value of a one-element tensor (loom_tensor_item), asserting success. */
double scalar_of(loom_tensor *t);

/* Makes t (asserted non-NULL) require grad, asserting success; returns t. */
loom_tensor *need_grad(loom_tensor *t);

/* A float32 leaf requiring grad holding v (shape as for from_array). */
loom_tensor *leaf(loom_ctx *ctx, const float *v, int ndim, const int64_t *shape);

/* An allocator for out-of-memory sweeps: counts allocations, fails the
 * fail_at-th (1-based; 0 = never) and counts the blocks not yet freed.
 * Use {failing_alloc, failing_free, &f} as the context's loom_allocator. */
typedef struct failing {
    long count;       /* allocations so far */
    long fail_at;     /* the allocation that fails (1-based); 0 = never */
    long outstanding; /* blocks allocated and not freed */
} failing;
void *failing_alloc(size_t size, void *user);
void failing_free(void *ptr, void *user);

/* For n = 1..total, runs program(&f, user) with f failing the n-th
 * allocation, and asserts that it returns LOOM_ERR_NOMEM with "out of
 * memory" in the message and leaks no block. */
void oom_sweep(loom_status (*program)(failing *f, void *user), void *user, long total);

#endif
