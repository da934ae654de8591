/*
 * backends/ref/rnn.c - the fused recurrent cells (LOOM_OP_LSTM_CELL,
 * LOOM_OP_GRU_CELL and their backwards; kernel.h gives the layouts).
 *
 * Written as tensor ops, one LSTM step is ~10 nodes forward and ~30
 * backward over [N, H] slices (3 sigmoids, 2 tanh, their derivatives, the
 * products and sums), each a pass over memory; here it is one pass each
 * way. The backward recomputes the gates from the pre-activations instead
 * of saving them: a few exp per element against storing 4-6 more [N, H]
 * tensors per step. Rows are independent: a team splits them.
 */
#include "backends/ref/fastmath.h"
#include "backends/ref/nditer.h"
#include "backends/ref/ref.h"
#include "backends/registry.h"
#include "runtime/error.h"

/* Elements (rows x H) per thread below which a team does not pay. */
#define CELL_GRAIN 16384

static loom_status bad_call(const loom__kcall *call, int n_in)
{
    return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: expects %d contiguous float32 inputs", loom__op_name(call->op),
                           n_in);
}

/* Checks dtypes and input count; sets *rows and *H from in[hidx] [N, H]. */
static bool shape_of(const loom__kcall *call, int n_in, int hidx, int64_t *rows, int64_t *H)
{
    if (call->n_in != n_in || call->out.dtype != LOOM_FLOAT32) return false;
    for (int i = 0; i < n_in; i++)
        if (call->in[i].dtype != LOOM_FLOAT32) return false;
    const loom__tview *h = &call->in[hidx];
    if (h->ndim != 2) return false;
    *rows = h->shape[0];
    *H = h->shape[1];
    return true;
}

/* The team for rows x H elements, and row range [r0, r1) of thread t. */
#define ROWS_PARALLEL(call, rows, H, BODY)                                                          \
    do {                                                                                         \
        const int nt_ = loom__ref_team((call)->nthreads, (rows) * (H), CELL_GRAIN);               \
        if (nt_ <= 1) {                                                                          \
            const int64_t r0 = 0, r1 = (rows);                                                   \
            BODY;                                                                                \
        } else {                                                                                 \
            LOOM__OMP_PARALLEL(nt_)                                                              \
            {                                                                                    \
                int64_t r0, r1;                                                                  \
                loom__nditer_part((rows), loom__omp_thread(), loom__omp_nthreads(), 1, &r0, &r1); \
                BODY;                                                                            \
            }                                                                                    \
        }                                                                                        \
    } while (0)

/* ---- LSTM ---------------------------------------------------------------- */

static void lstm_rows(const float *restrict a, const float *restrict c, float *restrict ho, float *restrict co,
                      int64_t H, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *ar = a + r * 4 * H, *cr = c + r * H;
        float *hr = ho + r * H, *cn = co + r * H;
        for (int64_t j = 0; j < H; j++) {
            const float i = sigmoid_f32(ar[j]), f = sigmoid_f32(ar[H + j]);
            const float g = tanh_f32(ar[2 * H + j]), o = sigmoid_f32(ar[3 * H + j]);
            const float cj = f * cr[j] + i * g;
            cn[j] = cj;
            hr[j] = o * tanh_f32(cj);
        }
    }
}

loom_status loom__ref_lstm_cell(const loom__kcall *call)
{
    int64_t rows, H;
    if (!shape_of(call, 2, 1, &rows, &H)) return bad_call(call, 2);
    const float *a = call->in[0].data, *c = call->in[1].data;
    float *out = call->out.data;
    ROWS_PARALLEL(call, rows, H, lstm_rows(a, c, out, out + rows * H, H, r0, r1));
    return LOOM_OK;
}

/* dh = dout[0], dc_in = dout[1]; with tc = tanh(c'):
 *   dc = dc_in + dh * o * (1 - tc^2);  da_o = dh * tc * o(1-o)
 *   da_i = dc * g * i(1-i);  da_f = dc * c * f(1-f);  da_g = dc * i * (1-g^2)
 *   dc_prev = dc * f */
