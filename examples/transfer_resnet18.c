/*
 * examples/transfer_resnet18.c - transfer learning with ResNet-18, the
 * seed's last program (9.4.1 feature extraction, 9.4.2 fine-tuning), made
 * self-contained: no weights can be downloaded here, so the "pretrained"
 * network is trained first on some Fashion-MNIST classes, saved, and then
 * transferred to the held-out classes with a few labelled images each,
 * beside the same network trained from scratch on the same images.
 *
 *     model = torchvision.models.resnet18(); model.load_state_dict(torch.load(path))
 *     for p in model.parameters(): p.requires_grad = False
 *     model.fc = nn.Linear(model.fc.in_features, 5)      # the new task
 *     optimizer = optim.Adam(model.fc.parameters(), lr=1e-3)
 *
 *     $ ./examples/transfer_resnet18          # --unfreeze layer4: fine-tuning
 *     pretraining ResNet-18 on the old classes (T-shirt, Trouser, Sandal, Sneaker, Bag: 5000 images, 4 epochs)
 *     ...
 *     test accuracy on the 5000 test images of the new classes (10 labelled per class):
 *       transfer learning (feature extraction): ...
 *       from scratch:                           ...
 *
 * Steps:
 *   1. Pretrain ResNet-18 (5 outputs) on the "old" classes T-shirt,
 *      Trouser, Sandal, Sneaker and Bag (called 0-4 here),
 *      --pretrain-per-class images each, and save it (--checkpoint,
 *      safetensors). With --weights FILE this is skipped and FILE is used
 *      instead: a checkpoint of this program, or any ResNet-18 state dict
 *      such as torchvision's (.pth or safetensors; its fc may have any
 *      number of classes).
 *   2. Transfer to the "new" classes Pullover, Dress, Coat, Shirt and
 *      Ankle boot (5-9 here): load the weights, freeze every parameter (the
 *      frozen BatchNorms stay in evaluation mode), replace fc by
 *      Linear(512, 5), unfreeze --unfreeze PREFIX if given, and train what
 *      is trainable with Adam (batch 8) on --shots images per class for
 *      --epochs epochs.
 *   3. Train a fresh ResNet-18 on the same images, the same way.
 *   4. Test both on every test image of the new classes (5000).
 * What to expect (docs/models.md has the measurements): with 10 labels
 * per class, transfer wins; with 40, training from scratch catches up on
 * a dataset this easy.
 * Images are 28 x 28 grayscale, normalized and repeated over the three
 * input channels ResNet expects.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <loom/loom.h>

#define PROG "transfer_resnet18"
#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define MEAN 0.2860
#define STD 0.3530

typedef struct options {
    const char *data, *checkpoint, *weights, *unfreeze;
    long pretrain_per_class, pretrain_epochs, shots, epochs, test_per_class;
    int threads;
    uint64_t seed;
    double lr;
} options;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--data DIR] [--checkpoint PATH | --weights FILE] [--unfreeze PREFIX]\n"
            "       [--pretrain-per-class N] [--pretrain-epochs N] [--shots N] [--epochs N] [--threads T] [--seed S]\n"
            "Pretrains ResNet-18 on five Fashion-MNIST classes (T-shirt, Trouser, Sandal, Sneaker, Bag), then\n"
            "transfers it to the other five with a few labelled images per class, beside the same network\n"
            "trained from scratch on those images.\n"
            "  --data DIR               MNIST-format directory (default " DEFAULT_DATA ")\n"
            "  --checkpoint PATH        where to save the pretrained network (default transfer_pretrained.safetensors)\n"
            "  --weights FILE           skip pretraining: start from these ResNet-18 weights (.pth or safetensors)\n"
            "  --unfreeze PREFIX        also train the parameters under PREFIX (layer4: fine-tuning)\n"
            "  --pretrain-per-class N   pretraining images per class (default 1000)\n"
            "  --pretrain-epochs N      (default 4)\n"
            "  --shots N                labelled images per new class (default 10)\n"
            "  --epochs N               epochs on them, for both networks (default 15)\n"
            "  --test-per-class N       test on at most N images per class (default: all 1000)\n"
            "  --lr LR                  Adam's learning rate for the transfer and the scratch runs (default 1e-3)\n"
            "  --threads T, --seed S\n",
            PROG);
}

static int parse(int argc, char **argv, options *o)
{
    *o = (options){.data = DEFAULT_DATA,
                   .checkpoint = "transfer_pretrained.safetensors",
                   .pretrain_per_class = 1000,
                   .pretrain_epochs = 4,
                   .shots = 10,
                   .epochs = 15,
                   .lr = 1e-3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        }
        const char **str = !strcmp(a, "--data")         ? &o->data
                           : !strcmp(a, "--checkpoint") ? &o->checkpoint
                           : !strcmp(a, "--weights")    ? &o->weights
                           : !strcmp(a, "--unfreeze")   ? &o->unfreeze
                                                        : NULL;
        long *num = !strcmp(a, "--pretrain-per-class") ? &o->pretrain_per_class
                    : !strcmp(a, "--pretrain-epochs")  ? &o->pretrain_epochs
                    : !strcmp(a, "--shots")            ? &o->shots
                    : !strcmp(a, "--epochs")           ? &o->epochs
                    : !strcmp(a, "--test-per-class")   ? &o->test_per_class
                                                       : NULL;
        bool is_threads = !strcmp(a, "--threads"), is_seed = !strcmp(a, "--seed"), is_lr = !strcmp(a, "--lr");
        if (!str && !num && !is_threads && !is_seed && !is_lr) {
            fprintf(stderr, "%s: unknown option '%s' (try --help)\n", PROG, a);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "%s: %s needs a value\n", PROG, a);
            return 2;
        }
        i++;
        if (str) {
            *str = v;
            continue;
        }
        if (is_lr) {
            char *e;
            o->lr = strtod(v, &e);
            if (*e || !(o->lr > 0 && o->lr < 10)) {
                fprintf(stderr, "%s: --lr needs a positive number, got '%s'\n", PROG, v);
                return 2;
            }
            continue;
        }
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno || *end || n < (is_seed ? 0 : 1) || n > 1000000) {
            fprintf(stderr, "%s: %s needs a positive integer, got '%s'\n", PROG, a, v);
            return 2;
        }
        if (num) *num = (long)n;
        else if (is_threads) o->threads = (int)n;
        else o->seed = (uint64_t)n;
    }
    return 0;
}

/* The two tasks: Fashion-MNIST's classes split in two halves. */
static const int OLD_CLASSES[5] = {0, 1, 5, 7, 8}; /* T-shirt, Trouser, Sandal, Sneaker, Bag */
static const int NEW_CLASSES[5] = {2, 3, 4, 6, 9}; /* Pullover, Dress, Coat, Shirt, Ankle boot */

