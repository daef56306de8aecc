/* Batch dimensions: every batch element of a batched run equals the plain run of the same
 * kernel on that element's slices (bit for bit: the same code on the same values), with
 * numpy broadcasting of size-1 extents for every input kind (Vi, Vj, Pm), one to three batch
 * dimensions, both axes, the reference and CPU backends, Arg indices relative to the batch,
 * ranges within each element; KeOps's reported bugs (#366: a batched parameter gave zeros;
 * #382: successive singleton dimensions gave a wrong ArgMin); and the refusals. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keops.h"
#include "testutil.h"

enum { BM = 9, BN = 7, MAXND = 3 };
static keops_context *ctx, *ectx; /* ectx: its GPU is the emulator (KEOPS_GPU=emulator) */
static void setup(void) {
  ck_assert_int_eq(keops_context_create(&ctx), KEOPS_OK);
  ectx = tu_emulator_context();
}
static void teardown(void) {
  keops_context_destroy(ctx);
  keops_context_destroy(ectx);
}

static const char *const al[] = {"x = Vi(3)", "y = Vj(3)", "b = Vj(1)", "g = Pm(1)"};
static const int dims[] = {3, 3, 1, 1}, cats[] = {0, 1, 1, 2};

static keops_kernel *make_in(keops_context *c, const char *f, const char *red, keops_axis axis,
                             keops_dtype dt) {
  return tu_kernel(c, f, NULL, red, 0, al, 4, axis, dt);
}

static keops_kernel *make(const char *f, const char *red, keops_axis axis, keops_dtype dt) {
  return make_in(ctx, f, red, axis, dt);
}

typedef struct bcase {
  const char *f, *red;
  int nd;
  int64_t ext[4][MAXND]; /* x, y, b, g */
} bcase;

static const bcase bcases[] = {
    {"Exp(-g*SqDist(x,y))*b", "Sum", 2, {{2, 3}, {2, 1}, {1, 3}, {2, 1}}},
    {"Exp(-g*SqDist(x,y))*b", "Sum", 1, {{4}, {4}, {4}, {1}}},
    /* #366: only the parameter is batched; the outputs differ per element (not zeros) */
    {"Exp(-g*SqDist(x,y))*b", "Sum", 1, {{1}, {1}, {1}, {3}}},
    /* #382: successive singleton dimensions, ArgMin indices relative to each element */
    {"SqDist(x,y)+g*b", "Min_ArgMin", 3, {{1, 1, 2}, {2, 3, 1}, {2, 1, 1}, {1, 1, 1}}},
    {"-g*SqDist(x,y)+b", "LogSumExp", 2, {{3, 1}, {1, 2}, {3, 2}, {1, 2}}},
};
#define NB (int)(sizeof bcases / sizeof *bcases)

static int64_t rows_of(int cat) { return cat == 0 ? BM : cat == 1 ? BN : 1; }

