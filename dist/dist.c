/*
 * dist/dist.c - data-parallel training over MPI (loom/dist.h).
 *
 * The gradient buckets are LOOM_OP_HOST_CALL nodes recorded by a backward
 * hook (graph/autograd_impl.h): for bucket k,
 *     flat_k = cat(reshape(g_p, [numel]) for p in bucket k)     [n_k]
 *     red_k  = host_call(flat_k, deps = {red_(k-1)}, reduce)    [n_k]
 *     g_p'   = reshape(slice(red_k, offset_p, numel_p), shape_p)
 * so a bucket is reduced as soon as its gradients exist, while the workers
 * go on with the rest of the backward, and the dependency on the previous
 * bucket fixes the order of the collectives (the same on every rank, and
 * one MPI call at a time: MPI_THREAD_SERIALIZED suffices).
 *
 * reduce(): MPI_Ireduce_scatter_block then MPI_Iallgather over a copy
 * padded to a multiple of the ranks: each element is summed (and divided
 * by the ranks) once, on its owner, and the same bits go to every rank, so
 * the replicas stay bitwise identical whatever algorithm MPI picks. The
 * requests are polled with MPI_Test until timeout_s.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph/autograd_impl.h"
#include "loom/dist.h"
#include "loom/loom.h"
#include "ops/ops_internal.h"
#include "runtime/error.h"

#ifndef LOOM_HAVE_MPI

/* ---- without MPI: every call says so ------------------------------------ */

static loom_status no_mpi(const char *fn)
{
    return loom__set_error(LOOM_ERR_STATE, "%s: Loom was built without MPI (configure --with-mpi, libopenmpi-dev)", fn);
}

bool loom_dist_available(void) { return false; }
loom_status loom_dist_init(int *argc, char ***argv, const loom_dist_options *opts, loom_dist **out)
{
    (void)argc, (void)argv, (void)opts;
    if (out) *out = NULL;
    return no_mpi("dist_init");
}
loom_status loom_dist_from_comm(const void *comm, const loom_dist_options *opts, loom_dist **out)
{
    (void)comm, (void)opts;
    if (out) *out = NULL;
    return no_mpi("dist_from_comm");
}
int loom_dist_rank(const loom_dist *d) { return (void)d, 0; }
int loom_dist_size(const loom_dist *d) { return (void)d, 1; }
loom_status loom_dist_broadcast_module(loom_dist *d, loom_module *m) { return (void)d, (void)m, no_mpi("dist_broadcast_module"); }
loom_status loom_dist_backward(loom_dist *d, loom_module *m, loom_tensor *loss)
{
    return (void)d, (void)m, (void)loss, no_mpi("dist_backward");
}
loom_status loom_dist_allreduce_mean(loom_dist *d, double *v, int n) { return (void)d, (void)v, (void)n, no_mpi("dist_allreduce_mean"); }
loom_status loom_dist_barrier(loom_dist *d) { return (void)d, no_mpi("dist_barrier"); }
void loom_dist_abort(loom_dist *d, int code) { (void)d, (void)code; }
void loom_dist_get_stats(const loom_dist *d, loom_dist_stats *out)
{
    (void)d;
    if (out) memset(out, 0, sizeof *out);
}
void loom_dist_free(loom_dist *d) { (void)d; }

#else /* LOOM_HAVE_MPI */

#include <mpi.h>

struct loom_dist {
    MPI_Comm comm;
    int rank, size;
    bool finalize; /* loom_dist_init initialised MPI */
    double bucket_bytes, timeout_s;
    loom_dist_stats stats;
    /* Scratch of the bucket reductions (one runs at a time). */
    float *send, *recv;
    int64_t cap; /* floats in send (recv holds cap / size) */
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static loom_status mpi_error(const loom_dist *d, const char *what, int rc)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
    return loom__set_error(LOOM_ERR_STATE, "dist: rank %d: %s failed: %s", d->rank, what, msg);
}

/* Polls req until it completes or the timeout passes. MPI moves a
 * non-blocking collective forward only inside MPI calls, fragment by
 * fragment, so the poll spins: a nap between polls made a 4.8 MB bucket
 * take 56 ms instead of a few (shared memory sends 32 KB fragments, each
 * waiting for the peer's next poll). The spinning thread holds its core
 * token (the node's), so it takes no core from the compute. */
