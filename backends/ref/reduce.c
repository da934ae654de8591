/*
 * backends/ref/reduce.c - the portable C reductions: SUM MEAN MAX MIN
 * ARGMAX ARGMIN over any set of dims.
 *
 * The call gives the input [d0, ..., dn-1] and the output in keepdim form
 * (reduced dims of size 1, stride 0); attrs.reduce.mask bit d marks dim d as
 * reduced. The plan splits the dims into "kept" dims (one per output
 * element) and "reduced" dims (walked for each output element, in row-major
 * order of the reduced dims, which is the order ARGMAX/ARGMIN count in), and
 * coalesces each list (like nditer.h) so that, e.g., reducing dims 1 and 2 of
 * a contiguous [A, B, C] becomes A outputs of one contiguous run of B*C.
 *
 * Two paths, chosen from the shapes only (never from the thread count):
 *   - rows: the innermost reduced dim is contiguous (row sums, softmax-style
 *     reductions over the last dim, full reductions) or nothing better
 *     applies: each output element walks its reduced runs; float sums of
 *     long runs use 16 independent double lanes, a fixed association that
 *     gcc vectorises;
 *   - columns: the innermost *kept* dim is contiguous in input and output and
 *     the reduced dims are outer (sum over the batch dim 0 of [M, N]): a block
 *     of up to COLS neighbouring outputs is accumulated row by row into a
 *     small stack buffer, so the input is read sequentially and the inner
 *     loop is a vectorised `acc[j] += x[j]`.
 * Every output element is computed by one thread in a fixed order, so
 * results are bitwise identical for any thread count. Threads split the
 * output elements (rows) or the column blocks (columns).
 *
 * Semantics follow PyTorch: float SUM/MEAN accumulate in double; int64/bool
 * SUM give int64 (wrapping); MAX/MIN return NaN if the reduced set holds a
 * NaN; ARGMAX/ARGMIN return the first extreme, or the first NaN.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backends/ref/nditer.h"
#include "backends/ref/ref.h"
#include "backends/registry.h"
#include "runtime/error.h"

#define COLS 256         /* outputs per column block: 2 KiB of double sums */
#define RED_GRAIN 32768  /* input elements per thread before splitting pays */
#define LANES 16         /* independent partial sums of a long float run */

typedef struct rplan {
    int nk, nr;                                  /* kept / reduced dims after coalescing */
    int64_t kshape[LOOM_MAX_DIMS];
    int64_t kin[LOOM_MAX_DIMS], kout[LOOM_MAX_DIMS]; /* byte strides */
    int64_t rshape[LOOM_MAX_DIMS], rin[LOOM_MAX_DIMS]; /* rin in bytes */
    int64_t n_out, n_red;                        /* output elements, elements per output */
    int64_t nruns, rlen, rstride;                /* runs of the inner reduced dim; rstride in elements */
    int ies, oes;                                /* element sizes of input and output */
    bool mean;
} rplan;

/* Byte offset of the next run of the inner reduced dim: an odometer over the
 * outer reduced dims 0 .. nr-2. */
static inline int64_t next_run(const rplan *pl, int64_t *idx, int64_t off)
{
    for (int d = pl->nr - 2; d >= 0; d--) {
        off += pl->rin[d];
        if (++idx[d] < pl->rshape[d]) return off;
        off -= pl->rshape[d] * pl->rin[d];
        idx[d] = 0;
    }
    return off;
}

/* Appends a dim to a coalesced list: merges it into the last one when the
 * walk is the same for every stride array (size-1 dims are dropped). */
static void push_dim(int *n, int64_t *shape, int64_t *s0, int64_t *s1, int64_t size, int64_t a,
                     int64_t b)
{
    if (size == 1) return;
    if (*n > 0 && shape[*n - 1] != 0 && size != 0 && s0[*n - 1] == a * size &&
        (!s1 || s1[*n - 1] == b * size)) {
        shape[*n - 1] *= size;
        s0[*n - 1] = a;
        if (s1) s1[*n - 1] = b;
        return;
    }
    shape[*n] = size;
    s0[*n] = a;
    if (s1) s1[*n] = b;
    (*n)++;
}

