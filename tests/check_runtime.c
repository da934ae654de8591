/*
 * tests/check_runtime.c - the scheduler's ground floor: the Chase-Lev deque
 * (exactly-once, owner LIFO, thieves FIFO, full deques), the topology
 * (hwloc synthetic trees, flat machines: counts, placement, victim orders,
 * distances), and the work-stealing pool (trees of tasks with 1, 2 and 8
 * workers, errors, overflow, parking, many pools).
 *
 * Check forks every test, so each test creates its own threads and pools.
 * The deque and pool tests are also run under ThreadSanitizer
 * (docs/runtime.md, "ThreadSanitizer").
 */
#include "config.h"

#define _POSIX_C_SOURCE 200809L /* setenv, nanosleep */

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "tests/check_suites.h"

#include "runtime/deque.h"
#include "runtime/error.h"
#include "runtime/mem.h"
#include "runtime/pool.h"
#include "runtime/scratch.h"
#include "runtime/topology.h"

#define ITEM(i) ((void *)(uintptr_t)(i))
#define ID(p) ((int64_t)(uintptr_t)(p))

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void assert_ints(const int *got, const int *want, int n, const char *what)
{
    for (int i = 0; i < n; i++) ck_assert_msg(got[i] == want[i], "%s[%d] is %d, expected %d", what, i, got[i], want[i]);
}

/* ======================================================================
 * Deque
 * ====================================================================== */

START_TEST(test_deque_basic)
{
    ck_assert_ptr_null(loom__deque_create(3));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "power of two"));
    ck_assert_ptr_null(loom__deque_create(1));
    ck_assert_ptr_null(loom__deque_create(0));

    loom__deque *d = loom__deque_create(8);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(loom__deque_capacity(d), 8);
    void *x;
    ck_assert(!loom__deque_take(d, &x));
    ck_assert_int_eq(loom__deque_steal(d, &x), LOOM__STEAL_EMPTY);

    /* Full at capacity; a failed push changes nothing. */
    for (int i = 1; i <= 8; i++) ck_assert(loom__deque_push(d, ITEM(i)));
    ck_assert(!loom__deque_push(d, ITEM(99)));
    ck_assert_int_eq(loom__deque_size(d), 8);
    /* Owner LIFO. */
    for (int i = 8; i >= 5; i--) {
        ck_assert(loom__deque_take(d, &x));
        ck_assert_int_eq(ID(x), i);
    }
    /* Thief FIFO from the other end. */
    for (int i = 1; i <= 3; i++) {
        ck_assert_int_eq(loom__deque_steal(d, &x), LOOM__STEAL_OK);
        ck_assert_int_eq(ID(x), i);
    }
    ck_assert(loom__deque_take(d, &x)); /* the last item, through the CAS path */
    ck_assert_int_eq(ID(x), 4);
    ck_assert(!loom__deque_take(d, &x));
    ck_assert_int_eq(loom__deque_steal(d, &x), LOOM__STEAL_EMPTY);
    ck_assert_int_eq(loom__deque_size(d), 0);

    /* NULL is an item like any other. */
    ck_assert(loom__deque_push(d, NULL));
    x = ITEM(5);
    ck_assert(loom__deque_take(d, &x));
    ck_assert_ptr_null(x);
    loom__deque_free(d);
    loom__deque_free(NULL);
}
END_TEST

/* Single-threaded wrap-around: indices run far past the capacity; the deque
 * must always behave as a model double-ended queue. */
START_TEST(test_deque_wraparound)
{
    loom__deque *d = loom__deque_create(4);
    ck_assert_ptr_nonnull(d);
    int64_t model[4], lo = 0, hi = 0, next = 1; /* model[lo..hi) mod 4 */
    uint32_t rng = 12345;
    for (int step = 0; step < 100000; step++) {
        rng = rng * 1103515245u + 12345u;
        int op = (int)((rng >> 16) % 3);
        void *x;
        if (op == 0) {
            bool ok = loom__deque_push(d, ITEM(next));
            ck_assert(ok == (hi - lo < 4));
            if (ok) model[(hi++) % 4] = next++;
        } else if (op == 1) {
            bool ok = loom__deque_take(d, &x);
            ck_assert(ok == (hi > lo));
            if (ok) ck_assert_int_eq(ID(x), model[(--hi) % 4]);
        } else {
            loom__steal_result r = loom__deque_steal(d, &x);
            ck_assert_int_eq(r, hi > lo ? LOOM__STEAL_OK : LOOM__STEAL_EMPTY);
            if (r == LOOM__STEAL_OK) ck_assert_int_eq(ID(x), model[(lo++) % 4]);
        }
        ck_assert_int_eq(loom__deque_size(d), hi - lo);
    }
    loom__deque_free(d);
}
END_TEST

#define STRESS_ITEMS 200000
#define STRESS_THIEVES 3

typedef struct stress {
    loom__deque *d;
    /* Items are pointers to payload[i], which the owner writes (plainly, not
     * atomically) just before pushing it: the deque's release/acquire must
     * order that write before the thief's read, or TSan reports a race. */
    int64_t *payload;
    _Atomic int64_t removed; /* items taken or stolen, all threads */
    _Atomic bool owner_done;
    /* Per thread: the items it got, in order.  Thread 0 is the owner. */
    int64_t *got[STRESS_THIEVES + 1];
    int64_t ngot[STRESS_THIEVES + 1];
    int64_t aborts;
    int bad_fifo; /* a thief saw a non-increasing item */
} stress;

typedef struct thief_arg {
    stress *s;
    int id;
} thief_arg;

/* Reads the payload an item points to; -1 if it disagrees with the slot. */
static int64_t payload_id(const stress *s, void *x)
{
    int64_t id = *(const int64_t *)x;
    return id == (const int64_t *)x - s->payload ? id : -1;
}

static void *thief_main(void *arg)
{
    thief_arg *a = arg;
    stress *s = a->s;
    int64_t last = 0, aborts = 0;
    while (atomic_load_explicit(&s->removed, memory_order_relaxed) < STRESS_ITEMS) {
        void *x;
        loom__steal_result r = loom__deque_steal(s->d, &x);
        if (r == LOOM__STEAL_OK) {
            x = ITEM(payload_id(s, x));
            /* Items are pushed in increasing order and top only grows, so
             * each thief sees increasing items (FIFO). */
            if (ID(x) <= last) s->bad_fifo++;
            last = ID(x);
            s->got[a->id][s->ngot[a->id]++] = ID(x);
            atomic_fetch_add_explicit(&s->removed, 1, memory_order_relaxed);
        } else if (r == LOOM__STEAL_ABORT) {
            aborts++;
        } else if (atomic_load_explicit(&s->owner_done, memory_order_relaxed)) {
            sched_yield();
        }
    }
    if (a->id == 1) s->aborts = aborts;
    return NULL;
}

/* One owner pushes 200,000 items in bursts into a small deque (so it is
 * often full) and takes some back; three thieves steal.  Every item must be
 * removed exactly once; the owner must see LIFO and the thieves FIFO. */
