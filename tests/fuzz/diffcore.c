/* Differential testing core: problems, the perturbation-measured tolerance model and the
 * comparisons (see diffcore.h), shrinking and reproducers. */
#include "diffcore.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const kd_domain_names[KD_NDOM] = {"unit", "pos", "wide", "grid"};
const char *const kd_target_names[KD_NTARGET] = {"avx512", "avx2", "generic"};

int kd_contexts_create(keops_context *ctxs[KD_NTARGET]) {
  const char *old = getenv("KEOPS_TARGET");
  char *saved = old ? strdup(old) : NULL;
  int n = 0;
  for (int t = 0; t < KD_NTARGET; t++) {
    setenv("KEOPS_TARGET", kd_target_names[t], 1);
    ctxs[t] = NULL;
    if (keops_context_create(&ctxs[t]) == KEOPS_OK) n++;
    else fprintf(stderr, "target %s skipped: %s\n", kd_target_names[t], keops_last_error());
  }
  if (saved) setenv("KEOPS_TARGET", saved, 1);
  else unsetenv("KEOPS_TARGET");
  free(saved);
  return n;
}

uint64_t kd_mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t kd_next(kd_rng *r) { return kd_mix(r->s++); }

double kd_uniform(kd_rng *r, double lo, double hi) {
  return lo + (hi - lo) * ((double)(kd_next(r) >> 11) * 0x1.0p-53);
}

int kd_below(kd_rng *r, int n) { return n <= 1 ? 0 : (int)(kd_next(r) % (uint64_t)n); }

double kd_unit(keops_dtype dt) { return dt == KEOPS_FLOAT32 ? 0x1p-24 : 0x1p-53; }

const char *kd_scheme_name(keops_sum_scheme s) {
  static const char *const n[4] = {"AUTO", "DIRECT", "BLOCK", "KAHAN"};
  return n[s & 3];
}

static int64_t cat_rows(int cat, int64_t M, int64_t N) { return cat == 0 ? M : cat == 1 ? N : 1; }

/* ---- problems -------------------------------------------------------------------------------- */

static double draw(kd_rng *r, int domain) {
  switch (domain) {
  case KD_DOM_POS: return kd_uniform(r, 0.1, 3);
  case KD_DOM_WIDE: return kd_uniform(r, -KD_VALUE_MAX, KD_VALUE_MAX);
  case KD_DOM_GRID: return 0.5 * (kd_below(r, 9) - 4);
  default: return kd_uniform(r, -2, 2);
  }
}

int kd_prob_init(kd_prob *P, keops_kernel *k, int64_t M, int64_t N, int domain, uint64_t seed,
                 double *const *vals) {
  memset(P, 0, sizeof *P);
  const fe_program *p = rt_kernel_program(k);
  int64_t total = 0;
  for (int pos = 0; pos < p->args.n; pos++) total += (int64_t)p->args.dim[pos] * cat_rows(p->args.cat[pos], M, N);
  int64_t rows = p->axis ? M : N;
  for (int o = 0; o < p->nout; o++) total += rows * p->out_dim[o] * 2;
  if (total > KD_MAX_ELEMS) return -1;
  P->k = k, P->p = p, P->dt = p->dtype, P->M = M, P->N = N;
  P->rows = rows, P->nred = p->axis ? N : M;
  kd_rng r = {kd_mix(seed)};
  for (int pos = 0; pos < p->args.n; pos++) {
    int64_t n = (int64_t)p->args.dim[pos] * cat_rows(p->args.cat[pos], M, N);
    P->val[pos] = malloc(sizeof(double) * (size_t)(n + 1));
    P->arr[pos] = malloc((P->dt == KEOPS_FLOAT32 ? 4 : 8) * (size_t)(n + 1));
    for (int64_t q = 0; q < n; q++) {
      double v = vals ? vals[pos][q] : draw(&r, domain);
      P->val[pos][q] = P->dt == KEOPS_FLOAT32 ? (double)(float)v : v;
      if (P->dt == KEOPS_FLOAT32) ((float *)P->arr[pos])[q] = (float)v;
      else ((double *)P->arr[pos])[q] = v;
    }
  }
  for (int b = 0; b < 2; b++)
    for (int o = 0; o < p->nout; o++) {
      size_t n = 8 * (size_t)(rows * p->out_dim[o] + 1);
      P->out[b][o] = malloc(n);
      memset(P->out[b][o], 0x5a, n); /* no output takes this value: an unwritten entry shows */
    }
  return 0;
}

