/*
 * backends/onednn/rnn.c - RNN_LAYER and RNN_LAYER_BWD on oneDNN's RNN
 * primitives: vanilla RNN (tanh, relu), LSTM, and the linear-before-reset
 * GRU, which is PyTorch's GRU. One layer, one direction per call
 * (unidirectional_left2right, or right2left for reverse).
 *
 * Layouts. x is tnc [T,N,I], states ldnc [1,1,N,H], y tnc [T,N,H]: Loom's
 * tensors as they are. PyTorch's w_ih [G*H, I] is oneDNN's weights_layer
 * (dims l,d,i,g,o) in the ldgoi layout, and w_hh likewise, so with the gate
 * orders equal (RNN; LSTM's i, f, g, o is oneDNN's i, f, c~, o) the user
 * weights are described as they are and reordered into the layout the
 * primitive chose (the forward's reorder served from the weight cache,
 * wcache.c, when the weights repeat). GRU's gates differ: PyTorch's r, z, n
 * are oneDNN's r, u, o in the order u, r, o, so the first two gate blocks
 * of each weight are swapped into a temporary first. Biases: oneDNN has
 * one per gate, b_ih + b_hh, and lbr_gru a fourth, the n gate's hidden
 * bias b_hn, which sits inside r * (.) as in PyTorch.
 *
 * Backward. oneDNN 2.6 accumulates into diff_weights and diff_bias (v3
 * added a flag to overwrite), so they are written into zeroed temporaries,
 * then reordered (and for GRU, their gates swapped back) into the output.
 * h_n's gradient arrives inside dy (h_n is a row of y), so diff_dst_iter is
 * absent, or zero for LSTM, whose diff_dst_iter_c carries dc_n.
 *
 * Workspace. The training forward writes oneDNN's workspace into the
 * output's workspace part (kernel.h), tagged; the backward takes only a
 * workspace with that tag (a forward on ref gets ref's backward).
 */
#include "config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backends/onednn/onednn.h"
#include "backends/registry.h"
#include "runtime/error.h"

enum { MODE_TANH = 0, MODE_RELU = 1, MODE_LSTM = 2, MODE_GRU = 3 };

/* The cache key's parameters (memset: padding is part of the key). */
typedef struct rnn_params {
    int64_t T, N, I, H;
    int32_t mode, reverse, bias, training;
} rnn_params;

static bool params_of(const loom__kcall *call, rnn_params *q, loom__rnn_layout *L)
{
    memset(q, 0, sizeof *q);
    if (call->n_in < 4 || call->in[0].ndim != 3 || call->in[3].ndim != 2) return false;
    loom__rnn_layout_call(call, L);
    q->T = L->T, q->N = L->N, q->I = L->I, q->H = L->H;
    q->mode = call->attrs->rnn.mode;
    q->reverse = call->attrs->rnn.reverse;
    q->bias = call->attrs->rnn.bias;
    q->training = call->attrs->rnn.training;
    return q->mode >= MODE_TANH && q->mode <= MODE_GRU;
}

/* ---- memory descriptors and operation descriptors ---------------------------- */

typedef struct rnn_mds {
    dnnl_memory_desc_t src_layer, src_iter, src_iter_c, w_layer, w_iter, w_layer_user, w_iter_user, bias, dst_layer,
        dst_iter, dst_iter_c, diff_w_layer, diff_w_iter;
} rnn_mds;

static dnnl_status_t md(dnnl_memory_desc_t *m, int nd, const int64_t *dims, dnnl_format_tag_t tag)
{
    dnnl_dims_t d;
    for (int i = 0; i < nd; i++) d[i] = dims[i];
    return dnnl_memory_desc_init_by_tag(m, nd, d, dnnl_f32, tag);
}

static int gates(int mode) { return mode == MODE_LSTM ? 4 : mode == MODE_GRU ? 3 : 1; }
/* oneDNN's bias gates: lbr_gru has a fourth. */
static int bias_gates(int mode) { return mode == MODE_GRU ? 4 : gates(mode); }