START_TEST(test_deque_stress)
{
    stress s = {0};
    s.d = loom__deque_create(256);
    ck_assert_ptr_nonnull(s.d);
    s.payload = calloc(STRESS_ITEMS + 1, sizeof *s.payload);
    ck_assert_ptr_nonnull(s.payload);
    for (int i = 0; i <= STRESS_THIEVES; i++) {
        s.got[i] = malloc(sizeof(int64_t) * STRESS_ITEMS);
        ck_assert_ptr_nonnull(s.got[i]);
    }
    pthread_t th[STRESS_THIEVES];
    thief_arg args[STRESS_THIEVES];
    for (int i = 0; i < STRESS_THIEVES; i++) {
        args[i] = (thief_arg){&s, i + 1};
        ck_assert_int_eq(pthread_create(&th[i], NULL, thief_main, &args[i]), 0);
    }

    int64_t next = 1, last_pushed = 0, last_taken = 0;
    bool pushed_since_take = false;
    int bad_lifo = 0, fulls = 0;
    uint32_t rng = 99;
    while (next <= STRESS_ITEMS) {
        rng = rng * 1103515245u + 12345u;
        int burst = 1 + (int)((rng >> 16) % 64);
        for (int k = 0; k < burst && next <= STRESS_ITEMS; k++) {
            s.payload[next] = next;
            if (!loom__deque_push(s.d, &s.payload[next])) {
                fulls++;
                break; /* full: the caller would overflow; here we take instead */
            }
            last_pushed = next++;
            pushed_since_take = true;
        }
        int takes = (int)((rng >> 8) % 4);
        for (int k = 0; k < takes; k++) {
            void *x;
            if (!loom__deque_take(s.d, &x)) break;
            x = ITEM(payload_id(&s, x));
            /* LIFO: right after pushes the owner gets the newest item (a
             * thief can only take it when it is the last one, and then the
             * take fails); otherwise each take is older than the previous. */
            if (pushed_since_take ? ID(x) != last_pushed : ID(x) >= last_taken) bad_lifo++;
            last_taken = ID(x);
            pushed_since_take = false;
            s.got[0][s.ngot[0]++] = ID(x);
            atomic_fetch_add_explicit(&s.removed, 1, memory_order_relaxed);
        }
    }
    atomic_store(&s.owner_done, true);
    /* Drain what the thieves leave. */
    void *x;
    while (atomic_load(&s.removed) < STRESS_ITEMS) {
        if (loom__deque_take(s.d, &x)) {
            x = ITEM(payload_id(&s, x));
            s.got[0][s.ngot[0]++] = ID(x);
            atomic_fetch_add_explicit(&s.removed, 1, memory_order_relaxed);
        }
    }
    for (int i = 0; i < STRESS_THIEVES; i++) pthread_join(th[i], NULL);

    ck_assert_int_eq(bad_lifo, 0);
    ck_assert_int_eq(s.bad_fifo, 0);
    ck_assert_msg(fulls > 0, "the deque never filled up");
    uint8_t *seen = calloc(STRESS_ITEMS + 1, 1);
    ck_assert_ptr_nonnull(seen);
    int64_t total = 0;
    for (int t = 0; t <= STRESS_THIEVES; t++) {
        total += s.ngot[t];
        for (int64_t i = 0; i < s.ngot[t]; i++) {
            int64_t v = s.got[t][i];
            ck_assert_msg(v >= 1 && v <= STRESS_ITEMS, "bogus item %lld", (long long)v);
            ck_assert_msg(!seen[v], "item %lld removed twice", (long long)v);
            seen[v] = 1;
        }
    }
    ck_assert_int_eq(total, STRESS_ITEMS);
    ck_assert(!loom__deque_take(s.d, &x));
    free(seen);
    for (int i = 0; i <= STRESS_THIEVES; i++) free(s.got[i]);
    free(s.payload);
    loom__deque_free(s.d);
}
END_TEST

/* ======================================================================
 * Topology
 * ====================================================================== */

#define SYN_A "pack:2 [numa] core:4 pu:1"
#define SYN_B "pack:2 l3:2 [numa] core:2 pu:2"

static void assert_place(const loom__topology *t, int n, const int *cores, int ncores, loom__place_policy p,
                         const int *want)
{
    int got[64];
    ck_assert_int_eq(loom__topology_place(t, n, cores, ncores, p, got), LOOM_OK);
    for (int i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i], "%s placement of %d workers: worker %d on core %d, expected %d",
                      loom__place_policy_name(p), n, i, got[i], want[i]);
}

static void assert_victims(const loom__topology *t, const int *wc, int n, int w, const int *want)
{
    int got[64];
    loom__topology_victims(t, wc, n, w, got);
    for (int i = 0; i < n - 1; i++)
        ck_assert_msg(got[i] == want[i], "worker %d of %d: victim %d is %d, expected %d", w, n, i, got[i], want[i]);
}

#ifdef LOOM_HAVE_HWLOC
static loom__topology *synthetic(const char *s)
{
    loom__topology *t = loom__topology_create(&(loom__topology_options){.synthetic = s});
    ck_assert_msg(t != NULL, "%s: %s", s, loom_last_error());
    return t;
}

