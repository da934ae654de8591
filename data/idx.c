/*
 * data/idx.c - datasets: the IDX reader for the MNIST family, and datasets
 * copied from arrays.
 *
 * An IDX file is a 4-byte magic (00 00, an element type code, the number
 * of dims), one big-endian uint32 per dim, then the elements row-major.
 * The MNIST family uses unsigned bytes (type 08): images N x rows x cols,
 * labels N. The files are usually distributed gzip-compressed.
 *
 * Everything in a file is untrusted. The reader checks the header, checks
 * the size product for overflow, and reads the data into a buffer that
 * grows only as bytes actually arrive (so a header claiming terabytes
 * costs a "truncated" error, not a terabyte allocation); it then asks for
 * one byte more to catch trailing data. Because a gzip stream's length is
 * only known once it is decompressed, this "read exactly, then expect EOF"
 * check is the one that works for both compressed and plain files.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef LOOM_HAVE_ZLIB
#include <zlib.h>
#endif

#include "data/data_impl.h"
#include "runtime/error.h"

/* The data buffer starts at this size (or the expected size if smaller) and
 * doubles up to the expected size. */
#define FIRST_CHUNK ((size_t)1 << 20)
/* gzread takes an unsigned int length. */
#define MAX_READ ((size_t)1 << 30)

/* An open input: a gzFile when built with zlib (gzread reads plain files
 * transparently, so one path serves both), else a stdio stream. */
typedef struct idx_src {
    const char *path;
#ifdef LOOM_HAVE_ZLIB
    gzFile gz;
#else
    FILE *f;
#endif
} idx_src;

#ifndef LOOM_HAVE_ZLIB
static bool ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}
#endif

static loom_status src_open(idx_src *s, const char *path)
{
    s->path = path;
    /* open() rather than gzopen()/fopen(): its errno is reliable for the
     * message, and fstat() can refuse a directory, which would otherwise
     * open fine and fail later with a less helpful read error. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return loom__set_error(LOOM_ERR_IO, "idx: %s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return loom__set_error(LOOM_ERR_IO, "idx: %s: is a directory, not an IDX file", path);
    }
#ifdef LOOM_HAVE_ZLIB
    s->gz = gzdopen(fd, "rb");
    if (!s->gz) {
        close(fd); /* gzdopen does not close fd when it fails */
        return loom__set_error(LOOM_ERR_NOMEM, "idx: %s: out of memory opening the file", path);
    }
    /* 128 KiB instead of 8 KiB: fewer read() calls and inflate rounds for
     * the 26 MB Fashion-MNIST training images. */
    gzbuffer(s->gz, 128u << 10);
#else
    if (ends_with(path, ".gz")) {
        close(fd);
        return loom__set_error(LOOM_ERR_IO,
                               "idx: %s: gzip-compressed files need zlib, and this Loom was built without it "
                               "(decompress the file with gunzip, or install zlib1g-dev and rebuild)",
                               path);
    }
    s->f = fdopen(fd, "rb");
    if (!s->f) {
        int e = errno;
        close(fd);
        return loom__set_error(LOOM_ERR_IO, "idx: %s: cannot open: %s", path, strerror(e));
    }
#endif
    return LOOM_OK;
}

static void src_close(idx_src *s)
{
#ifdef LOOM_HAVE_ZLIB
    if (s->gz) gzclose_r(s->gz);
    s->gz = NULL;
#else
    if (s->f) fclose(s->f);
    s->f = NULL;
#endif
}

/* Reads up to n bytes, fewer only at the end of the data; *got says how
 * many. A failure to read (as opposed to the end) is an error. */
static loom_status src_read(idx_src *s, void *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        size_t want = n - *got;
        if (want > MAX_READ) want = MAX_READ;
#ifdef LOOM_HAVE_ZLIB
        int r = gzread(s->gz, (char *)buf + *got, (unsigned)want);
        if (r < 0) {
            int errnum = Z_OK;
            const char *msg = gzerror(s->gz, &errnum);
            if (errnum == Z_ERRNO)
                return loom__set_error(LOOM_ERR_IO, "idx: %s: read error: %s", s->path, strerror(errno));
            if (errnum == Z_MEM_ERROR)
                return loom__set_error(LOOM_ERR_NOMEM, "idx: %s: out of memory decompressing", s->path);
            /* zlib prefixes its message with the path it was given,
             * "<fd:3>" for gzdopen: drop that, the message has the path. */
            if (!msg) msg = "?";
            const char *colon = strncmp(msg, "<fd:", 4) == 0 ? strstr(msg, ": ") : NULL;
            if (colon) msg = colon + 2;
            return loom__set_error(LOOM_ERR_FORMAT, "idx: %s: corrupt gzip data (%s)", s->path, msg);
        }
        if (r == 0) break;
        *got += (size_t)r;
#else
        size_t r = fread((char *)buf + *got, 1, want, s->f);
        *got += r;
        if (r < want) {
            if (ferror(s->f))
                return loom__set_error(LOOM_ERR_IO, "idx: %s: read error: %s", s->path, strerror(errno));
            break;
        }
#endif
    }
    return LOOM_OK;
}

