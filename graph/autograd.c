/*
 * graph/autograd.c - the backward pass, grad mode, and in-place assignment.
 *
 * backward(root): order the nodes that lead from leaves requiring grad to
 * root, walk them from root back to the leaves, and let each node's gradient
 * rule (ops/grad.c) record the gradients of its inputs, summing what arrives
 * from several consumers. Leaves add theirs to .grad. Everything is recorded
 * lazily, then all the new leaf gradients are evaluated together, so the
 * backward DAG runs like any other.
 */
#include <stdlib.h>
#include <string.h>

#include "backends/registry.h"
#include "graph/autograd_impl.h"
#include "graph/capture.h"
#include "graph/eval.h"
#include "loom/autograd.h"
#include "graph/tensor_impl.h"
#include "ops/ops_internal.h"
#include "runtime/error.h"

loom_status loom_tensor_set_requires_grad(loom_tensor *t, bool requires_grad)
{
    if (!t) return loom__set_error(LOOM_ERR_INVALID_ARG, "set_requires_grad: tensor is NULL");
    if (t->grad_fn)
        return loom__set_error(LOOM_ERR_STATE, "set_requires_grad: only leaf tensors can change requires_grad "
                                               "(this one was computed from tensors that require grad; use detach)");
    if (requires_grad && t->dtype != LOOM_FLOAT32)
        return loom__set_error(LOOM_ERR_DTYPE, "set_requires_grad: only float32 tensors can require grad, not %s",
                               loom_dtype_name(t->dtype));
    t->requires_grad = requires_grad;
    return LOOM_OK;
}

bool loom_tensor_requires_grad(const loom_tensor *t) { return t && t->requires_grad; }
bool loom_tensor_is_leaf(const loom_tensor *t) { return t && !t->grad_fn; }
bool loom_tensor_has_grad(const loom_tensor *t) { return t && t->grad; }

loom_tensor *loom_tensor_grad(loom_tensor *t)
{
    if (!loom__check_inputs("grad", 1, &t)) return NULL;
    if (!t->grad) {
        loom__set_error(LOOM_ERR_STATE, "grad: the tensor has no gradient (it is not a leaf that requires grad, or "
                                        "backward has not reached it)");
        return NULL;
    }
    return loom_alias(t->grad);
}

void loom_tensor_zero_grad(loom_tensor *t)
{
    if (!t || !t->grad) return;
    loom_tensor *g = t->grad;
    t->grad = NULL;
    loom__tensor_decref(g);
}

void loom_no_grad_begin(loom_ctx *ctx)
{
    if (ctx) ctx->no_grad_depth++;
}

void loom_no_grad_end(loom_ctx *ctx)
{
    if (ctx && ctx->no_grad_depth > 0) ctx->no_grad_depth--;
}

bool loom_grad_enabled(const loom_ctx *ctx) { return ctx && ctx->no_grad_depth == 0; }

loom_tensor *loom_detach(loom_tensor *t)
{
    if (!loom__check_inputs("detach", 1, &t)) return NULL;
    loom_ctx *ctx = t->ctx;
    ctx->no_grad_depth++;
    loom_tensor *d = loom__record_view(LOOM_OP_VIEW_ALIAS, NULL, t, t->ndim, t->shape, t->strides, t->offset);
    ctx->no_grad_depth--;
    return d;
}

/* ---- backward ------------------------------------------------------------ */

/* Backward follows the inputs that require grad of nodes that have a
 * gradient rule: the nodes leading from the leaves to root. */
static bool follow_grad(loom_tensor *from, loom_tensor *in, loom_status *st)
{
    (void)st;
    return from->grad_fn && in->requires_grad;
}

/* dst->gacc += g (taking a reference on g). */
static loom_status accumulate(loom_tensor *dst, loom_tensor *g)
{
    if (!dst->gacc) {
        loom__tensor_incref(g);
        dst->gacc = g;
        return LOOM_OK;
    }
    loom_tensor *sum = loom_add(dst->gacc, g);
    if (!sum) return loom_last_status();
    loom__tensor_decref(dst->gacc);
    loom__tensor_incref(sum);
    dst->gacc = sum;
    return LOOM_OK;
}

