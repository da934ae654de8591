/*
 * graph/capture.c - capturing a step and replaying it (loom/graph.h).
 *
 * Capture. While ctx->capture is set, the step runs as always, and:
 *   - each evaluation (loom__eval, loom__eval_many) becomes a *segment*:
 *     the nodes it runs, in the walk's order, with the walk's edges;
 *   - each node records the kernel call it made (graph/eval.c hands over
 *     its resolved loom__exec): kernel, attributes, views, conversions;
 *   - host-side writes between evaluations become *actions* too: the
 *     copies of loom_tensor_assign, the in-place layout conversions of
 *     user reads, and the fills of rand/randn/randint (each replay fills
 *     again at the random stream's offset of that replay);
 *   - every storage touched is held (a reference) and known by its uid,
 *     with every access: which action, which node, read or write.
 * Segments and host actions form one list, replayed in order.
 *
 * Planning (at capture end). A storage is
 *   - a *temporary* if it was made during the step, written first by a
 *     node, and nobody but the capture holds it at the end: it gets a
 *     planned buffer (a slot), shared with other temporaries;
 *   - *held* otherwise (inputs, parameters, optimizer state, outputs still
 *     alive, constants made during the step): the graph keeps it, and a
 *     replay reads and writes it where it is.
 * Two temporaries share a slot only if every access to the first *happens
 * before* the write of the second: in an earlier action, or in the same
 * segment by a node that is an ancestor of the writer in the DAG. A single
 * serial order would not do: the scheduler runs nodes that are not ordered
 * by the DAG at the same time (XLA's DependencyHloOrdering makes the same
 * pessimistic choice). It is enough to check the slot's last occupant:
 * its accesses happen after its own write, which came after every access
 * to the occupants before it.
 *
 * Replay. Copies the carried state forward (loom__capture_carry), then
 * runs the actions: each segment on the work-stealing pool with its
 * in-degrees reset (or serially, as the eager evaluation would), each node
 * through loom__exec_run with views resolved against the slots and held
 * storages. Nothing is allocated: node scratch (views, conversion slots)
 * lives in the graph, and conversion copies come from the context's block
 * cache.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/registry.h"
#include "graph/capture.h"
#include "loom/graph.h"
#include "loom/tensor.h"
#include "runtime/error.h"
#include "runtime/pool.h"

typedef struct cbuf {
    loom__storage *s; /* held while capturing; after planning only when slot < 0 */
    uint64_t uid;
    size_t nbytes;
    bool external; /* made before the capture */
    bool alive;    /* someone besides the capture held it at the end */
    bool written;  /* a replay writes it (node output or copy target) */
    int slot;      /* planned slot, or -1: held */
    int64_t acc_begin, acc_end; /* its accesses, after sorting */
} cbuf;

typedef struct cacc {
    int32_t buf;
    int32_t action;
    int64_t node; /* within the action's segment; -1 for host actions */
    bool write;
} cacc;

typedef struct cin {
    int32_t buf;
    int64_t off; /* bytes from the storage's data to the view's first element */
    loom__tview v;
    loom__conv conv;
} cin;

typedef struct cnode {
    loom__dag_node d; /* first: the pool's tasks point here */
    bool recorded;
    bool run; /* has a kernel call */
    bool may_block; /* the kernel may write its output blocked */
    bool has_conv;
    loom__attrs attrs;
    loom__op op;
    const loom__kernel *k;
    const char *bname;
    int n_in;
    int want;
    cin *in;
    int32_t out_buf;
    int64_t out_off;
    loom__tview out;
    int indeg;
    /* Replay scratch: one node runs once per replay, so these are its own. */
    loom__tview *views;
    loom__conv *convs;
    void **tmp;
} cnode;

typedef struct cseg {
    int64_t n;
    cnode *nodes;
    int64_t *succ;
    void **roots;
    int64_t nroots;
    uint64_t *anc; /* planning: ancestor bitsets, words per node; NULL: unknown */
    int64_t words;
} cseg;

enum { ACT_SEGMENT, ACT_COPY, ACT_PLAIN, ACT_RAND };

typedef struct cact {
    int kind;
    int64_t seg;           /* ACT_SEGMENT */
    int32_t src, dst;      /* ACT_COPY: buffers; ACT_PLAIN: dst */
    int64_t src_off, dst_off;
    loom_dtype dtype;
    int ndim;
    int64_t shape[LOOM_MAX_DIMS], strides[LOOM_MAX_DIMS]; /* the destination's */
    int layout; /* ACT_PLAIN: the layout converted from */
    int64_t dims[4];
    /* ACT_RAND: fill dst (dst_off, shape[0] values) of kind rand_kind at
     * rand_rel blocks past the context's offset of the replay's start. */
    loom__rand_fill_fn fill;
    int rand_kind;
    uint64_t rand_rel;
    int64_t low, high;
} cact;

typedef struct ccarry {
    int32_t src, dst;
    int64_t src_off, dst_off;
    size_t nbytes;
} ccarry;

