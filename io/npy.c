/*
 * io/npy.c - NumPy's .npy files (format versions 1.0, 2.0 and 3.0), one
 * array each, for exchanging inputs and outputs with NumPy/PyTorch users.
 *
 * Layout: "\x93NUMPY", major, minor, the header's length (uint16 LE for
 * 1.0, uint32 LE for 2.0 and 3.0), the header: a Python dict literal
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and ending in '\n', then the raw data, row-major.
 * The reader accepts the three keys in any order and the dtypes Loom has
 * ('<f4', '<i8', '|b1'); everything else (Fortran order, other dtypes, a
 * size that disagrees with the file's) is refused with a message naming
 * it. The writer writes version 1.0 (2.0 when the header needs it), the
 * header padded to a multiple of 64 bytes as NumPy does, atomically (a
 * temporary file renamed over the path).
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io_impl.h"
#include "loom/loom.h"
#include "runtime/error.h"

static loom_status nerr(const char *path, loom_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static loom_status nerr(const char *path, loom_status st, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return loom__set_error(st, "npy: %s: %s", path, msg);
}

static const struct {
    const char *descr;
    loom_dtype dtype;
} DESCRS[] = {{"<f4", LOOM_FLOAT32}, {"<i8", LOOM_INT64}, {"|b1", LOOM_BOOL}};

/* Skips spaces. */
static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n')) p++;
    return p;
}

/* Parses a quoted key or string: 'text' or "text" into out (cap bytes). */
static const char *quoted(const char *p, const char *end, char *out, size_t cap)
{
    p = ws(p, end);
    if (p >= end || (*p != '\'' && *p != '"')) return NULL;
    char q = *p++;
    size_t n = 0;
    while (p < end && *p != q) {
        if (n + 1 >= cap) return NULL;
        out[n++] = *p++;
    }
    if (p >= end) return NULL;
    out[n] = '\0';
    return p + 1;
}

/* Parses the header dict. */
static loom_status parse_header(const char *path, const char *h, size_t len, loom_dtype *dtype, int *ndim,
                                int64_t *shape)
{
    const char *p = ws(h, h + len), *end = h + len;
    bool have_descr = false, have_order = false, have_shape = false;
    if (p >= end || *p++ != '{') return nerr(path, LOOM_ERR_FORMAT, "the header is not a dict");
    for (;;) {
        p = ws(p, end);
        if (p < end && *p == '}') break;
        char key[32];
        if (!(p = quoted(p, end, key, sizeof key))) return nerr(path, LOOM_ERR_FORMAT, "a header key is malformed");
        p = ws(p, end);
        if (p >= end || *p++ != ':') return nerr(path, LOOM_ERR_FORMAT, "the header lacks ':' after '%s'", key);
        p = ws(p, end);
        if (!strcmp(key, "descr")) {
            char d[32];
            if (!(p = quoted(p, end, d, sizeof d))) return nerr(path, LOOM_ERR_FORMAT, "descr is malformed");
            bool known = false;
            for (size_t i = 0; i < sizeof DESCRS / sizeof DESCRS[0]; i++)
                if (!strcmp(d, DESCRS[i].descr)) *dtype = DESCRS[i].dtype, known = true;
            if (!known)
                return nerr(path, LOOM_ERR_DTYPE, "dtype '%s' is not one Loom reads ('<f4' float32, '<i8' int64, "
                                                  "'|b1' bool)", d);
            have_descr = true;
        } else if (!strcmp(key, "fortran_order")) {
            if ((size_t)(end - p) >= 5 && !memcmp(p, "False", 5)) p += 5;
            else if ((size_t)(end - p) >= 4 && !memcmp(p, "True", 4))
                return nerr(path, LOOM_ERR_FORMAT, "the array is in Fortran order; save it C-contiguous "
                                                   "(numpy.ascontiguousarray)");
            else return nerr(path, LOOM_ERR_FORMAT, "fortran_order is malformed");
            have_order = true;
        } else if (!strcmp(key, "shape")) {
            if (p >= end || *p++ != '(') return nerr(path, LOOM_ERR_FORMAT, "shape is not a tuple");
            *ndim = 0;
            for (;;) {
                p = ws(p, end);
                if (p < end && *p == ')') {
                    p++;
                    break;
                }
                if (*ndim == LOOM_MAX_DIMS) return nerr(path, LOOM_ERR_SHAPE, "more than %d dims", LOOM_MAX_DIMS);
                char *e;
                errno = 0;
                long long v = p < end ? strtoll(p, &e, 10) : 0;
                if (p >= end || e == p || errno || v < 0 || e > end)
                    return nerr(path, LOOM_ERR_FORMAT, "shape holds something other than a non-negative integer");
                shape[(*ndim)++] = v;
                p = ws(e, end);
                if (p < end && *p == ',') p++;
            }
            have_shape = true;
        } else {
            return nerr(path, LOOM_ERR_FORMAT, "unknown header key '%s'", key);
        }
        p = ws(p, end);
        if (p < end && *p == ',') p++;
    }
    if (!have_descr || !have_order || !have_shape)
        return nerr(path, LOOM_ERR_FORMAT, "the header lacks %s", !have_descr ? "descr" : !have_order ? "fortran_order"
                                                                                                          : "shape");
    return LOOM_OK;
}

