/*
 * backends/onednn/onednn.h - the oneDNN backend (internal).
 *
 * Built only when configure found oneDNN (LOOM_HAVE_ONEDNN). The backend runs
 * the CNN ops (convolution, pooling, batch norm, softmax, relu_bwd) and the
 * unary ops that oneDNN computes exactly as kernels.h specifies; everything
 * else, and every case a supports() function rejects, falls through to the
 * portable C backend.
 *
 * Pieces:
 *   engine.c  one CPU engine (pthread_once), a stream and a 64-byte aligned
 *             scratch buffer per thread, the OpenMP team size around oneDNN
 *             calls, dnnl_status_t -> loom_status translation;
 *   cache.c   a bounded LRU cache of built "programs" (below), keyed by op,
 *             shapes, attributes and thread count;
 *   conv.c, pool.c, norm.c, eltwise.c   the op builders and supports();
 *   onednn_backend.c   the kernel tables (see below).
 *
 * A program (loom__onednn_prim) is what one kernel call runs: a short list
 * of steps, each a oneDNN primitive with its arguments bound to "slots": the
 * call's inputs and output, or temporaries carved out of the calling thread's
 * scratch buffer (reorder targets, pooling workspace). Every primitive is
 * created with dnnl_scratchpad_mode_user: its scratchpad is the start of the
 * calling thread's scratch buffer, so one primitive can run on many threads
 * at once and on a thread other than the one that created it (with the
 * library-managed scratchpad of Debian's build that crashes).
 *
 * Threads: oneDNN (OpenMP runtime) sizes a primitive's team from the caller's
 * omp_get_max_threads() when the primitive is created, so every kernel sets
 * it to call->nthreads around building and executing (and restores it), and
 * the cache key includes nthreads.
 *
 * Layouts: convolutions let oneDNN choose its layouts (dnnl_format_tag_any).
 * An input that arrives blocked (nChw8c / nChw16c, backends/kernel.h) is
 * bound as it is when that is what the primitive chose, else reordered
 * inside the program; an output is written in the chosen blocked layout
 * when the call allows it (call->out_layout), so that consecutive oneDNN
 * nodes skip the reorders, else reordered to plain. Pooling and batch norm
 * take blocked inputs the same way (their JIT kernels need them). The
 * layouts of every step's arguments (and the max-pooling workspace) are
 * queried from the steps' descriptors (dnnl_query_exec_arg_md), not stored
 * twice.
 */
#ifndef LOOM_BACKENDS_ONEDNN_H
#define LOOM_BACKENDS_ONEDNN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dnnl.h>

#include "backends/kernel.h"

/* Two kernel tables over the same kernels (onednn_backend.c):
 *   loom__onednn_backend      for "auto": only the calls where oneDNN was
 *                             measured faster than ref on plain layouts
 *                             (convolutions, softmax over the innermost
 *                             dim, sqrt); LOOM_ONEDNN_OPS (or
 *                             loom__onednn_set_ops) overrides it: "all"
 *                             widens it to the second table's set, a list
 *                             of op names adds ops or, with '-', drops them;
 *   loom__onednn_backend_all  for "onednn": every call oneDNN computes
 *                             exactly as kernels.h specifies. */
extern const loom__backend loom__onednn_backend;
extern const loom__backend loom__onednn_backend_all;
/* spec as LOOM_ONEDNN_OPS; NULL or "": the measured defaults. Replaces the
 * environment's choice; not thread-safe against running kernels. */
void loom__onednn_set_ops(const char *spec);

/* ---- wcache.c: reordered weights kept between calls ------------------------ */

typedef struct loom__onednn_wentry loom__onednn_wentry;
/* For a reorder of input `in` (layout `from`) into `to`: NULL when there is
 * nothing cached or to cache (reorder into the program's temporary as
 * usual); else a pinned entry with *buf its copy, filled (*ready: skip the
 * reorder) or to be filled by the reorder now. Release it when the program
 * has run. */