void kd_prob_free(kd_prob *P) {
  for (int pos = 0; pos < FE_MAX_ARGS; pos++) free(P->val[pos]), free(P->arr[pos]);
  for (int b = 0; b < 2; b++) free(P->out[b][0]), free(P->out[b][1]);
  memset(P, 0, sizeof *P);
}

keops_status kd_run(kd_prob *P, int b, int threads) {
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = b ? KEOPS_BACKEND_REFERENCE : KEOPS_BACKEND_CPU,
                         .num_threads = threads};
  return keops_kernel_run(P->k, P->M, P->N, (const void *const *)P->arr, P->out[b], &o);
}

static double outv(const kd_prob *P, int b, int o, int64_t q) {
  switch (P->p->out_dtype[o]) {
  case KEOPS_FLOAT32: return ((const float *)P->out[b][o])[q];
  case KEOPS_FLOAT64: return ((const double *)P->out[b][o])[q];
  default: return (double)((const int64_t *)P->out[b][o])[q];
  }
}

/* ---- the perturbed copy of the program's DAG ------------------------------------------------ */

typedef struct pert {
  dag *d;
  uint32_t root; /* Concat(P_1 .. P_R, node values) */
  int fdim, dim, base, qdim, vals_off;
  int ntrig, *trig_off, *trig_dim; /* arguments of Sin/Cos/SinXDivX in the root's value */
  int64_t *qoff;                   /* per original node: its slice of the perturbation vectors */
} pert;

static uint32_t copy_node(dag *d, const dag_node *a, const int64_t *par, const uint32_t *map) {
  switch (a->op) {
  case OP_Var: return dag_var(d, (int)par[0], a->dim, (int)par[1]);
  case OP_Zero: return dag_zero(d, a->dim);
  case OP_RatCst: return dag_rat(d, par[0], par[1]);
  case OP_Cst: {
    double v;
    memcpy(&v, &par[0], sizeof v);
    return dag_cst(d, v);
  }
  default: {
    uint32_t k[DAG_MAX_KIDS];
    for (int c = 0; c < a->nk; c++) k[c] = map[a->k[c]];
    return dag_make(d, a->op, k, a->nk, par, a->np);
  }
  }
}

/* n * Q[off, off + dim) (+ H[off, off + dim) for rounding ops): the node's value perturbed. */
static uint32_t wrap(dag *d, uint32_t n, uint32_t Q, uint32_t H, int64_t off, int dim, int add) {
  int64_t ep[2] = {off, dim};
  uint32_t r = dag_bin(d, OP_Mult, n, dag_make(d, OP_Extract, &Q, 1, ep, 2));
  return add ? dag_bin(d, OP_Add, r, dag_make(d, OP_Extract, &H, 1, ep, 2)) : r;
}

/* Ops whose value is exact on exact arguments (no derivative in the table: Sign, Step, Floor,
 * comparisons...) and leaves get no additive term: an exact zero stays exactly zero. */
static int rounds(const dag_node *a) {
  if (a->nk == 0) return 0;
  return !(dag_ops[a->op].kind == K_EW && dag_ops[a->op].t[0] == NULL);
}

static void pert_free(pert *X) {
  dag_free(X->d);
  free(X->trig_off), free(X->trig_dim), free(X->qoff);
  memset(X, 0, sizeof *X);
}

