/*
 * backends/onednn/conv.c - CONV2D (bias, fused relu), CONV2D_BWD_DATA and
 * CONV2D_BWD_WEIGHT with oneDNN's direct convolution.
 *
 * Mapping: x [N,C,H,W] nchw, w [O,C/g,KH,KW] oihw (groups 1) or the same
 * bytes as goihw [g, O/g, C/g, KH, KW], y [N,O,OH,OW] nchw, bias [O].
 * oneDNN counts dilation from 0 (PyTorch's dilation - 1); padding is
 * symmetric (the output size formula is the same integer division).
 *
 * Layouts (LOOM_ONEDNN_CONV_LAYOUT=auto|blocked|plain, or
 * loom__onednn_set_conv_layout): "blocked" creates the primitive descriptor
 * with dnnl_format_tag_any for data and weights, and the program reorders
 * the plain inputs into the layouts oneDNN chose (nChw8c / nChw16c and
 * blocked weights on AVX2 / AVX-512) and the output back; "plain" keeps
 * nchw / oihw (oneDNN then picks gemm:jit, im2col + its SGEMM). On the
 * reference shape (N=64, 32->64 channels, 3x3, 26x26, 2 threads, Zen 3 AVX2,
 * best of interleaved runs through this kernel, reorders included), GFLOP/s
 * blocked / plain / ref backend: forward 162 / 126 / 131, backward-data
 * 155 / 87 / 134, backward-weights 122 / 92 / 126 (jit:avx2 on nChw8c vs
 * gemm:jit). Weights-only `any` with plain data kept gemm:jit and gained
 * nothing. For 1x1 kernels on plain data plain won (a GEMM without im2col:
 * 144 vs 106 forward), so "auto" (the default) is blocked except for those,
 * unless the data arrives blocked or the output may stay blocked (then no
 * reorder is paid; see conv_params_of). Those figures include the reorders
 * of plain inputs and outputs, which blocked layouts kept between nodes
 * (backends/kernel.h) now skip. Reordered weights are kept between calls
 * when their contents repeat (inference; wcache.c). The bwd-weights op gives no diff_bias (the bias gradient is a
 * separate sum in ops/).
 */
#include "config.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backends/onednn/onednn.h"

typedef struct conv_params {
    int64_t N, C, H, W, O, G, KH, KW, OH, OW;
    int64_t stride[2], dil[2], pad_l[2], pad_r[2]; /* dil: oneDNN's (PyTorch's - 1) */
    int32_t bias, relu, blocked;
    int32_t wino; /* ask for oneDNN's Winograd kernels first (conv_algo) */
    int32_t lay[2]; /* layouts of in[0] and in[1] (weights: always plain) */
    int32_t out_ok; /* the output may be written blocked (y or dx only) */
} conv_params;

/* A policy read once from environment variable `var`: names[i] gives
 * value i, anything else (or unset) 0 (auto); -1 in *cache until read.
 * The setters below override it (tests). */
static int env_policy(atomic_int *cache, const char *var, const char *const *names, int n)
{
    int v = atomic_load(cache);
    if (v < 0) {
        const char *s = getenv(var);
        v = 0;
        for (int i = 1; s && i < n; i++)
            if (strcmp(s, names[i]) == 0) v = i;
        int expected = -1;
        atomic_compare_exchange_strong(cache, &expected, v);
        v = atomic_load(cache);
    }
    return v;
}

static atomic_int conv_layout = -1; /* LOOM__ONEDNN_LAYOUT_* */

void loom__onednn_set_conv_layout(int policy) { atomic_store(&conv_layout, policy); }

int loom__onednn_conv_layout(void)
{
    static const char *const names[] = {"auto", "plain", "blocked"}; /* LOOM__ONEDNN_LAYOUT_* order */
    return env_policy(&conv_layout, "LOOM_ONEDNN_CONV_LAYOUT", names, 3);
}

