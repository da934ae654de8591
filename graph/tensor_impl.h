/*
 * graph/tensor_impl.h - what a tensor is inside Loom: a view on a storage,
 * plus the node (op, inputs, attributes) that computes it while it is
 * pending. Internal; ops/ and graph/ use it, backends never do.
 *
 * Reference counting. A tensor's `refs` counts its owners: the scope that
 * holds its handle (or the caller, once detached) and every pending node that
 * reads it. Storages are counted by the tensors that view them. When a
 * pending node has run, it drops its inputs, so intermediates die as soon as
 * their handles are freed. Counts are atomic because nodes may complete on
 * worker threads.
 *
 * The node lives inside the tensor it produces (one output per node), as in
 * ggml: one allocation per op, and `t->node` is the DAG edge list.
 */
#ifndef LOOM_GRAPH_TENSOR_IMPL_H
#define LOOM_GRAPH_TENSOR_IMPL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "backends/kernel.h"
#include "loom/context.h"
#include "runtime/mem.h"

typedef struct loom__storage {
    atomic_int refs;
    uint32_t version; /* bumped by loom_tensor_assign (user thread only) */
    uint64_t uid;     /* unique in the process, from 1, increasing (graph/capture.c tells storages apart
                         by it; backends key caches by it and version: loom__tview) */
    void *data;    /* 64-byte aligned; NULL until the producing node runs */
    size_t nbytes; /* bytes to allocate */
    loom__mem *mem;
    /* loom__layout of data, set by the node that writes it (graph/eval.c):
     * blocked only for a 4-D float32 tensor of dims `dims` that fills the
     * storage. User reads (loom_tensor_eval) convert it back to plain in
     * place; kernels that do not know layouts get plain copies. */
    int layout;
    int64_t dims[4];
} loom__storage;

typedef enum loom__tstate {
    LOOM__READY = 0, /* values are in storage */
    LOOM__PENDING,   /* node not yet run */
    LOOM__FAILED,    /* node ran and failed; err/errmsg say why */
} loom__tstate;

#define LOOM__INLINE_INPUTS 3

typedef struct loom__node {
    loom__op op;
    loom__attrs attrs;
    int n_in;
    loom_tensor **in; /* in_inline, or a heap array for cat */
    loom_tensor *in_inline[LOOM__INLINE_INPUTS];
    /* Storage versions of the inputs, and of the output's storage, when
     * the node was recorded: a mismatch means a tensor was assigned in
     * place in between. in_version points at in_version_inline, or into
     * the heap block that holds `in` for nodes with many inputs. */
    uint32_t *in_version;
    uint32_t in_version_inline[LOOM__INLINE_INPUTS];
    uint32_t out_version;
} loom__node;

typedef struct loom__scope loom__scope;

struct loom_tensor {
    atomic_int refs;
    loom_ctx *ctx;
    loom_dtype dtype;
    int ndim;
    int64_t shape[LOOM_MAX_DIMS];
    int64_t strides[LOOM_MAX_DIMS]; /* elements */
    int64_t offset;                 /* elements from storage->data */
    loom__storage *storage;

    _Atomic int state; /* loom__tstate */
    loom_status err;   /* when FAILED */
    char *errmsg;      /* when FAILED: heap copy of the message, may be NULL */
    loom__node node;   /* meaningful while PENDING, or while kept for backward */

    /* Autograd. A tensor with grad_fn was computed from tensors that
     * require grad: its node (inputs included) is kept after it runs until
     * backward has used it (graph_freed then). */
    bool requires_grad;
    bool grad_fn;
    bool graph_freed;
    loom_tensor *grad; /* leaves: the accumulated gradient (owned reference) */
    loom_tensor *gacc; /* during backward: the gradient flowing in (owned) */
    /* During backward: gradients of step-1 slices of this tensor, not yet
     * assembled into gacc (graph/autograd.c); owned references. */
    struct loom__gpiece *gpieces;
    int n_gpieces, cap_gpieces;

    uint64_t mark;    /* graph walks: the epoch that last visited it */
    int64_t exec_idx; /* during a parallel evaluation: its index in the order */
    bool alone;       /* ... and whether nothing of it can run beside it (loom__dag_alone) */

    /* Scope membership (user-thread only). scope == NULL: detached/unowned. */
    loom__scope *scope;
    loom_tensor *sprev, *snext;
};

/* A gradient that arrived for the slice [start, start + src->shape[dim])
 * along dim of a tensor (graph/autograd.c); or, when a is set, the
 * gradient a^T @ src of the second operand of a 2-D matmul, kept so that
 * the contributions of every use of one weight (a recurrent layer's steps)
 * become one product of concatenations. */
typedef struct loom__gpiece {
    loom_tensor *src;
    loom_tensor *a; /* NULL: a slice piece */
    int dim;
    int64_t start;
} loom__gpiece;

struct loom__scope {
    loom__scope *parent;
    loom_tensor *head; /* doubly linked through sprev/snext */
};

/* The context. Defined here so that graph/ and ops/ share it. */
/* A worker's counters (loom_ctx.wcount): 64 bytes, so that two workers'
 * counters never share a cache line. */
typedef struct loom__wcount {
    _Atomic int64_t nodes_run, flops;
    char pad[64 - 2 * sizeof(int64_t)];
} loom__wcount;