/* " (the gzip stream is cut short)" when the short read came from a
 * compressed stream that ended early, else "": tells a truncated download
 * from a wrong header. */
static const char *truncation_note(idx_src *s)
{
#ifdef LOOM_HAVE_ZLIB
    int errnum = Z_OK;
    gzerror(s->gz, &errnum);
    if (errnum == Z_BUF_ERROR) return " (the gzip stream is cut short)";
#else
    (void)s;
#endif
    return "";
}

static const char *type_name(unsigned code)
{
    switch (code) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "not an IDX type";
    }
}

/* Reads an IDX file of unsigned bytes with `ndims` dims (3 for images, 1
 * for labels) into a malloc'd buffer: *data (caller frees) and dims[]. */
static loom_status read_idx(const char *path, int ndims, int64_t dims[3], uint8_t **data)
{
    const char *kind = ndims == 3 ? "images" : "labels";
    *data = NULL;
    idx_src src;
    loom_status st = src_open(&src, path);
    if (st) return st;

    uint8_t head[4 + 4 * 3];
    size_t got;
    if ((st = src_read(&src, head, 4, &got))) goto done;
    if (got < 4) {
        st = got == 0 ? loom__set_error(LOOM_ERR_FORMAT, "idx: %s: the file is empty", path)
                      : loom__set_error(LOOM_ERR_FORMAT, "idx: %s: %zu bytes, too short for an IDX header%s", path,
                                        got, truncation_note(&src));
        goto done;
    }
    if (head[0] != 0 || head[1] != 0) {
        if (head[0] == 0x1f && head[1] == 0x8b) /* only reachable without zlib */
            st = loom__set_error(LOOM_ERR_IO,
                                 "idx: %s: the file is gzip-compressed, and this Loom was built without zlib "
                                 "(decompress it with gunzip, or install zlib1g-dev and rebuild)",
                                 path);
        else
            st = loom__set_error(LOOM_ERR_FORMAT,
                                 "idx: %s: not an IDX file (bad magic: it starts with %02x %02x %02x %02x, an IDX "
                                 "file with 00 00 <type> <dims>)",
                                 path, head[0], head[1], head[2], head[3]);
        goto done;
    }
    if (head[2] != 0x08) {
        st = loom__set_error(LOOM_ERR_FORMAT,
                             "idx: %s: unsupported element type 0x%02x (%s): only unsigned bytes (0x08), as in "
                             "the MNIST family, are supported",
                             path, head[2], type_name(head[2]));
        goto done;
    }
    if (head[3] != ndims) {
        st = loom__set_error(LOOM_ERR_FORMAT, "idx: %s: %d dims, but %s file has %d (%s)%s", path, head[3],
                             ndims == 3 ? "an images" : "a labels", ndims, ndims == 3 ? "count x rows x cols" : "count",
                             head[3] == 3 ? "; is it an images file?" : head[3] == 1 ? "; is it a labels file?" : "");
        goto done;
    }
    if ((st = src_read(&src, head + 4, 4 * (size_t)ndims, &got))) goto done;
    if (got < 4 * (size_t)ndims) {
        st = loom__set_error(LOOM_ERR_FORMAT, "idx: %s: truncated in the header (%zu of %d dim bytes)%s", path, got,
                             4 * ndims, truncation_note(&src));
        goto done;
    }

    /* Dims are uint32, so each fits an int64; the product may not. */
    uint64_t total = 1;
    for (int d = 0; d < ndims; d++) {
        const uint8_t *p = head + 4 + 4 * d;
        uint64_t v = (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
        dims[d] = (int64_t)v;
        if (v == 0) {
            st = loom__set_error(LOOM_ERR_FORMAT, "idx: %s: dim %d of the header is 0 (an empty %s file)", path, d,
                                 kind);
            goto done;
        }
        if (total > (uint64_t)INT64_MAX / v || total * v > SIZE_MAX) {
            char shape[LOOM__SHAPE_STR_MAX];
            st = loom__set_error(LOOM_ERR_FORMAT, "idx: %s: the header's sizes %s overflow (a corrupt header)", path,
                                 loom__fmt_shape(shape, sizeof shape, d + 1, dims));
            goto done;
        }
        total *= v;
    }

    /* Grow as the data arrives (see the top of the file). */
    size_t cap = total < FIRST_CHUNK ? (size_t)total : FIRST_CHUNK, len = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        st = loom__set_error(LOOM_ERR_NOMEM, "idx: %s: out of memory", path);
        goto done;
    }
    for (;;) {
        if ((st = src_read(&src, buf + len, cap - len, &got))) break;
        len += got;
        if (len < cap || len == total) break;
        size_t ncap = cap > (size_t)total / 2 ? (size_t)total : cap * 2;
        uint8_t *nb = realloc(buf, ncap);
        if (!nb) {
            st = loom__set_error(LOOM_ERR_NOMEM, "idx: %s: out of memory (%zu bytes)", path, ncap);
            break;
        }
        buf = nb;
        cap = ncap;
    }
    if (!st && len < total) {
        char shape[LOOM__SHAPE_STR_MAX];
        st = loom__set_error(LOOM_ERR_FORMAT,
                             "idx: %s: truncated: the header gives %s of shape %s (%llu bytes of data after the "
                             "%d-byte header), but only %zu bytes follow%s",
                             path, kind, loom__fmt_shape(shape, sizeof shape, ndims, dims), (unsigned long long)total,
                             4 + 4 * ndims, len, truncation_note(&src));
    }
    if (!st) {
        uint8_t extra;
        st = src_read(&src, &extra, 1, &got);
        if (!st && got)
            st = loom__set_error(LOOM_ERR_FORMAT,
                                 "idx: %s: trailing data after the %llu bytes the header describes (a wrong header, "
                                 "or another file appended)",
                                 path, (unsigned long long)total);
    }
    if (st) {
        free(buf);
        goto done;
    }
    *data = buf;
done:
    src_close(&src);
    return st;
}

