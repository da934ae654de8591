/*
 * examples/mlp.c - the seed training program: a small MLP learns random
 * binary labels with BCELoss and Adam, full batch, printing the loss of
 * each epoch as the PyTorch original does.
 *
 *     class SimpleNN(nn.Module):          # fc1 -> ReLU -> fc2 -> Sigmoid
 *         fc1 = nn.Linear(20, 64); fc2 = nn.Linear(64, 1)
 *     X = torch.rand(100, 20); y = torch.randint(0, 2, (100, 1)).float()
 *     criterion = nn.BCELoss(); optimizer = optim.Adam(model.parameters(), lr=0.001)
 *     for epoch in range(10):
 *         optimizer.zero_grad(); loss = criterion(model(X), y)
 *         loss.backward(); optimizer.step()
 *         print(f"Epoch {epoch+1}, Loss: {loss.item():.4f}")
 *
 *     $ ./examples/mlp
 *     Epoch 1, Loss: 0.7046
 *     ...
 *
 * Options: --epochs N (10), --seed S (0), --threads T (every core, or
 * LOOM_NUM_THREADS), --help. A bad option prints one line and exits with
 * status 2. The numbers differ from PyTorch's: Loom's generator is not
 * PyTorch's (tests/check_optim.c compares the updates themselves).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <loom/loom.h>

#define PROG "mlp"

/* SimpleNN's forward needs its two Linear children; the module owns them,
 * this struct only points at them. */
typedef struct simple_nn {
    loom_module *fc1, *fc2;
} simple_nn;

/* x [N, 20] -> sigmoid(fc2(relu(fc1(x)))) [N, 1], owned by the current scope. */
static loom_tensor *simple_nn_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m;
    simple_nn *net = user;
    loom_tensor *h = loom_relu(loom_module_forward(net->fc1, x)); /* [N, 64] */
    return loom_sigmoid(loom_module_forward(net->fc2, h));         /* [N, 1] */
}

/* A "SimpleNN" module with children fc1 = Linear(20, 64) and
 * fc2 = Linear(64, 1): its parameters are fc1.weight, fc1.bias, fc2.weight,
 * fc2.bias, as in PyTorch. NULL on failure. */
static loom_module *simple_nn_create(loom_ctx *ctx)
{
    simple_nn *net = calloc(1, sizeof *net);
    if (!net) return NULL;
    loom_module *m = loom_module_create(ctx, "SimpleNN", simple_nn_forward, net, free);
    if (!m) {
        free(net);
        return NULL;
    }
    net->fc1 = loom_linear(ctx, 20, 64, true);
    if (!net->fc1 || loom_module_add_child(m, "fc1", net->fc1) != LOOM_OK) goto fail;
    net->fc2 = loom_linear(ctx, 64, 1, true);
    if (!net->fc2 || loom_module_add_child(m, "fc2", net->fc2) != LOOM_OK) goto fail;
    return m;
fail:
    /* A child that was not added is still ours. */
    if (net->fc1 && loom_module_child(m, "fc1") != net->fc1) loom_module_free(net->fc1);
    if (net->fc2 && loom_module_child(m, "fc2") != net->fc2) loom_module_free(net->fc2);
    loom_module_free(m);
    return NULL;
}

/* ---- options ------------------------------------------------------------ */

typedef struct options {
    long epochs;
    uint64_t seed;
    int threads; /* 0: the context's default */
} options;

static void usage(FILE *f)
{
    fprintf(f, "usage: %s [--epochs N] [--seed S] [--threads T] [--help]\n"
               "Trains Linear(20, 64) -> ReLU -> Linear(64, 1) -> Sigmoid on 100 random samples\n"
               "with BCELoss and Adam (lr 0.001), full batch, printing each epoch's loss.\n"
               "  --epochs N   epochs to train (default 10)\n"
               "  --seed S     seed of the random data and weights (default 0)\n"
               "  --threads T  compute threads (default: LOOM_NUM_THREADS, else every core)\n"
               "  --help       print this and exit\n",
               PROG);
}

/* Parses a whole decimal string into [min, max]. */
static bool parse_num(const char *s, unsigned long long min, unsigned long long max, unsigned long long *out)
{
    if (!s || !*s || *s == '-' || *s == '+') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max) return false;
    *out = v;
    return true;
}

