/*
 * runtime/deque.h - a bounded Chase-Lev work-stealing deque of pointers.
 *
 * One thread, the owner, pushes and takes at the bottom (LIFO: the newest
 * item first, whose inputs are still in its cache); any number of other
 * threads, the thieves, steal at the top (FIFO: the oldest item first, which
 * tends to be the root of the largest amount of remaining work).  The
 * capacity is fixed when the deque is created and never changes: push fails
 * when the deque is full and the caller keeps the item elsewhere (the pool
 * has a mutex-protected overflow queue per worker).  A bounded deque never
 * frees an array a thief may still be reading, which is the hard part of
 * the resizable version (see docs/runtime.md and shared/notes/runtime.md).
 *
 * The memory orderings are those of the corrected C11 version of Le, Pop,
 * Cohen and Zappa Nardelli (PPoPP'13) as fixed by Norris and Demsky
 * (CDSChecker), minus the resize, with bottom stored with release so that
 * ThreadSanitizer, which ignores standalone fences, sees the happens-before
 * edge (as Taskflow's BoundedWSQ does).
 *
 * Usage:
 *
 *     loom__deque *d = loom__deque_create(1024);    // owner thread or any
 *     if (!loom__deque_push(d, item)) overflow(item); // owner only
 *     void *x;
 *     if (loom__deque_take(d, &x)) run(x);            // owner only
 *     switch (loom__deque_steal(d, &x)) {             // any other thread
 *     case LOOM__STEAL_OK: run(x); break;
 *     case LOOM__STEAL_ABORT: retry(); break;         // lost a race: not empty
 *     case LOOM__STEAL_EMPTY: break;
 *     }
 *     loom__deque_free(d);                            // when no thread uses it
 *
 * Items are opaque pointers; NULL is a valid item.
 */
#ifndef LOOM_RUNTIME_DEQUE_H
#define LOOM_RUNTIME_DEQUE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct loom__deque loom__deque;

typedef enum loom__steal_result {
    LOOM__STEAL_OK = 0, /* *out holds the stolen item */
    LOOM__STEAL_EMPTY,  /* the deque looked empty */
    LOOM__STEAL_ABORT,  /* lost a race with the owner or another thief: retry */
    LOOM__STEAL_COUNT
} loom__steal_result;

/* Creates an empty deque holding at most `capacity` items, which must be a
 * power of two >= 2 and <= 2^30.  Returns NULL with the thread's last error
 * set (LOOM_ERR_INVALID_ARG or LOOM_ERR_NOMEM).  Free with loom__deque_free. */
loom__deque *loom__deque_create(int64_t capacity);

/* Frees d (NULL is fine).  No thread may be using it. */
void loom__deque_free(loom__deque *d);

/* The capacity given at creation. */
int64_t loom__deque_capacity(const loom__deque *d);

/* Owner only.  Pushes `item` at the bottom; returns false, and leaves the
 * deque unchanged, when it already holds `capacity` items. */
bool loom__deque_push(loom__deque *d, void *item);

/* Owner only.  Takes the newest item (LIFO) into *out and returns true, or
 * returns false when the deque is empty. */
bool loom__deque_take(loom__deque *d, void **out);

/* Any thread but the owner.  Steals the oldest item (FIFO) into *out.
 * LOOM__STEAL_ABORT means another thread won the race for that item; the
 * deque may still hold others, so the caller should try again (or try
 * another victim and come back). */
loom__steal_result loom__deque_steal(loom__deque *d, void **out);

/* A snapshot of the number of items, for heuristics and statistics only:
 * it may be stale by the time it is returned.  Any thread. */
int64_t loom__deque_size(const loom__deque *d);

#endif /* LOOM_RUNTIME_DEQUE_H */
