/*
 * loom/status.h - error reporting.
 *
 * Every fallible Loom call reports failure in one of two ways:
 *   - calls that return a loom_status return LOOM_OK (0) on success;
 *   - calls that return a pointer return NULL on failure.
 * In both cases a message naming the operation and the offending shapes or
 * values is stored for the calling thread and can be read with
 * loom_last_error(), e.g. "matmul: shapes [3, 4] and [5, 6] do not match".
 *
 * Ops accept NULL inputs and return NULL without overwriting the stored
 * error, so a chain such as loom_add(loom_mul(a, b), c) can be checked once
 * at the end and still reports the first failure (like NaN propagation).
 *
 * Library code never calls exit() or abort() on bad input.
 */
#ifndef LOOM_STATUS_H
#define LOOM_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum loom_status {
    LOOM_OK = 0,
    LOOM_ERR_INVALID_ARG, /* a NULL handle, an impossible option value */
    LOOM_ERR_SHAPE,       /* shapes that do not match or broadcast */
    LOOM_ERR_DTYPE,       /* a dtype the op does not accept */
    LOOM_ERR_RANGE,       /* a dim or index out of range */
    LOOM_ERR_NOMEM,       /* an allocation failed */
    LOOM_ERR_BACKEND,     /* no kernel for the case, or a kernel failed */
    LOOM_ERR_IO,          /* a file could not be read or written */
    LOOM_ERR_FORMAT,      /* a file or string is corrupt or truncated */
    LOOM_ERR_STATE,       /* a call made in the wrong state (e.g. unbalanced scopes) */
    LOOM_STATUS_COUNT
} loom_status;

/* A short constant name for a status ("shape mismatch"). Never NULL. */
const char *loom_status_str(loom_status status);

/* The message of the last failure in the calling thread, or "" if none.
 * The string is owned by Loom and valid until the next failing call in
 * this thread. */
const char *loom_last_error(void);

/* The status of the last failure in the calling thread (LOOM_OK if none). */
loom_status loom_last_status(void);

/* Forget the calling thread's last error. */
void loom_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_STATUS_H */
