/* The formula generator: call shapes searched from the op table, then random typed trees. */
#include "gen.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const red_names[] = {
#define X(name, family, dir, outputs, f2, weight1, fin) #name,
#include "reductions.def"
#undef X
};
enum { NRED = sizeof red_names / sizeof red_names[0] };

/* ---- shapes ----------------------------------------------------------------------------------- */

#define MAXSH 16
#define MAXARGS 8

/* An argument of a call shape: 'f' a formula of dim `dim`, 'v' a bare variable of dim `dim`
 * (autodiff wrt it), 'e' an elementwise operand (the call's dim D, or 1), 't' literal text
 * (an integer or a list). */
typedef struct sarg {
  char kind;
  int dim;
  char lit[40];
} sarg;

typedef struct shape {
  int nargs, out; /* out 0: elementwise, the dim asked for */
  sarg a[MAXARGS];
} shape;

static shape shapes[OP_COUNT][MAXSH];
static int nshapes[OP_COUNT];
static int rows[OP_COUNT], nrows;
static const char *unshaped[OP_COUNT];
static int nunshaped, inited;

static const int DIMS[] = {1, 2, 3, 4, 6, 8, 9};
enum { NDIMS = sizeof DIMS / sizeof DIMS[0] };

/* Shapes that random parameters hit too rarely: list arguments must factor the operand dims.
 * Only a speed-up: the random search below finds these rows too, given time. */
static const char *const hints[] = {
    "TensorDot(Var(100,6,0),Var(101,6,1),[2,3],[3,2],[1],[0])",
    "TensorDot(Var(100,6,0),Var(101,2,1),[2,3],[2],[0],[0])",
    "TensorDot(Var(100,4,0),Var(101,6,1),[2,2],[2,3],[1],[0],[1,0])",
    "Kron(Var(100,2,0),Var(101,3,1),[2],[3])",
    "Kron(Var(100,4,0),Var(101,4,1),[2,2],[2,2])",
};

/* One scratch DAG for every validation (a new one per call is slow under ASan): its error is
 * cleared after a failed parse, and it is renewed when it grows. */
static dag *scratch;
static int scratch_uses;

static int validate(const char *text, int *dim) {
  if (!scratch || ++scratch_uses > 2000) {
    dag_free(scratch);
    scratch = dag_new();
    scratch_uses = 0;
  }
  fe_args *a = calloc(1, sizeof *a);
  kerr e;
  kerr_clear(&e);
  uint32_t id = scratch && a ? fe_parse(scratch, text, "formula", a, NULL, &e) : 0;
  if (id) *dim = dag_get(scratch, id)->dim;
  if (scratch) kerr_clear(dag_err(scratch));
  if (a) fe_args_free(a);
  free(a);
  return id != 0;
}

/* The call with placeholder variables Var(100 + k, dim, k % 2); argument `sub` (if >= 0) is
 * replaced by an expression that is not a variable. */
static void shape_text(int op, const shape *s, int sub, char *out, size_t cap) {
  size_t at = (size_t)snprintf(out, cap, "%s(", dag_ops[op].name);
  for (int k = 0; k < s->nargs && at < cap; k++) {
    const sarg *a = &s->a[k];
    const char *sep = k ? "," : "";
    if (a->kind == 't') {
      at += (size_t)snprintf(out + at, cap - at, "%s%s", sep, a->lit);
    } else {
      int dim = a->kind == 'e' ? 1 : a->dim;
      at += (size_t)snprintf(out + at, cap - at, k == sub ? "%sExp(Var(%d,%d,%d))" : "%sVar(%d,%d,%d)",
                             sep, 100 + k, dim, k % 2);
    }
  }
  if (at < cap) snprintf(out + at, cap - at, ")");
}

static int pick_int(kd_rng *r, const int *dims, int nd) {
  static const int ints[] = {-1, 0, 1, 2, 3, 4, 6};
  if (nd && kd_below(r, 5) < 2) return dims[kd_below(r, nd)] - kd_below(r, 2);
  return ints[kd_below(r, (int)(sizeof ints / sizeof ints[0]))];
}

