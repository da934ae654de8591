/*
 * nn/module.c - the module object: named parameters, buffers and children,
 * training mode, dotted-name lookup, the state_dict order, and Sequential.
 *
 * A module owns its tensors (detached from every scope when registered) and
 * its children. Parameters, buffers and children share one namespace per
 * module, as attributes do in PyTorch, so "weight" cannot be both a
 * parameter and a child.
 *
 * Full names ("fc1.weight") are not stored per tensor: a child does not
 * know its name in its parent until it is added, and may be queried on its
 * own. loom_module_parameters() / loom_module_state() flatten the tree into
 * a cache held by the module they are called on; registering anything in
 * that module or below it invalidates the cache of every ancestor (children
 * point to their parent for this).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/module_impl.h"

typedef struct named_tensor {
    char *name;
    loom_tensor *t;
} named_tensor;

typedef struct named_child {
    char *name;
    loom_module *m;
} named_child;

/* A flattened, dotted view of a module tree (params or params + buffers). */
typedef struct flat_list {
    bool valid;
    int n, cap;
    loom_tensor **ts;
    char **names; /* each malloc'd */
} flat_list;

struct loom_module {
    loom_ctx *ctx;
    char *type;
    loom_forward_fn forward;
    void *user;
    void (*free_user)(void *user);
    bool training;
    bool eval_pinned;    /* frozen BatchNorm: stays in evaluation mode (loom_module_freeze) */
    loom_module *parent; /* NULL for a top-level module */

    named_tensor *params;
    int n_params, cap_params;
    named_tensor *buffers;
    int n_buffers, cap_buffers;
    named_child *children;
    int n_children, cap_children;

    flat_list flat_params; /* loom_module_parameters */
    flat_list flat_state;  /* loom_module_state */
};

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Grows *arr (of *cap elements of `size` bytes) to hold one more than n. */
static bool grow(void **arr, int *cap, int n, size_t size)
{
    if (n < *cap) return true;
    int ncap = *cap ? *cap * 2 : 4;
    void *g = realloc(*arr, size * (size_t)ncap);
    if (!g) return false;
    *arr = g;
    *cap = ncap;
    return true;
}

static void flat_clear(flat_list *f)
{
    for (int i = 0; i < f->n; i++) free(f->names[i]);
    f->n = 0;
    f->valid = false;
}

static void flat_free(flat_list *f)
{
    flat_clear(f);
    free(f->ts);
    free(f->names);
    f->ts = NULL;
    f->names = NULL;
    f->cap = 0;
}

/* Something changed in m's subtree: every cache from m up is stale. */
static void invalidate(loom_module *m)
{
    for (; m; m = m->parent) {
        flat_clear(&m->flat_params);
        flat_clear(&m->flat_state);
    }
}

/* ---- creation and destruction ------------------------------------------- */

loom_module *loom_module_create(loom_ctx *ctx, const char *type, loom_forward_fn forward, void *user,
                                void (*free_user)(void *user))
{
    if (!ctx) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "module_create: context is NULL");
        return NULL;
    }
    loom_module *m = calloc(1, sizeof *m);
    char *ty = dup_str(type ? type : "Module");
    if (!m || !ty) {
        free(m);
        free(ty);
        loom__set_error(LOOM_ERR_NOMEM, "module_create: out of memory");
        return NULL;
    }
    m->ctx = ctx;
    m->type = ty;
    m->forward = forward;
    m->user = user;
    m->free_user = free_user;
    m->training = true; /* PyTorch modules start in training mode */
    return m;
}

/* Removes child c from its parent's list (c itself is not freed). */
static void unlink_from_parent(loom_module *c)
{
    loom_module *p = c->parent;
    if (!p) return;
    for (int i = 0; i < p->n_children; i++) {
        if (p->children[i].m != c) continue;
        free(p->children[i].name);
        memmove(&p->children[i], &p->children[i + 1], sizeof *p->children * (size_t)(p->n_children - i - 1));
        p->n_children--;
        break;
    }
    invalidate(p);
    c->parent = NULL;
}

