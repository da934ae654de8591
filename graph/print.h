/*
 * graph/print.h - tensor formatting that matches PyTorch 1.13's repr().
 *
 * The output is what `repr(t)` (== `str(t)`) prints under PyTorch's default
 * print options: precision 4, threshold 1000, edgeitems 3, linewidth 80,
 * sci_mode None. Keeping it byte-identical lets users diff Loom's output
 * against a PyTorch session, and lets the tests compare against strings
 * produced by real PyTorch (tests/fixtures/print_cases.h).
 */
#ifndef LOOM_GRAPH_PRINT_H
#define LOOM_GRAPH_PRINT_H

#include <stdint.h>

#include "loom/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Formats a tensor as PyTorch's repr does ("tensor([5., 7., 9.])").
 * data: the elements in contiguous row-major order (float, int64_t or
 * uint8_t 0/1 for bool; any nonzero byte counts as True); it may be NULL
 * when the tensor is empty. ndim 0..LOOM_MAX_DIMS (ndim 0 = a scalar:
 * "tensor(5.)"). Returns a malloc'd NUL-terminated string the caller frees
 * with free(), or NULL if allocation fails or the arguments are invalid (bad
 * dtype or ndim, a negative size, NULL shape/data where they are needed). */
char *loom__format_tensor(loom_dtype dtype, const void *data, int ndim, const int64_t *shape);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_GRAPH_PRINT_H */
