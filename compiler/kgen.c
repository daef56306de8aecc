/* What the CPU and GPU kernel builders share: IR helpers, the element and vector types, and
 * the reduction steps on per-row states (init, accumulate one j, block flush, finalize or
 * write red.c's double state), with lanes across rows (W = 1 on the GPU: one row a thread).
 * The steps call the row's family (kg_family, red_<family>.c), which defines them next to
 * its C steps; what several families share is here. */
#include "kgen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/DebugInfo.h>

#include "vmath.h"

#define B (K->L.bld)

LLVMValueRef kg_i64(kb *K, int64_t v) { return LLVMConstInt(K->i64, (unsigned long long)v, 1); }

LLVMValueRef kg_alloca(kb *K, LLVMTypeRef t, int64_t n) {
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(B), e = LLVMGetEntryBasicBlock(K->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(e);
  if (first) LLVMPositionBuilderBefore(B, first); else LLVMPositionBuilderAtEnd(B, e);
  LLVMValueRef v = n == 1 ? LLVMBuildAlloca(B, t, "") : LLVMBuildArrayAlloca(B, t, kg_i64(K, n), "");
  LLVMSetAlignment(v, 64);
  LLVMPositionBuilderAtEnd(B, cur);
  return v;
}

LLVMValueRef kg_loop_begin(kb *K, kg_loop *lp, LLVMValueRef start, LLVMValueRef end) {
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(B);
  lp->unroll = 0;
  lp->ptr = NULL;
  lp->pre = pre;
  lp->head = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "kg_loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "body");
  lp->exit = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "done");
  LLVMBuildBr(B, lp->head);
  LLVMPositionBuilderAtEnd(B, lp->head);
  lp->iv = LLVMBuildPhi(B, LLVMTypeOf(start), "");
  LLVMAddIncoming(lp->iv, &start, &pre, 1);
  LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, lp->iv, end, ""), body, lp->exit);
  LLVMPositionBuilderAtEnd(B, body);
  return lp->iv;
}

LLVMValueRef kg_loop_ptr(kb *K, kg_loop *lp, LLVMTypeRef elem, LLVMValueRef start, int64_t step) {
  LLVMBasicBlockRef at = LLVMGetInsertBlock(B);
  LLVMPositionBuilderBefore(B, LLVMGetFirstInstruction(lp->head));
  lp->ptr = LLVMBuildPhi(B, LLVMTypeOf(start), "");
  LLVMAddIncoming(lp->ptr, &start, &lp->pre, 1);
  lp->ptr_elem = elem, lp->ptr_step = step;
  LLVMPositionBuilderAtEnd(B, at);
  return lp->ptr;
}

