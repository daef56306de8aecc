/* The reference interpreter, op by op, against independent closed forms: libm calls and
 * hand-written loops, never the interpreter's own code paths. Table-driven over ops.def: the
 * last test checks that every EW and ST row was evaluated and every SG row expanded. */
#include <check.h>
#include <complex.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dag.h"
#include "front.h"
#include "testutil.h"

typedef struct op_row {
  int op;
  enum dag_kind kind;
  const char *name;
  const char *sig;
} op_row;

static const op_row rows[] = {
#define X(name, kind, sig, vm, eval, t0, t1, t2) {OP_##name, K_##kind, #name, sig},
#include "ops.def"
#undef X
};
#define NROWS ((int)(sizeof rows / sizeof rows[0]))

static int covered[OP_COUNT]; /* rows seen in an evaluated DAG (or expanded, for SG) */

/* Marks every op of the DAG below root, walking ids downwards (children have smaller ids). */
static void mark_ops(const dag *d, uint32_t root) {
  unsigned char *need = calloc((size_t)root + 1, 1);
  ck_assert_ptr_nonnull(need);
  need[root] = 1;
  for (uint32_t id = root; id >= 1; id--) {
    if (!need[id]) continue;
    const dag_node *n = dag_get(d, id);
    covered[n->op] = 1;
    for (int t = 0; t < n->nk; t++) need[n->k[t]] = 1;
  }
  free(need);
}

static void eval(dag *d, uint32_t id, const double *const *vars, double *out) {
  ck_assert_msg(id != 0, "build failed: %s", dag_err(d)->msg);
  mark_ops(d, id);
  interp_eval(d, id, vars, out);
}

static int count_char(const char *s, char c) {
  int n = 0;
  for (; s && *s && *s != '?'; s++) n += *s == c;
  return n;
}

static void assert_close(double got, double want, double tol, const char *what, int k) {
  if (isnan(want)) {
    ck_assert_msg(isnan(got), "%s[%d]: got %.17g, want NaN", what, k, got);
    return;
  }
  if (isinf(want)) {
    ck_assert_msg(got == want, "%s[%d]: got %.17g, want %g", what, k, got, want);
    return;
  }
  ck_assert_msg(fabs(got - want) <= tol * (1 + fabs(want)), "%s[%d]: got %.17g, want %.17g", what,
                k, got, want);
}

static void assert_vec(const double *got, const double *want, int n, const char *what) {
  for (int k = 0; k < n; k++) assert_close(got[k], want[k], 1e-14, what, k);
}

/* ---- elementwise rows ---------------------------------------------------------------- */

/* Independent closed forms of the EW rows (written from the KeOps semantics, not ops.def). */
static double my_round(double x, int64_t digits) {
  double s = pow(10.0, (double)digits), v = x * s;
  double r = v < 0 ? -floor(-v + 0.5) : floor(v + 0.5); /* half away from zero */
  return r / s;
}

static double my_mod(double x, double n, double d) { /* result in [d, d+n) for n > 0 */
  double r = fmod(x - d, n);
  if (r != 0 && ((r < 0) != (n < 0))) r += n;
  return r + d;
}

/* Rows whose value is a vmath function (ops.def's vm column) take vmath.def's reference,
 * the long double libm function the vmath tests compare with: written apart from ops.def's
 * eval, so still independent of it, and a new such row needs no case here. */
#define X(NAME, name, nargs, emit, ref, ulp32, ulp64, lim32, lim64, dom, extra)                  \
  static inline long double vmref_##NAME(long double x, long double y) {                         \
    (void)x, (void)y;                                                                             \
    return ref;                                                                                   \
  }
#include "vmath.def"
#undef X
#define vmref_NONE NULL
static long double (*const VMREF[OP_COUNT])(long double x, long double y) = {
#define X(name, kind, sig, vm, eval, t0, t1, t2) [OP_##name] = vmref_##vm,
#include "ops.def"
#undef X
};
#undef vmref_NONE

static double ref_ew(int op, double x, double y, double z, const int64_t *p) {
  if (VMREF[op]) return (double)VMREF[op](x, y);
  switch (op) {
  case OP_Add: return x + y;
  case OP_Subtract: return x - y;
  case OP_Mult: return x * y;
  case OP_Divide: return x / y;
  case OP_Minus: return -x;
  case OP_Inv: return 1.0 / x;
  case OP_Square: return pow(x, 2);
  case OP_Pow: {
    double r = 1;
    for (int64_t q = 0; q < llabs(p[0]); q++) r *= x;
    return p[0] < 0 ? 1 / r : r;
  }
  case OP_Rsqrt: return x == 0 ? 0 : pow(x, -0.5);
  case OP_Abs: return x < 0 ? -x : x;
  case OP_Sign: return x > 0 ? 1 : x < 0 ? -1 : 0;
  case OP_Step: return x >= 0 ? 1 : 0;
  case OP_ReLU: return x > 0 ? x : 0;
  case OP_XLogX: return x == 0 ? 0 : x * log(x);
  case OP_SinXDivX: return x == 0 ? 1 : sin(x) / x;
  case OP_Round: return my_round(x, p[0]);
  case OP_Mod: return my_mod(x, y, z);
  case OP_Clamp: return fmin(fmax(x, y), z);
  case OP_ClampInt: return fmin(fmax(x, (double)p[0]), (double)p[1]);
  case OP_IfElse: return x >= 0 ? y : z;
  case OP_Equal: return x == y ? 1 : 0;
  case OP_NotEqual: return x == y ? 0 : 1;
  case OP_LessThan: return x < y ? 1 : 0;
  case OP_LessOrEqual: return x <= y ? 1 : 0;
  }
  ck_abort_msg("no closed form for op %s", dag_ops[op].name);
  return NAN;
}

