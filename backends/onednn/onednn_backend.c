/*
 * backends/onednn/onednn_backend.c - the oneDNN backend's kernel tables.
 *
 * Ops without an entry (views, binary ops, reductions, indexing, MATMUL -
 * whose packed SGEMM in ref is at parity with oneDNN's - sin, cos and
 * BN_STATS) and every call a supports() function rejects go to the next
 * backend (ref). The exactness checks (the *_supports functions of the op
 * files) are cheap shape and attribute checks, except where oneDNN's result
 * depends on the values: max pooling, relu_bwd and the softmax forward scan
 * their input for the non-finite values oneDNN treats differently.
 *
 * Two tables (onednn.h):
 *
 * loom__onednn_backend_all ("onednn" contexts) takes every exact call.
 *
 * loom__onednn_backend (first in "auto") also asks whether oneDNN is faster
 * than ref for the call on Loom's plain layouts. Measured with oneDNN 2.6.3
 * on a 2-core Zen 3 (AVX2), 1 and 2 threads, [64,64,26,26]-sized tensors,
 * time oneDNN / time ref:
 *   convolution (fwd, bwd-data, bwd-weight)  ~0.6-1.2 (3x3), 0.1-0.3
 *                                            (depthwise): taken, except
 *                                            dense bwd-weight, where ref
 *                                            measured 1.7-3x faster in a
 *                                            training step (see fast())
 *   softmax fwd, innermost dim               0.2 (jit:avx2): taken
 *   log_softmax fwd, innermost dim           0.2, but its float
 *                                            x - max - log(sum) is off by up
 *                                            to 5e-6 absolute (1.2e-5
 *                                            relative near 0) where ref's
 *                                            double sums give 1.5e-6: ref
 *   sqrt                                     0.2-0.25: taken
 *   softmax fwd over an outer dim, all       20-100 (ref:any for
 *     softmax backward                       non-dense axes and backward): ref
 *   batch norm fwd / bwd                     4-10 (ncsp_bnorm, plain C++): ref
 *   pooling fwd / max bwd                    2-3 (simple_nchw: plain C++): ref
 *   avg pool bwd, abs, sigmoid, relu_bwd     ~1 (memory bound; oneDNN adds a
 *                                            per-call setup and relu_bwd a
 *                                            scan): ref
 *   tanh                                     3-4: ref
 * The slow ones are oneDNN's non-JIT implementations for plain layouts. On
 * inputs that arrive blocked (kept between nodes, backends/kernel.h) "auto"
 * also takes pooling (JIT there) except 2x2 max pooling; see fast(). LOOM_ONEDNN_OPS=all makes
 * "auto" take the full exact set.
 */
#include "config.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/onednn/onednn.h"
#include "backends/registry.h"
#include "backends/ref/ref.h"

/* ---- "onednn": every exact call ------------------------------------------------ */

