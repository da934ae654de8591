/*
 * models/resnet.c - ResNet-18/34/50/101/152 as torchvision builds them
 * (torchvision/models/resnet.py, v1.5: the stride of a Bottleneck is on its
 * 3x3 convolution), from nn modules, with torchvision's names.
 *
 * Shapes (224 x 224 input): conv1 7x7/2 -> [N, 64, 112, 112], maxpool 3x3/2
 * -> 56, layer1 -> [N, 64*e, 56, 56], layer2 -> 128*e at 28, layer3 ->
 * 256*e at 14, layer4 -> 512*e at 7, avgpool -> [N, 512*e, 1, 1], fc ->
 * [N, classes]; e = 1 (BasicBlock) or 4 (Bottleneck).
 *
 * Written against the public API only (include/loom/), as user code would
 * be: models/ sits above nn/ (shared/notes/architecture.md).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loom/loom.h"
#include "loom/models.h"
#include "runtime/error.h"

/* ---- blocks ---------------------------------------------------------------- */

/* A block's children (owned by the block module; this only points). */
typedef struct block {
    loom_module *conv[3], *bn[3]; /* conv3/bn3: Bottleneck only */
    loom_module *downsample;      /* Sequential(conv 1x1, bn) or NULL */
    int nconv;
} block;

/* out = relu(main(x) + identity(x)); main is conv-bn-relu (x2 or x3) with
 * the last relu after the sum. identity is x or downsample(x): an
 * independent branch of the DAG. Each bn-relu is one node
 * (loom_module_forward_relu). */
static loom_tensor *block_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m;
    const block *b = user;
    loom_tensor *h = x;
    for (int i = 0; i < b->nconv; i++) {
        loom_tensor *c = loom_module_forward(b->conv[i], h);
        h = i + 1 < b->nconv ? loom_module_forward_relu(b->bn[i], c) : loom_module_forward(b->bn[i], c);
    }
    loom_tensor *identity = b->downsample ? loom_module_forward(b->downsample, x) : x;
    return loom_add_relu(h, identity);
}

static loom_module *conv(loom_ctx *ctx, int64_t in, int64_t out, int k, int stride)
{
    loom_conv2d_opts o = {.stride = {stride, stride}, .padding = {k / 2, k / 2}};
    return loom_conv2d_module(ctx, in, out, k, k, &o, false);
}

static loom_module *bn(loom_ctx *ctx, int64_t c) { return loom_batch_norm2d_module(ctx, c, 1e-5, 0.1, true); }

/* Adds child `name` to m and returns it (NULL on failure: m then freed it). */
static loom_module *add(loom_module *m, const char *name, loom_module *child)
{
    return loom_module_add_child(m, name, child) == LOOM_OK ? child : NULL;
}

/* A BasicBlock (bottleneck false: 3x3, 3x3) or Bottleneck (1x1, 3x3 with
 * the stride, 1x1 to planes*4). */
static loom_module *make_block(loom_ctx *ctx, bool bottleneck, int64_t inplanes, int64_t planes, int stride)
{
    block *b = calloc(1, sizeof *b);
    if (!b) {
        loom__set_error(LOOM_ERR_NOMEM, "resnet: out of memory");
        return NULL;
    }
    loom_module *m = loom_module_create(ctx, bottleneck ? "Bottleneck" : "BasicBlock", block_forward, b, free);
    if (!m) {
        free(b);
        return NULL;
    }
    const int64_t out = bottleneck ? planes * 4 : planes;
    static const char *const cname[3] = {"conv1", "conv2", "conv3"}, *const bname[3] = {"bn1", "bn2", "bn3"};
    int64_t ch[4];
    int ks[3], strides[3];
    if (bottleneck) {
        b->nconv = 3;
        int64_t c[4] = {inplanes, planes, planes, out};
        memcpy(ch, c, sizeof ch);
        ks[0] = 1, ks[1] = 3, ks[2] = 1;
        strides[0] = 1, strides[1] = stride, strides[2] = 1;
    } else {
        b->nconv = 2;
        ch[0] = inplanes, ch[1] = planes, ch[2] = planes;
        ks[0] = ks[1] = 3;
        strides[0] = stride, strides[1] = 1;
    }
    for (int i = 0; i < b->nconv; i++) {
        if (!(b->conv[i] = add(m, cname[i], conv(ctx, ch[i], ch[i + 1], ks[i], strides[i]))) ||
            !(b->bn[i] = add(m, bname[i], bn(ctx, ch[i + 1]))))
            goto fail;
    }
    if (stride != 1 || inplanes != out) {
        b->downsample = loom_sequential(ctx, 2, (loom_module *[]){conv(ctx, inplanes, out, 1, stride), bn(ctx, out)});
        if (!add(m, "downsample", b->downsample)) goto fail;
    }
    return m;
fail:
    loom_module_free(m);
    return NULL;
}