/* A list: a factorisation of an operand dim, or indices. */
static void pick_list(kd_rng *r, const int *dims, int nd, char *out, size_t cap) {
  int v[3], n = 0;
  if (nd && kd_below(r, 2)) {
    int D = dims[kd_below(r, nd)];
    while (D > 1 && n < 2) {
      int f = 2 + kd_below(r, 2);
      if (D % f) f = D;
      v[n++] = f, D /= f;
    }
    if (D > 1 || n == 0) v[n++] = D;
  } else {
    n = 1 + kd_below(r, 2);
    for (int k = 0; k < n; k++) v[k] = kd_below(r, 3);
  }
  size_t at = (size_t)snprintf(out, cap, "[");
  for (int k = 0; k < n; k++) at += (size_t)snprintf(out + at, cap - at, "%s%d", k ? "," : "", v[k]);
  snprintf(out + at, cap - at, "]");
}

static int random_shape(kd_rng *r, int op, shape *s) {
  int ew = dag_ops[op].kind == K_EW, dims[MAXARGS], nd = 0;
  memset(s, 0, sizeof *s);
  for (const char *c = dag_ops[op].sig; *c; c++) {
    if (*c == '?') {
      if (kd_below(r, 2)) break;
      continue;
    }
    if (s->nargs >= MAXARGS) return -1;
    sarg *a = &s->a[s->nargs++];
    if (*c == 'f') {
      a->kind = ew ? 'e' : 'f';
      a->dim = ew ? 0 : DIMS[kd_below(r, NDIMS)];
      dims[nd++] = a->dim ? a->dim : 1;
    } else if (*c == 'i') {
      a->kind = 't';
      snprintf(a->lit, sizeof a->lit, "%d", pick_int(r, dims, nd));
    } else {
      a->kind = 't';
      pick_list(r, dims, nd, a->lit, sizeof a->lit);
    }
  }
  return 0;
}

/* Parses hint text back into a shape of op (placeholders become 'f' arguments). */
static int hint_shape(const char *text, int *op, shape *s) {
  const char *p = strchr(text, '(');
  if (!p || (*op = dag_op_lookup(text, (size_t)(p - text))) < 0) return -1;
  memset(s, 0, sizeof *s);
  for (p++; *p && *p != ')' && s->nargs < MAXARGS;) {
    sarg *a = &s->a[s->nargs++];
    if (!strncmp(p, "Var(", 4)) {
      int pos, dim, cat;
      if (sscanf(p, "Var(%d,%d,%d)", &pos, &dim, &cat) != 3) return -1;
      a->kind = 'f', a->dim = dim;
      p = strchr(p, ')') + 1;
    } else {
      size_t n = *p == '[' ? strcspn(p, "]") + 1 : strcspn(p, ",)");
      a->kind = 't';
      snprintf(a->lit, sizeof a->lit, "%.*s", (int)n, p);
      p += n;
    }
    if (*p == ',') p++;
  }
  return 0;
}

/* Validates s as a shape of op and stores it unless already known; returns 1 when new. */
static int add_shape(int op, shape *s) {
  char text[400], other[400];
  int dim;
  shape_text(op, s, -1, text, sizeof text);
  for (int q = 0; q < nshapes[op]; q++) {
    shape_text(op, &shapes[op][q], -1, other, sizeof other);
    if (!strcmp(text, other)) return 0;
  }
  if (nshapes[op] >= MAXSH || !validate(text, &dim)) return 0;
  s->out = dag_ops[op].kind == K_EW ? 0 : dim;
  for (int k = 0; k < s->nargs; k++)
    if (s->a[k].kind == 'f') {
      int d2;
      shape_text(op, s, k, other, sizeof other);
      if (!validate(other, &d2)) s->a[k].kind = 'v';
    }
  shapes[op][nshapes[op]++] = *s;
  return 1;
}

int gn_init(void) {
  if (inited) return nunshaped;
  inited = 1;
  kd_rng r = {12345};
  for (size_t h = 0; h < sizeof hints / sizeof hints[0]; h++) {
    int op;
    shape s;
    if (!hint_shape(hints[h], &op, &s)) add_shape(op, &s);
  }
  for (int op = 0; op < OP_COUNT; op++) {
    if (!dag_ops[op].sig || op == OP_Var) continue; /* Cst is not writable; Var is a leaf */
    rows[nrows++] = op;
    /* until the table is full, or nothing new came for a while (rows with few shapes) */
    int patience = strchr(dag_ops[op].sig, 'l') ? 3000 : dag_ops[op].kind == K_EW ? 60 : 300;
    for (int since = 0; since < patience && nshapes[op] < (dag_ops[op].kind == K_EW ? 4 : MAXSH); since++) {
      shape s;
      if (!random_shape(&r, op, &s) && add_shape(op, &s)) since = 0;
    }
    if (!nshapes[op]) unshaped[nunshaped++] = dag_ops[op].name;
  }
  rows[nrows++] = OP_Var;
  return nunshaped;
}

