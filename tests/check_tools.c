/*
 * tests/check_tools.c - the `loom` command (tools/loom), run as a user runs
 * it: from the build directory, where make check runs this program. The
 * suite skips (with a message) when ./tools/loom is not there.
 */
#include <math.h>
#include <stdint.h>
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
    char cmd[1024];
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

/* ---- train, eval, bench, predict -------------------------------------------- */

/* Writes an IDX file: magic (type 0x08, dims), big-endian sizes, bytes. */
static void write_idx(const char *path, int ndims, const int *dims, const uint8_t *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    const unsigned char magic[4] = {0, 0, 0x08, (unsigned char)ndims};
    fwrite(magic, 1, 4, f);
    for (int d = 0; d < ndims; d++) {
        const unsigned char be[4] = {(unsigned char)(dims[d] >> 24), (unsigned char)(dims[d] >> 16),
                                     (unsigned char)(dims[d] >> 8), (unsigned char)dims[d]};
        fwrite(be, 1, 4, f);
    }
    fwrite(data, 1, n, f);
    fclose(f);
}

/* A small MNIST-format dataset in dir: 12 x 12 images of 10 classes; class
 * c is a bright column c + 1 over noise, so a model learns it in a few
 * epochs. 320 training and 100 test images. */
static void write_dataset(const char *dir)
{
    static uint8_t px[320 * 144], labels[320];
    uint32_t rng = 12345;
    for (int split = 0; split < 2; split++) {
        const int n = split ? 100 : 320;
        for (int i = 0; i < n; i++) {
            labels[i] = (uint8_t)((i * 7 + split) % 10);
            for (int k = 0; k < 144; k++) {
                rng = rng * 1664525u + 1013904223u;
                px[i * 144 + k] = (uint8_t)(k % 12 == labels[i] + 1 ? 200 + (rng >> 29) : (rng >> 26));
            }
        }
        char path[128];
        snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, split ? "t10k" : "train");
        write_idx(path, 3, (const int[]){n, 12, 12}, px, (size_t)n * 144);
        snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, split ? "t10k" : "train");
        write_idx(path, 1, (const int[]){n}, labels, (size_t)n);
    }
}

/* The value of "key": in a JSON line, as text up to the next , or }. */
static void json_field(const char *line, const char *key, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(line, pat);
    ck_assert_msg(p != NULL, "no %s in %s", key, line);
    p += strlen(pat);
    size_t n = strcspn(p, ",}");
    ck_assert_uint_lt(n, cap);
    memcpy(out, p, n);
    out[n] = '\0';
}

/* The line of out that starts with `start` (NULL-terminated copy). */
static void line_with(const char *out, const char *start, char *line, size_t cap)
{
    const char *p = strstr(out, start);
    ck_assert_msg(p != NULL, "no line with %s in:\n%s", start, out);
    size_t n = strcspn(p, "\n");
    ck_assert_uint_lt(n, cap);
    memcpy(line, p, n);
    line[n] = '\0';
}

/* loom train learns the small dataset; a run stopped after epoch 1 and
 * resumed gives the epoch-2 figures of the uninterrupted run exactly;
 * loom eval of the checkpoint gives the accuracy train reported; loom
 * predict runs the checkpoint on a .npy batch. */
