/*
 * tests/check_cnn_kernels.c - the portable C backend's CNN kernels
 * (backends/ref/conv.c, pool.c, norm.c, softmax.c), called directly through
 * a loom__kcall built here, without ops/ or a context.
 *
 * Forward kernels are compared with plain loops written here in double
 * (the 7-nested-loop convolution, PyTorch's pooling window and divisor
 * rules, two-pass batch statistics, a double softmax). Backward kernels are
 * checked three ways: against plain loops of their formulas, through the
 * adjoint identity for the linear ones (<dy, conv(x, w)> == <conv_bwd_data(dy,
 * w), x> == <conv_bwd_weight(x, dy), w>, and <dy, avg_pool(x)> ==
 * <avg_pool_bwd(dy), x>), and through central finite differences of the
 * forward kernels along a random direction for the nonlinear ones (max
 * pool, batch norm, softmax). Every kernel runs with 1 and 2 threads, with
 * the output buffer pre-filled with NaN (kernels must not assume it is
 * zeroed); the two runs must agree within 1e-5 (batch statistics exactly).
 * Some shapes are large enough that the kernels actually split the work.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/kernel.h"
#include "backends/ref/ref.h"
#include "tests/check_suites.h"

/* ---- helpers ---------------------------------------------------------------- */

typedef loom_status (*kernel_fn)(const loom__kcall *call);

/* An assertion for loops over elements: Check's ck_assert_msg records every
 * passing assertion (a write to its log), which costs seconds over a few
 * million elements; this calls into Check only on failure. */
#define CHECK(cond, ...)                          \
    do {                                          \
        if (!(cond)) ck_abort_msg(__VA_ARGS__);   \
    } while (0)

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 2654435761u + 1; }
static double unit(void) /* in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(int64_t)((rng_state >> 40) & 0xFFFFFF) / (1 << 23) - 1.0;
}

static float *rand_buf(int64_t n, double scale, double offset)
{
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ck_assert(p);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(offset + scale * unit());
    return p;
}

static double *zeros_d(int64_t n)
{
    double *p = calloc((size_t)(n ? n : 1), sizeof(double));
    ck_assert(p);
    return p;
}

static float *nan_buf(int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ck_assert(p);
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

/* A contiguous float32 view. */
static loom__tview tv(const float *data, int ndim, const int64_t *shape)
{
    loom__tview v;
    memset(&v, 0, sizeof v);
    ck_assert(ndim >= 0 && ndim <= LOOM_MAX_DIMS);
    v.data = (void *)data;
    v.dtype = LOOM_FLOAT32;
    v.ndim = ndim;
    for (int d = 0; d < LOOM_MAX_DIMS; d++) v.shape[d] = d < ndim ? shape[d] : 1;
    int64_t s = 1;
    for (int d = LOOM_MAX_DIMS - 1; d >= 0; d--) {
        v.strides[d] = d < ndim ? s : 0;
        s *= d < ndim ? v.shape[d] : 1;
    }
    return v;
}
#define TV(data, ...) tv((data), LOOM__NARGS(__VA_ARGS__), (const int64_t[]){__VA_ARGS__})

/* Runs fn on in[0..n_in-1] into a fresh NaN-filled buffer shaped like
 * `out` (whose data is ignored) and returns the buffer. */
static float *run_kernel(kernel_fn fn, loom__op op, const loom__attrs *at, int n_in, const loom__tview *in,
                         loom__tview out, int nthreads)
{
    const int64_t n = loom__tview_numel(&out);
    float *buf = nan_buf(n);
    out.data = buf;
    loom__kcall call = {.op = op, .attrs = at, .n_in = n_in, .in = in, .out = out, .nthreads = nthreads};
    loom_status st = fn(&call);
    ck_assert_msg(st == LOOM_OK, "kernel for op %d failed: %s (%s)", (int)op, loom_status_str(st),
                  loom_last_error());
    return buf;
}

/* |got - want| <= rtol * scale + atol for each element; scale[i] is the
 * sum of the absolute terms of element i (NULL: |want|). */
static void check_close(const float *got, const double *want, const double *scale, int64_t n, double rtol,
                        double atol, const char *what, int line)
{
    for (int64_t i = 0; i < n; i++) {
        const double s = scale ? scale[i] : fabs(want[i]);
        CHECK(fabs((double)got[i] - want[i]) <= rtol * s + atol,
                      "line %d (%s): element %lld is %.9g, expected %.9g (scale %.3g)", line, what, (long long)i,
                      (double)got[i], want[i], s);
    }
}

/* The 1-thread and 2-thread results agree within rtol, relative to the
 * larger magnitude or, when given, to scale[i] (the sum of the absolute
 * terms: results that cancel may differ by reassociation), plus a small
 * absolute floor. */
static void check_same(const float *a, const float *b, const double *scale, int64_t n, double rtol, const char *what,
                       int line)
{
    for (int64_t i = 0; i < n; i++) {
        const double x = a[i], y = b[i];
        if (isnan(x) && isnan(y)) continue;
        const double s = scale ? scale[i] : fmax(fabs(x), fabs(y));
        CHECK(fabs(x - y) <= rtol * s + 1e-6, "line %d (%s): element %lld: %.9g with 1 thread, %.9g with 2", line,
              what, (long long)i, x, y);
    }
}

/* Runs the kernel with 1 and 2 threads, checks they agree (see check_same),
 * frees the second. */
static float *run_both(kernel_fn fn, loom__op op, const loom__attrs *at, int n_in, const loom__tview *in,
                       loom__tview out, const double *scale, double rtol, const char *what, int line)
{
    float *r1 = run_kernel(fn, op, at, n_in, in, out, 1);
    float *r2 = run_kernel(fn, op, at, n_in, in, out, 2);
    check_same(r1, r2, scale, loom__tview_numel(&out), rtol, what, line);
    free(r2);
    return r1;
}

