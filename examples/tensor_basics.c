/*
 * examples/tensor_basics.c - the seed program: two vectors, their sum and
 * their elementwise product, printed as PyTorch prints them.
 *
 *     $ ./examples/tensor_basics
 *     Sum: tensor([5., 7., 9.])
 *     Product: tensor([ 4., 10., 18.])
 */
#include <stdio.h>
#include <stdlib.h>

#include <loom/loom.h>

/* Prints "label: tensor(...)" or the error that stopped it. */
static int show(const char *label, loom_tensor *t)
{
    char *s = loom_tensor_to_string(t); /* computes t; malloc'd string */
    if (!s) {
        fprintf(stderr, "tensor_basics: %s failed: %s\n", label, loom_last_error());
        return 1;
    }
    printf("%s: %s\n", label, s);
    free(s);
    return 0;
}

int main(void)
{
    loom_ctx *ctx = loom_ctx_create(NULL);
    if (!ctx) {
        fprintf(stderr, "tensor_basics: %s\n", loom_last_error());
        return 1;
    }
    /* The values are copied: the arrays may go out of scope. */
    loom_tensor *a = loom_tensor_from_array(ctx, LOOM_FLOAT32, (const float[]){1, 2, 3}, LOOM_SHAPE(3));
    loom_tensor *b = loom_tensor_from_array(ctx, LOOM_FLOAT32, (const float[]){4, 5, 6}, LOOM_SHAPE(3));

    /* Each op records a node of the graph; nothing runs until printing. */
    loom_tensor *sum = loom_add(a, b);
    loom_tensor *product = loom_mul(a, b);

    int rc = show("Sum", sum) | show("Product", product);
    loom_ctx_free(ctx); /* frees every tensor created above */
    return rc;
}
