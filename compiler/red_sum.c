/* The SUM family (Sum; D = fdim components).
 *
 *   DIRECT  [acc D]                     acc += f
 *   BLOCK   [acc D][part D][count 1]    part += f; every `period` = ceil(sqrt(nred)) terms
 *                                       acc += part, part = 0. Result acc + part.
 *   KAHAN   [acc D][comp D]             compensated: y = f - comp; t = acc + y;
 *                                       comp = (t - acc) - y; acc = t. Result acc - comp.
 *   init 0. combine: add the other state's result (BLOCK flushes both partials first;
 *   KAHAN adds it compensated). AUTO is BLOCK. The interpreter keeps every scheme in double,
 *   so the double-accumulator option changes nothing there.
 *
 * The JIT's BLOCK flushes at the end of each tile of j (kg_needs_flush) instead of counting
 * terms, so its states always have count 0. */
#include <math.h>
#include <string.h>

#include "kgen.h"

#define B (K->L.bld)

/* ---- the state and the C steps ----------------------------------------------------------- */

static red_layout sum_layout(int fdim, int k, keops_sum_scheme scheme) {
  (void)k;
  return (red_layout){.slots = fdim, .aux = scheme != KEOPS_SUM_DIRECT, .extra = scheme == KEOPS_SUM_BLOCK};
}

static int sum_width(const red_row *r, int fdim, int k) {
  (void)r, (void)k;
  return fdim;
}

static int sum_spec(red_spec *s, int k, keops_sum_scheme scheme, int64_t nred, kerr *e) {
  (void)k, (void)e;
  s->scheme = scheme == KEOPS_SUM_AUTO ? KEOPS_SUM_BLOCK : scheme;
  s->period = nred > 1 ? (int64_t)ceil(sqrt((double)nred)) : 1;
  return 0;
}

static void sum_init(const red_spec *s, double *st) { memset(st, 0, s->state * sizeof *st); }

static void kahan_add(double *acc, double *comp, double x) {
  double y = x - *comp, t = *acc + y;
  *comp = (t - *acc) - y;
  *acc = t;
}

static void sum_accumulate(const red_spec *s, double *st, const double *f, int64_t j) {
  int D = s->fdim;
  double *acc = st, *aux = st + D;
  (void)j;
  switch (s->scheme) {
  case KEOPS_SUM_KAHAN:
    for (int d = 0; d < D; d++) kahan_add(&acc[d], &aux[d], f[d]);
    return;
  case KEOPS_SUM_BLOCK:
    for (int d = 0; d < D; d++) aux[d] += f[d];
    if (++aux[D] >= (double)s->period) {
      for (int d = 0; d < D; d++) acc[d] += aux[d], aux[d] = 0;
      aux[D] = 0;
    }
    return;
  default:
    for (int d = 0; d < D; d++) acc[d] += f[d];
  }
}

/* Component d of the sum a state stands for. */
static double sum_value(const red_spec *s, const double *st, int d) {
  switch (s->scheme) {
  case KEOPS_SUM_KAHAN: return st[d] - st[s->fdim + d];
  case KEOPS_SUM_BLOCK: return st[d] + st[s->fdim + d];
  default: return st[d];
  }
}

static void sum_combine(const red_spec *s, double *st, const double *o) {
  int D = s->fdim;
  for (int d = 0; d < D; d++) {
    double v = sum_value(s, o, d);
    if (s->scheme == KEOPS_SUM_KAHAN) {
      kahan_add(&st[d], &st[D + d], v);
    } else if (s->scheme == KEOPS_SUM_BLOCK) {
      st[d] += st[D + d] + v;
      st[D + d] = 0;
    } else {
      st[d] += v;
    }
  }
  if (s->scheme == KEOPS_SUM_BLOCK) st[2 * D] = 0;
}

static void sum_finalize(const red_spec *s, const double *st, keops_dtype dt, void *const *outs,
                         int64_t row) {
  for (int d = 0; d < s->fdim; d++) red_put(outs[0], dt, row * s->fdim + d, sum_value(s, st, d));
}

/* ---- the IR steps ------------------------------------------------------------------------ */

