/* Edge cases of the CPU JIT, against the reference interpreter (and closed forms where they
 * are simple): sizes around the lane counts, the j-split path (partial states combined by
 * red.c, so the JIT's partial layout must be red.c's), empty ranges, NaN and infinities, K > N,
 * exact ties, M*N > 2^31, thread counts and concurrent runs. Every reduction row of
 * reductions.def is run (LogSumExp with and without formula2) on the host target and on the
 * generic (scalar) target.
 *
 * The data are small integers, so that every formula value, every min/max and every sum is
 * exact in float32 and float64 whatever the order or blocking of the arithmetic: outputs must
 * equal the reference bit for bit (NaN for NaN, the same infinities, the same indices - ties
 * included: the smaller index wins, ArgKMin lists tied indices in increasing order). Only the
 * LogSumExp family involves exp and log; there each of the n online updates (an exp of <= 4u /
 * 8u, a multiply and an add of positive numbers) costs at most ~6 roundings, so outputs agree
 * within (6n + 64) u relative to 1 + |value| (u the unit roundoff of the accumulator: the
 * dtype, or float64 with the double accumulator), plus one rounding to float32. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "keops.h"
#include "testutil.h"

#ifdef __SANITIZE_ADDRESS__
#define SPLIT_N 50000 /* the reference interpreter is slow under ASan; still a j-split */
#else
#define SPLIT_N 200000
#endif

/* ---- contexts: host target and the generic (scalar) one -------------------------------------- */

static const char *const target_names[] = {"host", "generic"};
enum { NTARGET = 2 };
static keops_context *ctxs[NTARGET];

static int contexts_create(void) {
  const char *old = getenv("KEOPS_TARGET");
  char *saved = old ? strdup(old) : NULL;
  unsetenv("KEOPS_TARGET");
  int ok = keops_context_create(&ctxs[0]) == KEOPS_OK;
  setenv("KEOPS_TARGET", "generic", 1);
  ok = ok && keops_context_create(&ctxs[1]) == KEOPS_OK;
  if (saved) setenv("KEOPS_TARGET", saved, 1);
  else unsetenv("KEOPS_TARGET");
  free(saved);
  return ok;
}

/* ---- every reduction row, from the table ---------------------------------------------------- */

typedef struct ecase {
  const red_row *row;
  int f2;
} ecase;
static ecase ecases[64];
static int n_ecases;

static void build_ecases(void) {
  static const char *const names[] = {
#define X(name, family, dir, outputs, f2, weight1, fin) #name,
#include "reductions.def"
#undef X
  };
  for (size_t r = 0; r < sizeof names / sizeof names[0]; r++) {
    const red_row *row = red_find(names[r]);
    if (row->f2 != F2_REQ) ecases[n_ecases++] = (ecase){row, 0};
    if (row->f2 != F2_NO) ecases[n_ecases++] = (ecase){row, 1};
  }
}

/* x = Vi(2), y = Vj(2): F = x*y (D = 2, per component) or, for the LogSumExp family, (x|y)
 * with weights Square(y)+1 (E = 2). */
static const char *const aliases[] = {"x = Vi(2)", "y = Vj(2)"};

static keops_kernel *make(int t, const ecase *c, int axis, keops_dtype dt, int dacc, int K) {
  int lse = c->row->family == RF_LSE;
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = lse ? "(x|y)" : "x*y",
                         .aliases = aliases,
                         .n_aliases = 2,
                         .reduction = c->row->name,
                         .axis = tu_axis(axis),
                         .k = c->row->family == RF_KMIN ? K : 0,
                         .formula2 = c->f2 ? "Square(y)+1" : NULL,
                         .dtype = dt,
                         .double_accumulator = dacc};
  keops_kernel *k = NULL;
  ck_assert_msg(keops_kernel_create(ctxs[t], &d, &k) == KEOPS_OK, "%s: %s", c->row->name,
                keops_last_error());
  return k;
}

/* Output arrays of a kernel for `rows` rows (8 bytes an entry, one spare). */
typedef struct outs {
  void *o[2];
  int n;
} outs;

static outs outs_new(const keops_kernel *k, int64_t rows) {
  outs O = {{NULL, NULL}, keops_kernel_output_count(k)};
  for (int o = 0; o < O.n; o++) {
    size_t n = (size_t)(rows * keops_kernel_output_dim(k, o) + 1);
    O.o[o] = malloc(8 * n);
    memset(O.o[o], 0x5a, 8 * n); /* a sentinel no output takes */
  }
  return O;
}
static void outs_free(outs *O) { free(O->o[0]), free(O->o[1]); }

static void run(keops_kernel *k, keops_backend b, int64_t M, int64_t N, void *const *args,
                outs *O, int threads, const char *what) {
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = b, .device_id = 0, .num_threads = threads};
  keops_status st = keops_kernel_run(k, M, N, (const void *const *)args, O->o, &o);
  ck_assert_msg(st == KEOPS_OK, "%s: %s run: %s", what, b == KEOPS_BACKEND_CPU ? "CPU" : "reference",
                keops_last_error());
}