static double dot_fd(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double dot_abs(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += fabs((double)a[i] * b[i]);
    return s;
}

/* ---- convolution ------------------------------------------------------------ */

typedef struct conv_cfg {
    int N, C, H, W, O, KH, KW, sh, sw, ph, pw, dh, dw, g;
    bool bias, relu;
} conv_cfg;

static const conv_cfg conv_cfgs[] = {
    /* N  C   H   W   O  KH KW sh sw ph pw dh dw  g  bias   relu */
    {1, 3, 7, 9, 4, 3, 3, 1, 1, 0, 0, 1, 1, 1, false, false},
    {5, 4, 11, 10, 6, 3, 2, 2, 3, 1, 0, 1, 1, 1, true, true},     /* stride 2/3, odd sizes */
    {2, 4, 9, 9, 6, 3, 3, 1, 1, 2, 2, 2, 2, 2, true, false},      /* dilation 2, groups 2 */
    {5, 6, 8, 7, 6, 3, 3, 2, 2, 1, 1, 1, 1, 6, true, true},       /* depthwise */
    {3, 6, 5, 5, 12, 3, 3, 1, 1, 1, 1, 1, 1, 6, false, false},    /* depthwise, multiplier 2 */
    {4, 8, 6, 5, 5, 1, 1, 1, 1, 0, 0, 1, 1, 1, true, true},       /* 1x1 direct */
    {2, 8, 6, 6, 4, 1, 1, 1, 1, 0, 0, 1, 1, 2, false, false},     /* 1x1 direct, groups 2 */
    {3, 4, 9, 8, 4, 1, 1, 2, 2, 0, 0, 1, 1, 1, true, false},      /* 1x1 stride 2 */
    {1, 3, 5, 5, 2, 5, 5, 3, 3, 2, 2, 1, 1, 1, true, true},       /* window over the whole input */
    {2, 3, 10, 9, 4, 2, 3, 3, 2, 1, 2, 2, 1, 1, false, true},     /* asymmetric everything */
    {3, 16, 26, 26, 32, 3, 3, 1, 1, 0, 0, 1, 1, 1, true, true},   /* SimpleCNN-like, image-parallel */
    {1, 16, 20, 20, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, false},  /* one image: SGEMM's threads */
    {2, 64, 50, 50, 4, 3, 3, 1, 1, 0, 0, 1, 1, 1, false, false},  /* column matrix in row blocks */
    {2, 32, 47, 23, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, true},    /* row blocks 24 and 23 */
    {5, 8, 12, 12, 8, 3, 3, 1, 1, 1, 1, 1, 1, 4, true, true},     /* groups 4, padded, parallel */
};
#define NCONV ((int)(sizeof conv_cfgs / sizeof conv_cfgs[0]))

static int conv_out(int in, int k, int s, int p, int d) { return (in + 2 * p - d * (k - 1) - 1) / s + 1; }

static loom__attrs conv_attrs(const conv_cfg *c, bool relu)
{
    loom__attrs a;
    memset(&a, 0, sizeof a);
    a.conv.stride[0] = c->sh, a.conv.stride[1] = c->sw;
    a.conv.pad[0] = c->ph, a.conv.pad[1] = c->pw;
    a.conv.dilation[0] = c->dh, a.conv.dilation[1] = c->dw;
    a.conv.groups = c->g;
    a.conv.relu = relu;
    return a;
}

/* Calls body for every (n, o, oh, ow, ci, kh, kw) term with the input pixel
 * inside the image; xi, wi, yi are the flat indices of x, w, y. */
#define CONV_TERMS(c, OH, OW, body)                                                                      \
    do {                                                                                                \
        const int Cg_ = (c)->C / (c)->g, Og_ = (c)->O / (c)->g;                                         \
        for (int n = 0; n < (c)->N; n++)                                                                \
            for (int o = 0; o < (c)->O; o++)                                                            \
                for (int oh = 0; oh < (OH); oh++)                                                       \
                    for (int ow = 0; ow < (OW); ow++)                                                   \
                        for (int ci = 0; ci < Cg_; ci++)                                                \
                            for (int kh = 0; kh < (c)->KH; kh++)                                        \
                                for (int kw = 0; kw < (c)->KW; kw++) {                                  \
                                    const int ih = oh * (c)->sh - (c)->ph + kh * (c)->dh;               \
                                    const int iw = ow * (c)->sw - (c)->pw + kw * (c)->dw;               \
                                    if (ih < 0 || ih >= (c)->H || iw < 0 || iw >= (c)->W) continue;     \
                                    const int ch = (o / Og_) * Cg_ + ci;                                \
                                    const int64_t xi = (((int64_t)n * (c)->C + ch) * (c)->H + ih) * (c)->W + iw; \
                                    const int64_t wi = (((int64_t)o * Cg_ + ci) * (c)->KH + kh) * (c)->KW + kw; \
                                    const int64_t yi = (((int64_t)n * (c)->O + o) * (OH) + oh) * (OW) + ow; \
                                    body;                                                               \
                                }                                                               \
    } while (0)

START_TEST(test_conv)
{
    const conv_cfg *c = &conv_cfgs[_i];
    rng_seed(100 + (uint64_t)_i);
    const int OH = conv_out(c->H, c->KH, c->sh, c->ph, c->dh), OW = conv_out(c->W, c->KW, c->sw, c->pw, c->dw);
    const int Cg = c->C / c->g;
    const int64_t nx = (int64_t)c->N * c->C * c->H * c->W, nw = (int64_t)c->O * Cg * c->KH * c->KW;
    const int64_t ny = (int64_t)c->N * c->O * OH * OW;
    float *x = rand_buf(nx, 1, 0), *w = rand_buf(nw, 1, 0), *b = rand_buf(c->O, 1, 0), *dy = rand_buf(ny, 1, 0);
    const loom__tview vx = TV(x, c->N, c->C, c->H, c->W), vw = TV(w, c->O, Cg, c->KH, c->KW);
    const loom__tview vb = TV(b, c->O), vy = TV(NULL, c->N, c->O, OH, OW), vdy = TV(dy, c->N, c->O, OH, OW);

    /* Plain loops, in double. */
    double *y_ref = zeros_d(ny), *y_abs = zeros_d(ny), *dx_ref = zeros_d(nx), *dx_abs = zeros_d(nx);
    double *dw_ref = zeros_d(nw), *dw_abs = zeros_d(nw);
    CONV_TERMS(c, OH, OW, {
        y_ref[yi] += (double)x[xi] * w[wi];
        y_abs[yi] += fabs((double)x[xi] * w[wi]);
        dx_ref[xi] += (double)dy[yi] * w[wi];
        dx_abs[xi] += fabs((double)dy[yi] * w[wi]);
        dw_ref[wi] += (double)dy[yi] * x[xi];
        dw_abs[wi] += fabs((double)dy[yi] * x[xi]);
    });
    double *y_full = zeros_d(ny);
    for (int64_t i = 0; i < ny; i++) {
        double v = y_ref[i] + (c->bias ? b[(i / ((int64_t)OH * OW)) % c->O] : 0.0);
        y_full[i] = c->relu && v < 0 ? 0.0 : v;
        y_abs[i] += c->bias ? fabs(b[(i / ((int64_t)OH * OW)) % c->O]) : 0.0;
    }

    /* Forward with the configured bias / relu. */
    loom__attrs at = conv_attrs(c, c->relu);
    loom__tview in3[3] = {vx, vw, vb};
    float *y = run_both(loom__ref_conv2d, LOOM_OP_CONV2D, &at, c->bias ? 3 : 2, in3, vy, y_abs, 1e-5, "conv2d", __LINE__);
    check_close(y, y_full, y_abs, ny, 1e-5, 1e-6, "conv2d vs loops", __LINE__);

    /* Backward data and weight. */
    loom__tview ind[2] = {vdy, vw};
    float *dx = run_both(loom__ref_conv2d_bwd_data, LOOM_OP_CONV2D_BWD_DATA, &at, 2, ind, vx, dx_abs, 1e-5, "bwd_data",
                         __LINE__);
    check_close(dx, dx_ref, dx_abs, nx, 1e-5, 1e-6, "bwd_data vs loops", __LINE__);
    loom__tview inw[2] = {vx, vdy};
    float *dw = run_both(loom__ref_conv2d_bwd_weight, LOOM_OP_CONV2D_BWD_WEIGHT, &at, 2, inw, vw, dw_abs, 1e-5,
                         "bwd_weight", __LINE__);
    check_close(dw, dw_ref, dw_abs, nw, 1e-5, 1e-6, "bwd_weight vs loops", __LINE__);

    /* Adjoint identities on the plain convolution (no bias, no relu). */
    loom__attrs lin = conv_attrs(c, false);
    float *y0 = run_kernel(loom__ref_conv2d, LOOM_OP_CONV2D, &lin, 2, in3, vy, 2);
    const double a = dot_fd(dy, y0, ny), bx = dot_fd(dx, x, nx), bw = dot_fd(dw, w, nw);
    double scale = 0;
    for (int64_t i = 0; i < ny; i++) scale += fabs((double)dy[i]) * y_abs[i];
    ck_assert_msg(fabs(a - bx) <= 1e-5 * scale, "<dy, conv(x)> = %.12g but <bwd_data(dy), x> = %.12g (scale %g)", a,
                  bx, scale);
    ck_assert_msg(fabs(a - bw) <= 1e-5 * scale, "<dy, conv(x)> = %.12g but <bwd_weight(x, dy), w> = %.12g", a, bw);

    free(y0), free(y), free(dx), free(dw);
    free(x), free(w), free(b), free(dy);
    free(y_ref), free(y_abs), free(y_full), free(dx_ref), free(dx_abs), free(dw_ref), free(dw_abs);
}
END_TEST

/* A wrong dtype is an error with a message, not a crash. */
START_TEST(test_errors)
{
    float x[2 * 3 * 4 * 4] = {0}, w[2 * 3 * 3 * 3] = {0}, y[2 * 2 * 2 * 2];
    loom__attrs at;
    memset(&at, 0, sizeof at);
    at.conv.stride[0] = at.conv.stride[1] = 1;
    at.conv.dilation[0] = at.conv.dilation[1] = 1;
    at.conv.groups = 1;
    loom__tview in[2] = {TV(x, 2, 3, 4, 4), TV(w, 2, 3, 3, 3)};
    loom__tview out = TV(y, 2, 2, 2, 2);
    in[1].dtype = LOOM_INT64;
    loom__kcall call = {.op = LOOM_OP_CONV2D, .attrs = &at, .n_in = 2, .in = in, .out = out, .nthreads = 1};
    ck_assert_int_eq(loom__ref_conv2d(&call), LOOM_ERR_DTYPE);
    ck_assert_msg(strstr(loom_last_error(), "float32") && strstr(loom_last_error(), "conv2d"), "message: %s",
                  loom_last_error());
    /* A wrong output size. */
    in[1].dtype = LOOM_FLOAT32;
    call.out = TV(y, 2, 2, 3, 2);
    ck_assert_int_eq(loom__ref_conv2d(&call), LOOM_ERR_SHAPE);

    loom__tview sv = TV(x, 2, 3, 4, 4);
    sv.dtype = LOOM_BOOL;
    loom__kcall sm = {.op = LOOM_OP_SOFTMAX, .attrs = &at, .n_in = 1, .in = &sv, .out = TV(y, 2, 3, 4, 4)};
    ck_assert_int_eq(loom__ref_softmax(&sm), LOOM_ERR_DTYPE);
    loom__kcall bn = {.op = LOOM_OP_BN_STATS, .attrs = &at, .n_in = 1, .in = &sv, .out = TV(y, 2, 3)};
    ck_assert_int_eq(loom__ref_bn_stats(&bn), LOOM_ERR_DTYPE);
    loom__kcall mp = {.op = LOOM_OP_MAX_POOL2D, .attrs = &at, .n_in = 1, .in = &sv, .out = TV(y, 2, 3, 2, 2)};
    ck_assert_int_eq(loom__ref_max_pool2d(&mp), LOOM_ERR_DTYPE);
}
END_TEST

/* ---- pooling ---------------------------------------------------------------- */

typedef struct pool_cfg {
    int N, C, H, W, kh, kw, sh, sw, ph, pw;
    bool ceil_mode, include_pad, adaptive;
    int OH, OW; /* adaptive only */
} pool_cfg;

static const pool_cfg pool_cfgs[] = {
    {2, 3, 7, 7, 3, 3, 2, 2, 1, 1, false, true, false, 0, 0},
    {2, 3, 8, 8, 3, 3, 2, 2, 1, 1, true, true, false, 0, 0},   /* ceil: 5 x 5 */
    {2, 3, 8, 8, 3, 3, 2, 2, 1, 1, true, false, false, 0, 0},
    {1, 2, 5, 6, 2, 3, 3, 2, 0, 1, true, false, false, 0, 0},  /* ceil on W only */
    {3, 2, 5, 5, 2, 2, 2, 2, 1, 1, true, true, false, 0, 0},   /* ceil with the last window dropped */
    {2, 2, 6, 5, 3, 3, 1, 1, 1, 1, false, true, false, 0, 0},  /* include_pad */
    {2, 2, 6, 5, 3, 3, 1, 1, 1, 1, false, false, false, 0, 0},
    {1, 3, 9, 7, 4, 2, 3, 1, 2, 1, true, true, false, 0, 0},
    {5, 32, 24, 24, 2, 2, 2, 2, 0, 0, false, true, false, 0, 0}, /* SimpleCNN's, parallel */
    {2, 3, 7, 5, 0, 0, 0, 0, 0, 0, false, false, true, 3, 2},   /* adaptive 7->3, 5->2 */
    {2, 3, 6, 6, 0, 0, 0, 0, 0, 0, false, false, true, 4, 4},
    {1, 2, 2, 3, 0, 0, 0, 0, 0, 0, false, false, true, 3, 5},   /* adaptive upsampling */
    {4, 16, 33, 31, 0, 0, 0, 0, 0, 0, false, false, true, 7, 5}, /* adaptive, parallel */
};
#define NPOOL ((int)(sizeof pool_cfgs / sizeof pool_cfgs[0]))

/* PyTorch's output size (pooling_output_shape). */
static int pool_out(int in, int k, int s, int p, bool ceil_mode)
{
    int num = in + 2 * p - k + (ceil_mode ? s - 1 : 0);
    int out = num / s + 1;
    if (ceil_mode && (out - 1) * s >= in + p) out--;
    return out;
}

static void pool_shape(const pool_cfg *c, int *OH, int *OW)
{
    if (c->adaptive) {
        *OH = c->OH, *OW = c->OW;
    } else {
        *OH = pool_out(c->H, c->kh, c->sh, c->ph, c->ceil_mode);
        *OW = pool_out(c->W, c->kw, c->sw, c->pw, c->ceil_mode);
    }
}

static loom__attrs pool_attrs(const pool_cfg *c)
{
    loom__attrs a;
    memset(&a, 0, sizeof a);
    a.pool.kernel[0] = c->kh, a.pool.kernel[1] = c->kw;
    a.pool.stride[0] = c->sh, a.pool.stride[1] = c->sw;
    a.pool.pad[0] = c->ph, a.pool.pad[1] = c->pw;
    a.pool.ceil_mode = c->ceil_mode;
    a.pool.count_include_pad = c->include_pad;
    a.pool.adaptive = c->adaptive;
    return a;
}

/* Window of output (oh, ow): clipped [h0, h1) x [w0, w1) and the divisor,
 * as PyTorch's avg_pool2d and adaptive_avg_pool2d compute them. */
static void ref_window(const pool_cfg *c, int OH, int OW, int oh, int ow, int *h0, int *h1, int *w0, int *w1,
                       int *div)
{
    if (c->adaptive) {
        *h0 = (int)floor((double)oh * c->H / OH), *h1 = (int)ceil((double)(oh + 1) * c->H / OH);
        *w0 = (int)floor((double)ow * c->W / OW), *w1 = (int)ceil((double)(ow + 1) * c->W / OW);
        *div = (*h1 - *h0) * (*w1 - *w0);
        return;
    }
    int hs = oh * c->sh - c->ph, ws = ow * c->sw - c->pw;
    int he = hs + c->kh < c->H + c->ph ? hs + c->kh : c->H + c->ph;
    int we = ws + c->kw < c->W + c->pw ? ws + c->kw : c->W + c->pw;
    const int pool_size = (he - hs) * (we - ws);
    hs = hs > 0 ? hs : 0, ws = ws > 0 ? ws : 0;
    he = he < c->H ? he : c->H, we = we < c->W ? we : c->W;
    *h0 = hs, *h1 = he, *w0 = ws, *w1 = we;
    *div = c->include_pad ? pool_size : (he - hs) * (we - ws);
}

/* The first maximum of the window (NaN wins), as a flat plane index. */
static int ref_argmax(const float *xp, int W, int h0, int h1, int w0, int w1)
{
    int best = -1;
    for (int h = h0; h < h1; h++)
        for (int w = w0; w < w1; w++) {
            const float v = xp[h * W + w];
            if (best >= 0 && isnan(xp[best])) return best;
            if (best < 0 || v > xp[best] || isnan(v)) best = h * W + w;
        }
    return best;
}

/* Forward (max and avg) and backward against the window rules. */
static void pool_refs(const pool_cfg *c, const float *x, const float *dy, int OH, int OW, double *ymax,
                      double *yavg, double *dxmax, double *dxavg)
{
    const int64_t HW = (int64_t)c->H * c->W;
    for (int64_t p = 0; p < (int64_t)c->N * c->C; p++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                int h0, h1, w0, w1, div;
                ref_window(c, OH, OW, oh, ow, &h0, &h1, &w0, &w1, &div);
                const int64_t yi = (p * OH + oh) * OW + ow;
                const int am = ref_argmax(x + p * HW, c->W, h0, h1, w0, w1);
                ymax[yi] = x[p * HW + am];
                dxmax[p * HW + am] += dy[yi];
                double s = 0;
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++) {
                        s += x[p * HW + h * c->W + w];
                        dxavg[p * HW + h * c->W + w] += dy[yi] / div;
                    }
                yavg[yi] = s / div;
            }
}

