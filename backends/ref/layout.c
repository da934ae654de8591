/*
 * backends/ref/layout.c - conversions between plain NCHW and oneDNN's
 * channel-blocked layouts nChw8c / nChw16c (backends/kernel.h).
 *
 * graph/ uses them where a blocked tensor meets a kernel or a user that
 * reads plain data. Plain C, so they work wherever the data came from; a
 * pure copy, so the result does not depend on the thread count.
 *
 * Element (n, c, h, w) of a [N,C,H,W] tensor with block B sits at
 *   plain:   ((n*C + c)*H + h)*W + w
 *   blocked: (((n*(C/B) + c/B)*H + h)*W + w)*B + c%B
 */
#include "config.h"

#include "backends/kernel.h"

/* One (n, channel block) row: both layouts keep the block's B*HW floats
 * together (plain: B channel planes of HW; blocked: HW pixels of B
 * channels), so each row is a [B, HW] <-> [HW, B] transpose. */
static inline void convert_row(const float *s, float *d, int64_t B, int64_t HW, bool to_plain)
{
    if (to_plain) {
        for (int64_t p = 0; p < HW; p++)
            for (int64_t c = 0; c < B; c++) d[c * HW + p] = s[p * B + c];
    } else {
        for (int64_t c = 0; c < B; c++)
            for (int64_t p = 0; p < HW; p++) d[p * B + c] = s[c * HW + p];
    }
}

static void convert(const float *src, float *dst, int layout, const int64_t dims[4], int nthreads, bool to_plain)
{
    const int64_t B = loom__layout_block(layout);
    const int64_t N = dims[0], CB = dims[1] / B, HW = dims[2] * dims[3];
    const int64_t rows = N * CB; /* one (n, channel block) pair: B*HW floats either way */
    (void)nthreads;
#ifdef _OPENMP
    /* No region at all when serial: libgomp mallocs a team even for a
     * region an if clause makes serial (nditer.h, LOOM__OMP_TEAM). */
    if (nthreads > 1 && rows * HW * B > (1 << 15)) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t r = 0; r < rows; r++) convert_row(src + r * B * HW, dst + r * B * HW, B, HW, to_plain);
        return;
    }
#endif
    for (int64_t r = 0; r < rows; r++) convert_row(src + r * B * HW, dst + r * B * HW, B, HW, to_plain);
}

void loom__layout_to_plain(const float *src, float *dst, int layout, const int64_t dims[4], int nthreads)
{
    convert(src, dst, layout, dims, nthreads, true);
}

void loom__layout_from_plain(const float *src, float *dst, int layout, const int64_t dims[4], int nthreads)
{
    convert(src, dst, layout, dims, nthreads, false);
}