static atomic_int conv_algo = -1; /* LOOM__ONEDNN_ALGO_* */
static _Atomic int64_t wino_programs; /* programs built on a Winograd primitive (its impl name says so) */

int64_t loom__onednn_conv_winograd_programs(void) { return atomic_load(&wino_programs); }

void loom__onednn_set_conv_algo(int policy) { atomic_store(&conv_algo, policy); }

int loom__onednn_conv_algo(void)
{
    static const char *const names[] = {"auto", "direct", "winograd"}; /* LOOM__ONEDNN_ALGO_* order */
    return env_policy(&conv_algo, "LOOM_ONEDNN_CONV_ALGO", names, 3);
}

static bool is4d(const loom__tview *v) { return v->ndim == 4 && loom__onednn_plain_f32(v); }

/* Whether Winograd F(4x4, 3x3) beats the direct kernel on this shape
 * (auto). Each call transforms the weights (a cost per call, like a
 * fixed overhead) and computes whole 4x4 output tiles, so it needs many
 * tiles, and tiles mostly inside the image. Measured against direct on the
 * AVX-512 VM, 2 threads, forward (the backward passes agree), as N x
 * OH^2 x C (tiles; share of tile outputs inside the image): wins at
 * 1x56x64 (196; 1.0) 0.57x the time, 32x7x512 (128; 0.77) 0.66x,
 * 128x8x64 (512) 0.65x, 128x4x128 (128; 1.0) 0.71x; even at 1x28x128
 * (49) 0.96x; loses at 8x7x512 (32) 1.2x, 1x14x256 (16) 2.0x, 1x7x512 (4)
 * 4.7x, 128x2x256 (128; 0.25) 2.4x, 128x1x512 (0.06) 15.8x. Hence: at
 * least 64 tiles, at least half of each tile's outputs inside the image. */
static bool winograd_pays(const conv_params *p)
{
    const int64_t th = (p->OH + 3) / 4, tw = (p->OW + 3) / 4;
    return p->N * th * tw >= 64 && 2 * p->OH * p->OW >= th * tw * 16;
}

