/*
 * io/pth.c - reading PyTorch's own checkpoints: the files torch.save writes
 * (.pth / .pt, the zip format of PyTorch >= 1.6), without Python.
 *
 * The zip (read with libzip) holds PREFIX/data.pkl, a pickle of the object
 * saved, and one entry PREFIX/data/KEY per storage, the raw little-endian
 * bytes. A state dict pickles as
 *
 *     OrderedDict([("conv1.weight", _rebuild_tensor_v2(
 *         persistent_load(("storage", torch.FloatStorage, "0", "cpu", 864)),
 *         0, (32, 1, 3, 3), (9, 9, 3, 1), False, OrderedDict())), ...])
 *
 * plus a _metadata attribute (BUILD). The unpickler here is restricted:
 * it runs only the opcodes of protocol 2 such a pickle uses, and knows only
 * the globals a state dict needs (collections.OrderedDict,
 * torch._utils._rebuild_tensor_v2, _rebuild_parameter, the storage
 * types). Any other global or opcode is refused with a message naming it;
 * nothing is ever executed or imported. Every length, index, shape,
 * stride and storage size is checked against the bytes actually present.
 *
 * Nested dicts are flattened with dotted names ({"model": {"fc.bias": t}}
 * gives "model.fc.bias"), so that training checkpoints that wrap a state
 * dict load too; values that are not tensors (an epoch number, a string)
 * are skipped.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_impl.h"
#include "loom/loom.h"
#include "runtime/error.h"

#ifdef LOOM_HAVE_LIBZIP
#include <zip.h>

/* ---- values ------------------------------------------------------------------ */

typedef enum vkind {
    V_NONE,
    V_BOOL,
    V_INT,
    V_FLOAT,
    V_STR,
    V_TUPLE,
    V_LIST,
    V_DICT,
    V_GLOBAL,
    V_STORAGE,
    V_TENSOR,
    V_MARK,
} vkind;

typedef enum gkind { G_ORDERED_DICT, G_REBUILD_TENSOR, G_REBUILD_PARAMETER, G_STORAGE } gkind;

typedef struct value value;
struct value {
    vkind kind;
    int64_t i; /* INT, BOOL; GLOBAL: gkind; STORAGE: numel */
    char *s;   /* STR; STORAGE: key */
    size_t slen;
    loom_dtype dtype; /* GLOBAL storage type, STORAGE, TENSOR */
    const char *dtype_name;
    int n, cap;   /* TUPLE, LIST, DICT (2n items: key, value) */
    value **items;
    /* TENSOR */
    value *storage;
    int64_t offset;
    int ndim;
    int64_t shape[LOOM_MAX_DIMS], strides[LOOM_MAX_DIMS];
    value *next_alloc; /* every value, for freeing */
};

typedef struct unpickler {
    const char *path;
    const unsigned char *p;
    size_t len, pos;
    value *all;
    value **stack;
    int sp, stack_cap;
    value **memo;
    size_t memo_cap;
    loom_status st;
} unpickler;

static loom_status perr(unpickler *u, loom_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static loom_status perr(unpickler *u, loom_status st, const char *fmt, ...)
{
    if (u->st != LOOM_OK) return u->st;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    u->st = loom__set_error(st, "pth: %s: %s", u->path, msg);
    return u->st;
}

static value *vnew(unpickler *u, vkind k)
{
    value *v = calloc(1, sizeof *v);
    if (!v) {
        perr(u, LOOM_ERR_NOMEM, "out of memory");
        return NULL;
    }
    v->kind = k;
    v->next_alloc = u->all;
    u->all = v;
    return v;
}

static void free_values(value *v)
{
    while (v) {
        value *next = v->next_alloc;
        free(v->s);
        free(v->items);
        free(v);
        v = next;
    }
}

static bool vappend(unpickler *u, value *c, value *item)
{
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        value **grown = realloc(c->items, sizeof *grown * (size_t)cap);
        if (!grown) return perr(u, LOOM_ERR_NOMEM, "out of memory"), false;
        c->items = grown;
        c->cap = cap;
    }
    c->items[c->n++] = item;
    return true;
}

/* ---- the stack and the memo ------------------------------------------------------ */

