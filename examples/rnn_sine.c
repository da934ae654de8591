/*
 * examples/rnn_sine.c - the seed's sequence program: a recurrent network
 * learns to predict the next value of a sine wave from the ten before it.
 *
 *     t = np.linspace(0, 100, 1000); data = np.sin(t)
 *     X = windows of 10 values, y = the value after each (990 samples)
 *     class SimpleRNN(nn.Module):         # rnn -> fc on the last step
 *         rnn = nn.RNN(1, 50, batch_first=True); fc = nn.Linear(50, 1)
 *         def forward(self, x): out, _ = self.rnn(x); return self.fc(out[:, -1, :])
 *     criterion = nn.MSELoss(); optimizer = optim.Adam(model.parameters(), lr=0.01)
 *     for epoch in range(200):           # full batch
 *         ...; if (epoch+1) % 10 == 0: print(f'Epoch {epoch+1}, Loss: {loss.item():.4f}')
 *
 *     $ ./examples/rnn_sine              # --cell lstm | gru swaps the cell
 *     Epoch 10, Loss: 0.0561
 *     ...
 *     Epoch 200, Loss: 0.0001
 *
 * At the end it prints the final loss with more digits and a few predictions
 * beside the true values. Options: --cell rnn|lstm|gru (rnn), --epochs N
 * (200), --hidden H (50), --lr LR (0.01), --seed S (0), --threads T,
 * --backend auto|onednn|ref, --help. A bad option prints one line and exits
 * with status 2.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <loom/loom.h>

#define PROG "rnn_sine"
#define POINTS 1000
#define WINDOW 10
#define SAMPLES (POINTS - WINDOW)

/* SimpleRNN: the module owns rnn and fc; this struct only points at them. */
typedef struct simple_rnn {
    loom_module *rnn, *fc;
} simple_rnn;

/* x [N, 10, 1] -> fc(rnn(x)[:, -1, :]) [N, 1], owned by the current scope. */
static loom_tensor *simple_rnn_forward(loom_module *m, loom_tensor *x, void *user)
{
    (void)m;
    simple_rnn *net = user;
    loom_tensor *out = loom_module_forward(net->rnn, x);                       /* [N, T, H] */
    loom_tensor *last = out ? loom_select(out, 1, loom_tensor_size(out, 1) - 1) : NULL; /* [N, H] */
    return loom_module_forward(net->fc, last);                                 /* [N, 1] */
}

/* Children "rnn" (RNN, LSTM or GRU: input 1, hidden H, batch_first) and
 * "fc" = Linear(H, 1): parameters rnn.weight_ih_l0, ..., fc.bias, as in
 * PyTorch. NULL on failure (error set). */
static loom_module *simple_rnn_create(loom_ctx *ctx, loom_rnn_mode mode, int hidden)
{
    simple_rnn *net = calloc(1, sizeof *net);
    if (!net) return NULL;
    static const char *const types[] = {"SimpleRNN", "SimpleRNN", "SimpleLSTM", "SimpleGRU"};
    loom_module *m = loom_module_create(ctx, types[mode], simple_rnn_forward, net, free);
    if (!m) {
        free(net);
        return NULL;
    }
    net->rnn = loom_rnn_module(ctx, mode, 1, hidden, &(loom_rnn_opts){.batch_first = true});
    if (!net->rnn || loom_module_add_child(m, "rnn", net->rnn) != LOOM_OK) goto fail;
    net->fc = loom_linear(ctx, hidden, 1, true);
    if (!net->fc || loom_module_add_child(m, "fc", net->fc) != LOOM_OK) goto fail;
    return m;
fail:
    loom_module_free(m); /* add_child took (or freed) each child it was given */
    return NULL;
}

/* ---- options ------------------------------------------------------------ */