const char *gn_unshaped(int i) { return i >= 0 && i < nunshaped ? unshaped[i] : NULL; }
int gn_nrows(void) { return nrows; }
int gn_row(int i) { return rows[i]; }
int gn_nreductions(void) { return NRED; }
const char *gn_reduction(int i) { return red_names[i]; }

void gn_dump_shapes(FILE *f) {
  gn_init();
  for (int i = 0; i < nrows; i++) {
    int op = rows[i];
    fprintf(f, "%-15s", dag_ops[op].name);
    for (int q = 0; q < nshapes[op]; q++) {
      const shape *s = &shapes[op][q];
      fprintf(f, " %s(", dag_ops[op].name);
      for (int k = 0; k < s->nargs; k++) {
        const sarg *a = &s->a[k];
        if (a->kind == 't') fprintf(f, "%s%s", k ? "," : "", a->lit);
        else if (a->kind == 'e') fprintf(f, "%sD", k ? "," : "");
        else fprintf(f, "%s%c%d", k ? "," : "", a->kind == 'v' ? '@' : '#', a->dim);
      }
      fprintf(f, ")->%d", s->out);
    }
    fprintf(f, "\n");
  }
}

/* ---- formulas --------------------------------------------------------------------------------- */

typedef struct sb {
  char *s;
  size_t cap, len;
  int over;
} sb;

__attribute__((format(printf, 2, 3))) static void put(sb *b, const char *fmt, ...) {
  if (b->over) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= b->cap - b->len) b->over = 1;
  else b->len += (size_t)n;
}

typedef struct gs {
  kd_rng r;
  gn_case *c;
} gs;

static int new_alias(gs *g, int dim, int cat) {
  gn_case *c = g->c;
  if (c->nalias >= GN_MAXV) return -1;
  int a = c->nalias++;
  c->adim[a] = dim, c->acat[a] = cat;
  snprintf(c->alias[a], sizeof c->alias[a], "v%d = %s(%d)", a, cat == 0 ? "Vi" : cat == 1 ? "Vj" : "Pm", dim);
  c->aliasp[a] = c->alias[a];
  return a;
}

/* An alias of dim `dim`: one of `prefer` (a mask) or another existing one, or a new one;
 * ij: a Vi or Vj (Grad(f, v) declares e in v's category). -1 when none can be had. */
static int pick_alias(gs *g, int dim, uint32_t prefer, int ij) {
  gn_case *c = g->c;
  int cand[GN_MAXV], n = 0, pn = 0, pref[GN_MAXV];
  for (int a = 0; a < c->nalias; a++)
    if (c->adim[a] == dim && (!ij || c->acat[a] != 2)) {
      cand[n++] = a;
      if (prefer >> a & 1) pref[pn++] = a;
    }
  if (pn && kd_below(&g->r, 4)) return pref[kd_below(&g->r, pn)];
  if (n && kd_below(&g->r, 10) < 7) return cand[kd_below(&g->r, n)];
  int cat = ij ? kd_below(&g->r, 2) : (int)"00111012"[kd_below(&g->r, 8)] - '0';
  int a = new_alias(g, dim, cat);
  return a >= 0 ? a : n ? cand[kd_below(&g->r, n)] : -1;
}

static void gen_leaf(gs *g, sb *b, int W, uint32_t *used, int inline_var) {
  static const char *const csts[] = {"2", "3", "0.5", "1.5", "0.25", "5", "IntCst(2)", "RatCst(2,3)"};
  if (!inline_var && W == 1 && kd_below(&g->r, 5) == 0) {
    put(b, "%s", csts[kd_below(&g->r, (int)(sizeof csts / sizeof csts[0]))]);
    return;
  }
  int a = pick_alias(g, W, 0, 0);
  if (a < 0) {
    put(b, "Zero(%d)", W);
    return;
  }
  *used |= 1u << a;
  if (inline_var || kd_below(&g->r, 12) == 0) put(b, "Var(%d,%d,%d)", a, W, g->c->acat[a]);
  else put(b, "v%d", a);
}

