/*
 * runtime/topology.h - the machine as the scheduler sees it: cores, L3
 * groups, NUMA nodes, packages, distances; where workers go and whom they
 * steal from; binding threads to cores.
 *
 * A topology is read with hwloc when Loom was built with it (LOOM_HAVE_HWLOC)
 * and is otherwise flat: one package, one NUMA node, one L3 group, with the
 * CPUs this process may run on.  For tests a topology can be built from an
 * hwloc synthetic description such as "pack:2 [numa] core:4 pu:1" (2
 * packages of 4 cores, one NUMA node each); hwloc itself also honours the
 * environment variables HWLOC_SYNTHETIC and HWLOC_XMLFILE, so a whole program
 * can be run on a fake machine without code changes.
 *
 * Indices.  Cores are numbered 0..ncores-1 in hwloc's logical order, which
 * walks the tree depth first (package by package, NUMA node by NUMA node, L3
 * by L3), so nearby cores have nearby numbers.  L3 groups, NUMA nodes and
 * packages are numbered 0..n-1 in the order their first core appears.  The
 * scheduler uses one hardware thread (PU) per core: the core's first PU,
 * whose operating-system number is loom__topology_core_os_index(); binding
 * uses all the PUs of the cores in the set.
 *
 * L3 groups.  An L3 group is the set of cores under one L3 cache.  A core
 * with no L3 above it (hwloc synthetic trees without caches, some virtual
 * machines) is an L3 group by itself: it shares no L3 with anyone.  The flat
 * topology assumes one L3 shared by all cores (a typical one-socket machine).
 *
 * Distance between cores a and b:
 *     0  the same core
 *     1  the same L3 group
 *     2  the same NUMA node (different L3)
 *     3  the same package (different NUMA node and L3)
 *     4+ different packages: 4 when the NUMA latencies are unknown; when
 *        hwloc reports a NUMA distance matrix (ACPI SLIT) or the options
 *        give one, 4 + the rank of latency(numa a, numa b) among the
 *        distinct latencies between NUMA nodes of different packages, so
 *        the nearest remote package is 4, the next 5, and so on.
 *
 * Usage (e.g. from `loom info`):
 *
 *     loom__topology *t = loom__topology_create(NULL);      // this machine
 *     int wc[8];
 *     loom__topology_place(t, 8, NULL, 0, LOOM__PLACE_SPREAD, wc);
 *     char buf[8192];
 *     loom__topology_describe(t, wc, 8, buf, sizeof buf);
 *     puts(buf);
 *     loom__topology_free(t);
 *
 * A topology is immutable after creation; all functions taking a const
 * topology may be called from any number of threads at once.
 */
#ifndef LOOM_RUNTIME_TOPOLOGY_H
#define LOOM_RUNTIME_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loom/status.h"

typedef struct loom__topology loom__topology;

typedef struct loom__topology_options {
    /* An hwloc synthetic description ("pack:2 l3:2 [numa] core:2 pu:2");
     * NULL: this machine (or whatever HWLOC_SYNTHETIC / HWLOC_XMLFILE
     * describe).  Needs hwloc: fails with LOOM_ERR_STATE without it. */
    const char *synthetic;
    /* true: ignore hwloc even when built with it and read a flat topology
     * from the CPUs this process may run on (sched_getaffinity, else
     * sysconf). */
    bool flat;
    /* > 0: a flat topology of this many cores that is not this system
     * (binding is a no-op); for tests.  Implies `flat`. */
    int flat_cores;
    /* Optional NUMA latencies, numa_latency_n x numa_latency_n row-major,
     * indexed by Loom's NUMA numbers; numa_latency_n must equal the number
     * of NUMA nodes.  They replace hwloc's distance matrix (tests inject
     * fake latencies with this).  Copied; NULL: use hwloc's, if any. */
    const uint64_t *numa_latency;
    int numa_latency_n;
} loom__topology_options;

/* Builds a topology.  `o` may be NULL (this machine).  Returns NULL with the
 * thread's last error set on a bad synthetic string, bad options or no
 * memory.  When hwloc cannot read this machine, falls back to a flat
 * topology (loom__topology_source says so).  Free with loom__topology_free. */
loom__topology *loom__topology_create(const loom__topology_options *o);
void loom__topology_free(loom__topology *t);

/* Counts (each >= 1). */
int loom__topology_ncores(const loom__topology *t);
int loom__topology_nl3(const loom__topology *t);
int loom__topology_nnuma(const loom__topology *t);
int loom__topology_npackages(const loom__topology *t);
/* Total PUs (hardware threads) of all cores. */
int loom__topology_npus(const loom__topology *t);

/* True when the topology describes the machine this process runs on, so
 * binding is real (hwloc_topology_is_thissystem); false for synthetic and
 * test topologies. */
bool loom__topology_is_this_system(const loom__topology *t);

/* A one-line description of where the topology came from, e.g.
 * "hwloc 2.9.0, this system" or "hwloc synthetic \"pack:2 [numa] core:4
 * pu:1\"" or "flat (sched_getaffinity)".  Owned by t. */
const char *loom__topology_source(const loom__topology *t);

/* Per core (0 <= core < ncores; out-of-range is an assertion failure). */
int loom__topology_core_l3(const loom__topology *t, int core);
int loom__topology_core_numa(const loom__topology *t, int core);
int loom__topology_core_package(const loom__topology *t, int core);
/* The OS number of the PU the scheduler uses on this core (its first). */
int loom__topology_core_os_index(const loom__topology *t, int core);
/* The core's cpuset as OS PU numbers: writes up to `max` of them to out
 * (ascending) and returns how many the core has. */
int loom__topology_core_pus(const loom__topology *t, int core, int *out, int max);

