/*
 * tests/check_io.c - loom/io.h: safetensors checkpoints.
 *
 * Byte-exact output (Loom's own golden string, and the vectors of the
 * safetensors library's own serialization tests: "attn.0", the empty file,
 * metadata, forced alignment padding), hand-written files read back,
 * round trips of every dtype and of modules (Conv2d, BatchNorm2d buffers,
 * Linear), strict and non-strict loading, loads that fail leaving the module
 * unchanged, atomic saving (missing and read-only directories, a rename that
 * fails, a write that fails halfway: no temporary file is left and an
 * existing file survives), a table of corrupt headers, and a light fuzz:
 * every truncation of a valid file and a few hundred random header
 * corruptions must each give an error or a success, never a crash (the
 * suite runs under ASan in CI and under valgrind).
 *
 * The safetensors Python package is not installed on Debian 12 (it is not
 * packaged), so there is no cross-check with files written by
 * safetensors.torch; the reference library's own test vectors stand in.
 *
 * Every test works in a fresh mkdtemp directory under $TMPDIR (or /tmp).
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/check_suites.h"

/* ---- helpers ---------------------------------------------------------- */

/* The number of entries of dir whose name contains `part` (NULL: all). */
static int count_entries(const char *dir, const char *part)
{
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "opendir(%s): %s", dir, strerror(errno));
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && (!part || strstr(e->d_name, part))) n++;
    closedir(d);
    return n;
}

/* dir/name in a static buffer (one at a time per slot). */
static char *path_in(const char *dir, const char *name, int slot)
{
    static char bufs[4][1024];
    int n = snprintf(bufs[slot], sizeof bufs[slot], "%s/%s", dir, name);
    ck_assert(n > 0 && (size_t)n < sizeof bufs[slot]);
    return bufs[slot];
}

static void write_bytes(const char *path, const void *bytes, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "fopen(%s): %s", path, strerror(errno));
    ck_assert(len == 0 || fwrite(bytes, 1, len, f) == len);
    ck_assert_int_eq(fclose(f), 0);
}

/* The file's bytes (malloc'd) and length. */
static unsigned char *read_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "fopen(%s): %s", path, strerror(errno));
    size_t cap = 1024, n = 0;
    unsigned char *b = malloc(cap);
    ck_assert(b);
    size_t r;
    while ((r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            b = realloc(b, cap);
            ck_assert(b);
        }
    }
    fclose(f);
    *len = n;
    return b;
}

/* A growable byte string for building files. */
typedef struct bytes {
    unsigned char *p;
    size_t len, cap;
} bytes;

static void put(bytes *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert(b->p);
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_le(bytes *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(v >> (8 * i));
        put(b, &c, 1);
    }
}

static void put_f32(bytes *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put_le(b, u, 4);
}

/* A file: the header length, `header` padded with `pad` spaces, then data. */
static bytes st_file_bytes(const char *header, int pad, const void *data, size_t dlen)
{
    bytes b = {NULL, 0, 0};
    put_le(&b, strlen(header) + (size_t)pad, 8);
    put(&b, header, strlen(header));
    for (int i = 0; i < pad; i++) put(&b, " ", 1);
    put(&b, data, dlen);
    return b;
}

#define EXPECT_OK(expr)                                                                               \
    do {                                                                                              \
        loom_status st_ = (expr);                                                                     \
        ck_assert_msg(st_ == LOOM_OK, "%s: %s (%s)", #expr, loom_status_str(st_), loom_last_error()); \
    } while (0)

#define EXPECT_ERR(expr, status, substr)                                                               \
    do {                                                                                               \
        loom_status st_ = (expr);                                                                      \
        ck_assert_msg(st_ == (status), "%s: status %s, expected %s (message: %s)", #expr,               \
                      loom_status_str(st_), loom_status_str(status), loom_last_error());               \
        ck_assert_msg(strstr(loom_last_error(), (substr)) != NULL, "message \"%s\" lacks \"%s\"",       \
                      loom_last_error(), (substr));                                                    \
        ck_assert_msg(strstr(loom_last_error(), "safetensors") != NULL, "message \"%s\" lacks the prefix", \
                      loom_last_error());                                                              \
    } while (0)

/* Saves tensors ts[0..n-1] named names[0..n-1]. */
#define SAVE(path, meta, ts, ...)                                                                     \
    loom_save_safetensors((path), (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *)), (ts), \
                          (const char *const[]){__VA_ARGS__}, (meta))

/* Asserts that the file at path is exactly want[0..n-1]. */
static void expect_file(const char *path, const void *want, size_t n)
{
    size_t len;
    unsigned char *got = read_bytes(path, &len);
    ck_assert_msg(len == n, "file has %zu bytes, expected %zu", len, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == ((const unsigned char *)want)[i], "byte %zu is 0x%02x, expected 0x%02x", i, got[i],
                      ((const unsigned char *)want)[i]);
    free(got);
}

/* Asserts that a and b hold the same dtype, shape and bytes. */
static void expect_same_tensor(loom_tensor *a, loom_tensor *b)
{
    ck_assert_int_eq(loom_tensor_dtype(a), loom_tensor_dtype(b));
    ck_assert_int_eq(loom_tensor_ndim(a), loom_tensor_ndim(b));
    for (int d = 0; d < loom_tensor_ndim(a); d++) ck_assert_int_eq(loom_tensor_size(a, d), loom_tensor_size(b, d));
    size_t n = (size_t)loom_tensor_numel(a) * (size_t)loom_dtype_size(loom_tensor_dtype(a));
    void *x = copy_out(a), *y = copy_out(b);
    ck_assert(memcmp(x, y, n) == 0);
    free(x);
    free(y);
}

/* A module's state values, for "unchanged" checks. */
typedef struct snapshot {
    int n;
    void *vals[32];
    size_t bytes[32];
} snapshot;

static snapshot snap(loom_module *m)
{
    snapshot s = {0};
    loom_tensor *ts[32];
    s.n = loom_module_state(m, ts, NULL, 32);
    ck_assert(s.n >= 0 && s.n <= 32);
    for (int i = 0; i < s.n; i++) {
        s.vals[i] = copy_out(ts[i]);
        s.bytes[i] = (size_t)loom_tensor_numel(ts[i]) * (size_t)loom_dtype_size(loom_tensor_dtype(ts[i]));
    }
    return s;
}

/* Asserts that m's state still equals s (and frees s). */
static void expect_unchanged(loom_module *m, snapshot *s)
{
    loom_tensor *ts[32];
    const char *names[32];
    ck_assert_int_eq(loom_module_state(m, ts, names, 32), s->n);
    for (int i = 0; i < s->n; i++) {
        void *v = copy_out(ts[i]);
        ck_assert_msg(memcmp(v, s->vals[i], s->bytes[i]) == 0, "%s changed", names[i]);
        free(v);
        free(s->vals[i]);
    }
    s->n = 0;
}

