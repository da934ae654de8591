/*
 * backends/ref/softmax.c - the portable C softmax family (float32):
 * SOFTMAX and LOG_SOFTMAX over one dim, their backward kernels, and
 * RELU_BWD (the mask of ReLU's gradient, kept here with the other
 * activation backward kernels).
 *
 * Shapes: x, y, dy, dx all share one contiguous shape, viewed as
 * [outer, D, inner] around the softmax dim attrs.axis.dim. Each (outer,
 * inner) lane of D values is independent:
 *   softmax      y = exp(x - max) / sum(exp(x - max))
 *   log_softmax  y = (x - max) - log(sum(exp(x - max)))
 *   backward     softmax: dx = y * (dy - sum(dy * y));
 *                log_softmax: dx = dy - exp(y) * sum(dy)
 * (subtracting the lane's max keeps exp from overflowing). Sums run in
 * double. With inner == 1 a lane is a contiguous row; otherwise lanes are
 * processed LANES at a time so that every pass over D reads contiguous
 * runs of the inner dim. Threads split the (outer, lane block) tasks; each
 * lane is computed the same way whatever the thread count.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backends/ref/nditer.h"
#include "backends/ref/ref.h"
#include "backends/registry.h"
#include "runtime/error.h"

#define LANES 64           /* inner lanes per block (inner > 1) */
#define MATH_GRAIN 4096    /* elements with an exp per thread before a second pays */
#define CHEAP_GRAIN 32768  /* relu_bwd: memory bound */

typedef struct sm_geom {
    int64_t outer, D, inner;
    int64_t nblk; /* lane blocks per outer index */
} sm_geom;

/* Checks n_in inputs and the output: float32, one shape. */
static loom_status check_call(const loom__kcall *call, int n_in)
{
    const char *name = loom__op_name(call->op);
    if (call->n_in != n_in)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: expected %d inputs, got %d", name, n_in, call->n_in);
    for (int i = 0; i <= n_in; i++) {
        const loom__tview *v = i < n_in ? &call->in[i] : &call->out;
        if (v->dtype != LOOM_FLOAT32)
            return loom__set_error(LOOM_ERR_DTYPE, "%s: the ref backend supports float32 only, got %s", name,
                                   loom_dtype_name(v->dtype));
        bool same = v->ndim == call->out.ndim;
        for (int d = 0; same && d < v->ndim; d++) same = v->shape[d] == call->out.shape[d];
        if (!same) {
            char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
            return loom__set_error(LOOM_ERR_SHAPE, "%s: input %d has shape %s, expected the output's %s", name, i,
                                   loom__fmt_shape(s1, sizeof s1, v->ndim, v->shape),
                                   loom__fmt_shape(s2, sizeof s2, call->out.ndim, call->out.shape));
        }
    }
    return LOOM_OK;
}

static loom_status make_geom(const loom__kcall *call, int n_in, sm_geom *g)
{
    loom_status st = check_call(call, n_in);
    if (st != LOOM_OK) return st;
    const loom__tview *v = &call->out;
    int dim = call->attrs->axis.dim;
    if (dim < 0) dim += v->ndim;
    if (v->ndim == 0 && (dim == 0 || dim == -1)) { /* a scalar: one lane of one value */
        g->outer = g->D = g->inner = g->nblk = 1;
        return LOOM_OK;
    }
    if (dim < 0 || dim >= v->ndim)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: dim %d is out of range for %d dims",
                               loom__op_name(call->op), call->attrs->axis.dim, v->ndim);
    g->outer = g->inner = 1;
    for (int d = 0; d < dim; d++) g->outer *= v->shape[d];
    for (int d = dim + 1; d < v->ndim; d++) g->inner *= v->shape[d];
    g->D = v->shape[dim];
    g->nblk = g->inner == 1 ? 1 : (g->inner + LANES - 1) / LANES;
    return LOOM_OK;
}

/* ---- forward ------------------------------------------------------------ */

