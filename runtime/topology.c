/*
 * runtime/topology.c - reading the machine (hwloc or flat), placement,
 * victim orders, binding, and the `loom info` text (see topology.h).
 *
 * Everything hwloc-specific is confined to load_hwloc() and bind_hwloc();
 * the rest works on the plain arrays of struct loom__topology, so placement
 * and victim orders behave the same with and without hwloc.
 */
#include "config.h"

#define _GNU_SOURCE /* sched_getaffinity, CPU_SET, pthread_setaffinity_np */

#include "runtime/topology.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef LOOM_HAVE_HWLOC
#include <hwloc.h>
#endif

#include "runtime/error.h"

typedef struct core_info {
    int l3, numa, package;
    int os_index; /* the PU the scheduler uses: the core's first */
    int pu_first; /* its PUs are pus[pu_first .. pu_first + pu_count - 1] */
    int pu_count;
} core_info;

struct loom__topology {
    int ncores, nl3, nnuma, npackages, npus;
    core_info *cores;
    int *pus; /* OS PU numbers of every core, grouped by core */
    /* numa_level[a * nnuma + b]: for NUMA nodes of different packages, the
     * distance between them (4 + rank of their latency); see topology.h. */
    int *numa_level;
    bool this_system;
    char source[160];
#ifdef LOOM_HAVE_HWLOC
    hwloc_topology_t hw; /* NULL for a flat topology */
    hwloc_bitmap_t *core_sets; /* each core's cpuset, owned by hw */
#endif
};

/* ---- Small helpers ---------------------------------------------------- */

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static loom__topology *topo_alloc(int ncores, int npus)
{
    loom__topology *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->cores = calloc((size_t)ncores, sizeof *t->cores);
    t->pus = calloc((size_t)npus, sizeof *t->pus);
    if (!t->cores || !t->pus) {
        free(t->cores);
        free(t->pus);
        free(t);
        return NULL;
    }
    t->ncores = ncores;
    t->npus = npus;
    return t;
}

void loom__topology_free(loom__topology *t)
{
    if (!t) return;
#ifdef LOOM_HAVE_HWLOC
    free(t->core_sets);
    if (t->hw) hwloc_topology_destroy(t->hw);
#endif
    free(t->numa_level);
    free(t->cores);
    free(t->pus);
    free(t);
}

/* Fills numa_level from a latency matrix lat[nnuma * nnuma] (NULL: none).
 * Only pairs of NUMA nodes in different packages get a level >= 4. */
static loom_status set_numa_levels(loom__topology *t, const uint64_t *lat)
{
    int n = t->nnuma;
    t->numa_level = malloc(sizeof(int) * (size_t)n * (size_t)n);
    int *pkg = malloc(sizeof(int) * (size_t)n);
    uint64_t *vals = malloc(sizeof(uint64_t) * (size_t)n * (size_t)n);
    if (!t->numa_level || !pkg || !vals) {
        free(pkg);
        free(vals);
        return LOOM_ERR_NOMEM;
    }
    for (int c = 0; c < t->ncores; c++) pkg[t->cores[c].numa] = t->cores[c].package;
    /* The distinct cross-package latencies, ascending. */
    int nv = 0;
    if (lat)
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++)
                if (pkg[a] != pkg[b]) vals[nv++] = lat[a * n + b];
    for (int i = 1; i < nv; i++) /* insertion sort: nv is tiny */
        for (int j = i; j > 0 && vals[j - 1] > vals[j]; j--) {
            uint64_t x = vals[j];
            vals[j] = vals[j - 1];
            vals[j - 1] = x;
        }
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            int level = 4;
            if (lat && pkg[a] != pkg[b]) {
                uint64_t v = lat[a * n + b];
                for (int i = 0; i < nv; i++) /* rank among distinct values below v */
                    if (vals[i] < v && (i == 0 || vals[i] != vals[i - 1])) level++;
            }
            t->numa_level[a * n + b] = level;
        }
    free(pkg);
    free(vals);
    return LOOM_OK;
}

/* ---- Flat topologies --------------------------------------------------- */

/* ncores > 0: a test topology of that many cores, PU k = core k, not this
 * system.  ncores == 0: the CPUs this process may run on. */
