/*
 * backends/ref/index.c - the portable C joining and indexing kernels: CAT,
 * INDEX_SELECT, GATHER and SLICE_SCATTER for any dtype (values are moved as
 * bytes), and their adding adjoints INDEX_ADD and SCATTER_ADD for float32
 * and int64.
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
 *
 * SLICE_SCATTER, INDEX_ADD and SCATTER_ADD (the adjoints of slice,
 * index_select and gather) fill their output with zeros and write or add
 * their source in; see the section below for how the adds stay bitwise
 * identical for any thread count. Bad indices give LOOM_ERR_RANGE naming the
 * first bad index in the index's row-major order.
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
    LOOM__OMP_TEAM(nt,
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
    });
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
    LOOM__OMP_TEAM(nt,
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
    });
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

/* ---- the adjoints: slice_scatter, index_add, scatter_add ------------------------- */

/* Each writes every element of its (contiguous) output exactly as if the
 * output were first zeroed and the source then written or added in. The adds
 * are deterministic whatever the thread count: the threads split the output
 * positions *outside* the indexed dim (each output element belongs to one
 * thread), and every thread adds the entries along the indexed dim in
 * increasing order, so each output element receives its additions in one
 * fixed order. index_add checks its (short) index before the adds;
 * scatter_add checks each index as it adds it. */

#define ADD_GRAIN 16 /* output positions per part in row mode: a 64-byte line of float */

/* Zeroes the flat output elements [b, e), except the block [lo, hi) of every
 * row of `row` elements (lo >= hi: zeroes all of [b, e)). */
static void zero_outside(char *out, int es, int64_t b, int64_t e, int64_t row, int64_t lo, int64_t hi)
{
    if (lo >= hi) {
        if (e > b) memset(out + b * es, 0, (size_t)((e - b) * es));
        return;
    }
    for (int64_t r0 = b / row * row; r0 < e; r0 += row) {
        int64_t z0 = r0 > b ? r0 : b, z1 = r0 + lo < e ? r0 + lo : e;
        if (z1 > z0) memset(out + z0 * es, 0, (size_t)((z1 - z0) * es));
        z0 = r0 + hi > b ? r0 + hi : b;
        z1 = r0 + row < e ? r0 + row : e;
        if (z1 > z0) memset(out + z0 * es, 0, (size_t)((z1 - z0) * es));
    }
}

/* Zeroes the whole output (all but the block [lo, hi) of each row), in parallel. */
static void zero_output(const loom__tview *out, int nthreads, int64_t row, int64_t lo, int64_t hi)
{
    const int es = loom_dtype_size(out->dtype);
    const int64_t numel = loom__tview_numel(out);
    const int nt = loom__ref_team(nthreads, numel, COPY_GRAIN);
    (void)nt; /* unused without OpenMP */
    LOOM__OMP_TEAM(nt,
    {
        int64_t begin, end;
        loom__nditer_part(numel, loom__omp_thread(), loom__omp_nthreads(), 64, &begin, &end);
        zero_outside((char *)out->data, es, begin, end, row, lo, hi);
    });
}

/* Checks `n` indices against [0, size): the 1-D index ix[i * stride] (index_add)
 * or, when it != NULL, the operand `op` of *it (scatter_add). Sets the error
 * for the first bad index in row-major order (whatever the thread count). */
