/*
 * tools/train.c - `loom train` and `loom eval`: a model of the zoo
 * (loom_model) trained and evaluated on an MNIST-format directory.
 *
 *     loom train --model simplecnn --data /usr/share/datasets/fashion-mnist \
 *                --epochs 3 --checkpoint cnn.ckpt
 *     loom train ... --checkpoint cnn.ckpt --resume --epochs 5   # two more
 *     loom eval --model simplecnn --weights cnn.ckpt --data DIR
 *
 * Decisions, as a PyTorch training script would make them:
 *  - Inputs are ToTensor + Normalize(mean, std); mean and std are the
 *    training split's own pixel statistics unless --normalize gives them,
 *    and `loom eval` computes the same from the same directory, so a model
 *    is always tested as it was trained.
 *  - The loss is cross-entropy for every model (simplecnn's log-softmax
 *    output gives the NLL loss it was designed for).
 *  - Adam (lr 1e-3) by default; adamw (lr 1e-3, weight decay 0.01) and sgd
 *    (lr 0.01, momentum 0.9).
 *  - After every epoch the test split (when the directory has one) is
 *    evaluated and, with --checkpoint, a training checkpoint (model,
 *    optimizer, epoch, generator) is written atomically. --resume continues
 *    from it with the same batches a run that was never stopped would see.
 * Output: a progress bar on a terminal (stderr), one line per epoch; with
 * --json one JSON object per epoch on stdout instead.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <loom/loom.h>

#include "tools/args.h"
#include "tools/commands.h"

/* ---- what train and eval share --------------------------------------------- */

typedef struct common {
    const char *model, *data, *backend, *normalize;
    long batch, threads, limit;
    bool json;
    double mean, std;
    loom_dist *dist; /* data parallelism (loom train --distributed); NULL: one process */
} common;

/* mean,std from --normalize, or the training split's pixel statistics. */
static bool normalization(const char *cmd, common *c, const loom_dataset *train)
{
    if (c->normalize) {
        char *end;
        c->mean = strtod(c->normalize, &end);
        if (*end == ',') c->std = strtod(end + 1, &end);
        if (*end || end == c->normalize || !isfinite(c->mean) || !isfinite(c->std) || c->std <= 0) {
            fprintf(stderr, "%s: --normalize needs MEAN,STD with STD > 0, got '%s'\n", cmd, c->normalize);
            return false;
        }
        return true;
    }
    const uint8_t *px = loom_dataset_pixels(train);
    const int64_t n = loom_dataset_size(train) * loom_dataset_rows(train) * loom_dataset_cols(train);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        s += px[i];
        s2 += (double)px[i] * px[i];
    }
    c->mean = s / (double)n / 255.0;
    const double var = s2 / (double)n / (255.0 * 255.0) - c->mean * c->mean;
    c->std = var > 1e-12 ? sqrt(var) : 1.0; /* a blank dataset: no scaling */
    return true;
}

static loom_module *build_model(const common *c, loom_ctx *ctx, const loom_dataset *ds)
{
    return loom_model(ctx, c->model,
                      &(loom_model_opts){.in_channels = 1,
                                         .height = loom_dataset_rows(ds),
                                         .width = loom_dataset_cols(ds),
                                         .num_classes = loom_dataset_num_classes(ds)});
}

