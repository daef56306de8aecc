/* The foundation matrix shared by test_cpu and test_gpu; see matrix.h for the tolerance model. */
#include "matrix.h"

#include <check.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *mx_backend = "backend";
double mx_ftz_term;
double mx_worst_ratio[4][2];

double mx_unit(keops_dtype dt) { return dt == KEOPS_FLOAT32 ? 0x1p-24 : 0x1p-53; }
keops_dtype mx_dtype_of(int b) { return b ? KEOPS_FLOAT64 : KEOPS_FLOAT32; }
const char *mx_dtype_name(keops_dtype dt) { return dt == KEOPS_FLOAT32 ? "float32" : "float64"; }

const char *mx_scheme_name(keops_sum_scheme s) {
  static const char *const n[4] = {"AUTO", "DIRECT", "BLOCK", "KAHAN"};
  return n[s & 3];
}

int64_t mx_cat_rows(int cat, int64_t M, int64_t N) { return cat == 0 ? M : cat == 1 ? N : 1; }

keops_kernel *mx_make(keops_context *ctx, const keops_kernel_desc *d) {
  keops_kernel *k = NULL;
  ck_assert_msg(keops_kernel_create(ctx, d, &k) == KEOPS_OK, "%s: %s", d->formula,
                keops_last_error());
  return k;
}

/* ---- problems ------------------------------------------------------------------------------- */

static double draw(tu_rng *r, dom d) {
  if (d.step <= 0) return tu_uniform(r, d.lo, d.hi);
  double n = floor((d.hi - d.lo) / d.step + 0.5) + 1;
  return d.lo + d.step * floor(tu_uniform(r, 0, n));
}

void mx_prob_init(prob *P, keops_kernel *k, int64_t M, int64_t N, const dom *doms, int ndom,
                  double *const *vals, uint64_t seed) {
  memset(P, 0, sizeof *P);
  P->k = k, P->p = rt_kernel_program(k), P->dt = P->p->dtype, P->M = M, P->N = N;
  P->rows = P->p->axis ? M : N, P->nred = P->p->axis ? N : M;
  tu_rng r = tu_seed(seed);
  for (int pos = 0; pos < P->p->args.n; pos++) {
    int64_t n = (int64_t)P->p->args.dim[pos] * mx_cat_rows(P->p->args.cat[pos], M, N);
    P->val[pos] = malloc(sizeof(double) * (size_t)(n + 1));
    for (int64_t q = 0; q < n; q++) {
      double v = vals ? vals[pos][q] : draw(&r, pos < ndom ? doms[pos] : (dom){-1, 1, 0});
      P->val[pos][q] = P->dt == KEOPS_FLOAT32 ? (double)(float)v : v;
    }
    P->arr[pos] = tu_to_dtype(P->val[pos], n, P->dt);
  }
  for (int b = 0; b < 2; b++)
    for (int o = 0; o < P->p->nout; o++) {
      size_t n = 8 * (size_t)(P->rows * P->p->out_dim[o] + 1);
      P->out[b][o] = malloc(n);
      memset(P->out[b][o], 0x5a, n);
    }
}

void mx_prob_free(prob *P) {
  for (int pos = 0; pos < FE_MAX_ARGS; pos++) free(P->val[pos]), free(P->arr[pos]);
  for (int b = 0; b < 2; b++) free(P->out[b][0]), free(P->out[b][1]);
  memset(P, 0, sizeof *P);
}

void mx_prob_reference(prob *P) {
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_REFERENCE,
                         .ranges = P->ranges};
  keops_status st = keops_kernel_run(P->k, P->M, P->N, (const void *const *)P->arr, P->out[1], &o);
  ck_assert_msg(st == KEOPS_OK, "%s: reference run: %s", P->what, keops_last_error());
}

double mx_outv(const prob *P, int b, int o, int64_t q) {
  return tu_get(P->out[b][o], P->p->out_dtype[o], q);
}

/* ---- comparisons, one per reduction family ---------------------------------------------------- */

static double ftz(const prob *P) { return P->dt == KEOPS_FLOAT32 ? mx_ftz_term : 0; }
static double term_tol(const prob *P, double v) {
  return C_TERM * mx_unit(P->dt) * fmax(fabs(v), 1) + ftz(P);
}

/* The exact program formula (Concat(F, w) for LSE rows) at every pair of output row r:
 * F[t * fdim + c] for reduced index t, evaluated by the interpreter from the same inputs. */
static void row_values(const prob *P, int64_t r, double *F) {
  const double *vars[FE_MAX_ARGS] = {0};
  for (int64_t t = 0; t < P->nred; t++) {
    int64_t i = P->p->axis ? r : t, j = P->p->axis ? t : r;
    for (int pos = 0; pos < P->p->args.n; pos++) {
      int cat = P->p->args.cat[pos];
      vars[pos] = P->val[pos] + P->p->args.dim[pos] * (cat == 0 ? i : cat == 1 ? j : 0);
    }
    interp_eval(P->p->d, P->p->f, vars, F + t * P->p->fdim);
  }
}