/* ---- the network ------------------------------------------------------------- */

/* Whether x is [N, C, H, W] with the C of the first convolution's weight
 * [64, C, 7, 7] (named stem); else the error, naming both. */
static bool input_ok(loom_module *m, loom_tensor *x, const char *stem)
{
    const int64_t c = loom_tensor_size(loom_module_get(m, stem), 1);
    if (!x || (loom_tensor_ndim(x) == 4 && loom_tensor_size(x, 1) == c)) return true; /* NULL: already an error */
    int64_t s[LOOM_MAX_DIMS];
    loom_tensor_shape(x, s);
    char buf[LOOM__SHAPE_STR_MAX];
    loom__set_error(LOOM_ERR_SHAPE, "resnet: expected an input [N, %lld, H, W], got %s", (long long)c,
                    loom__fmt_shape(buf, sizeof buf, loom_tensor_ndim(x), s));
    return false;
}

/* The children are looked up by name at every call, so that a replaced
 * one (loom_module_replace_child(net, "fc", ...)) is the one that runs. */
static loom_tensor *resnet_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)user;
    if (!input_ok(m, x, "conv1.weight")) return NULL;
    static const char *const order[] = {"maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"};
    loom_tensor *h = loom_module_forward(loom_module_child(m, "conv1"), x);
    loom_module *bn1 = loom_module_child(m, "bn1"), *act = loom_module_child(m, "relu");
    /* bn1 + relu as one node, unless "relu" was replaced by another
     * activation. */
    if (act && !strcmp(loom_module_type(act), "ReLU"))
        h = loom_module_forward_relu(bn1, h);
    else
        h = loom_module_forward(act, loom_module_forward(bn1, h));
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) h = loom_module_forward(loom_module_child(m, order[i]), h);
    return loom_module_forward(loom_module_child(m, "fc"), loom_flatten(h, 1, -1));
}

/* torchvision's init: kaiming_normal_(mode="fan_out", nonlinearity="relu"):
 * N(0, 2 / (out_channels * kh * kw)). */
static loom_status kaiming_fan_out(loom_module *convm)
{
    loom_tensor *w = loom_module_get(convm, "weight");
    if (!w) return loom_last_status();
    int64_t shape[LOOM_MAX_DIMS];
    loom_tensor_shape(w, shape);
    loom_ctx *ctx = loom_module_ctx(convm);
    const double std = sqrt(2.0 / (double)(shape[0] * shape[2] * shape[3]));
    loom_scope_begin(ctx);
    loom_tensor *v = loom_mul_scalar(loom_randn(ctx, 4, shape), std);
    loom_status st = v ? loom_tensor_assign(w, v) : loom_last_status();
    loom_scope_end(ctx);
    return st;
}

/* Every Conv2d below m gets kaiming_fan_out; with zero_init, the last BN of
 * each block gets weight 0. */
