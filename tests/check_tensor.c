/*
 * tests/check_tensor.c - creation, properties and data access.
 */
#include "tests/check_suites.h"

START_TEST(test_from_array_and_properties)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *t = F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    assert_shape(t, 2, 3);
    ck_assert_int_eq(loom_tensor_numel(t), 6);
    ck_assert_int_eq(loom_tensor_stride(t, 0), 3);
    ck_assert_int_eq(loom_tensor_stride(t, -1), 1);
    ck_assert_int_eq(loom_tensor_size(t, -1), 3);
    ck_assert_int_eq(loom_tensor_size(t, 2), -1);
    ck_assert(loom_tensor_is_contiguous(t));
    ck_assert(loom_tensor_ctx(t) == ctx);
    assert_values_f32(t, ((float[]){1, 2, 3, 4, 5, 6}), 6, 0);
    /* The data is 64-byte aligned. */
    const void *p = loom_tensor_data(t);
    ck_assert_int_eq((uintptr_t)p % 64, 0);
    int64_t shape[LOOM_MAX_DIMS];
    loom_tensor_shape(t, shape);
    ck_assert_int_eq(shape[0], 2);
    ck_assert_int_eq(shape[1], 3);
    /* The source array is copied. */
    float src[2] = {7, 8};
    loom_tensor *c = loom_tensor_from_array(ctx, LOOM_FLOAT32, src, LOOM_SHAPE(2));
    src[0] = 100;
    assert_values_f32(c, ((float[]){7, 8}), 2, 0);
    /* Bool input bytes are normalised to 0/1. */
    loom_tensor *b = loom_tensor_from_array(ctx, LOOM_BOOL, (const uint8_t[]){0, 5, 1}, LOOM_SHAPE(3));
    assert_values_bool(b, ((uint8_t[]){0, 1, 1}), 3);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_fill_creators)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    assert_values_f32(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(2, 2)), ((float[]){0, 0, 0, 0}), 4, 0);
    assert_values_i64(loom_ones(ctx, LOOM_INT64, LOOM_SHAPE(3)), ((int64_t[]){1, 1, 1}), 3);
    assert_values_f32(loom_full(ctx, LOOM_FLOAT32, LOOM_SHAPE(1, 3), -2.5), ((float[]){-2.5, -2.5, -2.5}), 3, 0);
    assert_values_bool(loom_full(ctx, LOOM_BOOL, LOOM_SHAPE(2), 3.0), ((uint8_t[]){1, 1}), 2);
    loom_tensor *s = loom_scalar(ctx, LOOM_FLOAT32, 4.5);
    assert_shape0(s);
    double v;
    ck_assert_int_eq(loom_tensor_item(s, &v), LOOM_OK);
    ck_assert(v == 4.5);
    /* Zero-size tensors are valid. */
    loom_tensor *e = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0, 3));
    assert_shape(e, 0, 3);
    ck_assert_int_eq(loom_tensor_eval(e), LOOM_OK);
    ck_assert_int_eq(loom_tensor_copy_to(e, &v, 0), LOOM_OK);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_arange_linspace)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    assert_values_i64(loom_arange(ctx, LOOM_INT64, 0, 5, 1), ((int64_t[]){0, 1, 2, 3, 4}), 5);
    assert_values_f32(loom_arange(ctx, LOOM_FLOAT32, 1, 2, 0.25), ((float[]){1, 1.25, 1.5, 1.75}), 4, 0);
    assert_values_i64(loom_arange(ctx, LOOM_INT64, 5, 0, -2), ((int64_t[]){5, 3, 1}), 3);
    assert_shape(loom_arange(ctx, LOOM_FLOAT32, 3, 3, 1), 0);
    assert_values_f32(loom_linspace(ctx, 0, 1, 5), ((float[]){0, 0.25, 0.5, 0.75, 1}), 5, 0);
    assert_values_f32(loom_linspace(ctx, -1, 1, 2), ((float[]){-1, 1}), 2, 0);
    assert_values_f32(loom_linspace(ctx, 3, 9, 1), ((float[]){3}), 1, 0);
    assert_shape(loom_linspace(ctx, 0, 1, 0), 0);
    /* The seed's sine-wave data: the last point of 1000 over [0, 100] is exact. */
    loom_tensor *x = loom_linspace(ctx, 0, 100, 1000);
    double last;
    ck_assert_int_eq(loom_tensor_item(loom_select(x, 0, -1), &last), LOOM_OK);
    ck_assert(last == 100.0);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_item_and_copy)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    double v;
    ck_assert_int_eq(loom_tensor_item(I64(ctx, LOOM_SHAPE(1, 1), -7), &v), LOOM_OK);
    ck_assert(v == -7.0);
    ck_assert_int_eq(loom_tensor_item(loom_tensor_from_array(ctx, LOOM_BOOL, (uint8_t[]){1}, LOOM_SHAPE(1)), &v),
                     LOOM_OK);
    ck_assert(v == 1.0);
    /* copy_to of a lazy, non-contiguous result. */
    loom_tensor *a = F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    loom_tensor *t = loom_transpose(loom_add(a, a), 0, 1);
    float out[6];
    ck_assert_int_eq(loom_tensor_copy_to(t, out, sizeof out), LOOM_OK);
    const float want[6] = {2, 8, 4, 10, 6, 12};
    for (int i = 0; i < 6; i++) ck_assert(out[i] == want[i]);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_lazy_evaluation)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_ctx_stats st;
    loom_tensor *a = F32(ctx, LOOM_SHAPE(3), 1, 2, 3);
    loom_tensor *b = loom_mul(loom_add(a, a), a); /* two nodes recorded */
    loom_ctx_get_stats(ctx, &st);
    ck_assert_int_eq(st.nodes_run, 0); /* nothing computed yet */
    ck_assert_int_eq(loom_tensor_eval(b), LOOM_OK);
    loom_ctx_get_stats(ctx, &st);
    ck_assert_int_eq(st.nodes_run, 2);
    ck_assert_int_eq(loom_tensor_eval(b), LOOM_OK); /* already computed */
    loom_ctx_get_stats(ctx, &st);
    ck_assert_int_eq(st.nodes_run, 2);
    assert_values_f32(b, ((float[]){2, 8, 18}), 3, 0);
    /* A diamond: the shared input is computed once. */
    loom_tensor *s = loom_exp(a);
    loom_tensor *d = loom_add(loom_sin(s), loom_cos(s));
    ck_assert_int_eq(loom_tensor_eval(d), LOOM_OK);
    loom_ctx_get_stats(ctx, &st);
    ck_assert_int_eq(st.nodes_run, 2 + 4);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_deep_chain)
{
    /* A chain far deeper than any C stack would allow to recurse. */
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(4));
    loom_tensor *one = loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(4));
    loom_scope_begin(ctx);
    for (int i = 0; i < 200000; i++) {
        loom_tensor *y = loom_add(x, one);
        if (i) loom_tensor_free(x); /* keep only the newest handle */
        x = y;
    }
    assert_values_f32(x, ((float[]){200000, 200000, 200000, 200000}), 4, 0);
    loom_scope_end(ctx);
    /* And the same chain freed before it is ever evaluated. */
    loom_scope_begin(ctx);
    x = one;
    for (int i = 0; i < 200000; i++) {
        loom_tensor *y = loom_add(x, one);
        if (i) loom_tensor_free(x);
        x = y;
    }
    loom_scope_end(ctx);
    loom_ctx_stats st;
    loom_ctx_get_stats(ctx, &st);
    ck_assert_int_eq(st.live_tensors, 2);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_dtype_helpers)
{
    ck_assert_int_eq(loom_dtype_size(LOOM_FLOAT32), 4);
    ck_assert_int_eq(loom_dtype_size(LOOM_INT64), 8);
    ck_assert_int_eq(loom_dtype_size(LOOM_BOOL), 1);
    ck_assert_int_eq(loom_dtype_size(LOOM_DTYPE_COUNT), 0);
    ck_assert_str_eq(loom_dtype_name(LOOM_INT64), "int64");
    ck_assert_str_eq(loom_version(), "0.1.0");
}
END_TEST

