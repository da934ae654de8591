/*
 * backends/ref/rnn_layer.c - a whole recurrent layer (one direction) as one
 * kernel: LOOM_OP_RNN_LAYER and LOOM_OP_RNN_LAYER_BWD (kernel.h gives the
 * packing).
 *
 * Forward, T steps of N rows, H hidden, G gates:
 *   A = x W_ih^T + bias                 one GEMM [T*N, I] x [I, G*H]
 *   per step t:  A_t += h W_hh^T        GEMM [N, H] x [H, G*H], beta = 1
 *                gates                  the fused cells' rows (rnn_cells.h)
 * GRU keeps the hidden projection apart (HP_t = h W_hh^T + b_hh), since its
 * n gate multiplies it by r.
 *
 * Workspace (training), after the header:
 *   RNN   nothing: tanh' and relu' come from y itself;
 *   LSTM  A [T,N,4H] (the pre-activations, recurrent part included), then
 *         C [T,N,H] (c after step t);
 *   GRU   XP [T,N,3H], then HP [T,N,3H].
 *
 * Backward walks the steps in reverse order of the forward, carrying dh
 * (and dc) [N, H]; each step gives dA_t (LSTM, RNN; dXP_t and dHP_t for GRU)
 * and dh for the step before it, dA_t W_hh. Everything else is one GEMM
 * over all steps: dx = dA W_ih, dW_ih = dA^T x, dW_hh = dA^T Hprev (Hprev:
 * each step's incoming h, which is h0 or a row block of y), and the biases
 * the column sums of dA. Compared with the step-by-step graph (nn/rnn.c),
 * this is one node instead of ~4 per step each way, and the weight
 * gradients' reductions run over T*N rows at once.
 *
 * A forward whose workspace another backend wrote (its tag says so) cannot
 * be read here: the backward then runs this file's forward into a
 * temporary first.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backends/ref/fastmath.h"
#include "backends/ref/nditer.h"
#include "backends/ref/ref.h"
#include "backends/ref/rnn_cells.h"
#include "backends/ref/sgemm.h"
#include "backends/registry.h"
#include "runtime/error.h"

enum { MODE_TANH = 0, MODE_RELU = 1, MODE_LSTM = 2, MODE_GRU = 3 };

/* Elements per thread below which an elementwise team does not pay. */
#define ROW_GRAIN 16384

/* Floats of the ref workspace's data (after the header). */
static int64_t ws_data_floats(const loom__rnn_layout *L, int mode)
{
    const int64_t TN = L->T * L->N;
    if (mode == MODE_LSTM) return TN * 4 * L->H + TN * L->H;
    if (mode == MODE_GRU) return 2 * TN * 3 * L->H;
    return 0;
}

int64_t loom__ref_rnn_layer_aux(const loom__kcall *call)
{
    loom__rnn_layout L;
    loom__rnn_layout_call(call, &L);
    return ws_data_floats(&L, call->attrs->rnn.mode);
}

static bool valid(const loom__kcall *call, int n_in)
{
    if (call->n_in != n_in || call->out.dtype != LOOM_FLOAT32) return false;
    for (int i = 0; i < n_in; i++)
        if (call->in[i].dtype != LOOM_FLOAT32) return false;
    return call->in[0].ndim == 3 && call->in[3].ndim == 2;
}