/* got ~ want within tol; a non-finite reference must be matched exactly (NaN-ness, sign). */
static void expect_close(const prob *P, double got, double want, double tol, int64_t r, int q,
                         const char *part) {
  int ok = isfinite(want) ? fabs(got - want) <= tol : isnan(want) ? isnan(got) : got == want;
  if (isfinite(want) && tol > 0) {
    double *w = &mx_worst_ratio[P->p->red->family][P->dt == KEOPS_FLOAT64];
    *w = fmax(*w, fabs(got - want) / tol);
  }
  ck_assert_msg(ok, "%s: row %lld %s[%d]: %s %.10g, reference %.10g, |diff| %.3g > tol %.3g",
                P->what, (long long)r, part, q, mx_backend, got, want, fabs(got - want), tol);
}

static void check_sum(const prob *P, const double *F, int64_t r) {
  int D = P->p->fdim;
  for (int d = 0; d < D; d++) {
    double A = 0, B = 0; /* sum |F|, sum max(|F|, 1) */
    for (int64_t t = 0; t < P->nred; t++) A += fabs(F[t * D + d]), B += fmax(fabs(F[t * D + d]), 1);
    double tol = mx_unit(P->dt) * (C_TERM * B + (double)(P->nred + 1) * A) + (double)P->nred * ftz(P);
    expect_close(P, mx_outv(P, 0, 0, r * D + d), mx_outv(P, 1, 0, r * D + d), tol, r, d, "");
  }
}

static void check_slots(const prob *P, const double *F, int64_t r) {
  const red_row *rw = P->p->red;
  int D = P->p->fdim, K = rw->family == RF_KMIN ? P->p->k : 1, w = K * D;
  int hv = rw->outputs & RO_VAL, io = hv ? 1 : 0;
  for (int d = 0; d < D; d++)
    for (int q = 0; q < K; q++) {
      int64_t s = r * w + q * D + d;
      double cv = hv ? mx_outv(P, 0, 0, s) : 0;
      if (hv && q > 0) /* sorted, best first */
        ck_assert_msg(rw->dir < 0 ? cv >= mx_outv(P, 0, 0, s - D) : cv <= mx_outv(P, 0, 0, s - D),
                      "%s: row %lld [%d]: values not sorted", P->what, (long long)r, q * D + d);
      if (!(rw->outputs & RO_IDX)) {
        double want = mx_outv(P, 1, 0, s);
        expect_close(P, cv, want, term_tol(P, want) + mx_unit(P->dt) * fabs(want), r, q * D + d,
                     "value");
        continue;
      }
      int64_t ri = ((int64_t *)P->out[1][io])[s], gi = ((int64_t *)P->out[0][io])[s];
      if (ri < 0) {
        ck_assert_msg(gi == -1, "%s: row %lld [%d]: %s index %lld, reference has none", P->what,
                      (long long)r, q * D + d, mx_backend, (long long)gi);
        if (hv) expect_close(P, cv, rw->dir < 0 ? INFINITY : -INFINITY, 0, r, q * D + d, "value");
        continue;
      }
      ck_assert_msg(gi >= 0 && gi < P->nred, "%s: row %lld [%d]: %s index %lld out of range",
                    P->what, (long long)r, q * D + d, mx_backend, (long long)gi);
      double rv = F[ri * D + d], gv = F[gi * D + d];
      ck_assert_msg(gi == ri || fabs(gv - rv) <= 2 * term_tol(P, rv),
                    "%s: row %lld [%d]: %s index %lld (exact value %.10g), reference %lld "
                    "(%.10g): not a near tie",
                    P->what, (long long)r, q * D + d, mx_backend, (long long)gi, gv,
                    (long long)ri, rv);
      for (int q2 = 0; q2 < q; q2++)
        ck_assert_msg(((int64_t *)P->out[0][io])[r * w + q2 * D + d] != gi,
                      "%s: row %lld: index %lld listed twice", P->what, (long long)r, (long long)gi);
      if (hv) expect_close(P, cv, gv, term_tol(P, gv), r, q * D + d, "value");
    }
}

static void check_lse(const prob *P, const double *F, int64_t r) {
  int fd = P->p->fdim, w = P->p->out_dim[0];
  double u = mx_unit(P->dt), Bmax = 1;
  for (int64_t t = 0; t < P->nred; t++) Bmax = fmax(Bmax, fabs(F[t * fd]));
  double rel = u * (6.0 * (double)P->nred + 2 * C_TERM * Bmax + C_TERM) + ftz(P);
  for (int q = 0; q < w; q++) {
    double want = mx_outv(P, 1, 0, r * w + q), tol;
    switch (P->p->red->fin) {
    case FIN_LOG: tol = rel + u * fabs(want); break;
    case FIN_SOFTMAX: tol = (2 * rel + u) * fabs(want); break;
    default: tol = q == 0 ? C_TERM * u * Bmax + u * fabs(want) : (rel + u) * fabs(want);
    }
    expect_close(P, mx_outv(P, 0, 0, r * w + q), want, tol, r, q, "");
  }
}

