/*
 * loom/graph.h - capturing a step once and replaying it (static graphs).
 *
 * Loom records every op as it is called (define-by-run). For a training or
 * inference step that repeats with the same shapes, that recording, the
 * graph walks, the kernel choices and the buffer allocations are the same
 * every time. A captured graph does them once: loom_graph_capture_begin ..
 * end runs one step as usual and records what ran; loom_graph_replay then
 * runs the same kernels again, on the same scheduler, with a plan, buffers
 * and primitives fixed at capture, and no heap allocation at all.
 * Steps that differ (another shape, another branch) are simply recorded as
 * always, beside or instead of the graph.
 *
 *     loom_tensor *x = loom_zeros(ctx, LOOM_FLOAT32, 2, xs);  // static input
 *     ...one or more eager steps (the optimizer creates its state)...
 *     loom_graph_capture_begin(ctx);
 *     loom_scope_begin(ctx);
 *     loom_optimizer_zero_grad(opt);
 *     loom_tensor *loss = loom_scope_keep(...forward and loss of x...);
 *     loom_backward(loss, NULL, NULL);
 *     loom_optimizer_step(opt);
 *     loom_scope_end(ctx);                    // loss survives: kept one scope up
 *     loom_graph *g = loom_graph_capture_end(ctx);
 *     for (each later batch) {
 *         loom_tensor_assign(x, batch);       // new data into the static input
 *         loom_graph_replay(g);               // forward, backward and update
 *         loom_tensor_item(loss, &v);         // the step's loss
 *     }
 *     loom_graph_free(g);
 *
 * What a replay repeats, and what it does not (as with CUDA graphs):
 *   - It reads the tensors the step read, at replay time: parameters,
 *     running statistics, optimizer state and inputs made before the
 *     capture. Write new data into them in place (loom_tensor_assign).
 *   - It writes the tensors the step wrote: parameters and buffers updated
 *     in place, gradients, optimizer state, and every tensor of the step
 *     still alive at capture end (keep the ones you want to read, such as
 *     the loss). Temporaries that died share planned buffers.
 *   - Everything else is fixed at capture: shapes, kernels, scalars of the
 *     ops, constants created during the step, the learning rate. Capture
 *     again to change them.
 *   - Optimizers: capture a step only after one eager step has created
 *     their state; Adam(W) keeps its step count in a tensor, so bias
 *     corrections advance with every replay. AMSGrad is not capturable.
 *   - Random numbers (dropout, loom_rand/randn/randint during the step):
 *     each replay draws again, from the context's stream where an eager
 *     step would, and moves the stream on as the step did.
 *   - Refused with an error at capture end: host calls (dist/'s
 *     all-reduce), a random stream moved other than by a draw (reseeding
 *     inside the step), and state replaced by a new tensor outside the
 *     optimizers (replays would read stale values).
 *
 * Results are bitwise those of the same steps run eagerly. Free a graph
 * before its context. A graph is used from the context's thread.
 */
#ifndef LOOM_GRAPH_H
#define LOOM_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "loom/context.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_graph loom_graph;

/* Starts capturing ctx's work. LOOM_ERR_STATE if a capture is already in
 * progress. */
loom_status loom_graph_capture_begin(loom_ctx *ctx);

/* Ends the capture and returns the graph (free with loom_graph_free), or
 * NULL with loom_last_error() set when the step cannot be replayed or
 * failed. Either way the capture is over. */
loom_graph *loom_graph_capture_end(loom_ctx *ctx);

/* Runs the captured step again. On failure (a kernel's error) the
 * tensors it writes are unspecified; the graph stays usable. */
loom_status loom_graph_replay(loom_graph *g);

void loom_graph_free(loom_graph *g);

/* Whether a capture is in progress on ctx. */
bool loom_graph_capturing(const loom_ctx *ctx);

/* For state kept by replacement rather than in place (as the optimizers
 * keep their moments): tells a capture in progress that the step made
 * `now` to take the place of `old`, which it read. Each replay then first
 * copies now's values into old's buffer, so that it reads what the next
 * eager step would. Both contiguous, of one dtype and size. LOOM_OK and
 * nothing done without a capture. */
loom_status loom_graph_carry(loom_tensor *old, loom_tensor *now);

typedef struct loom_graph_stats {
    int64_t nodes;          /* nodes of the step, views included */
    int64_t kernels;        /* nodes that run a kernel */
    int64_t segments;       /* evaluations the step made (each a DAG run) */
    int64_t copies;         /* in-place writes (loom_tensor_assign) */
    int64_t carries;        /* state copied forward at each replay */
    int64_t temporaries;    /* buffers that died during the step */
    int64_t temporary_bytes; /* their sizes summed */
    int64_t planned_bytes;  /* the buffers they share after planning */
    int64_t held_bytes;     /* buffers the graph keeps (inputs, outputs, constants) */
} loom_graph_stats;

void loom_graph_get_stats(const loom_graph *g, loom_graph_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* LOOM_GRAPH_H */