/* The images of ds whose labels are classes[0..4], at most per_class of
 * each (all if per_class <= 0), relabelled 0..4. */
static loom_status subset(const loom_dataset *ds, const int *classes, long per_class, loom_dataset **out)
{
    const int64_t n = loom_dataset_size(ds), px = loom_dataset_rows(ds) * loom_dataset_cols(ds);
    const uint8_t *pix = loom_dataset_pixels(ds), *lab = loom_dataset_labels(ds);
    uint8_t *p = malloc((size_t)(n * px)), *l = malloc((size_t)n);
    if (!p || !l) {
        free(p);
        free(l);
        return LOOM_ERR_NOMEM;
    }
    long count[5] = {0};
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        int c = -1;
        for (int k = 0; k < 5; k++)
            if (lab[i] == classes[k]) c = k;
        if (c < 0 || (per_class > 0 && count[c] >= per_class)) continue;
        count[c]++;
        memcpy(p + k * px, pix + i * px, (size_t)px);
        l[k++] = (uint8_t)c;
    }
    loom_status st = loom_dataset_from_arrays(k, loom_dataset_rows(ds), loom_dataset_cols(ds), p, l, 5, out);
    free(p);
    free(l);
    return st;
}

/* [B, 1, 28, 28] -> [B, 3, 28, 28]: the channel repeated (a view). */
static loom_tensor *three_channels(loom_tensor *x)
{
    return loom_expand(x, 4, (const int64_t[]){loom_tensor_size(x, 0), 3, loom_tensor_size(x, 2), loom_tensor_size(x, 3)});
}

