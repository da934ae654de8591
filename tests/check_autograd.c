/*
 * tests/check_autograd.c - automatic differentiation (loom/autograd.h).
 *
 *   - gradcheck: every differentiable op (and broadcasting, views, joins,
 *     non-contiguous leaves) against central finite differences, with
 *     inputs chosen away from kinks (relu/abs at 0, clamp bounds, ties of
 *     max/min/maximum/minimum): values are distinct multiples of a step
 *     (0.1 by default) offset by half a step, far larger than gradcheck's
 *     eps (1e-2);
 *   - gradients worked out by hand (or with plain C loops in double here);
 *   - semantics: accumulation, zero_grad, freed graphs, backward arguments,
 *     no-grad mode, detach, leaves, in-place assignment, a leak-free
 *     training loop;
 *   - gradients bitwise identical for 1 and 2 threads, and with the
 *     portable C backend forced.
 *
 * Loop tests (_i = 0..NCFG-1) run with one thread, two threads, and two
 * threads with backend "ref".
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check_suites.h"

/* ---- helpers ---------------------------------------------------------- */

/* A leaf requiring grad holding literal values. */
#define LEAF(ctx, shape, ...) leaf(ctx, (const float[]){__VA_ARGS__}, shape)
/* A 0-dim leaf requiring grad. */
static loom_tensor *sleaf(loom_ctx *ctx, float v) { return leaf(ctx, &v, 0, NULL); }

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Distinct values (r + 0.5) * step + off for r = -n/2 .. n/2-1, placed in a
 * seed-dependent permuted order: no two within `step` of each other and,
 * with off == 0, none within step/2 of zero. */
static void fill_distinct(float *v, int64_t n, double step, double off, unsigned seed)
{
    static const int64_t mults[] = {7, 11, 13, 17, 19, 23, 29, 31};
    int64_t m = 1;
    for (size_t k = 0; k < sizeof mults / sizeof mults[0]; k++)
        if (gcd64(mults[k], n) == 1) {
            m = mults[k];
            break;
        }
    for (int64_t i = 0; i < n; i++) {
        int64_t rank = (i * m + seed) % n;
        v[i] = (float)(((double)(rank - n / 2) + 0.5) * step + off);
    }
}

/* A leaf (requiring grad) of distinct values, see fill_distinct. */
static loom_tensor *dleaf(loom_ctx *ctx, int ndim, const int64_t *shape, double step, double off, unsigned seed)
{
    int64_t n = numel_of(ndim, shape);
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ck_assert(v);
    fill_distinct(v, n, step, off, seed);
    loom_tensor *t = leaf(ctx, v, ndim, shape);
    free(v);
    return t;
}
#define DLEAF(ctx, seed, ...) dleaf(ctx, LOOM_SHAPE(__VA_ARGS__), 0.1, 0.0, seed)

/* Pseudo-random value in [lo, hi) from (seed, i). */
static double hval(unsigned seed, int64_t i, double lo, double hi)
{
    uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull + (uint64_t)seed * 0xD1B54A32D192ED03ull + 1;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return lo + (hi - lo) * (double)(x >> 11) / 9007199254740992.0;
}

/* A tensor (requiring grad if `grad`) of values in [lo, hi). */
static loom_tensor *rtensor(loom_ctx *ctx, int ndim, const int64_t *shape, double lo, double hi, unsigned seed,
                            bool grad)
{
    int64_t n = numel_of(ndim, shape);
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ck_assert(v);
    for (int64_t i = 0; i < n; i++) v[i] = (float)hval(seed, i, lo, hi);
    loom_tensor *t = loom_tensor_from_array(ctx, LOOM_FLOAT32, v, ndim, shape);
    free(v);
    ck_assert_msg(t != NULL, "%s", loom_last_error());
    return grad ? need_grad(t) : t;
}
/* Leaf in [lo, hi). */
#define RLEAF(ctx, lo, hi, seed, ...) rtensor(ctx, LOOM_SHAPE(__VA_ARGS__), lo, hi, seed, true)
/* Constant (no grad) in [lo, hi). */
#define RCONST(ctx, lo, hi, seed, ...) rtensor(ctx, LOOM_SHAPE(__VA_ARGS__), lo, hi, seed, false)

/* Asserts t's accumulated gradient equals want[0..n-1] within tol. */
static void expect_grad(loom_tensor *t, const float *want, int64_t n, double tol, int line)
{
    ck_assert_msg(loom_tensor_has_grad(t), "line %d: the tensor has no grad", line);
    loom_tensor *g = loom_tensor_grad(t);
    ck_assert_msg(g != NULL, "line %d: grad: %s", line, loom_last_error());
    ck_assert_msg(loom_tensor_ndim(g) == loom_tensor_ndim(t), "line %d: grad has %d dims, tensor %d", line,
                  loom_tensor_ndim(g), loom_tensor_ndim(t));
    for (int d = 0; d < loom_tensor_ndim(t); d++)
        ck_assert_msg(loom_tensor_size(g, d) == loom_tensor_size(t, d), "line %d: grad size %lld at dim %d, tensor %lld",
                      line, (long long)loom_tensor_size(g, d), d, (long long)loom_tensor_size(t, d));
    test_assert_f32(g, want, n, tol, __FILE__, line);
    loom_tensor_free(g);
}
#define EXPECT_GRAD(t, tol, ...) expect_grad((t), ((const float[]){__VA_ARGS__}), NF(__VA_ARGS__), (tol), __LINE__)

static void expect_grad_doubles(loom_tensor *t, const double *want, int64_t n, double tol, int line)
{
    float *w = floats_from_doubles(want, n);
    expect_grad(t, w, n, tol, line);
    free(w);
}

static loom_status backward1(loom_tensor *root) { return loom_backward(root, NULL, NULL); }
#define BACKWARD_OK(root)                                                                                            \
    do {                                                                                                             \
        loom_status st_ = backward1(root);                                                                           \
        ck_assert_msg(st_ == LOOM_OK, "backward: %s (%s)", loom_status_str(st_), loom_last_error());                 \
    } while (0)

/* Asserts a status and that the message contains substr. */
static void expect_status(loom_status got, loom_status want, const char *substr, int line)
{
    ck_assert_msg(got == want, "line %d: status %s, expected %s (message: %s)", line, loom_status_str(got),
                  loom_status_str(want), loom_last_error());
    ck_assert_msg(loom_last_status() == want, "line %d: last status %s, expected %s", line,
                  loom_status_str(loom_last_status()), loom_status_str(want));
    if (substr)
        ck_assert_msg(strstr(loom_last_error(), substr) != NULL, "line %d: message \"%s\" lacks \"%s\"", line,
                      loom_last_error(), substr);
}
#define EXPECT_STATUS(expr, want, substr) expect_status((expr), (want), (substr), __LINE__)

/* ---- gradcheck functions ------------------------------------------------ */

enum {
    /* binary */
    G_ADD, G_SUB, G_MUL, G_DIV, G_POW, G_MAXIMUM, G_MINIMUM, G_WHERE, G_ADD_SCALAR, G_MUL_SCALAR, G_SUB_SCALAR,
    G_DIV_SCALAR, G_POW_SCALAR, G_RSUB_SCALARTENSOR,
    /* unary */
    G_NEG, G_ABS, G_EXP, G_LOG, G_SQRT, G_SIN, G_COS, G_TANH, G_SIGMOID, G_RELU, G_CLAMP, G_TO_F32, G_CONTIG_T,
    /* matmul */
    G_MATMUL, G_MATMUL_TA,
    /* reductions */
    G_SUM, G_MEAN, G_MAX, G_MIN,
    /* views */
    G_RESHAPE, G_VIEW, G_RESHAPE_T, G_PERMUTE, G_TRANSPOSE, G_SLICE, G_SELECT, G_SQUEEZE, G_SQUEEZE_ALL,
    G_UNSQUEEZE, G_EXPAND, G_FLATTEN, G_FLATTEN_T, G_ALIAS, G_VIEW_CHAIN, G_SQUARE_T,
    /* joins and indexing */
    G_CAT, G_CAT_CONST, G_STACK, G_INDEX_SELECT, G_GATHER, G_INDEX_ADD, G_SCATTER_ADD,
    /* composites */
    G_COMPOSITE, G_MLP, G_DETACHED,
};

typedef struct gspec {
    int op;
    int d0, d1;            /* dims (and a 0/1 flag for keepdim in k) */
    int64_t i0, i1, i2;    /* slice start/end/step, select index, ... */
    bool k;                /* keepdim */
    double s0, s1;         /* scalars, clamp bounds */
    int nd;                /* dims list / shape for reshape-like ops */
    int64_t sh[LOOM_MAX_DIMS];
    int dl[LOOM_MAX_DIMS];
    loom_tensor *aux;      /* a non-differentiable operand (index, condition, constant) */
} gspec;

static loom_tensor *gfn(loom_tensor *const *x, int n, void *user)
{
    const gspec *s = user;
    (void)n;
    switch (s->op) {
    case G_ADD: return loom_add(x[0], x[1]);
    case G_SUB: return loom_sub(x[0], x[1]);
    case G_MUL: return loom_mul(x[0], x[1]);
    case G_DIV: return loom_div(x[0], x[1]);
    case G_POW: return loom_pow(x[0], x[1]);
    case G_MAXIMUM: return loom_maximum(x[0], x[1]);
    case G_MINIMUM: return loom_minimum(x[0], x[1]);
    case G_WHERE: return loom_where(s->aux, x[0], x[1]);
    case G_ADD_SCALAR: return loom_add_scalar(x[0], s->s0);
    case G_MUL_SCALAR: return loom_mul_scalar(x[0], s->s0);
    case G_SUB_SCALAR: return loom_sub_scalar(x[0], s->s0);
    case G_DIV_SCALAR: return loom_div_scalar(x[0], s->s0);
    case G_POW_SCALAR: return loom_pow_scalar(x[0], s->s0);
    case G_RSUB_SCALARTENSOR: return loom_sub(x[0], loom_mul(x[1], x[0])); /* a - b*a, b 0-dim */
    case G_NEG: return loom_neg(x[0]);
    case G_ABS: return loom_abs(x[0]);
    case G_EXP: return loom_exp(x[0]);
    case G_LOG: return loom_log(x[0]);
    case G_SQRT: return loom_sqrt(x[0]);
    case G_SIN: return loom_sin(x[0]);
    case G_COS: return loom_cos(x[0]);
    case G_TANH: return loom_tanh(x[0]);
    case G_SIGMOID: return loom_sigmoid(x[0]);
    case G_RELU: return loom_relu(x[0]);
    case G_CLAMP: return loom_clamp(x[0], s->s0, s->s1);
    case G_TO_F32: return loom_mul(loom_to_dtype(x[0], LOOM_FLOAT32), x[0]);
    case G_CONTIG_T: return loom_contiguous(loom_transpose(x[0], s->d0, s->d1));
    case G_MATMUL: return loom_matmul(x[0], x[1]);
    case G_MATMUL_TA: return loom_matmul(loom_transpose(x[0], 0, 1), x[1]);
    case G_SUM: return loom_sum(x[0], s->nd, s->nd ? s->dl : NULL, s->k);
    case G_MEAN: return loom_mean(x[0], s->nd, s->nd ? s->dl : NULL, s->k);
    case G_MAX: return loom_max(x[0], s->d0, s->k);
    case G_MIN: return loom_min(x[0], s->d0, s->k);
    case G_RESHAPE: return loom_reshape(x[0], s->nd, s->sh);
    case G_VIEW: return loom_view(x[0], s->nd, s->sh);
    case G_RESHAPE_T: return loom_reshape(loom_transpose(x[0], 0, 1), s->nd, s->sh); /* copies */
    case G_PERMUTE: return loom_permute(x[0], s->nd, s->dl);
    case G_TRANSPOSE: return loom_transpose(x[0], s->d0, s->d1);
    case G_SLICE: return loom_slice(x[0], s->d0, s->i0, s->i1, s->i2);
    case G_SELECT: return loom_select(x[0], s->d0, s->i0);
    case G_SQUEEZE: return loom_squeeze(x[0], s->d0);
    case G_SQUEEZE_ALL: return loom_squeeze_all(x[0]);
    case G_UNSQUEEZE: return loom_unsqueeze(x[0], s->d0);
    case G_EXPAND: return loom_expand(x[0], s->nd, s->sh);
    case G_FLATTEN: return loom_flatten(x[0], s->d0, s->d1);
    case G_FLATTEN_T: return loom_flatten(loom_transpose(x[0], 0, 1), s->d0, s->d1); /* copies */
    case G_ALIAS: return loom_alias(x[0]);
    case G_VIEW_CHAIN: {
        /* A slice of a transpose, squared through another view of x. */
        loom_tensor *a = loom_slice(loom_transpose(x[0], 0, 1), 0, 1, 4, 2); /* [2, R] */
        loom_tensor *b = loom_select(loom_unsqueeze(loom_slice(x[0], 1, 0, 2, 1), 0), 0, 0); /* [R, 2] */
        return loom_mul(a, loom_transpose(b, 0, 1));
    }
    case G_SQUARE_T: return loom_add(loom_mul(x[0], loom_transpose(x[0], 0, 1)), x[0]); /* x .* x^T + x */
    case G_CAT: return loom_cat(x, n, s->d0);
    case G_CAT_CONST: return loom_cat((loom_tensor *const[]){x[0], s->aux, x[1]}, 3, s->d0);
    case G_STACK: return loom_stack(x, n, s->d0);
    case G_INDEX_SELECT: return loom_index_select(x[0], s->d0, s->aux);
    case G_GATHER: return loom_gather(x[0], s->d0, s->aux);
    case G_INDEX_ADD: return loom_index_add(x[0], s->d0, s->aux, x[1]);
    case G_SCATTER_ADD: return loom_scatter_add(x[0], s->d0, s->aux, x[1]);
    case G_COMPOSITE: {
        /* sigmoid(x) * log(y) + exp(-x^2) / y, with x [2,3] and y [3] */
        loom_tensor *a = loom_mul(loom_sigmoid(x[0]), loom_log(x[1]));
        return loom_add(a, loom_div(loom_exp(loom_neg(loom_mul(x[0], x[0]))), x[1]));
    }
    case G_MLP: {
        /* mean over rows of tanh(x @ w1 + b1) @ w2 */
        loom_tensor *h = loom_tanh(loom_add(loom_matmul(s->aux, x[0]), x[1]));
        return loom_mean(loom_matmul(h, x[2]), 1, (const int[]){0}, false);
    }
    case G_DETACHED: return loom_mul(x[0], loom_detach(x[0])); /* analytic x, true derivative 2x */
    default: return NULL;
    }
}

