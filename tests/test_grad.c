/* keops_kernel_grad: the gradient kernels of reductions against central finite differences
 * of the reference backend in float64, for Sum, LogSumExp (with and without a weight) and
 * SumSoftMaxWeight, on both axes, with respect to a Vi, a Vj and a Pm input; the CPU JIT and
 * the emulated GPU against the reference on the same gradient kernels; a second derivative (the gradient of a
 * gradient kernel); Arg reductions (zero) and the refusals.
 *
 * Tolerance: a central difference with step h on a smooth function errs by about
 * h^2 |L'''| / 6 + u |L| / h (u = 1.1e-16); with h = 1e-5 and values of order 1 that is below
 * 1e-9, so 1e-7 (1 + |g|) leaves a wide margin while catching any wrong term (a missing
 * softmax weight or sign changes the gradient at order 1). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keops.h"
#include "testutil.h"

enum { GM = 7, GN = 6, NIN = 5 };
static keops_context *ctx; /* its GPU is the emulator, so the GPU backend runs here too */
static void setup(void) { ctx = tu_emulator_context(); }
static void teardown(void) { keops_context_destroy(ctx); }

static const char *const aliases[NIN] = {"x = Vi(2)", "y = Vj(2)", "b = Vj(1)", "g = Pm(1)", "w = Vj(2)"};
static const int dims[NIN] = {2, 2, 1, 1, 2}, cats[NIN] = {0, 1, 1, 2, 1};

static keops_kernel *make(const char *f, const char *f2, const char *red, keops_axis axis) {
  return tu_kernel(ctx, f, f2, red, red && strstr(red, "KMin") ? 3 : 0, aliases, NIN, axis, KEOPS_FLOAT64);
}

static int64_t rows_of(int cat) { return cat == 0 ? GM : cat == 1 ? GN : 1; }

static int64_t last_idx[64]; /* a run's index output, when the kernel has two */

static void run(keops_kernel *k, const void *const *args, void *out, keops_backend b) {
  keops_run_options o = keops_run_options_init();
  o.backend = b;
  ck_assert_msg(keops_kernel_run(k, GM, GN, args, (void *[]){out, last_idx}, &o) == KEOPS_OK, "%s",
                keops_last_error());
}

/* L = sum G . out, on the reference backend. */
static double loss(keops_kernel *k, const void *const *args, const double *G, int64_t n) {
  double out[64], s = 0;
  run(k, args, out, KEOPS_BACKEND_REFERENCE);
  for (int64_t q = 0; q < n; q++) s += G[q] * out[q];
  return s;
}

typedef struct gcase {
  const char *f, *f2, *red;
} gcase;

static const gcase gcases[] = {
    {"Exp(-g*SqDist(x,y))*b", NULL, "Sum"},
    {"Sin(x-y)*g + b*x", NULL, "Sum"},
    {"-g*SqDist(x,y) + b", NULL, "LogSumExp"},
    {"-g*SqDist(x,y)", "Square(w)+b*b+1", "LogSumExp"},
    {"-g*SqDist(x,y) + b", "w*b", "SumSoftMaxWeight"},
    /* through the selected pairs (continuous data: no ties within the differences' step) */
    {"SqDist(x,y)+g*b", NULL, "Min_ArgMin"},
    {"Sin(b*g)-SqDist(x,y)", NULL, "Max"},
    {"SqDist(x,y)*g+b", NULL, "KMin"},
};
#define NG (int)(sizeof gcases / sizeof *gcases)