static bool push(unpickler *u, value *v)
{
    if (!v) return false;
    if (u->sp == u->stack_cap) {
        int cap = u->stack_cap ? 2 * u->stack_cap : 64;
        if (cap > (1 << 24)) return perr(u, LOOM_ERR_FORMAT, "pickle stack too deep"), false;
        value **grown = realloc(u->stack, sizeof *grown * (size_t)cap);
        if (!grown) return perr(u, LOOM_ERR_NOMEM, "out of memory"), false;
        u->stack = grown;
        u->stack_cap = cap;
    }
    u->stack[u->sp++] = v;
    return true;
}

static value *pop(unpickler *u)
{
    if (u->sp == 0 || u->stack[u->sp - 1]->kind == V_MARK) {
        perr(u, LOOM_ERR_FORMAT, "pickle stack underflow at byte %zu", u->pos);
        return NULL;
    }
    return u->stack[--u->sp];
}

static value *top(unpickler *u)
{
    if (u->sp == 0 || u->stack[u->sp - 1]->kind == V_MARK) {
        perr(u, LOOM_ERR_FORMAT, "pickle stack underflow at byte %zu", u->pos);
        return NULL;
    }
    return u->stack[u->sp - 1];
}

/* The index of the topmost MARK, or -1 (error set). */
static int find_mark(unpickler *u)
{
    for (int i = u->sp - 1; i >= 0; i--)
        if (u->stack[i]->kind == V_MARK) return i;
    perr(u, LOOM_ERR_FORMAT, "pickle MARK missing at byte %zu", u->pos);
    return -1;
}

static bool memo_put(unpickler *u, size_t idx, value *v)
{
    if (!v) return false;
    if (idx > (1u << 24)) return perr(u, LOOM_ERR_FORMAT, "pickle memo index %zu too large", idx), false;
    if (idx >= u->memo_cap) {
        size_t cap = u->memo_cap ? u->memo_cap : 64;
        while (cap <= idx) cap *= 2;
        value **grown = realloc(u->memo, sizeof *grown * cap);
        if (!grown) return perr(u, LOOM_ERR_NOMEM, "out of memory"), false;
        memset(grown + u->memo_cap, 0, sizeof *grown * (cap - u->memo_cap));
        u->memo = grown;
        u->memo_cap = cap;
    }
    u->memo[idx] = v;
    return true;
}

static value *memo_get(unpickler *u, size_t idx)
{
    if (idx >= u->memo_cap || !u->memo[idx]) {
        perr(u, LOOM_ERR_FORMAT, "pickle refers to memo entry %zu, which was never stored", idx);
        return NULL;
    }
    return u->memo[idx];
}

/* ---- reading bytes ------------------------------------------------------------------- */

static bool need(unpickler *u, size_t n)
{
    if (u->len - u->pos >= n) return true;
    perr(u, LOOM_ERR_FORMAT, "pickle truncated at byte %zu (needs %zu more)", u->pos, n);
    return false;
}

static uint64_t le(unpickler *u, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)u->p[u->pos + (size_t)i] << (8 * i);
    u->pos += (size_t)n;
    return v;
}

/* ---- globals ---------------------------------------------------------------------- */

static const struct {
    const char *module, *name;
    gkind kind;
    loom_dtype dtype; /* storages Loom has */
    bool have;
} GLOBALS[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT, LOOM_FLOAT32, true},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR, LOOM_FLOAT32, true},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER, LOOM_FLOAT32, true},
    {"torch", "FloatStorage", G_STORAGE, LOOM_FLOAT32, true},
    {"torch", "LongStorage", G_STORAGE, LOOM_INT64, true},
    {"torch", "BoolStorage", G_STORAGE, LOOM_BOOL, true},
    /* Storages of dtypes Loom lacks: known, refused when a tensor uses one. */
    {"torch", "DoubleStorage", G_STORAGE, LOOM_FLOAT32, false},
    {"torch", "HalfStorage", G_STORAGE, LOOM_FLOAT32, false},
    {"torch", "BFloat16Storage", G_STORAGE, LOOM_FLOAT32, false},
    {"torch", "IntStorage", G_STORAGE, LOOM_FLOAT32, false},
    {"torch", "ShortStorage", G_STORAGE, LOOM_FLOAT32, false},
    {"torch", "CharStorage", G_STORAGE, LOOM_FLOAT32, false},
    {"torch", "ByteStorage", G_STORAGE, LOOM_FLOAT32, false},
};

