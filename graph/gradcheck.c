/*
 * graph/gradcheck.c - checks backward against central finite differences.
 *
 * The scalar checked is s = sum(fn(x) * r) with r fixed random weights, so
 * that one backward gives ds/dx for every element and every output element
 * takes part. Each element of each input that requires grad is nudged by
 * +-eps (in a copy: the inputs are never modified) and
 * (s(x+eps) - s(x-eps)) / 2eps is compared with the analytic gradient. The
 * sums are done in double; the data are float32, hence the default eps 1e-2.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph/tensor_impl.h"
#include "loom/loom.h"
#include "runtime/error.h"

/* s = sum(y * r) in double, from y's values. */
static loom_status weighted_sum(loom_tensor *y, const float *r, int64_t n, double *out)
{
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!v) return loom__set_error(LOOM_ERR_NOMEM, "gradcheck: out of memory");
    loom_status st = loom_tensor_copy_to(y, v, sizeof(float) * (size_t)n);
    double s = 0;
    for (int64_t i = 0; i < n && st == LOOM_OK; i++) s += (double)v[i] * r[i];
    free(v);
    *out = s;
    return st;
}

/* fn at inputs with input k replaced by `values` (NULL: unchanged). */
static loom_status eval_at(loom_grad_fn fn, int n, loom_tensor *const *inputs, void *user, int k,
                           const float *values, const float *r, int64_t ny, double *out)
{
    loom_ctx *ctx = inputs[0]->ctx;
    loom_tensor *local[16];
    loom_tensor **in = n <= 16 ? local : malloc(sizeof *in * (size_t)n);
    if (!in) return loom__set_error(LOOM_ERR_NOMEM, "gradcheck: out of memory");
    loom_scope_begin(ctx);
    loom_no_grad_begin(ctx);
    memcpy(in, inputs, sizeof *in * (size_t)n);
    if (values) {
        /* The same tensor passed in several slots is one variable: nudge it
         * everywhere, as backward sums its gradient over the slots. */
        loom_tensor *x = loom_tensor_from_array(ctx, LOOM_FLOAT32, values, inputs[k]->ndim, inputs[k]->shape);
        for (int j = 0; j < n; j++)
            if (inputs[j] == inputs[k]) in[j] = x;
    }
    loom_tensor *y = in[k] ? fn(in, n, user) : NULL;
    loom_status st = y ? weighted_sum(y, r, ny, out) : (loom_last_status() ? loom_last_status() : LOOM_ERR_INVALID_ARG);
    loom_no_grad_end(ctx);
    loom_scope_end(ctx);
    if (in != local) free(in);
    return st;
}

loom_status loom_gradcheck(loom_grad_fn fn, int n, loom_tensor *const *inputs, void *user,
                           const loom_gradcheck_options *opts)
{
    if (!fn || n < 1 || !inputs) return loom__set_error(LOOM_ERR_INVALID_ARG, "gradcheck: no function or inputs");
    for (int i = 0; i < n; i++)
        if (!inputs[i]) return loom__set_error(LOOM_ERR_INVALID_ARG, "gradcheck: input %d is NULL", i);
    double eps = opts && opts->eps > 0 ? opts->eps : 1e-2;
    double atol = opts && opts->atol > 0 ? opts->atol : 1e-3;
    double rtol = opts && opts->rtol > 0 ? opts->rtol : 1e-2;
    loom_ctx *ctx = inputs[0]->ctx;
    for (int i = 0; i < n; i++) loom_tensor_zero_grad(inputs[i]);

    /* Analytic: backward of sum(y * r). */
    loom_status st = loom_scope_begin(ctx);
    if (st != LOOM_OK) return st;
    float *r = NULL;
    int64_t ny = 0;
    loom_tensor *y = fn(inputs, n, user);
    if (!y) {
        st = loom_last_status() ? loom_last_status() : LOOM_ERR_INVALID_ARG;
        goto out;
    }
    if (!y->requires_grad) {
        st = loom__set_error(LOOM_ERR_INVALID_ARG, "gradcheck: the output does not require grad");
        goto out;
    }
    ny = loom__numel(y->ndim, y->shape);
    r = malloc(sizeof(float) * (size_t)(ny ? ny : 1));
    if (!r) {
        st = loom__set_error(LOOM_ERR_NOMEM, "gradcheck: out of memory");
        goto out;
    }
    /* Fixed weights in [0.5, 1.5), different for every element. */
    for (int64_t i = 0; i < ny; i++) r[i] = 0.5f + (float)((i * 2654435761u) % 1000u) / 1000.0f;
    loom_tensor *rt = loom_tensor_from_array(ctx, LOOM_FLOAT32, r, y->ndim, y->shape);
    st = loom_backward(loom_sum(loom_mul(y, rt), 0, NULL, false), NULL, NULL);
    if (st != LOOM_OK) goto out;

    /* Numeric, element by element. */
    for (int k = 0; k < n && st == LOOM_OK; k++) {
        loom_tensor *x = inputs[k];
        if (!x->requires_grad) continue;
        int64_t nx = loom__numel(x->ndim, x->shape);
        float *xv = malloc(sizeof(float) * (size_t)(nx ? nx : 1));
        float *gv = malloc(sizeof(float) * (size_t)(nx ? nx : 1));
        if (!xv || !gv) {
            free(xv);
            free(gv);
            st = loom__set_error(LOOM_ERR_NOMEM, "gradcheck: out of memory");
            break;
        }
        st = loom_tensor_copy_to(x, xv, sizeof(float) * (size_t)nx);
        if (st == LOOM_OK && !x->grad) memset(gv, 0, sizeof(float) * (size_t)nx); /* no path: zero */
        else if (st == LOOM_OK) st = loom_tensor_copy_to(x->grad, gv, sizeof(float) * (size_t)nx);
        for (int64_t e = 0; e < nx && st == LOOM_OK; e++) {
            float keep = xv[e];
            double hi, lo;
            xv[e] = (float)(keep + eps);
            double dplus = (double)xv[e] - keep;
            st = eval_at(fn, n, inputs, user, k, xv, r, ny, &hi);
            xv[e] = (float)(keep - eps);
            double dminus = keep - (double)xv[e];
            if (st == LOOM_OK) st = eval_at(fn, n, inputs, user, k, xv, r, ny, &lo);
            xv[e] = keep;
            if (st != LOOM_OK) break;
            double numeric = (hi - lo) / (dplus + dminus);
            double analytic = gv[e];
            if (!(fabs(numeric - analytic) <= atol + rtol * fabs(numeric))) {
                char sh[LOOM__SHAPE_STR_MAX];
                st = loom__set_error(LOOM_ERR_INVALID_ARG,
                                     "gradcheck: input %d (shape %s), element %lld: backward gives %.6g, finite "
                                     "differences give %.6g",
                                     k, loom__fmt_shape(sh, sizeof sh, x->ndim, x->shape), (long long)e, analytic,
                                     numeric);
            }
        }
        free(xv);
        free(gv);
    }
out:
    free(r);
    loom_scope_end(ctx);
    for (int i = 0; i < n; i++) loom_tensor_zero_grad(inputs[i]);
    return st;
}
