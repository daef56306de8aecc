/* The node arena: interning, leaves, the op table, errors and printing. The smart
 * constructors (dimension rules, rewrites) and rebuilding are in simplify.c. */
#include "dag.h"

#include "fnv.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const dag_opinfo dag_ops[OP_COUNT] = {
#define X(name, kind, sig, vm, eval, t0, t1, t2) {#name, K_##kind, sig, {t0, t1, t2}},
#include "ops.def"
#undef X
};

int dag_op_lookup(const char *name, size_t len) {
  for (int op = 0; op < OP_COUNT; op++)
    if (strlen(dag_ops[op].name) == len && memcmp(dag_ops[op].name, name, len) == 0) return op;
  return -1;
}

/* Round(x, d): round half away from zero at d decimal digits, as KeOps. */
static double ew_round(double x, int64_t digits) {
  if (digits == 0) return round(x);
  double s = pow(10.0, (double)digits);
  return round(x * s) / s;
}

double dag_ew_eval(int op, double x, double y, double z, const int64_t *p) {
  (void)x, (void)y, (void)z, (void)p;
  switch (op) {
#define X(name, kind, sig, vm, eval, t0, t1, t2)                                                   \
  case OP_##name: return (double)(eval);
#include "ops.def"
#undef X
  default: return NAN;
  }
}

struct dag {
  dag_node *nodes;
  uint32_t n, cap;
  int64_t *pool;
  uint32_t npool, cappool;
  uint32_t *table; /* open addressing over node ids, 0 = empty; size a power of two */
  uint32_t tcap;
  kerr err;
  dag_partial_fn partial;
};

dag *dag_new(void) {
  dag *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  d->cap = 256;
  d->cappool = 256;
  d->tcap = 512;
  d->nodes = malloc(sizeof *d->nodes * d->cap);
  d->pool = malloc(sizeof *d->pool * d->cappool);
  d->table = calloc(d->tcap, sizeof *d->table);
  if (!d->nodes || !d->pool || !d->table) {
    dag_free(d);
    return NULL;
  }
  memset(&d->nodes[0], 0, sizeof d->nodes[0]); /* id 0: no node */
  d->n = 1;
  kerr_clear(&d->err);
  return d;
}

void dag_free(dag *d) {
  if (!d) return;
  free(d->nodes);
  free(d->pool);
  free(d->table);
  free(d);
}

kerr *dag_err(dag *d) { return &d->err; }
void dag_set_partial(dag *d, dag_partial_fn fn) { d->partial = fn; }
dag_partial_fn dag_partial(const dag *d) { return d->partial; }
const dag_node *dag_get(const dag *d, uint32_t id) { return &d->nodes[id < d->n ? id : 0]; }
const int64_t *dag_params(const dag *d, uint32_t id) { return d->pool + dag_get(d, id)->p; }
uint32_t dag_count(const dag *d) { return d->n; }

static uint32_t hash_node(int op, int dim, const uint32_t *k, int nk, const int64_t *p, int np) {
  /* FNV-1a over whole words rather than bytes: the nodes are hashed field by field */
  uint64_t h = KFNV64_SEED;
#define MIX(v) (h = (h ^ (uint64_t)(v)) * KFNV64_PRIME)
  MIX(op);
  MIX(dim);
  for (int i = 0; i < nk; i++) MIX(k[i]);
  for (int i = 0; i < np; i++) MIX(p[i]), MIX((uint64_t)p[i] >> 32);
#undef MIX
  return (uint32_t)(h ^ (h >> 32));
}

static int same_node(const dag *d, const dag_node *a, int op, int dim, const uint32_t *k, int nk,
                     const int64_t *p, int np) {
  if (a->op != op || a->dim != dim || a->nk != nk || a->np != np) return 0;
  for (int i = 0; i < nk; i++)
    if (a->k[i] != k[i]) return 0;
  return np == 0 || memcmp(d->pool + a->p, p, sizeof *p * (size_t)np) == 0;
}

