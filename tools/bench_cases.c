/* keops-bench's cases, their data and the checks of their results. */
#include "bench_cases.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime.h"

/* ---- cases ------------------------------------------------------------------------------- */

const bcase bc_cases[] = {
    /* reps keep `--case=all` within a few minutes on 2 cores */
    {"gauss3", K_GAUSS, 3, 20000, 20000, 5, 0},
    {"seed", K_SEED, 3, 20000, 20000, 3, 0},
    {"seed-grad", K_SEEDGRAD, 3, 20000, 20000, 3, 0},
    {"lse", K_LSE, 3, 20000, 20000, 3, 0},
    {"knn", K_KNN, 3, 20000, 20000, 3, 0},
    {"nbody", K_NBODY, 3, 20000, 20000, 3, 0},
    {"gauss64", K_GAUSS, 64, 5000, 5000, 5, 0},
    {"tiny", K_GAUSS, 3, 100, 100, 2000, 0},
    /* GPU sizes: the throughput targets (large M) and the j-split (small M) */
    {"gauss3-1e6", K_GAUSS, 3, 1000000, 1000000, 3, 1},
    {"small-m", K_GAUSS, 3, 1000, 1000000, 5, 1},
};
_Static_assert(sizeof bc_cases / sizeof *bc_cases == NCASES, "NCASES must count bc_cases");

/* EPS2: the softening length 0.1, a few mean spacings of 20000 points in the unit cube */
const double GAMMA = 1.0, P_SEED = 0.5, EPS2 = 0.01; /* the parameters g, p and e */
int bc_knn_k = 10;
int bc_fast_math = 0;

void bc_make_request(const bcase *c, keops_dtype dt, request *r) {
  memset(r, 0, sizeof *r);
  keops_kernel_desc *d = &r->desc;
  *d = keops_kernel_desc_init();
  int n = 0;
  snprintf(r->alias[n++], sizeof r->alias[0], "x = Vi(%d)", c->D);
  snprintf(r->alias[n++], sizeof r->alias[0], "y = Vj(%d)", c->D);
  d->axis = KEOPS_AXIS_J;
  switch (c->kind) {
  case K_GAUSS:
    d->formula = "Exp(-g*SqDist(x,y))*b";
    snprintf(r->alias[n++], sizeof r->alias[0], "b = Vj(1)");
    snprintf(r->alias[n++], sizeof r->alias[0], "g = Pm(1)");
    break;
  case K_SEED:
  case K_SEEDGRAD:
    d->formula = c->kind == K_SEED ? "Square(p-a)*Exp(x+y)" : "Grad(Square(p-a)*Exp(x+y), y, e)";
    snprintf(r->alias[n++], sizeof r->alias[0], "a = Vj(1)");
    snprintf(r->alias[n++], sizeof r->alias[0], "p = Pm(1)");
    if (c->kind == K_SEEDGRAD) {
      snprintf(r->alias[n++], sizeof r->alias[0], "e = Vi(3)");
      d->axis = KEOPS_AXIS_I;
    }
    break;
  case K_LSE:
    d->formula = "-g*SqDist(x,y)";
    d->reduction = "LogSumExp";
    snprintf(r->alias[n++], sizeof r->alias[0], "g = Pm(1)");
    break;
  case K_KNN:
    d->formula = "SqDist(x,y)";
    d->reduction = "ArgKMin";
    d->k = bc_knn_k;
    break;
  case K_NBODY: /* softened gravity: the acceleration of examples/nbody.cpp */
    d->formula = "m*(y-x)*(SqDist(x,y)+e)**-1.5";
    snprintf(r->alias[n++], sizeof r->alias[0], "m = Vj(1)");
    snprintf(r->alias[n++], sizeof r->alias[0], "e = Pm(1)");
    break;
  }
  for (int a = 0; a < n; a++) r->alias_ptr[a] = r->alias[a];
  d->aliases = r->alias_ptr;
  d->n_aliases = n;
  d->dtype = dt;
  d->fast_math = bc_fast_math;
}

/* "Exp(-g*SqDist(x,y))*b [x = Vi(3), ...] Sum axis 1": what a failure report names. */
void bc_describe(const request *r, char *buf, size_t n) {
  size_t used = (size_t)snprintf(buf, n, "%s [", r->desc.formula);
  for (int a = 0; a < r->desc.n_aliases && used < n; a++)
    used += (size_t)snprintf(buf + used, n - used, "%s%s", a ? ", " : "", r->alias[a]);
  if (used < n)
    snprintf(buf + used, n - used, "] %s%s axis %d", r->desc.reduction ? r->desc.reduction : "Sum",
             r->desc.k ? " K=10" : "", r->desc.axis == KEOPS_AXIS_J);
}

/* ---- helpers ------------------------------------------------------------------------------- */

double bc_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double bc_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

uint64_t bc_splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t bc_name_seed(const char *s, int pos) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h ^ (uint64_t)(pos + 1) * 0x9E3779B97F4A7C15ull;
}

void *bc_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "keops-bench: out of memory (%zu bytes)\n", n);
    exit(1);
  }
  return p;
}

/* "4.12 G", "310 M": a rate with a unit prefix. */
void bc_fmt_rate(char *buf, size_t n, double v) {
  if (!(v > 0))
    snprintf(buf, n, "-");
  else if (v >= 1e9)
    snprintf(buf, n, "%.2f G", v / 1e9);
  else if (v >= 1e6)
    snprintf(buf, n, "%.1f M", v / 1e6);
  else if (v >= 1e3)
    snprintf(buf, n, "%.1f k", v / 1e3);
  else
    snprintf(buf, n, "%.1f", v);
}