static loom_status make_plan(const loom__kcall *call, rplan *pl)
{
    const loom__tview *in = &call->in[0], *out = &call->out;
    const char *name = loom__op_name(call->op);
    const uint32_t mask = call->attrs ? call->attrs->reduce.mask : 0;
    if (in->ndim != out->ndim || in->ndim > LOOM_MAX_DIMS || in->ndim < 0)
        return loom__set_error(LOOM_ERR_SHAPE, "%s: output has %d dims, input %d (keepdim form expected)",
                               name, out->ndim, in->ndim);
    if (in->ndim < 32 && (mask >> in->ndim) != 0)
        return loom__set_error(LOOM_ERR_RANGE, "%s: reduce mask 0x%x names dims beyond %d", name,
                               (unsigned)mask, in->ndim);
    memset(pl, 0, sizeof *pl);
    pl->ies = loom_dtype_size(in->dtype);
    pl->oes = loom_dtype_size(out->dtype);
    pl->n_out = 1;
    pl->n_red = 1;
    bool keepdim_form = true;
    for (int d = 0; d < in->ndim && keepdim_form; d++) {
        const int64_t size = in->shape[d];
        if (mask & (1u << d)) {
            keepdim_form = out->shape[d] == 1;
            pl->n_red *= size;
            push_dim(&pl->nr, pl->rshape, pl->rin, NULL, size, in->strides[d] * pl->ies, 0);
        } else {
            keepdim_form = out->shape[d] == size;
            pl->n_out *= size;
            push_dim(&pl->nk, pl->kshape, pl->kin, pl->kout, size, in->strides[d] * pl->ies,
                     out->strides[d] * pl->oes);
        }
    }
    if (!keepdim_form) {
        char a[LOOM__SHAPE_STR_MAX], b[LOOM__SHAPE_STR_MAX];
        return loom__set_error(LOOM_ERR_SHAPE, "%s: output shape %s is not the keepdim form of %s",
                               name, loom__fmt_shape(a, sizeof a, out->ndim, out->shape),
                               loom__fmt_shape(b, sizeof b, in->ndim, in->shape));
    }
    /* Empty lists become one dim of size 1 so the walks need no special case. */
    if (pl->nk == 0) {
        pl->nk = 1;
        pl->kshape[0] = 1;
    }
    if (pl->nr == 0) {
        pl->nr = 1;
        pl->rshape[0] = 1;
    }
    pl->rlen = pl->rshape[pl->nr - 1];
    pl->rstride = pl->rin[pl->nr - 1] / (pl->ies ? pl->ies : 1);
    pl->nruns = 1;
    for (int d = 0; d < pl->nr - 1; d++) pl->nruns *= pl->rshape[d];
    pl->mean = call->op == LOOM_OP_MEAN;
    return LOOM_OK;
}

/* ---- per-output row functions and per-block column functions ------------- */

/* A row function reduces one output element: `in` points at its first input
 * element. A column function reduces nc (<= COLS) neighbouring outputs whose
 * inputs are contiguous: in[j] / out[j] for j < nc. */
typedef void (*row_fn)(const rplan *pl, const char *in, char *out);
typedef void (*col_fn)(const rplan *pl, const char *in, char *out, int64_t nc);

/* Sum of one float run in double. Long unit-stride runs use LANES partial
 * sums combined pairwise: a fixed order, so still deterministic. */
static inline double sum_run_f32(const float *x, int64_t n, int64_t s)
{
    if (s != 1 || n < 2 * LANES) {
        double t = 0.0;
        for (int64_t i = 0; i < n; i++) t += x[i * s];
        return t;
    }
    double l[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) l[j] += x[i + j];
    for (; i < n; i++) l[i % LANES] += x[i];
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++) l[j] += l[j + w];
    return l[0];
}

