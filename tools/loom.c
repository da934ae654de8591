/*
 * tools/loom.c - the `loom` command. For now one subcommand:
 *
 *     loom info [--threads N] [--workers N]   version, build, topology, placement
 *     loom --version | --help
 *
 * Bad arguments print one line and exit with status 2; a failure inside
 * Loom prints its message and exits with status 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <loom/loom.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: loom <command> [options]\n"
               "commands:\n"
               "  info [--threads N] [--workers N]  version, build options, topology and worker placement\n"
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
    fprintf(stderr, "loom: unknown command '%s' (see loom --help)\n", argv[1]);
    return 2;
}
