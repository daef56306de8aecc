/* Every reduction row, both axes, float32 and float64, through the public API on the
 * reference backend (fe_build + interp_run), against hand-written double loops: plain sums,
 * brute-force scans and sorts, two-pass log-sum-exp. Plus the red.c steps on their own
 * (combine of split ranges = one pass) and the edge cases: ties, K > count, empty ranges,
 * NaN inputs, large LSE arguments, every sum scheme. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "keops.h"
#include "red.h"
#include "testutil.h"

/* ---- what each reduction computes, written independently of red.c ------------------- */

enum kind {
  SUM,
  MIN,
  MAX,
  ARGMIN,
  ARGMAX,
  MIN_ARG,
  MAX_ARG,
  KMIN,
  ARGKMIN,
  KMIN_ARG,
  LSE,
  LSE_W,
  SOFTMAX,
  MSSE,
  MSSE_W
};

static const struct rcase {
  const char *name;
  enum kind kind;
  int f2; /* 1: give formula2 */
} cases[] = {
    {"Sum", SUM, 0},
    {"Max", MAX, 0},
    {"Min", MIN, 0},
    {"ArgMax", ARGMAX, 0},
    {"ArgMin", ARGMIN, 0},
    {"Max_ArgMax", MAX_ARG, 0},
    {"Min_ArgMin", MIN_ARG, 0},
    {"KMin", KMIN, 0},
    {"ArgKMin", ARGKMIN, 0},
    {"KMin_ArgKMin", KMIN_ARG, 0},
    {"LogSumExp", LSE, 0},
    {"LogSumExp", LSE_W, 1},
    {"LogSumExpWeight", LSE_W, 1},
    {"SumSoftMaxWeight", SOFTMAX, 1},
    {"SoftMax", SOFTMAX, 1},
    {"Max_SumShiftExp", MSSE, 0},
    {"Max_SumShiftExpWeight", MSSE_W, 1},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static const char *const red_names[] = {
#define X(name, family, dir, outputs, f2, weight1, fin) #name,
#include "reductions.def"
#undef X
};
#define NRED ((int)(sizeof red_names / sizeof red_names[0]))
static int exercised[NRED];

static void mark_exercised(const char *name) {
  for (int r = 0; r < NRED; r++)
    if (!strcmp(red_names[r], name)) exercised[r] = 1;
}

static int is_lse(enum kind k) { return k >= LSE; }
static int has_idx(enum kind k) {
  return k == ARGMIN || k == ARGMAX || k == MIN_ARG || k == MAX_ARG || k == ARGKMIN ||
         k == KMIN_ARG;
}
static int has_val(enum kind k) { return k != ARGMIN && k != ARGMAX && k != ARGKMIN; }
static int is_kmin(enum kind k) { return k == KMIN || k == ARGKMIN || k == KMIN_ARG; }
static int dir_of(enum kind k) { return k == MAX || k == ARGMAX || k == MAX_ARG ? 1 : -1; }

/* ---- the data: x = Vi(2), y = Vj(2), g = Vj(3), p = Pm(1) --------------------------- */

#define DX 2
#define DG 3
static const char *const aliases[] = {"x = Vi(2)", "y = Vj(2)", "g = Vj(3)", "p = Pm(1)"};
static const char *const f_vec = "x*y+p";   /* D = 2: f_d = x_d y_d + p */
static const char *const f_lse = "(x|y)+p"; /* scalar */
static const char *const f_w = "g";         /* E = 3 */

typedef struct prob {
  int64_t M, N;
  double *x, *y, *g, p; /* values exactly representable in the dtype under test */
} prob;

static void prob_free(prob *pb) { free(pb->x), free(pb->y), free(pb->g); }

/* ints: small integers (many ties); else normal * scale. Rounded to float32 when f32. */
static prob prob_make(int64_t M, int64_t N, int ints, double scale, keops_dtype dt, uint64_t seed) {
  tu_rng r = tu_seed(seed);
  prob pb = {M,
             N,
             malloc(sizeof(double) * (size_t)(M * DX + 1)),
             malloc(sizeof(double) * (size_t)(N * DX + 1)),
             malloc(sizeof(double) * (size_t)(N * DG + 1)),
             ints ? 0.5 : 0.25};
  double *arrs[3] = {pb.x, pb.y, pb.g};
  int64_t n[3] = {M * DX, N * DX, N * DG};
  for (int a = 0; a < 3; a++)
    for (int64_t k = 0; k < n[a]; k++) {
      double v = ints ? floor(tu_uniform(&r, -2, 3)) : tu_normal(&r) * scale;
      if (a == 2) v = tu_uniform(&r, 0.5, 2); /* positive weights: log s is defined */
      arrs[a][k] = dt == KEOPS_FLOAT32 ? (double)(float)v : v;
    }
  return pb;
}

/* Formula values at pair (i, j): D = 2 values, or for LSE (F, w_1..w_E). */
static void hand_f(const prob *pb, int lse, int64_t i, int64_t j, double *f) {
  const double *x = pb->x + i * DX, *y = pb->y + j * DX;
  if (!lse) {
    for (int d = 0; d < DX; d++) f[d] = x[d] * y[d] + pb->p;
    return;
  }
  f[0] = x[0] * y[0] + x[1] * y[1] + pb->p;
  for (int e = 0; e < DG; e++) f[1 + e] = pb->g[j * DG + e];
}

typedef struct vi {
  double v;
  int64_t i;
} vi;
static int vi_cmp(const void *a, const void *b) { /* value ascending, then index */
  const vi *p = a, *q = b;
  if (p->v != q->v) return p->v < q->v ? -1 : 1;
  return (p->i > q->i) - (p->i < q->i);
}

/* Expected outputs of one row r: values in val (width w), indices in idx. */
static void ref_row(const struct rcase *c, const prob *pb, int axis, int K, int64_t r, double *val,
                    int64_t *idx, int *w) {
  int64_t nred = axis ? pb->N : pb->M;
  double f[1 + DG];
  vi *list = malloc(sizeof(vi) * (size_t)(nred + 1));
  enum kind k = c->kind;
  if (k == SUM) {
    val[0] = val[1] = 0;
    for (int64_t t = 0; t < nred; t++) {
      hand_f(pb, 0, axis ? r : t, axis ? t : r, f);
      val[0] += f[0], val[1] += f[1];
    }
    *w = DX;
  } else if (!is_lse(k)) {                           /* sort by (best first, index), NaN skipped */
    int keep = is_kmin(k) ? K : 1, sgn = -dir_of(k); /* sort key sgn*f ascending */
    for (int d = 0; d < DX; d++) {
      int64_t n = 0;
      for (int64_t t = 0; t < nred; t++) {
        hand_f(pb, 0, axis ? r : t, axis ? t : r, f);
        if (!isnan(f[d])) list[n++] = (vi){sgn * f[d], t};
      }
      qsort(list, (size_t)n, sizeof *list, vi_cmp); /* stable by construction: (v, t) */
      for (int q = 0; q < keep; q++) {
        val[q * DX + d] = sgn * (q < n ? list[q].v : INFINITY);
        idx[q * DX + d] = q < n ? list[q].i : -1;
      }
    }
    *w = keep * DX;
  } else { /* two passes: m = max F, s_e = sum w_e exp(F - m) */
    double m = -INFINITY, s0 = 0, s[DG] = {0, 0, 0};
    for (int64_t t = 0; t < nred; t++) {
      hand_f(pb, 1, axis ? r : t, axis ? t : r, f);
      if (f[0] > m) m = f[0];
    }
    for (int64_t t = 0; t < nred; t++) {
      hand_f(pb, 1, axis ? r : t, axis ? t : r, f);
      double ex = exp(f[0] - m);
      s0 += ex;
      for (int e = 0; e < DG; e++) s[e] += ex * f[1 + e];
    }
    int E = c->f2 ? DG : 1;
    const double *se = c->f2 ? s : &s0;
    if (k == LSE || k == LSE_W) {
      for (int e = 0; e < E; e++) val[e] = m + log(se[e]);
      *w = E;
    } else if (k == SOFTMAX) {
      for (int e = 0; e < DG; e++) val[e] = s[e] / s0;
      *w = DG;
    } else {
      val[0] = m;
      for (int e = 0; e < E; e++) val[1 + e] = se[e];
      *w = 1 + E;
    }
  }
  free(list);
}

/* Values per output row, as the array conventions say. */
static int ref_width(const struct rcase *c, int K) {
  int E = c->f2 ? DG : 1;
  switch (c->kind) {
  case LSE:
  case LSE_W: return E;
  case SOFTMAX: return DG;
  case MSSE:
  case MSSE_W: return 1 + E;
  default: return is_kmin(c->kind) ? K * DX : DX;
  }
}

/* ---- running through the API --------------------------------------------------------- */

typedef struct run_opts {
  int axis, K;
  keops_dtype dt;
  keops_sum_scheme scheme;
  int dacc;
  const char *formula; /* NULL: the case's default */
} run_opts;

static keops_context *ctx;

static void check_close(double got, double want, keops_dtype dt, const char *what, int64_t r,
                        int q) {
  double rtol = dt == KEOPS_FLOAT32 ? 2e-6 : 1e-11;
  if (isnan(want)) {
    ck_assert_msg(isnan(got), "%s row %lld [%d]: got %.17g, want NaN", what, (long long)r, q, got);
  } else if (isinf(want)) {
    ck_assert_msg(got == want, "%s row %lld [%d]: got %.17g, want %g", what, (long long)r, q, got,
                  want);
  } else {
    ck_assert_msg(fabs(got - want) <= rtol * (1 + fabs(want)),
                  "%s row %lld [%d]: got %.17g, want %.17g", what, (long long)r, q, got, want);
  }
}

/* Runs case c on pb with o and compares every output row with ref_row. */
static void run_case(const struct rcase *c, const prob *pb, const run_opts *o) {
  keops_kernel_desc desc = keops_kernel_desc_init();
  desc.formula = o->formula ? o->formula : is_lse(c->kind) ? f_lse : f_vec;
  desc.aliases = aliases;
  desc.n_aliases = 4;
  desc.reduction = c->name;
  desc.axis = tu_axis(o->axis);
  desc.k = is_kmin(c->kind) ? o->K : 0;
  desc.formula2 = c->f2 ? f_w : NULL;
  desc.dtype = o->dt;
  desc.sum_scheme = o->scheme;
  desc.double_accumulator = o->dacc;
  keops_kernel *k = NULL;
  keops_status st = keops_kernel_create(ctx, &desc, &k);
  ck_assert_msg(st == KEOPS_OK, "%s: create: %s", c->name, keops_last_error());

  int64_t rows = o->axis ? pb->M : pb->N;
  void *in[4] = {tu_to_dtype(pb->x, pb->M * DX, o->dt), tu_to_dtype(pb->y, pb->N * DX, o->dt),
                 tu_to_dtype(pb->g, pb->N * DG, o->dt), tu_to_dtype(&pb->p, 1, o->dt)};
  int64_t wmax = (int64_t)(o->K > 0 ? o->K : 1) * DX + DG + 1;
  double *vals = malloc(sizeof(double) * (size_t)(rows * wmax + 1));
  int64_t *idxs = malloc(sizeof(int64_t) * (size_t)(rows * wmax + 1));
  double want[64];
  int64_t wanti[64];
  int w = ref_width(c, o->K);
  int nout = has_val(c->kind) + has_idx(c->kind);
  ck_assert_int_eq(keops_kernel_output_count(k), nout);
  for (int q = 0; q < nout; q++) ck_assert_int_eq(keops_kernel_output_dim(k, q), w);
  void *outs[2] = {has_val(c->kind) ? (void *)vals : (void *)idxs, idxs};
  if (has_val(c->kind)) {
    ck_assert_int_eq(keops_kernel_output_dtype(k, 0), o->dt);
    outs[0] =
        o->dt == KEOPS_FLOAT32 ? malloc(sizeof(float) * (size_t)(rows * w + 1)) : (void *)vals;
  }
  if (has_idx(c->kind)) ck_assert_int_eq(keops_kernel_output_dtype(k, nout - 1), KEOPS_INT64);
  keops_run_options ro = keops_run_options_init();
  ro.backend = KEOPS_BACKEND_REFERENCE;
  st = keops_kernel_run(k, pb->M, pb->N, (const void *const *)in, outs, &ro);
  ck_assert_msg(st == KEOPS_OK, "%s: run: %s", c->name, keops_last_error());

  for (int64_t r = 0; r < rows; r++) {
    int wr = 0;
    ref_row(c, pb, o->axis, o->K, r, want, wanti, &wr);
    ck_assert_int_eq(wr, w);
    for (int q = 0; q < w; q++) {
      if (has_val(c->kind))
        check_close(tu_get(outs[0], o->dt, r * w + q), want[q], o->dt, c->name, r, q);
      if (has_idx(c->kind))
        ck_assert_msg(idxs[r * w + q] == wanti[q],
                      "%s axis %d row %lld [%d]: index %lld, want %lld", c->name, o->axis,
                      (long long)r, q, (long long)idxs[r * w + q], (long long)wanti[q]);
    }
  }
  if (has_val(c->kind) && outs[0] != vals) free(outs[0]);
  free(vals), free(idxs);
  for (int a = 0; a < 4; a++) free(in[a]);
  keops_kernel_destroy(k);
  mark_exercised(c->name);
}

static void run_all(int64_t M, int64_t N, int K, uint64_t seed) {
  for (int dti = 0; dti < 2; dti++) {
    keops_dtype dt = dti ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
    for (int ci = 0; ci < NCASES; ci++) {
      const struct rcase *c = &cases[ci];
      /* ties matter for the scans, accuracy for the sums */
      prob pb = prob_make(M, N, !is_lse(c->kind) && c->kind != SUM, 1, dt, seed + (uint64_t)ci);
      for (int axis = 0; axis < 2; axis++) run_case(c, &pb, &(run_opts){axis, K, dt, 0, 0, 0});
      prob_free(&pb);
    }
  }
}

/* ---- tests --------------------------------------------------------------------------- */

START_TEST(every_row_both_axes_both_dtypes) { run_all(7, 11, 3, 1); }
END_TEST

START_TEST(k_larger_than_count) { run_all(7, 11, 15, 2); } /* 11 and 7 < 15: padding */
END_TEST

START_TEST(empty_reduced_range) {
  run_all(5, 0, 2, 3); /* axis 1 reduces over nothing; axis 0 has no rows */
  run_all(0, 4, 2, 4);
}
END_TEST

START_TEST(nan_inputs) {
  /* y[j] NaN in component 0 for a few j, and component 1 NaN everywhere: scans skip NaN,
   * an all-NaN component gives (+inf / -inf, -1); Sum and LSE propagate NaN */
  for (int dti = 0; dti < 2; dti++) {
    keops_dtype dt = dti ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
    for (int ci = 0; ci < NCASES; ci++) {
      prob pb = prob_make(6, 9, 1, 1, dt, 50 + (uint64_t)ci);
      for (int64_t j = 0; j < pb.N; j++) {
        if (j % 3 == 1) pb.y[j * DX] = NAN;
        pb.y[j * DX + 1] = NAN;
      }
      for (int axis = 0; axis < 2; axis++)
        run_case(&cases[ci], &pb, &(run_opts){axis, 4, dt, 0, 0, 0});
      prob_free(&pb);
    }
  }
}
END_TEST

/* F = y, one component, known answers including KeOps's documented tie example. */
static void run_y(const char *red, int K, const double *y, int64_t N, double *vals, int64_t *idxs) {
  const char *al[1] = {"y = Vj(1)"};
  keops_kernel_desc desc = {.size = sizeof(keops_kernel_desc), .formula = "y",
                            .aliases = al,
                            .n_aliases = 1,
                            .reduction = red,
                            .axis = KEOPS_AXIS_J,
                            .k = K,
                            .dtype = KEOPS_FLOAT64};
  keops_kernel *k = NULL;
  ck_assert_msg(keops_kernel_create(ctx, &desc, &k) == KEOPS_OK, "%s", keops_last_error());
  const void *in[1] = {y};
  void *outs[2] = {vals ? (void *)vals : (void *)idxs, idxs};
  keops_run_options ro = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_REFERENCE};
  ck_assert_msg(keops_kernel_run(k, 1, N, in, outs, &ro) == KEOPS_OK, "%s", keops_last_error());
  keops_kernel_destroy(k);
}

