/*
 * ops/unary.c - elementwise unary ops and dtype conversion.
 */
#include <math.h>

#include "backends/registry.h"
#include "ops/ops_internal.h"

typedef enum kind {
    FLOAT_FN, /* exp, log, ...: integer inputs are computed as float32 */
    SIGNED,   /* neg, abs: float32 and int64, not bool */
    ORDERED,  /* relu, clamp: float32 and int64, not bool */
} kind;

static loom_tensor *unary(loom__op op, kind k, loom_tensor *t, const loom__attrs *attrs)
{
    const char *name = loom__op_name(op);
    if (!loom__check_inputs(name, 1, &t)) return NULL;
    loom_dtype dt = t->dtype;
    if (k == FLOAT_FN) {
        dt = LOOM_FLOAT32;
    } else if (dt == LOOM_BOOL) {
        loom__set_error(LOOM_ERR_DTYPE, "%s: bool tensors are not supported (convert with to_dtype first)", name);
        return NULL;
    }
    loom_tensor *c = loom__cast_to(t, dt);
    if (!c) return NULL;
    loom_tensor *out = loom__record(op, attrs, 1, &c, dt, t->ndim, t->shape);
    if (c != t) loom__drop(c);
    return out;
}

loom_tensor *loom_neg(loom_tensor *t) { return unary(LOOM_OP_NEG, SIGNED, t, NULL); }
loom_tensor *loom_abs(loom_tensor *t) { return unary(LOOM_OP_ABS, SIGNED, t, NULL); }
loom_tensor *loom_exp(loom_tensor *t) { return unary(LOOM_OP_EXP, FLOAT_FN, t, NULL); }
loom_tensor *loom_log(loom_tensor *t) { return unary(LOOM_OP_LOG, FLOAT_FN, t, NULL); }
loom_tensor *loom_sqrt(loom_tensor *t) { return unary(LOOM_OP_SQRT, FLOAT_FN, t, NULL); }
loom_tensor *loom_sin(loom_tensor *t) { return unary(LOOM_OP_SIN, FLOAT_FN, t, NULL); }
loom_tensor *loom_cos(loom_tensor *t) { return unary(LOOM_OP_COS, FLOAT_FN, t, NULL); }
loom_tensor *loom_tanh(loom_tensor *t) { return unary(LOOM_OP_TANH, FLOAT_FN, t, NULL); }
loom_tensor *loom_sigmoid(loom_tensor *t) { return unary(LOOM_OP_SIGMOID, FLOAT_FN, t, NULL); }
loom_tensor *loom_relu(loom_tensor *t) { return unary(LOOM_OP_RELU, ORDERED, t, NULL); }

loom_tensor *loom_clamp(loom_tensor *t, double min, double max)
{
    if (isnan(min) || isnan(max)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "clamp: bounds must not be NaN (use -INFINITY/INFINITY for none)");
        return NULL;
    }
    if (min > max) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "clamp: min %g is greater than max %g", min, max);
        return NULL;
    }
    loom__attrs a = {.clamp = {min, max}};
    return unary(LOOM_OP_CLAMP, ORDERED, t, &a);
}

loom_tensor *loom_to_dtype(loom_tensor *t, loom_dtype dtype)
{
    if (!loom__check_inputs("to_dtype", 1, &t)) return NULL;
    if ((int)dtype < 0 || dtype >= LOOM_DTYPE_COUNT) {
        loom__set_error(LOOM_ERR_DTYPE, "to_dtype: invalid dtype %d", (int)dtype);
        return NULL;
    }
    if (t->dtype == dtype) return loom_alias(t);
    return loom__record(LOOM_OP_CAST, NULL, 1, &t, dtype, t->ndim, t->shape);
}
