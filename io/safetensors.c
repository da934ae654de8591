/*
 * io/safetensors.c - reading and writing safetensors files (loom/io.h).
 *
 * The format (huggingface/safetensors): 8 bytes N (little-endian uint64),
 * N bytes of JSON
 *     {"__metadata__": {"k": "v", ...},
 *      "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 * then the byte buffer; each tensor's data is buffer[begin, end), row-major,
 * little-endian. The tensors' ranges must cover the buffer exactly: sorted
 * by offset they start at 0, follow each other without holes or overlaps,
 * and the last ends at the end of the file.
 *
 * Reading. Everything in a file is untrusted. The reader takes the file's
 * size from fstat() and checks, before it allocates or reads anything
 * sized by the file: that N is at most 100 MB (the safetensors library's
 * limit) and fits in the file; that the header is JSON of the expected
 * shape (exactly the keys dtype, shape, data_offsets; known dtypes;
 * non-negative integer dims and offsets); that every shape's byte size
 * neither overflows nor disagrees with its offsets; that the offsets stay
 * within the data and cover it exactly. Only then is tensor data read, with
 * pread() at checked offsets (a file that shrinks meanwhile gives
 * "truncated", not a crash: the file is not mmap'd, so SIGBUS cannot
 * happen).
 *
 * Writing mirrors the safetensors library (Rust, used by safetensors.torch)
 * byte for byte: tensors sorted by dtype, largest alignment first (I64,
 * F32, BOOL: the library's Dtype order, descending), then by name; compact
 * JSON with "__metadata__" first; serde_json's string escaping; the header
 * padded with spaces to a multiple of 8 so that every tensor's data is
 * aligned to its element size. The file is written as path.tmp.XXXXXX,
 * fsync'd, renamed over path, and the directory fsync'd: readers see the
 * old file or the new one, never a half-written one, even after a crash.
 *
 * Loading into a module checks every tensor (names, shapes, dtypes) and
 * reads every value into temporaries before the first loom_tensor_assign,
 * so that a bad file leaves the module as it was.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io_impl.h"
#include "loom/loom.h"
#include "runtime/error.h"

/* The safetensors library refuses larger headers (MAX_HEADER_SIZE). */
#define ST_MAX_HEADER ((uint64_t)100000000)

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define ST_BIG_ENDIAN 1
#else
#define ST_BIG_ENDIAN 0
#endif

/* ---- dtypes --------------------------------------------------------------- */

/* Every dtype of the format, with its size in bits (F4 and F6 pack
 * elements below a byte) and the Loom dtype, or -1 where Loom has none. */
typedef struct st_dtype {
    const char *name;
    int bits;
    int loom;
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"BOOL", 8, LOOM_BOOL},   {"U8", 8, -1},      {"I8", 8, -1},       {"F8_E5M2", 8, -1}, {"F8_E4M3", 8, -1},
    {"F8_E8M0", 8, -1},       {"I16", 16, -1},    {"U16", 16, -1},     {"F16", 16, -1},    {"BF16", 16, -1},
    {"I32", 32, -1},          {"U32", 32, -1},    {"F32", 32, LOOM_FLOAT32}, {"F64", 64, -1}, {"I64", 64, LOOM_INT64},
    {"U64", 64, -1},          {"C64", 64, -1},    {"F4", 4, -1},       {"F6_E2M3", 6, -1}, {"F6_E3M2", 6, -1},
};
#define ST_NDTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

/* The format's name of a Loom dtype. */
static const char *st_name_of(loom_dtype dt)
{
    switch (dt) {
    case LOOM_FLOAT32: return "F32";
    case LOOM_INT64: return "I64";
    case LOOM_BOOL: return "BOOL";
    default: return "?";
    }
}

/* The writer's order: the safetensors library sorts by its Dtype enum,
 * descending (..., I64 > F32 > ... > BOOL). */
static int st_write_rank(loom_dtype dt)
{
    switch (dt) {
    case LOOM_INT64: return 0;
    case LOOM_FLOAT32: return 1;
    default: return 2;
    }
}

/* ---- errors --------------------------------------------------------------- */

