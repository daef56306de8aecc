/* Symbolic differentiation of DAG formulas: reverse mode (Grad), forward mode (Diff), and the
 * operators built on them (GradMatrix, Divergence).
 *
 * Both modes are table-driven: an elementwise (EW) row of ops.def carries its partial
 * derivatives as formula templates, and one chain rule serves every such row; structural (ST)
 * rows have their adjoint and tangent here, as st_adjoint_<Name> and st_tangent_<Name>.
 * No recursion: ids are a topological order (children < parents), so reverse mode walks ids
 * downwards from f and forward mode upwards from v, with per-id arrays. Formulas may be
 * DAG_MAX_DEPTH deep and arbitrarily wide.
 *
 * Every result is built with the smart constructors, so it comes out simplified and shared
 * with the rest of the DAG. A failure (a builder error, out of memory) returns 0 with the dag
 * error set. */
#include <stdlib.h>
#include <string.h>

#include "front.h"

/* Parameters of one node: dag_node.np is a uint8_t. */
#define AD_MAX_PARAMS 255

enum { F_REACH = 1, F_DEP = 2 }; /* flags per id: reachable from f; depends on v */

/* A private copy of a node and its parameters: building new nodes may move the arena, so
 * pointers from dag_get / dag_params do not survive a builder call. */
typedef struct ad_node {
  uint32_t id;
  dag_node n;
  int64_t p[AD_MAX_PARAMS];
} ad_node;

static void load(const dag *d, uint32_t id, ad_node *a) {
  a->id = id;
  a->n = *dag_get(d, id);
  if (a->n.np) memcpy(a->p, dag_params(d, id), a->n.np * sizeof a->p[0]);
}

static int dim_of(const dag *d, uint32_t id) { return dag_get(d, id)->dim; }

static void oom(dag *d) { kerr_set(dag_err(d), KEOPS_ERROR_OUT_OF_MEMORY, "out of memory"); }

/* ---- small builders ----------------------------------------------------------------------- */

static uint32_t mul(dag *d, uint32_t a, uint32_t b) { return dag_bin(d, OP_Mult, a, b); }
static uint32_t add(dag *d, uint32_t a, uint32_t b) { return dag_bin(d, OP_Add, a, b); }
static uint32_t sum(dag *d, uint32_t a) { return dag_un(d, OP_Sum, a); }

/* op(a) with integer parameters p0 (and p1 when np is 2). */
static uint32_t un_p(dag *d, int op, uint32_t a, int64_t p0, int64_t p1, int np) {
  int64_t p[2] = {p0, p1};
  return dag_make(d, op, &a, 1, p, np);
}

/* Sum (a + b) where a may be 0, meaning "nothing yet". */
static uint32_t accumulate(dag *d, uint32_t acc, uint32_t term) {
  return acc ? add(d, acc, term) : term;
}

/* Combines t[0..n) with the associative binary op (Add, Concat, order kept) as a balanced
 * tree, so that n terms nest log2(n) deep rather than n: a node shared by thousands of
 * parents must not get an adjoint thousands of operations deep (DAG_MAX_DEPTH). Overwrites t.
 * 0 when n is 0 or on failure. */
static uint32_t tree(dag *d, int op, uint32_t *t, size_t n) {
  if (!n) return 0;
  while (n > 1) {
    size_t m = 0;
    for (size_t k = 0; k + 1 < n; k += 2) t[m++] = dag_bin(d, op, t[k], t[k + 1]);
    if (n % 2) t[m++] = t[n - 1];
    n = m;
  }
  return t[0];
}

/* e_k of the standard basis of R^n: ElemT(1, n, k), or 1 when n is 1. */
static uint32_t basis(dag *d, int n, int k) {
  uint32_t one = dag_int(d, 1);
  return n == 1 ? one : un_p(d, OP_ElemT, one, n, k, 2);
}

/* ---- elementwise partial derivatives ------------------------------------------------------ */

/* The partial derivative of an EW node w.r.t. its argument k, from the ops.def template. Its
 * dim is 1 or the node's. */
