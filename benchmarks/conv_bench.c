/*
 * benchmarks/conv_bench.c - Loom's 2-D convolution beside oneDNN's
 * convolution primitive timed alone.
 *
 * For each shape and each pass (forward, backward-data, backward-weight)
 * three implementations are timed:
 *
 *   loom:           through the public API, in a context with
 *                   .num_threads = T and .backend = --backend ("auto"):
 *                   fwd:        y = loom_conv2d(x, w, NULL, &opts);
 *                               loom_tensor_eval(y); loom_tensor_free(y)
 *                   bwd_data:   x alone requires grad; untimed: y recorded
 *                               and evaluated; timed: loom_backward(y, dy,
 *                               NULL) with a precomputed dy; untimed: y
 *                               freed and x's grad dropped
 *                   bwd_weight: the same with w alone requiring grad
 *                   (no bias; outputs are allocated inside the timed call,
 *                   and backward's first gradient of a leaf is a copy of
 *                   the op's output, as for any Loom user);
 *   onednn_blocked: the oneDNN convolution primitive (forward_training /
 *                   backward_data / backward_weights, direct algorithm)
 *                   created once with dnnl_format_tag_any for data and
 *                   weights, i.e. in the layouts oneDNN prefers (nChw8c and
 *                   blocked weights on AVX2); its memories are allocated once
 *                   in those layouts and filled by an untimed reorder; only
 *                   dnnl_primitive_execute + dnnl_stream_wait are timed;
 *   onednn_nchw:    the same with plain nchw / oihw layouts;
 *   onednn_winograd: onednn_blocked with the Winograd algorithm, for 3x3
 *                   stride-1 shapes with 16+ channels where oneDNN has it
 *                   (AVX-512): what Loom's auto then runs (docs/cnn.md).
 *
 * oneDNN's threads are set with omp_set_num_threads(T) before its
 * primitives are created (and before each of its blocks). After a warm-up
 * (two calls each), the implementations run in turn in blocks of about
 * --min-time / 5 seconds each, every call timed on its own, until each has
 * run --min-time seconds in all and at least 3 times; "ms" is the median
 * call, "best_ms" the fastest. GFLOP/s = 2*N*O*OH*OW*(C/g)*KH*KW per pass,
 * from the median.
 *
 * Output: one JSON object per line,
 *   {"shape": "simplecnn_conv2", "pass": "fwd", "impl": "loom", "backend": "auto", "n": 64, ...,
 *    "threads": 2, "ms": 4.1, "best_ms": 4.0, "gflops": 160.2, "reps": 73}
 *   {"shape": ..., "pass": ..., "impl": "onednn_blocked", "onednn_impl": "jit:avx2",
 *    "data_layout": "nChw8c", ...}
 *   {"shape": ..., "pass": ..., "ratio_loom_over_onednn_blocked": 0.93,
 *    "ratio_loom_over_onednn_nchw": 1.10, "ratio_loom_node_over_onednn_blocked": 0.98,
 *    "ratio_loom_node_over_onednn_winograd": 0.97 (where that runner ran)}
 * (ratios of GFLOP/s, from the medians). Built without oneDNN
 * (LOOM_HAVE_ONEDNN unset), only the loom lines are printed and the first
 * line says so.
 *
 * Options: --threads T (default: every processor)  --min-time S (0.3)
 *          --shapes simplecnn|resnet|all (simplecnn)  --only SHAPE (just that one,
 *          e.g. simplecnn_conv1)  --backend NAME (auto)
 */
#define _POSIX_C_SOURCE 200809L

#if defined(__has_include)
#if __has_include("config.h")
#include "config.h"
#endif
#endif

#include <loom/loom.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef LOOM_HAVE_ONEDNN
#include <dnnl.h>
#include <dnnl_version.h>
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int num_procs(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#endif
}

