/*
 * tests/check_onednn.c - the oneDNN backend (backends/onednn/).
 *
 * Every op the backend implements runs through a loom__kcall built here on
 * random inputs, once with the ref kernel (loom__ref_backend) and once with
 * the oneDNN kernel (whose supports() must accept the call), both into
 * NaN-filled outputs; the results must agree within 1e-4 relative
 * (|a - b| <= 1e-4 * max(1, |b|)), NaN for NaN. Shapes cover odd sizes,
 * strides 1/2/3, padding, dilation, groups (2 and depthwise), batch 1 and
 * odd, bias on/off, fused relu, ceil mode, adaptive pooling, 2-5-D batch
 * norm, softmax over every axis; each with 1 and 2 threads, and convolutions
 * with both layout policies (blocked with reorders, plain NCHW).
 *
 * Then what supports() must reject (ref runs those), the program cache (hit,
 * LRU eviction, capacity 0), a program built on one pthread and run on
 * another (the case that crashes with oneDNN's library-managed scratchpad),
 * many threads running one cached program at once, error messages, the
 * registry and the "onednn" context choice, and an end-to-end CNN step that
 * must give the same values and gradients under "onednn" and "ref".
 *
 * Without oneDNN the suite only checks that a context refuses "onednn".
 */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check_suites.h"

#ifdef LOOM_HAVE_ONEDNN

#include <pthread.h>

#include "backends/kernel.h"
#include "backends/onednn/onednn.h"
#include "backends/ref/ref.h"
#include "backends/registry.h"

/* Calls into Check only on failure (ck_assert logs every pass). */
#define CHECK(cond, ...)                        \
    do {                                        \
        if (!(cond)) ck_abort_msg(__VA_ARGS__); \
    } while (0)

#define TOL 1e-4

/* ---- helpers ---------------------------------------------------------------- */

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 2654435761u + 1; }
static uint32_t rng_u32(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}
static double unit(void) { return (double)(rng_u32() & 0xFFFFFF) / (1 << 23) - 1.0; } /* [-1, 1) */
static int irand(int lo, int hi) { return lo + (int)(rng_u32() % (uint32_t)(hi - lo + 1)); } /* [lo, hi] */

static float *rand_buf(int64_t n, double scale, double offset)
{
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ck_assert(p);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(offset + scale * unit());
    return p;
}

static float *nan_buf(int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ck_assert(p);
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

static loom__tview view(float *data, int ndim, const int64_t *shape)
{
    loom__tview v;
    memset(&v, 0, sizeof v);
    v.data = data;
    v.dtype = LOOM_FLOAT32;
    v.ndim = ndim;
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        v.shape[d] = shape[d];
        v.strides[d] = s;
        s *= shape[d];
    }
    return v;
}

static int64_t nelem(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    return n;
}

/* got (oneDNN) against want (ref). */
static void compare(const char *label, const float *got, const float *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const double g = got[i], w = want[i];
        if (isnan(w)) {
            CHECK(isnan(g), "%s: element %lld is %g, ref gives nan", label, (long long)i, g);
        } else if (isinf(w)) {
            CHECK(g == w, "%s: element %lld is %g, ref gives %g", label, (long long)i, g, w);
        } else {
            CHECK(fabs(g - w) <= TOL * fmax(1.0, fabs(w)), "%s: element %lld is %.9g, ref gives %.9g", label,
                  (long long)i, g, w);
        }
    }
}

/* The table of "onednn" contexts: every call oneDNN computes exactly. */
static const loom__kernel *dnn_kernel(loom__op op) { return &loom__onednn_backend_all.kernels[op]; }

static bool dnn_supports(const loom__kcall *call)
{
    const loom__kernel *k = dnn_kernel(call->op);
    return k->run && (!k->supports || k->supports(call));
}

/* Runs ref and oneDNN on the same inputs, compares; returns the oneDNN
 * output (caller frees) when keep. */
static float *run_both_keep(const char *label, loom__op op, const loom__attrs *a, int n_in, const loom__tview *in,
                            int out_ndim, const int64_t *out_shape, int nthreads, bool keep)
{
    const int64_t n = nelem(out_ndim, out_shape);
    float *ref = nan_buf(n), *dnn = nan_buf(n);
    loom__kcall call = {.op = op, .attrs = a, .n_in = n_in, .in = in, .nthreads = nthreads};
    call.out = view(ref, out_ndim, out_shape);
    loom_status st = loom__ref_backend.kernels[op].run(&call);
    CHECK(st == LOOM_OK, "%s: ref failed: %s", label, loom_last_error());
    call.out = view(dnn, out_ndim, out_shape);
    CHECK(dnn_supports(&call), "%s: the oneDNN backend rejects the call", label);
    st = dnn_kernel(op)->run(&call);
    CHECK(st == LOOM_OK, "%s: onednn failed: %s", label, loom_last_error());
    compare(label, dnn, ref, n);
    free(ref);
    if (keep) return dnn;
    free(dnn);
    return NULL;
}

static void run_both(const char *label, loom__op op, const loom__attrs *a, int n_in, const loom__tview *in,
                     int out_ndim, const int64_t *out_shape, int nthreads)
{
    run_both_keep(label, op, a, n_in, in, out_ndim, out_shape, nthreads, false);
}

/* supports() of the oneDNN kernel for a call whose output is a scratch buffer. */
static bool supports_call(loom__op op, const loom__attrs *a, int n_in, const loom__tview *in, int out_ndim,
                          const int64_t *out_shape)
{
    float *out = nan_buf(nelem(out_ndim, out_shape));
    loom__kcall call = {.op = op, .attrs = a, .n_in = n_in, .in = in, .nthreads = 1};
    call.out = view(out, out_ndim, out_shape);
    bool r = dnn_supports(&call);
    free(out);
    return r;
}

/* ---- convolution ----------------------------------------------------------------- */

typedef struct conv_cfg {
    int n, c, o, h, w, kh, kw, sh, sw, ph, pw, dh, dw, g;
    bool bias, relu;
} conv_cfg;

static const conv_cfg conv_cfgs[] = {
    {1, 3, 5, 7, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, true},     /* batch 1, odd sizes, bias + relu */
    {3, 4, 6, 11, 10, 3, 2, 2, 2, 1, 0, 1, 1, 2, false, false}, /* groups 2, stride 2, asymmetric kernel */
    {2, 6, 6, 13, 13, 3, 3, 3, 3, 2, 2, 2, 2, 6, true, true},   /* depthwise, stride 3, dilation 2 */
    {5, 8, 16, 9, 7, 1, 1, 1, 1, 0, 0, 1, 1, 1, true, false},   /* 1x1, odd batch */
    {2, 16, 32, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, true}, /* blocked-friendly channels */
    {1, 32, 32, 8, 8, 3, 3, 2, 2, 1, 1, 1, 1, 32, false, true}, /* depthwise 32, stride 2 */
    {3, 9, 12, 12, 15, 5, 3, 2, 1, 2, 1, 1, 2, 3, false, false}, /* groups 3, mixed stride / dilation */
    {2, 3, 8, 10, 10, 3, 3, 1, 1, 0, 0, 3, 3, 1, true, false},  /* dilation 3, no padding */
};
#define N_FIXED_CONV ((int)(sizeof conv_cfgs / sizeof conv_cfgs[0]))
#define N_RANDOM_CONV 6

