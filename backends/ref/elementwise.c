/*
 * backends/ref/elementwise.c - the portable C elementwise kernels: copy and
 * cast, binary arithmetic, comparisons, where, and unary math.
 *
 * Every kernel has the same shape: check dtypes, pick a "row function" for
 * the (op, dtype) pair, and let run_rows() walk the operands with the N-d
 * iterator of nditer.h, handing each run of the inner dim to the row
 * function. Row functions have a unit-stride branch (all operands dense) and
 * branches with one stride-0 (broadcast scalar) input, each a plain loop over
 * `restrict` pointers that gcc -O3 vectorises; a generic strided loop handles
 * the rest. The output is freshly allocated and never aliases an input
 * (kernel.h), which is what makes `restrict` valid.
 *
 * Floating-point selects that pick between *computed* values (sigmoid,
 * tanh) go through sel_f32(), a bitwise blend: with the default
 * -ftrapping-math gcc refuses to if-convert `c ? x * y : z`, which would
 * keep the loop scalar.
 *
 * Threads: each thread takes one contiguous part of the flattened output, so
 * every element is computed the same way whatever the thread count. Work
 * smaller than a few tens of thousands of cheap elements stays on one thread
 * (opening an OpenMP team costs a few microseconds).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backends/ref/fastmath.h"
#include "backends/ref/nditer.h"
#include "backends/ref/ref.h"
#include "backends/registry.h"
#include "runtime/error.h"

/* Minimum elements per thread before a second thread pays. */
#define CHEAP_GRAIN 32768 /* add, copy, compare, where: memory bound */
#define MATH_GRAIN 4096   /* exp, tanh, pow, sin: tens of cycles each */

/* A row: n elements; p[k] points at operand k's first element (p[0] is the
 * output), s[k] is its stride in elements; ctx carries op parameters. */
typedef void (*row_fn)(int64_t n, char *const *p, const int64_t *s, const void *ctx);

/* Walks out = in[0..nops-2] and calls fn on each inner run. */
/* Part `part` of `nparts` of the iteration. */
static void rows_part(const loom__nditer *it, const int64_t *s, row_fn fn, const void *ctx, int part, int nparts)
{
    int64_t begin, end, n;
    loom__nditer_pos pos;
    char *p[LOOM__NDITER_MAX_OPS];
    loom__nditer_part(it->numel, part, nparts, 64, &begin, &end);
    loom__nditer_seek(it, begin, end, &pos);
    while ((n = loom__nditer_next(it, &pos, p)) > 0) fn(n, p, s, ctx);
}

static loom_status run_rows(const loom__kcall *call, row_fn fn, const void *ctx, int64_t grain)
{
    const loom__tview *views[LOOM__NDITER_MAX_OPS] = {&call->out};
    const int nops = call->n_in + 1;
    for (int k = 1; k < nops; k++) views[k] = &call->in[k - 1];
    loom__nditer it;
    loom__nditer_init(&it, call->out.ndim, call->out.shape, nops, views);
    int64_t s[LOOM__NDITER_MAX_OPS];
    for (int k = 0; k < nops; k++) s[k] = it.strides[k][it.ndim - 1];
    const int nt = loom__ref_team(call->nthreads, it.numel, grain);
    /* Small work (most nodes of a training step) skips the OpenMP region
     * altogether: even a one-thread region costs a team set-up. */
    if (nt <= 1) {
        rows_part(&it, s, fn, ctx, 0, 1);
        return LOOM_OK;
    }
    LOOM__OMP_TEAM(nt,
    rows_part(&it, s, fn, ctx, loom__omp_thread(), loom__omp_nthreads()););
    return LOOM_OK;
}

/* The elementwise contract (kernel.h): n_in inputs, each of the output's
 * ndim and shape. Checked because a violation would corrupt memory. */
