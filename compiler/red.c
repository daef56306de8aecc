/* Reductions: the table (reductions.def) and the four steps of each family.
 *
 * Every backend runs, per output row:  init; accumulate(f(row, j), j) for the reduced indices
 * in increasing j; possibly combine with states of other index ranges; finalize. The
 * definitions below are the contract; the interpreter computes them in double precision.
 *
 * A state is an array of doubles (indices are stored as doubles: exact below 2^53).
 *
 * SUM (D = fdim components)
 *   DIRECT  [acc D]                     acc += f
 *   BLOCK   [acc D][part D][count 1]    part += f; every `period` = ceil(sqrt(nred)) terms
 *                                       acc += part, part = 0. Result acc + part.
 *   KAHAN   [acc D][comp D]             compensated: y = f - comp; t = acc + y;
 *                                       comp = (t - acc) - y; acc = t. Result acc - comp.
 *   init 0. combine: add the other state's result (BLOCK flushes both partials first;
 *   KAHAN adds it compensated). AUTO is BLOCK. The interpreter keeps every scheme in double,
 *   so the double-accumulator option changes nothing here.
 *
 * MINMAX (dir -1 Min, +1 Max; D = fdim)
 *   [val D][idx D], init val = +inf (Min) / -inf (Max), idx = -1 ("no index yet").
 *   accumulate, per component: x replaces the slot when x is not NaN and (the slot is empty
 *   or x is strictly better). So ties keep the smaller index, NaN values are ignored, and an
 *   infinite value still gets its index. Empty or all-NaN: (+inf / -inf, -1).
 *   combine: the strictly better non-empty slot, on equal values the smaller index.
 *
 * KMIN (K slots per component, D = fdim)
 *   [val K*D][idx K*D], k-major (entry k*D + d) like the output, each component sorted by
 *   (value ascending, index ascending) with the empty slots (+inf, -1) last.
 *   accumulate: x (not NaN) goes in before the first slot that is empty or strictly worse, so
 *   equal values stay in index order; the last slot falls off. combine: merge of the two
 *   sorted lists, first K kept. Fewer than K values: the rest stays (+inf, -1).
 *
 * LSE (program formula Concat(F, w): F = f[0], weight w = f[1..E'], E' = fdim - 1)
 *   [m][s E'], init m = -inf, s = 0: sum_j w_j exp(F_j) = exp(m) * s.
 *   merge (m, s) with (x, t) (accumulate: (x, t) = (F_j, w_j); combine: the other state):
 *     x > m:  s = s * exp(m - x) + t;  m = x
 *     x == m: s += t            (same as the general rule when finite; no inf - inf = NaN
 *                                when both are -inf or +inf)
 *     else:   s += t * exp(x - m)   (x = -inf adds nothing; a NaN x makes s NaN)
 *   This is KeOps's Max_SumShiftExp update with the tie case split out. Sum schemes do not
 *   apply (the update is already in double here).
 *   finalize: FIN_RAW (m, s_1..s_E'); FIN_LOG m + log s_e (empty: -inf);
 *   FIN_SOFTMAX s_e / s_0 for e >= 1 (empty: 0/0 = NaN).
 */
#include "red.h"

#include <limits.h>
#include <math.h>
#include <string.h>