static loom_status wait_for(loom_dist *d, MPI_Request *req, const char *what)
{
    const double deadline = now() + d->timeout_s;
    for (unsigned polls = 1;; polls++) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_error(d, what, rc);
        if (done) return LOOM_OK;
        if (polls % 4096 == 0 && now() > deadline)
            return loom__set_error(LOOM_ERR_STATE,
                                   "dist: rank %d of %d: %s did not complete within %.0f s: another rank failed, "
                                   "stopped or is stuck (call loom_dist_abort to end the job)",
                                   d->rank, d->size, what, d->timeout_s);
    }
}

bool loom_dist_available(void) { return true; }

static loom_status make(MPI_Comm comm, bool finalize, const loom_dist_options *opts, loom_dist **out)
{
    loom_dist_options o = opts ? *opts : (loom_dist_options){0};
    if (!(o.bucket_mb >= 0) || !(o.timeout_s >= 0) || !isfinite(o.bucket_mb) || !isfinite(o.timeout_s))
        return loom__set_error(LOOM_ERR_INVALID_ARG, "dist: bucket_mb and timeout_s must be finite and >= 0");
    loom_dist *d = calloc(1, sizeof *d);
    if (!d) return loom__set_error(LOOM_ERR_NOMEM, "dist: out of memory");
    int rc = MPI_Comm_dup(comm, &d->comm);
    if (rc != MPI_SUCCESS) {
        free(d);
        return loom__set_error(LOOM_ERR_STATE, "dist: MPI_Comm_dup failed (%d)", rc);
    }
    /* Errors come back as codes (and become Loom errors), not aborts. */
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    d->finalize = finalize;
    d->bucket_bytes = (o.bucket_mb ? o.bucket_mb : 25.0) * 1048576.0;
    d->timeout_s = o.timeout_s ? o.timeout_s : 300.0;
    *out = d;
    return LOOM_OK;
}

loom_status loom_dist_init(int *argc, char ***argv, const loom_dist_options *opts, loom_dist **out)
{
    if (!out) return loom__set_error(LOOM_ERR_INVALID_ARG, "dist_init: out is NULL");
    *out = NULL;
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    bool ours = false;
    if (!inited) {
        if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
            return loom__set_error(LOOM_ERR_STATE, "dist_init: MPI_Init_thread failed");
        ours = true;
    } else {
        MPI_Query_thread(&provided);
    }
    if (provided < MPI_THREAD_SERIALIZED) {
        if (ours) MPI_Finalize();
        return loom__set_error(LOOM_ERR_STATE,
                               "dist_init: MPI provides thread level %d; Loom needs MPI_THREAD_SERIALIZED (%d): "
                               "its worker threads make the gradient reductions",
                               provided, MPI_THREAD_SERIALIZED);
    }
    loom_status st = make(MPI_COMM_WORLD, ours, opts, out);
    if (st != LOOM_OK && ours) MPI_Finalize();
    return st;
}

loom_status loom_dist_from_comm(const void *comm, const loom_dist_options *opts, loom_dist **out)
{
    if (!out || !comm) return loom__set_error(LOOM_ERR_INVALID_ARG, "dist_from_comm: comm and out must not be NULL");
    *out = NULL;
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited) return loom__set_error(LOOM_ERR_STATE, "dist_from_comm: MPI is not initialised");
    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_SERIALIZED)
        return loom__set_error(LOOM_ERR_STATE, "dist_from_comm: MPI was initialised below MPI_THREAD_SERIALIZED");
    return make(*(const MPI_Comm *)comm, false, opts, out);
}

int loom_dist_rank(const loom_dist *d) { return d ? d->rank : 0; }
int loom_dist_size(const loom_dist *d) { return d ? d->size : 1; }

loom_status loom_dist_barrier(loom_dist *d)
{
    if (!d) return loom__set_error(LOOM_ERR_INVALID_ARG, "dist_barrier: NULL");
    MPI_Request req;
    int rc = MPI_Ibarrier(d->comm, &req);
    return rc != MPI_SUCCESS ? mpi_error(d, "the barrier", rc) : wait_for(d, &req, "the barrier");
}

