/*
 * tests/check_layout.c - blocked layouts kept between nodes
 * (backends/kernel.h, graph/eval.c).
 *
 * The portable conversions against the layouts' index formulas; then, with
 * oneDNN, small networks run several ways - "auto" (conv, pooling, batch
 * norm and elementwise nodes pass nChw8c/16c tensors to each other), "auto"
 * with LOOM_KEEP_BLOCKED=0 (every node reads and writes plain), "ref", and
 * for training also "onednn" (oneDNN's batch norm on blocked data) - must
 * agree, forward and backward, including the paths where a blocked tensor
 * meets a kernel or view that needs plain data: a slice, a flatten, a
 * broadcast add, an add of a blocked and a plain tensor, the user reading
 * an intermediate after its consumers ran. The test also checks, through
 * the internal storage, that the intermediates really were blocked (so the
 * comparison is not vacuous), and that a training step with blocked layouts
 * is bitwise the same run after run.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/check_suites.h"

#include "backends/kernel.h"
#include "graph/eval.h"
#include "graph/tensor_impl.h"

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s * 2654435761u + 1; }
static float unit(void) /* [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)((uint32_t)(rng_state >> 33) & 0xFFFFFF) / (1 << 23) - 1.0);
}

static float *rand_buf(int64_t n, float scale)
{
    float *p = malloc(sizeof(float) * (size_t)n);
    ck_assert(p);
    for (int64_t i = 0; i < n; i++) p[i] = scale * unit();
    return p;
}

/* ---- the conversions -------------------------------------------------------------- */

START_TEST(test_convert)
{
    const int layouts[2] = {LOOM__LAYOUT_NCHW8C, LOOM__LAYOUT_NCHW16C};
    const int64_t dims[4] = {3, 32, 5, 7}, n = 3 * 32 * 5 * 7;
    rng_seed(7);
    float *plain = rand_buf(n, 1), *blk = malloc(sizeof(float) * n), *back = malloc(sizeof(float) * n);
    ck_assert(blk && back);
    for (int li = 0; li < 2; li++) {
        const int B = loom__layout_block(layouts[li]);
        for (int threads = 1; threads <= 2; threads++) {
            loom__layout_from_plain(plain, blk, layouts[li], dims, threads);
            for (int64_t i = 0; i < n; i++) {
                const int64_t w = i % 7, h = i / 7 % 5, c = i / 35 % 32, b = i / (35 * 32);
                const int64_t at = (((b * (32 / B) + c / B) * 5 + h) * 7 + w) * B + c % B;
                ck_assert_msg(blk[at] == plain[i], "block %d: element %lld misplaced", B, (long long)i);
            }
            memset(back, 0, sizeof(float) * n);
            loom__layout_to_plain(blk, back, layouts[li], dims, threads);
            ck_assert(memcmp(back, plain, sizeof(float) * n) == 0);
        }
    }
    free(plain), free(blk), free(back);
}
END_TEST

#ifdef LOOM_HAVE_ONEDNN

/* A context for one of the ways: 0 auto, 1 auto with plain layouts only,
 * 2 ref, 3 onednn (oneDNN's batch norm and eltwise on blocked data too). */
static loom_ctx *way_ctx(int way)
{
    static const char *const backends[] = {"auto", "auto", "ref", "onednn"};
    if (way == 1) setenv("LOOM_KEEP_BLOCKED", "0", 1);
    loom_ctx *ctx = test_ctx(2, backends[way]);
    unsetenv("LOOM_KEEP_BLOCKED");
    return ctx;
}

static bool blocked(const loom_tensor *t) { return t->storage->layout != LOOM__LAYOUT_PLAIN; }

/* Appends t's values to out at *k. */
static void take(loom_tensor *t, float *out, int64_t *k)
{
    float *v = copy_out_f32(t);
    const int64_t m = loom_tensor_numel(t);
    memcpy(out + *k, v, sizeof(float) * (size_t)m);
    *k += m;
    free(v);
}

/* Forward only: a conv chain with a residual add, pooling and the
 * conversions' paths. Returns how many intermediates were blocked before
 * anything read them. */
