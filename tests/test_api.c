/* The public API contract (keops.h): NULL handling, queries, errors with status and message,
 * per-thread errors, and the seed reduction and its gradient against plain loops. Only
 * public functions are called here. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keops.h"
#include "runtime.h"
#include "testutil.h"

static keops_context *ctx;

static void setup(void) { ck_assert_int_eq(keops_context_create(&ctx), KEOPS_OK); }
static void teardown(void) {
  keops_context_destroy(ctx);
  ctx = NULL;
}

static const char *const seed_aliases[] = {"x = Vi(3)", "y = Vj(3)", "a = Vj(1)", "p = Pm(1)",
                                           "e = Vi(3)"};
#define SEED "Square(p-a)*Exp(x+y)"
#define SEED_GRAD "Grad(" SEED ", y, e)"

static keops_kernel_desc seed_desc(const char *formula, int n_aliases, int axis) {
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = formula;
  d.aliases = seed_aliases;
  d.n_aliases = n_aliases;
  d.axis = tu_axis(axis);
  return d;
}

/* Creates a kernel that must build; the message says why when it does not. */
static keops_kernel *make(const keops_kernel_desc *d) {
  keops_kernel *k = NULL;
  keops_status st = keops_kernel_create(ctx, d, &k);
  ck_assert_msg(st == KEOPS_OK, "%s: %s", keops_status_string(st), keops_last_error());
  ck_assert_ptr_nonnull(k);
  return k;
}

/* A creation that must fail with status st and a message containing msg (or equal to it when
 * exact). *out must be NULL afterwards. */
static void expect_create_error(const keops_kernel_desc *d, keops_status st, const char *msg,
                                int exact) {
  keops_kernel *k = (keops_kernel *)&k; /* not NULL: must be reset */
  keops_status got = keops_kernel_create(ctx, d, &k);
  ck_assert_msg(got == st, "status %s, expected %s (%s)", keops_status_string(got),
                keops_status_string(st), keops_last_error());
  ck_assert_ptr_null(k);
  if (exact)
    ck_assert_str_eq(keops_last_error(), msg);
  else
    ck_assert_msg(strstr(keops_last_error(), msg), "message '%s' lacks '%s'", keops_last_error(),
                  msg);
}

/* ---- status strings and NULL handling ----------------------------------------------------- */

START_TEST(status_strings) {
  static const char *const names[] = {"KEOPS_OK",
                                      "KEOPS_ERROR_SYNTAX",
                                      "KEOPS_ERROR_DIMENSION",
                                      "KEOPS_ERROR_ARGUMENT",
                                      "KEOPS_ERROR_UNSUPPORTED",
                                      "KEOPS_ERROR_NO_DEVICE",
                                      "KEOPS_ERROR_DEVICE",
                                      "KEOPS_ERROR_COMPILE",
                                      "KEOPS_ERROR_OUT_OF_MEMORY",
                                      "KEOPS_ERROR_IO"};
  for (int s = 0; s <= KEOPS_ERROR_IO; s++)
    ck_assert_str_eq(keops_status_string((keops_status)s), names[s]);
  ck_assert_str_eq(keops_status_string((keops_status)-1), "unknown status");
  ck_assert_str_eq(keops_status_string((keops_status)99), "unknown status");
}
END_TEST

START_TEST(null_handling) {
  ck_assert_int_eq(keops_context_create(NULL), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), "keops_context_create: out is NULL");
  keops_context_destroy(NULL);
  keops_kernel_destroy(NULL);

  keops_kernel_desc d = seed_desc(SEED, 4, 1);
  keops_kernel *k = (keops_kernel *)&k;
  ck_assert_int_eq(keops_kernel_create(NULL, &d, &k), KEOPS_ERROR_ARGUMENT);
  ck_assert_ptr_null(k);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_create: ctx is NULL");
  ck_assert_int_eq(keops_kernel_create(ctx, NULL, &k), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_create: desc is NULL");
  ck_assert_int_eq(keops_kernel_create(ctx, &d, NULL), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_create: out is NULL");

  d.formula = NULL;
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT, "keops_kernel_create: desc->formula is NULL", 1);
  d = seed_desc(SEED, 4, 1);
  d.aliases = NULL;
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT,
                      "keops_kernel_create: desc->aliases is NULL but desc->n_aliases = 4", 1);
  const char *const holes[] = {"x = Vi(3)", NULL};
  d.aliases = holes;
  d.n_aliases = 2;
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT, "keops_kernel_create: desc->aliases[1] is NULL", 1);

  ck_assert_int_eq(keops_kernel_arg_count(NULL), -1);
  ck_assert_int_eq(keops_kernel_arg_dim(NULL, 0), -1);
  ck_assert_int_eq(keops_kernel_arg_category(NULL, 0), -1);
  ck_assert_int_eq(keops_kernel_output_count(NULL), -1);
  ck_assert_int_eq(keops_kernel_output_dim(NULL, 0), -1);
  ck_assert_int_eq(keops_kernel_output_dtype(NULL, 0), KEOPS_FLOAT32);
  ck_assert_int_eq(keops_kernel_run(NULL, 1, 1, NULL, NULL, NULL), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_run: kernel is NULL");
}
END_TEST

