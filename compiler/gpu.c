/* The NVPTX kernel (see gpu.h for the ABI): one thread per output row; the j-variables of
 * blockDim.x consecutive j's are staged in shared memory (addrspace 3) by the block's
 * threads, then every thread runs the formula over the tile. The formula body and the
 * reduction steps are the CPU's (lower.c, kgen.c) with W = 1 lane. */
#include "gpu.h"

#include <stdlib.h>
#include <string.h>

#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>

#include "emit.h"
#include "kgen.h"
#include "llvm_compat.h"
#include "red.h"

#define B (K->L.bld)

enum { P_NROWS, P_J0, P_J1, P_PARTIAL, P_ARGS };

typedef struct gk {
  kb K;
  LLVMValueRef row, valid, by, nrows;
  LLVMValueRef out[2];
  LLVMValueRef partial;
  int state;
} gk;

static LLVMValueRef call0(kb *K, const char *name) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  return LLVMBuildCall2(B, LLVMIntrinsicGetType(K->L.C, id, NULL, 0),
                        LLVMGetIntrinsicDeclaration(K->L.M, id, NULL, 0), NULL, 0, "");
}

static LLVMValueRef sreg(kb *K, const char *name) {
  return LLVMBuildZExt(B, call0(K, name), K->i64, "");
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

int gpu_tile_width(const fe_program *p) {
  int w = 0;
  for (int pos = 0; pos < p->args.n; pos++) {
    int c = p->args.cat[pos];
    if ((p->axis == 1 ? c == CAT_J : c == CAT_I)) w += p->args.dim[pos];
  }
  return w;
}

/* Rows read global memory once (row-level nodes keep them in registers), j-variables the
 * shared tile, parameters global memory once. */
static LLVMValueRef load_var(lw *L, int pos, int cat, int c, int u) {
  gk *G = L->user;
  kb *K = &G->K;
  (void)u;
  if (cat == CAT_J) {
    LLVMValueRef at = LLVMBuildAdd(B, LLVMBuildMul(B, K->jt, kg_i64(K, K->tile_width), ""),
                                   kg_i64(K, K->tile_off[pos] + c), "");
    return kg_load(K, L->T, kg_gep(K, L->T, K->tile, at), kg_tsize(K));
  }
  LLVMValueRef at = kg_i64(K, c);
  if (cat == CAT_I) at = LLVMBuildAdd(B, LLVMBuildMul(B, G->row, kg_i64(K, K->p->args.dim[pos]), ""), at, "");
  return kg_load(K, L->T, kg_gep(K, L->T, K->arg[pos], at), kg_tsize(K));
}

static void put(kb *K, const kg_sink *o, int kind, LLVMValueRef c, int u, LLVMValueRef lane,
                LLVMValueRef v) {
  gk *G = (gk *)K;
  (void)u, (void)lane; /* one row a thread */
  if (o->partial) {
    LLVMValueRef at = LLVMBuildMul(B, LLVMBuildAdd(B, LLVMBuildMul(B, G->by, G->nrows, ""), G->row, ""),
                                   kg_i64(K, G->state), "");
    LLVMTypeRef dt = LLVMDoubleTypeInContext(K->L.C);
    kg_store(K, v, kg_gep(K, dt, G->partial, LLVMBuildAdd(B, at, c, "")), 8);
    return;
  }
  const fe_program *p = K->p;
  int o_idx = kind == KG_IDX && (p->red->outputs & RO_VAL) ? 1 : 0;
  LLVMTypeRef et = kind == KG_IDX ? K->i64 : K->L.T;
  LLVMValueRef at = LLVMBuildAdd(B, LLVMBuildMul(B, G->row, kg_i64(K, p->out_dim[o_idx]), ""), c, "");
  kg_store(K, v, kg_gep(K, et, G->out[o_idx], at), kind == KG_IDX ? 8 : kg_tsize(K));
}

/* Stages the j-variables of j-range [t, t + blockDim) (clipped to jend) into the tile. */
static void stage_tile(gk *G, LLVMValueRef t, LLVMValueRef jend, LLVMValueRef tid) {
  kb *K = &G->K;
  const fe_program *p = K->p;
  LLVMValueRef jj = LLVMBuildAdd(B, t, tid, "");
  LLVMBasicBlockRef load_bb = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "stage");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "staged");
  LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, jj, jend, ""), load_bb, done);
  LLVMPositionBuilderAtEnd(B, load_bb);
  for (int pos = 0; pos < p->args.n; pos++) {
    int dim = p->args.dim[pos], c0 = p->args.cat[pos];
    if (!(p->axis == 1 ? c0 == CAT_J : c0 == CAT_I)) continue;
    LLVMValueRef src = kg_gep(K, K->L.T, K->arg[pos], LLVMBuildMul(B, jj, kg_i64(K, dim), ""));
    LLVMValueRef dst = kg_gep(K, K->L.T, K->tile,
                              LLVMBuildMul(B, tid, kg_i64(K, K->tile_width), ""));
    for (int c = 0; c < dim; c++) {
      LLVMValueRef v = kg_load(K, K->L.T, kg_gep(K, K->L.T, src, kg_i64(K, c)), kg_tsize(K));
      kg_store(K, v, kg_gep(K, K->L.T, dst, kg_i64(K, K->tile_off[pos] + c)), kg_tsize(K));
    }
  }
  LLVMBuildBr(B, done);
  LLVMPositionBuilderAtEnd(B, done);
}

