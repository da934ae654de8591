/*
 * loom/data.h - datasets and data loaders, as torchvision's MNIST family
 * and torch.utils.data.DataLoader have them.
 *
 * A loom_dataset holds a whole image-classification set in memory as raw
 * bytes: n images of rows x cols uint8 pixels and n uint8 labels (60000
 * 28x28 MNIST images are 47 MB). It is read from IDX files (MNIST,
 * Fashion-MNIST, EMNIST), gzip-compressed or plain, or copied from arrays.
 * It belongs to no context and is only read after loading, so several
 * loaders (in several threads) may share one. Free it with
 * loom_dataset_free() after the last loader that uses it.
 *
 * A loom_dataloader cuts a dataset into batches of tensors: images float32
 * [B, 1, rows, cols] scaled to [0, 1] (torchvision's ToTensor) and
 * optionally normalized ((x - mean) / std, Normalize), labels int64 [B].
 * It borrows its context and dataset: both must outlive it. The batch
 * tensors it returns are ordinary tensors of the caller's innermost scope
 * (loom_tensor_from_array), so a scope per training step frees them.
 *
 *     loom_dataset *train;
 *     if (loom_mnist_load("/usr/share/datasets/fashion-mnist", true, &train))
 *         fprintf(stderr, "%s\n", loom_last_error());
 *     loom_dataloader_options o = loom_dataloader_defaults();
 *     o.batch_size = 64; o.shuffle = true; o.seed = 42;
 *     o.normalize = true; o.mean = LOOM_FASHION_MNIST_MEAN; o.std = LOOM_FASHION_MNIST_STD;
 *     loom_dataloader *dl;
 *     loom_dataloader_create(ctx, train, &o, &dl);
 *     for (int epoch = 0; epoch < 10; epoch++) {
 *         loom_dataloader_set_epoch(dl, epoch);      // reshuffles
 *         for (;;) {
 *             loom_scope_begin(ctx);
 *             loom_tensor *x, *y;
 *             loom_status st = loom_dataloader_next(dl, &x, &y);
 *             if (st != LOOM_OK || !x) { loom_scope_end(ctx); break; }   // error / end of epoch
 *             ... forward, loss, backward, step ...
 *             loom_scope_end(ctx);
 *         }
 *     }
 *     loom_dataloader_free(dl);
 *     loom_dataset_free(train);
 *
 * Errors: every call returns a loom_status; loom_last_error() names the
 * file and the problem ("idx: data/t10k-labels-idx1-ubyte.gz: truncated:
 * ..."). Corrupt, truncated or inconsistent files are reported, never read
 * out of bounds.
 */
#ifndef LOOM_DATA_H
#define LOOM_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "loom/context.h"
#include "loom/status.h"
#include "loom/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_dataset loom_dataset;
typedef struct loom_dataloader loom_dataloader;

/* The usual Normalize values: the training sets' pixel mean and standard
 * deviation after ToTensor's scaling to [0, 1]. */
#define LOOM_MNIST_MEAN 0.1307
#define LOOM_MNIST_STD 0.3081
#define LOOM_FASHION_MNIST_MEAN 0.2860
#define LOOM_FASHION_MNIST_STD 0.3530

/* ---- datasets -------------------------------------------------------- */

/* Reads an IDX images file (magic 00 00 08 03: unsigned bytes, dims
 * count x rows x cols) and an IDX labels file (00 00 08 01: count), each
 * gzip-compressed or plain (gzip needs a Loom built with zlib; without it a
 * compressed file is refused with a message saying so).
 *
 * num_classes: labels must be < num_classes (1..256), or 0 to take the
 * largest label + 1 as the class count (EMNIST's splits have 10 to 62
 * classes; "letters" labels start at 1).
 *
 * On success *out is a new dataset the caller frees with
 * loom_dataset_free(). On failure *out is NULL and the status is:
 *   LOOM_ERR_INVALID_ARG  a NULL argument, num_classes outside 0..256;
 *   LOOM_ERR_IO           a file that cannot be opened or read (the
 *                         message has strerror's text), a directory, a
 *                         .gz file without zlib;
 *   LOOM_ERR_FORMAT       not an IDX file (magic), an element type other
 *                         than unsigned byte, the wrong number of dims for
 *                         images/labels, a dim of 0 or sizes whose product
 *                         overflows, a file shorter or longer than its
 *                         header says, corrupt gzip data, images and labels
 *                         of different counts;
 *   LOOM_ERR_RANGE        a label >= num_classes;
 *   LOOM_ERR_NOMEM        out of memory.
 * Memory is allocated only as the file's data actually arrives, so a
 * header claiming absurd sizes costs a "truncated" error, not a huge
 * allocation. */
loom_status loom_idx_dataset_load(const char *images_path, const char *labels_path, int num_classes,
                                  loom_dataset **out);

/* MNIST or Fashion-MNIST (10 classes) from the directory where the original
 * files are: train-images-idx3-ubyte and train-labels-idx1-ubyte (train)
 * or t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (test), each tried
 * as the plain name first, then with ".gz". LOOM_ERR_IO naming both
 * candidates if neither exists; otherwise as loom_idx_dataset_load. */
loom_status loom_mnist_load(const char *dir, bool train, loom_dataset **out);