static const red_row red_rows[] = {
#define X(name, family, dir, outputs, f2, weight1, fin)                                            \
  {#name, family, dir, outputs, f2, weight1, fin},
#include "reductions.def"
#undef X
};

const red_row *red_find(const char *name) {
  if (!name) return NULL;
  for (size_t r = 0; r < sizeof red_rows / sizeof red_rows[0]; r++)
    if (strcmp(red_rows[r].name, name) == 0) return &red_rows[r];
  return NULL;
}

/* ---- spec ---------------------------------------------------------------------------- */

static void set_outputs(red_spec *s, int width) {
  int o = 0;
  if (s->row->outputs & RO_VAL) {
    s->out_dim[o] = width;
    s->out_idx[o++] = 0;
  }
  if (s->row->outputs & RO_IDX) {
    s->out_dim[o] = width;
    s->out_idx[o++] = 1;
  }
  s->nout = o;
}

int red_spec_init(red_spec *s, const red_row *row, int fdim, int k, keops_sum_scheme scheme,
                  int64_t nred, kerr *e) {
  memset(s, 0, sizeof *s);
  s->row = row;
  s->fdim = s->dim = fdim;
  if (!row || fdim < 1) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "internal: reduction without row or formula dim %d", fdim);
    return -1;
  }
  switch (row->family) {
  case RF_SUM:
    s->scheme = scheme == KEOPS_SUM_AUTO ? KEOPS_SUM_BLOCK : scheme;
    s->period = nred > 1 ? (int64_t)ceil(sqrt((double)nred)) : 1;
    s->state =
        (size_t)fdim * (s->scheme == KEOPS_SUM_DIRECT ? 1 : 2) + (s->scheme == KEOPS_SUM_BLOCK);
    s->out_dim[0] = fdim;
    s->nout = 1;
    return 0;
  case RF_MINMAX:
    s->state = 2 * (size_t)fdim;
    set_outputs(s, fdim);
    return 0;
  case RF_KMIN:
    if (k < 1 || k > INT_MAX / 2 / fdim) {
      kerr_set(e, KEOPS_ERROR_ARGUMENT, "%s needs 1 <= K <= %d for a formula of dim %d, got %d",
               row->name, INT_MAX / 2 / fdim, fdim, k);
      return -1;
    }
    s->k = k;
    s->state = 2 * (size_t)k * (size_t)fdim;
    set_outputs(s, k * fdim);
    return 0;
  case RF_LSE:
    s->dim = fdim - 1;
    if (s->dim < (row->weight1 ? 2 : 1)) {
      kerr_set(e, KEOPS_ERROR_DIMENSION, "internal: %s program formula of dim %d is too narrow",
               row->name, fdim);
      return -1;
    }
    s->state = (size_t)fdim;
    s->out_dim[0] = row->fin == FIN_RAW ? fdim : row->fin == FIN_LOG ? s->dim : s->dim - 1;
    s->nout = 1;
    return 0;
  }
  kerr_set(e, KEOPS_ERROR_ARGUMENT, "internal: reduction %s has no family", row->name);
  return -1;
}

/* ---- SUM ----------------------------------------------------------------------------- */

static void kahan_add(double *acc, double *comp, double x) {
  double y = x - *comp, t = *acc + y;
  *comp = (t - *acc) - y;
  *acc = t;
}