static uint32_t ew_partial(dag *d, const ad_node *a, int k) {
  dag_partial_fn partial = dag_partial(d);
  if (partial) return partial(d, a->id, k);
  kerr_set(dag_err(d), KEOPS_ERROR_COMPILE, "internal error: %s's derivative without a partial "
           "derivative builder (dag_set_partial)", dag_ops[a->n.op].name);
  return 0;
}

/* ---- marking ------------------------------------------------------------------------------- */

/* flags[id] for id <= f: F_REACH when id is below f, F_DEP when it is below f and depends on
 * v. One downward pass then one upward pass, since children have smaller ids. */
static uint8_t *mark(dag *d, uint32_t f, uint32_t v) {
  uint8_t *fl = calloc((size_t)f + 1, 1);
  if (!fl) {
    oom(d);
    return NULL;
  }
  fl[f] = F_REACH;
  for (uint32_t id = f; id >= 1; id--) {
    const dag_node *n = dag_get(d, id);
    if (fl[id] & F_REACH)
      for (int k = 0; k < n->nk; k++) fl[n->k[k]] |= F_REACH;
  }
  if (v <= f && (fl[v] & F_REACH)) fl[v] |= F_DEP;
  for (uint32_t id = v + 1; id <= f; id++) {
    const dag_node *n = dag_get(d, id);
    if (!(fl[id] & F_REACH)) continue;
    for (int k = 0; k < n->nk; k++)
      if (fl[n->k[k]] & F_DEP) fl[id] |= F_DEP;
  }
  return fl;
}

/* ---- argument checks ----------------------------------------------------------------------- */

static int check_var(dag *d, const char *who, uint32_t v) {
  int op = dag_get(d, v)->op;
  if (op == OP_Var) return 1;
  kerr_set(dag_err(d), KEOPS_ERROR_DIMENSION, "%s: the variable must be a Var or an alias, got %s",
           who, dag_ops[op].name);
  return 0;
}

/* A rule built a term of the wrong dim: a bug in this file or in a template. Internal errors
 * use KEOPS_ERROR_COMPILE, as the simplifier does. */
static int check_term(dag *d, const char *who, int op, uint32_t term, int want) {
  if (dim_of(d, term) == want) return 1;
  kerr_set(dag_err(d), KEOPS_ERROR_COMPILE,
           "%s: internal error: the derivative through %s has dim %d, expected %d", who,
           dag_ops[op].name, dim_of(d, term), want);
  return 0;
}

/* ---- TensorDot ----------------------------------------------------------------------------- */

/* TensorDot(a, b, dims_a, dims_b, cont_a, cont_b[, perm]) (KeOps TensorDot.py, row-major):
 * T = numpy.tensordot(a.reshape(dims_a), b.reshape(dims_b), (cont_a, cont_b)), whose axes are
 * the kept (uncontracted) axes of a in increasing order, then those of b; cont_a[i] is paired
 * with cont_b[i]. The optional perm moves T's axis k to output position perm[k], i.e. the
 * output is T.transpose(argsort(perm)): in TensorDot.py the output strides are the cumulative
 * products of permutation(perm, keepdims) = keepdims[argsort(perm)], and output axis i is
 * indexed by loop variable argsort(perm)[i]. No perm means the identity.
 *
 * The adjoint w.r.t. side s (a: 0, b: 1), given G of the output's shape, is again a TensorDot
 * of G with the other operand o: contract G's axes that hold o's kept axes (G axis perm[k]
 * for T axis k of o) with those kept axes of o. The natural result has G's remaining axes
 * (s's kept axes, in increasing G position) then o's remaining axes (o's contracted axes,
 * increasing), and the new perm sends each to the axis of s it stands for. This is KeOps's
 * DiffT (moveaxis_a / moveaxis_b), derived again here. */
typedef struct td_info {
  dag_tdot u;                 /* the lists: dims a, b (0, 1), cont a, b (2, 3), perm (4) */
  int keep[2][AD_MAX_PARAMS]; /* kept axes of each side, increasing */
  int nkeep[2];
} td_info;

static int td_parse(const int64_t *p, int np, td_info *t) {
  if (dag_tdot_unpack(p, np, &t->u)) return 0;
  for (int s = 0; s < 2; s++) {
    t->nkeep[s] = 0;
    for (int ax = 0; ax < t->u.n[s]; ax++) {
      int contracted = 0;
      for (int i = 0; i < t->u.n[2 + s]; i++) contracted |= t->u.l[2 + s][i] == ax;
      if (!contracted) t->keep[s][t->nkeep[s]++] = ax;
    }
  }
  return 1;
}

