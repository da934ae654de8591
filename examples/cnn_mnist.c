/*
 * examples/cnn_mnist.c - Loom's main job: the seed's SimpleCNN trained on
 * Fashion-MNIST (or any MNIST-format directory), as PyTorch's MNIST example
 * trains it.
 *
 *     class SimpleCNN(nn.Module):
 *         conv1 = nn.Conv2d(1, 32, 3);  conv2 = nn.Conv2d(32, 64, 3)
 *         fc1 = nn.Linear(9216, 128);   fc2 = nn.Linear(128, 10)
 *         def forward(self, x):                       # x [N, 1, 28, 28]
 *             x = F.relu(self.conv1(x))               # [N, 32, 26, 26]
 *             x = F.max_pool2d(F.relu(self.conv2(x)), 2)   # [N, 64, 12, 12]
 *             x = F.relu(self.fc1(torch.flatten(x, 1)))    # [N, 128]
 *             return F.log_softmax(self.fc2(x), dim=1)     # [N, 10]
 *     optimizer = optim.Adam(model.parameters(), lr=1e-3); batch 64, NLL loss
 *
 *     $ ./examples/cnn_mnist
 *     Epoch 1 [938/938] loss 0.3012  2100 img/s  ETA 0:00
 *     Test set: Average loss: 0.2950, Accuracy: 8941/10000 (89%)
 *
 * Data: ToTensor + Normalize(0.2860, 0.3530) (Fashion-MNIST's training-set
 * statistics), shuffled with the seed each epoch; the test set in batches
 * of 1000. A progress bar on a terminal, plain lines otherwise, JSON lines
 * with --json. Exit status 0, 1 on a runtime failure, 2 on bad options.
 */
#include <errno.h>
#include <limits.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <loom/loom.h>

#define PROG "cnn_mnist"
#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"

/* ---- options ------------------------------------------------------------- */

typedef struct options {
    long epochs;
    long batch_size;
    double lr;
    uint64_t seed;
    int threads;
    const char *backend;
    const char *data;
    bool json;
    long limit;      /* train and test batches per epoch, 0 = all (for quick checks) */
    long test_batch; /* test batch size */
    const char *checkpoint; /* save the model's state here after each epoch */
    bool distributed; /* data-parallel over MPI ranks (loom/dist.h) */
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [options]\n"
            "Trains the SimpleCNN (conv 1->32, conv 32->64, max-pool, fc 9216->128, fc 128->10)\n"
            "with Adam and NLL loss on an MNIST-format dataset, testing after each epoch.\n"
            "  --data DIR        dataset directory (default " DEFAULT_DATA ")\n"
            "  --epochs N        epochs (default 1)\n"
            "  --batch-size B    training batch size (default 64)\n"
            "  --lr LR           Adam's learning rate (default 0.001)\n"
            "  --seed S          seed of the weights and the shuffle (default 1)\n"
            "  --threads T       compute threads (default: LOOM_NUM_THREADS, else every core)\n"
            "  --backend NAME    auto, onednn or ref (default: LOOM_BACKEND, else auto)\n"
            "  --limit N         only the first N training and N test batches (quick checks)\n"
            "  --test-batch-size B  test batch size (default 1000)\n"
            "  --checkpoint PATH save the model (safetensors, PyTorch's state_dict names)\n"
            "                    after each epoch, atomically\n"
            "  --json            print JSON lines instead of text\n"
            "  --distributed     train data-parallel over the MPI ranks (mpirun -np R %s\n"
            "                    --distributed; on by itself under mpirun with R > 1): --batch-size\n"
            "                    is the global batch, each rank takes its share of it\n"
            "  --help            print this and exit\n",
            PROG, PROG);
}

static bool parse_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max) return false;
    *out = (long)v;
    return true;
}

