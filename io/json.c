/*
 * io/json.c - a small JSON reader and writer (RFC 8259) for file headers.
 *
 * A recursive-descent parser over a length-bounded buffer: every read goes
 * through peek()/the `pos < len` checks, so truncated or hostile input ends
 * in a syntax error, never a read past the end. Recursion is bounded by
 * LOOM__JSON_MAX_DEPTH. Numbers are only classified (non-negative integers
 * that fit in uint64_t are kept exactly, since safetensors' shapes and
 * offsets are such integers); other numbers are accepted and not converted.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_impl.h"
#include "runtime/error.h"

typedef struct parser {
    const char *s;
    size_t len, pos;
    const char *what;
    loom_status st; /* the first failure */
} parser;

static bool fail(parser *p, const char *problem)
{
    if (p->st == LOOM_OK)
        p->st = loom__set_error(LOOM_ERR_FORMAT, "%s: %s at byte %zu", p->what, problem, p->pos);
    return false;
}

static bool nomem(parser *p)
{
    if (p->st == LOOM_OK) p->st = loom__set_error(LOOM_ERR_NOMEM, "%s: out of memory parsing JSON", p->what);
    return false;
}

/* The next byte, or -1 at the end. */
static int peek(const parser *p) { return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1; }

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static bool literal(parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return fail(p, "invalid literal");
    p->pos += n;
    return true;
}

static bool is_digit(int c) { return c >= '0' && c <= '9'; }

static bool parse_number(parser *p, loom__json *v)
{
    v->kind = LOOM__JSON_NUMBER;
    bool neg = false, integral = true, overflow = false;
    uint64_t u = 0;
    if (peek(p) == '-') {
        neg = true;
        p->pos++;
    }
    if (peek(p) == '0') {
        p->pos++;
    } else if (is_digit(peek(p))) {
        while (is_digit(peek(p))) {
            unsigned d = (unsigned)(peek(p) - '0');
            if (u > (UINT64_MAX - d) / 10) overflow = true;
            else u = u * 10 + d;
            p->pos++;
        }
    } else {
        return fail(p, "invalid number");
    }
    if (peek(p) == '.') {
        integral = false;
        p->pos++;
        if (!is_digit(peek(p))) return fail(p, "invalid number (no digit after '.')");
        while (is_digit(peek(p))) p->pos++;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        integral = false;
        p->pos++;
        if (peek(p) == '+' || peek(p) == '-') p->pos++;
        if (!is_digit(peek(p))) return fail(p, "invalid number (no digit in the exponent)");
        while (is_digit(peek(p))) p->pos++;
    }
    v->is_uint = integral && !overflow && !neg;
    v->uint = v->is_uint ? u : 0;
    return true;
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits after "\u". */
static bool hex4(parser *p, unsigned *out)
{
    if (p->len - p->pos < 4) {
        p->pos = p->len;
        return fail(p, "truncated \\u escape");
    }
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value((unsigned char)p->s[p->pos]);
        if (h < 0) return fail(p, "invalid \\u escape");
        x = x * 16 + (unsigned)h;
        p->pos++;
    }
    *out = x;
    return true;
}

/* Appends code point cp as UTF-8 (cp <= 0x10FFFF) to out at *n. */
static void put_utf8(char *out, size_t *n, unsigned cp)
{
    if (cp < 0x80) {
        out[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*n)++] = (char)(0xC0 | (cp >> 6));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*n)++] = (char)(0xE0 | (cp >> 12));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*n)++] = (char)(0xF0 | (cp >> 18));
        out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

/* Parses a string literal (p at the opening quote) into a malloc'd buffer.
 * The decoded string is never longer than the literal (an escape of k bytes
 * decodes to at most k bytes: \uXXXX, 6 bytes, to at most 3; a surrogate
 * pair, 12 bytes, to 4), so the buffer is sized by a first scan for the
 * closing quote. */