/* Gradient pieces. The gradient of a slice (or select) of t is, by the
 * rule, a tensor of t's shape that is zero outside the slice: with T
 * selects of one tensor (the steps of a recurrent layer) or the four gate
 * slices of an LSTM, summing those costs O(T) full-size passes each, O(T^2)
 * in all. Instead the slice's gradient is kept as a piece, and when t's
 * gradient is needed the pieces are assembled at once: disjoint pieces
 * along one dim are concatenated, with zeros in the gaps (no additions at
 * all, so the values are exact); anything else falls back to summing the
 * slice_scatters. */
static loom_status add_piece(loom_tensor *dst, loom_tensor *src, int dim, int64_t start)
{
    if (dst->n_gpieces == dst->cap_gpieces) {
        int cap = dst->cap_gpieces ? 2 * dst->cap_gpieces : 8;
        loom__gpiece *grown = realloc(dst->gpieces, sizeof *grown * (size_t)cap);
        if (!grown) return loom__set_error(LOOM_ERR_NOMEM, "backward: out of memory");
        dst->gpieces = grown;
        dst->cap_gpieces = cap;
    }
    loom__tensor_incref(src);
    dst->gpieces[dst->n_gpieces++] = (loom__gpiece){src, NULL, dim, start};
    return LOOM_OK;
}

/* dst (b of c = a @ b, all 2-D) receives a^T @ g: kept as a piece. */
static loom_status add_matmul_piece(loom_tensor *dst, loom_tensor *a, loom_tensor *g)
{
    loom_status st = add_piece(dst, g, 0, 0);
    if (st != LOOM_OK) return st;
    loom__tensor_incref(a);
    dst->gpieces[dst->n_gpieces - 1].a = a;
    return LOOM_OK;
}

static void drop_pieces(loom_tensor *t)
{
    for (int i = 0; i < t->n_gpieces; i++) {
        loom__tensor_decref(t->gpieces[i].src);
        if (t->gpieces[i].a) loom__tensor_decref(t->gpieces[i].a);
    }
    free(t->gpieces);
    t->gpieces = NULL;
    t->n_gpieces = t->cap_gpieces = 0;
}

static int piece_cmp(const void *a, const void *b)
{
    const loom__gpiece *x = a, *y = b;
    if (x->dim != y->dim) return x->dim < y->dim ? -1 : 1;
    return (x->start > y->start) - (x->start < y->start);
}

/* The matmul pieces (a_i, g_i) of t, at the front of its pieces, as one
 * product: sum_i a_i^T g_i = cat(a_i)^T cat(g_i), concatenated along the
 * rows (the batch of each use), in the order they arrived. */
static loom_tensor *matmul_pieces(loom_tensor *t, int nm)
{
    loom__gpiece *p = t->gpieces;
    if (nm == 1) return loom_matmul(loom_transpose(p[0].a, 0, 1), p[0].src);
    loom_tensor *local[64];
    loom_tensor **parts = 2 * nm <= 64 ? local : malloc(sizeof *parts * (size_t)(2 * nm));
    if (!parts) {
        loom__set_error(LOOM_ERR_NOMEM, "backward: out of memory");
        return NULL;
    }
    for (int i = 0; i < nm; i++) {
        parts[i] = p[i].a;
        parts[nm + i] = p[i].src;
    }
    loom_tensor *a = loom_cat(parts, nm, 0), *g = loom_cat(parts + nm, nm, 0);
    if (parts != local) free(parts);
    return a && g ? loom_matmul(loom_transpose(a, 0, 1), g) : NULL;
}