struct loom__capture {
    loom_ctx *ctx;
    uint64_t uid0, rng0;
    uint64_t rng_drawn; /* blocks drawn by recorded fills */
    pthread_mutex_t lock; /* bufs, hash and accs: nodes record from workers */
    cbuf *bufs;
    int32_t nbufs, cap_bufs;
    int32_t *hash; /* uid -> buf + 1, open addressing */
    int64_t hcap;
    cacc *accs;
    int64_t naccs, cap_accs;
    cseg *segs;
    int64_t nsegs, cap_segs;
    cact *acts;
    int64_t nacts, cap_acts;
    ccarry *carries;
    int64_t ncarries, cap_carries;
    bool failed;
    loom_status fail_st;
    char fail_msg[256];
};

struct loom_graph {
    loom__capture c;
    void **slots;
    size_t *slot_bytes;
    int *slot_domain; /* the memory domain (NUMA node) of each slot */
    int nslots;
    loom_graph_stats stats;
};

/* ---- recording ---------------------------------------------------------- */

static bool grow(void **p, int64_t *cap, int64_t need, size_t elem)
{
    if (need <= *cap) return true;
    int64_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static void set_failed(loom__capture *cap, loom_status st, const char *msg)
{
    if (cap->failed) return;
    cap->failed = true;
    cap->fail_st = st;
    snprintf(cap->fail_msg, sizeof cap->fail_msg, "%s", msg);
}

static int64_t hash_slot(const loom__capture *cap, uint64_t uid)
{
    uint64_t h = uid * 0x9E3779B97F4A7C15ull;
    return (int64_t)(h >> 20) & (cap->hcap - 1);
}

/* The buffer of storage s, registered (and held) on first sight; -1 when
 * out of memory. Caller holds cap->lock. */
static int32_t buf_of(loom__capture *cap, loom__storage *s)
{
    if (cap->hcap) {
        for (int64_t h = hash_slot(cap, s->uid);; h = (h + 1) & (cap->hcap - 1)) {
            int32_t b = cap->hash[h];
            if (!b) break;
            if (cap->bufs[b - 1].uid == s->uid) return b - 1;
        }
    }
    if (2 * (int64_t)(cap->nbufs + 1) > cap->hcap) {
        int64_t nc = cap->hcap ? cap->hcap * 2 : 256;
        int32_t *nh = calloc((size_t)nc, sizeof *nh);
        if (!nh) return -1;
        free(cap->hash);
        cap->hash = nh;
        cap->hcap = nc;
        for (int32_t b = 0; b < cap->nbufs; b++) {
            int64_t h = hash_slot(cap, cap->bufs[b].uid);
            while (cap->hash[h]) h = (h + 1) & (cap->hcap - 1);
            cap->hash[h] = b + 1;
        }
    }
    int64_t cb = cap->cap_bufs;
    if (!grow((void **)&cap->bufs, &cb, cap->nbufs + 1, sizeof *cap->bufs)) return -1;
    cap->cap_bufs = (int32_t)cb;
    int32_t b = cap->nbufs++;
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    cap->bufs[b] = (cbuf){.s = s, .uid = s->uid, .nbytes = s->nbytes, .external = s->uid <= cap->uid0, .slot = -1};
    int64_t h = hash_slot(cap, s->uid);
    while (cap->hash[h]) h = (h + 1) & (cap->hcap - 1);
    cap->hash[h] = b + 1;
    return b;
}

static bool add_access(loom__capture *cap, int32_t buf, int64_t node, bool write)
{
    if (!grow((void **)&cap->accs, &cap->cap_accs, cap->naccs + 1, sizeof *cap->accs)) return false;
    cap->accs[cap->naccs++] = (cacc){.buf = buf, .action = (int32_t)(cap->nacts - 1), .node = node, .write = write};
    return true;
}

static cact *new_action(loom__capture *cap, int kind)
{
    if (!grow((void **)&cap->acts, &cap->cap_acts, cap->nacts + 1, sizeof *cap->acts)) {
        set_failed(cap, LOOM_ERR_NOMEM, "capture: out of memory");
        return NULL;
    }
    cact *a = &cap->acts[cap->nacts++];
    memset(a, 0, sizeof *a);
    a->kind = kind;
    return a;
}

loom_status loom__capture_segment(loom__capture *cap, loom_tensor **order, size_t n, uint64_t epoch)
{
    if (!grow((void **)&cap->segs, &cap->cap_segs, cap->nsegs + 1, sizeof *cap->segs)) goto nomem;
    cseg *sg = &cap->segs[cap->nsegs];
    memset(sg, 0, sizeof *sg);
    sg->n = (int64_t)n;
    sg->nodes = calloc(n, sizeof *sg->nodes);
    int64_t *off = malloc(sizeof *off * (n + 1));
    int *indeg = malloc(sizeof *indeg * n);
    bool *alone = malloc(sizeof *alone * (n ? n : 1));
    if (!sg->nodes || !off || !indeg || !alone || loom__order_edges(order, n, epoch, indeg, off, &sg->succ) != LOOM_OK ||
        !loom__dag_alone(n, off, sg->succ, alone)) {
        free(sg->nodes);
        free(sg->succ);
        free(off);
        free(indeg);
        free(alone);
        goto nomem;
    }
    for (size_t i = 0; i < n; i++) {
        cnode *c = &sg->nodes[i];
        c->d.succ_begin = off[i];
        c->d.succ_end = off[i + 1];
        c->indeg = indeg[i];
        /* As the eager run plans it (graph/exec.c, loom__dag_alone). */
        c->want = loom__node_want_alone(order[i], cap->ctx->num_threads, alone[i]);
        c->d.wide = c->want > 1;
        c->out_buf = -1;
    }
    free(off);
    free(indeg);
    free(alone);
    cap->nsegs++;
    cact *a = new_action(cap, ACT_SEGMENT);
    if (!a) goto nomem_seg;
    a->seg = cap->nsegs - 1;
    return LOOM_OK;
nomem_seg:
    cap->nsegs--;
    free(sg->nodes);
    free(sg->succ);
nomem:
    set_failed(cap, LOOM_ERR_NOMEM, "capture: out of memory recording an evaluation");
    return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory recording an evaluation");
}

void loom__capture_failed(loom__capture *cap)
{
    char msg[256];
    snprintf(msg, sizeof msg, "capture: the step failed while it was captured: %s", loom_last_error());
    set_failed(cap, loom_last_status() != LOOM_OK ? loom_last_status() : LOOM_ERR_STATE, msg);
}

loom_status loom__capture_node(loom__capture *cap, loom_tensor *t, const loom__exec *x)
{
    cseg *sg = &cap->segs[cap->nsegs - 1];
    const int64_t idx = t->exec_idx;
    if (idx < 0 || idx >= sg->n) return loom__set_error(LOOM_ERR_STATE, "capture: a node ran outside its evaluation");
    cnode *c = &sg->nodes[idx];
    if (t->node.op == LOOM_OP_HOST_CALL) {
        set_failed(cap, LOOM_ERR_STATE, "capture: the step makes host calls (dist/'s gradient all-reduce), "
                                              "which a replay cannot repeat");
        return loom__set_error(LOOM_ERR_STATE, "%s", cap->fail_msg);
    }
    c->op = t->node.op;
    c->recorded = true;
    if (!x) return LOOM_OK; /* a view or an empty tensor: nothing runs */
    const int n = x->call.n_in;
    c->run = true;
    c->attrs = t->node.attrs;
    c->k = x->k;
    c->bname = x->bname;
    c->n_in = n;
    c->may_block = x->call.out_layout != NULL;
    c->has_conv = x->conv != NULL;
    c->in = calloc((size_t)(n ? n : 1), sizeof *c->in);
    c->views = calloc((size_t)(n ? n : 1), sizeof *c->views);
    c->convs = calloc((size_t)(n ? n : 1), sizeof *c->convs);
    c->tmp = calloc((size_t)(n ? n : 1), sizeof *c->tmp);
    if (!c->in || !c->views || !c->convs || !c->tmp) goto nomem;
    c->out = x->call.out;
    c->out.data = NULL;
    c->out_off = t->offset * loom_dtype_size(t->dtype);
    pthread_mutex_lock(&cap->lock);
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        const loom_tensor *in = t->node.in[i];
        cin *r = &c->in[i];
        r->v = x->call.in[i];
        r->v.data = NULL;
        r->off = in->offset * loom_dtype_size(in->dtype);
        r->conv = x->conv ? x->conv[i] : (loom__conv){.kind = LOOM__CONV_NONE};
        r->conv.base = NULL;
        if (r->conv.kind == LOOM__CONV_TO_BLOCKED) r->v.layout = LOOM__LAYOUT_PLAIN; /* as stored */
        if (r->conv.kind == LOOM__CONV_TO_PLAIN) r->v.layout = r->conv.layout;
        r->buf = buf_of(cap, in->storage);
        ok = r->buf >= 0 && add_access(cap, r->buf, idx, false);
    }
    if (ok) {
        c->out_buf = buf_of(cap, t->storage);
        ok = c->out_buf >= 0 && add_access(cap, c->out_buf, idx, true);
        if (ok) cap->bufs[c->out_buf].written = true;
    }
    pthread_mutex_unlock(&cap->lock);
    if (ok) return LOOM_OK;
nomem:
    set_failed(cap, LOOM_ERR_NOMEM, "capture: out of memory recording a node");
    return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory recording a node");
}