static int td_perm(const td_info *t, int k) { return t->u.n[4] ? (int)t->u.l[4][k] : k; }

/* Appends a list (length, then elements) to params; returns the new count. */
static int put_list(int64_t *params, int np, const int *v, int n) {
  params[np++] = n;
  for (int i = 0; i < n; i++) params[np++] = v[i];
  return np;
}

static uint32_t td_adjoint(dag *d, const ad_node *a, uint32_t g, int s) {
  td_info t;
  int o = 1 - s, nk = 0, off[2], gdims[AD_MAX_PARAMS], inv[AD_MAX_PARAMS];
  int gcont[AD_MAX_PARAMS], odims[AD_MAX_PARAMS], perm[AD_MAX_PARAMS], m = 0, identity = 1;
  int64_t params[4 * AD_MAX_PARAMS + 5];
  if (!td_parse(a->p, a->n.np, &t)) {
    kerr_set(dag_err(d), KEOPS_ERROR_COMPILE, "Grad: internal error: bad TensorDot parameters");
    return 0;
  }
  off[0] = 0;
  off[1] = nk = t.nkeep[0];
  nk += t.nkeep[1];
  for (int k = 0; k < nk; k++) { /* G's shape: T axis k sits at position perm[k] */
    int side = k < off[1] ? 0 : 1;
    gdims[td_perm(&t, k)] = (int)t.u.l[side][t.keep[side][k - off[side]]];
    inv[td_perm(&t, k)] = k;
  }
  for (int j = 0; j < t.nkeep[o]; j++) gcont[j] = td_perm(&t, off[o] + j);
  for (int pos = 0; pos < nk; pos++) /* G's remaining axes: s's kept axes */
    if (inv[pos] >= off[s] && inv[pos] < off[s] + t.nkeep[s])
      perm[m++] = t.keep[s][inv[pos] - off[s]];
  for (int ax = 0; ax < t.u.n[o]; ax++) { /* o's remaining axes: its contracted ones */
    odims[ax] = (int)t.u.l[o][ax];
    for (int i = 0; i < t.u.n[2 + o]; i++)
      if (t.u.l[2 + o][i] == ax) perm[m++] = (int)t.u.l[2 + s][i];
  }
  for (int i = 0; i < m; i++) identity &= perm[i] == i;
  int np = put_list(params, 0, gdims, nk);
  np = put_list(params, np, odims, t.u.n[o]);
  np = put_list(params, np, gcont, t.nkeep[o]);
  np = put_list(params, np, t.keep[o], t.nkeep[o]);
  if (!identity) np = put_list(params, np, perm, m);
  if (np > AD_MAX_PARAMS) {
    kerr_set(dag_err(d), KEOPS_ERROR_UNSUPPORTED,
             "Grad: the gradient of this TensorDot needs %d integer parameters, more than %d", np,
             AD_MAX_PARAMS);
    return 0;
  }
  uint32_t kids[2] = {g, a->n.k[o]};
  return dag_make(d, OP_TensorDot, kids, 2, params, np);
}

/* ---- reverse mode -------------------------------------------------------------------------- */

/* The adjoint contribution of EW node a to its argument k, given the node's adjoint g (dim D).
 * A dim-1 argument broadcast over D components collects the sum over them. */
static uint32_t ew_adjoint(dag *d, const ad_node *a, uint32_t g, int k) {
  uint32_t part = ew_partial(d, a, k);
  if (!part) return 0;
  if (dim_of(d, a->n.k[k]) == 1 && a->n.dim > 1)
    return dim_of(d, part) == 1 ? mul(d, part, sum(d, g)) : sum(d, mul(d, part, g));
  return mul(d, part, g);
}

/* Structural ops' adjoints, one function per ops.def row: the contribution of ST node a to its
 * argument k, given the node's adjoint g. Unary ops are only asked for k = 0. */
typedef uint32_t st_adjoint_fn(dag *d, const ad_node *a, uint32_t g, int k);