START_TEST(test_pool)
{
    const pool_cfg *c = &pool_cfgs[_i];
    rng_seed(200 + (uint64_t)_i);
    int OH, OW;
    pool_shape(c, &OH, &OW);
    const int64_t nx = (int64_t)c->N * c->C * c->H * c->W, ny = (int64_t)c->N * c->C * OH * OW;
    float *x = rand_buf(nx, 1, 0), *dy = rand_buf(ny, 1, 0);
    double *ymax = zeros_d(ny), *yavg = zeros_d(ny), *dxmax = zeros_d(nx), *dxavg = zeros_d(nx);
    pool_refs(c, x, dy, OH, OW, ymax, yavg, dxmax, dxavg);
    const loom__attrs at = pool_attrs(c);
    const loom__tview vx = TV(x, c->N, c->C, c->H, c->W), vy = TV(NULL, c->N, c->C, OH, OW);
    const loom__tview vdy = TV(dy, c->N, c->C, OH, OW);

    float *y = run_both(loom__ref_max_pool2d, LOOM_OP_MAX_POOL2D, &at, 1, &vx, vy, NULL, 0, "max_pool", __LINE__);
    check_close(y, ymax, NULL, ny, 0, 0, "max_pool vs loops", __LINE__);
    free(y);
    loom__tview inm[2] = {vdy, vx};
    float *dx = run_both(loom__ref_max_pool2d_bwd, LOOM_OP_MAX_POOL2D_BWD, &at, 2, inm, vx, NULL, 1e-6, "max_pool_bwd",
                         __LINE__);
    check_close(dx, dxmax, NULL, nx, 1e-6, 1e-6, "max_pool_bwd vs loops", __LINE__);
    free(dx);

    y = run_both(loom__ref_avg_pool2d, LOOM_OP_AVG_POOL2D, &at, 1, &vx, vy, NULL, 1e-6, "avg_pool", __LINE__);
    check_close(y, yavg, NULL, ny, 1e-5, 1e-6, "avg_pool vs loops", __LINE__);
    dx = run_both(loom__ref_avg_pool2d_bwd, LOOM_OP_AVG_POOL2D_BWD, &at, 1, &vdy, vx, NULL, 1e-6, "avg_pool_bwd", __LINE__);
    check_close(dx, dxavg, NULL, nx, 1e-5, 1e-6, "avg_pool_bwd vs loops", __LINE__);
    /* Adjoint: <dy, avg(x)> == <avg_bwd(dy), x>. */
    const double a = dot_fd(dy, y, ny), b = dot_fd(dx, x, nx);
    ck_assert_msg(fabs(a - b) <= 1e-5 * dot_abs(dx, x, nx) + 1e-9, "<dy, avg(x)> = %.12g, <avg_bwd(dy), x> = %.12g",
                  a, b);
    free(y), free(dx);
    free(x), free(dy), free(ymax), free(yavg), free(dxmax), free(dxavg);
}
END_TEST

