/*
 * graph/context.c - creating and freeing contexts.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#include <unistd.h>

#include "backends/registry.h"
#include "graph/eval.h"
#include "graph/tensor_impl.h"
#include "graph/trace.h"
#include "loom/loom.h"
#include "runtime/error.h"
#include "runtime/pool.h"
#include "runtime/topology.h"


const char *loom_version(void) { return "0.1.0"; }

/* Cores this process may run on. */
static int available_cores(void)
{
#ifdef _OPENMP
    int n = omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#endif
    return n > 0 ? (int)n : 1;
}

/* Parses a positive int from an environment variable; 0 if unset, -1 if bad. */
static int env_threads(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || n < 1 || n > 4096) return -1;
    return (int)n;
}

/* The block cache's limit (loom__mem.cache_limit) for options.cache_bytes:
 * 0 takes LOOM_CACHE_MB ("auto" or MiB) or the automatic rule. False, with
 * the error set, for a bad LOOM_CACHE_MB. */
static bool cache_limit(int64_t requested, int64_t *out)
{
    if (requested != 0) {
        *out = requested < 0 ? 0 : requested;
        return true;
    }
    *out = LOOM__MEM_CACHE_AUTO;
    const char *v = getenv("LOOM_CACHE_MB");
    if (!v || !*v || strcmp(v, "auto") == 0) return true;
    char *end;
    errno = 0;
    long long mb = strtoll(v, &end, 10);
    if (errno || *end || mb < 0 || mb > ((long long)1 << 40)) {
        loom__set_error(LOOM_ERR_INVALID_ARG,
                        "ctx_create: LOOM_CACHE_MB=\"%s\" is neither \"auto\" nor a size in MiB >= 0", v);
        return false;
    }
    *out = (int64_t)mb << 20;
    return true;
}

loom_ctx *loom_ctx_create(const loom_ctx_options *opts)
{
    loom_ctx_options o = {0};
    if (opts) o = *opts;
    if (o.num_threads < 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "ctx_create: num_threads is %d; it must be >= 0 (0 = all cores)",
                        o.num_threads);
        return NULL;
    }
    int threads = o.num_threads;
    if (threads == 0) {
        threads = env_threads("LOOM_NUM_THREADS");
        if (threads < 0) {
            loom__set_error(LOOM_ERR_INVALID_ARG, "ctx_create: LOOM_NUM_THREADS=\"%s\" is not a thread count between 1 and 4096",
                            getenv("LOOM_NUM_THREADS"));
            return NULL;
        }
        if (threads == 0) threads = available_cores();
    }
    if (o.num_workers < 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "ctx_create: num_workers is %d; it must be >= 0 (0 = default)",
                        o.num_workers);
        return NULL;
    }
    int workers = o.num_workers;
    if (workers == 0) {
        workers = env_threads("LOOM_NUM_WORKERS");
        if (workers < 0) {
            loom__set_error(LOOM_ERR_INVALID_ARG,
                            "ctx_create: LOOM_NUM_WORKERS=\"%s\" is not a worker count between 1 and 4096",
                            getenv("LOOM_NUM_WORKERS"));
            return NULL;
        }
        if (workers == 0) workers = threads;
    }
    int64_t cache;
    if (!cache_limit(o.cache_bytes, &cache)) return NULL;
    const char *bname = o.backend;
    if (!bname) bname = getenv("LOOM_BACKEND");
    loom__backend_choice choice;
    if (!loom__backend_parse(bname, &choice)) {
        loom__set_error(LOOM_ERR_INVALID_ARG,
                        "ctx_create: unknown backend \"%s\" (expected \"auto\", \"ref\" or \"onednn\")", bname);
        return NULL;
    }
#ifndef LOOM_HAVE_ONEDNN
    if (choice == LOOM__BACKEND_ONEDNN) {
        loom__set_error(LOOM_ERR_INVALID_ARG,
                        "ctx_create: backend \"onednn\" requested but Loom was built without oneDNN "
                        "(install libdnnl-dev and re-run configure)");
        return NULL;
    }