/* Sets "safetensors: <path>: <formatted>" and returns st. */
static loom_status st_err(const char *path, loom_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static loom_status st_err(const char *path, loom_status st, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return loom__set_error(st, "safetensors: %s: %s", path, msg);
}

/* Formats a shape as "[2, 3]" (dims[0..ndim-1]) into buf[size]. */
static char *fmt_dims(char *buf, size_t size, int ndim, const int64_t *dims)
{
    return loom__fmt_shape(buf, size, ndim, dims);
}

/* ---- the parsed header ---------------------------------------------------- */

typedef struct st_entry {
    const char *name; /* the header's key (owned by the JSON tree), no NULs */
    const st_dtype *dtype;
    int ndim;                     /* the file's; may exceed LOOM_MAX_DIMS */
    int64_t shape[LOOM_MAX_DIMS]; /* the first dims */
    const loom__json *shape_json; /* all of them */
    uint64_t begin, end;          /* the range in the data buffer */
} st_entry;

typedef struct st_file {
    const char *path;
    int fd;
    uint64_t data_start; /* 8 + N: where the buffer starts in the file */
    uint64_t data_len;   /* the buffer's size */
    loom__json header;
    int n;
    st_entry *entries; /* in header order */
    int *by_name;      /* entry indices sorted by name */
} st_file;

static void st_close(st_file *f)
{
    if (f->fd >= 0) close(f->fd);
    loom__json_free(&f->header);
    free(f->entries);
    free(f->by_name);
    f->fd = -1;
    f->entries = NULL;
    f->by_name = NULL;
}

/* Reads exactly n bytes at offset off. 0: done; 1: the file ended first;
 * -1: an I/O error (errno). */
static int read_at(int fd, void *buf, size_t n, uint64_t off)
{
    char *p = buf;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? (size_t)1 << 30 : n;
        ssize_t r = pread(fd, p, chunk, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) return 1;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* A shape from the header formatted for messages: "[2, 3]". */
static char *fmt_json_shape(char *buf, size_t size, const loom__json *shape)
{
    size_t k = 0;
    buf[0] = '\0';
    k += (size_t)snprintf(buf + k, size - k, "[");
    for (size_t i = 0; i < shape->n && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%llu", i ? ", " : "", (unsigned long long)shape->items[i].uint);
    if (k < size) snprintf(buf + k, size - k, "]");
    return buf;
}

/* qsort has no user pointer in C11; each file is sorted on one thread, so
 * the entries reach the comparators through a thread-local. */
static _Thread_local const st_entry *sort_entries;

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(sort_entries[*(const int *)a].name, sort_entries[*(const int *)b].name);
}

static int cmp_by_offset(const void *a, const void *b)
{
    const st_entry *x = &sort_entries[*(const int *)a], *y = &sort_entries[*(const int *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Checks the "__metadata__" value: an object whose values are strings. */
static loom_status check_metadata(const st_file *f, const loom__json *v)
{
    if (v->kind != LOOM__JSON_OBJECT)
        return st_err(f->path, LOOM_ERR_FORMAT, "\"__metadata__\" is not a JSON object");
    for (size_t i = 0; i < v->n; i++)
        if (v->members[i].value.kind != LOOM__JSON_STRING)
            return st_err(f->path, LOOM_ERR_FORMAT, "\"__metadata__\" value of \"%s\" is not a string",
                          v->members[i].key);
    return LOOM_OK;
}

/* Fills e from the header's description of tensor `name`. */
static loom_status parse_entry(const st_file *f, const char *name, const loom__json *v, st_entry *e)
{
    const char *p = f->path;
    if (v->kind != LOOM__JSON_OBJECT) return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\" is not a JSON object", name);
    const loom__json *dtype = NULL, *shape = NULL, *offs = NULL;
    for (size_t i = 0; i < v->n; i++) {
        const loom__json_member *m = &v->members[i];
        const loom__json **slot = !strcmp(m->key, "dtype")          ? &dtype
                                  : !strcmp(m->key, "shape")        ? &shape
                                  : !strcmp(m->key, "data_offsets") ? &offs
                                                                    : NULL;
        if (!slot || strlen(m->key) != m->key_len)
            return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\" has an unexpected key \"%s\"", name, m->key);
        if (*slot) return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\" has \"%s\" twice", name, m->key);
        *slot = &m->value;
    }
    const char *missing = !dtype ? "dtype" : !shape ? "shape" : !offs ? "data_offsets" : NULL;
    if (missing) return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\" lacks \"%s\"", name, missing);

    if (dtype->kind != LOOM__JSON_STRING) return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\": dtype is not a string", name);
    e->dtype = NULL;
    for (int i = 0; i < ST_NDTYPES; i++)
        if (!strcmp(dtype->str, st_dtypes[i].name) && strlen(dtype->str) == dtype->len) e->dtype = &st_dtypes[i];
    if (!e->dtype) return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\" has an unknown dtype \"%s\"", name, dtype->str);

    if (shape->kind != LOOM__JSON_ARRAY)
        return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\": shape is not a list of integers", name);
    if (shape->n > INT_MAX) return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\" has too many dims", name);
    for (size_t i = 0; i < shape->n; i++) {
        const loom__json *d = &shape->items[i];
        if (d->kind != LOOM__JSON_NUMBER || !d->is_uint || d->uint > (uint64_t)INT64_MAX)
            return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\": shape is not a list of non-negative integers", name);
        if (i < LOOM_MAX_DIMS) e->shape[i] = (int64_t)d->uint;
    }
    e->ndim = (int)shape->n;
    e->shape_json = shape;

    if (offs->kind != LOOM__JSON_ARRAY || offs->n != 2 || offs->items[0].kind != LOOM__JSON_NUMBER ||
        !offs->items[0].is_uint || offs->items[1].kind != LOOM__JSON_NUMBER || !offs->items[1].is_uint)
        return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\": data_offsets is not a pair of non-negative integers", name);
    e->begin = offs->items[0].uint;
    e->end = offs->items[1].uint;
    e->name = name;
    return LOOM_OK;
}

