/* What the CPU and GPU kernel builders share: IR helpers, the element and vector types, and
 * the reduction steps on per-row states (init, accumulate one j, block flush, finalize or
 * write red.c's double state), with lanes across rows (W = 1 on the GPU: one row a thread).
 * The steps follow red.c's definitions (state layouts, neutral elements, ties, NaN rules). */
#include "kgen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
  lp->head = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "kg_loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "body");
  lp->exit = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "done");
  LLVMBuildBr(B, lp->head);
  LLVMPositionBuilderAtEnd(B, lp->head);
  lp->iv = LLVMBuildPhi(B, K->i64, "");
  LLVMAddIncoming(lp->iv, &start, &pre, 1);
  LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, lp->iv, end, ""), body, lp->exit);
  LLVMPositionBuilderAtEnd(B, body);
  return lp->iv;
}

void kg_loop_end(kb *K, kg_loop *lp, LLVMValueRef step) {
  LLVMValueRef next = LLVMBuildAdd(B, lp->iv, step, "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(B);
  LLVMBuildBr(B, lp->head);
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

static LLVMValueRef ld(kb *K, LLVMValueRef slot) { return kg_load(K, LLVMGetAllocatedType(slot), slot, 64); }
static void st(kb *K, LLVMValueRef slot, LLVMValueRef v) { kg_store(K, v, slot, 64); }

LLVMValueRef kg_splat(kb *K, LLVMTypeRef vt, LLVMValueRef s) {
  if (K->W == 1) return s;
  LLVMValueRef v = LLVMBuildInsertElement(B, LLVMGetUndef(vt), s, LLVMConstInt(K->i32, 0, 0), "");
  return LLVMBuildShuffleVector(B, v, LLVMGetUndef(vt), LLVMConstNull(LLVMVectorType(K->i32, (unsigned)K->W)), "");
}

static LLVMValueRef aconst(kb *K, double v) { /* constant of the accumulator vector type */
  LLVMValueRef s = LLVMConstReal(K->AT, v);
  if (K->W == 1) return s;
  LLVMValueRef e[64];
  for (int l = 0; l < K->W; l++) e[l] = s;
  return LLVMConstVector(e, (unsigned)K->W);
}

static LLVMValueRef iconst(kb *K, int64_t v) {
  return K->W == 1 ? kg_i64(K, v) : kg_splat(K, K->IVT, kg_i64(K, v));
}

static LLVMValueRef to_acc(kb *K, LLVMValueRef v) {
  return K->AT == K->L.T || K->f_acc ? v : LLVMBuildFPExt(B, v, K->AVT, "");
}

/* The index a value enters with: the current j, or (merging states) the state's own. */
static LLVMValueRef index_of(kb *K, int d) { return K->jidx ? K->jidx[d] : K->jv; }

int kg_slots(kb *K) {
  const red_row *r = K->p->red;
  switch (r->family) {
  case RF_SUM: return K->D;
  case RF_MINMAX: return K->D;
  case RF_KMIN: return kg_kheap(K->p) ? K->D : K->p->k * K->D;
  default: return 1 + K->E;
  }
}

static void heap_init(kb *K, int u); /* with the K-min heaps, below */

void kg_init(kb *K, int u) {
  const red_row *r = K->p->red;
  double fill = r->family == RF_LSE ? 0 : r->dir < 0 ? INFINITY : -INFINITY;
  for (int s = 0; s < K->nslot; s++) {
    if (r->family == RF_SUM || r->family == RF_LSE) {
      st(K, K->a[u][s], aconst(K, r->family == RF_LSE && s == 0 ? -INFINITY : 0));
      st(K, K->x[u][s], aconst(K, 0));
    } else {
      st(K, K->a[u][s], lw_const(&K->L, fill, 1));
      st(K, K->ix[u][s], iconst(K, -1));
    }
  }
  if (kg_kheap(K->p)) heap_init(K, u);
}

/* x enters slot s (value v, index i) when it is better, or the slot is empty and x is a
 * number (red.c: ties keep the smaller index, NaN is ignored). */
static LLVMValueRef takes(kb *K, LLVMValueRef x, LLVMValueRef v, LLVMValueRef i) {
  LLVMRealPredicate better = K->p->red->dir < 0 ? LLVMRealOLT : LLVMRealOGT;
  LLVMValueRef empty = LLVMBuildAnd(B, LLVMBuildICmp(B, LLVMIntSLT, i, iconst(K, 0), ""),
                                    LLVMBuildFCmp(B, LLVMRealORD, x, x, ""), "");
  return LLVMBuildOr(B, LLVMBuildFCmp(B, better, x, v, ""), empty, "");
}

static LLVMValueRef any_lane(kb *K, LLVMValueRef c) {
  if (K->W == 1) return c;
  LLVMValueRef bits = LLVMBuildBitCast(B, c, LLVMIntTypeInContext(K->L.C, (unsigned)K->W), "");
  return LLVMBuildICmp(B, LLVMIntNE, bits, LLVMConstNull(LLVMTypeOf(bits)), "");
}

static void kmin_insert(kb *K, int u, int d, LLVMValueRef x) {
  LLVMValueRef jx = index_of(K, d);
  int Kk = K->p->k, D = K->D;
  LLVMValueRef last = takes(K, x, ld(K, K->a[u][(Kk - 1) * D + d]), ld(K, K->ix[u][(Kk - 1) * D + d]));
  /* most pairs are not among the K best so far: skip the insertion network for them */
  LLVMBasicBlockRef ins = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "kinsert");
  LLVMBasicBlockRef cont = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "kcont");
  LLVMBuildCondBr(B, any_lane(K, last), ins, cont);
  LLVMPositionBuilderAtEnd(B, ins);
  LLVMValueRef v[64 * 4], ix[64 * 4], c[64 * 4];
  LLVMValueRef *vv = Kk <= 256 ? v : malloc(sizeof *vv * (size_t)Kk * 3);
  LLVMValueRef *iv = Kk <= 256 ? ix : vv + Kk, *cc = Kk <= 256 ? c : vv + 2 * Kk;
  for (int k = 0; k < Kk; k++) {
    vv[k] = ld(K, K->a[u][k * D + d]);
    iv[k] = ld(K, K->ix[u][k * D + d]);
    cc[k] = takes(K, x, vv[k], iv[k]);
  }
  /* sorted slots: cc is monotone in k, so slot k takes x where cc[k] and not cc[k-1], and
   * the previous slot's content where cc[k-1] */
  for (int k = Kk - 1; k >= 0; k--) {
    LLVMValueRef nv = x, ni = jx;
    if (k > 0) {
      nv = LLVMBuildSelect(B, cc[k - 1], vv[k - 1], x, "");
      ni = LLVMBuildSelect(B, cc[k - 1], iv[k - 1], jx, "");
    }
    st(K, K->a[u][k * D + d], LLVMBuildSelect(B, cc[k], nv, vv[k], ""));
    st(K, K->ix[u][k * D + d], LLVMBuildSelect(B, cc[k], ni, iv[k], ""));
  }
  if (vv != v) free(vv);
  LLVMBuildBr(B, cont);
  LLVMPositionBuilderAtEnd(B, cont);
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
  int64_t D = p->fdim, state;
  switch (p->red->family) { /* the per-row state, updated for every pair */
  case RF_KMIN: state = kg_kheap(p) ? 6 * D : 2 * (int64_t)p->k * D; break; /* a heap's offer
                                                                            is 3 slots' code */
  case RF_SUM: state = p->scheme == KEOPS_SUM_DIRECT ? D : 2 * D; break;
  default: state = 2 * D; break;
  }
  /* a state entry costs ~32 operations: the states of a row block live across the j loop,
   * and past the vector registers every one spills (measured: a 100-wide Sum compiles as
   * slowly as a 3000-operation scalar formula) */
  return size + 32 * state;
}

