/* Formula and alias text -> DAG: an on-demand lexer, a precedence-climbing parser with a
 * nesting limit, the call dispatch shared with the op templates (fe_call), and positioned
 * error messages in the cproc/clang style:
 *
 *   formula:1:8: error: unknown operation 'Exx'
 *     Square(Exx(x))
 *            ^
 *
 * Grammar (Python precedence, lowest first):
 *   cmp    := bar [('<' | '>' | '<=' | '>=' | '==' | '!=') bar]   (no chains: a<b<c)
 *   bar    := sum  ('|' sum)*                                     Scalprod, left assoc
 *   sum    := prod (('+' | '-') prod)*
 *   prod   := unary (('*' | '/') unary)*
 *   unary  := ('-' | '+') unary | power
 *   power  := primary ['**' unary]                                right assoc, -x**2 = -(x**2)
 *   primary:= number | $k | name | Name '(' args ')' | '(' cmp ')'
 * Binary chains are loops, so megabyte formulas do not recurse; every recursion passes
 * through `unary`, which counts the nesting. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"

#define MAX_NEST 200   /* constructs around an atom: parens, calls, unary operators */
#define MAX_PARAMS 64  /* integer parameters of one call, lists flattened */
#define SHOW_NAME 64   /* longest name quoted in a message */
#define LINE_SHOW 100  /* longer source lines are shown as a window ... */
#define LINE_WINDOW 80 /* ... of this many bytes around the column */

/* clang-format off */
enum tk {
  T_END, T_ERR, T_IDENT, T_NUM, T_PARAM,
  T_PLUS, T_MINUS, T_STAR, T_SLASH, T_POW, T_BAR,
  T_LP, T_RP, T_LB, T_RB, T_COMMA, T_ASSIGN,
  T_LT, T_GT, T_LE, T_GE, T_EQ, T_NE
};
/* clang-format on */

typedef struct token {
  enum tk kind;
  size_t at, len; /* byte offset and length in the source */
  int exact;      /* T_NUM: the value is num/den exactly, else val */
  int64_t num, den;
  double val;
  int64_t param; /* T_PARAM: k of $k */
} token;

typedef struct parser {
  dag *d;
  const char *src, *name; /* the text and its name in messages */
  size_t cur;             /* lexer position: first byte after the current token */
  token t;                /* current token */
  fe_args *args;
  const fe_scope *scope;
  kerr *e;
  int depth;
  int tmpl; /* template text: builder errors stay in the dag error for the caller */
} parser;

/* ---- messages --------------------------------------------------------------------------- */

static int min_int(size_t a, int b) { return a < (size_t)b ? (int)a : b; }

/* Formats "name:line:col: error: msg", then the source line (or an 80-byte window of it)
 * and a caret under the column. Every part is bounded, so kerr.msg never overflows and a
 * megabyte formula gives a short message. */
static void pos_error(kerr *e, keops_status st, const char *name, const char *src, size_t at,
                      const char *msg) {
  size_t ls = at, le = at, line = 1;
  while (ls > 0 && src[ls - 1] != '\n') ls--;
  while (src[le] && src[le] != '\n') le++;
  for (size_t i = 0; i < ls; i++) line += src[i] == '\n';
  size_t ws = ls, we = le;
  if (le - ls > LINE_SHOW) {
    ws = at - ls > LINE_WINDOW / 2 ? at - LINE_WINDOW / 2 : ls;
    if (le - ws < LINE_WINDOW) ws = le - LINE_WINDOW; /* near the end: a full window */
    we = le - ws > LINE_WINDOW ? ws + LINE_WINDOW : le;
  }
  char text[LINE_SHOW + 16], caret[LINE_SHOW + 16];
  size_t nt = 0, nc = 0;
  if (ws > ls) memcpy(text, "...", 3), memcpy(caret, "   ", 3), nt = nc = 3;
  for (size_t i = ws; i < we; i++) {
    unsigned char c = (unsigned char)src[i];
    text[nt++] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
  }
  if (we < le) memcpy(text + nt, "...", 3), nt += 3;
  /* tabs are copied so that the caret lines up however the terminal expands them */
  for (size_t i = ws; i < at; i++) caret[nc++] = src[i] == '\t' ? '\t' : ' ';
  text[nt] = caret[nc] = 0;
  kerr_set(e, st, "%s:%zu:%zu: error: %s\n  %s\n  %s^", name, line, at - ls + 1, msg, text, caret);
}