static void free_snapshot(snapshot *s)
{
    for (int i = 0; i < s->n; i++) free(s->vals[i]);
    s->n = 0;
}

/* Asserts that the state tensor `name` of a and of b hold the same bytes. */
static void expect_same_state(loom_module *a, loom_module *b, const char *name)
{
    loom_tensor *x = loom_module_get(a, name), *y = loom_module_get(b, name);
    ck_assert_msg(x && y, "%s: %s", name, loom_last_error());
    expect_same_tensor(x, y);
}

static bool same_values(loom_tensor *a, loom_tensor *b)
{
    size_t n = (size_t)loom_tensor_numel(a) * (size_t)loom_dtype_size(loom_tensor_dtype(a));
    void *x = copy_out(a), *y = copy_out(b);
    bool same = memcmp(x, y, n) == 0;
    free(x);
    free(y);
    return same;
}

/* A container module "Net" of the given children (name, module) pairs. */
static loom_module *net_of(loom_ctx *ctx, int n, const char *const *names, loom_module *const *children)
{
    loom_module *m = loom_module_create(ctx, "Net", NULL, NULL, NULL);
    ck_assert_msg(m != NULL, "%s", loom_last_error());
    for (int i = 0; i < n; i++)
        ck_assert_msg(loom_module_add_child(m, names[i], children[i]) == LOOM_OK, "%s", loom_last_error());
    return m;
}

/* conv1 (Conv2d 1 -> 4, 3x3), bn (BatchNorm2d 4), fc (Linear 16 -> fc_out),
 * with bn's buffers and affine parameters set to values of their own (not
 * their ones/zeros init), drawn from the ctx's generator. */
static loom_module *cnn_net(loom_ctx *ctx, int conv_k, int64_t fc_out)
{
    loom_module *m = net_of(ctx, 3, (const char *const[]){"conv1", "bn", "fc"},
                            (loom_module *const[]){loom_conv2d_module(ctx, 1, 4, conv_k, conv_k, NULL, true),
                                                   loom_batch_norm2d_module(ctx, 4, 1e-5, 0.1, true),
                                                   loom_linear(ctx, 16, fc_out, true)});
    const char *bn[] = {"bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"};
    for (int i = 0; i < 4; i++) {
        loom_tensor *r = loom_rand(ctx, LOOM_SHAPE(4));
        ck_assert_int_eq(loom_tensor_assign(loom_module_get(m, bn[i]), r), LOOM_OK);
        loom_tensor_free(r);
    }
    return m;
}

/* ---- golden bytes -------------------------------------------------------- */

/* Loom's output for one small tensor, byte for byte: compact JSON, padded
 * with spaces to a multiple of 8, little-endian data. */
START_TEST(test_golden_write)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "io");
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *w = F32(ctx, LOOM_SHAPE(2), 1, 2);
    EXPECT_OK(SAVE(path_in(dir, "w.safetensors", 0), NULL, &w, "w"));
    static const char header[] = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}  ";
    ck_assert_int_eq(strlen(header), 56);
    bytes want = st_file_bytes(header, 0, "\x00\x00\x80\x3f\x00\x00\x00\x40", 8);
    expect_file(path_in(dir, "w.safetensors", 0), want.p, want.len);
    free(want.p);
    ck_assert_int_eq(count_entries(dir, NULL), 1); /* no temporary left */

    /* Names are escaped as serde_json escapes them; UTF-8 passes as is. */
    loom_tensor *s = F32(ctx, LOOM_SHAPE(1), 3);
    EXPECT_OK(SAVE(path_in(dir, "esc.safetensors", 0), NULL, &s, "q\"\\\n\t\x01/\xc3\xa9"));
    static const char h2[] = "{\"q\\\"\\\\\\n\\t\\u0001/\xc3\xa9\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    bytes w2 = st_file_bytes(h2, (int)((8 - strlen(h2) % 8) % 8), "\x00\x00\x40\x40", 4);
    expect_file(path_in(dir, "esc.safetensors", 0), w2.p, w2.len);
    free(w2.p);
    int n;
    loom_tensor **ts;
    char **names;
    EXPECT_OK(loom_load_safetensors(ctx, path_in(dir, "esc.safetensors", 0), &n, &ts, &names));
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(names[0], "q\"\\\n\t\x01/\xc3\xa9");
    EXPECT_F32(ts[0], 0, 3);
    free(ts);
    loom_safetensors_free_names(names, n);
    loom_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* The byte strings the safetensors library's own serialization tests expect
 * (safetensors/src/tensor.rs: test_serialization, test_empty,
 * test_serialization_forced_alignement), and its order for mixed dtypes:
 * I64, then F32, then BOOL, each by name; "__metadata__" first. */
START_TEST(test_golden_reference_vectors)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "io");
    char *p = path_in(dir, "t.safetensors", 0);
    loom_ctx *ctx = test_ctx(1, NULL);
    static const char six[] = "\x00\x00\x00\x00\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x00\x40\x40"
                              "\x00\x00\x80\x40\x00\x00\xa0\x40"; /* 0..5 as float32 */

    loom_tensor *a = F32(ctx, LOOM_SHAPE(1, 2, 3), 0, 1, 2, 3, 4, 5);
    EXPECT_OK(SAVE(p, NULL, &a, "attn.0"));
    bytes w = st_file_bytes("{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}", 0, six, 24);
    ck_assert_int_eq(w.p[0], 64);
    expect_file(p, w.p, w.len);
    free(w.p);

    loom_tensor *a4 = F32(ctx, LOOM_SHAPE(1, 1, 2, 3), 0, 1, 2, 3, 4, 5);
    EXPECT_OK(SAVE(p, NULL, &a4, "attn0"));
    w = st_file_bytes("{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}", 7, six, 24);
    ck_assert_int_eq(w.p[0], 72);
    expect_file(p, w.p, w.len);
    free(w.p);

    EXPECT_OK(loom_save_safetensors(p, 0, NULL, NULL, NULL));
    expect_file(p, "\x08\x00\x00\x00\x00\x00\x00\x00{}      ", 16);
    EXPECT_OK(loom_save_safetensors(p, 0, NULL, NULL, "{ \"framework\" : \"pt\" }"));
    w = st_file_bytes("{\"__metadata__\":{\"framework\":\"pt\"}}", 5, NULL, 0);
    ck_assert_int_eq(w.p[0], 40);
    expect_file(p, w.p, w.len);
    free(w.p);

    /* Mixed dtypes and metadata. */
    loom_tensor *ts[] = {F32(ctx, LOOM_SHAPE(1), 1), B8(ctx, LOOM_SHAPE(3), 1, 0, 1), I64(ctx, LOOM_SHAPE(1), -2),
                         F32(ctx, LOOM_SHAPE(1), 2), B8(ctx, LOOM_SHAPE(1), 1)};
    EXPECT_OK(SAVE(p, "{\"format\":\"pt\",\"b\":\"\\u00e9\\n\"}", ts, "b", "a", "c", "a2", "0"));
    bytes d = {NULL, 0, 0};
    put_le(&d, (uint64_t)-2, 8);
    put_f32(&d, 2);
    put_f32(&d, 1);
    put(&d, "\x01\x01\x00\x01", 4);
    static const char mixed[] = "{\"__metadata__\":{\"format\":\"pt\",\"b\":\"\xc3\xa9\\n\"},"
                                "\"c\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                                "\"a2\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]},"
                                "\"0\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[16,17]},"
                                "\"a\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[17,20]}}";
    w = st_file_bytes(mixed, (int)((8 - strlen(mixed) % 8) % 8), d.p, d.len);
    expect_file(p, w.p, w.len);
    free(w.p);
    free(d.p);
    loom_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* A file written by hand: unsorted keys, whitespace, escapes, metadata in
 * the middle, a 0-dim and an empty tensor, every Loom dtype. */