static const loom__kernel onednn_all_kernels[LOOM_OP_COUNT] = {
    [LOOM_OP_NEG] = {loom__onednn_unary_supports, loom__onednn_unary, true},
    [LOOM_OP_ABS] = {loom__onednn_unary_supports, loom__onednn_unary, true},
    [LOOM_OP_EXP] = {loom__onednn_unary_supports, loom__onednn_unary, true},
    [LOOM_OP_LOG] = {loom__onednn_unary_supports, loom__onednn_unary, true},
    [LOOM_OP_SQRT] = {loom__onednn_unary_supports, loom__onednn_unary, true},
    [LOOM_OP_TANH] = {loom__onednn_unary_supports, loom__onednn_unary, true},
    [LOOM_OP_SIGMOID] = {loom__onednn_unary_supports, loom__onednn_unary, true},
    [LOOM_OP_RELU] = {loom__onednn_unary_supports, loom__onednn_unary, true},
    [LOOM_OP_CLAMP] = {loom__onednn_unary_supports, loom__onednn_unary, true},

    [LOOM_OP_CONV2D] = {loom__onednn_conv_supports, loom__onednn_conv, true, true},
    [LOOM_OP_CONV2D_BWD_DATA] = {loom__onednn_conv_supports, loom__onednn_conv, true, true},
    [LOOM_OP_CONV2D_BWD_WEIGHT] = {loom__onednn_conv_supports, loom__onednn_conv, true, true},

    [LOOM_OP_MAX_POOL2D] = {loom__onednn_pool_supports, loom__onednn_pool, true, true},
    [LOOM_OP_MAX_POOL2D_BWD] = {loom__onednn_pool_supports, loom__onednn_pool, true, true},
    [LOOM_OP_AVG_POOL2D] = {loom__onednn_pool_supports, loom__onednn_pool, true, true},
    [LOOM_OP_AVG_POOL2D_BWD] = {loom__onednn_pool_supports, loom__onednn_pool, true, true},

    [LOOM_OP_BN_FWD] = {loom__onednn_bn_supports, loom__onednn_bn, true, true},
    [LOOM_OP_BN_BWD_DATA] = {loom__onednn_bn_supports, loom__onednn_bn, true, true},
    [LOOM_OP_BN_BWD_PARAMS] = {loom__onednn_bn_supports, loom__onednn_bn, true, true},

    [LOOM_OP_SOFTMAX] = {loom__onednn_softmax_supports, loom__onednn_softmax, true},
    [LOOM_OP_LOG_SOFTMAX] = {loom__onednn_softmax_supports, loom__onednn_softmax, true},
    [LOOM_OP_SOFTMAX_BWD] = {loom__onednn_softmax_supports, loom__onednn_softmax, true},
    [LOOM_OP_LOG_SOFTMAX_BWD] = {loom__onednn_softmax_supports, loom__onednn_softmax, true},

    [LOOM_OP_RELU_BWD] = {loom__onednn_relu_bwd_supports, loom__onednn_relu_bwd, true},

    [LOOM_OP_RNN_LAYER] = {loom__onednn_rnn_supports, loom__onednn_rnn, true, .aux_floats = loom__onednn_rnn_aux},
    [LOOM_OP_RNN_LAYER_BWD] = {loom__onednn_rnn_bwd_supports, loom__onednn_rnn_bwd, true},
};

const loom__backend loom__onednn_backend_all = {
    .name = "onednn",
    .kernels = onednn_all_kernels,
};

/* ---- "auto": exact and faster than ref ------------------------------------------- */

/* LOOM_ONEDNN_OPS overrides fast() per op: "all" sends every op oneDNN can
 * compute to it; otherwise a comma-separated list of op names (as the
 * profile prints them), each sent to oneDNN, or kept off it with a leading
 * '-' (e.g. "batch_norm,batch_norm_backward_data,-max_pool2d_backward").
 * An experiment knob: the defaults are fast()'s measured choices. */
enum { OVR_DEFAULT = 0, OVR_ON = 1, OVR_OFF = 2 };
static atomic_int ovr_read; /* 0: LOOM_ONEDNN_OPS not read yet */
static _Atomic unsigned char ovr[LOOM_OP_COUNT];

static void parse_ops(const char *s)
{
    if (strcmp(s, "all") == 0) {
        for (int op = 0; op < LOOM_OP_COUNT; op++) atomic_store(&ovr[op], OVR_ON);
        return;
    }
    while (*s) {
        size_t n = strcspn(s, ",");
        const unsigned char v = *s == '-' ? OVR_OFF : OVR_ON;
        const char *name = *s == '-' ? s + 1 : s;
        size_t len = *s == '-' ? n - 1 : n;
        bool found = false;
        for (int op = 0; op < LOOM_OP_COUNT && len; op++) {
            const char *o = loom__op_name((loom__op)op);
            if (strlen(o) == len && strncmp(o, name, len) == 0) {
                atomic_store(&ovr[op], v);
                found = true;
            }
        }
        if (!found && n) fprintf(stderr, "loom: LOOM_ONEDNN_OPS: no op named \"%.*s\"\n", (int)len, name);
        s += n;
        if (*s == ',') s++;
    }
}

