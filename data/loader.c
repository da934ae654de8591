/*
 * data/loader.c - the data loader: batching, shuffling, ToTensor/Normalize,
 * and background prefetch.
 *
 * Turning a batch into tensors has an expensive part and a cheap part. The
 * expensive part - gathering the batch's images in (shuffled) order and
 * converting each pixel to a scaled, normalized float - writes into a
 * plain float buffer and needs nothing from the context; it is done by ONE
 * background thread for the batches ahead while the caller computes. The
 * cheap part - creating the two tensors from the buffers - stays on the
 * caller's thread, because contexts, scopes and tensor creation are not
 * thread-safe (a context is used from one thread at a time).
 *
 * Prefetch protocol (double buffering; everything below is under `mu`):
 *   slots[2]    batch b lives in slots[b % 2]. A slot is `ready` from the
 *               moment the thread has filled it until next() has made its
 *               tensors. The thread fills only slots that are not ready and
 *               next() reads only ready ones, so the buffers themselves are
 *               read and written outside the lock.
 *   next_fill   the batch the thread fills next (in order, <= 2 ahead of
 *               the caller). It sleeps on work_cv when both slots are full,
 *               the epoch is done, or `hold` is set; next() signals work_cv
 *               after taking a slot. It never spins.
 *   busy        the thread is filling a slot outside the lock, reading
 *               `perm`. set_epoch() sets `hold` (no new fill may start),
 *               waits on done_cv until !busy, and only then rewrites perm.
 *   stop        set by free(); the thread finishes the fill it is in (one
 *               batch, microseconds) and exits; free() joins it.
 * The thread never allocates and cannot fail: both slots are allocated by
 * create(), which reports an out-of-memory there. next()'s failures come
 * from creating the tensors, on the caller's thread, and leave the batch in
 * its slot for the next call.
 */
#include "config.h"

#define _GNU_SOURCE /* pthread_setname_np */

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_impl.h"
#include "runtime/error.h"

typedef struct batch_slot {
    float *x;      /* cap * pix floats */
    int64_t *y;    /* cap labels */
    int64_t batch; /* the batch it holds (valid when filled) */
    int64_t count; /* images in that batch */
    bool ready;
} batch_slot;

struct loom_dataloader {
    loom_ctx *ctx;
    const loom_dataset *ds;
    loom_dataloader_options opt;
    int64_t pix;      /* rows * cols */
    int64_t nbatches; /* per epoch */
    float lut[256];   /* pixel byte -> scaled (and normalized) value */
    int64_t n;        /* images per epoch: the dataset's, or its shard's */
    int64_t *perm;    /* the epoch's order; NULL without shuffle */
    int64_t *shard;   /* the shard's images in the epoch's order; NULL unsharded */
    int64_t epoch;
    int64_t next_take; /* the batch next() returns next (caller's thread only) */
    batch_slot slots[2];

    /* The prefetch thread (see the top of the file). */
    bool threaded;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* the thread waits here for work */
    pthread_cond_t done_cv; /* the caller waits here for a fill to finish */
    int64_t next_fill;
    bool busy, hold, stop;
};

loom_dataloader_options loom_dataloader_defaults(void)
{
    return (loom_dataloader_options){.batch_size = 1, .mean = 0.0, .std = 1.0, .prefetch = true};
}

/* ---- shuffling --------------------------------------------------------- */

/* splitmix64 (Steele, Lea, Flood): a tiny generator whose output is a
 * strong 64-bit mix of a counter, good for seeding and for shuffles. Not
 * rand(): that is global state, shared with the user's program, and its
 * sequence differs between C libraries. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint64_t next64(uint64_t *state) { return mix64(*state += UINT64_C(0x9E3779B97F4A7C15)); }

/* Uniform in [0, bound): rejection removes the modulo bias (which matters
 * little for 60000 but is free to avoid). */
static uint64_t below(uint64_t *state, uint64_t bound)
{
    uint64_t threshold = (0 - bound) % bound; /* 2^64 mod bound */
    for (;;) {
        uint64_t r = next64(state);
        if (r >= threshold) return r % bound;
    }
}

/* The order of `epoch`: Fisher-Yates from the identity, with a stream
 * keyed by (seed, epoch) only, so that the order does not depend on which
 * epochs ran before (a resumed run sees the same batches). */