/* Inputs: x (M x 2) and y (N x 2) as doubles and in the dtype. */
typedef struct data {
  int64_t M, N;
  double *x, *y;
  void *args[2];
} data;

static data data_ints(int64_t M, int64_t N, int lo, int hi, uint64_t seed) {
  tu_rng r = tu_seed(seed);
  data D = {M, N, malloc(sizeof(double) * (size_t)(2 * M + 1)),
            malloc(sizeof(double) * (size_t)(2 * N + 1)), {NULL, NULL}};
  for (int64_t q = 0; q < 2 * M; q++) D.x[q] = floor(tu_uniform(&r, lo, hi + 1));
  for (int64_t q = 0; q < 2 * N; q++) D.y[q] = floor(tu_uniform(&r, lo, hi + 1));
  return D;
}

/* (Re)makes the dtype copies after the doubles were edited. */
static void data_cast(data *D, keops_dtype dt) {
  free(D->args[0]), free(D->args[1]);
  D->args[0] = tu_to_dtype(D->x, 2 * D->M, dt);
  D->args[1] = tu_to_dtype(D->y, 2 * D->N, dt);
}

static void data_free(data *D) {
  free(D->x), free(D->y), free(D->args[0]), free(D->args[1]);
}

static double lse_tol(keops_dtype dt, int dacc, int64_t n) {
  double u = dt == KEOPS_FLOAT32 && !dacc ? 0x1p-24 : 0x1p-53;
  return (6.0 * (double)n + 64) * u + (dt == KEOPS_FLOAT32 ? 0x1p-24 : 0);
}

/* CPU outputs against reference outputs: exact, except the LogSumExp family (lse_tol). */
static void compare(const keops_kernel *k, int lse, double tol, int64_t rows, const outs *cpu,
                    const outs *ref, const char *what) {
  for (int o = 0; o < cpu->n; o++) {
    keops_dtype dt = keops_kernel_output_dtype(k, o);
    int64_t n = rows * keops_kernel_output_dim(k, o);
    for (int64_t q = 0; q < n; q++) {
      double got = tu_get(cpu->o[o], dt, q), want = tu_get(ref->o[o], dt, q);
      int ok = isnan(want) ? isnan(got)
               : lse && isfinite(want) ? fabs(got - want) <= tol * (1 + fabs(want))
                                       : got == want;
      ck_assert_msg(ok, "%s: output %d entry %lld (row %lld): CPU %.17g, reference %.17g", what, o,
                    (long long)q, (long long)(q / keops_kernel_output_dim(k, o)), got, want);
    }
  }
}

static const char *dt_name(keops_dtype dt) { return dt == KEOPS_FLOAT32 ? "float32" : "float64"; }

/* Runs k on D on the CPU and the reference and compares. */
static void check_both(keops_kernel *k, const ecase *c, data *D, int axis, keops_dtype dt,
                       int dacc, int threads, const char *what) {
  int64_t rows = axis ? D->M : D->N, nred = axis ? D->N : D->M;
  outs cpu = outs_new(k, rows), ref = outs_new(k, rows);
  run(k, KEOPS_BACKEND_CPU, D->M, D->N, D->args, &cpu, threads, what);
  run(k, KEOPS_BACKEND_REFERENCE, D->M, D->N, D->args, &ref, 1, what);
  compare(k, c->row->family == RF_LSE, lse_tol(dt, dacc, nred), rows, &cpu, &ref, what);
  outs_free(&cpu), outs_free(&ref);
}

/* _i = ((case * 2 + axis) * 2 + dtype) * NTARGET + target, for the per-row loop tests. */
typedef struct sel {
  const ecase *c;
  int axis, t;
  keops_dtype dt;
  char what[200];
} sel;

static sel select_case(int i, const char *test) {
  sel s = {&ecases[i / (4 * NTARGET)], (i / (2 * NTARGET)) % 2, i % NTARGET,
           (i / NTARGET) % 2 ? KEOPS_FLOAT64 : KEOPS_FLOAT32, ""};
  snprintf(s.what, sizeof s.what, "%s: %s%s axis %d %s target %s", test, s.c->row->name,
           s.c->f2 ? "(formula2)" : "", s.axis, dt_name(s.dt), target_names[s.t]);
  return s;
}
#define NSEL (n_ecases * 4 * NTARGET)

/* ---- sizes around the lane counts; K > N ---------------------------------------------------- */

/* Every (M, N) in {1, 2, 15, 16, 17, 31, 33, 100}^2, K = 3 (so N = 1, 2 have K > N) and, for
 * the K-min rows, K = 9 (9 * dim 2 slots: the heap of kgen.c rather than the unrolled
 * network). Integers in [-3, 3]: many exact ties, across lanes and row blocks. */