static dnnl_status_t make_mds(const rnn_params *q, rnn_mds *m)
{
    memset(m, 0, sizeof *m);
    const int64_t G = gates(q->mode);
    const int64_t tni[3] = {q->T, q->N, q->I}, tnh[3] = {q->T, q->N, q->H}, st[4] = {1, 1, q->N, q->H};
    const int64_t wl[5] = {1, 1, q->I, G, q->H}, wi[5] = {1, 1, q->H, G, q->H};
    const int64_t b[4] = {1, 1, bias_gates(q->mode), q->H};
    dnnl_status_t s = md(&m->src_layer, 3, tni, dnnl_tnc);
    if (s == dnnl_success) s = md(&m->src_iter, 4, st, dnnl_ldnc);
    if (s == dnnl_success && q->mode == MODE_LSTM) s = md(&m->src_iter_c, 4, st, dnnl_ldnc);
    if (s == dnnl_success) s = md(&m->w_layer, 5, wl, dnnl_format_tag_any);
    if (s == dnnl_success) s = md(&m->w_iter, 5, wi, dnnl_format_tag_any);
    if (s == dnnl_success) s = md(&m->diff_w_layer, 5, wl, dnnl_format_tag_any);
    if (s == dnnl_success) s = md(&m->diff_w_iter, 5, wi, dnnl_format_tag_any);
    if (s == dnnl_success) s = md(&m->w_layer_user, 5, wl, dnnl_ldgoi);
    if (s == dnnl_success) s = md(&m->w_iter_user, 5, wi, dnnl_ldgoi);
    if (s == dnnl_success) s = md(&m->bias, 4, b, dnnl_ldgo);
    if (s == dnnl_success) s = md(&m->dst_layer, 3, tnh, dnnl_tnc);
    if (s == dnnl_success && q->mode == MODE_LSTM) s = md(&m->dst_iter, 4, st, dnnl_ldnc);
    if (s == dnnl_success && q->mode == MODE_LSTM) s = md(&m->dst_iter_c, 4, st, dnnl_ldnc);
    return s;
}

static dnnl_rnn_direction_t direction(const rnn_params *q)
{
    return q->reverse ? dnnl_unidirectional_right2left : dnnl_unidirectional_left2right;
}

static dnnl_alg_kind_t activation(const rnn_params *q)
{
    return q->mode == MODE_TANH ? dnnl_eltwise_tanh : dnnl_eltwise_relu;
}

/* The bias is always given (zeros without one): this oneDNN rejects
 * some primitives without. */
static dnnl_status_t fwd_desc(dnnl_rnn_desc_t *d, dnnl_prop_kind_t prop, const rnn_params *q, const rnn_mds *m)
{
    const dnnl_memory_desc_t *bias = &m->bias;
    switch (q->mode) {
    case MODE_LSTM:
        return dnnl_lstm_forward_desc_init(d, prop, direction(q), &m->src_layer, &m->src_iter, &m->src_iter_c,
                                           &m->w_layer, &m->w_iter, bias, &m->dst_layer, &m->dst_iter,
                                           &m->dst_iter_c, dnnl_rnn_flags_undef);
    case MODE_GRU:
        return dnnl_lbr_gru_forward_desc_init(d, prop, direction(q), &m->src_layer, &m->src_iter, &m->w_layer,
                                              &m->w_iter, bias, &m->dst_layer, NULL, dnnl_rnn_flags_undef);
    default:
        return dnnl_vanilla_rnn_forward_desc_init(d, prop, activation(q), direction(q), &m->src_layer, &m->src_iter,
                                                  &m->w_layer, &m->w_iter, bias, &m->dst_layer, NULL,
                                                  dnnl_rnn_flags_undef, 0.0f, 0.0f);
    }
}

static dnnl_status_t bwd_desc(dnnl_rnn_desc_t *d, const rnn_params *q, const rnn_mds *m)
{
    const dnnl_memory_desc_t *bias = &m->bias;
    switch (q->mode) {
    case MODE_LSTM:
        return dnnl_lstm_backward_desc_init(
            d, dnnl_backward, direction(q), &m->src_layer, &m->src_iter, &m->src_iter_c, &m->w_layer, &m->w_iter,
            bias, &m->dst_layer, &m->dst_iter, &m->dst_iter_c, &m->src_layer, &m->src_iter, &m->src_iter_c,
            &m->diff_w_layer, &m->diff_w_iter, bias, &m->dst_layer, &m->dst_iter, &m->dst_iter_c,
            dnnl_rnn_flags_undef);
    case MODE_GRU:
        return dnnl_lbr_gru_backward_desc_init(d, dnnl_backward, direction(q), &m->src_layer, &m->src_iter,
                                               &m->w_layer, &m->w_iter, bias, &m->dst_layer, NULL, &m->src_layer,
                                               &m->src_iter, &m->diff_w_layer, &m->diff_w_iter, bias,
                                               &m->dst_layer, NULL, dnnl_rnn_flags_undef);
    default:
        return dnnl_vanilla_rnn_backward_desc_init(d, dnnl_backward, activation(q), direction(q), &m->src_layer,
                                                   &m->src_iter, &m->w_layer, &m->w_iter, bias, &m->dst_layer, NULL,
                                                   &m->src_layer, &m->src_iter, &m->diff_w_layer, &m->diff_w_iter,
                                                   bias, &m->dst_layer, NULL, dnnl_rnn_flags_undef, 0.0f, 0.0f);
    }
}

