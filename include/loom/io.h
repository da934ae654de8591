/*
 * loom/io.h - checkpoints: safetensors files (read and written) and PyTorch's
 * torch.save files (read).
 *
 * safetensors (Hugging Face) is a plain file of tensors: 8 bytes holding N
 * (little-endian uint64), N bytes of JSON naming each tensor's dtype, shape
 * and byte range, then the raw little-endian row-major data. PyTorch users
 * read Loom's files with safetensors.torch.load_file(path) and write files
 * Loom reads with safetensors.torch.save_file(tensors, path); module state
 * names follow PyTorch's state_dict keys ("conv1.weight", "bn.running_mean").
 *
 *     loom_module_save(net, "ckpt.safetensors");            // all its state
 *     ...
 *     loom_module_load(net, "ckpt.safetensors", true);      // strict
 *
 * Loom's tensors map to the dtypes "F32" (float32), "I64" (int64) and
 * "BOOL" (bool). Files are untrusted input: every header field, offset and
 * size is checked before anything is read, and a bad file gives
 * LOOM_ERR_FORMAT with a message naming the file and the problem.
 *
 * Saving is atomic: the file is written as `path.tmp.XXXXXX` in the same
 * directory, flushed to disk, then renamed over `path`; if anything fails,
 * the temporary file is removed and a file already at `path` is untouched.
 */
#ifndef LOOM_IO_H
#define LOOM_IO_H

#include <stdbool.h>

#include "loom/context.h"
#include "loom/nn.h"
#include "loom/optim.h"
#include "loom/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Computes tensors[0..n-1] and writes them to `path` as tensors called
 * names[0..n-1] (written contiguously whatever their strides). Names must
 * be distinct (else LOOM_ERR_INVALID_ARG, and nothing is written) and not
 * "__metadata__". metadata_json: NULL, or a JSON object whose values are
 * strings ("{\"format\": \"pt\"}"), stored as the header's "__metadata__";
 * anything else is LOOM_ERR_INVALID_ARG. The header is written as the
 * safetensors library writes it: compact JSON, "__metadata__" first, then
 * the tensors ordered by dtype (I64, F32, BOOL) and by name, their data in
 * that order, the header padded with spaces to a multiple of 8 bytes.
 * Nothing is taken over: tensors and strings stay the caller's. Errors:
 * LOOM_ERR_IO (the directory is missing or not writable, the disk is
 * full...), or whatever computing a tensor reported. */
loom_status loom_save_safetensors(const char *path, int n, loom_tensor *const *tensors, const char *const *names,
                                  const char *metadata_json);

/* Reads every tensor of the file at `path`. On success *n_out is the count,
 * *tensors_out a malloc'd array of n new tensors, each owned by the ctx's
 * current scope like any new tensor (the caller frees the array with
 * free()), and *names_out (if names_out is not NULL) a malloc'd array of n
 * malloc'd names, freed with loom_safetensors_free_names(); both arrays are
 * in the order the header lists the tensors, and NULL when n is 0. On
 * failure nothing is created and the outputs are not written. A tensor of a
 * dtype Loom lacks (F16, BF16, F64, I32, U8, ...) gives LOOM_ERR_DTYPE
 * naming the tensor and the dtype; one with more than LOOM_MAX_DIMS dims,
 * LOOM_ERR_SHAPE; a corrupt file, LOOM_ERR_FORMAT; one that cannot be
 * opened or read, LOOM_ERR_IO. The header's "__metadata__" is checked (an
 * object of strings) and otherwise ignored. */
loom_status loom_load_safetensors(loom_ctx *ctx, const char *path, int *n_out, loom_tensor ***tensors_out,
                                  char ***names_out);

/* Frees names[0..n-1] and the array (as loom_load_safetensors returned
 * them). NULL is a no-op. */
void loom_safetensors_free_names(char **names, int n);

/* Saves m's state (loom_module_state: parameters and buffers, with their
 * dotted names) to `path`, with the metadata {"format": "pt"} that
 * Hugging Face's loaders expect of PyTorch checkpoints. As
 * loom_save_safetensors otherwise. */
loom_status loom_module_save(loom_module *m, const char *path);

