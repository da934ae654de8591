/*
 * graph/eval.h - computing pending tensors.
 */
#ifndef LOOM_GRAPH_EVAL_H
#define LOOM_GRAPH_EVAL_H

#include "graph/tensor_impl.h"

/* Computes t and every pending tensor it depends on, in dependency order.
 * On failure the failing node is marked FAILED (its error is kept, so a later
 * eval reports it again), nodes after it stay pending, and the status is
 * returned with loom_last_error() set. */
loom_status loom__eval(loom_tensor *t);

struct loom__worker;
struct loom__pool;
typedef struct loom__capture loom__capture;

/* How an input reaches a kernel that cannot read it as it is stored. */
typedef enum loom__conv_kind {
    LOOM__CONV_NONE = 0,
    LOOM__CONV_TO_PLAIN,   /* a plain copy of a blocked storage */
    LOOM__CONV_TO_BLOCKED, /* a blocked copy of a plain whole 4-D tensor */
} loom__conv_kind;

typedef struct loom__conv {
    int kind;         /* loom__conv_kind */
    int layout;       /* the blocked layout converted from (TO_PLAIN) or to */
    int64_t dims[4];  /* TO_PLAIN: the storage's [N,C,H,W] */
    size_t nbytes;    /* bytes of the copy (the whole storage) */
    const void *base; /* TO_PLAIN: the storage's data */
    int64_t byte_off; /* TO_PLAIN: the view's offset in the storage */
} loom__conv;

/* One node's kernel call, resolved: what loom__run_node decides from the
 * tensors, and what a replayed graph (graph/capture.c) keeps of it. */
typedef struct loom__exec {
    loom__kcall call;      /* views and output set; nthreads is set by loom__exec_run */
    const loom__kernel *k; /* NULL: picked once the inputs are converted */
    const char *bname;     /* the kernel's backend (traces) */
    loom__conv *conv;      /* call.n_in entries, or NULL: no input is converted */
    int want;              /* the planned width (loom__node_want) */
    loom__mem *mem;        /* for the converted copies */
} loom__exec;

/* Runs x: takes the node's cores from the budget (w != NULL) or uses
 * ctx->kernel_threads, converts the inputs x->conv marks into tmp[i]
 * (n_in entries, NULL on entry; freed again before it returns), runs the
 * kernel, and counts it in the profile and trace. */
loom_status loom__exec_run(loom_ctx *ctx, struct loom__worker *w, loom__exec *x, void **tmp);

/* How a wide node's planned width (loom__node_want) becomes the width it
 * runs at on the scheduler, LOOM_WIDE_WIDTH (docs/runtime.md section 5):
 *   big      (default) nodes that want 4 threads or more take every core
 *            of the domain, smaller ones their planned width rounded down
 *            to a power of two;
 *   planned  every wide node its rounded planned width;
 *   full     every wide node every core.
 * Wide nodes run one at a time per NUMA node, on its team master (worker
 * 0, or the node's first worker: loom__dag_master), so a big node loses
 * nothing by taking all the node's cores, and each master's OpenMP team
 * (and oneDNN's primitives) keep one size; small ones leave the cores to
 * the narrow nodes beside them. */
enum { LOOM__WIDE_BIG, LOOM__WIDE_PLANNED, LOOM__WIDE_FULL };
int loom__wide_width_policy(const char *name);
/* The width a node that wants `want` threads runs at on `total` cores. */
int loom__wide_width(int policy, int want, int total);

/* After ctx->pool was made (by loom__ctx_pool, or by a test on a synthetic
 * topology): turns NUMA dispatch and memory binding on when the pool's
 * workers span more than one NUMA node. */
void loom__ctx_pool_ready(loom_ctx *ctx);

/* The context's work-stealing pool, created on first use (NULL with the
 * error set when that fails). */
struct loom__pool *loom__ctx_pool(loom_ctx *ctx);

/* The edges among order[0..n) (a walk of epoch `epoch`): sets each
 * tensor's exec_idx to its position, indeg[i] to the inputs of order[i]
 * that are pending in the walk, and the consumers of order[i] to
 * (*succ)[off[i] .. off[i+1]) (off has n + 1 entries; *succ is malloc'd). */
loom_status loom__order_edges(loom_tensor **order, size_t n, uint64_t epoch, int *indeg, int64_t *off, int64_t **succ);


/* A DAG run on the pool by dependency counting (graph/exec.c): every node
 * type embeds a loom__dag_node as its first member, and the pool's tasks
 * are pointers to it. The last input to finish makes a node ready; wide
 * nodes run on a team master (loom__dag_master), host calls off them. */
typedef struct loom__dag_node {
    atomic_int pending;           /* input edges from nodes not yet run */
    bool wide;                    /* wants more than one thread: a team master */
    bool host;                    /* a host call: not on a team master */
    bool routed;                  /* its NUMA route was decided (loom__dag_route) */
    int home;                     /* ... for this NUMA node (-1: none) */
    int master;                   /* wide: the worker it is pinned to */
    int64_t succ_begin, succ_end; /* consumers: succ[succ_begin .. succ_end) */
} loom__dag_node;

