/*
 * backends/kernel.h - the contract between ops/ and the backends.
 *
 * ops/ records nodes; when a node runs, graph/ turns it into a loom__kcall:
 * the op, its attributes, and plain views (pointer, dtype, shape, strides) of
 * its input and output buffers. A backend never sees tensors, the DAG or
 * modules; it sees only this.
 *
 * Guarantees ops/ gives every kernel (so kernels stay simple):
 *   - elementwise ops (binary, unary, where, cast, copy): every input has the
 *     output's ndim and shape (broadcast dims have stride 0), and every input
 *     of a binary op or where's two values has the output's dtype, except
 *     comparisons, whose inputs share one dtype and whose output is bool;
 *   - the output view is contiguous and freshly allocated (kernels may not
 *     assume it is zeroed); inputs may have any strides, including 0;
 *   - reductions: `out` has the input's ndim, with reduced dims of size 1
 *     and stride 0 (keepdim form), attrs.reduce.mask marks the reduced dims;
 *   - matmul: in[0] is [..., M, K], in[1] is [..., K, N], out is [..., M, N],
 *     all with the same ndim >= 2 and batch dims broadcast (stride 0);
 *   - the CNN ops (convolution, pooling, batch norm, softmax, relu_bwd; see
 *     their entries below): every input and the output are contiguous
 *     row-major float32 (NCHW for images), so kernels index them directly;
 *     the output's shape is final (ops/ computed it, padding and ceil_mode
 *     included);
 *   - numel(out) > 0 (graph/ skips empty outputs);
 *   - every view is plain row-major (layout LOOM__LAYOUT_PLAIN) unless the
 *     kernel's table entry sets `layouts` (below).
 *
 * Blocked layouts. oneDNN's fast kernels keep 4-D activations [N,C,H,W]
 * channel-blocked (nChw8c on AVX2, nChw16c on AVX-512). A storage can hold
 * its tensor in such a layout between nodes, so that consecutive oneDNN
 * nodes skip the reorders. Only kernels whose entry sets `layouts` ever see
 * such an input; graph/ converts blocked inputs to plain temporaries for
 * every other kernel, and for the user. Such a kernel's supports() decides
 * which layouts it takes (a view with a blocked layout is always the whole
 * 4-D tensor, its shape the logical [N,C,H,W], C a multiple of the block);
 * it may then write its output blocked only when call->out_layout is not
 * NULL, storing the layout written there (graph/ has set it to PLAIN).
 */
#ifndef LOOM_BACKENDS_KERNEL_H
#define LOOM_BACKENDS_KERNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "loom/status.h"
#include "loom/types.h"

