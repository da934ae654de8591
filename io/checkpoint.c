/*
 * io/checkpoint.c - full training checkpoints: the model's state, the
 * optimizer's, the epoch and the random generator's state in one
 * safetensors file, so that an interrupted run resumes exactly where it
 * stopped (tests/check_models.c checks that a resumed run gives the same
 * bits as an uninterrupted one).
 *
 * Names in the file: "model.<state name>", "optimizer.<state name>"
 * (loom_optimizer_state's), "epoch" (int64), "rng.seed" and "rng.offset"
 * (int64 holding the uint64 bits); metadata {"format": "loom-checkpoint"}.
 * Saving is atomic (loom_save_safetensors); loading checks everything
 * before it changes anything.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_impl.h"
#include "loom/loom.h"
#include "runtime/error.h"

loom_status loom_checkpoint_save(const char *path, loom_module *m, loom_optimizer *opt, int64_t epoch)
{
    if (!path || !m) return loom__set_error(LOOM_ERR_INVALID_ARG, "checkpoint: path and module must not be NULL");
    loom_ctx *ctx = loom_module_ctx(m);
    loom_status st = loom_scope_begin(ctx);
    if (st != LOOM_OK) return st;
    int nm = loom_module_state(m, NULL, NULL, 0), no = 0;
    loom_tensor **ots = NULL;
    char **onames = NULL;
    if (nm < 0) st = loom_last_status();
    if (st == LOOM_OK && opt) st = loom_optimizer_state(opt, &no, &ots, &onames);
    const int n = nm + no + 3;
    loom_tensor **ts = st == LOOM_OK ? calloc((size_t)n, sizeof *ts) : NULL;
    char **names = st == LOOM_OK ? calloc((size_t)n, sizeof *names) : NULL;
    const char **mnames = st == LOOM_OK ? calloc((size_t)(nm ? nm : 1), sizeof *mnames) : NULL;
    if (st == LOOM_OK && (!ts || !names || !mnames)) st = loom__set_error(LOOM_ERR_NOMEM, "checkpoint: out of memory");
    if (st == LOOM_OK && loom_module_state(m, ts, mnames, nm) != nm) st = loom_last_status();
    for (int i = 0; st == LOOM_OK && i < nm; i++) {
        size_t len = strlen(mnames[i]) + 7;
        if (!(names[i] = malloc(len))) st = loom__set_error(LOOM_ERR_NOMEM, "checkpoint: out of memory");
        else snprintf(names[i], len, "model.%s", mnames[i]);
    }
    for (int i = 0; st == LOOM_OK && i < no; i++) {
        size_t len = strlen(onames[i]) + 11;
        ts[nm + i] = ots[i];
        if (!(names[nm + i] = malloc(len))) st = loom__set_error(LOOM_ERR_NOMEM, "checkpoint: out of memory");
        else snprintf(names[nm + i], len, "optimizer.%s", onames[i]);
    }
    loom_rng_state rs;
    loom_rng_get_state(ctx, &rs);
    const char *tail[3] = {"epoch", "rng.seed", "rng.offset"};
    int64_t vals[3] = {epoch, (int64_t)rs.seed, (int64_t)rs.offset};
    for (int i = 0; st == LOOM_OK && i < 3; i++) {
        ts[nm + no + i] = loom_tensor_from_array(ctx, LOOM_INT64, &vals[i], 0, NULL);
        names[nm + no + i] = malloc(strlen(tail[i]) + 1);
        if (!ts[nm + no + i] || !names[nm + no + i]) st = loom__set_error(LOOM_ERR_NOMEM, "checkpoint: out of memory");
        else strcpy(names[nm + no + i], tail[i]);
    }
    if (st == LOOM_OK)
        st = loom_save_safetensors(path, n, ts, (const char *const *)names, "{\"format\": \"loom-checkpoint\"}");
    for (int i = 0; names && i < n; i++) free(names[i]);
    free(names);
    free(ts);
    free(mnames);
    free(ots);
    loom_safetensors_free_names(onames, no);
    loom_scope_end(ctx);
    return st;
}

/* Restores a checkpoint (model_only: its model part, else everything); with
 * model_only, a file that is no checkpoint is read as a plain state dict. */
