/*
 * tests/check_tools.c - the `loom` command (tools/loom), run as a user runs
 * it: from the build directory, where make check runs this program. The
 * suite skips (with a message) when ./tools/loom is not there.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/check_suites.h"

#define TOOL "./tools/loom"

/* Runs `TOOL args` (stderr into the output), returns the exit status and
 * the output in out (NUL-terminated, truncated to cap). */
static int run_tool(const char *args, char *out, size_t cap)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", TOOL, args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_inspect)
{
    if (access(TOOL, X_OK) != 0) {
        fprintf(stderr, "tools: %s not found from %s; skipped\n", TOOL, getcwd((char[512]){0}, 512));
        return;
    }
    char dir[] = "/tmp/loom_tools_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[96], args[160], out[4096];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    loom_ctx *ctx = loom_ctx_create(NULL);
    loom_tensor *ts[2] = {loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(32, 1, 3, 3)),
                          loom_zeros(ctx, LOOM_INT64, LOOM_SHAPE(5))};
    const char *names[2] = {"conv1.weight", "steps"};
    ck_assert_int_eq(loom_save_safetensors(path, 2, ts, names, NULL), LOOM_OK);

    snprintf(args, sizeof args, "inspect %s", path);
    ck_assert_int_eq(run_tool(args, out, sizeof out), 0);
    ck_assert_msg(strstr(out, "conv1.weight") && strstr(out, "[32, 1, 3, 3]") && strstr(out, "288"), "%s", out);
    ck_assert_msg(strstr(out, "steps") && strstr(out, "int64") && strstr(out, "2 tensors, 293 elements, 1192 bytes"),
                  "%s", out);
    snprintf(args, sizeof args, "inspect --json %s", path);
    ck_assert_int_eq(run_tool(args, out, sizeof out), 0);
    ck_assert_msg(strstr(out, "{\"name\": \"conv1.weight\", \"dtype\": \"float32\", \"shape\": [32, 1, 3, 3], "
                              "\"numel\": 288}"),
                  "%s", out);

    /* Errors: one line, status 1 for a bad file, 2 for bad arguments. */
    snprintf(args, sizeof args, "inspect %s/missing.safetensors", dir);
    ck_assert_int_eq(run_tool(args, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "missing.safetensors") && strstr(out, "cannot open"), "%s", out);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("not a checkpoint", f);
    fclose(f);
    snprintf(args, sizeof args, "inspect %s", path);
    ck_assert_int_eq(run_tool(args, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "m.safetensors"), "%s", out);
    ck_assert_int_eq(run_tool("inspect", out, sizeof out), 2);
    ck_assert_int_eq(run_tool("inspect --frobnicate x", out, sizeof out), 2);
    ck_assert_msg(strstr(out, "--frobnicate"), "%s", out);
    ck_assert_int_eq(run_tool("inspect a b", out, sizeof out), 2);
    ck_assert_int_eq(run_tool("no-such-command", out, sizeof out), 2);
    ck_assert_int_eq(run_tool("inspect --help", out, sizeof out), 0);

    remove(path);
    rmdir(dir);
    loom_ctx_free(ctx);
}
END_TEST

Suite *loom_suite_tools(void)
{
    Suite *s = suite_create("tools");
    TCase *tc = test_tcase(s, "loom", 60);
    tcase_add_test(tc, test_inspect);
    return s;
}
