/*
 * runtime/pool.h - a work-stealing thread pool placed on the topology.
 *
 * A pool is an object (never a process global) of N workers.  Worker 0 is
 * the thread that calls loom__pool_run: it does not wait while others work,
 * it works too, so a pool of N workers starts N - 1 pthreads, a pool of 1
 * starts none and runs everything in the caller, in LIFO order, which is
 * deterministic.  Workers 1..N-1 are placed on cores by the topology
 * (loom__topology_place) and bound to their domain's cpuset; the caller is
 * never bound (its affinity belongs to the user).
 *
 * Each worker has a bounded Chase-Lev deque (runtime/deque.h) and a
 * mutex-protected overflow queue, which takes what does not fit in the
 * deque and what other workers send it with loom__pool_spawn_to.  A worker
 * runs the newest task of its own deque first (LIFO), then its overflow
 * queue, then steals the oldest task (FIFO) of other workers, nearest
 * victims first (loom__topology_victims); after `steal_rounds` failed
 * rounds over all victims it parks on a condition variable with a
 * prepare / re-check / commit protocol, so that no wake-up is lost (see
 * docs/runtime.md).
 *
 * A batch is a set of root tasks plus every task they spawn; a task is an
 * opaque pointer handed to the batch's task function.  loom__pool_run
 * returns when every task of the batch has finished (a counter of
 * outstanding tasks reaches zero).  The first task that returns a failure
 * stops the batch: the tasks not yet started are skipped (counted down but
 * not run), and the failure's status and message (copied from the failing
 * worker's thread-local last error) are returned to the caller, whose last
 * error they become.
 *
 * Usage (the DAG executor: a node is ready when its pending count hits 0):
 *
 *     static loom_status run_node(loom__worker *w, void *task, void *user)
 *     {
 *         node *n = task;
 *         loom_status st = compute(n);          // loom__set_error on failure
 *         if (st != LOOM_OK) return st;
 *         for (int i = 0; i < n->nsucc; i++)
 *             if (atomic_fetch_sub_explicit(&n->succ[i]->pending, 1, memory_order_acq_rel) == 1)
 *                 if ((st = loom__pool_spawn(w, n->succ[i])) != LOOM_OK) return st;
 *         return LOOM_OK;
 *     }
 *
 *     loom__pool *pool = loom__pool_create(topo, &(loom__pool_options){.num_workers = 4});
 *     loom_status st = loom__pool_run(pool, (void **)roots, nroots, run_node, NULL);
 *     if (st != LOOM_OK) fprintf(stderr, "%s\n", loom_last_error());
 *     loom__pool_free(pool);
 *
 * Thread safety: one batch at a time per pool.  loom__pool_run called while
 * the pool is running a batch (from another thread, or from inside one of
 * its own tasks) fails with LOOM_ERR_STATE.  Different pools are
 * independent.
 */
#ifndef LOOM_RUNTIME_POOL_H
#define LOOM_RUNTIME_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "loom/status.h"
#include "runtime/topology.h"

typedef struct loom__pool loom__pool;
typedef struct loom__worker loom__worker;

/* Runs one task on worker w.  Returns LOOM_OK, or a failure after setting
 * its message with loom__set_error (a failure without a fresh message is
 * reported as "task failed: <status>"). */
typedef loom_status (*loom__task_fn)(loom__worker *w, void *task, void *user);

/* Scheduling events, for the timeline tracer: a worker stole a task from
 * worker `other` (t0 == t1), or was parked, idle, from t0 to t1
 * (nanoseconds on CLOCK_MONOTONIC). Called on the worker's own thread,
 * outside every lock of the pool; it must be quick and thread-safe. */
typedef enum loom__pool_event { LOOM__POOL_EV_STEAL, LOOM__POOL_EV_IDLE } loom__pool_event;
typedef void (*loom__pool_observer)(void *user, loom__pool_event ev, int worker, int other, int64_t t0,
                                    int64_t t1);

