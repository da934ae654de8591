/*
 * loom/nn.h - modules, activations and losses, as torch.nn has them.
 *
 * A module owns named parameters (tensors that require grad), named buffers,
 * and named children; its parameter names follow PyTorch's state_dict keys
 * ("fc1.weight", "0.bias"), so that checkpoints can be exchanged. forward()
 * records ops like any user code. A module is created from a context and
 * freed with loom_module_free(), which frees its parameters, buffers and
 * children. Parameters live outside every scope (the module owns them).
 *
 *     loom_module *net = loom_sequential(ctx, 3, (loom_module *[]){
 *         loom_linear(ctx, 20, 64, true), loom_relu_module(ctx),
 *         loom_linear(ctx, 64, 1, true)});
 *     loom_tensor *y = loom_module_forward(net, x);   // owned by the scope
 *
 * Custom modules: loom_module_create() with a forward callback, then
 * loom_module_add_parameter() / loom_module_add_child().
 */
#ifndef LOOM_NN_H
#define LOOM_NN_H

#include <stdbool.h>
#include <stdint.h>

#include "loom/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_module loom_module;

/* forward(module, input, user) returns a new tensor (owned by the current
 * scope) or NULL with the error set. */
typedef loom_tensor *(*loom_forward_fn)(loom_module *m, loom_tensor *x, void *user);

/* A custom module of type `type` ("SimpleNN"; NULL: "Module"). forward may
 * be NULL for a pure container (loom_module_forward then fails). free_user
 * (may be NULL) is called on `user` by loom_module_free. NULL on failure
 * (user is then still the caller's). Modules start in training mode. */
loom_module *loom_module_create(loom_ctx *ctx, const char *type, loom_forward_fn forward, void *user,
                                void (*free_user)(void *user));

/* Registers t as parameter `name` of m: m takes ownership of the handle
 * (detaching it from its scope) and marks it requires_grad. t must be a
 * float32 leaf (LOOM_ERR_DTYPE / LOOM_ERR_STATE otherwise) and a handle no
 * module owns yet; it is computed now (optimizers update it in place).
 * Parameters, buffers and children share one namespace per module: a name
 * that is empty, contains '.', or is taken gives LOOM_ERR_INVALID_ARG. On
 * failure t is not taken (it stays in its scope). A NULL t returns the
 * status of the call that produced it. */
loom_status loom_module_add_parameter(loom_module *m, const char *name, loom_tensor *t);
/* Registers a buffer (state that is not a parameter, e.g. running means);
 * any dtype, not marked requires_grad. Otherwise as add_parameter. */
loom_status loom_module_add_buffer(loom_module *m, const char *name, loom_tensor *t);
/* Makes `child` a submodule called `name`; m takes ownership of it, also
 * when this fails (child is then freed: loom_module_add_child(m, "fc",
 * loom_linear(...)) cannot leak), except where child already belongs to a
 * module or is m or one of its ancestors (refused, nothing freed). */
loom_status loom_module_add_child(loom_module *m, const char *name, loom_module *child);

/* Replaces the submodule at `path` ("fc", or dotted: "layer4.1") with
 * child, which takes its place (and position in the state order) and m's
 * training mode; the old submodule is freed. Ownership of child as for
 * loom_module_add_child (taken also on failure, except where it already
 * belongs to a module). LOOM_ERR_INVALID_ARG if there is no such
 * submodule. For transfer learning:
 *     loom_module_replace_child(net, "fc", loom_linear(ctx, 512, 2, true)); */
loom_status loom_module_replace_child(loom_module *m, const char *path, loom_module *child);

/* Freezes (frozen = true: requires_grad off) or unfreezes the parameters
 * of m whose dotted names lie under prefix ("layer4" covers
 * "layer4.0.conv1.weight"; NULL or "" covers all). BatchNorm2d modules under
 * the prefix are frozen as PyTorch fine-tuning recipes freeze them: pinned
 * to evaluation mode (their running statistics no longer move, even when
 * loom_module_train(m, true) is called), until unfrozen. Returns how many
 * parameters changed, or -1 (error set).
 *     loom_module_freeze(net, NULL, true);        // everything
 *     loom_module_freeze(net, "layer4", false);   // fine-tune layer4 */
