/*
 * backends/ref/sgemm.c - portable, cache-blocked, packed SGEMM.
 *
 * Structure (GotoBLAS / BLIS), per thread:
 *
 *   for jc in n-range, step NC            B panel  (KC x NC)  -> L3
 *     for pc in 0..k, step KC
 *       pack B[pc.., jc..] into NR-wide column slivers
 *       for ic in m-range, step MC        A block  (MC x KC)  -> L2
 *         pack alpha * A[ic.., pc..] into MR-high row slivers
 *         for jr, step NR                 B sliver (KC x NR)  -> L1
 *           for ir, step MR
 *             MR x NR micro-kernel: C tile (+)= A sliver * B sliver
 *
 * Packed slivers are zero-padded to full MR / NR, so the micro-kernel always
 * computes a full tile; partial tiles at the m / n edges go through a small
 * aligned buffer. beta is applied by the first k block (pc == 0), which also
 * means beta == 0 never reads C.
 *
 * Packing writes contiguous slivers: row-major A and column-major B are read
 * VL x VL at a time and transposed in registers; the other layouts are a
 * straight copy (B) or a gather of MR values per k (A).
 *
 * Threads: C is cut into tm x tn rectangles (one per thread, tm * tn ==
 * threads used); every thread packs its own A block and B panel into its own
 * slice of the workspace, so the parallel region needs no barrier. B (or A)
 * is packed redundantly by the tm (tn) threads that share it, which costs
 * O(k * (m + n)) next to the O(m * n * k) product. Problems under about
 * 2 * LOOM_SGEMM_MIN_WORK flops per thread use fewer threads.
 *
 * Skinny products (m <= 4, or n <= 4 by computing C^T = B^T A^T) skip the
 * packed path, which would pad to MR / NR and copy all of B to use it m
 * times: they stream B through an axpy kernel (row-major B) or a
 * dot-product kernel (column-major B), threads splitting the columns.
 *
 * Workspace (bytes; see loom__sgemm_workspace_size): with T threads used
 * and the per-call block sizes mc <= MC, kc <= KC, nc <= NC,
 *   T * (round64(4 * mc * kc + 64) + round64(4 * kc * nc)),
 * or, when m <= 4 or n <= 4, the larger of that and round64(4 * r * k),
 * r = the small dimension. At most about T * 4.2 MiB with AVX2 blocking.
 *
 * The micro-kernel uses GCC vector extensions (also understood by clang):
 * 64-byte vectors under AVX-512F, 32 under AVX/AVX2, 16 otherwise; the
 * multiply-add uses the FMA intrinsic where the target has one, because
 * -std=c11 turns off GCC's automatic contraction of a * b + c. Without GNU C
 * (or with -DLOOM_SGEMM_FORCE_SCALAR) a plain scalar 4 x 4 kernel is used.
 * LOOM_SGEMM_VB=64/32/16 forces a vector width (wider than the target is
 * fine: GCC splits the vectors; used to test the AVX-512 blocking on AVX2).
 */
#include "sgemm.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "runtime/error.h"

/* ---------------------------------------------------------------- config */

#if !defined(__GNUC__) || defined(LOOM_SGEMM_FORCE_SCALAR)
#undef LOOM_SGEMM_VB
#define LOOM_SGEMM_VB 0
#elif !defined(LOOM_SGEMM_VB)
#if defined(__AVX512F__)
#define LOOM_SGEMM_VB 64
#elif defined(__AVX__)
#define LOOM_SGEMM_VB 32
#else
#define LOOM_SGEMM_VB 16
#endif
#endif

/* MR x NR micro-tile: MR * NV accumulators + NV B vectors + 1 broadcast
 * must fit the register file (16 vector registers before AVX-512, 32 with).
 * B sliver KC * NR * 4 bytes should sit in L1, A block MC * KC * 4 in L2. */
#if LOOM_SGEMM_VB == 64
/* 28 zmm accumulators + 2 B vectors + broadcast (or embedded {1to16}). */
#define SG_VL 16
#define SG_MR 14
#define SG_NV 2
#define SG_MC_DEF 168
#define SG_KC_DEF 256
#define SG_NC_DEF 4096
#elif LOOM_SGEMM_VB == 32
/* 12 ymm accumulators + 2 B vectors + 1 broadcast = 15 of 16. */
#define SG_VL 8
#define SG_MR 6
#define SG_NV 2
#define SG_MC_DEF 144
#define SG_KC_DEF 256
#define SG_NC_DEF 4080
#elif LOOM_SGEMM_VB == 16
/* 12 xmm accumulators + 2 B vectors + 1 broadcast = 15 of 16. */
#define SG_VL 4
#define SG_MR 6
#define SG_NV 2
#define SG_MC_DEF 144
#define SG_KC_DEF 256
#define SG_NC_DEF 4096
#elif LOOM_SGEMM_VB == 0
#define SG_VL 1
#define SG_MR 4
#define SG_NV 4
#define SG_MC_DEF 128
#define SG_KC_DEF 256
#define SG_NC_DEF 4096
#else
#error "LOOM_SGEMM_VB must be 64, 32, 16 or 0"
#endif

#define SG_NR (SG_VL * SG_NV)

/* Cache blocks can be overridden at build time for tuning. */
#ifndef LOOM_SGEMM_MC
#define LOOM_SGEMM_MC SG_MC_DEF
#endif
#ifndef LOOM_SGEMM_KC
#define LOOM_SGEMM_KC SG_KC_DEF
#endif
#ifndef LOOM_SGEMM_NC
#define LOOM_SGEMM_NC SG_NC_DEF
#endif

#if LOOM_SGEMM_MC % SG_MR != 0 || LOOM_SGEMM_NC % SG_NR != 0 || LOOM_SGEMM_KC < 1
#error "LOOM_SGEMM_MC must be a multiple of MR, LOOM_SGEMM_NC of NR"
#endif