/* ---- queries ------------------------------------------------------------------------------ */

static void expect_args(const keops_kernel *k, int n, const int *dims, const int *cats) {
  ck_assert_int_eq(keops_kernel_arg_count(k), n);
  for (int a = 0; a < n; a++) {
    ck_assert_int_eq(keops_kernel_arg_dim(k, a), dims[a]);
    ck_assert_int_eq(keops_kernel_arg_category(k, a), cats[a]);
  }
  ck_assert_int_eq(keops_kernel_arg_dim(k, n), -1);
  ck_assert_int_eq(keops_kernel_arg_dim(k, -1), -1);
  ck_assert_int_eq(keops_kernel_arg_category(k, n), -1);
  ck_assert_int_eq(keops_kernel_arg_category(k, -1), -1);
}

START_TEST(queries_seed) {
  keops_kernel_desc d = seed_desc(SEED, 4, 1);
  keops_kernel *k = make(&d);
  expect_args(k, 4, (const int[]){3, 3, 1, 1}, (const int[]){0, 1, 1, 2});
  ck_assert_int_eq(keops_kernel_output_count(k), 1);
  ck_assert_int_eq(keops_kernel_output_dim(k, 0), 3);
  ck_assert_int_eq(keops_kernel_output_dtype(k, 0), KEOPS_FLOAT32);
  ck_assert_int_eq(keops_kernel_output_dim(k, 1), -1);
  ck_assert_int_eq(keops_kernel_output_dim(k, -1), -1);
  ck_assert_int_eq(keops_kernel_output_dtype(k, 1), KEOPS_FLOAT32);
  keops_kernel_destroy(k);

  d = seed_desc(SEED_GRAD, 5, 0);
  k = make(&d);
  expect_args(k, 5, (const int[]){3, 3, 1, 1, 3}, (const int[]){0, 1, 1, 2, 0});
  ck_assert_int_eq(keops_kernel_output_dim(k, 0), 3); /* the dim of y */
  keops_kernel_destroy(k);
}
END_TEST

/* Aliases with explicit positions, in any order, and a Var written in the formula. */
START_TEST(queries_positions) {
  const char *const aliases[] = {"b = Vj(2, 1)", "x = Vi(0, 3)"};
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = "SqDist(x, Var(1, 3, 1)) * b + Var(3, 2, 2)";
  d.aliases = aliases;
  d.n_aliases = 2;
  d.axis = KEOPS_AXIS_J;
  d.dtype = KEOPS_FLOAT64;
  keops_kernel *k = make(&d);
  expect_args(k, 4, (const int[]){3, 3, 1, 2}, (const int[]){0, 1, 1, 2});
  ck_assert_int_eq(keops_kernel_output_dim(k, 0), 2);
  ck_assert_int_eq(keops_kernel_output_dtype(k, 0), KEOPS_FLOAT64);
  keops_kernel_destroy(k);

  /* Grad(f, v) without e takes a new variable of the dim of f at the next position, in the
   * other category than v (as KeOps: the gradient input is indexed like the output). */
  d.formula = "Grad(SqDist(x, Var(1, 3, 1)), x)";
  d.n_aliases = 1;
  d.aliases = aliases + 1;
  k = make(&d);
  expect_args(k, 3, (const int[]){3, 3, 1}, (const int[]){0, 1, 1});
  ck_assert_int_eq(keops_kernel_output_dim(k, 0), 3);
  keops_kernel_destroy(k);
}
END_TEST

typedef struct out_case {
  const char *reduction;
  const char *formula; /* over x = Vi(3), y = Vj(3), s = Vj(1) */
  const char *formula2;
  int k;
  int nout;
  int dim[2];
  int idx[2]; /* 1: int64 indices */
} out_case;