#define NV 6
/* Sample values of argument t of op, inside its domain. */
static void samples(int op, int t, double *v) {
  static const double gen[3][NV] = {
      {-2.5, -1, 0, 0.5, 3, 1.25}, {1.5, -1, 0, 0.5, -3, 2}, {2, 0.25, -1, 7, 0, 3}};
  static const double pos[NV] = {0.1, 0.5, 1, 2, 3.5, 9};
  static const double unit[NV] = {-1, -0.5, 0, 0.3, 0.99, 1};
  static const double nonneg[NV] = {0, 0.25, 1, 2, 9, 0.5};
  static const double mod_n[NV] = {3, 2, -2, 1.5, 4, 0.5};
  static const double lo[NV] = {-1, -2, 0, 0.25, 1, -5}, hi[NV] = {1, -1.5, 0.5, 3, 2, 5};
  const double *s = gen[t];
  if (t == 0 && (op == OP_Log || op == OP_Powf)) s = pos;
  if (t == 0 && (op == OP_Sqrt || op == OP_Rsqrt || op == OP_XLogX)) s = nonneg;
  if (t == 0 && (op == OP_Acos || op == OP_Asin)) s = unit;
  if (t == 1 && (op == OP_Divide || op == OP_Mod)) s = mod_n;
  if (op == OP_Clamp && t > 0) s = t == 1 ? lo : hi;
  memcpy(v, s, sizeof(double) * NV);
}

static int ew_params(int op, int64_t *p) {
  switch (op) {
  case OP_Pow: p[0] = 3; return 1;
  case OP_Round: p[0] = 1; return 1;
  case OP_ClampInt: p[0] = -1, p[1] = 2; return 2;
  default: return 0;
  }
}

/* One EW row with full-width arguments, and with argument `scalar` broadcast from dim 1. */
static void check_ew_row(const op_row *r, int scalar) {
  int nf = count_char(r->sig, 'f');
  if (scalar >= nf) return;
  dag *d = dag_new();
  int64_t p[4];
  int np = ew_params(r->op, p);
  double val[3][NV], out[NV];
  const double *vars[3];
  uint32_t kids[3];
  for (int t = 0; t < nf; t++) {
    samples(r->op, t, val[t]);
    int dim = t == scalar ? 1 : NV;
    kids[t] = dag_var(d, t, dim, CAT_I);
    vars[t] = val[t];
  }
  uint32_t id = dag_make(d, r->op, kids, nf, p, np);
  eval(d, id, vars, out);
  ck_assert_msg(dag_get(d, id)->op == r->op, "%s was rewritten", r->name);
  int D = dag_get(d, id)->dim; /* 1 when every argument is the scalar one */
  for (int k = 0; k < D; k++) {
    double a[3] = {0, 0, 0};
    for (int t = 0; t < nf; t++) a[t] = val[t][t == scalar ? 0 : k];
    assert_close(out[k], ref_ew(r->op, a[0], a[1], a[2], p), 1e-13, r->name, k);
  }
  dag_free(d);
}

START_TEST(ew_rows) {
  int n = 0;
  for (int q = 0; q < NROWS; q++) {
    if (rows[q].kind != K_EW) continue;
    check_ew_row(&rows[q], -1);
    for (int s = 0; s < 3; s++) check_ew_row(&rows[q], s);
    n++;
  }
  ck_assert_int_ge(n, 30);
}
END_TEST

/* Scalar EW op at one point: op(x[, y[, z]]) with params. */
static double ew1(int op, int nf, double x, double y, double z, const int64_t *p, int np) {
  dag *d = dag_new();
  double v[3] = {x, y, z}, out;
  const double *vars[3] = {&v[0], &v[1], &v[2]};
  uint32_t kids[3];
  for (int t = 0; t < nf; t++) kids[t] = dag_var(d, t, 1, CAT_J);
  uint32_t id = dag_make(d, op, kids, nf, p, np);
  eval(d, id, vars, &out);
  dag_free(d);
  return out;
}