int kg_check_size(const fe_program *p, kerr *e) {
  int64_t size = kg_size(p);
  if (size <= KG_MAX_SIZE) return 0;
  kerr_set(e, KEOPS_ERROR_UNSUPPORTED,
           "the formula is too large for the JIT: its kernel size is %lld (scalar operations per "
           "pair, plus 32 per reduction state entry: %d outputs) where the limit is %d; split the "
           "outputs into several kernels or reduce the dimensions (the REFERENCE backend runs it)",
           (long long)size, p->fdim, KG_MAX_SIZE);
  return -1;
}

/* ---- K-min heaps (kg_kheap) ----------------------------------------------------------- */

int kg_kheap(const fe_program *p) {
  return p->red->family == RF_KMIN && (int64_t)p->k * p->fdim > KG_KMIN_UNROLL;
}

int64_t kg_kheap_entries(const fe_program *p, int w, int u) {
  return kg_kheap(p) ? (int64_t)p->k * p->fdim * w * u : 0;
}

/* (va, ia) ranks after (vb, ib) in red.c's order: empty slots (index -1) last, then by value
 * in the reduction's direction, then by index. Scalars. */
static LLVMValueRef worse(kb *K, LLVMValueRef va, LLVMValueRef ia, LLVMValueRef vb, LLVMValueRef ib) {
  LLVMValueRef zero = kg_i64(K, 0), t = LLVMConstInt(K->i1, 1, 0), f = LLVMConstInt(K->i1, 0, 0);
  LLVMValueRef after = LLVMBuildFCmp(B, K->p->red->dir < 0 ? LLVMRealOGT : LLVMRealOLT, va, vb, "");
  LLVMValueRef tie = LLVMBuildAnd(B, LLVMBuildFCmp(B, LLVMRealOEQ, va, vb, ""),
                                  LLVMBuildICmp(B, LLVMIntSGT, ia, ib, ""), "");
  LLVMValueRef full = LLVMBuildSelect(B, LLVMBuildICmp(B, LLVMIntSLT, ia, zero, ""), t,
                                      LLVMBuildOr(B, after, tie, ""), "");
  return LLVMBuildSelect(B, LLVMBuildICmp(B, LLVMIntSLT, ib, zero, ""), f, full, "");
}

