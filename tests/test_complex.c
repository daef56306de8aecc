/* Complex numbers (interleaved re, im): a NUDFT, sum_j b_j exp(i f_j t_i), against a direct
 * double loop on the reference backend and the CPU JIT; its gradient with respect to t
 * through the complex ops against central differences; what the simplifier makes of
 * compositions; the dim errors.
 *
 * Tolerances: the NUDFT sums N = 300 terms of modulus |b_j| <= sqrt(2); in float64 each
 * term's cos/sin of an argument below 50 errs by a few ulp of the argument (5e-15), so the
 * sums agree within 1e-11 absolute; float32 within 300 * 50 * 6e-8 * 2 = 2e-3 absolute (the
 * argument's rounding dominates), checked at 3e-3. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keops.h"
#include "runtime.h"
#include "testutil.h"

enum { CM = 40, CN = 300 };
static keops_context *ctx;
static void setup(void) { ck_assert_int_eq(keops_context_create(&ctx), KEOPS_OK); }
static void teardown(void) { keops_context_destroy(ctx); }

static const char *const nudft_al[] = {"t = Vi(1)", "f = Vj(1)", "b = Vj(2)"};
#define NUDFT "ComplexMult(b, ComplexExp1j(f*t))"

static keops_kernel *make(const char *formula, const char *const *al, int n, keops_dtype dt) {
  return tu_kernel(ctx, formula, NULL, NULL, 0, al, n, KEOPS_AXIS_J, dt);
}

/* _i: bit 0 float64, bit 1 CPU. */
START_TEST(nudft) {
  keops_dtype dt = _i & 1 ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
  keops_kernel *k = make(NUDFT, nudft_al, 3, dt);
  ck_assert_int_eq(keops_kernel_output_dim(k, 0), 2);
  tu_rng r = tu_seed(21 + (uint64_t)_i);
  double t[CM], f[CN], b[2 * CN];
  for (int i = 0; i < CM; i++) t[i] = tu_uniform(&r, 0, 1);
  for (int j = 0; j < CN; j++) f[j] = tu_uniform(&r, -50, 50), b[2 * j] = tu_uniform(&r, -1, 1),
                               b[2 * j + 1] = tu_uniform(&r, -1, 1);
  void *ta = tu_to_dtype(t, CM, dt), *fa = tu_to_dtype(f, CN, dt), *ba = tu_to_dtype(b, 2 * CN, dt);
  void *out = malloc(2 * CM * sizeof(double)); /* CM x 2 values of the dtype */
  keops_run_options o = keops_run_options_init();
  o.backend = _i & 2 ? KEOPS_BACKEND_CPU : KEOPS_BACKEND_REFERENCE;
  ck_assert_int_eq(keops_kernel_run(k, CM, CN, (const void *[]){ta, fa, ba}, (void *[]){out}, &o), KEOPS_OK);
  for (int i = 0; i < CM; i++) {
    double re = 0, im = 0, ti = tu_get(ta, dt, i);
    for (int j = 0; j < CN; j++) {
      double a = tu_get(fa, dt, j) * ti, br = tu_get(ba, dt, 2 * j), bi = tu_get(ba, dt, 2 * j + 1);
      re += br * cos(a) - bi * sin(a);
      im += br * sin(a) + bi * cos(a);
    }
    double tol = dt == KEOPS_FLOAT64 ? 1e-11 : 3e-3;
    ck_assert_msg(fabs(tu_get(out, dt, 2 * i) - re) <= tol && fabs(tu_get(out, dt, 2 * i + 1) - im) <= tol,
                  "row %d: (%.10g, %.10g), loop (%.10g, %.10g)", i, tu_get(out, dt, 2 * i),
                  tu_get(out, dt, 2 * i + 1), re, im);
  }
  free(ta), free(fa), free(ba), free(out);
  keops_kernel_destroy(k);
}
END_TEST

