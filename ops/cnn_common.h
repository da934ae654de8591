/*
 * ops/cnn_common.h - helpers the CNN ops (conv.c, pool.c, norm.c,
 * softmax.c) share: the kernel contract wants their inputs contiguous
 * float32 (backends/kernel.h), and their messages name shapes.
 */
#ifndef LOOM_OPS_CNN_COMMON_H
#define LOOM_OPS_CNN_COMMON_H

#include "ops/ops_internal.h"

/* t itself when it is contiguous, else a new contiguous copy (a temporary
 * to drop with loom__drop_temp(result, t)). NULL keeps the error. */
static inline loom_tensor *loom__contig(loom_tensor *t)
{
    if (!t) return NULL;
    if (loom__is_contiguous(t->ndim, t->shape, t->strides)) return t;
    return loom_contiguous(t);
}

/* Checks that t is float32, with a message naming op and role. */
static inline bool loom__want_float(const char *op, const char *role, const loom_tensor *t)
{
    if (t->dtype == LOOM_FLOAT32) return true;
    loom__set_error(LOOM_ERR_DTYPE, "%s: %s must be float32, got %s", op, role, loom_dtype_name(t->dtype));
    return false;
}

/* Records op on contiguous copies of the n inputs (n <= LOOM__CONTIG_MAX). */
#define LOOM__CONTIG_MAX 10
loom_tensor *loom__record_contig(loom__op op, const loom__attrs *attrs, int n, loom_tensor *const *in, int ndim,
                                 const int64_t *shape);

#endif /* LOOM_OPS_CNN_COMMON_H */
