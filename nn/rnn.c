/*
 * nn/rnn.c - recurrent layers: RNN (tanh, relu), LSTM and GRU, multi-layer
 * and bidirectional, and their single-step cells (torch.nn's semantics,
 * parameter names and layouts).
 *
 * The layers are compositions of tensor ops, so autograd derives
 * backpropagation through time from the ops' own gradients. Per layer and
 * direction:
 *
 *   xp  = x W_ih^T + b_ih (+ b_hh for RNN/LSTM)    one matmul, [T, N, G*H]
 *   for each step t:  a = xp[t] + h W_hh^T         one matmul [N, H]x[H, G*H]
 *                     the gates                    RNN: tanh or relu; LSTM, GRU:
 *                                                  one fused node (ops/rnn.c)
 *
 * Every step is a handful of nodes of the DAG: the scheduler runs the two
 * directions of a bidirectional layer side by side, and layer k+1's step t
 * beside layer k's step t+1 (a wavefront), without a line of code here.
 * Shapes: T steps, N batch, I input features, H hidden, G gates, D
 * directions, L layers.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/module_impl.h"

static const int GATES[LOOM_RNN_MODE_COUNT] = {1, 1, 4, 3};
static const char *const LAYER_TYPE[LOOM_RNN_MODE_COUNT] = {"RNN", "RNN", "LSTM", "GRU"};
static const char *const CELL_TYPE[LOOM_RNN_MODE_COUNT] = {"RNNCell", "RNNCell", "LSTMCell", "GRUCell"};

typedef struct rnn_data {
    loom_rnn_mode mode;
    int64_t input_size, hidden_size;
    int num_layers, dirs;
    bool bias, batch_first, cell;
    double dropout;
    /* [num_layers * dirs] each, owned by the module; b_* NULL without bias. */
    loom_tensor **w_ih, **w_hh, **b_ih, **b_hh;
} rnn_data;

static void rnn_data_free(void *p)
{
    rnn_data *d = p;
    if (!d) return;
    free(d->w_ih);
    free(d->w_hh);
    free(d->b_ih);
    free(d->b_hh);
    free(d);
}

/* ---- one step ------------------------------------------------------------ */

/* One step of the cell. xp [N, G*H]: the input projection x W_ih^T + b_ih,
 * with b_hh already added for RNN and LSTM (bhh NULL then); whhT [H, G*H]
 * the transposed hidden weights; h, c [N, H] (c: LSTM only). Sets *h_out
 * (and *c_out). Every tensor lives in the caller's scope; returns false
 * with the error set if an op failed. */
static bool cell_step(loom_rnn_mode mode, loom_tensor *xp, loom_tensor *h, loom_tensor *c,
                      loom_tensor *whhT, loom_tensor *bhh, loom_tensor **h_out, loom_tensor **c_out)
{
    switch (mode) {
    case LOOM_RNN_TANH:
    case LOOM_RNN_RELU: {
        loom_tensor *a = loom_add(xp, loom_matmul(h, whhT));
        *h_out = mode == LOOM_RNN_TANH ? loom_tanh(a) : loom_relu(a);
        break;
    }
    case LOOM_LSTM: {
        /* a [N, 4H]: the pre-activations of i, f, g, o; the gates are one
         * fused node each way (ops/rnn.c), giving [2, N, H] = (h', c'). */
        loom_tensor *hc = loom_lstm_cell_gates(loom_add(xp, loom_matmul(h, whhT)), c);
        *h_out = loom_select(hc, 0, 0);
        *c_out = loom_select(hc, 0, 1);
        break;
    }
    case LOOM_GRU: {
        loom_tensor *hp = loom_matmul(h, whhT); /* [N, 3H]: r, z, n */
        if (bhh) hp = loom_add(hp, bhh);
        *h_out = loom_gru_cell_gates(xp, hp, h);
        break;
    }
    default:
        loom__set_error(LOOM_ERR_INVALID_ARG, "rnn: unknown mode %d", (int)mode);
        return false;
    }
    return *h_out && (mode != LOOM_LSTM || *c_out);
}

