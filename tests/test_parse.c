/* The front end's text layer (parse.c): lexer, precedence, literals, calls of every op row,
 * aliases, positioned error messages, templates, and robustness against deep, huge and
 * random input. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "testutil.h"

/* positions 0..8 */
static const char *const ALIASES[] = {"x = Vi(3)", "y = Vj(3)", "a = Vj(1)",
                                      "p = Pm(1)", "b = Vi(1)", "z = Vj(2)",
                                      "m = Pm(9)", "u = Vi(6)", "w = Vj(4)"};
#define NALIASES ((int)(sizeof ALIASES / sizeof *ALIASES))

typedef struct env {
  dag *d;
  fe_args args;
  kerr e;
} env;

static env *env_new(void) {
  env *v = calloc(1, sizeof *v);
  v->d = dag_new();
  for (int i = 0; i < NALIASES; i++) {
    ck_assert_int_eq(fe_parse_alias(&v->args, ALIASES[i], i, &v->e), 0);
  }
  return v;
}

static void env_free(env *v) {
  fe_args_free(&v->args);
  dag_free(v->d);
  free(v);
}

static uint32_t try_parse(env *v, const char *text) {
  kerr_clear(&v->e);
  uint32_t id = fe_parse(v->d, text, "formula", &v->args, NULL, &v->e);
  ck_assert_msg(!id == (v->e.status != KEOPS_OK), "'%s': id %u but status %d", text, id,
                v->e.status);
  return id;
}

static uint32_t parse(env *v, const char *text) {
  uint32_t id = try_parse(v, text);
  ck_assert_msg(id, "'%s' failed: %s", text, v->e.msg);
  return id;
}

/* The whole message of a failing parse must be exactly `msg`. */
static void expect_error(env *v, const char *text, keops_status st, const char *msg) {
  ck_assert_msg(!try_parse(v, text), "'%s' parsed", text);
  ck_assert_msg(v->e.status == st, "'%s': status %d, expected %d (%s)", text, v->e.status, st,
                v->e.msg);
  ck_assert_str_eq(v->e.msg, msg);
}

/* For messages that come from the DAG builder: the position, the text and the caret. */
static void expect_error_at(env *v, const char *text, keops_status st, const char *head,
                            const char *tail) {
  ck_assert_msg(!try_parse(v, text), "'%s' parsed", text);
  ck_assert_msg(v->e.status == st, "'%s': status %d, expected %d (%s)", text, v->e.status, st,
                v->e.msg);
  ck_assert_msg(strncmp(v->e.msg, head, strlen(head)) == 0, "'%s': %s", text, v->e.msg);
  size_t n = strlen(v->e.msg), t = strlen(tail);
  ck_assert_msg(n >= t && strcmp(v->e.msg + n - t, tail) == 0, "'%s': %s", text, v->e.msg);
}

static int op_of(env *v, uint32_t id) { return dag_get(v->d, id)->op; }

/* ---- round trips and precedence --------------------------------------------------------- */

START_TEST(test_round_trip) {
  static const char *const F[] = {"Square(p-a)*Exp(x+y)",
                                  "x+y",
                                  "x-(y-x)",
                                  "-x**2",
                                  "(x|y)*a",
                                  "Elem(x,1)/Sum(y)",
                                  "Pow(x,3)+Powf(x,a)",
                                  "Extract(u,1,3)*RatCst(-1,3)",
                                  "Sqrt(a)*0.25",
                                  "1e-30*a",
                                  "TensorDot(u,w,[2,3],[2,2],[0],[0],[1,0])",
                                  "Concat(x,y)",
                                  "LessThan(a,b)+(a<=b)",
                                  "IfElse(a,x,y)",
                                  "Grad(Exp(x|y),x,b)",
                                  "Var(2,1,1)*Var(9,2,0)",
                                  "ClampInt(x,-1,2)",
                                  "SumT(a,3)-x",
                                  "a-(b-(a-b))",
                                  "x/(y/x)",
                                  "Minus(x)*y"};
  env *v = env_new();
  for (size_t k = 0; k < sizeof F / sizeof *F; k++) {
    uint32_t id = parse(v, F[k]);
    char *canon = dag_print(v->d, id, NULL, 0);
    ck_assert_uint_eq(parse(v, canon), id);
    char *named = dag_print(v->d, id, (const char *const *)v->args.name, v->args.n);
    ck_assert_msg(parse(v, named) == id, "'%s' printed as '%s'", F[k], named);
    free(canon);
    free(named);
  }
  ck_assert_uint_eq(parse(v, "x+y"), parse(v, " x  +\n\ty "));
  ck_assert_uint_eq(parse(v, "Exp( x )"), parse(v, "Exp(x)"));
  env_free(v);
}
END_TEST

