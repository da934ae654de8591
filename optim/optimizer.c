/*
 * optim/optimizer.c - SGD, Adam and AdamW with PyTorch 1.13's exact update
 * rules (the single-tensor, non-foreach code paths of torch/optim/sgd.py,
 * adam.py and adamw.py), and the StepLR and CosineAnnealingLR schedulers.
 *
 * Optimizers are their own layer beside nn/: they see parameters as plain
 * tensors and update them with tensor ops, as any user could, under
 * no-grad mode and inside a scope of their own so that every temporary of a
 * step dies with it. A parameter's new value is written in place with
 * loom_tensor_assign (the module keeps owning the tensor); the state
 * (momentum buffers, Adam's moments) is never modified in place but replaced
 * by its new value each step, detached from the scope and owned by the
 * optimizer. Since nothing ever writes into a state tensor, two state
 * entries may share storage (amsgrad's max starts as an alias of v).
 *
 * Each parameter keeps its own step count and creates its state lazily on
 * the first step on which it has a gradient, as PyTorch's per-parameter
 * `state` dict does; a parameter without a gradient (or not requiring grad)
 * is skipped and its state left as it was.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loom/autograd.h"
#include "loom/graph.h"
#include "loom/ops.h"
#include "loom/optim.h"
#include "runtime/error.h"

typedef enum opt_kind { OPT_SGD = 0, OPT_ADAM, OPT_ADAMW, OPT_KIND_COUNT } opt_kind;

static const char *const kind_names[] = {"sgd", "adam", "adamw"};
_Static_assert(sizeof kind_names / sizeof kind_names[0] == OPT_KIND_COUNT, "one name per optimizer kind");

/* State slots per parameter: SGD uses [BUF]; Adam/AdamW use [M], [V] and,
 * with amsgrad, [VMAX]. NULL until the parameter's first step. */
enum { BUF = 0, M = 0, V = 1, VMAX = 2, NSTATE = 3 };

typedef struct param_state {
    loom_tensor *p;               /* borrowed: the module owns it */
    loom_tensor *state[NSTATE];   /* owned, detached from every scope */
    int64_t steps;                /* updates applied so far (Adam's t) by eager steps */
    /* The same count as an int64 scalar (owned), computed by a node each
     * step, so that a replayed graph advances it too (loom/graph.h); Adam's
     * fused node reads it for its bias corrections. NULL until the first
     * step, or after a load. The count to trust. */
    loom_tensor *step_t;
} param_state;

typedef struct group {
    double lr;
    /* The lr schedulers start from (PyTorch's group['initial_lr']): set by
     * the first scheduler created on the optimizer. */
    double initial_lr;
    bool has_initial_lr;
    int n;
    param_state *ps;
} group;

struct loom_optimizer {
    loom_ctx *ctx;
    opt_kind kind;
    loom_sgd_options sgd;   /* OPT_SGD; .lr unused (each group has its own) */
    loom_adam_options adam; /* OPT_ADAM / OPT_ADAMW; .lr unused likewise */
    int ngroups;
    group *groups;
};

/* ---- validation -------------------------------------------------------- */

/* lr must be finite and > 0 when an optimizer or group is created: 0 there
 * almost always means a zero-initialised options struct whose lr was never
 * set. (Schedulers and loom_optimizer_set_lr may bring it down to 0.) */
static loom_status check_lr(const char *who, double lr)
{
    if (!isfinite(lr)) return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: learning rate %g is not finite", who, lr);
    if (lr <= 0)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: learning rate %g is not positive (it must be > 0)", who, lr);
    return LOOM_OK;
}

/* A finite value >= 0 (momentum, dampening, weight decay, eps). */
static loom_status check_nonneg(const char *who, const char *what, double v)
{
    if (!isfinite(v) || v < 0)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: %s %g is invalid (it must be finite and >= 0)", who, what,
                               v);
    return LOOM_OK;
}

/* A value in [0, 1) (Adam's betas). */
static loom_status check_beta(const char *who, const char *what, double v)
{
    if (!(v >= 0 && v < 1))
        return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: %s %g is outside [0, 1)", who, what, v);
    return LOOM_OK;
}

