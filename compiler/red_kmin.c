/* The KMIN family: the K best values of each component, with their indices (KMin, ArgKMin,
 * KMin_ArgKMin; K slots per component, D = fdim).
 *
 *   [val K*D][idx K*D], k-major (entry k*D + d) like the output, each component sorted by
 *   (value ascending, index ascending) with the empty slots (+inf, -1) last.
 *   accumulate: x (not NaN) goes in before the first slot that is empty or strictly worse, so
 *   equal values stay in index order; the last slot falls off. combine: merge of the two
 *   sorted lists, first K kept. Fewer than K values: the rest stays (+inf, -1).
 *
 * In the JIT, up to KG_KMIN_UNROLL slots per row (K * dim) are registers and an entry goes
 * through an unrolled sorted network. Above, the K best of each row and component are kept
 * in a binary heap in memory (worst at the root, whose value and index stay in the slots
 * a/ix as the entry threshold): compile time and code size no longer grow with K, and an
 * insertion costs O(log K). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kgen.h"

#define B (K->L.bld)

/* ---- the state and the C steps ----------------------------------------------------------- */

static red_layout kmin_layout(int fdim, int k, keops_sum_scheme scheme) {
  (void)scheme;
  return (red_layout){.slots = k * fdim, .idx = 1};
}

static int kmin_width(const red_row *r, int fdim, int k) {
  (void)r;
  return k * fdim;
}

static int kmin_spec(red_spec *s, int k, keops_sum_scheme scheme, int64_t nred, kerr *e) {
  (void)scheme, (void)nred;
  if (k < 1 || k > INT_MAX / 2 / s->fdim) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "%s needs 1 <= K <= %d for a formula of dim %d, got %d",
             s->row->name, INT_MAX / 2 / s->fdim, s->fdim, k);
    return -1;
  }
  s->k = k;
  return 0;
}

static void kmin_accumulate(const red_spec *s, double *st, const double *f, int64_t jj) {
  int D = s->fdim, K = s->k, dir = s->row->dir;
  double *val = st, *idx = st + (size_t)K * D, j = (double)jj;
  for (int d = 0; d < D; d++) {
    int p = 0;
    /* most values do not make the K best: one comparison with the last slot tells */
    if (!red_goes_before(dir, f[d], j, val[(size_t)(K - 1) * D + d], idx[(size_t)(K - 1) * D + d])) continue;
    /* j is larger than every index held, so "goes before" means empty or strictly better */
    while (p < K && !red_goes_before(dir, f[d], j, val[(size_t)p * D + d], idx[(size_t)p * D + d])) p++;
    if (p == K) continue;
    for (int q = K - 1; q > p; q--) {
      val[(size_t)q * D + d] = val[(size_t)(q - 1) * D + d];
      idx[(size_t)q * D + d] = idx[(size_t)(q - 1) * D + d];
    }
    val[(size_t)p * D + d] = f[d];
    idx[(size_t)p * D + d] = j;
  }
}

/* Merges the sorted lists of component d in place into st: count how many of each list make
 * the first K, then merge from the back so no unread slot of st is overwritten. Slots past
 * the merged count keep what st had there: empty, since fewer than K kept means both lists
 * were used up. */
static void kmin_combine(const red_spec *s, double *st, const double *o) {
  int D = s->fdim, K = s->k, dir = s->row->dir;
  size_t KD = (size_t)K * D;
  for (int d = 0; d < D; d++) {
#define V(a, q) (a)[(size_t)(q)*D + d]
#define I(a, q) (a)[KD + (size_t)(q)*D + d]
    int na = 0, nb = 0;
    for (int t = 0; t < K; t++) {
      int a_ok = na < K && I(st, na) >= 0, b_ok = nb < K && I(o, nb) >= 0;
      if (!a_ok && !b_ok) break;
      if (a_ok && (!b_ok || red_goes_before(dir, V(st, na), I(st, na), V(o, nb), I(o, nb))))
        na++;
      else
        nb++;
    }
    for (int t = na + nb - 1; t >= 0; t--) {
      int from_a = nb == 0 || (na > 0 && !red_goes_before(dir, V(st, na - 1), I(st, na - 1),
                                                          V(o, nb - 1), I(o, nb - 1)));
      double v = from_a ? V(st, na - 1) : V(o, nb - 1);
      double i = from_a ? I(st, na - 1) : I(o, nb - 1);
      if (from_a)
        na--;
      else
        nb--;
      V(st, t) = v;
      I(st, t) = i;
    }
#undef V
#undef I
  }
}