/* Returns 0 to go on, 1 after --help, 2 on a bad option (message printed). */
static int parse_options(int argc, char **argv, options *o)
{
    *o = (options){.epochs = 1, .batch_size = 64, .lr = 1e-3, .seed = 1, .data = DEFAULT_DATA, .test_batch = 1000};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(arg, "--json")) {
            o->json = true;
            continue;
        }
        if (!strcmp(arg, "--distributed")) {
            o->distributed = true;
            continue;
        }
        static const char *const names[] = {"--epochs",  "--batch-size", "--lr",   "--seed",
                                            "--threads", "--backend",    "--data", "--limit",
                                            "--test-batch-size", "--checkpoint"};
        int which = -1;
        const char *val = NULL;
        for (int k = 0; k < (int)(sizeof names / sizeof names[0]); k++) {
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
        long v = 0;
        bool ok = true;
        switch (which) {
        case 0: ok = parse_long(val, 1, 1000000, &o->epochs); break;
        case 1: ok = parse_long(val, 1, 1000000, &o->batch_size); break;
        case 2: {
            char *end;
            errno = 0;
            o->lr = strtod(val, &end);
            ok = !errno && !*end && *val && isfinite(o->lr) && o->lr > 0;
            break;
        }
        case 3:
            ok = parse_long(val, 0, LONG_MAX, &v);
            o->seed = (uint64_t)v;
            break;
        case 4:
            ok = parse_long(val, 1, 4096, &v);
            o->threads = (int)v;
            break;
        case 5: o->backend = val; break;
        case 6: o->data = val; break;
        case 7: ok = parse_long(val, 1, LONG_MAX, &o->limit); break;
        case 8: ok = parse_long(val, 1, 1000000, &o->test_batch); break;
        default: o->checkpoint = val; break;
        }
        if (!ok) {
            fprintf(stderr, "%s: bad value '%s' for %s (try --help)\n", PROG, val, names[which]);
            return 2;
        }
    }
    return 0;
}

/* ---- progress --------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void progress(const options *o, bool tty, long epoch, long batch, long nbatches, double loss, double ips,
                     double elapsed)
{
    double eta = batch > 0 ? elapsed / (double)batch * (double)(nbatches - batch) : 0.0;
    if (o->json) {
        printf("{\"event\": \"batch\", \"epoch\": %ld, \"batch\": %ld, \"batches\": %ld, \"loss\": %.6f, "
               "\"images_per_s\": %.1f}\n",
               epoch, batch, nbatches, loss, ips);
    } else if (tty) {
        int width = 24, filled = (int)((double)width * (double)batch / (double)nbatches);
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
        bar[width] = '\0';
        printf("\rEpoch %ld [%s] %ld/%ld  loss %.4f  %.0f img/s  ETA %d:%02d ", epoch, bar, batch, nbatches, loss, ips,
               (int)eta / 60, (int)eta % 60);
    } else {
        printf("Train Epoch: %ld [%ld/%ld (%.0f%%)]  Loss: %.6f  %.0f img/s\n", epoch, batch, nbatches,
               100.0 * (double)batch / (double)nbatches, loss, ips);
    }
    fflush(stdout);
}

/* ---- training and testing -------------------------------------------------------- */

typedef struct run {
    loom_ctx *ctx;
    loom_module *model;
    loom_optimizer *adam;
    loom_dist *dist; /* NULL: one process */
    bool lead;       /* prints and checkpoints: rank 0 */
} run;

/* One epoch over dl; returns the mean training loss in *mean_loss. */
static loom_status train_epoch(run *r, loom_dataloader *dl, const options *o, long epoch, bool tty,
                               double *mean_loss, double *ips_out)
{
    long nb = (long)loom_dataloader_num_batches(dl);
    if (o->limit && o->limit < nb) nb = o->limit;
    double t0 = now(), last = t0, sum = 0;
    long images = 0, b = 0;
    loom_module_train(r->model, true);
    loom_status st = LOOM_OK;
    while (b < nb) {
        loom_scope_begin(r->ctx);
        loom_tensor *x, *y;
        st = loom_dataloader_next(dl, &x, &y);
        if (st != LOOM_OK || !x) {
            loom_scope_end(r->ctx);
            break;
        }
        loom_optimizer_zero_grad(r->adam);
        loom_tensor *loss = loom_nll_loss(loom_module_forward(r->model, x), y, LOOM_REDUCTION_MEAN);
        double v = 0;
        st = r->dist ? loom_dist_backward(r->dist, r->model, loss) : loom_backward(loss, NULL, NULL);
        if (st == LOOM_OK) st = loom_optimizer_step(r->adam);
        if (st == LOOM_OK) st = loom_tensor_item(loss, &v);
        images += loom_tensor_size(x, 0);
        loom_scope_end(r->ctx);
        if (st != LOOM_OK) break;
        sum += v;
        b++;
        double t = now();
        bool report = o->json || !tty ? (b % 100 == 0 || b == nb) : (t - last > 0.1 || b == nb);
        if (report && r->lead) {
            progress(o, tty, epoch, b, nb, v, (double)images * loom_dist_size(r->dist) / (t - t0), t - t0);
            last = t;
        }
    }
    if (tty && !o->json && r->lead) printf("\n");
    *mean_loss = b ? sum / (double)b : 0.0;
    *ips_out = (double)images * loom_dist_size(r->dist) / (now() - t0); /* every rank's images */
    if (st == LOOM_OK && r->dist) st = loom_dist_allreduce_mean(r->dist, mean_loss, 1);
    return st;
}

