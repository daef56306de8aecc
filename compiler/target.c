/* CPU targets: which one, its target machine, and its compile (see cpu.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Target.h>

#include "cpu.h"
#include "kgen.h"

static int has_feature(const char *features, const char *f) {
  size_t n = strlen(f);
  for (const char *s = features; (s = strstr(s, f)); s += n)
    if ((s == features || s[-1] == ',') && (s[n] == ',' || s[n] == 0)) return 1;
  return 0;
}

static void set(cpu_target *t, const char *name, const char *cpu, const char *features, int w32) {
  snprintf(t->name, sizeof t->name, "%s", name);
  snprintf(t->cpu, sizeof t->cpu, "%s", cpu);
  snprintf(t->features, sizeof t->features, "%s", features);
  t->w32 = w32;
  t->w64 = w32 > 1 ? w32 / 2 : 1;
  t->u = 2; /* 1 to 4 measured equal on gauss3: the kernel is bound by arithmetic */
}

int cpu_target_pick(cpu_target *t, const char *name, kerr *e) {
  kc_llvm_init();
  if (!name || !*name) name = getenv("KEOPS_TARGET");
  if (!name || !*name) name = "host";
  char *hcpu = LLVMGetHostCPUName(), *hfeat = LLVMGetHostCPUFeatures();
  int avx512 = has_feature(hfeat, "+avx512f"), avx2 = has_feature(hfeat, "+avx2") && has_feature(hfeat, "+fma");
  int rc = 0;
  if (!strcmp(name, "host")) {
    set(t, avx512 ? "avx512" : avx2 ? "avx2" : "generic", hcpu, hfeat, avx512 ? 16 : avx2 ? 8 : 1);
  } else if (!strcmp(name, "avx512") && avx512) {
    set(t, "avx512", hcpu, hfeat, 16);
  } else if (!strcmp(name, "avx2") && avx2) {
    set(t, "avx2", "haswell", "", 8); /* what an AVX2 machine without AVX-512 runs */
  } else if (!strcmp(name, "generic")) {
    set(t, "generic", "x86-64", "", 1);
  } else {
    int known = !strcmp(name, "avx512") || !strcmp(name, "avx2");
    kerr_set(e, known ? KEOPS_ERROR_UNSUPPORTED : KEOPS_ERROR_ARGUMENT,
             known ? "target '%s' is not supported by this CPU (%s)"
                   : "unknown target '%s' (expected host, avx512, avx2 or generic; CPU %s)",
             name, hcpu);
    rc = -1;
  }
  LLVMDisposeMessage(hcpu);
  LLVMDisposeMessage(hfeat);
  return rc;
}

LLVMTargetMachineRef cpu_target_machine(const cpu_target *t, kerr *e) {
  kc_llvm_init();
  char *triple = LLVMGetDefaultTargetTriple(), *msg = NULL;
  LLVMTargetRef target;
  LLVMTargetMachineRef tm = NULL;
  if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
    kerr_set(e, KEOPS_ERROR_COMPILE, "no LLVM target for %s: %s", triple, msg ? msg : "");
  } else {
    tm = LLVMCreateTargetMachine(target, triple, t->cpu, t->features, LLVMCodeGenLevelAggressive,
                                 LLVMRelocPIC, LLVMCodeModelJITDefault);
    if (!tm) kerr_set(e, KEOPS_ERROR_COMPILE, "LLVM could not create a target machine for %s", t->cpu);
  }
  LLVMDisposeMessage(msg);
  LLVMDisposeMessage(triple);
  return tm;
}

static LLVMModuleRef build(LLVMContextRef C, const kc_job *j, kerr *e) {
  return cpu_build(C, j->p, j->target, j->name, e);
}

char *cpu_compile(const fe_program *p, const cpu_target *t, const char *name, kc_out out,
                  size_t *len, kerr *e) {
  LLVMTargetMachineRef tm = cpu_target_machine(t, e);
  if (!tm) return NULL;
  /* Our IR is already vectorized, hoisted and unrolled by construction: it needs its allocas
   * promoted, vmath inlined and local clean-up, not the whole O2 pipeline (which costs 2-3x
   * the compile time for the same kernel speed, measured with keops-bench). instcombine's
   * fixpoint check is off: LLVM 19 exits the process when a second iteration would still
   * change something (Sin(ReLU(-x))), which is no error of the code. */
  kc_job j = {tm, build, p, t, name,
              "always-inline,function(sroa,early-cse<memssa>,instcombine<no-verify-fixpoint>,simplifycfg)",
              out, KG_MAX_INSTS};
  char *code = kc_compile(&j, len, e);
  LLVMDisposeTargetMachine(tm);
  return code;
}
