/*
 * graph/exec.c - running a DAG on the work-stealing pool.
 *
 * Dependency counting: each node knows how many of its input edges come
 * from nodes of this evaluation that have not run yet; whoever finishes the
 * last of them makes the node ready and pushes it on its own deque (the
 * owner takes newest first, so a consumer usually runs right after its
 * producer, on the same core, while its inputs are in cache). Idle workers
 * steal the oldest ready nodes, nearest victims first (runtime/pool.c).
 *
 * Every node's kernel is deterministic for a given width, no two nodes
 * write the same memory, and a node's width depends on the schedule only
 * for kernels whose results do not depend on it (kernel.h, exact_width), so
 * the values do not depend on who ran or stole what: results are bitwise
 * identical run after run (and to a serial run, for the portable kernels).
 *
 * NUMA: when the workers span NUMA nodes, a narrow node made ready on one
 * node goes to a worker of its largest input's node (loom__dag_route), and
 * outputs are allocated on the node of the worker that runs them.
 *
 * Core budget: each node runs with the threads the budget grants it
 * (loom__run_node, runtime/cores.h); nodes that want a team run on their
 * NUMA node's first worker alone (loom__dag_master), so the process has
 * one OpenMP team per NUMA node (docs/runtime.md section 5).
 */
#include <stdlib.h>

#include "graph/eval.h"
#include "graph/trace.h"
#include "runtime/error.h"
#include "runtime/pool.h"
#include "runtime/topology.h"

typedef struct exec_node {
    loom__dag_node d; /* first: the pool's tasks point here */
    loom_tensor *t;
} exec_node;

/* A node's home NUMA node: where its largest input's data is (a parameter
 * or an output of an earlier node, placed where that node ran). */
static int tensor_home(void *node, void *user)
{
    (void)user;
    const loom_tensor *t = ((exec_node *)node)->t;
    size_t best = 0;
    int home = -1;
    for (int i = 0; i < t->node.n_in; i++) {
        const loom__storage *s = t->node.in[i]->storage;
        if (s->data && s->nbytes > best) {
            best = s->nbytes;
            home = loom__mem_block_domain(s->data);
        }
    }
    return home;
}

static loom_status run_tensor(void *node, loom__worker *w, void *user)
{
    loom_ctx *ctx = user;
    const loom__dag_node *d = node;
    if (d->routed && d->home >= 0 && d->home != loom__worker_numa(w))
        atomic_fetch_add_explicit(&ctx->nodes_away, 1, memory_order_relaxed);
    return loom__run_node(((exec_node *)node)->t, w);
}

int loom__dag_route(const loom__dag *g, loom__dag_node *s, int numa, const loom__pool *pool)
{
    if (!g->home || s->wide || s->host || s->routed) return -1;
    /* NUMA: a node whose inputs live on another node goes there first
     * (docs/runtime.md section 8, "NUMA"). */
    s->routed = true; /* decided once: where it is made ready, or as a root */
    const int h = s->home = g->home(s, g->user);
    const int to = h >= 0 && h != numa ? loom__pool_numa_worker(pool, h) : -1;
    if (to >= 0 && g->sent_home) atomic_fetch_add_explicit(g->sent_home, 1, memory_order_relaxed);
    return to;
}

int loom__dag_master(const loom__dag *g, loom__dag_node *s, int numa, const loom__pool *pool)
{
    if (s->routed) return s->master;
    s->routed = true;
    s->master = 0;
    s->home = g->home ? g->home(s, g->user) : -1;
    if (g->wide_home && s->home >= 0) {
        const int to = loom__pool_numa_worker(pool, s->home);
        if (to >= 0) {
            s->master = to;
            if (s->home != numa && g->sent_home) atomic_fetch_add_explicit(g->sent_home, 1, memory_order_relaxed);
        }
    }
    return s->master;
}

/* Whether w runs wide nodes: worker 0, and with wide_home the first
 * worker of every NUMA node. */
