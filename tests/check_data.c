/*
 * tests/check_data.c - datasets (the IDX reader) and the data loader.
 *
 * The IDX tests write small files into a fresh mkdtemp directory, plain and
 * (with zlib) gzip-compressed, and read them back; every kind of corrupt or
 * inconsistent file must give its status and a message naming the file
 * (this suite also runs under ASan and valgrind: no crash, no overread, no
 * leak). The loader tests use in-memory datasets whose pixels identify the
 * image, so that batch contents and orders can be checked exactly.
 */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef LOOM_HAVE_ZLIB
#include <zlib.h>
#endif

#include "tests/check_suites.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

/* ---- temporary files ---------------------------------------------------- */

/* Writes bytes[0..len-1] to dir/name, gzip-compressed if gz; returns the
 * path (malloc'd, caller frees). */
static char *write_file(const char *dir, const char *name, const uint8_t *bytes, size_t len, bool gz)
{
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    ck_assert(path);
    sprintf(path, "%s/%s", dir, name);
    if (gz) {
#ifdef LOOM_HAVE_ZLIB
        gzFile f = gzopen(path, "wb");
        ck_assert(f);
        ck_assert_int_eq(gzwrite(f, bytes, (unsigned)len), (int)len);
        ck_assert_int_eq(gzclose(f), Z_OK);
#else
        ck_abort_msg("gzip without zlib");
#endif
    } else {
        FILE *f = fopen(path, "wb");
        ck_assert(f);
        ck_assert_uint_eq(fwrite(bytes, 1, len, f), len);
        ck_assert_int_eq(fclose(f), 0);
    }
    return path;
}

#ifdef LOOM_HAVE_ZLIB
/* Reads a whole file (for cutting and corrupting compressed files). */
static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    ck_assert(b);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}
#endif

/* An IDX file: magic, dims (big-endian), then ndata bytes of data, byte i
 * being fill(i). */
typedef struct bytes {
    uint8_t *p;
    size_t len;
} bytes;

static uint8_t pixel_of(int64_t i) { return (uint8_t)(i * 37 + 11); }
static uint8_t label_of(int64_t i) { return (uint8_t)(i * 7 % 10); }

static bytes idx_build(const uint8_t magic[4], int ndims, const uint32_t *dims, int64_t ndata,
                       uint8_t (*fill)(int64_t))
{
    bytes b;
    b.len = 4 + 4 * (size_t)ndims + (size_t)ndata;
    b.p = malloc(b.len);
    ck_assert(b.p);
    memcpy(b.p, magic, 4);
    for (int d = 0; d < ndims; d++) {
        uint8_t *q = b.p + 4 + 4 * d;
        q[0] = (uint8_t)(dims[d] >> 24);
        q[1] = (uint8_t)(dims[d] >> 16);
        q[2] = (uint8_t)(dims[d] >> 8);
        q[3] = (uint8_t)dims[d];
    }
    for (int64_t i = 0; i < ndata; i++) b.p[4 + 4 * ndims + i] = fill(i);
    return b;
}

static const uint8_t IMAGES_MAGIC[4] = {0, 0, 8, 3}, LABELS_MAGIC[4] = {0, 0, 8, 1};

/* A good pair: 5 images of 3 x 4, labels label_of(i). */
static bytes good_images(void) { return idx_build(IMAGES_MAGIC, 3, (const uint32_t[]){5, 3, 4}, 60, pixel_of); }
static bytes good_labels(void) { return idx_build(LABELS_MAGIC, 1, (const uint32_t[]){5}, 5, label_of); }

static void check_good_dataset(const loom_dataset *ds, int num_classes)
{
    ck_assert(ds);
    ck_assert_int_eq(loom_dataset_size(ds), 5);
    ck_assert_int_eq(loom_dataset_rows(ds), 3);
    ck_assert_int_eq(loom_dataset_cols(ds), 4);
    ck_assert_int_eq(loom_dataset_num_classes(ds), num_classes);
    const uint8_t *px = loom_dataset_pixels(ds), *lb = loom_dataset_labels(ds);
    for (int i = 0; i < 60; i++) ck_assert_uint_eq(px[i], pixel_of(i));
    for (int i = 0; i < 5; i++) ck_assert_uint_eq(lb[i], label_of(i));
}

/* ---- reading ------------------------------------------------------------ */

static void roundtrip(bool gz)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "data");
    bytes im = good_images(), lb = good_labels();
    char *ip = write_file(dir, gz ? "a-images.gz" : "a-images", im.p, im.len, gz);
    char *lp = write_file(dir, gz ? "a-labels.gz" : "a-labels", lb.p, lb.len, gz);
    loom_dataset *ds = NULL;
    /* label_of(0..4) = 0, 7, 4, 1, 8: 9 classes counted, or 10 given. */
    ck_assert_msg(loom_idx_dataset_load(ip, lp, 0, &ds) == LOOM_OK, "%s", loom_last_error());
    check_good_dataset(ds, 9);
    loom_dataset_free(ds);
    ck_assert_msg(loom_idx_dataset_load(ip, lp, 10, &ds) == LOOM_OK, "%s", loom_last_error());
    check_good_dataset(ds, 10);
    loom_dataset_free(ds);
    free(ip);
    free(lp);
    free(im.p);
    free(lb.p);
    tmp_remove(dir);
}

START_TEST(test_read_plain) { roundtrip(false); }
END_TEST

START_TEST(test_read_gzip)
{
#ifdef LOOM_HAVE_ZLIB
    roundtrip(true);
#else
    /* Without zlib a .gz file is refused with a message saying why. */
    char dir[512];
    tmp_make(dir, sizeof dir, "data");
    bytes im = good_images(), lb = good_labels();
    char *ip = write_file(dir, "a-images.gz", im.p, im.len, false);
    char *lp = write_file(dir, "a-labels", lb.p, lb.len, false);
    loom_dataset *ds = (loom_dataset *)1;
    ck_assert_int_eq(loom_idx_dataset_load(ip, lp, 0, &ds), LOOM_ERR_IO);
    ck_assert(ds == NULL);
    ck_assert(strstr(loom_last_error(), "zlib") && strstr(loom_last_error(), "a-images.gz"));
    free(ip);
    free(lp);
    free(im.p);
    free(lb.p);
    tmp_remove(dir);
#endif
}
END_TEST

