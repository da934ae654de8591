/*
 * loom/dist.h - data-parallel training across processes with MPI, as
 * PyTorch's DistributedDataParallel does it, without Python.
 *
 * Each rank holds a replica of the model and trains on its shard of every
 * batch; loom_dist_backward averages the gradients over the ranks, so every
 * replica takes the same optimizer step and stays bitwise identical:
 *
 *     loom_dist *d;
 *     loom_dist_init(&argc, &argv, NULL, &d);          // MPI_COMM_WORLD
 *     loom_dist_broadcast_module(d, net);              // rank 0's weights everywhere
 *     lo.num_replicas = loom_dist_size(d); lo.rank = loom_dist_rank(d);  // DataLoader shard
 *     for (...) {
 *         loom_optimizer_zero_grad(opt);
 *         loom_dist_backward(d, net, loss);            // backward + averaged gradients
 *         loom_optimizer_step(opt);
 *     }
 *     if (loom_dist_rank(d) == 0) loom_checkpoint_save(...);
 *     loom_dist_free(d);                               // MPI_Finalize if Loom initialised MPI
 *
 * How: the parameters' gradients are grouped into buckets of about
 * bucket_mb (in reverse registration order, the order backward produces
 * them), and each bucket's reduction is a node of the backward DAG: it
 * runs as soon as the bucket's gradients are computed, beside the rest of
 * the backward, on one worker thread holding one core of the budget (so
 * compute and communication together never exceed the cores). A bucket is
 * reduce-scattered and all-gathered (non-blocking MPI, progressed by that
 * worker): each element is summed once, by one rank, so every rank gets
 * the same bits. The buckets run in the same order on every rank. BatchNorm
 * statistics stay per rank, as DDP's default.
 *
 * Failure: every collective waits at most timeout_s for the other ranks,
 * then fails with a message naming this rank, the operation and the wait;
 * MPI cannot cancel a collective, so the caller should then end the job
 * with loom_dist_abort. Models that differ between ranks are refused by
 * loom_dist_broadcast_module, naming the first rank that differs and how.
 *
 * Built only with MPI (configure --with-mpi; Open MPI from Debian's
 * libopenmpi-dev). Without it loom_dist_available() is false and every
 * call fails with LOOM_ERR_STATE saying so. Calls are made from the
 * thread that drives training (MPI_THREAD_SERIALIZED), never concurrently.
 */
#ifndef LOOM_DIST_H
#define LOOM_DIST_H

#include <stdbool.h>
#include <stdint.h>

#include "loom/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_dist loom_dist;

typedef struct loom_dist_options {
    double bucket_mb; /* gradient bucket size in MB (2^20 bytes); 0: 25, PyTorch's default */
    double timeout_s; /* how long a collective waits for the other ranks; 0: 300 */
} loom_dist_options;

/* Whether Loom was built with MPI. */
bool loom_dist_available(void);

/* Joins MPI_COMM_WORLD, initialising MPI (MPI_THREAD_SERIALIZED) unless
 * the program already did; argc and argv may be NULL. Sets *out; free it
 * with loom_dist_free. */
loom_status loom_dist_init(int *argc, char ***argv, const loom_dist_options *opts, loom_dist **out);

/* Joins the caller's communicator: comm points to an MPI_Comm (it is
 * duplicated; MPI must be initialised with at least
 * MPI_THREAD_SERIALIZED). */
loom_status loom_dist_from_comm(const void *comm, const loom_dist_options *opts, loom_dist **out);

/* This process's rank and the number of ranks (0 and 1 for NULL). */
int loom_dist_rank(const loom_dist *d);
int loom_dist_size(const loom_dist *d);

/* Checks that every rank built the same model (the names, shapes and
 * dtypes of m's parameters and buffers; LOOM_ERR_SHAPE naming the first
 * rank that differs and the first difference), then copies rank 0's
 * parameters and buffers to every rank, so that the replicas start
 * identical. Collective: every rank calls it. */
loom_status loom_dist_broadcast_module(loom_dist *d, loom_module *m);

/* loom_backward(loss), with the gradients of m's parameters averaged over
 * the ranks (bucketed, overlapped with the backward; see above). Every
 * parameter of m that requires grad must get a gradient on every rank
 * (LOOM_ERR_STATE naming it otherwise, as DDP without
 * find_unused_parameters). Other leaves get their local gradients.
 * Collective. */
loom_status loom_dist_backward(loom_dist *d, loom_module *m, loom_tensor *loss);

/* values[0..n) replaced by their mean over the ranks (metrics: losses,
 * accuracies). Collective. */
loom_status loom_dist_allreduce_mean(loom_dist *d, double *values, int n);

/* Waits for every rank (within the timeout). Collective. */
loom_status loom_dist_barrier(loom_dist *d);

/* Ends the whole job (MPI_Abort with code): after an error the other ranks
 * cannot get past, such as a timed-out collective. Does not return. */
void loom_dist_abort(loom_dist *d, int code);

/* Communication counters of this rank. */
typedef struct loom_dist_stats {
    int64_t buckets;     /* gradient buckets reduced */
    int64_t bytes;       /* their size */
    double comm_seconds; /* time inside the bucket reductions */
} loom_dist_stats;
void loom_dist_get_stats(const loom_dist *d, loom_dist_stats *out);

/* Frees d; finalises MPI if loom_dist_init initialised it. NULL: no-op. */
void loom_dist_free(loom_dist *d);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_DIST_H */