struct loom_ctx {
    loom__mem mem;
    int num_threads;
    int num_workers;    /* DAG workers (inter-op) */
    int kernel_threads; /* threads per node with the scheduler off (= num_threads) */
    struct loom__pool *pool; /* created on the first parallel evaluation */
    int backend; /* loom__backend_choice */
    uint64_t rng_seed;
    uint64_t rng_offset; /* 128-bit Philox blocks consumed */
    loom__scope *scope;  /* innermost; the root scope has parent == NULL */
    int scope_depth;
    uint64_t epoch; /* for graph walks */
    int no_grad_depth; /* > 0: ops record no gradient information */
    _Atomic int64_t live_tensors;
    /* Nodes run and their FLOPs (loom_ctx_stats), one slot per worker on a
     * cache line of its own (slot 0 also for the serial path, which runs on
     * the caller, worker 0's thread): a shared counter bumped by every node
     * bounced its line between the cores, and took the read-mostly fields
     * beside it along (graph/eval.c). num_workers of them. */
    loom__wcount *wcount;
    /* Threads running nodes on the scheduler now (workers and their teams),
     * and the most at any time: counted only while check_running is set
     * (the test of the core budget's bound; two shared atomics per node
     * otherwise cost every node a cache miss). graph/eval.c. */
    bool check_running;
    _Atomic int running, running_max;
    /* Kernel time, calls and FLOPs per op are counted while set: by
     * loom_profile_start .. stop, or from creation with LOOM_PROFILE (the
     * table then goes to stderr at loom_ctx_free). graph/eval.c. */
    _Atomic bool profile;
    bool profile_env;
    /* Layout-aware kernels may leave 4-D outputs blocked for the next
     * node (LOOM_KEEP_BLOCKED=0 turns it off; graph/context.c). */
    bool keep_blocked;
    /* How a wide node's planned width becomes the width it runs at on the
     * scheduler (LOOM_WIDE_WIDTH; graph/eval.c, wide_width). */
    int wide_width;
    /* The capture in progress (loom_graph_capture_begin .. end), or NULL. */
    struct loom__capture *capture;
    /* The pool's workers span NUMA nodes (loom__ctx_pool_ready); nodes sent
     * to their home node, and nodes that ran away from it (loom_ctx_stats).
     * wide_home: every NUMA node has as many tokens, so a wide node runs on
     * its home's team master at the same width (graph/exec.c). */
    bool numa_dispatch, wide_home;
    _Atomic int64_t nodes_sent_home, nodes_away;
    /* Cores of the budget kept for host calls (communication) while a
     * hooked backward runs; other nodes plan at most total - this wide
     * (graph/autograd_impl.h). Set and read only between runs and by the
     * run's nodes, so a plain int. */
    int comm_reserve;
    struct loom__trace *trace;  /* loom_trace_start .. stop (graph/trace.c) */
    /* The same trace for the pool's scheduling events, which workers record
     * outside any run (a parked worker records its idle time when it
     * wakes): loom_trace_stop clears it, then waits until no observer
     * (graph/exec.c) is inside, before freeing the trace. */
    _Atomic(struct loom__trace *) sched_trace;
    _Atomic int sched_observers;
    char *trace_path;           /* LOOM_TRACE: written by loom_ctx_free */
    _Atomic int64_t prof_ns[LOOM_OP_COUNT];
    _Atomic int64_t prof_calls[LOOM_OP_COUNT];
    _Atomic int64_t prof_flops[LOOM_OP_COUNT];
};

/* ---- tensor lifetime (graph/tensor.c) --------------------------------- */

/* A new tensor object with refs = 1, owned by ctx's current scope, with
 * `ndim`/`shape`, contiguous strides, state READY, no node, no storage.
 * NULL (message set) if allocation fails. */
loom_tensor *loom__tensor_new(loom_ctx *ctx, loom_dtype dtype, int ndim, const int64_t *shape);

/* Gives t a new storage of numel * dtype size bytes; if `allocate`, the data
 * is allocated now (eager tensors), else when its node runs. */
loom_status loom__tensor_attach_storage(loom_tensor *t, bool allocate);
/* The last storage uid handed out (storages made later have larger ones). */
uint64_t loom__storage_uid_last(void);

/* Converts a storage a node left in a blocked layout to plain in place
 * (user thread, no run in progress). LOOM_OK when already plain. */
loom_status loom__storage_make_plain(loom__storage *s, int nthreads);

/* Drops a reference on a storage; frees it (and its data) with the last. */
void loom__storage_decref(loom__storage *s);

/* Makes t view `s` (taking a reference on it). */
void loom__tensor_share_storage(loom_tensor *t, loom__storage *s);

void loom__tensor_incref(loom_tensor *t);
/* Drops a reference; frees t (and, iteratively, what only it kept alive)
 * when it was the last. */
void loom__tensor_decref(loom_tensor *t);

/* Releases a pending node's inputs (after it ran, or on free). */
void loom__node_release_inputs(loom_tensor *t);

/* Pointer to t's first element (storage must be allocated). */
static inline void *loom__tensor_ptr(const loom_tensor *t)
{
    return (char *)t->storage->data + t->offset * loom_dtype_size(t->dtype);
}

static inline int64_t loom__numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    return n;
}

/* Row-major contiguous strides for shape. */
void loom__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
bool loom__is_contiguous(int ndim, const int64_t *shape, const int64_t *strides);

/* Copies the row-major elements at `from` (es bytes each) into the view at
 * `to` with the given shape and strides (in elements): one memcpy when the
 * view is contiguous (loom_tensor_assign and its replay). */
void loom__scatter(char *to, const int64_t *strides, const char *from, int ndim, const int64_t *shape, int es);

/* Scope bookkeeping (graph/scope.c). */
void loom__scope_add(loom__scope *s, loom_tensor *t);
void loom__scope_remove(loom_tensor *t);
/* Drops every tensor of s (s itself stays). */
void loom__scope_clear(loom__scope *s);

#endif /* LOOM_GRAPH_TENSOR_IMPL_H */
