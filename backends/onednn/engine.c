/*
 * backends/onednn/engine.c - the oneDNN engine, per-thread streams and
 * scratch buffers, the OpenMP team size, error translation, and running
 * programs (see onednn.h).
 *
 * Lifetime: the engine is created once (pthread_once). Each thread that runs
 * a oneDNN kernel gets a small state block (its stream) on first use, and
 * its scratch from runtime/scratch.h; a pthread key destructor frees the
 * block when the thread exits. The thread that calls exit() never runs key
 * destructors, so an atexit handler (registered with the engine) frees that
 * thread's block, destroys every cached program and then the engine:
 * valgrind sees no leak. libdnnl's own
 * static objects were registered before ours and are destroyed after.
 */
#include "config.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <dnnl_debug.h>

#include "backends/onednn/onednn.h"
#include "backends/registry.h"
#include "runtime/error.h"
#include "runtime/scratch.h"

/* ---- engine ------------------------------------------------------------------ */

static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t engine;
static dnnl_status_t engine_status = dnnl_success;
static pthread_key_t tls_key;
static bool tls_key_ok;

typedef struct thread_state {
    dnnl_stream_t stream;
} thread_state;

static _Thread_local thread_state *tls_state;

static void thread_state_free(thread_state *t)
{
    if (!t) return;
    if (t->stream) dnnl_stream_destroy(t->stream);
    free(t);
}

static void thread_exit_destructor(void *p)
{
    thread_state_free(p);
    tls_state = NULL;
}

static void cleanup_at_exit(void)
{
    if (tls_key_ok) pthread_setspecific(tls_key, NULL);
    thread_state_free(tls_state);
    tls_state = NULL;
    loom__onednn_cache_clear();
    loom__onednn_wcache_clear();
    if (engine) dnnl_engine_destroy(engine);
    engine = NULL;
}

static void engine_init(void)
{
    tls_key_ok = pthread_key_create(&tls_key, thread_exit_destructor) == 0;
    engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0);
    if (engine_status != dnnl_success) engine = NULL;
    atexit(cleanup_at_exit);
}

dnnl_engine_t loom__onednn_engine(void)
{
    pthread_once(&engine_once, engine_init);
    if (!engine)
        loom__set_error(LOOM_ERR_BACKEND, "onednn: dnnl_engine_create failed: %s", dnnl_status2str(engine_status));
    return engine;
}

bool loom__onednn_available(void)
{
    pthread_once(&engine_once, engine_init);
    return engine != NULL && tls_key_ok;
}

/* ---- ISA ------------------------------------------------------------------- */

/* oneDNN's JIT ISA on this CPU, read once: dnnl_get_effective_cpu_isa() is
 * what its kernels dispatch on (DNNL_MAX_CPU_ISA may lower it). The values
 * are nested bit sets, so "at least X" is (isa & X) == X. */
static atomic_int isa_read = -1;

static int effective_isa(void)
{
    int v = atomic_load_explicit(&isa_read, memory_order_relaxed);
    if (v < 0) {
        v = (int)dnnl_get_effective_cpu_isa();
        atomic_store_explicit(&isa_read, v, memory_order_relaxed);
    }
    return v;
}

bool loom__onednn_isa_avx512(void)
{
    const int want = (int)dnnl_cpu_isa_avx512_core;
    return (effective_isa() & want) == want;
}

const char *loom__onednn_isa_name(void)
{
    static const struct {
        int isa;
        const char *name;
    } names[] = {
        {dnnl_cpu_isa_avx512_core_amx, "avx512_core_amx"}, {dnnl_cpu_isa_avx512_core_bf16, "avx512_core_bf16"},
        {dnnl_cpu_isa_avx512_core_vnni, "avx512_core_vnni"}, {dnnl_cpu_isa_avx512_core, "avx512_core"},
        {dnnl_cpu_isa_avx2_vnni, "avx2_vnni"}, {dnnl_cpu_isa_avx2, "avx2"},
        {dnnl_cpu_isa_avx, "avx"}, {dnnl_cpu_isa_sse41, "sse41"},
    };
    const int isa = effective_isa();
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((isa & names[i].isa) == names[i].isa) return names[i].name;
    return "none";
}