static bool is_master(const loom__dag *g, const loom__worker *w)
{
    const int i = loom__worker_index(w);
    return i == 0 || (g->wide_home && loom__pool_numa_first(loom__worker_pool(w), i));
}

/* Where a host call goes: the first worker that is no team master (worker
 * 1 unless it is one), else worker 1 anyway when there is one. */
static int host_worker(const loom__dag *g, const loom__pool *p)
{
    const int n = loom__pool_size(p);
    for (int i = 1; i < n && g->wide_home; i++)
        if (!loom__pool_numa_first(p, i)) return i;
    return n > 1 ? 1 : 0;
}

static loom_status dag_task(loom__worker *w, void *task, void *user)
{
    const loom__dag *g = user;
    loom__dag_node *x = task;
    /* A root is routed when first taken (the pool hands out roots itself). */
    const int to = loom__dag_route(g, x, loom__worker_numa(w), loom__worker_pool(w));
    if (to >= 0) return loom__pool_spawn_to(w, to, x);
    /* A chain runs in this loop: the worker keeps one consumer it made ready
     * and runs it next itself, and spawns only the others. A spawn wakes a
     * sleeping worker, which on a chain would only find nothing to do, spin
     * while this worker's team computes, and slow it down. */
    while (x) {
        /* Nodes that want an OpenMP team run on a team master only (worker
         * 0, or their home NUMA node's first worker), so that the process
         * has one team per NUMA node (loom__pool_spawn_pinned says why);
         * the other workers run the narrow nodes beside them. */
        if (x->wide) {
            const int m = loom__dag_master(g, x, loom__worker_numa(w), loom__worker_pool(w));
            if (m != loom__worker_index(w)) return loom__pool_spawn_pinned(w, m, x);
        }
        /* A host call (dist/'s reduction) waits on other processes: not on
         * a team master, whose pinned wide nodes would wait behind it. */
        if (x->host && is_master(g, w)) {
            const int to = host_worker(g, loom__worker_pool(w));
            if (to != loom__worker_index(w)) return loom__pool_spawn_to(w, to, x);
        }
        loom_status st = g->run(x, w, g->user);
        if (st != LOOM_OK) return st;
        loom__dag_node *next = NULL;
        for (int64_t k = x->succ_begin; k < x->succ_end; k++) {
            loom__dag_node *s = (loom__dag_node *)(g->nodes + (size_t)g->succ[k] * g->stride);
            /* acq_rel: the consumer's worker must see this node's output. */
            if (atomic_fetch_sub_explicit(&s->pending, 1, memory_order_acq_rel) == 1) {
                const int to = loom__dag_route(g, s, loom__worker_numa(w), loom__worker_pool(w));
                if (to >= 0) {
                    if ((st = loom__pool_spawn_to(w, to, s)) != LOOM_OK) return st;
                    continue;
                }
                if (!next) {
                    next = s;
                } else if ((st = loom__pool_spawn(w, s)) != LOOM_OK) {
                    return st;
                }
            }
        }
        x = next;
        if (x && loom__worker_stopping(w)) return LOOM_OK; /* the batch failed: skip the rest */
    }
    return LOOM_OK;
}