static void perr(parser *p, size_t at, keops_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void perr(parser *p, size_t at, keops_status st, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  pos_error(p->e, st, p->name, p->src, at, msg);
}

/* "'text'" of the current token for messages, or "end of text". */
static const char *describe(const parser *p, char *buf, size_t size) {
  if (p->t.kind == T_END) return "end of text";
  int n = min_int(p->t.len, 32);
  snprintf(buf, size, "'%.*s%s'", n, p->src + p->t.at, (size_t)n < p->t.len ? "..." : "");
  return buf;
}

static void unexpected(parser *p, const char *what) {
  char buf[48];
  if (p->t.kind != T_ERR) /* the lexer already said what is wrong */
    perr(p, p->t.at, KEOPS_ERROR_SYNTAX, "expected %s, got %s", what, describe(p, buf, sizeof buf));
}

/* ---- lexer ------------------------------------------------------------------------------ */

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_id0(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_id(char c) { return is_id0(c) || is_digit(c); }

/* m * 10^scale (m given by nd decimal digits) as a reduced num/den when both fit int64. */
static int exact_ratio(const char *digits, int nd, long scale, token *t) {
  if (nd > 38 || scale < -38 || (scale > 0 && nd + scale > 38)) return 0; /* 10^38 < 2^128 */
  unsigned __int128 m = 0, den = 1;
  for (int k = 0; k < nd; k++) m = m * 10 + (unsigned)(digits[k] - '0');
  for (long k = 0; k < scale; k++) m *= 10;
  for (long k = 0; k < -scale; k++) den *= 10;
  unsigned __int128 a = m, b = den;
  while (b) {
    unsigned __int128 r = a % b;
    a = b, b = r;
  }
  m /= a, den /= a;
  if (m > INT64_MAX || den > INT64_MAX) return 0;
  t->num = (int64_t)m, t->den = (int64_t)den;
  return 1;
}

/* A decimal literal is exactly m * 10^scale: stored as num/den when both fit int64, else as
 * the nearest double (built from digits and exponent only, so the C locale's decimal point
 * does not matter). Returns the literal's length, 0 if it is malformed. */
static size_t lex_number(const char *s, token *t) {
  char digits[128];
  size_t i = 0;
  int nd = 0, dropped = 0, frac = 0, lead = 1;
  for (int in_frac = 0;; i++) {
    if (s[i] == '.' && !in_frac) {
      in_frac = 1;
      continue;
    }
    if (!is_digit(s[i])) break;
    frac += in_frac;
    if (lead && s[i] == '0') continue;
    lead = 0;
    if (nd < (int)sizeof digits - 1)
      digits[nd++] = s[i];
    else
      dropped++; /* beyond double precision anyway */
  }
  long ex = 0;
  if (s[i] == 'e' || s[i] == 'E') {
    size_t j = i + 1;
    int neg = s[j] == '-';
    j += s[j] == '-' || s[j] == '+';
    if (!is_digit(s[j])) return 0;
    for (; is_digit(s[j]); j++) ex = ex < 100000000 ? ex * 10 + (s[j] - '0') : ex;
    ex = neg ? -ex : ex;
    i = j;
  }
  if (is_id(s[i]) || s[i] == '.') return 0; /* 2x, 1.2.3 */
  while (nd > 0 && digits[nd - 1] == '0') nd--, dropped++;
  long scale = ex - frac + dropped;
  t->exact = 1, t->num = 0, t->den = 1;
  if (nd == 0) return i;
  digits[nd] = 0;
  if (exact_ratio(digits, nd, scale, t)) return i;
  char buf[160];
  snprintf(buf, sizeof buf, "%se%ld", digits, scale);
  t->exact = 0;
  t->val = strtod(buf, NULL);
  return i;
}

static size_t lex_op(const char *s, enum tk *kind) {
  static const struct {
    char s[3];
    enum tk k;
  } ops[] = {{"**", T_POW},   {"<=", T_LE},   {">=", T_GE},  {"==", T_EQ},   {"!=", T_NE},
             {"+", T_PLUS},   {"-", T_MINUS}, {"*", T_STAR}, {"/", T_SLASH}, {"|", T_BAR},
             {"(", T_LP},     {")", T_RP},    {"[", T_LB},   {"]", T_RB},    {",", T_COMMA},
             {"=", T_ASSIGN}, {"<", T_LT},    {">", T_GT}};
  for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
    size_t n = strlen(ops[k].s);
    if (strncmp(s, ops[k].s, n) == 0) {
      *kind = ops[k].k;
      return n;
    }
  }
  return 0;
}

/* Reads the next token into p->t. Bad input becomes T_ERR with the error already set. */
static void lex(parser *p) {
  const char *s = p->src;
  size_t i = p->cur;
  while (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' ||
         s[i] == '\v')
    i++;
  token *t = &p->t;
  memset(t, 0, sizeof *t);
  t->at = i;
  if (!s[i]) {
    t->kind = T_END;
  } else if (is_id0(s[i])) {
    t->kind = T_IDENT;
    while (is_id(s[i + t->len])) t->len++;
  } else if (is_digit(s[i]) || (s[i] == '.' && is_digit(s[i + 1]))) {
    t->kind = T_NUM;
    t->len = lex_number(s + i, t);
    if (!t->len) {
      size_t n = 0;
      while (is_id(s[i + n]) || s[i + n] == '.') n++;
      t->kind = T_ERR;
      perr(p, i, KEOPS_ERROR_SYNTAX, "invalid number '%.*s'", min_int(n, 32), s + i);
    }
  } else if (s[i] == '$' && is_digit(s[i + 1])) {
    t->kind = T_PARAM;
    for (t->len = 1; is_digit(s[i + t->len]); t->len++)
      if (t->param < 1000000) t->param = t->param * 10 + (s[i + t->len] - '0');
  } else if (!(t->len = lex_op(s + i, &t->kind))) {
    unsigned char c = (unsigned char)s[i];
    t->kind = T_ERR;
    t->len = 1;
    if (c > 0x20 && c < 0x7f)
      perr(p, i, KEOPS_ERROR_SYNTAX, "unexpected character '%c'", c);
    else
      perr(p, i, KEOPS_ERROR_SYNTAX, "unexpected byte 0x%02x", c);
  }
  p->cur = i + t->len;
}

static int expect(parser *p, enum tk kind, const char *what) {
  if (p->t.kind != kind) {
    unexpected(p, what);
    return -1;
  }
  lex(p);
  return 0;
}

static int tok_is(const parser *p, const token *t, const char *word) {
  return t->kind == T_IDENT && t->len == strlen(word) && memcmp(p->src + t->at, word, t->len) == 0;
}

/* ---- building --------------------------------------------------------------------------- */

/* A failed build (id 0) left its message in the dag error: move it into a positioned error
 * at `at`. Template text leaves it in the dag, for the call that expanded the template. */
static uint32_t built(parser *p, uint32_t id, size_t at) {
  if (id) return id;
  kerr *de = dag_err(p->d);
  if (de->status == KEOPS_OK)
    kerr_set(de, KEOPS_ERROR_COMPILE, "internal error: a builder failed without a message");
  if (p->tmpl) return 0;
  perr(p, at, de->status, "%s", de->msg);
  kerr_clear(de);
  return 0;
}

static uint32_t make(parser *p, int op, const uint32_t *kids, int nk, const int64_t *params, int np,
                     size_t at) {
  return built(p, fe_call(p->d, op, kids, nk, params, np, p->args), at);
}

static uint32_t make2(parser *p, int op, uint32_t a, uint32_t b, size_t at) {
  uint32_t k[2] = {a, b};
  return make(p, op, k, 2, NULL, 0, at);
}

/* f**2 -> Square, f**n -> Pow(f, n), any other exponent -> Powf(f, e). */
static uint32_t make_pow(parser *p, uint32_t base, uint32_t ex, size_t at) {
  int64_t n, den;
  if (dag_is_rat(p->d, ex, &n, &den) && den == 1)
    return n == 2 ? make(p, OP_Square, &base, 1, NULL, 0, at)
                  : make(p, OP_Pow, &base, 1, &n, 1, at);
  return make2(p, OP_Powf, base, ex, at);
}

/* ---- expressions ------------------------------------------------------------------------ */

static uint32_t parse_expr(parser *p);
static uint32_t parse_unary(parser *p);

typedef struct binop {
  enum tk kind;
  int prec, op, swap; /* swap: a > b is LessThan(b, a) */
} binop;

static const binop *find_binop(enum tk kind) {
  static const binop ops[] = {
      {T_LT, 1, OP_LessThan, 0},    {T_GT, 1, OP_LessThan, 1}, {T_LE, 1, OP_LessOrEqual, 0},
      {T_GE, 1, OP_LessOrEqual, 1}, {T_EQ, 1, OP_Equal, 0},    {T_NE, 1, OP_NotEqual, 0},
      {T_BAR, 2, OP_Scalprod, 0},   {T_PLUS, 3, OP_Add, 0},    {T_MINUS, 3, OP_Subtract, 0},
      {T_STAR, 4, OP_Mult, 0},      {T_SLASH, 4, OP_Divide, 0}};
  for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
    if (ops[k].kind == kind) return &ops[k];
  return NULL;
}

static uint32_t parse_binary(parser *p, int minprec) {
  uint32_t lhs = parse_unary(p);
  int ncmp = 0;
  const binop *b;
  while (lhs && (b = find_binop(p->t.kind)) && b->prec >= minprec) {
    size_t at = p->t.at;
    if (b->prec == 1 && ncmp++) {
      /* Python reads a<b<c as a<b and b<c; no formula op means that */
      perr(p, at, KEOPS_ERROR_SYNTAX, "comparisons cannot be chained; use parentheses");
      return 0;
    }
    lex(p);
    uint32_t rhs = parse_binary(p, b->prec + 1);
    if (!rhs) return 0;
    lhs = b->swap ? make2(p, b->op, rhs, lhs, at) : make2(p, b->op, lhs, rhs, at);
  }
  return lhs;
}

static uint32_t parse_expr(parser *p) { return parse_binary(p, 1); }

static uint32_t parse_primary(parser *p);

static uint32_t parse_power(parser *p) {
  uint32_t base = parse_primary(p);
  if (!base || p->t.kind != T_POW) return base;
  size_t at = p->t.at;
  lex(p);
  uint32_t ex = parse_unary(p);
  return ex ? make_pow(p, base, ex, at) : 0;
}

static uint32_t parse_unary(parser *p) {
  if (p->depth >= MAX_NEST + 1) {
    perr(p, p->t.at, KEOPS_ERROR_SYNTAX, "formula nested too deeply (more than %d levels)",
         MAX_NEST);
    return 0;
  }
  p->depth++;
  uint32_t r;
  size_t at = p->t.at;
  if (p->t.kind == T_MINUS || p->t.kind == T_PLUS) {
    int minus = p->t.kind == T_MINUS;
    lex(p);
    r = parse_unary(p);
    if (r && minus) r = make(p, OP_Minus, &r, 1, NULL, 0, at);
  } else {
    r = parse_power(p);
  }
  p->depth--;
  return r;
}

/* ---- names and calls -------------------------------------------------------------------- */

static int name_eq(const char *name, const char *s, size_t len) {
  return name && strlen(name) == len && memcmp(name, s, len) == 0;
}

static uint32_t parse_name(parser *p, const token *id) {
  const char *s = p->src + id->at;
  if (p->scope)
    for (int k = 0; k < p->scope->n; k++)
      if (name_eq(p->scope->names[k], s, id->len)) return p->scope->ids[k];
  if (p->args)
    for (int pos = 0; pos < p->args->n; pos++)
      if (name_eq(p->args->name[pos], s, id->len))
        return built(p, dag_var(p->d, pos, p->args->dim[pos], p->args->cat[pos]), id->at);
  perr(p, id->at, KEOPS_ERROR_SYNTAX, "unknown variable '%.*s%s'", min_int(id->len, SHOW_NAME), s,
       id->len > SHOW_NAME ? "..." : "");
  return 0;
}

/* Number of arguments left in a call, counted on the raw text up to the matching ')' so
 * that an arity error does not depend on what the surplus arguments contain. */
static int count_rest(const parser *p) {
  int n = 1, depth = 0;
  for (const char *s = p->src + p->t.at; *s; s++) {
    if (*s == '(' || *s == '[')
      depth++;
    else if ((*s == ')' || *s == ']') && depth-- == 0)
      break;
    else if (*s == ',' && depth == 0)
      n++;
  }
  return n;
}

typedef struct call {
  int op;
  const token *name;
  uint32_t kids[DAG_MAX_KIDS];
  int nk;
  int64_t params[MAX_PARAMS];
  int np;
} call;

static const char *op_name(const call *c) { return dag_ops[c->op].name; }

static int add_param(parser *p, call *c, int64_t v, size_t at) {
  if (c->np == MAX_PARAMS) {
    perr(p, at, KEOPS_ERROR_SYNTAX, "too many integer parameters for %s (at most %d)", op_name(c),
         MAX_PARAMS);
    return -1;
  }
  c->params[c->np++] = v;
  return 0;
}

/* An integer argument is any formula that folds to an integer constant: -2, 1+1, $0-1. */
static int parse_int(parser *p, call *c, int argno) {
  size_t at = p->t.at;
  uint32_t x = parse_expr(p);
  int64_t n, den;
  if (!x) return -1;
  if (!dag_is_rat(p->d, x, &n, &den) || den != 1) {
    perr(p, at, KEOPS_ERROR_SYNTAX, "argument %d of %s must be an integer", argno + 1, op_name(c));
    return -1;
  }
  return add_param(p, c, n, at);
}

/* [a, b, ...] or (a, b, ...), possibly empty; stored as its length, then the elements. */
static int parse_list(parser *p, call *c, int argno) {
  enum tk close = p->t.kind == T_LB ? T_RB : T_RP;
  size_t at = p->t.at;
  if (p->t.kind != T_LB && p->t.kind != T_LP) {
    perr(p, at, KEOPS_ERROR_SYNTAX, "argument %d of %s must be a list of integers like [2,3]",
         argno + 1, op_name(c));
    return -1;
  }
  lex(p);
  int lenpos = c->np;
  if (add_param(p, c, 0, at)) return -1;
  while (p->t.kind != close) {
    if (parse_int(p, c, argno)) return -1;
    c->params[lenpos]++;
    if (p->t.kind == T_COMMA)
      lex(p);
    else if (p->t.kind != close)
      return unexpected(p, close == T_RB ? "',' or ']'" : "',' or ')'"), -1;
  }
  lex(p);
  return 0;
}

static int arity_error(parser *p, const call *c, int got) {
  const char *sig = dag_ops[c->op].sig, *opt = strchr(sig, '?');
  int max = (int)strlen(sig) - (opt != NULL), min = opt ? (int)(opt - sig) : max;
  if (min == max)
    perr(p, c->name->at, KEOPS_ERROR_SYNTAX, "%s takes %d argument%s, got %d", op_name(c), min,
         min == 1 ? "" : "s", got);
  else
    perr(p, c->name->at, KEOPS_ERROR_SYNTAX, "%s takes %d to %d arguments, got %d", op_name(c), min,
         max, got);
  return -1;
}

/* The arguments of a call, after '(' and up to and including ')', as its sig says. */
static int parse_args(parser *p, call *c) {
  const char *sig = dag_ops[c->op].sig;
  int nargs = 0;
  const char *s = sig;
  while (p->t.kind != T_RP || nargs > 0) {
    if (*s == '?') s++;
    if (!*s) return arity_error(p, c, nargs + count_rest(p));
    if (*s == 'f') {
      uint32_t x = parse_expr(p);
      if (!x) return -1;
      c->kids[c->nk++] = x;
    } else if (*s == 'i' ? parse_int(p, c, nargs) : parse_list(p, c, nargs)) {
      return -1;
    }
    s++, nargs++;
    if (p->t.kind == T_RP) break;
    if (p->t.kind != T_COMMA) {
      char what[64];
      snprintf(what, sizeof what, "',' or ')' after argument %d of %s", nargs, op_name(c));
      return unexpected(p, what), -1;
    }
    lex(p);
  }
  if (*s && *s != '?') return arity_error(p, c, nargs);
  lex(p);
  return 0;
}

static uint32_t parse_call(parser *p, const token *name) {
  const char *s = p->src + name->at;
  int n = min_int(name->len, SHOW_NAME);
  if (tok_is(p, name, "Vi") || tok_is(p, name, "Vj") || tok_is(p, name, "Pm")) {
    perr(p, name->at, KEOPS_ERROR_SYNTAX,
         "%.*s(...) declares an alias; write it in the alias list or use Var(pos,dim,cat)", n, s);
    return 0;
  }
  call c = {.op = dag_op_lookup(s, name->len), .name = name};
  if (c.op < 0 || !dag_ops[c.op].sig) {
    perr(p, name->at, KEOPS_ERROR_SYNTAX, "unknown operation '%.*s%s'", n, s,
         name->len > SHOW_NAME ? "..." : "");
    return 0;
  }
  lex(p); /* '(' */
  if (parse_args(p, &c)) return 0;
  return make(p, c.op, c.kids, c.nk, c.params, c.np, name->at);
}

static uint32_t parse_primary(parser *p) {
  token t = p->t;
  switch (t.kind) {
  case T_NUM:
    lex(p);
    return built(p, t.exact ? dag_rat(p->d, t.num, t.den) : dag_cst(p->d, t.val), t.at);
  case T_PARAM:
    lex(p);
    if (!p->scope || t.param >= p->scope->np) {
      perr(p, t.at, KEOPS_ERROR_SYNTAX, "unknown template parameter '$%lld'", (long long)t.param);
      return 0;
    }
    return built(p, dag_int(p->d, p->scope->params[t.param]), t.at);
  case T_LP: {
    lex(p);
    uint32_t x = parse_expr(p);
    return x && expect(p, T_RP, "')'") == 0 ? x : 0;
  }
  case T_IDENT: lex(p); return p->t.kind == T_LP ? parse_call(p, &t) : parse_name(p, &t);
  default: unexpected(p, "a formula"); return 0;
  }
}

/* ---- entry points ----------------------------------------------------------------------- */

static uint32_t parse_all(parser *p) {
  lex(p);
  uint32_t id = parse_expr(p);
  if (id && p->t.kind != T_END) {
    char buf[48];
    if (p->t.kind != T_ERR)
      perr(p, p->t.at, KEOPS_ERROR_SYNTAX, "unexpected %s after the formula",
           describe(p, buf, sizeof buf));
    return 0;
  }
  return id;
}

uint32_t fe_parse(dag *d, const char *text, const char *src_name, fe_args *args,
                  const fe_scope *scope, kerr *e) {
  kerr scratch;
  if (!e) e = &scratch, kerr_clear(e);
  if (!src_name) src_name = "formula";
  if (!text || !d) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "%s is NULL", !text ? src_name : "dag");
    return 0;
  }
  if (!dag_partial(d)) dag_set_partial(d, fe_partial);
  parser p = {.d = d, .src = text, .name = src_name, .args = args, .scope = scope, .e = e};
  uint32_t id = parse_all(&p);
  if (!id && e->status == KEOPS_OK)
    kerr_set(e, KEOPS_ERROR_COMPILE, "%s: internal parser error", src_name);
  return id;
}