static thread_state *state(const loom__kcall *call)
{
    if (tls_state) return tls_state;
    if (!loom__onednn_engine()) return NULL;
    thread_state *t = calloc(1, sizeof *t);
    if (!t) {
        loom__set_error(LOOM_ERR_NOMEM, "%s (onednn): out of memory", loom__op_name(call->op));
        return NULL;
    }
    if (!tls_key_ok || pthread_setspecific(tls_key, t) != 0) {
        free(t);
        loom__set_error(LOOM_ERR_BACKEND, "%s (onednn): no thread-local storage", loom__op_name(call->op));
        return NULL;
    }
    tls_state = t;
    return t;
}

dnnl_stream_t loom__onednn_stream(const loom__kcall *call)
{
    thread_state *t = state(call);
    if (!t) return NULL;
    if (!t->stream) {
        dnnl_status_t st = dnnl_stream_create(&t->stream, engine, dnnl_stream_default_flags);
        if (st != dnnl_success) {
            t->stream = NULL;
            loom__onednn_error(call, "dnnl_stream_create", st);
            return NULL;
        }
    }
    return t->stream;
}

void *loom__onednn_scratch(const loom__kcall *call, size_t bytes)
{
    /* The runtime's per-thread grow-only buffer, in oneDNN's own slot. */
    void *p = loom__scratch(LOOM__SCRATCH_ONEDNN, bytes);
    if (!p)
        loom__set_error(LOOM_ERR_NOMEM, "%s (onednn): out of memory allocating %zu bytes of scratch",
                        loom__op_name(call->op), bytes);
    return p;
}

/* ---- threads ----------------------------------------------------------------- */

int loom__onednn_threads_enter(int nthreads)
{
#ifdef _OPENMP
    if (nthreads < 1) nthreads = 1;
    int prev = omp_get_max_threads();
    if (prev != nthreads) omp_set_num_threads(nthreads);
    return prev;
#else
    (void)nthreads;
    return 1;
#endif
}

void loom__onednn_threads_leave(int previous)
{
#ifdef _OPENMP
    if (omp_get_max_threads() != previous) omp_set_num_threads(previous);
#else
    (void)previous;
#endif
}

/* ---- errors ---------------------------------------------------------------------- */

/* The names of an op's inputs and output, for messages. */
static const char *const *arg_names(loom__op op, const char **out_name)
{
    static const char *const conv[] = {"x", "w", "bias"}, *const conv_bd[] = {"dy", "w"},
                             *const conv_bw[] = {"x", "dy"}, *const pool[] = {"x"}, *const maxb[] = {"dy", "x"},
                             *const avgb[] = {"dy"}, *const bnf[] = {"x", "stats", "gamma", "beta"},
                             *const bnd[] = {"x", "dy", "stats", "gamma"}, *const bnp[] = {"x", "dy", "stats"},
                             *const smb[] = {"y", "dy"}, *const generic[] = {"x", "in1", "in2", "in3"};
    *out_name = "y";
    switch (op) {
    case LOOM_OP_CONV2D: return conv;
    case LOOM_OP_CONV2D_BWD_DATA: *out_name = "dx"; return conv_bd;
    case LOOM_OP_CONV2D_BWD_WEIGHT: *out_name = "dw"; return conv_bw;
    case LOOM_OP_MAX_POOL2D:
    case LOOM_OP_AVG_POOL2D: return pool;
    case LOOM_OP_MAX_POOL2D_BWD: *out_name = "dx"; return maxb;
    case LOOM_OP_AVG_POOL2D_BWD: *out_name = "dx"; return avgb;
    case LOOM_OP_BN_FWD: return bnf;
    case LOOM_OP_BN_BWD_DATA: *out_name = "dx"; return bnd;
    case LOOM_OP_BN_BWD_PARAMS: *out_name = "dparams"; return bnp;
    case LOOM_OP_SOFTMAX_BWD:
    case LOOM_OP_LOG_SOFTMAX_BWD:
    case LOOM_OP_RELU_BWD: *out_name = "dx"; return smb;
    default: return generic;
    }
}

