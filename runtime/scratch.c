/*
 * runtime/scratch.c - per-thread, per-slot grow-only buffers (see
 * scratch.h). A pthread key's destructor frees a thread's buffers when it
 * exits; the main thread's are freed by an atexit handler.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "runtime/scratch.h"

typedef struct scratch_set {
    void *buf[LOOM__SCRATCH_SLOTS];
    size_t cap[LOOM__SCRATCH_SLOTS];
} scratch_set;

static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool key_ok;
static _Thread_local scratch_set *mine;

static void free_set(void *p)
{
    scratch_set *s = p;
    if (!s) return;
    for (int i = 0; i < LOOM__SCRATCH_SLOTS; i++) free(s->buf[i]);
    free(s);
}

static void at_exit(void)
{
    /* The exiting thread's set (pthread destructors do not run for it). */
    scratch_set *s = mine;
    mine = NULL;
    if (key_ok) pthread_setspecific(key, NULL);
    free_set(s);
}

static void init(void)
{
    key_ok = pthread_key_create(&key, free_set) == 0;
    atexit(at_exit);
}

void *loom__scratch(int slot, size_t bytes)
{
    if (slot < 0 || slot >= LOOM__SCRATCH_SLOTS) return NULL;
    if (!mine) {
        pthread_once(&once, init);
        scratch_set *s = calloc(1, sizeof *s);
        if (!s) return NULL;
        if (key_ok) pthread_setspecific(key, s);
        mine = s;
    }
    if (bytes == 0) bytes = 64;
    if (mine->cap[slot] >= bytes) return mine->buf[slot];
    /* Grow by at least half again, so a slowly growing size does not
     * reallocate every call. */
    size_t want = bytes + bytes / 2;
    want = (want + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, want);
    if (!p) return NULL;
    free(mine->buf[slot]);
    mine->buf[slot] = p;
    mine->cap[slot] = want;
    return p;
}
