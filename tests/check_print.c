/*
 * tests/check_print.c - loom__format_tensor against strings printed by real
 * PyTorch 1.13 (tests/fixtures/print_cases.h, made by gen_print.py).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/print.h"
#include "tests/check_suites.h"
#include "tests/fixtures/print_cases.h"

/* The elements of a formula case, as the header describes them. Returns a
 * malloc'd buffer (at least 1 byte, so an empty tensor still gets a non-NULL
 * pointer), or NULL if allocation fails. */
static void *formula_data(const print_case *c, int64_t numel)
{
    size_t size = c->dtype == LOOM_FLOAT32 ? sizeof(float)
                  : c->dtype == LOOM_INT64 ? sizeof(int64_t)
                                           : sizeof(uint8_t);
    void *buf = malloc(numel > 0 ? (size_t)numel * size : 1);
    if (!buf) return NULL;
    for (int64_t i = 0; i < numel; i++) {
        int64_t v = c->a + c->b * (c->m ? i % c->m : i);
        switch (c->dtype) {
        case LOOM_FLOAT32: ((float *)buf)[i] = (float)((double)v * c->scale); break;
        case LOOM_INT64: ((int64_t *)buf)[i] = v; break;
        default: ((uint8_t *)buf)[i] = v != 0; break;
        }
    }
    return buf;
}

/* One case per loop iteration, so a failure names the case. */
START_TEST(test_print_case)
{
    const print_case *c = &print_cases[_i];
    void *owned = NULL;
    const void *data = c->data;
    if (!data) {
        owned = formula_data(c, numel_of(c->ndim, c->shape));
        ck_assert_msg(owned != NULL, "%s: out of memory", c->name);
        data = owned;
    }
    char *s = loom__format_tensor(c->dtype, data, c->ndim, c->shape);
    free(owned);
    ck_assert_msg(s != NULL, "%s: loom__format_tensor returned NULL", c->name);
    if (s && c->expected && strcmp(s, c->expected) != 0) {
        /* Check's message shows escaped one-line strings and the loop index;
         * the case name and the strings as printed are easier to compare. */
        fputs("print case ", stderr);
        fputs(c->name, stderr);
        fputs(":\n--- got ---\n", stderr);
        fputs(s, stderr);
        fputs("\n--- expected ---\n", stderr);
        fputs(c->expected, stderr);
        fputs("\n", stderr);
    }
    ck_assert_str_eq(s, c->expected);
    free(s);
}
END_TEST

/* Invalid arguments give NULL rather than crashing. */
START_TEST(test_print_invalid)
{
    const float x[2] = {1.0f, 2.0f};
    const int64_t shape2[1] = {2}, neg[1] = {-1};
    ck_assert_ptr_null(loom__format_tensor(LOOM_DTYPE_COUNT, x, 1, shape2));
    ck_assert_ptr_null(loom__format_tensor(LOOM_FLOAT32, x, -1, shape2));
    ck_assert_ptr_null(loom__format_tensor(LOOM_FLOAT32, x, LOOM_MAX_DIMS + 1, shape2));
    ck_assert_ptr_null(loom__format_tensor(LOOM_FLOAT32, x, 1, NULL));
    ck_assert_ptr_null(loom__format_tensor(LOOM_FLOAT32, x, 1, neg));
    ck_assert_ptr_null(loom__format_tensor(LOOM_FLOAT32, NULL, 1, shape2));
}
END_TEST

/* An empty tensor needs no data pointer, and a scalar needs no shape. */
START_TEST(test_print_null_ok)
{
    const int64_t empty[2] = {0, 3};
    const float x = 2.5f;
    char *s = loom__format_tensor(LOOM_FLOAT32, NULL, 2, empty);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "tensor([], size=(0, 3))");
    free(s);
    s = loom__format_tensor(LOOM_FLOAT32, &x, 0, NULL);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "tensor(2.5000)");
    free(s);
}
END_TEST

Suite *loom_suite_print(void)
{
    Suite *s = suite_create("print");
    TCase *tc = test_tcase(s, "pytorch_repr", 0);
    tcase_add_loop_test(tc, test_print_case, 0, PRINT_CASE_COUNT);
    tcase_add_test(tc, test_print_invalid);
    tcase_add_test(tc, test_print_null_ok);
    return s;
}
