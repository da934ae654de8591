/*
 * backends/ref/norm.c - the portable C batch-normalization kernels (float32):
 * batch statistics, the normalization itself, and its two backward halves.
 *
 * Shapes: x, dy, y, dx [N,C,*] (any ndim >= 2, contiguous), viewed as
 * [N, C, S] with S the product of the trailing dims; statistics run over N
 * and S (M = N*S values per channel). stats [2,C]: row 0 the mean, row 1 the
 * biased variance; gamma, beta [C]; BN_BWD_PARAMS writes [2,C] (dgamma,
 * dbeta).
 *
 * x and dy may also be in one blocked layout (nChw8c / nChw16c, 4-D): the
 * reductions then sum a block's B channels side by side, each channel's
 * values in the plain order, so the statistics and sums are bitwise those
 * of the plain layout, and y or dx are written in the input's layout.
 *
 * Fused ReLU (attrs bn.relu, ops/norm.c): BN_FWD writes relu(y); the
 * backward halves take its output as an extra input and count dy only
 * where it is > 0. BN_BWD_DATA may take BN_BWD_PARAMS's result and read
 * its sums from there (inputs: loom__bn_mask_input, backends/kernel.h).
 *
 * Reductions are deterministic whatever the thread count: each channel's
 * values are cut into fixed pieces (one per image, long rows further into
 * pieces of PIECE values), each piece is summed in double by one thread
 * with four interleaved accumulators, and the pieces are combined per
 * channel in a fixed order. The variance is two-pass inside a piece (its
 * own mean first, then the squared deviations, all in cache) and the pieces
 * combine exactly: M2 = sum(M2_i + n_i * (mean_i - mean)^2). Elementwise
 * passes split the flattened [N*C*S] range among threads, so a few large
 * planes still parallelise.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/ref/nditer.h"
#include "backends/ref/ref.h"
#include "backends/registry.h"
#include "runtime/error.h"
#include "runtime/scratch.h"

/* A kernel's buffer from the calling thread's scratch (runtime/scratch.h):
 * no allocation at steady state, which captured graphs rely on. NULL with
 * the error set when out of memory. */
static void *norm_scratch(const loom__kcall *call, int slot, size_t bytes)
{
    void *p = loom__scratch(slot, bytes ? bytes : 1);
    if (!p)
        loom__set_error(LOOM_ERR_NOMEM, "%s: cannot allocate %zu bytes of workspace", loom__op_name(call->op), bytes);
    return p;
}

#define PIECE 16384        /* values per reduction piece (at most) */
#define BN_GRAIN 32768     /* elements per thread before a second thread pays */

typedef struct bn_geom {
    int64_t N, C, S, M;
    int64_t npiece; /* pieces per (n, c) row */
    int64_t B;      /* channel block of x's layout (1: plain; BN_STATS only) */
} bn_geom;

/* Checks dtypes (every view float32), x's ndim, and the shapes of the other
 * views: `like_x` marks the inputs (and out, as bit n_in) shaped like x; the
 * rest must be [2,C] when in `stats2` (same bits), else [C]. */
static loom_status check_call(const loom__kcall *call, int n_in, unsigned like_x, unsigned stats2, bn_geom *g)
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
    const loom__tview *x = &call->in[0];
    bool ok = x->ndim >= 2;
    for (int i = 0; ok && i <= n_in; i++) {
        const loom__tview *v = i < n_in ? &call->in[i] : &call->out;
        if (like_x >> i & 1u) {
            ok = v->ndim == x->ndim;
            for (int d = 0; ok && d < x->ndim; d++) ok = v->shape[d] == x->shape[d];
        } else if (stats2 >> i & 1u) {
            ok = v->ndim == 2 && v->shape[0] == 2 && v->shape[1] == x->shape[1];
        } else {
            ok = v->ndim == 1 && v->shape[0] == x->shape[1];
        }
        if (!ok) {
            char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
            return loom__set_error(LOOM_ERR_SHAPE, "%s: %s %d has shape %s, which does not fit x's %s", name,
                                   i < n_in ? "input" : "output", i < n_in ? i : 0,
                                   loom__fmt_shape(s1, sizeof s1, v->ndim, v->shape),
                                   loom__fmt_shape(s2, sizeof s2, x->ndim, x->shape));
        }
    }
    if (!ok) return loom__set_error(LOOM_ERR_SHAPE, "%s: x must have at least 2 dims, got %d", name, x->ndim);
    g->N = x->shape[0];
    g->C = x->shape[1];
    g->S = 1;
    for (int d = 2; d < x->ndim; d++) g->S *= x->shape[d];
    g->M = g->N * g->S;
    g->npiece = g->S > PIECE ? (g->S + PIECE - 1) / PIECE : 1;
    g->B = loom__layout_block(x->layout);
    return LOOM_OK;
}

