/*
 * backends/ref/ref.h - the portable C backend: a plain C kernel for every op,
 * vectorisable by gcc and parallel with OpenMP where that pays.
 */
#ifndef LOOM_BACKENDS_REF_H
#define LOOM_BACKENDS_REF_H

#include "backends/kernel.h"

extern const loom__backend loom__ref_backend;

/* loom_relu's value, shared by RELU and the ops that fuse it (add_relu,
 * batch norm's bn.relu), so fused and unfused agree bitwise: NaN stays. */
static inline float loom__ref_relu(float v) { return (v > 0.0f || v != v) ? v : 0.0f; }

/* Kernels, one family per file. */
loom_status loom__ref_copy(const loom__kcall *call);        /* elementwise.c: COPY, CAST */
loom_status loom__ref_binary(const loom__kcall *call);      /* elementwise.c */
loom_status loom__ref_compare(const loom__kcall *call);     /* elementwise.c */
loom_status loom__ref_where(const loom__kcall *call);       /* elementwise.c */
loom_status loom__ref_unary(const loom__kcall *call);       /* elementwise.c */
loom_status loom__ref_reduce(const loom__kcall *call);      /* reduce.c */
loom_status loom__ref_matmul(const loom__kcall *call);      /* matmul.c */
loom_status loom__ref_cat(const loom__kcall *call);         /* index.c */
loom_status loom__ref_index_select(const loom__kcall *call); /* index.c */
loom_status loom__ref_gather(const loom__kcall *call);      /* index.c */
loom_status loom__ref_slice_scatter(const loom__kcall *call); /* index.c */
loom_status loom__ref_index_add(const loom__kcall *call);   /* index.c */
loom_status loom__ref_scatter_add(const loom__kcall *call); /* index.c */
loom_status loom__ref_conv2d(const loom__kcall *call);            /* conv.c: im2col + packed SGEMM */
loom_status loom__ref_conv2d_bwd_data(const loom__kcall *call);   /* conv.c */
loom_status loom__ref_conv2d_bwd_weight(const loom__kcall *call); /* conv.c */
/* SUM of a blocked 4-D tensor over N, H and W (a convolution's bias
 * gradient; backends/ref/reduce.c). */
bool loom__ref_sum_blocked_ok(const loom__kcall *call);
loom_status loom__ref_sum_blocked(const loom__kcall *call);

/* Backward-weight reads x and dy in any layout (blocked ones an image at a
 * time; backends/ref/conv.c). */
bool loom__ref_conv_bwd_weight_layouts_ok(const loom__kcall *call);

/* Max pooling (not adaptive) on blocked x and dy, nChw8c / nChw16c: the
 * only pooling ref runs blocked (backends/ref/pool.c). */
bool loom__ref_pool_blocked_ok(const loom__kcall *call);
loom_status loom__ref_max_pool2d(const loom__kcall *call);        /* pool.c */
loom_status loom__ref_max_pool2d_bwd(const loom__kcall *call);    /* pool.c */
loom_status loom__ref_avg_pool2d(const loom__kcall *call);        /* pool.c */
loom_status loom__ref_avg_pool2d_bwd(const loom__kcall *call);    /* pool.c */
loom_status loom__ref_bn_stats(const loom__kcall *call);          /* norm.c */
loom_status loom__ref_bn_fwd(const loom__kcall *call);            /* norm.c */
loom_status loom__ref_bn_bwd_data(const loom__kcall *call);       /* norm.c */
loom_status loom__ref_bn_bwd_params(const loom__kcall *call);     /* norm.c */
loom_status loom__ref_softmax(const loom__kcall *call);           /* softmax.c: SOFTMAX, LOG_SOFTMAX */
loom_status loom__ref_softmax_bwd(const loom__kcall *call);       /* softmax.c: both backward ops */
loom_status loom__ref_relu_bwd(const loom__kcall *call);
loom_status loom__ref_adam_step(const loom__kcall *call); /* optim.c */
loom_status loom__ref_sgd_step(const loom__kcall *call);  /* optim.c */
loom_status loom__ref_host_call(const loom__kcall *call); /* host.c */
/* rnn.c */
loom_status loom__ref_lstm_cell(const loom__kcall *call);
loom_status loom__ref_lstm_cell_bwd(const loom__kcall *call);
loom_status loom__ref_gru_cell(const loom__kcall *call);
loom_status loom__ref_gru_cell_bwd(const loom__kcall *call);
loom_status loom__ref_rnn_layer(const loom__kcall *call);     /* rnn_layer.c */
loom_status loom__ref_rnn_layer_bwd(const loom__kcall *call); /* rnn_layer.c */
int64_t loom__ref_rnn_layer_aux(const loom__kcall *call);     /* its workspace floats */          /* softmax.c */

#endif /* LOOM_BACKENDS_REF_H */
