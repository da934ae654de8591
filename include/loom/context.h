/*
 * loom/context.h - the context that owns tensors, settings and memory.
 *
 * A loom_ctx holds everything a program's tensors share: the thread count,
 * the backend choice, the default random generator, the allocator, and a
 * stack of scopes that own the tensors created under them.
 *
 * Scopes make a leak-free training loop the natural way to write one:
 *
 *     for (int step = 0; step < steps; step++) {
 *         loom_scope_begin(ctx);
 *         loom_tensor *y = loom_matmul(x, w);          // owned by the scope
 *         ...
 *         loom_scope_end(ctx);                        // frees every tensor above
 *     }
 *
 * Every function that returns a new loom_tensor* gives it to the innermost
 * open scope of its context (the context's root scope if none is open).
 * A tensor lives until its scope ends, loom_tensor_free() is called on it,
 * or the context is freed, whichever comes first. loom_scope_keep() moves a
 * tensor to the enclosing scope; loom_scope_detach() takes it out of every
 * scope, and the caller then frees it with loom_tensor_free().
 *
 * Internally tensors are reference counted: freeing a handle that a pending
 * computation still reads is safe; the data lives until that computation is
 * done.
 *
 * A context is used from one thread at a time (the thread that records ops);
 * Loom's own worker threads are internal to it.
 */
#ifndef LOOM_CONTEXT_H
#define LOOM_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "loom/status.h"
#include "loom/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_ctx loom_ctx;
typedef struct loom_tensor loom_tensor;

/* A replaceable allocator (like uv_replace_allocator). Both functions must be
 * thread-safe: Loom's worker threads allocate and free tensor data. Loom
 * aligns tensor data to 64 bytes itself, so alloc needs only malloc's
 * alignment. alloc returns NULL on failure. */
typedef struct loom_allocator {
    void *(*alloc)(size_t size, void *user);
    void (*free)(void *ptr, void *user);
    void *user;
} loom_allocator;

/* Options for loom_ctx_create. Zero-initialise and set what you need:
 *     loom_ctx_options o = {.num_threads = 4};
 */
typedef struct loom_ctx_options {
    /* Threads for computation. 0: the LOOM_NUM_THREADS environment variable
     * if set, else every core the process may run on. */
    int num_threads;
    /* Workers of the scheduler, which runs independent nodes of the DAG at
     * the same time (inter-op parallelism, on the NUMA-aware work-stealing
     * pool of runtime/). 0: the LOOM_NUM_WORKERS environment variable if
     * set, else num_threads (one worker per core). The threads running at
     * once never exceed num_threads: a node's kernel gets extra threads for
     * its OpenMP team only from the cores no other node is using (the core
     * budget, docs/runtime.md section 5), so a lone big node still uses
     * every core. 1 turns the scheduler off: nodes run one after another on
     * the calling thread, each with num_threads threads. At most
     * num_threads (a larger value is lowered to it). Results do not depend
     * on this choice (nor on which worker ran what). */
    int num_workers;
    /* Seed of the context's default random generator. */
    uint64_t seed;
    /* Backend: NULL or "auto" runs each node on oneDNN where it is exact
     * and measured faster, else on the portable C backend; "onednn" uses
     * oneDNN for every call it computes exactly (an error at creation when
     * Loom was built without it); "ref" forces the portable C backend. NULL
     * also honours the LOOM_BACKEND environment variable (docs/cnn.md). */
    const char *backend;
    /* NULL: malloc/free. The pointed-to struct is copied. */
    const loom_allocator *allocator;
    /* The block cache: freed tensor memory kept for reuse, so that a step
     * that repeats takes its memory from the cache instead of faulting
     * fresh pages in (docs/runtime.md, "The block cache"). 0: the LOOM_CACHE_MB
     * environment variable if set ("auto" or MiB), else automatic: blocks
     * are kept while the memory in use plus the cache stay within the
     * larger of 1 GiB and 9/8 of the most ever in use at once (the cache
     * never holds much more than a step already needed). > 0: at most this
     * many bytes. < 0: cache nothing (every free goes back to the
     * allocator). */
    int64_t cache_bytes;
} loom_ctx_options;

/* Creates a context. opts may be NULL (defaults). Returns NULL on failure
 * (bad option, no memory) with loom_last_error() set.
 * Free with loom_ctx_free(). */
loom_ctx *loom_ctx_create(const loom_ctx_options *opts);

/* Frees the context and every tensor still owned by its scopes, and ends any
 * open scopes. Tensors detached from scopes must have been freed before.
 * NULL is a no-op. */
void loom_ctx_free(loom_ctx *ctx);

/* The number of compute threads the context uses. */
int loom_ctx_num_threads(const loom_ctx *ctx);
/* The number of DAG workers (see loom_ctx_options.num_workers). */
int loom_ctx_num_workers(const loom_ctx *ctx);

/* The name of the forced backend ("ref"), or "auto". */
const char *loom_ctx_backend(const loom_ctx *ctx);