static loom__topology *load_flat(int ncores)
{
    int *os = NULL;
    int n = ncores;
    const char *how = "test";
    bool this_system = ncores == 0;
    if (this_system) {
#ifdef __linux__
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) {
            n = CPU_COUNT(&set);
            os = malloc(sizeof(int) * (size_t)n);
            if (!os) return NULL;
            int k = 0;
            for (int cpu = 0; cpu < CPU_SETSIZE && k < n; cpu++)
                if (CPU_ISSET(cpu, &set)) os[k++] = cpu;
            how = "sched_getaffinity";
        }
#endif
        if (!os) {
            long online = sysconf(_SC_NPROCESSORS_ONLN);
            n = online > 0 ? (int)online : 1;
            how = "sysconf";
        }
    }
    loom__topology *t = topo_alloc(n, n);
    if (!t) {
        free(os);
        return NULL;
    }
    for (int c = 0; c < n; c++) {
        t->pus[c] = os ? os[c] : c;
        t->cores[c] = (core_info){.l3 = 0, .numa = 0, .package = 0, .os_index = t->pus[c], .pu_first = c,
                                  .pu_count = 1};
    }
    free(os);
    t->nl3 = t->nnuma = t->npackages = 1;
    t->this_system = this_system;
    if (this_system)
        snprintf(t->source, sizeof t->source, "flat (%s), this system", how);
    else
        snprintf(t->source, sizeof t->source, "flat (%d test cores)", n);
    return t;
}

/* ---- hwloc ------------------------------------------------------------ */

#ifdef LOOM_HAVE_HWLOC
/* Renumbers keys[0..n-1] (arbitrary ints) by order of first appearance and
 * returns the number of distinct keys.  O(n^2), n = cores: fine. */
static int renumber(int *keys, int n)
{
    int *ids = malloc(sizeof(int) * (size_t)(n ? n : 1));
    int *seen = malloc(sizeof(int) * (size_t)(n ? n : 1));
    int nseen = 0;
    if (!ids || !seen) {
        free(ids);
        free(seen);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        int j = 0;
        while (j < nseen && seen[j] != keys[i]) j++;
        if (j == nseen) seen[nseen++] = keys[i];
        ids[i] = j;
    }
    memcpy(keys, ids, sizeof(int) * (size_t)n);
    free(ids);
    free(seen);
    return nseen;
}

/* Reads an hwloc topology that is already loaded into a new loom__topology,
 * which takes ownership of hw on success. */
