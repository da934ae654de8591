/*
 * tools/predict.c - `loom predict`: runs a model of the zoo in evaluation
 * mode on a NumPy batch and writes the outputs as NumPy, so that users can
 * check Loom against their PyTorch results:
 *
 *     loom predict --model resnet18 --weights resnet18.pth --input x.npy --output y.npy
 *
 * Any model of the zoo (loom_model): it is built for the input's channels
 * and size. The weights come from a torch.save file (.pth/.pt, a state
 * dict), a safetensors file or a `loom train` checkpoint, loaded strictly
 * (loom_load_weights); the input is a float32 [N, C, H, W] array; the
 * output is float32 [N, num_classes]. Every error prints one line naming the problem and
 * exits non-zero (2 for bad arguments, 1 otherwise); the output file is
 * written atomically, only on success.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <loom/loom.h>

#include "tools/commands.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: loom predict --model NAME --weights FILE --input X.npy --output Y.npy\n"
               "                    [--num-classes N] [--threads N] [--backend auto|onednn|ref]\n"
               "Runs a model in evaluation mode on a float32 NCHW batch and writes its outputs.\n"
               "  --model NAME       mlp, simplecnn, rnn, lstm, gru, resnet18, resnet34, resnet50,\n"
               "                     resnet101 or resnet152 (built for the input's channels and size)\n"
               "  --weights FILE     a torch.save state dict (.pth, .pt), a safetensors file or a\n"
               "                     loom train checkpoint\n"
               "  --input X.npy      float32 [N, C, H, W]\n"
               "  --output Y.npy     written as float32 [N, num_classes]\n"
               "  --num-classes N    the size of the model's last layer (default 1000 for resnets, else 10)\n"
               "  --threads N        compute threads (default: every core)\n"
               "  --backend B        auto (default), onednn or ref\n");
}

static int fail(loom_ctx *ctx, loom_module *m, const char *what)
{
    fprintf(stderr, "loom predict: %s: %s\n", what, loom_last_error());
    loom_module_free(m);
    loom_ctx_free(ctx);
    return 1;
}

int loom_tool_predict(int argc, char **argv)
{
    const char *model = NULL, *weights = NULL, *input = NULL, *output = NULL, *backend = NULL;
    long classes = 0, threads = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **slot = !strcmp(a, "--model")     ? &model
                            : !strcmp(a, "--weights") ? &weights
                            : !strcmp(a, "--input")   ? &input
                            : !strcmp(a, "--output")  ? &output
                            : !strcmp(a, "--backend") ? &backend
                                                      : NULL;
        long *num = !strcmp(a, "--num-classes") ? &classes : !strcmp(a, "--threads") ? &threads : NULL;
        if (!slot && !num) {
            fprintf(stderr, "loom predict: unknown option '%s' (see loom predict --help)\n", a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "loom predict: %s needs a value\n", a);
            return 2;
        }
        if (slot) {
            *slot = v;
        } else {
            char *end;
            errno = 0;
            long n = strtol(v, &end, 10);
            if (errno || *end || n < 1 || n > 1000000) {
                fprintf(stderr, "loom predict: %s needs a positive integer, got '%s'\n", a, v);
                return 2;
            }
            *num = n;
        }
        i++;
    }
    if (!model || !weights || !input || !output) {
        fprintf(stderr, "loom predict: --model, --weights, --input and --output are required (see --help)\n");
        return 2;
    }
    bool known = false;
    for (const char *const *n = loom_model_names(); *n; n++) known |= !strcmp(*n, model);
    if (!known) {
        fprintf(stderr,
                "loom predict: unknown model '%s' (mlp, simplecnn, rnn, lstm, gru, resnet18, resnet34, resnet50, "
                "resnet101, resnet152)\n",
                model);
        return 2;
    }
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = (int)threads, .backend = backend});
    if (!ctx) return fail(NULL, NULL, "creating the context");
    loom_tensor *x = loom_load_npy(ctx, input);
    if (!x) return fail(ctx, NULL, "reading the input");
    if (loom_tensor_dtype(x) != LOOM_FLOAT32 || loom_tensor_ndim(x) != 4) {
        fprintf(stderr, "loom predict: %s: the input must be float32 [N, C, H, W], got %s with %d dims\n", input,
                loom_dtype_name(loom_tensor_dtype(x)), loom_tensor_ndim(x));
        loom_ctx_free(ctx);
        return 1;
    }
    loom_module *m = loom_model(ctx, model,
                                &(loom_model_opts){.in_channels = loom_tensor_size(x, 1),
                                                   .height = loom_tensor_size(x, 2),
                                                   .width = loom_tensor_size(x, 3),
                                                   .num_classes = classes});
    if (!m) return fail(ctx, NULL, "building the model");
    if (loom_load_weights(m, weights) != LOOM_OK) return fail(ctx, m, "loading the weights");
    loom_module_train(m, false);
    if (!strcmp(loom_module_type(m), "ResNet")) { /* BatchNorm folded, ReLU fused: faster, same values */
        loom_module *f = loom_resnet_fuse_for_inference(m);
        if (!f) return fail(ctx, m, "fusing the model");
        loom_module_free(m);
        m = f;
    }
    loom_no_grad_begin(ctx);
    loom_tensor *y = loom_module_forward(m, x);
    loom_status st = y ? loom_save_npy(y, output) : loom_last_status();
    loom_no_grad_end(ctx);
    if (st != LOOM_OK) return fail(ctx, m, y ? "writing the output" : "running the model");
    loom_module_free(m);
    loom_ctx_free(ctx);
    return 0;
}