START_TEST(sizes) {
  static const int64_t sz[] = {1, 2, 15, 16, 17, 31, 33, 100};
  sel s = select_case(_i, "sizes");
  for (int K = 3; K <= (s.c->row->family == RF_KMIN ? 9 : 3); K += 6) {
    keops_kernel *k = make(s.t, s.c, s.axis, s.dt, 0, K);
    for (int a = 0; a < 8; a++)
      for (int b = 0; b < 8; b++) {
        data D = data_ints(sz[a], sz[b], -3, 3, (uint64_t)(a * 8 + b));
        data_cast(&D, s.dt);
        char what[300];
        snprintf(what, sizeof what, "%s K=%d M=%lld N=%lld", s.what, K, (long long)sz[a], (long long)sz[b]);
        check_both(k, s.c, &D, s.axis, s.dt, 0, 0, what);
        data_free(&D);
      }
    keops_kernel_destroy(k);
  }
}
END_TEST

/* K = 10 (heap) and 6 (unrolled network) over 4 reduced indices: entries 4..K-1 of each
 * component are (+inf, -1). */
START_TEST(k_larger_than_n) {
  static const char *const names[] = {"KMin", "ArgKMin", "KMin_ArgKMin"};
  for (int t = 0; t < NTARGET; t++)
    for (int r = 0; r < 3; r++)
      for (int axis = 0; axis < 4; axis++) {
        ecase c = {red_find(names[r]), 0};
        int K = axis < 2 ? 10 : 6;
        keops_kernel *k = make(t, &c, axis % 2, KEOPS_FLOAT32, 0, K);
        int ax = axis % 2;
        data D = data_ints(ax ? 5 : 4, ax ? 4 : 5, -3, 3, 9);
        data_cast(&D, KEOPS_FLOAT32);
        char what[200];
        snprintf(what, sizeof what, "K > N: %s K=%d axis %d target %s", names[r], K, ax, target_names[t]);
        check_both(k, &c, &D, ax, KEOPS_FLOAT32, 0, 0, what);
        outs O = outs_new(k, 5);
        run(k, KEOPS_BACKEND_CPU, D.M, D.N, D.args, &O, 0, what);
        int vo = c.row->outputs & RO_VAL ? 0 : -1, io = c.row->outputs & RO_IDX ? O.n - 1 : -1;
        for (int64_t row = 0; row < 5; row++)
          for (int q = 4 * 2; q < K * 2; q++) { /* k-major: entries k*D + d, D = 2 */
            if (vo >= 0) ck_assert_msg(((float *)O.o[vo])[row * 2 * K + q] == INFINITY, "%s", what);
            if (io >= 0) ck_assert_msg(((int64_t *)O.o[io])[row * 2 * K + q] == -1, "%s", what);
          }
        outs_free(&O);
        data_free(&D);
        keops_kernel_destroy(k);
      }
}
END_TEST

/* ---- small M, large N: the j-split path ----------------------------------------------------- */

/* M = 3 rows over N = 200000 with 2 threads: the runtime splits j in halves [0, 100000),
 * [100000, 200000) and combines the JIT's partial states with red.c. Integers in [-20, 20]
 * (sums stay below 2^24: exact in float32) with the extreme values +-100 planted at j = 5,
 * 99999, 100000, 150000, 199999 and +-99 at 7, 100001, 123456, so that ties straddle the split;
 * x has rows 1, -1, 2 (which flips min and max). Both axes (M and N swapped for axis 0). K-min
 * rows: K = 1 (unrolled network) and 10 (heap: K * dim 2 > 16); on the host target also 8
 * (the largest unrolled) and 100. */
START_TEST(j_split) {
  sel s = select_case(_i, "j-split");
  int64_t big = SPLIT_N, M = s.axis ? 3 : big, N = s.axis ? big : 3;
  data D = data_ints(M, N, -20, 20, 31);
  double *red = s.axis ? D.y : D.x, *row = s.axis ? D.x : D.y;
  static const int64_t at100[] = {5, 99999, 100000, 150000, 199999}, at99[] = {7, 100001, 123456};
  for (int q = 0; q < 5; q++)
    for (int c = 0; c < 2; c++) red[2 * (at100[q] * big / 200000) + c] = c ? -100 : 100;
  for (int q = 0; q < 3; q++)
    for (int c = 0; c < 2; c++) red[2 * (at99[q] * big / 200000) + c] = c ? -99 : 99;
  static const double rowv[3][2] = {{1, -1}, {-1, 2}, {2, 1}};
  for (int r = 0; r < 3; r++) row[2 * r] = rowv[r][0], row[2 * r + 1] = rowv[r][1];
  data_cast(&D, s.dt);
  int sums = s.c->row->family == RF_SUM || s.c->row->family == RF_LSE;
  for (int dacc = 0; dacc < (s.dt == KEOPS_FLOAT32 && sums ? 2 : 1); dacc++)
    for (int q = 0; q < (s.c->row->family != RF_KMIN ? 1 : s.t ? 2 : 4); q++) {
      static const int ks[] = {1, 10, 8, 100}; /* the reference is the slow part */
      int K = ks[q];
      keops_kernel *k = make(s.t, s.c, s.axis, s.dt, dacc, K);
      char what[300];
      snprintf(what, sizeof what, "%s K=%d%s", s.what, K, dacc ? " double accumulator" : "");
      check_both(k, s.c, &D, s.axis, s.dt, dacc, 2, what);
      keops_kernel_destroy(k);
    }
  data_free(&D);
}
END_TEST