static int grow_table(dag *d) {
  uint32_t ncap = d->tcap * 2;
  uint32_t *t = calloc(ncap, sizeof *t);
  if (!t) return -1;
  for (uint32_t id = 1; id < d->n; id++) {
    uint32_t h = d->nodes[id].hash & (ncap - 1);
    while (t[h]) h = (h + 1) & (ncap - 1);
    t[h] = id;
  }
  free(d->table);
  d->table = t;
  d->tcap = ncap;
  return 0;
}

static int reserve(void **buf, uint32_t *cap, uint32_t need, size_t elem) {
  if (need <= *cap) return 0;
  uint32_t ncap = *cap;
  while (ncap < need) ncap *= 2;
  void *b = realloc(*buf, elem * ncap);
  if (!b) return -1;
  *buf = b;
  *cap = ncap;
  return 0;
}

uint32_t dag_intern(dag *d, int op, int dim, const uint32_t *k, int nk, const int64_t *p, int np) {
  uint32_t depth = 1;
  for (int i = 0; i < nk; i++) {
    if (!k[i]) return 0;
    if (d->nodes[k[i]].depth + 1 > depth) depth = d->nodes[k[i]].depth + 1;
  }
  if (depth > DAG_MAX_DEPTH) {
    kerr_set(&d->err, KEOPS_ERROR_SYNTAX,
             "formula too deep: more than %d nested operations", DAG_MAX_DEPTH);
    return 0;
  }
  if (dim < 1 || dim > DAG_MAX_DIM) {
    kerr_set(&d->err, KEOPS_ERROR_DIMENSION, "%s: dimension %d is out of range [1, %d]",
             dag_ops[op].name, dim, DAG_MAX_DIM);
    return 0;
  }
  if (np > 255 || d->n >= UINT32_MAX / 2 || d->npool > UINT32_MAX / 2) {
    kerr_set(&d->err, KEOPS_ERROR_OUT_OF_MEMORY, "formula too large");
    return 0;
  }
  uint32_t h = hash_node(op, dim, k, nk, p, np);
  for (uint32_t s = h & (d->tcap - 1); d->table[s]; s = (s + 1) & (d->tcap - 1)) {
    const dag_node *a = &d->nodes[d->table[s]];
    if (a->hash == h && same_node(d, a, op, dim, k, nk, p, np)) return d->table[s];
  }
  if (((d->n + 1) * 2 > d->tcap && grow_table(d)) ||
      reserve((void **)&d->nodes, &d->cap, d->n + 1, sizeof *d->nodes) ||
      reserve((void **)&d->pool, &d->cappool, d->npool + (uint32_t)np, sizeof *d->pool)) {
    kerr_set(&d->err, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory while building the formula");
    return 0;
  }
  uint32_t id = d->n++;
  dag_node *a = &d->nodes[id];
  memset(a, 0, sizeof *a);
  a->op = (uint16_t)op;
  a->nk = (uint8_t)nk;
  a->np = (uint8_t)np;
  a->dim = dim;
  if (nk) memcpy(a->k, k, sizeof *k * (size_t)nk);
  a->p = d->npool;
  if (np) memcpy(d->pool + d->npool, p, sizeof *p * (size_t)np);
  d->npool += (uint32_t)np;
  a->depth = depth;
  a->hash = h;
  uint32_t s = h & (d->tcap - 1);
  while (d->table[s]) s = (s + 1) & (d->tcap - 1);
  d->table[s] = id;
  return id;
}

/* ---- leaves ------------------------------------------------------------------------------- */

uint32_t dag_var(dag *d, int pos, int dim, int cat) {
  if (cat < CAT_I || cat > CAT_P) {
    kerr_set(&d->err, KEOPS_ERROR_DIMENSION, "Var: category %d is not 0 (i), 1 (j) or 2 (parameter)",
             cat);
    return 0;
  }
  if (pos < 0) {
    kerr_set(&d->err, KEOPS_ERROR_DIMENSION, "Var: position %d is negative", pos);
    return 0;
  }
  int64_t p[2] = {pos, cat};
  return dag_intern(d, OP_Var, dim, NULL, 0, p, 2);
}

uint32_t dag_zero(dag *d, int dim) { return dag_intern(d, OP_Zero, dim, NULL, 0, NULL, 0); }

static int64_t gcd64(int64_t a, int64_t b) {
  uint64_t x = a < 0 ? -(uint64_t)a : (uint64_t)a, y = b < 0 ? -(uint64_t)b : (uint64_t)b;
  while (y) {
    uint64_t t = x % y;
    x = y;
    y = t;
  }
  return (int64_t)x;
}

uint32_t dag_rat(dag *d, int64_t num, int64_t den) {
  if (den == 0) {
    kerr_set(&d->err, KEOPS_ERROR_DIMENSION, "division by zero in a constant");
    return 0;
  }
  if (num == 0) return dag_zero(d, 1);
  if (num == INT64_MIN || den == INT64_MIN) return dag_cst(d, (double)num / (double)den);
  if (den < 0) num = -num, den = -den;
  int64_t g = gcd64(num, den);
  int64_t p[2] = {num / g, den / g};
  return dag_intern(d, OP_RatCst, 1, NULL, 0, p, 2);
}

uint32_t dag_int(dag *d, int64_t n) { return dag_rat(d, n, 1); }

uint32_t dag_cst(dag *d, double v) {
  /* Exact dyadic values become rationals, so 0.5 and RatCst(1,2) are one node. */
  if (isfinite(v) && v != 0) {
    int e;
    double m = frexp(v, &e); /* v = m * 2^e, 0.5 <= |m| < 1 */
    double num = ldexp(m, 53);
    int sh = 53 - e;         /* v = num / 2^sh */
    while (sh > 0 && fmod(num, 2) == 0) num /= 2, sh--;
    if (sh >= 0 && sh <= 62 && fabs(num) < 0x1p62) return dag_rat(d, (int64_t)num, (int64_t)1 << sh);
    if (sh < 0 && e <= 62) return dag_int(d, (int64_t)v);
  }
  if (v == 0) return dag_zero(d, 1);
  int64_t bits;
  memcpy(&bits, &v, sizeof bits);
  return dag_intern(d, OP_Cst, 1, NULL, 0, &bits, 1);
}

int dag_is_zero(const dag *d, uint32_t id) { return id && dag_get(d, id)->op == OP_Zero; }

int dag_is_rat(const dag *d, uint32_t id, int64_t *num, int64_t *den) {
  const dag_node *a = dag_get(d, id);
  if (id && a->op == OP_Zero && a->dim == 1) {
    *num = 0, *den = 1;
    return 1;
  }
  if (!id || a->op != OP_RatCst) return 0;
  *num = dag_params(d, id)[0];
  *den = dag_params(d, id)[1];
  return 1;
}

/* ---- text ------------------------------------------------------------------------------- */

typedef struct sbuf {
  char *s;
  size_t n, cap, max;
  int full, oom;
} sbuf;

static void sb_put(sbuf *b, const char *t, size_t len) {
  if (b->full || b->oom) return;
  if (b->n + len > b->max) {
    len = b->max - b->n;
    b->full = 1;
  }
  if (b->n + len + 4 > b->cap) {
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->n + len + 4) ncap *= 2;
    char *s = realloc(b->s, ncap);
    if (!s) {
      b->oom = 1;
      return;
    }
    b->s = s, b->cap = ncap;
  }
  memcpy(b->s + b->n, t, len);
  b->n += len;
  b->s[b->n] = 0;
  if (b->full) memcpy(b->s + b->n, "...", 4), b->n += 3;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  char tmp[128];
  va_list ap;
  va_start(ap, fmt);
  int len = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (len >= 0) sb_put(b, tmp, (size_t)len < sizeof tmp ? (size_t)len : sizeof tmp - 1);
}

