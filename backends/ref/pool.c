/*
 * backends/ref/pool.c - the portable C 2-D pooling kernels (NCHW, float32):
 * max and average pooling, forward and backward, plain (kernel, stride,
 * padding, ceil_mode already folded into the output's shape by ops/) or
 * adaptive.
 *
 * Shapes: x / dx [N,C,H,W], y / dy [N,C,OH,OW]. Each (n, c) plane is
 * independent, so threads take contiguous ranges of planes; every output
 * element is computed the same way whatever the thread count.
 *
 * Windows (PyTorch's rules, kernel.h):
 *   plain     rows hs = oh*sh - ph .. hs + kh - 1, clipped to [0, H);
 *   adaptive  rows floor(oh*H/OH) .. ceil((oh+1)*H/OH) - 1 (no padding);
 * columns likewise. Average pooling divides by the adaptive window's size,
 * or by the window clipped to [-pad, H + pad) with count_include_pad, or by
 * the window clipped to the input. Max pooling treats padding as -inf, keeps
 * the first maximum in row-major window order, and lets NaN win (the first
 * NaN of the window); its backward recomputes that argmax from x (no saved
 * indices) and sends dy there. Backward kernels zero their plane of dx and
 * add each dy into its window.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backends/ref/fastmath.h"
#include "backends/ref/nditer.h"
#include "backends/ref/ref.h"
#include "backends/registry.h"
#include "runtime/error.h"

/* Window elements visited per thread before a second thread pays. */
#define POOL_GRAIN 32768

typedef struct pool_geom {
    int64_t planes, H, W, OH, OW;
    int64_t B; /* channel block of a blocked layout (8 or 16; max pooling only), else 1: a plane is then H*W*B values */
    int64_t kh, kw, sh, sw, ph, pw;
    bool adaptive, include_pad;
} pool_geom;

/* One window: the clipped rows [h0, h1), columns [w0, w1), and the average's divisor. */
typedef struct pool_win {
    int64_t h0, h1, w0, w1;
    int64_t divisor;
} pool_win;

static inline void window(const pool_geom *g, int64_t oh, int64_t ow, pool_win *win)
{
    if (g->adaptive) {
        win->h0 = oh * g->H / g->OH;
        win->h1 = ((oh + 1) * g->H + g->OH - 1) / g->OH;
        win->w0 = ow * g->W / g->OW;
        win->w1 = ((ow + 1) * g->W + g->OW - 1) / g->OW;
        win->divisor = (win->h1 - win->h0) * (win->w1 - win->w0);
        return;
    }
    int64_t hs = oh * g->sh - g->ph, ws = ow * g->sw - g->pw;
    int64_t he = hs + g->kh, we = ws + g->kw;
    if (he > g->H + g->ph) he = g->H + g->ph;
    if (we > g->W + g->pw) we = g->W + g->pw;
    const int64_t pool_size = (he - hs) * (we - ws);
    if (hs < 0) hs = 0;
    if (ws < 0) ws = 0;
    if (he > g->H) he = g->H;
    if (we > g->W) we = g->W;
    if (he < hs) he = hs;
    if (we < ws) we = ws;
    win->h0 = hs, win->h1 = he, win->w0 = ws, win->w1 = we;
    win->divisor = g->include_pad ? pool_size : (he - hs) * (we - ws);
}

