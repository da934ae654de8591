/*
 * backends/ref/index.c - the portable C joining and indexing kernels: CAT,
 * INDEX_SELECT and GATHER, for any dtype (values are moved as bytes).
 *
 * CAT copies each input into its slab of the output: the slab is the output
 * view offset along the cat dim, with the output's strides, so the copy is an
 * ordinary strided copy (nditer.h) whatever the inputs' strides.
 *
 * INDEX_SELECT and GATHER share one core: out[i] = src[i with dim d replaced
 * by index[i]]. For gather the index view has the output's shape; for
 * index_select it is the 1-D index viewed with the output's shape (stride 0
 * in every dim but d). The source view gets stride 0 in dim d, and the
 * selected position adds index * stride_d. Runs in which the index is
 * constant (the inner dim is not d: an embedding lookup [V, D] -> [L, D])
 * become one strided copy, a memcpy when dense.
 *
 * Out-of-range indices give LOOM_ERR_RANGE naming the first bad index in
 * the output's row-major order, whatever the thread count. Negative indices
 * are rejected, as PyTorch's index_select and gather do.
 */
#include <stdint.h>
#include <string.h>

#include "backends/ref/nditer.h"
#include "backends/ref/ref.h"
#include "backends/registry.h"
#include "runtime/error.h"

#define COPY_GRAIN 32768 /* elements per thread before a second thread pays */

/* Normalises a possibly negative dim; false if out of [-ndim, ndim). */
static bool norm_dim(int *dim, int ndim)
{
    if (*dim < 0) *dim += ndim;
    return *dim >= 0 && *dim < ndim;
}

/* ---- cat --------------------------------------------------------------------- */

/* CAT: out = concat(in[0..n_in-1], dim); every input has the output's shape
 * except along dim, and the sizes along dim add up to the output's. */
loom_status loom__ref_cat(const loom__kcall *call)
{
    const loom__tview *out = &call->out;
    int dim = call->attrs ? call->attrs->axis.dim : 0;
    if (!norm_dim(&dim, out->ndim))
        return loom__set_error(LOOM_ERR_RANGE, "cat: dim %d is out of range for %d dims",
                               call->attrs ? call->attrs->axis.dim : 0, out->ndim);
    const int es = loom_dtype_size(out->dtype);
    if (es <= 0) return loom__set_error(LOOM_ERR_DTYPE, "cat: invalid output dtype");
    int64_t total = 0;
    for (int i = 0; i < call->n_in; i++) {
        const loom__tview *v = &call->in[i];
        bool ok = v->ndim == out->ndim && v->dtype == out->dtype;
        for (int d = 0; ok && d < v->ndim; d++) ok = d == dim || v->shape[d] == out->shape[d];
        if (!ok) {
            char a[LOOM__SHAPE_STR_MAX], b[LOOM__SHAPE_STR_MAX];
            return loom__set_error(LOOM_ERR_SHAPE, "cat: input %d (%s %s) does not fit output %s %s", i,
                                   loom_dtype_name(v->dtype),
                                   loom__fmt_shape(a, sizeof a, v->ndim, v->shape),
                                   loom_dtype_name(out->dtype),
                                   loom__fmt_shape(b, sizeof b, out->ndim, out->shape));
        }
        total += v->shape[dim];
    }
    if (total != out->shape[dim])
        return loom__set_error(LOOM_ERR_SHAPE, "cat: inputs add up to %lld along dim %d, output has %lld",
                               (long long)total, dim, (long long)out->shape[dim]);

    const int nt = loom__ref_team(call->nthreads, loom__tview_numel(out), COPY_GRAIN);
    (void)nt; /* unused without OpenMP */
    LOOM__OMP_PARALLEL(nt)
    {
        /* Every thread copies its part of every input: balanced even when one
         * input is much larger than the others. */
        int64_t start = 0; /* position of the current slab along dim */
        for (int i = 0; i < call->n_in; i++) {
            const loom__tview *v = &call->in[i];
            loom__tview slab = *out;
            slab.data = (char *)out->data + start * out->strides[dim] * es;
            start += v->shape[dim];
            const loom__tview *views[2] = {&slab, v};
            loom__nditer it;
            loom__nditer_init(&it, v->ndim, v->shape, 2, views);
            int64_t begin, end;
            loom__nditer_part(it.numel, loom__omp_thread(), loom__omp_nthreads(), 64, &begin, &end);
            loom__nditer_copy_range(&it, begin, end);
        }
    }
    return LOOM_OK;
}

/* ---- gather core --------------------------------------------------------------- */