static conv_cfg random_conv(void)
{
    conv_cfg c;
    for (;;) {
        c.g = irand(0, 3) == 0 ? 2 : 1;
        c.n = irand(1, 3), c.c = c.g * irand(1, 5), c.o = c.g * irand(1, 6);
        if (irand(0, 4) == 0) c.g = c.c, c.o = c.c * irand(1, 2); /* depthwise (multiplier 1 or 2) */
        c.h = irand(3, 13), c.w = irand(3, 13), c.kh = irand(1, 4), c.kw = irand(1, 4);
        c.sh = irand(1, 3), c.sw = irand(1, 3), c.ph = irand(0, 2), c.pw = irand(0, 2);
        c.dh = irand(1, 2), c.dw = irand(1, 2), c.bias = irand(0, 1), c.relu = irand(0, 1);
        if (c.h + 2 * c.ph >= c.dh * (c.kh - 1) + 1 && c.w + 2 * c.pw >= c.dw * (c.kw - 1) + 1) return c;
    }
}

static void conv_case(const conv_cfg *c, int nthreads, const char *layout)
{
    loom__attrs a;
    memset(&a, 0, sizeof a);
    a.conv.stride[0] = c->sh, a.conv.stride[1] = c->sw;
    a.conv.pad[0] = c->ph, a.conv.pad[1] = c->pw;
    a.conv.dilation[0] = c->dh, a.conv.dilation[1] = c->dw;
    a.conv.groups = c->g;
    a.conv.relu = c->relu;
    const int64_t oh = (c->h + 2 * c->ph - c->dh * (c->kh - 1) - 1) / c->sh + 1;
    const int64_t ow = (c->w + 2 * c->pw - c->dw * (c->kw - 1) - 1) / c->sw + 1;
    const int64_t xs[4] = {c->n, c->c, c->h, c->w}, ws[4] = {c->o, c->c / c->g, c->kh, c->kw}, bs[1] = {c->o},
                  ys[4] = {c->n, c->o, oh, ow};
    float *x = rand_buf(nelem(4, xs), 1, 0), *w = rand_buf(nelem(4, ws), 0.5, 0), *b = rand_buf(c->o, 1, 0),
          *dy = rand_buf(nelem(4, ys), 1, 0);
    char label[200];
    snprintf(label, sizeof label,
             "conv x [%d,%d,%d,%d] w [%d,%d,%d,%d] s (%d,%d) p (%d,%d) d (%d,%d) g %d%s%s, %d thread(s), %s",
             c->n, c->c, c->h, c->w, c->o, c->c / c->g, c->kh, c->kw, c->sh, c->sw, c->ph, c->pw, c->dh, c->dw, c->g,
             c->bias ? " bias" : "", c->relu ? " relu" : "", nthreads, layout);
    char l2[260];
    const loom__tview fin[3] = {view(x, 4, xs), view(w, 4, ws), view(b, 1, bs)};
    snprintf(l2, sizeof l2, "%s: forward", label);
    run_both(l2, LOOM_OP_CONV2D, &a, c->bias ? 3 : 2, fin, 4, ys, nthreads);
    a.conv.relu = false; /* forward only */
    const loom__tview bdin[2] = {view(dy, 4, ys), view(w, 4, ws)};
    snprintf(l2, sizeof l2, "%s: backward data", label);
    run_both(l2, LOOM_OP_CONV2D_BWD_DATA, &a, 2, bdin, 4, xs, nthreads);
    const loom__tview bwin[2] = {view(x, 4, xs), view(dy, 4, ys)};
    snprintf(l2, sizeof l2, "%s: backward weight", label);
    run_both(l2, LOOM_OP_CONV2D_BWD_WEIGHT, &a, 2, bwin, 4, ws, nthreads);
    free(x), free(w), free(b), free(dy);
}

/* _i: bit 0 = 2 threads, bit 1 = plain layout. */
START_TEST(test_conv_vs_ref)
{
    const int nthreads = 1 + (_i & 1);
    const bool blocked = !(_i & 2);
    loom__onednn_set_conv_layout(blocked ? LOOM__ONEDNN_LAYOUT_BLOCKED : LOOM__ONEDNN_LAYOUT_PLAIN);
    rng_seed(100 + (uint64_t)_i);
    for (int i = 0; i < N_FIXED_CONV; i++) conv_case(&conv_cfgs[i], nthreads, blocked ? "blocked" : "plain");
    for (int i = 0; i < N_RANDOM_CONV; i++) {
        conv_cfg c = random_conv();
        conv_case(&c, nthreads, blocked ? "blocked" : "plain");
    }
}
END_TEST

/* Winograd (LOOM_ONEDNN_CONV_ALGO): 3x3 stride-1 convolutions with at
 * least 16 channels each way, forward (bias, fused relu), backward-data and
 * backward-weight, against ref at the same 1e-4 as direct; the programs are
 * really built on Winograd primitives where oneDNN's ISA has AVX-512 (its
 * only Winograd kernels), and never when the algorithm is direct or the
 * shape does not qualify. Auto follows the ISA and the size rule. */
static const conv_cfg wino_cfgs[] = {
    {2, 16, 32, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, true},
    {3, 32, 16, 9, 11, 3, 3, 1, 1, 0, 0, 1, 1, 1, false, false}, /* no padding, odd sizes */
    {1, 64, 64, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, false},
    {2, 48, 32, 13, 10, 3, 3, 1, 1, 1, 1, 1, 1, 1, false, true},
    {2, 16, 16, 32, 30, 3, 3, 1, 1, 1, 1, 1, 1, 1, true, false}, /* 2 x 8 x 8 tiles */
    {80, 16, 16, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, false, false}, /* 80 tiles, a quarter inside */
};
/* Whether auto takes Winograd for each (conv.c's winograd_pays: 64+ tiles,
 * half their outputs inside the image). */
static const bool wino_pays[] = {false, false, false, false, true, false};

static int64_t wino_built(const conv_cfg *c, int nthreads, int algo)
{
    loom__onednn_set_conv_algo(algo);
    loom__onednn_cache_clear();
    const int64_t before = loom__onednn_conv_winograd_programs();
    conv_case(c, nthreads, algo == LOOM__ONEDNN_ALGO_WINOGRAD ? "winograd" : "auto/direct");
    return loom__onednn_conv_winograd_programs() - before;
}

START_TEST(test_conv_winograd)
{
    rng_seed(150);
    loom__onednn_set_conv_layout(LOOM__ONEDNN_LAYOUT_BLOCKED);
    const bool avx512 = loom__onednn_isa_avx512();
    for (int i = 0; i < (int)(sizeof wino_cfgs / sizeof wino_cfgs[0]); i++) {
        for (int nthreads = 1; nthreads <= 2; nthreads++) {
            const int64_t w = wino_built(&wino_cfgs[i], nthreads, LOOM__ONEDNN_ALGO_WINOGRAD);
            /* Forward, backward-data, backward-weight. */
            if (avx512) ck_assert_msg(w == 3, "config %d: %lld of 3 programs on Winograd", i, (long long)w);
            ck_assert_int_eq(wino_built(&wino_cfgs[i], nthreads, LOOM__ONEDNN_ALGO_DIRECT), 0);
            ck_assert_int_eq(wino_built(&wino_cfgs[i], nthreads, LOOM__ONEDNN_ALGO_AUTO), avx512 && wino_pays[i] ? 3 : 0);
        }
    }
    /* Not 3x3 stride 1, or too few channels: direct even when asked. */
    const conv_cfg direct_only[] = {
        {2, 16, 32, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1, 1, false, false}, /* stride 2 */
        {2, 1, 32, 14, 14, 3, 3, 1, 1, 0, 0, 1, 1, 1, false, false},  /* 1 input channel (SimpleCNN conv1) */
        {2, 16, 16, 9, 9, 3, 3, 1, 1, 2, 2, 2, 2, 1, false, false},   /* dilation 2 */
        {2, 32, 32, 9, 9, 3, 3, 1, 1, 1, 1, 1, 1, 2, false, false},   /* groups 2 */
    };
    for (int i = 0; i < (int)(sizeof direct_only / sizeof direct_only[0]); i++)
        ck_assert_int_eq(wino_built(&direct_only[i], 2, LOOM__ONEDNN_ALGO_WINOGRAD), 0);
    loom__onednn_set_conv_algo(LOOM__ONEDNN_ALGO_AUTO);
    loom__onednn_set_conv_layout(LOOM__ONEDNN_LAYOUT_AUTO);
}
END_TEST