typedef enum loom__op {
    LOOM_OP_NONE = 0, /* a leaf: its values were given, nothing to compute */

    /* Views: the output shares the input's storage; nothing is computed. */
    LOOM_OP_VIEW_RESHAPE, /* reshape/view/squeeze/unsqueeze/flatten */
    LOOM_OP_VIEW_PERMUTE, /* permute/transpose */
    LOOM_OP_VIEW_SLICE,   /* slice/select */
    LOOM_OP_VIEW_EXPAND,  /* expand, and the broadcasting ops insert */
    LOOM_OP_VIEW_ALIAS,   /* a second handle on the same tensor */

    /* Data movement. */
    LOOM_OP_COPY, /* strided input -> contiguous output, same dtype */
    LOOM_OP_CAST, /* dtype conversion */

    /* Elementwise binary (inputs broadcast to the output shape). */
    LOOM_OP_ADD,
    LOOM_OP_SUB,
    LOOM_OP_MUL,
    LOOM_OP_DIV,
    LOOM_OP_POW,
    LOOM_OP_MAXIMUM,
    LOOM_OP_MINIMUM,
    LOOM_OP_EQ,
    LOOM_OP_NE,
    LOOM_OP_GT,
    LOOM_OP_GE,
    LOOM_OP_LT,
    LOOM_OP_LE,
    LOOM_OP_WHERE, /* in[0] cond (any dtype, nonzero = true), in[1], in[2] */

    /* Elementwise unary. */
    LOOM_OP_NEG,
    LOOM_OP_ABS,
    LOOM_OP_EXP,
    LOOM_OP_LOG,
    LOOM_OP_SQRT,
    LOOM_OP_SIN,
    LOOM_OP_COS,
    LOOM_OP_TANH,
    LOOM_OP_SIGMOID,
    LOOM_OP_RELU,
    LOOM_OP_CLAMP,

    /* Linear algebra. */
    LOOM_OP_MATMUL,

    /* Reductions. */
    LOOM_OP_SUM,
    LOOM_OP_MEAN,
    LOOM_OP_MAX,
    LOOM_OP_MIN,
    LOOM_OP_ARGMAX, /* over the reduced dims in row-major order */
    LOOM_OP_ARGMIN,

    /* Joining and indexing. */
    LOOM_OP_CAT,          /* n inputs, attrs.axis.dim */
    LOOM_OP_INDEX_SELECT, /* in[0] source, in[1] 1-D int64 index */
    LOOM_OP_GATHER,       /* in[0] source, in[1] int64 index, out has index's shape */
    /* The adjoints of slice, index_select and gather (autograd uses them).
     * Each writes a zero-filled output and adds its source into it. */
    LOOM_OP_SLICE_SCATTER, /* in[0] src (the slice, dim kept); out[.., start + i*step, ..] = src[.., i, ..];
                              attrs.slice {dim, start, step} */
    LOOM_OP_INDEX_ADD,     /* in[0] src [.., L, ..], in[1] 1-D int64 index [L];
                              out[.., index[i], ..] += src[.., i, ..] along attrs.axis.dim */
    LOOM_OP_SCATTER_ADD,   /* in[0] src, in[1] int64 index of src's shape;
                              out[.., index[i,j,..], ..] += src[i,j,..] along attrs.axis.dim */

    /* Convolution (2-D, NCHW, float32, attrs.conv). With groups g, input
     * channel c belongs to group c / (C/g), output channel o to o / (O/g). */
    LOOM_OP_CONV2D,            /* in[0] x [N,C,H,W], in[1] w [O,C/g,KH,KW], in[2] bias [O] when n_in == 3;
                                  out y [N,O,OH,OW] (+ relu when attrs.conv.relu) */
    LOOM_OP_CONV2D_BWD_DATA,   /* in[0] dy [N,O,OH,OW], in[1] w [O,C/g,KH,KW]; out dx [N,C,H,W] */
    LOOM_OP_CONV2D_BWD_WEIGHT, /* in[0] x [N,C,H,W], in[1] dy [N,O,OH,OW]; out dw [O,C/g,KH,KW] */

    /* Pooling (2-D, NCHW, float32, attrs.pool). Window (oh, ow) covers
     * rows oh*stride - pad .. + kernel - 1 (clipped to the input), or, when
     * attrs.pool.adaptive, rows floor(oh*H/OH) .. ceil((oh+1)*H/OH) - 1 (no
     * padding). */
    LOOM_OP_MAX_POOL2D,     /* in[0] x [N,C,H,W]; out [N,C,OH,OW]; padding counts as -inf */
    LOOM_OP_MAX_POOL2D_BWD, /* in[0] dy [N,C,OH,OW], in[1] x [N,C,H,W]; out dx [N,C,H,W]: each dy goes to
                               the first maximum of its window in row-major order (PyTorch's choice); NaN
                               counts as the maximum */
    LOOM_OP_AVG_POOL2D,     /* in[0] x; out [N,C,OH,OW]. Divisor: adaptive: the window's size; else with
                               count_include_pad the window clipped to [-pad, H+pad) (PyTorch), else the
                               window clipped to the input */
    LOOM_OP_AVG_POOL2D_BWD, /* in[0] dy [N,C,OH,OW]; out dx [N,C,H,W] (the adjoint of AVG_POOL2D) */

    /* Batch normalization over dim 1 of x [N,C,*] (any ndim >= 2; the
     * statistics run over N and the trailing dims). stats is [2,C]: row 0
     * the mean, row 1 the biased variance. attrs.bn.eps. */
    LOOM_OP_BN_STATS,      /* in[0] x; out stats [2,C] */
    LOOM_OP_BN_FWD,        /* in[0] x, in[1] stats, in[2] gamma [C], in[3] beta [C];
                              out y = (x - mean) / sqrt(var + eps) * gamma + beta */
    LOOM_OP_BN_BWD_DATA,   /* in[0] x, in[1] dy, in[2] stats, in[3] gamma [, y] [, p] (loom__bn_mask_input);
                              out dx. attrs.bn.training: the
                              stats are x's batch statistics and dx includes their dependence on x
                              (dx = gamma*invstd/M * (M*dy - sum(dy) - xhat*sum(dy*xhat)), M = N*spatial);
                              else dx = dy * gamma * invstd */
    LOOM_OP_BN_BWD_PARAMS, /* in[0] x, in[1] dy, in[2] stats [, y]; out [2,C]: row 0 dgamma = sum(dy * xhat),
                              row 1 dbeta = sum(dy) */

    /* Softmax family over attrs.axis.dim (x viewed as [outer, D, inner]). */
    LOOM_OP_SOFTMAX,         /* in[0] x; out y */
    LOOM_OP_LOG_SOFTMAX,     /* in[0] x; out y */
    LOOM_OP_SOFTMAX_BWD,     /* in[0] y (softmax output), in[1] dy; out dx = y * (dy - sum(dy * y)) */
    LOOM_OP_LOG_SOFTMAX_BWD, /* in[0] y (log_softmax output), in[1] dy; out dx = dy - exp(y) * sum(dy) */

    /* in[0] y (relu's output), in[1] dy, same shape; out dx = y > 0 ? dy : 0. */
    LOOM_OP_RELU_BWD,

    /* One Adam step, fused (torch.optim.Adam's single-tensor arithmetic, in
     * its order): in[0] p, in[1] g, in[2] m, in[3] v, contiguous float32
     * of one numel n (m and v are not read when attrs.adam.first: they
     * start at 0); out [3, n]: row 0 the new p, row 1 the new m, row 2 the
     * new v:  m' = m*b1 + g*(1-b1);  v' = v*b2 + (1-b2)*g*g;
     *         p' = p + (-step_size) * (m' / (sqrt(v') / bc2_sqrt + eps)).
     * An optional in[4], an int64 scalar t, gives step_size = lr / (1 -
     * beta1^t) and bc2_sqrt = sqrt(1 - beta2^t) at run time (a replayed
     * graph advances t; loom/graph.h). */
    LOOM_OP_ADAM_STEP,
    /* One SGD step, fused (torch.optim.SGD's single-tensor arithmetic, as
     * optim/optimizer.c's op-by-op form computes it, in float32): in[0] p,
     * in[1] g, and with momentum in[2] buf (not read when attrs.sgd.first),
     * contiguous float32 of one numel n; out [2, n] with momentum (row 0
     * the new p, row 1 the new buf), else [1, n]:
     *   d = g + p*wd (wd != 0);  buf' = first ? d : buf*momentum + d*(1-dampening);
     *   d = nesterov ? d + buf'*momentum : buf';  p' = p - d*lr. */
    LOOM_OP_SGD_STEP,

    /* Recurrent cells, fused (nn/rnn.c's steps; torch.nn's equations,
     * loom/nn.h). float32, contiguous; N rows, H hidden. */
    LOOM_OP_LSTM_CELL,     /* in[0] a [N,4H]: gate pre-activations i, f, g, o; in[1] c [N,H];
                              out [2,N,H]: h' = o*tanh(c'), c' = f*c + i*g (i, f, o sigmoid, g tanh) */
    LOOM_OP_LSTM_CELL_BWD, /* in[0] a, in[1] c, in[2] dout [2,N,H] (dh', dc'); out [N*4H + N*H]: da
                              [N,4H], then dc [N,H] (the gates are recomputed from a) */
    LOOM_OP_GRU_CELL,      /* in[0] xp [N,3H] = x W_ih^T + b_ih, in[1] hp [N,3H] = h W_hh^T + b_hh (gates r,
                              z, n), in[2] h [N,H]; out h' = n + z*(h - n), r = sig(xr + hr),
                              z = sig(xz + hz), n = tanh(xn + r*hn) */
    LOOM_OP_GRU_CELL_BWD,  /* in[0] xp, in[1] hp, in[2] h, in[3] dh' [N,H]; out [2*N*3H + N*H]: dxp [N,3H],
                              dhp [N,3H], then dh [N,H] (the direct path z*h only) */

    /* A recurrent layer, one direction, all T steps in one node (nn/rnn.c;
     * torch.nn's equations, loom/nn.h). float32, contiguous; G gates (1 RNN,
     * 4 LSTM, 3 GRU), rows in PyTorch's gate order. attrs.rnn. Inputs (the
     * order loom__rnn_layout gives): x [T,N,I], w_ih [G*H,I], w_hh [G*H,H],
     * h0 [N,H], c0 [N,H] (LSTM only), b_ih [G*H] and b_hh [G*H] (bias only).
     * out, flat: y [T,N,H] (h after step t at row t; reverse runs t = T-1
     * down to 0, so h_n is y[0]), c_n [N,H] (LSTM), and when training a
     * workspace for the backward: LOOM__RNN_WS_HEADER floats whose first
     * holds the backend's tag (loom__rnn_ws_tag), then the backend's data.
     * ops/ sizes it as the largest any backend asks (kernel.aux_floats). */
    LOOM_OP_RNN_LAYER,
    /* in[0 .. k-1] the forward's inputs, in[k] its output (y, c_n and the
     * workspace), in[k+1] the gradient of that output (the workspace part is
     * not read); out, flat, in the forward's input order: dx [T,N,I],
     * dw_ih, dw_hh, dh0 [N,H], dc0 (LSTM), db_ih, db_hh (bias). */
    LOOM_OP_RNN_LAYER_BWD,

    /* A host callback as a node (dist/: the gradient all-reduce). in[0] x
     * float32 contiguous [n]; in[1..] ordering-only inputs (not read: they
     * make this node wait for others); out [n]: x copied, then
     * attrs.host.fn(attrs.host.user, out, n) rewrites it in place, on one
     * thread. fn returns LOOM_OK or an error it has set. */
    LOOM_OP_HOST_CALL,

    LOOM_OP_COUNT
} loom__op;

