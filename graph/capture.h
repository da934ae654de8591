/*
 * graph/capture.h - what the rest of Loom tells a capture in progress
 * (graph/capture.c; the public side is loom/graph.h).
 *
 * While ctx->capture is set, every evaluation, node run and host-side write
 * of the step is recorded, so that loom_graph_replay can run the step again
 * on the same buffers without recording it. Each hook below is a no-op
 * cost (one pointer test) when no capture is in progress.
 */
#ifndef LOOM_GRAPH_CAPTURE_H
#define LOOM_GRAPH_CAPTURE_H

#include "graph/eval.h"

/* An evaluation is about to run order[0..n), a walk of epoch `epoch`
 * (loom__eval, loom__eval_many): it becomes a segment of the replay, with
 * the walk's edges. Sets each tensor's exec_idx. User thread. */
loom_status loom__capture_segment(loom__capture *cap, loom_tensor **order, size_t n, uint64_t epoch);

/* The current segment failed (its error is loom_last_error()): the capture
 * cannot give a graph. */
void loom__capture_failed(loom__capture *cap);

/* Node t of the current segment ran as x describes (NULL: a view or an
 * empty tensor, nothing to run). Thread-safe (workers call it). An error
 * fails the node: an op the replay cannot repeat (a host call). */
loom_status loom__capture_node(loom__capture *cap, loom_tensor *t, const loom__exec *x);

/* loom_tensor_assign copied src (contiguous, of dst's dtype) into dst. */
loom_status loom__capture_copy(loom_ctx *ctx, const loom_tensor *src, const loom_tensor *dst);

/* A user read is about to convert storage s from its blocked layout to
 * plain in place. */
loom_status loom__capture_make_plain(loom_ctx *ctx, loom__storage *s);

/* A fill of random numbers (ops/random.c): fill(kind, data, n, seed, base,
 * low, high, nthreads) writes n values from the stream's blocks base.. and
 * returns the blocks used. */
typedef uint64_t (*loom__rand_fill_fn)(int kind, void *data, int64_t n, uint64_t seed, uint64_t base, int64_t low,
                                       int64_t high, int nthreads);

/* t (ready, contiguous) was just filled by `fill` from the context's stream
 * at block `base`. A replay fills it again at the same distance from the
 * context's offset of that moment, and advances the offset as the step did,
 * so replays draw what eager steps would. */
loom_status loom__capture_rand(loom_ctx *ctx, const loom_tensor *t, loom__rand_fill_fn fill, int kind, uint64_t base,
                               int64_t low, int64_t high);

/* loom_graph_carry's record (both tensors computed). */
loom_status loom__capture_carry(loom_ctx *ctx, const loom_tensor *old, const loom_tensor *now);

/* Tests: the NUMA route the last replay decided for each node of g, in
 * segment and walk order, up to cap of them: whether it runs a kernel (a
 * view runs none, and has no home), wide or not, home NUMA node
 * (-1: none) and, for a wide node, the worker it was pinned to. Returns
 * the number of nodes. */
struct loom_graph;
int64_t loom__graph_routes(const struct loom_graph *g, bool *runs, bool *wide, int *home, int *master, int64_t cap);

#endif /* LOOM_GRAPH_CAPTURE_H */
