/*
 * graph/eval.c - evaluation of the recorded DAG.
 *
 * loom__eval walks the pending part of the DAG below a tensor (iteratively:
 * an unrolled RNN makes chains thousands of nodes deep), orders it so that
 * every node comes after its inputs, and runs the nodes one by one. The
 * runtime issue replaces the loop in run_order() by the work-stealing
 * scheduler; loom__run_node() is the unit both use.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/registry.h"
#include "graph/capture.h"
#include "graph/eval.h"
#include "graph/trace.h"
#include "runtime/cores.h"
#include "runtime/pool.h"
#include "runtime/error.h"

static bool is_view_op(loom__op op)
{
    return op >= LOOM_OP_VIEW_RESHAPE && op <= LOOM_OP_VIEW_ALIAS;
}

static void view_of(const loom_tensor *t, loom__tview *v)
{
    v->data = loom__tensor_ptr(t);
    v->dtype = t->dtype;
    v->ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) {
        v->shape[d] = t->shape[d];
        v->strides[d] = t->strides[d];
    }
    v->layout = LOOM__LAYOUT_PLAIN;
    v->uid = t->storage ? t->storage->uid : 0;
    v->version = t->storage ? t->storage->version : 0;
}

/* A layout that no kernel accepts: the input is a view of part of a
 * blocked storage (a flatten, a slice), which only a plain copy can give. */
#define LAYOUT_PARTIAL (-1)

/* t fills its storage as a contiguous 4-D float32 tensor: the only tensors
 * a storage may hold blocked (backends/kernel.h). */
static bool whole_4d(const loom_tensor *t)
{
    return t->dtype == LOOM_FLOAT32 && t->ndim == 4 && t->offset == 0 &&
           loom__is_contiguous(t->ndim, t->shape, t->strides) &&
           (size_t)loom__numel(4, t->shape) * sizeof(float) == t->storage->nbytes;
}

/* The input's view: its storage's layout when it is the whole blocked
 * tensor, LAYOUT_PARTIAL for a part of a blocked storage. */
static void input_view(const loom_tensor *t, loom__tview *v)
{
    view_of(t, v);
    const int layout = t->storage->layout;
    if (layout != LOOM__LAYOUT_PLAIN) v->layout = whole_4d(t) ? layout : LAYOUT_PARTIAL;
}

/* Gives the inputs that conv[] marks a converted copy (tmp[i], freed by
 * loom__exec_run): a plain copy of a blocked storage for a kernel that
 * reads plain data only, or a blocked copy of a plain tensor that joins
 * blocked ones (try_blocked). */
static loom_status convert_inputs(const loom__exec *x, loom__tview *views, void **tmp, int nthreads)
{
    for (int i = 0; i < x->call.n_in; i++) {
        const loom__conv *c = &x->conv[i];
        if (c->kind == LOOM__CONV_NONE) continue;
        tmp[i] = loom__mem_alloc_data(x->mem, c->nbytes);
        if (!tmp[i])
            return loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory allocating %zu bytes for a %s copy of input %d",
                                   loom__op_name(x->call.op), c->nbytes,
                                   c->kind == LOOM__CONV_TO_PLAIN ? "plain" : "blocked", i);
        if (c->kind == LOOM__CONV_TO_PLAIN) {
            loom__layout_to_plain(c->base, tmp[i], c->layout, c->dims, nthreads);
            views[i].data = (char *)tmp[i] + c->byte_off;
            views[i].layout = LOOM__LAYOUT_PLAIN;
        } else {
            loom__layout_from_plain(views[i].data, tmp[i], c->layout, views[i].shape, nthreads);
            views[i].data = tmp[i];
            views[i].layout = c->layout;
        }
    }
    return LOOM_OK;
}

/* conv[i] for an input whose view is blocked (or part of a blocked
 * storage) and must reach the kernel plain. */
static void conv_to_plain(const loom_tensor *x, loom__conv *c)
{
    const loom__storage *s = x->storage;
    c->kind = LOOM__CONV_TO_PLAIN;
    c->layout = s->layout;
    memcpy(c->dims, s->dims, sizeof c->dims);
    c->nbytes = s->nbytes;
    c->base = s->data;
    c->byte_off = x->offset * loom_dtype_size(x->dtype);
}

