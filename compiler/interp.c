/* The reference interpreter: evaluates the DAG for one pair in double precision and runs a
 * program's reduction over all pairs. It is the oracle of the compiled backends, so it
 * favours plain, checkable code over speed; it still avoids per-pair allocation and
 * re-evaluating what does not change along the reduced index.
 *
 * A DAG is evaluated through a plan: the nodes below the root, in increasing id order
 * (a topological order, so no recursion however deep the DAG), each with its slot in one
 * workspace of doubles. The plan is split into three stages by what a node depends on:
 * 0 constants and parameters (evaluated once per run), 1 also output-row variables (once per
 * row), 2 also reduced-index variables (once per pair). Within a stage the id order holds.
 *
 * No global mutable state: interp_run may run on many threads at once. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "red.h"

typedef struct ip_step {
  int op;
  int nk;
  int dim;
  int kdim[DAG_MAX_KIDS];
  size_t off; /* value slot in the workspace */
  size_t koff[DAG_MAX_KIDS];
  const int64_t *par; /* the node's integer parameters (dag pool) */
  int np;
  int64_t *tab; /* TensorDot index tables (owned), see dag_tdot_tables */
  int64_t nco;  /* TensorDot: contracted combinations */
} ip_step;

typedef struct ip_plan {
  ip_step *steps;
  int nsteps;
  int stage_end[3]; /* steps [0,e0) stage 0, [e0,e1) stage 1, [e1,e2) stage 2 */
  double *val;      /* the workspace */
  size_t root_off;
  int root_dim;
} ip_plan;

/* ---- evaluation of one step ---------------------------------------------------------- */

static void eval_ew(const ip_step *s, double *v) {
  double *o = v + s->off;
  const double *a[DAG_MAX_KIDS] = {0};
  size_t inc[DAG_MAX_KIDS] = {0};
  for (int t = 0; t < s->nk; t++) a[t] = v + s->koff[t], inc[t] = s->kdim[t] != 1;
  double zero = 0;
  for (int t = s->nk; t < DAG_MAX_KIDS; t++) a[t] = &zero;
  for (size_t q = 0; q < (size_t)s->dim; q++)
    o[q] = dag_ew_eval(s->op, a[0][q * inc[0]], a[1][q * inc[1]], a[2][q * inc[2]], s->par);
}

/* Structural ops, one function per ops.def row: k[c] holds child c's s->kdim[c] values, o
 * gets the node's s->dim. */
typedef void st_eval_fn(const ip_step *s, const double *const *k, double *o);

static void st_eval_Sum(const ip_step *s, const double *const *k, double *o) {
  double acc = 0;
  for (int q = 0; q < s->kdim[0]; q++) acc += k[0][q];
  o[0] = acc;
}

static void st_eval_SumT(const ip_step *s, const double *const *k, double *o) {
  for (int q = 0; q < s->dim; q++) o[q] = k[0][0];
}

static void st_eval_Scalprod(const ip_step *s, const double *const *k, double *o) {
  double acc = 0;
  for (int q = 0; q < s->kdim[0]; q++) acc += k[0][q] * k[1][q];
  o[0] = acc;
}

/* Max, Min (value) and ArgMax, ArgMin (index as a double): the first extreme component
 * wins ties; a NaN component never wins a comparison (a NaN first component stays). */
#define st_eval_Max eval_extreme
#define st_eval_Min eval_extreme
#define st_eval_ArgMax eval_extreme
#define st_eval_ArgMin eval_extreme
static void eval_extreme(const ip_step *s, const double *const *k, double *o) {
  const double *a = k[0];
  int dir = s->op == OP_Max || s->op == OP_ArgMax ? 1 : -1, best = 0;
  for (int q = 1; q < s->kdim[0]; q++)
    if (dir > 0 ? a[q] > a[best] : a[q] < a[best]) best = q;
  o[0] = s->op == OP_Max || s->op == OP_Min ? a[best] : best;
}

static void st_eval_Elem(const ip_step *s, const double *const *k, double *o) {
  o[0] = k[0][s->par[0]];
}

static void st_eval_ElemT(const ip_step *s, const double *const *k, double *o) { /* (n, m) */
  memset(o, 0, sizeof *o * (size_t)s->dim);
  o[s->par[1]] = k[0][0];
}

static void st_eval_Extract(const ip_step *s, const double *const *k, double *o) { /* (start, d) */
  memcpy(o, k[0] + s->par[0], sizeof *o * (size_t)s->dim);
}