static const out_case out_cases[] = {
    {"Sum", "x*y", NULL, 0, 1, {3}, {0}},
    {NULL, "x*y", NULL, 0, 1, {3}, {0}}, /* NULL means Sum */
    {"Max", "x*y", NULL, 0, 1, {3}, {0}},
    {"ArgMin", "x*y", NULL, 0, 1, {3}, {1}},
    {"Min_ArgMin", "x*y", NULL, 0, 2, {3, 3}, {0, 1}},
    {"Max_ArgMax", "x-y", NULL, 0, 2, {3, 3}, {0, 1}},
    {"KMin", "x*y", NULL, 4, 1, {12}, {0}},
    {"ArgKMin", "SqDist(x,y)", NULL, 5, 1, {5}, {1}},
    {"KMin_ArgKMin", "x*y", NULL, 2, 2, {6, 6}, {0, 1}},
    {"LogSumExp", "SqDist(x,y)", NULL, 0, 1, {1}, {0}},
    {"LogSumExp", "SqDist(x,y)", "y", 0, 1, {3}, {0}},
    {"SumSoftMaxWeight", "SqDist(x,y)", "y", 0, 1, {3}, {0}},
    {"Max_SumShiftExp", "s", NULL, 0, 1, {2}, {0}},
};

START_TEST(queries_outputs) {
  const char *const aliases[] = {"x = Vi(3)", "y = Vj(3)", "s = Vj(1)"};
  const out_case *c = &out_cases[_i % (int)(sizeof out_cases / sizeof *out_cases)];
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = c->formula;
  d.formula2 = c->formula2;
  d.aliases = aliases;
  d.n_aliases = 3;
  d.reduction = c->reduction;
  d.k = c->k;
  d.axis = tu_axis(_i & 1); /* each case on one axis, the loop covers both */
  d.dtype = _i < (int)(sizeof out_cases / sizeof *out_cases) ? KEOPS_FLOAT32 : KEOPS_FLOAT64;
  keops_kernel *k = make(&d);
  ck_assert_int_eq(keops_kernel_output_count(k), c->nout);
  for (int o = 0; o < c->nout; o++) {
    ck_assert_int_eq(keops_kernel_output_dim(k, o), c->dim[o]);
    ck_assert_int_eq(keops_kernel_output_dtype(k, o), c->idx[o] ? KEOPS_INT64 : d.dtype);
  }
  ck_assert_int_eq(keops_kernel_output_dim(k, c->nout), -1);
  keops_kernel_destroy(k);
}
END_TEST

/* ---- creation errors ---------------------------------------------------------------------- */

START_TEST(error_syntax_exact) {
  keops_kernel_desc d = seed_desc("Square(p-a)*Exx(x+y)", 4, 1);
  expect_create_error(&d, KEOPS_ERROR_SYNTAX,
                      "formula:1:13: error: unknown operation 'Exx'\n"
                      "  Square(p-a)*Exx(x+y)\n"
                      "              ^",
                      1);
  d = seed_desc("Square(p-a)*Exp(x+)", 4, 1);
  expect_create_error(&d, KEOPS_ERROR_SYNTAX, "formula:1:", 0);
  const char *const bad_alias[] = {"x = Vk(3)"};
  d.formula = "x";
  d.aliases = bad_alias;
  d.n_aliases = 1;
  expect_create_error(&d, KEOPS_ERROR_SYNTAX, "alias[0]:1:", 0);
}
END_TEST

START_TEST(error_reduction) {
  keops_kernel_desc d = seed_desc(SEED, 4, 1);
  d.reduction = "Summ";
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT, "unknown reduction 'Summ'", 0);
  /* the names come from reductions.def: all of them, the last without a trailing comma */
  ck_assert_ptr_nonnull(strstr(keops_last_error(), "(expected one of Sum, Max, "));
  ck_assert_ptr_nonnull(strstr(keops_last_error(), ", SoftMax, Max_SumShiftExp, Max_SumShiftExpWeight)"));
  ck_assert_ptr_eq(strstr(keops_last_error(), "keops_kernel_create: "), keops_last_error());

  d = seed_desc(SEED, 4, 3);
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT,
                      "keops_kernel_create: axis = 3 is not a keops_axis (KEOPS_AXIS_J = 1, "
                      "KEOPS_AXIS_I = 2)", 1);

  d = seed_desc(SEED, 4, 1);
  d.reduction = "KMin";
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT, "KMin needs K in [1, ", 0);
  ck_assert_ptr_nonnull(strstr(keops_last_error(), "got 0"));

  d.reduction = "SumSoftMaxWeight";
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT, "SumSoftMaxWeight needs a weight formula", 0);

  d.reduction = "LogSumExp";
  expect_create_error(&d, KEOPS_ERROR_DIMENSION,
                      "LogSumExp needs a scalar formula (dim 1), got dim 3", 0);

  d = seed_desc(SEED, 4, 1);
  d.dtype = KEOPS_INT64;
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT, "dtype must be KEOPS_FLOAT32 or KEOPS_FLOAT64", 0);

  d = seed_desc(SEED, 4, 1);
  d.fast_math = 2;
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT, "fast_math must be 0 or 1, got 2", 0);
}
END_TEST

