/* Autodiff (compiler/autodiff.c): Grad, Diff, GradMatrix, Divergence and Laplacian checked
 * against central finite differences of the reference interpreter, for every differentiable
 * row of ops.def (elementwise rows are generated from the table, so a new row is covered
 * automatically; a coverage test fails when a differentiable row has no case), plus the
 * simplifications and errors of the autodiff forms.
 *
 * Finite differences: f'(x) ~ (f(x+h) - f(x-h)) / (x+h - (x-h)) with h = 1e-6 max(1, |x|).
 * The truncation error is h^2/6 |f'''| ~ 1e-13 on our bounded domains, the rounding error
 * about eps |f| / h ~ 2e-10 |f|. Tolerances rtol = 1e-5 and atol = 1e-6 (1 + |f| |e|) are
 * therefore three orders of magnitude above the expected error while still far below any
 * real mistake in a derivative rule (a wrong factor or sign is an O(1) error). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "testutil.h"

#define MAXV 4  /* variables of a case */
#define MAXD 64 /* largest dim used in a case */
#define MAXCASES 400
#define SAMPLES 3 /* random points per case */
#define RTOL 1e-5

/* ---- environment: one dag, its aliases and values ---------------------------------------- */

typedef struct env {
  dag *d;
  fe_args a;
  kerr e;
  int nal;                       /* aliases declared */
  double val[FE_MAX_ARGS][MAXD]; /* values by position */
  const double *ptr[FE_MAX_ARGS];
} env;

static env *env_new(void) {
  env *E = calloc(1, sizeof *E);
  ck_assert_ptr_nonnull(E);
  E->d = dag_new();
  ck_assert_ptr_nonnull(E->d);
  for (int i = 0; i < FE_MAX_ARGS; i++) E->ptr[i] = E->val[i];
  return E;
}

static void env_free(env *E) {
  fe_args_free(&E->a);
  dag_free(E->d);
  free(E);
}

/* Declares an alias ("x = Vi(3)"); returns its position. */
static int env_alias(env *E, const char *fmt, const char *name, int dim) {
  static const char *const cats[3] = {"Vi", "Vj", "Pm"};
  char text[64];
  snprintf(text, sizeof text, fmt, name, cats[E->nal % 3], dim);
  ck_assert_msg(fe_parse_alias(&E->a, text, E->nal, &E->e) == 0, "alias '%s': %s", text, E->e.msg);
  ck_assert_int_le(dim, MAXD);
  return E->nal++;
}

static uint32_t env_try(env *E, const char *text) {
  kerr_clear(&E->e);
  kerr_clear(dag_err(E->d));
  return fe_parse(E->d, text, "formula", &E->a, NULL, &E->e);
}

static uint32_t env_parse(env *E, const char *text) {
  uint32_t id = env_try(E, text);
  ck_assert_msg(id != 0, "'%s' does not build: %s", text, E->e.msg);
  return id;
}

static int dimof(const env *E, uint32_t id) { return dag_get(E->d, id)->dim; }

static void eval(const env *E, uint32_t id, double *out) {
  ck_assert_int_le(dimof(E, id), MAXD);
  interp_eval(E->d, id, E->ptr, out);
}