/* Checks dtypes and shapes; x is the [N,C,H,W] view, y the [N,C,OH,OW] one. */
static loom_status make_geom(const loom__kcall *call, int n_in, const loom__tview *x, const loom__tview *y,
                             pool_geom *g)
{
    const char *name = loom__op_name(call->op);
    if (call->n_in != n_in)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: expected %d inputs, got %d", name, n_in, call->n_in);
    for (int i = 0; i <= n_in; i++) {
        const loom__tview *v = i < n_in ? &call->in[i] : &call->out;
        if (v->dtype != LOOM_FLOAT32)
            return loom__set_error(LOOM_ERR_DTYPE, "%s: the ref backend supports float32 only, got %s", name,
                                   loom_dtype_name(v->dtype));
    }
    const loom__attrs *a = call->attrs;
    memset(g, 0, sizeof *g);
    g->adaptive = a->pool.adaptive;
    g->include_pad = a->pool.count_include_pad;
    if (!g->adaptive) {
        g->kh = a->pool.kernel[0], g->kw = a->pool.kernel[1];
        g->sh = a->pool.stride[0], g->sw = a->pool.stride[1];
        g->ph = a->pool.pad[0], g->pw = a->pool.pad[1];
    }
    bool ok = x->ndim == 4 && y->ndim == 4 && x->shape[0] == y->shape[0] && x->shape[1] == y->shape[1];
    if (ok) {
        g->B = loom__layout_block(call->in[0].layout);
        g->planes = x->shape[0] * x->shape[1] / g->B;
        g->H = x->shape[2], g->W = x->shape[3], g->OH = y->shape[2], g->OW = y->shape[3];
        ok = g->adaptive ? g->OH > 0 && g->OW > 0
                         : g->kh > 0 && g->kw > 0 && g->sh > 0 && g->sw > 0 && g->ph >= 0 && g->pw >= 0 &&
                               (g->OH - 1) * g->sh - g->ph < g->H && (g->OW - 1) * g->sw - g->pw < g->W;
    }
    for (int i = 1; ok && i < n_in; i++) { /* backward: in[1] is x (max) */
        const loom__tview *v = &call->in[i];
        ok = v->ndim == 4;
        for (int d = 0; ok && d < 4; d++) ok = v->shape[d] == x->shape[d];
    }
    if (!ok) {
        char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
        return loom__set_error(LOOM_ERR_SHAPE, "%s: shapes %s and %s do not fit the pooling window", name,
                               loom__fmt_shape(s1, sizeof s1, x->ndim, x->shape),
                               loom__fmt_shape(s2, sizeof s2, y->ndim, y->shape));
    }
    return LOOM_OK;
}

/* Threads for the planes: by the window elements visited in all. */
static int plane_team(const loom__kcall *call, const pool_geom *g)
{
    const int64_t per_out = g->adaptive ? ((g->H + g->OH - 1) / g->OH + 1) * ((g->W + g->OW - 1) / g->OW + 1)
                                        : g->kh * g->kw;
    int nt = loom__ref_team(call->nthreads, g->planes * g->OH * g->OW * per_out, POOL_GRAIN);
    return nt > g->planes ? (int)g->planes : nt;
}

/* The flat index (in the plane) of window win's maximum: the first one in
 * row-major order, NaN beating everything; -1 for an empty window. */
static inline int64_t argmax(const pool_geom *g, const float *x, const pool_win *win)
{
    int64_t best = -1;
    float m = -INFINITY;
    /* Selects, not branches: with ReLU's tied zeros a branch on "v > m"
     * mispredicts half the time. Once m is NaN nothing replaces it (v > NaN
     * is false, and a later NaN needs m == m), so the first NaN wins. */
    for (int64_t h = win->h0; h < win->h1; h++) {
        const float *r = x + h * g->W;
        for (int64_t w = win->w0; w < win->w1; w++) {
            const float v = r[w];
            const bool take = (best < 0) | (v > m) | ((v != v) & (m == m));
            m = take ? v : m;
            best = take ? h * g->W + w : best;
        }
    }
    return best;
}

/* The window's maximum (NaN if it holds one), -inf for an empty window. */
static inline float window_max(const pool_geom *g, const float *x, const pool_win *win)
{
    float m = -INFINITY;
    for (int64_t h = win->h0; h < win->h1; h++) {
        const float *r = x + h * g->W;
        for (int64_t w = win->w0; w < win->w1; w++) {
            const float v = r[w];
            m = (v > m) | (v != v) ? v : m;
        }
    }
    return m;
}