static void row_sum_f32(const rplan *pl, const char *in, char *out)
{
    int64_t idx[LOOM_MAX_DIMS] = {0}, off = 0;
    double t = 0.0;
    for (int64_t r = 0; r < pl->nruns; r++, off = next_run(pl, idx, off))
        t += sum_run_f32((const float *)(in + off), pl->rlen, pl->rstride);
    *(float *)out = (float)(pl->mean ? t / (double)pl->n_red : t); /* 0/0: NaN, as PyTorch */
}

static void col_sum_f32(const rplan *pl, const char *in, char *out, int64_t nc)
{
    double acc[COLS];
    for (int64_t j = 0; j < nc; j++) acc[j] = 0.0;
    int64_t idx[LOOM_MAX_DIMS] = {0}, off = 0;
    const int64_t rs = pl->rstride;
    for (int64_t r = 0; r < pl->nruns; r++, off = next_run(pl, idx, off)) {
        const float *x = (const float *)(in + off);
        int64_t t = 0;
        /* Four rows per pass over acc: the same left-to-right additions as
         * one row at a time, with a quarter of the acc loads and stores. */
        for (; t + 4 <= pl->rlen; t += 4) {
            const float *restrict x0 = x + t * rs, *restrict x1 = x0 + rs;
            const float *restrict x2 = x1 + rs, *restrict x3 = x2 + rs;
            for (int64_t j = 0; j < nc; j++) acc[j] = (((acc[j] + x0[j]) + x1[j]) + x2[j]) + x3[j];
        }
        for (; t < pl->rlen; t++) {
            const float *restrict x0 = x + t * rs;
            for (int64_t j = 0; j < nc; j++) acc[j] += x0[j];
        }
    }
    float *restrict o = (float *)out;
    if (pl->mean)
        for (int64_t j = 0; j < nc; j++) o[j] = (float)(acc[j] / (double)pl->n_red);
    else
        for (int64_t j = 0; j < nc; j++) o[j] = (float)acc[j];
}

/* int64 / bool -> int64 sums wrap (unsigned arithmetic), like PyTorch. */
#define INT_SUM(SUF, T)                                                                 \
    static void row_sum_##SUF(const rplan *pl, const char *in, char *out)               \
    {                                                                                   \
        int64_t idx[LOOM_MAX_DIMS] = {0}, off = 0;                                      \
        uint64_t t = 0;                                                                 \
        const int64_t n = pl->rlen, s = pl->rstride;                                    \
        for (int64_t r = 0; r < pl->nruns; r++, off = next_run(pl, idx, off)) {         \
            const T *x = (const T *)(in + off);                                         \
            if (s == 1)                                                                 \
                for (int64_t i = 0; i < n; i++) t += (uint64_t)x[i];                    \
            else                                                                        \
                for (int64_t i = 0; i < n; i++) t += (uint64_t)x[i * s];                \
        }                                                                               \
        *(int64_t *)out = (int64_t)t;                                                   \
    }                                                                                   \
    static void col_sum_##SUF(const rplan *pl, const char *in, char *out, int64_t nc)   \
    {                                                                                   \
        uint64_t acc[COLS];                                                             \
        for (int64_t j = 0; j < nc; j++) acc[j] = 0;                                    \
        int64_t idx[LOOM_MAX_DIMS] = {0}, off = 0;                                      \
        for (int64_t r = 0; r < pl->nruns; r++, off = next_run(pl, idx, off))           \
            for (int64_t t = 0; t < pl->rlen; t++) {                                    \
                const T *restrict x = (const T *)(in + off + t * pl->rstride * (int64_t)sizeof(T)); \
                for (int64_t j = 0; j < nc; j++) acc[j] += (uint64_t)x[j];              \
            }                                                                           \
        for (int64_t j = 0; j < nc; j++) ((int64_t *)out)[j] = (int64_t)acc[j];         \
    }

INT_SUM(i64, int64_t)
INT_SUM(u8, uint8_t)