static loom_status init_weights(loom_module *m, bool zero_init)
{
    loom_tensor *ts[1024];
    const char *names[1024];
    int n = loom_module_parameters(m, ts, names, 1024);
    if (n < 0 || n > 1024) return loom__set_error(LOOM_ERR_INVALID_ARG, "resnet: too many parameters");
    for (int i = 0; i < n; i++) {
        const char *name = names[i];
        size_t len = strlen(name);
        if (len > 7 && !strcmp(name + len - 7, ".weight") && loom_tensor_ndim(ts[i]) == 4) {
            char owner[256];
            if (len - 7 >= sizeof owner) continue;
            memcpy(owner, name, len - 7);
            owner[len - 7] = '\0';
            loom_module *c = loom_module_child(m, owner);
            loom_status st = c ? kaiming_fan_out(c) : loom_last_status();
            if (st != LOOM_OK) return st;
        }
    }
    if (!zero_init) return LOOM_OK;
    for (int i = 0; i < n; i++) {
        const char *name = names[i];
        size_t len = strlen(name);
        const char *last = len > 11 ? name + len - 11 : "";
        bool bottleneck_last = !strcmp(last, ".bn3.weight");
        bool basic_last = !strcmp(last, ".bn2.weight") && !strstr(name, "downsample");
        if (!bottleneck_last && !basic_last) continue;
        /* BasicBlock's last BN is bn2; a Bottleneck's bn2 is not its last. */
        if (basic_last) {
            char owner[256];
            snprintf(owner, sizeof owner, "%.*s", (int)(len - 11), name);
            loom_module *blk = loom_module_child(m, owner);
            if (!blk || strcmp(loom_module_type(blk), "BasicBlock")) continue;
        }
        loom_ctx *ctx = loom_module_ctx(m);
        loom_scope_begin(ctx);
        int64_t c = loom_tensor_size(ts[i], 0);
        loom_status st = loom_tensor_assign(ts[i], loom_zeros(ctx, LOOM_FLOAT32, 1, &c));
        loom_scope_end(ctx);
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}

loom_module *loom_resnet(loom_ctx *ctx, int depth, const loom_resnet_opts *opts)
{
    static const struct {
        int depth, blocks[4];
        bool bottleneck;
    } configs[] = {
        {18, {2, 2, 2, 2}, false}, {34, {3, 4, 6, 3}, false}, {50, {3, 4, 6, 3}, true},
        {101, {3, 4, 23, 3}, true}, {152, {3, 8, 36, 3}, true},
    };
    int ci = -1;
    for (int i = 0; i < 5; i++)
        if (configs[i].depth == depth) ci = i;
    loom_resnet_opts o = opts ? *opts : (loom_resnet_opts){0};
    if (!ctx || ci < 0 || o.num_classes < 0 || o.in_channels < 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG,
                        "resnet: depth must be 18, 34, 50, 101 or 152 (got %d), num_classes >= 0 (got %lld), "
                        "in_channels >= 0 (got %lld), and a context given",
                        depth, (long long)o.num_classes, (long long)o.in_channels);
        return NULL;
    }
    const int64_t classes = o.num_classes ? o.num_classes : 1000;
    const int64_t in_channels = o.in_channels ? o.in_channels : 3;
    const bool bottleneck = configs[ci].bottleneck;
    loom_module *m = loom_module_create(ctx, "ResNet", resnet_forward, NULL, NULL);
    if (!m) return NULL;
    loom_conv2d_opts stem = {.stride = {2, 2}, .padding = {3, 3}};
    loom_pool2d_opts mp = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}};
    if (!add(m, "conv1", loom_conv2d_module(ctx, in_channels, 64, 7, 7, &stem, false)) || !add(m, "bn1", bn(ctx, 64)) ||
        !add(m, "relu", loom_relu_module(ctx)) || !add(m, "maxpool", loom_max_pool2d_module(ctx, &mp)))
        goto fail;
    int64_t inplanes = 64;
    for (int l = 0; l < 4; l++) {
        const int64_t planes = 64 << l;
        const int nb = configs[ci].blocks[l];
        loom_module *blocks[64];
        for (int b = 0; b < nb; b++) {
            blocks[b] = make_block(ctx, bottleneck, inplanes, planes, b == 0 && l > 0 ? 2 : 1);
            inplanes = bottleneck ? planes * 4 : planes;
            if (!blocks[b]) {
                for (int k = 0; k < b; k++) loom_module_free(blocks[k]);
                goto fail;
            }
        }
        char name[16];
        snprintf(name, sizeof name, "layer%d", l + 1);
        if (!add(m, name, loom_sequential(ctx, nb, blocks))) goto fail;
    }
    if (!add(m, "avgpool", loom_adaptive_avg_pool2d_module(ctx, 1, 1)) ||
        !add(m, "fc", loom_linear(ctx, inplanes, classes, true)))
        goto fail;
    if (init_weights(m, o.zero_init_residual) != LOOM_OK) goto fail;
    return m;
fail:
    loom_module_free(m);
    return NULL;
}

/* ---- inference: BatchNorm folded, ReLU fused ------------------------------- */

/* A fused block: relu(main(x) + (downsample ? downsample(x) : x)), main a
 * Sequential of folded convolutions with fused ReLUs between them. */
typedef struct fused_block {
    loom_module *main, *downsample; /* children; downsample may be NULL */
} fused_block;

static loom_tensor *fused_block_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m;
    const fused_block *b = user;
    loom_tensor *identity = b->downsample ? loom_module_forward(b->downsample, x) : x;
    return loom_add_relu(loom_module_forward(b->main, x), identity);
}

/* Folds the Conv2d `conv` and BatchNorm2d `bn` children of `from`. */
static loom_module *fold(loom_module *from, const char *conv, const char *bn)
{
    return loom_fuse_conv_bn_eval(loom_module_child(from, conv), loom_module_child(from, bn));
}

