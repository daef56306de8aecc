/* The GPU emulation target: gpu.c's kernels, the very ones nvptx.c's table builds PTX from,
 * compiled for the host so that the emulator (runtime/emulator.c) runs them on machines without
 * a GPU. Only the kt_grid hooks differ: indices, shared memory and barriers come from the
 * thread's kt_emu_thread (emu.h), passed as one more argument; every load and store of shared
 * or global memory first calls the emulator's access check; float32 kernels flush denormals
 * (the emulator sets the host's FTZ/DAZ modes for them) and exp's ex2.approx is modelled
 * (VM_MATH_EX2_MODEL). */
#include "emu.h"

#include <stdlib.h>
#include <string.h>

#include "gpu.h"
#include "kgen.h"
#include "target.h"
#include "vmath.h"

#define B (K->L.bld)

/* kt_emu_thread's fields, as the code sees them */
enum { S_SREG, S_PAD, S_SHARED, S_BARRIER, S_ACCESS, S_N };

static LLVMTypeRef state_type(LLVMContextRef C) {
  LLVMTypeRef i32 = LLVMInt32TypeInContext(C), p = LLVMPointerTypeInContext(C, 0);
  LLVMTypeRef f[S_N] = {LLVMArrayType(i32, 5), i32, p, p, p};
  return LLVMStructTypeInContext(C, f, S_N, 0);
}

static LLVMValueRef field(kb *K, int f) {
  return LLVMBuildStructGEP2(B, state_type(K->L.C), K->gstate, (unsigned)f, "");
}

static LLVMValueRef sreg(kb *K, kt_sreg r) {
  LLVMValueRef idx[3] = {LLVMConstInt(K->i32, 0, 0), LLVMConstInt(K->i32, S_SREG, 0), LLVMConstInt(K->i32, r, 0)};
  return LLVMBuildLoad2(B, K->i32, LLVMBuildInBoundsGEP2(B, state_type(K->L.C), K->gstate, idx, 3, ""), "");
}

static void barrier(kb *K) {
  LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(K->L.C), &K->ptr, 1, 0);
  LLVMValueRef fn = LLVMBuildLoad2(B, K->ptr, field(K, S_BARRIER), "");
  LLVMBuildCall2(B, ft, fn, &K->gstate, 1, "");
}

/* The access check tells shared from global memory by this mark on the shared pointer. */
static unsigned shared_mark(LLVMContextRef C) { return LLVMGetMDKindIDInContext(C, "keops.shared", 12); }

static LLVMValueRef shared(kb *K, LLVMTypeRef t) {
  (void)t;
  LLVMValueRef s = LLVMBuildLoad2(B, K->ptr, field(K, S_SHARED), "shared");
  LLVMSetMetadata(s, shared_mark(K->L.C), LLVMMDNodeInContext(K->L.C, NULL, 0));
  return s;
}

static uint64_t bytes_of(LLVMTypeRef t) {
  switch (LLVMGetTypeKind(t)) {
  case LLVMFloatTypeKind: return 4;
  case LLVMDoubleTypeKind: return 8;
  case LLVMIntegerTypeKind: return (LLVMGetIntTypeWidth(t) + 7) / 8;
  case LLVMPointerTypeKind: return 8;
  case LLVMVectorTypeKind: return LLVMGetVectorSize(t) * bytes_of(LLVMGetElementType(t));
  default: return 0;
  }
}

/* Where an address comes from, through GEPs, phis and selects (the pair loop walks the tile
 * with a phi): EMU_SHARED for the block's shared memory (the load marked keops.shared),
 * EMU_GLOBAL for a kernel argument other than the thread state; 0 for neither (allocas). */
enum { EMU_SHARED = 1, EMU_GLOBAL = 2 };
#define EMU_MAX_PHIS 32
static int origin(kb *K, LLVMValueRef v, LLVMValueRef *seen, int *nseen) {
  while (LLVMIsAGetElementPtrInst(v)) v = LLVMGetOperand(v, 0);
  if (LLVMIsALoadInst(v)) return LLVMGetMetadata(v, shared_mark(K->L.C)) ? EMU_SHARED : 0;
  if (LLVMIsAArgument(v)) return v == K->gstate ? 0 : EMU_GLOBAL;
  int phi = LLVMIsAPHINode(v) != NULL;
  if (!phi && !LLVMIsASelectInst(v)) return 0;
  for (int q = 0; q < *nseen; q++)
    if (seen[q] == v) return 0;
  /* more phis than gpu.c makes: check the access as global memory, never skip it */
  if (*nseen == EMU_MAX_PHIS) return EMU_GLOBAL;
  seen[(*nseen)++] = v;
  int r = 0;
  unsigned n = phi ? LLVMCountIncoming(v) : 2;
  for (unsigned q = 0; q < n; q++)
    r |= origin(K, phi ? LLVMGetIncomingValue(v, q) : LLVMGetOperand(v, q + 1), seen, nseen);
  return r;
}