START_TEST(test_train_eval)
{
    if (access(TOOL, X_OK) != 0) return;
    char dir[] = "/tmp/loom_train_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    write_dataset(dir);
    static char out[16384];
    char args[512], line[1024], a[64], b[64];
    const char *common = "--model mlp --batch-size 32 --threads 1 --seed 3 --json";

    snprintf(args, sizeof args, "train %s --data %s --epochs 2 --checkpoint %s/full.ckpt", common, dir, dir);
    ck_assert_msg(run_tool(args, out, sizeof out) == 0, "%s", out);
    char full2[1024];
    line_with(out, "{\"epoch\": 2,", full2, sizeof full2);
    json_field(full2, "test_accuracy", a, sizeof a);
    ck_assert_msg(strtod(a, NULL) > 0.8, "the mlp did not learn the columns: %s", out);

    snprintf(args, sizeof args, "train %s --data %s --epochs 1 --checkpoint %s/part.ckpt", common, dir, dir);
    ck_assert_msg(run_tool(args, out, sizeof out) == 0, "%s", out);
    snprintf(args, sizeof args, "train %s --data %s --epochs 2 --checkpoint %s/part.ckpt --resume", common, dir, dir);
    ck_assert_msg(run_tool(args, out, sizeof out) == 0, "%s", out);
    ck_assert_msg(!strstr(out, "{\"epoch\": 1,"), "resuming re-ran epoch 1: %s", out);
    line_with(out, "{\"epoch\": 2,", line, sizeof line);
    static const char *const same[] = {"train_loss", "test_loss", "test_accuracy"};
    for (int i = 0; i < 3; i++) {
        json_field(full2, same[i], a, sizeof a);
        json_field(line, same[i], b, sizeof b);
        ck_assert_msg(!strcmp(a, b), "%s: %s uninterrupted, %s resumed", same[i], a, b);
    }

    /* eval: the test split as train evaluated it, and the text form. */
    snprintf(args, sizeof args, "eval --model mlp --weights %s/full.ckpt --data %s --json", dir, dir);
    ck_assert_msg(run_tool(args, out, sizeof out) == 0, "%s", out);
    json_field(full2, "test_accuracy", a, sizeof a);
    json_field(out, "accuracy", b, sizeof b);
    ck_assert_msg(!strcmp(a, b), "eval %s, train %s", b, a);
    json_field(full2, "test_loss", a, sizeof a);
    json_field(out, "loss", b, sizeof b);
    ck_assert_msg(!strcmp(a, b), "eval loss %s, train's test loss %s", b, a);
    json_field(out, "images", b, sizeof b);
    ck_assert_str_eq(b, "100");
    snprintf(args, sizeof args, "eval --model mlp --weights %s/full.ckpt --data %s --split train", dir, dir);
    ck_assert_msg(run_tool(args, out, sizeof out) == 0 && strstr(out, "/320)"), "%s", out);

    /* predict: [3, 1, 12, 12] in, [3, 10] out. */
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 1});
    char x_path[96], y_path[96];
    snprintf(x_path, sizeof x_path, "%s/x.npy", dir);
    snprintf(y_path, sizeof y_path, "%s/y.npy", dir);
    ck_assert_int_eq(loom_save_npy(loom_rand(ctx, LOOM_SHAPE(3, 1, 12, 12)), x_path), LOOM_OK);
    snprintf(args, sizeof args, "predict --model mlp --weights %s/full.ckpt --input %s --output %s", dir, x_path,
             y_path);
    ck_assert_msg(run_tool(args, out, sizeof out) == 0, "%s", out);
    loom_tensor *y = loom_load_npy(ctx, y_path);
    ck_assert_msg(y != NULL, "%s", loom_last_error());
    ck_assert_int_eq(loom_tensor_ndim(y), 2);
    ck_assert_int_eq(loom_tensor_size(y, 0), 3);
    ck_assert_int_eq(loom_tensor_size(y, 1), 10);
    /* The wrong model for the weights: the missing names are listed. */
    snprintf(args, sizeof args, "predict --model simplecnn --weights %s/full.ckpt --input %s --output %s/z.npy", dir,
             x_path, dir);
    ck_assert_int_eq(run_tool(args, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "conv1.weight") && strstr(out, "loading the weights"), "%s", out);
    snprintf(args, sizeof args, "%s/z.npy", dir);
    ck_assert_int_ne(access(args, F_OK), 0); /* nothing written on failure */

    /* Errors: one line each, 2 for bad arguments, 1 for what fails inside. */
    static const struct {
        const char *args;
        int status;
        const char *says;
    } bad[] = {
        {"train --model mlp", 2, "--data"},
        {"train --model nope --data %s", 2, "mlp, simplecnn"},
        {"train --model mlp --data %s --epochs 0", 2, "--epochs"},
        {"train --model mlp --data %s --lr -1", 2, "--lr"},
        {"train --model mlp --data %s --optimizer rmsprop", 2, "adam, adamw, sgd"},
        {"train --model mlp --data %s --resume", 2, "--checkpoint"},
        {"train --model mlp --data %s --normalize 0.5", 2, "MEAN,STD"},
        {"train --model mlp --data %s/none", 1, "none"},
        {"train --model simplecnn --data %s --checkpoint %s/full.ckpt --resume", 1, "resuming"},
        {"eval --model mlp --data %s", 2, "--weights"},
        {"eval --model mlp --weights %s/missing.ckpt --data %s", 1, "missing.ckpt"},
        {"eval --model mlp --weights %s/train-labels-idx1-ubyte --data %s", 1, "loading the weights"},
        {"eval --model mlp --weights %s/full.ckpt --data %s --split valid", 2, "test, train"},
        {"bench --model mlp --batch 0", 2, "--batch"},
        {"bench --model mlp --batch 1,,2", 2, "--batch"},
        {"bench --model mlp --backend cuda", 2, "auto, onednn, ref"},
        {"bench --model mlp --mode fit", 2, "infer, train"},
        {"bench", 2, "--model"},
        {"predict --model mlp --weights w --input %s/absent.npy --output o.npy", 1, "absent.npy"},
        {"predict --model nope --weights w --input x --output y", 2, "unknown model"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, bad[i].args, dir, dir);
        int st = run_tool(args, out, sizeof out);
        ck_assert_msg(st == bad[i].status && strstr(out, bad[i].says) && strchr(out, '\n') == out + strlen(out) - 1,
                      "loom %s: status %d, output:\n%s", args, st, out);
    }
    static const char *const helps[] = {"train", "eval", "bench", "predict", "info", "inspect"};
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        snprintf(args, sizeof args, "%s --help", helps[i]);
        ck_assert_msg(run_tool(args, out, sizeof out) == 0 && strstr(out, "usage: loom"), "%s", out);
    }
    loom_ctx_free(ctx);
    snprintf(args, sizeof args, "rm -rf %s", dir);
    ck_assert_int_eq(system(args), 0);
}
END_TEST