START_TEST(test_golden_read)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "io");
    char *p = path_in(dir, "h.safetensors", 0);
    bytes d = {NULL, 0, 0};
    put_le(&d, 1, 8);
    put_le(&d, (uint64_t)-2, 8);
    put_le(&d, 3, 8);
    put_le(&d, (uint64_t)INT64_MAX, 8); /* z: [0, 32) */
    put_f32(&d, -1.5f);                 /* s: [32, 36) */
    put_f32(&d, 0.25f);
    put_f32(&d, 1e30f); /* m: [36, 44) */
    put(&d, "\x01\x00\x01", 3); /* "a\u00e9\"": [44, 47) */
    bytes f = st_file_bytes("{\n\t\"z\" : {\"shape\": [2, 2], \"dtype\": \"I64\", \"data_offsets\": [0, 32]},\n"
                            "  \"a\\u00e9\\\"\": {\"data_offsets\":[44,47],\"dtype\":\"BOOL\",\"shape\":[3]},\r\n"
                            "  \"__metadata__\": {\"k\": \"v\", \"empty\": \"\"},\n"
                            "  \"s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [32, 36]},\n"
                            "  \"e\": {\"dtype\": \"F32\", \"shape\": [0, 4], \"data_offsets\": [36, 36]},\n"
                            "  \"m\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [36, 44]}\n}",
                            3, d.p, d.len);
    write_bytes(p, f.p, f.len);
    free(f.p);
    free(d.p);

    loom_ctx *ctx = test_ctx(1, NULL);
    int64_t before = live(ctx);
    int n = -1;
    loom_tensor **ts = NULL;
    char **names = NULL;
    EXPECT_OK(loom_load_safetensors(ctx, p, &n, &ts, &names));
    ck_assert_int_eq(n, 5);
    ck_assert_int_eq(live(ctx), before + 5);
    const char *want[] = {"z", "a\xc3\xa9\"", "s", "e", "m"};
    for (int i = 0; i < 5; i++) ck_assert_str_eq(names[i], want[i]);
    EXPECT_I64(ts[0], 1, -2, 3, INT64_MAX);
    assert_shape(ts[0], 2, 2);
    EXPECT_BOOL(ts[1], 1, 0, 1);
    EXPECT_F32(ts[2], 0, -1.5f);
    assert_shape0(ts[2]);
    assert_shape(ts[3], 0, 4);
    ck_assert_int_eq(loom_tensor_dtype(ts[3]), LOOM_FLOAT32);
    EXPECT_F32(ts[4], 0, 0.25f, 1e30f);
    free(ts);
    loom_safetensors_free_names(names, n);

    /* names_out may be NULL. */
    EXPECT_OK(loom_load_safetensors(ctx, p, &n, &ts, NULL));
    ck_assert_int_eq(n, 5);
    free(ts);

    /* A file of no tensors: n = 0 and NULL arrays. */
    bytes e = st_file_bytes("{}", 6, NULL, 0);
    write_bytes(p, e.p, e.len);
    free(e.p);
    EXPECT_OK(loom_load_safetensors(ctx, p, &n, &ts, &names));
    ck_assert_int_eq(n, 0);
    ck_assert_ptr_null(ts);
    ck_assert_ptr_null(names);
    loom_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* ---- round trips --------------------------------------------------------- */

START_TEST(test_roundtrip_tensors)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "io");
    char *p = path_in(dir, "r.safetensors", 0);
    loom_ctx *ctx = cfg_ctx(_i);
    loom_tensor *m = loom_arange(ctx, LOOM_FLOAT32, 0, 6, 1);
    loom_tensor *m23 = loom_reshape(m, LOOM_SHAPE(2, 3));
    loom_tensor *ts[] = {
        m23,
        loom_transpose(m23, 0, 1), /* non-contiguous */
        I64(ctx, LOOM_SHAPE(4), -1, 0, INT64_MAX, INT64_MIN),
        B8(ctx, LOOM_SHAPE(2, 2), 1, 0, 0, 1),
        loom_scalar(ctx, LOOM_FLOAT32, -0.0),
        loom_zeros(ctx, LOOM_FLOAT32, LOOM_SHAPE(0, 3)),
        loom_add(m23, loom_scalar(ctx, LOOM_FLOAT32, 0.5)), /* pending */
        loom_expand(F32(ctx, LOOM_SHAPE(1, 3), 7, 8, 9), LOOM_SHAPE(2, 3)), /* stride 0 */
        loom_slice(loom_arange(ctx, LOOM_INT64, 0, 10, 1), 0, 1, 9, 3),     /* offset, stride 3 */
    };
    const char *names[] = {"m", "mt", "i", "b", "s", "empty", "pending", "expanded", "sliced"};
    int n = 9;
    EXPECT_OK(loom_save_safetensors(p, n, ts, names, "{\"format\":\"pt\"}"));
    int got_n;
    loom_tensor **got;
    char **got_names;
    EXPECT_OK(loom_load_safetensors(ctx, p, &got_n, &got, &got_names));
    ck_assert_int_eq(got_n, n);
    for (int i = 0; i < n; i++) {
        int k = 0;
        while (k < n && strcmp(names[k], got_names[i])) k++;
        ck_assert_msg(k < n, "unexpected name %s", got_names[i]);
        ck_assert(loom_tensor_is_contiguous(got[i]));
        expect_same_tensor(ts[k], got[i]);
    }
    /* Written sorted: I64 first ("i", "sliced"), then F32, BOOL, by name. */
    ck_assert_str_eq(got_names[0], "i");
    ck_assert_str_eq(got_names[1], "sliced");
    EXPECT_I64(got[1], 1, 4, 7);
    free(got);
    loom_safetensors_free_names(got_names, got_n);

    /* Every tensor's data is aligned to its element size in the file. */
    size_t len;
    unsigned char *b = read_bytes(p, &len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
    ck_assert_int_eq(hl % 8, 0);
    free(b);
    loom_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

START_TEST(test_module_roundtrip)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "io");
    char *p = path_in(dir, "ckpt.safetensors", 0);
    loom_ctx *ctx = cfg_ctx(_i);
    loom_module *a = cnn_net(ctx, 3, 3); /* bn's buffers hold random values */
    EXPECT_OK(loom_module_save(a, p));
    ck_assert_int_eq(count_entries(dir, NULL), 1);
    size_t len;
    unsigned char *bytes_ = read_bytes(p, &len);
    ck_assert(len > 8 && memcmp(bytes_ + 8, "{\"__metadata__\":{\"format\":\"pt\"},", 32) == 0);
    free(bytes_);

    loom_module *b = cnn_net(ctx, 3, 3); /* drawn later: different values */
    const char *names[] = {"conv1.weight", "conv1.bias", "bn.weight", "bn.bias",
                           "bn.running_mean", "bn.running_var", "fc.weight", "fc.bias"};
    for (int i = 0; i < 8; i++)
        ck_assert_msg(!same_values(loom_module_get(a, names[i]), loom_module_get(b, names[i])), "%s", names[i]);
    EXPECT_OK(loom_module_load(b, p, true));
    for (int i = 0; i < 8; i++) expect_same_state(a, b, names[i]);
    /* Loading is in place: the same tensors, still parameters. */
    ck_assert(loom_tensor_requires_grad(loom_module_get(b, "fc.weight")));
    ck_assert(!loom_tensor_requires_grad(loom_module_get(b, "bn.running_mean")));

    /* Every state tensor is also readable as plain tensors. */
    int n;
    loom_tensor **ts;
    char **fn;
    EXPECT_OK(loom_load_safetensors(ctx, p, &n, &ts, &fn));
    ck_assert_int_eq(n, 9); /* and bn.num_batches_tracked */
    for (int i = 0; i < n; i++) expect_same_tensor(ts[i], loom_module_get(a, fn[i]));
    free(ts);
    loom_safetensors_free_names(fn, n);
    loom_module_free(a);
    loom_module_free(b);
    loom_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* ---- strict and non-strict loading; failed loads change nothing ---------- */

