/*
 * graph/trace.c - timeline tracing: every node the context runs becomes a
 * slice on its thread's track in a Chrome trace-event file.
 *
 * Events go into one array under a spin lock (a few instructions per node;
 * tracing is a diagnostic mode, and LOOM_PROFILE-style per-op totals need no
 * tracer). Threads are numbered in the order they first run a node, so the
 * tracks read "loom thread 0, 1, ..."; thread 0 is usually the caller. The
 * file is written at loom_trace_stop (or, with LOOM_TRACE=path, when the
 * context is freed) to a temporary name and renamed, so a reader never sees
 * half a file. At most LOOM__TRACE_MAX events are kept (about 56 MB); later
 * ones are counted as dropped and the count is written in the file's
 * metadata.
 *
 * The pool's scheduling events come here too (runtime/pool.h's observer,
 * installed by graph/exec.c): "idle" slices while a worker is parked and
 * "steal" instants (from which worker), category "scheduler", so a trace
 * shows where workers starved and how work moved.
 */
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backends/registry.h"
#include "graph/tensor_impl.h"
#include "graph/trace.h"
#include "runtime/error.h"

#define LOOM__TRACE_MAX (1 << 20)

typedef struct event {
    int64_t t0, t1;
    const char *backend; /* static string */
    int64_t shape[4];    /* the output's first four dims */
    int16_t op;
    int8_t ndim;
    int8_t tid;
    int16_t threads; /* the kernel's width; for a steal, the victim worker */
    int8_t kind;     /* 0 a node, 1 idle (parked), 2 a steal, 3 a wait for cores */
    int16_t worker;  /* the pool's worker index (idle, steal), or -1 */
    int8_t layout;   /* the output's loom__layout */
} event;

struct loom__trace {
    atomic_flag lock;
    int64_t origin; /* ns at start */
    event *ev;
    size_t n, cap;
    int64_t dropped;
    int nthreads; /* numbered so far */
    uint64_t generation;
};

int64_t loom__trace_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A thread's number in a trace: cached per thread with the trace's
 * generation, so a new trace renumbers. */
static _Thread_local uint64_t my_gen;
static _Thread_local int my_tid;
static _Atomic uint64_t generations;

/* Appends *ev (its tid filled in here) under the lock. */
static void push(loom__trace *tr, event *ev)
{
    while (atomic_flag_test_and_set_explicit(&tr->lock, memory_order_acquire)) {
    }
    if (my_gen != tr->generation) {
        my_gen = tr->generation;
        my_tid = tr->nthreads < 127 ? tr->nthreads++ : 127;
    }
    if (tr->n == tr->cap && tr->cap < LOOM__TRACE_MAX) {
        size_t cap = tr->cap ? tr->cap * 2 : 4096;
        event *e = realloc(tr->ev, cap * sizeof *e);
        if (e) {
            tr->ev = e;
            tr->cap = cap;
        }
    }
    if (tr->n < tr->cap) {
        ev->tid = (int8_t)my_tid;
        tr->ev[tr->n++] = *ev;
    } else {
        tr->dropped++;
    }
    atomic_flag_clear_explicit(&tr->lock, memory_order_release);
}

void loom__trace_node(loom__trace *tr, loom__op op, const char *backend, int64_t t0, int64_t t1, int ndim,
                      const int64_t *shape, int threads, int layout)
{
    event e = {.t0 = t0, .t1 = t1, .backend = backend ? backend : "?", .op = (int16_t)op, .ndim = (int8_t)ndim,
               .threads = (int16_t)threads, .kind = 0, .worker = -1, .layout = (int8_t)layout};
    for (int d = 0; d < 4; d++) e.shape[d] = d < ndim ? shape[d] : 0;
    push(tr, &e);
}

void loom__trace_sched(loom__trace *tr, int kind, int worker, int other, int64_t t0, int64_t t1)
{
    event e = {.t0 = t0, .t1 = t1, .backend = "", .kind = (int8_t)kind, .worker = (int16_t)worker,
               .threads = (int16_t)other};
    push(tr, &e);
}

void loom__trace_free(loom__trace *tr)
{
    if (!tr) return;
    free(tr->ev);
    free(tr);
}

loom_status loom_trace_start(loom_ctx *ctx)
{
    if (!ctx) return loom__set_error(LOOM_ERR_INVALID_ARG, "trace_start: context is NULL");
    if (ctx->trace) return loom__set_error(LOOM_ERR_STATE, "trace_start: a trace is already running");
    loom__trace *tr = calloc(1, sizeof *tr);
    if (!tr) return loom__set_error(LOOM_ERR_NOMEM, "trace_start: out of memory");
    atomic_flag_clear(&tr->lock);
    tr->origin = loom__trace_now();
    tr->generation = atomic_fetch_add(&generations, 1) + 1;
    ctx->trace = tr;
    atomic_store_explicit(&ctx->sched_trace, tr, memory_order_seq_cst);
    return LOOM_OK;
}