/* Folds t's pieces into t->gacc. */
static loom_status assemble_pieces(loom_tensor *t)
{
    int n = t->n_gpieces;
    if (!n) return LOOM_OK;
    loom__gpiece *p = t->gpieces;
    /* Matmul pieces first (stable: they keep their order), then slices. */
    int nm = 0;
    for (int i = 0; i < n; i++)
        if (p[i].a) {
            loom__gpiece m = p[i];
            memmove(p + nm + 1, p + nm, sizeof *p * (size_t)(i - nm));
            p[nm++] = m;
        }
    if (nm) {
        loom_tensor *prod = matmul_pieces(t, nm);
        loom_status st = prod ? accumulate(t, prod) : loom_last_status();
        if (st != LOOM_OK) return st;
        for (int i = 0; i < nm; i++) {
            loom__tensor_decref(p[i].src);
            loom__tensor_decref(p[i].a);
        }
        memmove(p, p + nm, sizeof *p * (size_t)(n - nm));
        t->n_gpieces = n -= nm;
        if (!n) {
            drop_pieces(t);
            return LOOM_OK;
        }
    }
    qsort(p, (size_t)n, sizeof *p, piece_cmp);
    bool concat = true;
    for (int i = 1; i < n && concat; i++)
        concat = p[i].dim == p[0].dim && p[i - 1].start + p[i - 1].src->shape[p[0].dim] <= p[i].start;
    loom_tensor *full = NULL;
    if (concat) {
        const int d = p[0].dim;
        loom_tensor *local[64];
        loom_tensor **parts = 2 * n + 1 <= 64 ? local : malloc(sizeof *parts * (size_t)(2 * n + 1));
        if (!parts) return loom__set_error(LOOM_ERR_NOMEM, "backward: out of memory");
        int np = 0;
        int64_t pos = 0, shape[LOOM_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        /* No gradient reaches an RNN layer's workspace (the tail of its
         * packed output, backends/kernel.h): its gradient stops before it
         * instead of carrying zeros as large as the layer's gates, and the
         * rule (ops/rnn.c) reads only that prefix. */
        int64_t end = t->shape[d];
        if (t->node.op == LOOM_OP_RNN_LAYER && d == 0 && t->node.attrs.rnn.training) {
            loom__rnn_layout L;
            loom__rnn_node_layout(t, &L);
            end = L.fwd_base;
        }
        if (n == 1 && (p[0].start > 0 || p[0].start + p[0].src->shape[d] < end)) {
            /* One piece with zeros around it (a sequence's last step): one
             * node that writes the zeros and the piece, not a zeros tensor
             * and a concatenation that copies it. */
            shape[d] = end;
            full = loom__slice_scatter(p[0].src, t->ndim, shape, d, p[0].start, 1);
            if (parts != local) free(parts);
            if (!full) return loom_last_status();
            loom_status st = accumulate(t, full);
            drop_pieces(t);
            return st;
        }
        for (int i = 0; i <= n && parts; i++) {
            int64_t next = i < n ? p[i].start : end;
            if (next > pos) { /* a gap: zeros */
                shape[d] = next - pos;
                parts[np++] = loom_zeros(t->ctx, LOOM_FLOAT32, t->ndim, shape);
            }
            if (i < n) {
                parts[np++] = p[i].src;
                pos = p[i].start + p[i].src->shape[d];
            }
        }
        full = np == 1 ? p[0].src : loom_cat(parts, np, d);
        if (parts != local) free(parts);
    } else {
        for (int i = 0; i < n; i++) {
            loom_tensor *s = loom__slice_scatter(p[i].src, t->ndim, t->shape, p[i].dim, p[i].start, 1);
            full = full && s ? loom_add(full, s) : s;
            if (!full) break;
        }
    }
    if (!full) return loom_last_status();
    loom_status st = accumulate(t, full);
    drop_pieces(t);
    return st;
}

/* A permute whose gradient is slice pieces alone passes them on as pieces
 * of its input: each the same slice, permuted back (a view). Its input's
 * gradient is then assembled once, in its own layout, instead of being
 * assembled here and copied back through the permute (a batch_first RNN
 * output's last step: a [N, 1, H] piece of [N, T, H] becomes a [1, N, H]
 * piece of the time-major [T, N, H], with no transposed copy). */
static bool pieces_pass_permute(const loom_tensor *t)
{
    if (t->node.op != LOOM_OP_VIEW_PERMUTE || t->gacc || !t->n_gpieces || !t->node.in[0]->requires_grad)
        return false;
    for (int i = 0; i < t->n_gpieces; i++)
        if (t->gpieces[i].a) return false;
    return true;
}

static loom_status permute_pieces(loom_tensor *t)
{
    const int *perm = t->node.attrs.permute.perm;
    int inv[LOOM_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) inv[perm[d]] = d;
    loom_tensor *in = t->node.in[0];
    loom_status st = LOOM_OK;
    for (int i = 0; i < t->n_gpieces && st == LOOM_OK; i++) {
        const loom__gpiece *p = &t->gpieces[i];
        loom_tensor *src = loom_permute(p->src, t->ndim, inv);
        st = src ? add_piece(in, src, perm[p->dim], p->start) : loom_last_status();
    }
    drop_pieces(t);
    return st;
}

static void drop_gacc(loom_tensor **order, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (order[i]->gacc) {
            loom__tensor_decref(order[i]->gacc);
            order[i]->gacc = NULL;
        }
        drop_pieces(order[i]);
    }
}

