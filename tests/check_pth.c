/*
 * tests/check_pth.c - reading PyTorch's torch.save files (io/pth.c):
 * tensors, views sharing a storage, dtypes, nested dicts, parameters;
 * loading a state dict into a module (strict and not); refusals of
 * anything a state dict does not need (other globals, unknown opcodes,
 * other dtypes) and of damaged files (truncated archives, short storages,
 * corrupted pickles), each with a message naming the problem. The files are
 * tests/fixtures/pth/, made by tests/fixtures/gen_pth.py.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/check_suites.h"

#ifndef LOOM_TEST_FIXTURES_DIR
#define LOOM_TEST_FIXTURES_DIR "tests/fixtures"
#endif

static const char *fixture(const char *name)
{
    static char buf[2][1024];
    static int k;
    const char *dir = getenv("LOOM_TEST_FIXTURES_DIR");
    k ^= 1;
    snprintf(buf[k], sizeof buf[k], "%s/pth/%s", dir ? dir : LOOM_TEST_FIXTURES_DIR, name);
    return buf[k];
}

/* Loads path; returns the count and fills names/tensors. */
static int load(loom_ctx *ctx, const char *path, loom_tensor ***ts, char ***names)
{
    int n = -1;
    loom_status st = loom_load_pth(ctx, path, &n, ts, names);
    ck_assert_msg(st == LOOM_OK, "%s: %s", path, loom_last_error());
    return n;
}

#define EXPECT_PTH_ERR(expr, status, substr)                                                          \
    do {                                                                                              \
        loom_status st_ = (expr);                                                                     \
        ck_assert_msg(st_ == (status), "%s: status %s (%s)", #expr, loom_status_str(st_), loom_last_error()); \
        ck_assert_msg(strstr(loom_last_error(), (substr)) != NULL, "message \"%s\" lacks \"%s\"",      \
                      loom_last_error(), (substr));                                                   \
    } while (0)

START_TEST(test_pth_tensors)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor **ts;
    char **names;
    int n = load(ctx, fixture("state.pth"), &ts, &names);
    ck_assert_int_eq(n, 5);
    const char *order[] = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < 5; i++) ck_assert_str_eq(names[i], order[i]); /* the dict's order */
    float a[24];
    for (int i = 0; i < 24; i++) a[i] = (float)i;
    assert_shape(ts[0], 2, 3, 4);
    assert_values_f32(ts[0], a, 24, 0);
    /* b = a[1].t(): offset 12, strides (1, 4) into a's storage */
    assert_shape(ts[1], 4, 3);
    EXPECT_F32(ts[1], 0, 12, 16, 20, 13, 17, 21, 14, 18, 22, 15, 19, 23);
    ck_assert_int_eq(loom_tensor_dtype(ts[2]), LOOM_INT64);
    assert_shape0(ts[2]);
    EXPECT_I64(ts[2], 7);
    EXPECT_BOOL(ts[3], 1, 0, 1);
    assert_shape(ts[4], 0, 3);
    free(ts);
    loom_pth_free_names(names, n);

    /* Nested dicts give dotted names; non-tensors are skipped. */
    n = load(ctx, fixture("nested.pth"), &ts, &names);
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(names[0], "model.w");
    EXPECT_F32(ts[0], 0, 0, 1, 2, 3, 4, 5);
    free(ts);
    loom_pth_free_names(names, n);
    /* An nn.Parameter (torch._utils._rebuild_parameter). */
    n = load(ctx, fixture("param.pth"), &ts, &names);
    ck_assert_int_eq(n, 1);
    EXPECT_F32(ts[0], 0, 0, 1, 2, 3);
    free(ts);
    loom_pth_free_names(names, n);
    /* names_out may be NULL. */
    ck_assert_int_eq(loom_load_pth(ctx, fixture("param.pth"), &n, &ts, NULL), LOOM_OK);
    free(ts);
    loom_ctx_free(ctx);
}
END_TEST