/* Per-op attributes, stored inline in the node. */
typedef struct loom__attrs {
    union {
        struct {
            double lo, hi;
        } clamp;
        struct {
            bool relu; /* ADD (float32): out = relu(a + b) as loom_relu gives it (loom_add_relu) */
        } add;
        struct {
            uint32_t mask; /* bit d set: input dim d is reduced */
            bool keepdim;
        } reduce;
        struct {
            int dim;
        } axis; /* cat, index_select, gather */
        struct {
            int perm[LOOM_MAX_DIMS];
        } permute;
        struct {
            int dim;
            int64_t start, step;
            bool drop_dim; /* select: the sliced dim was removed */
        } slice;
        struct {
            int stride[2], pad[2], dilation[2]; /* [h, w]; stride, dilation >= 1 */
            int groups;                         /* >= 1, divides C and O */
            bool relu;                          /* fused ReLU on the output (forward only) */
        } conv;
        struct {
            int kernel[2], stride[2], pad[2]; /* [h, w]; unused when adaptive */
            bool ceil_mode;                   /* (ops/ already sized the output) */
            bool count_include_pad;           /* avg: divisor counts padding */
            bool adaptive;                    /* avg: adaptive windows */
        } pool;
        struct {
            double eps;
            bool training; /* BN_BWD_DATA: the stats are the batch's own */
            bool relu;     /* BN_FWD: y = relu(bn(x)) as loom_relu gives it (NaN stays);
                              BN_BWD_*: dy is masked by y > 0 (loom__bn_mask_input) */
        } bn;
        struct {
            double beta1, beta2, step_size, bc2_sqrt, eps;
            bool first; /* m and v are zero (not read) */
            /* With a fifth input (int64 t, the step being taken): lr, and
             * step_size and bc2_sqrt are computed from t in the kernel. */
            double lr;
        } adam;
        struct {
            double lr, momentum, dampening, weight_decay;
            bool nesterov, first; /* first: buf' = d (buf not read) */
        } sgd;
        struct {
            int mode;     /* loom_rnn_mode */
            bool reverse; /* this direction runs t = T-1 .. 0 */
            bool bias;    /* b_ih and b_hh are given */
            bool training; /* the forward writes the workspace */
        } rnn;
        struct {
            loom_status (*fn)(void *user, float *data, int64_t n);
            void *user; /* borrowed: must outlive the node's run */
        } host;
    };
} loom__attrs;