loom__onednn_wentry *loom__onednn_wcache_get(const loom__tview *in, const dnnl_memory_desc_t *from,
                                             const dnnl_memory_desc_t *to, void **buf, bool *ready);
/* Unpins e; `filled`: the program ran, so a copy it was to fill is made.
 * NULL: no-op. */
void loom__onednn_wcache_release(loom__onednn_wentry *e, bool filled);
/* Lookups that skipped a reorder, copies filled, bytes held. */
void loom__onednn_wcache_stats(int64_t *hits, int64_t *fills, int64_t *bytes);
/* Byte limit, in place of LOOM_ONEDNN_WEIGHT_CACHE_MB (0: off; -1: the
 * environment's again). */
void loom__onednn_wcache_set_limit(int64_t bytes);
/* Frees everything; no program may be running. */
void loom__onednn_wcache_clear(void);

/* ---- engine.c ------------------------------------------------------------ */

/* The global CPU engine, created on first use; NULL (and the error set) if
 * oneDNN could not create it. */
dnnl_engine_t loom__onednn_engine(void);

/* True when the engine exists (supports() functions ask this first). */
bool loom__onednn_available(void);

/* oneDNN's effective JIT ISA on this CPU (read once): whether it has
 * avx512_core (auto's choices differ there, onednn_backend.c), and its name
 * ("avx512_core_amx", "avx2", ...) for loom info. */
bool loom__onednn_isa_avx512(void);
const char *loom__onednn_isa_name(void);

/* The calling thread's stream (created on first use), or NULL with the error
 * set. */
dnnl_stream_t loom__onednn_stream(const loom__kcall *call);

/* The calling thread's scratch buffer, grown to at least `bytes` (64-byte
 * aligned; contents are not preserved when it grows). NULL with a
 * LOOM_ERR_NOMEM error naming the call's op on failure. Freed when the
 * thread exits, and for the thread that runs exit() by an atexit handler. */
void *loom__onednn_scratch(const loom__kcall *call, size_t bytes);

/* Sets the calling thread's OpenMP team size to nthreads (< 1 means 1) and
 * returns the previous value, for loom__onednn_threads_leave. */
int loom__onednn_threads_enter(int nthreads);
void loom__onednn_threads_leave(int previous);

/* Sets the error for a failed dnnl call and returns its status:
 * "conv2d (onednn): dnnl_primitive_desc_create failed: unimplemented for
 * x [..] w [..] -> y [..]". dnnl_out_of_memory gives LOOM_ERR_NOMEM, every
 * other failure LOOM_ERR_BACKEND. */
loom_status loom__onednn_error(const loom__kcall *call, const char *what, dnnl_status_t st);

/* The primitive attributes every Loom primitive is created with (user
 * scratchpad; relu post-op when `relu`). Caller destroys. NULL on failure
 * (error set). */
dnnl_primitive_attr_t loom__onednn_attr(const loom__kcall *call, bool relu);

/* ---- programs --------------------------------------------------------------- */

/* Slots a step argument can bind: the call's inputs, its output, temporaries. */
enum {
    LOOM__ONEDNN_SLOT_IN0 = 0, /* in[0] .. in[LOOM__ONEDNN_MAX_INS - 1] */
    LOOM__ONEDNN_MAX_INS = 10, /* the RNN layer's backward has 9 */
    LOOM__ONEDNN_SLOT_OUT = LOOM__ONEDNN_MAX_INS,
    LOOM__ONEDNN_SLOT_TMP0 = LOOM__ONEDNN_SLOT_OUT + 1, /* temporaries 0 .. LOOM__ONEDNN_MAX_TMPS - 1 */
    LOOM__ONEDNN_MAX_TMPS = 12,
    LOOM__ONEDNN_NSLOTS = LOOM__ONEDNN_SLOT_TMP0 + LOOM__ONEDNN_MAX_TMPS,
};

#define LOOM__ONEDNN_MAX_STEPS 8
#define LOOM__ONEDNN_MAX_ARGS 20