#endif

    loom__mem mem;
    loom__mem_init(&mem, o.allocator);
    loom_ctx *ctx = loom__mem_alloc(&mem, sizeof *ctx);
    loom__scope *root = ctx ? loom__mem_alloc(&mem, sizeof *root) : NULL;
    /* More workers than threads would run more threads than Loom was given. */
    const int nworkers = workers < threads ? workers : threads;
    loom__wcount *wcount = root ? loom__mem_alloc(&mem, sizeof *wcount * (size_t)nworkers) : NULL;
    if (!wcount) {
        loom__mem_free(&mem, root);
        loom__mem_free(&mem, ctx);
        loom__mem_drain(&mem);
        loom__set_error(LOOM_ERR_NOMEM, "ctx_create: out of memory");
        return NULL;
    }
    memset(ctx, 0, sizeof *ctx);
    /* The local mem has no cached blocks yet: start the context's afresh
     * with the same allocator. */
    loom__mem_init(&ctx->mem, o.allocator);
    ctx->mem.cache_limit = cache;
    ctx->num_threads = threads;
    ctx->num_workers = nworkers;
    ctx->kernel_threads = threads; /* the serial loop's width (one worker) */
    ctx->wcount = wcount;
    for (int i = 0; i < nworkers; i++) {
        atomic_init(&wcount[i].nodes_run, 0);
        atomic_init(&wcount[i].flops, 0);
    }
    ctx->pool = NULL;
    ctx->backend = choice;
    const char *prof = getenv("LOOM_PROFILE");
    ctx->profile_env = prof && *prof && strcmp(prof, "0") != 0;
    atomic_init(&ctx->profile, ctx->profile_env);
    const char *keep = getenv("LOOM_KEEP_BLOCKED");
    ctx->keep_blocked = !(keep && strcmp(keep, "0") == 0);
    const char *ww = getenv("LOOM_WIDE_WIDTH");
    ctx->wide_width = loom__wide_width_policy(ww);
    if (ww && *ww && strcmp(ww, "big") && strcmp(ww, "planned") && strcmp(ww, "full"))
        fprintf(stderr, "loom: LOOM_WIDE_WIDTH=%s is not big, planned or full; using big\n", ww);
    atomic_init(&ctx->nodes_sent_home, 0);
    atomic_init(&ctx->nodes_away, 0);
    atomic_init(&ctx->sched_trace, NULL);
    atomic_init(&ctx->sched_observers, 0);
    const char *trace = getenv("LOOM_TRACE");
    if (trace && *trace) {
        /* Best effort: a context that cannot trace still computes. */
        ctx->trace_path = strdup(trace);
        if (ctx->trace_path && loom_trace_start(ctx) != LOOM_OK) {
            free(ctx->trace_path);
            ctx->trace_path = NULL;
        }
    }
    ctx->rng_seed = o.seed;
    ctx->rng_offset = 0;
    root->parent = NULL;
    root->head = NULL;
    ctx->scope = root;
    ctx->scope_depth = 0;
    atomic_init(&ctx->live_tensors, 0);
    return ctx;
}

void loom_ctx_free(loom_ctx *ctx)
{
    if (!ctx) return;
    if (ctx->profile_env) {
        char *table = loom_profile_report(ctx);
        if (table) fputs(table, stderr);
        free(table);
    }
    if (ctx->trace) {
        if (ctx->trace_path && loom_trace_stop(ctx, ctx->trace_path) != LOOM_OK)
            fprintf(stderr, "loom: LOOM_TRACE: %s\n", loom_last_error());
        loom__trace_free(ctx->trace); /* stopped by the user's path, or NULL */
        ctx->trace = NULL;
    }
    free(ctx->trace_path);
    while (ctx->scope_depth > 0) loom_scope_end(ctx);
    loom__scope_clear(ctx->scope);
    loom__mem_set_binder(&ctx->mem, NULL, NULL); /* it points into the pool's topology */
    loom__pool_free(ctx->pool);
    /* The context's own blocks go last, through a copy of its allocator. */
    loom__mem_drain(&ctx->mem);
    loom__mem last;
    loom__mem_init(&last, &ctx->mem.alloc);
    loom__mem_free(&last, ctx->scope);
    loom__mem_free(&last, ctx->wcount);
    loom__mem_free(&last, ctx);
    loom__mem_drain(&last);
}

int loom_ctx_num_threads(const loom_ctx *ctx) { return ctx ? ctx->num_threads : 0; }
int loom_ctx_num_workers(const loom_ctx *ctx) { return ctx ? ctx->num_workers : 0; }

const char *loom_ctx_backend(const loom_ctx *ctx)
{
    if (!ctx) return "auto";
    return ctx->backend == LOOM__BACKEND_REF ? "ref" : ctx->backend == LOOM__BACKEND_ONEDNN ? "onednn" : "auto";
}