static loom_status check_indices(const loom__nditer *it, int op, const int64_t *ix, int64_t n, int64_t stride,
                                 int64_t size, int nthreads, const char *name, int dim)
{
    int64_t first = INT64_MAX, first_val = 0;
    if (!it) {
        for (int64_t i = 0; i < n; i++)
            if ((uint64_t)ix[i * stride] >= (uint64_t)size) {
                first = i;
                first_val = ix[i * stride];
                break;
            }
    } else {
        const int nt = loom__ref_team(nthreads, it->numel, COPY_GRAIN);
        (void)nt; /* unused without OpenMP */
        LOOM__OMP_TEAM(nt,
        {
            int64_t begin, end, at = -1, val = 0;
            loom__nditer_part(it->numel, loom__omp_thread(), loom__omp_nthreads(), 64, &begin, &end);
            const int64_t s = it->strides[op][it->ndim - 1];
            loom__nditer_pos pos;
            char *p[LOOM__NDITER_MAX_OPS];
            int64_t m, here = begin;
            loom__nditer_seek(it, begin, end, &pos);
            while (at < 0 && (m = loom__nditer_next(it, &pos, p)) > 0) {
                const int64_t *x = (const int64_t *)p[op];
                for (int64_t i = 0; i < m; i++)
                    if ((uint64_t)x[i * s] >= (uint64_t)size) {
                        at = here + i;
                        val = x[i * s];
                        break;
                    }
                here += m;
            }
            if (at >= 0) {
                LOOM__OMP_CRITICAL(loom_ref_scatter_error)
                if (at < first) {
                    first = at;
                    first_val = val;
                }
            }
        });
    }
    if (first != INT64_MAX)
        return loom__set_error(LOOM_ERR_RANGE, "%s: index %lld is out of range for dim %d of size %lld", name,
                               (long long)first_val, dim, (long long)size);
    return LOOM_OK;
}

/* ---- slice_scatter --------------------------------------------------------------- */

/* SLICE_SCATTER: out = zeros with out[.., start + i * step, ..] = src[.., i, ..]
 * along attrs.slice.dim; src has out's shape but n elements along dim. Any
 * dtype. The zeros go only where the slice does not when it is one block per
 * row (step 1, or a single element); the slice is then one strided copy into
 * the output seen through the slice's strides. */
loom_status loom__ref_slice_scatter(const loom__kcall *call)
{
    if (call->n_in != 1)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "slice_scatter: expected 1 input, got %d", call->n_in);
    if (!call->attrs) return loom__set_error(LOOM_ERR_INVALID_ARG, "slice_scatter: missing attributes");
    const loom__tview *src = &call->in[0], *out = &call->out;
    int dim = call->attrs->slice.dim;
    if (!norm_dim(&dim, out->ndim))
        return loom__set_error(LOOM_ERR_RANGE, "slice_scatter: dim %d is out of range for %d dims",
                               call->attrs->slice.dim, out->ndim);
    const int es = loom_dtype_size(out->dtype);
    if (src->dtype != out->dtype || es <= 0)
        return loom__set_error(LOOM_ERR_DTYPE, "slice_scatter: output dtype %s differs from source %s",
                               loom_dtype_name(out->dtype), loom_dtype_name(src->dtype));
    bool ok = src->ndim == out->ndim;
    for (int d = 0; ok && d < out->ndim; d++) ok = d == dim || src->shape[d] == out->shape[d];
    const int64_t start = call->attrs->slice.start, step = call->attrs->slice.step, size = out->shape[dim];
    const int64_t n = ok ? src->shape[dim] : 0;
    /* The last slice element start + (n-1)*step must be < size (no overflow). */
    ok = ok && start >= 0 && step >= 1 && (n == 0 || (start < size && (n - 1) <= (size - 1 - start) / step));
    if (!ok) {
        char a[LOOM__SHAPE_STR_MAX], b[LOOM__SHAPE_STR_MAX];
        return loom__set_error(LOOM_ERR_SHAPE,
                               "slice_scatter: source %s does not fit output %s at dim %d from %lld with step %lld",
                               loom__fmt_shape(a, sizeof a, src->ndim, src->shape),
                               loom__fmt_shape(b, sizeof b, out->ndim, out->shape), dim, (long long)start,
                               (long long)step);
    }
    int64_t inner = 1;
    for (int d = dim + 1; d < out->ndim; d++) inner *= out->shape[d];
    /* The slice is the block [lo, hi) of every output row of size * inner
     * elements when its elements are adjacent along dim; the zeros skip it
     * when it is long enough to pay for two memsets per row. */
    int64_t lo = 0, hi = 0;
    if (n > 0 && (step == 1 || n == 1) && (n * inner >= 64 || n == size)) {
        lo = start * inner;
        hi = (start + n) * inner;
    }
    if (!(lo == 0 && hi == size * inner)) zero_output(out, call->nthreads, size * inner, lo, hi);
    if (n == 0 || loom__tview_numel(src) == 0) return LOOM_OK;
    /* The output through the slice: offset by start, strides[dim] * step. */
    loom__tview dst = *out;
    dst.data = (char *)out->data + start * out->strides[dim] * es;
    dst.strides[dim] = out->strides[dim] * step;
    const loom__tview *views[2] = {&dst, src};
    loom__nditer it;
    loom__nditer_init(&it, src->ndim, src->shape, 2, views);
    const int nt = loom__ref_team(call->nthreads, it.numel, COPY_GRAIN);
    (void)nt; /* unused without OpenMP */
    LOOM__OMP_TEAM(nt,
    {
        int64_t begin, end;
        loom__nditer_part(it.numel, loom__omp_thread(), loom__omp_nthreads(), 64, &begin, &end);
        loom__nditer_copy_range(&it, begin, end);
    });
    return LOOM_OK;
}