/* ---- empty ranges ---------------------------------------------------------------------------- */

/* The neutral value of output column q of row `row` of an empty reduction. */
static double neutral(const red_row *row, int out_is_idx, int q) {
  if (out_is_idx) return -1;
  switch (row->family) {
  case RF_SUM: return 0;
  case RF_MINMAX:
  case RF_KMIN: return row->dir < 0 ? INFINITY : -INFINITY;
  default:
    return row->fin == FIN_LOG ? -INFINITY : row->fin == FIN_SOFTMAX ? NAN : q == 0 ? -INFINITY : 0;
  }
}

/* N = 0 (axis 1) or M = 0 (axis 0): 5 rows of neutral values, as the reference writes them.
 * M = 0 (axis 1) or N = 0 (axis 0): no rows, nothing written; inputs without rows are NULL. */
START_TEST(empty_ranges) {
  sel s = select_case(_i, "empty");
  keops_kernel *k = make(s.t, s.c, s.axis, s.dt, 0, 3);
  data D = data_ints(s.axis ? 5 : 0, s.axis ? 0 : 5, -3, 3, 3);
  data_cast(&D, s.dt);
  free(D.args[s.axis ? 1 : 0]); /* an input without rows need not exist */
  D.args[s.axis ? 1 : 0] = NULL;
  check_both(k, s.c, &D, s.axis, s.dt, 0, 0, s.what);
  outs O = outs_new(k, 5);
  run(k, KEOPS_BACKEND_CPU, D.M, D.N, D.args, &O, 0, s.what);
  for (int o = 0; o < O.n; o++) {
    int isidx = keops_kernel_output_dtype(k, o) == KEOPS_INT64, w = keops_kernel_output_dim(k, o);
    for (int64_t q = 0; q < 5 * w; q++) {
      double got = tu_get(O.o[o], keops_kernel_output_dtype(k, o), q);
      double want = neutral(s.c->row, isidx, (int)(q % w));
      ck_assert_msg(isnan(want) ? isnan(got) : got == want, "%s: entry %lld is %g, neutral %g",
                    s.what, (long long)q, got, want);
    }
  }
  outs_free(&O);
  /* no output rows: the outputs are not touched */
  outs none = outs_new(k, 0);
  unsigned char before[8];
  memcpy(before, none.o[0], 8);
  int64_t M = s.axis ? 0 : 7, N = s.axis ? 7 : 0;
  data E = data_ints(M, N, -3, 3, 4);
  data_cast(&E, s.dt);
  free(E.args[s.axis ? 0 : 1]);
  E.args[s.axis ? 0 : 1] = NULL;
  run(k, KEOPS_BACKEND_CPU, M, N, E.args, &none, 0, s.what);
  ck_assert_msg(!memcmp(before, none.o[0], 8), "%s: no rows, but the output was written", s.what);
  outs_free(&none);
  data_free(&E);
  data_free(&D);
  keops_kernel_destroy(k);
}
END_TEST

/* ---- NaN and infinities ---------------------------------------------------------------------- */

/* y holds NaN, +inf, -inf and 0 among integers (0 * inf = NaN, inf - inf in sums = NaN), and
 * its component 1 is NaN for every j in the second half; x holds 0 too. Min/Max never pick a
 * NaN, an all-NaN range gives (+-inf, -1), infinities keep their index; Sum and LogSumExp
 * propagate as the reference does. */
START_TEST(nan_inf) {
  sel s = select_case(_i, "NaN/inf");
  keops_kernel *k = make(s.t, s.c, s.axis, s.dt, 0, 3);
  data D = data_ints(19, 23, -2, 2, 5);
  double sp[4] = {NAN, INFINITY, -INFINITY, 0};
  for (int64_t j = 0; j < D.N; j++) {
    if (j % 4 == 1) D.y[2 * j] = sp[(j / 4) % 4];
    if (j >= D.N / 2) D.y[2 * j + 1] = NAN;
  }
  for (int64_t i = 0; i < D.M; i += 3) D.x[2 * i] = INFINITY * (i % 2 ? 1 : -1);
  data_cast(&D, s.dt);
  check_both(k, s.c, &D, s.axis, s.dt, 0, 0, s.what);
  data_free(&D);
  keops_kernel_destroy(k);
}
END_TEST