/* The parameters of a new group: at least one, none NULL, all of the
 * optimizer's context, none already in this or another group. */
static loom_status check_params(const char *who, const loom_optimizer *opt, loom_ctx *ctx, int n,
                                loom_tensor *const *params)
{
    if (n <= 0 || !params) return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: no parameters to optimize", who);
    for (int i = 0; i < n; i++) {
        if (!params[i]) return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: parameter %d is NULL", who, i);
        if (ctx && loom_tensor_ctx(params[i]) != ctx)
            return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: parameter %d belongs to another context", who, i);
        for (int j = 0; j < i; j++)
            if (params[j] == params[i])
                return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: parameter %d appears twice (also as %d)", who, i,
                                       j);
        for (int g = 0; opt && g < opt->ngroups; g++)
            for (int j = 0; j < opt->groups[g].n; j++)
                if (opt->groups[g].ps[j].p == params[i])
                    return loom__set_error(LOOM_ERR_INVALID_ARG,
                                           "%s: parameter %d is already in parameter group %d", who, i, g);
    }
    return LOOM_OK;
}

/* Appends a group (params already checked). Returns its index, or -1. */
static int add_group(loom_optimizer *opt, const char *who, int n, loom_tensor *const *params, double lr)
{
    group *gs = realloc(opt->groups, sizeof *gs * (size_t)(opt->ngroups + 1));
    if (!gs) {
        loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory", who);
        return -1;
    }
    opt->groups = gs;
    param_state *ps = calloc((size_t)n, sizeof *ps);
    if (!ps) {
        loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory", who);
        return -1;
    }
    for (int i = 0; i < n; i++) ps[i].p = params[i];
    gs[opt->ngroups] = (group){.lr = lr, .n = n, .ps = ps};
    return opt->ngroups++;
}

static loom_optimizer *create(opt_kind kind, loom_ctx *ctx, int n, loom_tensor *const *params, double lr)
{
    const char *who = kind_names[kind];
    if (!ctx) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: context is NULL", who);
        return NULL;
    }
    if (check_params(who, NULL, ctx, n, params) != LOOM_OK) return NULL;
    loom_optimizer *opt = calloc(1, sizeof *opt);
    if (!opt) {
        loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory", who);
        return NULL;
    }
    opt->ctx = ctx;
    opt->kind = kind;
    if (add_group(opt, who, n, params, lr) < 0) {
        loom_optimizer_free(opt);
        return NULL;
    }
    return opt;
}

/* ---- constructors ------------------------------------------------------ */

loom_adam_options loom_adam_defaults(void)
{
    return (loom_adam_options){.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0};
}

loom_adam_options loom_adamw_defaults(void)
{
    loom_adam_options o = loom_adam_defaults();
    o.weight_decay = 1e-2;
    return o;
}

loom_optimizer *loom_sgd(loom_ctx *ctx, int n, loom_tensor *const *params, const loom_sgd_options *opts)
{
    const char *who = "sgd";
    if (!opts) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "sgd: options are NULL (the learning rate is required)");
        return NULL;
    }
    if (check_lr(who, opts->lr) || check_nonneg(who, "momentum", opts->momentum) ||
        check_nonneg(who, "dampening", opts->dampening) || check_nonneg(who, "weight_decay", opts->weight_decay))
        return NULL;
    if (opts->nesterov && (opts->momentum <= 0 || opts->dampening != 0)) {
        loom__set_error(LOOM_ERR_INVALID_ARG,
                        "sgd: Nesterov momentum requires a momentum > 0 and zero dampening (got momentum %g, "
                        "dampening %g)",
                        opts->momentum, opts->dampening);
        return NULL;
    }
    loom_optimizer *opt = create(OPT_SGD, ctx, n, params, opts->lr);
    if (opt) opt->sgd = *opts;
    return opt;
}

static loom_optimizer *adam_like(opt_kind kind, loom_ctx *ctx, int n, loom_tensor *const *params,
                                 const loom_adam_options *opts)
{
    const char *who = kind_names[kind];
    loom_adam_options o = opts ? *opts : kind == OPT_ADAMW ? loom_adamw_defaults() : loom_adam_defaults();
    if (check_lr(who, o.lr) || check_nonneg(who, "eps", o.eps) || check_beta(who, "beta1", o.beta1) ||
        check_beta(who, "beta2", o.beta2) || check_nonneg(who, "weight_decay", o.weight_decay))
        return NULL;
    loom_optimizer *opt = create(kind, ctx, n, params, o.lr);
    if (opt) opt->adam = o;
    return opt;
}