/* Marks, in views, the plain inputs that could join the call's blocked
 * ones: whole 4-D tensors with the same channels as the blocked inputs,
 * all of which share one layout. If a kernel then takes the call, conv[]
 * says to convert them and *k is it; else the marks are undone and graph/
 * falls back to plain copies. Kernels' supports() only check layouts and
 * shapes, or scan values for NaN (a permutation does not change that), so
 * asking before converting is safe. */
static bool try_blocked(const loom_tensor *t, loom__kcall *call, loom__conv *conv, const loom__kernel **k,
                        const char **bname)
{
    const loom__node *n = &t->node;
    loom__tview *views = (loom__tview *)call->in;
    int layout = LOOM__LAYOUT_PLAIN;
    int64_t channels = -1;
    for (int i = 0; i < n->n_in; i++) {
        const int l = views[i].layout;
        if (l == LOOM__LAYOUT_PLAIN) continue;
        if (l == LAYOUT_PARTIAL || (layout != LOOM__LAYOUT_PLAIN && l != layout)) return false;
        layout = l;
        channels = views[i].shape[1];
    }
    bool marked = false;
    for (int i = 0; i < n->n_in; i++)
        if (views[i].layout == LOOM__LAYOUT_PLAIN && whole_4d(n->in[i]) && n->in[i]->shape[1] == channels) {
            views[i].layout = layout;
            marked = true;
        }
    if (marked && (*k = loom__registry_find(t->ctx->backend, call, bname))) {
        for (int i = 0; i < n->n_in; i++)
            if (views[i].layout != LOOM__LAYOUT_PLAIN && n->in[i]->storage->layout == LOOM__LAYOUT_PLAIN) {
                /* Converted in loom__exec_run, which sets the layout
                 * again once the data is blocked. */
                conv[i] = (loom__conv){.kind = LOOM__CONV_TO_BLOCKED, .layout = layout,
                                       .nbytes = n->in[i]->storage->nbytes};
                views[i].layout = LOOM__LAYOUT_PLAIN;
            }
        return true;
    }
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i]->storage->layout == LOOM__LAYOUT_PLAIN) views[i].layout = LOOM__LAYOUT_PLAIN;
    *k = NULL;
    return false;
}

static int64_t numel_t(const loom_tensor *t) { return loom__numel(t->ndim, t->shape); }

/* A node's work in rough nanoseconds of one core: a multiply-add of a
 * convolution or matmul 1/16 (SGEMM-bound: conv2 of the SimpleCNN, 680 M
 * multiply-adds, takes ~22 ms on one core of the 2-core EPYC VM), an
 * element of a window of pooling 2, an element of anything else 1. */
static int64_t node_cost(const loom_tensor *t)
{
    const loom__node *n = &t->node;
    const loom_tensor *dy = NULL, *wt = NULL;
    int64_t touched = numel_t(t);
    for (int i = 0; i < n->n_in; i++) touched += numel_t(n->in[i]);
    switch (n->op) {
    case LOOM_OP_CONV2D: dy = t, wt = n->in[1]; break;
    case LOOM_OP_CONV2D_BWD_DATA: dy = n->in[0], wt = n->in[1]; break;
    case LOOM_OP_CONV2D_BWD_WEIGHT: dy = n->in[1], wt = t; break;
    case LOOM_OP_MATMUL: {
        const loom_tensor *a = n->in[0];
        return numel_t(t) * (a->ndim ? a->shape[a->ndim - 1] : 1) / 16 + touched;
    }
    case LOOM_OP_MAX_POOL2D:
    case LOOM_OP_MAX_POOL2D_BWD:
    case LOOM_OP_AVG_POOL2D:
    case LOOM_OP_AVG_POOL2D_BWD:
        if (!n->attrs.pool.adaptive) return touched * 2 * n->attrs.pool.kernel[0] * n->attrs.pool.kernel[1];
        return touched * 2;
    default: break;
    }
    if (dy && wt && wt->ndim == 4 && wt->shape[0] > 0)
        return numel_t(dy) * (numel_t(wt) / wt->shape[0]) / 16 + touched;
    return touched;
}