START_TEST(test_topology_synthetic_numa)
{
    loom__topology *t = synthetic(SYN_A);
    ck_assert_int_eq(loom__topology_ncores(t), 8);
    ck_assert_int_eq(loom__topology_npus(t), 8);
    ck_assert_int_eq(loom__topology_nnuma(t), 2);
    ck_assert_int_eq(loom__topology_npackages(t), 2);
    ck_assert_int_eq(loom__topology_nl3(t), 8); /* no L3 caches: each core is its own group */
    ck_assert(!loom__topology_is_this_system(t));
    ck_assert_ptr_nonnull(strstr(loom__topology_source(t), "synthetic"));
    for (int c = 0; c < 8; c++) {
        ck_assert_int_eq(loom__topology_core_numa(t, c), c / 4);
        ck_assert_int_eq(loom__topology_core_package(t, c), c / 4);
        ck_assert_int_eq(loom__topology_core_l3(t, c), c);
        ck_assert_int_eq(loom__topology_core_os_index(t, c), c);
    }
    ck_assert_int_eq(loom__topology_distance(t, 2, 2), 0);
    ck_assert_int_eq(loom__topology_distance(t, 0, 3), 2);
    ck_assert_int_eq(loom__topology_distance(t, 5, 6), 2);
    ck_assert_int_eq(loom__topology_distance(t, 0, 4), 4);
    ck_assert_int_eq(loom__topology_distance(t, 7, 3), 4);

    /* Spread alternates packages: 0, 4, 1, 5, ...; workers sorted by core. */
    assert_place(t, 2, NULL, 0, LOOM__PLACE_SPREAD, (int[]){0, 4});
    assert_place(t, 4, NULL, 0, LOOM__PLACE_SPREAD, (int[]){0, 1, 4, 5});
    assert_place(t, 8, NULL, 0, LOOM__PLACE_SPREAD, (int[]){0, 1, 2, 3, 4, 5, 6, 7});
    assert_place(t, 16, NULL, 0, LOOM__PLACE_SPREAD, (int[]){0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7});
    assert_place(t, 10, NULL, 0, LOOM__PLACE_SPREAD, (int[]){0, 0, 1, 2, 3, 4, 4, 5, 6, 7});
    assert_place(t, 4, NULL, 0, LOOM__PLACE_COMPACT, (int[]){0, 1, 2, 3});
    assert_place(t, 16, NULL, 0, LOOM__PLACE_COMPACT, (int[]){0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7});

    /* Victims, 8 workers on 8 cores: same NUMA node first, rotated. */
    int wc[16];
    ck_assert_int_eq(loom__topology_place(t, 8, NULL, 0, LOOM__PLACE_SPREAD, wc), LOOM_OK);
    assert_victims(t, wc, 8, 0, (int[]){1, 2, 3, 4, 5, 6, 7});
    assert_victims(t, wc, 8, 2, (int[]){3, 0, 1, 4, 5, 6, 7});
    assert_victims(t, wc, 8, 6, (int[]){7, 4, 5, 0, 1, 2, 3});
    /* 4 workers (cores 0, 1, 4, 5). */
    ck_assert_int_eq(loom__topology_place(t, 4, NULL, 0, LOOM__PLACE_SPREAD, wc), LOOM_OK);
    assert_victims(t, wc, 4, 0, (int[]){1, 2, 3});
    assert_victims(t, wc, 4, 2, (int[]){3, 0, 1});
    assert_victims(t, wc, 4, 3, (int[]){2, 0, 1});
    /* 16 workers: the one on the same core comes first. */
    ck_assert_int_eq(loom__topology_place(t, 16, NULL, 0, LOOM__PLACE_SPREAD, wc), LOOM_OK);
    assert_victims(t, wc, 16, 9, (int[]){8, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
    assert_victims(t, wc, 16, 0, (int[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});

    /* Binding on a synthetic topology is a no-op that says so. */
    char msg[256];
    ck_assert_int_eq(loom__topology_bind_thread(t, (int[]){0, 1}, 2, msg, sizeof msg), LOOM__BIND_SKIPPED);
    ck_assert_ptr_nonnull(strstr(msg, "not this system"));
    loom__topology_free(t);
}
END_TEST

START_TEST(test_topology_synthetic_l3)
{
    loom__topology *t = synthetic(SYN_B);
    ck_assert_int_eq(loom__topology_ncores(t), 8);
    ck_assert_int_eq(loom__topology_npus(t), 16);
    ck_assert_int_eq(loom__topology_nl3(t), 4);
    ck_assert_int_eq(loom__topology_nnuma(t), 4);
    ck_assert_int_eq(loom__topology_npackages(t), 2);
    for (int c = 0; c < 8; c++) {
        ck_assert_int_eq(loom__topology_core_l3(t, c), c / 2);
        ck_assert_int_eq(loom__topology_core_numa(t, c), c / 2);
        ck_assert_int_eq(loom__topology_core_package(t, c), c / 4);
        ck_assert_int_eq(loom__topology_core_os_index(t, c), 2 * c);
    }
    int pus[4];
    ck_assert_int_eq(loom__topology_core_pus(t, 3, pus, 4), 2);
    assert_ints(pus, (int[]){6, 7}, 2, "core 3's PUs");
    ck_assert_int_eq(loom__topology_distance(t, 0, 1), 1); /* same L3 */
    ck_assert_int_eq(loom__topology_distance(t, 0, 2), 3); /* same package */
    ck_assert_int_eq(loom__topology_distance(t, 1, 3), 3);
    ck_assert_int_eq(loom__topology_distance(t, 0, 4), 4); /* other package */
    ck_assert_int_eq(loom__topology_distance(t, 6, 7), 1);

    /* Spread: packages, then the NUMA nodes (= L3 groups) inside them. */
    assert_place(t, 2, NULL, 0, LOOM__PLACE_SPREAD, (int[]){0, 4});
    assert_place(t, 4, NULL, 0, LOOM__PLACE_SPREAD, (int[]){0, 2, 4, 6});
    assert_place(t, 6, NULL, 0, LOOM__PLACE_SPREAD, (int[]){0, 1, 2, 4, 5, 6});
    assert_place(t, 8, NULL, 0, LOOM__PLACE_SPREAD, (int[]){0, 1, 2, 3, 4, 5, 6, 7});
    assert_place(t, 16, NULL, 0, LOOM__PLACE_SPREAD, (int[]){0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7});
    assert_place(t, 4, NULL, 0, LOOM__PLACE_COMPACT, (int[]){0, 1, 2, 3});
    assert_place(t, 2, NULL, 0, LOOM__PLACE_COMPACT, (int[]){0, 1});
    /* A core list: package 1 only; duplicates and order do not matter. */
    assert_place(t, 2, (int[]){7, 4, 5, 6, 4}, 5, LOOM__PLACE_SPREAD, (int[]){4, 6});
    assert_place(t, 3, (int[]){1, 6}, 2, LOOM__PLACE_SPREAD, (int[]){1, 1, 6});

    int wc[16];
    ck_assert_int_eq(loom__topology_place(t, 8, NULL, 0, LOOM__PLACE_SPREAD, wc), LOOM_OK);
    assert_victims(t, wc, 8, 0, (int[]){1, 2, 3, 4, 5, 6, 7});
    assert_victims(t, wc, 8, 5, (int[]){4, 6, 7, 0, 1, 2, 3});
    assert_victims(t, wc, 8, 3, (int[]){2, 0, 1, 4, 5, 6, 7});
    ck_assert_int_eq(loom__topology_place(t, 4, NULL, 0, LOOM__PLACE_SPREAD, wc), LOOM_OK); /* 0 2 4 6 */
    assert_victims(t, wc, 4, 0, (int[]){1, 2, 3});
    assert_victims(t, wc, 4, 2, (int[]){3, 0, 1});
    assert_victims(t, wc, 4, 1, (int[]){0, 2, 3});
    ck_assert_int_eq(loom__topology_place(t, 16, NULL, 0, LOOM__PLACE_SPREAD, wc), LOOM_OK);
    assert_victims(t, wc, 16, 5, (int[]){4, 6, 7, 0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15});
    assert_victims(t, wc, 16, 12, (int[]){13, 14, 15, 8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 6, 7});

    /* Bind sets: the placed cores of the worker's NUMA node / L3 / core. */
    ck_assert_int_eq(loom__topology_place(t, 8, NULL, 0, LOOM__PLACE_SPREAD, wc), LOOM_OK);
    int cores[16];
    ck_assert_int_eq(loom__topology_bind_cores(t, wc, 8, 5, LOOM__BIND_NUMA, cores), 2);
    assert_ints(cores, (int[]){4, 5}, 2, "bind cores");
    ck_assert_int_eq(loom__topology_bind_cores(t, wc, 8, 5, LOOM__BIND_CORE, cores), 1);
    ck_assert_int_eq(cores[0], 5);
    ck_assert_int_eq(loom__topology_bind_cores(t, wc, 8, 5, LOOM__BIND_NONE, cores), 0);

    /* The description: a tiny lstopo and the placement table. */
    size_t need = loom__topology_describe(t, wc, 8, NULL, 0);
    char *buf = malloc(need + 1);
    ck_assert_int_eq(loom__topology_describe(t, wc, 8, buf, need + 1), need);
    ck_assert_uint_eq(strlen(buf), need);
    ck_assert_ptr_nonnull(strstr(buf, "2 packages, 4 NUMA nodes, 4 L3 groups, 8 cores, 16 PUs"));
    ck_assert_ptr_nonnull(strstr(buf, "NUMA node 3"));
    ck_assert_ptr_nonnull(strstr(buf, "L3 group 1: core 2 (PU 4-5) core 3 (PU 6-7)"));
    ck_assert_ptr_nonnull(strstr(buf, "workers: 8"));
    char small[16];
    ck_assert_int_eq(loom__topology_describe(t, wc, 8, small, sizeof small), need);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    free(buf);
    loom__topology_free(t);
}
END_TEST

/* Fake NUMA latencies refine the distance between packages. */
START_TEST(test_topology_numa_latency)
{
    /* 4 packages of one core; latency 10 + 10 * |a - b|. */
    uint64_t lat[16];
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) lat[a * 4 + b] = 10 + 10 * (uint64_t)(a > b ? a - b : b - a);
    loom__topology *t = loom__topology_create(
        &(loom__topology_options){.synthetic = "pack:4 [numa] core:1 pu:1", .numa_latency = lat, .numa_latency_n = 4});
    ck_assert_msg(t != NULL, "%s", loom_last_error());
    ck_assert_int_eq(loom__topology_distance(t, 0, 1), 4);
    ck_assert_int_eq(loom__topology_distance(t, 0, 2), 5);
    ck_assert_int_eq(loom__topology_distance(t, 0, 3), 6);
    ck_assert_int_eq(loom__topology_distance(t, 3, 2), 4);
    int wc[4] = {0, 1, 2, 3};
    assert_victims(t, wc, 4, 0, (int[]){1, 2, 3});
    assert_victims(t, wc, 4, 3, (int[]){2, 1, 0});
    assert_victims(t, wc, 4, 2, (int[]){3, 1, 0}); /* 1 and 3 tie: rotation from 2 puts 3 first */
    loom__topology_free(t);

    /* Without latencies every other package is 4. */
    t = synthetic("pack:4 [numa] core:1 pu:1");
    ck_assert_int_eq(loom__topology_distance(t, 0, 3), 4);
    assert_victims(t, wc, 4, 2, (int[]){3, 0, 1});
    loom__topology_free(t);

    /* A matrix of the wrong size is refused. */
    ck_assert_ptr_null(loom__topology_create(
        &(loom__topology_options){.synthetic = "pack:2 [numa] core:1 pu:1", .numa_latency = lat, .numa_latency_n = 4}));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_INVALID_ARG);
}
END_TEST

START_TEST(test_topology_errors_and_env)
{
    ck_assert_ptr_null(loom__topology_create(&(loom__topology_options){.synthetic = "bogus:7"}));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "synthetic"));
    ck_assert_ptr_null(loom__topology_create(&(loom__topology_options){.synthetic = SYN_A, .flat_cores = 2}));

    /* HWLOC_SYNTHETIC is handled by hwloc itself (this test runs in its own
     * process under CK_FORK; the variable is removed anyway). */
    setenv("HWLOC_SYNTHETIC", SYN_B, 1);
    loom__topology *t = loom__topology_create(NULL);
    unsetenv("HWLOC_SYNTHETIC");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(loom__topology_ncores(t), 8);
    ck_assert_int_eq(loom__topology_nnuma(t), 4);
    ck_assert(!loom__topology_is_this_system(t));
    ck_assert_ptr_nonnull(strstr(loom__topology_source(t), "HWLOC_SYNTHETIC"));
    loom__topology_free(t);
}
END_TEST
#endif /* LOOM_HAVE_HWLOC */

