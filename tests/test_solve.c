/* keops_kernel_solve (KeOps's KernelSolve): solutions against a dense Cholesky solve in double
 * and residuals measured by double loops, on the reference and CPU backends, both axes, both
 * dtypes, with block-sparse ranges; the symbolic linearity check; every refusal (not a Sum,
 * a parameter, not square, not linear, not positive definite, the iteration cap) with its
 * message.
 *
 * Tolerances: CG stops when the measured residual |b - A x| <= tol |b|. In float64 (tol 1e-12)
 * the error of x is then at most cond(A) tol |x|; A = 0.5 Id + K with K a Gaussian Gram
 * matrix has cond(A) <= (0.5 + N) / 0.5, so 1e-12 * 400 relative bounds x for N = 150. In
 * float32 (tol 1e-5) the residual is checked, in double, within 2e-4: it was measured by a
 * float32 product whose own error is at most N u |K| |x| / |b| (u = 6e-8; |K| <= 10 for these
 * 150 points of width 0.55 in [0, 2]^2, so cond(A) <= 21 and |x| <= 2 |b|): 1.8e-4. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keops.h"
#include "testutil.h"

enum { SN = 150 };
static keops_context *ctx; /* its GPU is the emulator, so the GPU backend runs here too */
static void setup(void) { ctx = tu_emulator_context(); }
static void teardown(void) { keops_context_destroy(ctx); }

static keops_kernel *make(const char *formula, const char *const *al, int nal, keops_axis axis,
                          keops_dtype dt, const char *reduction) {
  return tu_kernel(ctx, formula, NULL, reduction, 0, al, nal, axis, dt);
}

static double gam_used; /* g as the kernel sees it (rounded to its dtype) */

static double gauss(const double *x, int64_t i, int64_t j, const int64_t *lab) {
  if (lab && lab[i] != lab[j]) return 0; /* block-diagonal ranges */
  double d2 = 0;
  for (int c = 0; c < 2; c++) d2 += (x[2 * i + c] - x[2 * j + c]) * (x[2 * i + c] - x[2 * j + c]);
  return exp(-gam_used * d2);
}

/* Solves (alpha I + K) z = b densely by Cholesky, in double. */
static void dense_solve(const double *x, double alpha, const double *b, double *z, const int64_t *lab) {
  double *L = calloc(SN * SN, sizeof *L);
  for (int i = 0; i < SN; i++)
    for (int j = 0; j <= i; j++) {
      double s = gauss(x, i, j, lab) + (i == j ? alpha : 0);
      for (int q = 0; q < j; q++) s -= L[i * SN + q] * L[j * SN + q];
      L[i * SN + j] = i == j ? sqrt(s) : s / L[j * SN + j];
    }
  for (int i = 0; i < SN; i++) { /* L y = b, then L^T z = y */
    double s = b[i];
    for (int q = 0; q < i; q++) s -= L[i * SN + q] * z[q];
    z[i] = s / L[i * SN + i];
  }
  for (int i = SN - 1; i >= 0; i--) {
    double s = z[i];
    for (int q = i + 1; q < SN; q++) s -= L[q * SN + i] * z[q];
    z[i] = s / L[i * SN + i];
  }
  free(L);
}

/* _i: bit 0 float64, bit 1 axis I (the unknown a Vi), then the backend (reference, CPU,
 * emulated GPU), then ranges. */