/* Ties go to the first maximum in row-major window order; NaN wins. */
START_TEST(test_max_pool_ties_nan)
{
    /* 1 x 1 x 4 x 4, 2x2 windows stride 2: ties inside every window. */
    float x[16] = {1, 3, 3, 0,  /* */
                   3, 2, 1, 3,  /* */
                   5, 5, NAN, 1, /* */
                   5, 4, 9, NAN};
    float dy[4] = {10, 20, 30, 40};
    pool_cfg c = {1, 1, 4, 4, 2, 2, 2, 2, 0, 0, false, false, false, 0, 0};
    const loom__attrs at = pool_attrs(&c);
    const loom__tview vx = TV(x, 1, 1, 4, 4), vdy = TV(dy, 1, 1, 2, 2);
    float *y = run_kernel(loom__ref_max_pool2d, LOOM_OP_MAX_POOL2D, &at, 1, &vx, vdy, 1);
    ck_assert(y[0] == 3 && y[1] == 3 && y[2] == 5 && isnan(y[3]));
    loom__tview in[2] = {vdy, vx};
    float *dx = run_kernel(loom__ref_max_pool2d_bwd, LOOM_OP_MAX_POOL2D_BWD, &at, 2, in, vx, 1);
    const float want[16] = {0, 10, 20, 0, 0, 0, 0, 0, 30, 0, 40, 0, 0, 0, 0, 0};
    for (int i = 0; i < 16; i++) CHECK(dx[i] == want[i], "dx[%d] = %g, expected %g", i, dx[i], want[i]);
    free(y), free(dx);

    /* The blocked kernel (nChw8c, 8 channels, each a shuffle of the
     * pattern above, some without NaN) gives the plain kernel's bits. */
    {
        enum { C8 = 8, HW = 16 };
        float xp[C8 * HW], dyp[C8 * 4], xb[C8 * HW], dyb[C8 * 4];
        for (int ch = 0; ch < C8; ch++) {
            for (int i = 0; i < HW; i++) xp[ch * HW + i] = x[(i * (2 * ch + 1) + ch) % HW];
            if (ch % 3 == 2)
                for (int i = 0; i < HW; i++) xp[ch * HW + i] = isnan(xp[ch * HW + i]) ? 2.0f : xp[ch * HW + i];
            for (int i = 0; i < 4; i++) dyp[ch * 4 + i] = dy[i] + (float)ch;
        }
        const int64_t dx_dims[4] = {1, C8, 4, 4}, dy_dims[4] = {1, C8, 2, 2};
        loom__layout_from_plain(xp, xb, LOOM__LAYOUT_NCHW8C, dx_dims, 1);
        loom__layout_from_plain(dyp, dyb, LOOM__LAYOUT_NCHW8C, dy_dims, 1);
        loom__tview pxv = TV(xp, 1, C8, 4, 4), pdyv = TV(dyp, 1, C8, 2, 2);
        loom__tview bxv = pxv, bdyv = pdyv;
        bxv.data = xb, bdyv.data = dyb;
        bxv.layout = bdyv.layout = LOOM__LAYOUT_NCHW8C;
        int lay = LOOM__LAYOUT_NCHW8C;
        for (int bwd = 0; bwd < 2; bwd++) {
            loom__tview pin[2] = {pdyv, pxv}, bin[2] = {bdyv, bxv};
            loom__tview pout = bwd ? pxv : pdyv, bout = bwd ? bxv : bdyv;
            const int64_t n = bwd ? C8 * HW : C8 * 4;
            float *pr = nan_buf(n), *br = nan_buf(n), *bp = nan_buf(n);
            pout.data = pr, bout.data = br;
            const loom__op op = bwd ? LOOM_OP_MAX_POOL2D_BWD : LOOM_OP_MAX_POOL2D;
            loom__kcall pc = {.op = op, .attrs = &at, .n_in = bwd ? 2 : 1, .in = bwd ? pin : &pin[1], .out = pout,
                              .nthreads = 1};
            loom__kcall bc = pc;
            bc.in = bwd ? bin : &bin[1];
            bc.out = bout;
            bc.out_layout = &lay;
            ck_assert_int_eq(bwd ? loom__ref_max_pool2d_bwd(&pc) : loom__ref_max_pool2d(&pc), LOOM_OK);
            ck_assert(loom__ref_pool_blocked_ok(&bc));
            ck_assert_int_eq(bwd ? loom__ref_max_pool2d_bwd(&bc) : loom__ref_max_pool2d(&bc), LOOM_OK);
            loom__layout_to_plain(br, bp, LOOM__LAYOUT_NCHW8C, bwd ? dx_dims : dy_dims, 1);
            CHECK(memcmp(pr, bp, sizeof(float) * (size_t)n) == 0, "%s: blocked and plain 2x2 kernels differ",
                  bwd ? "max_pool_bwd" : "max_pool");
            free(pr), free(br), free(bp);
        }
    }

    /* Padding counts as -inf: an all-negative input keeps its values. */
    float xn[9] = {-5, -4, -3, -2, -1, -6, -7, -8, -9};
    pool_cfg cp = {1, 1, 3, 3, 3, 3, 2, 2, 1, 1, false, true, false, 0, 0};
    const loom__attrs ap = pool_attrs(&cp);
    const loom__tview vxn = TV(xn, 1, 1, 3, 3);
    y = run_kernel(loom__ref_max_pool2d, LOOM_OP_MAX_POOL2D, &ap, 1, &vxn, TV(NULL, 1, 1, 2, 2), 1);
    ck_assert(y[0] == -1 && y[1] == -1 && y[2] == -1 && y[3] == -1);
    free(y);
}
END_TEST

/* Every max window (pool_cfgs, with 16 channels, ReLU-like data full of
 * tied zeros and a few NaN) on nChw8c and nChw16c gives bitwise the plain
 * kernel's forward and backward, on 1 and 2 threads: the generic blocked
 * walk (ResNet's 3x3 stride-2 stem pool) and the 2x2 kernels. */
START_TEST(test_max_pool_blocked_windows)
{
    const int layouts[] = {LOOM__LAYOUT_NCHW8C, LOOM__LAYOUT_NCHW16C};
    for (int k = 0; k < NPOOL; k++) {
        pool_cfg c = pool_cfgs[k];
        if (c.adaptive) continue;
        c.C = 16;
        int OH, OW;
        pool_shape(&c, &OH, &OW);
        const int64_t xd[4] = {c.N, c.C, c.H, c.W}, yd[4] = {c.N, c.C, OH, OW};
        const int64_t nx = (int64_t)c.N * c.C * c.H * c.W, ny = (int64_t)c.N * c.C * OH * OW;
        float *x = rand_buf(nx, 1, 0), *dy = rand_buf(ny, 1, 0);
        for (int64_t i = 0; i < nx; i++) x[i] = x[i] < 0 ? 0.0f : roundf(x[i] * 4) / 4; /* ties */
        x[nx / 3] = NAN, x[nx / 2 + 1] = NAN;
        const loom__attrs at = pool_attrs(&c);
        for (int li = 0; li < 2; li++)
            for (int bwd = 0; bwd < 2; bwd++)
                for (int threads = 1; threads <= 2; threads++) {
                    float *xb = nan_buf(nx), *dyb = nan_buf(ny);
                    loom__layout_from_plain(x, xb, layouts[li], xd, 1);
                    loom__layout_from_plain(dy, dyb, layouts[li], yd, 1);
                    const int64_t n = bwd ? nx : ny;
                    float *pr = nan_buf(n), *br = nan_buf(n), *bp = nan_buf(n);
                    loom__tview px = TV(x, c.N, c.C, c.H, c.W), pdy = TV(dy, c.N, c.C, OH, OW);
                    loom__tview bx = px, bdy = pdy;
                    bx.data = xb, bdy.data = dyb;
                    bx.layout = bdy.layout = layouts[li];
                    loom__tview pin[2] = {pdy, px}, bin[2] = {bdy, bx};
                    loom__tview pout = bwd ? px : pdy, bout = bwd ? bx : bdy;
                    pout.data = pr, bout.data = br;
                    int lay = layouts[li];
                    const loom__op op = bwd ? LOOM_OP_MAX_POOL2D_BWD : LOOM_OP_MAX_POOL2D;
                    loom__kcall pc = {.op = op, .attrs = &at, .n_in = bwd ? 2 : 1, .in = bwd ? pin : &pin[1],
                                      .out = pout, .nthreads = threads};
                    loom__kcall bc = pc;
                    bc.in = bwd ? bin : &bin[1];
                    bc.out = bout;
                    bc.out_layout = &lay;
                    ck_assert(loom__ref_pool_blocked_ok(&bc));
                    ck_assert_int_eq(bwd ? loom__ref_max_pool2d_bwd(&pc) : loom__ref_max_pool2d(&pc), LOOM_OK);
                    ck_assert_int_eq(bwd ? loom__ref_max_pool2d_bwd(&bc) : loom__ref_max_pool2d(&bc), LOOM_OK);
                    loom__layout_to_plain(br, bp, layouts[li], bwd ? xd : yd, 1);
                    CHECK(memcmp(pr, bp, sizeof(float) * (size_t)n) == 0,
                          "pool case %d, %s, block %d, %d threads: blocked and plain differ", k,
                          bwd ? "backward" : "forward", li ? 16 : 8, threads);
                    free(xb), free(dyb), free(pr), free(br), free(bp);
                }
        free(x), free(dy);
    }
}
END_TEST

