/*
 * runtime/cores.h - the core budget: how many threads may run at once.
 *
 * Loom is given C cores. Its workers run DAG nodes, and a node's kernel may
 * open an OpenMP team (portable kernels, oneDNN), so without a budget W
 * workers x T team threads would oversubscribe the machine. The budget is a
 * set of tokens, one per core, split by NUMA domain (each domain has as many
 * tokens as the cores Loom was given there). A worker holds tokens only
 * while it runs a node: one for itself and one for each extra thread of the
 * node's team, all from its own domain, since its team inherits its binding
 * to that domain's cores (docs/runtime.md section 5). So at every instant
 * the threads running nodes never exceed the tokens, that is the cores.
 *
 * Two ways to take tokens:
 *
 * - flexible (loom__cores_take): waits for one token, then takes as many
 *   more as are free, up to `want`, without waiting. For kernels whose
 *   results are bitwise the same at any width (every portable kernel): the
 *   node runs with whatever cores are free right now.
 * - exact (loom__cores_take_exact): waits until it holds exactly `want`.
 *   For kernels whose results depend on their thread count (oneDNN's: its
 *   GEMM may split a reduction differently for another team size), so a
 *   node always runs at the same, planned width and results stay the same
 *   run after run. One exact taker per domain gathers tokens at a time, and
 *   while it gathers, flexible takers wait: freed tokens go to it, so it
 *   cannot starve, and no two gatherers can each hold part of what the other
 *   needs (no deadlock). Every other holder is running a node and will give
 *   its tokens back.
 *
 * Thread safety: all calls may come from any thread at once. The object is
 * created and freed by the pool (runtime/pool.c); tokens given back must
 * have been taken from the same domain.
 */
#ifndef LOOM_RUNTIME_CORES_H
#define LOOM_RUNTIME_CORES_H

#include <stdint.h>

typedef struct loom__cores loom__cores;

/* ndomains domains, tokens[d] >= 0 tokens in domain d. NULL when out of
 * memory (no message set: the pool sets it). */
loom__cores *loom__cores_create(int ndomains, const int *tokens);
void loom__cores_free(loom__cores *c);

/* Tokens of domain d (its size), and how many are free now (racy). */
int loom__cores_total(const loom__cores *c, int d);
int loom__cores_free_now(const loom__cores *c, int d);

/* Flexible: blocks until one token of domain d is free, then takes up to
 * want - 1 more that are free. Returns the number taken, 1..want (want is
 * clamped to 1..total). A domain with no tokens is served by domain 0. */
int loom__cores_take(loom__cores *c, int d, int want);

/* Exact: blocks until it holds min(want, total) tokens of domain d; returns
 * that number. */
int loom__cores_take_exact(loom__cores *c, int d, int want);

/* Gives n tokens back to domain d and wakes waiters. */
void loom__cores_give(loom__cores *c, int d, int n);

/* The widths a node may run at: 1, 2, 4, ... and total itself; the largest
 * of them <= n (n >= 1). Few distinct widths keep oneDNN's primitive cache
 * (keyed by thread count) small. */
int loom__cores_width(int n, int total);

#endif /* LOOM_RUNTIME_CORES_H */