loom_status loom_dist_allreduce_mean(loom_dist *d, double *values, int n)
{
    if (!d || (n > 0 && !values) || n < 0) return loom__set_error(LOOM_ERR_INVALID_ARG, "dist_allreduce_mean: bad arguments");
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, values, n, MPI_DOUBLE, MPI_SUM, d->comm, &req);
    loom_status st = rc != MPI_SUCCESS ? mpi_error(d, "the metric all-reduce", rc) : wait_for(d, &req, "the metric all-reduce");
    for (int i = 0; st == LOOM_OK && i < n; i++) values[i] /= d->size;
    return st;
}

void loom_dist_abort(loom_dist *d, int code)
{
    if (!d) return;
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(d->comm, code);
}

void loom_dist_get_stats(const loom_dist *d, loom_dist_stats *out)
{
    if (!out) return;
    if (d) *out = d->stats;
    else memset(out, 0, sizeof *out);
}

void loom_dist_free(loom_dist *d)
{
    if (!d) return;
    MPI_Comm_free(&d->comm);
    free(d->send);
    free(d->recv);
    if (d->finalize) MPI_Finalize();
    free(d);
}

/* ---- the model: same everywhere, then rank 0's values ------------------- */

/* FNV-1a over the names, dtypes and shapes of m's state. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

loom_status loom_dist_broadcast_module(loom_dist *d, loom_module *m)
{
    if (!d || !m) return loom__set_error(LOOM_ERR_INVALID_ARG, "dist_broadcast_module: NULL argument");
    const int n = loom_module_state(m, NULL, NULL, 0);
    loom_tensor **ts = malloc(sizeof *ts * (size_t)(n ? n : 1));
    const char **names = malloc(sizeof *names * (size_t)(n ? n : 1));
    if (!ts || !names) {
        free(ts);
        free(names);
        return loom__set_error(LOOM_ERR_NOMEM, "dist: out of memory");
    }
    loom_module_state(m, ts, names, n);
    /* Every rank's signature: tensor count, elements, and a hash of the
     * names, dtypes and shapes. */
    int64_t sig[3] = {n, 0, 0};
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < n; i++) {
        int64_t shape[LOOM_MAX_DIMS];
        int nd = loom_tensor_ndim(ts[i]);
        loom_tensor_shape(ts[i], shape);
        int dt = (int)loom_tensor_dtype(ts[i]);
        h = fnv(h, names[i], strlen(names[i]) + 1);
        h = fnv(h, &dt, sizeof dt);
        h = fnv(h, &nd, sizeof nd);
        h = fnv(h, shape, sizeof *shape * (size_t)nd);
        sig[1] += loom_tensor_numel(ts[i]);
    }
    sig[2] = (int64_t)h;
    int64_t *all = malloc(sizeof *all * 3 * (size_t)d->size);
    loom_status st = all ? LOOM_OK : loom__set_error(LOOM_ERR_NOMEM, "dist: out of memory");
    MPI_Request req;
    if (st == LOOM_OK) {
        int rc = MPI_Iallgather(sig, 3, MPI_INT64_T, all, 3, MPI_INT64_T, d->comm, &req);
        st = rc != MPI_SUCCESS ? mpi_error(d, "comparing the models", rc) : wait_for(d, &req, "comparing the models");
    }
    for (int r = 1; st == LOOM_OK && r < d->size; r++) {
        const int64_t *a = all, *b = all + 3 * r;
        if (a[0] != b[0] || a[1] != b[1] || a[2] != b[2])
            st = loom__set_error(LOOM_ERR_SHAPE,
                                 "dist: rank %d's model differs from rank 0's: %lld tensors with %lld elements against "
                                 "%lld with %lld%s (every rank must build the same model)",
                                 r, (long long)b[0], (long long)b[1], (long long)a[0], (long long)a[1],
                                 a[0] == b[0] && a[1] == b[1] ? ", and names, dtypes or shapes differ" : "");
    }
    free(all);
    /* Then rank 0's values, tensor by tensor, written in place
     * (loom_tensor_assign: views and optimizers see the new values). */
    loom_ctx *ctx = loom_module_ctx(m);
    for (int i = 0; st == LOOM_OK && i < n; i++) {
        const loom_dtype dt = loom_tensor_dtype(ts[i]);
        const int64_t bytes = loom_tensor_numel(ts[i]) * (int64_t)loom_dtype_size(dt);
        char *buf = malloc((size_t)(bytes ? bytes : 1));
        if (!buf) {
            st = loom__set_error(LOOM_ERR_NOMEM, "dist: out of memory");
            break;
        }
        st = loom_tensor_copy_to(ts[i], buf, (size_t)bytes);
        for (int64_t off = 0; st == LOOM_OK && off < bytes; off += 1 << 30) {
            int chunk = (int)(bytes - off < (1 << 30) ? bytes - off : (1 << 30));
            int rc = MPI_Ibcast(buf + off, chunk, MPI_BYTE, 0, d->comm, &req);
            st = rc != MPI_SUCCESS ? mpi_error(d, "broadcasting the parameters", rc)
                                   : wait_for(d, &req, "broadcasting the parameters");
        }
        if (st == LOOM_OK && d->rank != 0 && (st = loom_scope_begin(ctx)) == LOOM_OK) {
            int64_t shape[LOOM_MAX_DIMS];
            loom_tensor_shape(ts[i], shape);
            loom_tensor *src = loom_tensor_from_array(ctx, dt, buf, loom_tensor_ndim(ts[i]), shape);
            st = src ? loom_tensor_assign(ts[i], src) : loom_last_status();
            loom_scope_end(ctx);
        }
        free(buf);
    }
    free(ts);
    free(names);
    return st;
}

