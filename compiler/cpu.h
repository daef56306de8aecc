/* CPU code generation: the kernel loop nest (cpu.c) and the target choice, target machine
 * and pipeline (target.c). */
#ifndef KEOPS_CPU_H
#define KEOPS_CPU_H

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "emit.h"
#include "front.h"

/* The kernel ABI, on every CPU target. Reduces output rows [i0, i1) over reduced indices
 * [j0, j1) (rows and indices in the program's orientation: rows are i for axis 1, j for
 * axis 0). args: the user's arrays by position. With partial == NULL the finalized rows are
 * written into outs; otherwise each row's state, in red.c's double layout (red_spec.state
 * doubles a row), is written to partial + (i - i0) * state, to be combined by the caller.
 * scratch: cpu_scratch_bytes(p, t, 0) bytes (64-byte aligned) of the caller's, one area per
 * concurrent call; NULL when that is 0. */
typedef void (*cpu_kernel_fn)(int64_t i0, int64_t i1, int64_t j0, int64_t j1,
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

typedef struct cpu_target {
  char name[16];      /* "avx512", "avx2", "generic": what tests and keops-dump name */
  char cpu[64];       /* LLVM CPU name */
  char features[2048];/* LLVM feature string */
  int w32, w64;       /* lanes of float32 / float64 vectors (1: scalar code) */
  int u;              /* row blocks held in registers */
} cpu_target;

/* The host CPU, or the target named by `name` ("host", "avx512", "avx2", "generic"; NULL
 * or "" = the KEOPS_TARGET environment variable, else host). A target the host cannot run
 * is an error (KEOPS_ERROR_UNSUPPORTED). Returns 0 or -1 with e set. */
int cpu_target_pick(cpu_target *t, const char *name, kerr *e);

/* Builds, in a new module of context C, the kernel function `fname` and its combine step
 * `fname`_combine for program p. Returns the module (caller disposes) or NULL with e set. */
LLVMModuleRef cpu_build(LLVMContextRef C, const fe_program *p, const cpu_target *t,
                        const char *fname, kerr *e);

/* Memory the kernel (combine = 0) or its combine step (1) needs beyond its stack: K-min
 * heaps and, with them, the row block's output buffers, whose size grows with K. 0 for
 * every other program. */
size_t cpu_scratch_bytes(const fe_program *p, const cpu_target *t, int combine);

/* A target machine for t (caller disposes with LLVMDisposeTargetMachine), NULL with e set. */
LLVMTargetMachineRef cpu_target_machine(const cpu_target *t, kerr *e);
/* Compiles p for t through kc_compile (emit.h): kernel `name` and `name`_combine as an
 * object file, assembly or IR. Returns the malloc'ed output (caller frees) and its size, or
 * NULL with e set. */
char *cpu_compile(const fe_program *p, const cpu_target *t, const char *name, kc_out out,
                  size_t *len, kerr *e);

#endif