loom_optimizer *loom_adam(loom_ctx *ctx, int n, loom_tensor *const *params, const loom_adam_options *opts)
{
    return adam_like(OPT_ADAM, ctx, n, params, opts);
}

loom_optimizer *loom_adamw(loom_ctx *ctx, int n, loom_tensor *const *params, const loom_adam_options *opts)
{
    return adam_like(OPT_ADAMW, ctx, n, params, opts);
}

/* ---- groups and learning rates ----------------------------------------- */

int loom_optimizer_add_group(loom_optimizer *opt, int n, loom_tensor *const *params, double lr)
{
    if (!opt) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "optimizer_add_group: optimizer is NULL");
        return -1;
    }
    const char *who = "optimizer_add_group";
    if (check_lr(who, lr) || check_params(who, opt, opt->ctx, n, params)) return -1;
    return add_group(opt, who, n, params, lr);
}

int loom_optimizer_num_groups(const loom_optimizer *opt) { return opt ? opt->ngroups : 0; }

static loom_status check_group(const char *who, const loom_optimizer *opt, int group)
{
    if (!opt) return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: optimizer is NULL", who);
    if (group < 0 || group >= opt->ngroups)
        return loom__set_error(LOOM_ERR_RANGE, "%s: group %d out of range (the optimizer has %d)", who, group,
                               opt->ngroups);
    return LOOM_OK;
}

double loom_optimizer_lr(const loom_optimizer *opt, int group)
{
    if (check_group("optimizer_lr", opt, group) != LOOM_OK) return NAN;
    return opt->groups[group].lr;
}

loom_status loom_optimizer_set_lr(loom_optimizer *opt, int group, double lr)
{
    loom_status st = check_group("optimizer_set_lr", opt, group);
    if (st != LOOM_OK) return st;
    if (!isfinite(lr) || lr < 0)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "optimizer_set_lr: learning rate %g is invalid (it must be "
                                                     "finite and >= 0)", lr);
    opt->groups[group].lr = lr;
    return LOOM_OK;
}

/* ---- the updates ------------------------------------------------------- */

/* Each rule records the new parameter value into *p_new and the new state
 * into st_new[] (tensors of the step's scope; NULL entries keep nothing).
 * They only record ops: the values are computed when the parameter is
 * assigned. A NULL result carries the first op's error. */

/* Row k of a fused step's [rows, n] result, viewed in p's shape (NULL
 * when f is). */
static loom_tensor *fused_row(loom_tensor *f, int64_t k, loom_tensor *p)
{
    int64_t shape[LOOM_MAX_DIMS];
    loom_tensor_shape(p, shape);
    return loom_reshape(loom_select(f, 0, k), loom_tensor_ndim(p), shape);
}

/* torch/optim/sgd.py, _single_tensor_sgd:
 *     d_p = g + wd * p
 *     buf = clone(d_p) on the first step, else momentum * buf + (1 - dampening) * d_p
 *     d_p = nesterov ? d_p + momentum * buf : buf
 *     p = p - lr * d_p                                                      */
static void sgd_rule(const loom_sgd_options *o, double lr, param_state *s, loom_tensor *p, loom_tensor *g,
                     loom_tensor **p_new, loom_tensor **st_new)
{
    /* One fused pass (ops/optim.c, the arithmetic above in float32); its
     * [2, n] result ([1, n] without momentum) is viewed as the new p and
     * buf. On the first step it starts buf from d (torch.clone), never
     * aliasing the gradient, which its owner may later overwrite in place
     * (gradient clipping). */
    const bool mom = o->momentum != 0;
    loom_tensor *f = loom_sgd_step_fused(p, g, mom ? s->state[BUF] : NULL, lr, o->momentum, o->dampening,
                                         o->weight_decay, o->nesterov);
    *p_new = fused_row(f, 0, p);
    if (mom) st_new[BUF] = fused_row(f, 1, p);
}

