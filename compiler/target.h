/* Code-generation targets. Each target is one table of hooks (a kt_isa, in the spirit of
 * QBE's Target): its triple, lane counts, math shortcuts, pass pipeline and kernel builder,
 * and, for targets that run one thread per output row, how a thread reads its indices,
 * waits at a barrier and finds its block's shared memory. A new target is a table in its own
 * file (x86.c: avx512 / avx2 / generic; nvptx.c: nvptx), plus a line in target.c's list
 * when the host may run it.
 *
 * Two kernel builders serve every target: cpu.c's loop nest with lanes across rows (cpu.h
 * gives its ABI) and gpu.c's kernel of one thread per row over shared-memory tiles (gpu.h).
 * kt_compile (target.c) is the one compile path: it checks the target, makes the target
 * machine and hands the target's builder and pipeline to kc_compile (emit.h). */
#ifndef KEOPS_TARGET_H
#define KEOPS_TARGET_H

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "emit.h"
#include "front.h"

typedef struct kt_target kt_target;
typedef struct kb kb; /* kgen.h: the kernel builder's state */

/* Index registers of a thread-per-row kernel, read as i32: threadIdx.x, blockDim.x,
 * blockIdx.x, blockIdx.y, gridDim.y. */
typedef enum kt_sreg { KT_TID_X, KT_NTID_X, KT_CTAID_X, KT_CTAID_Y, KT_NCTAID_Y } kt_sreg;

/* The hooks gpu.c builds its kernels with. */
typedef struct kt_grid {
  LLVMValueRef (*sreg)(kb *K, kt_sreg r);
  void (*barrier)(kb *K); /* every thread of the block, shared memory ordered */
  /* The block's dynamic shared memory as a pointer to elements of type t, made once per
   * kernel at the builder's position in its entry block (the pointer may be in another
   * address space than the arguments). */
  LLVMValueRef (*shared)(kb *K, LLVMTypeRef t);
  unsigned global_as; /* address space of the kernel's pointer arguments */
  /* Nonzero: every kernel takes one more pointer argument, last, that the hooks read their
   * thread's indices from (K->gstate; the emulator's kt_emu_thread, emu.h). */
  int thread_state;
  /* Makes fn, whose body is complete, a kernel entry point (calling convention, launch bound
   * GPU_MAX_BLOCK; the emulator's instrumentation and calling wrapper). */
  void (*entry)(kb *K, LLVMValueRef fn);
} kt_grid;

typedef struct kt_isa {
  const char *name;   /* "avx512", "avx2", "generic", "nvptx": what KEOPS_TARGET, tests and
                         keops-dump name */
  const char *triple; /* NULL: the host's */
  int w32, w64;       /* lanes of float32 / float64 vectors (1: scalar code) */
  int u;              /* row blocks held in registers */
  unsigned math;      /* vmath shortcuts the target allows (VM_MATH_*, vmath.h) */
  const char *pipeline; /* new-pass-manager pipeline text */
  LLVMRelocMode reloc;
  LLVMCodeModel code_model;
  /* Builds, in a new module of context C, the kernel `name` of p and its combine step. */
  LLVMModuleRef (*build)(LLVMContextRef C, const fe_program *p, const kt_target *t,
                         const char *name, kerr *e);
  const kt_grid *grid; /* thread-per-row targets (gpu.c's builder); NULL for cpu.c's */
  /* Function attributes of every function the builder defined (CPU and features at least). */
  void (*attrs)(LLVMModuleRef m, const kt_target *t, const fe_program *p);
  /* Nonzero when the host (triple, LLVM feature string) runs this target's code; NULL for
   * targets that are never the host. */
  int (*runs_on)(const char *triple, const char *features);
  /* The LLVM CPU and features of a forced (non-host) choice; NULL: the host's. */
  const char *cpu, *features;
  /* 0, or -1 with e set when this LLVM cannot generate code for t. NULL: always can. */
  int (*check)(const kt_target *t, kerr *e);
} kt_isa;

/* A chosen target: its table and the LLVM CPU name and features it compiles for. */
struct kt_target {
  const kt_isa *isa;
  char cpu[64];
  char features[2048];
};

extern const kt_isa kt_avx512, kt_avx2, kt_generic; /* x86.c */
extern const kt_isa kt_nvptx;                        /* nvptx.c */
extern const kt_isa kt_gpuemu;                       /* emu.c: nvptx's kernels on the host */

/* The host CPU's best target, or the one named by `name` ("host", or a CPU target's name;
 * NULL or "" = the KEOPS_TARGET environment variable, else host). A target the host cannot
 * run is KEOPS_ERROR_UNSUPPORTED, an unknown name KEOPS_ERROR_ARGUMENT. 0 or -1 with e set. */
int kt_pick(kt_target *t, const char *name, kerr *e);
/* t := isa for LLVM CPU `cpu` with `features` (e.g. kt_nvptx, "sm_90", "+ptx85"). */
void kt_set(kt_target *t, const kt_isa *isa, const char *cpu, const char *features);
/* Lanes of a vector of dtype dt. */
static inline int kt_lanes(const kt_target *t, keops_dtype dt) {
  return dt == KEOPS_FLOAT64 ? t->isa->w64 : t->isa->w32;
}

/* A target machine for t (caller disposes with LLVMDisposeTargetMachine), NULL with e set. */
LLVMTargetMachineRef kt_machine(const kt_target *t, kerr *e);
/* Compiles p for t: the kernel `name` and its combine step, as out (IR as built or
 * optimised, assembly or PTX, an object file). Returns the malloc'ed output (caller frees;
 * text NUL-terminated) and its size in *len, or NULL with e set. */
char *kt_compile(const fe_program *p, const kt_target *t, const char *name, kc_out out,
                 size_t *len, kerr *e);

#endif
