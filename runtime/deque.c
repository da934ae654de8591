/*
 * runtime/deque.c - the bounded Chase-Lev deque (see deque.h).
 *
 * Indices are signed 64-bit and only grow: top counts the items ever
 * removed from the top, bottom the items ever pushed minus those taken back
 * by the owner.  The deque holds bottom - top items, in slots[i & mask] for
 * top <= i < bottom.  Signed indices matter in take(): on an empty deque
 * bottom - 1 may be below top, which an unsigned index would wrap (the bug
 * of the paper's size_t version).  2^63 pushes do not happen.
 *
 * The orderings, operation by operation (shared/notes/runtime.md section 1,
 * from Le et al. PPoPP'13 as corrected in the CDSChecker benchmark
 * chase-lev-deque-bugfix/deque.c, and Taskflow's BoundedWSQ):
 *
 *   push:  b = bottom (relaxed); t = top (acquire); full if b - t >= cap;
 *          slot[b] = x (relaxed); fence(release); bottom = b + 1 (release).
 *          The paper stores bottom relaxed after the fence; the release
 *          store is what makes ThreadSanitizer (which ignores fences) see
 *          the slot write happen before a thief's read.  The fence is then
 *          redundant but kept to match the published algorithm.
 *   take:  b = bottom - 1 (relaxed); bottom = b (relaxed); fence(seq_cst);
 *          t = top (relaxed).  t < b: the item is ours.  t == b: the last
 *          item, race the thieves with CAS(top, t, t + 1, seq_cst, relaxed);
 *          either way restore bottom = b + 1.  t > b: empty, restore bottom.
 *   steal: t = top (acquire); fence(seq_cst); b = bottom (acquire); if
 *          t < b, x = slot[t] (relaxed) then CAS(top, t, t + 1, seq_cst,
 *          relaxed); a failed CAS is ABORT (someone else got item t).
 *
 * The seq_cst fences in take and steal are the heart of it: they order the
 * owner's store of bottom before its load of top and the thief's load of top
 * before its load of bottom, so that an owner and a thief cannot both take
 * the last item without one of them going through the CAS on top.
 *
 * Slots are atomics (relaxed): after the deque wraps around, the owner may
 * overwrite slot[t & mask] while a thief that read an old top is reading it.
 * That thief's CAS then fails and the value is discarded, but a plain read
 * would still be a data race (undefined behaviour, and a TSan report).
 *
 * top and bottom each sit on their own cache line, and the read-mostly
 * fields (slots, mask) on a third, so that thieves hammering top do not
 * invalidate the line the owner writes bottom on.
 */
#include "runtime/deque.h"

#include <stdatomic.h>
#include <stdlib.h>

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

struct loom__deque {
    _Alignas(CACHE_LINE) _Atomic int64_t top; /* written by thieves and the owner (CAS) */
    _Alignas(CACHE_LINE) _Atomic int64_t bottom; /* written by the owner only */
    _Alignas(CACHE_LINE) _Atomic(void *) *slots; /* capacity slots; constant after create */
    int64_t mask; /* capacity - 1 */
};

loom__deque *loom__deque_create(int64_t capacity)
{
    if (capacity < 2 || capacity > ((int64_t)1 << 30) || (capacity & (capacity - 1)) != 0) {
        loom__set_error(LOOM_ERR_INVALID_ARG, "deque: capacity %lld is not a power of two in [2, 2^30]",
                        (long long)capacity);
        return NULL;
    }
    /* The struct is over-aligned, so malloc's 16-byte alignment is not
     * enough; aligned_alloc needs a size that is a multiple of the alignment
     * (sizeof of an _Alignas(64) struct is; the slots are rounded up). */
    size_t slot_bytes = ((size_t)capacity * sizeof(_Atomic(void *)) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
    loom__deque *d = aligned_alloc(CACHE_LINE, sizeof *d);
    _Atomic(void *) *slots = aligned_alloc(CACHE_LINE, slot_bytes);
    if (!d || !slots) {
        free(d);
        free(slots);
        loom__set_error(LOOM_ERR_NOMEM, "deque: cannot allocate %lld slots", (long long)capacity);
        return NULL;
    }
    atomic_init(&d->top, 0);
    atomic_init(&d->bottom, 0);
    for (int64_t i = 0; i < capacity; i++) atomic_init(&slots[i], NULL);
    d->slots = slots;
    d->mask = capacity - 1;
    return d;
}

void loom__deque_free(loom__deque *d)
{
    if (!d) return;
    free((void *)d->slots);
    free(d);
}

int64_t loom__deque_capacity(const loom__deque *d) { return d->mask + 1; }

bool loom__deque_push(loom__deque *d, void *item)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    if (b - t > d->mask) return false; /* full: b - t == capacity */
    atomic_store_explicit(&d->slots[b & d->mask], item, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&d->bottom, b + 1, memory_order_release); /* release: for TSan, see above */
    return true;
}

bool loom__deque_take(loom__deque *d, void **out)
{
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    atomic_store_explicit(&d->bottom, b, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
    if (t > b) {
        /* Empty: undo the reservation. */
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
        return false;
    }
    void *item = atomic_load_explicit(&d->slots[b & d->mask], memory_order_relaxed);
    if (t < b) {
        *out = item; /* more than one item left: no thief can reach slot b */
        return true;
    }
    /* t == b: the last item.  Whoever moves top past it owns it. */
    bool won = atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
                                                       memory_order_relaxed);
    atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
    if (!won) return false;
    *out = item;
    return true;
}

loom__steal_result loom__deque_steal(loom__deque *d, void **out)
{
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    atomic_thread_fence(memory_order_seq_cst);
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_acquire);
    if (t >= b) return LOOM__STEAL_EMPTY;
    void *item = atomic_load_explicit(&d->slots[t & d->mask], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed))
        return LOOM__STEAL_ABORT;
    *out = item;
    return LOOM__STEAL_OK;
}

int64_t loom__deque_size(const loom__deque *d)
{
    int64_t b = atomic_load_explicit(&((loom__deque *)d)->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&((loom__deque *)d)->top, memory_order_relaxed);
    return b > t ? b - t : 0;
}