bool loom__dag_alone(size_t n, const int64_t *off, const int64_t *succ, bool *alone)
{
    /* In a topological order, node i is alone iff every node before it is
     * its ancestor and every node after it its descendant. The first holds
     * iff the prefix [0, i] has one sink (a node with no consumer inside
     * it), node i: a sink of [0, i) reaches i only by an edge to it. Node
     * j stops being a prefix sink at its first consumer, so the prefix
     * [0, i] has i + 1 - #{j : first consumer of j <= i} sinks.
     * Symmetrically the suffix [i, n) has one source, i: it has
     * n - i - #{j : last producer of j >= i} sources (a node's producers
     * come before it). Both counts come from tallies per index. */
    int64_t *by_first = calloc(n + 1, sizeof *by_first); /* nodes by first consumer (n: none) */
    int64_t *last = malloc(sizeof *last * (n ? n : 1));   /* each node's last producer (-1: none) */
    if (!by_first || !last) {
        free(by_first);
        free(last);
        return false;
    }
    for (size_t s = 0; s < n; s++) last[s] = -1;
    for (size_t j = 0; j < n; j++) {
        int64_t first = (int64_t)n;
        for (int64_t k = off[j]; k < off[j + 1]; k++) {
            if (succ[k] < first) first = succ[k];
            last[succ[k]] = (int64_t)j; /* j ascends: the last one wins */
        }
        by_first[first]++;
    }
    int64_t done = 0;
    for (size_t i = 0; i < n; i++) {
        done += by_first[i];
        alone[i] = (int64_t)i + 1 - done == 1;
    }
    int64_t *by_last = by_first; /* reused: nodes by last producer */
    for (size_t i = 0; i <= n; i++) by_last[i] = 0;
    for (size_t s = 0; s < n; s++)
        if (last[s] >= 0) by_last[last[s]]++;
    int64_t with_producer = 0;
    for (size_t i = n; i-- > 0;) {
        with_producer += by_last[i];
        if ((int64_t)(n - i) - with_producer != 1) alone[i] = false;
    }
    free(by_first);
    free(last);
    return true;
}

loom_status loom__dag_run(loom__pool *pool, const loom__dag *dag, void *const *roots, int64_t nroots)
{
    return loom__pool_run(pool, roots, nroots, dag_task, (void *)dag);
}

/* The pool's scheduling events go to the context's trace while one is on.
 * They may come outside any run, racing loom_trace_stop: the observer
 * counts itself in before it loads the trace (both seq_cst), so a stop
 * that cleared sched_trace and then sees no observer knows none holds the
 * old trace (graph/trace.c). */
static void observe(void *user, loom__pool_event ev, int worker, int other, int64_t t0, int64_t t1)
{
    loom_ctx *ctx = user;
    atomic_fetch_add_explicit(&ctx->sched_observers, 1, memory_order_seq_cst);
    loom__trace *tr = atomic_load_explicit(&ctx->sched_trace, memory_order_seq_cst);
    if (tr) loom__trace_sched(tr, ev == LOOM__POOL_EV_IDLE ? 1 : 2, worker, other, t0, t1);
    atomic_fetch_sub_explicit(&ctx->sched_observers, 1, memory_order_release);
}

void loom__ctx_pool_ready(loom_ctx *ctx)
{
    if (!ctx->pool) return;
    /* More than one NUMA node with workers: nodes go to their inputs' node,
     * and fresh data blocks are bound to the node of the worker that makes
     * them (a no-op unless the topology is this machine's). */
    ctx->numa_dispatch = loom__pool_numa_domains(ctx->pool) > 1;
    ctx->wide_home = ctx->numa_dispatch && loom__pool_numa_balanced(ctx->pool);
    if (ctx->numa_dispatch)
        loom__mem_set_binder(&ctx->mem, loom__topology_bind_area, (void *)loom__pool_topology(ctx->pool));
}

loom__pool *loom__ctx_pool(loom_ctx *ctx)
{
    if (!ctx->pool) {
        loom__pool_options o = {.num_workers = ctx->num_workers,
                                .core_budget = ctx->num_threads,
                                .deque_capacity = 4096,
                                .observer = observe,
                                .observer_user = ctx};
        ctx->pool = loom__pool_create(NULL, &o);
        loom__ctx_pool_ready(ctx);
    }
    return ctx->pool;
}