/* A dataset holding copies of pixels[n * rows * cols] (row-major, image
 * after image) and labels[n], for data from other sources. n, rows and cols
 * must be >= 1; num_classes as for loom_idx_dataset_load. */
loom_status loom_dataset_from_arrays(int64_t n, int64_t rows, int64_t cols, const uint8_t *pixels,
                                     const uint8_t *labels, int num_classes, loom_dataset **out);

/* Frees the dataset. Every loader that uses it must have been freed. NULL
 * is a no-op. */
void loom_dataset_free(loom_dataset *ds);

/* The number of images, their rows and cols, and the class count (0 for a
 * NULL dataset). */
int64_t loom_dataset_size(const loom_dataset *ds);
int64_t loom_dataset_rows(const loom_dataset *ds);
int64_t loom_dataset_cols(const loom_dataset *ds);
int loom_dataset_num_classes(const loom_dataset *ds);

/* The raw data: size * rows * cols pixels, image after image, and size
 * labels. Owned by the dataset, valid until it is freed; read-only. NULL
 * for a NULL dataset. */
const uint8_t *loom_dataset_pixels(const loom_dataset *ds);
const uint8_t *loom_dataset_labels(const loom_dataset *ds);

/* ---- data loaders ---------------------------------------------------- */

/* Options for loom_dataloader_create. Every field is used as given: start
 * from loom_dataloader_defaults() and change what you need. NULL options
 * mean those defaults. */
typedef struct loom_dataloader_options {
    /* Images per batch, >= 1 (default 1, as PyTorch's DataLoader). */
    int64_t batch_size;
    /* Visit the images in a new random order each epoch (default false).
     * The order of epoch e is a function of (seed, e) only, so a run
     * resumed at epoch e sees the batches it would have seen. */
    bool shuffle;
    uint64_t seed;
    /* Drop the last batch when it is smaller than batch_size (default
     * false: it is returned with fewer images). */
    bool drop_last;
    /* After scaling to [0, 1], compute (x - mean) / std in float32, as
     * torchvision's Normalize((mean,), (std,)) (default false). mean must
     * be finite, std finite and non-zero. */
    bool normalize;
    double mean, std;
    /* Prepare the next batches on one background thread while the caller
     * computes (default true). The batches are the same either way. */
    bool prefetch;
    /* Data parallelism, as PyTorch's DistributedSampler: with
     * num_replicas > 1, this loader sees only shard `rank` (0 <=
     * rank < num_replicas) of every epoch's order: positions rank,
     * rank + num_replicas, ... of it, the order padded by wrapping around
     * to a multiple of num_replicas, so every shard has ceil(size /
     * num_replicas) images. The order itself (shuffled from seed and the
     * epoch, or not) is the same whatever num_replicas is. 0 or 1: the
     * whole dataset (default 0). */
    int num_replicas;
    int rank;
} loom_dataloader_options;

/* batch_size 1, no shuffle, seed 0, keep the last batch, no normalization
 * (mean 0, std 1), prefetch on. */
loom_dataloader_options loom_dataloader_defaults(void);

/* A loader over ds creating its tensors in ctx, positioned at the start of
 * epoch 0. ctx and ds are borrowed and must outlive the loader. On failure
 * *out is NULL: LOOM_ERR_INVALID_ARG for NULL arguments or bad options,
 * LOOM_ERR_NOMEM, LOOM_ERR_STATE if the prefetch thread cannot start. */
loom_status loom_dataloader_create(loom_ctx *ctx, const loom_dataset *ds, const loom_dataloader_options *opts,
                                   loom_dataloader **out);

/* The next batch of the current epoch: *images float32 [B, 1, rows, cols],
 * *labels int64 [B], two new tensors of ctx's innermost scope (B is
 * batch_size, or less for the last batch). At the end of the epoch returns
 * LOOM_OK with *images and *labels NULL, and keeps doing so until the next
 * epoch is started. On failure (LOOM_ERR_NOMEM creating the tensors) both
 * are NULL and the batch is not consumed: the next call returns it again. */
loom_status loom_dataloader_next(loom_dataloader *dl, loom_tensor **images, loom_tensor **labels);

/* Starts epoch `epoch` (>= 0) from its first batch, reshuffling when
 * shuffle is on; as DistributedSampler.set_epoch, this makes the order
 * depend on the epoch number, not on how many epochs this loader ran.
 * Abandons what is left of the current epoch. */
loom_status loom_dataloader_set_epoch(loom_dataloader *dl, int64_t epoch);

/* Starts the next epoch: loom_dataloader_set_epoch(dl, epoch + 1). */
loom_status loom_dataloader_reset(loom_dataloader *dl);

/* The current epoch's number (0 after creation; -1 for NULL). */
int64_t loom_dataloader_epoch(const loom_dataloader *dl);

/* Batches per epoch: ceil(size / batch_size), or floor with drop_last
 * (-1 for NULL). */
int64_t loom_dataloader_num_batches(const loom_dataloader *dl);

/* Stops the prefetch thread (at any point of an epoch) and frees the
 * loader. The tensors it returned are not affected. NULL is a no-op. */
void loom_dataloader_free(loom_dataloader *dl);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_DATA_H */
