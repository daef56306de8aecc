/* kc_compile: context, builder, verifier, pipeline and emission for every target (emit.h).
 *
 * LLVM reports some failures by calling its fatal-error handler and then exit(1): an
 * instruction selection that fails ("Cannot select"), a pass that asserts its own
 * invariants. Our handler longjmps back to the compile that was running on this thread, so
 * such a failure is a KEOPS_ERROR_COMPILE; the LLVM objects of that compile are abandoned
 * (destructors of the frames skipped over never ran, so freeing them could touch broken
 * state). The compile runs on its own thread with a large stack because LLVM's analyses
 * recurse along use chains, and a caller's thread (a pool worker, a fiber) may have little. */
#include "emit.h"
#include "kgen.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/ErrorHandling.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

/* 64 MiB of address space, touched only as deep as a compile goes (a 2000-level formula
 * uses a few MiB in LLVM's recursive analyses). */
#define KC_STACK ((size_t)64 << 20)

typedef struct kc_guard {
  jmp_buf jb;
  char reason[1024];
} kc_guard;

static _Thread_local kc_guard *guard;

static void on_fatal(const char *reason) {
  kc_guard *g = guard;
  if (g) {
    guard = NULL;
    snprintf(g->reason, sizeof g->reason, "%s", reason ? reason : "(no reason given)");
    longjmp(g->jb, 1);
  }
  /* not one of our compiles: another LLVM user of this process; LLVM exits after we return,
   * and this is the message it would have printed itself */
  fprintf(stderr, "LLVM ERROR: %s\n", reason ? reason : "");
}

static void llvm_init(void) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  LLVMInitializeNativeAsmParser();
  LLVMInitializeNVPTXTargetInfo();
  LLVMInitializeNVPTXTarget();
  LLVMInitializeNVPTXTargetMC();
  LLVMInitializeNVPTXAsmPrinter();
  LLVMInstallFatalErrorHandler(on_fatal);
}

void kc_llvm_init(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, llvm_init);
}

static void diagnostic(LLVMDiagnosticInfoRef di, void *ctx) {
  /* warnings and remarks are dropped; an error becomes the compile's message (without a
   * handler, LLVM would print it and exit) */
  if (LLVMGetDiagInfoSeverity(di) != LLVMDSError) return;
  char *msg = LLVMGetDiagInfoDescription(di);
  kerr_set(ctx, KEOPS_ERROR_COMPILE, "LLVM: %s", msg);
  LLVMDisposeMessage(msg);
}

static char *copy_out(const char *s, size_t n, size_t *len, kerr *e) {
  char *out = malloc(n + 1);
  if (!out) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory for the compiled code (%zu bytes)", n);
    return NULL;
  }
  memcpy(out, s, n);
  out[n] = 0;
  *len = n;
  return out;
}

static char *module_text(LLVMModuleRef m, size_t *len, kerr *e) {
  char *s = LLVMPrintModuleToString(m);
  char *out = copy_out(s, strlen(s), len, e);
  LLVMDisposeMessage(s);
  return out;
}

static int optimize(LLVMModuleRef m, const kc_job *j, kerr *e) {
  LLVMPassBuilderOptionsRef o = LLVMCreatePassBuilderOptions();
  LLVMErrorRef err = LLVMRunPasses(m, j->pipeline, j->tm, o);
  LLVMDisposePassBuilderOptions(o);
  if (!err) return 0;
  char *msg = LLVMGetErrorMessage(err);
  kerr_set(e, KEOPS_ERROR_COMPILE, "LLVM optimisation failed: %s", msg);
  LLVMDisposeErrorMessage(msg);
  return -1;
}

static long count_insts(LLVMModuleRef m) {
  long n = 0;
  for (LLVMValueRef f = LLVMGetFirstFunction(m); f; f = LLVMGetNextFunction(f))
    for (LLVMBasicBlockRef b = LLVMGetFirstBasicBlock(f); b; b = LLVMGetNextBasicBlock(b))
      for (LLVMValueRef i = LLVMGetFirstInstruction(b); i; i = LLVMGetNextInstruction(i)) n++;
  return n;
}