/* The bias gradient on blocked data (sum over N, H, W of nChw8c/16c)
 * matches the plain reduction, and is bitwise the same at any width. */
START_TEST(test_sum_blocked)
{
    const int64_t shapes[][4] = {{5, 32, 3, 4}, {64, 16, 6, 6}, {2, 64, 1, 3}, {3, 1024, 2, 2}};
    const int layouts[] = {LOOM__LAYOUT_NCHW8C, LOOM__LAYOUT_NCHW16C};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        for (int li = 0; li < 2; li++) {
            const int64_t *d = shapes[k], n = d[0] * d[1] * d[2] * d[3];
            float *x = rand_buf(n, 1, 0.25), *xb = nan_buf(n);
            loom__layout_from_plain(x, xb, layouts[li], d, 1);
            loom__attrs at;
            memset(&at, 0, sizeof at);
            at.reduce.mask = 1u | 4u | 8u;
            loom__tview out = TV(NULL, 1, d[1], 1, 1);
            out.strides[0] = out.strides[2] = out.strides[3] = 0;
            loom__tview in = TV(x, d[0], d[1], d[2], d[3]);
            float *want = run_kernel(loom__ref_reduce, LOOM_OP_SUM, &at, 1, &in, out, 1);
            in.data = xb;
            in.layout = layouts[li];
            float *got[3];
            for (int t = 0; t < 3; t++) {
                got[t] = run_kernel(loom__ref_sum_blocked, LOOM_OP_SUM, &at, 1, &in, out, t + 1);
                for (int64_t c = 0; c < d[1]; c++)
                    CHECK(fabsf(got[t][c] - want[c]) <= 1e-6f * (fabsf(want[c]) + (float)(n / d[1])),
                          "shape %lld: channel %lld sums to %.9g, plain %.9g", (long long)k, (long long)c,
                          (double)got[t][c], (double)want[c]);
                CHECK(memcmp(got[t], got[0], sizeof(float) * (size_t)d[1]) == 0,
                      "shape %lld: %d threads change the bits", (long long)k, t + 1);
            }
            free(x), free(xb), free(want), free(got[0]), free(got[1]), free(got[2]);
        }
}
END_TEST

/* Plain, 1-thread references of batch norm's backward halves on in =
 * {x, dy, stats, gamma}: dx in training, [dgamma; dbeta], dx frozen.
 * Leaves at->bn.training false. */
static void bn_bwd_refs(loom__attrs *at, const loom__tview *in, float **dxt, float **pr, float **dxf)
{
    const int64_t C = in[0].shape[1];
    at->bn.training = true;
    *dxt = run_kernel(loom__ref_bn_bwd_data, LOOM_OP_BN_BWD_DATA, at, 4, in, in[0], 1);
    *pr = run_kernel(loom__ref_bn_bwd_params, LOOM_OP_BN_BWD_PARAMS, at, 3, in, TV(NULL, 2, C), 1);
    at->bn.training = false;
    *dxf = run_kernel(loom__ref_bn_bwd_data, LOOM_OP_BN_BWD_DATA, at, 4, in, in[0], 1);
}

/* Batch norm's ref kernels on nChw8c / nChw16c give bitwise the plain
 * results (statistics, forward, both backward halves, training and frozen),
 * on 1 and 2 threads: the blocked reductions add each channel's values in
 * the plain order. Shapes: S odd (the reductions' tails), S above a
 * reduction piece (16384; two pieces per row), S = 1. */
START_TEST(test_bn_blocked)
{
    const int64_t shapes[][4] = {{3, 32, 5, 7}, {2, 16, 130, 130}, {1, 64, 1, 1}};
    const int layouts[] = {LOOM__LAYOUT_NCHW8C, LOOM__LAYOUT_NCHW16C};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int64_t *d = shapes[k], C = d[1], n = d[0] * d[1] * d[2] * d[3];
        float *x = rand_buf(n, 2, 0.5), *dy = rand_buf(n, 1, 0), *g = rand_buf(C, 1, 0), *b = rand_buf(C, 1, 0);
        loom__attrs at;
        memset(&at, 0, sizeof at);
        at.bn.eps = 1e-5;
        const loom__tview vx = TV(x, d[0], d[1], d[2], d[3]), vdy = TV(dy, d[0], d[1], d[2], d[3]);
        const loom__tview vst = TV(NULL, 2, C), vg = TV(g, C), vb = TV(b, C);
        /* Plain results, 1 thread. */
        float *st = run_kernel(loom__ref_bn_stats, LOOM_OP_BN_STATS, &at, 1, &vx, vst, 1);
        const loom__tview vs = TV(st, 2, C);
        float *y = run_kernel(loom__ref_bn_fwd, LOOM_OP_BN_FWD, &at, 4, (loom__tview[]){vx, vs, vg, vb}, vx, 1);
        float *dxt, *pr, *dxf;
        bn_bwd_refs(&at, (loom__tview[]){vx, vdy, vs, vg}, &dxt, &pr, &dxf);
        for (int li = 0; li < 2; li++)
            for (int t = 1; t <= 2; t++) {
                const int L = layouts[li];
                float *xb = nan_buf(n), *dyb = nan_buf(n), *plain = nan_buf(n);
                loom__layout_from_plain(x, xb, L, d, 1);
                loom__layout_from_plain(dy, dyb, L, d, 1);
                loom__tview bx = vx, bdy = vdy;
                bx.data = xb, bx.layout = L;
                bdy.data = dyb, bdy.layout = L;
                float *bst = run_kernel(loom__ref_bn_stats, LOOM_OP_BN_STATS, &at, 1, &bx, vst, t);
                CHECK(memcmp(bst, st, sizeof(float) * 2 * (size_t)C) == 0,
                      "shape %zu, block %d, %d threads: bn_stats differ from plain", k, L, t);
                loom__tview by = bx;
                float *yb = run_kernel(loom__ref_bn_fwd, LOOM_OP_BN_FWD, &at, 4, (loom__tview[]){bx, vs, vg, vb}, by, t);
                loom__layout_to_plain(yb, plain, L, d, 1);
                CHECK(memcmp(plain, y, sizeof(float) * (size_t)n) == 0,
                      "shape %zu, block %d, %d threads: bn_fwd differs from plain", k, L, t);
                const loom__tview binb[4] = {bx, bdy, vs, vg};
                at.bn.training = true;
                float *dxb = run_kernel(loom__ref_bn_bwd_data, LOOM_OP_BN_BWD_DATA, &at, 4, binb, bx, t);
                loom__layout_to_plain(dxb, plain, L, d, 1);
                CHECK(memcmp(plain, dxt, sizeof(float) * (size_t)n) == 0,
                      "shape %zu, block %d, %d threads: bn_bwd_data (training) differs from plain", k, L, t);
                float *prb = run_kernel(loom__ref_bn_bwd_params, LOOM_OP_BN_BWD_PARAMS, &at, 3, binb, vst, t);
                CHECK(memcmp(prb, pr, sizeof(float) * 2 * (size_t)C) == 0,
                      "shape %zu, block %d, %d threads: bn_bwd_params differ from plain", k, L, t);
                at.bn.training = false;
                free(dxb);
                dxb = run_kernel(loom__ref_bn_bwd_data, LOOM_OP_BN_BWD_DATA, &at, 4, binb, bx, t);
                loom__layout_to_plain(dxb, plain, L, d, 1);
                CHECK(memcmp(plain, dxf, sizeof(float) * (size_t)n) == 0,
                      "shape %zu, block %d, %d threads: bn_bwd_data (frozen) differs from plain", k, L, t);
                free(xb), free(dyb), free(plain), free(bst), free(yb), free(dxb), free(prb);
            }
        /* A fused ReLU's mask (attrs bn.relu, y as the extra input) and
         * BN_BWD_PARAMS's sums (p) given to BN_BWD_DATA: bitwise the
         * unmasked kernels on dy * (y > 0), plain and blocked, 1 and 2
         * threads; with p, training dx within 1e-5 (p is float-rounded). */
        float *ry = rand_buf(n, 1, 0), *dym = nan_buf(n);
        for (int64_t i = 0; i < n; i++) dym[i] = ry[i] > 0 ? dy[i] : 0.0f;
        const loom__tview vdym = TV(dym, d[0], d[1], d[2], d[3]), vy = TV(ry, d[0], d[1], d[2], d[3]);
        float *want_t, *want_p, *want_f;
        bn_bwd_refs(&at, (loom__tview[]){vx, vdym, vs, vg}, &want_t, &want_p, &want_f);
        at.bn.relu = true;
        for (int li = -1; li < 2; li++)
            for (int t = 1; t <= 2; t++) {
                const int L = li < 0 ? LOOM__LAYOUT_PLAIN : layouts[li];
                float *xb = nan_buf(n), *dyb = nan_buf(n), *yb = nan_buf(n), *plain = nan_buf(n);
                if (li < 0) {
                    memcpy(xb, x, sizeof(float) * (size_t)n), memcpy(dyb, dy, sizeof(float) * (size_t)n);
                    memcpy(yb, ry, sizeof(float) * (size_t)n);
                } else {
                    loom__layout_from_plain(x, xb, L, d, 1);
                    loom__layout_from_plain(dy, dyb, L, d, 1);
                    loom__layout_from_plain(ry, yb, L, d, 1);
                }
                loom__tview bx = vx, bdy = vdy, by = vy;
                bx.data = xb, bx.layout = L, bdy.data = dyb, bdy.layout = L, by.data = yb, by.layout = L;
                at.bn.training = true;
                const loom__tview pin[4] = {bx, bdy, vs, by};
                float *pm = run_kernel(loom__ref_bn_bwd_params, LOOM_OP_BN_BWD_PARAMS, &at, 4, pin, vst, t);
                CHECK(memcmp(pm, want_p, sizeof(float) * 2 * (size_t)C) == 0,
                      "shape %zu, layout %d, %d threads: masked bn_bwd_params differ", k, L, t);
                const loom__tview din[6] = {bx, bdy, vs, vg, by, TV(pm, 2, C)};
                for (int withp = 0; withp < 2; withp++) {
                    float *dxm = run_kernel(loom__ref_bn_bwd_data, LOOM_OP_BN_BWD_DATA, &at, 5 + withp, din, bx, t);
                    if (li < 0) memcpy(plain, dxm, sizeof(float) * (size_t)n);
                    else loom__layout_to_plain(dxm, plain, L, d, 1);
                    if (!withp) {
                        CHECK(memcmp(plain, want_t, sizeof(float) * (size_t)n) == 0,
                              "shape %zu, layout %d, %d threads: masked bn_bwd_data (training) differs", k, L, t);
                    } else {
                        for (int64_t i = 0; i < n; i++)
                            CHECK(fabsf(plain[i] - want_t[i]) <= 1e-5f * (1 + fabsf(want_t[i])),
                                  "shape %zu, layout %d, %d threads: bn_bwd_data with p: %.9g vs %.9g", k, L, t,
                                  (double)plain[i], (double)want_t[i]);
                    }
                    free(dxm);
                }
                at.bn.training = false;
                float *dxm = run_kernel(loom__ref_bn_bwd_data, LOOM_OP_BN_BWD_DATA, &at, 5, din, bx, t);
                if (li < 0) memcpy(plain, dxm, sizeof(float) * (size_t)n);
                else loom__layout_to_plain(dxm, plain, L, d, 1);
                CHECK(memcmp(plain, want_f, sizeof(float) * (size_t)n) == 0,
                      "shape %zu, layout %d, %d threads: masked bn_bwd_data (frozen) differs", k, L, t);
                free(dxm), free(pm), free(xb), free(dyb), free(yb), free(plain);
            }
        at.bn.relu = false;
        free(ry), free(dym), free(want_p), free(want_t), free(want_f);
        free(x), free(dy), free(g), free(b), free(st), free(y), free(dxt), free(pr), free(dxf);
    }
}
END_TEST

