/*
 * backends/ref/conv.c - the portable C 2-D convolution (NCHW, float32):
 * forward (CONV2D, with optional bias and fused ReLU), backward data
 * (CONV2D_BWD_DATA) and backward weight (CONV2D_BWD_WEIGHT), all on the
 * packed SGEMM of sgemm.h.
 *
 * Shapes (kernel.h): x [N,C,H,W], w [O,C/g,KH,KW], y [N,O,OH,OW]. Per image
 * n and group gi, with K = C/g*KH*KW and P = OH*OW:
 *
 *   forward      Y_g (O/g x P)   = W_g (O/g x K) * col (K x P)
 *   bwd data     col (K x P)     = W_g^T (K x O/g) * dY_g (O/g x P), then
 *                dX_g           += col2im(col)
 *   bwd weight   dW_g (O/g x K) += dY_g (O/g x P) * col^T (P x K), summed
 *                                  over the batch
 *
 * where col = im2col(x) holds, in row (c, kh, kw) and column (oh, ow), the
 * input pixel x[c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw] (0 in the
 * padding). W^T and col^T are not copied: SGEMM reads them through strides.
 * A 1x1 convolution with stride 1 and no padding needs no column matrix at
 * all: x's channel plane is it (and dX the product's output).
 *
 * The column matrix is built for a block of output rows at a time, at most
 * COL_CAP floats (so that SGEMM packs it from L2) unless that would leave
 * fewer than MIN_COLS columns: a large layer needs neither K x P floats per
 * thread nor a column matrix that has left the cache by the time it is
 * packed.
 *
 * Threads: when the batch has at least as many images as threads, each
 * thread takes a contiguous range of images with its own column buffer and
 * SGEMM workspace and runs single-threaded SGEMMs (the small per-image
 * products of a CNN do not split well); otherwise images run one after the
 * other and SGEMM uses all the threads. Backward weight's image-parallel
 * path sums into one buffer per thread and adds the buffers in thread order
 * at the end, so a given thread count always gives the same bits. The
 * workspace (all threads' columns and packing buffers, and backward
 * weight's partial sums) lives in the calling thread's scratch slots
 * (runtime/scratch.h), reused from call to call.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/ref/nditer.h"
#include "backends/ref/ref.h"
#include "backends/ref/sgemm.h"
#include "backends/registry.h"
#include "runtime/error.h"
#include "runtime/scratch.h"

/* Floats of one column-matrix block per thread (1 MiB, about one L2),
 * unless that leaves fewer than MIN_COLS columns. */
#define COL_CAP ((int64_t)1 << 18)
#define MIN_COLS 256
/* Below this many multiply-adds in all, one thread. */
#define TINY_MACS ((int64_t)1 << 16)
/* Backward-weight: at most this many partial dW sums (fixed groups of
 * images), taking at most this much memory beyond dw itself. */
#define BWDW_CHUNKS 16
#define BWDW_PART_BUDGET ((size_t)64 << 20)
/* Outputs of fewer pixels than this are summed over groups of images in
 * one GEMM; a chunk covers at least BWDW_CHUNK_COLS columns. */
#define BWDW_GROUP_COLS 256
#define BWDW_CHUNK_COLS 512

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

/* The geometry of one call. */
typedef struct conv_geom {
    int64_t N, C, H, W, O, KH, KW, OH, OW;
    int64_t g, Cg, Og;      /* groups, input and output channels per group */
    int64_t sh, sw, ph, pw, dh, dw;
    int64_t K, P;           /* Cg*KH*KW, OH*OW */
    int64_t rows;           /* output rows per column block */
    bool direct;            /* 1x1, stride 1, no padding: x is the column matrix */
    int xl, dyl;            /* backward-weight: layouts of x and dy (loom__layout) */
} conv_geom;

static loom_status shape_error(const loom__kcall *call)
{
    char s[3][LOOM__SHAPE_STR_MAX];
    const char *name = loom__op_name(call->op);
    for (int i = 0; i < 2; i++)
        loom__fmt_shape(s[i], sizeof s[i], call->in[i].ndim, call->in[i].shape);
    loom__fmt_shape(s[2], sizeof s[2], call->out.ndim, call->out.shape);
    return loom__set_error(LOOM_ERR_SHAPE, "%s: inconsistent shapes %s, %s -> %s (stride %d,%d pad %d,%d "
                           "dilation %d,%d groups %d)", name, s[0], s[1], s[2],
                           call->attrs->conv.stride[0], call->attrs->conv.stride[1],
                           call->attrs->conv.pad[0], call->attrs->conv.pad[1],
                           call->attrs->conv.dilation[0], call->attrs->conv.dilation[1],
                           call->attrs->conv.groups);
}

