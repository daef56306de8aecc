/* Valid formulas must never kill the process: regression tests of the defects found by
 * fuzzing (issue 7), each against the reference interpreter or a closed form.
 *   - LLVM 19's instcombine fixpoint check exited the process on Sin(ReLU(-x)) and kin;
 *   - an LLVM fatal error is a KEOPS_ERROR_COMPILE, not an exit (test_fatal.c);
 *   - K-min reductions with large K compile in bounded time (heaps, not unrolled networks);
 *   - constant subexpressions fold in double, as the reference computes them;
 *   - comparisons of |v| with 0 do not lose v's sign (an LLVM 19 miscompile);
 *   - kernels outlive their context safely.
 * Tolerances: the formulas below are well conditioned (no cancellation), so the CPU's float32
 * result is within a few roundings of the double reference: 8 u relative to max(1, |ref|) with
 * u = 2^-24 (float32) or 2^-53 (float64), plus vmath's 1-2 ulp. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keops.h"
#include "testutil.h"

static double seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* A context for target name ("host", "avx2", "generic"), or NULL when this CPU lacks it. */
static keops_context *context_for(const char *target) {
  const char *old = getenv("KEOPS_TARGET");
  char *saved = old ? strdup(old) : NULL;
  setenv("KEOPS_TARGET", target, 1);
  keops_context *ctx = NULL;
  keops_status st = keops_context_create(&ctx);
  if (saved) setenv("KEOPS_TARGET", saved, 1);
  else unsetenv("KEOPS_TARGET");
  free(saved);
  if (st == KEOPS_ERROR_UNSUPPORTED) return NULL;
  ck_assert_msg(st == KEOPS_OK, "context for %s: %s", target, keops_last_error());
  return ctx;
}

static keops_kernel *make(keops_context *ctx, const char *formula, const char *const *aliases, int n,
                          const char *red, int axis, keops_dtype dt, int k) {
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = formula;
  d.aliases = aliases;
  d.n_aliases = n;
  d.reduction = red;
  d.axis = tu_axis(axis);
  d.dtype = dt;
  d.k = k;
  keops_kernel *kern = NULL;
  ck_assert_msg(keops_kernel_create(ctx, &d, &kern) == KEOPS_OK, "%s: %s", formula, keops_last_error());
  return kern;
}

/* Runs k (of the given axis) on the CPU and the reference over x (M rows) and y (N rows),
 * both of dim 1, and compares the first output within tol relative to max(1, |ref|). */
static void compare_cpu_ref(keops_kernel *k, int axis, const double *x, int64_t M, const double *y,
                            int64_t N, keops_dtype dt, double tol, const char *what) {
  void *args[2] = {tu_to_dtype(x, M, dt), tu_to_dtype(y, N, dt)};
  int64_t rows = M > N ? M : N; /* enough for either axis */
  size_t sz = (size_t)rows * (size_t)keops_kernel_output_dim(k, 0) * 8;
  void *cpu = malloc(sz), *ref = malloc(sz);
  keops_run_options o = keops_run_options_init();
  o.backend = KEOPS_BACKEND_CPU;
  ck_assert_msg(keops_kernel_run(k, M, N, (const void *const *)args, &cpu, &o) == KEOPS_OK, "%s: %s",
                what, keops_last_error());
  o.backend = KEOPS_BACKEND_REFERENCE;
  ck_assert_msg(keops_kernel_run(k, M, N, (const void *const *)args, &ref, &o) == KEOPS_OK, "%s: %s",
                what, keops_last_error());
  int64_t n = (axis ? M : N) * keops_kernel_output_dim(k, 0);
  for (int64_t q = 0; q < n; q++) {
    double got = tu_get(cpu, dt, q), want = tu_get(ref, dt, q);
    int ok = isfinite(want) ? fabs(got - want) <= tol * fmax(1, fabs(want))
                            : (isnan(want) ? isnan(got) : got == want);
    ck_assert_msg(ok, "%s: entry %lld: CPU %.17g, reference %.17g", what, (long long)q, got, want);
  }
  free(cpu), free(ref), free(args[0]), free(args[1]);
}

/* ---- 1. the instcombine fixpoint exit ------------------------------------------------------ */