typedef struct loom__onednn_arg {
    int arg;       /* DNNL_ARG_* */
    int slot;      /* LOOM__ONEDNN_SLOT_* */
    size_t offset; /* bytes into the slot (batch norm's variance row) */
} loom__onednn_arg;

/* A step's memory objects, one per argument plus the scratchpad, created
 * on the step's first run and re-pointed at the call's buffers
 * (dnnl_memory_set_data_handle_v2) on later runs: creating, querying and
 * destroying them on every call cost about 3 us per node (1 thread, conv
 * backward-weight with its weight reorder; perf). A cached program can
 * run in two nodes at once: whoever takes `busy` uses these, the other
 * makes its own for that call. Owned by the step. */
typedef struct loom__onednn_mems {
    atomic_flag busy;
    dnnl_memory_t m[LOOM__ONEDNN_MAX_ARGS + 1]; /* [nargs]: the scratchpad; NULL: not made yet */
} loom__onednn_mems;

typedef struct loom__onednn_step {
    dnnl_primitive_t prim;
    const_dnnl_primitive_desc_t pd; /* owned by prim; memory descs are queried from it */
    int nargs;
    loom__onednn_arg args[LOOM__ONEDNN_MAX_ARGS];
    size_t scratchpad_bytes; /* dnnl_query_scratchpad_md's size */
    /* >= 0: this step reorders input `wcache` (weights) into a temporary,
     * and the weight cache (wcache.c) may hold the result already; -1. */
    int wcache;
    /* A reorder small enough that OpenMP's fork and join cost more than
     * the copy (a weight's few thousand floats): run by the calling thread
     * alone. */
    bool serial;
    loom__onednn_mems *mems; /* NULL if it could not be allocated: made per call */
} loom__onednn_step;

typedef struct loom__onednn_prim {
    int nsteps;
    int main_step; /* the op itself (the others are reorders / a recomputed forward) */
    loom__onednn_step step[LOOM__ONEDNN_MAX_STEPS];
    int ntmps;
    size_t tmp_bytes[LOOM__ONEDNN_MAX_TMPS];
    size_t tmp_offset[LOOM__ONEDNN_MAX_TMPS]; /* set by loom__onednn_prim_layout */
    size_t scratch_bytes;                     /* max scratchpad + temporaries */
    /* The layout the program writes the call's output in (loom__layout):
     * blocked only when built for a call with out_layout set. */
    int out_layout;
    /* Optional: fills temporaries before the steps run (batch norm's unit
     * gamma, the RNN's summed biases and zeroed gradient buffers), and
     * finishes the output after they all ran (the RNN's gate orders and
     * split biases). slots[] holds every slot's address (temporaries' sizes
     * are in tmp_bytes). */
    void (*prep)(const loom__kcall *call, const struct loom__onednn_prim *p, void *const *slots);
    void (*finish)(const loom__kcall *call, const struct loom__onednn_prim *p, void *const *slots);
} loom__onednn_prim;

/* Appends a step running pd's primitive (created here); the step takes
 * ownership of nothing: pd stays the caller's. Returns LOOM_OK or the
 * translated error. */
loom_status loom__onednn_add_step(const loom__kcall *call, loom__onednn_prim *p, const_dnnl_primitive_desc_t pd,
                                  int nargs, const loom__onednn_arg *args);

/* Adds a temporary of `bytes`; returns its slot. */
int loom__onednn_add_tmp(loom__onednn_prim *p, size_t bytes);

/* Appends a reorder step from slot `from` (layout from_md) to slot `to`
 * (layout to_md). */
loom_status loom__onednn_add_reorder(const loom__kcall *call, loom__onednn_prim *p, int from,
                                     const dnnl_memory_desc_t *from_md, int to, const dnnl_memory_desc_t *to_md);

/* The slot an op should read for the user input in `slot` (plain layout
 * `user`) when its primitive descriptor chose layout `chosen`: `slot` itself
 * when they match, else a new temporary filled by a reorder step appended
 * now. -1 (error set) on failure. */
int loom__onednn_input_slot(const loom__kcall *call, loom__onednn_prim *p, int slot, const dnnl_memory_desc_t *user,
                            const dnnl_memory_desc_t *chosen);

