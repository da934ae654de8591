/*
 * backends/ref/matmul.c - the portable C matmul: float32 [..., M, K] @
 * [..., K, N] -> [..., M, N] on the packed SGEMM of sgemm.h.
 *
 * The batch dims (all but the last two) are broadcast by ops/: an input's
 * batch stride is 0 where it repeats. Three strategies, by shape:
 *   - fold: when B's batch strides are all 0 (one weight matrix for the whole
 *     batch, as in a Linear layer on [batch, time, features]) and A's batch
 *     dims and M dim are one evenly strided run of rows, the batch is just
 *     more rows of A and C: one SGEMM of (batch * M) x N x K;
 *   - batch-parallel: many small products (batch >= threads, M*N*K below
 *     ~128^3, where one SGEMM cannot keep the threads busy): each thread
 *     runs whole products with nthreads = 1 and its own workspace slice;
 *   - sequential: one product after another, each using all the threads.
 * The workspace is allocated once per call and reused across the batch.
 * Each output element is computed by one SGEMM call, so the batch strategy
 * does not change the results' association within an element; the thread
 * count only reaches SGEMM itself.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/ref/nditer.h"
#include "backends/ref/ref.h"
#include "backends/ref/sgemm.h"
#include "runtime/error.h"
#include "runtime/scratch.h"

#define SMALL_MNK (128 * 128 * 128) /* below: batch-parallel when the batch allows */
#define TINY_FLOPS (32 * 32 * 32)   /* total M*N*K*batch below: one thread */

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

/* Shapes and strides of one call, batch dims coalesced. */
typedef struct mm_plan {
    int nb;                                    /* batch dims */
    int64_t bshape[LOOM_MAX_DIMS];
    int64_t sa[LOOM_MAX_DIMS], sb[LOOM_MAX_DIMS], sc[LOOM_MAX_DIMS]; /* batch strides */
    int64_t batch, m, n, k;
    int64_t rsa, csa, rsb, csb, rsc;
} mm_plan;

/* Checks the call and fills the plan. */
static loom_status make_plan(const loom__kcall *call, mm_plan *p)
{
    memset(p, 0, sizeof *p);
    if (call->n_in != 2)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "matmul: expected 2 inputs, got %d", call->n_in);
    const loom__tview *a = &call->in[0], *b = &call->in[1], *c = &call->out;
    if (a->dtype != LOOM_FLOAT32 || b->dtype != LOOM_FLOAT32 || c->dtype != LOOM_FLOAT32)
        return loom__set_error(LOOM_ERR_DTYPE, "matmul: the ref backend supports float32 only, got %s @ %s -> %s",
                               loom_dtype_name(a->dtype), loom_dtype_name(b->dtype),
                               loom_dtype_name(c->dtype));
    const int nd = c->ndim;
    bool ok = nd >= 2 && nd <= LOOM_MAX_DIMS && a->ndim == nd && b->ndim == nd;
    if (ok) {
        p->m = c->shape[nd - 2];
        p->n = c->shape[nd - 1];
        p->k = a->shape[nd - 1];
        ok = a->shape[nd - 2] == p->m && b->shape[nd - 2] == p->k && b->shape[nd - 1] == p->n;
    }
    for (int d = 0; ok && d < nd - 2; d++)
        ok = (a->shape[d] == c->shape[d] || a->shape[d] == 1) &&
             (b->shape[d] == c->shape[d] || b->shape[d] == 1);
    if (!ok) {
        char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX], s3[LOOM__SHAPE_STR_MAX];
        return loom__set_error(LOOM_ERR_SHAPE, "matmul: shapes %s @ %s -> %s do not match",
                               loom__fmt_shape(s1, sizeof s1, a->ndim, a->shape),
                               loom__fmt_shape(s2, sizeof s2, b->ndim, b->shape),
                               loom__fmt_shape(s3, sizeof s3, c->ndim, c->shape));
    }
    p->rsa = a->strides[nd - 2];
    p->csa = a->strides[nd - 1];
    p->rsb = b->strides[nd - 2];
    p->csb = b->strides[nd - 1];
    /* C must have unit column stride; a size-1 dim's stride is meaningless. */
    p->rsc = p->m > 1 ? c->strides[nd - 2] : p->n;
    if (p->n > 1 && c->strides[nd - 1] != 1)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "matmul: output is not contiguous");
    if (p->rsa < 0 || p->csa < 0 || p->rsb < 0 || p->csb < 0 || p->rsc < p->n)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "matmul: negative or overlapping strides");

    /* Batch dims, size-1 dims dropped, neighbours merged when all three
     * operands step evenly across them (as nditer.h does). */
    p->nb = 0;
    p->batch = 1;
    for (int d = 0; d < nd - 2; d++) {
        const int64_t size = c->shape[d];
        p->batch *= size;
        if (size == 1) continue;
        const int64_t sa = a->shape[d] == 1 ? 0 : a->strides[d];
        const int64_t sb = b->shape[d] == 1 ? 0 : b->strides[d];
        const int64_t sc = c->strides[d];
        const int j = p->nb;
        if (j > 0 && p->sa[j - 1] == sa * size && p->sb[j - 1] == sb * size &&
            p->sc[j - 1] == sc * size) {
            p->bshape[j - 1] *= size;
            p->sa[j - 1] = sa;
            p->sb[j - 1] = sb;
            p->sc[j - 1] = sc;
        } else {
            p->bshape[j] = size;
            p->sa[j] = sa;
            p->sb[j] = sb;
            p->sc[j] = sc;
            p->nb++;
        }
    }
    return LOOM_OK;
}