/* Finite differences of max_pool2d along a random direction (values on a
 * grid spaced well above the step, so no argmax flips). */
START_TEST(test_max_pool_fd)
{
    rng_seed(7);
    pool_cfg c = {2, 3, 7, 6, 3, 2, 2, 2, 1, 1, true, false, false, 0, 0};
    int OH, OW;
    pool_shape(&c, &OH, &OW);
    const int64_t nx = (int64_t)c.N * c.C * c.H * c.W, ny = (int64_t)c.N * c.C * OH * OW;
    float *x = malloc(sizeof(float) * (size_t)nx), *v = rand_buf(nx, 1, 0), *r = rand_buf(ny, 1, 0);
    for (int64_t i = 0; i < nx; i++) x[i] = (float)((i * 37) % nx) * 0.01f; /* distinct, spaced 0.01 */
    const loom__attrs at = pool_attrs(&c);
    const loom__tview vx = TV(x, c.N, c.C, c.H, c.W), vy = TV(r, c.N, c.C, OH, OW);
    loom__tview in[2] = {vy, vx};
    float *g = run_kernel(loom__ref_max_pool2d_bwd, LOOM_OP_MAX_POOL2D_BWD, &at, 2, in, vx, 1);
    const double h = 1e-3, an = dot_fd(g, v, nx);
    float *xp = malloc(sizeof(float) * (size_t)nx), *xm = malloc(sizeof(float) * (size_t)nx);
    for (int64_t i = 0; i < nx; i++) xp[i] = (float)(x[i] + h * v[i]), xm[i] = (float)(x[i] - h * v[i]);
    const loom__tview vp = TV(xp, c.N, c.C, c.H, c.W), vm = TV(xm, c.N, c.C, c.H, c.W);
    float *yp = run_kernel(loom__ref_max_pool2d, LOOM_OP_MAX_POOL2D, &at, 1, &vp, vy, 1);
    float *ym = run_kernel(loom__ref_max_pool2d, LOOM_OP_MAX_POOL2D, &at, 1, &vm, vy, 1);
    const double fd = (dot_fd(r, yp, ny) - dot_fd(r, ym, ny)) / (2 * h);
    ck_assert_msg(fabs(fd - an) <= 1e-2 * dot_abs(g, v, nx) + 1e-4, "max_pool: finite difference %.9g, bwd %.9g", fd,
                  an);
    free(x), free(v), free(r), free(g), free(xp), free(xm), free(yp), free(ym);
}
END_TEST

/* ---- batch norm ------------------------------------------------------------- */

typedef struct bn_cfg {
    int ndim;
    int64_t shape[4];
    double scale, offset;
} bn_cfg;

static const bn_cfg bn_cfgs[] = {
    {4, {5, 3, 4, 5}, 1, 0},
    {2, {6, 4}, 2, 0.5},
    {3, {2, 3, 7}, 1, 0},
    {4, {1, 2, 130, 130}, 1, 0},    /* rows longer than one reduction piece */
    {4, {5, 16, 30, 30}, 1, 0},     /* parallel */
    {4, {4, 3, 5, 5}, 0.01, 1000},  /* large mean, small spread */
    {2, {1, 5}, 1, 0},              /* one value per channel */
};
#define NBN ((int)(sizeof bn_cfgs / sizeof bn_cfgs[0]))

static void bn_dims(const bn_cfg *c, int64_t *N, int64_t *C, int64_t *S)
{
    *N = c->shape[0], *C = c->shape[1], *S = 1;
    for (int d = 2; d < c->ndim; d++) *S *= c->shape[d];
}