START_TEST(ew_special_values) {
  ck_assert(ew1(OP_Rsqrt, 1, 0, 0, 0, NULL, 0) == 0);
  ck_assert(ew1(OP_Rsqrt, 1, 4, 0, 0, NULL, 0) == 0.5);
  ck_assert(ew1(OP_Step, 1, 0, 0, 0, NULL, 0) == 1);
  ck_assert(ew1(OP_Step, 1, -1e-300, 0, 0, NULL, 0) == 0);
  ck_assert(ew1(OP_Sign, 1, 0, 0, 0, NULL, 0) == 0);
  ck_assert(ew1(OP_Sign, 1, -3, 0, 0, NULL, 0) == -1);
  ck_assert(ew1(OP_SinXDivX, 1, 0, 0, 0, NULL, 0) == 1);
  ck_assert(ew1(OP_XLogX, 1, 0, 0, 0, NULL, 0) == 0);
  ck_assert(ew1(OP_ReLU, 1, -2, 0, 0, NULL, 0) == 0);
  int64_t d0 = 0, d2 = 2, dm2 = -2;
  ck_assert(ew1(OP_Round, 1, 2.5, 0, 0, &d0, 1) == 3);
  ck_assert(ew1(OP_Round, 1, -2.5, 0, 0, &d0, 1) == -3);
  ck_assert(ew1(OP_Round, 1, 0.5, 0, 0, &d0, 1) == 1);
  ck_assert(ew1(OP_Round, 1, -0.125, 0, 0, &d2, 1) == -0.13);
  ck_assert(ew1(OP_Round, 1, 1234.5, 0, 0, &dm2, 1) == 1200);
  ck_assert(ew1(OP_Round, 1, 1250, 0, 0, &dm2, 1) == 1300);
  ck_assert(ew1(OP_Mod, 3, -1, 3, 0, NULL, 0) == 2);    /* floor modulo, not C's fmod */
  ck_assert(ew1(OP_Mod, 3, 5.5, 2, 1, NULL, 0) == 1.5); /* in [d, d+n) */
  ck_assert(ew1(OP_Mod, 3, 7, 2.5, 0, NULL, 0) == 2);
  ck_assert(ew1(OP_Clamp, 3, 5, 0, 1, NULL, 0) == 1);
  ck_assert(ew1(OP_Clamp, 3, -5, 0, 1, NULL, 0) == 0);
  ck_assert(ew1(OP_Clamp, 3, 0.25, 0, 1, NULL, 0) == 0.25);
  int64_t ci[2] = {-1, 2};
  ck_assert(ew1(OP_ClampInt, 1, 7.5, 0, 0, ci, 2) == 2);
  ck_assert(ew1(OP_ClampInt, 1, -7.5, 0, 0, ci, 2) == -1);
  ck_assert(ew1(OP_ClampInt, 1, 0.5, 0, 0, ci, 2) == 0.5);
  ck_assert(ew1(OP_IfElse, 3, 0, 2, 3, NULL, 0) == 2);
  ck_assert(ew1(OP_IfElse, 3, -0.0, 2, 3, NULL, 0) == 2);
  ck_assert(ew1(OP_IfElse, 3, -1e-9, 2, 3, NULL, 0) == 3);
  ck_assert(ew1(OP_IfElse, 3, NAN, 2, 3, NULL, 0) == 3);
  ck_assert(ew1(OP_Equal, 2, 1, 1, 0, NULL, 0) == 1);
  ck_assert(ew1(OP_NotEqual, 2, 1, 1, 0, NULL, 0) == 0);
  ck_assert(ew1(OP_LessOrEqual, 2, 1, 1, 0, NULL, 0) == 1);
  ck_assert(ew1(OP_LessThan, 2, 1, 1, 0, NULL, 0) == 0);
  ck_assert(isnan(ew1(OP_Log, 1, -1, 0, 0, NULL, 0)));
  ck_assert(ew1(OP_Log, 1, 0, 0, 0, NULL, 0) == -INFINITY);
}
END_TEST

/* ---- structural rows ----------------------------------------------------------------- */

/* Builds op(vars...) over Vars of the given dims (positions 0..), evaluates with vals. */
static void st_eval(int op, const int *dims, int nk, const int64_t *p, int np,
                    const double *const *vals, double *out, int *outdim) {
  dag *d = dag_new();
  uint32_t kids[3];
  for (int t = 0; t < nk; t++) kids[t] = dag_var(d, t, dims[t], t ? CAT_J : CAT_I);
  uint32_t id = dag_make(d, op, kids, nk, p, np);
  ck_assert_msg(id, "%s: %s", dag_ops[op].name, dag_err(d)->msg);
  ck_assert_int_eq(dag_get(d, id)->op, op);
  *outdim = dag_get(d, id)->dim;
  eval(d, id, vals, out);
  dag_free(d);
}

static double *seq(int n, double start, double step) {
  double *v = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
  for (int k = 0; k < n; k++) v[k] = start + step * k;
  return v;
}