static LLVMValueRef heap_ptr(kb *K, int idx, LLVMValueRef base, LLVMValueRef at) {
  return kg_gep(K, idx ? K->i64 : K->L.T, base, at);
}

/* void sift(T *v, i64 *ix, i64 n, i64 i): moves entry i down until no child ranks after it. */
static void build_sift(kb *K, LLVMValueRef fn) {
  LLVMValueRef prm[4];
  LLVMGetParams(fn, prm);
  LLVMValueRef v = prm[0], ix = prm[1], n = prm[2];
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(K->L.C, fn, "entry");
  LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(K->L.C, fn, "loop");
  LLVMBasicBlockRef pick = LLVMAppendBasicBlockInContext(K->L.C, fn, "pick");
  LLVMBasicBlockRef swap = LLVMAppendBasicBlockInContext(K->L.C, fn, "swap");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(K->L.C, fn, "done");
  LLVMPositionBuilderAtEnd(B, entry);
  LLVMBuildBr(B, loop);
  LLVMPositionBuilderAtEnd(B, loop);
  LLVMValueRef i = LLVMBuildPhi(B, K->i64, "");
  LLVMValueRef l = LLVMBuildAdd(B, LLVMBuildMul(B, i, kg_i64(K, 2), ""), kg_i64(K, 1), "");
  LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, l, n, ""), pick, done);
  LLVMPositionBuilderAtEnd(B, pick);
  LLVMValueRef r = LLVMBuildAdd(B, l, kg_i64(K, 1), "");
  LLVMValueRef has_r = LLVMBuildICmp(B, LLVMIntSLT, r, n, "");
  LLVMValueRef rr = LLVMBuildSelect(B, has_r, r, l, ""); /* never read past n */
  unsigned ts = kg_tsize(K);
  LLVMValueRef vl = kg_load(K, K->L.T, heap_ptr(K, 0, v, l), ts), il = kg_load(K, K->i64, heap_ptr(K, 1, ix, l), 8);
  LLVMValueRef vr = kg_load(K, K->L.T, heap_ptr(K, 0, v, rr), ts), ir = kg_load(K, K->i64, heap_ptr(K, 1, ix, rr), 8);
  LLVMValueRef take_r = LLVMBuildAnd(B, has_r, worse(K, vr, ir, vl, il), "");
  LLVMValueRef c = LLVMBuildSelect(B, take_r, r, l, "");
  LLVMValueRef vc = LLVMBuildSelect(B, take_r, vr, vl, ""), ic = LLVMBuildSelect(B, take_r, ir, il, "");
  LLVMValueRef vi = kg_load(K, K->L.T, heap_ptr(K, 0, v, i), ts), ii = kg_load(K, K->i64, heap_ptr(K, 1, ix, i), 8);
  LLVMBuildCondBr(B, worse(K, vc, ic, vi, ii), swap, done);
  LLVMPositionBuilderAtEnd(B, swap);
  kg_store(K, vc, heap_ptr(K, 0, v, i), ts);
  kg_store(K, ic, heap_ptr(K, 1, ix, i), 8);
  kg_store(K, vi, heap_ptr(K, 0, v, c), ts);
  kg_store(K, ii, heap_ptr(K, 1, ix, c), 8);
  LLVMBuildBr(B, loop);
  LLVMAddIncoming(i, &prm[3], &entry, 1);
  LLVMAddIncoming(i, &c, &swap, 1);
  LLVMPositionBuilderAtEnd(B, done);
  LLVMBuildRetVoid(B);
}

/* void sort(T *v, i64 *ix, i64 n): heap sort, leaving the best entry first. */
static void build_sort(kb *K, LLVMValueRef fn, LLVMValueRef sift) {
  LLVMValueRef prm[3];
  LLVMGetParams(fn, prm);
  LLVMPositionBuilderAtEnd(B, LLVMAppendBasicBlockInContext(K->L.C, fn, "entry"));
  kg_loop lp;
  LLVMValueRef t = kg_loop_begin(K, &lp, kg_i64(K, 1), prm[2]);
  LLVMValueRef end = LLVMBuildSub(B, prm[2], t, ""), zero = kg_i64(K, 0);
  unsigned ts = kg_tsize(K);
  LLVMValueRef v0 = kg_load(K, K->L.T, heap_ptr(K, 0, prm[0], zero), ts), i0 = kg_load(K, K->i64, heap_ptr(K, 1, prm[1], zero), 8);
  kg_store(K, kg_load(K, K->L.T, heap_ptr(K, 0, prm[0], end), ts), heap_ptr(K, 0, prm[0], zero), ts);
  kg_store(K, kg_load(K, K->i64, heap_ptr(K, 1, prm[1], end), 8), heap_ptr(K, 1, prm[1], zero), 8);
  kg_store(K, v0, heap_ptr(K, 0, prm[0], end), ts);
  kg_store(K, i0, heap_ptr(K, 1, prm[1], end), 8);
  LLVMValueRef args[4] = {prm[0], prm[1], end, zero};
  LLVMBuildCall2(B, LLVMGlobalGetValueType(sift), sift, args, 4, "");
  kg_loop_end(K, &lp, kg_i64(K, 1));
  LLVMBuildRetVoid(B);
}

