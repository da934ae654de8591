/*
 * graph/trace.h - the timeline tracer behind loom_trace_start/stop and
 * LOOM_TRACE (graph/trace.c): one slice per executed node, written as a
 * Chrome trace-event file (Perfetto, chrome://tracing).
 */
#ifndef LOOM_GRAPH_TRACE_H
#define LOOM_GRAPH_TRACE_H

#include <stdint.h>

#include "backends/kernel.h"

typedef struct loom__trace loom__trace;

/* Nanoseconds on the monotonic clock. */
int64_t loom__trace_now(void);

/* Records one executed node (thread-safe): op, start and end times, the
 * backend that ran it, the output's shape, the kernel's threads and the
 * layout it wrote (loom__layout). Drops the event (counting it) when the
 * buffer is full or out of memory. */
void loom__trace_node(loom__trace *tr, loom__op op, const char *backend, int64_t t0, int64_t t1, int ndim,
                      const int64_t *shape, int threads, int layout);

/* Records a scheduling event of the pool (thread-safe): kind 1 a parked
 * (idle) interval of `worker`, kind 2 a steal by `worker` from `other`
 * (an instant at t0), kind 3 `worker` waiting for `other` core tokens. */
void loom__trace_sched(loom__trace *tr, int kind, int worker, int other, int64_t t0, int64_t t1);

/* Frees a tracer (events not written are lost). NULL is a no-op. */
void loom__trace_free(loom__trace *tr);

#endif /* LOOM_GRAPH_TRACE_H */