/* GLOBAL "module\nname\n". */
static value *op_global(unpickler *u)
{
    const char *start = (const char *)u->p + u->pos;
    size_t left = u->len - u->pos;
    const char *nl1 = memchr(start, '\n', left);
    const char *nl2 = nl1 ? memchr(nl1 + 1, '\n', left - (size_t)(nl1 + 1 - start)) : NULL;
    if (!nl2) {
        perr(u, LOOM_ERR_FORMAT, "pickle GLOBAL truncated at byte %zu", u->pos);
        return NULL;
    }
    size_t mlen = (size_t)(nl1 - start), nlen = (size_t)(nl2 - nl1 - 1);
    u->pos += mlen + nlen + 2;
    for (size_t i = 0; i < sizeof GLOBALS / sizeof GLOBALS[0]; i++) {
        if (strlen(GLOBALS[i].module) == mlen && !memcmp(GLOBALS[i].module, start, mlen) &&
            strlen(GLOBALS[i].name) == nlen && !memcmp(GLOBALS[i].name, nl1 + 1, nlen)) {
            value *v = vnew(u, V_GLOBAL);
            if (!v) return NULL;
            v->i = GLOBALS[i].kind;
            v->dtype = GLOBALS[i].dtype;
            v->dtype_name = GLOBALS[i].have ? NULL : GLOBALS[i].name;
            return v;
        }
    }
    perr(u, LOOM_ERR_FORMAT,
         "the pickle names the global '%.*s.%.*s', which a state dict does not need; refusing to load it (only "
         "tensors, storages and OrderedDict are accepted)",
         (int)(mlen > 100 ? 100 : mlen), start, (int)(nlen > 100 ? 100 : nlen), nl1 + 1);
    return NULL;
}

/* BINPERSID: ("storage", StorageType, key, location, numel). */
static value *persistent_load(unpickler *u, value *pid)
{
    if (pid->kind != V_TUPLE || pid->n != 5 || pid->items[0]->kind != V_STR || strcmp(pid->items[0]->s, "storage") ||
        pid->items[1]->kind != V_GLOBAL || pid->items[1]->i != G_STORAGE || pid->items[2]->kind != V_STR ||
        pid->items[4]->kind != V_INT || pid->items[4]->i < 0) {
        perr(u, LOOM_ERR_FORMAT, "pickle persistent id at byte %zu is not a storage reference", u->pos);
        return NULL;
    }
    value *v = vnew(u, V_STORAGE);
    if (!v) return NULL;
    v->dtype = pid->items[1]->dtype;
    v->dtype_name = pid->items[1]->dtype_name;
    v->s = strdup(pid->items[2]->s);
    v->i = pid->items[4]->i;
    if (!v->s) perr(u, LOOM_ERR_NOMEM, "out of memory");
    return v->s ? v : NULL;
}

/* A tuple of ints into dims[]. */
static bool int_tuple(unpickler *u, const value *t, int64_t *dims, int *n, const char *what)
{
    if (t->kind != V_TUPLE || t->n > LOOM_MAX_DIMS)
        return perr(u, t->kind == V_TUPLE ? LOOM_ERR_SHAPE : LOOM_ERR_FORMAT, "a tensor's %s is %s", what,
                    t->kind == V_TUPLE ? "longer than LOOM_MAX_DIMS" : "not a tuple"),
               false;
    for (int i = 0; i < t->n; i++) {
        if (t->items[i]->kind != V_INT || t->items[i]->i < 0)
            return perr(u, LOOM_ERR_FORMAT, "a tensor's %s holds something other than a non-negative int", what),
                   false;
        dims[i] = t->items[i]->i;
    }
    *n = t->n;
    return true;
}