/* ---- gradients ----------------------------------------------------------- */

typedef struct bucket {
    loom_dist *d;
    int index;
} bucket;

/* A bucket's reduction (a LOOM_OP_HOST_CALL function, on a worker). */
static loom_status reduce(void *user, float *data, int64_t n)
{
    const bucket *b = user;
    loom_dist *d = b->d;
    if (n <= 0) return LOOM_OK;
    const double t0 = now();
    const int64_t p = d->size, chunk = (n + p - 1) / p, padded = chunk * p;
    if (chunk > INT32_MAX)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "dist: bucket %d has %lld floats, too many for one MPI call",
                               b->index, (long long)n);
    if (padded > d->cap) {
        float *s = realloc(d->send, sizeof *s * (size_t)padded), *r = s ? realloc(d->recv, sizeof *r * (size_t)chunk) : NULL;
        if (s) d->send = s;
        if (r) d->recv = r;
        if (!s || !r) return loom__set_error(LOOM_ERR_NOMEM, "dist: out of memory for bucket %d", b->index);
        d->cap = padded;
    }
    memcpy(d->send, data, sizeof *data * (size_t)n);
    memset(d->send + n, 0, sizeof *data * (size_t)(padded - n));
    char what[96];
    snprintf(what, sizeof what, "the gradient all-reduce of bucket %d (%lld floats)", b->index, (long long)n);
    MPI_Request req;
    int rc = MPI_Ireduce_scatter_block(d->send, d->recv, (int)chunk, MPI_FLOAT, MPI_SUM, d->comm, &req);
    loom_status st = rc != MPI_SUCCESS ? mpi_error(d, what, rc) : wait_for(d, &req, what);
    if (st != LOOM_OK) return st;
    const float inv = 1.0f / (float)p; /* the mean, computed once, by the owner */
    for (int64_t i = 0; i < chunk; i++) d->recv[i] *= inv;
    rc = MPI_Iallgather(d->recv, (int)chunk, MPI_FLOAT, d->send, (int)chunk, MPI_FLOAT, d->comm, &req);
    st = rc != MPI_SUCCESS ? mpi_error(d, what, rc) : wait_for(d, &req, what);
    if (st != LOOM_OK) return st;
    memcpy(data, d->send, sizeof *data * (size_t)n);
    d->stats.buckets++;
    d->stats.bytes += n * (int64_t)sizeof(float);
    d->stats.comm_seconds += now() - t0;
    return LOOM_OK;
}

typedef struct hook_state {
    loom_dist *d;
    int nparams;
    loom_tensor **params; /* m's trainable parameters, in registration order */
    const char **names;
    bucket *buckets;      /* one per bucket, alive until the backward returned */
    int nbuckets;
} hook_state;

