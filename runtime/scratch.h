/*
 * runtime/scratch.h - per-thread scratch buffers for kernels' workspaces
 * (im2col columns, GEMM packing, partial sums).
 *
 * Why: a workspace malloc'd and freed on every call of a big kernel makes
 * glibc grow and trim the heap (brk) each time, and every fresh page then
 * costs a page fault: on the SimpleCNN that was ~10% of a training step.
 * A buffer per thread and slot that only grows is touched once.
 *
 * Ownership: the buffer belongs to the calling thread; it stays valid until
 * that thread's next loom__scratch call with the same slot, and is freed
 * when the thread exits (the main thread's at process exit). Never NULL
 * for bytes == 0 unless out of memory.
 */
#ifndef LOOM_RUNTIME_SCRATCH_H
#define LOOM_RUNTIME_SCRATCH_H

#include <stddef.h>

#define LOOM__SCRATCH_SLOTS 8

/* The slots by user: a kernel's buffers must not share a slot with anything
 * that runs while they are live. */
enum {
    LOOM__SCRATCH_CONV = 0,       /* backends/ref/conv.c: columns and GEMM packing */
    LOOM__SCRATCH_CONV_PARTS = 1, /* backends/ref/conv.c: backward-weight partial sums */
    LOOM__SCRATCH_ONEDNN = 2,     /* backends/onednn: user scratchpads and reorder buffers */
    LOOM__SCRATCH_CONV_GROUP = 3, /* backends/ref/conv.c: backward-weight columns of image groups */
    LOOM__SCRATCH_CONV_IMAGE = 4, /* backends/ref/conv.c: backward-weight images read from blocked layouts */
    LOOM__SCRATCH_MATMUL = 5,     /* backends/ref/matmul.c: SGEMM packing */
    LOOM__SCRATCH_NORM = 6,       /* backends/ref/norm.c: per-channel coefficients and sums */
    LOOM__SCRATCH_NORM_PARTS = 7, /* backends/ref/norm.c: per-piece partial sums */
};

/* A 64-byte aligned buffer of at least `bytes` for slot (0 <= slot <
 * LOOM__SCRATCH_SLOTS) of the calling thread, or NULL if out of memory
 * (the slot's old buffer is then kept). Contents are unspecified. */
void *loom__scratch(int slot, size_t bytes);

#endif /* LOOM_RUNTIME_SCRATCH_H */