/* REDUCE: callable(*args). */
static value *reduce(unpickler *u, value *fn, value *args)
{
    if (fn->kind != V_GLOBAL || args->kind != V_TUPLE) {
        perr(u, LOOM_ERR_FORMAT, "pickle REDUCE at byte %zu calls something that is not a known global", u->pos);
        return NULL;
    }
    switch ((gkind)fn->i) {
    case G_ORDERED_DICT: return vnew(u, V_DICT); /* OrderedDict() or OrderedDict([]) */
    case G_REBUILD_PARAMETER:
        /* (tensor, requires_grad, backward_hooks) */
        if (args->n < 1 || args->items[0]->kind != V_TENSOR) break;
        return args->items[0];
    case G_REBUILD_TENSOR: {
        /* (storage, offset, size, stride, requires_grad, backward_hooks[, metadata]) */
        if (args->n < 4 || args->items[0]->kind != V_STORAGE || args->items[1]->kind != V_INT) break;
        value *t = vnew(u, V_TENSOR);
        if (!t) return NULL;
        int ns = 0;
        t->storage = args->items[0];
        t->offset = args->items[1]->i;
        if (!int_tuple(u, args->items[2], t->shape, &t->ndim, "size") ||
            !int_tuple(u, args->items[3], t->strides, &ns, "stride"))
            return NULL;
        if (ns != t->ndim) {
            perr(u, LOOM_ERR_FORMAT, "a tensor has %d sizes but %d strides", t->ndim, ns);
            return NULL;
        }
        t->dtype = t->storage->dtype;
        t->dtype_name = t->storage->dtype_name;
        return t;
    }
    default: break;
    }
    perr(u, LOOM_ERR_FORMAT, "pickle REDUCE at byte %zu has arguments a state dict never has", u->pos);
    return NULL;
}

/* ---- the opcodes ------------------------------------------------------------------- */

static value *str_value(unpickler *u, size_t n)
{
    if (!need(u, n)) return NULL;
    value *v = vnew(u, V_STR);
    if (!v) return NULL;
    v->s = malloc(n + 1);
    if (!v->s) {
        perr(u, LOOM_ERR_NOMEM, "out of memory");
        return NULL;
    }
    memcpy(v->s, u->p + u->pos, n);
    v->s[n] = '\0';
    v->slen = n;
    u->pos += n;
    return v;
}

static value *int_value(unpickler *u, int64_t i)
{
    value *v = vnew(u, V_INT);
    if (v) v->i = i;
    return v;
}

/* Items from the topmost MARK up, as a new TUPLE (the MARK is removed). */
static value *pop_to_mark(unpickler *u, vkind kind)
{
    int m = find_mark(u);
    if (m < 0) return NULL;
    value *t = vnew(u, kind);
    if (!t) return NULL;
    for (int i = m + 1; i < u->sp; i++)
        if (!vappend(u, t, u->stack[i])) return NULL;
    u->sp = m;
    return t;
}

static bool set_items(unpickler *u, value *dict, value *const *kv, int n)
{
    if (dict->kind != V_DICT) return perr(u, LOOM_ERR_FORMAT, "pickle SETITEM(S) on something that is not a dict"), false;
    if (n % 2) return perr(u, LOOM_ERR_FORMAT, "pickle SETITEMS with an odd number of items"), false;
    for (int i = 0; i < n; i++)
        if (!vappend(u, dict, kv[i])) return false;
    return true;
}