static loom__topology *from_hwloc(hwloc_topology_t hw)
{
    hwloc_obj_type_t core_type = HWLOC_OBJ_CORE;
    int ncores = hwloc_get_nbobjs_by_type(hw, HWLOC_OBJ_CORE);
    if (ncores <= 0) { /* no cores reported: treat every PU as a core */
        core_type = HWLOC_OBJ_PU;
        ncores = hwloc_get_nbobjs_by_type(hw, HWLOC_OBJ_PU);
    }
    if (ncores <= 0) {
        loom__set_error(LOOM_ERR_STATE, "topology: hwloc found no cores");
        return NULL;
    }
    int npus = 0;
    for (int c = 0; c < ncores; c++) {
        int w = hwloc_bitmap_weight(hwloc_get_obj_by_type(hw, core_type, (unsigned)c)->cpuset);
        npus += w > 0 ? w : 1;
    }
    loom__topology *t = topo_alloc(ncores, npus);
    int *l3 = malloc(sizeof(int) * (size_t)ncores);
    int *numa = malloc(sizeof(int) * (size_t)ncores);
    int *pkg = malloc(sizeof(int) * (size_t)ncores);
    int nnuma_hw = hwloc_get_nbobjs_by_type(hw, HWLOC_OBJ_NUMANODE);
    int *numa_map = malloc(sizeof(int) * (size_t)(nnuma_hw > 0 ? nnuma_hw : 1)); /* hwloc -> ours */
    if (t) t->core_sets = calloc((size_t)ncores, sizeof *t->core_sets);
    if (!t || !t->core_sets || !l3 || !numa || !pkg || !numa_map) goto nomem;

    int pu = 0;
    for (int c = 0; c < ncores; c++) {
        hwloc_obj_t core = hwloc_get_obj_by_type(hw, core_type, (unsigned)c);
        t->core_sets[c] = core->cpuset;
        /* L3: the L3 cache above the core; none: a group of its own (keys
         * below zero cannot collide with logical indices). */
        hwloc_obj_t cache = hwloc_get_ancestor_obj_by_type(hw, HWLOC_OBJ_L3CACHE, core);
        l3[c] = cache ? (int)cache->logical_index : -1 - c;
        /* NUMA: hwloc 2.x NUMA nodes are memory children, not ancestors;
         * take the first node whose cpuset covers the core. */
        numa[c] = 0;
        for (int i = 0; i < nnuma_hw; i++) {
            hwloc_obj_t node = hwloc_get_obj_by_type(hw, HWLOC_OBJ_NUMANODE, (unsigned)i);
            if (hwloc_bitmap_isincluded(core->cpuset, node->cpuset)) {
                numa[c] = i;
                break;
            }
        }
        hwloc_obj_t package = hwloc_get_ancestor_obj_by_type(hw, HWLOC_OBJ_PACKAGE, core);
        pkg[c] = package ? (int)package->logical_index : 0;
        t->cores[c].pu_first = pu;
        int id;
        hwloc_bitmap_foreach_begin(id, core->cpuset)
        {
            if (pu < npus) t->pus[pu++] = id;
        }
        hwloc_bitmap_foreach_end();
        if (pu == t->cores[c].pu_first) t->pus[pu++] = (int)core->os_index; /* an empty cpuset: cannot happen */
        t->cores[c].pu_count = pu - t->cores[c].pu_first;
        t->cores[c].os_index = t->pus[t->cores[c].pu_first];
    }
    for (int i = 0; i < nnuma_hw; i++) numa_map[i] = -1;
    int *numa_hw = malloc(sizeof(int) * (size_t)ncores);
    if (!numa_hw) goto nomem;
    memcpy(numa_hw, numa, sizeof(int) * (size_t)ncores);
    if ((t->nl3 = renumber(l3, ncores)) < 0 || (t->nnuma = renumber(numa, ncores)) < 0 ||
        (t->npackages = renumber(pkg, ncores)) < 0) {
        free(numa_hw);
        goto nomem;
    }
    for (int c = 0; c < ncores; c++) {
        t->cores[c].l3 = l3[c];
        t->cores[c].numa = numa[c];
        t->cores[c].package = pkg[c];
        if (nnuma_hw > 0) numa_map[numa_hw[c]] = numa[c];
    }
    free(numa_hw);

    /* NUMA latencies (ACPI SLIT on real machines; none on synthetic ones). */
    uint64_t *lat = NULL;
    struct hwloc_distances_s *dist = NULL;
    unsigned nr = 1;
    if (hwloc_distances_get_by_type(hw, HWLOC_OBJ_NUMANODE, &nr, &dist, HWLOC_DISTANCES_KIND_MEANS_LATENCY, 0) ==
            0 &&
        nr >= 1 && dist) {
        int n = t->nnuma;
        lat = calloc((size_t)n * (size_t)n, sizeof *lat);
        if (lat)
            for (unsigned i = 0; i < dist->nbobjs; i++)
                for (unsigned j = 0; j < dist->nbobjs; j++) {
                    unsigned li = dist->objs[i]->logical_index, lj = dist->objs[j]->logical_index;
                    if ((int)li >= nnuma_hw || (int)lj >= nnuma_hw) continue;
                    int a = numa_map[li], b = numa_map[lj];
                    if (a >= 0 && b >= 0) lat[a * n + b] = dist->values[i * dist->nbobjs + j];
                }
        hwloc_distances_release(hw, dist);
    }
    loom_status st = set_numa_levels(t, lat);
    free(lat);
    if (st != LOOM_OK) goto nomem;

    free(l3);
    free(numa);
    free(pkg);
    free(numa_map);
    t->hw = hw;
    t->this_system = hwloc_topology_is_thissystem(hw) != 0;
    return t;

nomem:
    free(l3);
    free(numa);
    free(pkg);
    free(numa_map);
    loom__topology_free(t); /* t->hw is still NULL: hw stays the caller's */
    loom__set_error(LOOM_ERR_NOMEM, "topology: out of memory");
    return NULL;
}

static loom__topology *load_hwloc(const char *synthetic, bool *fall_back)
{
    hwloc_topology_t hw;
    *fall_back = false;
    if (hwloc_topology_init(&hw) != 0) {
        *fall_back = synthetic == NULL;
        loom__set_error(LOOM_ERR_STATE, "topology: hwloc_topology_init failed");
        return NULL;
    }
    if (synthetic && hwloc_topology_set_synthetic(hw, synthetic) != 0) {
        hwloc_topology_destroy(hw);
        loom__set_error(LOOM_ERR_INVALID_ARG, "topology: bad hwloc synthetic description \"%s\"", synthetic);
        return NULL;
    }
    if (hwloc_topology_load(hw) != 0) {
        int e = errno;
        hwloc_topology_destroy(hw);
        *fall_back = synthetic == NULL;
        loom__set_error(LOOM_ERR_STATE, "topology: hwloc_topology_load failed: %s", strerror(e));
        return NULL;
    }
    loom__topology *t = from_hwloc(hw);
    if (!t) {
        hwloc_topology_destroy(hw);
        return NULL;
    }
    const char *env_syn = getenv("HWLOC_SYNTHETIC"), *env_xml = getenv("HWLOC_XMLFILE");
    if (synthetic)
        snprintf(t->source, sizeof t->source, "hwloc synthetic \"%s\"", synthetic);
    else if (env_xml && *env_xml && !t->this_system)
        snprintf(t->source, sizeof t->source, "hwloc XML \"%s\" (HWLOC_XMLFILE)", env_xml);
    else if (env_syn && *env_syn && !t->this_system)
        snprintf(t->source, sizeof t->source, "hwloc synthetic \"%s\" (HWLOC_SYNTHETIC)", env_syn);
    else
        snprintf(t->source, sizeof t->source, "hwloc %s%s", HWLOC_VERSION,
                 t->this_system ? ", this system" : ", not this system");
    return t;
}
#endif /* LOOM_HAVE_HWLOC */