#define SG_ALIGN 64

/* A thread's share must be worth a fork: about 2 * 2 * 32^3 flops (measured:
 * 64^3 gains from 2 threads, 48^3 barely). */
#ifndef LOOM_SGEMM_MIN_WORK
#define LOOM_SGEMM_MIN_WORK (2 * 32 * 32 * 32)
#endif
#define SG_MIN_WORK_PER_THREAD ((int64_t)LOOM_SGEMM_MIN_WORK)

#if defined(__GNUC__)
#define SG_LIKELY(x) __builtin_expect(!!(x), 1)
#define SG_PREFETCH_W(p) __builtin_prefetch((p), 1, 3)
#define SG_PREFETCH_R(p) __builtin_prefetch((p), 0, 3)
#define SG_ASSUME_ALIGNED(p, n) __builtin_assume_aligned((p), (n))
#else
#define SG_LIKELY(x) (x)
#define SG_PREFETCH_W(p) ((void)0)
#define SG_PREFETCH_R(p) ((void)0)
#define SG_ASSUME_ALIGNED(p, n) (p)
#endif

static int64_t sg_min(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t sg_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t sg_rup(int64_t a, int64_t b) { return sg_cdiv(a, b) * b; }

/* ---------------------------------------------------------- micro-kernel */

#if LOOM_SGEMM_VB > 0

typedef float sg_vf __attribute__((vector_size(LOOM_SGEMM_VB), aligned(LOOM_SGEMM_VB)));
/* Unaligned, aliasing view for loads/stores of C. */
typedef float sg_vfu __attribute__((vector_size(LOOM_SGEMM_VB), aligned(4), may_alias));

#if SG_VL == 16
#define SG_BCAST(x) ((sg_vf){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x})
#elif SG_VL == 8
#define SG_BCAST(x) ((sg_vf){x, x, x, x, x, x, x, x})
#else
#define SG_BCAST(x) ((sg_vf){x, x, x, x})
#endif

#if LOOM_SGEMM_VB == 64 && defined(__AVX512F__)
#include <immintrin.h>
#define SG_FMA(a, b, c) ((sg_vf)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#elif LOOM_SGEMM_VB == 32 && defined(__FMA__)
#include <immintrin.h>
#define SG_FMA(a, b, c) ((sg_vf)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#elif LOOM_SGEMM_VB == 16 && defined(__FMA__)
#include <immintrin.h>
#define SG_FMA(a, b, c) ((sg_vf)_mm_fmadd_ps((__m128)(a), (__m128)(b), (__m128)(c)))
#elif LOOM_SGEMM_VB == 16 && defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define SG_FMA(a, b, c) ((sg_vf)vfmaq_f32((float32x4_t)(c), (float32x4_t)(a), (float32x4_t)(b)))
#else
#define SG_FMA(a, b, c) ((a) * (b) + (c))
#endif

/* C[0:mr, 0:nr] = A sliver (kc x MR, alpha applied) * B sliver (kc x NR)
 * + beta * C, where beta == 0 does not read C. mr <= MR, nr <= NR. */
static void sg_kernel(int64_t kc, const float *restrict ap, const float *restrict bp,
                      float *restrict c, int64_t rsc, int mr, int nr, float beta)
{
    sg_vf acc[SG_MR][SG_NV];
    ap = SG_ASSUME_ALIGNED(ap, SG_ALIGN);
    bp = SG_ASSUME_ALIGNED(bp, SG_ALIGN);

    for (int r = 0; r < SG_MR; r++)
        for (int v = 0; v < SG_NV; v++)
            acc[r][v] = (sg_vf){0};

    /* the C tile is needed after the loop: start fetching it now */
    for (int r = 0; r < mr; r++) {
        SG_PREFETCH_W(c + r * rsc);
        SG_PREFETCH_W(c + r * rsc + nr - 1);
    }

#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        sg_vf bv[SG_NV];
        for (int v = 0; v < SG_NV; v++)
            bv[v] = ((const sg_vf *)bp)[v];
        for (int r = 0; r < SG_MR; r++) {
            const sg_vf av = SG_BCAST(ap[r]);
            for (int v = 0; v < SG_NV; v++)
                acc[r][v] = SG_FMA(av, bv[v], acc[r][v]);
        }
        ap += SG_MR;
        bp += SG_NR;
    }

    if (SG_LIKELY(mr == SG_MR && nr == SG_NR)) {
        if (beta == 0.0f) {
            for (int r = 0; r < SG_MR; r++)
                for (int v = 0; v < SG_NV; v++)
                    *(sg_vfu *)(c + r * rsc + v * SG_VL) = acc[r][v];
        } else if (beta == 1.0f) {
            for (int r = 0; r < SG_MR; r++)
                for (int v = 0; v < SG_NV; v++) {
                    sg_vfu *cp = (sg_vfu *)(c + r * rsc + v * SG_VL);
                    *cp = *cp + acc[r][v];
                }
        } else {
            for (int r = 0; r < SG_MR; r++)
                for (int v = 0; v < SG_NV; v++) {
                    sg_vfu *cp = (sg_vfu *)(c + r * rsc + v * SG_VL);
                    const sg_vf cv = *cp;
                    *cp = SG_FMA(SG_BCAST(beta), cv, acc[r][v]);
                }
        }
    } else {
        sg_vf tile[SG_MR][SG_NV];
        for (int r = 0; r < SG_MR; r++)
            for (int v = 0; v < SG_NV; v++)
                tile[r][v] = acc[r][v];
        const float *t = (const float *)tile;
        for (int r = 0; r < mr; r++) {
            float *cr = c + r * rsc;
            const float *tr = t + r * SG_NR;
            if (beta == 0.0f)
                for (int j = 0; j < nr; j++) cr[j] = tr[j];
            else if (beta == 1.0f)
                for (int j = 0; j < nr; j++) cr[j] += tr[j];
            else
                for (int j = 0; j < nr; j++) cr[j] = beta * cr[j] + tr[j];
        }
    }
}