/* loom bench: one JSON line per batch size, the FLOPs of the model counted
 * exactly, and --profile's table. */
START_TEST(test_bench)
{
    if (access(TOOL, X_OK) != 0) return;
    static char out[16384];
    ck_assert_msg(run_tool("bench --model mlp --batch 2,4 --threads 1 --warmup 0 --min-time 0 --profile", out,
                           sizeof out) == 0,
                  "%s", out);
    char line[1024], v[64];
    /* mlp on 1 x 28 x 28: Linear 784->512, 512->512, 512->10. */
    const double per_image = 2.0 * (784 * 512 + 512 * 512 + 512 * 10) * 1e-9;
    for (int batch = 2; batch <= 4; batch += 2) {
        char start[64];
        snprintf(start, sizeof start, "{\"impl\": \"loom\", \"model\": \"mlp\", \"mode\": \"infer\", \"batch\": %d,",
                 batch);
        line_with(out, start, line, sizeof line);
        json_field(line, "gflop_per_iter", v, sizeof v);
        ck_assert_msg(fabs(strtod(v, NULL) - batch * per_image) < 1e-4, "%s", line);
        json_field(line, "images_per_s", v, sizeof v);
        ck_assert_msg(strtod(v, NULL) > 0, "%s", line);
        json_field(line, "peak_bytes", v, sizeof v);
        ck_assert_msg(strtod(v, NULL) > 784 * 512 * 4, "%s", line);
    }
    ck_assert_msg(strstr(out, "loom profile:") && strstr(out, "matmul") && strstr(out, "GFLOP/s"), "%s", out);
    ck_assert_msg(run_tool("bench --model simplecnn --mode train --batch 2 --threads 1 --warmup 0 --min-time 0", out,
                           sizeof out) == 0 &&
                      strstr(out, "\"mode\": \"train\""),
                  "%s", out);
}
END_TEST

Suite *loom_suite_tools(void)
{
    Suite *s = suite_create("tools");
    TCase *tc = test_tcase(s, "loom", 60);
    tcase_add_test(tc, test_inspect);
    tcase_add_test(tc, test_train_eval);
    tcase_add_test(tc, test_bench);
    return s;
}
