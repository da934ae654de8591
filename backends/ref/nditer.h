/*
 * backends/ref/nditer.h - N-d strided iteration for the portable C kernels
 * (internal to backends/ref; everything here is static inline).
 *
 * An elementwise kernel sees up to four views (the output and three inputs)
 * of one iteration shape, each with its own strides (0 for a broadcast dim).
 * Walking them with a full N-d index per element is slow, so the iterator
 *
 *   1. drops dims of size 1 and merges ("coalesces") neighbouring dims that
 *      are contiguous with respect to *every* operand: dims d and d+1 merge
 *      when stride[d] == stride[d+1] * shape[d+1] for all operands. A fully
 *      contiguous [64, 3, 32] becomes one dim of 6144; a row-broadcast
 *      [M, N] + [1, N] stays two dims (the bias repeats every row);
 *   2. walks the remaining outer dims with an index counter and hands each
 *      run of the innermost dim (a length plus per-operand pointers; the
 *      inner strides are it->strides[op][it->ndim - 1]) to a tight loop that
 *      the caller writes, usually with a unit-stride fast path.
 *
 * The dim order is the given one (the output's row-major order): the output
 * is contiguous, so keeping its order keeps the writes sequential.
 *
 * Parallel split: the flattened iteration space [0, numel) is cut into parts
 * with loom__nditer_part(), so a part may start or end in the middle of a
 * row; that keeps the parts balanced even when the outer count is smaller
 * than the thread count (a single long row splits too). The usual shape is
 *
 *     loom__nditer it;
 *     loom__nditer_init(&it, ndim, shape, 3, views);
 *     LOOM__OMP_TEAM(nt, {
 *         int64_t begin, end;
 *         loom__nditer_part(it.numel, loom__omp_thread(), loom__omp_nthreads(),
 *                           64, &begin, &end);
 *         loom__nditer_pos pos;
 *         char *p[LOOM__NDITER_MAX_OPS];
 *         int64_t n;
 *         loom__nditer_seek(&it, begin, end, &pos);
 *         while ((n = loom__nditer_next(&it, &pos, p)) > 0) row(n, p, ...);
 *     });
 *
 * Offsets are kept as byte offsets in int64_t (not pointers) so that stepping
 * past the last row never forms an out-of-bounds pointer.
 */
#ifndef LOOM_BACKENDS_REF_NDITER_H
#define LOOM_BACKENDS_REF_NDITER_H

#include <stdint.h>
#include <string.h>

#include "backends/kernel.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* The output and up to three inputs (where: cond, a, b). */
#define LOOM__NDITER_MAX_OPS 4

typedef struct loom__nditer {
    int nops;
    int ndim;      /* >= 1 after coalescing; dim ndim - 1 is the inner dim */
    int64_t numel; /* product of shape */
    int64_t shape[LOOM_MAX_DIMS];
    int64_t strides[LOOM__NDITER_MAX_OPS][LOOM_MAX_DIMS]; /* elements */
    int64_t bstrides[LOOM__NDITER_MAX_OPS][LOOM_MAX_DIMS]; /* bytes */
    char *data[LOOM__NDITER_MAX_OPS];
    int esize[LOOM__NDITER_MAX_OPS]; /* bytes per element */
} loom__nditer;

/* A position inside a part: the multi-index of the next element, each
 * operand's byte offset from its data pointer, and the elements left. */
typedef struct loom__nditer_pos {
    int64_t idx[LOOM_MAX_DIMS];
    int64_t off[LOOM__NDITER_MAX_OPS];
    int64_t left;
} loom__nditer_pos;

/* Sets up `it` over `shape` (ndim dims, 0 <= ndim <= LOOM_MAX_DIMS) for nops
 * operands. Operand k's data, dtype and strides come from views[k]; its own
 * shape is ignored (elementwise views share the iteration shape; gather
 * passes its source with the index's shape). Element sizes come from
 * loom_dtype_size(); callers check dtypes first. */