static int forward_chain(int way, float *out, int64_t *nout)
{
    loom_ctx *ctx = way_ctx(way);
    rng_seed(11);
    const int64_t xs[4] = {2, 8, 11, 9}, w1s[4] = {16, 8, 3, 3}, w2s[4] = {16, 16, 1, 1}, w3s[4] = {8, 16, 3, 3},
                  bs[1] = {16}, cs[4] = {1, 16, 1, 1};
    float *xv = rand_buf(2 * 8 * 11 * 9, 1), *w1v = rand_buf(16 * 8 * 9, 0.3f), *w2v = rand_buf(16 * 16, 0.3f),
          *w3v = rand_buf(8 * 16 * 9, 0.3f), *bv = rand_buf(16, 0.1f), *cv = rand_buf(16, 1),
          *pv = rand_buf(2 * 16 * 11 * 9, 1);
    loom_tensor *x = loom_tensor_from_array(ctx, LOOM_FLOAT32, xv, 4, xs);
    loom_tensor *w1 = loom_tensor_from_array(ctx, LOOM_FLOAT32, w1v, 4, w1s);
    loom_tensor *w2 = loom_tensor_from_array(ctx, LOOM_FLOAT32, w2v, 4, w2s);
    loom_tensor *w3 = loom_tensor_from_array(ctx, LOOM_FLOAT32, w3v, 4, w3s);
    loom_tensor *b = loom_tensor_from_array(ctx, LOOM_FLOAT32, bv, 1, bs);
    loom_tensor *cb = loom_tensor_from_array(ctx, LOOM_FLOAT32, cv, 4, cs);
    const int64_t hs[4] = {2, 16, 11, 9};
    loom_tensor *plain = loom_tensor_from_array(ctx, LOOM_FLOAT32, pv, 4, hs);

    loom_conv2d_opts pad1 = {.padding = {1, 1}}, one = {0};
    loom_tensor *h1 = loom_relu(loom_conv2d(x, w1, b, &pad1)); /* [2,16,11,9] */
    loom_tensor *h2 = loom_conv2d(h1, w2, NULL, &one);         /* 1x1 on blocked data */
    loom_tensor *r = loom_relu(loom_add(h2, h1));              /* same-layout add */
    loom_pool2d_opts mp = {.kernel = {2, 2}, .ceil_mode = true};
    loom_tensor *p = loom_max_pool2d(r, &mp);      /* [2,16,6,5] */
    loom_tensor *y = loom_conv2d(p, w3, NULL, &pad1); /* [2,8,6,5] */
    loom_tensor *f = loom_flatten(y, 1, 3);        /* a view of a blocked storage */
    loom_tensor *sl = loom_slice(h2, 1, 3, 7, 1);  /* part of one */
    loom_tensor *bc = loom_add(h2, cb);            /* broadcast: needs plain */
    loom_tensor *mx = loom_add(r, plain);          /* blocked + plain */
    ck_assert_msg(f && sl && bc && mx, "%s", loom_last_error());

    loom_tensor *roots[4] = {f, loom_sum(sl, 0, NULL, false), bc, mx};
    /* Compute everything, then look at the storages before any read. */
    for (int i = 0; i < 4; i++) ck_assert_msg(loom_tensor_compute(roots[i]) == LOOM_OK, "%s", loom_last_error());
    int nblocked = blocked(h1) + blocked(h2) + blocked(r) + blocked(p) + blocked(y);
    int64_t k = 0;
    for (int i = 0; i < 4; i++) take(roots[i], out, &k);
    take(h1, out, &k); /* read after its consumers ran */
    take(p, out, &k);
    *nout = k;
    free(xv), free(w1v), free(w2v), free(w3v), free(bv), free(cv), free(pv);
    loom_ctx_free(ctx);
    return nblocked;
}

static void agree(const char *what, const float *a, const float *b, int64_t n, double tol)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(a[i] - b[i]) <= tol * fmax(1.0, fabs(b[i]))))
            ck_abort_msg("%s: value %lld is %.9g, expected %.9g", what, (long long)i, a[i], b[i]);
}

START_TEST(test_forward_chain)
{
    enum { MAXN = 8 * 6 * 5 * 2 + 1 + 3 * 2 * 16 * 11 * 9 + 2 * 16 * 6 * 5 };
    static float keep[MAXN], plain[MAXN], ref[MAXN];
    int64_t nk, np, nr;
    const int nb = forward_chain(0, keep, &nk);
    ck_assert_msg(nb >= 4, "only %d of 5 intermediates were left blocked", nb);
    ck_assert_int_eq(forward_chain(1, plain, &np), 0);
    ck_assert_int_eq(forward_chain(2, ref, &nr), 0);
    ck_assert_int_eq(nk, nr);
    ck_assert_int_eq(np, nr);
    agree("blocked vs ref", keep, ref, nr, 1e-4);
    agree("plain vs ref", plain, ref, nr, 1e-4);
}
END_TEST

/* A training step through conv, batch norm, relu, a residual add, 2x2 max
 * pooling (ref's blocked kernel), a linear layer and cross-entropy; returns
 * the loss and every gradient, for hw x hw images: at 16 ref's
 * backward-weight takes its per-image path (P = 256), at 12 its path for
 * small images (groups of images side by side). */