/* Checks the call and fills the geometry. x, w, y are the views that play
 * the roles of the input image, the weight and the output image. */
static loom_status make_geom(const loom__kcall *call, int n_in_min, int n_in_max, const loom__tview *x,
                             const loom__tview *w, const loom__tview *y, conv_geom *g)
{
    const char *name = loom__op_name(call->op);
    if (call->n_in < n_in_min || call->n_in > n_in_max)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: expected %d inputs, got %d", name, n_in_min,
                               call->n_in);
    for (int i = 0; i <= call->n_in; i++) {
        const loom__tview *v = i < call->n_in ? &call->in[i] : &call->out;
        if (v->dtype != LOOM_FLOAT32)
            return loom__set_error(LOOM_ERR_DTYPE, "%s: the ref backend supports float32 only, got %s", name,
                                   loom_dtype_name(v->dtype));
    }
    const loom__attrs *a = call->attrs;
    memset(g, 0, sizeof *g);
    if (x->ndim != 4 || w->ndim != 4 || y->ndim != 4) return shape_error(call);
    g->N = x->shape[0], g->C = x->shape[1], g->H = x->shape[2], g->W = x->shape[3];
    g->O = w->shape[0], g->KH = w->shape[2], g->KW = w->shape[3];
    g->OH = y->shape[2], g->OW = y->shape[3];
    g->g = a->conv.groups;
    g->sh = a->conv.stride[0], g->sw = a->conv.stride[1];
    g->ph = a->conv.pad[0], g->pw = a->conv.pad[1];
    g->dh = a->conv.dilation[0], g->dw = a->conv.dilation[1];
    if (g->g < 1 || g->sh < 1 || g->sw < 1 || g->dh < 1 || g->dw < 1 || g->ph < 0 || g->pw < 0 ||
        g->C % g->g || g->O % g->g)
        return shape_error(call);
    g->Cg = g->C / g->g;
    g->Og = g->O / g->g;
    const int64_t eh = g->H + 2 * g->ph - g->dh * (g->KH - 1) - 1;
    const int64_t ew = g->W + 2 * g->pw - g->dw * (g->KW - 1) - 1;
    if (w->shape[1] != g->Cg || y->shape[0] != g->N || y->shape[1] != g->O || eh < 0 || ew < 0 ||
        g->OH != eh / g->sh + 1 || g->OW != ew / g->sw + 1)
        return shape_error(call);
    if (call->n_in == 3 && (call->in[2].ndim != 1 || call->in[2].shape[0] != g->O)) return shape_error(call);
    g->K = g->Cg * g->KH * g->KW;
    g->P = g->OH * g->OW;
    g->direct = g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
    g->rows = g->OH;
    if (!g->direct && g->K * g->P > COL_CAP) {
        /* At most COL_CAP floats, but at least MIN_COLS columns (each block
         * repacks the weights), in blocks of equal height. */
        int64_t rows = COL_CAP / (g->K * g->OW);
        const int64_t min_rows = (MIN_COLS + g->OW - 1) / g->OW;
        if (rows < min_rows) rows = min_rows;
        if (rows < g->OH) {
            const int64_t nblocks = (g->OH + rows - 1) / rows;
            g->rows = (g->OH + nblocks - 1) / nblocks;
        }
    }
    return LOOM_OK;
}

/* The ow range [lo, hi) whose input column ow*s + off lies in [0, W). */
static void valid_cols(int64_t off, int64_t s, int64_t W, int64_t OW, int64_t *lo, int64_t *hi)
{
    int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t h = off < W ? (W - 1 - off) / s + 1 : 0;
    if (l > OW) l = OW;
    if (h > OW) h = OW;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
}

/* col (K x L, L = (oh1 - oh0) * OW) = im2col of output rows [oh0, oh1) of
 * the group whose Cg channel planes start at x. */