static inline void loom__nditer_init(loom__nditer *it, int ndim, const int64_t *shape, int nops,
                                     const loom__tview *const *views)
{
    it->nops = nops;
    it->ndim = 0;
    it->numel = 1;
    for (int k = 0; k < nops; k++) {
        it->data[k] = (char *)views[k]->data;
        it->esize[k] = loom_dtype_size(views[k]->dtype);
    }
    for (int d = 0; d < ndim; d++) {
        it->numel *= shape[d];
        if (shape[d] == 1) continue; /* a size-1 dim never moves any pointer */
        int j = it->ndim;
        bool merge = j > 0;
        for (int k = 0; k < nops && merge; k++)
            merge = it->strides[k][j - 1] == views[k]->strides[d] * shape[d];
        if (merge) {
            /* Fold d into the previous kept dim: same walk, fewer loop levels. */
            it->shape[j - 1] *= shape[d];
            for (int k = 0; k < nops; k++) it->strides[k][j - 1] = views[k]->strides[d];
        } else {
            it->shape[j] = shape[d];
            for (int k = 0; k < nops; k++) it->strides[k][j] = views[k]->strides[d];
            it->ndim++;
        }
    }
    if (it->ndim == 0) { /* one element (or a shape of all ones) */
        it->ndim = 1;
        it->shape[0] = 1;
        for (int k = 0; k < nops; k++) it->strides[k][0] = 0;
    }
    for (int k = 0; k < nops; k++)
        for (int d = 0; d < it->ndim; d++) it->bstrides[k][d] = it->strides[k][d] * it->esize[k];
}

/* Part `part` of `nparts` of [0, n): contiguous, in order, balanced, with
 * boundaries on multiples of `grain` elements (so neighbouring threads do not
 * write the same cache line of a contiguous output). Empty parts are
 * possible (begin == end). */
static inline void loom__nditer_part(int64_t n, int part, int nparts, int64_t grain,
                                     int64_t *begin, int64_t *end)
{
    if (grain < 1) grain = 1;
    if (nparts < 1) nparts = 1;
    int64_t blocks = (n + grain - 1) / grain;
    int64_t b0 = blocks * part / nparts, b1 = blocks * (part + 1) / nparts;
    *begin = b0 * grain < n ? b0 * grain : n;
    *end = b1 * grain < n ? b1 * grain : n;
}

/* Positions `pos` at flat element `begin`, to walk up to `end`. */
static inline void loom__nditer_seek(const loom__nditer *it, int64_t begin, int64_t end,
                                     loom__nditer_pos *pos)
{
    int64_t rest = begin;
    for (int k = 0; k < it->nops; k++) pos->off[k] = 0;
    pos->left = end > begin ? end - begin : 0;
    if (pos->left == 0) return; /* also keeps a size-0 dim out of the % below */
    for (int d = it->ndim - 1; d >= 0; d--) {
        pos->idx[d] = rest % it->shape[d];
        rest /= it->shape[d];
        for (int k = 0; k < it->nops; k++) pos->off[k] += pos->idx[d] * it->bstrides[k][d];
    }
}

/* The next run of the inner dim: returns its length (0 when the part is
 * done) and stores each operand's pointer to its first element in p[k]. */
static inline int64_t loom__nditer_next(const loom__nditer *it, loom__nditer_pos *pos, char **p)
{
    if (pos->left <= 0) return 0;
    const int in = it->ndim - 1;
    int64_t n = it->shape[in] - pos->idx[in];
    if (n > pos->left) n = pos->left;
    for (int k = 0; k < it->nops; k++) {
        p[k] = it->data[k] + pos->off[k];
        pos->off[k] += n * it->bstrides[k][in];
    }
    pos->left -= n;
    pos->idx[in] += n;
    /* Carry into the outer dims once the row is finished. */
    for (int d = in; d > 0 && pos->idx[d] == it->shape[d]; d--) {
        pos->idx[d] = 0;
        pos->idx[d - 1]++;
        for (int k = 0; k < it->nops; k++)
            pos->off[k] += it->bstrides[k][d - 1] - it->shape[d] * it->bstrides[k][d];
    }
    return n;
}

