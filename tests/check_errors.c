/*
 * tests/check_errors.c - every error path gives a status and a message that
 * names the op and the shapes; nothing crashes; failed allocations are
 * reported, not fatal, and leak nothing (an OOM sweep).
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <stdlib.h>

#include "tests/check_suites.h"

START_TEST(test_shape_errors)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *a = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 4));
    loom_tensor *b = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(5, 6));
    assert_error(loom_matmul(a, b), LOOM_ERR_SHAPE, "matmul: shapes [3, 4] and [5, 6] do not match");
    assert_error(loom_add(a, b), LOOM_ERR_SHAPE, "add: shapes [3, 4] and [5, 6] cannot be broadcast");
    assert_error(loom_where(loom_gt(a, a), a, b), LOOM_ERR_SHAPE, "where: shapes");
    assert_error(loom_reshape(a, LOOM_SHAPE(5, -1)), LOOM_ERR_SHAPE, "reshape: shape [5, -1] is invalid for a tensor of shape [3, 4]");
    assert_error(loom_reshape(a, LOOM_SHAPE(-1, -1)), LOOM_ERR_SHAPE, "only one dim can be -1");
    assert_error(loom_view(loom_transpose(a, 0, 1), LOOM_SHAPE(12)), LOOM_ERR_SHAPE, "view: shape [12] is not compatible");
    assert_error(loom_expand(a, LOOM_SHAPE(3, 5)), LOOM_ERR_SHAPE, "expand: the size 5 at dim 1 must match the existing size 4");
    assert_error(loom_cat((loom_tensor *[]){a, b}, 2, 0), LOOM_ERR_SHAPE, "cat: tensor 1 has shape [5, 6]");
    assert_error(loom_stack((loom_tensor *[]){a, b}, 2, 0), LOOM_ERR_SHAPE, "stack: tensor 1 has shape [5, 6] but tensor 0 has shape [3, 4]");
    assert_error(loom_max(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0, 2)), 0, false), LOOM_ERR_SHAPE,
                 "max: cannot reduce over an empty dim");
    assert_error(loom_zeros(ctx, LOOM_FLOAT32, 9, (const int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}), LOOM_ERR_SHAPE,
                 "zeros: 9 dims requested; tensors have 0 to 8");
    double v;
    ck_assert_int_eq(loom_tensor_item(a, &v), LOOM_ERR_SHAPE);
    ck_assert(strstr(loom_last_error(), "item: a tensor with 12 elements (shape [3, 4])"));
    float small[2];
    ck_assert_int_eq(loom_tensor_copy_to(a, small, sizeof small), LOOM_ERR_INVALID_ARG);
    ck_assert(strstr(loom_last_error(), "copy_to: destination holds 8 bytes, the tensor needs 48"));
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_range_and_dtype_errors)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *a = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(3, 4));
    loom_tensor *i = I64(ctx, LOOM_SHAPE(2), 0, 1);
    assert_error(loom_sum(a, LOOM_DIMS(2), false), LOOM_ERR_RANGE, "sum: dim 2 is out of range for a tensor of 2 dims (expected -2 to 1)");
    assert_error(loom_transpose(a, 0, -3), LOOM_ERR_RANGE, "transpose: dim -3 is out of range");
    assert_error(loom_select(a, 1, 4), LOOM_ERR_RANGE, "select: index 4 is out of range for dim 1 of size 4");
    assert_error(loom_sum(a, LOOM_DIMS(1, -1), false), LOOM_ERR_INVALID_ARG, "sum: dim 1 appears more than once");
    assert_error(loom_permute(a, LOOM_DIMS(0, 0)), LOOM_ERR_SHAPE, "permute: dim 0 appears twice");
    assert_error(loom_matmul(i, i), LOOM_ERR_DTYPE, "matmul: expected float32 inputs, got int64 and int64");
    assert_error(loom_index_select(a, 0, a), LOOM_ERR_DTYPE, "index_select: index must be int64, got float32");
    assert_error(loom_gather(a, 0, a), LOOM_ERR_DTYPE, "gather: index must be int64");
    assert_error(loom_neg(loom_gt(a, a)), LOOM_ERR_DTYPE, "neg: bool tensors are not supported");
    assert_error(loom_cat((loom_tensor *[]){a, i}, 2, 0), LOOM_ERR_DTYPE, "cat: tensor 1 is int64 but tensor 0 is float32");
    assert_error(loom_clamp(a, 2, 1), LOOM_ERR_INVALID_ARG, "clamp: min 2 is greater than max 1");
    assert_error(loom_slice(a, 0, 0, 2, 0), LOOM_ERR_INVALID_ARG, "slice: step must be >= 1");
    assert_error(loom_arange(ctx, LOOM_FLOAT32, 0, 1, 0), LOOM_ERR_INVALID_ARG, "arange: impossible range");
    assert_error(loom_arange(ctx, LOOM_BOOL, 0, 1, 1), LOOM_ERR_DTYPE, "arange: dtype must be float32 or int64");
    assert_error(loom_full(ctx, (loom_dtype)17, LOOM_SHAPE(1), 0), LOOM_ERR_DTYPE, "full: invalid dtype 17");
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_errors_while_computing)
{
    /* An out-of-range index is only seen when the node runs: the status
     * reaches whoever forced the computation, and again on a second try. */
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *a = F32(ctx, LOOM_SHAPE(5), 1, 2, 3, 4, 5);
    loom_tensor *bad = loom_index_select(a, 0, I64(ctx, LOOM_SHAPE(2), 1, 7));
    ck_assert(bad != NULL);
    loom_tensor *later = loom_add_scalar(bad, 1);
    ck_assert_int_eq(loom_tensor_eval(later), LOOM_ERR_RANGE);
    ck_assert(strstr(loom_last_error(), "index_select: index 7 is out of range for dim 0 of size 5"));
    loom_clear_error();
    ck_assert_int_eq(loom_tensor_eval(bad), LOOM_ERR_RANGE);
    ck_assert(strstr(loom_last_error(), "index 7 is out of range"));
    ck_assert(loom_tensor_data(later) == NULL);
    ck_assert(loom_tensor_to_string(later) == NULL);
    /* The rest of the context still works. */
    assert_values_f32(loom_add_scalar(a, 1), ((float[]){2, 3, 4, 5, 6}), 5, 0);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_null_propagation)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *a = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 3));
    loom_tensor *b = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(4));
    /* The first failure is the one reported at the end of the chain. */
    loom_tensor *r = loom_relu(loom_mul_scalar(loom_add(a, b), 2));
    assert_error(r, LOOM_ERR_SHAPE, "add: shapes [2, 3] and [4] cannot be broadcast");
    ck_assert_int_eq(loom_tensor_eval(NULL), LOOM_ERR_SHAPE);
    loom_clear_error();
    assert_error(loom_exp(NULL), LOOM_ERR_INVALID_ARG, "exp: input 0 is NULL");
    ck_assert_int_eq(loom_tensor_ndim(NULL), -1);
    ck_assert_int_eq(loom_tensor_numel(NULL), -1);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_mixed_contexts_and_options)
{
    loom_ctx *c1 = test_ctx(1, NULL), *c2 = test_ctx(1, NULL);
    assert_error(loom_add(loom_ones(c1, LOOM_FLOAT32, LOOM_SHAPE(1)), loom_ones(c2, LOOM_FLOAT32, LOOM_SHAPE(1))),
                 LOOM_ERR_INVALID_ARG, "add: inputs 0 and 1 belong to different contexts");
    loom_ctx_free(c1);
    loom_ctx_free(c2);
    assert_error(loom_ctx_create(&(loom_ctx_options){.num_threads = -2}), LOOM_ERR_INVALID_ARG,
                 "ctx_create: num_threads is -2");
    assert_error(loom_ctx_create(&(loom_ctx_options){.backend = "cuda"}), LOOM_ERR_INVALID_ARG,
                 "ctx_create: unknown backend \"cuda\"");
    setenv("LOOM_NUM_THREADS", "lots", 1);
    assert_error(loom_ctx_create(NULL), LOOM_ERR_INVALID_ARG, "LOOM_NUM_THREADS=\"lots\"");
    setenv("LOOM_NUM_THREADS", "3", 1);
    loom_ctx *c3 = loom_ctx_create(NULL);
    ck_assert(c3);
    ck_assert_int_eq(loom_ctx_num_threads(c3), 3);
    loom_ctx_free(c3);
    unsetenv("LOOM_NUM_THREADS");
    setenv("LOOM_BACKEND", "ref", 1);
    c3 = loom_ctx_create(NULL);
    ck_assert_str_eq(loom_ctx_backend(c3), "ref");
    loom_ctx_free(c3);
    unsetenv("LOOM_BACKEND");
    ck_assert_str_eq(loom_status_str(LOOM_ERR_SHAPE), "shape mismatch");
    ck_assert_str_eq(loom_status_str((loom_status)99), "unknown status");
}
END_TEST