/* The forward's primitive descriptor (prop: training or inference). */
static loom_status fwd_pd(const loom__kcall *call, const rnn_params *q, const rnn_mds *m, dnnl_prop_kind_t prop,
                          dnnl_primitive_desc_t *pd)
{
    dnnl_rnn_desc_t d;
    dnnl_status_t s = fwd_desc(&d, prop, q, m);
    if (s != dnnl_success) return loom__onednn_error(call, "dnnl_*_forward_desc_init", s);
    dnnl_primitive_attr_t attr = loom__onednn_attr(call, false);
    if (!attr) return loom_last_status();
    s = dnnl_primitive_desc_create(pd, &d, attr, loom__onednn_engine(), NULL);
    dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) {
        *pd = NULL;
        return loom__onednn_error(call, "dnnl_primitive_desc_create", s);
    }
    return LOOM_OK;
}

static const dnnl_memory_desc_t *arg_md(const_dnnl_primitive_desc_t pd, int arg)
{
    return dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg);
}

/* ---- temporaries: fixed order, so the kernel finds them by index ---------- */

typedef struct rnn_tmps {
    int bias;          /* oneDNN's bias [Gb, H] (zeros without one) */
    int w_layer_sw;    /* GRU: w_ih with the gates in oneDNN's order */
    int w_iter_sw;     /* GRU: w_hh likewise */
    int zero_dh;       /* backward, LSTM: diff_dst_iter (zeros) */
    int dbias;         /* backward: diff_bias (zeroed; dropped without a bias) */
    int dw_layer;      /* backward: diff_weights_layer, chosen layout (zeroed) */
    int dw_iter;       /* backward: diff_weights_iter */
    int dw_layer_user; /* backward, GRU: dW_ih in ldgoi, oneDNN's gate order */
    int dw_iter_user;
    int count;
} rnn_tmps;

/* Numbers the temporaries; bytes[] gets their sizes when not NULL. The
 * chosen-layout sizes come from pd (backward only). */
static void plan_tmps(const rnn_params *q, bool bwd, const_dnnl_primitive_desc_t pd, rnn_tmps *t, size_t *bytes)
{
    const size_t f = sizeof(float), GH = (size_t)(gates(q->mode) * q->H);
    const bool gru = q->mode == MODE_GRU, lstm = q->mode == MODE_LSTM;
    int k = 0;
#define TMP(field, cond, size)                     \
    do {                                           \
        t->field = (cond) ? k : -1;                \
        if ((cond) && bytes) bytes[k] = (size);    \
        if (cond) k++;                             \
    } while (0)
    TMP(bias, true, (size_t)(bias_gates(q->mode) * q->H) * f);
    TMP(w_layer_sw, gru, GH * (size_t)q->I * f);
    TMP(w_iter_sw, gru, GH * (size_t)q->H * f);
    TMP(zero_dh, bwd && lstm, (size_t)(q->N * q->H) * f);
    TMP(dbias, bwd, (size_t)(bias_gates(q->mode) * q->H) * f);
    TMP(dw_layer, bwd, pd ? dnnl_memory_desc_get_size(arg_md(pd, DNNL_ARG_DIFF_WEIGHTS_LAYER)) : 0);
    TMP(dw_iter, bwd, pd ? dnnl_memory_desc_get_size(arg_md(pd, DNNL_ARG_DIFF_WEIGHTS_ITER)) : 0);
    TMP(dw_layer_user, bwd && gru, GH * (size_t)q->I * f);
    TMP(dw_iter_user, bwd && gru, GH * (size_t)q->H * f);
#undef TMP
    t->count = k;
}