#else /* scalar kernel */

static void sg_kernel(int64_t kc, const float *restrict ap, const float *restrict bp,
                      float *restrict c, int64_t rsc, int mr, int nr, float beta)
{
    float acc[SG_MR][SG_NR];
    for (int r = 0; r < SG_MR; r++)
        for (int j = 0; j < SG_NR; j++)
            acc[r][j] = 0.0f;
    for (int64_t p = 0; p < kc; p++) {
        for (int r = 0; r < SG_MR; r++) {
            const float av = ap[r];
            for (int j = 0; j < SG_NR; j++)
                acc[r][j] += av * bp[j];
        }
        ap += SG_MR;
        bp += SG_NR;
    }
    for (int r = 0; r < mr; r++) {
        float *cr = c + r * rsc;
        if (beta == 0.0f)
            for (int j = 0; j < nr; j++) cr[j] = acc[r][j];
        else if (beta == 1.0f)
            for (int j = 0; j < nr; j++) cr[j] += acc[r][j];
        else
            for (int j = 0; j < nr; j++) cr[j] = beta * cr[j] + acc[r][j];
    }
}

#endif

/* --------------------------------------------------------------- packing */

#if LOOM_SGEMM_VB > 0
/* Two-input shuffle with constant indices (GCC >= 12 and clang have
 * __builtin_shufflevector; older GCC has __builtin_shuffle). */
#if defined(__clang__) || __GNUC__ >= 12
#define SG_SHUF(a, b, ...) __builtin_shufflevector((a), (b), __VA_ARGS__)
#else
typedef int sg_vi __attribute__((vector_size(LOOM_SGEMM_VB)));
#define SG_SHUF(a, b, ...) __builtin_shuffle((a), (b), (sg_vi){__VA_ARGS__})
#endif

/* In-register transpose of the VL x VL block x[row][col]: afterwards x[q]
 * holds column q. */
