/* The smart constructor dag_make: checks an op's dimensions and parameters, applies the
 * rewrite rules, then interns. Rules only ever produce smaller or equal-size formulas, so the
 * mutual recursion through dag_make terminates. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dag.h"

#define NONE UINT32_MAX /* "no rule applies" (0 already means failure) */

static int dimof(const dag *d, uint32_t id) { return dag_get(d, id)->dim; }
static int opof(const dag *d, uint32_t id) { return dag_get(d, id)->op; }
static uint32_t kid(const dag *d, uint32_t id, int c) { return dag_get(d, id)->k[c]; }

/* Records "<Op>: <message>" as a dimension error; returns 0 (as node id or dim). */
static uint32_t dimfail(dag *d, int op, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static uint32_t dimfail(dag *d, int op, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  kerr_set(dag_err(d), KEOPS_ERROR_DIMENSION, "%s: %s", dag_ops[op].name, msg);
  return 0;
}
#define DIMFAIL(op, ...) dimfail(d, op, __VA_ARGS__)

uint32_t dag_un(dag *d, int op, uint32_t a) { return dag_make(d, op, &a, 1, NULL, 0); }
uint32_t dag_bin(dag *d, int op, uint32_t a, uint32_t b) {
  uint32_t k[2] = {a, b};
  return dag_make(d, op, k, 2, NULL, 0);
}
static uint32_t dag_unp(dag *d, int op, uint32_t a, int64_t p0) {
  return dag_make(d, op, &a, 1, &p0, 1);
}

/* ---- exact rational constants --------------------------------------------------------- */

static __int128 gcd128(__int128 a, __int128 b) {
  if (a < 0) a = -a;
  if (b < 0) b = -b;
  while (b) {
    __int128 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

/* The constant n/q, or NONE when it does not fit int64 (the node is then kept unfolded). */
static uint32_t rat128(dag *d, __int128 n, __int128 q) {
  if (q < 0) n = -n, q = -q;
  __int128 g = gcd128(n, q);
  if (g > 1) n /= g, q /= g;
  if (n > INT64_MAX || n < -INT64_MAX || q > INT64_MAX) return NONE;
  return dag_rat(d, (int64_t)n, (int64_t)q);
}

static uint32_t division_by_zero(dag *d, int op) {
  kerr_set(dag_err(d), KEOPS_ERROR_DIMENSION, "%s: division by zero", dag_ops[op].name);
  return 0;
}

static uint32_t rat_pow(dag *d, int op, __int128 n, __int128 q, int64_t e) {
  if (e < 0) {
    if (n == 0) return division_by_zero(d, op);
    __int128 t = n;
    n = q, q = t, e = -e;
  }
  __int128 rn = 1, rq = 1;
  for (int64_t i = 0; i < e; i++) {
    rn *= n, rq *= q;
    if (rn > INT64_MAX || rn < -INT64_MAX || rq > INT64_MAX) return NONE;
  }
  return rat128(d, rn, rq);
}

/* All children are scalar rationals (v[c] = n[c]/q[c]). */
static uint32_t fold_rats(dag *d, int op, int nk, const int64_t *n, const int64_t *q,
                          const int64_t *p) {
  __int128 an = n[0], aq = q[0], bn = nk > 1 ? n[1] : 0, bq = nk > 1 ? q[1] : 1;
  switch (op) {
  case OP_Add: return rat128(d, an * bq + bn * aq, aq * bq);
  case OP_Subtract: return rat128(d, an * bq - bn * aq, aq * bq);
  case OP_Mult: return rat128(d, an * bn, aq * bq);
  case OP_Divide: return bn == 0 ? division_by_zero(d, op) : rat128(d, an * bq, aq * bn);
  case OP_Minus: return rat128(d, -an, aq);
  case OP_Inv: return an == 0 ? division_by_zero(d, op) : rat128(d, aq, an);
  case OP_Square: return rat128(d, an * an, aq * aq);
  case OP_Pow: return p[0] > 64 || p[0] < -64 ? NONE : rat_pow(d, op, an, aq, p[0]);
  default: break;
  }
  /* Other ops fold only when inputs and result are integers that doubles hold exactly,
   * e.g. Exp(0) = 1, Abs(-3) = 3, LessThan(1,2) = 1; Sqrt(2) stays symbolic. */
  double x[3] = {0, 0, 0};
  for (int c = 0; c < nk; c++) {
    if (q[c] != 1 || n[c] > (1ll << 52) || n[c] < -(1ll << 52)) return NONE;
    x[c] = (double)n[c];
  }
  double v = dag_ew_eval(op, x[0], x[1], x[2], p);
  if (!(fabs(v) < 0x1p52) || v != floor(v)) return NONE;
  return dag_int(d, (int64_t)v);
}

static int is_const(const dag *d, uint32_t id) {
  int op = opof(d, id);
  return op == OP_RatCst || op == OP_Cst || (op == OP_Zero && dimof(d, id) == 1);
}

/* A scalar constant's value as the reference interpreter sees it. */
static double const_value(const dag *d, uint32_t id) {
  int64_t n, q;
  if (dag_is_rat(d, id, &n, &q)) return (double)n / (double)q;
  double v = 0;
  if (opof(d, id) == OP_Cst) memcpy(&v, dag_params(d, id), sizeof v);
  return v;
}

/* Constants of which one is not an exact rational fold in double, as the reference computes
 * them: a float32 kernel must not overflow on 1e20*1e20/1e30 nor round 9e111 to inf. */
static uint32_t fold_doubles(dag *d, int op, const uint32_t *k, int nk, const int64_t *p) {
  int inexact = 0;
  double x[3] = {0, 0, 0};
  for (int c = 0; c < nk; c++) {
    if (!is_const(d, k[c])) return NONE;
    inexact |= opof(d, k[c]) == OP_Cst;
    x[c] = const_value(d, k[c]);
  }
  if (!inexact || ((op == OP_Divide && x[1] == 0) || (op == OP_Inv && x[0] == 0)))
    return NONE; /* rationals fold exactly; a division by zero is reported by the rules */
  return dag_cst(d, dag_ew_eval(op, x[0], x[1], x[2], p));
}

static int is_rat_val(const dag *d, uint32_t id, int64_t num, int64_t den) {
  int64_t n, q;
  return dag_is_rat(d, id, &n, &q) && n == num && q == den;
}

/* c * f as (c, f) when id is Mult(rational, f); otherwise (1, id). */
static void split_coef(const dag *d, uint32_t id, int64_t *n, int64_t *q, uint32_t *f) {
  if (opof(d, id) == OP_Mult && dag_is_rat(d, kid(d, id, 0), n, q)) {
    *f = kid(d, id, 1);
  } else {
    *n = 1, *q = 1, *f = id;
  }
}

/* f at dim D: f itself, or a dim-1 f replicated. */
static uint32_t bcast(dag *d, uint32_t f, int D) {
  return !f || dimof(d, f) == D ? f : dag_unp(d, OP_SumT, f, D);
}

/* ---- elementwise ops ----------------------------------------------------------------- */

/* c1*f + c2*f (sign = +1) or c1*f - c2*f (sign = -1) when both share f. */
static uint32_t collect(dag *d, uint32_t a, uint32_t b, int sign, int D) {
  int64_t an, aq, bn, bq;
  uint32_t fa, fb;
  split_coef(d, a, &an, &aq, &fa);
  split_coef(d, b, &bn, &bq, &fb);
  if (fa != fb || is_const(d, fa)) return NONE;
  uint32_t c = rat128(d, (__int128)an * bq + sign * (__int128)bn * aq, (__int128)aq * bq);
  return c == NONE ? NONE : bcast(d, dag_bin(d, OP_Mult, c, fa), D);
}

static uint32_t ew_rules(dag *d, int op, const uint32_t *k, int nk, const int64_t *p, int D) {
  int64_t n[3] = {0}, q[3] = {1, 1, 1};
  int nrat = 0, nzero = 0;
  for (int c = 0; c < nk; c++) {
    nrat += dag_is_rat(d, k[c], &n[c], &q[c]);
    nzero += dag_is_zero(d, k[c]);
  }
  if (nrat == nk) {
    uint32_t r = fold_rats(d, op, nk, n, q, p);
    if (r != NONE) return r;
  }
  uint32_t r = fold_doubles(d, op, k, nk, p);
  if (r != NONE) return r;
  uint32_t a = k[0], b = nk > 1 ? k[1] : 0;
  int za = dag_is_zero(d, a), zb = b && dag_is_zero(d, b);
  int64_t cn, cq;
  switch (op) {
  case OP_Add:
    if (za) return bcast(d, b, D);
    if (zb) return bcast(d, a, D);
    if (opof(d, b) == OP_Minus) return dag_bin(d, OP_Subtract, a, kid(d, b, 0));
    if (opof(d, a) == OP_Minus) return dag_bin(d, OP_Subtract, b, kid(d, a, 0));
    return collect(d, a, b, 1, D); /* f+f = 2*f, c*f+f = (c+1)*f */
  case OP_Subtract:
    if (zb) return bcast(d, a, D);
    if (za) return bcast(d, dag_un(d, OP_Minus, b), D);
    if (a == b) return dag_zero(d, D);
    if (opof(d, b) == OP_Minus) return dag_bin(d, OP_Add, a, kid(d, b, 0));
    return collect(d, a, b, -1, D);
  case OP_Mult:
    if (za || zb) return dag_zero(d, D);
    if (is_rat_val(d, a, 1, 1)) return bcast(d, b, D);
    if (is_rat_val(d, b, 1, 1)) return bcast(d, a, D);
    if (is_rat_val(d, a, -1, 1)) return bcast(d, dag_un(d, OP_Minus, b), D);
    if (is_const(d, b) && !is_const(d, a)) return dag_bin(d, OP_Mult, b, a); /* constants left */
    if (dag_is_rat(d, a, &cn, &cq)) {
      int64_t n2, q2;
      uint32_t f;
      split_coef(d, b, &n2, &q2, &f);
      if (f != b) { /* c1*(c2*f) */
        uint32_t c = rat128(d, (__int128)cn * n2, (__int128)cq * q2);
        if (c != NONE) return dag_bin(d, OP_Mult, c, f);
      }
      if (opof(d, b) == OP_Minus) return dag_bin(d, OP_Mult, dag_rat(d, -cn, cq), kid(d, b, 0));
    } else if (!is_const(d, b)) {
      /* (c*f)*g and f*(c*g) -> c*(f*g): constants move out and meet (gradients multiply
       * 2*(x-y) by RatCst(-1,2)*...: one product fewer per pair and per component) */
      int64_t n2, q2;
      uint32_t f;
      split_coef(d, a, &n2, &q2, &f);
      if (f != a) return dag_bin(d, OP_Mult, kid(d, a, 0), dag_bin(d, OP_Mult, f, b));
      split_coef(d, b, &n2, &q2, &f);
      if (f != b) return dag_bin(d, OP_Mult, kid(d, b, 0), dag_bin(d, OP_Mult, a, f));
    }
    if (a == b) return dag_un(d, OP_Square, a);
    if (opof(d, a) == OP_Minus && opof(d, b) == OP_Minus)
      return dag_bin(d, OP_Mult, kid(d, a, 0), kid(d, b, 0));
    /* (-f)*g -> -(f*g), so that signs meet and cancel like constants */
    if (opof(d, a) == OP_Minus) return dag_un(d, OP_Minus, dag_bin(d, OP_Mult, kid(d, a, 0), b));
    if (opof(d, b) == OP_Minus) return dag_un(d, OP_Minus, dag_bin(d, OP_Mult, a, kid(d, b, 0)));
    if (opof(d, a) == OP_Exp && opof(d, b) == OP_Exp && dimof(d, a) == dimof(d, b))
      return dag_un(d, OP_Exp, dag_bin(d, OP_Add, kid(d, a, 0), kid(d, b, 0)));
    break;
  case OP_Divide:
    if (zb) return division_by_zero(d, op);
    if (za) return dag_zero(d, D);
    if (dag_is_rat(d, b, &cn, &cq)) return dag_bin(d, OP_Mult, dag_rat(d, cq, cn), a);
    if (is_rat_val(d, a, 1, 1)) return dag_un(d, OP_Inv, b);
    if (dag_is_rat(d, a, &cn, &cq)) return dag_bin(d, OP_Mult, a, dag_un(d, OP_Inv, b));
    break;
  case OP_Minus:
    if (opof(d, a) == OP_Minus) return kid(d, a, 0);
    if (opof(d, a) == OP_Subtract) return dag_bin(d, OP_Subtract, kid(d, a, 1), kid(d, a, 0));
    if (opof(d, a) == OP_Mult && dag_is_rat(d, kid(d, a, 0), &cn, &cq))
      return dag_bin(d, OP_Mult, dag_rat(d, -cn, cq), kid(d, a, 1));
    if (opof(d, a) == OP_Cst) {
      double v;
      memcpy(&v, dag_params(d, a), sizeof v);
      return dag_cst(d, -v);
    }
    break;
  case OP_Inv:
    if (za) return division_by_zero(d, op);
    if (opof(d, a) == OP_Inv) return kid(d, a, 0);
    break;
  case OP_Square:
    if (opof(d, a) == OP_Minus) return dag_un(d, OP_Square, kid(d, a, 0));
    break;
  case OP_Pow:
    if (p[0] == 0) return bcast(d, dag_int(d, 1), D);
    if (p[0] == 1) return a;
    if (p[0] == 2) return dag_un(d, OP_Square, a);
    if (p[0] == -1) return dag_un(d, OP_Inv, a);
    break;
  case OP_Powf:
    if (dag_is_rat(d, b, &cn, &cq) && cq == 1 && cn > -(1 << 30) && cn < (1 << 30))
      return bcast(d, dag_unp(d, OP_Pow, a, cn), D);
    break;
  default: break;
  }
  if (nzero == nk) { /* f(0, ..., 0) == 0 keeps a zero vector zero */
    double v = dag_ew_eval(op, 0, 0, 0, p);
    if (v == 0) return dag_zero(d, D);
  }
  return NONE;
}

static uint32_t make_ew(dag *d, int op, const uint32_t *k, int nk, const int64_t *p, int np) {
  int D = 1;
  for (int c = 0; c < nk; c++)
    if (dimof(d, k[c]) > D) D = dimof(d, k[c]);
  for (int c = 0; c < nk; c++)
    if (dimof(d, k[c]) != 1 && dimof(d, k[c]) != D)
      return DIMFAIL(op, "dimensions %d and %d are not compatible (each must be 1 or the same D)",
                     dimof(d, k[c]), D);
  /* SumT(s, D) as an argument of a D-wide op is s broadcast: drop the SumT (reverse mode
   * through Sum produces these), as long as another argument keeps the op D wide */
  int wide = 0;
  for (int c = 0; c < nk; c++) wide += dimof(d, k[c]) == D && opof(d, k[c]) != OP_SumT;
  if (wide && D > 1) {
    uint32_t kk[DAG_MAX_KIDS];
    int changed = 0;
    for (int c = 0; c < nk; c++) {
      kk[c] = opof(d, k[c]) == OP_SumT ? kid(d, k[c], 0) : k[c];
      changed |= kk[c] != k[c];
    }
    if (changed) return dag_make(d, op, kk, nk, p, np);
  }
  if (op == OP_Round && (p[0] < -30 || p[0] > 30))
    return DIMFAIL(op, "%d decimal digits is out of range [-30, 30]", (int)p[0]);
  uint32_t r = ew_rules(d, op, k, nk, p, D);
  if (r != NONE) return r;
  return dag_intern(d, op, D, k, nk, p, np);
}

/* ---- structural ops ------------------------------------------------------------------ */

typedef struct tdot { /* TensorDot(f, g, dimf, dimg, contf, contg[, perm]) unpacked */
  int nf, ng, nc, nperm;
  const int64_t *dimf, *dimg, *contf, *contg, *perm;
} tdot;

static int64_t prod(const int64_t *v, int n) {
  int64_t r = 1;
  for (int i = 0; i < n && r <= DAG_MAX_DIM; i++) r *= v[i];
  return r;
}

/* Unpacks and checks the lists; returns the output dim, or 0 with the error set. */
static int tdot_check(dag *d, tdot *t, int df, int dg, const int64_t *p, int np) {
  dag_tdot u;
  int bad = dag_tdot_unpack(p, np, &u);
  if (bad == -1) return (int)DIMFAIL(OP_TensorDot, "malformed index list %d", u.nl + 1);
  if (bad) return (int)DIMFAIL(OP_TensorDot, "expects 4 or 5 index lists, got %d", u.nl);
  *t = (tdot){u.n[0], u.n[1], u.n[2], u.n[4], u.l[0], u.l[1], u.l[2], u.l[3], u.l[4]};
  for (int a = 0; a < t->nf; a++)
    if (t->dimf[a] < 1) return (int)DIMFAIL(OP_TensorDot, "axis size %d of f is not positive", (int)t->dimf[a]);
  for (int a = 0; a < t->ng; a++)
    if (t->dimg[a] < 1) return (int)DIMFAIL(OP_TensorDot, "axis size %d of g is not positive", (int)t->dimg[a]);
  if (prod(t->dimf, t->nf) != df)
    return (int)DIMFAIL(OP_TensorDot, "the shape of f has %d entries but f has dim %d", (int)prod(t->dimf, t->nf), df);
  if (prod(t->dimg, t->ng) != dg)
    return (int)DIMFAIL(OP_TensorDot, "the shape of g has %d entries but g has dim %d", (int)prod(t->dimg, t->ng), dg);
  if (u.n[3] != t->nc)
    return (int)DIMFAIL(OP_TensorDot, "%d contracted axes of f but %d of g", t->nc, u.n[3]);
  int64_t seenf = 0, seeng = 0, cprod = 1;
  for (int c = 0; c < t->nc; c++) {
    int64_t af = t->contf[c], ag = t->contg[c];
    if (af < 0 || af >= t->nf || (seenf >> af & 1) || ag < 0 || ag >= t->ng || (seeng >> ag & 1))
      return (int)DIMFAIL(OP_TensorDot, "contracted axis pair %d (%d) is out of range or repeated", c, (int)af);
    if (t->dimf[af] != t->dimg[ag])
      return (int)DIMFAIL(OP_TensorDot, "contracted axes have sizes %d and %d", (int)t->dimf[af], (int)t->dimg[ag]);
    seenf |= 1ll << af, seeng |= 1ll << ag, cprod *= t->dimf[af];
  }
  int nkeep = t->nf + t->ng - 2 * t->nc;
  if (t->perm) {
    int64_t seen = 0;
    if (t->nperm != nkeep)
      return (int)DIMFAIL(OP_TensorDot, "the permutation has %d entries, the result %d axes", t->nperm, nkeep);
    for (int a = 0; a < t->nperm; a++) {
      if (t->perm[a] < 0 || t->perm[a] >= nkeep || (seen >> t->perm[a] & 1))
        return (int)DIMFAIL(OP_TensorDot, "entry %d of the permutation is out of range or repeated", a);
      seen |= 1ll << t->perm[a];
    }
  }
  return (int)((int64_t)df / cprod * (dg / cprod));
}

/* Drops an identity permutation so that equal TensorDots intern to one node. */
static int tdot_canonical_np(const tdot *t, int np) {
  if (!t->perm) return np;
  for (int a = 0; a < t->nperm; a++)
    if (t->perm[a] != a) return np;
  return np - 1 - t->nperm;
}

/* The node a structural op's dim rule and rewrite rules look at, before it is interned. */
typedef struct st_node {
  int op;
  const uint32_t *k; /* children */
  const int64_t *p;  /* integer parameters */
  int np;
  int da, db; /* the children's dims (db 0 for one child) */
  int za, zb; /* whether each child is Zero */
  int dim;    /* the output dim, as the dim rule found it (rules only) */
} st_node;

/* The output dim of the op, or 0 with the error set. */
typedef int st_dim_fn(dag *d, const st_node *n);
/* A simpler equal formula, NONE when no rule applies, or 0 with the error set. */
typedef uint32_t st_rules_fn(dag *d, const st_node *n);

/* Sum, Max, Min, ArgMax, ArgMin: one scalar from any vector. */
static int st_dim_scalar(dag *d, const st_node *n) {
  (void)d, (void)n;
  return 1;
}

#define st_dim_Sum st_dim_scalar
static uint32_t st_rules_Sum(dag *d, const st_node *n) {
  uint32_t a = n->k[0];
  int da = n->da;
  if (da == 1) return a;
  if (n->za) return dag_zero(d, 1);
  if (opof(d, a) == OP_Minus) return dag_un(d, OP_Minus, dag_un(d, OP_Sum, kid(d, a, 0)));
  if (opof(d, a) == OP_SumT) return dag_bin(d, OP_Mult, dag_int(d, da), kid(d, a, 0));
  if (opof(d, a) == OP_Mult) {
    uint32_t f = kid(d, a, 0), g = kid(d, a, 1);
    if (dimof(d, f) == dimof(d, g)) return dag_bin(d, OP_Scalprod, f, g);
    if (dimof(d, f) == 1) return dag_bin(d, OP_Mult, f, dag_un(d, OP_Sum, g));
    return dag_bin(d, OP_Mult, g, dag_un(d, OP_Sum, f));
  }
  return NONE;
}

static int st_dim_SumT(dag *d, const st_node *n) {
  const int64_t *p = n->p;
  if (n->da != 1) return (int)DIMFAIL(n->op, "the argument has dim %d, it must be 1", n->da);
  if (p[0] < 1 || p[0] > DAG_MAX_DIM)
    return (int)DIMFAIL(n->op, "dim %d is out of range", (int)p[0]);
  return (int)p[0];
}
/* SumT and ElemT spread a scalar over p[0] components: the scalar itself when p[0] is 1. */
static uint32_t rules_spread(dag *d, const st_node *n) {
  if (n->p[0] == 1) return n->k[0];
  if (n->za) return dag_zero(d, n->dim);
  return NONE;
}
#define st_rules_SumT rules_spread

static int st_dim_Scalprod(dag *d, const st_node *n) {
  int da = n->da, db = n->db;
  if (da != db && da != 1 && db != 1)
    return (int)DIMFAIL(n->op, "dimensions must be the same, got %d and %d", da, db);
  return 1;
}
static uint32_t st_rules_Scalprod(dag *d, const st_node *n) {
  uint32_t a = n->k[0], b = n->k[1];
  if (n->za || n->zb) return dag_zero(d, 1);
  if (n->da == 1 || n->db == 1)
    return dag_un(d, OP_Sum, dag_bin(d, OP_Mult, a, b)); /* a scalar: a * Sum(b) */
  if (a == b) return dag_un(d, OP_Sum, dag_un(d, OP_Square, a));
  return NONE;
}

#define st_dim_Max st_dim_scalar
#define st_dim_Min st_dim_scalar
#define st_rules_Max st_rules_extreme
#define st_rules_Min st_rules_extreme
static uint32_t st_rules_extreme(dag *d, const st_node *n) {
  if (n->za) return dag_zero(d, 1);
  if (n->da == 1) return n->k[0];
  return NONE;
}

#define st_dim_ArgMax st_dim_scalar
#define st_dim_ArgMin st_dim_scalar
#define st_rules_ArgMax st_rules_arg_extreme
#define st_rules_ArgMin st_rules_arg_extreme
static uint32_t st_rules_arg_extreme(dag *d, const st_node *n) {
  if (n->da == 1 || n->za) return dag_zero(d, 1);
  return NONE;
}

static int st_dim_Elem(dag *d, const st_node *n) {
  const int64_t *p = n->p;
  if (p[0] < 0 || p[0] >= n->da)
    return (int)DIMFAIL(n->op, "index %d is out of bounds for dim %d", (int)p[0], n->da);
  return 1;
}
static uint32_t st_rules_Elem(dag *d, const st_node *n) {
  uint32_t a = n->k[0];
  const int64_t *p = n->p;
  if (n->da == 1) return a;
  if (n->za) return dag_zero(d, 1);
  switch (opof(d, a)) {
  case OP_ElemT: return dag_params(d, a)[1] == p[0] ? kid(d, a, 0) : dag_zero(d, 1);
  case OP_SumT: return kid(d, a, 0);
  case OP_Extract: return dag_unp(d, OP_Elem, kid(d, a, 0), dag_params(d, a)[0] + p[0]);
  case OP_Concat: {
    uint32_t f = kid(d, a, 0), g = kid(d, a, 1);
    return p[0] < dimof(d, f) ? dag_unp(d, OP_Elem, f, p[0])
                              : dag_unp(d, OP_Elem, g, p[0] - dimof(d, f));
  }
  default: return NONE;
  }
}

static int st_dim_ElemT(dag *d, const st_node *n) {
  const int64_t *p = n->p;
  if (n->da != 1) return (int)DIMFAIL(n->op, "the argument must be a scalar, got dim %d", n->da);
  if (p[0] < 1 || p[0] > DAG_MAX_DIM || p[1] < 0 || p[1] >= p[0])
    return (int)DIMFAIL(n->op, "index %d is out of bounds for dim %d", (int)p[1], (int)p[0]);
  return (int)p[0];
}
#define st_rules_ElemT rules_spread

static int st_dim_Extract(dag *d, const st_node *n) {
  const int64_t *p = n->p;
  if (p[0] < 0 || p[1] < 1 || p[0] + p[1] > n->da)
    return (int)DIMFAIL(n->op, "range [start, start+%d) with start %d is out of bounds", (int)p[1],
                        (int)p[0]);
  return (int)p[1];
}
static uint32_t st_rules_Extract(dag *d, const st_node *n) {
  uint32_t a = n->k[0];
  const int64_t *p = n->p;
  int64_t s = p[0];
  int dim = n->dim;
  if (s == 0 && dim == n->da) return a;
  if (n->za) return dag_zero(d, dim);
  if (dim == 1) return dag_unp(d, OP_Elem, a, s);
  if (opof(d, a) == OP_Extract) {
    int64_t q[2] = {dag_params(d, a)[0] + s, dim};
    uint32_t f = kid(d, a, 0);
    return dag_make(d, OP_Extract, &f, 1, q, 2);
  }
  if (opof(d, a) == OP_ExtractT) {
    int64_t s2 = dag_params(d, a)[0];
    uint32_t g = kid(d, a, 0);
    if (s == s2 && dim == dimof(d, g)) return g;
    if (s + dim <= s2 || s >= s2 + dimof(d, g)) return dag_zero(d, dim);
  }
  if (opof(d, a) == OP_Concat) {
    uint32_t f = kid(d, a, 0), g = kid(d, a, 1);
    int df = dimof(d, f);
    int64_t q[2] = {s - df, dim};
    if (s + dim <= df) return dag_make(d, OP_Extract, &f, 1, p, 2);
    if (s >= df) return dag_make(d, OP_Extract, &g, 1, q, 2);
  }
  return NONE;
}

static int st_dim_ExtractT(dag *d, const st_node *n) {
  const int64_t *p = n->p;
  if (p[0] < 0 || p[1] > DAG_MAX_DIM || p[0] + n->da > p[1])
    return (int)DIMFAIL(n->op, "start %d with the argument's dim does not fit in dim %d", (int)p[0],
                        (int)p[1]);
  return (int)p[1];
}
static uint32_t st_rules_ExtractT(dag *d, const st_node *n) {
  uint32_t a = n->k[0];
  const int64_t *p = n->p;
  int dim = n->dim;
  if (p[0] == 0 && n->da == dim) return a;
  if (n->za) return dag_zero(d, dim);
  if (n->da == 1) {
    int64_t q[2] = {dim, p[0]};
    return dag_make(d, OP_ElemT, &a, 1, q, 2);
  }
  return NONE;
}

static int st_dim_Concat(dag *d, const st_node *n) {
  if ((int64_t)n->da + n->db > DAG_MAX_DIM)
    return (int)DIMFAIL(n->op, "dim %d + %d is too large", n->da, n->db);
  return n->da + n->db;
}
static uint32_t st_rules_Concat(dag *d, const st_node *n) {
  if (n->za && n->zb) return dag_zero(d, n->dim);
  return NONE;
}

static int st_dim_OneHot(dag *d, const st_node *n) {
  const int64_t *p = n->p;
  if (n->da != 1)
    return (int)DIMFAIL(n->op, "only scalar formulas have a one-hot representation, got dim %d",
                        n->da);
  if (p[0] < 1 || p[0] > DAG_MAX_DIM)
    return (int)DIMFAIL(n->op, "length %d is out of range", (int)p[0]);
  return (int)p[0];
}
static uint32_t st_rules_OneHot(dag *d, const st_node *n) {
  (void)d, (void)n;
  return NONE;
}

/* MatVecMult(A, v) and VecMatMult(v, A): the same rules with the operands swapped. */
#define st_dim_MatVecMult st_dim_matvec
#define st_dim_VecMatMult st_dim_matvec
#define st_rules_MatVecMult st_rules_matvec
#define st_rules_VecMatMult st_rules_matvec
static int st_dim_matvec(dag *d, const st_node *n) {
  int mv = n->op == OP_MatVecMult, dm = mv ? n->da : n->db, dv = mv ? n->db : n->da;
  if (dm % dv)
    return (int)DIMFAIL(n->op, "matrix dim %d is not a multiple of vector dim %d", dm, dv);
  return dm / dv;
}
static uint32_t st_rules_matvec(dag *d, const st_node *n) {
  int mv = n->op == OP_MatVecMult;
  uint32_t m = mv ? n->k[0] : n->k[1], v = mv ? n->k[1] : n->k[0];
  if (n->za || n->zb) return dag_zero(d, n->dim);
  if (dimof(d, v) == 1) return dag_bin(d, OP_Mult, v, m);
  if (dimof(d, v) == dimof(d, m)) return dag_bin(d, OP_Scalprod, m, v);
  return NONE;
}

static int st_dim_TensorProd(dag *d, const st_node *n) {
  if ((int64_t)n->da * n->db > DAG_MAX_DIM)
    return (int)DIMFAIL(n->op, "dim %d * %d is too large", n->da, n->db);
  return n->da * n->db;
}
static uint32_t st_rules_TensorProd(dag *d, const st_node *n) {
  if (n->za || n->zb) return dag_zero(d, n->dim);
  if (n->da == 1 || n->db == 1) return dag_bin(d, OP_Mult, n->k[0], n->k[1]);
  return NONE;
}

static int st_dim_TensorDot(dag *d, const st_node *n) {
  tdot t;
  return tdot_check(d, &t, n->da, n->db, n->p, n->np);
}
static uint32_t st_rules_TensorDot(dag *d, const st_node *n) {
  if (n->za || n->zb) return dag_zero(d, n->dim);
  tdot t;
  tdot_check(d, &t, n->da, n->db, n->p, n->np);
  int np = tdot_canonical_np(&t, n->np);
  return np == n->np ? NONE : dag_make(d, OP_TensorDot, n->k, 2, n->p, np);
}

/* ---- complex <-> real ------------------------------------------------------------------- */

static int st_dim_ComplexReal(dag *d, const st_node *n) {
  if (n->da % 2)
    return (int)DIMFAIL(n->op, "the argument's dim %d is odd: a complex vector interleaves re "
                               "and im", n->da);
  return n->da / 2;
}
#define st_dim_ComplexImag st_dim_ComplexReal

static int st_dim_Real2Complex(dag *d, const st_node *n) {
  if (2 * n->da > DAG_MAX_DIM) return (int)DIMFAIL(n->op, "dim %d is out of range", 2 * n->da);
  return 2 * n->da;
}
#define st_dim_Imag2Complex st_dim_Real2Complex

/* ComplexReal / ComplexImag (part = op) of a: the part a was made from, zero for the other
 * part, and through +, - and * (entry 2k of an elementwise result is the op of the operands'
 * entries 2k; a dim-1 operand broadcasts to every entry), so that the sugar's compositions
 * (a product of products) collapse. */
static uint32_t st_rules_ComplexReal(dag *d, const st_node *n) {
  uint32_t a = n->k[0];
  int op = opof(d, a), mine = n->op == OP_ComplexReal ? OP_Real2Complex : OP_Imag2Complex;
  if (n->za) return dag_zero(d, n->dim);
  if (op == mine) return kid(d, a, 0);
  if (op == OP_Real2Complex || op == OP_Imag2Complex) return dag_zero(d, n->dim);
  if (op == OP_Minus) return dag_un(d, OP_Minus, dag_un(d, n->op, kid(d, a, 0)));
  if (op == OP_Add || op == OP_Subtract || op == OP_Mult) {
    uint32_t k[2] = {kid(d, a, 0), kid(d, a, 1)};
    for (int c = 0; c < 2; c++)
      if (dimof(d, k[c]) != 1) k[c] = dag_un(d, n->op, k[c]);
    return dag_bin(d, op, k[0], k[1]);
  }
  return NONE;
}
#define st_rules_ComplexImag st_rules_ComplexReal

static uint32_t st_rules_Real2Complex(dag *d, const st_node *n) {
  return n->za ? dag_zero(d, n->dim) : NONE;
}
#define st_rules_Imag2Complex st_rules_Real2Complex

static st_dim_fn *const st_dims[OP_COUNT] = {
#define X(name, kind, sig, vm, eval, t0, t1, t2) DAG_ST_ENTRY(kind, name, st_dim_)
#include "ops.def"
#undef X
};

static st_rules_fn *const st_rules[OP_COUNT] = {
#define X(name, kind, sig, vm, eval, t0, t1, t2) DAG_ST_ENTRY(kind, name, st_rules_)
#include "ops.def"
#undef X
};

/* Number of integer parameters a fixed signature takes ('i' only); -1 with lists. */
static int sig_params(const char *sig, int *nf) {
  int ni = 0;
  *nf = 0;
  for (; *sig; sig++) {
    if (*sig == 'f') ++*nf;
    if (*sig == 'i') ni++;
    if (*sig == 'l') return -1;
  }
  return ni;
}

uint32_t dag_make(dag *d, int op, const uint32_t *kids, int nk, const int64_t *params, int np) {
  for (int c = 0; c < nk; c++)
    if (!kids[c]) return 0;
  if (dag_err(d)->status != KEOPS_OK) return 0;
  int nf;
  int kind = op >= 0 && op < OP_COUNT ? (int)dag_ops[op].kind : -1;
  int ni = (kind == K_EW || kind == K_ST) ? sig_params(dag_ops[op].sig, &nf) : 0;
  if ((kind != K_EW && kind != K_ST) || nk != nf || (ni >= 0 && np != ni) || nk > DAG_MAX_KIDS) {
    kerr_set(dag_err(d), KEOPS_ERROR_COMPILE, "internal error: bad call to dag_make(%s, %d kids, %d params)",
             op >= 0 && op < OP_COUNT ? dag_ops[op].name : "?", nk, np);
    return 0;
  }
  int64_t p[256]; /* a copy: building may move the parameter pool */
  if (np > 256) return DIMFAIL(op, "too many integer parameters (%d)", np);
  if (np) memcpy(p, params, sizeof *p * (size_t)np);
  uint32_t k[DAG_MAX_KIDS] = {0};
  if (nk) memcpy(k, kids, sizeof *k * (size_t)nk);
  if (kind == K_EW) return make_ew(d, op, k, nk, p, np);
  st_node n = {op, k, p, np, dimof(d, k[0]), k[1] ? dimof(d, k[1]) : 0, dag_is_zero(d, k[0]),
               k[1] && dag_is_zero(d, k[1]), 0};
  if (!(n.dim = st_dims[op](d, &n))) return 0;
  uint32_t r = st_rules[op](d, &n);
  if (r != NONE) return r;
  return dag_intern(d, op, n.dim, k, nk, p, np);
}

/* Rebuilds the nodes below root bottom-up (ids are topological) through dag_make, each Var
 * replaced by what fn makes of it (position, dim, category), so that the rules see the new
 * leaves. */
uint32_t dag_map_vars(dag *d, uint32_t root, dag_var_fn fn, const void *ctx) {
  if (!root) return 0;
  uint32_t *map = calloc((size_t)root + 1, sizeof *map);
  uint8_t *need = calloc((size_t)root + 1, 1);
  if (!map || !need) {
    free(map), free(need);
    kerr_set(dag_err(d), KEOPS_ERROR_OUT_OF_MEMORY, "out of memory while rebuilding the formula");
    return 0;
  }
  need[root] = 1;
  for (uint32_t id = root; id > 0; id--)
    if (need[id])
      for (int c = 0; c < dag_get(d, id)->nk; c++) need[dag_get(d, id)->k[c]] = 1;
  for (uint32_t id = 1; id <= root; id++) {
    if (!need[id]) continue;
    dag_node a = *dag_get(d, id); /* copies: building may move the arena and the pool */
    int64_t p[256];
    memcpy(p, dag_params(d, id), sizeof *p * (size_t)a.np);
    if (a.op == OP_Var) {
      map[id] = fn(d, (int)p[0], a.dim, (int)p[1], ctx);
    } else if (a.nk == 0) {
      map[id] = id;
    } else {
      uint32_t k[DAG_MAX_KIDS];
      for (int c = 0; c < a.nk; c++) k[c] = map[a.k[c]];
      map[id] = dag_make(d, a.op, k, a.nk, p, a.np);
    }
    if (!map[id]) break;
  }
  uint32_t out = map[root];
  free(map), free(need);
  return out;
}

static uint32_t swap_var(dag *d, int pos, int dim, int cat, const void *swap) {
  return dag_var(d, pos, dim, ((const int *)swap)[cat]);
}

uint32_t dag_swap_cats(dag *d, uint32_t root, const int swap[3]) {
  return dag_map_vars(d, root, swap_var, swap);
}