void mx_check_outputs(const prob *P) {
  double *F = malloc(sizeof(double) * (size_t)(P->nred * P->p->fdim + 1));
  for (int64_t r = 0; r < P->rows; r++) {
    row_values(P, r, F);
    switch (P->p->red->family) {
    case RF_SUM: check_sum(P, F, r); break;
    case RF_LSE: check_lse(P, F, r); break;
    default: check_slots(P, F, r);
    }
  }
  free(F);
}

/* ---- the op matrix: cases ------------------------------------------------------------------- */

/* Domains and integer parameters of EW rows; a row may have several entries (cases each),
 * rows without one (for the suite) get DFLT and parameters "2". Entries of one row keep their
 * order within each suite: case indices seed the data. */
typedef struct ew_dom {
  int suites;
  const char *op, *params;
  dom d[3];
} ew_dom;

#define GRID(lo, hi, step) {lo, hi, step}
static const ew_dom ew_doms[] = {
    {MX_BOTH, "Divide", NULL, {DFLT, {0.5, 2, 0}}},
    {MX_BOTH, "Inv", NULL, {{0.5, 2, 0}}},
    {MX_BOTH, "Pow", "3", {DFLT}},
    {MX_BOTH, "Pow", "-2", {{0.5, 2, 0}}},
    {MX_CPU, "Pow", "0", {GRID(-2, 2, 1)}}, /* Pow(0, 0) = 1 */
    {MX_BOTH, "Powf", NULL, {{0.5, 2, 0}, DFLT}},
    /* C99 special cases: negative bases with integer exponents, 0^negative = inf, 0^0 = 1 */
    {MX_BOTH, "Powf", NULL, {GRID(-2, 2, 1), GRID(-2, 2, 1)}},
    {MX_BOTH, "Sqrt", NULL, {{0, 4, 0}}},
    {MX_BOTH, "Sqrt", NULL, {GRID(-1, 2, 1)}}, /* NaN, 0 */
    {MX_BOTH, "Rsqrt", NULL, {{0.25, 4, 0}}},
    {MX_BOTH, "Rsqrt", NULL, {GRID(0, 3, 1)}}, /* Rsqrt(0) = 0 */
    {MX_CPU, "Exp", NULL, {DFLT}},
    {MX_BOTH, "Exp", NULL, {{-80, 80, 0}}}, /* the float32 range short of denormal results */
    /* Log away from 1 (where a computed argument would be ill-conditioned), then the special
     * values -1 (NaN), 0 (-inf), 1 */
    {MX_CPU, "Log", NULL, {{0.1, 0.7, 0}}},
    {MX_CPU, "Log", NULL, {{1.5, 6, 0}}},
    {MX_GPU, "Log", NULL, {{0.1, 6, 0}}},
    {MX_BOTH, "Log", NULL, {GRID(-1, 2, 1)}},
    {MX_CPU, "Sin", NULL, {DFLT}},
    {MX_BOTH, "Sin", NULL, {{-100, 100, 0}}}, /* range reduction */
    {MX_CPU, "Cos", NULL, {DFLT}},
    {MX_BOTH, "Cos", NULL, {{-100, 100, 0}}},
    {MX_BOTH, "Sign", NULL, {GRID(-2, 2, 1)}}, /* Sign(0) = 0 */
    {MX_BOTH, "Step", NULL, {GRID(-2, 2, 1)}}, /* Step(0) = 1 */
    {MX_BOTH, "ReLU", NULL, {GRID(-2, 2, 0.5)}},
    {MX_BOTH, "Acos", NULL, {{-0.9, 0.9, 0}}}, /* away from +-1 */
    {MX_BOTH, "Asin", NULL, {{-0.9, 0.9, 0}}},
    {MX_BOTH, "Atan", NULL, {{-20, 20, 0}}},
    {MX_BOTH, "Atan2", NULL, {DFLT, DFLT}},
    {MX_BOTH, "Atan2", NULL, {GRID(-1, 1, 1), GRID(-1, 1, 1)}}, /* axes and atan2(0, 0) = 0 */
    {MX_CPU, "XLogX", NULL, {{0.1, 3, 0}}},
    {MX_CPU, "XLogX", NULL, {GRID(0, 2, 1)}}, /* XLogX(0) = 0 */
    {MX_GPU, "XLogX", NULL, {GRID(0, 3, 0.25)}},
    {MX_CPU, "SinXDivX", NULL, {DFLT}},
    {MX_CPU, "SinXDivX", NULL, {GRID(-1, 1, 1)}}, /* SinXDivX(0) = 1 */
    {MX_GPU, "SinXDivX", NULL, {GRID(-1, 1, 0.5)}},
    {MX_CPU, "Floor", NULL, {{-3, 3, 0}}},
    {MX_BOTH, "Floor", NULL, {GRID(-2, 2, 0.5)}},
    /* Round(x, 2) computes x * 100: x = k/100 + 0.0025 stays 0.25 from a rounding boundary */
    {MX_BOTH, "Round", "2", {GRID(-2.0025, 2, 0.01)}},
    {MX_BOTH, "Round", "0", {GRID(-2.5, 2.5, 1)}}, /* exact halves: away from zero */
    {MX_CPU, "Round", "0", {DFLT}},
    /* Mod(x, y, z) = x - y floor((x - z) / y): with x on the grid 1/256 + k/64, z on k/64
     * and y in {1, 2}, (x - z) / y is exact and never an integer, so floor cannot jump */
    {MX_BOTH, "Mod", NULL, {GRID(-4 + 1.0 / 256, 4, 1.0 / 64), GRID(1, 2, 1), GRID(-1, 1, 1.0 / 64)}},
    {MX_CPU, "Clamp", NULL, {DFLT, {-1, -0.2, 0}, {0.2, 1, 0}}},
    {MX_BOTH, "Clamp", NULL, {GRID(-2, 2, 1), GRID(-1, 0, 1), GRID(0, 1, 1)}}, /* ties with bounds */
    {MX_BOTH, "ClampInt", "-1,1", {DFLT}},
    {MX_BOTH, "IfElse", NULL, {GRID(-2, 2, 1), DFLT, DFLT}}, /* IfElse(0, y, z) = y */
    {MX_BOTH, "Equal", NULL, {GRID(-2, 2, 1), GRID(-2, 2, 1)}},
    {MX_BOTH, "NotEqual", NULL, {GRID(-2, 2, 1), GRID(-2, 2, 1)}},
    {MX_BOTH, "LessThan", NULL, {GRID(-2, 2, 1), GRID(-2, 2, 1)}},
    {MX_BOTH, "LessOrEqual", NULL, {GRID(-2, 2, 1), GRID(-2, 2, 1)}},
};
#undef GRID