static void st_eval_ExtractT(const ip_step *s, const double *const *k, double *o) { /* (start, D) */
  memset(o, 0, sizeof *o * (size_t)s->dim);
  memcpy(o + s->par[0], k[0], sizeof *o * (size_t)s->kdim[0]);
}

/* complex <-> real: entries 2q (re) and 2q + 1 (im) */
static void st_eval_ComplexReal(const ip_step *s, const double *const *k, double *o) {
  for (int q = 0; q < s->dim; q++) o[q] = k[0][2 * q + (s->op == OP_ComplexImag)];
}
#define st_eval_ComplexImag st_eval_ComplexReal

static void st_eval_Real2Complex(const ip_step *s, const double *const *k, double *o) {
  int im = s->op == OP_Imag2Complex;
  for (int q = 0; q < s->kdim[0]; q++) o[2 * q + im] = k[0][q], o[2 * q + !im] = 0;
}
#define st_eval_Imag2Complex st_eval_Real2Complex

static void st_eval_Concat(const ip_step *s, const double *const *k, double *o) {
  memcpy(o, k[0], sizeof *o * (size_t)s->kdim[0]);
  memcpy(o + s->kdim[0], k[1], sizeof *o * (size_t)s->kdim[1]);
}

static void st_eval_OneHot(const ip_step *s, const double *const *k, double *o) {
  double r = floor(k[0][0] + 0.5); /* NaN or out of range: all zeros */
  memset(o, 0, sizeof *o * (size_t)s->dim);
  if (r >= 0 && r < s->dim) o[(int)r] = 1;
}

static void st_eval_MatVecMult(const ip_step *s, const double *const *k, double *o) {
  int n = s->dim, nb = s->kdim[1]; /* A (n x nb) row-major times v */
  for (int r = 0; r < n; r++) {
    double acc = 0;
    for (int c = 0; c < nb; c++) acc += k[0][(size_t)r * nb + c] * k[1][c];
    o[r] = acc;
  }
}

static void st_eval_VecMatMult(const ip_step *s, const double *const *k, double *o) {
  int n = s->dim, na = s->kdim[0]; /* v (na) times A (na x n) row-major */
  for (int c = 0; c < n; c++) {
    double acc = 0;
    for (int r = 0; r < na; r++) acc += k[0][r] * k[1][(size_t)r * n + c];
    o[c] = acc;
  }
}

static void st_eval_TensorProd(const ip_step *s, const double *const *k, double *o) {
  int na = s->kdim[0], nb = s->kdim[1];
  for (int r = 0; r < na; r++)
    for (int c = 0; c < nb; c++) o[(size_t)r * nb + c] = k[0][r] * k[1][c];
}

static void st_eval_TensorDot(const ip_step *s, const double *const *k, double *o) {
  const int64_t *abase = s->tab, *bbase = abase + s->dim, *aoff = bbase + s->dim,
                *boff = aoff + s->nco;
  for (int64_t q = 0; q < s->dim; q++) {
    double acc = 0;
    for (int64_t c = 0; c < s->nco; c++) acc += k[0][abase[q] + aoff[c]] * k[1][bbase[q] + boff[c]];
    o[q] = acc;
  }
}

static st_eval_fn *const st_eval[OP_COUNT] = {
#define X(name, kind, sig, vm, eval, t0, t1, t2) DAG_ST_ENTRY(kind, name, st_eval_)
#include "ops.def"
#undef X
};

static void eval_st(const ip_step *s, double *v) {
  const double *k[DAG_MAX_KIDS] = {0};
  for (int t = 0; t < s->nk; t++) k[t] = v + s->koff[t];
  st_eval[s->op](s, k, v + s->off);
}

static void eval_leaf(const ip_step *s, double *v, const double *const *vars) {
  double *o = v + s->off;
  switch (s->op) {
  case OP_Var: memcpy(o, vars[s->par[0]], sizeof *o * (size_t)s->dim); return;
  case OP_Zero: memset(o, 0, sizeof *o * (size_t)s->dim); return;
  case OP_RatCst: o[0] = (double)s->par[0] / (double)s->par[1]; return;
  case OP_Cst: memcpy(&o[0], &s->par[0], sizeof o[0]); return;
  }
}