/* Runs the pickle to STOP; returns the result. */
static value *unpickle(unpickler *u)
{
    static value mark = {.kind = V_MARK};
    for (;;) {
        if (u->st != LOOM_OK || !need(u, 1)) return NULL;
        const size_t at = u->pos;
        const unsigned char op = u->p[u->pos++];
        bool ok = true;
        switch (op) {
        case 0x80: /* PROTO */
            if (!need(u, 1)) return NULL;
            if (u->p[u->pos] > 5) return perr(u, LOOM_ERR_FORMAT, "pickle protocol %d is unknown", u->p[u->pos]), NULL;
            u->pos++;
            break;
        case '.': /* STOP */ return pop(u);
        case '(': /* MARK */ ok = push(u, &mark); break;
        case '}': /* EMPTY_DICT */ ok = push(u, vnew(u, V_DICT)); break;
        case ')': /* EMPTY_TUPLE */ ok = push(u, vnew(u, V_TUPLE)); break;
        case ']': /* EMPTY_LIST */ ok = push(u, vnew(u, V_LIST)); break;
        case 'N': /* NONE */ ok = push(u, vnew(u, V_NONE)); break;
        case 0x88: /* NEWTRUE */
        case 0x89: { /* NEWFALSE */
            value *v = vnew(u, V_BOOL);
            if (v) v->i = op == 0x88;
            ok = push(u, v);
            break;
        }
        case 'J': /* BININT */
            ok = need(u, 4) && push(u, int_value(u, (int32_t)(uint32_t)le(u, 4)));
            break;
        case 'K': /* BININT1 */ ok = need(u, 1) && push(u, int_value(u, (int64_t)le(u, 1))); break;
        case 'M': /* BININT2 */ ok = need(u, 2) && push(u, int_value(u, (int64_t)le(u, 2))); break;
        case 0x8a: { /* LONG1: n bytes, little-endian two's complement */
            if (!need(u, 1)) return NULL;
            int n = u->p[u->pos++];
            if (n > 8) return perr(u, LOOM_ERR_FORMAT, "pickle integer of %d bytes is too large", n), NULL;
            if (!need(u, (size_t)n)) return NULL;
            uint64_t v = le(u, n);
            if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~(uint64_t)0 << (8 * n); /* sign-extend */
            ok = push(u, int_value(u, (int64_t)v));
            break;
        }
        case 'G': { /* BINFLOAT: big-endian double */
            if (!need(u, 8)) return NULL;
            uint64_t b = 0;
            for (int i = 0; i < 8; i++) b = b << 8 | u->p[u->pos + (size_t)i];
            u->pos += 8;
            value *v = vnew(u, V_FLOAT);
            ok = push(u, v);
            (void)b; /* floats are only metadata here */
            break;
        }
        case 'X': /* BINUNICODE */ ok = need(u, 4) && push(u, str_value(u, (size_t)le(u, 4))); break;
        case 0x8c: /* SHORT_BINUNICODE */ ok = need(u, 1) && push(u, str_value(u, (size_t)le(u, 1))); break;
        case 'T': /* BINSTRING */ ok = need(u, 4) && push(u, str_value(u, (size_t)le(u, 4))); break;
        case 'U': /* SHORT_BINSTRING */ ok = need(u, 1) && push(u, str_value(u, (size_t)le(u, 1))); break;
        case 'q': /* BINPUT */ ok = need(u, 1) && memo_put(u, (size_t)le(u, 1), top(u)); break;
        case 'r': /* LONG_BINPUT */ ok = need(u, 4) && memo_put(u, (size_t)le(u, 4), top(u)); break;
        case 'h': /* BINGET */ ok = need(u, 1) && push(u, memo_get(u, (size_t)le(u, 1))); break;
        case 'j': /* LONG_BINGET */ ok = need(u, 4) && push(u, memo_get(u, (size_t)le(u, 4))); break;
        case 'c': /* GLOBAL */ ok = push(u, op_global(u)); break;
        case 't': /* TUPLE */ ok = push(u, pop_to_mark(u, V_TUPLE)); break;
        case 0x85: /* TUPLE1 */
        case 0x86: /* TUPLE2 */
        case 0x87: { /* TUPLE3 */
            int n = op - 0x84;
            if (u->sp < n) return perr(u, LOOM_ERR_FORMAT, "pickle stack underflow at byte %zu", at), NULL;
            value *t = vnew(u, V_TUPLE);
            for (int i = u->sp - n; t && i < u->sp; i++) {
                if (u->stack[i]->kind == V_MARK) return perr(u, LOOM_ERR_FORMAT, "pickle TUPLE over a MARK"), NULL;
                if (!vappend(u, t, u->stack[i])) return NULL;
            }
            u->sp -= n;
            ok = push(u, t);
            break;
        }
        case 'R': { /* REDUCE */
            value *args = pop(u), *fn = args ? pop(u) : NULL;
            ok = fn && push(u, reduce(u, fn, args));
            break;
        }
        case 'Q': { /* BINPERSID */
            value *pid = pop(u);
            ok = pid && push(u, persistent_load(u, pid));
            break;
        }
        case 's': { /* SETITEM */
            value *v = pop(u), *k = v ? pop(u) : NULL, *d = k ? top(u) : NULL;
            ok = d && set_items(u, d, (value *const[]){k, v}, 2);
            break;
        }
        case 'u': { /* SETITEMS */
            int m = find_mark(u);
            if (m < 1) return NULL;
            value *d = u->stack[m - 1];
            ok = set_items(u, d, u->stack + m + 1, u->sp - m - 1);
            u->sp = m;
            break;
        }
        case 'a': { /* APPEND */
            value *v = pop(u), *l = v ? top(u) : NULL;
            ok = l && (l->kind == V_LIST ? vappend(u, l, v) : !perr(u, LOOM_ERR_FORMAT, "pickle APPEND to a non-list"));
            break;
        }
        case 'e': { /* APPENDS */
            int m = find_mark(u);
            if (m < 1) return NULL;
            value *l = u->stack[m - 1];
            if (l->kind != V_LIST) return perr(u, LOOM_ERR_FORMAT, "pickle APPENDS to a non-list"), NULL;
            for (int i = m + 1; ok && i < u->sp; i++) ok = vappend(u, l, u->stack[i]);
            u->sp = m;
            break;
        }
        case 'b': { /* BUILD: the state of an object; for an OrderedDict, its _metadata */
            value *state = pop(u), *obj = state ? top(u) : NULL;
            ok = obj && (obj->kind == V_DICT || obj->kind == V_TENSOR ||
                         !perr(u, LOOM_ERR_FORMAT, "pickle BUILD at byte %zu on an unexpected object", at));
            break;
        }
        default:
            return perr(u, LOOM_ERR_FORMAT,
                        "the pickle uses opcode 0x%02x at byte %zu, which a state dict does not need; refusing it",
                        op, at),
                   NULL;
        }
        if (!ok) {
            if (u->st == LOOM_OK) perr(u, LOOM_ERR_FORMAT, "pickle malformed at byte %zu", at);
            return NULL;
        }
    }
}