/* torch/optim/adam.py and adamw.py, _single_tensor_adam(w), t = steps + 1:
 *     AdamW: p = p * (1 - lr * wd)         Adam: g = g + wd * p
 *     m = b1 * m + (1 - b1) * g
 *     v = b2 * v + (1 - b2) * g * g
 *     amsgrad: vmax = max(vmax, v)
 *     denom = sqrt(amsgrad ? vmax : v) / sqrt(1 - b2^t) + eps
 *     p = p - (lr / (1 - b1^t)) * m / denom
 * The state starts at zeros in PyTorch; on the first step b1 * 0 + x is
 * exactly x, so the zeros are never materialised. Without amsgrad the
 * whole update is one fused node (loom_adam_step_fused). */
static void adam_rule(const loom_adam_options *o, bool decoupled, double lr, param_state *s, loom_tensor *p,
                      loom_tensor *g, loom_tensor *step_new, loom_tensor **p_new, loom_tensor **st_new)
{
    double b1 = o->beta1, b2 = o->beta2;
    if (o->weight_decay != 0) {
        if (decoupled)
            p = loom_mul_scalar(p, 1.0 - lr * o->weight_decay);
        else
            g = loom_add(g, loom_mul_scalar(p, o->weight_decay));
    }
    if (!o->amsgrad) {
        /* One fused pass (ops/optim.c); its [3, n] result is viewed as the
         * new p, m and v. It computes the bias corrections from t, which
         * it reads from step_new. */
        loom_tensor *f = loom_adam_step_fused_t(p, g, s->state[M], s->state[V], step_new, b1, b2, lr, o->eps);
        *p_new = fused_row(f, 0, p);
        st_new[M] = fused_row(f, 1, p);
        st_new[V] = fused_row(f, 2, p);
        return;
    }
    /* AMSGrad is refused inside a capture, so the host's count is the
     * step's. */
    double t = (double)(s->steps + 1);
    double bias_correction1 = 1.0 - pow(b1, t);
    double bias_correction2 = 1.0 - pow(b2, t);
    double step_size = lr / bias_correction1;
    loom_tensor *m = loom_mul_scalar(g, 1.0 - b1);
    loom_tensor *v = loom_mul(loom_mul_scalar(g, 1.0 - b2), g);
    if (s->state[M]) {
        m = loom_add(loom_mul_scalar(s->state[M], b1), m);
        v = loom_add(loom_mul_scalar(s->state[V], b2), v);
    }
    st_new[M] = m;
    st_new[V] = v;
    loom_tensor *second = s->state[VMAX] ? loom_maximum(s->state[VMAX], v) : loom_alias(v);
    st_new[VMAX] = second;
    loom_tensor *denom = loom_add_scalar(loom_div_scalar(loom_sqrt(second), sqrt(bias_correction2)), o->eps);
    /* addcdiv_(m, denom, value=-step_size): p + (-step_size * m) / denom. */
    *p_new = loom_sub(p, loom_div(loom_mul_scalar(m, step_size), denom));
}

/* Updates one parameter: records its update, assigns the new value and, if
 * that worked, swaps in the new state. Runs inside the step's scope. */