START_TEST(error_dimension) {
  keops_kernel_desc d = seed_desc("x + a + Var(0, 2, 0)", 4, 1); /* x is Vi(3) at 0 */
  expect_create_error(&d, KEOPS_ERROR_DIMENSION, "", 0);
  d = seed_desc("x + Var(7, 3, 0)", 4, 1); /* positions 4..6 missing */
  expect_create_error(&d, KEOPS_ERROR_DIMENSION, "position", 0);
}
END_TEST

/* ---- run errors --------------------------------------------------------------------------- */

typedef struct small {
  keops_kernel *k;
  float x[6], y[9], a[3], p[1], c[6];
  const void *args[4];
  void *outs[1];
} small;

/* The seed kernel on M = 2, N = 3. */
static void small_init(small *s) {
  memset(s, 0, sizeof *s);
  keops_kernel_desc d = seed_desc(SEED, 4, 1);
  s->k = make(&d);
  s->args[0] = s->x, s->args[1] = s->y, s->args[2] = s->a, s->args[3] = s->p;
  s->outs[0] = s->c;
}

static void expect_run_error(small *s, int64_t M, int64_t N, const keops_run_options *o,
                             keops_status st, const char *msg) {
  keops_status got = keops_kernel_run(s->k, M, N, s->args, s->outs, o);
  ck_assert_msg(got == st, "status %s, expected %s (%s)", keops_status_string(got),
                keops_status_string(st), keops_last_error());
  ck_assert_msg(strstr(keops_last_error(), msg), "message '%s' lacks '%s'", keops_last_error(),
                msg);
}

START_TEST(run_errors) {
  small s;
  small_init(&s);
  expect_run_error(&s, -1, 3, NULL, KEOPS_ERROR_ARGUMENT, "keops_kernel_run: M = -1 is negative");
  ck_assert_str_eq(keops_last_error(), "keops_kernel_run: M = -1 is negative");
  expect_run_error(&s, 2, -5, NULL, KEOPS_ERROR_ARGUMENT, "keops_kernel_run: N = -5 is negative");
  expect_run_error(&s, (int64_t)1 << 62, 3, NULL, KEOPS_ERROR_ARGUMENT, "too large");

  ck_assert_int_eq(keops_kernel_run(s.k, 2, 3, NULL, s.outs, NULL), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(),
                   "keops_kernel_run: args is NULL but the kernel has 4 inputs");
  ck_assert_int_eq(keops_kernel_run(s.k, 2, 3, s.args, NULL, NULL), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(),
                   "keops_kernel_run: outs is NULL but the kernel has 1 output");
  s.args[2] = NULL;
  expect_run_error(&s, 2, 3, NULL, KEOPS_ERROR_ARGUMENT,
                   "keops_kernel_run: args[2] is NULL but input 2 (a = Vj(1)) has 3 rows");
  s.args[2] = s.a;
  s.outs[0] = NULL;
  expect_run_error(&s, 2, 3, NULL, KEOPS_ERROR_ARGUMENT, "outs[0] is NULL");
  s.outs[0] = s.c;

  keops_run_options o = keops_run_options_init();
  o.backend = KEOPS_BACKEND_GPU;
  if (!rt_gpu_usable(s.k->ctx->dev)) /* every driver failure names the library it looked for */
    expect_run_error(&s, 2, 3, &o, KEOPS_ERROR_NO_DEVICE, "libcuda.so.1");
  o.backend = KEOPS_BACKEND_CPU;
  o.device_pointers = 1;
  expect_run_error(&s, 2, 3, &o, KEOPS_ERROR_ARGUMENT, "device_pointers needs the GPU backend");
  o.device_pointers = 0;
  o.backend = (keops_backend)7;
  expect_run_error(&s, 2, 3, &o, KEOPS_ERROR_ARGUMENT, "backend = 7");
  o.backend = KEOPS_BACKEND_CPU;
  o.num_threads = -1;
  expect_run_error(&s, 2, 3, &o, KEOPS_ERROR_ARGUMENT, "num_threads = -1 is negative");
  keops_kernel_destroy(s.k);
}
END_TEST

/* The structs' size field: zero (a struct zeroed by hand) and wrong sizes are refused, a
 * newer header's larger struct works while its unknown fields are zero; the axis has no
 * default. */