/* How a storage lays out its elements. Blocked layouts exist only for
 * 4-D float32 [N,C,H,W] tensors whose C is a multiple of the block, so that
 * they take exactly the plain layout's bytes (no padding). */
typedef enum loom__layout {
    LOOM__LAYOUT_PLAIN = 0, /* row-major (NCHW for images) */
    LOOM__LAYOUT_NCHW8C,    /* oneDNN's nChw8c: [N][C/8][H][W][8] */
    LOOM__LAYOUT_NCHW16C,   /* nChw16c: [N][C/16][H][W][16] */
} loom__layout;

/* Channels per block of a layout (1 for plain). */
static inline int loom__layout_block(int layout)
{
    return layout == LOOM__LAYOUT_NCHW8C ? 8 : layout == LOOM__LAYOUT_NCHW16C ? 16 : 1;
}

/* A view of a buffer. Strides are in elements. When layout is not PLAIN the
 * view is a whole 4-D tensor stored in that layout: shape is the logical
 * [N,C,H,W] and strides are those of a contiguous NCHW tensor (meaningless
 * for addressing; elementwise kernels over same-shape inputs of one layout
 * may still walk the buffer flat). */
typedef struct loom__tview {
    void *data; /* the first element */
    loom_dtype dtype;
    int ndim;
    int64_t shape[LOOM_MAX_DIMS];
    int64_t strides[LOOM_MAX_DIMS];
    int layout; /* loom__layout */
    /* The contents' stamp: equal (uid, version) pairs mean equal contents,
     * so a backend may cache something computed from them (the oneDNN
     * backend's reordered weights). uid is the storage's, unique in the
     * process; version counts writes after the first (loom_tensor_assign,
     * replays' copies). uid 0: unknown, nothing may be cached (kernels'
     * temporaries, buffers a captured graph rewrites every replay). */
    uint64_t uid;
    uint32_t version;
} loom__tview;