START_TEST(ties_smaller_index_first) {
  double y[5] = {1, 0, 0, 2, 0}, v[8];
  int64_t ix[8];
  run_y("ArgMin", 0, y, 5, NULL, ix);
  ck_assert_int_eq(ix[0], 1);
  run_y("ArgKMin", 4, y, 5, NULL, ix);
  int64_t want4[4] = {1, 2, 4, 0};
  for (int q = 0; q < 4; q++) ck_assert_int_eq(ix[q], want4[q]);
  run_y("KMin_ArgKMin", 7, y, 5, v, ix); /* K > N: (+inf, -1) */
  double wv[7] = {0, 0, 0, 1, 2, INFINITY, INFINITY};
  int64_t wi[7] = {1, 2, 4, 0, 3, -1, -1};
  for (int q = 0; q < 7; q++) ck_assert(v[q] == wv[q] && ix[q] == wi[q]);
  double z[4] = {1, 3, 3, 0};
  run_y("Max_ArgMax", 0, z, 4, v, ix);
  ck_assert(v[0] == 3 && ix[0] == 1);
  double inf[3] = {INFINITY, INFINITY, NAN}; /* an infinite value still has an index */
  run_y("Min_ArgMin", 0, inf, 3, v, ix);
  ck_assert(v[0] == INFINITY && ix[0] == 0);
  double nan[2] = {NAN, NAN};
  run_y("Max_ArgMax", 0, nan, 2, v, ix);
  ck_assert(v[0] == -INFINITY && ix[0] == -1);
  mark_exercised("ArgMin"), mark_exercised("ArgKMin"), mark_exercised("KMin_ArgKMin");
}
END_TEST