typedef struct loom__pool_options {
    /* Workers, including the calling thread.  0: one per allowed core. */
    int num_workers;
    /* The cores Loom may use (logical core numbers; see
     * loom__parse_core_list), ncores of them; NULL: all cores. */
    const int *cores;
    int ncores;
    /* How workers are spread over the cores (default spread). */
    loom__place_policy place;
    /* What each worker thread is bound to (default the placed cores of its
     * NUMA node).  Binding failures are not errors: see
     * loom__pool_bind_status. */
    loom__bind_level bind;
    /* Capacity of each worker's deque, a power of two; 0: 1024.  A task
     * spawned on a full deque goes to the worker's overflow queue (slower:
     * a mutex), so the DAG executor should pass the next power of two >= the
     * number of nodes when it can afford the memory (8 bytes a slot). */
    int64_t deque_capacity;
    /* Failed rounds of steals over all victims before a worker parks; 0:
     * 32.  The first half spin, the second half yield the CPU. */
    int steal_rounds;
    /* Tokens of the core budget (runtime/cores.h): the threads that may run
     * nodes at once, workers and their OpenMP teams together; 0: one per
     * worker.  Split over the NUMA nodes like the workers. */
    int core_budget;
    /* Told of steals and idle time (NULL: nobody); observer_user is its
     * first argument. */
    loom__pool_observer observer;
    void *observer_user;
} loom__pool_options;

/* Creates a pool and starts its threads.  `topo` is borrowed and must
 * outlive the pool; NULL: the pool reads this machine's topology and owns
 * it.  `o` may be NULL (defaults).  Returns NULL with the thread's last
 * error set (bad options, out of memory, pthread_create failure).  Free
 * with loom__pool_free. */
loom__pool *loom__pool_create(const loom__topology *topo, const loom__pool_options *o);

/* Stops and joins the threads, then frees the pool (NULL is fine).  Must
 * not be called while a batch runs. */
void loom__pool_free(loom__pool *pool);

/* Fills `o` from the environment, leaving fields whose variable is unset:
 *   LOOM_NUM_THREADS=N      num_workers
 *   LOOM_CORES=0-3,8        cores / ncores (stored in core_buf, room for max)
 *   LOOM_PLACE=spread|compact
 *   LOOM_BIND=numa|l3|core|none
 * Returns LOOM_ERR_INVALID_ARG / LOOM_ERR_RANGE with a message naming the
 * variable when one is malformed. */
loom_status loom__pool_options_from_env(loom__pool_options *o, const loom__topology *topo, int *core_buf, int max);

/* Runs a batch: the roots (nroots of them; NULL items are fine) and all
 * tasks they spawn, each through fn(worker, task, user).  Blocks until
 * every task has finished or been skipped; the calling thread works as
 * worker 0 meanwhile.  Returns LOOM_OK or the first failure (see the top of
 * this file). */
loom_status loom__pool_run(loom__pool *pool, void *const *roots, int64_t nroots, loom__task_fn fn, void *user);

/* ---- Inside a task: w is the worker the task function was given ------ */

/* Makes `task` part of the running batch: it goes on w's own deque (the
 * newest task: w itself will probably run it next, unless a thief takes it)
 * or, when that is full, on w's overflow queue.  Call only from the task
 * that was given w, on w's thread.  LOOM_ERR_NOMEM when the overflow queue
 * cannot grow (then the task is not spawned). */
loom_status loom__pool_spawn(loom__worker *w, void *task);

/* Sends `task` to worker `target`'s overflow queue (e.g. the worker of the
 * NUMA node where the task's inputs live) and wakes it if it sleeps; any
 * worker may still steal it when idle.  Same rules as loom__pool_spawn. */
loom_status loom__pool_spawn_to(loom__worker *w, int target, void *task);