loom__topology *loom__topology_create(const loom__topology_options *o)
{
    loom__topology_options none = {0};
    if (!o) o = &none;
    if (o->flat_cores < 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "topology: flat_cores %d is negative", o->flat_cores);
        return NULL;
    }
    loom__topology *t = NULL;
    bool flat = o->flat || o->flat_cores > 0;
    if (flat) {
        if (o->synthetic) {
            loom__set_error(LOOM_ERR_INVALID_ARG, "topology: a synthetic description and a flat topology were both asked for");
            return NULL;
        }
        t = load_flat(o->flat_cores);
        if (!t) {
            loom__set_error(LOOM_ERR_NOMEM, "topology: out of memory");
            return NULL;
        }
        if (set_numa_levels(t, NULL) != LOOM_OK) {
            loom__topology_free(t);
            loom__set_error(LOOM_ERR_NOMEM, "topology: out of memory");
            return NULL;
        }
    } else {
#ifdef LOOM_HAVE_HWLOC
        bool fall_back;
        t = load_hwloc(o->synthetic, &fall_back);
        if (!t && fall_back) {
            /* hwloc could not read this machine: run flat rather than not at all. */
            char why[200];
            snprintf(why, sizeof why, "%s", loom_last_error());
            t = load_flat(0);
            if (t && set_numa_levels(t, NULL) != LOOM_OK) {
                loom__topology_free(t);
                t = NULL;
            }
            if (!t) {
                loom__set_error(LOOM_ERR_NOMEM, "topology: out of memory");
                return NULL;
            }
            snprintf(t->source, sizeof t->source, "flat, this system (%.120s)", why);
        }
        if (!t) return NULL;
#else
        if (o->synthetic) {
            loom__set_error(LOOM_ERR_STATE,
                            "topology: synthetic description \"%s\" needs hwloc, and Loom was built without it",
                            o->synthetic);
            return NULL;
        }
        t = load_flat(0);
        if (!t || set_numa_levels(t, NULL) != LOOM_OK) {
            loom__topology_free(t);
            loom__set_error(LOOM_ERR_NOMEM, "topology: out of memory");
            return NULL;
        }
#endif
    }
    if (o->numa_latency) {
        if (o->numa_latency_n != t->nnuma) {
            loom__set_error(LOOM_ERR_INVALID_ARG, "topology: numa_latency is %dx%d but there are %d NUMA nodes",
                            o->numa_latency_n, o->numa_latency_n, t->nnuma);
            loom__topology_free(t);
            return NULL;
        }
        free(t->numa_level);
        t->numa_level = NULL;
        if (set_numa_levels(t, o->numa_latency) != LOOM_OK) {
            loom__topology_free(t);
            loom__set_error(LOOM_ERR_NOMEM, "topology: out of memory");
            return NULL;
        }
    }
    return t;
}

/* ---- Queries ---------------------------------------------------------- */

int loom__topology_ncores(const loom__topology *t) { return t->ncores; }
int loom__topology_nl3(const loom__topology *t) { return t->nl3; }
int loom__topology_nnuma(const loom__topology *t) { return t->nnuma; }
int loom__topology_npackages(const loom__topology *t) { return t->npackages; }
int loom__topology_npus(const loom__topology *t) { return t->npus; }
bool loom__topology_is_this_system(const loom__topology *t) { return t->this_system; }
const char *loom__topology_source(const loom__topology *t) { return t->source; }

static const core_info *core_at(const loom__topology *t, int core)
{
    LOOM_ASSERT(core >= 0 && core < t->ncores);
    return &t->cores[core];
}