/* ---- max --------------------------------------------------------------- */

/* The 2x2, stride-2, unpadded case (every CNN's "max_pool2d(x, 2)") with
 * all windows inside the input: branch-free code over a row pair that gcc
 * vectorises, instead of the generic window walk.
 *
 * The cores below see the four values of each window through four arrays
 * a, b (top row) and c, d (bottom row); window (o, j) is at o * step + j,
 * its output at o * n + j. On a blocked layout a row of a plane is
 * [W][B], so o is the output column, j the channel in the block, and
 * b = a + B; on a plain one the row pair is first split into even and odd
 * columns (o = 0, j the output column). Masks are ints and the inner loop
 * has restrict arguments: with bools, or restrict pointers declared inside
 * the loops, gcc 12 does not vectorise them. */
static bool is_2x2(const pool_geom *g)
{
    return !g->adaptive && g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0 &&
           2 * g->OH <= g->H && 2 * g->OW <= g->W;
}

/* Whether v replaces the running maximum m: greater, or (when the data
 * may hold NaN) a NaN over a number. gcc vectorises the loops below only
 * without the NaN terms, so callers pass nan = 0 for data checked free of
 * NaN (has_nan) and get a second, scalar copy of the loop otherwise. */
#define TAKES(v, m, nan) (((v) > (m)) | ((nan) & ((v) != (v)) & ((m) == (m))))

/* y = the max of each window: the first maximum in a, b, c, d order (with
 * nan, the first NaN). */
static inline __attribute__((always_inline)) void max4_fwd(int64_t no, int64_t n, int64_t step,
                                                           const float *restrict a, const float *restrict b,
                                                           const float *restrict c, const float *restrict d,
                                                           float *restrict y, const int nan)
{
    for (int64_t o = 0; o < no; o++)
        for (int64_t j = 0; j < n; j++) {
            const int64_t k = o * step + j;
            const float va = a[k], vb = b[k], vc = c[k], vd = d[k];
            float m = va;
            m = TAKES(vb, m, nan) ? vb : m;
            m = TAKES(vc, m, nan) ? vc : m;
            y[o * n + j] = TAKES(vd, m, nan) ? vd : m;
        }
}

/* The backward: each window's dy goes to that first maximum, 0 to the
 * other three. da..dd are laid out as a..d. */
static inline __attribute__((always_inline)) void max4_bwd(int64_t no, int64_t n, int64_t step,
                                                           const float *restrict a, const float *restrict b,
                                                           const float *restrict c, const float *restrict d,
                                                           const float *restrict dy, float *restrict da,
                                                           float *restrict db, float *restrict dc,
                                                           float *restrict dd, const int nan)
{
    for (int64_t o = 0; o < no; o++)
        for (int64_t j = 0; j < n; j++) {
            const int64_t k = o * step + j;
            const float va = a[k], vb = b[k], vc = c[k], vd = d[k];
            const int tb = TAKES(vb, va, nan);
            const float mab = tb ? vb : va;
            const int tc = TAKES(vc, mab, nan);
            const float mabc = tc ? vc : mab;
            const int td = TAKES(vd, mabc, nan);
            /* dy's bits under a mask: selects here become masked stores. */
            const uint32_t md = -(uint32_t)td, mc = -(uint32_t)(tc & !td), mb = -(uint32_t)(tb & !tc & !td);
            const uint32_t ma = ~(md | mc | mb), gv = f32_bits(dy[o * n + j]);
            da[k] = bits_f32(gv & ma);
            db[k] = bits_f32(gv & mb);
            dc[k] = bits_f32(gv & mc);
            dd[k] = bits_f32(gv & md);
        }
}

/* The two copies, each a function of its own: restrict only holds for
 * the arguments of a function that is not inlined, and without it gcc
 * guards the vector loop with an overlap test that these arrays fail. */