/* Sends `task` to worker `target` alone: no other worker steals it.  The
 * DAG executor pins the nodes that want an OpenMP team to one worker per
 * NUMA node (its first, the domain's team master), so that the process
 * has one team per NUMA node, each as wide as that node's tokens: libgomp
 * gives every pthread its own team, and once the team threads of all teams
 * outnumber the CPUs it stops letting them spin between regions, so every
 * region pays for futex wake-ups (docs/runtime.md section 5).  Same rules
 * as loom__pool_spawn; LOOM_ERR_RANGE for a target out of range. */
loom_status loom__pool_spawn_pinned(loom__worker *w, int target, void *task);

/* True once the batch has failed: a long task may stop early (its
 * result will be discarded anyway). */
bool loom__worker_stopping(const loom__worker *w);

/* w's number (0 = the caller of loom__pool_run), and the core and NUMA node
 * it is placed on (for per-worker scratch and first-touch allocation). */
int loom__worker_index(const loom__worker *w);
int loom__worker_core(const loom__worker *w);
int loom__worker_numa(const loom__worker *w);
loom__pool *loom__worker_pool(const loom__worker *w);

/* The core budget (runtime/cores.h), from w's NUMA node.  Before running a
 * node, take tokens for the node's threads; give them back when it ends.
 * take: blocks until at least one token is free, then takes up to `want`
 * (or, exact, blocks until it holds exactly min(want, total)); returns how
 * many it took.  Never call take while holding tokens. */
int loom__worker_cores_take(loom__worker *w, int want, bool exact);
void loom__worker_cores_give(loom__worker *w, int n);
/* The tokens of w's NUMA node (the widest a node can run there). */
int loom__worker_cores_total(const loom__worker *w);

/* ---- Introspection ---------------------------------------------------- */

int loom__pool_size(const loom__pool *pool);
/* The first worker placed on NUMA node `numa` (-1: none), and how many
 * NUMA nodes have workers. */
int loom__pool_numa_worker(const loom__pool *pool, int numa);
int loom__pool_numa_domains(const loom__pool *pool);
/* Whether worker w is the first of its NUMA node (its team master when
 * wide nodes go to their home node). */
bool loom__pool_numa_first(const loom__pool *pool, int w);
/* Whether every NUMA node with workers has as many core tokens as the
 * others: then a node's team is as wide on one as on another. */
bool loom__pool_numa_balanced(const loom__pool *pool);
const loom__topology *loom__pool_topology(const loom__pool *pool);
/* The core worker w is placed on. */
int loom__pool_worker_core(const loom__pool *pool, int w);
/* How binding went for worker w (worker 0, the caller, is never bound:
 * LOOM__BIND_SKIPPED); *msg (when msg is non-NULL) gets a message owned by
 * the pool, "" when bound. */
loom__bind_status loom__pool_bind_status(const loom__pool *pool, int w, const char **msg);

/* Counters since the pool was created, for worker w, or summed over all
 * workers when w < 0.  Approximate while a batch runs. */
typedef struct loom__pool_stats {
    int64_t tasks;         /* tasks finished (run or skipped) */
    int64_t skipped;       /* tasks skipped after a failure */
    int64_t steals;        /* tasks stolen from another worker's deque or overflow queue */
    int64_t steal_aborts;  /* steals that lost a race (LOOM__STEAL_ABORT) */
    int64_t failed_rounds; /* rounds over all victims that found nothing */
    int64_t parks;         /* times a worker went to sleep */
    int64_t overflows;     /* tasks that went to an overflow queue */
} loom__pool_stats;
void loom__pool_get_stats(const loom__pool *pool, int w, loom__pool_stats *out);

/* Writes the topology and the placement table, with each worker's binding
 * status, like loom__topology_describe (snprintf semantics). */
size_t loom__pool_describe(const loom__pool *pool, char *buf, size_t size);

#endif /* LOOM_RUNTIME_POOL_H */
