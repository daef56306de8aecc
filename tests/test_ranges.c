/* Block-sparse reductions (keops_ranges): the builders against KeOps's from_matrix docstring
 * example, every check of a run's ranges with its message, and values. The reference backend
 * with ranges is checked against hand loops over the kept pairs (Sum and Min_ArgMin in double,
 * to 1e-13); the CPU JIT against the reference with the same ranges, within the tolerance model
 * of tests/matrix.h, over every reduction family, both axes, both dtypes, 1 and 2 threads,
 * with gaps (rows in no block), empty blocks and empty or adjacent index ranges. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "matrix.h"
#include "testutil.h"

static keops_context *ctx;

static void setup(void) { ck_assert_int_eq(keops_context_create(&ctx), KEOPS_OK); }
static void teardown(void) { keops_context_destroy(ctx); }

static void expect_i64(const int64_t *got, const int64_t *want, int64_t n, const char *what) {
  for (int64_t k = 0; k < n; k++)
    ck_assert_msg(got[k] == want[k], "%s[%lld] = %lld, want %lld", what, (long long)k,
                  (long long)got[k], (long long)want[k]);
}

/* KeOps's from_matrix docstring example. */
START_TEST(from_matrix_docstring) {
  const int64_t ri[] = {2, 5, 7, 12}, rj[] = {1, 4, 4, 9, 20, 30};
  const unsigned char keep[] = {1, 1, 0, 0, 1, 0};
  keops_ranges *r = NULL;
  ck_assert_int_eq(keops_ranges_from_matrix(ri, 2, rj, 3, keep, &r), KEOPS_OK);
  ck_assert_int_eq(r->n_ranges_i, 2);
  ck_assert_int_eq(r->n_redranges_j, 3);
  ck_assert_int_eq(r->n_ranges_j, 3);
  ck_assert_int_eq(r->n_redranges_i, 3);
  expect_i64(r->ranges_i, ri, 4, "ranges_i");
  expect_i64(r->slices_i, (const int64_t[]){2, 3}, 2, "slices_i");
  expect_i64(r->redranges_j, (const int64_t[]){1, 4, 4, 9, 4, 9}, 6, "redranges_j");
  expect_i64(r->ranges_j, rj, 6, "ranges_j");
  expect_i64(r->slices_j, (const int64_t[]){1, 3, 3}, 3, "slices_j");
  expect_i64(r->redranges_i, (const int64_t[]){2, 5, 2, 5, 7, 12}, 6, "redranges_i");
  keops_ranges_destroy(r);

  ck_assert_int_eq(keops_ranges_from_matrix(ri, 2, rj, 3, NULL, &r), KEOPS_ERROR_ARGUMENT);
  ck_assert_ptr_null(r);
  ck_assert_str_eq(keops_last_error(), "keops_ranges_from_matrix: keep is NULL but nci = 2, ncj = 3");
  ck_assert_int_eq(keops_ranges_from_matrix(ri, -1, rj, 3, keep, &r), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), "keops_ranges_from_matrix: nci = -1 is negative");
  ck_assert_int_eq(keops_ranges_from_matrix(ri, (int64_t)1 << 40, rj, (int64_t)1 << 40, keep, &r),
                   KEOPS_ERROR_ARGUMENT);
  ck_assert_ptr_nonnull(strstr(keops_last_error(), "is too large"));
  ck_assert_int_eq(keops_ranges_from_matrix(NULL, 0, NULL, 0, NULL, &r), KEOPS_OK); /* empty */
  ck_assert_int_eq(r->n_ranges_i + r->n_redranges_j + r->n_ranges_j + r->n_redranges_i, 0);
  keops_ranges_destroy(r);
  keops_ranges_destroy(NULL);
}
END_TEST