static void im2col_ld(const conv_geom *g, const float *restrict x, int64_t oh0, int64_t oh1, float *restrict col,
                      int64_t L)
{
    const int64_t OW = g->OW, W = g->W, H = g->H;
    for (int64_t c = 0; c < g->Cg; c++) {
        const float *xc = x + c * H * W;
        for (int64_t kh = 0; kh < g->KH; kh++)
            for (int64_t kw = 0; kw < g->KW; kw++) {
                float *row = col + ((c * g->KH + kh) * g->KW + kw) * L;
                const int64_t off = kw * g->dw - g->pw;
                int64_t lo, hi;
                valid_cols(off, g->sw, W, OW, &lo, &hi);
                for (int64_t oh = oh0; oh < oh1; oh++) {
                    float *r = row + (oh - oh0) * OW;
                    const int64_t ih = oh * g->sh - g->ph + kh * g->dh;
                    if (ih < 0 || ih >= H) {
                        memset(r, 0, sizeof(float) * (size_t)OW);
                        continue;
                    }
                    for (int64_t ow = 0; ow < lo; ow++) r[ow] = 0.0f;
                    const float *xr = xc + ih * W;
                    if (g->sw == 1) {
                        if (hi > lo) memcpy(r + lo, xr + lo + off, sizeof(float) * (size_t)(hi - lo));
                    } else {
                        for (int64_t ow = lo; ow < hi; ow++) r[ow] = xr[ow * g->sw + off];
                    }
                    for (int64_t ow = hi; ow < OW; ow++) r[ow] = 0.0f;
                }
            }
    }
}

/* im2col of output rows [oh0, oh1) into a [K, (oh1-oh0)*OW] matrix. */
static void im2col(const conv_geom *g, const float *restrict x, int64_t oh0, int64_t oh1, float *restrict col)
{
    im2col_ld(g, x, oh0, oh1, col, (oh1 - oh0) * g->OW);
}

/* The adjoint of im2col: adds col (K x L, output rows [oh0, oh1)) into the
 * group's Cg channel planes at dx. */
static void col2im(const conv_geom *g, const float *restrict col, int64_t oh0, int64_t oh1, float *restrict dx)
{
    const int64_t OW = g->OW, W = g->W, H = g->H, L = (oh1 - oh0) * OW;
    for (int64_t c = 0; c < g->Cg; c++) {
        float *xc = dx + c * H * W;
        for (int64_t kh = 0; kh < g->KH; kh++)
            for (int64_t kw = 0; kw < g->KW; kw++) {
                const float *row = col + ((c * g->KH + kh) * g->KW + kw) * L;
                const int64_t off = kw * g->dw - g->pw;
                int64_t lo, hi;
                valid_cols(off, g->sw, W, OW, &lo, &hi);
                for (int64_t oh = oh0; oh < oh1; oh++) {
                    const int64_t ih = oh * g->sh - g->ph + kh * g->dh;
                    if (ih < 0 || ih >= H) continue;
                    const float *r = row + (oh - oh0) * OW;
                    float *xr = xc + ih * W + off;
                    if (g->sw == 1) {
                        for (int64_t ow = lo; ow < hi; ow++) xr[ow] += r[ow];
                    } else {
                        for (int64_t ow = lo; ow < hi; ow++) xr[ow * g->sw] += r[ow];
                    }
                }
            }
    }
}

/* Per-thread workspace: a column block (unless direct) then SGEMM's. The
 * SGEMM sizes for the full and the last block are passed by the caller. */
typedef struct conv_ws {
    char *base;
    size_t col_bytes, gemm_bytes, per;
    int nt;
} conv_ws;

static loom_status ws_alloc(const loom__kcall *call, const conv_geom *g, int nt, int gemm_threads,
                            int64_t m, int64_t n_full, int64_t k_full, int64_t n_last, int64_t k_last,
                            conv_ws *ws)
{
    ws->nt = nt;
    ws->col_bytes = g->direct ? 0 : round64(sizeof(float) * (size_t)(g->K * g->rows * g->OW));
    size_t a = loom__sgemm_workspace_size(m, n_full, k_full, gemm_threads);
    size_t b = loom__sgemm_workspace_size(m, n_last, k_last, gemm_threads);
    ws->gemm_bytes = round64(a > b ? a : b);
    if (ws->gemm_bytes == 0) ws->gemm_bytes = 64;
    ws->per = ws->col_bytes + ws->gemm_bytes;
    const size_t total = ws->per * (size_t)nt;
    ws->base = loom__scratch(LOOM__SCRATCH_CONV, total); /* per-thread, reused: no page faults per call */
    if (!ws->base)
        return loom__set_error(LOOM_ERR_NOMEM, "%s: cannot allocate %zu bytes of workspace",
                               loom__op_name(call->op), total);
    return LOOM_OK;
}

static float *ws_col(const conv_ws *ws, int t) { return (float *)(ws->base + (size_t)t * ws->per); }
static void *ws_gemm(const conv_ws *ws, int t) { return ws->base + (size_t)t * ws->per + ws->col_bytes; }

/* Threads over images (each running single-threaded SGEMMs), or 1. */
static int image_team(const loom__kcall *call, const conv_geom *g)
{
    const int nthreads = call->nthreads < 1 ? 1 : call->nthreads;
    const int64_t macs = g->N * g->O * g->P * g->K;
    if (nthreads <= 1 || macs < TINY_MACS) return 1;
    return g->N >= nthreads ? nthreads : 1;
}