START_TEST(test_mnist_load_names)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "data");
    loom_dataset *ds = (loom_dataset *)1;
    /* Nothing there: the message names both candidates. */
    ck_assert_int_eq(loom_mnist_load(dir, true, &ds), LOOM_ERR_IO);
    ck_assert(ds == NULL);
    ck_assert_msg(strstr(loom_last_error(), "train-images-idx3-ubyte.gz") &&
                      strstr(loom_last_error(), "neither"),
                  "%s", loom_last_error());

    bytes im = good_images(), lb = good_labels();
    bool gz = false;
#ifdef LOOM_HAVE_ZLIB
    gz = true;
#endif
    /* The training set compressed (where zlib is there), the test set plain. */
    free(write_file(dir, gz ? "train-images-idx3-ubyte.gz" : "train-images-idx3-ubyte", im.p, im.len, gz));
    free(write_file(dir, gz ? "train-labels-idx1-ubyte.gz" : "train-labels-idx1-ubyte", lb.p, lb.len, gz));
    free(write_file(dir, "t10k-images-idx3-ubyte", im.p, im.len, false));
    ck_assert_int_eq(loom_mnist_load(dir, false, &ds), LOOM_ERR_IO); /* the test labels are missing */
    ck_assert_msg(strstr(loom_last_error(), "t10k-labels-idx1-ubyte"), "%s", loom_last_error());
    free(write_file(dir, "t10k-labels-idx1-ubyte", lb.p, lb.len, false));

    ck_assert_msg(loom_mnist_load(dir, true, &ds) == LOOM_OK, "%s", loom_last_error());
    check_good_dataset(ds, 10);
    loom_dataset_free(ds);
    char slash[600];
    snprintf(slash, sizeof slash, "%s/", dir); /* a trailing slash is fine */
    ck_assert_msg(loom_mnist_load(slash, false, &ds) == LOOM_OK, "%s", loom_last_error());
    check_good_dataset(ds, 10);
    loom_dataset_free(ds);

    /* The plain file is preferred to the .gz when both are there. */
    bytes other = idx_build(IMAGES_MAGIC, 3, (const uint32_t[]){5, 3, 4}, 60, label_of);
    free(write_file(dir, "t10k-images-idx3-ubyte.gz", other.p, other.len, false));
    ck_assert_msg(loom_mnist_load(dir, false, &ds) == LOOM_OK, "%s", loom_last_error());
    check_good_dataset(ds, 10);
    loom_dataset_free(ds);

    free(im.p);
    free(lb.p);
    free(other.p);
    tmp_remove(dir);
}
END_TEST

/* ---- corrupt and inconsistent files ------------------------------------- */

typedef struct corrupt_case {
    const char *name;
    bool labels;          /* corrupt the labels file (else the images file) */
    uint8_t magic[4];
    int ndims;
    uint32_t dims[3];
    int64_t ndata;        /* data bytes written */
    long cut;             /* >= 0: the (uncompressed) file is cut to this many bytes */
    int num_classes;
    loom_status status;
    const char *substr;   /* in the message, besides the file's name */
} corrupt_case;

#define IM {0, 0, 8, 3}
#define LB {0, 0, 8, 1}

static const corrupt_case corrupt_cases[] = {
    {"bad magic", false, {0x12, 0x34, 8, 3}, 3, {5, 3, 4}, 60, -1, 0, LOOM_ERR_FORMAT, "bad magic"},
    {"text file", false, {'h', 'e', 'l', 'l'}, 3, {5, 3, 4}, 60, -1, 0, LOOM_ERR_FORMAT, "not an IDX file"},
    {"float32 elements", false, {0, 0, 0x0D, 3}, 3, {5, 3, 4}, 240, -1, 0, LOOM_ERR_FORMAT, "0x0d (float32)"},
    {"unknown type code", false, {0, 0, 0x42, 3}, 3, {5, 3, 4}, 60, -1, 0, LOOM_ERR_FORMAT, "0x42"},
    {"images with 2 dims", false, {0, 0, 8, 2}, 2, {5, 12}, 60, -1, 0, LOOM_ERR_FORMAT, "2 dims"},
    {"images with 0 dims", false, {0, 0, 8, 0}, 0, {0}, 60, -1, 0, LOOM_ERR_FORMAT, "0 dims"},
    {"labels with 3 dims", true, {0, 0, 8, 3}, 3, {5, 3, 4}, 60, -1, 0, LOOM_ERR_FORMAT, "is it an images file?"},
    {"truncated images", false, IM, 3, {5, 3, 4}, 55, -1, 0, LOOM_ERR_FORMAT, "truncated"},
    {"truncated labels", true, LB, 1, {5}, 3, -1, 0, LOOM_ERR_FORMAT, "truncated"},
    {"trailing data", false, IM, 3, {5, 3, 4}, 63, -1, 0, LOOM_ERR_FORMAT, "trailing data"},
    {"trailing labels", true, LB, 1, {5}, 6, -1, 0, LOOM_ERR_FORMAT, "trailing data"},
    {"zero images", false, IM, 3, {0, 3, 4}, 0, -1, 0, LOOM_ERR_FORMAT, "dim 0 of the header is 0"},
    {"zero cols", false, IM, 3, {5, 3, 0}, 0, -1, 0, LOOM_ERR_FORMAT, "dim 2 of the header is 0"},
    {"zero labels", true, LB, 1, {0}, 0, -1, 0, LOOM_ERR_FORMAT, "is 0"},
    {"sizes overflow", false, IM, 3, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}, 60, -1, 0, LOOM_ERR_FORMAT,
     "overflow"},
    /* 2^32 * 2^16 bytes: representable, absurd; must not be allocated. */
    {"absurd sizes", false, IM, 3, {0xFFFFFFFFu, 0xFFFFu, 1}, 60, -1, 0, LOOM_ERR_FORMAT, "truncated"},
    {"cut in the dims", false, IM, 3, {5, 3, 4}, 60, 10, 0, LOOM_ERR_FORMAT, "truncated in the header"},
    {"cut in the magic", false, IM, 3, {5, 3, 4}, 60, 3, 0, LOOM_ERR_FORMAT, "too short"},
    {"empty file", true, LB, 1, {5}, 5, 0, 0, LOOM_ERR_FORMAT, "empty"},
    {"fewer labels", true, LB, 1, {4}, 4, -1, 0, LOOM_ERR_FORMAT, "holds 5 images"},
    {"more labels", true, LB, 1, {6}, 6, -1, 0, LOOM_ERR_FORMAT, "but"},
    {"label out of range", true, LB, 1, {5}, 5, -1, 7, LOOM_ERR_RANGE, "label 7 at index 1 is out of range"},
};