/* _i: case, axis, variable. */
START_TEST(finite_differences) {
  const gcase *c = &gcases[_i % NG];
  int axis = (_i / NG) % 2, var = (_i / NG / 2) % 4; /* x, y, b, g */
  keops_axis ax = tu_axis(axis);
  keops_kernel *k = make(c->f, c->f2, c->red, ax), *gk = NULL;
  ck_assert_msg(keops_kernel_grad(k, var, &gk) == KEOPS_OK, "%s wrt %d: %s", c->f, var, keops_last_error());
  tu_rng r = tu_seed(40 + (uint64_t)_i);
  double *in[NIN + 3];
  const void *args[NIN + 3];
  for (int a = 0; a < NIN; a++) {
    in[a] = tu_randn(&r, dims[a] * rows_of(cats[a]));
    args[a] = in[a];
  }
  in[3][0] = 0.7; /* g > 0 */
  int64_t orows = keops_kernel_output_rows(k, GM, GN), odim = keops_kernel_output_dim(k, 0);
  int64_t no = orows * odim;
  double *G = tu_randn(&r, no), R[64], Lse[16], grad[64], grad_cpu[64], grad_gpu[64];
  int64_t A[64];
  int na = keops_kernel_arg_count(gk);
  ck_assert_int_ge(na, NIN + 1);
  args[NIN] = G;
  ck_assert_int_eq(keops_kernel_arg_dim(gk, NIN), (int)odim);
  const char *argred = !strcmp(c->red, "Max") ? "ArgMax" : !strcmp(c->red, "KMin") ? "ArgKMin" : NULL;
  if (!strcmp(c->red, "Min_ArgMin")) { /* A: the forward's own indices */
    run(k, args, R, KEOPS_BACKEND_REFERENCE);
    memcpy(A, last_idx, sizeof A);
    args[NIN + 1] = A;
  } else if (argred) { /* A: the indices of an Arg kernel of the same formula */
    keops_kernel *ak = make(c->f, NULL, argred, ax);
    run(ak, args, A, KEOPS_BACKEND_REFERENCE);
    args[NIN + 1] = A;
    keops_kernel_destroy(ak);
  } else if (na > NIN + 1) { /* R: the forward output */
    run(k, args, R, KEOPS_BACKEND_REFERENCE);
    args[NIN + 1] = R;
  }
  if (na > NIN + 2 && !argred) { /* L: the forward LogSumExp of F */
    keops_kernel *lk = make(c->f, NULL, "LogSumExp", ax);
    run(lk, args, Lse, KEOPS_BACKEND_REFERENCE);
    args[NIN + 2] = Lse;
    keops_kernel_destroy(lk);
  }
  int64_t vrows = rows_of(cats[var]), nv = vrows * dims[var];
  ck_assert_int_eq(keops_kernel_output_rows(gk, GM, GN), vrows);
  ck_assert_int_eq(keops_kernel_output_dim(gk, 0), dims[var]);
  run(gk, args, grad, KEOPS_BACKEND_REFERENCE);
  run(gk, args, grad_cpu, KEOPS_BACKEND_CPU);
  run(gk, args, grad_gpu, KEOPS_BACKEND_GPU); /* emulated */
  const double h = 1e-5;
  for (int64_t q = 0; q < nv; q++) {
    double keep = in[var][q];
    in[var][q] = keep + h;
    double lp = loss(k, args, G, no);
    in[var][q] = keep - h;
    double lm = loss(k, args, G, no);
    in[var][q] = keep;
    double fd = (lp - lm) / (2 * h);
    ck_assert_msg(fabs(grad[q] - fd) <= 1e-7 * (1 + fabs(fd)),
                  "%s %s axis %d d/d input %d [%lld]: kernel %.12g, finite difference %.12g", c->red,
                  c->f, axis, var, (long long)q, grad[q], fd);
    ck_assert_msg(fabs(grad_cpu[q] - grad[q]) <= 1e-12 * (1 + fabs(grad[q])) &&
                      fabs(grad_gpu[q] - grad[q]) <= 1e-12 * (1 + fabs(grad[q])),
                  "CPU %.17g, GPU %.17g, reference %.17g", grad_cpu[q], grad_gpu[q], grad[q]);
  }
  for (int a = 0; a < NIN; a++) free(in[a]);
  free(G);
  keops_kernel_destroy(gk);
  keops_kernel_destroy(k);
}
END_TEST

/* The gradient of the gradient kernel of a Sum: d/dy of (G2 . dL/dx), against differences of
 * the first gradient kernel. */
START_TEST(second_derivative) {
  keops_kernel *k = make("Exp(-g*SqDist(x,y))*b", NULL, "Sum", KEOPS_AXIS_J), *g1 = NULL, *g2 = NULL;
  ck_assert_int_eq(keops_kernel_grad(k, 0, &g1), KEOPS_OK);
  ck_assert_int_eq(keops_kernel_grad(g1, 1, &g2), KEOPS_OK);
  tu_rng r = tu_seed(5);
  double *in[NIN];
  for (int a = 0; a < NIN; a++) in[a] = tu_randn(&r, dims[a] * rows_of(cats[a]));
  in[3][0] = 0.5;
  double *G = tu_randn(&r, GM), *G2 = tu_randn(&r, GM * 2), hess[GN * 2];
  const void *args[NIN + 2] = {in[0], in[1], in[2], in[3], in[4], G, G2};
  ck_assert_int_eq(keops_kernel_arg_count(g2), NIN + 2);
  run(g2, args, hess, KEOPS_BACKEND_REFERENCE);
  const double h = 1e-5;
  for (int q = 0; q < GN * 2; q++) {
    double keep = in[1][q];
    in[1][q] = keep + h;
    double lp = loss(g1, args, G2, GM * 2);
    in[1][q] = keep - h;
    double lm = loss(g1, args, G2, GM * 2);
    in[1][q] = keep;
    double fd = (lp - lm) / (2 * h);
    ck_assert_msg(fabs(hess[q] - fd) <= 1e-7 * (1 + fabs(fd)), "[%d]: %.12g, difference %.12g", q,
                  hess[q], fd);
  }
  for (int a = 0; a < NIN; a++) free(in[a]);
  free(G), free(G2);
  keops_kernel_destroy(g2);
  keops_kernel_destroy(g1);
  keops_kernel_destroy(k);
}
END_TEST