/* ---- the IR steps: the unrolled sorted network ------------------------------------------- */

static void kmin_insert(kb *K, int u, int d, LLVMValueRef x) {
  LLVMValueRef jx = kg_index_of(K, d);
  int Kk = K->p->k, D = K->D;
  LLVMValueRef last = kg_takes(K, x, kg_ld(K, K->a[u][(Kk - 1) * D + d]), kg_ld(K, K->ix[u][(Kk - 1) * D + d]));
  /* most pairs are not among the K best so far: skip the insertion network for them */
  LLVMBasicBlockRef ins = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "kinsert");
  LLVMBasicBlockRef cont = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "kcont");
  LLVMBuildCondBr(B, kg_any_lane(K, last), ins, cont);
  LLVMPositionBuilderAtEnd(B, ins);
  LLVMValueRef v[64 * 4], ix[64 * 4], c[64 * 4];
  LLVMValueRef *vv = Kk <= 256 ? v : malloc(sizeof *vv * (size_t)Kk * 3);
  LLVMValueRef *iv = Kk <= 256 ? ix : vv + Kk, *cc = Kk <= 256 ? c : vv + 2 * Kk;
  for (int k = 0; k < Kk; k++) {
    vv[k] = kg_ld(K, K->a[u][k * D + d]);
    iv[k] = kg_ld(K, K->ix[u][k * D + d]);
    cc[k] = kg_takes(K, x, vv[k], iv[k]);
  }
  /* sorted slots: cc is monotone in k, so slot k takes x where cc[k] and not cc[k-1], and
   * the previous slot's content where cc[k-1] */
  for (int k = Kk - 1; k >= 0; k--) {
    LLVMValueRef nv = x, ni = jx;
    if (k > 0) {
      nv = LLVMBuildSelect(B, cc[k - 1], vv[k - 1], x, "");
      ni = LLVMBuildSelect(B, cc[k - 1], iv[k - 1], jx, "");
    }
    kg_st(K, K->a[u][k * D + d], LLVMBuildSelect(B, cc[k], nv, vv[k], ""));
    kg_st(K, K->ix[u][k * D + d], LLVMBuildSelect(B, cc[k], ni, iv[k], ""));
  }
  if (vv != v) free(vv);
  LLVMBuildBr(B, cont);
  LLVMPositionBuilderAtEnd(B, cont);
}


/* ---- the IR steps: the heaps (kg_kheap) -------------------------------------------------- */

int kg_kheap(const fe_program *p) {
  return p->red->fam == &red_KMIN && (int64_t)p->k * p->fdim > KG_KMIN_UNROLL;
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
    rv = LLVMBuildInsertElement(B, kg_ld(K, K->a[u][d]), rv, lane, "");
    ri = LLVMBuildInsertElement(B, kg_ld(K, K->ix[u][d]), ri, lane, "");
  }
  kg_st(K, K->a[u][d], rv);
  kg_st(K, K->ix[u][d], ri);
}

/* x (index jx) enters the heaps of the lanes where it beats the root. */
static void heap_offer(kb *K, int u, int d, LLVMValueRef x, LLVMValueRef jx) {
  LLVMValueRef c = kg_takes(K, x, kg_ld(K, K->a[u][d]), kg_ld(K, K->ix[u][d]));
  LLVMBasicBlockRef ins = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "kheap");
  LLVMBasicBlockRef cont = LLVMAppendBasicBlockInContext(K->L.C, K->fn, "kheap_done");
  LLVMBuildCondBr(B, kg_any_lane(K, c), ins, cont);
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