/* True if op's gradient rule (ops/grad.c) reads the values of input i; the
 * others need only shapes (views, add, sum, cat, ...), so assigning to them
 * after the op was recorded does not make the gradient wrong. A view of a
 * parameter made once and reused after optimizer steps must keep working. */
/* Whether op's gradient rule reads the op's own output values. */
static bool rule_reads_output(loom__op op)
{
    switch (op) {
    case LOOM_OP_EXP:
    case LOOM_OP_SQRT:
    case LOOM_OP_TANH:
    case LOOM_OP_SIGMOID:
    case LOOM_OP_RELU:
    case LOOM_OP_POW:
    case LOOM_OP_MAX:
    case LOOM_OP_MIN:
    case LOOM_OP_RNN_LAYER: return true;
    default: return false;
    }
}

static bool rule_reads_input(loom__op op, int i)
{
    switch (op) {
    case LOOM_OP_VIEW_RESHAPE:
    case LOOM_OP_VIEW_PERMUTE:
    case LOOM_OP_VIEW_SLICE:
    case LOOM_OP_VIEW_EXPAND:
    case LOOM_OP_VIEW_ALIAS:
    case LOOM_OP_COPY:
    case LOOM_OP_CAST:
    case LOOM_OP_ADD:
    case LOOM_OP_SUB:
    case LOOM_OP_NEG:
    case LOOM_OP_EXP: /* reads its output, not its input */
    case LOOM_OP_SQRT:
    case LOOM_OP_TANH:
    case LOOM_OP_SIGMOID:
    case LOOM_OP_RELU:
    case LOOM_OP_SUM:
    case LOOM_OP_MEAN:
    case LOOM_OP_CAT:
    case LOOM_OP_SLICE_SCATTER: return false;
    case LOOM_OP_WHERE: /* the condition */
    case LOOM_OP_INDEX_SELECT: /* the index */
    case LOOM_OP_GATHER:
    case LOOM_OP_INDEX_ADD:
    case LOOM_OP_SCATTER_ADD: return i == (op == LOOM_OP_WHERE ? 0 : 1);
    default: return true;
    }
}

typedef struct leaf_grad {
    loom_tensor *leaf, *g, *grad; /* g: this pass's gradient (borrowed); grad: the new .grad */
} leaf_grad;

/* Whether leaf i's first gradient can become its .grad as it is, instead
 * of a copy, as PyTorch's AccumulateGrad takes over a gradient nothing
 * else holds: it must be a tensor this backward made (in its scope, so
 * never the user's own, nor an alias of the grad passed to backward:
 * that one shares the user's storage), the only view of its storage,
 * dense and starting at the storage's start, and no other leaf's gradient.
 * Not while a graph is being captured: its replays write .grad through the
 * copy. Saves a pass over every parameter's gradient per step, and keeps a
 * gradient a oneDNN node left blocked so until it is read (then converted
 * in place, like any tensor). */
static bool adoptable(const leaf_grad *leaves, size_t nleaves, size_t i)
{
    const loom_tensor *t = leaves[i].leaf, *g = leaves[i].g;
    if (t->ctx->capture || g->scope != t->ctx->scope) return false;
    if (atomic_load_explicit(&g->storage->refs, memory_order_acquire) != 1 || g->offset != 0 ||
        !loom__is_contiguous(g->ndim, g->shape, g->strides) ||
        (size_t)loom__numel(g->ndim, g->shape) * loom_dtype_size(g->dtype) != g->storage->nbytes)
        return false;
    for (size_t j = 0; j < nleaves; j++)
        if (j != i && leaves[j].g == g) return false;
    return true;
}