static const char *const fixpoint_formulas[] = {"Sin(ReLU(-x))",  "Acos(ReLU(-x))",      "Asin(ReLU(-x))",
                                                "Atan(ReLU(-x))", "SinXDivX(ReLU(-x))", "Atan2(ReLU(-x), x)"};
static const char *const targets[] = {"host", "avx2", "generic"};

/* Sum of formula f (x = Vi(1) over 37 rows, y = Vj(1) over 5) on every CPU target, both
 * dtypes and axes, against the reference: a sum of up to 37 terms of size <= term_max,
 * 8 u each. */
static void every_target(const char *f, const double *x, const double *y, double term_max) {
  static const char *const aliases[] = {"x = Vi(1)", "y = Vj(1)"};
  for (int t = 0; t < 3; t++) {
    keops_context *ctx = context_for(targets[t]);
    if (!ctx) continue;
    for (int dt = 0; dt < 2; dt++)
      for (int axis = 0; axis < 2; axis++) {
        keops_dtype d = dt ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
        keops_kernel *k = make(ctx, f, aliases, 2, "Sum", axis, d, 0);
        char what[160];
        snprintf(what, sizeof what, "%s %s %s axis %d", f, targets[t], dt ? "float64" : "float32", axis);
        compare_cpu_ref(k, axis, x, 37, y, 5, d, (dt ? 0x1p-53 : 0x1p-24) * 8 * 37 * term_max, what);
        keops_kernel_destroy(k);
      }
    keops_context_destroy(ctx);
  }
}

/* Each formula, every CPU target, both dtypes and axes: compiles (the process survives) and
 * agrees with the reference. x in [-1, 1] keeps Asin/Acos defined. */
START_TEST(instcombine_fixpoint) {
  double x[37], y[5];
  tu_rng r = tu_seed(7);
  for (int q = 0; q < 37; q++) x[q] = tu_uniform(&r, -1, 1);
  for (int q = 0; q < 5; q++) y[q] = tu_uniform(&r, -1, 1);
  every_target(fixpoint_formulas[_i], x, y, 4); /* terms of size <= pi */
}
END_TEST

/* ---- 2. comparisons of |v| with 0 ----------------------------------------------------------- */

/* LLVM 19 took `fcmp oge fabs(v), 0` for a fact about v's sign, so the select that picks v
 * was assumed non-negative and Log's (Sqrt's) negative-argument case was folded away:
 * Log(IfElse(Abs(x),x,1.5)) at x = -0.227 gave -1421 instead of NaN. x and y in [-1, 1]:
 * half the rows are NaN, the others finite. */
static const char *const fabs_cmp_formulas[] = {
    "Log(IfElse(Abs(x),x,1.5)) + y", "Sqrt(IfElse(Abs(y)-0.0,y,1.5)) * x",
    "Log(IfElse(Abs(x),x,1.5)) * Sqrt(IfElse(Abs(y),y,1.5))"};

START_TEST(fabs_compare) {
  double x[37], y[5];
  tu_rng r = tu_seed(11);
  for (int q = 0; q < 37; q++) x[q] = tu_uniform(&r, -1, 1);
  for (int q = 0; q < 5; q++) y[q] = tu_uniform(&r, -1, 1);
  y[0] = 0.5, y[1] = -0.25; /* both kinds of j for the reduction over i */
  every_target(fabs_cmp_formulas[_i], x, y, 17); /* terms of size <= |log(2^-24)| ~ 17 */
}
END_TEST

/* ---- 3. K-min with large K ----------------------------------------------------------------- */

/* K up to the API's limit compiles in bounded time (the unrolled network took 11 s at K = 64
 * and overflowed the stack near K = 100), and matches the reference exactly: the values are
 * small integers, so every SqDist is exact and ties are decided by index alone. */