START_TEST(test_topology_flat)
{
    loom__topology *t = loom__topology_create(&(loom__topology_options){.flat_cores = 6});
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(loom__topology_ncores(t), 6);
    ck_assert_int_eq(loom__topology_nl3(t), 1);
    ck_assert_int_eq(loom__topology_nnuma(t), 1);
    ck_assert_int_eq(loom__topology_npackages(t), 1);
    ck_assert(!loom__topology_is_this_system(t));
    ck_assert_int_eq(loom__topology_distance(t, 0, 5), 1);
    ck_assert_int_eq(loom__topology_distance(t, 4, 4), 0);
    assert_place(t, 4, NULL, 0, LOOM__PLACE_SPREAD, (int[]){0, 1, 2, 3});
    assert_place(t, 8, NULL, 0, LOOM__PLACE_SPREAD, (int[]){0, 0, 1, 1, 2, 3, 4, 5});
    int wc[4] = {0, 1, 2, 3};
    assert_victims(t, wc, 4, 2, (int[]){3, 0, 1});
    assert_victims(t, wc, 4, 0, (int[]){1, 2, 3});
    char msg[128];
    ck_assert_int_eq(loom__topology_bind_thread(t, (int[]){0}, 1, msg, sizeof msg), LOOM__BIND_SKIPPED);
    loom__topology_free(t);

    /* The flat view of this machine: as many cores as CPUs we may use;
     * binding is real (and must not fail hard either way). */
    t = loom__topology_create(&(loom__topology_options){.flat = true});
    ck_assert_ptr_nonnull(t);
    ck_assert_int_ge(loom__topology_ncores(t), 1);
    ck_assert(loom__topology_is_this_system(t));
    loom__bind_status b = loom__topology_bind_thread(t, (int[]){0}, 1, msg, sizeof msg);
    ck_assert_msg(b == LOOM__BIND_OK || b == LOOM__BIND_FAILED, "bind status %d", (int)b);
    loom__topology_free(t);

    /* This machine, through hwloc when available. */
    t = loom__topology_create(NULL);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_ge(loom__topology_ncores(t), 1);
    ck_assert(loom__topology_is_this_system(t));
    int all[64];
    int n = loom__topology_ncores(t) < 64 ? loom__topology_ncores(t) : 64;
    ck_assert_int_eq(loom__topology_place(t, n, NULL, 0, LOOM__PLACE_SPREAD, all), LOOM_OK);
    b = loom__topology_bind_thread(t, all, n, msg, sizeof msg);
    ck_assert_msg(b == LOOM__BIND_OK || b == LOOM__BIND_FAILED, "bind status %d (%s)", (int)b, msg);
    loom__topology_free(t);
}
END_TEST

START_TEST(test_core_list)
{
    int out[16], n;
    ck_assert_int_eq(loom__parse_core_list("0-3,5", 8, out, 16, &n), LOOM_OK);
    ck_assert_int_eq(n, 5);
    assert_ints(out, (int[]){0, 1, 2, 3, 5}, 5, "cores");
    ck_assert_int_eq(loom__parse_core_list("7,2,2-3", 8, out, 16, &n), LOOM_OK);
    ck_assert_int_eq(n, 3);
    assert_ints(out, (int[]){2, 3, 7}, 3, "cores");
    ck_assert_int_eq(loom__parse_core_list("0-3,8", 8, out, 16, &n), LOOM_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "core 8 is out of range"));
    ck_assert_int_eq(loom__parse_core_list("3-1", 8, out, 16, &n), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom__parse_core_list("a", 8, out, 16, &n), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom__parse_core_list("1,,2", 8, out, 16, &n), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom__parse_core_list("1,", 8, out, 16, &n), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom__parse_core_list("", 8, out, 16, &n), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom__parse_core_list("0-7", 8, out, 4, &n), LOOM_ERR_RANGE);
    ck_assert_int_eq(n, 0);

    loom__place_policy p;
    ck_assert_int_eq(loom__place_policy_parse("compact", &p), LOOM_OK);
    ck_assert_int_eq(p, LOOM__PLACE_COMPACT);
    ck_assert_int_eq(loom__place_policy_parse("random", &p), LOOM_ERR_INVALID_ARG);

    loom__topology *t = loom__topology_create(&(loom__topology_options){.flat_cores = 4});
    int wc[4];
    ck_assert_int_eq(loom__topology_place(t, 0, NULL, 0, LOOM__PLACE_SPREAD, wc), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom__topology_place(t, 2, (int[]){4}, 1, LOOM__PLACE_SPREAD, wc), LOOM_ERR_RANGE);
    loom__topology_free(t);
}
END_TEST

/* ======================================================================
 * Pool
 * ====================================================================== */

/* A tree of `n` tasks: task i spawns i*FANOUT+1 .. i*FANOUT+FANOUT (those
 * below n).  Every task increments its hit counter; task `fail_at` fails. */
#define FANOUT 3

typedef struct tree {
    int64_t n;
    _Atomic int32_t *hits;
    /* parent[c], written plainly by the parent before it spawns c and read
     * by c: the pool must order the two (TSan checks it). */
    int64_t *parent;
    _Atomic int64_t bad_parent;
    int64_t fail_at;
    bool fail_without_message;
    bool use_spawn_to;
    int spin; /* busy work per task, to let thieves in */
} tree;