static void run_corrupt_case(const corrupt_case *c, bool gz)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "data");
    bytes im = good_images(), lb = good_labels();
    bytes bad = idx_build(c->magic, c->ndims, c->dims, c->ndata, c->labels ? label_of : pixel_of);
    if (c->cut >= 0) bad.len = (size_t)c->cut;
    const char *iname = gz ? "case-images-idx3-ubyte.gz" : "case-images-idx3-ubyte";
    const char *lname = gz ? "case-labels-idx1-ubyte.gz" : "case-labels-idx1-ubyte";
    char *ip = c->labels ? write_file(dir, iname, im.p, im.len, gz) : write_file(dir, iname, bad.p, bad.len, gz);
    char *lp = c->labels ? write_file(dir, lname, bad.p, bad.len, gz) : write_file(dir, lname, lb.p, lb.len, gz);
    loom_dataset *ds = (loom_dataset *)1;
    loom_clear_error();
    loom_status st = loom_idx_dataset_load(ip, lp, c->num_classes, &ds);
    const char *msg = loom_last_error();
    ck_assert_msg(st == c->status, "%s (%s): status %s, expected %s (%s)", c->name, gz ? "gzip" : "plain",
                  loom_status_str(st), loom_status_str(c->status), msg);
    ck_assert_msg(ds == NULL, "%s: *out not NULL on failure", c->name);
    ck_assert_msg(strstr(msg, c->labels ? lname : iname), "%s: message \"%s\" lacks the file name", c->name, msg);
    ck_assert_msg(strstr(msg, c->substr), "%s: message \"%s\" lacks \"%s\"", c->name, msg, c->substr);
    free(ip);
    free(lp);
    free(im.p);
    free(lb.p);
    free(bad.p);
    tmp_remove(dir);
}

START_TEST(test_corrupt_plain)
{
    for (size_t i = 0; i < sizeof corrupt_cases / sizeof corrupt_cases[0]; i++)
        run_corrupt_case(&corrupt_cases[i], false);
}
END_TEST

START_TEST(test_corrupt_gzip)
{
#ifdef LOOM_HAVE_ZLIB
    /* The same contents, compressed: the checks apply to the data. */
    for (size_t i = 0; i < sizeof corrupt_cases / sizeof corrupt_cases[0]; i++)
        run_corrupt_case(&corrupt_cases[i], true);

    /* Damage to the compressed stream itself. */
    char dir[512];
    tmp_make(dir, sizeof dir, "data");
    bytes im = good_images(), lb = good_labels();
    char *lp = write_file(dir, "l.gz", lb.p, lb.len, true);
    char *ip = write_file(dir, "cut-images.gz", im.p, im.len, true);
    size_t zlen;
    uint8_t *z = read_all(ip, &zlen);
    loom_dataset *ds = (loom_dataset *)1;

    /* A download cut short. */
    free(write_file(dir, "cut-images.gz", z, zlen / 2, false));
    ck_assert_int_eq(loom_idx_dataset_load(ip, lp, 0, &ds), LOOM_ERR_FORMAT);
    ck_assert(ds == NULL);
    ck_assert_msg(strstr(loom_last_error(), "cut-images.gz") && strstr(loom_last_error(), "gzip stream is cut short"),
                  "%s", loom_last_error());

    /* A damaged CRC: the data decompresses, the check at its end fails. */
    z[zlen - 8] ^= 0xFF;
    free(write_file(dir, "cut-images.gz", z, zlen, false));
    ck_assert_int_eq(loom_idx_dataset_load(ip, lp, 0, &ds), LOOM_ERR_FORMAT);
    ck_assert_msg(strstr(loom_last_error(), "cut-images.gz") && strstr(loom_last_error(), "corrupt gzip data"),
                  "%s", loom_last_error());

    /* Garbage after a gzip header. */
    z[zlen - 8] ^= 0xFF;
    for (size_t i = 10; i < zlen; i++) z[i] = (uint8_t)(0xFF - i);
    free(write_file(dir, "cut-images.gz", z, zlen, false));
    ck_assert_int_eq(loom_idx_dataset_load(ip, lp, 0, &ds), LOOM_ERR_FORMAT);
    ck_assert_msg(strstr(loom_last_error(), "cut-images.gz"), "%s", loom_last_error());

    free(z);
    free(ip);
    free(lp);
    free(im.p);
    free(lb.p);
    tmp_remove(dir);
#endif
}
END_TEST