/* Before each load and store through a kernel argument (global memory) or the shared
 * pointer: access(t, addr, bytes, kind). Other memory (the state and heaps, allocas) is the
 * thread's own. */
static void instrument(kb *K, LLVMValueRef fn) {
  LLVMContextRef C = K->L.C;
  LLVMTypeRef ps[4] = {K->ptr, K->ptr, K->i64, K->i32};
  LLVMTypeRef ft = LLVMFunctionType(LLVMVoidTypeInContext(C), ps, 4, 0);
  for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb))
    for (LLVMValueRef in = LLVMGetFirstInstruction(bb); in; in = LLVMGetNextInstruction(in)) {
      int store = LLVMIsAStoreInst(in) != NULL;
      if (!store && !LLVMIsALoadInst(in)) continue;
      LLVMValueRef ptr = LLVMGetOperand(in, store ? 1 : 0), seen[EMU_MAX_PHIS];
      int nseen = 0, from = origin(K, ptr, seen, &nseen), sh = (from & EMU_SHARED) != 0;
      if (!from) continue;
      LLVMTypeRef t = LLVMTypeOf(store ? LLVMGetOperand(in, 0) : in);
      LLVMPositionBuilderBefore(B, in);
      LLVMValueRef args[4] = {K->gstate, ptr, LLVMConstInt(K->i64, bytes_of(t), 0),
                              LLVMConstInt(K->i32, (store ? KT_EMU_STORE : KT_EMU_LOAD) | (sh ? KT_EMU_SHARED : 0), 0)};
      LLVMBuildCall2(B, ft, LLVMBuildLoad2(B, K->ptr, field(K, S_ACCESS), ""), args, 4, "");
    }
}

/* fn becomes name.kernel (internal); `name` is the wrapper of emu.h's ABI, and `name.info`
 * its kt_emu_info. */
static void entry(kb *K, LLVMValueRef fn) {
  LLVMContextRef C = K->L.C;
  instrument(K, fn);
  size_t len;
  const char *n = LLVMGetValueName2(fn, &len);
  char *name = malloc(len + 16);
  if (!name) return; /* the module then lacks the wrapper: the emulator's lookup fails */
  memcpy(name, n, len);
  strcpy(name + len, ".kernel");
  LLVMSetValueName2(fn, name, len + 7);
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  name[len] = 0;

  unsigned np = LLVMCountParams(fn);
  LLVMTypeRef ps[2] = {K->ptr, K->ptr};
  LLVMValueRef w = LLVMAddFunction(K->L.M, name, LLVMFunctionType(LLVMVoidTypeInContext(C), ps, 2, 0));
  LLVMPositionBuilderAtEnd(B, LLVMAppendBasicBlockInContext(C, w, "entry"));
  LLVMValueRef *args = malloc(sizeof *args * np);
  if (!args) {
    free(name);
    return;
  }
  for (unsigned q = 0; q + 1 < np; q++) {
    LLVMValueRef at = LLVMBuildLoad2(B, K->ptr, kg_gep(K, K->ptr, LLVMGetParam(w, 0), kg_i64(K, q)), "");
    args[q] = LLVMBuildLoad2(B, LLVMTypeOf(LLVMGetParam(fn, q)), at, "");
  }
  args[np - 1] = LLVMGetParam(w, 1);
  LLVMBuildCall2(B, LLVMGlobalGetValueType(fn), fn, args, np, "");
  LLVMBuildRetVoid(B);
  free(args);

  strcpy(name + len, ".info");
  LLVMValueRef info[4] = {LLVMConstInt(K->i32, np - 1, 0), LLVMConstInt(K->i32, GPU_MAX_BLOCK, 0),
                          LLVMConstInt(K->i32, (unsigned long long)gpu_ftz(K->p), 0), LLVMConstInt(K->i32, 0, 0)};
  LLVMValueRef init = LLVMConstStructInContext(C, info, 4, 0);
  LLVMValueRef g = LLVMAddGlobal(K->L.M, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  free(name);
}

static void attrs(LLVMModuleRef m, const kt_target *t, const fe_program *p) {
  kg_target_attrs(m, t->cpu, t->features, gpu_ftz(p) ? "denormal-fp-math-f32" : NULL,
                  "preserve-sign,preserve-sign");
}

static const kt_grid grid = {sreg, barrier, shared, 0, 1, entry};

/* The host's triple, CPU and features (kt_set with the context's CPU target); nvptx's
 * pipeline, so that the emulated code is optimised as the GPU's is. */
const kt_isa kt_gpuemu = {.name = "gpuemu", .w32 = 1, .w64 = 1, .u = 1,
                          .math = VM_MATH_EX2_APPROX | VM_MATH_EX2_MODEL, .pipeline = "default<O1>",
                          .reloc = LLVMRelocPIC, .code_model = LLVMCodeModelJITDefault,
                          .build = gpu_build, .grid = &grid, .attrs = attrs};
