/*
 * tests/runner.c - runs every suite; the helpers the suites share
 * (declared, with what each does, in tests/check_suites.h).
 *
 * Check forks each test (CK_FORK), so a crash fails one test, not the run.
 * Set CK_RUN_SUITE / CK_RUN_CASE to run one suite or case.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

loom_ctx *cfg_ctx(int i)
{
    static const struct {
        int threads;
        const char *backend;
    } cfgs[NCFG] = {{1, NULL}, {2, NULL}, {2, "ref"}};
    return test_ctx(cfgs[i].threads, cfgs[i].backend);
}

void expect_names(loom_module *m, bool state, const char *const *want, int n)
{
    const char *names[32];
    loom_tensor *ts[32];
    int got = state ? loom_module_state(m, ts, names, 32) : loom_module_parameters(m, ts, names, 32);
    ck_assert_int_eq(got, n);
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(names[i], want[i]);
        ck_assert_ptr_eq(ts[i], loom_module_get(m, names[i]));
    }
}

TCase *test_tcase(Suite *s, const char *name, double timeout)
{
    TCase *tc = tcase_create(name);
    if (timeout > 0) tcase_set_timeout(tc, timeout);
    suite_add_tcase(s, tc);
    return tc;
}

int64_t numel_of(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    return n;
}

void unravel(int64_t i, int ndim, const int64_t *shape, int64_t *idx)
{
    for (int d = ndim - 1; d >= 0; d--) {
        idx[d] = shape[d] ? i % shape[d] : 0;
        i = shape[d] ? i / shape[d] : 0;
    }
}

int64_t live(loom_ctx *ctx)
{
    loom_ctx_stats st;
    loom_ctx_get_stats(ctx, &st);
    return st.live_tensors;
}

int64_t live_bytes(loom_ctx *ctx)
{
    loom_ctx_stats st;
    loom_ctx_get_stats(ctx, &st);
    return st.live_bytes;
}

float *floats_from_doubles(const double *x, int64_t n)
{
    float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ck_assert(f);
    for (int64_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}

loom_tensor *from_doubles(loom_ctx *ctx, const double *x, int ndim, const int64_t *shape)
{
    float *f = floats_from_doubles(x, numel_of(ndim, shape));
    loom_tensor *t = loom_tensor_from_array(ctx, LOOM_FLOAT32, f, ndim, shape);
    free(f);
    ck_assert_msg(t != NULL, "%s", loom_last_error());
    return t;
}

void test_expect_doubles(loom_tensor *t, const double *want, int64_t n, double tol, const char *file, int line)
{
    float *w = floats_from_doubles(want, n);
    test_assert_f32(t, w, n, tol, file, line);
    free(w);
}

/* Copies t's numel elements of elem_size bytes out (see copy_out). */
static void *copy_out_elems(loom_tensor *t, size_t elem_size)
{
    ck_assert_msg(t != NULL, "%s", loom_last_error());
    size_t bytes = (size_t)loom_tensor_numel(t) * elem_size;
    void *p = malloc(bytes ? bytes : 1);
    ck_assert(p);
    ck_assert_msg(loom_tensor_copy_to(t, p, bytes) == LOOM_OK, "%s", loom_last_error());
    return p;
}

void *copy_out(loom_tensor *t)
{
    ck_assert_msg(t != NULL, "%s", loom_last_error());
    return copy_out_elems(t, (size_t)loom_dtype_size(loom_tensor_dtype(t)));
}

float *copy_out_f32(loom_tensor *t) { return copy_out_elems(t, sizeof(float)); }

double scalar_of(loom_tensor *t)
{
    double v = NAN;
    ck_assert_msg(t != NULL, "%s", loom_last_error());
    ck_assert_msg(loom_tensor_item(t, &v) == LOOM_OK, "%s", loom_last_error());
    return v;
}

loom_tensor *need_grad(loom_tensor *t)
{
    ck_assert_msg(t != NULL, "%s", loom_last_error());
    ck_assert_msg(loom_tensor_set_requires_grad(t, true) == LOOM_OK, "set_requires_grad: %s", loom_last_error());
    return t;
}

loom_tensor *leaf(loom_ctx *ctx, const float *v, int ndim, const int64_t *shape)
{
    return need_grad(loom_tensor_from_array(ctx, LOOM_FLOAT32, v, ndim, shape));
}

void *failing_alloc(size_t size, void *user)
{
    failing *f = user;
    if (++f->count == f->fail_at) return NULL;
    void *p = malloc(size);
    if (p) f->outstanding++;
    return p;
}

void failing_free(void *ptr, void *user)
{
    failing *f = user;
    f->outstanding--;
    free(ptr);
}

void oom_sweep(loom_status (*program)(failing *f, void *user), void *user, long total)
{
    for (long n = 1; n <= total; n++) {
        failing g = {0, n, 0};
        loom_clear_error();
        loom_status st = program(&g, user);
        ck_assert_msg(st == LOOM_ERR_NOMEM, "failing allocation %ld of %ld: status %s (%s)", n, total,
                      loom_status_str(st), loom_last_error());
        ck_assert_msg(strstr(loom_last_error(), "out of memory"), "allocation %ld: message \"%s\"", n,
                      loom_last_error());
        ck_assert_msg(g.outstanding == 0, "failing allocation %ld leaked %ld blocks", n, g.outstanding);
    }
}

int main(void)
{
    SRunner *sr = srunner_create(loom_suite_tensor());
    srunner_add_suite(sr, loom_suite_runtime());
    srunner_add_suite(sr, loom_suite_exec());
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
    srunner_add_suite(sr, loom_suite_cnn_kernels());
    srunner_add_suite(sr, loom_suite_data());
    srunner_add_suite(sr, loom_suite_onednn());
    srunner_add_suite(sr, loom_suite_layout());
    srunner_add_suite(sr, loom_suite_graph());
    srunner_add_suite(sr, loom_suite_cnn());
    srunner_add_suite(sr, loom_suite_rnn());
    srunner_add_suite(sr, loom_suite_io());
    srunner_add_suite(sr, loom_suite_pth());
    srunner_add_suite(sr, loom_suite_models());
    srunner_add_suite(sr, loom_suite_tools());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

void tmp_make(char *dir, size_t size, const char *tag)
{
    const char *base = getenv("TMPDIR");
    snprintf(dir, size, "%s/loom-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    ck_assert_msg(mkdtemp(dir) != NULL, "mkdtemp(%s) failed", dir);
}

void tmp_remove(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0) {
            chmod(p, 0755);
            rmdir(p);
        }
    }
    closedir(d);
    ck_assert_int_eq(rmdir(dir), 0);
}