static void gc_run(const char *what, gspec *s, int n, loom_tensor **in, int line)
{
    for (int i = 0; i < n; i++) ck_assert_msg(in[i] != NULL, "line %d: %s: input %d is NULL", line, what, i);
    loom_clear_error();
    loom_status st = loom_gradcheck(gfn, n, in, s, NULL);
    ck_assert_msg(st == LOOM_OK, "line %d: gradcheck %s: %s (%s)", line, what, loom_status_str(st),
                  loom_last_error());
    for (int i = 0; i < n; i++)
        ck_assert_msg(!loom_tensor_has_grad(in[i]), "line %d: %s: gradcheck left a grad on input %d", line, what, i);
}
/* GC(name, (gspec){...}, inputs...) */
#define GC(what, spec, ...)                                                                                          \
    do {                                                                                                             \
        loom_tensor *in_[] = {__VA_ARGS__};                                                                          \
        gspec s_ = spec;                                                                                             \
        gc_run(what, &s_, (int)(sizeof in_ / sizeof in_[0]), in_, __LINE__);                                         \
    } while (0)
#define SPEC(...) ((gspec){__VA_ARGS__})

/* ---- gradcheck: elementwise ------------------------------------------- */

START_TEST(test_gc_binary)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *a = DLEAF(ctx, 1, 2, 3), *b = DLEAF(ctx, 2, 2, 3);
    GC("add", SPEC(.op = G_ADD), a, b);
    GC("sub", SPEC(.op = G_SUB), a, b);
    GC("mul", SPEC(.op = G_MUL), a, b);
    GC("mul self", SPEC(.op = G_MUL), a, a);
    /* div: denominators in [0.6, 1.4] */
    loom_tensor *den = RLEAF(ctx, 0.6, 1.4, 3, 2, 3);
    GC("div", SPEC(.op = G_DIV), a, den);
    /* pow: base in [0.5, 1.5], exponent in [-1.5, 2] */
    loom_tensor *base = RLEAF(ctx, 0.5, 1.5, 4, 2, 3), *ex = RLEAF(ctx, -1.5, 2.0, 5, 2, 3);
    GC("pow", SPEC(.op = G_POW), base, ex);
    /* maximum/minimum: b = a +- 0.25 (+ small jitter): never within 0.2 */
    float av[6], bv[6];
    fill_distinct(av, 6, 0.1, 0, 7);
    for (int i = 0; i < 6; i++) bv[i] = av[i] + (i % 2 ? 0.25f : -0.25f) + 0.01f * (float)i;
    loom_tensor *ma = leaf(ctx, av, LOOM_SHAPE(2, 3)), *mb = leaf(ctx, bv, LOOM_SHAPE(2, 3));
    GC("maximum", SPEC(.op = G_MAXIMUM), ma, mb);
    GC("minimum", SPEC(.op = G_MINIMUM), ma, mb);
    /* where (values; the condition is a constant) */
    loom_tensor *cond = B8(ctx, LOOM_SHAPE(2, 3), 1, 0, 0, 1, 1, 0);
    GC("where", SPEC(.op = G_WHERE, .aux = cond), a, b);
    /* scalar forms */
    GC("add_scalar", SPEC(.op = G_ADD_SCALAR, .s0 = 0.5), a);
    GC("sub_scalar", SPEC(.op = G_SUB_SCALAR, .s0 = -1.25), a);
    GC("mul_scalar", SPEC(.op = G_MUL_SCALAR, .s0 = -3.0), a);
    GC("div_scalar", SPEC(.op = G_DIV_SCALAR, .s0 = 0.75), a);
    GC("pow_scalar 3", SPEC(.op = G_POW_SCALAR, .s0 = 3.0), a);
    GC("pow_scalar -0.5", SPEC(.op = G_POW_SCALAR, .s0 = -0.5), base);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_gc_broadcast)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* [3,1] with [1,4] */
    loom_tensor *c = DLEAF(ctx, 1, 3, 1), *r = DLEAF(ctx, 2, 1, 4);
    GC("add [3,1] [1,4]", SPEC(.op = G_ADD), c, r);
    GC("sub [3,1] [1,4]", SPEC(.op = G_SUB), c, r);
    GC("mul [3,1] [1,4]", SPEC(.op = G_MUL), c, r);
    loom_tensor *cpos = RLEAF(ctx, 0.6, 1.4, 3, 3, 1);
    GC("div [3,1] [1,4]", SPEC(.op = G_DIV), r, cpos);
    GC("pow [3,1] [1,4]", SPEC(.op = G_POW), cpos, r);
    /* maximum with broadcasting, no ties: c in +-[0.05, 0.15], r far away */
    loom_tensor *rm = LEAF(ctx, LOOM_SHAPE(1, 4), 0.5f, -0.6f, 0.73f, -0.42f);
    GC("maximum [3,1] [1,4]", SPEC(.op = G_MAXIMUM), c, rm);
    GC("minimum [1,4] [3,1]", SPEC(.op = G_MINIMUM), rm, c);

    /* a 0-dim scalar with a matrix (both orders) */
    loom_tensor *s = sleaf(ctx, 0.7f);
    loom_tensor *m = DLEAF(ctx, 3, 2, 3);
    GC("mul scalar*[2,3]", SPEC(.op = G_MUL), s, m);
    GC("sub [2,3]-scalar", SPEC(.op = G_SUB), m, s);
    GC("div scalar/[2,3]", SPEC(.op = G_DIV), s, RLEAF(ctx, 0.6, 1.4, 5, 2, 3));
    GC("div [2,3]/scalar", SPEC(.op = G_DIV), m, s);
    GC("pow [2,3]^scalar", SPEC(.op = G_POW), RLEAF(ctx, 0.5, 1.5, 6, 2, 3), s);
    GC("a - b*a, b 0-dim", SPEC(.op = G_RSUB_SCALARTENSOR), m, s);

    /* [4] with [2,3,4] */
    loom_tensor *v = DLEAF(ctx, 4, 4), *t3 = DLEAF(ctx, 5, 2, 3, 4);
    GC("add [4]+[2,3,4]", SPEC(.op = G_ADD), v, t3);
    GC("mul [2,3,4]*[4]", SPEC(.op = G_MUL), t3, v);
    GC("div [2,3,4]/[4]", SPEC(.op = G_DIV), t3, RLEAF(ctx, 0.6, 1.4, 7, 4));
    GC("sub [4]-[2,3,4]", SPEC(.op = G_SUB), v, t3);

    /* where broadcasting the condition [3,1], a [1,4], b 0-dim */
    loom_tensor *cond = B8(ctx, LOOM_SHAPE(3, 1), 1, 0, 1);
    GC("where [3,1] [1,4] []", SPEC(.op = G_WHERE, .aux = cond), r, s);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_gc_unary)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = DLEAF(ctx, 1, 2, 3);           /* +-0.05 .. +-0.25: away from 0 */
    loom_tensor *w = dleaf(ctx, LOOM_SHAPE(3, 4), 0.25, 0.0, 2); /* +-0.125 .. +-1.375 */
    loom_tensor *p = RLEAF(ctx, 0.5, 2.0, 3, 2, 3);  /* positive */
    GC("neg", SPEC(.op = G_NEG), x);
    GC("abs", SPEC(.op = G_ABS), x);
    GC("abs wide", SPEC(.op = G_ABS), w);
    GC("exp", SPEC(.op = G_EXP), w);
    GC("log", SPEC(.op = G_LOG), p);
    GC("sqrt", SPEC(.op = G_SQRT), p);
    GC("sin", SPEC(.op = G_SIN), w);
    GC("cos", SPEC(.op = G_COS), w);
    GC("tanh", SPEC(.op = G_TANH), w);
    GC("sigmoid", SPEC(.op = G_SIGMOID), w);
    GC("relu", SPEC(.op = G_RELU), x);
    GC("relu wide", SPEC(.op = G_RELU), w);
    /* clamp bounds at +-0.5 and 0.8; w's values are 0.125 + 0.25k: >= 0.125 away */
    GC("clamp", SPEC(.op = G_CLAMP, .s0 = -0.5, .s1 = 0.5), w);
    GC("clamp min only", SPEC(.op = G_CLAMP, .s0 = -0.5, .s1 = INFINITY), w);
    GC("clamp max only", SPEC(.op = G_CLAMP, .s0 = -INFINITY, .s1 = 0.8), w);
    GC("to_dtype f32", SPEC(.op = G_TO_F32), x);
    GC("contiguous(transpose)", SPEC(.op = G_CONTIG_T, .d0 = 0, .d1 = 1), w);
    GC("composite", SPEC(.op = G_COMPOSITE), x, RLEAF(ctx, 0.5, 2.0, 4, 3));
    loom_ctx_free(ctx);
}
END_TEST

/* ---- gradcheck: matmul ------------------------------------------------ */

START_TEST(test_gc_matmul)
{
    loom_ctx *ctx = cfg_ctx(_i);
    GC("matmul [2,3]x[3,4]", SPEC(.op = G_MATMUL), RLEAF(ctx, -1, 1, 1, 2, 3), RLEAF(ctx, -1, 1, 2, 3, 4));
    GC("matmul [2,2,3]x[2,3,4]", SPEC(.op = G_MATMUL), RLEAF(ctx, -1, 1, 3, 2, 2, 3), RLEAF(ctx, -1, 1, 4, 2, 3, 4));
    /* broadcast batch dims: [2,1,2,3] x [3,3,2] -> [2,3,2,2] */
    GC("matmul [2,1,2,3]x[3,3,2]", SPEC(.op = G_MATMUL), RLEAF(ctx, -1, 1, 5, 2, 1, 2, 3),
       RLEAF(ctx, -1, 1, 6, 3, 3, 2));
    GC("matmul [2,3]x[2,3,4]", SPEC(.op = G_MATMUL), RLEAF(ctx, -1, 1, 7, 2, 3), RLEAF(ctx, -1, 1, 8, 2, 3, 4));
    GC("matmul [2,2,3]x[3,4]", SPEC(.op = G_MATMUL), RLEAF(ctx, -1, 1, 9, 2, 2, 3), RLEAF(ctx, -1, 1, 10, 3, 4));
    /* 1-D operands */
    GC("matmul [3]x[3,4]", SPEC(.op = G_MATMUL), RLEAF(ctx, -1, 1, 11, 3), RLEAF(ctx, -1, 1, 12, 3, 4));
    GC("matmul [2,3]x[3]", SPEC(.op = G_MATMUL), RLEAF(ctx, -1, 1, 13, 2, 3), RLEAF(ctx, -1, 1, 14, 3));
    GC("matmul [3]x[3]", SPEC(.op = G_MATMUL), RLEAF(ctx, -1, 1, 15, 3), RLEAF(ctx, -1, 1, 16, 3));
    GC("matmul [3]x[2,3,4]", SPEC(.op = G_MATMUL), RLEAF(ctx, -1, 1, 17, 3), RLEAF(ctx, -1, 1, 18, 2, 3, 4));
    GC("matmul [2,2,3]x[3]", SPEC(.op = G_MATMUL), RLEAF(ctx, -1, 1, 19, 2, 2, 3), RLEAF(ctx, -1, 1, 20, 3));
    /* a transposed operand inside the function */
    GC("matmul x^T w", SPEC(.op = G_MATMUL_TA), RLEAF(ctx, -1, 1, 21, 3, 2), RLEAF(ctx, -1, 1, 22, 3, 4));
    /* a small MLP: three parameters, x constant */
    gspec mlp = {.op = G_MLP, .aux = RCONST(ctx, -1, 1, 23, 4, 3)};
    GC("mlp", mlp, RLEAF(ctx, -1, 1, 24, 3, 5), RLEAF(ctx, -0.5, 0.5, 25, 5), RLEAF(ctx, -1, 1, 26, 5, 2));
    loom_ctx_free(ctx);
}
END_TEST

/* ---- gradcheck: reductions -------------------------------------------- */