static void sum_accumulate(const red_spec *s, double *st, const double *f) {
  int D = s->fdim;
  double *acc = st, *aux = st + D;
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

/* ---- MINMAX and KMIN: slots of (value, index) ---------------------------------------- */

static double worst(int dir) { return dir < 0 ? INFINITY : -INFINITY; }

/* x (with index xi) goes before the slot (v, vi): the slot is empty, or x is strictly
 * better, or equal with a smaller index. Non-empty slots never hold NaN. */
static int goes_before(int dir, double x, double xi, double v, double vi) {
  if (isnan(x) || xi < 0) return 0;
  if (vi < 0) return 1;
  if (dir < 0 ? x < v : x > v) return 1;
  return x == v && xi < vi;
}

static void mm_accumulate(const red_spec *s, double *st, const double *f, double j) {
  int D = s->fdim, dir = s->row->dir;
  for (int d = 0; d < D; d++)
    if (goes_before(dir, f[d], j, st[d], st[D + d])) st[d] = f[d], st[D + d] = j;
}

static void mm_combine(const red_spec *s, double *st, const double *o) {
  int D = s->fdim, dir = s->row->dir;
  for (int d = 0; d < D; d++)
    if (goes_before(dir, o[d], o[D + d], st[d], st[D + d])) st[d] = o[d], st[D + d] = o[D + d];
}

static void kmin_accumulate(const red_spec *s, double *st, const double *f, double j) {
  int D = s->fdim, K = s->k, dir = s->row->dir;
  double *val = st, *idx = st + (size_t)K * D;
  for (int d = 0; d < D; d++) {
    int p = 0;
    /* most values do not make the K best: one comparison with the last slot tells */
    if (!goes_before(dir, f[d], j, val[(size_t)(K - 1) * D + d], idx[(size_t)(K - 1) * D + d])) continue;
    /* j is larger than every index held, so "goes before" means empty or strictly better */
    while (p < K && !goes_before(dir, f[d], j, val[(size_t)p * D + d], idx[(size_t)p * D + d])) p++;
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
      if (a_ok && (!b_ok || goes_before(dir, V(st, na), I(st, na), V(o, nb), I(o, nb))))
        na++;
      else
        nb++;
    }
    for (int t = na + nb - 1; t >= 0; t--) {
      int from_a = nb == 0 || (na > 0 && !goes_before(dir, V(st, na - 1), I(st, na - 1),
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

/* ---- LSE ----------------------------------------------------------------------------- */

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

/* ---- the four steps -------------------------------------------------------------------- */

void red_init(const red_spec *s, double *st) {
  int D = s->fdim;
  switch (s->row->family) {
  case RF_SUM: memset(st, 0, s->state * sizeof *st); return;
  case RF_MINMAX:
  case RF_KMIN: {
    size_t n = s->state / 2;
    for (size_t q = 0; q < n; q++) st[q] = worst(s->row->dir), st[n + q] = -1;
    return;
  }
  case RF_LSE:
    st[0] = -INFINITY;
    for (int e = 1; e < D; e++) st[e] = 0;
    return;
  }
}

void red_accumulate(const red_spec *s, double *st, const double *f, int64_t j) {
  switch (s->row->family) {
  case RF_SUM: sum_accumulate(s, st, f); return;
  case RF_MINMAX: mm_accumulate(s, st, f, (double)j); return;
  case RF_KMIN: kmin_accumulate(s, st, f, (double)j); return;
  case RF_LSE: lse_merge(s->dim, st, f[0], f + 1); return;
  }
}

void red_combine(const red_spec *s, double *st, const double *other) {
  switch (s->row->family) {
  case RF_SUM: sum_combine(s, st, other); return;
  case RF_MINMAX: mm_combine(s, st, other); return;
  case RF_KMIN: kmin_combine(s, st, other); return;
  case RF_LSE: lse_merge(s->dim, st, other[0], other + 1); return;
  }
}

static void put(void *out, keops_dtype dt, int64_t at, double v) {
  if (dt == KEOPS_FLOAT32)
    ((float *)out)[at] = (float)v;
  else
    ((double *)out)[at] = v;
}

/* MINMAX and KMIN: values (st[0..n)) and/or indices (st[n..2n)) as the row's outputs say. */
static void slots_finalize(const red_spec *s, const double *st, keops_dtype dt, void *const *outs,
                           int64_t row) {
  int n = s->out_dim[0];
  for (int o = 0; o < s->nout; o++) {
    int64_t base = row * n;
    if (s->out_idx[o])
      for (int q = 0; q < n; q++) ((int64_t *)outs[o])[base + q] = (int64_t)st[n + q];
    else
      for (int q = 0; q < n; q++) put(outs[o], dt, base + q, st[q]);
  }
}

static void lse_finalize(const red_spec *s, const double *st, keops_dtype dt, void *out,
                         int64_t row) {
  int E = s->dim, w = s->out_dim[0];
  int64_t base = row * w;
  double m = st[0];
  const double *sum = st + 1;
  switch (s->row->fin) {
  case FIN_RAW:
    for (int q = 0; q <= E; q++) put(out, dt, base + q, st[q]);
    return;
  case FIN_LOG:
    for (int e = 0; e < E; e++) put(out, dt, base + e, m + log(sum[e]));
    return;
  case FIN_SOFTMAX:
    for (int e = 1; e < E; e++) put(out, dt, base + e - 1, sum[e] / sum[0]);
    return;
  }
}

void red_finalize(const red_spec *s, const double *st, keops_dtype dt, void *const *outs,
                  int64_t row) {
  switch (s->row->family) {
  case RF_SUM:
    for (int d = 0; d < s->fdim; d++) put(outs[0], dt, row * s->fdim + d, sum_value(s, st, d));
    return;
  case RF_MINMAX:
  case RF_KMIN: slots_finalize(s, st, dt, outs, row); return;
  case RF_LSE: lse_finalize(s, st, dt, outs[0], row); return;
  }
}
