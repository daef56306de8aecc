/* GPU code generation: the NVPTX kernel of a program and its PTX text (gpu.c). No CUDA
 * toolkit is involved: LLVM's NVPTX backend writes the PTX, the driver JIT-compiles it. */
#ifndef KEOPS_GPU_H
#define KEOPS_GPU_H

#include <llvm-c/Core.h>

#include "front.h"

#define GPU_MAX_BLOCK 256 /* threads per block: the kernel's launch bound */
#define GPU_MAX_HEAP 16384 /* bytes of K-min heap per thread (local memory) */

typedef struct gpu_target {
  char sm[16];  /* e.g. "sm_90" */
  char ptx[16]; /* PTX ISA feature, e.g. "+ptx85" */
} gpu_target;

/* The kernel ABI:
 *   void fname(i64 nrows, i64 j0, i64 j1, double *partial, T *arg_0 .. arg_{n-1}, out_0 [, out_1])
 * launched on ceil(nrows / blockDim.x) x nsplit blocks. Thread i = blockIdx.x * blockDim.x +
 * threadIdx.x reduces row i over the block's j-range: [j0, j1) split in gridDim.y equal
 * chunks. With partial == NULL (gridDim.y must be 1) it writes the row's outputs; otherwise
 * the row's red.c state (doubles) at partial + (blockIdx.y * nrows + i) * state. Dynamic
 * shared memory: blockDim.x * gpu_tile_width(p) elements of the dtype. */
LLVMModuleRef gpu_build(LLVMContextRef C, const fe_program *p, const gpu_target *t,
                        const char *fname, kerr *e);
int gpu_tile_width(const fe_program *p); /* j-variable values staged per j */
/* The PTX text of p's kernel (malloc'ed, caller frees), or NULL with e set. With ir set,
 * the LLVM IR instead (as generated). */
char *gpu_emit(const fe_program *p, const gpu_target *t, const char *fname, int ir, kerr *e);

#endif