static void build_body(gk *G, LLVMValueRef *params, int nstate) {
  kb *K = &G->K;
  const fe_program *p = K->p;
  G->nrows = params[P_NROWS];
  G->partial = params[P_PARTIAL];
  G->state = nstate;
  for (int pos = 0; pos < p->args.n; pos++) K->arg[pos] = params[P_ARGS + pos];
  for (int o = 0; o < p->nout; o++) G->out[o] = params[P_ARGS + p->args.n + o];
  LLVMValueRef tid = sreg(K, "llvm.nvvm.read.ptx.sreg.tid.x");
  LLVMValueRef bdim = sreg(K, "llvm.nvvm.read.ptx.sreg.ntid.x");
  LLVMValueRef i = LLVMBuildAdd(B, LLVMBuildMul(B, sreg(K, "llvm.nvvm.read.ptx.sreg.ctaid.x"), bdim, ""), tid, "");
  G->by = sreg(K, "llvm.nvvm.read.ptx.sreg.ctaid.y");
  LLVMValueRef gy = sreg(K, "llvm.nvvm.read.ptx.sreg.nctaid.y");
  G->valid = LLVMBuildICmp(B, LLVMIntSLT, i, G->nrows, "");
  /* threads past the last row still stage tiles and meet the barriers; they compute on the
   * last row and write nothing */
  G->row = LLVMBuildSelect(B, G->valid, i, LLVMBuildSub(B, G->nrows, kg_i64(K, 1), ""), "");
  LLVMValueRef j0 = params[P_J0], j1 = params[P_J1];
  LLVMValueRef len = LLVMBuildSub(B, j1, j0, "");
  LLVMValueRef chunk = LLVMBuildSDiv(B, LLVMBuildAdd(B, len, LLVMBuildSub(B, gy, kg_i64(K, 1), ""), ""), gy, "");
  LLVMValueRef jb0 = kg_smin(K, LLVMBuildAdd(B, j0, LLVMBuildMul(B, G->by, chunk, ""), ""), j1);
  LLVMValueRef jb1 = kg_smin(K, LLVMBuildAdd(B, jb0, chunk, ""), j1);

  kg_state_alloc(K);
  kg_kheap_alloca(K);
  lw_level_prepare(&K->L, LV_P, 0);
  lw_level_prepare(&K->L, LV_I, 0);
  kg_init(K, 0);
  kg_loop lt, lk;
  LLVMValueRef t = kg_loop_begin(K, &lt, jb0, jb1);
  stage_tile(G, t, jb1, tid);
  barrier(K);
  LLVMValueRef n = kg_smin(K, bdim, LLVMBuildSub(B, jb1, t, ""));
  K->jt = kg_loop_begin(K, &lk, kg_i64(K, 0), n);
  K->j = K->jv = LLVMBuildAdd(B, t, K->jt, "");
  lw_level_prepare(&K->L, LV_J, 0);
  lw_level_prepare(&K->L, LV_IJ, 0);
  LLVMValueRef *f = lw_vec(&K->L, p->f, 0);
  if (f) kg_accumulate(K, 0, f);
  kg_loop_end(K, &lk, kg_i64(K, 1));
  if (kg_needs_flush(p)) kg_flush_block(K, 0);
  barrier(K); /* the tile is overwritten next */
  kg_loop_end(K, &lt, bdim);

  LLVMBasicBlockRef fin = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "finalize");
  LLVMBasicBlockRef part = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "partial");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "done");
  LLVMBasicBlockRef write = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "write");
  LLVMBuildCondBr(B, G->valid, write, done);
  LLVMPositionBuilderAtEnd(B, write);
  LLVMBuildCondBr(B, LLVMBuildIsNull(B, G->partial, ""), fin, part);
  LLVMPositionBuilderAtEnd(B, fin);
  kg_sink sf = {.put = put}, sp = {.put = put, .partial = 1};
  kg_finalize(K, 0, &sf);
  LLVMBuildBr(B, done);
  LLVMPositionBuilderAtEnd(B, part);
  kg_finalize(K, 0, &sp);
  LLVMBuildBr(B, done);
  LLVMPositionBuilderAtEnd(B, done);
  LLVMBuildRetVoid(B);
  kg_state_free(K);
}