START_TEST(sized_structs) {
  keops_kernel_desc d = seed_desc(SEED, 4, 1);
  d.size = 0;
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT,
                      "keops_kernel_create: desc->size is 0: initialise the keops_kernel_desc "
                      "with keops_kernel_desc_init() (or set .size = sizeof(keops_kernel_desc))",
                      1);
  d.size = sizeof d - 1;
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT, "desc->size = ", 0);
  ck_assert_ptr_nonnull(strstr(keops_last_error(), "is not the size of a keops_kernel_desc"));
  d.size = (size_t)1 << 40;
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT, "is not the size of a keops_kernel_desc", 0);

  d = seed_desc(SEED, 4, 1);
  d.axis = KEOPS_AXIS_UNSET;
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT,
                      "keops_kernel_create: axis is not set: KEOPS_AXIS_J reduces over j (one "
                      "output row per i, KeOps axis=1), KEOPS_AXIS_I over i (one row per j, KeOps "
                      "axis=0)", 1);

  /* a program built against a later keops.h, whose struct has two more fields */
  struct later_desc {
    keops_kernel_desc d;
    int64_t later[2];
  } big;
  memset(&big, 0, sizeof big);
  big.d = seed_desc(SEED, 4, 1);
  big.d.size = sizeof big;
  keops_kernel *k = make(&big.d);
  ck_assert_int_eq(keops_kernel_output_dim(k, 0), 3);
  keops_kernel_destroy(k);
  big.later[1] = 1;
  char msg[128];
  snprintf(msg, sizeof msg, "byte %zu of %zu is not zero", offsetof(struct later_desc, later[1]),
           sizeof big);
  expect_create_error(&big.d, KEOPS_ERROR_UNSUPPORTED, msg, 0);
  ck_assert_ptr_nonnull(strstr(keops_last_error(), "does not know"));

  small s;
  small_init(&s);
  keops_run_options o = keops_run_options_init();
  o.backend = KEOPS_BACKEND_CPU;
  o.size = 0;
  expect_run_error(&s, 2, 3, &o, KEOPS_ERROR_ARGUMENT,
                   "keops_kernel_run: opts->size is 0: initialise the keops_run_options with "
                   "keops_run_options_init() (or set .size = sizeof(keops_run_options))");
  ck_assert_int_eq(keops_kernel_backend(s.k, &o), KEOPS_BACKEND_AUTO); /* refused: AUTO */
  struct {
    keops_run_options o;
    int64_t later;
  } bigo;
  memset(&bigo, 0, sizeof bigo);
  bigo.o = keops_run_options_init();
  bigo.o.size = sizeof bigo;
  bigo.o.backend = KEOPS_BACKEND_REFERENCE;
  ck_assert_int_eq(keops_kernel_backend(s.k, &bigo.o), KEOPS_BACKEND_REFERENCE);
  ck_assert_msg(keops_kernel_run(s.k, 2, 3, s.args, s.outs, &bigo.o) == KEOPS_OK, "%s",
                keops_last_error());
  bigo.later = -1;
  expect_run_error(&s, 2, 3, &bigo.o, KEOPS_ERROR_UNSUPPORTED, "opts sets a field");
  keops_kernel_destroy(s.k);
}
END_TEST

/* Arrays with no rows need not exist; every backend but GPU runs. */
START_TEST(run_empty_and_backends) {
  small s;
  small_init(&s);
  s.args[0] = NULL;
  s.outs[0] = NULL;
  ck_assert_int_eq(keops_kernel_run(s.k, 0, 3, s.args, s.outs, NULL), KEOPS_OK);
  s.args[0] = s.x;
  s.outs[0] = s.c;
  for (int b = KEOPS_BACKEND_AUTO; b <= KEOPS_BACKEND_REFERENCE; b++) {
    if (b == KEOPS_BACKEND_GPU) continue;
    keops_run_options o = {.size = sizeof(keops_run_options), .backend = (keops_backend)b, .device_id = 0, .num_threads = 1};
    ck_assert_msg(keops_kernel_run(s.k, 2, 3, s.args, s.outs, &o) == KEOPS_OK, "%s",
                  keops_last_error());
  }
  keops_kernel_destroy(s.k);
}
END_TEST

