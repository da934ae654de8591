/*
 * graph/autograd_impl.h - what the library's own layers (dist/) use of
 * autograd beyond the public loom_backward.
 */
#ifndef LOOM_GRAPH_AUTOGRAD_IMPL_H
#define LOOM_GRAPH_AUTOGRAD_IMPL_H

#include <stddef.h>

#include "loom/autograd.h"

/* Called by backward once this pass's gradient of every leaf is recorded
 * (not yet computed): leaves[i] and grads[i] (borrowed), in the order the
 * backward reached them. The hook may replace grads[i] by a tensor of the
 * same shape recorded from it (in the current scope); that is what is
 * accumulated into leaves[i]'s .grad. An error aborts the backward, every
 * .grad left as it was. */
typedef loom_status (*loom__grad_hook)(void *user, size_t n, loom_tensor *const *leaves, loom_tensor **grads);

/* loom_backward with a hook (NULL: none). comm_reserve cores (0 or 1) of
 * the context's budget are kept for the hook's host calls during this
 * backward: every other node is planned at most total - comm_reserve
 * wide, so that a node whose kernel needs all its planned cores (oneDNN)
 * can still run beside a reduction holding its core (dist/). */
loom_status loom__backward_hooked(loom_tensor *root, loom_tensor *grad, const loom_backward_options *opts,
                                  loom__grad_hook hook, void *hook_user, int comm_reserve);

#endif /* LOOM_GRAPH_AUTOGRAD_IMPL_H */