/* The threads a node uses well: one per NODE_GRAIN of work (about 0.25 ms
 * of one core), at least 1, at most max. Below that an OpenMP team's
 * wake-up and barriers eat the gain, and the node does better as one of
 * several running side by side (benchmarks/dag_parallel: [96, 96] matmuls,
 * ~0.1 ms each, gain 1.8x from two workers, at most 1.5x from two threads
 * inside). A deterministic function of the node, so that exact-width
 * kernels always run at the same width. */
#define NODE_GRAIN ((int64_t)1 << 18)
int loom__node_want_alone(const loom_tensor *t, int max, bool alone)
{
    if (t->node.op == LOOM_OP_HOST_CALL) return 1; /* one thread calling out (MPI) */
    /* A hooked backward keeps comm_reserve cores for its host calls
     * (graph/autograd_impl.h). */
    if (t->ctx->comm_reserve && max > 1) max -= t->ctx->comm_reserve;
    /* Nothing can run beside it: every core, as with the scheduler off
     * (the kernels' own grains still size their teams). A view runs no
     * kernel: it stays narrow, so it does not move the chain to a team
     * master and back. */
    if (alone && !is_view_op(t->node.op) && loom__numel(t->ndim, t->shape) > 0) return max;
    int64_t want = 1 + node_cost(t) / NODE_GRAIN;
    return want < max ? (int)want : max;
}

int loom__node_want(const loom_tensor *t, int max) { return loom__node_want_alone(t, max, false); }

/* The counters of the worker running a node (w NULL: the serial path, on
 * the caller's thread: slot 0, as worker 0 is the caller). */
static loom__wcount *my_count(loom_ctx *ctx, const loom__worker *w)
{
    /* Modulo: a test may give the context a pool of more workers. */
    return &ctx->wcount[w ? loom__worker_index(w) % ctx->num_workers : 0];
}

/* Threads running nodes now, and the most there ever were (the core
 * budget's bound, checked by tests/check_exec.c). */