loom_status loom__onednn_error(const loom__kcall *call, const char *what, dnnl_status_t st)
{
    const char *out_name;
    const char *const *names = arg_names(call->op, &out_name);
    char shapes[400];
    size_t len = 0;
    shapes[0] = '\0';
    for (int i = 0; i < call->n_in && i < 4; i++) {
        char sh[LOOM__SHAPE_STR_MAX];
        loom__fmt_shape(sh, sizeof sh, call->in[i].ndim, call->in[i].shape);
        int n = snprintf(shapes + len, sizeof shapes - len, "%s%s %s", i ? " " : "", names[i], sh);
        if (n < 0 || (size_t)n >= sizeof shapes - len) break;
        len += (size_t)n;
    }
    char sh[LOOM__SHAPE_STR_MAX];
    loom__fmt_shape(sh, sizeof sh, call->out.ndim, call->out.shape);
    if (len < sizeof shapes) snprintf(shapes + len, sizeof shapes - len, " -> %s %s", out_name, sh);
    return loom__set_error(st == dnnl_out_of_memory ? LOOM_ERR_NOMEM : LOOM_ERR_BACKEND,
                           "%s (onednn): %s failed: %s for %s (%d thread%s)", loom__op_name(call->op), what,
                           dnnl_status2str(st), shapes, call->nthreads, call->nthreads == 1 ? "" : "s");
}

dnnl_primitive_attr_t loom__onednn_attr(const loom__kcall *call, bool relu)
{
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_status_t st = dnnl_primitive_attr_create(&attr);
    if (st != dnnl_success) {
        loom__onednn_error(call, "dnnl_primitive_attr_create", st);
        return NULL;
    }
    st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (st != dnnl_success) goto fail;
    if (relu) {
        st = dnnl_post_ops_create(&po);
        if (st == dnnl_success) st = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
        if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(attr, po);
        if (po) dnnl_post_ops_destroy(po);
        if (st != dnnl_success) goto fail;
    }
    return attr;
fail:
    loom__onednn_error(call, "setting primitive attributes", st);
    dnnl_primitive_attr_destroy(attr);
    return NULL;
}

/* ---- helpers ---------------------------------------------------------------------- */

bool loom__onednn_plain_f32(const loom__tview *v)
{
    if (v->dtype != LOOM_FLOAT32 || !v->data || v->ndim < 0 || v->ndim > LOOM_MAX_DIMS) return false;
    int64_t expect = 1;
    for (int d = v->ndim - 1; d >= 0; d--) {
        if (v->shape[d] <= 0) return false;
        if (v->shape[d] != 1 && v->strides[d] != expect) return false;
        expect *= v->shape[d];
    }
    return true;
}

dnnl_status_t loom__onednn_plain_md(dnnl_memory_desc_t *md, int ndim, const int64_t *dims)
{
    static const dnnl_format_tag_t tags[] = {dnnl_format_tag_undef, dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd, dnnl_abcde};
    dnnl_dims_t d;
    if (ndim < 1 || ndim > 5) return dnnl_invalid_arguments;
    for (int i = 0; i < ndim; i++) d[i] = dims[i];
    return dnnl_memory_desc_init_by_tag(md, ndim, d, dnnl_f32, tags[ndim]);
}

dnnl_status_t loom__onednn_view_md(dnnl_memory_desc_t *md, const loom__tview *v)
{
    if (v->layout == LOOM__LAYOUT_PLAIN) return loom__onednn_plain_md(md, v->ndim, v->shape);
    if (v->ndim != 4) return dnnl_invalid_arguments;
    const dnnl_dims_t d = {v->shape[0], v->shape[1], v->shape[2], v->shape[3]};
    return dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32,
                                        v->layout == LOOM__LAYOUT_NCHW8C ? dnnl_nChw8c : dnnl_nChw16c);
}