/* The module's sift (sort = 0) or sort (sort = 1) function for this dtype and direction,
 * built on first use. */
static LLVMValueRef heap_fn(kb *K, int sort) {
  char name[64];
  int f64 = K->L.T == LLVMDoubleTypeInContext(K->L.C), mx = K->p->red->dir > 0;
  snprintf(name, sizeof name, "keops.kmin.%s.%s.%s", sort ? "sort" : "sift", f64 ? "f64" : "f32", mx ? "max" : "min");
  LLVMValueRef fn = LLVMGetNamedFunction(K->L.M, name);
  if (fn) return fn;
  LLVMValueRef sift = sort ? heap_fn(K, 0) : NULL;
  LLVMTypeRef ps[4] = {K->ptr, K->ptr, K->i64, K->i64};
  fn = LLVMAddFunction(K->L.M, name, LLVMFunctionType(LLVMVoidTypeInContext(K->L.C), ps, sort ? 3 : 4, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  LLVMBasicBlockRef at = LLVMGetInsertBlock(B);
  LLVMValueRef caller = K->fn;
  K->fn = fn; /* kg_loop builds in K->fn */
  if (sort) build_sort(K, fn, sift);
  else build_sift(K, fn);
  K->fn = caller;
  LLVMPositionBuilderAtEnd(B, at);
  return fn;
}

/* First entry of the heap of component d, lane `lane` (i64), row block u. */
static LLVMValueRef heap_base(kb *K, int u, int d, LLVMValueRef lane) {
  int64_t first = ((int64_t)u * K->D + d) * K->W;
  return LLVMBuildMul(B, LLVMBuildAdd(B, kg_i64(K, first), lane, ""), kg_i64(K, K->p->k), "");
}

static LLVMValueRef lane_of(kb *K, LLVMValueRef v, LLVMValueRef lane) {
  return K->W == 1 ? v : LLVMBuildExtractElement(B, v, lane, "");
}

/* The heap at base takes (x, j) in place of its root; the slots get the new root. */
static void heap_push(kb *K, int u, int d, LLVMValueRef lane, LLVMValueRef x, LLVMValueRef j) {
  LLVMValueRef base = heap_base(K, u, d, lane);
  LLVMValueRef pv = heap_ptr(K, 0, K->hv, base), pi = heap_ptr(K, 1, K->hi, base);
  kg_store(K, x, pv, kg_tsize(K));
  kg_store(K, j, pi, 8);
  LLVMValueRef sift = heap_fn(K, 0), args[4] = {pv, pi, kg_i64(K, K->p->k), kg_i64(K, 0)};
  LLVMBuildCall2(B, LLVMGlobalGetValueType(sift), sift, args, 4, "");
  LLVMValueRef rv = kg_load(K, K->L.T, pv, kg_tsize(K)), ri = kg_load(K, K->i64, pi, 8);
  if (K->W > 1) {
    rv = LLVMBuildInsertElement(B, ld(K, K->a[u][d]), rv, lane, "");
    ri = LLVMBuildInsertElement(B, ld(K, K->ix[u][d]), ri, lane, "");
  }
  st(K, K->a[u][d], rv);
  st(K, K->ix[u][d], ri);
}

/* x (index jx) enters the heaps of the lanes where it beats the root. */
static void heap_offer(kb *K, int u, int d, LLVMValueRef x, LLVMValueRef jx) {
  LLVMValueRef c = takes(K, x, ld(K, K->a[u][d]), ld(K, K->ix[u][d]));
  LLVMBasicBlockRef ins = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "kheap");
  LLVMBasicBlockRef cont = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "kheap_done");
  LLVMBuildCondBr(B, any_lane(K, c), ins, cont);
  LLVMPositionBuilderAtEnd(B, ins);
  if (K->W == 1) {
    heap_push(K, u, d, kg_i64(K, 0), x, jx);
    LLVMBuildBr(B, cont);
    LLVMPositionBuilderAtEnd(B, cont);
    return;
  }
  /* visit only the lanes that insert (usually one or two of W): lowest set bit first */
  LLVMValueRef bits = LLVMBuildZExt(B, LLVMBuildBitCast(B, c, LLVMIntTypeInContext(K->L.C, (unsigned)K->W), ""),
                                    K->i64, "");
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "klanes");
  LLVMBasicBlockRef push = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "kpush");
  LLVMBuildBr(B, head);
  LLVMPositionBuilderAtEnd(B, head);
  LLVMValueRef m = LLVMBuildPhi(B, K->i64, "");
  LLVMAddIncoming(m, &bits, &ins, 1);
  LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntEQ, m, kg_i64(K, 0), ""), cont, push);
  LLVMPositionBuilderAtEnd(B, push);
  unsigned id = LLVMLookupIntrinsicID("llvm.cttz", 9);
  LLVMValueRef cttz = LLVMGetIntrinsicDeclaration(K->L.M, id, &K->i64, 1);
  LLVMValueRef args[2] = {m, LLVMConstInt(K->i1, 1, 0)}; /* m != 0 here */
  LLVMValueRef lane = LLVMBuildCall2(B, LLVMIntrinsicGetType(K->L.C, id, &K->i64, 1), cttz, args, 2, "");
  heap_push(K, u, d, lane, lane_of(K, x, lane), lane_of(K, jx, lane));
  LLVMValueRef rest = LLVMBuildAnd(B, m, LLVMBuildSub(B, m, kg_i64(K, 1), ""), "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(B);
  LLVMAddIncoming(m, &rest, &latch, 1);
  LLVMBuildBr(B, head);
  LLVMPositionBuilderAtEnd(B, cont);
}

