/*
 * backends/ref/rnn_cells.h - the recurrent cells' row loops, shared by the
 * fused cells (rnn.c) and the fused layer (rnn_layer.c). Rows [r0, r1) of
 * N x H; the equations and layouts are kernel.h's LSTM_CELL and GRU_CELL.
 */
#ifndef LOOM_BACKENDS_REF_RNN_CELLS_H
#define LOOM_BACKENDS_REF_RNN_CELLS_H

#include <stdint.h>

#include "backends/ref/fastmath.h"
#include "backends/ref/nditer.h"

/* Runs BODY over rows [r0, r1) of `rows`: on the calling thread, or split
 * over a team when rows x H elements pay for one (grain: elements per
 * thread at least). */
#define LOOM__ROWS_TEAM(nthreads, rows, H, grain, BODY)                                          \
    do {                                                                                         \
        const int nt_ = loom__ref_team((nthreads), (rows) * (H), (grain));                       \
        if (nt_ <= 1) {                                                                          \
            const int64_t r0 = 0, r1 = (rows);                                                   \
            BODY;                                                                                \
        } else {                                                                                 \
            LOOM__OMP_TEAM(nt_,                                                              \
            {                                                                                    \
                int64_t r0, r1;                                                                  \
                loom__nditer_part((rows), loom__omp_thread(), loom__omp_nthreads(), 1, &r0, &r1); \
                BODY;                                                                            \
            });                                                                                    \
        }                                                                                        \
    } while (0)

static inline void loom__lstm_rows(const float *restrict a, const float *restrict c, float *restrict ho, float *restrict co,
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

/* dh = dout[0], dc_in = dout[1]; with tc = tanh(c'):
 *   dc = dc_in + dh * o * (1 - tc^2);  da_o = dh * tc * o(1-o)
 *   da_i = dc * g * i(1-i);  da_f = dc * c * f(1-f);  da_g = dc * i * (1-g^2)
 *   dc_prev = dc * f */
static inline void loom__lstm_bwd_rows(const float *restrict a, const float *restrict c, const float *restrict dh,
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

static inline void loom__gru_rows(const float *restrict xp, const float *restrict hp, const float *restrict h,
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

/* With dh' the incoming gradient:
 *   dn = dh' (1 - z);  dz = dh' (h - n);  dh = dh' z
 *   dan = dn (1 - n^2):  dxn = dan, dhn = dan * r, dr = dan * hn
 *   dar = dr r(1-r): dxr = dhr = dar;  daz = dz z(1-z): dxz = dhz = daz */
static inline void loom__gru_bwd_rows(const float *restrict xp, const float *restrict hp, const float *restrict h,
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

#endif /* LOOM_BACKENDS_REF_RNN_CELLS_H */