/* ---- construction ------------------------------------------------------ */

static bool valid_mode(const char *op, loom_rnn_mode mode)
{
    if ((int)mode >= 0 && mode < LOOM_RNN_MODE_COUNT) return true;
    loom__set_error(LOOM_ERR_INVALID_ARG, "%s: unknown mode %d (LOOM_RNN_TANH, LOOM_RNN_RELU, LOOM_LSTM, LOOM_GRU)",
                    op, (int)mode);
    return false;
}

/* Registers parameter `name` of `shape`, uniform in +-bound, and stores its
 * handle in *slot. */
static bool add_uniform(loom_module *m, loom_ctx *ctx, const char *name, int ndim, const int64_t *shape, double bound,
                        loom_tensor **slot)
{
    loom_tensor *t = loom__nn_uniform(ctx, ndim, shape, bound);
    if (!t) return false;
    if (loom_module_add_parameter(m, name, t) != LOOM_OK) {
        loom_tensor_free(t); /* not taken on failure */
        return false;
    }
    *slot = t;
    return true;
}

static loom_tensor *rnn_module_forward(loom_module *m, loom_tensor *x, void *user);
static loom_tensor *cell_module_forward(loom_module *m, loom_tensor *x, void *user);

static loom_module *build(loom_ctx *ctx, const char *op, loom_rnn_mode mode, int64_t input_size, int64_t hidden_size,
                          const loom_rnn_opts *o, bool cell)
{
    if (!ctx) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: context is NULL", op);
        return NULL;
    }
    if (!valid_mode(op, mode)) return NULL;
    int layers = o->num_layers ? o->num_layers : 1;
    if (input_size <= 0 || hidden_size <= 0 || layers < 1) {
        loom__set_error(LOOM_ERR_INVALID_ARG,
                        "%s: input_size (%lld), hidden_size (%lld) and num_layers (%d) must be positive", op,
                        (long long)input_size, (long long)hidden_size, o->num_layers);
        return NULL;
    }
    if (!(o->dropout >= 0.0 && o->dropout < 1.0)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: dropout must be in [0, 1), got %g", op, o->dropout);
        return NULL;
    }
    rnn_data *d = calloc(1, sizeof *d);
    int dirs = o->bidirectional ? 2 : 1;
    size_t n = (size_t)layers * (size_t)dirs;
    if (d) {
        d->w_ih = calloc(n, sizeof *d->w_ih);
        d->w_hh = calloc(n, sizeof *d->w_hh);
        d->b_ih = calloc(n, sizeof *d->b_ih);
        d->b_hh = calloc(n, sizeof *d->b_hh);
    }
    if (!d || !d->w_ih || !d->w_hh || !d->b_ih || !d->b_hh) {
        rnn_data_free(d);
        loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory", op);
        return NULL;
    }
    d->mode = mode;
    d->input_size = input_size;
    d->hidden_size = hidden_size;
    d->num_layers = layers;
    d->dirs = dirs;
    d->bias = !o->no_bias;
    d->batch_first = o->batch_first;
    d->cell = cell;
    d->dropout = o->dropout;
    loom_module *m = loom_module_create(ctx, cell ? CELL_TYPE[mode] : LAYER_TYPE[mode],
                                        cell ? cell_module_forward : rnn_module_forward, d, rnn_data_free);
    if (!m) {
        rnn_data_free(d);
        return NULL;
    }
    /* PyTorch's reset_parameters: every parameter uniform in +-1/sqrt(H),
     * drawn in named_parameters order (layer, direction, w_ih, w_hh, b_ih,
     * b_hh). */
    double bound = 1.0 / sqrt((double)hidden_size);
    int64_t gh = GATES[mode] * hidden_size;
    for (int k = 0; k < layers; k++) {
        for (int dir = 0; dir < dirs; dir++) {
            size_t s = (size_t)k * (size_t)dirs + (size_t)dir;
            int64_t in = k == 0 ? input_size : dirs * hidden_size;
            char sfx[32], name[48];
            if (cell)
                sfx[0] = '\0';
            else
                snprintf(sfx, sizeof sfx, "_l%d%s", k, dir ? "_reverse" : "");
            snprintf(name, sizeof name, "weight_ih%s", sfx);
            if (!add_uniform(m, ctx, name, 2, (const int64_t[]){gh, in}, bound, &d->w_ih[s])) goto fail;
            snprintf(name, sizeof name, "weight_hh%s", sfx);
            if (!add_uniform(m, ctx, name, 2, (const int64_t[]){gh, hidden_size}, bound, &d->w_hh[s])) goto fail;
            if (!d->bias) continue;
            snprintf(name, sizeof name, "bias_ih%s", sfx);
            if (!add_uniform(m, ctx, name, 1, (const int64_t[]){gh}, bound, &d->b_ih[s])) goto fail;
            snprintf(name, sizeof name, "bias_hh%s", sfx);
            if (!add_uniform(m, ctx, name, 1, (const int64_t[]){gh}, bound, &d->b_hh[s])) goto fail;
        }
    }
    return m;