static char *emit(LLVMModuleRef m, const kc_job *j, size_t *len, kerr *e) {
  char *msg = NULL, *out = NULL;
  LLVMMemoryBufferRef buf = NULL;
  LLVMCodeGenFileType kind = j->out == KC_OBJ ? LLVMObjectFile : LLVMAssemblyFile;
  if (LLVMTargetMachineEmitToMemoryBuffer(j->tm, m, kind, &msg, &buf)) {
    kerr_set(e, KEOPS_ERROR_COMPILE, "LLVM code generation failed: %s", msg ? msg : "");
  } else {
    out = copy_out(LLVMGetBufferStart(buf), LLVMGetBufferSize(buf), len, e);
    LLVMDisposeMemoryBuffer(buf);
  }
  LLVMDisposeMessage(msg);
  return out;
}

/* Everything that touches LLVM objects of this compile; any step may end in on_fatal. */
static char *compile(const kc_job *j, LLVMContextRef C, LLVMModuleRef *mp, size_t *len, kerr *e) {
  if (j->p && kg_check_size(j->p, e)) return NULL; /* every target: bounded compile time */
  LLVMContextSetDiagnosticHandler(C, diagnostic, e);
  LLVMModuleRef m = *mp = j->build(C, j, e);
  if (!m || e->status != KEOPS_OK) return NULL;
  char *triple = LLVMGetTargetMachineTriple(j->tm), *msg = NULL;
  LLVMSetTarget(m, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(j->tm);
  LLVMSetModuleDataLayout(m, dl);
  LLVMDisposeTargetData(dl);
  /* invalid IR is our bug; the pipeline and code generation assume valid IR and may crash */
  if (LLVMVerifyModule(m, LLVMReturnStatusAction, &msg)) {
    kerr_set(e, KEOPS_ERROR_COMPILE, "internal error: invalid kernel IR: %.2000s", msg ? msg : "");
    LLVMDisposeMessage(msg);
    return NULL;
  }
  LLVMDisposeMessage(msg);
  if (j->out == KC_IR) return module_text(m, len, e);
  if (optimize(m, j, e)) return NULL;
  if (j->out == KC_IR_OPT) return module_text(m, len, e);
  long n = j->max_insts > 0 ? count_insts(m) : 0;
  if (n > j->max_insts && j->max_insts > 0) {
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED,
             "the formula is too large for the JIT: its kernel has %ld LLVM instructions after "
             "optimisation where the limit is %ld; split it into several kernels (the REFERENCE "
             "backend runs it)", n, j->max_insts);
    return NULL;
  }
  return emit(m, j, len, e);
}

typedef struct kc_run {
  const kc_job *job;
  size_t *len;
  kerr *e;
  char *out;
} kc_run;

static void *run(void *arg) {
  kc_run *r = arg;
  kc_guard g;
  if (setjmp(g.jb)) { /* from on_fatal; this compile's context and module are abandoned */
    kerr_set(r->e, KEOPS_ERROR_COMPILE, "LLVM failed on this kernel (fatal error: %s)", g.reason);
    r->out = NULL;
    return NULL;
  }
  guard = &g;
  LLVMContextRef C = LLVMContextCreate();
  LLVMModuleRef m = NULL;
  r->out = compile(r->job, C, &m, r->len, r->e);
  guard = NULL;
  if (!r->out && r->e->status == KEOPS_OK) kerr_set(r->e, KEOPS_ERROR_COMPILE, "LLVM produced no code");
  if (m) LLVMDisposeModule(m);
  LLVMContextDispose(C);
  return NULL;
}

char *kc_compile(const kc_job *job, size_t *len, kerr *e) {
  kc_llvm_init();
  kc_run r = {job, len, e, NULL};
  pthread_attr_t a;
  pthread_t t;
  int started = 0;
  if (!pthread_attr_init(&a)) {
    started = !pthread_attr_setstacksize(&a, KC_STACK) && !pthread_create(&t, &a, run, &r);
    pthread_attr_destroy(&a);
  }
  if (started) pthread_join(t, NULL);
  else run(&r); /* no thread to be had (resource limits): the caller's stack must do */
  return r.out;
}