static void write_events(FILE *f, const loom__trace *tr)
{
    fprintf(f, "{\"displayTimeUnit\": \"ms\", \"otherData\": {\"producer\": \"loom\", \"dropped_events\": %lld},\n"
               "\"traceEvents\": [\n",
            (long long)tr->dropped);
    fprintf(f, "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": 1, \"args\": {\"name\": \"loom\"}}");
    for (int t = 0; t < tr->nthreads; t++)
        fprintf(f, ",\n{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 1, \"tid\": %d, \"args\": {\"name\": "
                   "\"loom thread %d\"}}",
                t, t);
    for (size_t i = 0; i < tr->n; i++) {
        const event *e = &tr->ev[i];
        const double ts = (double)(e->t0 - tr->origin) * 1e-3;
        if (e->kind == 1) { /* idle: a slice of its own category */
            fprintf(f,
                    ",\n{\"name\": \"idle\", \"cat\": \"scheduler\", \"ph\": \"X\", \"pid\": 1, \"tid\": %d, "
                    "\"ts\": %.3f, \"dur\": %.3f, \"args\": {\"worker\": %d, \"state\": \"parked\"}}",
                    e->tid, ts, (double)(e->t1 - e->t0) * 1e-3, e->worker);
            continue;
        }
        if (e->kind == 3) { /* a wait for core tokens */
            fprintf(f,
                    ",\n{\"name\": \"wait for cores\", \"cat\": \"scheduler\", \"ph\": \"X\", \"pid\": 1, "
                    "\"tid\": %d, \"ts\": %.3f, \"dur\": %.3f, \"args\": {\"worker\": %d, \"width\": %d}}",
                    e->tid, ts, (double)(e->t1 - e->t0) * 1e-3, e->worker, e->threads);
            continue;
        }
        if (e->kind == 2) { /* a steal: an instant on the thief's track */
            fprintf(f,
                    ",\n{\"name\": \"steal\", \"cat\": \"scheduler\", \"ph\": \"i\", \"s\": \"t\", \"pid\": 1, "
                    "\"tid\": %d, \"ts\": %.3f, \"args\": {\"worker\": %d, \"from_worker\": %d}}",
                    e->tid, ts, e->worker, e->threads);
            continue;
        }
        char shape[96] = "[";
        size_t len = 1;
        for (int d = 0; d < e->ndim && d < 4; d++)
            len += (size_t)snprintf(shape + len, sizeof shape - len, "%s%lld", d ? ", " : "", (long long)e->shape[d]);
        snprintf(shape + len, sizeof shape - len, "%s]", e->ndim > 4 ? ", ..." : "");
        static const char *const layouts[] = {"plain", "nChw8c", "nChw16c"};
        const char *layout = e->layout >= 0 && e->layout < 3 ? layouts[e->layout] : "?";
        /* Microseconds with ns precision, as the format allows fractions. */
        fprintf(f,
                ",\n{\"name\": \"%s\", \"cat\": \"%s\", \"ph\": \"X\", \"pid\": 1, \"tid\": %d, \"ts\": %.3f, "
                "\"dur\": %.3f, \"args\": {\"backend\": \"%s\", \"output\": \"%s\", \"layout\": \"%s\", "
                "\"threads\": %d}}",
                loom__op_name((loom__op)e->op), e->backend, e->tid, ts,
                (double)(e->t1 - e->t0) * 1e-3, e->backend, shape, layout, e->threads);
    }
    fprintf(f, "\n]}\n");
}

loom_status loom_trace_stop(loom_ctx *ctx, const char *path)
{
    if (!ctx) return loom__set_error(LOOM_ERR_INVALID_ARG, "trace_stop: context is NULL");
    loom__trace *tr = ctx->trace;
    if (!tr) return loom__set_error(LOOM_ERR_STATE, "trace_stop: no trace is running (call loom_trace_start)");
    ctx->trace = NULL;
    /* Workers record scheduling events even between runs: unpublish the
     * trace, then wait for any observer still using it (graph/exec.c). */
    atomic_store_explicit(&ctx->sched_trace, NULL, memory_order_seq_cst);
    while (atomic_load_explicit(&ctx->sched_observers, memory_order_acquire) != 0) sched_yield();
    loom_status st = LOOM_OK;
    if (path) {
        size_t plen = strlen(path);
        char *tmp = malloc(plen + 32);
        if (!tmp) {
            st = loom__set_error(LOOM_ERR_NOMEM, "trace_stop: out of memory");
        } else {
            snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
            FILE *f = fopen(tmp, "w");
            if (!f) {
                st = loom__set_error(LOOM_ERR_IO, "trace_stop: cannot create %s", tmp);
            } else {
                write_events(f, tr);
                bool ok = !ferror(f);
                ok = fclose(f) == 0 && ok;
                if (!ok || rename(tmp, path) != 0) {
                    remove(tmp);
                    st = loom__set_error(LOOM_ERR_IO, "trace_stop: cannot write %s", path);
                }
            }
            free(tmp);
        }
    }
    loom__trace_free(tr);
    return st;
}