START_TEST(test_gc_reduce)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = DLEAF(ctx, 1, 2, 3), *y = DLEAF(ctx, 2, 2, 3, 4);
    static const int red[][4] = {{0}, {1, 1}, {1, -1}, {2, 0, 2}, {2, -1, 0}, {3, 0, 1, 2}};
    for (int op = 0; op < 2; op++) {
        const char *nm = op ? "mean" : "sum";
        int g = op ? G_MEAN : G_SUM;
        for (int keep = 0; keep < 2; keep++) {
            gspec s = {.op = g, .k = keep, .nd = 0};
            GC(nm, s, x);
            GC(nm, s, y);
            for (size_t k = 1; k < sizeof red / sizeof red[0]; k++) {
                s.nd = red[k][0];
                for (int j = 0; j < s.nd; j++) s.dl[j] = red[k][j + 1];
                GC(nm, s, y);
                if (s.nd == 1) GC(nm, s, x);
            }
        }
    }
    /* max/min over a dim and over everything (distinct values: no ties) */
    for (int keep = 0; keep < 2; keep++) {
        GC("max dim 1", SPEC(.op = G_MAX, .d0 = 1, .k = keep), x);
        GC("max dim 0", SPEC(.op = G_MAX, .d0 = 0, .k = keep), y);
        GC("max dim -1", SPEC(.op = G_MAX, .d0 = -1, .k = keep), y);
        GC("max all", SPEC(.op = G_MAX, .d0 = LOOM_DIM_ALL, .k = keep), x);
        GC("max all 3d", SPEC(.op = G_MAX, .d0 = LOOM_DIM_ALL, .k = keep), y);
        GC("min dim 0", SPEC(.op = G_MIN, .d0 = 0, .k = keep), x);
        GC("min dim 1", SPEC(.op = G_MIN, .d0 = 1, .k = keep), y);
        GC("min all", SPEC(.op = G_MIN, .d0 = LOOM_DIM_ALL, .k = keep), y);
    }
    loom_ctx_free(ctx);
}
END_TEST

/* ---- gradcheck: views ----------------------------------------------- */

START_TEST(test_gc_views)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = DLEAF(ctx, 1, 2, 3, 4);
    loom_tensor *m = DLEAF(ctx, 2, 5, 3);
    GC("reshape", SPEC(.op = G_RESHAPE, .nd = 2, .sh = {4, 6}), x);
    GC("reshape -1", SPEC(.op = G_RESHAPE, .nd = 3, .sh = {3, -1, 2}), x);
    GC("reshape 1-D", SPEC(.op = G_RESHAPE, .nd = 1, .sh = {24}), x);
    GC("view", SPEC(.op = G_VIEW, .nd = 2, .sh = {6, 4}), x);
    GC("reshape of a transpose (copy)", SPEC(.op = G_RESHAPE_T, .nd = 1, .sh = {15}), m);
    GC("permute", SPEC(.op = G_PERMUTE, .nd = 3, .dl = {2, 0, 1}), x);
    GC("permute neg", SPEC(.op = G_PERMUTE, .nd = 3, .dl = {1, -1, 0}), x);
    GC("transpose", SPEC(.op = G_TRANSPOSE, .d0 = 0, .d1 = 2), x);
    GC("transpose 2-D", SPEC(.op = G_TRANSPOSE, .d0 = 1, .d1 = 0), m);
    GC("slice step 2", SPEC(.op = G_SLICE, .d0 = 0, .i0 = 0, .i1 = 5, .i2 = 2), m);
    GC("slice step 2 from 1", SPEC(.op = G_SLICE, .d0 = 0, .i0 = 1, .i1 = 5, .i2 = 2), m);
    GC("slice step 3", SPEC(.op = G_SLICE, .d0 = -1, .i0 = 0, .i1 = 4, .i2 = 3), x);
    GC("slice negative start", SPEC(.op = G_SLICE, .d0 = 1, .i0 = -2, .i1 = 100, .i2 = 1), m);
    GC("slice middle dim", SPEC(.op = G_SLICE, .d0 = 1, .i0 = 1, .i1 = 3, .i2 = 1), x);
    GC("select", SPEC(.op = G_SELECT, .d0 = 1, .i0 = 2), x);
    GC("select neg", SPEC(.op = G_SELECT, .d0 = 0, .i0 = -1), m);
    GC("select last dim", SPEC(.op = G_SELECT, .d0 = -1, .i0 = 1), x);
    loom_tensor *s1 = DLEAF(ctx, 3, 2, 1, 3);
    GC("squeeze", SPEC(.op = G_SQUEEZE, .d0 = 1), s1);
    GC("squeeze non-1 dim (alias)", SPEC(.op = G_SQUEEZE, .d0 = 0), s1);
    GC("squeeze_all", SPEC(.op = G_SQUEEZE_ALL), DLEAF(ctx, 4, 1, 3, 1, 2));
    GC("unsqueeze 0", SPEC(.op = G_UNSQUEEZE, .d0 = 0), m);
    GC("unsqueeze -1", SPEC(.op = G_UNSQUEEZE, .d0 = -1), m);
    GC("expand [3,1]->[2,3,4]", SPEC(.op = G_EXPAND, .nd = 3, .sh = {2, 3, 4}), DLEAF(ctx, 5, 3, 1));
    GC("expand [3]->[2,3]", SPEC(.op = G_EXPAND, .nd = 2, .sh = {2, 3}), DLEAF(ctx, 6, 3));
    GC("expand [1,3]->[4,-1]", SPEC(.op = G_EXPAND, .nd = 2, .sh = {4, -1}), DLEAF(ctx, 7, 1, 3));
    GC("expand 0-dim->[2,2]", SPEC(.op = G_EXPAND, .nd = 2, .sh = {2, 2}), sleaf(ctx, 0.3f));
    GC("flatten 0..1", SPEC(.op = G_FLATTEN, .d0 = 0, .d1 = 1), x);
    GC("flatten 1..-1", SPEC(.op = G_FLATTEN, .d0 = 1, .d1 = -1), x);
    GC("flatten of a transpose (copy)", SPEC(.op = G_FLATTEN_T, .d0 = 0, .d1 = 1), m);
    GC("alias", SPEC(.op = G_ALIAS), x);
    GC("view chain", SPEC(.op = G_VIEW_CHAIN), DLEAF(ctx, 8, 3, 4));
    GC("x .* x^T + x", SPEC(.op = G_SQUARE_T), DLEAF(ctx, 9, 3, 3));
    loom_ctx_free(ctx);
}
END_TEST

/* ---- gradcheck: joins and indexing -------------------------------------- */

START_TEST(test_gc_join_index)
{
    loom_ctx *ctx = cfg_ctx(_i);
    GC("cat dim 1", SPEC(.op = G_CAT, .d0 = 1), DLEAF(ctx, 1, 2, 1), DLEAF(ctx, 2, 2, 3), DLEAF(ctx, 3, 2, 2));
    GC("cat dim 0", SPEC(.op = G_CAT, .d0 = 0), DLEAF(ctx, 4, 1, 3), DLEAF(ctx, 5, 2, 3), DLEAF(ctx, 6, 3, 3));
    GC("cat dim -1 3-D", SPEC(.op = G_CAT, .d0 = -1), DLEAF(ctx, 7, 2, 2, 1), DLEAF(ctx, 8, 2, 2, 2),
       DLEAF(ctx, 9, 2, 2, 3));
    GC("cat with a constant", SPEC(.op = G_CAT_CONST, .d0 = 0, .aux = RCONST(ctx, -1, 1, 10, 2, 3)),
       DLEAF(ctx, 11, 1, 3), DLEAF(ctx, 12, 2, 3));
    loom_tensor *a = DLEAF(ctx, 13, 2, 3), *b = DLEAF(ctx, 14, 2, 3), *c = DLEAF(ctx, 15, 2, 3);
    GC("stack dim 0", SPEC(.op = G_STACK, .d0 = 0), a, b, c);
    GC("stack dim 1", SPEC(.op = G_STACK, .d0 = 1), a, b, c);
    GC("stack dim -1", SPEC(.op = G_STACK, .d0 = -1), a, b, c);
    GC("stack same tensor", SPEC(.op = G_STACK, .d0 = 0), a, b, a);

    loom_tensor *x = DLEAF(ctx, 16, 3, 4);
    GC("index_select dim 0", SPEC(.op = G_INDEX_SELECT, .d0 = 0, .aux = I64(ctx, LOOM_SHAPE(5), 2, 0, 2, 2, 1)), x);
    GC("index_select dim 1", SPEC(.op = G_INDEX_SELECT, .d0 = 1, .aux = I64(ctx, LOOM_SHAPE(3), 3, 3, 0)), x);
    GC("index_select dim -1 3-D", SPEC(.op = G_INDEX_SELECT, .d0 = -1, .aux = I64(ctx, LOOM_SHAPE(4), 1, 0, 1, 1)),
       DLEAF(ctx, 17, 2, 3, 2));
    GC("gather dim 0",
       SPEC(.op = G_GATHER, .d0 = 0, .aux = I64(ctx, LOOM_SHAPE(2, 4), 2, 0, 2, 1, 2, 2, 0, 0)), x);
    GC("gather dim 1", SPEC(.op = G_GATHER, .d0 = 1, .aux = I64(ctx, LOOM_SHAPE(3, 5), 0, 3, 3, 1, 0, 2, 2, 2, 2, 1, 0,
                                                                   1, 3, 3, 3)),
       x);
    /* an index smaller than the source outside dim */
    GC("gather small index", SPEC(.op = G_GATHER, .d0 = 1, .aux = I64(ctx, LOOM_SHAPE(2, 2), 3, 3, 1, 0)), x);

    /* index_add / scatter_add: gradients w.r.t. the destination and the source */
    GC("index_add dim 0", SPEC(.op = G_INDEX_ADD, .d0 = 0, .aux = I64(ctx, LOOM_SHAPE(3), 0, 2, 0)),
       DLEAF(ctx, 18, 4, 3), DLEAF(ctx, 19, 3, 3));
    GC("index_add dim 1", SPEC(.op = G_INDEX_ADD, .d0 = 1, .aux = I64(ctx, LOOM_SHAPE(4), 4, 1, 4, 0)),
       DLEAF(ctx, 20, 2, 5), DLEAF(ctx, 21, 2, 4));
    GC("scatter_add dim 0",
       SPEC(.op = G_SCATTER_ADD, .d0 = 0, .aux = I64(ctx, LOOM_SHAPE(2, 4), 2, 0, 2, 1, 2, 2, 0, 0)),
       DLEAF(ctx, 22, 3, 4), DLEAF(ctx, 23, 2, 4));
    GC("scatter_add dim 1",
       SPEC(.op = G_SCATTER_ADD, .d0 = 1, .aux = I64(ctx, LOOM_SHAPE(3, 3), 0, 3, 3, 1, 1, 1, 2, 0, 2)),
       DLEAF(ctx, 24, 3, 4), DLEAF(ctx, 25, 3, 3));
    /* an index smaller than the source: the rest of the source gets 0 */
    GC("scatter_add small index", SPEC(.op = G_SCATTER_ADD, .d0 = 1, .aux = I64(ctx, LOOM_SHAPE(2, 2), 3, 0, 1, 1)),
       DLEAF(ctx, 26, 3, 4), DLEAF(ctx, 27, 3, 3));
    loom_ctx_free(ctx);
}
END_TEST

/* ---- gradcheck: non-contiguous leaves ---------------------------------- */

START_TEST(test_gc_noncontiguous)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* A leaf that is a transposed view of a constant. */
    loom_tensor *base = RCONST(ctx, -1, 1, 1, 4, 3);
    loom_tensor *xt = need_grad(loom_transpose(base, 0, 1)); /* [3,4], strides (1,3) */
    ck_assert(!loom_tensor_is_contiguous(xt));
    ck_assert(loom_tensor_is_leaf(xt));
    /* A leaf that is a step-2 slice of a constant. */
    loom_tensor *base2 = RCONST(ctx, -1, 1, 2, 6, 4);
    loom_tensor *xs = need_grad(loom_slice(base2, 0, 0, 6, 2)); /* [3,4] */
    ck_assert(!loom_tensor_is_contiguous(xs));
    loom_tensor *w = RLEAF(ctx, -1, 1, 3, 3, 4), *w2 = RLEAF(ctx, -1, 1, 4, 4, 2);
    loom_tensor *pos = need_grad(loom_transpose(RCONST(ctx, 0.5, 1.5, 5, 4, 3), 0, 1));
    GC("mul nc", SPEC(.op = G_MUL), xt, w);
    GC("mul two nc", SPEC(.op = G_MUL), xt, xs);
    GC("matmul nc", SPEC(.op = G_MATMUL), xt, w2);
    GC("matmul sliced", SPEC(.op = G_MATMUL), xs, w2);
    GC("exp nc", SPEC(.op = G_EXP), xt);
    GC("log nc", SPEC(.op = G_LOG), pos);
    GC("div nc", SPEC(.op = G_DIV), xs, pos);
    GC("sum nc dim 0", SPEC(.op = G_SUM, .nd = 1, .dl = {0}), xt);
    GC("transpose of nc", SPEC(.op = G_TRANSPOSE, .d0 = 0, .d1 = 1), xt);
    GC("contiguous of nc", SPEC(.op = G_CONTIG_T, .d0 = 0, .d1 = 1), xs);
    GC("reshape of nc (copy)", SPEC(.op = G_RESHAPE, .nd = 1, .sh = {12}), xt);
    GC("slice of nc", SPEC(.op = G_SLICE, .d0 = 1, .i0 = 1, .i1 = 4, .i2 = 2), xs);
    /* A function that transposes / slices its (contiguous) input first. */
    GC("matmul x^T w", SPEC(.op = G_MATMUL_TA), RLEAF(ctx, -1, 1, 6, 4, 3), w2);
    GC("view chain", SPEC(.op = G_VIEW_CHAIN), xt);

    /* Hand values: the gradient of a non-contiguous leaf has its shape and
     * logical (row-major) order. */
    loom_scope_begin(ctx);
    loom_tensor *c = F32(ctx, LOOM_SHAPE(3, 4), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    BACKWARD_OK(loom_sum(loom_mul(xt, c), 0, NULL, false));
    EXPECT_GRAD(xt, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    loom_tensor_zero_grad(xt);
    loom_scope_end(ctx);
    loom_ctx_free(ctx);
}
END_TEST

/* gradcheck itself: it must catch a wrong gradient, leave inputs alone,
 * and report errors of fn. */
START_TEST(test_gc_detects_errors)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(2, 2), 0.5f, -1.0f, 1.5f, 2.0f);
    gspec s = {.op = G_DETACHED};
    loom_tensor *in[] = {x};
    EXPECT_STATUS(loom_gradcheck(gfn, 1, in, &s, NULL), LOOM_ERR_INVALID_ARG, "element");
    ck_assert(!loom_tensor_has_grad(x));
    EXPECT_F32(x, 0, 0.5f, -1.0f, 1.5f, 2.0f);
    /* an output not requiring grad */
    loom_tensor *c = F32(ctx, LOOM_SHAPE(2), 1, 2);
    loom_tensor *cin[] = {c};
    gspec e = {.op = G_EXP};
    ck_assert(loom_gradcheck(gfn, 1, cin, &e, NULL) != LOOM_OK);
    /* fn failing */
    gspec bad = {.op = G_MATMUL};
    loom_tensor *bin[] = {x, LEAF(ctx, LOOM_SHAPE(3), 1, 2, 3)};
    EXPECT_STATUS(loom_gradcheck(gfn, 2, bin, &bad, NULL), LOOM_ERR_SHAPE, "matmul");
    loom_ctx_free(ctx);
}
END_TEST