static void count_running(loom_ctx *ctx, int delta)
{
    if (!ctx->check_running) return;
    int now = atomic_fetch_add_explicit(&ctx->running, delta, memory_order_relaxed) + delta;
    int max = atomic_load_explicit(&ctx->running_max, memory_order_relaxed);
    while (now > max &&
           !atomic_compare_exchange_weak_explicit(&ctx->running_max, &max, now, memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
}

static loom_status fail(loom_tensor *t, loom_status st)
{
    t->err = st;
    free(t->errmsg);
    const char *msg = loom_last_error();
    size_t len = strlen(msg) + 1;
    t->errmsg = malloc(len); /* NULL is fine: the status alone is reported */
    if (t->errmsg) memcpy(t->errmsg, msg, len);
    atomic_store_explicit(&t->state, LOOM__FAILED, memory_order_release);
    return st;
}

int loom__wide_width_policy(const char *name)
{
    if (name && !strcmp(name, "planned")) return LOOM__WIDE_PLANNED;
    if (name && !strcmp(name, "full")) return LOOM__WIDE_FULL;
    return LOOM__WIDE_BIG;
}

/* A node that wants this many threads or more is big (about 1 ms of one
 * core's work, NODE_GRAIN each): see LOOM__WIDE_BIG. */
#define BIG_WANT 4

int loom__wide_width(int policy, int want, int total)
{
    if (want > total) want = total;
    if (want <= 1) return 1;
    if (policy == LOOM__WIDE_FULL || (policy == LOOM__WIDE_BIG && want >= BIG_WANT)) return total;
    return loom__cores_width(want, total);
}

loom_status loom__exec_run(loom_ctx *ctx, loom__worker *w, loom__exec *x, void **tmp)
{
    loom__kcall *call = &x->call;
    loom__tview *views = (loom__tview *)call->in;
    loom_status st = LOOM_OK;
    int held = 0; /* core-budget tokens held (scheduler only) */
    call->nthreads = ctx->kernel_threads;
    if (w) {
        /* The scheduler: the node runs with the cores it gets from the
         * budget (runtime/cores.h): exactly its planned width when the
         * kernel's results depend on the thread count (assumed while the
         * kernel is not known yet), else up to it. */
        const int total = loom__worker_cores_total(w);
        const int want = loom__wide_width(ctx->wide_width, x->want, total);
        const int64_t w0 = ctx->trace ? loom__trace_now() : 0;
        held = loom__worker_cores_take(w, want, x->k ? x->k->exact_width : true);
        if (ctx->trace) { /* a wait for cores longer than 2 us: a slice of its own */
            const int64_t w1 = loom__trace_now();
            if (w1 - w0 > 2000) loom__trace_sched(ctx->trace, 3, loom__worker_index(w), want, w0, w1);
        }
        call->nthreads = loom__cores_width(held, total);
        loom__worker_cores_give(w, held - call->nthreads);
        held = call->nthreads;
        count_running(ctx, held);
    }
    /* The kernel's time includes its inputs' conversions. */
    const bool prof = atomic_load_explicit(&ctx->profile, memory_order_relaxed);
    const int64_t a = prof || ctx->trace ? loom__trace_now() : 0;
    if (x->conv) st = convert_inputs(x, views, tmp, call->nthreads);
    if (st == LOOM_OK && !x->k) {
        x->k = loom__registry_pick(ctx->backend, call, &x->bname);
        if (!x->k) st = LOOM_ERR_BACKEND;
    }
    if (st == LOOM_OK) {
        st = x->k->run(call);
        const int64_t flops = loom__kcall_flops(call);
        if (flops) atomic_fetch_add_explicit(&my_count(ctx, w)->flops, flops, memory_order_relaxed);
        if (prof || ctx->trace) {
            const int64_t b = loom__trace_now();
            if (prof) {
                atomic_fetch_add_explicit(&ctx->prof_ns[call->op], b - a, memory_order_relaxed);
                atomic_fetch_add_explicit(&ctx->prof_calls[call->op], 1, memory_order_relaxed);
                atomic_fetch_add_explicit(&ctx->prof_flops[call->op], flops, memory_order_relaxed);
            }
            if (ctx->trace)
                loom__trace_node(ctx->trace, call->op, x->bname, a, b, call->out.ndim, call->out.shape,
                                 call->nthreads, call->out_layout ? *call->out_layout : LOOM__LAYOUT_PLAIN);
        }
    }
    if (held) {
        count_running(ctx, -held);
        loom__worker_cores_give(w, held);
    }
    for (int i = 0; i < call->n_in; i++)
        if (tmp[i]) {
            loom__mem_free_data(x->mem, tmp[i]);
            tmp[i] = NULL;
        }
    return st;
}

loom_status loom__run_node(loom_tensor *t, loom__worker *w)
{
    loom__node *n = &t->node;
    for (int i = 0; i < n->n_in; i++) {
        if (n->in[i]->storage->version != n->in_version[i]) {
            loom__set_error(LOOM_ERR_STATE,
                            "%s: input %d was modified in place (loom_tensor_assign) after this op was recorded",
                            loom__op_name(n->op), i);
            return fail(t, LOOM_ERR_STATE);
        }
    }
    loom__capture *cap = t->ctx->capture;
    if (!is_view_op(n->op) && loom__numel(t->ndim, t->shape) > 0) {
        loom__storage *s = t->storage;
        if (!s->data) {
            /* On the worker's NUMA node (runtime/mem.h's domains). */
            s->data = loom__mem_alloc_data_on(s->mem, s->nbytes, w ? loom__worker_numa(w) : 0);
            if (!s->data) {
                char sh[LOOM__SHAPE_STR_MAX];
                loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory allocating %zu bytes for the output of shape %s",
                                loom__op_name(n->op), s->nbytes,
                                loom__fmt_shape(sh, sizeof sh, t->ndim, t->shape));
                return fail(t, LOOM_ERR_NOMEM);
            }
        }
        /* Per input: its view, how it is converted when the kernel cannot
         * read it as stored, and the converted copy (freed after the
         * kernel). */
        loom__tview inline_views[LOOM__INLINE_INPUTS];
        loom__conv inline_conv[LOOM__INLINE_INPUTS];
        void *inline_tmp[LOOM__INLINE_INPUTS] = {0};
        loom__tview *views = inline_views;
        loom__conv *conv = inline_conv;
        void **tmp = inline_tmp;
        if (n->n_in > LOOM__INLINE_INPUTS) {
            views = malloc(sizeof *views * (size_t)n->n_in);
            conv = malloc(sizeof *conv * (size_t)n->n_in);
            tmp = calloc((size_t)n->n_in, sizeof *tmp);
            if (!views || !conv || !tmp) {
                free(views);
                free(conv);
                free(tmp);
                loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory", loom__op_name(n->op));
                return fail(t, LOOM_ERR_NOMEM);
            }
        }
        for (int i = 0; i < n->n_in; i++) {
            input_view(n->in[i], &views[i]);
            conv[i].kind = LOOM__CONV_NONE;
        }
        int out_layout = LOOM__LAYOUT_PLAIN;
        loom__exec x = {
            .call = {.op = n->op, .attrs = &n->attrs, .n_in = n->n_in, .in = views, .budget = t->ctx->num_threads,
                     .out_layout = t->ctx->keep_blocked && whole_4d(t) ? &out_layout : NULL},
            .mem = s->mem,
            .want = w ? loom__node_want_alone(t, loom__worker_cores_total(w), t->alone) : 1,
        };
        view_of(t, &x.call.out);
        /* Blocked inputs go to a kernel that takes them as they are, else
         * they are converted to plain (with the node's threads) and the
         * kernel picked again. */
        x.k = loom__registry_find(t->ctx->backend, &x.call, &x.bname);
        /* Mixed layouts (relu_bwd of a blocked y and a plain dy, a max-pool
         * backward whose dy came through a flatten): first try the plain
         * activations blocked too, which keeps the chain blocked. */
        bool convert = false;
        if (!x.k && loom__kcall_has_blocked(&x.call)) {
            convert = true;
            if (!try_blocked(t, &x.call, conv, &x.k, &x.bname))
                for (int i = 0; i < n->n_in; i++)
                    if (views[i].layout != LOOM__LAYOUT_PLAIN) conv_to_plain(n->in[i], &conv[i]);
        }
        if (convert) x.conv = conv;
        loom_status st = LOOM_OK;
        if (!x.k && !convert) {
            x.k = loom__registry_pick(t->ctx->backend, &x.call, &x.bname);
            if (!x.k) st = LOOM_ERR_BACKEND;
        }
        if (st == LOOM_OK) st = loom__exec_run(t->ctx, w, &x, tmp);
        if (st == LOOM_OK && out_layout != LOOM__LAYOUT_PLAIN) {
            /* The consumers (running after this node's release store) and
             * the user's eval see it. */
            t->storage->layout = out_layout;
            memcpy(t->storage->dims, t->shape, sizeof t->storage->dims);
        }
        if (st == LOOM_OK && cap) st = loom__capture_node(cap, t, &x);
        if (views != inline_views) {
            free(views);
            free(conv);
            free(tmp);
        }
        if (st != LOOM_OK) return fail(t, st);
    } else if (cap) {
        loom_status st = loom__capture_node(cap, t, NULL);
        if (st != LOOM_OK) return fail(t, st);
    }
    if (!t->grad_fn) loom__node_release_inputs(t); /* else backward needs them */
    atomic_fetch_add_explicit(&my_count(t->ctx, w)->nodes_run, 1, memory_order_relaxed);
    atomic_store_explicit(&t->state, LOOM__READY, memory_order_release);
    return LOOM_OK;
}

loom_status loom_profile_start(loom_ctx *ctx)
{
    if (!ctx) return loom__set_error(LOOM_ERR_INVALID_ARG, "profile_start: NULL context");
    for (int op = 0; op < LOOM_OP_COUNT; op++) {
        atomic_store_explicit(&ctx->prof_ns[op], 0, memory_order_relaxed);
        atomic_store_explicit(&ctx->prof_calls[op], 0, memory_order_relaxed);
        atomic_store_explicit(&ctx->prof_flops[op], 0, memory_order_relaxed);
    }
    atomic_store_explicit(&ctx->profile, true, memory_order_relaxed);
    return LOOM_OK;
}

loom_status loom_profile_stop(loom_ctx *ctx)
{
    if (!ctx) return loom__set_error(LOOM_ERR_INVALID_ARG, "profile_stop: NULL context");
    atomic_store_explicit(&ctx->profile, false, memory_order_relaxed);
    return LOOM_OK;
}

loom_status loom_profile_op(loom_ctx *ctx, const char *op, int64_t *calls, int64_t *ns, int64_t *flops)
{
    if (!ctx || !op) return loom__set_error(LOOM_ERR_INVALID_ARG, "profile_op: NULL %s", ctx ? "op name" : "context");
    for (int o = LOOM_OP_NONE + 1; o < LOOM_OP_COUNT; o++) {
        if (strcmp(loom__op_name((loom__op)o), op) != 0) continue;
        if (calls) *calls = atomic_load_explicit(&ctx->prof_calls[o], memory_order_relaxed);
        if (ns) *ns = atomic_load_explicit(&ctx->prof_ns[o], memory_order_relaxed);
        if (flops) *flops = atomic_load_explicit(&ctx->prof_flops[o], memory_order_relaxed);
        return LOOM_OK;
    }
    return loom__set_error(LOOM_ERR_INVALID_ARG, "profile_op: no op named \"%s\" (names as the profile prints them)",
                           op);
}

char *loom_profile_report(loom_ctx *ctx)
{
    if (!ctx) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "profile_report: NULL context");
        return NULL;
    }
    int64_t total = 0, total_flops = 0, ns[LOOM_OP_COUNT];
    int order[LOOM_OP_COUNT], n = 0;
    for (int op = 0; op < LOOM_OP_COUNT; op++) {
        ns[op] = atomic_load_explicit(&ctx->prof_ns[op], memory_order_relaxed);
        total += ns[op];
        total_flops += atomic_load_explicit(&ctx->prof_flops[op], memory_order_relaxed);
        if (atomic_load_explicit(&ctx->prof_calls[op], memory_order_relaxed)) order[n++] = op;
    }
    /* Insertion sort, longest first (a few dozen ops at most). */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && ns[order[j]] > ns[order[j - 1]]; j--) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    const size_t line = 96, cap = line * (size_t)(n + 3);
    char *out = malloc(cap);
    if (!out) {
        loom__set_error(LOOM_ERR_NOMEM, "profile_report: out of memory");
        return NULL;
    }
    /* GFLOP/s per op: its FLOPs over its own kernel time (a rate per
     * kernel, not per second of wall time; see backends/flops.c). */
    size_t len = (size_t)snprintf(out, cap, "loom profile: %.3f s in kernels, %.2f GFLOP\n%-24s %9s %11s %7s %9s\n",
                                  (double)total * 1e-9, (double)total_flops * 1e-9, "op", "calls", "total ms", "share",
                                  "GFLOP/s");
    for (int i = 0; i < n && len < cap; i++) {
        const int op = order[i];
        const int64_t calls = atomic_load_explicit(&ctx->prof_calls[op], memory_order_relaxed);
        const int64_t fl = atomic_load_explicit(&ctx->prof_flops[op], memory_order_relaxed);
        char rate[16] = "-";
        if (fl && ns[op]) snprintf(rate, sizeof rate, "%.1f", (double)fl / (double)ns[op]);
        len += (size_t)snprintf(out + len, cap - len, "%-24s %9lld %11.2f %6.1f%% %9s\n", loom__op_name((loom__op)op),
                                (long long)calls, (double)ns[op] * 1e-6,
                                total ? 100.0 * (double)ns[op] / (double)total : 0.0, rate);
    }
    return out;
}