static int train_step(int way, int64_t hw, float *out, int64_t *nout)
{
    loom_ctx *ctx = way_ctx(way);
    rng_seed(23);
    const int64_t xs[4] = {4, 3, hw, hw}, w1s[4] = {16, 3, 3, 3}, w2s[4] = {16, 16, 3, 3}, ws3[4] = {16, 16, 1, 1},
                  fs[2] = {16 * (hw / 2) * (hw / 2), 5}, gs[1] = {16};
    float *xv = rand_buf(4 * 3 * hw * hw, 1), *w1v = rand_buf(16 * 27, 0.3f), *w2v = rand_buf(16 * 16 * 9, 0.1f),
          *w3v = rand_buf(256, 0.2f), *fv = rand_buf(16 * (hw / 2) * (hw / 2) * 5, 0.05f), *gv = rand_buf(16, 0.2f),
          *bev = rand_buf(16, 0.2f);
    for (int i = 0; i < 16; i++) gv[i] += 1.0f;
    loom_tensor *x = loom_tensor_from_array(ctx, LOOM_FLOAT32, xv, 4, xs);
    loom_tensor *w1 = leaf(ctx, w1v, 4, w1s), *w2 = leaf(ctx, w2v, 4, w2s), *w3 = leaf(ctx, w3v, 4, ws3);
    loom_tensor *fc = leaf(ctx, fv, 2, fs), *g = leaf(ctx, gv, 1, gs), *be = leaf(ctx, bev, 1, gs);
    loom_tensor *b2 = leaf(ctx, bev, 1, gs);
    const int64_t labels_v[4] = {0, 3, 1, 4}, ls[1] = {4};
    loom_tensor *labels = loom_tensor_from_array(ctx, LOOM_INT64, labels_v, 1, ls);

    loom_conv2d_opts pad1 = {.padding = {1, 1}}, one = {0};
    loom_tensor *a = loom_conv2d(x, w1, NULL, &pad1);
    loom_tensor *h = loom_relu(loom_batch_norm(a, NULL, NULL, g, be, true, 0.1, 1e-5));
    loom_tensor *c = loom_conv2d(h, w2, b2, &pad1); /* its bias gradient: a sum of blocked dy */
    loom_tensor *r = loom_relu(loom_add(loom_conv2d(c, w3, NULL, &one), h));
    loom_pool2d_opts mp = {.kernel = {2, 2}};
    loom_tensor *p = loom_max_pool2d(r, &mp);
    loom_tensor *logits = loom_matmul(loom_flatten(p, 1, 3), fc);
    loom_tensor *loss = loom_cross_entropy_loss(logits, labels, LOOM_REDUCTION_MEAN);
    ck_assert_msg(loss != NULL, "%s", loom_last_error());
    ck_assert_msg(loom_backward(loss, NULL, NULL) == LOOM_OK, "%s", loom_last_error());
    const int nblocked = blocked(a) + blocked(h) + blocked(c) + blocked(r);
    loom_tensor *parts[6] = {loss, loom_tensor_grad(w1), loom_tensor_grad(w2), loom_tensor_grad(w3),
                             loom_tensor_grad(fc), loom_tensor_grad(g)};
    int64_t k = 0;
    for (int i = 0; i < 6; i++) take(parts[i], out, &k);
    take(loom_tensor_grad(be), out, &k);
    take(loom_tensor_grad(b2), out, &k);
    *nout = k;
    free(xv), free(w1v), free(w2v), free(w3v), free(fv), free(gv), free(bev);
    loom_ctx_free(ctx);
    return nblocked;
}

START_TEST(test_train_step)
{
    enum { MAXN = 1 + 16 * 27 + 16 * 16 * 9 + 256 + 16 * 64 * 5 + 48 };
    static float keep[MAXN], again[MAXN], plain[MAXN], ref[MAXN], dnn[MAXN];
    int64_t nk, na, np, nr, nd;
    const int64_t hw = _i ? 16 : 12;
    const int nb = train_step(0, hw, keep, &nk);
    ck_assert_msg(nb >= 3, "only %d of 4 intermediates were left blocked", nb);
    train_step(0, hw, again, &na);
    ck_assert_int_eq(nk, na);
    ck_assert_msg(memcmp(keep, again, sizeof(float) * (size_t)nk) == 0, "two runs differ");
    train_step(1, hw, plain, &np);
    train_step(2, hw, ref, &nr);
    ck_assert_msg(train_step(3, hw, dnn, &nd) >= 3, "onednn: intermediates not blocked");
    ck_assert_int_eq(nk, nr);
    ck_assert_int_eq(nd, nr);
    agree("blocked vs ref", keep, ref, nr, 5e-4);
    agree("plain vs ref", plain, ref, nr, 5e-4);
    agree("onednn vs ref", dnn, ref, nr, 5e-4);
}
END_TEST

