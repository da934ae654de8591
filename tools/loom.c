/*
 * tools/loom.c - the `loom` command:
 *
 *     loom info [--threads N] [--workers N]   version, build, topology, placement
 *     loom train --model M --data DIR ...     train a model of the zoo (tools/train.c)
 *     loom eval --model M --weights W --data DIR
 *                                             its accuracy and loss (tools/train.c)
 *     loom predict --model M --weights W --input X.npy --output Y.npy
 *                                             a model of the zoo on a NumPy batch
 *     loom bench --model M ...                throughput, JSON lines (tools/bench.c)
 *     loom inspect [--json] FILE              the tensors of a safetensors or .pth file
 *     loom --version | --help
 *
 * Bad arguments print one line and exit with status 2; a failure inside
 * Loom prints its message and exits with status 1.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <loom/loom.h>

#include "tools/commands.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: loom <command> [options]\n"
               "commands:\n"
               "  info     version, build options, topology and worker placement\n"
               "  train    train a model of the zoo on an MNIST-format directory, with checkpoints\n"
               "  eval     accuracy and loss of trained weights on a dataset\n"
               "  predict  run a model on a NumPy batch (.npy in, .npy out)\n"
               "  bench    training or inference throughput of a model, as JSON lines\n"
               "  inspect  names, dtypes and shapes of the tensors in a safetensors or torch.save file\n"
               "models: mlp, simplecnn, rnn, lstm, gru, resnet18, resnet34, resnet50, resnet101, resnet152\n"
               "options:\n"
               "  --version  print the version\n"
               "  --help     print this (loom <command> --help for a command)\n");
}

static int parse_count(const char *name, const char *v, int *out)
{
    char *end;
    errno = 0;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || n < 1 || n > 4096) {
        fprintf(stderr, "loom: %s needs a number from 1 to 4096, got '%s'\n", name, v ? v : "");
        return 0;
    }
    *out = (int)n;
    return 1;
}

static int cmd_info(int argc, char **argv)
{
    loom_ctx_options o = {0};
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: loom info [--threads N] [--workers N]\n"
                   "Prints Loom's version, how it was built (oneDNN, hwloc, OpenMP, vector ISA), the\n"
                   "context's threads and DAG workers, the machine's topology as hwloc reads it, and\n"
                   "the core each worker is placed on with its steal order. Defaults come from\n"
                   "LOOM_NUM_THREADS and LOOM_NUM_WORKERS.\n");
            return 0;
        } else if (!strcmp(argv[i], "--threads")) {
            if (!parse_count("--threads", i + 1 < argc ? argv[++i] : NULL, &o.num_threads)) return 2;
        } else if (!strcmp(argv[i], "--workers")) {
            if (!parse_count("--workers", i + 1 < argc ? argv[++i] : NULL, &o.num_workers)) return 2;
        } else {
            fprintf(stderr, "loom info: unknown option '%s' (see loom info --help)\n", argv[i]);
            return 2;
        }
    }
    loom_ctx *ctx = loom_ctx_create(&o);
    char *text = ctx ? loom_ctx_describe(ctx) : NULL;
    if (!text) {
        fprintf(stderr, "loom info: %s\n", loom_last_error());
        loom_ctx_free(ctx);
        return 1;
    }
    fputs(text, stdout);
    free(text);
    loom_ctx_free(ctx);
    return 0;
}

static int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: loom inspect [--json] FILE\n"
                   "Lists the tensors of a safetensors file (as loom_module_save, loom train and Hugging\n"
                   "Face's safetensors write them) or of a torch.save state dict (.pth, .pt): name, dtype,\n"
                   "shape and element count, in the file's order, then the totals. --json prints one JSON\n"
                   "object per tensor instead.\n");
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "loom inspect: unknown option '%s' (see loom inspect --help)\n", argv[i]);
            return 2;
        } else if (path) {
            fprintf(stderr, "loom inspect: one file at a time (got '%s' and '%s')\n", path, argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        fprintf(stderr, "loom inspect: which file? (see loom inspect --help)\n");
        return 2;
    }
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 1});
    int n = 0;
    loom_tensor **ts = NULL;
    char **names = NULL;
    /* A torch.save file is a zip archive ("PK\3\4"); anything else is read
     * as safetensors, whose loader names what is wrong with it. */
    unsigned char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    bool zip = f && fread(magic, 1, 4, f) == 4 && !memcmp(magic, "PK\3\4", 4);
    if (f) fclose(f);
    if (!ctx || (zip ? loom_load_pth(ctx, path, &n, &ts, &names)
                     : loom_load_safetensors(ctx, path, &n, &ts, &names)) != LOOM_OK) {
        fprintf(stderr, "loom inspect: %s\n", loom_last_error());
        loom_ctx_free(ctx);
        return 1;
    }
    int64_t total = 0, bytes = 0;
    if (!json) printf("%-40s %-8s %-24s %12s\n", "name", "dtype", "shape", "elements");
    for (int i = 0; i < n; i++) {
        char shape[256];
        size_t len = 0;
        int nd = loom_tensor_ndim(ts[i]);
        len += (size_t)snprintf(shape, sizeof shape, "[");
        for (int d = 0; d < nd && len < sizeof shape; d++)
            len += (size_t)snprintf(shape + len, sizeof shape - len, "%s%lld", d ? ", " : "",
                                    (long long)loom_tensor_size(ts[i], d));
        if (len < sizeof shape) snprintf(shape + len, sizeof shape - len, "]");
        int64_t numel = loom_tensor_numel(ts[i]);
        const char *dt = loom_dtype_name(loom_tensor_dtype(ts[i]));
        total += numel;
        bytes += numel * (int64_t)loom_dtype_size(loom_tensor_dtype(ts[i]));
        if (json) /* names are printed as JSON strings: escape quotes, backslashes, controls */
        {
            printf("{\"name\": \"");
            for (const unsigned char *c = (const unsigned char *)names[i]; *c; c++) {
                if (*c == '"' || *c == '\\') printf("\\%c", *c);
                else if (*c < 0x20) printf("\\u%04x", *c);
                else putchar(*c);
            }
            printf("\", \"dtype\": \"%s\", \"shape\": %s, \"numel\": %lld}\n", dt, shape, (long long)numel);
        } else {
            printf("%-40s %-8s %-24s %12lld\n", names[i], dt, shape, (long long)numel);
        }
    }
    if (!json) printf("%d tensors, %lld elements, %lld bytes\n", n, (long long)total, (long long)bytes);
    if (zip) loom_pth_free_names(names, n);
    else loom_safetensors_free_names(names, n);
    free(ts);
    loom_ctx_free(ctx);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("loom %s\n", loom_version());
        return 0;
    }
    if (!strcmp(argv[1], "info")) return cmd_info(argc - 2, argv + 2);
    if (!strcmp(argv[1], "inspect")) return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(argv[1], "predict")) return loom_tool_predict(argc - 2, argv + 2);
    if (!strcmp(argv[1], "train")) return loom_tool_train(argc - 2, argv + 2);
    if (!strcmp(argv[1], "eval")) return loom_tool_eval(argc - 2, argv + 2);
    if (!strcmp(argv[1], "bench")) return loom_tool_bench(argc - 2, argv + 2);
    fprintf(stderr, "loom: unknown command '%s' (see loom --help)\n", argv[1]);
    return 2;
}