static loom_status report_failed(loom_tensor *t)
{
    return loom__set_error(t->err, "%s", t->errmsg ? t->errmsg : loom_status_str(t->err));
}

typedef struct frame {
    loom_tensor *t;
    int next;
} frame;

loom_status loom__dag_order(loom_tensor *root, loom__edge_fn follow, loom_tensor ***order_out, size_t *n_out)
{
    return loom__dag_order_many(&root, 1, follow, order_out, n_out);
}

loom_status loom__dag_order_many(loom_tensor *const *roots, size_t k, loom__edge_fn follow, loom_tensor ***order_out,
                                 size_t *n_out)
{
    loom_ctx *ctx = roots[0]->ctx;
    uint64_t epoch = ++ctx->epoch;
    size_t cap = 64, n = 0, scap = 64, sp = 0;
    loom_tensor **order = malloc(sizeof *order * cap);
    frame *stack = malloc(sizeof *stack * scap);
    if (!order || !stack) goto nomem;
    for (size_t r = 0; r < k; r++) {
        if (roots[r]->mark == epoch) continue; /* reached from an earlier root */
        roots[r]->mark = epoch;
        stack[sp++] = (frame){roots[r], 0};
        /* Iterative DFS (an unrolled RNN is thousands of nodes deep): the stack
         * holds (tensor, next input to visit); a tensor is appended once all
         * the inputs it follows are. */
        while (sp) {
            frame *f = &stack[sp - 1];
            loom_tensor *t = f->t;
            if (f->next < t->node.n_in) {
                loom_tensor *in = t->node.in[f->next++];
                if (in->mark == epoch) continue;
                loom_status st = LOOM_OK;
                if (!follow(t, in, &st)) {
                    if (st == LOOM_OK) continue;
                    free(order);
                    free(stack);
                    return st;
                }
                in->mark = epoch;
                if (sp == scap) {
                    frame *g = realloc(stack, sizeof *stack * (scap *= 2));
                    if (!g) goto nomem;
                    stack = g;
                }
                stack[sp++] = (frame){in, 0};
                continue;
            }
            sp--;
            if (n == cap) {
                loom_tensor **g = realloc(order, sizeof *order * (cap *= 2));
                if (!g) goto nomem;
                order = g;
            }
            order[n++] = t;
        }
    }
    free(stack);
    *order_out = order;
    *n_out = n;
    return LOOM_OK;
nomem:
    free(order);
    free(stack);
    return loom__set_error(LOOM_ERR_NOMEM, "out of memory ordering the graph");
}