/* Checks one entry's offsets and size against the data buffer. */
static loom_status check_entry_size(const st_file *f, const st_entry *e)
{
    const char *p = f->path;
    char s[LOOM__SHAPE_STR_MAX];
    if (e->end < e->begin)
        return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\": data_offsets [%llu, %llu] end before they begin", e->name,
                      (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > f->data_len)
        return st_err(p, LOOM_ERR_FORMAT,
                      "tensor \"%s\": data_offsets [%llu, %llu] go past the %llu bytes of data (truncated file?)",
                      e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                      (unsigned long long)f->data_len);
    /* numel * bits, checked at each step (the order of the dims decides
     * whether an overflow is seen, as in the safetensors library). */
    uint64_t numel = 1;
    for (size_t i = 0; i < e->shape_json->n; i++) {
        uint64_t d = e->shape_json->items[i].uint;
        if (d != 0 && numel > UINT64_MAX / d)
            return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\": the size of shape %s overflows", e->name,
                          fmt_json_shape(s, sizeof s, e->shape_json));
        numel *= d;
    }
    uint64_t bits = (uint64_t)e->dtype->bits;
    if (numel > UINT64_MAX / bits)
        return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\": the size of shape %s overflows", e->name,
                      fmt_json_shape(s, sizeof s, e->shape_json));
    if (numel * bits % 8 != 0)
        return st_err(p, LOOM_ERR_FORMAT, "tensor \"%s\": shape %s of %s is not a whole number of bytes", e->name,
                      fmt_json_shape(s, sizeof s, e->shape_json), e->dtype->name);
    uint64_t nbytes = numel * bits / 8;
    if (nbytes != e->end - e->begin)
        return st_err(p, LOOM_ERR_FORMAT,
                      "tensor \"%s\": shape %s of %s takes %llu bytes but data_offsets [%llu, %llu] hold %llu", e->name,
                      fmt_json_shape(s, sizeof s, e->shape_json), e->dtype->name, (unsigned long long)nbytes,
                      (unsigned long long)e->begin, (unsigned long long)e->end,
                      (unsigned long long)(e->end - e->begin));
    return LOOM_OK;
}

/* Checks that the entries' ranges tile [0, data_len) exactly. */
static loom_status check_coverage(const st_file *f)
{
    int *order = malloc(sizeof *order * (size_t)(f->n ? f->n : 1));
    if (!order) return st_err(f->path, LOOM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < f->n; i++) order[i] = i;
    sort_entries = f->entries;
    qsort(order, (size_t)f->n, sizeof *order, cmp_by_offset);
    uint64_t at = 0;
    loom_status st = LOOM_OK;
    for (int k = 0; k < f->n && st == LOOM_OK; k++) {
        const st_entry *e = &f->entries[order[k]];
        if (e->begin > at)
            st = st_err(f->path, LOOM_ERR_FORMAT,
                        "bytes [%llu, %llu) of the data belong to no tensor (the tensors must cover it without holes)",
                        (unsigned long long)at, (unsigned long long)e->begin);
        else if (e->begin < at)
            st = st_err(f->path, LOOM_ERR_FORMAT, "tensor \"%s\" (data_offsets [%llu, %llu]) overlaps tensor \"%s\"",
                        e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                        f->entries[order[k - 1]].name);
        at = e->end;
    }
    if (st == LOOM_OK && at != f->data_len)
        st = st_err(f->path, LOOM_ERR_FORMAT,
                    "the tensors cover %llu of the %llu bytes of data; the last %llu belong to no tensor",
                    (unsigned long long)at, (unsigned long long)f->data_len, (unsigned long long)(f->data_len - at));
    free(order);
    return st;
}

/* Opens `path` and reads and checks its header (see the top of the file).
 * On failure f holds nothing to close. */