/* Every elementwise row (and the ST rows that compare) on all combinations of special values
 * NaN, +-inf, +-0 and a few numbers, one term per output row (x, y, z = Vi(1), N = 1: Sum over
 * one j is that term), so each value is compared alone: NaN-ness and infinities exactly, finite
 * values within 32u max(|F|, 1) (an op rounds once or is a vmath function of <= 4u / 8u; the
 * inputs here are exact and the domains of Mod and Round land on no jump). The sign of a zero
 * is not compared: the reference's sum adds it to +0. */
static const double specials[] = {NAN, INFINITY, -INFINITY, 0.0, -0.0, 1, -1, 0.5, -2.5, 100};
#define NSPEC ((int)(sizeof specials / sizeof specials[0]))

typedef struct scase {
  char formula[64];
  int nf, dim; /* arguments, their dim (ST formulas: x = Vi(3), combinations of 3 values) */
} scase;
static scase scases[128];
static int n_scases;

static void build_scases(void) {
  static const struct {
    const char *op, *params;
  } params[] = {{"Pow", "3"}, {"Pow", "-2"}, {"Round", "2"}, {"Round", "0"}, {"ClampInt", "-1,1"}};
  static const char *const st[] = {"Max(x)", "Min(x)", "ArgMax(x)", "ArgMin(x)", "Normalize(x)",
                                   "Norm2(x)", "OneHot(Elem(x,0),4)",
                                   /* constant half-integer exponents: sqrt, not pow */
                                   "Powf(x,RatCst(-3,2))", "Powf(x,RatCst(1,2))", "Powf(x,RatCst(-1,2))",
                                   "Powf(x,RatCst(5,2))"};
  for (int op = 0; op < OP_COUNT; op++) {
    if (dag_ops[op].kind != K_EW) continue;
    const char *sig = dag_ops[op].sig;
    int nf = (int)strspn(sig, "f"), found = 0;
    for (size_t q = 0; q <= sizeof params / sizeof params[0]; q++) {
      int last = q == sizeof params / sizeof params[0];
      if (last ? found : strcmp(params[q].op, dag_ops[op].name)) continue;
      found = 1;
      scase *c = &scases[n_scases++];
      int at = snprintf(c->formula, sizeof c->formula, "%s(x%s%s", dag_ops[op].name,
                        nf > 1 ? ",y" : "", nf > 2 ? ",z" : "");
      if (sig[nf]) snprintf(c->formula + at, sizeof c->formula - (size_t)at, ",%s)",
                            last ? (sig[nf + 1] ? "2,2" : "2") : params[q].params);
      else snprintf(c->formula + at, sizeof c->formula - (size_t)at, ")");
      c->nf = nf, c->dim = 1;
    }
  }
  for (size_t q = 0; q < sizeof st / sizeof st[0]; q++) {
    scase *c = &scases[n_scases++];
    snprintf(c->formula, sizeof c->formula, "%s", st[q]);
    c->nf = 3, c->dim = 3; /* the 3 components of x run over the combinations */
  }
}

START_TEST(special_values) {
  const scase *c = &scases[_i / (2 * NTARGET)];
  int t = _i % NTARGET;
  keops_dtype dt = (_i / NTARGET) % 2 ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
  /* w = Vj(1), unused by the formula, follows the arguments */
  const char *const al3[] = {"x = Vi(1)", "y = Vi(1)", "z = Vi(1)"};
  int vec = c->dim == 3, nargs = vec ? 1 : c->nf;
  const char *al[4] = {vec ? "x = Vi(3)" : al3[0], al3[1], al3[2], NULL};
  al[nargs] = "w = Vj(1)";
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = c->formula, .aliases = al, .n_aliases = nargs + 1,
                         .axis = KEOPS_AXIS_J, .dtype = dt};
  keops_kernel *k = NULL;
  ck_assert_msg(keops_kernel_create(ctxs[t], &d, &k) == KEOPS_OK, "%s: %s", c->formula,
                keops_last_error());
  int64_t M = 1;
  for (int a = 0; a < c->nf; a++) M *= NSPEC;
  double *v[3], w = 1;
  void *args[4];
  for (int a = 0; a < nargs; a++) v[a] = malloc(sizeof(double) * (size_t)(M * c->dim));
  for (int64_t i = 0; i < M; i++)
    for (int a = 0, rest = (int)i; a < c->nf; a++, rest /= NSPEC) {
      double s = specials[rest % NSPEC];
      if (vec) v[0][i * 3 + a] = s;
      else v[a][i] = s;
    }
  for (int a = 0; a < nargs; a++) args[a] = tu_to_dtype(v[a], M * c->dim, dt);
  args[nargs] = tu_to_dtype(&w, 1, dt);
  outs cpu = outs_new(k, M), ref = outs_new(k, M);
  char what[200];
  snprintf(what, sizeof what, "special values: Sum(%s), %s, target %s", c->formula, dt_name(dt),
           target_names[t]);
  run(k, KEOPS_BACKEND_CPU, M, 1, args, &cpu, 0, what);
  run(k, KEOPS_BACKEND_REFERENCE, M, 1, args, &ref, 1, what);
  int od = keops_kernel_output_dim(k, 0);
  double u = dt == KEOPS_FLOAT32 ? 0x1p-24 : 0x1p-53;
  for (int64_t q = 0; q < M * od; q++) {
    double got = tu_get(cpu.o[0], dt, q), want = tu_get(ref.o[0], dt, q);
    int ok = isnan(want) ? isnan(got)
             : isfinite(want) ? fabs(got - want) <= 32 * u * fmax(fabs(want), 1)
                              : got == want;
    int64_t i = q / od;
    ck_assert_msg(ok, "%s: inputs (%g, %g, %g) [%d]: CPU %.17g, reference %.17g", what,
                  vec ? v[0][3 * i] : v[0][i], c->nf > 1 ? (vec ? v[0][3 * i + 1] : v[1][i]) : 0.0,
                  c->nf > 2 ? (vec ? v[0][3 * i + 2] : v[2][i]) : 0.0, (int)(q % od), got, want);
  }
  outs_free(&cpu), outs_free(&ref);
  for (int a = 0; a < nargs; a++) free(v[a]), free(args[a]);
  free(args[nargs]);
  keops_kernel_destroy(k);
}
END_TEST