/* ---- the zip --------------------------------------------------------------------------- */

typedef struct pth_file {
    const char *path;
    zip_t *z;
    char prefix[256]; /* "archive/" */
} pth_file;

static loom_status zerr(const char *path, loom_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static loom_status zerr(const char *path, loom_status st, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return loom__set_error(st, "pth: %s: %s", path, msg);
}

/* Reads entry `name` (under the prefix) whole; expect >= 0 demands that size. */
static loom_status read_entry(const pth_file *f, const char *name, int64_t expect, unsigned char **out, size_t *len)
{
    char full[512];
    snprintf(full, sizeof full, "%s%s", f->prefix, name);
    zip_stat_t zs;
    zip_int64_t idx = zip_name_locate(f->z, full, 0);
    if (idx < 0 || zip_stat_index(f->z, (zip_uint64_t)idx, 0, &zs) != 0 || !(zs.valid & ZIP_STAT_SIZE))
        return zerr(f->path, LOOM_ERR_FORMAT, "the archive has no entry %s", full);
    if (expect >= 0 && zs.size != (zip_uint64_t)expect)
        return zerr(f->path, LOOM_ERR_FORMAT, "entry %s holds %llu bytes, but its tensor needs %lld", full,
                    (unsigned long long)zs.size, (long long)expect);
    if (zs.size > ((zip_uint64_t)1 << 40)) return zerr(f->path, LOOM_ERR_FORMAT, "entry %s is too large", full);
    unsigned char *buf = malloc(zs.size ? (size_t)zs.size : 1);
    if (!buf) return zerr(f->path, LOOM_ERR_NOMEM, "out of memory reading %s", full);
    zip_file_t *zf = zip_fopen_index(f->z, (zip_uint64_t)idx, 0);
    zip_int64_t got = zf ? zip_fread(zf, buf, zs.size) : -1;
    if (zf) zip_fclose(zf);
    if (got < 0 || (zip_uint64_t)got != zs.size) {
        free(buf);
        return zerr(f->path, LOOM_ERR_FORMAT, "entry %s could not be read whole (truncated or corrupt archive)", full);
    }
    *out = buf;
    *len = (size_t)zs.size;
    return LOOM_OK;
}

static loom_status pth_open(pth_file *f, const char *path)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    int zerrno = 0;
    f->z = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &zerrno);
    if (!f->z) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerrno);
        loom_status st = zerr(path, zerrno == ZIP_ER_OPEN || zerrno == ZIP_ER_NOENT ? LOOM_ERR_IO : LOOM_ERR_FORMAT,
                              "not a readable PyTorch zip checkpoint (%s)", zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return st;
    }
    /* The pickle is PREFIX/data.pkl, PREFIX being the archive's one top dir. */
    zip_int64_t n = zip_get_num_entries(f->z, 0);
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(f->z, (zip_uint64_t)i, 0);
        const char *slash = name ? strchr(name, '/') : NULL;
        if (slash && !strcmp(slash, "/data.pkl") && (size_t)(slash - name) + 2 < sizeof f->prefix) {
            memcpy(f->prefix, name, (size_t)(slash - name) + 1);
            f->prefix[slash - name + 1] = '\0';
            return LOOM_OK;
        }
    }
    zip_close(f->z);
    f->z = NULL;
    return zerr(path, LOOM_ERR_FORMAT, "the archive has no data.pkl (not a torch.save file, or the legacy "
                                       "pre-1.6 format, which Loom does not read)");
}