START_TEST(test_missing_and_bad_arguments)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "data");
    bytes lb = good_labels();
    char *lp = write_file(dir, "labels", lb.p, lb.len, false);
    char missing[600], sub[600];
    snprintf(missing, sizeof missing, "%s/no-such-images", dir);
    snprintf(sub, sizeof sub, "%s/subdir", dir);
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    loom_dataset *ds = (loom_dataset *)1;

    ck_assert_int_eq(loom_idx_dataset_load(missing, lp, 0, &ds), LOOM_ERR_IO);
    ck_assert(ds == NULL);
    ck_assert_msg(strstr(loom_last_error(), "no-such-images") && strstr(loom_last_error(), "cannot open"), "%s",
                  loom_last_error());
    ck_assert_int_eq(loom_idx_dataset_load(sub, lp, 0, &ds), LOOM_ERR_IO);
    ck_assert_msg(strstr(loom_last_error(), "subdir") && strstr(loom_last_error(), "directory"), "%s",
                  loom_last_error());

    ck_assert_int_eq(loom_idx_dataset_load(NULL, lp, 0, &ds), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_idx_dataset_load(lp, NULL, 0, &ds), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_idx_dataset_load(lp, lp, 0, NULL), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_idx_dataset_load(lp, lp, 257, &ds), LOOM_ERR_INVALID_ARG);
    ck_assert(strstr(loom_last_error(), "num_classes"));
    ck_assert_int_eq(loom_idx_dataset_load(lp, lp, -1, &ds), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_mnist_load(NULL, true, &ds), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_mnist_load(dir, true, NULL), LOOM_ERR_INVALID_ARG);

    const uint8_t px[4] = {1, 2, 3, 4}, lab[1] = {3};
    ck_assert_int_eq(loom_dataset_from_arrays(0, 2, 2, px, lab, 0, &ds), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_dataset_from_arrays(1, 2, 2, NULL, lab, 0, &ds), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_dataset_from_arrays(INT64_MAX, INT64_MAX, 2, px, lab, 0, &ds), LOOM_ERR_INVALID_ARG);
    ck_assert(strstr(loom_last_error(), "overflow"));
    ck_assert_int_eq(loom_dataset_from_arrays(1, 2, 2, px, lab, 3, &ds), LOOM_ERR_RANGE);
    ck_assert(strstr(loom_last_error(), "label 3 at index 0"));
    ck_assert_int_eq(loom_dataset_from_arrays(1, 2, 2, px, lab, 0, &ds), LOOM_OK);
    ck_assert_int_eq(loom_dataset_num_classes(ds), 4);
    loom_dataset_free(ds);

    ck_assert_int_eq(loom_dataset_size(NULL), 0);
    ck_assert(loom_dataset_pixels(NULL) == NULL);
    loom_dataset_free(NULL);
    free(lp);
    free(lb.p);
    tmp_remove(dir);
}
END_TEST

/* ---- the loader ---------------------------------------------------------- */

/* n images of 2 x 3 whose first pixel is the image's index (n <= 256) and
 * whose label is index % 10. */
enum { ROWS = 2, COLS = 3, PIX = ROWS * COLS };

static loom_dataset *indexed_dataset(int64_t n)
{
    ck_assert(n <= 256);
    uint8_t *px = malloc((size_t)(n * PIX)), *lb = malloc((size_t)n);
    ck_assert(px && lb);
    for (int64_t i = 0; i < n; i++) {
        for (int p = 0; p < PIX; p++) px[i * PIX + p] = (uint8_t)(p == 0 ? i : (i * 31 + p * 17) & 0xFF);
        lb[i] = (uint8_t)(i % 10);
    }
    loom_dataset *ds = NULL;
    ck_assert_msg(loom_dataset_from_arrays(n, ROWS, COLS, px, lb, 10, &ds) == LOOM_OK, "%s", loom_last_error());
    free(px);
    free(lb);
    return ds;
}

static loom_dataloader *make_loader(loom_ctx *ctx, const loom_dataset *ds, loom_dataloader_options o)
{
    loom_dataloader *dl = NULL;
    ck_assert_msg(loom_dataloader_create(ctx, ds, &o, &dl) == LOOM_OK, "%s", loom_last_error());
    ck_assert(dl);
    return dl;
}

static loom_dataloader_options opts(int64_t batch, bool shuffle, uint64_t seed, bool drop_last, bool prefetch)
{
    loom_dataloader_options o = loom_dataloader_defaults();
    o.batch_size = batch;
    o.shuffle = shuffle;
    o.seed = seed;
    o.drop_last = drop_last;
    o.prefetch = prefetch;
    return o;
}

/* Runs one epoch, writing the image indices in visiting order into
 * order[] (recovered from the first pixel, and checked against the other
 * pixels and the label) and the batch sizes into sizes[]; returns the
 * number of batches. */
static int run_epoch(loom_ctx *ctx, loom_dataloader *dl, const loom_dataset *ds, int64_t *order, int64_t *sizes)
{
    const uint8_t *px = loom_dataset_pixels(ds);
    int nb = 0;
    int64_t k = 0;
    for (;;) {
        loom_scope_begin(ctx);
        loom_tensor *x, *y;
        ck_assert_msg(loom_dataloader_next(dl, &x, &y) == LOOM_OK, "%s", loom_last_error());
        if (!x) {
            ck_assert(y == NULL);
            loom_scope_end(ctx);
            break;
        }
        int64_t b = loom_tensor_size(x, 0);
        assert_shape(x, b, 1, ROWS, COLS);
        assert_shape(y, b);
        ck_assert_int_eq(loom_tensor_dtype(y), LOOM_INT64);
        float *xv = copy_out_f32(x);
        int64_t *yv = copy_out(y);
        for (int64_t j = 0; j < b; j++, k++) {
            int64_t idx = (int64_t)lroundf(xv[j * PIX] * 255.0f);
            ck_assert(idx >= 0 && idx < loom_dataset_size(ds));
            for (int p = 0; p < PIX; p++) ck_assert(xv[j * PIX + p] == (float)px[idx * PIX + p] / 255.0f);
            ck_assert_int_eq(yv[j], idx % 10);
            order[k] = idx;
        }
        free(xv);
        free(yv);
        sizes[nb++] = b;
        loom_scope_end(ctx);
    }
    return nb;
}

