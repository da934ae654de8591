/*
 * backends/onednn/cache.c - the program cache: built oneDNN programs keyed
 * by (op, nthreads, variant, op parameters) as a byte string.
 *
 * Building a program (primitive descriptors, JIT code generation, reorders)
 * costs from tens of microseconds to milliseconds; running a cached one only
 * wraps the buffers in dnnl_memory_t handles. The cache is a hash table with
 * a doubly linked LRU list, bounded by a capacity in programs
 * (LOOM_ONEDNN_CACHE_CAPACITY, default 256, 0 = no caching), guarded by one
 * mutex: lookups are a hash and a short chain walk, negligible beside any
 * oneDNN execution.
 *
 * Entries are reference counted: a worker running a program holds a
 * reference, so evicting it (another worker inserting a new shape) only
 * unlinks it, and the last release destroys its primitives. Programs are
 * built outside the lock; if two threads build the same key at once, the
 * second to finish uses the first's entry and destroys its own.
 *
 * (libdnnl has its own primitive cache, 1024 entries by default, which makes
 * rebuilding an evicted program cheaper; Loom leaves it as it is, since other
 * oneDNN users in the process share it.)
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backends/onednn/onednn.h"
#include "backends/registry.h"
#include "runtime/error.h"

#define DEFAULT_CAPACITY 256
#define NBUCKETS 1024 /* power of two */