/* epochs of Adam (lr 1e-3) on the trainable parameters of net, batch 32. */
static loom_status train(loom_ctx *ctx, loom_module *net, const loom_dataset *ds, long epochs, double lr,
                         int64_t batch, uint64_t seed, const char *label)
{
    loom_tensor *ps[128];
    int n = loom_module_trainable_parameters(net, ps, NULL, 128);
    if (n <= 0 || n > 128) return loom_last_status() != LOOM_OK ? loom_last_status() : LOOM_ERR_STATE;
    loom_adam_options ao = loom_adam_defaults();
    ao.lr = lr;
    loom_optimizer *opt = loom_adam(ctx, n, ps, &ao);
    loom_dataloader_options lo = loom_dataloader_defaults();
    lo.batch_size = batch;
    lo.shuffle = true;
    lo.seed = seed;
    lo.normalize = true;
    lo.mean = MEAN;
    lo.std = STD;
    loom_dataloader *dl = NULL;
    loom_status st = opt ? loom_dataloader_create(ctx, ds, &lo, &dl) : loom_last_status();
    loom_module_train(net, true);
    double t0 = now();
    for (long e = 0; e < epochs && st == LOOM_OK; e++) {
        double sum = 0;
        long batches = 0;
        st = loom_dataloader_set_epoch(dl, e);
        for (;;) {
            loom_scope_begin(ctx);
            loom_tensor *x, *y;
            st = st == LOOM_OK ? loom_dataloader_next(dl, &x, &y) : st;
            if (st != LOOM_OK || !x) {
                loom_scope_end(ctx);
                break;
            }
            loom_optimizer_zero_grad(opt);
            loom_tensor *loss = loom_cross_entropy_loss(loom_module_forward(net, three_channels(x)), y,
                                                        LOOM_REDUCTION_MEAN);
            double v = 0;
            if ((st = loom_backward(loss, NULL, NULL)) == LOOM_OK && (st = loom_optimizer_step(opt)) == LOOM_OK)
                st = loom_tensor_item(loss, &v);
            sum += v;
            batches++;
            loom_scope_end(ctx);
        }
        if (st == LOOM_OK)
            printf("  %s: epoch %ld/%ld, loss %.4f (%.0f s)\n", label, e + 1, epochs, sum / (double)batches,
                   now() - t0);
        fflush(stdout);
    }
    loom_dataloader_free(dl);
    loom_optimizer_free(opt);
    return st;
}

/* Accuracy of net (evaluation mode) on ds. */
static loom_status test(loom_ctx *ctx, loom_module *net, const loom_dataset *ds, double *acc)
{
    loom_dataloader_options lo = loom_dataloader_defaults();
    lo.batch_size = 500;
    lo.normalize = true;
    lo.mean = MEAN;
    lo.std = STD;
    loom_dataloader *dl = NULL;
    loom_status st = loom_dataloader_create(ctx, ds, &lo, &dl);
    loom_module_train(net, false);
    loom_no_grad_begin(ctx);
    double correct = 0;
    while (st == LOOM_OK) {
        loom_scope_begin(ctx);
        loom_tensor *x, *y;
        st = loom_dataloader_next(dl, &x, &y);
        if (st == LOOM_OK && x) {
            double a;
            st = loom_tensor_item(loom_accuracy(loom_module_forward(net, three_channels(x)), y), &a);
            correct += a * (double)loom_tensor_size(y, 0);
        }
        bool done = st != LOOM_OK || !x;
        loom_scope_end(ctx);
        if (done) break;
    }
    loom_no_grad_end(ctx);
    loom_dataloader_free(dl);
    *acc = correct / (double)loom_dataset_size(ds);
    return st;
}

/* The number of classes of the fc in a ResNet checkpoint (fc.weight's rows). */
static loom_status checkpoint_classes(loom_ctx *ctx, const char *path, int64_t *classes)
{
    FILE *f = fopen(path, "rb");
    unsigned char magic[4] = {0};
    if (f) {
        if (fread(magic, 1, 4, f) != 4) magic[0] = 0;
        fclose(f);
    }
    int n = 0;
    loom_tensor **ts = NULL;
    char **names = NULL;
    loom_scope_begin(ctx);
    bool zip = magic[0] == 'P' && magic[1] == 'K';
    loom_status st = zip ? loom_load_pth(ctx, path, &n, &ts, &names) : loom_load_safetensors(ctx, path, &n, &ts, &names);
    *classes = 0;
    for (int i = 0; st == LOOM_OK && i < n; i++)
        if (!strcmp(names[i], "fc.weight")) *classes = loom_tensor_size(ts[i], 0);
    if (st == LOOM_OK && !*classes) st = LOOM_ERR_FORMAT;
    loom_scope_end(ctx);
    free(ts);
    if (zip) loom_pth_free_names(names, n);
    else loom_safetensors_free_names(names, n);
    return st;
}