static void make_perm(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch)
{
    uint64_t state = mix64(mix64(seed ^ UINT64_C(0x6A09E667F3BCC909)) + (uint64_t)epoch * UINT64_C(0xD1B54A32D192ED03));
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)below(&state, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* ---- batches ----------------------------------------------------------- */

/* Gathers batch b into s. Reads the dataset, the lut and perm; writes only
 * s. Runs on the prefetch thread or, without prefetch, the caller's. */
static void fill_batch(const loom_dataloader *dl, int64_t b, batch_slot *s)
{
    const loom_dataset *ds = dl->ds;
    int64_t start = b * dl->opt.batch_size;
    int64_t count = dl->n - start < dl->opt.batch_size ? dl->n - start : dl->opt.batch_size;
    int64_t pix = dl->pix;
    for (int64_t j = 0; j < count; j++) {
        int64_t idx = dl->shard ? dl->shard[start + j] : dl->perm ? dl->perm[start + j] : start + j;
        const uint8_t *src = ds->pixels + idx * pix;
        float *dst = s->x + j * pix;
        for (int64_t p = 0; p < pix; p++) dst[p] = dl->lut[src[p]];
        s->y[j] = ds->labels[idx];
    }
    s->batch = b;
    s->count = count;
}

static void *prefetch_main(void *arg)
{
    loom_dataloader *dl = arg;
    pthread_mutex_lock(&dl->mu);
    while (!dl->stop) {
        int64_t b = dl->next_fill;
        batch_slot *s = &dl->slots[b % 2];
        if (dl->hold || b >= dl->nbatches || s->ready) {
            pthread_cond_wait(&dl->work_cv, &dl->mu);
            continue;
        }
        dl->busy = true;
        pthread_mutex_unlock(&dl->mu);
        fill_batch(dl, b, s);
        pthread_mutex_lock(&dl->mu);
        dl->busy = false;
        s->ready = true;
        dl->next_fill = b + 1;
        pthread_cond_broadcast(&dl->done_cv);
    }
    pthread_mutex_unlock(&dl->mu);
    return NULL;
}

/* ---- lifetime ---------------------------------------------------------- */

static loom_status check_options(const loom_dataloader_options *o)
{
    if (o->batch_size < 1)
        return loom__set_error(LOOM_ERR_INVALID_ARG,
                               "dataloader_create: batch_size is %lld, it must be >= 1 (start from "
                               "loom_dataloader_defaults())",
                               (long long)o->batch_size);
    if (o->normalize) {
        /* Normalize computes in float32, as torchvision does: check the
         * values it will use. */
        if (!isfinite(o->mean) || !isfinite(o->std) || fabs(o->mean) > FLT_MAX || fabs(o->std) > FLT_MAX ||
            (float)o->std == 0.0f)
            return loom__set_error(LOOM_ERR_INVALID_ARG,
                                   "dataloader_create: normalize needs a finite mean and a finite, non-zero std "
                                   "(as float32), not mean %g, std %g",
                                   o->mean, o->std);
    }
    if (o->num_replicas < 0 || o->rank < 0 || (o->num_replicas > 1 && o->rank >= o->num_replicas) ||
        (o->num_replicas <= 1 && o->rank != 0))
        return loom__set_error(LOOM_ERR_INVALID_ARG,
                               "dataloader_create: rank %d of %d replicas: rank must be in [0, num_replicas)", o->rank,
                               o->num_replicas);
    return LOOM_OK;
}

/* The epoch's order (the shuffle, then the shard's share of it). */
static void make_order(loom_dataloader *dl, int64_t epoch)
{
    const int64_t total = dl->ds->n;
    if (dl->perm) make_perm(dl->perm, total, dl->opt.seed, epoch);
    if (!dl->shard) return;
    const int64_t r = dl->opt.num_replicas;
    for (int64_t j = 0; j < dl->n; j++) {
        const int64_t p = (dl->opt.rank + j * r) % total; /* past the end: wrap around (the padding) */
        dl->shard[j] = dl->perm ? dl->perm[p] : p;
    }
}

static void free_buffers(loom_dataloader *dl)
{
    for (int i = 0; i < 2; i++) {
        free(dl->slots[i].x);
        free(dl->slots[i].y);
    }
    free(dl->perm);
    free(dl->shard);
    free(dl);
}

/* Starts the thread with every signal blocked, so that the program's signal
 * handlers keep running on its own threads (a library thread must not
 * receive SIGINT, say). */
static loom_status start_thread(loom_dataloader *dl)
{
    int rc = pthread_mutex_init(&dl->mu, NULL);
    if (rc) return loom__set_error(LOOM_ERR_STATE, "dataloader_create: cannot create a mutex: %s", strerror(rc));
    if ((rc = pthread_cond_init(&dl->work_cv, NULL))) goto no_work_cv;
    if ((rc = pthread_cond_init(&dl->done_cv, NULL))) goto no_done_cv;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&dl->thread, NULL, prefetch_main, dl);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) goto no_thread;