int loom_module_freeze(loom_module *m, const char *prefix, bool frozen);
/* As loom_module_parameters, but only those that require grad (what an
 * optimizer should get after loom_module_freeze). */
int loom_module_trainable_parameters(loom_module *m, loom_tensor **params, const char **names, int cap);

/* Runs the module. x is not consumed. */
loom_tensor *loom_module_forward(loom_module *m, loom_tensor *x);
/* relu(loom_module_forward(m, x)), the same values bitwise, with the ReLU
 * fused into the module's own node where m is a Conv2d (oneDNN's post-op)
 * or a BatchNorm2d (loom_batch_norm_relu): one pass over the output instead
 * of two, and one tensor fewer kept for backward. Any other module runs,
 * then loom_relu. Sequential does this for each Conv2d or BatchNorm2d
 * followed by a ReLU module. */
loom_tensor *loom_module_forward_relu(loom_module *m, loom_tensor *x);

const char *loom_module_type(const loom_module *m);
loom_ctx *loom_module_ctx(const loom_module *m);
/* The child called `name` (borrowed), or NULL (error set). A dotted path
 * ("encoder.0") names a deeper submodule. */
loom_module *loom_module_child(loom_module *m, const char *name);
/* The direct parameter or buffer called `name` ("weight"), or with a dotted
 * path ("fc1.weight") - borrowed, owned by the module - or NULL. */
loom_tensor *loom_module_get(loom_module *m, const char *name);

/* Training mode (dropout active) or evaluation mode, for m and its children. */
void loom_module_train(loom_module *m, bool training);
bool loom_module_is_training(const loom_module *m);

/* Every parameter of m and its children, in registration order (PyTorch's
 * named_parameters order: m's own first, then each child's, recursively).
 * Fills up to `cap` entries of params (and names, if not NULL: full dotted
 * names, owned by the module) and returns the total count, or -1 (error
 * set) if m is NULL or memory runs out. params may be NULL too. The tensors
 * are borrowed: owned by the module. The name strings stay valid until
 * something is registered in m or below it, or m is freed. */
int loom_module_parameters(loom_module *m, loom_tensor **params, const char **names, int cap);
/* Parameters and buffers: the state_dict (per module: parameters, then
 * buffers, then children). Same conventions. */
int loom_module_state(loom_module *m, loom_tensor **tensors, const char **names, int cap);

/* Frees m, its children, parameters and buffers. NULL is a no-op. Modules
 * must be freed before their context. Freeing a child also removes it from
 * its parent. */
void loom_module_free(loom_module *m);

/* ---- layers ---------------------------------------------------------- */

/* y = x W^T + b for x [..., in]; weight [out, in], bias [out]
 * (in, out >= 1, else LOOM_ERR_INVALID_ARG); PyTorch's init: weight
 * kaiming-uniform with a = sqrt(5) (uniform in +-1/sqrt(in)), bias uniform
 * in +-1/sqrt(in), drawn from the context's generator. */
loom_module *loom_linear(loom_ctx *ctx, int64_t in_features, int64_t out_features, bool bias);
loom_module *loom_relu_module(loom_ctx *ctx);
loom_module *loom_sigmoid_module(loom_ctx *ctx);
loom_module *loom_tanh_module(loom_ctx *ctx);
loom_module *loom_softmax_module(loom_ctx *ctx, int dim);
loom_module *loom_log_softmax_module(loom_ctx *ctx, int dim);
/* Zeroes elements with probability p in training mode and scales the rest
 * by 1/(1-p); the identity in evaluation mode. Masks come from the context's
 * generator. p in [0, 1), else LOOM_ERR_INVALID_ARG. */
loom_module *loom_dropout_module(loom_ctx *ctx, double p);
/* Children named "0", "1", ...; takes ownership of the n modules (also of
 * those already created when it fails). A Conv2d directly followed by a
 * ReLU runs as one convolution with a fused ReLU (same values). */
loom_module *loom_sequential(loom_ctx *ctx, int n, loom_module *const *modules);

/* ---- CNN layers (NCHW) ------------------------------------------------- */

/* Convolution options; zeroed fields take PyTorch's defaults (stride 1,
 * padding 0, dilation 1, groups 1). [0] is the height, [1] the width. */
typedef struct loom_conv2d_opts {
    int stride[2];
    int padding[2];
    int dilation[2];
    int groups;
    bool relu; /* apply ReLU to the output, fused into the convolution */
} loom_conv2d_opts;

