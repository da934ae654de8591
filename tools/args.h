/*
 * tools/args.h - the option parser every `loom` subcommand uses, so that
 * they all accept, check and report options the same way:
 *
 *     long epochs = 1; const char *model = NULL; bool json = false;
 *     const loom_tool_opt opts[] = {
 *         {"--model", LOOM_TOOL_STR, &model, 0, 0},
 *         {"--epochs", LOOM_TOOL_INT, &epochs, 1, 1000000},
 *         {"--json", LOOM_TOOL_FLAG, &json, 0, 0},
 *     };
 *     int rc = loom_tool_parse("loom train", argc, argv, opts, 3, NULL, usage);
 *     if (rc >= 0) return rc;          // --help printed (0) or a bad option (2)
 *
 * Every error prints one line, "loom train: ...", to stderr.
 */
#ifndef LOOM_TOOLS_ARGS_H
#define LOOM_TOOLS_ARGS_H

#include <stdbool.h>
#include <stdio.h>

typedef enum loom_tool_kind {
    LOOM_TOOL_STR,    /* const char ** */
    LOOM_TOOL_INT,    /* long *, within [min, max] */
    LOOM_TOOL_DOUBLE, /* double *, finite, within [min, max] */
    LOOM_TOOL_FLAG,   /* bool *, takes no value */
    LOOM_TOOL_INTS,   /* loom_tool_ints *: "1,8,32", each within [min, max] */
} loom_tool_kind;

#define LOOM_TOOL_MAX_INTS 16
typedef struct loom_tool_ints {
    int n;
    long v[LOOM_TOOL_MAX_INTS];
} loom_tool_ints;

typedef struct loom_tool_opt {
    const char *name; /* "--epochs" */
    loom_tool_kind kind;
    void *out;
    double min, max; /* for INT, DOUBLE and INTS */
} loom_tool_opt;

/* Parses argv[0..argc) against opts. Returns -1 when everything parsed
 * (the caller goes on), 0 after printing usage for --help or -h, 2 after
 * printing an error for an unknown option, a missing or malformed value.
 * positional (may be NULL) receives the one argument not starting with '-'
 * (a second one is an error); without it, positional arguments are errors. */
int loom_tool_parse(const char *cmd, int argc, char **argv, const loom_tool_opt *opts, int nopts,
                    const char **positional, void (*usage)(FILE *f));

/* Checks that value is one of the NULL-terminated choices; else prints
 * "cmd: option must be one of a, b, c (got 'x')" and returns false. */
bool loom_tool_choice(const char *cmd, const char *option, const char *value, const char *const *choices);

/* Seconds on the monotonic clock. */
double loom_tool_now(void);

#endif /* LOOM_TOOLS_ARGS_H */