static int team(const loom__kcall *call, int64_t work, int64_t units)
{
    int nt = loom__ref_team(call->nthreads, work, BN_GRAIN);
    return nt > units ? (int)(units > 0 ? units : 1) : nt;
}

/* Piece t of the reduction: its first element (flat index), length and
 * channel. Its elements lie g->B apart: in a blocked layout, element
 * (n, c, s) is at ((n*C/B + c/B)*S + s)*B + c%B. */
static inline void piece(const bn_geom *g, int64_t t, int64_t *start, int64_t *len, int64_t *c)
{
    const int64_t row = t / g->npiece, j = t % g->npiece;
    const int64_t lo = j * PIECE, hi = lo + PIECE < g->S ? lo + PIECE : g->S;
    *len = hi - lo;
    *c = row % g->C;
    if (g->B == 1) {
        *start = row * g->S + lo;
    } else {
        const int64_t n = row / g->C;
        *start = ((n * (g->C / g->B) + *c / g->B) * g->S + lo) * g->B + *c % g->B;
    }
}

/* Blocked layouts reduce a whole channel block at once: unit u is image n,
 * block cb and piece j (u = (n*C/B + cb) * npiece + j). Its first element
 * is *start; channel cb*B + jj of it is piece t0 + jj*npiece. */
static inline void blk_unit(const bn_geom *g, int64_t u, int64_t *start, int64_t *len, int64_t *t0)
{
    const int64_t rb = u / g->npiece, j = u % g->npiece, nb = g->C / g->B;
    const int64_t lo = j * PIECE, hi = lo + PIECE < g->S ? lo + PIECE : g->S;
    *len = hi - lo;
    *start = (rb * g->S + lo) * g->B;
    *t0 = ((rb / nb) * g->C + (rb % nb) * g->B) * g->npiece + j;
}

/* Sum of x[0..n-1] in double, four interleaved accumulators. */
static double sum_d(const float *restrict x, int64_t n)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += x[i];
        a1 += x[i + 1];
        a2 += x[i + 2];
        a3 += x[i + 3];
    }
    for (; i < n; i++) a0 += x[i];
    return (a0 + a1) + (a2 + a3);
}

/* Sum of (x - m)^2 in double. */
static double sumsq_d(const float *restrict x, int64_t n, double m)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const double d0 = x[i] - m, d1 = x[i + 1] - m, d2 = x[i + 2] - m, d3 = x[i + 3] - m;
        a0 += d0 * d0;
        a1 += d1 * d1;
        a2 += d2 * d2;
        a3 += d3 * d3;
    }
    for (; i < n; i++) {
        const double d = x[i] - m;
        a0 += d * d;
    }
    return (a0 + a1) + (a2 + a3);
}

/* Sums of dy and of dy * (x - m), in double; the _mask version counts dy
 * only where y > 0 (a fused ReLU's output): the values RELU_BWD would have
 * passed on, so the sums are bitwise those of the unfused pair. */
#define DY_PLAIN(i) dy[i]
/* dy where y > 0, else +0 (RELU_BWD's value), as a bit mask: no branch,
 * so the loops vectorize. Written as y[i] > 0 ? dy[i] : 0 (a conditional
 * load), gcc 12 -O3 with AVX-512 left the sums scalar, and vectorized the
 * blocked rows' nested loops into masked loads that gave wrong lanes (a
 * standalone reproduction: 3 of 560 values wrong; right at -O2). */