static int pert_build(const fe_program *p, pert *X) {
  memset(X, 0, sizeof *X);
  const dag *s = p->d;
  uint32_t root = p->f, n = root + 1;
  uint8_t *need = calloc(n, 1);
  X->qoff = calloc(n, sizeof *X->qoff);
  uint32_t *map = calloc((size_t)n * (KD_TRIALS + 1), sizeof *map);
  uint32_t *list = NULL;
  int ok = 0, nn = 0;
  if (!need || !X->qoff || !map) goto done;
  need[root] = 1;
  int64_t qdim = 0;
  for (uint32_t id = root; id >= 1; id--)
    if (need[id]) {
      const dag_node *a = dag_get(s, id);
      for (int c = 0; c < a->nk; c++) need[a->k[c]] = 1;
    }
  for (uint32_t id = 1; id <= root; id++)
    if (need[id]) X->qoff[id] = qdim, qdim += dag_get(s, id)->dim, nn++;
  if (qdim > 100000 || nn > 20000) goto done;
  X->qdim = (int)qdim, X->fdim = p->fdim, X->base = p->args.n;
  X->d = dag_new();
  list = malloc(sizeof *list * (size_t)(nn + KD_TRIALS));
  X->trig_off = malloc(sizeof(int) * (size_t)nn), X->trig_dim = malloc(sizeof(int) * (size_t)nn);
  if (!X->d || !list || !X->trig_off || !X->trig_dim) goto done;
  uint32_t Q[KD_TRIALS], H[KD_TRIALS];
  for (int r = 0; r < KD_TRIALS; r++) {
    Q[r] = dag_var(X->d, X->base + 2 * r, X->qdim, CAT_P);
    H[r] = dag_var(X->d, X->base + 2 * r + 1, X->qdim, CAT_P);
  }
  int nl = KD_TRIALS, voff = KD_TRIALS * p->fdim;
  X->vals_off = voff;
  int64_t *valoff = X->qoff; /* node values follow in the same order as the slices */
  for (uint32_t id = 1; id <= root; id++) {
    if (!need[id]) continue;
    dag_node a = *dag_get(s, id);
    int64_t par[256];
    memcpy(par, dag_params(s, id), sizeof *par * a.np);
    if (!(map[id] = copy_node(X->d, &a, par, map))) goto done;
    list[nl++] = map[id];
    for (int r = 0; r < KD_TRIALS; r++) {
      uint32_t *m = map + (size_t)n * (r + 1), c = copy_node(X->d, &a, par, m);
      if (a.op != OP_Zero) c = wrap(X->d, c, Q[r], H[r], X->qoff[id], a.dim, rounds(&a));
      if (!(m[id] = c)) goto done;
    }
    if (a.op == OP_Sin || a.op == OP_Cos || a.op == OP_SinXDivX) {
      X->trig_off[X->ntrig] = voff + (int)valoff[a.k[0]];
      X->trig_dim[X->ntrig++] = dag_get(s, a.k[0])->dim;
    }
  }
  for (int r = 0; r < KD_TRIALS; r++) list[r] = map[(size_t)n * (r + 1) + root];
  /* one balanced Concat, so the copy is not deeper than it must be */
  for (int len = nl; len > 1;) {
    int m = 0;
    for (int q = 0; q + 1 < len; q += 2) list[m++] = dag_bin(X->d, OP_Concat, list[q], list[q + 1]);
    if (len % 2) list[m++] = list[len - 1];
    len = m;
  }
  X->root = list[0];
  ok = X->root != 0 && dag_err(X->d)->status == KEOPS_OK;
  if (ok) X->dim = dag_get(X->d, X->root)->dim;
  ok = ok && X->dim == voff + X->qdim;
done:
  free(need), free(map), free(list);
  if (!ok) pert_free(X);
  return ok ? 0 : -1;
}

/* ---- judging ------------------------------------------------------------------------------- */

typedef struct judge {
  const kd_prob *P;
  kd_verdict *v;
  double u;
  double *F, *T; /* per reduced index t and component c: exact value and tolerance (NaN:
                    unstable, not judged) of the output row being checked */
} judge;