START_TEST(st_reductions_of_vector) {
  double f[5] = {2, -1, 7, 7, -1}, g[5] = {0.5, 3, -2, 1, 4}, out[8];
  const double *v1[1] = {f}, *v2[2] = {f, g};
  int dims[2] = {5, 5}, od;
  st_eval(OP_Sum, dims, 1, NULL, 0, v1, out, &od);
  ck_assert(od == 1 && out[0] == 2 - 1 + 7 + 7 - 1);
  st_eval(OP_Scalprod, dims, 2, NULL, 0, v2, out, &od);
  ck_assert(od == 1 && out[0] == 2 * 0.5 - 3 - 14 + 7 - 4);
  st_eval(OP_Max, dims, 1, NULL, 0, v1, out, &od);
  ck_assert(out[0] == 7);
  st_eval(OP_Min, dims, 1, NULL, 0, v1, out, &od);
  ck_assert(out[0] == -1);
  st_eval(OP_ArgMax, dims, 1, NULL, 0, v1, out, &od); /* ties: the first wins */
  ck_assert(out[0] == 2);
  st_eval(OP_ArgMin, dims, 1, NULL, 0, v1, out, &od);
  ck_assert(out[0] == 1);
  int64_t p = 4;
  double s = 2.5;
  const double *vs[1] = {&s};
  int one[1] = {1};
  st_eval(OP_SumT, one, 1, &p, 1, vs, out, &od);
  ck_assert(od == 4 && out[0] == 2.5 && out[3] == 2.5);
}
END_TEST

START_TEST(st_indexing) {
  double f[5] = {10, 11, 12, 13, 14}, s = -3, out[16];
  const double *vf[1] = {f}, *vs[1] = {&s};
  int d5[1] = {5}, d1[1] = {1}, od;
  int64_t p[2];
  p[0] = 3;
  st_eval(OP_Elem, d5, 1, p, 1, vf, out, &od);
  ck_assert(od == 1 && out[0] == 13);
  p[0] = 4, p[1] = 1; /* ElemT(f, n, m) */
  st_eval(OP_ElemT, d1, 1, p, 2, vs, out, &od);
  ck_assert(od == 4 && out[0] == 0 && out[1] == -3 && out[2] == 0 && out[3] == 0);
  p[0] = 1, p[1] = 3; /* Extract(f, start, d) */
  st_eval(OP_Extract, d5, 1, p, 2, vf, out, &od);
  ck_assert(od == 3 && out[0] == 11 && out[1] == 12 && out[2] == 13);
  p[0] = 2, p[1] = 8; /* ExtractT(f, start, D) */
  st_eval(OP_ExtractT, d5, 1, p, 2, vf, out, &od);
  double want[8] = {0, 0, 10, 11, 12, 13, 14, 0};
  ck_assert_int_eq(od, 8);
  assert_vec(out, want, 8, "ExtractT");
  double g[2] = {7, 8};
  const double *vfg[2] = {f, g};
  int dfg[2] = {5, 2};
  st_eval(OP_Concat, dfg, 2, NULL, 0, vfg, out, &od);
  double wc[7] = {10, 11, 12, 13, 14, 7, 8};
  ck_assert_int_eq(od, 7);
  assert_vec(out, wc, 7, "Concat");
  /* complex <-> real: (re, im) interleaved */
  double z[4] = {1, 2, 3, 4};
  const double *vz[1] = {z};
  int d4[1] = {4}, d2[1] = {2};
  st_eval(OP_ComplexReal, d4, 1, NULL, 0, vz, out, &od);
  ck_assert(od == 2 && out[0] == 1 && out[1] == 3);
  st_eval(OP_ComplexImag, d4, 1, NULL, 0, vz, out, &od);
  ck_assert(od == 2 && out[0] == 2 && out[1] == 4);
  st_eval(OP_Real2Complex, d2, 1, NULL, 0, vfg + 1, out, &od);
  assert_vec(out, (double[]){7, 0, 8, 0}, 4, "Real2Complex");
  st_eval(OP_Imag2Complex, d2, 1, NULL, 0, vfg + 1, out, &od);
  assert_vec(out, (double[]){0, 7, 0, 8}, 4, "Imag2Complex");
}
END_TEST

START_TEST(st_onehot_rounding) {
  /* 1 at floor(f + 0.5) when in [0, D), else all zeros */
  struct {
    double f;
    int at;
  } cases[] = {{0, 0},    {1.5, 2},  {2.49, 2}, {-0.4, 0}, {-0.6, -1},
               {3.49, 3}, {3.5, -1}, {NAN, -1}, {0.5, 1}};
  int64_t D = 4;
  int d1[1] = {1}, od;
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    double out[4];
    const double *v[1] = {&cases[c].f};
    st_eval(OP_OneHot, d1, 1, &D, 1, v, out, &od);
    ck_assert_int_eq(od, 4);
    for (int k = 0; k < 4; k++)
      ck_assert_msg(out[k] == (k == cases[c].at), "OneHot(%g)[%d] = %g", cases[c].f, k, out[k]);
  }
}
END_TEST