uint32_t fe_template(dag *d, const char *text, const uint32_t *kids, int nk, uint32_t r,
                     const int64_t *params, int np) {
  static const char *const xyz[] = {"x", "y", "z"};
  const char *names[4];
  uint32_t ids[4];
  int n = 0;
  for (int k = 0; k < nk && k < 3; k++) {
    if (!kids[k]) return 0;
    names[n] = xyz[k], ids[n++] = kids[k];
  }
  if (r) names[n] = "r", ids[n++] = r;
  fe_scope sc = {names, ids, n, params, np};
  kerr le;
  kerr_clear(&le);
  parser p = {.d = d, .src = text, .name = "template", .scope = &sc, .e = &le, .tmpl = 1};
  uint32_t id = parse_all(&p);
  /* a template that does not parse is a bug in ops.def, not in the user's formula */
  if (!id && le.status != KEOPS_OK)
    kerr_set(dag_err(d), KEOPS_ERROR_COMPILE, "internal template error: %s", le.msg);
  return id;
}

uint32_t fe_partial(dag *d, uint32_t id, int k) {
  dag_node n = *dag_get(d, id); /* copies: instantiating may move the arena and the pool */
  int64_t p[256];
  memcpy(p, dag_params(d, id), sizeof *p * n.np);
  return fe_template(d, dag_ops[n.op].t[k], n.k, n.nk, id, p, n.np);
}