START_TEST(test_batching)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_dataset *ds = indexed_dataset(10);
    int64_t order[16], sizes[16];
    for (int pf = 0; pf < 2; pf++) {
        /* 10 = 4 + 4 + 2, in order without shuffle. */
        loom_dataloader *dl = make_loader(ctx, ds, opts(4, false, 0, false, pf));
        ck_assert_int_eq(loom_dataloader_num_batches(dl), 3);
        ck_assert_int_eq(run_epoch(ctx, dl, ds, order, sizes), 3);
        ck_assert(sizes[0] == 4 && sizes[1] == 4 && sizes[2] == 2);
        for (int i = 0; i < 10; i++) ck_assert_int_eq(order[i], i);
        /* After the end: the end again, until the next epoch starts. */
        loom_tensor *x = (loom_tensor *)1, *y = (loom_tensor *)1;
        ck_assert_int_eq(loom_dataloader_next(dl, &x, &y), LOOM_OK);
        ck_assert(x == NULL && y == NULL);
        ck_assert_int_eq(loom_dataloader_reset(dl), LOOM_OK);
        ck_assert_int_eq(loom_dataloader_epoch(dl), 1);
        ck_assert_int_eq(run_epoch(ctx, dl, ds, order, sizes), 3);
        loom_dataloader_free(dl);

        /* drop_last drops the partial batch. */
        dl = make_loader(ctx, ds, opts(4, false, 0, true, pf));
        ck_assert_int_eq(loom_dataloader_num_batches(dl), 2);
        ck_assert_int_eq(run_epoch(ctx, dl, ds, order, sizes), 2);
        ck_assert(sizes[0] == 4 && sizes[1] == 4);
        loom_dataloader_free(dl);

        /* Exact multiples, batch 1, and batches larger than the dataset. */
        dl = make_loader(ctx, ds, opts(5, false, 0, true, pf));
        ck_assert_int_eq(run_epoch(ctx, dl, ds, order, sizes), 2);
        loom_dataloader_free(dl);
        dl = make_loader(ctx, ds, opts(1, true, 3, false, pf));
        ck_assert_int_eq(run_epoch(ctx, dl, ds, order, sizes), 10);
        loom_dataloader_free(dl);
        dl = make_loader(ctx, ds, opts(1000, false, 0, false, pf));
        ck_assert_int_eq(run_epoch(ctx, dl, ds, order, sizes), 1);
        ck_assert_int_eq(sizes[0], 10);
        loom_dataloader_free(dl);
        dl = make_loader(ctx, ds, opts(1000, false, 0, true, pf));
        ck_assert_int_eq(loom_dataloader_num_batches(dl), 0);
        ck_assert_int_eq(run_epoch(ctx, dl, ds, order, sizes), 0);
        loom_dataloader_free(dl);
    }
    /* Every batch was freed by its scope. */
    ck_assert_int_eq(live(ctx), 0);
    loom_dataset_free(ds);
    loom_ctx_free(ctx);
}
END_TEST

static bool is_permutation(const int64_t *order, int64_t n)
{
    bool seen[256] = {false};
    for (int64_t i = 0; i < n; i++) {
        if (order[i] < 0 || order[i] >= n || seen[order[i]]) return false;
        seen[order[i]] = true;
    }
    return true;
}

START_TEST(test_shuffle)
{
    enum { N = 37 };
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_dataset *ds = indexed_dataset(N);
    int64_t e0[N], e1[N], again[N], other[N], sizes[N];
    for (int pf = 0; pf < 2; pf++) {
        loom_dataloader *dl = make_loader(ctx, ds, opts(5, true, 7, false, pf));
        ck_assert_int_eq(run_epoch(ctx, dl, ds, e0, sizes), 8);
        ck_assert_int_eq(sizes[7], 2);
        ck_assert(is_permutation(e0, N));
        bool identity = true;
        for (int i = 0; i < N; i++) identity &= e0[i] == i;
        ck_assert_msg(!identity, "shuffle left the order as it was");

        ck_assert_int_eq(loom_dataloader_reset(dl), LOOM_OK);
        ck_assert_int_eq(run_epoch(ctx, dl, ds, e1, sizes), 8);
        ck_assert(is_permutation(e1, N));
        ck_assert_msg(memcmp(e0, e1, sizeof e0) != 0, "epochs 0 and 1 have the same order");

        /* The order is a function of (seed, epoch): going back replays it,
         * also from the middle of an epoch. */
        loom_tensor *x, *y;
        ck_assert_int_eq(loom_dataloader_set_epoch(dl, 0), LOOM_OK);
        ck_assert_int_eq(loom_dataloader_next(dl, &x, &y), LOOM_OK);
        ck_assert_int_eq(loom_dataloader_set_epoch(dl, 0), LOOM_OK);
        ck_assert_int_eq(run_epoch(ctx, dl, ds, again, sizes), 8);
        ck_assert(memcmp(e0, again, sizeof e0) == 0);

        /* A new loader with the same seed: the same orders, epoch by epoch. */
        loom_dataloader *dl2 = make_loader(ctx, ds, opts(5, true, 7, false, !pf));
        ck_assert_int_eq(run_epoch(ctx, dl2, ds, again, sizes), 8);
        ck_assert(memcmp(e0, again, sizeof e0) == 0);
        ck_assert_int_eq(loom_dataloader_set_epoch(dl2, 1), LOOM_OK);
        ck_assert_int_eq(run_epoch(ctx, dl2, ds, again, sizes), 8);
        ck_assert(memcmp(e1, again, sizeof e1) == 0);
        loom_dataloader_free(dl2);

        /* Another seed, another order. */
        dl2 = make_loader(ctx, ds, opts(5, true, 8, false, pf));
        ck_assert_int_eq(run_epoch(ctx, dl2, ds, other, sizes), 8);
        ck_assert(is_permutation(other, N));
        ck_assert(memcmp(e0, other, sizeof e0) != 0);
        loom_dataloader_free(dl2);
        loom_dataloader_free(dl);
    }
    loom_dataset_free(ds);
    loom_ctx_free(ctx);
}
END_TEST

/* DistributedSampler's sharding: with R replicas, shard r of epoch e is
 * positions r, r + R, ... of the unsharded order of epoch e, padded by
 * wrapping to ceil(N / R) images; so the union of the shards' batch b is
 * the unsharded loader's batch b when its batch is R times theirs. */
