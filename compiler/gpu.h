/* The thread-per-row kernel builder (gpu.c), for every target with kt_grid hooks (target.h;
 * NVIDIA's is nvptx.c). */
#ifndef KEOPS_GPU_H
#define KEOPS_GPU_H

#include <llvm-c/Core.h>

#include "front.h"
#include "target.h"

#define GPU_MAX_BLOCK 256 /* threads per block: the kernel's launch bound */
#define GPU_MAX_HEAP 16384 /* bytes of K-min heap per thread (local memory) */

/* The kernel ABI:
 *   void fname(i64 nrows, i64 j0, i64 j1, double *partial, T *arg_0 .. arg_{n-1}, out_0 [, out_1])
 * launched on ceil(nrows / blockDim.x) x nsplit blocks. Thread i = blockIdx.x * blockDim.x +
 * threadIdx.x reduces row i over the block's j-range: [j0, j1) split in gridDim.y equal
 * chunks. With partial == NULL (gridDim.y must be 1) it writes the row's outputs; otherwise
 * the row's red.c state (doubles) at partial + (blockIdx.y * nrows + i) * state. Dynamic
 * shared memory: blockDim.x * p->red_width elements of the dtype. The second kernel,
 *   void keops_combine(i64 nrows, i64 nsplit, double *partial, out_0 [, out_1])
 * merges each row's nsplit states in order and writes its outputs, one thread per row. */
/* Float32 kernels flush denormals to zero (inputs, results, intermediates): the GPU's f32
 * units then run at full rate, as CUDA's fast math. Every thread-per-row target models it. */
static inline int gpu_ftz(const fe_program *p) { return p->dtype == KEOPS_FLOAT32; }

LLVMModuleRef gpu_build(LLVMContextRef C, const fe_program *p, const kt_target *t,
                        const char *fname, kerr *e);

#endif
