/*
 * loom/optim.h - optimizers and learning-rate schedulers with PyTorch's
 * exact update rules.
 *
 * An optimizer holds borrowed parameter tensors (the module keeps owning
 * them) in parameter groups, and its own state (momentum buffers, Adam's
 * moments), which it frees in loom_optimizer_free(). step() updates every
 * parameter that has a gradient, in place (loom_tensor_assign), in no-grad
 * mode; parameters without a gradient or not requiring grad are skipped.
 * State is created per parameter on the first step that has a gradient for
 * it, and each parameter counts its own steps (Adam's t), as in PyTorch.
 * The state tensors are outside every scope: call loom_optimizer_free()
 * before loom_ctx_free(). The parameters must outlive the optimizer's last
 * step/zero_grad call.
 *
 *     loom_tensor *params[16];
 *     int n = loom_module_parameters(net, params, NULL, 16);
 *     loom_optimizer *opt = loom_adam(ctx, n, params, NULL);  // lr 1e-3
 *     for (...) { loom_optimizer_zero_grad(opt); ...; loom_backward(loss, NULL, NULL); loom_optimizer_step(opt); }
 */
#ifndef LOOM_OPTIM_H
#define LOOM_OPTIM_H

#include <stdbool.h>

#include "loom/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_optimizer loom_optimizer;

/* torch.optim.SGD. lr is required (> 0); the rest default to 0/false.
 * Options are required (NULL fails: there is no default lr). */
typedef struct loom_sgd_options {
    double lr, momentum, dampening, weight_decay;
    bool nesterov;
} loom_sgd_options;

/* torch.optim.Adam / AdamW. Every field is used as given: start from
 * loom_adam_defaults() / loom_adamw_defaults() (PyTorch's defaults: lr 1e-3,
 * betas (0.9, 0.999), eps 1e-8, weight_decay 0 for Adam and 1e-2 for AdamW)
 * and change what you need. NULL options mean those defaults. */
typedef struct loom_adam_options {
    double lr, beta1, beta2, eps, weight_decay;
    bool amsgrad;
} loom_adam_options;
loom_adam_options loom_adam_defaults(void);
loom_adam_options loom_adamw_defaults(void);

/* Each creates an optimizer whose first group holds the n parameters.
 * NULL with LOOM_ERR_INVALID_ARG for no parameters, or a learning rate,
 * momentum, beta or eps that is negative or not finite. In detail: lr must
 * be finite and > 0 (0 is refused here: it is what an options struct whose
 * lr was never set holds); momentum, dampening, weight_decay and eps finite
 * and >= 0; betas in [0, 1); nesterov needs momentum > 0 and dampening 0
 * (PyTorch's rule); a NULL parameter, one of another context, or one listed
 * twice (in any group) is refused too. */
loom_optimizer *loom_sgd(loom_ctx *ctx, int n, loom_tensor *const *params, const loom_sgd_options *opts);
loom_optimizer *loom_adam(loom_ctx *ctx, int n, loom_tensor *const *params, const loom_adam_options *opts);
loom_optimizer *loom_adamw(loom_ctx *ctx, int n, loom_tensor *const *params, const loom_adam_options *opts);

/* Another parameter group with its own learning rate (other settings as the
 * first group). Returns the group's index, or -1 (error set) on the
 * creation checks above. */
int loom_optimizer_add_group(loom_optimizer *opt, int n, loom_tensor *const *params, double lr);
int loom_optimizer_num_groups(const loom_optimizer *opt);
/* A group's current lr; NaN with LOOM_ERR_RANGE for a bad group index. */
double loom_optimizer_lr(const loom_optimizer *opt, int group);
/* lr must be finite and >= 0 (schedulers may anneal it to 0). */
loom_status loom_optimizer_set_lr(loom_optimizer *opt, int group, double lr);

/* One update of every parameter with a gradient. On failure the parameters
 * before the failing one have been updated, the rest have not. */
loom_status loom_optimizer_step(loom_optimizer *opt);

/* The fused kernel Adam and AdamW step with (one pass over the data instead
 * of a dozen elementwise ops), for custom optimizers: with n = numel(p),
 * returns a new [3, n] float32 tensor whose rows are the new p, m and v:
 *   m' = m*beta1 + g*(1-beta1);  v' = v*beta2 + (1-beta2)*g*g;
 *   p' = p - step_size * m' / (sqrt(v') / sqrt(bias_correction2) + eps),
 * torch.optim.Adam's single-tensor arithmetic in its order. m and v both
 * NULL mean zeros (the first step). g, m, v need p's numel. */