static loom_status hook(void *user, size_t n, loom_tensor *const *leaves, loom_tensor **grads)
{
    hook_state *h = user;
    const int np = h->nparams;
    /* Each parameter's gradient of this pass, by parameter. */
    int *where = malloc(sizeof *where * (size_t)(np > 0 ? np : 1));
    if (!where) return loom__set_error(LOOM_ERR_NOMEM, "dist: out of memory");
    for (int p = 0; p < np; p++) {
        where[p] = -1;
        for (size_t i = 0; i < n; i++)
            if (leaves[i] == h->params[p]) where[p] = (int)i;
        if (where[p] < 0) {
            free(where);
            return loom__set_error(LOOM_ERR_STATE,
                                   "dist_backward: rank %d: parameter %s got no gradient from this loss; every rank "
                                   "must use every parameter of the module",
                                   h->d->rank, h->names[p]);
        }
    }
    /* Buckets in reverse registration order (the order backward produces
     * the gradients), each about bucket_bytes. */
    h->buckets = malloc(sizeof *h->buckets * (size_t)(np > 0 ? np : 1));
    loom_tensor **parts = malloc(sizeof *parts * (size_t)(np > 0 ? np : 1));
    loom_status st = h->buckets && parts ? LOOM_OK : loom__set_error(LOOM_ERR_NOMEM, "dist: out of memory");
    loom_tensor *prev = NULL;
    for (int end = np; st == LOOM_OK && end > 0;) {
        int start = end;
        double bytes = 0;
        while (start > 0 && (start == end || bytes < h->d->bucket_bytes)) {
            start--;
            bytes += 4.0 * (double)loom_tensor_numel(h->params[start]);
        }
        /* Bucket: params[start..end), concatenated last first. */
        int k = 0;
        for (int p = end - 1; p >= start; p--) {
            loom_tensor *g = grads[where[p]];
            int64_t numel = loom_tensor_numel(g);
            parts[k++] = loom_reshape(g, 1, &numel);
        }
        loom_tensor *flat = k == 1 ? parts[0] : loom_cat(parts, k, 0);
        bucket *b = &h->buckets[h->nbuckets];
        *b = (bucket){h->d, h->nbuckets};
        loom_tensor *red = flat ? loom__host_call(flat, prev ? 1 : 0, &prev, reduce, b) : NULL;
        if (!red) {
            st = loom_last_status();
            break;
        }
        h->nbuckets++;
        int64_t off = 0;
        for (int p = end - 1; p >= start && st == LOOM_OK; p--) {
            loom_tensor *g = grads[where[p]];
            int64_t numel = loom_tensor_numel(g), shape[LOOM_MAX_DIMS];
            loom_tensor_shape(g, shape);
            loom_tensor *r = loom_reshape(loom_slice(red, 0, off, off + numel, 1), loom_tensor_ndim(g), shape);
            if (!r) st = loom_last_status();
            else grads[where[p]] = r;
            off += numel;
        }
        prev = red;
        end = start;
    }
    free(parts);
    free(where);
    return st;
}

loom_status loom_dist_backward(loom_dist *d, loom_module *m, loom_tensor *loss)
{
    if (!d || !m || !loss) return loom__set_error(LOOM_ERR_INVALID_ARG, "dist_backward: NULL argument");
    hook_state h = {.d = d};
    h.nparams = loom_module_trainable_parameters(m, NULL, NULL, 0);
    h.params = malloc(sizeof *h.params * (size_t)(h.nparams ? h.nparams : 1));
    h.names = malloc(sizeof *h.names * (size_t)(h.nparams ? h.nparams : 1));
    if (!h.params || !h.names) {
        free(h.params);
        free(h.names);
        return loom__set_error(LOOM_ERR_NOMEM, "dist: out of memory");
    }
    loom_module_trainable_parameters(m, h.params, h.names, h.nparams);
    /* One core of the budget is kept for the reductions during the
     * backward, so the compute nodes (oneDNN's need all their planned
     * cores) can run beside a reduction instead of waiting for it. */
    const bool many = d->size > 1;
    loom_status st = loom__backward_hooked(loss, NULL, NULL, many ? hook : NULL, &h, many ? 1 : 0);
    free(h.buckets);
    free(h.params);
    free(h.names);
    return st;
}

#endif /* LOOM_HAVE_MPI */
