/*
 * models/zoo.c - the model zoo by name (loom_model), used by the `loom`
 * command, the examples and the benchmarks, and the small image
 * classifiers it holds besides the ResNets (models/resnet.c):
 *
 *   mlp        PyTorch's quickstart network: Flatten, then
 *              linear_relu_stack = Sequential(Linear(C*H*W, 512), ReLU,
 *              Linear(512, 512), ReLU, Linear(512, classes)).
 *   simplecnn  the seed's SimpleCNN: conv 3x3 C->32 + ReLU, conv 3x3
 *              32->64 + ReLU, max-pool 2, fc1 64*((H-4)/2)*((W-4)/2) -> 128
 *              + ReLU, fc2 128 -> classes, log_softmax.
 *   rnn, lstm, gru
 *              the row-by-row sequence classifier: each image is a
 *              sequence of H steps of C*W features, rnn = one batch_first
 *              layer of hidden 128, fc = Linear(128, classes) on the last
 *              step's output.
 *   resnet18 ... resnet152
 *              loom_resnet with in_channels and num_classes.
 *
 * Every model takes float32 images [N, C, H, W] and returns [N, classes]
 * (logits; simplecnn's are log-probabilities, as the seed's). Parameter
 * names are those of the same PyTorch modules, so their state dicts load.
 * Written against the public API only, like models/resnet.c.
 */
#include <stdlib.h>
#include <string.h>

#include "loom/loom.h"
#include "loom/models.h"
#include "runtime/error.h"

/* Adds child `name` to m; false if that fails (m then owns or freed it). */
static bool add(loom_module *m, const char *name, loom_module *child)
{
    return child && loom_module_add_child(m, name, child) == LOOM_OK;
}

/* Checks that x is [N, c, h, w] (h, w: 0 for any) and names the problem. */
static bool check_input(const char *model, loom_tensor *x, int64_t c, int64_t h, int64_t w)
{
    if (!x) return false; /* the error is already set */
    if (loom_tensor_ndim(x) == 4 && loom_tensor_size(x, 1) == c && (!h || loom_tensor_size(x, 2) == h) &&
        (!w || loom_tensor_size(x, 3) == w))
        return true;
    int64_t s[LOOM_MAX_DIMS];
    loom_tensor_shape(x, s);
    char buf[LOOM__SHAPE_STR_MAX];
    loom__set_error(LOOM_ERR_SHAPE, "%s: expected an input [N, %lld, %lld, %lld], got %s", model, (long long)c,
                    (long long)h, (long long)w, loom__fmt_shape(buf, sizeof buf, loom_tensor_ndim(x), s));
    return false;
}

/* The input geometry a model was built for (the user data of the small
 * models' modules). */
typedef struct geometry {
    int64_t c, h, w;
} geometry;

static geometry *geometry_new(int64_t c, int64_t h, int64_t w)
{
    geometry *g = malloc(sizeof *g);
    if (!g) {
        loom__set_error(LOOM_ERR_NOMEM, "model: out of memory");
        return NULL;
    }
    *g = (geometry){c, h, w};
    return g;
}

/* ---- mlp ------------------------------------------------------------------ */

static loom_tensor *mlp_forward(loom_module *m, loom_tensor *x, void *user)
{
    const geometry *g = user;
    if (!check_input("mlp", x, g->c, g->h, g->w)) return NULL;
    return loom_module_forward(loom_module_child(m, "linear_relu_stack"), loom_flatten(x, 1, -1)); /* [N, classes] */
}