/* ---- OOM sweep: fail the n-th allocation, for every n ------------------ */

/* A small program touching creation, views, broadcasting, casts, matmul,
 * reductions and scopes, on one worker (with several, the order in which
 * nodes free and reuse cached blocks, and so the allocation count, varies).
 * Returns LOOM_OK and checks its result, or returns
 * the status of the first failure. (user: unused, for oom_sweep.) */
static loom_status small_program(failing *f, void *user)
{
    (void)user;
    loom_allocator al = {failing_alloc, failing_free, f};
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 1, .num_workers = 1, .allocator = &al});
    if (!ctx) return loom_last_status();
    loom_status st = loom_scope_begin(ctx);
    if (st == LOOM_OK) {
        loom_tensor *a = F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
        loom_tensor *i = I64(ctx, LOOM_SHAPE(3), 1, 0, 1);
        loom_tensor *m = loom_matmul(loom_transpose(a, 0, 1), a);              /* [3, 3] */
        loom_tensor *s = loom_add(loom_index_select(m, 0, i), loom_to_dtype(i, LOOM_FLOAT32));
        loom_tensor *r = loom_sum(loom_cat((loom_tensor *[]){s, m}, 2, 0), 0, NULL, false);
        double v = 0;
        st = loom_tensor_item(r, &v);
        if (st == LOOM_OK) ck_assert(v == 507.0);
        loom_scope_end(ctx);
    }
    loom_ctx_free(ctx);
    return st;
}

START_TEST(test_oom_sweep)
{
    failing f = {0, 0, 0};
    ck_assert_int_eq(small_program(&f, NULL), LOOM_OK);
    long total = f.count;
    ck_assert_int_eq(f.outstanding, 0);
    ck_assert(total > 10);
    oom_sweep(small_program, NULL, total);
}
END_TEST

Suite *loom_suite_errors(void)
{
    Suite *s = suite_create("errors");
    TCase *tc = test_tcase(s, "core", 60);
    tcase_add_test(tc, test_shape_errors);
    tcase_add_test(tc, test_range_and_dtype_errors);
    tcase_add_test(tc, test_errors_while_computing);
    tcase_add_test(tc, test_null_propagation);
    tcase_add_test(tc, test_mixed_contexts_and_options);
    tcase_add_test(tc, test_oom_sweep);
    return s;
}