/* ---- tensors -------------------------------------------------------------------------- */

typedef struct entry {
    char *name;
    value *t;
} entry;

typedef struct entries {
    entry *e;
    int n, cap;
} entries;

/* Collects the tensors of dict d (names prefixed), recursively. */
static bool collect(unpickler *u, const value *d, const char *prefix, entries *out, int depth)
{
    if (depth > 16) return perr(u, LOOM_ERR_FORMAT, "dicts nested too deep"), false;
    for (int i = 0; i + 1 < d->n; i += 2) {
        const value *k = d->items[i], *v = d->items[i + 1];
        if (k->kind != V_STR) continue; /* not a name: not state */
        size_t len = strlen(prefix) + k->slen + 2;
        char *name = malloc(len);
        if (!name) return perr(u, LOOM_ERR_NOMEM, "out of memory"), false;
        snprintf(name, len, "%s%s%s", prefix, *prefix ? "." : "", k->s);
        bool ok = true;
        if (v->kind == V_DICT) {
            ok = collect(u, v, name, out, depth + 1);
            free(name);
        } else if (v->kind == V_TENSOR) {
            if (out->n == out->cap) {
                int cap = out->cap ? 2 * out->cap : 64;
                entry *grown = realloc(out->e, sizeof *grown * (size_t)cap);
                if (!grown) {
                    free(name);
                    return perr(u, LOOM_ERR_NOMEM, "out of memory"), false;
                }
                out->e = grown;
                out->cap = cap;
            }
            out->e[out->n++] = (entry){name, (value *)v};
        } else {
            free(name); /* an epoch number, a string: not a tensor */
        }
        if (!ok) return false;
    }
    return true;
}

/* The tensor t (of entry `name`) as a new Loom tensor: its storage read and
 * checked, then its strided view copied out. */
static loom_tensor *make_tensor(const pth_file *f, loom_ctx *ctx, const char *name, const value *t)
{
    if (t->dtype_name) {
        zerr(f->path, LOOM_ERR_DTYPE, "%s is stored as torch.%s, a dtype Loom lacks (float32, int64 and bool only)",
             name, t->dtype_name);
        return NULL;
    }
    const int es = loom_dtype_size(t->dtype);
    const int64_t numel_storage = t->storage->i;
    if (numel_storage > ((int64_t)1 << 40) / es) {
        zerr(f->path, LOOM_ERR_FORMAT, "%s: storage of %lld elements is too large", name, (long long)numel_storage);
        return NULL;
    }
    int64_t n = 1, last = t->offset;
    bool empty = false;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] == 0) empty = true;
        if (t->shape[d] > 0 && n > INT64_MAX / t->shape[d]) {
            zerr(f->path, LOOM_ERR_FORMAT, "%s: shape overflows", name);
            return NULL;
        }
        n *= t->shape[d];
        if (t->shape[d] > 0) {
            if (t->strides[d] > 0 && (t->shape[d] - 1) > (INT64_MAX - last) / t->strides[d]) {
                zerr(f->path, LOOM_ERR_FORMAT, "%s: strides overflow", name);
                return NULL;
            }
            last += (t->shape[d] - 1) * t->strides[d];
        }
    }
    if (!empty && (t->offset < 0 || last >= numel_storage)) {
        zerr(f->path, LOOM_ERR_FORMAT, "%s: its view (offset %lld, last element %lld) lies outside its storage of %lld elements",
             name, (long long)t->offset, (long long)last, (long long)numel_storage);
        return NULL;
    }
    unsigned char *raw = NULL;
    size_t rawlen = 0;
    char entry_name[300];
    snprintf(entry_name, sizeof entry_name, "data/%s", t->storage->s);
    if (read_entry(f, entry_name, numel_storage * es, &raw, &rawlen) != LOOM_OK) return NULL;
    unsigned char *dense = malloc((size_t)(n ? n : 1) * (size_t)es);
    if (!dense) {
        free(raw);
        zerr(f->path, LOOM_ERR_NOMEM, "out of memory reading %s", name);
        return NULL;
    }
    /* Row-major walk of the view. */
    int64_t idx[LOOM_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n; i++) {
        int64_t off = t->offset;
        for (int d = 0; d < t->ndim; d++) off += idx[d] * t->strides[d];
        memcpy(dense + i * es, raw + off * es, (size_t)es);
        for (int d = t->ndim - 1; d >= 0 && ++idx[d] == t->shape[d]; d--) idx[d] = 0;
    }
    free(raw);
    loom_tensor *r = loom_tensor_from_array(ctx, t->dtype, dense, t->ndim, t->shape);
    free(dense);
    return r;
}

