/*
 * graph/tensor.c - tensor objects: creation, reference counting, properties
 * and data access.
 */
#include <stdlib.h>
#include <string.h>

#include "graph/capture.h"
#include "graph/eval.h"
#include "graph/print.h"
#include "graph/tensor_impl.h"
#include "loom/ops.h"
#include "loom/tensor.h"
#include "runtime/error.h"

int loom_dtype_size(loom_dtype dtype)
{
    switch (dtype) {
    case LOOM_FLOAT32: return 4;
    case LOOM_INT64: return 8;
    case LOOM_BOOL: return 1;
    default: return 0;
    }
}

const char *loom_dtype_name(loom_dtype dtype)
{
    switch (dtype) {
    case LOOM_FLOAT32: return "float32";
    case LOOM_INT64: return "int64";
    case LOOM_BOOL: return "bool";
    default: return "?";
    }
}

void loom__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        strides[d] = s;
        s *= shape[d] > 1 ? shape[d] : 1;
    }
}

bool loom__is_contiguous(int ndim, const int64_t *shape, const int64_t *strides)
{
    /* As PyTorch: size-1 dims may have any stride. */
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        if (shape[d] == 0) return true;
        if (shape[d] != 1 && strides[d] != s) return false;
        s *= shape[d];
    }
    return true;
}

void loom__scatter(char *to, const int64_t *strides, const char *from, int ndim, const int64_t *shape, int es)
{
    const int64_t n = loom__numel(ndim, shape);
    if (loom__is_contiguous(ndim, shape, strides)) {
        memcpy(to, from, (size_t)n * (size_t)es);
        return;
    }
    int64_t idx[LOOM_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n; i++) {
        int64_t off = 0;
        for (int d = 0; d < ndim; d++) off += idx[d] * strides[d];
        memcpy(to + off * es, from + i * es, (size_t)es);
        for (int d = ndim - 1; d >= 0 && ++idx[d] == shape[d]; d--) idx[d] = 0;
    }
}

loom_tensor *loom__tensor_new(loom_ctx *ctx, loom_dtype dtype, int ndim, const int64_t *shape)
{
    loom_tensor *t = loom__mem_alloc(&ctx->mem, sizeof *t);
    if (!t) {
        loom__set_error(LOOM_ERR_NOMEM, "out of memory allocating a tensor");
        return NULL;
    }
    memset(t, 0, sizeof *t);
    atomic_init(&t->refs, 1);
    atomic_init(&t->state, LOOM__READY);
    t->ctx = ctx;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    loom__contiguous_strides(ndim, t->shape, t->strides);
    t->node.in = t->node.in_inline;
    t->node.in_version = t->node.in_version_inline;
    atomic_fetch_add_explicit(&ctx->live_tensors, 1, memory_order_relaxed);
    loom__scope_add(ctx->scope, t);
    return t;
}

/* Storage uids, unique in the process (not per context: backends key
 * caches by them, and contexts come and go). */
static _Atomic uint64_t storage_uids;

uint64_t loom__storage_uid_last(void) { return atomic_load_explicit(&storage_uids, memory_order_relaxed); }

loom_status loom__tensor_attach_storage(loom_tensor *t, bool allocate)
{
    loom__mem *mem = &t->ctx->mem;
    loom__storage *s = loom__mem_alloc(mem, sizeof *s);
    if (!s) return loom__set_error(LOOM_ERR_NOMEM, "out of memory allocating a storage");
    atomic_init(&s->refs, 1);
    s->version = 0;
    s->uid = atomic_fetch_add_explicit(&storage_uids, 1, memory_order_relaxed) + 1;
    s->mem = mem;
    s->nbytes = (size_t)loom__numel(t->ndim, t->shape) * (size_t)loom_dtype_size(t->dtype);
    s->data = NULL;
    s->layout = LOOM__LAYOUT_PLAIN;
    if (allocate) {
        s->data = loom__mem_alloc_data(mem, s->nbytes);
        if (!s->data) {
            size_t nbytes = s->nbytes;
            loom__mem_free(mem, s);
            char sh[LOOM__SHAPE_STR_MAX];
            return loom__set_error(LOOM_ERR_NOMEM, "out of memory allocating %zu bytes for a %s tensor of shape %s",
                                   nbytes, loom_dtype_name(t->dtype),
                                   loom__fmt_shape(sh, sizeof sh, t->ndim, t->shape));
        }
    }
    t->storage = s;
    return LOOM_OK;
}

void loom__tensor_share_storage(loom_tensor *t, loom__storage *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    t->storage = s;
}

void loom__storage_decref(loom__storage *s)
{
    if (!s) return;
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    loom__mem_free_data(s->mem, s->data);
    loom__mem_free(s->mem, s);
}