/* Cases of one EW entry: dims configurations (every argument of dim 3; argument k alone of
 * dim 1; all of dim 1), at least three so the rotation gives each argument every category. */
static int ew_cases_for(int op, const ew_dom *e, opcase *out) {
  static const char *const names[3] = {"x", "y", "z"};
  const char *sig = dag_ops[op].sig;
  int nf = (int)strspn(sig, "f"), ni = (int)strspn(sig + nf, "i");
  if (sig[nf + ni] || nf > 3) return -1;
  char call[160];
  int at = snprintf(call, sizeof call, "%s(", dag_ops[op].name);
  for (int k = 0; k < nf; k++) at += snprintf(call + at, sizeof call - (size_t)at, "%s%s", k ? "," : "", names[k]);
  if (ni) at += snprintf(call + at, sizeof call - (size_t)at, ",%s", e && e->params ? e->params : ni > 1 ? "2,2" : "2");
  snprintf(call + at, sizeof call - (size_t)at, ")");
  int cfgs[5], ncfg = 0;
  for (int cfg = -1; cfg <= nf; cfg++)
    if (!(nf == 1 && cfg == 0)) cfgs[ncfg++] = cfg;
  int n = ncfg < 3 ? 3 : ncfg;
  for (int q = 0; q < n; q++) {
    opcase *c = &out[q];
    int cfg = cfgs[q % ncfg];
    memset(c, 0, sizeof *c);
    snprintf(c->formula, sizeof c->formula, "%s", call);
    c->nv = nf;
    c->rot = q % 3;
    for (int k = 0; k < nf; k++) {
      dom d = e ? e->d[k] : (dom)DFLT;
      if (d.lo == 0 && d.hi == 0) d = (dom)DFLT;
      c->v[k] = (tvar){names[k], cfg == k || cfg == nf ? 1 : 3, d};
    }
  }
  return n;
}

/* ST, SG, LF and AD rows, each run in its rotations (rot; 0: all three). */
typedef struct st_case {
  int suites;
  const char *formula;
  int nv, rot;
  tvar v[MAXV];
} st_case;