static loom_status tree_task(loom__worker *w, void *task, void *user)
{
    tree *t = user;
    int64_t id = ID(task);
    atomic_fetch_add_explicit(&t->hits[id], 1, memory_order_relaxed);
    if (id > 0 && t->parent[id] != (id - 1) / FANOUT) atomic_fetch_add(&t->bad_parent, 1);
    if (id == t->fail_at) {
        if (t->fail_without_message) {
            loom_clear_error();
            return LOOM_ERR_STATE;
        }
        return loom__set_error(LOOM_ERR_BACKEND, "node %lld failed on worker %d", (long long)id,
                               loom__worker_index(w));
    }
    volatile int sink = 0;
    for (int k = 0; k < t->spin; k++) sink = sink + k;
    (void)sink;
    int n = loom__pool_size(loom__worker_pool(w));
    for (int64_t c = id * FANOUT + 1; c <= id * FANOUT + FANOUT && c < t->n; c++) {
        t->parent[c] = id;
        loom_status st = t->use_spawn_to && (c % 7 == 0) ? loom__pool_spawn_to(w, (int)(c % n), ITEM(c))
                                                          : loom__pool_spawn(w, ITEM(c));
        if (st != LOOM_OK) return st;
    }
    return LOOM_OK;
}

static tree *tree_new(int64_t n)
{
    tree *t = calloc(1, sizeof *t);
    ck_assert_ptr_nonnull(t);
    t->n = n;
    t->hits = calloc((size_t)n, sizeof *t->hits);
    ck_assert_ptr_nonnull(t->hits);
    t->parent = calloc((size_t)n, sizeof *t->parent);
    ck_assert_ptr_nonnull(t->parent);
    t->fail_at = -1;
    return t;
}

static void tree_free(tree *t)
{
    free(t->hits);
    free(t->parent);
    free(t);
}

static void tree_check_once(tree *t)
{
    ck_assert_int_eq(atomic_load(&t->bad_parent), 0);
    for (int64_t i = 0; i < t->n; i++)
        ck_assert_msg(atomic_load(&t->hits[i]) == 1, "task %lld ran %d times", (long long)i,
                      (int)atomic_load(&t->hits[i]));
}

static void run_tree(int workers, int64_t capacity, bool spawn_to, bool synthetic_topo)
{
    loom__topology *topo = NULL;
#ifdef LOOM_HAVE_HWLOC
    if (synthetic_topo) topo = loom__topology_create(&(loom__topology_options){.synthetic = SYN_B});
#else
    if (synthetic_topo) topo = loom__topology_create(&(loom__topology_options){.flat_cores = 8});
#endif
    loom__pool *p = loom__pool_create(topo, &(loom__pool_options){.num_workers = workers, .deque_capacity = capacity});
    ck_assert_msg(p != NULL, "%s", loom_last_error());
    ck_assert_int_eq(loom__pool_size(p), workers);
    tree *t = tree_new(100000);
    t->use_spawn_to = spawn_to;
    void *root = ITEM(0);
    for (int rep = 0; rep < 2; rep++) { /* a pool runs batch after batch */
        memset((void *)t->hits, 0, sizeof(int32_t) * (size_t)t->n);
        ck_assert_msg(loom__pool_run(p, &root, 1, tree_task, t) == LOOM_OK, "%s", loom_last_error());
        tree_check_once(t);
    }
    loom__pool_stats s;
    loom__pool_get_stats(p, -1, &s);
    ck_assert_int_eq(s.tasks, 2 * t->n);
    ck_assert_int_eq(s.skipped, 0);
    if (workers == 1) ck_assert_int_eq(s.steals, 0);
    if (capacity && capacity < 64) ck_assert_int_gt(s.overflows, 0);
    tree_free(t);
    loom__pool_free(p);
    loom__topology_free(topo);
}

START_TEST(test_pool_tree_1) { run_tree(1, 0, false, false); }
END_TEST
START_TEST(test_pool_tree_2) { run_tree(2, 0, false, false); }
END_TEST
START_TEST(test_pool_tree_8) { run_tree(8, 0, false, false); }
END_TEST
/* Tiny deques: most spawns overflow; some go to other workers' queues. */
START_TEST(test_pool_tree_overflow) { run_tree(4, 8, true, true); }
END_TEST

/* One worker runs roots in the order given (LIFO deque, roots pushed in
 * reverse), including roots beyond the deque's capacity. */
static loom_status log_task(loom__worker *w, void *task, void *user)
{
    (void)w;
    int64_t *log = user;
    log[++log[0]] = ID(task);
    return LOOM_OK;
}

START_TEST(test_pool_roots_order)
{
    loom__pool *p = loom__pool_create(NULL, &(loom__pool_options){.num_workers = 1, .deque_capacity = 64});
    ck_assert_ptr_nonnull(p);
    enum { N = 5000 };
    void **roots = malloc(sizeof(void *) * N);
    int64_t *log = calloc(N + 1, sizeof *log);
    for (int i = 0; i < N; i++) roots[i] = ITEM(i);
    ck_assert_int_eq(loom__pool_run(p, roots, N, log_task, log), LOOM_OK);
    ck_assert_int_eq(log[0], N);
    for (int i = 0; i < N; i++) ck_assert_int_eq(log[i + 1], i);
    /* Zero roots: nothing to do. */
    ck_assert_int_eq(loom__pool_run(p, NULL, 0, log_task, log), LOOM_OK);
    ck_assert_int_eq(loom__pool_run(p, roots, 1, NULL, log), LOOM_ERR_INVALID_ARG);
    free(roots);
    free(log);
    loom__pool_free(p);
}
END_TEST

static void run_error(int workers, bool without_message)
{
    loom__pool *p = loom__pool_create(NULL, &(loom__pool_options){.num_workers = workers});
    ck_assert_ptr_nonnull(p);
    tree *t = tree_new(100000);
    t->fail_at = 777;
    t->fail_without_message = without_message;
    void *root = ITEM(0);
    loom_clear_error();
    loom_status st = loom__pool_run(p, &root, 1, tree_task, t);
    if (without_message) {
        ck_assert_int_eq(st, LOOM_ERR_STATE);
        ck_assert_str_eq(loom_last_error(), "task failed: invalid state");
    } else {
        ck_assert_int_eq(st, LOOM_ERR_BACKEND);
        ck_assert_int_eq(loom_last_status(), LOOM_ERR_BACKEND);
        ck_assert_msg(strstr(loom_last_error(), "node 777 failed on worker") != NULL, "message: %s",
                      loom_last_error());
    }
    /* Every task ran at most once; 777's subtree never ran. */
    for (int64_t i = 0; i < t->n; i++) ck_assert_int_le(atomic_load(&t->hits[i]), 1);
    ck_assert_int_eq(atomic_load(&t->hits[777]), 1);
    ck_assert_int_eq(atomic_load(&t->hits[777 * FANOUT + 1]), 0);
    loom__pool_stats s;
    loom__pool_get_stats(p, -1, &s);
    int64_t ran = 0;
    for (int64_t i = 0; i < t->n; i++) ran += atomic_load(&t->hits[i]);
    ck_assert_int_eq(s.tasks - s.skipped, ran);

    /* The pool is still usable, and the next batch succeeds. */
    memset((void *)t->hits, 0, sizeof(int32_t) * (size_t)t->n);
    t->fail_at = -1;
    ck_assert_int_eq(loom__pool_run(p, &root, 1, tree_task, t), LOOM_OK);
    tree_check_once(t);
    tree_free(t);
    loom__pool_free(p);
}

START_TEST(test_pool_error)
{
    run_error(1, false);
    run_error(2, false);
    run_error(8, false);
    run_error(3, true);
}
END_TEST

/* Many tasks fail at once: one failure wins, nothing hangs. */
static loom_status fail_all(loom__worker *w, void *task, void *user)
{
    (void)w;
    (void)user;
    return loom__set_error(LOOM_ERR_RANGE, "root %lld failed", (long long)ID(task));
}