loom_status loom__order_edges(loom_tensor **order, size_t n, uint64_t epoch, int *indeg, int64_t *off, int64_t **succ)
{
    *succ = NULL;
    for (size_t i = 0; i < n; i++) order[i]->exec_idx = (int64_t)i;
    /* Edges from inputs that are part of this evaluation (marked by the
     * walk and still pending); computed inputs impose no wait. */
    for (size_t i = 0; i <= n; i++) off[i] = 0;
    int64_t nedges = 0;
    for (size_t i = 0; i < n; i++) {
        loom_tensor *t = order[i];
        int pend = 0;
        for (int k = 0; k < t->node.n_in; k++) {
            loom_tensor *in = t->node.in[k];
            if (in->mark == epoch && atomic_load_explicit(&in->state, memory_order_relaxed) == LOOM__PENDING) {
                pend++;
                off[in->exec_idx + 1]++;
                nedges++;
            }
        }
        indeg[i] = pend;
    }
    for (size_t i = 0; i < n; i++) off[i + 1] += off[i]; /* prefix sums: CSR offsets */
    int64_t *s = malloc(sizeof *s * (size_t)(nedges ? nedges : 1));
    int64_t *fill = malloc(sizeof *fill * (n ? n : 1));
    if (!s || !fill) {
        free(s);
        free(fill);
        return loom__set_error(LOOM_ERR_NOMEM, "eval: out of memory scheduling the graph");
    }
    for (size_t i = 0; i < n; i++) fill[i] = off[i];
    for (size_t i = 0; i < n; i++) {
        loom_tensor *t = order[i];
        for (int k = 0; k < t->node.n_in; k++) {
            loom_tensor *in = t->node.in[k];
            if (in->mark == epoch && atomic_load_explicit(&in->state, memory_order_relaxed) == LOOM__PENDING)
                s[fill[in->exec_idx]++] = (int64_t)i;
        }
    }
    free(fill);
    *succ = s;
    return LOOM_OK;
}

loom_status loom__run_parallel(loom_ctx *ctx, loom_tensor **order, size_t n)
{
    if (!loom__ctx_pool(ctx)) return loom_last_status();
    exec_node *nodes = malloc(sizeof *nodes * n);
    int64_t *succ = NULL;
    int64_t *off = malloc(sizeof *off * (n + 1));
    int *indeg = malloc(sizeof *indeg * n);
    void **roots = malloc(sizeof *roots * n);
    bool *alone = malloc(sizeof *alone * n);
    loom_status st = LOOM_OK;
    if (!nodes || !off || !indeg || !roots || !alone) {
        st = loom__set_error(LOOM_ERR_NOMEM, "eval: out of memory scheduling the graph");
        goto out;
    }
    if ((st = loom__order_edges(order, n, ctx->epoch, indeg, off, &succ)) != LOOM_OK) goto out;
    if (!loom__dag_alone(n, off, succ, alone)) {
        st = loom__set_error(LOOM_ERR_NOMEM, "eval: out of memory scheduling the graph");
        goto out;
    }
    int64_t nroots = 0;
    for (size_t i = 0; i < n; i++) {
        exec_node *x = &nodes[i];
        x->t = order[i];
        order[i]->alone = alone[i];
        x->d.wide = loom__node_want_alone(order[i], ctx->num_threads, alone[i]) > 1;
        x->d.host = order[i]->node.op == LOOM_OP_HOST_CALL;
        x->d.routed = false;
        x->d.home = -1;
        x->d.master = 0;
        x->d.succ_begin = off[i];
        x->d.succ_end = off[i + 1];
        atomic_init(&x->d.pending, indeg[i]);
        if (indeg[i] == 0) roots[nroots++] = x;
    }
    const loom__dag dag = {.nodes = (char *)nodes,
                           .stride = sizeof *nodes,
                           .succ = succ,
                           .run = run_tensor,
                           .home = ctx->numa_dispatch ? tensor_home : NULL,
                           .wide_home = ctx->wide_home,
                           .sent_home = &ctx->nodes_sent_home,
                           .user = ctx};
    st = loom__dag_run(ctx->pool, &dag, roots, nroots);
out:
    free(nodes);
    free(succ);
    free(off);
    free(indeg);
    free(roots);
    free(alone);
    return st;
}