/* loom_tensor_compute leaves a oneDNN node's output blocked, and so does a
 * backward from that output given a gradient (the rules read it as it is);
 * reading it afterwards still gives the plain values. Under ref nothing is
 * blocked and the values agree. */
static void compute_then_backward(int way, float *out, int64_t *nout, bool *kept)
{
    loom_ctx *ctx = way_ctx(way);
    rng_seed(31);
    const int64_t xs[4] = {2, 8, 10, 10}, ws[4] = {16, 8, 3, 3}, ys[4] = {2, 16, 8, 8};
    float *xv = rand_buf(2 * 8 * 100, 1), *wv = rand_buf(16 * 8 * 9, 0.3f), *gv = rand_buf(2 * 16 * 64, 1);
    loom_tensor *x = loom_tensor_from_array(ctx, LOOM_FLOAT32, xv, 4, xs);
    loom_tensor *w = loom_tensor_from_array(ctx, LOOM_FLOAT32, wv, 4, ws);
    loom_tensor *g = loom_tensor_from_array(ctx, LOOM_FLOAT32, gv, 4, ys);
    ck_assert_int_eq(loom_tensor_set_requires_grad(w, true), LOOM_OK);
    loom_tensor *y = loom_conv2d(x, w, NULL, &(loom_conv2d_opts){0});
    ck_assert_msg(y && loom_tensor_compute(y) == LOOM_OK, "%s", loom_last_error());
    kept[0] = blocked(y);
    ck_assert_msg(loom_backward(y, g, NULL) == LOOM_OK, "%s", loom_last_error());
    kept[1] = blocked(y);
    int64_t k = 0;
    take(y, out, &k);
    take(loom_tensor_grad(w), out, &k);
    *nout = k;
    ck_assert(!blocked(y)); /* read: now plain */
    free(xv), free(wv), free(gv);
    loom_ctx_free(ctx);
}

START_TEST(test_compute_keeps_layout)
{
    enum { MAXN = 2 * 16 * 64 + 16 * 8 * 9 };
    static float keep[MAXN], ref[MAXN];
    int64_t nk, nr;
    bool kept[2], ref_kept[2];
    compute_then_backward(0, keep, &nk, kept);
    compute_then_backward(2, ref, &nr, ref_kept);
    ck_assert_msg(kept[0], "loom_tensor_compute converted the output to plain");
    ck_assert_msg(kept[1], "loom_backward converted its root to plain");
    ck_assert(!ref_kept[0] && !ref_kept[1]);
    ck_assert_int_eq(nk, nr);
    agree("compute vs ref", keep, ref, nr, 1e-4);
    /* NULL: an error, or the earlier one kept. */
    loom_clear_error();
    ck_assert_int_eq(loom_tensor_compute(NULL), LOOM_ERR_INVALID_ARG);
}
END_TEST

/* The trace names the layout each node wrote. */
static bool trace_has_blocked(int way)
{
    loom_ctx *ctx = way_ctx(way);
    char path[] = "/tmp/loom-layout-trace-XXXXXX";
    const int fd = mkstemp(path);
    ck_assert(fd >= 0);
    close(fd);
    ck_assert(loom_trace_start(ctx) == LOOM_OK);
    const int64_t xs[4] = {2, 8, 10, 10}, ws[4] = {16, 8, 3, 3};
    loom_tensor *y = loom_relu(loom_conv2d(loom_rand(ctx, 4, xs), loom_rand(ctx, 4, ws), NULL,
                                           &(loom_conv2d_opts){.padding = {1, 1}}));
    ck_assert_msg(loom_tensor_eval(y) == LOOM_OK, "%s", loom_last_error());
    ck_assert_msg(loom_trace_stop(ctx, path) == LOOM_OK, "%s", loom_last_error());
    FILE *f = fopen(path, "r");
    ck_assert(f);
    static char buf[1 << 16];
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(path);
    ck_assert_msg(strstr(buf, "\"layout\": \"plain\"") || strstr(buf, "\"layout\": \"nChw"), "%s", buf);
    loom_ctx_free(ctx);
    return strstr(buf, "\"layout\": \"nChw") != NULL;
}

START_TEST(test_trace_layout)
{
    ck_assert(trace_has_blocked(0));
    ck_assert(!trace_has_blocked(1));
}
END_TEST

#endif /* LOOM_HAVE_ONEDNN */

Suite *loom_suite_layout(void)
{
    Suite *s = suite_create("layout");
    TCase *tc = tcase_create("layout");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_convert);
#ifdef LOOM_HAVE_ONEDNN
    tcase_add_test(tc, test_forward_chain);
    tcase_add_loop_test(tc, test_train_step, 0, 2);
    tcase_add_test(tc, test_trace_layout);
    tcase_add_test(tc, test_compute_keeps_layout);
#endif
    suite_add_tcase(s, tc);
    return s;
}