START_TEST(test_module_strict)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "io");
    char *p = path_in(dir, "ckpt.safetensors", 0);
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *a = cnn_net(ctx, 3, 3);
    EXPECT_OK(loom_module_save(a, p));

    /* The module has more than the file: strict fails naming what is missing. */
    loom_module *more = cnn_net(ctx, 3, 3);
    ck_assert_int_eq(loom_module_add_child(more, "fc2", loom_linear(ctx, 3, 2, true)), LOOM_OK);
    snapshot s = snap(more);
    EXPECT_ERR(loom_module_load(more, p, true), LOOM_ERR_FORMAT, "missing from the file: fc2.weight, fc2.bias");
    ck_assert_ptr_null(strstr(loom_last_error(), "not in the module"));
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "ckpt.safetensors"));
    expect_unchanged(more, &s);
    /* Non-strict loads what is there and leaves fc2 alone. */
    s = snap(more);
    EXPECT_OK(loom_module_load(more, p, false));
    expect_same_state(a, more, "conv1.weight");
    expect_same_state(a, more, "bn.running_var");
    expect_same_state(a, more, "fc.bias");
    loom_tensor *fc2w = loom_module_get(more, "fc2.weight");
    void *v = copy_out(fc2w);
    ck_assert(memcmp(v, s.vals[9], s.bytes[9]) == 0); /* after conv1 (2), bn (5), fc (2) */
    free(v);
    free_snapshot(&s);

    /* The file has more than the module. */
    loom_module *less = net_of(ctx, 2, (const char *const[]){"conv1", "fc"},
                               (loom_module *const[]){loom_conv2d_module(ctx, 1, 4, 3, 3, NULL, true),
                                                      loom_linear(ctx, 16, 3, true)});
    s = snap(less);
    EXPECT_ERR(loom_module_load(less, p, true), LOOM_ERR_FORMAT,
               "not in the module: bn.num_batches_tracked, bn.bias, bn.running_mean, bn.running_var, bn.weight "
               "(strict load)");
    expect_unchanged(less, &s);
    EXPECT_OK(loom_module_load(less, p, false));
    expect_same_state(a, less, "conv1.weight");
    expect_same_state(a, less, "fc.weight");

    /* Both at once. */
    loom_module *other = net_of(ctx, 1, (const char *const[]){"head"},
                                (loom_module *const[]){loom_linear(ctx, 2, 2, false)});
    EXPECT_ERR(loom_module_load(other, p, true), LOOM_ERR_FORMAT,
               "missing from the file: head.weight; not in the module: bn.num_batches_tracked, bn.bias, "
               "bn.running_mean, bn.running_var, bn.weight, conv1.bias, conv1.weight, fc.bias and 1 more (strict "
               "load)");
    EXPECT_OK(loom_module_load(other, p, false)); /* nothing in common: nothing loaded */

    /* A shape that differs, late in the file: the earlier tensors are not
     * written either. Not strict does not excuse it. */
    loom_module *wide = cnn_net(ctx, 3, 5);
    s = snap(wide);
    EXPECT_ERR(loom_module_load(wide, p, true), LOOM_ERR_SHAPE,
               "ckpt.safetensors: fc.weight has shape [3, 16] in the file but [5, 16] in the module");
    expect_unchanged(wide, &s);
    s = snap(wide);
    EXPECT_ERR(loom_module_load(wide, p, false), LOOM_ERR_SHAPE, "fc.weight has shape [3, 16]");
    expect_unchanged(wide, &s);

    loom_module_free(a);
    loom_module_free(more);
    loom_module_free(less);
    loom_module_free(other);
    loom_module_free(wide);
    loom_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* The brief's message, with a conv of 32 filters; dtype mismatches; a value
 * check failing while reading (after every header check passed) still
 * leaves the module unchanged. */