static loom_status st_open(st_file *f, const char *path)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) return st_err(path, LOOM_ERR_IO, "cannot open: %s", strerror(errno));
    loom_status st = LOOM_OK;
    char *text = NULL, *what = NULL;
    struct stat sb;
    if (fstat(f->fd, &sb) != 0) {
        st = st_err(path, LOOM_ERR_IO, "cannot stat: %s", strerror(errno));
        goto out;
    }
    if (S_ISDIR(sb.st_mode)) {
        st = st_err(path, LOOM_ERR_IO, "is a directory, not a safetensors file");
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = st_err(path, LOOM_ERR_IO, "not a regular file");
        goto out;
    }
    uint64_t size = (uint64_t)sb.st_size;
    unsigned char len8[8];
    if (size < 8) {
        st = st_err(path, LOOM_ERR_FORMAT, "the file has %llu bytes, too few for the 8-byte header length (truncated?)",
                    (unsigned long long)size);
        goto out;
    }
    int r = read_at(f->fd, len8, 8, 0);
    if (r != 0) {
        st = r > 0 ? st_err(path, LOOM_ERR_FORMAT, "truncated while reading the header length")
                   : st_err(path, LOOM_ERR_IO, "read failed: %s", strerror(errno));
        goto out;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | len8[i];
    if (n > ST_MAX_HEADER) {
        st = st_err(path, LOOM_ERR_FORMAT, "header length %llu is over the 100 MB limit (not a safetensors file?)",
                    (unsigned long long)n);
        goto out;
    }
    if (n > size - 8) {
        st = st_err(path, LOOM_ERR_FORMAT, "header length %llu exceeds the %llu bytes that follow it (truncated?)",
                    (unsigned long long)n, (unsigned long long)(size - 8));
        goto out;
    }
    f->data_start = 8 + n;
    f->data_len = size - 8 - n;
    text = malloc(n ? n : 1);
    what = malloc(strlen(path) + 32);
    if (!text || !what) {
        st = st_err(path, LOOM_ERR_NOMEM, "out of memory reading a header of %llu bytes", (unsigned long long)n);
        goto out;
    }
    r = read_at(f->fd, text, n, 8);
    if (r != 0) {
        st = r > 0 ? st_err(path, LOOM_ERR_FORMAT, "truncated while reading the header")
                   : st_err(path, LOOM_ERR_IO, "read failed: %s", strerror(errno));
        goto out;
    }
    sprintf(what, "safetensors: %s: header", path);
    st = loom__json_parse(text, n, what, &f->header);
    if (st != LOOM_OK) goto out;
    const loom__json *h = &f->header;
    if (h->kind != LOOM__JSON_OBJECT) {
        st = st_err(path, LOOM_ERR_FORMAT, "the header is not a JSON object");
        goto out;
    }
    f->entries = malloc(sizeof *f->entries * (h->n ? h->n : 1));
    f->by_name = malloc(sizeof *f->by_name * (h->n ? h->n : 1));
    if (!f->entries || !f->by_name) {
        st = st_err(path, LOOM_ERR_NOMEM, "out of memory");
        goto out;
    }
    bool seen_metadata = false;
    for (size_t i = 0; i < h->n && st == LOOM_OK; i++) {
        const loom__json_member *m = &h->members[i];
        if (strlen(m->key) != m->key_len) {
            st = st_err(path, LOOM_ERR_FORMAT, "a tensor name contains a NUL character");
        } else if (!strcmp(m->key, "__metadata__")) {
            st = seen_metadata ? st_err(path, LOOM_ERR_FORMAT, "\"__metadata__\" appears twice")
                               : check_metadata(f, &m->value);
            seen_metadata = true;
        } else {
            st = parse_entry(f, m->key, &m->value, &f->entries[f->n]);
            if (st == LOOM_OK) f->n++;
        }
    }
    if (st != LOOM_OK) goto out;
    /* Duplicate names: the JSON spec leaves them undefined; refuse them. */
    for (int i = 0; i < f->n; i++) f->by_name[i] = i;
    sort_entries = f->entries;
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_by_name);
    for (int i = 1; i < f->n && st == LOOM_OK; i++)
        if (!strcmp(f->entries[f->by_name[i]].name, f->entries[f->by_name[i - 1]].name))
            st = st_err(path, LOOM_ERR_FORMAT, "tensor \"%s\" appears twice in the header",
                        f->entries[f->by_name[i]].name);
    for (int i = 0; i < f->n && st == LOOM_OK; i++) st = check_entry_size(f, &f->entries[i]);
    if (st == LOOM_OK) st = check_coverage(f);
out:
    free(text);
    free(what);
    if (st != LOOM_OK) st_close(f);
    return st;
}

/* The entry called `name`, or NULL. */
static const st_entry *st_find(const st_file *f, const char *name)
{
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->entries[f->by_name[mid]].name);
        if (c == 0) return &f->entries[f->by_name[mid]];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

/* Checks that Loom can hold e: a Loom dtype, at most LOOM_MAX_DIMS dims. */
static loom_status st_supported(const st_file *f, const st_entry *e)
{
    if (e->dtype->loom < 0)
        return st_err(f->path, LOOM_ERR_DTYPE, "tensor \"%s\" has dtype %s, which Loom does not support (F32, I64, BOOL)",
                      e->name, e->dtype->name);
    if (e->ndim > LOOM_MAX_DIMS) {
        char s[LOOM__SHAPE_STR_MAX];
        return st_err(f->path, LOOM_ERR_SHAPE, "tensor \"%s\" has %d dims (shape %s); Loom tensors have at most %d",
                      e->name, e->ndim, fmt_json_shape(s, sizeof s, e->shape_json), LOOM_MAX_DIMS);
    }
    return LOOM_OK;
}

/* A reusable read buffer. */
typedef struct scratch {
    void *p;
    size_t cap;
} scratch;

static void *scratch_get(scratch *s, size_t n)
{
    if (n == 0) n = 1;
    if (n <= s->cap) return s->p;
    void *g = realloc(s->p, n);
    if (!g) return NULL;
    s->p = g;
    s->cap = n;
    return g;
}

static void swap_bytes(void *buf, size_t n, int es)
{
    unsigned char *b = buf;
    for (size_t i = 0; i + (size_t)es <= n; i += (size_t)es)
        for (int j = 0; j < es / 2; j++) {
            unsigned char t = b[i + (size_t)j];
            b[i + (size_t)j] = b[i + (size_t)(es - 1 - j)];
            b[i + (size_t)(es - 1 - j)] = t;
        }
}

/* Reads e's values into a new tensor of ctx (owned by its current scope),
 * or returns NULL with the error set. e must be st_supported. */
