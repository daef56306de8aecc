/* The CPU JIT against the reference interpreter: the foundation matrix, compiled.
 *
 * For each forced CPU target (KEOPS_TARGET = avx512, avx2, generic: 16, 8 and 1 float32
 * lanes; one context each, created with the variable set):
 *   - every row of ops.def inside a Sum reduction: EW rows generated from the table (every
 *     argument of dim 3, each one alone of dim 1 - broadcast -, all of dim 1; the argument
 *     categories rotated so each argument is a Vi, a Vj and a Pm at least once), ST, SG, LF
 *     and AD rows through hand-written formulas, both dtypes;
 *   - every row of reductions.def (LogSumExp with and without formula2), both axes, both
 *     dtypes, K in {1, 3, 10}, formulas (or weights) of dim 1 and 3, sum schemes DIRECT /
 *     BLOCK / KAHAN and the float64 accumulator for float32;
 *   - the sum schemes honoured by the compiled code (not only accepted);
 *   - coverage: every op row and every reduction row was compared (the tables span the tests,
 *     so the runner does not fork).
 *
 * Tolerances, data domains and discontinuities: the model shared with test_gpu, in matrix.h
 * (no flush to zero here: mx_ftz_term stays 0). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "matrix.h"
#include "testutil.h"

/* Under AddressSanitizer each case runs on one target (rotating), not on all three: the
 * sanitizer checks the library's C code, which is the same for every target, and the whole
 * matrix would take minutes. */
#if defined(__SANITIZE_ADDRESS__)
#define TARGETS_PER_CASE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TARGETS_PER_CASE 1
#endif
#endif
#ifndef TARGETS_PER_CASE
#define TARGETS_PER_CASE NTARGET
#endif

#define RED_M 37
#define RED_N 45

/* ---- targets -------------------------------------------------------------------------------- */

static const char *const target_names[] = {"avx512", "avx2", "generic"};
enum { NTARGET = 3 };
static keops_context *ctxs[NTARGET]; /* NULL: the host cannot run that target (skipped) */

static void contexts_create(void) {
  const char *old = getenv("KEOPS_TARGET");
  char *saved = old ? strdup(old) : NULL;
  for (int t = 0; t < NTARGET; t++) {
    setenv("KEOPS_TARGET", target_names[t], 1);
    keops_status st = keops_context_create(&ctxs[t]);
    if (st != KEOPS_OK)
      fprintf(stderr, "test_cpu: target %s skipped: %s\n", target_names[t], keops_last_error());
  }
  if (saved) setenv("KEOPS_TARGET", saved, 1);
  else unsetenv("KEOPS_TARGET");
  free(saved);
}

/* The matrix runner: P on the CPU backend of the target its kernel was created for. */
static void cpu_run(prob *P, int how) {
  (void)how;
  keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_CPU, .device_id = 0};
  keops_status st = keops_kernel_run(P->k, P->M, P->N, (const void *const *)P->arr, P->out[0], &o);
  ck_assert_msg(st == KEOPS_OK, "%s: CPU run: %s", P->what, keops_last_error());
}

static void target_suffix(char *buf, size_t n, int t) { snprintf(buf, n, ", target %s", target_names[t]); }

/* ---- the op matrix (cases in matrix.c) -------------------------------------------------------- */

static int n_op_cases;

/* _i = (case * TARGETS_PER_CASE + k) * 2 + dtype, target (case + k) % NTARGET; the axis
 * alternates with case and target. */
START_TEST(op_matrix) {
  int ci = _i / (2 * TARGETS_PER_CASE), t = (ci + (_i / 2) % TARGETS_PER_CASE) % NTARGET;
  if (!ctxs[t]) return;
  char suffix[32];
  target_suffix(suffix, sizeof suffix, t);
  mx_op_case(ctxs[t], &mx_op_cases[ci], (ci + t) % 2, mx_dtype_of(_i % 2), 100 + (uint64_t)_i,
             cpu_run, 0, suffix);
}
END_TEST

START_TEST(op_cases_generated) {
  ck_assert_msg(n_op_cases > 0, "an EW row has a signature the case generator does not handle, or "
                                "MAXOPCASES is too small");
}
END_TEST

START_TEST(every_op_row_exercised) { mx_check_every_op_row(); }
END_TEST

/* ---- the reduction matrix (configurations in matrix.c), on every target ------------------- */

static rcfg rcfgs[NTARGET * MAXRCFG];
static int n_rcfgs;

/* The shared configurations once per target (TARGETS_PER_CASE == NTARGET), or once in all
 * with the target rotating (ASan). */
static int build_rcfgs(void) {
  rcfg base[MAXRCFG];
  int nb = mx_build_rcfgs(base, MAXRCFG), n = 0, all = 0;
  if (nb < 0) return -1;
  for (int t = 0; t < TARGETS_PER_CASE; t++)
    for (int q = 0; q < nb; q++) {
      rcfgs[n] = base[q];
      rcfgs[n++].target = TARGETS_PER_CASE == NTARGET ? t : all++ % NTARGET;
    }
  return n;
}

START_TEST(reduction_matrix) {
  const rcfg *g = &rcfgs[_i];
  if (!ctxs[g->target]) return;
  char suffix[32];
  target_suffix(suffix, sizeof suffix, g->target);
  mx_red_case(ctxs[g->target], g, RED_M, RED_N, 5000 + (uint64_t)_i, cpu_run, 0, suffix);
}
END_TEST

START_TEST(every_reduction_row_exercised) { mx_check_every_reduction_row(n_rcfgs); }
END_TEST