START_TEST(test_precedence) {
  static const char *const SAME[][2] = {{"-x**2", "Minus(Square(x))"},
                                        {"a*x|y", "Scalprod(Mult(a,x),y)"},
                                        {"x|y<a", "LessThan(Scalprod(x,y),a)"},
                                        {"2*x**-1", "Mult(2,Pow(x,-1))"},
                                        {"x**y**a", "Powf(x,Powf(y,a))"},
                                        {"x-y-x", "Subtract(Subtract(x,y),x)"},
                                        {"x/y/a", "Divide(Divide(x,y),a)"},
                                        {"x+y*a", "Add(x,Mult(y,a))"},
                                        {"a>b", "LessThan(b,a)"},
                                        {"a>=b", "LessOrEqual(b,a)"},
                                        {"a<=b", "LessOrEqual(a,b)"},
                                        {"a==b", "Equal(a,b)"},
                                        {"a!=b", "NotEqual(a,b)"},
                                        {"a+b<a*b", "LessThan(Add(a,b),Mult(a,b))"},
                                        {"(x|y)|a", "Scalprod(Scalprod(x,y),a)"},
                                        {"+x", "x"},
                                        {"x*-y", "Mult(x,Minus(y))"},
                                        {"-x*y", "Mult(Minus(x),y)"},
                                        {"x**2", "Square(x)"},
                                        {"x**2.0", "Square(x)"},
                                        {"x**3", "Pow(x,3)"},
                                        {"x**(1+2)", "Pow(x,3)"},
                                        {"x**0.5", "Powf(x,RatCst(1,2))"},
                                        {"x**a", "Powf(x,a)"},
                                        {"2**-x", "Powf(2,Minus(x))"},
                                        {"a*-b**2", "Mult(a,Minus(Square(b)))"}};
  env *v = env_new();
  for (size_t k = 0; k < sizeof SAME / sizeof *SAME; k++)
    ck_assert_msg(parse(v, SAME[k][0]) == parse(v, SAME[k][1]), "%s != %s", SAME[k][0], SAME[k][1]);
  /* the exponent picks the op */
  ck_assert_int_eq(op_of(v, parse(v, "x**2")), OP_Square);
  ck_assert_int_eq(op_of(v, parse(v, "x**3")), OP_Pow);
  ck_assert_int_eq(dag_params(v->d, parse(v, "x**3"))[0], 3);
  ck_assert_int_eq(op_of(v, parse(v, "x**0.5")), OP_Powf);
  ck_assert_int_eq(op_of(v, parse(v, "-x**2")), OP_Minus);
  ck_assert_int_eq(op_of(v, parse(v, "a*x|y")), OP_Scalprod);
  ck_assert_int_eq(op_of(v, parse(v, "x|y<a")), OP_LessThan);
  ck_assert_uint_ne(parse(v, "-x**2"), parse(v, "(-x)**2"));
  ck_assert_uint_ne(parse(v, "x-y-x"), parse(v, "x-(y-x)"));
  expect_error(
      v, "a<b<a", KEOPS_ERROR_SYNTAX,
      "formula:1:4: error: comparisons cannot be chained; use parentheses\n  a<b<a\n     ^");
  env_free(v);
}
END_TEST

/* ---- literals --------------------------------------------------------------------------- */

static void expect_rat(env *v, const char *text, int64_t num, int64_t den) {
  int64_t n = 0, d = 0;
  ck_assert_msg(dag_is_rat(v->d, parse(v, text), &n, &d) && n == num && d == den,
                "'%s' is %lld/%lld, expected %lld/%lld", text, (long long)n, (long long)d,
                (long long)num, (long long)den);
}

static void expect_cst(env *v, const char *text, double val) {
  uint32_t id = parse(v, text);
  ck_assert_int_eq(op_of(v, id), OP_Cst);
  double got;
  memcpy(&got, dag_params(v->d, id), sizeof got);
  ck_assert_msg(got == val, "'%s' is %.17g", text, got);
}

START_TEST(test_literals) {
  env *v = env_new();
  expect_rat(v, "0.1", 1, 10);
  expect_rat(v, "2.50", 5, 2);
  expect_rat(v, "1e3", 1000, 1);
  expect_rat(v, "1.5E-3", 3, 2000);
  expect_rat(v, ".5", 1, 2);
  expect_rat(v, "5.", 5, 1);
  expect_rat(v, "007", 7, 1);
  expect_rat(v, "0.1000000000000000000000000000", 1, 10);
  expect_rat(v, "12.5e+1", 125, 1);
  expect_rat(v, "9223372036854775807", INT64_MAX, 1);
  expect_rat(v, "0.000000000000000001", 1, 1000000000000000000);
  expect_rat(v, "-0.25", -1, 4);
  expect_rat(v, "12345678901234567890e-10", 1234567890123456789, 1000000000);
  expect_rat(v, "0.5e-17", 1, 200000000000000000);
  expect_cst(v, "0.0000000000000000000000000000000005", 5e-34);
  expect_rat(v, "0.0", 0, 1);
  expect_cst(v, "1e30", 1e30);
  expect_cst(v, "9223372036854775808", 9223372036854775808.0);
  expect_cst(v, "123456789012345678901234567890", 123456789012345678901234567890.0);
  expect_cst(v, "0.00000000000000000000123", 1.23e-21);
  expect_cst(v, "1e999", INFINITY);
  expect_error(v, "2x", KEOPS_ERROR_SYNTAX, "formula:1:1: error: invalid number '2x'\n  2x\n  ^");
  expect_error(v, "x*1e", KEOPS_ERROR_SYNTAX,
               "formula:1:3: error: invalid number '1e'\n  x*1e\n    ^");
  expect_error(v, "1.2.3", KEOPS_ERROR_SYNTAX,
               "formula:1:1: error: invalid number '1.2.3'\n  1.2.3\n  ^");
  env_free(v);
}
END_TEST

START_TEST(test_int_args) {
  env *v = env_new();
  ck_assert_uint_eq(parse(v, "Elem(x,1+1)"), parse(v, "Elem(x,2)"));
  ck_assert_uint_eq(parse(v, "Pow(x,-2)"), parse(v, "Pow(x,0-2)"));
  ck_assert_uint_eq(parse(v, "Pow(x,-2)"), parse(v, "x**-2"));
  ck_assert_uint_eq(parse(v, "Pow(x,3)"), parse(v, "Pow(x,6/2)"));
  ck_assert_uint_eq(parse(v, "TensorDot(u,w,(2,3),(2,2,),[0],[0])"),
                    parse(v, "TensorDot(u,w,[2,3],[2,2],[0],[0])"));
  ck_assert_uint_eq(parse(v, "TensorDot(u,w,[2,3],[2,2],[0],[0])"),
                    parse(v, "TensorDot(u,w,[2,3],[2,2],[0],[0],[0,1])"));
  expect_error(
      v, "Elem(x,a)", KEOPS_ERROR_SYNTAX,
      "formula:1:8: error: argument 2 of Elem must be an integer\n  Elem(x,a)\n         ^");
  expect_error(
      v, "Elem(x,0.5)", KEOPS_ERROR_SYNTAX,
      "formula:1:8: error: argument 2 of Elem must be an integer\n  Elem(x,0.5)\n         ^");
  expect_error(
      v, "TensorDot(u,w,3,[2,2],[0],[0])", KEOPS_ERROR_SYNTAX,
      "formula:1:15: error: argument 3 of TensorDot must be a list of integers like [2,3]\n"
      "  TensorDot(u,w,3,[2,2],[0],[0])\n                ^");
  expect_error(v, "TensorDot(u,w,[2;3],[2,2],[0],[0])", KEOPS_ERROR_SYNTAX,
               "formula:1:17: error: unexpected character ';'\n"
               "  TensorDot(u,w,[2;3],[2,2],[0],[0])\n                  ^");
  expect_error(v, "TensorDot(u,w,[2 3],[2,2],[0],[0])", KEOPS_ERROR_SYNTAX,
               "formula:1:18: error: expected ',' or ']', got '3'\n"
               "  TensorDot(u,w,[2 3],[2,2],[0],[0])\n                   ^");
  env_free(v);
}
END_TEST