/* ---- hand-computed gradients -------------------------------------------- */

START_TEST(test_hand_square)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(4), 1, -2, 3, 0.5f);
    ck_assert(!loom_tensor_has_grad(x));
    BACKWARD_OK(loom_sum(loom_mul(x, x), 0, NULL, false));
    EXPECT_GRAD(x, 0, 2, -4, 6, 1);
    /* d/dx of sum(x^3) via pow_scalar, and of mean(x) */
    loom_tensor_zero_grad(x);
    BACKWARD_OK(loom_sum(loom_pow_scalar(x, 3), 0, NULL, false));
    EXPECT_GRAD(x, 1e-6, 3, 12, 27, 0.75f);
    loom_tensor_zero_grad(x);
    BACKWARD_OK(loom_mean(x, 0, NULL, false));
    EXPECT_GRAD(x, 0, 0.25f, 0.25f, 0.25f, 0.25f);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_hand_linear_regression)
{
    /* loss = mean((x @ w - y)^2), x [4,3], w [3,2], y [4,2]:
     * dL/dw = 2/8 x^T (x w - y), dL/dx = 2/8 (x w - y) w^T. */
    loom_ctx *ctx = cfg_ctx(_i);
    float xv[12], wv[6], yv[8];
    for (int i = 0; i < 12; i++) xv[i] = (float)hval(1, i, -1, 1);
    for (int i = 0; i < 6; i++) wv[i] = (float)hval(2, i, -1, 1);
    for (int i = 0; i < 8; i++) yv[i] = (float)hval(3, i, -1, 1);
    loom_tensor *x = leaf(ctx, xv, LOOM_SHAPE(4, 3)), *w = leaf(ctx, wv, LOOM_SHAPE(3, 2));
    loom_tensor *y = loom_tensor_from_array(ctx, LOOM_FLOAT32, yv, LOOM_SHAPE(4, 2));
    loom_tensor *loss = loom_mean(loom_pow_scalar(loom_sub(loom_matmul(x, w), y), 2), 0, NULL, false);
    double r[8], gw[6] = {0}, gx[12] = {0}, lsum = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++) {
            double p = 0;
            for (int k = 0; k < 3; k++) p += (double)xv[i * 3 + k] * wv[k * 2 + j];
            r[i * 2 + j] = p - yv[i * 2 + j];
            lsum += r[i * 2 + j] * r[i * 2 + j];
        }
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < 4; i++) gw[k * 2 + j] += 2.0 / 8 * xv[i * 3 + k] * r[i * 2 + j];
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 3; k++)
            for (int j = 0; j < 2; j++) gx[i * 3 + k] += 2.0 / 8 * r[i * 2 + j] * wv[k * 2 + j];
    double lv;
    ck_assert_int_eq(loom_tensor_item(loss, &lv), LOOM_OK);
    ck_assert_msg(fabs(lv - lsum / 8) < 1e-5, "loss %g, expected %g", lv, lsum / 8);
    BACKWARD_OK(loss);
    expect_grad_doubles(w, gw, 6, 1e-5, __LINE__);
    expect_grad_doubles(x, gx, 12, 1e-5, __LINE__);
    ck_assert(!loom_tensor_has_grad(y));
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_hand_broadcast)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* loss = sum((x + b) * c), x [4,3] constant, b [3]: db_j = sum_i c_ij */
    loom_tensor *x = RCONST(ctx, -1, 1, 1, 4, 3);
    loom_tensor *c = F32(ctx, LOOM_SHAPE(4, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
    loom_tensor *b = LEAF(ctx, LOOM_SHAPE(3), 0.1f, 0.2f, 0.3f);
    BACKWARD_OK(loom_sum(loom_mul(loom_add(x, b), c), 0, NULL, false));
    EXPECT_GRAD(b, 0, 22, 26, 30);
    /* the same with b [1,3] and [4,1] */
    loom_tensor *b13 = LEAF(ctx, LOOM_SHAPE(1, 3), 0.1f, 0.2f, 0.3f);
    loom_tensor *b41 = LEAF(ctx, LOOM_SHAPE(4, 1), 0.1f, 0.2f, 0.3f, 0.4f);
    BACKWARD_OK(loom_sum(loom_mul(loom_add(loom_add(x, b13), b41), c), 0, NULL, false));
    EXPECT_GRAD(b13, 0, 22, 26, 30);
    EXPECT_GRAD(b41, 0, 6, 15, 24, 33);
    /* a 0-dim scale: d sum(s * c) / ds = sum(c) = 78, grad is 0-dim */
    loom_tensor *s = sleaf(ctx, 2.0f);
    BACKWARD_OK(loom_sum(loom_mul(s, c), 0, NULL, false));
    EXPECT_GRAD(s, 0, 78);
    ck_assert_int_eq(loom_tensor_ndim(s), 0);
    /* [4] with [2,3,4]: d sum(v * t) / dv_k = sum over the other dims of t */
    loom_tensor *v = LEAF(ctx, LOOM_SHAPE(4), 1, 1, 1, 1);
    float tv[24];
    for (int i = 0; i < 24; i++) tv[i] = (float)i;
    loom_tensor *t = loom_tensor_from_array(ctx, LOOM_FLOAT32, tv, LOOM_SHAPE(2, 3, 4));
    BACKWARD_OK(loom_sum(loom_mul(v, t), 0, NULL, false));
    EXPECT_GRAD(v, 0, 60, 66, 72, 78); /* sum_{n} (4n + k), n = 0..5 */
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_hand_views_index)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* the gradient of a slice is zero outside it */
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(6), 1, 2, 3, 4, 5, 6);
    BACKWARD_OK(loom_sum(loom_mul_scalar(loom_slice(x, 0, 1, 6, 2), 3), 0, NULL, false));
    EXPECT_GRAD(x, 0, 0, 3, 0, 3, 0, 3);
    loom_tensor_zero_grad(x);
    BACKWARD_OK(loom_sum(loom_slice(x, 0, -2, 6, 1), 0, NULL, false));
    EXPECT_GRAD(x, 0, 0, 0, 0, 0, 1, 1);
    /* select */
    loom_tensor *m = LEAF(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    BACKWARD_OK(loom_sum(loom_mul(loom_select(m, 0, 1), F32(ctx, LOOM_SHAPE(3), 1, 2, 3)), 0, NULL, false));
    EXPECT_GRAD(m, 0, 0, 0, 0, 1, 2, 3);
    loom_tensor_zero_grad(m);
    BACKWARD_OK(loom_sum(loom_select(m, 1, 2), 0, NULL, false));
    EXPECT_GRAD(m, 0, 0, 0, 1, 0, 0, 1);
    /* index_select with repeated indices adds up */
    loom_tensor *v = LEAF(ctx, LOOM_SHAPE(3), 1, 2, 3);
    BACKWARD_OK(loom_sum(loom_index_select(v, 0, I64(ctx, LOOM_SHAPE(4), 0, 0, 2, 0)), 0, NULL, false));
    EXPECT_GRAD(v, 0, 3, 0, 1);
    /* gather with repeated indices */
    loom_tensor *g = LEAF(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    BACKWARD_OK(loom_sum(loom_gather(g, 1, I64(ctx, LOOM_SHAPE(2, 2), 2, 2, 0, 1)), 0, NULL, false));
    EXPECT_GRAD(g, 0, 0, 0, 2, 1, 1, 0);
    /* cat routes each part's gradient; stack too */
    loom_tensor *a = LEAF(ctx, LOOM_SHAPE(2), 1, 2), *b = LEAF(ctx, LOOM_SHAPE(1), 3);
    loom_tensor *w = F32(ctx, LOOM_SHAPE(3), 10, 20, 30);
    BACKWARD_OK(loom_sum(loom_mul(loom_cat((loom_tensor *[]){a, b}, 2, 0), w), 0, NULL, false));
    EXPECT_GRAD(a, 0, 10, 20);
    EXPECT_GRAD(b, 0, 30);
    /* expand sums */
    loom_tensor *e = LEAF(ctx, LOOM_SHAPE(2, 1), 1, 2);
    BACKWARD_OK(loom_sum(loom_expand(e, LOOM_SHAPE(3, 2, 4)), 0, NULL, false));
    EXPECT_GRAD(e, 0, 12, 12);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_hand_ties)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* max over everything with a tie: the gradient is split evenly */
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(4), 1, 3, 3, 2);
    BACKWARD_OK(loom_max(x, LOOM_DIM_ALL, false));
    EXPECT_GRAD(x, 0, 0, 0.5f, 0.5f, 0);
    loom_tensor_zero_grad(x);
    BACKWARD_OK(loom_min(loom_neg(x), 0, false));
    EXPECT_GRAD(x, 0, 0, -0.5f, -0.5f, 0);
    /* over a dim: a three-way tie in one row, none in the other */
    loom_tensor *m = LEAF(ctx, LOOM_SHAPE(2, 3), 5, 5, 5, 1, 4, 2);
    BACKWARD_OK(loom_sum(loom_max(m, 1, false), 0, NULL, false));
    EXPECT_GRAD(m, 1e-7, 1.0f / 3, 1.0f / 3, 1.0f / 3, 0, 1, 0);
    loom_tensor_zero_grad(m);
    BACKWARD_OK(loom_sum(loom_min(m, 0, true), 0, NULL, false));
    EXPECT_GRAD(m, 0, 0, 0, 0, 1, 1, 1);
    /* maximum/minimum with ties: half each */
    loom_tensor *a = LEAF(ctx, LOOM_SHAPE(3), 1, 2, 3), *b = LEAF(ctx, LOOM_SHAPE(3), 3, 2, 1);
    BACKWARD_OK(loom_sum(loom_maximum(a, b), 0, NULL, false));
    EXPECT_GRAD(a, 0, 0, 0.5f, 1);
    EXPECT_GRAD(b, 0, 1, 0.5f, 0);
    loom_tensor_zero_grad(a);
    loom_tensor_zero_grad(b);
    BACKWARD_OK(loom_sum(loom_minimum(a, b), 0, NULL, false));
    EXPECT_GRAD(a, 0, 1, 0.5f, 0);
    EXPECT_GRAD(b, 0, 0, 0.5f, 1);
    /* relu and abs at 0: gradient 0, as PyTorch */
    loom_tensor *z = LEAF(ctx, LOOM_SHAPE(3), -1, 0, 2);
    BACKWARD_OK(loom_sum(loom_add(loom_relu(z), loom_abs(z)), 0, NULL, false));
    EXPECT_GRAD(z, 0, -1, 0, 2);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- semantics ---------------------------------------------------------- */