/* ---- pooling ---------------------------------------------------------------------- */

static int64_t pool_out(int64_t in, int k, int s, int p, bool ceil_mode)
{
    const int64_t num = in + 2 * p - k;
    int64_t o = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--;
    return o;
}

typedef struct pool_cfg {
    int n, c, h, w, kh, kw, sh, sw, ph, pw;
    bool ceil_mode, include_pad;
    int adaptive_oh, adaptive_ow; /* > 0: adaptive to this size */
} pool_cfg;

static const pool_cfg pool_cfgs[] = {
    {1, 3, 8, 8, 2, 2, 2, 2, 0, 0, false, true, 0, 0},
    {3, 5, 9, 11, 3, 3, 2, 2, 1, 1, false, true, 0, 0},
    {2, 4, 10, 7, 3, 2, 3, 1, 1, 1, false, false, 0, 0},
    {2, 3, 7, 7, 2, 2, 2, 2, 0, 0, true, false, 0, 0},  /* ceil: last window past H (exclude pad) */
    {1, 2, 9, 9, 3, 3, 2, 2, 1, 1, true, true, 0, 0},   /* ceil, include pad, window ends at H+pad */
    {3, 6, 13, 12, 5, 4, 3, 3, 2, 2, false, false, 0, 0},
    {2, 8, 12, 12, 0, 0, 0, 0, 0, 0, false, false, 4, 3}, /* adaptive, divisible */
    {1, 16, 7, 7, 0, 0, 0, 0, 0, 0, false, false, 1, 1},  /* global average */
};
#define N_POOL ((int)(sizeof pool_cfgs / sizeof pool_cfgs[0]))

static void pool_attrs(const pool_cfg *c, loom__attrs *a, int64_t *oh, int64_t *ow)
{
    memset(a, 0, sizeof *a);
    if (c->adaptive_oh) {
        a->pool.adaptive = true;
        *oh = c->adaptive_oh, *ow = c->adaptive_ow;
        return;
    }
    a->pool.kernel[0] = c->kh, a->pool.kernel[1] = c->kw;
    a->pool.stride[0] = c->sh, a->pool.stride[1] = c->sw;
    a->pool.pad[0] = c->ph, a->pool.pad[1] = c->pw;
    a->pool.ceil_mode = c->ceil_mode;
    a->pool.count_include_pad = c->include_pad;
    *oh = pool_out(c->h, c->kh, c->sh, c->ph, c->ceil_mode);
    *ow = pool_out(c->w, c->kw, c->sw, c->pw, c->ceil_mode);
}

static void pool_case(const pool_cfg *c, int nthreads, bool ties)
{
    loom__attrs a;
    int64_t oh, ow;
    pool_attrs(c, &a, &oh, &ow);
    const int64_t xs[4] = {c->n, c->c, c->h, c->w}, ys[4] = {c->n, c->c, oh, ow};
    float *x = rand_buf(nelem(4, xs), 2, 0), *dy = rand_buf(nelem(4, ys), 1, 0);
    if (ties) /* few distinct values: first-maximum rule */
        for (int64_t i = 0; i < nelem(4, xs); i++) x[i] = (float)(rng_u32() % 3);
    char label[200];
    snprintf(label, sizeof label, "pool x [%d,%d,%d,%d] k (%d,%d) s (%d,%d) p (%d,%d)%s%s%s%s, %d thread(s)", c->n,
             c->c, c->h, c->w, c->kh, c->kw, c->sh, c->sw, c->ph, c->pw, c->ceil_mode ? " ceil" : "",
             c->include_pad ? " include_pad" : "", c->adaptive_oh ? " adaptive" : "", ties ? " ties" : "", nthreads);
    char l2[260];
    const loom__tview xin[1] = {view(x, 4, xs)}, dyin[1] = {view(dy, 4, ys)}, mbin[2] = {view(dy, 4, ys), view(x, 4, xs)};
    snprintf(l2, sizeof l2, "%s: max", label);
    run_both(l2, LOOM_OP_MAX_POOL2D, &a, 1, xin, 4, ys, nthreads);
    snprintf(l2, sizeof l2, "%s: max backward", label);
    run_both(l2, LOOM_OP_MAX_POOL2D_BWD, &a, 2, mbin, 4, xs, nthreads);
    snprintf(l2, sizeof l2, "%s: avg", label);
    run_both(l2, LOOM_OP_AVG_POOL2D, &a, 1, xin, 4, ys, nthreads);
    snprintf(l2, sizeof l2, "%s: avg backward", label);
    run_both(l2, LOOM_OP_AVG_POOL2D_BWD, &a, 1, dyin, 4, xs, nthreads);
    free(x), free(dy);
}

START_TEST(test_pool_vs_ref)
{
    rng_seed(200 + (uint64_t)_i);
    for (int i = 0; i < N_POOL; i++) {
        pool_case(&pool_cfgs[i], 1 + _i, false);
        pool_case(&pool_cfgs[i], 1 + _i, true);
    }
}
END_TEST

/* What oneDNN pools differently is rejected (ref runs it). */
START_TEST(test_pool_rejects)
{
    rng_seed(7);
    /* avg, count_include_pad, ceil mode with the last window past H + pad:
     * H 8, k 3, s 2, p 1 -> OH 5, last window rows 7..9 with H+pad = 9. */
    pool_cfg c = {1, 2, 8, 8, 3, 3, 2, 2, 1, 1, true, true, 0, 0};
    loom__attrs a;
    int64_t oh, ow;
    pool_attrs(&c, &a, &oh, &ow);
    ck_assert_int_eq(oh, 5);
    int64_t xs[4] = {1, 2, 8, 8}, ys[4] = {1, 2, oh, ow};
    float *x = rand_buf(nelem(4, xs), 1, 0), *dy = rand_buf(nelem(4, ys), 1, 0);
    loom__tview xin[1] = {view(x, 4, xs)}, dyin[1] = {view(dy, 4, ys)};
    ck_assert(!supports_call(LOOM_OP_AVG_POOL2D, &a, 1, xin, 4, ys));
    ck_assert(!supports_call(LOOM_OP_AVG_POOL2D_BWD, &a, 1, dyin, 4, xs));
    /* The same without count_include_pad, and max pooling, are exact. */
    run_both("avg exclude pad, ceil", LOOM_OP_AVG_POOL2D, &(loom__attrs){.pool = {{3, 3}, {2, 2}, {1, 1}, true, false, false}},
             1, xin, 4, ys, 1);
    run_both("max, ceil", LOOM_OP_MAX_POOL2D, &a, 1, xin, 4, ys, 2);
    /* Max pooling over NaN or -inf. */
    x[5] = NAN;
    ck_assert(!supports_call(LOOM_OP_MAX_POOL2D, &a, 1, xin, 4, ys));
    loom__tview mb[2] = {view(dy, 4, ys), view(x, 4, xs)};
    ck_assert(!supports_call(LOOM_OP_MAX_POOL2D_BWD, &a, 2, mb, 4, xs));
    x[5] = -INFINITY;
    ck_assert(!supports_call(LOOM_OP_MAX_POOL2D, &a, 1, xin, 4, ys));
    x[5] = INFINITY; /* +inf is an ordinary maximum */
    ck_assert(supports_call(LOOM_OP_MAX_POOL2D, &a, 1, xin, 4, ys));
    free(x), free(dy);

    /* Adaptive with sizes that do not divide. */
    int64_t xs2[4] = {2, 3, 10, 9}, ys2[4] = {2, 3, 3, 3};
    float *x2 = rand_buf(nelem(4, xs2), 1, 0);
    loom__tview xin2[1] = {view(x2, 4, xs2)};
    loom__attrs ad;
    memset(&ad, 0, sizeof ad);
    ad.pool.adaptive = true;
    ck_assert(!supports_call(LOOM_OP_AVG_POOL2D, &ad, 1, xin2, 4, ys2));
    free(x2);
}
END_TEST

