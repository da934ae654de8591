/*
 * runtime/cores.c - the core budget (see cores.h).
 *
 * Per domain: `avail` free tokens (atomic, so a flexible take with tokens
 * free is one CAS and no lock), `gather` set while an exact taker gathers,
 * and `nwait` the threads blocked on the domain's condition variable.
 *
 * No lost wake-up: a blocking thread increments nwait (seq_cst) under the
 * mutex before it re-reads avail/gather and waits; a giver adds to avail
 * (seq_cst) and then reads nwait. Of the two seq_cst operations one comes
 * first: either the blocked thread sees the tokens, or the giver sees
 * nwait > 0 and broadcasts under the mutex, which the waiter holds from its
 * re-check until pthread_cond_wait releases it.
 */
#include "runtime/cores.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#define CACHE_LINE 64

typedef struct domain {
    _Alignas(CACHE_LINE) _Atomic int avail;
    _Atomic int gather; /* 1 while an exact taker gathers tokens */
    _Atomic int nwait;
    int total;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} domain;

struct loom__cores {
    int n;
    domain *d;
};

loom__cores *loom__cores_create(int ndomains, const int *tokens)
{
    if (ndomains < 1) ndomains = 1;
    loom__cores *c = calloc(1, sizeof *c);
    domain *d = c ? aligned_alloc(CACHE_LINE, sizeof *d * (size_t)ndomains) : NULL;
    if (!d) {
        free(c);
        return NULL;
    }
    c->n = ndomains;
    c->d = d;
    for (int i = 0; i < ndomains; i++) {
        d[i].total = tokens && tokens[i] > 0 ? tokens[i] : 0;
        atomic_init(&d[i].avail, d[i].total);
        atomic_init(&d[i].gather, 0);
        atomic_init(&d[i].nwait, 0);
        pthread_mutex_init(&d[i].mu, NULL);
        pthread_cond_init(&d[i].cv, NULL);
    }
    if (d[0].total == 0) { /* domain 0 serves empty domains: it must have one */
        d[0].total = 1;
        atomic_store(&d[0].avail, 1);
    }
    return c;
}

void loom__cores_free(loom__cores *c)
{
    if (!c) return;
    for (int i = 0; i < c->n; i++) {
        pthread_mutex_destroy(&c->d[i].mu);
        pthread_cond_destroy(&c->d[i].cv);
    }
    free(c->d);
    free(c);
}

static domain *dom(const loom__cores *c, int d)
{
    if (d < 0 || d >= c->n || c->d[d].total == 0) d = 0;
    return &c->d[d];
}

int loom__cores_total(const loom__cores *c, int d) { return dom(c, d)->total; }

int loom__cores_free_now(const loom__cores *c, int d)
{
    return atomic_load_explicit(&dom(c, d)->avail, memory_order_relaxed);
}

static int clamp_want(const domain *x, int want)
{
    if (want < 1) want = 1;
    return want > x->total ? x->total : want;
}

/* Takes min(want, avail) > 0 tokens if any are free; returns how many. */
static int grab(domain *x, int want)
{
    int a = atomic_load_explicit(&x->avail, memory_order_relaxed);
    while (a > 0) {
        int k = a < want ? a : want;
        if (atomic_compare_exchange_weak_explicit(&x->avail, &a, a - k, memory_order_acquire, memory_order_relaxed))
            return k;
    }
    return 0;
}

int loom__cores_take(loom__cores *c, int d, int want)
{
    domain *x = dom(c, d);
    want = clamp_want(x, want);
    if (!atomic_load_explicit(&x->gather, memory_order_relaxed)) {
        int k = grab(x, want);
        if (k) return k;
    }
    pthread_mutex_lock(&x->mu);
    atomic_fetch_add(&x->nwait, 1);
    int k = 0;
    for (;;) {
        if (!atomic_load(&x->gather) && (k = grab(x, want)) > 0) break;
        pthread_cond_wait(&x->cv, &x->mu);
    }
    atomic_fetch_sub(&x->nwait, 1);
    pthread_mutex_unlock(&x->mu);
    return k;
}

int loom__cores_take_exact(loom__cores *c, int d, int want)
{
    domain *x = dom(c, d);
    want = clamp_want(x, want);
    pthread_mutex_lock(&x->mu);
    atomic_fetch_add(&x->nwait, 1);
    while (atomic_load(&x->gather)) pthread_cond_wait(&x->cv, &x->mu); /* one gatherer at a time */
    atomic_store(&x->gather, 1);
    int held = 0;
    for (;;) {
        held += grab(x, want - held);
        if (held == want) break;
        pthread_cond_wait(&x->cv, &x->mu);
    }
    atomic_store(&x->gather, 0);
    atomic_fetch_sub(&x->nwait, 1);
    /* Flexible takers and the next gatherer waited for gather == 0. */
    if (atomic_load(&x->nwait) > 0) pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    return held;
}

void loom__cores_give(loom__cores *c, int d, int n)
{
    if (n <= 0) return;
    domain *x = dom(c, d);
    atomic_fetch_add(&x->avail, n); /* seq_cst: see the top of the file */
    if (atomic_load(&x->nwait) > 0) {
        pthread_mutex_lock(&x->mu);
        pthread_cond_broadcast(&x->cv);
        pthread_mutex_unlock(&x->mu);
    }
}

int loom__cores_width(int n, int total)
{
    if (n >= total) return total;
    int w = 1;
    while (w * 2 <= n) w *= 2;
    return w;
}