/* Labels of sorted points: the same ranges as the clusters they describe; empty clusters. */
START_TEST(from_labels) {
  const int64_t li[] = {0, 0, 2, 2, 2}, lj[] = {1, 1, 1, 2};
  const unsigned char keep[] = {1, 0, 1, 0, 1, 1, 1, 1, 0}; /* 3 x 3 */
  keops_ranges *r = NULL;
  ck_assert_int_eq(keops_ranges_from_labels(li, 5, 3, lj, 4, 3, keep, &r), KEOPS_OK);
  expect_i64(r->ranges_i, (const int64_t[]){0, 2, 2, 2, 2, 5}, 6, "ranges_i");
  expect_i64(r->ranges_j, (const int64_t[]){0, 0, 0, 3, 3, 4}, 6, "ranges_j");
  expect_i64(r->slices_i, (const int64_t[]){2, 4, 6}, 3, "slices_i");
  expect_i64(r->redranges_j, (const int64_t[]){0, 0, 3, 4, 0, 3, 3, 4, 0, 0, 0, 3}, 12, "redranges_j");
  keops_ranges_destroy(r);

  const int64_t unsorted[] = {0, 1, 0};
  ck_assert_int_eq(keops_ranges_from_labels(unsorted, 3, 2, lj, 4, 3, keep, &r), KEOPS_ERROR_ARGUMENT);
  ck_assert_ptr_null(r);
  ck_assert_str_eq(keops_last_error(), "keops_ranges_from_labels: labels_i[2] = 0 is less than "
                                       "labels_i[1] = 1: the points must be sorted by cluster");
  const int64_t big[] = {0, 3};
  ck_assert_int_eq(keops_ranges_from_labels(li, 5, 3, big, 2, 3, keep, &r), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), "keops_ranges_from_labels: labels_j[1] = 3 is not in [0, ncj = 3)");
  const int64_t neg[] = {-1};
  ck_assert_int_eq(keops_ranges_from_labels(neg, 1, 3, lj, 4, 3, keep, &r), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), "keops_ranges_from_labels: labels_i[0] = -1 is not in [0, nci = 3)");
  ck_assert_int_eq(keops_ranges_from_labels(NULL, 5, 3, lj, 4, 3, keep, &r), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), "keops_ranges_from_labels: labels_i is NULL but M = 5");
  ck_assert_int_eq(keops_ranges_from_labels(li, 5, 3, lj, 4, 3, keep, NULL), KEOPS_ERROR_ARGUMENT);
}
END_TEST

/* ---- checks of a run's ranges ---------------------------------------------------------------- */

typedef struct bad_case {
  int axis;                       /* KeOps number: 1 uses the _i fields, 0 the _j ones */
  int64_t blocks[8], slices[4], red[8];
  int64_t nb, nr;
  const char *msg; /* exact, after "keops_kernel_run: " */
} bad_case;