void loom_module_free(loom_module *m)
{
    if (!m) return;
    /* Freeing a child directly: its parent forgets it, rather than keep a
     * dangling pointer. */
    unlink_from_parent(m);
    for (int i = 0; i < m->n_children; i++) {
        m->children[i].m->parent = NULL; /* so that it does not unlink itself */
        loom_module_free(m->children[i].m);
        free(m->children[i].name);
    }
    for (int i = 0; i < m->n_params; i++) {
        loom_tensor_free(m->params[i].t);
        free(m->params[i].name);
    }
    for (int i = 0; i < m->n_buffers; i++) {
        loom_tensor_free(m->buffers[i].t);
        free(m->buffers[i].name);
    }
    free(m->children);
    free(m->params);
    free(m->buffers);
    flat_free(&m->flat_params);
    flat_free(&m->flat_state);
    if (m->free_user) m->free_user(m->user);
    free(m->type);
    free(m);
}

/* ---- registration --------------------------------------------------------- */

/* The entry of m called `name` of any kind: 'p'arameter, 'b'uffer,
 * 'c'hild, or 0 if there is none. */
static char kind_of(const loom_module *m, const char *name, int *index)
{
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) return *index = i, 'p';
    for (int i = 0; i < m->n_buffers; i++)
        if (!strcmp(m->buffers[i].name, name)) return *index = i, 'b';
    for (int i = 0; i < m->n_children; i++)
        if (!strcmp(m->children[i].name, name)) return *index = i, 'c';
    return 0;
}

static const char *kind_name(char k) { return k == 'p' ? "parameter" : k == 'b' ? "buffer" : "child module"; }

/* A name must be non-empty, free of '.', and new in m (PyTorch's rules). */
static loom_status check_name(const char *op, const loom_module *m, const char *name)
{
    if (!name || !*name) return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: the name is empty", op);
    if (strchr(name, '.'))
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: name \"%s\" contains '.' (dots separate submodules)", op,
                               name);
    int i;
    char k = kind_of(m, name, &i);
    if (k)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: %s already has a %s called \"%s\"", op, m->type,
                               kind_name(k), name);
    return LOOM_OK;
}

static loom_status add_tensor(loom_module *m, const char *name, loom_tensor *t, bool param)
{
    const char *op = param ? "module_add_parameter" : "module_add_buffer";
    if (!m) return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: module is NULL", op);
    if (!loom__nn_present(op, "tensor", t)) return loom_last_status();
    loom_status st = check_name(op, m, name);
    if (st != LOOM_OK) return st;
    if (loom_tensor_ctx(t) != m->ctx)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: tensor \"%s\" belongs to another context than the module",
                               op, name);
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].t == t)
            return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: this tensor is already parameter \"%s\"", op,
                                   m->params[i].name);
    for (int i = 0; i < m->n_buffers; i++)
        if (m->buffers[i].t == t)
            return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: this tensor is already buffer \"%s\"", op,
                                   m->buffers[i].name);
    if (param && loom_tensor_dtype(t) != LOOM_FLOAT32)
        return loom__set_error(LOOM_ERR_DTYPE, "%s: parameter \"%s\" must be float32 to require grad, got %s", op,
                               name, loom_dtype_name(loom_tensor_dtype(t)));
    if (param && !loom_tensor_is_leaf(t))
        return loom__set_error(LOOM_ERR_STATE,
                               "%s: parameter \"%s\" was computed from tensors that require grad; register a leaf "
                               "(loom_detach it first)",
                               op, name);

    named_tensor **arr = param ? &m->params : &m->buffers;
    int *n = param ? &m->n_params : &m->n_buffers;
    int *cap = param ? &m->cap_params : &m->cap_buffers;
    char *copy = dup_str(name);
    if (!copy || !grow((void **)arr, cap, *n, sizeof **arr)) {
        free(copy);
        return loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory", op);
    }
    /* Parameters are updated in place by optimizers (loom_tensor_assign),
     * which needs computed values: compute them now, which also reports a
     * failed computation here rather than at the first forward. */
    st = loom_tensor_eval(t);
    if (st == LOOM_OK && param) st = loom_tensor_set_requires_grad(t, true);
    if (st != LOOM_OK) {
        free(copy);
        return st;
    }
    loom_scope_detach(t);
    (*arr)[(*n)++] = (named_tensor){copy, t};
    invalidate(m);
    return LOOM_OK;
}