static loom_module *fuse_block(loom_ctx *ctx, loom_module *blk)
{
    const bool bottleneck = !strcmp(loom_module_type(blk), "Bottleneck");
    fused_block *fb = calloc(1, sizeof *fb);
    loom_module *m = fb ? loom_module_create(ctx, bottleneck ? "FusedBottleneck" : "FusedBasicBlock",
                                             fused_block_forward, fb, free)
                        : NULL;
    if (!m) {
        free(fb);
        if (!fb) loom__set_error(LOOM_ERR_NOMEM, "resnet: out of memory");
        return NULL;
    }
    /* conv1 (+relu), conv2 (+relu), conv3: the ReLU after the last comes
     * after the sum. A Sequential runs a Conv2d followed by a ReLU as one
     * convolution with the ReLU fused. */
    loom_module *seq[5] = {0};
    int n = 0;
    seq[n++] = fold(blk, "conv1", "bn1");
    seq[n++] = loom_relu_module(ctx);
    seq[n++] = fold(blk, "conv2", "bn2");
    if (bottleneck) {
        seq[n++] = loom_relu_module(ctx);
        seq[n++] = fold(blk, "conv3", "bn3");
    }
    for (int i = 0; i < n; i++)
        if (!seq[i]) {
            for (int k = 0; k < n; k++) loom_module_free(seq[k]);
            loom_module_free(m);
            return NULL;
        }
    if (!(fb->main = add(m, "main", loom_sequential(ctx, n, seq)))) {
        loom_module_free(m);
        return NULL;
    }
    loom_module *ds = loom_module_child(blk, "downsample");
    if (ds && !(fb->downsample = add(m, "downsample", fold(ds, "0", "1")))) {
        loom_module_free(m);
        return NULL;
    }
    return m;
}

static loom_tensor *fused_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)user;
    if (!input_ok(m, x, "stem.0.weight")) return NULL;
    static const char *const order[] = {"stem", "layer1", "layer2", "layer3", "layer4", "avgpool"};
    loom_tensor *h = x;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) h = loom_module_forward(loom_module_child(m, order[i]), h);
    return loom_module_forward(loom_module_child(m, "fc"), loom_flatten(h, 1, -1));
}

loom_module *loom_resnet_fuse_for_inference(loom_module *net)
{
    if (!net || strcmp(loom_module_type(net), "ResNet") != 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "resnet_fuse_for_inference: expected a module of type ResNet (loom_resnet)");
        return NULL;
    }
    loom_ctx *ctx = loom_module_ctx(net);
    loom_module *m = loom_module_create(ctx, "ResNetFused", fused_forward, NULL, NULL);
    if (!m) return NULL;
    loom_pool2d_opts mp = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}};
    loom_module *stem[3] = {fold(net, "conv1", "bn1"), loom_relu_module(ctx), loom_max_pool2d_module(ctx, &mp)};
    if (!stem[0] || !stem[1] || !stem[2]) {
        for (int k = 0; k < 3; k++) loom_module_free(stem[k]);
        goto fail;
    }
    if (!add(m, "stem", loom_sequential(ctx, 3, stem))) goto fail;
    for (int l = 1; l <= 4; l++) {
        char name[16];
        snprintf(name, sizeof name, "layer%d", l);
        loom_module *layer = loom_module_child(net, name);
        loom_module *blocks[64];
        int nb = 0;
        for (;; nb++) {
            char idx[8];
            snprintf(idx, sizeof idx, "%d", nb);
            loom_module *blk = nb < 64 ? loom_module_child(layer, idx) : NULL;
            if (!blk) break;
            if (!(blocks[nb] = fuse_block(ctx, blk))) {
                for (int k = 0; k < nb; k++) loom_module_free(blocks[k]);
                goto fail;
            }
        }
        if (!add(m, name, loom_sequential(ctx, nb, blocks))) goto fail;
    }
    /* fc: a copy of the current one (any replacement included). */
    loom_tensor *w = loom_module_get(net, "fc.weight"), *b = loom_module_get(net, "fc.bias");
    if (!w) {
        loom__set_error(LOOM_ERR_STATE, "resnet_fuse_for_inference: the fc child is not a Linear layer");
        goto fail;
    }
    loom_module *fc = add(m, "fc", loom_linear(ctx, loom_tensor_size(w, 1), loom_tensor_size(w, 0), b != NULL));
    if (!fc || !add(m, "avgpool", loom_adaptive_avg_pool2d_module(ctx, 1, 1))) goto fail;
    loom_status st = loom_tensor_assign(loom_module_get(fc, "weight"), w);
    if (st == LOOM_OK && b) st = loom_tensor_assign(loom_module_get(fc, "bias"), b);
    if (st != LOOM_OK) goto fail;
    loom_module_train(m, false);
    return m;
fail:
    loom_module_free(m);
    return NULL;
}