/* On M = 6 rows i, N = 4 indices j. */
static const bad_case bad_cases[] = {
    {1, {0, 2, 3, 6}, {1, 2}, {0, 4, 1, 2}, 2, 2, NULL}, /* good */
    {0, {0, 2, 3, 4}, {1, 2}, {0, 6, 1, 2}, 2, 2, NULL}, /* good on axis I */
    {1, {0, 2, 3, 7}, {1, 2}, {0, 4, 1, 2}, 2, 2,
     "ranges->ranges_i[1] = [3, 7) is not a range within [0, M = 6]"},
    {1, {0, 2, 3, 2}, {1, 2}, {0, 4, 1, 2}, 2, 2,
     "ranges->ranges_i[1] = [3, 2) is not a range within [0, M = 6]"},
    {1, {-1, 2, 3, 6}, {1, 2}, {0, 4, 1, 2}, 2, 2,
     "ranges->ranges_i[0] = [-1, 2) is not a range within [0, M = 6]"},
    {1, {0, 4, 3, 6}, {1, 2}, {0, 4, 1, 2}, 2, 2,
     "ranges->ranges_i[1] = [3, 6) starts before ranges_i[0] ends (4): blocks must be ascending "
     "and disjoint"},
    {1, {0, 2, 3, 6}, {2, 1}, {0, 4, 1, 2}, 2, 2,
     "ranges->n_redranges_j = 2, but the slices_i end at 1 (the last entry of ranges->slices_i)"},
    {1, {0, 2, 3, 6}, {3, 2}, {0, 4, 1, 2}, 2, 2,
     "ranges->slices_i[0] = 3 is not in [0, n_redranges_j = 2] (cumulative ends into redranges_j)"},
    {1, {0, 2, 3, 6}, {1, 2}, {0, 5, 1, 2}, 2, 2,
     "ranges->redranges_j[0] = [0, 5) is not a range within [0, N = 4]"},
    {1, {0, 6}, {2}, {0, 2, 1, 3}, 1, 2,
     "ranges->redranges_j[1] = [1, 3) starts before redranges_j[0] ends (2), both of block 0: "
     "the ranges of a block must be ascending and disjoint"},
    {0, {0, 2, 3, 4}, {1, 2}, {0, 7, 1, 2}, 2, 2,
     "ranges->redranges_i[0] = [0, 7) is not a range within [0, M = 6]"},
    {0, {0, 2, 3, 5}, {1, 2}, {0, 6, 1, 2}, 2, 2,
     "ranges->ranges_j[1] = [3, 5) is not a range within [0, N = 4]"},
    {1, {0, 2}, {1}, {0, 4}, -1, 1, "ranges->n_ranges_i = -1 is negative"},
    {1, {0, 2}, {1}, {0, 4}, 1, -1, "ranges->n_redranges_j = -1 is negative"},
};

START_TEST(bad_ranges) {
  const bad_case *c = &bad_cases[_i];
  const char *const al[] = {"x = Vi(1)", "y = Vj(1)"};
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = "x*y";
  d.aliases = al;
  d.n_aliases = 2;
  d.axis = tu_axis(c->axis);
  d.dtype = KEOPS_FLOAT64;
  keops_kernel *k = mx_make(ctx, &d);
  double x[6] = {1, 2, 3, 4, 5, 6}, y[4] = {1, 10, 100, 1000}, out[6];
  const void *args[] = {x, y};
  void *outs[] = {out};
  keops_ranges r;
  memset(&r, 0, sizeof r);
  if (c->axis) r.ranges_i = c->blocks, r.slices_i = c->slices, r.redranges_j = c->red, r.n_ranges_i = c->nb, r.n_redranges_j = c->nr;
  else r.ranges_j = c->blocks, r.slices_j = c->slices, r.redranges_i = c->red, r.n_ranges_j = c->nb, r.n_redranges_i = c->nr;
  for (int b = 0; b < 2; b++) {
    keops_run_options o = keops_run_options_init();
    o.backend = b ? KEOPS_BACKEND_CPU : KEOPS_BACKEND_REFERENCE;
    o.ranges = &r;
    keops_status st = keops_kernel_run(k, 6, 4, args, outs, &o);
    if (!c->msg) {
      ck_assert_msg(st == KEOPS_OK, "%s", keops_last_error());
      continue;
    }
    ck_assert_int_eq(st, KEOPS_ERROR_ARGUMENT);
    char want[400];
    snprintf(want, sizeof want, "keops_kernel_run: %s", c->msg);
    ck_assert_str_eq(keops_last_error(), want);
  }
  /* NULL arrays with nonzero counts */
  keops_run_options o = keops_run_options_init();
  o.ranges = &r;
  keops_ranges z;
  memset(&z, 0, sizeof z);
  z.n_ranges_i = z.n_ranges_j = 1;
  o.ranges = &z;
  ck_assert_int_eq(keops_kernel_run(k, 6, 4, args, outs, &o), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), c->axis ? "keops_kernel_run: ranges->ranges_i is NULL but ranges->n_ranges_i = 1"
                                               : "keops_kernel_run: ranges->ranges_j is NULL but ranges->n_ranges_j = 1");
  keops_kernel_destroy(k);
}
END_TEST