loom_status loom_module_add_parameter(loom_module *m, const char *name, loom_tensor *t)
{
    return add_tensor(m, name, t, true);
}

loom_status loom_module_add_buffer(loom_module *m, const char *name, loom_tensor *t)
{
    return add_tensor(m, name, t, false);
}

loom_status loom_module_add_child(loom_module *m, const char *name, loom_module *child)
{
    const char *op = "module_add_child";
    loom_status st;
    if (!child) {
        if (loom_last_status() != LOOM_OK) return loom_last_status();
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: child is NULL", op);
    }
    /* Cases where child must not be freed: it belongs elsewhere. */
    for (loom_module *a = m; a; a = a->parent)
        if (a == child)
            return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: a module cannot be its own descendant", op);
    if (child->parent)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: the %s is already a child of a %s", op, child->type,
                               child->parent->type);
    /* Otherwise m owns child from here on, even if adding it fails. */
    if (!m) {
        st = loom__set_error(LOOM_ERR_INVALID_ARG, "%s: module is NULL", op);
        goto fail;
    }
    if ((st = check_name(op, m, name)) != LOOM_OK) goto fail;
    if (child->ctx != m->ctx) {
        st = loom__set_error(LOOM_ERR_INVALID_ARG, "%s: child \"%s\" belongs to another context", op, name);
        goto fail;
    }
    char *copy = dup_str(name);
    if (!copy || !grow((void **)&m->children, &m->cap_children, m->n_children, sizeof *m->children)) {
        free(copy);
        st = loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory", op);
        goto fail;
    }
    m->children[m->n_children++] = (named_child){copy, child};
    child->parent = m;
    invalidate(m);
    return LOOM_OK;
fail:
    loom_module_free(child);
    return st;
}

/* ---- queries -------------------------------------------------------------- */

const char *loom_module_type(const loom_module *m) { return m ? m->type : NULL; }
loom_ctx *loom_module_ctx(const loom_module *m) { return m ? m->ctx : NULL; }

void loom_module_train(loom_module *m, bool training)
{
    if (!m) return;
    m->training = training && !m->eval_pinned;
    for (int i = 0; i < m->n_children; i++) loom_module_train(m->children[i].m, training);
}

bool loom_module_is_training(const loom_module *m) { return m && m->training; }

/* The direct child called name[0..len). */
static loom_module *child_n(loom_module *m, const char *name, size_t len)
{
    for (int i = 0; i < m->n_children; i++)
        if (strlen(m->children[i].name) == len && !strncmp(m->children[i].name, name, len)) return m->children[i].m;
    return NULL;
}

/* Follows the dotted path's submodule part: returns the module that holds
 * the last component and points *last at it; NULL if a submodule is
 * missing. */
static loom_module *walk(loom_module *m, const char *path, const char **last)
{
    const char *dot;
    while ((dot = strchr(path, '.'))) {
        m = child_n(m, path, (size_t)(dot - path));
        if (!m) return NULL;
        path = dot + 1;
    }
    *last = path;
    return m;
}

loom_module *loom_module_child(loom_module *m, const char *name)
{
    if (!m || !name) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "module_child: %s is NULL", m ? "name" : "module");
        return NULL;
    }
    const char *last;
    loom_module *holder = walk(m, name, &last);
    loom_module *c = holder ? child_n(holder, last, strlen(last)) : NULL;
    if (!c) loom__set_error(LOOM_ERR_INVALID_ARG, "module_child: %s has no submodule \"%s\"", m->type, name);
    return c;
}

loom_tensor *loom_module_get(loom_module *m, const char *name)
{
    if (!m || !name) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "module_get: %s is NULL", m ? "name" : "module");
        return NULL;
    }
    const char *last;
    loom_module *holder = walk(m, name, &last);
    int i;
    char k = holder ? kind_of(holder, last, &i) : 0;
    if (k == 'p') return holder->params[i].t;
    if (k == 'b') return holder->buffers[i].t;
    loom__set_error(LOOM_ERR_INVALID_ARG, "module_get: %s has no parameter or buffer \"%s\"", m->type, name);
    return NULL;
}