START_TEST(test_shards)
{
    enum { N = 37 };
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_dataset *ds = indexed_dataset(N);
    int64_t whole[N], shard[N], sizes[N];
    for (int shuffle = 0; shuffle < 2; shuffle++)
        for (int r_count = 2; r_count <= 3; r_count++)
            for (int epoch = 0; epoch < 2; epoch++) {
                loom_dataloader *all = make_loader(ctx, ds, opts(4 * r_count, shuffle, 9, false, true));
                ck_assert_int_eq(loom_dataloader_set_epoch(all, epoch), LOOM_OK);
                run_epoch(ctx, all, ds, whole, sizes);
                const int per = (N + r_count - 1) / r_count;
                for (int rank = 0; rank < r_count; rank++) {
                    loom_dataloader_options o = opts(4, shuffle, 9, false, rank % 2);
                    o.num_replicas = r_count;
                    o.rank = rank;
                    loom_dataloader *dl = make_loader(ctx, ds, o);
                    ck_assert_int_eq(loom_dataloader_num_batches(dl), (per + 3) / 4);
                    ck_assert_int_eq(loom_dataloader_set_epoch(dl, epoch), LOOM_OK);
                    int nb = run_epoch(ctx, dl, ds, shard, sizes);
                    int64_t seen = 0;
                    for (int b = 0; b < nb; b++) seen += sizes[b];
                    ck_assert_int_eq(seen, per);
                    for (int j = 0; j < per; j++)
                        ck_assert_int_eq(shard[j], whole[(rank + (int64_t)j * r_count) % N]);
                    loom_dataloader_free(dl);
                }
                loom_dataloader_free(all);
            }
    /* Bad shards: a clear error. */
    loom_dataloader *dl = NULL;
    loom_dataloader_options o = opts(4, false, 0, false, false);
    o.num_replicas = 2;
    o.rank = 2;
    ck_assert_int_eq(loom_dataloader_create(ctx, ds, &o, &dl), LOOM_ERR_INVALID_ARG);
    ck_assert_msg(strstr(loom_last_error(), "rank 2 of 2"), "%s", loom_last_error());
    o.num_replicas = -1;
    o.rank = 0;
    ck_assert_int_eq(loom_dataloader_create(ctx, ds, &o, &dl), LOOM_ERR_INVALID_ARG);
    loom_dataset_free(ds);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_scaling_and_normalize)
{
    /* One image holding every byte value. */
    uint8_t px[256], lb[1] = {0};
    for (int v = 0; v < 256; v++) px[v] = (uint8_t)(255 - v);
    loom_dataset *ds = NULL;
    ck_assert_int_eq(loom_dataset_from_arrays(1, 16, 16, px, lb, 0, &ds), LOOM_OK);
    ck_assert_int_eq(loom_dataset_num_classes(ds), 1);
    loom_ctx *ctx = test_ctx(1, NULL);
    float want[256];
    for (int norm = 0; norm < 2; norm++) {
        loom_dataloader_options o = opts(1, false, 0, false, true);
        o.normalize = norm;
        o.mean = LOOM_FASHION_MNIST_MEAN;
        o.std = LOOM_FASHION_MNIST_STD;
        /* torchvision: ToTensor is float32 x / 255, Normalize float32
         * (x - mean) / std; the values must be those, bit for bit. */
        for (int v = 0; v < 256; v++) {
            float f = (float)px[v] / 255.0f;
            want[v] = norm ? (f - (float)o.mean) / (float)o.std : f;
        }
        loom_dataloader *dl = make_loader(ctx, ds, o);
        loom_tensor *x, *y;
        ck_assert_int_eq(loom_dataloader_next(dl, &x, &y), LOOM_OK);
        assert_shape(x, 1, 1, 16, 16);
        assert_values_f32(x, want, 256, 0);
        EXPECT_I64(y, 0);
        if (!norm) {
            float *v = copy_out_f32(x);
            ck_assert(v[0] == 1.0f && v[255] == 0.0f);
            free(v);
        }
        loom_dataloader_free(dl);
    }
    loom_dataset_free(ds);
    loom_ctx_free(ctx);
}
END_TEST

/* Copies every batch of `epochs` epochs (images then labels, batch after
 * batch) into one malloc'd buffer; *len is its size in bytes. */
static uint8_t *all_batches(loom_ctx *ctx, loom_dataloader *dl, int epochs, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    uint8_t *out = malloc(cap);
    ck_assert(out);
    for (int e = 0; e < epochs; e++) {
        ck_assert_int_eq(loom_dataloader_set_epoch(dl, e), LOOM_OK);
        for (;;) {
            loom_scope_begin(ctx);
            loom_tensor *x, *y;
            ck_assert_int_eq(loom_dataloader_next(dl, &x, &y), LOOM_OK);
            if (!x) {
                loom_scope_end(ctx);
                break;
            }
            size_t bx = (size_t)loom_tensor_numel(x) * 4, by = (size_t)loom_tensor_numel(y) * 8;
            while (n + bx + by > cap) {
                cap *= 2;
                out = realloc(out, cap);
                ck_assert(out);
            }
            ck_assert_int_eq(loom_tensor_copy_to(x, out + n, bx), LOOM_OK);
            ck_assert_int_eq(loom_tensor_copy_to(y, out + n + bx, by), LOOM_OK);
            n += bx + by;
            loom_scope_end(ctx);
        }
    }
    *len = n;
    return out;
}