fail:
    loom_module_free(m);
    return NULL;
}

loom_module *loom_rnn_module(loom_ctx *ctx, loom_rnn_mode mode, int64_t input_size, int64_t hidden_size,
                             const loom_rnn_opts *opts)
{
    loom_rnn_opts o = opts ? *opts : (loom_rnn_opts){0};
    return build(ctx, "rnn", mode, input_size, hidden_size, &o, false);
}

loom_module *loom_rnn_cell_module(loom_ctx *ctx, loom_rnn_mode mode, int64_t input_size, int64_t hidden_size,
                                  bool bias)
{
    loom_rnn_opts o = {.no_bias = !bias};
    return build(ctx, "rnn_cell", mode, input_size, hidden_size, &o, true);
}

/* ---- argument checks ----------------------------------------------------- */

/* The module's data if m is a recurrent layer (cell == false) or cell. */
static rnn_data *rnn_of(loom_module *m, const char *op, bool cell)
{
    if (!m) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: module is NULL", op);
        return NULL;
    }
    const char *type = loom_module_type(m);
    const char *const *types = cell ? CELL_TYPE : LAYER_TYPE;
    for (int i = 0; i < LOOM_RNN_MODE_COUNT; i++)
        if (strcmp(type, types[i]) == 0) return loom__nn_module_user(m);
    loom__set_error(LOOM_ERR_INVALID_ARG, "%s: module is a %s, not %s", op, type,
                    cell ? "an RNNCell, LSTMCell or GRUCell" : "an RNN, LSTM or GRU");
    return NULL;
}

/* Checks that t (argument `what`) is float32 of exactly `shape`. */
static bool check_shape(const char *op, const char *what, loom_tensor *t, int ndim, const int64_t *shape)
{
    if (!loom__nn_float(op, what, t)) return false;
    bool ok = loom_tensor_ndim(t) == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = loom_tensor_size(t, i) == shape[i];
    if (ok) return true;
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    loom__set_error(LOOM_ERR_SHAPE, "%s: %s is %s, expected %s", op, what, loom__nn_shape(s1, t),
                    loom__fmt_shape(s2, sizeof s2, ndim, shape));
    return false;
}

/* The checks both forwards begin with: m is a layer (cell == false) or a
 * cell, the result pointer `out` (named out_name) is given, x is present
 * and float32, a cell state only for an LSTM, one context for all. Returns
 * the module's data, or NULL with the error set. */
static rnn_data *check_call(const char *op, loom_module *m, bool cell, const void *out, const char *out_name,
                            loom_tensor *x, loom_tensor *h, loom_tensor *c, bool wants_c)
{
    rnn_data *d = rnn_of(m, op, cell);
    if (!d) return NULL;
    if (!out) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: %s is NULL", op, out_name);
        return NULL;
    }
    if (!loom__nn_present(op, "input", x)) return NULL;
    if (d->mode != LOOM_LSTM && (c || wants_c)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: a cell state belongs to an %s, not to a %s", op,
                        cell ? "LSTMCell" : "LSTM", loom_module_type(m));
        return NULL;
    }
    loom_ctx *ctx = loom_module_ctx(m);
    if (loom_tensor_ctx(x) != ctx || (h && loom_tensor_ctx(h) != ctx) || (c && loom_tensor_ctx(c) != ctx)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: the input, states and module belong to different contexts", op);
        return NULL;
    }
    return loom__nn_float(op, "input", x) ? d : NULL;
}

