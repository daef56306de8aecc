/* x86-64 CPU targets, in the host's order of preference: AVX-512 (16 float32 lanes, and
 * vscalef for exp), AVX2 + FMA (8 lanes) and generic x86-64 (scalar code). The kernel is
 * cpu.c's loop nest. */
#include <string.h>

#include "cpu.h"
#include "kgen.h"
#include "target.h"
#include "vmath.h"

static int has_feature(const char *features, const char *f) {
  size_t n = strlen(f);
  for (const char *s = features; (s = strstr(s, f)); s += n)
    if ((s == features || s[-1] == ',') && (s[n] == ',' || s[n] == 0)) return 1;
  return 0;
}

static int runs_generic(const char *triple, const char *f) {
  (void)f;
  return !strncmp(triple, "x86_64", 6);
}
static int runs_avx512(const char *triple, const char *f) {
  return runs_generic(triple, f) && has_feature(f, "+avx512f");
}
static int runs_avx2(const char *triple, const char *f) {
  return runs_generic(triple, f) && has_feature(f, "+avx2") && has_feature(f, "+fma");
}

static void attrs(LLVMModuleRef m, const kt_target *t, const fe_program *p) {
  (void)p;
  kg_target_attrs(m, t->cpu, t->features, NULL, NULL);
}

/* Our IR is already vectorized, hoisted and unrolled by construction: it needs its allocas
 * promoted, vmath inlined and local clean-up, not the whole O2 pipeline (which costs 2-3x
 * the compile time for the same kernel speed, measured with keops-bench). instcombine's
 * fixpoint check is off: LLVM 19 exits the process when a second iteration would still
 * change something (Sin(ReLU(-x))), which is no error of the code. */
#define PIPELINE "always-inline,function(sroa,early-cse<memssa>,instcombine<no-verify-fixpoint>,simplifycfg)"

/* u = 2 row blocks: 1 to 4 measured equal on gauss3 (the kernel is bound by arithmetic). */
#define X86_COMMON                                                                                 \
  .u = 2, .pipeline = PIPELINE, .reloc = LLVMRelocPIC, .code_model = LLVMCodeModelJITDefault,       \
  .build = cpu_build, .attrs = attrs

const kt_isa kt_avx512 = {.name = "avx512", .w32 = 16, .w64 = 8, .math = VM_MATH_SCALEF | VM_MATH_RCP14,
                          .runs_on = runs_avx512, X86_COMMON};
/* Forced, AVX2 is what an AVX2 machine without AVX-512 runs, whatever the host. */
const kt_isa kt_avx2 = {.name = "avx2", .w32 = 8, .w64 = 4, .math = VM_MATH_RCP12, .runs_on = runs_avx2,
                        .cpu = "haswell", .features = "", X86_COMMON};
const kt_isa kt_generic = {.name = "generic", .w32 = 1, .w64 = 1, .runs_on = runs_generic,
                           .cpu = "x86-64", .features = "", X86_COMMON};
