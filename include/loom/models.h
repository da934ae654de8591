/*
 * loom/models.h - ready-made models, built from Loom's nn modules exactly as
 * torchvision builds them, with torchvision's parameter and buffer names, so
 * that torchvision's state dicts (a .pth from torch.save, or safetensors)
 * load unchanged with loom_module_load().
 *
 *     loom_module *net = loom_resnet(ctx, 18, NULL);            // 1000 classes
 *     loom_module_load(net, "resnet18.pth", true);
 *     loom_module_train(net, false);
 *     loom_tensor *logits = loom_module_forward(net, x);        // x [N, 3, H, W]
 */
#ifndef LOOM_MODELS_H
#define LOOM_MODELS_H

#include <stdbool.h>
#include <stdint.h>

#include "loom/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Options of torchvision.models.resnet*; a zeroed struct (or NULL) gives
 * torchvision's defaults. */
typedef struct loom_resnet_opts {
    int64_t num_classes;     /* 0 means 1000 */
    bool zero_init_residual; /* the last BatchNorm of each block starts at weight 0 */
    int64_t in_channels;     /* 0 means 3; 1 for grayscale data (conv1 is then [64, 1, 7, 7]) */
} loom_resnet_opts;

/* ResNet-18, 34 (BasicBlock: [2, 2, 2, 2], [3, 4, 6, 3]), 50, 101, 152
 * (Bottleneck, the stride on the 3x3 convolution: [3, 4, 6, 3],
 * [3, 4, 23, 3], [3, 8, 36, 3]), type "ResNet". Children and names as
 * torchvision's: conv1, bn1, relu, maxpool, layer1..layer4 (blocks "0",
 * "1", ... with conv1, bn1, conv2, bn2[, conv3, bn3][, downsample.0 (1x1
 * conv), downsample.1 (BatchNorm2d)]), avgpool, fc. Initialisation as
 * torchvision's: convolutions kaiming-normal (fan_out, relu), BatchNorm
 * weight 1 and bias 0, fc PyTorch's Linear default. Input [N, in_channels,
 * H, W] of any size (the strides take 224 to 7 before the average pool, 28
 * to 1); output [N, num_classes]. The two branches of each block are
 * independent nodes of the DAG, so the scheduler runs them side by side.
 * depth not one of the five: LOOM_ERR_INVALID_ARG. */
loom_module *loom_resnet(loom_ctx *ctx, int depth, const loom_resnet_opts *opts);

/* A new module computing what resnet (a loom_resnet, in evaluation mode)
 * computes, faster, for inference only: every BatchNorm is folded into the
 * convolution before it (loom_fuse_conv_bn_eval: w' = w * gamma/sqrt(var +
 * eps), a bias) and every ReLU that follows a convolution runs inside it,
 * as TorchScript's optimize_for_inference does. A snapshot: the weights,
 * running statistics and the current fc are copied; later changes to
 * resnet do not reach it (fuse again after loading or training). Type
 * "ResNetFused"; children stem, layer1..layer4, avgpool, fc. Not for
 * training (it has no BatchNorm). Results equal resnet's within float
 * rounding (tests/check_models.c). NULL with LOOM_ERR_INVALID_ARG for a
 * module that is not a ResNet. */
loom_module *loom_resnet_fuse_for_inference(loom_module *resnet);

/* ---- the model zoo ------------------------------------------------------- */

/* What a zoo model is built for; zeroed fields take the model's defaults. */
typedef struct loom_model_opts {
    int64_t in_channels; /* 0: 1 (mlp, simplecnn, rnn, lstm, gru) or 3 (resnets) */
    int64_t height;      /* the images' size, 0: 28; mlp and simplecnn are built for */
    int64_t width;       /*   it, the recurrent models for the width (rows are steps) */
    int64_t num_classes; /* 0: 10, or 1000 for resnets (torchvision's) */
} loom_model_opts;

/* A model of the zoo by name (models/zoo.c), with fresh PyTorch-default
 * weights. Every one takes float32 images [N, C, H, W] and returns
 * [N, classes]:
 *   "mlp"        PyTorch's quickstart network: children flatten and
 *                linear_relu_stack = Sequential(Linear(C*H*W, 512), ReLU,
 *                Linear(512, 512), ReLU, Linear(512, classes)); logits.
 *   "simplecnn"  the seed's SimpleCNN (loom_simple_cnn); log-probabilities.
 *   "rnn", "lstm", "gru"
 *                row-by-row classifiers: image rows are H steps of C*W
 *                features; children rnn (one batch_first layer, hidden
 *                128) and fc = Linear(128, classes) on the last step; logits.
 *   "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"
 *                loom_resnet with in_channels and num_classes (height and
 *                width unused: any size runs); logits.
 * Cross-entropy trains all of them (log_softmax of log-probabilities is
 * the identity). An unknown name or a negative option:
 * LOOM_ERR_INVALID_ARG naming the known models. Wrong input shapes at
 * forward: LOOM_ERR_SHAPE naming the expected one. */
loom_module *loom_model(loom_ctx *ctx, const char *name, const loom_model_opts *opts);

/* The names loom_model knows, in the order above, NULL-terminated. */
const char *const *loom_model_names(void);

/* The seed's SimpleCNN (PyTorch's MNIST example without dropout), type
 * "SimpleCNN", children conv1 = Conv2d(C, 32, 3), conv2 = Conv2d(32, 64, 3),
 * fc1 = Linear(64 * ((H-4)/2) * ((W-4)/2), 128) (9216 for 28 x 28),
 * fc2 = Linear(128, classes):
 *     x [N, C, H, W] -> relu(conv1) -> relu(conv2) -> max_pool 2
 *       -> flatten -> relu(fc1) -> fc2 -> log_softmax  [N, classes]
 * Images smaller than 6 x 6: LOOM_ERR_INVALID_ARG. */
loom_module *loom_simple_cnn(loom_ctx *ctx, const loom_model_opts *opts);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_MODELS_H */