START_TEST(solves) {
  int f64 = _i & 1, axis_i = (_i >> 1) & 1, be = (_i / 4) % 3, ranged = _i / 12;
  keops_dtype dt = f64 ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
  const char *const alj[] = {"x = Vi(2)", "y = Vj(2)", "b = Vj(1)", "g = Pm(1)"};
  const char *const ali[] = {"x = Vi(2)", "y = Vj(2)", "b = Vi(1)", "g = Pm(1)"};
  keops_kernel *k = make("Exp(-g*SqDist(x,y))*b", axis_i ? ali : alj, 4,
                         axis_i ? KEOPS_AXIS_I : KEOPS_AXIS_J, dt, "Sum");
  tu_rng g = tu_seed(3 + (uint64_t)_i);
  double x[2 * SN], b[SN], z[SN], want[SN], gam = 1 / 0.3;
  int64_t lab[SN];
  for (int q = 0; q < 2 * SN; q++) x[q] = tu_uniform(&g, 0, 2);
  for (int q = 0; q < SN; q++) b[q] = tu_normal(&g), lab[q] = q * 5 / SN; /* 5 clusters */
  void *xa = tu_to_dtype(x, 2 * SN, dt), *ba = tu_to_dtype(b, SN, dt), *ga = tu_to_dtype(&gam, 1, dt);
  double xr[2 * SN], br[SN]; /* the values as the kernel sees them */
  gam_used = tu_get(ga, dt, 0);
  for (int q = 0; q < 2 * SN; q++) xr[q] = tu_get(xa, dt, q);
  for (int q = 0; q < SN; q++) br[q] = tu_get(ba, dt, q);
  void *za = tu_to_dtype(b, SN, dt);
  const void *args[] = {xa, xa, ba, ga};
  keops_ranges *r = NULL;
  unsigned char keep[25];
  for (int q = 0; q < 25; q++) keep[q] = q % 6 == 0;
  ck_assert_int_eq(keops_ranges_from_labels(lab, SN, 5, lab, SN, 5, keep, &r), KEOPS_OK);
  keops_run_options ro = keops_run_options_init();
  static const keops_backend backends[] = {KEOPS_BACKEND_REFERENCE, KEOPS_BACKEND_CPU, KEOPS_BACKEND_GPU};
  ro.backend = backends[be];
  ro.ranges = ranged ? r : NULL;
  keops_solve_options so = keops_solve_options_init();
  so.alpha = 0.5;
  so.tol = f64 ? 1e-12 : 1e-5;
  so.run = &ro;
  keops_solve_info info = keops_solve_info_init();
  keops_status st = keops_kernel_solve(k, 2, SN, SN, args, za, &so, &info);
  ck_assert_msg(st == KEOPS_OK, "%s", keops_last_error());
  ck_assert_msg(info.iterations > 1 && info.iterations < 200 && info.residual <= so.tol,
                "iterations %d, residual %g", info.iterations, info.residual);
  for (int q = 0; q < SN; q++) z[q] = tu_get(za, dt, q);
  /* the residual in double, of x as returned */
  double rn = 0, bn = 0;
  for (int i = 0; i < SN; i++) {
    double s = 0.5 * z[i] - br[i];
    for (int j = 0; j < SN; j++) s += gauss(xr, i, j, ranged ? lab : NULL) * z[j];
    rn += s * s, bn += br[i] * br[i];
  }
  ck_assert_msg(sqrt(rn / bn) <= (f64 ? 1e-11 : 2e-4), "residual %g", sqrt(rn / bn));
  if (f64) {
    dense_solve(xr, 0.5, br, want, ranged ? lab : NULL);
    double en = 0, wn = 0;
    for (int q = 0; q < SN; q++) en += (z[q] - want[q]) * (z[q] - want[q]), wn += want[q] * want[q];
    ck_assert_msg(sqrt(en / wn) <= 4e-10, "relative error %g to the Cholesky solve", sqrt(en / wn));
  }
  keops_ranges_destroy(r);
  free(xa), free(ba), free(ga), free(za);
  keops_kernel_destroy(k);
}
END_TEST

/* The linearity check: formulas linear in b pass, the others are refused by name. */
START_TEST(linearity) {
  static const struct {
    const char *f;
    int linear;
  } cases[] = {
      {"Exp(-SqDist(x,y))*b", 1},
      {"b*Exp(-SqDist(x,y))*2 - 3*b*(x|y)", 1},
      {"(x|y)*b/Sqrt(1+SqNorm2(y))", 1},
      {"Exp(-SqDist(x,y))*Square(b)", 0},
      {"Exp(-SqDist(x,y))*(b+1)", 0},
      {"Exp(-SqDist(x,y))", 0},
      {"Exp(-SqDist(x,y)*b)", 0},
      {"Abs(b)*Exp(-SqDist(x,y))", 0},
  };
  const char *const al[] = {"x = Vi(2)", "y = Vj(2)", "b = Vj(1)"};
  double x[4] = {0, 0, 1, 1}, b[2] = {1, 2}, z[2];
  const void *args[] = {x, x, b};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    keops_kernel *k = make(cases[c].f, al, 3, KEOPS_AXIS_J, KEOPS_FLOAT64, NULL);
    keops_solve_options so = keops_solve_options_init();
    so.alpha = 1;
    keops_status st = keops_kernel_solve(k, 2, 2, 2, args, z, &so, NULL);
    if (cases[c].linear) {
      ck_assert_msg(st != KEOPS_ERROR_DIMENSION, "%s refused: %s", cases[c].f, keops_last_error());
    } else {
      ck_assert_msg(st == KEOPS_ERROR_DIMENSION, "%s accepted", cases[c].f);
      ck_assert_str_eq(keops_last_error(), "keops_kernel_solve: the formula is not linear in b (input 2)");
    }
    keops_kernel_destroy(k);
  }
}
END_TEST

