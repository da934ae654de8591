/*
 * ops/pool.c - 2-D max, average and adaptive average pooling
 * (torch.nn.functional.max_pool2d, avg_pool2d, adaptive_avg_pool2d) and
 * their gradients.
 *
 * x [N, C, H, W] -> [N, C, OH, OW]. Output sizes follow PyTorch exactly,
 * ceil_mode included: OH = floor_or_ceil((H + 2*pad - k) / stride) + 1, and
 * in ceil mode the last window must start inside the input or the left
 * padding. Max-pool's backward recomputes each window's argmax from x
 * instead of saving indices: one output per node, and the recomputation is
 * a read of x that the backward does anyway.
 */
#include <string.h>

#include "ops/cnn_common.h"

static int64_t pool_out(int64_t in, int k, int s, int p, bool ceil_mode)
{
    int64_t num = in + 2 * (int64_t)p - k;
    if (num < 0) return 0;
    int64_t o = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--;
    return o;
}

static bool check_x(const char *op, loom_tensor *x)
{
    if (!loom__check_inputs(op, 1, &x) || !loom__want_float(op, "input", x)) return false;
    if (x->ndim != 4) {
        char s[LOOM__SHAPE_STR_MAX];
        loom__set_error(LOOM_ERR_SHAPE, "%s: input must be 4-D [N, C, H, W], got %s", op,
                        loom__shape_str(s, sizeof s, x));
        return false;
    }
    return true;
}

static loom_tensor *pool(const char *op, loom__op kop, loom_tensor *x, const loom_pool2d_opts *o)
{
    if (!check_x(op, x)) return NULL;
    if (!o) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: options with a kernel size are required", op);
        return NULL;
    }
    loom__attrs a;
    memset(&a, 0, sizeof a);
    int64_t out[2];
    for (int i = 0; i < 2; i++) {
        int k = o->kernel[i], s = o->stride[i] ? o->stride[i] : o->kernel[i], p = o->padding[i];
        if (k < 1 || s < 1 || p < 0) {
            loom__set_error(LOOM_ERR_INVALID_ARG,
                            "%s: kernel (%d, %d) and stride (%d, %d) must be positive, padding (%d, %d) not negative",
                            op, o->kernel[0], o->kernel[1], o->stride[0], o->stride[1], o->padding[0], o->padding[1]);
            return NULL;
        }
        if (2 * p > k) {
            loom__set_error(LOOM_ERR_INVALID_ARG, "%s: padding (%d, %d) must be at most half the kernel (%d, %d)", op,
                            o->padding[0], o->padding[1], o->kernel[0], o->kernel[1]);
            return NULL;
        }
        a.pool.kernel[i] = k;
        a.pool.stride[i] = s;
        a.pool.pad[i] = p;
        out[i] = pool_out(x->shape[2 + i], k, s, p, o->ceil_mode);
    }
    if (out[0] < 1 || out[1] < 1) {
        char sh[LOOM__SHAPE_STR_MAX];
        loom__set_error(LOOM_ERR_SHAPE, "%s: input %s padded by (%d, %d) is smaller than the kernel (%d, %d)", op,
                        loom__shape_str(sh, sizeof sh, x), o->padding[0], o->padding[1], o->kernel[0], o->kernel[1]);
        return NULL;
    }
    a.pool.ceil_mode = o->ceil_mode;
    a.pool.count_include_pad = !o->exclude_pad;
    int64_t shape[4] = {x->shape[0], x->shape[1], out[0], out[1]};
    return loom__record_contig(kop, &a, 1, &x, 4, shape);
}

loom_tensor *loom_max_pool2d(loom_tensor *x, const loom_pool2d_opts *opts)
{
    return pool("max_pool2d", LOOM_OP_MAX_POOL2D, x, opts);
}

loom_tensor *loom_avg_pool2d(loom_tensor *x, const loom_pool2d_opts *opts)
{
    return pool("avg_pool2d", LOOM_OP_AVG_POOL2D, x, opts);
}

loom_tensor *loom_adaptive_avg_pool2d(loom_tensor *x, int64_t out_h, int64_t out_w)
{
    const char *op = "adaptive_avg_pool2d";
    if (!check_x(op, x)) return NULL;
    if (out_h < 1 || out_w < 1) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: output size (%lld, %lld) must be positive", op, (long long)out_h,
                        (long long)out_w);
        return NULL;
    }
    int64_t H = x->shape[2], W = x->shape[3];
    if (H % out_h == 0 && W % out_w == 0 && H / out_h <= INT32_MAX && W / out_w <= INT32_MAX) {
        /* Equal windows: an ordinary average pool (which oneDNN runs). */
        int kh = (int)(H / out_h), kw = (int)(W / out_w);
        loom_pool2d_opts o = {.kernel = {kh, kw}, .stride = {kh, kw}};
        return pool(op, LOOM_OP_AVG_POOL2D, x, &o);
    }
    loom__attrs a;
    memset(&a, 0, sizeof a);
    a.pool.adaptive = true;
    int64_t shape[4] = {x->shape[0], x->shape[1], out_h, out_w};
    return loom__record_contig(LOOM_OP_AVG_POOL2D, &a, 1, &x, 4, shape);
}

loom_tensor *loom__max_pool2d_bwd(loom_tensor *dy, loom_tensor *x, const loom__attrs *a)
{
    loom_tensor *in[2] = {dy, x};
    if (!loom__check_inputs("max_pool2d_backward", 2, in)) return NULL;
    return loom__record_contig(LOOM_OP_MAX_POOL2D_BWD, a, 2, in, 4, x->shape);
}

loom_tensor *loom__avg_pool2d_bwd(loom_tensor *dy, const loom__attrs *a, const int64_t *x_shape)
{
    if (!loom__check_inputs("avg_pool2d_backward", 1, &dy)) return NULL;
    return loom__record_contig(LOOM_OP_AVG_POOL2D_BWD, a, 1, &dy, 4, x_shape);
}