START_TEST(kmin_large_k) {
  static const int ks[] = {17, 100, 1000, 100000};
  int K = ks[_i];
  keops_context *ctx = context_for("host");
  static const char *const aliases[] = {"x = Vi(1)", "y = Vj(1)"};
  double x[40], y[150];
  tu_rng r = tu_seed(11);
  for (int q = 0; q < 40; q++) x[q] = floor(tu_uniform(&r, -10, 11));
  for (int q = 0; q < 150; q++) y[q] = floor(tu_uniform(&r, -10, 11));
  for (int axis = 0; axis < 2; axis++) {
    keops_kernel *k = make(ctx, "SqDist(x,y)", aliases, 2, "KMin_ArgKMin", axis, KEOPS_FLOAT32, K);
    int64_t rows = axis ? 40 : 150, width = K;
    void *args[2] = {tu_to_dtype(x, 40, KEOPS_FLOAT32), tu_to_dtype(y, 150, KEOPS_FLOAT32)};
    void *cpu[2] = {malloc((size_t)(rows * width) * 4), malloc((size_t)(rows * width) * 8)};
    void *ref[2] = {malloc((size_t)(rows * width) * 4), malloc((size_t)(rows * width) * 8)};
    keops_run_options o = keops_run_options_init();
    o.backend = KEOPS_BACKEND_CPU;
    double t0 = seconds();
    ck_assert_msg(keops_kernel_run(k, 40, 150, (const void *const *)args, cpu, &o) == KEOPS_OK, "%s",
                  keops_last_error());
    double dt = seconds() - t0;
    /* generous: ~0.1 s measured; a regression to unrolling takes minutes */
    ck_assert_msg(dt < 20, "K = %d: compile and first run took %.1f s", K, dt);
    o.backend = KEOPS_BACKEND_REFERENCE;
    ck_assert_int_eq(keops_kernel_run(k, 40, 150, (const void *const *)args, ref, &o), KEOPS_OK);
    ck_assert_msg(!memcmp(cpu[0], ref[0], (size_t)(rows * width) * 4), "K = %d axis %d: values differ", K, axis);
    ck_assert_msg(!memcmp(cpu[1], ref[1], (size_t)(rows * width) * 8), "K = %d axis %d: indices differ", K, axis);
    for (int c = 0; c < 2; c++) free(cpu[c]), free(ref[c]), free(args[c]);
    keops_kernel_destroy(k);
  }
  keops_context_destroy(ctx);
}
END_TEST

/* ---- 4. constant folding ------------------------------------------------------------------- */

START_TEST(float_constants_fold) {
  keops_context *ctx = context_for("host");
  static const char *const aliases[] = {"x = Vi(1)", "y = Vj(1)"};
  double x[3] = {1, -2, 0.5}, y[2] = {1, 2};
  /* 1e20*1e20 overflows float32; folded in double it is 1e10*x, summed over N = 2 */
  keops_kernel *k = make(ctx, "1e20*1e20/1e30*x", aliases, 2, "Sum", 1, KEOPS_FLOAT32, 0);
  compare_cpu_ref(k, 1, x, 3, y, 2, KEOPS_FLOAT32, 0x1p-22, "1e20*1e20/1e30*x");
  keops_kernel_destroy(k);
  /* 9e111 is inf in float32, 9e111015 in double: the comparison is 0 (the sum of zeros) */
  k = make(ctx, "(9e111>=9e111015)*x+y", aliases, 2, "Sum", 1, KEOPS_FLOAT32, 0);
  compare_cpu_ref(k, 1, x, 3, y, 2, KEOPS_FLOAT32, 0, "(9e111>=9e111015)*x+y");
  keops_kernel_destroy(k);
  k = make(ctx, "Exp(1e3*1e-3)*x", aliases, 2, "Sum", 1, KEOPS_FLOAT64, 0);
  double out[3];
  void *outs[1] = {out};
  const void *args[2] = {x, y};
  ck_assert_int_eq(keops_kernel_run(k, 3, 2, args, outs, NULL), KEOPS_OK);
  for (int q = 0; q < 3; q++) ck_assert_double_eq_tol(out[q], 2 * M_E * x[q], 1e-14);
  keops_kernel_destroy(k);
  keops_context_destroy(ctx);
}
END_TEST

/* ---- 4b. Sin and Cos of huge arguments ---------------------------------------------------- */

/* Through the whole API, every CPU target, both dtypes: Sin and Cos of |x| up to the dtype's
 * largest finite value against long-double libm (sinl, cosl) of the same, dtype-rounded x;
 * within the vmath bound (vmath.h): 2 ulp float32, 4 ulp float64, relative. Not double libm:
 * glibc's cos is 7.4 ulp off at Muller's worst case 6381956970095103 * 2^797, where keops and
 * cosl give -4.6871659242546276e-19 (bc agrees). Before Payne-Hanek reduction, Sin(1e30) was
 * -0.706 where libm gives 0.0093. */