static char *sb_done(sbuf *b) {
  if (b->oom) {
    free(b->s);
    return NULL;
  }
  if (!b->s) return calloc(1, 1);
  return b->s;
}

typedef struct printer {
  const dag *d;
  const char *const *names;
  int npos;
  sbuf b;
} printer;

/* Precedence as the parser sees it: 1 + -, 2 * /, 3 unary minus, 4 atoms and calls. */
static int prec_of(const dag *d, uint32_t id) {
  const dag_node *a = dag_get(d, id);
  switch (a->op) {
  case OP_Add: case OP_Subtract: return 1;
  case OP_Mult: case OP_Divide: return 2;
  case OP_Minus: return 3;
  case OP_RatCst: return dag_params(d, id)[1] == 1 && dag_params(d, id)[0] < 0 ? 3 : 4;
  case OP_Cst: {
    double v;
    memcpy(&v, dag_params(d, id), sizeof v);
    return v < 0 ? 3 : 4;
  }
  default: return 4;
  }
}

static void print_node(printer *pr, uint32_t id);

static void print_child(printer *pr, uint32_t id, int minprec) {
  int paren = prec_of(pr->d, id) < minprec;
  if (paren) sb_put(&pr->b, "(", 1);
  print_node(pr, id);
  if (paren) sb_put(&pr->b, ")", 1);
}