/* d/dt_i of sum_j Re(conj(g) . NUDFT) through Grad and the complex ops, against differences. */
START_TEST(nudft_gradient) {
  const char *const al[] = {"t = Vi(1)", "f = Vj(1)", "b = Vj(2)", "g = Vi(2)"};
  keops_kernel *k = make("Grad(" NUDFT ", t, g)", al, 4, KEOPS_FLOAT64);
  keops_kernel *fk = make(NUDFT, al, 3, KEOPS_FLOAT64);
  tu_rng r = tu_seed(4);
  double t[CM], f[CN], b[2 * CN], g[2 * CM], got[CM], op[2 * CM], om[2 * CM];
  for (int i = 0; i < CM; i++) t[i] = tu_uniform(&r, 0, 1), g[2 * i] = tu_normal(&r), g[2 * i + 1] = tu_normal(&r);
  for (int j = 0; j < CN; j++) f[j] = tu_uniform(&r, -5, 5), b[2 * j] = tu_normal(&r), b[2 * j + 1] = tu_normal(&r);
  ck_assert_int_eq(keops_kernel_run(k, CM, CN, (const void *[]){t, f, b, g}, (void *[]){got}, NULL), KEOPS_OK);
  const double h = 1e-6;
  for (int i = 0; i < CM; i++) {
    double keep = t[i];
    t[i] = keep + h;
    ck_assert_int_eq(keops_kernel_run(fk, CM, CN, (const void *[]){t, f, b}, (void *[]){op}, NULL), KEOPS_OK);
    t[i] = keep - h;
    ck_assert_int_eq(keops_kernel_run(fk, CM, CN, (const void *[]){t, f, b}, (void *[]){om}, NULL), KEOPS_OK);
    t[i] = keep;
    double fd = (g[2 * i] * (op[2 * i] - om[2 * i]) + g[2 * i + 1] * (op[2 * i + 1] - om[2 * i + 1])) / (2 * h);
    ck_assert_msg(fabs(got[i] - fd) <= 1e-5 * (1 + fabs(fd)), "row %d: %.12g, difference %.12g", i, got[i], fd);
  }
  keops_kernel_destroy(k);
  keops_kernel_destroy(fk);
}
END_TEST

/* The sugar's compositions collapse: parts of a built complex number are its parts. */
START_TEST(simplified) {
  static const struct {
    const char *f, *want;
  } cases[] = {
      {"ComplexReal(Real2Complex(x)+Imag2Complex(y))", "x"},
      {"ComplexImag(Real2Complex(x)+Imag2Complex(y))", "y"},
      {"ComplexReal(Conj(Conj(z)))", "ComplexReal(z)"},
      {"ComplexImag(ComplexExp1j(x))", "Sin(x)"},
      {"ComplexReal(Real2Complex(x)*2)", "2*x"},
      {"ComplexImag(Real2Complex(x))", "Zero(3)"},
  };
  const char *const al[] = {"x = Vi(3)", "y = Vi(3)", "z = Vi(6)"};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    keops_kernel *k = make(cases[c].f, al, 3, KEOPS_FLOAT64), *w = make(cases[c].want, al, 3, KEOPS_FLOAT64);
    const fe_program *p = rt_kernel_program(k), *q = rt_kernel_program(w);
    char *a = dag_print(p->d, p->user_f, NULL, 0), *b = dag_print(q->d, q->user_f, NULL, 0);
    ck_assert_msg(!strcmp(a, b), "%s simplified to %s, want %s", cases[c].f, a, b);
    free(a), free(b);
    keops_kernel_destroy(k);
    keops_kernel_destroy(w);
  }
}
END_TEST

START_TEST(dim_errors) {
  const char *const al[] = {"x = Vi(3)", "z = Vi(4)", "w = Vi(6)"};
  static const struct {
    const char *f, *msg;
  } cases[] = {
      {"ComplexReal(x)", "ComplexReal: the argument's dim 3 is odd: a complex vector interleaves re and im"},
      {"ComplexAbs(x)", "ComplexReal: the argument's dim 3 is odd"},
      {"ComplexMult(z,w)", "dimensions 2 and 3 are not compatible"},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    keops_kernel_desc d = keops_kernel_desc_init();
    d.formula = cases[c].f;
    d.aliases = al;
    d.n_aliases = 3;
    d.axis = KEOPS_AXIS_J;
    keops_kernel *k = NULL;
    ck_assert_int_eq(keops_kernel_create(ctx, &d, &k), KEOPS_ERROR_DIMENSION);
    ck_assert_msg(strstr(keops_last_error(), cases[c].msg), "%s: '%s' lacks '%s'", cases[c].f,
                  keops_last_error(), cases[c].msg);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("complex");
  TCase *tc = tcase_create("complex");
  tcase_set_timeout(tc, 300);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_loop_test(tc, nudft, 0, 4);
  tcase_add_test(tc, nudft_gradient);
  tcase_add_test(tc, simplified);
  tcase_add_test(tc, dim_errors);
  suite_add_tcase(s, tc);
  return tu_run(s, 0) ? EXIT_FAILURE : EXIT_SUCCESS;
}
