/*
 * backends/registry.h - picks, per node, the first backend whose kernel
 * supports the call (oneDNN's "implementation list" idea).
 */
#ifndef LOOM_BACKENDS_REGISTRY_H
#define LOOM_BACKENDS_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "backends/kernel.h"

/* Backend choice of a context. */
typedef enum loom__backend_choice {
    LOOM__BACKEND_AUTO = 0, /* first that supports the call, in priority order */
    LOOM__BACKEND_REF,      /* the portable C backend only */
    LOOM__BACKEND_ONEDNN,   /* oneDNN first for every call it computes exactly (auto only
                               takes those where it beats ref), ref for the rest;
                               graph/context.c refuses it when built without oneDNN */
} loom__backend_choice;

/* Parses "auto"/"ref"/"onednn" (NULL = auto). Returns false for an unknown
 * name. */
bool loom__backend_parse(const char *name, loom__backend_choice *out);

/* The kernel to run `call`, or NULL (with loom_last_error() set) if no
 * backend has one. *backend_name (if not NULL) receives the chosen name. */
const loom__kernel *loom__registry_pick(loom__backend_choice choice, const loom__kcall *call,
                                        const char **backend_name);

/* The same without setting an error when there is none (graph/ then
 * converts blocked inputs and picks again). */
const loom__kernel *loom__registry_find(loom__backend_choice choice, const loom__kcall *call,
                                        const char **backend_name);

/* The most workspace floats a kernel for the call asks (kernel.aux_floats;
 * only shapes and attrs are read) among the backends `choice` may run it
 * on: ops/ sizes an RNN_LAYER's output by it, so whichever of them runs
 * the node fits. A backend that would not take the call asks 0. */
int64_t loom__registry_aux_floats(loom__backend_choice choice, const loom__kcall *call);

/* oneDNN's JIT ISA on this CPU ("avx512_core", ...), or NULL when built
 * without oneDNN; for loom info. */
const char *loom__registry_onednn_isa(void);

/* The convolution policies in force (LOOM_ONEDNN_CONV_LAYOUT and _ALGO, or
 * their defaults) and what auto picks on this CPU, for loom info, written
 * to buf (snprintf's truncation); false when built without oneDNN. */
bool loom__registry_onednn_conv(char *buf, size_t size);

/* The op's name ("add"), for messages. */
const char *loom__op_name(loom__op op);

#endif /* LOOM_BACKENDS_REGISTRY_H */