static loom_status check_call(const loom__kcall *call, int n_in)
{
    const char *name = loom__op_name(call->op);
    if (call->n_in != n_in || call->out.ndim < 0 || call->out.ndim > LOOM_MAX_DIMS)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: expected %d inputs, got %d", name, n_in,
                               call->n_in);
    for (int k = 0; k < n_in; k++) {
        const loom__tview *v = &call->in[k];
        bool same = v->ndim == call->out.ndim;
        for (int d = 0; same && d < v->ndim; d++) same = v->shape[d] == call->out.shape[d];
        if (!same) {
            char a[LOOM__SHAPE_STR_MAX], b[LOOM__SHAPE_STR_MAX];
            return loom__set_error(LOOM_ERR_SHAPE,
                                   "%s: input %d has shape %s, expected the output's %s", name, k,
                                   loom__fmt_shape(a, sizeof a, v->ndim, v->shape),
                                   loom__fmt_shape(b, sizeof b, call->out.ndim, call->out.shape));
        }
    }
    return LOOM_OK;
}

static loom_status dtype_error(const loom__kcall *call, loom_dtype dt)
{
    return loom__set_error(LOOM_ERR_DTYPE, "%s: dtype %s is not supported by the ref backend",
                           loom__op_name(call->op), loom_dtype_name(dt));
}

/* ---- row function generators --------------------------------------------- */

/* Binary: o = EXPR(x, y), x and y of type T, o of type TO. */
#define BIN_ROW(NAME, T, TO, EXPR)                                                          \
    static void NAME(int64_t n, char *const *p, const int64_t *s, const void *ctx)          \
    {                                                                                       \
        (void)ctx;                                                                          \
        TO *restrict o = (TO *)p[0];                                                        \
        const T *restrict a = (const T *)p[1];                                              \
        const T *restrict b = (const T *)p[2];                                              \
        const int64_t so = s[0], sa = s[1], sb = s[2];                                      \
        if (so == 1 && sa == 1 && sb == 1) {                                                \
            for (int64_t i = 0; i < n; i++) {                                               \
                const T x = a[i], y = b[i];                                                 \
                o[i] = (EXPR);                                                              \
            }                                                                               \
        } else if (so == 1 && sa == 1 && sb == 0) { /* tensor op scalar, row bias */        \
            const T y = b[0];                                                               \
            for (int64_t i = 0; i < n; i++) {                                               \
                const T x = a[i];                                                           \
                o[i] = (EXPR);                                                              \
            }                                                                               \
        } else if (so == 1 && sa == 0 && sb == 1) {                                         \
            const T x = a[0];                                                               \
            for (int64_t i = 0; i < n; i++) {                                               \
                const T y = b[i];                                                           \
                o[i] = (EXPR);                                                              \
            }                                                                               \
        } else {                                                                            \
            for (int64_t i = 0; i < n; i++) {                                               \
                const T x = a[i * sa], y = b[i * sb];                                       \
                o[i * so] = (EXPR);                                                         \
            }                                                                               \
        }                                                                                   \
    }

/* Unary: o = EXPR(x); CTX_DECL may read parameters from ctx. */
#define UN_ROW(NAME, T, TO, CTX_DECL, EXPR)                                                 \
    static void NAME(int64_t n, char *const *p, const int64_t *s, const void *ctx)          \
    {                                                                                       \
        CTX_DECL;                                                                           \
        (void)ctx;                                                                          \
        TO *restrict o = (TO *)p[0];                                                        \
        const T *restrict a = (const T *)p[1];                                              \
        const int64_t so = s[0], sa = s[1];                                                 \
        if (so == 1 && sa == 1) {                                                           \
            for (int64_t i = 0; i < n; i++) {                                               \
                const T x = a[i];                                                           \
                o[i] = (EXPR);                                                              \
            }                                                                               \
        } else {                                                                            \
            for (int64_t i = 0; i < n; i++) {                                               \
                const T x = a[i * sa];                                                      \
                o[i * so] = (EXPR);                                                         \
            }                                                                               \
        }                                                                                   \
    }

#define NO_CTX ((void)0)

/* ---- copy and cast --------------------------------------------------------- */

