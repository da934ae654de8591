/*
 * tools/args.c - the subcommands' option parser (tools/args.h).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/args.h"

static bool parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

static bool parse_value(const char *cmd, const loom_tool_opt *o, const char *v)
{
    switch (o->kind) {
    case LOOM_TOOL_STR:
        if (!*v) break;
        *(const char **)o->out = v;
        return true;
    case LOOM_TOOL_INT: {
        long n;
        if (!parse_long(v, &n) || (double)n < o->min || (double)n > o->max) break;
        *(long *)o->out = n;
        return true;
    }
    case LOOM_TOOL_DOUBLE: {
        char *end;
        errno = 0;
        double d = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(d) || d < o->min || d > o->max) break;
        *(double *)o->out = d;
        return true;
    }
    case LOOM_TOOL_INTS: {
        loom_tool_ints *list = o->out;
        list->n = 0;
        const char *p = v;
        while (*p) {
            char item[32];
            size_t len = strcspn(p, ",");
            long n;
            if (len == 0 || len >= sizeof item || list->n == LOOM_TOOL_MAX_INTS) goto bad;
            memcpy(item, p, len);
            item[len] = '\0';
            if (!parse_long(item, &n) || (double)n < o->min || (double)n > o->max) goto bad;
            list->v[list->n++] = n;
            p += len;
            if (*p == ',' && *++p == '\0') goto bad; /* a trailing comma */
        }
        if (list->n) return true;
    bad:
        fprintf(stderr, "%s: %s needs a comma-separated list of up to %d integers from %.0f to %.0f, got '%s'\n",
                cmd, o->name, LOOM_TOOL_MAX_INTS, o->min, o->max, v);
        return false;
    }
    case LOOM_TOOL_FLAG:
        break;
    }
    if (o->kind == LOOM_TOOL_STR)
        fprintf(stderr, "%s: %s needs a non-empty value\n", cmd, o->name);
    else if (o->kind == LOOM_TOOL_INT)
        fprintf(stderr, "%s: %s needs an integer from %.0f to %.0f, got '%s'\n", cmd, o->name, o->min, o->max, v);
    else
        fprintf(stderr, "%s: %s needs a number from %g to %g, got '%s'\n", cmd, o->name, o->min, o->max, v);
    return false;
}

int loom_tool_parse(const char *cmd, int argc, char **argv, const loom_tool_opt *opts, int nopts,
                    const char **positional, void (*usage)(FILE *f))
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (a[0] != '-' || !a[1]) {
            if (positional && !*positional) {
                *positional = a;
                continue;
            }
            if (positional)
                fprintf(stderr, "%s: one file at a time (got '%s' and '%s')\n", cmd, *positional, a);
            else
                fprintf(stderr, "%s: unexpected argument '%s' (see %s --help)\n", cmd, a, cmd);
            return 2;
        }
        /* --name=value is accepted as well as --name value. */
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const loom_tool_opt *o = NULL;
        for (int k = 0; k < nopts; k++)
            if (strlen(opts[k].name) == len && !strncmp(opts[k].name, a, len)) o = &opts[k];
        if (!o) {
            fprintf(stderr, "%s: unknown option '%.*s' (see %s --help)\n", cmd, (int)len, a, cmd);
            return 2;
        }
        if (o->kind == LOOM_TOOL_FLAG) {
            if (eq) {
                fprintf(stderr, "%s: %s takes no value\n", cmd, o->name);
                return 2;
            }
            *(bool *)o->out = true;
            continue;
        }
        const char *v = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        if (!v) {
            fprintf(stderr, "%s: %s needs a value\n", cmd, o->name);
            return 2;
        }
        if (!parse_value(cmd, o, v)) return 2;
    }
    return -1;
}

bool loom_tool_choice(const char *cmd, const char *option, const char *value, const char *const *choices)
{
    for (const char *const *c = choices; *c; c++)
        if (!strcmp(*c, value)) return true;
    fprintf(stderr, "%s: %s must be one of ", cmd, option);
    for (const char *const *c = choices; *c; c++) fprintf(stderr, "%s%s", c == choices ? "" : ", ", *c);
    fprintf(stderr, " (got '%s')\n", value);
    return false;
}

double loom_tool_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