loom_tensor *loom_adam_step_fused(loom_tensor *p, loom_tensor *g, loom_tensor *m, loom_tensor *v, double beta1,
                                  double beta2, double step_size, double bias_correction2, double eps);
/* The same with the step number t (>= 1) in an int64 tensor of one
 * element: step_size = lr / (1 - beta1^t) and bias_correction2 = 1 -
 * beta2^t are computed when the node runs, so that a replayed graph
 * (loom/graph.h) takes each step with its own t. */
loom_tensor *loom_adam_step_fused_t(loom_tensor *p, loom_tensor *g, loom_tensor *m, loom_tensor *v, loom_tensor *step,
                                    double beta1, double beta2, double lr, double eps);

/* The fused SGD step (one pass instead of four to six elementwise ops),
 * torch.optim.SGD's single-tensor arithmetic in float32, as loom_sgd
 * computes it:
 *   d = g + wd*p;  buf' = buf NULL ? d : momentum*buf + (1-dampening)*d;
 *   d = nesterov ? d + momentum*buf' : buf';  p' = p - lr*d.
 * With momentum != 0 returns a new [2, n] float32 tensor (rows: the new p
 * and buf; buf NULL is the first step), else [1, n] (buf must be NULL).
 * g and buf need p's numel. */
loom_tensor *loom_sgd_step_fused(loom_tensor *p, loom_tensor *g, loom_tensor *buf, double lr, double momentum,
                                 double dampening, double weight_decay, bool nesterov);
/* The optimizer's state, for checkpoints, as named tensors (PyTorch's
 * state_dict keys where it has them): "kind" (int64: 0 SGD, 1 Adam,
 * 2 AdamW), per group g "param_groups.<g>.lr_bits" and
 * ".initial_lr_bits" (int64 holding a double's bits, so that the rate
 * survives exactly; NaN bits: no initial lr), per parameter i (numbered
 * across groups in order) "state.<i>.step" (int64) and its buffers
 * "state.<i>.exp_avg", ".exp_avg_sq", ".max_exp_avg_sq" (Adam, AdamW) or
 * ".momentum_buffer" (SGD) once they exist. *tensors_out (malloc'd array
 * of new tensors in the current scope) and *names_out (malloc'd names:
 * loom_safetensors_free_names) as loom_load_safetensors returns them. */
loom_status loom_optimizer_state(loom_optimizer *opt, int *n_out, loom_tensor ***tensors_out, char ***names_out);
/* Restores a state loom_optimizer_state produced, into an optimizer of the
 * same kind over parameters of the same shapes. Everything is checked
 * before anything changes: another kind, a missing or extra entry, or a
 * shape that differs gives LOOM_ERR_FORMAT / LOOM_ERR_SHAPE naming it. */
loom_status loom_optimizer_load_state(loom_optimizer *opt, int n, loom_tensor *const *tensors, const char *const *names);

/* Drops the gradients of every parameter (set_to_none). */
void loom_optimizer_zero_grad(loom_optimizer *opt);
void loom_optimizer_free(loom_optimizer *opt);

/* ---- schedulers (call step() once per epoch, after the optimizer's) --- */

/* A scheduler borrows opt (which must outlive its step() calls) and sets the
 * lr of each group that exists when it is created, from the group's initial
 * lr (PyTorch's group['initial_lr']: the lr when the first scheduler was
 * created on the optimizer). Creating it applies epoch 0, and each step()
 * the next epoch, using PyTorch's closed forms. */

typedef struct loom_scheduler loom_scheduler;
/* lr = initial_lr * gamma^(epoch / step_size), per group (integer division).
 * step_size >= 1; gamma finite and > 0. */
loom_scheduler *loom_step_lr(loom_optimizer *opt, int step_size, double gamma);
/* lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2,
 * also beyond T_max (the curve rises again, as PyTorch's closed form does).
 * t_max >= 1; eta_min finite and >= 0. */
loom_scheduler *loom_cosine_annealing_lr(loom_optimizer *opt, int t_max, double eta_min);
loom_status loom_scheduler_step(loom_scheduler *s);
void loom_scheduler_free(loom_scheduler *s);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_OPTIM_H */