static int sum_slots(kb *K) { return K->D; }

static int64_t sum_cost(const fe_program *p) {
  return (p->scheme == KEOPS_SUM_DIRECT ? 1 : 2) * (int64_t)p->fdim;
}

static void sum_ir_init(kb *K, int u) {
  for (int s = 0; s < K->nslot; s++) {
    kg_st(K, K->a[u][s], kg_aconst(K, 0));
    kg_st(K, K->x[u][s], kg_aconst(K, 0)); /* DIRECT: unused, see kg_state_alloc */
  }
}

static void sum_ir_accumulate(kb *K, int u, LLVMValueRef *f) {
  for (int d = 0; d < K->D; d++) {
    LLVMValueRef v = kg_to_acc(K, f[d]);
    if (K->p->scheme == KEOPS_SUM_KAHAN) { /* no fast-math flags: LLVM keeps the order */
      LLVMValueRef acc = kg_ld(K, K->a[u][d]);
      LLVMValueRef y = LLVMBuildFSub(B, v, kg_ld(K, K->x[u][d]), "");
      LLVMValueRef t = LLVMBuildFAdd(B, acc, y, "");
      kg_st(K, K->x[u][d], LLVMBuildFSub(B, LLVMBuildFSub(B, t, acc, ""), y, ""));
      kg_st(K, K->a[u][d], t);
    } else {
      LLVMValueRef slot = K->p->scheme == KEOPS_SUM_BLOCK ? K->x[u][d] : K->a[u][d];
      kg_st(K, slot, lw_contract(LLVMBuildFAdd(B, kg_ld(K, slot), v, "")));
    }
  }
}

static int sum_tiled(const fe_program *p) { return p->scheme == KEOPS_SUM_BLOCK; }

/* Folds the tile's partial sums into the accumulators. */
static void sum_flush(kb *K, int u) {
  for (int d = 0; d < K->D; d++) {
    kg_st(K, K->a[u][d], LLVMBuildFAdd(B, kg_ld(K, K->a[u][d]), kg_ld(K, K->x[u][d]), ""));
    kg_st(K, K->x[u][d], kg_aconst(K, 0));
  }
}

static void sum_ir_finalize(kb *K, int u, const kg_sink *o) {
  for (int d = 0; d < K->D; d++) {
    LLVMValueRef v = kg_ld(K, K->a[u][d]);
    if (K->p->scheme == KEOPS_SUM_KAHAN) v = LLVMBuildFSub(B, v, kg_ld(K, K->x[u][d]), "");
    o->put(K, o, KG_VAL, kg_i64(K, d), u, NULL, kg_from_acc(K, v));
  }
}

/* A state of later indices: its total is one more term. */
static void sum_ir_merge(kb *K, int u, LLVMValueRef base, LLVMValueRef *f, LLVMValueRef *ix) {
  const fe_program *p = K->p;
  int n = K->nslot;
  (void)ix;
  for (int s = 0; s < n; s++) {
    f[s] = kg_state_entry(K, base, s, K->AT);
    if (p->scheme != KEOPS_SUM_DIRECT) {
      LLVMValueRef x = kg_state_entry(K, base, n + s, K->AT); /* BLOCK part, KAHAN comp */
      f[s] = p->scheme == KEOPS_SUM_BLOCK ? LLVMBuildFAdd(B, f[s], x, "") : LLVMBuildFSub(B, f[s], x, "");
    }
  }
  sum_ir_accumulate(K, u, f);
  if (p->scheme == KEOPS_SUM_BLOCK) sum_flush(K, u);
}

static const kg_family sum_ir = {
    KG_STEPS(sum_slots, sum_cost, sum_ir_init, sum_ir_accumulate, sum_ir_finalize, kg_slots_write,
             kg_slots_load, sum_ir_merge),
    .tiled = sum_tiled,
    .flush = sum_flush,
};

const red_family red_SUM = {
    .name = "SUM",
    .sum_type = 1,
    RED_STEPS(sum_layout, sum_width, sum_spec, sum_init, sum_accumulate, sum_combine, sum_finalize),
    .ir = &sum_ir,
};