/* Evaluation follows pending inputs, and stops at a failed one. */
static bool follow_pending(loom_tensor *from, loom_tensor *in, loom_status *st)
{
    (void)from;
    int state = atomic_load_explicit(&in->state, memory_order_acquire);
    if (state == LOOM__FAILED) *st = report_failed(in);
    return state == LOOM__PENDING;
}

/* Runs a walk's nodes (the epoch the walk just used): on the scheduler, or
 * one after another on this thread; a capture in progress records them. */
static loom_status run_order(loom_ctx *ctx, loom_tensor **order, size_t n)
{
    loom_status s = LOOM_OK;
    if (ctx->capture) s = loom__capture_segment(ctx->capture, order, n, ctx->epoch);
    if (s != LOOM_OK) return s;
    if (ctx->num_workers > 1 && n > 1) s = loom__run_parallel(ctx, order, n);
    else
        for (size_t i = 0; i < n && s == LOOM_OK; i++) s = loom__run_node(order[i], NULL);
    if (s != LOOM_OK && ctx->capture) loom__capture_failed(ctx->capture);
    return s;
}

loom_status loom__eval_many(loom_tensor *const *ts, size_t k)
{
    /* The pending ones, and the first failure among them. */
    loom_tensor **roots = malloc(sizeof *roots * (k ? k : 1));
    if (!roots) return loom__set_error(LOOM_ERR_NOMEM, "out of memory evaluating");
    size_t m = 0;
    loom_status s = LOOM_OK;
    for (size_t i = 0; i < k && s == LOOM_OK; i++) {
        int st = atomic_load_explicit(&ts[i]->state, memory_order_acquire);
        if (st == LOOM__FAILED) s = report_failed(ts[i]);
        else if (st == LOOM__PENDING) roots[m++] = ts[i];
    }
    loom_tensor **order = NULL;
    size_t n = 0;
    if (s == LOOM_OK && m) s = loom__dag_order_many(roots, m, follow_pending, &order, &n);
    free(roots);
    if (s != LOOM_OK || !m) return s;
    s = run_order(order[0]->ctx, order, n);
    free(order);
    return s;
}

loom_status loom__eval(loom_tensor *t)
{
    int st = atomic_load_explicit(&t->state, memory_order_acquire);
    if (st == LOOM__READY) return LOOM_OK;
    if (st == LOOM__FAILED) return report_failed(t);
    loom_tensor **order = NULL;
    size_t n = 0;
    loom_status s = loom__dag_order(t, follow_pending, &order, &n);
    if (s != LOOM_OK) return s;
    s = run_order(t->ctx, order, n);
    free(order);
    return s;
}