static loom_status update_one(loom_optimizer *opt, double lr, param_state *s)
{
    loom_tensor *p = s->p;
    loom_tensor *g = loom_tensor_grad(p);
    if (!g) return loom_last_status();
    loom_tensor *p_new = NULL, *st_new[NSTATE] = {NULL, NULL, NULL}, *step_new = NULL;
    if (loom_graph_capturing(opt->ctx)) {
        /* A replay repeats the captured step's arithmetic: the first step's
         * (which starts the state from zeros) would be repeated forever. */
        const bool first = opt->kind == OPT_SGD ? opt->sgd.momentum != 0 && !s->state[BUF] : !s->state[M];
        if (first)
            return loom__set_error(LOOM_ERR_STATE, "optimizer_step: a parameter takes its first step inside a graph "
                                                   "capture; run one eager step before capturing");
        if (opt->kind != OPT_SGD && opt->adam.amsgrad)
            return loom__set_error(LOOM_ERR_STATE, "optimizer_step: AMSGrad cannot be captured (its bias "
                                                         "corrections are host scalars)");
    }
    /* The step count after this step, as a tensor (param_state.step_t). */
    step_new = s->step_t ? loom_add_scalar(s->step_t, 1.0)
                         : loom_tensor_from_array(opt->ctx, LOOM_INT64, &(int64_t){s->steps + 1}, 0, NULL);
    if (!step_new) return loom_last_status();
    if (opt->kind == OPT_SGD)
        sgd_rule(&opt->sgd, lr, s, p, g, &p_new, st_new);
    else
        adam_rule(&opt->adam, opt->kind == OPT_ADAMW, lr, s, p, g, step_new, &p_new, st_new);
    if (!p_new) return loom_last_status();
    /* Evaluates p_new (and with it the new state, which it depends on)
     * before p's storage is overwritten. */
    loom_status st = loom_tensor_assign(p, p_new);
    if (st != LOOM_OK) return st;
    for (int k = 0; k < NSTATE; k++) {
        if (!st_new[k]) continue;
        st = loom_tensor_eval(st_new[k]); /* computed already; keeps no pending graph */
        if (st == LOOM_OK && s->state[k]) st = loom_graph_carry(s->state[k], st_new[k]);
        if (st != LOOM_OK) return st;
    }
    {
        st = loom_tensor_eval(step_new);
        if (st == LOOM_OK && s->step_t) st = loom_graph_carry(s->step_t, step_new);
        if (st != LOOM_OK) return st;
    }
    for (int k = 0; k < NSTATE; k++) {
        if (!st_new[k]) continue;
        loom_tensor_free(s->state[k]);
        s->state[k] = loom_scope_detach(st_new[k]);
    }
    {
        loom_tensor_free(s->step_t);
        s->step_t = loom_scope_detach(step_new);
    }
    s->steps++;
    return LOOM_OK;
}

loom_status loom_optimizer_step(loom_optimizer *opt)
{
    if (!opt) return loom__set_error(LOOM_ERR_INVALID_ARG, "optimizer_step: optimizer is NULL");
    loom_ctx *ctx = opt->ctx;
    loom_status st = loom_scope_begin(ctx);
    if (st != LOOM_OK) return st;
    loom_no_grad_begin(ctx);
    for (int gi = 0; gi < opt->ngroups && st == LOOM_OK; gi++) {
        group *grp = &opt->groups[gi];
        for (int i = 0; i < grp->n && st == LOOM_OK; i++) {
            param_state *s = &grp->ps[i];
            if (!loom_tensor_requires_grad(s->p) || !loom_tensor_has_grad(s->p)) continue;
            st = update_one(opt, grp->lr, s);
        }
    }
    loom_no_grad_end(ctx);
    loom_scope_end(ctx); /* every temporary of the step */
    return st;
}

void loom_optimizer_zero_grad(loom_optimizer *opt)
{
    if (!opt) return;
    for (int gi = 0; gi < opt->ngroups; gi++)
        for (int i = 0; i < opt->groups[gi].n; i++) loom_tensor_zero_grad(opt->groups[gi].ps[i].p);
}

void loom_optimizer_free(loom_optimizer *opt)
{
    if (!opt) return;
    for (int gi = 0; gi < opt->ngroups; gi++) {
        for (int i = 0; i < opt->groups[gi].n; i++) {
            for (int k = 0; k < NSTATE; k++) loom_tensor_free(opt->groups[gi].ps[i].state[k]);
            loom_tensor_free(opt->groups[gi].ps[i].step_t);
        }
        free(opt->groups[gi].ps);
    }
    free(opt->groups);
    free(opt);
}

/* ---- state, for checkpoints ---------------------------------------------- */

/* The slot names, PyTorch's state_dict keys (state.<i>.<name>). */
static const char *slot_name(opt_kind kind, int k)
{
    if (kind == OPT_SGD) return k == BUF ? "momentum_buffer" : NULL;
    return k == M ? "exp_avg" : k == V ? "exp_avg_sq" : "max_exp_avg_sq";
}

typedef struct name_buf {
    loom_tensor **ts;
    char **names;
    int n, cap;
} name_buf;