static int fits(int op, int W) {
  for (int s = 0; s < nshapes[op]; s++)
    if (shapes[op][s].out == 0 || shapes[op][s].out == W) return 1;
  return 0;
}

static void gen_expr(gs *g, sb *b, int depth, int W, uint32_t *used);

static void gen_call(gs *g, sb *b, int depth, int W, int op, uint32_t *used) {
  int cand[MAXSH], n = 0;
  for (int s = 0; s < nshapes[op]; s++)
    if (shapes[op][s].out == 0 || shapes[op][s].out == W) cand[n++] = s;
  if (!n) {
    gen_leaf(g, b, W, used, 0);
    return;
  }
  const shape *s = &shapes[op][cand[kd_below(&g->r, n)]];
  int full = kd_below(&g->r, s->nargs); /* an elementwise argument that has the full dim */
  uint32_t mine = 0;
  put(b, "%s(", dag_ops[op].name);
  for (int k = 0; k < s->nargs; k++) {
    const sarg *a = &s->a[k];
    if (k) put(b, ",");
    switch (a->kind) {
    case 't': put(b, "%s", a->lit); break;
    case 'v': {
      int v = pick_alias(g, a->dim, mine, 1);
      if (v < 0) put(b, "Zero(%d)", a->dim); /* rejected, and the case drawn again */
      else put(b, "v%d", v), mine |= 1u << v;
      break;
    }
    case 'e': {
      int full_here = W == 1 || k == full || s->a[full].kind != 'e' || kd_below(&g->r, 3);
      gen_expr(g, b, depth - 1, full_here ? W : 1, &mine);
      break;
    }
    default: gen_expr(g, b, depth - 1, a->dim, &mine);
    }
  }
  put(b, ")");
  *used |= mine;
}

static void gen_expr(gs *g, sb *b, int depth, int W, uint32_t *used) {
  if (depth <= 0 || kd_below(&g->r, 4) == 0) {
    gen_leaf(g, b, W, used, 0);
    return;
  }
  int cand[OP_COUNT], n = 0;
  for (int i = 0; i < nrows; i++)
    if (rows[i] != OP_Var && fits(rows[i], W)) cand[n++] = rows[i];
  if (!n) {
    gen_leaf(g, b, W, used, 0);
    return;
  }
  gen_call(g, b, depth, W, cand[kd_below(&g->r, n)], used);
}

/* A root of dim W, with op `force` at the top when it fits. */
static void gen_root(gs *g, char *out, int depth, int W, int force) {
  sb b = {out, GN_MAXF, 0, 0};
  uint32_t used = 0;
  if (force == OP_Var) gen_leaf(g, &b, W, &used, 1);
  else if (force >= 0) gen_call(g, &b, depth, W, force, &used);
  else gen_expr(g, &b, depth, W, &used);
  if (b.over) { /* too long: a leaf instead */
    b.len = 0, b.over = 0;
    gen_leaf(g, &b, W, &used, 0);
  }
}

/* A dim the forced op can produce (or W when it fits), or 0. */
static int forced_dim(gs *g, int op, int W) {
  if (op == OP_Var || fits(op, W)) return W;
  int outs[MAXSH], n = 0;
  for (int s = 0; s < nshapes[op]; s++)
    if (shapes[op][s].out <= 64) outs[n++] = shapes[op][s].out;
  return n ? outs[kd_below(&g->r, n)] : 0;
}

static int valid(const keops_kernel_desc *d) {
  kerr e;
  kerr_clear(&e);
  fe_program *p = fe_build(d, &e);
  fe_free(p);
  return p != NULL;
}