loom_tensor *loom_load_npy(loom_ctx *ctx, const char *path)
{
    if (!ctx || !path) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "npy: load: ctx and path must not be NULL");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        nerr(path, LOOM_ERR_IO, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat sb;
    unsigned char pre[12];
    char *header = NULL;
    void *data = NULL;
    loom_tensor *t = NULL;
    loom_status st = LOOM_OK;
    if (fstat(fileno(f), &sb) != 0) st = nerr(path, LOOM_ERR_IO, "cannot stat: %s", strerror(errno));
    else if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6))
        st = nerr(path, LOOM_ERR_FORMAT, "not a .npy file (no \\x93NUMPY magic)");
    size_t hlen = 0, pos = 10;
    if (st == LOOM_OK) {
        if (pre[6] == 1) {
            hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
        } else if (pre[6] == 2 || pre[6] == 3) {
            if (fread(pre + 10, 1, 2, f) != 2) st = nerr(path, LOOM_ERR_FORMAT, "truncated header");
            hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
            pos = 12;
        } else {
            st = nerr(path, LOOM_ERR_FORMAT, "format version %d.%d is unknown", pre[6], pre[7]);
        }
    }
    if (st == LOOM_OK && (hlen > 1u << 20 || (uint64_t)(pos + hlen) > (uint64_t)sb.st_size))
        st = nerr(path, LOOM_ERR_FORMAT, "the header length %zu does not fit the file", hlen);
    if (st == LOOM_OK && !(header = malloc(hlen + 1))) st = nerr(path, LOOM_ERR_NOMEM, "out of memory");
    if (st == LOOM_OK && fread(header, 1, hlen, f) != hlen) st = nerr(path, LOOM_ERR_FORMAT, "truncated header");
    loom_dtype dtype = LOOM_FLOAT32;
    int ndim = 0;
    int64_t shape[LOOM_MAX_DIMS];
    if (st == LOOM_OK) st = parse_header(path, header, hlen, &dtype, &ndim, shape);
    int64_t n = 1;
    for (int d = 0; st == LOOM_OK && d < ndim; d++) {
        if (shape[d] > 0 && n > (INT64_C(1) << 40) / shape[d]) st = nerr(path, LOOM_ERR_FORMAT, "the shape is too large");
        n *= shape[d];
    }
    const uint64_t bytes = (uint64_t)n * (uint64_t)loom_dtype_size(dtype);
    if (st == LOOM_OK && (uint64_t)sb.st_size - (pos + hlen) != bytes) {
        char s[LOOM__SHAPE_STR_MAX];
        st = nerr(path, LOOM_ERR_FORMAT, "the data is %llu bytes, but shape %s needs %llu",
                  (unsigned long long)((uint64_t)sb.st_size - (pos + hlen)), loom__fmt_shape(s, sizeof s, ndim, shape),
                  (unsigned long long)bytes);
    }
    if (st == LOOM_OK && !(data = malloc(bytes ? (size_t)bytes : 1))) st = nerr(path, LOOM_ERR_NOMEM, "out of memory");
    if (st == LOOM_OK && fread(data, 1, (size_t)bytes, f) != bytes) st = nerr(path, LOOM_ERR_IO, "short read");
    if (st == LOOM_OK) t = loom_tensor_from_array(ctx, dtype, data, ndim, shape);
    free(header);
    free(data);
    fclose(f);
    return t;
}

loom_status loom_save_npy(loom_tensor *t, const char *path)
{
    if (!t || !path) return loom__set_error(LOOM_ERR_INVALID_ARG, "npy: save: tensor and path must not be NULL");
    const char *descr = NULL;
    for (size_t i = 0; i < sizeof DESCRS / sizeof DESCRS[0]; i++)
        if (DESCRS[i].dtype == loom_tensor_dtype(t)) descr = DESCRS[i].descr;
    if (!descr) return nerr(path, LOOM_ERR_DTYPE, "no .npy dtype for %s", loom_dtype_name(loom_tensor_dtype(t)));
    int64_t shape[LOOM_MAX_DIMS];
    const int nd = loom_tensor_ndim(t);
    loom_tensor_shape(t, shape);
    char dict[512];
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int d = 0; d < nd; d++)
        len += snprintf(dict + len, sizeof dict - (size_t)len, "%s%lld", d ? ", " : "", (long long)shape[d]);
    /* Python's tuples: (), (4,), (2, 3) */
    len += snprintf(dict + len, sizeof dict - (size_t)len, "%s), }", nd == 1 ? "," : "");
    /* Pad: magic (6) + version (2) + length (2) + header, to 64 bytes. */
    const size_t total = ((size_t)10 + (size_t)len + 1 + 63) / 64 * 64;
    const size_t hlen = total - 10;
    const size_t nbytes = (size_t)loom_tensor_numel(t) * (size_t)loom_dtype_size(loom_tensor_dtype(t));
    unsigned char *buf = malloc(total + (nbytes ? nbytes : 1));
    if (!buf) return nerr(path, LOOM_ERR_NOMEM, "out of memory");
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(hlen & 0xff);
    buf[9] = (unsigned char)(hlen >> 8);
    memset(buf + 10, ' ', hlen);
    memcpy(buf + 10, dict, (size_t)len);
    buf[total - 1] = '\n';
    loom_status st = loom_tensor_copy_to(t, buf + total, nbytes);
    if (st == LOOM_OK) st = loom__write_file_atomic(path, buf, total + nbytes, "npy");
    free(buf);
    return st;
}