/* The second kernel of a j-split: keops_combine(i64 nrows, i64 nsplit, double *partial,
 * out_0 [, out_1]) merges each row's nsplit states in order and writes its outputs. */
static LLVMValueRef build_combine(gk *G) {
  kb *K = &G->K;
  const fe_program *p = K->p;
  LLVMTypeRef g = LLVMPointerTypeInContext(K->L.C, 1), dt = LLVMDoubleTypeInContext(K->L.C);
  LLVMTypeRef ps[3 + 2] = {K->i64, K->i64, g, g, g};
  K->fn = LLVMAddFunction(K->L.M, "keops_combine",
                          LLVMFunctionType(LLVMVoidTypeInContext(K->L.C), ps, (unsigned)(3 + p->nout), 0));
  LLVMPositionBuilderAtEnd(B, LLVMAppendBasicBlockInContext(K->L.C, K->fn, "entry"));
  G->nrows = LLVMGetParam(K->fn, 0);
  LLVMValueRef nsplit = LLVMGetParam(K->fn, 1), partial = LLVMGetParam(K->fn, 2);
  for (int o = 0; o < p->nout; o++) G->out[o] = LLVMGetParam(K->fn, (unsigned)(3 + o));
  LLVMValueRef i = LLVMBuildAdd(B, LLVMBuildMul(B, sreg(K, "llvm.nvvm.read.ptx.sreg.ctaid.x"),
                                                sreg(K, "llvm.nvvm.read.ptx.sreg.ntid.x"), ""),
                                sreg(K, "llvm.nvvm.read.ptx.sreg.tid.x"), "");
  LLVMBasicBlockRef work = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "row");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "done");
  LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, i, G->nrows, ""), work, done);
  LLVMPositionBuilderAtEnd(B, work);
  G->row = i;
  kg_state_alloc(K);
  kg_kheap_alloca(K);
  LLVMValueRef st = kg_i64(K, G->state);
  kg_state_load(K, 0, kg_gep(K, dt, partial, LLVMBuildMul(B, i, st, "")));
  kg_loop lt;
  LLVMValueRef t = kg_loop_begin(K, &lt, kg_i64(K, 1), nsplit);
  LLVMValueRef at = LLVMBuildMul(B, LLVMBuildAdd(B, LLVMBuildMul(B, t, G->nrows, ""), i, ""), st, "");
  kg_state_merge(K, 0, kg_gep(K, dt, partial, at));
  kg_loop_end(K, &lt, kg_i64(K, 1));
  kg_sink sf = {.put = put};
  kg_finalize(K, 0, &sf);
  LLVMBuildBr(B, done);
  LLVMPositionBuilderAtEnd(B, done);
  LLVMBuildRetVoid(B);
  kg_state_free(K);
  return K->fn;
}

static void set_attrs(LLVMModuleRef m, LLVMValueRef kernel, const gpu_target *t, int f32) {
  /* float32 flushes denormals, as CUDA's fast math: the f32 units then run at full rate */
  kg_target_attrs(m, t->sm, t->ptx, f32 ? "denormal-fp-math-f32" : NULL, "preserve-sign,preserve-sign");
  for (LLVMValueRef f = kernel; f; f = LLVMGetNextFunction(f)) /* the kernels come first */
    if (!LLVMIsDeclaration(f) && LLVMGetLinkage(f) == LLVMExternalLinkage) {
      LLVMSetFunctionCallConv(f, LLVMPTXKernelCallConv);
      keops_nvptx_launch_bound(m, f, GPU_MAX_BLOCK);
    }
}

