/*
 * io/state.c - what the checkpoint readers share: lists of names for error
 * messages, telling a zip from a safetensors file, and loading tensors read
 * in memory into a module by name (for .pth files; safetensors checks its
 * header before it reads any data, io/safetensors.c).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "io/io_impl.h"
#include "loom/loom.h"
#include "runtime/error.h"

void loom__name_list_add(loom__name_list *l, const char *name)
{
    /* Room is kept for " and 99999 more" after the last name. */
    size_t need = strlen(name) + (l->listed ? 2 : 0);
    if (l->listed < 8 && l->more == 0 && l->len + need + 1 + 16 <= sizeof l->buf) {
        l->len += (size_t)snprintf(l->buf + l->len, sizeof l->buf - l->len, "%s%s", l->listed ? ", " : "", name);
        l->listed++;
    } else {
        l->more++;
    }
}

void loom__name_list_end(loom__name_list *l)
{
    if (l->more) snprintf(l->buf + l->len, sizeof l->buf - l->len, " and %d more", l->more);
}

bool loom__is_zip(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    unsigned char m[4] = {0};
    size_t got = fread(m, 1, 4, fp);
    fclose(fp);
    return got == 4 && m[0] == 'P' && m[1] == 'K' && m[2] == 3 && m[3] == 4;
}

/* Matches the module's state (mts/mnames[0..n-1]) with the file's tensors
 * (fts/fnames[0..nf-1]): src[i] = the file's tensor for mts[i], or NULL.
 * Checks names (strict), dtypes and shapes. */
static loom_status match(const char *path, int n, loom_tensor **mts, const char **mnames, int nf, loom_tensor **fts,
                         char **fnames, bool strict, loom_tensor **src)
{
    loom__name_list missing = {.len = 0}, unexpected = {.len = 0};
    int found = 0;
    for (int i = 0; i < n; i++) {
        src[i] = NULL;
        for (int k = 0; k < nf && !src[i]; k++)
            if (!strcmp(mnames[i], fnames[k])) src[i] = fts[k];
        if (src[i]) found++;
        else loom__name_list_add(&missing, mnames[i]);
    }
    if (strict && (missing.listed || missing.more || found < nf)) {
        for (int k = 0; k < nf; k++) {
            bool used = false;
            for (int i = 0; i < n && !used; i++) used = src[i] == fts[k];
            if (!used) loom__name_list_add(&unexpected, fnames[k]);
        }
        loom__name_list_end(&missing);
        loom__name_list_end(&unexpected);
        bool mi = missing.listed > 0, un = unexpected.listed > 0;
        return loom__set_error(LOOM_ERR_FORMAT, "load: %s: %s%s%s%s%s (strict load)", path,
                               mi ? "missing from the file: " : "", mi ? missing.buf : "", mi && un ? "; " : "",
                               un ? "not in the module: " : "", un ? unexpected.buf : "");
    }
    for (int i = 0; i < n; i++) {
        if (!src[i]) continue;
        if (loom_tensor_dtype(src[i]) != loom_tensor_dtype(mts[i]))
            return loom__set_error(LOOM_ERR_DTYPE, "load: %s: %s has dtype %s in the file but %s in the module", path,
                                   mnames[i], loom_dtype_name(loom_tensor_dtype(src[i])),
                                   loom_dtype_name(loom_tensor_dtype(mts[i])));
        int64_t a[LOOM_MAX_DIMS], b[LOOM_MAX_DIMS];
        int na = loom_tensor_ndim(src[i]), nb = loom_tensor_ndim(mts[i]);
        loom_tensor_shape(src[i], a);
        loom_tensor_shape(mts[i], b);
        bool same = na == nb;
        for (int d = 0; same && d < na; d++) same = a[d] == b[d];
        if (!same) {
            char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
            return loom__set_error(LOOM_ERR_SHAPE, "load: %s: %s has shape %s in the file but %s in the module", path,
                                   mnames[i], loom__fmt_shape(s1, sizeof s1, na, a),
                                   loom__fmt_shape(s2, sizeof s2, nb, b));
        }
        if (!loom_tensor_is_leaf(mts[i]))
            return loom__set_error(LOOM_ERR_STATE, "load: %s: %s of the module is not a leaf tensor; cannot load into it",
                                   path, mnames[i]);
    }
    return LOOM_OK;
}

loom_status loom__module_load_tensors(loom_module *m, const char *path, int nf, loom_tensor **fts, char **fnames,
                                      bool strict)
{
    int n = loom_module_state(m, NULL, NULL, 0);
    if (n < 0) return loom_last_status();
    loom_tensor **mts = malloc(sizeof *mts * (size_t)(n ? n : 1));
    const char **mnames = malloc(sizeof *mnames * (size_t)(n ? n : 1));
    loom_tensor **src = calloc((size_t)(n ? n : 1), sizeof *src);
    loom_status st = mts && mnames && src ? LOOM_OK : loom__set_error(LOOM_ERR_NOMEM, "load: %s: out of memory", path);
    if (st == LOOM_OK && loom_module_state(m, mts, mnames, n) != n) st = loom_last_status();
    if (st == LOOM_OK) st = match(path, n, mts, mnames, nf, fts, fnames, strict, src);
    for (int i = 0; i < n && st == LOOM_OK; i++)
        if (src[i] && loom_tensor_eval(mts[i]) != LOOM_OK) st = loom_last_status();
    for (int i = 0; i < n && st == LOOM_OK; i++) {
        if (src[i] && loom_tensor_assign(mts[i], src[i]) != LOOM_OK)
            st = loom__set_error(loom_last_status(), "load: %s: writing %s failed (%s); the tensors before it were loaded",
                                 path, mnames[i], loom_last_error());
    }
    free(mts);
    free(mnames);
    free(src);
    return st;
}

loom_status loom__module_load_pth(loom_module *m, const char *path, bool strict)
{
    loom_ctx *ctx = loom_module_ctx(m);
    loom_status st = loom_scope_begin(ctx);
    if (st != LOOM_OK) return st;
    int nf = 0;
    loom_tensor **fts = NULL;
    char **fnames = NULL;
    /* Everything is read and checked before anything is written. */
    st = loom_load_pth(ctx, path, &nf, &fts, &fnames);
    if (st == LOOM_OK) st = loom__module_load_tensors(m, path, nf, fts, fnames, strict);
    free(fts); /* the tensors belong to the scope */
    loom_pth_free_names(fnames, nf);
    loom_scope_end(ctx);
    return st;
}

loom_status loom__write_file_atomic(const char *path, const void *bytes, size_t len, const char *what)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) return loom__set_error(LOOM_ERR_NOMEM, "%s: %s: out of memory", what, path);
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        loom_status st = loom__set_error(LOOM_ERR_IO, "%s: %s: cannot create a temporary file beside it: %s", what,
                                         path, strerror(errno));
        free(tmp);
        return st;
    }
    const char *p = bytes;
    size_t left = len;
    int err = 0;
    while (left && !err) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) err = w < 0 ? errno : EIO;
        else p += w, left -= (size_t)w;
    }
    if (!err && fsync(fd) != 0) err = errno;
    if (close(fd) != 0 && !err) err = errno;
    if (!err && rename(tmp, path) != 0) err = errno;
    if (err) unlink(tmp);
    free(tmp);
    if (err) return loom__set_error(LOOM_ERR_IO, "%s: %s: writing failed: %s (nothing was replaced)", what, path,
                                    strerror(err));
    return LOOM_OK;
}