int loom__topology_core_l3(const loom__topology *t, int core) { return core_at(t, core)->l3; }
int loom__topology_core_numa(const loom__topology *t, int core) { return core_at(t, core)->numa; }
int loom__topology_core_package(const loom__topology *t, int core) { return core_at(t, core)->package; }
int loom__topology_core_os_index(const loom__topology *t, int core) { return core_at(t, core)->os_index; }

int loom__topology_core_pus(const loom__topology *t, int core, int *out, int max)
{
    const core_info *c = core_at(t, core);
    for (int i = 0; i < c->pu_count && i < max; i++) out[i] = t->pus[c->pu_first + i];
    return c->pu_count;
}

int loom__topology_distance(const loom__topology *t, int a, int b)
{
    const core_info *x = core_at(t, a), *y = core_at(t, b);
    if (a == b) return 0;
    if (x->l3 == y->l3) return 1;
    if (x->numa == y->numa) return 2;
    if (x->package == y->package) return 3;
    return t->numa_level[x->numa * t->nnuma + y->numa];
}

/* ---- Placement -------------------------------------------------------- */

const char *loom__place_policy_name(loom__place_policy p)
{
    switch (p) {
    case LOOM__PLACE_SPREAD: return "spread";
    case LOOM__PLACE_COMPACT: return "compact";
    default: return "unknown";
    }
}

loom_status loom__place_policy_parse(const char *s, loom__place_policy *out)
{
    for (int p = 0; p < LOOM__PLACE_COUNT; p++)
        if (s && strcmp(s, loom__place_policy_name((loom__place_policy)p)) == 0) {
            *out = (loom__place_policy)p;
            return LOOM_OK;
        }
    return loom__set_error(LOOM_ERR_INVALID_ARG, "placement policy \"%s\" is not \"spread\" or \"compact\"",
                           s ? s : "(null)");
}

static int level_key(const loom__topology *t, int core, int level)
{
    const core_info *c = &t->cores[core];
    return level == 0 ? c->package : level == 1 ? c->numa : c->l3;
}

/* Writes cores[0..n-1] (ascending) to out in spread order: every prefix of
 * out is spread as evenly as possible over the packages, within each
 * package over its NUMA nodes, and within each node over its L3 groups.
 * It interleaves the spread orders of the groups at this level round-robin:
 * group A's first core, group B's first, ..., A's second, B's second, ...
 * so that any prefix takes floor or ceil of its length / groups from each
 * group (until a group runs out), and takes a well-spread prefix of each
 * group's own order.  tmp has room for n ints. */
static void spread_order(const loom__topology *t, const int *cores, int n, int level, int *out, int *tmp)
{
    if (level == 3 || n <= 1) {
        memcpy(out, cores, sizeof(int) * (size_t)n);
        return;
    }
    /* Stable partition of cores by key into tmp, groups in order of their
     * first (lowest) core. */
    int ngroups = 0, start[n + 1], gkey[n], gsize[n];
    for (int i = 0; i < n; i++) {
        int key = level_key(t, cores[i], level), g = 0;
        while (g < ngroups && gkey[g] != key) g++;
        if (g == ngroups) {
            gkey[ngroups] = key;
            gsize[ngroups++] = 0;
        }
        gsize[g]++;
    }
    start[0] = 0;
    for (int g = 0; g < ngroups; g++) {
        start[g + 1] = start[g] + gsize[g];
        gsize[g] = 0;
    }
    for (int i = 0; i < n; i++) {
        int key = level_key(t, cores[i], level), g = 0;
        while (gkey[g] != key) g++;
        tmp[start[g] + gsize[g]++] = cores[i];
    }
    /* Each group's own spread order goes to out[start[g]..]; the
     * interleaving of those orders goes back to tmp, then to out. */
    int scratch[n];
    for (int g = 0; g < ngroups; g++)
        spread_order(t, tmp + start[g], start[g + 1] - start[g], level + 1, out + start[g], scratch);
    int k = 0;
    for (int r = 0; k < n; r++)
        for (int g = 0; g < ngroups; g++)
            if (start[g] + r < start[g + 1]) tmp[k++] = out[start[g] + r];
    memcpy(out, tmp, sizeof(int) * (size_t)n);
}