void kg_loop_end(kb *K, kg_loop *lp, LLVMValueRef step) {
  LLVMValueRef next = LLVMBuildAdd(B, lp->iv, step, "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(B);
  if (lp->ptr) {
    LLVMValueRef p1 = kg_gep(K, lp->ptr_elem, lp->ptr, kg_i64(K, lp->ptr_step));
    LLVMAddIncoming(lp->ptr, &p1, &latch, 1);
  }
  LLVMValueRef br = LLVMBuildBr(B, lp->head);
  if (lp->unroll > 0) {
    /* !llvm.loop !0, !0 = distinct !{!0, !{"llvm.loop.unroll.count", i32 n}}: a temporary
     * node replaced by the node itself makes the self-reference (the C API has no distinct
     * nodes) */
    LLVMContextRef C = K->L.C;
    LLVMMetadataRef tmp = LLVMTemporaryMDNode(C, NULL, 0);
    LLVMMetadataRef cnt[2] = {LLVMMDStringInContext2(C, "llvm.loop.unroll.count", 22),
                              LLVMValueAsMetadata(LLVMConstInt(K->i32, (unsigned)lp->unroll, 0))};
    LLVMMetadataRef ops[2] = {tmp, LLVMMDNodeInContext2(C, cnt, 2)};
    LLVMMetadataRef self = LLVMMDNodeInContext2(C, ops, 2);
    LLVMMetadataReplaceAllUsesWith(tmp, self);
    LLVMSetMetadata(br, LLVMGetMDKindIDInContext(C, "llvm.loop", 9), LLVMMetadataAsValue(C, self));
  }
  LLVMAddIncoming(lp->iv, &next, &latch, 1);
  LLVMPositionBuilderAtEnd(B, lp->exit);
}

LLVMValueRef kg_smin(kb *K, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(B, LLVMBuildICmp(B, LLVMIntSLT, a, b, ""), a, b, "");
}

LLVMValueRef kg_gep(kb *K, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildGEP2(B, t, base, &idx, 1, "");
}

LLVMValueRef kg_load(kb *K, LLVMTypeRef t, LLVMValueRef ptr, unsigned align) {
  LLVMValueRef v = LLVMBuildLoad2(B, t, ptr, "");
  LLVMSetAlignment(v, align);
  return v;
}

void kg_store(kb *K, LLVMValueRef v, LLVMValueRef ptr, unsigned align) {
  LLVMSetAlignment(LLVMBuildStore(B, v, ptr), align);
}

unsigned kg_tsize(kb *K) { return K->L.T == LLVMFloatTypeInContext(K->L.C) ? 4 : 8; }

/* ---- reduction steps, per row block u ------------------------------------------------- */

static const kg_family *fam(const fe_program *p) { return p->red->fam->ir; }

LLVMValueRef kg_ld(kb *K, LLVMValueRef slot) { return kg_load(K, LLVMGetAllocatedType(slot), slot, 64); }
void kg_st(kb *K, LLVMValueRef slot, LLVMValueRef v) { kg_store(K, v, slot, 64); }

LLVMValueRef kg_splat(kb *K, LLVMTypeRef vt, LLVMValueRef s) {
  if (K->W == 1) return s;
  LLVMValueRef v = LLVMBuildInsertElement(B, LLVMGetUndef(vt), s, LLVMConstInt(K->i32, 0, 0), "");
  return LLVMBuildShuffleVector(B, v, LLVMGetUndef(vt), LLVMConstNull(LLVMVectorType(K->i32, (unsigned)K->W)), "");
}

LLVMValueRef kg_aconst(kb *K, double v) {
  LLVMValueRef s = LLVMConstReal(K->AT, v);
  if (K->W == 1) return s;
  LLVMValueRef e[64];
  for (int l = 0; l < K->W; l++) e[l] = s;
  return LLVMConstVector(e, (unsigned)K->W);
}

LLVMValueRef kg_iconst(kb *K, int64_t v) {
  return K->W == 1 ? kg_i64(K, v) : kg_splat(K, K->IVT, kg_i64(K, v));
}

LLVMValueRef kg_to_acc(kb *K, LLVMValueRef v) {
  return K->AT == K->L.T || K->f_acc ? v : LLVMBuildFPExt(B, v, K->AVT, "");
}

LLVMValueRef kg_from_acc(kb *K, LLVMValueRef v) {
  return K->AT == K->L.T ? v : LLVMBuildFPTrunc(B, v, K->L.VT, "");
}

LLVMValueRef kg_to_double(kb *K, LLVMValueRef v) {
  LLVMTypeRef dt = LLVMDoubleTypeInContext(K->L.C);
  LLVMTypeRef dvt = K->W == 1 ? dt : LLVMVectorType(dt, (unsigned)K->W);
  LLVMTypeRef et = LLVMGetTypeKind(LLVMTypeOf(v)) == LLVMVectorTypeKind ? LLVMGetElementType(LLVMTypeOf(v))
                                                                         : LLVMTypeOf(v);
  if (LLVMGetTypeKind(et) == LLVMIntegerTypeKind) return LLVMBuildSIToFP(B, v, dvt, "");
  return et == dt ? v : LLVMBuildFPExt(B, v, dvt, "");
}

LLVMValueRef kg_index_of(kb *K, int d) { return K->jidx ? K->jidx[d] : K->jv; }

red_layout kg_layout(const fe_program *p) { return p->red->fam->layout(p->fdim, p->k, p->scheme); }

int kg_slots(kb *K) { return fam(K->p)->slots(K); }

void kg_init(kb *K, int u) { fam(K->p)->init(K, u); }

/* f: the formula's K->D values (LSE: 1 + K->E), in the dtype. */
void kg_accumulate(kb *K, int u, LLVMValueRef *f) { fam(K->p)->accumulate(K, u, f); }

int kg_needs_flush(const fe_program *p) { return fam(p)->tiled && fam(p)->tiled(p); }

void kg_flush_block(kb *K, int u) {
  if (fam(K->p)->flush) fam(K->p)->flush(K, u);
}

void kg_finalize(kb *K, int u, const kg_sink *o) {
  if (o->partial) fam(K->p)->write(K, u, o);
  else fam(K->p)->finalize(K, u, o);
}

/* ---- slots of (value, index): MINMAX and KMIN ----------------------------------------- */

void kg_pair_init(kb *K, int u) {
  double fill = red_worst(K->p->red->dir);
  for (int s = 0; s < K->nslot; s++) {
    kg_st(K, K->a[u][s], lw_const(&K->L, fill, 1));
    kg_st(K, K->ix[u][s], kg_iconst(K, -1));
  }
}

/* red.c's red_goes_before, for x entering with the larger index: ties keep the slot. */
LLVMValueRef kg_takes(kb *K, LLVMValueRef x, LLVMValueRef v, LLVMValueRef i) {
  LLVMRealPredicate better = K->p->red->dir < 0 ? LLVMRealOLT : LLVMRealOGT;
  LLVMValueRef empty = LLVMBuildAnd(B, LLVMBuildICmp(B, LLVMIntSLT, i, kg_iconst(K, 0), ""),
                                    LLVMBuildFCmp(B, LLVMRealORD, x, x, ""), "");
  return LLVMBuildOr(B, LLVMBuildFCmp(B, better, x, v, ""), empty, "");
}

LLVMValueRef kg_any_lane(kb *K, LLVMValueRef c) {
  if (K->W == 1) return c;
  LLVMValueRef bits = LLVMBuildBitCast(B, c, LLVMIntTypeInContext(K->L.C, (unsigned)K->W), "");
  return LLVMBuildICmp(B, LLVMIntNE, bits, LLVMConstNull(LLVMTypeOf(bits)), "");
}

void kg_pair_finalize(kb *K, int u, const kg_sink *o) {
  const red_row *r = K->p->red;
  for (int s = 0; s < K->nslot; s++) {
    if (r->outputs & RO_VAL) o->put(K, o, KG_VAL, kg_i64(K, s), u, NULL, kg_ld(K, K->a[u][s]));
    if (r->outputs & RO_IDX) o->put(K, o, KG_IDX, kg_i64(K, s), u, NULL, kg_ld(K, K->ix[u][s]));
  }
}

/* ---- the size budget (kg_size) -------------------------------------------------------- */

int64_t kg_size(const fe_program *p) {
  uint32_t n = dag_count(p->d);
  unsigned char *live = calloc(n, 1);
  if (!live) return INT64_MAX;
  int64_t size = 0;
  live[p->f] = 1;
  for (uint32_t id = p->f; id > 0; id--) {
    if (!live[id]) continue;
    const dag_node *a = dag_get(p->d, id);
    size += a->dim;
    for (int c = 0; c < a->nk; c++) {
      live[a->k[c]] = 1;
      size += dag_get(p->d, a->k[c])->dim;
    }
  }
  free(live);
  int64_t state = fam(p)->cost(p); /* the per-row state, updated for every pair */
  /* a state entry costs ~32 operations: the states of a row block live across the j loop,
   * and past the vector registers every one spills (measured: a 100-wide Sum compiles as
   * slowly as a 3000-operation scalar formula) */
  return size + 32 * state;
}

int kg_check_size(const fe_program *p, kerr *e) {
  int64_t size = p->size;
  if (size <= KG_MAX_SIZE) return 0;
  kerr_set(e, KEOPS_ERROR_UNSUPPORTED,
           "the formula is too large for the JIT: its kernel size is %lld (scalar operations per "
           "pair, plus 32 per reduction state entry: %d outputs) where the limit is %d; split the "
           "outputs into several kernels or reduce the dimensions (the REFERENCE backend runs it)",
           (long long)size, p->fdim, KG_MAX_SIZE);
  return -1;
}

void kg_types(kb *K, int w32, int w64, int u) {
  LLVMContextRef C = K->L.C;
  int f64 = K->p->dtype == KEOPS_FLOAT64;
  K->W = f64 ? w64 : w32;
  K->U = u < 1 ? 1 : u > LW_MAX_U ? LW_MAX_U : u;
  K->WU = K->W * K->U;
  K->i1 = LLVMInt1TypeInContext(C);
  K->i32 = LLVMInt32TypeInContext(C);
  K->i64 = LLVMInt64TypeInContext(C);
  K->ptr = LLVMPointerTypeInContext(C, 0);
  K->L.T = f64 ? LLVMDoubleTypeInContext(C) : LLVMFloatTypeInContext(C);
  K->AT = K->p->double_acc ? LLVMDoubleTypeInContext(C) : K->L.T;
  K->L.W = K->W;
#define VEC(t) (K->W == 1 ? (t) : LLVMVectorType((t), (unsigned)K->W))
  K->L.VT = VEC(K->L.T);
  K->AVT = VEC(K->AT);
  K->IVT = VEC(K->i64);
  K->BVT = VEC(K->i1);
#undef VEC
  K->D = K->p->fdim;
  K->E = K->p->weights;
}


void kg_state_alloc(kb *K) {
  red_layout l = kg_layout(K->p);
  K->nslot = kg_slots(K);
  for (int u = 0; u < K->U; u++) {
    K->a[u] = calloc((size_t)K->nslot, sizeof(LLVMValueRef));
    K->x[u] = calloc((size_t)K->nslot, sizeof(LLVMValueRef));
    K->ix[u] = calloc((size_t)K->nslot, sizeof(LLVMValueRef));
    for (int s = 0; s < K->nslot && K->a[u] && K->x[u] && K->ix[u]; s++) {
      /* values with an index are compared, not summed: they stay in the dtype. Families
       * without an auxiliary still get one, unused: removing it only reorders the optimised
       * IR's phis, and the kernels were kept byte-identical when the families moved out. */
      K->a[u][s] = kg_alloca(K, l.idx ? K->L.VT : K->AVT, 1);
      if (l.idx) K->ix[u][s] = kg_alloca(K, K->IVT, 1);
      else K->x[u][s] = kg_alloca(K, K->AVT, 1);
    }
  }
}

void kg_state_free(kb *K) {
  for (int u = 0; u < K->U; u++) free(K->a[u]), free(K->x[u]), free(K->ix[u]);
}


/* ---- red.c's double states (GPU j-split: W = 1) --------------------------------------- */

LLVMValueRef kg_state_entry_at(kb *K, LLVMValueRef base, LLVMValueRef c, LLVMTypeRef t) {
  LLVMTypeRef dt = LLVMDoubleTypeInContext(K->L.C);
  LLVMValueRef v = kg_load(K, dt, kg_gep(K, dt, base, c), 8);
  if (LLVMGetTypeKind(t) == LLVMIntegerTypeKind) return LLVMBuildFPToSI(B, v, t, "");
  return t == dt ? v : LLVMBuildFPTrunc(B, v, t, "");
}

LLVMValueRef kg_state_entry(kb *K, LLVMValueRef base, int c, LLVMTypeRef t) {
  return kg_state_entry_at(K, base, kg_i64(K, c), t);
}

void kg_slots_load(kb *K, int u, LLVMValueRef base) {
  red_layout l = kg_layout(K->p);
  int n = K->nslot;
  for (int s = 0; s < n; s++) {
    kg_st(K, K->a[u][s], kg_state_entry(K, base, s, l.idx ? K->L.T : K->AT));
    if (l.idx) kg_st(K, K->ix[u][s], kg_state_entry(K, base, n + s, K->i64));
    else if (l.aux) kg_st(K, K->x[u][s], kg_state_entry(K, base, n + s, K->AT));
    else kg_st(K, K->x[u][s], kg_aconst(K, 0)); /* unused: see kg_state_alloc */
  }
}

/* The extra entries are written 0: they count terms of the block sum's partial, which the
 * builders flush at the end of every tile. */
void kg_slots_write(kb *K, int u, const kg_sink *o) {
  red_layout l = kg_layout(K->p);
  int n = K->nslot, c = 0;
  for (int s = 0; s < n; s++) o->put(K, o, KG_VAL, kg_i64(K, c++), u, NULL, kg_to_double(K, kg_ld(K, K->a[u][s])));
  for (int s = 0; s < n && l.aux; s++) o->put(K, o, KG_VAL, kg_i64(K, c++), u, NULL, kg_to_double(K, kg_ld(K, K->x[u][s])));
  for (int s = 0; s < l.extra; s++) o->put(K, o, KG_VAL, kg_i64(K, c++), u, NULL, kg_to_double(K, kg_aconst(K, 0)));
  for (int s = 0; s < n && l.idx; s++) o->put(K, o, KG_VAL, kg_i64(K, c++), u, NULL, kg_to_double(K, kg_ld(K, K->ix[u][s])));
}

void kg_state_load(kb *K, int u, LLVMValueRef base) { fam(K->p)->load(K, u, base); }

/* States of later indices merge like their contents arriving in order (each family says
 * how), values already in the accumulator type and with their own indices. */
void kg_state_merge(kb *K, int u, LLVMValueRef base) {
  int n = K->nslot, D = K->D;
  LLVMValueRef *f = calloc((size_t)n + (size_t)D, sizeof *f), *ix = f + n;
  if (!f) {
    kerr_set(K->L.err, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return;
  }
  K->f_acc = 1;
  K->jidx = ix;
  fam(K->p)->merge(K, u, base, f, ix);
  K->f_acc = 0;
  K->jidx = NULL;
  free(f);
}

void kg_target_attrs(LLVMModuleRef m, const char *cpu, const char *features, const char *key,
                     const char *val) {
  LLVMContextRef C = LLVMGetModuleContext(m);
  const char *kv[3][2] = {{"target-cpu", cpu}, {"target-features", features}, {key, val}};
  unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
  for (LLVMValueRef f = LLVMGetFirstFunction(m); f; f = LLVMGetNextFunction(f)) {
    if (LLVMIsDeclaration(f)) continue;
    for (int a = 0; a < 3 && kv[a][0]; a++)
      LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                              LLVMCreateStringAttribute(C, kv[a][0], (unsigned)strlen(kv[a][0]), kv[a][1],
                                                        (unsigned)strlen(kv[a][1])));
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(C, nounwind, 0));
  }
}