/* nn.Conv2d: weight [out, in/groups, kh, kw], bias [out]; PyTorch's init
 * (kaiming-uniform a = sqrt(5): uniform in +-1/sqrt(fan_in), bias likewise,
 * fan_in = in/groups * kh * kw). opts may be NULL (defaults). */
loom_module *loom_conv2d_module(loom_ctx *ctx, int64_t in_channels, int64_t out_channels, int kh, int kw,
                                const loom_conv2d_opts *opts, bool bias);

/* Pooling options: kernel is required; stride 0 means the kernel size;
 * exclude_pad makes avg pooling divide by the in-input part of the window
 * only (PyTorch's count_include_pad=False; the default counts padding). */
typedef struct loom_pool2d_opts {
    int kernel[2];
    int stride[2];
    int padding[2]; /* at most half the kernel */
    bool ceil_mode;
    bool exclude_pad;
} loom_pool2d_opts;

loom_module *loom_max_pool2d_module(loom_ctx *ctx, const loom_pool2d_opts *opts);
loom_module *loom_avg_pool2d_module(loom_ctx *ctx, const loom_pool2d_opts *opts);
loom_module *loom_adaptive_avg_pool2d_module(loom_ctx *ctx, int64_t out_h, int64_t out_w);
/* nn.BatchNorm2d(num_features, eps, momentum, affine): parameters "weight"
 * (ones) and "bias" (zeros) when affine; buffers "running_mean" (zeros),
 * "running_var" (ones) and "num_batches_tracked" (int64 0-dim, PyTorch's
 * count of training forwards, so that state dicts match PyTorch's
 * exactly). Training mode normalises with the batch statistics and updates
 * the running ones; evaluation mode uses the running ones. */
loom_module *loom_batch_norm2d_module(loom_ctx *ctx, int64_t num_features, double eps, double momentum, bool affine);
/* torch.nn.utils.fuse_conv_bn_eval: a new Conv2d (with bias) computing
 * bn(conv(x)) in evaluation mode, with the batch norm's running statistics
 * and affine parameters folded into its weight and bias:
 *   scale = gamma / sqrt(running_var + eps), w' = w * scale[o],
 *   b' = (b - running_mean) * scale + beta.
 * conv and bn are only read; the caller owns the result. For inference:
 * one convolution instead of a convolution and a batch-norm pass. */
loom_module *loom_fuse_conv_bn_eval(loom_module *conv, loom_module *bn);
/* nn.Flatten(start_dim, end_dim); PyTorch's defaults are 1 and -1. */
loom_module *loom_flatten_module(loom_ctx *ctx, int start_dim, int end_dim);

/* ---- recurrent layers (torch.nn.RNN, LSTM, GRU and their cells) ---------- */

/* The cell of a recurrent layer. With x_t the input, h the previous hidden
 * state and W_i*, W_h*, b_i*, b_h* the rows of weight_ih, weight_hh,
 * bias_ih, bias_hh for one gate (PyTorch's equations and gate order):
 *   RNN_TANH / RNN_RELU: h' = act(W_ih x + b_ih + W_hh h + b_hh)
 *   LSTM (gates i, f, g, o): i = sig(.), f = sig(.), g = tanh(.), o = sig(.)
 *        c' = f * c + i * g,  h' = o * tanh(c')
 *   GRU (gates r, z, n): r = sig(W_ir x + b_ir + W_hr h + b_hr), z likewise,
 *        n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h */
typedef enum loom_rnn_mode {
    LOOM_RNN_TANH = 0,
    LOOM_RNN_RELU,
    LOOM_LSTM,
    LOOM_GRU,
    LOOM_RNN_MODE_COUNT
} loom_rnn_mode;

/* Options of a recurrent layer; a zeroed struct (or NULL) gives PyTorch's
 * defaults: one layer, with biases, time-major input, no dropout, one
 * direction. */
typedef struct loom_rnn_opts {
    int num_layers;     /* 0 means 1 */
    bool no_bias;       /* PyTorch's bias=False */
    bool batch_first;   /* input and output [N, T, *] instead of [T, N, *] */
    double dropout;     /* on each layer's output but the last, in training mode; [0, 1) */
    bool bidirectional; /* a second direction, reading the sequence backwards */
} loom_rnn_opts;