/* One kernel invocation. */
typedef struct loom__kcall {
    loom__op op;
    const loom__attrs *attrs;
    int n_in;
    const loom__tview *in; /* n_in views */
    loom__tview out;
    int nthreads; /* threads the kernel may use (its OpenMP team size) */
    /* The threads Loom was given (the context's num_threads; 0: unknown).
     * A backend may choose among its kernels by it, never by nthreads,
     * which the scheduler varies from node to node. */
    int budget;
    /* Non-NULL: a layout-aware kernel may write out in a blocked layout and
     * stores which here (see the top of this file); NULL: plain only. */
    int *out_layout;
} loom__kcall;

/* Batch norm's backward inputs (ops/norm.c):
 *   BN_BWD_PARAMS  x, dy, stats [, y]
 *   BN_BWD_DATA    x, dy, stats, gamma [, y] [, p]
 * y (shaped like x) is a fused ReLU's output when attrs bn.relu: dy counts
 * only where y > 0. p [2,C] is BN_BWD_PARAMS's result for the same x, dy
 * and mask, when the graph has it: BN_BWD_DATA then takes its sums from it
 * instead of reducing x and dy again. The index of y, or -1. */
static inline int loom__bn_mask_input(const loom__kcall *call)
{
    if (!call->attrs || !call->attrs->bn.relu) return -1;
    return call->op == LOOM_OP_BN_BWD_PARAMS ? 3 : call->op == LOOM_OP_BN_BWD_DATA ? 4 : -1;
}
/* The index of BN_BWD_DATA's p, or -1. */
static inline int loom__bn_sums_input(const loom__kcall *call)
{
    if (call->op != LOOM_OP_BN_BWD_DATA) return -1;
    const int n = 4 + (loom__bn_mask_input(call) >= 0);
    return call->n_in == n + 1 ? n : -1;
}

typedef loom_status (*loom__kernel_fn)(const loom__kcall *call);
typedef bool (*loom__supports_fn)(const loom__kcall *call);

/* A backend's entry for one op. run == NULL: the backend lacks the op.
 * supports == NULL: run accepts every call of the op. */
typedef struct loom__kernel {
    loom__supports_fn supports;
    loom__kernel_fn run;
    /* The results depend on nthreads (e.g. oneDNN's GEMM splits a reduction
     * differently for another team size). The scheduler then always runs
     * the node at its planned width (runtime/cores.h, exact), so results
     * stay bitwise the same run after run; other kernels must give the same
     * bits at every width (tests/check_exec.c checks the portable ones) and
     * run with whatever cores are free. */
    bool exact_width;
    /* supports() and run handle inputs in blocked layouts (and may write
     * blocked outputs); see the top of this file. */
    bool layouts;
    /* RNN_LAYER only: floats of workspace this backend's forward writes
     * for a training call (only shapes and attrs are read; NULL: none). */
    int64_t (*aux_floats)(const loom__kcall *call);
} loom__kernel;

/* A backend is a name and a table of LOOM_OP_COUNT kernels indexed by op. */
typedef struct loom__backend {
    const char *name;
    const loom__kernel *kernels;
} loom__backend;

/* Floating-point operations of a call: 2 per multiply-add of convolutions
 * and matrix products, 0 for every other op (backends/flops.c). */
int64_t loom__kcall_flops(const loom__kcall *call);