static uint32_t st_adjoint_Sum(dag *d, const ad_node *a, uint32_t g, int k) {
  int d0 = dim_of(d, a->n.k[0]);
  (void)k;
  return d0 == 1 ? g : un_p(d, OP_SumT, g, d0, 0, 1);
}

static uint32_t st_adjoint_SumT(dag *d, const ad_node *a, uint32_t g, int k) {
  (void)a, (void)k;
  return sum(d, g);
}

static uint32_t st_adjoint_Scalprod(dag *d, const ad_node *a, uint32_t g, int k) {
  return mul(d, g, a->n.k[1 - k]);
}

/* Max, Min: g goes to the component that won (ArgMax / ArgMin). */
#define st_adjoint_Max adjoint_extreme
#define st_adjoint_Min adjoint_extreme
static uint32_t adjoint_extreme(dag *d, const ad_node *a, uint32_t g, int k) {
  int d0 = dim_of(d, a->n.k[0]);
  (void)k;
  uint32_t arg = dag_un(d, a->n.op == OP_Max ? OP_ArgMax : OP_ArgMin, a->n.k[0]);
  return mul(d, un_p(d, OP_OneHot, arg, d0, 0, 1), g);
}

/* Index-valued ops are piecewise constant: no derivative (has_grad is 0 for them, so this is
 * never called; it still answers the truth, a zero adjoint). */
#define st_adjoint_ArgMax no_adjoint
#define st_adjoint_ArgMin no_adjoint
#define st_adjoint_OneHot no_adjoint
static uint32_t no_adjoint(dag *d, const ad_node *a, uint32_t g, int k) {
  (void)g;
  return dag_zero(d, dim_of(d, a->n.k[k]));
}

static uint32_t st_adjoint_Elem(dag *d, const ad_node *a, uint32_t g, int k) {
  (void)k;
  return un_p(d, OP_ElemT, g, dim_of(d, a->n.k[0]), a->p[0], 2);
}

static uint32_t st_adjoint_ElemT(dag *d, const ad_node *a, uint32_t g, int k) {
  (void)k;
  return un_p(d, OP_Elem, g, a->p[1], 0, 1);
}

static uint32_t st_adjoint_Extract(dag *d, const ad_node *a, uint32_t g, int k) {
  (void)k;
  return un_p(d, OP_ExtractT, g, a->p[0], dim_of(d, a->n.k[0]), 2);
}

static uint32_t st_adjoint_ExtractT(dag *d, const ad_node *a, uint32_t g, int k) {
  (void)k;
  return un_p(d, OP_Extract, g, a->p[0], dim_of(d, a->n.k[0]), 2);
}

/* complex <-> real: each is the other's adjoint (ComplexReal^T = Real2Complex...) */
static uint32_t st_adjoint_ComplexReal(dag *d, const ad_node *a, uint32_t g, int k) {
  (void)k;
  static const int adj[][2] = {{OP_ComplexReal, OP_Real2Complex}, {OP_ComplexImag, OP_Imag2Complex},
                               {OP_Real2Complex, OP_ComplexReal}, {OP_Imag2Complex, OP_ComplexImag}};
  for (size_t q = 0; q < sizeof adj / sizeof *adj; q++)
    if (adj[q][0] == a->n.op) return dag_un(d, adj[q][1], g);
  return 0;
}
#define st_adjoint_ComplexImag st_adjoint_ComplexReal
#define st_adjoint_Real2Complex st_adjoint_ComplexReal
#define st_adjoint_Imag2Complex st_adjoint_ComplexReal

static uint32_t st_adjoint_Concat(dag *d, const ad_node *a, uint32_t g, int k) {
  int d0 = dim_of(d, a->n.k[0]), d1 = dim_of(d, a->n.k[1]);
  return k == 0 ? un_p(d, OP_Extract, g, 0, d0, 2) : un_p(d, OP_Extract, g, d0, d1, 2);
}

/* MatVecMult(A, x) = A.reshape(n, p) @ x */
static uint32_t st_adjoint_MatVecMult(dag *d, const ad_node *a, uint32_t g, int k) {
  const uint32_t *c = a->n.k;
  return k == 0 ? dag_bin(d, OP_TensorProd, g, c[1]) : dag_bin(d, OP_VecMatMult, g, c[0]);
}