static void run_steps(const ip_plan *pl, int from, int to, const double *const *vars) {
  for (int q = from; q < to; q++) {
    const ip_step *s = &pl->steps[q];
    switch (dag_ops[s->op].kind) {
    case K_EW: eval_ew(s, pl->val); break;
    case K_ST: eval_st(s, pl->val); break;
    default: eval_leaf(s, pl->val, vars); break;
    }
  }
}

/* ---- plans --------------------------------------------------------------------------- */

static void plan_free(ip_plan *pl) {
  for (int q = 0; q < pl->nsteps; q++) free(pl->steps[q].tab);
  free(pl->steps);
  free(pl->val);
  memset(pl, 0, sizeof *pl);
}

static int node_stage(const dag *d, uint32_t id, const unsigned char *stage) {
  const dag_node *n = dag_get(d, id);
  if (n->op == OP_Var) {
    int64_t cat = dag_params(d, id)[1];
    return cat == CAT_P ? 0 : cat == CAT_I ? 1 : 2;
  }
  int st = 0;
  for (int t = 0; t < n->nk; t++)
    if (stage[n->k[t]] > st) st = stage[n->k[t]];
  return st;
}

static int evaluable(int op) {
  if (op < 0 || op >= OP_COUNT) return 0;
  enum dag_kind k = dag_ops[op].kind;
  return k == K_EW || k == K_ST || op == OP_Var || op == OP_Zero || op == OP_RatCst || op == OP_Cst;
}

/* Fills the step at slot, given the workspace offsets of all nodes. */
static int make_step(const dag *d, uint32_t id, const size_t *off, ip_step *s) {
  const dag_node *n = dag_get(d, id);
  memset(s, 0, sizeof *s);
  s->op = n->op;
  s->nk = n->nk;
  s->dim = n->dim;
  s->off = off[id];
  s->par = dag_params(d, id);
  s->np = n->np;
  for (int t = 0; t < n->nk; t++) s->koff[t] = off[n->k[t]], s->kdim[t] = dag_get(d, n->k[t])->dim;
  if (n->op != OP_TensorDot) return 0;
  return dag_tdot_tables(s->par, s->np, s->kdim[0], s->kdim[1], s->dim, &s->tab, &s->nco);
}

/* Builds the plan of `root`: -1 when a node cannot be evaluated, -2 when out of memory. */
static int plan_build(const dag *d, uint32_t root, ip_plan *pl) {
  memset(pl, 0, sizeof *pl);
  if (root == 0 || root >= dag_count(d)) return -1;
  size_t n = (size_t)root + 1;
  unsigned char *need = calloc(n, 2);
  size_t *off = malloc(sizeof *off * n);
  int rc = 0;
  if (!need || !off) {
    rc = -2;
    goto done;
  }
  unsigned char *stage = need + n;
  need[root] = 1;
  int count[3] = {0, 0, 0};
  size_t total = 0;
  for (uint32_t id = root; id >= 1; id--) { /* parents before children: mark the needed */
    if (!need[id]) continue;
    const dag_node *nd = dag_get(d, id);
    for (int t = 0; t < nd->nk; t++) need[nd->k[t]] = 1;
  }
  for (uint32_t id = 1; id <= root; id++) {
    if (!need[id]) continue;
    if (!evaluable(dag_get(d, id)->op)) {
      rc = -1;
      goto done;
    }
    stage[id] = (unsigned char)node_stage(d, id, stage);
    count[stage[id]]++;
    off[id] = total;
    total += (size_t)dag_get(d, id)->dim;
  }
  pl->nsteps = count[0] + count[1] + count[2];
  pl->steps = calloc((size_t)pl->nsteps, sizeof *pl->steps);
  pl->val = malloc(sizeof *pl->val * (total ? total : 1));
  if (!pl->steps || !pl->val) {
    rc = -2;
    goto done;
  }
  int next[3] = {0, count[0], count[0] + count[1]};
  for (int st = 0; st < 3; st++) pl->stage_end[st] = next[st] + count[st];
  for (uint32_t id = 1; id <= root && !rc; id++)
    if (need[id]) rc = make_step(d, id, off, &pl->steps[next[stage[id]]++]);
  pl->root_off = off[root];
  pl->root_dim = dag_get(d, root)->dim;
done:
  free(need);
  free(off);
  if (rc) plan_free(pl);
  return rc;
}

void interp_eval(const dag *d, uint32_t id, const double *const *vars, double *out) {
  ip_plan pl;
  int dim = dag_get(d, id)->dim;
  if (plan_build(d, id, &pl)) { /* no status to return: NaN says "no value" */
    for (int q = 0; q < dim; q++) out[q] = NAN;
    return;
  }
  run_steps(&pl, 0, pl.nsteps, vars);
  memcpy(out, pl.val + pl.root_off, sizeof *out * (size_t)dim);
  plan_free(&pl);
}