void loom_pth_free_names(char **names, int n)
{
    if (!names) return;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

loom_status loom_load_pth(loom_ctx *ctx, const char *path, int *n_out, loom_tensor ***tensors_out, char ***names_out)
{
    if (!ctx || !path || !n_out || !tensors_out)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "pth: load: ctx, path, n_out and tensors_out must not be NULL");
    pth_file f;
    loom_status st = pth_open(&f, path);
    if (st != LOOM_OK) return st;
    /* Little-endian only (PyTorch writes the byte order since 1.11). */
    unsigned char *bo = NULL;
    size_t bolen = 0;
    char full[300];
    snprintf(full, sizeof full, "%sbyteorder", f.prefix);
    if (zip_name_locate(f.z, full, 0) >= 0 && read_entry(&f, "byteorder", -1, &bo, &bolen) == LOOM_OK) {
        bool little = bolen == 6 && !memcmp(bo, "little", 6);
        free(bo);
        if (!little) {
            zip_close(f.z);
            return zerr(path, LOOM_ERR_FORMAT, "the checkpoint is big-endian; Loom reads little-endian ones");
        }
    }
    unsigned char *pkl = NULL;
    size_t pkllen = 0;
    st = read_entry(&f, "data.pkl", -1, &pkl, &pkllen);
    unpickler u = {.path = path, .p = pkl, .len = pkllen};
    value *root = st == LOOM_OK ? unpickle(&u) : NULL;
    if (st == LOOM_OK && !root) st = u.st != LOOM_OK ? u.st : zerr(path, LOOM_ERR_FORMAT, "empty pickle");
    if (st == LOOM_OK && root->kind != V_DICT)
        st = zerr(path, LOOM_ERR_FORMAT, "the pickle holds no dict of tensors (a state dict)");
    entries es = {NULL, 0, 0};
    if (st == LOOM_OK && !collect(&u, root, "", &es, 0)) st = u.st;
    loom_tensor **ts = NULL;
    if (st == LOOM_OK && es.n) {
        ts = calloc((size_t)es.n, sizeof *ts);
        if (!ts) st = zerr(path, LOOM_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; st == LOOM_OK && i < es.n; i++) {
        ts[i] = make_tensor(&f, ctx, es.e[i].name, es.e[i].t);
        if (!ts[i]) st = loom_last_status() != LOOM_OK ? loom_last_status() : LOOM_ERR_FORMAT;
    }
    char **names = NULL;
    if (st == LOOM_OK && es.n) {
        names = malloc(sizeof *names * (size_t)es.n);
        if (!names) st = zerr(path, LOOM_ERR_NOMEM, "out of memory");
    }
    if (st == LOOM_OK) {
        for (int i = 0; i < es.n; i++) names[i] = es.e[i].name;
        *n_out = es.n;
        *tensors_out = ts;
        if (names_out) *names_out = names;
        else loom_pth_free_names(names, es.n);
    } else {
        for (int i = 0; ts && i < es.n; i++) loom_tensor_free(ts[i]);
        free(ts);
        for (int i = 0; i < es.n; i++) free(es.e[i].name);
    }
    free(es.e);
    free_values(u.all);
    free(u.stack);
    free(u.memo);
    free(pkl);
    zip_close(f.z);
    return st;
}

#else /* !LOOM_HAVE_LIBZIP */

void loom_pth_free_names(char **names, int n)
{
    if (!names) return;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

loom_status loom_load_pth(loom_ctx *ctx, const char *path, int *n_out, loom_tensor ***tensors_out, char ***names_out)
{
    (void)ctx, (void)n_out, (void)tensors_out, (void)names_out;
    return loom__set_error(LOOM_ERR_IO, "pth: %s: Loom was built without libzip, which reading PyTorch checkpoints "
                                        "needs (install libzip-dev and re-run configure)",
                           path ? path : "(null)");
}

#endif /* LOOM_HAVE_LIBZIP */