static void copy_row_any(int64_t n, char *const *p, const int64_t *s, const void *ctx)
{
    const int es = *(const int *)ctx;
    if (s[0] == 1 && s[1] == 1) {
        memcpy(p[0], p[1], (size_t)(n * es));
        return;
    }
    switch (es) {
    case 1:
        for (int64_t i = 0; i < n; i++) ((uint8_t *)p[0])[i * s[0]] = ((const uint8_t *)p[1])[i * s[1]];
        break;
    case 4:
        for (int64_t i = 0; i < n; i++) ((uint32_t *)p[0])[i * s[0]] = ((const uint32_t *)p[1])[i * s[1]];
        break;
    case 8:
        for (int64_t i = 0; i < n; i++) ((uint64_t *)p[0])[i * s[0]] = ((const uint64_t *)p[1])[i * s[1]];
        break;
    default:
        for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * s[0] * es, p[1] + i * s[1] * es, (size_t)es);
    }
}

/* float -> int64 truncates toward zero. NaN and values outside int64 give
 * INT64_MIN, what x86 (and so PyTorch on x86) produces, instead of C's UB. */
static inline int64_t f32_to_i64(float x)
{
    return (x >= -9223372036854775808.0f && x < 9223372036854775808.0f) ? (int64_t)x : INT64_MIN;
}

UN_ROW(cast_f32_i64, float, int64_t, NO_CTX, f32_to_i64(x))
UN_ROW(cast_f32_bool, float, uint8_t, NO_CTX, (uint8_t)(x != 0.0f)) /* NaN -> 1 */
UN_ROW(cast_i64_f32, int64_t, float, NO_CTX, (float)x)
UN_ROW(cast_i64_bool, int64_t, uint8_t, NO_CTX, (uint8_t)(x != 0))
UN_ROW(cast_bool_f32, uint8_t, float, NO_CTX, x != 0 ? 1.0f : 0.0f)
UN_ROW(cast_bool_i64, uint8_t, int64_t, NO_CTX, (int64_t)(x != 0))

static int dt_index(loom_dtype dt) /* 0 f32, 1 i64, 2 bool, -1 other */
{
    return dt == LOOM_FLOAT32 ? 0 : dt == LOOM_INT64 ? 1 : dt == LOOM_BOOL ? 2 : -1;
}

/* Transposing copy (.contiguous() after a transpose or permute): the output
 * is written along its inner dim q while the input steps a long way there
 * and has unit stride along some outer dim p. Row by row, every input read
 * would touch a new cache line (and often a new page). Instead the (p, q)
 * plane is copied in TILE x TILE tiles whose input and output lines all stay
 * in L1. Shapes: after coalescing, [outer..., P (in stride 1), ..., Q (out
 * stride 1, in stride isq)]; tasks are (outer index, tile row, tile col). */
/* 16 measured best for a 2048 x 2048 transpose: with power-of-two strides a
 * tile's lines share few L1 sets, and bigger tiles evict each other. */
#define TILE 16

#define TILE_COPY(T)                                                              \
    for (int64_t i = p0; i < p1; i++) {                                           \
        T *restrict o = (T *)(od + i * osp * es);                                 \
        const T *restrict x = (const T *)(id + i * es);                           \
        for (int64_t j = q0; j < q1; j++) o[j] = x[j * isq];                      \
    }