/* Powf(x, k/2) for odd k, lowered to sqrt, divisions and products (lower.c, lower_half_pow),
 * on 2000 x log-uniform in [1e-2, 1e2] (results normal in both dtypes) against pow in double:
 * each of its roundings adds at most 0.5 ulp (<= u of the value), about m + 2 of them with
 * m = (|k| - 1) / 2, so (m + 2) 2u |want| with margin, against pow's 2 ulp (4u). */
START_TEST(half_powers) {
  static const int ks[] = {-15, -5, -3, -1, 1, 3, 5, 15};
  keops_dtype dt = _i ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
  double u = dt == KEOPS_FLOAT32 ? 0x1p-24 : 0x1p-53;
  enum { M = 2000 };
  double x[M], zero = 0;
  for (int i = 0; i < M; i++) x[i] = pow(10.0, -2 + 4.0 * i / (M - 1));
  void *xa = tu_to_dtype(x, M, dt), *ya = tu_to_dtype(&zero, 1, dt);
  for (size_t q = 0; q < sizeof ks / sizeof *ks; q++) {
    char f[64];
    snprintf(f, sizeof f, "Powf(x-y,RatCst(%d,2))", ks[q]);
    const char *const al[] = {"x = Vi(1)", "y = Vj(1)"};
    keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = f, .aliases = al, .n_aliases = 2, .axis = KEOPS_AXIS_J, .dtype = dt};
    keops_kernel *k = NULL;
    ck_assert_msg(keops_kernel_create(ctxs[0], &d, &k) == KEOPS_OK, "%s", keops_last_error());
    outs o = outs_new(k, M);
    void *args[2] = {xa, ya};
    run(k, KEOPS_BACKEND_CPU, M, 1, args, &o, 0, f);
    int m = (abs(ks[q]) - 1) / 2;
    for (int i = 0; i < M; i++) {
      double xi = tu_get(xa, dt, i), want = pow(xi, ks[q] / 2.0), got = tu_get(o.o[0], dt, i);
      ck_assert_msg(fabs(got - want) <= (m + 2) * 2 * u * want, "%s, %s, x = %.17g: %.17g, want %.17g",
                    f, dt_name(dt), xi, got, want);
    }
    outs_free(&o);
    keops_kernel_destroy(k);
  }
  free(xa), free(ya);
}
END_TEST

/* ---- ties ---------------------------------------------------------------------------------------- */

typedef struct vi {
  double v;
  int64_t i;
} vi;
static int vi_cmp(const void *a, const void *b) {
  const vi *p = a, *q = b;
  if (p->v != q->v) return p->v < q->v ? -1 : 1;
  return (p->i > q->i) - (p->i < q->i);
}

/* KMin_ArgKMin (K = 6), Min_ArgMin and Max_ArgMax of x*y on integers in [-1, 1], 37 x 41:
 * about a third of the values are tied at each level. Checked against an independent stable
 * sort: the smaller index first. */