static int fclass(double x) { return isnan(x) ? 1 : x == INFINITY ? 2 : x == -INFINITY ? 3 : 0; }

static void fail(judge *J, int64_t r, const char *fmt, double a, double b, double c, double d) {
  if (J->v->mismatch) return;
  J->v->mismatch = 1;
  J->v->row = r;
  int at = snprintf(J->v->msg, sizeof J->v->msg, "output row %lld: ", (long long)r);
  snprintf(J->v->msg + at, sizeof J->v->msg - (size_t)at, fmt, a, b, c, d);
}

/* got ~ want within tol; a non-finite reference must be matched exactly. */
static void expect(judge *J, double got, double want, double tol, int64_t r, int q, const char *part) {
  int ok = isfinite(want) ? fabs(got - want) <= tol : isnan(want) ? isnan(got) : got == want;
  J->v->compared++;
  if (isfinite(want) && tol > 0 && fabs(got - want) / tol > J->v->worst) J->v->worst = fabs(got - want) / tol;
  if (!ok) {
    char fmt[160];
    snprintf(fmt, sizeof fmt, "%s[%d]: CPU %%.9g, reference %%.9g, |diff| %%.3g > tol %%.3g", part, q);
    fail(J, r, fmt, got, want, fabs(got - want), tol);
  }
}

static void judge_sum(judge *J, int64_t r) {
  const kd_prob *P = J->P;
  int D = P->p->fdim;
  for (int d = 0; d < D; d++) {
    double A = 0, T = 0;
    int unstable = 0;
    for (int64_t t = 0; t < P->nred; t++) {
      double f = J->F[t * D + d], tl = J->T[t * D + d];
      if (isnan(tl)) unstable = 1;
      else if (isfinite(f)) A += fabs(f), T += tl;
    }
    /* a sum past the dtype's range: the double reference need not overflow where it does */
    if (unstable || A > (P->dt == KEOPS_FLOAT32 ? 0x1p120 : 0x1p1015)) {
      J->v->skipped++;
      continue;
    }
    double tol = T + (double)(P->nred + 1) * J->u * A;
    if (!(tol < INFINITY)) {
      J->v->skipped++;
      continue;
    }
    expect(J, outv(P, 0, 0, r * D + d), outv(P, 1, 0, r * D + d), tol, r, d, "sum");
  }
}

static void judge_slots(judge *J, int64_t r) {
  const kd_prob *P = J->P;
  const red_row *rw = P->p->red;
  int D = P->p->fdim, K = rw->family == RF_KMIN ? P->p->k : 1, w = K * D;
  int hv = rw->outputs & RO_VAL, io = hv ? 1 : 0;
  for (int d = 0; d < D; d++) {
    double tmax = 0;
    int unstable = 0;
    for (int64_t t = 0; t < P->nred; t++) {
      double tl = J->T[t * D + d];
      if (isnan(tl)) unstable = 1;
      else if (tl > tmax) tmax = tl;
    }
    if (unstable) {
      J->v->skipped += K;
      continue;
    }
    for (int q = 0; q < K; q++) {
      int64_t s = r * w + q * D + d;
      double cv = hv ? outv(P, 0, 0, s) : 0;
      if (hv && q > 0 && !(rw->dir < 0 ? cv >= outv(P, 0, 0, s - D) : cv <= outv(P, 0, 0, s - D)))
        fail(J, r, "slot %.0f: CPU values not sorted (%.9g after %.9g)%.0f", q * D + d, cv,
             outv(P, 0, 0, s - D), 0);
      if (!(rw->outputs & RO_IDX)) {
        double want = outv(P, 1, 0, s);
        expect(J, cv, want, tmax + J->u * fabs(want), r, q * D + d, "value");
        continue;
      }
      int64_t ri = ((int64_t *)P->out[1][io])[s], gi = ((int64_t *)P->out[0][io])[s];
      J->v->compared++;
      if (ri < 0) {
        if (gi != -1) fail(J, r, "slot %.0f: CPU index %.0f, the reference has none%.0f%.0f", q * D + d, (double)gi, 0, 0);
        if (hv) expect(J, cv, rw->dir < 0 ? INFINITY : -INFINITY, 0, r, q * D + d, "value");
        continue;
      }
      if (gi < 0 || gi >= P->nred) {
        fail(J, r, "slot %.0f: CPU index %.0f out of range (reference %.0f)%.0f", q * D + d, (double)gi, (double)ri, 0);
        continue;
      }
      double rv = J->F[ri * D + d], gv = J->F[gi * D + d];
      if (gi != ri && !(gv == rv || fabs(gv - rv) <= J->T[gi * D + d] + J->T[ri * D + d])) {
        char fmt[200];
        snprintf(fmt, sizeof fmt, "slot %d: CPU index %lld (exact value %%.17g), reference %lld "
                 "(%%.17g): not a near tie (tolerances %%.3g + %%.3g)", q * D + d, (long long)gi, (long long)ri);
        fail(J, r, fmt, gv, rv, J->T[gi * D + d], J->T[ri * D + d]);
      }
      for (int q2 = 0; q2 < q; q2++)
        if (((int64_t *)P->out[0][io])[r * w + q2 * D + d] == gi)
          fail(J, r, "slot %.0f: CPU lists index %.0f twice%.0f%.0f", q * D + d, (double)gi, 0, 0);
      if (hv) expect(J, cv, gv, J->T[gi * D + d] + J->u * fabs(gv), r, q * D + d, "value");
    }
  }
}

