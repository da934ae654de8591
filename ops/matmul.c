/*
 * ops/matmul.c - torch.matmul semantics on float32.
 *
 * Every case is reduced to the kernel's one form, [..., M, K] x [..., K, N]
 * with equal batch dims: 1-D operands gain a dim (removed from the result
 * afterwards) and the batch dims are broadcast with expand views.
 */
#include <string.h>

#include "ops/ops_internal.h"

loom_tensor *loom_matmul(loom_tensor *a, loom_tensor *b)
{
    loom_tensor *in[2] = {a, b};
    if (!loom__check_inputs("matmul", 2, in)) return NULL;
    char s1[LOOM__SHAPE_STR_MAX], s2[LOOM__SHAPE_STR_MAX];
    if (a->ndim == 0 || b->ndim == 0) {
        loom__set_error(LOOM_ERR_SHAPE, "matmul: both inputs need at least 1 dim, got shapes %s and %s",
                        loom__shape_str(s1, sizeof s1, a), loom__shape_str(s2, sizeof s2, b));
        return NULL;
    }
    if (a->dtype != LOOM_FLOAT32 || b->dtype != LOOM_FLOAT32) {
        loom__set_error(LOOM_ERR_DTYPE, "matmul: expected float32 inputs, got %s and %s",
                        loom_dtype_name(a->dtype), loom_dtype_name(b->dtype));
        return NULL;
    }
    /* Matrix views of both operands. */
    int64_t as[LOOM_MAX_DIMS], bs[LOOM_MAX_DIMS];
    int an = a->ndim, bn = b->ndim;
    memcpy(as, a->shape, sizeof as);
    memcpy(bs, b->shape, sizeof bs);
    bool a_vec = an == 1, b_vec = bn == 1;
    if (a_vec) {
        as[1] = as[0];
        as[0] = 1;
        an = 2;
    }
    if (b_vec) {
        bs[1] = 1;
        bn = 2;
    }
    int64_t M = as[an - 2], K = as[an - 1], N = bs[bn - 1];
    if (bs[bn - 2] != K) {
        loom__set_error(LOOM_ERR_SHAPE, "matmul: shapes %s and %s do not match", loom__shape_str(s1, sizeof s1, a),
                        loom__shape_str(s2, sizeof s2, b));
        return NULL;
    }
    int nbatch;
    int64_t batch[LOOM_MAX_DIMS];
    if (loom__broadcast("matmul", an - 2, as, bn - 2, bs, &nbatch, batch) != LOOM_OK) return NULL;
    if (nbatch + 2 > LOOM_MAX_DIMS) {
        loom__set_error(LOOM_ERR_SHAPE, "matmul: result would have more than %d dims", LOOM_MAX_DIMS);
        return NULL;
    }
    int nd = nbatch + 2;
    int64_t ash[LOOM_MAX_DIMS], bsh[LOOM_MAX_DIMS], osh[LOOM_MAX_DIMS];
    memcpy(ash, batch, sizeof(int64_t) * (size_t)nbatch);
    memcpy(bsh, batch, sizeof(int64_t) * (size_t)nbatch);
    memcpy(osh, batch, sizeof(int64_t) * (size_t)nbatch);
    ash[nbatch] = M, ash[nbatch + 1] = K;
    bsh[nbatch] = K, bsh[nbatch + 1] = N;
    osh[nbatch] = M, osh[nbatch + 1] = N;

    loom_tensor *am = a_vec ? loom_unsqueeze(a, 0) : a;
    loom_tensor *bm = b_vec ? loom_unsqueeze(b, 1) : b;
    loom_tensor *ae = am && bm ? loom__expand_to(am, nd, ash) : NULL;
    loom_tensor *be = ae ? loom__expand_to(bm, nd, bsh) : NULL;
    loom_tensor *r = NULL;
    if (be) r = loom__record(LOOM_OP_MATMUL, NULL, 2, (loom_tensor *[]){ae, be}, LOOM_FLOAT32, nd, osh);
    loom__drop_temp(be, bm);
    loom__drop_temp(ae, am);
    loom__drop_temp(bm, b);
    loom__drop_temp(am, a);
    if (!r || (!a_vec && !b_vec)) return r;
    /* Remove the dims the 1-D operands gained. */
    int64_t fin[LOOM_MAX_DIMS];
    int k = 0;
    for (int d = 0; d < nbatch; d++) fin[k++] = batch[d];
    if (!a_vec) fin[k++] = M;
    if (!b_vec) fin[k++] = N;
    loom_tensor *out = loom_reshape(r, k, fin);
    loom__drop(r);
    return out;
}