void loom__tensor_incref(loom_tensor *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

/* The tensors still to be decref'd while freeing: a stack that starts in a
 * local buffer and grows on the heap, so that a long chain is released
 * iteratively, never by deep recursion. */
typedef struct worklist {
    loom_tensor **items;
    int n, cap;
    loom_tensor *local[64];
} worklist;

static void push(worklist *w, loom_tensor *t)
{
    if (!t) return;
    if (w->n == w->cap) {
        loom_tensor **grown = malloc(sizeof *grown * (size_t)w->cap * 2);
        if (!grown) {
            /* Out of memory while freeing: recurse for this one rather
             * than leak it. */
            loom__tensor_decref(t);
            return;
        }
        memcpy(grown, w->items, sizeof *grown * (size_t)w->n);
        if (w->items != w->local) free(w->items);
        w->items = grown;
        w->cap *= 2;
    }
    w->items[w->n++] = t;
}

/* Frees the tensor object itself; what it referenced (its node's inputs,
 * a leaf's gradient, a gradient in flight) goes on the worklist. */
static void tensor_destroy(loom_tensor *t, worklist *w)
{
    loom__mem *mem = &t->ctx->mem;
    for (int i = 0; i < t->node.n_in; i++) push(w, t->node.in[i]);
    if (t->node.in != t->node.in_inline) loom__mem_free(mem, t->node.in);
    push(w, t->grad);
    push(w, t->gacc);
    for (int i = 0; i < t->n_gpieces; i++) push(w, t->gpieces[i].src);
    free(t->gpieces);
    loom__storage_decref(t->storage);
    free(t->errmsg);
    atomic_fetch_sub_explicit(&t->ctx->live_tensors, 1, memory_order_relaxed);
    loom__mem_free(mem, t);
}

void loom__tensor_decref(loom_tensor *t)
{
    worklist w;
    w.items = w.local;
    w.n = 0;
    w.cap = (int)(sizeof w.local / sizeof w.local[0]);
    while (t) {
        if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1) tensor_destroy(t, &w);
        t = w.n ? w.items[--w.n] : NULL;
    }
    if (w.items != w.local) free(w.items);
}

void loom__node_release_inputs(loom_tensor *t)
{
    int n = t->node.n_in;
    loom_tensor **in = t->node.in;
    t->node.n_in = 0;
    for (int i = 0; i < n; i++) loom__tensor_decref(in[i]);
    if (in != t->node.in_inline) {
        loom__mem_free(&t->ctx->mem, in);
        t->node.in = t->node.in_inline;
        t->node.in_version = t->node.in_version_inline;
    }
}

void loom_tensor_free(loom_tensor *t)
{
    if (!t) return;
    if (t->scope) loom__scope_remove(t);
    loom__tensor_decref(t);
}

/* ---- properties ------------------------------------------------------ */

loom_ctx *loom_tensor_ctx(const loom_tensor *t) { return t ? t->ctx : NULL; }
loom_dtype loom_tensor_dtype(const loom_tensor *t) { return t ? t->dtype : LOOM_DTYPE_COUNT; }
int loom_tensor_ndim(const loom_tensor *t) { return t ? t->ndim : -1; }

int64_t loom_tensor_size(const loom_tensor *t, int d)
{
    if (!t) return -1;
    if (d < 0) d += t->ndim;
    if (d < 0 || d >= t->ndim) return -1;
    return t->shape[d];
}

int64_t loom_tensor_stride(const loom_tensor *t, int d)
{
    if (!t) return -1;
    if (d < 0) d += t->ndim;
    if (d < 0 || d >= t->ndim) return -1;
    return t->strides[d];
}

void loom_tensor_shape(const loom_tensor *t, int64_t *out)
{
    if (!t || !out) return;
    memcpy(out, t->shape, sizeof(int64_t) * (size_t)t->ndim);
}

int64_t loom_tensor_numel(const loom_tensor *t) { return t ? loom__numel(t->ndim, t->shape) : -1; }

bool loom_tensor_is_contiguous(const loom_tensor *t)
{
    return t && loom__is_contiguous(t->ndim, t->shape, t->strides);
}

bool loom_tensor_shares_storage(const loom_tensor *a, const loom_tensor *b)
{
    return a && b && a->storage == b->storage;
}

/* ---- data access ----------------------------------------------------- */

loom_status loom__storage_make_plain(loom__storage *s, int nthreads)
{
    if (s->layout == LOOM__LAYOUT_PLAIN || !s->data) return LOOM_OK;
    float *plain = loom__mem_alloc_data(s->mem, s->nbytes);
    if (!plain)
        return loom__set_error(LOOM_ERR_NOMEM, "out of memory allocating %zu bytes to convert a tensor of shape "
                                               "[%lld, %lld, %lld, %lld] from a blocked layout to plain",
                               s->nbytes, (long long)s->dims[0], (long long)s->dims[1], (long long)s->dims[2],
                               (long long)s->dims[3]);
    loom__layout_to_plain(s->data, plain, s->layout, s->dims, nthreads);
    loom__mem_free_data(s->mem, s->data);
    s->data = plain;
    s->layout = LOOM__LAYOUT_PLAIN;
    return LOOM_OK;
}

