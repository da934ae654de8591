/*
 * data/data_impl.h - the dataset's layout, shared by data/idx.c (which
 * builds datasets) and data/loader.c (which batches them).
 */
#ifndef LOOM_DATA_IMPL_H
#define LOOM_DATA_IMPL_H

#include <stdint.h>

#include "loom/data.h"

/* Immutable once built: loaders, and their prefetch threads, read it
 * without locks. */
struct loom_dataset {
    int64_t n, rows, cols;
    int num_classes;
    uint8_t *pixels; /* n * rows * cols, image after image (malloc'd) */
    uint8_t *labels; /* n (malloc'd) */
};

#endif /* LOOM_DATA_IMPL_H */
