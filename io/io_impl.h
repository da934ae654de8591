/*
 * io/io_impl.h - what the io/ sources share: a JSON reader (jansson, into a
 * small tree) and writer for file headers (safetensors), loading named
 * tensors into modules, atomic writes.
 *
 * io/ is written against the public API (include/loom/) plus
 * runtime/error.h, as nn/ and data/ are; it never touches graph/ internals
 * or a backend (shared/notes/architecture.md).
 *
 * The reader parses untrusted bytes with jansson (never reading outside
 * [text, text + len); duplicate keys refused) and builds a tree of
 * loom__json values, bounding its nesting depth, and reports the first
 * syntax error with jansson's message and byte offset. Strings are
 * NUL-terminated malloc'd buffers that may also hold NUL bytes (from
 * \u0000), hence their explicit lengths.
 */
#ifndef LOOM_IO_IMPL_H
#define LOOM_IO_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loom/status.h"
#include "loom/nn.h"
#include "loom/tensor.h"

typedef enum loom__json_kind {
    LOOM__JSON_NULL = 0,
    LOOM__JSON_BOOL,
    LOOM__JSON_NUMBER,
    LOOM__JSON_STRING,
    LOOM__JSON_ARRAY,
    LOOM__JSON_OBJECT,
    LOOM__JSON_KIND_COUNT
} loom__json_kind;

typedef struct loom__json loom__json;
typedef struct loom__json_member loom__json_member;

struct loom__json {
    loom__json_kind kind;
    bool boolean; /* BOOL */
    /* NUMBER: is_uint when the literal is a non-negative integer without
     * fraction or exponent that fits in uint64_t; its value is then uint. */
    bool is_uint;
    uint64_t uint;
    /* STRING: str[0..len-1], NUL-terminated; may contain NULs. */
    char *str;
    size_t len;
    /* ARRAY: items[0..n-1]; OBJECT: members[0..n-1] in document order
     * (duplicate keys are a syntax error). */
    size_t n;
    loom__json *items;
    loom__json_member *members;
};

struct loom__json_member {
    char *key; /* NUL-terminated, key_len bytes, may contain NULs */
    size_t key_len;
    loom__json value;
};

/* Nesting deeper than this is a syntax error. */
#define LOOM__JSON_MAX_DEPTH 64

/* Parses text[0..len-1] (one value, surrounded by optional whitespace) into
 * *out. On failure returns LOOM_ERR_FORMAT (or LOOM_ERR_NOMEM) with the
 * message "<what>: <problem> at byte <offset>", where `what` names the text
 * ("header"), and leaves *out empty (nothing to free). On success the caller
 * frees the tree with loom__json_free(out). */
loom_status loom__json_parse(const char *text, size_t len, const char *what, loom__json *out);

/* Frees what loom__json_parse allocated inside v (not v itself); v becomes
 * a JSON null. */
void loom__json_free(loom__json *v);

/* A growable byte buffer for writing JSON. */
typedef struct loom__buf {
    char *data;
    size_t len, cap;
    bool failed; /* an allocation failed; data holds what fitted before */
} loom__buf;

/* Appends bytes; on allocation failure sets b->failed and ignores the rest. */
void loom__buf_put(loom__buf *b, const void *bytes, size_t n);
void loom__buf_puts(loom__buf *b, const char *s);
/* Appends s[0..n-1] as a JSON string literal: quotes; \" \\ \b \f \n \r
 * \t; other bytes below 0x20 as \u00xx; everything else (UTF-8 included)
 * as is. This is serde_json's escaping, which the safetensors library uses. */
void loom__buf_put_json_string(loom__buf *b, const char *s, size_t n);
/* Appends the decimal digits of v. */
void loom__buf_put_uint(loom__buf *b, uint64_t v);
void loom__buf_free(loom__buf *b);

/* ---- loading state into modules (io/state.c) ---------------------------- */

/* A list of names for an error message: "a, b, c and 4 more". */
typedef struct loom__name_list {
    char buf[200];
    size_t len;
    int listed, more;
} loom__name_list;
/* Appends name while it fits (counts what does not). */
void loom__name_list_add(loom__name_list *l, const char *name);
/* Appends " and N more" if names did not fit. */
void loom__name_list_end(loom__name_list *l);

/* True if the file at path starts as a zip archive does (PyTorch's
 * torch.save format); false if not, or if it cannot be read. */
bool loom__is_zip(const char *path);

/* Writes bytes to path atomically: a temporary file beside it, flushed to
 * disk, renamed over path; on failure the temporary is removed and path is
 * untouched. what prefixes the messages ("npy"). */
loom_status loom__write_file_atomic(const char *path, const void *bytes, size_t len, const char *what);

/* Loads tensors read into memory (fts/fnames[0..nf-1]) into m's state by
 * name, as loom_module_load does: names (strict), dtypes and shapes are
 * checked before anything is written. Messages name path. */
loom_status loom__module_load_tensors(loom_module *m, const char *path, int nf, loom_tensor **fts,
                                      char **fnames, bool strict);

/* loom_module_load for a torch.save file (io/pth.c). */
loom_status loom__module_load_pth(loom_module *m, const char *path, bool strict);

#endif /* LOOM_IO_IMPL_H */