/* Which backend a run uses, and its description (no GPU backend in this build yet). */
START_TEST(backend_queries) {
  small s;
  small_init(&s);
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_AUTO, .device_id = 0, .num_threads = 0};
  keops_backend autob = rt_gpu_usable(s.k->ctx->dev) ? KEOPS_BACKEND_GPU : KEOPS_BACKEND_CPU;
  ck_assert_int_eq(keops_kernel_backend(s.k, NULL), autob);
  ck_assert_int_eq(keops_kernel_backend(s.k, &o), autob);
  o.backend = KEOPS_BACKEND_REFERENCE;
  ck_assert_int_eq(keops_kernel_backend(s.k, &o), KEOPS_BACKEND_REFERENCE);
  ck_assert_int_eq(keops_kernel_backend(NULL, &o), KEOPS_BACKEND_AUTO);
  ck_assert_ptr_nonnull(strstr(keops_backend_describe(ctx, KEOPS_BACKEND_CPU), "CPU JIT"));
  /* AUTO is described as the backend it resolves to (on the CPU, followed by why not the GPU) */
  const char *ad = keops_backend_describe(ctx, KEOPS_BACKEND_AUTO), *bd = keops_backend_describe(ctx, autob);
  ck_assert_msg(!strncmp(ad, bd, strlen(bd)) && (autob == KEOPS_BACKEND_GPU || strstr(ad, "GPU not used")),
                "AUTO: '%s', %s: '%s'", ad, keops_backend_describe(ctx, autob), bd);
  ck_assert_ptr_nonnull(strstr(keops_backend_describe(ctx, KEOPS_BACKEND_GPU), "GPU"));
  ck_assert_str_eq(keops_backend_describe(ctx, (keops_backend)7), "");
  ck_assert_str_eq(keops_backend_describe(NULL, KEOPS_BACKEND_CPU), "");
  keops_kernel_destroy(s.k);
}
END_TEST

/* KEOPS_NUM_THREADS: a count, 0 for all cores (as num_threads = 0), anything else an error
 * naming the variable. */
START_TEST(num_threads_env) {
  static const struct {
    const char *v;
    keops_status st;
    int threads; /* 0: the online cores */
  } cases[] = {{"3", KEOPS_OK, 3}, {"0", KEOPS_OK, 0}, {"-1", KEOPS_ERROR_ARGUMENT, 0},
               {"2x", KEOPS_ERROR_ARGUMENT, 0}, {"1025", KEOPS_ERROR_ARGUMENT, 0}};
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  const char *old = getenv("KEOPS_NUM_THREADS");
  char *saved = old ? strdup(old) : NULL;
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    setenv("KEOPS_NUM_THREADS", cases[c].v, 1);
    keops_context *cx = NULL;
    keops_status st = keops_context_create(&cx);
    ck_assert_msg(st == cases[c].st, "KEOPS_NUM_THREADS=%s: %s", cases[c].v, keops_last_error());
    if (st != KEOPS_OK) {
      ck_assert_ptr_null(cx);
      ck_assert_ptr_nonnull(strstr(keops_last_error(), "KEOPS_NUM_THREADS"));
      continue;
    }
    char want[32];
    long n = cases[c].threads ? cases[c].threads : cores;
    snprintf(want, sizeof want, " %ld thread%s)", n, n > 1 ? "s" : "");
    ck_assert_msg(strstr(keops_backend_describe(cx, KEOPS_BACKEND_CPU), want), "%s: %s", cases[c].v,
                  keops_backend_describe(cx, KEOPS_BACKEND_CPU));
    keops_context_destroy(cx);
  }
  if (saved) setenv("KEOPS_NUM_THREADS", saved, 1);
  else unsetenv("KEOPS_NUM_THREADS");
  free(saved);
}
END_TEST

/* ---- per-thread errors -------------------------------------------------------------------- */

static void *other_thread(void *arg) {
  const char **seen = arg;
  seen[0] = strdup(keops_last_error());
  keops_context_create(NULL);
  seen[1] = strdup(keops_last_error());
  return NULL;
}

START_TEST(last_error_per_thread) {
  keops_kernel_desc d = seed_desc(SEED, 4, 7);
  expect_create_error(&d, KEOPS_ERROR_ARGUMENT, "axis", 0);
  const char *seen[2] = {NULL, NULL};
  pthread_t t;
  ck_assert_int_eq(pthread_create(&t, NULL, other_thread, seen), 0);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  ck_assert_str_eq(seen[0], "");
  ck_assert_str_eq(seen[1], "keops_context_create: out is NULL");
  /* the other thread's failure did not touch ours; a success does not clear it */
  const char *mine = "keops_kernel_create: axis = 7 is not a keops_axis (KEOPS_AXIS_J = 1, "
                     "KEOPS_AXIS_I = 2)";
  ck_assert_str_eq(keops_last_error(), mine);
  keops_kernel *k = make(
      &(keops_kernel_desc){.size = sizeof(keops_kernel_desc), .formula = "x", .aliases = seed_aliases, .n_aliases = 1, .axis = KEOPS_AXIS_J});
  keops_kernel_destroy(k);
  ck_assert_str_eq(keops_last_error(), mine);
  free((void *)seen[0]);
  free((void *)seen[1]);
}
END_TEST