/* Threads for SGEMM when images run one after the other. */
static int gemm_team(const loom__kcall *call, const conv_geom *g, int image_nt)
{
    if (image_nt > 1) return 1;
    const int64_t macs = g->N * g->O * g->P * g->K;
    return call->nthreads > 1 && macs >= TINY_MACS ? call->nthreads : 1;
}

static loom_status worker_error(const loom__kcall *call, loom_status st)
{
    return loom__set_error(st, "%s: SGEMM failed in a worker thread (%s)", loom__op_name(call->op),
                           loom_status_str(st));
}

/* ---- forward ------------------------------------------------------------ */

/* Bias and ReLU on rows [o0, o0 + Og) of y's image, columns [p0, p0 + L). */
static void epilogue(const conv_geom *g, float *y, int64_t o0, int64_t p0, int64_t L, const float *bias, bool relu)
{
    for (int64_t o = o0; o < o0 + g->Og; o++) {
        float *restrict r = y + o * g->P + p0;
        const float b = bias ? bias[o] : 0.0f;
        if (relu)
            for (int64_t j = 0; j < L; j++) {
                const float v = r[j] + b;
                r[j] = v < 0.0f ? 0.0f : v; /* NaN stays */
            }
        else
            for (int64_t j = 0; j < L; j++) r[j] += b;
    }
}

static loom_status fwd_image(const conv_geom *g, const float *x, const float *w, const float *bias, bool relu,
                             float *y, int64_t n, float *col, void *gws, size_t gws_size, int gemm_threads)
{
    const float *xn = x + n * g->C * g->H * g->W;
    float *yn = y + n * g->O * g->P;
    for (int64_t gi = 0; gi < g->g; gi++) {
        const float *xg = xn + gi * g->Cg * g->H * g->W;
        const float *wg = w + gi * g->Og * g->K;
        for (int64_t oh0 = 0; oh0 < g->OH; oh0 += g->rows) {
            const int64_t oh1 = oh0 + g->rows < g->OH ? oh0 + g->rows : g->OH;
            const int64_t L = (oh1 - oh0) * g->OW, p0 = oh0 * g->OW;
            const float *b = xg;
            if (!g->direct) {
                im2col(g, xg, oh0, oh1, col);
                b = col;
            }
            loom_status st = loom__sgemm(g->Og, L, g->K, 1.0f, wg, g->K, 1, b, L, 1, 0.0f,
                                         yn + gi * g->Og * g->P + p0, g->P, gemm_threads, gws, gws_size);
            if (st != LOOM_OK) return st;
            if (bias || relu) epilogue(g, yn, gi * g->Og, p0, L, bias, relu);
        }
    }
    return LOOM_OK;
}

/* CONV2D: in[0] x, in[1] w, in[2] optional bias; out y. */
loom_status loom__ref_conv2d(const loom__kcall *call)
{
    conv_geom g;
    loom_status st = make_geom(call, 2, 3, &call->in[0], &call->in[1], &call->out, &g);
    if (st != LOOM_OK) return st;
    const float *x = call->in[0].data, *w = call->in[1].data;
    const float *bias = call->n_in == 3 ? call->in[2].data : NULL;
    const bool relu = call->attrs->conv.relu;
    float *y = call->out.data;

    const int nt = image_team(call, &g), gt = gemm_team(call, &g, nt);
    const int64_t last = g.OH % g.rows ? g.OH % g.rows : g.rows;
    conv_ws ws;
    st = ws_alloc(call, &g, nt, gt, g.Og, g.rows * g.OW, g.K, last * g.OW, g.K, &ws);
    if (st != LOOM_OK) return st;
    if (nt == 1) {
        for (int64_t n = 0; n < g.N && st == LOOM_OK; n++)
            st = fwd_image(&g, x, w, bias, relu, y, n, ws_col(&ws, 0), ws_gemm(&ws, 0), ws.gemm_bytes, gt);
                return st;
    }
    loom_status fail = LOOM_OK;
    LOOM__OMP_TEAM(nt,
    {
        const int t = loom__omp_thread();
        int64_t begin, end;
        loom__nditer_part(g.N, t, loom__omp_nthreads(), 1, &begin, &end);
        for (int64_t n = begin; n < end; n++) {
            loom_status s = fwd_image(&g, x, w, bias, relu, y, n, ws_col(&ws, t), ws_gemm(&ws, t), ws.gemm_bytes, 1);
            if (s != LOOM_OK) {
                LOOM__OMP_CRITICAL(loom_ref_conv_error)
                if (fail == LOOM_OK) fail = s;
                break;
            }
        }
    });
        return fail == LOOM_OK ? LOOM_OK : worker_error(call, fail);
}