/* NaN tests that fold away for integer types. */
static inline int is_nan_f32(float x) { return x != x; }
static inline int is_nan_i64(int64_t x) { (void)x; return 0; }
static inline int is_nan_u8(uint8_t x) { (void)x; return 0; }

/* MAX / MIN: m = better(x, m) ? x : m, where a NaN x is always better and
 * nothing beats a NaN m, so the result is NaN as soon as one is seen. The
 * identity (INIT) is -inf / +inf or the integer extreme. */
static inline float upd_max_f32(float m, float x) { return (x > m || x != x) ? x : m; }
static inline float upd_min_f32(float m, float x) { return (x < m || x != x) ? x : m; }

/* Extreme of one float run. gcc does not vectorise a NaN-propagating
 * max/min reduction written in plain C (it is not a MAX_EXPR without
 * -ffinite-math-only), so unit-stride runs use GCC vector extensions: two
 * vector accumulators updated with a compare-and-blend. max/min are exact,
 * so the lane order does not change the result. */
#if defined(__GNUC__)
#if defined(__AVX__)
#define VF 8 /* floats per vector: one ymm register */
#else
#define VF 4 /* SSE: 16-byte vectors keep the ABI of the target */
#endif
typedef float f32xv __attribute__((vector_size(VF * 4)));
typedef int32_t i32xv __attribute__((vector_size(VF * 4)));

static inline f32xv upd_f32xv(f32xv m, f32xv x, bool is_max)
{
    const i32xv take = (is_max ? (x > m) : (x < m)) | (x != x);
    return (f32xv)((take & (i32xv)x) | (~take & (i32xv)m));
}
#endif

static inline float extreme_run_f32(const float *x, int64_t n, int64_t s, bool is_max)
{
    float m = is_max ? -INFINITY : INFINITY;
    int64_t i = 0;
#if defined(__GNUC__)
    if (s == 1 && n >= 2 * VF) {
        f32xv a, b, v0, v1;
        for (int j = 0; j < VF; j++) a[j] = m;
        b = a;
        for (; i + 2 * VF <= n; i += 2 * VF) {
            memcpy(&v0, x + i, sizeof v0); /* unaligned loads */
            memcpy(&v1, x + i + VF, sizeof v1);
            a = upd_f32xv(a, v0, is_max);
            b = upd_f32xv(b, v1, is_max);
        }
        a = upd_f32xv(a, b, is_max);
        for (int j = 0; j < VF; j++) m = is_max ? upd_max_f32(m, a[j]) : upd_min_f32(m, a[j]);
    }
#endif
    for (; i < n; i++) m = is_max ? upd_max_f32(m, x[i * s]) : upd_min_f32(m, x[i * s]);
    return m;
}
static inline float max_run_f32(const float *x, int64_t n, int64_t s) { return extreme_run_f32(x, n, s, true); }
static inline float min_run_f32(const float *x, int64_t n, int64_t s) { return extreme_run_f32(x, n, s, false); }

/* Integer runs: gcc vectorises these plain loops itself. */
#define INT_EXTREME(NAME, SUF, T, CMP, INIT)                                   \
    static inline T upd_##NAME##_##SUF(T m, T x) { return x CMP m ? x : m; }   \
    static inline T NAME##_run_##SUF(const T *x, int64_t n, int64_t s)         \
    {                                                                          \
        T m = (INIT);                                                          \
        if (s == 1)                                                            \
            for (int64_t i = 0; i < n; i++) m = upd_##NAME##_##SUF(m, x[i]);   \
        else                                                                   \
            for (int64_t i = 0; i < n; i++) m = upd_##NAME##_##SUF(m, x[i * s]); \
        return m;                                                              \
    }

INT_EXTREME(max, i64, int64_t, >, INT64_MIN)
INT_EXTREME(min, i64, int64_t, <, INT64_MAX)
INT_EXTREME(max, u8, uint8_t, >, 0)
INT_EXTREME(min, u8, uint8_t, <, 1) /* bool: min is 1 unless a 0 is seen */