/* ---- every op row ----------------------------------------------------------------------- */

/* Valid calls where the generic arguments (formulas `a`, dim 1; integers 1; lists [1]) do not
 * fit the op's rules. */
static const char *const OVERRIDE[][2] = {{"Elem", "Elem(a,0)"},
                                          {"ElemT", "ElemT(a,1,0)"},
                                          {"Extract", "Extract(a,0,1)"},
                                          {"ExtractT", "ExtractT(a,0,1)"},
                                          {"TensorDot", "TensorDot(a,a,[1],[1],[0],[0])"},
                                          {"Var", "Var(2,1,1)"},
                                          /* complex arguments have even dims (z: 2) */
                                          {"ComplexReal", "ComplexReal(z)"},
                                          {"ComplexImag", "ComplexImag(z)"},
                                          {"Conj", "Conj(z)"},
                                          {"ComplexSquareAbs", "ComplexSquareAbs(z)"},
                                          {"ComplexAbs", "ComplexAbs(z)"},
                                          {"ComplexAngle", "ComplexAngle(z)"},
                                          {"ComplexSum", "ComplexSum(z)"},
                                          {"ComplexSumT", "ComplexSumT(z,1)"},
                                          {"ComplexAdd", "ComplexAdd(z,z)"},
                                          {"ComplexSubtract", "ComplexSubtract(z,z)"},
                                          {"ComplexMult", "ComplexMult(z,z)"},
                                          {"ComplexRealScal", "ComplexRealScal(a,z)"},
                                          {"ComplexDivide", "ComplexDivide(z,z)"},
                                          {"ComplexExp", "ComplexExp(z)"}};

static void sig_call(char *buf, size_t size, const char *name, const char *sig, int nargs) {
  int n = snprintf(buf, size, "%s(", name);
  int k = 0;
  for (const char *s = sig; *s && k < nargs; s++) {
    if (*s == '?') continue;
    const char *arg = *s == 'f' ? "a" : *s == 'i' ? "1" : "[1]";
    n += snprintf(buf + n, size - (size_t)n, "%s%s", k++ ? "," : "", arg);
  }
  for (; k < nargs; k++) n += snprintf(buf + n, size - (size_t)n, "%sa", k ? "," : "");
  snprintf(buf + n, size - (size_t)n, ")");
}

START_TEST(test_every_op) {
  env *v = env_new();
  int tested = 0, writable = 0;
  for (int op = 0; op < OP_COUNT; op++) {
    const char *sig = dag_ops[op].sig, *name = dag_ops[op].name;
    if (!sig) {
      char buf[64];
      snprintf(buf, sizeof buf, "%s(a)", name);
      ck_assert(!try_parse(v, buf));
      ck_assert_ptr_nonnull(strstr(v->e.msg, "unknown operation"));
      continue;
    }
    writable++;
    const char *opt = strchr(sig, '?');
    int max = (int)strlen(sig) - (opt != NULL), min = opt ? (int)(opt - sig) : max;
    char text[256], want[128];
    int overridden = 0;
    for (size_t k = 0; k < sizeof OVERRIDE / sizeof *OVERRIDE; k++)
      if (!strcmp(OVERRIDE[k][0], name))
        snprintf(text, sizeof text, "%s", OVERRIDE[k][1]), overridden = 1;
    if (!overridden) sig_call(text, sizeof text, name, sig, min);
    uint32_t id = try_parse(v, text);
    ck_assert_msg(id, "'%s' failed: %s", text, v->e.msg);
    /* the same call through fe_call, as templates and tools build it (Grad(f, v) would
     * declare a second new variable) */
    if (!overridden && !strchr(sig, 'l') && op != OP_Grad) {
      uint32_t a = parse(v, "a"), kids[3] = {a, a, a};
      int64_t params[3] = {1, 1, 1};
      int nk = 0, np = 0;
      for (const char *s = sig; *s && *s != '?'; s++) *s == 'f' ? nk++ : np++;
      ck_assert_msg(fe_call(v->d, op, kids, nk, params, np, &v->args) == id, "fe_call %s", name);
    }
    snprintf(want, sizeof want, "formula:1:1: error: %s takes ", name);
    sig_call(text, sizeof text, name, sig, max + 1);
    ck_assert_msg(!try_parse(v, text), "'%s' parsed", text);
    ck_assert_int_eq(v->e.status, KEOPS_ERROR_SYNTAX);
    ck_assert_msg(strncmp(v->e.msg, want, strlen(want)) == 0, "'%s': %s", text, v->e.msg);
    if (min > 0) {
      sig_call(text, sizeof text, name, sig, min - 1);
      ck_assert_msg(!try_parse(v, text), "'%s' parsed", text);
      ck_assert_msg(strncmp(v->e.msg, want, strlen(want)) == 0, "'%s': %s", text, v->e.msg);
    }
    tested++;
  }
  ck_assert_int_eq(tested, writable);
  ck_assert_int_gt(tested, 60);
  expect_error(v, "Exp(x,y)", KEOPS_ERROR_SYNTAX,
               "formula:1:1: error: Exp takes 1 argument, got 2\n  Exp(x,y)\n  ^");
  expect_error(v, "Exp()", KEOPS_ERROR_SYNTAX,
               "formula:1:1: error: Exp takes 1 argument, got 0\n  Exp()\n  ^");
  expect_error(v, "x*Grad(x)", KEOPS_ERROR_SYNTAX,
               "formula:1:3: error: Grad takes 2 to 3 arguments, got 1\n  x*Grad(x)\n    ^");
  expect_error(
      v, "Atan2(x,y,Exp(a,(b)),[1,2])", KEOPS_ERROR_SYNTAX,
      "formula:1:1: error: Atan2 takes 2 arguments, got 4\n  Atan2(x,y,Exp(a,(b)),[1,2])\n  ^");
  env_free(v);
}
END_TEST

