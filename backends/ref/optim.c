/*
 * backends/ref/optim.c - the fused optimizer steps (LOOM_OP_ADAM_STEP,
 * LOOM_OP_SGD_STEP).
 *
 * Adam written as tensor ops makes ~11 passes over every parameter and its
 * state per step (mul, add, sqrt, div, ...), each a kernel call with its
 * own output: 10% of a SimpleCNN training step. One pass reads p, g, m, v
 * and writes the new three, with PyTorch's float32 operations in PyTorch's
 * order (kernel.h gives the formula).
 */
#include <math.h>
#include <stdbool.h>

#include "backends/ref/nditer.h"
#include "backends/ref/ref.h"
#include "backends/registry.h"
#include "runtime/error.h"

/* Elements per thread below which a team does not pay. */
#define ADAM_GRAIN 32768

static void adam_range(const loom__attrs *a, const float *restrict p, const float *restrict g,
                       const float *restrict m, const float *restrict v, float *restrict out, int64_t n,
                       int64_t i0, int64_t i1)
{
    const float b1 = (float)a->adam.beta1, b2 = (float)a->adam.beta2;
    const float c1 = (float)(1.0 - a->adam.beta1), c2 = (float)(1.0 - a->adam.beta2);
    const float step = (float)-a->adam.step_size, bc2 = (float)a->adam.bc2_sqrt, eps = (float)a->adam.eps;
    float *restrict po = out, *restrict mo = out + n, *restrict vo = out + 2 * n;
    const bool first = a->adam.first;
    for (int64_t i = i0; i < i1; i++) {
        const float gi = g[i];
        const float mi = (first ? 0.0f : m[i] * b1) + gi * c1;
        const float vi = (first ? 0.0f : v[i] * b2) + c2 * (gi * gi);
        const float d = sqrtf(vi) / bc2 + eps;
        po[i] = p[i] + step * (mi / d);
        mo[i] = mi;
        vo[i] = vi;
    }
}

loom_status loom__ref_adam_step(const loom__kcall *call)
{
    const int64_t n = call->n_in == 4 || call->n_in == 5 ? loom__tview_numel(&call->in[0]) : -1;
    bool ok = n >= 0 && loom__tview_numel(&call->out) == 3 * n;
    for (int i = 0; ok && i < 4; i++)
        ok = call->in[i].dtype == LOOM_FLOAT32 && loom__tview_numel(&call->in[i]) == n;
    if (ok && call->n_in == 5) ok = call->in[4].dtype == LOOM_INT64 && loom__tview_numel(&call->in[4]) == 1;
    if (!ok || call->out.dtype != LOOM_FLOAT32)
        return loom__set_error(LOOM_ERR_INVALID_ARG,
                               "%s: expects four float32 inputs of one size (and an int64 step), and a [3, n] output",
                               loom__op_name(call->op));
    const float *p = call->in[0].data, *g = call->in[1].data, *m = call->in[2].data, *v = call->in[3].data;
    float *out = call->out.data;
    loom__attrs a = *call->attrs;
    if (call->n_in == 5) {
        /* The optimizer's host arithmetic (optim/optimizer.c), from t. */
        const double t = (double)*(const int64_t *)call->in[4].data;
        a.adam.step_size = a.adam.lr / (1.0 - pow(a.adam.beta1, t));
        a.adam.bc2_sqrt = sqrt(1.0 - pow(a.adam.beta2, t));
    }
    const int nt = loom__ref_team(call->nthreads, n, ADAM_GRAIN);
    if (nt <= 1) {
        adam_range(&a, p, g, m, v, out, n, 0, n);
        return LOOM_OK;
    }
    LOOM__OMP_TEAM(nt,
    {
        int64_t i0, i1;
        loom__nditer_part(n, loom__omp_thread(), loom__omp_nthreads(), 16, &i0, &i1);
        adam_range(&a, p, g, m, v, out, n, i0, i1);
    });
    return LOOM_OK;
}

/* ---- SGD ------------------------------------------------------------------ */

/* GCC contracts a*b + c into an FMA across statements under -march=native
 * (its default -ffp-contract=fast); the op-by-op form runs the multiply and
 * the add in separate kernels, so the fused step keeps them apart to give
 * bitwise the same parameters (test_sgd_step_fused). */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define NO_CONTRACT
#endif

/* The float32 constants the op-by-op form's scalar tensors hold. */
typedef struct sgd_k {
    float lr, momentum, damp1, wd; /* damp1 = 1 - dampening */
    bool nesterov, first, has_buf;
} sgd_k;

NO_CONTRACT static void sgd_range(const sgd_k *k, const float *restrict p, const float *restrict g,
                                  const float *restrict buf, float *restrict po, float *restrict bo, int64_t i0,
                                  int64_t i1)
{
    for (int64_t i = i0; i < i1; i++) {
        float d = g[i];
        if (k->wd != 0.0f) {
            const float t = p[i] * k->wd;
            d = d + t;
        }
        if (k->has_buf) {
            float b;
            if (k->first) {
                b = d;
            } else {
                const float t1 = buf[i] * k->momentum, t2 = d * k->damp1;
                b = t1 + t2;
            }
            bo[i] = b;
            if (k->nesterov) {
                const float t = b * k->momentum;
                d = d + t;
            } else {
                d = b;
            }
        }
        const float t = d * k->lr;
        po[i] = p[i] - t;
    }
}

loom_status loom__ref_sgd_step(const loom__kcall *call)
{
    const loom__attrs *a = call->attrs;
    const bool has_buf = a && a->sgd.momentum != 0.0;
    const int64_t n = call->n_in == (has_buf ? 3 : 2) ? loom__tview_numel(&call->in[0]) : -1;
    bool ok = n >= 0 && loom__tview_numel(&call->out) == (has_buf ? 2 : 1) * n && call->out.dtype == LOOM_FLOAT32;
    for (int i = 0; ok && i < call->n_in; i++)
        ok = call->in[i].dtype == LOOM_FLOAT32 && loom__tview_numel(&call->in[i]) == n;
    if (!ok)
        return loom__set_error(LOOM_ERR_INVALID_ARG,
                               "%s: expects float32 p, g (and buf with momentum) of one size, and a [%d, n] output",
                               loom__op_name(call->op), has_buf ? 2 : 1);
    const sgd_k k = {
        .lr = (float)a->sgd.lr,
        .momentum = (float)a->sgd.momentum,
        .damp1 = (float)(1.0 - a->sgd.dampening),
        .wd = (float)a->sgd.weight_decay,
        .nesterov = a->sgd.nesterov,
        .first = a->sgd.first,
        .has_buf = has_buf,
    };
    const float *p = call->in[0].data, *g = call->in[1].data, *buf = has_buf ? call->in[2].data : NULL;
    float *po = call->out.data, *bo = has_buf ? po + n : NULL;
    const int nt = loom__ref_team(call->nthreads, n, ADAM_GRAIN);
    if (nt <= 1) {
        sgd_range(&k, p, g, buf, po, bo, 0, n);
        return LOOM_OK;
    }
    LOOM__OMP_TEAM(nt,
    {
        int64_t i0, i1;
        loom__nditer_part(n, loom__omp_thread(), loom__omp_nthreads(), 16, &i0, &i1);
        sgd_range(&k, p, g, buf, po, bo, i0, i1);
    });
    return LOOM_OK;
}