/* ---- batch norm --------------------------------------------------------------------- */

static void bn_case(int ndim, const int64_t *shape, int nthreads)
{
    const int64_t n = nelem(ndim, shape), c = shape[1];
    const int64_t cs[1] = {c}, ss[2] = {2, c};
    float *x = rand_buf(n, 2, 0.5), *dy = rand_buf(n, 1, 0), *gamma = rand_buf(c, 0.5, 1), *beta = rand_buf(c, 1, 0);
    float *stats = nan_buf(2 * c);
    /* The batch's own statistics (ref BN_STATS), for the training case. */
    loom__attrs a;
    memset(&a, 0, sizeof a);
    a.bn.eps = 1e-5;
    loom__tview xin[1] = {view(x, ndim, shape)};
    loom__kcall sc = {.op = LOOM_OP_BN_STATS, .attrs = &a, .n_in = 1, .in = xin, .nthreads = nthreads};
    sc.out = view(stats, 2, ss);
    ck_assert_int_eq(loom__ref_backend.kernels[LOOM_OP_BN_STATS].run(&sc), LOOM_OK);
    /* Frozen statistics: unrelated to x. */
    float *frozen = malloc(sizeof(float) * 2 * (size_t)c);
    ck_assert(frozen);
    for (int64_t i = 0; i < c; i++) frozen[i] = (float)unit(), frozen[c + i] = (float)(0.5 + unit() * 0.4);

    char label[160], sh[80];
    int len = 0;
    for (int d = 0; d < ndim; d++) len += snprintf(sh + len, sizeof sh - (size_t)len, "%s%lld", d ? "," : "", (long long)shape[d]);
    for (int training = 0; training < 2; training++) {
        float *st = training ? stats : frozen;
        a.bn.training = training;
        const loom__tview fin[4] = {view(x, ndim, shape), view(st, 2, ss), view(gamma, 1, cs), view(beta, 1, cs)};
        snprintf(label, sizeof label, "batch norm x [%s] %s, %d thread(s): forward", sh, training ? "batch stats" : "frozen", nthreads);
        run_both(label, LOOM_OP_BN_FWD, &a, 4, fin, ndim, shape, nthreads);
        const loom__tview din[4] = {view(x, ndim, shape), view(dy, ndim, shape), view(st, 2, ss), view(gamma, 1, cs)};
        snprintf(label, sizeof label, "batch norm x [%s] %s, %d thread(s): backward data", sh,
                 training ? "training" : "frozen", nthreads);
        run_both(label, LOOM_OP_BN_BWD_DATA, &a, 4, din, ndim, shape, nthreads);
        snprintf(label, sizeof label, "batch norm x [%s] %s, %d thread(s): backward params", sh,
                 training ? "batch stats" : "frozen", nthreads);
        run_both(label, LOOM_OP_BN_BWD_PARAMS, &a, 3, din, 2, ss, nthreads);
    }
    free(x), free(dy), free(gamma), free(beta), free(stats), free(frozen);
}

START_TEST(test_bn_vs_ref)
{
    rng_seed(300 + (uint64_t)_i);
    const int nthreads = 1 + _i;
    bn_case(2, (const int64_t[]){37, 5}, nthreads);
    bn_case(3, (const int64_t[]){3, 7, 11}, nthreads);
    bn_case(4, (const int64_t[]){1, 3, 5, 7}, nthreads);
    bn_case(4, (const int64_t[]){5, 16, 9, 9}, nthreads);
    bn_case(4, (const int64_t[]){8, 32, 14, 14}, nthreads);
    bn_case(5, (const int64_t[]){2, 4, 3, 5, 6}, nthreads);
}
END_TEST

/* ---- softmax ---------------------------------------------------------------------- */

static void softmax_case(int ndim, const int64_t *shape, int axis, int nthreads, bool mask)
{
    const int64_t n = nelem(ndim, shape);
    float *x = rand_buf(n, 6, 0), *dy = rand_buf(n, 1, 0);
    if (mask) /* -inf entries (not whole lanes) */
        for (int64_t i = 0; i < n; i += 3) x[i] = -INFINITY;
    loom__attrs a;
    memset(&a, 0, sizeof a);
    a.axis.dim = axis;
    char label[200], sh[80];
    int len = 0;
    for (int d = 0; d < ndim; d++) len += snprintf(sh + len, sizeof sh - (size_t)len, "%s%lld", d ? "," : "", (long long)shape[d]);
    const loom__tview xin[1] = {view(x, ndim, shape)};
    for (int lg = 0; lg < 2; lg++) {
        snprintf(label, sizeof label, "%s x [%s] dim %d%s, %d thread(s)", lg ? "log_softmax" : "softmax", sh, axis,
                 mask ? " masked" : "", nthreads);
        float *y = run_both_keep(label, lg ? LOOM_OP_LOG_SOFTMAX : LOOM_OP_SOFTMAX, &a, 1, xin, ndim, shape,
                                 nthreads, true);
        const loom__tview bin[2] = {view(y, ndim, shape), view(dy, ndim, shape)};
        strncat(label, ": backward", sizeof label - strlen(label) - 1);
        run_both(label, lg ? LOOM_OP_LOG_SOFTMAX_BWD : LOOM_OP_SOFTMAX_BWD, &a, 2, bin, ndim, shape, nthreads);
        free(y);
    }
    free(x), free(dy);
}

START_TEST(test_softmax_vs_ref)
{
    rng_seed(400 + (uint64_t)_i);
    const int nt = 1 + _i;
    softmax_case(2, (const int64_t[]){7, 13}, 1, nt, false);
    softmax_case(2, (const int64_t[]){7, 13}, 0, nt, false);
    softmax_case(3, (const int64_t[]){3, 5, 4}, 1, nt, false);
    softmax_case(4, (const int64_t[]){2, 3, 4, 5}, 3, nt, false);
    softmax_case(4, (const int64_t[]){2, 3, 4, 5}, 0, nt, false);
    softmax_case(4, (const int64_t[]){4, 10, 6, 6}, 1, nt, true);
    softmax_case(1, (const int64_t[]){1000}, 0, nt, false);
    softmax_case(2, (const int64_t[]){64, 1000}, 1, nt, true);
}
END_TEST

START_TEST(test_softmax_rejects_nan)
{
    int64_t s[2] = {3, 4};
    float x[12] = {1, 2, 3, 4, 5, NAN, 7, 8, 9, 10, 11, 12};
    loom__attrs a = {.axis = {1}};
    loom__tview in[1] = {view(x, 2, s)};
    ck_assert(!supports_call(LOOM_OP_SOFTMAX, &a, 1, in, 2, s));
    ck_assert(!supports_call(LOOM_OP_LOG_SOFTMAX, &a, 1, in, 2, s));
    x[5] = INFINITY;
    ck_assert(!supports_call(LOOM_OP_SOFTMAX, &a, 1, in, 2, s));
    x[5] = -INFINITY;
    ck_assert(supports_call(LOOM_OP_SOFTMAX, &a, 1, in, 2, s));
}
END_TEST

/* ---- eltwise ---------------------------------------------------------------------- */

static const float specials[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1e-40f, -1e-40f, 1e-30f, -100.0f,
                                 100.0f, 88.0f, -88.0f, 1.0f, -1.0f, 0.5f, 3e38f, -3e38f};
#define N_SPECIALS ((int)(sizeof specials / sizeof specials[0]))