static bool put(name_buf *b, loom_tensor *t, const char *fmt, int i, const char *what)
{
    if (!t) return false;
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 32;
        loom_tensor **ts = realloc(b->ts, sizeof *ts * (size_t)cap);
        if (ts) b->ts = ts;
        char **nm = ts ? realloc(b->names, sizeof *nm * (size_t)cap) : NULL;
        if (nm) b->names = nm;
        if (!ts || !nm) {
            loom_tensor_free(t);
            loom__set_error(LOOM_ERR_NOMEM, "optimizer_state: out of memory");
            return false;
        }
        b->cap = cap;
    }
    char name[96];
    snprintf(name, sizeof name, fmt, i, what);
    char *copy = malloc(strlen(name) + 1);
    if (!copy) {
        loom_tensor_free(t);
        loom__set_error(LOOM_ERR_NOMEM, "optimizer_state: out of memory");
        return false;
    }
    strcpy(copy, name);
    b->ts[b->n] = t;
    b->names[b->n++] = copy;
    return true;
}

/* A double as the int64 of its IEEE-754 bits (Loom has no float64). */
static loom_tensor *bits_of(loom_ctx *ctx, double v)
{
    int64_t b;
    memcpy(&b, &v, sizeof b);
    return loom_tensor_from_array(ctx, LOOM_INT64, &b, 0, NULL);
}

loom_status loom_optimizer_state(loom_optimizer *opt, int *n_out, loom_tensor ***tensors_out, char ***names_out)
{
    if (!opt || !n_out || !tensors_out || !names_out)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "optimizer_state: NULL argument");
    loom_ctx *ctx = opt->ctx;
    name_buf b = {NULL, NULL, 0, 0};
    /* "%.0d" prints nothing for 0: the name is just "kind". */
    bool ok = put(&b, loom_tensor_from_array(ctx, LOOM_INT64, &(int64_t){opt->kind}, 0, NULL), "%.0d%s", 0, "kind");
    int idx = 0;
    for (int gi = 0; ok && gi < opt->ngroups; gi++) {
        const group *g = &opt->groups[gi];
        ok = put(&b, bits_of(ctx, g->lr), "param_groups.%d.%s", gi, "lr_bits") &&
             put(&b, bits_of(ctx, g->has_initial_lr ? g->initial_lr : NAN), "param_groups.%d.%s", gi,
                 "initial_lr_bits");
        for (int i = 0; ok && i < g->n; i++, idx++) {
            const param_state *ps = &g->ps[i];
            /* A replayed graph advanced step_t, not steps. */
            int64_t steps = ps->steps;
            if (ps->step_t && loom_tensor_copy_to(ps->step_t, &steps, sizeof steps) != LOOM_OK) ok = false;
            if (ok)
                ok = put(&b, loom_tensor_from_array(ctx, LOOM_INT64, &steps, 0, NULL), "state.%d.%s", idx, "step");
            for (int k = 0; ok && k < NSTATE; k++) {
                if (!ps->state[k] || !slot_name(opt->kind, k)) continue;
                ok = put(&b, loom_contiguous(ps->state[k]), "state.%d.%s", idx, slot_name(opt->kind, k));
                if (ok) ok = loom_tensor_eval(b.ts[b.n - 1]) == LOOM_OK;
            }
        }
    }
    if (!ok) {
        loom_status st = loom_last_status() != LOOM_OK ? loom_last_status() : LOOM_ERR_NOMEM;
        for (int i = 0; i < b.n; i++) {
            loom_tensor_free(b.ts[i]);
            free(b.names[i]);
        }
        free(b.ts);
        free(b.names);
        return st;
    }
    *n_out = b.n;
    *tensors_out = b.ts;
    *names_out = b.names;
    return LOOM_OK;
}

static loom_tensor *find_named(int n, loom_tensor *const *ts, const char *const *names, const char *fmt, int i,
                               const char *what)
{
    char name[96];
    snprintf(name, sizeof name, fmt, i, what);
    for (int k = 0; k < n; k++)
        if (!strcmp(names[k], name)) return ts[k];
    return NULL;
}

static bool scalar_i64(loom_tensor *t, int64_t *v)
{
    if (!t || loom_tensor_dtype(t) != LOOM_INT64 || loom_tensor_numel(t) != 1) return false;
    return loom_tensor_copy_to(t, v, sizeof *v) == LOOM_OK;
}