loom_status loom__capture_copy(loom_ctx *ctx, const loom_tensor *src, const loom_tensor *dst)
{
    loom__capture *cap = ctx->capture;
    if (!cap) return LOOM_OK;
    cact *a = new_action(cap, ACT_COPY);
    if (!a) return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory");
    a->src = buf_of(cap, src->storage);
    a->dst = buf_of(cap, dst->storage);
    if (a->src < 0 || a->dst < 0 || !add_access(cap, a->src, -1, false) || !add_access(cap, a->dst, -1, true)) {
        set_failed(cap, LOOM_ERR_NOMEM, "capture: out of memory");
        return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory");
    }
    cap->bufs[a->dst].written = true;
    a->src_off = src->offset * loom_dtype_size(src->dtype);
    a->dst_off = dst->offset * loom_dtype_size(dst->dtype);
    a->dtype = dst->dtype;
    a->ndim = dst->ndim;
    memcpy(a->shape, dst->shape, sizeof a->shape);
    memcpy(a->strides, dst->strides, sizeof a->strides);
    return LOOM_OK;
}

loom_status loom__capture_rand(loom_ctx *ctx, const loom_tensor *t, loom__rand_fill_fn fill, int kind, uint64_t base,
                               int64_t low, int64_t high)
{
    loom__capture *cap = ctx->capture;
    if (!cap) return LOOM_OK;
    cact *a = new_action(cap, ACT_RAND);
    if (!a) return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory");
    a->dst = buf_of(cap, t->storage);
    if (a->dst < 0 || !add_access(cap, a->dst, -1, true)) {
        set_failed(cap, LOOM_ERR_NOMEM, "capture: out of memory");
        return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory");
    }
    cap->bufs[a->dst].written = true;
    a->dst_off = t->offset * loom_dtype_size(t->dtype);
    a->shape[0] = loom__numel(t->ndim, t->shape);
    a->fill = fill;
    a->rand_kind = kind;
    a->rand_rel = base - cap->rng0;
    a->low = low;
    a->high = high;
    /* The blocks this fill used: the stream has moved past them already. */
    cap->rng_drawn += ctx->rng_offset - base;
    return LOOM_OK;
}