/* Validates the call and fills p (zeroed first, as it is part of the key). */
static bool conv_params_of(const loom__kcall *call, conv_params *p)
{
    memset(p, 0, sizeof *p);
    const loom__attrs *a = call->attrs;
    if (!a || call->out.dtype != LOOM_FLOAT32) return false;
    const loom__tview *x, *w, *y;
    switch (call->op) {
    case LOOM_OP_CONV2D:
        if (call->n_in != 2 && call->n_in != 3) return false;
        x = &call->in[0], w = &call->in[1], y = &call->out;
        break;
    case LOOM_OP_CONV2D_BWD_DATA:
        if (call->n_in != 2) return false;
        y = &call->in[0], w = &call->in[1], x = &call->out;
        break;
    case LOOM_OP_CONV2D_BWD_WEIGHT:
        if (call->n_in != 2) return false;
        x = &call->in[0], y = &call->in[1], w = &call->out;
        break;
    default: return false;
    }
    if (!is4d(x) || !is4d(w) || !is4d(y)) return false;
    /* Data (x, y, dy) may come blocked; weights and bias never do. */
    for (int i = 0; i < call->n_in; i++) {
        if (!loom__onednn_layout_ok(&call->in[i])) return false;
        if (&call->in[i] == w && call->in[i].layout != LOOM__LAYOUT_PLAIN) return false;
    }
    if (call->n_in == 3 && call->in[2].layout != LOOM__LAYOUT_PLAIN) return false;
    p->lay[0] = call->in[0].layout;
    p->lay[1] = call->in[1].layout;
    p->out_ok = call->out_layout != NULL && call->op != LOOM_OP_CONV2D_BWD_WEIGHT;
    const int g = a->conv.groups;
    if (g < 1) return false;
    p->N = x->shape[0], p->C = x->shape[1], p->H = x->shape[2], p->W = x->shape[3];
    p->O = w->shape[0], p->KH = w->shape[2], p->KW = w->shape[3];
    p->OH = y->shape[2], p->OW = y->shape[3];
    p->G = g;
    if (y->shape[0] != p->N || y->shape[1] != p->O || p->C % g || p->O % g || w->shape[1] * g != p->C) return false;
    const int64_t in[2] = {p->H, p->W}, k[2] = {p->KH, p->KW}, out[2] = {p->OH, p->OW};
    for (int i = 0; i < 2; i++) {
        const int s = a->conv.stride[i], d = a->conv.dilation[i], pad = a->conv.pad[i];
        if (s < 1 || d < 1 || pad < 0) return false;
        const int64_t span = (int64_t)d * (k[i] - 1) + 1;
        if (in[i] + 2 * (int64_t)pad < span || (in[i] + 2 * (int64_t)pad - span) / s + 1 != out[i]) return false;
        p->stride[i] = s;
        p->dil[i] = d - 1;
        p->pad_l[i] = p->pad_r[i] = pad;
    }
    if (call->op == LOOM_OP_CONV2D && call->n_in == 3) {
        const loom__tview *b = &call->in[2];
        if (b->ndim != 1 || b->shape[0] != p->O || !loom__onednn_plain_f32(b)) return false;
        p->bias = 1;
    }
    p->relu = call->op == LOOM_OP_CONV2D && a->conv.relu;
    /* Auto: blocked, except 1x1 kernels on plain data, which oneDNN runs as
     * a plain GEMM on nchw faster than blocked with the reorders (measured;
     * on data that arrives blocked, jit_1x1 with no reorder is 1.9x the GEMM:
     * ResNet-50's 1x1 convolutions, DNNL_VERBOSE; or whose output may stay
     * blocked for the next node, which saves the output reorder and keeps
     * the chain blocked: ResNet's downsample), and the backward-data of
     * convolutions with fewer than 8 input channels: the blocked primitive
     * pads them to a full block (SimpleCNN's conv1, 1 channel: 11.3 GFLOP/s
     * blocked vs 40.5 plain, benchmarks/conv_bench). */
    const int policy = loom__onednn_conv_layout();
    const bool narrow_bwd_data = call->op == LOOM_OP_CONV2D_BWD_DATA && p->C / p->G < 8;
    const bool arrives_blocked = loom__kcall_has_blocked(call);
    p->blocked = policy == LOOM__ONEDNN_LAYOUT_BLOCKED ||
                 (policy == LOOM__ONEDNN_LAYOUT_AUTO &&
                  (arrives_blocked || p->out_ok || !(p->KH == 1 && p->KW == 1)) && !narrow_bwd_data);
    /* Winograd F(4x4, 3x3): oneDNN 2.6 has it for AVX-512 only
     * (jit_wino_4x3), forward, backward-data and backward-weights, on
     * blocked layouts. On this project's AVX-512 machine it ran ResNet's
     * 3x3 layers 1.5-2.6x faster than the direct kernel in all three passes
     * (batch 32, 2 threads; 64x56x56: 22.9 -> 11.4 ms forward), with
     * outputs within 7e-6 of direct's relative to max(1, |y|) (docs/cnn.md). The rule
     * depends on the machine, never on timings, so results stay bitwise
     * reproducible. Not below 16 input or output channels: on SimpleCNN's
     * conv1 (1 -> 32) Winograd took 1.7 ms where direct takes 0.13. Auto
     * also wants enough tiles (winograd_pays); LOOM_ONEDNN_CONV_ALGO=winograd
     * takes every shape oneDNN implements. */
    const int algo = loom__onednn_conv_algo();
    const bool shape_ok = p->blocked && p->KH == 3 && p->KW == 3 && p->stride[0] == 1 && p->stride[1] == 1 &&
                          p->dil[0] == 0 && p->dil[1] == 0 && p->G == 1 && p->C >= 16 && p->O >= 16;
    p->wino = shape_ok && (algo == LOOM__ONEDNN_ALGO_WINOGRAD ||
                           (algo == LOOM__ONEDNN_ALGO_AUTO && loom__onednn_isa_avx512() && winograd_pays(p)));
    return true;
}