static void set_threads(int threads)
{
#ifdef _OPENMP
    if (omp_get_max_threads() != threads) omp_set_num_threads(threads);
#else
    (void)threads;
#endif
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- shapes ------------------------------------------------------------- */

typedef struct conv_shape {
    const char *name;
    bool resnet; /* --shapes resnet; else simplecnn */
    int N, C, H, W, O, KH, KW, stride, pad;
    bool fwd_only;
} conv_shape;

static const conv_shape SHAPES[] = {
    {"simplecnn_conv1", false, 64, 1, 28, 28, 32, 3, 3, 1, 0, false},
    {"simplecnn_conv2", false, 64, 32, 26, 26, 64, 3, 3, 1, 0, false},
    {"resnet_3x3_64_56", true, 32, 64, 56, 56, 64, 3, 3, 1, 1, false},
    {"resnet_3x3_128_28", true, 32, 128, 28, 28, 128, 3, 3, 1, 1, false},
    {"resnet_stem_7x7_s2", true, 32, 3, 224, 224, 64, 7, 7, 2, 3, true},
    {"resnet_1x1_256_64_28", true, 32, 256, 28, 28, 64, 1, 1, 1, 0, false},
};
#define NSHAPES ((int)(sizeof SHAPES / sizeof SHAPES[0]))

static int out_size(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

static double conv_flops(const conv_shape *s)
{
    const int OH = out_size(s->H, s->KH, s->stride, s->pad), OW = out_size(s->W, s->KW, s->stride, s->pad);
    return 2.0 * s->N * s->O * OH * OW * (double)s->C * s->KH * s->KW;
}

enum { PASS_FWD, PASS_BWD_DATA, PASS_BWD_WEIGHT, NPASSES };
static const char *const PASS_NAMES[NPASSES] = {"fwd", "bwd_data", "bwd_weight"};

/* ---- timing --------------------------------------------------------------- */

/* One implementation being measured: rep() runs one call and returns the
 * seconds of its timed part, or a negative value on failure. */
typedef struct runner {
    const char *impl;
    double (*rep)(void *state);
    void *state;
    int threads; /* set before each block (oneDNN's OpenMP threads) */
    double *t;
    int n, cap;
    double total;
    bool failed;
} runner;

static bool runner_add(runner *r, double t)
{
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        double *nt = realloc(r->t, sizeof(double) * (size_t)cap);
        if (!nt) return false;
        r->t = nt;
        r->cap = cap;
    }
    r->t[r->n++] = t;
    r->total += t;
    return true;
}

static double median_of(runner *r, double *best)
{
    qsort(r->t, (size_t)r->n, sizeof(double), cmp_double);
    *best = r->t[0];
    return r->n % 2 ? r->t[r->n / 2] : 0.5 * (r->t[r->n / 2 - 1] + r->t[r->n / 2]);
}

/* Warm-up, then blocks in turn until each runner has min_time seconds and
 * 3 calls. Returns false if a call failed (the runner is marked). */
static bool measure(runner *rs, int nr, double min_time)
{
    for (int i = 0; i < nr; i++)
        for (int k = 0; k < 2; k++) {
            set_threads(rs[i].threads);
            if (rs[i].rep(rs[i].state) < 0) {
                rs[i].failed = true;
                return false;
            }
        }
    const double block = min_time / 5;
    for (;;) {
        bool more = false;
        for (int i = 0; i < nr; i++) more = more || rs[i].n < 3 || rs[i].total < min_time;
        if (!more) return true;
        for (int i = 0; i < nr; i++) {
            set_threads(rs[i].threads);
            double in_block = 0;
            do {
                const double t = rs[i].rep(rs[i].state);
                if (t < 0 || !runner_add(&rs[i], t)) {
                    rs[i].failed = true;
                    return false;
                }
                in_block += t;
            } while (in_block < block);
        }
    }
}

/* ---- Loom ------------------------------------------------------------------ */

typedef struct loom_state {
    loom_tensor *x, *w, *dy, *target; /* target: the leaf requiring grad (backward) */
    loom_conv2d_opts opts;
} loom_state;

static double loom_fwd_rep(void *p)
{
    loom_state *s = p;
    const double t0 = now_s();
    loom_tensor *y = loom_conv2d(s->x, s->w, NULL, &s->opts);
    if (!y) return -1.0;
    const loom_status st = loom_tensor_eval(y);
    loom_tensor_free(y);
    const double t1 = now_s();
    return st == LOOM_OK ? t1 - t0 : -1.0;
}

static double loom_bwd_rep(void *p)
{
    loom_state *s = p;
    loom_tensor *y = loom_conv2d(s->x, s->w, NULL, &s->opts);
    if (!y) return -1.0;
    if (loom_tensor_eval(y) != LOOM_OK) {
        loom_tensor_free(y);
        return -1.0;
    }
    const double t0 = now_s();
    const loom_status st = loom_backward(y, s->dy, NULL);
    const double t1 = now_s();
    loom_tensor_free(y);
    loom_tensor_zero_grad(s->target);
    return st == LOOM_OK ? t1 - t0 : -1.0;
}

/* The conv node's own kernel time, as in a network: its activation
 * inputs arrive in the layout the previous oneDNN node leaves (blocked
 * where oneDNN blocks them), its output stays in the node's layout
 * (loom_tensor_compute, not loom_tensor_eval, which would convert it to
 * plain after every rep and leave the caches full of that copy), and
 * what loom_backward adds around the node is not counted. The backward
 * node repeats alone, as the primitive does: one forward, then backward
 * after backward through its retained graph. Read from the context's
 * profile (loom_profile_op). */
typedef struct node_state {
    loom_state *ls;
    loom_ctx *ctx;
    loom_tensor *xb, *dyb; /* x and dy as a convolution node leaves them */
    loom_tensor *y;        /* backward passes: the forward, computed once, its graph retained */
    const char *op;
    int pass;
} node_state;

static double op_seconds(node_state *s)
{
    int64_t ns = 0;
    if (loom_profile_op(s->ctx, s->op, NULL, &ns, NULL) != LOOM_OK) return -1e9;
    return (double)ns * 1e-9;
}

static double node_rep(void *p)
{
    node_state *s = p;
    if (s->pass == 0) {
        const double t0 = op_seconds(s);
        loom_tensor *y = loom_conv2d(s->xb, s->ls->w, NULL, &s->ls->opts);
        const loom_status st = y ? loom_tensor_compute(y) : loom_last_status();
        const double t1 = op_seconds(s);
        loom_tensor_free(y);
        return st == LOOM_OK && t1 >= t0 ? t1 - t0 : -1.0;
    }
    /* Backward: the forward once, then backward after backward through
     * its retained graph, so that the node repeats alone, as the primitive
     * does (a forward before every rep put its output's 5.5 MB of dirty
     * lines in the caches the backward node then read through). */
    if (!s->y) {
        s->y = loom_conv2d(s->xb, s->ls->w, NULL, &s->ls->opts);
        if (!s->y || loom_tensor_compute(s->y) != LOOM_OK) return -1.0;
    }
    const double t0 = op_seconds(s);
    const loom_backward_options keep = {.retain_graph = true};
    const loom_status st = loom_backward(s->y, s->dyb, &keep);
    loom_tensor_zero_grad(s->pass == 1 ? s->xb : s->ls->w);
    const double t1 = op_seconds(s);
    return st == LOOM_OK && t1 >= t0 ? t1 - t0 : -1.0;
}

/* t as the output of a 3x3 convolution node (a delta kernel, so the
 * values are t's): in oneDNN's blocked layout where that node writes one,
 * detached into a leaf. Left pending: loom_tensor_eval would convert it to
 * plain for the user; the first (warm-up) call computes it and it stays
 * as the node wrote it. NULL on failure. */
static loom_tensor *as_conv_output(loom_ctx *ctx, loom_tensor *t)
{
    const int64_t C = loom_tensor_size(t, 1);
    float *d = calloc((size_t)(C * C * 9), sizeof *d);
    if (!d) return NULL;
    for (int64_t c = 0; c < C; c++) d[(c * C + c) * 9 + 4] = 1.0f;
    loom_tensor *w = loom_tensor_from_array(ctx, LOOM_FLOAT32, d, LOOM_SHAPE(C, C, 3, 3));
    free(d);
    loom_conv2d_opts o = {.padding = {1, 1}};
    loom_tensor *y = w ? loom_conv2d(t, w, NULL, &o) : NULL;
    loom_tensor *r = y ? loom_detach(y) : NULL;
    loom_tensor_free(y);
    loom_tensor_free(w);
    return r;
}

/* ---- oneDNN ------------------------------------------------------------------ */

#ifdef LOOM_HAVE_ONEDNN
typedef struct dnn_state {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    dnnl_primitive_t prim;
    dnnl_memory_t mem[3];
    dnnl_exec_arg_t args[3];
    const char *impl_info;  /* owned by the primitive descriptor */
    dnnl_primitive_desc_t pd;
    const char *data_layout;    /* of the activation (src / diff_src) */
    const char *weights_layout; /* of the weights / diff_weights */
} dnn_state;

static double onednn_rep(void *p)
{
    dnn_state *s = p;
    const double t0 = now_s();
    dnnl_status_t st = dnnl_primitive_execute(s->prim, s->stream, 3, s->args);
    if (st == dnnl_success) st = dnnl_stream_wait(s->stream);
    const double t1 = now_s();
    return st == dnnl_success ? t1 - t0 : -1.0;
}

/* The name of md's layout among a few plain and blocked ones, or "other". */
static const char *layout_name(const dnnl_memory_desc_t *md, bool weights)
{
    typedef struct {
        dnnl_format_tag_t tag;
        const char *name;
    } named_tag;
    static const named_tag data_tags[] = {
        {dnnl_nchw, "nchw"}, {dnnl_nhwc, "nhwc"}, {dnnl_nChw8c, "nChw8c"}, {dnnl_nChw16c, "nChw16c"}};
    static const named_tag weights_tags[] = {
        {dnnl_oihw, "oihw"},           {dnnl_ohwi, "ohwi"},           {dnnl_hwio, "hwio"},
        {dnnl_OIhw8i8o, "OIhw8i8o"},   {dnnl_OIhw8o8i, "OIhw8o8i"},   {dnnl_Ohwi8o, "Ohwi8o"},
        {dnnl_OIhw16i16o, "OIhw16i16o"}, {dnnl_OIhw16o16i, "OIhw16o16i"}, {dnnl_Ohwi16o, "Ohwi16o"}};
    const named_tag *tags = weights ? weights_tags : data_tags;
    const size_t n = weights ? sizeof weights_tags / sizeof weights_tags[0] : sizeof data_tags / sizeof data_tags[0];
    for (size_t i = 0; i < n; i++) {
        dnnl_memory_desc_t t;
        if (dnnl_memory_desc_init_by_tag(&t, md->ndims, md->dims, md->data_type, tags[i].tag) == dnnl_success &&
            dnnl_memory_desc_equal(&t, md))
            return tags[i].name;
    }
    return "other";
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float rand_pm1(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0) * 2.0 - 1.0);
}