loom_status loom__capture_make_plain(loom_ctx *ctx, loom__storage *s)
{
    loom__capture *cap = ctx->capture;
    if (!cap || s->layout == LOOM__LAYOUT_PLAIN || !s->data) return LOOM_OK;
    cact *a = new_action(cap, ACT_PLAIN);
    if (!a) return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory");
    a->dst = buf_of(cap, s);
    if (a->dst < 0 || !add_access(cap, a->dst, -1, true)) {
        set_failed(cap, LOOM_ERR_NOMEM, "capture: out of memory");
        return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory");
    }
    a->layout = s->layout;
    memcpy(a->dims, s->dims, sizeof a->dims);
    return LOOM_OK;
}

loom_status loom__capture_carry(loom_ctx *ctx, const loom_tensor *old, const loom_tensor *now)
{
    loom__capture *cap = ctx->capture;
    if (!cap || !old || !now) return LOOM_OK;
    const size_t nbytes = (size_t)loom__numel(now->ndim, now->shape) * (size_t)loom_dtype_size(now->dtype);
    if (old->dtype != now->dtype || loom__numel(old->ndim, old->shape) != loom__numel(now->ndim, now->shape) ||
        !loom__is_contiguous(old->ndim, old->shape, old->strides) ||
        !loom__is_contiguous(now->ndim, now->shape, now->strides)) {
        set_failed(cap, LOOM_ERR_STATE, "capture: carried state must be contiguous and keep its size");
        return LOOM_OK;
    }
    if (!grow((void **)&cap->carries, &cap->cap_carries, cap->ncarries + 1, sizeof *cap->carries)) goto nomem;
    ccarry *c = &cap->carries[cap->ncarries];
    c->src = buf_of(cap, now->storage);
    c->dst = buf_of(cap, old->storage);
    if (c->src < 0 || c->dst < 0) goto nomem;
    c->src_off = now->offset * loom_dtype_size(now->dtype);
    c->dst_off = old->offset * loom_dtype_size(old->dtype);
    c->nbytes = nbytes;
    cap->ncarries++;
    return LOOM_OK;
nomem:
    set_failed(cap, LOOM_ERR_NOMEM, "capture: out of memory");
    return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory");
}

/* ---- begin / end -------------------------------------------------------- */

loom_status loom_graph_capture_begin(loom_ctx *ctx)
{
    if (!ctx) return loom__set_error(LOOM_ERR_INVALID_ARG, "graph_capture_begin: NULL context");
    if (ctx->capture) return loom__set_error(LOOM_ERR_STATE, "graph_capture_begin: a capture is already in progress");
    loom__capture *cap = calloc(1, sizeof *cap);
    if (!cap) return loom__set_error(LOOM_ERR_NOMEM, "graph_capture_begin: out of memory");
    if (pthread_mutex_init(&cap->lock, NULL) != 0) {
        free(cap);
        return loom__set_error(LOOM_ERR_NOMEM, "graph_capture_begin: cannot create a mutex");
    }
    cap->ctx = ctx;
    cap->uid0 = loom__storage_uid_last();
    cap->rng0 = ctx->rng_offset;
    ctx->capture = cap;
    return LOOM_OK;
}

static void capture_release(loom__capture *cap)
{
    for (int32_t b = 0; b < cap->nbufs; b++)
        if (cap->bufs[b].slot < 0 && cap->bufs[b].s) loom__storage_decref(cap->bufs[b].s);
    for (int64_t s = 0; s < cap->nsegs; s++) {
        cseg *sg = &cap->segs[s];
        for (int64_t i = 0; i < sg->n; i++) {
            cnode *c = &sg->nodes[i];
            free(c->in);
            free(c->views);
            free(c->convs);
            free(c->tmp);
        }
        free(sg->nodes);
        free(sg->succ);
        free(sg->roots);
        free(sg->anc);
    }
    free(cap->segs);
    free(cap->bufs);
    free(cap->hash);
    free(cap->accs);
    free(cap->acts);
    free(cap->carries);
    pthread_mutex_destroy(&cap->lock);
}

/* Whether access a happens before access b in every replay. */
static bool happens_before(loom__capture *cap, const cacc *a, const cacc *b)
{
    if (a->action != b->action) return a->action < b->action;
    if (a->node < 0 || b->node < 0 || a->node == b->node) return false;
    const cseg *sg = &cap->segs[cap->acts[a->action].seg];
    if (!sg->anc) return false;
    return (sg->anc[b->node * sg->words + a->node / 64] >> (a->node % 64)) & 1;
}