/* nn.RNN (mode RNN_TANH or RNN_RELU), nn.LSTM (LSTM) or nn.GRU (GRU), type
 * "RNN", "LSTM" or "GRU". G = 1, 4 or 3 gates, D = 2 if bidirectional
 * else 1. Parameters as PyTorch names and orders them, for each layer k and
 * direction (suffix "_reverse" for the second):
 *   weight_ih_l{k} [G*H, I] (I = input_size for k = 0, D*H above),
 *   weight_hh_l{k} [G*H, H], bias_ih_l{k} [G*H], bias_hh_l{k} [G*H],
 * rows grouped by gate in the order above, all uniform in +-1/sqrt(H) as
 * PyTorch initialises them; so PyTorch's weights load unchanged.
 * loom_module_forward(m, x) returns the output alone, with zero initial
 * states; loom_rnn_forward gives the states too. */
loom_module *loom_rnn_module(loom_ctx *ctx, loom_rnn_mode mode, int64_t input_size, int64_t hidden_size,
                             const loom_rnn_opts *opts);

/* Runs a recurrent layer. x: [T, N, I] ([N, T, I] if batch_first), or
 * unbatched [T, I]. h0 (may be NULL: zeros): [L*D, N, H] ([L*D, H]
 * unbatched), entries ordered layer by layer, forward direction first; c0
 * likewise, for LSTM only (NULL otherwise). Sets *output to [T, N, D*H]
 * ([N, T, D*H] if batch_first, [T, D*H] unbatched): the last layer's h_t
 * for every t, both directions concatenated; *h_n (if h_n is not NULL) to
 * the final hidden states, shaped as h0; *c_n (LSTM only; may be NULL) to
 * the final cell states. The results belong to the current scope.
 * LOOM_ERR_SHAPE names a wrong shape, LOOM_ERR_INVALID_ARG a c0 or c_n for
 * a layer other than an LSTM. The steps are recorded as ops (a matmul for
 * the input projection of all steps at once, then per step a matmul and the
 * gates), so autograd gives backpropagation through time, and the
 * scheduler runs independent directions and layers' steps side by side. */
loom_status loom_rnn_forward(loom_module *m, loom_tensor *x, loom_tensor *h0, loom_tensor *c0, loom_tensor **output,
                             loom_tensor **h_n, loom_tensor **c_n);

/* nn.RNNCell (RNN_TANH, RNN_RELU), nn.LSTMCell, nn.GRUCell: one step, for
 * users who write their own time loop. Type "RNNCell", "LSTMCell" or
 * "GRUCell"; parameters weight_ih [G*H, I], weight_hh [G*H, H], bias_ih,
 * bias_hh [G*H] (unless !bias), uniform in +-1/sqrt(H).
 * loom_module_forward(m, x) returns h' from a zero state. */
loom_module *loom_rnn_cell_module(loom_ctx *ctx, loom_rnn_mode mode, int64_t input_size, int64_t hidden_size,
                                  bool bias);
/* One step: x [N, I] or [I]; h, c [N, H] or [H] (NULL: zeros; c for LSTM
 * only). Sets *h_out and, for LSTM, *c_out (may be NULL), in the current
 * scope. */
loom_status loom_rnn_cell_forward(loom_module *m, loom_tensor *x, loom_tensor *h, loom_tensor *c, loom_tensor **h_out,
                                  loom_tensor **c_out);

/* ---- functional forms ------------------------------------------------ */

/* Every function here records ops and returns a new tensor owned by the
 * current scope (intermediates are not left in the scope), or NULL with the
 * error set; inputs are float32. */
loom_tensor *loom_linear_fn(loom_tensor *x, loom_tensor *weight, loom_tensor *bias /* may be NULL */);
/* Over dim, stable for any magnitude (the max along dim is subtracted). */
loom_tensor *loom_softmax(loom_tensor *t, int dim);
loom_tensor *loom_log_softmax(loom_tensor *t, int dim);

/* F.conv2d: x [N, C, H, W], weight [O, C/groups, kh, kw], bias [O] or NULL
 * -> [N, O, OH, OW], OH = (H + 2*padding - dilation*(kh-1) - 1)/stride + 1.
 * opts NULL: defaults. */