loom_status loom__topology_place(const loom__topology *t, int nworkers, const int *cores, int ncores,
                                 loom__place_policy policy, int *worker_core)
{
    if (nworkers < 1)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "placement: %d workers (need at least 1)", nworkers);
    if (policy < 0 || policy >= LOOM__PLACE_COUNT)
        return loom__set_error(LOOM_ERR_INVALID_ARG, "placement: unknown policy %d", (int)policy);
    int n = t->ncores;
    int *allowed = calloc((size_t)(n > 0 ? n : 1), sizeof(int)); /* zeroed: gcc -O3 with sanitizers warns otherwise */
    int *order = malloc(sizeof(int) * (size_t)n);
    int *tmp = malloc(sizeof(int) * (size_t)n);
    if (!allowed || !order || !tmp) {
        free(allowed);
        free(order);
        free(tmp);
        return loom__set_error(LOOM_ERR_NOMEM, "placement: out of memory");
    }
    int na = 0;
    if (cores && ncores > 0) {
        bool *use = calloc((size_t)n, sizeof *use);
        if (!use) {
            free(allowed);
            free(order);
            free(tmp);
            return loom__set_error(LOOM_ERR_NOMEM, "placement: out of memory");
        }
        for (int i = 0; i < ncores; i++) {
            if (cores[i] < 0 || cores[i] >= n) {
                free(use);
                free(allowed);
                free(order);
                free(tmp);
                return loom__set_error(LOOM_ERR_RANGE, "placement: core %d is out of range (the machine has %d cores)",
                                       cores[i], n);
            }
            use[cores[i]] = true;
        }
        for (int c = 0; c < n; c++)
            if (use[c]) allowed[na++] = c;
        free(use);
    } else {
        for (int c = 0; c < n; c++) allowed[na++] = c;
    }
    if (policy == LOOM__PLACE_SPREAD)
        spread_order(t, allowed, na, 0, order, tmp);
    else
        memcpy(order, allowed, sizeof(int) * (size_t)na);
    for (int w = 0; w < nworkers; w++) worker_core[w] = order[w % na];
    qsort(worker_core, (size_t)nworkers, sizeof(int), cmp_int);
    free(allowed);
    free(order);
    free(tmp);
    return LOOM_OK;
}

typedef struct victim_key {
    int worker, dist, rot;
} victim_key;

static int cmp_victim(const void *a, const void *b)
{
    const victim_key *x = a, *y = b;
    if (x->dist != y->dist) return x->dist < y->dist ? -1 : 1;
    return (x->rot > y->rot) - (x->rot < y->rot);
}

void loom__topology_victims(const loom__topology *t, const int *worker_core, int nworkers, int w, int *victims)
{
    LOOM_ASSERT(w >= 0 && w < nworkers);
    if (nworkers <= 1) return;
    victim_key keys[nworkers - 1];
    int k = 0;
    for (int v = 0; v < nworkers; v++) {
        if (v == w) continue;
        keys[k++] = (victim_key){.worker = v,
                                 .dist = loom__topology_distance(t, worker_core[w], worker_core[v]),
                                 .rot = (v - w + nworkers) % nworkers};
    }
    qsort(keys, (size_t)k, sizeof keys[0], cmp_victim);
    for (int i = 0; i < k; i++) victims[i] = keys[i].worker;
}

loom_status loom__parse_core_list(const char *s, int ncores, int *out, int max, int *n)
{
    *n = 0;
    if (!s || !*s) return loom__set_error(LOOM_ERR_INVALID_ARG, "core list is empty");
    bool *use = calloc((size_t)(ncores > 0 ? ncores : 1), sizeof *use);
    if (!use) return loom__set_error(LOOM_ERR_NOMEM, "core list: out of memory");
    const char *p = s;
    loom_status st = LOOM_OK;
    while (*p) {
        char *end;
        errno = 0;
        long lo = strtol(p, &end, 10), hi;
        if (end == p || errno || lo < 0) {
            st = loom__set_error(LOOM_ERR_INVALID_ARG, "core list \"%s\": bad number at \"%s\"", s, p);
            break;
        }
        hi = lo;
        p = end;
        if (*p == '-') {
            const char *q = p + 1;
            errno = 0;
            hi = strtol(q, &end, 10);
            if (end == q || errno || hi < lo) {
                st = loom__set_error(LOOM_ERR_INVALID_ARG, "core list \"%s\": bad range at \"%s\"", s, p);
                break;
            }
            p = end;
        }
        if (hi >= ncores) {
            st = loom__set_error(LOOM_ERR_RANGE, "core list \"%s\": core %ld is out of range (the machine has %d cores)",
                                 s, hi, ncores);
            break;
        }
        for (long c = lo; c <= hi; c++) use[c] = true;
        if (*p == ',') {
            p++;
            if (!*p) {
                st = loom__set_error(LOOM_ERR_INVALID_ARG, "core list \"%s\": trailing comma", s);
                break;
            }
        } else if (*p) {
            st = loom__set_error(LOOM_ERR_INVALID_ARG, "core list \"%s\": unexpected \"%s\"", s, p);
            break;
        }
    }
    if (st == LOOM_OK) {
        for (int c = 0; c < ncores; c++) {
            if (!use[c]) continue;
            if (*n == max) {
                st = loom__set_error(LOOM_ERR_RANGE, "core list \"%s\": more than %d cores", s, max);
                break;
            }
            out[(*n)++] = c;
        }
    }
    if (st != LOOM_OK) *n = 0;
    free(use);
    return st;
}