START_TEST(test_pool_many_errors)
{
    loom__pool *p = loom__pool_create(NULL, &(loom__pool_options){.num_workers = 4});
    ck_assert_ptr_nonnull(p);
    void *roots[1000];
    for (int i = 0; i < 1000; i++) roots[i] = ITEM(i);
    for (int rep = 0; rep < 20; rep++) {
        ck_assert_int_eq(loom__pool_run(p, roots, 1000, fail_all, NULL), LOOM_ERR_RANGE);
        ck_assert_ptr_nonnull(strstr(loom_last_error(), "failed"));
    }
    loom__pool_free(p);
}
END_TEST

/* A task that runs the pool it belongs to gets LOOM_ERR_STATE. */
static loom_status nested_task(loom__worker *w, void *task, void *user)
{
    (void)task;
    loom_status *out = user;
    void *r = ITEM(1);
    *out = loom__pool_run(loom__worker_pool(w), &r, 1, log_task, NULL);
    return LOOM_OK;
}

START_TEST(test_pool_nested_run)
{
    loom__pool *p = loom__pool_create(NULL, &(loom__pool_options){.num_workers = 2});
    ck_assert_ptr_nonnull(p);
    loom_status inner = LOOM_OK;
    void *r = ITEM(0);
    ck_assert_int_eq(loom__pool_run(p, &r, 1, nested_task, &inner), LOOM_OK);
    ck_assert_int_eq(inner, LOOM_ERR_STATE);
    loom__pool_free(p);
}
END_TEST

/* Slow tasks make the caller and the other workers park, and the end of
 * the batch must wake the caller. */
static loom_status slow_task(loom__worker *w, void *task, void *user)
{
    (void)w;
    (void)user;
    sleep_ms((int)ID(task));
    return LOOM_OK;
}

START_TEST(test_pool_parking)
{
    loom__pool *p = loom__pool_create(NULL, &(loom__pool_options){.num_workers = 4, .steal_rounds = 4});
    ck_assert_ptr_nonnull(p);
    sleep_ms(50); /* idle workers go to sleep */
    loom__pool_stats s;
    loom__pool_get_stats(p, -1, &s);
    ck_assert_int_ge(s.parks, 3);
    for (int rep = 0; rep < 10; rep++) {
        void *roots[2] = {ITEM(1), ITEM(20)};
        ck_assert_int_eq(loom__pool_run(p, roots, 2, slow_task, NULL), LOOM_OK);
    }
    /* Everything asleep, then a big batch wakes them. */
    sleep_ms(20);
    tree *t = tree_new(20000);
    t->spin = 200;
    void *root = ITEM(0);
    ck_assert_int_eq(loom__pool_run(p, &root, 1, tree_task, t), LOOM_OK);
    tree_check_once(t);
    tree_free(t);
    loom__pool_free(p);
}
END_TEST

/* A batch with one root wakes no one: the caller runs it. A worker woken
 * for it would find nothing and spin its steal rounds beside the caller's
 * node (on a chain, such as a backward with one root, it only slowed that
 * node's OpenMP team down). Roots beyond the first do wake workers. */
START_TEST(test_pool_one_root_wakes_nobody)
{
    enum { W = 4 };
    loom__pool *p = loom__pool_create(NULL, &(loom__pool_options){.num_workers = W, .steal_rounds = 4});
    ck_assert_ptr_nonnull(p);
    loom__pool_stats s[W];
    bool asleep = false;
    for (int t = 0; t < 400 && !asleep; t++) { /* up to 2 s for the workers to park */
        asleep = true;
        for (int i = 1; i < W; i++) {
            loom__pool_get_stats(p, i, &s[i]);
            asleep = asleep && s[i].parks >= 1;
        }
        if (!asleep) sleep_ms(5);
    }
    ck_assert_msg(asleep, "the idle workers never parked");
    sleep_ms(20);
    for (int i = 1; i < W; i++) loom__pool_get_stats(p, i, &s[i]);
    for (int rep = 0; rep < 5; rep++) {
        void *root = ITEM(5);
        ck_assert_int_eq(loom__pool_run(p, &root, 1, slow_task, NULL), LOOM_OK);
    }
    for (int i = 1; i < W; i++) {
        loom__pool_stats now;
        loom__pool_get_stats(p, i, &now);
        ck_assert_msg(now.failed_rounds == s[i].failed_rounds && now.parks == s[i].parks && now.tasks == 0,
                      "worker %d woke for one-root batches: %lld failed rounds, %lld parks, %lld tasks (were %lld, "
                      "%lld, 0)",
                      i, (long long)now.failed_rounds, (long long)now.parks, (long long)now.tasks,
                      (long long)s[i].failed_rounds, (long long)s[i].parks);
    }
    /* Three slow roots: the caller takes one, woken workers the others. */
    void *roots[3] = {ITEM(30), ITEM(30), ITEM(30)};
    ck_assert_int_eq(loom__pool_run(p, roots, 3, slow_task, NULL), LOOM_OK);
    int64_t others = 0;
    for (int i = 1; i < W; i++) {
        loom__pool_stats now;
        loom__pool_get_stats(p, i, &now);
        others += now.tasks;
    }
    ck_assert_int_ge(others, 1);
    loom__pool_free(p);
}
END_TEST

START_TEST(test_pool_create_destroy)
{
#ifdef LOOM_HAVE_HWLOC
    loom__topology *topo = loom__topology_create(&(loom__topology_options){.synthetic = SYN_A});
#else
    loom__topology *topo = loom__topology_create(&(loom__topology_options){.flat_cores = 8});
#endif
    ck_assert_ptr_nonnull(topo);
    tree *t = tree_new(200);
    void *root = ITEM(0);
    for (int i = 0; i < 200; i++) {
        int n = 1 + i % 6;
        loom__pool *p = loom__pool_create(topo, &(loom__pool_options){.num_workers = n});
        ck_assert_ptr_nonnull(p);
        if (i % 2) { /* half of them die without ever running */
            memset((void *)t->hits, 0, sizeof(int32_t) * (size_t)t->n);
            ck_assert_int_eq(loom__pool_run(p, &root, 1, tree_task, t), LOOM_OK);
            tree_check_once(t);
        }
        loom__pool_free(p);
    }
    tree_free(t);
    loom__topology_free(topo);
    /* Pools that own their topology (this machine). */
    for (int i = 0; i < 10; i++) loom__pool_free(loom__pool_create(NULL, &(loom__pool_options){.num_workers = 3}));
}
END_TEST

#ifdef LOOM_HAVE_HWLOC
/* A NUMA node's first worker may be its team master, whose OpenMP team
 * inherits its affinity: bound to one core, the team would share that
 * core. It binds to its node's cores even under core (or L3) binding. */
START_TEST(test_pool_master_binding)
{
    loom__topology *topo = loom__topology_create(&(loom__topology_options){.synthetic = "pack:2 [numa] core:2 pu:1"});
    ck_assert_ptr_nonnull(topo);
    loom__pool *p = loom__pool_create(topo, &(loom__pool_options){.num_workers = 4, .bind = LOOM__BIND_CORE});
    ck_assert_ptr_nonnull(p);
    char buf[4096];
    loom__pool_describe(p, buf, sizeof buf);
    ck_assert_msg(strstr(buf, "worker 1: not bound to cores 1:") && strstr(buf, "worker 2: not bound to cores 2,3:") &&
                      strstr(buf, "worker 3: not bound to cores 3:"),
                  "%s", buf);
    loom__pool_free(p);
    loom__topology_free(topo);
}
END_TEST
#endif