#define V(n, d) {n, d, DFLT}
#define VD(n, d, lo, hi, step) {n, d, {lo, hi, step}}
static const st_case st_cases[] = {
    {MX_GPU, "Sum(x)+SumT(a,3)", 2, 0, {V("x", 3), V("a", 1)}},
    {MX_GPU, "(x|y)+Scalprod(x,y)", 2, 0, {V("x", 3), V("y", 3)}},
    {MX_CPU, "Sum(x)", 1, 0, {V("x", 3)}},
    {MX_CPU, "SumT(a,3)", 1, 0, {V("a", 1)}},
    {MX_CPU, "(x|y)", 2, 0, {V("x", 3), V("y", 3)}},
    {MX_CPU, "Max(x)", 1, 0, {V("x", 4)}},
    {MX_CPU, "Min(x)", 1, 0, {V("x", 4)}},
    {MX_CPU, "ArgMax(x)", 1, 0, {V("x", 4)}},
    {MX_CPU, "ArgMin(x)", 1, 0, {V("x", 4)}},
    /* ties: the first extreme component wins */
    {MX_BOTH, "ArgMax(x)+4*ArgMin(x)+Max(x)-Min(x)", 1, 0, {VD("x", 5, -1, 1, 1)}},
    {MX_GPU, "Elem(x,2)*ElemT(a,3,1)+Extract(y,1,3)", 3, 0, {V("x", 3), V("a", 1), V("y", 4)}},
    {MX_GPU, "ExtractT(Concat(x,a),1,5)", 2, 0, {V("x", 3), V("a", 1)}},
    {MX_CPU, "Elem(x,2)", 1, 0, {V("x", 3)}},
    {MX_CPU, "ElemT(a,4,1)", 1, 0, {V("a", 1)}},
    {MX_CPU, "Extract(x,1,2)", 1, 0, {V("x", 4)}},
    {MX_CPU, "ExtractT(x,1,5)", 1, 0, {V("x", 3)}},
    {MX_CPU, "Concat(x,a)", 2, 0, {V("x", 3), V("a", 1)}},
    /* OneHot rounds to nearest: values k/2 + 1/4 stay clear of the half; -1 and 4 are out */
    {MX_BOTH, "OneHot(a,4)", 1, 0, {VD("a", 1, -1.25, 4.25, 0.5)}},
    {MX_GPU, "Concat(MatVecMult(A,x),VecMatMult(y,A))", 3, 0, {V("A", 6), V("x", 2), V("y", 3)}},
    {MX_CPU, "MatVecMult(A,x)", 2, 0, {V("A", 6), V("x", 3)}},
    {MX_CPU, "MatVecMult(A,x)", 2, 0, {V("A", 6), V("x", 2)}},
    {MX_CPU, "VecMatMult(x,A)", 2, 0, {V("x", 3), V("A", 6)}},
    {MX_BOTH, "TensorProd(x,y)", 2, 0, {V("x", 3), V("y", 2)}},
    {MX_CPU, "TensorDot(A,B,[2,3],[3,2],[1],[0])", 2, 0, {V("A", 6), V("B", 6)}},
    {MX_BOTH, "TensorDot(A,B,[2,3,4],[3,5],[1],[0],[2,0,1])", 2, 0, {V("A", 24), V("B", 15)}},
    {MX_CPU, "TensorDot(A,B,[2,3],[2,3],[0,1],[0,1])", 2, 0, {V("A", 6), V("B", 6)}},
    {MX_GPU, "SqNorm2(x)+Norm2(y)+SqDist(x,y)", 2, 0, {V("x", 3), V("y", 3)}},
    {MX_CPU, "SqNorm2(x)", 1, 0, {V("x", 3)}},
    {MX_CPU, "Norm2(x)", 1, 0, {V("x", 3)}},
    {MX_BOTH, "Normalize(x)", 1, 0, {VD("x", 3, 0.5, 2, 0)}},
    {MX_CPU, "SqDist(x,y)", 2, 0, {V("x", 3), V("y", 3)}},
    {MX_CPU, "SqNormIso(s,x)", 2, 0, {V("s", 1), V("x", 3)}},
    {MX_CPU, "SqNormDiag(s,x)", 2, 0, {V("s", 3), V("x", 3)}},
    {MX_CPU, "SymSqNorm(A,x)", 2, 0, {V("A", 9), V("x", 3)}},
    {MX_CPU, "WeightedSqNorm(s,x)", 2, 0, {V("s", 1), V("x", 3)}},
    {MX_CPU, "WeightedSqNorm(s,x)", 2, 0, {V("s", 4), V("x", 2)}},
    {MX_CPU, "WeightedSqDist(s,x,y)", 3, 0, {V("s", 3), V("x", 3), V("y", 3)}},
    {MX_GPU, "SqNormIso(s,x)+SqNormDiag(t,x)+SymSqNorm(A,x)", 4, 0,
     {V("s", 1), V("t", 3), V("A", 9), V("x", 3)}},
    {MX_GPU, "WeightedSqNorm(s,x)+WeightedSqDist(t,x,y)", 4, 0,
     {V("s", 4), V("t", 2), V("x", 2), V("y", 2)}},
    {MX_BOTH, "Kron(x,y,[2,3],[2,2])", 2, 0, {V("x", 6), V("y", 4)}},
    /* complex: the four structural rows, and the sugar over them (a complex scalar broadcasts) */
    {MX_CPU, "ComplexReal(z)+ComplexImag(z)", 1, 0, {V("z", 6)}},
    {MX_CPU, "Real2Complex(x)+Imag2Complex(Sin(x))", 1, 0, {V("x", 3)}},
    {MX_CPU, "Conj(z)+ComplexExp(z)+ComplexExp1j(x)", 2, 0, {V("z", 4), V("x", 2)}},
    {MX_CPU, "Concat(ComplexAbs(z),ComplexSquareAbs(w))", 2, 0, {VD("z", 4, 0.5, 2, 0), V("w", 2)}},
    {MX_CPU, "Concat(ComplexAngle(z),ComplexSum(w))", 2, 0, {V("z", 4), V("w", 6)}},
    {MX_CPU, "ComplexSumT(z,3)", 1, 0, {V("z", 2)}},
    {MX_CPU, "ComplexAdd(z,w)-ComplexSubtract(w,c)", 3, 0, {V("z", 4), V("w", 4), V("c", 2)}},
    {MX_CPU, "ComplexMult(z,w)+ComplexMult(c,z)", 3, 0, {V("z", 4), V("w", 4), V("c", 2)}},
    {MX_CPU, "ComplexRealScal(s,z)+ComplexDivide(z,w)", 3, 0,
     {V("s", 1), V("z", 4), VD("w", 4, 0.5, 2, 0)}},
    {MX_GPU, "ComplexDivide(ComplexMult(z,Conj(w)),ComplexExp(c))+ComplexRealScal(s,ComplexExp1j(x))", 5, 0,
     {V("z", 4), V("w", 4), VD("c", 2, -1, 1, 0), V("s", 1), V("x", 2)}},
    {MX_GPU, "Concat(ComplexAbs(z)+ComplexAngle(w),ComplexSumT(ComplexSum(ComplexAdd(z,ComplexSubtract"
             "(w,Real2Complex(ComplexReal(z))+Imag2Complex(ComplexImag(w))))),2))*Sum(ComplexSquareAbs(w))",
     2, 0, {VD("z", 4, 0.5, 2, 0), V("w", 4)}},
    {MX_CPU, "IntCst(3)*x+IntInv(7)", 1, 0, {V("x", 2)}},
    {MX_CPU, "RatCst(2,3)*x-1e30*Square(y)", 2, 0, {V("x", 2), V("y", 2)}}, /* 1e30: a Cst node */
    {MX_CPU, "Var(2,2,1)*x+y", 2, 0, {V("x", 2), V("y", 2)}},
    {MX_CPU, "Zero(3)", 0, 0, {{0}}}, /* simplifies to Zero: the output is filled */
    {MX_GPU, "IntCst(3)*x+IntInv(7)+RatCst(2,3)*y-1e30*Square(y)", 2, 0, {V("x", 2), V("y", 2)}},
    {MX_GPU, "Var(2,2,1)*x+y+Zero(2)", 2, 0, {V("x", 2), V("y", 2)}},
    {MX_GPU, "Zero(3)", 0, 1, {{0}}},
    {MX_CPU, "Square(p-a)*Exp(x+y)", 4, 0, {V("x", 3), V("y", 3), V("a", 1), V("p", 1)}},
    {MX_CPU, "Grad(Square(p-a)*Exp(x+y),y,e)", 5, 0,
     {V("x", 3), V("y", 3), V("a", 1), V("p", 1), V("e", 3)}},
    {MX_BOTH, "Grad(Exp(-SqDist(x,y))*b,x,c)", 4, 0, {V("x", 3), V("y", 3), V("b", 2), V("c", 2)}},
    /* Grad(f, v) without e: v must be Vi or Vj, so x never takes the third rotation (Pm) */
    {MX_BOTH, "Grad(Sin(x)*SqNorm2(y),x)", 2, 2, {V("x", 3), V("y", 3)}},
    {MX_CPU, "Grad(Grad(Exp(x)*y,x,a),y,b)", 4, 0, {V("x", 3), V("y", 3), V("a", 3), V("b", 3)}},
    {MX_BOTH, "Diff(Sin(x)*(x|y),x,u)", 3, 0, {V("x", 3), V("y", 3), V("u", 3)}},
    /* the GPU runs the derivative operators in one rotation only (device time) */
    {MX_CPU, "GradMatrix(Sin(x)*Elem(x,1),x)", 1, 0, {V("x", 2)}},
    {MX_CPU, "Divergence(Sin(x)*SqNorm2(x),x)", 1, 0, {V("x", 3)}},
    {MX_CPU, "Laplacian(Exp(-SqNorm2(x))*Sin(Elem(x,0)),x)", 1, 0, {V("x", 3)}},
    {MX_GPU, "GradMatrix(Sin(x)*Elem(x,1),x)", 1, 1, {V("x", 2)}},
    {MX_GPU, "Divergence(Sin(x)*SqNorm2(x),x)", 1, 1, {V("x", 3)}},
    {MX_GPU, "Laplacian(Exp(-SqNorm2(x))*Sin(Elem(x,0)),x)", 1, 1, {V("x", 3)}},
};
#undef V
#undef VD