/* ---- the sum schemes are honoured by the compiled code ----------------------------------------- */

/* sum_j y_j with y_j = 1 + d_j, d_j in [0, 2^-10) (float32; 2^-39 for float64), n = 10^5, one
 * thread (the kernel's own loop, no j-split). A plain running sum drops most of each d_j once
 * the sum passes 2^14 (float32), a relative error around 1e-4; the schemes must do better:
 *   KAHAN: <= 3u sum|y| (compensated: a few roundings whatever n);
 *   BLOCK: <= (2 sqrt(n) + 1) u sum|y| (blocks of ~sqrt(n) terms, as red.c defines it);
 *   float64 accumulator (float32): <= 2u sum|y| (terms exact in double, rounding of the result);
 *   DIRECT: the generic (n + 1) u sum|y| only. */
START_TEST(sum_schemes_honoured) {
  enum { M = 3, N = 100000 };
  int t = _i / 2;
  keops_dtype dt = mx_dtype_of(_i % 2);
  if (!ctxs[t]) return;
  double u = mx_unit(dt), *y = malloc(sizeof(double) * N), frac = 0, A = N;
  tu_rng r = tu_seed(77);
  for (int j = 0; j < N; j++) {
    y[j] = 1 + tu_uniform(&r, 0, dt == KEOPS_FLOAT32 ? 0x1p-10 : 0x1p-39);
    y[j] = dt == KEOPS_FLOAT32 ? (double)(float)y[j] : y[j];
    frac += y[j] - 1; /* y - 1 is exact; so is the sum N + frac to ~1e-11 of frac */
  }
  void *yd = tu_to_dtype(y, N, dt);
  float xs[M] = {0};
  double xd[M] = {0};
  const char *const al[] = {"x = Vi(1)", "y = Vj(1)"};
  for (int s = KEOPS_SUM_DIRECT; s <= KEOPS_SUM_KAHAN; s++)
    for (int dacc = 0; dacc < (dt == KEOPS_FLOAT32 ? 2 : 1); dacc++) {
      keops_kernel_desc desc = {.size = sizeof(keops_kernel_desc), .formula = "x+y", .aliases = al, .n_aliases = 2, .axis = KEOPS_AXIS_J,
                                .dtype = dt, .sum_scheme = (keops_sum_scheme)s,
                                .double_accumulator = dacc};
      keops_kernel *k = NULL;
      ck_assert_msg(keops_kernel_create(ctxs[t], &desc, &k) == KEOPS_OK, "%s", keops_last_error());
      double out[M];
      float outf[M];
      const void *args[2] = {dt == KEOPS_FLOAT32 ? (void *)xs : (void *)xd, yd};
      void *outs[1] = {dt == KEOPS_FLOAT32 ? (void *)outf : (void *)out};
      keops_run_options o = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_CPU, .device_id = 0, .num_threads = 1};
      ck_assert_msg(keops_kernel_run(k, M, N, args, outs, &o) == KEOPS_OK, "%s", keops_last_error());
      double bound = dacc ? 2 * u * A
                     : s == KEOPS_SUM_KAHAN ? 3 * u * A
                     : s == KEOPS_SUM_BLOCK ? (2 * ceil(sqrt(N)) + 1) * u * A
                                            : (N + 1) * u * A;
      for (int i = 0; i < M; i++) {
        double got = dt == KEOPS_FLOAT32 ? outf[i] : out[i];
        double err = fabs((got - N) - frac); /* got - N is exact (Sterbenz) */
        ck_assert_msg(err <= bound,
                      "target %s, %s, scheme %s%s: sum %.17g, exact %.17g, error %.3g u*sum "
                      "(bound %.3g)",
                      target_names[t], dt == KEOPS_FLOAT32 ? "float32" : "float64",
                      mx_scheme_name((keops_sum_scheme)s), dacc ? " + double accumulator" : "", got,
                      N + frac, err / (u * A), bound / (u * A));
      }
      keops_kernel_destroy(k);
    }
  free(yd);
  free(y);
}
END_TEST

int main(void) {
  mx_backend = "CPU";
  n_op_cases = mx_build_op_cases(MX_CPU);
  n_rcfgs = build_rcfgs();
  contexts_create();
  Suite *s = suite_create("cpu");
  TCase *ops = tcase_create("ops");
  tcase_set_timeout(ops, 1200);
  tcase_add_test(ops, op_cases_generated);
  tcase_add_loop_test(ops, op_matrix, 0, n_op_cases > 0 ? n_op_cases * TARGETS_PER_CASE * 2 : 0);
  tcase_add_test(ops, every_op_row_exercised);
  suite_add_tcase(s, ops);
  TCase *red = tcase_create("reductions");
  tcase_set_timeout(red, 1200);
  tcase_add_loop_test(red, reduction_matrix, 0, n_rcfgs > 0 ? n_rcfgs : 0);
  tcase_add_loop_test(red, sum_schemes_honoured, 0, NTARGET * 2);
  tcase_add_test(red, every_reduction_row_exercised);
  suite_add_tcase(s, red);
  int failed = tu_run(s, 0); /* the coverage tables span the tests */
  if (getenv("TEST_CPU_STATS"))
    for (int f = 0; f < 4; f++)
      fprintf(stderr, "family %d: largest |diff|/tol float32 %.3g, float64 %.3g\n", f,
              mx_worst_ratio[f][0], mx_worst_ratio[f][1]);
  for (int t = 0; t < NTARGET; t++) keops_context_destroy(ctxs[t]);
  return failed != 0;
}
