/* The LSE family (LogSumExp, SumSoftMaxWeight, Max_SumShiftExp...): the program formula is
 * Concat(F, w) (fe.c): F = f[0], weight w = f[1..E'], E' = fdim - 1.
 *
 *   [m][s E'], init m = -inf, s = 0: sum_j w_j exp(F_j) = exp(m) * s.
 *   merge (m, s) with (x, t) (accumulate: (x, t) = (F_j, w_j); combine: the other state):
 *     x > m:  s = s * exp(m - x) + t;  m = x
 *     x == m: s += t            (same as the general rule when finite; no inf - inf = NaN
 *                                when both are -inf or +inf)
 *     else:   s += t * exp(x - m)   (x = -inf adds nothing; a NaN x makes s NaN)
 *   This is KeOps's Max_SumShiftExp update with the tie case split out. Sum schemes do not
 *   apply to the interpreter (the update is already in double there); the JIT takes the
 *   double-accumulator option.
 *   finalize: FIN_RAW (m, s_1..s_E'); FIN_LOG m + log s_e (empty: -inf);
 *   FIN_SOFTMAX s_e / s_0 for e >= 1 (empty: 0/0 = NaN). */
#include <math.h>

#include "kgen.h"
#include "vmath.h"

#define B (K->L.bld)

/* ---- the state and the C steps ----------------------------------------------------------- */

static red_layout lse_layout(int fdim, int k, keops_sum_scheme scheme) {
  (void)k, (void)scheme;
  return (red_layout){.slots = fdim};
}

static int lse_width(const red_row *r, int fdim, int k) {
  (void)k;
  return r->fin == FIN_RAW ? fdim : r->fin == FIN_LOG ? fdim - 1 : fdim - 2;
}

static int lse_spec(red_spec *s, int k, keops_sum_scheme scheme, int64_t nred, kerr *e) {
  (void)k, (void)scheme, (void)nred;
  s->dim = s->fdim - 1;
  if (s->dim < (s->row->weight1 ? 2 : 1)) {
    kerr_set(e, KEOPS_ERROR_DIMENSION, "internal: %s program formula of dim %d is too narrow",
             s->row->name, s->fdim);
    return -1;
  }
  return 0;
}

static void lse_init(const red_spec *s, double *st) {
  st[0] = -INFINITY;
  for (int e = 1; e < s->fdim; e++) st[e] = 0;
}

static void lse_merge(int E, double *st, double x, const double *t) {
  double m = st[0], *s = st + 1;
  if (x > m) {
    double c = exp(m - x);
    for (int e = 0; e < E; e++) s[e] = s[e] * c + t[e];
    st[0] = x;
  } else if (x == m) {
    for (int e = 0; e < E; e++) s[e] += t[e];
  } else {
    double c = exp(x - m);
    for (int e = 0; e < E; e++) s[e] += t[e] * c;
  }
}

static void lse_accumulate(const red_spec *s, double *st, const double *f, int64_t j) {
  (void)j;
  lse_merge(s->dim, st, f[0], f + 1);
}

static void lse_combine(const red_spec *s, double *st, const double *other) {
  lse_merge(s->dim, st, other[0], other + 1);
}

static void lse_finalize(const red_spec *s, const double *st, keops_dtype dt, void *const *outs,
                         int64_t row) {
  int E = s->dim, w = s->out_dim[0];
  int64_t base = row * w;
  double m = st[0];
  const double *sum = st + 1;
  void *out = outs[0];
  switch (s->row->fin) {
  case FIN_RAW:
    for (int q = 0; q <= E; q++) red_put(out, dt, base + q, st[q]);
    return;
  case FIN_LOG:
    for (int e = 0; e < E; e++) red_put(out, dt, base + e, m + log(sum[e]));
    return;
  case FIN_SOFTMAX:
    for (int e = 1; e < E; e++) red_put(out, dt, base + e - 1, sum[e] / sum[0]);
    return;
  }
}

/* ---- the IR steps ------------------------------------------------------------------------ */

static int lse_slots(kb *K) { return 1 + K->E; }