START_TEST(st_matrix_products) {
  int n = 3, p = 4, od;
  double *A = seq(n * p, -2, 0.75), *v = seq(p, 1, -0.5), *w = seq(n, 0.25, 2), out[16], want[16];
  const double *av[2] = {A, v}, *wa[2] = {w, A};
  int dav[2] = {n * p, p}, dwa[2] = {n, n * p};
  st_eval(OP_MatVecMult, dav, 2, NULL, 0, av, out, &od); /* A.reshape(n,p) @ v */
  ck_assert_int_eq(od, n);
  for (int r = 0; r < n; r++) {
    want[r] = 0;
    for (int c = 0; c < p; c++) want[r] += A[r * p + c] * v[c];
  }
  assert_vec(out, want, n, "MatVecMult");
  st_eval(OP_VecMatMult, dwa, 2, NULL, 0, wa, out, &od); /* w @ A.reshape(n,p) */
  ck_assert_int_eq(od, p);
  for (int c = 0; c < p; c++) {
    want[c] = 0;
    for (int r = 0; r < n; r++) want[c] += w[r] * A[r * p + c];
  }
  assert_vec(out, want, p, "VecMatMult");
  const double *wv[2] = {w, v};
  int dwv[2] = {n, p};
  st_eval(OP_TensorProd, dwv, 2, NULL, 0, wv, out, &od); /* outer(w, v).ravel() */
  ck_assert_int_eq(od, n * p);
  for (int r = 0; r < n; r++)
    for (int c = 0; c < p; c++) want[r * p + c] = w[r] * v[c];
  assert_vec(out, want, n * p, "TensorProd");
  free(A), free(v), free(w);
}
END_TEST

START_TEST(st_tensordot_numpy_doc) {
  /* numpy.tensordot docs: a = arange(60).reshape(3,4,5), b = arange(24).reshape(4,3,2),
   * tensordot(a, b, axes=([1,0],[0,1])) = [[4400,4730],[4532,4874],[4664,5018],[4796,5162],
   * [4928,5306]] */
  double *a = seq(60, 0, 1), *b = seq(24, 0, 1), out[10];
  const double *v[2] = {a, b};
  int dims[2] = {60, 24}, od;
  int64_t p[] = {3, 3, 4, 5, 3, 4, 3, 2, 2, 1, 0, 2, 0, 1};
  st_eval(OP_TensorDot, dims, 2, p, (int)(sizeof p / sizeof p[0]), v, out, &od);
  double want[10] = {4400, 4730, 4532, 4874, 4664, 5018, 4796, 5162, 4928, 5306};
  ck_assert_int_eq(od, 10);
  assert_vec(out, want, 10, "TensorDot numpy doc");
  free(a), free(b);
}
END_TEST

START_TEST(st_tensordot_loops) {
  tu_rng rng = tu_seed(7);
  double *a = tu_randn(&rng, 24), *b = tu_randn(&rng, 15), out[64], want[64];
  const double *v[2] = {a, b};
  int od;
  /* matrix product: A (2x3) @ B (3x4), B stored in the first 12 of b */
  int dmm[2] = {6, 12};
  int64_t pmm[] = {2, 2, 3, 2, 3, 4, 1, 1, 1, 0};
  st_eval(OP_TensorDot, dmm, 2, pmm, (int)(sizeof pmm / sizeof pmm[0]), v, out, &od);
  ck_assert_int_eq(od, 8);
  for (int i = 0; i < 2; i++)
    for (int k = 0; k < 4; k++) {
      want[i * 4 + k] = 0;
      for (int c = 0; c < 3; c++) want[i * 4 + k] += a[i * 3 + c] * b[c * 4 + k];
    }
  assert_vec(out, want, 8, "TensorDot matmul");
  /* outer product with perm [1,0]: kept axis 0 (size 2) goes to output axis 1 -> (3, 2) */
  int dop[2] = {2, 3};
  int64_t pop[] = {1, 2, 1, 3, 0, 0, 2, 1, 0};
  st_eval(OP_TensorDot, dop, 2, pop, (int)(sizeof pop / sizeof pop[0]), v, out, &od);
  ck_assert_int_eq(od, 6);
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++) want[j * 2 + i] = a[i] * b[j];
  assert_vec(out, want, 6, "TensorDot outer perm");
  /* a (2,3,4) . b (3,5) over a1/b0: T (2,4,5) on axes (a0, a2, b1); perm [2,0,1] puts kept
   * axis q at output axis perm[q]: out = T.transpose(argsort(perm)) = T.transpose(1,2,0),
   * shape (4,5,2) */
  int d3[2] = {24, 15};
  int64_t p3[] = {3, 2, 3, 4, 2, 3, 5, 1, 1, 1, 0, 3, 2, 0, 1};
  st_eval(OP_TensorDot, d3, 2, p3, (int)(sizeof p3 / sizeof p3[0]), v, out, &od);
  ck_assert_int_eq(od, 40);
  for (int i0 = 0; i0 < 2; i0++)
    for (int i2 = 0; i2 < 4; i2++)
      for (int j1 = 0; j1 < 5; j1++) {
        double acc = 0;
        for (int c = 0; c < 3; c++) acc += a[(i0 * 3 + c) * 4 + i2] * b[c * 5 + j1];
        want[(i2 * 5 + j1) * 2 + i0] = acc;
      }
  assert_vec(out, want, 40, "TensorDot perm 3");
  /* full contraction: scalar = sum a*b over both axes of (2,3) and (3,2) transposed */
  int dfc[2] = {6, 6};
  int64_t pfc[] = {2, 2, 3, 2, 3, 2, 2, 0, 1, 2, 1, 0};
  st_eval(OP_TensorDot, dfc, 2, pfc, (int)(sizeof pfc / sizeof pfc[0]), v, out, &od);
  ck_assert_int_eq(od, 1);
  double acc = 0;
  for (int i = 0; i < 2; i++)
    for (int c = 0; c < 3; c++) acc += a[i * 3 + c] * b[c * 2 + i];
  assert_close(out[0], acc, 1e-14, "TensorDot full", 0);
  free(a), free(b);
}
END_TEST