/* ---- flattening: named_parameters() / state_dict() order ----------------- */

static bool flat_push(flat_list *f, const char *prefix, const char *name, loom_tensor *t)
{
    if (f->n == f->cap) {
        int ncap = f->cap ? f->cap * 2 : 8;
        loom_tensor **ts = realloc(f->ts, sizeof *ts * (size_t)ncap);
        if (!ts) return false;
        f->ts = ts;
        char **names = realloc(f->names, sizeof *names * (size_t)ncap);
        if (!names) return false;
        f->names = names;
        f->cap = ncap;
    }
    size_t lp = strlen(prefix), ln = strlen(name);
    char *full = malloc(lp + ln + 1);
    if (!full) return false;
    memcpy(full, prefix, lp);
    memcpy(full + lp, name, ln + 1);
    f->ts[f->n] = t;
    f->names[f->n] = full;
    f->n++;
    return true;
}

/* PyTorch's order: m's own parameters (then its buffers), then each child
 * in registration order, recursively, under "<prefix><child>.". */
static bool flat_collect(flat_list *f, const loom_module *m, const char *prefix, bool buffers)
{
    for (int i = 0; i < m->n_params; i++)
        if (!flat_push(f, prefix, m->params[i].name, m->params[i].t)) return false;
    for (int i = 0; buffers && i < m->n_buffers; i++)
        if (!flat_push(f, prefix, m->buffers[i].name, m->buffers[i].t)) return false;
    for (int i = 0; i < m->n_children; i++) {
        size_t lp = strlen(prefix), ln = strlen(m->children[i].name);
        char *sub = malloc(lp + ln + 2);
        if (!sub) return false;
        memcpy(sub, prefix, lp);
        memcpy(sub + lp, m->children[i].name, ln);
        sub[lp + ln] = '.';
        sub[lp + ln + 1] = '\0';
        bool ok = flat_collect(f, m->children[i].m, sub, buffers);
        free(sub);
        if (!ok) return false;
    }
    return true;
}

static int flat_query(const char *op, loom_module *m, bool buffers, loom_tensor **ts, const char **names, int cap)
{
    if (!m) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: module is NULL", op);
        return -1;
    }
    flat_list *f = buffers ? &m->flat_state : &m->flat_params;
    if (!f->valid) {
        flat_clear(f);
        if (!flat_collect(f, m, "", buffers)) {
            flat_clear(f);
            loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory", op);
            return -1;
        }
        f->valid = true;
    }
    for (int i = 0; i < f->n && i < cap; i++) {
        if (ts) ts[i] = f->ts[i];
        if (names) names[i] = f->names[i];
    }
    return f->n;
}

int loom_module_parameters(loom_module *m, loom_tensor **params, const char **names, int cap)
{
    return flat_query("module_parameters", m, false, params, names, cap);
}

int loom_module_state(loom_module *m, loom_tensor **tensors, const char **names, int cap)
{
    return flat_query("module_state", m, true, tensors, names, cap);
}

/* ---- replacing and freezing ------------------------------------------------ */

loom_status loom_module_replace_child(loom_module *m, const char *path, loom_module *child)
{
    const char *op = "module_replace_child";
    if (!child) {
        if (loom_last_status() != LOOM_OK) return loom_last_status();
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: child is NULL", op);
    }
    for (loom_module *a = m; a; a = a->parent)
        if (a == child) return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: a module cannot be its own descendant", op);
    if (child->parent)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: the %s is already a child of a %s", op, child->type,
                               child->parent->type);
    loom_status st;
    const char *last = NULL;
    loom_module *p = m && path ? walk(m, path, &last) : NULL;
    int at = -1;
    for (int i = 0; p && i < p->n_children; i++)
        if (!strcmp(p->children[i].name, last)) at = i;
    if (at < 0) {
        st = loom__set_error(LOOM_ERR_INVALID_ARG, "%s: %s has no submodule \"%s\"", op, m ? m->type : "(null)",
                             path ? path : "(null)");
        goto fail;
    }
    if (child->ctx != p->ctx) {
        st = loom__set_error(LOOM_ERR_INVALID_ARG, "%s: the new \"%s\" belongs to another context", op, path);
        goto fail;
    }
    loom_module *old = p->children[at].m;
    p->children[at].m = child;
    child->parent = p;
    old->parent = NULL;
    loom_module_free(old);
    loom_module_train(child, p->training);
    invalidate(p);
    return LOOM_OK;