static loom_tensor *st_read_tensor(const st_file *f, const st_entry *e, loom_ctx *ctx, scratch *s)
{
    uint64_t nbytes = e->end - e->begin;
    if (nbytes > SIZE_MAX) {
        st_err(f->path, LOOM_ERR_NOMEM, "tensor \"%s\" is too large for this machine", e->name);
        return NULL;
    }
    void *buf = scratch_get(s, (size_t)nbytes);
    if (!buf) {
        st_err(f->path, LOOM_ERR_NOMEM, "out of memory reading tensor \"%s\" (%llu bytes)", e->name,
               (unsigned long long)nbytes);
        return NULL;
    }
    int r = read_at(f->fd, buf, (size_t)nbytes, f->data_start + e->begin);
    if (r != 0) {
        if (r > 0) st_err(f->path, LOOM_ERR_FORMAT, "truncated while reading tensor \"%s\"", e->name);
        else st_err(f->path, LOOM_ERR_IO, "read failed: %s", strerror(errno));
        return NULL;
    }
    loom_dtype dt = (loom_dtype)e->dtype->loom;
    if (dt == LOOM_BOOL) {
        /* Loom's bools are 0 or 1, and its kernels rely on it. */
        const unsigned char *b = buf;
        for (uint64_t i = 0; i < nbytes; i++)
            if (b[i] > 1) {
                st_err(f->path, LOOM_ERR_FORMAT, "tensor \"%s\": BOOL element %llu is %u, not 0 or 1", e->name,
                       (unsigned long long)i, b[i]);
                return NULL;
            }
    }
    if (ST_BIG_ENDIAN) swap_bytes(buf, (size_t)nbytes, loom_dtype_size(dt));
    return loom_tensor_from_array(ctx, dt, buf, e->ndim, e->shape);
}

/* ---- reading: whole files ------------------------------------------------- */