/* ---- leaves, sharing, depth ---------------------------------------------------------- */

START_TEST(leaves) {
  dag *d = dag_new();
  double out[4];
  eval(d, dag_rat(d, 1, 3), NULL, out);
  ck_assert(out[0] == 1.0 / 3.0);
  eval(d, dag_rat(d, -7, 2), NULL, out);
  ck_assert(out[0] == -3.5);
  eval(d, dag_zero(d, 4), NULL, out);
  ck_assert(out[0] == 0 && out[3] == 0);
  uint32_t c = dag_cst(d, 0x1.23456789abcdep+300); /* no int64 ratio: a Cst node */
  ck_assert_int_eq(dag_get(d, c)->op, OP_Cst);
  eval(d, c, NULL, out);
  ck_assert(out[0] == 0x1.23456789abcdep+300);
  c = dag_cst(d, -0x1.8p-1000);
  eval(d, c, NULL, out);
  ck_assert(out[0] == -0x1.8p-1000);
  double x[3] = {1, 2, 3};
  const double *vars[2] = {NULL, x};
  eval(d, dag_var(d, 1, 3, CAT_P), vars, out);
  ck_assert(out[0] == 1 && out[2] == 3);
  dag_free(d);
}
END_TEST

START_TEST(deep_chain_and_sharing) {
  dag *d = dag_new();
  double x = 0.7, out;
  const double *vars[1] = {&x};
  uint32_t v = dag_var(d, 0, 1, CAT_I);
  int depth = DAG_MAX_DEPTH - 10;
  for (int k = 0; k < depth; k++) v = dag_un(d, OP_Sin, v);
  eval(d, v, vars, &out);
  double want = x;
  for (int k = 0; k < depth; k++) want = sin(want);
  ck_assert(out == want);
  /* a shared subexpression: s = Exp(x); s*s + s, evaluated once per node */
  uint32_t y = dag_var(d, 0, 1, CAT_I), s = dag_un(d, OP_Exp, y);
  uint32_t e = dag_bin(d, OP_Add, dag_bin(d, OP_Mult, s, dag_un(d, OP_Cos, s)), s);
  eval(d, e, vars, &out);
  assert_close(out, exp(x) * cos(exp(x)) + exp(x), 1e-15, "shared", 0);
  dag_free(d);
}
END_TEST

/* ---- sugar rows, through fe_call ----------------------------------------------------- */

static uint32_t sg_build(dag *d, int op, const uint32_t *kids, int nk, const int64_t *p, int np) {
  uint32_t id = fe_call(d, op, kids, nk, p, np, NULL);
  ck_assert_msg(id, "%s: %s", dag_ops[op].name, dag_err(d)->msg);
  covered[op] = 1;
  return id;
}