static void heap_init(kb *K, int u) {
  int64_t n = (int64_t)K->p->k * K->D * K->W;
  kg_loop lp;
  LLVMValueRef e = kg_loop_begin(K, &lp, kg_i64(K, u * n), kg_i64(K, (u + 1) * n));
  kg_store(K, LLVMConstReal(K->L.T, K->p->red->dir < 0 ? INFINITY : -INFINITY), heap_ptr(K, 0, K->hv, e), kg_tsize(K));
  kg_store(K, kg_i64(K, -1), heap_ptr(K, 1, K->hi, e), 8);
  kg_loop_end(K, &lp, kg_i64(K, 1));
}

/* Sorts each heap of row block u and writes it in red.c's k-major layout: values, then
 * indices (both as doubles in partial mode). */
static void heap_finalize(kb *K, int u, const kg_sink *o) {
  const fe_program *p = K->p;
  LLVMTypeRef dt = LLVMDoubleTypeInContext(K->L.C);
  int64_t n = (int64_t)p->k * K->D;
  LLVMValueRef sort = heap_fn(K, 1);
  for (int d = 0; d < K->D; d++) {
    kg_loop ll, lk;
    LLVMValueRef lane = kg_loop_begin(K, &ll, kg_i64(K, 0), kg_i64(K, K->W));
    LLVMValueRef base = heap_base(K, u, d, lane);
    LLVMValueRef pv = heap_ptr(K, 0, K->hv, base), pi = heap_ptr(K, 1, K->hi, base);
    LLVMValueRef args[3] = {pv, pi, kg_i64(K, p->k)};
    LLVMBuildCall2(B, LLVMGlobalGetValueType(sort), sort, args, 3, "");
    LLVMValueRef k = kg_loop_begin(K, &lk, kg_i64(K, 0), kg_i64(K, p->k));
    LLVMValueRef v = kg_load(K, K->L.T, heap_ptr(K, 0, pv, k), kg_tsize(K));
    LLVMValueRef i = kg_load(K, K->i64, heap_ptr(K, 1, pi, k), 8);
    LLVMValueRef col = LLVMBuildAdd(B, LLVMBuildMul(B, k, kg_i64(K, K->D), ""), kg_i64(K, d), "");
    if (o->partial) {
      o->put(K, o, KG_VAL, col, u, lane, K->L.T == dt ? v : LLVMBuildFPExt(B, v, dt, ""));
      o->put(K, o, KG_VAL, LLVMBuildAdd(B, col, kg_i64(K, n), ""), u, lane, LLVMBuildSIToFP(B, i, dt, ""));
    } else {
      if (p->red->outputs & RO_VAL) o->put(K, o, KG_VAL, col, u, lane, v);
      if (p->red->outputs & RO_IDX) o->put(K, o, KG_IDX, col, u, lane, i);
    }
    kg_loop_end(K, &lk, kg_i64(K, 1));
    kg_loop_end(K, &ll, kg_i64(K, 1));
  }
}