START_TEST(test_unary_vs_ref)
{
    rng_seed(500);
    static const loom__op exact[] = {LOOM_OP_ABS, LOOM_OP_SQRT, LOOM_OP_TANH, LOOM_OP_SIGMOID};
    const int64_t shapes[3][3] = {{1, 1, 7}, {3, 5, 17}, {4, 64, 300}};
    for (size_t k = 0; k < sizeof exact / sizeof exact[0]; k++) {
        for (int s = 0; s < 3; s++) {
            const int64_t n = nelem(3, shapes[s]);
            float *x = rand_buf(n, 8, exact[k] == LOOM_OP_SQRT ? 8 : 0);
            for (int i = 0; i < N_SPECIALS && i < n; i++) x[i] = specials[i];
            const loom__tview in[1] = {view(x, 3, shapes[s])};
            char label[100];
            snprintf(label, sizeof label, "%s of %lld elements", loom__op_name(exact[k]), (long long)n);
            float *y = run_both_keep(label, exact[k], NULL, 1, in, 3, shapes[s], 1 + s % 2, true);
            /* Signed zeros too, against libm (ref's polynomial tanh gives
             * +0 for -0; oneDNN, like tanhf and PyTorch, -0). */
            for (int64_t i = 0; i < n; i++) {
                const float e = exact[k] == LOOM_OP_ABS ? fabsf(x[i]) : exact[k] == LOOM_OP_SQRT ? sqrtf(x[i])
                                : exact[k] == LOOM_OP_TANH ? tanhf(x[i]) : 1.0f / (1.0f + expf(-x[i]));
                if (e == 0.0f)
                    CHECK(y[i] == 0.0f && signbit(e) == signbit(y[i]), "%s: element %lld: %g, libm gives %g", label,
                          (long long)i, y[i], e);
            }
            free(y), free(x);
        }
    }
}
END_TEST

START_TEST(test_unary_rejects)
{
    /* Mapped, but oneDNN differs on NaN / signed zero / subnormals. */
    static const loom__op inexact[] = {LOOM_OP_NEG, LOOM_OP_EXP, LOOM_OP_LOG, LOOM_OP_RELU, LOOM_OP_CLAMP};
    int64_t s[1] = {8};
    float x[8] = {0};
    loom__attrs a = {.clamp = {-1, 1}};
    loom__tview in[1] = {view(x, 1, s)};
    for (size_t k = 0; k < sizeof inexact / sizeof inexact[0]; k++)
        ck_assert_msg(!supports_call(inexact[k], &a, 1, in, 1, s), "%s", loom__op_name(inexact[k]));
    /* No kernel at all: matmul, sin, binary ops, batch statistics. */
    ck_assert(dnn_kernel(LOOM_OP_MATMUL)->run == NULL);
    ck_assert(dnn_kernel(LOOM_OP_SIN)->run == NULL);
    ck_assert(dnn_kernel(LOOM_OP_ADD)->run == NULL);
    ck_assert(dnn_kernel(LOOM_OP_BN_STATS)->run == NULL);
    /* Strided (broadcast) input: ref's job. */
    ck_assert(supports_call(LOOM_OP_TANH, NULL, 1, in, 1, s));
    in[0].strides[0] = 0;
    ck_assert(!supports_call(LOOM_OP_TANH, NULL, 1, in, 1, s));
    /* Not float32. */
    in[0].strides[0] = 1;
    in[0].dtype = LOOM_INT64;
    ck_assert(!supports_call(LOOM_OP_ABS, NULL, 1, in, 1, s));
}
END_TEST

START_TEST(test_relu_bwd_vs_ref)
{
    rng_seed(600 + (uint64_t)_i);
    const int64_t shapes[2][4] = {{1, 1, 1, 9}, {8, 16, 13, 13}};
    for (int s = 0; s < 2; s++) {
        const int64_t n = nelem(4, shapes[s]);
        float *y = rand_buf(n, 1, 0), *dy = rand_buf(n, 1, 0);
        for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0 ? y[i] : (i & 1 ? 0.0f : -0.0f);
        const loom__tview in[2] = {view(y, 4, shapes[s]), view(dy, 4, shapes[s])};
        run_both("relu_backward", LOOM_OP_RELU_BWD, NULL, 2, in, 4, shapes[s], 1 + _i);
        /* Non-finite values oneDNN would turn into NaN: rejected. */
        y[0] = 0, dy[0] = INFINITY;
        ck_assert(!supports_call(LOOM_OP_RELU_BWD, NULL, 2, in, 4, shapes[s]));
        dy[0] = NAN;
        ck_assert(!supports_call(LOOM_OP_RELU_BWD, NULL, 2, in, 4, shapes[s]));
        dy[0] = 1, y[0] = NAN;
        ck_assert(!supports_call(LOOM_OP_RELU_BWD, NULL, 2, in, 4, shapes[s]));
        free(y), free(dy);
    }
}
END_TEST

/* ---- cache -------------------------------------------------------------------------- */

/* A conv call on fresh random data of spatial size hw; run with the oneDNN
 * kernel and compared with ref. */
typedef struct conv_job {
    loom__attrs a;
    int64_t xs[4], ws[4], ys[4];
    float *x, *w, *ref;
    loom__tview in[2];
    int nthreads;
} conv_job;

static void conv_job_init(conv_job *j, int64_t hw, int nthreads)
{
    memset(j, 0, sizeof *j);
    j->a.conv.stride[0] = j->a.conv.stride[1] = 1;
    j->a.conv.pad[0] = j->a.conv.pad[1] = 1;
    j->a.conv.dilation[0] = j->a.conv.dilation[1] = 1;
    j->a.conv.groups = 1;
    const int64_t xs[4] = {2, 8, hw, hw}, ws[4] = {16, 8, 3, 3}, ys[4] = {2, 16, hw, hw};
    memcpy(j->xs, xs, sizeof xs), memcpy(j->ws, ws, sizeof ws), memcpy(j->ys, ys, sizeof ys);
    j->x = rand_buf(nelem(4, xs), 1, 0);
    j->w = rand_buf(nelem(4, ws), 1, 0);
    j->in[0] = view(j->x, 4, j->xs);
    j->in[1] = view(j->w, 4, j->ws);
    j->nthreads = nthreads;
    j->ref = nan_buf(nelem(4, ys));
    loom__kcall call = {.op = LOOM_OP_CONV2D, .attrs = &j->a, .n_in = 2, .in = j->in, .nthreads = 1};
    call.out = view(j->ref, 4, j->ys);
    ck_assert_int_eq(loom__ref_backend.kernels[LOOM_OP_CONV2D].run(&call), LOOM_OK);
}

static void conv_job_free(conv_job *j) { free(j->x), free(j->w), free(j->ref); }

/* Runs the oneDNN kernel; returns its status, and 0/1 in *ok for a match. */
static loom_status conv_job_run(const conv_job *j, bool *ok)
{
    const int64_t n = nelem(4, j->ys);
    float *out = nan_buf(n);
    loom__kcall call = {.op = LOOM_OP_CONV2D, .attrs = &j->a, .n_in = 2, .in = j->in, .nthreads = j->nthreads};
    call.out = view(out, 4, j->ys);
    loom_status st = loom__onednn_conv(&call);
    bool good = st == LOOM_OK;
    for (int64_t i = 0; good && i < n; i++)
        good = fabsf(out[i] - j->ref[i]) <= TOL * fmaxf(1.0f, fabsf(j->ref[i]));
    free(out);
    *ok = good;
    return st;
}

static void conv_job_check(const conv_job *j)
{
    bool ok;
    loom_status st = conv_job_run(j, &ok);
    ck_assert_msg(st == LOOM_OK, "%s", loom_last_error());
    ck_assert_msg(ok, "conv result differs from ref");
}