/* ---- running a program --------------------------------------------------------------- */

/* Where the values of each argument position come from, in double. */
typedef struct ip_inputs {
  int n;
  const double *base[FE_MAX_ARGS]; /* row 0 of the argument; NULL: unused */
  double *owned[FE_MAX_ARGS];      /* float32 copies */
  const double *vars[FE_MAX_ARGS];
} ip_inputs;

static void inputs_free(ip_inputs *in) {
  for (int q = 0; q < in->n; q++) free(in->owned[q]);
}

/* Positions read by the plan. */
static void plan_uses(const ip_plan *pl, unsigned char *used) {
  for (int q = 0; q < pl->nsteps; q++)
    if (pl->steps[q].op == OP_Var) used[pl->steps[q].par[0]] = 1;
}

static keops_status inputs_load(const fe_program *p, const ip_plan *pl, int64_t M, int64_t N,
                                const void *const *args, ip_inputs *in, kerr *e) {
  in->n = p->args.n;
  for (int q = 0; q < pl->nsteps; q++) { /* positions and dims as declared */
    const ip_step *s = &pl->steps[q];
    if (s->op == OP_Var &&
        (s->par[0] < 0 || s->par[0] >= in->n || p->args.dim[s->par[0]] != s->dim)) {
      kerr_set(e, KEOPS_ERROR_ARGUMENT, "internal: Var(%lld) does not match the arguments",
               (long long)s->par[0]);
      return KEOPS_ERROR_ARGUMENT;
    }
  }
  unsigned char used[FE_MAX_ARGS] = {0};
  plan_uses(pl, used);
  for (int pos = 0; pos < in->n; pos++) {
    int dim = p->args.dim[pos], cat = p->args.cat[pos];
    int64_t rows = cat == CAT_P ? 1 : cat == CAT_I ? M : N;
    if (!used[pos] || rows == 0) continue;
    if (!args || !args[pos]) {
      kerr_set(e, KEOPS_ERROR_ARGUMENT, "argument %d is NULL", pos);
      return KEOPS_ERROR_ARGUMENT;
    }
    if (p->dtype == KEOPS_FLOAT64) {
      in->base[pos] = args[pos];
      continue;
    }
    size_t cnt = (size_t)rows * (size_t)dim;
    if ((uint64_t)rows > SIZE_MAX / sizeof(double) / (size_t)dim ||
        !(in->owned[pos] = malloc(sizeof(double) * cnt))) {
      kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory converting argument %d to double", pos);
      return KEOPS_ERROR_OUT_OF_MEMORY;
    }
    const float *src = args[pos];
    for (size_t q = 0; q < cnt; q++) in->owned[pos][q] = src[q];
    in->base[pos] = in->owned[pos];
  }
  return KEOPS_OK;
}

/* Points the variables of `role` (FE_*) at row r. */
static void inputs_point(const fe_program *p, ip_inputs *in, int role, int64_t r) {
  for (int pos = 0; pos < in->n; pos++)
    if (in->base[pos] && p->role[pos] == role)
      in->vars[pos] = in->base[pos] + r * p->args.dim[pos];
}

static keops_status check_outputs(const fe_program *p, const red_spec *rs, int64_t rows,
                                  void *const *outs, kerr *e) {
  if (rs->nout != p->nout) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "internal: %s has %d outputs, the program says %d",
             p->red->name, rs->nout, p->nout);
    return KEOPS_ERROR_ARGUMENT;
  }
  for (int o = 0; o < rs->nout; o++) {
    keops_dtype want = rs->out_idx[o] ? KEOPS_INT64 : p->dtype;
    if (rs->out_dim[o] != p->out_dim[o] || want != p->out_dtype[o]) {
      kerr_set(e, KEOPS_ERROR_ARGUMENT,
               "internal: %s output %d is %d wide (dtype %d), the program says %d (dtype %d)",
               p->red->name, o, rs->out_dim[o], (int)want, p->out_dim[o], (int)p->out_dtype[o]);
      return KEOPS_ERROR_ARGUMENT;
    }
    if (rows > 0 && (!outs || !outs[o])) {
      kerr_set(e, KEOPS_ERROR_ARGUMENT, "output %d is NULL", o);
      return KEOPS_ERROR_ARGUMENT;
    }
  }
  return KEOPS_OK;
}