START_TEST(arg_and_refusals) {
  keops_kernel *k = make("SqDist(x,y)", NULL, "ArgMin", KEOPS_AXIS_J), *gk = (keops_kernel *)&k;
  ck_assert_int_eq(keops_kernel_grad(k, 0, &gk), KEOPS_OK);
  tu_rng r = tu_seed(8);
  double *in[NIN], out[GM * 2];
  for (int a = 0; a < NIN; a++) in[a] = tu_randn(&r, dims[a] * rows_of(cats[a]));
  double G[GM];
  const void *args[NIN + 1] = {in[0], in[1], in[2], in[3], in[4], G};
  for (int q = 0; q < GM * 2; q++) out[q] = 1;
  run(gk, args, out, KEOPS_BACKEND_CPU);
  for (int q = 0; q < GM * 2; q++) ck_assert(out[q] == 0);
  keops_kernel_destroy(gk);
  keops_kernel_destroy(k);

  k = make("SqDist(x,y)", NULL, "Max_SumShiftExp", KEOPS_AXIS_J);
  gk = (keops_kernel *)&k;
  ck_assert_int_eq(keops_kernel_grad(k, 0, &gk), KEOPS_ERROR_UNSUPPORTED);
  ck_assert_ptr_null(gk);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_grad: the gradient of the raw Max_SumShiftExp "
                                       "outputs is not supported (their user-visible forms, "
                                       "LogSumExp and SumSoftMaxWeight, are)");
  keops_kernel_destroy(k);
  k = tu_kernel(ctx, "SqDist(x,y)", NULL, "KMin", 65, aliases, NIN, KEOPS_AXIS_J, KEOPS_FLOAT64);
  ck_assert_int_eq(keops_kernel_grad(k, 0, &gk), KEOPS_ERROR_UNSUPPORTED);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_grad: the gradient of KMin with K = 65 (at most 64)");
  keops_kernel_destroy(k);
  /* a Min's gradient: the caller passes k's inputs, G and the indices; the reduced index is
   * the kernel's own */
  k = make("SqDist(x,y)", NULL, "Min", KEOPS_AXIS_J);
  ck_assert_int_eq(keops_kernel_grad(k, 1, &gk), KEOPS_OK);
  ck_assert_int_eq(keops_kernel_arg_count(gk), NIN + 2);
  ck_assert_int_eq(keops_kernel_arg_dim(gk, NIN + 2), -1);
  keops_run_options bo = keops_run_options_init();
  keops_batch one = {1, (const int64_t[]){1, 1, 1, 1, 1, 1, 1, 1}};
  bo.batch = &one;
  int64_t idx[GM] = {0};
  const void *gargs[NIN + 2] = {in[0], in[1], in[2], in[3], in[4], G, idx};
  ck_assert_int_eq(keops_kernel_run(gk, GM, GN, gargs, (void *[]){out}, &bo), KEOPS_ERROR_UNSUPPORTED);
  gargs[NIN + 1] = NULL;
  ck_assert_int_eq(keops_kernel_run(gk, GM, GN, gargs, (void *[]){out}, NULL), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_run: args[6] (the forward's indices) is NULL");
  keops_kernel_destroy(gk);
  ck_assert_int_eq(keops_kernel_grad(k, 9, &gk), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_grad: var = 9 is not an input of the kernel (it has 5)");
  ck_assert_int_eq(keops_kernel_grad(NULL, 0, &gk), KEOPS_ERROR_ARGUMENT);
  ck_assert_int_eq(keops_kernel_grad(k, 0, NULL), KEOPS_ERROR_ARGUMENT);
  keops_kernel_destroy(k);
  for (int a = 0; a < NIN; a++) free(in[a]);
}
END_TEST

int main(void) {
  Suite *s = suite_create("grad");
  TCase *tc = tcase_create("grad");
  tcase_set_timeout(tc, 600);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_loop_test(tc, finite_differences, 0, NG * 2 * 4);
  tcase_add_test(tc, second_derivative);
  tcase_add_test(tc, arg_and_refusals);
  suite_add_tcase(s, tc);
  return tu_run(s, 0) ? EXIT_FAILURE : EXIT_SUCCESS;
}