START_TEST(lse_large_values_stable) {
  /* |F| ~ 1e4: exp(F) overflows, the online update must not */
  for (int dti = 0; dti < 2; dti++) {
    keops_dtype dt = dti ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
    prob pb = prob_make(8, 13, 0, 70, dt, 9);
    for (int ci = 0; ci < NCASES; ci++) {
      if (!is_lse(cases[ci].kind)) continue;
      for (int axis = 0; axis < 2; axis++)
        run_case(&cases[ci], &pb, &(run_opts){axis, 0, dt, 0, 0, 0});
    }
    double f[4], big = 0;
    for (int64_t i = 0; i < pb.M; i++)
      for (int64_t j = 0; j < pb.N; j++) hand_f(&pb, 1, i, j, f), big = fmax(big, fabs(f[0]));
    ck_assert_msg(big > 2000, "the test data should reach |F| ~ 1e4, max %g", big);
    prob_free(&pb);
  }
}
END_TEST

START_TEST(sum_schemes_agree) {
  keops_sum_scheme schemes[4] = {KEOPS_SUM_AUTO, KEOPS_SUM_DIRECT, KEOPS_SUM_BLOCK,
                                 KEOPS_SUM_KAHAN};
  for (int dti = 0; dti < 2; dti++) {
    keops_dtype dt = dti ? KEOPS_FLOAT64 : KEOPS_FLOAT32;
    prob pb = prob_make(3, 2000, 0, 1, dt, 11);
    for (int s = 0; s < 4; s++)
      for (int dacc = 0; dacc < 2; dacc++) {
        if (dacc && dt == KEOPS_FLOAT64) continue;
        for (int axis = 0; axis < 2; axis++) {
          run_case(&cases[0], &pb, &(run_opts){axis, 0, dt, schemes[s], dacc, 0});
          run_case(&cases[10], &pb, &(run_opts){axis, 0, dt, schemes[s], dacc, 0}); /* LSE */
        }
      }
    prob_free(&pb);
  }
}
END_TEST