/* ---- values ----------------------------------------------------------------------------------- */

enum { VM = 53, VN = 47, NCI = 7, NCJ = 6 };

/* Clusters of rows: consecutive pieces of [0, n) with gaps, some empty. */
static void make_clusters(tu_rng *g, int64_t n, int nc, int64_t *c) {
  int64_t at = 0;
  for (int k = 0; k < nc; k++) {
    int64_t gap = (int64_t)tu_uniform(g, 0, 3), len = k == 2 ? 0 : (int64_t)tu_uniform(g, 0, 2.0 * (double)n / nc);
    c[2 * k] = at + gap < n ? at + gap : n;
    c[2 * k + 1] = c[2 * k] + len < n ? c[2 * k] + len : n;
    at = c[2 * k + 1];
  }
}

static keops_ranges *random_ranges(uint64_t seed, int64_t M, int64_t N) {
  tu_rng g = tu_seed(seed);
  int64_t ci[2 * NCI], cj[2 * NCJ];
  unsigned char keep[NCI * NCJ];
  make_clusters(&g, M, NCI, ci);
  make_clusters(&g, N, NCJ, cj);
  for (int k = 0; k < NCI * NCJ; k++) keep[k] = tu_uniform(&g, 0, 1) < 0.4;
  keep[0] = keep[1] = 1; /* adjacent or nearly adjacent ranges in one block */
  for (int k = 0; k < NCJ; k++) keep[3 * NCJ + k] = 0; /* a block with no range */
  keops_ranges *r = NULL;
  ck_assert_int_eq(keops_ranges_from_matrix(ci, NCI, cj, NCJ, keep, &r), KEOPS_OK);
  return r;
}

/* Whether pair (i, j) is kept by r (axis J view). */
static int kept(const keops_ranges *r, int64_t i, int64_t j) {
  for (int64_t b = 0; b < r->n_ranges_i; b++) {
    if (i < r->ranges_i[2 * b] || i >= r->ranges_i[2 * b + 1]) continue;
    for (int64_t s = b ? r->slices_i[b - 1] : 0; s < r->slices_i[b]; s++)
      if (j >= r->redranges_j[2 * s] && j < r->redranges_j[2 * s + 1]) return 1;
  }
  return 0;
}

/* The reference with ranges against loops over the kept pairs, in double: sum_j exp(-|x-y|^2)
 * b_j (axis J) and min_i |x-y|^2 with its index (axis I, whose ranges are the transposed
 * mask, so both views of from_matrix are exercised). */