/* ---- Binding ---------------------------------------------------------- */

int loom__topology_bind_cores(const loom__topology *t, const int *worker_core, int nworkers, int w,
                              loom__bind_level level, int *out)
{
    LOOM_ASSERT(w >= 0 && w < nworkers);
    if (level == LOOM__BIND_NONE) return 0;
    const core_info *me = core_at(t, worker_core[w]);
    int n = 0;
    for (int v = 0; v < nworkers; v++) {
        int c = worker_core[v];
        const core_info *x = core_at(t, c);
        bool same = level == LOOM__BIND_CORE ? c == worker_core[w]
                    : level == LOOM__BIND_L3 ? x->l3 == me->l3
                                             : x->numa == me->numa;
        if (!same) continue;
        bool dup = false;
        for (int i = 0; i < n && !dup; i++) dup = out[i] == c;
        if (!dup) out[n++] = c;
    }
    qsort(out, (size_t)n, sizeof(int), cmp_int);
    return n;
}

static void bind_msg(char *msg, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void bind_msg(char *msg, size_t size, const char *fmt, ...)
{
    if (!msg || !size) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, size, fmt, ap);
    va_end(ap);
}

int loom__topology_bind_area(void *ptr, size_t len, int numa, void *topology)
{
    const loom__topology *t = topology;
    if (!t || !ptr || len == 0 || !t->this_system || t->nnuma < 2 || numa < 0 || numa >= t->nnuma) return 1;
#ifdef LOOM_HAVE_HWLOC
    if (!t->hw) return 1;
    hwloc_obj_t node = hwloc_get_obj_by_type(t->hw, HWLOC_OBJ_NUMANODE, (unsigned)numa);
    if (!node) return 1;
    return hwloc_set_area_membind(t->hw, ptr, len, node->nodeset, HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET) == 0
               ? 0
               : -1;
#else
    return 1;
#endif
}

loom__bind_status loom__topology_bind_thread(const loom__topology *t, const int *cores, int n, char *msg,
                                             size_t msg_size)
{
    bind_msg(msg, msg_size, "%s", "");
    if (n <= 0) {
        bind_msg(msg, msg_size, "no cores to bind to");
        return LOOM__BIND_SKIPPED;
    }
    if (!t->this_system) {
        bind_msg(msg, msg_size, "not this system (%s): binding skipped", t->source);
        return LOOM__BIND_SKIPPED;
    }
    for (int i = 0; i < n; i++) LOOM_ASSERT(cores[i] >= 0 && cores[i] < t->ncores);
#ifdef LOOM_HAVE_HWLOC
    if (t->hw) {
        hwloc_bitmap_t set = hwloc_bitmap_alloc();
        if (!set) {
            bind_msg(msg, msg_size, "out of memory");
            return LOOM__BIND_FAILED;
        }
        for (int i = 0; i < n; i++) hwloc_bitmap_or(set, set, t->core_sets[cores[i]]);
        int rc = hwloc_set_cpubind(t->hw, set, HWLOC_CPUBIND_THREAD);
        int e = errno;
        if (rc != 0) {
            char *str = NULL;
            hwloc_bitmap_list_asprintf(&str, set);
            bind_msg(msg, msg_size, "hwloc_set_cpubind(%s): %s", str ? str : "?", strerror(e));
            free(str);
        }
        hwloc_bitmap_free(set);
        return rc == 0 ? LOOM__BIND_OK : LOOM__BIND_FAILED;
    }
#endif
#ifdef __linux__
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < n; i++) {
        const core_info *c = &t->cores[cores[i]];
        for (int k = 0; k < c->pu_count; k++)
            if (t->pus[c->pu_first + k] < CPU_SETSIZE) CPU_SET(t->pus[c->pu_first + k], &set);
    }
    int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (rc != 0) {
        bind_msg(msg, msg_size, "pthread_setaffinity_np: %s", strerror(rc));
        return LOOM__BIND_FAILED;
    }
    return LOOM__BIND_OK;
#else
    bind_msg(msg, msg_size, "binding is not supported on this platform without hwloc");
    return LOOM__BIND_SKIPPED;
#endif
}