/* ---- index_add and scatter_add ----------------------------------------------------- */

/* The iteration runs over the output positions outside dim (the shape with
 * dim set to 1). Each run of it gives n positions with per-operand inner
 * strides; for each, the entries i = 0..len-1 along dim are added in order.
 * Two loop orders, both giving each output element the same additions in
 * the same order:
 *   - row mode (the run is contiguous in the output: dim is not the inner
 *     dim): for each i, add a whole row segment (a vector add when the
 *     source row is contiguous too: index_add along dim 0 of [L, D]);
 *   - element mode (dim is the output's inner dim, e.g. the CrossEntropy
 *     backward, scatter_add along dim 1 of [N, C] with index [N, 1]): for
 *     each position, zero its output row and add its entries.
 * With fuse_zero the zeros are written by the same thread just before its
 * adds (each run owns its output rows), instead of in a separate pass. */
typedef struct add_job {
    loom__nditer it;      /* operands: out, src (index_add); out, index, src (scatter_add) */
    const int64_t *index; /* index_add: the 1-D index */
    int64_t size;         /* output size along dim */
    int64_t len;          /* entries along dim */
    int64_t ostride;      /* output elements per step along dim */
    int64_t xstride;      /* index elements per entry */
    int64_t sstride;      /* source elements per entry */
    bool fuse_zero;
} add_job;

/* Adds and zeroes for one element type; T is uint64_t for int64, so that
 * overflow wraps (as PyTorch's does) without undefined behaviour. */