/* ---- backward data ------------------------------------------------------ */

static loom_status bwd_data_image(const conv_geom *g, const float *dy, const float *w, float *dx, int64_t n,
                                  float *col, void *gws, size_t gws_size, int gemm_threads)
{
    const int64_t HW = g->H * g->W;
    const float *dyn = dy + n * g->O * g->P;
    float *dxn = dx + n * g->C * HW;
    if (!g->direct) memset(dxn, 0, sizeof(float) * (size_t)(g->C * HW));
    for (int64_t gi = 0; gi < g->g; gi++) {
        const float *wg = w + gi * g->Og * g->K;
        const float *dyg = dyn + gi * g->Og * g->P;
        float *dxg = dxn + gi * g->Cg * HW;
        if (g->direct) { /* dX_g (Cg x HW) = W_g^T dY_g, written in place */
            loom_status st = loom__sgemm(g->Cg, g->P, g->Og, 1.0f, wg, 1, g->K, dyg, g->P, 1, 0.0f, dxg, HW,
                                         gemm_threads, gws, gws_size);
            if (st != LOOM_OK) return st;
            continue;
        }
        for (int64_t oh0 = 0; oh0 < g->OH; oh0 += g->rows) {
            const int64_t oh1 = oh0 + g->rows < g->OH ? oh0 + g->rows : g->OH;
            const int64_t L = (oh1 - oh0) * g->OW, p0 = oh0 * g->OW;
            loom_status st = loom__sgemm(g->K, L, g->Og, 1.0f, wg, 1, g->K, dyg + p0, g->P, 1, 0.0f, col, L,
                                         gemm_threads, gws, gws_size);
            if (st != LOOM_OK) return st;
            col2im(g, col, oh0, oh1, dxg);
        }
    }
    return LOOM_OK;
}

/* CONV2D_BWD_DATA: in[0] dy [N,O,OH,OW], in[1] w; out dx [N,C,H,W]. */
loom_status loom__ref_conv2d_bwd_data(const loom__kcall *call)
{
    if (call->n_in != 2)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: expected 2 inputs, got %d", loom__op_name(call->op),
                               call->n_in);
    conv_geom g;
    loom_status st = make_geom(call, 2, 2, &call->out, &call->in[1], &call->in[0], &g);
    if (st != LOOM_OK) return st;
    const float *dy = call->in[0].data, *w = call->in[1].data;
    float *dx = call->out.data;

    const int nt = image_team(call, &g), gt = gemm_team(call, &g, nt);
    const int64_t last = g.OH % g.rows ? g.OH % g.rows : g.rows;
    conv_ws ws;
    if (g.direct)
        st = ws_alloc(call, &g, nt, gt, g.Cg, g.P, g.Og, g.P, g.Og, &ws);
    else
        st = ws_alloc(call, &g, nt, gt, g.K, g.rows * g.OW, g.Og, last * g.OW, g.Og, &ws);
    if (st != LOOM_OK) return st;
    if (nt == 1) {
        for (int64_t n = 0; n < g.N && st == LOOM_OK; n++)
            st = bwd_data_image(&g, dy, w, dx, n, ws_col(&ws, 0), ws_gemm(&ws, 0), ws.gemm_bytes, gt);
                return st;
    }
    loom_status fail = LOOM_OK;
    LOOM__OMP_TEAM(nt,
    {
        const int t = loom__omp_thread();
        int64_t begin, end;
        loom__nditer_part(g.N, t, loom__omp_nthreads(), 1, &begin, &end);
        for (int64_t n = begin; n < end; n++) {
            loom_status s = bwd_data_image(&g, dy, w, dx, n, ws_col(&ws, t), ws_gemm(&ws, t), ws.gemm_bytes, 1);
            if (s != LOOM_OK) {
                LOOM__OMP_CRITICAL(loom_ref_conv_error)
                if (fail == LOOM_OK) fail = s;
                break;
            }
        }
    });
        return fail == LOOM_OK ? LOOM_OK : worker_error(call, fail);
}

/* ---- backward weight ---------------------------------------------------- */

/* dw (O x K) += (or =, when `first`) the contribution of one image: xn
 * [C,H,W] and dyn [O,OH,OW], plain. */