static void draw(gn_case *c, uint64_t seed, uint64_t attempt, int force_op, int force_red,
                 int variant) {
  gs g = {{kd_mix(seed * 0x100 + attempt)}, c};
  memset(c, 0, sizeof *c);
  c->seed = seed;
  int red = force_red >= 0 ? force_red % NRED : kd_below(&g.r, NRED);
  const red_row *row = red_find(red_names[red]);
  keops_kernel_desc *d = &c->desc;
  *d = keops_kernel_desc_init();
  d->axis = kd_below(&g.r, 2) ? KEOPS_AXIS_J : KEOPS_AXIS_I;
  d->dtype = kd_below(&g.r, 2) ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
  c->target = kd_below(&g.r, KD_NTARGET);
  int W = 1 + kd_below(&g.r, 3), E = 0, depth = 1 + kd_below(&g.r, 4);
  switch (row->family) {
  case RF_SUM:
    W = (int)"11234"[kd_below(&g.r, 5)] - '0';
    d->sum_scheme = (keops_sum_scheme)(variant >= 0 ? variant % 4 : kd_below(&g.r, 4));
    break;
  case RF_KMIN: /* K * dim past 16 takes the heap code path */
    W = (int)"11234"[kd_below(&g.r, 5)] - '0';
    d->k = 1 + kd_below(&g.r, KD_MAX_K);
    break;
  case RF_LSE:
    W = 1;
    if (row->f2 == F2_REQ || (row->f2 == F2_OPT && kd_below(&g.r, 2))) E = 1 + kd_below(&g.r, 3);
    break;
  default: break;
  }
  if ((row->family == RF_SUM || row->family == RF_LSE) && d->dtype == KEOPS_FLOAT32)
    d->double_accumulator = variant >= 0 ? variant % 3 == 1 : kd_below(&g.r, 3) == 0;
  int f_force = -1, f2_force = -1;
  if (force_op >= 0) {
    if (force_op == OP_Var || fits(force_op, W)) f_force = force_op;
    else if (E && forced_dim(&g, force_op, E)) f2_force = force_op, E = forced_dim(&g, force_op, E);
    else if (row->family != RF_LSE) f_force = force_op, W = forced_dim(&g, force_op, W);
    else { /* LogSumExp needs a scalar formula: this case becomes a Sum */
      row = red_find("Sum");
      f_force = force_op, W = forced_dim(&g, force_op, W), E = 0;
    }
  }
  d->reduction = row->name;
  gen_root(&g, c->formula, depth, W, f_force);
  if (E) gen_root(&g, c->formula2, 1 + kd_below(&g.r, 3), E, f2_force);
  d->formula = c->formula;
  d->formula2 = E ? c->formula2 : NULL;
  d->aliases = c->aliasp;
  d->n_aliases = c->nalias;
  c->domain = (int)"00000112333"[kd_below(&g.r, 11)] - '0';
  c->data_seed = kd_mix(seed ^ 0xda7aull);
  c->jsplit = kd_below(&g.r, 8) == 0;
  int64_t rowsn, nred;
  if (c->jsplit) {
    c->threads = 2 + kd_below(&g.r, 3);
    rowsn = 1 + kd_below(&g.r, 3);
    nred = 2048 * c->threads + kd_below(&g.r, 2000);
  } else {
    c->threads = 1 + kd_below(&g.r, 2);
    rowsn = kd_below(&g.r, 50) ? 1 + kd_below(&g.r, 24) : 0;
    nred = kd_below(&g.r, 50) ? 1 + kd_below(&g.r, 24) : 0;
  }
  c->M = d->axis == KEOPS_AXIS_J ? rowsn : nred;
  c->N = d->axis == KEOPS_AXIS_J ? nred : rowsn;
}

void gn_make(gn_case *c, uint64_t seed, int force_op, int force_red, int variant) {
  gn_init();
  for (uint64_t attempt = 0; attempt < 64; attempt++) {
    draw(c, seed, attempt, force_op, force_red, variant);
    if (valid(&c->desc)) return;
  }
  /* nothing valid in 64 draws (a shape that validates alone but not in context): any case */
  for (uint64_t attempt = 64;; attempt++) {
    draw(c, seed, attempt, -1, force_red, variant);
    if (valid(&c->desc)) return;
  }
}

void gn_mark_ops(const char *text, int *seen) {
  for (const char *s = text; s && *s; s++) {
    if (!isalpha((unsigned char)*s) || (s > text && (isalnum((unsigned char)s[-1]) || s[-1] == '_')))
      continue;
    size_t len = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");
    int op = s[len] == '(' ? dag_op_lookup(s, len) : -1;
    if (op >= 0) seen[op] = 1;
  }
}