int main(int argc, char **argv)
{
    options o;
    int rc = parse(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : 2;
    loom_ctx *ctx = loom_ctx_create(&(loom_ctx_options){.num_threads = o.threads, .seed = o.seed});
    loom_dataset *train_all = NULL, *test_all = NULL, *pre = NULL, *pre_test = NULL, *shots = NULL, *new_test = NULL;
    loom_module *net = NULL, *scratch = NULL;
    const char *step = "loading the data";
    loom_status st = ctx ? loom_mnist_load(o.data, true, &train_all) : loom_last_status();
    if (st == LOOM_OK) st = loom_mnist_load(o.data, false, &test_all);
    if (st == LOOM_OK) st = subset(train_all, NEW_CLASSES, o.shots, &shots);
    if (st == LOOM_OK) st = subset(test_all, NEW_CLASSES, o.test_per_class, &new_test);
    const char *weights = o.weights ? o.weights : o.checkpoint;
    if (st == LOOM_OK && !o.weights) {
        step = "pretraining";
        st = subset(train_all, OLD_CLASSES, o.pretrain_per_class, &pre);
        if (st == LOOM_OK) st = subset(test_all, OLD_CLASSES, o.test_per_class, &pre_test);
        printf("pretraining ResNet-18 on the old classes (T-shirt, Trouser, Sandal, Sneaker, Bag: %lld images, %ld epochs)\n", (long long)loom_dataset_size(pre),
               o.pretrain_epochs);
        net = st == LOOM_OK ? loom_resnet(ctx, 18, &(loom_resnet_opts){.num_classes = 5}) : NULL;
        if (st == LOOM_OK && !net) st = loom_last_status();
        if (st == LOOM_OK) st = train(ctx, net, pre, o.pretrain_epochs, 1e-3, 32, o.seed, "pretrain");
        double acc = 0;
        if (st == LOOM_OK) st = test(ctx, net, pre_test, &acc);
        if (st == LOOM_OK) {
            printf("pretrained: accuracy %.4f on %lld test images of the old classes; saving %s\n", acc,
                   (long long)loom_dataset_size(pre_test), o.checkpoint);
            step = "saving the checkpoint";
            st = loom_module_save(net, o.checkpoint);
        }
        loom_module_free(net);
        net = NULL;
    }
    /* Transfer. */
    int64_t classes = 0;
    if (st == LOOM_OK) {
        step = "reading the weights";
        st = checkpoint_classes(ctx, weights, &classes);
    }
    if (st == LOOM_OK) {
        net = loom_resnet(ctx, 18, &(loom_resnet_opts){.num_classes = classes});
        st = net ? loom_module_load(net, weights, true) : loom_last_status();
    }
    double acc_transfer = 0, acc_scratch = 0;
    if (st == LOOM_OK) {
        step = "transfer";
        loom_module_freeze(net, NULL, true);
        st = loom_module_replace_child(net, "fc", loom_linear(ctx, 512, 5, true));
        if (st == LOOM_OK && o.unfreeze && loom_module_freeze(net, o.unfreeze, false) <= 0) {
            fprintf(stderr, "%s: --unfreeze %s names no parameter of ResNet-18 (layer4, layer3, ...)\n", PROG,
                    o.unfreeze);
            st = LOOM_ERR_INVALID_ARG;
        }
        printf("transfer: %s, new fc, %d trainable tensors; %lld images of the new classes (Pullover, Dress, Coat, Shirt, Ankle boot)\n",
               o.unfreeze ? "fine-tuning" : "frozen features", loom_module_trainable_parameters(net, NULL, NULL, 0),
               (long long)loom_dataset_size(shots));
        if (st == LOOM_OK) st = train(ctx, net, shots, o.epochs, o.lr, 8, o.seed + 1, "transfer");
        if (st == LOOM_OK) st = test(ctx, net, new_test, &acc_transfer);
    }
    if (st == LOOM_OK) {
        step = "training from scratch";
        printf("from scratch: the same ResNet-18, freshly initialised, on the same images\n");
        scratch = loom_resnet(ctx, 18, &(loom_resnet_opts){.num_classes = 5});
        st = scratch ? train(ctx, scratch, shots, o.epochs, o.lr, 8, o.seed + 1, "scratch") : loom_last_status();
        if (st == LOOM_OK) st = test(ctx, scratch, new_test, &acc_scratch);
    }
    if (st == LOOM_OK) {
        printf("\ntest accuracy on the %lld test images of the new classes (%ld labelled per class):\n",
               (long long)loom_dataset_size(new_test), o.shots);
        printf("  transfer learning (%s): %.4f\n", o.unfreeze ? "fine-tuning" : "feature extraction", acc_transfer);
        printf("  from scratch:                %.4f\n", acc_scratch);
        printf("  %s by %.1f points\n", acc_transfer > acc_scratch ? "transfer wins" : "scratch wins",
               100.0 * (acc_transfer > acc_scratch ? acc_transfer - acc_scratch : acc_scratch - acc_transfer));
    } else {
        fprintf(stderr, "%s: %s: %s\n", PROG, step, loom_last_error());
        if (step[0] == 'l' && !strcmp(step, "loading the data"))
            fprintf(stderr, "%s: install Debian's dataset-fashion-mnist, or give --data DIR\n", PROG);
    }
    loom_module_free(net);
    loom_module_free(scratch);
    loom_dataset_free(train_all);
    loom_dataset_free(test_all);
    loom_dataset_free(pre);
    loom_dataset_free(pre_test);
    loom_dataset_free(shots);
    loom_dataset_free(new_test);
    loom_ctx_free(ctx);
    return st == LOOM_OK ? 0 : 1;
}
