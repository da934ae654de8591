/*
 * ops/random.c - rand, randn, randint from the context's Philox generator.
 *
 * Every element is a pure function of (seed, offset + its index), so the
 * fill is parallel and the values are the same for any thread count. Each
 * call then advances the context's offset past the blocks it used.
 * (The numbers differ from PyTorch's mt19937 CPU generator.)
 */
#include <math.h>

#include "ops/ops_internal.h"
#include "graph/capture.h"
#include "ops/philox.h"

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 65536

/* One counter block of each kind: four uniform floats, two normals (Box-
 * Muller in double: two 64-bit uniforms give two normals), or two
 * integers in [low, low + range) (modulo bias below range / 2^64). */
static inline void uniform_block(float *f, int64_t n, uint64_t seed, uint64_t base, int64_t blk)
{
    loom__philox_block r = loom__philox(seed, base + (uint64_t)blk);
    for (int j = 0; j < 4 && blk * 4 + j < n; j++) f[blk * 4 + j] = loom__u32_to_unit(r.v[j]);
}

static inline void normal_block(float *f, int64_t n, uint64_t seed, uint64_t base, int64_t blk)
{
    loom__philox_block r = loom__philox(seed, base + (uint64_t)blk);
    uint64_t a = ((uint64_t)r.v[0] << 32 | r.v[1]) >> 11, b = ((uint64_t)r.v[2] << 32 | r.v[3]) >> 11;
    double u1 = ((double)a + 1.0) * 0x1p-53; /* (0, 1]: log(u1) is finite */
    double u2 = (double)b * 0x1p-53;
    double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586476925 * u2;
    f[2 * blk] = (float)(rad * cos(th));
    if (2 * blk + 1 < n) f[2 * blk + 1] = (float)(rad * sin(th));
}

static inline void int_block(int64_t *q, int64_t n, uint64_t seed, uint64_t base, int64_t blk, int64_t low,
                             uint64_t range)
{
    loom__philox_block r = loom__philox(seed, base + (uint64_t)blk);
    uint64_t a = (uint64_t)r.v[0] << 32 | r.v[1], b = (uint64_t)r.v[2] << 32 | r.v[3];
    q[2 * blk] = (int64_t)((uint64_t)low + a % range);
    if (2 * blk + 1 < n) q[2 * blk + 1] = (int64_t)((uint64_t)low + b % range);
}

/* Every block of [0, nblk), on a team only when it pays: a region that an
 * if clause makes serial still mallocs a team in libgomp (nditer.h's
 * LOOM__OMP_TEAM says why that matters). */
#ifdef _OPENMP
#define FOR_BLOCKS(par, nthreads, nblk, STEP)                                        \
    do {                                                                             \
        if (par) {                                                                   \
            _Pragma("omp parallel for num_threads(nthreads) schedule(static)")       \
            for (int64_t blk = 0; blk < (nblk); blk++) STEP;                         \
        } else {                                                                     \
            for (int64_t blk = 0; blk < (nblk); blk++) STEP;                         \
        }                                                                            \
    } while (0)
#else
#define FOR_BLOCKS(par, nthreads, nblk, STEP)                                        \
    do {                                                                             \
        (void)(par);                                                                 \
        for (int64_t blk = 0; blk < (nblk); blk++) STEP;                             \
    } while (0)
#endif

uint64_t loom__rand_fill(int kind, void *data, int64_t n, uint64_t seed, uint64_t base, int64_t low, int64_t high,
                         int nthreads)
{
    (void)nthreads; /* unused without OpenMP */
    const bool par = nthreads > 1 && n > PAR_MIN;
    if (kind == LOOM__RAND_UNIFORM) {
        FOR_BLOCKS(par, nthreads, (n + 3) / 4, uniform_block(data, n, seed, base, blk));
        return (uint64_t)(n + 3) / 4;
    }
    if (kind == LOOM__RAND_NORMAL) {
        FOR_BLOCKS(par, nthreads, (n + 1) / 2, normal_block(data, n, seed, base, blk));
        return (uint64_t)(n + 1) / 2;
    }
    const uint64_t range = (uint64_t)high - (uint64_t)low;
    FOR_BLOCKS(par, nthreads, (n + 1) / 2, int_block(data, n, seed, base, blk, low, range));
    return (uint64_t)(n + 1) / 2;
}

/* Fills t from the context's stream, advances it, and tells a capture in
 * progress (a replay draws the same fill at its own offset). */
static loom_tensor *draw(loom_ctx *ctx, loom_tensor *t, int kind, int64_t low, int64_t high)
{
    if (!t) return NULL;
    const int64_t n = loom__numel(t->ndim, t->shape);
    const uint64_t base = ctx->rng_offset;
    ctx->rng_offset += loom__rand_fill(kind, t->storage->data, n, ctx->rng_seed, base, low, high, ctx->num_threads);
    if (ctx->capture && loom__capture_rand(ctx, t, loom__rand_fill, kind, base, low, high) != LOOM_OK) {
        loom_tensor_free(t);
        return NULL;
    }
    return t;
}

loom_tensor *loom_rand(loom_ctx *ctx, int ndim, const int64_t *shape)
{
    return draw(ctx, loom__new_ready("rand", ctx, LOOM_FLOAT32, ndim, shape), LOOM__RAND_UNIFORM, 0, 0);
}

loom_tensor *loom_randn(loom_ctx *ctx, int ndim, const int64_t *shape)
{
    return draw(ctx, loom__new_ready("randn", ctx, LOOM_FLOAT32, ndim, shape), LOOM__RAND_NORMAL, 0, 0);
}

loom_tensor *loom_randint(loom_ctx *ctx, int64_t low, int64_t high, int ndim, const int64_t *shape)
{
    if (ctx && high <= low) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "randint: high (%lld) must be greater than low (%lld)", (long long)high,
                        (long long)low);
        return NULL;
    }
    return draw(ctx, loom__new_ready("randint", ctx, LOOM_INT64, ndim, shape), LOOM__RAND_INT, low, high);
}