static void judge_lse(judge *J, int64_t r) {
  const kd_prob *P = J->P;
  int fd = P->p->fdim, w = P->p->out_dim[0];
  double u = J->u, m = -INFINITY, tolm = 0;
  for (int64_t t = 0; t < P->nred; t++)
    for (int c = 0; c < fd; c++)
      if (isnan(J->T[t * fd + c]) || !isfinite(J->F[t * fd + c])) {
        J->v->skipped += w; /* infinite exponents or weights: not modelled */
        return;
      }
  for (int64_t t = 0; t < P->nred; t++) {
    m = fmax(m, J->F[t * fd]);
    tolm = fmax(tolm, J->T[t * fd]);
  }
  double S[FE_MAX_ARGS + 2] = {0}, E[FE_MAX_ARGS + 2] = {0};
  if (fd > FE_MAX_ARGS) {
    J->v->skipped += w;
    return;
  }
  for (int c = 1; c < fd; c++) {
    double aw = 0;
    for (int64_t t = 0; t < P->nred; t++) {
      double f = J->F[t * fd], wt = exp(f - m), g = J->F[t * fd + c], tg = J->T[t * fd + c];
      double rel = expm1(J->T[t * fd] + tolm + KD_C_TERM * u * (fabs(f - m) + 1));
      S[c] += wt * g;
      E[c] += wt * (fabs(g) * rel + tg * (1 + rel));
      aw += wt * fabs(g);
    }
    E[c] += (6.0 * (double)P->nred + KD_C_TERM) * u * aw;
  }
  for (int q = 0; q < w; q++) {
    double got = outv(P, 0, 0, r * w + q), want = outv(P, 1, 0, r * w + q), tol;
    switch (P->p->red->fin) {
    case FIN_LOG: { /* m + log s: s must be well away from zero */
      double s = S[q + 1], e = E[q + 1];
      if (!(s > 0 && e < 0.5 * s)) {
        J->v->skipped++;
        continue;
      }
      tol = tolm + -log1p(-e / s) + 2 * u * fabs(want);
      break;
    }
    case FIN_SOFTMAX: { /* s_e / s_0, s_0 = S[1] the normaliser */
      double s0 = S[1], e0 = E[1], o = S[q + 2] / s0;
      if (!(s0 > 0 && e0 < 0.5 * s0)) {
        J->v->skipped++;
        continue;
      }
      tol = (E[q + 2] + fabs(o) * e0) / s0 * (1 + 2 * e0 / s0) + 2 * u * fabs(want);
      break;
    }
    default: tol = q == 0 ? tolm + u * fabs(want) : E[q] + u * fabs(want);
    }
    if (!(tol < INFINITY)) { /* a tolerance past any value (or 0 * inf): nothing to compare */
      J->v->skipped++;
      continue;
    }
    expect(J, got, want, tol, r, q, "lse");
  }
}