static loom_status bwd_weight_image(const conv_geom *g, const float *xn, const float *dyn, float *dw, bool first,
                                    float *col, void *gws, size_t gws_size, int gemm_threads)
{
    for (int64_t gi = 0; gi < g->g; gi++) {
        const float *xg = xn + gi * g->Cg * g->H * g->W;
        const float *dyg = dyn + gi * g->Og * g->P;
        float *dwg = dw + gi * g->Og * g->K;
        for (int64_t oh0 = 0; oh0 < g->OH; oh0 += g->rows) {
            const int64_t oh1 = oh0 + g->rows < g->OH ? oh0 + g->rows : g->OH;
            const int64_t L = (oh1 - oh0) * g->OW, p0 = oh0 * g->OW;
            const float *b = xg; /* col^T (L x K): element (p, k) at col[k * L + p] */
            if (!g->direct) {
                im2col(g, xg, oh0, oh1, col);
                b = col;
            }
            const float beta = first && oh0 == 0 ? 0.0f : 1.0f;
            loom_status st = loom__sgemm(g->Og, g->K, L, 1.0f, dyg + p0, g->P, 1, b, 1, L, beta, dwg, g->K,
                                         gemm_threads, gws, gws_size);
            if (st != LOOM_OK) return st;
        }
    }
    return LOOM_OK;
}

/* Images [n0, n1) at once, for small outputs (P < BWDW_GROUP_COLS): one
 * GEMM over their columns side by side instead of one rank-P update of dw
 * per image, which for a ResNet's 1x1 or 2x2 late layers would stream the
 * whole dw through memory once per image. buf: K*L + Og*L floats, L =
 * (n1 - n0) * P: the columns, then dy's rows of the group packed. */
static loom_status bwd_weight_group(const conv_geom *g, const float *x, const float *dy, float *dw, int64_t n0,
                                    int64_t n1, bool first, float *buf, void *gws, size_t gws_size, int gemm_threads)