/* The Loom twin of gen_pth.py's net: Sequential(Conv2d(1, 2, 3),
 * BatchNorm2d(2), Flatten(), Linear(8, 3)). */
static loom_module *net(loom_ctx *ctx, int64_t out)
{
    loom_module *m = loom_sequential(ctx, 4, (loom_module *[]){
        loom_conv2d_module(ctx, 1, 2, 3, 3, NULL, true), loom_batch_norm2d_module(ctx, 2, 1e-5, 0.1, true),
        loom_flatten_module(ctx, 1, -1), loom_linear(ctx, 8, out, true)});
    ck_assert_msg(m != NULL, "%s", loom_last_error());
    return m;
}

START_TEST(test_pth_module_load)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *m = net(ctx, 3);
    /* loom_module_load tells a torch.save file from safetensors. */
    ck_assert_msg(loom_module_load(m, fixture("net.pth"), true) == LOOM_OK, "%s", loom_last_error());
    loom_tensor *st[16];
    const char *names[16];
    int n = loom_module_state(m, st, names, 16);
    ck_assert_int_eq(n, 9);
    for (int k = 0; k < n; k++) {
        if (!strcmp(names[k], "1.num_batches_tracked")) {
            EXPECT_I64(st[k], 5);
            continue;
        }
        int64_t numel = loom_tensor_numel(st[k]);
        float *want = malloc(sizeof(float) * (size_t)numel);
        for (int64_t i = 0; i < numel; i++) want[i] = 0.01f * (float)i + (float)k;
        assert_values_f32(st[k], want, numel, 1e-6);
        free(want);
    }
    loom_module_free(m);

    /* A module whose fc has another shape: refused, naming it, and nothing
     * is written. */
    loom_module *other = net(ctx, 4);
    float before[4];
    ck_assert_int_eq(loom_tensor_copy_to(loom_module_get(other, "3.bias"), before, sizeof before), LOOM_OK);
    EXPECT_PTH_ERR(loom_module_load(other, fixture("net.pth"), false), LOOM_ERR_SHAPE,
                   "3.weight has shape [3, 8] in the file but [4, 8] in the module");
    assert_values_f32(loom_module_get(other, "3.bias"), before, 4, 0);
    loom_module_free(other);

    /* Strict: names missing and unexpected are listed; not strict loads
     * the common ones. */
    loom_module *lin = loom_sequential(ctx, 1, (loom_module *[]){loom_conv2d_module(ctx, 1, 2, 3, 3, NULL, true)});
    EXPECT_PTH_ERR(loom_module_load(lin, fixture("net.pth"), true), LOOM_ERR_FORMAT,
                   "not in the module: 1.weight, 1.bias, 1.running_mean");
    ck_assert_int_eq(loom_module_load(lin, fixture("net.pth"), false), LOOM_OK);
    EXPECT_F32(loom_module_get(lin, "0.bias"), 1e-6, 1.0f, 1.01f);
    loom_module_free(lin);
    loom_ctx_free(ctx);
}
END_TEST

/* A copy of fixture `name` in dir, with `len` bytes (0: all) and the first
 * occurrence of `from` replaced by `to` (same length; NULL: none). */
static const char *damaged(const char *dir, const char *name, size_t len, const char *from, const char *to)
{
    static char out[1024];
    FILE *f = fopen(fixture(name), "rb");
    ck_assert(f);
    static unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (from) {
        size_t fl = strlen(from);
        ck_assert_uint_eq(fl, strlen(to));
        unsigned char *hit = NULL;
        for (size_t i = 0; i + fl <= n && !hit; i++)
            if (!memcmp(buf + i, from, fl)) hit = buf + i;
        ck_assert_msg(hit != NULL, "%s not in %s", from, name);
        memcpy(hit, to, fl);
    }
    snprintf(out, sizeof out, "%s/damaged.pth", dir);
    f = fopen(out, "wb");
    ck_assert(f);
    ck_assert(fwrite(buf, 1, len ? len : n, f) == (len ? len : n));
    fclose(f);
    return out;
}

