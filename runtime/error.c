/*
 * runtime/error.c - the per-thread last error.
 *
 * The message lives in thread-local storage, as errno does, so that Loom can
 * be used from several threads (each with its own context) without locks, and
 * so that reporting an error never needs to allocate.
 */
#include "runtime/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local char tls_message[512];
static _Thread_local loom_status tls_status = LOOM_OK;

static const char *const status_names[] = {
    [LOOM_OK] = "success",
    [LOOM_ERR_INVALID_ARG] = "invalid argument",
    [LOOM_ERR_SHAPE] = "shape mismatch",
    [LOOM_ERR_DTYPE] = "unsupported dtype",
    [LOOM_ERR_RANGE] = "out of range",
    [LOOM_ERR_NOMEM] = "out of memory",
    [LOOM_ERR_BACKEND] = "backend failure",
    [LOOM_ERR_IO] = "I/O error",
    [LOOM_ERR_FORMAT] = "bad format",
    [LOOM_ERR_STATE] = "invalid state",
};
_Static_assert(sizeof status_names / sizeof status_names[0] == LOOM_STATUS_COUNT,
               "a loom_status lacks a name");

const char *loom_status_str(loom_status status)
{
    if ((int)status < 0 || status >= LOOM_STATUS_COUNT) return "unknown status";
    return status_names[status];
}

const char *loom_last_error(void) { return tls_message; }

loom_status loom_last_status(void) { return tls_status; }

void loom_clear_error(void)
{
    tls_message[0] = '\0';
    tls_status = LOOM_OK;
}

loom_status loom__set_error(loom_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_message, sizeof tls_message, fmt, ap);
    va_end(ap);
    tls_status = status;
    return status;
}

char *loom__fmt_shape(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t used = 0;
    int n = snprintf(buf, size, "[");
    used = n > 0 ? (size_t)n : 0;
    for (int d = 0; d < ndim && used < size; d++) {
        n = snprintf(buf + used, size - used, d ? ", %lld" : "%lld", (long long)shape[d]);
        if (n > 0) used += (size_t)n;
    }
    if (used < size) snprintf(buf + used, size - used, "]");
    return buf;
}

void loom__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "loom: internal error: assertion `%s' failed at %s:%d\n", expr, file, line);
    abort(); /* assert: a broken invariant inside Loom, never bad user input */
}
