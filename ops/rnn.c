/*
 * ops/rnn.c - the fused recurrent cells (LOOM_OP_LSTM_CELL, GRU_CELL), the
 * fused layer (LOOM_OP_RNN_LAYER: one direction, all steps) and their
 * gradient rules: one backward node each, whose single output packs the
 * gradients of every input (contiguous views of it go to each).
 */
#include <string.h>

#include "loom/autograd.h"
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

/* Checks that t (role) is float32 of exactly shape (ndim dims). */
static bool want_shape(const char *op, const char *role, loom_tensor *t, int ndim, const int64_t *shape)
{
    if (!loom__want_float(op, role, t)) return false;
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (ok) return true;
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    loom__set_error(LOOM_ERR_SHAPE, "%s: %s is %s, expected %s", op, role, loom__shape_str(s1, sizeof s1, t),
                    loom__fmt_shape(s2, sizeof s2, ndim, shape));
    return false;
}

/* Checks that t is float32 [N, cols]. */
static bool want_2d(const char *op, const char *role, loom_tensor *t, int64_t N, int64_t cols)
{
    return want_shape(op, role, t, 2, (const int64_t[]){N, cols});
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

/* ---- the fused layer ---------------------------------------------------- */

/* Floats [off, off + n) of the flat packed p, viewed with shape. */
static loom_tensor *packed(loom_tensor *p, int64_t off, int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return loom_view(loom_slice(p, 0, off, off + n, 1), ndim, shape);
}

loom_status loom_rnn_layer(int mode, loom_tensor *x, loom_tensor *h0, loom_tensor *c0, loom_tensor *w_ih,
                           loom_tensor *w_hh, loom_tensor *b_ih, loom_tensor *b_hh, bool reverse, loom_tensor **y,
                           loom_tensor **h_n, loom_tensor **c_n)
{
    const char *op = "rnn_layer";
    if (y) *y = NULL;
    if (h_n) *h_n = NULL;
    if (c_n) *c_n = NULL;
    if (mode < 0 || mode > 3)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: unknown mode %d (LOOM_RNN_TANH, LOOM_RNN_RELU, LOOM_LSTM, LOOM_GRU)",
                               op, mode);
    const bool lstm = mode == 2;
    if (!y) return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: y is NULL", op);
    if (!lstm && (c0 || c_n))
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: a cell state belongs to an LSTM only", op);
    if (!b_ih != !b_hh) return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: give both biases or neither", op);
    loom_tensor *req[3] = {x, w_ih, w_hh};
    if (!loom__check_inputs(op, 3, req)) return loom_last_status();
    if (!loom__want_float(op, "x", x)) return loom_last_status();
    if (x->ndim != 3 || x->shape[0] < 1 || x->shape[1] < 1 || x->shape[2] < 1) {
        char s1[LOOM__SHAPE_STR_MAX];
        return loom__set_error(LOOM_ERR_SHAPE, "%s: x must be [T, N, I] with no empty dim, got %s", op,
                               loom__shape_str(s1, sizeof s1, x));
    }
    if (!loom__want_float(op, "w_hh", w_hh)) return loom_last_status();
    if (w_hh->ndim != 2 || w_hh->shape[1] < 1) {
        char s1[LOOM__SHAPE_STR_MAX];
        return loom__set_error(LOOM_ERR_SHAPE, "%s: w_hh must be [G*H, H], got %s", op,
                               loom__shape_str(s1, sizeof s1, w_hh));
    }
    const int64_t T = x->shape[0], N = x->shape[1], I = x->shape[2], H = w_hh->shape[1];
    loom__rnn_layout L;
    loom__rnn_layout_of(mode, b_ih != NULL, T, N, I, H, &L);
    const int64_t GH = L.G * H, nh[2] = {N, H};
    if (!want_shape(op, "w_hh", w_hh, 2, (const int64_t[]){GH, H}) ||
        !want_shape(op, "w_ih", w_ih, 2, (const int64_t[]){GH, I}) ||
        (b_ih && (!want_shape(op, "b_ih", b_ih, 1, &GH) || !want_shape(op, "b_hh", b_hh, 1, &GH))) ||
        (h0 && !want_shape(op, "h0", h0, 2, nh)) || (c0 && !want_shape(op, "c0", c0, 2, nh)))
        return loom_last_status();
    loom_ctx *ctx = x->ctx;
    loom_tensor *all[7] = {x, w_ih, w_hh, h0, c0, b_ih, b_hh};
    for (int i = 0; i < 7; i++)
        if (all[i] && all[i]->ctx != ctx)
            return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: inputs belong to different contexts", op);

    loom_tensor *zeros = (!h0 || (lstm && !c0)) ? loom_zeros(ctx, LOOM_FLOAT32, 2, nh) : NULL;
    if (!h0) h0 = zeros;
    if (lstm && !c0) c0 = zeros;
    loom_tensor *in[7];
    in[L.x] = x, in[L.w_ih] = w_ih, in[L.w_hh] = w_hh, in[L.h0] = h0;
    if (lstm) in[L.c0] = c0;
    if (L.bias) in[L.b_ih] = b_ih, in[L.b_hh] = b_hh;
    bool grad = false;
    if (loom_grad_enabled(ctx))
        for (int i = 0; i < L.n_fwd_in; i++) grad = grad || (in[i] && in[i]->requires_grad);

    loom__attrs a;
    memset(&a, 0, sizeof a);
    a.rnn.mode = mode;
    a.rnn.reverse = reverse;
    a.rnn.bias = L.bias;
    a.rnn.training = grad;
    int64_t total = L.fwd_base;
    if (grad) {
        /* The workspace: the most any backend the context may run it on
         * writes. */
        loom__tview v[7];
        memset(v, 0, sizeof v);
        for (int i = 0; i < L.n_fwd_in; i++) {
            v[i].dtype = LOOM_FLOAT32;
            v[i].ndim = in[i]->ndim;
            for (int d = 0; d < in[i]->ndim; d++) v[i].shape[d] = in[i]->shape[d];
        }
        loom__kcall call = {.op = LOOM_OP_RNN_LAYER, .attrs = &a, .n_in = L.n_fwd_in, .in = v, .nthreads = 1};
        total = L.ws + LOOM__RNN_WS_HEADER + loom__registry_aux_floats(ctx->backend, &call);
    }
    loom_tensor *p = loom__record_contig(LOOM_OP_RNN_LAYER, &a, L.n_fwd_in, in, 1, &total);
    if (zeros) loom_tensor_free(zeros);
    if (!p) return loom_last_status();
    loom_tensor *ys = packed(p, L.y, 3, (const int64_t[]){T, N, H});
    loom_tensor *hs = h_n && ys ? loom_select(ys, 0, reverse ? 0 : T - 1) : NULL;
    loom_tensor *cs = c_n ? packed(p, L.c_n, 2, nh) : NULL;
    loom_tensor_free(p);
    if (!ys || (h_n && !hs) || (c_n && !cs)) {
        loom_status st = loom_last_status();
        loom_tensor_free(ys);
        loom_tensor_free(hs);
        loom_tensor_free(cs);
        return st != LOOM_OK ? st : LOOM_ERR_NOMEM;
    }
    *y = ys;
    if (h_n) *h_n = hs;
    if (c_n) *c_n = cs;
    return LOOM_OK;
}