static inline float masked_dy(float yv, float d)
{
    uint32_t b;
    memcpy(&b, &d, sizeof b);
    b &= 0u - (uint32_t)(yv > 0.0f);
    memcpy(&d, &b, sizeof d);
    return d;
}
#define DY_MASKED(i) masked_dy(y[i], dy[i])
#define SUM_DY_D(name, DY)                                                                                   \
    static void name(const float *restrict x, const float *restrict dy, const float *restrict y, int64_t n,  \
                     double m, double *sdy, double *sdyx)                                                    \
    {                                                                                                        \
        (void)y;                                                                                             \
        double a0 = 0, a1 = 0, b0 = 0, b1 = 0;                                                               \
        int64_t i = 0;                                                                                       \
        for (; i + 2 <= n; i += 2) {                                                                         \
            const float d0 = DY(i), d1 = DY(i + 1);                                                          \
            a0 += d0;                                                                                        \
            a1 += d1;                                                                                        \
            b0 += (double)d0 * (x[i] - m);                                                                   \
            b1 += (double)d1 * (x[i + 1] - m);                                                               \
        }                                                                                                    \
        for (; i < n; i++) {                                                                                 \
            const float d0 = DY(i);                                                                          \
            a0 += d0;                                                                                        \
            b0 += (double)d0 * (x[i] - m);                                                                   \
        }                                                                                                    \
        *sdy = a0 + a1;                                                                                      \
        *sdyx = b0 + b1;                                                                                     \
    }
SUM_DY_D(sum_dy_d, DY_PLAIN)
SUM_DY_D(sum_dy_d_mask, DY_MASKED)
#undef SUM_DY_D

/* The blocked versions of the sums above, for the B channels of one block
 * at once: x points at channel 0 of the block at the piece's first
 * position, element (s, j) is x[s*B + j], and channel j gets exactly the
 * additions, in the order, of the plain function (so the statistics of a
 * blocked tensor are bitwise those of its plain copy), but B lanes wide:
 * vectors across the block's channels instead of one scalar chain per
 * channel (which, reading every B-th float, ran at ~1/3 of the memory's
 * speed). BLK_SUMS(B) defines them for a constant B (8 or 16) so that the
 * j loops vectorize. */
#define SUM_DY_BLK(B, name, DY)                                                                              \
    static void name(const float *restrict x, const float *restrict dy, const float *restrict y, int64_t n,  \
                     const double *restrict m, double *restrict sdy, double *restrict sdyx)                  \
    {                                                                                                        \
        (void)y;                                                                                             \
        double a0[B] = {0}, a1[B] = {0}, b0[B] = {0}, b1[B] = {0};                                           \
        int64_t i = 0;                                                                                       \
        for (; i + 2 <= n; i += 2)                                                                           \
            for (int j = 0; j < B; j++) {                                                                    \
                const float d0 = DY(i * B + j), d1 = DY((i + 1) * B + j);                                    \
                a0[j] += d0;                                                                                 \
                a1[j] += d1;                                                                                 \
                b0[j] += (double)d0 * (x[i * B + j] - m[j]);                                                 \
                b1[j] += (double)d1 * (x[(i + 1) * B + j] - m[j]);                                           \
            }                                                                                                \
        for (; i < n; i++)                                                                                   \
            for (int j = 0; j < B; j++) {                                                                    \
                const float d0 = DY(i * B + j);                                                              \
                a0[j] += d0;                                                                                 \
                b0[j] += (double)d0 * (x[i * B + j] - m[j]);                                                 \
            }                                                                                                \
        for (int j = 0; j < B; j++) {                                                                        \
            sdy[j] = a0[j] + a1[j];                                                                          \
            sdyx[j] = b0[j] + b1[j];                                                                         \
        }                                                                                                    \
    }