/* Fold: one batch dim left after coalescing, B not moving, and A's and C's
 * batch strides equal to M rows of their row stride (or M == 1, where the
 * batch stride becomes the row stride). */
static bool try_fold(mm_plan *p)
{
    if (p->nb != 1 || p->sb[0] != 0) return false;
    if (p->m == 1) {
        if (p->sa[0] < 0 || p->sc[0] < p->n) return false;
        p->rsa = p->sa[0];
        p->rsc = p->sc[0];
    } else if (p->sa[0] != p->m * p->rsa || p->sc[0] != p->m * p->rsc) {
        return false;
    }
    p->m *= p->bshape[0];
    p->batch = 1;
    p->nb = 0;
    return true;
}

/* Element offsets of batch index t in A, B and C. */
static void batch_offsets(const mm_plan *p, int64_t t, int64_t *oa, int64_t *ob, int64_t *oc)
{
    *oa = *ob = *oc = 0;
    for (int d = p->nb - 1; d >= 0; d--) {
        const int64_t i = t % p->bshape[d];
        t /= p->bshape[d];
        *oa += i * p->sa[d];
        *ob += i * p->sb[d];
        *oc += i * p->sc[d];
    }
}

/* MATMUL, float32. */
loom_status loom__ref_matmul(const loom__kcall *call)
{
    mm_plan p;
    loom_status st = make_plan(call, &p);
    if (st != LOOM_OK) return st;
    try_fold(&p);

    const float *a = (const float *)call->in[0].data, *b = (const float *)call->in[1].data;
    float *c = (float *)call->out.data;
    const int64_t mnk = p.m * p.n * (p.k > 0 ? p.k : 1);
    int nthreads = call->nthreads < 1 ? 1 : call->nthreads;
    if (mnk * p.batch < TINY_FLOPS) nthreads = 1;
    const bool batch_par = nthreads > 1 && p.batch >= nthreads && mnk < SMALL_MNK;
    const int nt = batch_par ? nthreads : 1;            /* OpenMP team over the batch */
    const int gemm_threads = batch_par ? 1 : nthreads;  /* threads inside each SGEMM */

    /* One workspace per team thread, each 64-byte aligned, in the calling
     * thread's scratch (no allocation at steady state: replayed graphs
     * allocate nothing). A zero size still gets a small block so that SGEMM
     * never allocates on its own. */
    const size_t per = round64(loom__sgemm_workspace_size(p.m, p.n, p.k, gemm_threads));
    const size_t total = per * (size_t)nt > 0 ? per * (size_t)nt : 64;
    char *ws = loom__scratch(LOOM__SCRATCH_MATMUL, total);
    if (!ws)
        return loom__set_error(LOOM_ERR_NOMEM, "matmul: cannot allocate %zu bytes of SGEMM workspace",
                               total);

    loom_status fail = LOOM_OK;
    if (nt == 1) {
        for (int64_t i = 0; i < p.batch && fail == LOOM_OK; i++) {
            int64_t oa, ob, oc;
            batch_offsets(&p, i, &oa, &ob, &oc);
            fail = loom__sgemm(p.m, p.n, p.k, 1.0f, a + oa, p.rsa, p.csa, b + ob, p.rsb,
                               p.csb, 0.0f, c + oc, p.rsc, gemm_threads, ws, per > 0 ? per : 64);
        }
        return fail;
    }
    LOOM__OMP_TEAM(nt,
    {
        int64_t begin, end;
        const int t = loom__omp_thread();
        loom__nditer_part(p.batch, t, loom__omp_nthreads(), 1, &begin, &end);
        char *my_ws = ws + (size_t)t * per;
        for (int64_t i = begin; i < end; i++) {
            int64_t oa, ob, oc;
            batch_offsets(&p, i, &oa, &ob, &oc);
            loom_status s = loom__sgemm(p.m, p.n, p.k, 1.0f, a + oa, p.rsa, p.csa, b + ob, p.rsb,
                                        p.csb, 0.0f, c + oc, p.rsc, gemm_threads, my_ws,
                                        per > 0 ? per : 64);
            if (s != LOOM_OK) {
                LOOM__OMP_CRITICAL(loom_ref_matmul_error)
                if (fail == LOOM_OK) fail = s;
                break;
            }
        }
    });
    if (fail != LOOM_OK && nt > 1) /* the message was set in a team thread's TLS */
        return loom__set_error(fail, "matmul: SGEMM failed in a worker thread (%s)",
                               loom_status_str(fail));
    return fail;
}