/* Adds the planned temporaries to p (before any other). */
static void add_tmps(loom__onednn_prim *p, const rnn_tmps *t, const size_t *bytes)
{
    for (int i = 0; i < t->count; i++) loom__onednn_add_tmp(p, bytes[i]);
}

static int tslot(int idx) { return LOOM__ONEDNN_SLOT_TMP0 + idx; }

/* The arguments the forward and backward share: the layer's inputs, the
 * weights in the chosen layouts (slots wl, wi), the bias, and y, h_n and
 * c_n as the forward wrote them at slot `out` (kernel.h's packing). */
static int data_args(const rnn_params *q, const loom__rnn_layout *L, const rnn_tmps *t, int wl, int wi, int out,
                     loom__onednn_arg *a)
{
    const size_t f = sizeof(float);
    const bool lstm = q->mode == MODE_LSTM;
    int n = 0;
    a[n++] = (loom__onednn_arg){DNNL_ARG_SRC_LAYER, LOOM__ONEDNN_SLOT_IN0 + L->x, 0};
    a[n++] = (loom__onednn_arg){DNNL_ARG_SRC_ITER, LOOM__ONEDNN_SLOT_IN0 + L->h0, 0};
    if (lstm) a[n++] = (loom__onednn_arg){DNNL_ARG_SRC_ITER_C, LOOM__ONEDNN_SLOT_IN0 + L->c0, 0};
    a[n++] = (loom__onednn_arg){DNNL_ARG_WEIGHTS_LAYER, wl, 0};
    a[n++] = (loom__onednn_arg){DNNL_ARG_WEIGHTS_ITER, wi, 0};
    a[n++] = (loom__onednn_arg){DNNL_ARG_BIAS, tslot(t->bias), 0};
    a[n++] = (loom__onednn_arg){DNNL_ARG_DST_LAYER, out, (size_t)L->y * f};
    if (lstm) {
        /* h_n is y's last row: the forward's dst_iter writes it there a
         * second time. */
        const int64_t last = q->reverse ? 0 : (q->T - 1) * q->N * q->H;
        a[n++] = (loom__onednn_arg){DNNL_ARG_DST_ITER, out, (size_t)last * f};
        a[n++] = (loom__onednn_arg){DNNL_ARG_DST_ITER_C, out, (size_t)L->c_n * f};
    }
    return n;
}

/* The programs' hooks (below): inputs converted before the steps run,
 * gradients finished after. */
static void prep_fwd(const loom__kcall *call, const loom__onednn_prim *p, void *const *slots);
static void prep_bwd(const loom__kcall *call, const loom__onednn_prim *p, void *const *slots);
static void finish_bwd(const loom__kcall *call, const loom__onednn_prim *p, void *const *slots);

/* What both builders start with: the packing and the memory descriptors. */
static loom_status build_begin(const loom__kcall *call, const rnn_params *q, loom__rnn_layout *L, rnn_mds *m)
{
    loom__rnn_layout_of(q->mode, q->bias, q->T, q->N, q->I, q->H, L);
    dnnl_status_t s = make_mds(q, m);
    return s == dnnl_success ? LOOM_OK : loom__onednn_error(call, "dnnl_memory_desc_init_by_tag", s);
}

/* ---- forward ------------------------------------------------------------------ */

