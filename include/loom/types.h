/*
 * loom/types.h - element types and shape helpers shared by the public API.
 */
#ifndef LOOM_TYPES_H
#define LOOM_TYPES_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types. FLOAT32 for data, INT64 for labels and indices, BOOL for
 * the results of comparisons and for masks (one byte per element, 0 or 1). */
typedef enum loom_dtype {
    LOOM_FLOAT32 = 0,
    LOOM_INT64,
    LOOM_BOOL,
    LOOM_DTYPE_COUNT
} loom_dtype;

/* Tensors have at most this many dims. */
#define LOOM_MAX_DIMS 8

/* Bytes per element of a dtype (0 for an invalid dtype). */
int loom_dtype_size(loom_dtype dtype);

/* PyTorch's name of a dtype ("float32", "int64", "bool"); "?" if invalid. */
const char *loom_dtype_name(loom_dtype dtype);

/* LOOM_SHAPE(2, 3) expands to the two arguments `2, (const int64_t[]){2, 3}`
 * (ndim, shape) that creation and view functions take. */
#define LOOM__NARGS(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define LOOM_SHAPE(...) LOOM__NARGS(__VA_ARGS__), ((const int64_t[]){__VA_ARGS__})
/* LOOM_DIMS(0, 2) expands to `2, (const int[]){0, 2}` (ndims, dims). */
#define LOOM_DIMS(...) ((int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int))), ((const int[]){__VA_ARGS__})

#ifdef __cplusplus
}
#endif
#endif /* LOOM_TYPES_H */
