/*
 * ops/conv.c - 2-D convolution (torch.nn.functional.conv2d) and the two
 * halves of its gradient.
 *
 * x [N, C, H, W] * w [O, C/g, KH, KW] (+ b [O]) -> y [N, O, OH, OW] with
 * OH = (H + 2*pad_h - dil_h*(KH-1) - 1) / stride_h + 1 (likewise OW).
 * The backward of y is two nodes that can run at the same time:
 * CONV2D_BWD_DATA (dx, needs w) and CONV2D_BWD_WEIGHT (dw, needs x); db is a
 * sum of dy over N, OH, OW.
 */
#include <string.h>

#include "ops/cnn_common.h"

loom_tensor *loom__record_contig(loom__op op, const loom__attrs *attrs, int n, loom_tensor *const *in, int ndim,
                                 const int64_t *shape)
{
    LOOM_ASSERT(n <= LOOM__CONTIG_MAX);
    loom_tensor *c[LOOM__CONTIG_MAX] = {NULL};
    bool ok = true;
    for (int i = 0; i < n; i++) ok = ok && (c[i] = loom__contig(in[i])) != NULL;
    loom_tensor *r = ok ? loom__record(op, attrs, n, c, LOOM_FLOAT32, ndim, shape) : NULL;
    for (int i = 0; i < n; i++) loom__drop_temp(c[i], in[i]);
    return r;
}

/* Output size of one spatial dim; < 1 means the input is too small. */
static int64_t conv_out(int64_t in, int k, int stride, int pad, int dil)
{
    int64_t span = (int64_t)dil * (k - 1) + 1;
    if (in + 2 * (int64_t)pad < span) return 0;
    return (in + 2 * (int64_t)pad - span) / stride + 1;
}

static bool read_opts(const loom_conv2d_opts *o, loom__attrs *a)
{
    memset(a, 0, sizeof *a);
    loom_conv2d_opts d = {0};
    if (!o) o = &d;
    for (int i = 0; i < 2; i++) {
        if (o->stride[i] < 0 || o->padding[i] < 0 || o->dilation[i] < 0) {
            loom__set_error(LOOM_ERR_INVALID_ARG,
                            "conv2d: stride (%d, %d), padding (%d, %d) and dilation (%d, %d) must not be negative",
                            o->stride[0], o->stride[1], o->padding[0], o->padding[1], o->dilation[0], o->dilation[1]);
            return false;
        }
        a->conv.stride[i] = o->stride[i] ? o->stride[i] : 1;
        a->conv.pad[i] = o->padding[i];
        a->conv.dilation[i] = o->dilation[i] ? o->dilation[i] : 1;
    }
    if (o->groups < 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "conv2d: groups must be positive, got %d", o->groups);
        return false;
    }
    a->conv.groups = o->groups ? o->groups : 1;
    a->conv.relu = o->relu;
    return true;
}

loom_tensor *loom_conv2d(loom_tensor *x, loom_tensor *w, loom_tensor *b, const loom_conv2d_opts *opts)
{
    const char *op = "conv2d";
    loom_tensor *in[3] = {x, w, b};
    if (!loom__check_inputs(op, b ? 3 : 2, in)) return NULL;
    loom__attrs a;
    if (!read_opts(opts, &a)) return NULL;
    if (!loom__want_float(op, "input", x) || !loom__want_float(op, "weight", w) ||
        (b && !loom__want_float(op, "bias", b)))
        return NULL;
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    if (x->ndim != 4) {
        loom__set_error(LOOM_ERR_SHAPE, "conv2d: input must be 4-D [N, C, H, W], got %s",
                        loom__shape_str(s1, sizeof s1, x));
        return NULL;
    }
    if (w->ndim != 4) {
        loom__set_error(LOOM_ERR_SHAPE, "conv2d: weight must be 4-D [out_channels, in_channels/groups, kH, kW], got %s",
                        loom__shape_str(s1, sizeof s1, w));
        return NULL;
    }
    int g = a.conv.groups;
    int64_t C = x->shape[1], O = w->shape[0];
    if (C % g || O % g || w->shape[1] * g != C) {
        loom__set_error(LOOM_ERR_SHAPE,
                        "conv2d: input %s and weight %s do not match with groups = %d (expected weight [O, %lld, kH, "
                        "kW] with O divisible by %d)",
                        loom__shape_str(s1, sizeof s1, x), loom__shape_str(s2, sizeof s2, w), g,
                        (long long)(C % g ? -1 : C / g), g);
        return NULL;
    }
    if (b && (b->ndim != 1 || b->shape[0] != O)) {
        loom__set_error(LOOM_ERR_SHAPE, "conv2d: bias %s does not match out_channels = %lld",
                        loom__shape_str(s1, sizeof s1, b), (long long)O);
        return NULL;
    }
    int64_t OH = conv_out(x->shape[2], (int)w->shape[2], a.conv.stride[0], a.conv.pad[0], a.conv.dilation[0]);
    int64_t OW = conv_out(x->shape[3], (int)w->shape[3], a.conv.stride[1], a.conv.pad[1], a.conv.dilation[1]);
    if (OH < 1 || OW < 1 || w->shape[2] < 1 || w->shape[3] < 1) {
        loom__set_error(LOOM_ERR_SHAPE,
                        "conv2d: input %s padded by (%d, %d) is smaller than the kernel %s dilated by (%d, %d)",
                        loom__shape_str(s1, sizeof s1, x), a.conv.pad[0], a.conv.pad[1],
                        loom__shape_str(s2, sizeof s2, w), a.conv.dilation[0], a.conv.dilation[1]);
        return NULL;
    }
    int64_t shape[4] = {x->shape[0], O, OH, OW};
    return loom__record_contig(LOOM_OP_CONV2D, &a, b ? 3 : 2, in, 4, shape);
}

loom_tensor *loom__conv2d_bwd_data(loom_tensor *dy, loom_tensor *w, const loom__attrs *a, const int64_t *x_shape)
{
    loom_tensor *in[2] = {dy, w};
    if (!loom__check_inputs("conv2d_backward_data", 2, in)) return NULL;
    return loom__record_contig(LOOM_OP_CONV2D_BWD_DATA, a, 2, in, 4, x_shape);
}

loom_tensor *loom__conv2d_bwd_weight(loom_tensor *x, loom_tensor *dy, const loom__attrs *a, const int64_t *w_shape)
{
    loom_tensor *in[2] = {x, dy};
    if (!loom__check_inputs("conv2d_backward_weight", 2, in)) return NULL;
    return loom__record_contig(LOOM_OP_CONV2D_BWD_WEIGHT, a, 2, in, 4, w_shape);
}

loom_tensor *loom__relu_bwd(loom_tensor *y, loom_tensor *dy)
{
    loom_tensor *in[2] = {y, dy};
    if (!loom__check_inputs("relu_backward", 2, in)) return NULL;
    return loom__record_contig(LOOM_OP_RELU_BWD, NULL, 2, in, y->ndim, y->shape);
}