static void print_double(sbuf *b, double v) {
  if (isinf(v)) {
    sb_put(b, v < 0 ? "-1e999" : "1e999", v < 0 ? 6 : 5);
    return;
  }
  char tmp[40];
  snprintf(tmp, sizeof tmp, "%.17g", v);
  if (!strpbrk(tmp, ".en")) strcat(tmp, ".0");
  sb_put(b, tmp, strlen(tmp));
}

/* Integer parameters as written: lists (sig 'l') as [a,b]. */
static void print_params(printer *pr, const char *sig, const int64_t *p, int np) {
  int i = 0;
  for (const char *s = sig; s && *s && i < np; s++) {
    if (*s == 'f' || *s == '?') continue;
    sb_put(&pr->b, ",", 1);
    if (*s == 'i') {
      sb_printf(&pr->b, "%lld", (long long)p[i++]);
    } else {
      int64_t len = p[i++];
      sb_put(&pr->b, "[", 1);
      for (int64_t e = 0; e < len && i < np; e++) sb_printf(&pr->b, e ? ",%lld" : "%lld", (long long)p[i++]);
      sb_put(&pr->b, "]", 1);
    }
  }
}

/* Name(children, integer parameters): every op without a syntax of its own. */
static void print_call(printer *pr, uint32_t id) {
  const dag_node *a = dag_get(pr->d, id);
  sb_put(&pr->b, dag_ops[a->op].name, strlen(dag_ops[a->op].name));
  sb_put(&pr->b, "(", 1);
  for (int c = 0; c < a->nk; c++) {
    if (c) sb_put(&pr->b, ",", 1);
    print_node(pr, a->k[c]);
  }
  print_params(pr, dag_ops[a->op].sig, dag_params(pr->d, id), a->np);
  sb_put(&pr->b, ")", 1);
}

/* Structural ops' text, one function per ops.def row. */
typedef void st_print_fn(printer *pr, uint32_t id);

/* (f|g), KeOps's spelling of the scalar product. */
static void st_print_Scalprod(printer *pr, uint32_t id) {
  const dag_node *a = dag_get(pr->d, id);
  sb_put(&pr->b, "(", 1);
  print_node(pr, a->k[0]);
  sb_put(&pr->b, "|", 1);
  print_node(pr, a->k[1]);
  sb_put(&pr->b, ")", 1);
}

/* The rest are written as calls, which is also how the parser reads them back. */
#define st_print_Sum print_call
#define st_print_SumT print_call
#define st_print_Max print_call
#define st_print_Min print_call
#define st_print_ArgMax print_call
#define st_print_ArgMin print_call
#define st_print_Elem print_call
#define st_print_ElemT print_call
#define st_print_Extract print_call
#define st_print_ExtractT print_call
#define st_print_Concat print_call
#define st_print_OneHot print_call
#define st_print_MatVecMult print_call
#define st_print_VecMatMult print_call
#define st_print_TensorProd print_call
#define st_print_TensorDot print_call
#define st_print_ComplexReal print_call
#define st_print_ComplexImag print_call
#define st_print_Real2Complex print_call
#define st_print_Imag2Complex print_call