START_TEST(test_pth_refusals)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    int n;
    loom_tensor **ts;
    char dir[512];
    tmp_make(dir, sizeof dir, "pth");
    EXPECT_PTH_ERR(loom_load_pth(ctx, fixture("module.pth"), &n, &ts, NULL), LOOM_ERR_FORMAT,
                   "names the global 'torch.nn.modules.linear.Linear', which a state dict does not need");
    EXPECT_PTH_ERR(loom_load_pth(ctx, fixture("f64.pth"), &n, &ts, NULL), LOOM_ERR_DTYPE,
                   "x is stored as torch.DoubleStorage, a dtype Loom lacks");
    EXPECT_PTH_ERR(loom_load_pth(ctx, fixture("short.pth"), &n, &ts, NULL), LOOM_ERR_FORMAT,
                   "holds 40 bytes, but its tensor needs 96");
    EXPECT_PTH_ERR(loom_load_pth(ctx, fixture("missing.pth"), &n, &ts, NULL), LOOM_ERR_IO, "missing.pth");
    /* A pickle that names another global (same length, so the archive
     * stays valid): never imported, refused by name. */
    EXPECT_PTH_ERR(loom_load_pth(ctx, damaged(dir, "state.pth", 0, "collections\nOrderedDict", "posix\nsystem\n\n\n\n\n\n\n\n\n\n\n"),
                                 &n, &ts, NULL),
                   LOOM_ERR_FORMAT, "'posix.system'");
    /* An opcode a state dict never uses (here where PROTO's version is). */
    EXPECT_PTH_ERR(loom_load_pth(ctx, damaged(dir, "state.pth", 0, "\x80\x02\x63", "\x80\x02\x69"), &n, &ts, NULL),
                   LOOM_ERR_FORMAT, "opcode 0x69");
    /* A truncated archive, at every tenth of its length. */
    FILE *f = fopen(fixture("state.pth"), "rb");
    ck_assert(f);
    fseek(f, 0, SEEK_END);
    long total = ftell(f);
    fclose(f);
    for (int k = 1; k < 10; k++) {
        loom_status st = loom_load_pth(ctx, damaged(dir, "state.pth", (size_t)(total * k / 10), NULL, NULL), &n, &ts,
                                       NULL);
        ck_assert_msg(st == LOOM_ERR_FORMAT, "cut at %d/10: %s", k, loom_last_error());
        ck_assert(strstr(loom_last_error(), "damaged.pth") != NULL);
    }
    /* Not a zip at all. */
    EXPECT_PTH_ERR(loom_load_pth(ctx, damaged(dir, "state.pth", 0, "PK\x03\x04", "XK\x03\x04"), &n, &ts, NULL),
                   LOOM_ERR_FORMAT, "not a readable PyTorch zip checkpoint");
    /* Failed loads create nothing. */
    ck_assert_int_eq(live(ctx), 0);
    tmp_remove(dir);
    loom_ctx_free(ctx);
}
END_TEST

#ifndef LOOM_HAVE_LIBZIP
/* Built without libzip: loading says so, and names the file. */
START_TEST(test_pth_without_libzip)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    int n;
    loom_tensor **ts;
    EXPECT_PTH_ERR(loom_load_pth(ctx, fixture("state.pth"), &n, &ts, NULL), LOOM_ERR_IO, "built without libzip");
    loom_ctx_free(ctx);
}
END_TEST
#endif

Suite *loom_suite_pth(void)
{
    Suite *s = suite_create("pth");
    TCase *tc = test_tcase(s, "pth", 30);
#ifdef LOOM_HAVE_LIBZIP
    tcase_add_test(tc, test_pth_tensors);
    tcase_add_test(tc, test_pth_module_load);
    tcase_add_test(tc, test_pth_refusals);
#else
    tcase_add_test(tc, test_pth_without_libzip);
#endif
    return s;
}