opcase mx_op_cases[MAXOPCASES];

int mx_build_op_cases(int suite) {
  int n = 0, got;
  for (int op = 0; op < OP_COUNT; op++) {
    if (dag_ops[op].kind != K_EW) continue;
    int found = 0;
    for (size_t e = 0; e < sizeof ew_doms / sizeof ew_doms[0]; e++) {
      if (!(ew_doms[e].suites & suite) || strcmp(ew_doms[e].op, dag_ops[op].name)) continue;
      if (n + 5 > MAXOPCASES || (got = ew_cases_for(op, &ew_doms[e], mx_op_cases + n)) < 0) return -1;
      n += got, found = 1;
    }
    if (!found) {
      if (n + 5 > MAXOPCASES || (got = ew_cases_for(op, NULL, mx_op_cases + n)) < 0) return -1;
      n += got;
    }
  }
  for (size_t s = 0; s < sizeof st_cases / sizeof st_cases[0]; s++) {
    const st_case *c = &st_cases[s];
    if (!(c->suites & suite)) continue;
    for (int rot = 0; rot < (c->rot ? c->rot : 3); rot++) {
      if (n >= MAXOPCASES) return -1;
      opcase *o = &mx_op_cases[n++];
      memset(o, 0, sizeof *o);
      snprintf(o->formula, sizeof o->formula, "%s", c->formula);
      o->nv = c->nv, o->rot = rot;
      memcpy(o->v, c->v, sizeof o->v);
    }
  }
  return n;
}