/* Ancestor bitsets of every segment that is not too large (above, its
 * temporaries simply do not share within it). */
#define ANC_MAX_BYTES ((int64_t)64 << 20)
static void build_ancestors(cseg *sg)
{
    sg->words = (sg->n + 63) / 64;
    if (sg->n * sg->words * 8 > ANC_MAX_BYTES) return;
    const int64_t nw = sg->n * sg->words;
    sg->anc = calloc((size_t)(nw > 0 ? nw : 1), sizeof *sg->anc);
    if (!sg->anc) return;
    /* Consumers come after their inputs in the walk's order. */
    for (int64_t i = 0; i < sg->n; i++) {
        const uint64_t *ai = &sg->anc[i * sg->words];
        for (int64_t k = sg->nodes[i].d.succ_begin; k < sg->nodes[i].d.succ_end; k++) {
            uint64_t *as = &sg->anc[sg->succ[k] * sg->words];
            for (int64_t w = 0; w < sg->words; w++) as[w] |= ai[w];
            as[i / 64] |= (uint64_t)1 << (i % 64);
        }
    }
}

static int cmp_acc(const void *pa, const void *pb)
{
    const cacc *a = pa, *b = pb;
    if (a->buf != b->buf) return a->buf < b->buf ? -1 : 1;
    if (a->action != b->action) return a->action < b->action ? -1 : 1;
    if (a->node != b->node) return a->node < b->node ? -1 : 1;
    return (int)b->write - (int)a->write; /* a node's write before its reads of the same buffer */
}

/* Byte range [lo, hi) a view of `buf` at offset off reads. */
static void view_range(const loom__tview *v, int64_t off, int64_t *lo, int64_t *hi)
{
    int64_t maxo = 0;
    for (int d = 0; d < v->ndim; d++)
        if (v->shape[d] > 0 && v->strides[d] > 0) maxo += (v->shape[d] - 1) * v->strides[d];
    *lo = off;
    *hi = off + (maxo + 1) * loom_dtype_size(v->dtype);
}

/* Checks the state the step replaced: a storage made before the capture,
 * read by it, and dropped by everyone at the end must have been carried
 * (its every read inside a carry's destination). */
static loom_status check_stale(loom__capture *cap)
{
    for (int64_t s = 0; s < cap->nsegs; s++) {
        const cseg *sg = &cap->segs[s];
        for (int64_t i = 0; i < sg->n; i++) {
            const cnode *c = &sg->nodes[i];
            for (int k = 0; k < c->n_in; k++) {
                const cbuf *b = &cap->bufs[c->in[k].buf];
                if (!b->external || b->alive) continue;
                int64_t lo, hi;
                view_range(&c->in[k].v, c->in[k].off, &lo, &hi);
                bool covered = false;
                for (int64_t j = 0; j < cap->ncarries && !covered; j++) {
                    const ccarry *cc = &cap->carries[j];
                    covered = cc->dst == c->in[k].buf && cc->dst_off <= lo && hi <= cc->dst_off + (int64_t)cc->nbytes;
                }
                if (!covered)
                    return loom__set_error(LOOM_ERR_STATE,
                                           "capture: the step read a tensor made before the capture (input %d of %s, "
                                           "%zu bytes) and then dropped it for a new one: replays would read stale "
                                           "values; update such state in place (loom_tensor_assign)",
                                           k, loom__op_name(c->op), b->nbytes);
            }
        }
    }
    for (int64_t j = 0; j < cap->ncarries; j++)
        if (!cap->bufs[cap->carries[j].src].alive)
            return loom__set_error(LOOM_ERR_STATE, "capture: carried state was dropped before the capture ended");
    return LOOM_OK;
}

