/*
 * tests/check_scope.c - ownership: scopes, keep, detach, and leak-free loops.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "tests/check_suites.h"

START_TEST(test_scope_frees_temporaries)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *w = loom_rand(ctx, LOOM_SHAPE(16, 16));
    int64_t base = live(ctx), base_bytes = live_bytes(ctx);
    for (int step = 0; step < 100; step++) {
        ck_assert_int_eq(loom_scope_begin(ctx), LOOM_OK);
        ck_assert_int_eq(loom_scope_depth(ctx), 1);
        loom_tensor *x = loom_rand(ctx, LOOM_SHAPE(4, 16));
        loom_tensor *y = loom_sum(loom_relu(loom_add_scalar(loom_matmul(x, w), -0.5)), 0, NULL, false);
        ck_assert_int_eq(loom_tensor_eval(y), LOOM_OK);
        ck_assert_int_eq(loom_scope_end(ctx), LOOM_OK);
        ck_assert_int_eq(live(ctx), base);
        ck_assert_int_eq(live_bytes(ctx), base_bytes);
    }
    ck_assert_int_eq(loom_scope_depth(ctx), 0);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_keep_and_detach)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *acc = NULL;
    loom_scope_begin(ctx); /* outer */
    loom_scope_begin(ctx); /* inner */
    loom_tensor *a = F32(ctx, LOOM_SHAPE(2), 1, 2);
    loom_tensor *kept = loom_scope_keep(loom_mul_scalar(a, 3)); /* moves to outer */
    acc = loom_scope_detach(loom_add_scalar(a, 1));            /* owned by us */
    loom_scope_end(ctx);                                       /* frees a, not kept/acc */
    assert_values_f32(kept, ((float[]){3, 6}), 2, 0);
    assert_values_f32(acc, ((float[]){2, 3}), 2, 0);
    loom_scope_end(ctx); /* frees kept */
    ck_assert_int_eq(live(ctx), 1);
    assert_values_f32(acc, ((float[]){2, 3}), 2, 0);
    loom_tensor_free(acc);
    ck_assert_int_eq(live(ctx), 0);
    /* keep at the outermost scope moves to the root, freed by ctx_free. */
    loom_scope_begin(ctx);
    loom_tensor *r = loom_scope_keep(loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(3)));
    loom_scope_end(ctx);
    ck_assert_int_eq(live(ctx), 1);
    assert_values_f32(r, ((float[]){1, 1, 1}), 3, 0);
    ck_assert(loom_scope_keep(NULL) == NULL);
    ck_assert(loom_scope_detach(NULL) == NULL);
    loom_tensor_free(NULL);
    loom_ctx_free(ctx); /* frees r */
}
END_TEST

START_TEST(test_free_handle_of_pending_input)
{
    /* Freeing a handle that a pending node reads is safe: the node keeps
     * the data alive until it has run. */
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *a = F32(ctx, LOOM_SHAPE(3), 1, 2, 3);
    loom_tensor *b = loom_exp(a);
    loom_tensor *c = loom_add(b, a);
    loom_tensor_free(a);
    loom_tensor_free(b);
    ck_assert_int_eq(live(ctx), 3); /* c, and a and b kept by c's nodes */
    assert_values_f32(c, ((float[]){expf(1) + 1, expf(2) + 2, expf(3) + 3}), 3, 1e-6);
    ck_assert_int_eq(live(ctx), 1); /* the nodes ran and let go */
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_unbalanced_scope_end)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    ck_assert_int_eq(loom_scope_end(ctx), LOOM_ERR_STATE);
    ck_assert(strstr(loom_last_error(), "no scope is open") != NULL);
    ck_assert_int_eq(loom_scope_begin(NULL), LOOM_ERR_INVALID_ARG);
    /* ctx_free closes scopes left open. */
    loom_scope_begin(ctx);
    loom_scope_begin(ctx);
    loom_rand(ctx, LOOM_SHAPE(10));
    loom_ctx_free(ctx);
    loom_ctx_free(NULL);
}
END_TEST

START_TEST(test_memory_accounting)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_scope_begin(ctx);
    loom_tensor *a = loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(1000));
    ck_assert_int_eq(live_bytes(ctx), 4000);
    loom_tensor *v = loom_reshape(a, LOOM_SHAPE(10, 100)); /* a view: no new bytes */
    ck_assert_int_eq(live_bytes(ctx), 4000);
    loom_tensor *b = loom_add(v, v); /* pending: allocated when it runs */
    ck_assert_int_eq(live_bytes(ctx), 4000);
    ck_assert_int_eq(loom_tensor_eval(b), LOOM_OK);
    ck_assert_int_eq(live_bytes(ctx), 8000);
    loom_scope_end(ctx);
    loom_ctx_stats st;
    loom_ctx_get_stats(ctx, &st);
    ck_assert_int_eq(st.live_bytes, 0);
    ck_assert_int_eq(st.peak_bytes, 8000);
    loom_ctx_free(ctx);
}
END_TEST

/* The block cache through the public API: the automatic limit keeps a
 * step's blocks, loom_ctx_empty_cache gives them back, cache_bytes < 0 and
 * LOOM_CACHE_MB=0 keep nothing, and a bad LOOM_CACHE_MB is refused. */
/* Runs a "step" that makes a 4 MiB tensor in a scope, frees the context
 * and returns the bytes its cache held afterwards (-1: no context). */
static int64_t cached_after_step(const loom_ctx_options *o, bool empty)
{
    loom_ctx *ctx = loom_ctx_create(o);
    if (!ctx) return -1;
    loom_scope_begin(ctx);
    ck_assert_ptr_nonnull(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(1 << 20)));
    loom_scope_end(ctx);
    if (empty) loom_ctx_empty_cache(ctx);
    loom_ctx_stats st;
    loom_ctx_get_stats(ctx, &st);
    loom_ctx_free(ctx);
    return st.cached_bytes;
}

START_TEST(test_cache_options)
{
    loom_ctx_options o = {.num_threads = 1};
    ck_assert_int_ge(cached_after_step(&o, false), 4 << 20);
    ck_assert_int_eq(cached_after_step(&o, true), 0);
    o.cache_bytes = -1;
    ck_assert_int_eq(cached_after_step(&o, false), 0);
    o.cache_bytes = 0;
    setenv("LOOM_CACHE_MB", "0", 1);
    ck_assert_int_eq(cached_after_step(&o, false), 0);
    setenv("LOOM_CACHE_MB", "lots", 1);
    ck_assert_int_eq(cached_after_step(&o, false), -1);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "LOOM_CACHE_MB"));
    unsetenv("LOOM_CACHE_MB");
}
END_TEST

Suite *loom_suite_scope(void)
{
    Suite *s = suite_create("scope");
    TCase *tc = test_tcase(s, "core", 60);
    tcase_add_test(tc, test_scope_frees_temporaries);
    tcase_add_test(tc, test_keep_and_detach);
    tcase_add_test(tc, test_free_handle_of_pending_input);
    tcase_add_test(tc, test_unbalanced_scope_end);
    tcase_add_test(tc, test_cache_options);
    tcase_add_test(tc, test_memory_accounting);
    return s;
}