static loom_status run_backward(loom_tensor *root, loom_tensor *seed, loom_tensor **order, size_t n,
                                bool retain, loom__grad_hook hook, void *hook_user)
{
    for (size_t i = 0; i < n; i++)
        if (order[i]->grad_fn && order[i]->graph_freed)
            return loom__set_error(LOOM_ERR_STATE, "backward: the graph was already freed by an earlier backward "
                                                   "(pass retain_graph the first time to run backward twice)");
    loom_status st = accumulate(root, seed);
    /* New leaf gradients, installed only if the whole pass succeeds: a
     * failed backward leaves every .grad as it was (and a pending gradient
     * left on a leaf would keep the forward graph, and so the leaf itself,
     * alive through a reference cycle). */
    leaf_grad stackbuf[16];
    leaf_grad *leaves = stackbuf;
    size_t nleaves = 0, lcap = 16;
    for (size_t k = n; k-- > 0 && st == LOOM_OK;) {
        loom_tensor *t = order[k];
        if (pieces_pass_permute(t)) {
            if ((st = permute_pieces(t)) != LOOM_OK) break;
            continue;
        }
        if ((st = assemble_pieces(t)) != LOOM_OK) break;
        loom_tensor *g = t->gacc;
        if (!g) continue; /* no gradient reached it */
        if (!t->grad_fn) {
            /* A leaf: collected here, its .grad made below (after the hook). */
            if (nleaves == lcap) {
                leaf_grad *grown = malloc(sizeof *grown * lcap * 2);
                if (!grown) {
                    st = loom__set_error(LOOM_ERR_NOMEM, "backward: out of memory");
                    break;
                }
                memcpy(grown, leaves, sizeof *grown * nleaves);
                if (leaves != stackbuf) free(leaves);
                leaves = grown;
                lcap *= 2;
            }
            leaves[nleaves++] = (leaf_grad){t, g, NULL};
            continue;
        }
        if (rule_reads_output(t->node.op) && t->storage->version != t->node.out_version) {
            st = loom__set_error(LOOM_ERR_STATE,
                                 "backward: the output of %s, needed for its gradient, was modified in place "
                                 "(loom_tensor_assign) after the op was recorded",
                                 loom__op_name(t->node.op));
            break;
        }
        for (int i = 0; i < t->node.n_in; i++) {
            if (rule_reads_input(t->node.op, i) && t->node.in[i]->storage->version != t->node.in_version[i]) {
                st = loom__set_error(LOOM_ERR_STATE,
                                     "backward: input %d of %s, needed for its gradient, was modified in place "
                                     "(loom_tensor_assign) after the op was recorded",
                                     i, loom__op_name(t->node.op));
                break;
            }
        }
        if (st != LOOM_OK) break;
        if (t->node.op == LOOM_OP_VIEW_SLICE && t->node.attrs.slice.step == 1) {
            /* A slice's gradient: a piece of its input's (see add_piece). */
            const loom__attrs *at = &t->node.attrs;
            loom_tensor *in = t->node.in[0];
            if (in->requires_grad) {
                loom_tensor *gs = at->slice.drop_dim ? loom_unsqueeze(g, at->slice.dim) : g;
                st = gs ? add_piece(in, gs, at->slice.dim, at->slice.start) : loom_last_status();
            }
            loom__tensor_decref(t->gacc);
            t->gacc = NULL;
            continue;
        }
        loom_tensor *ginline[LOOM__INLINE_INPUTS];
        loom_tensor **gin = ginline;
        if (t->node.n_in > LOOM__INLINE_INPUTS) {
            gin = malloc(sizeof *gin * (size_t)t->node.n_in);
            if (!gin) {
                st = loom__set_error(LOOM_ERR_NOMEM, "backward: out of memory");
                break;
            }
        }
        /* A 2-D matmul's second operand (a weight, perhaps used at every
         * step of a recurrent layer) gets its gradient as a piece: all its
         * uses become one product (assemble_pieces). */
        const bool mm_piece = t->node.op == LOOM_OP_MATMUL && t->node.in[0]->ndim == 2 && t->node.in[1]->ndim == 2 &&
                              g->ndim == 2 && t->node.in[1]->requires_grad;
        st = loom__grad_rule(t, g, gin);
        if (st == LOOM_OK && mm_piece) {
            /* The rule's own a^T @ g for it is never evaluated (nodes run
             * on demand) and goes with the step's scope. */
            st = add_matmul_piece(t->node.in[1], t->node.in[0], g);
            gin[1] = NULL;
        }
        for (int i = 0; i < t->node.n_in && st == LOOM_OK; i++)
            if (gin[i]) st = accumulate(t->node.in[i], gin[i]);
        if (gin != ginline) free(gin);
        /* This node's incoming gradient is no longer needed. */
        loom__tensor_decref(t->gacc);
        t->gacc = NULL;
    }
    /* The hook (dist/'s all-reduce) may replace each leaf's gradient of
     * this pass by a tensor computed from it. */
    if (st == LOOM_OK && hook && nleaves) {
        loom_tensor **ls = malloc(sizeof *ls * nleaves), **gs = malloc(sizeof *gs * nleaves);
        if (!ls || !gs) st = loom__set_error(LOOM_ERR_NOMEM, "backward: out of memory");
        for (size_t i = 0; st == LOOM_OK && i < nleaves; i++) {
            ls[i] = leaves[i].leaf;
            gs[i] = leaves[i].g;
        }
        if (st == LOOM_OK) st = hook(hook_user, nleaves, ls, gs);
        for (size_t i = 0; st == LOOM_OK && i < nleaves; i++) leaves[i].g = gs[i];
        free(ls);
        free(gs);
    }
    /* .grad += g, owned by the leaf, outside any scope. The first time, g
     * itself when it can be (adoptable), else a copy: g may be a view (a
     * broadcast of one value, the grad passed to backward, a buffer another
     * leaf's gradient aliases too), and the leaf's gradient must be its own
     * dense tensor, safe to overwrite in place (gradient clipping). */
    loom_tensor **todo = nleaves ? malloc(sizeof *todo * nleaves) : NULL;
    size_t *carry = nleaves ? malloc(sizeof *carry * nleaves) : NULL, ncarry = 0;
    if (nleaves && (!todo || !carry) && st == LOOM_OK) st = loom__set_error(LOOM_ERR_NOMEM, "backward: out of memory");
    for (size_t i = 0; i < nleaves && st == LOOM_OK; i++) {
        loom_tensor *t = leaves[i].leaf, *g = leaves[i].g;
        loom_tensor *ng = t->grad            ? loom_add(t->grad, g)
                          : adoptable(leaves, nleaves, i) ? g
                                                        : loom__record(LOOM_OP_COPY, NULL, 1, &g, g->dtype, g->ndim, g->shape);
        if (!ng) {
            st = loom_last_status();
            break;
        }
        loom_scope_detach(ng);
        leaves[i].grad = todo[i] = ng;
        /* Accumulating into an existing .grad replaces it: a replay must
         * start from this step's sum (loom/graph.h). */
        if (t->grad && t->ctx->capture) carry[ncarry++] = i;
    }
    /* One run computes every gradient: the scheduler sees the whole
     * backward DAG at once (independent weight gradients side by side, an
     * all-reduce beside the compute that does not need it). */
    if (st == LOOM_OK && nleaves) st = loom__eval_many(todo, nleaves);
    for (size_t k = 0; k < ncarry && st == LOOM_OK; k++)
        st = loom__capture_carry(leaves[carry[k]].leaf->ctx, leaves[carry[k]].leaf->grad, leaves[carry[k]].grad);
    free(carry);
    free(todo);
    for (size_t i = 0; i < nleaves; i++) {
        if (!leaves[i].grad) continue; /* failed before its .grad was made */
        loom_tensor *keep = st == LOOM_OK ? leaves[i].grad : leaves[i].leaf->grad;
        loom_tensor *drop = st == LOOM_OK ? leaves[i].leaf->grad : leaves[i].grad;
        leaves[i].leaf->grad = keep;
        if (drop) loom__tensor_decref(drop);
    }
    if (leaves != stackbuf) free(leaves);
    drop_gacc(order, n);
    if (st == LOOM_OK && !retain) {
        for (size_t i = 0; i < n; i++) {
            loom_tensor *t = order[i];
            if (!t->grad_fn) continue;
            /* Values computed and gradient taken: let the saved inputs go. */
            if (atomic_load_explicit(&t->state, memory_order_acquire) == LOOM__READY) {
                loom__node_release_inputs(t);
                t->graph_freed = true;
            }
        }
    }
    (void)root;
    return st;
}