/* Assigns slots to the temporaries (see the top of the file). */
static loom_status plan(loom_graph *g)
{
    loom__capture *cap = &g->c;
    qsort(cap->accs, (size_t)cap->naccs, sizeof *cap->accs, cmp_acc);
    for (int32_t b = 0; b < cap->nbufs; b++) cap->bufs[b].acc_begin = cap->bufs[b].acc_end = 0;
    for (int64_t i = 0; i < cap->naccs; i++) {
        cbuf *b = &cap->bufs[cap->accs[i].buf];
        if (b->acc_end == 0) b->acc_begin = i;
        b->acc_end = i + 1;
    }
    for (int64_t s = 0; s < cap->nsegs; s++) build_ancestors(&cap->segs[s]);
    /* The temporaries, by their first access (a node's write). */
    int32_t *tmp = malloc(sizeof *tmp * (size_t)(cap->nbufs ? cap->nbufs : 1));
    int32_t *last = malloc(sizeof *last * (size_t)(cap->nbufs ? cap->nbufs : 1)); /* slot -> last occupant */
    g->slot_bytes = calloc((size_t)(cap->nbufs ? cap->nbufs : 1), sizeof *g->slot_bytes);
    g->slot_domain = calloc((size_t)(cap->nbufs ? cap->nbufs : 1), sizeof *g->slot_domain);
    if (!tmp || !last || !g->slot_bytes || !g->slot_domain) {
        free(tmp);
        free(last);
        return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory planning buffers");
    }
    int32_t ntmp = 0;
    for (int32_t b = 0; b < cap->nbufs; b++) {
        const cbuf *cb = &cap->bufs[b];
        if (cb->external || cb->alive || cb->acc_end == cb->acc_begin) continue;
        const cacc *first = &cap->accs[cb->acc_begin];
        if (!first->write || first->node < 0) continue; /* a constant, or written by the host */
        tmp[ntmp++] = b;
    }
    /* By first access: insertion into the (already sorted by buffer)
     * list would be quadratic; sort indices by their first access. */
    for (int32_t i = 1; i < ntmp; i++) {
        int32_t v = tmp[i], j = i;
        const cacc *av = &cap->accs[cap->bufs[v].acc_begin];
        while (j > 0) {
            const cacc *aj = &cap->accs[cap->bufs[tmp[j - 1]].acc_begin];
            if (aj->action < av->action || (aj->action == av->action && aj->node <= av->node)) break;
            tmp[j] = tmp[j - 1];
            j--;
        }
        tmp[j] = v;
    }
    int nslots = 0;
    for (int32_t i = 0; i < ntmp; i++) {
        cbuf *y = &cap->bufs[tmp[i]];
        const cacc *w = &cap->accs[y->acc_begin];
        int best = -1;
        for (int s = 0; s < nslots; s++) {
            const cbuf *x = &cap->bufs[last[s]];
            bool free_now = true;
            for (int64_t a = x->acc_begin; a < x->acc_end && free_now; a++)
                free_now = happens_before(cap, &cap->accs[a], w);
            if (!free_now) continue;
            if (best < 0) {
                best = s;
                continue;
            }
            /* Best fit: the smallest slot that holds y, else the largest. */
            const bool fits = g->slot_bytes[s] >= y->nbytes, bfits = g->slot_bytes[best] >= y->nbytes;
            if ((fits && (!bfits || g->slot_bytes[s] < g->slot_bytes[best])) ||
                (!fits && !bfits && g->slot_bytes[s] > g->slot_bytes[best]))
                best = s;
        }
        if (best < 0) {
            /* A new slot lives on the NUMA node where the eager step put its
             * first occupant (where the node that wrote it ran), so that a
             * replay routes that node there again (replay_home). */
            best = nslots++;
            g->slot_domain[best] = y->s && y->s->data ? loom__mem_block_domain(y->s->data) : 0;
        }
        if (g->slot_bytes[best] < y->nbytes) g->slot_bytes[best] = y->nbytes;
        last[best] = tmp[i];
        y->slot = best;
        g->stats.temporaries++;
        g->stats.temporary_bytes += (int64_t)y->nbytes;
    }
    free(tmp);
    free(last);
    g->nslots = nslots;
    g->slots = calloc((size_t)(nslots ? nslots : 1), sizeof *g->slots);
    if (!g->slots) return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory planning buffers");
    /* The temporaries' own storages go back to the block cache first, so
     * that the slots can reuse their memory. */
    for (int32_t b = 0; b < cap->nbufs; b++)
        if (cap->bufs[b].slot >= 0) {
            loom__storage_decref(cap->bufs[b].s);
            cap->bufs[b].s = NULL;
        } else {
            g->stats.held_bytes += (int64_t)cap->bufs[b].nbytes;
        }
    for (int s = 0; s < nslots; s++) {
        g->slots[s] = loom__mem_alloc_data_on(&cap->ctx->mem, g->slot_bytes[s], g->slot_domain[s]);
        if (!g->slots[s] && g->slot_bytes[s])
            return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory allocating %zu bytes of planned buffers",
                                   g->slot_bytes[s]);
        g->stats.planned_bytes += (int64_t)g->slot_bytes[s];
    }
    return LOOM_OK;
}

static loom_status finish_segments(loom_graph *g)
{
    loom__capture *cap = &g->c;
    for (int64_t s = 0; s < cap->nsegs; s++) {
        cseg *sg = &cap->segs[s];
        free(sg->anc);
        sg->anc = NULL;
        sg->roots = malloc(sizeof *sg->roots * (size_t)(sg->n ? sg->n : 1));
        if (!sg->roots) return loom__set_error(LOOM_ERR_NOMEM, "capture: out of memory");
        for (int64_t i = 0; i < sg->n; i++) {
            cnode *c = &sg->nodes[i];
            if (!c->recorded)
                return loom__set_error(LOOM_ERR_STATE, "capture: a node of the step did not run (its evaluation "
                                                       "stopped early)");
            if (c->indeg == 0) sg->roots[sg->nroots++] = c;
            g->stats.nodes++;
            if (c->run) g->stats.kernels++;
        }
    }
    g->stats.segments = cap->nsegs;
    for (int64_t a = 0; a < cap->nacts; a++) g->stats.copies += cap->acts[a].kind == ACT_COPY;
    g->stats.carries = cap->ncarries;
    return LOOM_OK;
}

