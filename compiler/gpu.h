/* The thread-per-row kernel builder (gpu.c), for every target with kt_grid hooks (target.h;
 * NVIDIA's is nvptx.c). */
#ifndef KEOPS_GPU_H
#define KEOPS_GPU_H

#include <llvm-c/Core.h>

#include "front.h"
#include "target.h"

#define GPU_MAX_BLOCK 256 /* threads per block: the kernel's launch bound */
#define GPU_MAX_HEAP 16384 /* bytes of K-min heap per thread (local memory) */
#define GPU_MAX_U 2        /* rows per thread, at most */
#define GPU_RANGES_SUFFIX "_ranges" /* the ranges kernel's name: the dense one's and this */

/* The kernel ABI:
 *   void fname(i64 nrows, i64 j0, i64 j1, i64 nslice, double *partial, T *arg_0 .. arg_{n-1},
 *              out_0 [, out_1])
 * launched on ceil(nrows / (R U)) x nsplit blocks of blockDim.x = R * nslice threads (nslice
 * a power of two dividing blockDim.x, U = gpu_rows_per_thread(p)). Thread tid = s * R + r
 * reduces rows i = blockIdx.x * R U + r + u R (u < U) over slice s of the block's j-range:
 * [j0, j1) is split in gridDim.y equal chunks, a block's chunk in nslice equal slices. The
 * slices' states merge in order through shared memory, in log2(nslice) steps; then, with
 * partial == NULL (gridDim.y must be 1), the rows' outputs are written, otherwise each row's
 * red.c state (doubles) at partial + (blockIdx.y * nrows + i) * state. Dynamic shared memory:
 * the larger of blockDim.x * p->red_width elements of the dtype (the tiles) and
 * (nslice - 1) * R * U * p->state doubles (the slices' states). The second kernel,
 *   void keops_combine(i64 nrows, i64 nsplit, double *partial, out_0 [, out_1])
 * merges each row's nsplit states in order and writes its outputs, one thread per row.
 * Block-sparse runs (fe_ranges) launch the third,
 *   void fname GPU_RANGES_SUFFIX (i64 nrows, const i64 *lookup, const i64 *jr, T *arg_0 ..
 *                                 arg_{n-1}, out_0 [, out_1])
 * on nlookup x 1 blocks of R threads (one slice, no j-split: the ranges cut the work, and
 * slices of a list of ranges would not stay balanced): block b reads its lookup entry
 * lookup[4b .. 4b+3] = (row start, row end, first range, end range), reduces rows
 * [row start, row end) (at most R U of them, all in one block of the ranges or all in no block)
 * over the j-ranges [jr[2q], jr[2q+1]) for q in [first range, end range), in order, and
 * writes their outputs; an empty list writes the reduction of nothing. Its shared memory is
 * the tiles'. It is the dense kernel's code with its own rows and a loop over the ranges around
 * the tile loop, a separate entry so that the dense kernel keeps its registers and loops. */
/* Float32 kernels flush denormals to zero (inputs, results, intermediates): the GPU's f32
 * units then run at full rate, as CUDA's fast math. Every thread-per-row target models it. */
static inline int gpu_ftz(const fe_program *p) { return p->dtype == KEOPS_FLOAT32; }

/* U, the rows each thread reduces (gpu_build's kernels and the launch agree through it): 2
 * share every tile load, the loop's counting and the j-level values (gauss3 float32: 10.25
 * -> 9.6 SASS instructions per pair with fast_math), at twice the registers of the state and
 * of the formula's row values: only for states of at most GPU_U2_STATE doubles and formulas
 * of kg_size at most GPU_U2_SIZE, never with K-min heaps (local memory). Else 1. */
#define GPU_U2_STATE 8
#define GPU_U2_SIZE 256
int gpu_rows_per_thread(const fe_program *p);
/* The pair loop's unroll factor: a power of two up to 8 whose unrolled body stays within
 * GPU_UNROLL_SIZE of kg_size (gauss3: 8, the seed formula 4, a 64-dim Gaussian 2), so the
 * loop's counting is shared by that many tile rows. */
#define GPU_UNROLL_SIZE 2048
int gpu_unroll(const fe_program *p);

LLVMModuleRef gpu_build(LLVMContextRef C, const fe_program *p, const kt_target *t,
                        const char *fname, kerr *e);

/* The pairs (i, j) one iteration of gpu_build's j loop evaluates: the j loop's unroll factor
 * times rows per thread (keops-bench divides the loop's SASS instructions by it). */
int gpu_pairs_per_iteration(const fe_program *p);

#endif