/* Copies elements [begin, end) of the iteration from operand 1 to operand 0
 * (same element size). Unit strides become one memcpy per run. */
static inline void loom__nditer_copy_range(const loom__nditer *it, int64_t begin, int64_t end)
{
    loom__nditer_pos pos;
    char *p[LOOM__NDITER_MAX_OPS];
    int64_t n;
    const int in = it->ndim - 1, es = it->esize[0];
    const int64_t so = it->strides[0][in], si = it->strides[1][in];
    loom__nditer_seek(it, begin, end, &pos);
    while ((n = loom__nditer_next(it, &pos, p)) > 0) {
        if ((so == 1 && si == 1) || n == 1) {
            memcpy(p[0], p[1], (size_t)(n * es));
            continue;
        }
        /* Strided or broadcast source: typed loops so gcc need not call
         * memcpy per element. */
        switch (es) {
        case 1:
            for (int64_t i = 0; i < n; i++) ((uint8_t *)p[0])[i * so] = ((const uint8_t *)p[1])[i * si];
            break;
        case 4:
            for (int64_t i = 0; i < n; i++) ((uint32_t *)p[0])[i * so] = ((const uint32_t *)p[1])[i * si];
            break;
        case 8:
            for (int64_t i = 0; i < n; i++) ((uint64_t *)p[0])[i * so] = ((const uint64_t *)p[1])[i * si];
            break;
        default:
            for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * so * es, p[1] + i * si * es, (size_t)es);
        }
    }
}

/* `LOOM__OMP_TEAM(nt, { body });` runs body on a team of nt threads, or
 * once on the calling thread when nt <= 1, without entering any OpenMP
 * region: libgomp mallocs and frees a team descriptor for every region,
 * even one that an if clause makes serial (only teams of two or more
 * threads are kept for the next region), and a replayed step must make no
 * heap allocation (docs/runtime.md section 10). The body is written twice
 * by the macro. Outside a region loom__omp_thread() is 0 and
 * loom__omp_nthreads() 1, as in a team of one. `LOOM__OMP_CRITICAL(name)`
 * is a named critical section. Both work without OpenMP (a build without
 * -fopenmp runs every body on the calling thread and has no
 * unknown-pragma warnings). */
#ifdef _OPENMP
#define LOOM__PRAGMA(x) _Pragma(#x)
#define LOOM__OMP_TEAM(nt, ...)                                                      \
    do {                                                                             \
        if ((nt) > 1) {                                                              \
            LOOM__PRAGMA(omp parallel num_threads(nt)) { __VA_ARGS__ }               \
        } else {                                                                     \
            __VA_ARGS__                                                              \
        }                                                                            \
    } while (0)
#define LOOM__OMP_CRITICAL(name) LOOM__PRAGMA(omp critical(name))
#else
#define LOOM__OMP_TEAM(nt, ...)                                                      \
    do {                                                                             \
        (void)(nt);                                                                  \
        __VA_ARGS__                                                                  \
    } while (0)
#define LOOM__OMP_CRITICAL(name)
#endif

/* OpenMP thread id and team size (0 and 1 without OpenMP). */
static inline int loom__omp_thread(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static inline int loom__omp_nthreads(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* Team size for `work` units when one thread should get at least
 * `min_per_thread` of them: 1 for small work, never more than nthreads. */
static inline int loom__ref_team(int nthreads, int64_t work, int64_t min_per_thread)
{
    if (nthreads <= 1 || work < 2 * min_per_thread) return 1;
    int64_t t = work / min_per_thread;
    return t < nthreads ? (int)t : nthreads;
}

#endif /* LOOM_BACKENDS_REF_NDITER_H */
