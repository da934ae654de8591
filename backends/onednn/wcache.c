/*
 * backends/onednn/wcache.c - reordered weights kept between calls.
 *
 * A convolution's weights arrive plain (oihw) and oneDNN's blocked kernels
 * want them blocked (OIhw8i8o ...): a reorder on every call. In inference
 * the weights never change, and at batch 1 those reorders were 11% of
 * ResNet-18's forward (4.0 of 34 ms, 2 threads, DNNL_VERBOSE). This cache
 * keeps the reordered copy, keyed by the input's contents stamp
 * (loom__tview: storage uid and version, which every write bumps), its
 * address, and both layouts. Equal key, equal bytes: a hit skips the
 * reorder.
 *
 * Policy: a copy is kept only for contents seen twice. The first call with
 * a stamp records it (SEEN) and reorders into the program's temporary as
 * before; the second fills a cached copy; later ones hit. Training, whose
 * weights change every step, thus never fills a copy (each version is seen
 * once by the forward and once, in another layout, by backward-data): it
 * pays one lookup per call and keeps one small entry per weight and
 * layout, reset to the newest version.
 *
 * Bounds: copies take at most LOOM_ONEDNN_WEIGHT_CACHE_MB MiB (default
 * 256; 0 turns the cache off), least recently used ones freed first, and
 * at most MAX_ENTRIES entries. A copy in use (pinned between get and
 * release, while its program runs) is never freed. One mutex guards it all;
 * lookups happen once per convolution call.
 */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backends/onednn/onednn.h"

#define BUCKETS 256
#define MAX_ENTRIES 4096

typedef enum wstate { SEEN, FILLING, READY } wstate;