#define MINMAX(NAME, SUF, T, INIT)                                                        \
    static void row_##NAME##_##SUF(const rplan *pl, const char *in, char *out)            \
    {                                                                                     \
        int64_t idx[LOOM_MAX_DIMS] = {0}, off = 0;                                        \
        T m = (INIT);                                                                     \
        for (int64_t r = 0; r < pl->nruns; r++, off = next_run(pl, idx, off))             \
            m = upd_##NAME##_##SUF(m, NAME##_run_##SUF((const T *)(in + off), pl->rlen, pl->rstride)); \
        *(T *)out = m;                                                                    \
    }                                                                                     \
    static void col_##NAME##_##SUF(const rplan *pl, const char *in, char *out, int64_t nc) \
    {                                                                                     \
        T acc[COLS];                                                                      \
        for (int64_t j = 0; j < nc; j++) acc[j] = (INIT);                                 \
        int64_t idx[LOOM_MAX_DIMS] = {0}, off = 0;                                        \
        for (int64_t r = 0; r < pl->nruns; r++, off = next_run(pl, idx, off))             \
            for (int64_t t = 0; t < pl->rlen; t++) {                                      \
                const T *restrict x = (const T *)(in + off + t * pl->rstride * (int64_t)sizeof(T)); \
                for (int64_t j = 0; j < nc; j++) acc[j] = upd_##NAME##_##SUF(acc[j], x[j]); \
            }                                                                             \
        memcpy(out, acc, (size_t)nc * sizeof(T));                                         \
    }

MINMAX(max, f32, float, -INFINITY)
MINMAX(min, f32, float, INFINITY)
MINMAX(max, i64, int64_t, INT64_MIN)
MINMAX(min, i64, int64_t, INT64_MAX)
MINMAX(max, u8, uint8_t, 0)
MINMAX(min, u8, uint8_t, 1)

/* ARGMAX / ARGMIN: the first position p (row-major over the reduced dims)
 * whose value is strictly better than all before it; a NaN is better than
 * any number and nothing beats a NaN, so the first NaN wins. A long dense
 * run is done in two passes: its extreme with the vectorised run function
 * above, then the first position holding it (exact: == on the same values,
 * or the first NaN). */