{
    const int64_t L = (n1 - n0) * g->P;
    float *col = buf, *dyp = buf + g->K * L;
    for (int64_t gi = 0; gi < g->g; gi++) {
        for (int64_t n = n0; n < n1; n++) {
            const float *xg = x + n * g->C * g->H * g->W + gi * g->Cg * g->H * g->W;
            im2col_ld(g, xg, 0, g->OH, col + (n - n0) * g->P, L);
            const float *dyg = dy + n * g->O * g->P + gi * g->Og * g->P;
            for (int64_t o = 0; o < g->Og; o++)
                memcpy(dyp + o * L + (n - n0) * g->P, dyg + o * g->P, sizeof(float) * (size_t)g->P);
        }
        loom_status st = loom__sgemm(g->Og, g->K, L, 1.0f, dyp, L, 1, col, 1, L, first ? 0.0f : 1.0f,
                                     dw + gi * g->Og * g->K, g->K, gemm_threads, gws, gws_size);
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}

/* Blocked x or dy (the layouts oneDNN's nodes leave): one image at a time
 * is converted to plain into the thread's scratch, where it stays in cache
 * for the GEMMs, instead of a separate pass over the whole tensors.
 * bwd_weight_plain_into writes image n's plain x and dy to to[0], to[1]
 * (copying a plain one); bwd_weight_plain_image points *xn / *dyn at
 * plain copies in img when they are blocked. */
static void bwd_weight_plain_into(const conv_geom *g, const float *xn, const float *dyn, float *const to[2])
{
    const int64_t xd[4] = {1, g->C, g->H, g->W}, yd[4] = {1, g->O, g->OH, g->OW};
    if (g->xl)
        loom__layout_to_plain(xn, to[0], g->xl, xd, 1);
    else
        memcpy(to[0], xn, sizeof(float) * (size_t)(g->C * g->H * g->W));
    if (g->dyl)
        loom__layout_to_plain(dyn, to[1], g->dyl, yd, 1);
    else
        memcpy(to[1], dyn, sizeof(float) * (size_t)(g->O * g->P));
}

static void bwd_weight_plain_image(const conv_geom *g, const float **xn, const float **dyn, float *img)
{
    if (!img) return;
    const int64_t xd[4] = {1, g->C, g->H, g->W}, yd[4] = {1, g->O, g->OH, g->OW};
    float *xs = img, *dys = img + g->C * g->H * g->W;
    if (g->xl) {
        loom__layout_to_plain(*xn, xs, g->xl, xd, 1);
        *xn = xs;
    }
    if (g->dyl) {
        loom__layout_to_plain(*dyn, dys, g->dyl, yd, 1);
        *dyn = dys;
    }
}

bool loom__ref_conv_bwd_weight_layouts_ok(const loom__kcall *call)
{
    if (call->op != LOOM_OP_CONV2D_BWD_WEIGHT || call->n_in != 2) return false;
    for (int i = 0; i < 2; i++) {
        const loom__tview *v = &call->in[i];
        const int l = v->layout;
        if (l == LOOM__LAYOUT_PLAIN) continue;
        if ((l != LOOM__LAYOUT_NCHW8C && l != LOOM__LAYOUT_NCHW16C) || v->ndim != 4 ||
            v->shape[1] % loom__layout_block(l))
            return false;
    }
    return true;
}

/* Chunk c of `chunks` (images [c*N/chunks, (c+1)*N/chunks), in order) into
 * dw (c == 0) or its partial buffer, with thread t's workspace. */
static loom_status bwd_weight_chunk(const conv_geom *g, const float *x, const float *dy, float *dw, float *part,
                                    size_t part_stride, int64_t c, int64_t chunks, const conv_ws *ws, int t, int gt)
{
    int64_t begin, end;
    loom__nditer_part(g->N, (int)c, (int)chunks, 1, &begin, &end);
    float *mine = c == 0 ? dw : part + (size_t)(c - 1) * part_stride;
    if (g->P < BWDW_GROUP_COLS) {
        /* Groups of images of about BWDW_GROUP_COLS columns; the grouping,
         * like the chunks, depends on the shapes only. */
        (void)ws, (void)t;
        const int64_t per = BWDW_GROUP_COLS / g->P, most = per < end - begin ? per : end - begin;
        /* The columns and packed dy, then the GEMM's workspace (the
         * largest group's; a smaller one needs no more). */
        const size_t fbytes = (sizeof(float) * (size_t)((g->K + g->Og) * most * g->P) + 63) / 64 * 64;
        const size_t gbytes = loom__sgemm_workspace_size(g->Og, g->K, most * g->P, gt);
        char *buf = loom__scratch(LOOM__SCRATCH_CONV_GROUP, fbytes + gbytes);
        if (!buf) return loom__set_error(LOOM_ERR_NOMEM, "conv2d_backward_weight: out of memory");
        const int64_t xsz = g->C * g->H * g->W, dysz = g->O * g->P;
        float *img = NULL;
        if (g->xl || g->dyl) {
            img = loom__scratch(LOOM__SCRATCH_CONV_IMAGE, sizeof(float) * (size_t)((xsz + dysz) * most));
            if (!img) return loom__set_error(LOOM_ERR_NOMEM, "conv2d_backward_weight: out of memory");
        }
        for (int64_t n0 = begin; n0 < end; n0 += per) {
            const int64_t n1 = n0 + per < end ? n0 + per : end;
            loom_status s;
            if (img) { /* the group's images, plain, side by side */
                float *xs = img, *dys = img + xsz * most;
                for (int64_t n = n0; n < n1; n++) {
                    float *const two[2] = {xs + (n - n0) * xsz, dys + (n - n0) * dysz};
                    bwd_weight_plain_into(g, x + n * xsz, dy + n * dysz, two);
                }
                s = bwd_weight_group(g, xs, dys, mine, 0, n1 - n0, n0 == begin, (float *)buf,
                                     gbytes ? buf + fbytes : NULL, gbytes, gt);
            } else {
                s = bwd_weight_group(g, x, dy, mine, n0, n1, n0 == begin, (float *)buf, gbytes ? buf + fbytes : NULL,
                                     gbytes, gt);
            }
            if (s != LOOM_OK) return s;
        }
        return LOOM_OK;
    }
    const int64_t xsz = g->C * g->H * g->W, dysz = g->O * g->P;
    float *img = NULL;
    if (g->xl || g->dyl) {
        img = loom__scratch(LOOM__SCRATCH_CONV_IMAGE, sizeof(float) * (size_t)(xsz + dysz));
        if (!img) return loom__set_error(LOOM_ERR_NOMEM, "conv2d_backward_weight: out of memory");
    }
    for (int64_t n = begin; n < end; n++) {
        const float *xn = x + n * xsz, *dyn = dy + n * dysz;
        bwd_weight_plain_image(g, &xn, &dyn, img);
        loom_status s = bwd_weight_image(g, xn, dyn, mine, n == begin, ws_col(ws, t), ws_gemm(ws, t), ws->gemm_bytes,
                                         gt);
        if (s != LOOM_OK) return s;
    }
    return LOOM_OK;
}

/* CONV2D_BWD_WEIGHT: in[0] x [N,C,H,W], in[1] dy [N,O,OH,OW]; out dw [O,C/g,KH,KW]. */
loom_status loom__ref_conv2d_bwd_weight(const loom__kcall *call)
{
    if (call->n_in != 2)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: expected 2 inputs, got %d", loom__op_name(call->op),
                               call->n_in);
    conv_geom g;
    loom_status st = make_geom(call, 2, 2, &call->in[0], &call->out, &call->in[1], &g);
    if (st != LOOM_OK) return st;
    g.xl = call->in[0].layout;
    g.dyl = call->in[1].layout;
    const float *x = call->in[0].data, *dy = call->in[1].data;
    float *dw = call->out.data;
    const int64_t dw_numel = g.O * g.K;
    if (g.N == 0 || g.P == 0) {
        memset(dw, 0, sizeof(float) * (size_t)dw_numel);
        return LOOM_OK;
    }

    /* The images are summed in `chunks` fixed groups (chunk c: images
     * [c*N/chunks, (c+1)*N/chunks), in order, into its own buffer; then
     * dw = chunk 0 + chunk 1 + ... in order). The grouping depends on the
     * shapes only, never on the thread count, so dW is bitwise the same at
     * every width: the scheduler may run this node with whatever cores are
     * free (docs/runtime.md section 5). Threads take whole chunks (so at
     * most `chunks` of them work); a lone chunk (one image) runs its
     * SGEMMs with every thread instead (SGEMM splits M and N only). */
    const size_t part_bytes = round64(sizeof(float) * (size_t)dw_numel);
    int64_t chunks = g.N < BWDW_CHUNKS ? g.N : BWDW_CHUNKS;
    /* Small outputs: fewer chunks, so that each is a GEMM of at least
     * BWDW_CHUNK_COLS columns rather than many thin ones and their sums. */
    if (g.N * g.P / BWDW_CHUNK_COLS < chunks) chunks = g.N * g.P / BWDW_CHUNK_COLS > 0 ? g.N * g.P / BWDW_CHUNK_COLS : 1;
    if ((int64_t)(BWDW_PART_BUDGET / part_bytes) + 1 < chunks) chunks = (int64_t)(BWDW_PART_BUDGET / part_bytes) + 1;
    const int64_t macs = g.N * g.O * g.P * g.K;
    int width = call->nthreads < 1 || macs < TINY_MACS ? 1 : call->nthreads;
    const int nt = width < chunks ? width : (int)chunks;
    const int gt = nt == 1 ? width : 1; /* SGEMM threads: only outside a team */
    const int64_t last = g.OH % g.rows ? g.OH % g.rows : g.rows;
    conv_ws ws;
    st = ws_alloc(call, &g, nt, gt, g.Og, g.K, g.rows * g.OW, g.K, last * g.OW, &ws);
    if (st != LOOM_OK) return st;
    /* Chunk 0 accumulates in dw itself; chunks 1.. in partial buffers. */
    float *part = NULL;
    if (chunks > 1) {
        part = loom__scratch(LOOM__SCRATCH_CONV_PARTS, part_bytes * (size_t)(chunks - 1));
        if (!part)
            return loom__set_error(LOOM_ERR_NOMEM, "%s: cannot allocate %zu bytes of partial sums",
                                   loom__op_name(call->op), part_bytes * (size_t)(chunks - 1));
    }
    const size_t part_stride = part_bytes / sizeof(float);
    loom_status fail = LOOM_OK;
    if (nt == 1) { /* no region: SGEMM opens its own team of gt */
        for (int64_t c = 0; c < chunks && fail == LOOM_OK; c++)
            fail = bwd_weight_chunk(&g, x, dy, dw, part, part_stride, c, chunks, &ws, 0, gt);
    } else {
        LOOM__OMP_TEAM(nt,
        {
            const int t = loom__omp_thread();
            for (int64_t c = t; c < chunks; c += loom__omp_nthreads()) {
                loom_status s = bwd_weight_chunk(&g, x, dy, dw, part, part_stride, c, chunks, &ws, t, 1);
                if (s != LOOM_OK) {
                    LOOM__OMP_CRITICAL(loom_ref_conv_error)
                    if (fail == LOOM_OK) fail = s;
                    break;
                }
            }
        });
    }
    if (fail == LOOM_OK && chunks > 1) {
        /* Fixed order per element; elements split over the team. */
        const int rt = loom__ref_team(width, dw_numel * (chunks - 1), 1 << 15);
        (void)rt; /* unused without OpenMP */
        LOOM__OMP_TEAM(rt,
        {
            int64_t i0, i1;
            loom__nditer_part(dw_numel, loom__omp_thread(), loom__omp_nthreads(), 16, &i0, &i1);
            for (int64_t c = 1; c < chunks; c++) {
                const float *restrict p = part + (size_t)(c - 1) * part_stride;
                for (int64_t i = i0; i < i1; i++) dw[i] += p[i];
            }
        });
    }
    return fail == LOOM_OK ? LOOM_OK : worker_error(call, fail);
}
