/*
 * runtime/pool.c - the work-stealing pool (see pool.h and docs/runtime.md).
 *
 * Shared state and who touches it:
 *   outstanding    tasks spawned but not finished; RMWs by every worker.
 *                  The worker that brings it to zero ends the batch.
 *   stop, err_*    the first failure (CAS on err_status; the winner writes
 *                  err_msg, which the caller reads after outstanding hits
 *                  zero: the acq_rel decrements chain it to the caller).
 *   fn, user       written by the caller before it pushes the roots, read
 *                  by workers only while running tasks of that batch (the
 *                  deque's release/acquire orders them).
 *   nsleepers,     the parking protocol below.
 *   epoch
 *   park_mu        guards every worker's `parked` and `wake` flags, and
 *                  nready.  Lock order: park_mu and a task ring's mu are
 *                  never held together.
 *
 * Parking (prepare / re-check / commit, as Eigen's EventCount and Taskflow's
 * notifier do, with a mutex and one condition variable per worker):
 *
 *   sleeper:  nsleepers++ (seq_cst); e = epoch; fence(seq_cst);
 *             re-check: any deque or overflow queue non-empty, shutdown, or
 *             (worker 0) the batch done?  then nsleepers--, go back to work.
 *             lock(park_mu); if epoch == e: parked = true; wait until woken.
 *             unlock; nsleepers--.
 *   notifier: publish the task; fence(seq_cst); if nsleepers > 0:
 *             lock(park_mu); epoch++; wake one parked worker (the nearest
 *             to the notifier); unlock.
 *
 * No wake-up is lost: the two seq_cst fences order "publish task" against
 * "nsleepers++" (Dekker), so either the sleeper's re-check sees the task, or
 * the notifier sees nsleepers > 0 and bumps epoch under park_mu.  In the
 * second case the sleeper is either not yet committed (it then sees the new
 * epoch under park_mu and does not sleep) or already parked (and the
 * notifier wakes a parked worker, perhaps another one, which is as good:
 * any awake worker will find the task).  The end of a batch uses the same
 * protocol with "outstanding == 0" as the published state and worker 0 as
 * the one to wake.
 */
#include "config.h"

#include "runtime/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/cores.h"
#include "runtime/deque.h"
#include "runtime/error.h"

/* gcc's -Wtsan says that ThreadSanitizer ignores atomic_thread_fence.  We
 * know: every happens-before edge that orders plain data is also carried by
 * a release/acquire operation (docs/runtime.md); the seq_cst fences only
 * order Dekker-style store/load pairs, which TSan does not check.  The
 * warning would break --enable-werror --enable-tsan builds. */
#if defined(__SANITIZE_THREAD__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC diagnostic ignored "-Wtsan"
#endif

#define CACHE_LINE 64
#define MAX_WORKERS 1024
#define DEFAULT_CAPACITY 1024
#define DEFAULT_STEAL_ROUNDS 32
#define OVERFLOW_INITIAL 64

/* A FIFO of tasks: a growable ring buffer under `mu`; `count` mirrors its
 * length so that others can skip an empty queue without locking. Used for
 * a worker's overflow and pinned queues. */
typedef struct task_ring {
    _Alignas(CACHE_LINE) pthread_mutex_t mu;
    void **buf;
    int64_t head, len, cap;
    _Atomic int64_t count;
} task_ring;

struct loom__worker {
    /* Read by the owner on every task and by thieves on every steal. */
    _Alignas(CACHE_LINE) loom__deque *deque;
    loom__pool *pool;
    int index, core, numa;
    const int *victims; /* pool->n - 1 workers, nearest first */

    task_ring ovf;    /* the overflow queue */
    task_ring pinned; /* tasks only this worker runs (loom__pool_spawn_pinned) */

    /* Parking: under pool->park_mu. */
    pthread_cond_t cv;
    bool parked, wake;

    pthread_t thread;
    loom__bind_status bind;
    char bind_msg[200];

    /* Statistics, written by the owner only (relaxed load + store, no RMW),
     * read by anyone. */
    _Alignas(CACHE_LINE) _Atomic int64_t st_tasks;
    _Atomic int64_t st_skipped, st_steals, st_aborts, st_failed_rounds, st_parks, st_overflows;
};

struct loom__pool {
    const loom__topology *topo;
    loom__topology *owned_topo;
    int n;
    int steal_rounds;
    loom__bind_level bind;
    loom__worker *workers; /* n of them, cache-line aligned */
    int *worker_core;
    int *victims; /* n * (n - 1) */
    loom__cores *cores; /* the core budget: tokens per NUMA node */

