/*
 * graph/print.c - tensor formatting that matches PyTorch 1.13's repr().
 *
 * This is a transcription of torch/_tensor_str.py (PyTorch 1.13) restricted
 * to what Loom has: strided CPU tensors of float32, int64 and bool, with no
 * grad_fn/requires_grad suffixes and the default print options. The names
 * below follow the Python functions so that the two can be compared line by
 * line: _Formatter -> formatter_init/format_value, _vector_str -> emit_vector,
 * _tensor_str_with_formatter -> emit_tensor, _add_suffixes -> add_suffixes.
 *
 * Python formats each element with str.format on the element's value as a
 * Python float (a double holding the float32 value exactly) or int. glibc's
 * printf rounds %.Nf / %.Ne exactly like Python's correctly rounded
 * formatting (round-half-even on the exact binary value) and also writes
 * two-digit exponents, so snprintf reproduces it; only nan/inf need special
 * handling because C prints "-nan" for a nan with its sign bit set while
 * Python always prints "nan".
 */
#include "graph/print.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PyTorch's default PRINT_OPTS. */
#define PRECISION 4
#define THRESHOLD 1000
#define EDGEITEMS 3
#define LINEWIDTH 80

/* len("tensor("): the indent of every line after the first. */
#define PREFIX "tensor("
#define PREFIX_LEN 7

/* Large enough for any one formatted element: the longest is a float32 near
 * FLT_MAX under %.4f (39 digits, sign, point, 4 decimals), or an int64. */
#define ELEM_BUF 64

/* ------------------------------------------------------------------------ */
/* Growable output string. After any allocation failure `failed` is set and
 * further appends are ignored, so callers check once at the end. */