fail:
    loom_module_free(child);
    return st;
}

/* True if the dotted name is prefix or lies below it ("layer4" covers
 * "layer4.0.conv1.weight", not "layer40.x"); an empty prefix covers all. */
static bool under(const char *name, const char *prefix)
{
    size_t n = strlen(prefix);
    return n == 0 || (!strncmp(name, prefix, n) && (name[n] == '\0' || name[n] == '.'));
}

/* Pins (or unpins) the BatchNorm2d modules at or below `path` that lie
 * under prefix. */
static void pin_batch_norms(loom_module *m, char *path, size_t len, size_t cap, const char *prefix, bool pin)
{
    if (!strcmp(m->type, "BatchNorm2d") && under(path, prefix)) {
        m->eval_pinned = pin;
        if (pin) m->training = false;
        else if (m->parent) m->training = m->parent->training;
    }
    for (int i = 0; i < m->n_children; i++) {
        int w = snprintf(path + len, cap - len, "%s%s", len ? "." : "", m->children[i].name);
        if (w < 0 || len + (size_t)w >= cap) continue;
        pin_batch_norms(m->children[i].m, path, len + (size_t)w, cap, prefix, pin);
        path[len] = '\0';
    }
}

int loom_module_freeze(loom_module *m, const char *prefix, bool frozen)
{
    if (!m) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "module_freeze: module is NULL");
        return -1;
    }
    if (!prefix) prefix = "";
    int n = loom_module_parameters(m, NULL, NULL, 0);
    if (n < 0) return -1;
    loom_tensor **ts = malloc(sizeof *ts * (size_t)(n ? n : 1));
    const char **names = malloc(sizeof *names * (size_t)(n ? n : 1));
    if (!ts || !names) {
        free(ts);
        free(names);
        loom__set_error(LOOM_ERR_NOMEM, "module_freeze: out of memory");
        return -1;
    }
    loom_module_parameters(m, ts, names, n);
    int changed = 0;
    for (int i = 0; i < n; i++) {
        if (!under(names[i], prefix) || loom_tensor_requires_grad(ts[i]) == !frozen) continue;
        loom_tensor_set_requires_grad(ts[i], !frozen);
        changed++;
    }
    free(ts);
    free(names);
    char path[1024] = "";
    pin_batch_norms(m, path, 0, sizeof path, prefix, frozen);
    return changed;
}

int loom_module_trainable_parameters(loom_module *m, loom_tensor **params, const char **names, int cap)
{
    int n = loom_module_parameters(m, NULL, NULL, 0);
    if (n < 0) return -1;
    loom_tensor **ts = malloc(sizeof *ts * (size_t)(n ? n : 1));
    const char **nm = malloc(sizeof *nm * (size_t)(n ? n : 1));
    if (!ts || !nm) {
        free(ts);
        free(nm);
        loom__set_error(LOOM_ERR_NOMEM, "module_trainable_parameters: out of memory");
        return -1;
    }
    loom_module_parameters(m, ts, nm, n);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!loom_tensor_requires_grad(ts[i])) continue;
        if (k < cap && params) params[k] = ts[i];
        if (k < cap && names) names[k] = nm[i];
        k++;
    }
    free(ts);
    free(nm);
    return k;
}

/* ---- forward and Sequential ---------------------------------------------- */

loom_tensor *loom_module_forward(loom_module *m, loom_tensor *x)
{
    if (!m) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "module_forward: module is NULL");
        return NULL;
    }
    if (!loom__nn_present("module_forward", "input", x)) return NULL;
    if (!m->forward) {
        loom__set_error(LOOM_ERR_STATE, "module_forward: %s has no forward function", m->type);
        return NULL;
    }
    return m->forward(m, x, m->user);
}

