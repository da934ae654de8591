/*
 * ops/create.c - eager creation: tensors whose values are known now.
 */
#include <math.h>
#include <string.h>

#include "ops/ops_internal.h"

loom_tensor *loom__new_ready(const char *op, loom_ctx *ctx, loom_dtype dtype, int ndim, const int64_t *shape)
{
    if (!ctx) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: context is NULL", op);
        return NULL;
    }
    if ((int)dtype < 0 || dtype >= LOOM_DTYPE_COUNT) {
        loom__set_error(LOOM_ERR_DTYPE, "%s: invalid dtype %d", op, (int)dtype);
        return NULL;
    }
    if (loom__check_shape(op, ndim, shape) != LOOM_OK) return NULL;
    loom_tensor *t = loom__tensor_new(ctx, dtype, ndim, shape);
    if (!t) return NULL;
    if (loom__tensor_attach_storage(t, true) != LOOM_OK) {
        loom_status st = loom_last_status();
        char msg[512];
        snprintf(msg, sizeof msg, "%s", loom_last_error());
        loom_tensor_free(t);
        loom__set_error(st, "%s: %s", op, msg);
        return NULL;
    }
    return t;
}

static void fill(loom_tensor *t, double v)
{
    int64_t n = loom__numel(t->ndim, t->shape);
    void *p = t->storage->data;
    switch (t->dtype) {
    case LOOM_FLOAT32: {
        float *f = p, x = (float)v;
        for (int64_t i = 0; i < n; i++) f[i] = x;
        break;
    }
    case LOOM_INT64: {
        int64_t *q = p, x = (int64_t)v;
        for (int64_t i = 0; i < n; i++) q[i] = x;
        break;
    }
    default: memset(p, v != 0.0, (size_t)n); break;
    }
}

loom_tensor *loom_tensor_from_array(loom_ctx *ctx, loom_dtype dtype, const void *data, int ndim,
                                    const int64_t *shape)
{
    loom_tensor *t = loom__new_ready("from_array", ctx, dtype, ndim, shape);
    if (!t) return NULL;
    size_t bytes = t->storage->nbytes;
    if (bytes && !data) {
        loom_tensor_free(t);
        loom__set_error(LOOM_ERR_INVALID_ARG, "from_array: data is NULL");
        return NULL;
    }
    if (bytes) memcpy(t->storage->data, data, bytes);
    if (dtype == LOOM_BOOL) { /* normalise to 0/1 */
        uint8_t *b = t->storage->data;
        for (size_t i = 0; i < bytes; i++) b[i] = b[i] != 0;
    }
    return t;
}

static loom_tensor *filled(const char *op, loom_ctx *ctx, loom_dtype dtype, int ndim, const int64_t *shape,
                           double value)
{
    loom_tensor *t = loom__new_ready(op, ctx, dtype, ndim, shape);
    if (t) fill(t, value);
    return t;
}

loom_tensor *loom_full(loom_ctx *ctx, loom_dtype dtype, int ndim, const int64_t *shape, double value)
{
    return filled("full", ctx, dtype, ndim, shape, value);
}

loom_tensor *loom_zeros(loom_ctx *ctx, loom_dtype dtype, int ndim, const int64_t *shape)
{
    return filled("zeros", ctx, dtype, ndim, shape, 0.0);
}

loom_tensor *loom_ones(loom_ctx *ctx, loom_dtype dtype, int ndim, const int64_t *shape)
{
    return filled("ones", ctx, dtype, ndim, shape, 1.0);
}

loom_tensor *loom_scalar(loom_ctx *ctx, loom_dtype dtype, double value)
{
    return filled("scalar", ctx, dtype, 0, NULL, value);
}

loom_tensor *loom_arange(loom_ctx *ctx, loom_dtype dtype, double start, double end, double step)
{
    if (dtype != LOOM_FLOAT32 && dtype != LOOM_INT64) {
        loom__set_error(LOOM_ERR_DTYPE, "arange: dtype must be float32 or int64, got %s", loom_dtype_name(dtype));
        return NULL;
    }
    if (!isfinite(start) || !isfinite(end) || !isfinite(step) || step == 0.0 ||
        (step > 0 && end < start) || (step < 0 && end > start)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "arange: impossible range start=%g end=%g step=%g", start, end, step);
        return NULL;
    }
    double count = ceil((end - start) / step);
    if (count > 1e12) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "arange: range of %g elements is too large", count);
        return NULL;
    }
    int64_t n = (int64_t)count;
    loom_tensor *t = loom__new_ready("arange", ctx, dtype, 1, &n);
    if (!t) return NULL;
    if (dtype == LOOM_FLOAT32) {
        float *f = t->storage->data;
        for (int64_t i = 0; i < n; i++) f[i] = (float)(start + (double)i * step);
    } else {
        int64_t *q = t->storage->data;
        for (int64_t i = 0; i < n; i++) q[i] = (int64_t)(start + (double)i * step);
    }
    return t;
}

loom_tensor *loom_linspace(loom_ctx *ctx, double start, double end, int64_t steps)
{
    if (steps < 0 || !isfinite(start) || !isfinite(end)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "linspace: impossible arguments start=%g end=%g steps=%lld", start, end,
                        (long long)steps);
        return NULL;
    }
    loom_tensor *t = loom__new_ready("linspace", ctx, LOOM_FLOAT32, 1, &steps);
    if (!t) return NULL;
    float *f = t->storage->data;
    double step = steps > 1 ? (end - start) / (double)(steps - 1) : 0.0;
    /* As PyTorch: the first half counts up from start, the second half down
     * from end, so both endpoints are exact. */
    int64_t half = steps / 2;
    if (steps == 1) f[0] = (float)start;
    for (int64_t i = 0; i < steps && steps > 1; i++)
        f[i] = (float)(i < half ? start + step * (double)i : end - step * (double)(steps - 1 - i));
    return t;
}