#define BLK_SUMS(B)                                                                                          \
    static void sum_blk##B(const float *restrict x, int64_t n, double *restrict out)                         \
    {                                                                                                        \
        double a0[B] = {0}, a1[B] = {0}, a2[B] = {0}, a3[B] = {0};                                           \
        int64_t i = 0;                                                                                       \
        for (; i + 4 <= n; i += 4)                                                                           \
            for (int j = 0; j < B; j++) {                                                                    \
                a0[j] += x[i * B + j];                                                                       \
                a1[j] += x[(i + 1) * B + j];                                                                 \
                a2[j] += x[(i + 2) * B + j];                                                                 \
                a3[j] += x[(i + 3) * B + j];                                                                 \
            }                                                                                                \
        for (; i < n; i++)                                                                                   \
            for (int j = 0; j < B; j++) a0[j] += x[i * B + j];                                               \
        for (int j = 0; j < B; j++) out[j] = (a0[j] + a1[j]) + (a2[j] + a3[j]);                              \
    }                                                                                                        \
    static void sumsq_blk##B(const float *restrict x, int64_t n, const double *restrict m, double *restrict out) \
    {                                                                                                        \
        double a0[B] = {0}, a1[B] = {0}, a2[B] = {0}, a3[B] = {0};                                           \
        int64_t i = 0;                                                                                       \
        for (; i + 4 <= n; i += 4)                                                                           \
            for (int j = 0; j < B; j++) {                                                                    \
                const double d0 = x[i * B + j] - m[j], d1 = x[(i + 1) * B + j] - m[j];                       \
                const double d2 = x[(i + 2) * B + j] - m[j], d3 = x[(i + 3) * B + j] - m[j];                 \
                a0[j] += d0 * d0;                                                                            \
                a1[j] += d1 * d1;                                                                            \
                a2[j] += d2 * d2;                                                                            \
                a3[j] += d3 * d3;                                                                            \
            }                                                                                                \
        for (; i < n; i++)                                                                                   \
            for (int j = 0; j < B; j++) {                                                                    \
                const double d = x[i * B + j] - m[j];                                                        \
                a0[j] += d * d;                                                                              \
            }                                                                                                \
        for (int j = 0; j < B; j++) out[j] = (a0[j] + a1[j]) + (a2[j] + a3[j]);                              \
    }                                                                                                        \
    SUM_DY_BLK(B, sum_dy_blk##B, DY_PLAIN)                                                                   \
    SUM_DY_BLK(B, sum_dy_blk##B##_mask, DY_MASKED)
BLK_SUMS(8)
BLK_SUMS(16)
#undef BLK_SUMS
#undef SUM_DY_BLK

/* reduce_dy picks one of the sums above per call. */
typedef void (*sum_dy_fn)(const float *, const float *, const float *, int64_t, double, double *, double *);
typedef void (*sum_dy_blk_fn)(const float *, const float *, const float *, int64_t, const double *, double *,
                              double *);

/* Runs body(t) for every piece t, split among nt threads. */
#define FOR_PIECES(nt, total, t, ...)                                                         \
    do {                                                                                       \
        if ((nt) <= 1) {                                                                       \
            for (int64_t t = 0; t < (total); t++) __VA_ARGS__;                                        \
        } else {                                                                               \
            LOOM__OMP_TEAM(nt,                                                             \
            {                                                                                  \
                int64_t b_, e_;                                                                \
                loom__nditer_part((total), loom__omp_thread(), loom__omp_nthreads(), 1, &b_, &e_); \
                for (int64_t t = b_; t < e_; t++) __VA_ARGS__;                                        \
            });                                                                                  \
        }                                                                                      \
    } while (0)

/* Per channel: sum(dy) and sum(dy * (x - mean)) over N and S, in double
 * (out[2c], out[2c+1]). */
static loom_status reduce_dy(const loom__kcall *call, const bn_geom *g, const float *x, const float *dy,
                             const float *y, const float *mean, double *out)
{
    const int64_t total = g->N * g->C * g->npiece;
    double *part = norm_scratch(call, LOOM__SCRATCH_NORM_PARTS, sizeof(double) * 2 * (size_t)total);
    if (!part) return LOOM_ERR_NOMEM;
    if (g->B == 1) {
        const sum_dy_fn sum = y ? sum_dy_d_mask : sum_dy_d;
        const int nt = team(call, g->N * g->C * g->S, total);
        FOR_PIECES(nt, total, t, {
            int64_t start, len, c;
            piece(g, t, &start, &len, &c);
            sum(x + start, dy + start, y ? y + start : NULL, len, mean[c], &part[2 * t], &part[2 * t + 1]);
        });
    } else {
        const int64_t units = total / g->B, B = g->B, np = g->npiece;
        const sum_dy_blk_fn sum = B == 16 ? (y ? sum_dy_blk16_mask : sum_dy_blk16) : (y ? sum_dy_blk8_mask : sum_dy_blk8);
        const int nt = team(call, g->N * g->C * g->S, units);
        FOR_PIECES(nt, units, u, {
            int64_t start, len, t0;
            blk_unit(g, u, &start, &len, &t0);
            double m[16], sdy[16], sdyx[16];
            const int64_t c0 = t0 / np % g->C;
            for (int64_t jj = 0; jj < B; jj++) m[jj] = mean[c0 + jj];
            sum(x + start, dy + start, y ? y + start : NULL, len, m, sdy, sdyx);
            for (int64_t jj = 0; jj < B; jj++) {
                part[2 * (t0 + jj * np)] = sdy[jj];
                part[2 * (t0 + jj * np) + 1] = sdyx[jj];
            }
        });
    }
    for (int64_t c = 0; c < g->C; c++) out[2 * c] = out[2 * c + 1] = 0.0;
    for (int64_t t = 0; t < total; t++) { /* fixed order: n, then piece */
        int64_t start, len, c;
        piece(g, t, &start, &len, &c);
        out[2 * c] += part[2 * t];
        out[2 * c + 1] += part[2 * t + 1];
    }
    return LOOM_OK;
}

static double invstd_of(double var, double eps) { return 1.0 / sqrt(var + eps); }

/* BN_STATS: in[0] x; out stats [2,C]. */
loom_status loom__ref_bn_stats(const loom__kcall *call)
{
    bn_geom g;
    loom_status st = check_call(call, 1, 1u, 2u, &g);
    if (st != LOOM_OK) return st;
    const float *x = call->in[0].data;
    float *stats = call->out.data;
    const int64_t total = g.N * g.C * g.npiece;
    /* Per piece: its sum, then its M2 around its own mean. */
    double *part = norm_scratch(call, LOOM__SCRATCH_NORM_PARTS, sizeof(double) * 2 * (size_t)total);
    double *acc = part ? norm_scratch(call, LOOM__SCRATCH_NORM, sizeof(double) * 2 * (size_t)g.C) : NULL;
    if (!acc) return LOOM_ERR_NOMEM;
    memset(acc, 0, sizeof(double) * 2 * (size_t)g.C);
    if (g.B == 1) {
        const int nt = team(call, g.N * g.C * g.S, total);
        FOR_PIECES(nt, total, t, {
            int64_t start, len, c;
            piece(&g, t, &start, &len, &c);
            const double s = sum_d(x + start, len);
            part[2 * t] = s;
            part[2 * t + 1] = len <= 0 ? 0.0 : sumsq_d(x + start, len, s / (double)len);
        });
    } else {
        const int64_t units = total / g.B, B = g.B, np = g.npiece;
        void (*const sum)(const float *, int64_t, double *) = B == 16 ? sum_blk16 : sum_blk8;
        void (*const sumsq)(const float *, int64_t, const double *, double *) = B == 16 ? sumsq_blk16 : sumsq_blk8;
        const int nt = team(call, g.N * g.C * g.S, units);
        FOR_PIECES(nt, units, u, {
            int64_t start, len, t0;
            blk_unit(&g, u, &start, &len, &t0);
            double sm[16], m[16], q[16] = {0};
            sum(x + start, len, sm);
            for (int64_t jj = 0; jj < B; jj++) m[jj] = sm[jj] / (double)len;
            if (len > 0) sumsq(x + start, len, m, q);
            for (int64_t jj = 0; jj < B; jj++) {
                part[2 * (t0 + jj * np)] = sm[jj];
                part[2 * (t0 + jj * np) + 1] = q[jj];
            }
        });
    }
    for (int64_t t = 0; t < total; t++) {
        int64_t start, len, c;
        piece(&g, t, &start, &len, &c);
        acc[2 * c] += part[2 * t];
    }
    for (int64_t c = 0; c < g.C; c++) acc[2 * c] = g.M > 0 ? acc[2 * c] / (double)g.M : NAN;
    for (int64_t t = 0; t < total; t++) {
        int64_t start, len, c;
        piece(&g, t, &start, &len, &c);
        if (len == 0) continue;
        const double d = part[2 * t] / (double)len - acc[2 * c];
        acc[2 * c + 1] += part[2 * t + 1] + (double)len * d * d;
    }
    for (int64_t c = 0; c < g.C; c++) {
        stats[c] = (float)acc[2 * c];
        stats[g.C + c] = g.M > 0 ? (float)(acc[2 * c + 1] / (double)g.M) : NAN;
    }
    return LOOM_OK;
}

/* Calls body for each run of one channel inside the flat range [b, e):
 * c is the channel, i0/i1 the run's flat bounds. */
#define FOR_RUNS(g, b, e, c, i0, i1, ...)                                      \
    for (int64_t i0 = (b), i1; i0 < (e); i0 = i1) {                             \
        const int64_t row_ = i0 / (g)->S;                                       \
        const int64_t c = row_ % (g)->C;                                        \
        i1 = (row_ + 1) * (g)->S < (e) ? (row_ + 1) * (g)->S : (e);             \
        __VA_ARGS__;                                                            \
    }

/* An elementwise pass over a blocked tensor: its N*C/B rows of S*B values
 * (row r holds channels (r % (C/B))*B .. + B-1, interleaved) split among
 * threads; body runs with r, and c0 = the row's first channel. */
#define FOR_BLOCK_ROWS(call, g, r, c0, ...)                                                    \
    do {                                                                                       \
        const int64_t rows_ = (g)->N * ((g)->C / (g)->B);                                      \
        const int nt_ = loom__ref_team((call)->nthreads, rows_ * (g)->S * (g)->B, BN_GRAIN);   \
        (void)nt_; /* unused without OpenMP */                                                 \
        LOOM__OMP_TEAM(nt_ > 1 ? nt_ : 1,                                                  \
        {                                                                                      \
            int64_t rb_, re_;                                                                  \
            loom__nditer_part(rows_, loom__omp_thread(), loom__omp_nthreads(), 1, &rb_, &re_);  \
            for (int64_t r = rb_; r < re_; r++) {                                              \
                const int64_t c0 = (r % ((g)->C / (g)->B)) * (g)->B;                           \
                __VA_ARGS__;                                                                   \
            }                                                                                  \
        });                                                                                      \
    } while (0)

/* An elementwise pass over [0, N*C*S) split among threads. */
#define FOR_FLAT(call, g, b, e, ...)                                                          \
    do {                                                                                       \
        const int64_t n_ = (g)->N * (g)->C * (g)->S;                                           \
        const int nt_ = loom__ref_team((call)->nthreads, n_, BN_GRAIN);                        \
        if (nt_ <= 1) {                                                                        \
            const int64_t b = 0, e = n_;                                                       \
            __VA_ARGS__;                                                                       \
        } else {                                                                               \
            LOOM__OMP_TEAM(nt_,                                                            \
            {                                                                                  \
                int64_t b, e;                                                                  \
                loom__nditer_part(n_, loom__omp_thread(), loom__omp_nthreads(), 16, &b, &e);   \
                __VA_ARGS__;                                                                   \
            });                                                                                  \
        }                                                                                      \
    } while (0)

/* y = (x - m) * a + b (then relu) over one blocked row of S positions of
 * B channels each, for a constant B. */
#define BN_FWD_ROW(B)                                                                                      \
    static void bn_fwd_row##B(const float *restrict x, float *restrict y, int64_t S, const float *m,          \
                              const float *a, const float *b, bool relu)                                     \
    {                                                                                                        \
        if (relu)                                                                                            \
            for (int64_t s = 0; s < S; s++)                                                                  \
                for (int j = 0; j < B; j++) y[s * B + j] = loom__ref_relu((x[s * B + j] - m[j]) * a[j] + b[j]);     \
        else                                                                                                 \
            for (int64_t s = 0; s < S; s++)                                                                  \
                for (int j = 0; j < B; j++) y[s * B + j] = (x[s * B + j] - m[j]) * a[j] + b[j];              \
    }
BN_FWD_ROW(8)
BN_FWD_ROW(16)
#undef BN_FWD_ROW

/* BN_FWD: in[0] x, in[1] stats, in[2] gamma, in[3] beta; out y (relu'd
 * when attrs bn.relu). */
loom_status loom__ref_bn_fwd(const loom__kcall *call)
{
    bn_geom g;
    loom_status st = check_call(call, 4, 1u | 16u, 2u, &g);
    if (st != LOOM_OK) return st;
    const float *x = call->in[0].data, *stats = call->in[1].data;
    const float *gamma = call->in[2].data, *beta = call->in[3].data;
    float *y = call->out.data;
    const bool relu = call->attrs->bn.relu;
    float *coef = norm_scratch(call, LOOM__SCRATCH_NORM, sizeof(float) * 2 * (size_t)g.C);
    if (!coef) return LOOM_ERR_NOMEM;
    for (int64_t c = 0; c < g.C; c++) {
        coef[2 * c] = stats[c];
        coef[2 * c + 1] = (float)(gamma[c] * invstd_of(stats[g.C + c], call->attrs->bn.eps));
    }
    const bn_geom *gp = &g;
    if (g.B > 1) {
        /* Per row, the block's coefficients side by side, so that the j
         * loop (B = 8 or 16 lanes) vectorizes. */
        FOR_BLOCK_ROWS(call, gp, r, c0, {
            float m[16], a[16], bb[16];
            for (int64_t j = 0; j < gp->B; j++) {
                m[j] = coef[2 * (c0 + j)];
                a[j] = coef[2 * (c0 + j) + 1];
                bb[j] = beta[c0 + j];
            }
            const float *xr = x + r * gp->S * gp->B;
            float *yr = y + r * gp->S * gp->B;
            if (gp->B == 16)
                bn_fwd_row16(xr, yr, gp->S, m, a, bb, relu);
            else
                bn_fwd_row8(xr, yr, gp->S, m, a, bb, relu);
        });
    } else {
        FOR_FLAT(call, gp, b, e, FOR_RUNS(gp, b, e, c, i0, i1, {
                     const float m = coef[2 * c], a = coef[2 * c + 1], bb = beta[c];
                     if (relu)
                         for (int64_t i = i0; i < i1; i++) y[i] = loom__ref_relu((x[i] - m) * a + bb);
                     else
                         for (int64_t i = i0; i < i1; i++) y[i] = (x[i] - m) * a + bb;
                 }));
    }
    return LOOM_OK;
}

/* dx over one blocked row of S positions, for a constant B: training
 * k * (dy - mdy - (x - m) * q), frozen dy * k; cf holds m, k, mdy, q. */
#define BN_BWD_ROW(B)                                                                                      \
    static void bn_bwd_row##B(const float *restrict x, const float *restrict dy, const float *restrict y,    \
                              float *restrict dx, int64_t S, const float (*cf)[16], bool training)          \
    {                                                                                                        \
        const float *m = cf[0], *k = cf[1], *mdy = cf[2], *q = cf[3];                                        \
        if (training && y)                                                                                   \
            for (int64_t s = 0; s < S; s++)                                                                  \
                for (int j = 0; j < B; j++)                                                                  \
                    dx[s * B + j] = k[j] * (DY_MASKED(s * B + j) - mdy[j] - (x[s * B + j] - m[j]) * q[j]);   \
        else if (training)                                                                                   \
            for (int64_t s = 0; s < S; s++)                                                                  \
                for (int j = 0; j < B; j++)                                                                  \
                    dx[s * B + j] = k[j] * (dy[s * B + j] - mdy[j] - (x[s * B + j] - m[j]) * q[j]);          \
        else if (y)                                                                                          \
            for (int64_t s = 0; s < S; s++)                                                                  \
                for (int j = 0; j < B; j++) dx[s * B + j] = DY_MASKED(s * B + j) * k[j];                     \
        else                                                                                                 \
            for (int64_t s = 0; s < S; s++)                                                                  \
                for (int j = 0; j < B; j++) dx[s * B + j] = dy[s * B + j] * k[j];                            \
    }