/* The coverage tables span the tests of a suite, so the suites run without fork. */
static int op_seen[OP_COUNT];
static int red_seen[MX_NRED];
static void mark_ops(const fe_program *p, const char *text);

/* The backend under test, then the reference, then the comparison. */
static void run_and_check(prob *P, mx_runner run, int how) {
  run(P, how);
  mx_prob_reference(P);
  mx_check_outputs(P);
}

void mx_op_case(keops_context *ctx, const opcase *c, int axis, keops_dtype dt, uint64_t seed,
                mx_runner run, int how, const char *suffix) {
  static const char *const cats[3] = {"Vi", "Vj", "Pm"};
  char al[MAXV][64];
  const char *alp[MAXV];
  dom doms[MAXV];
  for (int w = 0; w < c->nv; w++) {
    snprintf(al[w], sizeof al[w], "%s = %s(%d)", c->v[w].name, cats[(w + c->rot) % 3], c->v[w].dim);
    alp[w] = al[w];
    doms[w] = c->v[w].d;
  }
  keops_kernel_desc desc = {.size = sizeof(keops_kernel_desc), .formula = c->formula, .aliases = alp, .n_aliases = c->nv,
                            .reduction = "Sum", .axis = tu_axis(axis), .dtype = dt};
  keops_kernel *k = mx_make(ctx, &desc);
  prob P;
  mx_prob_init(&P, k, OP_M, OP_N, doms, c->nv, NULL, seed);
  int at = snprintf(P.what, sizeof P.what, "Sum(%s) with", c->formula);
  for (int w = 0; w < c->nv; w++) at += snprintf(P.what + at, sizeof P.what - (size_t)at, " %s", al[w]);
  snprintf(P.what + at, sizeof P.what - (size_t)at, ", axis %d, %s%s", axis, mx_dtype_name(dt),
           suffix);
  run_and_check(&P, run, how);
  mark_ops(P.p, c->formula);
  mx_prob_free(&P);
  keops_kernel_destroy(k);
}

/* ---- coverage ---------------------------------------------------------------------------------- */

/* Rows in the compiled DAG (reachable from the program formula), and the rows written as
 * calls in the text (sugar and autodiff forms never become nodes). */
static void mark_ops(const fe_program *p, const char *text) {
  uint8_t *reach = calloc(dag_count(p->d) + 1, 1);
  reach[p->f] = 1;
  for (uint32_t id = p->f; id >= 1; id--) {
    if (!reach[id]) continue;
    const dag_node *nd = dag_get(p->d, id);
    op_seen[nd->op] = 1;
    for (int c = 0; c < nd->nk; c++) reach[nd->k[c]] = 1;
  }
  free(reach);
  for (const char *s = text; *s; s++) {
    if (!isalpha((unsigned char)*s) || (s > text && (isalnum((unsigned char)s[-1]) || s[-1] == '_')))
      continue;
    size_t len = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");
    int op = s[len] == '(' ? dag_op_lookup(s, len) : -1;
    if (op >= 0) op_seen[op] = 1;
  }
}