/* VecMatMult(x, A) = x @ A.reshape(p, n) */
static uint32_t st_adjoint_VecMatMult(dag *d, const ad_node *a, uint32_t g, int k) {
  const uint32_t *c = a->n.k;
  return k == 0 ? dag_bin(d, OP_MatVecMult, c[1], g) : dag_bin(d, OP_TensorProd, c[0], g);
}

/* TensorProd(f, h) = outer(f, h).ravel() */
static uint32_t st_adjoint_TensorProd(dag *d, const ad_node *a, uint32_t g, int k) {
  const uint32_t *c = a->n.k;
  return k == 0 ? dag_bin(d, OP_MatVecMult, g, c[1]) : dag_bin(d, OP_VecMatMult, c[0], g);
}

#define st_adjoint_TensorDot td_adjoint

static st_adjoint_fn *const st_adjoints[OP_COUNT] = {
#define X(name, kind, sig, vm, eval, t0, t1, t2) DAG_ST_ENTRY(kind, name, st_adjoint_)
#include "ops.def"
#undef X
};

/* 0 when the op's value does not change (almost everywhere) with argument k: EW rows without
 * a template, and the index-valued ST ops. */
static int has_grad(int op, int k) {
  if (dag_ops[op].kind == K_EW) return dag_ops[op].t[k] != NULL;
  return st_adjoints[op] != no_adjoint;
}

/* The adjoint contributions to each node, kept until the node is reached (all its parents
 * have larger ids, so by then they are complete) and then summed with tree(). */
typedef struct contrib {
  uint32_t term, next; /* next: 1 + index of the node's previous contribution, 0 at the end */
} contrib;

typedef struct adjoints {
  uint32_t *head; /* per id: 1 + index of its last contribution, 0 for none */
  contrib *c;
  size_t n, cap;
  uint32_t *tmp;
  size_t tmpcap;
} adjoints;

/* buf with room for need elements (reallocated, *cap updated), or NULL with buf untouched. */
static void *grow(void *buf, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return buf;
  size_t ncap = *cap ? 2 * *cap : 64;
  while (ncap < need) ncap *= 2;
  void *nb = realloc(buf, ncap * elem);
  if (nb) *cap = ncap;
  return nb;
}

static int adj_push(dag *d, adjoints *a, uint32_t id, uint32_t term) {
  contrib *c = grow(a->c, &a->cap, a->n + 1, sizeof *c);
  if (!c) {
    oom(d);
    return 0;
  }
  a->c = c;
  a->c[a->n] = (contrib){term, a->head[id]};
  a->head[id] = (uint32_t)++a->n;
  return 1;
}

/* The adjoint of id (*out 0: none). 0 on failure. */
static int adj_take(dag *d, adjoints *a, uint32_t id, uint32_t *out) {
  size_t n = 0;
  for (uint32_t i = a->head[id]; i; i = a->c[i - 1].next) {
    uint32_t *t = grow(a->tmp, &a->tmpcap, n + 1, sizeof *t);
    if (!t) {
      oom(d);
      return 0;
    }
    a->tmp = t;
    a->tmp[n++] = a->c[i - 1].term;
  }
  *out = tree(d, OP_Add, a->tmp, n);
  return !n || *out;
}

/* Pushes the adjoint g of node id to its children that depend on v. 0 on failure. */
static int backprop(dag *d, uint32_t id, uint32_t g, const uint8_t *fl, adjoints *adj) {
  ad_node a;
  load(d, id, &a);
  enum dag_kind kind = dag_ops[a.n.op].kind;
  if (kind != K_EW && kind != K_ST) {
    kerr_set(dag_err(d), KEOPS_ERROR_COMPILE, "Grad: internal error: unexpected %s node",
             dag_ops[a.n.op].name);
    return 0;
  }
  for (int k = 0; k < a.n.nk; k++) {
    uint32_t c = a.n.k[k];
    if (!(fl[c] & F_DEP) || !has_grad(a.n.op, k)) continue;
    uint32_t term = kind == K_EW ? ew_adjoint(d, &a, g, k) : st_adjoints[a.n.op](d, &a, g, k);
    if (!term || !check_term(d, "Grad", a.n.op, term, dim_of(d, c))) return 0;
    if (!dag_is_zero(d, term) && !adj_push(d, adj, c, term)) return 0;
  }
  return 1;
}