START_TEST(zero_formula_fills_zeros) {
  prob pb = prob_make(4, 5, 0, 1, KEOPS_FLOAT64, 12);
  pb.x[0] = NAN; /* never read: x - x is Zero before any pair is evaluated */
  keops_kernel_desc desc = {.size = sizeof(keops_kernel_desc), .formula = "x-x",
                            .aliases = aliases,
                            .n_aliases = 4,
                            .reduction = "Sum",
                            .axis = KEOPS_AXIS_J,
                            .dtype = KEOPS_FLOAT64};
  keops_kernel *k = NULL;
  ck_assert_msg(keops_kernel_create(ctx, &desc, &k) == KEOPS_OK, "%s", keops_last_error());
  double out[8];
  memset(out, 0xff, sizeof out);
  const void *in[4] = {pb.x, pb.y, pb.g, &pb.p};
  void *outs[1] = {out};
  keops_run_options ro = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_REFERENCE};
  ck_assert(keops_kernel_run(k, 4, 5, in, outs, &ro) == KEOPS_OK);
  for (int q = 0; q < 8; q++) ck_assert(out[q] == 0);
  keops_kernel_destroy(k);
  prob_free(&pb);
}
END_TEST

/* interp_run directly: the program's output shape and errors. */
START_TEST(interp_run_direct) {
  keops_kernel_desc desc = {.size = sizeof(keops_kernel_desc), .formula = "x*y+p",
                            .aliases = aliases,
                            .n_aliases = 4,
                            .reduction = "Min_ArgMin",
                            .axis = KEOPS_AXIS_I,
                            .dtype = KEOPS_FLOAT64};
  kerr e;
  kerr_clear(&e);
  fe_program *p = fe_build(&desc, &e);
  ck_assert_msg(p, "%s", e.msg);
  prob pb = prob_make(5, 3, 1, 1, KEOPS_FLOAT64, 13);
  const void *in[4] = {pb.x, pb.y, pb.g, &pb.p};
  double v[6];
  int64_t ix[6];
  void *outs[2] = {v, ix};
  ck_assert_int_eq(interp_run(p, 5, 3, in, outs, NULL, &e), KEOPS_OK);
  int64_t w;
  for (int64_t j = 0; j < 3; j++)
    for (int d = 0; d < 2; d++) {
      double best = INFINITY;
      w = -1;
      for (int64_t i = 0; i < 5; i++) {
        double f = pb.x[i * 2 + d] * pb.y[j * 2 + d] + pb.p;
        if (f < best) best = f, w = i;
      }
      ck_assert(v[j * 2 + d] == best && ix[j * 2 + d] == w);
    }
  void *bad[2] = {v, NULL};
  kerr_clear(&e);
  ck_assert_int_eq(interp_run(p, 5, 3, in, bad, NULL, &e), KEOPS_ERROR_ARGUMENT);
  ck_assert(strstr(e.msg, "output 1") != NULL);
  const void *badin[4] = {pb.x, NULL, pb.g, &pb.p};
  kerr_clear(&e);
  ck_assert_int_eq(interp_run(p, 5, 3, badin, outs, NULL, &e), KEOPS_ERROR_ARGUMENT);
  kerr_clear(&e);
  ck_assert_int_eq(interp_run(p, -1, 3, in, outs, NULL, &e), KEOPS_ERROR_ARGUMENT);
  fe_free(p);
  prob_free(&pb);
}
END_TEST