#define ARG(NAME, EXT, SUF, T, CMP)                                                       \
    static inline int NAME##_better_##SUF(T x, T b)                                       \
    {                                                                                     \
        return x CMP b || (is_nan_##SUF(x) && !is_nan_##SUF(b));                          \
    }                                                                                     \
    static void row_##NAME##_##SUF(const rplan *pl, const char *in, char *out)            \
    {                                                                                     \
        int64_t idx[LOOM_MAX_DIMS] = {0}, off = 0, pos = 0, bi = 0;                       \
        const int64_t n = pl->rlen, s = pl->rstride;                                      \
        T b = *(const T *)in;                                                             \
        for (int64_t r = 0; r < pl->nruns; r++, off = next_run(pl, idx, off), pos += n) { \
            const T *x = (const T *)(in + off);                                           \
            if (s == 1 && n >= 32) {                                                      \
                const T e = EXT##_run_##SUF(x, n, 1);                                     \
                if (r > 0 && !NAME##_better_##SUF(e, b)) continue; /* ties: earlier wins */ \
                int64_t i = 0; /* e is one of x[0..n), so the scan stops */               \
                if (is_nan_##SUF(e))                                                      \
                    while (!is_nan_##SUF(x[i])) i++;                                      \
                else                                                                      \
                    while (x[i] != e) i++;                                                \
                b = e;                                                                    \
                bi = pos + i;                                                             \
                continue;                                                                 \
            }                                                                             \
            for (int64_t i = 0; i < n; i++)                                               \
                if (NAME##_better_##SUF(x[i * s], b)) {                                   \
                    b = x[i * s];                                                         \
                    bi = pos + i;                                                         \
                }                                                                         \
        }                                                                                 \
        *(int64_t *)out = bi;                                                             \
    }                                                                                     \
    static void col_##NAME##_##SUF(const rplan *pl, const char *in, char *out, int64_t nc) \
    {                                                                                     \
        T best[COLS];                                                                     \
        int64_t *restrict bi = (int64_t *)out; /* indices are built in place */           \
        memcpy(best, in, (size_t)nc * sizeof(T));                                         \
        for (int64_t j = 0; j < nc; j++) bi[j] = 0;                                       \
        int64_t idx[LOOM_MAX_DIMS] = {0}, off = 0, pos = 0;                               \
        for (int64_t r = 0; r < pl->nruns; r++, off = next_run(pl, idx, off))             \
            for (int64_t t = 0; t < pl->rlen; t++, pos++) {                               \
                const T *restrict x = (const T *)(in + off + t * pl->rstride * (int64_t)sizeof(T)); \
                for (int64_t j = 0; j < nc; j++) {                                        \
                    const int up = NAME##_better_##SUF(x[j], best[j]);                    \
                    best[j] = up ? x[j] : best[j];                                        \
                    bi[j] = up ? pos : bi[j];                                             \
                }                                                                         \
            }                                                                             \
    }

ARG(argmax, max, f32, float, >)
ARG(argmin, min, f32, float, <)
ARG(argmax, max, i64, int64_t, >)
ARG(argmin, min, i64, int64_t, <)
ARG(argmax, max, u8, uint8_t, >)
ARG(argmin, min, u8, uint8_t, <)

/* ---- drivers --------------------------------------------------------------- */

/* Byte offsets (input, output) of kept element o: decodes the kept odometer. */
static void kept_offsets(const rplan *pl, int ndims, int64_t o, int64_t *idx, int64_t *ioff,
                         int64_t *ooff)
{
    *ioff = *ooff = 0;
    for (int d = ndims - 1; d >= 0; d--) {
        idx[d] = o % pl->kshape[d];
        o /= pl->kshape[d];
        *ioff += idx[d] * pl->kin[d];
        *ooff += idx[d] * pl->kout[d];
    }
}

/* Rows: threads split the output elements; each walks its part in order. */
static void drive_rows(const rplan *pl, row_fn fn, const char *in, char *out, int nthreads)
{
    int nt = loom__ref_team(nthreads, pl->n_out * (pl->n_red > 0 ? pl->n_red : 1), RED_GRAIN);
    if (nt > pl->n_out) nt = (int)pl->n_out;
    (void)nt; /* unused without OpenMP */
    LOOM__OMP_TEAM(nt,
    {
        int64_t begin, end, idx[LOOM_MAX_DIMS], ioff, ooff;
        loom__nditer_part(pl->n_out, loom__omp_thread(), loom__omp_nthreads(), 1, &begin, &end);
        if (begin < end) kept_offsets(pl, pl->nk, begin, idx, &ioff, &ooff);
        for (int64_t o = begin; o < end; o++) {
            fn(pl, in + ioff, out + ooff);
            for (int d = pl->nk - 1; d >= 0; d--) { /* odometer step */
                ioff += pl->kin[d];
                ooff += pl->kout[d];
                if (++idx[d] < pl->kshape[d]) break;
                ioff -= pl->kshape[d] * pl->kin[d];
                ooff -= pl->kshape[d] * pl->kout[d];
                idx[d] = 0;
            }
        }
    });
}

/* Columns: tasks are (outer kept element, block of COLS inner outputs). */
static void drive_cols(const rplan *pl, col_fn fn, const char *in, char *out, int nthreads)
{
    const int64_t inner = pl->kshape[pl->nk - 1];
    const int64_t nblk = (inner + COLS - 1) / COLS, ntask = (pl->n_out / inner) * nblk;
    int nt = loom__ref_team(nthreads, pl->n_out * pl->n_red, RED_GRAIN);
    if (nt > ntask) nt = (int)ntask;
    (void)nt; /* unused without OpenMP */
    LOOM__OMP_TEAM(nt,
    {
        int64_t begin, end, idx[LOOM_MAX_DIMS], ioff, ooff;
        loom__nditer_part(ntask, loom__omp_thread(), loom__omp_nthreads(), 1, &begin, &end);
        for (int64_t t = begin; t < end; t++) {
            const int64_t c0 = (t % nblk) * COLS;
            kept_offsets(pl, pl->nk - 1, t / nblk, idx, &ioff, &ooff);
            const int64_t nc = inner - c0 < COLS ? inner - c0 : COLS;
            fn(pl, in + ioff + c0 * pl->ies, out + ooff + c0 * pl->oes, nc);
        }
    });
}

enum { K_SUM, K_MAX, K_MIN, K_ARGMAX, K_ARGMIN, K_COUNT };

/* Indexed [kind][input dtype: f32, i64, bool]. */
static const row_fn row_fns[K_COUNT][3] = {
    {row_sum_f32, row_sum_i64, row_sum_u8},
    {row_max_f32, row_max_i64, row_max_u8},
    {row_min_f32, row_min_i64, row_min_u8},
    {row_argmax_f32, row_argmax_i64, row_argmax_u8},
    {row_argmin_f32, row_argmin_i64, row_argmin_u8},
};
static const col_fn col_fns[K_COUNT][3] = {
    {col_sum_f32, col_sum_i64, col_sum_u8},
    {col_max_f32, col_max_i64, col_max_u8},
    {col_min_f32, col_min_i64, col_min_u8},
    {col_argmax_f32, col_argmax_i64, col_argmax_u8},
    {col_argmin_f32, col_argmin_i64, col_argmin_u8},
};

/* SUM MEAN MAX MIN ARGMAX ARGMIN; see the header comment for dtypes. */
loom_status loom__ref_reduce(const loom__kcall *call)
{
    const char *name = loom__op_name(call->op);
    if (call->n_in != 1)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: expected 1 input, got %d", name, call->n_in);
    const loom_dtype it = call->in[0].dtype, ot = call->out.dtype;
    const int d = it == LOOM_FLOAT32 ? 0 : it == LOOM_INT64 ? 1 : it == LOOM_BOOL ? 2 : -1;
    int kind;
    loom_dtype want; /* the output dtype this op gives for input dtype it */
    switch (call->op) {
    case LOOM_OP_SUM: kind = K_SUM; want = d == 0 ? LOOM_FLOAT32 : LOOM_INT64; break;
    case LOOM_OP_MEAN: kind = K_SUM; want = LOOM_FLOAT32; break;
    case LOOM_OP_MAX: kind = K_MAX; want = it; break;
    case LOOM_OP_MIN: kind = K_MIN; want = it; break;
    case LOOM_OP_ARGMAX: kind = K_ARGMAX; want = LOOM_INT64; break;
    case LOOM_OP_ARGMIN: kind = K_ARGMIN; want = LOOM_INT64; break;
    default:
        return loom__set_error(LOOM_ERR_INVALID_ARG, "ref reduce: %s is not a reduction", name);
    }
    if (d < 0 || (call->op == LOOM_OP_MEAN && d != 0))
        return loom__set_error(LOOM_ERR_DTYPE, "%s: input dtype %s is not supported by the ref backend",
                               name, loom_dtype_name(it));
    if (ot != want)
        return loom__set_error(LOOM_ERR_DTYPE, "%s: output dtype %s, expected %s for a %s input",
                               name, loom_dtype_name(ot), loom_dtype_name(want), loom_dtype_name(it));
    rplan pl;
    loom_status st = make_plan(call, &pl);
    if (st != LOOM_OK) return st;
    if (pl.n_red == 0 && kind != K_SUM) /* PyTorch: no identity for max/argmax */
        return loom__set_error(LOOM_ERR_SHAPE, "%s: cannot reduce over a dim of size 0", name);

    const char *in = (const char *)call->in[0].data;
    char *out = (char *)call->out.data;
    /* Columns pay when the inner kept dim is dense in input and output and
     * the inner reduced dim is not (else the rows path reads sequentially). */
    const int ik = pl.nk - 1;
    const bool cols = pl.kshape[ik] > 1 && pl.kin[ik] == pl.ies && pl.kout[ik] == pl.oes &&
                      pl.rstride != 1 && pl.n_red > 0;
    if (cols)
        drive_cols(&pl, col_fns[kind][d], in, out, call->nthreads);
    else
        drive_rows(&pl, row_fns[kind][d], in, out, call->nthreads);
    return LOOM_OK;
}

/* ---- the bias gradient on blocked data --------------------------------- */

bool loom__ref_sum_blocked_ok(const loom__kcall *call)
{
    const loom__tview *x = &call->in[0];
    const int l = x->layout;
    return call->op == LOOM_OP_SUM && call->n_in == 1 && (l == LOOM__LAYOUT_NCHW8C || l == LOOM__LAYOUT_NCHW16C) &&
           x->ndim == 4 && x->dtype == LOOM_FLOAT32 && call->out.dtype == LOOM_FLOAT32 &&
           x->shape[1] % loom__layout_block(l) == 0 && call->attrs && call->attrs->reduce.mask == (1u | 4u | 8u) &&
           call->out.ndim == 4;
}

/* SUM of a blocked [N,C,H,W] over N, H, W (a convolution's bias
 * gradient): per channel, in double. A layer has few channel blocks (4 for
 * 64 channels in nChw16c), so the images are cut too, into at most
 * BIAS_CHUNKS fixed chunks chosen from the shapes alone: each task sums
 * (block, chunk) in order, n then pixel, and the chunks' sums are added in
 * chunk order, so the result does not depend on the thread count. */
#define BIAS_TASKS 64
#define BIAS_CHUNKS 16
loom_status loom__ref_sum_blocked(const loom__kcall *call)
{
    const loom__tview *x = &call->in[0];
    const int64_t B = loom__layout_block(x->layout), N = x->shape[0], CB = x->shape[1] / B,
                  S = x->shape[2] * x->shape[3];
    const float *in = x->data;
    float *out = call->out.data;
    const int64_t ostride = call->out.strides[1];
    int64_t nch = CB >= BIAS_TASKS ? 1 : BIAS_TASKS / CB;
    if (nch > BIAS_CHUNKS) nch = BIAS_CHUNKS;
    if (nch > N) nch = N;
    if (nch < 1) nch = 1;
    double part[BIAS_TASKS][16]; /* used when nch > 1: CB * nch <= BIAS_TASKS */
    const int64_t ntasks = CB * nch;
    int nt = loom__ref_team(call->nthreads, N * CB * S * B, 1 << 16);
    if (nt > ntasks) nt = (int)ntasks;
    LOOM__OMP_TEAM(nt,
    {
        int64_t b, e;
        loom__nditer_part(ntasks, loom__omp_thread(), loom__omp_nthreads(), 1, &b, &e);
        for (int64_t t = b; t < e; t++) {
            const int64_t cb = t / nch, ch = t % nch;
            double acc[16] = {0};
            for (int64_t n = ch * N / nch; n < (ch + 1) * N / nch; n++) {
                const float *p = in + (n * CB + cb) * S * B;
                for (int64_t s = 0; s < S; s++)
                    for (int64_t j = 0; j < B; j++) acc[j] += p[s * B + j];
            }
            if (nch == 1)
                for (int64_t j = 0; j < B; j++) out[(cb * B + j) * ostride] = (float)acc[j];
            else
                memcpy(part[t], acc, sizeof acc);
        }
    });
    if (nch > 1)
        for (int64_t cb = 0; cb < CB; cb++)
            for (int64_t j = 0; j < B; j++) {
                double acc = 0;
                for (int64_t ch = 0; ch < nch; ch++) acc += part[cb * nch + ch][j];
                out[(cb * B + j) * ostride] = (float)acc;
            }
    return LOOM_OK;
}