static st_print_fn *const st_print[OP_COUNT] = {
#define X(name, kind, sig, vm, eval, t0, t1, t2) DAG_ST_ENTRY(kind, name, st_print_)
#include "ops.def"
#undef X
};

static void print_node(printer *pr, uint32_t id) {
  const dag *d = pr->d;
  const dag_node *a = dag_get(d, id);
  const int64_t *p = dag_params(d, id);
  static const char infix[] = {[OP_Add] = '+', [OP_Subtract] = '-', [OP_Mult] = '*', [OP_Divide] = '/'};
  if (pr->b.full || pr->b.oom) return;
  switch (a->op) {
  case OP_Var:
    if (pr->names && p[0] < pr->npos && pr->names[p[0]])
      sb_put(&pr->b, pr->names[p[0]], strlen(pr->names[p[0]]));
    else
      sb_printf(&pr->b, "Var(%lld,%d,%lld)", (long long)p[0], a->dim, (long long)p[1]);
    return;
  case OP_Zero: sb_printf(&pr->b, "Zero(%d)", a->dim); return;
  case OP_RatCst:
    if (p[1] == 1)
      sb_printf(&pr->b, "%lld", (long long)p[0]);
    else
      sb_printf(&pr->b, "RatCst(%lld,%lld)", (long long)p[0], (long long)p[1]);
    return;
  case OP_Cst: {
    double v;
    memcpy(&v, p, sizeof v);
    print_double(&pr->b, v);
    return;
  }
  case OP_Add: case OP_Subtract: case OP_Mult: case OP_Divide: {
    /* Left-associative: the right operand needs parentheses at equal precedence so that the
     * text parses back to the same tree. */
    int pr_self = prec_of(d, id);
    print_child(pr, a->k[0], pr_self);
    sb_put(&pr->b, &infix[a->op], 1);
    print_child(pr, a->k[1], pr_self + 1);
    return;
  }
  case OP_Minus:
    sb_put(&pr->b, "-", 1);
    print_child(pr, a->k[0], 3);
    return;
  default:
    if (dag_ops[a->op].kind == K_ST)
      st_print[a->op](pr, id);
    else
      print_call(pr, id);
  }
}

char *dag_print(const dag *d, uint32_t id, const char *const *names, int npos) {
  printer pr = {d, names, npos, {NULL, 0, 0, DAG_PRINT_MAX, 0, 0}};
  if (id) print_node(&pr, id);
  return sb_done(&pr.b);
}

/* Marks the nodes below root; returns a malloc'ed flag array (NULL when out of memory). */
static uint8_t *reachable(const dag *d, uint32_t root) {
  uint8_t *need = calloc((size_t)root + 1, 1);
  if (!need) return NULL;
  need[root] = 1;
  for (uint32_t id = root; id > 0; id--)
    if (need[id])
      for (int c = 0; c < d->nodes[id].nk; c++) need[d->nodes[id].k[c]] = 1;
  return need;
}

char *dag_serialize(const dag *d, uint32_t root) {
  /* Post-order numbering from the root with an explicit stack, so the result depends only
   * on the structure and not on the ids. */
  if (!root) return calloc(1, 1);
  uint32_t *num = calloc((size_t)root + 1, sizeof *num);
  uint32_t *stack = malloc(sizeof *stack * ((size_t)root + 1) * (DAG_MAX_KIDS + 1));
  sbuf b = {NULL, 0, 0, SIZE_MAX / 2, 0, 0};
  if (!num || !stack) {
    free(num), free(stack);
    return NULL;
  }
  uint32_t next = 1, sp = 0;
  stack[sp++] = root;
  while (sp) {
    uint32_t id = stack[sp - 1];
    const dag_node *a = &d->nodes[id];
    if (num[id]) {
      sp--;
      continue;
    }
    int pending = 0;
    for (int c = a->nk - 1; c >= 0; c--)
      if (!num[a->k[c]]) stack[sp++] = a->k[c], pending = 1;
    if (pending) continue;
    sp--;
    num[id] = next++;
    sb_printf(&b, "%s:%d", dag_ops[a->op].name, a->dim);
    for (int c = 0; c < a->nk; c++) sb_printf(&b, " @%u", num[a->k[c]]);
    for (int c = 0; c < a->np; c++) sb_printf(&b, " %lld", (long long)d->pool[a->p + c]);
    sb_put(&b, ";", 1);
  }
  free(num), free(stack);
  return sb_done(&b);
}