START_TEST(test_accumulate)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(3), 1, 2, 3);
    /* retain_graph on the first backward, then again over the same graph */
    loom_tensor *loss = loom_sum(loom_mul(x, x), 0, NULL, false);
    loom_backward_options keep = {.retain_graph = true};
    ck_assert_int_eq(loom_backward(loss, NULL, &keep), LOOM_OK);
    EXPECT_GRAD(x, 0, 2, 4, 6);
    ck_assert_int_eq(loom_backward(loss, NULL, NULL), LOOM_OK);
    EXPECT_GRAD(x, 0, 4, 8, 12);
    /* the graph is now freed */
    EXPECT_STATUS(loom_backward(loss, NULL, NULL), LOOM_ERR_STATE, "already freed");
    EXPECT_GRAD(x, 0, 4, 8, 12); /* unchanged by the failed call */
    /* rebuilding the graph accumulates too */
    BACKWARD_OK(loom_sum(loom_mul_scalar(x, 10), 0, NULL, false));
    EXPECT_GRAD(x, 0, 14, 18, 22);
    /* a handle from loom_tensor_grad keeps the value it had */
    loom_tensor *g = loom_tensor_grad(x);
    BACKWARD_OK(loom_sum(x, 0, NULL, false));
    EXPECT_GRAD(x, 0, 15, 19, 23);
    EXPECT_F32(g, 0, 14, 18, 22);
    /* zero_grad clears */
    loom_tensor_zero_grad(x);
    ck_assert(!loom_tensor_has_grad(x));
    loom_clear_error();
    assert_error(loom_tensor_grad(x), LOOM_ERR_STATE, "gradient");
    EXPECT_F32(g, 0, 14, 18, 22);
    loom_tensor_zero_grad(x); /* no grad: a no-op */
    loom_tensor_zero_grad(NULL);
    BACKWARD_OK(loom_sum(x, 0, NULL, false));
    EXPECT_GRAD(x, 0, 1, 1, 1);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_freed_graph)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(2), 1, 2);
    loom_tensor *y = loom_exp(x);
    loom_tensor *l1 = loom_sum(y, 0, NULL, false);
    BACKWARD_OK(l1);
    EXPECT_STATUS(loom_backward(l1, NULL, NULL), LOOM_ERR_STATE, "already freed");
    /* a new op on a freed intermediate cannot backward through it either */
    loom_tensor *l2 = loom_sum(loom_mul_scalar(y, 2), 0, NULL, false);
    EXPECT_STATUS(loom_backward(l2, NULL, NULL), LOOM_ERR_STATE, "already freed");
    /* but its values are still there */
    EXPECT_F32(y, 1e-6, (float)exp(1.0), (float)exp(2.0));
    /* and a fresh graph from the leaf works */
    loom_tensor_zero_grad(x);
    BACKWARD_OK(loom_sum(loom_exp(x), 0, NULL, false));
    EXPECT_GRAD(x, 1e-6, (float)exp(1.0), (float)exp(2.0));
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_backward_args)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    loom_tensor *y = loom_mul(x, x);
    /* non-scalar without grad */
    EXPECT_STATUS(loom_backward(y, NULL, NULL), LOOM_ERR_SHAPE, "");
    ck_assert(!loom_tensor_has_grad(x));
    /* a grad of the wrong shape */
    loom_tensor *bad = F32(ctx, LOOM_SHAPE(3, 2), 1, 1, 1, 1, 1, 1);
    EXPECT_STATUS(loom_backward(y, bad, NULL), LOOM_ERR_SHAPE, "");
    /* with a grad tensor: dL/dx = 2x * G */
    loom_tensor *G = F32(ctx, LOOM_SHAPE(2, 3), 1, -1, 0.5f, 2, 0, 3);
    ck_assert_int_eq(loom_backward(y, G, NULL), LOOM_OK);
    EXPECT_GRAD(x, 0, 2, -4, 3, 16, 0, 36);
    /* an int64 grad is converted */
    loom_tensor_zero_grad(x);
    loom_tensor *y2 = loom_mul_scalar(x, 3);
    ck_assert_int_eq(loom_backward(y2, I64(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6), NULL), LOOM_OK);
    EXPECT_GRAD(x, 0, 3, 6, 9, 12, 15, 18);
    /* one-element non-0-dim roots need no grad */
    loom_tensor_zero_grad(x);
    BACKWARD_OK(loom_sum(x, 0, NULL, true)); /* shape [1,1] */
    EXPECT_GRAD(x, 0, 1, 1, 1, 1, 1, 1);
    /* a tensor not requiring grad */
    loom_tensor *c = F32(ctx, LOOM_SHAPE(1), 2);
    ck_assert(!loom_tensor_requires_grad(c));
    EXPECT_STATUS(loom_backward(loom_sum(c, 0, NULL, false), NULL, NULL), LOOM_ERR_STATE, "");
    ck_assert(!loom_tensor_has_grad(c));
    /* a grad from another context */
    loom_ctx *other = test_ctx(1, NULL);
    EXPECT_STATUS(loom_backward(y, loom_ones(other, LOOM_FLOAT32, LOOM_SHAPE(2, 3)), NULL), LOOM_ERR_INVALID_ARG,
                  "context");
    loom_ctx_free(other);
    /* NULL root: fails, no crash */
    ck_assert(loom_backward(NULL, NULL, NULL) != LOOM_OK);
    /* a leaf root */
    loom_tensor *s = sleaf(ctx, 4);
    BACKWARD_OK(s);
    EXPECT_GRAD(s, 0, 1);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_no_grad)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(2), 1, 2);
    ck_assert(loom_grad_enabled(ctx));
    loom_no_grad_begin(ctx);
    ck_assert(!loom_grad_enabled(ctx));
    loom_tensor *a = loom_mul(x, x);
    ck_assert(!loom_tensor_requires_grad(a));
    ck_assert(loom_tensor_is_leaf(a));
    loom_no_grad_begin(ctx); /* nested */
    loom_tensor *b = loom_exp(x);
    ck_assert(!loom_tensor_requires_grad(b));
    loom_no_grad_end(ctx);
    ck_assert(!loom_grad_enabled(ctx)); /* still inside the outer region */
    loom_tensor *c = loom_transpose(loom_unsqueeze(x, 0), 0, 1);
    ck_assert(!loom_tensor_requires_grad(c));
    loom_no_grad_end(ctx);
    ck_assert(loom_grad_enabled(ctx));
    loom_no_grad_end(ctx); /* unbalanced end: harmless */
    ck_assert(loom_grad_enabled(ctx));
    /* values are computed normally */
    EXPECT_F32(a, 0, 1, 4);
    /* backward from a no-grad result fails; x gets nothing */
    ck_assert(loom_backward(loom_sum(a, 0, NULL, false), NULL, NULL) != LOOM_OK);
    ck_assert(!loom_tensor_has_grad(x));
    /* mixing a no-grad result with x: only the recorded path counts */
    loom_tensor *d = loom_mul(a, x); /* a is a constant here */
    ck_assert(loom_tensor_requires_grad(d));
    BACKWARD_OK(loom_sum(d, 0, NULL, false));
    EXPECT_GRAD(x, 0, 1, 4);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_detach)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(3), 1, 2, 3);
    loom_tensor *y = loom_mul_scalar(x, 2);
    loom_tensor *d = loom_detach(x);
    ck_assert(d != NULL);
    ck_assert(!loom_tensor_requires_grad(d));
    ck_assert(loom_tensor_is_leaf(d));
    ck_assert(loom_tensor_shares_storage(d, x));
    EXPECT_F32(d, 0, 1, 2, 3);
    loom_tensor *dy = loom_detach(y);
    ck_assert(!loom_tensor_requires_grad(dy));
    ck_assert(loom_tensor_is_leaf(dy));
    EXPECT_F32(dy, 0, 2, 4, 6);
    ck_assert(loom_tensor_shares_storage(dy, y));
    /* gradients stop at the detached value */
    BACKWARD_OK(loom_sum(loom_add(loom_mul(x, d), loom_mul(dy, x)), 0, NULL, false));
    EXPECT_GRAD(x, 0, 3, 6, 9); /* d + dy, not 2x + 4x */
    /* a detached tensor can itself become a leaf requiring grad */
    ck_assert_int_eq(loom_tensor_set_requires_grad(dy, true), LOOM_OK);
    BACKWARD_OK(loom_sum(loom_mul(dy, dy), 0, NULL, false));
    EXPECT_GRAD(dy, 0, 4, 8, 12);
    EXPECT_GRAD(x, 0, 3, 6, 9); /* unchanged */
    ck_assert(loom_detach(NULL) == NULL);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_leaves_and_dtypes)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = F32(ctx, LOOM_SHAPE(3), 1, 5, 3);
    ck_assert(loom_tensor_is_leaf(x));
    ck_assert(!loom_tensor_requires_grad(x));
    ck_assert_int_eq(loom_tensor_set_requires_grad(x, true), LOOM_OK);
    ck_assert(loom_tensor_requires_grad(x));
    ck_assert(loom_tensor_is_leaf(x));
    loom_tensor *y = loom_exp(x);
    ck_assert(loom_tensor_requires_grad(y));
    ck_assert(!loom_tensor_is_leaf(y));
    /* views of a leaf requiring grad are not leaves */
    loom_tensor *v = loom_transpose(loom_unsqueeze(x, 0), 0, 1);
    ck_assert(!loom_tensor_is_leaf(v));
    ck_assert(loom_tensor_requires_grad(v));
    /* set_requires_grad on a non-leaf: LOOM_ERR_STATE */
    loom_clear_error();
    EXPECT_STATUS(loom_tensor_set_requires_grad(y, true), LOOM_ERR_STATE, "leaf");
    EXPECT_STATUS(loom_tensor_set_requires_grad(y, false), LOOM_ERR_STATE, "leaf");
    EXPECT_STATUS(loom_tensor_set_requires_grad(v, false), LOOM_ERR_STATE, "leaf");
    ck_assert(loom_tensor_requires_grad(y));
    /* on int64 / bool: LOOM_ERR_DTYPE */
    loom_tensor *i = I64(ctx, LOOM_SHAPE(2), 1, 2);
    EXPECT_STATUS(loom_tensor_set_requires_grad(i, true), LOOM_ERR_DTYPE, "int64");
    ck_assert(!loom_tensor_requires_grad(i));
    loom_tensor *bl = B8(ctx, LOOM_SHAPE(2), 1, 0);
    EXPECT_STATUS(loom_tensor_set_requires_grad(bl, true), LOOM_ERR_DTYPE, "bool");
    EXPECT_STATUS(loom_tensor_set_requires_grad(NULL, true), LOOM_ERR_INVALID_ARG, "");
    ck_assert(!loom_tensor_requires_grad(NULL));
    ck_assert(!loom_tensor_has_grad(NULL));
    /* computed from constants only: a leaf */
    loom_tensor *k = loom_exp(F32(ctx, LOOM_SHAPE(2), 1, 2));
    ck_assert(loom_tensor_is_leaf(k));
    ck_assert(!loom_tensor_requires_grad(k));
    ck_assert_int_eq(loom_tensor_set_requires_grad(k, true), LOOM_OK);
    /* int and bool results of inputs requiring grad do not require grad */
    loom_tensor *am = loom_argmax(x, 0, false), *gt = loom_gt(x, F32(ctx, LOOM_SHAPE(1), 2));
    loom_tensor *eq = loom_eq(x, x), *ix = loom_to_dtype(x, LOOM_INT64), *am2 = loom_argmin(y, LOOM_DIM_ALL, true);
    ck_assert(am && gt && eq && ix && am2);
    ck_assert(!loom_tensor_requires_grad(am));
    ck_assert(!loom_tensor_requires_grad(gt));
    ck_assert(!loom_tensor_requires_grad(eq));
    ck_assert(!loom_tensor_requires_grad(ix));
    ck_assert(!loom_tensor_requires_grad(am2));
    ck_assert(loom_tensor_is_leaf(am));
    /* ... and a float computed from them does not either */
    loom_tensor *back = loom_to_dtype(ix, LOOM_FLOAT32);
    ck_assert(!loom_tensor_requires_grad(back));
    /* loom_tensor_grad without a grad: NULL, LOOM_ERR_STATE */
    loom_clear_error();
    assert_error(loom_tensor_grad(x), LOOM_ERR_STATE, "gradient");
    assert_error(loom_tensor_grad(y), LOOM_ERR_STATE, "gradient");
    /* after backward, the non-leaf still has none; the leaf has one */
    BACKWARD_OK(loom_sum(y, 0, NULL, false));
    ck_assert(loom_tensor_has_grad(x));
    ck_assert(!loom_tensor_has_grad(y));
    assert_error(loom_tensor_grad(y), LOOM_ERR_STATE, "gradient");
    ck_assert(!loom_tensor_has_grad(k));
    /* a leaf requiring grad that the loss does not use gets no grad */
    assert_error(loom_tensor_grad(k), LOOM_ERR_STATE, "gradient");
    /* requires_grad set after an op was recorded does not affect it */
    loom_tensor *late = F32(ctx, LOOM_SHAPE(2), 1, 2);
    loom_tensor *late_y = loom_mul_scalar(late, 2);
    ck_assert_int_eq(loom_tensor_set_requires_grad(late, true), LOOM_OK);
    ck_assert(!loom_tensor_requires_grad(late_y));
    /* turning it off again */
    ck_assert_int_eq(loom_tensor_set_requires_grad(late, false), LOOM_OK);
    ck_assert(!loom_tensor_requires_grad(loom_mul(late, late)));
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_assign)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *w = LEAF(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4);
    /* values */
    ck_assert_int_eq(loom_tensor_assign(w, F32(ctx, LOOM_SHAPE(2, 2), 5, 6, 7, 8)), LOOM_OK);
    EXPECT_F32(w, 0, 5, 6, 7, 8);
    ck_assert(loom_tensor_requires_grad(w));
    ck_assert(loom_tensor_is_leaf(w));
    /* a lazy, non-contiguous source */
    ck_assert_int_eq(loom_tensor_assign(w, loom_transpose(loom_mul_scalar(F32(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4), 2),
                                                          0, 1)),
                     LOOM_OK);
    EXPECT_F32(w, 0, 2, 6, 4, 8);
    /* shape check */
    EXPECT_STATUS(loom_tensor_assign(w, F32(ctx, LOOM_SHAPE(4), 1, 2, 3, 4)), LOOM_ERR_SHAPE, "shape");
    EXPECT_STATUS(loom_tensor_assign(w, F32(ctx, LOOM_SHAPE(2, 1), 1, 2)), LOOM_ERR_SHAPE, "shape");
    EXPECT_F32(w, 0, 2, 6, 4, 8);
    /* dtype conversion: int64 into float32, float32 into int64 (truncated) */
    ck_assert_int_eq(loom_tensor_assign(w, I64(ctx, LOOM_SHAPE(2, 2), -1, 0, 7, 9)), LOOM_OK);
    EXPECT_F32(w, 0, -1, 0, 7, 9);
    loom_tensor *iv = I64(ctx, LOOM_SHAPE(3), 1, 2, 3);
    ck_assert_int_eq(loom_tensor_assign(iv, F32(ctx, LOOM_SHAPE(3), 2.7f, -3.5f, 10)), LOOM_OK);
    assert_values_i64(iv, ((const int64_t[]){2, -3, 10}), 3);
    /* assigning into a non-contiguous view of a constant (a leaf) */
    loom_tensor *base = F32(ctx, LOOM_SHAPE(2, 3), 0, 0, 0, 0, 0, 0);
    ck_assert_int_eq(loom_tensor_assign(loom_transpose(base, 0, 1), F32(ctx, LOOM_SHAPE(3, 2), 1, 2, 3, 4, 5, 6)),
                     LOOM_OK);
    EXPECT_F32(base, 0, 1, 3, 5, 2, 4, 6);
    /* a non-leaf destination */
    loom_tensor *y = loom_mul(w, w);
    EXPECT_STATUS(loom_tensor_assign(y, F32(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4)), LOOM_ERR_STATE, "");

    /* a pending op recorded before the assign fails */
    loom_tensor *w2 = LEAF(ctx, LOOM_SHAPE(2), 1, 2);
    loom_tensor *pending = loom_mul_scalar(w2, 10);
    loom_tensor *pending_bc = loom_add(w2, F32(ctx, LOOM_SHAPE(3, 2), 0, 0, 0, 0, 0, 0)); /* w2 via an expand */
    ck_assert_int_eq(loom_tensor_assign(w2, F32(ctx, LOOM_SHAPE(2), 3, 4)), LOOM_OK);
    EXPECT_STATUS(loom_tensor_eval(pending), LOOM_ERR_STATE, "modified in place");
    EXPECT_STATUS(loom_tensor_eval(pending), LOOM_ERR_STATE, "modified in place"); /* again */
    EXPECT_STATUS(loom_tensor_eval(pending_bc), LOOM_ERR_STATE, "modified in place");
    /* ops recorded after it see the new values */
    EXPECT_F32(loom_mul_scalar(w2, 10), 0, 30, 40);

    /* a backward needing the old values fails */
    loom_tensor *w3 = LEAF(ctx, LOOM_SHAPE(2), 1, 2);
    loom_tensor *loss = loom_sum(loom_mul(w3, w3), 0, NULL, false);
    ck_assert_int_eq(loom_tensor_eval(loss), LOOM_OK);
    ck_assert_int_eq(loom_tensor_assign(w3, F32(ctx, LOOM_SHAPE(2), 5, 6)), LOOM_OK);
    EXPECT_STATUS(loom_backward(loss, NULL, NULL), LOOM_ERR_STATE, "modified in place");
    ck_assert(!loom_tensor_has_grad(w3));
    /* ... also through a view of the leaf (sin's gradient reads its input) */
    loom_tensor *w4 = LEAF(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4);
    loom_tensor *loss4 = loom_sum(loom_sin(loom_transpose(w4, 0, 1)), 0, NULL, false);
    ck_assert_int_eq(loom_tensor_eval(loss4), LOOM_OK);
    ck_assert_int_eq(loom_tensor_assign(w4, F32(ctx, LOOM_SHAPE(2, 2), 0, 0, 0, 0)), LOOM_OK);
    EXPECT_STATUS(loom_backward(loss4, NULL, NULL), LOOM_ERR_STATE, "modified in place");
    ck_assert(!loom_tensor_has_grad(w4));
    /* exp's gradient reads exp's output, computed from the old values: it
     * stays right (as in PyTorch, which saves exp's result) */
    loom_tensor *w4b = LEAF(ctx, LOOM_SHAPE(2), 1, 2);
    loom_tensor *loss4b = loom_sum(loom_exp(loom_transpose(loom_unsqueeze(w4b, 0), 0, 1)), 0, NULL, false);
    ck_assert_int_eq(loom_tensor_eval(loss4b), LOOM_OK);
    ck_assert_int_eq(loom_tensor_assign(w4b, F32(ctx, LOOM_SHAPE(2), 0, 0)), LOOM_OK);
    BACKWARD_OK(loss4b);
    EXPECT_GRAD(w4b, 1e-6, (float)exp(1.0), (float)exp(2.0));
    /* after backward, assigning is fine and a new graph uses the new values */
    loom_tensor *w5 = LEAF(ctx, LOOM_SHAPE(2), 1, 2);
    BACKWARD_OK(loom_sum(loom_mul(w5, w5), 0, NULL, false));
    EXPECT_GRAD(w5, 0, 2, 4);
    loom_no_grad_begin(ctx);
    ck_assert_int_eq(loom_tensor_assign(w5, loom_sub(w5, loom_mul_scalar(loom_tensor_grad(w5), 0.5))), LOOM_OK);
    loom_no_grad_end(ctx);
    EXPECT_F32(w5, 0, 0, 0);
    EXPECT_GRAD(w5, 0, 2, 4); /* the grad is not touched by the assign */
    loom_tensor_zero_grad(w5);
    BACKWARD_OK(loom_sum(loom_mul(w5, F32(ctx, LOOM_SHAPE(2), 3, 4)), 0, NULL, false));
    EXPECT_GRAD(w5, 0, 3, 4);
    /* a view of a parameter made once (as a module caching w^T would) and
     * used after the parameter was assigned: only values read by gradient
     * rules matter, and the view's rule reads none */
    loom_tensor *w6 = LEAF(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4);
    loom_tensor *w6t = loom_transpose(w6, 0, 1);
    loom_no_grad_begin(ctx);
    ck_assert_int_eq(loom_tensor_assign(w6, F32(ctx, LOOM_SHAPE(2, 2), 5, 6, 7, 8)), LOOM_OK);
    loom_no_grad_end(ctx);
    EXPECT_F32(w6t, 0, 5, 7, 6, 8);
    BACKWARD_OK(loom_sum(loom_mul(w6t, w6t), 0, NULL, false));
    EXPECT_GRAD(w6, 0, 10, 12, 14, 16);
    /* ... likewise an add recorded before the assign, whose gradient needs
     * no values, and which ran before it */
    loom_tensor *w7 = LEAF(ctx, LOOM_SHAPE(2), 1, 2);
    loom_tensor *sum7 = loom_add_scalar(w7, 1);
    ck_assert_int_eq(loom_tensor_eval(sum7), LOOM_OK);
    ck_assert_int_eq(loom_tensor_assign(w7, F32(ctx, LOOM_SHAPE(2), 0, 0)), LOOM_OK);
    BACKWARD_OK(loom_sum(loom_mul(sum7, sum7), 0, NULL, false));
    EXPECT_GRAD(w7, 0, 4, 6); /* 2 * (old w7 + 1) */
    /* ... but an index read by index_select's gradient is checked */
    loom_tensor *src = LEAF(ctx, LOOM_SHAPE(3), 1, 2, 3);
    loom_tensor *idx = I64(ctx, LOOM_SHAPE(2), 0, 0);
    loom_tensor *ls = loom_sum(loom_index_select(src, 0, idx), 0, NULL, false);
    ck_assert_int_eq(loom_tensor_eval(ls), LOOM_OK);
    ck_assert_int_eq(loom_tensor_assign(idx, I64(ctx, LOOM_SHAPE(2), 2, 2)), LOOM_OK);
    EXPECT_STATUS(loom_backward(ls, NULL, NULL), LOOM_ERR_STATE, "modified in place");
    /* NULLs */
    ck_assert(loom_tensor_assign(NULL, w5) != LOOM_OK);
    ck_assert(loom_tensor_assign(w5, NULL) != LOOM_OK);
    loom_ctx_free(ctx);
}
END_TEST