    /* The running batch. */
    loom__task_fn fn;
    void *user;
    _Alignas(CACHE_LINE) _Atomic int64_t outstanding;
    _Alignas(CACHE_LINE) _Atomic bool stop;
    _Atomic int err_status;
    _Atomic bool running;
    _Atomic bool shutdown;
    char err_msg[512];

    /* Parking. */
    _Alignas(CACHE_LINE) _Atomic int nsleepers;
    _Atomic uint64_t epoch;
    pthread_mutex_t park_mu;
    pthread_cond_t ready_cv; /* creation: workers report they are bound */
    int nready, nparked;
    int nthreads; /* threads started (workers 1..nthreads) */
    loom__pool_observer observer; /* fixed at creation */
    void *observer_user;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void stat_inc(_Atomic int64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* ---- Task rings (overflow and pinned queues) ---------------------------- */

/* With room for `cap` tasks (0: none yet); false when out of memory (the
 * ring must still be destroyed). */
static bool ring_init(task_ring *r, int64_t cap)
{
    pthread_mutex_init(&r->mu, NULL);
    r->buf = cap ? malloc(sizeof(void *) * (size_t)cap) : NULL;
    r->head = r->len = 0;
    r->cap = r->buf ? cap : 0;
    atomic_init(&r->count, 0);
    return r->buf || !cap;
}

static void ring_destroy(task_ring *r)
{
    free(r->buf);
    pthread_mutex_destroy(&r->mu);
}

static int64_t ring_size(const task_ring *r) { return atomic_load_explicit(&r->count, memory_order_relaxed); }

/* false when the ring cannot grow (out of memory). */
static bool ring_push(task_ring *r, void *task)
{
    pthread_mutex_lock(&r->mu);
    if (r->len == r->cap) {
        int64_t cap = r->cap ? r->cap * 2 : OVERFLOW_INITIAL;
        void **buf = malloc(sizeof(void *) * (size_t)cap);
        if (!buf) {
            pthread_mutex_unlock(&r->mu);
            return false;
        }
        for (int64_t i = 0; i < r->len; i++) buf[i] = r->buf[(r->head + i) % r->cap];
        free(r->buf);
        r->buf = buf;
        r->cap = cap;
        r->head = 0;
    }
    r->buf[(r->head + r->len) % r->cap] = task;
    r->len++;
    atomic_store_explicit(&r->count, r->len, memory_order_relaxed);
    pthread_mutex_unlock(&r->mu);
    return true;
}

/* FIFO, for the owner and for thieves alike. */
static bool ring_pop(task_ring *r, void **out)
{
    if (ring_size(r) == 0) return false;
    pthread_mutex_lock(&r->mu);
    bool got = r->len > 0;
    if (got) {
        *out = r->buf[r->head];
        r->head = (r->head + 1) % r->cap;
        r->len--;
        atomic_store_explicit(&r->count, r->len, memory_order_relaxed);
    }
    pthread_mutex_unlock(&r->mu);
    return got;
}

/* ---- Parking ---------------------------------------------------------- */

/* Any task visible in a deque or overflow queue (w's pinned queue is
 * park's own check)?  Called after the sleeper's seq_cst fence. */
static bool work_visible(loom__pool *p)
{
    for (int i = 0; i < p->n; i++) {
        loom__worker *v = &p->workers[i];
        if (loom__deque_size(v->deque) > 0 || ring_size(&v->ovf) > 0)
            return true;
    }
    return false;
}

/* Under park_mu: wakes v if it is parked; returns whether it was. */
static bool wake_locked(loom__worker *v)
{
    if (!v->parked) return false;
    v->parked = false;
    v->wake = true;
    v->pool->nparked--;
    pthread_cond_signal(&v->cv);
    return true;
}

/* After publishing a task (or the end of a batch): wakes `target` if it is
 * parked, else (target < 0 or not parked, and any_if_not) the parked worker
 * nearest to `from`. */
static void notify(loom__pool *p, const loom__worker *from, int target, bool any_if_not)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&p->nsleepers, memory_order_relaxed) == 0) return;
    pthread_mutex_lock(&p->park_mu);
    atomic_fetch_add_explicit(&p->epoch, 1, memory_order_seq_cst);
    bool woke = target >= 0 && wake_locked(&p->workers[target]);
    if (!woke && any_if_not && p->nparked > 0) {
        for (int i = 0; i < p->n - 1 && !woke; i++) woke = wake_locked(&p->workers[from->victims[i]]);
    }
    pthread_mutex_unlock(&p->park_mu);
}

/* busy: the worker parks because every core of its domain is taken (see
 * find_task), so visible work is no reason to stay up: the workers holding
 * the cores will run it. */