START_TEST(test_bn)
{
    const bn_cfg *c = &bn_cfgs[_i];
    rng_seed(300 + (uint64_t)_i);
    int64_t N, C, S;
    bn_dims(c, &N, &C, &S);
    const int64_t n = N * C * S, M = N * S;
    float *x = rand_buf(n, c->scale, c->offset), *dy = rand_buf(n, 1, 0);
    float *gamma = rand_buf(C, 1, 0), *beta = rand_buf(C, 1, 0);
    loom__attrs at;
    memset(&at, 0, sizeof at);
    at.bn.eps = 1e-5;
    loom__tview vx = tv(x, c->ndim, c->shape), vdy = tv(dy, c->ndim, c->shape);
    const loom__tview vst = TV(NULL, 2, C), vg = TV(gamma, C), vb = TV(beta, C);

    /* Two-pass statistics in double. */
    double *mean = zeros_d(C), *var = zeros_d(C), *sdy = zeros_d(C), *sdyx = zeros_d(C);
    for (int64_t i = 0; i < n; i++) mean[(i / S) % C] += x[i];
    for (int64_t ch = 0; ch < C; ch++) mean[ch] /= (double)M;
    for (int64_t i = 0; i < n; i++) {
        const int64_t ch = (i / S) % C;
        var[ch] += (x[i] - mean[ch]) * (x[i] - mean[ch]);
    }
    for (int64_t ch = 0; ch < C; ch++) var[ch] /= (double)M;

    float *st = run_kernel(loom__ref_bn_stats, LOOM_OP_BN_STATS, &at, 1, &vx, vst, 1);
    float *st2 = run_kernel(loom__ref_bn_stats, LOOM_OP_BN_STATS, &at, 1, &vx, vst, 2);
    ck_assert_msg(memcmp(st, st2, sizeof(float) * 2 * (size_t)C) == 0, "bn_stats differ for 1 and 2 threads");
    for (int64_t ch = 0; ch < C; ch++) {
        CHECK(fabs(st[ch] - mean[ch]) <= 1e-6 * (fabs(mean[ch]) + c->scale), "mean[%lld] %.9g, expected %.9g",
                      (long long)ch, st[ch], mean[ch]);
        CHECK(fabs(st[C + ch] - var[ch]) <= 1e-5 * var[ch] + 1e-12, "var[%lld] %.9g, expected %.9g",
                      (long long)ch, st[C + ch], var[ch]);
    }

    /* Everything below uses the kernel's (float) statistics. */
    double *is = zeros_d(C), *xhat = zeros_d(n), *yr = zeros_d(n), *dxr = zeros_d(n), *dxf = zeros_d(n);
    for (int64_t ch = 0; ch < C; ch++) is[ch] = 1.0 / sqrt((double)st[C + ch] + at.bn.eps);
    for (int64_t i = 0; i < n; i++) {
        const int64_t ch = (i / S) % C;
        xhat[i] = (x[i] - (double)st[ch]) * is[ch];
        yr[i] = xhat[i] * gamma[ch] + beta[ch];
        sdy[ch] += dy[i];
        sdyx[ch] += dy[i] * xhat[i];
    }
    for (int64_t i = 0; i < n; i++) {
        const int64_t ch = (i / S) % C;
        dxr[i] = gamma[ch] * is[ch] / (double)M * ((double)M * dy[i] - sdy[ch] - xhat[i] * sdyx[ch]);
        dxf[i] = dy[i] * gamma[ch] * is[ch];
    }
    loom__tview vs = TV(st, 2, C);
    loom__tview inf[4] = {vx, vs, vg, vb};
    float *y = run_both(loom__ref_bn_fwd, LOOM_OP_BN_FWD, &at, 4, inf, vx, NULL, 1e-6, "bn_fwd", __LINE__);
    double *ys = zeros_d(n);
    for (int64_t i = 0; i < n; i++) ys[i] = fabs(xhat[i] * gamma[(i / S) % C]) + fabs(beta[(i / S) % C]) + 1;
    check_close(y, yr, ys, n, 1e-5 * (c->offset ? 1e3 : 1), 0, "bn_fwd vs loops", __LINE__);

    loom__tview inb[4] = {vx, vdy, vs, vg};
    at.bn.training = true;
    float *dx = run_both(loom__ref_bn_bwd_data, LOOM_OP_BN_BWD_DATA, &at, 4, inb, vx, NULL, 1e-5, "bn_bwd_data", __LINE__);
    double *dxs = zeros_d(n);
    for (int64_t i = 0; i < n; i++) {
        const int64_t ch = (i / S) % C;
        dxs[i] = fabs(gamma[ch] * is[ch]) * (fabs(dy[i]) + 3.0) + 1e-3;
    }
    check_close(dx, dxr, dxs, n, 1e-4 * (c->offset ? 1e3 : 1), 0, "bn_bwd_data (training) vs loops", __LINE__);
    free(dx);
    at.bn.training = false;
    dx = run_both(loom__ref_bn_bwd_data, LOOM_OP_BN_BWD_DATA, &at, 4, inb, vx, NULL, 1e-6, "bn_bwd_data frozen", __LINE__);
    check_close(dx, dxf, NULL, n, 1e-6, 1e-7, "bn_bwd_data (frozen) vs loops", __LINE__);

    float *pr = run_both(loom__ref_bn_bwd_params, LOOM_OP_BN_BWD_PARAMS, &at, 3, inb, vst, NULL, 1e-5, "bn_bwd_params",
                         __LINE__);
    for (int64_t ch = 0; ch < C; ch++) {
        const double tol = 1e-5 * (double)M * (c->offset ? 1e3 : 1) + 1e-6;
        CHECK(fabs(pr[ch] - sdyx[ch]) <= tol, "dgamma[%lld] %.9g, expected %.9g", (long long)ch, pr[ch],
                      sdyx[ch]);
        CHECK(fabs(pr[C + ch] - sdy[ch]) <= 1e-6 * (double)M, "dbeta[%lld] %.9g, expected %.9g",
                      (long long)ch, pr[C + ch], sdy[ch]);
    }
    free(st), free(st2), free(y), free(dx), free(pr), free(ys), free(dxs);
    free(x), free(dy), free(gamma), free(beta), free(mean), free(var), free(sdy), free(sdyx), free(is), free(xhat),
        free(yr), free(dxr), free(dxf);
}
END_TEST

/* <r, bn_fwd(x, stats(x), gamma, beta)> differentiated along random
 * directions of x (training backward), of x with the statistics held
 * (frozen backward), and of gamma and beta (bwd_params). */
static double bn_loss(const float *x, const float *stats_or_null, const float *gamma, const float *beta,
                      const float *r, int ndim, const int64_t *shape, int64_t C)
{
    loom__attrs at;
    memset(&at, 0, sizeof at);
    at.bn.eps = 1e-5;
    const loom__tview vx = tv(x, ndim, shape);
    float *st = NULL;
    if (!stats_or_null) st = run_kernel(loom__ref_bn_stats, LOOM_OP_BN_STATS, &at, 1, &vx, TV(NULL, 2, C), 1);
    loom__tview in[4] = {vx, TV(stats_or_null ? stats_or_null : st, 2, C), TV(gamma, C), TV(beta, C)};
    float *y = run_kernel(loom__ref_bn_fwd, LOOM_OP_BN_FWD, &at, 4, in, vx, 1);
    const double l = dot_fd(r, y, loom__tview_numel(&vx));
    free(st), free(y);
    return l;
}

static float *perturbed(const float *x, const float *v, int64_t n, double h)
{
    float *p = malloc(sizeof(float) * (size_t)n);
    ck_assert(p);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(x[i] + h * v[i]);
    return p;
}

static void expect_fd(double fd, double an, double scale, double tol, const char *what)
{
    ck_assert_msg(fabs(fd - an) <= tol * scale + 1e-5, "%s: finite difference %.9g, backward %.9g (scale %.3g)", what,
                  fd, an, scale);
}

START_TEST(test_bn_fd)
{
    rng_seed(11);
    const int ndim = 4;
    const int64_t shape[4] = {3, 2, 3, 4}, C = 2, n = 72;
    float *x = rand_buf(n, 1, 0.3), *r = rand_buf(n, 1, 0), *v = rand_buf(n, 1, 0);
    float *gamma = rand_buf(C, 1, 0), *beta = rand_buf(C, 1, 0), *vg = rand_buf(C, 1, 0), *vb = rand_buf(C, 1, 0);
    loom__attrs at;
    memset(&at, 0, sizeof at);
    at.bn.eps = 1e-5;
    const loom__tview vx = tv(x, ndim, shape), vr = tv(r, ndim, shape);
    float *st = run_kernel(loom__ref_bn_stats, LOOM_OP_BN_STATS, &at, 1, &vx, TV(NULL, 2, C), 1);
    loom__tview in[4] = {vx, vr, TV(st, 2, C), TV(gamma, C)};
    const double h = 1e-2;

    at.bn.training = true;
    float *g = run_kernel(loom__ref_bn_bwd_data, LOOM_OP_BN_BWD_DATA, &at, 4, in, vx, 1);
    float *xp = perturbed(x, v, n, h), *xm = perturbed(x, v, n, -h);
    double fd = (bn_loss(xp, NULL, gamma, beta, r, ndim, shape, C) - bn_loss(xm, NULL, gamma, beta, r, ndim, shape, C)) /
                (2 * h);
    expect_fd(fd, dot_fd(g, v, n), dot_abs(g, v, n), 2e-2, "bn_bwd_data (training)");
    free(g);

    at.bn.training = false;
    g = run_kernel(loom__ref_bn_bwd_data, LOOM_OP_BN_BWD_DATA, &at, 4, in, vx, 1);
    fd = (bn_loss(xp, st, gamma, beta, r, ndim, shape, C) - bn_loss(xm, st, gamma, beta, r, ndim, shape, C)) / (2 * h);
    expect_fd(fd, dot_fd(g, v, n), dot_abs(g, v, n), 2e-2, "bn_bwd_data (frozen)");
    free(g);

    g = run_kernel(loom__ref_bn_bwd_params, LOOM_OP_BN_BWD_PARAMS, &at, 3, in, TV(NULL, 2, C), 1);
    float *gp = perturbed(gamma, vg, C, h), *gm = perturbed(gamma, vg, C, -h);
    fd = (bn_loss(x, NULL, gp, beta, r, ndim, shape, C) - bn_loss(x, NULL, gm, beta, r, ndim, shape, C)) / (2 * h);
    expect_fd(fd, dot_fd(g, vg, C), dot_abs(g, vg, C), 2e-2, "dgamma");
    float *bp = perturbed(beta, vb, C, h), *bm = perturbed(beta, vb, C, -h);
    fd = (bn_loss(x, NULL, gamma, bp, r, ndim, shape, C) - bn_loss(x, NULL, gamma, bm, r, ndim, shape, C)) / (2 * h);
    expect_fd(fd, dot_fd(g + C, vb, C), dot_abs(g + C, vb, C), 2e-2, "dbeta");

    free(g), free(gp), free(gm), free(bp), free(bm), free(xp), free(xm), free(st);
    free(x), free(r), free(v), free(gamma), free(beta), free(vg), free(vb);
}
END_TEST