/* Computes t, leaving its storage as its node wrote it; who names the
 * public call in the error for a NULL t (unless an earlier error stands). */
static loom_status compute_named(loom_tensor *t, const char *who)
{
    if (!t) {
        if (loom_last_status() != LOOM_OK) return loom_last_status();
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: tensor is NULL", who);
    }
    return loom__eval(t);
}

loom_status loom_tensor_eval(loom_tensor *t)
{
    loom_status st = compute_named(t, "eval");
    /* The user reads plain row-major data: a storage that a oneDNN node
     * left blocked is converted in place (no node runs meanwhile). */
    if (st == LOOM_OK && t->storage) st = loom__capture_make_plain(t->ctx, t->storage);
    if (st == LOOM_OK && t->storage) st = loom__storage_make_plain(t->storage, t->ctx->num_threads);
    return st;
}

loom_status loom_tensor_compute(loom_tensor *t) { return compute_named(t, "compute"); }

const void *loom_tensor_data(loom_tensor *t)
{
    if (loom_tensor_eval(t) != LOOM_OK) return NULL;
    return loom__tensor_ptr(t);
}

loom_status loom_tensor_copy_to(loom_tensor *t, void *dst, size_t dst_bytes)
{
    if (!t) return loom_tensor_eval(t);
    if (!dst) return loom__set_error(LOOM_ERR_INVALID_ARG, "copy_to: destination is NULL");
    size_t need = (size_t)loom_tensor_numel(t) * (size_t)loom_dtype_size(t->dtype);
    if (dst_bytes < need)
        return loom__set_error(LOOM_ERR_INVALID_ARG,
                               "copy_to: destination holds %zu bytes, the tensor needs %zu",
                               dst_bytes, need);
    if (need == 0) return loom_tensor_eval(t);
    loom_tensor *c = t;
    if (!loom_tensor_is_contiguous(t)) {
        /* A temporary contiguous copy, freed before we return. */
        c = loom_scope_detach(loom_contiguous(t));
        if (!c) return loom_last_status();
    }
    loom_status st = loom_tensor_eval(c);
    if (st == LOOM_OK) memcpy(dst, loom__tensor_ptr(c), need);
    if (c != t) loom_tensor_free(c);
    return st;
}

loom_status loom_tensor_item(loom_tensor *t, double *out)
{
    if (!t) return loom_tensor_eval(t);
    if (!out) return loom__set_error(LOOM_ERR_INVALID_ARG, "item: output pointer is NULL");
    if (loom_tensor_numel(t) != 1) {
        char sh[LOOM__SHAPE_STR_MAX];
        return loom__set_error(LOOM_ERR_SHAPE,
                               "item: a tensor with %lld elements (shape %s) cannot be converted to a scalar",
                               (long long)loom_tensor_numel(t),
                               loom__fmt_shape(sh, sizeof sh, t->ndim, t->shape));
    }
    loom_status st = loom_tensor_eval(t);
    if (st != LOOM_OK) return st;
    const void *p = loom__tensor_ptr(t);
    switch (t->dtype) {
    case LOOM_FLOAT32: *out = *(const float *)p; break;
    case LOOM_INT64: *out = (double)*(const int64_t *)p; break;
    case LOOM_BOOL: *out = *(const uint8_t *)p ? 1.0 : 0.0; break;
    default: return loom__set_error(LOOM_ERR_DTYPE, "item: invalid dtype");
    }
    return LOOM_OK;
}

char *loom_tensor_to_string(loom_tensor *t)
{
    if (!t) {
        loom_tensor_eval(t);
        return NULL;
    }
    size_t bytes = (size_t)loom_tensor_numel(t) * (size_t)loom_dtype_size(t->dtype);
    void *buf = malloc(bytes ? bytes : 1);
    if (!buf) {
        loom__set_error(LOOM_ERR_NOMEM, "to_string: out of memory");
        return NULL;
    }
    if (loom_tensor_copy_to(t, buf, bytes) != LOOM_OK) {
        free(buf);
        return NULL;
    }
    char *s = loom__format_tensor(t->dtype, buf, t->ndim, t->shape);
    free(buf);
    if (!s) loom__set_error(LOOM_ERR_NOMEM, "to_string: out of memory");
    return s;
}

loom_status loom_tensor_print(loom_tensor *t, FILE *f)
{
    if (!f) return loom__set_error(LOOM_ERR_INVALID_ARG, "print: FILE is NULL");
    char *s = loom_tensor_to_string(t);
    if (!s) return loom_last_status() != LOOM_OK ? loom_last_status() : LOOM_ERR_INVALID_ARG;
    fprintf(f, "%s\n", s);
    free(s);
    return LOOM_OK;
}
