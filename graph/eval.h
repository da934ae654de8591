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