loom_graph *loom_graph_capture_end(loom_ctx *ctx)
{
    if (!ctx) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "graph_capture_end: NULL context");
        return NULL;
    }
    loom__capture *cap = ctx->capture;
    if (!cap) {
        loom__set_error(LOOM_ERR_STATE, "graph_capture_end: no capture in progress (call loom_graph_capture_begin)");
        return NULL;
    }
    ctx->capture = NULL;
    loom_graph *g = calloc(1, sizeof *g);
    if (!g) {
        capture_release(cap);
        free(cap);
        loom__set_error(LOOM_ERR_NOMEM, "graph_capture_end: out of memory");
        return NULL;
    }
    g->c = *cap;
    free(cap);
    cap = &g->c;
    loom_status st = LOOM_OK;
    if (cap->failed) {
        st = loom__set_error(cap->fail_st, "%s", cap->fail_msg);
    } else if (ctx->rng_offset - cap->rng0 != cap->rng_drawn) {
        st = loom__set_error(LOOM_ERR_STATE, "capture: the step moved the random stream without drawing "
                                                   "through rand/randn/randint (loom_set_rng_state?), which a "
                                                   "replay cannot repeat");
    } else if (cap->nsegs == 0) {
        st = loom__set_error(LOOM_ERR_STATE, "capture: the step computed nothing");
    }
    if (st == LOOM_OK) {
        /* Whoever else still holds a buffer: the user, a module, the
         * optimizer, a pending node. The capture holds one reference. */
        for (int32_t b = 0; b < cap->nbufs; b++)
            cap->bufs[b].alive = atomic_load_explicit(&cap->bufs[b].s->refs, memory_order_acquire) > 1;
        st = check_stale(cap);
    }
    if (st == LOOM_OK) st = finish_segments(g);
    if (st == LOOM_OK) st = plan(g);
    if (st != LOOM_OK) {
        loom_graph_free(g);
        return NULL;
    }
    return g;
}

void loom_graph_free(loom_graph *g)
{
    if (!g) return;
    for (int s = 0; s < g->nslots; s++)
        if (g->slots[s]) loom__mem_free_data(&g->c.ctx->mem, g->slots[s]);
    free(g->slots);
    free(g->slot_bytes);
    free(g->slot_domain);
    capture_release(&g->c);
    free(g);
}

void loom_graph_get_stats(const loom_graph *g, loom_graph_stats *out)
{
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (g) *out = g->stats;
}

/* ---- replay ------------------------------------------------------------- */

static char *base_of(const loom_graph *g, int32_t b)
{
    const cbuf *cb = &g->c.bufs[b];
    return cb->slot >= 0 ? g->slots[cb->slot] : cb->s->data;
}

static loom_status replay_node(const loom_graph *g, cnode *c, loom__worker *w)
{
    if (!c->run) return LOOM_OK;
    for (int i = 0; i < c->n_in; i++) {
        const cin *r = &c->in[i];
        char *base = base_of(g, r->buf);
        c->views[i] = r->v;
        c->views[i].data = base + r->off;
        /* The stamp now, not the capture's: a held storage (a parameter)
         * has its current version; a planned buffer is rewritten by every
         * replay without one, so it gets none (loom__tview). */
        const cbuf *cb = &g->c.bufs[r->buf];
        c->views[i].uid = cb->slot < 0 ? cb->s->uid : 0;
        c->views[i].version = cb->slot < 0 ? cb->s->version : 0;
        c->convs[i] = r->conv;
        if (r->conv.kind == LOOM__CONV_TO_PLAIN) c->convs[i].base = base;
    }
    int out_layout = LOOM__LAYOUT_PLAIN;
    loom__exec x = {
        .call = {.op = c->op, .attrs = &c->attrs, .n_in = c->n_in, .in = c->views, .budget = g->c.ctx->num_threads,
                 .out_layout = c->may_block ? &out_layout : NULL},
        .k = c->k,
        .bname = c->bname,
        .conv = c->has_conv ? c->convs : NULL,
        .want = c->want,
        .mem = &g->c.ctx->mem,
    };
    x.call.out = c->out;
    x.call.out.data = base_of(g, c->out_buf) + c->out_off;
    loom_status st = loom__exec_run(g->c.ctx, w, &x, c->tmp);
    const cbuf *ob = &g->c.bufs[c->out_buf];
    if (st == LOOM_OK && ob->slot < 0) {
        /* A held storage: users read it, and its layout says how. */
        ob->s->layout = out_layout;
        if (out_layout != LOOM__LAYOUT_PLAIN) memcpy(ob->s->dims, c->out.shape, sizeof ob->s->dims);
    }
    return st;
}

static loom_status replay_task(void *node, loom__worker *w, void *user)
{
    const loom_graph *g = user;
    const loom__dag_node *d = node;
    if (d->routed && d->home >= 0 && d->home != loom__worker_numa(w))
        atomic_fetch_add_explicit(&g->c.ctx->nodes_away, 1, memory_order_relaxed);
    return replay_node(g, node, w);
}

/* NUMA: a replayed node's home is the node of its largest input's buffer,
 * as in an eager run (graph/exec.c); the buffers stay where the capture
 * put them (planned slots where their first occupant was made). */
static int replay_home(void *node, void *user)
{
    const loom_graph *g = user;
    const cnode *c = node;
    size_t best = 0;
    int home = -1;
    for (int i = 0; i < c->n_in; i++) {
        const cbuf *b = &g->c.bufs[c->in[i].buf];
        const void *base = base_of(g, c->in[i].buf);
        if (base && b->nbytes > best) {
            best = b->nbytes;
            home = loom__mem_block_domain(base);
        }
    }
    return home;
}