void loom__onednn_set_ops(const char *spec)
{
    atomic_store(&ovr_read, 1);
    for (int op = 0; op < LOOM_OP_COUNT; op++) atomic_store(&ovr[op], OVR_DEFAULT);
    if (spec) parse_ops(spec);
}

static unsigned override_of(loom__op op)
{
    if (!atomic_load(&ovr_read)) {
        /* Racing first readers parse the same string into the same table. */
        const char *s = getenv("LOOM_ONEDNN_OPS");
        if (s) parse_ops(s);
        atomic_store(&ovr_read, 1);
    }
    return atomic_load(&ovr[op]);
}

/* Softmax over the innermost non-trivial dim (oneDNN's JIT forward). */
static bool innermost_axis(const loom__kcall *call)
{
    if (!call->attrs) return false;
    const loom__tview *o = &call->out;
    const int axis = call->attrs->axis.dim;
    if (axis < 0 || axis >= o->ndim) return false;
    for (int d = axis + 1; d < o->ndim; d++)
        if (o->shape[d] != 1) return false;
    return true;
}

/* From this many threads (the context's, kcall.budget) on, oneDNN's
 * backward-weight convolution and 2x2 pooling beat ref's: measured at 8
 * and 16 threads, SimpleCNN training 10-15% faster; ref's at 2. */
#define MANY_CORES 8

/* A 1x1 convolution's backward-weight on blocked data: ref would convert
 * x and dy to plain first, which costs more than the product itself
 * (conv_bench's loom_node, [32,256,28,28] -> 64, 2 threads: ref with the
 * copies 9.8 ms against oneDNN's blocked jit_1x1 6.8 ms; 3x3 layers stay
 * on ref, 59 against 71 ms on [32,64,56,56]). */
static bool blocked_1x1(const loom__kcall *call)
{
    return loom__kcall_has_blocked(call) && call->out.ndim == 4 && call->out.shape[2] == 1 && call->out.shape[3] == 1;
}

static bool fast(const loom__kcall *call)
{
    switch (call->op) {
    case LOOM_OP_CONV2D:
    case LOOM_OP_CONV2D_BWD_DATA:
    case LOOM_OP_SQRT: return true;
    /* Dense backward-weight: ref's per-thread partial sums beat oneDNN's
     * reduction here (SimpleCNN conv2 [64,32,26,26] -> 64: 11.8 ms vs 20 ms,
     * conv1 1 -> 32: 0.95 vs 2.8 ms, 2 threads, examples/LOOM_PROFILE);
     * grouped and depthwise stay on oneDNN (3-20x faster than ref).
     * Also on blocked inputs, which ref gets as plain copies: ref with the
     * copies still beat oneDNN's blocked kernel, 4.6 ms a call against 5.7
     * (SimpleCNN training, 2 threads), and tied on ResNet-18 training.
     * On many cores oneDNN's wins: 1.40 ms against 3.02 (conv2) and 0.08
     * against 0.29 (conv1), 16 threads (docs/runtime.md section 9).
     * With AVX-512 (oneDNN's jit:avx512_core, 16 channels a register) it
     * wins at any width: 2-core Sapphire Rapids, 2 threads, SimpleCNN
     * training 2,470 against 2,100 images/s, ResNet-18 (batch 32) 20.1
     * against 17.6 (conv_bench: conv2 277 GFLOP/s against ref's 163). */
    case LOOM_OP_CONV2D_BWD_WEIGHT:
        return call->attrs->conv.groups > 1 || call->budget >= MANY_CORES || blocked_1x1(call) ||
               loom__onednn_isa_avx512();
    case LOOM_OP_SOFTMAX: return innermost_axis(call);
    /* On blocked inputs oneDNN's pooling is JIT code (and ref would need
     * them converted first). Its JIT batch norm is not taken: ref's, which
     * reads blocked layouts too, measured faster (ResNet-18 training,
     * batch 16, 2 threads, DNNL_VERBOSE: backward 18.6 ms a call against
     * ref's 12.7 + 4.1 for both halves, forward 4.8 against 3.4). */
    case LOOM_OP_MAX_POOL2D:
    case LOOM_OP_MAX_POOL2D_BWD:
        /* ...except max pooling on few cores, where ref's blocked kernels
         * are faster: 2x2 stride 2 (SimpleCNN training, 2 threads: forward
         * 0.25 ms against oneDNN's 0.77, backward 2.0 against 3.4, which
         * recomputes the forward) and other windows (ResNet's 3x3 stride-2
         * stem pool on [32,64,112,112], 2 threads: forward 11 ms against
         * 16, backward 23 against 80). With 16 threads oneDNN's 2x2 is
         * faster: forward 0.10 against 0.32, backward 0.62 against 0.87. */
        return loom__kcall_has_blocked(call) && (!loom__ref_pool_blocked_ok(call) || call->budget >= MANY_CORES);
    case LOOM_OP_AVG_POOL2D:
    case LOOM_OP_AVG_POOL2D_BWD: return loom__kcall_has_blocked(call);
    /* A layer's backward goes where its forward went: supports() takes
     * only a workspace oneDNN wrote. */
    case LOOM_OP_RNN_LAYER_BWD: return true;
    default: return false;
    }
}