START_TEST(sincos_huge_arguments) {
  static const char *const aliases[] = {"x = Vi(1)", "y = Vj(1)"};
  enum { M = 300 };
  double x[M], y[1] = {1};
  tu_rng r = tu_seed(5);
  for (int t = 0; t < 3; t++) {
    keops_context *ctx = context_for(targets[t]);
    if (!ctx) continue;
    for (int dt = 0; dt < 2; dt++) {
      double top = dt ? 308 : 38.5; /* log10 of the largest finite value */
      for (int q = 0; q < M; q++) x[q] = (q & 1 ? -1 : 1) * pow(10, tu_uniform(&r, dt ? 9 : 5, top));
      x[0] = 1e30, x[1] = dt ? 0x1.6ac5b262ca1ffp+849 : 0x1.921fb6p+23; /* near multiples of pi/2 */
      if (!dt)
        for (int q = 0; q < M; q++) x[q] = (float)x[q];
      for (int c = 0; c < 2; c++) {
        keops_dtype d = dt ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
        keops_kernel *k = make(ctx, c ? "Cos(x)*y" : "Sin(x)*y", aliases, 2, "Sum", 1, d, 0);
        void *args[2] = {tu_to_dtype(x, M, d), tu_to_dtype(y, 1, d)};
        double out64[M];
        void *outs[1] = {out64};
        ck_assert_msg(keops_kernel_run(k, M, 1, (const void *const *)args, outs, NULL) == KEOPS_OK, "%s",
                      keops_last_error());
        double ulp = dt ? 0x1p-52 : 0x1p-23, bound = dt ? 4 : 2;
        for (int q = 0; q < M; q++) {
          double got = tu_get(out64, d, q);
          double want = (double)(c ? cosl((long double)x[q]) : sinl((long double)x[q]));
          ck_assert_msg(fabs(got - want) <= bound * ulp * fabs(want),
                        "%s(%.17g) %s target %s: %.17g, libm %.17g (%.1f ulp)", c ? "Cos" : "Sin", x[q],
                        dt ? "float64" : "float32", targets[t], got, want, fabs(got - want) / (ulp * fabs(want)));
        }
        free(args[0]), free(args[1]);
        keops_kernel_destroy(k);
      }
    }
    keops_context_destroy(ctx);
  }
}
END_TEST

/* ---- 5. kernels outliving their context ---------------------------------------------------- */

START_TEST(kernel_outlives_context) {
  keops_context *ctx = context_for("host");
  static const char *const aliases[] = {"x = Vi(1)", "y = Vj(1)"};
  keops_kernel *a = make(ctx, "x*y", aliases, 2, "Sum", 1, KEOPS_FLOAT64, 0);
  keops_kernel *b = make(ctx, "x+y", aliases, 2, "Max", 1, KEOPS_FLOAT64, 0);
  double x[3] = {1, 2, 3}, y[2] = {4, 5}, out[3];
  const void *args[2] = {x, y};
  void *outs[1] = {out};
  ck_assert_int_eq(keops_kernel_run(a, 3, 2, args, outs, NULL), KEOPS_OK); /* compiled now */
  keops_context_destroy(ctx);
  /* the compiled kernel runs again; the other compiles on the released context's JIT */
  ck_assert_int_eq(keops_kernel_run(a, 3, 2, args, outs, NULL), KEOPS_OK);
  for (int q = 0; q < 3; q++) ck_assert_double_eq(out[q], 9 * x[q]);
  keops_kernel_destroy(a);
  ck_assert_int_eq(keops_kernel_run(b, 3, 2, args, outs, NULL), KEOPS_OK);
  for (int q = 0; q < 3; q++) ck_assert_double_eq(out[q], 5 + x[q]);
  keops_kernel_destroy(b); /* frees the context */
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("robust");
  TCase *tc = tcase_create("robust");
  tcase_set_timeout(tc, 600);
  tcase_add_loop_test(tc, instcombine_fixpoint, 0, 6);
  tcase_add_loop_test(tc, fabs_compare, 0, 3);
  tcase_add_loop_test(tc, kmin_large_k, 0, 4);
  tcase_add_test(tc, float_constants_fold);
  tcase_add_test(tc, sincos_huge_arguments);
  tcase_add_test(tc, kernel_outlives_context);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(suite(), 0) ? EXIT_FAILURE : EXIT_SUCCESS; }