/* Mean cross-entropy and accuracy of m on ds (at most limit batches). */
static loom_status evaluate(const common *c, loom_ctx *ctx, loom_module *m, const loom_dataset *ds, long batch,
                            double *loss, long *correct, long *total)
{
    loom_dataloader_options lo = loom_dataloader_defaults();
    lo.batch_size = batch;
    lo.normalize = true;
    lo.mean = c->mean;
    lo.std = c->std;
    lo.num_replicas = loom_dist_size(c->dist); /* each rank its shard */
    lo.rank = loom_dist_rank(c->dist);
    loom_dataloader *dl;
    loom_status st = loom_dataloader_create(ctx, ds, &lo, &dl);
    if (st != LOOM_OK) return st;
    loom_module_train(m, false);
    loom_no_grad_begin(ctx);
    double sum = 0;
    *correct = *total = 0;
    for (long b = 0; st == LOOM_OK && (!c->limit || b < c->limit); b++) {
        loom_scope_begin(ctx);
        loom_tensor *x, *y;
        st = loom_dataloader_next(dl, &x, &y);
        if (st == LOOM_OK && x) {
            loom_tensor *out = loom_module_forward(m, x);
            loom_tensor *l = loom_cross_entropy_loss(out, y, LOOM_REDUCTION_SUM);
            loom_tensor *hits = loom_sum(loom_eq(loom_argmax(out, 1, false), y), 0, NULL, false);
            double lv = 0, hv = 0;
            st = loom_tensor_item(l, &lv);
            if (st == LOOM_OK) st = loom_tensor_item(hits, &hv);
            sum += lv;
            *correct += (long)hv;
            *total += (long)loom_tensor_size(x, 0);
        }
        loom_scope_end(ctx);
        if (!x) break;
    }
    loom_no_grad_end(ctx);
    loom_dataloader_free(dl);
    if (st == LOOM_OK && c->dist) { /* the shards' sums */
        const int r = loom_dist_size(c->dist);
        double sums[3] = {sum, (double)*correct, (double)*total};
        st = loom_dist_allreduce_mean(c->dist, sums, 3);
        sum = sums[0] * r;
        *correct = lround(sums[1] * r);
        *total = lround(sums[2] * r);
    }
    *loss = *total ? sum / (double)*total : 0.0;
    return st;
}

static int fail(const char *cmd, const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", cmd, what, loom_last_error());
    return 1;
}

/* ---- loom train ----------------------------------------------------------- */

static void train_usage(FILE *f)
{
    fprintf(f,
            "usage: loom train --model NAME --data DIR [options]\n"
            "Trains a model of the zoo on an MNIST-format directory (train-images-idx3-ubyte[.gz] ...),\n"
            "testing after every epoch on its t10k files when present.\n"
            "  --model NAME        mlp, simplecnn, rnn, lstm, gru, resnet18, resnet34, resnet50, ...\n"
            "  --data DIR          the dataset directory (e.g. /usr/share/datasets/fashion-mnist)\n"
            "  --epochs N          epochs to train in all (default 1)\n"
            "  --batch-size N      images per step (default 64)\n"
            "  --optimizer NAME    adam (default), adamw or sgd\n"
            "  --lr X              learning rate (default 1e-3; 0.01 for sgd)\n"
            "  --momentum X        sgd's momentum (default 0.9)\n"
            "  --weight-decay X    L2 penalty (default 0; adamw 0.01)\n"
            "  --seed N            weights, shuffling and dropout (default 0)\n"
            "  --threads N         compute threads (default: LOOM_NUM_THREADS or every core)\n"
            "  --backend B         auto (default), onednn or ref\n"
            "  --normalize M,S     Normalize's mean and std (default: the training images')\n"
            "  --checkpoint FILE   write a training checkpoint after every epoch (atomically)\n"
            "  --resume            continue from --checkpoint's epoch\n"
            "  --limit N           at most N batches per epoch and N test batches (quick checks)\n"
            "  --json              one JSON object per epoch on stdout, no progress bar\n"
            "  --distributed       data-parallel over MPI ranks (mpirun -np R loom train ...; on by\n"
            "                      itself under mpirun with R > 1): --batch-size is the global batch\n");
}

static void progress(long epoch, long epochs, long b, long nb, double loss, double ips, double elapsed)
{
    const int width = 24;
    int fill = nb ? (int)((double)width * (double)b / (double)nb) : width;
    double eta = b ? elapsed * (double)(nb - b) / (double)b : 0;
    fprintf(stderr, "\repoch %ld/%ld [%.*s%*s] %ld/%ld loss %.4f %.0f img/s ETA %d:%02d ", epoch, epochs, fill,
            "########################", width - fill, "", b, nb, loss, ips, (int)eta / 60, (int)eta % 60);
    fflush(stderr);
}