START_TEST(ties) {
  static const char *const names[] = {"KMin_ArgKMin", "Min_ArgMin", "Max_ArgMax"};
  int t = _i / 2, axis = _i % 2;
  data D = data_ints(37, 41, -1, 1, 6);
  data_cast(&D, KEOPS_FLOAT32);
  int64_t rows = axis ? D.M : D.N, nred = axis ? D.N : D.M;
  vi *list = malloc(sizeof(vi) * (size_t)nred);
  for (int r = 0; r < 3; r++) {
    ecase c = {red_find(names[r]), 0};
    int K = r == 0 ? 6 : 1, sgn = c.row->dir < 0 ? 1 : -1;
    keops_kernel *k = make(t, &c, axis, KEOPS_FLOAT32, 0, K);
    outs O = outs_new(k, rows);
    char what[200];
    snprintf(what, sizeof what, "ties: %s axis %d target %s", names[r], axis, target_names[t]);
    run(k, KEOPS_BACKEND_CPU, D.M, D.N, D.args, &O, 0, what);
    for (int64_t row = 0; row < rows; row++)
      for (int d = 0; d < 2; d++) {
        for (int64_t q = 0; q < nred; q++) {
          double xv = D.x[2 * (axis ? row : q) + d], yv = D.y[2 * (axis ? q : row) + d];
          list[q] = (vi){sgn * xv * yv, q};
        }
        qsort(list, (size_t)nred, sizeof *list, vi_cmp);
        for (int q = 0; q < K; q++) {
          int64_t at = row * 2 * K + q * 2 + d;
          ck_assert_msg(((float *)O.o[0])[at] == sgn * list[q].v &&
                            ((int64_t *)O.o[1])[at] == list[q].i,
                        "%s: row %lld comp %d slot %d: (%g, %lld), want (%g, %lld)", what,
                        (long long)row, d, q, ((float *)O.o[0])[at],
                        (long long)((int64_t *)O.o[1])[at], sgn * list[q].v, (long long)list[q].i);
        }
      }
    outs_free(&O);
    keops_kernel_destroy(k);
  }
  free(list);
  data_free(&D);
}
END_TEST

/* ---- M*N > 2^31 -------------------------------------------------------------------------------- */

/* Sum of (x|y), dim 1, float32, M = 70000, N = 40000 (2.8e9 pairs), all threads. Integers in
 * [-2, 2] keep every partial sum exact, so each row is exactly x_i * sum_j y_j (axis 1) or
 * y_j * sum_i x_i (axis 0): all rows are checked against that, and a few rows - around
 * i * N = 2^31 among them - against a direct double loop. */
START_TEST(more_than_2_31_pairs) {
  enum { M = 70000, N = 40000 };
  int axis = _i;
  const char *const al[] = {"x = Vi(1)", "y = Vj(1)"};
  keops_kernel_desc d = {.size = sizeof(keops_kernel_desc), .formula = "(x|y)", .aliases = al, .n_aliases = 2, .axis = tu_axis(axis)};
  keops_kernel *k = NULL;
  ck_assert_msg(keops_kernel_create(ctxs[0], &d, &k) == KEOPS_OK, "%s", keops_last_error());
  tu_rng r = tu_seed(8);
  float *x = malloc(sizeof(float) * M), *y = malloc(sizeof(float) * N);
  double sx = 0, sy = 0;
  for (int i = 0; i < M; i++) sx += x[i] = (float)floor(tu_uniform(&r, -2, 3));
  for (int j = 0; j < N; j++) sy += y[j] = (float)floor(tu_uniform(&r, -2, 3));
  int64_t rows = axis ? M : N, nred = axis ? N : M;
  float *out = malloc(sizeof(float) * (size_t)rows);
  const void *args[2] = {x, y};
  void *outs1[1] = {out};
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_CPU, .device_id = 0, .num_threads = 0};
  ck_assert_msg(keops_kernel_run(k, M, N, args, outs1, &o) == KEOPS_OK, "%s", keops_last_error());
  const float *rv = axis ? x : y, *red = axis ? y : x;
  for (int64_t q = 0; q < rows; q++)
    ck_assert_msg(out[q] == rv[q] * (axis ? sy : sx), "axis %d row %lld: %g, want %g", axis,
                  (long long)q, out[q], rv[q] * (axis ? sy : sx));
  int64_t mid = ((int64_t)1 << 31) / nred, probe[] = {0, 1, mid - 1, mid, mid + 1, rows - 1};
  for (int p = 0; p < 6; p++) {
    double want = 0;
    for (int64_t t = 0; t < nred; t++) want += (double)rv[probe[p]] * red[t];
    ck_assert_msg(out[probe[p]] == want, "axis %d row %lld: %g, direct loop %g", axis,
                  (long long)probe[p], out[probe[p]], want);
  }
  free(x), free(y), free(out);
  keops_kernel_destroy(k);
}
END_TEST

/* ---- threads ------------------------------------------------------------------------------------ */