/* Average NLL loss and correct predictions over the test set. */
static loom_status test(run *r, const loom_dataset *ds, const options *o, double *avg_loss, long *correct,
                        long *total)
{
    loom_dataloader_options lo = loom_dataloader_defaults();
    lo.batch_size = o->test_batch;
    const long limit = o->limit;
    lo.normalize = true;
    lo.mean = LOOM_FASHION_MNIST_MEAN;
    lo.std = LOOM_FASHION_MNIST_STD;
    lo.num_replicas = loom_dist_size(r->dist); /* each rank tests its shard */
    lo.rank = loom_dist_rank(r->dist);
    loom_dataloader *dl;
    loom_status st = loom_dataloader_create(r->ctx, ds, &lo, &dl);
    if (st != LOOM_OK) return st;
    loom_module_train(r->model, false);
    loom_no_grad_begin(r->ctx);
    double loss_sum = 0;
    *correct = 0;
    *total = 0;
    for (long b = 0; !limit || b < limit; b++) {
        loom_scope_begin(r->ctx);
        loom_tensor *x, *y;
        st = loom_dataloader_next(dl, &x, &y);
        if (st != LOOM_OK || !x) {
            loom_scope_end(r->ctx);
            break;
        }
        loom_tensor *out = loom_module_forward(r->model, x);
        loom_tensor *l = loom_nll_loss(out, y, LOOM_REDUCTION_SUM);
        loom_tensor *hits = loom_sum(loom_eq(loom_argmax(out, 1, false), y), 0, NULL, false);
        double lv = 0, hv = 0;
        st = loom_tensor_item(l, &lv);
        if (st == LOOM_OK) st = loom_tensor_item(hits, &hv);
        *total += (long)loom_tensor_size(x, 0);
        loom_scope_end(r->ctx);
        if (st != LOOM_OK) break;
        loss_sum += lv;
        *correct += (long)hv;
    }
    loom_no_grad_end(r->ctx);
    loom_dataloader_free(dl);
    if (st == LOOM_OK && r->dist) {
        /* The shards' sums (a mean over the ranks, times the ranks). */
        double sums[3] = {loss_sum, (double)*correct, (double)*total};
        st = loom_dist_allreduce_mean(r->dist, sums, 3);
        const int R = loom_dist_size(r->dist);
        loss_sum = sums[0] * R;
        *correct = (long)(sums[1] * R + 0.5); /* whole counts: round */
        *total = (long)(sums[2] * R + 0.5);
    }
    *avg_loss = *total ? loss_sum / (double)*total : 0.0;
    return st;
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse_options(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : 2;
    bool tty = isatty(STDOUT_FILENO);
    run r = {.lead = true};
    /* Under mpirun with several ranks, data parallelism is what was meant. */
    const char *world = getenv("OMPI_COMM_WORLD_SIZE");
    if (world && atoi(world) > 1) o.distributed = true;
    if (o.distributed) {
        if (loom_dist_init(&argc, &argv, NULL, &r.dist) != LOOM_OK) {
            fprintf(stderr, "%s: --distributed: %s\n", PROG, loom_last_error());
            return 1;
        }
        r.lead = loom_dist_rank(r.dist) == 0;
        if (o.batch_size % loom_dist_size(r.dist) != 0) {
            if (r.lead)
                fprintf(stderr, "%s: --batch-size %ld (the global batch) must be a multiple of the %d ranks\n", PROG,
                        o.batch_size, loom_dist_size(r.dist));
            loom_dist_free(r.dist);
            return 2;
        }
        if (!r.lead) o.json = false, tty = false;
    }

    loom_dataset *train = NULL, *testset = NULL;
    if (loom_mnist_load(o.data, true, &train) != LOOM_OK || loom_mnist_load(o.data, false, &testset) != LOOM_OK) {
        fprintf(stderr, "%s: %s\n", PROG, loom_last_error());
        if (!strcmp(o.data, DEFAULT_DATA))
            fprintf(stderr, "%s: install Debian's dataset-fashion-mnist, or give --data DIR\n", PROG);
        loom_dataset_free(train);
        if (r.dist) loom_dist_abort(r.dist, 1);
        return 1;
    }
    r.ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = o.threads, .seed = o.seed, .backend = o.backend});
    loom_dataloader *dl = NULL;
    if (r.ctx) r.model = loom_simple_cnn(r.ctx, NULL);
    if (r.model) {
        loom_tensor *params[8];
        int n = loom_module_parameters(r.model, params, NULL, 8);
        loom_adam_options ao = loom_adam_defaults();
        ao.lr = o.lr;
        r.adam = n == 8 ? loom_adam(r.ctx, n, params, &ao) : NULL;
        /* Every replica starts from rank 0's weights. */
        if (r.adam && r.dist && loom_dist_broadcast_module(r.dist, r.model) != LOOM_OK) {
            loom_optimizer_free(r.adam);
            r.adam = NULL;
        }
    }
    if (r.adam) {
        loom_dataloader_options lo = loom_dataloader_defaults();
        lo.batch_size = o.batch_size / loom_dist_size(r.dist); /* this rank's share of the global batch */
        lo.num_replicas = loom_dist_size(r.dist);
        lo.rank = loom_dist_rank(r.dist);
        lo.shuffle = true;
        lo.seed = o.seed;
        lo.normalize = true;
        lo.mean = LOOM_FASHION_MNIST_MEAN;
        lo.std = LOOM_FASHION_MNIST_STD;
        loom_dataloader_create(r.ctx, train, &lo, &dl);
    }
    if (!dl) {
        fprintf(stderr, "%s: setup failed: %s\n", PROG, loom_last_error());
        rc = 1;
        goto done;
    }
    if (!r.lead)
        ;
    else if (o.json)
        printf("{\"event\": \"start\", \"ranks\": %d, \"threads\": %d, \"backend\": \"%s\", \"train_images\": %" PRId64
               ", \"test_images\": %" PRId64 ", \"batch_size\": %ld}\n",
               loom_dist_size(r.dist), loom_ctx_num_threads(r.ctx), loom_ctx_backend(r.ctx), loom_dataset_size(train),
               loom_dataset_size(testset), o.batch_size);
    else
        printf("SimpleCNN on %s: %" PRId64 " training, %" PRId64 " test images; %d rank%s x %d threads, backend %s\n",
               o.data, loom_dataset_size(train), loom_dataset_size(testset), loom_dist_size(r.dist),
               loom_dist_size(r.dist) > 1 ? "s" : "", loom_ctx_num_threads(r.ctx), loom_ctx_backend(r.ctx));
    for (long e = 1; e <= o.epochs; e++) {
        double t0 = now(), train_loss, ips, test_loss;
        long correct, total;
        loom_status st = loom_dataloader_set_epoch(dl, e - 1);
        if (st == LOOM_OK) st = train_epoch(&r, dl, &o, e, tty, &train_loss, &ips);
        double train_s = now() - t0;
        if (st == LOOM_OK) st = test(&r, testset, &o, &test_loss, &correct, &total);
        if (st != LOOM_OK) {
            fprintf(stderr, "%s: epoch %ld failed: %s\n", PROG, e, loom_last_error());
            rc = 1;
            break;
        }
        double acc = total ? (double)correct / (double)total : 0.0;
        if (!r.lead)
            ;
        else if (o.json)
            printf("{\"event\": \"epoch\", \"epoch\": %ld, \"train_loss\": %.6f, \"train_seconds\": %.3f, "
                   "\"train_images_per_s\": %.1f, \"test_loss\": %.6f, \"test_correct\": %ld, \"test_total\": %ld, "
                   "\"test_accuracy\": %.4f}\n",
                   e, train_loss, train_s, ips, test_loss, correct, total, acc);
        else
            printf("Test set: Average loss: %.4f, Accuracy: %ld/%ld (%.0f%%)  [epoch %ld: %.1f s, %.0f img/s]\n",
                   test_loss, correct, total, 100.0 * acc, e, train_s, ips);
        fflush(stdout);
        if (o.checkpoint && r.lead && loom_module_save(r.model, o.checkpoint) != LOOM_OK) {
            fprintf(stderr, "%s: saving the checkpoint failed: %s\n", PROG, loom_last_error());
            rc = 1;
            break;
        }
    }
done:
    /* A failed rank cannot leave the others waiting in a collective. */
    if (rc && r.dist) loom_dist_abort(r.dist, rc);
    loom_dataloader_free(dl);
    loom_optimizer_free(r.adam);
    loom_module_free(r.model);
    loom_ctx_free(r.ctx);
    loom_dataset_free(train);
    loom_dataset_free(testset);
    loom_dist_free(r.dist);
    return rc;
}