int loom_tool_train(int argc, char **argv)
{
    const char *cmd = "loom train";
    common c = {.batch = 64};
    const char *optimizer = "adam", *checkpoint = NULL;
    long epochs = 1, seed = 0;
    double lr = -1, momentum = 0.9, weight_decay = -1;
    bool resume = false, distributed = false;
    const loom_tool_opt opts[] = {
        {"--distributed", LOOM_TOOL_FLAG, &distributed, 0, 0},
        {"--model", LOOM_TOOL_STR, &c.model, 0, 0},
        {"--data", LOOM_TOOL_STR, &c.data, 0, 0},
        {"--epochs", LOOM_TOOL_INT, &epochs, 1, 1000000},
        {"--batch-size", LOOM_TOOL_INT, &c.batch, 1, 1 << 20},
        {"--optimizer", LOOM_TOOL_STR, &optimizer, 0, 0},
        {"--lr", LOOM_TOOL_DOUBLE, &lr, 1e-12, 1e6},
        {"--momentum", LOOM_TOOL_DOUBLE, &momentum, 0, 1},
        {"--weight-decay", LOOM_TOOL_DOUBLE, &weight_decay, 0, 1e6},
        {"--seed", LOOM_TOOL_INT, &seed, 0, 9.2e18},
        {"--threads", LOOM_TOOL_INT, &c.threads, 1, 4096},
        {"--backend", LOOM_TOOL_STR, &c.backend, 0, 0},
        {"--normalize", LOOM_TOOL_STR, &c.normalize, 0, 0},
        {"--checkpoint", LOOM_TOOL_STR, &checkpoint, 0, 0},
        {"--resume", LOOM_TOOL_FLAG, &resume, 0, 0},
        {"--limit", LOOM_TOOL_INT, &c.limit, 1, 1e12},
        {"--json", LOOM_TOOL_FLAG, &c.json, 0, 0},
    };
    int rc = loom_tool_parse(cmd, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, train_usage);
    if (rc >= 0) return rc;
    if (!c.model || !c.data) {
        fprintf(stderr, "%s: --model and --data are required (see %s --help)\n", cmd, cmd);
        return 2;
    }
    if (!loom_tool_choice(cmd, "--optimizer", optimizer, (const char *const[]){"adam", "adamw", "sgd", NULL}) ||
        !loom_tool_choice(cmd, "--model", c.model, loom_model_names()) ||
        (c.backend &&
         !loom_tool_choice(cmd, "--backend", c.backend, (const char *const[]){"auto", "onednn", "ref", NULL})))
        return 2;
    if (resume && !checkpoint) {
        fprintf(stderr, "%s: --resume needs --checkpoint FILE\n", cmd);
        return 2;
    }
    const char *world = getenv("OMPI_COMM_WORLD_SIZE");
    if (world && atoi(world) > 1) distributed = true; /* under mpirun: what was meant */
    if (distributed) {
        if (loom_dist_init(NULL, NULL, NULL, &c.dist) != LOOM_OK) return fail(cmd, "--distributed");
        if (c.batch % loom_dist_size(c.dist) != 0) {
            if (loom_dist_rank(c.dist) == 0)
                fprintf(stderr, "%s: --batch-size %ld (the global batch) must be a multiple of the %d ranks\n", cmd,
                        c.batch, loom_dist_size(c.dist));
            loom_dist_free(c.dist);
            return 2;
        }
    }
    const bool lead = loom_dist_rank(c.dist) == 0; /* prints and writes checkpoints */

    loom_dataset *train = NULL, *test = NULL;
    int status = 1;
    loom_ctx *ctx = NULL;
    loom_module *m = NULL;
    loom_optimizer *opt = NULL;
    loom_dataloader *dl = NULL;
    if (loom_mnist_load(c.data, true, &train) != LOOM_OK) {
        fail(cmd, "reading the training split");
        goto out;
    }
    if (loom_mnist_load(c.data, false, &test) != LOOM_OK) test = NULL; /* no test split: train only */
    if (!normalization(cmd, &c, train)) {
        status = 2;
        goto out;
    }
    ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = (int)c.threads, .seed = (uint64_t)seed, .backend = c.backend});
    m = ctx ? build_model(&c, ctx, train) : NULL;
    if (!m) {
        fail(cmd, "building the model");
        goto out;
    }
    if (c.dist && loom_dist_broadcast_module(c.dist, m) != LOOM_OK) { /* rank 0's weights everywhere */
        fail(cmd, "--distributed");
        goto out;
    }
    {
        int np = loom_module_parameters(m, NULL, NULL, 0);
        loom_tensor **params = malloc(sizeof *params * (size_t)(np ? np : 1));
        if (params) loom_module_parameters(m, params, NULL, np);
        if (params && !strcmp(optimizer, "sgd")) {
            loom_sgd_options so = {0};
            so.lr = lr >= 0 ? lr : 0.01;
            so.momentum = momentum;
            so.weight_decay = weight_decay >= 0 ? weight_decay : 0;
            opt = loom_sgd(ctx, np, params, &so);
        } else if (params) {
            bool w = !strcmp(optimizer, "adamw");
            loom_adam_options ao = w ? loom_adamw_defaults() : loom_adam_defaults();
            ao.lr = lr >= 0 ? lr : 1e-3;
            if (weight_decay >= 0) ao.weight_decay = weight_decay;
            opt = w ? loom_adamw(ctx, np, params, &ao) : loom_adam(ctx, np, params, &ao);
        }
        free(params);
    }
    if (!opt) {
        fail(cmd, "creating the optimizer");
        goto out;
    }
    int64_t done = 0;
    if (resume) {
        if (loom_checkpoint_load(checkpoint, m, opt, &done) != LOOM_OK) {
            fail(cmd, "resuming");
            goto out;
        }
    }
    loom_dataloader_options lo = loom_dataloader_defaults();
    lo.batch_size = c.batch / loom_dist_size(c.dist); /* this rank's share of the global batch */
    lo.num_replicas = loom_dist_size(c.dist);
    lo.rank = loom_dist_rank(c.dist);
    lo.shuffle = true;
    lo.seed = (uint64_t)seed;
    lo.normalize = true;
    lo.mean = c.mean;
    lo.std = c.std;
    if (loom_dataloader_create(ctx, train, &lo, &dl) != LOOM_OK) {
        fail(cmd, "creating the data loader");
        goto out;
    }
    const bool tty = lead && !c.json && isatty(STDERR_FILENO);
    if (!c.json && lead)
        printf("loom train: %s on %s (%lld training, %lld test images, %lldx%lld), %s, batch %ld, %d rank%s x %d "
               "threads, backend %s, normalize %.4f/%.4f%s\n",
               c.model, c.data, (long long)loom_dataset_size(train), (long long)loom_dataset_size(test),
               (long long)loom_dataset_rows(train), (long long)loom_dataset_cols(train), optimizer, c.batch,
               loom_dist_size(c.dist), loom_dist_size(c.dist) > 1 ? "s" : "", loom_ctx_num_threads(ctx),
               loom_ctx_backend(ctx), c.mean, c.std, resume ? ", resumed" : "");
    if (done >= epochs && !c.json && lead) printf("already trained %lld of %ld epochs\n", (long long)done, epochs);
    fflush(stdout);
    for (long e = (long)done + 1; e <= epochs; e++) {
        if (loom_dataloader_set_epoch(dl, e - 1) != LOOM_OK) {
            fail(cmd, "starting the epoch");
            goto out;
        }
        long nb = (long)loom_dataloader_num_batches(dl);
        if (c.limit && c.limit < nb) nb = c.limit;
        loom_module_train(m, true);
        double t0 = loom_tool_now(), last = 0, sum = 0;
        long images = 0, b = 0;
        loom_status st = LOOM_OK;
        while (b < nb && st == LOOM_OK) {
            loom_scope_begin(ctx);
            loom_tensor *x, *y;
            st = loom_dataloader_next(dl, &x, &y);
            double v = 0;
            if (st == LOOM_OK && x) {
                loom_optimizer_zero_grad(opt);
                loom_tensor *loss = loom_cross_entropy_loss(loom_module_forward(m, x), y, LOOM_REDUCTION_MEAN);
                st = c.dist ? loom_dist_backward(c.dist, m, loss) : loom_backward(loss, NULL, NULL);
                if (st == LOOM_OK) st = loom_optimizer_step(opt);
                if (st == LOOM_OK) st = loom_tensor_item(loss, &v);
                images += loom_tensor_size(x, 0);
            }
            loom_scope_end(ctx);
            if (!x) break;
            if (st == LOOM_OK && !isfinite(v)) {
                fprintf(stderr, "%s: epoch %ld, batch %ld: the loss is %g; lower --lr?\n", cmd, e, b + 1, v);
                goto out;
            }
            sum += v;
            b++;
            double t = loom_tool_now();
            if (tty && (t - last > 0.1 || b == nb)) {
                progress(e, epochs, b, nb, v, (double)images * loom_dist_size(c.dist) / (t - t0), t - t0);
                last = t;
            }
        }
        if (tty) fputc('\n', stderr);
        if (st != LOOM_OK) {
            fail(cmd, "training");
            goto out;
        }
        const double secs = loom_tool_now() - t0, ips = (double)images * loom_dist_size(c.dist) / secs;
        double train_loss = b ? sum / (double)b : 0;
        if (c.dist && loom_dist_allreduce_mean(c.dist, &train_loss, 1) != LOOM_OK) {
            fail(cmd, "--distributed");
            goto out;
        }
        double test_loss = 0;
        long correct = 0, total = 0;
        if (test && evaluate(&c, ctx, m, test, 1000, &test_loss, &correct, &total) != LOOM_OK) {
            fail(cmd, "testing");
            goto out;
        }
        /* Rank 0 writes (the replicas are identical); the others wait for
         * it, so that a resume never reads a half-done epoch. */
        if (checkpoint && lead && loom_checkpoint_save(checkpoint, m, opt, e) != LOOM_OK) {
            fail(cmd, "writing the checkpoint");
            goto out;
        }
        if (checkpoint && c.dist && loom_dist_barrier(c.dist) != LOOM_OK) {
            fail(cmd, "--distributed");
            goto out;
        }
        if (!lead) {
        } else if (c.json) {
            printf("{\"epoch\": %ld, \"epochs\": %ld, \"model\": \"%s\", \"train_loss\": %.6f, \"images_per_s\": %.1f, "
                   "\"seconds\": %.3f, \"threads\": %d, \"backend\": \"%s\"",
                   e, epochs, c.model, train_loss, ips, secs, loom_ctx_num_threads(ctx), loom_ctx_backend(ctx));
            if (total)
                printf(", \"test_loss\": %.6f, \"test_accuracy\": %.4f, \"test_images\": %ld", test_loss,
                       (double)correct / (double)total, total);
            if (c.dist) { /* rank 0's share of time in the gradient reductions, since the start */
                loom_dist_stats ds;
                loom_dist_get_stats(c.dist, &ds);
                printf(", \"ranks\": %d, \"comm_seconds\": %.3f, \"buckets\": %lld", loom_dist_size(c.dist),
                       ds.comm_seconds, (long long)ds.buckets);
            }
            printf("}\n");
        } else {
            printf("epoch %ld/%ld: train loss %.4f, %.0f img/s, %.1f s", e, epochs, train_loss, ips, secs);
            if (total)
                printf("; test loss %.4f, accuracy %.4f (%ld/%ld)", test_loss, (double)correct / (double)total, correct,
                       total);
            printf("%s\n", checkpoint ? "; checkpoint written" : "");
        }
        fflush(stdout);
    }
    status = 0;