static void expect(keops_status got, keops_status st, const char *msg) {
  ck_assert_msg(got == st, "status %s, expected %s (%s)", keops_status_string(got),
                keops_status_string(st), keops_last_error());
  ck_assert_msg(strstr(keops_last_error(), msg), "message '%s' lacks '%s'", keops_last_error(), msg);
}

START_TEST(refusals) {
  const char *const al[] = {"x = Vi(2)", "y = Vj(2)", "b = Vj(1)", "c = Vj(2)", "g = Pm(1)"};
  double x[6] = {0, 0, 1, 1, 2, 0}, b[3] = {1, 2, 3}, c[6] = {0}, gg = 1, z[6];
  const void *args[] = {x, x, b, c, &gg};
  keops_kernel *k = make("Exp(-g*SqDist(x,y))*b", al, 5, KEOPS_AXIS_J, KEOPS_FLOAT64, NULL);
  keops_solve_options so = keops_solve_options_init();
  so.alpha = 0.1;
  expect(keops_kernel_solve(NULL, 2, 3, 3, args, z, &so, NULL), KEOPS_ERROR_ARGUMENT, "kernel is NULL");
  expect(keops_kernel_solve(k, 4, 3, 3, args, z, &so, NULL), KEOPS_ERROR_DIMENSION,
         "input 4 is a parameter (Pm)");
  expect(keops_kernel_solve(k, 3, 3, 3, args, z, &so, NULL), KEOPS_ERROR_DIMENSION,
         "input 3 has dim 2 but the output dim 1: K is not square");
  expect(keops_kernel_solve(k, 7, 3, 3, args, z, &so, NULL), KEOPS_ERROR_ARGUMENT,
         "var = 7 is not an input of the kernel (it has 5)");
  expect(keops_kernel_solve(k, 2, 2, 3, args, z, &so, NULL), KEOPS_ERROR_DIMENSION,
         "input 2 has 3 rows but the output 2 (M = 2, N = 3): K is not square");
  expect(keops_kernel_solve(k, 2, -1, 3, args, z, &so, NULL), KEOPS_ERROR_ARGUMENT, "negative");
  expect(keops_kernel_solve(k, 2, 3, 3, args, NULL, &so, NULL), KEOPS_ERROR_ARGUMENT, "x is NULL");
  so.alpha = -1;
  expect(keops_kernel_solve(k, 2, 3, 3, args, z, &so, NULL), KEOPS_ERROR_ARGUMENT, "alpha = -1");
  so.alpha = 0.1;
  keops_run_options dp = keops_run_options_init();
  dp.device_pointers = 1;
  so.run = &dp;
  expect(keops_kernel_solve(k, 2, 3, 3, args, z, &so, NULL), KEOPS_ERROR_ARGUMENT, "device_pointers");
  so.run = NULL;
  so.size = 0;
  expect(keops_kernel_solve(k, 2, 3, 3, args, z, &so, NULL), KEOPS_ERROR_ARGUMENT,
         "opts->size is 0");
  so = keops_solve_options_init();
  keops_solve_info info = {0};
  expect(keops_kernel_solve(k, 2, 3, 3, args, z, &so, &info), KEOPS_ERROR_ARGUMENT, "info->size is 0");
  keops_kernel_destroy(k);

  k = make("Exp(-g*SqDist(x,y))*b", al, 5, KEOPS_AXIS_J, KEOPS_FLOAT64, "Max");
  expect(keops_kernel_solve(k, 2, 3, 3, args, z, &so, NULL), KEOPS_ERROR_ARGUMENT,
         "the kernel's reduction is Max; only a Sum is a linear map");
  keops_kernel_destroy(k);

  /* -K is negative definite: CG finds it on its first direction */
  k = make("-Exp(-g*SqDist(x,y))*b", al, 5, KEOPS_AXIS_J, KEOPS_FLOAT64, NULL);
  info = keops_solve_info_init();
  expect(keops_kernel_solve(k, 2, 3, 3, args, z, &so, &info), KEOPS_ERROR_ARGUMENT,
         "alpha Id + K is not positive definite");
  ck_assert_int_eq(info.iterations, 1);
  keops_kernel_destroy(k);
}
END_TEST

/* Two batch elements with their own kernel width g and right-hand side, solved together; each
 * element's residual checked by a double loop. */