/* _i: case, axis, dtype, with ranges, backend (reference, CPU, emulated GPU). */
START_TEST(elements_are_plain_runs) {
  const bcase *c = &bcases[_i % NB];
  int axis = (_i / NB) % 2, f64 = (_i / NB / 2) % 2, ranged = (_i / NB / 4) % 2, be = _i / NB / 8;
  keops_dtype dt = f64 ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
  keops_kernel *k = make_in(be == 2 ? ectx : ctx, c->f, c->red, tu_axis(axis), dt);
  int nd = c->nd;
  int64_t B[MAXND] = {1, 1, 1}, total = 1, ext[4 * MAXND];
  for (int d = 0; d < nd; d++) {
    for (int a = 0; a < 4; a++) B[d] = c->ext[a][d] > B[d] ? c->ext[a][d] : B[d], ext[a * nd + d] = c->ext[a][d];
    total *= B[d];
  }
  tu_rng r = tu_seed(60 + (uint64_t)_i);
  void *in[4];
  int64_t n_in[4];
  for (int a = 0; a < 4; a++) {
    n_in[a] = rows_of(cats[a]) * dims[a];
    for (int d = 0; d < nd; d++) n_in[a] *= c->ext[a][d];
    double *v = tu_randn(&r, n_in[a]);
    if (a == 3)
      for (int64_t q = 0; q < n_in[a]; q++) v[q] = 0.3 + fabs(v[q]); /* g > 0 */
    in[a] = tu_to_dtype(v, n_in[a], dt);
    free(v);
  }
  int no = keops_kernel_output_count(k);
  int64_t orows = keops_kernel_output_rows(k, BM, BN);
  size_t osz[2];
  void *out[2], *one[2];
  for (int q = 0; q < no; q++) {
    osz[q] = (size_t)(orows * keops_kernel_output_dim(k, q)) * 8;
    out[q] = malloc(osz[q] * (size_t)total);
    one[q] = malloc(osz[q]);
  }
  const int64_t ri[] = {1, 4, 6, 9}, si[] = {1, 2}, rj[] = {0, 3, 2, 7};
  const int64_t rjb[] = {0, 3, 4, 7}, sj[] = {1, 2}, rib[] = {2, 9, 0, 5};
  keops_ranges rg = {ri, si, rj, 2, 2, rjb, sj, rib, 2, 2};
  keops_batch batch = {nd, ext};
  keops_run_options o = keops_run_options_init();
  static const keops_backend backends[] = {KEOPS_BACKEND_REFERENCE, KEOPS_BACKEND_CPU, KEOPS_BACKEND_GPU};
  o.backend = backends[be];
  o.ranges = ranged ? &rg : NULL;
  o.batch = &batch;
  ck_assert_msg(keops_kernel_run(k, BM, BN, (const void *const *)in, out, &o) == KEOPS_OK, "%s",
                keops_last_error());
  o.batch = NULL;
  size_t esz = dt == KEOPS_FLOAT32 ? 4 : 8;
  int distinct = 0;
  for (int64_t t = 0; t < total; t++) {
    const void *sl[4];
    for (int a = 0; a < 4; a++) { /* the element's slice: its index, 0 where broadcast */
      int64_t idx = 0, rem = t, mul = 1, q[MAXND];
      for (int d = nd - 1; d >= 0; d--) q[d] = rem % B[d], rem /= B[d];
      for (int d = nd - 1; d >= 0; d--) idx += (c->ext[a][d] == 1 ? 0 : q[d]) * mul, mul *= c->ext[a][d];
      sl[a] = (const char *)in[a] + (size_t)(idx * rows_of(cats[a]) * dims[a]) * esz;
    }
    ck_assert_int_eq(keops_kernel_run(k, BM, BN, sl, one, &o), KEOPS_OK);
    for (int q = 0; q < no; q++) {
      size_t used = (size_t)(orows * keops_kernel_output_dim(k, q)) *
                    (keops_kernel_output_dtype(k, q) == KEOPS_INT64 ? 8 : esz);
      ck_assert_msg(!memcmp((char *)out[q] + (size_t)t * used, one[q], used),
                    "%s %s: batch element %lld, output %d differs from its plain run", c->red, c->f,
                    (long long)t, q);
      distinct |= t > 0 && memcmp((char *)out[q] + (size_t)t * used, out[q], used);
    }
  }
  ck_assert_msg(total == 1 || distinct, "every batch element gave the same output");
  for (int a = 0; a < 4; a++) free(in[a]);
  for (int q = 0; q < no; q++) free(out[q]), free(one[q]);
  keops_kernel_destroy(k);
}
END_TEST

START_TEST(refusals) {
  keops_kernel *k = make("Exp(-g*SqDist(x,y))*b", "Sum", KEOPS_AXIS_J, KEOPS_FLOAT64);
  double x[2 * BM * 3] = {0}, y[3 * BN * 3] = {0}, b[BN] = {0}, g[1] = {1}, out[3 * BM];
  const void *args[] = {x, y, b, g};
  keops_run_options o = keops_run_options_init();
  const int64_t bad[] = {2, 3, 1, 1};
  keops_batch batch = {1, bad};
  o.batch = &batch;
  ck_assert_int_eq(keops_kernel_run(k, BM, BN, args, (void *[]){out}, &o), KEOPS_ERROR_DIMENSION);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_run: input 1 has batch extent 3 in dimension 0 "
                                       "where input 0 has 2 (each must be the same or 1)");
  const int64_t zero[] = {2, 0, 1, 1};
  batch.extents = zero;
  ck_assert_int_eq(keops_kernel_run(k, BM, BN, args, (void *[]){out}, &o), KEOPS_ERROR_DIMENSION);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_run: batch extent 0 of input 1 in dimension 0 is "
                                       "not in [1, 2^62)");
  batch.ndim = 0;
  ck_assert_int_eq(keops_kernel_run(k, BM, BN, args, (void *[]){out}, &o), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_run: batch->ndim = 0 is not in [1, 8]");
  batch.ndim = 1;
  batch.extents = NULL;
  ck_assert_int_eq(keops_kernel_run(k, BM, BN, args, (void *[]){out}, &o), KEOPS_ERROR_ARGUMENT);
  ck_assert_str_eq(keops_last_error(), "keops_kernel_run: batch->extents is NULL");
  keops_kernel_destroy(k);
}
END_TEST

int main(void) {
  Suite *s = suite_create("batch");
  TCase *tc = tcase_create("batch");
  tcase_set_timeout(tc, 300);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_loop_test(tc, elements_are_plain_runs, 0, NB * 24);
  tcase_add_test(tc, refusals);
  suite_add_tcase(s, tc);
  return tu_run(s, 0) ? EXIT_FAILURE : EXIT_SUCCESS;
}