/* ---- calls ------------------------------------------------------------------------------ */

static uint32_t fail(dag *d, keops_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static uint32_t fail(dag *d, keops_status st, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  kerr_set(dag_err(d), st, "%s", msg);
  return 0;
}

static int check_params(dag *d, int op, int np, int want) {
  if (np == want) return 0;
  fail(d, KEOPS_ERROR_COMPILE, "internal error: %s given %d integer parameters, expects %d",
       dag_ops[op].name, np, want);
  return -1;
}

static uint32_t call_leaf(dag *d, int op, const int64_t *q, int np, fe_args *args) {
  switch (op) {
  case OP_Var:
    if (check_params(d, op, np, 3)) return 0;
    if (q[0] < 0 || q[0] >= FE_MAX_ARGS)
      return fail(d, KEOPS_ERROR_DIMENSION, "Var: position %lld is out of range [0, %d]",
                  (long long)q[0], FE_MAX_ARGS - 1);
    if (q[1] < 1 || q[1] > DAG_MAX_DIM)
      return fail(d, KEOPS_ERROR_DIMENSION, "Var: dimension %lld is out of range [1, %d]",
                  (long long)q[1], DAG_MAX_DIM);
    if (q[2] < CAT_I || q[2] > CAT_P)
      return fail(d, KEOPS_ERROR_DIMENSION, "Var: category %lld is not 0 (Vi), 1 (Vj) or 2 (Pm)",
                  (long long)q[2]);
    if (args && fe_args_declare(args, (int)q[0], (int)q[1], (int)q[2], NULL, 0, dag_err(d)))
      return 0;
    return dag_var(d, (int)q[0], (int)q[1], (int)q[2]);
  case OP_Zero:
    if (check_params(d, op, np, 1)) return 0;
    if (q[0] < 1 || q[0] > DAG_MAX_DIM)
      return fail(d, KEOPS_ERROR_DIMENSION, "Zero: dimension %lld is out of range [1, %d]",
                  (long long)q[0], DAG_MAX_DIM);
    return dag_zero(d, (int)q[0]);
  case OP_RatCst:
    if (check_params(d, op, np, 2)) return 0;
    if (q[1] == 0) return fail(d, KEOPS_ERROR_DIMENSION, "RatCst: division by zero");
    return dag_rat(d, q[0], q[1]);
  default:
    return fail(d, KEOPS_ERROR_COMPILE, "internal error: %s cannot be built from a call",
                dag_ops[op].name);
  }
}

/* WeightedSqNorm(s, f) picks its form from the weight's dim: 1 isotropic, dim f diagonal,
 * (dim f)^2 a full symmetric matrix. */
static uint32_t weighted_sqnorm(dag *d, const uint32_t *kids, fe_args *args) {
  int64_t ds = dag_get(d, kids[0])->dim, df = dag_get(d, kids[1])->dim;
  int op = ds == 1 ? OP_SqNormIso : ds == df ? OP_SqNormDiag : ds == df * df ? OP_SymSqNorm : -1;
  if (op < 0)
    return fail(d, KEOPS_ERROR_DIMENSION,
                "WeightedSqNorm: the weight has dim %lld; expected 1, %lld or %lld (dim of the "
                "vector or its square)",
                (long long)ds, (long long)df, (long long)(df * df));
  return fe_call(d, op, kids, 2, NULL, 0, args);
}

/* Product of the list of `len` dims at q, or -1 when one is below 1 or it exceeds the dim
 * limit (so it matches no formula dim). */
static int64_t dims_product(const int64_t *q, int64_t len) {
  int64_t prod = 1;
  for (int64_t k = 0; k < len; k++) {
    if (q[k] < 1 || q[k] > DAG_MAX_DIM) return -1;
    prod *= q[k];
    if (prod > DAG_MAX_DIM) return -1;
  }
  return prod;
}

/* Kron(f, g, dimf, dimg) = np.kron(f.reshape(dimf), g.reshape(dimg)).ravel(), built as KeOps
 * does (keopscore/formulas/maths/Kron.py): TensorDot(f, g, dimf, dimg, [], [], perm) with
 * perm = [0, 2, 4, ..., 2n-2, 1, 3, ..., 2n-1]. In KeOps's TensorDot, perm[k] is the output
 * position of the k-th kept axis (axes of f, then of g): the result is
 * T.transpose(argsort(perm)), so output axes are f0, g0, f1, g1, ... */
static uint32_t kron(dag *d, const uint32_t *kids, const int64_t *q, int np) {
  int64_t n = np > 0 ? q[0] : -1, m = n >= 0 && n + 1 < np ? q[n + 1] : -1;
  if (n < 0 || m < 0 || n + m + 2 != np)
    return fail(d, KEOPS_ERROR_COMPILE, "internal error: malformed Kron parameters");
  if (n != m)
    return fail(d, KEOPS_ERROR_DIMENSION,
                "Kron: the dimension lists have different lengths (%lld and %lld)", (long long)n,
                (long long)m);
  for (int a = 0; a < 2; a++) {
    int64_t prod = dims_product(q + a * (n + 1) + 1, n), dim = dag_get(d, kids[a])->dim;
    if (prod != dim)
      return fail(d, KEOPS_ERROR_DIMENSION,
                  "Kron: the dims of argument %d do not multiply to its dim %lld", a + 1,
                  (long long)dim);
  }
  if (np > 2 * MAX_PARAMS) return fail(d, KEOPS_ERROR_DIMENSION, "Kron: too many axes");
  int64_t t[4 * MAX_PARAMS + 8];
  int nt = 0;
  for (int k = 0; k < np; k++) t[nt++] = q[k]; /* dimf and dimg, with their lengths */
  t[nt++] = 0, t[nt++] = 0;                    /* nothing contracted */
  t[nt++] = 2 * n;
  for (int64_t k = 0; k < 2 * n; k++) t[nt++] = k < n ? 2 * k : 2 * (k - n) + 1;
  return dag_make(d, OP_TensorDot, kids, 2, t, nt);
}

static uint32_t call_sugar(dag *d, int op, const uint32_t *kids, int nk, const int64_t *q, int np,
                           fe_args *args) {
  switch (op) {
  case OP_IntCst: return check_params(d, op, np, 1) ? 0 : dag_int(d, q[0]);
  case OP_WeightedSqNorm: return weighted_sqnorm(d, kids, args);
  case OP_Kron: return kron(d, kids, q, np);
  case OP_Laplacian: /* its template would fail inside Grad, with a message about Grad */
    if (dag_get(d, kids[0])->dim != 1)
      return fail(d, KEOPS_ERROR_DIMENSION, "Laplacian: only scalar formulas have one, got dim %d",
                  dag_get(d, kids[0])->dim);
    return fe_template(d, dag_ops[op].t[0], kids, nk, 0, q, np);
  default:
    if (!dag_ops[op].t[0])
      return fail(d, KEOPS_ERROR_COMPILE, "internal error: %s has no expansion", dag_ops[op].name);
    return fe_template(d, dag_ops[op].t[0], kids, nk, 0, q, np);
  }
}

/* Grad(f, v) without e: e is a new variable after all the others, of the dim of f and the
 * other category of v (KeOps's Grad with newind). */
static uint32_t grad_new_var(dag *d, uint32_t f, uint32_t v, fe_args *args) {
  const dag_node *vn = dag_get(d, v);
  if (vn->op != OP_Var)
    return fail(d, KEOPS_ERROR_DIMENSION, "Grad: the second argument must be a variable");
  int cat = (int)dag_params(d, v)[1];
  if (cat == CAT_P)
    return fail(d, KEOPS_ERROR_DIMENSION, "Grad(f, v) without e needs v to be a Vi or Vj variable");
  if (!args)
    return fail(d, KEOPS_ERROR_COMPILE, "internal error: Grad(f, v) without an argument list");
  int pos = args->n, dim = dag_get(d, f)->dim;
  if (pos >= FE_MAX_ARGS)
    return fail(d, KEOPS_ERROR_DIMENSION, "Grad(f, v): no position left for the new variable e");
  if (fe_args_declare(args, pos, dim, 1 - cat, NULL, 0, dag_err(d))) return 0;
  return ad_grad(d, f, v, dag_var(d, pos, dim, 1 - cat));
}

static uint32_t call_ad(dag *d, int op, const uint32_t *k, int nk, fe_args *args) {
  switch (op) {
  case OP_Grad: return nk == 3 ? ad_grad(d, k[0], k[1], k[2]) : grad_new_var(d, k[0], k[1], args);
  case OP_Diff: return ad_diff(d, k[0], k[1], k[2]);
  case OP_GradMatrix: return ad_grad_matrix(d, k[0], k[1]);
  case OP_Divergence: return ad_divergence(d, k[0], k[1]);
  default:
    return fail(d, KEOPS_ERROR_COMPILE, "internal error: %s is not an autodiff form",
                dag_ops[op].name);
  }
}

uint32_t fe_call(dag *d, int op, const uint32_t *kids, int nk, const int64_t *params, int np,
                 fe_args *args) {
  /* builders may memcpy from these even when empty, and memcpy(_, NULL, 0) is undefined */
  int64_t no_param = 0;
  uint32_t no_kid = 0;
  if (!dag_partial(d)) dag_set_partial(d, fe_partial);
  if (!params) params = &no_param;
  if (!kids) kids = &no_kid;
  for (int k = 0; k < nk; k++)
    if (!kids[k]) return 0;
  if (op < 0 || op >= OP_COUNT || nk < 0 || nk > DAG_MAX_KIDS || np < 0 || np > 255)
    return fail(d, KEOPS_ERROR_COMPILE, "internal error: bad call of operation %d", op);
  const char *sig = dag_ops[op].sig;
  int nf = 0;
  for (const char *s = sig; s && *s; s++) nf += *s == 'f';
  if (sig && nk != nf && !(op == OP_Grad && nk == 2))
    return fail(d, KEOPS_ERROR_COMPILE, "internal error: %s given %d formulas", dag_ops[op].name,
                nk);
  switch (dag_ops[op].kind) {
  case K_EW:
  case K_ST: return dag_make(d, op, kids, nk, params, np);
  case K_LF: return call_leaf(d, op, params, np, args);
  case K_SG: return call_sugar(d, op, kids, nk, params, np, args);
  case K_AD: return call_ad(d, op, kids, nk, args);
  }
  return 0;
}

/* ---- arguments and aliases -------------------------------------------------------------- */

static const char *cat_name(int cat) { return cat == CAT_I ? "Vi" : cat == CAT_J ? "Vj" : "Pm"; }

enum { DECL_OK, DECL_RANGE, DECL_POS, DECL_NAME, DECL_OOM };

/* fe_args_declare, telling which part failed so that alias errors point at it. */
static int declare(fe_args *a, int pos, int dim, int cat, const char *name, size_t len, kerr *e) {
  if (pos < 0 || pos >= FE_MAX_ARGS || dim < 1 || dim > DAG_MAX_DIM || cat < CAT_I || cat > CAT_P) {
    kerr_set(e, KEOPS_ERROR_DIMENSION,
             "cannot declare Var(%d,%d,%d): position must be in [0, %d], "
             "dim in [1, %d], category 0, 1 or 2",
             pos, dim, cat, FE_MAX_ARGS - 1, DAG_MAX_DIM);
    return DECL_RANGE;
  }
  int n = min_int(len, SHOW_NAME);
  if (name)
    for (int q = 0; q < a->n; q++)
      if (q != pos && name_eq(a->name[q], name, len)) {
        kerr_set(e, KEOPS_ERROR_DIMENSION, "'%.*s' is declared twice (positions %d and %d)", n,
                 name, q, pos);
        return DECL_NAME;
      }
  if (pos < a->n && a->dim[pos] && (a->dim[pos] != dim || a->cat[pos] != cat)) {
    kerr_set(e, KEOPS_ERROR_DIMENSION,
             "position %d is declared twice with different dims or categories: %s(%d,%d) and "
             "%s(%d,%d)",
             pos, cat_name(a->cat[pos]), pos, a->dim[pos], cat_name(cat), pos, dim);
    return DECL_POS;
  }
  const char *old = pos < a->n ? a->name[pos] : NULL;
  if (name && old && !name_eq(old, name, len)) {
    kerr_set(e, KEOPS_ERROR_DIMENSION, "position %d has two names, '%s' and '%.*s'", pos, old, n,
             name);
    return DECL_NAME;
  }
  char *copy = NULL;
  if (name && !old) {
    if (!(copy = malloc(len + 1))) {
      kerr_set(e, KEOPS_ERROR_OUT_OF_MEMORY, "out of memory while declaring '%.*s'", n, name);
      return DECL_OOM;
    }
    memcpy(copy, name, len);
    copy[len] = 0;
  }
  for (int q = a->n; q <= pos; q++) a->dim[q] = 0, a->cat[q] = 0, a->name[q] = NULL;
  if (pos >= a->n) a->n = pos + 1;
  if (copy) a->name[pos] = copy;
  a->dim[pos] = dim, a->cat[pos] = cat;
  return DECL_OK;
}

int fe_args_declare(fe_args *a, int pos, int dim, int cat, const char *name, size_t name_len,
                    kerr *e) {
  return declare(a, pos, dim, cat, name, name_len, e) == DECL_OK ? 0 : -1;
}

void fe_args_free(fe_args *a) {
  if (!a) return;
  for (int q = 0; q < a->n && q < FE_MAX_ARGS; q++) {
    free(a->name[q]);
    a->name[q] = NULL;
  }
}

/* A signed integer literal of an alias, with its position for messages. */
static int alias_int(parser *p, int64_t *v, size_t *at) {
  *at = p->t.at;
  int neg = p->t.kind == T_MINUS;
  if (neg) lex(p);
  if (p->t.kind != T_NUM || !p->t.exact || p->t.den != 1) return unexpected(p, "an integer"), -1;
  *v = neg ? -p->t.num : p->t.num;
  lex(p);
  return 0;
}

/* "name = Cat(args)" or "Cat(args)": the name (len 0 if none) and the category token. */
static int alias_head(parser *p, token *name, token *cat) {
  memset(name, 0, sizeof *name);
  if (p->t.kind != T_IDENT) return unexpected(p, "an alias such as 'x = Vi(3)'"), -1;
  *cat = p->t;
  lex(p);
  if (p->t.kind == T_ASSIGN) {
    *name = *cat;
    lex(p);
    if (p->t.kind != T_IDENT) return unexpected(p, "Vi, Vj, Pm or Var"), -1;
    *cat = p->t;
    lex(p);
  }
  if (p->t.kind != T_LP) return unexpected(p, name->len ? "'('" : "'=' or '('"), -1;
  lex(p);
  return 0;
}

static int check_alias_name(parser *p, const token *name) {
  const char *s = p->src + name->at;
  int n = min_int(name->len, SHOW_NAME);
  if (dag_op_lookup(s, name->len) >= 0) {
    perr(p, name->at, KEOPS_ERROR_SYNTAX, "'%.*s' is an operation name and cannot name a variable",
         n, s);
    return -1;
  }
  if (tok_is(p, name, "Vi") || tok_is(p, name, "Vj") || tok_is(p, name, "Pm")) {
    perr(p, name->at, KEOPS_ERROR_SYNTAX, "'%.*s' is reserved and cannot name a variable", n, s);
    return -1;
  }
  return 0;
}

int fe_parse_alias(fe_args *a, const char *text, int index, kerr *e) {
  char src_name[32];
  snprintf(src_name, sizeof src_name, "alias[%d]", index);
  if (!text || !a) {
    kerr_set(e, KEOPS_ERROR_ARGUMENT, "%s is NULL", !text ? src_name : "the argument list");
    return -1;
  }
  parser p = {.src = text, .name = src_name, .e = e};
  token name, cat;
  lex(&p);
  if (alias_head(&p, &name, &cat)) return -1;
  int c = tok_is(&p, &cat, "Vi")    ? CAT_I
          : tok_is(&p, &cat, "Vj")  ? CAT_J
          : tok_is(&p, &cat, "Pm")  ? CAT_P
          : tok_is(&p, &cat, "Var") ? 3
                                    : -1;
  if (c < 0) {
    perr(&p, cat.at, KEOPS_ERROR_SYNTAX,
         "unknown variable category '%.*s' (expected Vi, Vj, Pm or Var)",
         min_int(cat.len, SHOW_NAME), text + cat.at);
    return -1;
  }
  int64_t v[3];
  size_t at[3];
  int nv = 0;
  while (nv < 3 && p.t.kind != T_RP) {
    if (nv && expect(&p, T_COMMA, "',' or ')'")) return -1;
    if (alias_int(&p, &v[nv], &at[nv])) return -1;
    nv++;
  }
  if (expect(&p, T_RP, "')'")) return -1;
  if (p.t.kind != T_END) {
    char buf[48];
    if (p.t.kind != T_ERR)
      perr(&p, p.t.at, KEOPS_ERROR_SYNTAX, "unexpected %s after the alias",
           describe(&p, buf, sizeof buf));
    return -1;
  }
  if (c == 3 && nv != 3) {
    perr(&p, cat.at, KEOPS_ERROR_SYNTAX, "Var takes 3 arguments (pos, dim, cat), got %d", nv);
    return -1;
  }
  if (c != 3 && (nv < 1 || nv > 2)) {
    perr(&p, cat.at, KEOPS_ERROR_SYNTAX, "%s takes 1 or 2 arguments (dim or pos, dim), got %d",
         cat_name(c), nv);
    return -1;
  }
  /* which number is the position, the dim and the category; an alias without position
   * takes its index in the list */
  int64_t pos = nv == 1 ? index : v[0], dim = v[nv == 1 ? 0 : 1], ct = c == 3 ? v[2] : c;
  size_t pos_at = nv == 1 ? cat.at : at[0], dim_at = at[nv == 1 ? 0 : 1];
  size_t cat_at = c == 3 ? at[2] : cat.at;
  if (name.len && check_alias_name(&p, &name)) return -1;
  if (pos < 0 || pos >= FE_MAX_ARGS) {
    perr(&p, pos_at, KEOPS_ERROR_DIMENSION, "position %lld is out of range [0, %d]", (long long)pos,
         FE_MAX_ARGS - 1);
    return -1;
  }
  if (dim < 1 || dim > DAG_MAX_DIM) {
    perr(&p, dim_at, KEOPS_ERROR_DIMENSION, "dimension %lld is out of range [1, %d]",
         (long long)dim, DAG_MAX_DIM);
    return -1;
  }
  if (ct < CAT_I || ct > CAT_P) {
    perr(&p, cat_at, KEOPS_ERROR_DIMENSION, "category %lld is not 0 (Vi), 1 (Vj) or 2 (Pm)",
         (long long)ct);
    return -1;
  }
  kerr de;
  kerr_clear(&de);
  int r = declare(a, (int)pos, (int)dim, (int)ct, name.len ? text + name.at : NULL, name.len, &de);
  if (r == DECL_OK) return 0;
  perr(&p, r == DECL_NAME ? name.at : r == DECL_POS ? pos_at : cat.at, de.status, "%s", de.msg);
  return -1;
}