START_TEST(test_pool_options)
{
    ck_assert_ptr_null(loom__pool_create(NULL, &(loom__pool_options){.num_workers = -1}));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_null(loom__pool_create(NULL, &(loom__pool_options){.deque_capacity = 100}));
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "power of two"));

    loom__topology *topo = loom__topology_create(&(loom__topology_options){.flat_cores = 4});
    ck_assert_ptr_null(loom__pool_create(topo, &(loom__pool_options){.cores = (int[]){9}, .ncores = 1}));
    ck_assert_int_eq(loom_last_status(), LOOM_ERR_RANGE);

    /* Defaults: one worker per allowed core. */
    loom__pool *p = loom__pool_create(topo, &(loom__pool_options){.cores = (int[]){3, 1, 3}, .ncores = 3});
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(loom__pool_size(p), 2);
    ck_assert_int_eq(loom__pool_worker_core(p, 0), 1);
    ck_assert_int_eq(loom__pool_worker_core(p, 1), 3);
    const char *msg;
    ck_assert_int_eq(loom__pool_bind_status(p, 0, &msg), LOOM__BIND_SKIPPED); /* the caller */
    ck_assert_int_eq(loom__pool_bind_status(p, 1, &msg), LOOM__BIND_SKIPPED); /* not this system */
    ck_assert_ptr_nonnull(strstr(msg, "not this system"));
    char buf[4096];
    size_t len = loom__pool_describe(p, buf, sizeof buf);
    ck_assert_uint_lt(len, sizeof buf);
    ck_assert_ptr_nonnull(strstr(buf, "workers: 2"));
    ck_assert_ptr_nonnull(strstr(buf, "worker 1: not bound to cores 1,3"));
    loom__pool_free(p);

    /* The environment. */
    int cores[8];
    loom__pool_options o = {0};
    setenv("LOOM_NUM_THREADS", "3", 1);
    setenv("LOOM_CORES", "0,2-3", 1);
    setenv("LOOM_PLACE", "compact", 1);
    setenv("LOOM_BIND", "none", 1);
    ck_assert_int_eq(loom__pool_options_from_env(&o, topo, cores, 8), LOOM_OK);
    ck_assert_int_eq(o.num_workers, 3);
    ck_assert_int_eq(o.ncores, 3);
    assert_ints(o.cores, (int[]){0, 2, 3}, 3, "LOOM_CORES");
    ck_assert_int_eq(o.place, LOOM__PLACE_COMPACT);
    ck_assert_int_eq(o.bind, LOOM__BIND_NONE);
    setenv("LOOM_CORES", "0-9", 1);
    ck_assert_int_eq(loom__pool_options_from_env(&o, topo, cores, 8), LOOM_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "LOOM_CORES"));
    setenv("LOOM_CORES", "1", 1);
    setenv("LOOM_NUM_THREADS", "lots", 1);
    ck_assert_int_eq(loom__pool_options_from_env(&o, topo, cores, 8), LOOM_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "LOOM_NUM_THREADS"));
    unsetenv("LOOM_NUM_THREADS");
    unsetenv("LOOM_CORES");
    unsetenv("LOOM_PLACE");
    unsetenv("LOOM_BIND");
    loom__topology_free(topo);

    /* On this machine, binding is real for workers 1..n-1 (or reported). */
    p = loom__pool_create(NULL, &(loom__pool_options){.num_workers = 3, .bind = LOOM__BIND_CORE});
    ck_assert_ptr_nonnull(p);
    for (int w = 1; w < 3; w++) {
        loom__bind_status b = loom__pool_bind_status(p, w, &msg);
        ck_assert_msg(b == LOOM__BIND_OK || b == LOOM__BIND_FAILED, "worker %d: %d %s", w, (int)b, msg);
    }
    loom__pool_free(p);
}
END_TEST

/* ---- per-thread scratch and the block cache's big classes ------------- */

static void *scratch_other_thread(void *arg)
{
    (void)arg;
    return loom__scratch(0, 1000);
}