START_TEST(sg_rows) {
  dag *d = dag_new();
  double f[3] = {1, -2, 0.5}, g[3] = {0.25, 4, -1}, s = 1.5, S[9], out[16];
  for (int k = 0; k < 9; k++) S[k] = 0.1 * k - 0.3;
  const double *vars[5] = {f, g, &s, S, NULL};
  uint32_t x = dag_var(d, 0, 3, CAT_I), y = dag_var(d, 1, 3, CAT_J), a = dag_var(d, 2, 1, CAT_P),
           M = dag_var(d, 3, 9, CAT_P);
  double sq = 1 + 4 + 0.25, dist = 0;
  for (int k = 0; k < 3; k++) dist += (f[k] - g[k]) * (f[k] - g[k]);
  uint32_t k1[1] = {x}, k2[2] = {x, y}, ka[2] = {a, x}, kd[2] = {y, x}, kM[2] = {M, x},
           k3[3] = {a, x, y};
  eval(d, sg_build(d, OP_SqNorm2, k1, 1, NULL, 0), vars, out);
  assert_close(out[0], sq, 1e-15, "SqNorm2", 0);
  eval(d, sg_build(d, OP_Norm2, k1, 1, NULL, 0), vars, out);
  assert_close(out[0], sqrt(sq), 1e-15, "Norm2", 0);
  eval(d, sg_build(d, OP_Normalize, k1, 1, NULL, 0), vars, out);
  for (int k = 0; k < 3; k++) assert_close(out[k], f[k] / sqrt(sq), 1e-15, "Normalize", k);
  eval(d, sg_build(d, OP_SqDist, k2, 2, NULL, 0), vars, out);
  assert_close(out[0], dist, 1e-15, "SqDist", 0);
  eval(d, sg_build(d, OP_SqNormIso, ka, 2, NULL, 0), vars, out);
  assert_close(out[0], s * sq, 1e-15, "SqNormIso", 0);
  double diag = 0, sym = 0;
  for (int k = 0; k < 3; k++) diag += g[k] * f[k] * f[k];
  for (int k = 0; k < 3; k++)
    for (int l = 0; l < 3; l++) sym += S[k * 3 + l] * f[k] * f[l];
  eval(d, sg_build(d, OP_SqNormDiag, kd, 2, NULL, 0), vars, out);
  assert_close(out[0], diag, 1e-15, "SqNormDiag", 0);
  eval(d, sg_build(d, OP_SymSqNorm, kM, 2, NULL, 0), vars, out);
  assert_close(out[0], sym, 1e-14, "SymSqNorm", 0);
  /* WeightedSqNorm picks iso / diag / full by the weight's dim */
  eval(d, sg_build(d, OP_WeightedSqNorm, ka, 2, NULL, 0), vars, out);
  assert_close(out[0], s * sq, 1e-15, "WeightedSqNorm iso", 0);
  eval(d, sg_build(d, OP_WeightedSqNorm, kd, 2, NULL, 0), vars, out);
  assert_close(out[0], diag, 1e-15, "WeightedSqNorm diag", 0);
  eval(d, sg_build(d, OP_WeightedSqNorm, kM, 2, NULL, 0), vars, out);
  assert_close(out[0], sym, 1e-14, "WeightedSqNorm full", 0);
  eval(d, sg_build(d, OP_WeightedSqDist, k3, 3, NULL, 0), vars, out);
  assert_close(out[0], s * dist, 1e-15, "WeightedSqDist", 0);
  /* Kron(f (3 as 3x1), g (3 as 1x3), [3,1], [1,3]) = kron of the matrices: 3x3 outer */
  int64_t kp[] = {2, 3, 1, 2, 1, 3};
  eval(d, sg_build(d, OP_Kron, k2, 2, kp, 6), vars, out);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) assert_close(out[i * 3 + j], f[i] * g[j], 1e-15, "Kron", i * 3 + j);
  /* Kron of two 2x... : f[0..1] x g[0..1] as 1-D vectors of dim 2 would need dim-2 vars */
  int64_t five = 5, three = 3;
  eval(d, sg_build(d, OP_IntCst, NULL, 0, &five, 1), vars, out);
  ck_assert(out[0] == 5);
  eval(d, sg_build(d, OP_IntInv, NULL, 0, &three, 1), vars, out);
  ck_assert(out[0] == 1.0 / 3.0);
  /* Laplacian of Sum(x^3) = sum 6 x_k */
  int64_t pw = 3;
  uint32_t cube = dag_make(d, OP_Pow, &x, 1, &pw, 1), sc = dag_un(d, OP_Sum, cube);
  uint32_t kl[2] = {sc, x};
  eval(d, sg_build(d, OP_Laplacian, kl, 2, NULL, 0), vars, out);
  assert_close(out[0], 6 * (f[0] + f[1] + f[2]), 1e-14, "Laplacian", 0);
  dag_free(d);
}
END_TEST

START_TEST(sg_kron_2d) {
  /* np.kron([[1,2],[3,4]], [[0,5],[6,7]]).ravel() */
  dag *d = dag_new();
  double A[4] = {1, 2, 3, 4}, B[4] = {0, 5, 6, 7}, out[16];
  const double *vars[2] = {A, B};
  uint32_t k2[2] = {dag_var(d, 0, 4, CAT_I), dag_var(d, 1, 4, CAT_J)};
  int64_t kp[] = {2, 2, 2, 2, 2, 2};
  eval(d, sg_build(d, OP_Kron, k2, 2, kp, 6), vars, out);
  double want[16] = {0, 5, 0, 10, 6, 7, 12, 14, 0, 15, 0, 20, 18, 21, 24, 28};
  assert_vec(out, want, 16, "Kron 2x2");
  dag_free(d);
}
END_TEST

/* The complex sugar against C99's complex arithmetic: z, w two complex numbers each, c one,
 * s a real scalar, x two reals. */