void kg_kheap_alloca(kb *K) {
  int64_t n = kg_kheap_entries(K->p, K->W, K->U);
  if (!n) return;
  K->hv = kg_alloca(K, K->L.T, n);
  K->hi = kg_alloca(K, K->i64, n);
}


/* Entry k (i64) of component d in a K-min double state: its value (merge = 0) and index. */
static void kmin_entry(kb *K, LLVMValueRef base, LLVMValueRef k, int d, LLVMValueRef *v, LLVMValueRef *i) {
  LLVMValueRef c = LLVMBuildAdd(B, LLVMBuildMul(B, k, kg_i64(K, K->D), ""), kg_i64(K, d), "");
  *v = kg_state_entry_at(K, base, c, K->L.T);
  *i = kg_state_entry_at(K, base, LLVMBuildAdd(B, c, kg_i64(K, (int64_t)K->p->k * K->D), ""), K->i64);
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
    kg_st(K, K->a[u][d], kg_load(K, K->L.T, heap_ptr(K, 0, K->hv, first), kg_tsize(K)));
    kg_st(K, K->ix[u][d], kg_load(K, K->i64, heap_ptr(K, 1, K->hi, first), 8));
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

/* ---- the IR steps ------------------------------------------------------------------------ */

static int kmin_slots(kb *K) { return kg_kheap(K->p) ? K->D : K->p->k * K->D; }

/* a heap's offer is 3 slots' code */
static int64_t kmin_cost(const fe_program *p) {
  return kg_kheap(p) ? 6 * (int64_t)p->fdim : 2 * (int64_t)p->k * p->fdim;
}

static void kmin_ir_init(kb *K, int u) {
  kg_pair_init(K, u);
  if (kg_kheap(K->p)) heap_init(K, u);
}

static void kmin_ir_accumulate(kb *K, int u, LLVMValueRef *f) {
  for (int d = 0; d < K->D; d++) {
    if (kg_kheap(K->p)) heap_offer(K, u, d, f[d], kg_index_of(K, d));
    else kmin_insert(K, u, d, f[d]);
  }
}

static void kmin_ir_finalize(kb *K, int u, const kg_sink *o) {
  if (kg_kheap(K->p)) heap_finalize(K, u, o);
  else kg_pair_finalize(K, u, o);
}

static void kmin_ir_write(kb *K, int u, const kg_sink *o) {
  if (kg_kheap(K->p)) heap_finalize(K, u, o);
  else kg_slots_write(K, u, o);
}

static void kmin_ir_load(kb *K, int u, LLVMValueRef base) {
  if (kg_kheap(K->p)) heap_load(K, u, base);
  else kg_slots_load(K, u, base);
}

/* Entry k of every component, in rank order, as one more candidate. */
static void kmin_ir_merge(kb *K, int u, LLVMValueRef base, LLVMValueRef *f, LLVMValueRef *ix) {
  int D = K->D, n = K->nslot;
  if (kg_kheap(K->p)) {
    heap_merge(K, u, base);
    return;
  }
  for (int k = 0; k < K->p->k; k++) {
    for (int d = 0; d < D; d++) {
      f[d] = kg_state_entry(K, base, k * D + d, K->L.T);
      ix[d] = kg_state_entry(K, base, n + k * D + d, K->i64);
    }
    kmin_ir_accumulate(K, u, f);
  }
}

static const kg_family kmin_ir = {KG_STEPS(kmin_slots, kmin_cost, kmin_ir_init, kmin_ir_accumulate,
                                           kmin_ir_finalize, kmin_ir_write, kmin_ir_load,
                                           kmin_ir_merge)};

const red_family red_KMIN = {
    .name = "KMIN",
    .takes_k = 1,
    RED_STEPS(kmin_layout, kmin_width, kmin_spec, red_slots_init, kmin_accumulate, kmin_combine,
              red_slots_finalize),
    .ir = &kmin_ir,
};