START_TEST(test_module_mismatch)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "io");
    char *p = path_in(dir, "ckpt.safetensors", 0);
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *c3 = net_of(ctx, 1, (const char *const[]){"conv1"},
                             (loom_module *const[]){loom_conv2d_module(ctx, 1, 32, 3, 3, NULL, true)});
    loom_module *c5 = net_of(ctx, 1, (const char *const[]){"conv1"},
                             (loom_module *const[]){loom_conv2d_module(ctx, 1, 32, 5, 5, NULL, true)});
    EXPECT_OK(loom_module_save(c3, p));
    snapshot s = snap(c5);
    EXPECT_ERR(loom_module_load(c5, p, true), LOOM_ERR_SHAPE,
               "safetensors: ");
    char want[1200];
    int wn = snprintf(want, sizeof want,
                      "safetensors: %s: conv1.weight has shape [32, 1, 3, 3] in the file but [32, 1, 5, 5] in the module",
                      p);
    ck_assert(wn > 0 && (size_t)wn < sizeof want);
    ck_assert_str_eq(loom_last_error(), want);
    expect_unchanged(c5, &s);

    /* dtype: an I64 tensor where the module has float32. */
    loom_module *lin = net_of(ctx, 1, (const char *const[]){"fc"}, (loom_module *const[]){loom_linear(ctx, 2, 1, true)});
    loom_tensor *ts[] = {F32(ctx, LOOM_SHAPE(1, 2), 1, 2), I64(ctx, LOOM_SHAPE(1), 7)};
    EXPECT_OK(SAVE(p, NULL, ts, "fc.weight", "fc.bias"));
    s = snap(lin);
    EXPECT_ERR(loom_module_load(lin, p, false), LOOM_ERR_DTYPE, "fc.bias has dtype I64 in the file but F32 in the module");
    expect_unchanged(lin, &s);

    /* A bool buffer whose byte is 2: found only when the data is read,
     * after "w" (earlier in the module) has been read too. */
    loom_module *mb = loom_module_create(ctx, "M", NULL, NULL, NULL);
    ck_assert_int_eq(loom_module_add_parameter(mb, "w", F32(ctx, LOOM_SHAPE(2), 5, 6)), LOOM_OK);
    ck_assert_int_eq(loom_module_add_buffer(mb, "mask", B8(ctx, LOOM_SHAPE(2), 0, 0)), LOOM_OK);
    bytes d = {NULL, 0, 0};
    put_f32(&d, 1);
    put_f32(&d, 2);
    put(&d, "\x01\x02", 2);
    bytes f = st_file_bytes("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                            "\"mask\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[8,10]}}",
                            0, d.p, d.len);
    write_bytes(p, f.p, f.len);
    free(f.p);
    free(d.p);
    s = snap(mb);
    EXPECT_ERR(loom_module_load(mb, p, true), LOOM_ERR_FORMAT, "mask\": BOOL element 1 is 2, not 0 or 1");
    expect_unchanged(mb, &s);
    EXPECT_F32(loom_module_get(mb, "w"), 0, 5, 6);

    /* A corrupt file, a missing one. */
    s = snap(mb);
    write_bytes(p, "\x02\x00\x00\x00\x00\x00\x00\x00{]", 10);
    EXPECT_ERR(loom_module_load(mb, p, false), LOOM_ERR_FORMAT, "header: string or '}' expected near ']' at byte 2");
    EXPECT_ERR(loom_module_load(mb, path_in(dir, "nope", 1), false), LOOM_ERR_IO, "cannot open");
    expect_unchanged(mb, &s);

    loom_module_free(c3);
    loom_module_free(c5);
    loom_module_free(lin);
    loom_module_free(mb);
    loom_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* ---- dtypes Loom lacks ---------------------------------------------------- */