/* ---- the layer ------------------------------------------------------------- */

/* Layers run as one node per layer and direction (loom_rnn_layer) unless
 * LOOM_RNN_STEPS=1 asks for the step-by-step graph below (a few nodes per
 * step: the reference the fused kernels are tested against, and the one
 * whose steps the scheduler can overlap across layers). Read per call. */
static bool use_fused_layers(void)
{
    const char *e = getenv("LOOM_RNN_STEPS");
    return !(e && e[0] == '1' && e[1] == '\0');
}

loom_status loom_rnn_forward(loom_module *m, loom_tensor *x, loom_tensor *h0, loom_tensor *c0, loom_tensor **output,
                             loom_tensor **h_n, loom_tensor **c_n)
{
    const char *op = "rnn";
    if (output) *output = NULL;
    if (h_n) *h_n = NULL;
    if (c_n) *c_n = NULL;
    rnn_data *d = check_call(op, m, false, output, "output", x, h0, c0, c_n != NULL);
    if (!d) return loom_last_status();
    bool lstm = d->mode == LOOM_LSTM;
    loom_ctx *ctx = loom_module_ctx(m);
    int nd = loom_tensor_ndim(x);
    char s1[LOOM__SHAPE_STR_MAX];
    if ((nd != 2 && nd != 3) || loom_tensor_size(x, -1) != d->input_size) {
        loom__set_error(LOOM_ERR_SHAPE, "%s: input must be [T, N, %lld]%s or unbatched [T, %lld], got %s", op,
                        (long long)d->input_size, d->batch_first ? " (batch_first: [N, T, I])" : "",
                        (long long)d->input_size, loom__nn_shape(s1, x));
        return LOOM_ERR_SHAPE;
    }
    bool batched = nd == 3;
    int64_t T = loom_tensor_size(x, batched && d->batch_first ? 1 : 0);
    int64_t N = batched ? loom_tensor_size(x, d->batch_first ? 0 : 1) : 1;
    int64_t H = d->hidden_size, LD = (int64_t)d->num_layers * d->dirs;
    if (T < 1 || N < 1) {
        loom__set_error(LOOM_ERR_SHAPE, "%s: input %s has no steps or no batch", op, loom__nn_shape(s1, x));
        return LOOM_ERR_SHAPE;
    }
    int64_t sshape[3] = {LD, N, H};
    if (!batched) sshape[1] = H;
    if (h0 && !check_shape(op, "h0", h0, batched ? 3 : 2, sshape)) return loom_last_status();
    if (c0 && !check_shape(op, "c0", c0, batched ? 3 : 2, sshape)) return loom_last_status();

    size_t T_ = (size_t)T;
    loom_tensor **steps = malloc(2 * T_ * sizeof *steps); /* [dir][t] */
    loom_tensor **hn = malloc(2 * (size_t)LD * sizeof *hn);
    loom_tensor **cn = hn ? hn + LD : NULL;
    if (!steps || !hn) {
        free(steps);
        free(hn);
        loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory", op);
        return LOOM_ERR_NOMEM;
    }
    if (!loom__nn_enter(ctx)) {
        free(steps);
        free(hn);
        return loom_last_status();
    }
    bool ok = true;
    /* Everything runs time-major and batched: seq [T, N, I]. */
    loom_tensor *seq = batched ? (d->batch_first ? loom_transpose(x, 0, 1) : x) : loom_unsqueeze(x, 1);
    if (h0 && !batched) h0 = loom_unsqueeze(h0, 1);
    if (c0 && !batched) c0 = loom_unsqueeze(c0, 1);
    const bool fused = use_fused_layers();
    loom_tensor *zeros =
        !fused && (!h0 || (lstm && !c0)) ? loom_zeros(ctx, LOOM_FLOAT32, 2, (const int64_t[]){N, H}) : NULL;
    bool training = loom_module_is_training(m);
    for (int k = 0; ok && fused && k < d->num_layers; k++) {
        /* One node per direction each way (loom_rnn_layer). */
        loom_tensor *ys[2] = {NULL, NULL};
        seq = loom_contiguous(seq);
        for (int dir = 0; ok && dir < d->dirs; dir++) {
            int64_t s = (int64_t)k * d->dirs + dir;
            loom_tensor *h = h0 ? loom_select(h0, 0, s) : NULL;
            loom_tensor *c = lstm && c0 ? loom_select(c0, 0, s) : NULL;
            ok = loom_rnn_layer((int)d->mode, seq, h, c, d->w_ih[s], d->w_hh[s], d->b_ih[s], d->b_hh[s], dir == 1,
                                &ys[dir], &hn[s], lstm ? &cn[s] : NULL) == LOOM_OK;
        }
        if (!ok) break;
        loom_tensor *y = d->dirs == 2 ? loom_cat(ys, 2, 2) : ys[0];
        if (d->dropout > 0.0 && training && k + 1 < d->num_layers) y = loom_dropout(y, d->dropout, true);
        seq = y;
        ok = seq != NULL;
    }
    for (int k = 0; ok && !fused && k < d->num_layers; k++) {
        for (int dir = 0; ok && dir < d->dirs; dir++) {
            int64_t s = (int64_t)k * d->dirs + dir;
            /* xp [T, N, G*H] = seq W_ih^T + b_ih (+ b_hh but for GRU,
             * whose b_hn sits inside r * (.)) */
            loom_tensor *xp = loom_matmul(seq, loom_transpose(d->w_ih[s], 0, 1));
            loom_tensor *bhh = NULL;
            if (d->bias) {
                if (d->mode == LOOM_GRU) {
                    xp = loom_add(xp, d->b_ih[s]);
                    bhh = d->b_hh[s];
                } else {
                    xp = loom_add(xp, loom_add(d->b_ih[s], d->b_hh[s]));
                }
            }
            loom_tensor *whhT = loom_transpose(d->w_hh[s], 0, 1);
            loom_tensor *h = h0 ? loom_select(h0, 0, s) : zeros;
            loom_tensor *c = lstm ? (c0 ? loom_select(c0, 0, s) : zeros) : NULL;
            for (int64_t i = 0; ok && i < T; i++) {
                int64_t t = dir ? T - 1 - i : i;
                loom_tensor *hnext = NULL, *cnext = NULL;
                ok = cell_step(d->mode, loom_select(xp, 0, t), h, c, whhT, bhh, &hnext, &cnext);
                h = hnext;
                c = cnext;
                steps[(size_t)dir * T_ + (size_t)t] = h;
            }
            hn[s] = h;
            if (lstm) cn[s] = c;
        }
        if (!ok) break;
        /* The layer's output [T, N, D*H]: each direction's h_t stacked over
         * time, the directions side by side. */
        loom_tensor *y = loom_stack(steps, (int)T, 0);
        if (d->dirs == 2) y = loom_cat((loom_tensor *const[]){y, loom_stack(steps + T_, (int)T, 0)}, 2, 2);
        if (d->dropout > 0.0 && training && k + 1 < d->num_layers) y = loom_dropout(y, d->dropout, true);
        seq = y;
        ok = seq != NULL;
    }
    loom_tensor *out = NULL, *hs = NULL, *cs = NULL;
    if (ok) {
        out = batched ? (d->batch_first ? loom_transpose(seq, 0, 1) : seq) : loom_squeeze(seq, 1);
        if (h_n) {
            hs = loom_stack(hn, (int)LD, 0); /* [L*D, N, H] */
            if (hs && !batched) hs = loom_squeeze(hs, 1);
        }
        if (c_n) {
            cs = loom_stack(cn, (int)LD, 0);
            if (cs && !batched) cs = loom_squeeze(cs, 1);
        }
        ok = out && (!h_n || hs) && (!c_n || cs);
    }
    if (ok) {
        *output = loom_scope_keep(out);
        if (h_n) *h_n = loom_scope_keep(hs);
        if (c_n) *c_n = loom_scope_keep(cs);
    }
    loom_status st = ok ? LOOM_OK : loom_last_status();
    loom_scope_end(ctx);
    free(steps);
    free(hn);
    return ok ? LOOM_OK : (st != LOOM_OK ? st : LOOM_ERR_INVALID_ARG);
}