/* interp_run keeps no global state: one kernel run from several threads at once gives, in
 * every thread, the bits of a serial run. */
typedef struct job {
  keops_kernel *k;
  const void *const *in;
  void *outs[2];
  keops_status st;
} job;

static void *run_job(void *arg) {
  job *j = arg;
  keops_run_options ro = {.size = sizeof(keops_run_options), .backend = KEOPS_BACKEND_REFERENCE};
  j->st = keops_kernel_run(j->k, 40, 50, j->in, j->outs, &ro);
  return NULL;
}

START_TEST(concurrent_runs_agree) {
  enum { T = 4, M = 40, N = 50, K = 3 };
  prob pb = prob_make(M, N, 1, 1, KEOPS_FLOAT64, 31);
  keops_kernel_desc desc = {.size = sizeof(keops_kernel_desc), .formula = f_vec,
                            .aliases = aliases,
                            .n_aliases = 4,
                            .reduction = "KMin_ArgKMin",
                            .axis = KEOPS_AXIS_J,
                            .k = K,
                            .dtype = KEOPS_FLOAT64};
  keops_kernel *k = NULL;
  ck_assert_msg(keops_kernel_create(ctx, &desc, &k) == KEOPS_OK, "%s", keops_last_error());
  const void *in[4] = {pb.x, pb.y, pb.g, &pb.p};
  static double v[T + 1][M * K * DX];
  static int64_t ix[T + 1][M * K * DX];
  job jobs[T + 1];
  pthread_t th[T];
  for (int t = 0; t <= T; t++) jobs[t] = (job){k, in, {v[t], ix[t]}, KEOPS_OK};
  run_job(&jobs[T]); /* the serial reference */
  for (int t = 0; t < T; t++) ck_assert_int_eq(pthread_create(&th[t], NULL, run_job, &jobs[t]), 0);
  for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
  for (int t = 0; t <= T; t++) {
    ck_assert_int_eq(jobs[t].st, KEOPS_OK);
    ck_assert(!memcmp(v[t], v[T], sizeof v[T]) && !memcmp(ix[t], ix[T], sizeof ix[T]));
  }
  keops_kernel_destroy(k);
  prob_free(&pb);
}
END_TEST

