/*
 * ops/philox.h - the Philox4x32-10 counter-based generator (Salmon et al.,
 * "Parallel random numbers: as easy as 1, 2, 3", SC'11).
 *
 * A counter-based generator is a pure function of (key, counter): element i
 * of a random tensor is computed from counter block (offset + i/4) alone, so
 * the numbers do not depend on how many threads fill the tensor, or in what
 * order.
 */
#ifndef LOOM_OPS_PHILOX_H
#define LOOM_OPS_PHILOX_H

#include <stdint.h>

typedef struct loom__philox_block {
    uint32_t v[4];
} loom__philox_block;

static inline void loom__philox_round(uint32_t c[4], const uint32_t k[2])
{
    const uint64_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
    uint64_t p0 = m0 * c[0], p1 = m1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k[0];
    uint32_t n2 = hi0 ^ c[3] ^ k[1];
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
}

/* The 4 random words of counter block `ctr` under key `seed`. */
static inline loom__philox_block loom__philox(uint64_t seed, uint64_t ctr)
{
    uint32_t c[4] = {(uint32_t)ctr, (uint32_t)(ctr >> 32), 0, 0};
    uint32_t k[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    for (int r = 0; r < 10; r++) {
        loom__philox_round(c, k);
        k[0] += 0x9E3779B9u;
        k[1] += 0xBB67AE85u;
    }
    loom__philox_block b = {{c[0], c[1], c[2], c[3]}};
    return b;
}

/* A float in [0, 1) from the top 24 bits of a word. */
static inline float loom__u32_to_unit(uint32_t x)
{
    return (float)(x >> 8) * (1.0f / 16777216.0f);
}

#endif /* LOOM_OPS_PHILOX_H */
