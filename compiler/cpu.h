/* The CPU kernel builder (cpu.c): a loop nest with lanes across rows, for every CPU target
 * (target.h; the x86 ones are in x86.c). */
#ifndef KEOPS_CPU_H
#define KEOPS_CPU_H

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "front.h"
#include "target.h"

/* The kernel ABI, on every CPU target. Reduces output rows [i0, i1) over the reduced indices
 * of the njr ranges [jr[2r], jr[2r + 1]), in order (rows and indices in the program's
 * orientation: rows are i for axis 1, j for axis 0). args: the user's arrays by position. With partial == NULL the finalized rows are
 * written into outs; otherwise each row's state, in red.c's double layout (red_spec.state
 * doubles a row), is written to partial + (i - i0) * state, to be combined by the caller.
 * scratch: cpu_scratch_bytes(p, t, 0) bytes (64-byte aligned) of the caller's, one area per
 * concurrent call; NULL when that is 0. */
typedef void (*cpu_kernel_fn)(int64_t i0, int64_t i1, const int64_t *jr, int64_t njr,
                              const void *const *args, void *const *outs, double *partial,
                              void *scratch);

/* The j-split's second step, the CPU twin of the GPU's keops_combine: for rows [r0, r1),
 * merges the row's nsplit partial states (partial + (t * nrows + row) * state, t in order)
 * and writes its outputs. scratch: cpu_scratch_bytes(p, t, 1) bytes, as for the kernel. */
typedef void (*cpu_combine_fn)(int64_t r0, int64_t r1, int64_t nrows, int64_t nsplit,
                               const double *partial, void *const *outs, void *scratch);

typedef struct cpu_code {
  cpu_kernel_fn kernel;   /* symbol NAME */
  cpu_combine_fn combine; /* symbol NAME_combine */
  size_t scratch, combine_scratch; /* cpu_scratch_bytes of each */
} cpu_code;

/* Builds, in a new module of context C, the kernel function `fname` and its combine step
 * `fname`_combine for program p. Returns the module (caller disposes) or NULL with e set. */
LLVMModuleRef cpu_build(LLVMContextRef C, const fe_program *p, const kt_target *t,
                        const char *fname, kerr *e);

/* Memory the kernel (combine = 0) or its combine step (1) needs beyond its stack: K-min
 * heaps and, with them, the row block's output buffers, whose size grows with K. 0 for
 * every other program. */
size_t cpu_scratch_bytes(const fe_program *p, const kt_target *t, int combine);

#endif