BN_BWD_ROW(8)
BN_BWD_ROW(16)
#undef BN_BWD_ROW

/* BN_BWD_DATA: in[0] x, in[1] dy, in[2] stats, in[3] gamma [, y: dy counts
 * where y > 0] [, p: BN_BWD_PARAMS's sums] (backends/kernel.h); out dx. */
loom_status loom__ref_bn_bwd_data(const loom__kcall *call)
{
    bn_geom g;
    const int mask = loom__bn_mask_input(call), psum = loom__bn_sums_input(call);
    const int n_in = 4 + (mask >= 0) + (psum >= 0);
    const unsigned like_x = 1u | 2u | (mask >= 0 ? 1u << mask : 0u) | 1u << n_in;
    loom_status st = check_call(call, n_in, like_x, 4u | (psum >= 0 ? 1u << psum : 0u), &g);
    if (st != LOOM_OK) return st;
    const float *x = call->in[0].data, *dy = call->in[1].data, *stats = call->in[2].data;
    const float *gamma = call->in[3].data;
    const float *y = mask >= 0 ? call->in[mask].data : NULL;
    float *dx = call->out.data;
    const double eps = call->attrs->bn.eps;
    const bool training = call->attrs->bn.training;
    /* dx = k * (dy - mdy - (x - mean) * q) with k = gamma * invstd and, in
     * training, mdy = sum(dy) / M, q = invstd^2 * sum(dy * (x - mean)) / M
     * (so (x - mean) * q = xhat * sum(dy * xhat) / M); frozen: mdy = q = 0. */
    /* One buffer: the sums (2C doubles), then the coefficients (4C floats). */
    double *sums =
        norm_scratch(call, LOOM__SCRATCH_NORM, sizeof(double) * 2 * (size_t)g.C + sizeof(float) * 4 * (size_t)g.C);
    if (!sums) return LOOM_ERR_NOMEM;
    float *coef = (float *)(sums + 2 * g.C);
    if (training && psum >= 0) {
        /* BN_BWD_PARAMS's result: dbeta = sum(dy), dgamma = sum(dy * (x -
         * mean)) * invstd (float-rounded: within 1e-7 of the sums). */
        const float *p = call->in[psum].data;
        for (int64_t c = 0; c < g.C; c++) {
            sums[2 * c] = p[g.C + c];
            sums[2 * c + 1] = p[c] / invstd_of(stats[g.C + c], eps);
        }
    } else if (training && (st = reduce_dy(call, &g, x, dy, y, stats, sums)) != LOOM_OK) {
        return st;
    }
    for (int64_t c = 0; c < g.C; c++) {
        const double is = invstd_of(stats[g.C + c], eps);
        coef[4 * c] = stats[c];
        coef[4 * c + 1] = (float)(gamma[c] * is);
        coef[4 * c + 2] = training ? (float)(sums[2 * c] / (double)g.M) : 0.0f;
        coef[4 * c + 3] = training ? (float)(is * is * sums[2 * c + 1] / (double)g.M) : 0.0f;
    }
    const bn_geom *gp = &g;
    if (g.B > 1) {
        FOR_BLOCK_ROWS(call, gp, r, c0, {
            float cf[4][16]; /* m, k, mdy, q of the block's channels */
            for (int k = 0; k < 4; k++)
                for (int64_t j = 0; j < gp->B; j++) cf[k][j] = coef[4 * (c0 + j) + k];
            const int64_t o = r * gp->S * gp->B;
            const float *yo = y ? y + o : NULL;
            if (gp->B == 16)
                bn_bwd_row16(x + o, dy + o, yo, dx + o, gp->S, cf, training);
            else
                bn_bwd_row8(x + o, dy + o, yo, dx + o, gp->S, cf, training);
        });
    } else if (training)
        FOR_FLAT(call, gp, b, e, FOR_RUNS(gp, b, e, c, i0, i1, {
                     const float m = coef[4 * c], k = coef[4 * c + 1], mdy = coef[4 * c + 2], q = coef[4 * c + 3];
                     if (y)
                         for (int64_t i = i0; i < i1; i++) dx[i] = k * (DY_MASKED(i) - mdy - (x[i] - m) * q);
                     else
                         for (int64_t i = i0; i < i1; i++) dx[i] = k * (dy[i] - mdy - (x[i] - m) * q);
                 }));
    else
        FOR_FLAT(call, gp, b, e, FOR_RUNS(gp, b, e, c, i0, i1, {
                     const float k = coef[4 * c + 1];
                     if (y)
                         for (int64_t i = i0; i < i1; i++) dx[i] = DY_MASKED(i) * k;
                     else
                         for (int64_t i = i0; i < i1; i++) dx[i] = dy[i] * k;
                 }));
    return LOOM_OK;
}