/* Loads m's state from `path`. Every tensor of m's state found in the file
 * must have exactly the module's shape (else LOOM_ERR_SHAPE: "conv1.weight
 * has shape [32, 1, 3, 3] in the file but [32, 1, 5, 5] in the module")
 * and dtype (else LOOM_ERR_DTYPE); nothing is converted. strict: every
 * name of m's state must be in the file and the file must hold no other
 * tensor (else LOOM_ERR_FORMAT, listing the missing and unexpected names);
 * not strict: the tensors present in both are loaded, the rest is left as
 * it is. The values are written in place (loom_tensor_assign) only once the
 * whole file has been checked and read, so a failed load leaves m unchanged.
 * (Only an allocation of a few bytes failing while the values are being
 * written could stop it halfway; it says so.) Errors for the file itself as
 * for loom_load_safetensors. */
loom_status loom_module_load(loom_module *m, const char *path, bool strict);

/* ---- training checkpoints ----------------------------------------------- */

/* Saves what resuming training needs: m's state ("model.*"), opt's state
 * ("optimizer.*", loom_optimizer_state; opt may be NULL), the epoch, and
 * the random generator of m's context, atomically, as one safetensors
 * file. Restoring it with loom_checkpoint_load into a model and optimizer
 * built the same way and continuing gives the same bits as a run that was
 * never interrupted. */
loom_status loom_checkpoint_save(const char *path, loom_module *m, loom_optimizer *opt, int64_t epoch);
/* Restores a checkpoint: the model strictly, the optimizer (NULL if the
 * file has none), the generator of m's context, and *epoch (may be NULL).
 * Checks the optimizer's state and the model's names and shapes before
 * changing anything. */
loom_status loom_checkpoint_load(const char *path, loom_module *m, loom_optimizer *opt, int64_t *epoch);

/* Loads a model's weights, strictly, from any file Loom reads: a training
 * checkpoint (its model part; the optimizer and generator are left alone),
 * a safetensors state dict, or a torch.save state dict (.pth/.pt). This is
 * what evaluation and inference want: `loom eval` and `loom predict` use
 * it. Errors as loom_checkpoint_load and loom_module_load. */
loom_status loom_load_weights(loom_module *m, const char *path);

/* ---- PyTorch checkpoints (torch.save files) ------------------------------ */

/* Reads the tensors of a file written by torch.save (the zip format of
 * PyTorch >= 1.6: .pth, .pt), without Python: a state dict, or a dict that
 * holds one (nested dicts give dotted names: {"model": {"fc.bias": t}} is
 * "model.fc.bias"; values that are not tensors are skipped). Same outputs
 * and ownership as loom_load_safetensors; the names are freed with
 * loom_pth_free_names. The pickle inside is read by a restricted
 * unpickler that accepts only what a state dict needs (protocol-2
 * opcodes, collections.OrderedDict, torch._utils._rebuild_tensor_v2 and
 * _rebuild_parameter, the storage types) and refuses anything else with
 * LOOM_ERR_FORMAT naming the global or opcode; nothing is executed.
 * Float32, int64 and bool tensors load (strided views are copied out
 * dense); another dtype (float64, float16, ...) gives LOOM_ERR_DTYPE naming
 * the tensor. A truncated or corrupt archive, a storage smaller than its
 * tensor's view, a big-endian file: LOOM_ERR_FORMAT; a missing file:
 * LOOM_ERR_IO. loom_module_load() reads these files too (it tells them
 * from safetensors by their first bytes). */
loom_status loom_load_pth(loom_ctx *ctx, const char *path, int *n_out, loom_tensor ***tensors_out,
                          char ***names_out);
void loom_pth_free_names(char **names, int n);

/* ---- NumPy arrays (.npy) -------------------------------------------------- */

/* Reads a .npy file (format 1.0-3.0, C order, dtype '<f4', '<i8' or '|b1')
 * as a new tensor of its shape, owned by the current scope. NULL on error:
 * LOOM_ERR_IO (cannot open), LOOM_ERR_DTYPE (another dtype, named),
 * LOOM_ERR_FORMAT (Fortran order, a malformed header, a size that
 * disagrees with the file's, named). */
loom_tensor *loom_load_npy(loom_ctx *ctx, const char *path);
/* Computes t and writes it as a .npy file (version 1.0, C order) that
 * numpy.load reads; atomically, as loom_module_save. */
loom_status loom_save_npy(loom_tensor *t, const char *path);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_IO_H */