static loom_status load(const char *path, loom_module *m, loom_optimizer *opt, int64_t *epoch, bool model_only)
{
    if (!path || !m) return loom__set_error(LOOM_ERR_INVALID_ARG, "checkpoint: path and module must not be NULL");
    if (model_only && loom__is_zip(path)) return loom_module_load(m, path, true); /* a torch.save file */
    loom_ctx *ctx = loom_module_ctx(m);
    loom_status st = loom_scope_begin(ctx);
    if (st != LOOM_OK) return st;
    int n = 0;
    loom_tensor **ts = NULL;
    char **names = NULL;
    st = loom_load_safetensors(ctx, path, &n, &ts, &names);
    /* Split by prefix: model (names without "model."), optimizer, the rest. */
    loom_tensor **mts = NULL, **ots = NULL;
    char **mnames = NULL;
    const char **onames = NULL;
    int nm = 0, no = 0;
    int64_t vals[3] = {0, 0, 0};
    bool have[3] = {false, false, false};
    const char *foreign = NULL; /* the first entry no checkpoint holds */
    if (st == LOOM_OK) {
        mts = malloc(sizeof *mts * (size_t)(n ? n : 1));
        ots = malloc(sizeof *ots * (size_t)(n ? n : 1));
        mnames = malloc(sizeof *mnames * (size_t)(n ? n : 1));
        onames = malloc(sizeof *onames * (size_t)(n ? n : 1));
        if (!mts || !ots || !mnames || !onames) st = loom__set_error(LOOM_ERR_NOMEM, "checkpoint: out of memory");
    }
    static const char *const tail[3] = {"epoch", "rng.seed", "rng.offset"};
    for (int i = 0; st == LOOM_OK && i < n; i++) {
        if (!strncmp(names[i], "model.", 6)) {
            mts[nm] = ts[i];
            mnames[nm++] = names[i] + 6;
            continue;
        }
        if (!strncmp(names[i], "optimizer.", 10)) {
            ots[no] = ts[i];
            onames[no++] = names[i] + 10;
            continue;
        }
        int k = -1;
        for (int j = 0; j < 3; j++)
            if (!strcmp(names[i], tail[j])) k = j;
        if (k < 0 || loom_tensor_dtype(ts[i]) != LOOM_INT64 || loom_tensor_numel(ts[i]) != 1 ||
            loom_tensor_copy_to(ts[i], &vals[k], sizeof vals[k]) != LOOM_OK) {
            if (!foreign) foreign = names[i];
        } else {
            have[k] = true;
        }
    }
    const bool is_checkpoint = !foreign && have[0] && have[1] && have[2];
    if (st == LOOM_OK && model_only && !is_checkpoint) {
        /* A plain state dict: every entry is the model's. */
        st = loom__module_load_tensors(m, path, n, ts, names, true);
        goto done;
    }
    if (st == LOOM_OK && foreign)
        st = loom__set_error(LOOM_ERR_FORMAT, "checkpoint: %s: unexpected entry \"%s\" (not a Loom checkpoint?)",
                             path, foreign);
    if (st == LOOM_OK && !is_checkpoint)
        st = loom__set_error(LOOM_ERR_FORMAT, "checkpoint: %s: no epoch or random state (not a Loom checkpoint?)", path);
    if (model_only) {
        if (st == LOOM_OK) st = loom__module_load_tensors(m, path, nm, mts, mnames, true);
        goto done;
    }
    if (st == LOOM_OK && !opt && no)
        st = loom__set_error(LOOM_ERR_INVALID_ARG, "checkpoint: %s holds an optimizer state; pass the optimizer", path);
    if (st == LOOM_OK && opt && !no)
        st = loom__set_error(LOOM_ERR_FORMAT, "checkpoint: %s holds no optimizer state", path);
    /* The optimizer checks everything before it changes; then the model
     * (names, shapes, dtypes checked before writing). */
    if (st == LOOM_OK && opt) st = loom_optimizer_load_state(opt, no, ots, onames);
    if (st == LOOM_OK) st = loom__module_load_tensors(m, path, nm, mts, mnames, true);
    if (st == LOOM_OK) {
        loom_rng_state rs = {(uint64_t)vals[1], (uint64_t)vals[2]};
        loom_rng_set_state(ctx, &rs);
        if (epoch) *epoch = vals[0];
    }
done:
    free(mts);
    free(ots);
    free(mnames);
    free(onames);
    free(ts);
    loom_safetensors_free_names(names, n);
    loom_scope_end(ctx);
    return st;
}

loom_status loom_checkpoint_load(const char *path, loom_module *m, loom_optimizer *opt, int64_t *epoch)
{
    return load(path, m, opt, epoch, false);
}

loom_status loom_load_weights(loom_module *m, const char *path) { return load(path, m, NULL, NULL, true); }