static void park(loom__worker *w, bool busy)
{
    loom__pool *p = w->pool;
    bool caller = w->index == 0;
    atomic_fetch_add_explicit(&p->nsleepers, 1, memory_order_seq_cst);
    uint64_t e = atomic_load_explicit(&p->epoch, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst);
    /* Its own pinned tasks keep it up even when busy: nobody else runs
     * them (the check comes after the fence, so a pin published before
     * the spawner's notify saw no sleeper is seen here). */
    bool go = ring_size(&w->pinned) > 0 || (!busy && work_visible(p)) ||
              atomic_load_explicit(&p->shutdown, memory_order_relaxed) || (caller && atomic_load_explicit(&p->outstanding, memory_order_relaxed) == 0);
    int64_t t0 = 0, t1 = 0; /* the parked interval, for the observer */
    if (!go) {
        pthread_mutex_lock(&p->park_mu);
        if (atomic_load_explicit(&p->epoch, memory_order_relaxed) == e &&
            !atomic_load_explicit(&p->shutdown, memory_order_relaxed)) {
            w->parked = true;
            w->wake = false;
            p->nparked++;
            stat_inc(&w->st_parks);
            if (p->observer) t0 = now_ns();
            while (!w->wake) pthread_cond_wait(&w->cv, &p->park_mu);
            if (p->observer) t1 = now_ns();
        }
        pthread_mutex_unlock(&p->park_mu);
    }
    atomic_fetch_sub_explicit(&p->nsleepers, 1, memory_order_seq_cst);
    if (t1) p->observer(p->observer_user, LOOM__POOL_EV_IDLE, w->index, -1, t0, t1);
}

/* ---- Finding and running tasks ----------------------------------------- */

static bool steal_round(loom__worker *w, void **task)
{
    loom__pool *p = w->pool;
    for (int i = 0; i < p->n - 1; i++) {
        loom__worker *v = &p->workers[w->victims[i]];
        for (;;) {
            loom__steal_result r = loom__deque_steal(v->deque, task);
            if (r == LOOM__STEAL_OK) {
                stat_inc(&w->st_steals);
                if (p->observer) {
                    const int64_t t = now_ns();
                    p->observer(p->observer_user, LOOM__POOL_EV_STEAL, w->index, w->victims[i], t, t);
                }
                return true;
            }
            if (r == LOOM__STEAL_EMPTY) break;
            stat_inc(&w->st_aborts); /* lost a race: the deque is not empty, retry */
        }
        if (ring_pop(&v->ovf, task)) {
            stat_inc(&w->st_steals);
            if (p->observer) {
                const int64_t t = now_ns();
                p->observer(p->observer_user, LOOM__POOL_EV_STEAL, w->index, w->victims[i], t, t);
            }
            return true;
        }
    }
    return false;
}

/* Own deque, own pinned queue, own overflow queue, then steal
 * rounds. *busy: it gave up
 * because every core of its domain is running a node (the core budget has
 * no free token): spinning or yielding then would take CPU time from those
 * nodes' OpenMP teams, whose barriers wait for their slowest thread. A
 * stolen task could not start anyway. Whoever gives the cores back looks
 * for work next. */
static bool find_task(loom__worker *w, void **task, bool *busy)
{
    loom__pool *p = w->pool;
    *busy = false;
    if (loom__deque_take(w->deque, task)) return true;
    /* Pinned tasks come before any "busy" check: nobody else may run them,
     * so the worker must not sleep while they wait. */
    if (ring_pop(&w->pinned, task)) return true;
    if (ring_pop(&w->ovf, task)) return true;
    for (int r = 0; r < p->steal_rounds; r++) {
        if (loom__cores_free_now(p->cores, w->numa) == 0) {
            *busy = true;
            return false;
        }
        if (steal_round(w, task)) return true;
        stat_inc(&w->st_failed_rounds);
        if (ring_pop(&w->ovf, task)) return true; /* loom__pool_spawn_to may have sent us one */
        if (atomic_load_explicit(&p->shutdown, memory_order_relaxed)) return false;
        if (w->index == 0 && atomic_load_explicit(&p->outstanding, memory_order_acquire) == 0) return false;
        if (r < p->steal_rounds / 2)
            for (int k = 0; k < 16; k++) cpu_relax();
        else
            sched_yield();
    }
    return false;
}

static void fail(loom__pool *p, loom_status st)
{
    int expected = LOOM_OK;
    if (!atomic_compare_exchange_strong_explicit(&p->err_status, &expected, (int)st, memory_order_relaxed,
                                                 memory_order_relaxed))
        return; /* not the first failure */
    /* The message is in this thread's last error (runtime/error.c keeps it
     * thread-local): copy it for the caller. */
    const char *msg = loom_last_error();
    if (loom_last_status() == st && msg[0])
        snprintf(p->err_msg, sizeof p->err_msg, "%s", msg);
    else
        snprintf(p->err_msg, sizeof p->err_msg, "task failed: %s", loom_status_str(st));
    atomic_store_explicit(&p->stop, true, memory_order_relaxed);
}

