/*
 * runtime/error.h - the per-thread last error, and the always-on assert.
 *
 * Library code reports bad input by returning a status (or NULL) after
 * loom__set_error(); it never exits. LOOM_ASSERT is only for broken internal
 * invariants (a bug in Loom, never the user's input): it prints file:line
 * and aborts.
 */
#ifndef LOOM_RUNTIME_ERROR_H
#define LOOM_RUNTIME_ERROR_H

#include <stddef.h>
#include <stdint.h>

#include "loom/status.h"

/* Stores a formatted message as the calling thread's last error and returns
 * `status`, so that `return loom__set_error(LOOM_ERR_SHAPE, "...")` reads
 * naturally. The message is truncated to 511 bytes. */
loom_status loom__set_error(loom_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Formats a shape as "[3, 4]" into buf (always NUL-terminated). Returns buf. */
char *loom__fmt_shape(char *buf, size_t size, int ndim, const int64_t *shape);

/* Enough for "[" + 8 * ("-9223372036854775808, ") + "]". */
#define LOOM__SHAPE_STR_MAX 200

void loom__assert_fail(const char *expr, const char *file, int line)
    __attribute__((noreturn));

#define LOOM_ASSERT(expr) \
    ((expr) ? (void)0 : loom__assert_fail(#expr, __FILE__, __LINE__))

#endif /* LOOM_RUNTIME_ERROR_H */
