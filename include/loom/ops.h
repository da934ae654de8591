/*
 * loom/ops.h - tensor operations.
 *
 * Every op records a node and returns a new lazy tensor owned by the
 * innermost open scope (see loom/context.h); values are computed on demand.
 * Shape and dtype errors are detected here, when the op is recorded: the op
 * returns NULL and loom_last_error() names the op and the shapes, e.g.
 * "add: shapes [2, 3] and [4] cannot be broadcast". A NULL input makes an op
 * return NULL and keeps the earlier error, so chains need one check.
 *
 * Broadcasting follows NumPy/PyTorch: shapes are aligned on the right, and a
 * dim of size 1 (or a missing leading dim) stretches to the other size.
 *
 * Type promotion: bool < int64 < float32; the result of an arithmetic op has
 * the larger input type. Arithmetic on bool computes in int64 (PyTorch keeps
 * bool for add/mul). div and the float functions (exp, log, sqrt, sin, cos,
 * tanh, sigmoid) give float32 for integer inputs, as PyTorch does.
 * Comparisons give bool. Both inputs must belong to the same context.
 */
#ifndef LOOM_OPS_H
#define LOOM_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "loom/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- elementwise, binary, broadcasting ------------------------------- */
loom_tensor *loom_add(loom_tensor *a, loom_tensor *b);
/* relu(a + b) as one node (float32; a residual block's end): bitwise
 * loom_relu(loom_add(a, b)), one pass instead of two. */
loom_tensor *loom_add_relu(loom_tensor *a, loom_tensor *b);
loom_tensor *loom_sub(loom_tensor *a, loom_tensor *b);
loom_tensor *loom_mul(loom_tensor *a, loom_tensor *b);
loom_tensor *loom_div(loom_tensor *a, loom_tensor *b); /* true division */
loom_tensor *loom_pow(loom_tensor *a, loom_tensor *b);
loom_tensor *loom_maximum(loom_tensor *a, loom_tensor *b);
loom_tensor *loom_minimum(loom_tensor *a, loom_tensor *b);
/* Comparisons: bool results. */
loom_tensor *loom_eq(loom_tensor *a, loom_tensor *b);
loom_tensor *loom_ne(loom_tensor *a, loom_tensor *b);
loom_tensor *loom_gt(loom_tensor *a, loom_tensor *b);
loom_tensor *loom_ge(loom_tensor *a, loom_tensor *b);
loom_tensor *loom_lt(loom_tensor *a, loom_tensor *b);
loom_tensor *loom_le(loom_tensor *a, loom_tensor *b);

/* With a scalar operand (a 0-dim tensor of a's dtype class: a float value
 * makes an int64 tensor float32 only if the value is not integral, as in
 * PyTorch's `t + 0.5`). */
loom_tensor *loom_add_scalar(loom_tensor *a, double s);
loom_tensor *loom_sub_scalar(loom_tensor *a, double s);
loom_tensor *loom_mul_scalar(loom_tensor *a, double s);
loom_tensor *loom_div_scalar(loom_tensor *a, double s);
loom_tensor *loom_pow_scalar(loom_tensor *a, double exponent);

/* cond ? a : b, broadcasting all three; cond is bool (or nonzero of any dtype). */
loom_tensor *loom_where(loom_tensor *cond, loom_tensor *a, loom_tensor *b);

/* ---- elementwise, unary ---------------------------------------------- */
loom_tensor *loom_neg(loom_tensor *t);
loom_tensor *loom_abs(loom_tensor *t);
loom_tensor *loom_exp(loom_tensor *t);
loom_tensor *loom_log(loom_tensor *t);
loom_tensor *loom_sqrt(loom_tensor *t);
loom_tensor *loom_sin(loom_tensor *t);
loom_tensor *loom_cos(loom_tensor *t);
loom_tensor *loom_tanh(loom_tensor *t);
loom_tensor *loom_sigmoid(loom_tensor *t);
loom_tensor *loom_relu(loom_tensor *t);
/* Clamps to [min, max]; pass -INFINITY / INFINITY to leave a side open. */
loom_tensor *loom_clamp(loom_tensor *t, double min, double max);
/* Converts to dtype (float->int truncates toward zero; nonzero->true). */
loom_tensor *loom_to_dtype(loom_tensor *t, loom_dtype dtype);

/* ---- matrix product -------------------------------------------------- */
/* torch.matmul: 1-D x 1-D dot product; 2-D x 2-D matrix product; batched
 * when either has more than 2 dims, broadcasting the batch dims; a 1-D
 * operand is promoted to a matrix and the added dim removed. float32. */
loom_tensor *loom_matmul(loom_tensor *a, loom_tensor *b);

/* ---- reductions -------------------------------------------------------- */
/* Reduce over `ndims` dims listed in `dims` (negative from the end);
 * ndims == 0 reduces over every dim. keepdim keeps reduced dims as size 1.
 * sum of bool/int64 gives int64; mean gives float32. */