/* ---- concurrent runs of one kernel -------------------------------------------------------- */

typedef struct run_job {
  keops_kernel *k;
  const void *const *args;
  float out[6];
  keops_status st;
} run_job;

static void *run_thread(void *arg) {
  run_job *j = arg;
  void *outs[1] = {j->out};
  for (int rep = 0; rep < 50 && j->st == KEOPS_OK; rep++)
    j->st = keops_kernel_run(j->k, 2, 3, j->args, outs, NULL);
  return NULL;
}

/* A kernel is immutable: threads running it at once all get the single-thread result. */
START_TEST(concurrent_runs) {
  small s;
  small_init(&s);
  for (int q = 0; q < 9; q++) s.y[q] = 0.1f * (float)q - 0.4f;
  for (int q = 0; q < 6; q++) s.x[q] = 0.2f * (float)q - 0.5f;
  s.a[0] = 1, s.a[1] = -1, s.a[2] = 0.5f, s.p[0] = 0.25f;
  ck_assert_int_eq(keops_kernel_run(s.k, 2, 3, s.args, s.outs, NULL), KEOPS_OK);
  enum { T = 4 };
  run_job jobs[T];
  pthread_t th[T];
  for (int t = 0; t < T; t++) {
    jobs[t] = (run_job){s.k, s.args, {0}, KEOPS_OK};
    ck_assert_int_eq(pthread_create(&th[t], NULL, run_thread, &jobs[t]), 0);
  }
  for (int t = 0; t < T; t++) {
    ck_assert_int_eq(pthread_join(th[t], NULL), 0);
    ck_assert_int_eq(jobs[t].st, KEOPS_OK);
    ck_assert_mem_eq(jobs[t].out, s.c, sizeof s.c);
  }
  keops_kernel_destroy(s.k);
}
END_TEST

/* ---- values ------------------------------------------------------------------------------- */

enum { VM = 37, VN = 53 };

/* F(i, j) of the seed formula (grad = 0) or of its gradient w.r.t. y (grad = 1), from the
 * inputs as the kernel sees them (already rounded to the dtype). */
static void seed_pair(const double *const *v, int64_t i, int64_t j, int grad, double out[3]) {
  double d = v[3][0] - v[2][j];
  for (int u = 0; u < 3; u++) {
    out[u] = d * d * exp(v[0][i * 3 + u] + v[1][j * 3 + u]);
    if (grad) out[u] *= v[4][i * 3 + u];
  }
}

/* Sum over j (axis 1, rows i) or over i (axis 0, rows j) of F, in double; abs gets the sums
 * of |F|, the scale of any summation error. */
static double *seed_reference(const double *const *v, int grad, int axis, double **abs) {
  int64_t rows = axis == 1 ? VM : VN, red = axis == 1 ? VN : VM;
  double *ref = calloc((size_t)rows * 3, sizeof(double));
  *abs = calloc((size_t)rows * 3, sizeof(double));
  for (int64_t r = 0; r < rows; r++) {
    long double acc[3] = {0, 0, 0}; /* so the reference's own rounding is negligible */
    for (int64_t q = 0; q < red; q++) {
      double f[3];
      seed_pair(v, axis == 1 ? r : q, axis == 1 ? q : r, grad, f);
      for (int u = 0; u < 3; u++) acc[u] += f[u], (*abs)[r * 3 + u] += fabs(f[u]);
    }
    for (int u = 0; u < 3; u++) ref[r * 3 + u] = (double)acc[u];
  }
  return ref;
}