/* Empty reductions (and rows of nothing) have exact outputs. */
static void judge_exact(judge *J) {
  const kd_prob *P = J->P;
  for (int o = 0; o < P->p->nout; o++)
    for (int64_t q = 0; q < P->rows * P->p->out_dim[o]; q++) {
      double g = outv(P, 0, o, q), w = outv(P, 1, o, q);
      J->v->compared++;
      if (!(g == w || (isnan(g) && isnan(w))))
        fail(J, q / P->p->out_dim[o], "empty reduction, output %.0f: CPU %.9g, reference %.9g%.0f", o, g, w, 0);
    }
}

/* Exact values and tolerances of every term of output row r (see diffcore.h). */
static void row_terms(judge *J, const pert *X, int64_t r, kd_rng *rng, const double **vars,
                      double *buf) {
  const kd_prob *P = J->P;
  const fe_program *p = P->p;
  int fd = p->fdim;
  double u = J->u, eta = P->dt == KEOPS_FLOAT32 ? 0x1p-146 : 0x1p-1071;
  double big = P->dt == KEOPS_FLOAT32 ? 0x1p125 : 0x1p1020;
  double trig = P->dt == KEOPS_FLOAT32 ? KD_TRIG_MAX_F32 : KD_TRIG_MAX_F64;
  for (int64_t t = 0; t < P->nred; t++) {
    int64_t i = p->axis ? r : t, j = p->axis ? t : r;
    for (int pos = 0; pos < p->args.n; pos++) {
      int cat = p->args.cat[pos];
      vars[pos] = P->val[pos] ? P->val[pos] + (int64_t)p->args.dim[pos] * (cat == 0 ? i : cat == 1 ? j : 0) : NULL;
    }
    double *F = J->F + t * fd, *T = J->T + t * fd;
    interp_eval(p->d, p->f, vars, F);
    for (int r2 = 0; r2 < 2 * KD_TRIALS; r2++) {
      double *q = (double *)vars[X->base + r2];
      for (int c = 0; c < X->qdim; c++) {
        double mag = 0.5 + 0.5 * kd_uniform(rng, 0, 1), sgn = kd_next(rng) & 1 ? 1 : -1;
        q[c] = r2 % 2 ? sgn * mag * eta : 1 + sgn * mag * KD_PERT_A * u;
      }
    }
    interp_eval(X->d, X->root, vars, buf);
    int bad = 0, trigbad = 0;
    for (int c = X->vals_off; c < X->dim; c++)
      if (isfinite(buf[c]) && fabs(buf[c]) > big) bad = 1;
    for (int g = 0; g < X->ntrig; g++)
      for (int c = 0; c < X->trig_dim[g]; c++)
        if (fabs(buf[X->trig_off[g] + c]) > trig) trigbad = 1;
    if (trigbad) J->v->trig_skipped++;
    for (int c = 0; c < fd; c++) {
      double dev = 0;
      int ok = !bad && !trigbad;
      for (int tr = 0; tr < KD_TRIALS && ok; tr++) {
        double pv = buf[tr * fd + c];
        if (fclass(pv) != fclass(F[c])) ok = 0;
        else if (isfinite(pv)) dev = fmax(dev, fabs(pv - F[c]));
      }
      T[c] = !ok ? NAN : !isfinite(F[c]) ? 0 : KD_C_TERM * u * fmax(fabs(F[c]), 1) + KD_PERT_C * dev;
      if (!isfinite(T[c]) && !isnan(T[c])) T[c] = NAN;
    }
  }
}

