/*
 * ops/binary.c - elementwise binary ops with broadcasting, their scalar
 * forms, comparisons and where.
 *
 * Each op promotes the inputs to one compute dtype, expands them to the
 * broadcast shape (views with stride 0, no copy) and records one node, so
 * the kernel sees two operands of the output's shape.
 */
#include <math.h>
#include <string.h>

#include "backends/registry.h"
#include "ops/ops_internal.h"

typedef enum kind { ARITH, DIVISION, EXTREMUM, COMPARE } kind;

static loom_tensor *binary_attrs(loom__op op, kind k, const loom__attrs *attrs, loom_tensor *a, loom_tensor *b)
{
    const char *name = loom__op_name(op);
    loom_tensor *in[2] = {a, b};
    if (!loom__check_inputs(name, 2, in)) return NULL;
    int ndim;
    int64_t shape[LOOM_MAX_DIMS];
    if (loom__broadcast(name, a->ndim, a->shape, b->ndim, b->shape, &ndim, shape) != LOOM_OK) return NULL;

    loom_dtype ct = loom__promote(a->dtype, b->dtype); /* compute dtype */
    if (k == ARITH && ct == LOOM_BOOL) ct = LOOM_INT64;
    if (k == DIVISION) ct = LOOM_FLOAT32;
    loom_dtype out_dtype = k == COMPARE ? LOOM_BOOL : ct;

    loom_tensor *ac = loom__cast_to(a, ct);
    loom_tensor *bc = ac ? loom__cast_to(b, ct) : NULL;
    loom_tensor *ae = bc ? loom__expand_to(ac, ndim, shape) : NULL;
    loom_tensor *be = ae ? loom__expand_to(bc, ndim, shape) : NULL;
    loom_tensor *out = NULL;
    if (be) out = loom__record(op, attrs, 2, (loom_tensor *[]){ae, be}, out_dtype, ndim, shape);
    /* Drop the temporaries: the node holds what it needs. */
    loom__drop_temp(be, bc);
    loom__drop_temp(ae, ac);
    loom__drop_temp(bc, b);
    loom__drop_temp(ac, a);
    return out;
}

static loom_tensor *binary(loom__op op, kind k, loom_tensor *a, loom_tensor *b)
{
    return binary_attrs(op, k, NULL, a, b);
}

loom_tensor *loom_add(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_ADD, ARITH, a, b); }

loom_tensor *loom_add_relu(loom_tensor *a, loom_tensor *b)
{
    loom_tensor *in[2] = {a, b};
    if (!loom__check_inputs("add_relu", 2, in)) return NULL;
    if (a->dtype != LOOM_FLOAT32 || b->dtype != LOOM_FLOAT32) {
        loom__set_error(LOOM_ERR_DTYPE, "add_relu: float32 inputs only, got %s and %s", loom_dtype_name(a->dtype),
                        loom_dtype_name(b->dtype));
        return NULL;
    }
    loom__attrs at;
    memset(&at, 0, sizeof at);
    at.add.relu = true;
    return binary_attrs(LOOM_OP_ADD, ARITH, &at, a, b);
}
loom_tensor *loom_sub(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_SUB, ARITH, a, b); }
loom_tensor *loom_mul(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_MUL, ARITH, a, b); }
loom_tensor *loom_div(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_DIV, DIVISION, a, b); }
loom_tensor *loom_pow(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_POW, ARITH, a, b); }
loom_tensor *loom_maximum(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_MAXIMUM, EXTREMUM, a, b); }
loom_tensor *loom_minimum(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_MINIMUM, EXTREMUM, a, b); }
loom_tensor *loom_eq(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_EQ, COMPARE, a, b); }
loom_tensor *loom_ne(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_NE, COMPARE, a, b); }
loom_tensor *loom_gt(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_GT, COMPARE, a, b); }
loom_tensor *loom_ge(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_GE, COMPARE, a, b); }
loom_tensor *loom_lt(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_LT, COMPARE, a, b); }
loom_tensor *loom_le(loom_tensor *a, loom_tensor *b) { return binary(LOOM_OP_LE, COMPARE, a, b); }

/* A scalar operand takes a's dtype class, as PyTorch's "wrapped numbers"
 * do: an integral value keeps an int64 tensor int64; a fractional one makes
 * the result float32. */
static loom_tensor *with_scalar(loom__op op, kind k, loom_tensor *a, double s)
{
    if (!loom__check_inputs(loom__op_name(op), 1, &a)) return NULL;
    loom_dtype st = LOOM_FLOAT32;
    if (a->dtype != LOOM_FLOAT32 && s == floor(s) && fabs(s) < 9.2e18) st = LOOM_INT64;
    loom_tensor *b = loom_scalar(a->ctx, st, s);
    if (!b) return NULL;
    loom_tensor *out = binary(op, k, a, b);
    loom__drop(b);
    return out;
}

loom_tensor *loom_add_scalar(loom_tensor *a, double s) { return with_scalar(LOOM_OP_ADD, ARITH, a, s); }
loom_tensor *loom_sub_scalar(loom_tensor *a, double s) { return with_scalar(LOOM_OP_SUB, ARITH, a, s); }
loom_tensor *loom_mul_scalar(loom_tensor *a, double s) { return with_scalar(LOOM_OP_MUL, ARITH, a, s); }
loom_tensor *loom_div_scalar(loom_tensor *a, double s) { return with_scalar(LOOM_OP_DIV, DIVISION, a, s); }
loom_tensor *loom_pow_scalar(loom_tensor *a, double e) { return with_scalar(LOOM_OP_POW, ARITH, a, e); }

loom_tensor *loom_where(loom_tensor *cond, loom_tensor *a, loom_tensor *b)
{
    loom_tensor *in[3] = {cond, a, b};
    if (!loom__check_inputs("where", 3, in)) return NULL;
    int n1, ndim;
    int64_t s1[LOOM_MAX_DIMS], shape[LOOM_MAX_DIMS];
    if (loom__broadcast("where", a->ndim, a->shape, b->ndim, b->shape, &n1, s1) != LOOM_OK) return NULL;
    if (loom__broadcast("where", cond->ndim, cond->shape, n1, s1, &ndim, shape) != LOOM_OK) return NULL;
    loom_dtype ct = loom__promote(a->dtype, b->dtype);
    loom_tensor *ac = loom__cast_to(a, ct);
    loom_tensor *bc = ac ? loom__cast_to(b, ct) : NULL;
    loom_tensor *ce = bc ? loom__expand_to(cond, ndim, shape) : NULL;
    loom_tensor *ae = ce ? loom__expand_to(ac, ndim, shape) : NULL;
    loom_tensor *be = ae ? loom__expand_to(bc, ndim, shape) : NULL;
    loom_tensor *out = NULL;
    if (be) out = loom__record(LOOM_OP_WHERE, NULL, 3, (loom_tensor *[]){ce, ae, be}, ct, ndim, shape);
    loom__drop_temp(be, bc);
    loom__drop_temp(ae, ac);
    loom__drop_temp(ce, cond);
    loom__drop_temp(bc, b);
    loom__drop_temp(ac, a);
    return out;
}