void loom_safetensors_free_names(char **names, int n)
{
    if (!names) return;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

loom_status loom_load_safetensors(loom_ctx *ctx, const char *path, int *n_out, loom_tensor ***tensors_out,
                                  char ***names_out)
{
    if (!ctx || !path || !n_out || !tensors_out)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "safetensors: load: ctx, path, n_out and tensors_out must not be NULL");
    st_file f;
    loom_status st = st_open(&f, path);
    if (st != LOOM_OK) return st;
    for (int i = 0; i < f.n && st == LOOM_OK; i++) st = st_supported(&f, &f.entries[i]);
    loom_tensor **ts = NULL;
    char **names = NULL;
    int made = 0;
    if (st == LOOM_OK && f.n > 0) {
        ts = calloc((size_t)f.n, sizeof *ts);
        names = calloc((size_t)f.n, sizeof *names);
        if (!ts || !names) st = st_err(path, LOOM_ERR_NOMEM, "out of memory");
    }
    scratch s = {NULL, 0};
    for (; st == LOOM_OK && made < f.n; made++) {
        const st_entry *e = &f.entries[made];
        size_t len = strlen(e->name) + 1;
        names[made] = malloc(len);
        if (!names[made]) {
            st = st_err(path, LOOM_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(names[made], e->name, len);
        ts[made] = st_read_tensor(&f, e, ctx, &s);
        if (!ts[made]) {
            st = loom_last_status();
            if (st == LOOM_OK) st = st_err(path, LOOM_ERR_NOMEM, "out of memory");
            break;
        }
    }
    free(s.p);
    st_close(&f);
    if (st != LOOM_OK) {
        if (ts)
            for (int i = 0; i < f.n; i++) loom_tensor_free(ts[i]);
        free(ts);
        loom_safetensors_free_names(names, f.n);
        return st;
    }
    *n_out = f.n;
    *tensors_out = ts;
    if (names_out) *names_out = names;
    else loom_safetensors_free_names(names, f.n);
    return LOOM_OK;
}

/* ---- reading: into a module ----------------------------------------------- */

/* Checks the names, dtypes and shapes of m's state (ts/names[0..n-1])
 * against the file; match[i] gets the entry for ts[i] (or NULL). */
static loom_status match_state(const st_file *f, int n, loom_tensor **ts, const char **names, bool strict,
                               const st_entry **match)
{
    loom__name_list missing = {.len = 0}, unexpected = {.len = 0};
    int found = 0;
    for (int i = 0; i < n; i++) {
        match[i] = st_find(f, names[i]);
        if (match[i]) found++;
        else loom__name_list_add(&missing, names[i]);
    }
    if (strict && (missing.listed || found < f->n)) {
        for (int k = 0; k < f->n && found < f->n; k++) {
            const st_entry *e = &f->entries[k];
            bool used = false;
            for (int i = 0; i < n && !used; i++) used = match[i] == e;
            if (!used) loom__name_list_add(&unexpected, e->name);
        }
        loom__name_list_end(&missing);
        loom__name_list_end(&unexpected);
        char msg[480];
        snprintf(msg, sizeof msg, "%s%s%s%s%s%s", missing.listed ? "missing from the file: " : "",
                 missing.listed ? missing.buf : "", missing.listed && unexpected.listed ? "; " : "",
                 unexpected.listed ? "not in the module: " : "", unexpected.listed ? unexpected.buf : "",
                 " (strict load)");
        return st_err(f->path, LOOM_ERR_FORMAT, "%s", msg);
    }
    for (int i = 0; i < n; i++) {
        const st_entry *e = match[i];
        if (!e) continue;
        loom_dtype dt = loom_tensor_dtype(ts[i]);
        if (e->dtype->loom != (int)dt)
            return st_err(f->path, LOOM_ERR_DTYPE, "%s has dtype %s in the file but %s in the module", names[i],
                          e->dtype->name, st_name_of(dt));
        int64_t shape[LOOM_MAX_DIMS];
        int nd = loom_tensor_ndim(ts[i]);
        loom_tensor_shape(ts[i], shape);
        bool same = e->ndim == nd;
        for (int d = 0; same && d < nd; d++) same = e->shape[d] == shape[d];
        if (!same) {
            char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
            return st_err(f->path, LOOM_ERR_SHAPE, "%s has shape %s in the file but %s in the module", names[i],
                          fmt_json_shape(s1, sizeof s1, e->shape_json), fmt_dims(s2, sizeof s2, nd, shape));
        }
    }
    return LOOM_OK;
}

loom_status loom_module_load(loom_module *m, const char *path, bool strict)
{
    if (!m || !path) return loom__set_error(LOOM_ERR_INVALID_ARG, "safetensors: module_load: module and path must not be NULL");
    if (loom__is_zip(path)) return loom__module_load_pth(m, path, strict); /* a torch.save file */
    int n = loom_module_state(m, NULL, NULL, 0);
    if (n < 0) return loom_last_status();
    loom_tensor **ts = malloc(sizeof *ts * (size_t)(n ? n : 1));
    const char **names = malloc(sizeof *names * (size_t)(n ? n : 1));
    const st_entry **match = malloc(sizeof *match * (size_t)(n ? n : 1));
    loom_tensor **src = calloc((size_t)(n ? n : 1), sizeof *src);
    if (!ts || !names || !match || !src) {
        free(ts);
        free(names);
        free(match);
        free(src);
        return st_err(path, LOOM_ERR_NOMEM, "out of memory");
    }
    loom_status st = loom_module_state(m, ts, names, n) == n ? LOOM_OK : loom_last_status();
    st_file f = {.fd = -1};
    if (st == LOOM_OK) st = st_open(&f, path);
    if (st == LOOM_OK) st = match_state(&f, n, ts, names, strict, match);
    /* The module's side: computed leaves that loom_tensor_assign accepts. */
    for (int i = 0; i < n && st == LOOM_OK; i++) {
        if (!match[i]) continue;
        if (!loom_tensor_is_leaf(ts[i]))
            st = st_err(path, LOOM_ERR_STATE, "%s of the module is not a leaf tensor; cannot load into it", names[i]);
        else if (loom_tensor_eval(ts[i]) != LOOM_OK)
            st = loom_last_status();
    }
    loom_ctx *ctx = loom_module_ctx(m);
    bool scoped = false;
    if (st == LOOM_OK) {
        st = loom_scope_begin(ctx);
        scoped = st == LOOM_OK;
    }
    /* Read everything before writing anything. */
    scratch s = {NULL, 0};
    for (int i = 0; i < n && st == LOOM_OK; i++) {
        if (!match[i]) continue;
        src[i] = st_read_tensor(&f, match[i], ctx, &s);
        if (!src[i]) st = loom_last_status() != LOOM_OK ? loom_last_status() : LOOM_ERR_NOMEM;
    }
    free(s.p);
    for (int i = 0; i < n && st == LOOM_OK; i++) {
        if (!src[i]) continue;
        if (loom_tensor_assign(ts[i], src[i]) != LOOM_OK)
            st = st_err(path, loom_last_status(), "writing %s failed (%s); the tensors before it were loaded",
                        names[i], loom_last_error());
    }
    if (scoped) loom_scope_end(ctx);
    st_close(&f);
    free(ts);
    free(names);
    free(match);
    free(src);
    return st;
}

/* ---- writing -------------------------------------------------------------- */

typedef struct w_item {
    loom_tensor *t;
    const char *name;
    int rank; /* st_write_rank */
} w_item;

static int cmp_write_order(const void *a, const void *b)
{
    const w_item *x = a, *y = b;
    if (x->rank != y->rank) return x->rank - y->rank;
    return strcmp(x->name, y->name);
}

static int cmp_item_name(const void *a, const void *b)
{
    return strcmp(((const w_item *)a)->name, ((const w_item *)b)->name);
}

/* Appends the metadata object (checked: an object of strings) to the
 * header, re-serialised compactly. */
static loom_status put_metadata(const char *path, loom__buf *h, const char *json)
{
    loom__json v;
    loom_status st = loom__json_parse(json, strlen(json), "safetensors: metadata", &v);
    if (st != LOOM_OK) {
        if (st == LOOM_ERR_FORMAT)
            st = st_err(path, LOOM_ERR_INVALID_ARG, "the metadata is not valid JSON (%s)", loom_last_error());
        return st;
    }
    if (v.kind != LOOM__JSON_OBJECT) st = st_err(path, LOOM_ERR_INVALID_ARG, "the metadata is not a JSON object");
    for (size_t i = 0; i < v.n && st == LOOM_OK; i++) {
        if (v.members[i].value.kind != LOOM__JSON_STRING)
            st = st_err(path, LOOM_ERR_INVALID_ARG, "metadata value of \"%s\" is not a string (safetensors metadata "
                        "maps strings to strings)", v.members[i].key);
        for (size_t j = 0; j < i && st == LOOM_OK; j++)
            if (v.members[j].key_len == v.members[i].key_len &&
                !memcmp(v.members[j].key, v.members[i].key, v.members[i].key_len))
                st = st_err(path, LOOM_ERR_INVALID_ARG, "metadata key \"%s\" appears twice", v.members[i].key);
    }
    if (st == LOOM_OK) {
        loom__buf_puts(h, "\"__metadata__\":{");
        for (size_t i = 0; i < v.n; i++) {
            if (i) loom__buf_puts(h, ",");
            loom__buf_put_json_string(h, v.members[i].key, v.members[i].key_len);
            loom__buf_puts(h, ":");
            loom__buf_put_json_string(h, v.members[i].value.str, v.members[i].value.len);
        }
        loom__buf_puts(h, "}");
    }
    loom__json_free(&v);
    return st;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? (size_t)1 << 30 : n;
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The process's umask, without changing it (umask() would, for a moment,
 * for every thread): Linux reports it in /proc/self/status. */
static mode_t current_umask(void)
{
    mode_t mask = 022;
    FILE *s = fopen("/proc/self/status", "re");
    if (!s) return mask;
    char line[256];
    unsigned int m;
    while (fgets(line, sizeof line, s))
        if (sscanf(line, "Umask: %o", &m) == 1) {
            mask = (mode_t)m;
            break;
        }
    fclose(s);
    return mask;
}

/* Writes the header and the data to fd. */
static loom_status write_contents(const char *path, int fd, const loom__buf *h, int n, const w_item *items)
{
    unsigned char len8[8];
    uint64_t hl = h->len;
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i));
    int err = write_all(fd, len8, 8);
    if (!err) err = write_all(fd, h->data, h->len);
    scratch s = {NULL, 0};
    loom_status st = LOOM_OK;
    for (int i = 0; i < n && !err && st == LOOM_OK; i++) {
        loom_tensor *t = items[i].t;
        int es = loom_dtype_size(loom_tensor_dtype(t));
        size_t bytes = (size_t)loom_tensor_numel(t) * (size_t)es;
        if (bytes == 0) continue;
        const void *p;
        if (loom_tensor_is_contiguous(t) && !ST_BIG_ENDIAN) {
            p = loom_tensor_data(t);
            if (!p) st = loom_last_status();
        } else {
            void *buf = scratch_get(&s, bytes);
            if (!buf) st = st_err(path, LOOM_ERR_NOMEM, "out of memory copying %s", items[i].name);
            else st = loom_tensor_copy_to(t, buf, bytes);
            if (st == LOOM_OK && ST_BIG_ENDIAN) swap_bytes(buf, bytes, es);
            p = buf;
        }
        if (st == LOOM_OK) err = write_all(fd, p, bytes);
    }
    free(s.p);
    if (st != LOOM_OK) return st;
    if (err) return st_err(path, LOOM_ERR_IO, "write failed: %s", strerror(err));
    return LOOM_OK;
}