static bool copy_tiled(const loom__kcall *call, int es)
{
    const loom__tview *views[2] = {&call->out, &call->in[0]};
    loom__nditer it;
    loom__nditer_init(&it, call->out.ndim, call->out.shape, 2, views);
    const int q = it.ndim - 1;
    if (q < 1 || it.strides[0][q] != 1 || it.strides[1][q] * es < 64 || it.shape[q] < 8 ||
        (es != 1 && es != 4 && es != 8))
        return false;
    int p = -1;
    for (int d = q - 1; d >= 0 && p < 0; d--)
        if (it.strides[1][d] == 1 && it.shape[d] >= 8) p = d;
    if (p < 0) return false;

    const int64_t P = it.shape[p], Q = it.shape[q], osp = it.strides[0][p], isq = it.strides[1][q];
    const int64_t np = (P + TILE - 1) / TILE, nq = (Q + TILE - 1) / TILE;
    const int64_t ntask = it.numel / (P * Q) * np * nq;
    int nt = loom__ref_team(call->nthreads, it.numel, CHEAP_GRAIN);
    if (nt > ntask) nt = (int)ntask;

    (void)nt; /* unused without OpenMP */
    LOOM__OMP_TEAM(nt,
    {
        int64_t begin, end;
        loom__nditer_part(ntask, loom__omp_thread(), loom__omp_nthreads(), 1, &begin, &end);
        for (int64_t t = begin; t < end; t++) {
            const int64_t q0 = t % nq * TILE, p0 = t / nq % np * TILE;
            int64_t outer = t / nq / np, oo = 0, io = 0;
            for (int d = q - 1; d >= 0; d--) { /* decode the dims other than p, q */
                if (d == p) continue;
                const int64_t i = outer % it.shape[d];
                outer /= it.shape[d];
                oo += i * it.bstrides[0][d];
                io += i * it.bstrides[1][d];
            }
            const int64_t p1 = p0 + TILE < P ? p0 + TILE : P, q1 = q0 + TILE < Q ? q0 + TILE : Q;
            char *od = it.data[0] + oo;
            const char *id = it.data[1] + io;
            if (es == 4) TILE_COPY(uint32_t)
            else if (es == 8) TILE_COPY(uint64_t)
            else TILE_COPY(uint8_t)
        }
    });
    return true;
}

/* COPY (same dtype, any element size) and CAST (float32/int64/bool). */
loom_status loom__ref_copy(const loom__kcall *call)
{
    loom_status st = check_call(call, 1);
    if (st != LOOM_OK) return st;
    const loom_dtype from = call->in[0].dtype, to = call->out.dtype;
    if (from == to) {
        const int es = loom_dtype_size(to);
        if (es <= 0) return dtype_error(call, to);
        if (copy_tiled(call, es)) return LOOM_OK;
        return run_rows(call, copy_row_any, &es, CHEAP_GRAIN);
    }
    if (call->op != LOOM_OP_CAST)
        return loom__set_error(LOOM_ERR_DTYPE, "copy: input dtype %s differs from output dtype %s",
                               loom_dtype_name(from), loom_dtype_name(to));
    static const row_fn casts[3][3] = {
        {NULL, cast_f32_i64, cast_f32_bool},
        {cast_i64_f32, NULL, cast_i64_bool},
        {cast_bool_f32, cast_bool_i64, NULL},
    };
    const int f = dt_index(from), t = dt_index(to);
    if (f < 0) return dtype_error(call, from);
    if (t < 0) return dtype_error(call, to);
    return run_rows(call, casts[f][t], NULL, CHEAP_GRAIN);
}

/* ---- binary ---------------------------------------------------------------- */

/* PyTorch's integer pow: exact by repeated squaring, wrapping like int64
 * multiplication; a negative exponent gives 1 for base 1, +-1 for base -1,
 * and 0 otherwise (1/base truncated). */
static inline int64_t pow_i64(int64_t base, int64_t e)
{
    if (e < 0) return base == 1 ? 1 : base == -1 ? ((e & 1) ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)base;
    for (; e > 0; e >>= 1) {
        if (e & 1) r *= b;
        b *= b;
    }
    return (int64_t)r;
}

/* int64 + - * wrap (as in PyTorch) instead of overflowing (UB in C). */
#define WRAP(op) ((int64_t)((uint64_t)x op (uint64_t)y))