static dnnl_status_t run_and_wait(dnnl_primitive_t prim, dnnl_stream_t stream, int nargs, const dnnl_exec_arg_t *args)
{
    dnnl_status_t st = dnnl_primitive_execute(prim, stream, nargs, args);
    return st == dnnl_success ? dnnl_stream_wait(stream) : st;
}

/* A memory of layout md; an input is filled with uniform values in [-1, 1)
 * written in plain layout `user` and reordered (untimed), an output zeroed. */
static dnnl_status_t make_memory(dnn_state *s, const dnnl_memory_desc_t *md, const dnnl_memory_desc_t *user,
                                 bool input, dnnl_memory_t *out)
{
    dnnl_status_t st = dnnl_memory_create(out, md, s->eng, DNNL_MEMORY_ALLOCATE);
    if (st != dnnl_success) return st;
    void *h = NULL;
    if ((st = dnnl_memory_get_data_handle(*out, &h)) != dnnl_success) return st;
    memset(h, 0, dnnl_memory_desc_get_size(md));
    if (!input) return dnnl_success;
    dnnl_memory_t um = NULL;
    if ((st = dnnl_memory_create(&um, user, s->eng, DNNL_MEMORY_ALLOCATE)) != dnnl_success) return st;
    void *uh = NULL;
    st = dnnl_memory_get_data_handle(um, &uh);
    float *u = uh;
    const size_t n = dnnl_memory_desc_get_size(user) / sizeof(float);
    for (size_t i = 0; st == dnnl_success && i < n; i++) u[i] = rand_pm1();
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t r = NULL;
    if (st == dnnl_success) st = dnnl_reorder_primitive_desc_create(&rpd, user, s->eng, md, s->eng, NULL);
    if (st == dnnl_success) st = dnnl_primitive_create(&r, rpd);
    if (st == dnnl_success) {
        const dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, um}, {DNNL_ARG_TO, *out}};
        st = run_and_wait(r, s->stream, 2, a);
    }
    if (r) dnnl_primitive_destroy(r);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(um);
    return st;
}