/* ---- the red.c steps on their own: combine of split ranges = one pass ---------------- */

/* Finalizes st into float64/int64 rows of one output row. */
static void fin(const red_spec *s, const double *st, double *v, int64_t *ix) {
  void *outs[2];
  for (int o = 0; o < s->nout; o++) outs[o] = s->out_idx[o] ? (void *)ix : (void *)v;
  red_finalize(s, st, KEOPS_FLOAT64, outs, 0);
}

static void check_split(const char *name, int fdim, int K, keops_sum_scheme scheme, int n,
                        const double *f, const int *cuts) {
  red_spec s;
  kerr e;
  kerr_clear(&e);
  ck_assert_msg(!red_spec_init(&s, red_find(name), fdim, K, scheme, n, &e), "%s", e.msg);
  double *one = malloc(sizeof(double) * s.state), *part[3];
  red_init(&s, one);
  for (int j = 0; j < n; j++) red_accumulate(&s, one, f + j * fdim, j);
  for (int c = 0; c < 3; c++) { /* ranges [cuts[c], cuts[c+1]) */
    part[c] = malloc(sizeof(double) * s.state);
    red_init(&s, part[c]);
    for (int j = cuts[c]; j < cuts[c + 1]; j++) red_accumulate(&s, part[c], f + j * fdim, j);
  }
  /* (C + A) + B: combines out of index order on purpose */
  red_combine(&s, part[2], part[0]);
  red_combine(&s, part[2], part[1]);
  double v1[256], v2[256];
  int64_t i1[256], i2[256];
  fin(&s, one, v1, i1);
  fin(&s, part[2], v2, i2);
  for (int o = 0; o < s.nout; o++)
    for (int q = 0; q < s.out_dim[o]; q++) {
      if (s.out_idx[o]) {
        ck_assert_msg(i1[q] == i2[q], "%s [%d]: one pass %lld, combined %lld", name, q,
                      (long long)i1[q], (long long)i2[q]);
      } else {
        int same = v1[q] == v2[q] || (isnan(v1[q]) && isnan(v2[q])) ||
                   fabs(v1[q] - v2[q]) <= 1e-12 * (1 + fabs(v1[q]));
        ck_assert_msg(same, "%s [%d]: one pass %.17g, combined %.17g", name, q, v1[q], v2[q]);
      }
    }
  for (int c = 0; c < 3; c++) free(part[c]);
  free(one);
}