typedef struct gather_job {
    loom__nditer it;   /* operands: out, index, src (stride 0 in dim) */
    int64_t dstride;   /* source bytes per step along dim */
    int64_t size;      /* source size along dim: valid indices are [0, size) */
    int es;            /* element bytes */
} gather_job;

/* Moves one element of es bytes. */
static inline void move_elem(char *dst, const char *src, int es)
{
    switch (es) {
    case 1: *(uint8_t *)dst = *(const uint8_t *)src; break;
    case 4: memcpy(dst, src, 4); break;
    case 8: memcpy(dst, src, 8); break;
    default: memcpy(dst, src, (size_t)es);
    }
}

/* A run with a varying index: out[i] = src[i + index[i] * dim]. */
#define GATHER_RUN(T)                                                                   \
    for (; i < n; i++) {                                                                \
        const int64_t v = ix[i * si];                                                   \
        if ((uint64_t)v >= (uint64_t)job->size) break;                                  \
        ((T *)o)[i * so] = *(const T *)(s + i * ss * (int64_t)sizeof(T) + v * job->dstride); \
    }

/* Runs part [begin, end) of the gather. Returns the position (flat output
 * index) of the first bad index in the part, or -1; *bad gets its value. */
static int64_t gather_range(const gather_job *job, int64_t begin, int64_t end, int64_t *bad)
{
    const loom__nditer *it = &job->it;
    const int in = it->ndim - 1, es = job->es;
    const int64_t so = it->strides[0][in], si = it->strides[1][in], ss = it->strides[2][in];
    loom__nditer_pos pos;
    char *p[LOOM__NDITER_MAX_OPS];
    int64_t n, at = begin;
    loom__nditer_seek(it, begin, end, &pos);
    while ((n = loom__nditer_next(it, &pos, p)) > 0) {
        char *o = p[0];
        const int64_t *ix = (const int64_t *)p[1];
        const char *s = p[2];
        int64_t i = 0;
        if (si == 0) {
            /* One index for the whole run: a strided copy of a source row. */
            const int64_t v = ix[0];
            if ((uint64_t)v < (uint64_t)job->size) {
                s += v * job->dstride;
                if (so == 1 && ss == 1) {
                    memcpy(o, s, (size_t)(n * es));
                } else {
                    for (; i < n; i++) move_elem(o + i * so * es, s + i * ss * es, es);
                }
                i = n;
            }
        } else if (es == 4) {
            GATHER_RUN(uint32_t)
        } else if (es == 8) {
            GATHER_RUN(uint64_t)
        } else if (es == 1) {
            GATHER_RUN(uint8_t)
        } else {
            for (; i < n; i++) {
                const int64_t v = ix[i * si];
                if ((uint64_t)v >= (uint64_t)job->size) break;
                move_elem(o + i * so * es, s + i * ss * es + v * job->dstride, es);
            }
        }
        if (i < n) {
            *bad = ix[i * si];
            return at + i;
        }
        at += n;
    }
    return -1;
}

/* Runs the job on nthreads; on a bad index sets the error for the first one
 * in row-major order (the same whatever the thread count). */
static loom_status run_gather(const gather_job *job, int nthreads, const char *name, int dim)
{
    int64_t first = INT64_MAX, first_val = 0;
    const int nt = loom__ref_team(nthreads, job->it.numel, COPY_GRAIN);
    (void)nt; /* unused without OpenMP */
    LOOM__OMP_PARALLEL(nt)
    {
        int64_t begin, end, val = 0;
        loom__nditer_part(job->it.numel, loom__omp_thread(), loom__omp_nthreads(), 64, &begin, &end);
        const int64_t at = gather_range(job, begin, end, &val);
        if (at >= 0) {
            LOOM__OMP_CRITICAL(loom_ref_gather_error)
            if (at < first) {
                first = at;
                first_val = val;
            }
        }
    }
    if (first != INT64_MAX)
        return loom__set_error(LOOM_ERR_RANGE, "%s: index %lld is out of range for dim %d of size %lld",
                               name, (long long)first_val, dim, (long long)job->size);
    return LOOM_OK;
}

/* Sets up the job: out and index views of the output's shape; src's view
 * of that shape (its own strides, 0 in dim). */
static void make_job(gather_job *job, const loom__tview *out, const loom__tview *index,
                     const loom__tview *src, int dim)
{
    loom__tview s = *src;
    s.strides[dim] = 0;
    const loom__tview *views[3] = {out, index, &s};
    loom__nditer_init(&job->it, out->ndim, out->shape, 3, views);
    job->es = loom_dtype_size(src->dtype);
    job->dstride = src->strides[dim] * job->es;
    job->size = src->shape[dim];
}

/* ---- index_select -------------------------------------------------------------- */