static void dnn_free(dnn_state *s)
{
    if (s->prim) dnnl_primitive_destroy(s->prim);
    if (s->pd) dnnl_primitive_desc_destroy(s->pd);
    for (int i = 0; i < 3; i++)
        if (s->mem[i]) dnnl_memory_destroy(s->mem[i]);
    s->prim = NULL;
    s->pd = NULL;
    memset(s->mem, 0, sizeof s->mem);
}

/* Builds the primitive of `pass` for shape sh, blocked (format any) or
 * plain, with the direct algorithm or Winograd; s->eng and s->stream are
 * set. On failure prints what failed, unless quiet. */
static bool dnn_build(dnn_state *s, const conv_shape *sh, int pass, bool blocked, bool wino, bool quiet)
{
    const dnnl_alg_kind_t alg = wino ? dnnl_convolution_winograd : dnnl_convolution_direct;
    const int OH = out_size(sh->H, sh->KH, sh->stride, sh->pad), OW = out_size(sh->W, sh->KW, sh->stride, sh->pad);
    const dnnl_dims_t xd = {sh->N, sh->C, sh->H, sh->W}, wd = {sh->O, sh->C, sh->KH, sh->KW},
                      yd = {sh->N, sh->O, OH, OW};
    const dnnl_dims_t strides = {sh->stride, sh->stride}, pad = {sh->pad, sh->pad};
    dnnl_memory_desc_t ux, uw, uy, x, w, y;
    const char *what = "dnnl_memory_desc_init_by_tag";
    dnnl_status_t st = dnnl_memory_desc_init_by_tag(&ux, 4, xd, dnnl_f32, dnnl_nchw);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&uw, 4, wd, dnnl_f32, dnnl_oihw);
    if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&uy, 4, yd, dnnl_f32, dnnl_nchw);
    x = ux, w = uw, y = uy;
    if (st == dnnl_success && blocked) {
        st = dnnl_memory_desc_init_by_tag(&x, 4, xd, dnnl_f32, dnnl_format_tag_any);
        if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&w, 4, wd, dnnl_f32, dnnl_format_tag_any);
        if (st == dnnl_success) st = dnnl_memory_desc_init_by_tag(&y, 4, yd, dnnl_f32, dnnl_format_tag_any);
    }
    dnnl_convolution_desc_t fd, bd;
    dnnl_primitive_desc_t fpd = NULL;
    if (st == dnnl_success) {
        what = "dnnl_convolution_forward_desc_init";
        st = dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, alg, &x, &w, NULL, &y, strides, pad, pad);
    }
    if (st == dnnl_success) {
        what = "dnnl_primitive_desc_create (forward)";
        st = dnnl_primitive_desc_create(&fpd, &fd, NULL, s->eng, NULL);
    }
    if (st == dnnl_success && pass == PASS_FWD) {
        s->pd = fpd;
        fpd = NULL;
    } else if (st == dnnl_success) {
        if (pass == PASS_BWD_DATA) {
            what = "dnnl_convolution_backward_data_desc_init";
            st = dnnl_convolution_backward_data_desc_init(&bd, alg, &x, &w, &y, strides, pad, pad);
        } else {
            what = "dnnl_convolution_backward_weights_desc_init";
            st = dnnl_convolution_backward_weights_desc_init(&bd, alg, &x, &w, NULL, &y, strides, pad, pad);
        }
        if (st == dnnl_success) {
            what = "dnnl_primitive_desc_create (backward)";
            st = dnnl_primitive_desc_create(&s->pd, &bd, NULL, s->eng, fpd);
        }
    }
    if (fpd) dnnl_primitive_desc_destroy(fpd);

    /* The three arguments: the two inputs first. */
    struct {
        int arg;
        dnnl_query_t q;
        const dnnl_memory_desc_t *user;
    } a[3];
    switch (pass) {
    case PASS_FWD:
        a[0].arg = DNNL_ARG_SRC, a[0].q = dnnl_query_src_md, a[0].user = &ux;
        a[1].arg = DNNL_ARG_WEIGHTS, a[1].q = dnnl_query_weights_md, a[1].user = &uw;
        a[2].arg = DNNL_ARG_DST, a[2].q = dnnl_query_dst_md, a[2].user = &uy;
        break;
    case PASS_BWD_DATA:
        a[0].arg = DNNL_ARG_DIFF_DST, a[0].q = dnnl_query_diff_dst_md, a[0].user = &uy;
        a[1].arg = DNNL_ARG_WEIGHTS, a[1].q = dnnl_query_weights_md, a[1].user = &uw;
        a[2].arg = DNNL_ARG_DIFF_SRC, a[2].q = dnnl_query_diff_src_md, a[2].user = &ux;
        break;
    default:
        a[0].arg = DNNL_ARG_SRC, a[0].q = dnnl_query_src_md, a[0].user = &ux;
        a[1].arg = DNNL_ARG_DIFF_DST, a[1].q = dnnl_query_diff_dst_md, a[1].user = &uy;
        a[2].arg = DNNL_ARG_DIFF_WEIGHTS, a[2].q = dnnl_query_diff_weights_md, a[2].user = &uw;
        break;
    }
    for (int i = 0; i < 3 && st == dnnl_success; i++) {
        what = "creating and filling the memories";
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(s->pd, a[i].q, 0);
        if (!md) {
            st = dnnl_invalid_arguments;
            break;
        }
        st = make_memory(s, md, a[i].user, i < 2, &s->mem[i]);
        s->args[i].arg = a[i].arg;
        s->args[i].memory = s->mem[i];
        if (a[i].user == &ux) s->data_layout = layout_name(md, false);
        if (a[i].user == &uw) s->weights_layout = layout_name(md, true);
    }
    if (st == dnnl_success) {
        what = "dnnl_primitive_desc_query (impl_info_str)";
        st = dnnl_primitive_desc_query(s->pd, dnnl_query_impl_info_str, 0, &s->impl_info);
    }
    if (st == dnnl_success) {
        what = "dnnl_primitive_create";
        st = dnnl_primitive_create(&s->prim, s->pd);
    }
    if (st != dnnl_success) {
        if (!quiet)
            fprintf(stderr, "conv_bench: oneDNN %s %s (%s): %s failed (status %d)\n", sh->name, PASS_NAMES[pass],
                    blocked ? "blocked" : "nchw", what, (int)st);
        dnn_free(s);
        return false;
    }
    return true;
}
#endif /* LOOM_HAVE_ONEDNN */