START_TEST(batched) {
  const char *const al[] = {"x = Vi(2)", "y = Vj(2)", "b = Vj(1)", "g = Pm(1)"};
  keops_kernel *k = make("Exp(-g*SqDist(x,y))*b", al, 4, KEOPS_AXIS_J, KEOPS_FLOAT64, "Sum");
  tu_rng r = tu_seed(12);
  double x[2 * SN], b[2 * SN], z[2 * SN], g[2] = {1 / 0.3, 1 / 0.1};
  for (int q = 0; q < 2 * SN; q++) x[q] = tu_uniform(&r, 0, 2), b[q] = tu_normal(&r);
  const int64_t ext[] = {1, 1, 2, 2}; /* x and y shared, b and g per element */
  keops_batch batch = {1, ext};
  keops_run_options ro = keops_run_options_init();
  ro.batch = &batch;
  keops_solve_options so = keops_solve_options_init();
  so.alpha = 0.5;
  so.tol = 1e-12;
  so.run = &ro;
  ck_assert_msg(keops_kernel_solve(k, 2, SN, SN, (const void *[]){x, x, b, g}, z, &so, NULL) == KEOPS_OK,
                "%s", keops_last_error());
  for (int e = 0; e < 2; e++) {
    double rn = 0, bn = 0;
    gam_used = g[e];
    for (int i = 0; i < SN; i++) {
      double s = 0.5 * z[e * SN + i] - b[e * SN + i];
      for (int j = 0; j < SN; j++) s += gauss(x, i, j, NULL) * z[e * SN + j];
      rn += s * s, bn += b[e * SN + i] * b[e * SN + i];
    }
    ck_assert_msg(sqrt(rn / bn) <= 1e-11, "element %d: residual %g", e, sqrt(rn / bn));
  }
  const int64_t bcast[] = {1, 1, 1, 2}; /* b broadcast: K maps one vector to two */
  batch.extents = bcast;
  ck_assert_int_eq(keops_kernel_solve(k, 2, SN, SN, (const void *[]){x, x, b, g}, z, &so, NULL),
                   KEOPS_ERROR_DIMENSION);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_solve: the unknown (input 2) has batch extent 1 "
                                       "in dimension 0, the batch 2: K is not square");
  keops_kernel_destroy(k);
}
END_TEST

/* The cap, b = 0, and a larger info struct (a newer header) keeping its extra bytes. */
START_TEST(cap_and_zero) {
  const char *const al[] = {"x = Vi(2)", "y = Vj(2)", "b = Vj(1)"};
  keops_kernel *k = make("Exp(-SqDist(x,y)*10)*b", al, 3, KEOPS_AXIS_J, KEOPS_FLOAT64, NULL);
  tu_rng g = tu_seed(9);
  double x[2 * SN], b[SN], z[SN];
  for (int q = 0; q < 2 * SN; q++) x[q] = tu_uniform(&g, 0, 1);
  for (int q = 0; q < SN; q++) b[q] = tu_normal(&g);
  const void *args[] = {x, x, b};
  keops_solve_options so = keops_solve_options_init();
  so.alpha = 1e-3;
  so.max_iter = 3;
  struct {
    keops_solve_info i;
    int later;
  } big = {keops_solve_info_init(), 77};
  big.i.size = sizeof big;
  expect(keops_kernel_solve(k, 2, SN, SN, args, z, &so, &big.i), KEOPS_ERROR_NOT_CONVERGED,
         "keops_kernel_solve: no convergence in 3 products: residual ");
  ck_assert_int_eq(big.i.iterations, 3);
  ck_assert(big.i.residual > 1e-10 && big.i.residual < 10);
  ck_assert_int_eq(big.later, 77);
  for (int q = 0; q < SN; q++) b[q] = 0, z[q] = 1;
  so.max_iter = 0;
  ck_assert_int_eq(keops_kernel_solve(k, 2, SN, SN, args, z, &so, &big.i), KEOPS_OK);
  ck_assert_int_eq(big.i.iterations, 0);
  for (int q = 0; q < SN; q++) ck_assert(z[q] == 0);
  keops_kernel_destroy(k);
}
END_TEST

int main(void) {
  Suite *s = suite_create("solve");
  TCase *tc = tcase_create("solve");
  tcase_set_timeout(tc, 300);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_loop_test(tc, solves, 0, 24);
  tcase_add_test(tc, linearity);
  tcase_add_test(tc, refusals);
  tcase_add_test(tc, cap_and_zero);
  tcase_add_test(tc, batched);
  suite_add_tcase(s, tc);
  return tu_run(s, 0) ? EXIT_FAILURE : EXIT_SUCCESS;
}