static __attribute__((noinline)) void max4_fwd_num(int64_t no, int64_t n, int64_t step, const float *restrict a,
                                                   const float *restrict b, const float *restrict c,
                                                   const float *restrict d, float *restrict y)
{
    max4_fwd(no, n, step, a, b, c, d, y, 0);
}

static __attribute__((noinline)) void max4_fwd_nan(int64_t no, int64_t n, int64_t step, const float *restrict a,
                                                   const float *restrict b, const float *restrict c,
                                                   const float *restrict d, float *restrict y)
{
    max4_fwd(no, n, step, a, b, c, d, y, 1);
}

static __attribute__((noinline)) void max4_bwd_num(int64_t no, int64_t n, int64_t step, const float *restrict a,
                                                   const float *restrict b, const float *restrict c,
                                                   const float *restrict d, const float *restrict dy,
                                                   float *restrict da, float *restrict db, float *restrict dc,
                                                   float *restrict dd)
{
    max4_bwd(no, n, step, a, b, c, d, dy, da, db, dc, dd, 0);
}

static __attribute__((noinline)) void max4_bwd_nan(int64_t no, int64_t n, int64_t step, const float *restrict a,
                                                   const float *restrict b, const float *restrict c,
                                                   const float *restrict d, const float *restrict dy,
                                                   float *restrict da, float *restrict db, float *restrict dc,
                                                   float *restrict dd)
{
    max4_bwd(no, n, step, a, b, c, d, dy, da, db, dc, dd, 1);
}

/* True if the n floats hold a NaN (vectorised; no early exit). */
static bool has_nan(const float *restrict v, int64_t n)
{
    int any = 0;
    for (int64_t i = 0; i < n; i++) any |= v[i] != v[i];
    return any != 0;
}

/* Plain rows are split into even and odd columns TILE outputs at a time. */
#define TILE 256

static void deinterleave(int64_t n, const float *restrict r, float *restrict e, float *restrict o)
{
    for (int64_t i = 0; i < n; i++) {
        e[i] = r[2 * i];
        o[i] = r[2 * i + 1];
    }
}

static void interleave(int64_t n, const float *restrict e, const float *restrict o, float *restrict r)
{
    for (int64_t i = 0; i < n; i++) {
        r[2 * i] = e[i];
        r[2 * i + 1] = o[i];
    }
}

static void max2x2_fwd_blocked(const pool_geom *g, const float *x, float *y, int64_t p0, int64_t p1)
{
    const int64_t W = g->W, OW = g->OW, B = g->B;
    for (int64_t p = p0; p < p1; p++) {
        const bool nan = has_nan(x + p * g->H * W * B, g->H * W * B);
        for (int64_t oh = 0; oh < g->OH; oh++) {
            const float *r0 = x + (p * g->H + 2 * oh) * W * B, *r1 = r0 + W * B;
            float *yr = y + (p * g->OH + oh) * OW * B;
            (nan ? max4_fwd_nan : max4_fwd_num)(OW, B, 2 * B, r0, r0 + B, r1, r1 + B, yr);
        }
    }
}

/* dx of the windows; the rows and columns no window covers (odd H or W)
 * get 0. */
static void max2x2_bwd_blocked(const pool_geom *g, const float *dy, const float *x, float *dx, int64_t p0,
                               int64_t p1)
{
    const int64_t H = g->H, W = g->W, OW = g->OW, B = g->B;
    for (int64_t p = p0; p < p1; p++) {
        float *dxp = dx + p * H * W * B;
        const bool nan = has_nan(x + p * H * W * B, H * W * B);
        for (int64_t oh = 0; oh < g->OH; oh++) {
            const float *r0 = x + (p * H + 2 * oh) * W * B, *r1 = r0 + W * B;
            float *d0 = dxp + 2 * oh * W * B, *d1 = d0 + W * B;
            const float *dyr = dy + (p * g->OH + oh) * OW * B;
            (nan ? max4_bwd_nan : max4_bwd_num)(OW, B, 2 * B, r0, r0 + B, r1, r1 + B, dyr, d0, d0 + B, d1, d1 + B);
            for (int64_t k = 2 * OW * B; k < W * B; k++) d0[k] = d1[k] = 0.0f;
        }
        for (int64_t k = 2 * g->OH * W * B; k < H * W * B; k++) dxp[k] = 0.0f;
    }
}