static loom_tensor *rnn_module_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)user;
    loom_tensor *y = NULL;
    return loom_rnn_forward(m, x, NULL, NULL, &y, NULL, NULL) == LOOM_OK ? y : NULL;
}

/* ---- the cell ---------------------------------------------------------------- */

loom_status loom_rnn_cell_forward(loom_module *m, loom_tensor *x, loom_tensor *h, loom_tensor *c, loom_tensor **h_out,
                                  loom_tensor **c_out)
{
    const char *op = "rnn_cell";
    if (h_out) *h_out = NULL;
    if (c_out) *c_out = NULL;
    rnn_data *d = check_call(op, m, true, h_out, "h_out", x, h, c, c_out != NULL);
    if (!d) return loom_last_status();
    bool lstm = d->mode == LOOM_LSTM;
    loom_ctx *ctx = loom_module_ctx(m);
    int nd = loom_tensor_ndim(x);
    char s1[LOOM__SHAPE_STR_MAX];
    if ((nd != 1 && nd != 2) || loom_tensor_size(x, -1) != d->input_size) {
        loom__set_error(LOOM_ERR_SHAPE, "%s: input must be [N, %lld] or [%lld], got %s", op, (long long)d->input_size,
                        (long long)d->input_size, loom__nn_shape(s1, x));
        return LOOM_ERR_SHAPE;
    }
    bool batched = nd == 2;
    int64_t N = batched ? loom_tensor_size(x, 0) : 1, H = d->hidden_size;
    int64_t sshape[2] = {N, H};
    if (h && !check_shape(op, "h", h, nd, batched ? sshape : sshape + 1)) return loom_last_status();
    if (c && !check_shape(op, "c", c, nd, batched ? sshape : sshape + 1)) return loom_last_status();
    if (!loom__nn_enter(ctx)) return loom_last_status();
    if (!batched) {
        x = loom_unsqueeze(x, 0);
        if (h) h = loom_unsqueeze(h, 0);
        if (c) c = loom_unsqueeze(c, 0);
    }
    loom_tensor *zeros = (!h || (lstm && !c)) ? loom_zeros(ctx, LOOM_FLOAT32, 2, (const int64_t[]){N, H}) : NULL;
    loom_tensor *xp = loom_matmul(x, loom_transpose(d->w_ih[0], 0, 1));
    loom_tensor *bhh = NULL;
    if (d->bias) {
        if (d->mode == LOOM_GRU) {
            xp = loom_add(xp, d->b_ih[0]);
            bhh = d->b_hh[0];
        } else {
            xp = loom_add(xp, loom_add(d->b_ih[0], d->b_hh[0]));
        }
    }
    loom_tensor *hn = NULL, *cn = NULL;
    bool ok = cell_step(d->mode, xp, h ? h : zeros, lstm ? (c ? c : zeros) : NULL,
                        loom_transpose(d->w_hh[0], 0, 1), bhh, &hn, &cn);
    if (ok && !batched) {
        hn = loom_squeeze(hn, 0);
        if (lstm) cn = loom_squeeze(cn, 0);
        ok = hn && (!lstm || cn);
    }
    if (ok) {
        *h_out = loom_scope_keep(hn);
        if (c_out) *c_out = loom_scope_keep(cn);
    }
    loom_status st = ok ? LOOM_OK : loom_last_status();
    loom_scope_end(ctx);
    return ok ? LOOM_OK : (st != LOOM_OK ? st : LOOM_ERR_INVALID_ARG);
}

static loom_tensor *cell_module_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)user;
    loom_tensor *h = NULL;
    return loom_rnn_cell_forward(m, x, NULL, NULL, &h, NULL) == LOOM_OK ? h : NULL;
}