loom_status loom__backward_hooked(loom_tensor *root, loom_tensor *grad, const loom_backward_options *opts,
                                  loom__grad_hook hook, void *hook_user, int comm_reserve)
{
    if (!root) return loom_tensor_eval(root);
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    if (!root->requires_grad)
        return loom__set_error(LOOM_ERR_STATE, "backward: the tensor does not require grad (no leaf it depends on "
                                               "requires grad, or it was computed in no-grad mode)");
    if (!grad && loom__numel(root->ndim, root->shape) != 1)
        return loom__set_error(LOOM_ERR_SHAPE, "backward: grad can be implied only for one-element outputs; got shape "
                                               "%s (pass grad)", loom__shape_str(s1, sizeof s1, root));
    if (grad && (grad->ndim != root->ndim || memcmp(grad->shape, root->shape, sizeof(int64_t) * (size_t)root->ndim)))
        return loom__set_error(LOOM_ERR_SHAPE, "backward: grad has shape %s but the tensor has shape %s",
                               loom__shape_str(s1, sizeof s1, grad), loom__shape_str(s2, sizeof s2, root));
    if (grad && grad->ctx != root->ctx)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "backward: grad belongs to another context");
    loom_ctx *ctx = root->ctx;
    /* The forward values are needed by the rules; computing them first
     * also reports forward errors as such. Left in the layout their node
     * wrote: the rules' nodes read blocked data as it is, and converting a
     * large root (a convolution's output given a gradient) to plain would
     * cost a pass over it that nothing reads. */
    loom_status st = loom_tensor_compute(root);
    if (st != LOOM_OK) return st;
    loom_tensor **order = NULL;
    size_t n = 0;
    if ((st = loom__dag_order(root, follow_grad, &order, &n)) != LOOM_OK) return st;
    if ((st = loom_scope_begin(ctx)) != LOOM_OK) {
        free(order);
        return st;
    }
    ctx->no_grad_depth++;
    ctx->comm_reserve = comm_reserve;
    loom_tensor *seed = grad ? loom_to_dtype(grad, LOOM_FLOAT32) : loom_full(ctx, LOOM_FLOAT32, root->ndim, root->shape, 1.0);
    st = seed ? run_backward(root, seed, order, n, opts && opts->retain_graph, hook, hook_user) : loom_last_status();
    ctx->comm_reserve = 0;
    ctx->no_grad_depth--;
    loom_scope_end(ctx); /* the backward temporaries; leaf grads are owned by their leaves */
    free(order);
    return st;
}