char *dag_dot(const dag *d, uint32_t root, const char *const *names, int npos) {
  sbuf b = {NULL, 0, 0, SIZE_MAX / 2, 0, 0};
  uint8_t *need = root ? reachable(d, root) : NULL;
  if (root && !need) return NULL;
  sb_printf(&b, "digraph formula {\n  node [shape=box, fontname=\"monospace\"];\n");
  for (uint32_t id = 1; id <= root; id++) {
    if (!need[id]) continue;
    const dag_node *a = &d->nodes[id];
    char *label = NULL;
    if (a->nk == 0) {
      label = dag_print(d, id, names, npos);
    }
    sb_printf(&b, "  n%u [label=\"", id);
    if (label) {
      sb_put(&b, label, strlen(label));
    } else {
      sb_put(&b, dag_ops[a->op].name, strlen(dag_ops[a->op].name));
      printer pr = {d, names, npos, {NULL, 0, 0, 4096, 0, 0}};
      print_params(&pr, dag_ops[a->op].sig, d->pool + a->p, a->np);
      if (pr.b.s) sb_printf(&b, "(%s)", pr.b.s + 1);
      free(pr.b.s);
    }
    sb_printf(&b, "\\ndim %d\"];\n", a->dim);
    free(label);
    for (int c = 0; c < a->nk; c++) sb_printf(&b, "  n%u -> n%u [label=\"%d\"];\n", id, a->k[c], c);
  }
  sb_printf(&b, "}\n");
  free(need);
  return sb_done(&b);
}

/* ---- deserialization ---------------------------------------------------------------------- */

typedef struct reader {
  const char *s, *end;
  dag *d;
  uint32_t rec; /* record number, from 1 */
} reader;

static int rd_fail(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rd_fail(reader *r, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  kerr_set(&r->d->err, KEOPS_ERROR_ARGUMENT, "serialized formula, record %u: %s", r->rec, msg);
  return -1;
}

/* A decimal integer as dag_serialize prints it (optional '-', digits, no leading zeros), so
 * that one text means one DAG. */
static int rd_int(reader *r, int64_t *v) {
  const char *s = r->s;
  int neg = s < r->end && *s == '-';
  s += neg;
  if (s >= r->end || *s < '0' || *s > '9' || (*s == '0' && s + 1 < r->end && s[1] >= '0' && s[1] <= '9'))
    return rd_fail(r, "expected an integer");
  uint64_t x = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; s < r->end && *s >= '0' && *s <= '9'; s++) {
    if (x > (lim - (uint64_t)(*s - '0')) / 10) return rd_fail(r, "integer out of range");
    x = x * 10 + (uint64_t)(*s - '0');
  }
  if (neg && x == 0) return rd_fail(r, "negative zero");
  *v = neg ? (int64_t)(0 - x) : (int64_t)x;
  r->s = s;
  return 0;
}

/* The leaves' parameters, as the leaf helpers make them. */
static int rd_leaf(reader *r, int op, int dim, const int64_t *p, int np) {
  switch (op) {
  case OP_Var:
    if (np != 2 || p[0] < 0 || p[0] >= INT32_MAX || p[1] < CAT_I || p[1] > CAT_P)
      return rd_fail(r, "Var needs a position >= 0 and a category 0, 1 or 2");
    return 0;
  case OP_Zero:
    return np ? rd_fail(r, "Zero takes no parameters") : 0;
  case OP_RatCst: {
    if (np != 2 || dim != 1 || p[1] <= 0 || p[0] == 0 || p[0] == INT64_MIN)
      return rd_fail(r, "RatCst needs dim 1, a nonzero numerator and a positive denominator");
    int64_t a = p[0] < 0 ? -p[0] : p[0], b = p[1];
    while (b) {
      int64_t t = a % b;
      a = b, b = t;
    }
    return a != 1 ? rd_fail(r, "RatCst %lld/%lld is not in lowest terms", (long long)p[0],
                            (long long)p[1])
                  : 0;
  }
  case OP_Cst:
    /* any double: dag_cst's choice between Cst and RatCst is a matter of form, not safety */
    return np != 1 || dim != 1 ? rd_fail(r, "Cst needs dim 1 and one parameter") : 0;
  default:
    return rd_fail(r, "%s is not a leaf", dag_ops[op].name);
  }
}