/* ---- output ------------------------------------------------------------------ */

static void print_shape_fields(const conv_shape *s, int pass)
{
    printf("\"shape\": \"%s\", \"pass\": \"%s\"", s->name, PASS_NAMES[pass]);
}

/* Prints r's line; returns its GFLOP/s (from the median). */
static double print_runner(runner *r, const conv_shape *s, int pass, int threads, const char *extra)
{
    double best, med = median_of(r, &best);
    const double gf = conv_flops(s) / med * 1e-9;
    printf("{");
    print_shape_fields(s, pass);
    printf(", \"impl\": \"%s\"%s, \"n\": %d, \"c\": %d, \"h\": %d, \"w\": %d, \"o\": %d, \"kh\": %d, \"kw\": %d, "
           "\"stride\": %d, \"pad\": %d, \"threads\": %d, \"ms\": %.3f, \"best_ms\": %.3f, \"gflops\": %.2f, "
           "\"reps\": %d}\n",
           r->impl, extra, s->N, s->C, s->H, s->W, s->O, s->KH, s->KW, s->stride, s->pad, threads, med * 1e3,
           best * 1e3, gf, r->n);
    fflush(stdout);
    return gf;
}

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--threads T] [--min-time S] [--shapes simplecnn|resnet|all] [--only SHAPE]\n"
            "          [--backend auto|ref|onednn]\n"
            "Times Loom's convolution (loom_conv2d, forward and, through loom_backward, backward-data and\n"
            "backward-weight)%s; prints one JSON object per line.\n"
            "Defaults: --threads %d --min-time 0.3 --shapes simplecnn --backend auto\n",
            prog,
