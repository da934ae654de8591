/*
 * backends/ref/host.c - LOOM_OP_HOST_CALL: a host callback run as a node of
 * the DAG, so that work outside Loom's kernels (dist/'s gradient
 * all-reduce over MPI) is scheduled with the compute around it and counted
 * in the core budget (the node runs on one thread, holding one core).
 */
#include <string.h>

#include "backends/ref/ref.h"
#include "backends/registry.h"
#include "runtime/error.h"

loom_status loom__ref_host_call(const loom__kcall *call)
{
    const loom__tview *x = &call->in[0];
    const int64_t n = loom__tview_numel(x);
    float *out = call->out.data;
    /* x is contiguous (ops record it so); the copy keeps it intact, as
     * every node's inputs are. */
    if (out != x->data) memcpy(out, x->data, (size_t)n * sizeof(float));
    const loom__attrs *a = call->attrs;
    if (!a->host.fn) return loom__set_error(LOOM_ERR_STATE, "host_call: no function");
    return a->host.fn(a->host.user, out, n);
}