void kg_accumulate(kb *K, int u, LLVMValueRef *f) {
  const red_row *r = K->p->red;
  switch (r->family) {
  case RF_SUM:
    for (int d = 0; d < K->D; d++) {
      LLVMValueRef v = to_acc(K, f[d]);
      if (K->p->scheme == KEOPS_SUM_KAHAN) { /* no fast-math flags: LLVM keeps the order */
        LLVMValueRef acc = ld(K, K->a[u][d]);
        LLVMValueRef y = LLVMBuildFSub(B, v, ld(K, K->x[u][d]), "");
        LLVMValueRef t = LLVMBuildFAdd(B, acc, y, "");
        st(K, K->x[u][d], LLVMBuildFSub(B, LLVMBuildFSub(B, t, acc, ""), y, ""));
        st(K, K->a[u][d], t);
      } else {
        LLVMValueRef slot = K->p->scheme == KEOPS_SUM_BLOCK ? K->x[u][d] : K->a[u][d];
        st(K, slot, lw_contract(LLVMBuildFAdd(B, ld(K, slot), v, "")));
      }
    }
    return;
  case RF_MINMAX:
    for (int d = 0; d < K->D; d++) {
      LLVMValueRef c = takes(K, f[d], ld(K, K->a[u][d]), ld(K, K->ix[u][d]));
      st(K, K->a[u][d], LLVMBuildSelect(B, c, f[d], ld(K, K->a[u][d]), ""));
      st(K, K->ix[u][d], LLVMBuildSelect(B, c, index_of(K, d), ld(K, K->ix[u][d]), ""));
    }
    return;
  case RF_KMIN:
    for (int d = 0; d < K->D; d++) {
      if (kg_kheap(K->p)) heap_offer(K, u, d, f[d], index_of(K, d));
      else kmin_insert(K, u, d, f[d]);
    }
    return;
  default: { /* LSE: merge (m, s) with (x, w), see red.c */
    LLVMValueRef x = to_acc(K, f[0]), m = ld(K, K->a[u][0]);
    LLVMValueRef gt = LLVMBuildFCmp(B, LLVMRealOGT, x, m, "");
    LLVMValueRef hi = LLVMBuildSelect(B, gt, x, m, ""), lo = LLVMBuildSelect(B, gt, m, x, "");
    LLVMValueRef e = vm_call(K->L.M, B, VM_EXP, LLVMBuildFSub(B, lo, hi, ""), NULL);
    e = LLVMBuildSelect(B, LLVMBuildFCmp(B, LLVMRealOEQ, x, m, ""), aconst(K, 1), e, "");
    for (int q = 1; q <= K->E; q++) {
      LLVMValueRef s = ld(K, K->a[u][q]), w = to_acc(K, f[q]);
      LLVMValueRef up = LLVMBuildFAdd(B, LLVMBuildFMul(B, s, e, ""), w, "");
      LLVMValueRef keep = LLVMBuildFAdd(B, s, LLVMBuildFMul(B, w, e, ""), "");
      st(K, K->a[u][q], LLVMBuildSelect(B, gt, up, keep, ""));
    }
    st(K, K->a[u][0], hi);
  }
  }
}

/* BLOCK sums: fold the tile's partial sums into the accumulators. */
void kg_flush_block(kb *K, int u) {
  for (int d = 0; d < K->D; d++) {
    st(K, K->a[u][d], LLVMBuildFAdd(B, ld(K, K->a[u][d]), ld(K, K->x[u][d]), ""));
    st(K, K->x[u][d], aconst(K, 0));
  }
}

static LLVMValueRef from_acc(kb *K, LLVMValueRef v) {
  return K->AT == K->L.T ? v : LLVMBuildFPTrunc(B, v, K->L.VT, "");
}

static LLVMValueRef to_double(kb *K, LLVMValueRef v) {
  LLVMTypeRef dt = LLVMDoubleTypeInContext(K->L.C);
  LLVMTypeRef dvt = K->W == 1 ? dt : LLVMVectorType(dt, (unsigned)K->W);
  LLVMTypeRef et = LLVMGetTypeKind(LLVMTypeOf(v)) == LLVMVectorTypeKind ? LLVMGetElementType(LLVMTypeOf(v))
                                                                         : LLVMTypeOf(v);
  if (LLVMGetTypeKind(et) == LLVMIntegerTypeKind) return LLVMBuildSIToFP(B, v, dvt, "");
  return et == dt ? v : LLVMBuildFPExt(B, v, dvt, "");
}