static void lstm_bwd_rows(const float *restrict a, const float *restrict c, const float *restrict dh,
                          const float *restrict dcn, float *restrict da, float *restrict dc, int64_t H, int64_t r0,
                          int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *ar = a + r * 4 * H, *cr = c + r * H, *dhr = dh + r * H, *dcr = dcn + r * H;
        float *dar = da + r * 4 * H, *dcp = dc + r * H;
        for (int64_t j = 0; j < H; j++) {
            const float i = sigmoid_f32(ar[j]), f = sigmoid_f32(ar[H + j]);
            const float g = tanh_f32(ar[2 * H + j]), o = sigmoid_f32(ar[3 * H + j]);
            const float cj = f * cr[j] + i * g, tc = tanh_f32(cj);
            const float d = dcr[j] + dhr[j] * o * (1.0f - tc * tc);
            dar[j] = d * g * (i * (1.0f - i));
            dar[H + j] = d * cr[j] * (f * (1.0f - f));
            dar[2 * H + j] = d * i * (1.0f - g * g);
            dar[3 * H + j] = dhr[j] * tc * (o * (1.0f - o));
            dcp[j] = d * f;
        }
    }
}

loom_status loom__ref_lstm_cell_bwd(const loom__kcall *call)
{
    int64_t rows, H;
    if (!shape_of(call, 3, 1, &rows, &H)) return bad_call(call, 3);
    const float *a = call->in[0].data, *c = call->in[1].data, *dout = call->in[2].data;
    float *out = call->out.data;
    ROWS_PARALLEL(call, rows, H, lstm_bwd_rows(a, c, dout, dout + rows * H, out, out + rows * 4 * H, H, r0, r1));
    return LOOM_OK;
}

/* ---- GRU ------------------------------------------------------------------- */

static void gru_rows(const float *restrict xp, const float *restrict hp, const float *restrict h,
                     float *restrict ho, int64_t H, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *x = xp + r * 3 * H, *hh = hp + r * 3 * H, *hr = h + r * H;
        float *o = ho + r * H;
        for (int64_t j = 0; j < H; j++) {
            const float rg = sigmoid_f32(x[j] + hh[j]), z = sigmoid_f32(x[H + j] + hh[H + j]);
            const float n = tanh_f32(x[2 * H + j] + rg * hh[2 * H + j]);
            o[j] = n + z * (hr[j] - n);
        }
    }
}

loom_status loom__ref_gru_cell(const loom__kcall *call)
{
    int64_t rows, H;
    if (!shape_of(call, 3, 2, &rows, &H)) return bad_call(call, 3);
    const float *xp = call->in[0].data, *hp = call->in[1].data, *h = call->in[2].data;
    ROWS_PARALLEL(call, rows, H, gru_rows(xp, hp, h, call->out.data, H, r0, r1));
    return LOOM_OK;
}

/* With dh' the incoming gradient:
 *   dn = dh' (1 - z);  dz = dh' (h - n);  dh = dh' z
 *   dan = dn (1 - n^2):  dxn = dan, dhn = dan * r, dr = dan * hn
 *   dar = dr r(1-r): dxr = dhr = dar;  daz = dz z(1-z): dxz = dhz = daz */
static void gru_bwd_rows(const float *restrict xp, const float *restrict hp, const float *restrict h,
                         const float *restrict dho, float *restrict dxp, float *restrict dhp, float *restrict dh,
                         int64_t H, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const float *x = xp + r * 3 * H, *hh = hp + r * 3 * H, *hr = h + r * H, *g = dho + r * H;
        float *dx = dxp + r * 3 * H, *dhh = dhp + r * 3 * H, *dhr = dh + r * H;
        for (int64_t j = 0; j < H; j++) {
            const float rg = sigmoid_f32(x[j] + hh[j]), z = sigmoid_f32(x[H + j] + hh[H + j]);
            const float n = tanh_f32(x[2 * H + j] + rg * hh[2 * H + j]);
            const float dan = g[j] * (1.0f - z) * (1.0f - n * n);
            const float dar = dan * hh[2 * H + j] * (rg * (1.0f - rg));
            const float daz = g[j] * (hr[j] - n) * (z * (1.0f - z));
            dx[j] = dhh[j] = dar;
            dx[H + j] = dhh[H + j] = daz;
            dx[2 * H + j] = dan;
            dhh[2 * H + j] = dan * rg;
            dhr[j] = g[j] * z;
        }
    }
}

loom_status loom__ref_gru_cell_bwd(const loom__kcall *call)
{
    int64_t rows, H;
    if (!shape_of(call, 4, 2, &rows, &H)) return bad_call(call, 4);
    const float *xp = call->in[0].data, *hp = call->in[1].data, *h = call->in[2].data, *dho = call->in[3].data;
    float *out = call->out.data;
    ROWS_PARALLEL(call, rows, H,
                  gru_bwd_rows(xp, hp, h, dho, out, out + rows * 3 * H, out + 2 * rows * 3 * H, H, r0, r1));
    return LOOM_OK;
}