#define DEFINE_ADD_KERNELS(SUF, T)                                                                       \
    static inline void add_row_##SUF(T *restrict o, const T *restrict s, int64_t ss, int64_t n)          \
    {                                                                                                    \
        if (ss == 1)                                                                                     \
            for (int64_t j = 0; j < n; j++) o[j] += s[j];                                                \
        else                                                                                             \
            for (int64_t j = 0; j < n; j++) o[j] += s[j * ss];                                           \
    }                                                                                                    \
                                                                                                         \
    /* Zeroes `size` rows of n elements, osd apart (one memset when adjacent). */                   \
    static inline void zero_rows_##SUF(T *o, int64_t size, int64_t osd, int64_t n)                       \
    {                                                                                                    \
        if (osd == n)                                                                                    \
            memset(o, 0, (size_t)(size * n) * sizeof(T));                                                \
        else                                                                                             \
            for (int64_t v = 0; v < size; v++) memset(o + v * osd, 0, (size_t)n * sizeof(T));           \
    }                                                                                                    \
                                                                                                         \
    static void index_add_range_##SUF(const add_job *job, int64_t begin, int64_t end)                    \
    {                                                                                                    \
        const loom__nditer *it = &job->it;                                                               \
        const int in = it->ndim - 1;                                                                     \
        const int64_t so = it->strides[0][in], ss = it->strides[1][in];                                  \
        const int64_t size = job->size, len = job->len, osd = job->ostride, ssd = job->sstride;          \
        const int64_t xs = job->xstride, *ix = job->index;                                               \
        loom__nditer_pos pos;                                                                            \
        char *p[LOOM__NDITER_MAX_OPS];                                                                   \
        int64_t n;                                                                                       \
        loom__nditer_seek(it, begin, end, &pos);                                                         \
        while ((n = loom__nditer_next(it, &pos, p)) > 0) {                                               \
            T *o = (T *)p[0];                                                                            \
            const T *s = (const T *)p[1];                                                                \
            if (so == 1 || n == 1) {                                                                     \
                if (job->fuse_zero) zero_rows_##SUF(o, size, osd, n);                                 \
                for (int64_t i = 0; i < len; i++) add_row_##SUF(o + ix[i * xs] * osd, s + i * ssd, ss, n); \
            } else {                                                                                     \
                for (int64_t j = 0; j < n; j++) {                                                        \
                    T *oj = o + j * so;                                                                  \
                    const T *sj = s + j * ss;                                                            \
                    if (job->fuse_zero) zero_rows_##SUF(oj, size, osd, 1);                            \
                    for (int64_t i = 0; i < len; i++) oj[ix[i * xs] * osd] += sj[i * ssd];               \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
                                                                                                         \
    /* Returns false at the first out-of-range index it meets (the caller   \
     * then finds the first one in row-major order for the message). */     \
    static bool scatter_add_range_##SUF(const add_job *job, int64_t begin, int64_t end)                  \
    {                                                                                                    \
        const loom__nditer *it = &job->it;                                                               \
        const int in = it->ndim - 1;                                                                     \
        const int64_t so = it->strides[0][in], xs = it->strides[1][in], ss = it->strides[2][in];         \
        const int64_t len = job->len, osd = job->ostride, xsd = job->xstride, ssd = job->sstride;        \
        const uint64_t size = (uint64_t)job->size;                                                       \
        loom__nditer_pos pos;                                                                            \
        char *p[LOOM__NDITER_MAX_OPS];                                                                   \
        int64_t n;                                                                                       \
        loom__nditer_seek(it, begin, end, &pos);                                                         \
        while ((n = loom__nditer_next(it, &pos, p)) > 0) {                                               \
            T *o = (T *)p[0];                                                                            \
            const int64_t *x = (const int64_t *)p[1];                                                    \
            const T *s = (const T *)p[2];                                                                \
            if (so == 1 || n == 1) {                                                                     \
                if (job->fuse_zero) zero_rows_##SUF(o, job->size, osd, n);                               \
                for (int64_t i = 0; i < len; i++) {                                                      \
                    const int64_t *xi = x + i * xsd;                                                     \
                    const T *si = s + i * ssd;                                                           \
                    if (xs == 0) { /* one index for the row segment (an expanded index) */             \
                        if ((uint64_t)xi[0] >= size) return false;                                       \
                        add_row_##SUF(o + xi[0] * osd, si, ss, n);                                       \
                    } else if (xs == 1 && ss == 1) {                                                     \
                        for (int64_t j = 0; j < n; j++) {                                                \
                            const int64_t v = xi[j];                                                     \
                            if ((uint64_t)v >= size) return false;                                       \
                            o[v * osd + j] += si[j];                                                     \
                        }                                                                                \
                    } else {                                                                             \
                        for (int64_t j = 0; j < n; j++) {                                                \
                            const int64_t v = xi[j * xs];                                                \
                            if ((uint64_t)v >= size) return false;                                       \
                            o[v * osd + j] += si[j * ss];                                                \
                        }                                                                                \
                    }                                                                                    \
                }                                                                                        \
            } else {                                                                                     \
                for (int64_t j = 0; j < n; j++) {                                                        \
                    T *oj = o + j * so;                                                                  \
                    const int64_t *xj = x + j * xs;                                                      \
                    const T *sj = s + j * ss;                                                            \
                    if (job->fuse_zero) zero_rows_##SUF(oj, job->size, osd, 1);                          \
                    for (int64_t i = 0; i < len; i++) {                                                  \
                        const int64_t v = xj[i * xsd];                                                   \
                        if ((uint64_t)v >= size) return false;                                           \
                        oj[v * osd] += sj[i * ssd];                                                      \
                    }                                                                                    \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
        return true;                                                                                     \
    }

DEFINE_ADD_KERNELS(f32, float)
DEFINE_ADD_KERNELS(i64, uint64_t)

/* Runs the adds of job on a team that splits the output positions outside
 * dim; `work` (elements touched) sizes the team. Returns false if scatter_add
 * met an out-of-range index (index_add's are checked before). */
static bool run_adds(const add_job *job, bool scatter, loom_dtype dtype, int nthreads, int64_t work)
{
    const loom__nditer *it = &job->it;
    const bool rows = it->strides[0][it->ndim - 1] == 1;
    const int64_t grain = rows ? ADD_GRAIN : 1;
    int nt = loom__ref_team(nthreads, work, COPY_GRAIN);
    const int64_t units = it->numel / grain;
    if (nt > units) nt = units > 1 ? (int)units : 1;
    (void)nt; /* unused without OpenMP */
    bool ok = true;
    LOOM__OMP_TEAM(nt,
    {
        int64_t begin, end;
        bool mine = true;
        loom__nditer_part(it->numel, loom__omp_thread(), loom__omp_nthreads(), grain, &begin, &end);
        if (scatter) {
            if (dtype == LOOM_FLOAT32) mine = scatter_add_range_f32(job, begin, end);
            else mine = scatter_add_range_i64(job, begin, end);
        } else {
            if (dtype == LOOM_FLOAT32) index_add_range_f32(job, begin, end);
            else index_add_range_i64(job, begin, end);
        }
        if (!mine) {
            LOOM__OMP_CRITICAL(loom_ref_scatter_error)
            ok = false;
        }
    });
    return ok;
}

/* The dtype check both adds share. */
static loom_status check_add_dtypes(const char *name, const loom__tview *src, const loom__tview *idx,
                                    const loom__tview *out)
{
    if (idx->dtype != LOOM_INT64)
        return loom__set_error(LOOM_ERR_DTYPE, "%s: index dtype is %s, expected int64", name,
                               loom_dtype_name(idx->dtype));
    if (out->dtype != src->dtype)
        return loom__set_error(LOOM_ERR_DTYPE, "%s: output dtype %s differs from source %s", name,
                               loom_dtype_name(out->dtype), loom_dtype_name(src->dtype));
    if (out->dtype != LOOM_FLOAT32 && out->dtype != LOOM_INT64)
        return loom__set_error(LOOM_ERR_DTYPE, "%s: dtype %s is not supported (float32 or int64)", name,
                               loom_dtype_name(out->dtype));
    return LOOM_OK;
}

/* INDEX_ADD: out = zeros with out[.., index[i], ..] += src[.., i, ..] along
 * dim; src has out's shape but index's length L along dim. float32, int64. */
loom_status loom__ref_index_add(const loom__kcall *call)
{
    if (call->n_in != 2)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "index_add: expected 2 inputs, got %d", call->n_in);
    const loom__tview *src = &call->in[0], *idx = &call->in[1], *out = &call->out;
    int dim = call->attrs ? call->attrs->axis.dim : 0;
    if (!norm_dim(&dim, out->ndim))
        return loom__set_error(LOOM_ERR_RANGE, "index_add: dim %d is out of range for %d dims",
                               call->attrs ? call->attrs->axis.dim : 0, out->ndim);
    loom_status st = check_add_dtypes("index_add", src, idx, out);
    if (st != LOOM_OK) return st;
    bool ok = idx->ndim == 1 && src->ndim == out->ndim;
    for (int d = 0; ok && d < out->ndim; d++) ok = src->shape[d] == (d == dim ? idx->shape[0] : out->shape[d]);
    if (!ok) {
        char a[LOOM__SHAPE_STR_MAX], b[LOOM__SHAPE_STR_MAX], c[LOOM__SHAPE_STR_MAX];
        return loom__set_error(LOOM_ERR_SHAPE, "index_add: source %s, index %s and output %s do not match",
                               loom__fmt_shape(a, sizeof a, src->ndim, src->shape),
                               loom__fmt_shape(b, sizeof b, idx->ndim, idx->shape),
                               loom__fmt_shape(c, sizeof c, out->ndim, out->shape));
    }
    add_job job;
    job.len = idx->shape[0];
    job.size = out->shape[dim];
    if (job.len == 0) { /* nothing to add: src has no elements */
        zero_output(out, call->nthreads, 1, 0, 0);
        return LOOM_OK;
    }
    job.index = (const int64_t *)idx->data;
    job.xstride = idx->strides[0];
    st = check_indices(NULL, 0, job.index, job.len, job.xstride, job.size, call->nthreads, "index_add", dim);
    if (st != LOOM_OK) return st;
    job.ostride = out->strides[dim];
    job.sstride = src->strides[dim];
    job.fuse_zero = true; /* the positions outside dim are all of out's */
    int64_t shape[LOOM_MAX_DIMS];
    for (int d = 0; d < out->ndim; d++) shape[d] = d == dim ? 1 : out->shape[d];
    const loom__tview *views[2] = {out, src};
    loom__nditer_init(&job.it, out->ndim, shape, 2, views);
    run_adds(&job, false, out->dtype, call->nthreads, loom__tview_numel(out) + loom__tview_numel(src));
    return LOOM_OK;
}

/* SCATTER_ADD (torch.scatter_add on zeros): out[.., index[p], ..] += src[p]
 * along dim for every position p of index; src has index's shape, and
 * index.shape[d] <= out.shape[d] for d != dim. float32, int64. */
loom_status loom__ref_scatter_add(const loom__kcall *call)
{
    if (call->n_in != 2)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "scatter_add: expected 2 inputs, got %d", call->n_in);
    const loom__tview *src = &call->in[0], *idx = &call->in[1], *out = &call->out;
    int dim = call->attrs ? call->attrs->axis.dim : 0;
    if (!norm_dim(&dim, out->ndim))
        return loom__set_error(LOOM_ERR_RANGE, "scatter_add: dim %d is out of range for %d dims",
                               call->attrs ? call->attrs->axis.dim : 0, out->ndim);
    loom_status st = check_add_dtypes("scatter_add", src, idx, out);
    if (st != LOOM_OK) return st;
    bool ok = idx->ndim == out->ndim && src->ndim == out->ndim, same = true;
    for (int d = 0; ok && d < out->ndim; d++) {
        ok = src->shape[d] == idx->shape[d] && (d == dim || idx->shape[d] <= out->shape[d]);
        same = same && (d == dim || idx->shape[d] == out->shape[d]);
    }
    if (!ok) {
        char a[LOOM__SHAPE_STR_MAX], b[LOOM__SHAPE_STR_MAX], c[LOOM__SHAPE_STR_MAX];
        return loom__set_error(LOOM_ERR_SHAPE, "scatter_add: source %s, index %s and output %s do not match",
                               loom__fmt_shape(a, sizeof a, src->ndim, src->shape),
                               loom__fmt_shape(b, sizeof b, idx->ndim, idx->shape),
                               loom__fmt_shape(c, sizeof c, out->ndim, out->shape));
    }
    const int64_t numel = loom__tview_numel(idx);
    if (numel == 0) {
        zero_output(out, call->nthreads, 1, 0, 0);
        return LOOM_OK;
    }
    add_job job;
    job.size = out->shape[dim];
    job.index = NULL;
    job.len = idx->shape[dim];
    job.ostride = out->strides[dim];
    job.xstride = idx->strides[dim];
    job.sstride = src->strides[dim];
    /* The index covers every output position outside dim: each thread zeroes
     * its own rows. Otherwise a separate pass zeroes everything first. */
    job.fuse_zero = same;
    if (!same) zero_output(out, call->nthreads, 1, 0, 0);
    int64_t shape[LOOM_MAX_DIMS];
    for (int d = 0; d < idx->ndim; d++) shape[d] = d == dim ? 1 : idx->shape[d];
    const loom__tview *views[3] = {out, idx, src};
    loom__nditer_init(&job.it, idx->ndim, shape, 3, views);
    /* The adds check each index as they go (a separate pass would cost a
     * third of the time); on a bad one, a pass over the index names the
     * first in row-major order. */
    if (run_adds(&job, true, out->dtype, call->nthreads, (same ? loom__tview_numel(out) : 0) + 2 * numel))
        return LOOM_OK;
    const loom__tview *iv[1] = {idx};
    loom__nditer all;
    loom__nditer_init(&all, idx->ndim, idx->shape, 1, iv);
    st = check_indices(&all, 0, NULL, 0, 0, job.size, call->nthreads, "scatter_add", dim);
    return st != LOOM_OK ? st : loom__set_error(LOOM_ERR_RANGE, "scatter_add: an index is out of range for dim %d", dim);
}