static void execute(loom__worker *w, void *task)
{
    loom__pool *p = w->pool;
    if (!atomic_load_explicit(&p->stop, memory_order_relaxed)) {
        loom_status st = p->fn(w, task, p->user);
        if (st != LOOM_OK) fail(p, st);
    } else {
        stat_inc(&w->st_skipped);
    }
    stat_inc(&w->st_tasks);
    if (atomic_fetch_sub_explicit(&p->outstanding, 1, memory_order_acq_rel) == 1)
        notify(p, w, 0, false); /* the batch is done: wake the caller if it sleeps */
}

/* The level worker w is bound at: the pool's, except that the first
 * worker of a NUMA node, which may be its team master (the DAG executor
 * pins wide nodes to it), is bound to no less than the node's cores: its
 * OpenMP team inherits its affinity, and a master bound to one core
 * would pile its whole team onto that core. */
static loom__bind_level bind_level(const loom__pool *p, int w)
{
    return loom__pool_numa_first(p, w) && (p->bind == LOOM__BIND_L3 || p->bind == LOOM__BIND_CORE) ? LOOM__BIND_NUMA : p->bind;
}

static void *worker_main(void *arg)
{
    loom__worker *w = arg;
    loom__pool *p = w->pool;
    int cores[MAX_WORKERS];
    int nc = loom__topology_bind_cores(p->topo, p->worker_core, p->n, w->index, bind_level(p, w->index), cores);
    if (nc > 0)
        w->bind = loom__topology_bind_thread(p->topo, cores, nc, w->bind_msg, sizeof w->bind_msg);
    else {
        w->bind = LOOM__BIND_SKIPPED;
        snprintf(w->bind_msg, sizeof w->bind_msg, "binding disabled");
    }
    pthread_mutex_lock(&p->park_mu);
    p->nready++;
    pthread_cond_signal(&p->ready_cv);
    pthread_mutex_unlock(&p->park_mu);

    while (!atomic_load_explicit(&p->shutdown, memory_order_acquire)) {
        void *task;
        bool busy;
        if (find_task(w, &task, &busy))
            execute(w, task);
        else
            park(w, busy);
    }
    return NULL;
}

/* ---- Spawning --------------------------------------------------------- */

loom_status loom__pool_spawn(loom__worker *w, void *task)
{
    loom__pool *p = w->pool;
    /* Counted before it is visible, so the count cannot reach zero while the
     * task waits; relaxed is enough because the spawning task itself is
     * still outstanding until its own acq_rel decrement, which comes after. */
    atomic_fetch_add_explicit(&p->outstanding, 1, memory_order_relaxed);
    if (!loom__deque_push(w->deque, task)) {
        if (!ring_push(&w->ovf, task)) {
            atomic_fetch_sub_explicit(&p->outstanding, 1, memory_order_relaxed);
            return loom__set_error(LOOM_ERR_NOMEM, "pool: cannot grow worker %d's overflow queue", w->index);
        }
        stat_inc(&w->st_overflows);
    }
    notify(p, w, -1, true);
    return LOOM_OK;
}

loom_status loom__pool_spawn_pinned(loom__worker *w, int target, void *task)
{
    loom__pool *p = w->pool;
    if (target < 0 || target >= p->n)
        return loom__set_error(LOOM_ERR_RANGE, "pool: pin to worker %d of %d", target, p->n);
    atomic_fetch_add_explicit(&p->outstanding, 1, memory_order_relaxed);
    if (!ring_push(&p->workers[target].pinned, task)) {
        atomic_fetch_sub_explicit(&p->outstanding, 1, memory_order_relaxed);
        return loom__set_error(LOOM_ERR_NOMEM, "pool: cannot grow worker %d's pinned queue", target);
    }
    notify(p, w, target, false);
    return LOOM_OK;
}

loom_status loom__pool_spawn_to(loom__worker *w, int target, void *task)
{
    loom__pool *p = w->pool;
    if (target < 0 || target >= p->n)
        return loom__set_error(LOOM_ERR_RANGE, "pool: spawn to worker %d of %d", target, p->n);
    atomic_fetch_add_explicit(&p->outstanding, 1, memory_order_relaxed);
    if (!ring_push(&p->workers[target].ovf, task)) {
        atomic_fetch_sub_explicit(&p->outstanding, 1, memory_order_relaxed);
        return loom__set_error(LOOM_ERR_NOMEM, "pool: cannot grow worker %d's overflow queue", target);
    }
    stat_inc(&w->st_overflows);
    notify(p, w, target, true);
    return LOOM_OK;
}