/* The version check covers every input of a pending op, not only the
 * first few: cat of four tensors, the last one assigned before it ran. */
START_TEST(test_assign_many_inputs)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *a[5];
    for (int i = 0; i < 5; i++) a[i] = LEAF(ctx, LOOM_SHAPE(2), (float)i, (float)i);
    loom_tensor *c = loom_cat(a, 5, 0);
    loom_tensor *st = loom_stack(a, 5, 0);
    ck_assert_int_eq(loom_tensor_assign(a[4], F32(ctx, LOOM_SHAPE(2), 9, 9)), LOOM_OK);
    EXPECT_STATUS(loom_tensor_eval(c), LOOM_ERR_STATE, "modified in place");
    EXPECT_STATUS(loom_tensor_eval(st), LOOM_ERR_STATE, "modified in place");
    loom_ctx_free(ctx);
}
END_TEST

/* A saved output modified through a detached alias: backward must not
 * silently use the new values (exp's gradient reads exp's output). */
START_TEST(test_assign_saved_output)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(2), 1, 2);
    loom_tensor *y = loom_exp(x);
    loom_tensor *loss = loom_sum(y, 0, NULL, false);
    ck_assert_int_eq(loom_tensor_eval(loss), LOOM_OK);
    loom_tensor *d = loom_detach(y);
    ck_assert(loom_tensor_shares_storage(d, y));
    loom_status st = loom_tensor_assign(d, F32(ctx, LOOM_SHAPE(2), 0, 0));
    if (st == LOOM_OK) {
        EXPECT_STATUS(loom_backward(loss, NULL, NULL), LOOM_ERR_STATE, "modified in place");
        ck_assert(!loom_tensor_has_grad(x));
    } else {
        /* refusing the assign is also safe */
        ck_assert_int_eq(st, LOOM_ERR_STATE);
    }
    loom_ctx_free(ctx);
}
END_TEST

/* Edge cases: pow with a zero exponent, empty tensors, a deep chain,
 * backward inside no-grad, forward errors reported by backward, leaks on
 * failure. */
START_TEST(test_edge_cases)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* d x^0 / dx = 0, also at x = 0 (PyTorch masks exponent == 0) */
    loom_tensor *p = LEAF(ctx, LOOM_SHAPE(3), 0, 1, 2);
    BACKWARD_OK(loom_sum(loom_pow_scalar(p, 0), 0, NULL, false));
    EXPECT_GRAD(p, 0, 0, 0, 0);
    loom_tensor_zero_grad(p);
    loom_tensor *e = LEAF(ctx, LOOM_SHAPE(3), 0, 2, 1);
    BACKWARD_OK(loom_sum(loom_pow(p, e), 0, NULL, false));
    EXPECT_GRAD(p, 0, 0, 2, 1); /* e p^(e-1): 0 (exponent 0), 2*1, 1 */
    EXPECT_GRAD(e, 1e-6, 0, 0, 2 * (float)log(2.0)); /* p^e log p, 0 where p == 0 */
    loom_tensor_zero_grad(p);
    BACKWARD_OK(loom_sum(loom_pow_scalar(p, 2), 0, NULL, false));
    EXPECT_GRAD(p, 0, 0, 2, 4);

    /* a gradient through an empty slice (via cat) and an empty leaf */
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(4), 1, 2, 3, 4);
    loom_tensor *z = need_grad(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0)));
    BACKWARD_OK(loom_sum(loom_mul(loom_cat((loom_tensor *[]){loom_slice(x, 0, 2, 2, 1), z, x}, 3, 0), x), 0, NULL,
                         false));
    EXPECT_GRAD(x, 0, 2, 4, 6, 8); /* sum(x * x): the empty parts add nothing */
    ck_assert(loom_tensor_has_grad(z));
    loom_tensor *gz = loom_tensor_grad(z);
    ck_assert(gz != NULL);
    ck_assert_int_eq(loom_tensor_numel(gz), 0);
    loom_tensor_zero_grad(x);

    /* backward inside a no-grad region (the graph was recorded outside) */
    loom_tensor *loss = loom_sum(loom_mul(x, x), 0, NULL, false);
    loom_no_grad_begin(ctx);
    BACKWARD_OK(loss);
    loom_no_grad_end(ctx);
    EXPECT_GRAD(x, 0, 2, 4, 6, 8);
    ck_assert(loom_grad_enabled(ctx));
    loom_tensor_zero_grad(x);

    /* a forward error is reported by backward as such */
    loom_clear_error();
    EXPECT_STATUS(loom_backward(loom_sum(loom_gather(x, 0, I64(ctx, LOOM_SHAPE(1), 7)), 0, NULL, false), NULL, NULL),
                  LOOM_ERR_RANGE, "gather");
    ck_assert(!loom_tensor_has_grad(x));

    /* a long chain: backward and freeing are iterative */
    int64_t base = live(ctx), base_bytes = live_bytes(ctx);
    loom_scope_begin(ctx);
    loom_tensor *y = x;
    for (int i = 0; i < 50000; i++) y = loom_mul_scalar(y, 1.0);
    BACKWARD_OK(loom_sum(y, 0, NULL, false));
    loom_scope_end(ctx);
    EXPECT_GRAD(x, 0, 1, 1, 1, 1);
    loom_tensor_zero_grad(x);
    ck_assert_int_eq(live(ctx), base);
    ck_assert_int_eq(live_bytes(ctx), base_bytes);

    /* nothing leaks when backward fails, nor with retain_graph */
    loom_scope_begin(ctx);
    loom_tensor *w = LEAF(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4);
    loom_tensor *l1 = loom_sum(loom_exp(loom_matmul(w, w)), 0, NULL, false);
    loom_backward_options keep = {.retain_graph = true};
    ck_assert_int_eq(loom_backward(l1, NULL, &keep), LOOM_OK);
    ck_assert_int_eq(loom_tensor_assign(w, F32(ctx, LOOM_SHAPE(2, 2), 0, 0, 0, 0)), LOOM_OK);
    EXPECT_STATUS(loom_backward(l1, NULL, NULL), LOOM_ERR_STATE, "modified in place");
    loom_tensor_zero_grad(w);
    loom_scope_end(ctx);
    ck_assert_int_eq(live(ctx), base);
    ck_assert_int_eq(live_bytes(ctx), base_bytes);
    loom_ctx_free(ctx);
}
END_TEST

/* Reductions over empty dims are differentiable too: sum of nothing is 0,
 * and the gradient of an empty tensor is empty. */
START_TEST(test_empty_reduce)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *x = need_grad(loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0, 3)));
    loom_tensor *s = loom_sum(x, 0, NULL, false);
    ck_assert(s != NULL);
    ck_assert(loom_tensor_requires_grad(s));
    BACKWARD_OK(s);
    loom_tensor *g = loom_tensor_grad(x);
    ck_assert(g != NULL);
    assert_shape(g, 0, 3);
    loom_tensor_zero_grad(x);
    /* over the empty dim only: [3] zeros, still tracked */
    loom_tensor *s0 = loom_sum(x, 1, (const int[]){0}, false);
    ck_assert(loom_tensor_requires_grad(s0));
    loom_tensor *w = LEAF(ctx, LOOM_SHAPE(3), 1, 2, 3);
    BACKWARD_OK(loom_sum(loom_mul(loom_add(s0, w), w), 0, NULL, false));
    EXPECT_GRAD(w, 0, 2, 4, 6);
    ck_assert(loom_tensor_has_grad(x));
    loom_ctx_free(ctx);
}
END_TEST