LLVMModuleRef gpu_build(LLVMContextRef C, const fe_program *p, const gpu_target *t,
                        const char *fname, kerr *e) {
  gk G;
  memset(&G, 0, sizeof G);
  kb *K = &G.K;
  K->p = p;
  K->L.C = C;
  K->L.M = LLVMModuleCreateWithNameInContext(fname, C);
  LLVMSetTarget(K->L.M, "nvptx64-nvidia-cuda");
  K->L.bld = LLVMCreateBuilderInContext(C);
  K->L.user = &G;
  K->L.load_var = load_var;
  kg_types(K, 1, 1, 1);
  { /* vmath may use ex2.approx for float32 exp (see exp_gpu_f32) */
    static const char flag[] = "keops.nvptx.approx";
    LLVMAddModuleFlag(K->L.M, LLVMModuleFlagBehaviorOverride, flag, sizeof flag - 1,
                      LLVMValueAsMetadata(LLVMConstInt(K->i32, 1, 0)));
  }
  const dag_node *root = dag_get(p->d, p->f);
  K->D = root->dim;
  K->E = p->red->family == RF_LSE ? root->dim - 1 : 0;
  red_spec spec;
  /* K-min heaps live in each thread's local memory, which the driver reserves for every
   * resident thread of the device: keep it small */
  int64_t heap = kg_kheap_entries(p, 1, 1) * (kg_tsize(K) + 8);
  if (heap > GPU_MAX_HEAP)
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED,
             "%s with K = %d over %d components needs %lld bytes of heap per row, more than the "
             "GPU kernel's %d: use the CPU backend, or a smaller K", p->red->name, p->k, p->fdim,
             (long long)heap, GPU_MAX_HEAP);
  if (e->status != KEOPS_OK || red_spec_init(&spec, p->red, p->fdim, p->k, p->scheme, 1, e) ||
      lw_init(&K->L, p->d, p->f, e)) {
    LLVMDisposeBuilder(K->L.bld);
    LLVMDisposeModule(K->L.M);
    return NULL;
  }
  for (int pos = 0, off = 0; pos < p->args.n; pos++) {
    int c = p->args.cat[pos];
    if (!(p->axis == 1 ? c == CAT_J : c == CAT_I)) continue;
    K->tile_off[pos] = off;
    off += p->args.dim[pos];
  }
  K->tile_width = gpu_tile_width(p);
  LLVMTypeRef g = LLVMPointerTypeInContext(C, 1); /* global memory */
  int np = P_ARGS + p->args.n + p->nout;
  LLVMTypeRef *ps = malloc(sizeof *ps * (size_t)np);
  for (int q = 0; q < np; q++) ps[q] = q < P_PARTIAL ? K->i64 : g;
  K->fn = LLVMAddFunction(K->L.M, fname, LLVMFunctionType(LLVMVoidTypeInContext(C), ps, (unsigned)np, 0));
  free(ps);
  K->tile = LLVMAddGlobalInAddressSpace(K->L.M, LLVMArrayType(K->L.T, 0), "keops_tile", 3);
  LLVMSetAlignment(K->tile, 16);
  LLVMPositionBuilderAtEnd(K->L.bld, LLVMAppendBasicBlockInContext(C, K->fn, "entry"));
  LLVMValueRef *params = malloc(sizeof *params * (size_t)np);
  LLVMGetParams(K->fn, params);
  build_body(&G, params, (int)spec.state);
  free(params);
  LLVMValueRef main_fn = K->fn;
  build_combine(&G);
  LLVMModuleRef m = K->L.M;
  set_attrs(m, main_fn, t, p->dtype == KEOPS_FLOAT32);
  LLVMDisposeBuilder(K->L.bld);
  lw_free(&K->L);
  if (e->status != KEOPS_OK) {
    LLVMDisposeModule(m);
    return NULL;
  }
  return m;
}

static int known_sm(const char *sm) {
  static const char sms[] = KEOPS_NVPTX_SMS;
  size_t n = strlen(sm);
  for (const char *s = sms; n && (s = strstr(s, sm)); s += n)
    if ((s == sms || s[-1] == ' ') && (s[n] == ' ' || s[n] == 0)) return 1;
  return 0;
}

static LLVMModuleRef build(LLVMContextRef C, const kc_job *j, kerr *e) {
  return gpu_build(C, j->p, j->target, j->name, e);
}

char *gpu_emit(const fe_program *p, const gpu_target *t, const char *fname, int ir, kerr *e) {
  kc_llvm_init();
  if (!known_sm(t->sm)) {
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED, "LLVM %s cannot generate code for %s (it knows %s)",
             LLVM_VERSION_STRING, t->sm, KEOPS_NVPTX_SMS);
    return NULL;
  }
  static const char triple[] = "nvptx64-nvidia-cuda";
  LLVMTargetRef target;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED, "this LLVM has no NVPTX target: %s", msg ? msg : "");
    LLVMDisposeMessage(msg);
    return NULL;
  }
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, t->sm, t->ptx, LLVMCodeGenLevelAggressive,
                                                    LLVMRelocDefault, LLVMCodeModelDefault);
  if (!tm) {
    kerr_set(e, KEOPS_ERROR_UNSUPPORTED, "LLVM cannot target %s with %s", t->sm, t->ptx);
    return NULL;
  }
  /* O3: the GPU loop benefits from unrolling, and PTX is made once per architecture */
  kc_job j = {tm, build, p, t, fname, "default<O3>", ir ? KC_IR : KC_ASM, KG_MAX_INSTS};
  size_t len;
  char *out = kc_compile(&j, &len, e);
  LLVMDisposeTargetMachine(tm);
  return out;
}