bool loom__worker_stopping(const loom__worker *w)
{
    return atomic_load_explicit(&w->pool->stop, memory_order_relaxed);
}

int loom__worker_index(const loom__worker *w) { return w->index; }
int loom__worker_core(const loom__worker *w) { return w->core; }
int loom__worker_numa(const loom__worker *w) { return w->numa; }

int loom__pool_numa_worker(const loom__pool *pool, int numa)
{
    for (int i = 0; i < pool->n; i++)
        if (pool->workers[i].numa == numa) return i;
    return -1;
}

int loom__pool_numa_domains(const loom__pool *pool)
{
    int count = 0;
    for (int i = 0; i < pool->n; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) seen = pool->workers[j].numa == pool->workers[i].numa;
        count += !seen;
    }
    return count;
}

bool loom__pool_numa_first(const loom__pool *pool, int w)
{
    return loom__pool_numa_worker(pool, pool->workers[w].numa) == w;
}

bool loom__pool_numa_balanced(const loom__pool *pool)
{
    const int t0 = loom__cores_total(pool->cores, pool->workers[0].numa);
    for (int i = 1; i < pool->n; i++)
        if (loom__cores_total(pool->cores, pool->workers[i].numa) != t0) return false;
    return true;
}

loom__pool *loom__worker_pool(const loom__worker *w) { return w->pool; }

/* ---- Running a batch --------------------------------------------------- */

loom_status loom__pool_run(loom__pool *p, void *const *roots, int64_t nroots, loom__task_fn fn, void *user)
{
    if (!p || !fn || nroots < 0 || (nroots > 0 && !roots))
        return loom__set_error(LOOM_ERR_INVALID_ARG, "pool_run: NULL pool, function or roots, or negative count");
    bool idle = false;
    if (!atomic_compare_exchange_strong_explicit(&p->running, &idle, true, memory_order_acquire,
                                                 memory_order_relaxed))
        return loom__set_error(LOOM_ERR_STATE, "pool_run: the pool is already running a batch");
    if (nroots == 0) {
        atomic_store_explicit(&p->running, false, memory_order_release);
        return LOOM_OK;
    }
    loom__worker *w0 = &p->workers[0];
    p->fn = fn;
    p->user = user;
    atomic_store_explicit(&p->err_status, LOOM_OK, memory_order_relaxed);
    atomic_store_explicit(&p->stop, false, memory_order_relaxed);
    atomic_store_explicit(&p->outstanding, nroots, memory_order_relaxed);

    /* Roots beyond the deque's capacity go to the overflow queue in order;
     * the rest go on the deque in reverse, so that a single worker (LIFO)
     * runs the roots in the order given, then the overflowed ones. */
    int64_t cap = loom__deque_capacity(w0->deque);
    int64_t in_deque = nroots < cap ? nroots : cap;
    for (int64_t i = in_deque; i < nroots; i++) {
        if (!ring_push(&w0->ovf, roots[i])) {
            /* Out of memory: the roots not queued never run.  Fail the batch
             * and let the queued ones drain as skipped tasks. */
            atomic_fetch_sub_explicit(&p->outstanding, nroots - i, memory_order_relaxed);
            loom__set_error(LOOM_ERR_NOMEM, "pool_run: cannot queue %lld roots", (long long)nroots);
            fail(p, LOOM_ERR_NOMEM);
            break;
        }
        stat_inc(&w0->st_overflows);
    }
    for (int64_t i = in_deque - 1; i >= 0; i--) {
        bool pushed = loom__deque_push(w0->deque, roots[i]);
        LOOM_ASSERT(pushed); /* the deque was empty and in_deque <= capacity */
    }
    /* The caller takes a root itself: wake a worker for each of the others.
     * A worker woken for nothing finds the deque empty and spins on its
     * steal rounds while the caller's node (often an OpenMP team as wide as
     * the cores) runs: on a chain (a backward with one root) it only
     * slowed that node down. Work made ready later wakes workers as it is
     * spawned. */
    const int64_t others = nroots - 1;
    int64_t nwake = others < p->n - 1 ? others : p->n - 1;
    for (int64_t i = 0; i < nwake; i++) notify(p, w0, -1, true);

    while (atomic_load_explicit(&p->outstanding, memory_order_acquire) != 0) {
        void *task;
        bool busy;
        if (find_task(w0, &task, &busy))
            execute(w0, task);
        else
            park(w0, busy);
    }
    loom_status st = (loom_status)atomic_load_explicit(&p->err_status, memory_order_relaxed);
    if (st != LOOM_OK) loom__set_error(st, "%s", p->err_msg);
    atomic_store_explicit(&p->running, false, memory_order_release);
    return st;
}