/* One contiguous row of D values. */
static void softmax_row(const float *restrict x, float *restrict y, int64_t D, bool log_sm)
{
    float m = -INFINITY;
    for (int64_t i = 0; i < D; i++) m = x[i] > m ? x[i] : m;
    double s = 0.0;
    if (log_sm) {
        for (int64_t i = 0; i < D; i++) s += expf(x[i] - m);
        const float ls = (float)log(s);
        for (int64_t i = 0; i < D; i++) y[i] = (x[i] - m) - ls;
    } else {
        for (int64_t i = 0; i < D; i++) {
            const float e = expf(x[i] - m);
            y[i] = e;
            s += e;
        }
        const float r = (float)(1.0 / s);
        for (int64_t i = 0; i < D; i++) y[i] *= r;
    }
}

/* Lanes [j0, j0 + n) of one outer slab (x, y point at the slab). */
static void softmax_lanes(const float *x, float *y, int64_t D, int64_t inner, int64_t j0, int64_t n, bool log_sm)
{
    float m[LANES];
    double s[LANES];
    for (int64_t j = 0; j < n; j++) {
        m[j] = -INFINITY;
        s[j] = 0.0;
    }
    for (int64_t d = 0; d < D; d++) {
        const float *xr = x + d * inner + j0;
        for (int64_t j = 0; j < n; j++) m[j] = xr[j] > m[j] ? xr[j] : m[j];
    }
    for (int64_t d = 0; d < D; d++) {
        const float *xr = x + d * inner + j0;
        float *yr = y + d * inner + j0;
        for (int64_t j = 0; j < n; j++) {
            const float e = expf(xr[j] - m[j]);
            if (!log_sm) yr[j] = e;
            s[j] += e;
        }
    }
    if (log_sm) {
        float ls[LANES];
        for (int64_t j = 0; j < n; j++) ls[j] = (float)log(s[j]);
        for (int64_t d = 0; d < D; d++) {
            const float *xr = x + d * inner + j0;
            float *yr = y + d * inner + j0;
            for (int64_t j = 0; j < n; j++) yr[j] = (xr[j] - m[j]) - ls[j];
        }
    } else {
        float r[LANES];
        for (int64_t j = 0; j < n; j++) r[j] = (float)(1.0 / s[j]);
        for (int64_t d = 0; d < D; d++) {
            float *yr = y + d * inner + j0;
            for (int64_t j = 0; j < n; j++) yr[j] *= r[j];
        }
    }
}

/* ---- backward ----------------------------------------------------------- */

/* One contiguous row: dx from y and dy. */
static void softmax_bwd_row(const float *restrict y, const float *restrict dy, float *restrict dx, int64_t D,
                            bool log_sm)
{
    double s = 0.0;
    if (log_sm) {
        for (int64_t i = 0; i < D; i++) s += dy[i];
        const float sf = (float)s;
        for (int64_t i = 0; i < D; i++) dx[i] = dy[i] - expf(y[i]) * sf;
    } else {
        for (int64_t i = 0; i < D; i++) s += (double)dy[i] * y[i];
        const float sf = (float)s;
        for (int64_t i = 0; i < D; i++) dx[i] = y[i] * (dy[i] - sf);
    }
}

static void softmax_bwd_lanes(const float *y, const float *dy, float *dx, int64_t D, int64_t inner, int64_t j0,
                              int64_t n, bool log_sm)
{
    double s[LANES];
    float sf[LANES];
    for (int64_t j = 0; j < n; j++) s[j] = 0.0;
    for (int64_t d = 0; d < D; d++) {
        const float *yr = y + d * inner + j0, *dyr = dy + d * inner + j0;
        if (log_sm)
            for (int64_t j = 0; j < n; j++) s[j] += dyr[j];
        else
            for (int64_t j = 0; j < n; j++) s[j] += (double)dyr[j] * yr[j];
    }
    for (int64_t j = 0; j < n; j++) sf[j] = (float)s[j];
    for (int64_t d = 0; d < D; d++) {
        const float *yr = y + d * inner + j0, *dyr = dy + d * inner + j0;
        float *dxr = dx + d * inner + j0;
        if (log_sm)
            for (int64_t j = 0; j < n; j++) dxr[j] = dyr[j] - expf(yr[j]) * sf[j];
        else
            for (int64_t j = 0; j < n; j++) dxr[j] = yr[j] * (dyr[j] - sf[j]);
    }
}