int loom__onednn_md_layout(const dnnl_memory_desc_t *md)
{
    if (md->ndims != 4 || md->data_type != dnnl_f32) return LOOM__LAYOUT_PLAIN;
    static const struct {
        int layout, block;
        dnnl_format_tag_t tag;
    } cand[] = {{LOOM__LAYOUT_NCHW8C, 8, dnnl_nChw8c}, {LOOM__LAYOUT_NCHW16C, 16, dnnl_nChw16c}};
    for (size_t i = 0; i < sizeof cand / sizeof cand[0]; i++) {
        dnnl_memory_desc_t b;
        if (md->dims[1] % cand[i].block) continue;
        if (dnnl_memory_desc_init_by_tag(&b, 4, md->dims, dnnl_f32, cand[i].tag) != dnnl_success) continue;
        if (dnnl_memory_desc_equal(md, &b)) return cand[i].layout;
    }
    return LOOM__LAYOUT_PLAIN;
}

bool loom__onednn_layout_ok(const loom__tview *v)
{
    switch (v->layout) {
    case LOOM__LAYOUT_PLAIN: return true;
    case LOOM__LAYOUT_NCHW8C:
    case LOOM__LAYOUT_NCHW16C: return v->ndim == 4 && v->shape[1] % loom__layout_block(v->layout) == 0;
    default: return false;
    }
}

bool loom__onednn_has_nonfinite(const float *x, int64_t n, bool also_ninf, bool also_pinf)
{
    /* Branch-free blocks (vectorised), checked between blocks. */
    enum { BLOCK = 4096 };
    for (int64_t b = 0; b < n; b += BLOCK) {
        const int64_t e = n - b < BLOCK ? n - b : BLOCK;
        int bad = 0;
        for (int64_t i = 0; i < e; i++) {
            const float v = x[b + i];
            bad |= (v != v) | (also_ninf & (v == -INFINITY)) | (also_pinf & (v == INFINITY));
        }
        if (bad) return true;
    }
    return false;
}

/* ---- programs ---------------------------------------------------------------------- */

loom_status loom__onednn_add_step(const loom__kcall *call, loom__onednn_prim *p, const_dnnl_primitive_desc_t pd,
                                  int nargs, const loom__onednn_arg *args)
{
    LOOM_ASSERT(p->nsteps < LOOM__ONEDNN_MAX_STEPS && nargs <= LOOM__ONEDNN_MAX_ARGS);
    loom__onednn_step *s = &p->step[p->nsteps];
    memset(s, 0, sizeof *s);
    s->wcache = -1;
    dnnl_status_t st = dnnl_primitive_create(&s->prim, pd);
    if (st != dnnl_success) {
        s->prim = NULL;
        return loom__onednn_error(call, "dnnl_primitive_create", st);
    }
    p->nsteps++;
    s->mems = calloc(1, sizeof *s->mems); /* may stay NULL: execute then makes memories per call */
    if (s->mems) atomic_flag_clear(&s->mems->busy);
    st = dnnl_primitive_get_primitive_desc(s->prim, &s->pd);
    if (st != dnnl_success) return loom__onednn_error(call, "dnnl_primitive_get_primitive_desc", st);
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(s->pd, dnnl_query_scratchpad_md, 0);
    s->scratchpad_bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    s->nargs = nargs;
    memcpy(s->args, args, sizeof *args * (size_t)nargs);
    return LOOM_OK;
}

int loom__onednn_add_tmp(loom__onednn_prim *p, size_t bytes)
{
    LOOM_ASSERT(p->ntmps < LOOM__ONEDNN_MAX_TMPS);
    p->tmp_bytes[p->ntmps] = bytes;
    return LOOM__ONEDNN_SLOT_TMP0 + p->ntmps++;
}

#define SERIAL_REORDER_BYTES (32u << 10)