START_TEST(test_cache_hit)
{
    rng_seed(700);
    loom__onednn_cache_set_capacity(256);
    conv_job j;
    conv_job_init(&j, 9, 2);
    loom__onednn_cache_stats s0, s1, s2;
    loom__onednn_cache_stats(&s0);
    conv_job_check(&j);
    loom__onednn_cache_stats(&s1);
    ck_assert_int_eq(s1.misses - s0.misses, 1);
    ck_assert_int_eq(s1.hits - s0.hits, 0);
    conv_job_check(&j);
    loom__onednn_cache_stats(&s2);
    ck_assert_int_eq(s2.misses - s1.misses, 0);
    ck_assert_int_eq(s2.hits - s1.hits, 1);
    /* Another thread count is another program. */
    j.nthreads = 1;
    conv_job_check(&j);
    loom__onednn_cache_stats(&s1);
    ck_assert_int_eq(s1.misses - s2.misses, 1);
    conv_job_free(&j);
}
END_TEST

START_TEST(test_cache_eviction)
{
    rng_seed(701);
    loom__onednn_cache_clear();
    loom__onednn_cache_set_capacity(2);
    conv_job j[3];
    for (int i = 0; i < 3; i++) conv_job_init(&j[i], 6 + i, 1);
    loom__onednn_cache_stats s0, s1;
    loom__onednn_cache_stats(&s0);
    ck_assert_int_eq(s0.capacity, 2);
    for (int i = 0; i < 3; i++) conv_job_check(&j[i]);
    loom__onednn_cache_stats(&s1);
    ck_assert_int_eq(s1.misses - s0.misses, 3);
    ck_assert_int_eq(s1.evictions - s0.evictions, 1);
    ck_assert_int_eq(s1.size, 2);
    /* The least recently used (the first) was evicted: a miss; the third
     * is still there: a hit. */
    conv_job_check(&j[2]);
    conv_job_check(&j[0]);
    loom__onednn_cache_stats(&s0);
    ck_assert_int_eq(s0.hits - s1.hits, 1);
    ck_assert_int_eq(s0.misses - s1.misses, 1);
    ck_assert_int_eq(s0.evictions - s1.evictions, 1); /* j[1] went */
    /* Shrinking evicts at once. */
    loom__onednn_cache_set_capacity(1);
    loom__onednn_cache_stats(&s1);
    ck_assert_int_eq(s1.size, 1);
    for (int i = 0; i < 3; i++) conv_job_free(&j[i]);
}
END_TEST

START_TEST(test_cache_capacity_zero)
{
    rng_seed(702);
    loom__onednn_cache_set_capacity(0);
    conv_job j;
    conv_job_init(&j, 7, 2);
    loom__onednn_cache_stats s0, s1;
    loom__onednn_cache_stats(&s0);
    ck_assert_int_eq(s0.size, 0);
    conv_job_check(&j);
    conv_job_check(&j);
    loom__onednn_cache_stats(&s1);
    ck_assert_int_eq(s1.misses - s0.misses, 2);
    ck_assert_int_eq(s1.hits - s0.hits, 0);
    ck_assert_int_eq(s1.size, 0);
    conv_job_free(&j);
    loom__onednn_cache_set_capacity(256);
}
END_TEST

/* ---- threads ---------------------------------------------------------------------- */

typedef struct thread_arg {
    const conv_job *job;
    int iters;
    pthread_barrier_t *barrier;
    int failures;
    loom_status status;
} thread_arg;

static void *conv_thread(void *p)
{
    thread_arg *t = p;
    if (t->barrier) pthread_barrier_wait(t->barrier);
    for (int i = 0; i < t->iters; i++) {
        bool ok;
        loom_status st = conv_job_run(t->job, &ok);
        if (st != LOOM_OK) t->status = st;
        if (!ok) t->failures++;
    }
    return NULL;
}

/* Built on one pthread, run on another (and on this one): with oneDNN's
 * library scratchpad this crashes (runtime notes); Loom's user scratchpad
 * makes it fine. */
START_TEST(test_cross_thread)
{
    rng_seed(800);
    loom__onednn_cache_set_capacity(256);
    for (int blocked = 0; blocked < 2; blocked++) {
        loom__onednn_set_conv_layout(blocked ? LOOM__ONEDNN_LAYOUT_BLOCKED : LOOM__ONEDNN_LAYOUT_PLAIN);
        conv_job j;
        conv_job_init(&j, 12, 2);
        loom__onednn_cache_stats s0, s1;
        loom__onednn_cache_stats(&s0);
        thread_arg a = {&j, 1, NULL, 0, LOOM_OK}, b = {&j, 3, NULL, 0, LOOM_OK};
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, conv_thread, &a), 0);
        pthread_join(t, NULL);
        ck_assert_int_eq(pthread_create(&t, NULL, conv_thread, &b), 0);
        pthread_join(t, NULL);
        ck_assert_int_eq(a.status, LOOM_OK);
        ck_assert_int_eq(b.status, LOOM_OK);
        ck_assert_int_eq(a.failures + b.failures, 0);
        conv_job_check(&j);
        loom__onednn_cache_stats(&s1);
        ck_assert_int_eq(s1.misses - s0.misses, 1);
        ck_assert_int_eq(s1.hits - s0.hits, 4);
        conv_job_free(&j);
    }
}
END_TEST

/* Many threads run one cached program at once (each with its own scratch,
 * and all but one with memory objects of their own: sharing the program's
 * would send results to another thread's buffer);
 * also with capacity 1 and two shapes, so that programs are evicted while
 * other threads still run them. */
START_TEST(test_concurrent)
{
    rng_seed(801);
    enum { NT = 6 };
    for (int round = 0; round < 3; round++) {
        loom__onednn_cache_set_capacity(round == 2 ? 1 : 256);
        conv_job j[2];
        conv_job_init(&j[0], 10, 1 + round % 2);
        conv_job_init(&j[1], 11, 1 + round % 2);
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, NT);
        thread_arg args[NT];
        pthread_t th[NT];
        for (int i = 0; i < NT; i++) {
            args[i] = (thread_arg){&j[round == 2 ? i % 2 : 0], 4, &bar, 0, LOOM_OK};
            ck_assert_int_eq(pthread_create(&th[i], NULL, conv_thread, &args[i]), 0);
        }
        for (int i = 0; i < NT; i++) pthread_join(th[i], NULL);
        pthread_barrier_destroy(&bar);
        for (int i = 0; i < NT; i++) {
            ck_assert_msg(args[i].status == LOOM_OK, "round %d thread %d failed", round, i);
            ck_assert_msg(args[i].failures == 0, "round %d thread %d: %d wrong results", round, i, args[i].failures);
        }
        conv_job_free(&j[0]), conv_job_free(&j[1]);
    }
    loom__onednn_cache_set_capacity(256);
}
END_TEST

/* ---- errors, registry, contexts ----------------------------------------------------- */

START_TEST(test_error_message)
{
    conv_job j;
    rng_seed(900);
    conv_job_init(&j, 5, 1);
    /* w's input channels do not match x's: supports() says no, and run()
     * called anyway fails with a message instead of crashing. */
    j.in[1].shape[1] = 3;
    float out[2 * 16 * 25];
    loom__kcall call = {.op = LOOM_OP_CONV2D, .attrs = &j.a, .n_in = 2, .in = j.in, .nthreads = 1};
    call.out = view(out, 4, j.ys);
    ck_assert(!dnn_supports(&call));
    ck_assert_int_eq(loom__onednn_conv(&call), LOOM_ERR_BACKEND);
    const char *msg = loom_last_error();
    ck_assert_msg(strstr(msg, "conv2d (onednn)") && strstr(msg, "x [2, 8, 5, 5]") && strstr(msg, "w [16, 3, 3, 3]") &&
                      strstr(msg, "invalid_arguments"),
                  "message: %s", msg);
    conv_job_free(&j);
}
END_TEST