static double maxabs(const double *v, int n) {
  double m = 0;
  for (int i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
  return m;
}

/* Asserts got ~ want (n values) at the finite-difference tolerance; scale is the size of the
 * differenced quantity. */
static void expect_close(const double *got, const double *want, int n, double scale,
                         const char *what) {
  for (int i = 0; i < n; i++)
    ck_assert_msg(isfinite(want[i]), "%s: finite difference %d is %g (bad test domain)", what, i,
                  want[i]);
  double ex = tu_excess(got, want, n, RTOL, 1e-6 * (1 + scale));
  if (!(ex <= 0)) {
    char buf[2048];
    int at = 0;
    for (int i = 0; i < n && at < 1800; i++)
      at += snprintf(buf + at, sizeof buf - (size_t)at, " [%d] %.10g vs %.10g", i, got[i], want[i]);
    ck_abort_msg("%s: autodiff vs finite differences:%s", what, buf);
  }
}

/* Central difference of formula F (dim nf) along direction dir (dim of the variable at pos);
 * dir NULL means the unit vector of component j. Writes dF into out; returns max |F|. */
static double fd(env *E, uint32_t F, int pos, const double *dir, int j, double *out) {
  int nv = E->a.dim[pos], nf = dimof(E, F);
  double save[MAXD], fp[MAXD], fm[MAXD], h = 1e-6;
  memcpy(save, E->val[pos], sizeof save);
  for (int c = 0; c < nv; c++) h = fmax(h, 1e-6 * fabs(save[c]));
  for (int s = 0; s < 2; s++) {
    for (int c = 0; c < nv; c++) {
      double step = dir ? dir[c] : c == j;
      E->val[pos][c] = save[c] + (s ? -h : h) * step;
    }
    eval(E, F, s ? fm : fp);
  }
  memcpy(E->val[pos], save, sizeof save);
  for (int k = 0; k < nf; k++) out[k] = (fp[k] - fm[k]) / (2 * h);
  return fmax(maxabs(fp, nf), maxabs(fm, nf));
}

/* ---- cases ------------------------------------------------------------------------------- */

typedef struct tvar {
  const char *name;
  int dim;
  double lo, hi; /* sampling domain */
} tvar;

typedef struct ad_case {
  char formula[200];
  int nv;
  tvar v[MAXV];
} ad_case;

/* Domains and integer parameters of elementwise rows that need them; other rows get
 * arguments in (-2, 2) and parameters "2". An op may have several entries (one case each).
 * lo = hi = 0 means the default domain. Domains keep away from poles, branch cuts and the
 * boundaries of Acos/Asin; kinks (Abs, ReLU, Clamp, Mod...) are hit with probability ~1e-6. */
typedef struct ew_dom {
  const char *op, *params;
  double lo[3], hi[3];
} ew_dom;

static const ew_dom ew_doms[] = {
    {"Divide", NULL, {0, 0.5}, {0, 2}},
    {"Inv", NULL, {0.5}, {2}},
    {"Pow", "3", {0}, {0}},
    {"Pow", "-2", {0.5}, {2}},
    {"Powf", NULL, {0.5, -2}, {2, 2}},
    {"Sqrt", NULL, {0.5}, {2}},
    {"Rsqrt", NULL, {0.5}, {2}},
    {"Log", NULL, {0.5}, {2}},
    {"XLogX", NULL, {0.5}, {2}},
    {"Acos", NULL, {-0.9}, {0.9}},
    {"Asin", NULL, {-0.9}, {0.9}},
    {"Atan2", NULL, {0.3, -2}, {2, 2}},
    {"Mod", NULL, {0, 0.5, 0}, {0, 2, 0}},
    {"Clamp", NULL, {-2, -1, 0.2}, {2, -0.2, 1}},
    {"ClampInt", "-1,1", {0}, {0}},
};

static int ew_differentiable(int op) {
  const dag_opinfo *o = &dag_ops[op];
  return o->kind == K_EW && (o->t[0] || o->t[1] || o->t[2]);
}

/* One case per dims configuration of an EW call: every argument of dim 3; each argument
 * alone of dim 1 (broadcast); every argument of dim 1. */
static int ew_cases_for(int op, const ew_dom *dom, ad_case *out) {
  static const char *const names[3] = {"x", "y", "z"};
  const char *sig = dag_ops[op].sig;
  int nf = 0, n = 0;
  while (sig[nf] == 'f') nf++;
  if (strspn(sig + nf, "i") != strlen(sig + nf)) return -1; /* the generator needs "f..fi..i" */
  char call[200];
  int at = snprintf(call, sizeof call, "%s(", dag_ops[op].name);
  for (int k = 0; k < nf; k++)
    at += snprintf(call + at, sizeof call - (size_t)at, "%s%s", k ? "," : "", names[k]);
  if (sig[nf]) {
    const char *params = dom && dom->params ? dom->params : sig[nf + 1] ? "2,2" : "2";
    at += snprintf(call + at, sizeof call - (size_t)at, ",%s", params);
  }
  snprintf(call + at, sizeof call - (size_t)at, ")");
  for (int cfg = -1; cfg <= nf; cfg++) { /* -1: all 3; k < nf: k scalar; nf: all scalar */
    if (nf == 1 && cfg == 0) continue;   /* same as "all scalar" */
    ad_case *c = &out[n++];
    snprintf(c->formula, sizeof c->formula, "%s", call);
    c->nv = nf;
    for (int k = 0; k < nf; k++) {
      int dflt = !dom || (dom->lo[k] == 0 && dom->hi[k] == 0);
      c->v[k] = (tvar){names[k], cfg == k || cfg == nf ? 1 : 3, dflt ? -2 : dom->lo[k],
                       dflt ? 2 : dom->hi[k]};
    }
  }
  return n;
}

/* clang-format off */
#define V(n, d) {n, d, -2, 2}
#define VD(n, d, lo, hi) {n, d, lo, hi}
/* clang-format on */

/* Structural rows, sugar and compositions, written by hand. */
static const ad_case st_cases[] = {
    {"Sum(x)", 1, {V("x", 3)}},
    {"Sum(Exp(x))*x", 1, {V("x", 3)}},
    {"SumT(a,3)", 1, {V("a", 1)}},
    {"Exp(SumT(a,3))*x", 2, {V("a", 1), V("x", 3)}},
    {"(x|y)", 2, {V("x", 3), V("y", 3)}},
    {"(Exp(x)|y)*x", 2, {V("x", 3), V("y", 3)}},
    {"(x|x)", 1, {V("x", 3)}},
    {"Max(x)", 1, {V("x", 3)}},
    {"Min(x)*Sin(x)", 1, {V("x", 4)}},
    {"Max(a)", 1, {V("a", 1)}},
    {"ArgMax(x)*x+ArgMin(x)", 1, {V("x", 3)}},
    {"OneHot(a,3)*x", 2, {VD("a", 1, 0.6, 1.4), V("x", 3)}},
    /* ops whose arguments depend on the variable only through piecewise-constant ops */
    {"Max(OneHot(ArgMax(x),3))*x", 1, {V("x", 3)}},
    {"(OneHot(ArgMax(x),3)|OneHot(ArgMin(x),3))*x", 1, {V("x", 3)}},
    {"Elem(x,1)", 1, {V("x", 3)}},
    {"Elem(x,2)*Exp(x)", 1, {V("x", 3)}},
    {"ElemT(a,3,1)", 1, {V("a", 1)}},
    {"ElemT(Sin(a),4,3)*x", 2, {V("a", 1), V("x", 4)}},
    {"Extract(x,1,2)", 1, {V("x", 4)}},
    {"Extract(Exp(x),0,3)*y", 2, {V("x", 5), V("y", 3)}},
    {"ExtractT(x,1,5)", 1, {V("x", 3)}},
    {"ExtractT(Sin(x),2,4)*y", 2, {V("x", 2), V("y", 4)}},
    {"Concat(x,a)", 2, {V("x", 3), V("a", 1)}},
    {"Concat(Exp(x),Sin(y))*Concat(y,x)", 2, {V("x", 3), V("y", 2)}},
    {"MatVecMult(A,x)", 2, {V("A", 6), V("x", 3)}},
    {"MatVecMult(A,x)", 2, {V("A", 6), V("x", 2)}},
    {"MatVecMult(Exp(A),Sin(x))", 2, {V("A", 6), V("x", 3)}},
    {"VecMatMult(x,A)", 2, {V("x", 3), V("A", 6)}},
    {"VecMatMult(Sin(x),A*A)", 2, {V("x", 2), V("A", 6)}},
    {"TensorProd(x,y)", 2, {V("x", 3), V("y", 2)}},
    {"TensorProd(Exp(x),x)", 1, {V("x", 3)}},
    {"TensorDot(A,B,[2,3],[3,2],[1],[0])", 2, {V("A", 6), V("B", 6)}},
    {"TensorDot(A,B,[2,3],[3,4],[1],[0],[1,0])", 2, {V("A", 6), V("B", 12)}},
    {"TensorDot(A,B,[2,3,2],[2,3,2],[0,2],[2,0],[1,0])", 2, {V("A", 12), V("B", 12)}},
    {"TensorDot(A,B,[2,3,4],[3,5],[1],[0],[2,0,1])", 2, {V("A", 24), V("B", 15)}},
    {"TensorDot(A,B,[2,3,4],[4,3],[2,1],[0,1])", 2, {V("A", 24), V("B", 12)}},
    {"TensorDot(Exp(A),B*A,[2,2],[2,2],[0],[1],[1,0])", 2, {V("A", 4), V("B", 4)}},
    {"TensorDot(A,B,[2,3],[2,3],[0,1],[0,1])", 2, {V("A", 6), V("B", 6)}},
    /* sugar */
    {"SqNorm2(x)", 1, {V("x", 3)}},
    {"Norm2(x)", 1, {VD("x", 3, 0.5, 2)}},
    {"Normalize(x)", 1, {VD("x", 3, 0.5, 2)}},
    {"SqDist(x,y)", 2, {V("x", 3), V("y", 3)}},
    {"WeightedSqNorm(s,x)", 2, {V("s", 1), V("x", 3)}},
    {"WeightedSqNorm(s,x)", 2, {V("s", 3), V("x", 3)}},
    {"WeightedSqDist(s,x,y)", 3, {V("s", 4), V("x", 2), V("y", 2)}},
    {"Kron(x,y,[2,3],[2,2])", 2, {V("x", 6), V("y", 4)}},
    /* complex */
    {"ComplexReal(z)*ComplexImag(Exp(z))", 1, {V("z", 4)}},
    {"Real2Complex(Sin(x))+Imag2Complex(x*x)", 1, {V("x", 3)}},
    {"ComplexMult(z,Conj(w))", 2, {V("z", 4), V("w", 4)}},
    {"ComplexDivide(z,w)", 2, {V("z", 4), VD("w", 4, 0.5, 2)}},
    {"ComplexExp(z)+ComplexExp1j(x)", 2, {V("z", 2), V("x", 1)}},
    {"Concat(ComplexAbs(z),ComplexAngle(z))", 1, {VD("z", 4, 0.5, 2)}},
    {"ComplexSumT(ComplexSum(ComplexRealScal(s,z)),2)", 2, {V("s", 1), V("z", 6)}},
    {"(ComplexAdd(z,c)-ComplexSubtract(c,z))*Sum(ComplexSquareAbs(z))", 2, {V("z", 4), V("c", 2)}},
    /* compositions, seed formula, second derivatives */
    {"Square(p-a)*Exp(x+y)", 4, {V("x", 3), V("y", 3), V("a", 1), V("p", 1)}},
    {"Exp(-SqDist(x,y))*b", 3, {V("x", 3), V("y", 3), V("b", 2)}},
    {"Grad(Sin(x)*SqNorm2(y),x,a)", 3, {V("x", 3), V("y", 3), V("a", 3)}},
    {"Grad(Exp(-SqDist(x,y))*b,x,c)", 4, {V("x", 3), V("y", 3), V("b", 2), V("c", 2)}},
    {"Grad(Max(x)*Sum(Square(x)),x,a)", 2, {V("x", 3), V("a", 1)}},
    {"Grad(TensorDot(A,B,[2,3],[3,2],[1],[0],[1,0]),A,c)", 3, {V("A", 6), V("B", 6), V("c", 4)}},
    {"Diff(Sin(x)*(x|y),x,u)", 3, {V("x", 3), V("y", 3), V("u", 3)}},
    {"Grad(Grad(Exp(x)*y,x,a),y,b)", 4, {V("x", 3), V("y", 3), V("a", 3), V("b", 3)}},
};

/* Every case: the generated EW ones, then st_cases. Deterministic. Returns -1 when the table
 * holds a row the generator cannot handle, or too many cases (no ck_assert: main calls it
 * outside any test). */
static int build_cases(ad_case *out) {
  int n = 0;
  for (int op = 0; op < OP_COUNT; op++) {
    if (!ew_differentiable(op)) continue;
    int found = 0, got;
    for (size_t i = 0; i < sizeof ew_doms / sizeof ew_doms[0]; i++)
      if (!strcmp(ew_doms[i].op, dag_ops[op].name)) {
        found = 1;
        if ((got = ew_cases_for(op, &ew_doms[i], out + n)) < 0) return -1;
        n += got;
      }
    if (!found && (got = ew_cases_for(op, NULL, out + n)) < 0) return -1;
    n += found ? 0 : got;
    if (n > MAXCASES - 8) return -1;
  }
  size_t nst = sizeof st_cases / sizeof st_cases[0];
  if (n + nst > MAXCASES) return -1;
  for (size_t i = 0; i < nst; i++) out[n++] = st_cases[i];
  return n;
}

static void fill(env *E, int pos, tu_rng *r, double lo, double hi) {
  for (int c = 0; c < E->a.dim[pos]; c++) E->val[pos][c] = tu_uniform(r, lo, hi);
}

/* Grad(F, w, e) against e . dF/dw_j for every component j, and Diff(F, w, u) against the
 * directional difference, for every variable w of the case, at SAMPLES random points. */
static void run_case(const ad_case *c, uint64_t seed) {
  env *E = env_new();
  int pos[MAXV], upos[MAXV];
  uint32_t G[MAXV], Df[MAXV];
  char text[512], what[600];
  for (int w = 0; w < c->nv; w++) pos[w] = env_alias(E, "%s = %s(%d)", c->v[w].name, c->v[w].dim);
  uint32_t F = env_parse(E, c->formula);
  int nf = dimof(E, F);
  int epos = env_alias(E, "%s = %s(%d)", "e", nf);
  for (int w = 0; w < c->nv; w++) {
    char un[16];
    snprintf(un, sizeof un, "u%d", w);
    upos[w] = env_alias(E, "%s = %s(%d)", un, c->v[w].dim);
    snprintf(text, sizeof text, "Grad(%s, %s, e)", c->formula, c->v[w].name);
    G[w] = env_parse(E, text);
    ck_assert_int_eq(dimof(E, G[w]), c->v[w].dim);
    snprintf(text, sizeof text, "Diff(%s, %s, %s)", c->formula, c->v[w].name, un);
    Df[w] = env_parse(E, text);
    ck_assert_int_eq(dimof(E, Df[w]), nf);
  }
  tu_rng r = tu_seed(seed);
  for (int s = 0; s < SAMPLES; s++) {
    for (int w = 0; w < c->nv; w++) fill(E, pos[w], &r, c->v[w].lo, c->v[w].hi);
    fill(E, epos, &r, -1, 1);
    for (int w = 0; w < c->nv; w++) fill(E, upos[w], &r, -1, 1);
    for (int w = 0; w < c->nv; w++) {
      double got[MAXD], want[MAXD], dF[MAXD], scale = 0;
      int dw = c->v[w].dim;
      eval(E, G[w], got);
      for (int j = 0; j < dw; j++) {
        scale = fmax(scale, fd(E, F, pos[w], NULL, j, dF));
        want[j] = 0;
        for (int k = 0; k < nf; k++) want[j] += E->val[epos][k] * dF[k];
      }
      snprintf(what, sizeof what, "Grad(%s, %s, e) sample %d", c->formula, c->v[w].name, s);
      expect_close(got, want, dw, scale * nf, what);
      eval(E, Df[w], got);
      scale = fd(E, F, pos[w], E->val[upos[w]], 0, want);
      snprintf(what, sizeof what, "Diff(%s, %s, u) sample %d", c->formula, c->v[w].name, s);
      expect_close(got, want, nf, scale * dw, what);
    }
  }
  env_free(E);
}

START_TEST(test_case) {
  static ad_case cases[MAXCASES];
  int n = build_cases(cases);
  ck_assert_msg(
      n > 0,
      "an EW row has a signature the case generator does not handle, or MAXCASES is too small");
  run_case(&cases[_i], 1000 + (uint64_t)_i);
}
END_TEST

/* Every differentiable row (EW with a template, every ST row) occurs in some case formula. */
START_TEST(test_coverage) {
  static ad_case cases[MAXCASES];
  int n = build_cases(cases), seen[OP_COUNT] = {0};
  ck_assert_int_gt(n, 0);
  for (int i = 0; i < n; i++) {
    env *E = env_new();
    for (int w = 0; w < cases[i].nv; w++)
      env_alias(E, "%s = %s(%d)", cases[i].v[w].name, cases[i].v[w].dim);
    uint32_t F = env_parse(E, cases[i].formula);
    uint8_t *reach = calloc(F + 1, 1);
    reach[F] = 1;
    for (uint32_t id = F; id >= 1; id--) {
      const dag_node *nd = dag_get(E->d, id);
      if (!reach[id]) continue;
      seen[nd->op] = 1;
      for (int k = 0; k < nd->nk; k++) reach[nd->k[k]] = 1;
    }
    free(reach);
    env_free(E);
  }
  for (int op = 0; op < OP_COUNT; op++)
    if (ew_differentiable(op) || dag_ops[op].kind == K_ST)
      ck_assert_msg(seen[op], "no gradient case exercises the %s row", dag_ops[op].name);
}
END_TEST

/* ---- Jacobian-based forms ---------------------------------------------------------------- */

/* GradMatrix(F, x)[k * dim x + j] = dF_k / dx_j. */
static void check_grad_matrix(const char *F_text, int dx) {
  env *E = env_new();
  int px = env_alias(E, "%s = %s(%d)", "x", dx);
  char text[256];
  uint32_t F = env_parse(E, F_text);
  snprintf(text, sizeof text, "GradMatrix(%s, x)", F_text);
  uint32_t GM = env_parse(E, text);
  int nf = dimof(E, F);
  ck_assert_int_eq(dimof(E, GM), nf * dx);
  tu_rng r = tu_seed(7);
  for (int s = 0; s < SAMPLES; s++) {
    double got[MAXD], want[MAXD], dF[MAXD], scale = 0;
    fill(E, px, &r, -1.5, 1.5);
    eval(E, GM, got);
    for (int j = 0; j < dx; j++) {
      scale = fmax(scale, fd(E, F, px, NULL, j, dF));
      for (int k = 0; k < nf; k++) want[k * dx + j] = dF[k];
    }
    expect_close(got, want, nf * dx, scale, text);
  }
  env_free(E);
}

START_TEST(test_grad_matrix) {
  check_grad_matrix("Extract(Exp(x)*Sum(Square(x)),0,2)", 3);
  check_grad_matrix("SqNorm2(x)*Elem(x,0)", 3);
  check_grad_matrix("Sin(x)*Elem(x,1)", 2);
  check_grad_matrix("Exp(x)", 1);
}
END_TEST

/* Divergence(F, x) = sum_k dF_k / dx_k; Laplacian(F, x) = sum_k d/dx_k Grad(F, x, 1)_k. The
 * Laplacian is differenced through the (already checked) first derivative, which keeps the
 * finite difference first order. */
static void check_trace(const char *op, const char *F_text, const char *inner, int dx) {
  env *E = env_new();
  int px = env_alias(E, "%s = %s(%d)", "x", dx);
  char text[256], itext[256];
  snprintf(itext, sizeof itext, inner, F_text);
  uint32_t F = env_parse(E, itext);
  snprintf(text, sizeof text, "%s(%s, x)", op, F_text);
  uint32_t T = env_parse(E, text);
  ck_assert_int_eq(dimof(E, T), 1);
  ck_assert_int_eq(dimof(E, F), dx);
  tu_rng r = tu_seed(11);
  for (int s = 0; s < SAMPLES; s++) {
    double got, want = 0, dF[MAXD], scale = 0;
    fill(E, px, &r, -1.5, 1.5);
    eval(E, T, &got);
    for (int j = 0; j < dx; j++) {
      scale = fmax(scale, fd(E, F, px, NULL, j, dF));
      want += dF[j];
    }
    expect_close(&got, &want, 1, scale * dx, text);
  }
  env_free(E);
}

START_TEST(test_divergence_laplacian) {
  check_trace("Divergence", "Sin(x)*SqNorm2(x)", "%s", 3);
  check_trace("Divergence", "MatVecMult(Exp(TensorProd(x,x)),x)", "%s", 2);
  check_trace("Divergence", "Exp(x)*x", "%s", 1);
  check_trace("Laplacian", "Exp(-SqNorm2(x))*Sin(Elem(x,0))", "Grad(%s, x, 1)", 3);
  check_trace("Laplacian", "Norm2(x+2)", "Grad(%s, x, 1)", 2);
  check_trace("Laplacian", "Log(Exp(x)+2)", "Grad(%s, x, 1)", 1);
}
END_TEST

/* ---- simplifications --------------------------------------------------------------------- */

static void expect_zero(const char *const *aliases, int na, const char *text, int dim) {
  env *E = env_new();
  for (int i = 0; i < na; i++) {
    ck_assert_msg(fe_parse_alias(&E->a, aliases[i], i, &E->e) == 0, "%s", E->e.msg);
    E->nal++;
  }
  uint32_t id = env_parse(E, text);
  ck_assert_msg(dag_get(E->d, id)->op == OP_Zero, "%s is not a Zero node (op %s)", text,
                dag_ops[dag_get(E->d, id)->op].name);
  ck_assert_int_eq(dimof(E, id), dim);
  env_free(E);
}

START_TEST(test_zero) {
  static const char *const al[] = {"x = Vi(3)", "y = Vj(2)", "e = Vi(3)", "u = Vj(2)"};
  expect_zero(al, 4, "Grad(Exp(x), y, e)", 2);
  expect_zero(al, 4, "Diff(Exp(x), y, u)", 3);
  expect_zero(al, 4, "Grad(ArgMax(y)*x, y, e)", 2);
  expect_zero(al, 4, "GradMatrix(Exp(x), y)", 6);
  /* KeOps's zero_simplification test */
  static const char *const al0[] = {"x = Vi(0,3)"};
  expect_zero(al0, 1, "Grad(Grad(x + Var(1,3,1), x, Var(2,3,0)), x, Var(3,3,0))", 3);
}
END_TEST

/* The tutorial's gradient against its closed form (p - a)^2 exp(x + y) e, componentwise. */
START_TEST(test_seed) {
  env *E = env_new();
  int px = env_alias(E, "%s = %s(%d)", "x", 3), py = env_alias(E, "%s = %s(%d)", "y", 3);
  int pa = env_alias(E, "%s = %s(%d)", "a", 1), pp = env_alias(E, "%s = %s(%d)", "p", 1);
  int pe = env_alias(E, "%s = %s(%d)", "e", 3);
  uint32_t G = env_parse(E, "Grad(Square(p-a)*Exp(x+y), y, e)");
  ck_assert_int_eq(dimof(E, G), 3);
  tu_rng r = tu_seed(3);
  for (int s = 0; s < 10; s++) {
    int all[5] = {px, py, pa, pp, pe};
    for (int i = 0; i < 5; i++) fill(E, all[i], &r, -1, 1);
    double got[3], want[3];
    eval(E, G, got);
    for (int k = 0; k < 3; k++) {
      double pa2 = E->val[pp][0] - E->val[pa][0];
      want[k] = pa2 * pa2 * exp(E->val[px][k] + E->val[py][k]) * E->val[pe][k];
    }
    ck_assert_msg(tu_excess(got, want, 3, 1e-13, 1e-14) <= 0, "seed gradient: %g vs %g", got[0],
                  want[0]);
  }
  /* Grad(f, v) without e takes a new variable of dim f at the next position */
  uint32_t G2 = env_parse(E, "Grad(Exp(x), x)");
  ck_assert_int_eq(dimof(E, G2), 3);
  ck_assert_int_eq(E->a.n, pe + 2);
  ck_assert_int_eq(E->a.dim[pe + 1], 3);
  double got[3];
  fill(E, pe + 1, &r, -1, 1);
  eval(E, G2, got);
  for (int k = 0; k < 3; k++)
    ck_assert_double_eq_tol(got[k], exp(E->val[px][k]) * E->val[pe + 1][k], 1e-13);
  env_free(E);
}
END_TEST

/* ---- errors ------------------------------------------------------------------------------ */

static void expect_error(const char *text, keops_status st, const char *msg) {
  static const char *const al[] = {"x = Vi(3)", "b = Vj(2)", "a = Pm(1)"};
  env *E = env_new();
  for (int i = 0; i < 3; i++) {
    ck_assert(fe_parse_alias(&E->a, al[i], i, &E->e) == 0);
    E->nal++;
  }
  uint32_t id = env_try(E, text);
  ck_assert_msg(id == 0, "%s: expected an error", text);
  ck_assert_msg(E->e.status == st, "%s: status %d, expected %d (%s)", text, E->e.status, st,
                E->e.msg);
  ck_assert_msg(!msg || strstr(E->e.msg, msg), "%s: message '%s' lacks '%s'", text, E->e.msg, msg);
  env_free(E);
}

START_TEST(test_errors) {
  expect_error("Grad(Exp(x), Exp(x), x)", KEOPS_ERROR_DIMENSION,
               "Grad: the variable must be a Var or an alias, got Exp");
  expect_error("Grad(Exp(x), x, b)", KEOPS_ERROR_DIMENSION,
               "Grad: the gradient input has dim 2 but the formula has dim 3");
  expect_error("Grad(Exp(x), 2*x, x)", KEOPS_ERROR_DIMENSION, "must be a Var or an alias");
  expect_error("Diff(Exp(x), x, b)", KEOPS_ERROR_DIMENSION,
               "Diff: the direction has dim 2 but the variable has dim 3");
  expect_error("Diff(Exp(x), Sin(x), x)", KEOPS_ERROR_DIMENSION, "must be a Var");
  expect_error("Divergence(Sum(x), x)", KEOPS_ERROR_DIMENSION,
               "Divergence requires formula and variable to have the same dimension");
  expect_error("Divergence(x, Exp(x))", KEOPS_ERROR_DIMENSION, "must be a Var");
  expect_error("GradMatrix(x, Exp(x))", KEOPS_ERROR_DIMENSION, "must be a Var");
  expect_error("Laplacian(x, x)", KEOPS_ERROR_DIMENSION, NULL);
  expect_error("Grad(Exp(Exp(x), x, x)", KEOPS_ERROR_SYNTAX, NULL);
}
END_TEST

/* The ad_* functions directly: a 0 argument propagates without an error; bad requests set the
 * dag error. */
START_TEST(test_api) {
  dag *d = dag_new();
  uint32_t x = dag_var(d, 0, 3, CAT_I), e = dag_var(d, 1, 3, CAT_J), s = dag_var(d, 2, 1, CAT_P);
  uint32_t f = dag_un(d, OP_Exp, x);
  /* no partial derivative builder: an internal error, not a crash */
  ck_assert_uint_eq(ad_grad(d, f, x, e), 0);
  ck_assert_int_eq(dag_err(d)->status, KEOPS_ERROR_COMPILE);
  ck_assert_ptr_nonnull(strstr(dag_err(d)->msg, "Exp's derivative"));
  kerr_clear(dag_err(d));
  dag_set_partial(d, fe_partial);
  ck_assert_uint_eq(ad_grad(d, 0, x, e), 0);
  ck_assert_uint_eq(ad_diff(d, f, 0, e), 0);
  ck_assert_uint_eq(ad_grad_matrix(d, 0, x), 0);
  ck_assert_uint_eq(ad_divergence(d, f, 0), 0);
  ck_assert_int_eq(dag_err(d)->status, KEOPS_OK);
  ck_assert_uint_eq(ad_grad(d, f, x, e), dag_bin(d, OP_Mult, f, e));
  ck_assert_uint_eq(ad_diff(d, f, x, e), dag_bin(d, OP_Mult, f, e));
  ck_assert_uint_eq(ad_grad(d, x, x, e), e);
  ck_assert_uint_eq(ad_divergence(d, s, s), dag_int(d, 1));
  ck_assert_uint_eq(ad_grad(d, f, s, e), dag_zero(d, 1));
  ck_assert_int_eq(dag_err(d)->status, KEOPS_OK);
  ck_assert_uint_eq(ad_grad(d, f, f, e), 0);
  ck_assert_int_eq(dag_err(d)->status, KEOPS_ERROR_DIMENSION);
  kerr_clear(dag_err(d));
  ck_assert_uint_eq(ad_grad(d, f, x, s), 0);
  ck_assert_int_eq(dag_err(d)->status, KEOPS_ERROR_DIMENSION);
  kerr_clear(dag_err(d));
  ck_assert_uint_eq(ad_diff(d, f, x, s), 0);
  ck_assert_int_eq(dag_err(d)->status, KEOPS_ERROR_DIMENSION);
  kerr_clear(dag_err(d));
  ck_assert_uint_eq(ad_divergence(d, s, x), 0);
  ck_assert_int_eq(dag_err(d)->status, KEOPS_ERROR_DIMENSION);
  dag_free(d);
}
END_TEST

/* A chain Sin(Sin(...Sin(x))) and a wide sum of many terms: no recursion in either mode,
 * and the values are right. d/dx Sin^n(x) = prod_k Cos(Sin^k(x)). The reverse-mode result of
 * a chain of depth n is about 2n deep (the product of the n partials nests inside the
 * deepest one), so that chain stays below DAG_MAX_DEPTH / 2; forward mode stays about n deep.
 * A deeper chain must give a clean error in reverse mode, not a crash. */
START_TEST(test_deep_and_wide) {
  enum { DEPTH = DAG_MAX_DEPTH / 2 - 10, FWD_DEPTH = DAG_MAX_DEPTH - 10, WIDTH = 3000 };
  dag *d = dag_new();
  dag_set_partial(d, fe_partial); /* built without the parser, which would set it */
  uint32_t x = dag_var(d, 0, 1, CAT_I), one = dag_int(d, 1), f = x, deep = x;
  for (int k = 0; k < FWD_DEPTH; k++) deep = dag_un(d, OP_Sin, deep);
  ck_assert_msg(ad_diff(d, deep, x, one) != 0, "%s", dag_err(d)->msg);
  if (!ad_grad(d, deep, x, one)) ck_assert_int_ne(dag_err(d)->status, KEOPS_OK);
  kerr_clear(dag_err(d));
  for (int k = 0; k < DEPTH; k++) f = dag_un(d, OP_Sin, f);
  uint32_t g = ad_grad(d, f, x, one), t = ad_diff(d, f, x, one);
  ck_assert_msg(g && t, "%s", dag_err(d)->msg);
  double xv = 0.7, s = xv, prod = 1, got;
  const double *vars[1] = {&xv};
  for (int k = 0; k < DEPTH; k++) {
    prod *= cos(s);
    s = sin(s);
  }
  interp_eval(d, g, vars, &got);
  ck_assert_double_eq_tol(got, prod, 1e-12 * fabs(prod) + 1e-300);
  interp_eval(d, t, vars, &got);
  ck_assert_double_eq_tol(got, prod, 1e-12 * fabs(prod) + 1e-300);
  /* wide: sum_k Sin(k x) as a balanced tree, derivative sum_k k Cos(k x) */
  uint32_t *terms = malloc(sizeof *terms * WIDTH);
  for (int k = 0; k < WIDTH; k++)
    terms[k] = dag_un(d, OP_Sin, dag_bin(d, OP_Mult, dag_int(d, k + 1), x));
  for (int n = WIDTH, m; n > 1; n = m) { /* pairwise, so the depth stays logarithmic */
    m = 0;
    for (int k = 0; k + 1 < n; k += 2) terms[m++] = dag_bin(d, OP_Add, terms[k], terms[k + 1]);
    if (n % 2) terms[m++] = terms[n - 1];
  }
  f = terms[0];
  free(terms);
  g = ad_grad(d, f, x, one);
  ck_assert_msg(g, "%s", dag_err(d)->msg);
  double want = 0;
  for (int k = 1; k <= WIDTH; k++) want += k * cos(k * xv);
  interp_eval(d, g, vars, &got);
  ck_assert_double_eq_tol(got, want, 1e-9 * WIDTH * WIDTH);
  dag_free(d);
}
END_TEST

int main(void) {
  static ad_case cases[MAXCASES];
  int ncases = build_cases(cases);
  Suite *s = suite_create("autodiff");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, test_case, 0, ncases > 0 ? ncases : 1);
  tcase_add_test(tc, test_coverage);
  tcase_add_test(tc, test_grad_matrix);
  tcase_add_test(tc, test_divergence_laplacian);
  tcase_add_test(tc, test_zero);
  tcase_add_test(tc, test_seed);
  tcase_add_test(tc, test_errors);
  tcase_add_test(tc, test_api);
  tcase_add_test(tc, test_deep_and_wide);
  suite_add_tcase(s, tc);
  int failed = tu_run(s, 1);
  return failed ? 1 : 0;
}