void kg_finalize(kb *K, int u, const kg_sink *o) {
  const red_row *r = K->p->red;
  int n = K->nslot;
  if (kg_kheap(K->p)) {
    heap_finalize(K, u, o);
    return;
  }
  if (o->partial) { /* red.c's layout, as doubles */
    int c = 0;
    for (int s = 0; s < n; s++) o->put(K, o, KG_VAL, kg_i64(K, c++), u, NULL, to_double(K, ld(K, K->a[u][s])));
    if (r->family == RF_SUM && K->p->scheme != KEOPS_SUM_DIRECT)
      for (int s = 0; s < n; s++) o->put(K, o, KG_VAL, kg_i64(K, c++), u, NULL, to_double(K, ld(K, K->x[u][s])));
    if (r->family == RF_SUM && K->p->scheme == KEOPS_SUM_BLOCK)
      o->put(K, o, KG_VAL, kg_i64(K, c++), u, NULL, to_double(K, aconst(K, 0))); /* the block count */
    if (r->family == RF_MINMAX || r->family == RF_KMIN)
      for (int s = 0; s < n; s++) o->put(K, o, KG_VAL, kg_i64(K, c++), u, NULL, to_double(K, ld(K, K->ix[u][s])));
    return;
  }
  switch (r->family) {
  case RF_SUM:
    for (int d = 0; d < K->D; d++) {
      LLVMValueRef v = ld(K, K->a[u][d]);
      if (K->p->scheme == KEOPS_SUM_KAHAN) v = LLVMBuildFSub(B, v, ld(K, K->x[u][d]), "");
      o->put(K, o, KG_VAL, kg_i64(K, d), u, NULL, from_acc(K, v));
    }
    return;
  case RF_MINMAX: case RF_KMIN:
    for (int s = 0; s < n; s++) {
      if (r->outputs & RO_VAL) o->put(K, o, KG_VAL, kg_i64(K, s), u, NULL, ld(K, K->a[u][s]));
      if (r->outputs & RO_IDX) o->put(K, o, KG_IDX, kg_i64(K, s), u, NULL, ld(K, K->ix[u][s]));
    }
    return;
  default: {
    LLVMValueRef m = ld(K, K->a[u][0]);
    if (r->fin == FIN_RAW) {
      for (int s = 0; s < n; s++) o->put(K, o, KG_VAL, kg_i64(K, s), u, NULL, from_acc(K, ld(K, K->a[u][s])));
    } else if (r->fin == FIN_LOG) {
      for (int q = 1; q <= K->E; q++) {
        LLVMValueRef lg = vm_call(K->L.M, B, VM_LOG, ld(K, K->a[u][q]), NULL);
        o->put(K, o, KG_VAL, kg_i64(K, q - 1), u, NULL, from_acc(K, LLVMBuildFAdd(B, m, lg, "")));
      }
    } else {
      LLVMValueRef s0 = ld(K, K->a[u][1]);
      for (int q = 2; q <= K->E; q++)
        o->put(K, o, KG_VAL, kg_i64(K, q - 2), u, NULL, from_acc(K, LLVMBuildFDiv(B, ld(K, K->a[u][q]), s0, "")));
    }
  }
  }
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
}

void kg_state_alloc(kb *K) {
  const fe_program *p = K->p;
  K->nslot = kg_slots(K);
  int idx = p->red->family == RF_MINMAX || p->red->family == RF_KMIN;
  for (int u = 0; u < K->U; u++) {
    K->a[u] = calloc((size_t)K->nslot, sizeof(LLVMValueRef));
    K->x[u] = calloc((size_t)K->nslot, sizeof(LLVMValueRef));
    K->ix[u] = calloc((size_t)K->nslot, sizeof(LLVMValueRef));
    for (int s = 0; s < K->nslot && K->a[u] && K->x[u] && K->ix[u]; s++) {
      K->a[u][s] = kg_alloca(K, idx ? K->L.VT : K->AVT, 1);
      if (idx) K->ix[u][s] = kg_alloca(K, K->IVT, 1);
      else K->x[u][s] = kg_alloca(K, K->AVT, 1);
    }
  }
}

void kg_kheap_alloca(kb *K) {
  int64_t n = kg_kheap_entries(K->p, K->W, K->U);
  if (!n) return;
  K->hv = kg_alloca(K, K->L.T, n);
  K->hi = kg_alloca(K, K->i64, n);
}

void kg_state_free(kb *K) {
  for (int u = 0; u < K->U; u++) free(K->a[u]), free(K->x[u]), free(K->ix[u]);
}

/* ---- red.c's double states (GPU j-split: W = 1) --------------------------------------- */

/* Entry c of the double state at base, converted to type t. */
static LLVMValueRef state_entry_at(kb *K, LLVMValueRef base, LLVMValueRef c, LLVMTypeRef t) {
  LLVMTypeRef dt = LLVMDoubleTypeInContext(K->L.C);
  LLVMValueRef v = kg_load(K, dt, kg_gep(K, dt, base, c), 8);
  if (LLVMGetTypeKind(t) == LLVMIntegerTypeKind) return LLVMBuildFPToSI(B, v, t, "");
  return t == dt ? v : LLVMBuildFPTrunc(B, v, t, "");
}

static LLVMValueRef state_entry(kb *K, LLVMValueRef base, int c, LLVMTypeRef t) {
  return state_entry_at(K, base, kg_i64(K, c), t);
}