/* Row-split path (M = 1000 rows, N = 300): 1 and 2 threads give the same bits, every row. */
START_TEST(one_vs_two_threads) {
  sel s = select_case(_i, "1 vs 2 threads");
  keops_kernel *k = make(s.t, s.c, s.axis, s.dt, 0, 3);
  data D = data_ints(s.axis ? 1000 : 300, s.axis ? 300 : 1000, -50, 50, 10);
  data_cast(&D, s.dt);
  outs a = outs_new(k, 1000), b = outs_new(k, 1000);
  run(k, KEOPS_BACKEND_CPU, D.M, D.N, D.args, &a, 1, s.what);
  run(k, KEOPS_BACKEND_CPU, D.M, D.N, D.args, &b, 2, s.what);
  for (int o = 0; o < a.n; o++)
    ck_assert_msg(!memcmp(a.o[o], b.o[o], 8 * (size_t)(1000 * keops_kernel_output_dim(k, o))),
                  "%s: output %d differs", s.what, o);
  outs_free(&a), outs_free(&b);
  data_free(&D);
  keops_kernel_destroy(k);
}
END_TEST

typedef struct job {
  keops_kernel *k;
  data *D;
  outs O;
  const outs *want;
  int64_t rows;
  int ok;
} job;

static void *job_run(void *arg) {
  job *J = arg;
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_CPU, .device_id = 0, .num_threads = 0};
  J->ok = 1;
  for (int rep = 0; rep < 10 && J->ok; rep++) {
    J->ok = keops_kernel_run(J->k, J->D->M, J->D->N, (const void *const *)J->D->args, J->O.o, &o) ==
            KEOPS_OK;
    for (int q = 0; q < J->O.n && J->ok; q++)
      J->ok = !memcmp(J->O.o[q], J->want->o[q],
                      8 * (size_t)(J->rows * keops_kernel_output_dim(J->k, q)));
  }
  return NULL;
}

/* One kernel run from 4 threads at once, 10 times each: every run gives the serial bits. Row
 * path (Sum, M = 500) and j-split path (KMin_ArgKMin K = 5, M = 3, N = 50000). */
START_TEST(concurrent_runs) {
  static const struct { const char *name; int64_t M, N; } cfg[2] = {{"Sum", 500, 300},
                                                                    {"KMin_ArgKMin", 3, 50000}};
  ecase c = {red_find(cfg[_i].name), 0};
  keops_kernel *k = make(0, &c, 1, KEOPS_FLOAT32, 0, 5);
  data D = data_ints(cfg[_i].M, cfg[_i].N, -9, 9, 12);
  data_cast(&D, KEOPS_FLOAT32);
  outs want = outs_new(k, D.M);
  run(k, KEOPS_BACKEND_CPU, D.M, D.N, D.args, &want, 0, cfg[_i].name);
  enum { T = 4 };
  job jobs[T];
  pthread_t th[T];
  for (int t = 0; t < T; t++) {
    jobs[t] = (job){k, &D, outs_new(k, D.M), &want, D.M, 0};
    ck_assert_int_eq(pthread_create(&th[t], NULL, job_run, &jobs[t]), 0);
  }
  for (int t = 0; t < T; t++) {
    ck_assert_int_eq(pthread_join(th[t], NULL), 0);
    ck_assert_msg(jobs[t].ok, "%s: thread %d got a different result or an error (%s)", cfg[_i].name,
                  t, keops_last_error());
    outs_free(&jobs[t].O);
  }
  outs_free(&want);
  data_free(&D);
  keops_kernel_destroy(k);
}
END_TEST

int main(void) {
  build_ecases();
  build_scases();
  if (!contexts_create()) {
    fprintf(stderr, "test_cpu_edge: no context: %s\n", keops_last_error());
    return 1;
  }
  Suite *s = suite_create("cpu_edge");
  TCase *tc = tcase_create("edge");
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, sizes, 0, NSEL);
  tcase_add_test(tc, k_larger_than_n);
  tcase_add_loop_test(tc, j_split, 0, NSEL);
  tcase_add_loop_test(tc, empty_ranges, 0, NSEL);
  tcase_add_loop_test(tc, nan_inf, 0, NSEL);
  tcase_add_loop_test(tc, special_values, 0, n_scases * 2 * NTARGET);
  tcase_add_loop_test(tc, ties, 0, 2 * NTARGET);
  tcase_add_loop_test(tc, half_powers, 0, 2);
  tcase_add_loop_test(tc, more_than_2_31_pairs, 0, 2);
  tcase_add_loop_test(tc, one_vs_two_threads, 0, NSEL);
  tcase_add_loop_test(tc, concurrent_runs, 0, 2);
  suite_add_tcase(s, tc);
  /* One process unless CK_FORK says otherwise: a forked test would start its own JIT and
   * worker pool and recompile what the context's cache already holds (10x slower). */
  int failed = tu_run(s, getenv("CK_FORK") != NULL);
  for (int t = 0; t < NTARGET; t++) keops_context_destroy(ctxs[t]);
  return failed != 0;
}