/* Any other max window (3x3 stride 2 padded, ResNet's stem) on a blocked
 * plane [H][W][B]: the generic walk with the B channels of a pixel as
 * lanes of 8-float vectors (GCC vector extensions; B = 8 or 16), each lane
 * with the plain kernel's rule (the first maximum in row-major order, the
 * first NaN winning), so the results are bitwise the plain kernel's.
 * Selects are bit blends: C has no vector ?:. Other compilers than GCC and
 * clang do not get it (loom__ref_pool_blocked_ok refuses those windows). */
#if defined(__GNUC__)
#define MAXWIN_BLOCKED 1
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
#define BLEND(mask, a, b) ((v8f)(((v8i)(a) & (mask)) | ((v8i)(b) & ~(mask))))
#define BLENDI(mask, a, b) (((a) & (mask)) | ((b) & ~(mask)))

static inline v8f load8(const float *p)
{
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void maxwin_fwd_plane(const pool_geom *g, const float *xp, float *yp)
{
    const int64_t B = g->B, nv = B / 8;
    for (int64_t oh = 0; oh < g->OH; oh++)
        for (int64_t ow = 0; ow < g->OW; ow++) {
            pool_win win;
            window(g, oh, ow, &win);
            for (int64_t q = 0; q < nv; q++) {
                v8f m = (v8f){-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
                for (int64_t h = win.h0; h < win.h1; h++)
                    for (int64_t w = win.w0; w < win.w1; w++) {
                        const v8f v = load8(xp + (h * g->W + w) * B + q * 8);
                        const v8i take = (v > m) | (v != v);
                        m = BLEND(take, v, m);
                    }
                memcpy(yp + (oh * g->OW + ow) * B + q * 8, &m, sizeof m);
            }
        }
}

static void maxwin_bwd_plane(const pool_geom *g, const float *dyp, const float *xp, float *dxp)
{
    const int64_t B = g->B, nv = B / 8;
    memset(dxp, 0, sizeof(float) * (size_t)(g->H * g->W * B));
    for (int64_t oh = 0; oh < g->OH; oh++)
        for (int64_t ow = 0; ow < g->OW; ow++) {
            pool_win win;
            window(g, oh, ow, &win);
            for (int64_t q = 0; q < nv; q++) {
                v8f m = (v8f){-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
                v8i best = (v8i){-1, -1, -1, -1, -1, -1, -1, -1};
                for (int64_t h = win.h0; h < win.h1; h++)
                    for (int64_t w = win.w0; w < win.w1; w++) {
                        const int32_t at = (int32_t)(h * g->W + w);
                        const v8f v = load8(xp + (int64_t)at * B + q * 8);
                        const v8i take = (best < 0) | (v > m) | ((v != v) & (m == m));
                        m = BLEND(take, v, m);
                        const v8i atv = {at, at, at, at, at, at, at, at};
                        best = BLENDI(take, atv, best);
                    }
                const float *d = dyp + (oh * g->OW + ow) * B + q * 8;
                for (int j = 0; j < 8; j++)
                    if (best[j] >= 0) dxp[(int64_t)best[j] * B + q * 8 + j] += d[j];
            }
        }
}
#else
#define MAXWIN_BLOCKED 0
#endif

static void maxwin_fwd_blocked(const pool_geom *g, const float *x, float *y, int64_t p0, int64_t p1)
{
#if MAXWIN_BLOCKED
    const int64_t in = g->H * g->W * g->B, out = g->OH * g->OW * g->B;
    for (int64_t p = p0; p < p1; p++)
        maxwin_fwd_plane(g, x + p * in, y + p * out);
#else
    (void)g, (void)x, (void)y, (void)p0, (void)p1;
#endif
}

static void maxwin_bwd_blocked(const pool_geom *g, const float *dy, const float *x, float *dx, int64_t p0, int64_t p1)
{
#if MAXWIN_BLOCKED
    const int64_t in = g->H * g->W * g->B, out = g->OH * g->OW * g->B;
    for (int64_t p = p0; p < p1; p++)
        maxwin_bwd_plane(g, dy + p * out, x + p * in, dx + p * in);
#else
    (void)g, (void)dy, (void)x, (void)dx, (void)p0, (void)p1;
#endif
}

bool loom__ref_pool_blocked_ok(const loom__kcall *call)
{
    const loom__attrs *a = call->attrs;
    const bool fwd = call->op == LOOM_OP_MAX_POOL2D;
    if (!a || (!fwd && call->op != LOOM_OP_MAX_POOL2D_BWD) || call->n_in != (fwd ? 1 : 2) || !call->out_layout)
        return false;
    const loom__tview *x = &call->in[fwd ? 0 : 1], *y = fwd ? &call->out : &call->in[0];
    const int l = call->in[0].layout;
    if ((l != LOOM__LAYOUT_NCHW8C && l != LOOM__LAYOUT_NCHW16C) || call->in[call->n_in - 1].layout != l)
        return false;
    if (x->ndim != 4 || y->ndim != 4 || x->dtype != LOOM_FLOAT32 || x->shape[1] % loom__layout_block(l)) return false;
    /* 2x2 stride 2 has its own kernels; other windows the vector walk. */
    if (a->pool.adaptive) return false;
    const bool k2x2 = a->pool.kernel[0] == 2 && a->pool.kernel[1] == 2 && a->pool.stride[0] == 2 &&
                      a->pool.stride[1] == 2 && a->pool.pad[0] == 0 && a->pool.pad[1] == 0 &&
                      2 * y->shape[2] <= x->shape[2] && 2 * y->shape[3] <= x->shape[3];
    return k2x2 || MAXWIN_BLOCKED;
}

/* m = max(m, v), a NaN winning: as the old index-tracking form, which gcc
 * compiles to selects (with TAKES it branches, and ReLU's tied zeros
 * mispredict). */
#define MAX_STEP(m, v)                                                                                              \
    do {                                                                                                             \
        const float v_ = (v);                                                                                        \
        const bool take_ = v_ > (m) || (v_ != v_ && (m) == (m));                                                     \
        (m) = take_ ? v_ : (m);                                                                                      \
    } while (0)

/* Plain rows: scalar, which measured faster than splitting short rows
 * into even and odd columns (SimpleCNN's 24-wide rows: 0.7 vs 2 ms). */
static void max2x2_fwd_planes(const pool_geom *g, const float *x, float *y, int64_t p0, int64_t p1)
{
    const int64_t W = g->W, OW = g->OW;
    for (int64_t p = p0; p < p1; p++)
        for (int64_t oh = 0; oh < g->OH; oh++) {
            const float *r0 = x + (p * g->H + 2 * oh) * W, *r1 = r0 + W;
            float *yr = y + (p * g->OH + oh) * OW;
            for (int64_t ow = 0; ow < OW; ow++) {
                float m = r0[2 * ow];
                MAX_STEP(m, r0[2 * ow + 1]);
                MAX_STEP(m, r1[2 * ow]);
                MAX_STEP(m, r1[2 * ow + 1]);
                yr[ow] = m;
            }
        }
}

static void max2x2_bwd_planes(const pool_geom *g, const float *dy, const float *x, float *dx, int64_t p0, int64_t p1)
{
    const int64_t H = g->H, W = g->W, OW = g->OW;
    float a[TILE], b[TILE], c[TILE], d[TILE], da[TILE], db[TILE], dc[TILE], dd[TILE];
    for (int64_t p = p0; p < p1; p++) {
        const bool nan = has_nan(x + p * H * W, H * W);
        for (int64_t oh = 0; oh < g->OH; oh++) {
            const float *r0 = x + (p * H + 2 * oh) * W, *r1 = r0 + W;
            float *d0 = dx + (p * H + 2 * oh) * W, *d1 = d0 + W;
            const float *dyr = dy + (p * g->OH + oh) * OW;
            for (int64_t o0 = 0; o0 < OW; o0 += TILE) {
                const int64_t n = OW - o0 < TILE ? OW - o0 : TILE;
                deinterleave(n, r0 + 2 * o0, a, b);
                deinterleave(n, r1 + 2 * o0, c, d);
                (nan ? max4_bwd_nan : max4_bwd_num)(1, n, 0, a, b, c, d, dyr + o0, da, db, dc, dd);
                interleave(n, da, db, d0 + 2 * o0);
                interleave(n, dc, dd, d1 + 2 * o0);
            }
            for (int64_t w = 2 * OW; w < W; w++) d0[w] = d1[w] = 0.0f;
        }
        for (int64_t h = 2 * g->OH; h < H; h++) memset(dx + (p * H + h) * W, 0, sizeof(float) * (size_t)W);
    }
}

/* A kernel's work over planes [p0, p1): in0 and in1 (NULL when the op has
 * one input) and out, each [planes, ...] contiguous. */
typedef void (*planes_fn)(const pool_geom *g, const float *in0, const float *in1, float *out, int64_t p0,
                          int64_t p1);

/* Runs fn over all planes, split among plane_team's threads. */
static loom_status run_planes(const loom__kcall *call, const pool_geom *g, planes_fn fn)
{
    const float *in0 = call->in[0].data, *in1 = call->n_in > 1 ? call->in[1].data : NULL;
    float *out = call->out.data;
    const int nt = plane_team(call, g);
    if (nt <= 1) {
        fn(g, in0, in1, out, 0, g->planes);
        return LOOM_OK;
    }
    LOOM__OMP_TEAM(nt,
    {
        int64_t b, e;
        loom__nditer_part(g->planes, loom__omp_thread(), loom__omp_nthreads(), 1, &b, &e);
        fn(g, in0, in1, out, b, e);
    });
    return LOOM_OK;
}

static void max_fwd_planes(const pool_geom *g, const float *x, const float *unused, float *y, int64_t p0, int64_t p1)
{
    (void)unused;
    if (g->B > 1) {
        (is_2x2(g) ? max2x2_fwd_blocked : maxwin_fwd_blocked)(g, x, y, p0, p1);
        return;
    }
    if (is_2x2(g)) {
        max2x2_fwd_planes(g, x, y, p0, p1);
        return;
    }
    for (int64_t p = p0; p < p1; p++) {
        const float *xp = x + p * g->H * g->W;
        float *yp = y + p * g->OH * g->OW;
        for (int64_t oh = 0; oh < g->OH; oh++)
            for (int64_t ow = 0; ow < g->OW; ow++) {
                pool_win win;
                window(g, oh, ow, &win);
                yp[oh * g->OW + ow] = window_max(g, xp, &win);
            }
    }
}

/* MAX_POOL2D: in[0] x; out y. */
loom_status loom__ref_max_pool2d(const loom__kcall *call)
{
    pool_geom g;
    loom_status st = make_geom(call, 1, &call->in[0], &call->out, &g);
    return st != LOOM_OK ? st : run_planes(call, &g, max_fwd_planes);
}

static void max_bwd_generic(const pool_geom *g, const float *dy, const float *x, float *dx, int64_t p)
{
    const float *xp = x + p * g->H * g->W;
    const float *dyp = dy + p * g->OH * g->OW;
    float *dxp = dx + p * g->H * g->W;
    memset(dxp, 0, sizeof(float) * (size_t)(g->H * g->W));
    for (int64_t oh = 0; oh < g->OH; oh++)
        for (int64_t ow = 0; ow < g->OW; ow++) {
            pool_win win;
            window(g, oh, ow, &win);
            const int64_t i = argmax(g, xp, &win);
            if (i >= 0) dxp[i] += dyp[oh * g->OW + ow];
        }
}

static void max_bwd_planes(const pool_geom *g, const float *dy, const float *x, float *dx, int64_t p0, int64_t p1)
{
    if (g->B > 1) {
        (is_2x2(g) ? max2x2_bwd_blocked : maxwin_bwd_blocked)(g, dy, x, dx, p0, p1);
        return;
    }
    if (is_2x2(g)) {
        max2x2_bwd_planes(g, dy, x, dx, p0, p1);
        return;
    }
    for (int64_t p = p0; p < p1; p++) max_bwd_generic(g, dy, x, dx, p);
}

/* MAX_POOL2D_BWD: in[0] dy, in[1] x; out dx. */
loom_status loom__ref_max_pool2d_bwd(const loom__kcall *call)
{
    pool_geom g;
    loom_status st = make_geom(call, 2, &call->out, &call->in[0], &g);
    return st != LOOM_OK ? st : run_planes(call, &g, max_bwd_planes);
}

/* ---- average ----------------------------------------------------------- */

static void avg_fwd_planes(const pool_geom *g, const float *x, const float *unused, float *y, int64_t p0, int64_t p1)
{
    (void)unused;
    for (int64_t p = p0; p < p1; p++) {
        const float *xp = x + p * g->H * g->W;
        float *yp = y + p * g->OH * g->OW;
        for (int64_t oh = 0; oh < g->OH; oh++)
            for (int64_t ow = 0; ow < g->OW; ow++) {
                pool_win win;
                window(g, oh, ow, &win);
                float s = 0.0f;
                for (int64_t h = win.h0; h < win.h1; h++)
                    for (int64_t w = win.w0; w < win.w1; w++) s += xp[h * g->W + w];
                yp[oh * g->OW + ow] = win.divisor > 0 ? s / (float)win.divisor : 0.0f;
            }
    }
}

/* AVG_POOL2D: in[0] x; out y. */
loom_status loom__ref_avg_pool2d(const loom__kcall *call)
{
    pool_geom g;
    loom_status st = make_geom(call, 1, &call->in[0], &call->out, &g);
    return st != LOOM_OK ? st : run_planes(call, &g, avg_fwd_planes);
}

static void avg_bwd_planes(const pool_geom *g, const float *dy, const float *unused, float *dx, int64_t p0, int64_t p1)
{
    (void)unused;
    for (int64_t p = p0; p < p1; p++) {
        const float *dyp = dy + p * g->OH * g->OW;
        float *dxp = dx + p * g->H * g->W;
        memset(dxp, 0, sizeof(float) * (size_t)(g->H * g->W));
        for (int64_t oh = 0; oh < g->OH; oh++)
            for (int64_t ow = 0; ow < g->OW; ow++) {
                pool_win win;
                window(g, oh, ow, &win);
                if (win.divisor <= 0) continue;
                const float v = dyp[oh * g->OW + ow] / (float)win.divisor;
                for (int64_t h = win.h0; h < win.h1; h++)
                    for (int64_t w = win.w0; w < win.w1; w++) dxp[h * g->W + w] += v;
            }
    }
}

/* AVG_POOL2D_BWD: in[0] dy; out dx. */
loom_status loom__ref_avg_pool2d_bwd(const loom__kcall *call)
{
    pool_geom g;
    loom_status st = make_geom(call, 1, &call->out, &call->in[0], &g);
    return st != LOOM_OK ? st : run_planes(call, &g, avg_bwd_planes);
}