/* Checks labels[0..n-1] against num_classes (0: takes max + 1) and returns
 * the class count in *classes. `what` names the source in messages. */
static loom_status check_labels(const char *what, const uint8_t *labels, int64_t n, int num_classes, int *classes)
{
    int max = 0;
    for (int64_t i = 0; i < n; i++) {
        if (num_classes > 0 && labels[i] >= num_classes)
            return loom__set_error(LOOM_ERR_RANGE, "%s: label %d at index %lld is out of range for %d classes", what,
                                   labels[i], (long long)i, num_classes);
        if (labels[i] > max) max = labels[i];
    }
    *classes = num_classes > 0 ? num_classes : max + 1;
    return LOOM_OK;
}

static loom_status check_num_classes(const char *op, int num_classes)
{
    if (num_classes < 0 || num_classes > 256)
        return loom__set_error(LOOM_ERR_INVALID_ARG,
                               "%s: num_classes is %d; it must be 1..256 (labels are bytes), or 0 to count them", op,
                               num_classes);
    return LOOM_OK;
}

loom_status loom_idx_dataset_load(const char *images_path, const char *labels_path, int num_classes,
                                  loom_dataset **out)
{
    if (!out) return loom__set_error(LOOM_ERR_INVALID_ARG, "idx_dataset_load: out is NULL");
    *out = NULL;
    if (!images_path || !labels_path)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "idx_dataset_load: %s path is NULL",
                               images_path ? "the labels" : "the images");
    loom_status st = check_num_classes("idx_dataset_load", num_classes);
    if (st) return st;

    int64_t idims[3], ldims[3];
    uint8_t *pixels = NULL, *labels = NULL;
    if ((st = read_idx(images_path, 3, idims, &pixels))) return st;
    if ((st = read_idx(labels_path, 1, ldims, &labels))) goto fail;
    if (idims[0] != ldims[0]) {
        st = loom__set_error(LOOM_ERR_FORMAT, "idx: %s holds %lld images but %s holds %lld labels", images_path,
                             (long long)idims[0], labels_path, (long long)ldims[0]);
        goto fail;
    }
    char what[600];
    snprintf(what, sizeof what, "idx: %s", labels_path);
    int classes = 0;
    if ((st = check_labels(what, labels, ldims[0], num_classes, &classes))) goto fail;

    loom_dataset *ds = malloc(sizeof *ds);
    if (!ds) {
        st = loom__set_error(LOOM_ERR_NOMEM, "idx_dataset_load: out of memory");
        goto fail;
    }
    *ds = (loom_dataset){.n = idims[0], .rows = idims[1], .cols = idims[2], .num_classes = classes,
                         .pixels = pixels, .labels = labels};
    *out = ds;
    return LOOM_OK;
fail:
    free(pixels);
    free(labels);
    return st;
}