/* BN_BWD_PARAMS: in[0] x, in[1] dy, in[2] stats [, in[3] y: dy counts
 * where y > 0]; out [2,C] (dgamma, dbeta). */
loom_status loom__ref_bn_bwd_params(const loom__kcall *call)
{
    bn_geom g;
    const int mask = loom__bn_mask_input(call);
    const int n_in = mask >= 0 ? 4 : 3;
    loom_status st = check_call(call, n_in, 1u | 2u | (mask >= 0 ? 8u : 0u), 4u | 1u << n_in, &g);
    if (st != LOOM_OK) return st;
    const float *x = call->in[0].data, *dy = call->in[1].data, *stats = call->in[2].data;
    const float *y = mask >= 0 ? call->in[mask].data : NULL;
    float *out = call->out.data;
    double *sums = norm_scratch(call, LOOM__SCRATCH_NORM, sizeof(double) * 2 * (size_t)g.C);
    if (!sums) return LOOM_ERR_NOMEM;
    if ((st = reduce_dy(call, &g, x, dy, y, stats, sums)) != LOOM_OK) return st;
    for (int64_t c = 0; c < g.C; c++) {
        out[c] = (float)(sums[2 * c + 1] * invstd_of(stats[g.C + c], call->attrs->bn.eps));
        out[g.C + c] = (float)sums[2 * c];
    }
    return LOOM_OK;
}
