/*
 * io/json.c - reading JSON file headers with jansson (Debian's
 * libjansson-dev, a maintained parser, rather than one of our own), into
 * Loom's small tree (io_impl.h); and a small JSON writer.
 *
 * jansson reads a length-bounded buffer, so truncated or hostile input ends
 * in a syntax error naming the byte, never a read past the end. Integers
 * are kept exactly (safetensors' shapes and offsets are non-negative
 * integers below 2^63); other numbers are only classified.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "io/io_impl.h"
#include "runtime/error.h"

/* Converts jansson's tree into Loom's (document order kept: jansson keeps
 * an object's keys in insertion order). */
static loom_status convert(const json_t *j, loom__json *v, int depth, const char *what)
{
    memset(v, 0, sizeof *v);
    if (depth > LOOM__JSON_MAX_DEPTH)
        return loom__set_error(LOOM_ERR_FORMAT, "%s: nesting too deep (more than %d levels)", what,
                               LOOM__JSON_MAX_DEPTH);
    switch (json_typeof(j)) {
    case JSON_NULL: v->kind = LOOM__JSON_NULL; return LOOM_OK;
    case JSON_TRUE:
    case JSON_FALSE:
        v->kind = LOOM__JSON_BOOL;
        v->boolean = json_is_true(j);
        return LOOM_OK;
    case JSON_INTEGER:
        v->kind = LOOM__JSON_NUMBER;
        v->is_uint = json_integer_value(j) >= 0;
        v->uint = v->is_uint ? (uint64_t)json_integer_value(j) : 0;
        return LOOM_OK;
    case JSON_REAL: v->kind = LOOM__JSON_NUMBER; return LOOM_OK;
    case JSON_STRING: {
        size_t n = json_string_length(j);
        v->kind = LOOM__JSON_STRING;
        v->str = malloc(n + 1);
        if (!v->str) return loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory parsing JSON", what);
        memcpy(v->str, json_string_value(j), n);
        v->str[n] = '\0';
        v->len = n;
        return LOOM_OK;
    }
    case JSON_ARRAY: {
        v->kind = LOOM__JSON_ARRAY;
        size_t n = json_array_size(j);
        v->items = calloc(n ? n : 1, sizeof *v->items);
        if (!v->items) return loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory parsing JSON", what);
        for (size_t i = 0; i < n; i++) {
            loom_status st = convert(json_array_get(j, i), &v->items[i], depth + 1, what);
            v->n = i + 1;
            if (st != LOOM_OK) return st;
        }
        return LOOM_OK;
    }
    case JSON_OBJECT: {
        v->kind = LOOM__JSON_OBJECT;
        size_t n = json_object_size(j);
        v->members = calloc(n ? n : 1, sizeof *v->members);
        if (!v->members) return loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory parsing JSON", what);
        const char *key;
        json_t *val;
        size_t i = 0;
        json_object_foreach((json_t *)j, key, val)
        {
            loom__json_member *m = &v->members[i];
            size_t kl = strlen(key);
            m->key = malloc(kl + 1);
            if (!m->key) return loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory parsing JSON", what);
            memcpy(m->key, key, kl + 1);
            m->key_len = kl;
            v->n = ++i;
            loom_status st = convert(val, &m->value, depth + 1, what);
            if (st != LOOM_OK) return st;
        }
        return LOOM_OK;
    }
    }
    return loom__set_error(LOOM_ERR_FORMAT, "%s: unknown JSON value", what);
}

loom_status loom__json_parse(const char *text, size_t len, const char *what, loom__json *out)
{
    memset(out, 0, sizeof *out);
    json_error_t err;
    /* Any value at the top (the caller checks for an object); duplicate
     * keys refused (a header naming a tensor twice is ambiguous); \u0000
     * allowed in strings (the caller decides). jansson limits nesting to
     * 2048 levels by itself; convert() to LOOM__JSON_MAX_DEPTH. */
    json_t *root = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!root)
        return loom__set_error(LOOM_ERR_FORMAT, "%s: %s at byte %d", what, err.text, err.position);
    loom_status st = convert(root, out, 0, what);
    json_decref(root);
    if (st != LOOM_OK) loom__json_free(out);
    return st;
}

void loom__json_free(loom__json *v)
{
    if (!v) return;
    switch (v->kind) {
    case LOOM__JSON_STRING: free(v->str); break;
    case LOOM__JSON_ARRAY:
        for (size_t i = 0; i < v->n; i++) loom__json_free(&v->items[i]);
        free(v->items);
        break;
    case LOOM__JSON_OBJECT:
        for (size_t i = 0; i < v->n; i++) {
            free(v->members[i].key);
            loom__json_free(&v->members[i].value);
        }
        free(v->members);
        break;
    default: break;
    }
    memset(v, 0, sizeof *v);
}

/* ---- writing ------------------------------------------------------------ */

void loom__buf_put(loom__buf *b, const void *bytes, size_t n)
{
    if (b->failed) return;
    if (b->cap - b->len < n + 1) { /* keep room for a terminating NUL */
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap - b->len < n + 1) {
            if (ncap > SIZE_MAX / 2) {
                b->failed = true;
                return;
            }
            ncap *= 2;
        }
        char *g = realloc(b->data, ncap);
        if (!g) {
            b->failed = true;
            return;
        }
        b->data = g;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void loom__buf_puts(loom__buf *b, const char *s) { loom__buf_put(b, s, strlen(s)); }

void loom__buf_put_json_string(loom__buf *b, const char *s, size_t n)
{
    loom__buf_put(b, "\"", 1);
    size_t run = 0; /* bytes s[i - run .. i - 1] need no escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char hex[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c < 0x20) {
                snprintf(hex, sizeof hex, "\\u%04x", c);
                esc = hex;
            }
        }
        if (!esc) {
            run++;
            continue;
        }
        loom__buf_put(b, s + i - run, run);
        run = 0;
        loom__buf_puts(b, esc);
    }
    loom__buf_put(b, s + n - run, run);
    loom__buf_put(b, "\"", 1);
}

void loom__buf_put_uint(loom__buf *b, uint64_t v)
{
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    loom__buf_put(b, digits, (size_t)n);
}

void loom__buf_free(loom__buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}