/* ---- Creation ---------------------------------------------------------- */

static void pool_destroy(loom__pool *p, int ninit)
{
    for (int i = 0; i < ninit; i++) {
        loom__worker *w = &p->workers[i];
        loom__deque_free(w->deque);
        ring_destroy(&w->ovf);
        ring_destroy(&w->pinned);
        pthread_cond_destroy(&w->cv);
    }
    free(p->workers);
    free(p->worker_core);
    free(p->victims);
    loom__cores_free(p->cores);
    pthread_mutex_destroy(&p->park_mu);
    pthread_cond_destroy(&p->ready_cv);
    loom__topology_free(p->owned_topo);
    free(p);
}

static void stop_threads(loom__pool *p)
{
    atomic_store_explicit(&p->shutdown, true, memory_order_seq_cst);
    pthread_mutex_lock(&p->park_mu);
    atomic_fetch_add_explicit(&p->epoch, 1, memory_order_seq_cst);
    for (int i = 0; i < p->n; i++) wake_locked(&p->workers[i]);
    pthread_mutex_unlock(&p->park_mu);
    for (int i = 1; i <= p->nthreads; i++) pthread_join(p->workers[i].thread, NULL);
    p->nthreads = 0;
}

loom__pool *loom__pool_create(const loom__topology *topo, const loom__pool_options *o)
{
    loom__pool_options defaults = {0};
    if (!o) o = &defaults;
    int64_t cap = o->deque_capacity ? o->deque_capacity : DEFAULT_CAPACITY;
    if (o->num_workers < 0 || o->num_workers > MAX_WORKERS) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "pool: %d workers (need 0 for one per core, or 1..%d)", o->num_workers,
                        MAX_WORKERS);
        return NULL;
    }
    if (o->place < 0 || o->place >= LOOM__PLACE_COUNT || o->bind < 0 || o->bind >= LOOM__BIND_LEVEL_COUNT ||
        o->steal_rounds < 0 || o->ncores < 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "pool: bad placement, binding, steal_rounds or ncores option");
        return NULL;
    }
    if (cap < 2 || (cap & (cap - 1)) != 0 || cap > ((int64_t)1 << 30)) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "pool: deque capacity %lld is not a power of two in [2, 2^30]",
                        (long long)cap);
        return NULL;
    }
    loom__pool *p = calloc(1, sizeof *p);
    if (!p) {
        loom__set_error(LOOM_ERR_NOMEM, "pool: out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->park_mu, NULL);
    pthread_cond_init(&p->ready_cv, NULL);
    if (!topo) {
        p->owned_topo = loom__topology_create(NULL);
        if (!p->owned_topo) {
            pool_destroy(p, 0);
            return NULL;
        }
        topo = p->owned_topo;
    }
    p->topo = topo;
    int allowed = loom__topology_ncores(topo);
    if (o->cores && o->ncores > 0) { /* distinct cores (place() checks the range) */
        allowed = 0;
        for (int i = 0; i < o->ncores; i++) {
            bool dup = false;
            for (int j = 0; j < i && !dup; j++) dup = o->cores[j] == o->cores[i];
            allowed += !dup;
        }
    }
    int n = o->num_workers ? o->num_workers : allowed;
    if (n > MAX_WORKERS) n = MAX_WORKERS;
    p->n = n;
    p->bind = o->bind;
    p->steal_rounds = o->steal_rounds ? o->steal_rounds : DEFAULT_STEAL_ROUNDS;
    p->observer = o->observer;
    p->observer_user = o->observer_user;
    atomic_init(&p->outstanding, 0);
    atomic_init(&p->stop, false);
    atomic_init(&p->err_status, LOOM_OK);
    atomic_init(&p->running, false);
    atomic_init(&p->shutdown, false);
    atomic_init(&p->nsleepers, 0);
    atomic_init(&p->epoch, 0);

    size_t wbytes = sizeof(loom__worker) * (size_t)n; /* a multiple of CACHE_LINE */
    p->workers = aligned_alloc(CACHE_LINE, wbytes);
    p->worker_core = malloc(sizeof(int) * (size_t)n);
    p->victims = malloc(sizeof(int) * (size_t)n * (size_t)(n > 1 ? n - 1 : 1));
    if (!p->workers || !p->worker_core || !p->victims) {
        pool_destroy(p, 0);
        loom__set_error(LOOM_ERR_NOMEM, "pool: out of memory for %d workers", n);
        return NULL;
    }
    memset(p->workers, 0, wbytes);
    if (loom__topology_place(topo, n, o->cores, o->ncores, o->place, p->worker_core) != LOOM_OK) {
        pool_destroy(p, 0);
        return NULL; /* the message is set */
    }
    int ninit = 0;
    for (; ninit < n; ninit++) {
        loom__worker *w = &p->workers[ninit];
        w->pool = p;
        w->index = ninit;
        w->core = p->worker_core[ninit];
        w->numa = loom__topology_core_numa(topo, w->core);
        w->victims = p->victims + (size_t)ninit * (size_t)(n - 1);
        loom__topology_victims(topo, p->worker_core, n, ninit, p->victims + (size_t)ninit * (size_t)(n - 1));
        w->deque = loom__deque_create(cap);
        bool ovf_ok = ring_init(&w->ovf, OVERFLOW_INITIAL);
        ring_init(&w->pinned, 0); /* allocates nothing yet */
        pthread_cond_init(&w->cv, NULL);
        w->bind = LOOM__BIND_SKIPPED;
        snprintf(w->bind_msg, sizeof w->bind_msg, "the calling thread is not bound");
        if (!w->deque || !ovf_ok) {
            pool_destroy(p, ninit + 1);
            loom__set_error(LOOM_ERR_NOMEM, "pool: out of memory for worker %d's queues", ninit);
            return NULL;
        }
    }
    /* The core budget: `budget` tokens (default one per worker), split over
     * the NUMA nodes in proportion to the workers placed there, every node
     * with a worker getting at least one. */
    {
        int nn = loom__topology_nnuma(topo);
        if (nn < 1) nn = 1;
        int *cnt = calloc((size_t)nn, sizeof *cnt), *tok = calloc((size_t)nn, sizeof *tok);
        if (cnt && tok) {
            const int budget = o->core_budget > 0 ? o->core_budget : n;
            int given = 0;
            for (int i = 0; i < n; i++) cnt[p->workers[i].numa < nn ? p->workers[i].numa : 0]++;
            for (int d = 0; d < nn; d++) {
                tok[d] = cnt[d] ? (int)((int64_t)budget * cnt[d] / n) : 0;
                if (cnt[d] && tok[d] == 0) tok[d] = 1;
                given += tok[d];
            }
            for (int d = 0; given < budget; d = (d + 1) % nn) /* the remainder, to nodes with workers */
                if (cnt[d]) tok[d]++, given++;
            p->cores = loom__cores_create(nn, tok);
        }
        free(cnt);
        free(tok);
        if (!p->cores) {
            pool_destroy(p, ninit);
            loom__set_error(LOOM_ERR_NOMEM, "pool: out of memory for the core budget");
            return NULL;
        }
    }
    for (int i = 1; i < n; i++) {
        int rc = pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]);
        if (rc != 0) {
            stop_threads(p);
            pool_destroy(p, ninit);
            loom__set_error(LOOM_ERR_STATE, "pool: cannot start worker thread %d of %d: %s", i, n, strerror(rc));
            return NULL;
        }
        p->nthreads = i;
    }
    /* Wait until every worker has bound itself, so that bind statuses can be
     * read without a race and `loom info` shows them. */
    pthread_mutex_lock(&p->park_mu);
    while (p->nready < n - 1) pthread_cond_wait(&p->ready_cv, &p->park_mu);
    pthread_mutex_unlock(&p->park_mu);
    return p;
}