static bool auto_supports(const loom__kcall *call)
{
    if (call->op <= LOOM_OP_NONE || call->op >= LOOM_OP_COUNT) return false;
    const loom__kernel *k = &onednn_all_kernels[call->op];
    if (!k->run) return false;
    const unsigned o = override_of(call->op);
    if (o == OVR_OFF || (o == OVR_DEFAULT && !fast(call))) return false;
    if (!k->layouts && loom__kcall_has_blocked(call)) return false;
    return !k->supports || k->supports(call);
}

static loom_status auto_run(const loom__kcall *call) { return onednn_all_kernels[call->op].run(call); }

/* The RNN layer's workspace only when "auto" would take the call. */
static int64_t auto_aux(const loom__kcall *call)
{
    const unsigned o = override_of(call->op);
    if (o == OVR_OFF || (o == OVR_DEFAULT && !fast(call))) return 0;
    return onednn_all_kernels[call->op].aux_floats(call);
}

/* layouts: auto_supports passes blocked calls only to kernels that take them. */
#define AUTO(op) [op] = {auto_supports, auto_run, true, true}

/* The same ops as onednn_all_kernels. */
static const loom__kernel onednn_auto_kernels[LOOM_OP_COUNT] = {
    AUTO(LOOM_OP_NEG),           AUTO(LOOM_OP_ABS),           AUTO(LOOM_OP_EXP),
    AUTO(LOOM_OP_LOG),           AUTO(LOOM_OP_SQRT),          AUTO(LOOM_OP_TANH),
    AUTO(LOOM_OP_SIGMOID),       AUTO(LOOM_OP_RELU),          AUTO(LOOM_OP_CLAMP),
    AUTO(LOOM_OP_CONV2D),        AUTO(LOOM_OP_CONV2D_BWD_DATA), AUTO(LOOM_OP_CONV2D_BWD_WEIGHT),
    AUTO(LOOM_OP_MAX_POOL2D),    AUTO(LOOM_OP_MAX_POOL2D_BWD), AUTO(LOOM_OP_AVG_POOL2D),
    AUTO(LOOM_OP_AVG_POOL2D_BWD), AUTO(LOOM_OP_BN_FWD),       AUTO(LOOM_OP_BN_BWD_DATA),
    AUTO(LOOM_OP_BN_BWD_PARAMS), AUTO(LOOM_OP_SOFTMAX),       AUTO(LOOM_OP_LOG_SOFTMAX),
    AUTO(LOOM_OP_SOFTMAX_BWD),   AUTO(LOOM_OP_LOG_SOFTMAX_BWD), AUTO(LOOM_OP_RELU_BWD),
    [LOOM_OP_RNN_LAYER] = {auto_supports, auto_run, true, true, auto_aux}, AUTO(LOOM_OP_RNN_LAYER_BWD),
};

const loom__backend loom__onednn_backend = {
    .name = "onednn",
    .kernels = onednn_auto_kernels,
};