START_TEST(reference_vs_loops) {
  const char *const al[] = {"x = Vi(3)", "y = Vj(3)", "b = Vj(1)"};
  keops_kernel_desc d = keops_kernel_desc_init();
  d.aliases = al;
  d.n_aliases = 3;
  d.dtype = KEOPS_FLOAT64;
  d.formula = "Exp(-SqDist(x,y))*b";
  d.axis = KEOPS_AXIS_J;
  keops_kernel *ks = mx_make(ctx, &d);
  d.formula = "SqDist(x,y)";
  d.reduction = "Min_ArgMin";
  d.axis = KEOPS_AXIS_I;
  keops_kernel *km = mx_make(ctx, &d);
  tu_rng g = tu_seed(7 + (uint64_t)_i);
  double *x = tu_randn(&g, 3 * VM), *y = tu_randn(&g, 3 * VN), *b = tu_randn(&g, VN);
  keops_ranges *r = random_ranges(100 + (uint64_t)_i, VM, VN);
  double s[VM], m[VN];
  int64_t am[VN];
  const void *args[] = {x, y, b};
  keops_run_options o = keops_run_options_init();
  o.backend = KEOPS_BACKEND_REFERENCE;
  o.ranges = r;
  ck_assert_int_eq(keops_kernel_run(ks, VM, VN, args, (void *[]){s}, &o), KEOPS_OK);
  ck_assert_int_eq(keops_kernel_run(km, VM, VN, args, (void *[]){m, am}, &o), KEOPS_OK);
  double ws[VM] = {0}, wm[VN];
  int64_t wam[VN];
  for (int64_t j = 0; j < VN; j++) wm[j] = INFINITY, wam[j] = -1;
  for (int64_t i = 0; i < VM; i++)
    for (int64_t j = 0; j < VN; j++) {
      if (!kept(r, i, j)) continue;
      double d2 = 0;
      for (int c = 0; c < 3; c++) d2 += (x[3 * i + c] - y[3 * j + c]) * (x[3 * i + c] - y[3 * j + c]);
      ws[i] += exp(-d2) * b[j];
      if (d2 < wm[j]) wm[j] = d2, wam[j] = i;
    }
  for (int64_t i = 0; i < VM; i++)
    ck_assert_msg(fabs(s[i] - ws[i]) <= 1e-13 * (1 + fabs(ws[i])), "sum row %lld: %.17g, loop %.17g",
                  (long long)i, s[i], ws[i]);
  for (int64_t j = 0; j < VN; j++) {
    ck_assert_msg(am[j] == wam[j], "argmin row %lld: %lld, loop %lld", (long long)j, (long long)am[j],
                  (long long)wam[j]);
    ck_assert_msg(m[j] == wm[j] || fabs(m[j] - wm[j]) <= 1e-13 * fabs(wm[j]), "min row %lld: %.17g, loop %.17g",
                  (long long)j, m[j], wm[j]);
  }
  keops_ranges_destroy(r);
  free(x), free(y), free(b);
  keops_kernel_destroy(ks);
  keops_kernel_destroy(km);
}
END_TEST

typedef struct vcase {
  const char *reduction, *formula, *formula2;
  int k;
} vcase;

static const vcase vcases[] = {
    {"Sum", "Exp(-SqDist(x,y))*b", NULL, 0},
    {"Min_ArgMin", "SqDist(x,y)", NULL, 0},
    {"ArgKMin", "SqDist(x,y)", NULL, 3},
    {"LogSumExp", "-SqDist(x,y)", "b", 0},
    {"Max_SumShiftExp", "(x|y)", NULL, 0},
};
#define NV (int)(sizeof vcases / sizeof *vcases)

/* _i: case, axis, dtype, threads. */
START_TEST(cpu_vs_reference) {
  const vcase *c = &vcases[_i % NV];
  int axis = (_i / NV) % 2, f64 = (_i / NV / 2) % 2, threads = 1 + (_i / NV / 4) % 2;
  const char *const al[] = {"x = Vi(3)", "y = Vj(3)", "b = Vj(1)"};
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = c->formula;
  d.formula2 = c->formula2;
  d.reduction = c->reduction;
  d.k = c->k;
  d.aliases = al;
  d.n_aliases = 3;
  d.axis = tu_axis(axis);
  d.dtype = f64 ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
  prob P;
  keops_kernel *k = mx_make(ctx, &d);
  const dom doms[] = {DFLT, DFLT, {0.5, 2, 0}}; /* positive LogSumExp weights */
  mx_prob_init(&P, k, VM, VN, doms, 3, NULL, 11 + (uint64_t)_i);
  keops_ranges *r = random_ranges(200 + (uint64_t)_i, VM, VN);
  P.ranges = r;
  snprintf(P.what, sizeof P.what, "%s(%s) axis %d %s, %d threads", c->reduction, c->formula, axis,
           f64 ? "float64" : "float32", threads);
  mx_prob_reference(&P);
  keops_run_options o = keops_run_options_init();
  o.backend = KEOPS_BACKEND_CPU;
  o.num_threads = threads;
  o.ranges = r;
  ck_assert_msg(keops_kernel_run(k, VM, VN, (const void *const *)P.arr, P.out[0], &o) == KEOPS_OK,
                "%s: %s", P.what, keops_last_error());
  mx_check_outputs(&P);
  /* rows in no block (or in the block without ranges) reduce nothing on both backends */
  const int64_t *blocks = axis ? r->ranges_i : r->ranges_j, *sl = axis ? r->slices_i : r->slices_j;
  int64_t nb = axis ? r->n_ranges_i : r->n_ranges_j, empty = 0;
  for (int64_t row = 0; row < P.rows; row++) {
    int64_t bb = 0;
    while (bb < nb && blocks[2 * bb + 1] <= row) bb++;
    int none = bb == nb || blocks[2 * bb] > row || sl[bb] == (bb ? sl[bb - 1] : 0);
    if (!none) continue;
    empty++;
    for (int b = 0; b < 2; b++) {
      double v = tu_get(P.out[b][0], P.p->out_dtype[0], row * P.p->out_dim[0]);
      double want = !strcmp(c->reduction, "Sum") ? 0 : !strcmp(c->reduction, "ArgKMin") ? -1
                    : !strcmp(c->reduction, "Max_SumShiftExp") || !strcmp(c->reduction, "LogSumExp") ? -INFINITY
                                                                                                         : INFINITY;
      if (!strcmp(c->reduction, "ArgKMin")) v = (double)((int64_t *)P.out[b][0])[row * 3];
      ck_assert_msg(v == want, "%s: row %lld in no block: %s gives %g, want %g", P.what, (long long)row,
                    b ? "reference" : "CPU", v, want);
    }
  }
  ck_assert_msg(empty > 0, "the ranges leave no row out: the test lost its gaps");
  keops_ranges_destroy(r);
  mx_prob_free(&P);
  keops_kernel_destroy(k);
}
END_TEST