loom_tensor *loom_module_forward_relu(loom_module *m, loom_tensor *x)
{
    if (!m) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "module_forward_relu: module is NULL");
        return NULL;
    }
    if (!loom__nn_present("module_forward_relu", "input", x)) return NULL;
    if (strcmp(m->type, "Conv2d") == 0) return loom__nn_conv2d_relu_forward(m, x);
    if (strcmp(m->type, "BatchNorm2d") == 0) return loom__nn_batch_norm2d_relu_forward(m, x);
    loom_tensor *h = loom_module_forward(m, x);
    if (!h) return NULL;
    loom_tensor *y = loom_relu(h);
    if (h != x) loom_tensor_free(h);
    return y;
}

void *loom__nn_module_user(loom_module *m) { return m->user; }

/* Chains the children; intermediate handles are freed as soon as the next
 * child has recorded its ops (the graph keeps what backward needs). */
static loom_tensor *sequential_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)user;
    if (m->n_children == 0) return loom_alias(x);
    loom_tensor *cur = x;
    for (int i = 0; i < m->n_children; i++) {
        loom_module *c = m->children[i].m;
        loom_tensor *next;
        if (i + 1 < m->n_children && strcmp(m->children[i + 1].m->type, "ReLU") == 0) {
            /* A module + ReLU: loom_module_forward_relu fuses the ReLU
             * into the module's node where it can (Conv2d, BatchNorm2d). */
            next = loom_module_forward_relu(c, cur);
            i++;
        } else {
            next = loom_module_forward(c, cur);
        }
        /* A forward that returned its input as is must not lose it. */
        if (cur != x && next != cur) loom_tensor_free(cur);
        if (!next) return NULL;
        cur = next;
    }
    return cur;
}

/* Frees modules[from..n) that nobody else owns: not NULL, not a child of
 * another module, and not listed earlier. The decisions are all taken
 * before anything is freed, since freeing a module frees its children,
 * which might be listed too. */
static void free_unowned(loom_module *const *modules, int from, int n)
{
    if (from >= n) return;
    bool *own = malloc((size_t)(n - from));
    if (!own) return; /* out of memory while already failing: leak rather than risk a double free */
    for (int k = from; k < n; k++) {
        own[k - from] = modules[k] && !modules[k]->parent;
        for (int j = from; j < k && own[k - from]; j++) own[k - from] = modules[j] != modules[k];
    }
    for (int k = from; k < n; k++)
        if (own[k - from]) loom_module_free(modules[k]);
    free(own);
}

loom_module *loom_sequential(loom_ctx *ctx, int n, loom_module *const *modules)
{
    if (n < 0 || (n > 0 && !modules)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "sequential: expected n >= 0 modules, got %d%s", n,
                        n > 0 ? " and a NULL array" : "");
        return NULL;
    }
    /* Check every entry first, so that a bad one leaves nothing half built. */
    bool ok = true;
    for (int k = 0; k < n && ok; k++) {
        if (!modules[k]) {
            if (loom_last_status() == LOOM_OK)
                loom__set_error(LOOM_ERR_INVALID_ARG, "sequential: module %d is NULL", k);
            ok = false;
        } else if (modules[k]->parent) {
            loom__set_error(LOOM_ERR_INVALID_ARG, "sequential: module %d (a %s) already belongs to a %s", k,
                            modules[k]->type, modules[k]->parent->type);
            ok = false;
        } else if (ctx && modules[k]->ctx != ctx) {
            loom__set_error(LOOM_ERR_INVALID_ARG, "sequential: module %d belongs to another context", k);
            ok = false;
        }
        for (int j = 0; j < k && ok; j++) {
            if (modules[j] == modules[k]) {
                loom__set_error(LOOM_ERR_INVALID_ARG, "sequential: module %d is also module %d", k, j);
                ok = false;
            }
        }
    }
    loom_module *seq = ok ? loom_module_create(ctx, "Sequential", sequential_forward, NULL, NULL) : NULL;
    int i = 0;
    for (; seq && i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "%d", i);
        /* add_child frees modules[i] itself when it fails. */
        if (loom_module_add_child(seq, name, modules[i]) != LOOM_OK) {
            i++;
            loom_module_free(seq);
            seq = NULL;
            break;
        }
    }
    if (!seq) free_unowned(modules, i, n);
    return seq;
}
