/*
 * loom/loom.h - the whole public API of Loom, a define-by-run deep-learning
 * runtime for multicore CPUs.
 *
 *     #include <loom/loom.h>
 *
 *     loom_ctx *ctx = loom_ctx_create(NULL);
 *     loom_tensor *a = loom_tensor_from_array(ctx, LOOM_FLOAT32,
 *                          (float[]){1, 2, 3}, LOOM_SHAPE(3));
 *     loom_tensor *b = loom_tensor_from_array(ctx, LOOM_FLOAT32,
 *                          (float[]){4, 5, 6}, LOOM_SHAPE(3));
 *     loom_tensor_print(loom_add(a, b), stdout);   // tensor([5., 7., 9.])
 *     loom_ctx_free(ctx);                          // frees every tensor
 *
 * Link with `pkg-config --cflags --libs loom`.
 */
#ifndef LOOM_LOOM_H
#define LOOM_LOOM_H

#include "loom/status.h"
#include "loom/types.h"
#include "loom/context.h"
#include "loom/tensor.h"
#include "loom/ops.h"
#include "loom/autograd.h"
#include "loom/nn.h"
#include "loom/optim.h"
#include "loom/data.h"
#include "loom/graph.h"
#include "loom/io.h"
#include "loom/models.h"
#include "loom/dist.h"

#define LOOM_VERSION_MAJOR 0
#define LOOM_VERSION_MINOR 1
#define LOOM_VERSION_PATCH 0

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version string ("0.1.0"). */
const char *loom_version(void);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_LOOM_H */