/* Ranges covering every pair give the dense result exactly (same order of the pairs). */
START_TEST(full_ranges_are_dense) {
  const char *const al[] = {"x = Vi(3)", "y = Vj(3)", "b = Vj(1)"};
  keops_kernel_desc d = keops_kernel_desc_init();
  d.formula = "Exp(-SqDist(x,y))*b";
  d.aliases = al;
  d.n_aliases = 3;
  d.axis = KEOPS_AXIS_J;
  keops_kernel *k = mx_make(ctx, &d);
  prob P;
  mx_prob_init(&P, k, 1000, 3000, NULL, 0, NULL, 5);
  const int64_t ri[] = {0, 1000}, sl[] = {1}, rj[] = {0, 3000};
  keops_ranges r = {ri, sl, rj, 1, 1, NULL, NULL, NULL, 0, 0};
  keops_run_options o = keops_run_options_init();
  o.backend = KEOPS_BACKEND_CPU;
  o.num_threads = 1;
  ck_assert_int_eq(keops_kernel_run(k, 1000, 3000, (const void *const *)P.arr, P.out[1], &o), KEOPS_OK);
  o.ranges = &r;
  ck_assert_int_eq(keops_kernel_run(k, 1000, 3000, (const void *const *)P.arr, P.out[0], &o), KEOPS_OK);
  ck_assert_int_eq(memcmp(P.out[0][0], P.out[1][0], 4 * 1000), 0);
  mx_prob_free(&P);
  keops_kernel_destroy(k);
}
END_TEST

int main(void) {
  mx_backend = "CPU";
  Suite *s = suite_create("ranges");
  TCase *tc = tcase_create("ranges");
  tcase_set_timeout(tc, 600);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, from_matrix_docstring);
  tcase_add_test(tc, from_labels);
  tcase_add_loop_test(tc, bad_ranges, 0, (int)(sizeof bad_cases / sizeof *bad_cases));
  tcase_add_loop_test(tc, reference_vs_loops, 0, 4);
  tcase_add_loop_test(tc, cpu_vs_reference, 0, NV * 8);
  tcase_add_test(tc, full_ranges_are_dense);
  suite_add_tcase(s, tc);
  return tu_run(s, 0) ? EXIT_FAILURE : EXIT_SUCCESS;
}