typedef struct options {
    loom_rnn_mode cell;
    long epochs;
    int hidden;
    double lr;
    uint64_t seed;
    int threads;         /* 0: the context's default */
    const char *backend; /* NULL: auto */
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--cell rnn|lstm|gru] [--epochs N] [--hidden H] [--lr LR] [--seed S] [--threads T]\n"
            "       [--backend auto|onednn|ref] [--help]\n"
            "Trains a recurrent network (hidden H, batch_first) + Linear(H, 1) to predict sin(t) from the\n"
            "10 values before it, over 1000 points of [0, 100]: MSELoss, Adam, full batch (990 windows),\n"
            "printing the loss every 10 epochs, then a few predictions.\n"
            "  --cell C     rnn (tanh; default), lstm or gru\n"
            "  --epochs N   epochs to train (default 200)\n"
            "  --hidden H   hidden size (default 50)\n"
            "  --lr LR      Adam's learning rate (default 0.01)\n"
            "  --seed S     seed of the initial weights (default 0)\n"
            "  --threads T  compute threads (default: LOOM_NUM_THREADS, else every core)\n"
            "  --backend B  auto (default), onednn or ref (the portable C kernels)\n"
            "  --help       print this and exit\n",
            PROG);
}

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
    *o = (options){.cell = LOOM_RNN_TANH, .epochs = 200, .hidden = 50, .lr = 0.01};
    static const char *const names[] = {"--cell", "--epochs", "--hidden", "--lr", "--seed", "--threads", "--backend"};
    enum { NNAMES = sizeof names / sizeof names[0] };
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage(stdout);
            return 1;
        }
        int which = -1;
        const char *val = NULL;
        for (int k = 0; k < NNAMES; k++) {
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
        bool ok = true;
        switch (which) {
        case 0:
            if (!strcmp(val, "rnn")) o->cell = LOOM_RNN_TANH;
            else if (!strcmp(val, "lstm")) o->cell = LOOM_LSTM;
            else if (!strcmp(val, "gru")) o->cell = LOOM_GRU;
            else ok = false;
            if (!ok) fprintf(stderr, "%s: --cell must be rnn, lstm or gru, got '%s'\n", PROG, val);
            break;
        case 1:
            ok = parse_num(val, 1, 100000000, &v);
            if (ok) o->epochs = (long)v;
            else fprintf(stderr, "%s: --epochs needs an integer from 1 to 100000000, got '%s'\n", PROG, val);
            break;
        case 2:
            ok = parse_num(val, 1, 65536, &v);
            if (ok) o->hidden = (int)v;
            else fprintf(stderr, "%s: --hidden needs an integer from 1 to 65536, got '%s'\n", PROG, val);
            break;
        case 3: {
            char *end;
            errno = 0;
            double lr = strtod(val, &end);
            ok = !errno && *val && !*end && isfinite(lr) && lr > 0;
            if (ok) o->lr = lr;
            else fprintf(stderr, "%s: --lr needs a positive number, got '%s'\n", PROG, val);
            break;
        }
        case 4:
            ok = parse_num(val, 0, UINT64_MAX, &v);
            if (ok) o->seed = (uint64_t)v;
            else fprintf(stderr, "%s: --seed needs an integer from 0 to %" PRIu64 ", got '%s'\n", PROG, UINT64_MAX,
                         val);
            break;
        case 5:
            ok = parse_num(val, 1, 4096, &v);
            if (ok) o->threads = (int)v;
            else fprintf(stderr, "%s: --threads needs an integer from 1 to 4096, got '%s'\n", PROG, val);
            break;
        default:
            ok = !strcmp(val, "auto") || !strcmp(val, "onednn") || !strcmp(val, "ref");
            if (ok) o->backend = val;
            else fprintf(stderr, "%s: --backend must be auto, onednn or ref, got '%s'\n", PROG, val);
            break;
        }
        if (!ok) return 2;
    }
    return 0;
}

/* ---- data and training ---------------------------------------------------- */

/* The seed's data: data[i] = sin(t_i) with t = linspace(0, 100, 1000);
 * X[i] = data[i .. i+9] as [990, 10, 1], y[i] = data[i+10] as [990, 1]. */