START_TEST(test_registry)
{
    rng_seed(901);
    conv_job j;
    conv_job_init(&j, 5, 1);
    float out[2 * 16 * 25];
    loom__kcall call = {.op = LOOM_OP_CONV2D, .attrs = &j.a, .n_in = 2, .in = j.in, .nthreads = 1};
    call.out = view(out, 4, j.ys);
    const char *name = NULL;
    ck_assert(loom__registry_pick(LOOM__BACKEND_AUTO, &call, &name) != NULL);
    ck_assert_str_eq(name, "onednn");
    ck_assert(loom__registry_pick(LOOM__BACKEND_ONEDNN, &call, &name) != NULL);
    ck_assert_str_eq(name, "onednn");
    ck_assert(loom__registry_pick(LOOM__BACKEND_REF, &call, &name) != NULL);
    ck_assert_str_eq(name, "ref");
    /* What oneDNN rejects falls through to ref. */
    call.op = LOOM_OP_MATMUL;
    ck_assert(loom__registry_pick(LOOM__BACKEND_ONEDNN, &call, &name) != NULL);
    ck_assert_str_eq(name, "ref");
    conv_job_free(&j);

    loom__backend_choice c;
    ck_assert(loom__backend_parse("onednn", &c) && c == LOOM__BACKEND_ONEDNN);
    loom_ctx *ctx = test_ctx(2, "onednn");
    ck_assert_str_eq(loom_ctx_backend(ctx), "onednn");
    loom_ctx_free(ctx);
    setenv("LOOM_BACKEND", "onednn", 1);
    ctx = test_ctx(1, NULL);
    ck_assert_str_eq(loom_ctx_backend(ctx), "onednn");
    loom_ctx_free(ctx);
    setenv("LOOM_BACKEND", "ref", 1);
    ctx = test_ctx(1, NULL);
    ck_assert_str_eq(loom_ctx_backend(ctx), "ref");
    loom_ctx_free(ctx);
    unsetenv("LOOM_BACKEND");
}
END_TEST

/* "auto" takes only the calls where oneDNN beat ref (onednn_backend.c);
 * LOOM_ONEDNN_OPS / loom__onednn_set_ops overrides it. */
static bool auto_takes(const loom__kcall *call)
{
    const loom__kernel *k = &loom__onednn_backend.kernels[call->op];
    return k->run && (!k->supports || k->supports(call));
}

START_TEST(test_auto_policy)
{
    rng_seed(902);
    loom__onednn_set_ops(NULL);
    conv_job j;
    conv_job_init(&j, 5, 1);
    float out[2 * 16 * 25];
    loom__kcall call = {.op = LOOM_OP_CONV2D, .attrs = &j.a, .n_in = 2, .in = j.in, .nthreads = 1};
    call.out = view(out, 4, j.ys);
    ck_assert(auto_takes(&call));
    /* Dense backward-weight: ref's on few cores without AVX-512, oneDNN's
     * with it or from 8 threads (the context's, kcall.budget). */
    float dyb[2 * 16 * 25], dwb[16 * 8 * 9];
    const loom__tview bwin[2] = {j.in[0], view(dyb, 4, j.ys)};
    loom__kcall bw = {.op = LOOM_OP_CONV2D_BWD_WEIGHT, .attrs = &j.a, .n_in = 2, .in = bwin, .nthreads = 1, .budget = 2};
    bw.out = view(dwb, 4, j.ws);
    ck_assert(dnn_supports(&bw));
    ck_assert(auto_takes(&bw) == loom__onednn_isa_avx512());
    bw.budget = 16;
    ck_assert(auto_takes(&bw));

    int64_t s[2] = {7, 13}, cs[1] = {13}, ss[2] = {2, 13};
    float *x = rand_buf(91, 1, 0), *y = nan_buf(91), *st = rand_buf(26, 0.2, 0.5), *g = rand_buf(13, 1, 0);
    loom__attrs a = {.axis = {1}};
    loom__tview in[4] = {view(x, 2, s), view(st, 2, ss), view(g, 1, cs), view(g, 1, cs)};
    loom__kcall sm = {.op = LOOM_OP_SOFTMAX, .attrs = &a, .n_in = 1, .in = in, .nthreads = 1};
    sm.out = view(y, 2, s);
    ck_assert(auto_takes(&sm)); /* innermost dim */
    a.axis.dim = 0;
    ck_assert(!auto_takes(&sm)); /* ref:any in oneDNN: slow */
    ck_assert(dnn_supports(&sm));
    const char *name;
    ck_assert(loom__registry_pick(LOOM__BACKEND_AUTO, &sm, &name) && strcmp(name, "ref") == 0);
    ck_assert(loom__registry_pick(LOOM__BACKEND_ONEDNN, &sm, &name) && strcmp(name, "onednn") == 0);

    loom__attrs ba = {.bn = {1e-5, false}};
    loom__kcall bn = {.op = LOOM_OP_BN_FWD, .attrs = &ba, .n_in = 4, .in = in, .nthreads = 1};
    bn.out = view(y, 2, s);
    ck_assert(dnn_supports(&bn));
    ck_assert(!auto_takes(&bn));
    loom__onednn_set_ops("all");
    ck_assert(auto_takes(&bn));
    loom__onednn_set_ops(NULL);

    loom__kcall un = {.op = LOOM_OP_SQRT, .n_in = 1, .in = in, .nthreads = 1};
    un.out = view(y, 2, s);
    ck_assert(auto_takes(&un));
    loom__onednn_set_ops("relu_backward,batch_norm,-sqrt");
    ck_assert(auto_takes(&bn) && !auto_takes(&un));
    loom__onednn_set_ops("nosuchop"); /* a warning, the defaults */
    ck_assert(!auto_takes(&bn) && auto_takes(&un));
    loom__onednn_set_ops(NULL);
    un.op = LOOM_OP_TANH;
    ck_assert(!auto_takes(&un));
    ck_assert(dnn_supports(&un));
    free(x), free(y), free(st), free(g);
    conv_job_free(&j);
}
END_TEST

/* A small CNN step through ops/ and graph/: the same values and gradients
 * under "onednn" and "ref", and the oneDNN backend actually ran. */
static void cnn_step(const char *backend, float *out, int64_t *nout)
{
    loom_ctx *ctx = test_ctx(2, backend);
    rng_seed(1000);
    const int64_t xs[4] = {3, 4, 11, 11}, ws[4] = {8, 4, 3, 3}, bs[1] = {8}, ps[4] = {3, 8, 6, 6};
    float *xv = rand_buf(nelem(4, xs), 1, 0), *wv = rand_buf(nelem(4, ws), 0.3, 0), *bv = rand_buf(8, 0.1, 0),
          *rv = rand_buf(nelem(4, ps), 1, 0);
    loom_tensor *x = leaf(ctx, xv, 4, xs), *w = leaf(ctx, wv, 4, ws), *b = leaf(ctx, bv, 1, bs);
    loom_tensor *r = loom_tensor_from_array(ctx, LOOM_FLOAT32, rv, 4, ps);
    loom_conv2d_opts co = {.padding = {1, 1}, .relu = true};
    loom_tensor *y = loom_conv2d(x, w, b, &co);
    loom_pool2d_opts mp = {.kernel = {2, 2}, .ceil_mode = true};
    loom_tensor *p = loom_max_pool2d(y, &mp); /* [3, 8, 6, 6] */
    loom_pool2d_opts ap = {.kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1}};
    loom_tensor *q = loom_avg_pool2d(p, &ap);
    loom_tensor *n = loom_batch_norm(q, NULL, NULL, NULL, NULL, true, 0.1, 1e-5);
    loom_tensor *s = loom_log_softmax(n, 1);
    loom_tensor *loss = loom_sum(loom_mul(s, r), 0, NULL, false);
    ck_assert_msg(loss != NULL, "%s", loom_last_error());
    ck_assert_msg(loom_backward(loss, NULL, NULL) == LOOM_OK, "%s", loom_last_error());
    loom_tensor *parts[4] = {loss, loom_tensor_grad(x), loom_tensor_grad(w), loom_tensor_grad(b)};
    int64_t k = 0;
    for (int i = 0; i < 4; i++) {
        float *v = copy_out_f32(parts[i]);
        const int64_t m = loom_tensor_numel(parts[i]);
        memcpy(out + k, v, sizeof(float) * (size_t)m);
        k += m;
        free(v);
    }
    *nout = k;
    free(xv), free(wv), free(bv), free(rv);
    loom_ctx_free(ctx);
}