static inline void sg_transpose(sg_vf *x)
{
#if SG_VL == 8
    /* unpck / shufps / vperm2f128 pattern: 24 single-instruction shuffles */
    sg_vf t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = SG_SHUF(x[i], x[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = SG_SHUF(x[i], x[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = SG_SHUF(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
        u[i + 1] = SG_SHUF(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        u[i + 2] = SG_SHUF(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
        u[i + 3] = SG_SHUF(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int i = 0; i < 4; i++) {
        x[i] = SG_SHUF(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        x[i + 4] = SG_SHUF(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
#else
    /* log2(VL) rounds of interleaving rows i and i + VL/2; each round
     * rotates the (row, column) index bits left by one, so after log2(VL)
     * rounds row and column have swapped. */
#if SG_VL == 4
#define SG_ILO(a, b) SG_SHUF(a, b, 0, 4, 1, 5)
#define SG_IHI(a, b) SG_SHUF(a, b, 2, 6, 3, 7)
#define SG_ROUNDS 2
#else
#define SG_ILO(a, b) SG_SHUF(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
#define SG_IHI(a, b) SG_SHUF(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
#define SG_ROUNDS 4
#endif
    for (int round = 0; round < SG_ROUNDS; round++) {
        sg_vf y[SG_VL];
        for (int i = 0; i < SG_VL / 2; i++) {
            y[2 * i] = SG_ILO(x[i], x[i + SG_VL / 2]);
            y[2 * i + 1] = SG_IHI(x[i], x[i + SG_VL / 2]);
        }
        for (int i = 0; i < SG_VL; i++)
            x[i] = y[i];
    }
#endif
}
#endif

/* Packed A slivers are written with whole vectors even when MR is not a
 * multiple of VL, so the buffer has this many bytes of slack at its end. */
#define SG_A_SLACK 64

/* Pack alpha * A[0:mc, 0:kc] (element (i, p) at a[i * rsa + p * csa]) into
 * MR-high row slivers: sliver s holds ap[s * MR * kc + p * MR + r]. Rows past
 * mc are zero. Row-major A is read VL columns of MR rows at a time and
 * transposed in registers (the next sliver's rows are prefetched); other
 * layouts are gathered MR elements at a time, so stores stay contiguous. */
static void sg_pack_a(int64_t mc, int64_t kc, const float *restrict a, int64_t rsa,
                      int64_t csa, float alpha, float *restrict ap)
{
    for (int64_t i0 = 0; i0 < mc; i0 += SG_MR) {
        const int mr = (int)sg_min(SG_MR, mc - i0);
        const float *as = a + i0 * rsa;
        if (mr == SG_MR && csa == 1) {
            const float *pf = as + (mc - i0 >= 2 * SG_MR ? SG_MR : 0) * rsa;
            int64_t p = 0;
#if LOOM_SGEMM_VB > 0
            enum { G = (SG_MR + SG_VL - 1) / SG_VL };
            for (; p + SG_VL <= kc; p += SG_VL) {
                if ((p & 15) == 0)
                    for (int r = 0; r < SG_MR; r++)
                        SG_PREFETCH_R(pf + r * rsa + p + 16);
                sg_vf x[G][SG_VL];
                for (int g = 0; g < G; g++) {
                    for (int r = 0; r < SG_VL; r++) {
                        const int row = g * SG_VL + r;
                        if (row < SG_MR) {
                            const sg_vf v = *(const sg_vfu *)(as + row * rsa + p);
                            x[g][r] = v * alpha;
                        } else {
                            x[g][r] = (sg_vf){0};
                        }
                    }
                    sg_transpose(x[g]);
                }
                /* q ascending, g ascending: each store's overhang past
                 * the MR values of column p + q is overwritten by the next
                 * one (the last lands in the slack or in the next sliver) */
                for (int q = 0; q < SG_VL; q++)
                    for (int g = 0; g < G; g++)
                        *(sg_vfu *)(ap + (p + q) * SG_MR + g * SG_VL) = x[g][q];
            }
#endif
            for (; p < kc; p++) {
                if ((p & 15) == 0)
                    for (int r = 0; r < SG_MR; r++)
                        SG_PREFETCH_R(pf + r * rsa + p + 16);
                for (int r = 0; r < SG_MR; r++)
                    ap[p * SG_MR + r] = alpha * as[r * rsa + p];
            }
        } else if (mr == SG_MR) {
            for (int64_t p = 0; p < kc; p++)
                for (int r = 0; r < SG_MR; r++)
                    ap[p * SG_MR + r] = alpha * as[r * rsa + p * csa];
        } else {
            for (int64_t p = 0; p < kc; p++) {
                int r = 0;
                for (; r < mr; r++)
                    ap[p * SG_MR + r] = alpha * as[r * rsa + p * csa];
                for (; r < SG_MR; r++)
                    ap[p * SG_MR + r] = 0.0f;
            }
        }
        ap += (int64_t)SG_MR * kc;
    }
}

/* Pack B[0:kc, 0:nc] (element (p, j) at b[p * rsb + j * csb]) into NR-wide
 * column slivers: sliver s holds bp[s * NR * kc + p * NR + j]. Columns past
 * nc are zero. Row-major B is copied row by row; column-major B is
 * transposed in registers VL x VL at a time. */
static void sg_pack_b(int64_t kc, int64_t nc, const float *restrict b, int64_t rsb,
                      int64_t csb, float *restrict bp)
{
    for (int64_t j0 = 0; j0 < nc; j0 += SG_NR) {
        const int nr = (int)sg_min(SG_NR, nc - j0);
        const float *bs = b + j0 * csb;
        if (nr == SG_NR && csb == 1) {
            for (int64_t p = 0; p < kc; p++) {
                const float *src = bs + p * rsb;
                float *dst = bp + p * SG_NR;
                for (int j = 0; j < SG_NR; j++)
                    dst[j] = src[j];
            }
        } else if (nr == SG_NR && rsb == 1) {
            /* columns contiguous (transposed B) */
            const float *pf = bs + (nc - j0 >= 2 * SG_NR ? SG_NR : 0) * csb;
            int64_t p = 0;
#if LOOM_SGEMM_VB > 0
            for (; p + SG_VL <= kc; p += SG_VL) {
                if ((p & 15) == 0)
                    for (int j = 0; j < SG_NR; j++)
                        SG_PREFETCH_R(pf + j * csb + p + 16);
                for (int g = 0; g < SG_NV; g++) {
                    sg_vf x[SG_VL];
                    for (int j = 0; j < SG_VL; j++)
                        x[j] = *(const sg_vfu *)(bs + (g * SG_VL + j) * csb + p);
                    sg_transpose(x);
                    for (int q = 0; q < SG_VL; q++)
                        *(sg_vf *)(bp + (p + q) * SG_NR + g * SG_VL) = x[q];
                }
            }
#endif
            for (; p < kc; p++) {
                if ((p & 15) == 0)
                    for (int j = 0; j < SG_NR; j++)
                        SG_PREFETCH_R(pf + j * csb + p + 16);
                for (int j = 0; j < SG_NR; j++)
                    bp[p * SG_NR + j] = bs[j * csb + p];
            }
        } else {
            for (int64_t p = 0; p < kc; p++) {
                int j = 0;
                for (; j < nr; j++)
                    bp[p * SG_NR + j] = bs[p * rsb + j * csb];
                for (; j < SG_NR; j++)
                    bp[p * SG_NR + j] = 0.0f;
            }
        }
        bp += (int64_t)SG_NR * kc;
    }
}

/* ------------------------------------------------------- skinny products */

/* For m <= SG_SMALL_M (GEMV-like, e.g. a batch of one) the packed path would
 * copy all of B to use each element only m times and pad the m rows to MR;
 * these kernels stream B instead. A's m rows are first copied, alpha
 * applied, to ap[i * k + p]. n <= SG_SMALL_M runs here too, on the
 * transposed problem C^T = B^T A^T (C^T then has a column stride). Needs a B
 * with unit stride along n (row-major, "axpy" kernel) or along k
 * (column-major, "dot" kernel). */
#ifndef LOOM_SGEMM_SMALL_M
#define LOOM_SGEMM_SMALL_M 4
#endif
#define SG_SMALL_M LOOM_SGEMM_SMALL_M

#if LOOM_SGEMM_VB > 0
#define SG_SMALL 1
/* floats of C (all rows) accumulated in L1 per pass of the axpy kernel */
#ifndef LOOM_SGEMM_SWT
#define LOOM_SGEMM_SWT 4096
#endif
#define SG_SWT LOOM_SGEMM_SWT

static void sg_small_store(float *c, float beta, float v)
{
    *c = beta == 0.0f ? v : beta * *c + v;
}

/* C[0:M, j0:j1] for a row-major B (b[p * rsb + j]); M is a constant after
 * inlining. Each pass accumulates W columns of the M rows in an L1 buffer
 * while streaming all k rows of B through it: wide passes keep the B reads
 * long and sequential. */
static inline __attribute__((always_inline)) void
sg_small_axpy_m(const int M, int64_t k, const float *restrict ap, const float *restrict b,
                int64_t rsb, float beta, float *c, int64_t rsc, int64_t csc, int64_t j0, int64_t j1)
{
    enum { WV_ALL = SG_SWT / SG_VL };
    const int WV = WV_ALL / M;   /* vectors per row and pass */
    const int W = WV * SG_VL;
    sg_vf tmp[WV_ALL];
    float *tf = (float *)tmp;    /* row i at tf + i * W */
    for (int64_t jc = j0; jc < j1; jc += W) {
        const int w = (int)sg_min(W, j1 - jc);
        const int wv = w / SG_VL, wr = (w + SG_VL - 1) / SG_VL;
        const float *bc = b + jc;
        for (int i = 0; i < M; i++)
            for (int v = 0; v < wr; v++)
                tmp[i * WV + v] = (sg_vf){0};
        int64_t p = 0;
        for (; p + 4 <= k; p += 4) {
            const float *b0 = bc + p * rsb, *b1 = b0 + rsb, *b2 = b1 + rsb, *b3 = b2 + rsb;
            sg_vf a[SG_SMALL_M][4];
            for (int i = 0; i < M; i++)
                for (int u = 0; u < 4; u++)
                    a[i][u] = SG_BCAST(ap[i * k + p + u]);
            for (int v = 0; v < wv; v++) {
                const sg_vf x0 = *(const sg_vfu *)(b0 + v * SG_VL);
                const sg_vf x1 = *(const sg_vfu *)(b1 + v * SG_VL);
                const sg_vf x2 = *(const sg_vfu *)(b2 + v * SG_VL);
                const sg_vf x3 = *(const sg_vfu *)(b3 + v * SG_VL);
                for (int i = 0; i < M; i++) {
                    sg_vf t = tmp[i * WV + v];
                    t = SG_FMA(a[i][0], x0, t);
                    t = SG_FMA(a[i][1], x1, t);
                    t = SG_FMA(a[i][2], x2, t);
                    t = SG_FMA(a[i][3], x3, t);
                    tmp[i * WV + v] = t;
                }
            }
            for (int j = wv * SG_VL; j < w; j++)
                for (int i = 0; i < M; i++) {
                    const float *ai = ap + i * k + p;
                    tf[i * W + j] += ai[0] * b0[j] + ai[1] * b1[j] + ai[2] * b2[j] + ai[3] * b3[j];
                }
        }
        for (; p < k; p++) {
            const float *b0 = bc + p * rsb;
            for (int i = 0; i < M; i++) {
                const float ai = ap[i * k + p];
                const sg_vf av = SG_BCAST(ai);
                for (int v = 0; v < wv; v++)
                    tmp[i * WV + v] = SG_FMA(av, *(const sg_vfu *)(b0 + v * SG_VL), tmp[i * WV + v]);
                for (int j = wv * SG_VL; j < w; j++)
                    tf[i * W + j] += ai * b0[j];
            }
        }
        for (int i = 0; i < M; i++) {
            float *ci = c + i * rsc + jc * csc;
            const float *ti = tf + i * W;
            if (csc == 1 && beta == 0.0f)
                memcpy(ci, ti, (size_t)w * sizeof(float));
            else
                for (int j = 0; j < w; j++)
                    sg_small_store(ci + j * csc, beta, ti[j]);
        }
    }
}

static float sg_hsum(const sg_vf *v)
{
    const float *f = (const float *)v;
    float s = 0.0f;
    for (int e = 0; e < SG_VL; e++)
        s += f[e];
    return s;
}

/* C[i0:i0+R, j0:j1] for a column-major B (b[j * csb + p]); R (1 or 2) rows
 * by CB columns of vector dot products. */
static inline __attribute__((always_inline)) void
sg_small_dot_r(const int R, int64_t k, const float *restrict ap, const float *restrict b,
               int64_t csb, float beta, float *c, int64_t rsc, int64_t csc, int64_t j0, int64_t j1)
{
    enum { CB = 8 };
    const int cb = CB / R;
    const int64_t kv = k / SG_VL * SG_VL;
    for (int64_t j = j0; j < j1; j += cb) {
        const int cols = (int)sg_min(cb, j1 - j);
        if (R == 1 && cols == 1) {
            /* a plain dot product: split the sum over four accumulators */
            const float *bj = b + j * csb;
            sg_vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
            int64_t p = 0;
            for (; p + 4 * SG_VL <= k; p += 4 * SG_VL) {
                s0 = SG_FMA(*(const sg_vfu *)(ap + p), *(const sg_vfu *)(bj + p), s0);
                s1 = SG_FMA(*(const sg_vfu *)(ap + p + SG_VL), *(const sg_vfu *)(bj + p + SG_VL), s1);
                s2 = SG_FMA(*(const sg_vfu *)(ap + p + 2 * SG_VL),
                            *(const sg_vfu *)(bj + p + 2 * SG_VL), s2);
                s3 = SG_FMA(*(const sg_vfu *)(ap + p + 3 * SG_VL),
                            *(const sg_vfu *)(bj + p + 3 * SG_VL), s3);
            }
            for (; p + SG_VL <= k; p += SG_VL)
                s0 = SG_FMA(*(const sg_vfu *)(ap + p), *(const sg_vfu *)(bj + p), s0);
            s0 = (s0 + s1) + (s2 + s3);
            float sum = sg_hsum(&s0);
            for (; p < k; p++)
                sum += ap[p] * bj[p];
            sg_small_store(c + j * csc, beta, sum);
            continue;
        }
        const float *bq[CB];
        sg_vf acc[CB];
        for (int q = 0; q < CB; q++) {
            bq[q] = b + (j + (q < cols ? q : cols - 1)) * csb; /* clamp: read, discard */
            acc[q] = (sg_vf){0};
        }
        for (int64_t p = 0; p < kv; p += SG_VL) {
            const sg_vf a0 = *(const sg_vfu *)(ap + p);
            if (R == 1) {
                for (int q = 0; q < CB; q++)
                    acc[q] = SG_FMA(a0, *(const sg_vfu *)(bq[q] + p), acc[q]);
            } else {
                const sg_vf a1 = *(const sg_vfu *)(ap + k + p);
                for (int q = 0; q < CB / 2; q++) {
                    const sg_vf x = *(const sg_vfu *)(bq[q] + p);
                    acc[q] = SG_FMA(a0, x, acc[q]);
                    acc[q + CB / 2] = SG_FMA(a1, x, acc[q + CB / 2]);
                }
            }
        }
        for (int r = 0; r < R; r++)
            for (int q = 0; q < cols; q++) {
                float s = sg_hsum(&acc[r * cb + q]);
                for (int64_t p = kv; p < k; p++)
                    s += ap[r * k + p] * bq[q][p];
                sg_small_store(c + r * rsc + (j + q) * csc, beta, s);
            }
    }
}

/* Columns [j0, j1) of the skinny product (m <= SG_SMALL_M). */
static void sg_small_cols(int m, int64_t k, const float *ap, const float *b, int64_t rsb,
                          int64_t csb, float beta, float *c, int64_t rsc, int64_t csc,
                          int64_t j0, int64_t j1)
{
    /* both strides 1 happens for a vector (n == 1 or k == 1): take the kernel
     * that vectorises along the longer one */
    if (csb == 1 && (rsb != 1 || j1 - j0 >= k)) {
        switch (m) {
        case 1: sg_small_axpy_m(1, k, ap, b, rsb, beta, c, rsc, csc, j0, j1); break;
        case 2: sg_small_axpy_m(2, k, ap, b, rsb, beta, c, rsc, csc, j0, j1); break;
        case 3: sg_small_axpy_m(3, k, ap, b, rsb, beta, c, rsc, csc, j0, j1); break;
        default: sg_small_axpy_m(4, k, ap, b, rsb, beta, c, rsc, csc, j0, j1); break;
        }
    } else {
        int i = 0;
        for (; i + 2 <= m; i += 2)
            sg_small_dot_r(2, k, ap + i * k, b, csb, beta, c + i * rsc, rsc, csc, j0, j1);
        if (i < m)
            sg_small_dot_r(1, k, ap + i * k, b, csb, beta, c + i * rsc, rsc, csc, j0, j1);
    }
}
#else
#define SG_SMALL 0
#endif

/* ------------------------------------------------------------------ plan */

static size_t sg_align_bytes(size_t n) { return (n + SG_ALIGN - 1) / SG_ALIGN * SG_ALIGN; }

/* Threads worth using: at most nthreads, at most `units` (independent
 * pieces), and about SG_MIN_WORK_PER_THREAD multiply-adds each. */
static int sg_threads(int64_t m, int64_t n, int64_t k, int nthreads, int64_t units)
{
#ifdef _OPENMP
    int nt = nthreads < 1 ? 1 : nthreads;
    const double work = (double)m * (double)n * (double)k / (double)SG_MIN_WORK_PER_THREAD;
    if (work < nt) nt = work < 1.0 ? 1 : (int)work;
    if (units < nt) nt = units < 1 ? 1 : (int)units;
    return nt;
#else
    (void)m; (void)n; (void)k; (void)nthreads; (void)units;
    return 1;
#endif
}

typedef struct sg_plan {
    int nt;          /* rectangles (= threads wanted) */
    int tm, tn;      /* nt == tm * tn */
    int64_t mt, ntc; /* rows / columns per rectangle (multiples of MR / NR) */
    int64_t mc, kc, nc;
    size_t a_bytes, b_bytes; /* per-thread packed buffers, 64-byte multiples */
} sg_plan;

/* A block size that is at most `cap`, a multiple of `q`, and splits `len`
 * into equal-ish blocks (so that the last block is not a sliver). */
static int64_t sg_balance(int64_t len, int64_t cap, int64_t q)
{
    const int64_t nblocks = sg_cdiv(len, cap);
    return sg_min(cap, sg_rup(sg_cdiv(len, nblocks), q));
}

/* m, n, k > 0 */
static sg_plan sg_make_plan(int64_t m, int64_t n, int64_t k, int nthreads)
{
    sg_plan pl;
    memset(&pl, 0, sizeof pl);
    int nt = sg_threads(m, n, k, nthreads, sg_cdiv(m, SG_MR) * sg_cdiv(n, SG_NR));
    /* factor nt = tm * tn minimising the largest rectangle plus packing;
     * ties go to more row groups (each thread's A block in its own L2).
     * If every factorisation would leave a thread without rows or columns
     * (a prime nt on a narrow C, say), try one thread fewer. */
    int best_tm = 1;
    for (; nt > 1; nt--) {
        double best_cost = -1.0;
        for (int tm = nt; tm >= 1; tm--) {
            if (nt % tm) continue;
            const int tn = nt / tm;
            const int64_t mt = sg_rup(sg_cdiv(m, tm), SG_MR);
            const int64_t ntc = sg_rup(sg_cdiv(n, tn), SG_NR);
            if ((tm - 1) * mt >= m || (tn - 1) * ntc >= n) continue; /* idle thread */
            const double cost = (double)mt * (double)ntc + 16.0 * ((double)mt + (double)ntc);
            if (best_cost < 0 || cost < best_cost) {
                best_cost = cost;
                best_tm = tm;
            }
        }
        if (best_cost >= 0) break;
    }
    if (nt == 1) best_tm = 1;
    pl.nt = nt;
    pl.tm = best_tm;
    pl.tn = nt / best_tm;
    pl.mt = sg_rup(sg_cdiv(m, pl.tm), SG_MR);
    pl.ntc = sg_rup(sg_cdiv(n, pl.tn), SG_NR);
    pl.mc = sg_balance(sg_min(pl.mt, m), LOOM_SGEMM_MC, SG_MR);
    pl.nc = sg_balance(sg_min(pl.ntc, n), LOOM_SGEMM_NC, SG_NR);
    pl.kc = sg_balance(k, LOOM_SGEMM_KC, 1);
    pl.a_bytes = sg_align_bytes((size_t)pl.mc * (size_t)pl.kc * sizeof(float) + SG_A_SLACK);
    pl.b_bytes = sg_align_bytes((size_t)pl.nc * (size_t)pl.kc * sizeof(float));
    return pl;
}

/* Bytes of the skinny path's copy of A (rows <= SG_SMALL_M), 0 if the shape
 * never takes it. */
static size_t sg_small_bytes(int64_t m, int64_t n, int64_t k)
{
#if SG_SMALL
    const int64_t rm = m <= SG_SMALL_M ? m : 0, rn = n <= SG_SMALL_M ? n : 0;
    const int64_t rows = rm > rn ? rm : rn;
    return sg_align_bytes((size_t)rows * (size_t)k * sizeof(float));
#else
    (void)m; (void)n; (void)k;
    return 0;
#endif
}

size_t loom__sgemm_workspace_size(int64_t m, int64_t n, int64_t k, int nthreads)
{
    if (m <= 0 || n <= 0 || k <= 0) return 0;
    const sg_plan pl = sg_make_plan(m, n, k, nthreads);
    const size_t packed = (size_t)pl.nt * (pl.a_bytes + pl.b_bytes);
    const size_t small = sg_small_bytes(m, n, k);
    return packed > small ? packed : small;
}

size_t loom__sgemm_workspace_bound(int64_t m, int64_t n, int64_t k, int nthreads)
{
    /* A balanced block of a size up to len is at most min(len, cap). */
    const int64_t ms[2] = {m, sg_min(m, LOOM_SGEMM_MC)}, ns[2] = {n, sg_min(n, LOOM_SGEMM_NC)},
                  ks[2] = {k, sg_min(k, LOOM_SGEMM_KC)};
    size_t most = 0;
    for (int i = 0; i < 8; i++) {
        const size_t s = loom__sgemm_workspace_size(ms[i & 1], ns[(i >> 1) & 1], ks[i >> 2], nthreads);
        if (s > most) most = s;
    }
    return most;
}

loom__sgemm_blocking loom__sgemm_get_blocking(void)
{
    loom__sgemm_blocking bl;
    bl.mr = SG_MR;
    bl.nr = SG_NR;
    bl.mc = LOOM_SGEMM_MC;
    bl.kc = LOOM_SGEMM_KC;
    bl.nc = LOOM_SGEMM_NC;
    bl.vector_bytes = LOOM_SGEMM_VB;
    return bl;
}

/* ---------------------------------------------------------------- driver */

typedef struct sg_args {
    int64_t m, n, k;
    float alpha, beta;
    const float *a, *b;
    int64_t rsa, csa, rsb, csb, rsc;
    float *c;
} sg_args;

/* C[m0:m1, n0:n1] with this thread's packing buffers. */
static void sg_rect(const sg_args *g, const sg_plan *pl, int64_t m0, int64_t m1,
                    int64_t n0, int64_t n1, float *restrict apack, float *restrict bpack)
{
    for (int64_t jc = n0; jc < n1; jc += pl->nc) {
        const int64_t nc = sg_min(pl->nc, n1 - jc);
        for (int64_t pc = 0; pc < g->k; pc += pl->kc) {
            const int64_t kc = sg_min(pl->kc, g->k - pc);
            const float beta = pc == 0 ? g->beta : 1.0f;
            sg_pack_b(kc, nc, g->b + pc * g->rsb + jc * g->csb, g->rsb, g->csb, bpack);
            for (int64_t ic = m0; ic < m1; ic += pl->mc) {
                const int64_t mc = sg_min(pl->mc, m1 - ic);
                sg_pack_a(mc, kc, g->a + ic * g->rsa + pc * g->csa, g->rsa, g->csa, g->alpha,
                          apack);
                for (int64_t jr = 0; jr < nc; jr += SG_NR) {
                    const int nr = (int)sg_min(SG_NR, nc - jr);
                    const float *bs = bpack + jr * kc;
                    float *cc = g->c + ic * g->rsc + jc + jr;
                    for (int64_t ir = 0; ir < mc; ir += SG_MR) {
                        const int mr = (int)sg_min(SG_MR, mc - ir);
                        sg_kernel(kc, apack + ir * kc, bs, cc + ir * g->rsc, g->rsc, mr, nr, beta);
                    }
                }
            }
        }
    }
}

static void sg_work(const sg_args *g, const sg_plan *pl, int w, char *ws)
{
    const int im = w / pl->tn, in = w % pl->tn;
    const int64_t m0 = im * pl->mt, m1 = sg_min(g->m, m0 + pl->mt);
    const int64_t n0 = in * pl->ntc, n1 = sg_min(g->n, n0 + pl->ntc);
    if (m0 >= m1 || n0 >= n1) return;
    sg_rect(g, pl, m0, m1, n0, n1, (float *)ws, (float *)(ws + pl->a_bytes));
}

static void sg_packed(const sg_args *g, const sg_plan *pl, char *ws)
{
    if (pl->nt == 1) {
        sg_work(g, pl, 0, ws);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(pl->nt)
    {
        /* The team may be smaller than asked (nested region, thread limit):
         * every rectangle is still done, by some thread. */
        const int tid = omp_get_thread_num();
        const int team = omp_get_num_threads();
        char *mine = ws + (size_t)tid * (pl->a_bytes + pl->b_bytes);
        for (int w = tid; w < pl->nt; w += team)
            sg_work(g, pl, w, mine);
    }
#else
    for (int w = 0; w < pl->nt; w++) sg_work(g, pl, w, ws);
#endif
}

#if SG_SMALL
/* The skinny product: g->m <= SG_SMALL_M, and B with csb == 1 or rsb == 1.
 * C element (i, j) is at c[i * rsc + j * csc]. ap: g->m * k floats. */
static void sg_small(const sg_args *g, int64_t csc, int nthreads, float *ap)
{
    const int m = (int)g->m;
    const int64_t n = g->n, k = g->k;
    for (int i = 0; i < m; i++) {
        const float *ai = g->a + i * g->rsa;
        for (int64_t p = 0; p < k; p++)
            ap[i * k + p] = g->alpha * ai[p * g->csa];
    }
    enum { Q = 64 }; /* columns per thread: a multiple of Q */
    const int nt = sg_threads(m, n, k, nthreads, sg_cdiv(n, Q));
    const int64_t per = sg_rup(sg_cdiv(n, nt), Q);
    if (nt <= 1) { /* no region: libgomp mallocs even a one-thread team */
        if (n > 0) sg_small_cols(m, k, ap, g->b, g->rsb, g->csb, g->beta, g->c, g->rsc, csc, 0, n);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), team = omp_get_num_threads();
#else
        const int tid = 0, team = 1;
#endif
        for (int w = tid; w < nt; w += team) {
            const int64_t j0 = w * per, j1 = sg_min(n, j0 + per);
            if (j0 < j1)
                sg_small_cols(m, k, ap, g->b, g->rsb, g->csb, g->beta, g->c, g->rsc, csc, j0, j1);
        }
    }
}
#endif

/* C = beta * C (alpha == 0 or k == 0) */
static void sg_scale_c(int64_t m, int64_t n, float beta, float *c, int64_t rsc)
{
    for (int64_t i = 0; i < m; i++) {
        float *cr = c + i * rsc;
        if (beta == 0.0f)
            for (int64_t j = 0; j < n; j++) cr[j] = 0.0f;
        else if (beta != 1.0f)
            for (int64_t j = 0; j < n; j++) cr[j] *= beta;
    }
}

loom_status loom__sgemm(int64_t m, int64_t n, int64_t k, float alpha,
                        const float *a, int64_t rsa, int64_t csa,
                        const float *b, int64_t rsb, int64_t csb,
                        float beta, float *c, int64_t rsc,
                        int nthreads, void *ws, size_t ws_size)
{
    if (m < 0 || n < 0 || k < 0 || rsa < 0 || csa < 0 || rsb < 0 || csb < 0)
        return loom__set_error(LOOM_ERR_INVALID_ARG,
                               "sgemm: negative size or stride (m=%lld n=%lld k=%lld, strides "
                               "%lld %lld %lld %lld)",
                               (long long)m, (long long)n, (long long)k, (long long)rsa,
                               (long long)csa, (long long)rsb, (long long)csb);
    if (m == 0 || n == 0) return LOOM_OK;
    if (c == NULL) return loom__set_error(LOOM_ERR_INVALID_ARG, "sgemm: C is NULL");
    if (k == 0 || alpha == 0.0f) {
        sg_scale_c(m, n, beta, c, rsc);
        return LOOM_OK;
    }
    if (a == NULL || b == NULL)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "sgemm: A or B is NULL");
    if (ws != NULL && ((uintptr_t)ws % SG_ALIGN) != 0)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "sgemm: workspace %p is not %d-byte aligned",
                               ws, SG_ALIGN);

    sg_args g;
    g.m = m; g.n = n; g.k = k;
    g.alpha = alpha; g.beta = beta;
    g.a = a; g.b = b; g.c = c;
    g.rsa = rsa; g.csa = csa; g.rsb = rsb; g.csb = csb; g.rsc = rsc;

    int small = 0;     /* 1: skinny in m, 2: skinny in n (run transposed) */
    size_t need;
    sg_plan pl;
    memset(&pl, 0, sizeof pl);
#if SG_SMALL
    {
        const int s1 = m <= SG_SMALL_M && (csb == 1 || rsb == 1);
        const int s2 = n <= SG_SMALL_M && (csa == 1 || rsa == 1);
        /* both skinny (say 4 x k x 4): prefer the dot-product kernel along k */
        if (s1 && s2 && k >= n && rsb != 1 && csa == 1)
            small = 2;
        else
            small = s1 ? 1 : s2 ? 2 : 0;
    }
#endif
    if (small) {
        need = sg_align_bytes((size_t)(small == 1 ? m : n) * (size_t)k * sizeof(float));
    } else {
        pl = sg_make_plan(m, n, k, nthreads);
        need = (size_t)pl.nt * (pl.a_bytes + pl.b_bytes);
    }

    void *owned = NULL;
    if (ws == NULL) {
        owned = aligned_alloc(SG_ALIGN, need);
        if (owned == NULL)
            return loom__set_error(LOOM_ERR_NOMEM, "sgemm: cannot allocate %zu bytes of workspace",
                                   need);
        ws = owned;
    } else if (ws_size < need) {
        return loom__set_error(LOOM_ERR_INVALID_ARG,
                               "sgemm: workspace of %zu bytes is smaller than the %zu needed",
                               ws_size, need);
    }

#if SG_SMALL
    if (small == 1) {
        sg_small(&g, 1, nthreads, (float *)ws);
    } else if (small == 2) {
        /* C^T (n x m) = B^T (n x k) A^T (k x m); C^T(j, i) = c[j + i * rsc] */
        sg_args t = g;
        t.m = n; t.n = m;
        t.a = b; t.rsa = csb; t.csa = rsb;
        t.b = a; t.rsb = csa; t.csb = rsa;
        t.rsc = 1;
        sg_small(&t, rsc, nthreads, (float *)ws);
    } else
#endif
    {
        sg_packed(&g, &pl, (char *)ws);
    }

    free(owned);
    return LOOM_OK;
}