loom_tensor *loom_sum(loom_tensor *t, int ndims, const int *dims, bool keepdim);
loom_tensor *loom_mean(loom_tensor *t, int ndims, const int *dims, bool keepdim);

/* LOOM_DIM_ALL as `dim` reduces over every element (flattened). */
#define LOOM_DIM_ALL (-1000)
/* Max/min values along dim (NaN propagates, as in PyTorch). */
loom_tensor *loom_max(loom_tensor *t, int dim, bool keepdim);
loom_tensor *loom_min(loom_tensor *t, int dim, bool keepdim);
/* int64 index of the first max/min along dim (of the flattened tensor for
 * LOOM_DIM_ALL). */
loom_tensor *loom_argmax(loom_tensor *t, int dim, bool keepdim);
loom_tensor *loom_argmin(loom_tensor *t, int dim, bool keepdim);

/* ---- joining and indexing -------------------------------------------- */
/* Concatenates n tensors of one dtype along dim (all other dims equal). */
loom_tensor *loom_cat(loom_tensor *const *ts, int n, int dim);
/* Stacks n tensors of one shape along a new dim. */
loom_tensor *loom_stack(loom_tensor *const *ts, int n, int dim);
/* Rows `index` (1-D int64) of dim, as torch.index_select. */
loom_tensor *loom_index_select(loom_tensor *t, int dim, loom_tensor *index);
/* out[i][j][k] = t[index[i][j][k]][j][k] for dim 0, etc. (torch.gather);
 * index is int64 with t's ndim and sizes <= t's outside dim. */
loom_tensor *loom_gather(loom_tensor *t, int dim, loom_tensor *index);
/* t with src's slices added at rows `index` of dim (torch.index_add,
 * out-of-place): out[.., index[i], ..] += src[.., i, ..]. index is 1-D int64
 * of length L; src has t's shape except L at dim; t and src share one dtype
 * (float32 or int64). Repeated indices accumulate, in increasing i. */
loom_tensor *loom_index_add(loom_tensor *t, int dim, loom_tensor *index, loom_tensor *src);
/* t with src scattered and added along dim (torch.scatter_add, out-of-place):
 * out[index[i][j][k]][j][k] += src[i][j][k] for dim 0, etc. index is int64
 * with t's ndim, sizes <= src's, and <= t's outside dim; only index's extent
 * of src is used. t and src share one dtype (float32 or int64). Repeated
 * indices accumulate, in increasing position along dim. */
loom_tensor *loom_scatter_add(loom_tensor *t, int dim, loom_tensor *index, loom_tensor *src);

/* ---- recurrent cells, fused ------------------------------------------ */

/* The gates of one LSTM step (torch.nn.LSTMCell's equations), one node each
 * way: a [N, 4H] are the gate pre-activations x W_ih^T + b_ih + h W_hh^T +
 * b_hh in PyTorch's order i, f, g, o; c [N, H] the previous cell state.
 * Returns [2, N, H]: row 0 h' = o * tanh(c'), row 1 c' = f * c + i * g
 * (i, f, o = sigmoid, g = tanh); take them with loom_select. */
loom_tensor *loom_lstm_cell_gates(loom_tensor *a, loom_tensor *c);
/* The gates of one GRU step (torch.nn.GRUCell): xp = x W_ih^T + b_ih and
 * hp = h W_hh^T + b_hh, both [N, 3H] in the order r, z, n; h [N, H].
 * Returns h' [N, H] = (1 - z) * n + z * h with r = sigmoid(xr + hr),
 * z = sigmoid(xz + hz), n = tanh(xn + r * hn). */
loom_tensor *loom_gru_cell_gates(loom_tensor *xp, loom_tensor *hp, loom_tensor *h);

/* One recurrent layer in one direction over all T steps, as one node each
 * way (what loom_rnn_forward records per layer and direction; kernels:
 * oneDNN's RNN primitives, or a portable loop of GEMMs and fused gates).
 * mode is a loom_rnn_mode (loom/nn.h): 0 RNN tanh, 1 RNN relu, 2 LSTM,
 * 3 GRU. x [T, N, I]; w_ih [G*H, I], w_hh [G*H, H], b_ih, b_hh [G*H] (both
 * or neither), in PyTorch's layouts and gate orders (G = 1, 1, 4, 3); h0
 * [N, H] or NULL (zeros); c0 [N, H] (LSTM only) or NULL (zeros). reverse
 * runs t = T-1 down to 0. Sets *y [T, N, H] (h after step t at row t) and,
 * when not NULL, *h_n [N, H] (the last step's h) and *c_n [N, H] (LSTM).
 * The results belong to the current scope. With grad mode on and an input
 * that requires grad, the forward also keeps a workspace for the backward,
 * as oneDNN's training forward does. */
loom_status loom_rnn_layer(int mode, loom_tensor *x, loom_tensor *h0, loom_tensor *c0, loom_tensor *w_ih,
                           loom_tensor *w_hh, loom_tensor *b_ih, loom_tensor *b_hh, bool reverse, loom_tensor **y,
                           loom_tensor **h_n, loom_tensor **c_n);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_OPS_H */