static void *alloc_floats(int64_t n)
{
    size_t bytes = ((size_t)(n > 0 ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

/* One GEMM with a workspace sized once per kernel call (gemm_ws). */
typedef struct gemm_ctx {
    void *ws;
    size_t size;
    int nt;
} gemm_ctx;

static void gemm_need(gemm_ctx *g, int64_t m, int64_t n, int64_t k)
{
    size_t s = loom__sgemm_workspace_bound(m, n, k, g->nt);
    if (s > g->size) g->size = s;
}

static loom_status gemm_alloc(gemm_ctx *g)
{
    if (!g->size) return LOOM_OK;
    g->ws = aligned_alloc(64, (g->size + 63) & ~(size_t)63);
    return g->ws ? LOOM_OK : loom__set_error(LOOM_ERR_NOMEM, "rnn_layer: out of memory (%zu bytes)", g->size);
}

static loom_status gemm(gemm_ctx *g, int64_t m, int64_t n, int64_t k, const float *a, int64_t rsa, int64_t csa,
                        const float *b, int64_t rsb, int64_t csb, float beta, float *c, int64_t rsc)
{
    return loom__sgemm(m, n, k, 1.0f, a, rsa, csa, b, rsb, csb, beta, c, rsc, g->nt, g->ws, g->size);
}

/* rows x cols: c[r, :] = bias (+ bias2) for every row. */
static void fill_rows(float *c, int64_t rows, int64_t cols, const float *bias, const float *bias2)
{
    for (int64_t r = 0; r < rows; r++) {
        float *cr = c + r * cols;
        if (!bias)
            memset(cr, 0, (size_t)cols * sizeof *cr);
        else if (bias2)
            for (int64_t j = 0; j < cols; j++) cr[j] = bias[j] + bias2[j];
        else
            memcpy(cr, bias, (size_t)cols * sizeof *cr);
    }
}

/* ---- elementwise steps, rows split over a team ------------------------------ */

#define ROWS_TEAM(nthreads, rows, H, BODY) LOOM__ROWS_TEAM(nthreads, rows, H, ROW_GRAIN, BODY)

/* A cell's rows inside a time loop (fwd_steps, bwd_steps): with the whole
 * team over all N rows (cell_nt > 1), or the calling thread's [r0, r1). */
#define CELL_ROWS(cell_nt, N, H, CALL)          \
    do {                                        \
        if ((cell_nt) > 1)                      \
            ROWS_TEAM(cell_nt, N, H, CALL);     \
        else                                    \
            CALL;                               \
    } while (0)

static void act_rows(int mode, const float *restrict a, float *restrict h, int64_t n)
{
    if (mode == MODE_TANH)
        for (int64_t i = 0; i < n; i++) h[i] = tanh_f32(a[i]);
    else
        for (int64_t i = 0; i < n; i++) h[i] = (a[i] > 0.0f || a[i] != a[i]) ? a[i] : 0.0f;
}

/* da = (dy + dh) * act'(y): tanh' = 1 - y^2, relu' = y > 0. */
static void act_bwd_rows(int mode, const float *restrict y, const float *restrict dy, const float *restrict dh,
                         float *restrict da, int64_t n)
{
    if (mode == MODE_TANH)
        for (int64_t i = 0; i < n; i++) da[i] = (dy[i] + dh[i]) * (1.0f - y[i] * y[i]);
    else
        for (int64_t i = 0; i < n; i++) da[i] = y[i] > 0.0f ? dy[i] + dh[i] : 0.0f;
}

static void add_rows(const float *restrict a, const float *restrict b, float *restrict out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* ---- splitting the recurrence over batch rows ------------------------------------ */

/* The batch rows of a recurrent layer never mix: row n of step t needs
 * only row n of step t-1. So a team can take the whole time loop in one
 * parallel region, each thread its own rows with a one-thread GEMM per
 * step, instead of two regions (and barriers) per step. That pays when each
 * thread's rows are a good GEMM on their own (the sine RNN: N = 990, H = 50,
 * 2T regions of ~0.1 ms cost about as much as the work); with few rows the
 * step's GEMM is better split by columns (the large LSTM: N = 64, where
 * each thread would otherwise stream all of W_hh every step). Every row's
 * arithmetic is the same either way (the GEMM's blocking depends on k, not
 * on m or the team), so results do not depend on the team. */
#define SPLIT_MIN_ROWS 64

static int row_team(int nthreads, int64_t N)
{
    int team = nthreads;
    while (team > 1 && N / team < SPLIT_MIN_ROWS) team--;
    return team;
}

/* Per-thread GEMM workspaces for a row-split team. */
typedef struct team_ws {
    char *buf;
    size_t each;
} team_ws;

static loom_status team_ws_alloc(team_ws *w, int team, int64_t rows, int64_t n, int64_t k, int64_t n2, int64_t k2)
{
    size_t a = loom__sgemm_workspace_bound(rows, n, k, 1), b = loom__sgemm_workspace_bound(rows, n2, k2, 1);
    w->each = ((a > b ? a : b) + 63) & ~(size_t)63;
    w->buf = NULL;
    if (!w->each) return LOOM_OK;
    w->buf = aligned_alloc(64, w->each * (size_t)team);
    return w->buf ? LOOM_OK : loom__set_error(LOOM_ERR_NOMEM, "rnn_layer: out of memory");
}

/* Keeps the first error a team reports. */
static void first_error(_Atomic int *err, loom_status s)
{
    int ok = LOOM_OK;
    if (s != LOOM_OK) atomic_compare_exchange_strong(err, &ok, (int)s);
}

/* Runs body(r0, r1, g) over rows [0, N): one call with the whole team's
 * GEMMs (g0), or, when the rows split, one call per thread with its rows
 * and a one-thread GEMM context. The first error wins. */
#define OVER_ROWS(team, N, g0, tws, st, BODY)                                                          \
    do {                                                                                              \
        if ((team) <= 1) {                                                                            \
            const int64_t r0 = 0, r1 = (N);                                                           \
            gemm_ctx *g = (g0);                                                                       \
            const int cell_nt = g->nt;                                                                \
            (st) = BODY;                                                                              \
        } else {                                                                                      \
            _Atomic int err_ = LOOM_OK;                                                               \
            LOOM__OMP_TEAM(team,                                                                  \
            {                                                                                         \
                int64_t r0, r1;                                                                       \
                loom__nditer_part((N), loom__omp_thread(), loom__omp_nthreads(), 1, &r0, &r1);         \
                gemm_ctx gt = {.ws = (tws).buf ? (tws).buf + (tws).each * (size_t)loom__omp_thread() : NULL, \
                               .size = (tws).each, .nt = 1};                                          \
                gemm_ctx *g = &gt;                                                                    \
                const int cell_nt = 1;                                                                \
                first_error(&err_, BODY);                                                             \
            });                                                                                         \
            (st) = (loom_status)err_;                                                                 \
        }                                                                                             \
    } while (0)

/* ---- forward ------------------------------------------------------------------- */

/* Inputs this narrow (the sine program's I = 1) are projected by a loop:
 * a GEMM with k = 1 spends its time packing and storing. */
#define SMALL_I 4

/* Rows [r0, r1) of project_small: bw holds the bias, then W_ih^T. */
static void project_rows(const float *x, const float *bw, float *A, int64_t GH, int64_t I, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        float *restrict ar = A + r * GH;
        const float *xr = x + r * I;
        const float x0 = xr[0], *restrict b = bw, *restrict w0 = bw + GH;
        for (int64_t j = 0; j < GH; j++) ar[j] = b[j] + x0 * w0[j];
        for (int64_t i = 1; i < I; i++) {
            const float xi = xr[i], *restrict wi = bw + (i + 1) * GH;
            for (int64_t j = 0; j < GH; j++) ar[j] += xi * wi[j];
        }
    }
}

/* A [rows, GH] = bias (+ bias2) + x [rows, I] W_ih^T, one pass over A:
 * the bias summed and W_ih transposed first ([I, GH], row i the weights
 * of input i), so the row loop is unit-stride. */
static loom_status project_small(const float *x, const float *w, const float *bias, const float *bias2, float *A,
                                 int64_t rows, int64_t GH, int64_t I, int nt)
{
    float *bw = alloc_floats(GH * (I + 1));
    if (!bw) return loom__set_error(LOOM_ERR_NOMEM, "rnn_layer: out of memory");
    for (int64_t j = 0; j < GH; j++) {
        bw[j] = bias ? bias[j] + (bias2 ? bias2[j] : 0.0f) : 0.0f;
        for (int64_t i = 0; i < I; i++) bw[(i + 1) * GH + j] = w[j * I + i];
    }
    ROWS_TEAM(nt, rows, GH, project_rows(x, bw, A, GH, I, r0, r1));
    free(bw);
    return LOOM_OK;
}

typedef struct fwd_state {
    int mode;
    bool rev, keep;
    int64_t T, N, H, GH;
    float *A, *C, *HP, *y, *cn;
    const float *h0, *c0, *whh, *bhh;
} fwd_state;

/* Rows [r0, r1) of the whole time loop; cells with cell_nt threads (then
 * r0 = 0, r1 = N). */
static loom_status fwd_steps(const fwd_state *f, gemm_ctx *g, int cell_nt, int64_t r0, int64_t r1)
{
    const int mode = f->mode;
    const int64_t T = f->T, N = f->N, H = f->H, GH = f->GH, rows = r1 - r0;
    for (int64_t s = 0; s < T; s++) {
        const int64_t t = f->rev ? T - 1 - s : s, tp = f->rev ? t + 1 : t - 1;
        const float *hprev = s == 0 ? f->h0 : f->y + tp * N * H;
        float *At = f->A + t * N * GH, *yt = f->y + t * N * H;
        loom_status st;
        if (mode == MODE_GRU) {
            float *HPt = f->keep ? f->HP + t * N * GH : f->HP;
            fill_rows(HPt + r0 * GH, rows, GH, f->bhh, NULL);
            st = gemm(g, rows, GH, H, hprev + r0 * H, H, 1, f->whh, 1, H, 1.0f, HPt + r0 * GH, GH);
            if (st != LOOM_OK) return st;
            CELL_ROWS(cell_nt, N, H, loom__gru_rows(At, HPt, hprev, yt, H, r0, r1));
            continue;
        }
        st = gemm(g, rows, GH, H, hprev + r0 * H, H, 1, f->whh, 1, H, 1.0f, At + r0 * GH, GH);
        if (st != LOOM_OK) return st;
        if (mode == MODE_LSTM) {
            const float *cprev;
            float *ct;
            if (f->keep) {
                cprev = s == 0 ? f->c0 : f->C + tp * N * H;
                ct = f->C + t * N * H;
            } else { /* two rolling buffers */
                cprev = s == 0 ? f->c0 : f->C + ((s - 1) & 1) * N * H;
                ct = f->C + (s & 1) * N * H;
            }
            CELL_ROWS(cell_nt, N, H, loom__lstm_rows(At, cprev, yt, ct, H, r0, r1));
            if (s == T - 1) memcpy(f->cn + r0 * H, ct + r0 * H, (size_t)(rows * H) * sizeof(float));
        } else {
            CELL_ROWS(cell_nt, N, H, act_rows(mode, At + r0 * H, yt + r0 * H, (r1 - r0) * H));
        }
    }
    return LOOM_OK;
}

/* The forward into y [T,N,H], cn [N,H] (LSTM) and ws (ref workspace data,
 * or NULL for inference). */
static loom_status forward(const loom__kcall *call, const loom__rnn_layout *L, float *y, float *cn, float *ws)
{
    const int mode = call->attrs->rnn.mode;
    const int64_t T = L->T, N = L->N, I = L->I, H = L->H, G = L->G, GH = G * H, TN = T * N;
    const float *x = call->in[L->x].data, *wih = call->in[L->w_ih].data;
    const float *bih = L->bias ? call->in[L->b_ih].data : NULL, *bhh = L->bias ? call->in[L->b_hh].data : NULL;
    const int nt = call->nthreads;
    fwd_state f = {.mode = mode, .rev = call->attrs->rnn.reverse, .T = T, .N = N, .H = H, .GH = GH, .y = y,
                   .cn = cn, .h0 = call->in[L->h0].data, .c0 = L->lstm ? call->in[L->c0].data : NULL,
                   .whh = call->in[L->w_hh].data, .bhh = bhh};

    /* A (or XP for GRU) [T,N,GH]; C [T,N,H] (LSTM); HP [N,GH] per step (GRU).
     * In the workspace when training (but RNN's A, which the backward does
     * not read), else in a temporary: A, and two rolling [N,H] buffers for
     * LSTM's c or one [N,GH] for GRU's HP. */
    float *own = NULL;
    f.keep = ws && mode != MODE_TANH && mode != MODE_RELU;
    if (f.keep) {
        f.A = ws;
        if (mode == MODE_LSTM) f.C = ws + TN * GH;
        if (mode == MODE_GRU) f.HP = ws + TN * GH;
    } else {
        own = alloc_floats(TN * GH + (mode == MODE_LSTM ? 2 * N * H : 0) + (mode == MODE_GRU ? N * GH : 0));
        if (!own) return loom__set_error(LOOM_ERR_NOMEM, "rnn_layer: out of memory");
        f.A = own;
        if (mode == MODE_LSTM) f.C = own + TN * GH;
        if (mode == MODE_GRU) f.HP = own + TN * GH;
    }
    const int team = row_team(nt, N);
    gemm_ctx gm = {.nt = nt};
    team_ws tws = {0};
    gemm_need(&gm, TN, GH, I);
    gemm_need(&gm, N, GH, H);
    loom_status st = gemm_alloc(&gm);
    if (st == LOOM_OK && team > 1) st = team_ws_alloc(&tws, team, (N + team - 1) / team, GH, H, GH, H);
    if (st != LOOM_OK) goto out;

    /* A = bias rows, then += x W_ih^T. W_ih^T's (p, j) is w_ih[j*I + p]. */
    if (I <= SMALL_I) {
        st = project_small(x, wih, bih, mode == MODE_GRU ? NULL : bhh, f.A, TN, GH, I, nt);
    } else {
        fill_rows(f.A, TN, GH, bih, mode == MODE_GRU ? NULL : bhh);
        st = gemm(&gm, TN, GH, I, x, I, 1, wih, 1, I, 1.0f, f.A, GH);
    }
    if (st == LOOM_OK) OVER_ROWS(team, N, &gm, tws, st, fwd_steps(&f, g, cell_nt, r0, r1));
out:
    free(gm.ws);
    free(tws.buf);
    free(own);
    return st;
}

loom_status loom__ref_rnn_layer(const loom__kcall *call)
{
    loom__rnn_layout L;
    if (call->n_in < 4 || !valid(call, call->n_in)) goto bad;
    loom__rnn_layout_call(call, &L);
    if (L.n_fwd_in != call->n_in) goto bad;
    float *out = call->out.data, *ws = NULL;
    if (call->attrs->rnn.training) {
        if (loom__tview_numel(&call->out) < L.ws + LOOM__RNN_WS_HEADER + ws_data_floats(&L, call->attrs->rnn.mode))
            goto bad;
        loom__rnn_ws_set_tag(out + L.ws, LOOM__RNN_WS_REF);
        ws = out + L.ws + LOOM__RNN_WS_HEADER;
    }
    return forward(call, &L, out + L.y, L.lstm ? out + L.c_n : NULL, ws);
bad:
    return loom__set_error(LOOM_ERR_INVALID_ARG, "rnn_layer: inputs or output do not match kernel.h's packing");
}

/* ---- backward ------------------------------------------------------------------ */

/* out[j] = sum over rows of d[r * cols + j], in double, rows in order (so
 * the bits do not depend on the team): each thread takes blocks of columns
 * and walks the rows once per block. */
#define COL_BLOCK 256
static void col_sums(const float *d, int64_t rows, int64_t cols, float *out, int nt)
{
    const int64_t nblk = (cols + COL_BLOCK - 1) / COL_BLOCK;
    int team = loom__ref_team(nt, rows * cols, ROW_GRAIN * 4);
    if (team > nblk) team = (int)nblk;
    LOOM__OMP_TEAM(team,
    {
        int64_t b0 = 0, b1 = nblk;
        if (team > 1) loom__nditer_part(nblk, loom__omp_thread(), loom__omp_nthreads(), 1, &b0, &b1);
        double acc[COL_BLOCK];
        for (int64_t b = b0; b < b1; b++) {
            const int64_t j0 = b * COL_BLOCK, nj = cols - j0 < COL_BLOCK ? cols - j0 : COL_BLOCK;
            for (int64_t j = 0; j < nj; j++) acc[j] = 0.0;
            for (int64_t r = 0; r < rows; r++) {
                const float *dr = d + r * cols + j0;
                for (int64_t j = 0; j < nj; j++) acc[j] += dr[j];
            }
            for (int64_t j = 0; j < nj; j++) out[j0 + j] = (float)acc[j];
        }
    });
}

/* dW [GH, K] = D^T [GH, T*N] x Hprev [T*N, K], where step t's incoming h
 * is h0 for the first step processed and y's row block of the step before
 * it otherwise. Rows [a, b) of D only (a part of the sum); beta 0 starts
 * dw, 1 adds to it. D is [T, N, GH]. At most two GEMMs: rows paired with
 * h0, and rows paired with a contiguous run of y. */
static loom_status dw_hh_rows(gemm_ctx *g, const loom__rnn_layout *L, bool rev, const float *D, const float *h0,
                              const float *y, int64_t a, int64_t b, float beta, float *dw)
{
    const int64_t N = L->N, H = L->H, GH = L->G * H, TN = L->T * N;
    /* Rows of D that read h0: [0, N) forward, [TN - N, TN) reverse. */
    const int64_t h0a = rev ? TN - N : 0, h0b = h0a + N;
    int64_t seg[2][2] = {{a, b < h0a ? b : h0a}, {a > h0b ? a : h0b, b}}; /* rows before / after h0's */
    const int64_t ha = a > h0a ? a : h0a, hb = b < h0b ? b : h0b;
    if (ha < hb) {
        loom_status st = gemm(g, GH, H, hb - ha, D + ha * GH, 1, GH, h0 + (ha - h0a) * H, H, 1, beta, dw, H);
        if (st != LOOM_OK) return st;
        beta = 1.0f;
    }
    for (int k = 0; k < 2; k++) {
        const int64_t s0 = seg[k][0], s1 = seg[k][1];
        if (s0 >= s1) continue;
        /* Forward: row r >= N reads y's row r - N; reverse: row r < TN - N reads y's row r + N. */
        const float *Ys = y + (rev ? s0 + N : s0 - N) * H;
        loom_status st = gemm(g, GH, H, s1 - s0, D + s0 * GH, 1, GH, Ys, H, 1, beta, dw, H);
        if (st != LOOM_OK) return st;
        beta = 1.0f;
    }
    return LOOM_OK;
}

/* The weight gradients dW_ih = D^T x and dW_hh = DH^T Hprev (DH = D but
 * for GRU) reduce over all T*N rows, while their M and N (G*H and I or H)
 * are small: SGEMM, which splits M and N only, gets little from a team
 * there. Small ones are cut instead into `wg_chunks` row chunks, fixed by
 * the shapes (so the bits do not depend on the team), each one-thread
 * products into its own buffer, summed in order; large ones are two GEMMs
 * with the whole team. */
#define WG_SMALL (64 * 1024) /* elements of dW_ih + dW_hh */
#define WG_ROWS 1024         /* rows per chunk at least */
#define WG_MAX_CHUNKS 4

static int64_t wg_chunks(const loom__rnn_layout *L)
{
    const int64_t GH = L->G * L->H, TN = L->T * L->N;
    if (GH * (L->H + L->I) > WG_SMALL) return 1;
    const int64_t c = TN / WG_ROWS;
    return c < 1 ? 1 : c > WG_MAX_CHUNKS ? WG_MAX_CHUNKS : c;
}

static loom_status weight_grads(gemm_ctx *g, const loom__rnn_layout *L, bool rev, const float *D, const float *DH,
                                const float *x, const float *h0, const float *y, float *dwih, float *dwhh, int nt)
{
    const int64_t GH = L->G * L->H, TN = L->T * L->N, I = L->I, H = L->H, chunks = wg_chunks(L);
    if (chunks == 1) {
        loom_status st = gemm(g, GH, I, TN, D, 1, GH, x, I, 1, 0.0f, dwih, I);
        return st == LOOM_OK ? dw_hh_rows(g, L, rev, DH, h0, y, 0, TN, 0.0f, dwhh) : st;
    }
    /* Chunk c's dW_ih and dW_hh: c == 0 into the output, others into parts. */
    const int64_t each = GH * (I + H);
    const int team = nt < chunks ? nt : (int)chunks;
    float *parts = alloc_floats((chunks - 1) * each);
    team_ws tws = {0};
    loom_status st = parts ? team_ws_alloc(&tws, team, GH, I, (TN + chunks - 1) / chunks + 1, H, (TN + chunks - 1) / chunks + 1)
                           : loom__set_error(LOOM_ERR_NOMEM, "rnn_layer_backward: out of memory");
    _Atomic int err = st;
    if (st == LOOM_OK) {
        LOOM__OMP_TEAM(team,
        {
            const int t = loom__omp_thread();
            gemm_ctx gt = {.ws = tws.buf ? tws.buf + tws.each * (size_t)t : NULL, .size = tws.each, .nt = 1};
            for (int64_t c = t; c < chunks; c += loom__omp_nthreads()) {
                int64_t a, b;
                loom__nditer_part(TN, (int)c, (int)chunks, 1, &a, &b);
                float *wi = c == 0 ? dwih : parts + (c - 1) * each, *wh = c == 0 ? dwhh : wi + GH * I;
                loom_status s1 = gemm(&gt, GH, I, b - a, D + a * GH, 1, GH, x + a * I, I, 1, 0.0f, wi, I);
                first_error(&err, s1 == LOOM_OK ? dw_hh_rows(&gt, L, rev, DH, h0, y, a, b, 0.0f, wh) : s1);
            }
        });
        st = (loom_status)err;
    }
    if (st == LOOM_OK)
        for (int64_t c = 1; c < chunks; c++) { /* in order */
            const float *wi = parts + (c - 1) * each, *wh = wi + GH * I;
            for (int64_t e = 0; e < GH * I; e++) dwih[e] += wi[e];
            for (int64_t e = 0; e < GH * H; e++) dwhh[e] += wh[e];
        }
    free(parts);
    free(tws.buf);
    return st;
}

typedef struct bwd_state {
    int mode;
    bool rev;
    int64_t T, N, H, GH;
    const float *y, *dy, *ws, *h0, *c0, *whh;
    float *D, *DH, *dh, *dc, *dc2, *tmp;
    float *dh0, *dc0; /* the output's rows for them */
} bwd_state;

/* Rows [r0, r1) of the backward time loop (as fwd_steps). */
static loom_status bwd_steps(const bwd_state *b, gemm_ctx *g, int cell_nt, int64_t r0, int64_t r1)
{
    const int mode = b->mode;
    const int64_t T = b->T, N = b->N, H = b->H, GH = b->GH, NH = N * H, TN = T * N, rows = r1 - r0;
    float *dh = b->dh, *dc = b->dc, *dc2 = b->dc2, *tmp = b->tmp;
    for (int64_t s = T - 1; s >= 0; s--) {
        const int64_t t = b->rev ? T - 1 - s : s, tp = b->rev ? t + 1 : t - 1;
        const float *hprev = s == 0 ? b->h0 : b->y + tp * NH;
        const float *dyt = b->dy + t * NH;
        float *Dt = b->D + t * N * GH;
        loom_status st;
        if (mode == MODE_LSTM) {
            const float *A = b->ws, *C = b->ws + TN * GH;
            const float *cprev = s == 0 ? b->c0 : C + tp * NH;
            CELL_ROWS(cell_nt, N, H, add_rows(dyt + r0 * H, dh + r0 * H, tmp + r0 * H, (r1 - r0) * H));
            CELL_ROWS(cell_nt, N, H, loom__lstm_bwd_rows(A + t * N * GH, cprev, tmp, dc, Dt, dc2, H, r0, r1));
            float *sw = dc;
            dc = dc2;
            dc2 = sw;
            st = gemm(g, rows, H, GH, Dt + r0 * GH, GH, 1, b->whh, H, 1, 0.0f, dh + r0 * H, H);
        } else if (mode == MODE_GRU) {
            const float *XP = b->ws, *HP = b->ws + TN * GH;
            float *DHt = b->DH + t * N * GH;
            CELL_ROWS(cell_nt, N, H, add_rows(dyt + r0 * H, dh + r0 * H, tmp + r0 * H, (r1 - r0) * H));
            /* dh = the direct path z * dh', then += dHP_t W_hh. */
            CELL_ROWS(cell_nt, N, H, loom__gru_bwd_rows(XP + t * N * GH, HP + t * N * GH, hprev, tmp, Dt, DHt, dh, H, r0, r1));
            st = gemm(g, rows, H, GH, DHt + r0 * GH, GH, 1, b->whh, H, 1, 1.0f, dh + r0 * H, H);
        } else {
            CELL_ROWS(cell_nt, N, H, act_bwd_rows(mode, b->y + t * NH + r0 * H, dyt + r0 * H, dh + r0 * H, Dt + r0 * H, (r1 - r0) * H));
            st = gemm(g, rows, H, GH, Dt + r0 * GH, GH, 1, b->whh, H, 1, 0.0f, dh + r0 * H, H);
        }
        if (st != LOOM_OK) return st;
    }
    /* After the first step: dh0, dc0 (dc holds the last one written). */
    memcpy(b->dh0 + r0 * H, dh + r0 * H, (size_t)(rows * H) * sizeof(float));
    if (mode == MODE_LSTM) memcpy(b->dc0 + r0 * H, dc + r0 * H, (size_t)(rows * H) * sizeof(float));
    return LOOM_OK;
}

loom_status loom__ref_rnn_layer_bwd(const loom__kcall *call)
{
    loom__rnn_layout L;
    if (call->n_in < 6 || !valid(call, call->n_in)) goto bad;
    loom__rnn_layout_call(call, &L);
    if (L.n_fwd_in + 2 != call->n_in || loom__tview_numel(&call->out) != L.bwd_floats) goto bad;
    const int mode = call->attrs->rnn.mode;
    const bool rev = call->attrs->rnn.reverse;
    const int64_t T = L.T, N = L.N, I = L.I, H = L.H, GH = L.G * H, TN = T * N, NH = N * H;
    const int nt = call->nthreads;
    const float *fwd = call->in[L.n_fwd_in].data, *grad = call->in[L.n_fwd_in + 1].data;
    const int64_t ws_floats = ws_data_floats(&L, mode);
    /* The gradient covers y and c_n at least (graph/autograd.c stops it
     * before the workspace). */
    if (loom__tview_numel(&call->in[L.n_fwd_in]) < L.ws + LOOM__RNN_WS_HEADER + ws_floats ||
        loom__tview_numel(&call->in[L.n_fwd_in + 1]) < L.fwd_base)
        goto bad;
    const float *x = call->in[L.x].data, *wih = call->in[L.w_ih].data, *whh = call->in[L.w_hh].data;
    const float *h0 = call->in[L.h0].data, *c0 = L.lstm ? call->in[L.c0].data : NULL;
    const float *y = fwd + L.y, *dy = grad + L.y, *dcn = L.lstm ? grad + L.c_n : NULL;
    float *out = call->out.data;

    /* The workspace: this backend's, or recomputed when another wrote it. */
    const float *ws = fwd + L.ws + LOOM__RNN_WS_HEADER;
    float *own_fwd = NULL;
    if (loom__rnn_ws_tag(fwd + L.ws) != LOOM__RNN_WS_REF) {
        own_fwd = alloc_floats(L.fwd_base + ws_floats);
        if (!own_fwd) return loom__set_error(LOOM_ERR_NOMEM, "rnn_layer_backward: out of memory");
        loom_status st = forward(call, &L, own_fwd + L.y, L.lstm ? own_fwd + L.c_n : NULL, own_fwd + L.fwd_base);
        if (st != LOOM_OK) {
            free(own_fwd);
            return st;
        }
        y = own_fwd + L.y;
        ws = own_fwd + L.fwd_base;
    }

    /* D [T,N,GH]: dA (LSTM, RNN) or dXP (GRU); DH [T,N,GH]: dHP (GRU);
     * dh, dc, dc2, tmp [N,H] (dc and dc2 swap: the cell reads one and
     * writes the other). */
    const int64_t nD = TN * GH * (mode == MODE_GRU ? 2 : 1);
    float *buf = alloc_floats(nD + 4 * NH);
    gemm_ctx gm = {.nt = nt};
    gemm_need(&gm, N, H, GH);
    gemm_need(&gm, TN, I, GH);
    gemm_need(&gm, GH, I, TN);
    gemm_need(&gm, GH, H, TN);
    loom_status st = buf ? gemm_alloc(&gm) : loom__set_error(LOOM_ERR_NOMEM, "rnn_layer_backward: out of memory");
    if (st != LOOM_OK) goto done;
    float *D = buf, *DH = mode == MODE_GRU ? buf + TN * GH : NULL;
    float *dh = buf + nD, *dc = dh + NH, *dc2 = dc + NH, *tmp = dc2 + NH;
    memset(dh, 0, (size_t)NH * sizeof *dh); /* h_n's gradient is part of dy */
    if (L.lstm) memcpy(dc, dcn, (size_t)NH * sizeof *dc);

    bwd_state b = {.mode = mode, .rev = rev, .T = T, .N = N, .H = H, .GH = GH, .y = y, .dy = dy, .ws = ws, .h0 = h0,
                   .c0 = c0, .whh = whh, .D = D, .DH = DH, .dh = dh, .dc = dc, .dc2 = dc2, .tmp = tmp,
                   .dh0 = out + L.dh0, .dc0 = L.lstm ? out + L.dc0 : NULL};
    const int team = row_team(nt, N);
    team_ws tws = {0};
    if (team > 1) st = team_ws_alloc(&tws, team, (N + team - 1) / team, H, GH, H, GH);
    if (st == LOOM_OK) OVER_ROWS(team, N, &gm, tws, st, bwd_steps(&b, g, cell_nt, r0, r1));
    free(tws.buf);
    if (st != LOOM_OK) goto done;
    /* dx = D W_ih; dW_ih = D^T x; dW_hh = (D or DH)^T Hprev. */
    st = gemm(&gm, TN, I, GH, D, GH, 1, wih, I, 1, 0.0f, out + L.dx, I);
    if (st == LOOM_OK)
        st = weight_grads(&gm, &L, rev, D, mode == MODE_GRU ? DH : D, x, h0, y, out + L.dw_ih, out + L.dw_hh, nt);
    if (st == LOOM_OK && L.bias) {
        col_sums(D, TN, GH, out + L.db_ih, nt);
        if (mode == MODE_GRU)
            col_sums(DH, TN, GH, out + L.db_hh, nt);
        else
            memcpy(out + L.db_hh, out + L.db_ih, (size_t)GH * sizeof(float));
    }
done:
    free(gm.ws);
    free(buf);
    free(own_fwd);
    return st;
bad:
    return loom__set_error(LOOM_ERR_INVALID_ARG,
                           "rnn_layer_backward: inputs or output do not match kernel.h's packing");
}