/* Walks the nodes between f and v downwards; the adjoint of v, 0 for none. 0 on failure. */
static int reverse(dag *d, uint32_t f, uint32_t v, uint32_t e, const uint8_t *fl, adjoints *adj,
                   uint32_t *out) {
  if (!adj_push(d, adj, f, e)) return 0;
  for (uint32_t id = f; id > v; id--) {
    uint32_t g;
    if (!(fl[id] & F_DEP)) continue;
    if (!adj_take(d, adj, id, &g)) return 0;
    if (g && !dag_is_zero(d, g) && !backprop(d, id, g, fl, adj)) return 0;
  }
  return adj_take(d, adj, v, out);
}

uint32_t ad_grad(dag *d, uint32_t f, uint32_t v, uint32_t e) {
  if (!f || !v || !e) return 0;
  if (!check_var(d, "Grad", v)) return 0;
  int df = dim_of(d, f), dv = dim_of(d, v);
  if (dim_of(d, e) != df) {
    kerr_set(dag_err(d), KEOPS_ERROR_DIMENSION,
             "Grad: the gradient input has dim %d but the formula has dim %d", dim_of(d, e), df);
    return 0;
  }
  if (v > f) return dag_zero(d, dv); /* f is older than v, so cannot contain it */
  uint8_t *fl = mark(d, f, v);
  adjoints adj = {calloc((size_t)f + 1, sizeof *adj.head), NULL, 0, 0, NULL, 0};
  uint32_t res = 0, g;
  if (fl && !adj.head) oom(d);
  if (fl && adj.head && reverse(d, f, v, e, fl, &adj, &g)) res = g ? g : dag_zero(d, dv);
  free(fl);
  free(adj.head);
  free(adj.c);
  free(adj.tmp);
  return res;
}

/* ---- forward mode -------------------------------------------------------------------------- */

/* Tangent of EW node a: sum over arguments of partial * tangent, broadcast to the node's dim
 * (a dim-1 argument of a dim-D node gives a dim-1 product). */
static int ew_tangent(dag *d, const ad_node *a, const uint32_t *t, uint32_t *out) {
  uint32_t acc = 0;
  for (int k = 0; k < a->n.nk; k++) {
    if (!t[k] || !has_grad(a->n.op, k)) continue;
    uint32_t term = mul(d, ew_partial(d, a, k), t[k]);
    if (!term) return 0;
    if (!(acc = accumulate(d, acc, term))) return 0;
  }
  if (acc && dim_of(d, acc) < a->n.dim) acc = un_p(d, OP_SumT, acc, a->n.dim, 0, 1);
  *out = acc;
  return 1;
}

/* Structural ops' tangents, one function per ops.def row: the tangent of ST node a given its
 * arguments' tangents t (0: that argument does not move), in *out (0: a zero tangent).
 * Returns 0 on failure. */
typedef int st_tangent_fn(dag *d, const ad_node *a, const uint32_t *t, uint32_t *out);

/* Bilinear op: op(ta, b) + op(a, tb), each term only where that argument moves. */
#define st_tangent_Scalprod bilinear_tangent
#define st_tangent_MatVecMult bilinear_tangent
#define st_tangent_VecMatMult bilinear_tangent
#define st_tangent_TensorProd bilinear_tangent
#define st_tangent_TensorDot bilinear_tangent
static int bilinear_tangent(dag *d, const ad_node *a, const uint32_t *t, uint32_t *out) {
  uint32_t acc = 0;
  for (int k = 0; k < a->n.nk; k++) {
    if (!t[k]) continue;
    uint32_t kids[DAG_MAX_KIDS];
    memcpy(kids, a->n.k, sizeof kids);
    kids[k] = t[k];
    uint32_t term = dag_make(d, a->n.op, kids, a->n.nk, a->p, a->n.np);
    if (!term || !(acc = accumulate(d, acc, term))) return 0;
  }
  return (*out = acc) != 0;
}