START_TEST(combine_equals_one_pass) {
  enum { n = 40, D = 3 };
  tu_rng r = tu_seed(21);
  double f[n * D];
  for (int k = 0; k < n * D; k++) f[k] = floor(tu_uniform(&r, -3, 3)); /* ties */
  f[5] = NAN, f[7 * D] = NAN;
  double fl[n * D]; /* LSE: (F, w1, w2) with w > 0 */
  for (int j = 0; j < n; j++)
    fl[j * D] = tu_normal(&r) * 30, fl[j * D + 1] = 1, fl[j * D + 2] = tu_uniform(&r, 0.1, 3);
  int cut_sets[3][4] = {{0, 13, 29, n}, {0, 0, 20, n}, {0, 39, 40, n}};
  for (int cs = 0; cs < 3; cs++) {
    const int *cuts = cut_sets[cs];
    for (int sc = KEOPS_SUM_DIRECT; sc <= KEOPS_SUM_KAHAN; sc++)
      check_split("Sum", D, 0, (keops_sum_scheme)sc, n, fl, cuts);
    const char *slots[] = {"Min_ArgMin", "Max_ArgMax", "Min", "ArgMax"};
    for (int q = 0; q < 4; q++) check_split(slots[q], D, 0, KEOPS_SUM_DIRECT, n, f, cuts);
    for (int K = 1; K <= 45; K += 11)
      check_split("KMin_ArgKMin", D, K, KEOPS_SUM_DIRECT, n, f, cuts);
    const char *lse[] = {"LogSumExp", "SumSoftMaxWeight", "Max_SumShiftExp",
                         "Max_SumShiftExpWeight"};
    for (int q = 0; q < 4; q++) check_split(lse[q], D, 0, KEOPS_SUM_DIRECT, n, fl, cuts);
  }
}
END_TEST

START_TEST(lse_infinite_arguments) {
  /* F = -inf adds nothing; all -inf: m = -inf and LogSumExp = -inf (no inf - inf NaN) */
  red_spec s;
  kerr e;
  kerr_clear(&e);
  ck_assert(!red_spec_init(&s, red_find("Max_SumShiftExp"), 2, 0, KEOPS_SUM_AUTO, 3, &e));
  double st[2], f[2] = {-INFINITY, 1}, v[2];
  red_init(&s, st);
  red_accumulate(&s, st, f, 0);
  red_accumulate(&s, st, f, 1);
  fin(&s, st, v, NULL);
  ck_assert(v[0] == -INFINITY && v[1] == 2);
  double g[2] = {0, 1};
  red_accumulate(&s, st, g, 2);
  fin(&s, st, v, NULL);
  ck_assert(v[0] == 0 && v[1] == 1);
  double h[2] = {INFINITY, 1};
  red_accumulate(&s, st, h, 3);
  red_accumulate(&s, st, h, 4);
  fin(&s, st, v, NULL);
  ck_assert(v[0] == INFINITY && v[1] == 2);
}
END_TEST