void kd_judge(const kd_prob *P, uint64_t seed, kd_verdict *v) {
  memset(v, 0, sizeof *v);
  v->row = -1;
  judge J = {P, v, kd_unit(P->dt), NULL, NULL};
  if (P->rows == 0) return;
  if (P->nred == 0) {
    judge_exact(&J);
    return;
  }
  pert X;
  if (pert_build(P->p, &X)) {
    v->unjudged = 1;
    snprintf(v->msg, sizeof v->msg, "the perturbed copy of the formula could not be built");
    return;
  }
  int fd = P->p->fdim;
  J.F = malloc(sizeof(double) * (size_t)(P->nred * fd));
  J.T = malloc(sizeof(double) * (size_t)(P->nred * fd));
  const double **vars = calloc((size_t)X.base + 2 * KD_TRIALS, sizeof *vars);
  double *qs = malloc(sizeof(double) * (size_t)X.qdim * 2 * KD_TRIALS + 1);
  double *buf = malloc(sizeof(double) * (size_t)X.dim);
  for (int r2 = 0; r2 < 2 * KD_TRIALS; r2++) vars[X.base + r2] = qs + (size_t)r2 * X.qdim;
  kd_rng rng = {kd_mix(seed ^ 0x5eedull)};
  for (int64_t r = 0; r < P->rows; r++) {
    row_terms(&J, &X, r, &rng, vars, buf);
    switch (P->p->red->family) {
    case RF_SUM: judge_sum(&J, r); break;
    case RF_LSE: judge_lse(&J, r); break;
    default: judge_slots(&J, r);
    }
  }
  free(J.F), free(J.T), free(vars), free(qs), free(buf);
  pert_free(&X);
}

/* ---- shrinking ---------------------------------------------------------------------------- */

/* The problem restricted to output row `row` and reduced indices [lo, hi). */
static int restrict_prob(const kd_prob *P, int64_t row, int64_t lo, int64_t hi, kd_prob *S) {
  const fe_program *p = P->p;
  double *vals[FE_MAX_ARGS] = {0};
  int64_t M = p->axis ? 1 : hi - lo, N = p->axis ? hi - lo : 1;
  for (int pos = 0; pos < p->args.n; pos++) {
    int cat = p->args.cat[pos], dim = p->args.dim[pos];
    int out_cat = p->axis ? 0 : 1;
    int64_t first = cat == 2 ? 0 : cat == out_cat ? row : lo, cnt = cat == 2 ? 1 : cat == out_cat ? 1 : hi - lo;
    vals[pos] = malloc(sizeof(double) * (size_t)(cnt * dim + 1));
    if (P->val[pos]) memcpy(vals[pos], P->val[pos] + first * dim, sizeof(double) * (size_t)(cnt * dim));
  }
  int rc = kd_prob_init(S, P->k, M, N, 0, 0, vals);
  for (int pos = 0; pos < p->args.n; pos++) free(vals[pos]);
  return rc;
}

static int still_fails(kd_prob *S, int threads, uint64_t seed, kd_verdict *v) {
  if (kd_run(S, 0, threads) != KEOPS_OK || kd_run(S, 1, 1) != KEOPS_OK) return 0;
  kd_judge(S, seed, v);
  return v->mismatch;
}

int kd_shrink(const kd_prob *P, int64_t row, int threads, uint64_t seed, kd_prob *S, kd_verdict *vs) {
  int64_t lo = 0, hi = P->nred;
  if (row < 0 || row >= P->rows || restrict_prob(P, row, lo, hi, S)) return 0;
  if (!still_fails(S, threads, seed, vs)) {
    kd_prob_free(S);
    return 0;
  }
  while (hi - lo > 1) {
    int64_t mid = lo + (hi - lo) / 2, try_lo[2] = {lo, mid}, try_hi[2] = {mid, hi};
    int found = 0;
    for (int h = 0; h < 2 && !found; h++) {
      kd_prob T;
      kd_verdict vt;
      if (restrict_prob(P, row, try_lo[h], try_hi[h], &T)) continue;
      if (still_fails(&T, threads, seed, &vt)) {
        /* keep the smaller problem; its row indices are relative to try_lo */
        kd_prob_free(S);
        *S = T, *vs = vt, found = 1;
        lo = try_lo[h], hi = try_hi[h];
      } else {
        kd_prob_free(&T);
      }
    }
    if (!found) break;
  }
  return 1;
}