loom_status loom__onednn_add_reorder(const loom__kcall *call, loom__onednn_prim *p, int from,
                                     const dnnl_memory_desc_t *from_md, int to, const dnnl_memory_desc_t *to_md)
{
    dnnl_primitive_attr_t attr = loom__onednn_attr(call, false);
    if (!attr) return loom_last_status();
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_status_t st = dnnl_reorder_primitive_desc_create(&rpd, from_md, engine, to_md, engine, attr);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) return loom__onednn_error(call, "dnnl_reorder_primitive_desc_create", st);
    const loom__onednn_arg args[2] = {{DNNL_ARG_FROM, from, 0}, {DNNL_ARG_TO, to, 0}};
    loom_status ls = loom__onednn_add_step(call, p, rpd, 2, args);
    dnnl_primitive_desc_destroy(rpd);
    /* Conv1's 32x1x3x3 weight-gradient reorder: 4.5 us with a 2-thread
     * team, 2 us alone (ONEDNN_VERBOSE's times). The reorders take their
     * thread count when they run, so the step only sets it. */
    if (ls == LOOM_OK) p->step[p->nsteps - 1].serial = dnnl_memory_desc_get_size(to_md) <= SERIAL_REORDER_BYTES;
    return ls;
}

int loom__onednn_input_slot(const loom__kcall *call, loom__onednn_prim *p, int slot, const dnnl_memory_desc_t *user,
                            const dnnl_memory_desc_t *chosen)
{
    if (dnnl_memory_desc_equal(user, chosen)) return slot;
    const int tmp = loom__onednn_add_tmp(p, dnnl_memory_desc_get_size(chosen));
    if (loom__onednn_add_reorder(call, p, slot, user, tmp, chosen) != LOOM_OK) return -1;
    return tmp;
}

int loom__onednn_weights_slot(const loom__kcall *call, loom__onednn_prim *p, int slot, const dnnl_memory_desc_t *user,
                              const dnnl_memory_desc_t *chosen)
{
    const int to = loom__onednn_input_slot(call, p, slot, user, chosen);
    if (to != slot && to >= 0 && slot < LOOM__ONEDNN_SLOT_OUT)
        p->step[p->nsteps - 1].wcache = slot - LOOM__ONEDNN_SLOT_IN0; /* the reorder just appended */
    return to;
}

int loom__onednn_output_slot(loom__onednn_prim *p, int slot, const dnnl_memory_desc_t *user,
                             const dnnl_memory_desc_t *chosen)
{
    if (dnnl_memory_desc_equal(user, chosen)) return slot;
    return loom__onednn_add_tmp(p, dnnl_memory_desc_get_size(chosen));
}

void loom__onednn_prim_layout(loom__onednn_prim *p)
{
    /* [scratchpad (shared by the steps, which run one after another)]
     * [tmp 0] [tmp 1] ..., each 64-byte aligned. */
    size_t off = 0;
    for (int i = 0; i < p->nsteps; i++)
        if (p->step[i].scratchpad_bytes > off) off = p->step[i].scratchpad_bytes;
    off = (off + 63) & ~(size_t)63;
    for (int t = 0; t < p->ntmps; t++) {
        p->tmp_offset[t] = off;
        off += (p->tmp_bytes[t] + 63) & ~(size_t)63;
    }
    p->scratch_bytes = off;
}

void loom__onednn_prim_destroy(loom__onednn_prim *p)
{
    for (int i = 0; i < p->nsteps; i++) {
        loom__onednn_step *s = &p->step[i];
        if (s->mems)
            for (int a = 0; a <= LOOM__ONEDNN_MAX_ARGS; a++)
                if (s->mems->m[a]) dnnl_memory_destroy(s->mems->m[a]);
        free(s->mems);
        s->mems = NULL;
        if (s->prim) dnnl_primitive_destroy(s->prim);
    }
    p->nsteps = 0;
}

