/*
 * ops/host.c - LOOM_OP_HOST_CALL: a host callback recorded as a node
 * (backends/ref/host.c runs it). dist/ records its gradient all-reduces
 * with it, so they run inside the backward DAG, as soon as their inputs
 * are ready and beside the rest of the backward.
 */
#include <stdlib.h>
#include <string.h>

#include "ops/cnn_common.h"

loom_tensor *loom__host_call(loom_tensor *x, int ndeps, loom_tensor *const *deps,
                             loom_status (*fn)(void *user, float *data, int64_t n), void *user)
{
    const char *op = "host_call";
    if (!loom__check_inputs(op, 1, &x) || (ndeps && !loom__check_inputs(op, ndeps, deps))) return NULL;
    if (!loom__want_float(op, "the input", x)) return NULL;
    if (!fn) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "host_call: no function");
        return NULL;
    }
    const int64_t n = loom__numel(x->ndim, x->shape);
    loom_tensor *flat = loom_reshape(loom_contiguous(x), 1, &n); /* [n], contiguous */
    loom_tensor **in = malloc(sizeof *in * (size_t)(1 + ndeps));
    if (!flat || !in) {
        free(in);
        if (flat) loom_tensor_free(flat);
        if (!flat) return NULL;
        loom__set_error(LOOM_ERR_NOMEM, "host_call: out of memory");
        return NULL;
    }
    in[0] = flat;
    if (ndeps) memcpy(in + 1, deps, sizeof *in * (size_t)ndeps);
    loom__attrs a;
    memset(&a, 0, sizeof a);
    a.host.fn = fn;
    a.host.user = user;
    loom_tensor *out = loom__record(LOOM_OP_HOST_CALL, &a, 1 + ndeps, in, LOOM_FLOAT32, 1, &n);
    free(in);
    return out;
}