START_TEST(test_end_to_end)
{
    loom__onednn_cache_set_capacity(256);
    enum { MAXN = 1 + 3 * 4 * 11 * 11 + 8 * 4 * 9 + 8 };
    static float a[MAXN], b[MAXN];
    int64_t na, nb;
    loom__onednn_cache_stats s0, s1;
    loom__onednn_cache_stats(&s0);
    cnn_step("onednn", a, &na);
    loom__onednn_cache_stats(&s1);
    ck_assert_msg(s1.misses - s0.misses >= 6, "the oneDNN backend ran %lld programs",
                  (long long)(s1.misses - s0.misses));
    cnn_step("ref", b, &nb);
    ck_assert_int_eq(na, nb);
    for (int64_t i = 0; i < na; i++)
        CHECK(fabs(a[i] - b[i]) <= 5e-4 * fmax(1.0, fabs(b[i])), "value %lld: onednn %.9g, ref %.9g", (long long)i,
              a[i], b[i]);
    cnn_step("auto", a, &na);
    ck_assert_int_eq(na, nb);
    for (int64_t i = 0; i < na; i++)
        CHECK(fabs(a[i] - b[i]) <= 5e-4 * fmax(1.0, fabs(b[i])), "value %lld: auto %.9g, ref %.9g", (long long)i,
              a[i], b[i]);
}
END_TEST

/* conv(x, w) under no_grad on context ctx, copied to out ([2,16,6,6]). */
static void conv_out(loom_ctx *ctx, loom_tensor *x, loom_tensor *w, float *out)
{
    loom_no_grad_begin(ctx);
    loom_scope_begin(ctx);
    loom_tensor *y = loom_conv2d(x, w, NULL, &(loom_conv2d_opts){.padding = {1, 1}});
    ck_assert_msg(y && loom_tensor_copy_to(y, out, sizeof(float) * 2 * 16 * 6 * 6) == LOOM_OK, "%s",
                  loom_last_error());
    loom_scope_end(ctx);
    loom_no_grad_end(ctx);
}

/* Reordered weights kept between calls (wcache.c): the third call with the
 * same weights hits; every result is bitwise the uncached one; new weights
 * (loom_tensor_assign) and another context's weights at perhaps the same
 * address are never served a stale copy. */
START_TEST(test_weight_cache)
{
    enum { NY = 2 * 16 * 6 * 6 };
    static float first[NY], y[NY], fresh[NY];
    loom__onednn_wcache_clear();
    loom__onednn_wcache_set_limit((int64_t)64 << 20);
    for (int round = 0; round < 2; round++) {
        loom_ctx_options o = {.num_threads = 1, .backend = "onednn", .seed = 11u + (unsigned)round};
        loom_ctx *ctx = loom_ctx_create(&o);
        loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(2, 8, 6, 6)), *w = loom_randn(ctx, LOOM_SHAPE(16, 8, 3, 3));
        int64_t h0, f0, h1, f1, bytes;
        loom__onednn_wcache_stats(&h0, &f0, NULL);
        conv_out(ctx, x, w, first);
        for (int call = 0; call < 3; call++) {
            conv_out(ctx, x, w, y);
            CHECK(memcmp(y, first, sizeof y) == 0, "round %d, call %d: a cached call differs", round, call);
        }
        loom__onednn_wcache_stats(&h1, &f1, &bytes);
        ck_assert_int_eq(f1 - f0, 1); /* the second call fills */
        ck_assert_int_eq(h1 - h0, 2); /* the third and fourth hit */
        ck_assert_int_gt(bytes, 0);
        if (round == 1) /* round 0's weights (another context, now freed) were not served */
            CHECK(memcmp(y, fresh, sizeof y) != 0, "round 1 computed round 0's result");
        memcpy(fresh, y, sizeof y);
        /* New weights: the next calls compute with them. */
        loom_scope_begin(ctx);
        ck_assert_int_eq(loom_tensor_assign(w, loom_mul_scalar(w, -0.5)), LOOM_OK);
        loom_scope_end(ctx);
        for (int call = 0; call < 3; call++) {
            conv_out(ctx, x, w, y);
            for (int i = 0; i < NY; i++)
                CHECK(fabsf(y[i] + 0.5f * first[i]) <= 1e-5f * (1 + fabsf(first[i])),
                      "call %d after assign, value %d: %g, expected %g", call, i, y[i], -0.5f * first[i]);
        }
        loom_ctx_free(ctx);
    }
    /* Off: no fills. */
    loom__onednn_wcache_set_limit(0);
    int64_t f2, f3;
    loom__onednn_wcache_stats(NULL, &f2, NULL);
    loom_ctx *ctx = test_ctx(1, "onednn");
    loom_tensor *x = loom_randn(ctx, LOOM_SHAPE(2, 8, 6, 6)), *w = loom_randn(ctx, LOOM_SHAPE(16, 8, 3, 3));
    for (int call = 0; call < 3; call++) conv_out(ctx, x, w, y);
    loom__onednn_wcache_stats(NULL, &f3, NULL);
    ck_assert_int_eq(f3, f2);
    loom_ctx_free(ctx);
    loom__onednn_wcache_set_limit(-1);
    loom__onednn_wcache_clear();
}
END_TEST

Suite *loom_suite_onednn(void)
{
    Suite *s = suite_create("onednn");
    TCase *tc = test_tcase(s, "kernels", 120);
    tcase_add_loop_test(tc, test_conv_vs_ref, 0, 4);
    tcase_add_test(tc, test_conv_winograd);
    tcase_add_loop_test(tc, test_pool_vs_ref, 0, 2);
    tcase_add_test(tc, test_pool_rejects);
    tcase_add_loop_test(tc, test_bn_vs_ref, 0, 2);
    tcase_add_loop_test(tc, test_softmax_vs_ref, 0, 2);
    tcase_add_test(tc, test_softmax_rejects_nan);
    tcase_add_test(tc, test_unary_vs_ref);
    tcase_add_test(tc, test_unary_rejects);
    tcase_add_loop_test(tc, test_relu_bwd_vs_ref, 0, 2);
    tc = test_tcase(s, "cache", 60);
    tcase_add_test(tc, test_cache_hit);
    tcase_add_test(tc, test_cache_eviction);
    tcase_add_test(tc, test_cache_capacity_zero);
    tcase_add_test(tc, test_weight_cache);
    tc = test_tcase(s, "threads", 60);
    tcase_add_test(tc, test_cross_thread);
    tcase_add_test(tc, test_concurrent);
    tc = test_tcase(s, "integration", 60);
    tcase_add_test(tc, test_error_message);
    tcase_add_test(tc, test_registry);
    tcase_add_test(tc, test_auto_policy);
    tcase_add_test(tc, test_end_to_end);
    return s;
}

#else /* !LOOM_HAVE_ONEDNN */

START_TEST(test_onednn_refused)
{
    loom_ctx_options o = {.num_threads = 1, .backend = "onednn"};
    assert_error(loom_ctx_create(&o), LOOM_ERR_INVALID_ARG, "built without oneDNN");
}
END_TEST

Suite *loom_suite_onednn(void)
{
    Suite *s = suite_create("onednn");
    TCase *tc = test_tcase(s, "not built", 0);
    tcase_add_test(tc, test_onednn_refused);
    return s;
}

#endif