/* Linear op: the same op applied to the tangents (Zero for arguments that do not move). */
#define st_tangent_Sum linear_tangent
#define st_tangent_SumT linear_tangent
#define st_tangent_Elem linear_tangent
#define st_tangent_ElemT linear_tangent
#define st_tangent_Extract linear_tangent
#define st_tangent_ExtractT linear_tangent
#define st_tangent_Concat linear_tangent
#define st_tangent_ComplexReal linear_tangent
#define st_tangent_ComplexImag linear_tangent
#define st_tangent_Real2Complex linear_tangent
#define st_tangent_Imag2Complex linear_tangent
static int linear_tangent(dag *d, const ad_node *a, const uint32_t *t, uint32_t *out) {
  uint32_t kids[DAG_MAX_KIDS];
  for (int k = 0; k < a->n.nk; k++) kids[k] = t[k] ? t[k] : dag_zero(d, dim_of(d, a->n.k[k]));
  return (*out = dag_make(d, a->n.op, kids, a->n.nk, a->p, a->n.np)) != 0;
}

/* Max, Min: the tangent of the component that won. */
#define st_tangent_Max tangent_extreme
#define st_tangent_Min tangent_extreme
static int tangent_extreme(dag *d, const ad_node *a, const uint32_t *t, uint32_t *out) {
  uint32_t arg = dag_un(d, a->n.op == OP_Max ? OP_ArgMax : OP_ArgMin, a->n.k[0]);
  uint32_t hot = un_p(d, OP_OneHot, arg, dim_of(d, a->n.k[0]), 0, 1);
  return (*out = dag_bin(d, OP_Scalprod, hot, t[0])) != 0;
}

/* Index-valued ops: piecewise constant. */
#define st_tangent_ArgMax no_tangent
#define st_tangent_ArgMin no_tangent
#define st_tangent_OneHot no_tangent
static int no_tangent(dag *d, const ad_node *a, const uint32_t *t, uint32_t *out) {
  (void)d, (void)a, (void)t;
  *out = 0;
  return 1;
}

static st_tangent_fn *const st_tangents[OP_COUNT] = {
#define X(name, kind, sig, vm, eval, t0, t1, t2) DAG_ST_ENTRY(kind, name, st_tangent_)
#include "ops.def"
#undef X
};

/* Computes the tangent of node id from its children's; *out 0 means a zero tangent. */
static int tangent(dag *d, uint32_t id, const uint32_t *tan, uint32_t *out) {
  ad_node a;
  uint32_t t[DAG_MAX_KIDS] = {0};
  load(d, id, &a);
  int moving = 0, ok;
  for (int k = 0; k < a.n.nk; k++) moving |= (t[k] = tan[a.n.k[k]]) != 0;
  *out = 0;
  if (!moving) return 1; /* every rule is linear in the tangents: none in, none out */
  switch (dag_ops[a.n.op].kind) {
  case K_EW: ok = ew_tangent(d, &a, t, out); break;
  case K_ST: ok = st_tangents[a.n.op](d, &a, t, out); break;
  default:
    kerr_set(dag_err(d), KEOPS_ERROR_COMPILE, "Diff: internal error: unexpected %s node",
             dag_ops[a.n.op].name);
    return 0;
  }
  if (!ok || (*out && !check_term(d, "Diff", a.n.op, *out, a.n.dim))) return 0;
  if (*out && dag_is_zero(d, *out)) *out = 0; /* keeps zero tangents from spreading */
  return 1;
}

uint32_t ad_diff(dag *d, uint32_t f, uint32_t v, uint32_t u) {
  if (!f || !v || !u) return 0;
  if (!check_var(d, "Diff", v)) return 0;
  int df = dim_of(d, f), dv = dim_of(d, v);
  if (dim_of(d, u) != dv) {
    kerr_set(dag_err(d), KEOPS_ERROR_DIMENSION,
             "Diff: the direction has dim %d but the variable has dim %d", dim_of(d, u), dv);
    return 0;
  }
  if (v > f) return dag_zero(d, df);
  uint8_t *fl = mark(d, f, v);
  uint32_t *tan = calloc((size_t)f + 1, sizeof *tan);
  uint32_t res = 0;
  if (!fl || !tan) {
    if (fl) oom(d);
    goto out;
  }
  tan[v] = dag_is_zero(d, u) ? 0 : u;
  for (uint32_t id = v + 1; id <= f; id++)
    if ((fl[id] & F_DEP) && !tangent(d, id, tan, &tan[id])) goto out;
  res = tan[f] ? tan[f] : dag_zero(d, df);
out:
  free(fl);
  free(tan);
  return res;
}