typedef struct entry {
    loom__onednn_prim prim; /* first: release() casts back */
    struct entry *hnext;    /* hash chain */
    struct entry *prev, *next; /* LRU list, most recent first */
    uint64_t hash;
    size_t keylen;
    unsigned char *key;
    int refs;    /* callers holding it */
    bool cached; /* still in the table (else destroyed by the last release) */
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static entry *buckets[NBUCKETS];
static entry *lru_head, *lru_tail;
static int count, capacity = DEFAULT_CAPACITY;
static int64_t hits, misses, evictions;

static void cache_init(void)
{
    const char *s = getenv("LOOM_ONEDNN_CACHE_CAPACITY");
    if (!s || !*s) return;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    /* A malformed value keeps the default (kernels have no way to report
     * a configuration error). */
    if (errno == 0 && *end == '\0' && v >= 0 && v <= INT_MAX) capacity = (int)v;
}

/* ---- keys ---------------------------------------------------------------------- */

void loom__onednn_key_init(loom__onednn_key *k, const loom__kcall *call, int variant)
{
    k->len = 0;
    const int32_t head[3] = {(int32_t)call->op, (int32_t)call->nthreads, (int32_t)variant};
    loom__onednn_key_add(k, head, sizeof head);
}

void loom__onednn_key_add(loom__onednn_key *k, const void *data, size_t n)
{
    LOOM_ASSERT(k->len + n <= sizeof k->bytes);
    memcpy(k->bytes + k->len, data, n);
    k->len += n;
}

static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

/* ---- list and table (lock held) ---------------------------------------------------- */

static void lru_unlink(entry *e)
{
    if (e->prev) e->prev->next = e->next;
    else lru_head = e->next;
    if (e->next) e->next->prev = e->prev;
    else lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push_front(entry *e)
{
    e->prev = NULL;
    e->next = lru_head;
    if (lru_head) lru_head->prev = e;
    lru_head = e;
    if (!lru_tail) lru_tail = e;
}

static entry *find(uint64_t hash, const unsigned char *key, size_t len)
{
    for (entry *e = buckets[hash & (NBUCKETS - 1)]; e; e = e->hnext)
        if (e->hash == hash && e->keylen == len && memcmp(e->key, key, len) == 0) return e;
    return NULL;
}

static void table_remove(entry *e)
{
    entry **pp = &buckets[e->hash & (NBUCKETS - 1)];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    e->hnext = NULL;
    lru_unlink(e);
    e->cached = false;
    count--;
}

/* Unlinks least recently used entries until at most `limit` remain; those
 * nobody holds go on *dead for destruction outside the lock. */
static void evict_to(int limit, entry **dead)
{
    while (count > limit && lru_tail) {
        entry *e = lru_tail;
        table_remove(e);
        evictions++;
        if (e->refs == 0) {
            e->hnext = *dead;
            *dead = e;
        }
    }
}

static void entry_destroy(entry *e)
{
    loom__onednn_prim_destroy(&e->prim);
    free(e->key);
    free(e);
}

static void destroy_list(entry *dead)
{
    while (dead) {
        entry *next = dead->hnext;
        entry_destroy(dead);
        dead = next;
    }
}

/* ---- public ------------------------------------------------------------------------ */

loom_status loom__onednn_cache_get(const loom__onednn_key *key, const loom__kcall *call, loom__onednn_build_fn build,
                                   const void *params, const loom__onednn_prim **out)
{
    pthread_once(&init_once, cache_init);
    const uint64_t h = hash_bytes(key->bytes, key->len);

    pthread_mutex_lock(&lock);
    entry *e = find(h, key->bytes, key->len);
    if (e) {
        e->refs++;
        hits++;
        lru_unlink(e);
        lru_push_front(e);
        pthread_mutex_unlock(&lock);
        *out = &e->prim;
        return LOOM_OK;
    }
    misses++;
    pthread_mutex_unlock(&lock);

    /* Build outside the lock: it can take milliseconds. */
    e = calloc(1, sizeof *e);
    unsigned char *kcopy = e ? malloc(key->len ? key->len : 1) : NULL;
    if (!kcopy) {
        free(e);
        return loom__set_error(LOOM_ERR_NOMEM, "%s (onednn): out of memory", loom__op_name(call->op));
    }
    memcpy(kcopy, key->bytes, key->len);
    e->key = kcopy;
    e->keylen = key->len;
    e->hash = h;
    e->refs = 1;
    loom_status st = build(call, params, &e->prim);
    if (st == LOOM_OK) loom__onednn_prim_layout(&e->prim);
    if (st != LOOM_OK) {
        entry_destroy(e);
        return st;
    }

    entry *dead = NULL;
    pthread_mutex_lock(&lock);
    entry *other = capacity > 0 ? find(h, key->bytes, key->len) : NULL;
    if (other) {
        /* Another thread built it meanwhile: use theirs. */
        other->refs++;
        lru_unlink(other);
        lru_push_front(other);
        e->hnext = dead;
        dead = e;
        e = other;
    } else if (capacity > 0) {
        e->cached = true;
        e->hnext = buckets[h & (NBUCKETS - 1)];
        buckets[h & (NBUCKETS - 1)] = e;
        lru_push_front(e);
        count++;
        evict_to(capacity, &dead);
    }
    /* else capacity 0: e stays uncached; the release destroys it. */
    pthread_mutex_unlock(&lock);
    destroy_list(dead);
    *out = &e->prim;
    return LOOM_OK;
}

void loom__onednn_cache_release(const loom__onednn_prim *p)
{
    entry *e = (entry *)p; /* prim is the first member */
    pthread_mutex_lock(&lock);
    const bool destroy = --e->refs == 0 && !e->cached;
    pthread_mutex_unlock(&lock);
    if (destroy) entry_destroy(e);
}

loom_status loom__onednn_run(const loom__kcall *call, const loom__onednn_key *key, loom__onednn_build_fn build,
                             const void *params)
{
    const int prev = loom__onednn_threads_enter(call->nthreads);
    const loom__onednn_prim *p = NULL;
    loom_status st = loom__onednn_cache_get(key, call, build, params, &p);
    if (st == LOOM_OK) {
        st = loom__onednn_execute(call, p);
        if (st == LOOM_OK && call->out_layout) *call->out_layout = p->out_layout;
        loom__onednn_cache_release(p);
    }
    loom__onednn_threads_leave(prev);
    return st;
}

void loom__onednn_cache_set_capacity(int cap)
{
    pthread_once(&init_once, cache_init);
    entry *dead = NULL;
    pthread_mutex_lock(&lock);
    capacity = cap < 0 ? 0 : cap;
    evict_to(capacity, &dead);
    pthread_mutex_unlock(&lock);
    destroy_list(dead);
}

void loom__onednn_cache_stats_get(loom__onednn_cache_stats *out)
{
    pthread_once(&init_once, cache_init);
    pthread_mutex_lock(&lock);
    out->hits = hits;
    out->misses = misses;
    out->evictions = evictions;
    out->size = count;
    out->capacity = capacity;
    pthread_mutex_unlock(&lock);
}

void loom__onednn_cache_clear(void)
{
    entry *dead = NULL;
    pthread_mutex_lock(&lock);
    const int64_t ev = evictions;
    evict_to(0, &dead);
    evictions = ev; /* clearing is not eviction */
    pthread_mutex_unlock(&lock);
    destroy_list(dead);
}