/* As loom__onednn_input_slot, for an input that usually stays the same
 * from call to call (weights): the reorder it appends may be served from
 * the weight cache (wcache.c) when the input's contents stamp repeats. */
int loom__onednn_weights_slot(const loom__kcall *call, loom__onednn_prim *p, int slot, const dnnl_memory_desc_t *user,
                              const dnnl_memory_desc_t *chosen);

/* The slot an op should write for the user output in `slot`: `slot` itself
 * when the layouts match, else a new temporary; the caller then appends
 * loom__onednn_add_reorder(tmp -> slot) after the op's step. */
int loom__onednn_output_slot(loom__onednn_prim *p, int slot, const dnnl_memory_desc_t *user,
                             const dnnl_memory_desc_t *chosen);

/* Computes temporaries' offsets and scratch_bytes (call after the last step). */
void loom__onednn_prim_layout(loom__onednn_prim *p);

/* Destroys the steps' primitives (not p itself). */
void loom__onednn_prim_destroy(loom__onednn_prim *p);

/* Runs p's steps on the call's buffers in the calling thread's stream. */
loom_status loom__onednn_execute(const loom__kcall *call, const loom__onednn_prim *p);

/* ---- cache.c ----------------------------------------------------------------- */

#define LOOM__ONEDNN_KEY_MAX 512

typedef struct loom__onednn_key {
    size_t len;
    unsigned char bytes[LOOM__ONEDNN_KEY_MAX];
} loom__onednn_key;

/* Starts a key with the op, nthreads and a per-op variant (layout policy,
 * algorithm). */
void loom__onednn_key_init(loom__onednn_key *k, const loom__kcall *call, int variant);
/* Appends n bytes (callers memset structs first, so padding is zero). */
void loom__onednn_key_add(loom__onednn_key *k, const void *data, size_t n);

/* Builds program p for the call (p arrives zeroed). On failure it leaves p
 * for the caller to destroy and returns the error. */
typedef loom_status (*loom__onednn_build_fn)(const loom__kcall *call, const void *params, loom__onednn_prim *p);

/* The cached program for key, built with build(call, params) on a miss.
 * The result stays valid until loom__onednn_cache_release, even if it is
 * evicted meanwhile. */
loom_status loom__onednn_cache_get(const loom__onednn_key *key, const loom__kcall *call, loom__onednn_build_fn build,
                                   const void *params, const loom__onednn_prim **out);
void loom__onednn_cache_release(const loom__onednn_prim *p);

/* The whole kernel: sets the team size, gets (or builds) the program, runs
 * it, releases it. */
loom_status loom__onednn_run(const loom__kcall *call, const loom__onednn_key *key, loom__onednn_build_fn build,
                             const void *params);

/* Capacity in programs (from LOOM_ONEDNN_CACHE_CAPACITY, default 256; 0
 * disables caching: each call builds and destroys its program). Shrinking
 * evicts least recently used programs at once. */
void loom__onednn_cache_set_capacity(int capacity);

typedef struct loom__onednn_cache_stats {
    int64_t hits, misses, evictions;
    int size, capacity;
} loom__onednn_cache_stats;
void loom__onednn_cache_stats_get(loom__onednn_cache_stats *out);
/* Short name the brief asks for; same as loom__onednn_cache_stats_get. */
#define loom__onednn_cache_stats(out) loom__onednn_cache_stats_get(out)

/* Destroys every cached program not in use (the atexit cleanup, tests). */
void loom__onednn_cache_clear(void);

/* ---- op families ----------------------------------------------------------- */

/* Convolution layout policy (LOOM_ONEDNN_CONV_LAYOUT=auto|blocked|plain):
 * blocked lets oneDNN pick blocked layouts (binding blocked inputs as they
 * are, reordering plain ones inside the program); plain keeps NCHW / OIHW;
 * auto (default) is blocked except for 1x1 kernels whose data is plain and
 * whose output may not stay blocked (conv.c). Part of the cache key. */