/* Var (pos, dim, cat) -> itself, except the one at position *zeroed -> Zero. */
static uint32_t zero_var(dag *d, int pos, int dim, int cat, const void *zeroed) {
  return pos == *(const int *)zeroed ? dag_zero(d, dim) : dag_var(d, pos, dim, cat);
}

/* The tangent T(u) = Diff(f, v, u), u a Var at a position f does not use, is linear in u. If
 * T does not depend on v, then d/dt f(t v) = T(v) for every t, so f(v) = f(0) + T(v): f is
 * linear exactly when f(0) is 0, which the simplifier folds to a Zero node (comparing f with
 * T(v) would depend on the order in which each writes its products). */
int ad_is_linear(dag *d, uint32_t f, uint32_t v) {
  if (!f || !v || !check_var(d, "linearity", v)) return -1;
  int free_pos = 0;
  for (uint32_t id = 1; id <= f; id++)
    if (dag_get(d, id)->op == OP_Var && dag_params(d, id)[0] >= free_pos)
      free_pos = (int)dag_params(d, id)[0] + 1;
  const dag_node *vn = dag_get(d, v);
  int pv = (int)dag_params(d, v)[0], cat = (int)dag_params(d, v)[1];
  uint32_t u = dag_var(d, free_pos, vn->dim, cat), t = u ? ad_diff(d, f, v, u) : 0;
  if (!t) return -1;
  uint8_t *need = calloc((size_t)t + 1, 1);
  if (!need) {
    oom(d);
    return -1;
  }
  need[t] = 1;
  int uses_v = 0;
  for (uint32_t id = t; id > 0; id--)
    if (need[id]) {
      uses_v |= id == v;
      for (int c = 0; c < dag_get(d, id)->nk; c++) need[dag_get(d, id)->k[c]] = 1;
    }
  free(need);
  if (uses_v) return 0;
  uint32_t at0 = dag_map_vars(d, f, zero_var, &pv);
  return at0 ? dag_is_zero(d, at0) : -1;
}

/* ---- operators built on Grad / Diff -------------------------------------------------------- */

/* Concat over k of Grad(f, v, e_k): entry k * dim v + j is d f_k / d v_j (KeOps GradMatrix,
 * the transposed Jacobian rows concatenated left to right). */
uint32_t ad_grad_matrix(dag *d, uint32_t f, uint32_t v) {
  if (!f || !v) return 0;
  if (!check_var(d, "GradMatrix", v)) return 0;
  int df = dim_of(d, f);
  uint32_t *rows = malloc(sizeof *rows * (size_t)df), res = 0;
  if (!rows) {
    oom(d);
    return 0;
  }
  int k = 0;
  while (k < df && (rows[k] = ad_grad(d, f, v, basis(d, df, k)))) k++;
  if (k == df) res = tree(d, OP_Concat, rows, (size_t)df);
  free(rows);
  return res;
}

/* Sum over k of d f_k / d v_k = Elem(Diff(f, v, e_k), k): one forward pass per component. */
uint32_t ad_divergence(dag *d, uint32_t f, uint32_t v) {
  if (!f || !v) return 0;
  if (!check_var(d, "Divergence", v)) return 0;
  int df = dim_of(d, f), dv = dim_of(d, v);
  if (df != dv) {
    kerr_set(dag_err(d), KEOPS_ERROR_DIMENSION,
             "Divergence requires formula and variable to have the same dimension, got %d and %d",
             df, dv);
    return 0;
  }
  uint32_t *terms = malloc(sizeof *terms * (size_t)df), res = 0;
  if (!terms) {
    oom(d);
    return 0;
  }
  int k = 0;
  for (; k < df; k++) {
    uint32_t col = ad_diff(d, f, v, basis(d, df, k));
    if (!(terms[k] = df == 1 ? col : un_p(d, OP_Elem, col, k, 0, 1))) break;
  }
  if (k == df) res = tree(d, OP_Add, terms, (size_t)df);
  free(terms);
  return res;
}
