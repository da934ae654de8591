/*
 * backends/ref/sgemm.h - portable, cache-blocked, packed single-precision GEMM
 * of Loom's portable C backend (internal; not part of the public API).
 *
 * GotoBLAS/BLIS structure: jc (NC) -> pc (KC) -> pack B panel -> ic (MC) ->
 * pack A block -> jr (NR) -> ir (MR) -> MR x NR register-blocked micro-kernel
 * written with GCC vector extensions (scalar fallback for other compilers).
 * Threads (OpenMP) each own a rectangle of C and pack their own operands, so
 * the parallel region has no barriers.
 */
#ifndef LOOM_BACKENDS_REF_SGEMM_H
#define LOOM_BACKENDS_REF_SGEMM_H

#include <stddef.h>
#include <stdint.h>

#include "loom/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of workspace loom__sgemm needs for these sizes and thread count
 * (0 when it needs none, e.g. when m, n or k is 0). Deterministic: the same
 * arguments always give the same size, whatever the strides. With T threads
 * actually used (<= nthreads) and the balanced blocks mc <= MC, kc <= KC,
 * nc <= NC it is T * (round64(4*mc*kc + 64) + round64(4*kc*nc)), or for
 * m <= 4 or n <= 4 at least round64(4 * that small size * k): about
 * 4.2 MB per thread at most with the AVX2 / AVX-512 blocking. */
size_t loom__sgemm_workspace_size(int64_t m, int64_t n, int64_t k, int nthreads);

/* Bytes enough for every call with at most m, n and k (and nthreads): the
 * blocks are balanced, so a smaller size can need a larger block than
 * these sizes do (k = 752 a larger one than k = 1054); the sizes at the
 * block limits are counted too. For a workspace shared by GEMMs of
 * varying shapes. */
size_t loom__sgemm_workspace_bound(int64_t m, int64_t n, int64_t k, int nthreads);

/* C (m x n) = alpha * A (m x k) * B (k x n) + beta * C.
 * Element (i, p) of A is a[i * rsa + p * csa]; (p, j) of B is b[p * rsb + j * csb]
 * (so transposed or otherwise strided operands need no copy: packing reads them);
 * element (i, j) of C is c[i * rsc + j]. Strides are in elements and may be any
 * value >= 0 for A and B. beta == 0 means C is not read (may hold NaN/garbage).
 * alpha == 0 or k == 0 means A and B are not read and C = beta * C.
 * nthreads: number of OpenMP threads to use (1 = no parallel region); at most
 * nthreads are used (fewer for problems too small to split usefully), and
 * values < 1 count as 1.
 * ws / ws_size: caller-provided workspace of at least
 * loom__sgemm_workspace_size(m, n, k, nthreads) bytes, 64-byte aligned;
 * ws == NULL makes the call allocate (and free) its own, returning
 * LOOM_ERR_NOMEM if that fails. A non-NULL ws smaller than needed or not
 * 64-byte aligned gives LOOM_ERR_INVALID_ARG, as do negative sizes or strides
 * and NULL operands that would be read. Never calls exit/abort. */
loom_status loom__sgemm(int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t rsa, int64_t csa,
                        const float *b, int64_t rsb, int64_t csb,
                        float beta, float *c, int64_t rsc,
                        int nthreads, void *ws, size_t ws_size);

/* The register/cache blocking compiled in (for tests and benchmarks). */
typedef struct loom__sgemm_blocking {
    int mr, nr;          /* micro-tile */
    int mc, kc, nc;      /* cache blocks (upper bounds; balanced per call) */
    int vector_bytes;    /* 64, 32, 16, or 0 for the scalar kernel */
} loom__sgemm_blocking;

loom__sgemm_blocking loom__sgemm_get_blocking(void);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_BACKENDS_REF_SGEMM_H */