loom_status loom_backward(loom_tensor *root, loom_tensor *grad, const loom_backward_options *opts)
{
    return loom__backward_hooked(root, grad, opts, NULL, NULL, 0);
}

/* ---- in-place assignment ------------------------------------------------ */

loom_status loom_tensor_assign(loom_tensor *dst, loom_tensor *src)
{
    loom_tensor *in[2] = {dst, src};
    if (!loom__check_inputs("assign", 2, in)) return loom_last_status();
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    if (dst->ndim != src->ndim || memcmp(dst->shape, src->shape, sizeof(int64_t) * (size_t)dst->ndim))
        return loom__set_error(LOOM_ERR_SHAPE, "assign: source shape %s differs from destination shape %s",
                               loom__shape_str(s1, sizeof s1, src), loom__shape_str(s2, sizeof s2, dst));
    if (dst->grad_fn)
        return loom__set_error(LOOM_ERR_STATE, "assign: the destination was computed from tensors that require "
                                               "grad; assign to leaves (parameters) only");
    loom_status st = loom_tensor_eval(dst);
    if (st != LOOM_OK) return st;
    loom_ctx *ctx = dst->ctx;
    ctx->no_grad_depth++;
    /* src in dst's dtype, contiguous: a temporary we own. */
    loom_tensor *cast = loom__cast_to(src, dst->dtype); /* src itself, or a new temporary */
    loom_tensor *c = cast ? loom_scope_detach(loom_contiguous(cast)) : NULL;
    if (cast && cast != src) loom_tensor_free(cast);
    ctx->no_grad_depth--;
    if (!c) return loom_last_status();
    st = loom_tensor_eval(c);
    if (st == LOOM_OK) {
        loom__scatter(loom__tensor_ptr(dst), dst->strides, loom__tensor_ptr(c), dst->ndim, dst->shape,
                      loom_dtype_size(dst->dtype));
        dst->storage->version++;
        st = loom__capture_copy(ctx, c, dst);
    }
    loom_tensor_free(c);
    return st;
}