loom_status loom__onednn_execute(const loom__kcall *call, const loom__onednn_prim *p)
{
    dnnl_stream_t stream = loom__onednn_stream(call);
    if (!stream) return loom_last_status();
    char *base = NULL;
    if (p->scratch_bytes) {
        base = loom__onednn_scratch(call, p->scratch_bytes);
        if (!base) return loom_last_status();
    }
    void *slots[LOOM__ONEDNN_NSLOTS] = {0};
    for (int i = 0; i < call->n_in && i < LOOM__ONEDNN_MAX_INS; i++) slots[LOOM__ONEDNN_SLOT_IN0 + i] = call->in[i].data;
    slots[LOOM__ONEDNN_SLOT_OUT] = call->out.data;
    for (int t = 0; t < p->ntmps; t++) slots[LOOM__ONEDNN_SLOT_TMP0 + t] = base + p->tmp_offset[t];
    if (p->prep) p->prep(call, p, slots);

    /* Weight reorders the weight cache serves or fills (wcache.c). */
    loom__onednn_wentry *pinned[LOOM__ONEDNN_MAX_STEPS] = {0};
    loom_status result = LOOM_OK;
    for (int i = 0; i < p->nsteps; i++) {
        const loom__onednn_step *s = &p->step[i];
        if (s->wcache >= 0 && s->wcache < call->n_in) {
            /* args[0] is the reorder's FROM (the input), args[1] its TO. */
            void *copy;
            bool ready;
            pinned[i] = loom__onednn_wcache_get(
                &call->in[s->wcache], dnnl_primitive_desc_query_md(s->pd, dnnl_query_src_md, 0),
                dnnl_primitive_desc_query_md(s->pd, dnnl_query_dst_md, 0), &copy, &ready);
            if (pinned[i]) {
                slots[s->args[1].slot] = copy;
                if (ready) continue;
            }
        }
        /* The step's own memory objects when no other node is running it
         * (loom__onednn_mems), else memories made for this call. */
        loom__onednn_mems *mc = NULL;
        if (s->mems && !atomic_flag_test_and_set_explicit(&s->mems->busy, memory_order_acquire)) mc = s->mems;
        dnnl_exec_arg_t args[LOOM__ONEDNN_MAX_ARGS + 1];
        int n = 0;
        dnnl_status_t st = dnnl_success;
        const char *what = "dnnl_memory_create";
        for (int a = 0; a <= s->nargs && st == dnnl_success; a++) {
            const bool scratch = a == s->nargs;
            if (scratch && !s->scratchpad_bytes) break;
            void *ptr = scratch ? base : (char *)slots[s->args[a].slot] + s->args[a].offset;
            args[n].arg = scratch ? DNNL_ARG_SCRATCHPAD : s->args[a].arg;
            if (mc && mc->m[a]) {
                what = "dnnl_memory_set_data_handle_v2";
                st = dnnl_memory_set_data_handle_v2(mc->m[a], ptr, stream);
                args[n].memory = mc->m[a];
            } else {
                const dnnl_memory_desc_t *md =
                    scratch ? dnnl_primitive_desc_query_md(s->pd, dnnl_query_scratchpad_md, 0)
                            : dnnl_primitive_desc_query_md(s->pd, dnnl_query_exec_arg_md, s->args[a].arg);
                st = dnnl_memory_create(&args[n].memory, md, engine, ptr);
                if (st == dnnl_success && mc) mc->m[a] = args[n].memory;
            }
            if (st == dnnl_success) n++;
        }
        if (st == dnnl_success) {
            what = "dnnl_primitive_execute";
            int threads = 0;
            if (s->serial) threads = loom__onednn_threads_enter(1);
            st = dnnl_primitive_execute(s->prim, stream, n, args);
            if (s->serial) loom__onednn_threads_leave(threads);
        }
        if (mc)
            atomic_flag_clear_explicit(&mc->busy, memory_order_release);
        else
            for (int a = 0; a < n; a++) dnnl_memory_destroy(args[a].memory);
        if (st != dnnl_success) {
            result = loom__onednn_error(call, what, st);
            break;
        }
    }
    if (result == LOOM_OK) {
        dnnl_status_t st = dnnl_stream_wait(stream);
        if (st != dnnl_success) result = loom__onednn_error(call, "dnnl_stream_wait", st);
    }
    if (result == LOOM_OK && p->finish) p->finish(call, p, slots);
    /* Every step ran (or was served from the cache): the copies are made. */
    for (int i = 0; i < p->nsteps; i++) loom__onednn_wcache_release(pinned[i], result == LOOM_OK);
    return result;
}