START_TEST(test_unsupported_dtypes)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "io");
    char *p = path_in(dir, "u.safetensors", 0);
    loom_ctx *ctx = test_ctx(1, NULL);
    static const struct {
        const char *dtype;
        int bytes;
    } cases[] = {{"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I32", 4}, {"U8", 1}, {"I8", 1}, {"U64", 8}, {"F8_E4M3", 1}};
    static const unsigned char zeros[64] = {0};
    loom_module *mod = loom_module_create(ctx, "M", NULL, NULL, NULL);
    ck_assert_int_eq(loom_module_add_parameter(mod, "w", F32(ctx, LOOM_SHAPE(1), 5)), LOOM_OK);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char header[256];
        snprintf(header, sizeof header,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"h\":{\"dtype\":\"%s\",\"shape\":[3],\"data_offsets\":[4,%d]}}",
                 cases[i].dtype, 4 + 3 * cases[i].bytes);
        bytes f = st_file_bytes(header, 0, zeros, 4 + 3 * (size_t)cases[i].bytes);
        write_bytes(p, f.p, f.len);
        free(f.p);
        int n;
        loom_tensor **ts;
        char want[128];
        snprintf(want, sizeof want, "tensor \"h\" has dtype %s, which Loom does not support", cases[i].dtype);
        int64_t before = live(ctx);
        EXPECT_ERR(loom_load_safetensors(ctx, p, &n, &ts, NULL), LOOM_ERR_DTYPE, want);
        ck_assert_int_eq(live(ctx), before);
        /* A module without "h" loads "w" when not strict. */
        EXPECT_ERR(loom_module_load(mod, p, true), LOOM_ERR_FORMAT, "not in the module: h");
        EXPECT_OK(loom_module_load(mod, p, false));
        EXPECT_F32(loom_module_get(mod, "w"), 0, 0);
    }
    /* Sub-byte dtypes are sized in bits. */
    bytes f = st_file_bytes("{\"q\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,2]}}", 0, zeros, 2);
    write_bytes(p, f.p, f.len);
    free(f.p);
    int n;
    loom_tensor **ts;
    EXPECT_ERR(loom_load_safetensors(ctx, p, &n, &ts, NULL), LOOM_ERR_DTYPE, "dtype F4");
    /* More dims than Loom has. */
    f = st_file_bytes("{\"q\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 0, zeros, 4);
    write_bytes(p, f.p, f.len);
    free(f.p);
    EXPECT_ERR(loom_load_safetensors(ctx, p, &n, &ts, NULL), LOOM_ERR_SHAPE, "has 9 dims");
    loom_module_free(mod);
    loom_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* ---- corrupt files ---------------------------------------------------------- */

static const struct corrupt_case {
    const char *header;
    int data; /* zero bytes after the header */
    const char *want;
} corrupt_cases[] = {
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "header: '}' expected near end of file at byte 53"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}", 8, "header: string or '}' expected"},
    {"{\"a\" {}}", 0, "header: ':' expected"},
    {"{\"a\":tru}", 0, "invalid token near 'tru'"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4, "invalid token near '0'"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-],\"data_offsets\":[0,4]}}", 4, "invalid token near '-'"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.],\"data_offsets\":[0,4]}}", 4, "invalid token near '1.'"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e],\"data_offsets\":[0,4]}}", 4, "invalid token near '1e'"},
    {"{\"a\\x\":1}", 0, "invalid escape"},
    {"{\"a\\u12G4\":1}", 0, "invalid escape near"},
    {"{\"a\\u12\":1}", 0, "invalid escape near"},
    {"{\"\\ud800\":1}", 0, "invalid Unicode '\\uD800'"},
    {"{\"\\udc00\":1}", 0, "invalid Unicode '\\uDC00'"},
    {"{\"\\ud800\\u0041\":1}", 0, "invalid Unicode '\\uD800\\u0041'"},
    {"{\"a\tb\":1}", 0, "control character"},
    {"{\"abc", 0, "premature end of input"},
    {"{\"abc\\", 0, "invalid escape"},
    {"{} x", 0, "end of file expected near 'x'"},
    {"", 0, "unexpected token near end of file"},
    {"   ", 0, "unexpected token near end of file"},
    {"@", 0, "invalid token near '@'"},
    {"[1, 2]", 0, "the header is not a JSON object"},
    {"\"{}\"", 0, "the header is not a JSON object"},
    {"{\"a\":[1]}", 0, "tensor \"a\" is not a JSON object"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0, "tensor \"a\" lacks \"data_offsets\""},
    {"{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor \"a\" lacks \"dtype\""},
    {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "tensor \"a\" lacks \"shape\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"offsets\":[0,8]}}", 8,
     "tensor \"a\" has an unexpected key \"offsets\""},
    {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "duplicate object key near '\"dtype\"'"},
    {"{\"a\":{\"dtype\":\"F17\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype \"F17\""},
    {"{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype \"f32\""},
    {"{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype is not a string"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "non-negative integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "non-negative integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}", 8, "non-negative integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "non-negative integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775808],\"data_offsets\":[0,8]}}", 8, "too big integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999999],\"data_offsets\":[0,8]}}", 8,
     "too big integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, "shape is not a list"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}", 8, "not a pair of non-negative integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8, "not a pair"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-1,8]}}", 8, "not a pair"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"0\":8}}}", 8, "not a pair"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, "data_offsets [8, 0] end before they begin"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
     "data_offsets [0, 16] go past the 8 bytes of data (truncated file?)"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", 8, "too big integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
     "tensor \"a\": shape [3] of F32 takes 12 bytes but data_offsets [0, 8] hold 8"},
    {"{\"a\":{\"dtype\":\"I64\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 8, "takes 32 bytes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}", 8,
     "the size of shape [4294967296, 4294967296, 16] overflows"},
    {"{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 8, "overflows"},
    {"{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2, "not a whole number of bytes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, "tensor \"b\" (data_offsets [4, 12]) overlaps tensor \"a\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     8, "overlaps"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
     8, "overlaps"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
     20, "bytes [8, 12) of the data belong to no tensor"},
    {"{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "bytes [0, 4) of the data belong to no tensor"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12,
     "the tensors cover 8 of the 12 bytes of data; the last 4 belong to no tensor"},
    {"{}", 1, "the tensors cover 0 of the 1 bytes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "duplicate object key near '\"a\"'"},
    {"{\"\\u0000\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "NUL byte in object key not supported"},
    {"{\"__metadata__\":{\"k\":1}}", 0, "\"__metadata__\" value of \"k\" is not a string"},
    {"{\"__metadata__\":[\"k\"]}", 0, "\"__metadata__\" is not a JSON object"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate object key near '\"__metadata__\"'"},
    {"{\"__metadata__\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
     0, "expected near end of file"},
    {"{\"__metadata__\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}", 0, "nesting too deep (more than 64 levels)"},
    {"{\"a\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]}}", -1, "BOOL element 2 is 255, not 0 or 1"},
};

START_TEST(test_corrupt_headers)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "io");
    char *p = path_in(dir, "bad.safetensors", 0);
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *mod = loom_module_create(ctx, "M", NULL, NULL, NULL);
    ck_assert_int_eq(loom_module_add_parameter(mod, "a", F32(ctx, LOOM_SHAPE(2), 5, 6)), LOOM_OK);
    int64_t before = live(ctx);
    for (size_t i = 0; i < sizeof corrupt_cases / sizeof corrupt_cases[0]; i++) {
        const struct corrupt_case *c = &corrupt_cases[i];
        unsigned char data[32] = {0};
        size_t dlen = (size_t)c->data;
        if (c->data < 0) { /* the BOOL case */
            memcpy(data, "\x01\x00\xff", 3);
            dlen = 3;
        }
        bytes f = st_file_bytes(c->header, 0, data, dlen);
        write_bytes(p, f.p, f.len);
        free(f.p);
        int n = -7;
        loom_tensor **ts = NULL;
        loom_status st = loom_load_safetensors(ctx, p, &n, &ts, NULL);
        ck_assert_msg(st == LOOM_ERR_FORMAT, "case %zu: status %s (%s)", i, loom_status_str(st), loom_last_error());
        ck_assert_msg(strstr(loom_last_error(), c->want), "case %zu: message \"%s\" lacks \"%s\"", i,
                      loom_last_error(), c->want);
        ck_assert_msg(strstr(loom_last_error(), p), "case %zu: message \"%s\" lacks the path", i, loom_last_error());
        ck_assert_int_eq(n, -7); /* outputs untouched */
        ck_assert_ptr_null(ts);
        ck_assert_int_eq(live(ctx), before);
        /* (The BOOL case has a valid header: the module sees a dtype mismatch.) */
        st = loom_module_load(mod, p, false);
        ck_assert_msg(st == (c->data < 0 ? LOOM_ERR_DTYPE : LOOM_ERR_FORMAT), "case %zu (module): %s (%s)", i,
                      loom_status_str(st), loom_last_error());
        ck_assert_msg(strstr(loom_last_error(), p), "case %zu: message \"%s\" lacks the path", i, loom_last_error());
    }
    EXPECT_F32(loom_module_get(mod, "a"), 0, 5, 6);

    /* Short files, and header lengths that are too large. */
    static const unsigned char junk[8] = {0x10, 0, 0, 0, 0, 0, 0, 0};
    for (size_t len = 0; len < 8; len++) {
        write_bytes(p, junk, len);
        int n;
        loom_tensor **ts;
        char want[64];
        snprintf(want, sizeof want, "the file has %zu bytes, too few", len);
        EXPECT_ERR(loom_load_safetensors(ctx, p, &n, &ts, NULL), LOOM_ERR_FORMAT, want);
    }
    static const struct {
        uint64_t n;
        const char *want;
    } lens[] = {{200000000, "header length 200000000 is over the 100 MB limit"},
                {UINT64_MAX, "is over the 100 MB limit"},
                {100000000, "header length 100000000 exceeds the 2 bytes that follow it (truncated?)"},
                {3, "exceeds the 2 bytes"}};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        bytes f = {NULL, 0, 0};
        put_le(&f, lens[i].n, 8);
        put(&f, "{}", 2);
        write_bytes(p, f.p, f.len);
        free(f.p);
        int n;
        loom_tensor **ts;
        EXPECT_ERR(loom_load_safetensors(ctx, p, &n, &ts, NULL), LOOM_ERR_FORMAT, lens[i].want);
    }

    /* Files that cannot be read at all. */
    int n;
    loom_tensor **ts;
    EXPECT_ERR(loom_load_safetensors(ctx, path_in(dir, "missing.safetensors", 1), &n, &ts, NULL), LOOM_ERR_IO,
               "missing.safetensors: cannot open: No such file or directory");
    EXPECT_ERR(loom_load_safetensors(ctx, dir, &n, &ts, NULL), LOOM_ERR_IO, "is a directory");
    ck_assert_int_eq(loom_load_safetensors(NULL, p, &n, &ts, NULL), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_load_safetensors(ctx, NULL, &n, &ts, NULL), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_load_safetensors(ctx, p, NULL, &ts, NULL), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_module_load(NULL, p, true), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_module_save(mod, NULL), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(live(ctx), before);
    loom_module_free(mod);
    loom_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* ---- fuzz -------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Loads path into tensors (freed again) and into a module; both must give
 * LOOM_OK or an error with a message, never anything else. */
static loom_status fuzz_load(loom_ctx *ctx, loom_module *mod, const char *path)
{
    int n = 0;
    loom_tensor **ts = NULL;
    char **names = NULL;
    loom_scope_begin(ctx);
    loom_status st = loom_load_safetensors(ctx, path, &n, &ts, &names);
    if (st == LOOM_OK) {
        for (int i = 0; i < n; i++) {
            ck_assert(ts[i] != NULL && names[i] != NULL);
            ck_assert_int_eq(loom_tensor_eval(ts[i]), LOOM_OK);
        }
        free(ts);
        loom_safetensors_free_names(names, n);
    } else {
        ck_assert(st == LOOM_ERR_FORMAT || st == LOOM_ERR_DTYPE || st == LOOM_ERR_SHAPE || st == LOOM_ERR_NOMEM);
        ck_assert(strstr(loom_last_error(), "safetensors: ") != NULL);
    }
    loom_scope_end(ctx);
    loom_status sm = loom_module_load(mod, path, false);
    ck_assert(sm == LOOM_OK || strstr(loom_last_error(), "safetensors: ") != NULL);
    return st;
}

START_TEST(test_fuzz)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "io");
    char *good = path_in(dir, "good.safetensors", 0), *p = path_in(dir, "fuzz.safetensors", 1);
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *mod = loom_module_create(ctx, "M", NULL, NULL, NULL);
    ck_assert_int_eq(loom_module_add_parameter(mod, "weight", F32(ctx, LOOM_SHAPE(2, 3), 1, 2, 3, 4, 5, 6)), LOOM_OK);
    ck_assert_int_eq(loom_module_add_buffer(mod, "steps", I64(ctx, LOOM_SHAPE(1), 9)), LOOM_OK);
    ck_assert_int_eq(loom_module_add_buffer(mod, "mask", B8(ctx, LOOM_SHAPE(3), 1, 0, 1)), LOOM_OK);
    loom_tensor *extra = F32(ctx, LOOM_SHAPE(0), 0);
    ck_assert_int_eq(loom_module_add_buffer(mod, "empty", extra), LOOM_OK);
    EXPECT_OK(loom_module_save(mod, good));
    size_t len;
    unsigned char *b = read_bytes(good, &len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
    ck_assert(8 + hl <= len);
    ck_assert_int_eq(fuzz_load(ctx, mod, good), LOOM_OK);
    int64_t before = live(ctx);

    /* Every truncation fails (the data must cover the buffer exactly). */
    for (size_t cut = 0; cut < len; cut++) {
        write_bytes(p, b, cut);
        loom_status st = fuzz_load(ctx, mod, p);
        ck_assert_msg(st == LOOM_ERR_FORMAT, "cut at %zu: %s (%s)", cut, loom_status_str(st), loom_last_error());
    }
    /* Random bytes in the length and the header. */
    uint64_t seed = 0x9E3779B97F4A7C15u;
    unsigned char *m = malloc(len);
    ck_assert(m);
    static const char alphabet[] = "{}[]\",:0123456789-.eE \\u\"FIBLOT";
    int ok = 0;
    for (int c = 0; c < 400; c++) {
        memcpy(m, b, len);
        int flips = 1 + (int)(rng_next(&seed) % 3);
        for (int k = 0; k < flips; k++) {
            uint64_t r = rng_next(&seed);
            size_t at = c % 10 == 0 ? (size_t)(r % 8) : 8 + (size_t)(r % hl);
            /* Half the time a JSON-ish character, else any byte. */
            m[at] = (r >> 32) & 1 ? (unsigned char)alphabet[(r >> 40) % (sizeof alphabet - 1)]
                                  : (unsigned char)(r >> 48);
        }
        write_bytes(p, m, len);
        if (fuzz_load(ctx, mod, p) == LOOM_OK) ok++;
    }
    ck_assert_int_eq(live(ctx), before);
    ck_assert(ok < 400); /* most corruptions are caught */
    free(m);
    free(b);
    loom_module_free(mod);
    loom_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* ---- atomic saving --------------------------------------------------------- */

START_TEST(test_atomic_save)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "io");
    char *p = path_in(dir, "ckpt.safetensors", 0);
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_tensor *w = F32(ctx, LOOM_SHAPE(2), 1, 2);
    EXPECT_OK(SAVE(p, NULL, &w, "w"));
    size_t good_len;
    unsigned char *good = read_bytes(p, &good_len);

    /* A directory that does not exist. */
    char *q = path_in(dir, "nope/x.safetensors", 1);
    EXPECT_ERR(SAVE(q, NULL, &w, "w"), LOOM_ERR_IO, "cannot create a temporary file in");
    ck_assert_int_eq(count_entries(dir, NULL), 1);

    /* A read-only directory (root may write anyway: then only the mode is
     * checked). */
    char *ro = path_in(dir, "ro", 2);
    ck_assert_int_eq(mkdir(ro, 0755), 0);
    ck_assert_int_eq(chmod(ro, 0555), 0);
    char *probe = path_in(ro, "probe", 3);
    int pfd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (pfd >= 0) {
        close(pfd);
        unlink(probe);
    } else {
        EXPECT_ERR(SAVE(path_in(ro, "x.safetensors", 1), NULL, &w, "w"), LOOM_ERR_IO,
                   "cannot create a temporary file in");
        ck_assert_int_eq(count_entries(ro, NULL), 0);
    }
    chmod(ro, 0755);

    /* The rename fails (the path is a directory): the temporary goes. */
    char *target = path_in(dir, "target", 1);
    ck_assert_int_eq(mkdir(target, 0755), 0);
    EXPECT_ERR(SAVE(target, NULL, &w, "w"), LOOM_ERR_IO, "cannot rename");
    struct stat sb;
    ck_assert(stat(target, &sb) == 0 && S_ISDIR(sb.st_mode));
    ck_assert_int_eq(count_entries(dir, ".tmp."), 0);

    /* A write that fails halfway (the file size limit: EFBIG): the existing
     * file survives, no temporary is left. */
    loom_tensor *big = loom_ones(ctx, LOOM_FLOAT32, LOOM_SHAPE(4096));
    struct rlimit old;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {200, old.rlim_max};
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    loom_status st = SAVE(p, NULL, &big, "w");
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, old_handler);
    ck_assert_msg(st == LOOM_ERR_IO, "%s (%s)", loom_status_str(st), loom_last_error());
    ck_assert_ptr_nonnull(strstr(loom_last_error(), "write failed: File too large"));
    expect_file(p, good, good_len);
    ck_assert_int_eq(count_entries(dir, ".tmp."), 0);

    /* A tensor whose computation fails: nothing is created. */
    loom_tensor *bad = loom_index_select(F32(ctx, LOOM_SHAPE(2), 1, 2), 0, I64(ctx, LOOM_SHAPE(1), 5));
    ck_assert_ptr_nonnull(bad);
    st = SAVE(p, NULL, &bad, "w");
    ck_assert_int_ne(st, LOOM_OK);
    expect_file(p, good, good_len);
    ck_assert_int_eq(count_entries(dir, ".tmp."), 0);

    /* Bad arguments: nothing is written. */
    loom_tensor *two[] = {w, w};
    EXPECT_ERR(SAVE(p, NULL, two, "w", "w"), LOOM_ERR_INVALID_ARG, "the name w is given twice");
    EXPECT_ERR(SAVE(p, NULL, &w, "__metadata__"), LOOM_ERR_INVALID_ARG, "reserved");
    EXPECT_ERR(SAVE(p, "[]", &w, "w"), LOOM_ERR_INVALID_ARG, "the metadata is not a JSON object");
    EXPECT_ERR(SAVE(p, "{\"a\":1}", &w, "w"), LOOM_ERR_INVALID_ARG, "metadata value of \"a\" is not a string");
    EXPECT_ERR(SAVE(p, "{\"a\":\"x\",\"a\":\"y\"}", &w, "w"), LOOM_ERR_INVALID_ARG, "duplicate object key near '\"a\"'");
    EXPECT_ERR(SAVE(p, "{\"a\":", &w, "w"), LOOM_ERR_INVALID_ARG, "the metadata is not valid JSON");
    loom_tensor *null_t = NULL;
    loom_clear_error();
    EXPECT_ERR(SAVE(p, NULL, &null_t, "w"), LOOM_ERR_INVALID_ARG, "tensor 0 is NULL");
    ck_assert_int_eq(loom_save_safetensors(NULL, 1, &w, (const char *const[]){"w"}, NULL), LOOM_ERR_INVALID_ARG);
    ck_assert_int_eq(loom_save_safetensors(p, -1, &w, (const char *const[]){"w"}, NULL), LOOM_ERR_INVALID_ARG);
    expect_file(p, good, good_len);

    /* A successful save replaces the file and keeps its mode; a new file
     * gets 0666 & ~umask. */
    ck_assert_int_eq(chmod(p, 0640), 0);
    EXPECT_OK(SAVE(p, NULL, &big, "w"));
    ck_assert_int_eq(stat(p, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 07777, 0640);
    ck_assert_int_eq(sb.st_size, 8 + 64 + 4 * 4096); /* a 61-byte header, padded */
    mode_t mask = umask(022);
    umask(mask);
    char *fresh = path_in(dir, "fresh.safetensors", 1);
    EXPECT_OK(SAVE(fresh, NULL, &w, "w"));
    ck_assert_int_eq(stat(fresh, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 07777, 0666 & ~mask);
    ck_assert_int_eq(count_entries(dir, ".tmp."), 0);
    /* A relative path works too (the directory to sync is "."). */
    char cwd[1024];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(dir), 0);
    EXPECT_OK(SAVE("rel.safetensors", NULL, &w, "w"));
    ck_assert_int_eq(chdir(cwd), 0);
    ck_assert_int_eq(count_entries(dir, "rel.safetensors"), 1);
    free(good);
    loom_ctx_free(ctx);
    tmp_remove(dir);
}
END_TEST