/* ---- softmax ---------------------------------------------------------------- */

typedef struct sm_cfg {
    int ndim;
    int64_t shape[4];
    int dim;
    double scale;
} sm_cfg;

static const sm_cfg sm_cfgs[] = {
    {2, {4, 10}, 1, 1},
    {2, {4, 10}, 0, 1},
    {3, {3, 5, 7}, 1, 1},
    {3, {3, 5, 7}, 2, 3},
    {3, {3, 5, 7}, 0, 1},
    {2, {8, 33}, -1, 60},       /* large logits: exp would overflow without the max */
    {3, {2, 70, 130}, 1, 1},    /* lanes in blocks, parallel */
    {2, {300, 64}, 1, 5},       /* rows, parallel */
    {1, {1}, 0, 1},
};
#define NSM ((int)(sizeof sm_cfgs / sizeof sm_cfgs[0]))

/* Softmax / log_softmax of x along the cfg's dim, in double. */
static void ref_softmax(const sm_cfg *c, const float *x, double *y, bool log_sm)
{
    const int dim = c->dim < 0 ? c->dim + c->ndim : c->dim;
    int64_t outer = 1, inner = 1, D = c->shape[dim];
    for (int d = 0; d < dim; d++) outer *= c->shape[d];
    for (int d = dim + 1; d < c->ndim; d++) inner *= c->shape[d];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            const float *xl = x + o * D * inner + j;
            double m = -INFINITY, s = 0;
            for (int64_t d = 0; d < D; d++) m = fmax(m, xl[d * inner]);
            for (int64_t d = 0; d < D; d++) s += exp(xl[d * inner] - m);
            for (int64_t d = 0; d < D; d++) {
                const double z = xl[d * inner] - m;
                y[o * D * inner + j + d * inner] = log_sm ? z - log(s) : exp(z) / s;
            }
        }
}

/* dx from y (float) and dy per kernel.h's formulas, in double. */
static void ref_softmax_bwd(const sm_cfg *c, const float *y, const float *dy, double *dx, bool log_sm)
{
    const int dim = c->dim < 0 ? c->dim + c->ndim : c->dim;
    int64_t outer = 1, inner = 1, D = c->shape[dim];
    for (int d = 0; d < dim; d++) outer *= c->shape[d];
    for (int d = dim + 1; d < c->ndim; d++) inner *= c->shape[d];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            const int64_t base = o * D * inner + j;
            double s = 0;
            for (int64_t d = 0; d < D; d++)
                s += log_sm ? dy[base + d * inner] : (double)dy[base + d * inner] * y[base + d * inner];
            for (int64_t d = 0; d < D; d++) {
                const int64_t i = base + d * inner;
                dx[i] = log_sm ? dy[i] - exp((double)y[i]) * s : y[i] * (dy[i] - s);
            }
        }
}

START_TEST(test_softmax)
{
    const sm_cfg *c = &sm_cfgs[_i];
    rng_seed(400 + (uint64_t)_i);
    const int64_t n = numel_of(c->ndim, c->shape);
    float *x = rand_buf(n, c->scale, 0), *dy = rand_buf(n, 1, 0);
    loom__attrs at;
    memset(&at, 0, sizeof at);
    at.axis.dim = c->dim;
    const loom__tview vx = tv(x, c->ndim, c->shape), vdy = tv(dy, c->ndim, c->shape);
    double *yr = zeros_d(n), *dxr = zeros_d(n);
    for (int lg = 0; lg < 2; lg++) {
        const loom__op op = lg ? LOOM_OP_LOG_SOFTMAX : LOOM_OP_SOFTMAX;
        ref_softmax(c, x, yr, lg);
        float *y = run_both(loom__ref_softmax, op, &at, 1, &vx, vx, NULL, 1e-5, "softmax", __LINE__);
        for (int64_t i = 0; i < n; i++) CHECK(isfinite(y[i]), "softmax: y[%lld] = %g", (long long)i, y[i]);
        check_close(y, yr, NULL, n, 1e-5, lg ? 1e-5 : 1e-7, lg ? "log_softmax vs loops" : "softmax vs loops", __LINE__);
        ref_softmax_bwd(c, y, dy, dxr, lg);
        loom__tview in[2] = {tv(y, c->ndim, c->shape), vdy};
        float *dx = run_both(loom__ref_softmax_bwd, lg ? LOOM_OP_LOG_SOFTMAX_BWD : LOOM_OP_SOFTMAX_BWD, &at, 2, in, vx,
                             NULL, 1e-5, "softmax_bwd", __LINE__);
        check_close(dx, dxr, NULL, n, 1e-5, 1e-6, "softmax_bwd vs formula", __LINE__);
        free(y), free(dx);
    }
    free(x), free(dy), free(yr), free(dxr);
}
END_TEST

/* Finite differences of <r, softmax(x)> and <r, log_softmax(x)>. */
START_TEST(test_softmax_fd)
{
    rng_seed(13);
    const int64_t shape[3] = {3, 6, 5}, n = 90;
    float *x = rand_buf(n, 2, 0), *r = rand_buf(n, 1, 0), *v = rand_buf(n, 1, 0);
    loom__attrs at;
    memset(&at, 0, sizeof at);
    at.axis.dim = 1;
    const loom__tview vx = tv(x, 3, shape);
    float *xp = perturbed(x, v, n, 1e-2), *xm = perturbed(x, v, n, -1e-2);
    const loom__tview vp = tv(xp, 3, shape), vm = tv(xm, 3, shape);
    for (int lg = 0; lg < 2; lg++) {
        const loom__op op = lg ? LOOM_OP_LOG_SOFTMAX : LOOM_OP_SOFTMAX;
        float *y = run_kernel(loom__ref_softmax, op, &at, 1, &vx, vx, 1);
        loom__tview in[2] = {tv(y, 3, shape), tv(r, 3, shape)};
        float *g = run_kernel(loom__ref_softmax_bwd, lg ? LOOM_OP_LOG_SOFTMAX_BWD : LOOM_OP_SOFTMAX_BWD, &at, 2, in, vx,
                              1);
        float *yp = run_kernel(loom__ref_softmax, op, &at, 1, &vp, vx, 1);
        float *ym = run_kernel(loom__ref_softmax, op, &at, 1, &vm, vx, 1);
        const double fd = (dot_fd(r, yp, n) - dot_fd(r, ym, n)) / 2e-2;
        expect_fd(fd, dot_fd(g, v, n), dot_abs(g, v, n), 2e-2, lg ? "log_softmax" : "softmax");
        free(y), free(g), free(yp), free(ym);
    }
    free(x), free(r), free(v), free(xp), free(xm);
}
END_TEST

START_TEST(test_relu_bwd)
{
    rng_seed(17);
    const int64_t n = 100003;
    float *y = rand_buf(n, 1, 0), *dy = rand_buf(n, 1, 0);
    for (int64_t i = 0; i < n; i += 7) y[i] = 0.0f;
    y[3] = NAN;
    const loom__tview vy = TV(y, n), vdy = TV(dy, n);
    loom__tview in[2] = {vy, vdy};
    loom__attrs at;
    memset(&at, 0, sizeof at);
    float *dx = run_both(loom__ref_relu_bwd, LOOM_OP_RELU_BWD, &at, 2, in, vy, NULL, 0, "relu_bwd", __LINE__);
    for (int64_t i = 0; i < n; i++)
        CHECK(dx[i] == (y[i] > 0 ? dy[i] : 0.0f), "dx[%lld] = %g", (long long)i, dx[i]);
    free(y), free(dy), free(dx);
}
END_TEST

Suite *loom_suite_cnn_kernels(void)
{
    Suite *s = suite_create("cnn_kernels");
    TCase *tc = test_tcase(s, "conv", 60);
    tcase_add_loop_test(tc, test_conv, 0, NCONV);
    tcase_add_test(tc, test_errors);
    tc = test_tcase(s, "pool", 30);
    tcase_add_loop_test(tc, test_pool, 0, NPOOL);
    tcase_add_test(tc, test_max_pool_ties_nan);
    tcase_add_test(tc, test_max_pool_blocked_windows);
    tcase_add_test(tc, test_sum_blocked);
    tcase_add_test(tc, test_bn_blocked);
    tcase_add_test(tc, test_max_pool_fd);
    tc = test_tcase(s, "batch_norm", 30);
    tcase_add_loop_test(tc, test_bn, 0, NBN);
    tcase_add_test(tc, test_bn_fd);
    tc = test_tcase(s, "softmax", 30);
    tcase_add_loop_test(tc, test_softmax, 0, NSM);
    tcase_add_test(tc, test_softmax_fd);
    tcase_add_test(tc, test_relu_bwd);
    return s;
}