/* A leaf's gradient is its own dense tensor: writing into it in place (as
 * gradient clipping does) changes that gradient and nothing else, and it
 * does not alias the grad given to backward or another leaf's gradient. */
START_TEST(test_grad_owned)
{
    loom_ctx *ctx = cfg_ctx(_i);
    /* sum(x): the incoming gradient is a broadcast of one value */
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    BACKWARD_OK(loom_sum(x, 0, NULL, false));
    loom_tensor *g = loom_tensor_grad(x);
    ck_assert(g != NULL);
    ck_assert(loom_tensor_is_contiguous(g));
    ck_assert_int_eq(loom_tensor_assign(g, F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6)), LOOM_OK);
    EXPECT_GRAD(x, 0, 1, 2, 3, 4, 5, 6);
    /* two leaves fed by one gradient (add passes it to both) */
    loom_tensor *x1 = LEAF(ctx, LOOM_SHAPE(3), 1, 2, 3), *x2 = LEAF(ctx, LOOM_SHAPE(3), 4, 5, 6);
    BACKWARD_OK(loom_sum(loom_mul(loom_add(x1, x2), F32(ctx, LOOM_SHAPE(3), 7, 8, 9)), 0, NULL, false));
    ck_assert(!loom_tensor_shares_storage(loom_tensor_grad(x1), loom_tensor_grad(x2)));
    ck_assert_int_eq(loom_tensor_assign(loom_tensor_grad(x1), F32(ctx, LOOM_SHAPE(3), 0, 0, 0)), LOOM_OK);
    EXPECT_GRAD(x1, 0, 0, 0, 0);
    EXPECT_GRAD(x2, 0, 7, 8, 9);
    /* the grad passed to backward, reaching the leaf through views only */
    loom_tensor *r = LEAF(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4);
    loom_tensor *G = F32(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4);
    ck_assert_int_eq(loom_backward(loom_transpose(r, 0, 1), G, NULL), LOOM_OK);
    ck_assert(!loom_tensor_shares_storage(loom_tensor_grad(r), G));
    ck_assert_int_eq(loom_tensor_assign(G, F32(ctx, LOOM_SHAPE(2, 2), 7, 7, 7, 7)), LOOM_OK);
    EXPECT_GRAD(r, 0, 1, 3, 2, 4);
    /* a 1-element leaf as the root, with a grad */
    loom_tensor *s = sleaf(ctx, 2);
    loom_tensor *Gs = loom_scalar(ctx, LOOM_FLOAT32, 3);
    ck_assert_int_eq(loom_backward(s, Gs, NULL), LOOM_OK);
    ck_assert_int_eq(loom_tensor_assign(Gs, loom_scalar(ctx, LOOM_FLOAT32, 5)), LOOM_OK);
    EXPECT_GRAD(s, 0, 3);
    loom_ctx_free(ctx);
}
END_TEST

/* The number of first-gradient copies (the "contiguous" op) since the
 * profile was started. */
static int64_t grad_copies(loom_ctx *ctx)
{
    int64_t calls = 0;
    ck_assert_int_eq(loom_profile_op(ctx, "contiguous", &calls, NULL, NULL), LOOM_OK);
    return calls;
}

/* A leaf's first gradient becomes its .grad without a copy when backward
 * made it and nothing else holds it (test_grad_owned checks the cases that
 * must still copy); it is then the leaf's own, safe to write in place, and
 * a second backward adds to it. */
START_TEST(test_first_grad_adopted)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *x = LEAF(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    loom_tensor *c = F32(ctx, LOOM_SHAPE(2, 3), 2, 2, 2, 3, 3, 3);
    ck_assert_int_eq(loom_profile_start(ctx), LOOM_OK);
    BACKWARD_OK(loom_sum(loom_mul(x, c), 0, NULL, false));
    ck_assert_int_eq(grad_copies(ctx), 0);
    EXPECT_GRAD(x, 0, 2, 2, 2, 3, 3, 3);
    ck_assert_int_eq(loom_tensor_assign(loom_tensor_grad(x), F32(ctx, LOOM_SHAPE(2, 3), 0, 1, 0, 1, 0, 1)), LOOM_OK);
    EXPECT_GRAD(x, 0, 0, 1, 0, 1, 0, 1);
    float cv[6];
    ck_assert_int_eq(loom_tensor_copy_to(c, cv, sizeof cv), LOOM_OK);
    ck_assert(cv[0] == 2 && cv[1] == 2 && cv[5] == 3); /* nothing else was written */
    BACKWARD_OK(loom_sum(loom_mul(x, c), 0, NULL, false));
    EXPECT_GRAD(x, 0, 2, 3, 2, 4, 3, 4);
    /* Two leaves fed one gradient: both copy. */
    ck_assert_int_eq(loom_profile_start(ctx), LOOM_OK);
    loom_tensor *x1 = LEAF(ctx, LOOM_SHAPE(3), 1, 2, 3), *x2 = LEAF(ctx, LOOM_SHAPE(3), 4, 5, 6);
    BACKWARD_OK(loom_sum(loom_mul(loom_add(x1, x2), F32(ctx, LOOM_SHAPE(3), 7, 8, 9)), 0, NULL, false));
    ck_assert_int_eq(grad_copies(ctx), 2);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_training_loop)
{
    /* y = 2 x0 - 3 x1 + 0.5, fitted by gradient descent on mean squared
     * error; one scope per step, parameters updated in place. */
    loom_ctx *ctx = cfg_ctx(_i);
    enum { N = 16 };
    float xv[N * 2], yv[N];
    for (int i = 0; i < N; i++) {
        xv[2 * i] = (float)hval(11, 2 * i, -1, 1);
        xv[2 * i + 1] = (float)hval(11, 2 * i + 1, -1, 1);
        yv[i] = 2 * xv[2 * i] - 3 * xv[2 * i + 1] + 0.5f;
    }
    loom_tensor *x = loom_tensor_from_array(ctx, LOOM_FLOAT32, xv, LOOM_SHAPE(N, 2));
    loom_tensor *y = loom_tensor_from_array(ctx, LOOM_FLOAT32, yv, LOOM_SHAPE(N, 1));
    loom_tensor *w = LEAF(ctx, LOOM_SHAPE(2, 1), 0, 0);
    loom_tensor *b = LEAF(ctx, LOOM_SHAPE(1), 0);
    int64_t base = live(ctx), base_bytes = live_bytes(ctx);
    double first = 0, last = 0;
    const double lr = 0.5;
    for (int step = 0; step < 50; step++) {
        ck_assert_int_eq(loom_scope_begin(ctx), LOOM_OK);
        loom_tensor *pred = loom_add(loom_matmul(x, w), b);
        loom_tensor *loss = loom_mean(loom_pow_scalar(loom_sub(pred, y), 2), 0, NULL, false);
        double lv;
        ck_assert_msg(loom_tensor_item(loss, &lv) == LOOM_OK, "%s", loom_last_error());
        if (step == 0) first = lv;
        last = lv;
        BACKWARD_OK(loss);
        loom_no_grad_begin(ctx);
        ck_assert_int_eq(loom_tensor_assign(w, loom_sub(w, loom_mul_scalar(loom_tensor_grad(w), lr))), LOOM_OK);
        ck_assert_int_eq(loom_tensor_assign(b, loom_sub(b, loom_mul_scalar(loom_tensor_grad(b), lr))), LOOM_OK);
        loom_no_grad_end(ctx);
        loom_tensor_zero_grad(w);
        loom_tensor_zero_grad(b);
        ck_assert_int_eq(loom_scope_end(ctx), LOOM_OK);
        ck_assert_msg(live(ctx) == base, "step %d: %lld live tensors, expected %lld", step, (long long)live(ctx),
                      (long long)base);
        ck_assert_msg(live_bytes(ctx) == base_bytes, "step %d: %lld live bytes, expected %lld", step,
                      (long long)live_bytes(ctx), (long long)base_bytes);
    }
    ck_assert(loom_grad_enabled(ctx));
    ck_assert_msg(first > 1.0, "initial loss %g", first);
    ck_assert_msg(last < 1e-3 * first, "loss %g after 50 steps (initial %g)", last, first);
    float wv[2], bv;
    ck_assert_int_eq(loom_tensor_copy_to(w, wv, sizeof wv), LOOM_OK);
    ck_assert_int_eq(loom_tensor_copy_to(b, &bv, sizeof bv), LOOM_OK);
    ck_assert_msg(fabs(wv[0] - 2) < 0.05 && fabs(wv[1] + 3) < 0.05 && fabs(bv - 0.5) < 0.05, "w = %g %g, b = %g",
                  wv[0], wv[1], bv);
    ck_assert(loom_tensor_requires_grad(w) && loom_tensor_is_leaf(w));
    loom_ctx_free(ctx);
}
END_TEST

/* Without zero_grad, the grads accumulated over steps are the leaf's only
 * extra tensors; backward temporaries never leak. */
START_TEST(test_backward_leaks_nothing)
{
    loom_ctx *ctx = test_ctx(2, NULL);
    loom_tensor *w = RLEAF(ctx, -1, 1, 1, 3, 3);
    loom_tensor *x = RCONST(ctx, -1, 1, 2, 4, 3);
    int64_t base = live(ctx);
    for (int step = 0; step < 5; step++) {
        loom_scope_begin(ctx);
        loom_tensor *h = loom_relu(loom_matmul(x, w));
        loom_tensor *l = loom_sum(loom_max(loom_cat((loom_tensor *[]){h, loom_exp(h)}, 2, 1), 1, false), 0, NULL,
                                  false);
        BACKWARD_OK(l);
        loom_scope_end(ctx);
        ck_assert_int_eq(live(ctx), base + 1); /* w's grad */
    }
    loom_tensor_zero_grad(w);
    ck_assert_int_eq(live(ctx), base);
    /* a leaf that dies with its scope takes its gradient along */
    loom_scope_begin(ctx);
    loom_tensor *tmp = RLEAF(ctx, -1, 1, 3, 2, 2);
    BACKWARD_OK(loom_sum(loom_exp(tmp), 0, NULL, false));
    ck_assert(loom_tensor_has_grad(tmp));
    loom_scope_end(ctx);
    ck_assert_int_eq(live(ctx), base);
    /* a graph abandoned without backward is freed with its scope */
    loom_scope_begin(ctx);
    loom_tensor *l = loom_sum(loom_tanh(loom_matmul(x, w)), 0, NULL, false);
    ck_assert_int_eq(loom_tensor_eval(l), LOOM_OK);
    loom_scope_end(ctx);
    ck_assert_int_eq(live(ctx), base);
    loom_ctx_free(ctx);
}
END_TEST

/* ---- determinism ------------------------------------------------------ */

enum { DM = 256, DK = 300, DN = 200 };

/* Gradients of sum((a @ b) * c) and of the broadcast bias in sum(tanh(a@b + bias)). */
static void det_grads(const char *backend, int threads, const float *av, const float *bv, const float *cv, float *ga,
                      float *gb, float *gbias)
{
    loom_ctx *ctx = test_ctx(threads, backend);
    loom_tensor *a = leaf(ctx, av, LOOM_SHAPE(DM, DK));
    loom_tensor *b = leaf(ctx, bv, LOOM_SHAPE(DK, DN));
    loom_tensor *c = loom_tensor_from_array(ctx, LOOM_FLOAT32, cv, LOOM_SHAPE(DM, DN));
    loom_tensor *bias = dleaf(ctx, LOOM_SHAPE(DN), 0.01, 0, 3);
    BACKWARD_OK(loom_sum(loom_mul(loom_matmul(a, b), c), 0, NULL, false));
    ck_assert_int_eq(loom_tensor_copy_to(loom_tensor_grad(a), ga, sizeof(float) * DM * DK), LOOM_OK);
    ck_assert_int_eq(loom_tensor_copy_to(loom_tensor_grad(b), gb, sizeof(float) * DK * DN), LOOM_OK);
    BACKWARD_OK(loom_sum(loom_tanh(loom_add(loom_matmul(a, b), bias)), 0, NULL, false));
    ck_assert_int_eq(loom_tensor_copy_to(loom_tensor_grad(bias), gbias, sizeof(float) * DN), LOOM_OK);
    loom_ctx_free(ctx);
}