/* Writes the file through a temporary in the same directory (see the top
 * of the file). */
static loom_status write_atomically(const char *path, const loom__buf *h, int n, const w_item *items)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + sizeof ".tmp.XXXXXX");
    char *dir = malloc(plen + 2);
    if (!tmp || !dir) {
        free(tmp);
        free(dir);
        return st_err(path, LOOM_ERR_NOMEM, "out of memory");
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    const char *slash = strrchr(path, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == path) strcpy(dir, "/");
    else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }

    /* The new file keeps the mode of the one it replaces; a new one gets
     * the usual 0666 & ~umask (mkstemp creates it 0600). */
    struct stat sb;
    mode_t mode = stat(path, &sb) == 0 && S_ISREG(sb.st_mode) ? (sb.st_mode & 07777) : (0666 & ~current_umask());

    loom_status st = LOOM_OK;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        st = st_err(path, LOOM_ERR_IO, "cannot create a temporary file in %s: %s", dir, strerror(errno));
        goto out;
    }
    if (fchmod(fd, mode) != 0) st = st_err(path, LOOM_ERR_IO, "cannot set the mode of %s: %s", tmp, strerror(errno));
    if (st == LOOM_OK) st = write_contents(path, fd, h, n, items);
    if (st == LOOM_OK && fsync(fd) != 0) st = st_err(path, LOOM_ERR_IO, "fsync failed: %s", strerror(errno));
    if (close(fd) != 0 && st == LOOM_OK) st = st_err(path, LOOM_ERR_IO, "close failed: %s", strerror(errno));
    if (st == LOOM_OK && rename(tmp, path) != 0)
        st = st_err(path, LOOM_ERR_IO, "cannot rename %s to it: %s", tmp, strerror(errno));
    if (st != LOOM_OK) {
        unlink(tmp);
        goto out;
    }
    /* Make the rename itself durable. Some file systems cannot fsync a
     * directory (EINVAL); the file is in place either way. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL)
            st = st_err(path, LOOM_ERR_IO, "written, but syncing the directory %s failed: %s", dir, strerror(errno));
        close(dfd);
    }
out:
    free(tmp);
    free(dir);
    return st;
}

loom_status loom_save_safetensors(const char *path, int n, loom_tensor *const *tensors, const char *const *names,
                                  const char *metadata_json)
{
    if (!path || !*path || n < 0 || (n > 0 && (!tensors || !names)))
        return loom__set_error(LOOM_ERR_INVALID_ARG, "safetensors: save: path, tensors and names must be given and n >= 0");
    for (int i = 0; i < n; i++) {
        if (!tensors[i]) {
            if (loom_last_status() != LOOM_OK) return loom_last_status(); /* the call that made it failed */
            return st_err(path, LOOM_ERR_INVALID_ARG, "tensor %d is NULL", i);
        }
        if (!names[i]) return st_err(path, LOOM_ERR_INVALID_ARG, "name %d is NULL", i);
        if (!strcmp(names[i], "__metadata__"))
            return st_err(path, LOOM_ERR_INVALID_ARG, "\"__metadata__\" is reserved and cannot name a tensor");
    }
    w_item *items = malloc(sizeof *items * (size_t)(n ? n : 1));
    if (!items) return st_err(path, LOOM_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        items[i] = (w_item){tensors[i], names[i], st_write_rank(loom_tensor_dtype(tensors[i]))};
    loom_status st = LOOM_OK;
    qsort(items, (size_t)n, sizeof *items, cmp_item_name);
    for (int i = 1; i < n && st == LOOM_OK; i++)
        if (!strcmp(items[i].name, items[i - 1].name))
            st = st_err(path, LOOM_ERR_INVALID_ARG, "the name %s is given twice", items[i].name);
    /* Compute everything before a file exists. */
    for (int i = 0; i < n && st == LOOM_OK; i++) st = loom_tensor_eval(items[i].t);

    loom__buf h = {NULL, 0, 0, false};
    if (st == LOOM_OK) {
        qsort(items, (size_t)n, sizeof *items, cmp_write_order);
        loom__buf_puts(&h, "{");
        if (metadata_json) {
            st = put_metadata(path, &h, metadata_json);
            if (n > 0) loom__buf_puts(&h, ",");
        }
        uint64_t off = 0;
        for (int i = 0; i < n && st == LOOM_OK; i++) {
            loom_tensor *t = items[i].t;
            loom_dtype dt = loom_tensor_dtype(t);
            int nd = loom_tensor_ndim(t);
            int64_t shape[LOOM_MAX_DIMS];
            loom_tensor_shape(t, shape);
            uint64_t bytes = (uint64_t)loom_tensor_numel(t) * (uint64_t)loom_dtype_size(dt);
            if (i) loom__buf_puts(&h, ",");
            loom__buf_put_json_string(&h, items[i].name, strlen(items[i].name));
            loom__buf_puts(&h, ":{\"dtype\":\"");
            loom__buf_puts(&h, st_name_of(dt));
            loom__buf_puts(&h, "\",\"shape\":[");
            for (int d = 0; d < nd; d++) {
                if (d) loom__buf_puts(&h, ",");
                loom__buf_put_uint(&h, (uint64_t)shape[d]);
            }
            loom__buf_puts(&h, "],\"data_offsets\":[");
            loom__buf_put_uint(&h, off);
            loom__buf_puts(&h, ",");
            loom__buf_put_uint(&h, off + bytes);
            loom__buf_puts(&h, "]}");
            off += bytes;
        }
        loom__buf_puts(&h, "}");
        while (h.len % 8) loom__buf_puts(&h, " ");
        if (st == LOOM_OK && h.failed) st = st_err(path, LOOM_ERR_NOMEM, "out of memory building the header");
    }
    if (st == LOOM_OK) st = write_atomically(path, &h, n, items);
    loom__buf_free(&h);
    free(items);
    return st;
}

loom_status loom_module_save(loom_module *m, const char *path)
{
    if (!m || !path) return loom__set_error(LOOM_ERR_INVALID_ARG, "safetensors: module_save: module and path must not be NULL");
    int n = loom_module_state(m, NULL, NULL, 0);
    if (n < 0) return loom_last_status();
    loom_tensor **ts = malloc(sizeof *ts * (size_t)(n ? n : 1));
    const char **names = malloc(sizeof *names * (size_t)(n ? n : 1));
    loom_status st = LOOM_OK;
    if (!ts || !names) st = st_err(path, LOOM_ERR_NOMEM, "out of memory");
    if (st == LOOM_OK && loom_module_state(m, ts, names, n) != n) st = loom_last_status();
    if (st == LOOM_OK)
        st = loom_save_safetensors(path, n, (loom_tensor *const *)ts, (const char *const *)names, "{\"format\":\"pt\"}");
    free(ts);
    free(names);
    return st;
}