static loom_status build_fwd(const loom__kcall *call, const void *params, loom__onednn_prim *p)
{
    const rnn_params *q = params;
    loom__rnn_layout L;
    rnn_mds m;
    loom_status st = build_begin(call, q, &L, &m);
    if (st != LOOM_OK) return st;
    dnnl_primitive_desc_t pd = NULL;
    st = fwd_pd(call, q, &m, q->training ? dnnl_forward_training : dnnl_forward_inference, &pd);
    if (st != LOOM_OK) return st;
    rnn_tmps t;
    size_t bytes[LOOM__ONEDNN_MAX_TMPS];
    plan_tmps(q, false, NULL, &t, bytes);
    add_tmps(p, &t, bytes);

    const bool gru = q->mode == MODE_GRU;
    /* GRU's weights are swapped into temporaries first (no caching then). */
    const int wl = gru ? loom__onednn_input_slot(call, p, tslot(t.w_layer_sw), &m.w_layer_user,
                                                 arg_md(pd, DNNL_ARG_WEIGHTS_LAYER))
                       : loom__onednn_weights_slot(call, p, LOOM__ONEDNN_SLOT_IN0 + L.w_ih, &m.w_layer_user,
                                                   arg_md(pd, DNNL_ARG_WEIGHTS_LAYER));
    const int wi = wl < 0 ? -1
                   : gru  ? loom__onednn_input_slot(call, p, tslot(t.w_iter_sw), &m.w_iter_user,
                                                    arg_md(pd, DNNL_ARG_WEIGHTS_ITER))
                          : loom__onednn_weights_slot(call, p, LOOM__ONEDNN_SLOT_IN0 + L.w_hh, &m.w_iter_user,
                                                      arg_md(pd, DNNL_ARG_WEIGHTS_ITER));
    if (wi < 0) {
        dnnl_primitive_desc_destroy(pd);
        return loom_last_status();
    }
    const size_t f = sizeof(float);
    loom__onednn_arg args[LOOM__ONEDNN_MAX_ARGS];
    int n = data_args(q, &L, &t, wl, wi, LOOM__ONEDNN_SLOT_OUT, args);
    if (q->training)
        args[n++] = (loom__onednn_arg){DNNL_ARG_WORKSPACE, LOOM__ONEDNN_SLOT_OUT,
                                       (size_t)(L.ws + LOOM__RNN_WS_HEADER) * f};
    p->main_step = p->nsteps;
    p->prep = prep_fwd;
    st = loom__onednn_add_step(call, p, pd, n, args);
    dnnl_primitive_desc_destroy(pd);
    if (st == LOOM_OK) loom__onednn_prim_layout(p);
    return st;
}

/* ---- preparing inputs and finishing outputs ------------------------------------ */

/* dst rows = src's H-row gate blocks in the order order[] (cols per row). */
static void gate_rows(float *dst, const float *src, const int *order, int ngates, int64_t H, int64_t cols)
{
    const size_t block = (size_t)(H * cols);
    for (int g = 0; g < ngates; g++) memcpy(dst + (size_t)g * block, src + (size_t)order[g] * block, block * sizeof *dst);
}

/* oneDNN's GRU gates u, r, o are PyTorch's gates 1, 0, 2 (and back). */
static const int GRU_SWAP[3] = {1, 0, 2};

/* Fills the bias and GRU's swapped weights. */
static void prep_inputs(const loom__kcall *call, const rnn_params *q, const loom__rnn_layout *L, const rnn_tmps *t,
                        char *const *tmp)
{
    const int64_t H = q->H, GH = gates(q->mode) * H;
    if (!q->bias) {
        memset(tmp[t->bias], 0, (size_t)(bias_gates(q->mode) * H) * sizeof(float));
    } else {
        const float *bi = call->in[L->b_ih].data, *bh = call->in[L->b_hh].data;
        float *b = (float *)tmp[t->bias];
        if (q->mode == MODE_GRU) {
            for (int64_t j = 0; j < H; j++) {
                b[j] = bi[H + j] + bh[H + j];      /* u = PyTorch's z */
                b[H + j] = bi[j] + bh[j];          /* r */
                b[2 * H + j] = bi[2 * H + j];      /* o = n: input part */
                b[3 * H + j] = bh[2 * H + j];      /* u' = n's hidden part */
            }
        } else {
            for (int64_t j = 0; j < GH; j++) b[j] = bi[j] + bh[j];
        }
    }
    if (q->mode == MODE_GRU) {
        gate_rows((float *)tmp[t->w_layer_sw], call->in[L->w_ih].data, GRU_SWAP, 3, H, q->I);
        gate_rows((float *)tmp[t->w_iter_sw], call->in[L->w_hh].data, GRU_SWAP, 3, H, H);
    }
}

/* What the program's hooks (prep, finish) work with: the call's
 * parameters and packing, and the temporaries by name. */
typedef struct rnn_hook_ctx {
    rnn_params q;
    loom__rnn_layout L;
    rnn_tmps t;
    char *tmp[LOOM__ONEDNN_MAX_TMPS];
} rnn_hook_ctx;

static void hook_ctx(const loom__kcall *call, bool bwd, void *const *slots, rnn_hook_ctx *h)
{
    params_of(call, &h->q, &h->L); /* checked when the kernel started */
    plan_tmps(&h->q, bwd, NULL, &h->t, NULL);
    for (int i = 0; i < h->t.count; i++) h->tmp[i] = slots[tslot(i)];
}