static int64_t lse_cost(const fe_program *p) { return 2 * (int64_t)p->fdim; }

static void lse_ir_init(kb *K, int u) {
  for (int s = 0; s < K->nslot; s++) {
    kg_st(K, K->a[u][s], kg_aconst(K, s == 0 ? -INFINITY : 0));
    kg_st(K, K->x[u][s], kg_aconst(K, 0)); /* unused: see kg_state_alloc */
  }
}

/* The merge above, branch-free: e = exp(lo - hi) scales the side with the smaller m. */
static void lse_ir_accumulate(kb *K, int u, LLVMValueRef *f) {
  LLVMValueRef x = kg_to_acc(K, f[0]), m = kg_ld(K, K->a[u][0]);
  LLVMValueRef gt = LLVMBuildFCmp(B, LLVMRealOGT, x, m, "");
  LLVMValueRef hi = LLVMBuildSelect(B, gt, x, m, ""), lo = LLVMBuildSelect(B, gt, m, x, "");
  LLVMValueRef e = vm_call(K->L.M, B, VM_EXP, LLVMBuildFSub(B, lo, hi, ""), NULL);
  e = LLVMBuildSelect(B, LLVMBuildFCmp(B, LLVMRealOEQ, x, m, ""), kg_aconst(K, 1), e, "");
  for (int q = 1; q <= K->E; q++) {
    LLVMValueRef s = kg_ld(K, K->a[u][q]), w = kg_to_acc(K, f[q]);
    LLVMValueRef up = LLVMBuildFAdd(B, LLVMBuildFMul(B, s, e, ""), w, "");
    LLVMValueRef keep = LLVMBuildFAdd(B, s, LLVMBuildFMul(B, w, e, ""), "");
    kg_st(K, K->a[u][q], LLVMBuildSelect(B, gt, up, keep, ""));
  }
  kg_st(K, K->a[u][0], hi);
}

static void lse_ir_finalize(kb *K, int u, const kg_sink *o) {
  const red_row *r = K->p->red;
  LLVMValueRef m = kg_ld(K, K->a[u][0]);
  if (r->fin == FIN_RAW) {
    for (int s = 0; s < K->nslot; s++)
      o->put(K, o, KG_VAL, kg_i64(K, s), u, NULL, kg_from_acc(K, kg_ld(K, K->a[u][s])));
  } else if (r->fin == FIN_LOG) {
    for (int q = 1; q <= K->E; q++) {
      LLVMValueRef lg = vm_call(K->L.M, B, VM_LOG, kg_ld(K, K->a[u][q]), NULL);
      o->put(K, o, KG_VAL, kg_i64(K, q - 1), u, NULL, kg_from_acc(K, LLVMBuildFAdd(B, m, lg, "")));
    }
  } else {
    LLVMValueRef s0 = kg_ld(K, K->a[u][1]);
    for (int q = 2; q <= K->E; q++)
      o->put(K, o, KG_VAL, kg_i64(K, q - 2), u, NULL,
             kg_from_acc(K, LLVMBuildFDiv(B, kg_ld(K, K->a[u][q]), s0, "")));
  }
}

/* A state of later indices is one more (F, w) = (m, s). */
static void lse_ir_merge(kb *K, int u, LLVMValueRef base, LLVMValueRef *f, LLVMValueRef *ix) {
  (void)ix;
  for (int s = 0; s < K->nslot; s++) f[s] = kg_state_entry(K, base, s, K->AT);
  lse_ir_accumulate(K, u, f);
}

static const kg_family lse_ir = {KG_STEPS(lse_slots, lse_cost, lse_ir_init, lse_ir_accumulate,
                                          lse_ir_finalize, kg_slots_write, kg_slots_load,
                                          lse_ir_merge)};

const red_family red_LSE = {
    .name = "LSE",
    .sum_type = 1,
    .weighted = 1,
    RED_STEPS(lse_layout, lse_width, lse_spec, lse_init, lse_accumulate, lse_combine,
              lse_finalize),
    .ir = &lse_ir,
};
