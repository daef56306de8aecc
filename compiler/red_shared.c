/* Steps and helpers the reduction families share (red_<family>.c). Kept apart from red.c,
 * whose table reads the families, so that the module graph stays acyclic. */
#include <math.h>

#include "red.h"

int red_spec_none(red_spec *s, int k, keops_sum_scheme scheme, int64_t nred, kerr *e) {
  (void)s, (void)k, (void)scheme, (void)nred, (void)e;
  return 0;
}

void red_put(void *out, keops_dtype dt, int64_t at, double v) {
  if (dt == KEOPS_FLOAT32)
    ((float *)out)[at] = (float)v;
  else
    ((double *)out)[at] = v;
}

/* ---- slots of (value, index): MINMAX and KMIN ------------------------------------------ */

double red_worst(int dir) { return dir < 0 ? INFINITY : -INFINITY; }

int red_goes_before(int dir, double x, double xi, double v, double vi) {
  if (isnan(x) || xi < 0) return 0;
  if (vi < 0) return 1;
  if (dir < 0 ? x < v : x > v) return 1;
  return x == v && xi < vi;
}

void red_slots_init(const red_spec *s, double *st) {
  size_t n = s->state / 2;
  for (size_t q = 0; q < n; q++) st[q] = red_worst(s->row->dir), st[n + q] = -1;
}

void red_slots_finalize(const red_spec *s, const double *st, keops_dtype dt, void *const *outs,
                        int64_t row) {
  int n = s->out_dim[0];
  for (int o = 0; o < s->nout; o++) {
    int64_t base = row * n;
    if (s->out_idx[o])
      for (int q = 0; q < n; q++) ((int64_t *)outs[o])[base + q] = (int64_t)st[n + q];
    else
      for (int q = 0; q < n; q++) red_put(outs[o], dt, base + q, st[q]);
  }
}