#ifdef LOOM_HAVE_ONEDNN
            " against oneDNN's convolution primitive in blocked and nchw layouts",
#else
            " (built without oneDNN: Loom only)",
#endif
            num_procs());
}

int main(int argc, char **argv)
{
    int threads = num_procs();
    double min_time = 0.3;
    const char *shapes = "simplecnn";
    const char *backend = "auto";
    const char *only = NULL; /* --only NAME: one shape */
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = val != NULL;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            usage(argv[0]);
            return 0;
        } else if (!strcmp(opt, "--threads") && val) {
            char *end;
            long t = strtol(val, &end, 10);
            ok = *end == '\0' && t >= 1 && t <= 4096;
            threads = (int)t;
        } else if (!strcmp(opt, "--min-time") && val) {
            char *end;
            min_time = strtod(val, &end);
            ok = *end == '\0' && min_time >= 0.0;
        } else if (!strcmp(opt, "--shapes") && val) {
            shapes = val;
            ok = !strcmp(val, "simplecnn") || !strcmp(val, "resnet") || !strcmp(val, "all");
        } else if (!strcmp(opt, "--only") && val) {
            only = val;
        } else if (!strcmp(opt, "--backend") && val) {
            backend = val;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "%s: bad or unknown option '%s'\n", argv[0], opt);
            usage(argv[0]);
            return 2;
        }
        i++;
    }
    const bool want_resnet = strcmp(shapes, "simplecnn") != 0, want_simple = strcmp(shapes, "resnet") != 0;
    if (only) {
        bool known = false;
        for (int si = 0; si < NSHAPES; si++) known = known || !strcmp(SHAPES[si].name, only);
        if (!known) {
            fprintf(stderr, "%s: --only: no shape named '%s'; the shapes are:", argv[0], only);
            for (int si = 0; si < NSHAPES; si++) fprintf(stderr, " %s", SHAPES[si].name);
            fprintf(stderr, "\n");
            return 2;
        }
    }

    /* oneDNN's threads: set before any primitive is created. */
    set_threads(threads);

    loom_ctx_options opts;
    memset(&opts, 0, sizeof opts);
    opts.num_threads = threads;
    opts.backend = backend;
    opts.seed = 42;
    loom_ctx *ctx = loom_ctx_create(&opts);
    if (!ctx) {
        fprintf(stderr, "conv_bench: loom_ctx_create(threads=%d, backend=%s): %s\n", threads, backend,
                loom_last_error());
        return 1;
    }
    const char *bk = loom_ctx_backend(ctx);
    loom_profile_start(ctx); /* the loom_node runner reads the conv ops' kernel time */