typedef struct loom__dag {
    char *nodes;         /* node i at nodes + i * stride */
    size_t stride;
    const int64_t *succ; /* consumers, one entry per input edge */
    loom_status (*run)(void *node, struct loom__worker *w, void *user);
    /* NULL, or the NUMA node a ready node should run on (-1: anywhere):
     * a narrow node made ready on another NUMA node is sent to the first
     * worker of its home, where any worker may still steal it. */
    int (*home)(void *node, void *user);
    /* Wide nodes go to their home's team master (the first worker of that
     * NUMA node) rather than to worker 0; only where every NUMA node has
     * as many tokens, so a wide node's width is the same wherever it runs
     * and results stay the same run after run. */
    bool wide_home;
    _Atomic int64_t *sent_home; /* counts those sends (may be NULL) */
    void *user;
} loom__dag;

/* The worker a ready node s should be sent to, by a worker of NUMA node
 * `numa`: the first worker of its home when that is another NUMA node and s
 * is narrow; else -1 (run or spawn it here). Decided once per node (where it
 * becomes ready, or where a root is first taken), so a node stolen by a
 * worker of another NUMA node that ran dry runs where it was stolen. */
int loom__dag_route(const loom__dag *g, loom__dag_node *s, int numa, const struct loom__pool *pool);

/* The worker a wide node s runs on, pinned (no other takes it): the team
 * master of its home NUMA node when g->wide_home, else worker 0. Decided
 * once per node, by a worker of NUMA node `numa`. */
int loom__dag_master(const loom__dag *g, loom__dag_node *s, int numa, const struct loom__pool *pool);

/* Which of the n nodes of an evaluation (in a topological order, with
 * their consumers in succ[off[i] .. off[i+1]) as loom__order_edges makes
 * them) nothing else of it can run beside: every other node is its
 * ancestor or its descendant. Such a node gets every token of its domain
 * (as with the scheduler off): nothing else could use them, and a node
 * that plans 2 threads would otherwise leave the rest idle. A property of
 * the DAG alone, so widths, and oneDNN's bits, stay the same run after
 * run. O(n + edges); false when out of memory (no message set). */
bool loom__dag_alone(size_t n, const int64_t *off, const int64_t *succ, bool *alone);

/* Runs the DAG from its roots (the nodes with pending == 0) until every
 * node ran or one failed. */
loom_status loom__dag_run(struct loom__pool *pool, const loom__dag *dag, void *const *roots, int64_t nroots);

/* Runs one node whose inputs are all READY (the unit of work a scheduler
 * hands to a worker). Thread-safe for distinct nodes. w NULL: on the
 * calling thread, the kernel with ctx->kernel_threads threads; else on
 * scheduler worker w, with the threads the core budget grants (graph/eval.c,
 * runtime/cores.h). */
loom_status loom__run_node(loom_tensor *t, struct loom__worker *w);

/* The threads node t uses well (1..max), from its work: multiply-adds of
 * convolutions and matmuls, elements of the rest (graph/eval.c); at most
 * max - comm_reserve while a hooked backward keeps cores for host calls,
 * which use 1. */
int loom__node_want(const loom_tensor *t, int max);
/* The same for a node that nothing else of its evaluation can run beside
 * when `alone` (loom__dag_alone): then every one of the max threads, if
 * it runs a kernel at all. */
int loom__node_want_alone(const loom_tensor *t, int max, bool alone);

/* Decides whether a walk goes from tensor `from` to its input `in`: true to
 * follow; false to skip it, or to stop the walk with *status set. */
typedef bool (*loom__edge_fn)(loom_tensor *from, loom_tensor *in, loom_status *status);

/* Orders the part of the DAG below root that `follow` admits, every tensor
 * after the inputs it follows, root last. *order is malloc'd (the caller
 * frees it). Each tensor appears once. */
loom_status loom__dag_order(loom_tensor *root, loom__edge_fn follow, loom_tensor ***order, size_t *n);

/* loom__dag_order from several roots at once (each tensor once). */
loom_status loom__dag_order_many(loom_tensor *const *roots, size_t k, loom__edge_fn follow, loom_tensor ***order,
                                 size_t *n);

/* Computes every tensor of ts (k of them) in one run of the DAG: the
 * scheduler sees all their pending ancestors at once. */
loom_status loom__eval_many(loom_tensor *const *ts, size_t k);

/* Runs the n nodes of `order` (as loom__dag_order gave it, in the epoch
 * it just used) on the context's work-stealing pool: a node runs when its
 * last pending input has run (graph/exec.c). */
loom_status loom__run_parallel(loom_ctx *ctx, loom_tensor **order, size_t n);

#endif /* LOOM_GRAPH_EVAL_H */