int dag_deserialize(dag *d, const char *text, size_t len, uint32_t *root) {
  *root = 0;
  if (d->err.status != KEOPS_OK) return -1;
  reader r = {text, text + len, d, 0};
  uint32_t cap = 0, *ids = NULL; /* record number -> node id */
  int rc = -1;
  if (!text || !len) {
    r.rec = 1;
    return rd_fail(&r, "empty text");
  }
  while (r.s < r.end) {
    r.rec++;
    const char *name = r.s;
    while (r.s < r.end && *r.s != ':' && *r.s != ';') r.s++;
    int op = dag_op_lookup(name, (size_t)(r.s - name));
    if (op < 0) {
      rd_fail(&r, "unknown operation '%.*s'", (int)(r.s - name > 40 ? 40 : r.s - name), name);
      goto out;
    }
    enum dag_kind kind = dag_ops[op].kind;
    if (kind != K_EW && kind != K_ST && kind != K_LF) {
      rd_fail(&r, "%s is never a node", dag_ops[op].name);
      goto out;
    }
    int64_t dim, p[256];
    uint32_t k[DAG_MAX_KIDS];
    int nk = 0, np = 0;
    if (r.s >= r.end || *r.s++ != ':') {
      rd_fail(&r, "expected ':' after %s", dag_ops[op].name);
      goto out;
    }
    if (rd_int(&r, &dim)) goto out;
    if (dim < 1 || dim > DAG_MAX_DIM) {
      rd_fail(&r, "%s: dimension %lld is out of range [1, %d]", dag_ops[op].name, (long long)dim,
              DAG_MAX_DIM);
      goto out;
    }
    while (r.s < r.end && *r.s == ' ') {
      r.s++;
      if (r.s < r.end && *r.s == '@') {
        r.s++;
        int64_t kid;
        if (np) {
          rd_fail(&r, "a child after the parameters");
          goto out;
        }
        if (rd_int(&r, &kid)) goto out;
        if (kid < 1 || kid >= (int64_t)r.rec) {
          rd_fail(&r, "child @%lld is not an earlier record", (long long)kid);
          goto out;
        }
        if (nk == DAG_MAX_KIDS) {
          rd_fail(&r, "more than %d children", DAG_MAX_KIDS);
          goto out;
        }
        k[nk++] = ids[kid - 1];
      } else {
        if (np == 255) {
          rd_fail(&r, "more than 255 parameters");
          goto out;
        }
        if (rd_int(&r, &p[np])) goto out;
        np++;
      }
    }
    if (r.s >= r.end || *r.s++ != ';') {
      rd_fail(&r, "expected ';' at the end of the record");
      goto out;
    }
    if ((kind == K_LF) != (nk == 0)) {
      rd_fail(&r, "%s %s children", dag_ops[op].name, nk ? "takes no" : "needs");
      goto out;
    }
    if (kind == K_LF && rd_leaf(&r, op, (int)dim, p, np)) goto out;
    if (r.rec > cap) {
      uint32_t ncap = cap ? 2 * cap : 64;
      uint32_t *n = realloc(ids, sizeof *n * ncap);
      if (!n) {
        kerr_set(&d->err, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory reading a formula");
        goto out;
      }
      ids = n, cap = ncap;
    }
    uint32_t id = dag_intern(d, op, (int)dim, k, nk, p, np);
    if (!id) goto out;
    ids[r.rec - 1] = id;
  }
  *root = ids[r.rec - 1];
  rc = 0;
out:
  free(ids);
  return rc;
}