static void fill_zero(const fe_program *p, int64_t rows, void *const *outs) {
  for (int o = 0; o < p->nout; o++) {
    size_t w = p->out_dtype[o] == KEOPS_FLOAT32 ? sizeof(float) : sizeof(double);
    if (rows > 0) memset(outs[o], 0, w * (size_t)rows * (size_t)p->out_dim[o]);
  }
}

/* Reduces row r over [j0, j1) into st. */
static void reduce_range(const fe_program *p, const red_spec *rs, ip_plan *pl, ip_inputs *in,
                         double *st, int64_t j0, int64_t j1) {
  const double *f = pl->val + pl->root_off;
  for (int64_t j = j0; j < j1; j++) {
    inputs_point(p, in, FE_RED, j);
    run_steps(pl, pl->stage_end[1], pl->stage_end[2], in->vars);
    red_accumulate(rs, st, f, j);
  }
}

static keops_status run_pairs(const fe_program *p, const red_spec *rs, ip_plan *pl, ip_inputs *in,
                              int64_t rows, int64_t nred, const fe_ranges *rg, void *const *outs,
                              kerr *e) {
  double *st = malloc(sizeof *st * rs->state);
  if (!st) {
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory for the reduction state");
    return KEOPS_ERROR_OUT_OF_MEMORY;
  }
  inputs_point(p, in, FE_PARAM, 0);
  run_steps(pl, 0, pl->stage_end[0], in->vars);
  int64_t b = 0; /* the first block that does not end at or before row r */
  for (int64_t r = 0; r < rows; r++) {
    inputs_point(p, in, FE_ROW, r);
    run_steps(pl, pl->stage_end[0], pl->stage_end[1], in->vars);
    red_init(rs, st);
    if (!rg) {
      reduce_range(p, rs, pl, in, st, 0, nred);
    } else {
      while (b < rg->nblocks && rg->rows[2 * b + 1] <= r) b++;
      if (b < rg->nblocks && rg->rows[2 * b] <= r)
        for (int64_t s = fe_slice_begin(rg, b); s < rg->slices[b]; s++)
          reduce_range(p, rs, pl, in, st, rg->red[2 * s], rg->red[2 * s + 1]);
    }
    red_finalize(rs, st, p->dtype, outs, r);
  }
  free(st);
  return KEOPS_OK;
}

keops_status interp_run(const fe_program *p, int64_t M, int64_t N, const void *const *args,
                        void *const *outs, const fe_ranges *rg, kerr *e) {
  if (!p || M < 0 || N < 0) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "interp_run: no program or negative size");
    return KEOPS_ERROR_ARGUMENT;
  }
  if (p->dtype != KEOPS_FLOAT32 && p->dtype != KEOPS_FLOAT64) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "interp_run: dtype must be float32 or float64");
    return KEOPS_ERROR_ARGUMENT;
  }
  int64_t rows = fe_rows(p, M, N), nred = fe_nred(p, M, N);
  red_spec rs;
  if (red_spec_init(&rs, p->red, p->fdim, p->k, p->scheme, nred, e)) return e->status;
  keops_status st = check_outputs(p, &rs, rows, outs, e);
  if (st) return st;
  if (p->zero) {
    fill_zero(p, rows, outs);
    return KEOPS_OK;
  }
  ip_plan pl;
  int rc = plan_build(p->d, p->f, &pl);
  if (rc) {
    kerr_set(e, rc == -2 ? KEOPS_ERROR_OUT_OF_MEMORY : KEOPS_ERROR_ARGUMENT,
             rc == -2 ? "out of memory planning the formula"
                      : "internal: the formula holds a node the interpreter cannot evaluate");
    return e->status;
  }
  if (pl.root_dim != p->fdim) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "internal: formula dim %d, program fdim %d", pl.root_dim,
             p->fdim);
    plan_free(&pl);
    return KEOPS_ERROR_ARGUMENT;
  }
  ip_inputs *in = calloc(1, sizeof *in);
  if (!in) {
    plan_free(&pl);
    kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory");
    return KEOPS_ERROR_OUT_OF_MEMORY;
  }
  st = inputs_load(p, &pl, M, N, args, in, e);
  if (!st) st = run_pairs(p, &rs, &pl, in, rows, nred, rg, outs, e);
  inputs_free(in);
  free(in);
  plan_free(&pl);
  return st;
}
