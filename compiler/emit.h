/* The one way every target turns a kernel module into code (emit.c): a fresh LLVM context
 * with our diagnostic handler, the builder, the verifier, the pass pipeline and emission, on
 * a compile thread with a large stack, under a guard that turns LLVM's fatal errors into
 * KEOPS_ERROR_COMPILE. Nothing LLVM reports reaches stderr or ends the process. */
#ifndef KEOPS_EMIT_H
#define KEOPS_EMIT_H

#include <stddef.h>

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "front.h"

typedef enum kc_out {
  KC_IR,     /* the module's text as built (verified, not optimised) */
  KC_IR_OPT, /* the module's text after the pipeline */
  KC_ASM,    /* assembly (PTX for NVPTX) */
  KC_OBJ     /* an object file */
} kc_out;

typedef struct kc_job kc_job;
/* Builds the job's module in C (the context is kc_compile's: the module must be made in it).
 * Returns the module or NULL with e set. */
typedef LLVMModuleRef (*kc_build_fn)(LLVMContextRef C, const kc_job *job, kerr *e);

struct kc_job {
  LLVMTargetMachineRef tm; /* sets the module's triple and data layout; not consumed */
  kc_build_fn build;
  const fe_program *p;     /* what build reads: the program, the target's description */
  const void *target;      /* (a kt_target, target.h) and the kernel's symbol name */
  const char *name;
  const char *pipeline;    /* new-pass-manager pipeline text (unused for KC_IR) */
  kc_out out;
  long max_insts;          /* > 0: more instructions after the pipeline are refused (code
                              generation time grows faster than linearly with them) */
};

/* Runs the job. Returns the output (malloc'ed, caller frees; text outputs NUL-terminated)
 * and its size in *len (without the NUL), or NULL with e set. A compile stopped by an LLVM
 * fatal error (a bug of ours or LLVM's, e.g. "Cannot select") returns KEOPS_ERROR_COMPILE
 * with LLVM's reason and abandons that compile's LLVM objects (they may be inconsistent, so
 * they are leaked, never freed). Thread-safe. */
char *kc_compile(const kc_job *job, size_t *len, kerr *e);

/* Initialises the LLVM targets (native and NVPTX) and installs the fatal-error guard, once
 * per process (thread-safe). LLVM has a single process-wide fatal-error handler: a host
 * program that installs its own after this replaces ours. */
void kc_llvm_init(void);

#endif