/* Returns 0 to go on, 1 after --help, 2 on a bad option (message printed). */
static int parse_options(int argc, char **argv, options *o)
{
    *o = (options){.epochs = 10, .seed = 0, .threads = 0};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage(stdout);
            return 1;
        }
        static const char *const names[] = {"--epochs", "--seed", "--threads"};
        int which = -1;
        const char *val = NULL;
        for (int k = 0; k < 3; k++) {
            size_t len = strlen(names[k]);
            if (!strncmp(arg, names[k], len) && (arg[len] == '\0' || arg[len] == '=')) {
                which = k;
                val = arg[len] == '=' ? arg + len + 1 : (i + 1 < argc ? argv[++i] : NULL);
                break;
            }
        }
        if (which < 0) {
            fprintf(stderr, "%s: unknown option '%s' (try --help)\n", PROG, arg);
            return 2;
        }
        if (!val) {
            fprintf(stderr, "%s: %s needs a value (try --help)\n", PROG, names[which]);
            return 2;
        }
        unsigned long long v;
        bool ok;
        switch (which) {
        case 0:
            ok = parse_num(val, 1, 100000000, &v);
            if (ok) o->epochs = (long)v;
            else fprintf(stderr, "%s: --epochs needs an integer from 1 to 100000000, got '%s'\n", PROG, val);
            break;
        case 1:
            ok = parse_num(val, 0, UINT64_MAX, &v);
            if (ok) o->seed = (uint64_t)v;
            else fprintf(stderr, "%s: --seed needs an integer from 0 to %" PRIu64 ", got '%s'\n", PROG, UINT64_MAX,
                         val);
            break;
        default:
            ok = parse_num(val, 1, 4096, &v);
            if (ok) o->threads = (int)v;
            else fprintf(stderr, "%s: --threads needs an integer from 1 to 4096, got '%s'\n", PROG, val);
            break;
        }
        if (!ok) return 2;
    }
    return 0;
}

/* ---- training ----------------------------------------------------------- */

int main(int argc, char **argv)
{
    options opt;
    int rc = parse_options(argc, argv, &opt);
    if (rc) return rc == 1 ? 0 : 2;

    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = opt.threads, .seed = opt.seed});
    if (!ctx) {
        fprintf(stderr, "%s: %s\n", PROG, loom_last_error());
        return 1;
    }
    /* The data live in the root scope, for the whole run. */
    loom_tensor *X = loom_rand(ctx, LOOM_SHAPE(100, 20));
    loom_tensor *y = loom_to_dtype(loom_randint(ctx, 0, 2, LOOM_SHAPE(100, 1)), LOOM_FLOAT32);
    loom_module *model = y ? simple_nn_create(ctx) : NULL;
    loom_optimizer *adam = NULL;
    if (model) {
        loom_tensor *params[4];
        int n = loom_module_parameters(model, params, NULL, 4);
        loom_adam_options ao = loom_adam_defaults(); /* lr 0.001 */
        adam = n == 4 ? loom_adam(ctx, n, params, &ao) : NULL;
    }
    if (!adam) {
        fprintf(stderr, "%s: setup failed: %s\n", PROG, loom_last_error());
        loom_module_free(model);
        loom_ctx_free(ctx);
        return 1;
    }

    rc = 0;
    for (long epoch = 0; epoch < opt.epochs && rc == 0; epoch++) {
        /* Everything an epoch creates dies with its scope. */
        loom_scope_begin(ctx);
        loom_optimizer_zero_grad(adam);
        loom_tensor *outputs = loom_module_forward(model, X);
        loom_tensor *loss = loom_bce_loss(outputs, y, LOOM_REDUCTION_MEAN);
        double value = 0;
        if (loom_backward(loss, NULL, NULL) != LOOM_OK || loom_optimizer_step(adam) != LOOM_OK ||
            loom_tensor_item(loss, &value) != LOOM_OK) {
            fprintf(stderr, "%s: epoch %ld failed: %s\n", PROG, epoch + 1, loom_last_error());
            rc = 1;
        } else {
            printf("Epoch %ld, Loss: %.4f\n", epoch + 1, value);
        }
        loom_scope_end(ctx);
    }

    loom_optimizer_free(adam); /* its state first: detached tensors */
    loom_module_free(model);
    loom_ctx_free(ctx);
    return rc;
}