/* The kernel: the program for the call's parameters, built on a miss. */
static loom_status run(const loom__kcall *call, loom__onednn_build_fn build)
{
    rnn_params q;
    loom__rnn_layout L;
    if (!params_of(call, &q, &L)) return loom__onednn_error(call, "checking the arguments", dnnl_invalid_arguments);
    loom__onednn_key key;
    loom__onednn_key_init(&key, call, 0);
    loom__onednn_key_add(&key, &q, sizeof q);
    return loom__onednn_run(call, &key, build, &q);
}

/* Every input float32 and plain (the ops/ contract; checked anyway). */
static bool inputs_ok(const loom__kcall *call)
{
    if (!loom__onednn_available() || call->out.dtype != LOOM_FLOAT32) return false;
    for (int i = 0; i < call->n_in; i++)
        if (call->in[i].dtype != LOOM_FLOAT32 || !loom__onednn_plain_f32(&call->in[i])) return false;
    return true;
}

static void prep_fwd(const loom__kcall *call, const loom__onednn_prim *p, void *const *slots)
{
    (void)p;
    rnn_hook_ctx h;
    hook_ctx(call, false, slots, &h);
    prep_inputs(call, &h.q, &h.L, &h.t, h.tmp);
    if (h.q.training) loom__rnn_ws_set_tag((float *)call->out.data + h.L.ws, LOOM__RNN_WS_ONEDNN);
}

bool loom__onednn_rnn_supports(const loom__kcall *call)
{
    if (!inputs_ok(call)) return false;
    rnn_params q;
    loom__rnn_layout L;
    if (!params_of(call, &q, &L) || L.n_fwd_in != call->n_in) return false;
    return !q.training || loom__tview_numel(&call->out) >= L.ws + LOOM__RNN_WS_HEADER + loom__onednn_rnn_aux(call);
}

loom_status loom__onednn_rnn(const loom__kcall *call) { return run(call, build_fwd); }

/* ---- the workspace's size -------------------------------------------------------- */

/* Recent answers, so that recording a layer does not create a primitive
 * descriptor every step. */
#define AUX_MEMO 16
static struct {
    rnn_params q;
    int64_t floats;
} aux_memo[AUX_MEMO];
static int aux_next;
static pthread_mutex_t aux_lock = PTHREAD_MUTEX_INITIALIZER;

int64_t loom__onednn_rnn_aux(const loom__kcall *call)
{
    rnn_params q;
    loom__rnn_layout L;
    if (!loom__onednn_available() || !params_of(call, &q, &L)) return 0;
    q.training = 1;
    pthread_mutex_lock(&aux_lock);
    for (int i = 0; i < AUX_MEMO; i++)
        if (memcmp(&aux_memo[i].q, &q, sizeof q) == 0) {
            const int64_t r = aux_memo[i].floats;
            pthread_mutex_unlock(&aux_lock);
            return r;
        }
    pthread_mutex_unlock(&aux_lock);
    rnn_mds m;
    dnnl_primitive_desc_t pd = NULL;
    int64_t floats = 0;
    if (make_mds(&q, &m) == dnnl_success && fwd_pd(call, &q, &m, dnnl_forward_training, &pd) == LOOM_OK) {
        const size_t bytes = dnnl_memory_desc_get_size(arg_md(pd, DNNL_ARG_WORKSPACE));
        floats = (int64_t)((bytes + sizeof(float) - 1) / sizeof(float));
        dnnl_primitive_desc_destroy(pd);
    } else {
        loom_clear_error();
    }
    pthread_mutex_lock(&aux_lock);
    aux_memo[aux_next].q = q;
    aux_memo[aux_next].floats = floats;
    aux_next = (aux_next + 1) % AUX_MEMO;
    pthread_mutex_unlock(&aux_lock);
    return floats;
}

/* ---- backward ------------------------------------------------------------------ */

