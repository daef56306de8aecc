/* The MINMAX family: the best value of each component and its index (Min, Max, ArgMin,
 * ArgMax, Min_ArgMin, Max_ArgMax; dir -1 Min, +1 Max; D = fdim).
 *
 *   [val D][idx D], init val = +inf (Min) / -inf (Max), idx = -1 ("no index yet").
 *   accumulate, per component: x replaces the slot when x is not NaN and (the slot is empty
 *   or x is strictly better). So ties keep the smaller index, NaN values are ignored, and an
 *   infinite value still gets its index. Empty or all-NaN: (+inf / -inf, -1).
 *   combine: the strictly better non-empty slot, on equal values the smaller index. */
#include "kgen.h"

#define B (K->L.bld)

/* ---- the state and the C steps ----------------------------------------------------------- */

static red_layout minmax_layout(int fdim, int k, keops_sum_scheme scheme) {
  (void)k, (void)scheme;
  return (red_layout){.slots = fdim, .idx = 1};
}

static int minmax_width(const red_row *r, int fdim, int k) {
  (void)r, (void)k;
  return fdim;
}

static void minmax_accumulate(const red_spec *s, double *st, const double *f, int64_t j) {
  int D = s->fdim, dir = s->row->dir;
  for (int d = 0; d < D; d++)
    if (red_goes_before(dir, f[d], (double)j, st[d], st[D + d])) st[d] = f[d], st[D + d] = (double)j;
}

static void minmax_combine(const red_spec *s, double *st, const double *o) {
  int D = s->fdim, dir = s->row->dir;
  for (int d = 0; d < D; d++)
    if (red_goes_before(dir, o[d], o[D + d], st[d], st[D + d])) st[d] = o[d], st[D + d] = o[D + d];
}

/* ---- the IR steps ------------------------------------------------------------------------ */

static int minmax_slots(kb *K) { return K->D; }

static int64_t minmax_cost(const fe_program *p) { return 2 * (int64_t)p->fdim; }

static void minmax_ir_accumulate(kb *K, int u, LLVMValueRef *f) {
  for (int d = 0; d < K->D; d++) {
    LLVMValueRef c = kg_takes(K, f[d], kg_ld(K, K->a[u][d]), kg_ld(K, K->ix[u][d]));
    kg_st(K, K->a[u][d], LLVMBuildSelect(B, c, f[d], kg_ld(K, K->a[u][d]), ""));
    kg_st(K, K->ix[u][d], LLVMBuildSelect(B, c, kg_index_of(K, d), kg_ld(K, K->ix[u][d]), ""));
  }
}

/* A state of later indices: each slot one more candidate with its own index (ties keep the
 * earlier state's). */
static void minmax_ir_merge(kb *K, int u, LLVMValueRef base, LLVMValueRef *f, LLVMValueRef *ix) {
  int n = K->nslot;
  for (int s = 0; s < n; s++) {
    f[s] = kg_state_entry(K, base, s, K->L.T);
    ix[s] = kg_state_entry(K, base, n + s, K->i64);
  }
  minmax_ir_accumulate(K, u, f);
}

static const kg_family minmax_ir = {KG_STEPS(minmax_slots, minmax_cost, kg_pair_init,
                                             minmax_ir_accumulate, kg_pair_finalize, kg_slots_write,
                                             kg_slots_load, minmax_ir_merge)};

const red_family red_MINMAX = {
    .name = "MINMAX",
    RED_STEPS(minmax_layout, minmax_width, red_spec_none, red_slots_init, minmax_accumulate,
              minmax_combine, red_slots_finalize),
    .ir = &minmax_ir,
};