START_TEST(test_seed_program_values)
{
    loom_ctx *ctx = test_ctx(0, NULL);
    loom_tensor *a = F32(ctx, LOOM_SHAPE(3), 1, 2, 3);
    loom_tensor *b = F32(ctx, LOOM_SHAPE(3), 4, 5, 6);
    char *s = loom_tensor_to_string(loom_add(a, b));
    ck_assert_str_eq(s, "tensor([5., 7., 9.])");
    free(s);
    s = loom_tensor_to_string(loom_mul(a, b));
    ck_assert_str_eq(s, "tensor([ 4., 10., 18.])");
    free(s);
    /* Printing a strided view prints its logical values. */
    s = loom_tensor_to_string(loom_transpose(F32(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4), 0, 1));
    ck_assert_str_eq(s, "tensor([[1., 3.],\n        [2., 4.]])");
    free(s);
    FILE *f = tmpfile();
    ck_assert(f);
    ck_assert_int_eq(loom_tensor_print(a, f), LOOM_OK);
    rewind(f);
    char line[64] = {0};
    ck_assert(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "tensor([1., 2., 3.])\n");
    fclose(f);
    loom_ctx_free(ctx);
}
END_TEST

Suite *loom_suite_tensor(void)
{
    Suite *s = suite_create("tensor");
    TCase *tc = test_tcase(s, "core", 60);
    tcase_add_test(tc, test_from_array_and_properties);
    tcase_add_test(tc, test_fill_creators);
    tcase_add_test(tc, test_arange_linspace);
    tcase_add_test(tc, test_item_and_copy);
    tcase_add_test(tc, test_lazy_evaluation);
    tcase_add_test(tc, test_deep_chain);
    tcase_add_test(tc, test_dtype_helpers);
    tcase_add_test(tc, test_seed_program_values);
    return s;
}