/* True when some input of the call is in a blocked layout. */
static inline bool loom__kcall_has_blocked(const loom__kcall *call)
{
    for (int i = 0; i < call->n_in; i++)
        if (call->in[i].layout != LOOM__LAYOUT_PLAIN) return true;
    return false;
}

/* Converts a 4-D float32 tensor of dims [N,C,H,W] between a blocked layout
 * and plain NCHW (backends/ref/layout.c), with up to nthreads OpenMP
 * threads. C must be a multiple of the layout's block. */
void loom__layout_to_plain(const float *src, float *dst, int layout, const int64_t dims[4], int nthreads);
void loom__layout_from_plain(const float *src, float *dst, int layout, const int64_t dims[4], int nthreads);

/* ---- the recurrent layer's packing (RNN_LAYER, RNN_LAYER_BWD) ------------ */

/* Floats before a workspace's data: the tag, and padding that keeps the
 * data 64-byte aligned. */
#define LOOM__RNN_WS_HEADER 16
/* Tags a forward writes in its workspace's first float (as bits). */
enum { LOOM__RNN_WS_REF = 0x52454631, LOOM__RNN_WS_ONEDNN = 0x444e4e31 };

typedef struct loom__rnn_layout {
    int64_t T, N, I, H, G;
    bool lstm, bias;
    /* Input indices (-1: absent). */
    int x, w_ih, w_hh, h0, c0, b_ih, b_hh, n_fwd_in;
    /* Forward output offsets (floats): y, c_n, the workspace's header
     * (16-float aligned), and the floats before it. */
    int64_t y, c_n, ws, fwd_base;
    /* Backward output offsets, in input order, and its size. */
    int64_t dx, dw_ih, dw_hh, dh0, dc0, db_ih, db_hh, bwd_floats;
} loom__rnn_layout;

/* Fills L for mode (loom_rnn_mode: 0 tanh, 1 relu, 2 LSTM, 3 GRU). */
static inline void loom__rnn_layout_of(int mode, bool bias, int64_t T, int64_t N, int64_t I, int64_t H,
                                       loom__rnn_layout *L)
{
    L->T = T, L->N = N, L->I = I, L->H = H;
    L->lstm = mode == 2;
    L->G = mode == 2 ? 4 : mode == 3 ? 3 : 1;
    L->bias = bias;
    int k = 0;
    L->x = k++, L->w_ih = k++, L->w_hh = k++, L->h0 = k++;
    L->c0 = L->lstm ? k++ : -1;
    L->b_ih = bias ? k++ : -1;
    L->b_hh = bias ? k++ : -1;
    L->n_fwd_in = k;
    const int64_t GH = L->G * H;
    L->y = 0;
    L->c_n = T * N * H;
    L->fwd_base = L->c_n + (L->lstm ? N * H : 0);
    L->ws = (L->fwd_base + 15) / 16 * 16;
    int64_t o = 0;
    L->dx = o, o += T * N * I;
    L->dw_ih = o, o += GH * I;
    L->dw_hh = o, o += GH * H;
    L->dh0 = o, o += N * H;
    L->dc0 = L->lstm ? o : -1, o += L->lstm ? N * H : 0;
    L->db_ih = bias ? o : -1, o += bias ? GH : 0;
    L->db_hh = bias ? o : -1, o += bias ? GH : 0;
    L->bwd_floats = o;
}

/* L for an RNN_LAYER or RNN_LAYER_BWD call (shapes from x and h0). */
static inline void loom__rnn_layout_call(const loom__kcall *call, loom__rnn_layout *L)
{
    const loom__tview *x = &call->in[0], *h0 = &call->in[3];
    loom__rnn_layout_of(call->attrs->rnn.mode, call->attrs->rnn.bias, x->shape[0], x->shape[1], x->shape[2],
                        h0->shape[1], L);
}

/* The tag in a workspace's first float. */
static inline uint32_t loom__rnn_ws_tag(const float *ws)
{
    union {
        float f;
        uint32_t u;
    } b = {.f = ws[0]};
    return b.u;
}
static inline void loom__rnn_ws_set_tag(float *ws, uint32_t tag)
{
    union {
        float f;
        uint32_t u;
    } b = {.u = tag};
    ws[0] = b.f;
}

/* Elements of a view (product of its shape). */
static inline int64_t loom__tview_numel(const loom__tview *v)
{
    int64_t n = 1;
    for (int d = 0; d < v->ndim; d++) n *= v->shape[d];
    return n;
}

#endif /* LOOM_BACKENDS_KERNEL_H */
