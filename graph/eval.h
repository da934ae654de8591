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

/* Runs one node whose inputs are all READY (the unit of work a scheduler
 * hands to a worker). Thread-safe for distinct nodes. */
loom_status loom__run_node(loom_tensor *t);

#endif /* LOOM_GRAPH_EVAL_H */
