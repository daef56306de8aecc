/* The context's ORC LLJIT. Code arrives as object files built by our own TargetMachine
 * (compiler/target.c), so the JIT only links: no ThreadSafeContext, and the same object can
 * come from the disk cache. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>

#include "cpu.h"
#include "jit.h"

struct rt_jit {
  LLVMOrcLLJITRef jit;
  pthread_mutex_t lock; /* guards last_error */
  char last_error[512]; /* what ORC reported asynchronously, for the next failure message */
};

static void take_error(LLVMErrorRef err, kerr *e, const char *what) {
  char *msg = LLVMGetErrorMessage(err);
  kerr_set(e, KEOPS_ERROR_COMPILE, "%s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
}

/* ORC's default reporter prints to stderr; library code must not print. */
static void report(void *ctx, LLVMErrorRef err) {
  rt_jit *j = ctx;
  char *msg = LLVMGetErrorMessage(err);
  pthread_mutex_lock(&j->lock);
  snprintf(j->last_error, sizeof j->last_error, "%s", msg);
  pthread_mutex_unlock(&j->lock);
  LLVMDisposeErrorMessage(msg);
}

rt_jit *rt_jit_create(kerr *e) {
  kc_llvm_init();
  rt_jit *j = calloc(1, sizeof *j);
  if (!j) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory creating the JIT");
    return NULL;
  }
  pthread_mutex_init(&j->lock, NULL);
  LLVMErrorRef err = LLVMOrcCreateLLJIT(&j->jit, NULL);
  if (err) {
    take_error(err, e, "creating the LLVM JIT failed");
    pthread_mutex_destroy(&j->lock);
    free(j);
    return NULL;
  }
  LLVMOrcExecutionSessionSetErrorReporter(LLVMOrcLLJITGetExecutionSession(j->jit), report, j);
  /* LLVM may turn copy loops into memcpy/memset calls: resolve them in this process */
  LLVMOrcDefinitionGeneratorRef gen;
  err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j->jit),
                                                             NULL, NULL);
  if (err) {
    take_error(err, e, "creating the JIT's symbol generator failed");
    rt_jit_destroy(j);
    return NULL;
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->jit), gen);
  return j;
}

void rt_jit_destroy(rt_jit *j) {
  if (!j) return;
  if (j->jit) {
    LLVMErrorRef err = LLVMOrcDisposeLLJIT(j->jit);
    if (err) LLVMConsumeError(err);
  }
  pthread_mutex_destroy(&j->lock);
  free(j);
}

void *rt_jit_add_object(rt_jit *j, LLVMMemoryBufferRef obj, const char *symbol, kerr *e) {
  LLVMErrorRef err = LLVMOrcLLJITAddObjectFile(j->jit, LLVMOrcLLJITGetMainJITDylib(j->jit), obj);
  if (err) {
    take_error(err, e, "linking the kernel failed");
    return NULL;
  }
  return symbol ? rt_jit_lookup(j, symbol, e) : j;
}

void *rt_jit_lookup(rt_jit *j, const char *symbol, kerr *e) {
  LLVMOrcExecutorAddress addr = 0;
  LLVMErrorRef err = LLVMOrcLLJITLookup(j->jit, &addr, symbol);
  if (err) {
    pthread_mutex_lock(&j->lock);
    char extra[512];
    snprintf(extra, sizeof extra, "%s", j->last_error);
    pthread_mutex_unlock(&j->lock);
    char *msg = LLVMGetErrorMessage(err);
    kerr_set(e, KEOPS_ERROR_COMPILE, "looking up %s failed: %s%s%s", symbol, msg, *extra ? "; " : "", extra);
    LLVMDisposeErrorMessage(msg);
    return NULL;
  }
  return (void *)(uintptr_t)addr;
}