static void make_data(float *X, float *y)
{
    static float data[POINTS];
    for (int i = 0; i < POINTS; i++) data[i] = (float)sin(100.0 * i / (POINTS - 1));
    for (int i = 0; i < SAMPLES; i++) {
        memcpy(X + (size_t)i * WINDOW, data + i, WINDOW * sizeof *X);
        y[i] = data[i + WINDOW];
    }
}

int main(int argc, char **argv)
{
    options opt;
    int rc = parse_options(argc, argv, &opt);
    if (rc) return rc == 1 ? 0 : 2;

    loom_ctx *ctx = loom_ctx_create(
        &(loom_ctx_options){.num_threads = opt.threads, .seed = opt.seed, .backend = opt.backend});
    if (!ctx) {
        fprintf(stderr, "%s: %s\n", PROG, loom_last_error());
        return 1;
    }
    static float xs[SAMPLES * WINDOW], ys[SAMPLES];
    make_data(xs, ys);
    loom_tensor *X = loom_tensor_from_array(ctx, LOOM_FLOAT32, xs, LOOM_SHAPE(SAMPLES, WINDOW, 1));
    loom_tensor *y = loom_tensor_from_array(ctx, LOOM_FLOAT32, ys, LOOM_SHAPE(SAMPLES, 1));
    loom_module *model = X && y ? simple_rnn_create(ctx, opt.cell, opt.hidden) : NULL;
    loom_optimizer *adam = NULL;
    if (model) {
        loom_tensor *params[8];
        int n = loom_module_parameters(model, params, NULL, 8);
        loom_adam_options ao = loom_adam_defaults();
        ao.lr = opt.lr;
        adam = n > 0 && n <= 8 ? loom_adam(ctx, n, params, &ao) : NULL;
    }
    if (!adam) {
        fprintf(stderr, "%s: setup failed: %s\n", PROG, loom_last_error());
        loom_module_free(model);
        loom_ctx_free(ctx);
        return 1;
    }

    double value = NAN;
    for (long epoch = 0; epoch < opt.epochs && rc == 0; epoch++) {
        loom_scope_begin(ctx); /* everything an epoch creates dies with it */
        loom_optimizer_zero_grad(adam);
        loom_tensor *loss = loom_mse_loss(loom_module_forward(model, X), y, LOOM_REDUCTION_MEAN);
        if (loom_backward(loss, NULL, NULL) != LOOM_OK || loom_optimizer_step(adam) != LOOM_OK ||
            loom_tensor_item(loss, &value) != LOOM_OK) {
            fprintf(stderr, "%s: epoch %ld: %s\n", PROG, epoch + 1, loom_last_error());
            rc = 1;
        } else if ((epoch + 1) % 10 == 0) {
            printf("Epoch %ld, Loss: %.4f\n", epoch + 1, value);
        }
        loom_scope_end(ctx);
    }

    if (rc == 0) {
        /* The final model on the data, without gradients, in eval mode. */
        loom_module_train(model, false);
        loom_no_grad_begin(ctx);
        loom_tensor *pred = loom_module_forward(model, X);
        float p[SAMPLES];
        double mse = 0;
        if (loom_tensor_copy_to(pred, p, sizeof p) != LOOM_OK) {
            fprintf(stderr, "%s: prediction: %s\n", PROG, loom_last_error());
            rc = 1;
        } else {
            for (int i = 0; i < SAMPLES; i++) mse += ((double)p[i] - ys[i]) * ((double)p[i] - ys[i]);
            printf("Final loss (MSE over the %d windows, after training): %.6f\n", SAMPLES, mse / SAMPLES);
            printf("   t     true  predicted\n");
            for (int i = 0; i < SAMPLES; i += SAMPLES / 6)
                printf("%6.2f  %7.4f  %7.4f\n", 100.0 * (i + WINDOW) / (POINTS - 1), ys[i], p[i]);
        }
        loom_no_grad_end(ctx);
    }
    loom_optimizer_free(adam);
    loom_module_free(model);
    loom_ctx_free(ctx);
    return rc;
}