/* ---- out of memory ----------------------------------------------------------- */

static const char *oom_path;

/* Builds a small module and loads a checkpoint into it, then loads the
 * same file as tensors: every allocation failure is reported cleanly. */
static loom_status io_program(failing *f, void *user)
{
    (void)user;
    loom_allocator al = {failing_alloc, failing_free, f};
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = 1, .num_workers = 1, .seed = 3, .allocator = &al});
    if (!ctx) return loom_last_status();
    loom_module *net = loom_linear(ctx, 3, 2, true);
    loom_status st = net ? LOOM_OK : loom_last_status();
    if (st == LOOM_OK) st = loom_module_load(net, oom_path, true);
    int n = 0;
    loom_tensor **ts = NULL;
    if (st == LOOM_OK) st = loom_load_safetensors(ctx, oom_path, &n, &ts, NULL);
    free(ts);
    loom_module_free(net);
    loom_ctx_free(ctx);
    return st;
}

START_TEST(test_oom_sweep)
{
    char dir[512];
    tmp_make(dir, sizeof dir, "io");
    oom_path = path_in(dir, "lin.safetensors", 0);
    loom_ctx *ctx = test_ctx(1, NULL);
    loom_module *lin = loom_linear(ctx, 3, 2, true);
    EXPECT_OK(loom_module_save(lin, oom_path));
    loom_module_free(lin);
    loom_ctx_free(ctx);
    failing f = {0, 0, 0};
    ck_assert_msg(io_program(&f, NULL) == LOOM_OK, "%s", loom_last_error());
    ck_assert_int_eq(f.outstanding, 0);
    ck_assert(f.count > 5);
    oom_sweep(io_program, NULL, f.count);
    tmp_remove(dir);
}
END_TEST

Suite *loom_suite_io(void)
{
    Suite *s = suite_create("io");
    TCase *tg = test_tcase(s, "golden", 30);
    tcase_add_test(tg, test_golden_write);
    tcase_add_test(tg, test_golden_reference_vectors);
    tcase_add_test(tg, test_golden_read);
    TCase *tr = test_tcase(s, "roundtrip", 30);
    tcase_add_loop_test(tr, test_roundtrip_tensors, 0, NCFG);
    tcase_add_loop_test(tr, test_module_roundtrip, 0, NCFG);
    tcase_add_test(tr, test_module_strict);
    tcase_add_test(tr, test_module_mismatch);
    tcase_add_test(tr, test_unsupported_dtypes);
    TCase *tb = test_tcase(s, "robustness", 60);
    tcase_add_test(tb, test_corrupt_headers);
    tcase_add_test(tb, test_fuzz);
    tcase_add_test(tb, test_atomic_save);
    tcase_add_test(tb, test_oom_sweep);
    return s;
}