static loom_status replay_segment(const loom_graph *g, cseg *sg)
{
    loom_ctx *ctx = g->c.ctx;
    if (ctx->num_workers > 1 && sg->n > 1) {
        if (!loom__ctx_pool(ctx)) return loom_last_status();
        for (int64_t i = 0; i < sg->n; i++) {
            atomic_store_explicit(&sg->nodes[i].d.pending, sg->nodes[i].indeg, memory_order_relaxed);
            sg->nodes[i].d.routed = false; /* routed again: the pool's workers may differ */
        }
        const loom__dag dag = {.nodes = (char *)sg->nodes,
                               .stride = sizeof *sg->nodes,
                               .succ = sg->succ,
                               .run = replay_task,
                               .home = ctx->numa_dispatch ? replay_home : NULL,
                               .wide_home = ctx->wide_home,
                               .sent_home = &ctx->nodes_sent_home,
                               .user = (void *)g};
        return loom__dag_run(ctx->pool, &dag, sg->roots, sg->nroots);
    }
    for (int64_t i = 0; i < sg->n; i++) {
        loom_status st = replay_node(g, &sg->nodes[i], NULL);
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}

/* loom_tensor_assign's copy: contiguous source into dst's view. */
static void replay_copy(const loom_graph *g, const cact *a)
{
    const char *from = base_of(g, a->src) + a->src_off;
    char *to = base_of(g, a->dst) + a->dst_off;
    loom__scatter(to, a->strides, from, a->ndim, a->shape, loom_dtype_size(a->dtype));
}

static loom_status replay_plain(const loom_graph *g, const cact *a)
{
    const cbuf *b = &g->c.bufs[a->dst];
    loom_ctx *ctx = g->c.ctx;
    if (b->slot < 0) return loom__storage_make_plain(b->s, ctx->num_threads);
    float *tmp = loom__mem_alloc_data(&ctx->mem, b->nbytes);
    if (!tmp) return loom__set_error(LOOM_ERR_NOMEM, "graph_replay: out of memory converting a layout");
    loom__layout_to_plain(g->slots[b->slot], tmp, a->layout, a->dims, ctx->num_threads);
    memcpy(g->slots[b->slot], tmp, b->nbytes);
    loom__mem_free_data(&ctx->mem, tmp);
    return LOOM_OK;
}

loom_status loom_graph_replay(loom_graph *g)
{
    if (!g) return loom__set_error(LOOM_ERR_INVALID_ARG, "graph_replay: NULL graph");
    loom_ctx *ctx = g->c.ctx;
    if (ctx->capture) return loom__set_error(LOOM_ERR_STATE, "graph_replay: a capture is in progress");
    loom_status st = LOOM_OK;
    /* Random fills draw where an eager step would: from the context's
     * offset now, which then moves past them as the step moved it. */
    const uint64_t rng_base = ctx->rng_offset;
    ctx->rng_offset += g->c.rng_drawn;
    for (int64_t i = 0; i < g->c.ncarries && st == LOOM_OK; i++) {
        const ccarry *c = &g->c.carries[i];
        const cbuf *src = &g->c.bufs[c->src];
        if (src->slot < 0) st = loom__storage_make_plain(src->s, ctx->num_threads);
        if (st == LOOM_OK) memcpy(base_of(g, c->dst) + c->dst_off, base_of(g, c->src) + c->src_off, c->nbytes);
    }
    for (int64_t i = 0; i < g->c.nacts && st == LOOM_OK; i++) {
        const cact *a = &g->c.acts[i];
        switch (a->kind) {
        case ACT_SEGMENT: st = replay_segment(g, &g->c.segs[a->seg]); break;
        case ACT_COPY:
            replay_copy(g, a);
            if (g->c.bufs[a->dst].slot < 0) g->c.bufs[a->dst].s->version++;
            break;
        case ACT_PLAIN: st = replay_plain(g, a); break;
        case ACT_RAND:
            a->fill(a->rand_kind, base_of(g, a->dst) + a->dst_off, a->shape[0], ctx->rng_seed, rng_base + a->rand_rel,
                    a->low, a->high, ctx->num_threads);
            if (g->c.bufs[a->dst].slot < 0) g->c.bufs[a->dst].s->version++;
            break;
        default: break;
        }
    }
    return st;
}

int64_t loom__graph_routes(const loom_graph *g, bool *runs, bool *wide, int *home, int *master, int64_t cap)
{
    int64_t n = 0;
    for (int64_t s = 0; s < g->c.nsegs; s++)
        for (int64_t i = 0; i < g->c.segs[s].n; i++, n++)
            if (n < cap) {
                const loom__dag_node *d = &g->c.segs[s].nodes[i].d;
                runs[n] = g->c.segs[s].nodes[i].run;
                wide[n] = d->wide;
                home[n] = d->routed ? d->home : -1;
                master[n] = d->wide && d->routed ? d->master : -1;
            }
    return n;
}

bool loom_graph_capturing(const loom_ctx *ctx) { return ctx && ctx->capture; }

loom_status loom_graph_carry(loom_tensor *old, loom_tensor *now)
{
    if (!old || !now) return loom__set_error(LOOM_ERR_INVALID_ARG, "graph_carry: NULL tensor");
    if (old->ctx != now->ctx) return loom__set_error(LOOM_ERR_INVALID_ARG, "graph_carry: tensors of two contexts");
    if (!old->ctx->capture) return LOOM_OK;
    loom_status st = loom_tensor_eval(now);
    return st == LOOM_OK ? loom__capture_carry(old->ctx, old, now) : st;
}