/* "145.2 ms", "12.3 us": a duration in seconds with a readable unit. */
void bc_fmt_time(char *buf, size_t n, double s) {
  if (!(s >= 0))
    snprintf(buf, n, "-");
  else if (s >= 1)
    snprintf(buf, n, "%.3f s", s);
  else if (s >= 1e-3)
    snprintf(buf, n, "%.2f ms", s * 1e3);
  else
    snprintf(buf, n, "%.2f us", s * 1e6);
}

void bc_fmt_err(char *buf, size_t n, double e) {
  if (e < 0)
    snprintf(buf, n, "-");
  else
    snprintf(buf, n, "%.1e", e);
}

/* ---- data ---------------------------------------------------------------------------------- */

double bc_param_value(const bcase *c, int pos) {
  /* g for gauss and lse, p for the seed, e for nbody */
  (void)pos;
  return c->kind == K_SEED || c->kind == K_SEEDGRAD ? P_SEED : c->kind == K_NBODY ? EPS2 : GAMMA;
}

/* Inputs for kernel k: Vi and Vj entries uniform in [0, 1) from a seed fixed by the case
 * name and position (the same values for both dtypes), parameters from the case. */
void bc_make_data(const bcase *c, const keops_kernel *k, keops_dtype dt, int64_t M, int64_t N,
                  data *d) {
  memset(d, 0, sizeof *d);
  d->nargs = keops_kernel_arg_count(k);
  for (int a = 0; a < d->nargs; a++) {
    d->dim[a] = keops_kernel_arg_dim(k, a);
    d->cat[a] = keops_kernel_arg_category(k, a);
    int64_t rows = d->cat[a] == 0 ? M : d->cat[a] == 1 ? N : 1;
    size_t n = (size_t)rows * (size_t)d->dim[a];
    d->rows[a] = rows;
    d->val[a] = bc_xmalloc(n * sizeof(double));
    d->arr[a] = bc_xmalloc(n * (dt == KEOPS_FLOAT32 ? sizeof(float) : sizeof(double)));
    uint64_t s = bc_name_seed(c->name, a);
    for (size_t e = 0; e < n; e++) {
      double v = d->cat[a] == 2 ? bc_param_value(c, a) : (double)(bc_splitmix(&s) >> 11) * 0x1p-53;
      if (dt == KEOPS_FLOAT32) {
        float f = (float)v;
        ((float *)d->arr[a])[e] = f;
        d->val[a][e] = f; /* what the float32 runs see */
      } else {
        ((double *)d->arr[a])[e] = v;
        d->val[a][e] = v;
      }
    }
  }
}

void bc_free_data(data *d) {
  for (int a = 0; a < d->nargs; a++) {
    free(d->val[a]);
    free(d->arr[a]);
  }
}

/* ---- checks ---------------------------------------------------------------------------------- */

double bc_get(const void *p, keops_dtype dt, size_t e) {
  return dt == KEOPS_FLOAT32 ? (double)((const float *)p)[e] : ((const double *)p)[e];
}

/* Largest elementwise relative difference of n values (inf when one is NaN and the other
 * not, or a value is off where the other is 0). */
double bc_rel_err(const void *got, const void *want, keops_dtype dt, size_t n) {
  double worst = 0;
  for (size_t e = 0; e < n; e++) {
    double g = bc_get(got, dt, e), w = bc_get(want, dt, e);
    if (isnan(g) || isnan(w)) {
      if (isnan(g) != isnan(w)) return INFINITY;
      continue;
    }
    if (g == w) continue; /* also equal infinities */
    double r = fabs(g - w) / fmax(fabs(w), DBL_MIN);
    if (!(r <= worst)) worst = r;
  }
  return worst;
}

/* max |got - want| / max |want| over n values (inf on a NaN): for results whose entries
 * cancel, such as forces near the centre of the cloud, where an elementwise relative
 * difference would measure the cancellation instead of the computation. */
double bc_norm_err(const void *got, const void *want, keops_dtype dt, size_t n) {
  double num = 0, den = 0;
  for (size_t e = 0; e < n; e++) {
    double g = bc_get(got, dt, e), w = bc_get(want, dt, e);
    if (isnan(g) || isnan(w)) return INFINITY;
    num = fmax(num, fabs(g - w));
    den = fmax(den, fabs(w));
  }
  return den > 0 ? num / den : num;
}

double bc_sqdist(const double *u, const double *v, int D) {
  double s = 0;
  for (int k = 0; k < D; k++) s += (u[k] - v[k]) * (u[k] - v[k]);
  return s;
}

/* For K-nearest indices: the largest relative difference between the k-th distances (in
 * double) of the two index lists, over `rows` rows; indices out of range or -1 where the
 * other has one count as inf. Near-ties may pick different indices of equal distance, which
 * this accepts. */
double bc_knn_err(const int64_t *got, const int64_t *want, int64_t rows, int K, int64_t N,
                  const data *d, int D) {
  double worst = 0;
  for (int64_t i = 0; i < rows; i++)
    for (int k = 0; k < K; k++) {
      int64_t g = got[i * K + k], w = want[i * K + k];
      if (g == w) continue;
      if (g < 0 || w < 0 || g >= N || w >= N) return INFINITY;
      double dg = bc_sqdist(d->val[0] + i * D, d->val[1] + g * D, D);
      double dw = bc_sqdist(d->val[0] + i * D, d->val[1] + w * D, D);
      double r = fabs(dg - dw) / fmax(dw, DBL_MIN);
      if (r > worst) worst = r;
    }
  return worst;
}