START_TEST(sg_complex) {
  dag *d = dag_new();
  double complex zc[2] = {1 + 2 * I, 3 - 1 * I}, wc[2] = {0.5 - 1.5 * I, 2 + 0.25 * I}, cc = -0.75 + 0.5 * I;
  double z[4], w[4], c[2] = {creal(cc), cimag(cc)}, s = 0.7, x[2] = {0.3, -1.2}, out[8];
  for (int k = 0; k < 2; k++) z[2 * k] = creal(zc[k]), z[2 * k + 1] = cimag(zc[k]), w[2 * k] = creal(wc[k]), w[2 * k + 1] = cimag(wc[k]);
  const double *vars[5] = {z, w, c, &s, x};
  uint32_t Z = dag_var(d, 0, 4, CAT_I), W = dag_var(d, 1, 4, CAT_J), C = dag_var(d, 2, 2, CAT_P),
           S = dag_var(d, 3, 1, CAT_P), X = dag_var(d, 4, 2, CAT_I);
  uint32_t zw[2] = {Z, W}, cz[2] = {C, Z}, sz[2] = {S, Z};
  int64_t three = 3;
  struct {
    int op;
    const uint32_t *k;
    int nk;
    double complex want[3]; /* or reals in creal */
    int n, real;
  } cases[] = {
      {OP_Conj, &Z, 1, {conj(zc[0]), conj(zc[1])}, 2, 0},
      {OP_ComplexAbs, &Z, 1, {cabs(zc[0]), cabs(zc[1])}, 2, 1},
      {OP_ComplexSquareAbs, &Z, 1, {cabs(zc[0]) * cabs(zc[0]), cabs(zc[1]) * cabs(zc[1])}, 2, 1},
      {OP_ComplexAngle, &Z, 1, {carg(zc[0]), carg(zc[1])}, 2, 1},
      {OP_ComplexSum, &Z, 1, {zc[0] + zc[1]}, 1, 0},
      {OP_ComplexAdd, zw, 2, {zc[0] + wc[0], zc[1] + wc[1]}, 2, 0},
      {OP_ComplexSubtract, zw, 2, {zc[0] - wc[0], zc[1] - wc[1]}, 2, 0},
      {OP_ComplexMult, zw, 2, {zc[0] * wc[0], zc[1] * wc[1]}, 2, 0},
      {OP_ComplexMult, cz, 2, {cc * zc[0], cc * zc[1]}, 2, 0}, /* a complex scalar broadcasts */
      {OP_ComplexDivide, zw, 2, {zc[0] / wc[0], zc[1] / wc[1]}, 2, 0},
      {OP_ComplexRealScal, sz, 2, {s * zc[0], s * zc[1]}, 2, 0},
      {OP_ComplexExp, &Z, 1, {cexp(zc[0]), cexp(zc[1])}, 2, 0},
      {OP_ComplexExp1j, &X, 1, {cexp(I * x[0]), cexp(I * x[1])}, 2, 0},
  };
  for (size_t q = 0; q < sizeof cases / sizeof *cases; q++) {
    eval(d, sg_build(d, cases[q].op, cases[q].k, cases[q].nk, NULL, 0), vars, out);
    for (int k = 0; k < cases[q].n; k++) {
      if (cases[q].real) {
        assert_close(out[k], creal(cases[q].want[k]), 1e-15, dag_ops[cases[q].op].name, k);
      } else {
        assert_close(out[2 * k], creal(cases[q].want[k]), 1e-15, dag_ops[cases[q].op].name, 2 * k);
        assert_close(out[2 * k + 1], cimag(cases[q].want[k]), 1e-15, dag_ops[cases[q].op].name, 2 * k + 1);
      }
    }
  }
  eval(d, sg_build(d, OP_ComplexSumT, &C, 1, &three, 1), vars, out);
  for (int k = 0; k < 3; k++)
    ck_assert_msg(out[2 * k] == c[0] && out[2 * k + 1] == c[1], "ComplexSumT[%d]", k);
  dag_free(d);
}
END_TEST

/* Runs last (the suite's tests run in order, in one process: CK_FORK=no is set in main). */
START_TEST(every_row_exercised) {
  for (int q = 0; q < NROWS; q++) {
    if (rows[q].kind != K_EW && rows[q].kind != K_ST && rows[q].kind != K_SG) continue;
    ck_assert_msg(covered[rows[q].op], "op row %s was never evaluated", rows[q].name);
  }
}
END_TEST

static Suite *interp_suite(void) {
  Suite *s = suite_create("interp");
  TCase *tc = tcase_create("ops");
  tcase_add_test(tc, ew_rows);
  tcase_add_test(tc, ew_special_values);
  tcase_add_test(tc, st_reductions_of_vector);
  tcase_add_test(tc, st_indexing);
  tcase_add_test(tc, st_onehot_rounding);
  tcase_add_test(tc, st_matrix_products);
  tcase_add_test(tc, st_tensordot_numpy_doc);
  tcase_add_test(tc, st_tensordot_loops);
  tcase_add_test(tc, leaves);
  tcase_add_test(tc, deep_chain_and_sharing);
  tcase_add_test(tc, sg_rows);
  tcase_add_test(tc, sg_kron_2d);
  tcase_add_test(tc, sg_complex);
  tcase_add_test(tc, every_row_exercised);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  int failed = tu_run(interp_suite(), 0); /* the coverage table spans the tests */
  return failed != 0;
}
