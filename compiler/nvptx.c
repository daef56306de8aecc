/* The NVIDIA target: gpu.c's kernel of one thread per row, for nvptx64-nvidia-cuda. LLVM's
 * NVPTX backend writes the PTX, the CUDA driver JIT-compiles it: no CUDA toolkit is
 * involved. The LLVM CPU is the sm_XY architecture and the features the PTX ISA ("+ptx85"),
 * both chosen at run time from the device and driver (runtime/cuda.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Target.h>

#include "gpu.h"
#include "kgen.h"
#include "llvm_compat.h"
#include "target.h"
#include "vmath.h"

#define B (K->L.bld)

static LLVMValueRef call0(kb *K, const char *name) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  return LLVMBuildCall2(B, LLVMIntrinsicGetType(K->L.C, id, NULL, 0),
                        LLVMGetIntrinsicDeclaration(K->L.M, id, NULL, 0), NULL, 0, "");
}

static LLVMValueRef sreg(kb *K, kt_sreg r) {
  static const char *const names[] = {
      [KT_TID_X] = "llvm.nvvm.read.ptx.sreg.tid.x",     [KT_NTID_X] = "llvm.nvvm.read.ptx.sreg.ntid.x",
      [KT_CTAID_X] = "llvm.nvvm.read.ptx.sreg.ctaid.x", [KT_CTAID_Y] = "llvm.nvvm.read.ptx.sreg.ctaid.y",
      [KT_NCTAID_Y] = "llvm.nvvm.read.ptx.sreg.nctaid.y"};
  return call0(K, names[r]);
}

static void barrier(kb *K) {
#if KEOPS_NVPTX_BARRIER_CTA
  unsigned id = LLVMLookupIntrinsicID(KEOPS_NVPTX_BARRIER, strlen(KEOPS_NVPTX_BARRIER));
  LLVMValueRef zero = LLVMConstInt(K->i32, 0, 0);
  LLVMBuildCall2(B, LLVMIntrinsicGetType(K->L.C, id, NULL, 0),
                 LLVMGetIntrinsicDeclaration(K->L.M, id, NULL, 0), &zero, 1, "");
#else
  call0(K, KEOPS_NVPTX_BARRIER);
#endif
}

/* Dynamic shared memory is an external array of unknown size in address space 3, one for
 * the module's kernels. */
static LLVMValueRef shared(kb *K, LLVMTypeRef t) {
  LLVMValueRef g = LLVMGetNamedGlobal(K->L.M, "keops_tile");
  if (g) return g;
  g = LLVMAddGlobalInAddressSpace(K->L.M, LLVMArrayType(t, 0), "keops_tile", 3);
  LLVMSetAlignment(g, 16);
  return g;
}

static void entry(kb *K, LLVMValueRef fn) {
  LLVMSetFunctionCallConv(fn, LLVMPTXKernelCallConv);
  keops_nvptx_launch_bound(K->L.M, fn, GPU_MAX_BLOCK);
}

static void attrs(LLVMModuleRef m, const kt_target *t, const fe_program *p) {
  kg_target_attrs(m, t->cpu, t->features, gpu_ftz(p) ? "denormal-fp-math-f32" : NULL,
                  "preserve-sign,preserve-sign");
}

/* LLVM warns on stderr, and ignores the processor, for an sm it does not know: ask first. */
static int check(const kt_target *t, kerr *e) {
  static const char sms[] = KEOPS_NVPTX_SMS;
  size_t n = strlen(t->cpu);
  for (const char *s = sms; n && (s = strstr(s, t->cpu)); s += n)
    if ((s == sms || s[-1] == ' ') && (s[n] == ' ' || s[n] == 0)) return 0;
  kerr_set(e, KEOPS_ERROR_UNSUPPORTED, "LLVM %s cannot generate code for %s (it knows %s)",
           LLVM_VERSION_STRING, t->cpu, KEOPS_NVPTX_SMS);
  return -1;
}

static const kt_grid grid = {sreg, barrier, shared, 1, 0, entry};

/* gpu.c's kernels, with the program's key as a comment line at the top of the PTX (module
 * inline asm): people reading PTX see what it computes, and the tests' fake CUDA driver,
 * which only ever sees PTX, rebuilds the program from it (fe_from_key). */
#define KEY_LINE "// keops program: "
static LLVMModuleRef build(LLVMContextRef C, const fe_program *p, const kt_target *t,
                           const char *name, kerr *e) {
  LLVMModuleRef m = gpu_build(C, p, t, name, e);
  if (!m) return NULL;
  size_t n = strlen(KEY_LINE) + strlen(p->key) + 2;
  char *line = malloc(n);
  if (!line) {
    LLVMDisposeModule(m);
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return NULL;
  }
  snprintf(line, n, "%s%s\n", KEY_LINE, p->key);
  LLVMSetModuleInlineAsm2(m, line, n - 1);
  free(line);
  return m;
}

/* O3: the GPU loop benefits from unrolling, and PTX is made once per architecture. */
const kt_isa kt_nvptx = {.name = "nvptx", .triple = "nvptx64-nvidia-cuda", .w32 = 1, .w64 = 1,
                         .u = 1, .math = VM_MATH_EX2_APPROX, .pipeline = "default<O3>",
                         .reloc = LLVMRelocDefault, .code_model = LLVMCodeModelDefault,
                         .build = build, .grid = &grid, .attrs = attrs, .check = check};