bool loom__onednn_conv_supports(const loom__kcall *call)
{
    conv_params p;
    return loom__onednn_available() && conv_params_of(call, &p);
}

/* The user (plain) descs of x, w, y, bias. */
static dnnl_status_t user_mds(const conv_params *p, dnnl_memory_desc_t *x, dnnl_memory_desc_t *w,
                              dnnl_memory_desc_t *y, dnnl_memory_desc_t *b)
{
    const dnnl_dims_t xd = {p->N, p->C, p->H, p->W}, yd = {p->N, p->O, p->OH, p->OW}, bd = {p->O};
    dnnl_status_t st = dnnl_memory_desc_init_by_tag(x, 4, xd, dnnl_f32, dnnl_nchw);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(y, 4, yd, dnnl_f32, dnnl_nchw);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(b, 1, bd, dnnl_f32, dnnl_a);
    if (st != dnnl_success) return st;
    if (p->G == 1) {
        const dnnl_dims_t wd = {p->O, p->C, p->KH, p->KW};
        return dnnl_memory_desc_init_by_tag(w, 4, wd, dnnl_f32, dnnl_oihw);
    }
    const dnnl_dims_t wd = {p->G, p->O / p->G, p->C / p->G, p->KH, p->KW};
    return dnnl_memory_desc_init_by_tag(w, 5, wd, dnnl_f32, dnnl_goihw);
}

/* Same dims, format `any`. */
static dnnl_status_t any_md(const dnnl_memory_desc_t *user, dnnl_memory_desc_t *any)
{
    return dnnl_memory_desc_init_by_tag(any, user->ndims, user->dims, dnnl_f32, dnnl_format_tag_any);
}

/* The primitive descriptor of the op (and its forward hint), with data and
 * weights layouts `any` when blocked, else the user's. */
static loom_status make_pd(const loom__kcall *call, const conv_params *p, bool blocked, dnnl_alg_kind_t alg,
                           const dnnl_memory_desc_t *ux, const dnnl_memory_desc_t *uw, const dnnl_memory_desc_t *uy,
                           const dnnl_memory_desc_t *ub, dnnl_primitive_desc_t *pd_out)
{
    dnnl_memory_desc_t x = *ux, w = *uw, y = *uy;
    dnnl_status_t st = dnnl_success;
    if (blocked) {
        st = any_md(ux, &x);
        if (st == dnnl_success) st = any_md(uw, &w);
        if (st == dnnl_success) st = any_md(uy, &y);
        if (st != dnnl_success) return loom__onednn_error(call, "dnnl_memory_desc_init_by_tag", st);
    }
    dnnl_primitive_attr_t attr = loom__onednn_attr(call, p->relu);
    if (!attr) return loom_last_status();
    dnnl_convolution_desc_t fd, bd;
    dnnl_primitive_desc_t fpd = NULL, pd = NULL;
    /* The API takes DNNL_MAX_NDIMS-long arrays. */
    const dnnl_dims_t stride = {p->stride[0], p->stride[1]}, dil = {p->dil[0], p->dil[1]},
                      pad_l = {p->pad_l[0], p->pad_l[1]}, pad_r = {p->pad_r[0], p->pad_r[1]};
    const char *what = "dnnl_dilated_convolution_forward_desc_init";
    st = dnnl_dilated_convolution_forward_desc_init(&fd, dnnl_forward_training, alg, &x, &w,
                                                     p->bias ? ub : NULL, &y, stride, dil, pad_l, pad_r);
    if (st == dnnl_success) {
        what = "dnnl_primitive_desc_create";
        st = dnnl_primitive_desc_create(&fpd, &fd, attr, loom__onednn_engine(), NULL);
    }
    if (st == dnnl_success && call->op == LOOM_OP_CONV2D) {
        pd = fpd;
        fpd = NULL;
    } else if (st == dnnl_success) {
        if (call->op == LOOM_OP_CONV2D_BWD_DATA) {
            what = "dnnl_dilated_convolution_backward_data_desc_init";
            st = dnnl_dilated_convolution_backward_data_desc_init(&bd, alg, &x, &w, &y, stride, dil,
                                                                  pad_l, pad_r);
        } else {
            what = "dnnl_dilated_convolution_backward_weights_desc_init";
            st = dnnl_dilated_convolution_backward_weights_desc_init(&bd, alg, &x, &w, NULL, &y,
                                                                     stride, dil, pad_l, pad_r);
        }
        if (st == dnnl_success) {
            what = "dnnl_primitive_desc_create";
            st = dnnl_primitive_desc_create(&pd, &bd, attr, loom__onednn_engine(), fpd);
        }
    }
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) return loom__onednn_error(call, what, st);
    *pd_out = pd;
    return LOOM_OK;
}