BIN_ROW(add_f32, float, float, x + y)
/* relu(x + y), for a residual block's end (loom_add_relu). */
BIN_ROW(add_relu_f32, float, float, loom__ref_relu(x + y))
BIN_ROW(sub_f32, float, float, x - y)
BIN_ROW(mul_f32, float, float, x * y)
BIN_ROW(div_f32, float, float, x / y)
BIN_ROW(pow_f32_any, float, float, powf(x, y))
BIN_ROW(max_f32, float, float, (x > y || x != x) ? x : y) /* NaN wins, either side */
BIN_ROW(min_f32, float, float, (x < y || x != x) ? x : y)
BIN_ROW(add_i64, int64_t, int64_t, WRAP(+))
BIN_ROW(sub_i64, int64_t, int64_t, WRAP(-))
BIN_ROW(mul_i64, int64_t, int64_t, WRAP(*))
BIN_ROW(pow_i64_row, int64_t, int64_t, pow_i64(x, y))
BIN_ROW(max_i64, int64_t, int64_t, x > y ? x : y)
BIN_ROW(min_i64, int64_t, int64_t, x < y ? x : y)
BIN_ROW(max_u8, uint8_t, uint8_t, x > y ? x : y) /* bool: logical or */
BIN_ROW(min_u8, uint8_t, uint8_t, x < y ? x : y) /* bool: logical and */

UN_ROW(square_f32, float, float, NO_CTX, x * x)
UN_ROW(cube_f32, float, float, NO_CTX, x * x * x)
UN_ROW(sqrt_f32, float, float, NO_CTX, sqrtf(x))

/* x ** scalar: PyTorch special-cases small exponents (x*x for 2, sqrt for
 * 0.5, ...); doing the same gives its results and skips powf. */
static void pow_f32(int64_t n, char *const *p, const int64_t *s, const void *ctx)
{
    if (s[2] == 0) {
        const float y = *(const float *)p[2];
        const int64_t s2[2] = {s[0], s[1]};
        const row_fn special = y == 2.0f ? square_f32 : y == 3.0f ? cube_f32
                             : y == 0.5f ? sqrt_f32 : NULL;
        if (special) {
            special(n, p, s2, ctx);
            return;
        }
    }
    pow_f32_any(n, p, s, ctx);
}

/* ADD SUB MUL DIV POW MAXIMUM MINIMUM on float32 and int64 (but int64 DIV);
 * MAXIMUM MINIMUM also on bool. */
loom_status loom__ref_binary(const loom__kcall *call)
{
    loom_status st = check_call(call, 2);
    if (st != LOOM_OK) return st;
    const loom_dtype dt = call->out.dtype;
    if (call->in[0].dtype != dt || call->in[1].dtype != dt)
        return loom__set_error(LOOM_ERR_DTYPE, "%s: input dtypes %s and %s differ from output %s",
                               loom__op_name(call->op), loom_dtype_name(call->in[0].dtype),
                               loom_dtype_name(call->in[1].dtype), loom_dtype_name(dt));
    /* Indexed by op - LOOM_OP_ADD: add sub mul div pow maximum minimum. */
    static const row_fn f32[7] = {add_f32, sub_f32, mul_f32, div_f32, pow_f32, max_f32, min_f32};
    static const row_fn i64[7] = {add_i64, sub_i64, mul_i64, NULL, pow_i64_row, max_i64, min_i64};
    /* bool: only maximum/minimum (torch.maximum keeps bool); ops/ promotes
     * bool arithmetic to int64. */
    static const row_fn u8[7] = {NULL, NULL, NULL, NULL, NULL, max_u8, min_u8};
    if (call->op < LOOM_OP_ADD || call->op > LOOM_OP_MINIMUM)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "ref binary: %s is not a binary op",
                               loom__op_name(call->op));
    const int k = call->op - LOOM_OP_ADD;
    const bool add_relu = call->op == LOOM_OP_ADD && call->attrs && call->attrs->add.relu;
    if (add_relu && dt != LOOM_FLOAT32) return dtype_error(call, dt);
    const row_fn fn = add_relu ? add_relu_f32 : dt == LOOM_FLOAT32 ? f32[k] : dt == LOOM_INT64 ? i64[k]
                      : dt == LOOM_BOOL ? u8[k] : NULL;
    if (!fn) {
        /* ops/ promotes integer division to float, so this is a caller bug. */
        return dtype_error(call, dt);
    }
    const int64_t grain = call->op == LOOM_OP_POW ? MATH_GRAIN : CHEAP_GRAIN;
    return run_rows(call, fn, NULL, grain);
}