/* ---- reproducers ---------------------------------------------------------------------------- */

static void print_values(FILE *f, const double *v, int64_t n, keops_dtype dt) {
  for (int64_t q = 0; q < n; q++) fprintf(f, "%s%.*g", q ? ", " : "", dt == KEOPS_FLOAT32 ? 9 : 17, v[q]);
}

void kd_print_repro(FILE *f, const kd_repro *r, const kd_prob *P, const kd_verdict *v) {
  const keops_kernel_desc *d = r->desc;
  const fe_program *p = P->p;
  fprintf(f, "---- keops CPU/REFERENCE mismatch: %s\n", v->msg);
  fprintf(f, "  formula:    %s\n", d->formula);
  if (d->formula2) fprintf(f, "  formula2:   %s\n", d->formula2);
  fprintf(f, "  aliases:   ");
  for (int a = 0; a < d->n_aliases; a++) fprintf(f, " \"%s\"", d->aliases[a]);
  fprintf(f, "\n  reduction:  %s, k = %d, axis = %d, dtype = %s, sum_scheme = %s, "
             "double_accumulator = %d\n",
          d->reduction ? d->reduction : "Sum", d->k, d->axis == KEOPS_AXIS_J,
          d->dtype == KEOPS_FLOAT32 ? "float32" : "float64", kd_scheme_name(d->sum_scheme),
          d->double_accumulator);
  fprintf(f, "  options:    backend CPU (KEOPS_TARGET=%s, num_threads = %d) vs REFERENCE\n",
          r->target, r->threads);
  fprintf(f, "  M = %lld, N = %lld (data: domain %s, seed %llu)\n", (long long)P->M, (long long)P->N,
          kd_domain_names[r->domain % KD_NDOM], (unsigned long long)r->data_seed);
  char *canon = dag_print(p->d, p->f, NULL, 0);
  fprintf(f, "  simplified: %.2000s\n", canon ? canon : "?");
  free(canon);
  int64_t total = 0;
  for (int pos = 0; pos < p->args.n; pos++)
    total += (int64_t)p->args.dim[pos] * cat_rows(p->args.cat[pos], P->M, P->N);
  if (total <= 4096) {
    for (int pos = 0; pos < p->args.n; pos++) {
      static const char *const cn[3] = {"Vi", "Vj", "Pm"};
      int64_t n = (int64_t)p->args.dim[pos] * cat_rows(p->args.cat[pos], P->M, P->N);
      fprintf(f, "  input %d (%s%s%s(%d)): ", pos, p->args.name[pos] ? p->args.name[pos] : "",
              p->args.name[pos] ? " = " : "", cn[p->args.cat[pos] % 3], p->args.dim[pos]);
      if (P->val[pos]) print_values(f, P->val[pos], n, P->dt);
      fprintf(f, "\n");
    }
  } else {
    fprintf(f, "  inputs: %lld values, not printed: draw them again from the data seed\n", (long long)total);
  }
  if (v->row >= 0 && v->row < P->rows)
    for (int o = 0; o < p->nout; o++) {
      int w = p->out_dim[o];
      for (int b = 0; b < 2; b++) {
        fprintf(f, "  %s output %d, row %lld: ", b ? "REF" : "CPU", o, (long long)v->row);
        for (int q = 0; q < w && q < 64; q++)
          fprintf(f, "%s%.9g", q ? ", " : "", outv(P, b, o, v->row * w + q));
        fprintf(f, "\n");
      }
    }
  if (r->rerun) fprintf(f, "  rerun:      %s\n", r->rerun);
  fflush(f);
}