/* The first of dir/name and dir/name.gz that exists, as a malloc'd path in
 * *found; LOOM_ERR_IO naming both if neither does. */
static loom_status find_file(const char *dir, const char *name, char **found)
{
    *found = NULL;
    size_t ld = strlen(dir);
    const char *sep = ld && dir[ld - 1] == '/' ? "" : "/";
    size_t size = ld + strlen(name) + 8;
    char *plain = malloc(size), *gz = malloc(size);
    if (!plain || !gz) {
        free(plain);
        free(gz);
        return loom__set_error(LOOM_ERR_NOMEM, "mnist_load: out of memory");
    }
    snprintf(plain, size, "%s%s%s", dir, sep, name);
    snprintf(gz, size, "%s%s%s.gz", dir, sep, name);
    struct stat st;
    /* The plain file first: it is what gunzip leaves, and reads faster. */
    if (stat(plain, &st) == 0) {
        *found = plain;
        free(gz);
        return LOOM_OK;
    }
    if (stat(gz, &st) == 0) {
        *found = gz;
        free(plain);
        return LOOM_OK;
    }
    loom_status s = loom__set_error(LOOM_ERR_IO, "mnist_load: neither %s nor %s exists", plain, gz);
    free(plain);
    free(gz);
    return s;
}

loom_status loom_mnist_load(const char *dir, bool train, loom_dataset **out)
{
    if (!out) return loom__set_error(LOOM_ERR_INVALID_ARG, "mnist_load: out is NULL");
    *out = NULL;
    if (!dir) return loom__set_error(LOOM_ERR_INVALID_ARG, "mnist_load: dir is NULL");
    char *images = NULL, *labels = NULL;
    loom_status st = find_file(dir, train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte", &images);
    if (!st) st = find_file(dir, train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte", &labels);
    if (!st) st = loom_idx_dataset_load(images, labels, 10, out);
    free(images);
    free(labels);
    return st;
}

loom_status loom_dataset_from_arrays(int64_t n, int64_t rows, int64_t cols, const uint8_t *pixels,
                                     const uint8_t *labels, int num_classes, loom_dataset **out)
{
    if (!out) return loom__set_error(LOOM_ERR_INVALID_ARG, "dataset_from_arrays: out is NULL");
    *out = NULL;
    if (!pixels || !labels)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "dataset_from_arrays: %s is NULL", pixels ? "labels" : "pixels");
    if (n < 1 || rows < 1 || cols < 1)
        return loom__set_error(LOOM_ERR_INVALID_ARG,
                               "dataset_from_arrays: n, rows and cols must be >= 1, not %lld, %lld, %lld",
                               (long long)n, (long long)rows, (long long)cols);
    if (rows > INT64_MAX / cols || rows * cols > INT64_MAX / n || (uint64_t)(n * rows * cols) > SIZE_MAX)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "dataset_from_arrays: %lld x %lld x %lld pixels overflow",
                               (long long)n, (long long)rows, (long long)cols);
    loom_status st = check_num_classes("dataset_from_arrays", num_classes);
    if (st) return st;
    int classes = 0;
    if ((st = check_labels("dataset_from_arrays", labels, n, num_classes, &classes))) return st;

    size_t npix = (size_t)(n * rows * cols);
    loom_dataset *ds = malloc(sizeof *ds);
    uint8_t *p = malloc(npix), *l = malloc((size_t)n);
    if (!ds || !p || !l) {
        free(ds);
        free(p);
        free(l);
        return loom__set_error(LOOM_ERR_NOMEM, "dataset_from_arrays: out of memory");
    }
    memcpy(p, pixels, npix);
    memcpy(l, labels, (size_t)n);
    *ds = (loom_dataset){.n = n, .rows = rows, .cols = cols, .num_classes = classes, .pixels = p, .labels = l};
    *out = ds;
    return LOOM_OK;
}

void loom_dataset_free(loom_dataset *ds)
{
    if (!ds) return;
    free(ds->pixels);
    free(ds->labels);
    free(ds);
}

int64_t loom_dataset_size(const loom_dataset *ds) { return ds ? ds->n : 0; }
int64_t loom_dataset_rows(const loom_dataset *ds) { return ds ? ds->rows : 0; }
int64_t loom_dataset_cols(const loom_dataset *ds) { return ds ? ds->cols : 0; }
int loom_dataset_num_classes(const loom_dataset *ds) { return ds ? ds->num_classes : 0; }
const uint8_t *loom_dataset_pixels(const loom_dataset *ds) { return ds ? ds->pixels : NULL; }
const uint8_t *loom_dataset_labels(const loom_dataset *ds) { return ds ? ds->labels : NULL; }