void loom__pool_free(loom__pool *p)
{
    if (!p) return;
    LOOM_ASSERT(!atomic_load_explicit(&p->running, memory_order_acquire));
    stop_threads(p);
    pool_destroy(p, p->n);
}

/* ---- Options from the environment -------------------------------------- */

loom_status loom__pool_options_from_env(loom__pool_options *o, const loom__topology *topo, int *core_buf, int max)
{
    const char *s = getenv("LOOM_NUM_THREADS");
    if (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end || v < 1 || v > MAX_WORKERS)
            return loom__set_error(LOOM_ERR_INVALID_ARG, "LOOM_NUM_THREADS=\"%s\" is not a number in 1..%d", s,
                                   MAX_WORKERS);
        o->num_workers = (int)v;
    }
    s = getenv("LOOM_CORES");
    if (s && *s) {
        int n;
        loom_status st = loom__parse_core_list(s, loom__topology_ncores(topo), core_buf, max, &n);
        if (st != LOOM_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", loom_last_error());
            return loom__set_error(st, "LOOM_CORES: %s", msg);
        }
        o->cores = core_buf;
        o->ncores = n;
    }
    s = getenv("LOOM_PLACE");
    if (s && *s) {
        loom_status st = loom__place_policy_parse(s, &o->place);
        if (st != LOOM_OK) return loom__set_error(st, "LOOM_PLACE=\"%s\" is not \"spread\" or \"compact\"", s);
    }
    s = getenv("LOOM_BIND");
    if (s && *s) {
        static const char *const names[] = {[LOOM__BIND_NUMA] = "numa", [LOOM__BIND_L3] = "l3",
                                            [LOOM__BIND_CORE] = "core", [LOOM__BIND_NONE] = "none"};
        _Static_assert(sizeof names / sizeof names[0] == LOOM__BIND_LEVEL_COUNT, "a bind level lacks a name");
        int found = -1;
        for (int i = 0; i < LOOM__BIND_LEVEL_COUNT; i++)
            if (strcmp(s, names[i]) == 0) found = i;
        if (found < 0)
            return loom__set_error(LOOM_ERR_INVALID_ARG, "LOOM_BIND=\"%s\" is not numa, l3, core or none", s);
        o->bind = (loom__bind_level)found;
    }
    return LOOM_OK;
}