void loom_ctx_get_stats(const loom_ctx *ctx, loom_ctx_stats *out)
{
    if (!ctx || !out) return;
    out->live_tensors = atomic_load_explicit(&ctx->live_tensors, memory_order_relaxed);
    out->live_bytes = atomic_load_explicit(&ctx->mem.live_bytes, memory_order_relaxed);
    out->peak_bytes = atomic_load_explicit(&ctx->mem.peak_bytes, memory_order_relaxed);
    out->cached_bytes = (int64_t)loom__mem_cached_bytes((loom__mem *)&ctx->mem);
    out->nodes_run = out->flops = 0;
    for (int i = 0; i < ctx->num_workers; i++) {
        out->nodes_run += atomic_load_explicit(&ctx->wcount[i].nodes_run, memory_order_relaxed);
        out->flops += atomic_load_explicit(&ctx->wcount[i].flops, memory_order_relaxed);
    }
    out->nodes_sent_home = atomic_load_explicit(&ctx->nodes_sent_home, memory_order_relaxed);
    out->nodes_run_away = atomic_load_explicit(&ctx->nodes_away, memory_order_relaxed);
    out->bound_blocks = atomic_load_explicit(&ctx->mem.bound_blocks, memory_order_relaxed);
}

void loom_ctx_empty_cache(loom_ctx *ctx)
{
    if (ctx) loom__mem_drain(&ctx->mem);
}

void loom_manual_seed(loom_ctx *ctx, uint64_t seed)
{
    if (!ctx) return;
    ctx->rng_seed = seed;
    ctx->rng_offset = 0;
}

void loom_rng_get_state(const loom_ctx *ctx, loom_rng_state *out)
{
    if (!ctx || !out) return;
    out->seed = ctx->rng_seed;
    out->offset = ctx->rng_offset;
}

void loom_rng_set_state(loom_ctx *ctx, const loom_rng_state *state)
{
    if (!ctx || !state) return;
    ctx->rng_seed = state->seed;
    ctx->rng_offset = state->offset;
}

/* The vector ISA the portable kernels were compiled for. */
static const char *kernel_isa(void)
{
#if defined(__AVX512F__)
    return "AVX-512";
#elif defined(__AVX2__) && defined(__FMA__)
    return "AVX2+FMA";
#elif defined(__AVX__)
    return "AVX";
#elif defined(__SSE2__) || defined(__ARM_NEON)
    return "128-bit SIMD";
#else
    return "scalar";
#endif
}

char *loom_ctx_describe(loom_ctx *ctx)
{
    if (!ctx) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "ctx_describe: context is NULL");
        return NULL;
    }
    const char *isa = loom__registry_onednn_isa();
    char conv[256] = ""; /* stays empty without oneDNN */
    loom__registry_onednn_conv(conv, sizeof conv);
    char head[1024];
    int hn = snprintf(head, sizeof head,
                      "Loom %s\n"
                      "build:    oneDNN %s%s%s%s, hwloc %s, OpenMP %s, portable kernels %s\n"
                      "%s%s%s"
                      "context:  %d threads, %d worker%s (%s), backend %s\n\n",
                      loom_version(),
#ifdef LOOM_HAVE_ONEDNN
                      "yes",
#else
                      "no",
#endif
                      isa ? " (JIT ISA " : "", isa ? isa : "", isa ? ")" : "",
#ifdef LOOM_HAVE_HWLOC
                      "yes",
#else
                      "no",
#endif
#ifdef _OPENMP
                      "yes",
#else
                      "no",
#endif
                      kernel_isa(), conv[0] ? "convs:    oneDNN " : "", conv, conv[0] ? "\n" : "",
                      ctx->num_threads, ctx->num_workers, ctx->num_workers == 1 ? "" : "s",
                      ctx->num_workers == 1 ? "scheduler off: nodes in order, each with every thread"
                                            : "work-stealing scheduler, core budget = the threads",
                      loom_ctx_backend(ctx));
    if (hn < 0) hn = 0;
    /* The topology and the placement the pool uses (or would use). */
    loom__topology *topo = loom__topology_create(NULL);
    if (!topo) return NULL;
    int nw = ctx->num_workers;
    int *wc = malloc(sizeof *wc * (size_t)nw);
    char *out = NULL;
    if (!wc) {
        loom__set_error(LOOM_ERR_NOMEM, "ctx_describe: out of memory");
    } else if (loom__topology_place(topo, nw, NULL, 0, LOOM__PLACE_SPREAD, wc) == LOOM_OK) { /* else: its error */
        size_t need = loom__topology_describe(topo, wc, nw, NULL, 0);
        out = malloc((size_t)hn + need + 1);
        if (out) {
            memcpy(out, head, (size_t)hn);
            loom__topology_describe(topo, wc, nw, out + hn, need + 1);
        } else {
            loom__set_error(LOOM_ERR_NOMEM, "ctx_describe: out of memory");
        }
    }
    free(wc);
    loom__topology_free(topo);
    return out;
}