static bool parse_string(parser *p, char **out, size_t *out_len)
{
    p->pos++; /* the opening quote */
    size_t start = p->pos, end = start;
    while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->len) {
        p->pos = p->len;
        return fail(p, "unterminated string");
    }
    char *buf = malloc(end - start + 1);
    if (!buf) return nomem(p);
    size_t n = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) {
            free(buf);
            return fail(p, "control character in a string");
        }
        if (c != '\\') {
            buf[n++] = (char)c;
            p->pos++;
            continue;
        }
        p->pos++;
        char e = p->s[p->pos++]; /* pos < end: the scan kept escapes whole */
        switch (e) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (!hex4(p, &cp)) break;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(p, "lone low surrogate in a \\u escape");
                break;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                    fail(p, "lone high surrogate in a \\u escape");
                    break;
                }
                p->pos += 2;
                if (!hex4(p, &lo)) break;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    fail(p, "invalid surrogate pair in a \\u escape");
                    break;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            put_utf8(buf, &n, cp);
            break;
        }
        default:
            p->pos--;
            fail(p, "invalid escape in a string");
        }
        if (p->st != LOOM_OK) {
            free(buf);
            return false;
        }
        /* A \u escape may have read past `end` only by failing above. */
    }
    if (p->pos != end) { /* a \uXXXX escape ran over the closing quote */
        free(buf);
        return fail(p, "invalid \\u escape");
    }
    p->pos = end + 1;
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return true;
}

static bool parse_value(parser *p, loom__json *v, int depth);

/* Grows *arr (of *cap elements of `size` bytes) to hold n + 1. */
static bool grow(parser *p, void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) return true;
    size_t ncap = *cap ? *cap * 2 : 4;
    void *g = realloc(*arr, ncap * size);
    if (!g) return nomem(p);
    *arr = g;
    *cap = ncap;
    return true;
}

static bool parse_array(parser *p, loom__json *v, int depth)
{
    v->kind = LOOM__JSON_ARRAY;
    size_t cap = 0;
    p->pos++;
    skip_ws(p);
    if (peek(p) == ']') {
        p->pos++;
        return true;
    }
    for (;;) {
        if (!grow(p, (void **)&v->items, &cap, v->n, sizeof *v->items)) return false;
        loom__json *item = &v->items[v->n++]; /* counted now: freed with the array */
        memset(item, 0, sizeof *item);
        if (!parse_value(p, item, depth + 1)) return false;
        skip_ws(p);
        int c = peek(p);
        p->pos++;
        if (c == ']') return true;
        if (c != ',') {
            p->pos--;
            return fail(p, c < 0 ? "unterminated array" : "expected ',' or ']'");
        }
    }
}

static bool parse_object(parser *p, loom__json *v, int depth)
{
    v->kind = LOOM__JSON_OBJECT;
    size_t cap = 0;
    p->pos++;
    skip_ws(p);
    if (peek(p) == '}') {
        p->pos++;
        return true;
    }
    for (;;) {
        skip_ws(p);
        if (peek(p) != '"') return fail(p, peek(p) < 0 ? "unterminated object" : "expected a string key");
        if (!grow(p, (void **)&v->members, &cap, v->n, sizeof *v->members)) return false;
        loom__json_member *m = &v->members[v->n];
        memset(m, 0, sizeof *m);
        if (!parse_string(p, &m->key, &m->key_len)) return false;
        v->n++; /* counted from here: the key is freed with the object */
        skip_ws(p);
        if (peek(p) != ':') return fail(p, peek(p) < 0 ? "unterminated object" : "expected ':'");
        p->pos++;
        if (!parse_value(p, &m->value, depth + 1)) return false;
        skip_ws(p);
        int c = peek(p);
        p->pos++;
        if (c == '}') return true;
        if (c != ',') {
            p->pos--;
            return fail(p, c < 0 ? "unterminated object" : "expected ',' or '}'");
        }
    }
}

static bool parse_value(parser *p, loom__json *v, int depth)
{
    if (depth > LOOM__JSON_MAX_DEPTH) return fail(p, "nesting too deep");
    skip_ws(p);
    int c = peek(p);
    switch (c) {
    case '{': return parse_object(p, v, depth);
    case '[': return parse_array(p, v, depth);
    case '"':
        v->kind = LOOM__JSON_STRING;
        return parse_string(p, &v->str, &v->len);
    case 't':
        v->kind = LOOM__JSON_BOOL;
        v->boolean = true;
        return literal(p, "true");
    case 'f':
        v->kind = LOOM__JSON_BOOL;
        return literal(p, "false");
    case 'n':
        v->kind = LOOM__JSON_NULL;
        return literal(p, "null");
    case -1: return fail(p, "unexpected end");
    default:
        if (c == '-' || is_digit(c)) return parse_number(p, v);
        return fail(p, "unexpected character");
    }
}

loom_status loom__json_parse(const char *text, size_t len, const char *what, loom__json *out)
{
    memset(out, 0, sizeof *out);
    parser p = {text, len, 0, what, LOOM_OK};
    if (parse_value(&p, out, 0)) {
        skip_ws(&p);
        if (p.pos != p.len) fail(&p, "unexpected data after the JSON value");
    }
    if (p.st != LOOM_OK) loom__json_free(out);
    return p.st;
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
