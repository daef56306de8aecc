#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

tu_rng tu_seed(uint64_t seed) {
  tu_rng r = {seed * 0x9E3779B97F4A7C15ull + 1};
  return r;
}

static uint64_t next(tu_rng *r) {
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return r->s * 0x2545F4914F6CDD1Dull;
}

double tu_uniform(tu_rng *r, double lo, double hi) {
  return lo + (hi - lo) * ((double)(next(r) >> 11) * 0x1.0p-53);
}

double tu_normal(tu_rng *r) {
  double u = tu_uniform(r, 0x1.0p-53, 1), v = tu_uniform(r, 0, 1);
  return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

double *tu_randn(tu_rng *r, int64_t n) {
  double *a = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
  for (int64_t k = 0; k < n; k++) a[k] = tu_normal(r);
  return a;
}

void *tu_to_dtype(const double *src, int64_t n, keops_dtype dt) {
  size_t sz = dt == KEOPS_FLOAT32 ? sizeof(float) : sizeof(double);
  void *a = malloc(sz * (size_t)(n > 0 ? n : 1));
  for (int64_t k = 0; k < n; k++) {
    if (dt == KEOPS_FLOAT32)
      ((float *)a)[k] = (float)src[k];
    else
      ((double *)a)[k] = src[k];
  }
  return a;
}

double tu_get(const void *a, keops_dtype dt, int64_t k) {
  switch (dt) {
  case KEOPS_FLOAT32: return ((const float *)a)[k];
  case KEOPS_FLOAT64: return ((const double *)a)[k];
  default: return (double)((const int64_t *)a)[k];
  }
}

double tu_excess(const double *a, const double *b, int64_t n, double rtol, double atol) {
  double worst = -INFINITY;
  for (int64_t k = 0; k < n; k++) {
    if (isnan(a[k]) || isnan(b[k])) {
      if (isnan(a[k]) != isnan(b[k])) return NAN;
      continue;
    }
    if (a[k] == b[k]) { /* covers equal infinities */
      if (worst < -atol) worst = -atol;
      continue;
    }
    double ex = fabs(a[k] - b[k]) - (atol + rtol * fabs(b[k]));
    if (isnan(ex)) return NAN;
    if (ex > worst) worst = ex;
  }
  return worst;
}

double tu_max_rel_err(const double *a, const double *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t k = 0; k < n; k++) {
    double d = fabs(a[k] - b[k]);
    if (!(d <= num)) num = d; /* NaN propagates */
    if (fabs(b[k]) > den) den = fabs(b[k]);
  }
  return den > 0 ? num / den : num;
}

char *tu_command_output(const char *cmd, int *status) {
  FILE *f = popen(cmd, "r");
  ck_assert_msg(f != NULL, "popen(%s) failed", cmd);
  size_t len = 0, cap = 4096, got;
  char *text = malloc(cap);
  while ((got = fread(text + len, 1, cap - len - 1, f)) > 0) {
    len += got;
    if (cap - len < 2) text = realloc(text, cap *= 2);
  }
  text[len] = '\0';
  int st = pclose(f);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return text;
}

int tu_run(Suite *s, int fork) {
  SRunner *r = srunner_create(s);
  if (!fork) srunner_set_fork_status(r, CK_NOFORK);
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed;
}

keops_kernel *tu_kernel(keops_context *ctx, const char *formula, const char *formula2,
                        const char *reduction, int K, const char *const *aliases, int n_aliases,
                        keops_axis axis, keops_dtype dt) {
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = formula;
  d.formula2 = formula2;
  d.reduction = reduction;
  d.k = K;
  d.aliases = aliases;
  d.n_aliases = n_aliases;
  d.axis = axis;
  d.dtype = dt;
  keops_kernel *k = NULL;
  ck_assert_msg(keops_kernel_create(ctx, &d, &k) == KEOPS_OK, "%s: %s", formula, keops_last_error());
  return k;
}

keops_context *tu_emulator_context(void) {
  keops_context *c = NULL;
  setenv("KEOPS_GPU", "emulator", 1);
  keops_status st = keops_context_create(&c);
  unsetenv("KEOPS_GPU");
  ck_assert_msg(st == KEOPS_OK, "%s", keops_last_error());
  return c;
}