void loom__rnn_node_layout(const loom_tensor *t, loom__rnn_layout *L)
{
    const loom__node *n = &t->node;
    const loom_tensor *x = n->in[0];
    loom__rnn_layout_of(n->attrs.rnn.mode, n->attrs.rnn.bias, x->shape[0], x->shape[1], x->shape[2],
                        n->in[2]->shape[1], L);
}

loom_status loom__rnn_layer_rule(loom_tensor *t, loom_tensor *g, loom_tensor **gin)
{
    loom__node *n = &t->node;
    const loom__attrs *a = &n->attrs;
    loom__rnn_layout L;
    loom__rnn_node_layout(t, &L);
    bool any = false;
    for (int i = 0; i < n->n_in; i++) any = any || n->in[i]->requires_grad;
    if (!any) return LOOM_OK;
    if (!a->rnn.training)
        return loom__set_error(LOOM_ERR_STATE, "backward: rnn_layer ran without its workspace (recorded with grad off)");
    loom_tensor *in[LOOM__CONTIG_MAX];
    for (int i = 0; i < L.n_fwd_in; i++) in[i] = n->in[i];
    in[L.n_fwd_in] = t;
    in[L.n_fwd_in + 1] = g;
    loom_tensor *p = loom__record_contig(LOOM_OP_RNN_LAYER_BWD, a, L.n_fwd_in + 2, in, 1, &L.bwd_floats);
    if (!p) return loom_last_status();
    const int64_t off[7] = {L.dx, L.dw_ih, L.dw_hh, L.dh0, L.dc0, L.db_ih, L.db_hh};
    const int idx[7] = {L.x, L.w_ih, L.w_hh, L.h0, L.c0, L.b_ih, L.b_hh};
    for (int k = 0; k < 7; k++) {
        const int i = idx[k];
        if (i < 0 || !n->in[i]->requires_grad) continue;
        gin[i] = packed(p, off[k], n->in[i]->ndim, n->in[i]->shape);
    }
    loom__drop(p);
    return LOOM_OK;
}
