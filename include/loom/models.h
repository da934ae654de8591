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
} loom_resnet_opts;

/* ResNet-18, 34 (BasicBlock: [2, 2, 2, 2], [3, 4, 6, 3]), 50, 101, 152
 * (Bottleneck, the stride on the 3x3 convolution: [3, 4, 6, 3],
 * [3, 4, 23, 3], [3, 8, 36, 3]), type "ResNet". Children and names as
 * torchvision's: conv1, bn1, relu, maxpool, layer1..layer4 (blocks "0",
 * "1", ... with conv1, bn1, conv2, bn2[, conv3, bn3][, downsample.0 (1x1
 * conv), downsample.1 (BatchNorm2d)]), avgpool, fc. Initialisation as
 * torchvision's: convolutions kaiming-normal (fan_out, relu), BatchNorm
 * weight 1 and bias 0, fc PyTorch's Linear default. Input [N, 3, H, W] of
 * any size the strides allow (H, W >= 1 after the 32x reduction: at least
 * 33); output [N, num_classes]. The two branches of each block are
 * independent nodes of the DAG, so the scheduler runs them side by side.
 * depth not one of the five: LOOM_ERR_INVALID_ARG. */
loom_module *loom_resnet(loom_ctx *ctx, int depth, const loom_resnet_opts *opts);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_MODELS_H */