static loom_module *mlp(loom_ctx *ctx, int64_t c, int64_t h, int64_t w, int64_t classes)
{
    geometry *g = geometry_new(c, h, w);
    loom_module *m = g ? loom_module_create(ctx, "MLP", mlp_forward, g, free) : NULL;
    if (!m) {
        free(g);
        return NULL;
    }
    loom_module *stack[5] = {loom_linear(ctx, c * h * w, 512, true), loom_relu_module(ctx),
                             loom_linear(ctx, 512, 512, true), loom_relu_module(ctx),
                             loom_linear(ctx, 512, classes, true)};
    for (int i = 0; i < 5; i++)
        if (!stack[i]) {
            for (int k = 0; k < 5; k++) loom_module_free(stack[k]);
            loom_module_free(m);
            return NULL;
        }
    if (!add(m, "flatten", loom_flatten_module(ctx, 1, -1)) ||
        !add(m, "linear_relu_stack", loom_sequential(ctx, 5, stack))) {
        loom_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- simplecnn ------------------------------------------------------------ */

static loom_tensor *simple_cnn_forward(loom_module *m, loom_tensor *x, void *user)
{
    const geometry *g = user;
    if (!check_input("simplecnn", x, g->c, g->h, g->w)) return NULL;
    /* conv + ReLU run as one convolution with a fused ReLU (same values). */
    loom_conv2d_opts relu = {.relu = true};
    loom_tensor *h = loom_conv2d(x, loom_module_get(m, "conv1.weight"), loom_module_get(m, "conv1.bias"),
                                 &relu); /* [N, 32, H-2, W-2] */
    h = loom_conv2d(h, loom_module_get(m, "conv2.weight"), loom_module_get(m, "conv2.bias"),
                    &relu);                                                      /* [N, 64, H-4, W-4] */
    h = loom_max_pool2d(h, &(loom_pool2d_opts){.kernel = {2, 2}});              /* [N, 64, (H-4)/2, (W-4)/2] */
    h = loom_relu(loom_module_forward(loom_module_child(m, "fc1"), loom_flatten(h, 1, -1))); /* [N, 128] */
    return loom_log_softmax(loom_module_forward(loom_module_child(m, "fc2"), h), 1);         /* [N, classes] */
}

loom_module *loom_simple_cnn(loom_ctx *ctx, const loom_model_opts *opts)
{
    loom_model_opts o = opts ? *opts : (loom_model_opts){0};
    const int64_t c = o.in_channels ? o.in_channels : 1, h = o.height ? o.height : 28, w = o.width ? o.width : 28;
    const int64_t classes = o.num_classes ? o.num_classes : 10;
    if (!ctx || c < 1 || h < 6 || w < 6 || classes < 1) {
        loom__set_error(LOOM_ERR_INVALID_ARG,
                        "simplecnn: needs a context, in_channels >= 1, images of at least 6 x 6 and num_classes >= 1 "
                        "(got %lld channels, %lld x %lld, %lld classes)",
                        (long long)c, (long long)h, (long long)w, (long long)classes);
        return NULL;
    }
    geometry *g = geometry_new(c, h, w);
    loom_module *m = g ? loom_module_create(ctx, "SimpleCNN", simple_cnn_forward, g, free) : NULL;
    if (!m) {
        free(g);
        return NULL;
    }
    const int64_t flat = 64 * ((h - 4) / 2) * ((w - 4) / 2); /* 9216 for 28 x 28 */
    if (!add(m, "conv1", loom_conv2d_module(ctx, c, 32, 3, 3, NULL, true)) ||
        !add(m, "conv2", loom_conv2d_module(ctx, 32, 64, 3, 3, NULL, true)) ||
        !add(m, "fc1", loom_linear(ctx, flat, 128, true)) || !add(m, "fc2", loom_linear(ctx, 128, classes, true))) {
        loom_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- rnn, lstm, gru: row-by-row classifiers -------------------------------- */

static loom_tensor *seq_forward(loom_module *m, loom_tensor *x, void *user)
{
    const geometry *g = user;
    if (!check_input(loom_module_type(m), x, g->c, 0, g->w)) return NULL;
    /* [N, C, H, W] -> [N, H, C, W] -> [N, H, C*W]: row t of every channel is
     * step t's input. Any number of rows works (the steps). */
    const int64_t n = loom_tensor_size(x, 0), steps = loom_tensor_size(x, 2);
    loom_tensor *seq = g->c == 1 ? x : loom_permute(x, 4, (const int[]){0, 2, 1, 3});
    seq = loom_reshape(seq, 3, (const int64_t[]){n, steps, g->c * g->w});
    loom_tensor *out = NULL;
    if (!seq || loom_rnn_forward(loom_module_child(m, "rnn"), seq, NULL, NULL, &out, NULL, NULL) != LOOM_OK)
        return NULL;
    return loom_module_forward(loom_module_child(m, "fc"), loom_select(out, 1, steps - 1)); /* [N, classes] */
}

static loom_module *seq_classifier(loom_ctx *ctx, loom_rnn_mode mode, const char *type, int64_t c, int64_t w,
                                   int64_t classes)
{
    geometry *g = geometry_new(c, 0, w);
    loom_module *m = g ? loom_module_create(ctx, type, seq_forward, g, free) : NULL;
    if (!m) {
        free(g);
        return NULL;
    }
    const int64_t hidden = 128;
    if (!add(m, "rnn", loom_rnn_module(ctx, mode, c * w, hidden, &(loom_rnn_opts){.batch_first = true})) ||
        !add(m, "fc", loom_linear(ctx, hidden, classes, true))) {
        loom_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- by name --------------------------------------------------------------- */

static const char *const names[] = {"mlp",      "simplecnn", "rnn",      "lstm",      "gru",      "resnet18",
                                    "resnet34", "resnet50",  "resnet101", "resnet152", NULL};

const char *const *loom_model_names(void) { return names; }

loom_module *loom_model(loom_ctx *ctx, const char *name, const loom_model_opts *opts)
{
    loom_model_opts o = opts ? *opts : (loom_model_opts){0};
    if (!ctx || !name || o.in_channels < 0 || o.height < 0 || o.width < 0 || o.num_classes < 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "model: needs a context, a name and options >= 0");
        return NULL;
    }
    if (!strncmp(name, "resnet", 6)) {
        char *end;
        long depth = strtol(name + 6, &end, 10);
        if (*end || end == name + 6) depth = -1;
        if (depth == 18 || depth == 34 || depth == 50 || depth == 101 || depth == 152)
            return loom_resnet(ctx, (int)depth,
                               &(loom_resnet_opts){.num_classes = o.num_classes, .in_channels = o.in_channels});
    }
    if (!strcmp(name, "simplecnn")) return loom_simple_cnn(ctx, &o);
    const int64_t c = o.in_channels ? o.in_channels : 1, h = o.height ? o.height : 28, w = o.width ? o.width : 28;
    const int64_t classes = o.num_classes ? o.num_classes : 10;
    if (!strcmp(name, "mlp")) return mlp(ctx, c, h, w, classes);
    if (!strcmp(name, "rnn")) return seq_classifier(ctx, LOOM_RNN_TANH, "RNNClassifier", c, w, classes);
    if (!strcmp(name, "lstm")) return seq_classifier(ctx, LOOM_LSTM, "LSTMClassifier", c, w, classes);
    if (!strcmp(name, "gru")) return seq_classifier(ctx, LOOM_GRU, "GRUClassifier", c, w, classes);
    loom__set_error(LOOM_ERR_INVALID_ARG,
                    "model: unknown model '%s' (mlp, simplecnn, rnn, lstm, gru, resnet18, resnet34, resnet50, "
                    "resnet101, resnet152)",
                    name);
    return NULL;
}