/* Entry k (i64) of component d in a K-min double state: its value (merge = 0) and index. */
static void kmin_entry(kb *K, LLVMValueRef base, LLVMValueRef k, int d, LLVMValueRef *v, LLVMValueRef *i) {
  LLVMValueRef c = LLVMBuildAdd(B, LLVMBuildMul(B, k, kg_i64(K, K->D), ""), kg_i64(K, d), "");
  *v = state_entry_at(K, base, c, K->L.T);
  *i = state_entry_at(K, base, LLVMBuildAdd(B, c, kg_i64(K, (int64_t)K->p->k * K->D), ""), K->i64);
}

/* A sorted state read back to front is a heap with the worst entry at the root. */
static void heap_load(kb *K, int u, LLVMValueRef base) {
  for (int d = 0; d < K->D; d++) {
    LLVMValueRef first = heap_base(K, u, d, kg_i64(K, 0)), v, i;
    kg_loop lp;
    LLVMValueRef k = kg_loop_begin(K, &lp, kg_i64(K, 0), kg_i64(K, K->p->k));
    kmin_entry(K, base, k, d, &v, &i);
    LLVMValueRef at = LLVMBuildAdd(B, first, LLVMBuildSub(B, kg_i64(K, K->p->k - 1), k, ""), "");
    kg_store(K, v, heap_ptr(K, 0, K->hv, at), kg_tsize(K));
    kg_store(K, i, heap_ptr(K, 1, K->hi, at), 8);
    kg_loop_end(K, &lp, kg_i64(K, 1));
    st(K, K->a[u][d], kg_load(K, K->L.T, heap_ptr(K, 0, K->hv, first), kg_tsize(K)));
    st(K, K->ix[u][d], kg_load(K, K->i64, heap_ptr(K, 1, K->hi, first), 8));
  }
}

static void heap_merge(kb *K, int u, LLVMValueRef base) {
  for (int d = 0; d < K->D; d++) {
    LLVMValueRef v, i;
    kg_loop lp;
    LLVMValueRef k = kg_loop_begin(K, &lp, kg_i64(K, 0), kg_i64(K, K->p->k));
    kmin_entry(K, base, k, d, &v, &i);
    heap_offer(K, u, d, v, i);
    kg_loop_end(K, &lp, kg_i64(K, 1));
  }
}

static int is_idx_family(const kb *K) {
  return K->p->red->family == RF_MINMAX || K->p->red->family == RF_KMIN;
}

void kg_state_load(kb *K, int u, LLVMValueRef base) {
  int n = K->nslot, sum = K->p->red->family == RF_SUM;
  if (kg_kheap(K->p)) {
    heap_load(K, u, base);
    return;
  }
  for (int s = 0; s < n; s++) {
    st(K, K->a[u][s], state_entry(K, base, s, is_idx_family(K) ? K->L.T : K->AT));
    if (is_idx_family(K)) st(K, K->ix[u][s], state_entry(K, base, n + s, K->i64));
    else if (sum && K->p->scheme != KEOPS_SUM_DIRECT) st(K, K->x[u][s], state_entry(K, base, n + s, K->AT));
    else st(K, K->x[u][s], aconst(K, 0));
  }
}

/* States of later indices merge like their contents arriving in order: a sum's total is one
 * more term, a min/max slot or a K-min entry one more candidate with its own index (ties
 * keep the earlier state's), an LSE state one more (F, w) = (m, s). */
void kg_state_merge(kb *K, int u, LLVMValueRef base) {
  const fe_program *p = K->p;
  int n = K->nslot, D = K->D;
  if (kg_kheap(p)) {
    heap_merge(K, u, base);
    return;
  }
  LLVMValueRef *f = calloc((size_t)n + (size_t)D, sizeof *f), *ix = f + n;
  if (!f) {
    kerr_set(K->L.err, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return;
  }
  K->f_acc = !is_idx_family(K);
  K->jidx = ix;
  if (p->red->family == RF_KMIN) {
    for (int k = 0; k < p->k; k++) { /* entry k of every component, in rank order */
      for (int d = 0; d < D; d++) {
        f[d] = state_entry(K, base, k * D + d, K->L.T);
        ix[d] = state_entry(K, base, n + k * D + d, K->i64);
      }
      kg_accumulate(K, u, f);
    }
  } else {
    for (int s = 0; s < n; s++) {
      f[s] = state_entry(K, base, s, is_idx_family(K) ? K->L.T : K->AT);
      if (is_idx_family(K)) ix[s] = state_entry(K, base, n + s, K->i64);
      else if (p->red->family == RF_SUM && p->scheme != KEOPS_SUM_DIRECT) {
        LLVMValueRef x = state_entry(K, base, n + s, K->AT); /* BLOCK part, KAHAN comp */
        f[s] = p->scheme == KEOPS_SUM_BLOCK ? LLVMBuildFAdd(B, f[s], x, "") : LLVMBuildFSub(B, f[s], x, "");
      }
    }
    kg_accumulate(K, u, f);
    if (p->red->family == RF_SUM && p->scheme == KEOPS_SUM_BLOCK) kg_flush_block(K, u);
  }
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