/* ---- comparisons ----------------------------------------------------------- */

#define CMP_ROWS(T, SUF)                                                 \
    BIN_ROW(eq_##SUF, T, uint8_t, (uint8_t)(x == y))                     \
    BIN_ROW(ne_##SUF, T, uint8_t, (uint8_t)(x != y))                     \
    BIN_ROW(gt_##SUF, T, uint8_t, (uint8_t)(x > y))                      \
    BIN_ROW(ge_##SUF, T, uint8_t, (uint8_t)(x >= y))                     \
    BIN_ROW(lt_##SUF, T, uint8_t, (uint8_t)(x < y))                      \
    BIN_ROW(le_##SUF, T, uint8_t, (uint8_t)(x <= y))

CMP_ROWS(float, f32) /* NaN: == < > false, != true, as IEEE and PyTorch */
CMP_ROWS(int64_t, i64)
CMP_ROWS(uint8_t, u8)

/* EQ NE GT GE LT LE: inputs of one dtype (float32, int64 or bool), output bool. */
loom_status loom__ref_compare(const loom__kcall *call)
{
    loom_status st = check_call(call, 2);
    if (st != LOOM_OK) return st;
    const loom_dtype dt = call->in[0].dtype;
    if (call->in[1].dtype != dt || call->out.dtype != LOOM_BOOL)
        return loom__set_error(LOOM_ERR_DTYPE, "%s: expected inputs of one dtype and a bool output, "
                               "got %s, %s -> %s", loom__op_name(call->op), loom_dtype_name(dt),
                               loom_dtype_name(call->in[1].dtype), loom_dtype_name(call->out.dtype));
    static const row_fn rows[3][6] = {
        {eq_f32, ne_f32, gt_f32, ge_f32, lt_f32, le_f32},
        {eq_i64, ne_i64, gt_i64, ge_i64, lt_i64, le_i64},
        {eq_u8, ne_u8, gt_u8, ge_u8, lt_u8, le_u8},
    };
    if (call->op < LOOM_OP_EQ || call->op > LOOM_OP_LE)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "ref compare: %s is not a comparison",
                               loom__op_name(call->op));
    const int d = dt_index(dt);
    if (d < 0) return dtype_error(call, dt);
    return run_rows(call, rows[d][call->op - LOOM_OP_EQ], NULL, CHEAP_GRAIN);
}

/* ---- where ----------------------------------------------------------------- */

/* o = c != 0 ? a : b, with the values moved as unsigned bits of their size
 * (exact for any dtype, NaN payloads and -0 included). */
#define WHERE_ROW(NAME, TC, TV)                                                  \
    static void NAME(int64_t n, char *const *p, const int64_t *s, const void *ctx) \
    {                                                                            \
        (void)ctx;                                                               \
        TV *restrict o = (TV *)p[0];                                             \
        const TC *restrict c = (const TC *)p[1];                                 \
        const TV *restrict a = (const TV *)p[2];                                 \
        const TV *restrict b = (const TV *)p[3];                                 \
        if (s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 1) {                  \
            for (int64_t i = 0; i < n; i++) o[i] = c[i] != 0 ? a[i] : b[i];      \
        } else if (s[0] == 1 && s[1] == 1 && s[2] == 1 && s[3] == 0) {           \
            const TV bv = b[0]; /* where(mask, x, 0): ReLU's gradient */         \
            for (int64_t i = 0; i < n; i++) o[i] = c[i] != 0 ? a[i] : bv;        \
        } else if (s[0] == 1 && s[1] == 1 && s[2] == 0 && s[3] == 1) {           \
            const TV av = a[0];                                                  \
            for (int64_t i = 0; i < n; i++) o[i] = c[i] != 0 ? av : b[i];        \
        } else {                                                                 \
            for (int64_t i = 0; i < n; i++)                                      \
                o[i * s[0]] = c[i * s[1]] != 0 ? a[i * s[2]] : b[i * s[3]];      \
        }                                                                        \
    }

#define WHERE_ROWS(TC, SUF)                   \
    WHERE_ROW(where_##SUF##_1, TC, uint8_t)   \
    WHERE_ROW(where_##SUF##_4, TC, uint32_t)  \
    WHERE_ROW(where_##SUF##_8, TC, uint64_t)

WHERE_ROWS(float, f32) /* float cond: -0.0 is false, NaN is true (as bool(x)) */
WHERE_ROWS(int64_t, i64)
WHERE_ROWS(uint8_t, u8)

/* WHERE: in[0] cond (any dtype), in[1] and in[2] of the output's dtype. */
loom_status loom__ref_where(const loom__kcall *call)
{
    loom_status st = check_call(call, 3);
    if (st != LOOM_OK) return st;
    const loom_dtype dt = call->out.dtype;
    if (call->in[1].dtype != dt || call->in[2].dtype != dt)
        return loom__set_error(LOOM_ERR_DTYPE, "where: value dtypes %s and %s differ from output %s",
                               loom_dtype_name(call->in[1].dtype),
                               loom_dtype_name(call->in[2].dtype), loom_dtype_name(dt));
    static const row_fn rows[3][3] = {
        {where_f32_1, where_f32_4, where_f32_8},
        {where_i64_1, where_i64_4, where_i64_8},
        {where_u8_1, where_u8_4, where_u8_8},
    };
    const int c = dt_index(call->in[0].dtype);
    if (c < 0) return dtype_error(call, call->in[0].dtype);
    const int es = loom_dtype_size(dt);
    const int v = es == 1 ? 0 : es == 4 ? 1 : es == 8 ? 2 : -1;
    if (v < 0) return dtype_error(call, dt);
    return run_rows(call, rows[c][v], NULL, CHEAP_GRAIN);
}

/* ---- unary ------------------------------------------------------------------ */

typedef struct clamp_f32_ctx {
    float lo, hi;
} clamp_f32_ctx;

typedef struct clamp_i64_ctx {
    int64_t lo, hi;
} clamp_i64_ctx;

#define CLAMP_F32_CTX const clamp_f32_ctx *c = (const clamp_f32_ctx *)ctx
#define CLAMP_I64_CTX const clamp_i64_ctx *c = (const clamp_i64_ctx *)ctx

/* min(max(x, lo), hi) as PyTorch: NaN stays NaN (both tests are false), and
 * lo > hi gives hi everywhere. */
static inline float clamp_f(float x, float lo, float hi)
{
    const float y = x < lo ? lo : x;
    return y > hi ? hi : y;
}

static inline int64_t clamp_i(int64_t x, int64_t lo, int64_t hi)
{
    const int64_t y = x < lo ? lo : x;
    return y > hi ? hi : y;
}

UN_ROW(neg_f32, float, float, NO_CTX, -x)
UN_ROW(abs_f32, float, float, NO_CTX, fabsf(x))
UN_ROW(exp_f32_row, float, float, NO_CTX, exp_f32(x))
UN_ROW(log_f32, float, float, NO_CTX, logf(x))
UN_ROW(sin_f32, float, float, NO_CTX, sinf(x))
UN_ROW(cos_f32, float, float, NO_CTX, cosf(x))
UN_ROW(tanh_f32_row, float, float, NO_CTX, tanh_f32(x))
UN_ROW(sigmoid_f32_row, float, float, NO_CTX, sigmoid_f32(x))
UN_ROW(relu_f32, float, float, NO_CTX, loom__ref_relu(x))
UN_ROW(clamp_f32, float, float, CLAMP_F32_CTX, clamp_f(x, c->lo, c->hi))
UN_ROW(neg_i64, int64_t, int64_t, NO_CTX, (int64_t)(0u - (uint64_t)x))    /* wraps at INT64_MIN */
UN_ROW(abs_i64, int64_t, int64_t, NO_CTX, x < 0 ? (int64_t)(0u - (uint64_t)x) : x)
UN_ROW(relu_i64, int64_t, int64_t, NO_CTX, x > 0 ? x : 0)
UN_ROW(clamp_i64, int64_t, int64_t, CLAMP_I64_CTX, clamp_i(x, c->lo, c->hi))

/* The tightest int64 bounds equivalent to double bounds lo <= x <= hi:
 * ceil(lo) and floor(hi), saturated; a NaN or infinite bound is no bound. */
static int64_t i64_lower_bound(double lo)
{
    if (lo != lo || lo <= -9223372036854775808.0) return INT64_MIN;
    if (lo >= 9223372036854775808.0) return INT64_MAX;
    return (int64_t)ceil(lo);
}

static int64_t i64_upper_bound(double hi)
{
    if (hi != hi || hi >= 9223372036854775808.0) return INT64_MAX;
    if (hi < -9223372036854775808.0) return INT64_MIN;
    return (int64_t)floor(hi);
}

/* NEG ABS RELU CLAMP on float32 and int64; EXP LOG SQRT SIN COS TANH SIGMOID
 * on float32. */
loom_status loom__ref_unary(const loom__kcall *call)
{
    loom_status st = check_call(call, 1);
    if (st != LOOM_OK) return st;
    const loom_dtype dt = call->out.dtype;
    if (call->in[0].dtype != dt)
        return loom__set_error(LOOM_ERR_DTYPE, "%s: input dtype %s differs from output %s",
                               loom__op_name(call->op), loom_dtype_name(call->in[0].dtype),
                               loom_dtype_name(dt));
    if (call->op < LOOM_OP_NEG || call->op > LOOM_OP_CLAMP)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "ref unary: %s is not a unary op",
                               loom__op_name(call->op));
    /* Indexed by op - LOOM_OP_NEG: neg abs exp log sqrt sin cos tanh sigmoid relu clamp. */
    static const row_fn f32[11] = {neg_f32, abs_f32, exp_f32_row, log_f32, sqrt_f32, sin_f32,
                                   cos_f32, tanh_f32_row, sigmoid_f32_row, relu_f32, clamp_f32};
    static const row_fn i64[11] = {neg_i64, abs_i64, NULL, NULL, NULL, NULL,
                                   NULL, NULL, NULL, relu_i64, clamp_i64};
    const int k = call->op - LOOM_OP_NEG;
    const row_fn fn = dt == LOOM_FLOAT32 ? f32[k] : dt == LOOM_INT64 ? i64[k] : NULL;
    if (!fn) return dtype_error(call, dt);

    clamp_f32_ctx cf = {0.0f, 0.0f};
    clamp_i64_ctx ci = {0, 0};
    const void *ctx = NULL;
    if (call->op == LOOM_OP_CLAMP) {
        if (!call->attrs)
            return loom__set_error(LOOM_ERR_INVALID_ARG, "clamp: missing attributes");
        /* PyTorch casts the bounds to the tensor's dtype; +-inf stay inf. */
        cf.lo = (float)call->attrs->clamp.lo;
        cf.hi = (float)call->attrs->clamp.hi;
        ci.lo = i64_lower_bound(call->attrs->clamp.lo);
        ci.hi = i64_upper_bound(call->attrs->clamp.hi);
        ctx = dt == LOOM_FLOAT32 ? (const void *)&cf : (const void *)&ci;
    }
    const bool cheap = call->op == LOOM_OP_NEG || call->op == LOOM_OP_ABS ||
                       call->op == LOOM_OP_RELU || call->op == LOOM_OP_CLAMP;
    return run_rows(call, fn, ctx, cheap ? CHEAP_GRAIN : MATH_GRAIN);
}