/* ---- Description ------------------------------------------------------ */

typedef struct text {
    char *buf;
    size_t size, len;
} text;

static void put(text *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = x->len < x->size ? x->size - x->len : 0;
    int n = vsnprintf(room ? x->buf + x->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) x->len += (size_t)n;
}

/* "0-3,8" for a list of ascending ints. */
static void put_list(text *x, const int *v, int n)
{
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && v[j + 1] == v[j] + 1) j++;
        put(x, "%s%d", i ? "," : "", v[i]);
        if (j > i) put(x, "-%d", v[j]);
        i = j + 1;
    }
}

size_t loom__topology_describe(const loom__topology *t, const int *worker_core, int nworkers, char *buf,
                               size_t size)
{
    text x = {.buf = buf, .size = size, .len = 0};
    if (size) buf[0] = '\0';
    put(&x, "topology: %s\n", t->source);
    put(&x, "  %d package%s, %d NUMA node%s, %d L3 group%s, %d core%s, %d PU%s; binding %s\n", t->npackages,
        t->npackages == 1 ? "" : "s", t->nnuma, t->nnuma == 1 ? "" : "s", t->nl3, t->nl3 == 1 ? "" : "s",
        t->ncores, t->ncores == 1 ? "" : "s", t->npus, t->npus == 1 ? "" : "s",
        t->this_system ? "real" : "skipped (not this system)");
    int *list = malloc(sizeof(int) * (size_t)(t->npus > t->ncores ? t->npus : t->ncores));
    if (!list) {
        put(&x, "  (out of memory)\n");
        return x.len;
    }
    /* Cores are in logical (depth-first) order, so each package, NUMA node
     * and L3 group is a run of cores; print the tree by walking them. */
    for (int c = 0; c < t->ncores; c++) {
        const core_info *ci = &t->cores[c];
        bool new_pkg = c == 0 || t->cores[c - 1].package != ci->package;
        bool new_numa = new_pkg || t->cores[c - 1].numa != ci->numa;
        bool new_l3 = new_numa || t->cores[c - 1].l3 != ci->l3;
        if (new_pkg) put(&x, "  package %d\n", ci->package);
        if (new_numa) put(&x, "    NUMA node %d\n", ci->numa);
        if (new_l3) put(&x, "      L3 group %d:", ci->l3);
        int npu = loom__topology_core_pus(t, c, list, t->npus);
        put(&x, " core %d (PU ", c);
        put_list(&x, list, npu);
        put(&x, ")");
        bool end_l3 = c + 1 == t->ncores || t->cores[c + 1].l3 != ci->l3 || t->cores[c + 1].numa != ci->numa ||
                      t->cores[c + 1].package != ci->package;
        if (end_l3) put(&x, "\n");
    }
    if (t->nnuma > 1) {
        put(&x, "  NUMA distance levels (4 = nearest other package):\n");
        for (int a = 0; a < t->nnuma; a++) {
            put(&x, "   ");
            for (int b = 0; b < t->nnuma; b++) {
                int lvl = 0;
                /* same package: 3 (or 2 when the same node) */
                int pa = -1, pb = -1;
                for (int c = 0; c < t->ncores; c++) {
                    if (t->cores[c].numa == a) pa = t->cores[c].package;
                    if (t->cores[c].numa == b) pb = t->cores[c].package;
                }
                lvl = a == b ? 2 : pa == pb ? 3 : t->numa_level[a * t->nnuma + b];
                put(&x, " %d", lvl);
            }
            put(&x, "\n");
        }
    }
    if (nworkers > 0 && worker_core) {
        put(&x, "workers: %d\n", nworkers);
        put(&x, "  %-6s %-5s %-5s %-4s %-4s %-7s %s\n", "worker", "core", "PU", "L3", "NUMA", "package",
            "victims, nearest first");
        int *victims = malloc(sizeof(int) * (size_t)nworkers);
        for (int w = 0; w < nworkers; w++) {
            const core_info *ci = &t->cores[worker_core[w]];
            put(&x, "  %-6d %-5d %-5d %-4d %-4d %-7d", w, worker_core[w], ci->os_index, ci->l3, ci->numa,
                ci->package);
            if (victims && nworkers > 1) {
                loom__topology_victims(t, worker_core, nworkers, w, victims);
                int shown = nworkers - 1 < 16 ? nworkers - 1 : 16;
                for (int i = 0; i < shown; i++) put(&x, " %d", victims[i]);
                if (shown < nworkers - 1) put(&x, " ...");
            }
            put(&x, "\n");
        }
        free(victims);
    }
    free(list);
    return x.len;
}
