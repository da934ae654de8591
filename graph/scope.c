/*
 * graph/scope.c - scopes: every tensor handle belongs to the innermost scope
 * open when it was created, and dies with it unless kept or detached.
 *
 * A scope is an intrusive doubly linked list of its tensors, so that
 * creating, freeing and keeping a tensor are O(1).
 */
#include "graph/tensor_impl.h"
#include "loom/context.h"
#include "runtime/error.h"

void loom__scope_add(loom__scope *s, loom_tensor *t)
{
    t->scope = s;
    t->sprev = NULL;
    t->snext = s->head;
    if (s->head) s->head->sprev = t;
    s->head = t;
}

void loom__scope_remove(loom_tensor *t)
{
    loom__scope *s = t->scope;
    if (!s) return;
    if (t->sprev) t->sprev->snext = t->snext;
    else s->head = t->snext;
    if (t->snext) t->snext->sprev = t->sprev;
    t->scope = NULL;
    t->sprev = t->snext = NULL;
}

loom_status loom_scope_begin(loom_ctx *ctx)
{
    if (!ctx) return loom__set_error(LOOM_ERR_INVALID_ARG, "scope_begin: context is NULL");
    loom__scope *s = loom__mem_alloc(&ctx->mem, sizeof *s);
    if (!s) return loom__set_error(LOOM_ERR_NOMEM, "scope_begin: out of memory");
    s->parent = ctx->scope;
    s->head = NULL;
    ctx->scope = s;
    ctx->scope_depth++;
    return LOOM_OK;
}


void loom__scope_clear(loom__scope *s)
{
    while (s->head) {
        loom_tensor *t = s->head;
        loom__scope_remove(t);
        loom__tensor_decref(t);
    }
}

loom_status loom_scope_end(loom_ctx *ctx)
{
    if (!ctx) return loom__set_error(LOOM_ERR_INVALID_ARG, "scope_end: context is NULL");
    if (ctx->scope_depth == 0)
        return loom__set_error(LOOM_ERR_STATE, "scope_end: no scope is open (unbalanced scope_begin/scope_end)");
    loom__scope *s = ctx->scope;
    loom__scope_clear(s);
    ctx->scope = s->parent;
    ctx->scope_depth--;
    loom__mem_free(&ctx->mem, s);
    return LOOM_OK;
}

int loom_scope_depth(const loom_ctx *ctx) { return ctx ? ctx->scope_depth : 0; }

loom_tensor *loom_scope_keep(loom_tensor *t)
{
    if (!t || !t->scope) return t;
    loom__scope *dest = t->scope->parent ? t->scope->parent : t->scope;
    loom__scope_remove(t);
    loom__scope_add(dest, t);
    return t;
}

loom_tensor *loom_scope_detach(loom_tensor *t)
{
    if (t) loom__scope_remove(t);
    return t;
}