/* INDEX_SELECT: out = src with dim `dim` replaced by src[index] (index: 1-D
 * int64 of length L; out: src's shape with size L along dim). */
loom_status loom__ref_index_select(const loom__kcall *call)
{
    if (call->n_in != 2)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "index_select: expected 2 inputs, got %d", call->n_in);
    const loom__tview *src = &call->in[0], *idx = &call->in[1], *out = &call->out;
    int dim = call->attrs ? call->attrs->axis.dim : 0;
    if (!norm_dim(&dim, src->ndim))
        return loom__set_error(LOOM_ERR_RANGE, "index_select: dim %d is out of range for %d dims",
                               call->attrs ? call->attrs->axis.dim : 0, src->ndim);
    if (idx->dtype != LOOM_INT64)
        return loom__set_error(LOOM_ERR_DTYPE, "index_select: index dtype is %s, expected int64",
                               loom_dtype_name(idx->dtype));
    if (out->dtype != src->dtype || loom_dtype_size(src->dtype) <= 0)
        return loom__set_error(LOOM_ERR_DTYPE, "index_select: output dtype %s differs from source %s",
                               loom_dtype_name(out->dtype), loom_dtype_name(src->dtype));
    bool ok = idx->ndim == 1 && out->ndim == src->ndim;
    for (int d = 0; ok && d < src->ndim; d++)
        ok = out->shape[d] == (d == dim ? idx->shape[0] : src->shape[d]);
    if (!ok) {
        char a[LOOM__SHAPE_STR_MAX], b[LOOM__SHAPE_STR_MAX], c[LOOM__SHAPE_STR_MAX];
        return loom__set_error(LOOM_ERR_SHAPE, "index_select: source %s, index %s and output %s do not match",
                               loom__fmt_shape(a, sizeof a, src->ndim, src->shape),
                               loom__fmt_shape(b, sizeof b, idx->ndim, idx->shape),
                               loom__fmt_shape(c, sizeof c, out->ndim, out->shape));
    }
    /* The 1-D index seen with the output's shape: it moves along dim only. */
    loom__tview iv = *out;
    iv.data = idx->data;
    iv.dtype = LOOM_INT64;
    for (int d = 0; d < iv.ndim; d++) iv.strides[d] = d == dim ? idx->strides[0] : 0;
    gather_job job;
    make_job(&job, out, &iv, src, dim);
    return run_gather(&job, call->nthreads, "index_select", dim);
}

/* ---- gather ---------------------------------------------------------------------- */

/* GATHER (torch.gather): out[i] = src[i with dim replaced by index[i]];
 * index has src's ndim, index.shape[d] <= src.shape[d] for d != dim, and out
 * has index's shape. */
loom_status loom__ref_gather(const loom__kcall *call)
{
    if (call->n_in != 2)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "gather: expected 2 inputs, got %d", call->n_in);
    const loom__tview *src = &call->in[0], *idx = &call->in[1], *out = &call->out;
    int dim = call->attrs ? call->attrs->axis.dim : 0;
    if (!norm_dim(&dim, src->ndim))
        return loom__set_error(LOOM_ERR_RANGE, "gather: dim %d is out of range for %d dims",
                               call->attrs ? call->attrs->axis.dim : 0, src->ndim);
    if (idx->dtype != LOOM_INT64)
        return loom__set_error(LOOM_ERR_DTYPE, "gather: index dtype is %s, expected int64",
                               loom_dtype_name(idx->dtype));
    if (out->dtype != src->dtype || loom_dtype_size(src->dtype) <= 0)
        return loom__set_error(LOOM_ERR_DTYPE, "gather: output dtype %s differs from source %s",
                               loom_dtype_name(out->dtype), loom_dtype_name(src->dtype));
    bool ok = idx->ndim == src->ndim && out->ndim == src->ndim;
    for (int d = 0; ok && d < src->ndim; d++)
        ok = out->shape[d] == idx->shape[d] && (d == dim || idx->shape[d] <= src->shape[d]);
    if (!ok) {
        char a[LOOM__SHAPE_STR_MAX], b[LOOM__SHAPE_STR_MAX], c[LOOM__SHAPE_STR_MAX];
        return loom__set_error(LOOM_ERR_SHAPE, "gather: source %s, index %s and output %s do not match",
                               loom__fmt_shape(a, sizeof a, src->ndim, src->shape),
                               loom__fmt_shape(b, sizeof b, idx->ndim, idx->shape),
                               loom__fmt_shape(c, sizeof c, out->ndim, out->shape));
    }
    gather_job job;
    make_job(&job, out, idx, src, dim);
    return run_gather(&job, call->nthreads, "gather", dim);
}