START_TEST(test_sugar) {
  env *v = env_new();
  ck_assert_uint_eq(parse(v, "WeightedSqNorm(a,x)"), parse(v, "a*Sum(Square(x))"));
  ck_assert_uint_eq(parse(v, "WeightedSqNorm(y,x)"), parse(v, "(y|Square(x))"));
  ck_assert_uint_eq(parse(v, "WeightedSqNorm(m,x)"), parse(v, "(x|MatVecMult(m,x))"));
  ck_assert_uint_eq(parse(v, "WeightedSqDist(a,x,y)"), parse(v, "a*SqNorm2(x-y)"));
  ck_assert_uint_eq(parse(v, "SqDist(x,y)"), parse(v, "Sum(Square(x-y))"));
  ck_assert_uint_eq(parse(v, "IntCst(-4)"), parse(v, "-4"));
  ck_assert_uint_eq(parse(v, "IntInv(4)"), parse(v, "0.25"));
  expect_error_at(v, "WeightedSqNorm(z,x)", KEOPS_ERROR_DIMENSION,
                  "formula:1:1: error: WeightedSqNorm", "\n  WeightedSqNorm(z,x)\n  ^");
  expect_error_at(v, "a+IntInv(0)", KEOPS_ERROR_DIMENSION,
                  "formula:1:3: error: ", "\n  a+IntInv(0)\n    ^");
  expect_error_at(v, "RatCst(1,0)", KEOPS_ERROR_DIMENSION,
                  "formula:1:1: error: ", "\n  RatCst(1,0)\n  ^");
  expect_error_at(v, "Kron(x,y,[3],[3,1])", KEOPS_ERROR_DIMENSION, "formula:1:1: error: Kron",
                  "\n  Kron(x,y,[3],[3,1])\n  ^");
  expect_error_at(v, "Kron(x,y,[2],[3])", KEOPS_ERROR_DIMENSION, "formula:1:1: error: Kron",
                  "\n  Kron(x,y,[2],[3])\n  ^");
  env_free(v);
}
END_TEST

/* Kron against np.kron computed by hand, with three axes (where KeOps's perm convention,
 * [0,2,4,1,3,5], differs from its inverse). */
START_TEST(test_kron_values) {
  env *v = env_new();
  static const int64_t da[3] = {2, 1, 3}, db[3] = {1, 2, 2};
  uint32_t id = parse(v, "Kron(u,w,[2,1,3],[1,2,2])");
  ck_assert_int_eq(dag_get(v->d, id)->dim, 24);
  double vals[9][24] = {{0}}, out[24];
  const double *vars[9];
  for (int k = 0; k < 9; k++) vars[k] = vals[k];
  for (int k = 0; k < 6; k++) vals[7][k] = 1 + k;        /* u */
  for (int k = 0; k < 4; k++) vals[8][k] = 10 * (k + 1); /* w */
  interp_eval(v->d, id, vars, out);
  for (int i0 = 0; i0 < 2; i0++)
    for (int i2 = 0; i2 < 3; i2++)
      for (int j1 = 0; j1 < 2; j1++)
        for (int j2 = 0; j2 < 2; j2++) {
          /* K[i0*b0+j0, i1*b1+j1, i2*b2+j2] with i1 = j0 = 0, shape (2, 2, 6) */
          int o = (i0 * db[0]) * (da[1] * db[1]) * (da[2] * db[2]) + j1 * (da[2] * db[2]) +
                  i2 * db[2] + j2;
          double want = vals[7][i0 * 3 + i2] * vals[8][j1 * 2 + j2];
          ck_assert_msg(out[o] == want, "Kron[%d] = %g, expected %g", o, out[o], want);
        }
  ck_assert_uint_eq(id, parse(v, "TensorDot(u,w,[2,1,3],[1,2,2],[],[],[0,2,4,1,3,5])"));
  env_free(v);
}
END_TEST

START_TEST(test_autodiff_forms) {
  env *v = env_new();
  int n = v->args.n;
  uint32_t g = parse(v, "Grad(Exp(x|y),x)");
  ck_assert_int_eq(v->args.n, n + 1); /* e took position n, dim 1, category j */
  ck_assert_int_eq(v->args.dim[n], 1);
  ck_assert_int_eq(v->args.cat[n], CAT_J);
  char e[64];
  snprintf(e, sizeof e, "Grad(Exp(x|y),x,Var(%d,1,1))", n);
  ck_assert_uint_eq(g, parse(v, e));
  ck_assert_uint_eq(parse(v, "Laplacian(Square(a),a)"),
                    parse(v, "Divergence(Grad(Square(a),a,1),a)"));
  parse(v, "Diff(Exp(x),x,y)");
  parse(v, "GradMatrix(Exp(x),x)");
  expect_error_at(v, "Grad(Exp(p),p)", KEOPS_ERROR_DIMENSION,
                  "formula:1:1: error: Grad(f, v) without e needs v to be a Vi or Vj variable",
                  "\n  Grad(Exp(p),p)\n  ^");
  env_free(v);
}
END_TEST

/* ---- errors ----------------------------------------------------------------------------- */