/* ---- Introspection ----------------------------------------------------- */

int loom__pool_size(const loom__pool *p) { return p->n; }
const loom__topology *loom__pool_topology(const loom__pool *p) { return p->topo; }

int loom__pool_worker_core(const loom__pool *p, int w)
{
    LOOM_ASSERT(w >= 0 && w < p->n);
    return p->worker_core[w];
}

loom__bind_status loom__pool_bind_status(const loom__pool *p, int w, const char **msg)
{
    LOOM_ASSERT(w >= 0 && w < p->n);
    if (msg) *msg = p->workers[w].bind == LOOM__BIND_OK ? "" : p->workers[w].bind_msg;
    return p->workers[w].bind;
}

void loom__pool_get_stats(const loom__pool *p, int w, loom__pool_stats *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < p->n; i++) {
        if (w >= 0 && i != w) continue;
        loom__worker *x = &p->workers[i];
        out->tasks += atomic_load_explicit(&x->st_tasks, memory_order_relaxed);
        out->skipped += atomic_load_explicit(&x->st_skipped, memory_order_relaxed);
        out->steals += atomic_load_explicit(&x->st_steals, memory_order_relaxed);
        out->steal_aborts += atomic_load_explicit(&x->st_aborts, memory_order_relaxed);
        out->failed_rounds += atomic_load_explicit(&x->st_failed_rounds, memory_order_relaxed);
        out->parks += atomic_load_explicit(&x->st_parks, memory_order_relaxed);
        out->overflows += atomic_load_explicit(&x->st_overflows, memory_order_relaxed);
    }
}

size_t loom__pool_describe(const loom__pool *p, char *buf, size_t size)
{
    size_t len = loom__topology_describe(p->topo, p->worker_core, p->n, buf, size);
    static const char *const names[] = {[LOOM__BIND_OK] = "bound", [LOOM__BIND_SKIPPED] = "not bound",
                                        [LOOM__BIND_FAILED] = "binding failed"};
    _Static_assert(sizeof names / sizeof names[0] == LOOM__BIND_STATUS_COUNT, "a bind status lacks a name");
    int cores[MAX_WORKERS];
    const char *head = "binding:\n";
    if (len < size) snprintf(buf + len, size - len, "%s", head);
    len += strlen(head);
    for (int w = 0; w < p->n; w++) {
        char line[512], set[256] = "";
        int nc = w == 0 ? 0 : loom__topology_bind_cores(p->topo, p->worker_core, p->n, w, bind_level(p, w), cores);
        size_t sl = 0;
        for (int i = 0; i < nc && sl < sizeof set; i++) {
            int k = snprintf(set + sl, sizeof set - sl, "%s%d", i ? "," : "", cores[i]);
            if (k > 0) sl += (size_t)k;
        }
        const loom__worker *x = &p->workers[w];
        int k = snprintf(line, sizeof line, "  worker %d: %s%s%s%s%s\n", w, names[x->bind],
                         nc ? " to cores " : "", set, x->bind == LOOM__BIND_OK ? "" : ": ",
                         x->bind == LOOM__BIND_OK ? "" : x->bind_msg);
        if (k <= 0) continue;
        if (len < size) snprintf(buf + len, size - len, "%s", line);
        len += (size_t)k;
    }
    return len;
}

/* ---- The core budget ---------------------------------------------------- */

int loom__worker_cores_take(loom__worker *w, int want, bool exact)
{
    return exact ? loom__cores_take_exact(w->pool->cores, w->numa, want)
                 : loom__cores_take(w->pool->cores, w->numa, want);
}

void loom__worker_cores_give(loom__worker *w, int n) { loom__cores_give(w->pool->cores, w->numa, n); }

int loom__worker_cores_total(const loom__worker *w) { return loom__cores_total(w->pool->cores, w->numa); }