static double double_of(int64_t bits)
{
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

loom_status loom_optimizer_load_state(loom_optimizer *opt, int n, loom_tensor *const *ts, const char *const *names)
{
    const char *who = "optimizer_load_state";
    if (!opt || (n && (!ts || !names))) return loom__set_error(LOOM_ERR_INVALID_ARG, "%s: NULL argument", who);
    int64_t kind = -1;
    if (!scalar_i64(find_named(n, ts, names, "%.0d%s", 0, "kind"), &kind) || kind != opt->kind)
        return loom__set_error(LOOM_ERR_FORMAT, "%s: the state is not that of a %s optimizer (kind %lld)", who,
                               kind_names[opt->kind], (long long)kind);
    /* Check everything first: a failed load changes nothing. */
    int used = 1, idx = 0;
    for (int gi = 0; gi < opt->ngroups; gi++) {
        int64_t bits;
        if (!scalar_i64(find_named(n, ts, names, "param_groups.%d.%s", gi, "lr_bits"), &bits) ||
            !scalar_i64(find_named(n, ts, names, "param_groups.%d.%s", gi, "initial_lr_bits"), &bits))
            return loom__set_error(LOOM_ERR_FORMAT, "%s: param_groups.%d is missing or malformed", who, gi);
        used += 2;
        for (int i = 0; i < opt->groups[gi].n; i++, idx++) {
            int64_t steps;
            if (!scalar_i64(find_named(n, ts, names, "state.%d.%s", idx, "step"), &steps) || steps < 0)
                return loom__set_error(LOOM_ERR_FORMAT, "%s: state.%d.step is missing or malformed", who, idx);
            used++;
            loom_tensor *p = opt->groups[gi].ps[i].p;
            for (int k = 0; k < NSTATE; k++) {
                const char *sn = slot_name(opt->kind, k);
                loom_tensor *t = sn ? find_named(n, ts, names, "state.%d.%s", idx, sn) : NULL;
                if (!t) continue;
                used++;
                bool same = loom_tensor_dtype(t) == LOOM_FLOAT32 && loom_tensor_ndim(t) == loom_tensor_ndim(p);
                for (int d = 0; same && d < loom_tensor_ndim(p); d++) same = loom_tensor_size(t, d) == loom_tensor_size(p, d);
                if (!same)
                    return loom__set_error(LOOM_ERR_SHAPE, "%s: state.%d.%s does not match parameter %d's shape", who,
                                           idx, sn, idx);
            }
        }
    }
    if (used != n)
        return loom__set_error(LOOM_ERR_FORMAT, "%s: the state has %d tensors that this optimizer (%d parameters) "
                                                "does not use", who, n - used, idx);
    idx = 0;
    for (int gi = 0; gi < opt->ngroups; gi++) {
        group *g = &opt->groups[gi];
        int64_t lr, ilr;
        scalar_i64(find_named(n, ts, names, "param_groups.%d.%s", gi, "lr_bits"), &lr);
        scalar_i64(find_named(n, ts, names, "param_groups.%d.%s", gi, "initial_lr_bits"), &ilr);
        g->lr = double_of(lr);
        g->has_initial_lr = !isnan(double_of(ilr));
        g->initial_lr = g->has_initial_lr ? double_of(ilr) : 0.0;
        for (int i = 0; i < g->n; i++, idx++) {
            param_state *ps = &g->ps[i];
            scalar_i64(find_named(n, ts, names, "state.%d.%s", idx, "step"), &ps->steps);
            loom_tensor_free(ps->step_t); /* made again from steps */
            ps->step_t = NULL;
            for (int k = 0; k < NSTATE; k++) {
                const char *sn = slot_name(opt->kind, k);
                loom_tensor *t = sn ? find_named(n, ts, names, "state.%d.%s", idx, sn) : NULL;
                loom_tensor_free(ps->state[k]);
                ps->state[k] = NULL;
                if (!t) continue;
                loom_tensor *c = loom_scope_detach(loom_mul_scalar(t, 1.0)); /* our own copy */
                if (!c || loom_tensor_eval(c) != LOOM_OK) {
                    loom_tensor_free(c);
                    return loom__set_error(loom_last_status(), "%s: copying state.%d.%s failed (%s); the optimizer is "
                                                               "partly loaded", who, idx, sn, loom_last_error());
                }
                ps->state[k] = c;
            }
        }
    }
    return LOOM_OK;
}

/* ---- learning-rate schedulers ------------------------------------------ */

#define LOOM_PI 3.14159265358979323846

typedef enum sched_kind { SCHED_STEP = 0, SCHED_COSINE } sched_kind;

struct loom_scheduler {
    loom_optimizer *opt; /* borrowed */
    sched_kind kind;
    int step_size;  /* StepLR */
    double gamma;   /* StepLR */
    int t_max;      /* CosineAnnealingLR */
    double eta_min; /* CosineAnnealingLR */
    int64_t epoch;  /* PyTorch's last_epoch */
    int ngroups;    /* the groups that existed at creation */
    double *base_lrs;
};

/* PyTorch's _get_closed_form_lr. */
static double sched_lr(const loom_scheduler *s, double base_lr)
{
    if (s->kind == SCHED_STEP) return base_lr * pow(s->gamma, (double)(s->epoch / s->step_size));
    return s->eta_min + (base_lr - s->eta_min) * (1.0 + cos(LOOM_PI * (double)s->epoch / s->t_max)) / 2.0;
}

static void sched_apply(loom_scheduler *s)
{
    for (int g = 0; g < s->ngroups; g++) s->opt->groups[g].lr = sched_lr(s, s->base_lrs[g]);
}

/* Like PyTorch's constructor: records each group's initial_lr (unless an
 * earlier scheduler did) and applies epoch 0. */
static loom_scheduler *sched_create(const char *who, loom_optimizer *opt, loom_scheduler proto)
{
    loom_scheduler *s = calloc(1, sizeof *s);
    double *base = opt->ngroups ? malloc(sizeof *base * (size_t)opt->ngroups) : NULL;
    if (!s || (opt->ngroups && !base)) {
        free(s);
        free(base);
        loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory", who);
        return NULL;
    }
    *s = proto;
    s->opt = opt;
    s->epoch = 0;
    s->ngroups = opt->ngroups;
    s->base_lrs = base;
    for (int g = 0; g < opt->ngroups; g++) {
        group *grp = &opt->groups[g];
        if (!grp->has_initial_lr) {
            grp->initial_lr = grp->lr;
            grp->has_initial_lr = true;
        }
        base[g] = grp->initial_lr;
    }
    sched_apply(s);
    return s;
}

loom_scheduler *loom_step_lr(loom_optimizer *opt, int step_size, double gamma)
{
    const char *who = "step_lr";
    if (!opt) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: optimizer is NULL", who);
        return NULL;
    }
    if (step_size < 1) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: step_size %d must be >= 1", who, step_size);
        return NULL;
    }
    if (!isfinite(gamma) || gamma <= 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: gamma %g must be finite and > 0", who, gamma);
        return NULL;
    }
    return sched_create(who, opt, (loom_scheduler){.kind = SCHED_STEP, .step_size = step_size, .gamma = gamma});
}

loom_scheduler *loom_cosine_annealing_lr(loom_optimizer *opt, int t_max, double eta_min)
{
    const char *who = "cosine_annealing_lr";
    if (!opt) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: optimizer is NULL", who);
        return NULL;
    }
    if (t_max < 1) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: T_max %d must be >= 1", who, t_max);
        return NULL;
    }
    if (!isfinite(eta_min) || eta_min < 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "%s: eta_min %g must be finite and >= 0", who, eta_min);
        return NULL;
    }
    return sched_create(who, opt, (loom_scheduler){.kind = SCHED_COSINE, .t_max = t_max, .eta_min = eta_min});
}

loom_status loom_scheduler_step(loom_scheduler *s)
{
    if (!s) return loom__set_error(LOOM_ERR_INVALID_ARG, "scheduler_step: scheduler is NULL");
    s->epoch++;
    sched_apply(s);
    return LOOM_OK;
}

void loom_scheduler_free(loom_scheduler *s)
{
    if (!s) return;
    free(s->base_lrs);
    free(s);
}