#ifdef __GLIBC__
    pthread_setname_np(dl->thread, "loom-prefetch"); /* for top -H, gdb; failure is harmless */
#endif
    dl->threaded = true;
    return LOOM_OK;
no_thread:
    pthread_cond_destroy(&dl->done_cv);
no_done_cv:
    pthread_cond_destroy(&dl->work_cv);
no_work_cv:
    pthread_mutex_destroy(&dl->mu);
    return loom__set_error(LOOM_ERR_STATE,
                           "dataloader_create: cannot start the prefetch thread: %s (set prefetch = false to load "
                           "on the calling thread)",
                           strerror(rc));
}

loom_status loom_dataloader_create(loom_ctx *ctx, const loom_dataset *ds, const loom_dataloader_options *opts,
                                   loom_dataloader **out)
{
    if (!out) return loom__set_error(LOOM_ERR_INVALID_ARG, "dataloader_create: out is NULL");
    *out = NULL;
    if (!ctx || !ds)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "dataloader_create: %s is NULL", ctx ? "the dataset" : "ctx");
    loom_dataloader_options o = opts ? *opts : loom_dataloader_defaults();
    loom_status st = check_options(&o);
    if (st) return st;

    int64_t pix = ds->rows * ds->cols; /* fits: the dataset holds n * pix bytes */
    const bool sharded = o.num_replicas > 1;
    const int64_t n = sharded ? (ds->n + o.num_replicas - 1) / o.num_replicas : ds->n;
    /* A slot holds a full batch, or the whole epoch if that is smaller
     * (so an absurd batch_size allocates nothing absurd). */
    int64_t cap = o.batch_size < n ? o.batch_size : n;
    if ((uint64_t)(cap * pix) > SIZE_MAX / sizeof(float))
        return loom__set_error(LOOM_ERR_INVALID_ARG,
                               "dataloader_create: a batch of %lld images of %lld pixels does not fit in memory",
                               (long long)cap, (long long)pix);

    loom_dataloader *dl = calloc(1, sizeof *dl);
    if (!dl) return loom__set_error(LOOM_ERR_NOMEM, "dataloader_create: out of memory");
    dl->ctx = ctx;
    dl->ds = ds;
    dl->opt = o;
    dl->pix = pix;
    dl->n = n;
    dl->nbatches = n / o.batch_size + (!o.drop_last && n % o.batch_size != 0);
    for (int v = 0; v < 256; v++) {
        /* ToTensor: float32 x / 255; Normalize: float32 (x - mean) / std.
         * Same operations, same rounding as torchvision. */
        float f = (float)v / 255.0f;
        if (o.normalize) f = (f - (float)o.mean) / (float)o.std;
        dl->lut[v] = f;
    }
    int nslots = o.prefetch ? 2 : 1;
    for (int i = 0; i < nslots; i++) {
        dl->slots[i].x = malloc((size_t)(cap * pix) * sizeof(float));
        dl->slots[i].y = malloc((size_t)cap * sizeof(int64_t));
        if (!dl->slots[i].x || !dl->slots[i].y) goto nomem;
    }
    if (o.shuffle && !(dl->perm = malloc((size_t)ds->n * sizeof(int64_t)))) goto nomem;
    if (sharded && !(dl->shard = malloc((size_t)n * sizeof(int64_t)))) goto nomem;
    make_order(dl, 0);
    if (o.prefetch && (st = start_thread(dl))) {
        free_buffers(dl);
        return st;
    }
    *out = dl;
    return LOOM_OK;
nomem:
    free_buffers(dl);
    return loom__set_error(LOOM_ERR_NOMEM, "dataloader_create: out of memory for batches of %lld images",
                           (long long)cap);
}