/* A text report for `loom info`: Loom's version, how it was built (oneDNN,
 * hwloc, OpenMP, ISA), the context's threads, workers and backend, the
 * machine's topology and where each worker sits. Returns a malloc'd string
 * the caller frees with free(); NULL on failure. */
char *loom_ctx_describe(loom_ctx *ctx);

/* Counters for leak checks and memory reports. */
typedef struct loom_ctx_stats {
    int64_t live_tensors; /* tensor handles not yet freed */
    int64_t live_bytes;   /* bytes of tensor data allocated now */
    int64_t peak_bytes;   /* the most live_bytes ever reached */
    int64_t nodes_run;    /* nodes computed since the context was created */
    int64_t flops;        /* their floating-point operations: 2 per multiply-add of
                             convolutions and matrix products (elementwise work not
                             counted, as oneDNN and PyTorch's profiler count) */
    /* NUMA (when the workers span several NUMA nodes; docs/runtime.md): */
    int64_t nodes_sent_home; /* ready nodes sent to a worker of their inputs' NUMA node */
    int64_t nodes_run_away;  /* nodes that ran on another NUMA node (stolen when theirs ran dry) */
    int64_t bound_blocks;    /* fresh data blocks bound to a NUMA node (hwloc, real machines) */
    int64_t cached_bytes;    /* freed blocks the cache keeps for reuse (cache_bytes above) */
} loom_ctx_stats;
void loom_ctx_get_stats(const loom_ctx *ctx, loom_ctx_stats *out);

/* Returns every block of the cache to the allocator (as PyTorch's
 * torch.cuda.empty_cache), e.g. after training and before a long phase
 * that needs less memory. Live tensors are untouched. Safe while nodes run
 * (they refill the cache as they free). */
void loom_ctx_empty_cache(loom_ctx *ctx);

/* Per-op profile: from loom_profile_start (which zeroes the counters) until
 * loom_profile_stop, every node the context runs adds its kernel time, a
 * call and its FLOPs to its op's totals. loom_profile_report returns them as
 * a table, longest first: op, calls, total ms, share of the kernel time,
 * GFLOP/s (the op's FLOPs over its own kernel time); a malloc'd string the
 * caller frees, NULL on failure. Setting LOOM_PROFILE=1 profiles a context
 * from creation and prints the table to stderr when it is freed. The
 * counters cost two clock reads per node while on, nothing while off. */
loom_status loom_profile_start(loom_ctx *ctx);
loom_status loom_profile_stop(loom_ctx *ctx);
char *loom_profile_report(loom_ctx *ctx);
/* One op's totals since loom_profile_start, by the name the table prints
 * ("conv2d", "conv2d_backward_data", ...): calls, kernel nanoseconds and
 * FLOPs (any pointer may be NULL). LOOM_ERR_INVALID_ARG names an unknown
 * op. For benchmarks that time one op inside a bigger call. */
loom_status loom_profile_op(loom_ctx *ctx, const char *op, int64_t *calls, int64_t *ns, int64_t *flops);

/* Timeline tracing: from loom_trace_start until loom_trace_stop, every node
 * the context runs is recorded (op, backend, output shape, thread, start
 * and duration), and loom_trace_stop writes them to path as a Chrome
 * trace-event JSON file (open it in Perfetto or chrome://tracing): one
 * track per thread, one slice per node. path NULL discards the trace. The
 * file is written under a temporary name and renamed. Setting the
 * environment variable LOOM_TRACE=path traces a context from creation and
 * writes the file when it is freed. LOOM_ERR_STATE: start while tracing,
 * stop while not. */
loom_status loom_trace_start(loom_ctx *ctx);
loom_status loom_trace_stop(loom_ctx *ctx, const char *path);

/* Opens a scope: tensors created from now on belong to it. */
loom_status loom_scope_begin(loom_ctx *ctx);

/* Closes the innermost scope and frees every tensor it still owns.
 * LOOM_ERR_STATE if no scope is open. */
loom_status loom_scope_end(loom_ctx *ctx);

/* The number of open scopes (0 = only the root scope). */
int loom_scope_depth(const loom_ctx *ctx);

/* Moves t from its scope to the enclosing one (to the root scope if t's
 * scope is the outermost). Returns t (NULL stays NULL). */
loom_tensor *loom_scope_keep(loom_tensor *t);

/* Takes t out of every scope: the caller owns it and must call
 * loom_tensor_free() before loom_ctx_free(). Returns t. */
loom_tensor *loom_scope_detach(loom_tensor *t);

/* Random numbers. The default generator is counter based (Philox4x32-10):
 * the numbers a call draws depend only on the seed and on how many numbers
 * were drawn before, never on the thread count. */
void loom_manual_seed(loom_ctx *ctx, uint64_t seed);

/* The generator's state, for checkpoints: its seed and how many 128-bit
 * counter blocks were consumed. Restoring it replays the same numbers. */
typedef struct loom_rng_state {
    uint64_t seed;
    uint64_t offset;
} loom_rng_state;
void loom_rng_get_state(const loom_ctx *ctx, loom_rng_state *out);
void loom_rng_set_state(loom_ctx *ctx, const loom_rng_state *state);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_CONTEXT_H */