static loom_status build_bwd(const loom__kcall *call, const void *params, loom__onednn_prim *p)
{
    const rnn_params *q = params;
    loom__rnn_layout L;
    rnn_mds m;
    loom_status st = build_begin(call, q, &L, &m);
    if (st != LOOM_OK) return st;
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    st = fwd_pd(call, q, &m, dnnl_forward_training, &hint);
    if (st != LOOM_OK) return st;
    dnnl_rnn_desc_t d;
    dnnl_status_t s = bwd_desc(&d, q, &m);
    dnnl_primitive_attr_t attr = s == dnnl_success ? loom__onednn_attr(call, false) : NULL;
    if (s == dnnl_success && attr) s = dnnl_primitive_desc_create(&pd, &d, attr, loom__onednn_engine(), hint);
    if (attr) dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_desc_destroy(hint);
    if (s != dnnl_success) return loom__onednn_error(call, "the backward primitive descriptor", s);
    if (!attr) return loom_last_status();

    rnn_tmps t;
    size_t bytes[LOOM__ONEDNN_MAX_TMPS];
    plan_tmps(q, true, pd, &t, bytes);
    add_tmps(p, &t, bytes);
    const bool gru = q->mode == MODE_GRU, lstm = q->mode == MODE_LSTM;
    const int fwd = LOOM__ONEDNN_SLOT_IN0 + L.n_fwd_in, grad = fwd + 1;
    const int wl = loom__onednn_input_slot(call, p, gru ? tslot(t.w_layer_sw) : LOOM__ONEDNN_SLOT_IN0 + L.w_ih,
                                           &m.w_layer_user, arg_md(pd, DNNL_ARG_WEIGHTS_LAYER));
    const int wi = wl < 0 ? -1
                          : loom__onednn_input_slot(call, p, gru ? tslot(t.w_iter_sw) : LOOM__ONEDNN_SLOT_IN0 + L.w_hh,
                                                    &m.w_iter_user, arg_md(pd, DNNL_ARG_WEIGHTS_ITER));
    if (wi < 0) {
        dnnl_primitive_desc_destroy(pd);
        return loom_last_status();
    }
    const size_t f = sizeof(float);
    loom__onednn_arg a[LOOM__ONEDNN_MAX_ARGS];
    int n = data_args(q, &L, &t, wl, wi, fwd, a);
    a[n++] = (loom__onednn_arg){DNNL_ARG_WORKSPACE, fwd, (size_t)(L.ws + LOOM__RNN_WS_HEADER) * f};
    a[n++] = (loom__onednn_arg){DNNL_ARG_DIFF_SRC_LAYER, LOOM__ONEDNN_SLOT_OUT, (size_t)L.dx * f};
    a[n++] = (loom__onednn_arg){DNNL_ARG_DIFF_SRC_ITER, LOOM__ONEDNN_SLOT_OUT, (size_t)L.dh0 * f};
    if (lstm) a[n++] = (loom__onednn_arg){DNNL_ARG_DIFF_SRC_ITER_C, LOOM__ONEDNN_SLOT_OUT, (size_t)L.dc0 * f};
    a[n++] = (loom__onednn_arg){DNNL_ARG_DIFF_WEIGHTS_LAYER, tslot(t.dw_layer), 0};
    a[n++] = (loom__onednn_arg){DNNL_ARG_DIFF_WEIGHTS_ITER, tslot(t.dw_iter), 0};
    a[n++] = (loom__onednn_arg){DNNL_ARG_DIFF_BIAS, tslot(t.dbias), 0};
    a[n++] = (loom__onednn_arg){DNNL_ARG_DIFF_DST_LAYER, grad, (size_t)L.y * f};
    if (lstm) {
        a[n++] = (loom__onednn_arg){DNNL_ARG_DIFF_DST_ITER, tslot(t.zero_dh), 0};
        a[n++] = (loom__onednn_arg){DNNL_ARG_DIFF_DST_ITER_C, grad, (size_t)L.c_n * f};
    }
    p->main_step = p->nsteps;
    p->prep = prep_bwd;
    p->finish = finish_bwd;
    st = loom__onednn_add_step(call, p, pd, n, a);
    /* The weight gradients, from the chosen layout into PyTorch's (GRU:
     * oneDNN's gate order, swapped back afterwards). */
    if (st == LOOM_OK && gru) {
        st = loom__onednn_add_reorder(call, p, tslot(t.dw_layer), arg_md(pd, DNNL_ARG_DIFF_WEIGHTS_LAYER),
                                      tslot(t.dw_layer_user), &m.w_layer_user);
        if (st == LOOM_OK)
            st = loom__onednn_add_reorder(call, p, tslot(t.dw_iter), arg_md(pd, DNNL_ARG_DIFF_WEIGHTS_ITER),
                                          tslot(t.dw_iter_user), &m.w_iter_user);
    } else if (st == LOOM_OK) {
        st = loom__onednn_add_reorder(call, p, tslot(t.dw_layer), arg_md(pd, DNNL_ARG_DIFF_WEIGHTS_LAYER),
                                      LOOM__ONEDNN_SLOT_OUT, &m.w_layer_user);
        if (st == LOOM_OK) {
            /* The reorder writes at the slot's start: point it at dw_ih. */
            p->step[p->nsteps - 1].args[1].offset = (size_t)L.dw_ih * f;
            st = loom__onednn_add_reorder(call, p, tslot(t.dw_iter), arg_md(pd, DNNL_ARG_DIFF_WEIGHTS_ITER),
                                          LOOM__ONEDNN_SLOT_OUT, &m.w_iter_user);
        }
        if (st == LOOM_OK) p->step[p->nsteps - 1].args[1].offset = (size_t)L.dw_hh * f;
    }
    dnnl_primitive_desc_destroy(pd);
    if (st == LOOM_OK) loom__onednn_prim_layout(p);
    return st;
}

