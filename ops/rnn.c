/*
 * ops/rnn.c - the fused recurrent cells (LOOM_OP_LSTM_CELL, GRU_CELL) and
 * their gradient rule: one backward node per cell, whose single output
 * packs the gradients of every input (contiguous views of it go to each).
 */
#include <string.h>

#include "loom/ops.h"
#include "ops/cnn_common.h"
#include "backends/registry.h"
#include "ops/ops_internal.h"

/* Checks that the state t (role) is float32 and 2-D [N, H]. */
static bool want_state(const char *op, const char *role, loom_tensor *t)
{
    if (!loom__want_float(op, role, t)) return false;
    if (t->ndim == 2) return true;
    char s1[LOOM__SHAPE_STR_MAX];
    loom__set_error(LOOM_ERR_SHAPE, "%s: %s must be 2-D [N, H], got %s", op, role, loom__shape_str(s1, sizeof s1, t));
    return false;
}

/* Checks that t is float32 [N, cols]. */
static bool want_2d(const char *op, const char *role, loom_tensor *t, int64_t N, int64_t cols)
{
    if (!loom__want_float(op, role, t)) return false;
    if (t->ndim == 2 && t->shape[0] == N && t->shape[1] == cols) return true;
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    loom__set_error(LOOM_ERR_SHAPE, "%s: %s is %s, expected %s", op, role, loom__shape_str(s1, sizeof s1, t),
                    loom__fmt_shape(s2, sizeof s2, 2, (const int64_t[]){N, cols}));
    return false;
}

loom_tensor *loom_lstm_cell_gates(loom_tensor *a, loom_tensor *c)
{
    const char *op = "lstm_cell_gates";
    loom_tensor *in[2] = {a, c};
    if (!loom__check_inputs(op, 2, in)) return NULL;
    if (!want_state(op, "c", c) ||
        !want_2d(op, "a (the gate pre-activations)", a, c->shape[0], 4 * c->shape[1]))
        return NULL;
    return loom__record_contig(LOOM_OP_LSTM_CELL, NULL, 2, in, 3, (const int64_t[]){2, c->shape[0], c->shape[1]});
}

loom_tensor *loom_gru_cell_gates(loom_tensor *xp, loom_tensor *hp, loom_tensor *h)
{
    const char *op = "gru_cell_gates";
    loom_tensor *in[3] = {xp, hp, h};
    if (!loom__check_inputs(op, 3, in)) return NULL;
    if (!want_state(op, "h", h) ||
        !want_2d(op, "xp", xp, h->shape[0], 3 * h->shape[1]) || !want_2d(op, "hp", hp, h->shape[0], 3 * h->shape[1]))
        return NULL;
    return loom__record_contig(LOOM_OP_GRU_CELL, NULL, 3, in, 2, h->shape);
}

/* Rows [off, off + rows*cols) of the flat packed p, as a [rows, cols] view. */
static loom_tensor *part(loom_tensor *p, int64_t off, int64_t rows, int64_t cols)
{
    return loom_view(loom_slice(p, 0, off, off + rows * cols, 1), 2, (const int64_t[]){rows, cols});
}

loom_status loom__rnn_cell_rule(loom_tensor *t, loom_tensor *g, loom_tensor **gin)
{
    loom__node *n = &t->node;
    bool any = false;
    for (int i = 0; i < n->n_in; i++) any = any || n->in[i]->requires_grad;
    if (!any) return LOOM_OK;
    if (n->op == LOOM_OP_LSTM_CELL) {
        const int64_t N = n->in[1]->shape[0], H = n->in[1]->shape[1];
        loom_tensor *in[3] = {n->in[0], n->in[1], g};
        loom_tensor *p = loom__record_contig(LOOM_OP_LSTM_CELL_BWD, NULL, 3, in, 1,
                                             (const int64_t[]){N * 4 * H + N * H});
        if (!p) return loom_last_status();
        if (n->in[0]->requires_grad) gin[0] = part(p, 0, N, 4 * H);
        if (n->in[1]->requires_grad) gin[1] = part(p, N * 4 * H, N, H);
        loom__drop(p);
        return LOOM_OK;
    }
    if (n->op == LOOM_OP_GRU_CELL) {
        const int64_t N = n->in[2]->shape[0], H = n->in[2]->shape[1];
        loom_tensor *in[4] = {n->in[0], n->in[1], n->in[2], g};
        loom_tensor *p = loom__record_contig(LOOM_OP_GRU_CELL_BWD, NULL, 4, in, 1,
                                             (const int64_t[]){2 * N * 3 * H + N * H});
        if (!p) return loom_last_status();
        if (n->in[0]->requires_grad) gin[0] = part(p, 0, N, 3 * H);
        if (n->in[1]->requires_grad) gin[1] = part(p, N * 3 * H, N, 3 * H);
        if (n->in[2]->requires_grad) gin[2] = part(p, 2 * N * 3 * H, N, H);
        loom__drop(p);
        return LOOM_OK;
    }
    return loom__set_error(LOOM_ERR_STATE, "backward: no gradient rule for %s", loom__op_name(n->op));
}