/* The distance between two cores (see the top of this file). */
int loom__topology_distance(const loom__topology *t, int a, int b);

/* ---- Worker placement ------------------------------------------------- */

typedef enum loom__place_policy {
    /* Spread: workers are spread as evenly as possible over packages, then
     * over the NUMA nodes of each package, then over the L3 groups of each
     * NUMA node, then over cores; more workers than cores wrap around, so
     * core k gets either floor(N/C) or ceil(N/C) workers.  Best for
     * bandwidth and for using every cache, and the default. */
    LOOM__PLACE_SPREAD = 0,
    /* Compact: fill cores in logical order (an L3 group, then the next one
     * in the same NUMA node, ...), so N workers use the fewest L3 groups and
     * NUMA nodes.  Best when workers share data heavily. */
    LOOM__PLACE_COMPACT,
    LOOM__PLACE_COUNT
} loom__place_policy;

/* "spread" / "compact". */
const char *loom__place_policy_name(loom__place_policy p);
/* Parses "spread" / "compact" into *out; LOOM_ERR_INVALID_ARG otherwise. */
loom_status loom__place_policy_parse(const char *s, loom__place_policy *out);

/* Assigns `nworkers` (>= 1) workers to cores: worker i runs on core
 * worker_core[i].  `cores` lists the cores Loom may use (ncores of them,
 * any order, duplicates ignored); NULL or ncores == 0 means all cores.
 * Workers are numbered in ascending core order (workers sharing a core are
 * adjacent), so worker 0 is on the lowest allowed core that is used.
 * Deterministic: the same inputs always give the same placement. */
loom_status loom__topology_place(const loom__topology *t, int nworkers, const int *cores, int ncores,
                                 loom__place_policy policy, int *worker_core);

/* Worker w's victims: all other workers, nearest first.  Sorted by the
 * distance between their cores (the same core, then the same L3 group, the
 * same NUMA node, the same package, then by NUMA latency), ties broken by
 * (v - w) mod nworkers ascending, so that workers at equal distance start
 * their scans at different victims.  Writes nworkers - 1 indices. */
void loom__topology_victims(const loom__topology *t, const int *worker_core, int nworkers, int w, int *victims);

/* Parses a core list such as "0-3,8,10-11" (logical core numbers, as
 * `loom info` prints them) into out[0..*n-1], ascending, without
 * duplicates.  Every core must be < ncores.  LOOM_ERR_INVALID_ARG with a
 * message naming the bad part; LOOM_ERR_RANGE when there are more than
 * `max` cores or one is out of range. */
loom_status loom__parse_core_list(const char *s, int ncores, int *out, int max, int *n);

/* ---- Binding ---------------------------------------------------------- */

/* Which cpuset a worker is bound to: the PUs of the placed cores (the
 * cores some worker runs on) that share the worker's core, L3 group or
 * NUMA node.  NUMA is the default: OpenMP team threads that a worker starts
 * inherit its binding, and a team must be able to spread over the domain
 * (shared/notes/runtime.md section 3). */
typedef enum loom__bind_level {
    LOOM__BIND_NUMA = 0,
    LOOM__BIND_L3,
    LOOM__BIND_CORE,
    LOOM__BIND_NONE,
    LOOM__BIND_LEVEL_COUNT
} loom__bind_level;

/* The cores worker w is bound to at `level` (see above), ascending, into
 * out (room for nworkers); returns how many (0 for LOOM__BIND_NONE). */
int loom__topology_bind_cores(const loom__topology *t, const int *worker_core, int nworkers, int w,
                              loom__bind_level level, int *out);

typedef enum loom__bind_status {
    LOOM__BIND_OK = 0,  /* the calling thread is bound */
    LOOM__BIND_SKIPPED, /* nothing done: not this system, or no cores given */
    LOOM__BIND_FAILED,  /* the OS refused; the thread runs unbound */
    LOOM__BIND_STATUS_COUNT
} loom__bind_status;

/* Binds the calling thread to the union of the cpusets of cores[0..n-1]
 * (hwloc_set_cpubind with HWLOC_CPUBIND_THREAD; pthread_setaffinity_np on a
 * flat Linux topology).  Never fails hard: on failure the thread stays as
 * it was, and a message goes to msg (when msg is non-NULL) for the caller
 * to log.  A no-op returning LOOM__BIND_SKIPPED when the topology is not
 * this system.  Thread-safe. */
loom__bind_status loom__topology_bind_thread(const loom__topology *t, const int *cores, int n, char *msg,
                                             size_t msg_size);

/* Binds the pages of [ptr, ptr + len) to NUMA node `numa` (an index as
 * loom__topology_core_numa gives; hwloc_set_area_membind, HWLOC_MEMBIND_BIND)
 * so that they are placed there when first touched. Returns 0 when bound,
 * 1 when there is nothing to do (not this system, one NUMA node, no
 * hwloc), -1 when the OS refused (the memory then stays where the default
 * policy puts it). Thread-safe. The signature is runtime/mem.h's binder. */
int loom__topology_bind_area(void *ptr, size_t len, int numa, void *topology);

/* ---- Description ------------------------------------------------------ */

/* Writes a tiny lstopo (packages, NUMA nodes, L3 groups, cores and their
 * PUs) and, when nworkers > 0, a placement table (worker, core, PU, L3,
 * NUMA, package, victims nearest first) into buf, like snprintf: always
 * NUL-terminated when size > 0, and returns the length the whole text
 * needs (excluding the NUL), so a caller can size a buffer with a first
 * call of size 0. */
size_t loom__topology_describe(const loom__topology *t, const int *worker_core, int nworkers, char *buf,
                               size_t size);

#endif /* LOOM_RUNTIME_TOPOLOGY_H */