typedef struct sbuf {
    char *buf;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_reserve(sbuf *s, size_t extra)
{
    if (s->failed) return;
    if (extra > SIZE_MAX - s->len - 1) {
        s->failed = 1;
        return;
    }
    size_t need = s->len + extra + 1; /* + NUL */
    if (need <= s->cap) return;
    size_t cap = s->cap ? s->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(s->buf, cap);
    if (!p) {
        s->failed = 1;
        return;
    }
    s->buf = p;
    s->cap = cap;
}

static void sb_putn(sbuf *s, const char *str, size_t n)
{
    sb_reserve(s, n);
    if (s->failed) return;
    memcpy(s->buf + s->len, str, n);
    s->len += n;
    s->buf[s->len] = '\0';
}

static void sb_puts(sbuf *s, const char *str) { sb_putn(s, str, strlen(str)); }

static void sb_repeat(sbuf *s, char c, size_t n)
{
    sb_reserve(s, n);
    if (s->failed) return;
    memset(s->buf + s->len, c, n);
    s->len += n;
    s->buf[s->len] = '\0';
}

/* ------------------------------------------------------------------------ */
/* The tensor being printed. */

typedef struct printer {
    loom_dtype dtype;
    const void *data;
    int ndim;
    const int64_t *shape;
    int64_t strides[LOOM_MAX_DIMS]; /* contiguous row-major, in elements */
    int summarize;                  /* numel > THRESHOLD */
    /* _Formatter state. */
    int int_mode, sci_mode;
    int max_width;
    sbuf out;
} printer;

static double float_at(const printer *p, int64_t i) { return (double)((const float *)p->data)[i]; }

/* Visits, in order, exactly the elements PyTorch looks at: all of them, or
 * when summarizing the first and last EDGEITEMS along every dim longer than
 * 2 * EDGEITEMS. That is both the set get_summarized_data() hands to the
 * _Formatter and the set the printing recursion shows, so one walker serves
 * both. */
typedef void (*elem_fn)(printer *p, int64_t index, void *ctx);

static void visit(printer *p, int level, int64_t offset, elem_fn fn, void *ctx)
{
    if (level == p->ndim) {
        fn(p, offset, ctx);
        return;
    }
    int64_t n = p->shape[level], st = p->strides[level];
    if (p->summarize && n > 2 * EDGEITEMS) {
        for (int64_t i = 0; i < EDGEITEMS; i++) visit(p, level + 1, offset + i * st, fn, ctx);
        for (int64_t i = n - EDGEITEMS; i < n; i++) visit(p, level + 1, offset + i * st, fn, ctx);
    } else {
        for (int64_t i = 0; i < n; i++) visit(p, level + 1, offset + i * st, fn, ctx);
    }
}

/* ------------------------------------------------------------------------ */
/* _Formatter */

/* Writes a float the way Python's '{:.Nf}' / '{:.Ne}' does (no padding). */
static int fmt_float(char *buf, double v, int sci, int int_mode)
{
    if (isnan(v)) return snprintf(buf, ELEM_BUF, "nan");
    if (isinf(v)) return snprintf(buf, ELEM_BUF, v < 0 ? "-inf" : "inf");
    if (sci) return snprintf(buf, ELEM_BUF, "%.*e", PRECISION, v);
    if (int_mode) return snprintf(buf, ELEM_BUF, "%.0f", v);
    return snprintf(buf, ELEM_BUF, "%.*f", PRECISION, v);
}

typedef struct float_stats {
    int64_t count; /* nonzero finite values */
    double min_abs, max_abs;
    int all_integral;
} float_stats;

static void float_stats_add(printer *p, int64_t i, void *ctx)
{
    float_stats *fs = ctx;
    float f = ((const float *)p->data)[i];
    if (!isfinite(f) || f == 0.0f) return;
    double a = fabs((double)f);
    if (fs->count == 0 || a < fs->min_abs) fs->min_abs = a;
    if (fs->count == 0 || a > fs->max_abs) fs->max_abs = a;
    /* `value != torch.ceil(value)` is evaluated in float32. */
    if (ceilf(f) != f) fs->all_integral = 0;
    fs->count++;
}

/* Widths in the _Formatter only count nonzero finite values; nan, inf and
 * zeros may end up wider (unpadded) or narrower (padded) than max_width. */
static void width_of_float(printer *p, int64_t i, void *ctx)
{
    (void)ctx;
    float f = ((const float *)p->data)[i];
    if (!isfinite(f) || f == 0.0f) return;
    char buf[ELEM_BUF];
    int len = fmt_float(buf, (double)f, p->sci_mode, p->int_mode);
    if (!p->sci_mode && p->int_mode) len += 1; /* the '.' appended later */
    if (len > p->max_width) p->max_width = len;
}

static int fmt_nonfloat(const printer *p, int64_t i, char *buf)
{
    if (p->dtype == LOOM_INT64)
        return snprintf(buf, ELEM_BUF, "%" PRId64, ((const int64_t *)p->data)[i]);
    return snprintf(buf, ELEM_BUF, "%s", ((const uint8_t *)p->data)[i] ? "True" : "False");
}

static void width_of_nonfloat(printer *p, int64_t i, void *ctx)
{
    (void)ctx;
    char buf[ELEM_BUF];
    int len = fmt_nonfloat(p, i, buf);
    if (len > p->max_width) p->max_width = len;
}

static void formatter_init(printer *p)
{
    p->int_mode = 1;
    p->sci_mode = 0;
    p->max_width = 1;
    if (p->dtype != LOOM_FLOAT32) {
        visit(p, 0, 0, width_of_nonfloat, NULL);
        return;
    }
    float_stats fs = {0, 0.0, 0.0, 1};
    visit(p, 0, 0, float_stats_add, &fs);
    if (fs.count == 0) return; /* "no valid number, do nothing" */
    p->int_mode = fs.all_integral;
    /* The ratio and the bounds are computed in double, as PyTorch does. */
    double ratio = fs.max_abs / fs.min_abs;
    if (p->int_mode)
        p->sci_mode = ratio > 1000.0 || fs.max_abs > 1.0e8;
    else
        p->sci_mode = ratio > 1000.0 || fs.max_abs > 1.0e8 || fs.min_abs < 1.0e-4;
    visit(p, 0, 0, width_of_float, NULL);
}

/* _Formatter.format: the element right-aligned to max_width. */
static void format_value(printer *p, int64_t i)
{
    char buf[ELEM_BUF + 1];
    int len;
    if (p->dtype == LOOM_FLOAT32) {
        double v = float_at(p, i);
        len = fmt_float(buf, v, p->sci_mode, p->int_mode);
        /* int_mode marks floats with a trailing '.', except nan/inf. */
        if (!p->sci_mode && p->int_mode && isfinite(v)) buf[len++] = '.';
    } else {
        len = fmt_nonfloat(p, i, buf);
    }
    if (len < p->max_width) sb_repeat(&p->out, ' ', (size_t)(p->max_width - len));
    sb_putn(&p->out, buf, (size_t)len);
}

/* ------------------------------------------------------------------------ */
/* _vector_str / _tensor_str_with_formatter */

/* A 1-D row: elements (and the " ..." placeholder, which counts as one) are
 * packed elements_per_line to a line; continuation lines are indented to
 * sit under the first element. */
typedef struct vector_ctx {
    int64_t item;
    int64_t per_line;
    int indent;
} vector_ctx;

static void vector_sep(printer *p, vector_ctx *vc)
{
    if (vc->item > 0) {
        if (vc->item % vc->per_line == 0) {
            sb_puts(&p->out, ",\n");
            sb_repeat(&p->out, ' ', (size_t)vc->indent + 1);
        } else {
            sb_puts(&p->out, ", ");
        }
    }
    vc->item++;
}

static void emit_vector(printer *p, int64_t offset, int indent)
{
    int64_t element_length = (int64_t)p->max_width + 2;
    /* max(1, floor((linewidth - indent) / element_length)); the numerator is
     * positive because indent <= PREFIX_LEN + LOOM_MAX_DIMS. */
    int64_t per_line = (LINEWIDTH - indent) / element_length;
    if (per_line < 1) per_line = 1;
    vector_ctx vc = {0, per_line, indent};
    int64_t n = p->shape[p->ndim - 1], st = p->strides[p->ndim - 1];

    sb_puts(&p->out, "[");
    if (p->summarize && n > 2 * EDGEITEMS) {
        for (int64_t i = 0; i < EDGEITEMS; i++) {
            vector_sep(p, &vc);
            format_value(p, offset + i * st);
        }
        vector_sep(p, &vc);
        sb_puts(&p->out, " ...");
        for (int64_t i = n - EDGEITEMS; i < n; i++) {
            vector_sep(p, &vc);
            format_value(p, offset + i * st);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            vector_sep(p, &vc);
            format_value(p, offset + i * st);
        }
    }
    sb_puts(&p->out, "]");
}

/* Slices of a (dim >= 2)-D block are separated by ',' then dim - 1 newlines
 * (a blank line between matrices of a 3-D tensor, two for 4-D, ...) and the
 * indent of the enclosing '['. */
static void slice_sep(printer *p, int dim, int indent)
{
    sb_puts(&p->out, ",");
    sb_repeat(&p->out, '\n', (size_t)dim - 1);
    sb_repeat(&p->out, ' ', (size_t)indent + 1);
}

static void emit_tensor(printer *p, int level, int64_t offset, int indent)
{
    int dim = p->ndim - level;
    if (dim == 0) {
        format_value(p, offset);
        return;
    }
    if (dim == 1) {
        emit_vector(p, offset, indent);
        return;
    }
    int64_t n = p->shape[level], st = p->strides[level];
    sb_puts(&p->out, "[");
    if (p->summarize && n > 2 * EDGEITEMS) {
        for (int64_t i = 0; i < EDGEITEMS; i++) {
            if (i > 0) slice_sep(p, dim, indent);
            emit_tensor(p, level + 1, offset + i * st, indent + 1);
        }
        slice_sep(p, dim, indent);
        sb_puts(&p->out, "...");
        for (int64_t i = n - EDGEITEMS; i < n; i++) {
            slice_sep(p, dim, indent);
            emit_tensor(p, level + 1, offset + i * st, indent + 1);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            if (i > 0) slice_sep(p, dim, indent);
            emit_tensor(p, level + 1, offset + i * st, indent + 1);
        }
    }
    sb_puts(&p->out, "]");
}

/* ------------------------------------------------------------------------ */
/* _add_suffixes: ", suffix" on the current line if it fits in LINEWIDTH,
 * else ",\n" and the prefix's indent. Only empty tensors get suffixes in
 * Loom (size= and dtype=), since Loom's dtypes are all "default" ones. */

static void add_suffixes(sbuf *out, const char *const *suffixes, int n)
{
    if (out->failed) return;
    /* last_line_len = len(s) - s.rfind("\n") + 1, rfind giving -1 for none;
     * PyTorch's off-by-two is kept as is. */
    const char *nl = strrchr(out->buf, '\n');
    size_t last_line_len = nl ? out->len - (size_t)(nl - out->buf) + 1 : out->len + 2;
    for (int k = 0; k < n; k++) {
        size_t suffix_len = strlen(suffixes[k]);
        if (last_line_len + suffix_len + 2 > LINEWIDTH) {
            sb_puts(out, ",\n");
            sb_repeat(out, ' ', PREFIX_LEN);
            last_line_len = PREFIX_LEN + suffix_len;
        } else {
            sb_puts(out, ", ");
            last_line_len += suffix_len + 2;
        }
        sb_puts(out, suffixes[k]);
    }
    sb_puts(out, ")");
}

/* "tensor([]" plus PyTorch's suffixes for an empty tensor: the shape unless
 * it is 1-D (Python's str(tuple)), and the dtype unless it is the default
 * float32 (nothing else tells the reader it is an integer tensor). */
static void emit_empty(printer *p)
{
    /* "size=(" + up to 8 * (20 digits + ", ") + ")". */
    char size[8 + LOOM_MAX_DIMS * 24];
    const char *suffixes[2];
    int n = 0;
    sb_puts(&p->out, PREFIX "[]");
    if (p->ndim != 1) {
        size_t len = (size_t)snprintf(size, sizeof size, "size=(");
        for (int d = 0; d < p->ndim; d++)
            len += (size_t)snprintf(size + len, sizeof size - len, "%s%" PRId64, d ? ", " : "",
                                    p->shape[d]);
        snprintf(size + len, sizeof size - len, ")");
        suffixes[n++] = size;
    }
    if (p->dtype == LOOM_INT64) suffixes[n++] = "dtype=torch.int64";
    if (p->dtype == LOOM_BOOL) suffixes[n++] = "dtype=torch.bool";
    add_suffixes(&p->out, suffixes, n);
}

char *loom__format_tensor(loom_dtype dtype, const void *data, int ndim, const int64_t *shape)
{
    if (dtype != LOOM_FLOAT32 && dtype != LOOM_INT64 && dtype != LOOM_BOOL) return NULL;
    if (ndim < 0 || ndim > LOOM_MAX_DIMS || (ndim > 0 && !shape)) return NULL;

    printer p;
    memset(&p, 0, sizeof p);
    p.dtype = dtype;
    p.data = data;
    p.ndim = ndim;
    p.shape = shape;

    /* numel, with overflow checked: an overflowing non-empty shape cannot
     * describe real data, while an empty one may have huge other dims. */
    int empty = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return NULL;
        if (shape[d] == 0) empty = 1;
    }
    int64_t numel = 1;
    if (!empty) {
        for (int d = ndim - 1; d >= 0; d--) {
            p.strides[d] = numel;
            if (numel > INT64_MAX / shape[d]) return NULL;
            numel *= shape[d];
        }
        if (!data) return NULL;
    }

    if (empty) {
        emit_empty(&p);
    } else {
        p.summarize = numel > THRESHOLD;
        formatter_init(&p);
        sb_puts(&p.out, PREFIX);
        emit_tensor(&p, 0, 0, PREFIX_LEN);
        sb_puts(&p.out, ")"); /* no suffixes: float32/int64/bool are defaults */
    }
    if (p.out.failed) {
        free(p.out.buf);
        return NULL;
    }
    return p.out.buf;
}