enum { LOOM__ONEDNN_LAYOUT_AUTO = 0, LOOM__ONEDNN_LAYOUT_PLAIN = 1, LOOM__ONEDNN_LAYOUT_BLOCKED = 2 };
void loom__onednn_set_conv_layout(int policy);
int loom__onednn_conv_layout(void);

/* Convolution algorithm (LOOM_ONEDNN_CONV_ALGO=auto|direct|winograd):
 * winograd asks oneDNN for its Winograd F(4x4, 3x3) kernels (3x3, stride
 * 1, no dilation, one group, blocked layouts; anything else, or a case
 * oneDNN does not implement, stays direct); auto (default) is winograd
 * where oneDNN's ISA has AVX-512 (its only Winograd kernels), else
 * direct. Part of the cache key. */
enum { LOOM__ONEDNN_ALGO_AUTO = 0, LOOM__ONEDNN_ALGO_DIRECT = 1, LOOM__ONEDNN_ALGO_WINOGRAD = 2 };
void loom__onednn_set_conv_algo(int policy);
int loom__onednn_conv_algo(void);
/* How many convolution programs have been built on a Winograd primitive
 * (tests). */
int64_t loom__onednn_conv_winograd_programs(void);

bool loom__onednn_conv_supports(const loom__kcall *call);
loom_status loom__onednn_conv(const loom__kcall *call);

bool loom__onednn_pool_supports(const loom__kcall *call);
loom_status loom__onednn_pool(const loom__kcall *call);

bool loom__onednn_bn_supports(const loom__kcall *call);
loom_status loom__onednn_bn(const loom__kcall *call);

bool loom__onednn_unary_supports(const loom__kcall *call);
loom_status loom__onednn_unary(const loom__kcall *call);
bool loom__onednn_relu_bwd_supports(const loom__kcall *call);
loom_status loom__onednn_relu_bwd(const loom__kcall *call);
bool loom__onednn_softmax_supports(const loom__kcall *call);
loom_status loom__onednn_softmax(const loom__kcall *call);

/* rnn.c: RNN_LAYER (forward training or inference) and RNN_LAYER_BWD on
 * oneDNN's vanilla RNN, LSTM and linear-before-reset GRU primitives. */
bool loom__onednn_rnn_supports(const loom__kcall *call);
loom_status loom__onednn_rnn(const loom__kcall *call);
bool loom__onednn_rnn_bwd_supports(const loom__kcall *call);
loom_status loom__onednn_rnn_bwd(const loom__kcall *call);
int64_t loom__onednn_rnn_aux(const loom__kcall *call); /* the training workspace, floats */

/* ---- helpers the op files share -------------------------------------------- */

/* v is float32, contiguous row-major (size-1 dims may have any stride) and
 * has no zero-size dim. */
bool loom__onednn_plain_f32(const loom__tview *v);

/* A plain row-major f32 memory desc of ndim dims (1..5 use the abcde tags). */
dnnl_status_t loom__onednn_plain_md(dnnl_memory_desc_t *md, int ndim, const int64_t *dims);

/* The memory desc of a 4-D float32 view in its layout (abcd, nChw8c or
 * nChw16c). */
dnnl_status_t loom__onednn_view_md(dnnl_memory_desc_t *md, const loom__tview *v);

/* LOOM__LAYOUT_NCHW8C / 16C when md is exactly that layout of its 4 dims
 * (f32, C a multiple of the block), else LOOM__LAYOUT_PLAIN. */
int loom__onednn_md_layout(const dnnl_memory_desc_t *md);

/* v's layout is one a oneDNN kernel can bind: plain, nChw8c or nChw16c. */
bool loom__onednn_layout_ok(const loom__tview *v);

/* True when any of the n floats is NaN, or (when also_ninf) -inf, or (when
 * also_pinf) +inf. Scans in blocks, stopping at the first block with one. */
bool loom__onednn_has_nonfinite(const float *x, int64_t n, bool also_ninf, bool also_pinf);

#endif /* LOOM_BACKENDS_ONEDNN_H */