START_TEST(test_scratch)
{
    char *a = loom__scratch(0, 1000);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq((uintptr_t)a % 64, 0);
    memset(a, 1, 1000);                          /* really that big */
    ck_assert_ptr_eq(loom__scratch(0, 10), a);   /* smaller: the same buffer */
    ck_assert_ptr_eq(loom__scratch(0, 1400), a); /* grown by half on the first allocation */
    char *b = loom__scratch(1, 1000);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_ne(a, b); /* slots are independent */
    char *c = loom__scratch(0, 1 << 20);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq((uintptr_t)c % 64, 0);
    memset(c, 2, 1 << 20);
    ck_assert_ptr_null(loom__scratch(-1, 10));
    ck_assert_ptr_null(loom__scratch(LOOM__SCRATCH_SLOTS, 10));
    /* Another thread gets its own buffer (freed when it exits). */
    pthread_t th;
    void *theirs = NULL;
    ck_assert_int_eq(pthread_create(&th, NULL, scratch_other_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(th, &theirs), 0);
    ck_assert_ptr_nonnull(theirs);
    ck_assert_ptr_ne(theirs, loom__scratch(0, 10));
}
END_TEST

/* Memory domains (NUMA nodes): a freed block is reused by its own domain
 * only; fresh data blocks of 64 KiB or more go to the binder. */
typedef struct bind_log {
    int calls, last_domain;
    size_t last_len;
} bind_log;

static int fake_bind(void *ptr, size_t len, int domain, void *user)
{
    bind_log *b = user;
    (void)ptr;
    b->calls++;
    b->last_domain = domain;
    b->last_len = len;
    return domain == 3 ? -1 : 0; /* domain 3: the OS refuses */
}

START_TEST(test_mem_domains)
{
    loom__mem mem;
    loom__mem_init(&mem, NULL);
    bind_log log = {0, -1, 0};
    loom__mem_set_binder(&mem, fake_bind, &log);
    const size_t big = (size_t)256 << 10, small = 4096;
    void *a = loom__mem_alloc_data_on(&mem, big, 1);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(loom__mem_block_domain(a), 1);
    ck_assert_int_eq(log.calls, 1);
    ck_assert_int_eq(log.last_domain, 1);
    ck_assert_uint_ge(log.last_len, big);
    loom__mem_free_data(&mem, a);
    /* Domain 0 does not get domain 1's block; domain 1 does, unbound again. */
    void *b = loom__mem_alloc_data_on(&mem, big, 0);
    ck_assert_ptr_ne(b, a);
    ck_assert_int_eq(loom__mem_block_domain(b), 0);
    ck_assert_int_eq(log.calls, 2);
    void *c = loom__mem_alloc_data_on(&mem, big, 1);
    ck_assert_ptr_eq(c, a);
    ck_assert_int_eq(log.calls, 2);
    /* Small blocks share pages: not bound. Negative domains are domain 0;
     * the plain form is domain 0. */
    void *d = loom__mem_alloc_data_on(&mem, small, -1);
    ck_assert_int_eq(loom__mem_block_domain(d), 0);
    ck_assert_int_eq(log.calls, 2);
    loom__mem_free_data(&mem, d);
    void *e = loom__mem_alloc_data(&mem, small);
    ck_assert_ptr_eq(e, d);
    /* A refused binding is not counted. */
    void *f = loom__mem_alloc_data_on(&mem, big, 3);
    ck_assert_int_eq(log.calls, 3);
    ck_assert_int_eq(atomic_load(&mem.bound_blocks), 2);
    loom__mem_free_data(&mem, b);
    loom__mem_free_data(&mem, c);
    loom__mem_free_data(&mem, e);
    loom__mem_free_data(&mem, f);
    ck_assert_int_eq(atomic_load(&mem.live_bytes), 0);
    loom__mem_drain(&mem);
    ck_assert_uint_eq(mem.cached_bytes, 0);
}
END_TEST

START_TEST(test_mem_big_classes)
{
    loom__mem mem;
    loom__mem_init(&mem, NULL);
    /* A SimpleCNN activation, [64, 64, 24, 24] floats: cached and reused
     * (it used to bypass the cache above 128 KiB). */
    size_t sz = (size_t)64 * 64 * 24 * 24 * 4;
    void *p = loom__mem_alloc_data(&mem, sz);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq((uintptr_t)p % 64, 0);
    memset(p, 0, sz);
    loom__mem_free_data(&mem, p);
    ck_assert_uint_gt(mem.cached_bytes, 0);
    /* Same quarter-octave class (8 MiB < size <= 10 MiB): the same block. */
    void *q = loom__mem_alloc_data(&mem, (size_t)10 << 20);
    ck_assert_ptr_eq(q, p);
    memset(q, 0, (size_t)10 << 20);
    loom__mem_free_data(&mem, q);
    /* The next class up (10 MiB < size <= 12 MiB): a new block. */
    void *r = loom__mem_alloc_data(&mem, ((size_t)10 << 20) + 1);
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_ne(r, p);
    memset(r, 0, ((size_t)10 << 20) + 1);
    loom__mem_free_data(&mem, r);
    /* Above 1 GiB nothing is cached (the cache would be too coarse). */
    size_t cached = mem.cached_bytes;
    void *h = loom__mem_alloc_data(&mem, ((size_t)1 << 30) + 64);
    if (h) { /* may fail on a small machine: then there is nothing to check */
        loom__mem_free_data(&mem, h);
        ck_assert_uint_eq(mem.cached_bytes, cached);
    }
    ck_assert_int_eq(mem.live_bytes, 0);
    loom__mem_drain(&mem);
    ck_assert_uint_eq(mem.cached_bytes, 0);
}
END_TEST

/* Counts the blocks handed back to malloc. */
static int cache_frees;
static void *cache_alloc(size_t n, void *u)
{
    (void)u;
    return malloc(n);
}
static void cache_free(void *p, void *u)
{
    (void)u;
    cache_frees++;
    free(p);
}

START_TEST(test_mem_cache_policy)
{
    const size_t MB = (size_t)1 << 20;
    loom_allocator a = {cache_alloc, cache_free, NULL};
    loom__mem mem;
    loom__mem_init(&mem, &a);
    ck_assert_int_eq(mem.cache_limit, LOOM__MEM_CACHE_AUTO);
    mem.cache_floor = 0; /* the floor would hide the peak rule */
    cache_frees = 0;
    /* A "step" that needs 2 MiB at once: both blocks are kept (live 0 +
     * cache 2 MiB <= peak 2 MiB), and the next step reuses them. */
    void *x = loom__mem_alloc_data(&mem, MB), *y = loom__mem_alloc_data(&mem, MB);
    loom__mem_free_data(&mem, x);
    loom__mem_free_data(&mem, y);
    ck_assert_int_eq(cache_frees, 0);
    ck_assert_uint_eq(mem.cached_bytes, 2 * MB);
    void *x2 = loom__mem_alloc_data(&mem, MB), *y2 = loom__mem_alloc_data(&mem, MB);
    ck_assert(x2 == y && y2 == x); /* LIFO */
    loom__mem_free_data(&mem, x2);
    loom__mem_free_data(&mem, y2);
    /* A 3 MiB block of another class: fresh (peak 3 MiB, limit 3 3/8).
     * Freed, it would make the held bytes 5 MiB: the 1 MiB class, asked
     * for less recently, makes room (both its blocks go back), and the
     * cache now holds the size in use. */
    void *z = loom__mem_alloc_data(&mem, 3 * MB);
    ck_assert_int_eq(atomic_load(&mem.peak_bytes), (int64_t)(3 * MB));
    loom__mem_free_data(&mem, z);
    ck_assert_int_eq(cache_frees, 2);
    ck_assert_uint_eq(mem.cached_bytes, 3 * MB);
    void *z2 = loom__mem_alloc_data(&mem, 3 * MB);
    ck_assert(z2 == z);
    /* 3 MiB live and 1 MiB more: peak 4 MiB; both kept when freed. */
    void *v = loom__mem_alloc_data(&mem, MB);
    loom__mem_free_data(&mem, v);
    loom__mem_free_data(&mem, z2);
    ck_assert_int_eq(cache_frees, 2);
    ck_assert_uint_eq(mem.cached_bytes, 4 * MB);
    /* A 2 MiB block: 4 + 2 > 4.5. The least recently asked-for class goes
     * first: 3 MiB (asked for before the 1 MiB one), which is enough. */
    void *u = loom__mem_alloc_data(&mem, 2 * MB);
    loom__mem_free_data(&mem, u);
    ck_assert_int_eq(cache_frees, 3);
    ck_assert_uint_eq(mem.cached_bytes, 3 * MB);
    void *w = loom__mem_alloc_data(&mem, MB);
    ck_assert(w == v);
    loom__mem_free_data(&mem, w);
    /* The floor: below it everything is kept. */
    mem.cache_floor = 16 * MB;
    void *big = loom__mem_alloc_data(&mem, 8 * MB);
    loom__mem_free_data(&mem, big);
    ck_assert_int_eq(cache_frees, 3);
    ck_assert_uint_eq(mem.cached_bytes, 11 * MB);
    loom__mem_drain(&mem); /* the three cached blocks */
    ck_assert_int_eq(cache_frees, 6);
    /* A fixed limit counts the cache alone; a block of the class just
     * asked for cannot push out its own class: the second goes back. */
    mem.cache_limit = (int64_t)(MB + MB / 2);
    x = loom__mem_alloc_data(&mem, MB);
    y = loom__mem_alloc_data(&mem, MB);
    loom__mem_free_data(&mem, x);
    loom__mem_free_data(&mem, y);
    ck_assert_uint_eq(mem.cached_bytes, MB);
    ck_assert_int_eq(cache_frees, 7);
    loom__mem_drain(&mem);
    /* 0 keeps nothing. */
    mem.cache_limit = 0;
    x = loom__mem_alloc(&mem, 100);
    loom__mem_free(&mem, x);
    ck_assert_uint_eq(mem.cached_bytes, 0);
    ck_assert_int_eq(cache_frees, 9);
}
END_TEST

Suite *loom_suite_runtime(void)
{
    Suite *s = suite_create("runtime");
    TCase *tc = test_tcase(s, "deque", 60);
    tcase_add_test(tc, test_deque_basic);
    tcase_add_test(tc, test_scratch);
    tcase_add_test(tc, test_mem_big_classes);
    tcase_add_test(tc, test_mem_cache_policy);
    tcase_add_test(tc, test_mem_domains);
    tcase_add_test(tc, test_deque_wraparound);
    tcase_add_test(tc, test_deque_stress);

    tc = test_tcase(s, "topology", 30);
#ifdef LOOM_HAVE_HWLOC
    tcase_add_test(tc, test_topology_synthetic_numa);
    tcase_add_test(tc, test_topology_synthetic_l3);
    tcase_add_test(tc, test_topology_numa_latency);
    tcase_add_test(tc, test_topology_errors_and_env);
#endif
    tcase_add_test(tc, test_topology_flat);
    tcase_add_test(tc, test_core_list);

    tc = test_tcase(s, "pool", 120);
    tcase_add_test(tc, test_pool_tree_1);
    tcase_add_test(tc, test_pool_tree_2);
    tcase_add_test(tc, test_pool_tree_8);
    tcase_add_test(tc, test_pool_tree_overflow);
    tcase_add_test(tc, test_pool_roots_order);
    tcase_add_test(tc, test_pool_error);
    tcase_add_test(tc, test_pool_many_errors);
    tcase_add_test(tc, test_pool_nested_run);
    tcase_add_test(tc, test_pool_parking);
    tcase_add_test(tc, test_pool_one_root_wakes_nobody);
    tcase_add_test(tc, test_pool_create_destroy);
#ifdef LOOM_HAVE_HWLOC
    tcase_add_test(tc, test_pool_master_binding);
#endif
    tcase_add_test(tc, test_pool_options);
    return s;
}