/* The schemes are honoured as written even in double: 1 then 10000 terms of 1e-16 (each
 * below half an ulp of 1). DIRECT loses them all, BLOCK keeps all but the first block's,
 * KAHAN keeps them to an ulp. */
START_TEST(sum_schemes_honoured) {
  enum { n = 10001 };
  double want = 1 + 1e-12, r[4];
  for (int sc = KEOPS_SUM_DIRECT; sc <= KEOPS_SUM_KAHAN; sc++) {
    red_spec s;
    kerr e;
    kerr_clear(&e);
    ck_assert(!red_spec_init(&s, red_find("Sum"), 1, 0, (keops_sum_scheme)sc, n, &e));
    double st[3];
    red_init(&s, st);
    for (int j = 0; j < n; j++) {
      double f = j ? 1e-16 : 1;
      red_accumulate(&s, st, &f, j);
      if (sc == KEOPS_SUM_BLOCK && j + 1 == s.period) /* [acc][part][count]: flushed */
        ck_assert(st[0] == 1 && st[1] == 0 && st[2] == 0);
    }
    fin(&s, st, &r[sc], NULL);
  }
  ck_assert_int_eq((int)ceil(sqrt(n)), 101);
  ck_assert(r[KEOPS_SUM_DIRECT] == 1);
  ck_assert_msg(r[KEOPS_SUM_BLOCK] > 1 + 0.95e-12 && r[KEOPS_SUM_BLOCK] < want, "block %.17g",
                r[KEOPS_SUM_BLOCK]);
  ck_assert_msg(fabs(r[KEOPS_SUM_KAHAN] - want) <= 4.5e-16, "kahan %.17g", r[KEOPS_SUM_KAHAN]);
}
END_TEST

START_TEST(red_find_exact_names) {
  ck_assert_ptr_nonnull(red_find("Sum"));
  ck_assert_ptr_null(red_find("sum"));
  ck_assert_ptr_null(red_find("MinArgMin")); /* KeOps docstring names that never worked */
  ck_assert_ptr_null(red_find("KMinArgKMin"));
  ck_assert_ptr_null(red_find(""));
  ck_assert_ptr_null(red_find(NULL));
  for (int r = 0; r < NRED; r++) ck_assert_str_eq(red_find(red_names[r])->name, red_names[r]);
  ck_assert(red_find("SoftMax")->fin == red_find("SumSoftMaxWeight")->fin);
}
END_TEST

START_TEST(every_reduction_row_exercised) {
  for (int r = 0; r < NRED; r++)
    ck_assert_msg(exercised[r], "reduction %s was never run", red_names[r]);
}
END_TEST

static Suite *reductions_suite(void) {
  Suite *s = suite_create("reductions");
  TCase *tc = tcase_create("api");
  tcase_add_test(tc, every_row_both_axes_both_dtypes);
  tcase_add_test(tc, k_larger_than_count);
  tcase_add_test(tc, empty_reduced_range);
  tcase_add_test(tc, nan_inputs);
  tcase_add_test(tc, ties_smaller_index_first);
  tcase_add_test(tc, lse_large_values_stable);
  tcase_add_test(tc, sum_schemes_agree);
  tcase_add_test(tc, zero_formula_fills_zeros);
  tcase_add_test(tc, interp_run_direct);
  tcase_add_test(tc, concurrent_runs_agree);
  tcase_add_test(tc, every_reduction_row_exercised);
  suite_add_tcase(s, tc);
  TCase *steps = tcase_create("steps");
  tcase_add_test(steps, combine_equals_one_pass);
  tcase_add_test(steps, lse_infinite_arguments);
  tcase_add_test(steps, sum_schemes_honoured);
  tcase_add_test(steps, red_find_exact_names);
  suite_add_tcase(s, steps);
  return s;
}

int main(void) {
  if (keops_context_create(&ctx) != KEOPS_OK) return 1;
  int failed = tu_run(reductions_suite(), 0); /* the exercised-row table spans the tests */
  keops_context_destroy(ctx);
  return failed != 0;
}