#ifdef LOOM_HAVE_ONEDNN
    dnn_state base;
    memset(&base, 0, sizeof base);
    if (dnnl_engine_create(&base.eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&base.stream, base.eng, dnnl_stream_default_flags) != dnnl_success) {
        fprintf(stderr, "conv_bench: cannot create a oneDNN CPU engine and stream\n");
        loom_ctx_free(ctx);
        return 1;
    }
    printf("{\"bench\": \"conv\", \"threads\": %d, \"backend\": \"%s\", \"min_time\": %g, \"onednn\": \"%d.%d.%d\"}\n",
           threads, bk, min_time, DNNL_VERSION_MAJOR, DNNL_VERSION_MINOR, DNNL_VERSION_PATCH);
#else
    printf("{\"bench\": \"conv\", \"threads\": %d, \"backend\": \"%s\", \"min_time\": %g, \"onednn\": null, "
           "\"note\": \"built without oneDNN: only Loom is measured\"}\n",
           threads, bk, min_time);
    fprintf(stderr, "conv_bench: built without oneDNN: only Loom is measured\n");
#endif
    fflush(stdout);

    int status = 0;
    for (int si = 0; si < NSHAPES && status == 0; si++) {
        const conv_shape *sh = &SHAPES[si];
        if (only ? strcmp(sh->name, only) != 0 : sh->resnet ? !want_resnet : !want_simple) continue;
        const int OH = out_size(sh->H, sh->KH, sh->stride, sh->pad), OW = out_size(sh->W, sh->KW, sh->stride, sh->pad);
        loom_state ls;
        memset(&ls, 0, sizeof ls);
        ls.opts.stride[0] = ls.opts.stride[1] = sh->stride;
        ls.opts.padding[0] = ls.opts.padding[1] = sh->pad;
        ls.x = loom_randn(ctx, LOOM_SHAPE(sh->N, sh->C, sh->H, sh->W));
        ls.w = loom_randn(ctx, LOOM_SHAPE(sh->O, sh->C, sh->KH, sh->KW));
        ls.dy = sh->fwd_only ? NULL : loom_randn(ctx, LOOM_SHAPE(sh->N, sh->O, OH, OW));
        if (!ls.x || !ls.w || (!sh->fwd_only && !ls.dy) || loom_tensor_eval(ls.x) || loom_tensor_eval(ls.w) ||
            (ls.dy && loom_tensor_eval(ls.dy))) {
            fprintf(stderr, "conv_bench: %s: creating the inputs: %s\n", sh->name, loom_last_error());
            status = 1;
        }
        loom_tensor *xb = status ? NULL : as_conv_output(ctx, ls.x);
        loom_tensor *dyb = status || !ls.dy ? NULL : as_conv_output(ctx, ls.dy);
        if (status == 0 && (!xb || (ls.dy && !dyb))) {
            fprintf(stderr, "conv_bench: %s: the blocked inputs: %s\n", sh->name, loom_last_error());
            status = 1;
        }
        for (int pass = 0; pass < NPASSES && status == 0; pass++) {
            if (pass != PASS_FWD && sh->fwd_only) break;
            runner rs[5];
            memset(rs, 0, sizeof rs);
            int nr = 0;
            ls.target = pass == PASS_BWD_DATA ? ls.x : pass == PASS_BWD_WEIGHT ? ls.w : NULL;
            if (ls.target && loom_tensor_set_requires_grad(ls.target, true) != LOOM_OK) {
                fprintf(stderr, "conv_bench: %s: %s\n", sh->name, loom_last_error());
                status = 1;
                break;
            }
            rs[nr++] = (runner){.impl = "loom", .rep = pass == PASS_FWD ? loom_fwd_rep : loom_bwd_rep,
                                .state = &ls, .threads = threads};
            static const char *const OPS[NPASSES] = {"conv2d", "conv2d_backward_data", "conv2d_backward_weight"};
            node_state ns = {.ls = &ls, .ctx = ctx, .xb = xb, .dyb = dyb, .op = OPS[pass], .pass = pass};
            if (pass == PASS_BWD_DATA && loom_tensor_set_requires_grad(xb, true) != LOOM_OK) status = 1;
            rs[nr++] = (runner){.impl = "loom_node", .rep = node_rep, .state = &ns, .threads = threads};
#ifdef LOOM_HAVE_ONEDNN
            /* Direct blocked, direct nchw, and Winograd where oneDNN has it
             * for the shape (3x3 stride 1 on AVX-512; the algorithm Loom's
             * auto then picks: docs/cnn.md). */
            dnn_state ds[3];
            ds[0] = ds[1] = ds[2] = base;
            static const char *const DNN_IMPLS[3] = {"onednn_blocked", "onednn_nchw", "onednn_winograd"};
            bool have_wino = false;
            for (int b = 0; b < 3 && status == 0; b++) {
                set_threads(threads);
                if (b == 2 && !(sh->KH == 3 && sh->KW == 3 && sh->stride == 1 && sh->C >= 16 && sh->O >= 16)) break;
                if (!dnn_build(&ds[b], sh, pass, b != 1, b == 2, b == 2)) {
                    if (b < 2) status = 1;
                } else {
                    rs[nr++] = (runner){.impl = DNN_IMPLS[b], .rep = onednn_rep, .state = &ds[b], .threads = threads};
                    have_wino = b == 2;
                }
            }
#endif
            if (status == 0 && !measure(rs, nr, min_time)) {
                for (int i = 0; i < nr; i++)
                    if (rs[i].failed)
                        fprintf(stderr, "conv_bench: %s %s: %s failed%s%s\n", sh->name, PASS_NAMES[pass], rs[i].impl,
                                i == 0 ? ": " : "", i == 0 ? loom_last_error() : "");
                status = 1;
            }
            if (status == 0) {
                char extra[160];
                snprintf(extra, sizeof extra, ", \"backend\": \"%s\"", bk);
                const double gl = print_runner(&rs[0], sh, pass, threads, extra);
                const double gn = print_runner(&rs[1], sh, pass, threads, extra);
#ifdef LOOM_HAVE_ONEDNN
                double go[3];
                for (int b = 0; b < 2 + have_wino; b++) {
                    snprintf(extra, sizeof extra,
                             ", \"onednn_impl\": \"%s\", \"data_layout\": \"%s\", \"weights_layout\": \"%s\"",
                             ds[b].impl_info ? ds[b].impl_info : "?", ds[b].data_layout ? ds[b].data_layout : "?",
                             ds[b].weights_layout ? ds[b].weights_layout : "?");
                    go[b] = print_runner(&rs[2 + b], sh, pass, threads, extra);
                }
                printf("{");
                print_shape_fields(sh, pass);
                printf(", \"ratio_loom_over_onednn_blocked\": %.3f, \"ratio_loom_over_onednn_nchw\": %.3f, "
                       "\"ratio_loom_node_over_onednn_blocked\": %.3f",
                       gl / go[0], gl / go[1], gn / go[0]);
                if (have_wino) printf(", \"ratio_loom_node_over_onednn_winograd\": %.3f", gn / go[2]);
                printf("}\n");
                fflush(stdout);
#else
                (void)gl;
                (void)gn;
#endif
            }
#ifdef LOOM_HAVE_ONEDNN
            for (int b = 0; b < 3; b++) dnn_free(&ds[b]);
#endif
            for (int i = 0; i < 5; i++) free(rs[i].t);
            loom_tensor_free(ns.y);
            if (ls.target) loom_tensor_set_requires_grad(ls.target, false);
            if (pass == PASS_BWD_DATA && xb) loom_tensor_set_requires_grad(xb, false);
        }
        loom_tensor_free(ls.x);
        loom_tensor_free(ls.w);
        loom_tensor_free(ls.dy);
        loom_tensor_free(xb);
        loom_tensor_free(dyb);
    }
#ifdef LOOM_HAVE_ONEDNN
    dnnl_stream_destroy(base.stream);
    dnnl_engine_destroy(base.eng);
#endif
    loom_ctx_free(ctx);
    return status;
}
