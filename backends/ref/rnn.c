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
#include "backends/ref/rnn_cells.h"
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
#define ROWS_PARALLEL(call, rows, H, BODY) LOOM__ROWS_TEAM((call)->nthreads, rows, H, CELL_GRAIN, BODY)

/* ---- LSTM ---------------------------------------------------------------- */


loom_status loom__ref_lstm_cell(const loom__kcall *call)
{
    int64_t rows, H;
    if (!shape_of(call, 2, 1, &rows, &H)) return bad_call(call, 2);
    const float *a = call->in[0].data, *c = call->in[1].data;
    float *out = call->out.data;
    ROWS_PARALLEL(call, rows, H, loom__lstm_rows(a, c, out, out + rows * H, H, r0, r1));
    return LOOM_OK;
}


loom_status loom__ref_lstm_cell_bwd(const loom__kcall *call)
{
    int64_t rows, H;
    if (!shape_of(call, 3, 1, &rows, &H)) return bad_call(call, 3);
    const float *a = call->in[0].data, *c = call->in[1].data, *dout = call->in[2].data;
    float *out = call->out.data;
    ROWS_PARALLEL(call, rows, H, loom__lstm_bwd_rows(a, c, dout, dout + rows * H, out, out + rows * 4 * H, H, r0, r1));
    return LOOM_OK;
}

/* ---- GRU ------------------------------------------------------------------- */


loom_status loom__ref_gru_cell(const loom__kcall *call)
{
    int64_t rows, H;
    if (!shape_of(call, 3, 2, &rows, &H)) return bad_call(call, 3);
    const float *xp = call->in[0].data, *hp = call->in[1].data, *h = call->in[2].data;
    ROWS_PARALLEL(call, rows, H, loom__gru_rows(xp, hp, h, call->out.data, H, r0, r1));
    return LOOM_OK;
}


loom_status loom__ref_gru_cell_bwd(const loom__kcall *call)
{
    int64_t rows, H;
    if (!shape_of(call, 4, 2, &rows, &H)) return bad_call(call, 4);
    const float *xp = call->in[0].data, *hp = call->in[1].data, *h = call->in[2].data, *dho = call->in[3].data;
    float *out = call->out.data;
    ROWS_PARALLEL(call, rows, H,
                  loom__gru_bwd_rows(xp, hp, h, dho, out, out + rows * 3 * H, out + 2 * rows * 3 * H, H, r0, r1));
    return LOOM_OK;
}