START_TEST(test_errors) {
  env *v = env_new();
  expect_error(v, "Square(Exx(x))", KEOPS_ERROR_SYNTAX,
               "formula:1:8: error: unknown operation 'Exx'\n  Square(Exx(x))\n         ^");
  expect_error(v, "Cst(1)", KEOPS_ERROR_SYNTAX,
               "formula:1:1: error: unknown operation 'Cst'\n  Cst(1)\n  ^");
  expect_error(v, "x+zz", KEOPS_ERROR_SYNTAX,
               "formula:1:3: error: unknown variable 'zz'\n  x+zz\n    ^");
  expect_error(v, "x+", KEOPS_ERROR_SYNTAX,
               "formula:1:3: error: expected a formula, got end of text\n  x+\n    ^");
  expect_error(v, "", KEOPS_ERROR_SYNTAX,
               "formula:1:1: error: expected a formula, got end of text\n  \n  ^");
  expect_error(v, "(x+y", KEOPS_ERROR_SYNTAX,
               "formula:1:5: error: expected ')', got end of text\n  (x+y\n      ^");
  expect_error(v, "x y", KEOPS_ERROR_SYNTAX,
               "formula:1:3: error: unexpected 'y' after the formula\n  x y\n    ^");
  expect_error(v, "x+y)", KEOPS_ERROR_SYNTAX,
               "formula:1:4: error: unexpected ')' after the formula\n  x+y)\n     ^");
  expect_error(v, "x # y", KEOPS_ERROR_SYNTAX,
               "formula:1:3: error: unexpected character '#'\n  x # y\n    ^");
  expect_error(v, "x+\x01", KEOPS_ERROR_SYNTAX,
               "formula:1:3: error: unexpected byte 0x01\n  x+?\n    ^");
  expect_error(v, "Exp(x y)", KEOPS_ERROR_SYNTAX,
               "formula:1:7: error: expected ',' or ')' after argument 1 of Exp, got 'y'\n  Exp(x "
               "y)\n        ^");
  expect_error(v, "x = y", KEOPS_ERROR_SYNTAX,
               "formula:1:3: error: unexpected '=' after the formula\n  x = y\n    ^");
  expect_error(v, "Exp(Vi(3))", KEOPS_ERROR_SYNTAX,
               "formula:1:5: error: Vi(...) declares an alias; write it in the alias list or use "
               "Var(pos,dim,cat)\n  Exp(Vi(3))\n      ^");
  expect_error(v, "x*$1", KEOPS_ERROR_SYNTAX,
               "formula:1:3: error: unknown template parameter '$1'\n  x*$1\n    ^");
  expect_error(v, "x+\ny*\n  zz+x", KEOPS_ERROR_SYNTAX,
               "formula:3:3: error: unknown variable 'zz'\n    zz+x\n    ^");
  expect_error(v, "x\t+ q", KEOPS_ERROR_SYNTAX,
               "formula:1:5: error: unknown variable 'q'\n  x\t+ q\n   \t  ^");
  /* dims, categories, positions: the builder's message at the operator or call */
  expect_error_at(v, "x+z", KEOPS_ERROR_DIMENSION, "formula:1:2: error: ", "\n  x+z\n   ^");
  expect_error_at(v, "Exp(x)*(y|z)", KEOPS_ERROR_DIMENSION,
                  "formula:1:10: error: ", "\n  Exp(x)*(y|z)\n           ^");
  expect_error_at(v, "a*Elem(x,3)", KEOPS_ERROR_DIMENSION,
                  "formula:1:3: error: ", "\n  a*Elem(x,3)\n    ^");
  expect_error_at(v, "Var(0,2,0)", KEOPS_ERROR_DIMENSION,
                  "formula:1:1: error: ", "\n  Var(0,2,0)\n  ^");
  expect_error_at(v, "Var(256,1,0)", KEOPS_ERROR_DIMENSION,
                  "formula:1:1: error: ", "\n  Var(256,1,0)\n  ^");
  expect_error_at(v, "Var(20,1,3)", KEOPS_ERROR_DIMENSION,
                  "formula:1:1: error: ", "\n  Var(20,1,3)\n  ^");
  expect_error_at(v, "Var(20,0,1)", KEOPS_ERROR_DIMENSION,
                  "formula:1:1: error: ", "\n  Var(20,0,1)\n  ^");
  ck_assert_int_eq(v->args.n, NALIASES); /* failed declarations leave no trace */
  /* the DAG stays usable after a builder error */
  ck_assert_int_eq(dag_err(v->d)->status, KEOPS_OK);
  parse(v, "x+y");
  /* NULL */
  kerr_clear(&v->e);
  ck_assert_uint_eq(fe_parse(v->d, NULL, "formula", &v->args, NULL, &v->e), 0);
  ck_assert_int_eq(v->e.status, KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(v->e.msg, "formula is NULL");
  /* the source name is the caller's */
  kerr_clear(&v->e);
  ck_assert_uint_eq(fe_parse(v->d, "x+", "formula2", &v->args, NULL, &v->e), 0);
  ck_assert_str_eq(v->e.msg,
                   "formula2:1:3: error: expected a formula, got end of text\n  x+\n    ^");
  env_free(v);
}
END_TEST

/* Long lines are shown as a window around the column. */
START_TEST(test_long_line_window) {
  env *v = env_new();
  size_t n = 1000;
  char *s = malloc(2 * n + 8);
  for (size_t k = 0; k < n; k++) memcpy(s + 2 * k, "x+", 2);
  memcpy(s + 2 * n, "qq+x", 5);
  ck_assert(!try_parse(v, s));
  ck_assert_msg(strncmp(v->e.msg, "formula:1:2001: error: unknown variable 'qq'\n  ...x+x+", 44) ==
                    0,
                "%s", v->e.msg);
  const char *line = strchr(v->e.msg, '\n') + 1, *caret = strchr(line, '\n') + 1;
  ck_assert_int_eq(strlen(line) - strlen(caret), 2 + 3 + 80 + 1); /* "  ...", 80 bytes, "\n" */
  ck_assert_int_eq(caret[strlen(caret) - 1], '^');
  /* the caret stands under the q */
  ck_assert_int_eq(line[strlen(caret) - 1], 'q');
  /* at the start of a long line */
  s[0] = '#';
  ck_assert(!try_parse(v, s));
  ck_assert_msg(strstr(v->e.msg, "\n  #+x+x+") && strstr(v->e.msg, "...\n  ^"), "%s", v->e.msg);
  free(s);
  env_free(v);
}
END_TEST

/* ---- aliases ---------------------------------------------------------------------------- */

static void expect_alias_error(fe_args *a, const char *text, int index, keops_status st,
                               const char *msg) {
  kerr e;
  kerr_clear(&e);
  int n = a->n;
  ck_assert_int_eq(fe_parse_alias(a, text, index, &e), -1);
  ck_assert_msg(e.status == st, "'%s': status %d (%s)", text, e.status, e.msg);
  ck_assert_str_eq(e.msg, msg);
  ck_assert_int_eq(a->n, n);
}

START_TEST(test_aliases) {
  fe_args a = {0};
  kerr e;
  kerr_clear(&e);
  static const struct {
    const char *text;
    int pos, dim, cat;
    const char *name;
  } OK[] = {{"x = Vi(3)", 0, 3, CAT_I, "x"},
            {"y=Vj(4,2)", 4, 2, CAT_J, "y"},
            {"  p\t=  Pm ( 2 )  ", 2, 2, CAT_P, "p"},
            {"w = Var(5, 2, 1)", 5, 2, CAT_J, "w"},
            {"Vi(3,7)", 3, 7, CAT_I, NULL},
            {"Var(6,1,2)", 6, 1, CAT_P, NULL},
            {"Vj(2)", 7, 2, CAT_J, NULL},
            {"x = Vi(0,3)", 0, 3, CAT_I, "x"}};
  for (int k = 0; k < (int)(sizeof OK / sizeof *OK); k++) {
    int index = k == 6 ? 7 : k;
    ck_assert_msg(fe_parse_alias(&a, OK[k].text, index, &e) == 0, "%s: %s", OK[k].text, e.msg);
    ck_assert_int_eq(a.dim[OK[k].pos], OK[k].dim);
    ck_assert_int_eq(a.cat[OK[k].pos], OK[k].cat);
    if (OK[k].name)
      ck_assert_str_eq(a.name[OK[k].pos], OK[k].name);
    else if (k != 7)
      ck_assert_ptr_null(a.name[OK[k].pos]);
  }
  ck_assert_int_eq(a.n, 8);
  ck_assert_int_eq(a.dim[1], 0); /* never declared */
  expect_alias_error(&a, "q = Vk(3)", 9, KEOPS_ERROR_SYNTAX,
                     "alias[9]:1:5: error: unknown variable category 'Vk' (expected Vi, Vj, Pm or "
                     "Var)\n  q = Vk(3)\n      ^");
  expect_alias_error(
      &a, "q = Vi(0)", 9, KEOPS_ERROR_DIMENSION,
      "alias[9]:1:8: error: dimension 0 is out of range [1, 1000000]\n  q = Vi(0)\n         ^");
  expect_alias_error(
      &a, "q = Vi(-2)", 9, KEOPS_ERROR_DIMENSION,
      "alias[9]:1:8: error: dimension -2 is out of range [1, 1000000]\n  q = Vi(-2)\n         ^");
  expect_alias_error(
      &a, "q = Vi(-1, 3)", 9, KEOPS_ERROR_DIMENSION,
      "alias[9]:1:8: error: position -1 is out of range [0, 255]\n  q = Vi(-1, 3)\n         ^");
  expect_alias_error(
      &a, "q = Pm(256, 3)", 9, KEOPS_ERROR_DIMENSION,
      "alias[9]:1:8: error: position 256 is out of range [0, 255]\n  q = Pm(256, 3)\n         ^");
  expect_alias_error(
      &a, "q = Vi(3)", 300, KEOPS_ERROR_DIMENSION,
      "alias[300]:1:5: error: position 300 is out of range [0, 255]\n  q = Vi(3)\n      ^");
  expect_alias_error(
      &a, "x = Vj(2)", 9, KEOPS_ERROR_DIMENSION,
      "alias[9]:1:1: error: 'x' is declared twice (positions 0 and 9)\n  x = Vj(2)\n  ^");
  expect_alias_error(&a, "q = Vj(4,3)", 9, KEOPS_ERROR_DIMENSION,
                     "alias[9]:1:8: error: position 4 is declared twice with different dims or "
                     "categories: Vj(4,2) and Vj(4,3)\n  q = Vj(4,3)\n         ^");
  expect_alias_error(
      &a, "q = Vi(0,3)", 9, KEOPS_ERROR_DIMENSION,
      "alias[9]:1:1: error: position 0 has two names, 'x' and 'q'\n  q = Vi(0,3)\n  ^");
  expect_alias_error(&a, "Exp = Vi(3)", 9, KEOPS_ERROR_SYNTAX,
                     "alias[9]:1:1: error: 'Exp' is an operation name and cannot name a variable\n"
                     "  Exp = Vi(3)\n  ^");
  expect_alias_error(
      &a, "Vj = Vi(3)", 9, KEOPS_ERROR_SYNTAX,
      "alias[9]:1:1: error: 'Vj' is reserved and cannot name a variable\n  Vj = Vi(3)\n  ^");
  expect_alias_error(
      &a, "q = Vi(3) r", 9, KEOPS_ERROR_SYNTAX,
      "alias[9]:1:11: error: unexpected 'r' after the alias\n  q = Vi(3) r\n            ^");
  expect_alias_error(&a, "q = Vi(1,2,3)", 9, KEOPS_ERROR_SYNTAX,
                     "alias[9]:1:5: error: Vi takes 1 or 2 arguments (dim or pos, dim), got 3\n"
                     "  q = Vi(1,2,3)\n      ^");
  expect_alias_error(&a, "q = Var(9,3)", 9, KEOPS_ERROR_SYNTAX,
                     "alias[9]:1:5: error: Var takes 3 arguments (pos, dim, cat), got 2\n"
                     "  q = Var(9,3)\n      ^");
  expect_alias_error(&a, "q = Var(9,3,3)", 9, KEOPS_ERROR_DIMENSION,
                     "alias[9]:1:13: error: category 3 is not 0 (Vi), 1 (Vj) or 2 (Pm)\n"
                     "  q = Var(9,3,3)\n              ^");
  expect_alias_error(
      &a, "q = Vi(1.5)", 9, KEOPS_ERROR_SYNTAX,
      "alias[9]:1:8: error: expected an integer, got '1.5'\n  q = Vi(1.5)\n         ^");
  expect_alias_error(&a, "q = 3", 9, KEOPS_ERROR_SYNTAX,
                     "alias[9]:1:5: error: expected Vi, Vj, Pm or Var, got '3'\n  q = 3\n      ^");
  expect_alias_error(&a, "q Vi(3)", 9, KEOPS_ERROR_SYNTAX,
                     "alias[9]:1:3: error: expected '=' or '(', got 'Vi'\n  q Vi(3)\n    ^");
  expect_alias_error(
      &a, "", 9, KEOPS_ERROR_SYNTAX,
      "alias[9]:1:1: error: expected an alias such as 'x = Vi(3)', got end of text\n  \n  ^");
  expect_alias_error(
      &a, "q = Vi(3", 9, KEOPS_ERROR_SYNTAX,
      "alias[9]:1:9: error: expected ',' or ')', got end of text\n  q = Vi(3\n          ^");
  kerr_clear(&e);
  ck_assert_int_eq(fe_parse_alias(&a, NULL, 4, &e), -1);
  ck_assert_int_eq(e.status, KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(e.msg, "alias[4] is NULL");
  /* an inline Var agreeing with an alias is fine, a disagreeing one is not */
  dag *d = dag_new();
  kerr_clear(&e);
  ck_assert_uint_eq(fe_parse(d, "Var(0,3,0)", "formula", &a, NULL, &e),
                    fe_parse(d, "x", "formula", &a, NULL, &e));
  ck_assert_uint_ne(fe_parse(d, "Var(12,3,1)", "formula", &a, NULL, &e), 0);
  ck_assert_int_eq(a.n, 13);
  ck_assert_int_eq(a.dim[12], 3);
  ck_assert_ptr_null(a.name[12]);
  dag_free(d);
  fe_args_free(&a);
}
END_TEST

/* ---- templates -------------------------------------------------------------------------- */

START_TEST(test_templates) {
  env *v = env_new();
  uint32_t x = parse(v, "x"), a = parse(v, "a"), zc = parse(v, "z");
  uint32_t kids[2] = {x, a};
  int64_t params[2] = {-3, 2};
  ck_assert_uint_eq(fe_template(v->d, "x*$0+Pow(y,$1-1)*$1", kids, 2, 0, params, 2),
                    parse(v, "-3*x+a*2"));
  uint32_t r = parse(v, "Exp(x)");
  ck_assert_uint_eq(fe_template(v->d, "r*x", kids, 1, r, NULL, 0), parse(v, "Exp(x)*x"));
  /* a template that does not parse is a library bug */
  ck_assert_uint_eq(fe_template(v->d, "x+", kids, 1, 0, NULL, 0), 0);
  ck_assert_int_eq(dag_err(v->d)->status, KEOPS_ERROR_COMPILE);
  ck_assert_ptr_nonnull(strstr(dag_err(v->d)->msg, "internal template error"));
  kerr_clear(dag_err(v->d));
  ck_assert_uint_eq(fe_template(v->d, "x*q", kids, 1, 0, NULL, 0), 0);
  ck_assert_int_eq(dag_err(v->d)->status, KEOPS_ERROR_COMPILE);
  kerr_clear(dag_err(v->d));
  /* a dim error inside a template keeps its status and stays in the dag error */
  uint32_t z = parse(v, "z");
  uint32_t bad[2] = {x, z};
  ck_assert_uint_eq(fe_template(v->d, "x+y", bad, 2, 0, NULL, 0), 0);
  ck_assert_int_eq(dag_err(v->d)->status, KEOPS_ERROR_DIMENSION);
  kerr_clear(dag_err(v->d));
  /* every template of ops.def parses: EW partials over x, y, z, r and SG expansions, with
   * real (dim 1) arguments, complex ones (dim 2), or a real scalar and complex ones */
  for (int op = 0; op < OP_COUNT; op++)
    for (int t = 0; t < 3; t++) {
      const char *text = dag_ops[op].t[t];
      if (!text) continue;
      const uint32_t k3s[3][3] = {{a, a, a}, {zc, zc, zc}, {a, zc, zc}};
      int64_t p2[2] = {1, 2};
      uint32_t id = 0;
      for (int c = 0; c < 3 && !id; c++) {
        kerr_clear(dag_err(v->d));
        id = fe_template(v->d, text, k3s[c], 3, a, p2, 2);
      }
      ck_assert_msg(id, "template %d of %s ('%s'): %s", t, dag_ops[op].name, text,
                    dag_err(v->d)->msg);
    }
  /* fe_parse with a scope: scope names first, then aliases */
  static const char *const names[] = {"x", "s"};
  uint32_t ids[2] = {a, r};
  fe_scope sc = {names, ids, 2, params, 1};
  kerr_clear(&v->e);
  ck_assert_uint_eq(fe_parse(v->d, "x*s+y*$0", "tool", &v->args, &sc, &v->e),
                    parse(v, "a*Exp(x)+y*-3"));
  env_free(v);
}
END_TEST

/* ---- robustness ------------------------------------------------------------------------- */

static char *repeat3(const char *pre, size_t n, const char *mid, const char *post) {
  size_t lp = strlen(pre), lm = strlen(mid), lq = strlen(post);
  char *s = malloc(n * (lp + lq) + lm + 1), *q = s;
  for (size_t k = 0; k < n; k++) memcpy(q, pre, lp), q += lp;
  memcpy(q, mid, lm), q += lm;
  for (size_t k = 0; k < n; k++) memcpy(q, post, lq), q += lq;
  *q = 0;
  return s;
}

static void expect_too_deep(env *v, const char *pre, size_t n, const char *mid, const char *post) {
  char *s = repeat3(pre, n, mid, post);
  ck_assert_msg(!try_parse(v, s), "%s...%s x %zu parsed", pre, post, n);
  ck_assert_int_eq(v->e.status, KEOPS_ERROR_SYNTAX);
  ck_assert_msg(strstr(v->e.msg, "formula nested too deeply (more than 200 levels)"), "%s",
                v->e.msg);
  ck_assert_int_lt(strlen(v->e.msg), 400);
  free(s);
}

START_TEST(test_deep_nesting) {
  env *v = env_new();
  expect_too_deep(v, "(", 100000, "x", ")");
  expect_too_deep(v, "Exp(", 100000, "x", ")");
  expect_too_deep(v, "-", 100000, "x", "");
  expect_too_deep(v, "x**", 100000, "x", "");
  expect_too_deep(v, "Elem(x,", 100000, "0", ")");
  expect_too_deep(v, "(", 100000, "", "");
  /* the limit is exactly 200 levels */
  char *s = repeat3("(", 200, "x", ")");
  parse(v, s);
  free(s);
  s = repeat3("Exp(", 200, "a", ")");
  parse(v, s);
  free(s);
  expect_too_deep(v, "(", 201, "x", ")");
  char *deep = repeat3("(", 201, "x", ")");
  ck_assert(!try_parse(v, deep));
  ck_assert_msg(strncmp(v->e.msg, "formula:1:202: error:", 21) == 0, "%s", v->e.msg);
  free(deep);
  env_free(v);
}
END_TEST

START_TEST(test_huge_formula) {
  env *v = env_new();
  size_t n = 1 << 20; /* 2 MB */
  static const char *const UNITS[] = {"x+y+", "x+x+", "a*b+", "x-y+"};
  for (size_t u = 0; u < sizeof UNITS / sizeof *UNITS; u++) {
    char *s = repeat3(UNITS[u], n / 2, "x", "");
    uint32_t id = try_parse(v, s);
    if (!id) {
      ck_assert_int_lt(strlen(v->e.msg), 600);
      ck_assert_msg(strncmp(v->e.msg, "formula:1:", 10) == 0, "%s", v->e.msg);
    }
    free(s);
  }
  /* one huge name, one huge number */
  char *s = repeat3("q", 1 << 21, "", "");
  ck_assert(!try_parse(v, s));
  ck_assert_int_lt(strlen(v->e.msg), 600);
  free(s);
  s = repeat3("7", 1 << 21, "", "");
  uint32_t id = parse(v, s);
  ck_assert_int_eq(op_of(v, id), OP_Cst);
  free(s);
  s = repeat3("0", 1 << 21, "0.5", "");
  expect_rat(v, s, 1, 2);
  free(s);
  env_free(v);
}
END_TEST

static const char *const VOCAB[] = {"x",
                                    "y",
                                    "a",
                                    "p",
                                    "(",
                                    ")",
                                    "[",
                                    "]",
                                    ",",
                                    "+",
                                    "-",
                                    "*",
                                    "/",
                                    "**",
                                    "|",
                                    "<",
                                    ">=",
                                    "==",
                                    "2",
                                    "0.5",
                                    "1e3",
                                    "Exp(",
                                    "Elem(",
                                    "Grad(",
                                    "TensorDot(",
                                    "Var(",
                                    "Sum(",
                                    "Kron(",
                                    "WeightedSqNorm(",
                                    "$0",
                                    " ",
                                    "\n",
                                    "=",
                                    "Vi(",
                                    "3",
                                    "IntInv("};

START_TEST(test_random_garbage) {
  tu_rng r = tu_seed(20240531);
  char buf[128];
  for (int iter = 0; iter < 4000; iter++) {
    size_t n = 0, len = (size_t)tu_uniform(&r, 0, 60);
    if (iter % 2) {
      while (n < len) buf[n++] = (char)(1 + (int)tu_uniform(&r, 0, 255));
    } else {
      while (n < len) {
        const char *w = VOCAB[(int)tu_uniform(&r, 0, sizeof VOCAB / sizeof *VOCAB)];
        size_t lw = strlen(w);
        if (n + lw >= sizeof buf) break;
        memcpy(buf + n, w, lw), n += lw;
      }
    }
    buf[n] = 0;
    env *v = env_new();
    uint32_t id = try_parse(v, buf);
    if (!id) {
      ck_assert_msg(!strncmp(v->e.msg, "formula:", 8) || v->e.status != KEOPS_ERROR_SYNTAX, "%s",
                    v->e.msg);
      ck_assert(strchr(v->e.msg, '^'));
    }
    kerr e;
    kerr_clear(&e);
    if (fe_parse_alias(&v->args, buf, 20, &e))
      ck_assert_msg(!strncmp(e.msg, "alias[20]:", 10), "%s", e.msg);
    env_free(v);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("parse");
  TCase *t = tcase_create("core");
  tcase_set_timeout(t, 600);
  tcase_add_test(t, test_round_trip);
  tcase_add_test(t, test_precedence);
  tcase_add_test(t, test_literals);
  tcase_add_test(t, test_int_args);
  tcase_add_test(t, test_every_op);
  tcase_add_test(t, test_sugar);
  tcase_add_test(t, test_kron_values);
  tcase_add_test(t, test_autodiff_forms);
  tcase_add_test(t, test_errors);
  tcase_add_test(t, test_long_line_window);
  tcase_add_test(t, test_aliases);
  tcase_add_test(t, test_templates);
  tcase_add_test(t, test_deep_nesting);
  tcase_add_test(t, test_huge_formula);
  tcase_add_test(t, test_random_garbage);
  suite_add_tcase(s, t);
  int failed = tu_run(s, 1);
  return failed ? 1 : 0;
}