struct loom__onednn_wentry {
    uint64_t uid;
    uint32_t version;
    const void *src;
    dnnl_memory_desc_t from, to;
    wstate state;
    void *buf; /* FILLING / READY: the reordered copy */
    size_t bytes;
    int pins;
    uint64_t last_use;
    struct loom__onednn_wentry *next; /* in its bucket */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static loom__onednn_wentry *table[BUCKETS];
static int entries;
static size_t held;     /* bytes of copies */
static uint64_t ticks;  /* last_use clock */
static int64_t n_hits, n_fills;
static int64_t limit = -1; /* bytes; -1: not read yet */

static size_t budget(void)
{
    if (limit < 0) {
        const char *s = getenv("LOOM_ONEDNN_WEIGHT_CACHE_MB");
        char *end = NULL;
        long long mb = s && *s ? strtoll(s, &end, 10) : 256;
        if (s && *s && (*end || mb < 0)) mb = 256;
        limit = (int64_t)mb << 20;
    }
    return (size_t)limit;
}

void loom__onednn_wcache_set_limit(int64_t bytes)
{
    pthread_mutex_lock(&lock);
    limit = bytes;
    pthread_mutex_unlock(&lock);
}

static unsigned bucket(uint64_t uid) { return (unsigned)((uid * 0x9E3779B97F4A7C15ull) >> 56) % BUCKETS; }

/* Frees the buffer of the least recently used unpinned entry that has one
 * (it goes back to SEEN); false if there is none. */
static bool drop_lru_copy(void)
{
    loom__onednn_wentry *best = NULL;
    for (int b = 0; b < BUCKETS; b++)
        for (loom__onednn_wentry *e = table[b]; e; e = e->next)
            if (e->buf && e->state != FILLING && e->pins == 0 && (!best || e->last_use < best->last_use)) best = e;
    if (!best) return false;
    free(best->buf);
    held -= best->bytes;
    best->buf = NULL;
    best->bytes = 0;
    best->state = SEEN;
    return true;
}

/* Removes the least recently used unpinned entry; false if none. */
static bool drop_lru_entry(void)
{
    loom__onednn_wentry **best = NULL;
    for (int b = 0; b < BUCKETS; b++)
        for (loom__onednn_wentry **pe = &table[b]; *pe; pe = &(*pe)->next)
            if ((*pe)->pins == 0 && (*pe)->state != FILLING && (!best || (*pe)->last_use < (*best)->last_use))
                best = pe;
    if (!best) return false;
    loom__onednn_wentry *e = *best;
    *best = e->next;
    if (e->buf) held -= e->bytes;
    free(e->buf);
    free(e);
    entries--;
    return true;
}

loom__onednn_wentry *loom__onednn_wcache_get(const loom__tview *in, const dnnl_memory_desc_t *from,
                                             const dnnl_memory_desc_t *to, void **buf, bool *ready)
{
    *buf = NULL;
    *ready = false;
    if (!in->uid) return NULL;
    pthread_mutex_lock(&lock);
    const size_t cap = budget();
    if (cap == 0) {
        pthread_mutex_unlock(&lock);
        return NULL;
    }
    const unsigned b = bucket(in->uid);
    loom__onednn_wentry *e = table[b];
    while (e && !(e->uid == in->uid && e->src == in->data && dnnl_memory_desc_equal(&e->from, from) &&
                  dnnl_memory_desc_equal(&e->to, to)))
        e = e->next;
    loom__onednn_wentry *got = NULL;
    if (!e) {
        if (entries >= MAX_ENTRIES && !drop_lru_entry()) goto out;
        e = calloc(1, sizeof *e);
        if (!e) goto out;
        e->uid = in->uid;
        e->version = in->version;
        e->src = in->data;
        e->from = *from;
        e->to = *to;
        e->state = SEEN;
        e->next = table[b];
        table[b] = e;
        entries++;
    } else if (e->version != in->version) {
        /* New contents under the same name: start over from SEEN, keeping
         * the buffer for the next fill (gradient accumulation sees each
         * version twice: no allocation per step). */
        if (e->pins == 0 && e->state != FILLING) {
            e->version = in->version;
            e->state = SEEN;
        }
    } else if (e->state == READY) {
        e->pins++;
        *buf = e->buf;
        *ready = true;
        n_hits++;
        got = e;
    } else if (e->state == SEEN) {
        /* Seen before with these contents: keep a copy, if it fits (in
         * the buffer of an older version, if there is one). */
        const size_t need = dnnl_memory_desc_get_size(to);
        if (!e->buf) {
            while (held + need > cap && drop_lru_copy()) {
            }
            if (held + need <= cap && need > 0) {
                e->buf = aligned_alloc(64, (need + 63) & ~(size_t)63);
                if (e->buf) {
                    e->bytes = need;
                    held += need;
                }
            }
        }
        if (e->buf) {
            e->state = FILLING;
            e->pins++;
            *buf = e->buf;
            n_fills++;
            got = e;
        }
    }
    e->last_use = ++ticks;
out:
    pthread_mutex_unlock(&lock);
    return got;
}

void loom__onednn_wcache_release(loom__onednn_wentry *e, bool filled)
{
    if (!e) return;
    pthread_mutex_lock(&lock);
    if (e->state == FILLING) {
        if (filled) {
            e->state = READY;
        } else { /* the reorder failed: the buffer holds nothing */
            e->state = SEEN;
        }
    }
    e->pins--;
    pthread_mutex_unlock(&lock);
}

void loom__onednn_wcache_stats(int64_t *hits, int64_t *fills, int64_t *bytes)
{
    pthread_mutex_lock(&lock);
    if (hits) *hits = n_hits;
    if (fills) *fills = n_fills;
    if (bytes) *bytes = (int64_t)held;
    pthread_mutex_unlock(&lock);
}

void loom__onednn_wcache_clear(void)
{
    pthread_mutex_lock(&lock);
    for (int b = 0; b < BUCKETS; b++) {
        loom__onednn_wentry *e = table[b];
        while (e) {
            loom__onednn_wentry *n = e->next;
            free(e->buf);
            free(e);
            e = n;
        }
        table[b] = NULL;
    }
    entries = 0;
    held = 0;
    pthread_mutex_unlock(&lock);
}