void loom_dataloader_free(loom_dataloader *dl)
{
    if (!dl) return;
    if (dl->threaded) {
        pthread_mutex_lock(&dl->mu);
        dl->stop = true;
        pthread_cond_signal(&dl->work_cv);
        pthread_mutex_unlock(&dl->mu);
        pthread_join(dl->thread, NULL);
        pthread_cond_destroy(&dl->done_cv);
        pthread_cond_destroy(&dl->work_cv);
        pthread_mutex_destroy(&dl->mu);
    }
    free_buffers(dl);
}

/* ---- iteration --------------------------------------------------------- */

/* The tensors of the batch in s, on the caller's thread. */
static loom_status make_tensors(loom_dataloader *dl, const batch_slot *s, loom_tensor **images,
                                loom_tensor **labels)
{
    const int64_t xshape[4] = {s->count, 1, dl->ds->rows, dl->ds->cols};
    loom_tensor *x = loom_tensor_from_array(dl->ctx, LOOM_FLOAT32, s->x, 4, xshape);
    loom_tensor *y = x ? loom_tensor_from_array(dl->ctx, LOOM_INT64, s->y, 1, &s->count) : NULL;
    if (!y) {
        /* Copy the message: loom__set_error formats into the buffer that
         * loom_last_error() points to. */
        char msg[512];
        snprintf(msg, sizeof msg, "%s", loom_last_error());
        loom_status st = loom_last_status();
        loom_tensor_free(x);
        return loom__set_error(st ? st : LOOM_ERR_NOMEM, "dataloader_next: batch %lld: %s", (long long)s->batch,
                               msg);
    }
    *images = x;
    *labels = y;
    return LOOM_OK;
}

loom_status loom_dataloader_next(loom_dataloader *dl, loom_tensor **images, loom_tensor **labels)
{
    if (images) *images = NULL;
    if (labels) *labels = NULL;
    if (!dl || !images || !labels)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "dataloader_next: %s is NULL",
                               !dl ? "the loader" : !images ? "images" : "labels");
    int64_t b = dl->next_take;
    if (b >= dl->nbatches) return LOOM_OK; /* end of the epoch */
    batch_slot *s;
    if (dl->threaded) {
        s = &dl->slots[b % 2];
        pthread_mutex_lock(&dl->mu);
        while (!s->ready) pthread_cond_wait(&dl->done_cv, &dl->mu);
        pthread_mutex_unlock(&dl->mu);
        LOOM_ASSERT(s->batch == b);
    } else {
        s = &dl->slots[0];
        fill_batch(dl, b, s);
    }
    loom_status st = make_tensors(dl, s, images, labels);
    if (st) return st; /* the slot stays ready: a retry returns this batch */
    dl->next_take = b + 1;
    if (dl->threaded) {
        pthread_mutex_lock(&dl->mu);
        s->ready = false;
        pthread_cond_signal(&dl->work_cv);
        pthread_mutex_unlock(&dl->mu);
    }
    return LOOM_OK;
}

loom_status loom_dataloader_set_epoch(loom_dataloader *dl, int64_t epoch)
{
    if (!dl) return loom__set_error(LOOM_ERR_INVALID_ARG, "dataloader_set_epoch: the loader is NULL");
    if (epoch < 0)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "dataloader_set_epoch: epoch is %lld, it must be >= 0",
                               (long long)epoch);
    if (dl->threaded) {
        pthread_mutex_lock(&dl->mu);
        dl->hold = true; /* no new fill may start ... */
        while (dl->busy) pthread_cond_wait(&dl->done_cv, &dl->mu); /* ... and the current one ends */
    }
    /* Under the lock with the thread idle: perm is not being read. The
     * shuffle of 60000 indices takes well under a millisecond. */
    make_order(dl, epoch);
    dl->epoch = epoch;
    dl->next_take = 0;
    if (dl->threaded) {
        dl->slots[0].ready = dl->slots[1].ready = false; /* prefetched batches of the old order */
        dl->next_fill = 0;
        dl->hold = false;
        pthread_cond_signal(&dl->work_cv);
        pthread_mutex_unlock(&dl->mu);
    }
    return LOOM_OK;
}

loom_status loom_dataloader_reset(loom_dataloader *dl)
{
    if (!dl) return loom__set_error(LOOM_ERR_INVALID_ARG, "dataloader_reset: the loader is NULL");
    return loom_dataloader_set_epoch(dl, dl->epoch + 1);
}

int64_t loom_dataloader_epoch(const loom_dataloader *dl) { return dl ? dl->epoch : -1; }

int64_t loom_dataloader_num_batches(const loom_dataloader *dl) { return dl ? dl->nbatches : -1; }