/* oneDNN 2.6 accumulates into the weight and bias gradients: their
 * temporaries (and LSTM's zero diff_dst_iter) start at zero. */
static void prep_bwd(const loom__kcall *call, const loom__onednn_prim *p, void *const *slots)
{
    rnn_hook_ctx h;
    hook_ctx(call, true, slots, &h);
    prep_inputs(call, &h.q, &h.L, &h.t, h.tmp);
    const int zeroed[4] = {h.t.zero_dh, h.t.dbias, h.t.dw_layer, h.t.dw_iter};
    for (int k = 0; k < 4; k++)
        if (zeroed[k] >= 0) memset(h.tmp[zeroed[k]], 0, p->tmp_bytes[zeroed[k]]);
}

/* GRU's weight gradients back in PyTorch's gate order; the bias gradient
 * split into b_ih's and b_hh's. */
static void finish_bwd(const loom__kcall *call, const loom__onednn_prim *p, void *const *slots)
{
    (void)p;
    rnn_hook_ctx h;
    hook_ctx(call, true, slots, &h);
    const rnn_params *q = &h.q;
    const loom__rnn_layout *L = &h.L;
    float *out = call->out.data;
    const int64_t H = q->H, GH = gates(q->mode) * H;
    if (q->mode == MODE_GRU) {
        gate_rows(out + L->dw_ih, (const float *)h.tmp[h.t.dw_layer_user], GRU_SWAP, 3, H, q->I);
        gate_rows(out + L->dw_hh, (const float *)h.tmp[h.t.dw_iter_user], GRU_SWAP, 3, H, H);
    }
    if (!q->bias) return;
    const float *db = (const float *)h.tmp[h.t.dbias];
    float *bi = out + L->db_ih, *bh = out + L->db_hh;
    if (q->mode == MODE_GRU) {
        for (int64_t j = 0; j < H; j++) {
            bi[j] = bh[j] = db[H + j];         /* r */
            bi[H + j] = bh[H + j] = db[j];     /* z = u */
            bi[2 * H + j] = db[2 * H + j];     /* n, input part */
            bh[2 * H + j] = db[3 * H + j];     /* n, hidden part */
        }
    } else {
        memcpy(bi, db, (size_t)GH * sizeof *bi);
        memcpy(bh, db, (size_t)GH * sizeof *bh);
    }
}

bool loom__onednn_rnn_bwd_supports(const loom__kcall *call)
{
    if (!inputs_ok(call)) return false;
    rnn_params q;
    loom__rnn_layout L;
    if (!params_of(call, &q, &L) || L.n_fwd_in + 2 != call->n_in || !q.training) return false;
    const loom__tview *fwd = &call->in[L.n_fwd_in];
    /* Only a workspace a oneDNN forward wrote. */
    return loom__tview_numel(fwd) > L.ws && loom__rnn_ws_tag((const float *)fwd->data + L.ws) == LOOM__RNN_WS_ONEDNN &&
           loom__tview_numel(&call->in[L.n_fwd_in + 1]) >= L.fwd_base;
}

loom_status loom__onednn_rnn_bwd(const loom__kcall *call) { return run(call, build_bwd); }