void mx_reset_coverage(void) {
  memset(op_seen, 0, sizeof op_seen);
  memset(red_seen, 0, sizeof red_seen);
}

void mx_check_every_op_row(void) {
  for (int op = 0; op < OP_COUNT; op++)
    ck_assert_msg(op_seen[op], "no %s case compiled and checked the %s row", mx_backend,
                  dag_ops[op].name);
}

const char *const mx_red_names[MX_NRED] = {
#define X(name, family, dir, outputs, f2, weight1, fin) #name,
#include "reductions.def"
#undef X
};

static void mark_reduction(const red_row *row) {
  for (int r = 0; r < MX_NRED; r++)
    if (!strcmp(mx_red_names[r], row->name)) red_seen[r] = 1;
}

void mx_check_every_reduction_row(int n_rcfgs) {
  ck_assert_msg(n_rcfgs > 0, "the reduction configurations do not fit MAXRCFG");
  for (int r = 0; r < MX_NRED; r++)
    ck_assert_msg(red_seen[r], "reduction %s was never compiled and checked on the %s",
                  mx_red_names[r], mx_backend);
}

/* ---- the reduction matrix ------------------------------------------------------------------- */

int mx_build_rcfgs(rcfg *out, int max) {
  static const keops_sum_scheme schemes[3] = {KEOPS_SUM_DIRECT, KEOPS_SUM_BLOCK, KEOPS_SUM_KAHAN};
  int n = 0;
  for (int r = 0; r < MX_NRED; r++) {
    const red_row *row = red_find(mx_red_names[r]);
    if (!row) return -1;
    int sum = row->family == RF_SUM, lse = row->family == RF_LSE, kmin = row->family == RF_KMIN;
    for (int f2 = row->f2 == F2_REQ; f2 <= (row->f2 != F2_NO); f2++)
      for (int K = kmin ? 1 : 0; K <= (kmin ? 10 : 0); K += K == 1 ? 2 : 7)
        for (int wide = 0; wide < (lse && !f2 ? 1 : 2); wide++)
          for (int axis = 0; axis < 2; axis++)
            for (int b = 0; b < 2; b++)
              for (int s = 0; s < (sum ? 3 : 1); s++)
                for (int dacc = 0; dacc < (!b && (sum || lse) ? 2 : 1); dacc++) {
                  if (n >= max) return -1;
                  out[n++] = (rcfg){row, f2, K, wide, axis, dacc, 0, mx_dtype_of(b),
                                    sum ? schemes[s] : KEOPS_SUM_AUTO};
                }
  }
  return n;
}

/* Five variables of both categories and a parameter; formulas of dim 1 and 3; the LogSumExp
 * family on one formula with positive weights of dim 1 and 3. */
static const char *const red_aliases[] = {"x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "c = Vi(1)",
                                          "g = Pm(1)"};
static const dom red_doms[5] = {{-1, 1, 0}, {-1, 1, 0}, {-1, 1, 0}, {-1, 1, 0}, {0.5, 1.5, 0}};
static const char *const red_f[2] = {"Exp(-g*SqDist(x,y))*b+c",       /* dim 1 */
                                     "Sin(x*y+c)*Exp(b)-g*Abs(x-y)"}; /* dim 3 */
static const char *const lse_f = "b*c-g*SqDist(x,y)";
static const char *const lse_w[2] = {"Exp(b)", "Exp(x-y)+Square(c)"};

void mx_red_case(keops_context *ctx, const rcfg *g, int64_t M, int64_t N, uint64_t seed,
                 mx_runner run, int how, const char *suffix) {
  int lse = g->row->family == RF_LSE;
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = lse ? lse_f : red_f[g->wide],
                         .aliases = red_aliases,
                         .n_aliases = 5,
                         .reduction = g->row->name,
                         .axis = tu_axis(g->axis),
                         .k = g->K,
                         .formula2 = g->f2 ? lse_w[g->wide] : NULL,
                         .dtype = g->dt,
                         .sum_scheme = g->scheme,
                         .double_accumulator = g->dacc};
  keops_kernel *k = mx_make(ctx, &d);
  prob P;
  mx_prob_init(&P, k, M, N, red_doms, 5, NULL, seed);
  snprintf(P.what, sizeof P.what, "%s(%s%s%s) K=%d, axis %d, %s, %s%s%s", g->row->name, d.formula,
           g->f2 ? ", " : "", g->f2 ? d.formula2 : "", g->K, g->axis, mx_dtype_name(g->dt),
           mx_scheme_name(g->scheme), g->dacc ? " + double accumulator" : "", suffix);
  run_and_check(&P, run, how);
  mark_reduction(g->row);
  mx_prob_free(&P);
  keops_kernel_destroy(k);
}