/* ---- drivers ------------------------------------------------------------ */

/* Tasks [t0, t1) of outer * nblk: a row (inner == 1) or a lane block. */
static void run_tasks(const sm_geom *g, const float *a, const float *b, float *out, bool bwd, bool log_sm,
                      int64_t t0, int64_t t1)
{
    const int64_t slab = g->D * g->inner;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t o = t / g->nblk, blk = t % g->nblk;
        const int64_t off = o * slab;
        if (g->inner == 1) {
            if (bwd)
                softmax_bwd_row(a + off, b + off, out + off, g->D, log_sm);
            else
                softmax_row(a + off, out + off, g->D, log_sm);
            continue;
        }
        const int64_t j0 = blk * LANES, n = g->inner - j0 < LANES ? g->inner - j0 : LANES;
        if (bwd)
            softmax_bwd_lanes(a + off, b + off, out + off, g->D, g->inner, j0, n, log_sm);
        else
            softmax_lanes(a + off, out + off, g->D, g->inner, j0, n, log_sm);
    }
}

static loom_status run(const loom__kcall *call, int n_in, bool bwd, bool log_sm)
{
    sm_geom g = {0}; /* set by make_geom; zeroed for gcc without OpenMP, which warns */
    loom_status st = make_geom(call, n_in, &g);
    if (st != LOOM_OK) return st;
    const float *a = call->in[0].data, *b = n_in > 1 ? call->in[1].data : NULL;
    float *out = call->out.data;
    const int64_t tasks = g.outer * g.nblk;
    int nt = loom__ref_team(call->nthreads, g.outer * g.D * g.inner, MATH_GRAIN);
    if (nt > tasks) nt = (int)tasks;
    if (nt <= 1) {
        run_tasks(&g, a, b, out, bwd, log_sm, 0, tasks);
        return LOOM_OK;
    }
    LOOM__OMP_TEAM(nt,
    {
        int64_t t0, t1;
        loom__nditer_part(tasks, loom__omp_thread(), loom__omp_nthreads(), 1, &t0, &t1);
        run_tasks(&g, a, b, out, bwd, log_sm, t0, t1);
    });
    return LOOM_OK;
}

/* SOFTMAX, LOG_SOFTMAX: in[0] x; out y. */
loom_status loom__ref_softmax(const loom__kcall *call)
{
    return run(call, 1, false, call->op == LOOM_OP_LOG_SOFTMAX);
}

/* SOFTMAX_BWD, LOG_SOFTMAX_BWD: in[0] y, in[1] dy; out dx. */
loom_status loom__ref_softmax_bwd(const loom__kcall *call)
{
    return run(call, 2, true, call->op == LOOM_OP_LOG_SOFTMAX_BWD);
}

/* ---- relu backward ------------------------------------------------------ */

static void relu_bwd_range(const float *restrict y, const float *restrict dy, float *restrict dx, int64_t i0,
                           int64_t i1)
{
    for (int64_t i = i0; i < i1; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

/* RELU_BWD: in[0] y, in[1] dy; out dx = y > 0 ? dy : 0. */
loom_status loom__ref_relu_bwd(const loom__kcall *call)
{
    loom_status st = check_call(call, 2);
    if (st != LOOM_OK) return st;
    const float *y = call->in[0].data, *dy = call->in[1].data;
    float *dx = call->out.data;
    const int64_t n = loom__tview_numel(&call->out);
    const int nt = loom__ref_team(call->nthreads, n, CHEAP_GRAIN);
    if (nt <= 1) {
        relu_bwd_range(y, dy, dx, 0, n);
        return LOOM_OK;
    }
    LOOM__OMP_TEAM(nt,
    {
        int64_t i0, i1;
        loom__nditer_part(n, loom__omp_thread(), loom__omp_nthreads(), 16, &i0, &i1);
        relu_bwd_range(y, dy, dx, i0, i1);
    });
    return LOOM_OK;
}