loom_tensor *loom_conv2d(loom_tensor *x, loom_tensor *weight, loom_tensor *bias, const loom_conv2d_opts *opts);
/* F.max_pool2d / F.avg_pool2d on x [N, C, H, W], output sizes as PyTorch
 * (ceil_mode included). Max-pool's gradient goes to the first maximum of
 * each window, as PyTorch's. */
loom_tensor *loom_max_pool2d(loom_tensor *x, const loom_pool2d_opts *opts);
loom_tensor *loom_avg_pool2d(loom_tensor *x, const loom_pool2d_opts *opts);
/* F.adaptive_avg_pool2d: window i covers rows floor(i*H/out_h) to
 * ceil((i+1)*H/out_h) - 1 (likewise columns). */
loom_tensor *loom_adaptive_avg_pool2d(loom_tensor *x, int64_t out_h, int64_t out_w);
/* F.batch_norm over dim 1 of x [N, C, *]. weight/bias may be NULL (1 and
 * 0). training: batch statistics, and running_mean/running_var (if given)
 * are updated in place with momentum, the variance unbiased; else the
 * running statistics are used (and required). */
loom_tensor *loom_batch_norm(loom_tensor *x, loom_tensor *running_mean, loom_tensor *running_var,
                             loom_tensor *weight, loom_tensor *bias, bool training, double momentum, double eps);
/* relu(loom_batch_norm(...)) as one node (bitwise the same values and
 * gradients): the normalised tensor is neither written nor kept. */
loom_tensor *loom_batch_norm_relu(loom_tensor *x, loom_tensor *running_mean, loom_tensor *running_var,
                                  loom_tensor *weight, loom_tensor *bias, bool training, double momentum,
                                  double eps);
/* Fraction of rows of logits [N, K] whose argmax equals labels [N] (int64):
 * a float32 scalar. */
loom_tensor *loom_accuracy(loom_tensor *logits, loom_tensor *labels);
/* p in [0, 1]: p == 0 or !training gives an alias of t, p == 1 zeros. */
loom_tensor *loom_dropout(loom_tensor *t, double p, bool training);

/* ---- losses ------------------------------------------------------------ */

typedef enum loom_reduction {
    LOOM_REDUCTION_MEAN = 0,
    LOOM_REDUCTION_SUM,
    LOOM_REDUCTION_NONE,
    LOOM_REDUCTION_COUNT
} loom_reduction;

/* Losses return a 0-dim tensor (MEAN, SUM) or the per-element losses
 * (NONE: input's shape, or the target's for nll/cross_entropy). Bad
 * arguments are reported at the call: LOOM_ERR_INVALID_ARG (NULL, bad
 * reduction), LOOM_ERR_DTYPE, LOOM_ERR_SHAPE. Input and target shapes must
 * match exactly: where PyTorch broadcasts them with a warning, these fail
 * ("mse_loss: input [4, 1] and target [4] have different shapes").
 * Gradients are PyTorch's, also for a float32 target (except bce_loss's
 * target gradient at an input of exactly 0 or 1: finite here, inf there). */

/* input and target of one shape (float32). */
loom_tensor *loom_mse_loss(loom_tensor *input, loom_tensor *target, loom_reduction r);
/* input: probabilities in [0, 1] (not checked: outside, the loss is NaN,
 * where PyTorch raises); log clamped at -100 as PyTorch does (an input of
 * exactly 0 or 1 costs at most 100, with a finite gradient). */
loom_tensor *loom_bce_loss(loom_tensor *input, loom_tensor *target, loom_reduction r);
/* input: logits; numerically stable. */
loom_tensor *loom_bce_with_logits_loss(loom_tensor *input, loom_tensor *target, loom_reduction r);
/* input: log-probabilities [N, C] (or [C] with a 0-dim target, or
 * [N, C, d1, ...] with target [N, d1, ...]); target: int64 class indices [N]
 * in [0, C) - an index out of range fails when the loss is computed (no
 * ignore_index, no class weights). MEAN divides by the number of targets. */
loom_tensor *loom_nll_loss(loom_tensor *input, loom_tensor *target, loom_reduction r);
/* input: logits [N, C]; target: int64 [N] (same shapes as nll_loss).
 * log_softmax over the class dim + nll_loss. */
loom_tensor *loom_cross_entropy_loss(loom_tensor *input, loom_tensor *target, loom_reduction r);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_NN_H */