START_TEST(test_prefetch_matches_synchronous)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_dataset *ds = indexed_dataset(103);
    const int64_t batches[] = {1, 2, 7, 50, 103, 200};
    for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++) {
        for (int shuffle = 0; shuffle < 2; shuffle++) {
            for (int drop = 0; drop < 2; drop++) {
                loom_dataloader_options o = opts(batches[i], shuffle, 99, drop, false);
                o.normalize = true;
                o.mean = LOOM_MNIST_MEAN;
                o.std = LOOM_MNIST_STD;
                loom_dataloader *a = make_loader(ctx, ds, o);
                o.prefetch = true;
                loom_dataloader *b = make_loader(ctx, ds, o);
                size_t la, lb;
                uint8_t *va = all_batches(ctx, a, 3, &la), *vb = all_batches(ctx, b, 3, &lb);
                ck_assert_uint_eq(la, lb);
                ck_assert_msg(memcmp(va, vb, la) == 0, "batch %lld shuffle %d drop %d: prefetch differs",
                              (long long)batches[i], shuffle, drop);
                free(va);
                free(vb);
                loom_dataloader_free(a);
                loom_dataloader_free(b);
            }
        }
    }
    loom_dataset_free(ds);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_epoch_changes_and_free_mid_epoch)
{
    /* Jumping between epochs at every point of an epoch, while the thread
     * is filling, must give each epoch's batches from the first. */
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_dataset *ds = indexed_dataset(64);
    loom_dataloader *ref = make_loader(ctx, ds, opts(8, true, 5, false, false));
    loom_dataloader *dl = make_loader(ctx, ds, opts(8, true, 5, false, true));
    int64_t want[4][64], sizes[8];
    for (int e = 0; e < 4; e++) {
        ck_assert_int_eq(loom_dataloader_set_epoch(ref, e), LOOM_OK);
        run_epoch(ctx, ref, ds, want[e], sizes);
    }
    for (int round = 0; round < 200; round++) {
        int e = (round * 7) % 4, skip = (round * 3) % 9;
        ck_assert_int_eq(loom_dataloader_set_epoch(dl, e), LOOM_OK);
        ck_assert_int_eq(loom_dataloader_epoch(dl), e);
        for (int s = 0; s < skip; s++) {
            loom_scope_begin(ctx);
            loom_tensor *x, *y;
            ck_assert_int_eq(loom_dataloader_next(dl, &x, &y), LOOM_OK);
            if (s < 8) {
                int64_t *yv = copy_out(y);
                for (int j = 0; j < 8; j++) ck_assert_int_eq(yv[j], want[e][s * 8 + j] % 10);
                free(yv);
            } else {
                ck_assert(x == NULL);
            }
            loom_scope_end(ctx);
        }
    }
    loom_dataloader_free(dl);
    loom_dataloader_free(ref);

    /* Freed right after creation, and in the middle of an epoch. */
    dl = make_loader(ctx, ds, opts(4, true, 1, false, true));
    loom_dataloader_free(dl);
    dl = make_loader(ctx, ds, opts(4, true, 1, false, true));
    loom_tensor *x, *y;
    ck_assert_int_eq(loom_dataloader_next(dl, &x, &y), LOOM_OK);
    loom_dataloader_free(dl);
    ck_assert_int_eq(loom_tensor_numel(x), 4 * PIX); /* the batch outlives its loader */
    loom_dataloader_free(NULL);
    loom_dataset_free(ds);
    loom_ctx_free(ctx);
}
END_TEST

START_TEST(test_loader_arguments)
{
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_dataset *ds = indexed_dataset(10);
    loom_dataloader *dl = (loom_dataloader *)1;
    loom_dataloader_options o = opts(0, false, 0, false, true);
    ck_assert_int_eq(loom_dataloader_create(ctx, ds, &o, &dl), LOOM_ERR_INVALID_ARG);
    ck_assert(dl == NULL);
    ck_assert(strstr(loom_last_error(), "batch_size"));
    o = opts(4, false, 0, false, true);
    o.normalize = true;
    o.std = 0;
    ck_assert_int_eq(loom_dataloader_create(ctx, ds, &o, &dl), LOOM_ERR_INVALID_ARG);
    ck_assert(strstr(loom_last_error(), "std"));
    o.std = 1e-50; /* zero as float32 */
    ck_assert_int_eq(loom_dataloader_create(ctx, ds, &o, &dl), LOOM_ERR_INVALID_ARG);
    o.std = 1;
    o.mean = NAN;
    ck_assert_int_eq(loom_dataloader_create(ctx, ds, &o, &dl), LOOM_ERR_INVALID_ARG);
    o.mean = 1e300;
    ck_assert_int_eq(loom_dataloader_create(ctx, ds, &o, &dl), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_dataloader_create(NULL, ds, NULL, &dl), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_dataloader_create(ctx, NULL, NULL, &dl), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_dataloader_create(ctx, ds, NULL, NULL), LOOM_ERR_INVALID_ARG);

    /* NULL options: the defaults (batch 1, in order). */
    ck_assert_int_eq(loom_dataloader_create(ctx, ds, NULL, &dl), LOOM_OK);
    ck_assert_int_eq(loom_dataloader_num_batches(dl), 10);
    loom_tensor *x, *y;
    ck_assert_int_eq(loom_dataloader_next(dl, &x, NULL), LOOM_ERR_INVALID_ARG);
    ck_assert(x == NULL);
    ck_assert_int_eq(loom_dataloader_next(NULL, &x, &y), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_dataloader_set_epoch(dl, -1), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_dataloader_set_epoch(NULL, 0), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_dataloader_reset(NULL), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_dataloader_epoch(NULL), -1);
    ck_assert_int_eq(loom_dataloader_num_batches(NULL), -1);
    ck_assert_int_eq(loom_dataloader_next(dl, &x, &y), LOOM_OK);
    EXPECT_I64(y, 0);
    loom_dataloader_free(dl);
    loom_dataset_free(ds);
    loom_ctx_free(ctx);
}
END_TEST

/* One epoch of a prefetching loader in a context whose allocator fails
 * where the sweep says; returns the first failure's status. */
static loom_status loader_program(failing *f, void *user)
{
    const loom_dataset *ds = user;
    loom_allocator al = {failing_alloc, failing_free, f};
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 1, .num_workers = 1, .allocator = &al});
    if (!ctx) return loom_last_status();
    loom_dataloader *dl = NULL;
    loom_dataloader_options o = opts(3, true, 1, false, true);
    loom_status st = loom_dataloader_create(ctx, ds, &o, &dl);
    while (!st) {
        loom_tensor *x, *y;
        if ((st = loom_scope_begin(ctx))) break;
        st = loom_dataloader_next(dl, &x, &y);
        if (!st && !x) {
            loom_scope_end(ctx);
            break;
        }
        if (st) ck_assert(x == NULL && y == NULL);
        loom_scope_end(ctx);
    }
    loom_dataloader_free(dl);
    loom_ctx_free(ctx);
    return st;
}