out:
    if (status && c.dist) loom_dist_abort(c.dist, status); /* peers must not wait in a collective */
    loom_dataloader_free(dl);
    loom_optimizer_free(opt);
    loom_module_free(m);
    loom_ctx_free(ctx);
    loom_dataset_free(train);
    loom_dataset_free(test);
    loom_dist_free(c.dist);
    return status;
}

/* ---- loom eval ------------------------------------------------------------ */

static void eval_usage(FILE *f)
{
    fprintf(f, "usage: loom eval --model NAME --weights FILE --data DIR [options]\n"
               "Accuracy and mean cross-entropy loss of trained weights on an MNIST-format directory.\n"
               "  --model NAME        the model the weights belong to (as for loom train)\n"
               "  --weights FILE      a loom train checkpoint, a safetensors or a torch.save state dict\n"
               "  --data DIR          the dataset directory\n"
               "  --split S           test (default, the t10k files) or train\n"
               "  --batch-size N      images per forward (default 1000)\n"
               "  --normalize M,S     Normalize's mean and std (default: the training images', as loom train)\n"
               "  --threads N         compute threads\n"
               "  --backend B         auto (default), onednn or ref\n"
               "  --limit N           at most N batches\n"
               "  --json              one JSON object on stdout\n");
}

int loom_tool_eval(int argc, char **argv)
{
    const char *cmd = "loom eval";
    common c = {.batch = 1000};
    const char *weights = NULL, *split = "test";
    const loom_tool_opt opts[] = {
        {"--model", LOOM_TOOL_STR, &c.model, 0, 0},
        {"--weights", LOOM_TOOL_STR, &weights, 0, 0},
        {"--data", LOOM_TOOL_STR, &c.data, 0, 0},
        {"--split", LOOM_TOOL_STR, &split, 0, 0},
        {"--batch-size", LOOM_TOOL_INT, &c.batch, 1, 1 << 20},
        {"--normalize", LOOM_TOOL_STR, &c.normalize, 0, 0},
        {"--threads", LOOM_TOOL_INT, &c.threads, 1, 4096},
        {"--backend", LOOM_TOOL_STR, &c.backend, 0, 0},
        {"--limit", LOOM_TOOL_INT, &c.limit, 1, 1e12},
        {"--json", LOOM_TOOL_FLAG, &c.json, 0, 0},
    };
    int rc = loom_tool_parse(cmd, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, eval_usage);
    if (rc >= 0) return rc;
    if (!c.model || !weights || !c.data) {
        fprintf(stderr, "%s: --model, --weights and --data are required (see %s --help)\n", cmd, cmd);
        return 2;
    }
    if (!loom_tool_choice(cmd, "--split", split, (const char *const[]){"test", "train", NULL}) ||
        !loom_tool_choice(cmd, "--model", c.model, loom_model_names()) ||
        (c.backend &&
         !loom_tool_choice(cmd, "--backend", c.backend, (const char *const[]){"auto", "onednn", "ref", NULL})))
        return 2;
    const bool on_train = !strcmp(split, "train");
    loom_dataset *ds = NULL, *train = NULL;
    if (loom_mnist_load(c.data, on_train, &ds) != LOOM_OK) return fail(cmd, "reading the dataset");
    if (!c.normalize && !on_train && loom_mnist_load(c.data, true, &train) != LOOM_OK) {
        fprintf(stderr, "%s: the training split gives the normalization and cannot be read (%s); give --normalize\n",
                cmd, loom_last_error());
        loom_dataset_free(ds);
        return 1;
    }
    bool ok = normalization(cmd, &c, on_train ? ds : train);
    loom_dataset_free(train);
    if (!ok) {
        loom_dataset_free(ds);
        return 2;
    }
    int status = 1;
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = (int)c.threads, .backend = c.backend});
    loom_module *m = ctx ? build_model(&c, ctx, ds) : NULL;
    double loss = 0;
    long correct = 0, total = 0;
    if (!m) {
        fail(cmd, "building the model");
    } else if (loom_load_weights(m, weights) != LOOM_OK) {
        fail(cmd, "loading the weights");
    } else if (evaluate(&c, ctx, m, ds, c.batch, &loss, &correct, &total) != LOOM_OK) {
        fail(cmd, "evaluating");
    } else {
        const double acc = total ? (double)correct / (double)total : 0;
        if (c.json)
            printf("{\"model\": \"%s\", \"split\": \"%s\", \"images\": %ld, \"correct\": %ld, \"accuracy\": %.4f, "
                   "\"loss\": %.6f}\n",
                   c.model, split, total, correct, acc, loss);
        else
            printf("%s on %s (%s): accuracy %.4f (%ld/%ld), loss %.4f\n", c.model, c.data, split, acc, correct, total,
                   loss);
        status = 0;
    }
    loom_module_free(m);
    loom_ctx_free(ctx);
    loom_dataset_free(ds);
    return status;
}