/* _i: bit 0 dtype, bit 1 axis, bit 2 gradient, bit 3 backend (reference, CPU JIT). */
START_TEST(seed_values) {
  keops_dtype dt = (_i & 1) ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
  int axis = (_i >> 1) & 1, grad = (_i >> 2) & 1, jit = (_i >> 3) & 1;
  static const int64_t sizes[5] = {VM * 3, VN * 3, VN, 1, VM * 3};
  tu_rng rng = tu_seed(42 + (uint64_t)_i);
  void *args[5];
  double *seen[5];
  for (int a = 0; a < 5; a++) {
    double *raw = tu_randn(&rng, sizes[a]);
    args[a] = tu_to_dtype(raw, sizes[a], dt);
    for (int64_t q = 0; q < sizes[a]; q++) raw[q] = tu_get(args[a], dt, q);
    seen[a] = raw;
  }
  keops_kernel_desc d = seed_desc(grad ? SEED_GRAD : SEED, grad ? 5 : 4, axis);
  d.dtype = dt;
  keops_kernel *k = make(&d);
  int64_t rows = axis == 1 ? VM : VN;
  void *out = calloc((size_t)rows * 3, 8);
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = jit ? KEOPS_BACKEND_CPU : KEOPS_BACKEND_REFERENCE, .device_id = 0, .num_threads = 0};
  ck_assert_msg(keops_kernel_run(k, VM, VN, (const void *const *)args, &out, &o) == KEOPS_OK,
                "%s", keops_last_error());
  double *abs, *ref = seed_reference((const double *const *)seen, grad, axis, &abs);
  /* The reference backend evaluates exactly in double and rounds once to the dtype. The JIT
   * computes in the dtype: each term is within a few ulp (exp <= 2 ulp, 3 roundings), and the
   * block sum of N terms adds at most ~(sqrt-block depth + tile) roundings, all bounded by
   * 32 ulp of the sum of |terms| for these sizes. */
  double eps = dt == KEOPS_FLOAT32 ? 0x1p-24 : 0x1p-53;
  for (int64_t q = 0; q < rows * 3; q++) {
    double got = tu_get(out, dt, q);
    /* reference: its block sums (period sqrt(n)) in double err by at most 2 sqrt(n) eps64
     * of the |terms|, plus the final rounding to the dtype */
    double red = axis == 1 ? VN : VM;
    double tol = jit ? 32 * eps * abs[q] : 2 * sqrt(red) * 0x1p-53 * abs[q] + eps * fabs(ref[q]);
    ck_assert_msg(fabs(got - ref[q]) <= tol, "dtype %d axis %d grad %d jit %d row %lld: %.9g vs %.9g",
                  (int)dt, axis, grad, jit, (long long)q, got, ref[q]);
  }
  free(abs);
  free(ref);
  keops_kernel_destroy(k);
  for (int a = 0; a < 5; a++) {
    free(args[a]);
    free(seen[a]);
  }
  free(out);
}
END_TEST

/* A Sum whose formula simplifies to Zero writes zeros (its inputs are never read). */
START_TEST(zero_formula) {
  static const char *const formulas[] = {
      "(x - x) * Exp(y)", "Grad(Grad(x + Var(1,3,1), x, Var(2,3,0)), x, Var(3,3,0))"};
  const char *const aliases[] = {"x = Vi(0, 3)", "y = Vj(1, 3)"};
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = formulas[_i];
  d.aliases = aliases;
  d.n_aliases = _i == 0 ? 2 : 1;
  d.axis = KEOPS_AXIS_J;
  d.dtype = KEOPS_FLOAT64;
  keops_kernel *k = make(&d);
  int n = keops_kernel_arg_count(k);
  double in[4][12];
  double out[4 * 3];
  for (int q = 0; q < 12; q++) out[q] = in[0][q] = in[1][q] = in[2][q] = in[3][q] = NAN;
  const void *args[4] = {in[0], in[1], in[2], in[3]};
  void *outs[1] = {out};
  ck_assert_int_le(n, 4);
  ck_assert_int_eq(keops_kernel_output_dim(k, 0), 3);
  ck_assert_msg(keops_kernel_run(k, 4, 4, args, outs, NULL) == KEOPS_OK, "%s", keops_last_error());
  for (int q = 0; q < 12; q++)
    ck_assert_msg(out[q] == 0 && !signbit(out[q]), "out[%d] = %g", q, out[q]);
  keops_kernel_destroy(k);
}
END_TEST

static Suite *api_suite(void) {
  Suite *s = suite_create("api");
  TCase *tc = tcase_create("contract");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, status_strings);
  tcase_add_test(tc, null_handling);
  tcase_add_test(tc, queries_seed);
  tcase_add_test(tc, queries_positions);
  tcase_add_loop_test(tc, queries_outputs, 0, 2 * (int)(sizeof out_cases / sizeof *out_cases));
  tcase_add_test(tc, error_syntax_exact);
  tcase_add_test(tc, error_reduction);
  tcase_add_test(tc, error_dimension);
  tcase_add_test(tc, run_errors);
  tcase_add_test(tc, sized_structs);
  tcase_add_test(tc, run_empty_and_backends);
  tcase_add_test(tc, backend_queries);
  tcase_add_test(tc, num_threads_env);
  tcase_add_test(tc, last_error_per_thread);
  tcase_add_test(tc, concurrent_runs);
  tcase_add_loop_test(tc, seed_values, 0, 16);
  tcase_add_loop_test(tc, zero_formula, 0, 2);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  int failed = tu_run(api_suite(), 1);
  return failed != 0;
}