START_TEST(test_out_of_memory)
{
    loom_dataset *ds = indexed_dataset(10);
    failing f = {0, 0, 0};
    ck_assert_int_eq(loader_program(&f, ds), LOOM_OK);
    ck_assert_int_eq(f.outstanding, 0);
    oom_sweep(loader_program, ds, f.count);

    /* A failed next() keeps its batch: the retry returns it. */
    failing g = {0, 0, 0};
    loom_allocator al = {failing_alloc, failing_free, &g};
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 1, .allocator = &al});
    ck_assert(ctx);
    loom_dataloader *dl = make_loader(ctx, ds, opts(4, false, 0, false, true));
    loom_tensor *x, *y;
    for (long k = 1;; k++) { /* fail the call's first, second, ... allocation */
        ck_assert(k < 100);
        g.fail_at = g.count + k;
        loom_status st = loom_dataloader_next(dl, &x, &y);
        if (st == LOOM_OK) { /* k is past the call's allocations */
            ck_assert(k > 1);
            break;
        }
        ck_assert_int_eq(st, LOOM_ERR_NOMEM);
        ck_assert(x == NULL && y == NULL);
        ck_assert_msg(strstr(loom_last_error(), "dataloader_next") && strstr(loom_last_error(), "out of memory"),
                      "%s", loom_last_error());
    }
    g.fail_at = 0;
    EXPECT_I64(y, 0, 1, 2, 3);
    ck_assert_int_eq(loom_dataloader_next(dl, &x, &y), LOOM_OK);
    EXPECT_I64(y, 4, 5, 6, 7);
    loom_dataloader_free(dl);
    loom_ctx_free(ctx);
    ck_assert_int_eq(g.outstanding, 0);
    loom_dataset_free(ds);
}
END_TEST

/* ---- the real Fashion-MNIST ---------------------------------------------- */

START_TEST(test_fashion_mnist)
{
    struct stat st;
    if (stat(FASHION_DIR, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "data: %s not found, skipping the Fashion-MNIST check\n", FASHION_DIR);
        return;
    }
    loom_dataset *ds = NULL;
    loom_status status = loom_mnist_load(FASHION_DIR, false, &ds);
#ifndef LOOM_HAVE_ZLIB
    if (status == LOOM_ERR_IO && strstr(loom_last_error(), "zlib")) {
        fprintf(stderr, "data: %s is compressed and Loom was built without zlib, skipping the Fashion-MNIST check\n",
                FASHION_DIR);
        return;
    }
#endif
    ck_assert_msg(status == LOOM_OK, "%s", loom_last_error());
    ck_assert_int_eq(loom_dataset_size(ds), 10000);
    ck_assert_int_eq(loom_dataset_rows(ds), 28);
    ck_assert_int_eq(loom_dataset_cols(ds), 28);
    ck_assert_int_eq(loom_dataset_num_classes(ds), 10);
    const uint8_t *lb = loom_dataset_labels(ds), *px = loom_dataset_pixels(ds);
    /* Known values of the test set: the first image is an ankle boot (9),
     * the last a sandal (5); 1000 images per class; the first image's
     * pixels sum to 33456. */
    ck_assert_int_eq(lb[0], 9);
    ck_assert_int_eq(lb[9999], 5);
    int count[10] = {0};
    for (int i = 0; i < 10000; i++) {
        ck_assert(lb[i] < 10);
        count[lb[i]]++;
    }
    for (int c = 0; c < 10; c++) ck_assert_int_eq(count[c], 1000);
    long sum = 0;
    for (int p = 0; p < 784; p++) sum += px[p];
    ck_assert_int_eq(sum, 33456);

    loom_ctx *ctx = test_ctx(1, NULL);
    loom_dataloader_options o = opts(1000, false, 0, false, true);
    loom_dataloader *dl = make_loader(ctx, ds, o);
    ck_assert_int_eq(loom_dataloader_num_batches(dl), 10);
    loom_tensor *x, *y;
    ck_assert_int_eq(loom_dataloader_next(dl, &x, &y), LOOM_OK);
    assert_shape(x, 1000, 1, 28, 28);
    /* sum of the first image's scaled pixels: 33456 / 255 */
    ck_assert(fabs(scalar_of(loom_sum(loom_select(x, 0, 0), 0, NULL, false)) - 33456.0 / 255.0) < 1e-3);
    double y0 = scalar_of(loom_select(y, 0, 0));
    ck_assert(y0 == 9.0);
    loom_dataloader_free(dl);
    loom_ctx_free(ctx);
    loom_dataset_free(ds);
}
END_TEST

Suite *loom_suite_data(void)
{
    Suite *s = suite_create("data");
    TCase *tc = test_tcase(s, "idx", 30);
    tcase_add_test(tc, test_read_plain);
    tcase_add_test(tc, test_read_gzip);
    tcase_add_test(tc, test_mnist_load_names);
    tcase_add_test(tc, test_corrupt_plain);
    tcase_add_test(tc, test_corrupt_gzip);
    tcase_add_test(tc, test_missing_and_bad_arguments);

    tc = test_tcase(s, "loader", 60);
    tcase_add_test(tc, test_batching);
    tcase_add_test(tc, test_shuffle);
    tcase_add_test(tc, test_shards);
    tcase_add_test(tc, test_scaling_and_normalize);
    tcase_add_test(tc, test_prefetch_matches_synchronous);
    tcase_add_test(tc, test_epoch_changes_and_free_mid_epoch);
    tcase_add_test(tc, test_loader_arguments);
    tcase_add_test(tc, test_out_of_memory);

    tc = test_tcase(s, "fashion_mnist", 60);
    tcase_add_test(tc, test_fashion_mnist);
    return s;
}