static const dnnl_memory_desc_t *q(const_dnnl_primitive_desc_t pd, dnnl_query_t what)
{
    return dnnl_primitive_desc_query_md(pd, what, 0);
}

static loom_status conv_build(const loom__kcall *call, const void *params, loom__onednn_prim *prog)
{
    const conv_params *p = params;
    dnnl_memory_desc_t ux, uw, uy, ub;
    dnnl_status_t dst = user_mds(p, &ux, &uw, &uy, &ub);
    if (dst != dnnl_success) return loom__onednn_error(call, "dnnl_memory_desc_init_by_tag", dst);
    dnnl_primitive_desc_t pd = NULL;
    loom_status st = LOOM_ERR_BACKEND;
    /* Winograd where asked for and implemented (else direct), blocked where
     * asked for and implemented (else plain). */
    if (p->wino) {
        st = make_pd(call, p, true, dnnl_convolution_winograd, &ux, &uw, &uy, &ub, &pd);
        const char *impl = NULL;
        if (st == LOOM_OK && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl &&
            strstr(impl, "wino"))
            atomic_fetch_add_explicit(&wino_programs, 1, memory_order_relaxed);
    }
    if (st != LOOM_OK && p->blocked) st = make_pd(call, p, true, dnnl_convolution_direct, &ux, &uw, &uy, &ub, &pd);
    if (st != LOOM_OK) st = make_pd(call, p, false, dnnl_convolution_direct, &ux, &uw, &uy, &ub, &pd);
    if (st != LOOM_OK) return st;
    /* The layouts the data inputs arrive in (x or dy, and dy). */
    dnnl_memory_desc_t ax = ux, ay = uy;
    dnnl_memory_desc_t *in0 = call->op == LOOM_OP_CONV2D_BWD_DATA ? &ay : &ax;
    dst = p->lay[0] ? loom__onednn_view_md(in0, &call->in[0]) : dnnl_success;
    if (dst == dnnl_success && call->op == LOOM_OP_CONV2D_BWD_WEIGHT && p->lay[1])
        dst = loom__onednn_view_md(&ay, &call->in[1]);
    if (dst != dnnl_success) {
        dnnl_primitive_desc_destroy(pd);
        return loom__onednn_error(call, "dnnl_memory_desc_init_by_tag", dst);
    }

    /* Per op: which user slot and plain desc each of the op's three tensors
     * has, the pd query for the layout chosen, and the DNNL_ARG. */
    struct role {
        int slot;
        const dnnl_memory_desc_t *user;
        dnnl_query_t query;
        int arg;
    } r[3];
    int out_role;
    switch (call->op) {
    case LOOM_OP_CONV2D:
        r[0] = (struct role){LOOM__ONEDNN_SLOT_IN0, &ax, dnnl_query_src_md, DNNL_ARG_SRC};
        r[1] = (struct role){LOOM__ONEDNN_SLOT_IN0 + 1, &uw, dnnl_query_weights_md, DNNL_ARG_WEIGHTS};
        r[2] = (struct role){LOOM__ONEDNN_SLOT_OUT, &uy, dnnl_query_dst_md, DNNL_ARG_DST};
        break;
    case LOOM_OP_CONV2D_BWD_DATA:
        r[0] = (struct role){LOOM__ONEDNN_SLOT_IN0, &ay, dnnl_query_diff_dst_md, DNNL_ARG_DIFF_DST};
        r[1] = (struct role){LOOM__ONEDNN_SLOT_IN0 + 1, &uw, dnnl_query_weights_md, DNNL_ARG_WEIGHTS};
        r[2] = (struct role){LOOM__ONEDNN_SLOT_OUT, &ux, dnnl_query_diff_src_md, DNNL_ARG_DIFF_SRC};
        break;
    default: /* LOOM_OP_CONV2D_BWD_WEIGHT */
        r[0] = (struct role){LOOM__ONEDNN_SLOT_IN0, &ax, dnnl_query_src_md, DNNL_ARG_SRC};
        r[1] = (struct role){LOOM__ONEDNN_SLOT_IN0 + 1, &ay, dnnl_query_diff_dst_md, DNNL_ARG_DIFF_DST};
        r[2] = (struct role){LOOM__ONEDNN_SLOT_OUT, &uw, dnnl_query_diff_weights_md, DNNL_ARG_DIFF_WEIGHTS};
        break;
    }
    out_role = 2;

    loom__onednn_arg args[4];
    int nargs = 0;
    for (int i = 0; i < 2; i++) {
        /* The weights (forward and backward-data) may come from the weight
         * cache: they repeat from call to call in inference. */
        const bool weights = r[i].arg == DNNL_ARG_WEIGHTS;
        const int s = (weights ? loom__onednn_weights_slot : loom__onednn_input_slot)(call, prog, r[i].slot, r[i].user,
                                                                                      q(pd, r[i].query));
        if (s < 0) {
            dnnl_primitive_desc_destroy(pd);
            return loom_last_status();
        }
        args[nargs++] = (loom__onednn_arg){r[i].arg, s, 0};
    }
    if (p->bias) args[nargs++] = (loom__onednn_arg){DNNL_ARG_BIAS, LOOM__ONEDNN_SLOT_IN0 + 2, 0};
    const dnnl_memory_desc_t out_md = *q(pd, r[out_role].query);
    /* A blocked output stays blocked for the next node when allowed. */
    const int out_layout = p->out_ok ? loom__onednn_md_layout(&out_md) : LOOM__LAYOUT_PLAIN;
    const int os = out_layout ? r[out_role].slot
                              : loom__onednn_output_slot(prog, r[out_role].slot, r[out_role].user, &out_md);
    prog->out_layout = out_layout;
    args[nargs++] = (loom__onednn_arg){r[out_role].arg, os, 0};
    prog->main_step = prog->nsteps;
    st = loom__onednn_add_step(call, prog, pd, nargs, args);
    dnnl_primitive_desc_destroy(pd);
    if (st == LOOM_OK && os != r[out_role].slot)
        st = loom__onednn_add_reorder(call, prog, os, &out_md, r[out_role].slot, r[out_role].user);
    return st;
}

loom_status loom__onednn_conv(const loom__kcall *call)
{
    conv_params p;
    if (!conv_params_of(call, &p))
        return loom__onednn_error(call, "checking the arguments", dnnl_invalid_arguments);
    loom__onednn_key key;
    loom__onednn_key_init(&key, call, 0);
    loom__onednn_key_add(&key, &p, sizeof p);
    return loom__onednn_run(call, &key, conv_build, &p);
}