START_TEST(test_deterministic)
{
    float *av = malloc(sizeof(float) * DM * DK), *bv = malloc(sizeof(float) * DK * DN);
    float *cv = malloc(sizeof(float) * DM * DN);
    ck_assert(av && bv && cv);
    for (int i = 0; i < DM * DK; i++) av[i] = (float)hval(1, i, -1, 1);
    for (int i = 0; i < DK * DN; i++) bv[i] = (float)hval(2, i, -1, 1) * 0.1f;
    for (int i = 0; i < DM * DN; i++) cv[i] = (float)hval(3, i, -1, 1);
    static const struct {
        const char *backend;
        int threads;
    } cfgs[] = {{NULL, 1}, {NULL, 2}, {"ref", 1}, {"ref", 2}};
    enum { NC = sizeof cfgs / sizeof cfgs[0] };
    float *ga[NC], *gb[NC], *gbias[NC];
    for (int k = 0; k < NC; k++) {
        ga[k] = malloc(sizeof(float) * DM * DK);
        gb[k] = malloc(sizeof(float) * DK * DN);
        gbias[k] = malloc(sizeof(float) * DN);
        ck_assert(ga[k] && gb[k] && gbias[k]);
        det_grads(cfgs[k].backend, cfgs[k].threads, av, bv, cv, ga[k], gb[k], gbias[k]);
    }
    /* bitwise: 1 vs 2 threads, for the default backend and for "ref" */
    for (int k = 0; k < NC; k += 2) {
        ck_assert_msg(memcmp(ga[k], ga[k + 1], sizeof(float) * DM * DK) == 0, "grad a differs, 1 vs 2 threads (%s)",
                      cfgs[k].backend ? cfgs[k].backend : "auto");
        ck_assert_msg(memcmp(gb[k], gb[k + 1], sizeof(float) * DK * DN) == 0, "grad b differs, 1 vs 2 threads (%s)",
                      cfgs[k].backend ? cfgs[k].backend : "auto");
        ck_assert_msg(memcmp(gbias[k], gbias[k + 1], sizeof(float) * DN) == 0,
                      "grad bias differs, 1 vs 2 threads (%s)", cfgs[k].backend ? cfgs[k].backend : "auto");
    }
    /* the values are right (against double references): ga = c b^T,
     * gb = a^T c; the default and "ref" backends agree closely */
    for (int i = 0; i < DM; i += 7)
        for (int k = 0; k < DK; k += 5) {
            double s = 0, sa = 0;
            for (int j = 0; j < DN; j++) {
                s += (double)cv[i * DN + j] * bv[k * DN + j];
                sa += fabs((double)cv[i * DN + j] * bv[k * DN + j]);
            }
            for (int c = 0; c < NC; c++)
                ck_assert_msg(fabs(ga[c][i * DK + k] - s) <= 3e-5 * sa + 1e-6, "grad a[%d][%d] = %.9g, expected %.9g",
                              i, k, ga[c][i * DK + k], s);
        }
    for (int k = 0; k < DK; k += 3)
        for (int j = 0; j < DN; j += 7) {
            double s = 0, sa = 0;
            for (int i = 0; i < DM; i++) {
                s += (double)av[i * DK + k] * cv[i * DN + j];
                sa += fabs((double)av[i * DK + k] * cv[i * DN + j]);
            }
            for (int c = 0; c < NC; c++)
                ck_assert_msg(fabs(gb[c][k * DN + j] - s) <= 3e-5 * sa + 1e-6, "grad b[%d][%d] = %.9g, expected %.9g",
                              k, j, gb[c][k * DN + j], s);
        }
    for (int j = 0; j < DN; j++)
        for (int c = 1; c < NC; c++)
            ck_assert_msg(fabs(gbias[c][j] - gbias[0][j]) <= 1e-4 * (1 + fabs(gbias[0][j])), "grad bias[%d]: %g vs %g",
                          j, gbias[c][j], gbias[0][j]);
    for (int k = 0; k < NC; k++) {
        free(ga[k]);
        free(gb[k]);
        free(gbias[k]);
    }
    free(av);
    free(bv);
    free(cv);
}
END_TEST

/* Gradients of slices are assembled (graph/autograd.c): disjoint slices
 * along one dim are concatenated with zeros in the gaps, overlapping ones
 * or slices along two dims are summed; selects count as slices; stepped
 * slices take the ordinary rule. Every case against hand-computed values:
 * x [4, 3] = 0..11, loss = sum of w_k * (piece k), w_k = k + 1. */
START_TEST(test_slice_gradients_assembled)
{
    loom_ctx *ctx = cfg_ctx(_i);
    for (int c = 0; c < 4; c++) {
        loom_tensor *x = F32(ctx, LOOM_SHAPE(4, 3), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
        ck_assert_int_eq(loom_tensor_set_requires_grad(x, true), LOOM_OK);
        loom_tensor *p[4] = {NULL, NULL, NULL, NULL};
        float want[12] = {0};
        switch (c) {
        case 0: /* rows 3 and 0 (selects, out of order), rows 1..2 untouched: zeros */
            p[0] = loom_select(x, 0, 3);
            p[1] = loom_select(x, 0, 0);
            for (int j = 0; j < 3; j++) want[9 + j] = 1, want[j] = 2;
            break;
        case 1: /* columns [0,1) and [1,3): a full cover along dim 1 */
            p[0] = loom_slice(x, 1, 1, 3, 1);
            p[1] = loom_slice(x, 1, 0, 1, 1);
            for (int r = 0; r < 4; r++) want[r * 3] = 2, want[r * 3 + 1] = want[r * 3 + 2] = 1;
            break;
        case 2: /* overlapping rows [0,3) and [2,4): summed where they overlap */
            p[0] = loom_slice(x, 0, 0, 3, 1);
            p[1] = loom_slice(x, 0, 2, 4, 1);
            for (int i = 0; i < 12; i++) want[i] = (i < 9 ? 1 : 0) + (i >= 6 ? 2 : 0);
            break;
        default: /* a row, a column, a stepped slice and x itself */
            p[0] = loom_select(x, 0, 1);
            p[1] = loom_select(x, 1, 2);
            p[2] = loom_slice(x, 0, 0, 4, 2);
            p[3] = x;
            for (int i = 0; i < 12; i++)
                want[i] = (i / 3 == 1 ? 1 : 0) + (i % 3 == 2 ? 2 : 0) + ((i / 3) % 2 == 0 ? 3 : 0) + 4;
            break;
        }
        loom_tensor *loss = NULL;
        for (int k = 0; k < 4 && p[k]; k++) {
            loom_tensor *term = loom_mul_scalar(loom_sum(p[k], 0, NULL, false), k + 1);
            loss = loss ? loom_add(loss, term) : term;
        }
        ck_assert_int_eq(loom_backward(loss, NULL, NULL), LOOM_OK);
        assert_values_f32(loom_tensor_grad(x), want, 12, 0);
    }
    loom_ctx_free(ctx);
}
END_TEST

/* A weight used by several 2-D matmuls (a recurrent layer's steps) gets
 * its gradient from one product of concatenations (graph/autograd.c,
 * matmul pieces), together with a slice piece of the same weight; the
 * left operands' gradients are unchanged. Hand-computed, exact: w [2, 2],
 * y_k = a_k @ w with a_k of 3, 1 and 2 rows, loss = sum_k (k+1) sum(y_k)
 * + 10 sum(w[0, :]); dw[i][j] = sum_k (k+1) colsum_i(a_k) + 10 [i == 0],
 * da_k[r][i] = (k+1) (w[i][0] + w[i][1]). */
/* Slices of a permuted tensor: their gradients pass through the permute
 * as pieces of its input (graph/autograd.c), so x's gradient is assembled
 * once in x's layout, with no transposed copy. x [2, 3, 4]; y = x^T(0,1)
 * [3, 2, 4]; loss = sum(y[:, 1, :] * w) + 2 * sum(y[1:3, 0, 0:2]):
 * dx[1, i, k] = w[i, k]; dx[0, i, k] = 2 for i in 1..2, k in 0..1. A
 * second use of y whole (overlapping) falls back to the summed form. Also
 * loom_profile_op's lookups. */
START_TEST(test_permute_pieces)
{
    loom_ctx *ctx = cfg_ctx(_i % NCFG);
    const bool whole = _i >= NCFG;
    float xv[24], wv[12];
    for (int i = 0; i < 24; i++) xv[i] = (float)i;
    for (int i = 0; i < 12; i++) wv[i] = (float)(i + 1);
    loom_tensor *x = loom_tensor_from_array(ctx, LOOM_FLOAT32, xv, LOOM_SHAPE(2, 3, 4));
    loom_tensor *w = loom_tensor_from_array(ctx, LOOM_FLOAT32, wv, LOOM_SHAPE(3, 4));
    ck_assert_int_eq(loom_tensor_set_requires_grad(x, true), LOOM_OK);
    loom_tensor *y = loom_transpose(x, 0, 1);
    loom_tensor *loss = loom_sum(loom_mul(loom_select(y, 1, 1), w), 0, NULL, false);
    loom_tensor *part = loom_slice(loom_slice(loom_select(y, 1, 0), 0, 1, 3, 1), 1, 0, 2, 1);
    loss = loom_add(loss, loom_mul_scalar(loom_sum(part, 0, NULL, false), 2));
    if (whole) loss = loom_add(loss, loom_sum(y, 0, NULL, false)); /* +1 everywhere */
    ck_assert_int_eq(loom_profile_start(ctx), LOOM_OK);
    ck_assert_int_eq(loom_backward(loss, NULL, NULL), LOOM_OK);
    float want[24];
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 4; k++) {
            want[0 * 12 + i * 4 + k] = (i >= 1 && k < 2 ? 2.0f : 0.0f) + (whole ? 1.0f : 0.0f);
            want[1 * 12 + i * 4 + k] = wv[i * 4 + k] + (whole ? 1.0f : 0.0f);
        }
    assert_values_f32(loom_tensor_grad(x), want, 24, 0.0);
    int64_t calls = -1;
    ck_assert_int_eq(loom_profile_op(ctx, "cat", &calls, NULL, NULL), LOOM_OK);
    ck_assert_int_ge(calls, 1); /* the pieces were concatenated */
    ck_assert_int_eq(loom_profile_op(ctx, "no_such_op", NULL, NULL, NULL), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "no op named"));
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_matmul_gradients_assembled)
{
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *w = F32(ctx, LOOM_SHAPE(2, 2), 1, 2, 3, 4);
    loom_tensor *a[3] = {F32(ctx, LOOM_SHAPE(3, 2), 1, 0, 2, 1, 0, 3), F32(ctx, LOOM_SHAPE(1, 2), 5, 6),
                         F32(ctx, LOOM_SHAPE(2, 2), 1, 1, 2, 2)};
    ck_assert_int_eq(loom_tensor_set_requires_grad(w, true), LOOM_OK);
    for (int k = 0; k < 3; k++) ck_assert_int_eq(loom_tensor_set_requires_grad(a[k], true), LOOM_OK);
    loom_tensor *loss = loom_mul_scalar(loom_sum(loom_select(w, 0, 0), 0, NULL, false), 10);
    for (int k = 0; k < 3; k++)
        loss = loom_add(loss, loom_mul_scalar(loom_sum(loom_matmul(a[k], w), 0, NULL, false), k + 1));
    ck_assert_int_eq(loom_backward(loss, NULL, NULL), LOOM_OK);
    /* colsums: a0 (3, 4), a1 (5, 6), a2 (3, 3): dw row i = 1*c0_i + 2*c1_i + 3*c2_i (+10 on row 0) */
    EXPECT_F32(loom_tensor_grad(w), 0, 3 + 10 + 9 + 10, 3 + 10 + 9 + 10, 4 + 12 + 9, 4 + 12 + 9);
    EXPECT_F32(loom_tensor_grad(a[0]), 0, 3, 7, 3, 7, 3, 7);
    EXPECT_F32(loom_tensor_grad(a[1]), 0, 6, 14);
    EXPECT_F32(loom_tensor_grad(a[2]), 0, 9, 21, 9, 21);
    loom_ctx_free(ctx);
}
END_TEST

Suite *loom_suite_autograd(void)
{
    Suite *s = suite_create("autograd");

    TCase *tc = test_tcase(s, "gradcheck", 120);
    tcase_add_loop_test(tc, test_gc_binary, 0, NCFG);
    tcase_add_loop_test(tc, test_gc_broadcast, 0, NCFG);
    tcase_add_loop_test(tc, test_gc_unary, 0, NCFG);
    tcase_add_loop_test(tc, test_gc_matmul, 0, NCFG);
    tcase_add_loop_test(tc, test_gc_reduce, 0, NCFG);
    tcase_add_loop_test(tc, test_gc_views, 0, NCFG);
    tcase_add_loop_test(tc, test_gc_join_index, 0, NCFG);
    tcase_add_loop_test(tc, test_gc_noncontiguous, 0, NCFG);
    tcase_add_test(tc, test_gc_detects_errors);

    tc = test_tcase(s, "hand", 60);
    tcase_add_loop_test(tc, test_hand_square, 0, NCFG);
    tcase_add_loop_test(tc, test_hand_linear_regression, 0, NCFG);
    tcase_add_loop_test(tc, test_hand_broadcast, 0, NCFG);
    tcase_add_loop_test(tc, test_hand_views_index, 0, NCFG);
    tcase_add_loop_test(tc, test_hand_ties, 0, NCFG);

    tc = test_tcase(s, "semantics", 60);
    tcase_add_loop_test(tc, test_accumulate, 0, NCFG);
    tcase_add_loop_test(tc, test_slice_gradients_assembled, 0, NCFG);
    tcase_add_loop_test(tc, test_matmul_gradients_assembled, 0, NCFG);
    tcase_add_loop_test(tc, test_permute_pieces, 0, 2 * NCFG);
    tcase_add_test(tc, test_freed_graph);
    tcase_add_loop_test(tc, test_backward_args, 0, NCFG);
    tcase_add_test(tc, test_no_grad);
    tcase_add_test(tc, test_detach);
    tcase_add_test(tc, test_leaves_and_dtypes);
    tcase_add_loop_test(tc, test_assign, 0, NCFG);
    tcase_add_test(tc, test_assign_many_inputs);
    tcase_add_test(tc, test_assign_saved_output);
    tcase_add_loop_test(tc, test_edge_cases, 0, NCFG);
    tcase_add_test(tc, test_empty_reduce);
    tcase_add_loop_test(tc, test_grad_owned, 0, NCFG);
    tcase_add_loop_test(tc, test_first_grad_adopted, 0, NCFG);
    tcase_add_loop_test(tc, test_training_loop, 0, NCFG);
    tcase_add_test(tc, test_backward_leaks_nothing);

    tc = test_tcase(s, "deterministic", 300);
    tcase_add_test(tc, test_deterministic);
    return s;
}
