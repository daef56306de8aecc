/* Choosing a target, its target machine and the one compile path (see target.h). */
#include "target.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Target.h>

#include "kgen.h"

/* The CPU targets in the host's order of preference: the first that runs on the host is
 * "host". A new CPU target is a line here plus its file. */
static const kt_isa *const cpu_isas[] = {&kt_avx512, &kt_avx2, &kt_generic};
enum { N_CPU = sizeof cpu_isas / sizeof *cpu_isas };

void kt_set(kt_target *t, const kt_isa *isa, const char *cpu, const char *features) {
  t->isa = isa;
  snprintf(t->cpu, sizeof t->cpu, "%s", cpu);
  snprintf(t->features, sizeof t->features, "%s", features);
}

int kt_pick(kt_target *t, const char *name, kerr *e) {
  kc_llvm_init();
  if (!name || !*name) name = getenv("KEOPS_TARGET");
  if (!name || !*name) name = "host";
  char *triple = LLVMGetDefaultTargetTriple();
  char *hcpu = LLVMGetHostCPUName(), *hfeat = LLVMGetHostCPUFeatures();
  int host = !strcmp(name, "host"), rc = -1;
  const kt_isa *known = NULL;
  for (int q = 0; q < N_CPU && rc; q++) {
    const kt_isa *isa = cpu_isas[q];
    if (!host && strcmp(name, isa->name)) continue;
    known = isa;
    if (!isa->runs_on(triple, hfeat)) continue;
    /* the host's best target compiles for the host CPU itself */
    kt_set(t, isa, host || !isa->cpu ? hcpu : isa->cpu, host || !isa->features ? hfeat : isa->features);
    rc = 0;
  }
  if (rc && known && !host)
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED, "target '%s' is not supported by this CPU (%s)", name, hcpu);
  else if (rc && !host) {
    char names[128] = "host";
    for (int q = 0; q < N_CPU; q++)
      snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", q == N_CPU - 1 ? " or " : ", ",
               cpu_isas[q]->name);
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "unknown target '%s' (expected %s; CPU %s)", name, names, hcpu);
  } else if (rc)
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED, "no CPU target of keops runs on %s (%s)", triple, hcpu);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(hcpu);
  LLVMDisposeMessage(hfeat);
  return rc;
}

LLVMTargetMachineRef kt_machine(const kt_target *t, kerr *e) {
  kc_llvm_init();
  const kt_isa *isa = t->isa;
  if (isa->check && isa->check(t, e)) return NULL;
  char *triple = isa->triple ? NULL : LLVMGetDefaultTargetTriple(), *msg = NULL;
  const char *tr = isa->triple ? isa->triple : triple;
  LLVMTargetRef target;
  LLVMTargetMachineRef tm = NULL;
  if (LLVMGetTargetFromTriple(tr, &target, &msg)) {
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED, "this LLVM has no target for %s: %s", tr, msg ? msg : "");
  } else {
    tm = LLVMCreateTargetMachine(target, tr, t->cpu, t->features, LLVMCodeGenLevelAggressive,
                                 isa->reloc, isa->code_model);
    if (!tm)
      kerr_set(e, KEOPS_ERROR_UNSUPPORTED, "LLVM cannot target %s with %s (%s)", t->cpu, t->features, tr);
  }
  LLVMDisposeMessage(msg);
  if (triple) LLVMDisposeMessage(triple);
  return tm;
}

static LLVMModuleRef build(LLVMContextRef C, const kc_job *j, kerr *e) {
  const kt_target *t = j->target;
  LLVMModuleRef m = t->isa->build(C, j->p, t, j->name, e);
  if (m) t->isa->attrs(m, t, j->p);
  return m;
}

char *kt_compile(const fe_program *p, const kt_target *t, const char *name, kc_out out,
                 size_t *len, kerr *e) {
  LLVMTargetMachineRef tm = kt_machine(t, e);
  if (!tm) return NULL;
  kc_job j = {tm, build, p, t, name, t->isa->pipeline, out, KG_MAX_INSTS};
  char *code = kc_compile(&j, len, e);
  LLVMDisposeTargetMachine(tm);
  return code;
}
